// SPDX-License-Identifier: MPL-2.0
#include "fakes/memory_state_store.hpp"

#include <zmigrate/util/error.hpp>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::state;

TEST_CASE("fakes::MemoryStateStore records writes", "[state]") {
  SystemClock clock;
  fakes::MemoryStateStore store(clock);

  Migration m;
  m.id = "m1";
  m.vm_uuid = "vm1";
  store.insert_migration(m);
  Lease l;
  l.migration_id = "m1";
  l.operation = "sync";
  CHECK_FALSE(store.try_acquire_lease(l, 60));
  const std::int64_t run = store.add_phase_run("m1", PhaseRun{});
  Step s;
  s.migration_id = "m1";
  s.phase_run_id = run;
  s.name = "sync.send";
  store.end_step(store.begin_step(s), "ok", {});
  Artefact a;
  a.migration_id = "m1";
  a.kind = "snapshot";
  a.host = "cn1";
  a.name = "zones/vm1@vm-migration-1";
  store.mark_artefact_removed(store.record_artefact(a));
  Progress p;
  p.migration_id = "m1";
  store.put_progress(p);
  store.heartbeat("m1", 0);
  m.phase = Phase::abort;
  m.state = State::successful;
  m.archived = true;
  store.update_migration(m);
  store.release_lease("m1", 0);

  CHECK(store.writes == std::vector<std::string>{
                            "insert_migration m1 begin/running",
                            "acquire_lease m1 sync",
                            "add_phase_run m1 begin/running",
                            "begin_step sync.send",
                            "end_step sync.send ok",
                            "record_artefact snapshot cn1 zones/vm1@vm-migration-1",
                            "mark_artefact_removed snapshot cn1 zones/vm1@vm-migration-1",
                            "update_migration m1 abort/successful archived",
                            "release_lease m1",
                        });
  CHECK(store.writes_matching("update_migration") ==
        std::vector<std::string>{"update_migration m1 abort/successful archived"});
  CHECK(store.progress_writes == 1);
  CHECK(store.heartbeats == 1);
  CHECK(store.find_latest_for_vm("vm1")->archived);
}

TEST_CASE("fakes::MemoryStateStore before_write injects failures", "[state]") {
  SystemClock clock;
  fakes::MemoryStateStore store(clock);
  store.before_write = [](const std::string& w) {
    if (w.rfind("begin_step switch.hide_source", 0) == 0) {
      throw Error(ExitCode::state, "test", "injected");
    }
  };
  Migration m;
  m.id = "m1";
  m.vm_uuid = "vm1";
  store.insert_migration(m);
  Step s;
  s.migration_id = "m1";
  s.name = "switch.stop_source";
  store.begin_step(s);
  s.name = "switch.hide_source";
  CHECK_THROWS_AS(store.begin_step(s), Error);
  CHECK(store.steps("m1").size() == 1); // the failed write never reached the database
}

TEST_CASE("fakes::MemoryStateStore refuses a lost update like the real store", "[state]") {
  SystemClock clock;
  fakes::MemoryStateStore store(clock);
  Migration m;
  m.id = "m1";
  m.vm_uuid = "vm1";
  store.insert_migration(m);
  Migration mine = *store.find_migration("m1");
  Migration theirs = *store.find_migration("m1");
  theirs.state = State::failed;
  store.update_migration(theirs);
  CHECK(theirs.version == 1);
  mine.state = State::paused;
  try {
    store.update_migration(mine);
    FAIL("no exception");
  } catch (const Error& e) {
    CHECK(e.exit_code() == ExitCode::state);
    CHECK(e.subject() == "migration m1");
    CHECK_THAT(e.reason(), Catch::Contains("lost update"));
  }
  CHECK(mine.version == 0);
  CHECK(store.find_migration("m1")->state == State::failed);
}
