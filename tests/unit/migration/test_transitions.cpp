// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/transitions.hpp>
#include <zmigrate/util/error.hpp>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::migration;
using state::Migration;
using state::Phase;
using state::State;

namespace {

const std::vector<Action> k_all_actions{Action::begin,    Action::sync,     Action::switch_,
                                        Action::rollback, Action::finalize, Action::abort};

Migration record(Phase p, State s, int num_sync_phases = 0) {
  Migration m;
  m.id = "m1";
  m.vm_uuid = "vm1";
  m.source_server_uuid = "cn-src";
  m.target_server_uuid = "cn-dst";
  m.phase = p;
  m.state = s;
  m.num_sync_phases = num_sync_phases;
  return m;
}

std::string joined(const std::vector<Action>& actions) {
  std::string out;
  for (Action a : actions) {
    out += (out.empty() ? "" : "|") + to_string(a);
  }
  return out;
}

// The message check_action() throws, or "" when it allows the action.
std::string refusal(Action a, const std::optional<Migration>& m,
                    const std::optional<state::Lease>& holder = std::nullopt) {
  try {
    check_action(a, m, holder);
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

struct Row {
  Phase phase;
  State state;
  const char* no_syncs;   // allowed with num_sync_phases == 0
  const char* with_syncs; // allowed with num_sync_phases >= 1
};

// Every phase x state, without a live lease holder (running = interrupted). The spec in
// transitions.hpp, written out.
const std::vector<Row> k_table{
    {Phase::begin, State::running, "begin|abort", "begin|abort"},
    {Phase::begin, State::paused, "sync|abort", "sync|switch|abort"},
    {Phase::begin, State::failed, "begin|abort", "begin|abort"},
    {Phase::begin, State::successful, "abort", "abort"},
    {Phase::sync, State::running, "sync|abort", "sync|switch|abort"},
    {Phase::sync, State::paused, "sync|abort", "sync|switch|abort"},
    {Phase::sync, State::failed, "sync|abort", "sync|switch|abort"},
    {Phase::sync, State::successful, "abort", "abort"},
    {Phase::switch_, State::running, "switch|rollback", "switch|rollback"},
    {Phase::switch_, State::paused, "", ""},
    {Phase::switch_, State::failed, "switch|rollback", "switch|rollback"},
    {Phase::switch_, State::successful, "rollback|finalize", "rollback|finalize"},
    {Phase::rollback, State::running, "rollback", "rollback"},
    {Phase::rollback, State::paused, "", ""},
    {Phase::rollback, State::failed, "rollback", "rollback"},
    {Phase::rollback, State::successful, "", ""},
    {Phase::finalize, State::running, "finalize", "finalize"},
    {Phase::finalize, State::paused, "", ""},
    {Phase::finalize, State::failed, "finalize", "finalize"},
    {Phase::finalize, State::successful, "", ""},
    {Phase::abort, State::running, "abort", "abort"},
    {Phase::abort, State::paused, "", ""},
    {Phase::abort, State::failed, "abort", "abort"},
    {Phase::abort, State::successful, "", ""},
};

} // namespace

TEST_CASE("migration::to_string(Action)", "[migration]") {
  CHECK(joined(k_all_actions) == "begin|sync|switch|rollback|finalize|abort");
  CHECK(phase_of(Action::begin) == Phase::begin);
  CHECK(phase_of(Action::sync) == Phase::sync);
  CHECK(phase_of(Action::switch_) == Phase::switch_);
  CHECK(phase_of(Action::rollback) == Phase::rollback);
  CHECK(phase_of(Action::finalize) == Phase::finalize);
  CHECK(phase_of(Action::abort) == Phase::abort);
}

TEST_CASE("migration::check_action table", "[migration]") {
  REQUIRE(k_table.size() == 24);
  for (const Row& row : k_table) {
    for (int syncs : {0, 1, 3}) {
      const Migration m = record(row.phase, row.state, syncs);
      const std::string expected = syncs == 0 ? row.no_syncs : row.with_syncs;
      INFO(state::to_string(row.phase)
           << "/" << state::to_string(row.state) << " num_sync_phases=" << syncs);
      CHECK(joined(allowed_actions(m)) == expected);
      for (Action a : k_all_actions) {
        INFO("action " << to_string(a));
        const bool allowed =
            ("|" + expected + "|").find("|" + to_string(a) + "|") != std::string::npos;
        if (allowed) {
          CHECK_NOTHROW(check_action(a, m));
        } else {
          CHECK_THROWS_AS(check_action(a, m), PreconditionError);
          // Every refusal says what to do next, or why nothing can be done.
          const std::string why = refusal(a, m);
          const bool has_next_step = why.find("\"zmigrate ") != std::string::npos ||
                                     why.find("no command applies") != std::string::npos;
          CHECK(has_next_step);
        }
      }
    }
  }
}

TEST_CASE("migration::check_action with a live lease holder", "[migration]") {
  state::Lease holder;
  holder.migration_id = "m1";
  holder.pid = 4242;
  holder.host = "headnode";
  holder.operation = "sync";
  for (const Row& row : k_table) {
    const Migration m = record(row.phase, row.state, 1);
    CHECK(allowed_actions(m, holder).empty());
    for (Action a : k_all_actions) {
      CHECK_THROWS_AS(check_action(a, m, holder), PreconditionError);
    }
  }
  CHECK(refusal(Action::sync, record(Phase::sync, State::running, 1), holder) ==
        "sync: migration m1 is busy: zmigrate pid 4242 on headnode is running \"sync\" "
        "(sync/running); wait for it to finish, or follow it with \"zmigrate watch vm1\"");
  // A lease never blocks starting afresh when there is no active migration.
  CHECK_NOTHROW(check_action(Action::begin, std::nullopt, holder));
}

TEST_CASE("migration::check_action without an active migration", "[migration]") {
  CHECK(joined(allowed_actions(std::nullopt)) == "begin");
  CHECK_NOTHROW(check_action(Action::begin, std::nullopt));
  for (Action a : k_all_actions) {
    if (a != Action::begin) {
      CHECK_THROWS_AS(check_action(a, std::nullopt), NotFoundError);
    }
  }
  CHECK(refusal(Action::sync, std::nullopt) ==
        "sync: no migration in progress for this instance; start one with \"zmigrate begin "
        "<instance>\"");

  Migration done = record(Phase::finalize, State::successful, 2);
  done.archived = true;
  done.finished = "2026-11-22T01:00:00.000Z";
  CHECK(joined(allowed_actions(done)) == "begin");
  CHECK_NOTHROW(check_action(Action::begin, done));
  CHECK_THROWS_AS(check_action(Action::rollback, done), NotFoundError);
  CHECK(refusal(Action::rollback, done) ==
        "rollback: no migration in progress for instance vm1: the last one, m1, ended as "
        "finalize/successful at 2026-11-22T01:00:00.000Z; start a new one with \"zmigrate begin "
        "vm1\"");
}

TEST_CASE("migration::check_action messages", "[migration]") {
  SECTION("switch before any sync") {
    CHECK(refusal(Action::switch_, record(Phase::begin, State::paused)) ==
          "switch: you must perform at least one \"zmigrate sync\" before switching; run "
          "\"zmigrate sync vm1\" first");
  }
  SECTION("finalize before switch") {
    CHECK(refusal(Action::finalize, record(Phase::sync, State::paused, 1)) ==
          "finalize: only works on a successful switch (migration m1 is sync/paused); run "
          "\"zmigrate switch vm1\" first");
    CHECK(refusal(Action::finalize, record(Phase::switch_, State::failed, 1)) ==
          "finalize: only works on a successful switch (migration m1 is switch/failed); run "
          "\"zmigrate switch vm1\" first");
  }
  SECTION("begin with an active migration") {
    CHECK(refusal(Action::begin, record(Phase::sync, State::paused, 1)) ==
          "begin: an active migration m1 already exists for this instance (phase sync, state "
          "paused); use \"zmigrate sync|switch|abort vm1\"");
    CHECK(refusal(Action::begin, record(Phase::switch_, State::successful, 1)) ==
          "begin: an active migration m1 already exists for this instance (phase switch, state "
          "successful); use \"zmigrate rollback|finalize vm1\"");
  }
  SECTION("abort after a successful switch points to rollback") {
    CHECK(refusal(Action::abort, record(Phase::switch_, State::successful, 1)) ==
          "abort: cannot abort after a successful switch (migration m1 is switch/successful); "
          "use \"zmigrate rollback vm1\" to return to the source, or \"zmigrate finalize vm1\" "
          "to keep the migrated instance");
    CHECK(refusal(Action::abort, record(Phase::switch_, State::failed, 1)) ==
          "abort: the switch has started and abort cannot undo it (migration m1 is "
          "switch/failed); use \"zmigrate switch|rollback vm1\"");
  }
  SECTION("rollback before a switch") {
    CHECK(refusal(Action::rollback, record(Phase::sync, State::paused, 1)) ==
          "rollback: only works after a switch (migration m1 is sync/paused); use \"zmigrate "
          "sync|switch|abort vm1\"");
    CHECK(refusal(Action::rollback, record(Phase::finalize, State::failed, 1)) ==
          "rollback: finalize has started and may already have destroyed the source instance "
          "(migration m1 is finalize/failed); use \"zmigrate finalize vm1\"");
  }
  SECTION("sync after a failed begin") {
    CHECK(refusal(Action::sync, record(Phase::begin, State::failed)) ==
          "sync: the begin phase did not finish (migration m1 is begin/failed); the target is "
          "not set up yet; use \"zmigrate begin|abort vm1\"");
  }
  SECTION("an interrupted run is named as such") {
    CHECK(refusal(Action::finalize, record(Phase::sync, State::running, 1)) ==
          "finalize: only works on a successful switch (migration m1 is sync/running "
          "(interrupted: the zmigrate that ran it is gone)); run \"zmigrate switch vm1\" first");
  }
  SECTION("after a successful switch, sync and switch say so") {
    const Migration m = record(Phase::switch_, State::successful, 2);
    CHECK(refusal(Action::sync, m) ==
          "sync: nothing left to sync: migration m1 is switch/successful (the instance already "
          "runs on server cn-dst); use \"zmigrate rollback|finalize vm1\"");
    CHECK(refusal(Action::switch_, m) ==
          "switch: already switched (migration m1 is switch/successful; the instance runs on "
          "server cn-dst); use \"zmigrate rollback|finalize vm1\"");
  }
  SECTION("a record no command applies to") {
    CHECK(refusal(Action::abort, record(Phase::abort, State::successful)) ==
          "abort: cannot abort now (migration m1 is abort/successful); no command applies to a "
          "record in this state; it was probably edited by hand");
  }
  SECTION("exit codes") {
    try {
      check_action(Action::switch_, record(Phase::begin, State::paused));
      FAIL("no exception");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::precondition);
      CHECK(e.subject() == "switch");
    }
    try {
      check_action(Action::switch_, std::nullopt);
      FAIL("no exception");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::not_found);
    }
  }
}

TEST_CASE("migration::is_retry", "[migration]") {
  CHECK(is_retry(Action::begin, record(Phase::begin, State::failed)));
  CHECK(is_retry(Action::begin, record(Phase::begin, State::running)));
  CHECK_FALSE(is_retry(Action::begin, record(Phase::begin, State::paused)));
  CHECK(is_retry(Action::sync, record(Phase::sync, State::failed, 1)));
  CHECK(is_retry(Action::sync, record(Phase::sync, State::running, 1)));
  CHECK_FALSE(is_retry(Action::sync, record(Phase::sync, State::paused, 1)));
  CHECK_FALSE(is_retry(Action::sync, record(Phase::begin, State::paused)));
  CHECK(is_retry(Action::switch_, record(Phase::switch_, State::running, 1)));
  CHECK_FALSE(is_retry(Action::switch_, record(Phase::sync, State::failed, 1)));
  CHECK(is_retry(Action::rollback, record(Phase::rollback, State::failed, 1)));
  CHECK_FALSE(is_retry(Action::rollback, record(Phase::switch_, State::successful, 1)));
  CHECK(is_retry(Action::finalize, record(Phase::finalize, State::failed, 1)));
  CHECK(is_retry(Action::abort, record(Phase::abort, State::running)));
  Migration archived = record(Phase::abort, State::failed);
  archived.archived = true;
  CHECK_FALSE(is_retry(Action::abort, archived));
}

TEST_CASE("migration::next_state_after", "[migration]") {
  struct Expect {
    Action action;
    Outcome outcome;
    Phase phase;
    State state;
    bool archived;
    int added;
  };
  const std::vector<Expect> table{
      {Action::begin, Outcome::started, Phase::begin, State::running, false, 0},
      {Action::begin, Outcome::succeeded, Phase::begin, State::paused, false, 0},
      {Action::begin, Outcome::failed, Phase::begin, State::failed, false, 0},
      {Action::begin, Outcome::failed_before_cutover, Phase::begin, State::failed, false, 0},
      {Action::sync, Outcome::started, Phase::sync, State::running, false, 0},
      {Action::sync, Outcome::succeeded, Phase::sync, State::paused, false, 1},
      {Action::sync, Outcome::failed, Phase::sync, State::failed, false, 0},
      {Action::switch_, Outcome::started, Phase::switch_, State::running, false, 0},
      {Action::switch_, Outcome::succeeded, Phase::switch_, State::successful, false, 0},
      {Action::switch_, Outcome::failed, Phase::switch_, State::failed, false, 0},
      {Action::switch_, Outcome::failed_before_cutover, Phase::sync, State::failed, false, 0},
      {Action::rollback, Outcome::started, Phase::rollback, State::running, false, 0},
      {Action::rollback, Outcome::succeeded, Phase::rollback, State::successful, true, 0},
      {Action::rollback, Outcome::failed, Phase::rollback, State::failed, false, 0},
      {Action::finalize, Outcome::started, Phase::finalize, State::running, false, 0},
      {Action::finalize, Outcome::succeeded, Phase::finalize, State::successful, true, 0},
      {Action::finalize, Outcome::failed, Phase::finalize, State::failed, false, 0},
      {Action::abort, Outcome::started, Phase::abort, State::running, false, 0},
      {Action::abort, Outcome::succeeded, Phase::abort, State::successful, true, 0},
      {Action::abort, Outcome::failed, Phase::abort, State::failed, false, 0},
  };
  for (const Expect& e : table) {
    INFO(to_string(e.action) << " outcome " << static_cast<int>(e.outcome));
    const NextState n = next_state_after(e.action, e.outcome);
    CHECK(n.phase == e.phase);
    CHECK(n.state == e.state);
    CHECK(n.archived == e.archived);
    CHECK(n.sync_phases_added == e.added);
  }

  SECTION("every state reached on failure allows a way forward") {
    for (Action a : k_all_actions) {
      for (Outcome o : {Outcome::failed, Outcome::failed_before_cutover, Outcome::started}) {
        const NextState n = next_state_after(a, o);
        Migration m = record(n.phase, n.state, 1);
        INFO(to_string(a) << " outcome " << static_cast<int>(o));
        CHECK_FALSE(allowed_actions(m).empty());
      }
    }
  }
}

TEST_CASE("migration::apply_outcome", "[migration]") {
  SECTION("a full happy path walks the table") {
    Migration m = record(Phase::begin, State::running);
    apply_outcome(m, Action::begin, Outcome::succeeded, "t1");
    CHECK(m.phase == Phase::begin);
    CHECK(m.state == State::paused);
    CHECK(m.finished == "t1");
    check_action(Action::sync, m);
    apply_outcome(m, Action::sync, Outcome::started, "t2");
    CHECK(m.state == State::running);
    CHECK(m.finished.empty());
    apply_outcome(m, Action::sync, Outcome::succeeded, "t3");
    CHECK(m.num_sync_phases == 1);
    check_action(Action::switch_, m);
    apply_outcome(m, Action::switch_, Outcome::started, "t4");
    apply_outcome(m, Action::switch_, Outcome::failed_before_cutover, "t5", "cannot stop");
    CHECK(m.phase == Phase::sync);
    CHECK(m.state == State::failed);
    CHECK(m.error == "cannot stop");
    check_action(Action::switch_, m);
    apply_outcome(m, Action::switch_, Outcome::started, "t6");
    CHECK(m.error.empty());
    apply_outcome(m, Action::switch_, Outcome::succeeded, "t7");
    CHECK(m.state == State::successful);
    check_action(Action::finalize, m);
    apply_outcome(m, Action::finalize, Outcome::started, "t8");
    apply_outcome(m, Action::finalize, Outcome::succeeded, "t9");
    CHECK(m.phase == Phase::finalize);
    CHECK(m.state == State::successful);
    CHECK(m.archived);
    CHECK(m.finished == "t9");
    CHECK(m.num_sync_phases == 1);
  }

  SECTION("a phase run entry") {
    state::PhaseRun r;
    r.phase = Phase::switch_;
    r.total_progress = 100;
    r.current_progress = 3;
    apply_outcome(r, Outcome::started, "t1");
    CHECK(r.state == State::running);
    CHECK(r.started == "t1");
    apply_outcome(r, Outcome::failed_before_cutover, "t2", "boom");
    CHECK(r.phase == Phase::switch_); // the entry stays a switch entry
    CHECK(r.state == State::failed);
    CHECK(r.finished == "t2");
    CHECK(r.error == "boom");
    CHECK(r.current_progress == 3);
    apply_outcome(r, Outcome::started, "t3");
    CHECK(r.started == "t1"); // kept when already set
    CHECK(r.error.empty());
    CHECK(r.finished.empty());
    apply_outcome(r, Outcome::succeeded, "t4");
    CHECK(r.state == State::successful);
    CHECK(r.current_progress == 100);
  }
}
