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
  std::vector<std::string> datasets; // delegated datasets (zones/<uuid>/data)
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
  nlohmann::json traits = nlohmann::json::object();
  nlohmann::json raw;
};

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
Vm parse_vm(const nlohmann::json& j);
// A NIC from a VM's nics[] or from NAPI (GET /nics/:mac). ip "dhcp"/"addrconf" becomes "", and
// a missing ip is taken from vmadm's "ips" ("10.0.0.5/24").
Nic parse_nic(const nlohmann::json& j);
// A CNAPI server record. Negative unreserved_ram/disk (overcommitted) become 0. hostname,
// setup, headnode, ram and current_platform fall back to sysinfo when absent.
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
