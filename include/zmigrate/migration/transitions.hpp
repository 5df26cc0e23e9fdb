// SPDX-License-Identifier: MPL-2.0
#pragma once
// The migration state machine: which command may run on a migration record, and what the record
// says after it ran. Pure functions over state::Migration; no I/O. Adapted from Triton's VMAPI
// (`migrate.js validate` and the workflow transitions of sdc-vmapi).
//
// Allowed actions ("interrupted" = state running, but no live process holds the lease, i.e. the
// zmigrate that ran it crashed or was killed; it is treated exactly like failed, and running the
// same phase again is a retry that resumes from the journal):
//
//   record (phase/state)             allowed
//   none or archived                 begin
//   begin/failed|interrupted         begin (retry), abort
//   begin/paused                     sync, abort            (switch once num_sync_phases >= 1)
//   begin/successful                 abort                  (not produced by zmigrate)
//   sync/paused                      sync, switch*, abort   (*num_sync_phases >= 1)
//   sync/failed|interrupted          sync (retry), switch*, abort
//   sync/successful                  abort                  (not produced by zmigrate)
//   switch/failed|interrupted        switch (retry), rollback
//   switch/successful                rollback, finalize
//   rollback/failed|interrupted      rollback (retry)
//   finalize/failed|interrupted      finalize (retry)
//   abort/failed|interrupted         abort (retry)
//   any, with a live lease holder    nothing (busy)
//
// Differences from Triton, on purpose: abort is refused once a switch has started (Triton accepts
// it on switch/failed and would delete a target that may already be primary): use rollback; and
// rollback is accepted on switch/failed so that an operator is never stuck with a switch that
// keeps failing after the source was hidden. sync after a failed begin is refused, as in Triton:
// the target is not fully set up; rerun begin (it resumes) or abort.

#include <zmigrate/state/records.hpp>

#include <optional>
#include <string>
#include <vector>

namespace zmigrate::migration {

// The commands that change a migration. `switch_` is spelled "switch" in text.
enum class Action { begin, sync, switch_, rollback, finalize, abort };

// "begin", "sync", "switch", "rollback", "finalize", "abort".
std::string to_string(Action a);

// The phase a run of `a` records (begin→begin, switch_→switch_, ...).
state::Phase phase_of(Action a);

// The actions `current` accepts, in the order begin, sync, switch, rollback, finalize, abort.
// `current` is the instance's migration (an archived one counts as none). `live_holder` is the
// lease of another, still-live zmigrate process working on it (what a refused
// StateStore::try_acquire_lease returns); std::nullopt once the caller holds the lease itself.
// A record in state running without a live holder is an interrupted run.
std::vector<Action> allowed_actions(const std::optional<state::Migration>& current,
                                    const std::optional<state::Lease>& live_holder = std::nullopt);

// Returns when `action` may run on `current` (see allowed_actions() for the arguments). Throws
// NotFoundError (what = the action) when `action` is not begin and there is no active migration,
// or PreconditionError (what = the action) saying why not and which commands would work, e.g.
//   switch: you must perform at least one "zmigrate sync" before switching; use ...
// Callers take the lease first, then check, so a live holder is reported as "busy".
void check_action(Action action, const std::optional<state::Migration>& current,
                  const std::optional<state::Lease>& live_holder = std::nullopt);

// True when running `action` on `current` repeats the phase `current` is in after it failed or was
// interrupted (begin on begin/failed, sync on sync/failed, switch on switch/running, ...): the
// run should resume from the journal, and begin must reuse the record instead of creating one.
bool is_retry(Action action, const state::Migration& current);

// How a run of an action ended, as the engine reports it.
enum class Outcome {
  started, // the run has begun
  succeeded,
  failed, // for switch: failed after the cutover (the source was hidden), or on a retry
  // switch only: failed before the cutover, so the source is still the primary and the record
  // goes back to sync/failed, from where sync, switch and abort work again (Triton's
  // storeFailure without disallowRetry). Any other action treats it as `failed`.
  failed_before_cutover,
};

// The record's phase and state after `action` ended with `outcome` (Triton's transition table):
//   started                → <phase of action>/running
//   begin succeeded        → begin/paused
//   sync succeeded         → sync/paused, one more sync phase
//   switch succeeded       → switch/successful
//   rollback|abort|finalize succeeded → <that phase>/successful, archived
//   failed                 → <phase of action>/failed
//   switch failed_before_cutover → sync/failed
// The final sync that switch performs is part of the switch run; the engine counts it in
// num_sync_phases itself.
struct NextState {
  state::Phase phase;
  state::State state;
  bool archived = false;
  int sync_phases_added = 0;
};
NextState next_state_after(Action action, Outcome outcome);

// Applies next_state_after() to `m`: phase, state, archived, num_sync_phases; `finished` becomes
// `now` when the run ended (cleared when it starts); `error` becomes `error` on failure and is
// cleared otherwise.
void apply_outcome(state::Migration& m, Action action, Outcome outcome, const std::string& now,
                   const std::string& error = {});

// The matching update of the run's history entry: state running/successful/failed, `finished`,
// `error`; on success current_progress = total_progress, as Triton's storeSuccess does. The entry
// keeps the phase it was started with (a switch that failed before the cutover stays a failed
// switch entry while the record returns to sync/failed).
void apply_outcome(state::PhaseRun& r, Outcome outcome, const std::string& now,
                   const std::string& error = {});

} // namespace zmigrate::migration
