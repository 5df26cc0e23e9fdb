// SPDX-License-Identifier: MPL-2.0
#pragma once
// Typed views of Triton inventory objects (VMAPI VM, CNAPI server, NAPI IP, IMGAPI image).
// Parsers keep the raw JSON too, so nothing the services send is lost when a record is archived.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace zmigrate::inventory {

struct Nic {
  std::string mac;
  std::string ip;           // "" when the NIC has no IPv4 address (dhcp/addrconf)
  std::string network_uuid; // "" when unknown (old payloads)
  std::string nic_tag;
  std::string interface; // net0, net1, ...
  bool primary = false;
  std::optional<std::uint32_t> vlan_id; // VMAPI/NAPI `vlan_id`
  // A fabric (overlay) NIC: NAPI `fabric: true`, or a nic_tag of the form
  // "<overlay tag>/<vnet id>" as NAPI gives fabric NICs.
  bool fabric = false;

  // The NIC tag a node must carry for this NIC: nic_tag, or for a fabric NIC the overlay tag
  // (the part of nic_tag before '/'). "" when the NIC names none.
  std::string required_nic_tag() const;
};

struct Disk {
  std::string path;           // /dev/zvol/rdsk/zones/<uuid>-disk0 (kvm) or .../<uuid>/disk0
  std::string zfs_filesystem; // zones/<uuid>-disk0 (kvm) or zones/<uuid>/disk0 (bhyve)
  std::string image_uuid;
  std::optional<std::uint64_t> size_mib;
  bool boot = false;
};

struct Vm {
  std::string uuid;
  std::string alias;
  std::string brand; // joyent, joyent-minimal, lx, kvm, bhyve
  std::string state; // running, stopped, provisioning, failed, destroyed, ...
  std::string server_uuid;
  std::string owner_uuid;
  std::string image_uuid;     // top-level, or disks[0].image_uuid for kvm/bhyve
  std::string zfs_filesystem; // zones/<uuid> (derived when absent)
  std::string zonepath;       // /zones/<uuid> (derived when absent)
  std::string billing_id;
  std::optional<std::uint64_t> quota_gib; // VMAPI `quota` (GiB)
  std::uint64_t ram_mib = 0;              // `ram` or `max_physical_memory`
  bool autoboot = true;
  bool do_not_inventory = false;
  bool indestructible_zoneroot = false;
  bool indestructible_delegated = false;
  std::vector<Nic> nics;
  std::vector<Disk> disks;
  std::vector<std::string> datasets;    // delegated datasets (zones/<uuid>/data)
  std::optional<std::uint64_t> cpu_cap; // VMAPI `cpu_cap` (percent of a CPU); none = uncapped
  std::uint32_t vcpus = 0;              // VMAPI `vcpus` (HVM brands)
  // Traits the instance asks of a node: VMAPI `traits`, else its package's (`package.traits`),
  // as DAPI's hard-filter-traits takes them. `image_traits` (IMGAPI manifest `traits`) is filled
  // by whoever read the image; image traits win over these (placement merges them).
  nlohmann::json traits = nlohmann::json::object();
  nlohmann::json image_traits = nlohmann::json::object();
  // Placement fields of the payload that were malformed (cpu_cap, traits, a NIC's vlan_id or
  // fabric): parsing never throws for them, the planner refuses to place the instance and says
  // why. Empty for a well-formed payload.
  std::vector<std::string> placement_problems;
  nlohmann::json tags = nlohmann::json::object();
  nlohmann::json raw; // the payload as received

  bool is_core() const; // tags.smartdc_type == "core" (NAT zones excepted by the caller)
  bool is_hvm() const { return brand == "kvm" || brand == "bhyve"; }
};

struct Server {
  std::string uuid;
  std::string hostname;
  std::string status; // running, unknown
  bool setup = false;
  bool reserved = false;
  bool headnode = false;
  std::string admin_ip; // from sysinfo "Network Interfaces" with NIC name "admin"
  std::string current_platform;
  std::uint64_t ram_mib = 0;
  std::uint64_t unreserved_ram_mib = 0;
  std::uint64_t unreserved_disk_mib = 0;
  std::optional<std::uint64_t> unreserved_cpu; // CNAPI `unreserved_cpu` (percent); none = unknown
  nlohmann::json traits = nlohmann::json::object();
  // NIC tags of the node, sorted, without duplicates: the "NIC Names" of sysinfo
  // "Network Interfaces" whose "Link Status" is "up", and those of "Virtual Network Interfaces"
  // (a vnic's "NIC Names", else its name without the trailing digits: sdc_underlay0).
  std::vector<std::string> nic_tags;
  std::vector<std::string> down_nic_tags; // tags only on links that are not up
  // Overlay NIC tags the node carries (sysinfo "Overlay Nic Tags" at the top or on a vnic).
  std::vector<std::string> overlay_nic_tags;
  bool vm_capable = false;                      // sysinfo "VM Capable" (KVM)
  bool bhyve_capable = false;                   // sysinfo "Bhyve Capable"
  std::optional<std::uint32_t> bhyve_max_vcpus; // sysinfo "Bhyve Max Vcpus"
  // Why the sysinfo's placement fields could not be read (a malformed interface entry, ...):
  // parse_server never throws for them; the planner refuses the node and gives these reasons.
  std::vector<std::string> placement_problems;
  nlohmann::json raw;

  bool has_nic_tag(const std::string& tag) const; // an up link or a vnic carries `tag`
  // True when the node can carry fabric (overlay) NICs of overlay tag `overlay` ("" = any):
  // it lists that overlay tag, or, when its sysinfo lists none, it carries the underlay tag
  // sdc_underlay (the vnic Triton's fabric setup creates).
  bool fabric(const std::string& overlay = "") const;
};

// The NIC tag of the fabric underlay on a compute node (Triton's default).
inline constexpr const char* k_underlay_nic_tag = "sdc_underlay";

struct IpRecord {
  std::string ip;
  std::string network_uuid;
  bool reserved = false;
  bool free = true;
  std::string belongs_to_uuid;
  std::string owner_uuid;
  nlohmann::json raw;
};

struct Image {
  std::string uuid;
  std::string name;
  std::string version;
  std::string type;   // zone-dataset, lx-dataset, zvol, ...
  std::string state;  // active, disabled, ...
  std::string origin; // origin image uuid, "" if none
  std::uint64_t file_size = 0;
  nlohmann::json raw;
};

// Parsers. Throw Error(ExitCode::inventory, ...) naming the missing/malformed field. Missing and
// null fields take the defaults above; booleans may be true or "true"; numbers may be strings.

// A VMAPI VM or a vmadm object, any brand. Only `uuid` (or vmadm's `zonename`) is required.
// Derives zfs_filesystem `<zpool>/<uuid>`, zonepath `/<zfs_filesystem>`, a disk's zfs_filesystem
// from its /dev/zvol/rdsk/ path, image_uuid from disks[0] for kvm/bhyve, ram from
// max_physical_memory when `ram` is absent, and `<zone root>/data` for delegate_dataset.
// cpu_cap, vcpus, traits and each NIC's vlan_id/fabric are read leniently: a malformed value
// lands in `placement_problems` instead of throwing.
Vm parse_vm(const nlohmann::json& j);
// A NIC from a VM's nics[] or from NAPI (GET /nics/:mac). ip "dhcp"/"addrconf" becomes "", and
// a missing ip is taken from vmadm's "ips" ("10.0.0.5/24").
Nic parse_nic(const nlohmann::json& j);
// A CNAPI server record. Negative unreserved_ram/disk (overcommitted) become 0. hostname,
// setup, headnode, ram and current_platform fall back to sysinfo when absent. The placement
// fields (NIC tags, overlay tags, unreserved_cpu, VM/Bhyve Capable) are read leniently: a
// malformed entry lands in `placement_problems` instead of throwing.
Server parse_server(const nlohmann::json& j);
// The admin IP of a CN: sysinfo "Admin IP", else the ip4addr of the "Network Interfaces" (then
// "Virtual Network Interfaces") entry whose "NIC Names" holds "admin" (or sysinfo
// "Admin NIC Tag"). "" when none.
std::string admin_ip_from_sysinfo(const nlohmann::json& sysinfo);
// A NAPI IP record. `free` defaults to "not reserved and not assigned" when NAPI omits it.
IpRecord parse_ip(const nlohmann::json& j);
// An IMGAPI manifest; file_size is files[0].size.
Image parse_image(const nlohmann::json& j);

// Every ZFS dataset that belongs to an instance and must be synced, in send order:
// zone root (bhyve disks and delegated datasets are its children, sent recursively), KVM sibling
// disks zones/<uuid>-diskN. The cores dataset is not included (the target gets its own).
std::vector<std::string> instance_datasets(const Vm& vm);

// SmartOS platform stamps (20140429T175502Z) compare lexically; true when `a` is older than `b`.
// False when either is empty (unknown).
bool platform_older(const std::string& a, const std::string& b);

} // namespace zmigrate::inventory
