// SPDX-License-Identifier: MPL-2.0
#pragma once
// zmigrate configuration: where the inventory APIs are, where state and logs go, how to reach the
// compute nodes, and the migration tunables.
//
// Every key, with its file spelling (the file is one JSON object; nested keys are written as
// objects, e.g. {"ssh": {"user": "root"}}), environment variable, and default:
//
//   vmapi_url          VMAPI_URL            (none)   VMAPI base URL, http://host[:port]
//   cnapi_url          CNAPI_URL            (none)   CNAPI base URL
//   napi_url           NAPI_URL             (none)   NAPI base URL
//   imgapi_url         IMGAPI_URL           (none)   IMGAPI base URL
//   state_dir          ZMIGRATE_STATE_DIR   /var/lib/zmigrate   migration journal (SQLite)
//   log_dir            ZMIGRATE_LOG_DIR     /var/log/zmigrate   bunyan logs, one per migration
//   ssh.user                                root     login on the compute nodes
//   ssh.identity                            ""       private key file ("" = ssh's defaults)
//   ssh.known_hosts                         ""       known_hosts file ("" = ~/.ssh/known_hosts)
//   ssh.port                                22       1..65535
//   ssh.connect_timeout_s                   10       1..3600; also the CN-to-CN data path
//   http.connect_timeout_s                  5        inventory API connect timeout, 1..3600
//   http.timeout_s                          30       whole-request timeout, 1..86400
//   http.max_attempts                       4        tries of an idempotent request, 1..20
//   http.ca_file                            ""       CA bundle for https URLs ("" = system's)
//   rate_mb_s                               20       assumed send rate in MiB/s (as
//                                                    mig-estimator) for `estimate` when none
//                                                    was measured; > 0
//   converge_bytes                          64 MiB   `migrate` switches once an incremental sync
//                                                    is smaller; integer or "64M"/"1G" (1024-based)
//   max_syncs                               6        incremental syncs before `migrate` switches
//                                                    anyway, 1..100 (as --max-syncs)
//   bwlimit                                 0        bytes per second every stream of sync,
//                                                    migrate, switch and evacuate may use (as
//                                                    --bwlimit; "50M" = 50 MiB/s; 0 = unlimited)
//   streams                                 4        datasets of an instance (disks, delegated
//                                                    datasets) a sync sends at once, 1..16; one
//                                                    at a time when a bwlimit is set
//
// Precedence, per key: command-line flag > environment > configuration file > (URLs only)
// discovery on a Triton head node > default. The file is `--config`, else $ZMIGRATE_CONFIG,
// else /etc/zmigrate/config.json (only this default may be absent). Discovery runs
// `/lib/sdc/config.sh -json` and uses http://<vmapi_domain> etc., and only when a URL is still
// unset. A URL that stays unset is not an error until a command needs it (require_endpoints).

#include <zmigrate/http/client.hpp>
#include <zmigrate/inventory/inventory.hpp>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace zmigrate::cli {

inline constexpr const char* k_default_config_file = "/etc/zmigrate/config.json";
inline constexpr const char* k_head_node_config_script = "/lib/sdc/config.sh";

struct SshConfig {
  std::string user = "root";
  std::string identity;
  std::string known_hosts;
  int port = 22;
  int connect_timeout_s = 10;
};

// The range of max_syncs and of --max-syncs (one range: evacuate passes the configuration's value
// to the `migrate` processes it runs).
inline constexpr int kMaxSyncsMin = 1;
inline constexpr int kMaxSyncsMax = 100;

struct Config {
  inventory::Endpoints endpoints; // "" = not configured
  std::string state_dir = "/var/lib/zmigrate";
  std::string log_dir = "/var/log/zmigrate";
  SshConfig ssh;
  http::ClientOptions http; // connect_timeout, request_timeout, max_attempts, ca_file
  double rate_mb_s = 20;
  std::uint64_t converge_bytes = 64ULL << 20;
  int max_syncs = 6;
  std::uint64_t bwlimit = 0;
  int streams = 4;

  // Diagnostics (`zmigrate config`): the configuration file in effect and whether it was read,
  // and for every key (file spelling, dotted: "ssh.user") which layer set it: "flag --vmapi-url",
  // "env VMAPI_URL", "file /etc/zmigrate/config.json", "head node (/lib/sdc/config.sh -json)"
  // or "default".
  std::string config_file;
  bool config_file_read = false;
  std::map<std::string, std::string> sources;
  // Why head-node discovery gave nothing, when it was tried and failed ("" otherwise).
  std::string discovery_problem;
};

// What `/lib/sdc/config.sh -json` gave.
struct Discovery {
  std::optional<nlohmann::json> values; // nullopt when not a head node or the script failed
  std::string problem;                  // why the script failed ("" when absent or fine)
};

// Everything load_config reads, so that it is a pure function in tests.
struct ConfigInputs {
  // Command-line values by file spelling ("vmapi_url", "ssh.identity", "converge_bytes"); the
  // key "config" is the --config path. Values are text, as typed.
  std::map<std::string, std::string> flags;
  // Environment variables (only the names listed above are looked at; "" counts as unset).
  std::map<std::string, std::string> env;
  // Contents of the file at `path`; nullopt when it does not exist. Throws ConfigError when it
  // exists but cannot be read.
  std::function<std::optional<std::string>(const std::string& path)> read_file;
  // Head-node discovery; called at most once, and only when a URL is unset. May be empty.
  std::function<Discovery()> discover;
};

// Builds the Config from `inputs` (precedence above). Throws ConfigError naming the key and the
// layer it came from for a malformed value, an unknown key in the file ("unknown key
// \"foo\""), invalid JSON, or a missing file named by --config / $ZMIGRATE_CONFIG.
Config load_config(const ConfigInputs& inputs);

// load_config over the real process: getenv, files on disk, and discover_head_node().
Config load_config_from_process(const std::map<std::string, std::string>& flags);

// Reads `path`; nullopt when it does not exist; throws ConfigError(path, strerror) otherwise.
std::optional<std::string> read_config_file(const std::string& path);

// Runs `bash <script> -json` when `script` exists and parses its output. Never throws: failures
// are reported in Discovery::problem.
Discovery discover_head_node(const std::string& script = k_head_node_config_script);

enum class Service { vmapi, cnapi, napi, imgapi };

// "VMAPI", "CNAPI", "NAPI", "IMGAPI".
const char* service_name(Service service);

// Throws ConfigError naming exactly what to set unless `service`'s URL is configured, e.g.
//   VMAPI URL: not configured; set VMAPI_URL, "vmapi_url" in /etc/zmigrate/config.json, or run
//   on a Triton head node
void require_endpoint(const Config& config, Service service);
// require_endpoint for each of `services` (e.g. estimate needs {vmapi, cnapi}).
void require_endpoints(const Config& config, std::initializer_list<Service> services);

// Every key with its value and source, for `zmigrate config` and --json output:
// {"config_file": ..., "config_file_read": ..., "keys": {"vmapi_url": {"value": ...,
// "source": ...}, ...}}.
nlohmann::json config_report(const Config& config);

} // namespace zmigrate::cli
