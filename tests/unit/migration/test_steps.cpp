// SPDX-License-Identifier: MPL-2.0
// run_steps, the one runner of every phase's declared step list: journal rows in order, steps
// the plan leaves out, undos newest first before the point of no return and none after it, an
// undo failure that never hides the first error, and the downtime window.
#include "fakes/fake_inventory.hpp"
#include "fakes/memory_state_store.hpp"

#include <zmigrate/migration/context.hpp>
#include <zmigrate/migration/operation.hpp>
#include <zmigrate/migration/steps.hpp>
#include <zmigrate/util/clock.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/log.hpp>

#include <stdexcept>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::migration;

namespace {

const std::string k_vm = "5eed0000-0000-4000-8000-0000000e0a01";

// Steady time that moves only when a step says so.
class TickClock final : public Clock {
public:
  std::chrono::steady_clock::time_point now() const override { return m_now; }
  std::chrono::system_clock::time_point wall_now() const override {
    return parse_iso8601("2026-11-22T01:00:00.000Z") +
           (m_now - std::chrono::steady_clock::time_point{});
  }
  void sleep_for(std::chrono::milliseconds d) override { m_now += d; }

private:
  std::chrono::steady_clock::time_point m_now{};
};

class NoNodes final : public NodeAccess {
public:
  remote::Runner& runner_for(const inventory::Server&) override {
    throw std::logic_error("no node access in these tests");
  }
};

struct Bench {
  fakes::FakeInventory inv;
  NoNodes nodes;
  TickClock clock;
  fakes::MemoryStateStore store{clock};
  NullLogger log;
  NullReporter reporter;
  Context ctx{inv, nodes, store, clock, log, reporter, Settings{}, {}};
  std::vector<std::string> did; // what the steps and undos did, in order

  Bench() {
    state::Migration m;
    m.id = "0e0e0000-0000-4000-8000-00000000a001";
    m.vm_uuid = k_vm;
    m.source_server_uuid = "cn-1";
    m.target_server_uuid = "cn-2";
    m.phase = state::Phase::sync;
    m.state = state::State::paused;
    m.created = "2026-11-22T00:00:00.000Z";
    store.insert_migration(m);
    ctx.settings.hostname.clear();
  }

  Step step(const std::string& name, Window w = Window::outside, bool fails = false,
            bool undo_fails = false) {
    Step s;
    s.name = name;
    s.run = [this, name, fails](nlohmann::json&) {
      did.push_back(name);
      clock.sleep_for(std::chrono::milliseconds(10));
      if (fails) {
        throw Error(ExitCode::failure, name, "failed");
      }
    };
    s.undo = [this, name, undo_fails] {
      did.push_back("undo " + name);
      if (undo_fails) {
        throw Error(ExitCode::failure, "undo " + name, "failed too");
      }
    };
    s.window = w;
    return s;
  }

  std::vector<std::string> journal(const std::string& id) {
    std::vector<std::string> out;
    for (const state::Step& s : store.steps(id)) {
      out.push_back(s.name + " " + s.status);
    }
    return out;
  }
};

} // namespace

TEST_CASE("run_steps runs the declared list in order and journals each step",
          "[migration][steps]") {
  Bench b;
  Operation op(b.ctx, k_vm, Action::sync, "sync");
  op.start_phase(state::Phase::sync, "test");
  const bool no = false;
  PhaseSpec spec{"p", {b.step("a"), b.step("b"), b.step("c")}, ""};
  spec.steps[1].when = &no;
  const PhaseReport r = run_steps(b.ctx, op, spec);
  CHECK(b.did == std::vector<std::string>{"a", "c"});
  CHECK(b.journal(op.id()) == std::vector<std::string>{"p.a ok", "p.c ok"});
  REQUIRE(r.steps.size() == 2);
  CHECK(r.steps[0].duration == std::chrono::milliseconds(10));
}

TEST_CASE("run_steps undoes the failed step and those before it, newest first, before the "
          "point of no return",
          "[migration][steps]") {
  Bench b;
  Operation op(b.ctx, k_vm, Action::sync, "sync");
  op.start_phase(state::Phase::sync, "test");
  SECTION("a failure before commit_after: undos newest first, journaled, first error kept") {
    PhaseSpec spec{"p",
                   {b.step("a", Window::outside, false, true), b.step("b"),
                    b.step("c", Window::outside, true), b.step("commit"), b.step("d")},
                   "commit"};
    PhaseReport r;
    try {
      run_steps(b.ctx, op, spec, &r);
      FAIL("no throw");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("c: failed") != std::string::npos);
    }
    CHECK_FALSE(r.committed);
    CHECK(b.did == std::vector<std::string>{"a", "b", "c", "undo c", "undo b", "undo a"});
    CHECK(b.journal(op.id()) == std::vector<std::string>{"p.a ok", "p.b ok", "p.c failed",
                                                         "p.undo.c ok", "p.undo.b ok",
                                                         "p.undo.a failed"});
  }
  SECTION("a failure past commit_after: forward only, nothing undone") {
    PhaseSpec spec{
        "p", {b.step("a"), b.step("commit"), b.step("d", Window::outside, true)}, "commit"};
    PhaseReport r;
    CHECK_THROWS_AS(run_steps(b.ctx, op, spec, &r), Error);
    CHECK(r.committed);
    CHECK(b.did == std::vector<std::string>{"a", "commit", "d"});
  }
  SECTION("a commit step the plan leaves out (done by an earlier run) counts as passed") {
    const bool no = false;
    PhaseSpec spec{
        "p", {b.step("a"), b.step("commit"), b.step("d", Window::outside, true)}, "commit"};
    spec.steps[0].when = &no;
    spec.steps[1].when = &no;
    PhaseReport r;
    CHECK_THROWS_AS(run_steps(b.ctx, op, spec, &r), Error);
    CHECK(r.committed);
    CHECK(b.did == std::vector<std::string>{"d"});
  }
  SECTION("an interrupt does not stop the undos") {
    PhaseSpec spec{"p", {b.step("a"), b.step("b", Window::outside, true)}, ""};
    spec.steps[1].run = [&](nlohmann::json&) {
      b.did.push_back("b");
      throw Error(ExitCode::interrupted, "b", "interrupted");
    };
    CHECK_THROWS_AS(run_steps(b.ctx, op, spec), Error);
    CHECK(b.did == std::vector<std::string>{"a", "b", "undo b", "undo a"});
  }
}

TEST_CASE("run_steps measures the downtime window from its first step to its last",
          "[migration][steps]") {
  Bench b;
  Operation op(b.ctx, k_vm, Action::sync, "sync");
  op.start_phase(state::Phase::sync, "test");
  PhaseSpec spec{"p",
                 {b.step("before"), b.step("stop", Window::downtime),
                  b.step("delta", Window::downtime), b.step("start", Window::downtime),
                  b.step("after")},
                 ""};
  spec.steps[1].breakdown = "stop_source";
  const PhaseReport r = run_steps(b.ctx, op, spec);
  CHECK(r.downtime == std::chrono::milliseconds(30));
  REQUIRE(r.downtime_steps.size() == 3);
  CHECK(r.downtime_steps[0].name == "stop_source");
  CHECK(r.downtime_steps[2].name == "start");
}
