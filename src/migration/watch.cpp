// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/watch.hpp>
#include <zmigrate/util/error.hpp>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace zmigrate::migration {

namespace {

bool is_running(const state::Migration& m) {
  return m.state == state::State::running ||
         (!m.history.empty() && m.history.back().state == state::State::running);
}

WatchEvent run_event(const state::PhaseRun& r, WatchEvent::Kind kind) {
  WatchEvent e;
  e.type = WatchEvent::Type::progress;
  e.kind = kind;
  e.phase = state::to_string(r.phase);
  e.state = state::to_string(r.state);
  e.message = r.message;
  e.current_progress = r.current_progress;
  e.total_progress = std::max(r.total_progress, r.current_progress);
  e.started_timestamp = r.started;
  e.finished_timestamp = r.finished;
  e.details = r.details.is_object() ? r.details : nlohmann::json::object();
  return e;
}

WatchEvent end_event(const std::string& phase, state::State st, const std::string& message) {
  WatchEvent e;
  e.type = WatchEvent::Type::end;
  e.kind = WatchEvent::Kind::end;
  e.phase = phase;
  e.state = state::to_string(st);
  e.message = message;
  return e;
}

// The phase the end event names: the last phase run's (what the operator last asked for), else
// the record's.
std::string last_phase(const state::Migration& m) {
  return state::to_string(m.history.empty() ? m.phase : m.history.back().phase);
}

void finish(WatchState& st, std::vector<WatchEvent>& out, WatchEvent end) {
  st.exit_code = end.state == "failed" ? 1 : 0;
  st.ended = true;
  out.push_back(std::move(end));
}

// A paused automatic migration whose last phase just ended is most likely a `migrate` run about
// to take the next phase; the watch waits a moment for it instead of ending.
bool may_continue(const state::Migration& m) {
  return m.automatic && m.state == state::State::paused;
}

bool finished_recently(const state::Migration& m, const Clock& clock) {
  if (m.history.empty() || m.history.back().finished.empty()) {
    return false;
  }
  try {
    return clock.wall_now() - parse_iso8601(m.history.back().finished) < k_watch_grace;
  } catch (const Error&) {
    return false;
  }
}

} // namespace

WatchState start_watch(state::StateStore& store, const std::string& vm_uuid) {
  std::optional<state::Migration> m = store.find_active_for_vm(vm_uuid);
  if (!m) {
    m = store.find_latest_for_vm(vm_uuid);
  }
  if (!m) {
    throw NotFoundError(fmt::format("instance {}", vm_uuid),
                        "it has no migration to watch; start one with \"zmigrate begin\" or "
                        "\"zmigrate migrate\", and see \"zmigrate list --all\"");
  }
  WatchState st;
  st.migration_id = m->id;
  st.vm_uuid = m->vm_uuid;
  return st;
}

namespace {

// Phase runs: the running one when the watch begins, then each new one and each end.
void run_events(const state::Migration& m, bool first, WatchState& st,
                std::vector<WatchEvent>& out) {
  for (std::size_t i = 0; i < m.history.size(); ++i) {
    const state::PhaseRun& r = m.history[i];
    const bool last = i + 1 == m.history.size();
    auto it = st.runs.find(r.id);
    if (first) {
      st.runs[r.id] = r.state;
      if (last && r.state == state::State::running) {
        out.push_back(run_event(r, WatchEvent::Kind::phase_run));
      }
      continue;
    }
    if (it == st.runs.end()) {
      state::PhaseRun shown = r;
      shown.state = state::State::running;
      shown.finished.clear();
      out.push_back(run_event(shown, WatchEvent::Kind::phase_run));
      st.runs[r.id] = state::State::running;
      it = st.runs.find(r.id);
    }
    if (it->second == state::State::running && r.state != state::State::running) {
      out.push_back(run_event(r, WatchEvent::Kind::phase_done));
      it->second = r.state;
    }
  }
}

// Byte progress of the running phase run. The row is one per migration, so a row left by an
// earlier run (older than this run's start, or of another phase) is not this run's.
void progress_event(const state::Migration& m, const std::optional<state::Progress>& progress,
                    WatchState& st, std::vector<WatchEvent>& out) {
  const state::PhaseRun* current =
      !m.history.empty() && m.history.back().state == state::State::running ? &m.history.back()
                                                                            : nullptr;
  if (current == nullptr || !progress || progress->state != state::State::running ||
      progress->phase != current->phase || progress->updated < current->started ||
      progress->updated == st.progress_updated) {
    return;
  }
  st.progress_updated = progress->updated;
  if (st.bytes_run != current->id) {
    st.bytes_run = current->id;
    st.bytes_current = 0;
  }
  WatchEvent e;
  e.type = WatchEvent::Type::progress;
  e.phase = state::to_string(current->phase);
  e.state = "running";
  e.message = progress->message;
  if (!progress->message.empty()) {
    // A milestone of a phase without bytes to count ("stopping the instance").
    e.kind = WatchEvent::Kind::milestone;
    e.current_progress = progress->current;
    e.total_progress = std::max(progress->total, progress->current);
    out.push_back(std::move(e));
  } else if (progress->total > 0) {
    e.kind = WatchEvent::Kind::bytes;
    const std::uint64_t cur = std::max(progress->current, st.bytes_current);
    st.bytes_current = cur;
    e.current_progress = cur;
    e.total_progress = std::max(progress->total, cur);
    e.total_approximate = progress->total_approximate;
    e.transfer_bytes_second =
        progress->bytes_per_second > 0 ? std::round(progress->bytes_per_second) : 0.0;
    std::int64_t eta = progress->eta_ms;
    if (eta < 0 && progress->bytes_per_second > 0) {
      eta = static_cast<std::int64_t>(static_cast<double>(*e.total_progress - cur) /
                                      progress->bytes_per_second * 1000.0);
    }
    e.eta_ms = std::max<std::int64_t>(eta, 0);
    out.push_back(std::move(e));
  }
}

// The step messages the running process prints ("stopping the instance"), from the journal, in
// order, with the same words. At the first look those of the running phase run are shown (a
// watch started mid-switch catches up with the switch), not those of earlier runs.
void step_events(state::StateStore& store, const state::Migration& m, bool first, WatchState& st,
                 std::vector<WatchEvent>& out) {
  const state::PhaseRun* current =
      !m.history.empty() && m.history.back().state == state::State::running ? &m.history.back()
                                                                            : nullptr;
  for (const state::Step& s : store.steps(m.id, st.last_step)) {
    st.last_step = std::max(st.last_step, s.id);
    const auto msg = s.details.is_object() ? s.details.find("message") : s.details.end();
    if (!s.details.is_object() || msg == s.details.end() || !msg->is_string() ||
        msg->get<std::string>().empty()) {
      continue;
    }
    if (first && !(current != nullptr && s.phase_run_id == current->id)) {
      continue;
    }
    std::string phase = current != nullptr ? state::to_string(current->phase) : "";
    for (const state::PhaseRun& r : m.history) {
      if (r.id == s.phase_run_id) {
        phase = state::to_string(r.phase);
      }
    }
    WatchEvent e;
    e.type = WatchEvent::Type::progress;
    e.kind = WatchEvent::Kind::milestone;
    e.phase = phase;
    e.state = "running";
    e.message = msg->get<std::string>();
    out.push_back(std::move(e));
  }
}

// The end: nothing running and no live process holding the lease.
void end_check(const state::Migration& m, const std::optional<LeaseStatus>& holder,
               const Clock& clock, bool first, WatchState& st, std::vector<WatchEvent>& out) {
  const auto now = clock.now();
  const bool running = is_running(m);
  if (holder) {
    st.saw_activity = true;
    if (holder->alive) {
      st.quiet_since.reset();
      return;
    }
    if (running) {
      const std::string op = holder->operation.empty() ? last_phase(m) : holder->operation;
      finish(st, out,
             end_event(last_phase(m), state::State::failed,
                       fmt::format("the {} process (pid {}) died; rerun \"zmigrate {} {}\"", op,
                                   holder->pid, op, m.vm_uuid)));
      return;
    }
    finish(st, out, end_event(last_phase(m), m.state, m.error));
    return;
  }
  if (running) {
    // No lease yet (begin records the migration a moment before it takes the lease) or none any
    // more without the phase having ended: give the writer a moment before calling it dead.
    st.saw_activity = true;
    if (!st.quiet_since) {
      st.quiet_since = now;
      return;
    }
    if (now - *st.quiet_since < k_watch_orphan_grace) {
      return;
    }
    const std::string op = last_phase(m);
    finish(
        st, out,
        end_event(op, state::State::failed,
                  fmt::format("the {} process died; rerun \"zmigrate {} {}\"", op, op, m.vm_uuid)));
    return;
  }
  if (first && may_continue(m) && finished_recently(m, clock)) {
    st.saw_activity = true;
  }
  if (st.saw_activity && may_continue(m)) {
    if (!st.quiet_since) {
      st.quiet_since = now;
      return;
    }
    if (now - *st.quiet_since < k_watch_grace) {
      return;
    }
  }
  finish(st, out, end_event(last_phase(m), m.state, m.error));
}

} // namespace

std::vector<WatchEvent> watch_step(state::StateStore& store, const LeaseProbe& lease,
                                   const Clock& clock, WatchState& st) {
  std::vector<WatchEvent> out;
  if (st.ended) {
    return out;
  }
  const std::optional<state::Migration> found = store.find_migration(st.migration_id);
  if (!found) {
    throw NotFoundError(fmt::format("migration {} of {}", st.migration_id, st.vm_uuid),
                        "its record vanished from the state store while watching");
  }
  const std::optional<LeaseStatus> holder = lease ? lease(st.migration_id) : std::nullopt;
  const std::optional<state::Progress> progress = store.get_progress(st.migration_id);
  const bool first = !st.started;
  st.started = true;
  run_events(*found, first, st, out);
  step_events(store, *found, first, st, out);
  progress_event(*found, progress, st, out);
  end_check(*found, holder, clock, first, st, out);
  return out;
}

nlohmann::json to_json(const WatchEvent& e) {
  nlohmann::json j = nlohmann::json::object();
  j["type"] = e.type == WatchEvent::Type::end ? "end" : "progress";
  j["phase"] = e.phase;
  j["state"] = e.state;
  if (e.current_progress) {
    j["current_progress"] = *e.current_progress;
  }
  if (e.total_progress) {
    j["total_progress"] = *e.total_progress;
  }
  if (e.kind == WatchEvent::Kind::bytes) {
    j["total_approximate"] = e.total_approximate;
  }
  if (e.eta_ms) {
    j["eta_ms"] = *e.eta_ms;
  }
  if (e.transfer_bytes_second) {
    j["transfer_bytes_second"] = static_cast<std::uint64_t>(*e.transfer_bytes_second);
  }
  if (!e.message.empty()) {
    j["message"] = e.message;
  }
  if (!e.started_timestamp.empty()) {
    j["started_timestamp"] = e.started_timestamp;
  }
  if (!e.finished_timestamp.empty()) {
    j["finished_timestamp"] = e.finished_timestamp;
    try {
      j["duration_ms"] =
          std::chrono::duration_cast<std::chrono::milliseconds>(
              parse_iso8601(e.finished_timestamp) - parse_iso8601(e.started_timestamp))
              .count();
    } catch (const Error&) {
      // A malformed timestamp only loses the derived field.
    }
  }
  return j;
}

std::string end_line(const WatchEvent& end) {
  if (end.state == "failed") {
    return fmt::format("Failure: {}", end.message.empty() ? end.phase + " failed" : end.message);
  }
  if (end.state == "successful") {
    return fmt::format("OK - {} was successful", end.phase);
  }
  if (end.state == "paused") {
    return end.phase == "begin" ? "OK - ready for migration sync"
                                : "OK - ready for migration sync or migration switch";
  }
  return fmt::format("Migration {}{}{}", end.state, end.message.empty() ? "" : " ", end.message);
}

} // namespace zmigrate::migration
