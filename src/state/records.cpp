// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/state/records.hpp>
#include <zmigrate/util/clock.hpp>
#include <zmigrate/util/error.hpp>

#include <array>
#include <utility>

#include <fmt/format.h>

namespace zmigrate::state {

namespace {

constexpr std::array<std::pair<Phase, const char*>, 6> k_phase_names{{
    {Phase::begin, "begin"},
    {Phase::sync, "sync"},
    {Phase::switch_, "switch"},
    {Phase::abort, "abort"},
    {Phase::rollback, "rollback"},
    {Phase::finalize, "finalize"},
}};

constexpr std::array<std::pair<State, const char*>, 4> k_state_names{{
    {State::running, "running"},
    {State::paused, "paused"},
    {State::failed, "failed"},
    {State::successful, "successful"},
}};

// Triton computes duration_ms on read from the two timestamps; a malformed or missing timestamp
// simply leaves the field out rather than failing the whole rendering.
void put_duration(nlohmann::json& j, const std::string& started, const std::string& finished) {
  if (started.empty() || finished.empty()) {
    return;
  }
  try {
    const auto d = parse_iso8601(finished) - parse_iso8601(started);
    j["duration_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  } catch (const Error&) {
  }
}

// Triton leaves unset fields out of its records instead of writing empty strings.
void put_if_set(nlohmann::json& j, const char* key, const std::string& value) {
  if (!value.empty()) {
    j[key] = value;
  }
}

} // namespace

std::string to_string(Phase p) {
  for (const auto& [phase, name] : k_phase_names) {
    if (phase == p) {
      return name;
    }
  }
  return fmt::format("phase#{}", static_cast<int>(p));
}

std::string to_string(State s) {
  for (const auto& [state, name] : k_state_names) {
    if (state == s) {
      return name;
    }
  }
  return fmt::format("state#{}", static_cast<int>(s));
}

Phase phase_from_string(const std::string& s) {
  for (const auto& [phase, name] : k_phase_names) {
    if (s == name) {
      return phase;
    }
  }
  throw Error(ExitCode::state, fmt::format("migration phase '{}'", s),
              "unknown phase (expected begin, sync, switch, abort, rollback or finalize); the "
              "state database may have been written by a newer zmigrate");
}

State state_from_string(const std::string& s) {
  for (const auto& [state, name] : k_state_names) {
    if (s == name) {
      return state;
    }
  }
  throw Error(ExitCode::state, fmt::format("migration state '{}'", s),
              "unknown state (expected running, paused, failed or successful); the state "
              "database may have been written by a newer zmigrate");
}

void to_json(nlohmann::json& j, const PhaseRun& r) {
  j = nlohmann::json::object();
  j["type"] = "progress";
  j["id"] = r.id;
  j["phase"] = to_string(r.phase);
  j["state"] = to_string(r.state);
  j["message"] = r.message;
  put_if_set(j, "error", r.error);
  put_if_set(j, "started_timestamp", r.started);
  put_if_set(j, "finished_timestamp", r.finished);
  j["current_progress"] = r.current_progress;
  j["total_progress"] = r.total_progress;
  put_duration(j, r.started, r.finished);
  if (!r.details.is_null() && !r.details.empty()) {
    j["details"] = r.details;
  }
}

void to_json(nlohmann::json& j, const Migration& m) {
  j = nlohmann::json::object();
  j["id"] = m.id;
  j["vm_uuid"] = m.vm_uuid;
  if (m.kind != "migration") {
    j["kind"] = m.kind;
  }
  j["source_server_uuid"] = m.source_server_uuid;
  put_if_set(j, "target_server_uuid", m.target_server_uuid);
  j["phase"] = to_string(m.phase);
  j["state"] = to_string(m.state);
  j["automatic"] = m.automatic;
  j["archived"] = m.archived;
  j["num_sync_phases"] = m.num_sync_phases;
  put_if_set(j, "created_timestamp", m.created);
  put_if_set(j, "finished_timestamp", m.finished);
  put_if_set(j, "error", m.error);
  nlohmann::json history = nlohmann::json::array();
  for (const PhaseRun& r : m.history) {
    history.push_back(r);
  }
  j["progress_history"] = std::move(history);
}

void to_json(nlohmann::json& j, const Step& s) {
  j = nlohmann::json::object();
  j["id"] = s.id;
  j["migration_id"] = s.migration_id;
  j["phase_run_id"] = s.phase_run_id;
  j["name"] = s.name;
  j["status"] = s.status;
  put_if_set(j, "started_timestamp", s.started);
  put_if_set(j, "finished_timestamp", s.finished);
  put_duration(j, s.started, s.finished);
  j["details"] = s.details.is_null() ? nlohmann::json::object() : s.details;
}

void to_json(nlohmann::json& j, const Artefact& a) {
  j = nlohmann::json::object();
  j["id"] = a.id;
  j["migration_id"] = a.migration_id;
  j["kind"] = a.kind;
  j["host"] = a.host;
  j["name"] = a.name;
  j["details"] = a.details.is_null() ? nlohmann::json::object() : a.details;
  put_if_set(j, "created_timestamp", a.created);
  put_if_set(j, "removed_timestamp", a.removed);
}

void to_json(nlohmann::json& j, const Progress& p) {
  // Shaped like a Triton watch event (triton.md §2.2) so `watch --json` reads the same.
  j = nlohmann::json::object();
  j["type"] = "progress";
  j["migration_id"] = p.migration_id;
  j["phase"] = to_string(p.phase);
  j["state"] = to_string(p.state);
  j["current_progress"] = p.current;
  j["total_progress"] = p.total;
  j["total_approximate"] = p.total_approximate;
  j["transfer_bytes_second"] = p.bytes_per_second;
  if (p.eta_ms >= 0) {
    j["eta_ms"] = p.eta_ms;
  }
  put_if_set(j, "message", p.message);
  put_if_set(j, "updated_timestamp", p.updated);
}

} // namespace zmigrate::state
