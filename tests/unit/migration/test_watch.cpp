// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/watch.hpp>
#include <zmigrate/state/sqlite_store.hpp>
#include <zmigrate/util/error.hpp>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::migration;
using state::Phase;
using state::State;

namespace {

// Time that moves only when the test says so (sleep_for advances it).
class FakeClock final : public Clock {
public:
  std::chrono::steady_clock::time_point now() const override {
    return std::chrono::steady_clock::time_point(m_wall.time_since_epoch());
  }
  std::chrono::system_clock::time_point wall_now() const override { return m_wall; }
  void sleep_for(std::chrono::milliseconds d) override { m_wall += d; }
  void advance(std::chrono::milliseconds d) { m_wall += d; }
  std::string iso() const { return iso8601(m_wall); }

private:
  std::chrono::system_clock::time_point m_wall = parse_iso8601("2026-11-22T01:00:00.000Z");
};

const std::string k_vm = "5eed0000-0000-4000-8000-000000000101";

// A store with one migration, and the writer side of an engine run driven by hand.
struct World {
  FakeClock clock;
  state::SqliteStateStore store{":memory:", clock};
  std::optional<LeaseStatus> lease;
  LeaseProbe probe = [this](const std::string&) { return lease; };
  state::Migration m;

  explicit World(bool automatic = false, State st = State::running, Phase ph = Phase::begin) {
    m.id = "11111111-2222-4333-8444-555555555555";
    m.vm_uuid = k_vm;
    m.source_server_uuid = "cn-1";
    m.target_server_uuid = "cn-2";
    m.phase = ph;
    m.state = st;
    m.automatic = automatic;
    m.created = clock.iso();
    store.insert_migration(m);
  }

  // Open a phase run as Operation::start_phase does.
  state::PhaseRun start(Phase phase, const std::string& message, int pid = 4242) {
    lease = LeaseStatus{pid, "head", state::to_string(phase), true};
    state::PhaseRun r;
    r.phase = phase;
    r.state = State::running;
    r.message = message;
    r.started = clock.iso();
    r.current_progress = 1;
    r.total_progress = 100;
    r.id = store.add_phase_run(m.id, r);
    m.phase = phase;
    m.state = State::running;
    store.update_migration(m);
    return r;
  }

  void progress(Phase phase, std::uint64_t cur, std::uint64_t total, double rate,
                bool approximate = false, const std::string& message = {}) {
    state::Progress p;
    p.migration_id = m.id;
    p.phase = phase;
    p.state = State::running;
    p.current = cur;
    p.total = total;
    p.total_approximate = approximate;
    p.bytes_per_second = rate;
    p.eta_ms = rate > 0 && total > cur ? static_cast<std::int64_t>((total - cur) / rate * 1000) : 0;
    p.message = message;
    p.updated = clock.iso();
    store.put_progress(p);
  }

  // Close the run as Operation::finish_phase does, then drop the lease.
  void finish(state::PhaseRun r, State st, const std::string& error = {},
              const nlohmann::json& details = nlohmann::json::object()) {
    r.state = st;
    r.error = error;
    r.finished = clock.iso();
    if (st != State::failed) {
      r.current_progress = r.total_progress;
    }
    r.details = details;
    store.update_phase_run(m.id, r);
    m.state = st;
    m.error = error;
    store.update_migration(m);
    lease.reset();
  }

  std::vector<WatchEvent> step(WatchState& st) { return watch_step(store, probe, clock, st); }
};

std::vector<WatchEvent::Kind> kinds(const std::vector<WatchEvent>& events) {
  std::vector<WatchEvent::Kind> out;
  for (const auto& e : events) {
    out.push_back(e.kind);
  }
  return out;
}

} // namespace

TEST_CASE("migration::start_watch", "[migration]") {
  FakeClock clock;
  state::SqliteStateStore store(":memory:", clock);
  CHECK_THROWS_AS(start_watch(store, k_vm), NotFoundError);

  World w;
  const WatchState st = start_watch(w.store, k_vm);
  CHECK(st.migration_id == w.m.id);
  CHECK(st.vm_uuid == k_vm);
  CHECK_FALSE(st.started);
}

TEST_CASE("migration::watch_step attaching to a finished migration ends at once", "[migration]") {
  World w;
  state::PhaseRun r = w.start(Phase::sync, "syncing data");
  w.finish(r, State::paused, {}, {{"bytes", 1000}});
  WatchState st = start_watch(w.store, k_vm);
  const auto events = w.step(st);
  REQUIRE(events.size() == 1);
  CHECK(events[0].type == WatchEvent::Type::end);
  CHECK(events[0].phase == "sync");
  CHECK(events[0].state == "paused");
  CHECK(st.ended);
  CHECK(st.exit_code == 0);
  CHECK(end_line(events[0]) == "OK - ready for migration sync or migration switch");
  CHECK(to_json(events[0]) ==
        nlohmann::json{{"type", "end"}, {"phase", "sync"}, {"state", "paused"}});
  CHECK(w.step(st).empty());
}

TEST_CASE("migration::watch_step failed migration", "[migration]") {
  World w;
  state::PhaseRun r = w.start(Phase::switch_, "switching instances");
  w.finish(r, State::failed, "zfs receive failed: out of space");
  WatchState st = start_watch(w.store, k_vm);
  const auto events = w.step(st);
  REQUIRE(events.size() == 1);
  CHECK(events[0].state == "failed");
  CHECK(events[0].message == "zfs receive failed: out of space");
  CHECK(st.exit_code == 1);
  CHECK(end_line(events[0]) == "Failure: zfs receive failed: out of space");
  CHECK(to_json(events[0])["message"] == "zfs receive failed: out of space");
}

TEST_CASE("migration::watch_step follows a sync to its end", "[migration]") {
  World w;
  state::PhaseRun begin_run = w.start(Phase::begin, "reserving instance");
  w.clock.advance(std::chrono::seconds(1));
  w.finish(begin_run, State::paused);
  w.clock.advance(std::chrono::seconds(10));
  // A progress row left by an earlier phase run is not this run's.
  w.progress(Phase::sync, 900, 1000, 100.0);
  w.clock.advance(std::chrono::seconds(1));
  state::PhaseRun r = w.start(Phase::sync, "syncing data");

  WatchState st = start_watch(w.store, k_vm);
  auto events = w.step(st);
  REQUIRE(events.size() == 1);
  CHECK(events[0].kind == WatchEvent::Kind::phase_run);
  CHECK(events[0].message == "syncing data");
  CHECK(events[0].state == "running");
  CHECK_FALSE(st.ended);

  w.clock.advance(std::chrono::milliseconds(500));
  CHECK(w.step(st).empty()); // nothing new, lease held

  std::vector<std::uint64_t> seen;
  auto take_bytes = [&](const std::vector<WatchEvent>& evs) {
    for (const auto& e : evs) {
      if (e.kind == WatchEvent::Kind::bytes) {
        REQUIRE(e.current_progress);
        REQUIRE(e.total_progress);
        CHECK(*e.current_progress <= *e.total_progress);
        seen.push_back(*e.current_progress);
      }
    }
  };
  w.progress(Phase::sync, 100 << 20, 400 << 20, 50.0 * (1 << 20), true);
  events = w.step(st);
  REQUIRE(events.size() == 1);
  CHECK(events[0].kind == WatchEvent::Kind::bytes);
  CHECK(events[0].total_approximate);
  CHECK(*events[0].eta_ms == 6000);
  CHECK(*events[0].transfer_bytes_second == Approx(50.0 * (1 << 20)));
  const nlohmann::json j = to_json(events[0]);
  CHECK(j["type"] == "progress");
  CHECK(j["phase"] == "sync");
  CHECK(j["state"] == "running");
  CHECK(j["current_progress"] == 100 << 20);
  CHECK(j["total_progress"] == 400 << 20);
  CHECK(j["eta_ms"] == 6000);
  CHECK(j["transfer_bytes_second"] == 50 << 20);
  CHECK(j["total_approximate"] == true);
  take_bytes(events);

  // The same row again: nothing new.
  w.clock.advance(std::chrono::milliseconds(500));
  CHECK(w.step(st).empty());

  // A row going backwards (a resumed stream counting again) stays monotonic in the stream.
  w.clock.advance(std::chrono::milliseconds(500));
  w.progress(Phase::sync, 50 << 20, 400 << 20, 40.0 * (1 << 20));
  take_bytes(w.step(st));
  // More than the approximate total: the total grows, the percentage stays <= 100.
  w.clock.advance(std::chrono::seconds(1));
  w.progress(Phase::sync, 500 << 20, 400 << 20, 40.0 * (1 << 20), true);
  take_bytes(w.step(st));
  REQUIRE(seen.size() == 3);
  CHECK(std::is_sorted(seen.begin(), seen.end()));
  CHECK(seen[1] == 100 << 20);

  w.clock.advance(std::chrono::seconds(1));
  w.finish(r, State::paused, {}, {{"bytes", 500 << 20}, {"duration_ms", 12000}, {"rate", 4e7}});
  events = w.step(st);
  REQUIRE(kinds(events) ==
          std::vector<WatchEvent::Kind>{WatchEvent::Kind::phase_done, WatchEvent::Kind::end});
  CHECK(events[0].state == "paused");
  CHECK(events[0].details["bytes"] == 500 << 20);
  CHECK(to_json(events[0]).contains("duration_ms"));
  CHECK(events[1].state == "paused");
  CHECK(st.exit_code == 0);
}

TEST_CASE("migration::watch_step waits while a live process holds the lease", "[migration]") {
  World w;
  state::PhaseRun r = w.start(Phase::switch_, "switching instances");
  w.finish(r, State::successful);
  w.lease = LeaseStatus{4242, "head", "switch", true}; // finished, not yet released
  WatchState st = start_watch(w.store, k_vm);
  CHECK(w.step(st).empty());
  w.clock.advance(std::chrono::minutes(10));
  CHECK(w.step(st).empty());
  w.lease.reset();
  const auto events = w.step(st);
  REQUIRE(events.size() == 1);
  CHECK(end_line(events[0]) == "OK - switch was successful");
}

TEST_CASE("migration::watch_step reports a dead lease holder", "[migration]") {
  World w;
  w.start(Phase::sync, "syncing data", 31337);
  WatchState st = start_watch(w.store, k_vm);
  CHECK(kinds(w.step(st)) == std::vector<WatchEvent::Kind>{WatchEvent::Kind::phase_run});
  w.lease->alive = false; // SIGKILLed
  const auto events = w.step(st);
  REQUIRE(events.size() == 1);
  CHECK(events[0].type == WatchEvent::Type::end);
  CHECK(events[0].state == "failed");
  CHECK(end_line(events[0]) ==
        "Failure: the sync process (pid 31337) died; rerun \"zmigrate sync " + k_vm + "\"");
  CHECK(st.exit_code == 1);
}

TEST_CASE("migration::watch_step running record without a lease", "[migration]") {
  World w;
  w.start(Phase::sync, "syncing data");
  w.lease.reset();
  WatchState st = start_watch(w.store, k_vm);
  CHECK(kinds(w.step(st)) == std::vector<WatchEvent::Kind>{WatchEvent::Kind::phase_run});
  // The record and the lease are read apart: give the writer a moment first.
  w.clock.advance(k_watch_poll);
  CHECK(w.step(st).empty());
  w.clock.advance(k_watch_orphan_grace);
  const auto events = w.step(st);
  REQUIRE(events.size() == 1);
  CHECK(events[0].state == "failed");
  CHECK(events[0].message == "the sync process died; rerun \"zmigrate sync " + k_vm + "\"");
}

TEST_CASE("migration::watch_step follows an automatic migration across phases", "[migration]") {
  World w(true);
  state::PhaseRun b = w.start(Phase::begin, "reserving instance");
  WatchState st = start_watch(w.store, k_vm);
  CHECK(kinds(w.step(st)) == std::vector<WatchEvent::Kind>{WatchEvent::Kind::phase_run});
  w.clock.advance(std::chrono::seconds(2));
  w.finish(b, State::paused);
  // Between two phases of `migrate`: not the end yet.
  CHECK(kinds(w.step(st)) == std::vector<WatchEvent::Kind>{WatchEvent::Kind::phase_done});
  w.clock.advance(std::chrono::seconds(1));
  CHECK(w.step(st).empty());
  state::PhaseRun s = w.start(Phase::sync, "syncing data");
  auto events = w.step(st);
  REQUIRE(events.size() == 1);
  CHECK(events[0].kind == WatchEvent::Kind::phase_run);
  CHECK(events[0].phase == "sync");
  w.clock.advance(std::chrono::seconds(5));
  w.finish(s, State::paused);
  // A sync run that appeared and ended between two polls is still reported, then its end.
  w.clock.advance(std::chrono::seconds(1));
  state::PhaseRun s2 = w.start(Phase::sync, "syncing data");
  w.clock.advance(std::chrono::seconds(1));
  w.finish(s2, State::paused);
  events = w.step(st);
  CHECK(kinds(events) == std::vector<WatchEvent::Kind>{WatchEvent::Kind::phase_done,
                                                       WatchEvent::Kind::phase_run,
                                                       WatchEvent::Kind::phase_done});
  // Nobody takes the next phase: after the grace period it ends where it stands.
  w.clock.advance(k_watch_grace - std::chrono::milliseconds(1));
  CHECK(w.step(st).empty());
  w.clock.advance(std::chrono::milliseconds(1));
  events = w.step(st);
  REQUIRE(events.size() == 1);
  CHECK(end_line(events[0]) == "OK - ready for migration sync or migration switch");
}

TEST_CASE("migration::watch_step milestones", "[migration]") {
  World w;
  w.start(Phase::switch_, "switching instances");
  WatchState st = start_watch(w.store, k_vm);
  w.step(st);
  w.clock.advance(std::chrono::seconds(1));
  w.progress(Phase::switch_, 3, 100, 0, false, "stopping the instance");
  const auto events = w.step(st);
  REQUIRE(events.size() == 1);
  CHECK(events[0].kind == WatchEvent::Kind::milestone);
  CHECK(events[0].message == "stopping the instance");
  CHECK(to_json(events[0])["message"] == "stopping the instance");
}

TEST_CASE("migration::watch_step shows every step message of the journal, in order",
          "[migration]") {
  World w;
  const state::PhaseRun run = w.start(Phase::switch_, "switching instances");
  auto journal = [&](const std::string& name, const std::string& message, bool done) {
    state::Step s;
    s.migration_id = w.m.id;
    s.phase_run_id = run.id;
    s.name = name;
    s.started = w.clock.iso();
    if (!message.empty()) {
      s.details["message"] = message;
    }
    const std::int64_t id = w.store.begin_step(s);
    if (done) {
      w.store.end_step(id, "ok", s.details);
    }
  };
  journal("switch.prepare", "", true);
  journal("switch.reserve_ips", "reserving the IP addresses for the instance", true);
  journal("switch.stage_target", "setting up the target instance (hidden)", false);
  WatchState st = start_watch(w.store, k_vm);
  // At the first look: the phase run, then its step messages so far (a watch started mid-switch
  // catches up).
  std::vector<WatchEvent> events = w.step(st);
  REQUIRE(events.size() == 3);
  CHECK(events[0].kind == WatchEvent::Kind::phase_run);
  CHECK(events[1].kind == WatchEvent::Kind::milestone);
  CHECK(events[1].message == "reserving the IP addresses for the instance");
  CHECK(events[2].message == "setting up the target instance (hidden)");
  // Three steps between two looks, one without a message: both messages, in order, once.
  journal("switch.stop_source", "stopping the instance", true);
  journal("switch.check_target", "", true);
  journal("switch.hide_source", "hiding the original instance", true);
  events = w.step(st);
  REQUIRE(events.size() == 2);
  CHECK(events[0].message == "stopping the instance");
  CHECK(events[0].phase == "switch");
  CHECK(events[1].message == "hiding the original instance");
  CHECK(to_json(events[1])["message"] == "hiding the original instance");
  CHECK(w.step(st).empty());
}

TEST_CASE("migration::end_line", "[migration]") {
  WatchEvent e;
  e.type = WatchEvent::Type::end;
  e.phase = "begin";
  e.state = "paused";
  CHECK(end_line(e) == "OK - ready for migration sync");
  e.phase = "finalize";
  e.state = "successful";
  CHECK(end_line(e) == "OK - finalize was successful");
  e.state = "failed";
  CHECK(end_line(e) == "Failure: finalize failed");
}
