// SPDX-License-Identifier: MPL-2.0
#pragma once
// Validated ZFS names. Argv for zfs commands is built only from these types, so no value that
// reaches a remote shell can carry metacharacters, whitespace or a leading '-' (an option).

#include <compare>
#include <cstddef>
#include <string>
#include <string_view>

namespace zmigrate::zfs {

// Longest full name (dataset, dataset@snap, dataset#bookmark) we accept, as ZFS itself.
inline constexpr std::size_t k_max_name_length = 255;

// pool/fs[/child...]: components of [A-Za-z0-9_.:-], none empty, none starting with '-', none
// "." or "..", the pool starting with a letter, ≤ 255 chars in all.
class DatasetName {
public:
  // Throws UsageError naming `text` when it is not a valid dataset name.
  explicit DatasetName(std::string text);
  const std::string& str() const { return m_text; }
  // The first component ("zones" for "zones/abc").
  std::string pool() const;
  // The parent dataset; throws UsageError for a pool (it has none).
  DatasetName parent() const;
  // True for the pool's root dataset ("zones").
  bool is_pool() const;
  // True when `other` lies strictly below this dataset ("zones/a" contains "zones/a/b").
  bool contains(const DatasetName& other) const;
  // This dataset with `relative` ("disk0", "a/b") appended; throws UsageError when invalid.
  DatasetName child(std::string_view relative) const;
  bool operator==(const DatasetName&) const = default;
  auto operator<=>(const DatasetName&) const = default;

private:
  std::string m_text;
};

// dataset@snap; the snapshot component uses the same alphabet and rules as a component.
class SnapshotName {
public:
  // Throws UsageError when `snap` is not a valid snapshot component or the whole is > 255.
  SnapshotName(const DatasetName& dataset, std::string snap);
  // Parse "ds@snap". Throws UsageError.
  static SnapshotName parse(std::string_view text);
  const DatasetName& dataset() const { return m_dataset; }
  const std::string& snap() const { return m_snap; }
  std::string str() const { return m_dataset.str() + "@" + m_snap; }
  bool operator==(const SnapshotName&) const = default;
  auto operator<=>(const SnapshotName&) const = default;

private:
  DatasetName m_dataset;
  std::string m_snap;
};

// dataset#bookmark (OpenZFS/illumos only; zfs-fuse has no bookmarks).
class BookmarkName {
public:
  // Throws UsageError when `bookmark` is not a valid component or the whole is > 255.
  BookmarkName(const DatasetName& dataset, std::string bookmark);
  // Parse "ds#bookmark". Throws UsageError.
  static BookmarkName parse(std::string_view text);
  const DatasetName& dataset() const { return m_dataset; }
  const std::string& bookmark() const { return m_bookmark; }
  std::string str() const { return m_dataset.str() + "#" + m_bookmark; }
  bool operator==(const BookmarkName&) const = default;
  auto operator<=>(const BookmarkName&) const = default;

private:
  DatasetName m_dataset;
  std::string m_bookmark;
};

// Any validated name a zfs command may take as an operand (zfs get, zfs list): converts
// implicitly from the three name types, so callers never pass unvalidated text.
class ObjectName {
public:
  ObjectName(const DatasetName& n) : m_text(n.str()) {}  // NOLINT: implicit on purpose
  ObjectName(const SnapshotName& n) : m_text(n.str()) {} // NOLINT: implicit on purpose
  ObjectName(const BookmarkName& n) : m_text(n.str()) {} // NOLINT: implicit on purpose
  // Parse any of "ds", "ds@snap", "ds#bookmark". Throws UsageError.
  static ObjectName parse(std::string_view text);
  const std::string& str() const { return m_text; }
  bool operator==(const ObjectName&) const = default;
  auto operator<=>(const ObjectName&) const = default;

private:
  std::string m_text;
};

// True when `component` is a valid single name component (no '/', '@', '#').
bool is_valid_component(std::string_view component);

// Migration snapshot names: zmigrate-<migration-id>-<n>, n ≥ 1; never collide with Triton's
// @vm-migration-N. `migration_id` must be non-empty [A-Za-z0-9-] (a UUID or a short id).
// Throws UsageError on a bad id or n < 1.
std::string migration_snap_name(const std::string& migration_id, int n);
// n of a migration snapshot of `migration_id`, or -1 when `snap` is not one (other migrations'
// snapshots, user snapshots, "zmigrate-<id>-01" with a leading zero).
int parse_migration_snap(const std::string& migration_id, std::string_view snap);
// True for any zmigrate-<id>-<n> snapshot (of any migration).
bool is_zmigrate_snap(std::string_view snap);
// The hold tag of a migration: "zmigrate-<migration-id>". Throws UsageError on a bad id.
std::string migration_hold_tag(const std::string& migration_id);

} // namespace zmigrate::zfs
