// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/evacuate.hpp>
#include <zmigrate/migration/plan.hpp>
#include <zmigrate/migration/transitions.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>

#include <algorithm>
#include <map>

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
  std::string named_uuid;
  if (!options.target.empty()) {
    const inventory::Server t = ctx.inventory.resolve_server(options.target);
    named_uuid = t.uuid;
    if (t.uuid == result.server.uuid) {
      throw PreconditionError(fmt::format("target {}", t.hostname),
                              "is the server being evacuated; choose another with -n, or none "
                              "for placement");
    }
  }
  const std::vector<inventory::Vm> vms = evacuation_order(
      ctx.inventory.list_vms(result.server.uuid, "active"), options.include_stopped);

  // One plan for all of them, before any moves: the instances begin would refuse (core zones,
  // unsupported brands) take no room in it.
  PlacementOptions popts;
  popts.allow_older_platform = ctx.settings.allow_older_platform;
  popts.to = options.to;
  if (!named_uuid.empty()) {
    popts.to = {named_uuid};
  }
  popts.separate_owners = options.separate_owners;
  // --exclude names any instance on the node (a typo is refused by plan_placement); those that
  // are not placed anyway (core zones, ...) are left out here.
  std::vector<std::string> excluded;
  for (const std::string& name : options.exclude) {
    bool seen = false;
    for (const inventory::Vm& vm : vms) {
      if (name == vm.uuid || (!vm.alias.empty() && name == vm.alias)) {
        excluded.push_back(vm.uuid);
        seen = true;
      }
    }
    if (!seen) {
      popts.exclude.push_back(name); // plan_placement names it as a typo
    }
  }
  std::sort(excluded.begin(), excluded.end());
  std::vector<inventory::Vm> placeable;
  std::map<std::string, std::pair<std::string, std::string>> invalid; // uuid: what, why
  std::map<std::string, inventory::Vm> traits_of_image;               // one IMGAPI read per image
  std::map<std::string, state::Migration> continuing; // past begin: keeps its target
  for (const inventory::Vm& vm : vms) {
    if (std::binary_search(excluded.begin(), excluded.end(), vm.uuid)) {
      continue;
    }
    // An instance whose begin is done goes on to the node it was begun to (migrate resumes
    // it); its promise there is already among the active ones. A failed begin is placed anew.
    if (const std::optional<state::Migration> m = ctx.store.find_active_for_vm(vm.uuid);
        m && !is_retry(Action::begin, *m) && !m->target_server_uuid.empty()) {
      continuing[vm.uuid] = *m;
      continue;
    }
    try {
      validate_instance(vm, options.force_core);
    } catch (const PreconditionError& e) {
      invalid[vm.uuid] = {e.subject(), e.reason()};
      continue;
    }
    inventory::Vm placed = vm;
    const auto cached = traits_of_image.find(vm.image_uuid);
    if (cached != traits_of_image.end()) {
      placed.image_traits = cached->second.image_traits;
      placed.placement_problems.insert(placed.placement_problems.end(),
                                       cached->second.placement_problems.begin(),
                                       cached->second.placement_problems.end());
    } else {
      inventory::Vm probe;
      probe.image_uuid = vm.image_uuid;
      probe = with_image_traits(ctx, probe);
      traits_of_image[vm.image_uuid] = probe;
      placed.image_traits = probe.image_traits;
      placed.placement_problems.insert(placed.placement_problems.end(),
                                       probe.placement_problems.begin(),
                                       probe.placement_problems.end());
    }
    placeable.push_back(std::move(placed));
  }
  const PlacementPlan plan = plan_placement(placeable, result.server, ctx.inventory.list_servers(),
                                            active_promises(ctx), popts);
  ctx.log.info("evacuate: placement planned", {{"server", result.server.uuid},
                                               {"instances", plan.placements.size()},
                                               {"complete", plan.complete()}});

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
    if (std::binary_search(excluded.begin(), excluded.end(), vm.uuid)) {
      item.outcome = "excluded";
      item.error = "left where it is (--exclude)";
      result.items.push_back(std::move(item));
      continue;
    }
    const Placement* placement = plan.find(vm.uuid);
    std::string target = options.target;
    if (const auto c = continuing.find(vm.uuid); c != continuing.end()) {
      target = c->second.target_server_uuid;
      item.target =
          c->second.data.value("target", nlohmann::json::object()).value("hostname", target);
      item.reason =
          fmt::format("its migration {} goes on to the node it was begun to", c->second.id);
    } else if (placement != nullptr) {
      item.reason = placement->reason;
      item.rejected = placement->rejected;
      if (placement->placed) {
        target = placement->target_uuid;
        item.target = placement->target_hostname;
      }
    }
    ctx.reporter.phase_started(
        "evacuate",
        fmt::format("{} ({}, {})", vm.uuid, vm.alias.empty() ? "-" : vm.alias, vm.state));
    try {
      if (const auto bad = invalid.find(vm.uuid); bad != invalid.end()) {
        throw PreconditionError(bad->second.first, bad->second.second);
      }
      if (placement != nullptr && !placement->placed) {
        std::string why = "no compute node can take it";
        for (const RejectedNode& r : placement->rejected) {
          why += fmt::format("; {} ({}): {}", r.hostname, r.uuid, describe(r.problems));
        }
        throw PreconditionError(fmt::format("placement of {}", vm.uuid),
                                why + ". Free capacity, widen --to, or --exclude it");
      }
      if (options.dry_run && continuing.count(vm.uuid) > 0) {
        item.outcome = "planned"; // migrate would resume it; nothing to begin
      } else if (options.dry_run) {
        BeginOptions b{vm.uuid, target, true, options.force_core, true};
        const BeginResult r = begin(ctx, b);
        item.target = r.target.hostname;
        item.outcome = "planned";
      } else {
        MigrateOptions mo;
        mo.begin = {vm.uuid, target, false, options.force_core, true};
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
