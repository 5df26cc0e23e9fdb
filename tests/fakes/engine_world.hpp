// SPDX-License-Identifier: MPL-2.0
#pragma once
// EngineWorld: a whole small cloud for engine unit tests, wired into one migration::Context:
// FakeInventory (VMAPI/CNAPI/NAPI) with three compute nodes, a FakeNode per node (cn1 the
// source, cn2 the target, cn3 a spare), FakeNodeAccess handing them out with FakeLinks, the real
// state store on ":memory:" (MemoryStateStore), a ManualClock (wait_vmapi's polling advances
// it), a NullReporter and a NullLogger, and one instance built from the vmadm fixture:
//   - Kind::zone:  a joyent zone whose root zones/<uuid> is a clone of an image (and carries a
//     user's snapshot), with a delegated dataset zones/<uuid>/data and a cores dataset;
//   - Kind::kvm:   a KVM instance: zones/<uuid>, disk0 a volume cloned from an image, disk1 a
//     plain volume;
//   - Kind::bhyve: a bhyve instance: its disks zones/<uuid>/disk0 (a clone of an image) and
//     disk1 below the zone root, whose quota equals its reservation (begin lifts it for the
//     syncs, switch puts it back: TRITON-1407).
// It also knows what a correct outcome looks like: the invariants (never two running copies,
// the source's data intact until a finalize proved the target, the ledger matching the nodes)
// and the end state of every phase (expect_* return what is wrong, empty when all is right).
// Tests use it as ninja's build_test.cc uses its VirtualFileSystem (engine-models.md 4.8, 4.9).

#include "fakes/fake_inventory.hpp"
#include "fakes/fake_node.hpp"
#include "fakes/manual_clock.hpp"
#include "fakes/memory_state_store.hpp"

#include <zmigrate/migration/context.hpp>
#include <zmigrate/migration/engine.hpp>
#include <zmigrate/migration/plan.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/log.hpp>
#include <zmigrate/zfs/names.hpp>

#include <atomic>
#include <exception>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace zmigrate::fakes {

class EngineWorld {
public:
  enum class Kind { zone, kvm, bhyve };

  static constexpr const char* k_vm = "6d7d6f4b-4553-49f1-bc0b-7fd16dcf0f2c";
  static constexpr const char* k_image = "cd2d08a0-83f1-11e5-8684-f383641a9854";
  static constexpr const char* k_kvm_image = "56108678-1183-11e1-83c3-ff3185a5b47f";
  static constexpr const char* k_net = "a1b2c3d4-0000-4000-8000-000000000001";
  static constexpr const char* k_ip = "10.192.0.8";
  static constexpr const char* k_cn1 = "564d0000-0000-4000-8000-0000000000c1";
  static constexpr const char* k_cn2 = "564d0000-0000-4000-8000-0000000000c2";
  static constexpr const char* k_cn3 = "564d0000-0000-4000-8000-0000000000c3";

  ManualClock clock;
  FakeInventory inv;
  MemoryStateStore store{clock};
  NullLogger log;
  migration::NullReporter reporter;
  ImageCatalog catalog;
  FakeNodeAccess nodes;
  std::unique_ptr<FakeNode> cn1; // source
  std::unique_ptr<FakeNode> cn2; // target
  std::unique_ptr<FakeNode> cn3; // spare
  migration::Context ctx{inv, nodes, store, clock, log, reporter, migration::Settings{}, {}};
  Kind kind;
  bool was_running;
  std::atomic<bool> two_running{false}; // ever both copies running at once
  int hook_fired = 0;
  // The operator's authorized_keys on every node: two lines, the last without a final newline
  // (the file that once left root locked out).
  std::string operator_keys =
      "ssh-ed25519 AAAAC3operator1 ops@head\nssh-rsa AAAAB3operator2 backup@head";

  explicit EngineWorld(Kind k = Kind::zone, bool running = true) : kind(k), was_running(running) {
    ctx.settings.lease_heartbeat_ms = 5;
    ctx.settings.hostname = "headnode";
    catalog.images[k_image] = {fake_new_guid(), 40, "filesystem"};
    catalog.images[k_kvm_image] = {fake_new_guid(), 60, "volume"};
    // IMGAPI knows both (begin checks an image it will import there first).
    inv.add_image(
        {{"uuid", k_image}, {"name", "base"}, {"state", "active"}, {"type", "zone-dataset"}});
    inv.add_image(
        {{"uuid", k_kvm_image}, {"name", "ubuntu"}, {"state", "active"}, {"type", "zvol"}});
    inv.add_server(k_cn1, "cn1", "10.99.0.11");
    inv.add_server(k_cn2, "cn2", "10.99.0.12");
    inv.add_server(k_cn3, "cn3", "10.99.0.13").unreserved_ram_mib = 4096; // placement: cn2
    cn1 = std::make_unique<FakeNode>(inv.servers[0], &catalog);
    cn2 = std::make_unique<FakeNode>(inv.servers[1], &catalog);
    cn3 = std::make_unique<FakeNode>(inv.servers[2], &catalog);
    for (FakeNode* n : {cn1.get(), cn2.get(), cn3.get()}) {
      n->authorized_keys = operator_keys;
      n->add_dataset("zones").mounted = true;
      n->add_dataset("zones/cores").mounted = true;
      nodes.add(*n);
      n->after_start = [this](const std::string& uuid) {
        int running_copies = 0;
        for (FakeNode* m : {cn1.get(), cn2.get(), cn3.get()}) {
          running_copies += m->running(uuid) ? 1 : 0;
        }
        if (running_copies > 1) {
          two_running = true;
        }
      };
    }
    build_instance();
    // vm-agent: a node reports the state of a visible instance VMAPI places on it.
    inv.vm_agent = [this](const std::string& uuid) {
      const auto it = inv.vms.find(uuid);
      if (it == inv.vms.end()) {
        return;
      }
      for (FakeNode* n : {cn1.get(), cn2.get(), cn3.get()}) {
        const auto l = n->lock();
        const auto vm = n->instances.find(uuid);
        if (n->server().uuid != it->second.server_uuid || vm == n->instances.end() ||
            vm->second.value("do_not_inventory", false)) {
          continue;
        }
        nlohmann::json raw = it->second.raw;
        raw["state"] = vm->second.value("state", "");
        raw["zone_state"] = vm->second.value("zone_state", "");
        inv.add_vm(raw);
      }
    };
    // vm-agent reports a hidden instance as destroyed (it leaves the node's inventory) when
    // VMAPI places it on that node; VMAPI shows it again only after the next report.
    for (FakeNode* n : {cn1.get(), cn2.get(), cn3.get()}) {
      n->after_hide = [this, n](const std::string& uuid) {
        const auto it = inv.vms.find(uuid);
        if (it == inv.vms.end() || it->second.server_uuid != n->server().uuid) {
          return;
        }
        nlohmann::json raw = it->second.raw;
        raw["state"] = "destroyed";
        raw["zone_state"] = "destroyed";
        inv.add_vm(raw);
      };
    }
  }

  // --- the instance ---
  static nlohmann::json fixture(const std::string& name) {
    std::ifstream in(std::string(ZMIGRATE_FIXTURES_DIR) + "/" + name);
    std::stringstream ss;
    ss << in.rdbuf();
    return nlohmann::json::parse(ss.str());
  }
  std::string root() const { return std::string("zones/") + k_vm; }
  std::string data_ds() const { return root() + "/data"; }
  std::string disk(int n) const { return fmt::format("zones/{}-disk{}", k_vm, n); }
  std::string cores() const { return std::string("zones/cores/") + k_vm; }
  std::string bhyve_disk(int n) const { return fmt::format("{}/disk{}", root(), n); }
  const char* image() const { return kind == Kind::zone ? k_image : k_kvm_image; }
  static constexpr std::uint64_t k_bhyve_quota = 30ULL << 30;
  // Every dataset of the instance (roots and below), as on the source at the start.
  std::vector<std::string> instance_datasets() const {
    if (kind == Kind::kvm) {
      return {root(), disk(0), disk(1)};
    }
    if (kind == Kind::bhyve) {
      return {root(), bhyve_disk(0), bhyve_disk(1)};
    }
    return {root(), data_ds()};
  }
  std::vector<std::string> roots() const {
    if (kind == Kind::kvm) {
      return {root(), disk(0), disk(1)};
    }
    return {root()};
  }

  void build_instance() {
    nlohmann::json vm = fixture("vmadm-vm-joyent-minimal.json");
    vm["uuid"] = k_vm;
    vm["zonename"] = k_vm;
    vm["server_uuid"] = k_cn1;
    vm["zfs_filesystem"] = root();
    vm["zonepath"] = "/" + root();
    vm["state"] = was_running ? "running" : "stopped";
    vm["zone_state"] = was_running ? "running" : "installed";
    vm["autoboot"] = true;
    vm["nics"][0]["network_uuid"] = k_net;
    vm["tags"] = nlohmann::json::object();
    FakeNode& s = *cn1;
    s.image_import(image());
    if (kind == Kind::zone) {
      vm["brand"] = "joyent";
      vm["image_uuid"] = k_image;
      vm["datasets"] = {data_ds()};
      s.add_dataset(root()).content = 45;
      s.set_local(root(), "origin", std::string("zones/") + k_image + "@final");
      s.set_local(root(), "mountpoint", "/" + root());
      s.set_local(root(), "quota", std::to_string(25ULL << 30));
      s.add_snapshot(root(), "backup"); // a user's snapshot travels along (TRITON-1809)
      s.datasets.at(root()).content = 47;
      s.add_dataset(data_ds()).content = 10;
      s.set_local(data_ds(), "zoned", "on");
      s.set_local(data_ds(), "mountpoint", "/data");
    } else {
      // A hardware VM: KVM's disks are siblings of the zone root, bhyve's lie below it, and
      // bhyve's root has quota == reservation.
      const bool bhyve = kind == Kind::bhyve;
      const std::string d0 = bhyve ? bhyve_disk(0) : disk(0);
      const std::string d1 = bhyve ? bhyve_disk(1) : disk(1);
      const std::uint64_t quota = bhyve ? k_bhyve_quota : 10ULL << 30;
      vm["brand"] = bhyve ? "bhyve" : "kvm";
      vm["image_uuid"] = k_kvm_image;
      vm["ram"] = 1024;
      vm["max_physical_memory"] = 1024;
      vm["quota"] = quota >> 30;
      vm["disks"] = nlohmann::json::array({{{"path", "/dev/zvol/rdsk/" + d0},
                                            {"boot", true},
                                            {"model", "virtio"},
                                            {"image_uuid", k_kvm_image},
                                            {"size", 10240},
                                            {"zfs_filesystem", d0},
                                            {"zpool", "zones"}},
                                           {{"path", "/dev/zvol/rdsk/" + d1},
                                            {"model", "virtio"},
                                            {"size", 5120},
                                            {"zfs_filesystem", d1},
                                            {"zpool", "zones"}}});
      s.add_dataset(root()).content = 3;
      s.set_local(root(), "mountpoint", "/" + root());
      s.set_local(root(), "quota", std::to_string(quota));
      if (bhyve) {
        s.set_local(root(), "reservation", std::to_string(quota));
      }
      s.add_dataset(d0, "volume").content = 70;
      s.set_local(d0, "origin", std::string("zones/") + k_kvm_image + "@final");
      s.set_local(d0, "volsize", std::to_string(10ULL << 30));
      s.add_dataset(d1, "volume").content = 20;
      s.set_local(d1, "volsize", std::to_string(5ULL << 30));
    }
    s.add_dataset(cores()).mounted = true;
    s.set_local(cores(), "mountpoint", "/" + root() + "/cores");
    if (was_running) {
      for (const std::string& ds : s.subtree(root())) {
        s.datasets.at(ds).mounted =
            s.datasets.at(ds).type == "filesystem" && s.prop_of(ds, "zoned") != "on";
      }
    }
    s.instances[k_vm] = vm;
    nlohmann::json api = vm;
    api.erase("zonename");
    inv.add_vm(api);
  }

  // --- phases ---
  migration::BeginResult begin() {
    migration::BeginOptions o;
    o.vm_uuid = k_vm;
    o.target = k_cn2;
    return migration::begin(ctx, o);
  }
  migration::SyncResult sync() { return migration::sync(ctx, k_vm); }
  migration::SwitchResult switch_over() { return migration::switch_over(ctx, k_vm); }
  migration::RollbackResult rollback() { return migration::rollback(ctx, k_vm, false); }
  state::Migration abort() { return migration::abort(ctx, k_vm); }
  state::Migration finalize() { return migration::finalize(ctx, k_vm); }
  migration::MigrateResult migrate(bool finalize_too = false) {
    migration::MigrateOptions o;
    o.begin.vm_uuid = k_vm;
    o.begin.target = k_cn2;
    o.finalize = finalize_too;
    return migration::migrate(ctx, o);
  }
  // The migration of the instance (the active one, else the latest).
  state::Migration record() {
    if (auto m = store.find_active_for_vm(k_vm)) {
      return *m;
    }
    return store.find_latest_for_vm(k_vm).value();
  }
  bool has_record() { return store.find_latest_for_vm(k_vm).has_value(); }

  // --- step faults ---
  // Throw at the `occurrence`-th (1-based) run of journal step `step`, before it runs or after
  // it ran (before it is journaled ok).
  void fail_at_step(const std::string& step, int occurrence, bool before) {
    auto seen = std::make_shared<int>(0);
    ctx.settings.step_hook = [this, step, occurrence, before, seen](const std::string& name,
                                                                    bool is_before) {
      if (name != step) {
        return;
      }
      if (is_before) {
        ++*seen;
      }
      if (*seen == occurrence && is_before == before) {
        ++hook_fired;
        throw Error(ExitCode::failure, "step " + name,
                    fmt::format("injected {} run {}", before ? "before" : "after", occurrence));
      }
    };
  }
  void clear_step_fault() { ctx.settings.step_hook = {}; }

  // --- crashes (kill -9 of the head node's process) ---
  // What a killed process's code throws from the crash on. Not an Error, so no handler of the
  // engine takes it for a node or API failure; a std::exception, so destructors and the
  // log-and-go-on handlers let it pass (and everything they try throws it again).
  struct Crash : std::exception {
    const char* what() const noexcept override { return "killed (a simulated kill -9)"; }
  };
  bool crashed = false;
  std::string crash_write; // the write the process died before
  // Kill the process just before its `k`-th (1-based) state store write from now: that write
  // and everything after it (writes, node, link and inventory calls) never happen; what came
  // before happened in full.
  void crash_at_write(int k) {
    auto n = std::make_shared<int>(0);
    crashed = false;
    store.before_write = [this, n, k](const std::string& line) {
      if (!crashed && ++*n == k) {
        crashed = true;
        crash_write = line;
      }
      if (crashed) {
        throw Crash();
      }
    };
    auto gate = [this](const std::string&) {
      if (crashed) {
        throw Crash();
      }
    };
    for (FakeNode* nd : {cn1.get(), cn2.get(), cn3.get()}) {
      nd->gate = gate;
    }
    nodes.gate = gate;
    inv.before_call = gate;
  }
  // A new zmigrate process on the same head node: the dead one's lease is stale (its pid is
  // gone, which try_acquire_lease checks; here the row is released for it), and none of its
  // links is open in this process.
  void restart_after_crash() {
    store.before_write = {};
    for (FakeNode* nd : {cn1.get(), cn2.get(), cn3.get()}) {
      nd->gate = {};
    }
    nodes.gate = {};
    inv.before_call = {};
    crashed = false;
    nodes.open_dirs.clear();
    nodes.kept_link = nullptr;
    if (has_record()) {
      store.real().release_lease(record().id, static_cast<int>(::getpid()));
    }
  }

  // The journal steps begun since `from` (an index into store.writes), in order.
  std::vector<std::string> steps_since(std::size_t from) const {
    std::vector<std::string> out;
    for (std::size_t i = from; i < store.writes.size(); ++i) {
      const std::string& w = store.writes[i];
      if (w.rfind("begin_step ", 0) == 0) {
        out.push_back(w.substr(11));
      }
    }
    return out;
  }

  // --- the model, read ---
  std::string synced_snap() {
    const std::string s = record().data.value("synced_snap", "");
    return s.substr(s.find('@') + 1);
  }
  // GUID of `ds@snap` on `n`, 0 when absent.
  static std::uint64_t guid(const FakeNode& n, const std::string& ds, const std::string& snap) {
    const FakeNode::Snapshot* s = n.find_snapshot(ds + "@" + snap);
    return s == nullptr ? 0 : s->guid;
  }
  bool verify_proven() {
    if (!has_record()) {
      return false;
    }
    for (const state::Step& s : store.steps(record().id)) {
      if (s.name.find("verify") != std::string::npos && s.status == "ok") {
        return true;
      }
    }
    return false;
  }
  std::vector<std::string> migration_snaps(const FakeNode& n, const std::string& id) const {
    std::vector<std::string> out;
    const auto l = n.lock();
    for (const auto& [name, d] : n.datasets) {
      for (const FakeNode::Snapshot& s : d.snapshots) {
        if (zfs::parse_migration_snap(id, s.snap) >= 0) {
          out.push_back(name + "@" + s.snap);
        }
      }
    }
    return out;
  }
  std::vector<std::string> held(const FakeNode& n) const {
    std::vector<std::string> out;
    const auto l = n.lock();
    for (const auto& [name, d] : n.datasets) {
      for (const FakeNode::Snapshot& s : d.snapshots) {
        if (!s.holds.empty()) {
          out.push_back(name + "@" + s.snap);
        }
      }
    }
    return out;
  }

  // What the source looked like before a phase: its datasets' content and the GUIDs of the
  // newest snapshot both nodes share (the synced base).
  struct Baseline {
    std::map<std::string, std::uint64_t> content;
    std::map<std::string, std::uint64_t> base_guid; // dataset → guid (absent: none yet)
  };
  Baseline baseline() {
    Baseline b;
    for (const std::string& ds : instance_datasets()) {
      b.content[ds] = cn1->datasets.at(ds).content;
      const std::uint64_t g = common_guid(ds);
      if (g != 0) {
        b.base_guid[ds] = g;
      }
    }
    return b;
  }
  // The newest snapshot of `ds` the source and the target hold with the same GUID (0: none).
  std::uint64_t common_guid(const std::string& ds) {
    const auto l1 = cn1->lock();
    const auto l2 = cn2->lock();
    if (cn1->datasets.count(ds) == 0 || cn2->datasets.count(ds) == 0) {
      return 0;
    }
    std::uint64_t g = 0;
    for (const FakeNode::Snapshot& s : cn1->datasets.at(ds).snapshots) {
      for (const FakeNode::Snapshot& t : cn2->datasets.at(ds).snapshots) {
        if (s.guid == t.guid) {
          g = s.guid;
        }
      }
    }
    return g;
  }

  // --- invariants: what must hold after any failure (empty = all hold) ---
  // `keep_base`: the synced base must survive (sync, switch, finalize before its proof; not
  // abort or rollback, which throw the copy away on purpose). `dangling` receives ledger rows
  // naming nothing (written before their act, which then failed): allowed after a failure, not
  // at an end state.
  std::vector<std::string> invariants(const Baseline& b, bool keep_base,
                                      std::vector<std::string>* dangling = nullptr) {
    std::vector<std::string> bad;
    if (two_running || (cn1->running(k_vm) && cn2->running(k_vm))) {
      bad.push_back("two running copies of the instance");
    }
    const bool proven = verify_proven();
    if (!proven) {
      for (const auto& [ds, content] : b.content) {
        if (cn1->datasets.count(ds) == 0) {
          bad.push_back("source dataset destroyed before finalize proved the target: " + ds);
        } else if (cn1->datasets.at(ds).content < content) {
          bad.push_back("source dataset lost data: " + ds);
        }
      }
      if (keep_base) {
        for (const auto& [ds, g] : b.base_guid) {
          bool ok = false;
          for (const FakeNode::Snapshot& s : cn1->datasets.count(ds) != 0
                                                 ? cn1->datasets.at(ds).snapshots
                                                 : std::vector<FakeNode::Snapshot>{}) {
            ok = ok || s.guid == g;
          }
          if (!ok && common_guid(ds) == 0) {
            bad.push_back("the synced base of " + ds + " is gone and no newer one is shared");
          }
        }
      }
    }
    if (!has_record()) {
      return bad;
    }
    const state::Migration m = record();
    const std::vector<state::Artefact> live = store.live_artefacts(m.id);
    auto node_named = [&](const std::string& host) -> FakeNode* {
      for (FakeNode* n : {cn1.get(), cn2.get(), cn3.get()}) {
        if (n->host() == host) {
          return n;
        }
      }
      return nullptr;
    };
    // Nothing the ledger does not know: our mark on a dataset has its live row (another
    // zmigrate's mark is not ours to account for).
    bool mark_row = false;
    for (const state::Artefact& a : live) {
      mark_row = mark_row || a.kind == "source_mark";
    }
    for (FakeNode* n : {cn1.get(), cn2.get(), cn3.get()}) {
      for (const auto& [ds, d] : n->datasets) {
        const auto p = d.props.find(migration::k_mark_property);
        if (p != d.props.end() && p->second == m.id && !mark_row) {
          bad.push_back(fmt::format("{}: {} carries the mark {} with no live ledger row", n->host(),
                                    ds, p->second));
        }
      }
    }
    std::vector<std::string> names_nothing;
    for (const state::Artefact& a : live) {
      bool exists = true;
      if (a.kind == "target_dataset") {
        exists = cn2->has(a.name);
      } else if (a.kind == "zone_config") {
        exists = cn2->instances.count(a.name) != 0;
      } else if (a.kind == "ip_reservation") {
        const auto it =
            inv.ips.find({a.details.value("network_uuid", ""), a.details.value("ip", "")});
        exists = it != inv.ips.end() && it->second.reserved;
      } else if (a.kind == "data_path_dir") {
        FakeNode* n = node_named(a.host);
        exists = n != nullptr && n->paths.count(a.name) != 0;
      } else if (a.kind == "authorized_key") {
        FakeNode* n = node_named(a.host);
        exists = n != nullptr &&
                 n->authorized_keys.find(a.details.value("line", "") + "\n") != std::string::npos;
      } else if (a.kind == "quota_removed") {
        exists = cn1->prop_of(a.name, "quota") == "0";
      } else if (a.kind == "source_mark") {
        exists = false;
        for (FakeNode* n : {cn1.get(), cn2.get()}) {
          exists =
              exists || (n->has(a.name) && n->prop_of(a.name, migration::k_mark_property) == m.id);
        }
      } else {
        bad.push_back("unknown ledger kind " + a.kind);
      }
      if (!exists) {
        names_nothing.push_back(a.kind + " " + a.name);
      }
    }
    if (dangling != nullptr) {
      *dangling = names_nothing;
    } else {
      for (const std::string& d : names_nothing) {
        bad.push_back("live ledger row names nothing: " + d);
      }
    }
    auto in_ledger = [&](const std::string& kind_, const std::string& name) {
      for (const state::Artefact& a : live) {
        if (a.kind == kind_ &&
            (a.name == name || (kind_ == "target_dataset" && name.rfind(a.name + "/", 0) == 0))) {
          return true;
        }
      }
      return false;
    };
    const bool instance_is_targets = proven || (m.archived && m.phase == state::Phase::finalize);
    if (!instance_is_targets) {
      for (const std::string& ds : instance_datasets()) {
        if (cn2->has(ds) && !in_ledger("target_dataset", ds)) {
          bad.push_back("target dataset not in the ledger: " + ds);
        }
      }
      if (cn2->instances.count(k_vm) != 0 && !in_ledger("zone_config", k_vm)) {
        bad.push_back("target instance not in the ledger");
      }
    }
    if (cn2->has(cores()) && cn2->instances.count(k_vm) == 0) {
      bad.push_back("target cores dataset without the instance");
    }
    for (FakeNode* n : {cn1.get(), cn2.get()}) {
      for (const std::string& p : n->paths) {
        if (!in_ledger("data_path_dir", p)) {
          bad.push_back(fmt::format("data path dir {} on {} not in the ledger", p, n->host()));
        }
      }
    }
    for (const auto& [key, ip] : inv.ips) {
      if (ip.reserved && !in_ledger("ip_reservation", key.first + "/" + key.second)) {
        bad.push_back("IP reserved outside the ledger: " + key.second);
      }
    }
    // Never a line or file changed that zmigrate did not write: take out the lines the ledger
    // knows (with the newlines their installs added) and the operator's file is back, byte for
    // byte.
    for (FakeNode* n : {cn1.get(), cn2.get()}) {
      std::string keys = n->authorized_keys;
      for (const state::Artefact& a : live) {
        if (a.kind == "authorized_key" && a.host == n->host()) {
          fake_remove_key_line(keys, a.details.value("line", ""),
                               a.details.value("added_newline", false));
        }
      }
      if (keys != operator_keys) {
        bad.push_back(fmt::format("authorized_keys on {} is not the operator's file plus lines "
                                  "the ledger knows: {}",
                                  n->host(), nlohmann::json(n->authorized_keys).dump()));
      }
    }
    return bad;
  }

  // --- end states (empty = as the happy path leaves it) ---
  // `parked_ok`: a sync's end, where one data path may stay, parked in the ledger for the
  // migration's next command (Link::park); anywhere else none is left.
  std::vector<std::string> common_end(const state::Migration& m, bool parked_ok = false) {
    std::vector<std::string> bad = invariants(Baseline{}, false);
    const std::vector<state::Artefact> live = store.live_artefacts(m.id);
    std::set<std::string> parked_paths;
    for (const state::Artefact& a : live) {
      if (parked_ok && a.details.value("parked", false)) {
        parked_paths.insert(a.details.value("path_id", ""));
      }
    }
    if (parked_paths.size() > 1) {
      bad.push_back(fmt::format("{} parked data paths, not one", parked_paths.size()));
    }
    for (FakeNode* n : {cn1.get(), cn2.get()}) {
      std::string keys = n->authorized_keys;
      for (const std::string& dir : n->paths) {
        const bool parked = std::any_of(live.begin(), live.end(), [&](const state::Artefact& a) {
          return a.kind == "data_path_dir" && a.host == n->host() && a.name == dir &&
                 parked_paths.count(a.details.value("path_id", "")) != 0;
        });
        if (!parked) {
          bad.push_back("data path left on " + n->host() + ": " + dir);
        }
      }
      for (const state::Artefact& a : live) {
        if (a.kind == "authorized_key" && a.host == n->host() &&
            parked_paths.count(a.details.value("path_id", "")) != 0) {
          fake_remove_key_line(keys, a.details.value("line", ""),
                               a.details.value("added_newline", false));
        }
      }
      if (keys != operator_keys) {
        bad.push_back("authorized_keys on " + n->host() + " is not the operator's file" +
                      (parked_ok ? " plus the parked path's line" : ""));
      }
    }
    if (m.archived) {
      if (!store.live_artefacts(m.id).empty()) {
        bad.push_back("live ledger rows after the migration ended");
      }
      for (FakeNode* n : {cn1.get(), cn2.get()}) {
        if (!held(*n).empty()) {
          bad.push_back("snapshots still held on " + n->host() + ": " + held(*n).front());
        }
        if (!migration_snaps(*n, m.id).empty()) {
          bad.push_back("migration snapshots left on " + n->host() + ": " +
                        migration_snaps(*n, m.id).front());
        }
      }
      for (const auto& [key, ip] : inv.ips) {
        if (ip.reserved) {
          bad.push_back("IP still reserved: " + key.second);
        }
      }
    }
    return bad;
  }
  static void expect(std::vector<std::string>& bad, bool ok, const std::string& what) {
    if (!ok) {
      bad.push_back(what);
    }
  }
  // bhyve: the zone root's quota on `n` is `lifted` (none) or back at the reservation.
  void expect_quota(std::vector<std::string>& bad, FakeNode& n, bool lifted) {
    if (kind != Kind::bhyve || !n.has(root())) {
      return;
    }
    const std::string want = lifted ? "0" : std::to_string(k_bhyve_quota);
    expect(bad, n.prop_of(root(), "quota") == want,
           fmt::format("quota of {} on {} is {}, not {}", root(), n.host(),
                       n.prop_of(root(), "quota"), want));
  }
  // Every dataset of the instance on the target holds the synced snapshot with the source's
  // GUID, and (when `heads`) its data equals the source's.
  void expect_copy(std::vector<std::string>& bad, bool heads) {
    const std::string snap = synced_snap();
    expect(bad, !snap.empty(), "no synced snapshot in the record");
    for (const std::string& ds : instance_datasets()) {
      const std::uint64_t g = guid(*cn1, ds, snap);
      expect(bad, g != 0, "source lacks " + ds + "@" + snap);
      expect(bad, g == guid(*cn2, ds, snap), "target's " + ds + "@" + snap + " differs");
      if (heads && cn1->datasets.count(ds) != 0 && cn2->datasets.count(ds) != 0) {
        expect(bad, cn1->datasets.at(ds).content == cn2->datasets.at(ds).content,
               "target's data of " + ds + " differs from the source's");
      }
    }
  }
  std::vector<std::string> expect_begun() {
    const state::Migration m = record();
    std::vector<std::string> bad = common_end(m);
    expect(bad, m.phase == state::Phase::begin && m.state == state::State::paused,
           "record is not begin/paused");
    expect_quota(bad, *cn1, true);
    expect(bad, cn2->has(std::string("zones/") + image()), "image not imported on the target");
    expect(bad, cn1->running(k_vm) == was_running, "source state changed");
    return bad;
  }
  std::vector<std::string> expect_synced(int syncs) {
    const state::Migration m = record();
    std::vector<std::string> bad = common_end(m, true);
    expect(bad, m.phase == state::Phase::sync && m.state == state::State::paused,
           "record is not sync/paused");
    expect(bad, m.num_sync_phases == syncs,
           fmt::format("num_sync_phases {} not {}", m.num_sync_phases, syncs));
    expect_copy(bad, false);
    expect(bad, cn1->running(k_vm) == was_running, "source state changed");
    expect(bad, cn2->instances.count(k_vm) == 0, "target has an instance before the switch");
    expect_quota(bad, *cn1, true);
    return bad;
  }
  std::vector<std::string> expect_switched() {
    const state::Migration m = record();
    std::vector<std::string> bad = common_end(m);
    expect(bad, m.phase == state::Phase::switch_ && m.state == state::State::successful,
           "record is not switch/successful");
    expect(bad, cn1->instances.count(k_vm) != 0, "source instance gone");
    if (cn1->instances.count(k_vm) != 0) {
      const nlohmann::json& s = cn1->instances.at(k_vm);
      expect(bad, s.value("state", "") == "stopped", "source not stopped");
      expect(bad, s.value("do_not_inventory", false), "source not hidden");
      expect(bad, !s.value("autoboot", true), "source autoboot on");
    }
    expect(bad, cn2->instances.count(k_vm) != 0, "target instance missing");
    if (cn2->instances.count(k_vm) != 0) {
      const nlohmann::json& t = cn2->instances.at(k_vm);
      expect(bad, t.value("state", "") == (was_running ? "running" : "stopped"),
             "target state is " + t.value("state", ""));
      expect(bad, !t.value("do_not_inventory", false), "target hidden");
      expect(bad, t.value("autoboot", false), "target autoboot off");
    }
    const auto vm = inv.vms.find(k_vm);
    expect(bad, vm != inv.vms.end() && vm->second.server_uuid == k_cn2, "VMAPI not on target");
    expect(bad, vm != inv.vms.end() && vm->second.state == (was_running ? "running" : "stopped"),
           "VMAPI state wrong");
    expect_copy(bad, true);
    expect(bad, cn2->has(cores()), "target has no cores dataset");
    expect_quota(bad, *cn1, false);
    expect_quota(bad, *cn2, false);
    return bad;
  }
  std::vector<std::string> expect_finalized() {
    const state::Migration m = record();
    std::vector<std::string> bad = common_end(m);
    expect(bad, m.archived && m.phase == state::Phase::finalize, "record not finalize, archived");
    expect(bad, cn1->instances.count(k_vm) == 0, "source instance still there");
    for (const std::string& ds : instance_datasets()) {
      expect(bad, !cn1->has(ds), "source dataset still there: " + ds);
      expect(bad, cn2->has(ds), "target dataset gone: " + ds);
    }
    expect(bad, cn2->running(k_vm) == was_running, "target state wrong");
    const auto vm = inv.vms.find(k_vm);
    expect(bad, vm != inv.vms.end() && vm->second.server_uuid == k_cn2, "VMAPI not on target");
    expect(bad, cn1->has(std::string("zones/") + image()), "source image gone");
    expect_quota(bad, *cn2, false);
    return bad;
  }
  // The source is the instance again, as it was; nothing of the migration on the target.
  std::vector<std::string> expect_source_primary(const state::Migration& m) {
    std::vector<std::string> bad = common_end(m);
    expect(bad, cn1->instances.count(k_vm) != 0, "source instance gone");
    if (cn1->instances.count(k_vm) != 0) {
      const nlohmann::json& s = cn1->instances.at(k_vm);
      expect(bad, s.value("state", "") == (was_running ? "running" : "stopped"),
             "source state is " + s.value("state", ""));
      expect(bad, !s.value("do_not_inventory", false), "source hidden");
      expect(bad, s.value("autoboot", false), "source autoboot off");
    }
    for (const std::string& ds : instance_datasets()) {
      expect(bad, cn1->has(ds), "source dataset gone: " + ds);
      expect(bad, !cn2->has(ds), "target dataset left: " + ds);
    }
    expect(bad, cn2->instances.count(k_vm) == 0, "target instance left");
    expect(bad, !cn2->has(cores()), "target cores dataset left");
    const auto vm = inv.vms.find(k_vm);
    expect(bad, vm != inv.vms.end() && vm->second.server_uuid == k_cn1, "VMAPI not on source");
    expect(bad, vm != inv.vms.end() && vm->second.state == (was_running ? "running" : "stopped"),
           "VMAPI state wrong");
    expect_quota(bad, *cn1, false);
    return bad;
  }
  std::vector<std::string> expect_rolled_back() {
    const state::Migration m = record();
    std::vector<std::string> bad = expect_source_primary(m);
    expect(bad, m.archived && m.phase == state::Phase::rollback, "record not rollback, archived");
    return bad;
  }
  std::vector<std::string> expect_aborted() {
    const state::Migration m = record();
    std::vector<std::string> bad = expect_source_primary(m);
    expect(bad, m.archived && m.phase == state::Phase::abort, "record not abort, archived");
    return bad;
  }
};

} // namespace zmigrate::fakes
