// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/data_path.hpp>
#include <zmigrate/migration/plan.hpp>
#include <zmigrate/migration/smartos_node.hpp>
#include <zmigrate/remote/runner.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/zfs/capabilities.hpp>
#include <zmigrate/zfs/commands.hpp>
#include <zmigrate/zfs/names.hpp>

#include <algorithm>
#include <sstream>
#include <thread>

#include <fmt/format.h>

namespace zmigrate::migration {

namespace {
constexpr std::chrono::seconds k_vmadm_timeout{300};

// vmadm's own answer for an instance the node does not have: exit status 1 and the zone
// tools' "<uuid>: No such zone configured" (vmadm get/delete load the zone through zoneadm).
// Only that answer, for this very uuid, counts; any other failure is "cannot tell".
bool vmadm_says_no_such_vm(const remote::Result& r, const std::string& uuid) {
  return r.exit_status == 1 && r.err.find(uuid + ": No such zone configured") != std::string::npos;
}
} // namespace

SmartosNode::SmartosNode(Context& ctx, const inventory::Server& server)
    : m_ctx(ctx), m_server(server), m_runner(ctx.nodes.runner_for(server)),
      m_facts(ctx.nodes.facts_for(m_runner.host())) {}

SmartosNode::~SmartosNode() = default;

const zfs::Capabilities& SmartosNode::caps() {
  if (!m_facts.caps) {
    // One batched probe per node per command.
    const remote::Result r = m_runner.run(zfs::probe_command());
    m_facts.caps = zfs::parse_capabilities(r.out + "\n" + r.err);
    m_ctx.log.debug("zfs capabilities", {{"host", m_runner.host()}, {"caps", *m_facts.caps}});
  }
  return *m_facts.caps;
}

void SmartosNode::assume_caps(const zfs::Capabilities& known) {
  if (!m_facts.caps) {
    m_facts.caps = known;
  }
}

std::optional<nlohmann::json> SmartosNode::vm_get(const std::string& uuid) {
  const std::string what = fmt::format("{}: vmadm get {}", m_runner.host(), uuid);
  remote::RunOptions opts;
  opts.timeout = std::chrono::seconds(60);
  const remote::Result r = m_runner.run(remote::Command({"vmadm", "get", uuid}), opts);
  if (!r.ok()) {
    if (vmadm_says_no_such_vm(r, uuid) && !zone_listed(uuid)) {
      return std::nullopt;
    }
    throw Error(ExitCode::failure, what,
                fmt::format("cannot tell whether the node has the instance (exit status {}: {}); "
                            "check vmadm on {} and rerun",
                            r.exit_status, r.err.empty() ? "no error text" : r.err,
                            m_runner.host()));
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(r.out);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ExitCode::failure, what, fmt::format("output is not JSON: {}", e.what()));
  }
  if (!j.is_object() || j.value("uuid", "") != uuid) {
    throw Error(ExitCode::failure, what,
                fmt::format("answered for another instance ({}); check vmadm on {}",
                            j.is_object() ? j.value("uuid", "no uuid") : "not an object",
                            m_runner.host()));
  }
  return j;
}

void SmartosNode::vm_stop(const std::string& uuid) {
  remote::RunOptions opts;
  opts.timeout = k_vmadm_timeout;
  remote::run_checked(m_runner, remote::Command({"vmadm", "stop", uuid}), opts);
}

void SmartosNode::vm_start(const std::string& uuid) {
  remote::RunOptions opts;
  opts.timeout = k_vmadm_timeout;
  remote::run_checked(m_runner, remote::Command({"vmadm", "start", uuid}), opts);
}

void SmartosNode::vm_update(const std::string& uuid, const KeyValues& kv) {
  remote::RunOptions opts;
  opts.timeout = k_vmadm_timeout;
  remote::run_checked(m_runner, vm_update_command(uuid, kv), opts);
}

remote::Command SmartosNode::vm_update_command(const std::string& uuid, const KeyValues& kv) {
  remote::Argv argv{"vmadm", "update", uuid};
  for (const auto& [k, v] : kv) {
    argv.push_back(k + "=" + v);
  }
  return remote::Command(argv);
}

void SmartosNode::vm_delete(const std::string& uuid) {
  remote::RunOptions opts;
  opts.timeout = k_vmadm_timeout;
  remote::Result r;
  std::chrono::milliseconds delay(200);
  for (int attempt = 0; attempt < 6; ++attempt) {
    r = m_runner.run(remote::Command({"vmadm", "delete", uuid}), opts);
    // Datasets are often busy for a moment after receives or unmounts (lab.md gotcha 2).
    if (r.ok() || r.err.find("busy") == std::string::npos) {
      break;
    }
    m_ctx.clock.sleep_for(delay);
    delay *= 2;
  }
  // A failed delete is fine only when the instance is proven gone (an earlier attempt did it).
  if (!r.ok() && vm_get(uuid).has_value()) {
    throw Error(ExitCode::failure, fmt::format("{}: vmadm delete {}", m_runner.host(), uuid),
                r.err);
  }
}

std::string SmartosNode::zone_export(const std::string& uuid) {
  return remote::run_checked(m_runner, remote::Command({"zonecfg", "-z", uuid, "export"})).out;
}

void SmartosNode::zone_import(const std::string& migration_id, const std::string& uuid,
                              const std::string& config) {
  const std::string dir = private_dir(migration_id);
  write_remote_file(m_runner, dir, "zone.cfg", config, "600");
  remote::run_checked(m_runner, remote::Command({"zonecfg", "-z", uuid, "-f", dir + "/zone.cfg"}));
  remote::run_checked(m_runner, remote::Command({"zoneadm", "-z", uuid, "attach", "-F"}));
  m_runner.run(remote::Command({"rm", "-rf", dir})); // the dir is the migration's alone
}

void SmartosNode::zone_remove(const std::string& uuid) {
  // Either may already be gone after an interrupted attempt; what matters is the end state.
  m_runner.run(remote::Command({"zoneadm", "-z", uuid, "detach"}));
  const remote::Result r = m_runner.run(remote::Command({"zonecfg", "-z", uuid, "delete", "-F"}));
  if (!r.ok() && zone_listed(uuid)) {
    throw Error(ExitCode::failure, fmt::format("{}: zonecfg -z {} delete", m_runner.host(), uuid),
                r.err);
  }
}

void SmartosNode::image_import(const std::string& image_uuid) {
  remote::RunOptions opts;
  opts.timeout = std::chrono::minutes(30);
  remote::run_checked(m_runner, remote::Command({"imgadm", "import", "-q", image_uuid}), opts);
}

void SmartosNode::assume_host_key(const std::string& key) {
  if (m_facts.host_key.empty()) {
    m_facts.host_key = key;
  }
}

std::string SmartosNode::host_key() {
  if (!m_facts.host_key.empty()) {
    return m_facts.host_key;
  }
  // SmartOS keeps sshd's host keys in /var/ssh (its sshd_config's HostKey lines); most other
  // systems in /etc/ssh. The first readable one is the key that node's sshd presents.
  remote::RunOptions opts;
  opts.timeout = std::chrono::seconds(30);
  std::string key =
      remote::run_checked(
          m_runner,
          remote::Command({"sh", "-c",
                           "for f in \"$@\"; do [ -r \"$f\" ] && exec cat \"$f\"; done; echo "
                           "\"no ed25519 host key in $*\" >&2; exit 1",
                           "sh", "/var/ssh/ssh_host_ed25519_key.pub",
                           "/etc/ssh/ssh_host_ed25519_key.pub"}),
          opts)
          .out;
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r')) {
    key.pop_back();
  }
  m_facts.host_key = key;
  return key;
}

namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') {
      line.pop_back();
    }
    if (!line.empty()) {
      out.push_back(line);
    }
  }
  return out;
}

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : line) {
    if (c == '\t') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  out.push_back(cur);
  return out;
}

bool missing_text(const std::string& err) {
  return err.find("does not exist") != std::string::npos ||
         err.find("could not find any snapshots") != std::string::npos ||
         err.find("no such") != std::string::npos;
}

// The validated names every zfs argv is built from (zfs/commands.hpp); both throw UsageError
// naming the text before any command runs.
zfs::DatasetName checked_ds(const std::string& ds) {
  return zfs::DatasetName(ds);
}
zfs::SnapshotName checked_snap(const std::string& s) {
  return zfs::SnapshotName::parse(s);
}
// A dataset or a snapshot ("ds@snap").
zfs::ObjectName checked_object(const std::string& name) {
  if (name.find('@') != std::string::npos) {
    return checked_snap(name);
  }
  return checked_ds(name);
}
std::vector<zfs::DatasetName> checked_datasets(const std::vector<std::string>& names) {
  std::vector<zfs::DatasetName> out;
  out.reserve(names.size());
  for (const std::string& n : names) {
    out.push_back(checked_ds(n));
  }
  return out;
}
std::vector<zfs::SnapshotName> checked_snaps(const std::vector<std::string>& names) {
  std::vector<zfs::SnapshotName> out;
  out.reserve(names.size());
  for (const std::string& n : names) {
    out.push_back(checked_snap(n));
  }
  return out;
}

// A resume token comes from the other node's receive_resume_token: a malformed one is that
// node's zfs answering oddly (ExitCode::zfs), not a usage error. It never reaches an argv.
template <typename Build> remote::Argv token_argv(Build build) {
  try {
    return build();
  } catch (const UsageError& e) {
    throw Error(ExitCode::zfs, "receive_resume_token",
                fmt::format("{}; unexpected characters in the token", e.reason()));
  }
}

std::uint64_t to_u64(const std::string& s) {
  if (s.empty() || s == "-") {
    return 0;
  }
  try {
    return std::stoull(s);
  } catch (const std::exception&) {
    return 0;
  }
}

} // namespace

bool SmartosNode::zone_listed(const std::string& uuid) {
  // `zoneadm list -cp`: id:name:state:path:uuid:brand:ip-type, every configured zone.
  const remote::Result r = remote::run_checked(
      m_runner, remote::Command({"zoneadm", "list", "-cp"}), remote::RunOptions{});
  for (const std::string& line : lines_of(r.out)) {
    std::vector<std::string> f;
    std::string cur;
    for (char c : line) {
      if (c == ':') {
        f.push_back(cur);
        cur.clear();
      } else {
        cur.push_back(c);
      }
    }
    f.push_back(cur);
    if ((f.size() > 1 && f[1] == uuid) || (f.size() > 4 && f[4] == uuid)) {
      return true;
    }
  }
  return false;
}

remote::Result SmartosNode::zfs_retry(const remote::Argv& argv) {
  remote::Result r;
  std::chrono::milliseconds delay(100);
  for (int attempt = 0; attempt < 7; ++attempt) {
    remote::RunOptions opts;
    opts.timeout = std::chrono::minutes(30); // destroying a large tree takes its time
    r = m_runner.run(remote::Command(argv), opts);
    if (r.ok() || r.err.find("busy") == std::string::npos) {
      return r;
    }
    m_ctx.clock.sleep_for(delay);
    delay *= 2;
  }
  return r;
}

std::string DatasetTree::prop(const std::string& name, const std::string& key) const {
  const auto it = props.find(name);
  if (it == props.end()) {
    return {};
  }
  const auto p = it->second.find(key);
  return p == it->second.end() ? std::string() : p->second;
}

void SmartosNode::check_mountpoints(const std::vector<std::string>& roots,
                                    const std::string& zonepath) {
  if (roots.empty()) {
    return; // nothing to check (and a `zfs get -r` without operands would read every pool)
  }
  const remote::Argv argv = zfs::build_get_mountpoint_sources(checked_datasets(roots));
  const remote::Result r = remote::run_checked(m_runner, remote::Command(argv), {}, ExitCode::zfs);
  std::map<std::string, std::map<std::string, std::pair<std::string, std::string>>> p;
  std::vector<std::string> order;
  for (const std::string& line : lines_of(r.out)) {
    const auto f = split_tabs(line);
    if (f.size() < 4 || f[0].find('@') != std::string::npos) {
      continue;
    }
    if (!p.count(f[0])) {
      order.push_back(f[0]);
    }
    p[f[0]][f[1]] = {f[2], f[3]};
  }
  for (const std::string& ds : order) {
    auto& props = p[ds];
    const auto& [mp, source] = props["mountpoint"];
    if (props["type"].first != "filesystem" || props["zoned"].first == "on" || mp == "none" ||
        mp == "legacy" || mp == "-" || (source != "local" && source.rfind("received", 0) != 0)) {
      continue;
    }
    if (zonepath.empty() || (mp != zonepath && mp.rfind(zonepath + "/", 0) != 0)) {
      throw PreconditionError(
          fmt::format("{}: {}", m_runner.host(), ds),
          fmt::format("mountpoint '{}' ({}) lies outside the instance's zonepath '{}'; refusing "
                      "to mount it: check the dataset on the source",
                      mp, source, zonepath));
    }
  }
}

std::vector<std::string> SmartosNode::mount_filesystems(const std::vector<std::string>& roots,
                                                        const std::string& zonepath) {
  check_mountpoints(roots, zonepath);
  const DatasetTree t = tree(roots, {"type", "mounted", "mountpoint", "canmount", "zoned"});
  std::vector<std::string> mounted;
  for (const std::string& ds : t.datasets) {
    const std::string mp = t.prop(ds, "mountpoint");
    if (t.prop(ds, "type") != "filesystem" || t.prop(ds, "mounted") != "no" ||
        t.prop(ds, "zoned") == "on" || t.prop(ds, "canmount") != "on" || mp.empty() ||
        mp == "none" || mp == "legacy") {
      continue;
    }
    const remote::Result r = zfs_retry(zfs::build_mount(checked_ds(ds)));
    if (!r.ok() && r.err.find("already mounted") == std::string::npos) {
      throw Error(ExitCode::zfs, fmt::format("{}: zfs mount {}", m_runner.host(), ds),
                  fmt::format("{}; mount it by hand and rerun", r.err));
    }
    mounted.push_back(ds);
  }
  return mounted;
}

namespace {

// The props a tree reads: guid and createtxg, then `extra`.
std::vector<std::string> tree_props(const std::vector<std::string>& extra) {
  std::vector<std::string> props{"guid", "createtxg"};
  props.insert(props.end(), extra.begin(), extra.end());
  return props;
}

// The output of `zfs get -Hp -o name,property,value -r` as a tree.
DatasetTree parse_tree(const std::string& out) {
  DatasetTree t;
  for (const std::string& line : lines_of(out)) {
    const auto f = split_tabs(line);
    if (f.size() < 3) {
      continue;
    }
    const std::string& name = f[0];
    const bool is_snap = name.find('@') != std::string::npos;
    if (!t.props.count(name)) {
      if (is_snap) {
        t.snapshots[name.substr(0, name.find('@'))].push_back({name, 0, 0});
      } else {
        t.datasets.push_back(name);
      }
    }
    t.props[name][f[1]] = f[2] == "-" ? std::string() : f[2];
  }
  for (auto& [ds, snaps] : t.snapshots) {
    for (SnapshotInfo& s : snaps) {
      s.guid = to_u64(t.prop(s.name, "guid"));
      s.createtxg = to_u64(t.prop(s.name, "createtxg"));
    }
    std::stable_sort(snaps.begin(), snaps.end(), [](const SnapshotInfo& a, const SnapshotInfo& b) {
      return a.createtxg < b.createtxg;
    });
  }
  return t;
}

} // namespace

DatasetTree SmartosNode::tree(const std::vector<std::string>& roots,
                              const std::vector<std::string>& extra_props) {
  if (roots.empty()) {
    return {}; // no roots, nothing under them (a `zfs get -r` without operands reads every pool)
  }
  const std::vector<std::string> props = tree_props(extra_props);
  const remote::Argv argv = zfs::build_get_tree(checked_datasets(roots), props);
  const remote::Result r = m_runner.run(remote::Command(argv));
  if (!r.ok() && !missing_text(r.err)) {
    std::string list;
    for (const std::string& p : props) {
      list += (list.empty() ? "" : ",") + p;
    }
    throw Error(ExitCode::zfs, fmt::format("{}: zfs get -r {}", m_runner.host(), list), r.err);
  }
  return parse_tree(r.out);
}

bool SmartosNode::dataset_exists(const std::string& ds) {
  const remote::Result r =
      m_runner.run(remote::Command(zfs::build_exists_any_type(checked_object(ds))));
  if (r.ok()) {
    return true;
  }
  // Absent only on zfs's own answer ("cannot open '<ds>': dataset does not exist").
  if (r.exit_status == 1 &&
      r.err.find("'" + ds + "': dataset does not exist") != std::string::npos) {
    return false;
  }
  throw Error(ExitCode::zfs, fmt::format("{}: zfs list {}", m_runner.host(), ds),
              fmt::format("cannot tell whether it exists (exit status {}: {}); check zfs there",
                          r.exit_status, r.err.empty() ? "no error text" : r.err));
}

std::vector<std::string> SmartosNode::hierarchy(const std::string& root) {
  const remote::Result r =
      m_runner.run(remote::Command(zfs::build_list_hierarchy(checked_ds(root))));
  if (!r.ok()) {
    if (missing_text(r.err)) {
      return {};
    }
    throw Error(ExitCode::zfs, fmt::format("{}: zfs list {}", m_runner.host(), root), r.err);
  }
  return lines_of(r.out); // zfs lists parents before children
}

std::vector<SnapshotInfo> SmartosNode::snapshots(const std::string& ds) {
  const remote::Result r = m_runner.run(remote::Command(zfs::build_list_snapshots(checked_ds(ds))));
  if (!r.ok()) {
    if (missing_text(r.err)) {
      return {};
    }
    throw Error(ExitCode::zfs, fmt::format("{}: zfs list -t snapshot {}", m_runner.host(), ds),
                r.err);
  }
  std::vector<SnapshotInfo> out;
  for (const std::string& name : lines_of(r.out)) {
    if (name.rfind(ds + "@", 0) == 0) {
      out.push_back({name, 0});
    }
  }
  if (out.empty()) {
    return out;
  }
  // One `zfs get` for every GUID (zfs-fuse's `zfs list -o guid` is humanized).
  std::vector<zfs::ObjectName> names;
  for (const SnapshotInfo& s : out) {
    names.emplace_back(checked_snap(s.name));
  }
  const remote::Result g =
      remote::run_checked(m_runner, remote::Command(zfs::build_get_values(names, "guid")));
  std::map<std::string, std::uint64_t> guids;
  for (const std::string& line : lines_of(g.out)) {
    const auto f = split_tabs(line);
    if (f.size() >= 2) {
      guids[f[0]] = to_u64(f[1]);
    }
  }
  for (SnapshotInfo& s : out) {
    s.guid = guids[s.name];
  }
  return out;
}

std::map<std::string, std::string> SmartosNode::properties(const std::string& ds,
                                                           const std::vector<std::string>& props) {
  const remote::Result r = remote::run_checked(
      m_runner, remote::Command(zfs::build_get_properties_of(checked_object(ds), props)));
  std::map<std::string, std::string> out;
  for (const std::string& line : lines_of(r.out)) {
    const auto f = split_tabs(line);
    if (f.size() >= 2) {
      out[f[0]] = f[1] == "-" ? std::string() : f[1];
    }
  }
  return out;
}

std::string SmartosNode::origin(const std::string& ds) {
  const auto p = properties(ds, {"origin"});
  const auto it = p.find("origin");
  return it == p.end() ? std::string() : it->second;
}

Node::SnapshotRead SmartosNode::snapshot_and_read(const std::vector<std::string>& roots,
                                                  const std::string& snap, const std::string& tag,
                                                  const std::vector<std::string>& extra_props) {
  std::vector<zfs::SnapshotName> snaps;
  for (const std::string& r : roots) {
    snaps.emplace_back(checked_ds(r), snap);
  }
  SnapshotRead out;
  if (snaps.empty() || (!caps().multi_snapshot && snaps.size() > 1)) {
    snapshot_recursive(roots, snap); // throws UsageError on no root
    out.tree = tree(roots, extra_props);
    return out;
  }
  const bool hold = !tag.empty() && caps().holds;
  remote::Command cmd(zfs::build_snapshot(snaps, zfs::Recursive::yes));
  if (hold) {
    cmd.and_then(zfs::build_hold(tag, snaps, zfs::Recursive::yes));
  }
  cmd.and_then(zfs::build_get_tree(checked_datasets(roots), tree_props(extra_props)));
  const remote::Result r = m_runner.run(cmd);
  if (r.ok()) {
    out.held = hold;
    out.tree = parse_tree(r.out);
    return out;
  }
  // The snapshot made (one atomic txg) and the hold or the read refused, or no snapshot at all:
  // only the node can say which. The caller holds them (hold_all tolerates a hold taken).
  const bool made = std::all_of(snaps.begin(), snaps.end(), [this](const zfs::SnapshotName& s) {
    return dataset_exists(s.str());
  });
  if (!made) {
    snapshot_recursive(roots, snap); // throws what zfs says, or makes it
  }
  out.tree = tree(roots, extra_props);
  return out;
}

void SmartosNode::snapshot_recursive(const std::vector<std::string>& roots,
                                     const std::string& snap) {
  std::vector<zfs::SnapshotName> snaps;
  for (const std::string& r : roots) {
    snaps.emplace_back(checked_ds(r), snap);
  }
  if (caps().multi_snapshot || snaps.size() == 1) {
    // Throws UsageError on no root (nothing to snapshot is a caller's mistake).
    remote::run_checked(m_runner, remote::Command(zfs::build_snapshot(snaps, zfs::Recursive::yes)),
                        {}, ExitCode::zfs);
    return;
  }
  // No multi-dataset snapshot on this ZFS: one per hierarchy, in one session, back to back.
  for (const zfs::SnapshotName& s : snaps) {
    remote::run_checked(m_runner, remote::Command(zfs::build_snapshot({s}, zfs::Recursive::yes)),
                        {}, ExitCode::zfs);
  }
}

void SmartosNode::destroy_snapshot(const std::string& full_name) {
  const remote::Result r =
      zfs_retry(zfs::build_destroy(checked_snap(full_name), zfs::Recursive::no));
  // A failure is fine only when the snapshot is proven gone (an earlier attempt removed it).
  if (!r.ok() && dataset_exists(full_name)) {
    throw Error(ExitCode::zfs, fmt::format("{}: zfs destroy {}", m_runner.host(), full_name),
                r.err);
  }
}

void SmartosNode::destroy_snapshot_recursive(const std::string& full_name) {
  const remote::Result r =
      zfs_retry(zfs::build_destroy(checked_snap(full_name), zfs::Recursive::yes));
  if (!r.ok() && dataset_exists(full_name)) {
    throw Error(ExitCode::zfs, fmt::format("{}: zfs destroy -r {}", m_runner.host(), full_name),
                r.err);
  }
}

void SmartosNode::destroy_dataset(const std::string& ds, const std::string& owner_uuid) {
  if (!owned_by_instance(ds, owner_uuid)) {
    throw PreconditionError(fmt::format("{}: zfs destroy -r {}", m_runner.host(), ds),
                            fmt::format("refused: it is not a dataset of instance {} (a pool root "
                                        "or another instance's); nothing was destroyed",
                                        owner_uuid));
  }
  const remote::Result r =
      zfs_retry(zfs::build_destroy(checked_ds(ds), zfs::Recursive::yes, zfs::ForceUnmount::no));
  if (!r.ok() && dataset_exists(ds)) {
    throw Error(ExitCode::zfs, fmt::format("{}: zfs destroy -r {}", m_runner.host(), ds), r.err);
  }
}

void SmartosNode::set_property(const std::string& ds, const std::string& prop,
                               const std::string& value) {
  // build_set throws UsageError on a bad property name or a value with a newline, NUL or other
  // control character, before anything runs.
  remote::run_checked(m_runner, remote::Command(zfs::build_set(checked_ds(ds), prop, value)), {},
                      ExitCode::zfs);
}

void SmartosNode::inherit_property(const std::string& ds, const std::string& prop) {
  remote::run_checked(m_runner, remote::Command(zfs::build_inherit(checked_ds(ds), prop)), {},
                      ExitCode::zfs);
}

void SmartosNode::create_dataset(const std::string& ds, const KeyValues& props) {
  remote::run_checked(m_runner,
                      remote::Command(zfs::build_create(checked_ds(ds), zfs::Parents::yes)), {},
                      ExitCode::zfs);
  for (const auto& [prop, value] : props) {
    set_property(ds, prop, value);
  }
}

void SmartosNode::rollback_to(const std::string& full_name) {
  const remote::Result r =
      zfs_retry(zfs::build_rollback(checked_snap(full_name), zfs::DestroyNewer::no));
  if (!r.ok()) {
    throw Error(ExitCode::zfs, fmt::format("{}: zfs rollback {}", m_runner.host(), full_name),
                r.err);
  }
}

std::string SmartosNode::resume_token(const std::string& ds) {
  if (!caps().resume_tokens) {
    return {};
  }
  const auto p = properties(ds, {"receive_resume_token"});
  const auto it = p.find("receive_resume_token");
  return it == p.end() ? std::string() : it->second;
}

std::string SmartosNode::resume_token_snapshot(const std::string& token) {
  const remote::Argv argv = token_argv([&] { return zfs::build_resume_token_decode(token); });
  const remote::Result r = remote::run_checked(m_runner, remote::Command(argv), {}, ExitCode::zfs);
  for (const std::string& line : lines_of(r.out + "\n" + r.err)) {
    const auto at = line.find("toname = ");
    if (at != std::string::npos) {
      return checked_snap(line.substr(at + 9)).str();
    }
  }
  throw Error(ExitCode::zfs, fmt::format("{}: zfs send -nvP -t", m_runner.host()),
              "the resume token names no snapshot (no toname in the decoded token)");
}

void SmartosNode::hold(const std::string& full_name, const std::string& tag) {
  if (!caps().holds) {
    return;
  }
  const remote::Result r = m_runner.run(
      remote::Command(zfs::build_hold(tag, {checked_snap(full_name)}, zfs::Recursive::no)));
  if (!r.ok() && r.err.find("already exists") == std::string::npos) {
    throw Error(ExitCode::zfs, fmt::format("{}: zfs hold {} {}", m_runner.host(), tag, full_name),
                r.err);
  }
}

void SmartosNode::release(const std::string& full_name, const std::string& tag) {
  if (!caps().holds) {
    return;
  }
  m_runner.run(
      remote::Command(zfs::build_release(tag, {checked_snap(full_name)}, zfs::Recursive::no)));
}

void SmartosNode::hold_all(const std::vector<std::string>& full_names, const std::string& tag) {
  if (!caps().holds || full_names.empty()) {
    return;
  }
  // build_hold throws UsageError on a bad tag before anything runs.
  const remote::Result r = m_runner.run(
      remote::Command(zfs::build_hold(tag, checked_snaps(full_names), zfs::Recursive::no)));
  if (r.ok()) {
    return;
  }
  // Some exist already (a rerun): hold the rest one by one, which tolerates that.
  for (const std::string& n : full_names) {
    hold(n, tag);
  }
}

namespace {
// The sequence of a prune: hold, release, `destroy -r` each, `destroy` each (&&).
remote::Command prune_sequence(bool holds, const std::vector<std::string>& hold,
                               const std::vector<std::string>& release, const std::string& tag,
                               const std::vector<std::string>& destroy_recursive,
                               const std::vector<std::string>& destroy) {
  remote::Command cmd;
  const auto add = [&cmd](remote::Argv argv) {
    if (cmd.pipeline.empty()) {
      cmd.pipeline.push_back(std::move(argv));
    } else {
      cmd.and_then(std::move(argv));
    }
  };
  if (holds && !hold.empty()) {
    add(zfs::build_hold(tag, checked_snaps(hold), zfs::Recursive::no));
  }
  if (holds && !release.empty()) {
    add(zfs::build_release(tag, checked_snaps(release), zfs::Recursive::no));
  }
  for (const std::string& n : destroy_recursive) {
    add(zfs::build_destroy(checked_snap(n), zfs::Recursive::yes));
  }
  for (const std::string& n : destroy) {
    add(zfs::build_destroy(checked_snap(n), zfs::Recursive::no));
  }
  return cmd;
}
} // namespace

remote::Command SmartosNode::prune_command(const std::vector<std::string>& release,
                                           const std::string& tag,
                                           const std::vector<std::string>& destroy_recursive,
                                           const std::vector<std::string>& destroy) {
  return prune_sequence(caps().holds, {}, release, tag, destroy_recursive, destroy);
}

void SmartosNode::release_and_destroy(const std::vector<std::string>& hold,
                                      const std::vector<std::string>& release,
                                      const std::string& tag,
                                      const std::vector<std::string>& destroy_recursive,
                                      const std::vector<std::string>& destroy) {
  const remote::Command cmd =
      prune_sequence(caps().holds, hold, release, tag, destroy_recursive, destroy);
  if (cmd.pipeline.empty()) {
    return;
  }
  remote::RunOptions opts;
  opts.timeout = std::chrono::minutes(30); // destroying a large tree takes its time
  if (m_runner.run(cmd, opts).ok()) {
    return;
  }
  // Busy, a hold already taken or released, a snapshot already gone: each step with its own
  // tolerance.
  hold_all(hold, tag);
  release_all(release, tag);
  for (const std::string& n : destroy_recursive) {
    destroy_snapshot_recursive(n);
  }
  for (const std::string& n : destroy) {
    destroy_snapshot(n);
  }
}

void SmartosNode::release_all(const std::vector<std::string>& full_names, const std::string& tag) {
  if (!caps().holds || full_names.empty()) {
    return;
  }
  const remote::Argv argv = zfs::build_release(tag, checked_snaps(full_names), zfs::Recursive::no);
  if (m_runner.run(remote::Command(argv)).ok() || full_names.size() == 1) {
    return;
  }
  // OpenZFS releases all or nothing: one snapshot without the hold (never held, or released by
  // an interrupted run) keeps the others held. One by one, each tolerating that.
  for (const std::string& n : full_names) {
    release(n, tag);
  }
}

namespace {

// What SmartosNode sends: a resume token alone (the token carries the stream's flags), else
// SNAP with its properties (-p), -c/-L/-e where the capabilities given to the builder allow
// them, incremental from `from` when set: -I from a snapshot of the same dataset (users'
// intermediate snapshots travel), -i from a clone's origin (the only form valid there). Throws
// UsageError on a bad snapshot name.
zfs::SendSpec send_spec(const std::string& snapshot, const std::string& from,
                        const std::string& token) {
  zfs::SendSpec spec;
  if (!token.empty()) {
    spec.resume_token = token;
    return spec;
  }
  const zfs::SnapshotName to = checked_snap(snapshot);
  spec.snapshot = to;
  spec.props = true;
  spec.compressed = spec.large_blocks = spec.embedded = true;
  if (!from.empty()) {
    const zfs::SnapshotName base = checked_snap(from);
    spec.incremental = base.dataset() == to.dataset() ? zfs::IncrementalKind::intermediates
                                                      : zfs::IncrementalKind::single;
    spec.from = base;
  }
  return spec;
}

} // namespace

remote::Argv SmartosNode::send_argv(const std::string& snapshot, const std::string& from,
                                    const std::string& token,
                                    const zfs::Capabilities& target_caps) {
  const zfs::SendSpec spec = send_spec(snapshot, from, token);
  // -c/-L/-e only where both ends have them; -t needs resume tokens here (PreconditionError).
  const zfs::Capabilities stream = zfs::stream_capabilities(caps(), target_caps);
  if (!token.empty()) {
    return token_argv([&] { return zfs::build_send(spec, stream); });
  }
  return zfs::build_send(spec, stream);
}

std::pair<std::uint64_t, bool> SmartosNode::estimate_send(const std::string& snapshot,
                                                          const std::string& from,
                                                          const std::string& token,
                                                          const DatasetTree* known) {
  if (caps().dry_run_parsable && (token.empty() || caps().resume_tokens)) {
    const zfs::SendSpec spec = send_spec(snapshot, from, token);
    const remote::Argv argv =
        token.empty() ? zfs::build_send_estimate(spec, caps())
                      : token_argv([&] { return zfs::build_send_estimate(spec, caps()); });
    const remote::Result r = m_runner.run(remote::Command(argv));
    if (r.ok()) {
      std::uint64_t size = 0;
      for (const std::string& line : lines_of(r.out + "\n" + r.err)) {
        const auto f = split_tabs(line);
        if (f.size() >= 2 && f[0] == "size") {
          size = to_u64(f[1]);
        } else if (f.size() >= 3 && (f[0] == "full" || f[0] == "incremental")) {
          size = std::max(size, to_u64(f.back()));
        }
      }
      return {size, true};
    }
  }
  // Approximation from properties (zfs-fuse): the snapshot's referenced size for a full send,
  // the growth of referenced for an incremental (overwrites are not counted: approximate).
  auto referenced = [&](const std::string& name) {
    if (known != nullptr && known->has(name) && !known->prop(name, "referenced").empty()) {
      return to_u64(known->prop(name, "referenced"));
    }
    return to_u64(properties(name, {"referenced"})["referenced"]);
  };
  const std::uint64_t ref_to = referenced(snapshot);
  if (from.empty() || !token.empty()) {
    return {ref_to, false};
  }
  const std::uint64_t ref_from = referenced(from);
  return {ref_to > ref_from ? ref_to - ref_from : 0, false};
}

} // namespace zmigrate::migration
