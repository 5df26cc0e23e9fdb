// SPDX-License-Identifier: MPL-2.0
#include "fakes/engine_world.hpp"

#include <zmigrate/migration/evacuate.hpp>
#include <zmigrate/util/error.hpp>

#include <algorithm>

#include <catch2/catch.hpp>

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
