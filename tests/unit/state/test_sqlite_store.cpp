// SPDX-License-Identifier: MPL-2.0
#include "fakes/child_process.hpp"

#include <zmigrate/state/sqlite_store.hpp>
#include <zmigrate/util/error.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <sqlite3.h>

using namespace zmigrate;
using namespace zmigrate::state;
namespace fs = std::filesystem;

namespace {

// Wall time that moves only when a test says so.
class StepClock final : public Clock {
public:
  std::chrono::steady_clock::time_point now() const override {
    return std::chrono::steady_clock::time_point(m_wall.time_since_epoch());
  }
  std::chrono::system_clock::time_point wall_now() const override { return m_wall; }
  void sleep_for(std::chrono::milliseconds d) override { m_wall += d; }
  void advance(std::chrono::milliseconds d) { m_wall += d; }

private:
  std::chrono::system_clock::time_point m_wall = parse_iso8601("2026-11-22T01:00:00.000Z");
};

// A private directory per test, removed afterwards.
class TempDir {
public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "zmigrate-state-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    m_path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(m_path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (m_path / name).string(); }

private:
  fs::path m_path;
};

// An independent connection, for looking at the file the way another process would.
class RawDb {
public:
  explicit RawDb(const std::string& path) {
    REQUIRE(sqlite3_open_v2(path.c_str(), &m_db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
    sqlite3_busy_timeout(m_db, 5000);
  }
  ~RawDb() { sqlite3_close_v2(m_db); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;
  std::string scalar(const char* sql) {
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(m_db, sql, -1, &st, nullptr) == SQLITE_OK);
    std::string out;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) != nullptr) {
      out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return out;
  }
  int exec(const char* sql) { return sqlite3_exec(m_db, sql, nullptr, nullptr, nullptr); }

private:
  sqlite3* m_db = nullptr;
};

Migration make_migration(const std::string& id, const std::string& vm, const std::string& created) {
  Migration m;
  m.id = id;
  m.vm_uuid = vm;
  m.source_server_uuid = "src-cn";
  m.target_server_uuid = "dst-cn";
  m.phase = Phase::begin;
  m.state = State::running;
  m.created = created;
  m.data = {{"vm", {{"brand", "joyent"}, {"autoboot", true}}}};
  return m;
}

std::vector<std::string> ids(const std::vector<Migration>& ms) {
  std::vector<std::string> out;
  for (const Migration& m : ms) {
    out.push_back(m.id);
  }
  return out;
}

} // namespace

TEST_CASE("state::SqliteStateStore::default_path", "[state]") {
  CHECK(SqliteStateStore::default_path("/var/zmigrate") == "/var/zmigrate/zmigrate.db");
  CHECK(SqliteStateStore::default_path("/var/zmigrate/") == "/var/zmigrate/zmigrate.db");
}

TEST_CASE("state::SqliteStateStore migrations", "[state]") {
  StepClock clock;
  SqliteStateStore store(":memory:", clock);

  SECTION("insert then find returns every field, history included") {
    Migration m = make_migration("m1", "vm1", "2026-11-22T00:00:00.000Z");
    m.automatic = true;
    m.num_sync_phases = 2;
    m.error = "boom";
    m.finished = "2026-11-22T00:10:00.000Z";
    PhaseRun r;
    r.phase = Phase::begin;
    r.state = State::successful;
    r.message = "reserving instance";
    r.details = {{"k", "v"}};
    m.history.push_back(r);
    store.insert_migration(m);

    const std::optional<Migration> got = store.find_migration("m1");
    REQUIRE(got);
    CHECK(got->vm_uuid == "vm1");
    CHECK(got->source_server_uuid == "src-cn");
    CHECK(got->target_server_uuid == "dst-cn");
    CHECK(got->phase == Phase::begin);
    CHECK(got->state == State::running);
    CHECK(got->automatic);
    CHECK_FALSE(got->archived);
    CHECK(got->num_sync_phases == 2);
    CHECK(got->created == "2026-11-22T00:00:00.000Z");
    CHECK(got->finished == "2026-11-22T00:10:00.000Z");
    CHECK(got->error == "boom");
    CHECK(got->data == m.data);
    REQUIRE(got->history.size() == 1);
    CHECK(got->history[0].id > 0);
    CHECK(got->history[0].message == "reserving instance");
    CHECK(got->history[0].started == "2026-11-22T01:00:00.000Z"); // stamped by the clock
    CHECK(got->history[0].details == nlohmann::json{{"k", "v"}});
    CHECK_FALSE(store.find_migration("nope"));
  }

  SECTION("an empty created timestamp is stamped") {
    store.insert_migration(make_migration("m1", "vm1", ""));
    CHECK(store.find_migration("m1")->created == "2026-11-22T01:00:00.000Z");
  }

  SECTION("update rewrites scalars and data, not history") {
    Migration m = make_migration("m1", "vm1", "2026-11-22T00:00:00.000Z");
    store.insert_migration(m);
    store.add_phase_run("m1", PhaseRun{});
    m.phase = Phase::sync;
    m.state = State::paused;
    m.num_sync_phases = 1;
    m.target_server_uuid = "other-cn";
    m.data["reserved_nics"] = nlohmann::json::array({{{"ip", "10.0.0.5"}}});
    m.history.clear();
    m.created.clear(); // keeps the stored one
    store.update_migration(m);
    const Migration got = *store.find_migration("m1");
    CHECK(got.created == "2026-11-22T00:00:00.000Z");
    CHECK(got.phase == Phase::sync);
    CHECK(got.state == State::paused);
    CHECK(got.num_sync_phases == 1);
    CHECK(got.target_server_uuid == "other-cn");
    CHECK(got.data["reserved_nics"][0]["ip"] == "10.0.0.5");
    CHECK(got.history.size() == 1);
  }

  SECTION("update of an unknown migration fails") {
    try {
      Migration ghost = make_migration("ghost", "vm1", "x");
      store.update_migration(ghost);
      FAIL("no exception");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::state);
      CHECK(e.subject() == "migration ghost");
    }
  }

  SECTION("the version counts updates; an update from an outdated copy is refused") {
    store.insert_migration(make_migration("m1", "vm1", "2026-11-22T00:00:00.000Z"));
    Migration first = *store.find_migration("m1");
    Migration second = *store.find_migration("m1");
    CHECK(first.version == 0);
    first.state = State::paused;
    store.update_migration(first);
    CHECK(first.version == 1); // the caller's copy follows the stored row
    CHECK(store.find_migration("m1")->version == 1);
    store.update_migration(first); // and stays usable for the next update
    CHECK(first.version == 2);
    second.state = State::failed;
    second.error = "from a copy read before the other process wrote";
    try {
      store.update_migration(second);
      FAIL("no exception");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::state);
      CHECK(e.subject() == "migration m1");
      CHECK_THAT(e.reason(), Catch::Contains("lost update refused"));
      CHECK_THAT(e.reason(), Catch::Contains("version 2 in the state database, 0 when"));
    }
    CHECK(second.version == 0);
    const Migration stored = *store.find_migration("m1");
    CHECK(stored.state == State::paused); // nothing of the stale copy was written
    CHECK(stored.error.empty());
    CHECK(stored.version == 2);
  }

  SECTION("one active migration per instance; archived ones do not count") {
    Migration old = make_migration("m-old", "vm1", "2026-11-20T00:00:00.000Z");
    old.archived = true;
    old.phase = Phase::abort;
    old.state = State::successful;
    store.insert_migration(old);
    store.insert_migration(make_migration("m1", "vm1", "2026-11-22T00:00:00.000Z"));
    try {
      store.insert_migration(make_migration("m2", "vm1", "2026-11-22T00:01:00.000Z"));
      FAIL("no exception");
    } catch (const PreconditionError& e) {
      CHECK(e.subject() == "instance vm1");
      CHECK_THAT(e.reason(), Catch::Contains("m1"));
    }
    CHECK_THROWS_AS(store.insert_migration(make_migration("m1", "vm2", "x")), Error);
    // Reactivating the archived one would make two active migrations.
    old.archived = false;
    CHECK_THROWS_AS(store.update_migration(old), PreconditionError);
  }

  SECTION("find_active_for_vm and find_latest_for_vm") {
    Migration a = make_migration("a", "vm1", "2026-11-20T00:00:00.000Z");
    store.insert_migration(a);
    CHECK(store.find_active_for_vm("vm1")->id == "a");
    a.archived = true;
    a.phase = Phase::finalize;
    a.state = State::successful;
    store.update_migration(a);
    CHECK_FALSE(store.find_active_for_vm("vm1"));
    CHECK(store.find_latest_for_vm("vm1")->id == "a");
    store.insert_migration(make_migration("b", "vm1", "2026-11-21T00:00:00.000Z"));
    CHECK(store.find_active_for_vm("vm1")->id == "b");
    CHECK(store.find_latest_for_vm("vm1")->id == "b");
    CHECK_FALSE(store.find_latest_for_vm("vm2"));
  }

  SECTION("list: newest first, archived filter, state and server filters") {
    Migration a = make_migration("a", "vm1", "2026-11-20T00:00:00.000Z");
    a.archived = true;
    a.state = State::successful;
    store.insert_migration(a);
    Migration b = make_migration("b", "vm2", "2026-11-22T00:00:00.000Z");
    b.state = State::paused;
    store.insert_migration(b);
    Migration c = make_migration("c", "vm3", "2026-11-21T00:00:00.000Z");
    c.source_server_uuid = "cn-x";
    c.target_server_uuid = "cn-y";
    store.insert_migration(c);
    // Same timestamp as b: insertion order breaks the tie, newest first.
    store.insert_migration(make_migration("d", "vm4", "2026-11-22T00:00:00.000Z"));

    CHECK(ids(store.list_migrations({})) == std::vector<std::string>{"d", "b", "c"});
    ListFilter all;
    all.include_archived = true;
    CHECK(ids(store.list_migrations(all)) == std::vector<std::string>{"d", "b", "c", "a"});
    ListFilter paused;
    paused.state = State::paused;
    CHECK(ids(store.list_migrations(paused)) == std::vector<std::string>{"b"});
    ListFilter by_target;
    by_target.server_uuid = "cn-y";
    CHECK(ids(store.list_migrations(by_target)) == std::vector<std::string>{"c"});
    ListFilter by_source;
    by_source.server_uuid = "cn-x";
    CHECK(ids(store.list_migrations(by_source)) == std::vector<std::string>{"c"});
    ListFilter successful;
    successful.state = State::successful;
    CHECK(store.list_migrations(successful).empty());
    successful.include_archived = true;
    CHECK(ids(store.list_migrations(successful)) == std::vector<std::string>{"a"});
  }
}

TEST_CASE("state::SqliteStateStore phase runs", "[state]") {
  StepClock clock;
  SqliteStateStore store(":memory:", clock);
  store.insert_migration(make_migration("m1", "vm1", "2026-11-22T00:00:00.000Z"));

  PhaseRun r;
  r.phase = Phase::sync;
  r.message = "syncing data";
  r.total_progress = 5'000'000'000'000ULL; // bytes beyond 32 bits
  const std::int64_t id1 = store.add_phase_run("m1", r);
  r.phase = Phase::switch_;
  r.message = "switching instances";
  const std::int64_t id2 = store.add_phase_run("m1", r);
  CHECK(id2 > id1);

  PhaseRun done = store.find_migration("m1")->history[0];
  CHECK(done.id == id1);
  CHECK(done.total_progress == 5'000'000'000'000ULL);
  done.state = State::successful;
  done.current_progress = done.total_progress;
  done.finished = "2026-11-22T01:05:00.000Z";
  done.details = {{"bytes", 123}};
  store.update_phase_run("m1", done);

  const Migration m = *store.find_migration("m1");
  REQUIRE(m.history.size() == 2);
  CHECK(m.history[0].state == State::successful);
  CHECK(m.history[0].current_progress == 5'000'000'000'000ULL);
  CHECK(m.history[0].finished == "2026-11-22T01:05:00.000Z");
  CHECK(m.history[0].details["bytes"] == 123);
  CHECK(m.history[1].phase == Phase::switch_);
  CHECK(m.history[1].state == State::running);

  CHECK_THROWS_AS(store.add_phase_run("ghost", r), Error);
  done.id = 999;
  CHECK_THROWS_AS(store.update_phase_run("m1", done), Error);
  done.id = id1;
  CHECK_THROWS_AS(store.update_phase_run("other", done), Error);
}

TEST_CASE("state::SqliteStateStore journal", "[state]") {
  StepClock clock;
  SqliteStateStore store(":memory:", clock);
  store.insert_migration(make_migration("m1", "vm1", "2026-11-22T00:00:00.000Z"));
  const std::int64_t run1 = store.add_phase_run("m1", PhaseRun{});
  const std::int64_t run2 = store.add_phase_run("m1", PhaseRun{});

  Step s;
  s.migration_id = "m1";
  s.phase_run_id = run1;
  s.name = "switch.stop_source";
  s.status = "ignored: begin_step always writes running";
  s.details = {{"attempt", 1}, {"host", "cn1"}};
  const std::int64_t a = store.begin_step(s);
  CHECK_FALSE(store.completed_step(run1, "switch.stop_source"));

  clock.advance(std::chrono::seconds(2));
  store.end_step(a, "failed", {{"attempt", 1}, {"error", "timeout"}});
  CHECK_FALSE(store.completed_step(run1, "switch.stop_source"));

  const std::int64_t b = store.begin_step(s);
  store.end_step(b, "ok", {{"attempt", 2}});
  s.name = "switch.hide_source";
  const std::int64_t c = store.begin_step(s);
  s.phase_run_id = 0; // a step outside any run
  s.name = "cleanup.keys";
  const std::int64_t d = store.begin_step(s);

  const std::vector<Step> journal = store.steps("m1");
  REQUIRE(journal.size() == 4);
  CHECK(journal[0].id == a);
  CHECK(journal[0].status == "failed");
  CHECK(journal[0].started == "2026-11-22T01:00:00.000Z");
  CHECK(journal[0].finished == "2026-11-22T01:00:02.000Z");
  // end_step merges its details into those given at begin.
  CHECK(journal[0].details ==
        nlohmann::json{{"attempt", 1}, {"host", "cn1"}, {"error", "timeout"}});
  CHECK(journal[1].status == "ok");
  CHECK(journal[1].details["attempt"] == 2);
  CHECK(journal[2].id == c);
  CHECK(journal[2].status == "running");
  CHECK(journal[2].finished.empty());
  CHECK(journal[3].id == d);
  CHECK(journal[3].phase_run_id == 0);

  const std::optional<Step> ok = store.completed_step(run1, "switch.stop_source");
  REQUIRE(ok);
  CHECK(ok->id == b);
  CHECK_FALSE(store.completed_step(run2, "switch.stop_source"));
  CHECK_FALSE(store.completed_step(run1, "switch.hide_source"));
  CHECK(store.steps("other").empty());

  CHECK_THROWS_AS(store.end_step(9999, "ok", {}), Error);
  s.phase_run_id = 9999;
  CHECK_THROWS_AS(store.begin_step(s), Error);
  s.phase_run_id = 0;
  s.migration_id = "ghost";
  CHECK_THROWS_AS(store.begin_step(s), Error);
}

TEST_CASE("state::SqliteStateStore ledger", "[state]") {
  StepClock clock;
  SqliteStateStore store(":memory:", clock);
  store.insert_migration(make_migration("m1", "vm1", "2026-11-22T00:00:00.000Z"));
  store.insert_migration(make_migration("m2", "vm2", "2026-11-22T00:00:00.000Z"));

  Artefact snap;
  snap.migration_id = "m1";
  snap.kind = "snapshot";
  snap.host = "cn1";
  snap.name = "zones/vm1@vm-migration-1";
  const std::int64_t s1 = store.record_artefact(snap);
  snap.details = {{"recursive", true}};
  CHECK(store.record_artefact(snap) == s1); // a re-run step records it once
  Artefact key;
  key.migration_id = "m1";
  key.kind = "authorized_key";
  key.host = "cn2";
  key.name = "zmigrate-m1";
  const std::int64_t k1 = store.record_artefact(key);
  Artefact other = snap;
  other.migration_id = "m2";
  other.name = "zones/vm2@vm-migration-1";
  const std::int64_t o1 = store.record_artefact(other);

  std::vector<Artefact> live = store.live_artefacts("m1");
  REQUIRE(live.size() == 2);
  CHECK(live[0].id == s1);
  CHECK(live[0].details == nlohmann::json{{"recursive", true}});
  CHECK(live[0].created == "2026-11-22T01:00:00.000Z");
  CHECK(live[0].removed.empty());
  CHECK(live[1].id == k1);

  CHECK(store.all_live_artefacts("snapshot").size() == 2);
  CHECK(store.all_live_artefacts("").size() == 3);
  CHECK(store.all_live_artefacts("hold").empty());

  clock.advance(std::chrono::minutes(1));
  store.mark_artefact_removed(s1);
  clock.advance(std::chrono::minutes(1));
  store.mark_artefact_removed(s1); // idempotent; keeps the first time
  live = store.live_artefacts("m1");
  REQUIRE(live.size() == 1);
  CHECK(live[0].id == k1);
  const std::vector<Artefact> snaps = store.all_live_artefacts("snapshot");
  REQUIRE(snaps.size() == 1);
  CHECK(snaps[0].id == o1);

  // Once removed, the same name may be recorded again as a new artefact.
  CHECK(store.record_artefact(snap) != s1);

  CHECK_THROWS_AS(store.mark_artefact_removed(424242), Error);
  snap.migration_id = "ghost";
  CHECK_THROWS_AS(store.record_artefact(snap), Error);
}

TEST_CASE("state::SqliteStateStore progress", "[state]") {
  StepClock clock;
  SqliteStateStore store(":memory:", clock);
  store.insert_migration(make_migration("m1", "vm1", "2026-11-22T00:00:00.000Z"));
  CHECK_FALSE(store.get_progress("m1"));

  Progress p;
  p.migration_id = "m1";
  p.current = 10;
  p.total = 100;
  p.total_approximate = true;
  p.bytes_per_second = 1.5;
  p.eta_ms = 60;
  p.message = "zones/vm1";
  store.put_progress(p);
  Progress got = *store.get_progress("m1");
  CHECK(got.phase == Phase::sync);
  CHECK(got.current == 10);
  CHECK(got.total == 100);
  CHECK(got.total_approximate);
  CHECK(got.bytes_per_second == 1.5);
  CHECK(got.eta_ms == 60);
  CHECK(got.message == "zones/vm1");
  CHECK(got.updated == "2026-11-22T01:00:00.000Z");

  clock.advance(std::chrono::seconds(1));
  p.phase = Phase::switch_;
  p.current = 55;
  p.total_approximate = false;
  p.eta_ms = -1;
  p.message = "filesystem sync finished";
  store.put_progress(p);
  got = *store.get_progress("m1");
  CHECK(got.phase == Phase::switch_);
  CHECK(got.current == 55);
  CHECK_FALSE(got.total_approximate);
  CHECK(got.eta_ms == -1);
  CHECK(got.updated == "2026-11-22T01:00:01.000Z");

  p.migration_id = "ghost";
  CHECK_THROWS_AS(store.put_progress(p), Error);
}

TEST_CASE("state::SqliteStateStore leases", "[state]") {
  StepClock clock;
  SqliteStateStore store(":memory:", clock);
  const int me = static_cast<int>(getpid());
  const int parent = static_cast<int>(getppid()); // alive, on this host, not us

  Lease mine;
  mine.migration_id = "m1";
  mine.operation = "sync";

  SECTION("a free lease is taken; defaults are this host and this pid") {
    CHECK_FALSE(store.try_acquire_lease(mine, 60));
    const Lease held = *store.find_lease("m1");
    CHECK(held.pid == me);
    CHECK_FALSE(held.host.empty());
    CHECK(held.operation == "sync");
    CHECK(held.heartbeat == "2026-11-22T01:00:00.000Z");
    // Taking it again is fine (same holder) and refreshes it.
    mine.operation = "switch";
    CHECK_FALSE(store.try_acquire_lease(mine, 60));
    CHECK(store.find_lease("m1")->operation == "switch");
  }

  SECTION("a live holder on this host is reported and keeps the lease") {
    Lease theirs = mine;
    theirs.pid = parent;
    CHECK_FALSE(store.try_acquire_lease(theirs, 60));
    const std::optional<Lease> holder = store.try_acquire_lease(mine, 60);
    REQUIRE(holder);
    CHECK(holder->pid == parent);
    CHECK(holder->operation == "sync");
    CHECK(store.find_lease("m1")->pid == parent);
  }

  SECTION("heartbeat and release act only on our own lease") {
    CHECK_FALSE(store.try_acquire_lease(mine, 60));
    clock.advance(std::chrono::seconds(30));
    store.heartbeat("m1", me);
    CHECK(store.find_lease("m1")->heartbeat == "2026-11-22T01:00:30.000Z");
    store.release_lease("m1", parent); // not theirs: nothing happens
    CHECK(store.find_lease("m1"));
    store.release_lease("m1", me);
    CHECK_FALSE(store.find_lease("m1"));
    store.release_lease("m1", me); // idempotent
  }

  SECTION("heartbeat and release follow the host the lease was taken for") {
    Lease named = mine;
    named.host = "headnode-by-config";
    CHECK_FALSE(store.try_acquire_lease(named, 60));
    clock.advance(std::chrono::seconds(5));
    store.heartbeat("m1", me);
    CHECK(store.find_lease("m1")->heartbeat == "2026-11-22T01:00:05.000Z");
    store.release_lease("m1", 0); // 0 = this process
    CHECK_FALSE(store.find_lease("m1"));
  }

  SECTION("a dead holder's lease is taken over") {
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      _exit(0);
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child); // reaped: kill(child, 0) now gives ESRCH
    Lease dead = mine;
    dead.pid = static_cast<int>(child);
    CHECK_FALSE(store.try_acquire_lease(dead, 0));
    CHECK(store.find_lease("m1")->pid == child);
    CHECK_FALSE(store.try_acquire_lease(mine, 0)); // 0: no age limit, the pid check alone
    CHECK(store.find_lease("m1")->pid == me);
  }

  SECTION("another host's stale lease is taken over only when asked to") {
    Lease remote = mine;
    remote.host = "some-other-headnode";
    remote.pid = 12345; // not checked: it is not our host
    CHECK_FALSE(store.try_acquire_lease(remote, 60));
    clock.advance(std::chrono::seconds(60));
    std::optional<Lease> holder = store.try_acquire_lease(mine, 60, true);
    REQUIRE(holder); // exactly 60 s old: still fresh, even with take_over
    CHECK_FALSE(holder->stale_remote);
    clock.advance(std::chrono::seconds(1));
    holder = store.try_acquire_lease(mine, 60); // stale, but no take_over
    REQUIRE(holder);
    CHECK(holder->stale_remote);
    CHECK(holder->host == "some-other-headnode");
    CHECK(holder->pid == 12345);
    CHECK(store.find_lease("m1")->pid == 12345);
    CHECK_FALSE(store.try_acquire_lease(mine, 60, true));
    CHECK(store.find_lease("m1")->pid == me);

    SECTION("the old holder learns it lost the lease when it next beats") {
      try {
        // Pretend to be the old holder by beating for a pid that no longer holds it.
        store.heartbeat("m1", parent);
        FAIL("no exception");
      } catch (const PreconditionError& e) {
        CHECK(e.subject() == "migration m1");
        CHECK_THAT(e.reason(), Catch::Contains("lost the lease"));
        CHECK_THAT(e.reason(), Catch::Contains(std::to_string(me)));
      }
    }
  }

  SECTION("a live local holder is never stale, however old its heartbeat") {
    Lease silent = mine;
    silent.pid = parent;
    CHECK_FALSE(store.try_acquire_lease(silent, 60));
    clock.advance(std::chrono::hours(24 * 365)); // a year without a heartbeat
    for (const bool take_over : {false, true}) {
      const std::optional<Lease> holder = store.try_acquire_lease(mine, 60, take_over);
      REQUIRE(holder);
      CHECK(holder->pid == parent);
      CHECK_FALSE(holder->stale_remote);
    }
    CHECK(store.find_lease("m1")->pid == parent);
  }

  SECTION("a local holder we may not signal (EPERM) is alive") {
    if (getuid() == 0) {
      SUCCEED("skipped: root may signal every process");
      return;
    }
    Lease init = mine;
    init.pid = 1; // init: alive, and not ours to signal
    CHECK_FALSE(store.try_acquire_lease(init, 60));
    clock.advance(std::chrono::hours(1));
    const std::optional<Lease> holder = store.try_acquire_lease(mine, 60, true);
    REQUIRE(holder);
    CHECK(holder->pid == 1);
  }

  SECTION("a remote holder with a fresh heartbeat is refused even with take_over") {
    Lease remote = mine;
    remote.host = "some-other-headnode";
    remote.pid = me; // the same number as ours means nothing on another host
    CHECK_FALSE(store.try_acquire_lease(remote, 60));
    clock.advance(std::chrono::seconds(30));
    const std::optional<Lease> holder = store.try_acquire_lease(mine, 60, true);
    REQUIRE(holder);
    CHECK(holder->host == "some-other-headnode");
    CHECK_FALSE(holder->stale_remote);
  }

  SECTION("leases are independent per key") {
    Lease theirs = mine;
    theirs.pid = parent;
    CHECK_FALSE(store.try_acquire_lease(theirs, 60));
    Lease other = mine;
    other.migration_id = "vm:vm1";
    CHECK_FALSE(store.try_acquire_lease(other, 60));
  }
}

TEST_CASE("state::SqliteStateStore on disk", "[state]") {
  TempDir dir;
  StepClock clock;
  const std::string path = dir.file("a/b/zmigrate.db");

  SECTION("creates private parents and file, WAL on, schema current") {
    {
      SqliteStateStore store(path, clock);
      CHECK(store.path() == path);
      CHECK(store.schema_version() == SqliteStateStore::k_schema_version);
      store.insert_migration(make_migration("m1", "vm1", "2026-11-22T00:00:00.000Z"));
      CHECK(fs::exists(path + "-wal"));
      RawDb raw(path);
      CHECK(raw.scalar("PRAGMA journal_mode") == "wal");
      CHECK(raw.scalar("PRAGMA user_version") ==
            std::to_string(SqliteStateStore::k_schema_version));
    }
    struct stat st {};
    REQUIRE(stat(dir.file("a").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0700);
    REQUIRE(stat(dir.file("a/b").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0700);
    REQUIRE(stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);

    SqliteStateStore again(path, clock);
    CHECK(again.find_migration("m1"));
  }

  SECTION("the default-clock constructor works") {
    SqliteStateStore store(path);
    store.insert_migration(make_migration("m1", "vm1", ""));
    CHECK_FALSE(store.find_migration("m1")->created.empty());
  }

  SECTION("an empty (version 0) file is initialised") {
    fs::create_directories(dir.file("a/b"));
    std::ofstream(path).close();
    REQUIRE(fs::file_size(path) == 0);
    SqliteStateStore store(path, clock);
    CHECK(store.schema_version() == SqliteStateStore::k_schema_version);
    store.insert_migration(make_migration("m1", "vm1", "2026-11-22T00:00:00.000Z"));
  }

  SECTION("an older schema is upgraded in place, keeping its data") {
    const std::span<const SchemaUpgrade> real = schema_upgrades();
    REQUIRE(real.size() == static_cast<std::size_t>(SqliteStateStore::k_schema_version));
    {
      SqliteStateStore v1(path, clock, real.first(1));
      // A row as a version 1 binary wrote it (today's insert_migration knows later columns).
      RawDb raw(path);
      REQUIRE(raw.exec("INSERT INTO migrations (id, vm_uuid, phase, state, created) VALUES "
                       "('m1', 'vm1', 'begin', 'running', '2026-11-22T00:00:00.000Z')") ==
              SQLITE_OK);
    }

    SECTION("version 2 adds the update counter, 0 for existing rows") {
      SqliteStateStore store(path, clock);
      CHECK(store.schema_version() == SqliteStateStore::k_schema_version);
      Migration m = *store.find_migration("m1");
      CHECK(m.version == 0);
      m.state = State::paused;
      store.update_migration(m);
      CHECK(store.find_migration("m1")->version == 1);
    }

    // A pretend future binary that knows one more version.
    std::vector<SchemaUpgrade> future(real.begin(), real.end());
    const int next = SqliteStateStore::k_schema_version + 1;
    future.push_back({next, "ALTER TABLE migrations ADD COLUMN note TEXT NOT NULL DEFAULT '';"
                            "CREATE TABLE extra (x INTEGER);"});
    {
      SqliteStateStore upgraded(path, clock, future);
      CHECK(upgraded.schema_version() == next);
      CHECK(upgraded.find_migration("m1")->vm_uuid == "vm1");
      RawDb raw(path);
      CHECK(raw.scalar("SELECT note FROM migrations WHERE id = 'm1'").empty());
      CHECK(raw.scalar("SELECT count(*) FROM extra") == "0");
    }

    SECTION("and this binary then refuses the newer database") {
      try {
        SqliteStateStore store(path, clock);
        FAIL("no exception");
      } catch (const Error& e) {
        CHECK(e.exit_code() == ExitCode::state);
        CHECK(e.subject() == path);
        CHECK(e.reason() ==
              "schema version " + std::to_string(next) + " is newer than this zmigrate supports (" +
                  std::to_string(SqliteStateStore::k_schema_version) + "); upgrade zmigrate");
      }
    }
  }

  SECTION("a failing upgrade leaves the database as it was") {
    {
      SqliteStateStore v1(path, clock);
      v1.insert_migration(make_migration("m1", "vm1", "2026-11-22T00:00:00.000Z"));
    }
    std::vector<SchemaUpgrade> broken(schema_upgrades().begin(), schema_upgrades().end());
    broken.push_back(
        {SqliteStateStore::k_schema_version + 1, "CREATE TABLE ok_so_far (x); THIS IS NOT SQL;"});
    try {
      SqliteStateStore store(path, clock, broken);
      FAIL("no exception");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::state);
      CHECK_THAT(e.reason(), Catch::Contains("cannot upgrade the state database"));
    }
    SqliteStateStore store(path, clock);
    CHECK(store.schema_version() == SqliteStateStore::k_schema_version);
    CHECK(store.find_migration("m1"));
    RawDb raw(path);
    CHECK(raw.scalar("SELECT count(*) FROM sqlite_master WHERE name = 'ok_so_far'") == "0");
  }

  SECTION("a database from a far newer zmigrate is refused") {
    { SqliteStateStore store(path, clock); }
    {
      RawDb raw(path);
      REQUIRE(raw.exec("PRAGMA user_version = 99") == SQLITE_OK);
    }
    try {
      SqliteStateStore store(path, clock);
      FAIL("no exception");
    } catch (const Error& e) {
      CHECK(e.what() == path + ": schema version 99 is newer than this zmigrate supports (" +
                            std::to_string(SqliteStateStore::k_schema_version) +
                            "); upgrade zmigrate");
    }
  }

  SECTION("unusable paths give a clear error") {
    const std::string file = dir.file("plain-file");
    std::ofstream(file) << "not a directory";
    try {
      SqliteStateStore store(file + "/zmigrate.db", clock);
      FAIL("no exception");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::state);
      CHECK(e.subject() == file + "/zmigrate.db");
      CHECK_THAT(e.reason(), Catch::StartsWith("cannot open state database: "));
      CHECK_THAT(e.reason(), Catch::EndsWith("; check permissions or set --state-dir"));
    }
    try {
      SqliteStateStore store(dir.file(""), clock); // a directory
      FAIL("no exception");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::state);
      CHECK_THAT(e.reason(), Catch::StartsWith("cannot open state database: "));
    }
  }

  SECTION("a file that is not a database is refused") {
    fs::create_directories(dir.file("a/b"));
    std::ofstream(path) << std::string(4096, 'x');
    try {
      SqliteStateStore store(path, clock);
      FAIL("no exception");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::state);
      CHECK_THAT(e.reason(), Catch::StartsWith("cannot open state database: "));
      CHECK_THAT(e.reason(), Catch::Contains("not a usable zmigrate state database"));
    }
  }
}

TEST_CASE("state::SqliteStateStore refuses a corrupt database and leaves it as it was", "[state]") {
  TempDir dir;
  StepClock clock;
  const std::string path = dir.file("zmigrate.db");
  {
    SqliteStateStore store(path, clock);
    for (int i = 0; i < 200; ++i) {
      store.insert_migration(make_migration(fmt::format("m{:03}", i), fmt::format("vm{:03}", i),
                                            "2026-01-01T00:00:00.000Z"));
      Migration done = *store.find_migration(fmt::format("m{:03}", i));
      done.archived = true; // one active migration per instance: end each
      store.update_migration(done);
    }
  }
  auto slurp = [](const std::string& f) {
    std::ifstream in(f, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  std::string bytes = slurp(path);
  REQUIRE(bytes.size() > 4 * 4096);
  // Every page but the first (the header and the schema) overwritten with noise.
  for (std::size_t i = 4096; i < bytes.size(); ++i) {
    bytes[i] = static_cast<char>((i * 7919U) & 0xffU);
  }
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  fs::remove(path + "-wal");
  fs::remove(path + "-shm");
  bool refused = false;
  try {
    SqliteStateStore store(path, clock);
    ListFilter all;
    all.include_archived = true;
    (void)store.list_migrations(all);
    (void)store.find_active_for_vm("vm001");
  } catch (const Error& e) {
    refused = true;
    INFO(e.what());
    CHECK(e.exit_code() == ExitCode::state);
    CHECK(e.subject() == path);
    CHECK(std::string(e.what()).find('\n') == std::string::npos);
  }
  CHECK(refused);
  CHECK(slurp(path) == bytes); // never "repaired" by zmigrate: the operator decides
}

TEST_CASE("state::SqliteStateStore crash safety", "[state]") {
  TempDir dir;
  StepClock clock;
  const std::string path = dir.file("zmigrate.db");
  {
    SqliteStateStore init(path, clock); // created by the parent so the child only writes
  }

  // The child commits some records, takes the lease, then dies in the middle of a write
  // transaction without closing anything.
  const int rc = fakes::exit_code_of(fakes::run_in_child([&] {
    SqliteStateStore store(path, clock);
    Migration m = make_migration("m1", "vm1", "2026-11-22T00:00:00.000Z");
    store.insert_migration(m);
    const std::int64_t run = store.add_phase_run("m1", PhaseRun{});
    Step s;
    s.migration_id = "m1";
    s.phase_run_id = run;
    s.name = "sync.send";
    const std::int64_t step = store.begin_step(s);
    store.end_step(step, "ok", {{"bytes", 1}});
    Lease l;
    l.migration_id = "m1";
    l.operation = "sync";
    if (store.try_acquire_lease(l, 60)) {
      return 3;
    }
    RawDb raw(path);
    raw.exec("BEGIN IMMEDIATE");
    raw.exec("UPDATE migrations SET state = 'successful' WHERE id = 'm1'");
    raw.exec("INSERT INTO steps (migration_id, name, status, started) "
             "VALUES ('m1', 'half.done', 'running', 'x')");
    _exit(0);
  }));
  REQUIRE(rc == 0);

  SqliteStateStore store(path, clock);
  const std::optional<Migration> m = store.find_migration("m1");
  REQUIRE(m);
  CHECK(m->state == State::running); // the uncommitted update is gone
  REQUIRE(m->history.size() == 1);
  const std::vector<Step> journal = store.steps("m1");
  REQUIRE(journal.size() == 1);
  CHECK(journal[0].name == "sync.send");
  CHECK(journal[0].status == "ok");
  // The child's lease survives it, and is stale because its pid is gone.
  REQUIRE(store.find_lease("m1"));
  Lease l;
  l.migration_id = "m1";
  l.operation = "sync";
  CHECK_FALSE(store.try_acquire_lease(l, 3600));
  // The database is writable again: the dead writer left no lock behind.
  Progress p;
  p.migration_id = "m1";
  store.put_progress(p);
}

TEST_CASE("state::SqliteStateStore: measurements are their own kind; a limit keeps the newest",
          "[state]") {
  StepClock clock;
  SqliteStateStore store(":memory:", clock);
  store.insert_migration(make_migration("m1", "vm1", "2026-11-22T00:00:01.000Z"));
  store.insert_migration(make_migration("m2", "vm2", "2026-11-22T00:00:02.000Z"));
  Migration probe = make_migration("x1", "vm1", "2026-11-22T00:00:03.000Z");
  probe.kind = "measurement";
  probe.archived = true;
  store.insert_migration(probe);
  // The instance's migration is still m1: a measurement is never found or listed as one.
  CHECK(store.find_active_for_vm("vm1")->id == "m1");
  CHECK(store.find_latest_for_vm("vm1")->id == "m1");
  ListFilter all;
  all.include_archived = true;
  CHECK(ids(store.list_migrations(all)) == std::vector<std::string>{"m2", "m1"});
  all.limit = 1;
  CHECK(ids(store.list_migrations(all)) == std::vector<std::string>{"m2"});
  ListFilter measurements;
  measurements.include_archived = true;
  measurements.kind = "measurement";
  const std::vector<Migration> found = store.list_migrations(measurements);
  REQUIRE(ids(found) == std::vector<std::string>{"x1"});
  CHECK(found[0].kind == "measurement");
  // The kind survives an update, and a migration's does too.
  Migration again = *store.find_migration("x1");
  again.state = State::successful;
  store.update_migration(again);
  CHECK(store.find_migration("x1")->kind == "measurement");
  CHECK(store.find_migration("m1")->kind == "migration");
}
