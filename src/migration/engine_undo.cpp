// SPDX-License-Identifier: MPL-2.0
// rollback (after a switch: the source becomes primary again), abort (before a switch: throw the
// target copy away) and finalize (after a switch: delete the hidden source). Each step checks
// the real state first, so a rerun after any failure converges.
#include "engine_common.hpp"

#include <zmigrate/migration/data_path.hpp>
#include <zmigrate/migration/engine.hpp>
#include <zmigrate/migration/transitions.hpp>
#include <zmigrate/util/error.hpp>

#include <fmt/format.h>

namespace zmigrate::migration {

using detail::Ends;
using detail::json_bool;

namespace {

void archive(Context& ctx, Operation& op, state::Phase phase) {
  op.record().phase = phase;
  op.record().archived = true;
  op.record().finished = iso8601(ctx.clock.wall_now());
  op.finish_phase(state::State::successful);
}

void clear_indestructible(NodeOps& node, const inventory::Vm& vm) {
  const auto j = node.vm_get(vm.uuid);
  if (!j) {
    return;
  }
  std::vector<std::pair<std::string, std::string>> kv;
  if (json_bool(*j, "indestructible_zoneroot")) {
    kv.emplace_back("indestructible_zoneroot", "false");
  }
  if (json_bool(*j, "indestructible_delegated")) {
    kv.emplace_back("indestructible_delegated", "false");
  }
  if (!kv.empty()) {
    node.vm_update(vm.uuid, kv);
  }
}

} // namespace

RollbackResult rollback(Context& ctx, const std::string& vm_uuid, bool keep_changes) {
  Operation op(ctx, vm_uuid, Action::rollback, "rollback"); // lease, then re-read and check
  state::Migration& m = op.record();
  op.start_phase(state::Phase::rollback, "reverting migration");
  RollbackResult result;
  result.kept_changes = keep_changes;
  try {
    Ends ends = detail::open_ends(ctx, m);
    const inventory::Vm vm = detail::recorded_vm(m);
    nlohmann::json& rb = m.data["rollback"];
    if (!rb.is_object()) {
      rb = nlohmann::json::object();
    }
    op.step("rollback.check_source", [&](nlohmann::json&) {
      const auto src = ends.source->vm_get(vm.uuid);
      if (!src) {
        throw Error(ExitCode::failure,
                    fmt::format("{}: instance {}", ends.source_server.hostname, vm.uuid),
                    "the hidden source instance is gone (finalized?); rollback is impossible");
      }
      if (!rb.contains("target_was_running")) {
        const auto tgt = ends.target->vm_get(vm.uuid);
        rb["target_was_running"] = tgt && tgt->value("state", "") == "running";
        op.save();
      }
    });
    const bool run_source = json_bool(rb, "target_was_running");
    ctx.reporter.step("reserving the IP addresses for the instance");
    op.step("rollback.reserve_ips", [&](nlohmann::json&) { detail::reserve_ips(ctx, op, vm); });
    ctx.reporter.step("stopping the instance");
    const auto stop_t = ctx.clock.now();
    op.step("rollback.stop_target", [&](nlohmann::json&) {
      const auto tgt = ends.target->vm_get(vm.uuid);
      if (tgt && tgt->value("state", "") == "running") {
        ends.target->vm_stop(vm.uuid);
      }
    });
    if (keep_changes && !json_bool(rb, "changes_synced")) {
      ctx.reporter.step("syncing the changes made since the switch back to the source");
      // The source must hold exactly the switch's final snapshot: roll back anything written
      // there since (nothing legitimate: it was stopped and hidden).
      op.step("rollback.prepare_source", [&](nlohmann::json& d) {
        const std::string base = m.data.value("synced_snap", "");
        for (const std::string& root : inventory::instance_datasets(vm)) {
          for (const std::string& ds : ends.source->hierarchy(root)) {
            ends.source->rollback_to(ds + "@" + base);
          }
        }
        d["base"] = base;
      });
      detail::SyncOptions so;
      so.reverse = true;
      const SyncResult s = detail::sync_datasets(ctx, op, ends, vm, "rollback.reverse_sync", so);
      result.bytes = s.bytes;
      rb["changes_synced"] = true;
      op.save();
    }
    ctx.reporter.step("hiding the target instance");
    op.step("rollback.hide_target", [&](nlohmann::json&) {
      if (ends.target->vm_get(vm.uuid)) {
        ends.target->vm_update(vm.uuid, {{"do_not_inventory", "true"}, {"autoboot", "false"}});
      }
    });
    op.step("rollback.update_vmapi", [&](nlohmann::json&) {
      detail::put_vmapi_server(ctx, vm, ends.source_server.uuid, "stopped");
    });
    ctx.reporter.step("promoting the original instance");
    op.step("rollback.promote_source", [&](nlohmann::json&) {
      ends.source->vm_update(
          vm.uuid, {{"do_not_inventory", "false"},
                    {"autoboot", json_bool(m.data, "autoboot", true) ? "true" : "false"}});
    });
    if (run_source) {
      ctx.reporter.step("starting the original instance");
      op.step("rollback.start_source", [&](nlohmann::json&) {
        const auto src = ends.source->vm_get(vm.uuid);
        if (!src || src->value("state", "") != "running") {
          ends.source->vm_start(vm.uuid);
        }
      });
    }
    result.downtime =
        std::chrono::duration_cast<std::chrono::milliseconds>(ctx.clock.now() - stop_t);
    op.step("rollback.wait_vmapi", [&](nlohmann::json&) {
      detail::wait_vmapi(ctx, vm.uuid, ends.source_server.uuid, run_source ? "running" : "stopped");
    });
    op.step("rollback.unreserve_ips", [&](nlohmann::json&) { detail::unreserve_ips(ctx, op); });
    ctx.reporter.step("removing the migrated instance");
    op.step("rollback.delete_target", [&](nlohmann::json&) {
      clear_indestructible(*ends.target, vm);
      detail::prune_snapshots(ctx, *ends.target, m.id, vm, "");
      ends.target->vm_delete(vm.uuid);
      for (const std::string& ds : inventory::instance_datasets(vm)) {
        ends.target->destroy_dataset(ds);
      }
    });
    op.step("rollback.cleanup", [&](nlohmann::json&) {
      DataPath::remove_leftovers(ctx, op.id(), ends.source->runner(), ends.target->runner());
      detail::prune_snapshots(ctx, *ends.source, m.id, vm, "");
      const nlohmann::json quota = m.data.value("quota", nlohmann::json::object());
      if (json_bool(quota, "must_remove")) {
        const auto props = ends.source->properties(vm.zfs_filesystem, {"reservation"});
        ends.source->set_property(vm.zfs_filesystem, "quota", props.at("reservation"));
      }
      for (const state::Artefact& a : ctx.store.live_artefacts(m.id)) {
        ctx.store.mark_artefact_removed(a.id);
      }
    });
    archive(ctx, op, state::Phase::rollback);
  } catch (const std::exception& e) {
    op.finish_phase(state::State::failed,
                    fmt::format("{}; rerun \"zmigrate rollback {}\" to finish", e.what(), vm_uuid));
    throw;
  }
  result.migration = op.record();
  return result;
}

state::Migration abort(Context& ctx, const std::string& vm_uuid) {
  Operation op(ctx, vm_uuid, Action::abort, "abort"); // lease, then re-read and check
  state::Migration& m = op.record();
  op.start_phase(state::Phase::abort, "aborting migration");
  try {
    Ends ends = detail::open_ends(ctx, m);
    const inventory::Vm vm = detail::recorded_vm(m);
    const nlohmann::json sw = m.data.value("switch", nlohmann::json::object());
    if (json_bool(sw, "source_hidden")) {
      throw PreconditionError(fmt::format("migration {}", m.id),
                              "the source is already hidden by a switch; finish it with "
                              "\"zmigrate switch\" and then use rollback");
    }
    op.step("abort.remove_data_path", [&](nlohmann::json&) {
      DataPath::remove_leftovers(ctx, op.id(), ends.source->runner(), ends.target->runner());
    });
    ctx.reporter.step("removing the reserved instance");
    op.step("abort.remove_target", [&](nlohmann::json& d) {
      nlohmann::json removed = nlohmann::json::array();
      // Held snapshots make `zfs destroy -r` fail as busy: release and drop ours first.
      detail::prune_snapshots(ctx, *ends.target, m.id, vm, "");
      for (const state::Artefact& a : ctx.store.live_artefacts(m.id)) {
        if (a.kind == "zone_config") {
          ends.target->zone_remove(a.name);
          ctx.store.mark_artefact_removed(a.id);
        }
      }
      for (const state::Artefact& a : ctx.store.live_artefacts(m.id)) {
        if (a.kind == "target_dataset") {
          ends.target->destroy_dataset(a.name);
          ctx.store.mark_artefact_removed(a.id);
          removed.push_back(a.name);
        }
      }
      d["removed"] = removed;
    });
    op.step("abort.restore_source", [&](nlohmann::json&) {
      detail::prune_snapshots(ctx, *ends.source, m.id, vm, "");
      for (const state::Artefact& a : ctx.store.live_artefacts(m.id)) {
        if (a.kind == "quota_removed") {
          ends.source->set_property(a.name, "quota", a.details.value("quota", "none"));
          ctx.store.mark_artefact_removed(a.id);
        }
      }
      // A switch that stopped the source and died before hiding it: start it again.
      const auto src = ends.source->vm_get(vm.uuid);
      if (json_bool(sw, "was_running") && src && src->value("state", "") != "running") {
        ends.source->vm_start(vm.uuid);
      }
      detail::unreserve_ips(ctx, op);
    });
    archive(ctx, op, state::Phase::abort);
  } catch (const std::exception& e) {
    op.finish_phase(state::State::failed,
                    fmt::format("{}; rerun \"zmigrate abort {}\" to finish", e.what(), vm_uuid));
    throw;
  }
  return op.record();
}

state::Migration finalize(Context& ctx, const std::string& vm_uuid) {
  Operation op(ctx, vm_uuid, Action::finalize, "finalize"); // lease, then re-read and check
  state::Migration& m = op.record();
  op.start_phase(state::Phase::finalize, "finalizing migration");
  try {
    Ends ends = detail::open_ends(ctx, m);
    const inventory::Vm vm = detail::recorded_vm(m);
    ctx.reporter.step("removing the original instance");
    op.step("finalize.delete_source", [&](nlohmann::json&) {
      const auto src = ends.source->vm_get(vm.uuid);
      if (src && !json_bool(*src, "do_not_inventory")) {
        throw Error(ExitCode::failure,
                    fmt::format("{}: instance {}", ends.source_server.hostname, vm.uuid),
                    "the source copy is not hidden; refusing to delete a visible instance");
      }
      clear_indestructible(*ends.source, vm);
      detail::prune_snapshots(ctx, *ends.source, m.id, vm, "");
      ends.source->vm_delete(vm.uuid);
      for (const std::string& ds : inventory::instance_datasets(vm)) {
        ends.source->destroy_dataset(ds);
      }
    });
    ctx.reporter.step("removing migration snapshots");
    op.step("finalize.cleanup", [&](nlohmann::json&) {
      DataPath::remove_leftovers(ctx, op.id(), ends.source->runner(), ends.target->runner());
      detail::prune_snapshots(ctx, *ends.target, m.id, vm, "");
      for (const state::Artefact& a : ctx.store.live_artefacts(m.id)) {
        ctx.store.mark_artefact_removed(a.id);
      }
    });
    archive(ctx, op, state::Phase::finalize);
  } catch (const std::exception& e) {
    op.finish_phase(state::State::failed,
                    fmt::format("{}; rerun \"zmigrate finalize {}\" to finish", e.what(), vm_uuid));
    throw;
  }
  return op.record();
}

} // namespace zmigrate::migration
