// SPDX-License-Identifier: MPL-2.0
#include "fakes/engine_world.hpp"

#include <zmigrate/migration/evacuate.hpp>
#include <zmigrate/migration/evacuation_record.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>

#include <algorithm>
#include <csignal>
#include <functional>

#include <catch2/catch.hpp>
#include <fmt/format.h>

using namespace zmigrate;
using namespace zmigrate::migration;

namespace {

inventory::Vm vm(const std::string& uuid, const std::string& alias, const std::string& state) {
  inventory::Vm v;
  v.uuid = uuid;
  v.alias = alias;
  v.state = state;
  return v;
}

std::vector<std::string> uuids(const std::vector<inventory::Vm>& vms) {
  std::vector<std::string> out;
  for (const auto& v : vms) {
    out.push_back(v.uuid);
  }
  return out;
}

} // namespace

TEST_CASE("migration::evacuation_order", "[migration]") {
  const std::vector<inventory::Vm> vms{vm("u5", "web", "running"), vm("u4", "db", "running"),
                                       vm("u3", "old", "stopped"), vm("u2", "", "destroyed"),
                                       vm("u1", "db", "running"),  vm("u0", "x", "failed")};
  SECTION("stopped first, then running by alias and UUID; destroyed and failed never") {
    CHECK(uuids(evacuation_order(vms, true)) == std::vector<std::string>{"u3", "u1", "u4", "u5"});
  }
  SECTION("--running-only leaves stopped instances") {
    CHECK(uuids(evacuation_order(vms, false)) == std::vector<std::string>{"u1", "u4", "u5"});
  }
  SECTION("nothing to do") {
    CHECK(evacuation_order({}, true).empty());
  }
}

TEST_CASE("migration::EvacuateResult::all_ok", "[migration]") {
  EvacuateResult r;
  CHECK(r.all_ok());
  r.items.push_back({});
  r.items.back().outcome = "skipped";
  CHECK(r.all_ok());
  r.items.push_back({});
  r.items.back().outcome = "failed";
  CHECK_FALSE(r.all_ok());
}

TEST_CASE("migration::evacuate plans every instance at once", "[migration][placement]") {
  using fakes::EngineWorld;
  EngineWorld w;
  // A second instance on cn1, in VMAPI only, on a NIC tag no node carries: no node can take it.
  const std::string big = "6d7d6f4b-4553-49f1-bc0b-7fd16dcf0f99";
  nlohmann::json raw = w.inv.vms.at(EngineWorld::k_vm).raw;
  raw["uuid"] = big;
  raw["zonename"] = big;
  raw["alias"] = "big01";
  raw["zfs_filesystem"] = "zones/" + big;
  raw["zonepath"] = "/zones/" + big;
  raw.erase("datasets");
  raw["nics"][0]["nic_tag"] = "storage";
  raw["nics"][0]["interface"] = "net0";
  w.inv.add_vm(raw);
  EvacuateOptions o;
  o.server = EngineWorld::k_cn1;
  o.dry_run = true;

  SECTION("dry run: each instance's target, or every node and why") {
    const EvacuateResult r = evacuate(w.ctx, o);
    REQUIRE(r.items.size() == 2);
    for (const EvacuationItem& i : r.items) {
      if (i.vm_uuid == big) {
        CHECK(i.outcome == "refused");
        CHECK(i.target.empty());
        REQUIRE(i.rejected.size() == 2);
        CHECK(i.rejected[0].hostname == "cn2");
        CHECK(i.rejected[1].hostname == "cn3");
        CHECK(describe(i.rejected[0].problems) == "missing NIC tag storage for NIC net0");
        CHECK_THAT(i.error, Catch::Contains("no compute node can take it"));
      } else {
        CHECK(i.outcome == "planned");
        CHECK(i.target == "cn2");
        CHECK_THAT(i.reason, Catch::Contains("most unreserved RAM"));
      }
    }
    CHECK_FALSE(w.has_record());
  }
  SECTION("--exclude leaves an instance out; a typo is refused before anything") {
    o.exclude = {"big01"};
    EvacuateResult r = evacuate(w.ctx, o);
    REQUIRE(r.items.size() == 2);
    CHECK(std::count_if(r.items.begin(), r.items.end(),
                        [](const EvacuationItem& i) { return i.outcome == "excluded"; }) == 1);
    CHECK(r.all_ok());
    o.exclude = {"bgi01"};
    CHECK_THROWS_AS(evacuate(w.ctx, o), UsageError);
    o.exclude.clear();
    o.to = {"cn9"};
    CHECK_THROWS_WITH(evacuate(w.ctx, o), Catch::Contains("--to cn9"));
  }
  SECTION("an instance whose migration is past begin keeps its target, and its promise") {
    w.inv.servers[1].unreserved_ram_mib = 200; // cn2 has room only for what it was promised
    BeginOptions b;
    b.vm_uuid = EngineWorld::k_vm;
    b.target = EngineWorld::k_cn2;
    begin(w.ctx, b);
    o.exclude = {big};
    const EvacuateResult r = evacuate(w.ctx, o);
    for (const EvacuationItem& i : r.items) {
      if (i.vm_uuid == EngineWorld::k_vm) {
        CHECK(i.outcome == "planned");
        CHECK(i.target == "cn2");
        CHECK_THAT(i.reason, Catch::Contains("goes on"));
      }
    }
  }
  SECTION("--to limits the nodes") {
    o.exclude = {big};
    o.to = {"cn3"};
    const EvacuateResult r = evacuate(w.ctx, o);
    for (const EvacuationItem& i : r.items) {
      if (i.vm_uuid != big) {
        CHECK(i.target == "cn3");
      }
    }
  }
}

TEST_CASE("migration::next_to_start keeps within --parallel and --per-node", "[migration]") {
  const std::vector<QueuedMigration> q{{"a", "cn2"}, {"b", "cn2"}, {"c", "cn3"}};
  CHECK(next_to_start(q, {}, 3, 2) == 0);
  CHECK(next_to_start(q, {"cn2", "cn2"}, 3, 2) == 2); // cn2 is full: the first for cn3
  CHECK(next_to_start(q, {"cn2", "cn3", "cn4"}, 3, 2) == std::nullopt); // 3 run in all
  CHECK(next_to_start({{"a", "cn2"}}, {"cn2"}, 3, 1) == std::nullopt);
  CHECK(next_to_start(q, {"cn2", "cn2"}, 3, 0) == 0); // no per-node limit
  CHECK(next_to_start(q, {}, 0, 0) == 0);             // at least one runs
  CHECK(next_to_start({}, {}, 3, 2) == std::nullopt);
}

namespace {

// Starts nothing: records what it was asked and ends the migrations in the order started, each
// with the status `status_of` gives; checks the limits at every start.
class RecordingLauncher final : public MigrationLauncher {
public:
  RecordingLauncher(Context& ctx, int parallel, int per_node)
      : m_ctx(ctx), m_parallel(parallel), m_per_node(per_node) {}
  void start(const MigrationRequest& r) override {
    started.push_back(r);
    running.push_back(r);
    max_running = std::max(max_running, running.size());
    CHECK(static_cast<int>(running.size()) <= m_parallel);
    CHECK(std::count_if(running.begin(), running.end(), [&r](const MigrationRequest& x) {
            return x.target_uuid == r.target_uuid;
          }) <= m_per_node);
  }
  std::optional<MigrationExit> wait_any() override {
    if (running.empty()) {
      return std::nullopt;
    }
    ++waits;
    if (interrupt_at == waits) {
      note_interrupt(SIGTERM);
      return std::nullopt; // the signal ended the wait
    }
    const MigrationRequest r = running.front();
    running.erase(running.begin());
    MigrationExit x{r.vm_uuid, stopped ? 130 : status_of(r.vm_uuid), ""};
    if (x.exit_status != 0) {
      x.error = "what: why";
    }
    return x;
  }
  void stop_all() override { stopped = true; }

  std::function<int(const std::string&)> status_of = [](const std::string&) { return 0; };
  std::vector<MigrationRequest> started;
  std::vector<MigrationRequest> running;
  std::size_t max_running = 0;
  int waits = 0;
  int interrupt_at = -1;
  bool stopped = false;

private:
  Context& m_ctx;
  int m_parallel;
  int m_per_node;
};

} // namespace

TEST_CASE("migration::evacuate runs the migrations through the launcher within the limits",
          "[migration][placement]") {
  using fakes::EngineWorld;
  EngineWorld w;
  // Six more instances on cn1 (VMAPI only: the launcher runs nothing).
  std::vector<std::string> more;
  for (int i = 0; i < 6; ++i) {
    nlohmann::json raw = w.inv.vms.at(EngineWorld::k_vm).raw;
    const std::string uuid = fmt::format("6d7d6f4b-4553-49f1-bc0b-7fd16dcf0f{:02}", i);
    raw["uuid"] = uuid;
    raw["zonename"] = uuid;
    raw["alias"] = fmt::format("app{:02}", i);
    raw["zfs_filesystem"] = "zones/" + uuid;
    raw["zonepath"] = "/zones/" + uuid;
    raw["max_physical_memory"] = 64;
    raw["ram"] = 64;
    raw.erase("datasets");
    w.inv.add_vm(raw);
    more.push_back(uuid);
  }
  EvacuateOptions o;
  o.server = EngineWorld::k_cn1;
  o.parallel = 3;
  o.per_node = 2;
  o.bwlimit = 30ULL << 20;
  o.finalize = true;
  RecordingLauncher launcher(w.ctx, 3, 2);
  o.launcher = &launcher;

  SECTION("no per-node limit: 3 at once") {
    o.per_node = 0;
    RecordingLauncher wide(w.ctx, 3, 3);
    o.launcher = &wide;
    const EvacuateResult r = evacuate(w.ctx, o);
    CHECK(wide.started.size() == 7);
    CHECK(wide.max_running == 3);
    CHECK(r.all_ok());
  }
  SECTION("every instance once, never more than 3 at once nor 2 into one node, a share each") {
    launcher.status_of = [&](const std::string& vm) {
      return vm == more[2] ? 1 : (vm == more[4] ? 4 : 0);
    };
    const EvacuateResult r = evacuate(w.ctx, o);
    REQUIRE(launcher.started.size() == 7);
    CHECK(launcher.max_running >= 2); // the checks of every start are in the launcher
    for (const MigrationRequest& q : launcher.started) {
      CHECK(q.bwlimit == (10ULL << 20));
      CHECK(q.finalize);
      CHECK_FALSE(q.target_uuid.empty());
      CHECK(q.target_uuid != EngineWorld::k_cn1);
    }
    REQUIRE(r.items.size() == 7);
    for (const EvacuationItem& i : r.items) {
      if (i.vm_uuid == more[2]) {
        CHECK(i.outcome == "failed");
        CHECK(i.error == "what: why");
      } else if (i.vm_uuid == more[4]) {
        CHECK(i.outcome == "skipped"); // refused, and no migration was left active
      } else {
        CHECK(i.outcome == "finalized");
      }
    }
    CHECK_FALSE(r.interrupted);
    CHECK_FALSE(r.all_ok());
    // The evacuation is a record of its own, for get/watch --evacuation from another shell.
    const std::optional<state::Migration> rec =
        find_evacuation(w.ctx.store, EngineWorld::k_cn1, false);
    REQUIRE(rec);
    CHECK(rec->kind == "evacuation");
    CHECK(rec->archived);
    CHECK(rec->state == state::State::failed);                           // one failed
    CHECK_FALSE(find_evacuation(w.ctx.store, EngineWorld::k_cn1, true)); // no restore
    CHECK_FALSE(w.ctx.store.find_active_for_vm(""));
    const EvacuationView v = view_evacuation(*rec, {}, {});
    CHECK(v.total == 7);
    CHECK(v.done == 5);
    CHECK(v.failed == 1);
    CHECK(v.skipped == 1);
    CHECK(v.rows.size() == 7);
    CHECK(v.hostname == "cn1");
    CHECK(rec->data["evacuation"]["options"]["parallel"] == 3);
    CHECK(rec->data["evacuation"]["options"]["per_node"] == 2);
  }
  SECTION("a signal: nothing more starts, the running ones are stopped and waited for") {
    o.per_node = 0;
    RecordingLauncher wide(w.ctx, 3, 3);
    o.launcher = &wide;
    wide.interrupt_at = 2;
    const EvacuateResult r = evacuate(w.ctx, o);
    reset_interrupts_for_tests();
    CHECK(wide.stopped);
    CHECK(wide.started.size() == 4); // 3, then one more after the first ended
    CHECK(wide.running.empty());
    CHECK(r.interrupted);
    // Only the started ones are listed: the first ended well, the others were interrupted.
    REQUIRE(r.items.size() == 4);
    CHECK(std::count_if(r.items.begin(), r.items.end(),
                        [](const EvacuationItem& i) { return i.outcome == "interrupted"; }) == 3);
    const std::optional<state::Migration> rec =
        find_evacuation(w.ctx.store, EngineWorld::k_cn1, false);
    REQUIRE(rec);
    CHECK(rec->state == state::State::paused); // interrupted: run it again
    const EvacuationView v = view_evacuation(*rec, {}, {});
    CHECK(v.total == 7);
    CHECK(v.done == 1);
    CHECK(v.failed == 3);
    CHECK(v.queued == 3);
    // The rerun takes up the same record: the instance that moved (VMAPI still lists it on cn1
    // here, the launcher moved nothing) is counted once.
    RecordingLauncher again(w.ctx, 3, 3);
    o.launcher = &again;
    evacuate(w.ctx, o);
    const std::optional<state::Migration> after =
        find_evacuation(w.ctx.store, EngineWorld::k_cn1, false);
    REQUIRE(after);
    CHECK(after->id == rec->id);
    CHECK(after->state == state::State::successful);
    CHECK(view_evacuation(*after, {}, {}).total == 7);
  }
  SECTION("a record that a crash left running ends with a rerun that finds nothing to start") {
    o.exclude = more;
    o.exclude.push_back(EngineWorld::k_vm); // nothing to move
    state::Migration crashed;
    crashed.id = "e-crashed";
    crashed.kind = "evacuation";
    crashed.archived = true;
    crashed.source_server_uuid = EngineWorld::k_cn1;
    crashed.state = state::State::running;
    crashed.created = "2026-12-07T01:00:00.000Z";
    crashed.data["evacuation"] = {
        {"server", EngineWorld::k_cn1}, {"restore", false}, {"instances", nlohmann::json::array()}};
    w.ctx.store.insert_migration(crashed);
    evacuate(w.ctx, o);
    const std::optional<state::Migration> rec =
        find_evacuation(w.ctx.store, EngineWorld::k_cn1, false);
    REQUIRE(rec);
    CHECK(rec->id == "e-crashed");
    CHECK(rec->state == state::State::successful);
    CHECK(launcher.started.empty());
  }
  SECTION("without a launcher they run here, one after the other") {
    o.launcher = nullptr;
    o.exclude = more;
    o.finalize = false;
    o.bwlimit = 0;
    const EvacuateResult r = evacuate(w.ctx, o);
    REQUIRE(r.items.size() == 7);
    for (const EvacuationItem& i : r.items) {
      CHECK(i.outcome == (i.vm_uuid == EngineWorld::k_vm ? "migrated" : "excluded"));
      if (i.vm_uuid == EngineWorld::k_vm) {
        CHECK(i.bytes > 0);
        CHECK(i.target == "cn2");
      }
    }
  }
}

TEST_CASE("migration::summarize_record", "[migration]") {
  state::Migration m;
  m.data["target"] = {{"hostname", "cn2"}};
  state::PhaseRun s1;
  s1.phase = state::Phase::sync;
  s1.state = state::State::successful;
  s1.details = {{"bytes", 100}};
  state::PhaseRun s2 = s1;
  s2.state = state::State::failed; // a failed sync's bytes are not counted
  state::PhaseRun s3 = s1;
  s3.state = state::State::paused; // how a finished sync ends
  state::PhaseRun sw;
  sw.phase = state::Phase::switch_;
  sw.state = state::State::successful;
  sw.details = {{"downtime_ms", 420}, {"final_bytes", 7}};
  m.history = {s1, s2, s3, sw};
  CHECK(moved_totals(m).bytes == 207);
  CHECK(moved_totals(state::Migration{}).bytes == 0);
  EvacuationItem i;
  summarize_record(m, i);
  CHECK(i.bytes == 207);
  CHECK(i.downtime == std::chrono::milliseconds(420));
  CHECK(i.target == "cn2");
}

TEST_CASE("migration::sync_all and switch_ready work on what waits", "[migration]") {
  using fakes::EngineWorld;
  EngineWorld w;
  CHECK(sync_all(w.ctx).items.empty());
  BeginOptions b;
  b.vm_uuid = EngineWorld::k_vm;
  b.target = EngineWorld::k_cn2;
  begin(w.ctx, b);
  // Ready to switch only after a sync: nothing to switch yet.
  CHECK(switch_ready(w.ctx, EngineWorld::k_cn1).items.empty());
  SyncAllResult s = sync_all(w.ctx);
  REQUIRE(s.items.size() == 1);
  CHECK(s.items[0].outcome == "synced");
  CHECK(s.items[0].bytes > 0);
  // Another node's migrations are not this node's to switch.
  CHECK(switch_ready(w.ctx, EngineWorld::k_cn2).items.empty());
  const EvacuateResult r = switch_ready(w.ctx, EngineWorld::k_cn1);
  REQUIRE(r.items.size() == 1);
  CHECK(r.items[0].outcome == "switched");
  CHECK(r.items[0].target == "cn2");
  // Switched: neither waits any more.
  CHECK(sync_all(w.ctx).items.empty());
  CHECK(switch_ready(w.ctx, EngineWorld::k_cn1).items.empty());
}

TEST_CASE("migration::view_evacuation: done/total, bytes sent and left, rate and ETA",
          "[migration]") {
  state::Migration rec;
  rec.id = "e1";
  rec.kind = "evacuation";
  rec.source_server_uuid = "cn1-uuid";
  rec.state = state::State::running;
  rec.created = "2026-12-07T02:00:00.000Z";
  rec.data["evacuation"] = {
      {"server", "cn1-uuid"},
      {"hostname", "cn1"},
      {"pid", 42},
      {"instances",
       {{{"vm_uuid", "a"}, {"alias", "web01"}, {"target", "cn2"}, {"outcome", "finalized"}},
        {{"vm_uuid", "b"}, {"alias", "db01"}, {"target", "cn3"}, {"outcome", "running"}},
        {{"vm_uuid", "c"}, {"alias", "lx01"}, {"target", "cn2"}, {"outcome", "queued"}},
        {{"vm_uuid", "d"}, {"alias", "old"}, {"target", "cn2"}, {"outcome", "skipped"}}}}};
  const auto migration = [](const std::string& id, state::Phase phase, state::State st,
                            std::uint64_t bytes, const std::string& created) {
    state::Migration m;
    m.id = id;
    m.phase = phase;
    m.state = st;
    m.created = created;
    state::PhaseRun run;
    run.phase = state::Phase::sync;
    run.state = state::State::paused;
    run.details = {{"bytes", bytes}};
    m.history = {run};
    return m;
  };
  std::map<std::string, state::Migration> ms{
      {"a", migration("ma", state::Phase::finalize, state::State::successful, 1000,
                      "2026-12-07T02:00:01.000Z")},
      {"b",
       migration("mb", state::Phase::sync, state::State::running, 0, "2026-12-07T02:00:02.000Z")},
      // An older migration of c, from before this evacuation: not counted.
      {"c", migration("mc", state::Phase::finalize, state::State::successful, 5000,
                      "2026-12-06T00:00:00.000Z")}};
  ms.at("b").history.clear();
  state::Progress p;
  p.migration_id = "mb";
  p.phase = state::Phase::sync;
  p.state = state::State::running;
  p.current = 300;
  p.total = 800;
  p.bytes_per_second = 100;
  p.eta_ms = 5000;
  const EvacuationView v = view_evacuation(rec, ms, {{"mb", p}});
  CHECK(v.total == 4);
  CHECK(v.done == 1);
  CHECK(v.running == 1);
  CHECK(v.queued == 1);
  CHECK(v.skipped == 1);
  CHECK(v.sent == 1300);
  // 500 of b's transfer, and c (not begun) guessed at the mean of the finished ones (1000).
  CHECK(v.left == 1500);
  CHECK(v.left_approximate);
  CHECK(v.rate == 100);
  REQUIRE(v.eta_ms);
  CHECK(*v.eta_ms == 15000);
  REQUIRE(v.rows.size() == 4);
  CHECK(v.rows[1].current == 300);
  CHECK(v.rows[1].eta_ms == std::optional<std::int64_t>(5000));
  CHECK(v.rows[2].phase.empty()); // queued: its old migration is not this evacuation's
  CHECK(v.rows[2].sent == 0);
  nlohmann::json j = v;
  CHECK(j["bytes_left"] == 1500);
  CHECK(j["instances"][1]["total_progress"] == 800);
  CHECK(j["instances"][0].count("total_progress") == 0);

  // Nothing finished yet: what is left is unknown, and so is the ETA.
  rec.data["evacuation"]["instances"][0]["outcome"] = "queued";
  const EvacuationView early = view_evacuation(rec, ms, {{"mb", p}});
  CHECK_FALSE(early.left_known);
  CHECK_FALSE(early.eta_ms);
  CHECK(nlohmann::json(early)["bytes_left"].is_null());
}

TEST_CASE("migration::outcome_of", "[migration]") {
  state::Migration m;
  m.phase = state::Phase::finalize;
  m.state = state::State::successful;
  CHECK(outcome_of(m) == "finalized");
  m.phase = state::Phase::switch_;
  CHECK(outcome_of(m) == "migrated");
  m.phase = state::Phase::sync;
  m.state = state::State::paused;
  CHECK(outcome_of(m) == "ready");
  m.state = state::State::failed;
  CHECK(outcome_of(m) == "failed");
  m.state = state::State::running;
  CHECK(outcome_of(m).empty());
}
