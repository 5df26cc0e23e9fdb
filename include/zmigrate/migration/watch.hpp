// SPDX-License-Identifier: MPL-2.0
#pragma once
// Following a migration from another process (`zmigrate watch`): each watch_step() reads the
// state store once (the record with its phase runs, the live progress row, the lease) and turns
// what changed since the previous step into events shaped like VMAPI's watch stream
// (sdc-vmapi's docs, "Watching a migration"): `progress` events for phase runs and byte progress,
// and one final `end` event. The caller polls (about every 0.5 s) and renders; nothing here prints
// or sleeps, so tests drive it with a fake clock and a scripted lease probe.

#include <zmigrate/state/store.hpp>
#include <zmigrate/util/clock.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace zmigrate::migration {

// The lease of a migration as the watcher sees it.
struct LeaseStatus {
  int pid = 0;
  std::string host;
  std::string operation; // "sync", "switch", ...
  bool alive = true;     // false: the holder process is gone (the lease is stale)
};

// Returns the lease of a migration id, or nullopt when nobody holds it. The CLI reads the
// SQLite lease row and checks the holder pid (kill(pid, 0)) when it runs on this host.
using LeaseProbe = std::function<std::optional<LeaseStatus>(const std::string& migration_id)>;

// One event of the watch stream.
struct WatchEvent {
  enum class Type { progress, end };
  // What a progress event stands for, for human rendering (JSON output does not carry it).
  enum class Kind {
    phase_run,  // a phase run appeared or was running when the watch began (" - syncing data")
    phase_done, // a phase run ended while the migration goes on (automatic migrations)
    bytes,      // byte progress of a transfer
    milestone,  // a progress row with a message and no bytes ("stopping the instance")
    end,        // the end event
  };
  Type type = Type::progress;
  Kind kind = Kind::phase_run;
  std::string phase; // Triton spelling: begin, sync, switch, ...
  std::string state; // running, paused, failed, successful
  std::string message;
  std::optional<std::uint64_t> current_progress;
  std::optional<std::uint64_t> total_progress;
  bool total_approximate = false;
  std::optional<std::int64_t> eta_ms;
  std::optional<double> transfer_bytes_second;
  // Phase run entries only.
  std::string started_timestamp;
  std::string finished_timestamp;
  nlohmann::json details = nlohmann::json::object(); // the run's details (bytes, rate, downtime)
};

// Carried from one watch_step to the next. Make it with start_watch().
struct WatchState {
  std::string migration_id;
  std::string vm_uuid;
  bool started = false;                      // the first step ran
  bool ended = false;                        // the end event was produced
  int exit_code = 0;                         // once ended: 0 successful/paused, 1 failed
  std::map<std::int64_t, state::State> runs; // phase runs already reported, by id
  std::int64_t bytes_run = 0;                // phase run the last byte progress belonged to
  std::uint64_t bytes_current = 0;           // last current_progress reported for bytes_run
  std::string progress_updated;              // `updated` of the last progress row reported
  std::int64_t last_step = 0;                // journal row id of the last step looked at
  bool saw_activity = false;                 // a lease or a running phase was seen
  // Since when the store has looked finished (or abandoned) without it being certain; the end is
  // declared after k_watch_grace so a process between two phases is not taken for finished.
  std::optional<std::chrono::steady_clock::time_point> quiet_since;
};

// How long a finished-looking migration that was active during this watch must stay so before
// the end is declared (a `migrate` run releases its lease between phases).
inline constexpr std::chrono::milliseconds k_watch_grace{5000};
// How long a running phase run without any lease must stay so before it counts as abandoned
// (the record and the lease are read in two transactions).
inline constexpr std::chrono::milliseconds k_watch_orphan_grace{2000};
// The poll interval the CLI uses between steps.
inline constexpr std::chrono::milliseconds k_watch_poll{500};

// Choose the migration to follow: the active migration of `vm_uuid`, else its newest (archived)
// one. Throws NotFoundError when the instance has no migration at all.
WatchState start_watch(state::StateStore& store, const std::string& vm_uuid);

// One poll. Returns the events since the previous step (possibly none); the last one is the end
// event once the migration is no longer running and no live process holds its lease, after
// which `st.ended` is true and further calls return nothing. Rules:
//  - on the first step, a running phase run is reported first; a finished migration yields its
//    end event at once;
//  - each new phase run is reported once, and once more (kind phase_done) when it finishes
//    while the migration goes on;
//  - byte progress comes from the store's progress row of the current running phase run;
//    current_progress never decreases within a run and never exceeds total_progress;
//  - a lease whose holder died while its phase run is still running ends the watch with
//    state "failed" and the message `the <op> process (pid N) died; rerun "zmigrate <op> VM"`.
// Throws what the store throws; throws NotFoundError when the migration record vanished.
std::vector<WatchEvent> watch_step(state::StateStore& store, const LeaseProbe& lease,
                                   const Clock& clock, WatchState& st);

// The event as one VMAPI-style watch JSON object: type, phase, state, and the fields that are
// set (current_progress, total_progress, total_approximate, eta_ms, transfer_bytes_second,
// message, started_timestamp, finished_timestamp, duration_ms).
nlohmann::json to_json(const WatchEvent& e);

// The closing line of a human watch, in sdc-migrate's words: "OK - <phase> was successful",
// "OK - ready for migration sync" (begin paused), "OK - ready for migration sync or migration
// switch" (sync paused), "Failure: <message>".
std::string end_line(const WatchEvent& end);

} // namespace zmigrate::migration
