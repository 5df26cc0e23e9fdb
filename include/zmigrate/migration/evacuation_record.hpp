// SPDX-License-Identifier: MPL-2.0
#pragma once
// The record of an evacuation (or a restore) in the state store, so that `get --evacuation CN`
// and `watch --evacuation CN` can show it from another shell while it runs, and a rerun after a
// crash or Ctrl-C goes on with the same record.
//
// It is a state-store record of kind "evacuation" (never an instance's migration: archived from
// the start, listed only by kind), source_server_uuid = the node, and in data.evacuation:
//   server, hostname, restore (bool), options {parallel, per_node, bwlimit, switch, finalize},
//   pid, host (the evacuate process), updated (ISO 8601, at every write), interrupted (bool),
//   instances: [{vm_uuid, alias, brand, state, target, outcome, error}] in the order taken.
// Its state is running while the evacuation runs, then successful (every instance moved or
// skipped before anything changed), failed (one failed) or paused (interrupted: rerun to go on).
// The per-instance progress is not copied here: the view reads it from each instance's own
// migration record and progress row (pure: view_evacuation).

#include <zmigrate/migration/context.hpp>
#include <zmigrate/migration/evacuate.hpp>
#include <zmigrate/state/records.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace zmigrate::migration {

inline constexpr const char* k_evacuation_kind = "evacuation";

// Keeps the record of one evacuate or restore run up to date. A rerun for the same node and
// direction takes up the newest record that did not end successful (its instances that are not
// in this run keep their outcome, refreshed from their migration records); otherwise a new one
// is made. Writing it never stops the evacuation: a state-store error is logged, and the
// migrations' own records stay the authority.
class EvacuationLog {
public:
  EvacuationLog(Context& ctx, const inventory::Server& server, bool restore,
                const nlohmann::json& options, const std::vector<EvacuationItem>& items);
  // Writes the instances' outcomes as they are now.
  void update(const std::vector<EvacuationItem>& items);
  // The end: successful, failed or paused (interrupted).
  void finish(const std::vector<EvacuationItem>& items, bool interrupted);
  const std::string& id() const { return m_record.id; }

private:
  void write(const std::vector<EvacuationItem>& items);
  Context& m_ctx;
  state::Migration m_record;
  nlohmann::json m_carried = nlohmann::json::array(); // instances of the record taken up
  bool m_ok = false;                                  // the record exists in the store
};

// The newest evacuation (restore = false) or restore record of `server_uuid`, if any.
std::optional<state::Migration> find_evacuation(state::StateStore& store,
                                                const std::string& server_uuid, bool restore);

// The outcome an instance's migration record shows for an evacuation (pure): finalized, migrated
// (switched), ready (synced, waiting for its switch), failed, or "" when it shows none of these.
std::string outcome_of(const state::Migration& m);

struct EvacuationRow {
  std::string vm_uuid;
  std::string alias;
  std::string target;
  std::string outcome;       // as the evacuation recorded it (queued, running, finalized, ...)
  std::string phase;         // of the instance's migration in this evacuation ("" = none yet)
  std::string state;         // likewise
  std::uint64_t sent = 0;    // bytes its finished syncs and final delta moved (moved_totals)
  std::uint64_t current = 0; // the running transfer: bytes sent so far
  std::uint64_t total = 0;   // and its size (0 = no transfer running)
  double rate = 0;           // bytes per second of the running transfer
  std::optional<std::int64_t> eta_ms; // of the running transfer
  std::string error;
};

struct EvacuationView {
  std::string id;
  std::string server;
  std::string hostname;
  bool restore = false;
  std::string state; // running, successful, failed, paused (interrupted)
  std::string started;
  std::string finished;
  int pid = 0;
  std::string host;
  std::string updated;
  int total = 0;
  int done = 0; // moved (migrated, finalized) or ready to switch
  int running = 0;
  int queued = 0;
  int failed = 0;         // failed or interrupted
  int skipped = 0;        // refused before anything changed, or excluded
  std::uint64_t sent = 0; // bytes moved so far, running transfers included
  // What is left to send: the running transfers' remainders, plus for each instance not begun
  // the mean size of the finished ones (approximate: left_approximate), when one finished.
  std::uint64_t left = 0;
  bool left_approximate = false;
  bool left_known = true; // false: instances wait and none finished to guess their size from
  double rate = 0;        // all running transfers together
  std::optional<std::int64_t> eta_ms; // left / rate, when both are known
  std::vector<EvacuationRow> rows;
};

// The evacuation as it stands (pure): `record` with each instance's migration in this
// evacuation (`migrations` by vm_uuid: its newest, ignored when created before the record) and
// the live progress rows (`progress` by migration id).
EvacuationView view_evacuation(const state::Migration& record,
                               const std::map<std::string, state::Migration>& migrations,
                               const std::map<std::string, state::Progress>& progress);

void to_json(nlohmann::json& j, const EvacuationView& v);

} // namespace zmigrate::migration
