// SPDX-License-Identifier: MPL-2.0
#pragma once
// The inventory seam: VMAPI, CNAPI, NAPI and IMGAPI as the migration needs them.
// HttpInventory speaks the documented Triton APIs over http::Client; FakeInventory is in-memory.

#include <zmigrate/inventory/types.hpp>

#include <optional>
#include <string>
#include <vector>

namespace zmigrate::inventory {

class Inventory {
public:
  virtual ~Inventory() = default;

  // VMAPI GET /vms/:uuid[?sync=true]. nullopt on 404 ResourceNotFound; throws on other errors.
  virtual std::optional<Vm> find_vm(const std::string& uuid, bool sync = false) = 0;
  // VMAPI GET /vms?server_uuid=&state= (state "active" = not destroyed/failed).
  virtual std::vector<Vm> list_vms(const std::string& server_uuid, const std::string& state) = 0;
  // VMAPI PUT /vms/:uuid with the given body, as vm-agent does (used to tell VMAPI where the
  // instance lives now). Returns the VM VMAPI stored.
  virtual Vm put_vm(const std::string& uuid, const nlohmann::json& body) = 0;

  // CNAPI GET /servers (setup and unsetup, with sysinfo).
  virtual std::vector<Server> list_servers() = 0;
  // CNAPI server by UUID or hostname. Throws NotFoundError naming `uuid_or_hostname` (and the
  // known hostnames) when nothing matches, PreconditionError when a hostname is ambiguous.
  virtual Server resolve_server(const std::string& uuid_or_hostname) = 0;

  // NAPI GET /networks/:network/ips/:ip.
  virtual IpRecord get_ip(const std::string& network_uuid, const std::string& ip) = 0;
  // NAPI PUT /networks/:network/ips/:ip {reserved}.
  virtual IpRecord set_ip_reserved(const std::string& network_uuid, const std::string& ip,
                                   bool reserved) = 0;

  // IMGAPI GET /images/:uuid. nullopt on 404.
  virtual std::optional<Image> find_image(const std::string& uuid) = 0;

  // Triton's own migration record of an instance (VMAPI GET /migrations/:vm_uuid?format=raw;
  // sdc-migrate, CloudAPI). nullopt when VMAPI answers 404 (none: finalize, and a successful
  // abort or rollback, delete the record) or has no such route (a VMAPI from before
  // migrations). Any other failure throws: "none" is never inferred from an error.
  virtual std::optional<nlohmann::json> find_triton_migration(const std::string& vm_uuid) = 0;
};

// Resolved service base URLs (http://host[:port], no trailing slash); "" when not configured.
// cli/config.hpp says where they come from.
struct Endpoints {
  std::string vmapi;
  std::string cnapi;
  std::string napi;
  std::string imgapi;
};

} // namespace zmigrate::inventory
