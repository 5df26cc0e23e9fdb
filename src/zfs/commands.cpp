// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/util/error.hpp>
#include <zmigrate/zfs/commands.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>

#include <fmt/format.h>

namespace zmigrate::zfs {

namespace {

constexpr std::size_t k_max_token_length = 16 * 1024;

remote::Argv zfs_argv(std::initializer_list<std::string> args) {
  remote::Argv argv{std::string(k_zfs)};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t pos = text.find(sep, start);
    if (pos == std::string_view::npos) {
      parts.push_back(text.substr(start));
      break;
    }
    parts.push_back(text.substr(start, pos - start));
    start = pos + 1;
  }
  return parts;
}

// Lines without their '\r' and without empty ones.
std::vector<std::string_view> lines_of(std::string_view text) {
  std::vector<std::string_view> out;
  for (std::string_view line : split(text, '\n')) {
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    if (!line.empty()) {
      out.push_back(line);
    }
  }
  return out;
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i != 0) {
      out += sep;
    }
    out += parts[i];
  }
  return out;
}

[[noreturn]] void bad_output(std::string_view command, std::string_view line,
                             std::string_view why) {
  throw Error(ExitCode::zfs, fmt::format("output of '{}'", command),
              fmt::format("unexpected line '{}' ({}); the node's zfs prints a format zmigrate "
                          "does not know, please report it",
                          line.substr(0, 200), why));
}

void validate_value(std::string_view property, std::string_view value) {
  for (char c : value) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      throw UsageError(fmt::format("value of property '{}'", property),
                       "control characters are not allowed");
    }
  }
  if (value.size() > 4096) {
    throw UsageError(fmt::format("value of property '{}'", property), "longer than 4096 bytes");
  }
}

std::string send_from_text(const SendFrom& from) {
  return std::visit([](const auto& name) { return name.str(); }, from);
}

bool is_bookmark(const SendFrom& from) {
  return std::holds_alternative<BookmarkName>(from);
}

[[noreturn]] void unsupported(const Capabilities& caps, std::string_view what,
                              std::string_view instead) {
  throw PreconditionError(std::string(what),
                          fmt::format("not supported by this node's ZFS ({}); {}",
                                      caps.implementation.empty() ? "unknown" : caps.implementation,
                                      instead));
}

bool contained_in_any(const DatasetName& ds, const std::vector<DatasetName>& candidates) {
  return std::any_of(candidates.begin(), candidates.end(),
                     [&](const DatasetName& c) { return c.contains(ds); });
}

} // namespace

// --- Listing ---

remote::Argv build_list_datasets(const std::vector<DatasetName>& roots, Recursive recursive) {
  if (roots.empty()) {
    throw UsageError("zfs list", "no dataset given");
  }
  remote::Argv argv = zfs_argv({"list", "-H", "-o", "name,type", "-t", "filesystem,volume"});
  if (recursive == Recursive::yes) {
    argv.emplace_back("-r");
  }
  for (const DatasetName& root : roots) {
    argv.push_back(root.str());
  }
  return argv;
}

std::vector<DatasetEntry> parse_dataset_list(std::string_view out) {
  std::vector<DatasetEntry> entries;
  for (std::string_view line : lines_of(out)) {
    const std::vector<std::string_view> f = split(line, '\t');
    if (f.size() != 2 || (f[1] != "filesystem" && f[1] != "volume")) {
      bad_output("zfs list", line, "expected <name>\\t<filesystem|volume>");
    }
    try {
      entries.push_back(DatasetEntry{DatasetName(std::string(f[0])), std::string(f[1])});
    } catch (const UsageError& e) {
      bad_output("zfs list", line, e.reason());
    }
  }
  return entries;
}

remote::Argv build_exists(const ObjectName& name) {
  // Bookmarks are listed only when asked for by type.
  if (name.str().find('#') != std::string::npos) {
    return zfs_argv({"list", "-H", "-o", "name", "-t", "bookmark", name.str()});
  }
  return zfs_argv({"list", "-H", "-o", "name", name.str()});
}

remote::Argv build_exists_any_type(const ObjectName& name) {
  return zfs_argv({"list", "-H", "-t", "all", "-o", "name", name.str()});
}

remote::Argv build_list_hierarchy(const DatasetName& root) {
  return zfs_argv({"list", "-H", "-o", "name", "-t", "filesystem,volume", "-r", root.str()});
}

remote::Argv build_list_snapshot_names(const DatasetName& dataset) {
  return zfs_argv({"list", "-H", "-t", "snapshot", "-o", "name", "-s", "creation", "-r", "-d", "1",
                   dataset.str()});
}

remote::Argv build_list_snapshots(const DatasetName& dataset) {
  return zfs_argv({"list", "-H", "-o", "name", "-t", "snapshot", "-s", "creation", "-r", "-d", "1",
                   dataset.str()});
}

std::vector<SnapshotName> parse_snapshot_names(std::string_view out) {
  std::vector<SnapshotName> names;
  for (std::string_view line : lines_of(out)) {
    try {
      names.push_back(SnapshotName::parse(line));
    } catch (const UsageError& e) {
      bad_output("zfs list -t snapshot", line, e.reason());
    }
  }
  return names;
}

// --- Properties ---

void validate_property_name(std::string_view name) {
  const bool ok_chars = std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == ':' || c == '@' || c == '#' || c == '-';
  });
  if (name.empty() || name.size() > 256 || !ok_chars || name.front() == '-') {
    throw UsageError(fmt::format("property name '{}'", name.substr(0, 100)),
                     "must be 1-256 characters of A-Z a-z 0-9 _ . : @ # -, not starting with '-'");
  }
}

std::vector<std::string> supported_properties(const std::vector<std::string>& props,
                                              const Capabilities& caps) {
  std::vector<std::string> out;
  for (const std::string& p : props) {
    if ((p == "written" || p.starts_with("written@") || p.starts_with("written#")) &&
        !caps.written_property) {
      continue;
    }
    if (p == "receive_resume_token" && !caps.resume_tokens) {
      continue;
    }
    out.push_back(p);
  }
  return out;
}

remote::Argv build_get_properties(const std::vector<ObjectName>& names,
                                  const std::vector<std::string>& props) {
  if (names.empty() || props.empty()) {
    throw UsageError("zfs get", "no dataset or no property given");
  }
  for (const std::string& p : props) {
    validate_property_name(p);
  }
  remote::Argv argv = zfs_argv({"get", "-Hp", "-o", "name,property,value", join(props, ",")});
  for (const ObjectName& n : names) {
    argv.push_back(n.str());
  }
  return argv;
}

PropertyTable parse_properties(std::string_view out) {
  PropertyTable table;
  for (std::string_view line : lines_of(out)) {
    const std::size_t t1 = line.find('\t');
    const std::size_t t2 = t1 == std::string_view::npos ? t1 : line.find('\t', t1 + 1);
    if (t2 == std::string_view::npos) {
      continue;
    }
    const std::string name(line.substr(0, t1));
    const std::string property(line.substr(t1 + 1, t2 - t1 - 1));
    const std::string_view value = line.substr(t2 + 1);
    Properties& props = table[name]; // the object is listed even when all its values are "-"
    if (value != "-") {
      props[property] = std::string(value);
    }
  }
  return table;
}

remote::Argv build_get_tree(const std::vector<DatasetName>& roots,
                            const std::vector<std::string>& props) {
  if (roots.empty() || props.empty()) {
    throw UsageError("zfs get -r", "no dataset or no property given");
  }
  for (const std::string& p : props) {
    validate_property_name(p);
  }
  remote::Argv argv = zfs_argv({"get", "-Hp", "-o", "name,property,value", "-r", join(props, ",")});
  for (const DatasetName& root : roots) {
    argv.push_back(root.str());
  }
  return argv;
}

remote::Argv build_get_mountpoint_sources(const std::vector<DatasetName>& roots) {
  if (roots.empty()) {
    throw UsageError("zfs get mountpoint", "no dataset given");
  }
  remote::Argv argv =
      zfs_argv({"get", "-Hp", "-r", "-o", "name,property,value,source", "mountpoint,zoned,type"});
  for (const DatasetName& root : roots) {
    argv.push_back(root.str());
  }
  return argv;
}

remote::Argv build_get_values(const std::vector<ObjectName>& names, const std::string& property) {
  if (names.empty()) {
    throw UsageError(fmt::format("zfs get {}", property.substr(0, 100)), "no dataset given");
  }
  validate_property_name(property);
  remote::Argv argv = zfs_argv({"get", "-Hp", "-o", "name,value", property});
  for (const ObjectName& n : names) {
    argv.push_back(n.str());
  }
  return argv;
}

remote::Argv build_get_properties_of(const ObjectName& name,
                                     const std::vector<std::string>& props) {
  if (props.empty()) {
    throw UsageError(fmt::format("zfs get {}", name.str()), "no property given");
  }
  for (const std::string& p : props) {
    validate_property_name(p);
  }
  return zfs_argv({"get", "-Hp", "-o", "property,value", join(props, ","), name.str()});
}

remote::Argv build_get_snapshot_info(const DatasetName& dataset) {
  return zfs_argv({"get", "-Hp", "-r", "-d", "1", "-o", "name,property,value", "guid,createtxg",
                   dataset.str()});
}

std::vector<SnapshotInfo> parse_snapshot_info(std::string_view out, const DatasetName& dataset) {
  const std::string prefix = dataset.str() + "@";
  std::vector<SnapshotInfo> snaps;
  for (const auto& [name, props] : parse_properties(out)) {
    if (!name.starts_with(prefix)) {
      continue;
    }
    auto guid_it = props.find("guid");
    const std::optional<std::uint64_t> guid =
        guid_it == props.end() ? std::nullopt : parse_u64(guid_it->second);
    if (!guid) {
      bad_output("zfs get guid", name, "no numeric guid for the snapshot");
    }
    auto txg_it = props.find("createtxg");
    const std::uint64_t txg = txg_it == props.end() ? 0 : parse_u64(txg_it->second).value_or(0);
    try {
      snaps.push_back(SnapshotInfo{SnapshotName::parse(name), *guid, txg});
    } catch (const UsageError& e) {
      bad_output("zfs get guid", name, e.reason());
    }
  }
  std::stable_sort(snaps.begin(), snaps.end(), [](const SnapshotInfo& a, const SnapshotInfo& b) {
    return a.createtxg < b.createtxg;
  });
  return snaps;
}

std::optional<std::uint64_t> parse_u64(std::string_view text) {
  std::uint64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end) {
    return std::nullopt;
  }
  return value;
}

// --- Snapshots ---

remote::Argv build_snapshot(const std::vector<SnapshotName>& snapshots, Recursive recursive) {
  if (snapshots.empty()) {
    throw UsageError("zfs snapshot", "no snapshot given");
  }
  remote::Argv argv = zfs_argv({"snapshot"});
  if (recursive == Recursive::yes) {
    argv.emplace_back("-r");
  }
  for (const SnapshotName& s : snapshots) {
    argv.push_back(s.str());
  }
  return argv;
}

SnapshotCommands plan_snapshot_commands(const std::vector<DatasetName>& wanted_in,
                                        const std::vector<DatasetName>& existing,
                                        const std::string& snap, const Capabilities& caps) {
  if (wanted_in.empty()) {
    throw UsageError("zfs snapshot", "no dataset given");
  }
  const std::set<DatasetName> wanted_set(wanted_in.begin(), wanted_in.end());
  const std::vector<DatasetName> wanted(wanted_set.begin(), wanted_set.end());

  std::vector<DatasetName> roots;
  for (const DatasetName& ds : wanted) {
    if (!contained_in_any(ds, wanted)) {
      roots.push_back(ds);
    }
  }
  // A root is "whole" when every existing descendant is wanted, so -r adds nothing unwanted.
  auto whole = [&](const DatasetName& root) {
    return std::all_of(existing.begin(), existing.end(), [&](const DatasetName& e) {
      return !root.contains(e) || wanted_set.count(e) != 0;
    });
  };
  auto has_children = [&](const DatasetName& root) {
    return std::any_of(wanted.begin(), wanted.end(),
                       [&](const DatasetName& w) { return root.contains(w); }) ||
           std::any_of(existing.begin(), existing.end(),
                       [&](const DatasetName& e) { return root.contains(e); });
  };
  const bool all_whole = std::all_of(roots.begin(), roots.end(), whole);
  const bool any_children = std::any_of(roots.begin(), roots.end(), has_children);

  SnapshotCommands plan;
  auto snaps_of = [&](const std::vector<DatasetName>& list) {
    std::vector<SnapshotName> s;
    for (const DatasetName& ds : list) {
      s.emplace_back(ds, snap);
    }
    return s;
  };

  if (all_whole && (caps.multi_snapshot || roots.size() == 1)) {
    plan.commands.push_back(
        build_snapshot(snaps_of(roots), any_children ? Recursive::yes : Recursive::no));
    return plan;
  }
  if (caps.multi_snapshot) {
    plan.commands.push_back(build_snapshot(snaps_of(wanted), Recursive::no));
    return plan;
  }
  for (const DatasetName& root : roots) {
    if (whole(root)) {
      plan.commands.push_back(
          build_snapshot(snaps_of({root}), has_children(root) ? Recursive::yes : Recursive::no));
      continue;
    }
    for (const DatasetName& ds : wanted) {
      if (ds == root || root.contains(ds)) {
        plan.commands.push_back(build_snapshot(snaps_of({ds}), Recursive::no));
      }
    }
  }
  plan.atomic = plan.commands.size() == 1;
  return plan;
}

// --- Send / receive ---

void validate(const SendSpec& spec) {
  if (!spec.resume_token.empty()) {
    if (spec.snapshot || spec.from || spec.replicate || spec.props ||
        spec.incremental == IncrementalKind::intermediates) {
      throw UsageError("zfs send -t", "a resume token cannot be combined with a snapshot, an "
                                      "incremental source, -R, -p or -I");
    }
    if (!is_valid_resume_token(spec.resume_token)) {
      throw UsageError("zfs send -t", "the resume token is malformed");
    }
    return;
  }
  if (!spec.snapshot) {
    throw UsageError("zfs send", "no snapshot to send");
  }
  if (spec.from) {
    if (is_bookmark(*spec.from)) {
      if (spec.incremental == IncrementalKind::intermediates || spec.replicate) {
        throw UsageError(fmt::format("zfs send {}", spec.snapshot->str()),
                         "a bookmark can only be the source of a plain -i send (no -I, no -R)");
      }
    } else if (std::get<SnapshotName>(*spec.from) == *spec.snapshot) {
      throw UsageError(fmt::format("zfs send {}", spec.snapshot->str()),
                       "the incremental source is the snapshot itself");
    }
  }
}

remote::Argv build_send(const SendSpec& spec, const Capabilities& caps) {
  validate(spec);
  remote::Argv argv = zfs_argv({"send"});
  if (spec.dry_run) {
    if (!caps.dry_run_parsable) {
      unsupported(caps, "zfs send -nvP", "estimate from dataset properties instead");
    }
    argv.insert(argv.end(), {"-n", "-v", "-P"});
  }
  if (!spec.resume_token.empty()) {
    if (!caps.resume_tokens) {
      unsupported(caps, "zfs send -t", "send the snapshot again from the last common one");
    }
    argv.insert(argv.end(), {"-t", spec.resume_token});
    return argv;
  }
  if (spec.replicate) {
    argv.emplace_back("-R");
  }
  if (spec.props) {
    argv.emplace_back("-p");
  }
  if (spec.compressed && caps.compressed_send) {
    argv.emplace_back("-c");
  }
  if (spec.large_blocks && caps.large_blocks) {
    argv.emplace_back("-L");
  }
  if (spec.embedded && caps.embedded_data) {
    argv.emplace_back("-e");
  }
  if (spec.raw) {
    if (!caps.raw_send) {
      unsupported(caps, "zfs send -w", "send without -w (the data is decrypted on the way)");
    }
    argv.emplace_back("-w");
  }
  if (spec.from) {
    if (is_bookmark(*spec.from) && !caps.bookmarks) {
      unsupported(caps, "zfs send -i <bookmark>", "send from a snapshot");
    }
    argv.emplace_back(spec.incremental == IncrementalKind::intermediates ? "-I" : "-i");
    argv.push_back(send_from_text(*spec.from));
  }
  argv.push_back(spec.snapshot->str());
  return argv;
}

remote::Argv build_send_estimate(const SendSpec& spec, const Capabilities& caps) {
  if (!caps.dry_run_parsable) {
    unsupported(caps, "zfs send -nvP", "estimate from dataset properties instead");
  }
  SendSpec real = spec;
  real.dry_run = false;
  remote::Argv argv = build_send(real, caps); // validates, and checks -t/-w/bookmarks
  argv.insert(argv.begin() + 2, "-nvP");
  return argv;
}

remote::Argv build_resume_token_decode(const std::string& token) {
  if (!is_valid_resume_token(token)) {
    throw UsageError("zfs send -nvP -t", "the resume token is malformed");
  }
  return zfs_argv({"send", "-nvP", "-t", token});
}

remote::Argv build_recv(const RecvSpec& spec, const Capabilities& caps) {
  remote::Argv argv = zfs_argv({"recv"});
  if (spec.unmounted) {
    argv.emplace_back("-u");
  }
  if (spec.force == RecvForce::target_is_ours) {
    argv.emplace_back("-F");
  }
  if (spec.resumable && caps.resume_tokens) {
    argv.emplace_back("-s");
  }
  if (spec.exclude_encryption && caps.recv_exclude_props) {
    argv.insert(argv.end(), {"-x", "encryption"});
  }
  if (spec.origin) {
    if (!caps.recv_set_props) {
      unsupported(caps, "zfs recv -o origin=", "send a full stream, or -R from the origin");
    }
    argv.insert(argv.end(), {"-o", "origin=" + spec.origin->str()});
  }
  argv.push_back(spec.dataset.str());
  return argv;
}

remote::Argv build_recv_abort(const DatasetName& dataset, const Capabilities& caps) {
  if (!caps.resume_tokens) {
    unsupported(caps, "zfs recv -A", "there is no partial receive state to discard");
  }
  return zfs_argv({"recv", "-A", dataset.str()});
}

bool is_valid_resume_token(std::string_view token) {
  if (token.empty() || token.size() > k_max_token_length) {
    return false;
  }
  const std::vector<std::string_view> parts = split(token, '-');
  if (parts.size() != 4) {
    return false;
  }
  for (std::string_view part : parts) {
    if (part.empty() || !std::all_of(part.begin(), part.end(), [](char c) {
          return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        })) {
      return false;
    }
  }
  return true;
}

std::optional<std::string> resume_token_of(const Properties& props) {
  auto it = props.find("receive_resume_token");
  if (it == props.end() || !is_valid_resume_token(it->second)) {
    return std::nullopt;
  }
  return it->second;
}

std::optional<std::uint64_t> parse_human_size(std::string_view text) {
  std::string_view t = text;
  while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) {
    t.remove_suffix(1);
  }
  if (t.ends_with("iB")) {
    t.remove_suffix(2);
  } else if (t.size() > 1 && t.back() == 'B' &&
             std::string_view("KMGTPEZ").find(t[t.size() - 2]) != std::string_view::npos) {
    t.remove_suffix(1);
  }
  double multiplier = 1;
  if (!t.empty()) {
    const std::size_t unit = std::string_view("BKMGTPEZ").find(t.back());
    if (unit != std::string_view::npos) {
      multiplier = std::pow(1024.0, static_cast<double>(unit));
      t.remove_suffix(1);
    }
  }
  if (t.empty() ||
      !std::all_of(t.begin(), t.end(), [](char c) { return (c >= '0' && c <= '9') || c == '.'; }) ||
      std::count(t.begin(), t.end(), '.') > 1 || t.front() == '.') {
    return std::nullopt;
  }
  const double value = std::stod(std::string(t)) * multiplier;
  if (value >= 1.8e19) {
    return std::nullopt;
  }
  return static_cast<std::uint64_t>(std::llround(value));
}

std::optional<SendEstimate> parse_send_estimate(std::string_view out) {
  SendEstimate est;
  std::optional<std::uint64_t> total;
  bool recognised = false;
  bool all_sized = true;
  constexpr std::string_view k_estimated = " estimated size is ";

  for (std::string_view line : lines_of(out)) {
    const std::vector<std::string_view> f = split(line, '\t');
    if (f[0] == "full" && (f.size() == 2 || f.size() == 3)) {
      StreamEstimate s{"", std::string(f[1]), std::uint64_t{0}};
      if (f.size() == 3) {
        s.bytes = parse_u64(f[2]);
      }
      est.streams.push_back(std::move(s));
      est.parsable = recognised = true;
    } else if (f[0] == "incremental" && (f.size() == 3 || f.size() == 4)) {
      StreamEstimate s{std::string(f[1]), std::string(f[2]), std::uint64_t{0}};
      if (f.size() == 4) {
        s.bytes = parse_u64(f[3]);
      }
      est.streams.push_back(std::move(s));
      est.parsable = recognised = true;
    } else if (f[0] == "size" && f.size() == 2) {
      total = parse_u64(f[1]);
      est.parsable = recognised = true;
    } else if (line.starts_with("total estimated size is ")) {
      total = parse_human_size(line.substr(std::string_view("total estimated size is ").size()));
      recognised = true;
    } else if (line.starts_with("full send of ") || line.starts_with("send from ") ||
               line.starts_with("sending from ")) {
      std::string_view body = line;
      std::optional<std::uint64_t> bytes;
      const std::size_t est_pos = body.find(k_estimated);
      if (est_pos != std::string_view::npos) {
        bytes = parse_human_size(body.substr(est_pos + k_estimated.size()));
        body = body.substr(0, est_pos);
      }
      StreamEstimate s;
      if (body.starts_with("full send of ")) {
        s.to = std::string(body.substr(std::string_view("full send of ").size()));
      } else {
        body.remove_prefix(body.starts_with("send from ")
                               ? std::string_view("send from ").size()
                               : std::string_view("sending from ").size());
        const std::size_t to_pos = body.find(" to ");
        if (to_pos == std::string_view::npos) {
          continue;
        }
        s.from = std::string(body.substr(0, to_pos));
        s.to = std::string(body.substr(to_pos + 4));
        if (s.from == "@") {
          s.from.clear(); // zfs-fuse prints "sending from @ to X" for a full stream
        }
      }
      // Older zfs prints no size when the estimate is 0; zfs-fuse prints none at all.
      if (est_pos == std::string_view::npos && line.starts_with("sending from ")) {
        all_sized = false;
      } else if (!bytes) {
        bytes = 0;
      }
      s.bytes = bytes;
      est.streams.push_back(std::move(s));
      recognised = true;
    }
  }
  if (!recognised) {
    return std::nullopt;
  }
  for (const StreamEstimate& s : est.streams) {
    all_sized = all_sized && s.bytes.has_value();
  }
  if (total) {
    est.bytes = *total;
    est.complete = true;
  } else {
    for (const StreamEstimate& s : est.streams) {
      est.bytes += s.bytes.value_or(0);
    }
    est.complete = all_sized && !est.streams.empty();
  }
  return est;
}

// --- Destroy, holds, and the rest ---

remote::Argv build_destroy(const DatasetName& dataset, Recursive recursive, ForceUnmount force) {
  remote::Argv argv = zfs_argv({"destroy"});
  if (force == ForceUnmount::yes) {
    argv.emplace_back("-f");
  }
  if (recursive == Recursive::yes) {
    argv.emplace_back("-r");
  }
  argv.push_back(dataset.str());
  return argv;
}

remote::Argv build_destroy(const SnapshotName& snapshot, Recursive recursive) {
  remote::Argv argv = zfs_argv({"destroy"});
  if (recursive == Recursive::yes) {
    argv.emplace_back("-r");
  }
  argv.push_back(snapshot.str());
  return argv;
}

void validate_hold_tag(std::string_view tag) {
  const bool ok = !tag.empty() && tag.size() <= 200 && tag.front() != '-' && tag.front() != '.' &&
                  std::all_of(tag.begin(), tag.end(), [](char c) {
                    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                           (c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':' || c == '-';
                  });
  if (!ok) {
    throw UsageError(
        fmt::format("hold tag '{}'", tag.substr(0, 100)),
        "must be 1-200 characters of A-Z a-z 0-9 _ . : -, not starting with '-' or '.'");
  }
}

namespace {

remote::Argv build_hold_like(std::string_view verb, const std::string& tag,
                             const std::vector<SnapshotName>& snapshots, Recursive recursive) {
  validate_hold_tag(tag);
  if (snapshots.empty()) {
    throw UsageError(fmt::format("zfs {}", verb), "no snapshot given");
  }
  remote::Argv argv = zfs_argv({std::string(verb)});
  if (recursive == Recursive::yes) {
    argv.emplace_back("-r");
  }
  argv.push_back(tag);
  for (const SnapshotName& s : snapshots) {
    argv.push_back(s.str());
  }
  return argv;
}

} // namespace

remote::Argv build_hold(const std::string& tag, const std::vector<SnapshotName>& snapshots,
                        Recursive recursive) {
  return build_hold_like("hold", tag, snapshots, recursive);
}

remote::Argv build_release(const std::string& tag, const std::vector<SnapshotName>& snapshots,
                           Recursive recursive) {
  return build_hold_like("release", tag, snapshots, recursive);
}

remote::Argv build_rename(const DatasetName& from, const DatasetName& to) {
  return zfs_argv({"rename", from.str(), to.str()});
}

remote::Argv build_rename(const SnapshotName& from, const SnapshotName& to) {
  if (!(from.dataset() == to.dataset())) {
    throw UsageError(fmt::format("zfs rename {} {}", from.str(), to.str()),
                     "a snapshot can only be renamed within its dataset");
  }
  return zfs_argv({"rename", from.str(), to.str()});
}

remote::Argv build_set(const ObjectName& name, const std::string& property,
                       const std::string& value) {
  validate_property_name(property);
  validate_value(property, value);
  return zfs_argv({"set", property + "=" + value, name.str()});
}

remote::Argv build_inherit(const ObjectName& name, const std::string& property) {
  validate_property_name(property);
  return zfs_argv({"inherit", property, name.str()});
}

remote::Argv build_mount(const DatasetName& dataset) {
  return zfs_argv({"mount", dataset.str()});
}

remote::Argv build_create(const DatasetName& dataset, Parents parents,
                          const std::vector<std::pair<std::string, std::string>>& props) {
  remote::Argv argv = zfs_argv({"create"});
  if (parents == Parents::yes) {
    argv.emplace_back("-p");
  }
  for (const auto& [k, v] : props) {
    validate_property_name(k);
    validate_value(k, v);
    argv.insert(argv.end(), {"-o", k + "=" + v});
  }
  argv.push_back(dataset.str());
  return argv;
}

remote::Argv build_rollback(const SnapshotName& snapshot, DestroyNewer destroy_newer) {
  remote::Argv argv = zfs_argv({"rollback"});
  if (destroy_newer == DestroyNewer::yes) {
    argv.emplace_back("-r");
  }
  argv.push_back(snapshot.str());
  return argv;
}

} // namespace zmigrate::zfs
