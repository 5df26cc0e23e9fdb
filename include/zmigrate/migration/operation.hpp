// SPDX-License-Identifier: MPL-2.0
#pragma once
// One zmigrate command working on one migration: holds the lease (one operation per migration
// at a time), opens a phase run (Triton's progress_history entry) and journals every step
// before and after it runs, so a rerun after a crash knows exactly what happened.
//
// While it exists, a heartbeat thread refreshes the lease every Settings::lease_heartbeat_ms
// (also during a long silent remote command), so no other command can judge it stale. The
// store must be usable from that thread (SqliteStateStore serialises its calls).

#include <zmigrate/migration/context.hpp>
#include <zmigrate/migration/transitions.hpp>
#include <zmigrate/state/records.hpp>
#include <zmigrate/util/error.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace zmigrate::migration {

class Operation {
public:
  // Start `action` on the active migration of `vm_uuid`, the right way round: read the active
  // migration, take its lease, re-read the record by id and check the transition on that fresh
  // record (another process may have changed it between the first read and the lease). Throws
  // NotFoundError when there is no active migration, PreconditionError when the lease is busy
  // (see below) or `action` is not allowed on the fresh record; the lease is released then.
  Operation(Context& ctx, const std::string& vm_uuid, Action action, std::string operation);
  // Take the lease of `migration.id` for `operation` ("sync", "switch", ...) on a record the
  // caller has just made (begin). Throws PreconditionError naming the holder (pid, host, since)
  // when another live process has it, or when a stale holder on another head node has it and
  // Settings::take_over_remote_lease (--take-over) is not set.
  Operation(Context& ctx, state::Migration migration, std::string operation);
  ~Operation(); // releases the lease; never throws
  Operation(const Operation&) = delete;
  Operation& operator=(const Operation&) = delete;

  state::Migration& record() { return m_record; }
  const std::string& id() const { return m_record.id; }
  // Persist the record's scalar fields and data.
  void save();

  // Open a phase run: record phase/state running, history entry with `message`.
  void start_phase(state::Phase phase, const std::string& message);
  // Close the phase run with `state` (and `error`), update the record, persist. `details` is
  // merged into the run's details (bytes, rates, downtime breakdown).
  void finish_phase(state::State state, const std::string& error = {},
                    const nlohmann::json& details = nlohmann::json::object());
  state::PhaseRun& phase_run() { return m_run; }

  // Run `fn` as journal step `name`: a "running" row first, then "ok" with `details` (filled by
  // fn) or "failed" with the error. Refreshes the lease heartbeat (throws PreconditionError
  // before running anything when the lease was lost). A test-only fault hook
  // (Settings::fault_step) kills the process just before the named step runs.
  // `message` (e.g. "stopping the instance"), when given, is journaled with the step, so that
  // `zmigrate watch` in another process shows it too, and then told to the reporter.
  void step(const std::string& name, const std::function<void(nlohmann::json& details)>& fn,
            const std::string& message = "");
  // Run `fn` as compensation step `name` (an undo after a failure): journaled like step(), but
  // not refused after an interrupt (the undo is what the interrupt asked for; remote commands
  // started after the interrupt run to their end). Still refused when the lease was lost.
  void compensate(const std::string& name, const std::function<void(nlohmann::json& details)>& fn);
  // True when step `name` completed ok in an earlier run of the current phase (resume).
  bool step_done(const std::string& name);

  // The stop request (zmigrate abort/pause from another shell) that stopped this command, if one
  // did: noted by the heartbeat thread, which looks for one twice a second while a stoppable
  // operation (operation_stoppable) runs, and by the constructor, which refuses to start for a
  // request made after this command started (Settings::command_started).
  std::optional<state::StopRequest> stopped_by() const;
  // The error a command stopped by `r` ends with (exit 130), naming the request and what next.
  Error stop_error(const state::StopRequest& r) const;

  // Live progress for `watch` (throttled by the caller).
  void progress(std::uint64_t current, std::uint64_t total, bool approximate, double rate,
                const std::string& message = {});

private:
  void acquire();
  void release_quietly() noexcept; // a failure to release is logged (the lease goes stale)
  void start_heartbeat();
  void stop_heartbeat() noexcept;
  void throw_if_lease_lost();
  // Whether `r` stops this command: made by another command, after this one started.
  bool stops_us(const state::StopRequest& r) const;
  // In the constructor, under the lease: refuse (releasing nothing; the caller does) for a
  // request that stops us; drop one that an older command left.
  void check_stop_request();
  void poll_stop_request() noexcept; // heartbeat thread
  void journal(const std::string& name, const std::function<void(nlohmann::json& details)>& fn,
               const std::string& message = "");

  Context& m_ctx;
  state::Migration m_record;
  std::string m_operation;
  state::PhaseRun m_run;
  int m_pid;
  std::string m_lease_key; // m_record.id when the lease was taken (the thread reads only this)

  std::thread m_beater;
  std::mutex m_beat_mutex;
  std::condition_variable m_beat_cv;
  bool m_stop = false; // guarded by m_beat_mutex
  std::string m_lost;  // guarded by m_beat_mutex: why the lease was lost
  std::atomic<bool> m_lost_flag{false};
  std::chrono::system_clock::time_point m_started; // the command's start (Settings)
  mutable std::mutex m_request_mutex;
  std::optional<state::StopRequest> m_request; // guarded by m_request_mutex
};

// Whether a command running `operation` may be stopped by abort or pause from another shell:
// sync, begin and migrate's own short lease may; switch, rollback, abort and finalize may not
// (they are not cut half-way; the requester refuses while one of them runs).
bool operation_stoppable(const std::string& operation);
// The operations that are not (StateStore::request_stop's `unstoppable`).
const std::vector<std::string>& unstoppable_operations();

// Kill this process with SIGKILL if `step` is the configured fault step (test hook).
void maybe_inject_fault(const Settings& settings, const std::string& step);

} // namespace zmigrate::migration
