// SPDX-License-Identifier: MPL-2.0
// Bad and hostile input to begin and migrate, over the engine fakes: what VMAPI, CNAPI, the
// nodes' vmadm and zfs, or the operator hand the engine is wrong, foreign or hostile (shell
// metacharacters, another instance's dataset, a bare pool, a path outside the pool, a node that
// is not running). Each case must end in one zmigrate error (a one-line reason, a documented
// exit code) and change nothing: no record in the state store, no mutating call on any node,
// no write to VMAPI or NAPI.
#include "fakes/engine_world.hpp"

#include <zmigrate/migration/engine.hpp>
#include <zmigrate/util/error.hpp>

#include <algorithm>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

using namespace zmigrate;
using fakes::EngineWorld;

namespace {

struct BadInput {
  std::string name;
  std::function<void(EngineWorld&)> make; // spoils a fresh world
  std::string target = EngineWorld::k_cn2;
  EngineWorld::Kind kind = EngineWorld::Kind::zone;
};

// Change the VMAPI payload of the instance (parsed as HttpInventory parses it).
void vmapi(EngineWorld& w, const std::function<void(nlohmann::json&)>& f) {
  nlohmann::json raw = w.inv.vms.at(EngineWorld::k_vm).raw;
  f(raw);
  w.inv.add_vm(raw);
}
// Change the instance's vmadm object on the source node.
void vmadm(EngineWorld& w, const std::function<void(nlohmann::json&)>& f) {
  f(w.cn1->instances.at(EngineWorld::k_vm));
}
inventory::Server& server(EngineWorld& w, const std::string& uuid) {
  for (inventory::Server& s : w.inv.servers) {
    if (s.uuid == uuid) {
      return s;
    }
  }
  throw std::runtime_error("no server " + uuid);
}

const std::string k_other = "0ddba11e-0000-4000-8000-00000000beef"; // another instance

std::vector<BadInput> cases() {
  using K = EngineWorld::Kind;
  auto vm_field = [](const std::string& key, nlohmann::json value) {
    return [key, value](EngineWorld& w) { vmapi(w, [&](nlohmann::json& j) { j[key] = value; }); };
  };
  auto vmadm_field = [](const std::string& key, nlohmann::json value) {
    return [key, value](EngineWorld& w) { vmadm(w, [&](nlohmann::json& j) { j[key] = value; }); };
  };
  std::vector<BadInput> c = {
      // --- the operator's arguments ---
      {"unknown instance", [](EngineWorld& w) { w.inv.vms.clear(); }},
      {"target is the source", [](EngineWorld&) {}, EngineWorld::k_cn1},
      {"unknown target uuid", [](EngineWorld&) {}, "5eed0000-0000-4000-8000-000000000999"},
      {"unknown target hostname", [](EngineWorld&) {}, "cn9"},
      {"target hostname with shell metacharacters", [](EngineWorld&) {}, "cn2;reboot"},
      // --- VMAPI's instance ---
      {"instance destroyed", vm_field("state", "destroyed")},
      {"instance provisioning", vm_field("state", "provisioning")},
      {"instance failed", vm_field("state", "failed")},
      {"unsupported brand", vm_field("brand", "sngl")},
      {"empty brand", vm_field("brand", "")},
      {"a Triton core zone", vm_field("tags", {{"smartdc_type", "core"}})},
      {"zfs_filesystem the bare pool", vm_field("zfs_filesystem", "zones")},
      {"zfs_filesystem another instance's", vm_field("zfs_filesystem", "zones/" + k_other)},
      {"zfs_filesystem with $(...)", vm_field("zfs_filesystem", "zones/$(reboot)")},
      {"zfs_filesystem with ; and a space",
       vm_field("zfs_filesystem", std::string("zones/") + EngineWorld::k_vm + "; rm -rf /")},
      {"zfs_filesystem with ..", vm_field("zfs_filesystem", "zones/../etc")},
      {"uuid of the payload is another instance's", vm_field("uuid", k_other)},
      {"a delegated dataset of another instance",
       vm_field("datasets", nlohmann::json::array({"zones/" + k_other + "/data"}))},
      {"a delegated dataset with a backquote",
       vm_field("datasets",
                nlohmann::json::array({std::string("zones/") + EngineWorld::k_vm + "/`id`"}))},
      {"server_uuid not a uuid", vm_field("server_uuid", "cn1;reboot")},
      {"server_uuid of no server", vm_field("server_uuid", "5eed0000-0000-4000-8000-00000000abcd")},
      {"server_uuid of another node than vmadm's", vm_field("server_uuid", EngineWorld::k_cn3)},
      {"ram larger than any node", vm_field("ram", 1 << 30)},
      {"max_physical_memory larger than any node", vm_field("max_physical_memory", 1 << 30)},
      {"quota larger than any node", vm_field("quota", 1 << 30)},
      // --- the source node's vmadm and zfs ---
      {"vmadm on the source does not know it",
       [](EngineWorld& w) { w.cn1->instances.erase(EngineWorld::k_vm); }},
      {"vmadm names another instance's zone root",
       vmadm_field("zfs_filesystem", "zones/" + k_other)},
      {"vmadm names the bare pool", vmadm_field("zfs_filesystem", "zones")},
      {"vmadm's zone root with metacharacters", vmadm_field("zfs_filesystem", "zones/a'b\"c")},
      {"vmadm's zone root outside the pool", vmadm_field("zfs_filesystem", "/etc")},
      {"vmadm's zonepath the global zone's root", vmadm_field("zonepath", "/")},
      {"vmadm's zonepath another instance's", vmadm_field("zonepath", "/zones/" + k_other)},
      {"VMAPI's zonepath the global zone's root", vm_field("zonepath", "/")},
      // --- the target node ---
      {"target not running",
       [](EngineWorld& w) { server(w, EngineWorld::k_cn2).status = "unknown"; }},
      {"target not set up", [](EngineWorld& w) { server(w, EngineWorld::k_cn2).setup = false; }},
      {"target without memory",
       [](EngineWorld& w) { server(w, EngineWorld::k_cn2).unreserved_ram_mib = 16; }},
      {"target without disk",
       [](EngineWorld& w) { server(w, EngineWorld::k_cn2).unreserved_disk_mib = 16; }},
      {"target on an older platform",
       [](EngineWorld& w) { server(w, EngineWorld::k_cn2).current_platform = "20100101T000000Z"; }},
      {"target already has the instance",
       [](EngineWorld& w) {
         w.cn2->instances[EngineWorld::k_vm] = w.cn1->instances.at(EngineWorld::k_vm);
       }},
      {"target already has the zone root", [](EngineWorld& w) { w.cn2->add_dataset(w.root()); }},
      {"target already has the delegated dataset",
       [](EngineWorld& w) {
         w.cn2->add_dataset(w.root());
         w.cn2->add_dataset(w.data_ds());
       }},
      // --- a KVM instance ---
      {"KVM disk of another instance",
       [](EngineWorld& w) {
         vmapi(w, [](nlohmann::json& j) { j["disks"][1]["zfs_filesystem"] = "zones/" + k_other; });
       },
       EngineWorld::k_cn2, K::kvm},
      {"KVM disk outside the pool",
       [](EngineWorld& w) {
         vmapi(w, [](nlohmann::json& j) { j["disks"][1]["zfs_filesystem"] = "/dev/zvol/x"; });
       },
       EngineWorld::k_cn2, K::kvm},
      {"KVM disk with a newline",
       [](EngineWorld& w) {
         vmapi(w, [](nlohmann::json& j) {
           j["disks"][1]["zfs_filesystem"] =
               std::string("zones/") + EngineWorld::k_vm + "-disk1\nzones/" + k_other;
         });
       },
       EngineWorld::k_cn2, K::kvm},
  };
  return c;
}

// Node calls that change something (every other call only reads).
bool mutates(const std::string& call) {
  static const std::set<std::string> reads = {"vm_get",
                                              "tree",
                                              "properties",
                                              "dataset_exists",
                                              "snapshots",
                                              "host_key",
                                              "caps",
                                              "hierarchy",
                                              "zone_export",
                                              "check_mountpoints",
                                              "resume_token_snapshot"};
  return reads.count(call.substr(0, call.find(' '))) == 0;
}

std::vector<std::string> changes(EngineWorld& w, std::size_t cn1_calls, std::size_t cn2_calls,
                                 std::size_t cn3_calls, std::size_t inv_calls) {
  std::vector<std::string> out;
  const std::pair<fakes::FakeNode*, std::size_t> nodes[] = {
      {w.cn1.get(), cn1_calls}, {w.cn2.get(), cn2_calls}, {w.cn3.get(), cn3_calls}};
  for (const auto& [n, from] : nodes) {
    for (std::size_t i = from; i < n->calls.size(); ++i) {
      if (mutates(n->calls[i])) {
        out.push_back(n->host() + ": " + n->calls[i]);
      }
    }
  }
  for (std::size_t i = inv_calls; i < w.inv.calls.size(); ++i) {
    const std::string& c = w.inv.calls[i];
    if (c.rfind("put_vm", 0) == 0 || c.rfind("set_ip_reserved", 0) == 0 ||
        c.rfind("update_vm", 0) == 0) {
      out.push_back("inventory: " + c);
    }
  }
  if (w.has_record()) {
    out.push_back("a migration record exists");
  }
  if (!w.store.writes.empty()) {
    out.push_back("state store written: " + w.store.writes.front());
  }
  if (!w.nodes.calls.empty()) {
    out.push_back("data link used: " + w.nodes.calls.front());
  }
  return out;
}

void check_refused(const BadInput& b, bool via_migrate) {
  EngineWorld w(b.kind);
  const std::size_t c1 = w.cn1->calls.size();
  const std::size_t c2 = w.cn2->calls.size();
  const std::size_t c3 = w.cn3->calls.size();
  const std::size_t ci = w.inv.calls.size();
  INFO(b.name << (via_migrate ? " (migrate)" : " (begin)"));
  bool refused = false;
  try {
    b.make(w); // a payload the inventory parser refuses is refused here, as HttpInventory does
    if (via_migrate) {
      migration::MigrateOptions o;
      o.begin.vm_uuid = EngineWorld::k_vm;
      o.begin.target = b.target;
      o.finalize = true;
      migration::migrate(w.ctx, o);
    } else {
      migration::BeginOptions o;
      o.vm_uuid = EngineWorld::k_vm;
      o.target = b.target;
      migration::begin(w.ctx, o);
    }
  } catch (const Error& e) {
    refused = true;
    INFO("error: " << e.what() << " (exit " << static_cast<int>(e.exit_code()) << ")");
    CHECK(std::string(e.what()).find('\n') == std::string::npos);
    CHECK_FALSE(e.subject().empty());
    CHECK_FALSE(e.reason().empty());
    const ExitCode code = e.exit_code();
    CHECK((code == ExitCode::usage || code == ExitCode::not_found ||
           code == ExitCode::precondition || code == ExitCode::inventory));
  }
  CHECK(refused);
  const std::vector<std::string> changed = changes(w, c1, c2, c3, ci);
  INFO("changed: " << (changed.empty() ? std::string("nothing") : changed.front()));
  CHECK(changed.empty());
}

} // namespace

TEST_CASE("engine: bad and hostile input to begin and migrate changes nothing",
          "[engine][badinput]") {
  const std::vector<BadInput> all = cases();
  CHECK(all.size() >= 40);
  for (const BadInput& b : all) {
    check_refused(b, false);
    check_refused(b, true);
  }
  WARN(fmt::format("bad inputs: {} cases, each through begin and through migrate", all.size()));
}

TEST_CASE("engine: a clone whose origin is not an image is sent in full, and nothing imported",
          "[engine][badinput]") {
  for (const std::string origin : {"zones/$(reboot)@final", "../etc@final", "zones/a b@final"}) {
    INFO(origin);
    EngineWorld w;
    w.cn1->set_local(w.root(), "origin", origin);
    w.begin();
    CHECK(std::none_of(w.cn2->calls.begin(), w.cn2->calls.end(),
                       [](const std::string& c) { return c.rfind("image_import", 0) == 0; }));
    const migration::SyncResult s = w.sync();
    REQUIRE_FALSE(s.transfers.empty());
    CHECK(s.transfers.front().kind == "full");
  }
}
