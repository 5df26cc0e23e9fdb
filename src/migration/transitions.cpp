// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/transitions.hpp>
#include <zmigrate/util/error.hpp>

#include <array>

#include <fmt/format.h>

namespace zmigrate::migration {

namespace {

using state::Migration;
using state::Phase;
using state::State;

constexpr std::array<Action, 6> k_actions{Action::begin,    Action::sync,     Action::switch_,
                                          Action::rollback, Action::finalize, Action::abort};

bool is_active(const std::optional<Migration>& m) {
  return m.has_value() && !m->archived;
}

// Without a live lease holder, "running" only means the process that ran it is gone.
bool failed_or_interrupted(const Migration& m) {
  return m.state == State::failed || m.state == State::running;
}

bool before_switch(const Migration& m) {
  return m.phase == Phase::begin || m.phase == Phase::sync;
}

// The table in transitions.hpp, for an active record that no live process holds.
bool allowed(Action a, const Migration& m) {
  switch (a) {
  case Action::begin:
    return m.phase == Phase::begin && failed_or_interrupted(m);
  case Action::sync:
    return (m.phase == Phase::begin && m.state == State::paused) ||
           (m.phase == Phase::sync && (m.state == State::paused || failed_or_interrupted(m)));
  case Action::switch_:
    if (m.phase == Phase::switch_) {
      return failed_or_interrupted(m);
    }
    return (m.state == State::paused && before_switch(m) && m.num_sync_phases >= 1) ||
           (m.phase == Phase::sync && failed_or_interrupted(m) && m.num_sync_phases >= 1);
  case Action::rollback:
    return (m.phase == Phase::switch_ &&
            (m.state == State::successful || failed_or_interrupted(m))) ||
           (m.phase == Phase::rollback && failed_or_interrupted(m));
  case Action::finalize:
    return (m.phase == Phase::switch_ && m.state == State::successful) ||
           (m.phase == Phase::finalize && failed_or_interrupted(m));
  case Action::abort:
    return before_switch(m) || (m.phase == Phase::abort && failed_or_interrupted(m));
  }
  return false;
}

// "sync/paused", or "sync/running (interrupted)" when the process that ran it is gone.
std::string describe(const Migration& m) {
  std::string s = fmt::format("{}/{}", state::to_string(m.phase), state::to_string(m.state));
  if (m.state == State::running) {
    s += " (interrupted: the zmigrate that ran it is gone)";
  }
  return s;
}

// `use "zmigrate sync|switch|abort <vm>"`, built from the table so it can never disagree with it.
std::string hint(const Migration& m) {
  std::string verbs;
  for (Action a : k_actions) {
    if (allowed(a, m)) {
      verbs += (verbs.empty() ? "" : "|") + to_string(a);
    }
  }
  if (verbs.empty()) {
    return "no command applies to a record in this state; it was probably edited by hand";
  }
  return fmt::format("use \"zmigrate {} {}\"", verbs, m.vm_uuid);
}

// Why `action` is refused on `m` (active, no live holder), without the hint.
std::string refusal(Action action, const Migration& m) {
  const std::string is = fmt::format("migration {} is {}", m.id, describe(m));
  const bool begin_unfinished = m.phase == Phase::begin && failed_or_interrupted(m);
  switch (action) {
  case Action::begin:
    return fmt::format("an active migration {} already exists for this instance (phase {}, "
                       "state {})",
                       m.id, state::to_string(m.phase), state::to_string(m.state));
  case Action::sync:
    if (begin_unfinished) {
      return fmt::format("the begin phase did not finish ({}); the target is not set up yet", is);
    }
    if (m.phase == Phase::switch_ && m.state == State::successful) {
      return fmt::format("nothing left to sync: {} (the instance already runs on server {})", is,
                         m.target_server_uuid);
    }
    return fmt::format("cannot sync now ({})", is);
  case Action::switch_:
    if (begin_unfinished) {
      return fmt::format("the begin phase did not finish ({}); the target is not set up yet", is);
    }
    if (before_switch(m) && m.num_sync_phases < 1) {
      return "you must perform at least one \"zmigrate sync\" before switching";
    }
    if (m.phase == Phase::switch_ && m.state == State::successful) {
      return fmt::format("already switched ({}; the instance runs on server {})", is,
                         m.target_server_uuid);
    }
    return fmt::format("cannot switch now ({})", is);
  case Action::rollback:
    if (before_switch(m) || m.phase == Phase::abort) {
      return fmt::format("only works after a switch ({})", is);
    }
    if (m.phase == Phase::finalize) {
      return fmt::format("finalize has started and may already have destroyed the source "
                         "instance ({})",
                         is);
    }
    return fmt::format("cannot roll back now ({})", is);
  case Action::finalize:
    return fmt::format("only works on a successful switch ({})", is);
  case Action::abort:
    if (m.phase == Phase::switch_ && m.state == State::successful) {
      return fmt::format("cannot abort after a successful switch ({}); use \"zmigrate "
                         "rollback {}\" to return to the source, or \"zmigrate finalize {}\" to "
                         "keep the migrated instance",
                         is, m.vm_uuid, m.vm_uuid);
    }
    if (m.phase == Phase::switch_) {
      return fmt::format("the switch has started and abort cannot undo it ({})", is);
    }
    return fmt::format("cannot abort now ({})", is);
  }
  return fmt::format("cannot {} now ({})", to_string(action), is);
}

} // namespace

std::string to_string(Action a) {
  switch (a) {
  case Action::begin:
    return "begin";
  case Action::sync:
    return "sync";
  case Action::switch_:
    return "switch";
  case Action::rollback:
    return "rollback";
  case Action::finalize:
    return "finalize";
  case Action::abort:
    return "abort";
  }
  return fmt::format("action#{}", static_cast<int>(a));
}

Phase phase_of(Action a) {
  switch (a) {
  case Action::begin:
    return Phase::begin;
  case Action::sync:
    return Phase::sync;
  case Action::switch_:
    return Phase::switch_;
  case Action::rollback:
    return Phase::rollback;
  case Action::finalize:
    return Phase::finalize;
  case Action::abort:
    return Phase::abort;
  }
  return Phase::begin;
}

std::vector<Action> allowed_actions(const std::optional<Migration>& current,
                                    const std::optional<state::Lease>& live_holder) {
  if (!is_active(current)) {
    return {Action::begin};
  }
  std::vector<Action> out;
  if (live_holder) {
    return out;
  }
  for (Action a : k_actions) {
    if (allowed(a, *current)) {
      out.push_back(a);
    }
  }
  return out;
}

void check_action(Action action, const std::optional<Migration>& current,
                  const std::optional<state::Lease>& live_holder) {
  const std::string what = to_string(action);
  if (!is_active(current)) {
    if (action == Action::begin) {
      return;
    }
    if (!current) {
      throw NotFoundError(what, "no migration in progress for this instance; start one with "
                                "\"zmigrate begin <instance>\"");
    }
    throw NotFoundError(
        what,
        fmt::format("no migration in progress for instance {}: the last one, {}, ended as "
                    "{}/{}{}; start a new one with \"zmigrate begin {}\"",
                    current->vm_uuid, current->id, state::to_string(current->phase),
                    state::to_string(current->state),
                    current->finished.empty() ? "" : " at " + current->finished, current->vm_uuid));
  }
  const Migration& m = *current;
  if (live_holder) {
    throw PreconditionError(
        what, fmt::format("migration {} is busy: zmigrate pid {} on {} is running \"{}\" ({}/{}); "
                          "wait for it to finish, or follow it with \"zmigrate watch {}\"",
                          m.id, live_holder->pid, live_holder->host, live_holder->operation,
                          state::to_string(m.phase), state::to_string(m.state), m.vm_uuid));
  }
  if (allowed(action, m)) {
    return;
  }
  const std::string reason = refusal(action, m);
  if (action == Action::abort && m.phase == Phase::switch_ && m.state == State::successful) {
    throw PreconditionError(what, reason); // the reason already says what to do instead
  }
  if (action == Action::finalize && allowed(Action::switch_, m)) {
    throw PreconditionError(what,
                            fmt::format("{}; run \"zmigrate switch {}\" first", reason, m.vm_uuid));
  }
  if (action == Action::switch_ && allowed(Action::sync, m) && m.num_sync_phases < 1) {
    throw PreconditionError(what,
                            fmt::format("{}; run \"zmigrate sync {}\" first", reason, m.vm_uuid));
  }
  throw PreconditionError(what, fmt::format("{}; {}", reason, hint(m)));
}

bool is_retry(Action action, const Migration& current) {
  return !current.archived && current.phase == phase_of(action) && failed_or_interrupted(current);
}

NextState next_state_after(Action action, Outcome outcome) {
  const Phase phase = phase_of(action);
  switch (outcome) {
  case Outcome::started:
    return {phase, State::running};
  case Outcome::failed_before_cutover:
    if (action == Action::switch_) {
      return {Phase::sync, State::failed};
    }
    return {phase, State::failed};
  case Outcome::failed:
    return {phase, State::failed};
  case Outcome::succeeded:
    switch (action) {
    case Action::begin:
      return {phase, State::paused};
    case Action::sync:
      return {phase, State::paused, false, 1};
    case Action::switch_:
      return {phase, State::successful};
    case Action::rollback:
    case Action::abort:
    case Action::finalize:
      return {phase, State::successful, true};
    }
    break;
  }
  return {phase, State::failed};
}

void apply_outcome(Migration& m, Action action, Outcome outcome, const std::string& now,
                   const std::string& error) {
  const NextState next = next_state_after(action, outcome);
  m.phase = next.phase;
  m.state = next.state;
  m.archived = next.archived;
  m.num_sync_phases += next.sync_phases_added;
  if (outcome == Outcome::started) {
    m.finished.clear();
  } else {
    m.finished = now;
  }
  m.error = next.state == State::failed ? error : std::string();
}

void apply_outcome(state::PhaseRun& r, Outcome outcome, const std::string& now,
                   const std::string& error) {
  switch (outcome) {
  case Outcome::started:
    r.state = State::running;
    r.finished.clear();
    r.error.clear();
    if (r.started.empty()) {
      r.started = now;
    }
    return;
  case Outcome::succeeded:
    r.state = State::successful;
    r.finished = now;
    r.error.clear();
    r.current_progress = r.total_progress;
    return;
  case Outcome::failed:
  case Outcome::failed_before_cutover:
    r.state = State::failed;
    r.finished = now;
    r.error = error;
    return;
  }
}

} // namespace zmigrate::migration
