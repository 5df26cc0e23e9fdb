// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/cli/config.hpp>
#include <zmigrate/util/error.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include <fmt/format.h>

namespace zmigrate::cli {

namespace {

using nlohmann::json;

constexpr const char* k_discovery_source = "head node (/lib/sdc/config.sh -json)";

// A value as one layer gave it: typed JSON from the file, or text from a flag, the environment
// or discovery.
struct Raw {
  std::optional<json> value;
  std::string text;
  std::string source; // "flag --ssh-port", "env VMAPI_URL", "file /etc/zmigrate/config.json"
};

[[noreturn]] void bad(const std::string& key, const Raw& raw, const std::string& expected) {
  const std::string got = raw.value ? raw.value->dump() : "\"" + raw.text + "\"";
  throw ConfigError(fmt::format("\"{}\" ({})", key, raw.source),
                    fmt::format("expected {}, got {}", expected, got));
}

std::string as_text(const std::string& key, const Raw& raw) {
  if (raw.value) {
    if (!raw.value->is_string()) {
      bad(key, raw, "a string");
    }
    return raw.value->get<std::string>();
  }
  return raw.text;
}

std::string as_nonempty_text(const std::string& key, const Raw& raw) {
  std::string s = as_text(key, raw);
  if (s.empty()) {
    bad(key, raw, "a non-empty string");
  }
  return s;
}

std::string as_url(const std::string& key, const Raw& raw) {
  std::string url = as_text(key, raw);
  const std::string expected = "an http:// or https:// URL such as http://vmapi.example.com";
  std::size_t scheme_end = 0;
  if (url.rfind("http://", 0) == 0) {
    scheme_end = 7;
  } else if (url.rfind("https://", 0) == 0) {
    scheme_end = 8;
  } else {
    bad(key, raw, expected);
  }
  // Paths are appended as "/vms/...", so a trailing slash would double up.
  while (url.size() > scheme_end && url.back() == '/') {
    url.pop_back();
  }
  if (url.size() == scheme_end || url.find_first_of(" \t\r\n") != std::string::npos) {
    bad(key, raw, expected);
  }
  return url;
}

long long as_int(const std::string& key, const Raw& raw, long long min, long long max) {
  const std::string expected = fmt::format("an integer from {} to {}", min, max);
  long long v = 0;
  if (raw.value) {
    if (raw.value->is_number_integer()) {
      v = raw.value->get<long long>();
    } else if (raw.value->is_number_float() &&
               std::trunc(raw.value->get<double>()) == raw.value->get<double>() &&
               std::fabs(raw.value->get<double>()) < 1e15) {
      v = static_cast<long long>(raw.value->get<double>());
    } else {
      bad(key, raw, expected);
    }
  } else {
    char* end = nullptr;
    errno = 0;
    v = std::strtoll(raw.text.c_str(), &end, 10);
    if (raw.text.empty() || end == nullptr || *end != '\0' || errno != 0) {
      bad(key, raw, expected);
    }
  }
  if (v < min || v > max) {
    bad(key, raw, expected);
  }
  return v;
}

double as_positive_number(const std::string& key, const Raw& raw) {
  const std::string expected = "a number greater than 0";
  double v = 0;
  if (raw.value) {
    if (!raw.value->is_number()) {
      bad(key, raw, expected);
    }
    v = raw.value->get<double>();
  } else {
    char* end = nullptr;
    v = std::strtod(raw.text.c_str(), &end);
    if (raw.text.empty() || end == nullptr || *end != '\0') {
      bad(key, raw, expected);
    }
  }
  if (!std::isfinite(v) || v <= 0) {
    bad(key, raw, expected);
  }
  return v;
}

// Bytes: an integer, or text with a 1024-based suffix ("64M", "64MiB", "1G").
std::uint64_t as_size(const std::string& key, const Raw& raw) {
  const std::string expected = "a byte count greater than 0 (e.g. 67108864 or \"64M\")";
  if (raw.value && raw.value->is_number_unsigned()) {
    const std::uint64_t v = raw.value->get<std::uint64_t>();
    if (v == 0) {
      bad(key, raw, expected);
    }
    return v;
  }
  if (raw.value && !raw.value->is_string()) {
    bad(key, raw, expected);
  }
  const std::string text = raw.value ? raw.value->get<std::string>() : raw.text;
  char* end = nullptr;
  errno = 0;
  const unsigned long long n = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || end == text.c_str() || errno != 0 || text[0] == '-') {
    bad(key, raw, expected);
  }
  std::string suffix(end);
  std::transform(suffix.begin(), suffix.end(), suffix.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  const std::map<std::string, int> shifts{{"", 0},   {"B", 0},    {"K", 10}, {"KIB", 10},
                                          {"M", 20}, {"MIB", 20}, {"G", 30}, {"GIB", 30},
                                          {"T", 40}, {"TIB", 40}};
  const auto it = shifts.find(suffix);
  if (it == shifts.end() || n == 0 || (it->second > 0 && n > (~0ULL >> it->second))) {
    bad(key, raw, expected);
  }
  return static_cast<std::uint64_t>(n) << it->second;
}

struct KeySpec {
  const char* key;
  const char* env; // nullptr when no environment variable sets it
  std::function<void(Config&, const Raw&)> apply;
  std::function<json(const Config&)> get;
  const char* endpoint_service = nullptr; // "vmapi" for the URL keys (discovery fills those)
};

std::string inventory::Endpoints::*endpoint_member(const std::string& service) {
  if (service == "vmapi") {
    return &inventory::Endpoints::vmapi;
  }
  if (service == "cnapi") {
    return &inventory::Endpoints::cnapi;
  }
  if (service == "napi") {
    return &inventory::Endpoints::napi;
  }
  return &inventory::Endpoints::imgapi;
}

std::string* endpoint_field(Config& c, const std::string& service) {
  return &(c.endpoints.*endpoint_member(service));
}

const std::string& endpoint_value(const Config& c, const std::string& service) {
  return c.endpoints.*endpoint_member(service);
}

KeySpec url_spec(const char* key, const char* env, const char* service) {
  return {key, env,
          [key, service](Config& c, const Raw& r) { *endpoint_field(c, service) = as_url(key, r); },
          [service](const Config& c) { return json(endpoint_value(c, service)); }, service};
}

const std::vector<KeySpec>& key_specs() {
  using std::chrono::seconds;
  static const std::vector<KeySpec> specs = [] {
    std::vector<KeySpec> v;
    v.push_back(url_spec("vmapi_url", "VMAPI_URL", "vmapi"));
    v.push_back(url_spec("cnapi_url", "CNAPI_URL", "cnapi"));
    v.push_back(url_spec("napi_url", "NAPI_URL", "napi"));
    v.push_back(url_spec("imgapi_url", "IMGAPI_URL", "imgapi"));
    v.push_back({"state_dir", "ZMIGRATE_STATE_DIR",
                 [](Config& c, const Raw& r) { c.state_dir = as_nonempty_text("state_dir", r); },
                 [](const Config& c) { return json(c.state_dir); }});
    v.push_back({"log_dir", "ZMIGRATE_LOG_DIR",
                 [](Config& c, const Raw& r) { c.log_dir = as_nonempty_text("log_dir", r); },
                 [](const Config& c) { return json(c.log_dir); }});
    v.push_back({"ssh.user", nullptr,
                 [](Config& c, const Raw& r) { c.ssh.user = as_nonempty_text("ssh.user", r); },
                 [](const Config& c) { return json(c.ssh.user); }});
    v.push_back({"ssh.identity", nullptr,
                 [](Config& c, const Raw& r) { c.ssh.identity = as_text("ssh.identity", r); },
                 [](const Config& c) { return json(c.ssh.identity); }});
    v.push_back({"ssh.known_hosts", nullptr,
                 [](Config& c, const Raw& r) { c.ssh.known_hosts = as_text("ssh.known_hosts", r); },
                 [](const Config& c) { return json(c.ssh.known_hosts); }});
    v.push_back({"ssh.port", nullptr,
                 [](Config& c, const Raw& r) {
                   c.ssh.port = static_cast<int>(as_int("ssh.port", r, 1, 65535));
                 },
                 [](const Config& c) { return json(c.ssh.port); }});
    v.push_back({"ssh.connect_timeout_s", nullptr,
                 [](Config& c, const Raw& r) {
                   c.ssh.connect_timeout_s =
                       static_cast<int>(as_int("ssh.connect_timeout_s", r, 1, 3600));
                 },
                 [](const Config& c) { return json(c.ssh.connect_timeout_s); }});
    v.push_back({"http.connect_timeout_s", nullptr,
                 [](Config& c, const Raw& r) {
                   c.http.connect_timeout = seconds(as_int("http.connect_timeout_s", r, 1, 3600));
                 },
                 [](const Config& c) {
                   return json(std::chrono::duration_cast<seconds>(c.http.connect_timeout).count());
                 }});
    v.push_back({"http.timeout_s", nullptr,
                 [](Config& c, const Raw& r) {
                   c.http.request_timeout = seconds(as_int("http.timeout_s", r, 1, 86400));
                 },
                 [](const Config& c) {
                   return json(std::chrono::duration_cast<seconds>(c.http.request_timeout).count());
                 }});
    v.push_back({"http.max_attempts", nullptr,
                 [](Config& c, const Raw& r) {
                   c.http.max_attempts = static_cast<int>(as_int("http.max_attempts", r, 1, 20));
                 },
                 [](const Config& c) { return json(c.http.max_attempts); }});
    v.push_back({"http.ca_file", nullptr,
                 [](Config& c, const Raw& r) { c.http.ca_file = as_text("http.ca_file", r); },
                 [](const Config& c) { return json(c.http.ca_file); }});
    v.push_back({"rate_mb_s", nullptr,
                 [](Config& c, const Raw& r) { c.rate_mb_s = as_positive_number("rate_mb_s", r); },
                 [](const Config& c) { return json(c.rate_mb_s); }});
    v.push_back({"converge_bytes", nullptr,
                 [](Config& c, const Raw& r) { c.converge_bytes = as_size("converge_bytes", r); },
                 [](const Config& c) { return json(c.converge_bytes); }});
    v.push_back({"max_syncs", nullptr,
                 [](Config& c, const Raw& r) {
                   c.max_syncs =
                       static_cast<int>(as_int("max_syncs", r, kMaxSyncsMin, kMaxSyncsMax));
                 },
                 [](const Config& c) { return json(c.max_syncs); }});
    v.push_back({"bwlimit", nullptr,
                 [](Config& c, const Raw& r) { c.bwlimit = as_size("bwlimit", r); },
                 [](const Config& c) { return json(c.bwlimit); }});
    v.push_back(
        {"streams", nullptr,
         [](Config& c, const Raw& r) { c.streams = static_cast<int>(as_int("streams", r, 1, 16)); },
         [](const Config& c) { return json(c.streams); }});
    return v;
  }();
  return specs;
}

std::string known_keys_text() {
  std::string text;
  for (const KeySpec& s : key_specs()) {
    text += (text.empty() ? "" : ", ") + std::string(s.key);
  }
  return text;
}

bool is_known_key(const std::string& key) {
  return std::any_of(key_specs().begin(), key_specs().end(),
                     [&](const KeySpec& s) { return key == s.key; });
}

std::string flag_name(const std::string& key) {
  std::string name = "--" + key;
  std::replace(name.begin(), name.end(), '_', '-');
  std::replace(name.begin(), name.end(), '.', '-');
  return name;
}

// The file's keys flattened to dotted names ("ssh.port"); unknown keys are errors so that a typo
// does not silently fall back to a default.
std::map<std::string, json> parse_config_file(const std::string& path, const std::string& text) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::exception& e) {
    throw ConfigError(fmt::format("configuration file {}", path),
                      fmt::format("invalid JSON: {}", json_error_text(e)));
  }
  if (!doc.is_object()) {
    throw ConfigError(fmt::format("configuration file {}", path),
                      fmt::format("expected a JSON object, got {}", doc.type_name()));
  }
  std::map<std::string, json> flat;
  auto unknown = [&](const std::string& key) {
    throw ConfigError(fmt::format("configuration file {}", path),
                      fmt::format("unknown key \"{}\"; known keys: {}", key, known_keys_text()));
  };
  for (const auto& [key, value] : doc.items()) {
    if (key == "ssh" || key == "http") {
      if (!value.is_object()) {
        throw ConfigError(fmt::format("\"{}\" (file {})", key, path),
                          fmt::format("expected an object, got {}", value.dump()));
      }
      for (const auto& [sub, sub_value] : value.items()) {
        const std::string dotted = key + "." + sub;
        if (!is_known_key(dotted)) {
          unknown(dotted);
        }
        flat[dotted] = sub_value;
      }
    } else if (key.find('.') == std::string::npos && is_known_key(key)) {
      flat[key] = value;
    } else {
      unknown(key);
    }
  }
  return flat;
}

std::string lookup(const std::map<std::string, std::string>& m, const std::string& key) {
  const auto it = m.find(key);
  return it == m.end() ? "" : it->second;
}

} // namespace

const char* service_name(Service service) {
  switch (service) {
  case Service::vmapi:
    return "VMAPI";
  case Service::cnapi:
    return "CNAPI";
  case Service::napi:
    return "NAPI";
  case Service::imgapi:
    return "IMGAPI";
  }
  return "?";
}

Config load_config(const ConfigInputs& inputs) {
  Config config;
  for (const KeySpec& spec : key_specs()) {
    config.sources[spec.key] = "default";
  }
  for (const auto& [key, value] : inputs.flags) {
    if (key != "config" && !is_known_key(key)) {
      throw ConfigError(flag_name(key),
                        "not a configuration key; known keys: " + known_keys_text());
    }
  }

  // Which file: --config, else $ZMIGRATE_CONFIG, else the default (which may be absent).
  std::string named_by;
  if (!lookup(inputs.flags, "config").empty()) {
    config.config_file = lookup(inputs.flags, "config");
    named_by = "--config";
  } else if (!lookup(inputs.env, "ZMIGRATE_CONFIG").empty()) {
    config.config_file = lookup(inputs.env, "ZMIGRATE_CONFIG");
    named_by = "ZMIGRATE_CONFIG";
  } else {
    config.config_file = k_default_config_file;
  }
  std::map<std::string, json> file_values;
  const std::optional<std::string> text =
      inputs.read_file ? inputs.read_file(config.config_file) : std::nullopt;
  if (text) {
    file_values = parse_config_file(config.config_file, *text);
    config.config_file_read = true;
  } else if (!named_by.empty()) {
    throw ConfigError(fmt::format("configuration file {}", config.config_file),
                      fmt::format("does not exist (named by {})", named_by));
  }

  for (const KeySpec& spec : key_specs()) {
    Raw raw;
    if (const auto it = inputs.flags.find(spec.key); it != inputs.flags.end()) {
      raw.text = it->second;
      raw.source = "flag " + flag_name(spec.key);
    } else if (spec.env != nullptr && !lookup(inputs.env, spec.env).empty()) {
      raw.text = lookup(inputs.env, spec.env);
      raw.source = fmt::format("env {}", spec.env);
    } else if (const auto f = file_values.find(spec.key);
               f != file_values.end() && !f->second.is_null()) {
      raw.value = f->second;
      raw.source = "file " + config.config_file;
    } else {
      continue;
    }
    spec.apply(config, raw);
    config.sources[spec.key] = raw.source;
  }

  // Discovery is a subprocess, so it runs only when a URL is still missing.
  const bool missing_url =
      std::any_of(key_specs().begin(), key_specs().end(), [&](const KeySpec& spec) {
        return spec.endpoint_service != nullptr &&
               endpoint_value(config, spec.endpoint_service).empty();
      });
  if (missing_url && inputs.discover) {
    const Discovery discovery = inputs.discover();
    config.discovery_problem = discovery.problem;
    if (discovery.values && discovery.values->is_object()) {
      for (const KeySpec& spec : key_specs()) {
        if (spec.endpoint_service == nullptr ||
            !endpoint_value(config, spec.endpoint_service).empty()) {
          continue;
        }
        const std::string domain_key = std::string(spec.endpoint_service) + "_domain";
        const auto it = discovery.values->find(domain_key);
        if (it == discovery.values->end() || !it->is_string() || it->get<std::string>().empty()) {
          continue;
        }
        Raw raw;
        raw.text = "http://" + it->get<std::string>();
        raw.source = k_discovery_source;
        spec.apply(config, raw);
        config.sources[spec.key] = raw.source;
      }
    }
  }
  return config;
}

std::optional<std::string> read_config_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "re");
  if (f == nullptr) {
    if (errno == ENOENT) {
      return std::nullopt;
    }
    throw ConfigError(fmt::format("configuration file {}", path), std::strerror(errno));
  }
  std::string text;
  char buf[8192];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
    text.append(buf, n);
  }
  const bool failed = std::ferror(f) != 0;
  const int saved = errno;
  std::fclose(f);
  if (failed) {
    throw ConfigError(fmt::format("configuration file {}", path), std::strerror(saved));
  }
  return text;
}

Discovery discover_head_node(const std::string& script) {
  Discovery d;
  if (::access(script.c_str(), F_OK) != 0) {
    return d; // not a Triton head node (or compute node): nothing to discover
  }
  std::string quoted = "'";
  for (const char c : script) {
    quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  }
  quoted += "'";
  const std::string command = "/bin/bash " + quoted + " -json 2>/dev/null";
  std::FILE* p = ::popen(command.c_str(), "re");
  if (p == nullptr) {
    d.problem = fmt::format("{} -json could not be run: {}", script, std::strerror(errno));
    return d;
  }
  std::string out;
  char buf[8192];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
    out.append(buf, n);
  }
  const int status = ::pclose(p);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    d.problem = fmt::format("{} -json failed (exit status {})", script,
                            status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return d;
  }
  try {
    json values = json::parse(out);
    if (!values.is_object()) {
      d.problem = fmt::format("{} -json printed {}, not an object", script, values.type_name());
      return d;
    }
    d.values = std::move(values);
  } catch (const json::exception& e) {
    d.problem = fmt::format("{} -json printed invalid JSON: {}", script, json_error_text(e));
  }
  return d;
}

Config load_config_from_process(const std::map<std::string, std::string>& flags) {
  ConfigInputs inputs;
  inputs.flags = flags;
  for (const char* name : {"VMAPI_URL", "CNAPI_URL", "NAPI_URL", "IMGAPI_URL", "ZMIGRATE_STATE_DIR",
                           "ZMIGRATE_LOG_DIR", "ZMIGRATE_CONFIG"}) {
    if (const char* value = std::getenv(name); value != nullptr) {
      inputs.env[name] = value;
    }
  }
  inputs.read_file = read_config_file;
  inputs.discover = [] { return discover_head_node(); };
  return load_config(inputs);
}

void require_endpoint(const Config& config, Service service) {
  const std::string* url = nullptr;
  switch (service) {
  case Service::vmapi:
    url = &config.endpoints.vmapi;
    break;
  case Service::cnapi:
    url = &config.endpoints.cnapi;
    break;
  case Service::napi:
    url = &config.endpoints.napi;
    break;
  case Service::imgapi:
    url = &config.endpoints.imgapi;
    break;
  }
  if (url != nullptr && !url->empty()) {
    return;
  }
  const std::string name = service_name(service);
  std::string key = name + "_url";
  std::transform(key.begin(), key.end(), key.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string why = fmt::format(
      "not configured; set {}_URL, \"{}\" in {}, or run on a Triton "
      "head node",
      name, key, config.config_file.empty() ? k_default_config_file : config.config_file);
  if (!config.discovery_problem.empty()) {
    why += fmt::format(" ({})", config.discovery_problem);
  }
  throw ConfigError(name + " URL", why);
}

void require_endpoints(const Config& config, std::initializer_list<Service> services) {
  for (const Service s : services) {
    require_endpoint(config, s);
  }
}

nlohmann::json config_report(const Config& config) {
  json keys = json::object();
  for (const KeySpec& spec : key_specs()) {
    const auto it = config.sources.find(spec.key);
    keys[spec.key] = {{"value", spec.get(config)},
                      {"source", it == config.sources.end() ? "default" : it->second}};
  }
  return {{"config_file", config.config_file},
          {"config_file_read", config.config_file_read},
          {"keys", keys}};
}

} // namespace zmigrate::cli
