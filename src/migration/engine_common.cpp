// SPDX-License-Identifier: MPL-2.0
#include "engine_common.hpp"

#include <zmigrate/migration/data_path.hpp>
#include <zmigrate/migration/plan.hpp>
#include <zmigrate/migration/steps.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/units.hpp>
#include <zmigrate/zfs/capabilities.hpp>
#include <zmigrate/zfs/names.hpp>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <future>
#include <set>
#include <tuple>

#include <fmt/format.h>

namespace zmigrate::migration::detail {

bool json_bool(const nlohmann::json& j, const char* key, bool def) {
  if (!j.is_object() || !j.contains(key)) {
    return def;
  }
  const nlohmann::json& v = j.at(key);
  if (v.is_boolean()) {
    return v.get<bool>();
  }
  if (v.is_string()) {
    return v.get<std::string>() == "true";
  }
  return def;
}

bool restore_visibility(Node& node, const nlohmann::json& vm, bool autoboot) {
  std::vector<std::pair<std::string, std::string>> kv;
  const bool hidden = json_bool(vm, "do_not_inventory");
  if (hidden) {
    kv.emplace_back("do_not_inventory", "false");
  }
  if (json_bool(vm, "autoboot", !autoboot) != autoboot) {
    kv.emplace_back("autoboot", autoboot ? "true" : "false");
  }
  if (!kv.empty()) {
    node.vm_update(vm.value("uuid", ""), kv);
  }
  return hidden;
}

void refuse_triton_migration(Context& ctx, const std::string& vm_uuid) {
  const std::optional<nlohmann::json> tm = ctx.inventory.find_triton_migration(vm_uuid);
  if (!tm) {
    return;
  }
  auto field = [&](const char* k) {
    const auto it = tm->find(k);
    return it != tm->end() && it->is_string() ? it->get<std::string>() : std::string("?");
  };
  const std::string phase = field("phase");
  const std::string state = field("state");
  if (state == "aborted") {
    return; // legacy: an aborted record that VMAPI itself lets a new begin replace
  }
  const std::string what = fmt::format("instance {}", vm_uuid);
  if (phase == "switch" && state == "successful") {
    throw PreconditionError(
        what, fmt::format("Triton's own migration {} (VMAPI; sdc-migrate or CloudAPI) switched it "
                          "and waits for its finalize; run \"sdc-migrate finalize {}\" (or "
                          "rollback) first",
                          field("id"), vm_uuid));
  }
  throw PreconditionError(
      what, fmt::format("Triton's own migration {} (VMAPI; sdc-migrate or CloudAPI) holds it: "
                        "phase {}, state {}, since {}; let it finish, or end it with "
                        "\"sdc-migrate abort {}\", before zmigrate moves the instance",
                        field("id"), phase, state, field("created_timestamp"), vm_uuid));
}

void mark_source(Context& ctx, const state::Migration& m, Node& source, const std::string& ds) {
  bool recorded = false;
  for (const state::Artefact& a : ctx.store.live_artefacts(m.id)) {
    recorded = recorded || (a.kind == "source_mark" && a.name == ds);
  }
  if (!recorded) {
    state::Artefact a;
    a.migration_id = m.id;
    a.kind = "source_mark";
    a.host = "source";
    a.name = ds;
    a.details = {{"property", k_mark_property}, {"value", m.id}};
    a.created = iso8601(ctx.clock.wall_now());
    ctx.store.record_artefact(a);
  }
  source.set_property(ds, k_mark_property, m.id);
}

void clear_mark(Context& ctx, const state::Migration& m, Node& node, const std::string& ds) {
  if (node.dataset_exists(ds) && node.properties(ds, {k_mark_property})[k_mark_property] == m.id) {
    node.inherit_property(ds, k_mark_property);
  }
  for (const state::Artefact& a : ctx.store.live_artefacts(m.id)) {
    if (a.kind == "source_mark" && a.name == ds) {
      ctx.store.mark_artefact_removed(a.id);
    }
  }
}

void put_source_back(Context& ctx, const state::Migration& m, Ends& ends, const inventory::Vm& vm,
                     const std::function<void()>& on_start) {
  const auto src = ends.source->vm_get(vm.uuid);
  if (!src) {
    return;
  }
  const bool unhidden = restore_visibility(*ends.source, *src, json_bool(m.data, "autoboot", true));
  bool runs = src->value("state", "") == "running";
  if (json_bool(m.data.value("switch", nlohmann::json::object()), "was_running") && !runs) {
    if (on_start) {
      on_start();
    }
    ends.source->vm_start(vm.uuid);
    runs = true;
  }
  if (unhidden) {
    // vm-agent reports a hidden instance gone: done when VMAPI shows it on the source again.
    wait_vmapi(ctx, vm.uuid, ends.source_server.uuid, runs ? "running" : "stopped");
  }
}

std::optional<std::chrono::milliseconds> measured_switch_fixed(Context& ctx) {
  std::vector<double> fixed;
  state::ListFilter recent;
  recent.include_archived = true;
  recent.limit = k_history_window;
  for (const state::Migration& m : ctx.store.list_migrations(recent)) {
    const nlohmann::json sw = m.data.value("switch", nlohmann::json::object());
    if (sw.value("was_running", false) && sw.contains("downtime_ms") &&
        sw.contains("final_sync_ms")) {
      fixed.push_back(static_cast<double>(
          std::max<std::int64_t>(0, sw.value("downtime_ms", std::int64_t{0}) -
                                        sw.value("final_sync_ms", std::int64_t{0}))));
    }
  }
  if (fixed.empty()) {
    return std::nullopt;
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(median(fixed)));
}

Ends open_ends(Context& ctx, const state::Migration& m) {
  Ends e;
  e.source_server = ctx.inventory.resolve_server(m.source_server_uuid);
  e.target_server = ctx.inventory.resolve_server(m.target_server_uuid);
  e.source = &ctx.nodes.node(ctx, e.source_server);
  e.target = &ctx.nodes.node(ctx, e.target_server);
  return e;
}

inventory::Vm recorded_vm(const state::Migration& m) {
  if (!m.data.contains("vm")) {
    throw Error(ExitCode::state, fmt::format("migration {}", m.id),
                "the record has no instance snapshot (data.vm); it was not written by begin");
  }
  return inventory::parse_vm(m.data.at("vm"));
}

std::vector<std::string> instance_roots(const state::Migration& m) {
  std::vector<std::string> roots;
  if (const auto it = m.data.find("datasets"); it != m.data.end() && it->is_array()) {
    for (const nlohmann::json& ds : *it) {
      roots.push_back(ds.is_string() ? ds.get<std::string>() : ds.dump());
    }
  } else {
    roots = inventory::instance_datasets(recorded_vm(m));
  }
  for (const std::string& ds : roots) {
    if (!owned_by_instance(ds, m.vm_uuid)) {
      throw PreconditionError(
          fmt::format("dataset '{}' of migration {}", ds, m.id),
          fmt::format("is not a dataset of instance {}; zmigrate works only on the instance's "
                      "own datasets: abort the migration and begin again",
                      m.vm_uuid));
    }
  }
  return roots;
}

namespace {

std::string snap_part(const std::string& full) {
  const auto at = full.find('@');
  return at == std::string::npos ? std::string() : full.substr(at + 1);
}

// `ds` exists on the destination: resume its interrupted receive, or send from the newest
// snapshot both hold (by GUID, up to `to` = *it_to), or nothing when it is there already.
std::vector<Stream> plan_existing(const DatasetTree& dt, const std::string& dst_host,
                                  const std::string& ds, const std::vector<SnapshotInfo>& src_snaps,
                                  std::vector<SnapshotInfo>::const_iterator it_to) {
  const std::string& to = it_to->name;
  const std::string token = dt.prop(ds, "receive_resume_token");
  if (!token.empty()) {
    return {{ds, StreamKind::resume, "", to, token}};
  }
  const auto dit = dt.snapshots.find(ds);
  const std::vector<SnapshotInfo> dst_snaps =
      dit == dt.snapshots.end() ? std::vector<SnapshotInfo>{} : dit->second;
  std::set<std::uint64_t> dst_guids;
  for (const SnapshotInfo& s : dst_snaps) {
    dst_guids.insert(s.guid);
  }
  const SnapshotInfo* common = nullptr;
  for (auto it = src_snaps.begin(); it != std::next(it_to); ++it) {
    if (dst_guids.count(it->guid) != 0U) {
      common = &*it;
    }
  }
  if (common == nullptr) {
    std::vector<std::string> names;
    for (const SnapshotInfo& s : dst_snaps) {
      names.push_back(snap_part(s.name));
    }
    throw Error(ExitCode::zfs, fmt::format("{}: {}", dst_host, ds),
                fmt::format("the target already has this dataset with no snapshot in common "
                            "with the source (target snapshots: {}); zmigrate never overwrites "
                            "data it did not create: remove it on the target or choose "
                            "another node",
                            names.empty() ? "none" : fmt::format("{}", fmt::join(names, ", "))));
  }
  if (common->guid == it_to->guid) {
    return {}; // already there
  }
  return {{ds, StreamKind::incremental, common->name, to, ""}};
}

// Plan the streams that bring `ds` on the destination up to `to` (a snapshot on the source),
// choosing the base by GUID, never by name. Pure over the two trees read before, but for the
// origin of a clone's first transfer (read on the destination).
std::vector<Stream> plan_dataset(Context& ctx, const std::string& migration_id,
                                 const DatasetTree& st, const DatasetTree& dt,
                                 const std::string& dst_host, const std::string& ds,
                                 const std::string& to, Node& dst) {
  const auto sit = st.snapshots.find(ds);
  const std::vector<SnapshotInfo> src_snaps =
      sit == st.snapshots.end() ? std::vector<SnapshotInfo>{} : sit->second;
  auto it_to = std::find_if(src_snaps.begin(), src_snaps.end(),
                            [&](const SnapshotInfo& s) { return s.name == to; });
  if (it_to == src_snaps.end()) {
    throw Error(ExitCode::zfs, to,
                "the migration snapshot is missing right after it was taken; check the pool");
  }
  if (dt.has(ds)) {
    return plan_existing(dt, dst_host, ds, src_snaps, it_to);
  }
  std::vector<Stream> out;
  // Users' older snapshots go along (TRITON-1809): the oldest first, then -I up to `to`.
  const SnapshotInfo& oldest = src_snaps.front();
  const bool users_snapshots =
      oldest.name != to && zfs::parse_migration_snap(migration_id, snap_part(oldest.name)) < 0;
  // First transfer of this dataset. A clone of an image whose origin the destination holds
  // with the same GUID is sent as an incremental from the origin: it stays a clone, and small.
  const std::string origin = st.prop(ds, "origin");
  if (!origin.empty()) {
    const std::string origin_ds = origin.substr(0, origin.find('@'));
    const DatasetTree ot = dst.tree({origin_ds});
    const std::uint64_t dst_guid = std::strtoull(ot.prop(origin, "guid").c_str(), nullptr, 10);
    const std::uint64_t src_guid = std::strtoull(st.prop(origin, "guid").c_str(), nullptr, 10);
    if (dst_guid != 0 && (src_guid == 0 || src_guid == dst_guid)) {
      if (users_snapshots) {
        out.push_back({ds, StreamKind::clone, origin, oldest.name, ""});
        out.push_back({ds, StreamKind::incremental, oldest.name, to, ""});
      } else {
        out.push_back({ds, StreamKind::clone, origin, to, ""});
      }
      return out;
    }
    ctx.log.info("origin not on the destination with the same GUID; sending in full",
                 {{"dataset", ds}, {"origin", origin}});
  }
  if (users_snapshots) {
    out.push_back({ds, StreamKind::full, "", oldest.name, ""});
    out.push_back({ds, StreamKind::incremental, oldest.name, to, ""});
  } else {
    out.push_back({ds, StreamKind::full, "", to, ""});
  }
  return out;
}

} // namespace

std::string node_boot(const inventory::Server& s) {
  if (!s.raw.is_object()) {
    return "";
  }
  if (s.raw.contains("last_boot") && s.raw["last_boot"].is_string()) {
    return s.raw["last_boot"].get<std::string>();
  }
  const nlohmann::json sysinfo = s.raw.value("sysinfo", nlohmann::json::object());
  if (sysinfo.is_object() && sysinfo.contains("Boot Time") && sysinfo["Boot Time"].is_string()) {
    return sysinfo["Boot Time"].get<std::string>();
  }
  return "";
}

void probe_both(Operation& op, Node& a, Node& b) {
  // The probe's own text is part of the key: a zmigrate whose probe asks more probes again.
  const std::string probe = std::to_string(std::hash<std::string_view>{}(zfs::probe_script()));
  state::Migration& m = op.record();
  const auto cached = [&](Node& n) {
    const std::string boot = node_boot(n.server());
    const nlohmann::json all = m.data.value("node_caps", nlohmann::json::object());
    const nlohmann::json c =
        all.is_object() ? all.value(n.server().uuid, nlohmann::json()) : nlohmann::json();
    if (boot.empty() || !c.is_object() || c.value("boot", "") != boot ||
        c.value("probe", "") != probe || !c.contains("caps")) {
      return false;
    }
    try {
      n.assume_caps(c["caps"].get<zfs::Capabilities>());
    } catch (const std::exception&) {
      return false; // unreadable: probe again
    }
    if (c.contains("host_key") && c["host_key"].is_string()) {
      n.assume_host_key(c["host_key"].get<std::string>()); // a sync's data path read it
    }
    return true;
  };
  const bool a_known = cached(a);
  const bool b_known = cached(b);
  both([&] { a.caps(); }, [&] { b.caps(); });
  if (a_known && b_known) {
    return;
  }
  bool changed = false;
  for (Node* n : {&a, &b}) {
    const std::string boot = node_boot(n->server());
    if (boot.empty()) {
      continue;
    }
    if (!m.data.contains("node_caps") || !m.data["node_caps"].is_object()) {
      m.data["node_caps"] = nlohmann::json::object();
    }
    m.data["node_caps"][n->server().uuid] = {{"boot", boot}, {"probe", probe}, {"caps", n->caps()}};
    changed = true;
  }
  if (changed) {
    op.save();
  }
}

std::optional<DatasetTree> tree_after(const DatasetTree& before, const DatasetTree& sender,
                                      const std::vector<Stream>& plan) {
  DatasetTree t = before;
  const auto add = [&](const std::string& ds, const SnapshotInfo& s) {
    if (!t.has(ds)) {
      t.datasets.push_back(ds);
      t.props[ds];
    }
    if (t.has(s.name)) {
      return;
    }
    // Appended in the sender's order: what a stream brings is newer than what the receiver
    // had. The sender's createtxg is kept as it came (txgs of two pools do not compare).
    t.snapshots[ds].push_back(s);
    t.props[s.name] = {{"guid", std::to_string(s.guid)},
                       {"createtxg", std::to_string(s.createtxg)}};
  };
  for (const Stream& st : plan) {
    if (st.kind == StreamKind::resume) {
      return std::nullopt;
    }
    const auto it = sender.snapshots.find(st.dataset);
    if (it == sender.snapshots.end()) {
      return std::nullopt;
    }
    const std::vector<SnapshotInfo>& snaps = it->second; // oldest first
    const auto find = [&](const std::string& name) {
      return std::find_if(snaps.begin(), snaps.end(),
                          [&](const SnapshotInfo& s) { return s.name == name; });
    };
    const auto to = find(st.to);
    if (to == snaps.end()) {
      return std::nullopt;
    }
    if (st.kind == StreamKind::incremental) {
      const auto from = find(st.from);
      if (from == snaps.end() || from > to) {
        return std::nullopt;
      }
      for (auto s = from + 1; s <= to; ++s) {
        add(st.dataset, *s);
      }
    } else {
      add(st.dataset, *to);
    }
  }
  return t;
}

PruneOrder prune_order(const std::string& migration_id, const std::vector<std::string>& roots,
                       const std::string& keep, const DatasetTree& t) {
  PruneOrder o;
  std::set<std::string> snaps;
  for (const auto& [ds, list] : t.snapshots) {
    for (const SnapshotInfo& s : list) {
      const std::string snap = snap_part(s.name);
      if (zfs::parse_migration_snap(migration_id, snap) < 0 || snap == keep) {
        continue;
      }
      o.doomed.push_back(s.name);
      snaps.insert(snap);
    }
  }
  // One `destroy -r` per root and snapshot name (migration snapshots are made with
  // `snapshot -r`, so a root's descendants have the same ones), then whatever a root did not
  // cover.
  std::set<std::string> covered;
  for (const std::string& snap : snaps) {
    for (const std::string& root : roots) {
      const std::string name = root + "@" + snap;
      if (!t.has(name)) {
        continue;
      }
      o.recursive.push_back(name);
      for (const std::string& d : o.doomed) {
        const std::string ds = d.substr(0, d.find('@'));
        if (snap_part(d) == snap && (ds == root || ds.rfind(root + "/", 0) == 0)) {
          covered.insert(d);
        }
      }
    }
  }
  for (const std::string& d : o.doomed) {
    if (!covered.count(d)) {
      o.single.push_back(d);
    }
  }
  return o;
}

void prune_snapshots(Context& ctx, Node& node, const std::string& migration_id,
                     const std::vector<std::string>& roots, const std::string& keep,
                     const DatasetTree* known, const std::vector<std::string>& hold) {
  const std::string tag = "zmigrate-" + migration_id;
  const DatasetTree t = known != nullptr ? *known : node.tree(roots);
  const PruneOrder o = prune_order(migration_id, roots, keep, t);
  if (o.doomed.empty()) {
    if (!hold.empty()) {
      node.hold_all(hold, tag);
    }
    return;
  }
  // One command whatever the number of datasets: one release, then the destroys.
  node.release_and_destroy(hold, o.doomed, tag, o.recursive, o.single);
  ctx.log.debug("pruned migration snapshots", {{"host", node.host()}, {"snapshots", o.doomed}});
}

void check_rate_limit(Context& ctx, Node& sender) {
  if (ctx.settings.bwlimit > 0 && sender.caps().node.empty() && !sender.caps().has_pv) {
    throw PreconditionError(
        fmt::format("--bwlimit {}/s on {}", human_bytes(ctx.settings.bwlimit), sender.host()),
        "the sending node has neither node.js (/usr/node/bin/node, as every SmartOS global "
        "zone) nor pv to limit the rate with; nothing was changed. Run without --bwlimit (and "
        "without the configuration's bwlimit), or install one of them there");
  }
}

DataPathSpec data_path_spec(Context& ctx, const state::Migration& m, Node& src, Node& dst,
                            const std::vector<std::string>& datasets) {
  // What the spec needs of each node (a probe apiece, the target's host key), both at once.
  std::string host_key;
  both([&] { src.caps(); },
       [&] {
         host_key = dst.host_key();
         dst.caps();
       });
  DataPathSpec spec;
  spec.migration_id = m.id;
  spec.source_server_uuid = src.server().uuid;
  spec.target_server_uuid = dst.server().uuid;
  spec.source_boot = node_boot(src.server());
  spec.target_boot = node_boot(dst.server());
  spec.source_addr = src.server().admin_ip;
  spec.target_addr = dst.server().admin_ip;
  spec.target_host_key = host_key;
  spec.datasets = datasets;
  spec.resumable = src.caps().resume_tokens && dst.caps().resume_tokens;
  spec.watchdog = dst.caps().has_mbuffer;
  spec.zfs_path = ctx.settings.zfs_path;
  spec.connect_timeout_s = ctx.settings.ssh_connect_timeout_s;
  spec.target_user = ctx.settings.ssh_user;
  spec.target_port = ctx.settings.ssh_port;
  check_rate_limit(ctx, src);
  spec.rate_limit = ctx.settings.bwlimit;
  spec.throttle_node = src.caps().node;
  return spec;
}

namespace {

// What the steps of one sync share.
struct SyncRun {
  SyncRun(Context& c, Operation& o, Node& from, Node& to) : ctx(c), op(o), src(from), dst(to) {}
  Context& ctx;
  Operation& op;
  Node& src;
  Node& dst;
  SyncOptions options;
  std::vector<std::string> roots;
  std::string snap;              // the new migration snapshot (snap name)
  DatasetTree dt;                // the receiver, read while the snapshot is taken
  DatasetTree st;                // the sender, read after the snapshot
  std::vector<Stream> plan;      // every stream, in order
  std::vector<std::string> all;  // every dataset of the instance on the sender
  std::vector<std::string> held; // ds@snap of each
  std::unique_ptr<Link> own_link;
  std::string target_host_key; // as the own link's spec took it
  Link* link = nullptr;
  bool open_own = false;
  bool src_held = false;   // the snapshot command held the new snapshot on the sender too
  bool src_pruned = false; // the sender's prune rode along with the streams (send_all)
  bool dst_pruned = false; // the receiver's hold and prune ran beside the sender's (send_all)
  bool do_prune = false;
  std::uint64_t total = 0;
  bool approximate = false;
  std::uint64_t done = 0;
  double rate = 0;
  SyncResult result;

  state::Migration& m() { return op.record(); }
  std::string tag() const { return "zmigrate-" + op.id(); }
};

// This sync's own data path stays installed for the migration's next command once the whole
// sync succeeded (a failure closes it: its destructor).
bool parks(const SyncRun& r) {
  return r.options.park_path && !r.options.reverse;
}

// 1. One atomic snapshot of every dataset of the instance, the sender read right after it in the
// same command; the receiver is read meanwhile.
void take_snapshot(SyncRun& r, nlohmann::json& d) {
  const bool resumable = r.src.caps().resume_tokens && r.dst.caps().resume_tokens;
  const int n = r.m().data.value("snap_n", 0) + 1;
  r.snap = zfs::migration_snap_name(r.m().id, n);
  // The number is recorded before the snapshot exists: a process killed in between leaves a
  // gap in the numbering, never a rerun that finds its snapshot name taken.
  r.m().data["snap_n"] = n;
  r.op.save();
  both(
      [&] {
        // The sender is read in the same command, after its snapshot: the plan needs it.
        Node::SnapshotRead sr = r.src.snapshot_and_read(
            r.roots, r.snap, r.options.holds ? r.tag() : "", {"origin", "referenced"});
        r.src_held = sr.held;
        r.st = std::move(sr.tree);
      },
      [&] {
        r.dt = r.dst.tree(r.roots, resumable ? std::vector<std::string>{"receive_resume_token"}
                                             : std::vector<std::string>{});
      });
  d["snapshot"] = r.snap;
}

// A resume token comes from the other node: it must resume this dataset, towards a snapshot
// of this migration, before the sender sends anything for it.
void check_token(SyncRun& r, const Stream& t) {
  const std::string problem =
      resume_token_problem(t.dataset, r.m().id, r.src.resume_token_snapshot(t.token));
  if (!problem.empty()) {
    throw Error(ExitCode::zfs, fmt::format("{}: {}", r.dst.host(), t.dataset),
                fmt::format("{}; refusing to send it. Clear it on the target with \"zfs recv -A "
                            "{}\" and rerun",
                            problem, t.dataset));
  }
}

// 2. Plan every stream from both trees (GUID-based base selection).
void plan_streams(SyncRun& r, nlohmann::json& d) {
  const DatasetTree& st = r.st;
  r.all = st.datasets;
  for (const std::string& root : r.roots) {
    if (!st.has(root)) {
      throw Error(ExitCode::zfs, fmt::format("{}: {}", r.src.host(), root),
                  "the instance's dataset does not exist on this node");
    }
  }
  for (const std::string& ds : r.all) {
    r.held.push_back(ds + "@" + r.snap);
    for (Stream& t :
         plan_dataset(r.ctx, r.m().id, st, r.dt, r.dst.host(), ds, ds + "@" + r.snap, r.dst)) {
      if (t.kind == StreamKind::resume) {
        check_token(r, t);
      }
      if (r.options.estimate) {
        std::tie(t.estimate, t.exact) = r.src.estimate_send(t.to, t.from, t.token, &st);
      }
      r.total += t.estimate;
      r.approximate = r.approximate || !t.exact;
      r.plan.push_back(std::move(t));
    }
  }
  r.approximate = r.approximate || !r.options.estimate;
  if (r.options.holds && !r.src_held) {
    r.src.hold_all(r.held, r.tag());
  }
  d["streams"] = nlohmann::json::array();
  for (const Stream& t : r.plan) {
    d["streams"].push_back({{"dataset", t.dataset},
                            {"kind", to_string(t.kind)},
                            {"from", t.from},
                            {"to", t.to},
                            {"estimate", t.estimate},
                            {"exact", t.exact}});
  }
}

// New target datasets go into the ledger before their first byte arrives; then the link: the
// caller's, the command's kept one, or one of this sync's own.
void choose_link(SyncRun& r) {
  for (const Stream& t : r.plan) {
    if ((t.kind == StreamKind::full || t.kind == StreamKind::clone) && !r.options.reverse) {
      state::Artefact a;
      a.migration_id = r.m().id;
      a.kind = "target_dataset";
      a.host = "target";
      a.name = t.dataset;
      a.created = iso8601(r.ctx.clock.wall_now());
      r.ctx.store.record_artefact(a);
    }
  }
  Link* link = r.options.path;
  if (link == nullptr && !r.options.reverse) {
    link = r.ctx.nodes.kept_link; // `migrate` keeps one open across its phases
  }
  if (link != nullptr && !link->serves(r.m().id, r.src, r.dst, r.all)) {
    link = nullptr; // e.g. a dataset created since it was opened: its forced command refuses
  }
  r.link = link;
  r.open_own = !r.plan.empty() && link == nullptr;
}

void open_own_link(SyncRun& r, nlohmann::json& d) {
  DataPathSpec spec = data_path_spec(r.ctx, r.m(), r.src, r.dst, r.all);
  r.target_host_key = spec.target_host_key;
  r.own_link = r.ctx.nodes.make_link(r.ctx, spec, r.src, r.dst);
  r.link = r.own_link.get();
  r.link->open();
  d["source"] = r.src.server().admin_ip;
  d["target"] = r.dst.server().admin_ip;
}

// The running count of a sync's streams: the rate smoothed as cn-agent does it, progress about
// once a second.
class Meter {
public:
  explicit Meter(SyncRun& r)
      : m_r(r), m_last_report(r.ctx.clock.now() - std::chrono::seconds(2)),
        m_window_start(r.ctx.clock.now()), m_window_bytes(r.done) {}
  // `so_far`: every byte of this sync up to now.
  void operator()(std::uint64_t so_far) {
    const auto now = m_r.ctx.clock.now();
    const double secs = std::chrono::duration<double>(now - m_window_start).count();
    if (secs > 0.5) {
      const double inst = static_cast<double>(so_far - m_window_bytes) / secs;
      m_r.rate = m_r.rate > 0 ? (m_r.rate + inst) / 2 : inst;
      m_window_start = now;
      m_window_bytes = so_far;
    }
    // No totals to show against without an estimate (the final delta): only the end.
    if (m_r.options.estimate && now - m_last_report >= std::chrono::seconds(1)) {
      m_last_report = now;
      m_r.op.progress(so_far, m_r.total, m_r.approximate, m_r.rate);
    }
  }

private:
  SyncRun& m_r;
  std::chrono::steady_clock::time_point m_last_report;
  std::chrono::steady_clock::time_point m_window_start;
  std::uint64_t m_window_bytes;
};

// What one stream brought, into the result and its journal step's details.
void record_transfer(SyncRun& r, const Stream& t, const TransferResult& tr, nlohmann::json& d) {
  DatasetTransfer dtr;
  dtr.dataset = t.dataset;
  dtr.kind = to_string(t.kind);
  dtr.from = t.from;
  dtr.to = t.to;
  dtr.estimated_bytes = t.estimate;
  dtr.estimate_exact = t.exact;
  dtr.bytes = tr.bytes_counted ? tr.bytes : t.estimate;
  dtr.counted = tr.bytes_counted;
  dtr.duration = tr.duration;
  r.done += dtr.bytes;
  r.result.transfers.push_back(dtr);
  d = {{"dataset", t.dataset},
       {"kind", to_string(t.kind)},
       {"from", t.from},
       {"to", t.to},
       {"bytes", dtr.bytes},
       {"estimate", t.estimate},
       {"counted", tr.bytes_counted},
       {"duration_ms", tr.duration.count()}};
}

// 3. One stream; a resumed one completes an older snapshot, so the dataset is brought up to
// date in the same step.
void send_stream(SyncRun& r, const Stream& t, nlohmann::json& d) {
  const bool use_pv = r.src.caps().has_pv;
  Meter meter(r);
  const remote::Argv argv = r.src.send_argv(t.to, t.from, t.token, r.dst.caps());
  const TransferResult tr =
      r.link->send(t, argv, use_pv, [&](std::uint64_t bytes) { meter(r.done + bytes); });
  record_transfer(r, t, tr, d);
  if (t.kind == StreamKind::resume) {
    const DatasetTree st2 = r.src.tree({t.dataset}, {"origin"});
    const DatasetTree dt2 = r.dst.tree({t.dataset});
    for (Stream& more :
         plan_dataset(r.ctx, r.m().id, st2, dt2, r.dst.host(), t.dataset, t.to, r.dst)) {
      const remote::Argv more_argv = r.src.send_argv(more.to, more.from, "", r.dst.caps());
      r.done += r.link->send(more, more_argv, use_pv, nullptr).bytes;
    }
  }
}

// 3'. Every stream in one round trip to the sender (no resumed one among them), the sender's
// prune riding along after the last: its older migration snapshots can go once the receiver
// has the new one, which the last stream's arrival proves (the sequence stops at the first
// stream that fails). A prune that fails there runs again on its own (prune_both).
void send_all(SyncRun& r, nlohmann::json& d) {
  const bool use_pv = r.src.caps().has_pv;
  // Datasets at once, bounded; a rate limit holds per stream, so one at a time under one.
  const std::size_t max_lanes =
      r.ctx.settings.bwlimit > 0 ? 1 : std::max<std::size_t>(1, r.ctx.settings.max_streams);
  const std::vector<std::size_t> lanes = stream_lanes(r.plan, max_lanes);
  std::vector<StreamSend> sends;
  for (std::size_t i = 0; i < r.plan.size(); ++i) {
    const Stream& t = r.plan[i];
    sends.push_back({&t, r.src.send_argv(t.to, t.from, t.token, r.dst.caps()), lanes[i]});
  }
  remote::Command tail;
  if (r.do_prune) {
    const PruneOrder o = prune_order(r.m().id, r.roots, r.snap, r.st);
    if (o.doomed.empty()) {
      r.src_pruned = true; // nothing to prune there
    } else {
      tail = r.src.prune_command(o.doomed, r.tag(), o.recursive, o.single);
    }
  }
  Meter meter(r);
  std::vector<std::uint64_t> counts(sends.size(), 0);
  const std::uint64_t before = r.done;
  // Once every stream arrived the receiver holds the new snapshot and prunes the older ones (as
  // prune_both would after the command) on a thread of its own, while the sender's command
  // still runs its own prune: two different nodes, only their remote work and the log there.
  // Joined before anything else uses the receiver (a failure path of the link that ends the
  // data path's processes on the receiver meanwhile waits for it: a runner runs one command
  // at a time); a failure there leaves it to prune_both.
  std::future<void> dst_prune;
  const auto start_dst_prune = [&] {
    if (!r.do_prune || dst_prune.valid()) {
      return;
    }
    const std::optional<DatasetTree> after = tree_after(r.dt, r.st, r.plan);
    dst_prune =
        std::async(std::launch::async,
                   [&ctx = r.ctx, &dst = r.dst, id = r.m().id, roots = r.roots, keep = r.snap,
                    after, hold = r.options.holds ? r.held : std::vector<std::string>{}] {
                     prune_snapshots(ctx, dst, id, roots, keep, after ? &*after : nullptr, hold);
                   });
  };
  SendsResult sr;
  try {
    sr = r.link->send_streams(
        sends, use_pv, tail, r.options.alongside,
        [&](std::size_t i, std::uint64_t bytes) {
          if (i < counts.size()) {
            counts[i] = bytes;
          }
          std::uint64_t sum = before;
          for (const std::uint64_t c : counts) {
            sum += c;
          }
          meter(sum);
        },
        start_dst_prune);
  } catch (...) {
    if (dst_prune.valid()) {
      dst_prune.wait();
    }
    throw;
  }
  if (dst_prune.valid()) {
    try {
      dst_prune.get();
      r.dst_pruned = true;
    } catch (const std::exception& e) {
      r.ctx.log.warn("the receiver's prune beside the sender's failed; it runs again on its own",
                     {{"host", r.dst.host()}, {"error", e.what()}});
    }
  }
  r.src_pruned = r.src_pruned || (!tail.pipeline.empty() && sr.tail_ok);
  if (r.options.alongside_ok != nullptr) {
    *r.options.alongside_ok = sr.alongside_ok;
  }
  d = {{"streams", nlohmann::json::array()},
       {"lanes", lanes.empty() ? 0 : *std::max_element(lanes.begin(), lanes.end()) + 1},
       {"pruned_with_them", r.src_pruned}};
  if (!r.options.alongside.pipeline.empty()) {
    d["alongside"] = remote::command_summary(r.options.alongside, 3);
    d["alongside_ok"] = sr.alongside_ok;
  }
  for (std::size_t i = 0; i < r.plan.size() && i < sr.transfers.size(); ++i) {
    nlohmann::json one;
    record_transfer(r, r.plan[i], sr.transfers[i], one);
    r.result.transfers.back().lane = lanes[i];
    one["lane"] = lanes[i];
    d["streams"].push_back(one);
  }
}

// The receiver holds the new snapshot; the record names it as the next base.
void finish_sends(SyncRun& r) {
  if (!r.plan.empty()) {
    r.op.progress(r.done, std::max(r.done, r.total), r.approximate, r.rate);
  }
  if (r.own_link && !parks(r)) {
    r.own_link->close();
  }
  // The receiver's hold rides along with its prune, which follows at once.
  if (r.options.holds && !r.do_prune) {
    r.dst.hold_all(r.held, r.tag());
  }
  r.m().data["synced_snap"] = r.snap;
  // The receiver's host key, which this data path proved, for the next sync of this boot (kept
  // with its capability probe; forgotten with it when a sync fails).
  const auto caps = r.m().data.find("node_caps");
  if (!r.target_host_key.empty() && caps != r.m().data.end() && caps->is_object()) {
    const auto entry = caps->find(r.dst.server().uuid);
    if (entry != caps->end() && entry->is_object()) {
      (*entry)["host_key"] = r.target_host_key;
    }
  }
  r.op.save();
}

// 4. Keep only the newest migration snapshot on both sides as the next base, one command per
// node (the receiver's hold of it in the same one). The sender's tree as this sync read it
// (after its snapshot) names every older migration snapshot there: sends make none on the
// sender, and this process holds the lease. The receiver's is foreseen from its tree before the
// streams and what they bring (an incremental stream with intermediates may have brought older
// migration snapshots); read again only when that cannot be told (a resumed stream).
void prune_both(SyncRun& r, nlohmann::json& d) {
  const std::optional<DatasetTree> after = tree_after(r.dt, r.st, r.plan);
  const std::vector<std::string> hold = r.options.holds ? r.held : std::vector<std::string>{};
  both(
      [&] {
        if (!r.src_pruned) {
          prune_snapshots(r.ctx, r.src, r.m().id, r.roots, r.snap, &r.st);
        }
      },
      [&] {
        if (!r.dst_pruned) {
          prune_snapshots(r.ctx, r.dst, r.m().id, r.roots, r.snap, after ? &*after : nullptr, hold);
        }
      });
  d["kept"] = r.snap;
  d["receiver_pruned_with_them"] = r.dst_pruned;
}

// The steps of one sync: snapshot and plan, the data path and every stream, the prune.
void sync_streams(SyncRun& r, const std::string& label) {
  check_rate_limit(r.ctx, r.src);
  // Forward only: a sync that fails leaves what it received; the next one resumes from the
  // newest snapshot both sides hold (by GUID), so a rerun converges.
  run_steps(r.ctx, r.op,
            {label,
             {{"snapshot", "", [&r](auto& d) { take_snapshot(r, d); }},
              {"plan", "", [&r](auto& d) { plan_streams(r, d); }}},
             ""});
  choose_link(r);
  PhaseSpec sends{label, {}, ""};
  sends.steps.push_back({"open_data_path",
                         "",
                         [&r](auto& d) { open_own_link(r, d); },
                         {},
                         Window::outside,
                         &r.open_own});
  const bool resumes = std::any_of(r.plan.begin(), r.plan.end(),
                                   [](const Stream& t) { return t.kind == StreamKind::resume; });
  if (!resumes && !r.plan.empty()) {
    sends.steps.push_back({"send", "", [&r](auto& d) { send_all(r, d); }});
  } else {
    // A resumed stream is followed by what its dataset still lacks, planned after it arrived.
    for (const Stream& t : r.plan) {
      sends.steps.push_back({"send", "", [&r, &t](auto& d) { send_stream(r, t, d); }});
    }
  }
  run_steps(r.ctx, r.op, sends);
  finish_sends(r);
  run_steps(r.ctx, r.op,
            {label,
             {{"prune", "", [&r](auto& d) { prune_both(r, d); }, {}, Window::outside, &r.do_prune}},
             ""});
  if (r.own_link && parks(r)) {
    r.own_link->park();
  }
}

} // namespace

SyncResult sync_datasets(Context& ctx, Operation& op, Ends& ends, const std::string& label,
                         const SyncOptions& options) {
  SyncRun r{ctx, op, options.reverse ? *ends.target : *ends.source,
            options.reverse ? *ends.source : *ends.target};
  r.options = options;
  r.roots = instance_roots(op.record());
  r.do_prune = options.prune;
  const auto started = ctx.clock.now();
  probe_both(op, r.src, r.dst); // once per node per command, at once, or cached
  try {
    sync_streams(r, label);
  } catch (...) {
    // A failed sync asks the nodes again next time: what changed on a node without a reboot
    // (a tool removed, say) must not fail every later sync of this boot the same way.
    if (r.m().data.contains("node_caps")) {
      r.m().data.erase("node_caps");
      try {
        op.save();
      } catch (const std::exception& e) {
        ctx.log.warn("cannot forget the cached capability probes", {{"error", e.what()}});
      }
    }
    throw;
  }

  SyncResult& result = r.result;
  result.snapshot = r.snap;
  for (const DatasetTransfer& t : result.transfers) {
    result.bytes += t.bytes;
  }
  result.duration =
      std::chrono::duration_cast<std::chrono::milliseconds>(ctx.clock.now() - started);
  const double secs = std::chrono::duration<double>(result.duration).count();
  result.rate_bytes_per_s = secs > 0 ? static_cast<double>(result.bytes) / secs : 0;
  return result;
}

void reserve_ips(Context& ctx, Operation& op, const inventory::Vm& vm) {
  state::Migration& m = op.record();
  nlohmann::json reserved = m.data.value("reserved_ips", nlohmann::json::array());
  for (const inventory::Nic& nic : vm.nics) {
    if (nic.ip.empty() || nic.network_uuid.empty() || nic.ip == "dhcp") {
      continue;
    }
    const inventory::IpRecord ip = ctx.inventory.get_ip(nic.network_uuid, nic.ip);
    if (ip.reserved) {
      continue; // reserved by someone else (or by us before a crash: see the ledger)
    }
    state::Artefact a;
    a.migration_id = m.id;
    a.kind = "ip_reservation";
    a.host = "napi";
    a.name = nic.network_uuid + "/" + nic.ip;
    a.created = iso8601(ctx.clock.wall_now());
    a.details = {{"network_uuid", nic.network_uuid}, {"ip", nic.ip}};
    ctx.store.record_artefact(a);
    ctx.inventory.set_ip_reserved(nic.network_uuid, nic.ip, true);
    reserved.push_back({{"network_uuid", nic.network_uuid}, {"ip", nic.ip}});
  }
  m.data["reserved_ips"] = reserved;
  op.save();
}

void unreserve_ips(Context& ctx, Operation& op) {
  state::Migration& m = op.record();
  for (const state::Artefact& a : ctx.store.live_artefacts(m.id)) {
    if (a.kind != "ip_reservation") {
      continue;
    }
    ctx.inventory.set_ip_reserved(a.details.at("network_uuid").get<std::string>(),
                                  a.details.at("ip").get<std::string>(), false);
    ctx.store.mark_artefact_removed(a.id);
  }
  m.data["reserved_ips"] = nlohmann::json::array();
  op.save();
}

void put_vmapi_server(Context& ctx, const inventory::Vm& vm, const std::string& server_uuid,
                      const std::string& state, const std::optional<nlohmann::json>& current) {
  nlohmann::json body;
  if (current) {
    body = *current;
  } else if (const std::optional<inventory::Vm> now = ctx.inventory.find_vm(vm.uuid)) {
    body = now->raw;
  } else {
    body = vm.raw;
  }
  body["server_uuid"] = server_uuid;
  body["state"] = state;
  body["zone_state"] = state == "running" ? "running" : "installed";
  ctx.inventory.put_vm(vm.uuid, body);
}

void wait_vmapi(Context& ctx, const std::string& vm_uuid, const std::string& server_uuid,
                const std::string& state, const std::atomic<bool>* cancel) {
  const auto deadline = ctx.clock.now() + std::chrono::seconds(60);
  std::string seen;
  while (cancel == nullptr || !cancel->load()) {
    const std::optional<inventory::Vm> vm = ctx.inventory.find_vm(vm_uuid, true);
    if (vm && vm->server_uuid == server_uuid && (state.empty() || vm->state == state)) {
      return;
    }
    seen = vm ? fmt::format("server {} state {}", vm->server_uuid, vm->state) : "not found";
    if (ctx.clock.now() > deadline) {
      throw Error(ExitCode::inventory, fmt::format("VMAPI {}", vm_uuid),
                  fmt::format("still shows {} after 60 s (expected server {}{}); the instance is "
                              "in place on the node: rerun the command to finish",
                              seen, server_uuid, state.empty() ? "" : " state " + state));
    }
    // sync=true already waits for the node agent's next report; no extra sleep needed unless
    // VMAPI answered at once.
    ctx.clock.sleep_for(std::chrono::milliseconds(200));
  }
}

} // namespace zmigrate::migration::detail
