// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/placement.hpp>
#include <zmigrate/util/error.hpp>

#include <algorithm>
#include <random>

#include <catch2/catch.hpp>
#include <fmt/format.h>

using nlohmann::json;
using namespace zmigrate;
using namespace zmigrate::migration;

namespace {

const std::string k_owner_a = "a0000000-0000-4000-8000-00000000000a";
const std::string k_owner_b = "b0000000-0000-4000-8000-00000000000b";

inventory::Vm make_vm(const std::string& n, std::uint64_t ram = 512, std::uint64_t quota = 10) {
  inventory::Vm vm;
  vm.uuid = "5eed0000-0000-4000-8000-000000000" + n;
  vm.alias = "web" + n;
  vm.brand = "joyent";
  vm.state = "running";
  vm.owner_uuid = k_owner_a;
  vm.ram_mib = ram;
  vm.quota_gib = quota;
  inventory::Nic nic;
  nic.interface = "net0";
  nic.nic_tag = "external";
  vm.nics.push_back(nic);
  return vm;
}

inventory::Server make_server(const std::string& name, std::uint64_t ram = 8192,
                              std::uint64_t disk = 100000) {
  inventory::Server s;
  s.uuid = "cafe0000-0000-4000-8000-0000000000" + name.substr(name.size() - 2);
  s.hostname = name;
  s.status = "running";
  s.setup = true;
  s.admin_ip = "10.0.0.1";
  s.current_platform = "20240101T000000Z";
  s.unreserved_ram_mib = ram;
  s.unreserved_disk_mib = disk;
  s.nic_tags = {"admin", "external"};
  s.vm_capable = true;
  s.bhyve_capable = true;
  return s;
}

std::vector<std::string> rules(const std::vector<Problem>& problems) {
  std::vector<std::string> out;
  for (const Problem& p : problems) {
    out.push_back(p.rule);
  }
  return out;
}

bool has_rule(const std::vector<Problem>& problems, const std::string& rule) {
  const std::vector<std::string> r = rules(problems);
  return std::find(r.begin(), r.end(), rule) != r.end();
}

const PromiseLedger k_none;
const PlacementOptions k_defaults;

} // namespace

TEST_CASE("migration::placement_problems", "[migration][placement]") {
  const inventory::Server src = make_server("cn01");
  inventory::Server t = make_server("cn02");
  inventory::Vm vm = make_vm("101");
  CHECK(placement_problems(vm, src, t, k_none, k_defaults).empty());

  SECTION("every reason, not only the first") {
    t.status = "unknown";
    t.setup = false;
    t.reserved = true;
    t.headnode = true;
    t.unreserved_ram_mib = 100;
    t.unreserved_disk_mib = 10;
    t.current_platform = "20200101T000000Z";
    const std::vector<Problem> p =
        placement_problems(vm, make_server("cn03", 8192, 100000), t, k_none, k_defaults);
    for (const char* rule : {"status", "setup", "reserved", "headnode", "ram", "disk"}) {
      CHECK(has_rule(p, rule));
    }
    CHECK(has_rule(p, "platform"));
    const std::string text = describe(p);
    CHECK_THAT(text, Catch::Contains("100 MiB free") && Catch::Contains("412 MiB short"));
    CHECK_THAT(text, Catch::Contains("10 MiB free") && Catch::Contains("10230 MiB short"));
  }
  SECTION("the source itself") {
    CHECK(rules(placement_problems(vm, src, src, k_none, k_defaults)) ==
          std::vector<std::string>{"source"});
  }
  SECTION("older platform unless allowed") {
    t.current_platform = "20200101T000000Z";
    CHECK_THAT(describe(placement_problems(vm, src, t, k_none, k_defaults)),
               Catch::Contains("older than the source"));
    PlacementOptions o;
    o.allow_older_platform = true;
    CHECK(placement_problems(vm, src, t, k_none, o).empty());
  }
  SECTION("NIC tags: missing, and only on a down link") {
    vm.nics.push_back(vm.nics.front());
    vm.nics.back().interface = "net1";
    vm.nics.back().nic_tag = "internal";
    std::vector<Problem> p = placement_problems(vm, src, t, k_none, k_defaults);
    REQUIRE(rules(p) == std::vector<std::string>{"nic_tag"});
    CHECK_THAT(p[0].text, Catch::Contains("missing NIC tag internal for NIC net1"));
    t.down_nic_tags = {"internal"};
    p = placement_problems(vm, src, t, k_none, k_defaults);
    CHECK_THAT(p[0].text, Catch::Contains("only on links that are down"));
    t.nic_tags = {"admin", "external", "internal"};
    CHECK(placement_problems(vm, src, t, k_none, k_defaults).empty());
  }
  SECTION("fabric NICs need the underlay (or the overlay tag the node lists)") {
    vm.nics.front().nic_tag = "sdc_overlay/4567";
    vm.nics.front().fabric = true;
    CHECK(vm.nics.front().required_nic_tag() == "sdc_overlay");
    std::vector<Problem> p = placement_problems(vm, src, t, k_none, k_defaults);
    REQUIRE(rules(p) == std::vector<std::string>{"fabric"});
    CHECK_THAT(p[0].text, Catch::Contains("sdc_underlay"));
    t.nic_tags = {"admin", "external", "sdc_underlay"};
    CHECK(placement_problems(vm, src, t, k_none, k_defaults).empty());
    t.overlay_nic_tags = {"other_overlay"};
    CHECK(rules(placement_problems(vm, src, t, k_none, k_defaults)) ==
          std::vector<std::string>{"fabric"});
    t.overlay_nic_tags = {"other_overlay", "sdc_overlay"};
    CHECK(placement_problems(vm, src, t, k_none, k_defaults).empty());
  }
  SECTION("traits as DAPI's hard-filter-traits: image over package, exact set") {
    t.traits = {{"ssd", true}};
    CHECK_THAT(describe(placement_problems(vm, src, t, k_none, k_defaults)),
               Catch::Contains("asks for none"));
    vm.traits = {{"ssd", true}};
    CHECK(placement_problems(vm, src, t, k_none, k_defaults).empty());
    vm.image_traits = {{"ssd", false}}; // the image's wins
    CHECK_THAT(describe(placement_problems(vm, src, t, k_none, k_defaults)),
               Catch::Contains("trait ssd is true on the node"));
    vm.image_traits = json::object();
    vm.traits = {{"ssd", true}, {"gpu", "a100"}};
    CHECK_THAT(describe(placement_problems(vm, src, t, k_none, k_defaults)),
               Catch::Contains("missing trait gpu"));
    t.traits = {{"ssd", true}, {"gpu", {"t4", "a100"}}}; // a string in the node's array
    CHECK(placement_problems(vm, src, t, k_none, k_defaults).empty());
    vm.traits = {{"ssd", true}, {"gpu", {"v100", "t4"}}}; // arrays that intersect
    CHECK(placement_problems(vm, src, t, k_none, k_defaults).empty());
    vm.traits = {{"ssd", true}};
    CHECK_THAT(describe(placement_problems(vm, src, t, k_none, k_defaults)),
               Catch::Contains("trait(s) gpu the instance does not ask for"));
  }
  SECTION("cpu_cap against unreserved CPU after promises") {
    vm.cpu_cap = 200;
    t.unreserved_cpu = 300;
    CHECK(placement_problems(vm, src, t, k_none, k_defaults).empty());
    PromiseLedger promises;
    Promise other = promise_for(make_vm("102"), t.uuid);
    other.cpu = 150;
    promises.add(other);
    const std::vector<Problem> p = placement_problems(vm, src, t, promises, k_defaults);
    REQUIRE(rules(p) == std::vector<std::string>{"cpu"});
    CHECK_THAT(p[0].text, Catch::Contains("cpu_cap 200 > 150"));
    t.unreserved_cpu.reset(); // unknown: not held against it
    CHECK(placement_problems(vm, src, t, promises, k_defaults).empty());
  }
  SECTION("HVM capability") {
    vm.brand = "bhyve";
    vm.vcpus = 4;
    t.bhyve_capable = false;
    CHECK(rules(placement_problems(vm, src, t, k_none, k_defaults)) ==
          std::vector<std::string>{"hvm"});
    t.bhyve_capable = true;
    t.bhyve_max_vcpus = 2;
    CHECK_THAT(describe(placement_problems(vm, src, t, k_none, k_defaults)),
               Catch::Contains("4 vcpus"));
    vm.brand = "kvm";
    t.vm_capable = false;
    CHECK_THAT(describe(placement_problems(vm, src, t, k_none, k_defaults)),
               Catch::Contains("KVM"));
  }
  SECTION("an unreadable record makes the node (or the instance) unplaceable") {
    t.placement_problems = {"sysinfo Network Interfaces \"e1000g0\": is string"};
    CHECK(rules(placement_problems(vm, src, t, k_none, k_defaults)) ==
          std::vector<std::string>{"inventory"});
    t.placement_problems.clear();
    vm.placement_problems = {"field \"cpu_cap\" is string"};
    CHECK(rules(placement_problems(vm, src, t, k_none, k_defaults)) ==
          std::vector<std::string>{"instance"});
  }
  SECTION("the instance's own promise does not count against it") {
    PromiseLedger promises;
    t.unreserved_ram_mib = 600;
    promises.add(promise_for(vm, t.uuid));
    CHECK(placement_problems(vm, src, t, promises, k_defaults).empty());
    promises.add(promise_for(make_vm("102"), t.uuid));
    CHECK_THAT(describe(placement_problems(vm, src, t, promises, k_defaults)),
               Catch::Contains("512 MiB promised to 1 other migration(s)"));
  }
}

TEST_CASE("migration::PromiseLedger", "[migration][placement]") {
  PromiseLedger l;
  l.add(promise_for(make_vm("101", 512), "n1"));
  l.add(promise_for(make_vm("102", 1024), "n1"));
  CHECK(l.on("n1").ram_mib == 1536);
  CHECK(l.on("n1").disk_mib == 20480);
  CHECK(l.on("n1").count == 2);
  CHECK(l.owner_count("n1", k_owner_a) == 2);
  CHECK(l.on("n2").count == 0);
  l.add(promise_for(make_vm("102", 1024), "n2")); // an instance goes to one node only
  CHECK(l.on("n1").ram_mib == 512);
  CHECK(l.on("n2").ram_mib == 1024);
  CHECK(l.owner_count("n1", k_owner_a) == 1);
  CHECK(l.without(make_vm("101").uuid).on("n1").count == 0);
  CHECK(l.all().size() == 2);
}

TEST_CASE("migration::check_named_target", "[migration][placement]") {
  const inventory::Server src = make_server("cn01");
  inventory::Server t = make_server("cn02", 100);
  t.nic_tags = {"admin"};
  const inventory::Vm vm = make_vm("101");
  CHECK_THROWS_AS(check_named_target(vm, src, t, k_none, k_defaults), PreconditionError);
  CHECK_THROWS_WITH(check_named_target(vm, src, t, k_none, k_defaults),
                    Catch::Contains("cn02") && Catch::Contains("not enough unreserved RAM") &&
                        Catch::Contains("missing NIC tag external"));
  CHECK_THROWS_WITH(check_named_target(vm, src, src, k_none, k_defaults),
                    Catch::Contains("current server"));
  PlacementOptions o;
  o.to = {"cn09"}; // --to is placement's; a named node is checked on its own merits
  t = make_server("cn02");
  CHECK_NOTHROW(check_named_target(vm, src, t, k_none, o));
}

TEST_CASE("migration::plan_placement", "[migration][placement]") {
  const inventory::Server src = make_server("cn01");
  std::vector<inventory::Server> servers{src, make_server("cn02", 4096), make_server("cn03", 8192),
                                         make_server("cn04", 2048)};

  SECTION("largest first, most free RAM after promises, never the source") {
    const std::vector<inventory::Vm> vms{make_vm("101", 1024), make_vm("102", 4096),
                                         make_vm("103", 3072)};
    const PlacementPlan plan = plan_placement(vms, src, servers, k_none, k_defaults);
    REQUIRE(plan.complete());
    REQUIRE(plan.placements.size() == 3);
    CHECK(plan.placements[0].vm_uuid == vms[1].uuid); // 4096 first
    CHECK(plan.placements[0].target_hostname == "cn03");
    CHECK(plan.placements[1].target_hostname == "cn02"); // cn03 has 4096 left, cn02 4096: tie
    CHECK(plan.placements[2].target_hostname == "cn03"); // cn03 4096 > cn02 1024
    CHECK(plan.promises.on(servers[2].uuid).ram_mib == 5120);
    CHECK(plan.find(vms[0].uuid)->free_ram_mib == 4096);
  }
  SECTION("capacity with concurrent promises from active migrations") {
    PromiseLedger active;
    Promise p = promise_for(make_vm("900", 7000), servers[2].uuid);
    active.add(p);
    const PlacementPlan plan =
        plan_placement({make_vm("101", 2048)}, src, servers, active, k_defaults);
    CHECK(plan.placements[0].target_hostname == "cn02"); // cn03 has only 1192 MiB left
    CHECK_THAT(describe(plan.placements[0].rejected.front().problems),
               Catch::Contains("7000 MiB promised"));
  }
  SECTION("plan promises spread instances over the nodes") {
    std::vector<inventory::Server> equal{src, make_server("cn02", 4096), make_server("cn03", 4096)};
    std::vector<inventory::Vm> vms;
    for (int i = 0; i < 6; ++i) {
      vms.push_back(make_vm(fmt::format("1{:02}", i), 1024, 1));
    }
    const PlacementPlan plan = plan_placement(vms, src, equal, k_none, k_defaults);
    REQUIRE(plan.complete());
    CHECK(plan.promises.on(equal[1].uuid).count == 3);
    CHECK(plan.promises.on(equal[2].uuid).count == 3);
  }
  SECTION("owner separation") {
    std::vector<inventory::Vm> vms{make_vm("101", 1024), make_vm("102", 1024),
                                   make_vm("103", 1024)};
    vms[2].owner_uuid = k_owner_b;
    PromiseLedger active;
    Promise p = promise_for(make_vm("900", 16), servers[2].uuid); // owner a already on cn03
    active.add(p);
    PlacementOptions o;
    o.separate_owners = true;
    const PlacementPlan plan = plan_placement(vms, src, servers, active, o);
    REQUIRE(plan.complete());
    // Owner a: cn03 holds one already, so cn02 then cn04; owner b: the most RAM, cn03.
    CHECK(plan.find(vms[0].uuid)->target_hostname == "cn02");
    CHECK(plan.find(vms[1].uuid)->target_hostname == "cn04");
    CHECK(plan.find(vms[2].uuid)->target_hostname == "cn03");
    const PlacementPlan mixed = plan_placement(vms, src, servers, active, k_defaults);
    CHECK(mixed.find(vms[0].uuid)->target_hostname == "cn03");
  }
  SECTION("--to and --exclude, and their typos") {
    const std::vector<inventory::Vm> vms{make_vm("101"), make_vm("102")};
    PlacementOptions o;
    o.to = {"cn04", servers[1].uuid};
    o.exclude = {"web102"};
    const PlacementPlan plan = plan_placement(vms, src, servers, k_none, o);
    REQUIRE(plan.placements.size() == 1);
    CHECK(plan.excluded == std::vector<std::string>{vms[1].uuid});
    CHECK(plan.placements[0].target_hostname == "cn02");
    const auto& rejected = plan.placements[0].rejected;
    REQUIRE(rejected.size() == 1);
    CHECK(rejected[0].hostname == "cn03");
    CHECK(rules(rejected[0].problems) == std::vector<std::string>{"to"});
    o.to = {"cn4"};
    CHECK_THROWS_AS(plan_placement(vms, src, servers, k_none, o), UsageError);
    CHECK_THROWS_WITH(plan_placement(vms, src, servers, k_none, o), Catch::Contains("--to cn4"));
    o.to.clear();
    o.exclude = {"web1O2"};
    CHECK_THROWS_WITH(plan_placement(vms, src, servers, k_none, o),
                      Catch::Contains("--exclude web1O2"));
  }
  SECTION("an impossible instance keeps every rejected node with its reasons") {
    inventory::Vm big = make_vm("101", 65536);
    big.nics.front().nic_tag = "storage";
    const PlacementPlan plan =
        plan_placement({big, make_vm("102")}, src, servers, k_none, k_defaults);
    CHECK_FALSE(plan.complete());
    const Placement* p = plan.find(big.uuid);
    REQUIRE(p != nullptr);
    CHECK_FALSE(p->placed);
    REQUIRE(p->rejected.size() == 3);
    for (const RejectedNode& r : p->rejected) {
      CHECK(rules(r.problems) == std::vector<std::string>{"nic_tag", "ram"});
    }
    CHECK(p->rejected[0].hostname == "cn02");
    CHECK(plan.find(make_vm("102").uuid)->placed); // the others still get a node
    CHECK_THROWS_WITH(choose_placement(big, src, servers, k_none, k_defaults),
                      Catch::Contains("no compute node can take it") && Catch::Contains("cn04") &&
                          Catch::Contains("-n"));
    const json j = *p;
    CHECK(j["rejected"][0]["problems"][0]["rule"] == "nic_tag");
  }
  SECTION("deterministic: shuffled input, same plan") {
    std::vector<inventory::Vm> vms;
    for (int i = 0; i < 40; ++i) {
      inventory::Vm vm = make_vm(fmt::format("{:03}", 100 + i), 256 * (1 + i % 4), 1 + i % 3);
      vm.owner_uuid = i % 2 == 0 ? k_owner_a : k_owner_b;
      vms.push_back(vm);
    }
    std::vector<inventory::Server> many{src};
    for (int i = 2; i < 12; ++i) {
      many.push_back(make_server(fmt::format("cn{:02}", i), 4096, 100000));
    }
    PlacementOptions o;
    o.separate_owners = true;
    const PlacementPlan first = plan_placement(vms, src, many, k_none, o);
    const json expected = first.placements;
    std::mt19937 rng(12);
    for (int round = 0; round < 5; ++round) {
      std::shuffle(vms.begin(), vms.end(), rng);
      std::shuffle(many.begin(), many.end(), rng);
      CHECK(json(plan_placement(vms, src, many, k_none, o).placements) == expected);
    }
  }
}
