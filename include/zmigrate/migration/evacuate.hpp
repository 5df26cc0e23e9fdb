// SPDX-License-Identifier: MPL-2.0
#pragma once
// evacuate: migrate every instance off one compute node, each as a whole `migrate` (begin,
// syncs, switch, optionally finalize), up to `parallel` at once and `per_node` into any one
// target, through a MigrationLauncher (the CLI's starts one `zmigrate migrate` process per
// instance; without one they run here, one after the other). Where each goes is planned for all
// of them at once before the first moves (plan_placement, with what active migrations promised),
// so no node is counted on twice. One instance failing does not stop the others; the result
// says what happened to each, and each failed migration stays in the state store for `get`,
// `rollback` or `abort`.

#include <zmigrate/migration/context.hpp>
#include <zmigrate/migration/engine.hpp>
#include <zmigrate/migration/placement.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace zmigrate::migration {

// One whole migration of an evacuation, as a launcher runs it.
struct MigrationRequest {
  std::string vm_uuid;
  std::string target_uuid; // "" = the target its begun migration recorded
  int max_syncs = 6;
  std::uint64_t converge_bytes = 64ULL << 20;
  bool finalize = false;
  bool force_core = false;
  bool allow_older_platform = false;
  std::uint64_t bwlimit = 0; // bytes per second for this migration's streams (0 = unlimited)
  std::string evacuation;    // the node being evacuated (BeginOptions::evacuation); "" = restore
  bool no_switch = false;    // stop ready to switch (evacuate --switch manual)
};

// How one launched migration ended.
struct MigrationExit {
  std::string vm_uuid;
  int exit_status = 0; // the documented exit codes (0 ok, 4 refused, 130 interrupted, ...)
  std::string error;   // its "what: why" when it failed
};

// Runs the migrations of an evacuation. start() returns once the migration runs (or, for a
// launcher that runs them in this process, once it ended); wait_any() blocks until one started
// migration has ended and says how (nullopt when none is running, or when a signal ended the
// wait: the caller looks at interrupt_requested()). stop_all() asks every running
// migration to stop at its next step boundary, as SIGTERM does.
class MigrationLauncher {
public:
  virtual ~MigrationLauncher() = default;
  virtual void start(const MigrationRequest& request) = 0;
  virtual std::optional<MigrationExit> wait_any() = 0;
  virtual void stop_all() = 0;
};

// Runs each migration in this process, to its end, inside start() (migrate()).
class InProcessLauncher final : public MigrationLauncher {
public:
  explicit InProcessLauncher(Context& ctx) : m_ctx(ctx) {}
  void start(const MigrationRequest& request) override;
  std::optional<MigrationExit> wait_any() override;
  void stop_all() override {}

private:
  Context& m_ctx;
  std::vector<MigrationExit> m_done;
};

// A migration the evacuation still has to start, and the node it goes to.
struct QueuedMigration {
  std::string vm_uuid;
  std::string target_uuid;
};

// The next migration to start (pure): the first of `queue` whose target has fewer than
// `per_node` of `running_targets` (the targets of the running ones), when fewer than `parallel`
// run; nullopt when none may start now. `per_node` 0 means no limit per node.
std::optional<std::size_t> next_to_start(const std::vector<QueuedMigration>& queue,
                                         const std::vector<std::string>& running_targets,
                                         int parallel, int per_node);

struct EvacuateOptions {
  std::string server;               // the CN to empty: UUID or hostname
  std::string target;               // "" = placement for each instance
  std::vector<std::string> to;      // placement only onto these nodes (uuid or hostname)
  std::vector<std::string> exclude; // instances to leave where they are (uuid or alias)
  bool separate_owners = false;     // spread each owner's instances over the targets
  bool dry_run = false;
  bool finalize = false;
  bool force_core = false;
  bool include_stopped = true;
  int max_syncs = 6;
  std::uint64_t converge_bytes = 64ULL << 20;
  int parallel = 1;          // migrations at once, in all
  int per_node = 0;          // migrations at once into any one target (0 = as parallel)
  std::uint64_t bwlimit = 0; // bytes per second shared by all of them (0 = unlimited); each of
                             // the `parallel` migrations gets an equal share
  // Runs the migrations; nullptr = InProcessLauncher (one after the other, whatever `parallel`).
  MigrationLauncher* launcher = nullptr;
  bool restore = false; // restore(): the migrations go back, with no evacuation mark
  // --switch manual: each stops ready to switch (outcome "ready"); `switch --ready CN` switches
  // them in the window. Excludes finalize.
  bool manual_switch = false;
};

struct EvacuationItem {
  std::string vm_uuid;
  std::string alias;
  std::string brand;
  std::string state;   // as VMAPI listed it
  std::string target;  // hostname chosen (or planned)
  std::string outcome; // planned, refused (dry run), migrated, finalized, ready (--switch
                       // manual), switched (switch --ready), skipped, failed, interrupted,
                       // excluded (--exclude)
  std::string error;   // why skipped or failed
  std::string reason;  // why the plan chose `target`, or why it found no node
  std::vector<RejectedNode> rejected; // the nodes the plan refused, each with every reason
  std::chrono::milliseconds downtime{0};
  std::uint64_t bytes = 0;
};

struct EvacuateResult {
  inventory::Server server;
  std::vector<EvacuationItem> items;
  bool interrupted = false; // SIGINT/SIGTERM: the items after the last one were not started
  bool all_ok() const;
};

// The instances to move off `server`, in the order evacuate takes them (pure): stopped ones
// first (no downtime at stake), then running ones by alias, then UUID.
std::vector<inventory::Vm> evacuation_order(std::vector<inventory::Vm> vms, bool include_stopped);

struct RestoreOptions {
  std::string server; // the CN an evacuation emptied: UUID or hostname
  bool dry_run = false;
  bool finalize = false;
  int max_syncs = 6;
  std::uint64_t converge_bytes = 64ULL << 20;
  int parallel = 1;
  std::uint64_t bwlimit = 0;
  MigrationLauncher* launcher = nullptr;
};

// The instances an evacuation of `server` moved away that are still where it put them: the
// newest migration of each instance recorded data.evacuation.server == `server`, is finalized,
// and VMAPI shows the instance on that migration's target. Each is migrated back to `server`
// (through the launcher, as evacuate). One switched but not finalized is refused ("skipped":
// its source copy is still on `server`; `zmigrate rollback` brings it back). `dry_run` checks
// `server` for each as a named target (as begin --dry-run: "refused" with every reason) and
// changes nothing. Throws NotFound for an unknown server.
EvacuateResult restore(Context& ctx, const RestoreOptions& options);

// `sync --all` (cron): one sync of every migration of this state store that waits between begin
// and switch (its record accepts a sync), one after the other, oldest first. One that is busy
// (another process holds it) or refused is "skipped", one that fails is "failed"; neither stops
// the others. An interrupt stops the running sync as any sync and starts no other.
struct SyncAllItem {
  std::string vm_uuid;
  std::string alias;
  std::string migration_id;
  std::string outcome; // synced, skipped, failed, interrupted
  std::string error;
  std::uint64_t bytes = 0;
  std::chrono::milliseconds duration{0};
};
struct SyncAllResult {
  std::vector<SyncAllItem> items;
  bool interrupted = false;
};
SyncAllResult sync_all(Context& ctx);

// `switch --ready CN`: switches, one after the other, every migration from `server` that is
// ready to switch (its record accepts a switch: at least one sync, not switched yet), oldest
// first; each outcome is "switched" (with its downtime), "skipped" (refused before anything
// stopped, e.g. busy or the target can no longer take it: the instance runs on) or "failed".
// An interrupt stops at the end of a step as any switch and starts no other.
EvacuateResult switch_ready(Context& ctx, const std::string& server);

// What a migration record says was moved (pure): the bytes of its finished syncs and of its
// switch's final delta, and the switch's downtime (0 before a switch). Failed or unfinished runs
// count nothing: these are the bytes the target holds from this migration.
struct MovedTotals {
  std::uint64_t bytes = 0;
  std::chrono::milliseconds downtime{0};
};
MovedTotals moved_totals(const state::Migration& m);

// Fills `item`'s bytes, downtime and target hostname from the record (pure).
void summarize_record(const state::Migration& m, EvacuationItem& item);

// Lists the active instances on `options.server` (VMAPI), and those of the active migrations
// from it that VMAPI already places elsewhere (switched, not finished), plans them all
// (plan_placement; options.target makes it the only node), and migrates each to its planned node;
// an instance whose migration is begun already goes on to its recorded target (not planned anew).
// `dry_run` plans every instance (target or every rejected node, validation) and changes nothing.
// Throws UsageError for a `to` or `exclude` entry that matches nothing. Throws only for what stops
// the whole evacuation before it starts (an unknown server, the inventory unreachable). An
// interrupt (SIGINT/SIGTERM) stops the instance being moved at the end of its current step and
// starts no other; the result says so (`interrupted`).
EvacuateResult evacuate(Context& ctx, const EvacuateOptions& options);

} // namespace zmigrate::migration
