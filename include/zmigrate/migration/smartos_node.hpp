// SPDX-License-Identifier: MPL-2.0
#pragma once
// The Node of a real compute node (a SmartOS global zone): vmadm, zonecfg, zoneadm and imgadm
// for instances, the validated argv builders of src/zfs for ZFS. Every command goes through the
// node's remote::Runner (the choke point); docs/node-commands.md lists each one with the manual
// page it follows.

#include <zmigrate/inventory/types.hpp>
#include <zmigrate/migration/context.hpp>
#include <zmigrate/migration/node.hpp>
#include <zmigrate/zfs/capabilities.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace zmigrate::migration {

class SmartosNode final : public Node {
public:
  SmartosNode(Context& ctx, const inventory::Server& server);
  ~SmartosNode() override;
  SmartosNode(const SmartosNode&) = delete;
  SmartosNode& operator=(const SmartosNode&) = delete;

  const inventory::Server& server() const override { return m_server; }
  const std::string& host() const override { return m_runner.host(); }
  remote::Runner& runner() { return m_runner; }
  const zfs::Capabilities& caps() override;
  void assume_caps(const zfs::Capabilities& known) override;

  std::optional<nlohmann::json> vm_get(const std::string& uuid) override;
  // True when `zoneadm list -cp` lists a zone named or with uuid `uuid` (throws if it fails).
  bool zone_listed(const std::string& uuid);
  void vm_stop(const std::string& uuid) override;
  void vm_start(const std::string& uuid) override;
  void vm_update(const std::string& uuid, const KeyValues& kv) override;
  remote::Command vm_update_command(const std::string& uuid, const KeyValues& kv) override;
  void vm_delete(const std::string& uuid) override;
  std::string zone_export(const std::string& uuid) override;
  void zone_import(const std::string& migration_id, const std::string& uuid,
                   const std::string& config) override;
  void zone_remove(const std::string& uuid) override;
  void image_import(const std::string& image_uuid) override;
  std::string host_key() override;
  void assume_host_key(const std::string& key) override;

  DatasetTree tree(const std::vector<std::string>& roots,
                   const std::vector<std::string>& extra_props = {}) override;
  bool dataset_exists(const std::string& ds) override;
  std::vector<std::string> mount_filesystems(const std::vector<std::string>& roots,
                                             const std::string& zonepath) override;
  void check_mountpoints(const std::vector<std::string>& roots,
                         const std::string& zonepath) override;
  std::vector<std::string> hierarchy(const std::string& root) override;
  std::vector<SnapshotInfo> snapshots(const std::string& ds) override;
  std::map<std::string, std::string> properties(const std::string& ds,
                                                const std::vector<std::string>& props) override;
  void snapshot_recursive(const std::vector<std::string>& roots, const std::string& snap) override;
  SnapshotRead snapshot_and_read(const std::vector<std::string>& roots, const std::string& snap,
                                 const std::string& tag,
                                 const std::vector<std::string>& extra_props) override;
  void destroy_snapshot(const std::string& full_name) override;
  void destroy_snapshot_recursive(const std::string& full_name) override;
  void destroy_dataset(const std::string& ds, const std::string& owner_uuid) override;
  void create_dataset(const std::string& ds, const KeyValues& props) override;
  void set_property(const std::string& ds, const std::string& prop,
                    const std::string& value) override;
  void inherit_property(const std::string& ds, const std::string& prop) override;
  void rollback_to(const std::string& full_name) override;
  // The partial-receive resume token of `ds`, "" when none (or unsupported).
  std::string resume_token(const std::string& ds);
  std::string resume_token_snapshot(const std::string& token) override;
  // Hold/release one snapshot with `tag` where the node supports holds (no-op otherwise).
  void hold(const std::string& full_name, const std::string& tag);
  void release(const std::string& full_name, const std::string& tag);
  void hold_all(const std::vector<std::string>& full_names, const std::string& tag) override;
  void release_all(const std::vector<std::string>& full_names, const std::string& tag) override;
  void release_and_destroy(const std::vector<std::string>& hold,
                           const std::vector<std::string>& release, const std::string& tag,
                           const std::vector<std::string>& destroy_recursive,
                           const std::vector<std::string>& destroy) override;
  remote::Command prune_command(const std::vector<std::string>& release, const std::string& tag,
                                const std::vector<std::string>& destroy_recursive,
                                const std::vector<std::string>& destroy) override;
  remote::Argv send_argv(const std::string& snapshot, const std::string& from,
                         const std::string& resume_token,
                         const zfs::Capabilities& target_caps) override;
  std::pair<std::uint64_t, bool> estimate_send(const std::string& snapshot, const std::string& from,
                                               const std::string& resume_token,
                                               const DatasetTree* known = nullptr) override;
  // The origin snapshot of a clone ("" when `ds` is not a clone).
  std::string origin(const std::string& ds);

private:
  Context& m_ctx;
  inventory::Server m_server;
  remote::Runner& m_runner;
  NodeAccess::Facts& m_facts; // shared by every SmartosNode of this node in this command

  // Run a zfs command, retrying while the dataset is busy (lab.md gotcha 2: ~0.5 s after a
  // receive). Returns the last result; never throws for a non-zero exit.
  remote::Result zfs_retry(const remote::Argv& argv);
};

} // namespace zmigrate::migration
