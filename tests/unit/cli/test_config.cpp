// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/cli/config.hpp>
#include <zmigrate/util/error.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>

using nlohmann::json;
using namespace zmigrate;
using namespace zmigrate::cli;
namespace fs = std::filesystem;

namespace {

// In-memory inputs: files by path, a scripted discovery that counts its calls.
struct Inputs {
  std::map<std::string, std::string> flags;
  std::map<std::string, std::string> env;
  std::map<std::string, std::string> files;
  std::optional<Discovery> discovery; // nullopt: not a head node
  int discover_calls = 0;

  Config load() {
    ConfigInputs in;
    in.flags = flags;
    in.env = env;
    in.read_file = [this](const std::string& path) -> std::optional<std::string> {
      const auto it = files.find(path);
      if (it == files.end()) {
        return std::nullopt;
      }
      return it->second;
    };
    in.discover = [this] {
      ++discover_calls;
      return discovery.value_or(Discovery{});
    };
    return load_config(in);
  }
};

Discovery head_node(json values) {
  return Discovery{std::move(values), ""};
}

template <typename F> std::string config_error(F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    CHECK(e.exit_code() == ExitCode::config);
    return e.what();
  }
  FAIL("no ConfigError");
  return "";
}

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "zmigrate-config-test-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() { fs::remove_all(path); }
  std::string write(const std::string& name, const std::string& text, bool executable = false) {
    const fs::path p = path / name;
    std::ofstream(p) << text;
    if (executable) {
      fs::permissions(p, fs::perms::owner_all);
    }
    return p.string();
  }
};

const char* const k_lab_file = R"({
  "vmapi_url": "http://10.99.0.1:18081",
  "cnapi_url": "http://10.99.0.1:18082",
  "napi_url": "http://10.99.0.1:18083",
  "imgapi_url": "http://10.99.0.1:18084",
  "state_dir": "/var/tmp/zmigrate-lab/zmlab/state",
  "log_dir": "/var/tmp/zmigrate-lab/zmlab/log",
  "ssh": {"identity": "/var/tmp/zmigrate-lab/zmlab/operator_key",
          "known_hosts": "/var/tmp/zmigrate-lab/zmlab/known_hosts", "user": "root", "port": 22},
  "rate_mb_s": 35.5,
  "converge_bytes": 1048576,
  "max_syncs": 3,
  "streams": 2
})";

} // namespace

TEST_CASE("cli::load_config defaults", "[cli]") {
  Inputs in;
  const Config c = in.load();
  CHECK(c.endpoints.vmapi.empty());
  CHECK(c.endpoints.cnapi.empty());
  CHECK(c.endpoints.napi.empty());
  CHECK(c.endpoints.imgapi.empty());
  CHECK(c.state_dir == "/var/lib/zmigrate");
  CHECK(c.log_dir == "/var/log/zmigrate");
  CHECK(c.ssh.user == "root");
  CHECK(c.ssh.identity.empty());
  CHECK(c.ssh.known_hosts.empty());
  CHECK(c.ssh.port == 22);
  CHECK(c.ssh.connect_timeout_s == 10);
  CHECK(c.http.connect_timeout == std::chrono::milliseconds(5000));
  CHECK(c.http.request_timeout == std::chrono::milliseconds(30000));
  CHECK(c.http.max_attempts == 4);
  CHECK(c.http.verify_tls);
  CHECK(c.rate_mb_s == 20);
  CHECK(c.converge_bytes == 64ULL * 1024 * 1024);
  CHECK(c.max_syncs == 6);
  CHECK(c.streams == 4);
  CHECK(c.config_file == "/etc/zmigrate/config.json");
  CHECK_FALSE(c.config_file_read);
  CHECK(c.sources.at("vmapi_url") == "default");
  CHECK(c.sources.at("ssh.port") == "default");
  CHECK(in.discover_calls == 1); // URLs missing: discovery was tried
}

TEST_CASE("cli::load_config reads the lab's file format", "[cli]") {
  Inputs in;
  in.env["ZMIGRATE_CONFIG"] = "/lab/zmigrate.json";
  in.files["/lab/zmigrate.json"] = k_lab_file;
  const Config c = in.load();
  CHECK(c.config_file == "/lab/zmigrate.json");
  CHECK(c.config_file_read);
  CHECK(c.endpoints.vmapi == "http://10.99.0.1:18081");
  CHECK(c.endpoints.cnapi == "http://10.99.0.1:18082");
  CHECK(c.endpoints.napi == "http://10.99.0.1:18083");
  CHECK(c.endpoints.imgapi == "http://10.99.0.1:18084");
  CHECK(c.state_dir == "/var/tmp/zmigrate-lab/zmlab/state");
  CHECK(c.log_dir == "/var/tmp/zmigrate-lab/zmlab/log");
  CHECK(c.ssh.identity == "/var/tmp/zmigrate-lab/zmlab/operator_key");
  CHECK(c.ssh.known_hosts == "/var/tmp/zmigrate-lab/zmlab/known_hosts");
  CHECK(c.ssh.user == "root");
  CHECK(c.ssh.port == 22);
  CHECK(c.rate_mb_s == 35.5);
  CHECK(c.converge_bytes == 1048576);
  CHECK(c.max_syncs == 3);
  CHECK(c.streams == 2);
  CHECK(c.sources.at("ssh.identity") == "file /lab/zmigrate.json");
  CHECK(c.sources.at("ssh.connect_timeout_s") == "default");
  CHECK(in.discover_calls == 0); // every URL set: no subprocess
}

TEST_CASE("cli::load_config URL precedence, every combination", "[cli]") {
  // Bit 0: flag, 1: environment, 2: file, 3: head-node discovery.
  for (int mask = 0; mask < 16; ++mask) {
    CAPTURE(mask);
    Inputs in;
    json file = json::object();
    if (mask & 1) {
      in.flags["vmapi_url"] = "http://flag";
    }
    if (mask & 2) {
      in.env["VMAPI_URL"] = "http://env";
    }
    if (mask & 4) {
      file["vmapi_url"] = "http://file";
    }
    in.files["/etc/zmigrate/config.json"] = file.dump();
    if (mask & 8) {
      in.discovery = head_node({{"vmapi_domain", "vmapi.dc.example.com"}});
    }
    const Config c = in.load();
    std::string want;
    std::string source;
    if (mask & 1) {
      want = "http://flag";
      source = "flag --vmapi-url";
    } else if (mask & 2) {
      want = "http://env";
      source = "env VMAPI_URL";
    } else if (mask & 4) {
      want = "http://file";
      source = "file /etc/zmigrate/config.json";
    } else if (mask & 8) {
      want = "http://vmapi.dc.example.com";
      source = "head node (/lib/sdc/config.sh -json)";
    } else {
      source = "default";
    }
    CHECK(c.endpoints.vmapi == want);
    CHECK(c.sources.at("vmapi_url") == source);
    if (want.empty()) {
      CHECK(config_error([&] { require_endpoint(c, Service::vmapi); }) ==
            "VMAPI URL: not configured; set VMAPI_URL, \"vmapi_url\" in "
            "/etc/zmigrate/config.json, or run on a Triton head node");
    } else {
      CHECK_NOTHROW(require_endpoint(c, Service::vmapi));
    }
  }
}

TEST_CASE("cli::load_config directory precedence, every combination", "[cli]") {
  struct Key {
    const char* name;
    const char* env;
    std::string Config::*field;
    const char* fallback;
  };
  for (const Key& key :
       {Key{"state_dir", "ZMIGRATE_STATE_DIR", &Config::state_dir, "/var/lib/zmigrate"},
        Key{"log_dir", "ZMIGRATE_LOG_DIR", &Config::log_dir, "/var/log/zmigrate"}}) {
    for (int mask = 0; mask < 8; ++mask) {
      CAPTURE(key.name, mask);
      Inputs in;
      json file = json::object();
      if (mask & 1) {
        in.flags[key.name] = "/flag";
      }
      if (mask & 2) {
        in.env[key.env] = "/env";
      }
      if (mask & 4) {
        file[key.name] = "/file";
      }
      in.files["/etc/zmigrate/config.json"] = file.dump();
      const Config c = in.load();
      const std::string want = (mask & 1)   ? "/flag"
                               : (mask & 2) ? "/env"
                               : (mask & 4) ? "/file"
                                            : key.fallback;
      CHECK(c.*key.field == want);
    }
  }
}

TEST_CASE("cli::load_config other keys: flag over file over default", "[cli]") {
  Inputs in;
  in.files["/etc/zmigrate/config.json"] = k_lab_file;
  SECTION("file") {
    const Config c = in.load();
    CHECK(c.max_syncs == 3);
    CHECK(c.config_file_read);
  }
  SECTION("flags") {
    in.flags = {
        {"ssh.user", "admin"},      {"ssh.port", "2222"},           {"ssh.identity", "/k"},
        {"ssh.known_hosts", "/kh"}, {"ssh.connect_timeout_s", "3"}, {"http.connect_timeout_s", "2"},
        {"http.timeout_s", "60"},   {"http.max_attempts", "1"},     {"http.ca_file", "/ca.pem"},
        {"rate_mb_s", "110.5"},     {"converge_bytes", "16M"},      {"max_syncs", "9"}};
    const Config c = in.load();
    CHECK(c.ssh.user == "admin");
    CHECK(c.ssh.port == 2222);
    CHECK(c.ssh.identity == "/k");
    CHECK(c.ssh.known_hosts == "/kh");
    CHECK(c.ssh.connect_timeout_s == 3);
    CHECK(c.http.connect_timeout == std::chrono::seconds(2));
    CHECK(c.http.request_timeout == std::chrono::seconds(60));
    CHECK(c.http.max_attempts == 1);
    CHECK(c.http.ca_file == "/ca.pem");
    CHECK(c.rate_mb_s == 110.5);
    CHECK(c.converge_bytes == 16ULL << 20);
    CHECK(c.max_syncs == 9);
    CHECK(c.sources.at("max_syncs") == "flag --max-syncs");
    CHECK(c.sources.at("ssh.port") == "flag --ssh-port");
  }
  SECTION("an empty environment variable counts as unset") {
    in.env["VMAPI_URL"] = "";
    CHECK(in.load().endpoints.vmapi == "http://10.99.0.1:18081");
  }
  SECTION("null in the file counts as unset") {
    in.files["/etc/zmigrate/config.json"] = R"({"state_dir": null})";
    CHECK(in.load().state_dir == "/var/lib/zmigrate");
  }
}

TEST_CASE("cli::load_config choosing the file", "[cli]") {
  Inputs in;
  in.files["/a.json"] = R"({"max_syncs": 1})";
  in.files["/b.json"] = R"({"max_syncs": 2})";
  in.files["/etc/zmigrate/config.json"] = R"({"max_syncs": 3})";
  SECTION("--config first") {
    in.flags["config"] = "/a.json";
    in.env["ZMIGRATE_CONFIG"] = "/b.json";
    CHECK(in.load().max_syncs == 1);
  }
  SECTION("then $ZMIGRATE_CONFIG") {
    in.env["ZMIGRATE_CONFIG"] = "/b.json";
    CHECK(in.load().max_syncs == 2);
  }
  SECTION("then the default") {
    CHECK(in.load().max_syncs == 3);
  }
  SECTION("a missing default is fine") {
    in.files.erase("/etc/zmigrate/config.json");
    const Config c = in.load();
    CHECK(c.max_syncs == 6);
    CHECK_FALSE(c.config_file_read);
  }
  SECTION("a missing --config file is an error") {
    in.flags["config"] = "/missing.json";
    CHECK(config_error([&] { in.load(); }) ==
          "configuration file /missing.json: does not exist (named by --config)");
  }
  SECTION("a missing $ZMIGRATE_CONFIG file is an error") {
    in.env["ZMIGRATE_CONFIG"] = "/missing.json";
    CHECK(config_error([&] { in.load(); }) ==
          "configuration file /missing.json: does not exist (named by ZMIGRATE_CONFIG)");
  }
  SECTION("the message names the file in effect") {
    in.env["ZMIGRATE_CONFIG"] = "/b.json";
    const Config c = in.load();
    CHECK(config_error([&] { require_endpoint(c, Service::napi); }) ==
          "NAPI URL: not configured; set NAPI_URL, \"napi_url\" in /b.json, or run on a Triton "
          "head node");
  }
}

TEST_CASE("cli::load_config rejects bad input", "[cli]") {
  Inputs in;
  auto with_file = [&](const std::string& text) {
    in.files["/etc/zmigrate/config.json"] = text;
    return config_error([&] { in.load(); });
  };
  SECTION("unknown keys name the key") {
    CHECK_THAT(with_file(R"({"vmapi": "http://x"})"),
               Catch::StartsWith("configuration file /etc/zmigrate/config.json: unknown key "
                                 "\"vmapi\"; known keys: vmapi_url, "));
    CHECK_THAT(with_file(R"({"ssh": {"identity_file": "/k"}})"),
               Catch::Contains("unknown key \"ssh.identity_file\""));
    CHECK_THAT(with_file(R"({"ssh.user": "root"})"), Catch::Contains("unknown key \"ssh.user\""));
  }
  SECTION("invalid JSON") {
    CHECK_THAT(with_file("{\"max_syncs\": 3,}"),
               Catch::StartsWith("configuration file /etc/zmigrate/config.json: invalid JSON: "));
    CHECK_THAT(with_file("[]"), Catch::Contains("expected a JSON object, got array"));
    CHECK_THAT(with_file(R"({"ssh": "root@x"})"),
               Catch::Contains("\"ssh\" (file /etc/zmigrate/config.json): expected an object"));
  }
  SECTION("wrong types and ranges name the key and the layer") {
    CHECK(with_file(R"({"ssh": {"port": "x"}})") ==
          "\"ssh.port\" (file /etc/zmigrate/config.json): expected an integer from 1 to 65535, "
          "got \"x\"");
    CHECK_THAT(with_file(R"({"ssh": {"port": 70000}})"), Catch::Contains("1 to 65535"));
    CHECK_THAT(with_file(R"({"max_syncs": 0})"), Catch::Contains("\"max_syncs\""));
    CHECK_THAT(with_file(R"({"max_syncs": 2.5})"), Catch::Contains("\"max_syncs\""));
    // The range of migrate --max-syncs: evacuate passes this value to its migrate processes.
    CHECK_THAT(with_file(R"({"max_syncs": 101})"), Catch::Contains("1 to 100"));
    CHECK_THAT(with_file(R"({"streams": 0})"), Catch::Contains("\"streams\""));
    CHECK_THAT(with_file(R"({"streams": 17})"), Catch::Contains("1 to 16"));
    CHECK_THAT(with_file(R"({"rate_mb_s": -1})"), Catch::Contains("greater than 0"));
    CHECK_THAT(with_file(R"({"converge_bytes": 0})"), Catch::Contains("\"converge_bytes\""));
    CHECK_THAT(with_file(R"({"converge_bytes": "12 parsecs"})"),
               Catch::Contains("\"converge_bytes\""));
    CHECK_THAT(with_file(R"({"state_dir": ""})"), Catch::Contains("non-empty"));
    CHECK_THAT(with_file(R"({"vmapi_url": 5})"), Catch::Contains("expected a string"));
  }
  SECTION("URLs must be http(s)") {
    in.env["VMAPI_URL"] = "vmapi.dc.example.com";
    CHECK(config_error([&] { in.load(); }) ==
          "\"vmapi_url\" (env VMAPI_URL): expected an http:// or https:// URL such as "
          "http://vmapi.example.com, got \"vmapi.dc.example.com\"");
    in.env["VMAPI_URL"] = "http://";
    CHECK_THAT(config_error([&] { in.load(); }), Catch::Contains("(env VMAPI_URL)"));
  }
  SECTION("flag values") {
    in.flags["max_syncs"] = "many";
    CHECK(config_error([&] { in.load(); }) ==
          "\"max_syncs\" (flag --max-syncs): expected an integer from 1 to 100, got \"many\"");
  }
  SECTION("unknown flag key") {
    in.flags["vmapi"] = "http://x";
    CHECK_THAT(config_error([&] { in.load(); }),
               Catch::StartsWith("--vmapi: not a configuration key"));
  }
}

TEST_CASE("cli::load_config values", "[cli]") {
  Inputs in;
  SECTION("trailing slashes dropped from URLs; https accepted") {
    in.flags["vmapi_url"] = "https://vmapi.example.com:8443//";
    CHECK(in.load().endpoints.vmapi == "https://vmapi.example.com:8443");
  }
  SECTION("converge_bytes with suffixes") {
    for (const auto& [text, bytes] :
         std::vector<std::pair<std::string, std::uint64_t>>{{"1048576", 1048576},
                                                            {"64M", 64ULL << 20},
                                                            {"64MiB", 64ULL << 20},
                                                            {"2g", 2ULL << 30},
                                                            {"512K", 512ULL << 10},
                                                            {"1T", 1ULL << 40}}) {
      in.flags["converge_bytes"] = text;
      CHECK(in.load().converge_bytes == bytes);
    }
    for (const char* bad : {"0", "-1", "M", "5X", "99999999999T"}) {
      in.flags["converge_bytes"] = bad;
      CHECK_THROWS_AS(in.load(), ConfigError);
    }
  }
  SECTION("file converge_bytes as a string") {
    in.files["/etc/zmigrate/config.json"] = R"({"converge_bytes": "128M"})";
    CHECK(in.load().converge_bytes == 128ULL << 20);
  }
}

TEST_CASE("cli::load_config head-node discovery", "[cli]") {
  Inputs in;
  SECTION("all four domains") {
    in.discovery = head_node({{"vmapi_domain", "vmapi.coal.example.com"},
                              {"cnapi_domain", "cnapi.coal.example.com"},
                              {"napi_domain", "napi.coal.example.com"},
                              {"imgapi_domain", "imgapi.coal.example.com"},
                              {"sapi_domain", "sapi.coal.example.com"}});
    const Config c = in.load();
    CHECK(c.endpoints.vmapi == "http://vmapi.coal.example.com");
    CHECK(c.endpoints.cnapi == "http://cnapi.coal.example.com");
    CHECK(c.endpoints.napi == "http://napi.coal.example.com");
    CHECK(c.endpoints.imgapi == "http://imgapi.coal.example.com");
    CHECK(c.sources.at("imgapi_url") == "head node (/lib/sdc/config.sh -json)");
  }
  SECTION("fills only what is missing; estimate-style checks") {
    in.env["VMAPI_URL"] = "http://10.0.0.1";
    in.discovery = head_node({{"vmapi_domain", "vmapi.coal"}, {"cnapi_domain", "cnapi.coal"}});
    const Config c = in.load();
    CHECK(c.endpoints.vmapi == "http://10.0.0.1");
    CHECK(c.endpoints.cnapi == "http://cnapi.coal");
    CHECK(c.endpoints.napi.empty());
    CHECK_NOTHROW(require_endpoints(c, {Service::vmapi, Service::cnapi}));
    CHECK(config_error([&] {
            require_endpoints(c, {Service::vmapi, Service::cnapi, Service::imgapi});
          }) == "IMGAPI URL: not configured; set IMGAPI_URL, \"imgapi_url\" in "
                "/etc/zmigrate/config.json, or run on a Triton head node");
  }
  SECTION("not run when every URL is set") {
    in.flags = {{"vmapi_url", "http://a"},
                {"cnapi_url", "http://b"},
                {"napi_url", "http://c"},
                {"imgapi_url", "http://d"}};
    in.load();
    CHECK(in.discover_calls == 0);
  }
  SECTION("a failed discovery is explained in the error") {
    in.discovery = Discovery{std::nullopt, "/lib/sdc/config.sh -json failed (exit status 1)"};
    const Config c = in.load();
    CHECK(c.discovery_problem == "/lib/sdc/config.sh -json failed (exit status 1)");
    CHECK(config_error([&] { require_endpoint(c, Service::cnapi); }) ==
          "CNAPI URL: not configured; set CNAPI_URL, \"cnapi_url\" in /etc/zmigrate/config.json, "
          "or run on a Triton head node (/lib/sdc/config.sh -json failed (exit status 1))");
  }
  SECTION("no discovery function at all") {
    ConfigInputs bare;
    const Config c = load_config(bare);
    CHECK(c.endpoints.vmapi.empty());
    CHECK(c.state_dir == "/var/lib/zmigrate");
  }
}

TEST_CASE("cli::config_report", "[cli]") {
  Inputs in;
  in.flags["vmapi_url"] = "http://v";
  in.files["/etc/zmigrate/config.json"] = R"({"ssh": {"port": 2200}})";
  const json r = config_report(in.load());
  CHECK(r["config_file"] == "/etc/zmigrate/config.json");
  CHECK(r["config_file_read"] == true);
  CHECK(r["keys"]["vmapi_url"] == json{{"value", "http://v"}, {"source", "flag --vmapi-url"}});
  CHECK(r["keys"]["ssh.port"] ==
        json{{"value", 2200}, {"source", "file /etc/zmigrate/config.json"}});
  CHECK(r["keys"]["http.timeout_s"] == json{{"value", 30}, {"source", "default"}});
  CHECK(r["keys"]["converge_bytes"]["value"] == 64ULL << 20);
  CHECK(r["keys"]["bwlimit"] == json{{"value", 0}, {"source", "default"}});
  CHECK(r["keys"]["streams"] == json{{"value", 4}, {"source", "default"}});
  CHECK(r["keys"].size() == 20);
}

TEST_CASE("cli::read_config_file", "[cli]") {
  TempDir dir;
  CHECK(read_config_file(dir.write("c.json", "{}")) == std::optional<std::string>("{}"));
  CHECK_FALSE(read_config_file((dir.path / "absent.json").string()));
  CHECK_THROWS_AS(read_config_file(dir.path.string()), ConfigError); // a directory
}

TEST_CASE("cli::discover_head_node", "[cli]") {
  TempDir dir;
  SECTION("absent script: nothing, no problem") {
    const Discovery d = discover_head_node((dir.path / "config.sh").string());
    CHECK_FALSE(d.values);
    CHECK(d.problem.empty());
  }
  SECTION("prints the config") {
    const std::string script = dir.write(
        "config.sh", "[ \"$1\" = -json ] || exit 3\necho '{\"vmapi_domain\": \"vmapi.coal\"}'\n");
    const Discovery d = discover_head_node(script);
    REQUIRE(d.values);
    CHECK((*d.values)["vmapi_domain"] == "vmapi.coal");
    CHECK(d.problem.empty());
  }
  SECTION("fails") {
    const std::string script = dir.write("config.sh", "echo oops >&2; exit 4\n");
    const Discovery d = discover_head_node(script);
    CHECK_FALSE(d.values);
    CHECK(d.problem == script + " -json failed (exit status 4)");
  }
  SECTION("prints garbage") {
    const std::string script = dir.write("config.sh", "echo CONFIG_vmapi_domain=x\n");
    const Discovery d = discover_head_node(script);
    CHECK_FALSE(d.values);
    CHECK_THAT(d.problem, Catch::StartsWith(script + " -json printed invalid JSON: "));
  }
}

TEST_CASE("cli::load_config_from_process", "[cli]") {
  TempDir dir;
  const std::string file =
      dir.write("zmigrate.json", R"({"cnapi_url": "http://cn", "max_syncs": 2})");
  ::setenv("ZMIGRATE_CONFIG", file.c_str(), 1);
  ::setenv("VMAPI_URL", "http://vm", 1);
  ::setenv("ZMIGRATE_STATE_DIR", "/tmp/zm-state", 1);
  const Config c = load_config_from_process({{"log_dir", "/tmp/zm-log"}});
  ::unsetenv("ZMIGRATE_CONFIG");
  ::unsetenv("VMAPI_URL");
  ::unsetenv("ZMIGRATE_STATE_DIR");
  CHECK(c.config_file == file);
  CHECK(c.endpoints.vmapi == "http://vm");
  CHECK(c.endpoints.cnapi == "http://cn");
  CHECK(c.state_dir == "/tmp/zm-state");
  CHECK(c.log_dir == "/tmp/zm-log");
  CHECK(c.max_syncs == 2);
}
