// SPDX-License-Identifier: MPL-2.0
#pragma once
// What the engine does on one compute node, as typed operations: SmartOS instance management
// (vmadm, zonecfg, zoneadm, imgadm) and the ZFS operations of zfs::ZfsNode. Every command goes
// through the node's remote::Runner (the choke point).

#include <zmigrate/inventory/types.hpp>
#include <zmigrate/migration/context.hpp>
#include <zmigrate/zfs/capabilities.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace zmigrate::migration {

struct SnapshotInfo {
  std::string name; // full name ds@snap
  std::uint64_t guid = 0;
  std::uint64_t createtxg = 0;
};

// Datasets under some roots with their snapshots and properties, read in ONE `zfs get -r`
// (hierarchy, GUIDs, creation order): the planner needs no further round trips.
struct DatasetTree {
  std::vector<std::string> datasets; // parents first; roots that do not exist are absent
  std::map<std::string, std::vector<SnapshotInfo>> snapshots;      // oldest first (createtxg)
  std::map<std::string, std::map<std::string, std::string>> props; // dataset or snapshot → prop
  bool has(const std::string& ds) const { return props.count(ds) != 0; }
  std::string prop(const std::string& name, const std::string& key) const;
};

class NodeOps {
public:
  NodeOps(Context& ctx, const inventory::Server& server);
  ~NodeOps();
  NodeOps(const NodeOps&) = delete;
  NodeOps& operator=(const NodeOps&) = delete;

  const inventory::Server& server() const { return m_server; }
  remote::Runner& runner() { return m_runner; }
  const zfs::Capabilities& caps();

  // --- instances (vmadm/zonecfg/zoneadm) ---
  // `vmadm get`; nullopt only when the node proves it has no such instance: vmadm's own
  // not-found answer (exit 1, "<uuid>: No such zone configured") and `zoneadm list -cp` without
  // it. Any other failure throws ("cannot tell" is never "absent"), as does an answer for
  // another uuid.
  std::optional<nlohmann::json> vm_get(const std::string& uuid);
  // True when `zoneadm list -cp` lists a zone named or with uuid `uuid` (throws if it fails).
  bool zone_listed(const std::string& uuid);
  void vm_stop(const std::string& uuid);
  void vm_start(const std::string& uuid);
  // `vmadm update UUID k=v ...`.
  void vm_update(const std::string& uuid,
                 const std::vector<std::pair<std::string, std::string>>& kv);
  void vm_delete(const std::string& uuid);
  std::string zone_export(const std::string& uuid);
  // Create the zone from exported config (zonecfg -f) and attach it (zoneadm attach -F).
  void zone_import(const std::string& migration_id, const std::string& uuid,
                   const std::string& config);
  // Remove a zone configuration created by zone_import (zoneadm detach, zonecfg delete -F).
  void zone_remove(const std::string& uuid);
  void image_import(const std::string& image_uuid);
  // The ed25519 host key line of the node ("ssh-ed25519 AAAA...").
  std::string host_key();

  // --- ZFS ---
  // One `zfs get -Hp -r` of guid, createtxg and `extra_props` over `roots` (missing roots are
  // simply absent from the result).
  DatasetTree tree(const std::vector<std::string>& roots,
                   const std::vector<std::string>& extra_props = {});
  bool dataset_exists(const std::string& ds);
  // Mount every filesystem under `roots` that should be mounted (canmount=on, a real
  // mountpoint, not zoned: a delegated dataset is the zone's to mount) and is not, parents
  // first; returns the datasets it mounted. check_mountpoints() first.
  std::vector<std::string> mount_filesystems(const std::vector<std::string>& roots,
                                             const std::string& zonepath);
  // Refuse (PreconditionError naming the dataset) a filesystem under `roots` that is not zoned
  // and whose mountpoint was set on it (locally or by a received stream) outside `zonepath`: a
  // stream from another node must not get anything mounted over the global zone's files.
  // Inherited mountpoints follow the dataset names, which are checked already.
  void check_mountpoints(const std::vector<std::string>& roots, const std::string& zonepath);
  // `root` and its descendants (filesystems and volumes), parents first. Empty if absent.
  std::vector<std::string> hierarchy(const std::string& root);
  // Snapshots of `ds` (not of its children), oldest first, with GUIDs.
  std::vector<SnapshotInfo> snapshots(const std::string& ds);
  std::map<std::string, std::string> properties(const std::string& ds,
                                                const std::vector<std::string>& props);
  // The origin snapshot of a clone ("" when `ds` is not a clone).
  std::string origin(const std::string& ds);
  // `zfs snapshot -r ds1@snap ds2@snap ...`: one atomic snapshot of every hierarchy.
  void snapshot_recursive(const std::vector<std::string>& roots, const std::string& snap);
  // Destroy one snapshot (retrying while busy); absent is fine.
  void destroy_snapshot(const std::string& full_name);
  // Destroy `full_name` and the snapshots of the same name of every descendant (`zfs destroy -r
  // ds@snap`; retrying while busy); absent is fine.
  void destroy_snapshot_recursive(const std::string& full_name);
  // Destroy a dataset and its descendants (retrying while busy); absent is fine. Refused
  // (PreconditionError, nothing destroyed) unless owned_by_instance(ds, owner_uuid): never a pool
  // root, never another instance's dataset.
  void destroy_dataset(const std::string& ds, const std::string& owner_uuid);
  void set_property(const std::string& ds, const std::string& prop, const std::string& value);
  // Roll `ds` back to its newest snapshot `full_name` (discarding changes made after it).
  void rollback_to(const std::string& full_name);
  // The partial-receive resume token of `ds`, "" when none (or unsupported).
  std::string resume_token(const std::string& ds);
  // The snapshot a resume token (read from the other node) resumes, decoded by this node's zfs
  // (`zfs send -nvP -t`: its "toname = ds@snap"). Throws when zfs cannot decode it.
  std::string resume_token_snapshot(const std::string& token);
  // Hold/release `full_name` with `tag` where the node supports holds (no-op otherwise).
  void hold(const std::string& full_name, const std::string& tag);
  void release(const std::string& full_name, const std::string& tag);
  // The same for many snapshots in one command (`zfs hold TAG S1 S2...`). hold_all tolerates
  // holds that exist already; release_all tolerates missing ones.
  void hold_all(const std::vector<std::string>& full_names, const std::string& tag);
  void release_all(const std::vector<std::string>& full_names, const std::string& tag);
  // `zfs send` argv for: full (from == ""), incremental -I from `from` (a snapshot of the same
  // dataset or the clone origin), or a resume token; flags limited to what both ends support.
  remote::Argv send_argv(const std::string& snapshot, const std::string& from,
                         const std::string& resume_token, const zfs::Capabilities& target_caps);
  // Bytes the send above will produce: exact (`send -nvP`) when supported, else approximate.
  // `known`, when given, is a tree holding `referenced` of the snapshots: the approximation then
  // needs no further command.
  std::pair<std::uint64_t, bool> estimate_send(const std::string& snapshot, const std::string& from,
                                               const std::string& resume_token,
                                               const DatasetTree* known = nullptr);

private:
  Context& m_ctx;
  inventory::Server m_server;
  remote::Runner& m_runner;
  NodeAccess::Facts& m_facts; // shared by every NodeOps of this node in this command

  // Run a zfs command, retrying while the dataset is busy (lab.md gotcha 2: ~0.5 s after a
  // receive). Returns the last result; never throws for a non-zero exit.
  remote::Result zfs_retry(const remote::Argv& argv);
};

} // namespace zmigrate::migration
