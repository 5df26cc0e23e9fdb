// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/link.hpp>
#include <zmigrate/migration/plan.hpp>
#include <zmigrate/util/clock.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/zfs/names.hpp>

#include <algorithm>
#include <map>
#include <numeric>
#include <optional>
#include <sstream>

#include <fmt/format.h>

namespace zmigrate::migration {

bool brand_supported(const std::string& brand) {
  return brand == "joyent" || brand == "joyent-minimal" || brand == "lx" || brand == "kvm" ||
         brand == "bhyve";
}

void validate_instance(const inventory::Vm& vm, bool force_core) {
  const std::string what =
      fmt::format("instance {}{}", vm.uuid, vm.alias.empty() ? "" : " (" + vm.alias + ")");
  if (!brand_supported(vm.brand)) {
    throw PreconditionError(what, fmt::format("brand '{}' cannot be migrated; supported brands are "
                                              "joyent, joyent-minimal, lx, kvm and bhyve",
                                              vm.brand));
  }
  if (vm.state != "running" && vm.state != "stopped") {
    throw PreconditionError(what, fmt::format("state is '{}'; only running or stopped instances "
                                              "can be migrated",
                                              vm.state));
  }
  if (vm.is_core() && !force_core) {
    const bool nat =
        vm.tags.is_object() && vm.tags.contains("smartdc_role") && vm.tags["smartdc_role"] == "nat";
    if (!nat) {
      throw PreconditionError(what,
                              "is a Triton core instance (tags.smartdc_type=core); migrate "
                              "core services with their own procedures, or pass --force-core");
    }
  }
}

std::uint64_t required_disk_mib(const inventory::Vm& vm) {
  std::uint64_t mib = 0;
  if (vm.quota_gib) {
    mib += *vm.quota_gib * 1024;
  }
  if (vm.brand == "kvm") {
    for (const inventory::Disk& d : vm.disks) {
      mib += d.size_mib.value_or(0);
    }
  }
  return mib;
}

std::string mark_problem(const std::string& dataset, const std::string& host,
                         const std::string& mark, bool known) {
  if (mark.empty() || known) {
    return {};
  }
  return fmt::format(
      "{} on {} carries {}={}: migration {} of another zmigrate (another head node or state "
      "directory; this state database does not know it) moves this instance; finish or abort it "
      "there. If that migration is gone for good, remove the mark on {} with \"zfs inherit {} {}\" "
      "and begin again",
      dataset, host, k_mark_property, mark, mark, host, k_mark_property, dataset);
}

std::string hide_zone_config(const std::string& exported) {
  std::istringstream in(exported);
  std::vector<std::string> out;
  std::vector<std::string> block;
  bool in_block = false;
  bool drop_block = false;
  std::string line;
  auto trim = [](std::string s) {
    const auto b = s.find_first_not_of(" \t\r");
    const auto e = s.find_last_not_of(" \t\r");
    return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
  };
  while (std::getline(in, line)) {
    const std::string t = trim(line);
    if (!in_block && t.rfind("add ", 0) == 0) {
      in_block = true;
      drop_block = false;
      block.assign(1, line);
      continue;
    }
    if (in_block) {
      block.push_back(line);
      if (t == "set name=do-not-inventory" || t == "set name=\"do-not-inventory\"") {
        drop_block = true;
      }
      if (t == "end") {
        in_block = false;
        if (!drop_block) {
          out.insert(out.end(), block.begin(), block.end());
        }
      }
      continue;
    }
    if (t.rfind("set autoboot=", 0) == 0) {
      out.emplace_back("set autoboot=false");
      continue;
    }
    out.push_back(line);
  }
  if (in_block && !drop_block) {
    out.insert(out.end(), block.begin(), block.end());
  }
  // Commit lines must stay last: insert the attr before a trailing "commit" if present.
  auto pos = out.end();
  if (!out.empty() && trim(out.back()) == "commit") {
    pos = out.end() - 1;
  }
  const std::vector<std::string> attr{"add attr", "set name=do-not-inventory", "set type=string",
                                      "set value=true", "end"};
  out.insert(pos, attr.begin(), attr.end());
  std::string text;
  for (const std::string& l : out) {
    text += l;
    text += '\n';
  }
  return text;
}

double median(std::vector<double> v) {
  if (v.empty()) {
    return 0;
  }
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

DowntimePrediction predict_downtime(const nlohmann::json& syncs,
                                    std::optional<std::chrono::milliseconds> fixed) {
  DowntimePrediction p;
  p.fixed = fixed.value_or(k_default_switch_fixed);
  if (!syncs.is_array() || syncs.empty()) {
    p.total = p.fixed;
    return p;
  }
  auto bytes_of = [](const nlohmann::json& s) { return s.value("bytes", std::uint64_t{0}); };
  auto ms_of = [](const nlohmann::json& s) { return s.value("duration_ms", std::int64_t{0}); };
  double best_any = 0;
  for (const nlohmann::json& s : syncs) {
    if (ms_of(s) <= 0) {
      continue;
    }
    const double rate = static_cast<double>(bytes_of(s)) * 1000.0 / static_cast<double>(ms_of(s));
    best_any = std::max(best_any, rate);
    if (bytes_of(s) >= (1ULL << 20)) {
      p.link_rate = std::max(p.link_rate, rate);
    }
  }
  if (p.link_rate == 0) {
    p.link_rate = best_any;
  }
  // A stream's fixed cost (ssh, zfs starting up): the least time an incremental sync took beyond
  // its bytes at the link's rate.
  std::int64_t overhead = -1;
  for (std::size_t i = 1; i < syncs.size(); ++i) {
    const std::int64_t ms = ms_of(syncs[i]);
    if (ms <= 0) {
      continue;
    }
    const double moving =
        p.link_rate > 0 ? static_cast<double>(bytes_of(syncs[i])) * 1000.0 / p.link_rate : 0;
    const auto o = std::max<std::int64_t>(0, ms - static_cast<std::int64_t>(moving));
    if (overhead < 0 || o < overhead) {
      overhead = o;
    }
  }
  overhead = std::max<std::int64_t>(overhead, 0);
  const nlohmann::json& last = syncs.back();
  if (syncs.size() >= 2) {
    const nlohmann::json& prev = syncs[syncs.size() - 2];
    try {
      // A sync's snapshot is taken as it starts: its end minus its duration.
      const auto snap = [&](const nlohmann::json& s) {
        return parse_iso8601(s.value("ended", "")) - std::chrono::milliseconds(ms_of(s));
      };
      const auto between =
          std::chrono::duration_cast<std::chrono::milliseconds>(snap(last) - snap(prev));
      if (between.count() > 0) {
        p.write_rate =
            static_cast<double>(bytes_of(last)) * 1000.0 / static_cast<double>(between.count());
        p.write_rate_known = true;
      }
    } catch (const Error&) {
      p.write_rate_known = false; // older records have no end times
    }
  }
  p.delta_bytes =
      static_cast<std::uint64_t>(p.write_rate * static_cast<double>(ms_of(last)) / 1000.0);
  std::int64_t final_ms = overhead;
  if (p.link_rate > 0) {
    final_ms +=
        static_cast<std::int64_t>(static_cast<double>(p.delta_bytes) * 1000.0 / p.link_rate);
  }
  p.final_sync = std::chrono::milliseconds(final_ms);
  p.total = p.fixed + p.final_sync;
  return p;
}

bool should_sync_again(const std::vector<std::uint64_t>& incremental_bytes,
                       std::uint64_t converge_bytes, int max_syncs,
                       std::chrono::milliseconds last_sync_duration) {
  if (last_sync_duration <= k_quick_sync) {
    return false;
  }
  if (incremental_bytes.empty()) {
    return true;
  }
  if (static_cast<int>(incremental_bytes.size()) >= max_syncs) {
    return false;
  }
  const std::uint64_t last = incremental_bytes.back();
  if (last <= converge_bytes) {
    return false;
  }
  if (incremental_bytes.size() >= 2) {
    const std::uint64_t prev = incremental_bytes[incremental_bytes.size() - 2];
    // The writer outpaces the link: another round will not shrink the final delta.
    if (last * 10 >= prev * 9) {
      return false;
    }
  }
  return true;
}

bool owned_by_instance(const std::string& dataset, const std::string& uuid) {
  std::optional<zfs::DatasetName> ds;
  try {
    ds.emplace(dataset);
  } catch (const Error&) {
    return false;
  }
  if (ds->is_pool() || uuid.empty()) {
    return false;
  }
  const std::string pool = ds->pool();
  const std::string root = pool + "/" + uuid;
  const std::string rest = dataset.substr(pool.size() + 1);
  if (dataset == root || dataset.rfind(root + "/", 0) == 0) {
    return true; // the zone root and what lies below it (bhyve disks, delegated datasets)
  }
  if (dataset == pool + "/cores/" + uuid) {
    return true;
  }
  // <pool>/<uuid>-diskN[/...]: KVM disks are siblings of the zone root.
  const std::string disk = uuid + "-disk";
  if (rest.rfind(disk, 0) != 0) {
    return false;
  }
  std::size_t i = disk.size();
  const std::size_t digits = i;
  while (i < rest.size() && rest[i] >= '0' && rest[i] <= '9') {
    ++i;
  }
  return i > digits && (i == rest.size() || rest[i] == '/');
}

std::string resume_token_problem(const std::string& dataset, const std::string& migration_id,
                                 const std::string& resumes) {
  const auto at = resumes.find('@');
  if (at == std::string::npos) {
    return fmt::format("its receive resume token names '{}', not a snapshot", resumes);
  }
  if (resumes.substr(0, at) != dataset) {
    return fmt::format("its receive resume token resumes {}, a snapshot of another dataset",
                       resumes);
  }
  if (zfs::parse_migration_snap(migration_id, resumes.substr(at + 1)) < 0) {
    return fmt::format("its receive resume token resumes {}, not a snapshot of migration {}",
                       resumes, migration_id);
  }
  return {};
}

std::vector<std::string> instance_roots(const std::string& uuid, const nlohmann::json& vmadm,
                                        const std::vector<std::string>& inventory_datasets) {
  auto refuse = [&](const std::string& ds, const std::string& why) {
    throw PreconditionError(fmt::format("dataset '{}' of instance {}", ds, uuid),
                            fmt::format("{}; zmigrate moves and destroys only the instance's own "
                                        "datasets: fix the record and rerun",
                                        why));
  };
  if (!vmadm.is_object() || !vmadm.contains("zfs_filesystem") ||
      !vmadm.at("zfs_filesystem").is_string()) {
    throw PreconditionError(fmt::format("instance {}", uuid),
                            "vmadm on the source node reports no zfs_filesystem; check the "
                            "instance there with \"vmadm get\"");
  }
  std::vector<std::string> all;
  const std::string zroot = vmadm.at("zfs_filesystem").get<std::string>();
  all.push_back(zroot);
  if (const auto d = vmadm.find("disks"); d != vmadm.end() && d->is_array()) {
    for (const nlohmann::json& disk : *d) {
      if (disk.is_object() && disk.contains("zfs_filesystem") &&
          disk.at("zfs_filesystem").is_string()) {
        all.push_back(disk.at("zfs_filesystem").get<std::string>());
      }
    }
  }
  if (const auto d = vmadm.find("datasets"); d != vmadm.end() && d->is_array()) {
    for (const nlohmann::json& ds : *d) {
      all.push_back(ds.is_string() ? ds.get<std::string>() : ds.dump());
    }
  }
  for (const std::string& ds : all) {
    if (!owned_by_instance(ds, uuid) || ds.rfind(zroot.substr(0, zroot.find('/') + 1), 0) != 0) {
      refuse(ds, "vmadm on the source node lists it, but it is not <pool>/<uuid>, "
                 "<pool>/<uuid>-diskN or below <pool>/<uuid> of this instance");
    }
  }
  if (zroot.find('/') == std::string::npos || zroot.substr(zroot.find('/') + 1) != uuid) {
    refuse(zroot, "the zone root must be <pool>/<uuid> of this instance");
  }
  for (const std::string& ds : inventory_datasets) {
    if (std::find(all.begin(), all.end(), ds) == all.end()) {
      refuse(ds, "VMAPI lists it for the instance, but vmadm on the source node does not");
    }
  }
  std::vector<std::string> roots;
  for (const std::string& ds : all) {
    const bool below_root = ds != zroot && ds.rfind(zroot + "/", 0) == 0;
    if (!below_root && std::find(roots.begin(), roots.end(), ds) == roots.end()) {
      roots.push_back(ds);
    }
  }
  return roots;
}

namespace {
bool flag(const nlohmann::json& j, const char* key) {
  return j.is_object() && j.contains(key) && j.at(key).is_boolean() && j.at(key).get<bool>();
}
} // namespace

SwitchPlan plan_switch(const nlohmann::json& data, const inventory::Vm& vm,
                       const std::string& source_state, bool recent_sync) {
  SwitchPlan p;
  const nlohmann::json sw = data.value("switch", nlohmann::json::object());
  p.resuming = flag(sw, "source_hidden");
  p.before_hide = !p.resuming;
  p.was_running = sw.contains("was_running") ? flag(sw, "was_running") : source_state == "running";
  p.presync = p.before_hide && source_state == "running" && !recent_sync;
  p.mount_target = !p.was_running;
  p.restore_quota = flag(data.value("quota", nlohmann::json::object()), "must_remove");
  if (vm.indestructible_zoneroot) {
    p.indestructible.emplace_back("indestructible_zoneroot", "true");
  }
  if (vm.indestructible_delegated) {
    p.indestructible.emplace_back("indestructible_delegated", "true");
  }
  p.protect = !p.indestructible.empty();
  return p;
}

std::vector<std::size_t> stream_lanes(const std::vector<Stream>& plan, std::size_t max_lanes) {
  const std::size_t n = plan.size();
  // Union-find over the streams: a group goes in one lane.
  std::vector<std::size_t> parent(n);
  std::iota(parent.begin(), parent.end(), std::size_t{0});
  const auto find = [&](std::size_t i) {
    while (parent[i] != i) {
      parent[i] = parent[parent[i]];
      i = parent[i];
    }
    return i;
  };
  const auto unite = [&](std::size_t a, std::size_t b) { parent[find(a)] = find(b); };
  const auto below = [](const std::string& ds, const std::string& ancestor) {
    return ds.size() > ancestor.size() && ds.compare(0, ancestor.size(), ancestor) == 0 &&
           ds[ancestor.size()] == '/';
  };
  for (std::size_t j = 0; j < n; ++j) {
    for (std::size_t i = 0; i < j; ++i) {
      const bool creates = plan[i].kind == StreamKind::full || plan[i].kind == StreamKind::clone ||
                           plan[i].kind == StreamKind::resume;
      if (plan[i].dataset == plan[j].dataset ||
          (creates && below(plan[j].dataset, plan[i].dataset))) {
        unite(j, i);
      }
    }
  }
  // Groups in order of their first stream, with their weight (a stream costs at least a
  // little: its processes and session).
  std::vector<std::size_t> groups;
  std::map<std::size_t, std::uint64_t> weight;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t g = find(i);
    if (weight.find(g) == weight.end()) {
      groups.push_back(g);
    }
    weight[g] += plan[i].estimate + (64U << 10);
  }
  const std::size_t lanes = std::max<std::size_t>(1, std::min(max_lanes, groups.size()));
  std::stable_sort(groups.begin(), groups.end(),
                   [&](std::size_t a, std::size_t b) { return weight[a] > weight[b]; });
  std::vector<std::uint64_t> load(lanes, 0);
  std::map<std::size_t, std::size_t> lane_of;
  for (const std::size_t g : groups) {
    const std::size_t l = static_cast<std::size_t>(std::min_element(load.begin(), load.end()) -
                                                   load.begin()); // the first least loaded
    load[l] += weight[g];
    lane_of[g] = l;
  }
  std::vector<std::size_t> out(n, 0);
  for (std::size_t i = 0; i < n; ++i) {
    out[i] = lane_of[find(i)];
  }
  return out;
}

} // namespace zmigrate::migration
