// SPDX-License-Identifier: MPL-2.0
#pragma once
// Validated ZFS names. Argv for zfs commands is built only from these types.

#include <string>
#include <string_view>

namespace zmigrate::zfs {

// pool/fs[/child...]: components of [A-Za-z0-9_.:-], no leading '-', no "..", ≤ 255 chars.
class DatasetName {
public:
  // Throws UsageError naming `text` when it is not a valid dataset name.
  explicit DatasetName(std::string text);
  const std::string& str() const { return m_text; }
  std::string pool() const;
  bool operator==(const DatasetName&) const = default;
  auto operator<=>(const DatasetName&) const = default;

private:
  std::string m_text;
};

// dataset@snap, snap component of the same alphabet.
class SnapshotName {
public:
  SnapshotName(const DatasetName& dataset, std::string snap);
  // Parse "ds@snap". Throws UsageError.
  static SnapshotName parse(std::string_view text);
  const DatasetName& dataset() const { return m_dataset; }
  const std::string& snap() const { return m_snap; }
  std::string str() const { return m_dataset.str() + "@" + m_snap; }
  bool operator==(const SnapshotName&) const = default;

private:
  DatasetName m_dataset;
  std::string m_snap;
};

// Migration snapshot names: zmigrate-<migration-id>-<n>, never colliding with @vm-migration-N.
std::string migration_snap_name(const std::string& migration_id, int n);
// n of a migration snapshot of `migration_id`, or -1 when `snap` is not one.
int parse_migration_snap(const std::string& migration_id, std::string_view snap);
// True for any zmigrate-* snapshot (of any migration).
bool is_zmigrate_snap(std::string_view snap);

} // namespace zmigrate::zfs
