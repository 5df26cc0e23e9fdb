// SPDX-License-Identifier: MPL-2.0
// switch: stop, final delta, move the configuration and the IPs, start on the target.
//
// Order of steps and why:
//  - Everything that does not need the instance stopped happens first (IP reservations, a
//    pre-switch incremental sync, the data path and its ssh master, the hidden zone config on the
//    target), so the downtime window holds only: stop, snapshot + final delta, hide the source,
//    tell VMAPI, promote and start the target.
//  - Hiding the source (do_not_inventory) is the point of no return, as Triton's disallowRetry:
//    a failure before it restarts the source and leaves a retryable sync/failed state; after it,
//    rerunning switch completes forward.
#include "engine_common.hpp"

#include <zmigrate/migration/data_path.hpp>
#include <zmigrate/migration/engine.hpp>
#include <zmigrate/migration/plan.hpp>
#include <zmigrate/migration/transitions.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/units.hpp>
#include <zmigrate/zfs/names.hpp>

#include <fmt/format.h>

namespace zmigrate::migration {

using detail::Ends;
using detail::json_bool;

namespace {

std::chrono::milliseconds since(Context& ctx, std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(ctx.clock.now() - t);
}

// Create the zone configuration on the target, hidden (DNI, autoboot off), plus its cores
// dataset. Idempotent: an existing staged config is kept.
void stage_target(Context& ctx, Operation& op, Ends& ends, const inventory::Vm& vm) {
  if (ends.target->vm_get(vm.uuid)) {
    return;
  }
  const std::string config = hide_zone_config(ends.source->zone_export(vm.uuid));
  state::Artefact a;
  a.migration_id = op.id();
  a.kind = "zone_config";
  a.host = "target";
  a.name = vm.uuid;
  a.created = iso8601(ctx.clock.wall_now());
  ctx.store.record_artefact(a);
  ends.target->zone_import(op.id(), vm.uuid, config);
}

// A failure before the source was hidden: put the source back as it was and make the failure
// retryable (Triton's storeFailure returns the record to phase sync).
void undo_before_hide(Context& ctx, Operation& op, Ends& ends, const inventory::Vm& vm) {
  const nlohmann::json& sw = op.record().data["switch"];
  try {
    ends.target->zone_remove(vm.uuid);
    for (const state::Artefact& a : ctx.store.live_artefacts(op.id())) {
      if (a.kind == "zone_config") {
        ctx.store.mark_artefact_removed(a.id);
      }
    }
  } catch (const std::exception& e) {
    ctx.log.warn("could not remove the staged zone config", {{"error", e.what()}});
  }
  // Put back what is true on the node, not what the record believes: a hide that failed may
  // still have changed do_not_inventory or autoboot.
  const auto src = ends.source->vm_get(vm.uuid);
  if (src) {
    detail::restore_visibility(*ends.source, *src, json_bool(op.record().data, "autoboot", true));
  }
  if (json_bool(sw, "was_running")) {
    if (src && src->value("state", "") != "running") {
      ctx.reporter.step("starting the original instance");
      ends.source->vm_start(vm.uuid);
    }
  }
  detail::unreserve_ips(ctx, op);
}

} // namespace

SwitchResult switch_over(Context& ctx, const std::string& vm_uuid) {
  Operation op(ctx, vm_uuid, Action::switch_, "switch"); // lease, then re-read and check
  state::Migration& m = op.record();
  const bool resuming = m.phase == state::Phase::switch_;
  op.start_phase(state::Phase::switch_, "switching instances");
  SwitchResult result;
  std::vector<TimedStep>& steps = result.steps;
  auto timed = [&](const std::string& name, const std::string& message,
                   const std::function<void(nlohmann::json&)>& fn) {
    if (!message.empty()) {
      ctx.reporter.step(message);
    }
    const auto t = ctx.clock.now();
    op.step("switch." + name, fn);
    steps.push_back({name, since(ctx, t)});
  };

  Ends ends = detail::open_ends(ctx, m);
  const inventory::Vm vm = detail::recorded_vm(m);
  if (!m.data.contains("switch") || !resuming) {
    if (!m.data.contains("switch")) {
      m.data["switch"] = nlohmann::json::object();
    }
  }
  nlohmann::json& sw = m.data["switch"];
  bool hidden = json_bool(sw, "source_hidden");
  bool hidden_now = false; // this command hid the source just now
  std::unique_ptr<Link> path;
  Link* dp = nullptr;                      // the path in use: `path` or the command's kept one
  std::optional<nlohmann::json> vmapi_now; // read in prepare; absent on the resume path

  try {
    if (!hidden) {
      if (ctx.nodes.kept_link == nullptr) {
        ctx.nodes.remove_leftover_links(ctx, op.id(), *ends.source, *ends.target);
      }
      std::string source_state;
      timed("prepare", "", [&](nlohmann::json& d) {
        // The instance as VMAPI has it now, for the update inside the window (one read here).
        if (const std::optional<inventory::Vm> now = ctx.inventory.find_vm(vm.uuid)) {
          vmapi_now = now->raw;
        }
        const auto src = ends.source->vm_get(vm.uuid);
        if (!src) {
          throw Error(ExitCode::failure,
                      fmt::format("{}: instance {}", ends.source_server.hostname, vm.uuid),
                      "is gone from the source node; check \"vmadm list\" there");
        }
        source_state = src->value("state", "");
        // Remember whether it ran before the first switch attempt stopped it.
        if (!sw.contains("was_running")) {
          sw["was_running"] = src->value("state", "") == "running";
        }
        op.save();
        d["was_running"] = sw["was_running"];
      });
      timed("reserve_ips", "reserving the IP addresses for the instance", [&](nlohmann::json& d) {
        detail::reserve_ips(ctx, op, vm);
        d["reserved"] = m.data["reserved_ips"];
      });
      // One data path (key, pinned host key, ssh master) for the whole switch, opened before
      // the downtime window so the final delta starts streaming at once.
      timed("open_data_path", "", [&](nlohmann::json& d) {
        const std::vector<std::string> datasets =
            ends.source->tree(detail::instance_roots(m)).datasets;
        Link* kept = ctx.nodes.kept_link;
        if (kept != nullptr && kept->serves(m.id, *ends.source, *ends.target, datasets)) {
          dp = kept; // `migrate`: the path of its syncs, master already up
          d["kept"] = true;
        } else {
          path = ctx.nodes.make_link(
              ctx, detail::data_path_spec(ctx, m, *ends.source, *ends.target, datasets),
              *ends.source, *ends.target);
          path->open();
          dp = path.get();
        }
        d["datasets"] = datasets;
      });
      const bool running_now = source_state == "running";
      // One more pass while it runs, so the delta inside the downtime window is small; not
      // worth it right after a sync (`migrate`): the delta is only seconds of writes.
      bool recent_sync = false;
      if (const std::string last = m.data.value("last_sync_end", ""); !last.empty()) {
        try {
          recent_sync = ctx.clock.wall_now() - parse_iso8601(last) < k_quick_sync;
        } catch (const Error&) {
          recent_sync = false;
        }
      }
      sw["presync_skipped"] = running_now && recent_sync;
      if (running_now && !recent_sync) {
        timed("presync", "syncing data before stopping the instance", [&](nlohmann::json& d) {
          detail::SyncOptions so;
          so.path = dp;
          const SyncResult s = detail::sync_datasets(ctx, op, ends, "switch.presync", so);
          d["bytes"] = s.bytes;
        });
      }
      timed("stage_target", "setting up the target instance (hidden)",
            [&](nlohmann::json&) { stage_target(ctx, op, ends, vm); });

      // --- downtime window ---
      ctx.reporter.step("stopping the instance");
      const auto stop_t = ctx.clock.now();
      timed("stop_source", "", [&](nlohmann::json& d) {
        if (running_now) {
          // Seen running a moment ago: stop at once (one vmadm run inside the window); only
          // a refusal costs a second look.
          try {
            ends.source->vm_stop(vm.uuid);
          } catch (const Error&) {
            const auto src = ends.source->vm_get(vm.uuid);
            if (!src || src->value("state", "") != "stopped") {
              throw;
            }
          }
        } else {
          const auto src = ends.source->vm_get(vm.uuid);
          if (src && src->value("state", "") != "stopped") {
            ends.source->vm_stop(vm.uuid);
          }
        }
        d["state"] = "stopped";
      });
      const auto stopped_at = ctx.clock.now();
      result.downtime_steps.push_back({"stop", since(ctx, stop_t)});
      auto t = ctx.clock.now();
      ctx.reporter.step("syncing the final delta");
      detail::SyncOptions fo;
      fo.path = dp;
      fo.prune = false;    // after the window
      fo.estimate = false; // nothing to show progress for in a sub-second delta
      fo.holds = false;    // round trips; held after the window (nothing prunes before)
      const SyncResult fin = detail::sync_datasets(ctx, op, ends, "switch.final_sync", fo);
      result.final_bytes = fin.bytes;
      result.downtime_steps.push_back({"final_sync", since(ctx, t)});
      sw["stopped_at_ms"] = 0;
      op.save();

      // Before the point of no return: what the streams set must not get mounted over the
      // target's global zone files when the instance starts there.
      t = ctx.clock.now();
      timed("check_target", "", [&](nlohmann::json&) {
        ends.target->check_mountpoints(detail::instance_roots(m), vm.zonepath);
      });
      result.downtime_steps.push_back({"check_target", since(ctx, t)});
      t = ctx.clock.now();
      timed("hide_source", "hiding the original instance", [&](nlohmann::json&) {
        // Journaled before it acts (the step's running row): after a failure here the undo
        // reads the node and puts back whatever the update may already have changed.
        std::vector<std::pair<std::string, std::string>> kv{{"do_not_inventory", "true"}};
        kv.emplace_back("autoboot", "false");
        ends.source->vm_update(vm.uuid, kv);
        sw["source_hidden"] = true;
        op.save();
      });
      hidden = true;
      hidden_now = true;
      result.downtime_steps.push_back({"hide_source", since(ctx, t)});
      sw["downtime_start_offset_ms"] = since(ctx, stopped_at).count();
      op.save();
      // The rest of the window is measured from `stopped_at`.
      sw["stopped_at_wall"] = iso8601(ctx.clock.wall_now() - since(ctx, stopped_at));
      result.downtime = since(ctx, stopped_at);
    }

    // --- forward from here (also the resume path after a crash past the hide) ---
    const bool was_running = json_bool(sw, "was_running");
    result.was_running = was_running;
    const auto window = ctx.clock.now();
    auto t = ctx.clock.now();
    timed("update_vmapi", "", [&](nlohmann::json&) {
      detail::put_vmapi_server(ctx, vm, ends.target_server.uuid, "stopped", vmapi_now);
    });
    result.downtime_steps.push_back({"update_vmapi", since(ctx, t)});
    if (was_running) {
      // Started while still hidden (do_not_inventory): the window ends when it runs, and the
      // promotion below happens outside it. The source is stopped and hidden, so there is
      // never a second running copy.
      t = ctx.clock.now();
      timed("start_target", "starting the migrated instance", [&](nlohmann::json& d) {
        if (!hidden_now) {
          // Resuming after an interruption: look before starting anything.
          const auto src = ends.source->vm_get(vm.uuid);
          if (src && src->value("state", "") == "running") {
            throw Error(ExitCode::failure,
                        fmt::format("{}: instance {}", ends.source_server.hostname, vm.uuid),
                        "the hidden source is running; refusing to start a second copy. Stop "
                        "it with \"vmadm stop\" there and rerun switch");
          }
        }
        try {
          ends.target->vm_start(vm.uuid);
        } catch (const Error&) {
          const auto tgt = ends.target->vm_get(vm.uuid);
          if (!tgt || tgt->value("state", "") != "running") {
            throw;
          }
          d["already_running"] = true;
        }
      });
      result.downtime_steps.push_back({"start_target", since(ctx, t)});
    }
    result.downtime += since(ctx, window);
    sw["downtime_ms"] = result.downtime.count();
    op.save();

    timed("promote_target", "promoting the migrated instance", [&](nlohmann::json&) {
      ends.target->vm_update(
          vm.uuid, {{"do_not_inventory", "false"},
                    {"autoboot", json_bool(m.data, "autoboot", true) ? "true" : "false"}});
    });
    if (!was_running) {
      // Received unmounted; a stopped instance still has its zone root mounted on SmartOS
      // (the zone's config lives there), so mount what start would have mounted.
      timed("mount_target", "", [&](nlohmann::json& d) {
        d["mounted"] = ends.target->mount_filesystems(detail::instance_roots(m), vm.zonepath);
      });
    }

    timed("create_cores", "", [&](nlohmann::json& d) {
      // The cores dataset is not synced (as Triton); the target gets its own, mounted where the
      // source's was, created after the start so it lands inside the mounted zone root.
      const std::string cores = "zones/cores/" + vm.uuid;
      if (!ends.target->dataset_exists(cores)) {
        std::string mountpoint = vm.zonepath + "/cores";
        if (ends.source->dataset_exists(cores)) {
          const std::string mp = ends.source->properties(cores, {"mountpoint"})["mountpoint"];
          if (!mp.empty()) {
            mountpoint = mp;
          }
        }
        ends.target->create_dataset(cores, {{"mountpoint", mountpoint}});
        d["mountpoint"] = mountpoint;
      }
    });
    timed("wait_vmapi", "waiting for VMAPI to show the instance on the target",
          [&](nlohmann::json&) {
            detail::wait_vmapi(ctx, vm.uuid, ends.target_server.uuid,
                               was_running ? "running" : "stopped");
          });
    timed("unreserve_ips", "", [&](nlohmann::json&) { detail::unreserve_ips(ctx, op); });
    const nlohmann::json quota = m.data.value("quota", nlohmann::json::object());
    if (json_bool(quota, "must_remove")) {
      timed("restore_quota", "restoring the instance's quota", [&](nlohmann::json& d) {
        // As Triton: quota back to the current reservation (TRITON-1407), on both copies.
        for (Node* node : {ends.target, ends.source}) {
          const auto props = node->properties(vm.zfs_filesystem, {"reservation"});
          node->set_property(vm.zfs_filesystem, "quota", props.at("reservation"));
        }
        d["quota"] = quota.value("reservation", "");
      });
    }
    if (vm.indestructible_zoneroot || vm.indestructible_delegated) {
      timed("indestructible", "enabling deletion protection", [&](nlohmann::json&) {
        std::vector<std::pair<std::string, std::string>> kv;
        if (vm.indestructible_zoneroot) {
          kv.emplace_back("indestructible_zoneroot", "true");
        }
        if (vm.indestructible_delegated) {
          kv.emplace_back("indestructible_delegated", "true");
        }
        ends.target->vm_update(vm.uuid, kv);
      });
    }
    timed("cleanup", "", [&](nlohmann::json&) {
      if (path) {
        path->close();
      }
      ctx.nodes.remove_leftover_links(ctx, op.id(), *ends.source, *ends.target);
      // The final snapshot stays on both sides as the rollback base; older ones go.
      const std::string keep = m.data.value("synced_snap", "");
      const std::string keep_snap = keep.substr(keep.find('@') + 1);
      if (ends.source->caps().holds || ends.target->caps().holds) {
        detail::hold_on_both(ends, m.id, detail::instance_roots(m), keep_snap);
      }
      detail::prune_snapshots(ctx, *ends.source, m.id, detail::instance_roots(m), keep_snap);
      detail::prune_snapshots(ctx, *ends.target, m.id, detail::instance_roots(m), keep_snap);
      // The target's zone and datasets stay in the ledger until finalize: rollback removes
      // exactly those. The removed quota is restored above.
      for (const state::Artefact& a : ctx.store.live_artefacts(op.id())) {
        if (a.kind == "quota_removed") {
          ctx.store.mark_artefact_removed(a.id);
        }
      }
    });
    nlohmann::json dsteps = nlohmann::json::object();
    for (const TimedStep& s : result.downtime_steps) {
      dsteps[s.name] = s.duration.count();
    }
    op.finish_phase(state::State::successful, {},
                    {{"downtime_ms", result.downtime.count()},
                     {"downtime_steps", dsteps},
                     {"final_bytes", result.final_bytes},
                     {"was_running", was_running}});
  } catch (const std::exception& e) {
    if (!hidden) {
      try {
        undo_before_hide(ctx, op, ends, vm);
      } catch (const std::exception& e2) {
        ctx.log.error("could not restore the source after a failed switch", {{"error", e2.what()}});
      }
      m.data["switch"].erase("was_running");
      op.finish_phase(state::State::failed, e.what());
      // Retryable, as Triton: back to phase sync so sync or switch can run again.
      m.phase = state::Phase::sync;
      op.save();
    } else {
      op.finish_phase(state::State::failed,
                      fmt::format("{} (the source is hidden; rerun \"zmigrate switch {}\" to "
                                  "finish)",
                                  e.what(), vm_uuid));
    }
    throw;
  }
  result.migration = op.record();
  return result;
}

} // namespace zmigrate::migration
