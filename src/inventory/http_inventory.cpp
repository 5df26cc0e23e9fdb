// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/inventory/http_inventory.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/net.hpp>
#include <zmigrate/util/uuid.hpp>

#include <algorithm>
#include <cctype>
#include <set>

#include <fmt/format.h>

namespace zmigrate::inventory {

using nlohmann::json;

struct HttpInventory::Service {
  std::string name; // VMAPI
  std::string base; // http://vmapi.example
};

namespace {

// Restify and VMAPI page their lists at 1000 entries at most.
constexpr std::size_t k_page_size = 1000;

const char* reason_phrase(long status) {
  switch (status) {
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 406:
    return "Not Acceptable";
  case 409:
    return "Conflict";
  case 412:
    return "Precondition Failed";
  case 422:
    return "Unprocessable Entity";
  case 429:
    return "Too Many Requests";
  case 500:
    return "Internal Server Error";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  case 507:
    return "Insufficient Storage";
  default:
    return "";
  }
}

std::string one_line(std::string text, std::size_t max) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  std::replace(text.begin(), text.end(), '\r', ' ');
  while (!text.empty() && text.back() == ' ') {
    text.pop_back();
  }
  if (text.size() > max) {
    text = text.substr(0, max) + "...";
  }
  return text;
}

std::string string_field(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

// A 404 for the route itself (not for the object) means the URL points at another service.
bool route_missing(const json& body, const std::string& path) {
  const std::string message = string_field(body, "message");
  const std::string bare_path = path.substr(0, path.find('?'));
  return message == "Route does not exist" || message == bare_path + " does not exist";
}

std::string query(const std::vector<std::pair<std::string, std::string>>& params) {
  std::string out;
  for (const auto& [key, value] : params) {
    out += out.empty() ? "?" : "&";
    // Commas stay readable: the services split list values ("extras=sysinfo,disk") on them.
    out += url_encode(key) + "=" + url_encode(value, ",");
  }
  return out;
}

std::string server_list_text(const std::vector<Server>& servers) {
  if (servers.empty()) {
    return "CNAPI lists no servers";
  }
  std::vector<std::string> names;
  for (const Server& s : servers) {
    names.push_back(fmt::format("{} ({})", s.hostname.empty() ? "?" : s.hostname, s.uuid));
  }
  std::sort(names.begin(), names.end());
  constexpr std::size_t k_max = 40;
  std::string text = "known compute nodes: ";
  for (std::size_t i = 0; i < names.size() && i < k_max; ++i) {
    text += (i == 0 ? "" : ", ") + names[i];
  }
  if (names.size() > k_max) {
    text += fmt::format(" and {} more", names.size() - k_max);
  }
  return text;
}

// The services answer for the object asked for; a record for another one (a corrupted cache, a
// proxy mixing up answers, a hostile service) must not be acted on as if it were the one asked.
void require_same(const std::string& subject, const char* field, const std::string& asked,
                  const std::string& got) {
  // UUIDs compare without regard to case: an operator may type one in upper case.
  const auto same = std::equal(
      asked.begin(), asked.end(), got.begin(), got.end(),
      [](unsigned char a, unsigned char b) { return std::tolower(a) == std::tolower(b); });
  if (!same) {
    throw Error(ExitCode::inventory, subject,
                fmt::format("asked for {} {} but the answer is for {} {}", field,
                            quoted_text(asked), field, quoted_text(got)));
  }
}

void require_same_ip(const std::string& subject, const IpRecord& record,
                     const std::string& network_uuid, const std::string& ip) {
  if (!same_ip(record.ip, ip)) {
    require_same(subject, "ip", ip, record.ip);
  }
  if (!record.network_uuid.empty()) {
    require_same(subject, "network_uuid", network_uuid, record.network_uuid);
  }
}

} // namespace

std::string url_encode(const std::string& text, std::string_view keep) {
  std::string out;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~' || keep.find(ch) != std::string_view::npos) {
      out += ch;
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

std::string describe_error_response(const http::Response& response) {
  json body;
  try {
    body = json::parse(response.body);
  } catch (const json::exception&) {
    body = nullptr;
  }
  const std::string code = body.is_object() ? string_field(body, "code") : "";
  const std::string message = body.is_object() ? string_field(body, "message") : "";
  if (code.empty() && message.empty()) {
    std::string text = fmt::format("{}", response.status);
    if (*reason_phrase(response.status) != '\0') {
      text += fmt::format(" {}", reason_phrase(response.status));
    }
    const std::string start = one_line(response.body, 200);
    if (!start.empty()) {
      text += ": " + start;
    }
    return text;
  }
  std::string text = fmt::format("{} {}", response.status, code.empty() ? "Error" : code);
  if (!message.empty()) {
    text += ": " + message;
  }
  // ValidationFailed/InvalidParameters list the offending fields; name them.
  const auto errors = body.find("errors");
  if (errors != body.end() && errors->is_array() && !errors->empty()) {
    std::string details;
    for (const json& e : *errors) {
      if (!e.is_object()) {
        continue;
      }
      const std::string field = string_field(e, "field");
      const std::string detail =
          string_field(e, "message").empty() ? string_field(e, "code") : string_field(e, "message");
      details += (details.empty() ? "" : "; ") + (field.empty() ? detail : field + ": " + detail);
    }
    if (!details.empty()) {
      text += " (" + details + ")";
    }
  }
  return text;
}

HttpInventory::HttpInventory(http::Client& client, Endpoints endpoints)
    : m_client(client), m_endpoints(std::move(endpoints)) {}

HttpInventory::Service HttpInventory::vmapi() const {
  return {"VMAPI", m_endpoints.vmapi};
}
HttpInventory::Service HttpInventory::cnapi() const {
  return {"CNAPI", m_endpoints.cnapi};
}
HttpInventory::Service HttpInventory::napi() const {
  return {"NAPI", m_endpoints.napi};
}
HttpInventory::Service HttpInventory::imgapi() const {
  return {"IMGAPI", m_endpoints.imgapi};
}

std::optional<json> HttpInventory::call(const Service& service, const std::string& method,
                                        const std::string& path, const std::optional<json>& body,
                                        Missing missing) {
  if (service.base.empty()) {
    std::string lower = service.name;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    throw ConfigError(service.name + " URL",
                      fmt::format("not configured; set {}_URL or \"{}_url\" in the configuration "
                                  "file",
                                  service.name, lower));
  }
  http::Request request;
  request.method = method;
  request.url = service.base + path;
  request.service = service.name;
  request.idempotent = method == "GET" || method == "PUT" || method == "DELETE" || method == "HEAD";
  if (body) {
    request.body = body->dump();
  }
  const http::Response response = m_client.perform(request);
  const std::string subject = fmt::format("{} {} {}", service.name, method, path);

  if (response.status >= 200 && response.status < 300) {
    if (response.body.empty()) {
      return json(nullptr);
    }
    try {
      return json::parse(response.body);
    } catch (const json::exception& e) {
      throw Error(ExitCode::inventory, subject,
                  fmt::format("malformed JSON from {}: {}", request.url, json_error_text(e)));
    }
  }

  const std::string why = describe_error_response(response);
  if (response.status == 404) {
    json error_body;
    try {
      error_body = json::parse(response.body);
    } catch (const json::exception&) {
      error_body = nullptr;
    }
    if (error_body.is_object() && route_missing(error_body, path) &&
        missing != Missing::route_too) {
      throw Error(ExitCode::inventory, subject,
                  fmt::format("{}; check that {}_URL ({}) points at {}", why, service.name,
                              service.base, service.name));
    }
    if (missing != Missing::is_error) {
      return std::nullopt;
    }
    throw NotFoundError(subject, why);
  }
  if (response.status == 429 || response.status == 502 || response.status == 503 ||
      response.status == 504) {
    throw TransientError(ExitCode::inventory, subject, why);
  }
  throw Error(ExitCode::inventory, subject, why);
}

std::optional<Vm> HttpInventory::find_vm(const std::string& uuid, bool sync) {
  const std::string path = "/vms/" + url_encode(uuid) + (sync ? "?sync=true" : "");
  const std::optional<json> body = call(vmapi(), "GET", path, std::nullopt, Missing::is_nullopt);
  if (!body) {
    return std::nullopt;
  }
  Vm vm = parse_vm(*body);
  require_same("VMAPI GET " + path, "uuid", uuid, vm.uuid);
  return vm;
}

std::vector<Vm> HttpInventory::list_vms(const std::string& server_uuid, const std::string& state) {
  std::vector<Vm> vms;
  std::set<std::string> seen;
  for (std::size_t offset = 0;; offset += k_page_size) {
    std::vector<std::pair<std::string, std::string>> params;
    if (!server_uuid.empty()) {
      params.emplace_back("server_uuid", server_uuid);
    }
    if (!state.empty()) {
      params.emplace_back("state", state);
    }
    params.emplace_back("limit", std::to_string(k_page_size));
    params.emplace_back("offset", std::to_string(offset));
    const std::string path = "/vms" + query(params);
    const json page = *call(vmapi(), "GET", path, std::nullopt, Missing::is_error);
    if (!page.is_array()) {
      throw Error(ExitCode::inventory, "VMAPI GET " + path,
                  fmt::format("expected a JSON array, got {}", page.type_name()));
    }
    std::size_t added = 0;
    for (const json& j : page) {
      Vm vm = parse_vm(j);
      // A VMAPI that ignores the filter lists every VM: never take another server's for ours.
      if (!server_uuid.empty()) {
        require_same("VMAPI GET " + path, "server_uuid", server_uuid, vm.server_uuid);
      }
      if (seen.insert(vm.uuid).second) {
        vms.push_back(std::move(vm));
        ++added;
      }
    }
    // A short page is the last; a page of known VMs means the service ignores `offset`.
    if (page.size() < k_page_size || added == 0) {
      break;
    }
  }
  return vms;
}

Vm HttpInventory::put_vm(const std::string& uuid, const json& body) {
  const std::string path = "/vms/" + url_encode(uuid);
  const json answer = *call(vmapi(), "PUT", path, body, Missing::is_error);
  if (answer.is_object()) {
    Vm vm = parse_vm(answer);
    require_same("VMAPI PUT " + path, "uuid", uuid, vm.uuid);
    return vm;
  }
  std::optional<Vm> stored = find_vm(uuid);
  if (!stored) {
    throw NotFoundError("VMAPI PUT " + path, "VMAPI accepted the update but has no such VM");
  }
  return *stored;
}

std::vector<Server> HttpInventory::list_servers() {
  std::vector<Server> servers;
  std::set<std::string> seen;
  for (std::size_t offset = 0;; offset += k_page_size) {
    const std::string path = "/servers" + query({{"extras", "sysinfo,memory,disk,capacity"},
                                                 {"limit", std::to_string(k_page_size)},
                                                 {"offset", std::to_string(offset)}});
    const json page = *call(cnapi(), "GET", path, std::nullopt, Missing::is_error);
    if (!page.is_array()) {
      throw Error(ExitCode::inventory, "CNAPI GET " + path,
                  fmt::format("expected a JSON array, got {}", page.type_name()));
    }
    std::size_t added = 0;
    for (const json& j : page) {
      Server s = parse_server(j);
      if (seen.insert(s.uuid).second) {
        servers.push_back(std::move(s));
        ++added;
      }
    }
    if (page.size() < k_page_size || added == 0) {
      break;
    }
  }
  return servers;
}

Server HttpInventory::resolve_server(const std::string& uuid_or_hostname) {
  const std::string subject = fmt::format("compute node \"{}\"", uuid_or_hostname);
  if (uuid_or_hostname.empty()) {
    throw UsageError("compute node", "empty name; give a CNAPI server UUID or hostname");
  }
  if (is_uuid(uuid_or_hostname)) {
    const std::string path = "/servers/" + url_encode(uuid_or_hostname);
    const std::optional<json> body = call(cnapi(), "GET", path, std::nullopt, Missing::is_nullopt);
    if (body) {
      Server s = parse_server(*body);
      require_same("CNAPI GET " + path, "uuid", uuid_or_hostname, s.uuid);
      return s;
    }
    throw NotFoundError(subject,
                        "no CNAPI server has this UUID; " + server_list_text(list_servers()));
  }

  const std::string path = "/servers" + query({{"hostname", uuid_or_hostname},
                                               {"extras", "sysinfo,memory,disk,capacity"}});
  const json page = *call(cnapi(), "GET", path, std::nullopt, Missing::is_error);
  if (!page.is_array()) {
    throw Error(ExitCode::inventory, "CNAPI GET " + path,
                fmt::format("expected a JSON array, got {}", page.type_name()));
  }
  // Matched here as well: a CNAPI that ignores the filter returns every server.
  std::vector<Server> matches;
  for (const json& j : page) {
    Server s = parse_server(j);
    if (s.hostname == uuid_or_hostname) {
      matches.push_back(std::move(s));
    }
  }
  if (matches.size() == 1) {
    return std::move(matches.front());
  }
  if (matches.empty()) {
    throw NotFoundError(subject,
                        "no CNAPI server has this hostname; " + server_list_text(list_servers()));
  }
  std::string uuids;
  for (const Server& s : matches) {
    uuids += (uuids.empty() ? "" : ", ") + s.uuid;
  }
  throw PreconditionError(subject, fmt::format("{} CNAPI servers have this hostname ({}); name "
                                               "the compute node by UUID",
                                               matches.size(), uuids));
}

IpRecord HttpInventory::get_ip(const std::string& network_uuid, const std::string& ip) {
  const std::string path = "/networks/" + url_encode(network_uuid) + "/ips/" + url_encode(ip);
  IpRecord record = parse_ip(*call(napi(), "GET", path, std::nullopt, Missing::is_error));
  require_same_ip("NAPI GET " + path, record, network_uuid, ip);
  if (record.network_uuid.empty()) {
    record.network_uuid = network_uuid;
  }
  return record;
}

IpRecord HttpInventory::set_ip_reserved(const std::string& network_uuid, const std::string& ip,
                                        bool reserved) {
  const std::string path = "/networks/" + url_encode(network_uuid) + "/ips/" + url_encode(ip);
  IpRecord record =
      parse_ip(*call(napi(), "PUT", path, json{{"reserved", reserved}}, Missing::is_error));
  require_same_ip("NAPI PUT " + path, record, network_uuid, ip);
  if (record.network_uuid.empty()) {
    record.network_uuid = network_uuid;
  }
  return record;
}

std::optional<Image> HttpInventory::find_image(const std::string& uuid) {
  const std::optional<json> body =
      call(imgapi(), "GET", "/images/" + url_encode(uuid), std::nullopt, Missing::is_nullopt);
  if (!body) {
    return std::nullopt;
  }
  Image image = parse_image(*body);
  require_same("IMGAPI GET /images/" + url_encode(uuid), "uuid", uuid, image.uuid);
  return image;
}

std::optional<json> HttpInventory::find_triton_migration(const std::string& vm_uuid) {
  const std::string path = "/migrations/" + url_encode(vm_uuid) + "?format=raw";
  std::optional<json> body = call(vmapi(), "GET", path, std::nullopt, Missing::route_too);
  if (!body) {
    return std::nullopt;
  }
  if (!body->is_object()) {
    throw Error(ExitCode::inventory, "VMAPI GET " + path,
                fmt::format("expected a migration object, got {}", body->type_name()));
  }
  return body;
}

} // namespace zmigrate::inventory
