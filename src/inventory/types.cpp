// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/inventory/types.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/net.hpp>
#include <zmigrate/util/uuid.hpp>
#include <zmigrate/zfs/names.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>

namespace zmigrate::inventory {

namespace {

using nlohmann::json;

[[noreturn]] void malformed(const std::string& what, const std::string& key, const json& value,
                            const char* expected) {
  throw Error(ExitCode::inventory, what,
              fmt::format("field \"{}\" is {} ({}), expected {}", key, value.type_name(),
                          value.dump().substr(0, 80), expected));
}

// A field whose value is the right JSON type but not an acceptable value. Names the field and
// the value (quoted and escaped: the value may be hostile).
[[noreturn]] void refuse(const std::string& what, const std::string& key, const std::string& value,
                         const std::string& expected) {
  throw Error(ExitCode::inventory, what,
              fmt::format("field \"{}\" is {}, expected {}", key, quoted_text(value), expected));
}

void require_object(const json& j, const std::string& what) {
  if (!j.is_object()) {
    throw Error(ExitCode::inventory, what,
                fmt::format("expected a JSON object, got {}", j.type_name()));
  }
}

const json* field(const json& j, const std::string& key) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    return nullptr;
  }
  return &*it;
}

// Missing and null are "": the services send null for unset strings (minimal VMAPI objects).
std::string str(const json& j, const std::string& key, const std::string& what) {
  const json* v = field(j, key);
  if (v == nullptr) {
    return "";
  }
  if (!v->is_string()) {
    malformed(what, key, *v, "a string");
  }
  return v->get<std::string>();
}

// vmadm and old VMAPI payloads carry booleans as "true"/"false" strings.
bool boolean(const json& j, const std::string& key, const std::string& what, bool fallback) {
  const json* v = field(j, key);
  if (v == nullptr) {
    return fallback;
  }
  if (v->is_boolean()) {
    return v->get<bool>();
  }
  if (v->is_string()) {
    const std::string s = v->get<std::string>();
    if (s == "true" || s == "1") {
      return true;
    }
    if (s == "false" || s == "0" || s.empty()) {
      return false;
    }
  }
  if (v->is_number_integer()) {
    return v->get<long long>() != 0;
  }
  malformed(what, key, *v, "a boolean");
}

// Numbers may arrive as JSON numbers or numeric strings (sysinfo "MiB of Memory": "4095").
std::optional<double> number(const json& j, const std::string& key, const std::string& what) {
  const json* v = field(j, key);
  if (v == nullptr) {
    return std::nullopt;
  }
  if (v->is_number()) {
    return v->get<double>();
  }
  if (v->is_string()) {
    const std::string s = v->get<std::string>();
    if (s.empty()) {
      return std::nullopt;
    }
    char* end = nullptr;
    const double d = std::strtod(s.c_str(), &end);
    if (end != nullptr && *end == '\0' && std::isfinite(d)) {
      return d;
    }
  }
  malformed(what, key, *v, "a number");
}

// Negative values mean "none left" (CNAPI reports overcommitted RAM as negative unreserved_ram).
std::optional<std::uint64_t> size(const json& j, const std::string& key, const std::string& what) {
  const std::optional<double> d = number(j, key, what);
  if (!d) {
    return std::nullopt;
  }
  return *d <= 0 ? 0 : static_cast<std::uint64_t>(std::llround(*d));
}

json object_or_empty(const json& j, const std::string& key, const std::string& what) {
  const json* v = field(j, key);
  if (v == nullptr) {
    return json::object();
  }
  if (!v->is_object()) {
    malformed(what, key, *v, "an object");
  }
  return *v;
}

const json& array_or_empty(const json& j, const std::string& key, const std::string& what) {
  static const json empty = json::array();
  const json* v = field(j, key);
  if (v == nullptr) {
    return empty;
  }
  if (!v->is_array()) {
    malformed(what, key, *v, "an array");
  }
  return *v;
}

// The placement fields are read leniently: a malformed value must not make every command that
// reads the object fail, only the placement that needs it. `problems` collects why.
template <typename F>
auto lenient(std::vector<std::string>& problems, F&& read) -> decltype(read()) {
  try {
    return read();
  } catch (const Error& e) {
    problems.push_back(e.what());
    return {};
  }
}

std::optional<std::uint32_t> small_count(const json& j, const std::string& key,
                                         const std::string& what) {
  const std::optional<double> d = number(j, key, what);
  if (!d) {
    return std::nullopt;
  }
  if (*d < 0 || *d > 1e9 || std::floor(*d) != *d) {
    malformed(what, key, j.at(key), "a whole number");
  }
  return static_cast<std::uint32_t>(*d);
}

void add_unique(std::vector<std::string>& v, const std::string& s) {
  if (!s.empty() && std::find(v.begin(), v.end(), s) == v.end()) {
    v.push_back(s);
  }
}

// The strings of a sysinfo list ("NIC Names", "Overlay Nic Tags"): an array of strings, or one
// comma-separated string as older platforms wrote it. Anything else throws.
std::vector<std::string> string_list(const json& j, const std::string& key,
                                     const std::string& what) {
  std::vector<std::string> out;
  const json* v = field(j, key);
  if (v == nullptr) {
    return out;
  }
  if (v->is_string()) {
    const std::string text = v->get<std::string>();
    std::size_t start = 0;
    while (start <= text.size()) {
      const std::size_t comma = text.find(',', start);
      std::string item = text.substr(start, comma == std::string::npos ? comma : comma - start);
      item.erase(0, item.find_first_not_of(' '));
      item.erase(item.find_last_not_of(' ') + 1);
      add_unique(out, item);
      if (comma == std::string::npos) {
        break;
      }
      start = comma + 1;
    }
    return out;
  }
  if (!v->is_array()) {
    malformed(what, key, *v, "an array of strings");
  }
  for (const json& item : *v) {
    if (!item.is_string()) {
      malformed(what, key, *v, "an array of strings");
    }
    add_unique(out, item.get<std::string>());
  }
  return out;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

// Ids end up in API paths and on command lines: anything but a UUID is refused. "" = absent.
std::string uuid_str(const json& j, const std::string& key, const std::string& what) {
  std::string value = str(j, key, what);
  if (!value.empty() && !is_uuid(value)) {
    refuse(what, key, value, "a UUID");
  }
  return value;
}

// A valid ZFS dataset name (zfs::DatasetName's rules), or nullopt.
std::optional<zfs::DatasetName> dataset_name(const std::string& text) {
  try {
    return zfs::DatasetName(text);
  } catch (const Error&) {
    return std::nullopt;
  }
}

// The dataset `text` when it is a valid name that belongs to the instance: below its zone root
// (bhyve disks, delegated datasets), or a sibling in the same pool named "<uuid>-..." (KVM
// disks). Anything else could make a migration send or destroy another instance's data.
std::string owned_dataset(const std::string& text, const Vm& vm, const std::string& what,
                          const std::string& key) {
  const std::optional<zfs::DatasetName> name = dataset_name(text);
  if (!name) {
    refuse(what, key, text, "a ZFS dataset name");
  }
  const zfs::DatasetName root(vm.zfs_filesystem);
  const bool below_root = root.contains(*name);
  const bool sibling = !name->is_pool() && name->parent() == root.parent() &&
                       starts_with(name->str(), vm.zfs_filesystem + "-");
  if (!below_root && !sibling) {
    refuse(what, key, text,
           fmt::format("a dataset of this instance ({}/... or {}-...)", vm.zfs_filesystem,
                       vm.zfs_filesystem));
  }
  return text;
}

// An absolute path of ZFS-name-safe components ending in the instance's uuid (/zones/<uuid>).
bool safe_zonepath(const std::string& path, const std::string& uuid) {
  if (path.size() < 2 || path.front() != '/' || path.size() > zfs::k_max_name_length + 1) {
    return false;
  }
  std::size_t start = 1;
  std::string last;
  while (start <= path.size()) {
    const std::size_t slash = path.find('/', start);
    last = path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (!zfs::is_valid_component(last)) {
      return false;
    }
    if (slash == std::string::npos) {
      break;
    }
    start = slash + 1;
  }
  return last == uuid;
}

// An address for the NIC: an IP literal, "" for dhcp/addrconf (no static address).
std::string nic_ip(const std::string& value, const std::string& what, const std::string& key) {
  if (value == "dhcp" || value == "addrconf") {
    return "";
  }
  if (!value.empty() && !is_ip_literal(value)) {
    refuse(what, key, value, "an IP address, \"dhcp\" or \"addrconf\"");
  }
  return value;
}

// "/dev/zvol/rdsk/zones/<uuid>-disk0" → "zones/<uuid>-disk0"; "" when `path` is not a zvol path.
std::string dataset_from_zvol_path(const std::string& path) {
  for (const char* prefix : {"/dev/zvol/rdsk/", "/dev/zvol/dsk/"}) {
    if (starts_with(path, prefix)) {
      return path.substr(std::string(prefix).size());
    }
  }
  return "";
}

// First IPv4 address of a vmadm "ips" list ("10.192.0.8/10"), skipping dhcp/addrconf/IPv6.
// An entry that is none of those ("10.0.0.5; id") is refused, not skipped.
std::string ipv4_from_ips(const json& ips, const std::string& what) {
  if (!ips.is_array()) {
    return "";
  }
  std::string first;
  for (const json& entry : ips) {
    if (!entry.is_string()) {
      continue;
    }
    const std::string text = entry.get<std::string>();
    const std::size_t slash = text.find('/');
    const std::string ip = nic_ip(text.substr(0, slash), what, "ips");
    const std::string prefix = slash == std::string::npos ? "" : text.substr(slash + 1);
    if ((slash != std::string::npos &&
         (ip.empty() || prefix.empty() || prefix.size() > 3 ||
          prefix.find_first_not_of("0123456789") != std::string::npos))) {
      refuse(what, "ips", text, "an IP address with an optional /prefix");
    }
    if (first.empty() && is_ipv4(ip)) {
      first = ip;
    }
  }
  return first;
}

Nic parse_nic_at(const json& j, const std::string& what, std::vector<std::string>& problems) {
  require_object(j, what);
  Nic nic;
  nic.mac = str(j, "mac", what);
  nic.ip = nic_ip(str(j, "ip", what), what, "ip");
  if (nic.ip.empty()) {
    const json* ips = field(j, "ips");
    nic.ip = ips != nullptr ? ipv4_from_ips(*ips, what) : "";
  }
  nic.network_uuid = uuid_str(j, "network_uuid", what);
  nic.nic_tag = str(j, "nic_tag", what);
  nic.interface = str(j, "interface", what);
  nic.primary = boolean(j, "primary", what, false);
  nic.vlan_id = lenient(problems, [&] { return small_count(j, "vlan_id", what); });
  nic.fabric = lenient(problems, [&] { return boolean(j, "fabric", what, false); }) ||
               nic.nic_tag.find('/') != std::string::npos;
  return nic;
}

Disk parse_disk(const json& j, const Vm& vm, const std::string& zpool, std::size_t index,
                const std::string& what) {
  require_object(j, what);
  Disk disk;
  disk.path = str(j, "path", what);
  disk.zfs_filesystem = str(j, "zfs_filesystem", what);
  std::string key = "zfs_filesystem";
  if (disk.zfs_filesystem.empty()) {
    disk.zfs_filesystem = dataset_from_zvol_path(disk.path);
    key = "path";
  }
  if (disk.zfs_filesystem.empty()) {
    // Neither given: the names vmadm would have chosen (bhyve disks live under the zone root).
    const std::string pool = str(j, "zpool", what).empty() ? zpool : str(j, "zpool", what);
    disk.zfs_filesystem = vm.brand == "bhyve" ? fmt::format("{}/disk{}", vm.zfs_filesystem, index)
                                              : fmt::format("{}/{}-disk{}", pool, vm.uuid, index);
    key = "zpool";
  }
  owned_dataset(disk.zfs_filesystem, vm, what, key);
  disk.image_uuid = uuid_str(j, "image_uuid", what);
  disk.size_mib = size(j, "size", what);
  disk.boot = boolean(j, "boot", what, false);
  return disk;
}

} // namespace

Nic parse_nic(const json& j) {
  std::vector<std::string> ignored;
  return parse_nic_at(j, "NIC", ignored);
}

std::string Nic::required_nic_tag() const {
  return fabric ? nic_tag.substr(0, nic_tag.find('/')) : nic_tag;
}

bool Server::has_nic_tag(const std::string& tag) const {
  return std::binary_search(nic_tags.begin(), nic_tags.end(), tag);
}

bool Server::fabric(const std::string& overlay) const {
  if (overlay_nic_tags.empty()) {
    return has_nic_tag(k_underlay_nic_tag);
  }
  return overlay.empty() || std::find(overlay_nic_tags.begin(), overlay_nic_tags.end(), overlay) !=
                                overlay_nic_tags.end();
}

bool Vm::is_core() const {
  if (!tags.is_object()) {
    return false;
  }
  const auto it = tags.find("smartdc_type");
  return it != tags.end() && it->is_string() && it->get<std::string>() == "core";
}

Vm parse_vm(const json& j) {
  require_object(j, "VM");
  Vm vm;
  vm.uuid = uuid_str(j, "uuid", "VM");
  if (vm.uuid.empty()) {
    vm.uuid = uuid_str(j, "zonename", "VM"); // vmadm objects name the zone after the uuid
  }
  if (vm.uuid.empty()) {
    throw Error(ExitCode::inventory, "VM", "field \"uuid\" is missing");
  }
  const std::string what = "VM " + vm.uuid;
  vm.alias = str(j, "alias", what);
  vm.brand = str(j, "brand", what);
  vm.state = str(j, "state", what);
  vm.server_uuid = uuid_str(j, "server_uuid", what);
  vm.owner_uuid = uuid_str(j, "owner_uuid", what);
  vm.billing_id = str(j, "billing_id", what);

  const std::string given_zpool = str(j, "zpool", what);
  if (!given_zpool.empty()) {
    const std::optional<zfs::DatasetName> pool = dataset_name(given_zpool);
    if (!pool || !pool->is_pool()) {
      refuse(what, "zpool", given_zpool, "a ZFS pool name");
    }
  }
  const std::string zpool = given_zpool.empty() ? "zones" : given_zpool;
  vm.zfs_filesystem = str(j, "zfs_filesystem", what);
  if (vm.zfs_filesystem.empty()) {
    vm.zfs_filesystem = zpool + "/" + vm.uuid;
  }
  // The zone root is exactly <pool>/<uuid>: a bare pool ("zones") or another instance's dataset
  // would make every later zfs command act on the wrong data.
  {
    const std::optional<zfs::DatasetName> root = dataset_name(vm.zfs_filesystem);
    if (!root || root->is_pool() || !root->parent().is_pool() ||
        root->str() != root->pool() + "/" + vm.uuid ||
        (!given_zpool.empty() && root->pool() != given_zpool)) {
      refuse(what, "zfs_filesystem", vm.zfs_filesystem, fmt::format("<pool>/{}", vm.uuid));
    }
  }
  vm.zonepath = str(j, "zonepath", what);
  if (vm.zonepath.empty()) {
    vm.zonepath = "/" + vm.zfs_filesystem;
  }
  if (!safe_zonepath(vm.zonepath, vm.uuid)) {
    refuse(what, "zonepath", vm.zonepath, fmt::format("/<path>/{}", vm.uuid));
  }

  vm.quota_gib = size(j, "quota", what);
  std::optional<std::uint64_t> ram = size(j, "ram", what);
  if (!ram) {
    ram = size(j, "max_physical_memory", what);
  }
  vm.ram_mib = ram.value_or(0);
  vm.autoboot = boolean(j, "autoboot", what, true);
  vm.do_not_inventory = boolean(j, "do_not_inventory", what, false);
  vm.indestructible_zoneroot = boolean(j, "indestructible_zoneroot", what, false);
  vm.indestructible_delegated = boolean(j, "indestructible_delegated", what, false);

  const json& nics = array_or_empty(j, "nics", what);
  for (std::size_t i = 0; i < nics.size(); ++i) {
    vm.nics.push_back(
        parse_nic_at(nics[i], fmt::format("{} nics[{}]", what, i), vm.placement_problems));
  }
  const json& disks = array_or_empty(j, "disks", what);
  for (std::size_t i = 0; i < disks.size(); ++i) {
    vm.disks.push_back(parse_disk(disks[i], vm, zpool, i, fmt::format("{} disks[{}]", what, i)));
  }

  const json& datasets = array_or_empty(j, "datasets", what);
  for (std::size_t i = 0; i < datasets.size(); ++i) {
    const json& d = datasets[i];
    const std::string key = fmt::format("datasets[{}]", i);
    if (d.is_string()) {
      vm.datasets.push_back(owned_dataset(d.get<std::string>(), vm, what, key));
    } else if (d.is_object() && d.contains("name") && d["name"].is_string()) {
      vm.datasets.push_back(owned_dataset(d["name"].get<std::string>(), vm, what, key));
    } else {
      malformed(what, fmt::format("datasets[{}]", i), d, "a dataset name");
    }
  }
  if (boolean(j, "delegate_dataset", what, false)) {
    const std::string delegated = vm.zfs_filesystem + "/data";
    if (std::find(vm.datasets.begin(), vm.datasets.end(), delegated) == vm.datasets.end()) {
      vm.datasets.push_back(delegated);
    }
  }

  // HVM instances boot from disk0's image; VMAPI omits the top-level image_uuid for them.
  vm.image_uuid = uuid_str(j, "image_uuid", what);
  if (vm.is_hvm() && !vm.disks.empty() && !vm.disks.front().image_uuid.empty()) {
    vm.image_uuid = vm.disks.front().image_uuid;
  }
  if (vm.image_uuid.empty()) {
    vm.image_uuid = uuid_str(j, "dataset_uuid", what); // pre-IMGAPI name of the same field
  }

  vm.cpu_cap = lenient(vm.placement_problems, [&] { return size(j, "cpu_cap", what); });
  if (vm.cpu_cap && *vm.cpu_cap == 0) {
    vm.cpu_cap.reset(); // 0 is vmadm's "no cap"
  }
  vm.vcpus =
      lenient(vm.placement_problems, [&] { return small_count(j, "vcpus", what); }).value_or(0);
  vm.traits = lenient(vm.placement_problems, [&] { return object_or_empty(j, "traits", what); });
  if (vm.traits.is_null() || vm.traits.empty()) {
    vm.traits = lenient(vm.placement_problems, [&] {
      const json* pkg = field(j, "package");
      return pkg != nullptr && pkg->is_object() ? object_or_empty(*pkg, "traits", what + " package")
                                                : json::object();
    });
  }
  if (vm.traits.is_null()) {
    vm.traits = json::object();
  }

  vm.tags = object_or_empty(j, "tags", what);
  vm.raw = j;
  return vm;
}

namespace {

// The sysinfo fields placement needs, read leniently (Server::placement_problems).
void read_placement_sysinfo(Server& s, const json& j, const std::string& what) {
  const json* sysinfo = field(j, "sysinfo");
  if (sysinfo == nullptr || !sysinfo->is_object()) {
    return; // object_or_empty already refused a sysinfo that is not an object
  }
  std::vector<std::string>& problems = s.placement_problems;
  s.vm_capable = lenient(problems, [&] { return boolean(*sysinfo, "VM Capable", what, false); });
  s.bhyve_capable =
      lenient(problems, [&] { return boolean(*sysinfo, "Bhyve Capable", what, false); });
  s.bhyve_max_vcpus =
      lenient(problems, [&] { return small_count(*sysinfo, "Bhyve Max Vcpus", what); });
  for (const std::string& t :
       lenient(problems, [&] { return string_list(*sysinfo, "Overlay Nic Tags", what); })) {
    add_unique(s.overlay_nic_tags, t);
  }
  std::vector<std::string> down;
  for (const char* group : {"Network Interfaces", "Virtual Network Interfaces"}) {
    const json* interfaces = field(*sysinfo, group);
    if (interfaces == nullptr) {
      continue;
    }
    if (!interfaces->is_object()) {
      problems.push_back(fmt::format("{}: field \"{}\" is {}, expected an object", what, group,
                                     interfaces->type_name()));
      continue;
    }
    const bool vnics = std::string(group) == "Virtual Network Interfaces";
    for (const auto& [name, nic] : interfaces->items()) {
      const std::string nic_what = fmt::format("{} {} {}", what, group, quoted_text(name));
      if (!nic.is_object()) {
        problems.push_back(fmt::format("{}: is {}, expected an object", nic_what, nic.type_name()));
        continue;
      }
      std::vector<std::string> tags =
          lenient(problems, [&] { return string_list(nic, "NIC Names", nic_what); });
      if (vnics && tags.empty()) {
        // A vnic is named after its tag: sdc_underlay0 carries sdc_underlay.
        const std::size_t end = name.find_last_not_of("0123456789");
        if (end != std::string::npos && end + 1 < name.size()) {
          tags.push_back(name.substr(0, end + 1));
        }
      }
      for (const std::string& t :
           lenient(problems, [&] { return string_list(nic, "Overlay Nic Tags", nic_what); })) {
        add_unique(s.overlay_nic_tags, t);
      }
      const std::string link = lenient(problems, [&] { return str(nic, "Link Status", nic_what); });
      // A vnic without a link status rides on its host interface: counted as up.
      const bool up = link == "up" || (vnics && link.empty());
      for (const std::string& t : tags) {
        add_unique(up ? s.nic_tags : down, t);
      }
    }
  }
  std::sort(s.nic_tags.begin(), s.nic_tags.end());
  for (const std::string& t : down) {
    if (!s.has_nic_tag(t)) {
      s.down_nic_tags.push_back(t);
    }
  }
  std::sort(s.down_nic_tags.begin(), s.down_nic_tags.end());
  std::sort(s.overlay_nic_tags.begin(), s.overlay_nic_tags.end());
}

} // namespace

Server parse_server(const json& j) {
  require_object(j, "CNAPI server");
  const json sysinfo = object_or_empty(j, "sysinfo", "CNAPI server");
  Server s;
  s.uuid = uuid_str(j, "uuid", "CNAPI server");
  if (s.uuid.empty()) {
    s.uuid = uuid_str(sysinfo, "UUID", "CNAPI server sysinfo");
  }
  if (s.uuid.empty()) {
    throw Error(ExitCode::inventory, "CNAPI server", "field \"uuid\" is missing");
  }
  const std::string what = "CNAPI server " + s.uuid;
  const std::string sys_what = what + " sysinfo";

  s.hostname = str(j, "hostname", what);
  if (s.hostname.empty()) {
    s.hostname = str(sysinfo, "Hostname", sys_what);
  }
  s.status = str(j, "status", what);
  s.setup = boolean(j, "setup", what, boolean(sysinfo, "Setup", sys_what, false));
  s.reserved = boolean(j, "reserved", what, false);
  const json boot_params = object_or_empty(sysinfo, "Boot Parameters", sys_what);
  s.headnode = boolean(j, "headnode", what, boolean(boot_params, "headnode", sys_what, false));
  s.current_platform = str(j, "current_platform", what);
  if (s.current_platform.empty()) {
    s.current_platform = str(sysinfo, "Live Image", sys_what);
  }
  std::optional<std::uint64_t> ram = size(j, "ram", what);
  if (!ram) {
    ram = size(sysinfo, "MiB of Memory", sys_what);
  }
  s.ram_mib = ram.value_or(0);
  s.unreserved_ram_mib = size(j, "unreserved_ram", what).value_or(0);
  s.unreserved_disk_mib = size(j, "unreserved_disk", what).value_or(0);
  s.traits = object_or_empty(j, "traits", what);
  s.unreserved_cpu = lenient(s.placement_problems, [&] { return size(j, "unreserved_cpu", what); });
  read_placement_sysinfo(s, j, sys_what);
  // The address zmigrate connects to (ssh, the data path): an IP literal and nothing else. The
  // hostname is only ever displayed.
  s.admin_ip = admin_ip_from_sysinfo(sysinfo);
  if (!s.admin_ip.empty() && !is_ip_literal(s.admin_ip)) {
    refuse(sys_what, "admin_ip", s.admin_ip, "an IPv4 or IPv6 address");
  }
  s.raw = j;
  return s;
}

std::string admin_ip_from_sysinfo(const json& sysinfo) {
  if (!sysinfo.is_object()) {
    return "";
  }
  // Newer platforms state it outright; otherwise find the interface tagged admin, as CNAPI does.
  if (const json* ip = field(sysinfo, "Admin IP");
      ip != nullptr && ip->is_string() && !ip->get<std::string>().empty()) {
    return ip->get<std::string>();
  }
  std::string tag = "admin";
  if (const json* t = field(sysinfo, "Admin NIC Tag");
      t != nullptr && t->is_string() && !t->get<std::string>().empty()) {
    tag = t->get<std::string>();
  }
  for (const char* group : {"Network Interfaces", "Virtual Network Interfaces"}) {
    const json* interfaces = field(sysinfo, group);
    if (interfaces == nullptr || !interfaces->is_object()) {
      continue;
    }
    for (const auto& [name, nic] : interfaces->items()) {
      if (!nic.is_object()) {
        continue;
      }
      const json* names = field(nic, "NIC Names");
      const json* ip = field(nic, "ip4addr");
      if (names == nullptr || !names->is_array() || ip == nullptr || !ip->is_string() ||
          ip->get<std::string>().empty()) {
        continue;
      }
      for (const json& n : *names) {
        if (n.is_string() && n.get<std::string>() == tag) {
          return ip->get<std::string>();
        }
      }
    }
  }
  return "";
}

IpRecord parse_ip(const json& j) {
  require_object(j, "NAPI IP");
  IpRecord r;
  r.ip = str(j, "ip", "NAPI IP");
  if (r.ip.empty()) {
    throw Error(ExitCode::inventory, "NAPI IP", "field \"ip\" is missing");
  }
  if (!is_ip_literal(r.ip)) {
    refuse("NAPI IP", "ip", r.ip, "an IPv4 or IPv6 address");
  }
  const std::string what = "NAPI IP " + r.ip;
  r.network_uuid = uuid_str(j, "network_uuid", what);
  r.reserved = boolean(j, "reserved", what, false);
  r.belongs_to_uuid = uuid_str(j, "belongs_to_uuid", what);
  r.owner_uuid = uuid_str(j, "owner_uuid", what);
  // NAPI leaves "free" out of some answers; an IP nobody holds and nobody reserved is free.
  r.free = boolean(j, "free", what, !r.reserved && r.belongs_to_uuid.empty());
  r.raw = j;
  return r;
}

Image parse_image(const json& j) {
  require_object(j, "IMGAPI image");
  Image image;
  image.uuid = uuid_str(j, "uuid", "IMGAPI image");
  if (image.uuid.empty()) {
    throw Error(ExitCode::inventory, "IMGAPI image", "field \"uuid\" is missing");
  }
  const std::string what = "IMGAPI image " + image.uuid;
  image.name = str(j, "name", what);
  image.version = str(j, "version", what);
  image.type = str(j, "type", what);
  image.state = str(j, "state", what);
  image.origin = uuid_str(j, "origin", what);
  const json& files = array_or_empty(j, "files", what);
  if (!files.empty()) {
    require_object(files[0], what + " files[0]");
    image.file_size = size(files[0], "size", what + " files[0]").value_or(0);
  }
  image.raw = j;
  return image;
}

std::vector<std::string> instance_datasets(const Vm& vm) {
  std::vector<std::string> out{vm.zfs_filesystem};
  const std::string child_prefix = vm.zfs_filesystem + "/";
  auto add = [&](const std::string& ds) {
    // Children of the zone root travel with it (send -R); only siblings are listed.
    if (ds.empty() || ds == vm.zfs_filesystem || starts_with(ds, child_prefix)) {
      return;
    }
    if (std::find(out.begin(), out.end(), ds) == out.end()) {
      out.push_back(ds);
    }
  };
  for (const Disk& d : vm.disks) {
    add(d.zfs_filesystem);
  }
  for (const std::string& ds : vm.datasets) {
    add(ds);
  }
  return out;
}

bool platform_older(const std::string& a, const std::string& b) {
  if (a.empty() || b.empty()) {
    return false;
  }
  return a < b;
}

} // namespace zmigrate::inventory
