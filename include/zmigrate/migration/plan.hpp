// SPDX-License-Identifier: MPL-2.0
#pragma once
// Pure decisions over plain data: validation of an instance, zone-config rewriting,
// convergence of `migrate`. No I/O; unit-tested directly.

#include <zmigrate/inventory/types.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace zmigrate::migration {

// Brands zmigrate can move.
bool brand_supported(const std::string& brand);

// Refuse an instance that cannot be migrated: unsupported brand, state other than running or
// stopped, core zone (unless `force_core`; NAT zones are allowed). Throws PreconditionError.
void validate_instance(const inventory::Vm& vm, bool force_core);

// True when `dataset` may belong to instance `uuid`: `<pool>/<uuid>`, a descendant of it,
// `<pool>/<uuid>-diskN` (KVM disks) or a descendant of one, or `<pool>/cores/<uuid>`. A pool root
// or any other name is someone else's. Names are validated first (false for an invalid one).
bool owned_by_instance(const std::string& dataset, const std::string& uuid);

// The instance's dataset roots from the SOURCE NODE's `vmadm get` object (zfs_filesystem, the
// disks' zfs_filesystem, the delegated `datasets`), never from the inventory alone: children of
// the zone root travel with it, so only the zone root and sibling disks are listed. Every name
// must be owned_by_instance(); `inventory_datasets` (what VMAPI lists) must name nothing else.
// Throws PreconditionError naming the first offending dataset.
std::vector<std::string> instance_roots(const std::string& uuid, const nlohmann::json& vmadm,
                                        const std::vector<std::string>& inventory_datasets);

// Why the receive resume token found on the target for `dataset` must not be sent ("" when it
// may): `resumes` is the snapshot the token names, as the source's zfs decoded it; it must be a
// snapshot of `dataset` made by migration `migration_id`.
std::string resume_token_problem(const std::string& dataset, const std::string& migration_id,
                                 const std::string& resumes);

// The ZFS user property zmigrate sets on an instance's zone root on the source while one of its
// migrations is active: its value is the migration id. A second zmigrate (another head node or
// another state directory) reads it at begin and refuses; the received copy carries it too.
inline constexpr const char* k_mark_property = "zmigrate:migration";

// Why a begin must not go on when the source zone root `dataset` on `host` carries `mark`
// (the k_mark_property value, "" when unset) and `known` says whether this state database holds
// a migration of that id ("" when it may go on: no mark, or one of ours).
std::string mark_problem(const std::string& dataset, const std::string& host,
                         const std::string& mark, bool known);

// MiB of disk the instance needs on a target (quota, or the disk sizes for HVMs).
std::uint64_t required_disk_mib(const inventory::Vm& vm);

// Which node may take an instance, and plans for many: placement.hpp.

// Rewrite `zonecfg export` output so the zone arrives hidden: autoboot=false and a
// do-not-inventory=true attr (any existing one replaced).
std::string hide_zone_config(const std::string& exported);

// migrate: keep syncing while the last delta is above `converge_bytes`, the delta still shrinks
// meaningfully, and fewer than `max_syncs` incremental syncs ran. A sync (full or incremental)
// that took at most `k_quick_sync` ends the syncing at once: what was written meanwhile is a few
// seconds of writes, which the switch's final delta carries anyway.
inline constexpr std::chrono::milliseconds k_quick_sync{5000};

// The downtime budget: what a switch right after the last sync will cost, from what the syncs
// measured. The final delta is what the instance writes while the last sync runs (its write
// rate: the bytes of the last incremental sync over the time between its snapshot and the one
// before); it goes at the link's rate (the fastest sync of at least 1 MiB) plus a stream's fixed
// cost (the least time an incremental sync took beyond its bytes at that rate); the switch's
// fixed steps (stop,
// hide, VMAPI, start) come from earlier switches on this head node, else k_default_switch_fixed.
struct DowntimePrediction {
  std::chrono::milliseconds total{0};
  std::chrono::milliseconds fixed{0};
  std::chrono::milliseconds final_sync{0};
  std::uint64_t delta_bytes = 0;
  double write_rate = 0; // bytes/s; 0 while unknown (fewer than two syncs)
  double link_rate = 0;  // bytes/s
  bool write_rate_known = false;
};
inline constexpr std::chrono::milliseconds k_default_switch_fixed{1500};
// How many of this head node's newest migrations the figures of earlier syncs and switches
// (pre-flight rate and downtime, the switch's fixed steps) are taken from.
inline constexpr std::size_t k_history_window = 100;
// The median of `v` (the mean of the middle two for an even count); 0 for none.
double median(std::vector<double> v);
// `syncs`: data.syncs of a migration ({bytes, duration_ms, ended (ISO 8601)}, oldest first);
// `fixed`: the fixed steps' cost measured before, if any.
DowntimePrediction predict_downtime(const nlohmann::json& syncs,
                                    std::optional<std::chrono::milliseconds> fixed);
bool should_sync_again(
    const std::vector<std::uint64_t>& incremental_bytes, std::uint64_t converge_bytes,
    int max_syncs, std::chrono::milliseconds last_sync_duration = std::chrono::milliseconds::max());

// What one switch does, decided from the record's data (data.switch, data.quota, data.autoboot),
// the recorded instance and the source's state as the node shows it now ("" before it was read:
// then only `resuming`, `before_hide` and a recorded was_running count).
struct SwitchPlan {
  bool resuming = false;      // an earlier attempt hid the source: only the forward steps remain
  bool before_hide = true;    // !resuming
  bool was_running = false;   // before the first attempt stopped it: the target is started
  bool presync = false;       // one more pass while it runs (not right after a sync)
  bool mount_target = false;  // a stopped instance: mount what start would have mounted
  bool restore_quota = false; // bhyve: begin removed the quota (TRITON-1407)
  bool protect = false;       // indestructible_* to set on the target
  std::vector<std::pair<std::string, std::string>> indestructible;
};
SwitchPlan plan_switch(const nlohmann::json& data, const inventory::Vm& vm,
                       const std::string& source_state, bool recent_sync);

} // namespace zmigrate::migration
