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
  std::string interface;    // net0, net1, ...
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
  std::string brand;  // joyent, joyent-minimal, lx, kvm, bhyve
  std::string state;  // running, stopped, provisioning, failed, destroyed, ...
  std::string server_uuid;
  std::string owner_uuid;
  std::string image_uuid; // top-level, or disks[0].image_uuid for kvm/bhyve
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
  std::string type;  // zone-dataset, lx-dataset, zvol, ...
  std::string state; // active, disabled, ...
  std::string origin; // origin image uuid, "" if none
  std::uint64_t file_size = 0;
  nlohmann::json raw;
};

// Parsers. Throw Error(ExitCode::inventory, ...) naming the missing/malformed field.
Vm parse_vm(const nlohmann::json& j);
Server parse_server(const nlohmann::json& j);
IpRecord parse_ip(const nlohmann::json& j);
Image parse_image(const nlohmann::json& j);

// Every ZFS dataset that belongs to an instance and must be synced, in send order:
// zone root (bhyve disks and delegated datasets are its children, sent recursively), KVM sibling
// disks zones/<uuid>-diskN. The cores dataset is not included (the target gets its own).
std::vector<std::string> instance_datasets(const Vm& vm);

// SmartOS platform stamps (20140429T175502Z) compare lexically; true when `a` is older than `b`.
bool platform_older(const std::string& a, const std::string& b);

} // namespace zmigrate::inventory
