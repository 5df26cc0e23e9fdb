// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/evacuate.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>

#include <algorithm>

#include <fmt/format.h>

namespace zmigrate::migration {

bool EvacuateResult::all_ok() const {
  return std::none_of(items.begin(), items.end(), [](const EvacuationItem& i) {
    return i.outcome == "failed" || i.outcome == "interrupted";
  });
}

std::vector<inventory::Vm> evacuation_order(std::vector<inventory::Vm> vms, bool include_stopped) {
  std::vector<inventory::Vm> out;
  for (inventory::Vm& vm : vms) {
    if (vm.state == "destroyed" || vm.state == "failed") {
      continue;
    }
    if (!include_stopped && vm.state != "running") {
      continue;
    }
    out.push_back(std::move(vm));
  }
  std::stable_sort(out.begin(), out.end(), [](const inventory::Vm& a, const inventory::Vm& b) {
    const bool ra = a.state == "running";
    const bool rb = b.state == "running";
    if (ra != rb) {
      return !ra;
    }
    if (a.alias != b.alias) {
      return a.alias < b.alias;
    }
    return a.uuid < b.uuid;
  });
  return out;
}

EvacuateResult evacuate(Context& ctx, const EvacuateOptions& options) {
  EvacuateResult result;
  result.server = ctx.inventory.resolve_server(options.server);
  if (!options.target.empty()) {
    const inventory::Server t = ctx.inventory.resolve_server(options.target);
    if (t.uuid == result.server.uuid) {
      throw PreconditionError(fmt::format("target {}", t.hostname),
                              "is the server being evacuated; choose another with -n, or none "
                              "for placement");
    }
  }
  const std::vector<inventory::Vm> vms = evacuation_order(
      ctx.inventory.list_vms(result.server.uuid, "active"), options.include_stopped);
  for (const inventory::Vm& vm : vms) {
    if (interrupt_requested()) {
      result.interrupted = true;
      break;
    }
    EvacuationItem item;
    item.vm_uuid = vm.uuid;
    item.alias = vm.alias;
    item.brand = vm.brand;
    item.state = vm.state;
    ctx.reporter.phase_started(
        "evacuate",
        fmt::format("{} ({}, {})", vm.uuid, vm.alias.empty() ? "-" : vm.alias, vm.state));
    try {
      if (options.dry_run) {
        BeginOptions b{vm.uuid, options.target, true, options.force_core, true};
        const BeginResult r = begin(ctx, b);
        item.target = r.target.hostname;
        item.outcome = "planned";
      } else {
        MigrateOptions mo;
        mo.begin = {vm.uuid, options.target, false, options.force_core, true};
        mo.max_syncs = options.max_syncs;
        mo.converge_bytes = options.converge_bytes;
        mo.finalize = options.finalize;
        const MigrateResult r = migrate(ctx, mo);
        const std::optional<state::Migration> m = ctx.store.find_latest_for_vm(vm.uuid);
        item.target = m ? m->data.value("target", nlohmann::json::object()).value("hostname", "")
                        : std::string();
        for (const SyncResult& s : r.syncs) {
          item.bytes += s.bytes;
        }
        if (r.switched) {
          item.downtime = r.switched->downtime;
          item.bytes += r.switched->final_bytes;
        }
        item.outcome = r.finalized ? "finalized" : "migrated";
      }
    } catch (const Error& e) {
      item.error = e.what();
      if (e.exit_code() == ExitCode::interrupted) {
        item.outcome = "interrupted";
        result.interrupted = true;
      } else if (dynamic_cast<const PreconditionError*>(&e) != nullptr &&
                 (options.dry_run || !ctx.store.find_active_for_vm(vm.uuid))) {
        // Refused before anything changed (core zone, no capacity, ...).
        item.outcome = options.dry_run ? "refused" : "skipped";
      } else {
        item.outcome = "failed";
      }
    } catch (const std::exception& e) {
      item.outcome = "failed";
      item.error = e.what();
    }
    ctx.log.info("evacuate: instance done",
                 {{"vm_uuid", vm.uuid}, {"outcome", item.outcome}, {"error", item.error}});
    result.items.push_back(std::move(item));
    if (result.interrupted) {
      break;
    }
  }
  return result;
}

} // namespace zmigrate::migration
