// SPDX-License-Identifier: MPL-2.0
// zmigrate_plan_bench: how long plan_placement takes for an evacuation-sized problem. Builds a
// synthetic inventory (by default 1,000 instances over 200 nodes, mixed NIC tags, fabric NICs,
// traits, HVM brands, CPU caps and sizes, some nodes full or unfit, promises from active
// migrations), plans it several times and prints one JSON object: the median and fastest
// planning time, and what the plan did. Deterministic (a fixed seed), so runs compare.
//
//   zmigrate_plan_bench [INSTANCES [NODES [RUNS]]]

#include <zmigrate/migration/placement.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

using namespace zmigrate;

namespace {

std::string uuid_of(unsigned kind, unsigned n) {
  return fmt::format("{:08x}-0000-4000-8000-{:012x}", kind, n);
}

std::vector<inventory::Server> make_nodes(unsigned count, std::mt19937& rng) {
  std::vector<inventory::Server> out;
  for (unsigned i = 0; i < count; ++i) {
    inventory::Server s;
    s.uuid = uuid_of(0xc0, i);
    s.hostname = fmt::format("cn{:04}", i);
    s.status = i % 97 == 13 ? "unknown" : "running";
    s.setup = true;
    s.reserved = i % 89 == 7;
    s.admin_ip = fmt::format("10.0.{}.{}", i / 250, 1 + i % 250);
    s.current_platform = i % 10 == 3 ? "20230101T000000Z" : "20240101T000000Z";
    s.ram_mib = 262144;
    s.unreserved_ram_mib = 16384 + (rng() % 16) * 8192;
    s.unreserved_disk_mib = 200000 + (rng() % 16) * 100000;
    s.unreserved_cpu = 800 + (rng() % 8) * 400;
    s.nic_tags = {"admin", "external"};
    if (i % 3 != 0) {
      s.nic_tags.push_back("internal");
    }
    if (i % 2 == 0) {
      s.nic_tags.push_back("sdc_underlay");
    }
    if (i % 7 == 0) {
      s.down_nic_tags = {"storage"};
    } else if (i % 5 == 0) {
      s.nic_tags.push_back("storage");
    }
    std::sort(s.nic_tags.begin(), s.nic_tags.end());
    if (i % 20 == 0) {
      s.traits = {{"ssd", true}};
    }
    s.vm_capable = true;
    s.bhyve_capable = i % 4 != 1;
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<inventory::Vm> make_instances(unsigned count, std::mt19937& rng) {
  static const unsigned k_ram[] = {256, 512, 1024, 2048, 4096, 8192, 16384};
  std::vector<inventory::Vm> out;
  for (unsigned i = 0; i < count; ++i) {
    inventory::Vm vm;
    vm.uuid = uuid_of(0x5e, i);
    vm.alias = fmt::format("inst{:05}", i);
    vm.brand = i % 11 == 0 ? "bhyve" : (i % 13 == 0 ? "kvm" : "joyent");
    vm.state = "running";
    vm.owner_uuid = uuid_of(0xa0, i % 37);
    vm.ram_mib = k_ram[rng() % 7];
    vm.quota_gib = 5 + rng() % 100;
    vm.vcpus = vm.is_hvm() ? 1 + rng() % 8 : 0;
    if (i % 3 == 0) {
      vm.cpu_cap = 100 + (rng() % 4) * 100;
    }
    inventory::Nic ext;
    ext.interface = "net0";
    ext.nic_tag = "external";
    vm.nics.push_back(ext);
    if (i % 4 == 0) {
      inventory::Nic in;
      in.interface = "net1";
      in.nic_tag = "internal";
      vm.nics.push_back(in);
    }
    if (i % 6 == 0) {
      inventory::Nic fab;
      fab.interface = "net2";
      fab.nic_tag = "sdc_overlay/4711";
      fab.fabric = true;
      vm.nics.push_back(fab);
    }
    if (i % 50 == 0) {
      inventory::Nic st;
      st.interface = "net3";
      st.nic_tag = "storage";
      vm.nics.push_back(st);
    }
    if (i % 40 == 0) {
      vm.traits = {{"ssd", true}};
    }
    out.push_back(std::move(vm));
  }
  return out;
}

unsigned arg(int argc, char** argv, int i, unsigned fallback) {
  return argc > i ? static_cast<unsigned>(std::strtoul(argv[i], nullptr, 10)) : fallback;
}

} // namespace

int main(int argc, char** argv) {
  const unsigned instances = arg(argc, argv, 1, 1000);
  const unsigned node_count = arg(argc, argv, 2, 200);
  const unsigned runs = std::max(1U, arg(argc, argv, 3, 5));
  std::mt19937 rng(20260101);
  std::vector<inventory::Server> nodes = make_nodes(node_count + 1, rng);
  const inventory::Server source = nodes.back(); // the node being evacuated
  const std::vector<inventory::Vm> vms = make_instances(instances, rng);
  // Active migrations already heading to some nodes.
  migration::PromiseLedger active;
  for (unsigned i = 0; i < node_count / 4; ++i) {
    migration::Promise p;
    p.node = nodes[(i * 7) % node_count].uuid;
    p.vm = uuid_of(0xac, i);
    p.owner = uuid_of(0xa0, i % 37);
    p.ram_mib = 4096;
    p.disk_mib = 20480;
    p.cpu = 100;
    active.add(p);
  }
  migration::PlacementOptions options;
  options.separate_owners = true;

  std::vector<double> ms;
  migration::PlacementPlan plan;
  for (unsigned r = 0; r < runs; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    plan = migration::plan_placement(vms, source, nodes, active, options);
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  std::size_t placed = 0;
  std::size_t rejections = 0;
  for (const migration::Placement& p : plan.placements) {
    placed += p.placed ? 1 : 0;
    rejections += p.rejected.size();
  }
  const nlohmann::json out = {{"instances", instances},
                              {"nodes", node_count},
                              {"runs", runs},
                              {"plan_ms_median", sorted[sorted.size() / 2]},
                              {"plan_ms_min", sorted.front()},
                              {"plan_ms", ms},
                              {"placed", placed},
                              {"unplaced", plan.placements.size() - placed},
                              {"rejections", rejections},
                              {"target_ms_max", 1000}};
  std::puts(out.dump().c_str());
  return 0;
}
