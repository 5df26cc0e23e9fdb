// SPDX-License-Identifier: MPL-2.0
#pragma once
// The migration engine: begin, sync, switch, rollback, abort, finalize and migrate. Each
// function reads as a list of named, journaled steps over the Context's interfaces; all
// decisions (placement, what to send, which phase comes next) are pure functions in plan.hpp.

#include <zmigrate/migration/context.hpp>
#include <zmigrate/migration/placement.hpp>
#include <zmigrate/state/records.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace zmigrate::migration {

struct BeginOptions {
  std::string vm_uuid;
  std::string target; // CN UUID or hostname; "" = placement
  bool dry_run = false;
  bool force_core = false;
  bool automatic = false;
  // With dry_run: add the pre-flight summary to the plan (reads sizes on the source node and
  // this head node's history; evacuate --dry-run leaves it out).
  bool summary = false;
  // The CNAPI UUID of the node an evacuation is emptying, when this migration is part of one:
  // recorded as data.evacuation.server, so that `restore` finds what the evacuation took off.
  std::string evacuation{};
};

struct BeginResult {
  state::Migration migration; // not persisted when dry_run
  inventory::Server source;
  inventory::Server target;
  bool dry_run = false;
  nlohmann::json plan; // what begin did or would do
};

struct DatasetTransfer {
  std::string dataset;
  std::string kind; // full, incremental, resume, clone, none
  std::string from; // incremental source snapshot, "" for full
  std::string to;   // snapshot sent
  std::uint64_t estimated_bytes = 0;
  bool estimate_exact = false;
  std::uint64_t bytes = 0;
  bool counted = false; // `bytes` counted on the pipe (pv), not the estimate
  std::chrono::milliseconds duration{0};
  std::size_t lane = 0; // streams of different lanes ran at once (stream_lanes)
};

struct SyncResult {
  state::Migration migration;
  int sync_number = 0; // num_sync_phases after this sync
  std::string snapshot;
  std::vector<DatasetTransfer> transfers;
  std::uint64_t bytes = 0;
  std::chrono::milliseconds duration{0};
  double rate_bytes_per_s = 0;
};

struct TimedStep {
  std::string name;
  std::chrono::milliseconds duration{0};
};

struct SwitchResult {
  state::Migration migration;
  bool was_running = false;
  std::chrono::milliseconds downtime{0}; // source stopped → target running (or config moved)
  std::vector<TimedStep> downtime_steps;
  std::vector<TimedStep> steps;
  std::uint64_t final_bytes = 0;
};

struct RollbackResult {
  state::Migration migration;
  bool kept_changes = false;
  std::uint64_t bytes = 0;
  std::chrono::milliseconds downtime{0};
};

// What a rollback without --keep-changes throws away: the bytes written on the target since the
// switch's final snapshot (`written@snap` where the node has it; else the growth of referenced,
// approximate). Reads only; throws as rollback would when it cannot run.
struct RollbackPreview {
  std::uint64_t written_bytes = 0;
  bool approximate = false;
  std::string target_hostname;
};
RollbackPreview rollback_preview(Context& ctx, const std::string& vm_uuid);

struct MigrateOptions {
  BeginOptions begin;
  int max_syncs = 6;
  std::uint64_t converge_bytes = 64ULL << 20;
  bool finalize = false;
  // migrator.sh's full mode, for instances that write faster than the link: stop the instance
  // first, copy it whole while it is stopped (one sync), switch, and start it on the target if
  // it was running. The downtime is the whole copy (MigrateResult::offline_downtime).
  bool offline = false;
  // A downtime budget (--max-downtime): keep syncing until the predicted switch downtime
  // (predict_downtime) fits, then switch. Bounded by `deadline` (from the start of the syncs)
  // when given, else by max_syncs incremental syncs; then it stops ready to switch with the
  // prediction and why (Error, exit 1), or switches anyway with force_after_deadline.
  std::optional<std::chrono::milliseconds> max_downtime;
  std::optional<std::chrono::milliseconds> deadline;
  bool force_after_deadline = false;
  // Stop ready to switch instead of switching (evacuate --switch manual; `migrate --no-switch`):
  // begin and the syncs only. Excludes finalize.
  bool no_switch = false;
};

struct MigrateResult {
  BeginResult begin;
  std::vector<SyncResult> syncs;
  std::optional<SwitchResult> switched;
  bool finalized = false;
  // --offline: from the stop before the copy to the start on the target (0 when the instance
  // was not running: nothing was down).
  std::optional<std::chrono::milliseconds> offline_downtime;
  // --max-downtime: the prediction the switch was started on.
  std::optional<std::chrono::milliseconds> predicted_downtime;
};

// What the active migrations of this state store promised on their targets and CNAPI does not
// count yet (the instance is still on its source: phases begin and sync, or a switch that has
// not succeeded), except instance `except_vm`'s own. Reads the store only.
PromiseLedger active_promises(Context& ctx, const std::string& except_vm = "");

// `vm` as placement sees it: with its image's traits (IMGAPI manifest `traits`, read when the
// image is known; a malformed one becomes a placement problem). IMGAPI failing is logged and
// leaves the image's traits out; only an interrupt is thrown.
inventory::Vm with_image_traits(Context& ctx, inventory::Vm vm);

// begin: validate, choose the target, import images, prepare. With dry_run, changes nothing and
// adds the pre-flight summary (preflight) to the plan.
BeginResult begin(Context& ctx, const BeginOptions& options);
// The pre-flight summary of a migration of `vm` from `source` to `target`, read-only: owner,
// state and IPs; why this target; each dataset's size (estimate_vm) and the first sync's time
// at the median rate of this head node's earlier syncs (else the configured rate); the expected
// downtime from its earlier switches (null when there is none to go by). The rate is the newest
// `estimate --measure` of the two nodes when there is one (measure.hpp). `placement` is what
// automatic placement decided (the chosen node's reason and every node it rejected, added as
// "placement"); nullptr when the target was named or retried.
nlohmann::json preflight(Context& ctx, const inventory::Vm& vm, const inventory::Server& target,
                         Node& source, const inventory::Server& source_server, bool named,
                         const Placement* placement = nullptr);
struct SyncOptions {
  // Stop the instance first (migrate --offline): journaled as step stop_source, which records
  // whether it ran (data.switch.was_running, so switch starts it on the target and abort starts
  // it again on the source) and when it stopped (data.offline.stopped_at).
  bool stop_first = false;
  // The lease's operation: "sync", or "sync-every" for the loop of `sync --every`, which a
  // `switch` from another shell may stop and take over.
  std::string operation = "sync";
};
SyncResult sync(Context& ctx, const std::string& vm_uuid, const SyncOptions& options = {});

struct SyncLoopResult {
  std::vector<SyncResult> syncs;
  // "switch": handed over; "ended": no longer active (an abort from another shell ended it
  // while the loop waited); "interrupted": a signal while waiting.
  std::string ended;
  std::optional<state::Lease> switch_by; // the switch that took over, when known
};
// `sync --every`: sync, wait `interval`, sync again, ... (migrator.sh's incremental loop) until a
// signal arrives while it waits (ended "interrupted"; a signal during a sync ends that sync as
// usual, with its Error), or until `zmigrate switch` from another shell takes over (ended
// "switch"): a sync of the loop that is running is stopped at once for it (its lease operation
// is "sync-every"), and a waiting loop sees the switch and ends. `on_sync` is told each sync.
SyncLoopResult sync_loop(Context& ctx, const std::string& vm_uuid,
                         std::chrono::milliseconds interval,
                         const std::function<void(const SyncResult&)>& on_sync);
SwitchResult switch_over(Context& ctx, const std::string& vm_uuid);
RollbackResult rollback(Context& ctx, const std::string& vm_uuid, bool keep_changes);
// Abort. When another command is running a sync (or begin, or migrate before its switch) of the
// migration, it is asked to stop first through the state store (StopRequest): that command
// stops its transfer within a second or two, cleans up and exits 130; abort then goes on under
// the lease. Refused (PreconditionError naming it) while a switch, rollback or finalize runs,
// and when the running command has not stopped after Settings::stop_wait_ms.
state::Migration abort(Context& ctx, const std::string& vm_uuid);

struct PauseResult {
  state::Migration migration;          // as the stopped command left it (sync/paused, or as it was)
  std::optional<state::Lease> stopped; // the command that was running and stopped, if any
};
// Pause (Triton's `pause` action): the running sync of `vm_uuid` (or migrate, or begin) stops
// at once with a resumable state (sync/paused; the partial receive stays, so the next sync
// resumes it where the ZFS has a resume token); the next `sync` or `migrate` goes on. A
// command that is between two phases (a `migrate` loop) stops at its next phase. Nothing
// running: the request is still recorded for such a command and the migration is unchanged.
// Refused before the switch has started only: during or after a switch, PreconditionError.
PauseResult pause(Context& ctx, const std::string& vm_uuid);
state::Migration finalize(Context& ctx, const std::string& vm_uuid);
MigrateResult migrate(Context& ctx, const MigrateOptions& options);

// The active migration of `vm_uuid`, or NotFoundError telling how to start one.
state::Migration load_active(Context& ctx, const std::string& vm_uuid);

} // namespace zmigrate::migration
