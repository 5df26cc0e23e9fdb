// SPDX-License-Identifier: MPL-2.0
#pragma once
// FakeInventory: an in-memory Inventory that records every call. Tests fill `vms`, `servers`,
// `ips` and `images` (add_vm/add_server parse real payloads), run the code, then assert on
// `calls`, `ip_reservations` and `vm_puts`, e.g.
//   CHECK(inv.ip_reservations == std::vector<FakeInventory::IpReservation>{{net, ip, true}});
// Behaviour follows the services: get_ip of an unknown IP answers a synthetic free record (as
// NAPI does), put_vm merges into the stored payload (as VMAPI does for vm-agent) and ignores a
// "destroyed" report from a server other than the VM's current one (as the lab simulator does).
// Set `before_call` to throw from any call to inject failures. Set `vm_agent` to stand in for the
// nodes' vm-agent: it runs before every find_vm with sync=true (which waits for the agent's next
// report) and may update `vms` from what the nodes show.

#include <zmigrate/inventory/inventory.hpp>
#include <zmigrate/inventory/types.hpp>
#include <zmigrate/util/error.hpp>

#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace zmigrate::fakes {

class FakeInventory final : public inventory::Inventory {
public:
  struct IpReservation {
    std::string network_uuid;
    std::string ip;
    bool reserved = false;
    bool operator==(const IpReservation&) const = default;
  };
  struct VmPut {
    std::string uuid;
    nlohmann::json body;
  };

  std::map<std::string, inventory::Vm> vms; // by uuid
  std::vector<inventory::Server> servers;
  std::map<std::pair<std::string, std::string>, inventory::IpRecord> ips; // (network, ip)
  std::map<std::string, inventory::Image> images;                         // by uuid

  // One line per call: "find_vm <uuid>", "find_vm <uuid> sync", "list_vms <server> <state>",
  // "put_vm <uuid>", "list_servers", "resolve_server <name>", "get_ip <net> <ip>",
  // "set_ip_reserved <net> <ip> true|false", "find_image <uuid>".
  std::vector<std::string> calls;
  std::vector<IpReservation> ip_reservations;
  std::vector<VmPut> vm_puts;
  // Called with the `calls` line before each call does anything; may throw.
  std::function<void(const std::string& call)> before_call;
  // Called with the uuid before a find_vm(uuid, sync=true) answers; may change `vms`.
  std::function<void(const std::string& uuid)> vm_agent;

  // Store the VM parsed from a VMAPI/vmadm payload; returns the stored VM.
  inventory::Vm& add_vm(const nlohmann::json& payload) {
    inventory::Vm vm = inventory::parse_vm(payload);
    const std::string uuid = vm.uuid;
    vms[uuid] = std::move(vm);
    return vms[uuid];
  }
  // Store a server. Missing fields get lab-like defaults (setup, running, 64 GiB free, NIC tags
  // admin, external and internal on links that are up, KVM and bhyve capable).
  inventory::Server& add_server(const std::string& uuid, const std::string& hostname,
                                const std::string& admin_ip) {
    inventory::Server s;
    s.uuid = uuid;
    s.hostname = hostname;
    s.admin_ip = admin_ip;
    s.status = "running";
    s.setup = true;
    s.ram_mib = 65536;
    s.unreserved_ram_mib = 65536;
    s.unreserved_disk_mib = 1 << 20;
    s.current_platform = "20240101T000000Z";
    s.nic_tags = {"admin", "external", "internal"};
    s.vm_capable = true;
    s.bhyve_capable = true;
    s.raw = {{"uuid", uuid}, {"hostname", hostname}};
    servers.push_back(std::move(s));
    return servers.back();
  }
  inventory::Server& add_server(const nlohmann::json& payload) {
    servers.push_back(inventory::parse_server(payload));
    return servers.back();
  }
  inventory::IpRecord& add_ip(const nlohmann::json& payload) {
    inventory::IpRecord r = inventory::parse_ip(payload);
    const auto key = std::make_pair(r.network_uuid, r.ip);
    ips[key] = std::move(r);
    return ips[key];
  }
  inventory::Image& add_image(const nlohmann::json& payload) {
    inventory::Image image = inventory::parse_image(payload);
    const std::string uuid = image.uuid;
    images[uuid] = std::move(image);
    return images[uuid];
  }

  std::optional<inventory::Vm> find_vm(const std::string& uuid, bool sync = false) override {
    record("find_vm " + uuid + (sync ? " sync" : ""));
    if (sync && vm_agent) {
      vm_agent(uuid);
    }
    const auto it = vms.find(uuid);
    if (it == vms.end()) {
      return std::nullopt;
    }
    return it->second;
  }

  std::vector<inventory::Vm> list_vms(const std::string& server_uuid,
                                      const std::string& state) override {
    record("list_vms " + server_uuid + " " + state);
    std::vector<inventory::Vm> out;
    for (const auto& [uuid, vm] : vms) {
      if (!server_uuid.empty() && vm.server_uuid != server_uuid) {
        continue;
      }
      const bool active = vm.state != "destroyed" && vm.state != "failed";
      if (!state.empty() && (state == "active" ? !active : vm.state != state)) {
        continue;
      }
      out.push_back(vm);
    }
    return out;
  }

  inventory::Vm put_vm(const std::string& uuid, const nlohmann::json& body) override {
    record("put_vm " + uuid);
    vm_puts.push_back({uuid, body});
    const auto it = vms.find(uuid);
    if (it != vms.end() && body.is_object() && body.value("state", "") == "destroyed" &&
        body.value("server_uuid", it->second.server_uuid) != it->second.server_uuid) {
      return it->second;
    }
    nlohmann::json merged = it != vms.end() ? it->second.raw : nlohmann::json::object();
    if (!merged.is_object()) {
      merged = nlohmann::json::object();
    }
    merged.update(body);
    merged["uuid"] = uuid;
    return add_vm(merged);
  }

  std::vector<inventory::Server> list_servers() override {
    record("list_servers");
    return servers;
  }

  inventory::Server resolve_server(const std::string& uuid_or_hostname) override {
    record("resolve_server " + uuid_or_hostname);
    std::vector<const inventory::Server*> by_name;
    for (const inventory::Server& s : servers) {
      if (s.uuid == uuid_or_hostname) {
        return s;
      }
      if (s.hostname == uuid_or_hostname) {
        by_name.push_back(&s);
      }
    }
    const std::string subject = "compute node \"" + uuid_or_hostname + "\"";
    if (by_name.size() == 1) {
      return *by_name.front();
    }
    if (by_name.size() > 1) {
      throw PreconditionError(subject, "several CNAPI servers have this hostname; name the "
                                       "compute node by UUID");
    }
    std::string known;
    for (const inventory::Server& s : servers) {
      known += (known.empty() ? "" : ", ") + s.hostname + " (" + s.uuid + ")";
    }
    throw NotFoundError(subject, "no CNAPI server has this hostname or UUID; known compute "
                                 "nodes: " +
                                     known);
  }

  inventory::IpRecord get_ip(const std::string& network_uuid, const std::string& ip) override {
    record("get_ip " + network_uuid + " " + ip);
    const auto it = ips.find({network_uuid, ip});
    if (it != ips.end()) {
      return it->second;
    }
    inventory::IpRecord r;
    r.ip = ip;
    r.network_uuid = network_uuid;
    r.raw = {{"ip", ip}, {"network_uuid", network_uuid}, {"reserved", false}, {"free", true}};
    return r;
  }

  inventory::IpRecord set_ip_reserved(const std::string& network_uuid, const std::string& ip,
                                      bool reserved) override {
    record("set_ip_reserved " + network_uuid + " " + ip + (reserved ? " true" : " false"));
    ip_reservations.push_back({network_uuid, ip, reserved});
    auto it = ips.find({network_uuid, ip});
    if (it == ips.end()) {
      inventory::IpRecord r;
      r.ip = ip;
      r.network_uuid = network_uuid;
      it = ips.emplace(std::make_pair(network_uuid, ip), r).first;
    }
    it->second.reserved = reserved;
    it->second.free = !reserved && it->second.belongs_to_uuid.empty();
    it->second.raw = {{"ip", ip},
                      {"network_uuid", network_uuid},
                      {"reserved", reserved},
                      {"free", it->second.free}};
    if (!it->second.belongs_to_uuid.empty()) {
      it->second.raw["belongs_to_uuid"] = it->second.belongs_to_uuid;
    }
    return it->second;
  }

  // Triton's own migration records by VM uuid (VMAPI /migrations), raw.
  std::map<std::string, nlohmann::json> triton_migrations;
  std::optional<nlohmann::json> find_triton_migration(const std::string& vm_uuid) override {
    record("find_triton_migration " + vm_uuid);
    const auto it = triton_migrations.find(vm_uuid);
    if (it == triton_migrations.end()) {
      return std::nullopt;
    }
    return it->second;
  }

  std::optional<inventory::Image> find_image(const std::string& uuid) override {
    record("find_image " + uuid);
    const auto it = images.find(uuid);
    if (it == images.end()) {
      return std::nullopt;
    }
    return it->second;
  }

private:
  void record(const std::string& line) {
    calls.push_back(line);
    if (before_call) {
      before_call(line);
    }
  }
};

} // namespace zmigrate::fakes
