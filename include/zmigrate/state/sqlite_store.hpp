// SPDX-License-Identifier: MPL-2.0
#pragma once
// SqliteStateStore: the StateStore on one SQLite database file (WAL journal, versioned schema,
// one transaction per public call). The only code in zmigrate that speaks SQL.
//
// Durability: the connection runs with synchronous=NORMAL, which in WAL mode survives a crash of
// the process but may lose the last commits on power loss. Every call that records something the
// recovery path relies on (migrations, phase runs, journal steps, the artefact ledger, lease
// acquisition) commits with synchronous=FULL instead: those rows are written *before* an effect on
// a compute node, and after a power cut the record of a created snapshot, key or a hidden source
// must still be there. Progress rows and heartbeats are only for display and staleness, so
// they stay NORMAL (one fsync a second for progress would buy nothing).

#include <zmigrate/state/store.hpp>
#include <zmigrate/util/clock.hpp>

#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>

namespace zmigrate::state {

namespace detail {
class SqliteConnection; // RAII sqlite3 handle, private to sqlite_store.cpp
}

// One step of the schema history: the SQL that turns a database at `version - 1` into one at
// `version`. Upgrades run oldest first inside a single IMMEDIATE transaction, so a database is
// never left half-upgraded.
struct SchemaUpgrade {
  int version;
  const char* sql;
};

// The upgrades this zmigrate knows, oldest first. The version of the last one is the schema
// version this binary writes (also `SqliteStateStore::k_schema_version`).
std::span<const SchemaUpgrade> schema_upgrades();

class SqliteStateStore final : public StateStore {
public:
  // Schema version written by this binary (`PRAGMA user_version`); the last of schema_upgrades().
  static constexpr int k_schema_version = 4;

  // `<state_dir>/zmigrate.db`.
  static std::string default_path(const std::string& state_dir);

  // Open or create the database at `path` (":memory:" for a private in-memory database, as tests
  // use). Missing parent directories are created with mode 0700 and a new database file with
  // 0600. Enables WAL, a 5 s busy timeout and foreign keys, then brings the schema up to date
  // using `upgrades` (tests pass a different list; everyone else keeps the default). Any number
  // of processes and threads may open one path at once, a new file included: each waits for the
  // others (up to the busy timeout) rather than failing.
  // `clock` stamps timestamps the caller leaves empty and judges lease staleness; it must outlive
  // the store. Throws Error(ExitCode::state) naming `path` when the file cannot be opened or
  // written, is not a SQLite database, or has a schema newer than `upgrades` knows.
  explicit SqliteStateStore(const std::string& path);
  SqliteStateStore(const std::string& path, const Clock& clock,
                   std::span<const SchemaUpgrade> upgrades = schema_upgrades());
  ~SqliteStateStore() override;
  SqliteStateStore(const SqliteStateStore&) = delete;
  SqliteStateStore& operator=(const SqliteStateStore&) = delete;

  const std::string& path() const { return m_path; }
  // The schema version of the open database (== k_schema_version once opened).
  int schema_version();

  // --- StateStore ---
  // Notes on top of store.hpp, common to all calls: empty timestamps (created, started, updated)
  // are stamped with the clock; failures throw Error(ExitCode::state) naming the database path,
  // or TransientError(ExitCode::state) when another process held the database locked > 5 s.

  // Also stores `m.history` (ids are assigned; the given ones are ignored). Throws
  // PreconditionError when `m` is not archived and `m.vm_uuid` already has an active migration
  // (the race backstop behind migration::check_action).
  void insert_migration(const Migration& m) override;
  // An empty `m.created` keeps the stored one. Throws Error(ExitCode::state) when no migration
  // has `m.id` or its stored version is not `m.version` (lost update), PreconditionError when
  // un-archiving it would make a second active migration. On success `m.version` is bumped.
  void update_migration(Migration& m) override;
  // Loaded with `history` (oldest first) in every find/list call.
  std::optional<Migration> find_migration(const std::string& id) override;
  std::optional<Migration> find_active_for_vm(const std::string& vm_uuid) override;
  std::optional<Migration> find_latest_for_vm(const std::string& vm_uuid) override;
  // Ordered by created timestamp, newest first (insertion order breaks ties).
  std::vector<Migration> list_migrations(const ListFilter& filter) override;

  // Returns the new run's id. Throws Error(ExitCode::state) when the migration does not exist.
  std::int64_t add_phase_run(const std::string& migration_id, const PhaseRun& r) override;
  // Rewrites every field of run `r.id` of `migration_id`; throws when there is no such run.
  void update_phase_run(const std::string& migration_id, const PhaseRun& r) override;

  // Records `s` with status "running" (whatever `s.status` says). `s.phase_run_id` 0 means the
  // step belongs to no phase run; otherwise it must exist.
  std::int64_t begin_step(const Step& s) override;
  // Stamps finished; `details` top-level keys are merged into those given at begin_step (a
  // non-object replaces them). Throws Error(ExitCode::state) for an unknown `step_id`.
  void end_step(std::int64_t step_id, const std::string& status,
                const nlohmann::json& details) override;
  // Journal order (oldest first).
  std::vector<Step> steps(const std::string& migration_id, std::int64_t after_id = 0) override;
  std::optional<Step> completed_step(std::int64_t phase_run_id, const std::string& name) override;

  // Idempotent: when a live artefact with the same migration, kind, host and name exists, its
  // details are replaced and its id returned, so a re-run step does not record it twice.
  std::int64_t record_artefact(const Artefact& a) override;
  // Stamps `removed`; a second call keeps the first timestamp. Throws for an unknown id.
  void mark_artefact_removed(std::int64_t id) override;
  // Oldest first.
  std::vector<Artefact> live_artefacts(const std::string& migration_id) override;
  // `kind` "" means every kind. Oldest first.
  std::vector<Artefact> all_live_artefacts(const std::string& kind) override;

  // Replaces the row of `p.migration_id` (the migration must exist).
  void put_progress(const Progress& p) override;
  std::optional<Progress> get_progress(const std::string& migration_id) override;

  // Leases are keyed by any string (normally a migration id; callers may lock e.g. "vm:<uuid>"
  // before a migration exists). An empty `lease.host` means this host (gethostname), pid 0
  // means getpid(); the heartbeat is stamped now. "This host" is gethostname(). A holder on this
  // host is stale only when its pid is gone (kill(pid, 0) fails, and not with EPERM), whatever
  // its heartbeat says. A holder on another host is stale when its heartbeat is older than
  // `stale_after_s` (<= 0: never), and then taken over only with `take_over_remote`; without it
  // the holder comes back with `stale_remote` set. Returns std::nullopt when the lease is now
  // ours, else the holder.
  using StateStore::try_acquire_lease;
  std::optional<Lease> try_acquire_lease(const Lease& lease, int stale_after_s,
                                         bool take_over_remote) override;
  // Refreshes the heartbeat of our lease (`pid` on the host it was acquired for through this
  // store, else this host; pid 0 = getpid()). Throws PreconditionError when the lease is no
  // longer ours (another process took it over as stale): stop working at once.
  void heartbeat(const std::string& migration_id, int pid) override;
  // Drops our lease (`pid` on the same host as for heartbeat); does nothing when it is not ours.
  void release_lease(const std::string& migration_id, int pid) override;

  // The lease of `key`, whoever holds it (for `status` displays and tests).
  std::optional<Lease> find_lease(const std::string& key) override;

  StopOutcome request_stop(const StopRequest& r,
                           const std::vector<std::string>& unstoppable) override;
  std::optional<StopRequest> find_stop_request(const std::string& migration_id) override;
  void clear_stop_request(const std::string& migration_id, const std::string& requested) override;

private:
  void open(std::span<const SchemaUpgrade> upgrades);
  void upgrade_schema(std::span<const SchemaUpgrade> upgrades);
  int read_user_version();
  std::string now() const;
  std::optional<Migration> find_active_unlocked(const std::string& vm_uuid);
  bool lease_is_stale(const Lease& holder, int stale_after_s) const;
  const std::string& lease_host(const std::string& key) const;

  std::string m_path;
  std::unique_ptr<Clock> m_own_clock; // set when no clock was passed in
  const Clock* m_clock;
  std::string m_hostname;
  std::map<std::string, std::string> m_lease_hosts; // key → host of the leases we acquired
  std::unique_ptr<detail::SqliteConnection> m_db;
  std::mutex m_mutex; // one connection; calls are serialised
};

} // namespace zmigrate::state
