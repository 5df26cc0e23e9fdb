// SPDX-License-Identifier: MPL-2.0
#include "fakes/fake_http.hpp"

#include <zmigrate/inventory/http_inventory.hpp>
#include <zmigrate/util/error.hpp>

#include <cctype>
#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>
#include <fmt/format.h>

using nlohmann::json;
using namespace zmigrate;
using namespace zmigrate::inventory;
using zmigrate::fakes::FakeHttp;

namespace {

const std::string k_vm = "ef375f03-57ca-44a9-bc8d-63aec09fbc37";
const std::string k_cn1 = "564d0000-0000-4000-8000-000000000001";
const std::string k_cn2 = "564d0000-0000-4000-8000-000000000002";
const std::string k_net = "b330e2a1-6260-41a8-8567-a8a011f202f1";
const std::string k_servers_query = "?extras=sysinfo,memory,disk,capacity&limit=1000&offset=0";

std::string fixture_text(const std::string& name) {
  std::ifstream in(std::string(ZMIGRATE_FIXTURES_DIR) + "/" + name);
  REQUIRE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Endpoints endpoints() {
  return {"http://vmapi.test", "http://cnapi.test", "http://napi.test", "http://imgapi.test"};
}

json server_json(const std::string& uuid, const std::string& hostname) {
  return {{"uuid", uuid}, {"hostname", hostname}, {"status", "running"}, {"setup", true}};
}

// The error `f` throws, as "<what>: <why>", with its type checked.
template <typename E, typename F> std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  FAIL("no exception of the expected type");
  return "";
}

} // namespace

TEST_CASE("inventory::HttpInventory::find_vm", "[inventory]") {
  FakeHttp http;
  HttpInventory inv(http, endpoints());
  const std::string url = "http://vmapi.test/vms/" + k_vm;

  SECTION("200: parsed VM; GET, idempotent, service named") {
    http.on("GET", url, 200, fixture_text("vmapi-vm-joyent-zone.json"));
    const std::optional<Vm> vm = inv.find_vm(k_vm);
    REQUIRE(vm);
    CHECK(vm->alias == "assets1");
    REQUIRE(http.requests.size() == 1);
    CHECK(http.requests[0].method == "GET");
    CHECK(http.requests[0].service == "VMAPI");
    CHECK(http.requests[0].idempotent);
    CHECK_FALSE(http.requests[0].body);
  }
  SECTION("sync=true") {
    http.on("GET", url + "?sync=true", 200, fixture_text("vmapi-vm-joyent-zone.json"));
    CHECK(inv.find_vm(k_vm, true));
    CHECK(http.request_lines() == std::vector<std::string>{"GET " + url + "?sync=true"});
  }
  SECTION("404 VM not found: nullopt") {
    http.on_error("GET", url, 404, "ResourceNotFound", "VM not found");
    CHECK_FALSE(inv.find_vm(k_vm));
  }
  SECTION("404 for the route: the URL is wrong, not the VM") {
    http.on("GET", url, 404, fixture_text("vmapi-error-resourcenotfound.json"));
    const std::string what = error_of<Error>([&] { inv.find_vm(k_vm); });
    CHECK_THAT(what, Catch::Contains("404 ResourceNotFound: Route does not exist") &&
                         Catch::Contains("VMAPI_URL (http://vmapi.test) points at VMAPI"));
  }
  SECTION("500: Error(inventory) quoting the body") {
    http.on_error("GET", url, 500, "InternalError", "moray is down");
    try {
      inv.find_vm(k_vm);
      FAIL("no throw");
    } catch (const TransientError&) {
      FAIL("500 is not transient");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::inventory);
      CHECK(e.subject() == "VMAPI GET /vms/" + k_vm);
      CHECK(e.reason() == "500 InternalError: moray is down");
      CHECK(std::string(e.what()) ==
            "VMAPI GET /vms/" + k_vm + ": 500 InternalError: moray is down");
    }
  }
  SECTION("503: TransientError") {
    http.on_error("GET", url, 503, "ServiceUnavailable", "Workflow API is unavailable");
    const std::string what = error_of<TransientError>([&] { inv.find_vm(k_vm); });
    CHECK(what ==
          "VMAPI GET /vms/" + k_vm + ": 503 ServiceUnavailable: Workflow API is unavailable");
  }
  SECTION("docs-verbatim VM (trailing comma): malformed JSON naming the URL and the place") {
    http.on("GET", url, 200, fixture_text("vmapi-vm-joyent-zone.docs-verbatim.txt"));
    try {
      inv.find_vm(k_vm);
      FAIL("no throw");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::inventory);
      CHECK(e.subject() == "VMAPI GET /vms/" + k_vm);
      CHECK_THAT(e.reason(), Catch::StartsWith("malformed JSON from " + url + ": ") &&
                                 Catch::Contains("line 53") && !Catch::Contains("json.exception"));
    }
  }
  SECTION("HTML instead of JSON") {
    http.on("GET", url, 200, "<html><body>It works!</body></html>");
    CHECK_THROWS_WITH(inv.find_vm(k_vm), Catch::Contains("malformed JSON from " + url));
  }
  SECTION("a VM payload with a malformed field") {
    http.on_json("GET", url, 200, {{"uuid", k_vm}, {"ram", {1, 2}}});
    CHECK_THROWS_WITH(inv.find_vm(k_vm), Catch::Contains("\"ram\""));
  }
  SECTION("no response: the client's TransientError passes through") {
    http.fail("GET", url,
              "Connection refused; check that the service is up and VMAPI_URL is right");
    CHECK_THROWS_AS(inv.find_vm(k_vm), TransientError);
  }
  SECTION("an answer for another VM: Error(inventory) naming both uuids") {
    const std::string other = "00000000-0000-4000-8000-0000000000aa";
    http.on_json("GET", url, 200, {{"uuid", other}, {"brand", "joyent"}});
    const std::string what = error_of<Error>([&] { inv.find_vm(k_vm); });
    CHECK(what == "VMAPI GET /vms/" + k_vm + ": asked for uuid \"" + k_vm +
                      "\" but the answer is for uuid \"" + other + "\"");
    try {
      inv.find_vm(k_vm);
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::inventory);
    }
  }
  SECTION("the uuid asked in upper case matches VMAPI's lower case") {
    std::string upper = k_vm;
    for (char& c : upper) {
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    http.on_json("GET", "http://vmapi.test/vms/" + upper, 200, {{"uuid", k_vm}});
    CHECK(inv.find_vm(upper)->uuid == k_vm);
  }
  SECTION("path segments are encoded") {
    http.on_error("GET", "http://vmapi.test/vms/a%2Fb%20c", 404, "ResourceNotFound",
                  "VM not found");
    CHECK_FALSE(inv.find_vm("a/b c"));
  }
}

TEST_CASE("inventory::HttpInventory::list_vms", "[inventory]") {
  FakeHttp http;
  HttpInventory inv(http, endpoints());
  const std::string base =
      "http://vmapi.test/vms?server_uuid=" + k_cn1 + "&state=active&limit=1000";
  auto page = [](std::size_t first, std::size_t count) {
    json vms = json::array();
    for (std::size_t i = first; i < first + count; ++i) {
      const std::string uuid = fmt::format("00000000-0000-4000-8000-{:012}", i);
      vms.push_back(
          {{"uuid", uuid}, {"brand", "joyent"}, {"state", "running"}, {"server_uuid", k_cn1}});
    }
    return vms;
  };

  SECTION("one short page") {
    http.on_json("GET", base + "&offset=0", 200, page(0, 3));
    CHECK(inv.list_vms(k_cn1, "active").size() == 3);
    CHECK(http.requests.size() == 1);
  }
  SECTION("pages with limit/offset until a short page") {
    http.on_json("GET", base + "&offset=0", 200, page(0, 1000));
    http.on_json("GET", base + "&offset=1000", 200, page(1000, 1000));
    http.on_json("GET", base + "&offset=2000", 200, page(2000, 7));
    const std::vector<Vm> vms = inv.list_vms(k_cn1, "active");
    CHECK(vms.size() == 2007);
    CHECK(vms.back().uuid == "00000000-0000-4000-8000-000000002006");
    CHECK(http.request_lines() == std::vector<std::string>{"GET " + base + "&offset=0",
                                                           "GET " + base + "&offset=1000",
                                                           "GET " + base + "&offset=2000"});
  }
  SECTION("a service that ignores offset: stops instead of looping") {
    http.on_json("GET", base + "&offset=0", 200, page(0, 1000));
    http.on_json("GET", base + "&offset=1000", 200, page(0, 1000));
    CHECK(inv.list_vms(k_cn1, "active").size() == 1000);
    CHECK(http.requests.size() == 2);
  }
  SECTION("a VM of another server in a filtered list (filter ignored): Error naming both") {
    json vms = page(0, 2);
    vms[1]["server_uuid"] = k_cn2;
    http.on_json("GET", base + "&offset=0", 200, vms);
    const std::string what = error_of<Error>([&] { inv.list_vms(k_cn1, "active"); });
    CHECK_THAT(what, Catch::Contains("asked for server_uuid \"" + k_cn1 +
                                     "\" but the answer is for server_uuid \"" + k_cn2 + "\""));
  }
  SECTION("no filters") {
    http.on_json("GET", "http://vmapi.test/vms?limit=1000&offset=0", 200, json::array());
    CHECK(inv.list_vms("", "").empty());
  }
  SECTION("not an array") {
    http.on_json("GET", base + "&offset=0", 200, json::object());
    CHECK_THROWS_WITH(inv.list_vms(k_cn1, "active"),
                      Catch::Contains("expected a JSON array, got object"));
  }
}

TEST_CASE("inventory::HttpInventory::put_vm", "[inventory]") {
  FakeHttp http;
  HttpInventory inv(http, endpoints());
  const std::string url = "http://vmapi.test/vms/" + k_vm;
  const json body = {{"uuid", k_vm}, {"server_uuid", k_cn2}, {"state", "running"}};

  SECTION("PUT with the body; returns what VMAPI stored") {
    http.on_json("PUT", url, 200, body);
    const Vm vm = inv.put_vm(k_vm, body);
    CHECK(vm.server_uuid == k_cn2);
    REQUIRE(http.requests.size() == 1);
    CHECK(http.requests[0].method == "PUT");
    REQUIRE(http.requests[0].body);
    CHECK(json::parse(*http.requests[0].body) == body);
    CHECK(http.requests[0].idempotent);
  }
  SECTION("the stored answer is another VM: Error naming both") {
    json other = body;
    other["uuid"] = "00000000-0000-4000-8000-0000000000aa";
    http.on_json("PUT", url, 200, other);
    CHECK_THROWS_WITH(inv.put_vm(k_vm, body),
                      Catch::Contains(k_vm) &&
                          Catch::Contains("00000000-0000-4000-8000-0000000000aa"));
  }
  SECTION("empty answer: read back") {
    http.on("PUT", url, 204, "");
    http.on_json("GET", url, 200, body);
    CHECK(inv.put_vm(k_vm, body).server_uuid == k_cn2);
    CHECK(http.request_lines() == std::vector<std::string>{"PUT " + url, "GET " + url});
  }
  SECTION("409 ValidationFailed: every field quoted") {
    http.on("PUT", url, 409, fixture_text("vmapi-error-validationfailed.json"));
    CHECK_THROWS_WITH(inv.put_vm(k_vm, body),
                      "VMAPI PUT /vms/" + k_vm +
                          ": 409 ValidationFailed: Invalid VM parameters (image_uuid: "
                          "'image_uuid' is not allowed as a top level attribute for a KVM VM)");
  }
}

TEST_CASE("inventory::HttpInventory::list_servers", "[inventory]") {
  FakeHttp http;
  HttpInventory inv(http, endpoints());
  http.on("GET", "http://cnapi.test/servers" + k_servers_query, 200,
          "[" + fixture_text("cnapi-server.json") + "]");
  const std::vector<Server> servers = inv.list_servers();
  REQUIRE(servers.size() == 1);
  CHECK(servers[0].hostname == "headnode");
  CHECK(servers[0].admin_ip == "10.99.99.7");
  CHECK(http.requests[0].service == "CNAPI");
}

TEST_CASE("inventory::HttpInventory::resolve_server", "[inventory]") {
  FakeHttp http;
  HttpInventory inv(http, endpoints());
  const std::string by_name =
      "http://cnapi.test/servers?hostname=cn1&extras=sysinfo,memory,disk,capacity";
  const std::string all = "http://cnapi.test/servers" + k_servers_query;

  SECTION("by UUID") {
    http.on_json("GET", "http://cnapi.test/servers/" + k_cn1, 200, server_json(k_cn1, "cn1"));
    CHECK(inv.resolve_server(k_cn1).hostname == "cn1");
  }
  SECTION("by UUID, the answer for another server: Error(inventory) naming both") {
    http.on_json("GET", "http://cnapi.test/servers/" + k_cn1, 200, server_json(k_cn2, "cn2"));
    const std::string what = error_of<Error>([&] { inv.resolve_server(k_cn1); });
    CHECK(what == "CNAPI GET /servers/" + k_cn1 + ": asked for uuid \"" + k_cn1 +
                      "\" but the answer is for uuid \"" + k_cn2 + "\"");
  }
  SECTION("unknown UUID: NotFoundError listing the known compute nodes") {
    http.on_error("GET", "http://cnapi.test/servers/" + k_cn1, 404, "ResourceNotFound",
                  "Server not found");
    http.on_json("GET", all, 200, json::array({server_json(k_cn2, "cn2")}));
    CHECK(error_of<NotFoundError>([&] { inv.resolve_server(k_cn1); }) ==
          "compute node \"" + k_cn1 +
              "\": no CNAPI server has this UUID; known compute nodes: "
              "cn2 (" +
              k_cn2 + ")");
  }
  SECTION("by hostname") {
    http.on_json("GET", by_name, 200, json::array({server_json(k_cn1, "cn1")}));
    const Server s = inv.resolve_server("cn1");
    CHECK(s.uuid == k_cn1);
  }
  SECTION("by hostname, CNAPI ignoring the filter: matched here") {
    http.on_json("GET", by_name, 200,
                 json::array({server_json(k_cn2, "cn2"), server_json(k_cn1, "cn1")}));
    CHECK(inv.resolve_server("cn1").uuid == k_cn1);
  }
  SECTION("unknown hostname: NotFoundError listing hostnames") {
    http.on_json("GET", by_name, 200, json::array());
    http.on_json("GET", all, 200,
                 json::array({server_json(k_cn2, "cn2"), server_json(k_cn1, "cn1x")}));
    CHECK(error_of<NotFoundError>([&] { inv.resolve_server("cn1"); }) ==
          "compute node \"cn1\": no CNAPI server has this hostname; known compute nodes: "
          "cn1x (" +
              k_cn1 + "), cn2 (" + k_cn2 + ")");
  }
  SECTION("ambiguous hostname: PreconditionError naming both UUIDs") {
    http.on_json("GET", by_name, 200,
                 json::array({server_json(k_cn1, "cn1"), server_json(k_cn2, "cn1")}));
    const std::string what = error_of<PreconditionError>([&] { inv.resolve_server("cn1"); });
    CHECK_THAT(what, Catch::Contains("2 CNAPI servers have this hostname") &&
                         Catch::Contains(k_cn1) && Catch::Contains(k_cn2) &&
                         Catch::Contains("by UUID"));
  }
  SECTION("empty name") {
    CHECK_THROWS_AS(inv.resolve_server(""), UsageError);
  }
}

TEST_CASE("inventory::HttpInventory NAPI IPs", "[inventory]") {
  FakeHttp http;
  HttpInventory inv(http, endpoints());
  const std::string url = "http://napi.test/networks/" + k_net + "/ips/10.99.99.77";

  SECTION("get_ip") {
    http.on("GET", "http://napi.test/networks/" + k_net + "/ips/10.88.88.106", 200,
            fixture_text("napi-ip.json"));
    const IpRecord r = inv.get_ip(k_net, "10.88.88.106");
    CHECK(r.belongs_to_uuid == "0e56fe34-39a3-42d5-86c7-d719487f892b");
    CHECK(http.requests[0].service == "NAPI");
  }
  SECTION("get_ip: the answer for another ip or network is an Error naming both") {
    http.on_json("GET", url, 200, {{"ip", "10.99.99.78"}, {"network_uuid", k_net}});
    http.on_json("GET", url, 200, {{"ip", "10.99.99.77"}, {"network_uuid", k_cn1}});
    CHECK(error_of<Error>([&] { inv.get_ip(k_net, "10.99.99.77"); }) ==
          "NAPI GET /networks/" + k_net +
              "/ips/10.99.99.77: asked for ip \"10.99.99.77\" but the answer is for ip "
              "\"10.99.99.78\"");
    CHECK_THAT(error_of<Error>([&] { inv.get_ip(k_net, "10.99.99.77"); }),
               Catch::EndsWith("asked for network_uuid \"" + k_net +
                               "\" but the answer is for network_uuid \"" + k_cn1 + "\""));
  }
  SECTION("get_ip: IPv6 written differently is the same address") {
    http.on_json("GET", "http://napi.test/networks/" + k_net + "/ips/fd00%3A%3A5", 200,
                 {{"ip", "fd00:0:0::5"}, {"network_uuid", k_net}});
    CHECK(inv.get_ip(k_net, "fd00::5").ip == "fd00:0:0::5");
  }
  SECTION("set_ip_reserved: the answer for another ip is an Error") {
    http.on_json("PUT", url, 200, {{"ip", "10.99.99.1"}, {"reserved", true}});
    CHECK_THROWS_WITH(inv.set_ip_reserved(k_net, "10.99.99.77", true),
                      Catch::Contains("asked for ip \"10.99.99.77\"") &&
                          Catch::Contains("\"10.99.99.1\""));
  }
  SECTION("get_ip: 404 is NotFoundError quoting NAPI") {
    http.on_error("GET", url, 404, "ResourceNotFound", "network not found");
    CHECK(error_of<NotFoundError>([&] { inv.get_ip(k_net, "10.99.99.77"); }) ==
          "NAPI GET /networks/" + k_net +
              "/ips/10.99.99.77: 404 ResourceNotFound: network not "
              "found");
  }
  SECTION("set_ip_reserved: PUT {reserved}; network_uuid filled in") {
    http.on("PUT", url, 200, fixture_text("napi-ip-reserve-response.json"));
    const IpRecord r = inv.set_ip_reserved(k_net, "10.99.99.77", true);
    CHECK(r.reserved);
    CHECK_FALSE(r.free);
    CHECK(r.network_uuid == k_net);
    REQUIRE(http.requests.size() == 1);
    CHECK(http.requests[0].method == "PUT");
    CHECK(json::parse(*http.requests[0].body) == json{{"reserved", true}});
  }
  SECTION("set_ip_reserved false; 422 quoted") {
    http.on_error("PUT", url, 422, "InvalidParameters", "Invalid parameters");
    CHECK_THROWS_WITH(inv.set_ip_reserved(k_net, "10.99.99.77", false),
                      Catch::EndsWith(": 422 InvalidParameters: Invalid parameters"));
    CHECK(json::parse(*http.requests[0].body) == json{{"reserved", false}});
  }
}

TEST_CASE("inventory::HttpInventory::find_image", "[inventory]") {
  FakeHttp http;
  HttpInventory inv(http, endpoints());
  const std::string uuid = "01b2c898-945f-11e1-a523-af1afbe22822";
  SECTION("found") {
    http.on("GET", "http://imgapi.test/images/" + uuid, 200, fixture_text("imgapi-image.json"));
    const std::optional<Image> image = inv.find_image(uuid);
    REQUIRE(image);
    CHECK(image->name == "smartos");
    CHECK(http.requests[0].service == "IMGAPI");
  }
  SECTION("the answer for another image: Error naming both") {
    json other = json::parse(fixture_text("imgapi-image.json"));
    other["uuid"] = "00000000-0000-4000-8000-0000000000bb";
    http.on_json("GET", "http://imgapi.test/images/" + uuid, 200, other);
    CHECK_THROWS_WITH(inv.find_image(uuid),
                      Catch::Contains(uuid) && Catch::Contains("00000000-0000-4000-8000-"
                                                               "0000000000bb"));
  }
  SECTION("404: nullopt") {
    http.on_error("GET", "http://imgapi.test/images/" + uuid, 404, "ResourceNotFound",
                  "image not found");
    CHECK_FALSE(inv.find_image(uuid));
  }
}

TEST_CASE("inventory::HttpInventory without an endpoint", "[inventory]") {
  FakeHttp http;
  Endpoints e = endpoints();
  e.napi.clear();
  HttpInventory inv(http, e);
  CHECK(error_of<ConfigError>([&] { inv.get_ip(k_net, "10.0.0.1"); }) ==
        "NAPI URL: not configured; set NAPI_URL or \"napi_url\" in the configuration file");
  CHECK(http.requests.empty());
}

TEST_CASE("inventory::describe_error_response", "[inventory]") {
  auto describe = [](long status, std::string body) {
    return describe_error_response(http::Response{status, {}, std::move(body)});
  };
  CHECK(describe(404, fixture_text("vmapi-error-resourcenotfound.json")) ==
        "404 ResourceNotFound: Route does not exist");
  CHECK(describe(409, fixture_text("vmapi-error-validationfailed.json")) ==
        "409 ValidationFailed: Invalid VM parameters (image_uuid: 'image_uuid' is not allowed "
        "as a top level attribute for a KVM VM)");
  CHECK(describe(502, "<html>\n<b>Bad gateway</b>\n</html>\n") ==
        "502 Bad Gateway: <html> <b>Bad gateway</b> </html>");
  CHECK(describe(503, "") == "503 Service Unavailable");
  CHECK(describe(418, "") == "418");
  CHECK(describe(500, R"({"message":"no code"})") == "500 Error: no code");
  CHECK(describe(500, std::string(500, 'x')) ==
        "500 Internal Server Error: " + std::string(200, 'x') + "...");
}

TEST_CASE("inventory::url_encode", "[inventory]") {
  CHECK(url_encode("abc-XYZ_0.9~") == "abc-XYZ_0.9~");
  CHECK(url_encode("a/b c?d&e=f") == "a%2Fb%20c%3Fd%26e%3Df");
  CHECK(url_encode("fd00::1") == "fd00%3A%3A1");
  CHECK(url_encode("a,b") == "a%2Cb");
  CHECK(url_encode("a,b", ",") == "a,b");
}

TEST_CASE("inventory::HttpInventory::find_triton_migration", "[inventory]") {
  FakeHttp http;
  HttpInventory inv(http, endpoints());
  const std::string url = "http://vmapi.test/migrations/" + k_vm + "?format=raw";
  SECTION("200: the raw record") {
    http.on("GET", url, 200, fixture_text("vmapi-migration-raw.json"));
    const std::optional<json> m = inv.find_triton_migration(k_vm);
    REQUIRE(m);
    CHECK((*m)["id"] == "7d8a6e2c-1f4b-4c3e-9a5d-2b6c8e0f1a33");
    CHECK((*m)["phase"] == "sync");
  }
  SECTION("404 migration not found: none") {
    http.on_json("GET", url, 404,
                 {{"code", "ResourceNotFound"}, {"message", "migration not found"}});
    CHECK_FALSE(inv.find_triton_migration(k_vm));
  }
  SECTION("404 without the route (a VMAPI from before migrations): none") {
    http.on_json("GET", url, 404,
                 {{"code", "ResourceNotFound"}, {"message", "Route does not exist"}});
    CHECK_FALSE(inv.find_triton_migration(k_vm));
  }
  SECTION("503: cannot tell, so an error (never taken for none)") {
    http.on_json("GET", url, 503, {{"code", "ServiceUnavailable"}, {"message", "down"}});
    CHECK_THROWS_AS(inv.find_triton_migration(k_vm), Error);
  }
  SECTION("not an object: an error") {
    http.on("GET", url, 200, "[]");
    CHECK_THROWS_WITH(inv.find_triton_migration(k_vm),
                      Catch::Contains("expected a migration object"));
  }
}
