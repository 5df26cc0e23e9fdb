// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/cli/output.hpp>
#include <zmigrate/cli/runtime.hpp>
#include <zmigrate/http/curl_client.hpp>
#include <zmigrate/inventory/http_inventory.hpp>
#include <zmigrate/remote/ssh_runner.hpp>
#include <zmigrate/state/sqlite_store.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/process.hpp>

#include <cstdlib>
#include <unistd.h>

#include <fmt/format.h>

namespace zmigrate::cli {

namespace {

// One SSH session per compute node per command, opened on first use.
class SshNodeAccess final : public migration::NodeAccess {
public:
  SshNodeAccess(const Config& config, Logger& log) : m_config(config), m_log(log) {}
  remote::Runner& runner_for(const inventory::Server& server) override {
    auto it = m_runners.find(server.uuid);
    if (it != m_runners.end()) {
      return *it->second;
    }
    if (server.admin_ip.empty()) {
      throw Error(ExitCode::remote,
                  fmt::format("compute node {} ({})", server.hostname, server.uuid),
                  "CNAPI sysinfo has no admin address (\"Network Interfaces\" NIC named admin)");
    }
    remote::SshOptions o;
    o.address = server.admin_ip;
    o.host_label = server.hostname.empty() ? server.admin_ip : server.hostname;
    o.port = m_config.ssh.port;
    o.user = m_config.ssh.user;
    o.identity_file = m_config.ssh.identity;
    o.known_hosts = m_config.ssh.known_hosts;
    o.connect_timeout = std::chrono::seconds(m_config.ssh.connect_timeout_s);
    auto runner = std::make_unique<remote::SshRunner>(o, m_log);
    remote::Runner& ref = *runner;
    m_runners.emplace(server.uuid, std::move(runner));
    return ref;
  }

private:
  const Config& m_config;
  Logger& m_log;
  std::map<std::string, std::unique_ptr<remote::SshRunner>> m_runners;
};

} // namespace

struct Runtime::Impl {
  std::optional<Config> config;
  SystemClock clock;
  // When this command started: stop requests (abort/pause from another shell) made later stop it.
  std::chrono::system_clock::time_point started = clock.wall_now();
  BunyanLogger log{"zmigrate"};
  std::unique_ptr<TerminalReporter> reporter;
  std::unique_ptr<http::CurlHttpClient> http;
  std::unique_ptr<inventory::HttpInventory> inventory;
  std::unique_ptr<SshNodeAccess> nodes;
  std::unique_ptr<state::SqliteStateStore> store;
  std::unique_ptr<migration::Context> context;
};

Runtime::Runtime(const GlobalOptions& globals)
    : m_globals(globals), m_impl(std::make_unique<Impl>()) {
  if (globals.verbose > 0) {
    m_impl->log.set_stderr_level(globals.verbose > 1 ? LogLevel::trace : LogLevel::debug);
  } else {
    m_impl->log.set_stderr_level(LogLevel::fatal);
  }
  m_impl->reporter = std::make_unique<TerminalReporter>(
      detect_style(globals.json, globals.quiet, globals.no_color));
}

Runtime::~Runtime() = default;

const Config& Runtime::config() {
  if (!m_impl->config) {
    std::map<std::string, std::string> flags;
    for (const LocationOption& o : location_options()) {
      if (!(m_globals.*o.member).empty()) {
        flags[o.key] = m_globals.*o.member;
      }
    }
    m_impl->config = load_config_from_process(flags);
  }
  return *m_impl->config;
}

Logger& Runtime::log() {
  return m_impl->log;
}

TerminalReporter& Runtime::reporter() {
  return *m_impl->reporter;
}

state::StateStore& Runtime::store() {
  if (!m_impl->store) {
    m_impl->store = std::make_unique<state::SqliteStateStore>(
        state::SqliteStateStore::default_path(config().state_dir), m_impl->clock);
  }
  return *m_impl->store;
}

inventory::Inventory& Runtime::inventory(std::initializer_list<Service> services) {
  require_endpoints(config(), services);
  if (!m_impl->inventory) {
    m_impl->http =
        std::make_unique<http::CurlHttpClient>(config().http, m_impl->clock, m_impl->log);
    m_impl->inventory =
        std::make_unique<inventory::HttpInventory>(*m_impl->http, config().endpoints);
  }
  return *m_impl->inventory;
}

migration::Context& Runtime::context(std::initializer_list<Service> services) {
  if (!m_impl->context) {
    inventory::Inventory& inv = inventory(services);
    m_impl->nodes = std::make_unique<SshNodeAccess>(config(), m_impl->log);
    migration::Settings s;
    // MB as sdc-migrate and mig-estimator print them: 1024-based.
    s.rate_bytes_per_s = config().rate_mb_s * 1024.0 * 1024.0;
    s.converge_bytes = config().converge_bytes;
    s.max_syncs = config().max_syncs;
    s.bwlimit = config().bwlimit;
    s.max_streams = static_cast<std::size_t>(config().streams);
    s.ssh_connect_timeout_s = config().ssh.connect_timeout_s;
    s.ssh_user = config().ssh.user;
    s.ssh_port = config().ssh.port;
    s.state_dir = config().state_dir;
    s.log_dir = config().log_dir;
    s.hostname = local_hostname();
    s.command_started = m_impl->started;
    s.take_over_remote_lease = m_globals.take_over;
    // Test-only: honoured only by builds with -DZMIGRATE_FAULT_HOOKS=ON (the lab's).
    s.fault_step = fault_step_from_env();
    if (!s.fault_step.empty()) {
      m_impl->log.warn("test-only fault hook armed", {{"fault_step", s.fault_step}});
    }
    m_impl->context = std::make_unique<migration::Context>(migration::Context{
        inv, *m_impl->nodes, store(), m_impl->clock, m_impl->log, *m_impl->reporter, s,
        [this](const std::string& id, const std::string& vm) { log_to_migration(id, vm); }});
  } else {
    require_endpoints(config(), services);
  }
  return *m_impl->context;
}

void Runtime::log_to_migration(const std::string& migration_id, const std::string& vm_uuid) {
  m_impl->log.set_base_field("migration_id", migration_id);
  m_impl->log.set_base_field("vm_uuid", vm_uuid);
  try {
    m_impl->log.set_file(fmt::format("{}/{}.log", config().log_dir, migration_id));
  } catch (const Error& e) {
    m_impl->reporter->note(fmt::format("not logging to a file: {}", e.what()));
  }
}

} // namespace zmigrate::cli
