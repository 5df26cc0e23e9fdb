// SPDX-License-Identifier: MPL-2.0
// rollback (after a switch: the source becomes primary again), abort (before a switch: throw the
// target copy away) and finalize (after a switch: delete the hidden source). Each step checks
// the real state first, so a rerun after any failure converges.
#include "engine_common.hpp"

#include <zmigrate/migration/data_path.hpp>
#include <zmigrate/migration/engine.hpp>
#include <zmigrate/migration/steps.hpp>
#include <zmigrate/migration/transitions.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>

#include <chrono>
#include <cstdlib>
#include <unistd.h>

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

void clear_indestructible(Node& node, const inventory::Vm& vm) {
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

enum class TargetZone {
  staged,   // hidden, never started (before a switch): detach and delete the configuration
  instance, // switched to (rollback): vmadm delete
};

// Remove from the target exactly what this migration created there, as the ledger says: its
// zone, then the datasets its syncs received (each checked to be the instance's). Our held
// migration snapshots go first (a held snapshot makes `zfs destroy -r` fail as busy). Returns
// the datasets removed.
nlohmann::json remove_target_copy(Context& ctx, Ends& ends, const state::Migration& m,
                                  const inventory::Vm& vm, TargetZone zone) {
  detail::prune_snapshots(ctx, *ends.target, m.id, detail::instance_roots(m), "");
  for (const state::Artefact& a : ctx.store.live_artefacts(m.id)) {
    if (a.kind == "zone_config") {
      if (zone == TargetZone::instance) {
        ends.target->vm_delete(vm.uuid);
      } else {
        ends.target->zone_remove(a.name);
      }
      ctx.store.mark_artefact_removed(a.id);
    }
  }
  nlohmann::json removed = nlohmann::json::array();
  for (const state::Artefact& a : ctx.store.live_artefacts(m.id)) {
    if (a.kind == "target_dataset") {
      ends.target->destroy_dataset(a.name, vm.uuid);
      ctx.store.mark_artefact_removed(a.id);
      removed.push_back(a.name);
    }
  }
  return removed;
}

// finalize's proof that the target holds the instance before the source is removed: the target
// node answers, its vmadm shows the instance visible, VMAPI places it there, and every dataset
// of the instance on the target has the final migration snapshot with the source's GUID (read
// from the source, or from this step's record when an earlier finalize already removed it).
// Throws PreconditionError saying what is missing; nothing has been changed then.
nlohmann::json verify_target(Context& ctx, Operation& op, Ends& ends, const inventory::Vm& vm) {
  state::Migration& m = op.record();
  const std::string final_snap = [&] {
    const std::string s = m.data.value("synced_snap", "");
    return s.substr(s.find('@') + 1);
  }();
  const std::string subject =
      fmt::format("finalize of {} on {}", vm.uuid, ends.target_server.hostname);
  auto refuse = [&](const std::string& why) {
    throw PreconditionError(subject,
                            fmt::format("{}; the source was left untouched. Check the target, or "
                                        "run \"zmigrate rollback {}\" to make the source primary "
                                        "again",
                                        why, vm.uuid));
  };
  if (final_snap.empty()) {
    refuse("the migration record names no final snapshot");
  }
  const std::vector<std::string> roots = detail::instance_roots(m);
  nlohmann::json& fin = m.data["finalize"];
  if (!fin.is_object()) {
    fin = nlohmann::json::object();
  }
  if (json_bool(fin, "source_deleted")) {
    // A rerun after delete_source: this proof ran before it, and nothing is left to protect
    // (the cleanup may have pruned the target's final snapshot since).
    return fin.value("guids", nlohmann::json::object());
  }
  if (!fin.contains("guids")) {
    // The source's GUIDs of the final snapshot, kept for a rerun after the source is gone.
    const DatasetTree st = ends.source->tree(roots);
    nlohmann::json guids = nlohmann::json::object();
    for (const std::string& ds : st.datasets) {
      const std::string g = st.prop(ds + "@" + final_snap, "guid");
      if (g.empty()) {
        refuse(
            fmt::format("the source has no final snapshot {}@{} to compare with", ds, final_snap));
      }
      guids[ds] = g;
    }
    if (guids.empty()) {
      refuse("the source holds none of the instance's datasets, so nothing proves the copy");
    }
    fin["guids"] = guids;
    op.save();
  }
  const auto tgt = ends.target->vm_get(vm.uuid); // throws when the node cannot tell
  if (!tgt) {
    refuse(fmt::format("vmadm on {} has no instance {}", ends.target_server.hostname, vm.uuid));
  }
  if (json_bool(*tgt, "do_not_inventory")) {
    refuse(fmt::format("the instance on {} is still hidden (do_not_inventory); finish the switch "
                       "with \"zmigrate switch {}\"",
                       ends.target_server.hostname, vm.uuid));
  }
  const std::optional<inventory::Vm> placed = ctx.inventory.find_vm(vm.uuid, true);
  if (!placed || placed->server_uuid != ends.target_server.uuid) {
    refuse(fmt::format("VMAPI places the instance on {}, not on the target {}",
                       placed ? placed->server_uuid : std::string("no server"),
                       ends.target_server.uuid));
  }
  const DatasetTree tt = ends.target->tree(roots);
  for (const auto& [ds, guid] : fin["guids"].items()) {
    const std::string name = ds + "@" + final_snap;
    const std::string have = tt.prop(name, "guid");
    if (have.empty()) {
      refuse(fmt::format("the target has no {}", name));
    }
    if (have != guid.get<std::string>()) {
      refuse(fmt::format("{} on the target has GUID {}, the source's has {}", name, have,
                         guid.get<std::string>()));
    }
  }
  return fin["guids"];
}

} // namespace

RollbackPreview rollback_preview(Context& ctx, const std::string& vm_uuid) {
  const state::Migration m = load_active(ctx, vm_uuid);
  check_action(Action::rollback, m);
  Ends ends = detail::open_ends(ctx, m);
  RollbackPreview p;
  p.target_hostname = ends.target_server.hostname;
  const std::string synced = m.data.value("synced_snap", "");
  const std::string snap = synced.substr(synced.find('@') + 1);
  const bool exact = ends.target->caps().written_property;
  const DatasetTree t = ends.target->tree(detail::instance_roots(m),
                                          exact ? std::vector<std::string>{"written@" + snap}
                                                : std::vector<std::string>{"referenced"});
  auto num = [](const std::string& v) -> std::uint64_t {
    return v.empty() ? 0 : std::strtoull(v.c_str(), nullptr, 10);
  };
  for (const std::string& ds : t.datasets) {
    if (exact) {
      p.written_bytes += num(t.prop(ds, "written@" + snap));
    } else {
      const std::uint64_t now = num(t.prop(ds, "referenced"));
      const std::uint64_t then = num(t.prop(ds + "@" + snap, "referenced"));
      p.written_bytes += now > then ? now - then : 0;
    }
  }
  p.approximate = !exact;
  return p;
}

namespace {

// What the steps of one rollback share.
struct RollbackRun {
  Context& ctx;
  Operation& op;
  Ends ends;
  inventory::Vm vm;
  bool keep_changes = false;
  bool run_source = false; // the target ran: the source is started again (check_source)
  bool sync_back = false;  // keep_changes and not yet synced back
  std::uint64_t bytes = 0;

  state::Migration& m() { return op.record(); }
  nlohmann::json& rb() { return op.record().data["rollback"]; }
};

void check_source(RollbackRun& r) {
  const auto src = r.ends.source->vm_get(r.vm.uuid);
  if (!src) {
    throw Error(ExitCode::failure,
                fmt::format("{}: instance {}", r.ends.source_server.hostname, r.vm.uuid),
                "the hidden source instance is gone (finalized?); rollback is impossible");
  }
  // Decided once (a rerun finds the target stopped by the first run): the source runs again
  // when the target ran, or when the switch stopped a running instance and never started the
  // target (it failed past the hide): the instance runs as it did before the migration.
  if (!r.rb().contains("start_source")) {
    const auto tgt = r.ends.target->vm_get(r.vm.uuid);
    const bool target_running = tgt && tgt->value("state", "") == "running";
    const nlohmann::json sw = r.m().data.value("switch", nlohmann::json::object());
    const bool handed_over = json_bool(sw, "target_started");
    r.rb()["target_was_running"] = target_running;
    r.rb()["start_source"] = target_running || (!handed_over && json_bool(sw, "was_running"));
    r.op.save();
  }
  r.run_source = json_bool(r.rb(), "start_source");
}

// The source must hold exactly the switch's final snapshot: roll back anything written there
// since (nothing legitimate: it was stopped and hidden), then sync the target's changes back.
void sync_back(RollbackRun& r, nlohmann::json& d) {
  const std::string base = r.m().data.value("synced_snap", "");
  for (const std::string& root : detail::instance_roots(r.m())) {
    for (const std::string& ds : r.ends.source->hierarchy(root)) {
      r.ends.source->rollback_to(ds + "@" + base);
    }
  }
  detail::SyncOptions so;
  so.reverse = true;
  const SyncResult s = detail::sync_datasets(r.ctx, r.op, r.ends, "rollback.reverse_sync", so);
  r.bytes = s.bytes;
  r.rb()["changes_synced"] = true;
  r.op.save();
  d["base"] = base;
  d["bytes"] = s.bytes;
}

// The rest is now the instance's (or gone with the source); a data link still open in this
// process (`migrate --finalize`) removes its own rows when it closes.
void retire_ledger(Context& ctx, const state::Migration& m) {
  for (const state::Artefact& a : ctx.store.live_artefacts(m.id)) {
    if (a.kind != "data_path_dir" && a.kind != "authorized_key") {
      ctx.store.mark_artefact_removed(a.id);
    }
  }
}

void rollback_cleanup(RollbackRun& r) {
  r.ctx.nodes.remove_leftover_links(r.ctx, r.m().id, *r.ends.source, *r.ends.target,
                                    Leftovers::all);
  detail::prune_snapshots(r.ctx, *r.ends.source, r.m().id, detail::instance_roots(r.m()), "");
  const nlohmann::json quota = r.m().data.value("quota", nlohmann::json::object());
  if (json_bool(quota, "must_remove")) {
    const auto props = r.ends.source->properties(r.vm.zfs_filesystem, {"reservation"});
    r.ends.source->set_property(r.vm.zfs_filesystem, "quota", props.at("reservation"));
  }
  // The source is the instance again; the reverse sync may have brought the target's copy of
  // the mark back with it.
  detail::clear_mark(r.ctx, r.m(), *r.ends.source, r.vm.zfs_filesystem);
  retire_ledger(r.ctx, r.m());
}

// Forward only: every step looks at the nodes first, so a rerun after any failure converges.
PhaseSpec rollback_steps(RollbackRun& r) {
  Node& src = *r.ends.source;
  Node& dst = *r.ends.target;
  const std::string uuid = r.vm.uuid;
  const std::string autoboot = json_bool(r.m().data, "autoboot", true) ? "true" : "false";
  return {"rollback",
          {
              {"check_source", "", [&r](auto&) { check_source(r); }},
              {"reserve_ips", "reserving the IP addresses for the instance",
               [&r](auto&) { detail::reserve_ips(r.ctx, r.op, r.vm); }},
              {"stop_target",
               "stopping the instance",
               [&dst, uuid](auto&) {
                 const auto tgt = dst.vm_get(uuid);
                 if (tgt && tgt->value("state", "") == "running") {
                   dst.vm_stop(uuid);
                 }
               },
               {},
               Window::downtime},
              {"prepare_source",
               "syncing the changes made since the switch back to the source",
               [&r](auto& d) { sync_back(r, d); },
               {},
               Window::downtime,
               &r.sync_back},
              {"hide_target",
               "hiding the target instance",
               [&dst, uuid](auto&) {
                 if (dst.vm_get(uuid)) {
                   dst.vm_update(uuid, {{"do_not_inventory", "true"}, {"autoboot", "false"}});
                 }
               },
               {},
               Window::downtime},
              {"update_vmapi",
               "",
               [&r](auto&) {
                 detail::put_vmapi_server(r.ctx, r.vm, r.ends.source_server.uuid, "stopped");
               },
               {},
               Window::downtime},
              {"promote_source",
               "promoting the original instance",
               [&src, uuid, autoboot](auto&) {
                 src.vm_update(uuid, {{"do_not_inventory", "false"}, {"autoboot", autoboot}});
               },
               {},
               Window::downtime},
              {"start_source",
               "starting the original instance",
               [&src, uuid](auto&) {
                 const auto now = src.vm_get(uuid);
                 if (!now || now->value("state", "") != "running") {
                   src.vm_start(uuid);
                 }
               },
               {},
               Window::downtime,
               &r.run_source},
              {"wait_vmapi", "",
               [&r](auto&) {
                 detail::wait_vmapi(r.ctx, r.vm.uuid, r.ends.source_server.uuid,
                                    r.run_source ? "running" : "stopped");
               }},
              {"unreserve_ips", "", [&r](auto&) { detail::unreserve_ips(r.ctx, r.op); }},
              // Only what this migration created on the target (the ledger): its zone and the
              // datasets its syncs received, each checked to be the instance's.
              {"delete_target", "removing the migrated instance",
               [&r](auto& d) {
                 clear_indestructible(*r.ends.target, r.vm);
                 d["removed"] =
                     remove_target_copy(r.ctx, r.ends, r.m(), r.vm, TargetZone::instance);
               }},
              {"cleanup", "", [&r](auto&) { rollback_cleanup(r); }},
          },
          ""};
}

} // namespace

RollbackResult rollback(Context& ctx, const std::string& vm_uuid, bool keep_changes) {
  Operation op(ctx, vm_uuid, Action::rollback, "rollback"); // lease, then re-read and check
  state::Migration& m = op.record();
  op.start_phase(state::Phase::rollback, "reverting migration");
  RollbackResult result;
  result.kept_changes = keep_changes;
  try {
    if (!m.data["rollback"].is_object()) {
      m.data["rollback"] = nlohmann::json::object();
    }
    RollbackRun r{ctx, op, detail::open_ends(ctx, m), detail::recorded_vm(m), keep_changes};
    r.sync_back = keep_changes && !json_bool(r.rb(), "changes_synced");
    // The instance is down from stopping the target until the source runs.
    result.downtime = run_steps(ctx, op, rollback_steps(r)).downtime;
    result.bytes = r.bytes;
    archive(ctx, op, state::Phase::rollback);
  } catch (const std::exception& e) {
    op.finish_phase(state::State::failed,
                    fmt::format("{}; rerun \"zmigrate rollback {}\" to finish", e.what(), vm_uuid));
    throw;
  }
  result.migration = op.record();
  return result;
}

namespace {

// A switch that stopped the source and died before (or while) hiding it: make it visible with
// its autoboot again, as the node shows it now, and start it again; the source's migration
// snapshots and the removed quota go.
void restore_source_after_abort(Context& ctx, Operation& op, Ends& ends, const inventory::Vm& vm) {
  state::Migration& m = op.record();
  detail::prune_snapshots(ctx, *ends.source, m.id, detail::instance_roots(m), "");
  for (const state::Artefact& a : ctx.store.live_artefacts(m.id)) {
    if (a.kind == "quota_removed") {
      ends.source->set_property(a.name, "quota", a.details.value("quota", "none"));
      ctx.store.mark_artefact_removed(a.id);
    }
  }
  detail::put_source_back(ctx, m, ends, vm);
  detail::unreserve_ips(ctx, op);
  detail::clear_mark(ctx, m, *ends.source, vm.zfs_filesystem);
}

} // namespace

namespace detail {

// The refusal while `h` runs a switch, rollback, abort or finalize of `m`.
PreconditionError busy_unstoppable(const state::Migration& m, const state::Lease& h) {
  return PreconditionError(
      fmt::format("migration {} of {}", m.id, m.vm_uuid),
      fmt::format("busy: '{}' is running it (pid {} on {}, last heartbeat {}), and a {} is not "
                  "stopped half-way; wait for it to end (\"zmigrate watch {}\"), then {}",
                  h.operation, h.pid, h.host, h.heartbeat, h.operation, m.vm_uuid,
                  h.operation == "switch" ? "\"zmigrate rollback\" brings the source back"
                                          : "run this again"));
}

// Refuses (busy_unstoppable) when a live command that cannot be stopped holds `m`'s lease, so
// that the checks that follow are not made on a record that command is changing.
void refuse_if_unstoppable(Context& ctx, const state::Migration& m) {
  const std::optional<state::Lease> h = ctx.store.find_lease(m.id);
  const int pid = static_cast<int>(::getpid());
  if (!h || operation_stoppable(h->operation) ||
      (h->pid == pid && h->host == ctx.settings.hostname)) {
    return;
  }
  // Only a live holder counts: one killed mid-step (its pid gone on this host) left its lease
  // row behind, and the rerun that finishes its work must not be refused. Taking the lease
  // settles it (the store's rule for a dead holder) and giving it back leaves it free.
  state::Lease ours;
  ours.migration_id = m.id;
  ours.pid = pid;
  ours.host = ctx.settings.hostname;
  ours.operation = "check";
  if (!ctx.store.try_acquire_lease(ours, 0)) {
    ctx.store.release_lease(m.id, pid);
    return;
  }
  throw busy_unstoppable(m, *h);
}

// Ask the command running on `m` (if any) to stop, and wait until its lease is free. Returns
// the command that was running, if one was.
std::optional<state::Lease> stop_running_command(Context& ctx, const state::Migration& m,
                                                 const std::string& kind) {
  const std::string what = fmt::format("migration {} of {}", m.id, m.vm_uuid);
  refuse_if_unstoppable(ctx, m); // and frees the lease a killed switch, abort, ... left
  state::StopRequest r;
  r.migration_id = m.id;
  r.kind = kind;
  r.pid = static_cast<int>(::getpid());
  r.host = ctx.settings.hostname;
  r.requested = iso8601(ctx.clock.wall_now());
  const state::StopOutcome out = ctx.store.request_stop(r, unstoppable_operations());
  if (!out.recorded) {
    throw busy_unstoppable(m, *out.holder);
  }
  if (!out.holder || (out.holder->pid == r.pid && out.holder->host == r.host)) {
    return std::nullopt;
  }
  const state::Lease holder = *out.holder;
  ctx.reporter.step(fmt::format("asking the running {} (pid {} on {}) to stop", holder.operation,
                                holder.pid, holder.host));
  // The lease is free once the holder has cleaned up; taking it (re-entrant for us) also
  // settles a holder that died without releasing it (its pid is gone).
  state::Lease ours;
  ours.migration_id = m.id;
  ours.pid = r.pid;
  ours.host = r.host;
  ours.operation = kind;
  const auto deadline = ctx.clock.now() + std::chrono::milliseconds(ctx.settings.stop_wait_ms);
  while (true) {
    if (!ctx.store.try_acquire_lease(ours, 0)) {
      ctx.store.release_lease(m.id, r.pid);
      break;
    }
    if (ctx.clock.now() >= deadline) {
      throw PreconditionError(
          what,
          fmt::format("the running {} (pid {} on {}) did not stop within {} s; the request "
                      "stays recorded, so it stops at its next step. Check that process, "
                      "then run this again",
                      holder.operation, holder.pid, holder.host, ctx.settings.stop_wait_ms / 1000));
    }
    throw_if_interrupted();
    ctx.clock.sleep_for(std::chrono::milliseconds(100));
  }
  ctx.reporter.step(fmt::format("the {} (pid {}) stopped", holder.operation, holder.pid));
  return holder;
}

} // namespace detail

using detail::refuse_if_unstoppable;
using detail::stop_running_command;

PauseResult pause(Context& ctx, const std::string& vm_uuid) {
  const state::Migration m = load_active(ctx, vm_uuid);
  refuse_if_unstoppable(ctx, m);
  if (m.phase != state::Phase::begin && m.phase != state::Phase::sync) {
    throw PreconditionError(
        fmt::format("migration {} of {}", m.id, vm_uuid),
        fmt::format("nothing to pause: it is {}/{}; pause stops a sync before the switch",
                    state::to_string(m.phase), state::to_string(m.state)));
  }
  PauseResult result;
  result.stopped = stop_running_command(ctx, m, "pause");
  std::optional<state::Migration> now = ctx.store.find_migration(m.id);
  result.migration = now ? *now : m;
  return result;
}

state::Migration abort(Context& ctx, const std::string& vm_uuid) {
  {
    const state::Migration before = load_active(ctx, vm_uuid);
    refuse_if_unstoppable(ctx, before);
    check_action(Action::abort, before);
    stop_running_command(ctx, before, "abort");
  }
  Operation op(ctx, vm_uuid, Action::abort, "abort"); // lease, then re-read and check
  state::Migration& m = op.record();
  op.start_phase(state::Phase::abort, "aborting migration");
  try {
    Ends ends = detail::open_ends(ctx, m);
    const inventory::Vm vm = detail::recorded_vm(m);
    if (json_bool(m.data.value("switch", nlohmann::json::object()), "source_hidden")) {
      throw PreconditionError(fmt::format("migration {}", m.id),
                              "the source is already hidden by a switch; finish it with "
                              "\"zmigrate switch\" and then use rollback");
    }
    // Forward only, driven by the ledger: a rerun after any failure converges.
    const PhaseSpec spec{
        "abort",
        {
            {"remove_data_path", "",
             [&](auto&) {
               ctx.nodes.remove_leftover_links(ctx, op.id(), *ends.source, *ends.target,
                                               Leftovers::all);
             }},
            {"remove_target", "removing the reserved instance",
             [&](auto& d) {
               d["removed"] = remove_target_copy(ctx, ends, m, vm, TargetZone::staged);
             }},
            {"restore_source", "", [&](auto&) { restore_source_after_abort(ctx, op, ends, vm); }},
        },
        ""};
    run_steps(ctx, op, spec);
    if (const auto r = ctx.store.find_stop_request(m.id)) {
      ctx.store.clear_stop_request(m.id, r->requested); // ours, or one left for this migration
    }
    archive(ctx, op, state::Phase::abort);
  } catch (const std::exception& e) {
    op.finish_phase(state::State::failed,
                    fmt::format("{}; rerun \"zmigrate abort {}\" to finish", e.what(), vm_uuid));
    throw;
  }
  return op.record();
}

namespace {

// The target is proven to hold the instance: only now may the source go.
void delete_source(Context& ctx, Operation& op, Ends& ends, const inventory::Vm& vm) {
  state::Migration& m = op.record();
  const auto src = ends.source->vm_get(vm.uuid);
  if (src && !json_bool(*src, "do_not_inventory")) {
    throw Error(ExitCode::failure,
                fmt::format("{}: instance {}", ends.source_server.hostname, vm.uuid),
                "the source copy is not hidden; refusing to delete a visible instance");
  }
  if (src) {
    clear_indestructible(*ends.source, vm);
    detail::prune_snapshots(ctx, *ends.source, m.id, detail::instance_roots(m), "");
    ends.source->vm_delete(vm.uuid);
  }
  for (const std::string& ds : detail::instance_roots(m)) {
    ends.source->destroy_dataset(ds, vm.uuid);
  }
  m.data["finalize"]["source_deleted"] = true;
  op.save();
}

} // namespace

state::Migration finalize(Context& ctx, const std::string& vm_uuid) {
  Operation op(ctx, vm_uuid, Action::finalize, "finalize"); // lease, then re-read and check
  state::Migration& m = op.record();
  const state::Phase was_phase = m.phase; // switch, or finalize when rerun after a failure
  const state::State was_state = m.state;
  op.start_phase(state::Phase::finalize, "finalizing migration");
  PhaseReport report;
  try {
    Ends ends = detail::open_ends(ctx, m);
    const inventory::Vm vm = detail::recorded_vm(m);
    // verify_target is the point of no return: nothing on the source is touched before it.
    const PhaseSpec spec{"finalize",
                         {
                             {"verify_target", "checking the migrated instance on the target",
                              [&](auto& d) { d["datasets"] = verify_target(ctx, op, ends, vm); }},
                             {"delete_source", "removing the original instance",
                              [&](auto&) { delete_source(ctx, op, ends, vm); }},
                             {"cleanup", "removing migration snapshots",
                              [&](auto&) {
                                ctx.nodes.remove_leftover_links(ctx, op.id(), *ends.source,
                                                                *ends.target, Leftovers::all);
                                detail::prune_snapshots(ctx, *ends.target, m.id,
                                                        detail::instance_roots(m), "");
                                // The received copy carries the source's mark (sent with its
                                // properties).
                                detail::clear_mark(ctx, m, *ends.target, vm.zfs_filesystem);
                                retire_ledger(ctx, m);
                              }},
                         },
                         "verify_target"};
    run_steps(ctx, op, spec, &report);
    archive(ctx, op, state::Phase::finalize);
  } catch (const std::exception& e) {
    if (!report.committed && was_phase != state::Phase::finalize) {
      // Nothing was removed: the migration stays switched, so rollback (or a finalize once
      // the target is repaired) can still run.
      op.finish_phase(state::State::failed, e.what());
      m.phase = was_phase;
      m.state = was_state;
      m.error = e.what();
      op.save();
      throw;
    }
    op.finish_phase(state::State::failed,
                    fmt::format("{}; rerun \"zmigrate finalize {}\" to finish", e.what(), vm_uuid));
    throw;
  }
  return op.record();
}

} // namespace zmigrate::migration
