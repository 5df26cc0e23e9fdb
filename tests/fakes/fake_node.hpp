// SPDX-License-Identifier: MPL-2.0
#pragma once
// FakeNode, FakeLink, FakeNodeAccess: the stateful fakes behind migration::Node and
// migration::Link, so a whole engine phase (begin, sync, switch, rollback, abort, finalize,
// migrate) can run in a unit test and be judged by its effects on two in-memory compute nodes,
// as ninja's VirtualFileSystem lets its builder be judged (engine-models.md 3(e), 4.8, 4.9).
//
// A FakeNode models one compute node:
//  - instances: the `vmadm get` objects (state running/stopped, do_not_inventory, autoboot,
//    zonepath, zfs_filesystem, disks, datasets, indestructible_*), and which of them were staged
//    by zone_import (a hidden zone configuration, not yet started);
//  - ZFS: datasets (filesystem or volume) with properties and where they came from (local or
//    received: quota, reservation, mountpoint, origin, zoned, canmount), a `content` counter that
//    stands for the data (a running instance writes: every snapshot of it sees new content), a
//    `mounted` flag, snapshots with GUIDs, a monotonic createtxg, the content they froze and
//    their holds; a data-path directory set and root's authorized_keys text for FakeLink;
//  - images: image_import creates <pool>/<image>@final with the GUID of the world's catalog.
// Semantics follow node.hpp and the tools it stands for: vm_get is nullopt for an unknown uuid;
// vm_start of a running instance, vm_stop of a stopped one and zone_import of an existing zone
// throw; destroy_dataset refuses what owned_by_instance rejects; destroys of absent things pass;
// a held snapshot (or a dataset whose snapshots are held, a clone's origin, a running zone's
// root) cannot be destroyed ("dataset is busy"); rollback_to only to the newest snapshot.
// Every call is recorded in `calls` ("vm_stop <uuid>", "destroy_dataset zones/<uuid>", ...),
// and any named operation can be made to throw zmigrate::Error once (fail_next), always
// (fail_always) or whenever a predicate over the call line says so (fail_when).
//
// FakeLink moves a Stream from one FakeNode to another as zfs send | zfs recv -u would: full
// (`zfs send ds@to`: that snapshot only, a new dataset whose parent must exist), clone (`-i
// origin`: a new dataset, the origin must be on the receiver with the same GUID), incremental
// (`-I from`: every snapshot after `from` up to `to`; the receiver's newest snapshot must be
// `from` by GUID and its data unchanged since). GUIDs, content and the sent properties
// (as "received") travel; received datasets stay unmounted. It refuses datasets its spec does
// not name (the real key's forced command does) and can be told to fail the next send. Its
// data-path directories and the target's key line are in the ledger (kinds data_path_dir and
// authorized_key, the exact line and whether a newline was added before it) while it is open,
// as DataPath's; close and remove_leftover_links take out exactly that line, and open first
// removes what earlier links of the migration left, as DataPath::open does.
//
// FakeNodeAccess hands out FakeNodes by server uuid and FakeLinks; there is no runner.

#include <zmigrate/migration/context.hpp>
#include <zmigrate/migration/data_path.hpp>
#include <zmigrate/migration/link.hpp>
#include <zmigrate/migration/node.hpp>
#include <zmigrate/migration/plan.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/zfs/capabilities.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace zmigrate::fakes {

// Images the world knows (IMGAPI's files): uuid → the GUID and content of its @final snapshot,
// the same on every node that imports it, and its type (filesystem for zones, volume for HVMs).
struct ImageCatalog {
  struct Image {
    std::uint64_t guid = 0;
    std::uint64_t content = 0;
    std::string type = "filesystem";
  };
  std::map<std::string, Image> images;
};

// A GUID no other snapshot of this process has (real ones are random 64-bit numbers).
inline std::uint64_t fake_new_guid() {
  static std::atomic<std::uint64_t> counter{0};
  return (++counter) * 0x9e3779b97f4a7c15ULL;
}

class FakeNode final : public migration::Node {
public:
  struct Snapshot {
    std::string snap; // the part after '@'
    std::uint64_t guid = 0;
    std::uint64_t createtxg = 0;
    std::uint64_t content = 0;
    std::set<std::string> holds;
  };
  struct Dataset {
    std::string type = "filesystem"; // or volume
    std::uint64_t guid = 0;
    std::uint64_t createtxg = 0;
    std::uint64_t content = 0; // the data; a snapshot freezes it
    bool mounted = false;
    std::map<std::string, std::string> props;        // set ones only: quota, mountpoint, ...
    std::map<std::string, std::string> prop_sources; // "local" or "received"
    std::vector<Snapshot> snapshots;                 // oldest first
  };

  FakeNode(inventory::Server server, const ImageCatalog* catalog)
      : m_server(std::move(server)), m_catalog(catalog) {
    m_caps.implementation = "fake";
    m_caps.version = "2.3.2";
    m_caps.holds = true;
    m_caps.multi_snapshot = true;
    m_caps.dry_run_parsable = true;
    m_caps.compressed_send = m_caps.large_blocks = m_caps.embedded_data = true;
    m_caps.written_property = true;
    m_caps.zvols = true;
    m_caps.resume_tokens = false; // FakeLink never leaves a partial receive
  }

  // --- the model (public: tests set it up and read it; lock() when other threads may run) ---
  std::map<std::string, nlohmann::json> instances; // by uuid: the vmadm object
  std::set<std::string> staged;                    // instances created by zone_import
  std::map<std::string, Dataset> datasets;         // by full name
  std::set<std::string> paths;                     // data-path directories (FakeLink)
  // root's authorized_keys, byte for byte (FakeLink appends and removes its key line here, as
  // DataPath does: a newline first when the file lacks a final one, recorded in the ledger).
  std::string authorized_keys;
  // Called before every operation (reads too) with its call line; may throw.
  std::function<void(const std::string& call)> gate;
  std::vector<std::string> calls;
  std::uint64_t txg = 1000;
  // Called after every successful vm_start (the world checks "never two running copies").
  std::function<void(const std::string& uuid)> after_start;
  // Called after a vm_update that hid an instance (do_not_inventory=true): the world's vm-agent
  // reports it destroyed at once, as Triton's does; it reports it again only when asked.
  std::function<void(const std::string& uuid)> after_hide;

  std::unique_lock<std::recursive_mutex> lock() const {
    return std::unique_lock<std::recursive_mutex>(m_mutex);
  }

  // --- fault injection: `op` is the operation's name ("vm_start", "destroy_dataset", ...) or a
  // whole call line ("vm_stop <uuid>") ---
  void fail_next(const std::string& op, const std::string& message = "injected failure") {
    const auto l = lock();
    m_faults.push_back({op, message, true, {}});
  }
  void fail_always(const std::string& op, const std::string& message = "injected failure") {
    const auto l = lock();
    m_faults.push_back({op, message, false, {}});
  }
  // Throw whenever `pred` (given the call line) says so.
  void fail_when(std::function<bool(const std::string& call)> pred,
                 const std::string& message = "injected failure") {
    const auto l = lock();
    m_faults.push_back({"", message, false, std::move(pred)});
  }
  void clear_faults() {
    const auto l = lock();
    m_faults.clear();
  }
  int injected = 0; // faults that fired

  // --- building the model ---
  Dataset& add_dataset(const std::string& name, const std::string& type = "filesystem") {
    const auto l = lock();
    Dataset& d = datasets[name];
    d.type = type;
    d.guid = fake_new_guid();
    d.createtxg = ++txg;
    return d;
  }
  Snapshot& add_snapshot(const std::string& ds, const std::string& snap,
                         std::optional<std::uint64_t> guid = std::nullopt) {
    const auto l = lock();
    Dataset& d = datasets.at(ds);
    d.snapshots.push_back({snap, guid.value_or(fake_new_guid()), ++txg, d.content, {}});
    return d.snapshots.back();
  }
  void set_local(const std::string& ds, const std::string& prop, const std::string& value) {
    const auto l = lock();
    datasets.at(ds).props[prop] = value;
    datasets.at(ds).prop_sources[prop] = "local";
  }
  const Snapshot* find_snapshot(const std::string& full) const {
    const auto l = lock();
    const auto at = full.find('@');
    if (at == std::string::npos) {
      return nullptr;
    }
    const auto d = datasets.find(full.substr(0, at));
    if (d == datasets.end()) {
      return nullptr;
    }
    for (const Snapshot& s : d->second.snapshots) {
      if (s.snap == full.substr(at + 1)) {
        return &s;
      }
    }
    return nullptr;
  }
  Snapshot* find_snapshot(const std::string& full) {
    return const_cast<Snapshot*>(static_cast<const FakeNode*>(this)->find_snapshot(full));
  }
  bool has(const std::string& name) const {
    const auto l = lock();
    return datasets.count(name) != 0 || find_snapshot(name) != nullptr;
  }
  // `root` and its descendants, parents first.
  std::vector<std::string> subtree(const std::string& root) const {
    const auto l = lock();
    std::vector<std::string> out;
    for (const auto& [name, d] : datasets) {
      if (name == root || name.rfind(root + "/", 0) == 0) {
        out.push_back(name);
      }
    }
    return out;
  }
  std::string state_of(const std::string& uuid) const {
    const auto l = lock();
    const auto it = instances.find(uuid);
    return it == instances.end() ? std::string() : it->second.value("state", "");
  }
  bool running(const std::string& uuid) const { return state_of(uuid) == "running"; }
  // The datasets an instance's vmadm object names (zone root, disks; delegated ones lie below).
  static std::vector<std::string> instance_datasets(const nlohmann::json& vm) {
    std::vector<std::string> out;
    if (vm.contains("zfs_filesystem")) {
      out.push_back(vm.at("zfs_filesystem").get<std::string>());
    }
    if (vm.contains("disks") && vm.at("disks").is_array()) {
      for (const nlohmann::json& d : vm.at("disks")) {
        if (d.contains("zfs_filesystem")) {
          out.push_back(d.at("zfs_filesystem").get<std::string>());
        }
      }
    }
    return out;
  }

  // --- migration::Node ---
  const inventory::Server& server() const override { return m_server; }
  const std::string& host() const override { return m_server.hostname; }
  const zfs::Capabilities& caps() override {
    const auto l = lock();
    enter("caps");
    return m_caps;
  }
  zfs::Capabilities& mutable_caps() { return m_caps; }
  inventory::Server& mutable_server() { return m_server; }
  // Recorded only: the fake's own capabilities stay the truth.
  void assume_caps(const zfs::Capabilities&) override {
    const auto l = lock();
    enter("assume_caps");
  }

  std::optional<nlohmann::json> vm_get(const std::string& uuid) override {
    const auto l = lock();
    enter("vm_get " + uuid);
    const auto it = instances.find(uuid);
    if (it == instances.end()) {
      return std::nullopt;
    }
    return it->second;
  }

  void vm_stop(const std::string& uuid) override {
    const auto l = lock();
    enter("vm_stop " + uuid);
    nlohmann::json& vm = instance(uuid, "vmadm stop");
    if (vm.value("state", "") != "running") {
      throw Error(ExitCode::failure, fmt::format("{}: vmadm stop {}", host(), uuid),
                  fmt::format("Unable to stop VM: state is {}", vm.value("state", "")));
    }
    vm["state"] = "stopped";
    vm["zone_state"] = "installed";
  }

  void vm_start(const std::string& uuid) override {
    {
      const auto l = lock();
      enter("vm_start " + uuid);
      nlohmann::json& vm = instance(uuid, "vmadm start");
      if (vm.value("state", "") == "running") {
        throw Error(ExitCode::failure, fmt::format("{}: vmadm start {}", host(), uuid),
                    "Unable to start VM: already running");
      }
      for (const std::string& ds : instance_datasets(vm)) {
        if (datasets.count(ds) == 0) {
          throw Error(ExitCode::failure, fmt::format("{}: vmadm start {}", host(), uuid),
                      fmt::format("zoneadm: dataset {} does not exist", ds));
        }
      }
      vm["state"] = "running";
      vm["zone_state"] = "running";
      staged.erase(uuid);
      const std::string root = vm.value("zfs_filesystem", "");
      for (const std::string& ds : subtree(root)) {
        Dataset& d = datasets.at(ds);
        if (d.type == "filesystem" && prop_of(ds, "zoned") != "on") {
          d.mounted = true;
        }
      }
    }
    if (after_start) {
      after_start(uuid);
    }
  }

  void vm_update(const std::string& uuid, const migration::KeyValues& kv) override {
    const auto l = lock();
    std::string line = "vm_update " + uuid;
    for (const auto& [k, v] : kv) {
      line += " " + k + "=" + v;
    }
    bool hidden = false;
    {
      enter(line);
      nlohmann::json& vm = instance(uuid, "vmadm update");
      for (const auto& [k, v] : kv) {
        if (v == "true" || v == "false") {
          vm[k] = v == "true";
        } else {
          vm[k] = v;
        }
        hidden = hidden || (k == "do_not_inventory" && v == "true");
      }
    }
    if (hidden && after_hide) {
      after_hide(uuid);
    }
  }

  // The update as the command a real node would run; FakeLink's send_streams carries it out
  // (run_update_command). `ride_update = false`: a node whose update never rides along.
  remote::Command vm_update_command(const std::string& uuid,
                                    const migration::KeyValues& kv) override {
    if (!ride_update) {
      return {};
    }
    remote::Argv argv{"vmadm", "update", uuid};
    for (const auto& [k, v] : kv) {
      argv.push_back(k + "=" + v);
    }
    return remote::Command(argv);
  }
  void run_update_command(const remote::Command& cmd) {
    const remote::Argv& a = cmd.pipeline.at(0);
    if (cmd.pipeline.size() != 1 || a.size() < 3 || a[0] != "vmadm" || a[1] != "update") {
      throw Error(ExitCode::failure, m_server.hostname, "the fake cannot run " + a.at(0));
    }
    migration::KeyValues kv;
    for (std::size_t i = 3; i < a.size(); ++i) {
      const std::size_t eq = a[i].find('=');
      kv.emplace_back(a[i].substr(0, eq), a[i].substr(eq + 1));
    }
    vm_update(a[2], kv);
  }
  bool ride_update = true;

  void vm_delete(const std::string& uuid) override {
    const auto l = lock();
    enter("vm_delete " + uuid);
    const auto it = instances.find(uuid);
    if (it == instances.end()) {
      return; // proven gone
    }
    const nlohmann::json& vm = it->second;
    if (vm.value("indestructible_zoneroot", false) || vm.value("indestructible_delegated", false)) {
      throw Error(ExitCode::failure, fmt::format("{}: vmadm delete {}", host(), uuid),
                  "indestructible_zoneroot or indestructible_delegated is set");
    }
    std::vector<std::string> doomed;
    for (const std::string& root : instance_datasets(vm)) {
      for (const std::string& ds : subtree(root)) {
        doomed.push_back(ds);
      }
    }
    for (const std::string& ds : subtree("zones/cores/" + uuid)) {
      doomed.push_back(ds);
    }
    for (const std::string& ds : doomed) {
      refuse_busy_dataset(ds, doomed, "vmadm delete " + uuid);
    }
    for (const std::string& ds : doomed) {
      datasets.erase(ds);
    }
    instances.erase(it);
    staged.erase(uuid);
  }

  std::string zone_export(const std::string& uuid) override {
    const auto l = lock();
    enter("zone_export " + uuid);
    const nlohmann::json& vm = instance(uuid, "zonecfg export");
    std::string hex;
    for (const unsigned char c : vm.dump()) {
      hex += fmt::format("{:02x}", c);
    }
    return fmt::format("create -b\nset zonepath={}\nset brand={}\nset autoboot={}\n"
                       "add attr\nset name=fake-vmadm-json\nset type=string\nset value={}\nend\n",
                       vm.value("zonepath", ""), vm.value("brand", ""),
                       vm.value("autoboot", true) ? "true" : "false", hex);
  }

  void zone_import(const std::string& migration_id, const std::string& uuid,
                   const std::string& config) override {
    const auto l = lock();
    enter("zone_import " + uuid);
    if (instances.count(uuid) != 0) {
      throw Error(ExitCode::failure, fmt::format("{}: zonecfg -z {}", host(), uuid),
                  "zone already exists");
    }
    nlohmann::json vm;
    bool autoboot = true;
    bool dni = false;
    std::istringstream in(config);
    std::string line;
    std::string attr;
    while (std::getline(in, line)) {
      const auto b = line.find_first_not_of(" \t");
      line = b == std::string::npos ? std::string() : line.substr(b);
      if (line.rfind("set autoboot=", 0) == 0) {
        autoboot = line.substr(13) == "true";
      } else if (line.rfind("set name=", 0) == 0) {
        attr = line.substr(9);
      } else if (line.rfind("set value=", 0) == 0) {
        std::string v = line.substr(10);
        if (v.size() >= 2 && v.front() == '"') {
          v = v.substr(1, v.size() - 2);
        }
        if (attr == "fake-vmadm-json") {
          std::string text;
          for (std::size_t i = 0; i + 1 < v.size(); i += 2) {
            text.push_back(static_cast<char>(std::stoi(v.substr(i, 2), nullptr, 16)));
          }
          vm = nlohmann::json::parse(text);
        } else if (attr == "do-not-inventory") {
          dni = v == "true";
        }
      }
    }
    if (!vm.is_object() || vm.value("uuid", "") != uuid) {
      throw Error(ExitCode::failure, fmt::format("{}: zonecfg -z {}", host(), uuid),
                  "the configuration is not one zone_export wrote");
    }
    vm["state"] = "stopped";
    vm["zone_state"] = "installed";
    vm["autoboot"] = autoboot;
    vm["do_not_inventory"] = dni;
    vm["server_uuid"] = m_server.uuid;
    instances[uuid] = vm;
    staged.insert(uuid);
    last_import_migration = migration_id;
  }
  std::string last_import_migration;

  void zone_remove(const std::string& uuid) override {
    const auto l = lock();
    enter("zone_remove " + uuid);
    const auto it = instances.find(uuid);
    if (it == instances.end()) {
      return;
    }
    if (it->second.value("state", "") == "running") {
      throw Error(ExitCode::failure, fmt::format("{}: zoneadm -z {} detach", host(), uuid),
                  "zone is running");
    }
    instances.erase(it);
    staged.erase(uuid);
  }

  void image_import(const std::string& image_uuid) override {
    const auto l = lock();
    enter("image_import " + image_uuid);
    const std::string ds = "zones/" + image_uuid;
    if (datasets.count(ds) != 0) {
      return;
    }
    if (m_catalog == nullptr || m_catalog->images.count(image_uuid) == 0) {
      throw Error(ExitCode::failure, fmt::format("{}: imgadm import {}", host(), image_uuid),
                  "image not found");
    }
    const ImageCatalog::Image& img = m_catalog->images.at(image_uuid);
    Dataset& d = add_dataset(ds, img.type);
    d.content = img.content;
    add_snapshot(ds, "final", img.guid);
  }

  std::string host_key() override {
    const auto l = lock();
    if (!m_assumed_host_key.empty()) {
      return m_assumed_host_key; // what a real node keeps from assume_host_key: no command
    }
    enter("host_key");
    return "ssh-ed25519 AAAAC3NzaFAKE" + m_server.hostname;
  }
  void assume_host_key(const std::string& key) override {
    const auto l = lock();
    calls.push_back("assume_host_key");
    m_assumed_host_key = key;
  }

  migration::DatasetTree tree(const std::vector<std::string>& roots,
                              const std::vector<std::string>& extra_props = {}) override {
    const auto l = lock();
    std::string line = "tree";
    for (const std::string& r : roots) {
      line += " " + r;
    }
    enter(line);
    migration::DatasetTree t;
    for (const std::string& root : roots) {
      for (const std::string& ds : subtree(root)) {
        if (t.has(ds)) {
          continue;
        }
        t.datasets.push_back(ds);
        const Dataset& d = datasets.at(ds);
        auto& p = t.props[ds];
        p["guid"] = std::to_string(d.guid);
        p["createtxg"] = std::to_string(d.createtxg);
        for (const std::string& x : extra_props) {
          p[x] = prop_of(ds, x);
        }
        for (const Snapshot& s : d.snapshots) {
          const std::string name = ds + "@" + s.snap;
          t.snapshots[ds].push_back({name, s.guid, s.createtxg});
          auto& sp = t.props[name];
          sp["guid"] = std::to_string(s.guid);
          sp["createtxg"] = std::to_string(s.createtxg);
          for (const std::string& x : extra_props) {
            sp[x] = x == "referenced" ? std::to_string(s.content << 20) : std::string();
          }
        }
      }
    }
    return t;
  }

  bool dataset_exists(const std::string& ds) override {
    const auto l = lock();
    enter("dataset_exists " + ds);
    return has(ds);
  }

  std::vector<std::string> mount_filesystems(const std::vector<std::string>& roots,
                                             const std::string& zonepath) override {
    const auto l = lock();
    enter("mount_filesystems");
    check_mountpoints_unlocked(roots, zonepath);
    std::vector<std::string> out;
    for (const std::string& root : roots) {
      for (const std::string& ds : subtree(root)) {
        Dataset& d = datasets.at(ds);
        const std::string mp = prop_of(ds, "mountpoint");
        if (d.type != "filesystem" || d.mounted || prop_of(ds, "zoned") == "on" ||
            prop_of(ds, "canmount") != "on" || mp.empty() || mp == "none" || mp == "legacy") {
          continue;
        }
        d.mounted = true;
        out.push_back(ds);
      }
    }
    return out;
  }

  void check_mountpoints(const std::vector<std::string>& roots,
                         const std::string& zonepath) override {
    const auto l = lock();
    enter("check_mountpoints");
    check_mountpoints_unlocked(roots, zonepath);
  }

  std::vector<std::string> hierarchy(const std::string& root) override {
    const auto l = lock();
    enter("hierarchy " + root);
    return subtree(root);
  }

  std::vector<migration::SnapshotInfo> snapshots(const std::string& ds) override {
    const auto l = lock();
    enter("snapshots " + ds);
    std::vector<migration::SnapshotInfo> out;
    const auto it = datasets.find(ds);
    if (it == datasets.end()) {
      return out;
    }
    for (const Snapshot& s : it->second.snapshots) {
      out.push_back({ds + "@" + s.snap, s.guid, s.createtxg});
    }
    return out;
  }

  std::map<std::string, std::string> properties(const std::string& ds,
                                                const std::vector<std::string>& props) override {
    const auto l = lock();
    enter("properties " + ds);
    if (!has(ds)) {
      throw Error(ExitCode::zfs, fmt::format("{}: zfs get {}", host(), ds),
                  fmt::format("cannot open '{}': dataset does not exist", ds));
    }
    std::map<std::string, std::string> out;
    for (const std::string& p : props) {
      out[p] = prop_of(ds, p);
    }
    return out;
  }

  // The same calls as snapshot_recursive, hold_all of every snapshot it made (a tag given), then
  // tree.
  SnapshotRead snapshot_and_read(const std::vector<std::string>& roots, const std::string& snap,
                                 const std::string& tag,
                                 const std::vector<std::string>& extra_props) override {
    snapshot_recursive(roots, snap);
    SnapshotRead out;
    if (!tag.empty() && m_caps.holds) {
      std::vector<std::string> names;
      {
        const auto l = lock();
        for (const std::string& root : roots) {
          for (const std::string& ds : subtree(root)) {
            if (find_snapshot(ds + "@" + snap) != nullptr) {
              names.push_back(ds + "@" + snap);
            }
          }
        }
      }
      hold_all(names, tag);
      out.held = true;
    }
    out.tree = tree(roots, extra_props);
    return out;
  }

  void snapshot_recursive(const std::vector<std::string>& roots, const std::string& snap) override {
    const auto l = lock();
    std::string line = "snapshot_recursive";
    for (const std::string& r : roots) {
      line += " " + r + "@" + snap;
    }
    enter(line);
    std::vector<std::string> targets;
    for (const std::string& root : roots) {
      if (datasets.count(root) == 0) {
        throw Error(ExitCode::zfs, fmt::format("{}: zfs snapshot -r", host()),
                    fmt::format("cannot open '{}': dataset does not exist", root));
      }
      for (const std::string& ds : subtree(root)) {
        if (find_snapshot(ds + "@" + snap) != nullptr) {
          throw Error(
              ExitCode::zfs, fmt::format("{}: zfs snapshot -r", host()),
              fmt::format("cannot create snapshot '{}@{}': dataset already exists", ds, snap));
        }
        targets.push_back(ds);
      }
    }
    write_running_instances();
    const std::uint64_t at = ++txg; // one txg: atomic
    for (const std::string& ds : targets) {
      Dataset& d = datasets.at(ds);
      d.snapshots.push_back({snap, fake_new_guid(), at, d.content, {}});
    }
  }

  void destroy_snapshot(const std::string& full_name) override {
    const auto l = lock();
    enter("destroy_snapshot " + full_name);
    destroy_snapshots({full_name}, "zfs destroy " + full_name);
  }

  void destroy_snapshot_recursive(const std::string& full_name) override {
    const auto l = lock();
    enter("destroy_snapshot_recursive " + full_name);
    const auto at = full_name.find('@');
    std::vector<std::string> names;
    for (const std::string& ds : subtree(full_name.substr(0, at))) {
      if (find_snapshot(ds + full_name.substr(at)) != nullptr) {
        names.push_back(ds + full_name.substr(at));
      }
    }
    destroy_snapshots(names, "zfs destroy -r " + full_name);
  }

  void destroy_dataset(const std::string& ds, const std::string& owner_uuid) override {
    const auto l = lock();
    enter("destroy_dataset " + ds);
    if (!migration::owned_by_instance(ds, owner_uuid)) {
      throw PreconditionError(fmt::format("{}: zfs destroy -r {}", host(), ds),
                              fmt::format("refused: it is not a dataset of instance {}; nothing "
                                          "was destroyed",
                                          owner_uuid));
    }
    const std::vector<std::string> doomed = subtree(ds);
    for (const std::string& d : doomed) {
      refuse_busy_dataset(d, doomed, "zfs destroy -r " + ds);
    }
    for (const std::string& d : doomed) {
      datasets.erase(d);
    }
  }

  void create_dataset(const std::string& ds, const migration::KeyValues& props) override {
    const auto l = lock();
    enter("create_dataset " + ds);
    if (datasets.count(ds) == 0) {
      std::vector<std::string> missing;
      for (std::string p = ds; p.find('/') != std::string::npos && datasets.count(p) == 0;
           p = p.substr(0, p.rfind('/'))) {
        missing.push_back(p);
      }
      std::reverse(missing.begin(), missing.end());
      for (const std::string& p : missing) {
        add_dataset(p).mounted = true;
      }
    }
    for (const auto& [k, v] : props) {
      set_local(ds, k, v);
    }
  }

  void set_property(const std::string& ds, const std::string& prop,
                    const std::string& value) override {
    const auto l = lock();
    enter("set_property " + ds + " " + prop + "=" + value);
    if (datasets.count(ds) == 0) {
      throw Error(ExitCode::zfs, fmt::format("{}: zfs set {}={} {}", host(), prop, value, ds),
                  fmt::format("cannot open '{}': dataset does not exist", ds));
    }
    set_local(ds, prop,
              (prop == "quota" || prop == "reservation") && value == "none" ? "0" : value);
  }

  void inherit_property(const std::string& ds, const std::string& prop) override {
    const auto l = lock();
    enter("inherit_property " + ds + " " + prop);
    if (datasets.count(ds) == 0) {
      throw Error(ExitCode::zfs, fmt::format("{}: zfs inherit {} {}", host(), prop, ds),
                  fmt::format("cannot open '{}': dataset does not exist", ds));
    }
    datasets.at(ds).props.erase(prop);
    datasets.at(ds).prop_sources.erase(prop);
  }

  void rollback_to(const std::string& full_name) override {
    const auto l = lock();
    enter("rollback_to " + full_name);
    const Snapshot* s = find_snapshot(full_name);
    if (s == nullptr) {
      throw Error(ExitCode::zfs, fmt::format("{}: zfs rollback {}", host(), full_name),
                  fmt::format("cannot open '{}': dataset does not exist", full_name));
    }
    Dataset& d = datasets.at(full_name.substr(0, full_name.find('@')));
    if (&d.snapshots.back() != s) {
      throw Error(ExitCode::zfs, fmt::format("{}: zfs rollback {}", host(), full_name),
                  "more recent snapshots or bookmarks exist; use '-r' to force deletion");
    }
    d.content = s->content;
  }

  std::string resume_token_snapshot(const std::string& token) override {
    const auto l = lock();
    enter("resume_token_snapshot");
    throw Error(ExitCode::zfs, fmt::format("{}: zfs send -nvP -t {}", host(), token),
                "the fake has no resume tokens");
  }

  void hold_all(const std::vector<std::string>& full_names, const std::string& tag) override {
    const auto l = lock();
    enter("hold_all " + tag + " " + std::to_string(full_names.size()));
    for (const std::string& n : full_names) {
      if (find_snapshot(n) == nullptr) {
        throw Error(ExitCode::zfs, fmt::format("{}: zfs hold {} {}", host(), tag, n),
                    fmt::format("cannot open '{}': dataset does not exist", n));
      }
    }
    for (const std::string& n : full_names) {
      find_snapshot(n)->holds.insert(tag);
    }
  }

  void release_all(const std::vector<std::string>& full_names, const std::string& tag) override {
    const auto l = lock();
    enter("release_all " + tag + " " + std::to_string(full_names.size()));
    for (const std::string& n : full_names) {
      if (Snapshot* s = find_snapshot(n)) {
        s->holds.erase(tag);
      }
    }
  }

  void release_and_destroy(const std::vector<std::string>& hold,
                           const std::vector<std::string>& release, const std::string& tag,
                           const std::vector<std::string>& destroy_recursive,
                           const std::vector<std::string>& destroy) override {
    // The same calls in the same order (tests that count them see a prune as before); one
    // remote command on a real node.
    if (!hold.empty()) {
      hold_all(hold, tag);
    }
    release_all(release, tag);
    for (const std::string& n : destroy_recursive) {
      destroy_snapshot_recursive(n);
    }
    for (const std::string& n : destroy) {
      destroy_snapshot(n);
    }
  }

  // The prune as the sequence a real node would run; run_prune_tail carries it out (FakeLink's
  // send_streams, after the streams). `ride_prune = false`: a node whose prune never rides along.
  remote::Command prune_command(const std::vector<std::string>& release, const std::string& tag,
                                const std::vector<std::string>& destroy_recursive,
                                const std::vector<std::string>& destroy) override {
    remote::Command cmd;
    if (!ride_prune) {
      return cmd;
    }
    remote::Argv rel{"zfs", "release", tag};
    rel.insert(rel.end(), release.begin(), release.end());
    if (!release.empty()) {
      remote::append_sequence(cmd, remote::Command(rel));
    }
    for (const std::string& n : destroy_recursive) {
      remote::append_sequence(cmd, remote::Command({"zfs", "destroy", "-r", n}));
    }
    for (const std::string& n : destroy) {
      remote::append_sequence(cmd, remote::Command({"zfs", "destroy", n}));
    }
    return cmd;
  }
  void run_prune_tail(const remote::Command& cmd) {
    {
      const auto l = lock();
      enter("prune_tail " + std::to_string(cmd.pipeline.size()));
    }
    for (const remote::Argv& a : cmd.pipeline) {
      if (a.size() >= 3 && a[1] == "release") {
        release_all(std::vector<std::string>(a.begin() + 3, a.end()), a[2]);
      } else if (a.size() == 4 && a[1] == "destroy" && a[2] == "-r") {
        destroy_snapshot_recursive(a[3]);
      } else if (a.size() == 3 && a[1] == "destroy") {
        destroy_snapshot(a[2]);
      } else {
        throw Error(ExitCode::zfs, m_server.hostname, "the fake cannot run " + a.at(1));
      }
    }
  }
  bool ride_prune = true;

  remote::Argv send_argv(const std::string& snapshot, const std::string& from,
                         const std::string& resume_token, const zfs::Capabilities&) override {
    const auto l = lock();
    enter("send_argv " + snapshot);
    if (!resume_token.empty()) {
      return {"zfs", "send", "-t", resume_token};
    }
    remote::Argv argv{"zfs", "send", "-p"};
    if (!from.empty()) {
      argv.emplace_back(
          from.substr(0, from.find('@')) == snapshot.substr(0, snapshot.find('@')) ? "-I" : "-i");
      argv.push_back(from);
    }
    argv.push_back(snapshot);
    return argv;
  }

  std::pair<std::uint64_t, bool> estimate_send(const std::string& snapshot, const std::string& from,
                                               const std::string&,
                                               const migration::DatasetTree*) override {
    const auto l = lock();
    enter("estimate_send " + snapshot);
    return {stream_bytes(snapshot, from), true};
  }

  // Bytes a stream from `from` (or nothing) to `to` carries: 1 MiB per unit of content.
  std::uint64_t stream_bytes(const std::string& to, const std::string& from) const {
    const auto l = lock();
    const Snapshot* t = find_snapshot(to);
    const Snapshot* f = from.empty() ? nullptr : find_snapshot(from);
    const std::uint64_t a = t != nullptr ? t->content : 0;
    const std::uint64_t b = f != nullptr ? f->content : 0;
    return ((a > b ? a - b : 0) << 20) + 4096;
  }

  // A property as zfs get reports it ("" for none).
  std::string prop_of(const std::string& name, const std::string& prop) const {
    const auto l = lock();
    if (find_snapshot(name) != nullptr) {
      return {};
    }
    const auto it = datasets.find(name);
    if (it == datasets.end()) {
      return {};
    }
    const Dataset& d = it->second;
    if (prop == "type") {
      return d.type;
    }
    if (prop == "mounted") {
      return d.type == "filesystem" ? (d.mounted ? "yes" : "no") : "";
    }
    if (prop == "referenced") {
      return std::to_string(d.content << 20);
    }
    if (prop.rfind("written@", 0) == 0) {
      const Snapshot* s = find_snapshot(name + "@" + prop.substr(8));
      return s == nullptr ? "" : std::to_string((d.content - s->content) << 20);
    }
    const auto p = d.props.find(prop);
    if (p != d.props.end()) {
      return p->second;
    }
    if (prop == "canmount") {
      return d.type == "filesystem" ? "on" : "";
    }
    if (prop == "zoned") {
      return "off";
    }
    if (prop == "quota" || prop == "reservation") {
      return "0";
    }
    if (prop == "mountpoint") {
      return d.type == "filesystem" ? "/" + name : "";
    }
    return {};
  }

private:
  struct Fault {
    std::string op;
    std::string message;
    bool once = true;
    std::function<bool(const std::string&)> pred;
  };

  // Record the call, then throw when a fault matches it.
  void enter(const std::string& line) {
    if (gate) {
      gate(line); // a crashed process acts no more (EngineWorld::crash_at_write)
    }
    calls.push_back(line);
    for (auto it = m_faults.begin(); it != m_faults.end(); ++it) {
      const std::string op = line.substr(0, line.find(' '));
      const bool match = it->pred ? it->pred(line) : (it->op == op || it->op == line);
      if (!match) {
        continue;
      }
      const std::string message = it->message;
      if (it->once) {
        m_faults.erase(it);
      }
      ++injected;
      throw Error(ExitCode::failure, fmt::format("{}: {}", host(), line), message);
    }
  }

  nlohmann::json& instance(const std::string& uuid, const std::string& tool) {
    const auto it = instances.find(uuid);
    if (it == instances.end()) {
      throw Error(ExitCode::failure, fmt::format("{}: {} {}", host(), tool, uuid),
                  fmt::format("{}: No such zone configured", uuid));
    }
    return it->second;
  }

  // A running instance writes: every dataset under its roots has new data.
  void write_running_instances() {
    for (const auto& [uuid, vm] : instances) {
      if (vm.value("state", "") != "running") {
        continue;
      }
      for (const std::string& root : instance_datasets(vm)) {
        for (const std::string& ds : subtree(root)) {
          datasets.at(ds).content += 1;
        }
      }
    }
  }

  // zfs refuses to destroy `ds` (one of `doomed`) while a snapshot of it is held, while it is
  // the origin of a clone that is not going too, or while a running zone uses it.
  void refuse_busy_dataset(const std::string& ds, const std::vector<std::string>& doomed,
                           const std::string& command) {
    const Dataset& d = datasets.at(ds);
    for (const Snapshot& s : d.snapshots) {
      if (!s.holds.empty()) {
        throw Error(ExitCode::zfs, fmt::format("{}: {}", host(), command),
                    fmt::format("cannot destroy snapshot {}@{}: dataset is busy", ds, s.snap));
      }
      for (const auto& [name, other] : datasets) {
        const auto o = other.props.find("origin");
        if (o != other.props.end() && o->second == ds + "@" + s.snap &&
            std::find(doomed.begin(), doomed.end(), name) == doomed.end()) {
          throw Error(ExitCode::zfs, fmt::format("{}: {}", host(), command),
                      fmt::format("cannot destroy '{}': filesystem has dependent clones", ds));
        }
      }
    }
    for (const auto& [uuid, vm] : instances) {
      if (vm.value("state", "") != "running") {
        continue;
      }
      for (const std::string& root : instance_datasets(vm)) {
        if (ds == root || ds.rfind(root + "/", 0) == 0) {
          throw Error(ExitCode::zfs, fmt::format("{}: {}", host(), command),
                      fmt::format("cannot unmount '{}': dataset is busy", ds));
        }
      }
    }
  }

  // All or nothing, as one zfs destroy: absent ones pass, a held one or a clone's origin fails.
  void destroy_snapshots(const std::vector<std::string>& names, const std::string& command) {
    for (const std::string& n : names) {
      const Snapshot* s = find_snapshot(n);
      if (s == nullptr) {
        continue;
      }
      if (!s->holds.empty()) {
        throw Error(ExitCode::zfs, fmt::format("{}: {}", host(), command),
                    fmt::format("cannot destroy snapshot {}: dataset is busy", n));
      }
      for (const auto& [name, other] : datasets) {
        const auto o = other.props.find("origin");
        if (o != other.props.end() && o->second == n) {
          throw Error(ExitCode::zfs, fmt::format("{}: {}", host(), command),
                      fmt::format("cannot destroy '{}': snapshot has dependent clones", n));
        }
      }
    }
    for (const std::string& n : names) {
      const auto at = n.find('@');
      const auto it = datasets.find(n.substr(0, at));
      if (it != datasets.end()) {
        std::erase_if(it->second.snapshots,
                      [&](const Snapshot& s) { return s.snap == n.substr(at + 1); });
      }
    }
  }

  void check_mountpoints_unlocked(const std::vector<std::string>& roots,
                                  const std::string& zonepath) {
    for (const std::string& root : roots) {
      for (const std::string& ds : subtree(root)) {
        const Dataset& d = datasets.at(ds);
        const auto src = d.prop_sources.find("mountpoint");
        const std::string mp = prop_of(ds, "mountpoint");
        if (d.type != "filesystem" || prop_of(ds, "zoned") == "on" || src == d.prop_sources.end() ||
            mp == "none" || mp == "legacy" || mp.empty()) {
          continue;
        }
        if (zonepath.empty() || (mp != zonepath && mp.rfind(zonepath + "/", 0) != 0)) {
          throw PreconditionError(fmt::format("{}: {}", host(), ds),
                                  fmt::format("mountpoint '{}' ({}) lies outside the instance's "
                                              "zonepath '{}'; refusing to mount it",
                                              mp, src->second, zonepath));
        }
      }
    }
  }

  inventory::Server m_server;
  std::string m_assumed_host_key;
  const ImageCatalog* m_catalog;
  zfs::Capabilities m_caps;
  std::vector<Fault> m_faults;
  mutable std::recursive_mutex m_mutex;
};

class FakeNodeAccess;

// Append `line` to `keys` as DataPath's install does; true when a newline had to go first.
inline bool fake_add_key_line(std::string& keys, const std::string& line) {
  const bool joined = !keys.empty() && keys.back() != '\n';
  keys += (joined ? "\n" : "") + line + "\n";
  return joined;
}
// Remove exactly `line` (and the newline its install added before it) from `keys`.
inline void fake_remove_key_line(std::string& keys, const std::string& line, bool joined) {
  const std::string whole = line + "\n";
  const std::size_t at = keys.find(whole);
  if (at == std::string::npos || (at != 0 && keys[at - 1] != '\n')) {
    return;
  }
  keys.erase(at, whole.size());
  if (joined && at == keys.size() && !keys.empty() && keys.back() == '\n') {
    keys.pop_back();
  }
}

class FakeLink final : public migration::Link {
public:
  FakeLink(migration::Context& ctx, migration::DataPathSpec spec, FakeNode& source,
           FakeNode& target, FakeNodeAccess& access)
      : m_ctx(ctx), m_spec(std::move(spec)), m_source(source), m_target(target), m_access(access) {
    if (m_spec.path_id.empty()) {
      static std::atomic<int> n{0};
      m_spec.path_id = fmt::format("{}-{:08x}", m_spec.migration_id, ++n);
    }
  }
  ~FakeLink() override;

  const migration::DataPathSpec& spec() const { return m_spec; }
  std::string dir() const { return migration::path_dir(m_spec.path_id); }
  bool is_open() const { return m_open; }

  void open() override;
  migration::TransferResult send(const migration::Stream& stream, const remote::Argv& zfs_send,
                                 bool use_pv,
                                 const std::function<void(std::uint64_t)>& on_bytes) override;
  // A modelled link: 20 ms to set a stream up, then 100 MiB/s (time passes on the context's
  // clock, a ManualClock in engine tests).
  migration::MeasureResult measure(std::uint64_t mib) override;
  void close() override;
  void park() override;
  // As DataPath's: the alongside command first (it starts with the streams, so its effect may
  // come before any of them arrives), each stream in order (send()), then the tail on the
  // source when the alongside command did not fail; on_arrived between the streams and the tail.
  migration::SendsResult
  send_streams(const std::vector<migration::StreamSend>& sends, bool use_pv,
               const remote::Command& tail, const remote::Command& alongside,
               const std::function<void(std::size_t, std::uint64_t)>& on_bytes,
               const std::function<void()>& on_arrived = {}) override;
  bool serves(const std::string& migration_id, const migration::Node& source,
              const migration::Node& target,
              const std::vector<std::string>& datasets) const override {
    if (!m_open || migration_id != m_spec.migration_id || &source != &m_source ||
        &target != &m_target) {
      return false;
    }
    return std::all_of(datasets.begin(), datasets.end(), [&](const std::string& ds) {
      return std::find(m_spec.datasets.begin(), m_spec.datasets.end(), ds) != m_spec.datasets.end();
    });
  }

private:
  migration::Context& m_ctx;
  migration::DataPathSpec m_spec;
  FakeNode& m_source;
  FakeNode& m_target;
  FakeNodeAccess& m_access;
  bool m_open = false;
  std::string m_line;    // the key line this link put in the target's authorized_keys
  bool m_joined = false; // and whether a newline went before it
  std::vector<std::int64_t> m_rows;
};

class FakeNodeAccess final : public migration::NodeAccess {
public:
  void add(FakeNode& node) { m_nodes[node.server().uuid] = &node; }

  remote::Runner& runner_for(const inventory::Server& server) override {
    throw Error(ExitCode::remote, server.hostname, "FakeNodeAccess has no runners");
  }
  migration::Node& node(migration::Context&, const inventory::Server& server) override {
    return fake(server.uuid);
  }
  FakeNode& fake(const std::string& server_uuid) {
    const auto it = m_nodes.find(server_uuid);
    if (it == m_nodes.end()) {
      throw Error(ExitCode::remote, server_uuid, "no such fake node");
    }
    return *it->second;
  }
  std::unique_ptr<migration::Link> make_link(migration::Context& ctx,
                                             const migration::DataPathSpec& spec,
                                             migration::Node& source,
                                             migration::Node& target) override {
    ++links_made;
    return std::make_unique<FakeLink>(ctx, spec, fake(source.server().uuid),
                                      fake(target.server().uuid), *this);
  }
  void remove_leftover_links(migration::Context& ctx, const std::string& migration_id,
                             migration::Node& source, migration::Node& target,
                             migration::Leftovers which) override {
    if (gate) {
      gate("remove_leftover_links");
    }
    calls.push_back("remove_leftover_links " + migration_id);
    for (const state::Artefact& a : ctx.store.live_artefacts(migration_id)) {
      const bool key = a.kind == "authorized_key";
      const std::string dir = key ? migration::path_dir(a.details.value("path_id", "")) : a.name;
      if ((a.kind != "data_path_dir" && !key) || open_dirs.count(dir) != 0) {
        continue; // not a link's, or a link open in this process: its close() removes it
      }
      if (which == migration::Leftovers::unparked && a.details.value("parked", false)) {
        continue; // parked: the command's own link adopts it (as DataPath)
      }
      for (FakeNode* n : {&fake(source.server().uuid), &fake(target.server().uuid)}) {
        if (n->host() == a.host) {
          const auto l = n->lock();
          if (a.kind == "data_path_dir") {
            n->paths.erase(a.name);
          } else {
            fake_remove_key_line(n->authorized_keys, a.details.value("line", ""),
                                 a.details.value("added_newline", false));
          }
        }
      }
      ctx.store.mark_artefact_removed(a.id);
    }
  }

  // Make the next send of any link throw (after `after_streams` more streams arrived whole).
  void fail_next_send(const std::string& message = "injected send failure", int after_streams = 0) {
    m_send_fault = message;
    m_send_fault_after = after_streams;
  }
  void fail_next_open(const std::string& message = "injected open failure") {
    m_open_fault = message;
  }

  bool fail_next_tail = false; // the next tail of send_streams fails (nothing of it done)
  // The next alongside command of send_streams fails (nothing of it done).
  bool fail_next_alongside = false;
  std::vector<std::vector<std::size_t>> sent_lanes; // each send_streams: the lane of each stream
  std::vector<std::string> calls; // "send <kind> <dataset> <from> -> <to>", "open", "close"
  // Called before every link operation; may throw (a crashed process: EngineWorld).
  std::function<void(const std::string& call)> gate;
  std::set<std::string> open_dirs;
  int links_made = 0;

private:
  friend class FakeLink;
  std::map<std::string, FakeNode*> m_nodes;
  std::string m_send_fault;
  int m_send_fault_after = 0;
  std::string m_open_fault;
};

inline FakeLink::~FakeLink() {
  if (m_open) {
    try {
      close();
    } catch (...) {
      // as DataPath: a destructor never throws
    }
  }
}

inline void FakeLink::open() {
  if (m_access.gate) {
    m_access.gate("open");
  }
  m_access.calls.push_back("open " + m_spec.path_id);
  if (!m_access.m_open_fault.empty()) {
    const std::string why = std::exchange(m_access.m_open_fault, std::string());
    throw Error(ExitCode::remote, m_target.host(), why);
  }
  if (m_open) {
    return;
  }
  const std::string fingerprint = migration::path_fingerprint(m_spec);
  if (const std::optional<std::string> parked =
          migration::adoptable_path(m_ctx.store.live_artefacts(m_spec.migration_id), m_spec,
                                    m_source.host(), m_target.host(), m_ctx.clock.wall_now());
      parked && m_access.open_dirs.count(migration::path_dir(*parked)) == 0) {
    // As DataPath: the parked link in use again, every other one removed.
    m_spec.path_id = *parked;
    m_access.calls.push_back("adopt " + m_spec.path_id);
    m_access.open_dirs.insert(dir());
    for (state::Artefact a : m_ctx.store.live_artefacts(m_spec.migration_id)) {
      if (a.details.value("path_id", "") == m_spec.path_id) {
        a.details["parked"] = false;
        m_rows.push_back(m_ctx.store.record_artefact(a));
        if (a.kind == "authorized_key") {
          m_line = a.details.value("line", "");
          m_joined = a.details.value("added_newline", false);
        }
      }
    }
    m_access.remove_leftover_links(m_ctx, m_spec.migration_id, m_source, m_target,
                                   migration::Leftovers::all);
    m_open = true;
    return;
  }
  m_access.remove_leftover_links(m_ctx, m_spec.migration_id, m_source, m_target,
                                 migration::Leftovers::all); // as DataPath
  m_access.open_dirs.insert(dir());
  for (FakeNode* n : {&m_target, &m_source}) {
    state::Artefact a;
    a.migration_id = m_spec.migration_id;
    a.kind = "data_path_dir";
    a.host = n->host();
    a.name = dir();
    a.details = {{"path_id", m_spec.path_id}, {"spec", fingerprint}, {"parked", false}};
    a.created = iso8601(m_ctx.clock.wall_now());
    m_rows.push_back(m_ctx.store.record_artefact(a));
    const auto l = n->lock();
    n->paths.insert(dir());
  }
  // The key line on the target: its ledger row (exact line) first, then the append.
  m_line = fmt::format("restrict,command=\"{}/recv\" ssh-ed25519 AAAAfake zmigrate-ephemeral-{}",
                       dir(), m_spec.path_id);
  const auto l = m_target.lock();
  state::Artefact k;
  k.migration_id = m_spec.migration_id;
  k.kind = "authorized_key";
  k.host = m_target.host();
  k.name = "/root/.ssh/authorized_keys";
  k.details = {{"path_id", m_spec.path_id},
               {"line", m_line},
               {"added_newline",
                !m_target.authorized_keys.empty() && m_target.authorized_keys.back() != '\n'},
               {"spec", fingerprint},
               {"parked", false}};
  k.created = iso8601(m_ctx.clock.wall_now());
  m_rows.push_back(m_ctx.store.record_artefact(k));
  m_joined = fake_add_key_line(m_target.authorized_keys, m_line);
  m_open = true;
}

inline migration::MeasureResult FakeLink::measure(std::uint64_t mib) {
  if (m_access.gate) {
    m_access.gate("measure");
  }
  m_access.calls.push_back(fmt::format("measure {}", mib));
  const std::string what =
      fmt::format("{}: measure the data path to {}", m_source.host(), m_target.host());
  if (!m_open || !m_spec.measure) {
    throw Error(ExitCode::remote, what, "the link is not open for a measurement");
  }
  if (!m_access.m_send_fault.empty()) {
    throw Error(ExitCode::remote, what, std::exchange(m_access.m_send_fault, std::string()));
  }
  const std::chrono::milliseconds took(20 + static_cast<long long>(mib) * 10);
  m_ctx.clock.sleep_for(took);
  return {mib * 1024 * 1024, took};
}

inline void FakeLink::close() {
  if (m_access.gate) {
    m_access.gate("close");
  }
  m_access.calls.push_back("close " + m_spec.path_id);
  for (FakeNode* n : {&m_target, &m_source}) {
    const auto l = n->lock();
    n->paths.erase(dir());
  }
  if (!m_line.empty()) {
    const auto l = m_target.lock();
    fake_remove_key_line(m_target.authorized_keys, m_line, m_joined);
    m_line.clear();
  }
  for (const std::int64_t row : m_rows) {
    m_ctx.store.mark_artefact_removed(row);
  }
  m_rows.clear();
  m_access.open_dirs.erase(dir());
  m_open = false;
}

inline migration::SendsResult
FakeLink::send_streams(const std::vector<migration::StreamSend>& sends, bool use_pv,
                       const remote::Command& tail, const remote::Command& alongside,
                       const std::function<void(std::size_t, std::uint64_t)>& on_bytes,
                       const std::function<void()>& on_arrived) {
  bool alongside_ok = false;
  if (!alongside.pipeline.empty() && !sends.empty()) {
    if (m_access.gate) {
      m_access.gate("alongside");
    }
    m_access.calls.push_back("alongside " + remote::command_summary(alongside, 2));
    if (!std::exchange(m_access.fail_next_alongside, false)) {
      try {
        m_source.run_update_command(alongside);
        alongside_ok = true;
      } catch (const Error&) {
        alongside_ok = false; // as a lane that failed: the streams go on, the tail does not run
      }
    }
  }
  migration::SendsResult out =
      Link::send_streams(sends, use_pv, tail, alongside, on_bytes, on_arrived);
  out.alongside_ok = alongside_ok;
  std::vector<std::size_t> lanes;
  for (const migration::StreamSend& s : sends) {
    lanes.push_back(s.lane);
  }
  m_access.sent_lanes.push_back(lanes);
  if (!tail.pipeline.empty() && (alongside.pipeline.empty() || alongside_ok)) {
    if (m_access.gate) {
      m_access.gate("prune_tail");
    }
    m_access.calls.push_back("prune_tail");
    if (!std::exchange(m_access.fail_next_tail, false)) {
      m_source.run_prune_tail(tail);
      out.tail_ok = true;
    }
  }
  return out;
}

inline void FakeLink::park() {
  if (m_access.gate) {
    m_access.gate("park");
  }
  m_access.calls.push_back("park " + m_spec.path_id);
  if (!m_open) {
    return;
  }
  for (state::Artefact a : m_ctx.store.live_artefacts(m_spec.migration_id)) {
    if (std::find(m_rows.begin(), m_rows.end(), a.id) != m_rows.end()) {
      a.details["parked"] = true;
      m_ctx.store.record_artefact(a);
    }
  }
  m_rows.clear();
  m_line.clear(); // stays in authorized_keys: the next command adopts it, or removes it by its row
  m_access.open_dirs.erase(dir());
  m_open = false;
}

inline migration::TransferResult
FakeLink::send(const migration::Stream& t, const remote::Argv&, bool,
               const std::function<void(std::uint64_t)>& on_bytes) {
  using migration::StreamKind;
  if (m_access.gate) {
    m_access.gate("send");
  }
  m_access.calls.push_back(
      fmt::format("send {} {} {} -> {}", migration::to_string(t.kind), t.dataset, t.from, t.to));
  const std::string what = fmt::format("{}: zfs recv {}", m_target.host(), t.dataset);
  if (!m_open) {
    throw Error(ExitCode::remote, what, "the data link is not open");
  }
  if (!m_access.m_send_fault.empty()) {
    if (m_access.m_send_fault_after > 0) {
      --m_access.m_send_fault_after;
    } else {
      const std::string why = std::exchange(m_access.m_send_fault, std::string());
      throw Error(ExitCode::remote, what, why);
    }
  }
  if (std::find(m_spec.datasets.begin(), m_spec.datasets.end(), t.dataset) ==
      m_spec.datasets.end()) {
    throw Error(ExitCode::remote, what, "the forced command refuses this dataset");
  }
  const auto ls = m_source.lock();
  const auto lt = m_target.lock();
  auto fail = [&](const std::string& why) { throw Error(ExitCode::zfs, what, why); };
  if (t.kind == StreamKind::resume) {
    fail("the fake has no resume tokens");
  }
  const std::string ds = t.dataset;
  if (t.to.substr(0, t.to.find('@')) != ds || m_source.datasets.count(ds) == 0) {
    fail(fmt::format("the source has no dataset {}", ds));
  }
  const FakeNode::Dataset& sd = m_source.datasets.at(ds);
  const std::string to_snap = t.to.substr(t.to.find('@') + 1);
  const auto to_it = std::find_if(sd.snapshots.begin(), sd.snapshots.end(),
                                  [&](const FakeNode::Snapshot& s) { return s.snap == to_snap; });
  if (to_it == sd.snapshots.end()) {
    fail(fmt::format("the source has no snapshot {}", t.to));
  }
  std::vector<FakeNode::Snapshot> bring;
  if (t.kind == StreamKind::full || t.kind == StreamKind::clone) {
    if (m_target.datasets.count(ds) != 0) {
      fail(fmt::format("destination '{}' exists; must specify -F to overwrite it", ds));
    }
    const std::string parent = ds.substr(0, ds.rfind('/'));
    if (ds.find('/') != std::string::npos && m_target.datasets.count(parent) == 0) {
      fail(fmt::format("destination parent '{}' does not exist", parent));
    }
    if (t.kind == StreamKind::clone) {
      const FakeNode::Snapshot* src_origin = m_source.find_snapshot(t.from);
      const FakeNode::Snapshot* dst_origin = m_target.find_snapshot(t.from);
      if (dst_origin == nullptr ||
          (src_origin != nullptr && src_origin->guid != dst_origin->guid)) {
        fail(fmt::format("local origin for clone {} does not exist", t.from));
      }
    }
    bring.push_back(*to_it);
    FakeNode::Dataset& nd = m_target.datasets[ds];
    nd.type = sd.type;
    nd.guid = fake_new_guid();
    nd.createtxg = ++m_target.txg;
    for (const auto& [k, v] : sd.props) {
      if (k == "origin") {
        continue;
      }
      nd.props[k] = v;
      nd.prop_sources[k] = "received";
    }
    if (t.kind == StreamKind::clone) {
      nd.props["origin"] = t.from;
      nd.prop_sources["origin"] = "-";
    }
  } else {
    if (m_target.datasets.count(ds) == 0) {
      fail(fmt::format("cannot receive incremental stream: destination '{}' does not exist", ds));
    }
    const FakeNode::Snapshot* base = m_source.find_snapshot(t.from);
    FakeNode::Dataset& td = m_target.datasets.at(ds);
    if (base == nullptr || td.snapshots.empty() || td.snapshots.back().guid != base->guid) {
      fail(fmt::format("cannot receive incremental stream: most recent snapshot of {} does not "
                       "match incremental source",
                       ds));
    }
    if (td.content != td.snapshots.back().content) {
      fail(fmt::format("cannot receive incremental stream: destination {} has been modified "
                       "since most recent snapshot",
                       ds));
    }
    bool after = false;
    for (auto it = sd.snapshots.begin(); it != std::next(to_it); ++it) {
      if (after) {
        bring.push_back(*it);
      }
      after = after || it->guid == base->guid;
    }
    if (!after) {
      fail(fmt::format("{} is not an earlier snapshot of {} on the source", t.from, ds));
    }
  }
  FakeNode::Dataset& td = m_target.datasets.at(ds);
  for (FakeNode::Snapshot s : bring) {
    s.holds.clear();
    s.createtxg = ++m_target.txg;
    td.snapshots.push_back(s);
    td.content = s.content;
  }
  td.mounted = false; // zfs recv -u
  const std::uint64_t bytes = m_source.stream_bytes(t.to, t.kind == StreamKind::full ? "" : t.from);
  if (on_bytes) {
    on_bytes(bytes);
  }
  migration::TransferResult r;
  r.bytes = bytes;
  r.bytes_counted = true;
  return r;
}

} // namespace zmigrate::fakes
