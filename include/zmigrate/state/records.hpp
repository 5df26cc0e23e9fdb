// SPDX-License-Identifier: MPL-2.0
#pragma once
// Plain data persisted by the state store. Compatible with Triton's migration record model
// (phase/state, num_sync_phases, progress_history) as sdc-vmapi documents it.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace zmigrate::state {

// Phases and states use Triton's spelling (strings in the store and in JSON output).
enum class Phase { begin, sync, switch_, abort, rollback, finalize };
enum class State { running, paused, failed, successful };

std::string to_string(Phase p); // "begin", "sync", "switch", ...
std::string to_string(State s);
Phase phase_from_string(const std::string& s); // throws Error(ExitCode::state) on unknown text
State state_from_string(const std::string& s);

// One run of a phase (Triton's progress_history entry).
struct PhaseRun {
  std::int64_t id = 0;
  Phase phase = Phase::begin;
  State state = State::running;
  std::string message;
  std::string error;
  std::string started;                // ISO 8601
  std::string finished;               // "" while running
  std::uint64_t current_progress = 0; // bytes during sync, else percent-like
  std::uint64_t total_progress = 100;
  nlohmann::json details = nlohmann::json::object(); // bytes, rate, downtime breakdown, ...
};

struct Migration {
  std::string id; // uuid v4
  std::string vm_uuid;
  std::string source_server_uuid;
  std::string target_server_uuid;
  Phase phase = Phase::begin;
  State state = State::running;
  bool automatic = false;
  bool archived = false; // finished (finalized/aborted/rolled back): kept for audit
  int num_sync_phases = 0;
  std::string created;
  std::string finished;
  std::string error;
  // Everything the engine needs to remember about the instance and the plan: the VM as it was at
  // begin (raw VMAPI JSON), original state/autoboot, bhyve quota details, reserved NICs, ...
  nlohmann::json data = nlohmann::json::object();
  std::vector<PhaseRun> history;
  // Optimistic lock: the number of updates the stored row has had. StateStore::update_migration
  // writes only when it still matches (and bumps it here), so an update made on a copy read
  // before another process wrote the record fails instead of silently undoing that write.
  // Internal: not in the JSON view.
  std::int64_t version = 0;
  // "migration", or "measurement": a link measurement of `estimate --measure` (the record its
  // data-path ledger rows belong to; archived from the start, never listed with migrations).
  std::string kind = "migration";
};

// Journal: one row per step, written before (state running) and after (ok/failed) it runs.
struct Step {
  std::int64_t id = 0;
  std::string migration_id;
  std::int64_t phase_run_id = 0;
  std::string name;   // e.g. "switch.stop_source"
  std::string status; // running, ok, failed, skipped
  std::string started;
  std::string finished;
  nlohmann::json details = nlohmann::json::object();
};

// Ledger of artefacts made outside the head node, so a later command can remove leftovers.
struct Artefact {
  std::int64_t id = 0;
  std::string migration_id;
  std::string kind; // ephemeral_key, authorized_key, known_hosts, snapshot, hold, ip_reservation,
                    // target_dataset, zone_config
  std::string host; // server uuid (or "napi")
  std::string name; // dataset/snapshot name, key path, "network_uuid/ip", ...
  nlohmann::json details = nlohmann::json::object();
  std::string created;
  std::string removed; // "" while it exists
};

// Live byte progress for `watch` (one row per migration, overwritten at most every second).
struct Progress {
  std::string migration_id;
  Phase phase = Phase::sync;
  State state = State::running;
  std::uint64_t current = 0;
  std::uint64_t total = 0;
  bool total_approximate = false;
  double bytes_per_second = 0;
  std::int64_t eta_ms = -1;
  std::string message;
  std::string updated;
};

// Lease: one operation per migration at a time.
struct Lease {
  std::string migration_id;
  int pid = 0;
  std::string host;
  std::string operation; // sync, switch, ...
  std::string heartbeat; // ISO 8601
  // Only in a holder that try_acquire_lease refused: the holder is on another host and its
  // heartbeat is stale, so it could be taken over, but the caller did not ask to (take_over).
  bool stale_remote = false;
};

// A request, made by another command, that the commands already running on a migration stop:
// `zmigrate abort` and `zmigrate pause` from a second shell (StateStore::request_stop). A
// command that started before `requested` stops (at once when it is running, at its next phase
// when it is between two); a command started later removes the request and goes on.
struct StopRequest {
  std::string migration_id;
  std::string kind;      // "abort" or "pause"
  int pid = 0;           // the requesting command (0: this process)
  std::string host;      // its host ("": this host)
  std::string requested; // ISO 8601, stamped by the store when empty
};

// JSON views for `--json` output, with the field names of Triton's raw records where a field maps.
// Like Triton, fields that are not set yet (empty error or timestamps) are left out.
//   PhaseRun: {type:"progress", id, phase, state, message, error?, started_timestamp,
//              finished_timestamp?, current_progress, total_progress, duration_ms?, details?}
//              (duration_ms = finished - started, once finished; details only when non-empty)
//   Migration: {id, vm_uuid, source_server_uuid, target_server_uuid?, phase, state, automatic,
//              archived, num_sync_phases, created_timestamp, finished_timestamp?, error?,
//              progress_history:[PhaseRun...]}; `data` is internal and not shown.
//   Step:     {id, migration_id, phase_run_id, name, status, started_timestamp,
//              finished_timestamp?, duration_ms?, details}
//   Artefact: {id, migration_id, kind, host, name, details, created_timestamp, removed_timestamp?}
//   Progress: a Triton watch event: {type:"progress", migration_id, phase, state,
//              current_progress, total_progress, total_approximate, transfer_bytes_second,
//              eta_ms? (when >= 0), message?, updated_timestamp}
void to_json(nlohmann::json& j, const PhaseRun& r);
void to_json(nlohmann::json& j, const Migration& m);
void to_json(nlohmann::json& j, const Step& s);
void to_json(nlohmann::json& j, const Artefact& a);
void to_json(nlohmann::json& j, const Progress& p);

} // namespace zmigrate::state
