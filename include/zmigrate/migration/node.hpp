// SPDX-License-Identifier: MPL-2.0
#pragma once
// What the engine may do on one compute node: the typed node layer. The engine reaches a node
// only through this interface (NodeAccess::node hands it out), never through a runner or an
// argv of its own. It is abstract so the engine can be tested over a stateful fake
// (tests/fakes/fake_node.hpp); the real implementation is SmartosNode (smartos_node.hpp), which
// runs SmartOS's vmadm, zonecfg, zoneadm and imgadm and builds every zfs argv with the validated
// builders of src/zfs.
//
// How operations fail: "absent" is an answer only where the node proves it (vm_get,
// dataset_exists, the destroys); any other failure throws zmigrate::Error naming the node and
// the command, so "cannot tell" is never taken for "absent".

#include <zmigrate/inventory/types.hpp>
#include <zmigrate/remote/command.hpp>
#include <zmigrate/zfs/capabilities.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
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

using KeyValues = std::vector<std::pair<std::string, std::string>>;

class Node {
public:
  virtual ~Node() = default;

  virtual const inventory::Server& server() const = 0;
  // The name commands and messages use for this node (the runner's host label).
  virtual const std::string& host() const = 0;
  // The node's ZFS capabilities, probed once per command.
  virtual const zfs::Capabilities& caps() = 0;
  // Take `known` as the capabilities for this command instead of probing (what an earlier
  // command probed on this very boot of the node); no effect once probed.
  virtual void assume_caps(const zfs::Capabilities& known) = 0;

  // --- instances (vmadm/zonecfg/zoneadm/imgadm) ---
  // `vmadm get`; nullopt only when the node proves it has no such instance: vmadm's own
  // not-found answer (exit 1, "<uuid>: No such zone configured") and `zoneadm list -cp` without
  // it. Any other failure throws ("cannot tell" is never "absent"), as does an answer for
  // another uuid.
  virtual std::optional<nlohmann::json> vm_get(const std::string& uuid) = 0;
  virtual void vm_stop(const std::string& uuid) = 0;
  virtual void vm_start(const std::string& uuid) = 0;
  // `vmadm update UUID k=v ...`.
  virtual void vm_update(const std::string& uuid, const KeyValues& kv) = 0;
  // The vm_update above as a command, for a data link to run on this node at once with its
  // streams (Link::send_streams' `alongside`); an empty pipeline when this node cannot have it
  // ride along (the caller then calls vm_update).
  virtual remote::Command vm_update_command(const std::string& uuid, const KeyValues& kv) = 0;
  // `vmadm delete`; a failure passes only when the instance is proven gone.
  virtual void vm_delete(const std::string& uuid) = 0;
  virtual std::string zone_export(const std::string& uuid) = 0;
  // Create the zone from exported config (zonecfg -f) and attach it (zoneadm attach -F).
  virtual void zone_import(const std::string& migration_id, const std::string& uuid,
                           const std::string& config) = 0;
  // Remove a zone configuration created by zone_import (zoneadm detach, zonecfg delete -F).
  virtual void zone_remove(const std::string& uuid) = 0;
  virtual void image_import(const std::string& image_uuid) = 0;
  // The ed25519 host key line of the node ("ssh-ed25519 AAAA...").
  virtual std::string host_key() = 0;
  // Take `key` as host_key() for this command instead of reading it (what an earlier command
  // read on this very boot of the node); no effect once read. A wrong one fails the data path's
  // host key check, never weakens it.
  virtual void assume_host_key(const std::string& key) = 0;

  // --- ZFS ---
  // One `zfs get -Hp -r` of guid, createtxg and `extra_props` over `roots` (missing roots are
  // simply absent from the result).
  virtual DatasetTree tree(const std::vector<std::string>& roots,
                           const std::vector<std::string>& extra_props = {}) = 0;
  virtual bool dataset_exists(const std::string& ds) = 0;
  // Mount every filesystem under `roots` that should be mounted (canmount=on, a real
  // mountpoint, not zoned: a delegated dataset is the zone's to mount) and is not, parents
  // first; returns the datasets it mounted. check_mountpoints() first.
  virtual std::vector<std::string> mount_filesystems(const std::vector<std::string>& roots,
                                                     const std::string& zonepath) = 0;
  // Refuse (PreconditionError naming the dataset) a filesystem under `roots` that is not zoned
  // and whose mountpoint was set on it (locally or by a received stream) outside `zonepath`: a
  // stream from another node must not get anything mounted over the global zone's files.
  virtual void check_mountpoints(const std::vector<std::string>& roots,
                                 const std::string& zonepath) = 0;
  // `root` and its descendants (filesystems and volumes), parents first. Empty if absent.
  virtual std::vector<std::string> hierarchy(const std::string& root) = 0;
  // Snapshots of `ds` (not of its children), oldest first, with GUIDs.
  virtual std::vector<SnapshotInfo> snapshots(const std::string& ds) = 0;
  virtual std::map<std::string, std::string> properties(const std::string& ds,
                                                        const std::vector<std::string>& props) = 0;
  // `zfs snapshot -r ds1@snap ds2@snap ...`: one atomic snapshot of every hierarchy.
  virtual void snapshot_recursive(const std::vector<std::string>& roots,
                                  const std::string& snap) = 0;
  // What snapshot_and_read did: whether it held the new snapshots too, and the tree it read.
  struct SnapshotRead {
    bool held = false;
    DatasetTree tree;
  };
  // snapshot_recursive, then `zfs hold -r tag` of those snapshots (tag not empty and the node
  // supports holds), then tree(roots, extra_props), in one remote command where the node allows.
  // `held` false: the caller holds them with hold_all. The snapshots exist either way, or it
  // throws as snapshot_recursive; the tree is read after them either way.
  virtual SnapshotRead snapshot_and_read(const std::vector<std::string>& roots,
                                         const std::string& snap, const std::string& tag,
                                         const std::vector<std::string>& extra_props) = 0;
  // Destroy one snapshot (retrying while busy); absent is fine.
  virtual void destroy_snapshot(const std::string& full_name) = 0;
  // Destroy `full_name` and the snapshots of the same name of every descendant (`zfs destroy -r
  // ds@snap`; retrying while busy); absent is fine.
  virtual void destroy_snapshot_recursive(const std::string& full_name) = 0;
  // Destroy a dataset and its descendants (retrying while busy); absent is fine. Refused
  // (PreconditionError, nothing destroyed) unless owned_by_instance(ds, owner_uuid): never a pool
  // root, never another instance's dataset.
  virtual void destroy_dataset(const std::string& ds, const std::string& owner_uuid) = 0;
  // `zfs create -p ds`, then each property of `props` set on it.
  virtual void create_dataset(const std::string& ds, const KeyValues& props) = 0;
  virtual void set_property(const std::string& ds, const std::string& prop,
                            const std::string& value) = 0;
  // `zfs inherit prop ds`: drop the local value of `prop` (a user property then has none).
  virtual void inherit_property(const std::string& ds, const std::string& prop) = 0;
  // Roll `ds` back to its newest snapshot `full_name` (discarding changes made after it).
  virtual void rollback_to(const std::string& full_name) = 0;
  // The snapshot a resume token (read from the other node) resumes, decoded by this node's zfs
  // (`zfs send -nvP -t`: its "toname = ds@snap"). Throws when zfs cannot decode it.
  virtual std::string resume_token_snapshot(const std::string& token) = 0;
  // Hold/release many snapshots in one command (`zfs hold TAG S1 S2...`) where the node
  // supports holds (no-op otherwise). hold_all tolerates holds that exist already; release_all
  // tolerates missing ones.
  virtual void hold_all(const std::vector<std::string>& full_names, const std::string& tag) = 0;
  virtual void release_all(const std::vector<std::string>& full_names, const std::string& tag) = 0;
  // A prune in one round trip: hold `hold` and release `release` (tag; where the node supports
  // holds), then `zfs destroy -r` each of `destroy_recursive`, then `zfs destroy` each of
  // `destroy`, as one sequence that stops at the first failure; after a failure the same again
  // one by one, each with its own tolerance (hold_all, release_all, destroy_snapshot_recursive,
  // destroy_snapshot).
  virtual void release_and_destroy(const std::vector<std::string>& hold,
                                   const std::vector<std::string>& release, const std::string& tag,
                                   const std::vector<std::string>& destroy_recursive,
                                   const std::vector<std::string>& destroy) = 0;
  // The one-round-trip sequence of release_and_destroy (no hold) as a command, for a data link
  // to run after its streams in the same round trip (Link::send_streams); an empty pipeline
  // when there is nothing to do, or when this node cannot have it ride along (the caller then
  // calls release_and_destroy).
  virtual remote::Command prune_command(const std::vector<std::string>& release,
                                        const std::string& tag,
                                        const std::vector<std::string>& destroy_recursive,
                                        const std::vector<std::string>& destroy) = 0;
  // `zfs send` argv for: full (from == ""), incremental from `from` (a snapshot of the same
  // dataset or the clone origin), or a resume token; flags limited to what both ends support.
  virtual remote::Argv send_argv(const std::string& snapshot, const std::string& from,
                                 const std::string& resume_token,
                                 const zfs::Capabilities& target_caps) = 0;
  // Bytes the send above will produce: exact (`send -nvP`) when supported, else approximate.
  // `known`, when given, is a tree holding `referenced` of the snapshots: the approximation then
  // needs no further command.
  virtual std::pair<std::uint64_t, bool> estimate_send(const std::string& snapshot,
                                                       const std::string& from,
                                                       const std::string& resume_token,
                                                       const DatasetTree* known = nullptr) = 0;
};

} // namespace zmigrate::migration
