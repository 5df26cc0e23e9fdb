// SPDX-License-Identifier: MPL-2.0
// estimate --measure: a measurement's own record and data path, its rate, and what it leaves.
#include "fakes/engine_world.hpp"

#include <zmigrate/migration/measure.hpp>
#include <zmigrate/state/store.hpp>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::migration;
using fakes::EngineWorld;
using std::chrono::milliseconds;

namespace {
// Every measurement record in the world's store, newest first.
std::vector<state::Migration> measurements(EngineWorld& w) {
  state::ListFilter f;
  f.kind = "measurement";
  f.include_archived = true;
  return w.store.list_migrations(f);
}
} // namespace

TEST_CASE("measure: the rate is the size over what it added to an empty stream", "[measure]") {
  CHECK(link_rate(100ULL << 20, milliseconds(20), milliseconds(1020)) == Approx(100.0 * (1 << 20)));
  // The difference vanished in the noise: the whole stream counts.
  CHECK(link_rate(1ULL << 20, milliseconds(30), milliseconds(25)) == Approx((1 << 20) / 0.025));
  CHECK(link_rate(1ULL << 20, milliseconds(0), milliseconds(0)) == 0);
}

TEST_CASE("measure: an empty and a full stream over a data path of its own, removed after",
          "[measure]") {
  EngineWorld w;
  const inventory::Server cn1 = w.inv.resolve_server(EngineWorld::k_cn1);
  const inventory::Server cn2 = w.inv.resolve_server(EngineWorld::k_cn2);
  const LinkMeasurement m = measure_link(w.ctx, cn1, cn2, EngineWorld::k_vm, 64);
  // The fake link: 20 ms per stream, then 100 MiB/s.
  CHECK(m.bytes == 64ULL << 20);
  CHECK(m.empty == milliseconds(20));
  CHECK(m.full == milliseconds(660));
  CHECK(m.rate_bytes_per_s == Approx(100.0 * (1 << 20)));
  CHECK(m.source_hostname == cn1.hostname);
  CHECK(m.target_hostname == cn2.hostname);
  std::vector<std::string> measures;
  for (const std::string& c : w.nodes.calls) {
    if (c.rfind("measure", 0) == 0 || c.rfind("send", 0) == 0) {
      measures.push_back(c);
    }
  }
  CHECK(measures == std::vector<std::string>{"measure 0", "measure 64"}); // nothing of the VM
  // Nothing left: no ledger row live, the operator's keys byte for byte as they were.
  CHECK(w.store.all_live_artefacts("").empty());
  CHECK(w.cn2->authorized_keys == w.operator_keys);
  CHECK(w.cn2->paths.empty());
  CHECK(w.cn1->paths.empty());
  // A record of its own kind: found by id, journaled, never the instance's migration.
  const std::optional<state::Migration> rec = w.store.find_migration(m.id);
  REQUIRE(rec);
  CHECK(rec->kind == "measurement");
  CHECK(rec->archived);
  CHECK(rec->state == state::State::successful);
  std::vector<std::string> steps;
  for (const state::Step& s : w.store.steps(m.id)) {
    steps.push_back(s.name + " " + s.status);
  }
  CHECK(steps == std::vector<std::string>{"measure.open ok", "measure.empty ok", "measure.full ok",
                                          "measure.close ok"});
  CHECK_FALSE(w.store.find_latest_for_vm(EngineWorld::k_vm));
  CHECK_FALSE(w.store.find_active_for_vm(EngineWorld::k_vm));
  state::ListFilter all;
  all.include_archived = true;
  CHECK(w.store.list_migrations(all).empty());
  // The newest measurement of the pair, in one direction only.
  const std::optional<LinkMeasurement> latest =
      latest_measurement(w.ctx, EngineWorld::k_cn1, EngineWorld::k_cn2);
  REQUIRE(latest);
  CHECK(latest->id == m.id);
  CHECK(latest->rate_bytes_per_s == Approx(m.rate_bytes_per_s));
  CHECK_FALSE(latest_measurement(w.ctx, EngineWorld::k_cn2, EngineWorld::k_cn1));
  // A begin between the two nodes goes by it, and may still begin (no active migration).
  BeginOptions o;
  o.vm_uuid = EngineWorld::k_vm;
  o.target = EngineWorld::k_cn2;
  o.dry_run = true;
  o.summary = true;
  const BeginResult plan = begin(w.ctx, o);
  CHECK(plan.plan.value("rate_bytes_per_s", 0.0) == Approx(m.rate_bytes_per_s));
  CHECK_THAT(plan.plan.value("rate_basis", ""),
             Catch::Contains("measured by estimate --measure at " + m.measured));
  w.begin();
  CHECK(w.store.find_active_for_vm(EngineWorld::k_vm));
}

TEST_CASE("measure: a link that fails mid-way leaves no key and a failed record", "[measure]") {
  EngineWorld w;
  const inventory::Server cn1 = w.inv.resolve_server(EngineWorld::k_cn1);
  const inventory::Server cn2 = w.inv.resolve_server(EngineWorld::k_cn2);
  w.nodes.fail_next_send("Connection reset by peer");
  CHECK_THROWS_WITH(measure_link(w.ctx, cn1, cn2, EngineWorld::k_vm, 64),
                    Catch::Contains("Connection reset by peer"));
  CHECK(w.store.all_live_artefacts("").empty());
  CHECK(w.cn2->authorized_keys == w.operator_keys);
  const std::vector<state::Migration> recs = measurements(w);
  REQUIRE(recs.size() == 1);
  CHECK(recs[0].state == state::State::failed);
  CHECK_THAT(recs[0].error, Catch::Contains("Connection reset by peer"));
  CHECK_FALSE(latest_measurement(w.ctx, EngineWorld::k_cn1, EngineWorld::k_cn2));
}

TEST_CASE("measure: one node, or a node that is not running, is refused before anything",
          "[measure]") {
  EngineWorld w;
  const inventory::Server cn1 = w.inv.resolve_server(EngineWorld::k_cn1);
  inventory::Server cn2 = w.inv.resolve_server(EngineWorld::k_cn2);
  try {
    measure_link(w.ctx, cn1, cn1, EngineWorld::k_vm, 64);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.exit_code() == ExitCode::usage);
    CHECK_THAT(e.what(), Catch::Contains("the source node itself"));
  }
  cn2.status = "unknown";
  try {
    measure_link(w.ctx, cn1, cn2, EngineWorld::k_vm, 64);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.exit_code() == ExitCode::precondition);
    CHECK_THAT(e.what(), Catch::Contains("CNAPI reports it unknown"));
  }
  CHECK(w.nodes.calls.empty());
  CHECK(measurements(w).empty());
}
