// SPDX-License-Identifier: MPL-2.0
// Operation: lease rules as a command meets them (busy, stale on another head node,
// --take-over), the transition checked on the record read under the lease, the lost-update
// check, and the heartbeat thread that keeps the lease fresh during a long silent command.
#include "fakes/fake_inventory.hpp"
#include "fakes/memory_state_store.hpp"

#include <zmigrate/migration/context.hpp>
#include <zmigrate/migration/engine.hpp>
#include <zmigrate/migration/operation.hpp>
#include <zmigrate/migration/transitions.hpp>
#include <zmigrate/util/clock.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>
#include <zmigrate/util/log.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::migration;
using state::Phase;
using state::State;

namespace {

const std::string k_vm = "5eed0000-0000-4000-8000-0000000e0901";
const std::string k_id = "0e0e0000-0000-4000-8000-000000000001";

// Wall time that moves when a test says so; atomic, since the heartbeat thread reads it.
class SharedClock final : public Clock {
public:
  std::chrono::steady_clock::time_point now() const override {
    return std::chrono::steady_clock::time_point(std::chrono::milliseconds(m_ms.load()));
  }
  std::chrono::system_clock::time_point wall_now() const override {
    return std::chrono::system_clock::time_point(std::chrono::milliseconds(m_ms.load()));
  }
  void sleep_for(std::chrono::milliseconds d) override { m_ms += d.count(); }
  void advance(std::chrono::milliseconds d) { m_ms += d.count(); }

private:
  std::atomic<std::int64_t> m_ms{std::chrono::duration_cast<std::chrono::milliseconds>(
                                     parse_iso8601("2026-11-22T01:00:00.000Z").time_since_epoch())
                                     .count()};
};

class NoNodes final : public NodeAccess {
public:
  remote::Runner& runner_for(const inventory::Server&) override {
    throw std::logic_error("no node access in these tests");
  }
};

struct World {
  fakes::FakeInventory inv;
  NoNodes nodes;
  SharedClock clock;
  fakes::MemoryStateStore store{clock};
  NullLogger log;
  NullReporter reporter;
  Context ctx{inv, nodes, store, clock, log, reporter, Settings{}, {}};

  explicit World(Phase phase = Phase::sync, State st = State::paused) {
    state::Migration m;
    m.id = k_id;
    m.vm_uuid = k_vm;
    m.source_server_uuid = "cn-1";
    m.target_server_uuid = "cn-2";
    m.phase = phase;
    m.state = st;
    m.num_sync_phases = 1;
    m.created = "2026-11-22T00:00:00.000Z";
    store.insert_migration(m);
    // Empty: this host by gethostname(), where the store checks pids.
    ctx.settings.hostname.clear();
  }

  // Another zmigrate process writes the record (through its own copy).
  void change_record(Phase phase, State st, int num_sync_phases = 1) {
    state::Migration other = *store.find_migration(k_id);
    other.phase = phase;
    other.state = st;
    other.num_sync_phases = num_sync_phases;
    store.update_migration(other);
  }

  void hold_lease(const std::string& host, int pid) {
    state::Lease l;
    l.migration_id = k_id;
    l.host = host;
    l.pid = pid;
    l.operation = "switch";
    REQUIRE_FALSE(store.real().try_acquire_lease(l, 0));
  }
};

// Poll `done` until it holds or `limit` (real time) passes; never a fixed sleep.
template <typename F> bool eventually(F done, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

} // namespace

TEST_CASE("migration::Operation checks the transition on the record read under the lease",
          "[migration][operation]") {
  World w;

  SECTION("the record moved on between the first read and the lease: refused") {
    // on_migration runs after the first read and just before the lease is taken: another
    // process finishes a switch in that gap.
    w.ctx.on_migration = [&](const std::string&, const std::string&) {
      w.change_record(Phase::switch_, State::successful);
    };
    try {
      Operation op(w.ctx, k_vm, Action::sync, "sync");
      FAIL("no exception");
    } catch (const PreconditionError& e) {
      CHECK(e.subject() == "sync");
    }
    CHECK_FALSE(w.store.real().find_lease(k_id)); // the lease is given back
  }

  SECTION("the migration ended in that gap: not found, lease given back") {
    w.ctx.on_migration = [&](const std::string&, const std::string&) {
      state::Migration other = *w.store.find_migration(k_id);
      other.phase = Phase::abort;
      other.state = State::successful;
      other.archived = true;
      w.store.update_migration(other);
    };
    CHECK_THROWS_AS(Operation(w.ctx, k_vm, Action::sync, "sync"), NotFoundError);
    CHECK_FALSE(w.store.real().find_lease(k_id));
  }

  SECTION("a change that still allows the action: the fresh record is the one worked on") {
    w.ctx.on_migration = [&](const std::string&, const std::string&) {
      w.change_record(Phase::sync, State::failed, 2);
    };
    Operation op(w.ctx, k_vm, Action::sync, "sync");
    CHECK(op.record().num_sync_phases == 2);
    CHECK(op.record().state == State::failed);
    op.start_phase(Phase::sync, "syncing data"); // saves: the version matches
    CHECK(w.store.find_migration(k_id)->state == State::running);
    CHECK(w.store.real().find_lease(k_id)->pid == static_cast<int>(getpid()));
  }

  SECTION("no active migration") {
    CHECK_THROWS_AS(Operation(w.ctx, "5eed0000-0000-4000-8000-00000000dead", Action::sync, "sync"),
                    NotFoundError);
  }

  SECTION("a record read before someone else wrote it cannot be saved (lost update)") {
    const state::Migration stale = *w.store.find_migration(k_id);
    w.change_record(Phase::switch_, State::successful);
    Operation op(w.ctx, stale, "sync"); // the old way: the caller's copy, read too early
    try {
      op.start_phase(Phase::sync, "syncing data");
      FAIL("no exception");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::state);
      CHECK(e.subject() == "migration " + k_id);
      CHECK_THAT(e.reason(), Catch::Contains("lost update"));
    }
    CHECK(w.store.find_migration(k_id)->phase == Phase::switch_);
  }
}

TEST_CASE("migration::Operation lease holders", "[migration][operation]") {
  World w;

  SECTION("a live process on this host is busy, however old its heartbeat") {
    w.hold_lease("", static_cast<int>(getppid()));
    w.clock.advance(std::chrono::hours(48));
    w.ctx.settings.take_over_remote_lease = true; // does not apply to this host
    try {
      Operation op(w.ctx, k_vm, Action::sync, "sync");
      FAIL("no exception");
    } catch (const PreconditionError& e) {
      CHECK_THAT(e.reason(), Catch::StartsWith("busy: 'switch' is running it (pid " +
                                               std::to_string(getppid())));
    }
  }

  SECTION("a stale holder on another head node: refused, naming it and --take-over") {
    w.hold_lease("other-headnode", 4242);
    w.clock.advance(std::chrono::minutes(6));
    try {
      Operation op(w.ctx, k_vm, Action::sync, "sync");
      FAIL("no exception");
    } catch (const PreconditionError& e) {
      CHECK_THAT(e.reason(), Catch::Contains("pid 4242 on other-headnode"));
      CHECK_THAT(e.reason(), Catch::Contains("--take-over"));
    }
    CHECK(w.store.real().find_lease(k_id)->host == "other-headnode");

    SECTION("with --take-over it is taken") {
      w.ctx.settings.take_over_remote_lease = true;
      Operation op(w.ctx, k_vm, Action::sync, "sync");
      CHECK(w.store.real().find_lease(k_id)->pid == static_cast<int>(getpid()));
    }
  }

  SECTION("a fresh holder on another head node is busy even with --take-over") {
    w.hold_lease("other-headnode", 4242);
    w.clock.advance(std::chrono::minutes(1));
    w.ctx.settings.take_over_remote_lease = true;
    try {
      Operation op(w.ctx, k_vm, Action::sync, "sync");
      FAIL("no exception");
    } catch (const PreconditionError& e) {
      CHECK_THAT(e.reason(), Catch::StartsWith("busy:"));
    }
  }
}

TEST_CASE("migration::Operation beats the lease from its own thread", "[migration][operation]") {
  World w;
  w.ctx.settings.lease_heartbeat_ms = 10;

  SECTION("while a long step runs, without any progress lines") {
    Operation op(w.ctx, k_vm, Action::sync, "sync");
    op.start_phase(Phase::sync, "syncing data");
    const std::string taken = w.store.real().find_lease(k_id)->heartbeat;
    op.step("sync.send", [&](nlohmann::json&) {
      // The fake long command: nothing but the heartbeat thread touches the lease meanwhile.
      const int before = w.store.heartbeats;
      w.clock.advance(std::chrono::seconds(30));
      CHECK(eventually([&] { return w.store.heartbeats >= before + 3; }, std::chrono::seconds(10)));
      CHECK(eventually([&] { return w.store.real().find_lease(k_id)->heartbeat != taken; },
                       std::chrono::seconds(10)));
    });
  }

  SECTION("destruction stops the thread at once, even with a long interval") {
    w.ctx.settings.lease_heartbeat_ms = 60 * 60 * 1000;
    const auto start = std::chrono::steady_clock::now();
    { Operation op(w.ctx, k_vm, Action::sync, "sync"); }
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
    CHECK_FALSE(w.store.real().find_lease(k_id));
  }

  SECTION("a lease taken over meanwhile stops the next step before it runs") {
    Operation op(w.ctx, k_vm, Action::sync, "sync");
    op.start_phase(Phase::sync, "syncing data");
    w.store.real().release_lease(k_id, static_cast<int>(getpid()));
    w.hold_lease("", static_cast<int>(getppid()));
    const int before = w.store.heartbeats;
    REQUIRE(eventually([&] { return w.store.heartbeats > before; }, std::chrono::seconds(10)));
    bool ran = false;
    try {
      op.step("sync.send", [&](nlohmann::json&) { ran = true; });
      FAIL("no exception");
    } catch (const PreconditionError& e) {
      CHECK_THAT(e.reason(), Catch::Contains("lost the lease"));
    }
    CHECK_FALSE(ran);
  }
}

namespace {

// Stop requests set the process-wide interrupt flag: every test here leaves it as it found it.
struct InterruptReset {
  InterruptReset() { reset_interrupts_for_tests(); }
  ~InterruptReset() { reset_interrupts_for_tests(); }
};

state::StopRequest request_from(World& w, const std::string& kind, int pid,
                                const std::string& host) {
  state::StopRequest r;
  r.migration_id = k_id;
  r.kind = kind;
  r.pid = pid;
  r.host = host;
  r.requested = iso8601(w.clock.wall_now());
  return r;
}

pid_t dead_pid() {
  const pid_t p = fork();
  if (p == 0) {
    _exit(0);
  }
  int status = 0;
  waitpid(p, &status, 0);
  return p;
}

} // namespace

TEST_CASE("migration::Operation stops on a request from another command (abort, pause)",
          "[migration][operation]") {
  const InterruptReset reset;
  World w;
  w.ctx.settings.stop_poll_ms = 5;
  w.ctx.settings.command_started = w.clock.wall_now();

  SECTION("a request made while a sync runs stops it: the flag, the reason, the next step") {
    Operation op(w.ctx, k_vm, Action::sync, "sync");
    op.start_phase(Phase::sync, "syncing data");
    REQUIRE(
        w.store
            .request_stop(request_from(w, "pause", 4242, "other-shell"), unstoppable_operations())
            .recorded);
    REQUIRE(eventually([] { return interrupt_requested(); }, std::chrono::seconds(10)));
    REQUIRE(op.stopped_by());
    CHECK(op.stopped_by()->kind == "pause");
    bool ran = false;
    try {
      op.step("sync.send", [&](nlohmann::json&) { ran = true; });
      FAIL("no exception");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::interrupted);
      CHECK_THAT(e.reason(), Catch::Contains("stopped by \"zmigrate pause\" from another shell "
                                             "(pid 4242 on other-shell"));
    }
    CHECK_FALSE(ran);
    const Error err = op.stop_error(*op.stopped_by());
    CHECK_THAT(err.reason(), Catch::Contains("\"zmigrate sync " + k_vm +
                                             "\" or \"zmigrate "
                                             "migrate " +
                                             k_vm + "\" goes on from here"));
  }

  SECTION("a command already running when the request was made cannot take its next phase") {
    REQUIRE(
        w.store
            .request_stop(request_from(w, "abort", 4242, "other-shell"), unstoppable_operations())
            .recorded);
    try {
      Operation op(w.ctx, k_vm, Action::switch_, "switch");
      FAIL("no exception");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::interrupted);
      CHECK(e.subject() == "switch of " + k_vm);
      CHECK_THAT(e.reason(), Catch::Contains("that command goes on with the abort"));
    }
    CHECK_FALSE(w.store.real().find_lease(k_id)); // given back
    CHECK(w.store.find_stop_request(k_id));       // still there for the abort
  }

  SECTION("a command started after the request drops it and goes on") {
    REQUIRE(
        w.store
            .request_stop(request_from(w, "pause", 4242, "other-shell"), unstoppable_operations())
            .recorded);
    w.clock.advance(std::chrono::seconds(1));
    w.ctx.settings.command_started = w.clock.wall_now();
    Operation op(w.ctx, k_vm, Action::sync, "sync");
    CHECK_FALSE(w.store.find_stop_request(k_id));
    CHECK_FALSE(interrupt_requested());
  }

  SECTION("the requester's own request does not stop it") {
    REQUIRE(w.store
                .request_stop(request_from(w, "abort", static_cast<int>(getpid()), ""),
                              unstoppable_operations())
                .recorded);
    Operation op(w.ctx, k_vm, Action::abort, "abort");
    CHECK(w.store.find_stop_request(k_id));
  }

  SECTION("nothing is recorded while a switch holds the lease") {
    w.hold_lease("", static_cast<int>(getppid())); // a live "switch"
    const state::StopOutcome out = w.store.request_stop(
        request_from(w, "abort", 4242, "other-shell"), unstoppable_operations());
    CHECK_FALSE(out.recorded);
    REQUIRE(out.holder);
    CHECK(out.holder->operation == "switch");
    CHECK_FALSE(w.store.find_stop_request(k_id));
  }
}

TEST_CASE("migration::pause and abort from another shell wait for the running command",
          "[migration][operation]") {
  const InterruptReset reset;
  World w;
  w.ctx.settings.command_started = w.clock.wall_now();
  auto hold = [&](int pid, const std::string& operation) {
    state::Lease l;
    l.migration_id = k_id;
    l.pid = pid;
    l.operation = operation;
    REQUIRE_FALSE(w.store.real().try_acquire_lease(l, 0));
  };

  SECTION("pause with nothing running: the request waits for a migrate between two phases") {
    const PauseResult r = pause(w.ctx, k_vm);
    CHECK_FALSE(r.stopped);
    CHECK(r.migration.phase == Phase::sync);
    REQUIRE(w.store.find_stop_request(k_id));
    CHECK(w.store.find_stop_request(k_id)->kind == "pause");
  }

  SECTION("pause: a holder that is gone counts as stopped") {
    const pid_t gone = dead_pid();
    hold(static_cast<int>(gone), "sync");
    const PauseResult r = pause(w.ctx, k_vm);
    REQUIRE(r.stopped);
    CHECK(r.stopped->pid == static_cast<int>(gone));
    CHECK_FALSE(w.store.real().find_lease(k_id)); // the pause did not keep it
  }

  SECTION("abort: a running sync that does not stop in time is named, the request stays") {
    hold(static_cast<int>(getppid()), "sync"); // alive, never lets go
    w.ctx.settings.stop_wait_ms = 3000;        // the fake clock moves 100 ms a poll
    try {
      abort(w.ctx, k_vm);
      FAIL("no exception");
    } catch (const PreconditionError& e) {
      CHECK_THAT(e.reason(), Catch::Contains("the running sync (pid " + std::to_string(getppid())));
      CHECK_THAT(e.reason(), Catch::Contains("did not stop within 3 s"));
    }
    CHECK(w.store.find_stop_request(k_id));
    CHECK(w.store.find_migration(k_id)->phase == Phase::sync); // nothing else changed
  }

  SECTION("abort and pause refuse while a switch runs, naming it") {
    hold(static_cast<int>(getppid()), "switch");
    CHECK_THROWS_WITH(pause(w.ctx, k_vm), Catch::Contains("busy: 'switch' is running it") &&
                                              Catch::Contains("\"zmigrate rollback\""));
    CHECK_FALSE(w.store.find_stop_request(k_id));
  }

  SECTION("the lease a killed abort left does not block its rerun or a pause") {
    const pid_t gone = dead_pid();
    hold(static_cast<int>(gone), "abort");
    const PauseResult r = pause(w.ctx, k_vm);
    CHECK_FALSE(r.stopped);
    CHECK_FALSE(w.store.real().find_lease(k_id));
  }

  SECTION("pause after the switch: nothing to pause") {
    w.change_record(Phase::switch_, State::successful);
    CHECK_THROWS_WITH(pause(w.ctx, k_vm), Catch::Contains("nothing to pause"));
  }
}
