// SPDX-License-Identifier: MPL-2.0
#pragma once
// One zmigrate command working on one migration: holds the lease (one operation per migration
// at a time), opens a phase run (Triton's progress_history entry) and journals every step
// before and after it runs, so a rerun after a crash knows exactly what happened.

#include <zmigrate/migration/context.hpp>
#include <zmigrate/state/records.hpp>

#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace zmigrate::migration {

class Operation {
public:
  // Take the lease of `migration.id` for `operation` ("sync", "switch", ...). Throws
  // PreconditionError naming the holder (pid, host, since) when another live process has it.
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
  // fn) or "failed" with the error. Refreshes the lease heartbeat. A test-only fault hook
  // (Settings::fault_step) kills the process just before the named step runs.
  void step(const std::string& name, const std::function<void(nlohmann::json& details)>& fn);
  // True when step `name` completed ok in an earlier run of the current phase (resume).
  bool step_done(const std::string& name);

  // Live progress for `watch` (throttled by the caller).
  void progress(std::uint64_t current, std::uint64_t total, bool approximate, double rate,
                const std::string& message = {});

private:
  Context& m_ctx;
  state::Migration m_record;
  std::string m_operation;
  state::PhaseRun m_run;
  int m_pid;
};

// Kill this process with SIGKILL if `step` is the configured fault step (test hook).
void maybe_inject_fault(const Settings& settings, const std::string& step);

} // namespace zmigrate::migration
