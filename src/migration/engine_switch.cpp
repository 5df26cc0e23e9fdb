// SPDX-License-Identifier: MPL-2.0
// switch: stop, final delta, move the configuration and the IPs, start on the target.
//
// Order of steps and why (switch_steps below reads as this list):
//  - Everything that does not need the instance stopped happens first (IP reservations, the
//    data link and its ssh master, a pre-switch incremental sync, the hidden zone config on the
//    target), so the downtime window holds only: stop, snapshot + final delta (the source's
//    hide runs beside its streams, in the same command), check the target, tell VMAPI, start
//    the target.
//  - Hiding the source (do_not_inventory; the hide_source step, after the check of the target)
//    is the point of no return, as Triton's disallowRetry. The hide may already have run beside
//    the final streams: until hide_source records it, it is undone like any hide. A failure
//    before the point of no return runs the undos (the source restarted as it was, the staged zone
//    and the IP reservations removed) and leaves a retryable sync/failed state; after it, rerunning
//    switch completes forward.
#include "engine_common.hpp"

#include <zmigrate/migration/data_path.hpp>
#include <zmigrate/migration/engine.hpp>
#include <zmigrate/migration/plan.hpp>
#include <zmigrate/migration/steps.hpp>
#include <zmigrate/migration/transitions.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/units.hpp>
#include <zmigrate/zfs/names.hpp>

#include <algorithm>
#include <atomic>
#include <future>
#include <unistd.h>

#include <fmt/format.h>

namespace zmigrate::migration {

using detail::Ends;
using detail::json_bool;

namespace {

// What the steps of one switch share.
struct SwitchRun {
  Context& ctx;
  Operation& op;
  Ends ends;
  inventory::Vm vm;
  SwitchPlan plan;
  std::unique_ptr<Link> own_link;          // opened by this switch
  Link* link = nullptr;                    // in use: own_link or the command's kept one
  std::optional<nlohmann::json> vmapi_now; // read in prepare; absent on the resume path
  std::string source_state;                // read in prepare
  std::uint64_t final_bytes = 0;
  std::string vmapi_failed;         // why update_vmapi could not tell VMAPI
  bool final_bytes_counted = false; // the final delta's bytes counted (pv), not estimated
  bool hidden_alongside = false;    // the hide ran on the source with the final delta's streams
  // The wait for VMAPI to show the instance on the target, run beside the steps after the
  // promotion (only the inventory and the clock on its thread: nothing else uses them then).
  std::future<void> vmapi_wait;
  std::atomic<bool> vmapi_wait_cancel{false};

  ~SwitchRun() {
    // A step failed while it ran: it ends at its next look, and this command with it.
    vmapi_wait_cancel = true;
    if (vmapi_wait.valid()) {
      vmapi_wait.wait();
    }
  }

  state::Migration& m() { return op.record(); }
  nlohmann::json& sw() { return op.record().data["switch"]; }
  Node& src() { return *ends.source; }
  Node& dst() { return *ends.target; }
};

// The instance as the source node and VMAPI show it now; decides the rest of the plan.
void prepare(SwitchRun& r, nlohmann::json& d) {
  if (r.plan.before_hide) {
    detail::refuse_triton_migration(r.ctx, r.vm.uuid); // one may have begun since our begin
    // Another zmigrate that began between our begin and now overwrote our mark (the two begins
    // raced): neither may switch on the other's snapshots. No mark at all is a migration begun
    // before marks existed.
    const std::string mark =
        r.src().properties(r.vm.zfs_filesystem, {k_mark_property})[k_mark_property];
    if (!mark.empty() && mark != r.m().id) {
      throw PreconditionError(
          fmt::format("instance {}", r.vm.uuid),
          fmt::format("{} on {} now carries {}={}, not this migration's {}: another zmigrate "
                      "began migrating it too; end one of the two (zmigrate abort) first",
                      r.vm.zfs_filesystem, r.src().host(), k_mark_property, mark, r.m().id));
    }
    detail::check_rate_limit(r.ctx, r.src());
    // The target was checked at begin; its state and room may have changed since (CNAPI read
    // afresh by open_ends). Refused here, before anything is stopped or hidden.
    PlacementOptions popts;
    popts.allow_older_platform = r.ctx.settings.allow_older_platform;
    const std::vector<Problem> problems = switch_problems(
        r.vm, r.ends.source_server, r.ends.target_server, active_promises(r.ctx, r.vm.uuid), popts);
    if (!problems.empty()) {
      throw PreconditionError(
          fmt::format("switch {} to {} ({})", r.vm.uuid, r.ends.target_server.hostname,
                      r.ends.target_server.uuid),
          fmt::format("the target cannot take the instance now: {}. Nothing was switched: the "
                      "instance is left on the source as it was before the migration; switch "
                      "when the node can take it, or abort and begin to another node",
                      describe(problems)));
    }
  }
  if (const std::optional<inventory::Vm> now = r.ctx.inventory.find_vm(r.vm.uuid)) {
    r.vmapi_now = now->raw; // for the update inside the window (one read here)
  }
  const auto src = r.src().vm_get(r.vm.uuid);
  if (!src) {
    throw Error(ExitCode::failure, fmt::format("{}: instance {}", r.src().host(), r.vm.uuid),
                "is gone from the source node; check \"vmadm list\" there");
  }
  r.source_state = src->value("state", "");
  // Remember whether it ran before the first switch attempt stopped it.
  if (!r.sw().contains("was_running")) {
    r.sw()["was_running"] = r.source_state == "running";
  }
  bool recent_sync = false;
  if (const std::string last = r.m().data.value("last_sync_end", ""); !last.empty()) {
    try {
      recent_sync = r.ctx.clock.wall_now() - parse_iso8601(last) < k_quick_sync;
    } catch (const Error&) {
      recent_sync = false;
    }
  }
  r.plan = plan_switch(r.m().data, r.vm, r.source_state, recent_sync);
  r.op.save();
  d["was_running"] = r.plan.was_running;
  d["presync"] = r.plan.presync;
}

// One data link (key, pinned host key, ssh master) for the whole switch, opened before the
// downtime window so the final delta starts streaming at once.
void open_link(SwitchRun& r, nlohmann::json& d) {
  const std::vector<std::string> datasets = r.src().tree(detail::instance_roots(r.m())).datasets;
  Link* kept = r.ctx.nodes.kept_link;
  if (kept != nullptr && kept->serves(r.m().id, r.src(), r.dst(), datasets)) {
    r.link = kept; // `migrate`: the link of its syncs, master already up
    d["kept"] = true;
  } else {
    r.own_link = r.ctx.nodes.make_link(
        r.ctx, detail::data_path_spec(r.ctx, r.m(), r.src(), r.dst(), datasets), r.src(), r.dst());
    r.own_link->open();
    r.link = r.own_link.get();
  }
  d["datasets"] = datasets;
}

// The zone configuration on the target, hidden (DNI, autoboot off). Idempotent: an existing
// staged config is kept. Its ledger row goes first.
void stage_target(SwitchRun& r) {
  // Both reads at once: whether the target has it already, and the source's configuration.
  std::optional<nlohmann::json> staged;
  std::string exported;
  detail::both([&] { staged = r.dst().vm_get(r.vm.uuid); },
               [&] { exported = r.src().zone_export(r.vm.uuid); });
  if (staged) {
    return;
  }
  const std::string config = hide_zone_config(exported);
  state::Artefact a;
  a.migration_id = r.m().id;
  a.kind = "zone_config";
  a.host = "target";
  a.name = r.vm.uuid;
  a.created = iso8601(r.ctx.clock.wall_now());
  r.ctx.store.record_artefact(a);
  r.dst().zone_import(r.m().id, r.vm.uuid, config);
}

void remove_staged(SwitchRun& r) {
  r.dst().zone_remove(r.vm.uuid);
  for (const state::Artefact& a : r.ctx.store.live_artefacts(r.m().id)) {
    if (a.kind == "zone_config") {
      r.ctx.store.mark_artefact_removed(a.id);
    }
  }
}

void stop_source(SwitchRun& r, nlohmann::json& d) {
  if (r.source_state == "running") {
    // Seen running a moment ago: stop at once (one vmadm run inside the window); only a
    // refusal costs a second look.
    try {
      r.src().vm_stop(r.vm.uuid);
    } catch (const Error&) {
      const auto src = r.src().vm_get(r.vm.uuid);
      if (!src || src->value("state", "") != "stopped") {
        throw;
      }
    }
  } else {
    const auto src = r.src().vm_get(r.vm.uuid);
    if (src && src->value("state", "") != "stopped") {
      r.src().vm_stop(r.vm.uuid);
    }
  }
  d["state"] = "stopped";
}

// Put the source back as it was, from what the node shows (a hide that failed, or one of an
// interrupted earlier attempt, may have changed do_not_inventory or autoboot), and start it
// when it ran before the switch.
void restore_source(SwitchRun& r) {
  detail::put_source_back(r.ctx, r.m(), r.ends, r.vm,
                          [&r] { r.ctx.reporter.step("starting the original instance"); });
}

// What hides the source: out of the inventory, and not booted by its node.
KeyValues hide_values() {
  return {{"do_not_inventory", "true"}, {"autoboot", "false"}};
}

void sync_once(SwitchRun& r, const std::string& label, bool final, nlohmann::json& d) {
  detail::SyncOptions o;
  o.path = r.link;
  if (final) {
    o.prune = false;    // after the window
    o.estimate = false; // nothing to show progress for in a sub-second delta
    o.holds = false;    // round trips; held after the window (nothing prunes before)
    // The source is stopped: its hide runs on it while the final delta streams, instead of
    // after it inside the window. It is still undone as a hide is (put_source_back reads the
    // node) until hide_source, after the check of the target, marks the point of no return.
    // Beside the streams it has their bound (none but an interrupt), not vm_update's 300 s.
    o.alongside = r.src().vm_update_command(r.vm.uuid, hide_values());
    o.alongside_ok = &r.hidden_alongside;
  }
  const SyncResult s = detail::sync_datasets(r.ctx, r.op, r.ends, label, o);
  d["bytes"] = s.bytes;
  if (final) {
    d["hidden_alongside"] = r.hidden_alongside;
    r.final_bytes = s.bytes;
    r.final_bytes_counted = std::all_of(s.transfers.begin(), s.transfers.end(),
                                        [](const DatasetTransfer& t) { return t.counted; });
  }
}

// The point of no return. Journaled before it acts (the step's running row): after a failure
// here the undo reads the node and puts back whatever the update may already have changed.
// When the hide already ran with the final delta's streams (and succeeded), only the record
// changes here; else the update runs now.
void hide_source(SwitchRun& r, nlohmann::json& d) {
  if (r.hidden_alongside) {
    d["alongside"] = true;
  } else {
    r.src().vm_update(r.vm.uuid, hide_values());
  }
  r.sw()["source_hidden"] = true;
  r.op.save();
}

// Started while still hidden (do_not_inventory): the window ends when it runs, and the
// promotion happens outside it. The source is stopped and hidden, so there is never a second
// running copy; on the resume path that is checked first.
void start_target(SwitchRun& r, nlohmann::json& d) {
  if (r.plan.resuming) {
    const auto src = r.src().vm_get(r.vm.uuid);
    if (src && src->value("state", "") == "running") {
      throw Error(ExitCode::failure, fmt::format("{}: instance {}", r.src().host(), r.vm.uuid),
                  "the hidden source is running; refusing to start a second copy. Stop it with "
                  "\"vmadm stop\" there and rerun switch");
    }
  }
  try {
    r.dst().vm_start(r.vm.uuid);
  } catch (const Error&) {
    const auto tgt = r.dst().vm_get(r.vm.uuid);
    if (!tgt || tgt->value("state", "") != "running") {
      throw;
    }
    d["already_running"] = true;
  }
  // From here the target is the running instance: rollback starts the source only if the
  // target still runs then (an operator's stop of the target is respected).
  r.sw()["target_started"] = true;
  if (!r.sw().contains("target_started_at")) {
    r.sw()["target_started_at"] = iso8601(r.ctx.clock.wall_now()); // migrate --offline's downtime
  }
  r.op.save();
}

// VMAPI is told inside the window, but an outage of VMAPI must not keep the instance down: a
// failed update is noted, the target starts, and wait_vmapi tries it once more (by then the
// vm-agent of the target reports the instance too). On a rerun the target may already run.
void update_vmapi(SwitchRun& r, nlohmann::json& d) {
  const bool runs = r.plan.was_running && json_bool(r.sw(), "target_started", false);
  try {
    detail::put_vmapi_server(r.ctx, r.vm, r.ends.target_server.uuid, runs ? "running" : "stopped",
                             r.vmapi_now);
  } catch (const Error& e) {
    if (e.exit_code() != ExitCode::inventory) {
      throw;
    }
    r.vmapi_failed = e.what();
    d["deferred"] = e.what();
    r.ctx.log.warn("VMAPI not told inside the downtime window; starting the target anyway",
                   {{"error", e.what()}});
  }
}

// The update update_vmapi could not make; if VMAPI still fails, the switch ends with the
// instance in place on the target and a rerun finishes VMAPI's part.
void retry_vmapi(SwitchRun& r) {
  if (r.vmapi_failed.empty()) {
    return;
  }
  try {
    detail::put_vmapi_server(r.ctx, r.vm, r.ends.target_server.uuid,
                             r.plan.was_running ? "running" : "stopped", std::nullopt);
  } catch (const Error& e) {
    if (e.exit_code() != ExitCode::inventory) {
      throw;
    }
    throw Error(ExitCode::inventory, e.subject(),
                fmt::format("{}; the instance is in place{} on {}, but VMAPI does not know it "
                            "yet: rerun \"zmigrate switch {}\" once VMAPI answers",
                            e.reason(), r.plan.was_running ? " and running" : "", r.dst().host(),
                            r.vm.uuid));
  }
}

// What wait_vmapi waits for: VMAPI told (again, when the window's update failed), then showing
// the instance on the target after the target's vm-agent reported it.
void confirm_vmapi(SwitchRun& r, const std::atomic<bool>* cancel) {
  retry_vmapi(r);
  detail::wait_vmapi(r.ctx, r.vm.uuid, r.ends.target_server.uuid,
                     r.plan.was_running ? "running" : "stopped", cancel);
}

// Started once the target is promoted (visible: its vm-agent reports it from now on), on a
// thread of its own, while the steps on the nodes go on; the wait_vmapi step takes its answer.
void start_vmapi_wait(SwitchRun& r) {
  r.vmapi_wait = std::async(std::launch::async, [&r] { confirm_vmapi(r, &r.vmapi_wait_cancel); });
}

// The answer of the wait started beside the steps, or (a rerun that found the promotion done)
// the whole wait, here.
void finish_vmapi_wait(SwitchRun& r) {
  if (r.vmapi_wait.valid()) {
    r.vmapi_wait.get(); // rethrows what the wait threw
  } else {
    confirm_vmapi(r, nullptr);
  }
}

// The cores dataset is not synced (as Triton); the target gets its own, mounted where the
// source's was, created after the start so it lands inside the mounted zone root.
void create_cores(SwitchRun& r, nlohmann::json& d) {
  const std::string cores = "zones/cores/" + r.vm.uuid;
  if (r.dst().dataset_exists(cores)) {
    return;
  }
  std::string mountpoint = r.vm.zonepath + "/cores";
  if (r.src().dataset_exists(cores)) {
    const std::string mp = r.src().properties(cores, {"mountpoint"})["mountpoint"];
    if (!mp.empty()) {
      mountpoint = mp;
    }
  }
  r.dst().create_dataset(cores, {{"mountpoint", mountpoint}});
  d["mountpoint"] = mountpoint;
}

// As Triton: quota back to the current reservation (TRITON-1407), on both copies.
void restore_quota(SwitchRun& r, nlohmann::json& d) {
  for (Node* node : {r.ends.target, r.ends.source}) {
    const auto props = node->properties(r.vm.zfs_filesystem, {"reservation"});
    node->set_property(r.vm.zfs_filesystem, "quota", props.at("reservation"));
  }
  d["quota"] = r.m().data.value("quota", nlohmann::json::object()).value("reservation", "");
}

// The link closes; the final snapshot stays on both sides as the rollback base, older ones
// go. The target's zone and datasets stay in the ledger until finalize: rollback removes
// exactly those. The removed quota was restored before.
void clean_up(SwitchRun& r) {
  if (r.own_link) {
    r.own_link->close();
  }
  r.ctx.nodes.remove_leftover_links(r.ctx, r.m().id, r.src(), r.dst(), Leftovers::all);
  const std::string keep = r.m().data.value("synced_snap", "");
  const std::string keep_snap = keep.substr(keep.find('@') + 1);
  const std::vector<std::string> roots = detail::instance_roots(r.m());
  // Per node, one read and one sequence (hold the kept snapshot, then release and destroy the
  // older ones: prune_snapshots), both nodes at once.
  const auto tidy = [&](Node& node) {
    const DatasetTree t = node.tree(roots);
    std::vector<std::string> hold;
    for (const std::string& ds : t.datasets) {
      if (t.has(ds + "@" + keep_snap)) {
        hold.push_back(ds + "@" + keep_snap);
      }
    }
    detail::prune_snapshots(r.ctx, node, r.m().id, roots, keep_snap, &t, hold);
  };
  detail::both([&] { tidy(r.src()); }, [&] { tidy(r.dst()); });
  for (const state::Artefact& a : r.ctx.store.live_artefacts(r.m().id)) {
    if (a.kind == "quota_removed") {
      r.ctx.store.mark_artefact_removed(a.id);
    }
  }
}

using W = Window;

// Up to the point of no return: each step with its undo; a failure here puts the source back
// as it was and leaves the migration in phase sync.
std::vector<Step> undoable_steps(SwitchRun& r) {
  const SwitchPlan& p = r.plan;
  const std::vector<std::string> roots = detail::instance_roots(r.m());
  return {
      // Its undo is the last one to run on a failure before the hide: the source as it was,
      // also after an interrupted earlier attempt that had stopped or hidden it.
      {"prepare", "", [&r](auto& d) { prepare(r, d); }, [&r] { restore_source(r); }, W::outside,
       &p.before_hide},
      {"reserve_ips", "reserving the IP addresses for the instance",
       [&r](auto& d) {
         detail::reserve_ips(r.ctx, r.op, r.vm);
         d["reserved"] = r.m().data["reserved_ips"];
       },
       [&r] { detail::unreserve_ips(r.ctx, r.op); }, W::outside, &p.before_hide},
      {"open_data_path", "", [&r](auto& d) { open_link(r, d); },
       [&r] {
         if (r.own_link) {
           r.own_link->close();
         }
       },
       W::outside, &p.before_hide},
      // One more pass while it runs, so the delta inside the window is small.
      {"presync",
       "syncing data before stopping the instance",
       [&r](auto& d) { sync_once(r, "switch.presync", false, d); },
       {},
       W::outside,
       &p.presync},
      {"stage_target", "setting up the target instance (hidden)", [&r](auto&) { stage_target(r); },
       [&r] { remove_staged(r); }, W::outside, &p.before_hide},
      // ---- downtime window: the source stops here ----
      {"stop_source", "stopping the instance", [&r](auto& d) { stop_source(r, d); },
       [&r] { restore_source(r); }, W::downtime, &p.before_hide, "stop"},
      {"final_sync",
       "syncing the final delta",
       [&r](auto& d) { sync_once(r, "switch.final_sync", true, d); },
       {},
       W::downtime,
       &p.before_hide},
      // What the streams set must not get mounted over the target's global zone files.
      {"check_target",
       "",
       [&r, roots](auto&) { r.dst().check_mountpoints(roots, r.vm.zonepath); },
       {},
       W::downtime,
       &p.before_hide},
      {"hide_source", "hiding the original instance", [&r](auto& d) { hide_source(r, d); },
       [&r] { restore_source(r); }, W::downtime, &p.before_hide},
  };
}

// Past the point of no return (the source is hidden): forward only; a rerun completes them.
std::vector<Step> forward_steps(SwitchRun& r) {
  const SwitchPlan& p = r.plan;
  const std::string autoboot = json_bool(r.m().data, "autoboot", true) ? "true" : "false";
  const std::vector<std::string> roots = detail::instance_roots(r.m());
  return {
      {"update_vmapi", "", [&r](auto& d) { update_vmapi(r, d); }, {}, W::downtime},
      {"start_target",
       "starting the migrated instance",
       [&r](auto& d) { start_target(r, d); },
       {},
       W::downtime,
       &p.was_running},
      // ---- window closed: the target runs ----
      {"promote_target", "promoting the migrated instance",
       [&r, autoboot](auto&) {
         r.dst().vm_update(r.vm.uuid, {{"do_not_inventory", "false"}, {"autoboot", autoboot}});
         start_vmapi_wait(r);
       }},
      // Received unmounted; a stopped instance still has its zone root mounted on SmartOS
      // (the zone's config lives there), so mount what start would have mounted.
      {"mount_target",
       "",
       [&r, roots](auto& d) { d["mounted"] = r.dst().mount_filesystems(roots, r.vm.zonepath); },
       {},
       W::outside,
       &p.mount_target},
      {"create_cores", "", [&r](auto& d) { create_cores(r, d); }},
      {"restore_quota",
       "restoring the instance's quota",
       [&r](auto& d) { restore_quota(r, d); },
       {},
       W::outside,
       &p.restore_quota},
      {"indestructible",
       "enabling deletion protection",
       [&r](auto&) { r.dst().vm_update(r.vm.uuid, r.plan.indestructible); },
       {},
       W::outside,
       &p.protect},
      {"cleanup", "", [&r](auto&) { clean_up(r); }},
      // Its wait ran beside the steps since the promotion; VMAPI knows the instance on the
      // target before its IP reservations go.
      {"wait_vmapi", "waiting for VMAPI to show the instance on the target",
       [&r](auto&) { finish_vmapi_wait(r); }},
      {"unreserve_ips", "", [&r](auto&) { detail::unreserve_ips(r.ctx, r.op); }},
  };
}

// The downtime window runs from stop_source to start_target; hide_source is the point of no
// return.
PhaseSpec switch_steps(SwitchRun& r) {
  PhaseSpec spec{"switch", undoable_steps(r), "hide_source"};
  for (Step& s : forward_steps(r)) {
    spec.steps.push_back(std::move(s));
  }
  return spec;
}

} // namespace

SwitchResult switch_over(Context& ctx, const std::string& vm_uuid) {
  // A `sync --every` loop keeps the copy fresh until a switch: take over from it at once (its
  // running sync stops, cleanly) rather than refuse as busy.
  std::optional<state::StopRequest> took_over;
  if (const std::optional<state::Migration> active = ctx.store.find_active_for_vm(vm_uuid)) {
    const std::optional<state::Lease> h = ctx.store.find_lease(active->id);
    if (h && h->operation == "sync-every" && h->pid != static_cast<int>(::getpid())) {
      if (active->num_sync_phases < 1) {
        throw PreconditionError(
            fmt::format("migration {} of {}", active->id, vm_uuid),
            fmt::format("the sync --every loop (pid {} on {}) has not finished its first sync; "
                        "switch once it has (\"zmigrate watch {}\" shows it)",
                        h->pid, h->host, vm_uuid));
      }
      detail::stop_running_command(ctx, *active, "switch");
      took_over = ctx.store.find_stop_request(active->id);
    }
  }
  struct ClearRequest {
    Context& ctx;
    const std::optional<state::StopRequest>& r;
    ~ClearRequest() {
      if (r) {
        try {
          ctx.store.clear_stop_request(r->migration_id, r->requested);
        } catch (const std::exception& e) {
          ctx.log.warn("could not drop the stop request", {{"error", e.what()}});
        }
      }
    }
  } clear_request{ctx, took_over};
  Operation op(ctx, vm_uuid, Action::switch_, "switch"); // lease, then re-read and check
  state::Migration& m = op.record();
  op.start_phase(state::Phase::switch_, "switching instances");
  if (!m.data.contains("switch")) {
    m.data["switch"] = nlohmann::json::object();
  }
  SwitchRun r{
      ctx, op, detail::open_ends(ctx, m), detail::recorded_vm(m), {}, {}, {}, {}, {}, 0, {}, false,
      {},  {}};
  r.plan = plan_switch(m.data, r.vm, "", false); // the rest is decided in prepare
  if (r.plan.before_hide && ctx.nodes.kept_link == nullptr) {
    // A path the last sync parked stays for open_link to adopt (the clean_up step removes it).
    ctx.nodes.remove_leftover_links(ctx, op.id(), r.src(), r.dst(), Leftovers::unparked);
  }
  if (r.plan.before_hide) {
    // What the model expects, kept next to what the switch measures (zmigrate get shows both).
    const DowntimePrediction p = predict_downtime(m.data.value("syncs", nlohmann::json::array()),
                                                  detail::measured_switch_fixed(ctx));
    r.sw()["predicted_downtime_ms"] = p.total.count();
    // Its parts, to be checked one by one against what the switch measures (final_bytes,
    // final_sync_ms, downtime_ms minus final_sync_ms).
    r.sw()["prediction"] = {
        {"fixed_ms", p.fixed.count()},
        {"final_sync_ms", p.final_sync.count()},
        {"delta_bytes", p.delta_bytes},
        {"write_rate", p.write_rate_known ? nlohmann::json(p.write_rate) : nlohmann::json()},
        {"link_rate", p.link_rate}};
    op.save();
  }
  const PhaseSpec spec = switch_steps(r);
  PhaseReport report;
  try {
    run_steps(ctx, op, spec, &report);
  } catch (const std::exception& e) {
    if (!report.committed) {
      // Undone (run_steps): retryable, as Triton: back to phase sync so sync or switch can run
      // again.
      // The undos put the source back (a hide that ran but was not journaled ok included), so
      // the record must not say it is hidden: the next switch starts from the top.
      r.sw().erase("was_running");
      r.sw().erase("source_hidden");
      op.finish_phase(state::State::failed, e.what());
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
  SwitchResult result;
  result.was_running = r.plan.was_running;
  result.downtime = report.downtime;
  result.downtime_steps = report.downtime_steps;
  result.steps = report.steps;
  result.final_bytes = r.final_bytes;
  r.sw()["downtime_ms"] = result.downtime.count();
  // Without pv on the source (SmartOS has none) the final delta goes unestimated and uncounted.
  r.sw()["final_bytes"] =
      r.final_bytes_counted ? nlohmann::json(result.final_bytes) : nlohmann::json();
  nlohmann::json dsteps = nlohmann::json::object();
  for (const TimedStep& s : result.downtime_steps) {
    dsteps[s.name] = s.duration.count();
    if (s.name == "final_sync") {
      r.sw()["final_sync_ms"] = s.duration.count();
    }
  }
  op.finish_phase(
      state::State::successful, {},
      {{"downtime_ms", result.downtime.count()},
       {"downtime_steps", dsteps},
       {"final_bytes", result.final_bytes},
       {"final_bytes_counted", r.final_bytes_counted},
       {"predicted_downtime_ms", r.sw().value("predicted_downtime_ms", std::int64_t{0})},
       {"prediction", r.sw().value("prediction", nlohmann::json())},
       {"was_running", result.was_running}});
  result.migration = op.record();
  return result;
}

} // namespace zmigrate::migration
