// SPDX-License-Identifier: MPL-2.0
// The fake must behave like the services where phase tests rely on it.
#include "fakes/fake_inventory.hpp"

#include <zmigrate/util/error.hpp>

#include <catch2/catch.hpp>

using nlohmann::json;
using namespace zmigrate;
using zmigrate::fakes::FakeInventory;

namespace {
const std::string k_cn1 = "564d0000-0000-4000-8000-000000000001";
const std::string k_cn2 = "564d0000-0000-4000-8000-000000000002";
const std::string k_vm = "ef375f03-57ca-44a9-bc8d-63aec09fbc37";
} // namespace

TEST_CASE("fakes::FakeInventory", "[inventory]") {
  FakeInventory inv;
  inv.add_server(k_cn1, "cn1", "10.99.0.11");
  inv.add_server(k_cn2, "cn2", "10.99.0.12");
  inv.add_vm({{"uuid", k_vm}, {"brand", "joyent"}, {"state", "running"}, {"server_uuid", k_cn1}});
  inv.add_vm({{"uuid", "00000000-0000-4000-8000-000000000009"},
              {"state", "destroyed"},
              {"server_uuid", k_cn1}});

  SECTION("VMs") {
    CHECK(inv.find_vm(k_vm)->server_uuid == k_cn1);
    CHECK_FALSE(inv.find_vm("nope"));
    CHECK(inv.list_vms(k_cn1, "active").size() == 1);
    CHECK(inv.list_vms(k_cn1, "").size() == 2);
    CHECK(inv.list_vms(k_cn2, "active").empty());
    CHECK(inv.list_vms("", "destroyed").size() == 1);
  }
  SECTION("put_vm merges, and ignores a destroyed report from another server") {
    CHECK(inv.put_vm(k_vm, {{"server_uuid", k_cn2}}).server_uuid == k_cn2);
    CHECK(inv.find_vm(k_vm)->brand == "joyent");
    CHECK(inv.put_vm(k_vm, {{"state", "destroyed"}, {"server_uuid", k_cn1}}).state == "running");
    CHECK(inv.put_vm(k_vm, {{"state", "destroyed"}, {"server_uuid", k_cn2}}).state == "destroyed");
    CHECK(inv.vm_puts.size() == 3);
    CHECK(inv.vm_puts[0].body == json{{"server_uuid", k_cn2}});
  }
  SECTION("servers") {
    CHECK(inv.resolve_server("cn2").uuid == k_cn2);
    CHECK(inv.resolve_server(k_cn1).hostname == "cn1");
    CHECK_THROWS_AS(inv.resolve_server("cn9"), NotFoundError);
    inv.add_server("564d0000-0000-4000-8000-000000000003", "cn2", "10.99.0.13");
    CHECK_THROWS_AS(inv.resolve_server("cn2"), PreconditionError);
    CHECK(inv.list_servers().size() == 3);
  }
  SECTION("IPs: unknown ones are free; reservations recorded") {
    CHECK(inv.get_ip("net", "10.0.0.5").free);
    const inventory::IpRecord r = inv.set_ip_reserved("net", "10.0.0.5", true);
    CHECK(r.reserved);
    CHECK_FALSE(r.free);
    CHECK(inv.get_ip("net", "10.0.0.5").reserved);
    inv.set_ip_reserved("net", "10.0.0.5", false);
    CHECK(inv.get_ip("net", "10.0.0.5").free);
    CHECK(inv.ip_reservations == std::vector<FakeInventory::IpReservation>{
                                     {"net", "10.0.0.5", true}, {"net", "10.0.0.5", false}});
  }
  SECTION("images") {
    const std::string img = "01b2c898-945f-11e1-a523-af1afbe22822";
    inv.add_image({{"uuid", img}, {"name", "base"}});
    CHECK(inv.find_image(img)->name == "base");
    CHECK_FALSE(inv.find_image("other"));
  }
  SECTION("calls are recorded; before_call injects failures") {
    inv.find_vm(k_vm, true);
    inv.list_servers();
    CHECK(inv.calls == std::vector<std::string>{"find_vm " + k_vm + " sync", "list_servers"});
    inv.before_call = [](const std::string& call) {
      if (call.rfind("set_ip_reserved", 0) == 0) {
        throw TransientError(ExitCode::inventory, "NAPI PUT", "503");
      }
    };
    CHECK_THROWS_AS(inv.set_ip_reserved("net", "10.0.0.5", true), TransientError);
    CHECK(inv.find_image("x") == std::nullopt);
  }
}
