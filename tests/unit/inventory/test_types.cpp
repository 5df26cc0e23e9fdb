// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/inventory/types.hpp>
#include <zmigrate/util/error.hpp>

#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>
#include <fmt/format.h>

using nlohmann::json;
using namespace zmigrate;
using namespace zmigrate::inventory;

namespace {

std::string fixture_text(const std::string& name) {
  std::ifstream in(std::string(ZMIGRATE_FIXTURES_DIR) + "/" + name);
  REQUIRE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json fixture(const std::string& name) {
  return json::parse(fixture_text(name));
}

// No real bhyve VMAPI object exists upstream (triton.md §4 fixtures); this one follows the
// VMAPI shape for HVM brands: no top-level image_uuid, disks under the zone root, booleans as
// vmadm sometimes writes them.
json bhyve_vm() {
  return json::parse(R"({
    "uuid": "b4d1f3a2-8c9e-4f1a-9b2c-3d4e5f6a7b8c",
    "brand": "bhyve",
    "alias": "bhyve1",
    "state": "stopped",
    "server_uuid": "564d0000-0000-4000-8000-000000000002",
    "owner_uuid": "930896af-bf8c-48d4-885c-6573a94b1853",
    "billing_id": "11111111-2222-3333-4444-555555555555",
    "ram": 1024,
    "max_physical_memory": 1280,
    "quota": 20,
    "autoboot": "false",
    "indestructible_zoneroot": "true",
    "do_not_inventory": false,
    "vcpus": 2,
    "flexible_disk_size": 20480,
    "nics": [
      {"interface": "net0", "mac": "90:b8:d0:00:00:01", "ip": "10.99.0.50",
       "network_uuid": "6a2f1c56-1111-4f3e-9a1b-000000000001", "nic_tag": "external",
       "primary": "true"},
      {"interface": "net1", "mac": "90:b8:d0:00:00:02", "ip": "dhcp", "nic_tag": "internal"}
    ],
    "disks": [
      {"path": "/dev/zvol/rdsk/zones/b4d1f3a2-8c9e-4f1a-9b2c-3d4e5f6a7b8c/disk0", "boot": true,
       "image_uuid": "a2b3c4d5-0000-4000-8000-000000000010", "size": 10240, "media": "disk"},
      {"path": "/dev/zvol/rdsk/zones/b4d1f3a2-8c9e-4f1a-9b2c-3d4e5f6a7b8c/disk1", "boot": false,
       "size": 8192},
      {"boot": false, "size": 1024}
    ],
    "tags": {"role": "db"}
  })");
}

} // namespace

TEST_CASE("inventory::parse_vm", "[inventory]") {
  SECTION("vmapi joyent zone: derived zfs_filesystem and zonepath, core tag") {
    const json j = fixture("vmapi-vm-joyent-zone.json");
    const Vm vm = parse_vm(j);
    CHECK(vm.uuid == "ef375f03-57ca-44a9-bc8d-63aec09fbc37");
    CHECK(vm.brand == "joyent");
    CHECK(vm.alias == "assets1");
    CHECK(vm.state == "running");
    CHECK(vm.server_uuid == "564d6836-ed2e-18f8-bdf2-e900490a57a1");
    CHECK(vm.owner_uuid == "930896af-bf8c-48d4-885c-6573a94b1853");
    CHECK(vm.image_uuid == "01b2c898-945f-11e1-a523-af1afbe22822");
    CHECK(vm.zfs_filesystem == "zones/ef375f03-57ca-44a9-bc8d-63aec09fbc37");
    CHECK(vm.zonepath == "/zones/ef375f03-57ca-44a9-bc8d-63aec09fbc37");
    CHECK(vm.quota_gib == std::optional<std::uint64_t>(10240));
    CHECK(vm.ram_mib == 64);
    CHECK(vm.autoboot);
    CHECK_FALSE(vm.do_not_inventory);
    CHECK(vm.billing_id.empty());
    REQUIRE(vm.nics.size() == 1);
    CHECK(vm.nics[0].mac == "90:b8:d0:d6:26:6e");
    CHECK(vm.nics[0].ip == "10.99.99.192");
    CHECK(vm.nics[0].nic_tag == "admin");
    CHECK(vm.nics[0].interface == "net0");
    CHECK(vm.nics[0].network_uuid.empty());
    CHECK(vm.nics[0].primary);
    CHECK(vm.disks.empty());
    CHECK(vm.datasets.empty());
    CHECK(vm.tags["smartdc_role"] == "assets");
    CHECK(vm.is_core());
    CHECK_FALSE(vm.is_hvm());
    CHECK(vm.raw == j);
  }

  SECTION("vmapi kvm: image from disks[0], ram over max_physical_memory, sibling disks") {
    const json j = fixture("vmapi-vm-kvm.json");
    const Vm vm = parse_vm(j);
    const std::string uuid = "03750e6a-fcf6-4755-85b5-22b8ddf0f1fb";
    CHECK(vm.uuid == uuid);
    CHECK(vm.brand == "kvm");
    CHECK(vm.is_hvm());
    CHECK_FALSE(vm.is_core());
    CHECK(vm.alias.empty());
    CHECK(vm.image_uuid == "56108678-1183-11e1-83c3-ff3185a5b47f");
    CHECK(vm.billing_id == "00000000-0000-0000-0000-000000000000");
    CHECK(vm.ram_mib == 256);
    CHECK_FALSE(vm.quota_gib.has_value());
    CHECK(vm.zfs_filesystem == "zones/" + uuid);
    CHECK(vm.zonepath == "/zones/" + uuid);
    REQUIRE(vm.disks.size() == 2);
    CHECK(vm.disks[0].path == "/dev/zvol/rdsk/zones/" + uuid + "-disk0");
    CHECK(vm.disks[0].zfs_filesystem == "zones/" + uuid + "-disk0");
    CHECK(vm.disks[0].image_uuid == "56108678-1183-11e1-83c3-ff3185a5b47f");
    CHECK(vm.disks[0].size_mib == std::optional<std::uint64_t>(5120));
    CHECK_FALSE(vm.disks[0].boot);
    CHECK(vm.disks[1].zfs_filesystem == "zones/" + uuid + "-disk1");
    CHECK(vm.disks[1].image_uuid.empty());
    CHECK(vm.disks[1].size_mib == std::optional<std::uint64_t>(10240));
    REQUIRE(vm.nics.size() == 1);
    CHECK(vm.nics[0].ip == "10.99.99.32");
  }

  SECTION("kvm disks without zfs_filesystem: derived from the zvol path") {
    json j = fixture("vmapi-vm-kvm.json");
    for (json& d : j["disks"]) {
      d.erase("zfs_filesystem");
    }
    j["disks"][1]["path"] = "/dev/zvol/dsk/zones/03750e6a-fcf6-4755-85b5-22b8ddf0f1fb-disk1";
    const Vm vm = parse_vm(j);
    CHECK(vm.disks[0].zfs_filesystem == "zones/03750e6a-fcf6-4755-85b5-22b8ddf0f1fb-disk0");
    CHECK(vm.disks[1].zfs_filesystem == "zones/03750e6a-fcf6-4755-85b5-22b8ddf0f1fb-disk1");
  }

  SECTION("kvm without top-level image_uuid (VMAPI shape): image from disks[0]") {
    json j = fixture("vmapi-vm-kvm.json");
    j.erase("image_uuid");
    CHECK(parse_vm(j).image_uuid == "56108678-1183-11e1-83c3-ff3185a5b47f");
  }

  SECTION("vmapi minimal: every field null") {
    const json j = fixture("vmapi-vm-minimal.json");
    const Vm vm = parse_vm(j);
    CHECK(vm.uuid == "f23dab00-980e-11e5-887b-c9e599b7177b");
    CHECK(vm.brand.empty());
    CHECK(vm.state.empty());
    CHECK(vm.alias.empty());
    CHECK(vm.server_uuid.empty());
    CHECK(vm.image_uuid.empty());
    CHECK(vm.zfs_filesystem == "zones/f23dab00-980e-11e5-887b-c9e599b7177b");
    CHECK(vm.zonepath == "/zones/f23dab00-980e-11e5-887b-c9e599b7177b");
    CHECK(vm.ram_mib == 0);
    CHECK_FALSE(vm.quota_gib.has_value());
    CHECK(vm.autoboot); // null: the vmadm default
    CHECK(vm.nics.empty());
    CHECK(vm.disks.empty());
    CHECK(vm.datasets.empty());
    CHECK(vm.tags == json::object());
    CHECK_FALSE(vm.is_core());
  }

  SECTION("vmadm joyent-minimal: given zonepath/zfs_filesystem, ram from max_physical_memory") {
    const json j = fixture("vmadm-vm-joyent-minimal.json");
    const Vm vm = parse_vm(j);
    CHECK(vm.uuid == "6d7d6f4b-4553-49f1-bc0b-7fd16dcf0f2c");
    CHECK(vm.brand == "joyent-minimal");
    CHECK(vm.alias == "testvm");
    CHECK(vm.state == "running");
    CHECK(vm.image_uuid == "cd2d08a0-83f1-11e5-8684-f383641a9854");
    CHECK(vm.billing_id == "73a1ca34-1e30-48c7-8681-70314a9c67d3");
    CHECK(vm.server_uuid == "564dfd57-1dd4-6fc0-d973-4f137ee12afe");
    CHECK(vm.zfs_filesystem == "zones/6d7d6f4b-4553-49f1-bc0b-7fd16dcf0f2c");
    CHECK(vm.zonepath == "/zones/6d7d6f4b-4553-49f1-bc0b-7fd16dcf0f2c");
    CHECK(vm.quota_gib == std::optional<std::uint64_t>(25));
    CHECK(vm.ram_mib == 128);
    CHECK(vm.autoboot);
    REQUIRE(vm.nics.size() == 1);
    CHECK(vm.nics[0].ip == "10.192.0.8");
    CHECK(vm.nics[0].primary);
  }

  SECTION("vmadm object without uuid: the zonename is the uuid") {
    json j = fixture("vmadm-vm-joyent-minimal.json");
    j.erase("uuid");
    CHECK(parse_vm(j).uuid == "6d7d6f4b-4553-49f1-bc0b-7fd16dcf0f2c");
  }

  SECTION("hand-written bhyve: child disks, string booleans, image from disks[0]") {
    const Vm vm = parse_vm(bhyve_vm());
    const std::string root = "zones/b4d1f3a2-8c9e-4f1a-9b2c-3d4e5f6a7b8c";
    CHECK(vm.brand == "bhyve");
    CHECK(vm.is_hvm());
    CHECK(vm.image_uuid == "a2b3c4d5-0000-4000-8000-000000000010");
    CHECK(vm.zfs_filesystem == root);
    CHECK(vm.zonepath == "/" + root);
    CHECK(vm.ram_mib == 1024);
    CHECK(vm.quota_gib == std::optional<std::uint64_t>(20));
    CHECK_FALSE(vm.autoboot);
    CHECK(vm.indestructible_zoneroot);
    CHECK_FALSE(vm.indestructible_delegated);
    CHECK_FALSE(vm.do_not_inventory);
    REQUIRE(vm.disks.size() == 3);
    CHECK(vm.disks[0].zfs_filesystem == root + "/disk0");
    CHECK(vm.disks[0].boot);
    CHECK(vm.disks[0].size_mib == std::optional<std::uint64_t>(10240));
    CHECK(vm.disks[1].zfs_filesystem == root + "/disk1");
    CHECK(vm.disks[2].zfs_filesystem == root + "/disk2"); // neither path nor dataset given
    REQUIRE(vm.nics.size() == 2);
    CHECK(vm.nics[0].primary);
    CHECK(vm.nics[0].network_uuid == "6a2f1c56-1111-4f3e-9a1b-000000000001");
    CHECK(vm.nics[1].ip.empty()); // dhcp
    CHECK_FALSE(vm.nics[1].primary);
    CHECK(vm.tags["role"] == "db");
  }

  SECTION("booleans arrive as true or \"true\"") {
    json j = {{"uuid", "f23dab00-980e-11e5-887b-c9e599b7177b"}};
    for (const json& yes : {json(true), json("true")}) {
      j["do_not_inventory"] = yes;
      j["indestructible_delegated"] = yes;
      j["autoboot"] = yes;
      const Vm vm = parse_vm(j);
      CHECK(vm.do_not_inventory);
      CHECK(vm.indestructible_delegated);
      CHECK(vm.autoboot);
    }
    for (const json& no : {json(false), json("false")}) {
      j["do_not_inventory"] = no;
      j["autoboot"] = no;
      const Vm vm = parse_vm(j);
      CHECK_FALSE(vm.do_not_inventory);
      CHECK_FALSE(vm.autoboot);
    }
  }

  SECTION("ram from max_physical_memory when ram is absent; numeric strings accepted") {
    json j = {{"uuid", "f23dab00-980e-11e5-887b-c9e599b7177b"}, {"max_physical_memory", 2048}};
    CHECK(parse_vm(j).ram_mib == 2048);
    j["ram"] = "512";
    CHECK(parse_vm(j).ram_mib == 512);
  }

  SECTION("zpool other than zones") {
    const json j = {{"uuid", "f23dab00-980e-11e5-887b-c9e599b7177b"}, {"zpool", "data"}};
    const Vm vm = parse_vm(j);
    CHECK(vm.zfs_filesystem == "data/f23dab00-980e-11e5-887b-c9e599b7177b");
    CHECK(vm.zonepath == "/data/f23dab00-980e-11e5-887b-c9e599b7177b");
  }

  SECTION("delegated datasets: listed, or derived from delegate_dataset") {
    json j = {{"uuid", "f23dab00-980e-11e5-887b-c9e599b7177b"},
              {"datasets", {"zones/f23dab00-980e-11e5-887b-c9e599b7177b/data"}}};
    CHECK(parse_vm(j).datasets ==
          std::vector<std::string>{"zones/f23dab00-980e-11e5-887b-c9e599b7177b/data"});
    j["delegate_dataset"] = true; // same dataset: not added twice
    CHECK(parse_vm(j).datasets.size() == 1);
    j.erase("datasets");
    CHECK(parse_vm(j).datasets ==
          std::vector<std::string>{"zones/f23dab00-980e-11e5-887b-c9e599b7177b/data"});
  }

  SECTION("vmadm nic: ip from ips when ip is missing or dhcp") {
    json j = {{"uuid", "f23dab00-980e-11e5-887b-c9e599b7177b"},
              {"nics",
               {{{"mac", "aa"}, {"ips", {"fd00::5/64", "10.1.2.3/24"}}},
                {{"mac", "bb"}, {"ip", "dhcp"}, {"ips", {"dhcp"}}}}}};
    const Vm vm = parse_vm(j);
    CHECK(vm.nics[0].ip == "10.1.2.3");
    CHECK(vm.nics[1].ip.empty());
  }

  SECTION("malformed payloads: Error(inventory) naming the field") {
    auto message_of = [](const json& j) -> std::string {
      try {
        parse_vm(j);
      } catch (const Error& e) {
        CHECK(e.exit_code() == ExitCode::inventory);
        return e.what();
      }
      FAIL("parse_vm did not throw");
      return "";
    };
    CHECK_THAT(message_of(json::array()), Catch::Contains("expected a JSON object, got array"));
    CHECK_THAT(message_of(json{{"brand", "joyent"}}), Catch::Contains("\"uuid\" is missing"));
    const std::string uuid = "f23dab00-980e-11e5-887b-c9e599b7177b";
    CHECK_THAT(message_of(json{{"uuid", uuid}, {"ram", "lots"}}),
               Catch::Contains("VM " + uuid) && Catch::Contains("\"ram\""));
    CHECK_THAT(message_of(json{{"uuid", uuid}, {"nics", "net0"}}),
               Catch::Contains("\"nics\"") && Catch::Contains("an array"));
    CHECK_THAT(message_of(json{{"uuid", uuid}, {"brand", 7}}), Catch::Contains("\"brand\""));
    CHECK_THAT(message_of(json{{"uuid", uuid}, {"autoboot", "maybe"}}),
               Catch::Contains("\"autoboot\""));
    CHECK_THAT(message_of(json{{"uuid", uuid}, {"disks", {{{"size", "big"}}}}}),
               Catch::Contains("disks[0]") && Catch::Contains("\"size\""));
  }
}

TEST_CASE("inventory::parse_nic", "[inventory]") {
  SECTION("NAPI NIC object (docs: no network_uuid)") {
    const Nic nic = parse_nic(fixture("napi-nic.json"));
    CHECK(nic.mac == "90:b8:d0:57:53:70");
    CHECK(nic.ip == "10.88.88.198");
    CHECK(nic.nic_tag == "external");
    CHECK(nic.network_uuid.empty());
    CHECK_FALSE(nic.primary);
  }
}

TEST_CASE("inventory::parse_server", "[inventory]") {
  SECTION("cnapi-server fixture") {
    const json j = fixture("cnapi-server.json");
    const Server s = parse_server(j);
    CHECK(s.uuid == "564d555a-328d-c8c4-4166-fc96982fa89f");
    CHECK(s.hostname == "headnode");
    CHECK(s.status == "running");
    CHECK(s.setup);
    CHECK_FALSE(s.reserved);
    CHECK(s.headnode);
    CHECK(s.admin_ip == "10.99.99.7");
    CHECK(s.current_platform == "20140429T175502Z");
    CHECK(s.ram_mib == 4095);
    CHECK(s.unreserved_ram_mib == 0); // -42607: overcommitted
    CHECK(s.unreserved_disk_mib == 39565);
    CHECK(s.traits == json::object());
    CHECK(s.raw == j);
  }

  SECTION("admin NIC on a virtual interface") {
    json j = fixture("cnapi-server.json");
    json& sys = j["sysinfo"];
    sys["Network Interfaces"]["e1000g1"]["NIC Names"] = json::array();
    sys["Virtual Network Interfaces"]["admin0"] = {{"MAC Address", "02:08:20:00:00:01"},
                                                   {"ip4addr", "10.99.0.12"},
                                                   {"Link Status", "up"},
                                                   {"Host Interface", "aggr0"},
                                                   {"NIC Names", {"admin"}}};
    CHECK(parse_server(j).admin_ip == "10.99.0.12");
  }

  SECTION("sysinfo Admin IP and Admin NIC Tag") {
    json j = fixture("cnapi-server.json");
    j["sysinfo"]["Admin NIC Tag"] = "external";
    j["sysinfo"]["Network Interfaces"]["e1000g0"]["ip4addr"] = "10.88.88.5";
    CHECK(parse_server(j).admin_ip == "10.88.88.5");
    j["sysinfo"]["Admin IP"] = "10.99.0.99";
    CHECK(parse_server(j).admin_ip == "10.99.0.99");
  }

  SECTION("no admin NIC: empty admin_ip") {
    json j = fixture("cnapi-server.json");
    j["sysinfo"]["Network Interfaces"]["e1000g1"]["ip4addr"] = "";
    CHECK(parse_server(j).admin_ip.empty());
    j.erase("sysinfo");
    CHECK(parse_server(j).admin_ip.empty());
  }

  SECTION("fields missing from the record fall back to sysinfo; string booleans") {
    json j = fixture("cnapi-server.json");
    for (const char* key : {"hostname", "ram", "current_platform", "setup", "headnode"}) {
      j.erase(key);
    }
    j["reserved"] = "true";
    j["traits"] = {{"ssd", true}};
    const Server s = parse_server(j);
    CHECK(s.hostname == "headnode");
    CHECK(s.ram_mib == 4095);
    CHECK(s.current_platform == "20140429T175502Z");
    CHECK(s.setup);
    CHECK(s.headnode);
    CHECK(s.reserved);
    CHECK(s.traits["ssd"] == true);
  }

  SECTION("malformed") {
    CHECK_THROWS_AS(parse_server(json::array()), Error);
    CHECK_THROWS_WITH(parse_server(json{{"hostname", "cn1"}}), Catch::Contains("uuid"));
    CHECK_THROWS_WITH(
        parse_server(json{{"uuid", "564d0000-0000-4000-8000-000000000001"}, {"traits", "x"}}),
        Catch::Contains("\"traits\""));
  }
}

TEST_CASE("inventory::parse_server placement fields", "[inventory][placement]") {
  SECTION("NIC tags of up links and vnics, down links apart") {
    json j = fixture("cnapi-server.json");
    json& sys = j["sysinfo"];
    sys["Network Interfaces"]["e1000g2"] = {{"MAC Address", "00:50:56:34:60:4d"},
                                            {"Link Status", "down"},
                                            {"NIC Names", {"internal", "external"}}};
    sys["Virtual Network Interfaces"]["sdc_underlay0"] = {{"Host Interface", "e1000g1"},
                                                          {"Link Status", "up"},
                                                          {"Overlay Nic Tags", {"sdc_overlay"}}};
    sys["Bhyve Capable"] = true;
    sys["Bhyve Max Vcpus"] = "32";
    const Server s = parse_server(j);
    CHECK(s.placement_problems.empty());
    CHECK(s.nic_tags == std::vector<std::string>{"admin", "external", "sdc_underlay"});
    CHECK(s.down_nic_tags == std::vector<std::string>{"internal"});
    CHECK(s.overlay_nic_tags == std::vector<std::string>{"sdc_overlay"});
    CHECK(s.has_nic_tag("external"));
    CHECK_FALSE(s.has_nic_tag("internal"));
    CHECK(s.fabric("sdc_overlay"));
    CHECK_FALSE(s.fabric("other"));
    CHECK(s.unreserved_cpu == 200);
    CHECK(s.vm_capable);
    CHECK(s.bhyve_capable);
    CHECK(s.bhyve_max_vcpus == 32);
  }
  SECTION("fabric without overlay tags listed: the underlay tag") {
    json j = fixture("cnapi-server.json");
    CHECK_FALSE(parse_server(j).fabric());
    j["sysinfo"]["Virtual Network Interfaces"]["sdc_underlay0"] = {{"Host Interface", "e1000g1"}};
    CHECK(parse_server(j).fabric());
  }
  SECTION("malformed entries never throw: they make the node unplaceable") {
    json j = fixture("cnapi-server.json");
    json& sys = j["sysinfo"];
    sys["Network Interfaces"]["e1000g0"]["NIC Names"] = 7;
    sys["Network Interfaces"]["bad0"] = "not an object";
    sys["Virtual Network Interfaces"] = json::array();
    sys["Overlay Nic Tags"] = {{"x", 1}};
    sys["Bhyve Capable"] = json::object();
    j["unreserved_cpu"] = "lots";
    Server s;
    REQUIRE_NOTHROW(s = parse_server(j));
    CHECK(s.admin_ip == "10.99.99.7"); // the rest of the record as before
    CHECK(s.placement_problems.size() == 6);
    CHECK_FALSE(s.has_nic_tag("external")); // its entry could not be read
    CHECK(s.has_nic_tag("admin"));
    CHECK_FALSE(s.unreserved_cpu);
    const std::string all = fmt::format("{}", fmt::join(s.placement_problems, " | "));
    CHECK_THAT(all, Catch::Contains("NIC Names") && Catch::Contains("bad0") &&
                        Catch::Contains("unreserved_cpu") && Catch::Contains("Bhyve Capable"));
  }
}

TEST_CASE("inventory::parse_vm placement fields", "[inventory][placement]") {
  json j = fixture("vmapi-vm-joyent-zone.json");
  SECTION("cpu_cap, traits, fabric NICs") {
    j["cpu_cap"] = 350;
    j["package"] = {{"traits", {{"ssd", true}}}};
    j["nics"][0]["nic_tag"] = "sdc_overlay/7654321";
    j["nics"][0]["vlan_id"] = 12;
    const Vm vm = parse_vm(j);
    CHECK(vm.placement_problems.empty());
    CHECK(vm.cpu_cap == 350);
    CHECK(vm.traits == json{{"ssd", true}});
    CHECK(vm.nics[0].fabric);
    CHECK(vm.nics[0].vlan_id == 12);
    CHECK(vm.nics[0].required_nic_tag() == "sdc_overlay");
    j["traits"] = {{"gpu", "a100"}}; // the VM's own win over the package's
    CHECK(parse_vm(j).traits == json{{"gpu", "a100"}});
    j["cpu_cap"] = 0; // vmadm's "no cap"
    CHECK_FALSE(parse_vm(j).cpu_cap);
  }
  SECTION("malformed placement fields never throw") {
    j["cpu_cap"] = "a lot";
    j["traits"] = "ssd";
    j["vcpus"] = -2;
    j["nics"][0]["vlan_id"] = "twelve";
    j["nics"][0]["fabric"] = {1, 2};
    Vm vm;
    REQUIRE_NOTHROW(vm = parse_vm(j));
    CHECK(vm.placement_problems.size() == 5);
    CHECK_FALSE(vm.cpu_cap);
    CHECK(vm.traits == json::object());
    CHECK(vm.nics.size() == j["nics"].size());
  }
}

TEST_CASE("inventory::parse_ip", "[inventory]") {
  SECTION("napi-ip: assigned, so not free") {
    const json j = fixture("napi-ip.json");
    const IpRecord r = parse_ip(j);
    CHECK(r.ip == "10.88.88.106");
    CHECK(r.network_uuid == "b330e2a1-6260-41a8-8567-a8a011f202f1");
    CHECK_FALSE(r.reserved);
    CHECK_FALSE(r.free);
    CHECK(r.belongs_to_uuid == "0e56fe34-39a3-42d5-86c7-d719487f892b");
    CHECK(r.owner_uuid == "930896af-bf8c-48d4-885c-6573a94b1853");
    CHECK(r.raw == j);
  }
  SECTION("napi-ips-list: every element") {
    const json list = fixture("napi-ips-list.json");
    REQUIRE(list.size() == 2);
    CHECK(parse_ip(list[0]).ip == "10.99.99.9");
    CHECK(parse_ip(list[0]).belongs_to_uuid == "d66d8047-5c23-42a1-a26a-60ee806f7edb");
    CHECK(parse_ip(list[1]).ip == "10.99.99.10");
    CHECK(parse_ip(list[1]).network_uuid == "1275886f-3fdf-456e-bba6-28e0e2eab58f");
  }
  SECTION("napi-ip-reserve-response: explicit free, no network_uuid") {
    const IpRecord r = parse_ip(fixture("napi-ip-reserve-response.json"));
    CHECK(r.ip == "10.99.99.77");
    CHECK(r.reserved);
    CHECK_FALSE(r.free);
    CHECK(r.network_uuid.empty());
  }
  SECTION("napi-nic: a NIC carries the IP fields") {
    const IpRecord r = parse_ip(fixture("napi-nic.json"));
    CHECK(r.ip == "10.88.88.198");
    CHECK(r.belongs_to_uuid == "27391a96-bbbb-bbbb-bbbb-85f948d9c509");
    CHECK_FALSE(r.free);
  }
  SECTION("synthetic unused IP is free") {
    const IpRecord r = parse_ip(
        json{{"ip", "10.0.0.9"}, {"network_uuid", "b330e2a1-6260-41a8-8567-a8a011f202f1"}});
    CHECK(r.free);
    CHECK_FALSE(r.reserved);
  }
  SECTION("missing ip") {
    CHECK_THROWS_WITH(parse_ip(json::object()), Catch::Contains("\"ip\""));
  }
}

TEST_CASE("inventory::parse_image", "[inventory]") {
  const json j = fixture("imgapi-image.json");
  const Image image = parse_image(j);
  CHECK(image.uuid == "01b2c898-945f-11e1-a523-af1afbe22822");
  CHECK(image.name == "smartos");
  CHECK(image.version == "1.6.3");
  CHECK(image.type == "zone-dataset");
  CHECK(image.state == "active");
  CHECK(image.origin.empty());
  CHECK(image.file_size == 46271847);
  CHECK(image.raw == j);

  json with_origin = j;
  with_origin["origin"] = "0e56fe34-39a3-42d5-86c7-d719487f892b";
  with_origin.erase("files");
  CHECK(parse_image(with_origin).origin == "0e56fe34-39a3-42d5-86c7-d719487f892b");
  CHECK(parse_image(with_origin).file_size == 0);
  CHECK_THROWS_WITH(parse_image(json{{"name", "x"}}), Catch::Contains("uuid"));
}

TEST_CASE("inventory::instance_datasets", "[inventory]") {
  SECTION("zone: the zone root only") {
    CHECK(instance_datasets(parse_vm(fixture("vmapi-vm-joyent-zone.json"))) ==
          std::vector<std::string>{"zones/ef375f03-57ca-44a9-bc8d-63aec09fbc37"});
    CHECK(instance_datasets(parse_vm(fixture("vmadm-vm-joyent-minimal.json"))) ==
          std::vector<std::string>{"zones/6d7d6f4b-4553-49f1-bc0b-7fd16dcf0f2c"});
  }
  SECTION("kvm: zone root, then the sibling disks") {
    const std::string uuid = "03750e6a-fcf6-4755-85b5-22b8ddf0f1fb";
    CHECK(instance_datasets(parse_vm(fixture("vmapi-vm-kvm.json"))) ==
          std::vector<std::string>{"zones/" + uuid, "zones/" + uuid + "-disk0",
                                   "zones/" + uuid + "-disk1"});
  }
  SECTION("bhyve: disks are children of the zone root") {
    CHECK(instance_datasets(parse_vm(bhyve_vm())) ==
          std::vector<std::string>{"zones/b4d1f3a2-8c9e-4f1a-9b2c-3d4e5f6a7b8c"});
  }
  SECTION("delegated dataset is a child; duplicates listed once") {
    json j = fixture("vmapi-vm-kvm.json");
    j["delegate_dataset"] = true;
    j["disks"][1]["zfs_filesystem"] = j["disks"][0]["zfs_filesystem"];
    const Vm vm = parse_vm(j);
    CHECK(instance_datasets(vm).size() == 2);
  }
}

TEST_CASE("inventory::platform_older", "[inventory]") {
  CHECK(platform_older("20140429T175502Z", "20151126T011339Z"));
  CHECK_FALSE(platform_older("20151126T011339Z", "20140429T175502Z"));
  CHECK_FALSE(platform_older("20151126T011339Z", "20151126T011339Z"));
  CHECK_FALSE(platform_older("", "20151126T011339Z"));
  CHECK_FALSE(platform_older("20151126T011339Z", ""));
}

TEST_CASE("inventory::Vm::is_core", "[inventory]") {
  Vm vm;
  CHECK_FALSE(vm.is_core());
  vm.tags = {{"smartdc_type", "core"}};
  CHECK(vm.is_core());
  vm.tags = {{"smartdc_type", "customer"}};
  CHECK_FALSE(vm.is_core());
  vm.tags = nullptr;
  CHECK_FALSE(vm.is_core());
}

namespace {

const std::string k_uuid = "f23dab00-980e-11e5-887b-c9e599b7177b";

// The message of the Error(ExitCode::inventory) `f` throws.
template <typename F> std::string refusal(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    CHECK(e.exit_code() == ExitCode::inventory);
    return e.what();
  }
  FAIL("no Error thrown");
  return "";
}

// Values that must never reach a command line.
const std::vector<std::string> k_hostile = {"; rm -rf /",
                                            "$(id)",
                                            "`id`",
                                            "a\nb",
                                            "\"quoted\"",
                                            "'quoted'",
                                            "10.0.0.1; id",
                                            "10.0.0.1 -oProxyCommand=id",
                                            "-oProxyCommand=id",
                                            "zones/x|id",
                                            ""};

} // namespace

TEST_CASE("inventory parsers refuse hostile ids", "[inventory][hostile]") {
  for (const std::string& bad : k_hostile) {
    if (bad.empty()) {
      continue; // absent: not an id at all
    }
    INFO("value: " << bad);
    CHECK_THAT(refusal([&] {
                 parse_vm(json{{"uuid", bad}});
               }),
               Catch::StartsWith("VM: field \"uuid\" is \"") && Catch::Contains("expected a UUID"));
    CHECK_THAT(refusal([&] {
                 parse_vm(json{{"zonename", bad}});
               }),
               Catch::Contains("field \"zonename\""));
    CHECK_THAT(refusal([&] {
                 parse_vm(json{{"uuid", k_uuid}, {"server_uuid", bad}});
               }),
               Catch::Contains("VM " + k_uuid) && Catch::Contains("\"server_uuid\""));
    CHECK_THAT(refusal([&] {
                 parse_vm(json{{"uuid", k_uuid}, {"image_uuid", bad}});
               }),
               Catch::Contains("\"image_uuid\""));
    CHECK_THAT(refusal([&] {
                 parse_vm(json{{"uuid", k_uuid}, {"owner_uuid", bad}});
               }),
               Catch::Contains("\"owner_uuid\""));
    CHECK_THAT(
        refusal([&] {
          parse_vm(json{{"uuid", k_uuid}, {"nics", {{{"ip", "10.0.0.5"}, {"network_uuid", bad}}}}});
        }),
        Catch::Contains("nics[0]") && Catch::Contains("\"network_uuid\""));
    CHECK_THAT(refusal([&] {
                 parse_server(json{{"uuid", bad}});
               }),
               Catch::Contains("CNAPI server") && Catch::Contains("\"uuid\""));
    CHECK_THAT(refusal([&] {
                 parse_server(json{{"sysinfo", {{"UUID", bad}}}});
               }),
               Catch::Contains("\"UUID\""));
    CHECK_THAT(refusal([&] {
                 parse_image(json{{"uuid", bad}});
               }),
               Catch::Contains("IMGAPI image") && Catch::Contains("\"uuid\""));
    CHECK_THAT(refusal([&] {
                 parse_image(json{{"uuid", k_uuid}, {"origin", bad}});
               }),
               Catch::Contains("\"origin\""));
    CHECK_THAT(refusal([&] {
                 parse_ip(json{{"ip", "10.0.0.5"}, {"network_uuid", bad}});
               }),
               Catch::Contains("\"network_uuid\""));
  }
  // The value is quoted with control characters escaped: a newline cannot forge a log line.
  CHECK(refusal([&] {
          parse_vm(json{{"uuid", "a\nb"}});
        }) == "VM: field \"uuid\" is \"a\\x0ab\", expected a UUID");
  CHECK(refusal([&] {
          parse_vm(json{{"uuid", "\"x\""}});
        }) == "VM: field \"uuid\" is \"\\\"x\\\"\", expected a UUID");
}

TEST_CASE("inventory parsers refuse hostile addresses", "[inventory][hostile]") {
  const json server = fixture("cnapi-server.json");
  for (const std::string& bad : k_hostile) {
    if (bad.empty()) {
      continue;
    }
    INFO("value: " << bad);
    json j = server;
    j["sysinfo"]["Admin IP"] = bad;
    CHECK_THAT(refusal([&] { parse_server(j); }),
               Catch::Contains("\"admin_ip\"") && Catch::Contains("an IPv4 or IPv6 address"));
    j = server;
    j["sysinfo"]["Network Interfaces"]["e1000g1"]["ip4addr"] = bad;
    CHECK_THAT(refusal([&] { parse_server(j); }), Catch::Contains("\"admin_ip\""));

    CHECK_THAT(refusal([&] {
                 parse_vm(json{{"uuid", k_uuid}, {"nics", {{{"ip", bad}}}}});
               }),
               Catch::Contains("nics[0]") && Catch::Contains("field \"ip\""));
    CHECK_THAT(refusal([&] {
                 parse_vm(json{{"uuid", k_uuid}, {"nics", {{{"ips", {bad}}}}}});
               }),
               Catch::Contains("field \"ips\""));
    CHECK_THAT(refusal([&] {
                 parse_ip(json{{"ip", bad}});
               }),
               Catch::StartsWith("NAPI IP: field \"ip\""));
  }
  SECTION("literals are accepted: IPv4, IPv6, dhcp/addrconf, vmadm's ip/prefix") {
    json j = server;
    j["sysinfo"]["Admin IP"] = "fd00:99::7";
    CHECK(parse_server(j).admin_ip == "fd00:99::7");
    const Vm vm = parse_vm(
        json{{"uuid", k_uuid},
             {"nics",
              {{{"ip", "10.0.0.5"}},
               {{"ip", "fd00::5"}},
               {{"ip", "addrconf"}, {"ips", {"addrconf", "fd00::6/64", "10.0.0.6/24"}}}}}});
    CHECK(vm.nics[0].ip == "10.0.0.5");
    CHECK(vm.nics[1].ip == "fd00::5");
    CHECK(vm.nics[2].ip == "10.0.0.6");
    CHECK(parse_ip(json{{"ip", "fd00::9"}}).ip == "fd00::9");
  }
  SECTION("a prefix that is not a number, an address with a port or brackets") {
    for (const char* bad : {"10.0.0.6/x", "10.0.0.6/", "10.0.0.6:22", "[fd00::5]", "10.0.0.256",
                            "10.0.0.6 ", " 10.0.0.6", "fd00::5%net0"}) {
      INFO(bad);
      CHECK_THROWS_AS(parse_vm(json{{"uuid", k_uuid}, {"nics", {{{"ips", {bad}}}}}}), Error);
    }
  }
  SECTION("a hostname is displayed, not validated: it never reaches a command") {
    json j = server;
    j["hostname"] = "cn1; rm -rf /";
    CHECK(parse_server(j).hostname == "cn1; rm -rf /");
  }
}

TEST_CASE("inventory parsers refuse datasets that are not the instance's own",
          "[inventory][hostile]") {
  const std::string root = "zones/" + k_uuid;
  auto vm_with = [&](json extra) {
    json j = {{"uuid", k_uuid}, {"brand", "joyent"}};
    j.update(extra);
    return j;
  };
  SECTION("zfs_filesystem: exactly <pool>/<uuid>") {
    for (const std::string& bad : std::vector<std::string>{
             std::string("zones"), std::string("zones/"), "zones/" + k_uuid + "/data",
             std::string("zones/00000000-0000-4000-8000-000000000001"), "zones/" + k_uuid + "; id",
             "zones/$(id)", "zones/" + k_uuid + "\n", "-zones/" + k_uuid, "zones//" + k_uuid,
             "zones/../" + k_uuid, "a/b/" + k_uuid, "/zones/" + k_uuid, "'zones/" + k_uuid + "'"}) {
      INFO(bad);
      CHECK_THAT(refusal([&] {
                   parse_vm(vm_with({{"zfs_filesystem", bad}}));
                 }),
                 Catch::Contains("field \"zfs_filesystem\"") &&
                     Catch::Contains("expected <pool>/" + k_uuid));
    }
    CHECK(parse_vm(vm_with({{"zfs_filesystem", "data/" + k_uuid}})).zfs_filesystem ==
          "data/" + k_uuid);
    // The pool named in zpool and the one in zfs_filesystem must agree.
    CHECK_THROWS_WITH(parse_vm(vm_with({{"zpool", "data"}, {"zfs_filesystem", root}})),
                      Catch::Contains("\"zfs_filesystem\""));
  }
  SECTION("zpool: a pool name") {
    for (const char* bad : {"zones/x", "; rm -rf /", "$(id)", "-zones", "zo nes", ""}) {
      INFO(bad);
      if (*bad == '\0') {
        CHECK(parse_vm(vm_with({{"zpool", bad}})).zfs_filesystem == root);
        continue;
      }
      CHECK_THROWS_WITH(parse_vm(vm_with({{"zpool", bad}})), Catch::Contains("\"zpool\""));
    }
  }
  SECTION("zonepath: an absolute path of safe components ending in the uuid") {
    for (const std::string& bad : std::vector<std::string>{
             std::string("/"), std::string("/zones"), "zones/" + k_uuid, "/zones/../" + k_uuid,
             "/zones/$(id)/" + k_uuid, "/zones/" + k_uuid + "; id", "/zones//" + k_uuid}) {
      INFO(bad);
      CHECK_THROWS_WITH(parse_vm(vm_with({{"zonepath", bad}})), Catch::Contains("\"zonepath\""));
    }
  }
  SECTION("disks: valid names of this instance only") {
    for (const std::string& bad : std::vector<std::string>{
             std::string("zones"), std::string("zones/other-disk0"),
             std::string("zones/00000000-0000-4000-8000-000000000001-disk0"), root + "-disk0; id",
             root + "-disk0\n", "data/" + k_uuid + "-disk0", root + "x-disk0", root}) {
      INFO(bad);
      CHECK_THAT(refusal([&] {
                   parse_vm(vm_with({{"brand", "kvm"}, {"disks", {{{"zfs_filesystem", bad}}}}}));
                 }),
                 Catch::Contains("disks[0]") && Catch::Contains("\"zfs_filesystem\""));
    }
    CHECK_THROWS_WITH(parse_vm(vm_with({{"brand", "kvm"},
                                        {"disks", {{{"path", "/dev/zvol/rdsk/zones/$(id)"}}}}})),
                      Catch::Contains("field \"path\""));
    CHECK_THROWS_WITH(parse_vm(vm_with({{"brand", "kvm"}, {"disks", {{{"zpool", "$(id)"}}}}})),
                      Catch::Contains("field \"zpool\""));
    CHECK_THROWS_WITH(parse_vm(vm_with({{"brand", "kvm"}, {"disks", {{{"image_uuid", "$(id)"}}}}})),
                      Catch::Contains("\"image_uuid\""));
  }
  SECTION("delegated datasets: below the zone root") {
    for (const std::string& bad :
         std::vector<std::string>{std::string("zones"), std::string("zones/data"),
                                  root + "/data; id", "zones/other/data", root}) {
      INFO(bad);
      CHECK_THROWS_WITH(parse_vm(vm_with({{"datasets", {bad}}})),
                        Catch::Contains("\"datasets[0]\""));
    }
    CHECK(parse_vm(vm_with({{"datasets", {{{"name", root + "/data"}}}}})).datasets ==
          std::vector<std::string>{root + "/data"});
  }
}
