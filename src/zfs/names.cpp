// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/util/error.hpp>
#include <zmigrate/zfs/names.hpp>

#include <fmt/format.h>

namespace zmigrate::zfs {

namespace {

constexpr std::string_view k_snap_prefix = "zmigrate-";

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == ':' || c == '-';
}

bool is_letter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool is_digits(std::string_view s) {
  if (s.empty()) {
    return false;
  }
  for (char c : s) {
    if (c < '0' || c > '9') {
      return false;
    }
  }
  return true;
}

// Printable form of untrusted text for messages: control bytes escaped, length capped.
std::string printable(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, 300)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  if (text.size() > 300) {
    out += "...";
  }
  return out;
}

// Reason `text` is not a valid dataset name, or "" when it is.
std::string dataset_problem(std::string_view text) {
  if (text.empty()) {
    return "empty dataset name";
  }
  if (text.size() > k_max_name_length) {
    return fmt::format("longer than {} characters", k_max_name_length);
  }
  if (!is_letter(text.front())) {
    return "a pool name must start with a letter";
  }
  std::size_t start = 0;
  while (true) {
    const std::size_t slash = text.find('/', start);
    const std::string_view component = text.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (component.empty()) {
      return "empty component (leading, trailing or double '/')";
    }
    if (!is_valid_component(component)) {
      return fmt::format("invalid component '{}': allowed are A-Z a-z 0-9 _ . : - (not first "
                         "'-'), and not '.' or '..'",
                         printable(component));
    }
    if (slash == std::string_view::npos) {
      break;
    }
    start = slash + 1;
  }
  return {};
}

bool valid_migration_id(std::string_view id) {
  if (id.empty() || id.size() > 100) {
    return false;
  }
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-')) {
      return false;
    }
  }
  return true;
}

void check_migration_id(const std::string& migration_id) {
  if (!valid_migration_id(migration_id)) {
    throw UsageError(fmt::format("migration id '{}'", printable(migration_id)),
                     "must be 1-100 characters of A-Z a-z 0-9 -");
  }
}

} // namespace

bool is_valid_component(std::string_view component) {
  if (component.empty() || component == "." || component == ".." || component.front() == '-') {
    return false;
  }
  for (char c : component) {
    if (!is_name_char(c)) {
      return false;
    }
  }
  return true;
}

// --- DatasetName ---

DatasetName::DatasetName(std::string text) : m_text(std::move(text)) {
  if (std::string why = dataset_problem(m_text); !why.empty()) {
    throw UsageError(fmt::format("dataset name '{}'", printable(m_text)), why);
  }
}

std::string DatasetName::pool() const {
  return m_text.substr(0, m_text.find('/'));
}

bool DatasetName::is_pool() const {
  return m_text.find('/') == std::string::npos;
}

DatasetName DatasetName::parent() const {
  const std::size_t slash = m_text.rfind('/');
  if (slash == std::string::npos) {
    throw UsageError(fmt::format("dataset '{}'", m_text), "a pool has no parent dataset");
  }
  return DatasetName(m_text.substr(0, slash));
}

bool DatasetName::contains(const DatasetName& other) const {
  return other.m_text.size() > m_text.size() &&
         other.m_text.compare(0, m_text.size(), m_text) == 0 && other.m_text[m_text.size()] == '/';
}

DatasetName DatasetName::child(std::string_view relative) const {
  return DatasetName(m_text + "/" + std::string(relative));
}

// --- SnapshotName ---

SnapshotName::SnapshotName(const DatasetName& dataset, std::string snap)
    : m_dataset(dataset), m_snap(std::move(snap)) {
  if (!is_valid_component(m_snap)) {
    throw UsageError(fmt::format("snapshot name '{}@{}'", dataset.str(), printable(m_snap)),
                     "the part after '@' must be non-empty A-Z a-z 0-9 _ . : - (not first '-')");
  }
  if (dataset.str().size() + 1 + m_snap.size() > k_max_name_length) {
    throw UsageError(fmt::format("snapshot name '{}@{}'", dataset.str(), printable(m_snap)),
                     fmt::format("longer than {} characters", k_max_name_length));
  }
}

SnapshotName SnapshotName::parse(std::string_view text) {
  const std::size_t at = text.find('@');
  if (at == std::string_view::npos) {
    throw UsageError(fmt::format("snapshot name '{}'", printable(text)), "no '@' in it");
  }
  return SnapshotName(DatasetName(std::string(text.substr(0, at))),
                      std::string(text.substr(at + 1)));
}

// --- BookmarkName ---

BookmarkName::BookmarkName(const DatasetName& dataset, std::string bookmark)
    : m_dataset(dataset), m_bookmark(std::move(bookmark)) {
  if (!is_valid_component(m_bookmark)) {
    throw UsageError(fmt::format("bookmark name '{}#{}'", dataset.str(), printable(m_bookmark)),
                     "the part after '#' must be non-empty A-Z a-z 0-9 _ . : - (not first '-')");
  }
  if (dataset.str().size() + 1 + m_bookmark.size() > k_max_name_length) {
    throw UsageError(fmt::format("bookmark name '{}#{}'", dataset.str(), printable(m_bookmark)),
                     fmt::format("longer than {} characters", k_max_name_length));
  }
}

BookmarkName BookmarkName::parse(std::string_view text) {
  const std::size_t hash = text.find('#');
  if (hash == std::string_view::npos) {
    throw UsageError(fmt::format("bookmark name '{}'", printable(text)), "no '#' in it");
  }
  return BookmarkName(DatasetName(std::string(text.substr(0, hash))),
                      std::string(text.substr(hash + 1)));
}

// --- ObjectName ---

ObjectName ObjectName::parse(std::string_view text) {
  if (text.find('@') != std::string_view::npos) {
    return SnapshotName::parse(text);
  }
  if (text.find('#') != std::string_view::npos) {
    return BookmarkName::parse(text);
  }
  return DatasetName(std::string(text));
}

// --- migration snapshots ---

std::string migration_snap_name(const std::string& migration_id, int n) {
  check_migration_id(migration_id);
  if (n < 1) {
    throw UsageError(fmt::format("migration snapshot number {}", n), "must be 1 or more");
  }
  return fmt::format("{}{}-{}", k_snap_prefix, migration_id, n);
}

int parse_migration_snap(const std::string& migration_id, std::string_view snap) {
  if (!valid_migration_id(migration_id) || !snap.starts_with(k_snap_prefix)) {
    return -1;
  }
  std::string_view rest = snap.substr(k_snap_prefix.size());
  if (!rest.starts_with(migration_id) || rest.size() < migration_id.size() + 2 ||
      rest[migration_id.size()] != '-') {
    return -1;
  }
  const std::string_view digits = rest.substr(migration_id.size() + 1);
  if (!is_digits(digits) || digits.front() == '0' || digits.size() > 9) {
    return -1;
  }
  return std::stoi(std::string(digits));
}

bool is_zmigrate_snap(std::string_view snap) {
  if (!snap.starts_with(k_snap_prefix)) {
    return false;
  }
  const std::string_view rest = snap.substr(k_snap_prefix.size());
  const std::size_t dash = rest.rfind('-');
  if (dash == std::string_view::npos || dash == 0) {
    return false;
  }
  const std::string_view digits = rest.substr(dash + 1);
  return valid_migration_id(rest.substr(0, dash)) && is_digits(digits) && digits.front() != '0' &&
         digits.size() <= 9;
}

std::string migration_hold_tag(const std::string& migration_id) {
  check_migration_id(migration_id);
  return fmt::format("{}{}", k_snap_prefix, migration_id);
}

} // namespace zmigrate::zfs
