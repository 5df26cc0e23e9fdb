// SPDX-License-Identifier: MPL-2.0
#pragma once
// The state seam. SqliteStateStore (WAL, versioned schema) is the only code that speaks SQL.
// Every write is its own transaction unless noted; a crash between calls loses nothing already
// returned from a call.

#include <zmigrate/state/records.hpp>

#include <optional>
#include <string>
#include <vector>

namespace zmigrate::state {

// What StateStore::request_stop did: whether it recorded the request, and who held the lease.
struct StopOutcome {
  bool recorded = false;
  std::optional<Lease> holder;
};

struct ListFilter {
  std::optional<State> state;
  std::string server_uuid; // source or target
  bool include_archived = false;
  std::string kind = "migration"; // or "measurement" (Migration::kind)
  std::size_t limit = 0;          // the newest `limit` only (0: all)
};

class StateStore {
public:
  virtual ~StateStore() = default;

  // --- migrations ---
  virtual void insert_migration(const Migration& m) = 0;
  // Update every scalar field and `data` of `m` (not history), only if the stored record is still
  // at `m.version`; then `m.version` is bumped to the new stored version. Throws
  // Error(ExitCode::state) naming the migration when the stored version differs (another process
  // updated the record since `m` was read: nothing is written) or there is no such migration.
  virtual void update_migration(Migration& m) = 0;
  virtual std::optional<Migration> find_migration(const std::string& id) = 0;
  // The active (not archived) migration of `vm_uuid`, if any.
  virtual std::optional<Migration> find_active_for_vm(const std::string& vm_uuid) = 0;
  // The newest migration of `vm_uuid`, archived or not.
  virtual std::optional<Migration> find_latest_for_vm(const std::string& vm_uuid) = 0;
  // Newest first.
  virtual std::vector<Migration> list_migrations(const ListFilter& filter) = 0;

  // --- phase runs (progress_history) ---
  virtual std::int64_t add_phase_run(const std::string& migration_id, const PhaseRun& r) = 0;
  virtual void update_phase_run(const std::string& migration_id, const PhaseRun& r) = 0;

  // --- journal ---
  virtual std::int64_t begin_step(const Step& s) = 0; // status "running"
  virtual void end_step(std::int64_t step_id, const std::string& status,
                        const nlohmann::json& details) = 0;
  // The journal of a migration in order; only the steps after `after_id` when given (watch).
  virtual std::vector<Step> steps(const std::string& migration_id, std::int64_t after_id = 0) = 0;
  // The last step named `name` in `phase_run_id` with status ok, if any.
  virtual std::optional<Step> completed_step(std::int64_t phase_run_id,
                                             const std::string& name) = 0;

  // --- ledger ---
  virtual std::int64_t record_artefact(const Artefact& a) = 0;
  virtual void mark_artefact_removed(std::int64_t id) = 0;
  virtual std::vector<Artefact> live_artefacts(const std::string& migration_id) = 0;
  // Live artefacts of every migration (for leftover cleanup after a crash).
  virtual std::vector<Artefact> all_live_artefacts(const std::string& kind) = 0;

  // --- progress ---
  virtual void put_progress(const Progress& p) = 0;
  virtual std::optional<Progress> get_progress(const std::string& migration_id) = 0;

  // --- leases ---
  // Take the lease for `lease.migration_id` in one transaction. Succeeds when it is free, held
  // by the same pid and host, held on this host by a pid that is gone, or held on another host
  // with a heartbeat older than `stale_after_s` and `take_over_remote` is true. A live pid on
  // this host is never stale, however old its heartbeat (a long command may be silent); a holder
  // on another host cannot be checked, so only its heartbeat age counts, and only an explicit
  // take-over takes it. Returns the current holder when refused (with `stale_remote` set when
  // `take_over_remote` would have taken it).
  virtual std::optional<Lease> try_acquire_lease(const Lease& lease, int stale_after_s,
                                                 bool take_over_remote) = 0;
  std::optional<Lease> try_acquire_lease(const Lease& lease, int stale_after_s) {
    return try_acquire_lease(lease, stale_after_s, false);
  }
  virtual void heartbeat(const std::string& migration_id, int pid) = 0;
  virtual void release_lease(const std::string& migration_id, int pid) = 0;
  // The lease of `migration_id`, whoever holds it (std::nullopt when free).
  virtual std::optional<Lease> find_lease(const std::string& migration_id) = 0;

  // --- stop requests (abort and pause from another shell) ---
  // In one transaction: read the lease of `r.migration_id`; when its holder runs one of the
  // operations in `unstoppable` (a switch, a rollback, ...), record nothing and return
  // {false, holder}; otherwise record `r` (replacing an earlier request of that migration) and
  // return {true, holder or std::nullopt}. Taking the lease and reading the request are ordered
  // by this transaction, so a holder either sees the request or was seen by it.
  virtual StopOutcome request_stop(const StopRequest& r,
                                   const std::vector<std::string>& unstoppable) = 0;
  virtual std::optional<StopRequest> find_stop_request(const std::string& migration_id) = 0;
  // Drop the request of `migration_id` if it is still the one stamped `requested` (a newer
  // request stays).
  virtual void clear_stop_request(const std::string& migration_id,
                                  const std::string& requested) = 0;
};

} // namespace zmigrate::state
