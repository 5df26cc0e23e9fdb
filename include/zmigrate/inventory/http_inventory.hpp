// SPDX-License-Identifier: MPL-2.0
#pragma once
// Inventory over the documented Triton HTTP APIs (VMAPI, CNAPI, NAPI, IMGAPI) through an
// http::Client. Error bodies {"code","message"} are quoted in the errors thrown, e.g.
//   VMAPI GET /vms/<uuid>: 500 InternalError: <message>

#include <zmigrate/http/client.hpp>
#include <zmigrate/inventory/inventory.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace zmigrate::inventory {

class HttpInventory final : public Inventory {
public:
  // `client` must outlive this object. An empty endpoint is allowed; calls to that service throw
  // ConfigError (commands check the endpoints they need up front: cli::require_endpoints).
  HttpInventory(http::Client& client, Endpoints endpoints);

  // Errors common to every call, with subject "<SERVICE> <METHOD> <path?query>":
  //  - no response (after retries): TransientError from the client;
  //  - 404 where the call does not return nullopt: NotFoundError;
  //  - 429/502/503/504: TransientError(ExitCode::inventory); other statuses: Error(inventory);
  //    both quote the error body (describe_error_response);
  //  - a 404 "Route does not exist" (the URL points at the wrong service) is always an Error;
  //  - malformed JSON: Error naming the URL and the parse error.
  std::optional<Vm> find_vm(const std::string& uuid, bool sync = false) override;
  // Pages through GET /vms with limit=1000&offset=N until a short page. Empty `server_uuid` or
  // `state` leaves that filter out.
  std::vector<Vm> list_vms(const std::string& server_uuid, const std::string& state) override;
  // When VMAPI answers without a body, the VM is read back with find_vm.
  Vm put_vm(const std::string& uuid, const nlohmann::json& body) override;
  // GET /servers?extras=sysinfo,memory,disk,capacity, paged with limit=1000&offset=N.
  std::vector<Server> list_servers() override;
  // A UUID → GET /servers/:uuid; else GET /servers?hostname= (matched exactly). Unknown →
  // NotFoundError listing the known "hostname (uuid)"s; several matches → PreconditionError.
  Server resolve_server(const std::string& uuid_or_hostname) override;
  // network_uuid is filled from the request when NAPI leaves it out of the answer.
  IpRecord get_ip(const std::string& network_uuid, const std::string& ip) override;
  IpRecord set_ip_reserved(const std::string& network_uuid, const std::string& ip,
                           bool reserved) override;
  std::optional<Image> find_image(const std::string& uuid) override;
  std::optional<nlohmann::json> find_triton_migration(const std::string& vm_uuid) override;

private:
  struct Service;
  // What a 404 means: an error, "none", or "none" also when the route itself is missing.
  enum class Missing { is_error, is_nullopt, route_too };
  std::optional<nlohmann::json> call(const Service& service, const std::string& method,
                                     const std::string& path,
                                     const std::optional<nlohmann::json>& body, Missing missing);
  Service vmapi() const;
  Service cnapi() const;
  Service napi() const;
  Service imgapi() const;

  http::Client& m_client;
  Endpoints m_endpoints;
};

// "500 InternalError: <message>" from a restify error body; "409 ValidationFailed: <message>
// (image_uuid: <message>; ...)" when it lists errors; "502 Bad Gateway: <start of body>" when
// the body is not a restify error.
std::string describe_error_response(const http::Response& response);

// Percent-encodes `text` for use as one URL path segment or query value: RFC 3986 unreserved
// characters and those in `keep` (e.g. "," for lists in a query) pass through.
std::string url_encode(const std::string& text, std::string_view keep = "");

} // namespace zmigrate::inventory
