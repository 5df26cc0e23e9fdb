// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/evacuate.hpp>

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
