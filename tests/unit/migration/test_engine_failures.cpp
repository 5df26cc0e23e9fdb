// SPDX-License-Identifier: MPL-2.0
// The engine's failure matrix (engine-models.md 4.9: test compensation by its effects). For every
// phase, the happy path runs first and its journal says which steps there are (never a list
// written here: the step names change with the engine); then, for every run of every step, before
// it and after it (Settings::step_hook), a fresh world runs up to that phase, the phase fails
// there, and the test checks that
//   - the phase throws;
//   - the invariants hold (EngineWorld::invariants): never two running copies; the source's
//     datasets, data and synced base intact until finalize proved the target; every
//     zmigrate-made thing on the target in the ledger or removed; the ledger naming nothing that
//     is not there, except rows written ahead of an act that then failed;
//   - the documented way on converges to the happy path's end state: rerun the phase; a switch
//     that failed before the point of no return is back in phase sync (switch again, or abort);
//     after it, switch again (or rollback); a finalize that failed before its proof leaves the
//     migration switched (rollback works), after it rerun finalize.
#include "fakes/engine_world.hpp"

#include <zmigrate/migration/engine.hpp>
#include <zmigrate/util/error.hpp>

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

using namespace zmigrate;
using fakes::EngineWorld;

namespace {

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) {
    out += (out.empty() ? "" : "; ") + s;
  }
  return out;
}

using Problems = std::vector<std::string>;

struct Scenario {
  std::string name;
  EngineWorld::Kind kind = EngineWorld::Kind::zone;
  bool running = true;
  std::function<void(EngineWorld&)> setup;   // brings a fresh world up to the phase
  std::function<void(EngineWorld&)> phase;   // the phase under test
  bool keep_base = true;                     // the synced base must survive the failure
  std::function<Problems(EngineWorld&)> end; // the happy path's end state
  // The documented ways on after a failure (each in its own world); each returns problems.
  std::vector<std::pair<std::string, std::function<Problems(EngineWorld&)>>> recoveries;
};

struct Tally {
  std::set<std::string> phases;
  int steps = 0;    // distinct steps over all scenarios (a step name counts once per scenario)
  int points = 0;   // failure points: (step run, before|after)
  int injected = 0; // failures injected (one per world run)
};
Tally& tally() {
  static Tally t;
  return t;
}

struct CrashTally {
  std::set<std::string> phases;
  int points = 0; // crashes: one per world run
};
CrashTally& crash_tally() {
  static CrashTally t;
  return t;
}

// One step run to fail: its name and which run of it (a step may run once per stream).
struct Target {
  std::string step;
  int occurrence = 1;
};

std::vector<Target> targets_of(const std::vector<std::string>& steps) {
  std::map<std::string, int> seen;
  std::vector<Target> out;
  for (const std::string& s : steps) {
    out.push_back({s, ++seen[s]});
  }
  return out;
}

// What must be true right after the failure, before any recovery.
Problems right_after(EngineWorld& w, const EngineWorld::Baseline& b, const Scenario& sc) {
  std::vector<std::string> dangling;
  Problems bad = w.invariants(b, sc.keep_base, &dangling);
  if (!w.has_record()) {
    return bad;
  }
  const state::Migration m = w.record();
  const bool hidden =
      m.data.value("switch", nlohmann::json::object()).value("source_hidden", false);
  if (m.phase == state::Phase::sync && m.state == state::State::failed &&
      m.data.contains("switch")) {
    // A switch undone before the point of no return: the source is the instance, as before.
    if (w.cn1->instances.count(EngineWorld::k_vm) != 0) {
      const nlohmann::json& s = w.cn1->instances.at(EngineWorld::k_vm);
      if (s.value("do_not_inventory", false)) {
        bad.push_back("switch undone, but the source is still hidden");
      }
      if (w.was_running && s.value("state", "") != "running") {
        bad.push_back("switch undone, but the source is not running again");
      }
    }
    if (w.cn2->running(EngineWorld::k_vm)) {
      bad.push_back("switch undone, but the target runs");
    }
    if (w.inv.vms.at(EngineWorld::k_vm).server_uuid != EngineWorld::k_cn1) {
      bad.push_back("switch undone, but VMAPI places the instance on the target");
    }
    if (hidden) {
      bad.push_back("switch undone (phase sync) while the record says the source is hidden");
    }
  }
  return bad;
}

// A way on, run: its problems, or that it threw.
Problems attempt(const std::function<Problems(EngineWorld&)>& way, EngineWorld& w,
                 const char* what) {
  try {
    return way(w);
  } catch (const std::exception& e) {
    return {std::string(what) + " threw: " + e.what()};
  }
}

// Run `sc`'s matrix: every failure point, each followed by every documented way on.
void run_matrix(const Scenario& sc) {
  std::vector<std::string> steps;
  {
    EngineWorld w(sc.kind, sc.running);
    sc.setup(w);
    const std::size_t from = w.store.writes.size();
    sc.phase(w);
    steps = w.steps_since(from);
    INFO("happy path of " << sc.name << ": " << joined(sc.end(w)));
    REQUIRE(sc.end(w).empty());
  }
  REQUIRE_FALSE(steps.empty());
  tally().phases.insert(sc.name);
  tally().steps += static_cast<int>(std::set<std::string>(steps.begin(), steps.end()).size());
  for (const Target& t : targets_of(steps)) {
    for (const bool before : {true, false}) {
      ++tally().points;
      for (const auto& [how, recover] : sc.recoveries) {
        EngineWorld w(sc.kind, sc.running);
        sc.setup(w);
        const EngineWorld::Baseline b = w.baseline();
        w.fail_at_step(t.step, t.occurrence, before);
        INFO(sc.name << ": fail " << (before ? "before " : "after ") << t.step << " (run "
                     << t.occurrence << "), then " << how);
        bool threw = false;
        try {
          sc.phase(w);
        } catch (const std::exception&) {
          threw = true;
        }
        CHECK(threw);
        CHECK(w.hook_fired == 1);
        const Problems now = right_after(w, b, sc);
        INFO("right after the failure: " << joined(now));
        CHECK(now.empty());
        w.clear_step_fault();
        const Problems later = attempt(recover, w, "recovery");
        INFO("after the recovery: " << joined(later));
        CHECK(later.empty());
        ++tally().injected;
      }
    }
  }
}

// kill -9 of the process just before each state store write of `sc`'s phase (every one: journal
// rows, record updates, ledger rows, leases; node acts between two writes happened in full),
// then a new process reruns the same command (the scenario's first way on). Right after the
// crash the invariants hold (ledger rows written ahead of an act that never came are allowed);
// after the rerun the phase's end state is the happy path's: the same data on both sides, no
// key, directory or snapshot left that the ledger does not account for.
void run_crash_matrix(const Scenario& sc) {
  int writes = 0;
  bool ends_with_release = true;
  {
    EngineWorld w(sc.kind, sc.running);
    sc.setup(w);
    const std::size_t from = w.store.writes.size();
    sc.phase(w);
    writes = static_cast<int>(w.store.writes.size() - from);
    REQUIRE(sc.end(w).empty());
    // A phase's last write releases its lease; migrate's is the close of its kept data path.
    ends_with_release = w.store.writes.back().rfind("release_lease ", 0) == 0;
  }
  REQUIRE(writes > 0);
  crash_tally().phases.insert(sc.name);
  const auto& [how, rerun] = sc.recoveries.front();
  // A crash before a final lease release comes after the phase ended: not a case of its own.
  const int last = ends_with_release ? writes - 1 : writes;
  for (int k = 1; k <= last; ++k) {
    EngineWorld w(sc.kind, sc.running);
    sc.setup(w);
    const EngineWorld::Baseline b = w.baseline();
    w.crash_at_write(k);
    bool killed = false;
    std::string other;
    try {
      sc.phase(w);
    } catch (const EngineWorld::Crash&) {
      killed = true;
    } catch (const std::exception& e) {
      other = e.what();
    }
    INFO(sc.name << ": killed before write " << k << " of " << writes << " (" << w.crash_write
                 << "), then " << how);
    INFO("the phase threw instead: " << other);
    CHECK(killed);
    w.restart_after_crash();
    std::vector<std::string> dangling;
    const Problems now = w.invariants(b, sc.keep_base, &dangling);
    INFO("right after the crash: " << joined(now));
    CHECK(now.empty());
    const Problems later = attempt(rerun, w, "the rerun");
    INFO("after the rerun: " << joined(later));
    CHECK(later.empty());
    ++crash_tally().points;
  }
}

void to_begun(EngineWorld&) {}
void to_synced(EngineWorld& w) {
  w.begin();
  w.sync();
}
void to_switch(EngineWorld& w) {
  to_synced(w);
  w.clock.advance(std::chrono::minutes(5)); // so the switch presyncs: more steps
}
void to_switched(EngineWorld& w) {
  to_synced(w);
  w.switch_over();
}

// After a failed switch: before the point of no return the record is back in sync (switch
// again or abort); after it the switch finishes forward (switch again or roll back).
Problems switch_again(EngineWorld& w) {
  w.switch_over();
  return w.expect_switched();
}
Problems switch_give_up(EngineWorld& w) {
  if (w.record().phase == state::Phase::sync) {
    w.abort();
    return w.expect_aborted();
  }
  w.rollback();
  return w.expect_rolled_back();
}

Scenario switch_scenario(const std::string& name, EngineWorld::Kind kind, bool running) {
  Scenario sc;
  sc.name = name;
  sc.kind = kind;
  sc.running = running;
  sc.setup = to_switch;
  sc.phase = [](EngineWorld& w) { w.switch_over(); };
  sc.end = [](EngineWorld& w) { return w.expect_switched(); };
  sc.recoveries = {{"switch again", switch_again}, {"abort or rollback", switch_give_up}};
  return sc;
}

Scenario begin_scenario(EngineWorld::Kind kind = EngineWorld::Kind::zone) {
  Scenario sc;
  sc.name = kind == EngineWorld::Kind::bhyve ? "begin (bhyve)" : "begin";
  sc.kind = kind;
  sc.setup = to_begun;
  sc.phase = [](EngineWorld& w) { w.begin(); };
  sc.end = [](EngineWorld& w) { return w.expect_begun(); };
  sc.recoveries = {{"begin again",
                    [](EngineWorld& w) {
                      w.begin();
                      return w.expect_begun();
                    }},
                   {"abort", [](EngineWorld& w) {
                      w.abort();
                      return w.expect_aborted();
                    }}};
  return sc;
}

Scenario finalize_scenario() {
  Scenario sc;
  sc.name = "finalize";
  sc.setup = to_switched;
  sc.phase = [](EngineWorld& w) { w.finalize(); };
  sc.end = [](EngineWorld& w) { return w.expect_finalized(); };
  sc.recoveries = {
      {"finalize again",
       [](EngineWorld& w) {
         w.finalize();
         return w.expect_finalized();
       }},
      {"rollback unless proven", [](EngineWorld& w) {
         const state::Migration m = w.record();
         if (w.verify_proven()) {
           w.finalize();
           return w.expect_finalized();
         }
         Problems bad;
         if (!(m.phase == state::Phase::switch_ && m.state == state::State::successful)) {
           bad.push_back("a finalize that proved nothing left the record " +
                         state::to_string(m.phase) + "/" + state::to_string(m.state));
         }
         w.rollback();
         for (const std::string& p : w.expect_rolled_back()) {
           bad.push_back(p);
         }
         return bad;
       }}};
  return sc;
}

Scenario migrate_scenario(EngineWorld::Kind kind = EngineWorld::Kind::zone) {
  Scenario sc;
  sc.name = kind == EngineWorld::Kind::bhyve ? "migrate (bhyve)" : "migrate";
  sc.kind = kind;
  sc.setup = to_begun;
  sc.phase = [](EngineWorld& w) { w.migrate(true); };
  sc.end = [](EngineWorld& w) { return w.expect_finalized(); };
  sc.recoveries = {{"migrate again (finalize when it says so)", [](EngineWorld& w) {
                      // A failed finalize is finished by finalize: migrate refuses to sync and
                      // its error names that command.
                      if (w.has_record() && w.record().phase == state::Phase::finalize) {
                        w.finalize();
                      } else {
                        w.migrate(true);
                      }
                      return w.expect_finalized();
                    }}};
  return sc;
}

// migrate without --finalize: ends switched, and a rerun after a crash leaves nothing of the
// data path behind even when the switch had completed (a kill between the switch and the close
// of the kept link).
Scenario migrate_switch_scenario() {
  Scenario sc;
  sc.name = "migrate (stops before finalize)";
  sc.setup = to_begun;
  sc.phase = [](EngineWorld& w) { w.migrate(false); };
  sc.end = [](EngineWorld& w) { return w.expect_switched(); };
  sc.recoveries = {{"migrate again", [](EngineWorld& w) {
                      w.migrate(false);
                      return w.expect_switched();
                    }}};
  return sc;
}

Scenario sync_scenario(bool first) {
  Scenario sc;
  sc.name = first ? "sync (first)" : "sync (incremental)";
  if (first) {
    sc.setup = [](EngineWorld& w) { w.begin(); };
  } else {
    sc.setup = to_synced;
  }
  sc.phase = [](EngineWorld& w) { w.sync(); };
  const int n = first ? 1 : 2;
  sc.end = [n](EngineWorld& w) { return w.expect_synced(n); };
  sc.recoveries = {{"sync again",
                    [n](EngineWorld& w) {
                      w.sync();
                      return w.expect_synced(n);
                    }},
                   {first ? "abort" : "switch", [first](EngineWorld& w) {
                      if (first) {
                        w.abort();
                        return w.expect_aborted();
                      }
                      w.switch_over();
                      return w.expect_switched();
                    }}};
  return sc;
}

// A phase that throws one copy away on purpose (rollback, abort): after a failure, run it again.
Scenario throw_away_scenario(const std::string& name, EngineWorld::Kind kind,
                             void (*setup)(EngineWorld&),
                             const std::function<void(EngineWorld&)>& phase,
                             const std::function<Problems(EngineWorld&)>& end) {
  Scenario sc;
  sc.name = kind == EngineWorld::Kind::bhyve ? name + " (bhyve)" : name;
  sc.kind = kind;
  sc.setup = setup;
  sc.phase = phase;
  sc.keep_base = false;
  sc.end = end;
  sc.recoveries = {{name + " again", [phase, end](EngineWorld& w) {
                      phase(w);
                      return end(w);
                    }}};
  return sc;
}

Scenario rollback_scenario(EngineWorld::Kind kind) {
  return throw_away_scenario(
      "rollback", kind, to_switched, [](EngineWorld& w) { w.rollback(); },
      [](EngineWorld& w) { return w.expect_rolled_back(); });
}

Scenario abort_scenario(EngineWorld::Kind kind) {
  return throw_away_scenario(
      "abort", kind, to_synced, [](EngineWorld& w) { w.abort(); },
      [](EngineWorld& w) { return w.expect_aborted(); });
}

} // namespace

TEST_CASE("engine failure matrix: begin", "[engine][matrix]") {
  run_matrix(begin_scenario());
}

TEST_CASE("engine failure matrix: first sync", "[engine][matrix]") {
  run_matrix(sync_scenario(true));
}

TEST_CASE("engine failure matrix: incremental sync", "[engine][matrix]") {
  run_matrix(sync_scenario(false));
}

TEST_CASE("engine failure matrix: switch of a running zone", "[engine][matrix]") {
  run_matrix(switch_scenario("switch (running zone)", EngineWorld::Kind::zone, true));
}

TEST_CASE("engine failure matrix: switch of a stopped zone", "[engine][matrix]") {
  run_matrix(switch_scenario("switch (stopped zone)", EngineWorld::Kind::zone, false));
}

TEST_CASE("engine failure matrix: switch of a running KVM instance", "[engine][matrix]") {
  run_matrix(switch_scenario("switch (running kvm)", EngineWorld::Kind::kvm, true));
}

TEST_CASE("engine failure matrix: rollback", "[engine][matrix]") {
  run_matrix(rollback_scenario(EngineWorld::Kind::zone));
}

TEST_CASE("engine failure matrix: abort", "[engine][matrix]") {
  run_matrix(abort_scenario(EngineWorld::Kind::zone));
}

// bhyve: begin lifts the zone root's quota (quota == reservation leaves no room for the
// migration snapshots, TRITON-1407); the switch, rollback and abort put it back.
TEST_CASE("engine failure matrix: bhyve", "[engine][matrix][bhyve]") {
  using K = EngineWorld::Kind;
  {
    // The bhyve-only steps are among those the matrix fails.
    EngineWorld w(K::bhyve);
    to_switched(w);
    const std::vector<std::string> steps = w.steps_since(0);
    CHECK(std::count(steps.begin(), steps.end(), "begin.remove_quota") == 1);
    CHECK(std::count(steps.begin(), steps.end(), "switch.restore_quota") == 1);
  }
  run_matrix(begin_scenario(K::bhyve));
  run_matrix(switch_scenario("switch (running bhyve)", K::bhyve, true));
  run_matrix(rollback_scenario(K::bhyve));
  run_matrix(abort_scenario(K::bhyve));
  run_matrix(migrate_scenario(K::bhyve));
}

TEST_CASE("engine failure matrix: finalize", "[engine][matrix]") {
  run_matrix(finalize_scenario());
}

TEST_CASE("engine failure matrix: migrate --finalize", "[engine][matrix]") {
  run_matrix(migrate_scenario());
}

TEST_CASE("engine crash matrix: kill -9 before every state write, then rerun", "[engine][crash]") {
  using K = EngineWorld::Kind;
  SECTION("begin") {
    run_crash_matrix(begin_scenario());
  }
  SECTION("first sync") {
    run_crash_matrix(sync_scenario(true));
  }
  SECTION("incremental sync") {
    run_crash_matrix(sync_scenario(false));
  }
  SECTION("switch of a running zone") {
    run_crash_matrix(switch_scenario("switch (running zone)", K::zone, true));
  }
  SECTION("switch of a stopped zone") {
    run_crash_matrix(switch_scenario("switch (stopped zone)", K::zone, false));
  }
  SECTION("switch of a running KVM instance") {
    run_crash_matrix(switch_scenario("switch (running kvm)", K::kvm, true));
  }
  SECTION("rollback") {
    run_crash_matrix(rollback_scenario(K::zone));
  }
  SECTION("abort") {
    run_crash_matrix(abort_scenario(K::zone));
  }
  SECTION("finalize") {
    run_crash_matrix(finalize_scenario());
  }
  SECTION("migrate --finalize") {
    run_crash_matrix(migrate_scenario());
  }
  SECTION("migrate") {
    run_crash_matrix(migrate_switch_scenario());
  }
  SECTION("bhyve") {
    run_crash_matrix(begin_scenario(K::bhyve));
    run_crash_matrix(switch_scenario("switch (running bhyve)", K::bhyve, true));
    run_crash_matrix(rollback_scenario(K::bhyve));
    run_crash_matrix(abort_scenario(K::bhyve));
  }
}

TEST_CASE("engine failure matrix: totals", "[engine][matrix]") {
  const Tally& t = tally();
  WARN(fmt::format("engine failure matrix: {} phase scenarios, {} steps, {} failure points, {} "
                   "injected failures",
                   t.phases.size(), t.steps, t.points, t.injected));
  if (!t.phases.empty()) {
    CHECK(t.points >= 2 * t.steps);
  }
  const CrashTally& c = crash_tally();
  WARN(fmt::format("engine crash matrix: {} phase scenarios, {} crashes (one before every state "
                   "store write), each followed by a rerun",
                   c.phases.size(), c.points));
}
