// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/engine.hpp>
#include <zmigrate/migration/operation.hpp>
#include <zmigrate/util/clock.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <unistd.h>

#include <fmt/format.h>

namespace zmigrate::migration {

namespace {
constexpr int k_lease_stale_s = 300;

std::chrono::system_clock::time_point to_ms(std::chrono::system_clock::time_point t) {
  return std::chrono::time_point_cast<std::chrono::milliseconds>(t);
}
} // namespace

const std::vector<std::string>& unstoppable_operations() {
  static const std::vector<std::string> ops{"switch", "rollback", "abort", "finalize"};
  return ops;
}

bool operation_stoppable(const std::string& operation) {
  const auto& ops = unstoppable_operations();
  return std::find(ops.begin(), ops.end(), operation) == ops.end();
}

void maybe_inject_fault(const Settings& settings, const std::string& step) {
  if (!settings.fault_step.empty() && settings.fault_step == step) {
    ::kill(::getpid(), SIGKILL);
  }
}

void Operation::release_quietly() noexcept {
  try {
    m_ctx.store.release_lease(m_lease_key, m_pid);
  } catch (const std::exception& e) {
    m_ctx.log.warn("could not release lease", {{"error", e.what()}});
  }
}

Operation::Operation(Context& ctx, state::Migration migration, std::string operation)
    : m_ctx(ctx), m_record(std::move(migration)), m_operation(std::move(operation)),
      m_pid(static_cast<int>(::getpid())) {
  acquire();
  try {
    check_stop_request();
  } catch (...) {
    release_quietly();
    throw;
  }
  start_heartbeat();
}

Operation::Operation(Context& ctx, const std::string& vm_uuid, Action action, std::string operation)
    : m_ctx(ctx), m_record(load_active(ctx, vm_uuid)), m_operation(std::move(operation)),
      m_pid(static_cast<int>(::getpid())) {
  acquire();
  try {
    // What was read before the lease may be out of date: another command may have finished a
    // phase (or the whole migration) in between. Only the record read under the lease counts.
    std::optional<state::Migration> fresh = m_ctx.store.find_migration(m_record.id);
    if (fresh && fresh->archived) {
      fresh.reset();
    }
    check_stop_request();
    check_action(action, fresh);
    if (!fresh) { // begin on a migration that ended meanwhile: not this constructor's job
      throw NotFoundError(fmt::format("migration {} of {}", m_record.id, m_record.vm_uuid),
                          "it ended while this command waited for its lease; see \"zmigrate "
                          "get\"");
    }
    m_record = std::move(*fresh);
  } catch (...) {
    release_quietly();
    throw;
  }
  start_heartbeat();
}

void Operation::acquire() {
  const auto configured = m_ctx.settings.command_started;
  m_started = to_ms(configured == std::chrono::system_clock::time_point{} ? m_ctx.clock.wall_now()
                                                                          : configured);
  if (m_ctx.on_migration) {
    m_ctx.on_migration(m_record.id, m_record.vm_uuid);
  }
  state::Lease lease;
  lease.migration_id = m_record.id;
  lease.pid = m_pid;
  lease.host = m_ctx.settings.hostname;
  lease.operation = m_operation;
  lease.heartbeat = iso8601(m_ctx.clock.wall_now());
  if (auto holder = m_ctx.store.try_acquire_lease(lease, k_lease_stale_s,
                                                  m_ctx.settings.take_over_remote_lease)) {
    const std::string what = fmt::format("migration {} of {}", m_record.id, m_record.vm_uuid);
    if (holder->stale_remote) {
      throw PreconditionError(
          what, fmt::format("held by '{}' (pid {} on {}), whose last heartbeat {} is more than "
                            "{} s old; that head node may still be running it, so zmigrate "
                            "will not take it by itself. If that process is really gone (check "
                            "on {}), rerun with --take-over",
                            holder->operation, holder->pid, holder->host, holder->heartbeat,
                            k_lease_stale_s, holder->host));
    }
    throw PreconditionError(
        what,
        fmt::format("busy: '{}' is running it (pid {} on {}, last heartbeat {}); wait for it, or "
                    "follow it with \"zmigrate watch {}\"",
                    holder->operation, holder->pid, holder->host, holder->heartbeat,
                    m_record.vm_uuid));
  }
  m_lease_key = m_record.id;
  m_ctx.log.info("lease taken", {{"operation", m_operation}, {"pid", m_pid}});
}

bool Operation::stops_us(const state::StopRequest& r) const {
  if (r.pid == m_pid && (r.host == m_ctx.settings.hostname || m_ctx.settings.hostname.empty())) {
    return false; // our own request (abort waits for the holder, then runs under the lease)
  }
  try {
    return parse_iso8601(r.requested) >= m_started;
  } catch (const Error&) {
    return true; // an unreadable stamp: stopping is the safe reading
  }
}

void Operation::check_stop_request() {
  const std::optional<state::StopRequest> r = m_ctx.store.find_stop_request(m_record.id);
  if (!r) {
    return;
  }
  if (stops_us(*r)) {
    {
      const std::lock_guard lock(m_request_mutex);
      m_request = r;
    }
    throw stop_error(*r);
  }
  if (r->pid != m_pid) {
    // Made before this command started: the command it was for has stopped (or it would hold
    // the lease), and this newer one goes on.
    m_ctx.store.clear_stop_request(m_record.id, r->requested);
    m_ctx.log.info("older stop request dropped", {{"kind", r->kind}, {"requested", r->requested}});
  }
}

void Operation::poll_stop_request() noexcept {
  try {
    const std::optional<state::StopRequest> r = m_ctx.store.find_stop_request(m_lease_key);
    if (!r || !stops_us(*r)) {
      return;
    }
    {
      const std::lock_guard lock(m_request_mutex);
      if (m_request) {
        return;
      }
      m_request = r;
    }
    note_stop_request(stop_error(*r).reason());
    m_ctx.log.warn("stop requested by another command",
                   {{"kind", r->kind}, {"pid", r->pid}, {"host", r->host}});
  } catch (const std::exception&) {
    // A busy database: the next poll looks again.
  }
}

std::optional<state::StopRequest> Operation::stopped_by() const {
  const std::lock_guard lock(m_request_mutex);
  return m_request;
}

Error Operation::stop_error(const state::StopRequest& r) const {
  const std::string by =
      fmt::format("stopped by \"zmigrate {}\" from another shell (pid {} on {}, {})", r.kind, r.pid,
                  r.host, r.requested);
  const std::string next =
      r.kind == "pause"
          ? fmt::format("\"zmigrate sync {0}\" or \"zmigrate migrate {0}\" goes on from here",
                        m_record.vm_uuid)
          : fmt::format("that command goes on with the {}", r.kind);
  return Error(ExitCode::interrupted, fmt::format("{} of {}", m_operation, m_record.vm_uuid),
               by + "; " + next);
}

void Operation::start_heartbeat() {
  const auto interval = std::chrono::milliseconds(std::max(1, m_ctx.settings.lease_heartbeat_ms));
  const bool stoppable = operation_stoppable(m_operation);
  const auto poll =
      stoppable
          ? std::min(interval, std::chrono::milliseconds(std::max(1, m_ctx.settings.stop_poll_ms)))
          : interval;
  m_beater = std::thread([this, interval, poll, stoppable] {
    std::unique_lock lock(m_beat_mutex);
    auto next_beat = std::chrono::steady_clock::now() + interval;
    while (!m_beat_cv.wait_for(lock, poll, [this] { return m_stop; })) {
      lock.unlock();
      if (stoppable) {
        poll_stop_request();
      }
      std::string lost;
      if (std::chrono::steady_clock::now() >= next_beat) {
        next_beat = std::chrono::steady_clock::now() + interval;
        try {
          m_ctx.store.heartbeat(m_lease_key, m_pid);
        } catch (const PreconditionError& e) {
          lost = e.reason(); // taken over: stop beating; the main thread stops at its next step
        } catch (const std::exception&) {
          // Busy database or the like: the next beat tries again (the main thread beats too).
        }
      }
      lock.lock();
      if (!lost.empty()) {
        m_lost = std::move(lost);
        m_lost_flag = true;
        return;
      }
    }
  });
}

void Operation::stop_heartbeat() noexcept {
  if (!m_beater.joinable()) {
    return;
  }
  {
    const std::lock_guard lock(m_beat_mutex);
    m_stop = true;
  }
  m_beat_cv.notify_all();
  m_beater.join();
}

void Operation::throw_if_lease_lost() {
  if (!m_lost_flag) {
    return;
  }
  const std::lock_guard lock(m_beat_mutex);
  throw PreconditionError(fmt::format("migration {}", m_lease_key), m_lost);
}

Operation::~Operation() {
  stop_heartbeat();
  release_quietly();
}

void Operation::save() {
  m_ctx.store.update_migration(m_record);
}

void Operation::start_phase(state::Phase phase, const std::string& message) {
  m_record.phase = phase;
  m_record.state = state::State::running;
  m_record.error.clear();
  m_run = state::PhaseRun{};
  m_run.phase = phase;
  m_run.state = state::State::running;
  m_run.message = message;
  m_run.started = iso8601(m_ctx.clock.wall_now());
  m_run.current_progress = 1;
  m_run.total_progress = 100;
  m_run.id = m_ctx.store.add_phase_run(m_record.id, m_run);
  save();
  m_ctx.log.info("phase started", {{"phase", state::to_string(phase)}, {"message", message}});
}

void Operation::finish_phase(state::State st, const std::string& error,
                             const nlohmann::json& details) {
  m_run.state = st;
  m_run.error = error;
  m_run.finished = iso8601(m_ctx.clock.wall_now());
  if (st == state::State::successful || st == state::State::paused) {
    m_run.current_progress = m_run.total_progress;
  }
  for (auto it = details.begin(); it != details.end(); ++it) {
    m_run.details[it.key()] = it.value();
  }
  m_ctx.store.update_phase_run(m_record.id, m_run);
  m_record.state = st;
  m_record.error = error;
  save();
  state::Progress p;
  p.migration_id = m_record.id;
  p.phase = m_run.phase;
  p.state = st;
  p.current = m_run.current_progress;
  p.total = m_run.total_progress;
  p.message = error.empty() ? m_run.message : error;
  p.updated = m_run.finished;
  m_ctx.store.put_progress(p);
  m_ctx.log.info("phase finished", {{"phase", state::to_string(m_run.phase)},
                                    {"state", state::to_string(st)},
                                    {"error", error}});
}

void Operation::step(const std::string& name,
                     const std::function<void(nlohmann::json& details)>& fn,
                     const std::string& message) {
  throw_if_interrupted();
  journal(name, fn, message);
}

void Operation::compensate(const std::string& name,
                           const std::function<void(nlohmann::json& details)>& fn) {
  journal(name, fn);
}

void Operation::journal(const std::string& name,
                        const std::function<void(nlohmann::json& details)>& fn,
                        const std::string& message) {
  throw_if_lease_lost();
  maybe_inject_fault(m_ctx.settings, name);
  state::Step s;
  s.migration_id = m_record.id;
  s.phase_run_id = m_run.id;
  s.name = name;
  s.status = "running";
  s.started = iso8601(m_ctx.clock.wall_now());
  if (!message.empty()) {
    s.details["message"] = message;
  }
  const std::int64_t id = m_ctx.store.begin_step(s);
  m_ctx.store.heartbeat(m_record.id, m_pid);
  if (!message.empty()) {
    m_ctx.reporter.step(message); // after the journal: a watcher sees it as soon as this does
  }
  const auto start = m_ctx.clock.now();
  nlohmann::json details = s.details;
  try {
    if (m_ctx.settings.step_hook) {
      m_ctx.settings.step_hook(name, true);
    }
    fn(details);
    if (m_ctx.settings.step_hook) {
      m_ctx.settings.step_hook(name, false);
    }
  } catch (const std::exception& e) {
    details["error"] = e.what();
    details["duration_ms"] =
        std::chrono::duration_cast<std::chrono::milliseconds>(m_ctx.clock.now() - start).count();
    m_ctx.store.end_step(id, "failed", details);
    m_ctx.log.error("step failed", {{"step", name}, {"error", e.what()}});
    throw;
  }
  details["duration_ms"] =
      std::chrono::duration_cast<std::chrono::milliseconds>(m_ctx.clock.now() - start).count();
  m_ctx.store.end_step(id, "ok", details);
  m_ctx.log.info("step done", {{"step", name}, {"details", details}});
}

bool Operation::step_done(const std::string& name) {
  return m_ctx.store.completed_step(m_run.id, name).has_value();
}

void Operation::progress(std::uint64_t current, std::uint64_t total, bool approximate, double rate,
                         const std::string& message) {
  state::Progress p;
  p.migration_id = m_record.id;
  p.phase = m_run.phase;
  p.state = state::State::running;
  p.current = current;
  p.total = std::max(total, current);
  p.total_approximate = approximate;
  p.bytes_per_second = rate;
  if (rate > 0 && p.total > p.current) {
    p.eta_ms = static_cast<std::int64_t>(static_cast<double>(p.total - p.current) / rate * 1000.0);
  } else {
    p.eta_ms = 0;
  }
  p.message = message;
  p.updated = iso8601(m_ctx.clock.wall_now());
  m_ctx.store.put_progress(p);
  // Long sends must keep the lease fresh, or a second command could judge it stale.
  m_ctx.store.heartbeat(m_record.id, m_pid);
  m_ctx.reporter.progress(p);
  m_run.current_progress = p.current;
  m_run.total_progress = p.total;
}

} // namespace zmigrate::migration
