// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/data_path.hpp>
#include <zmigrate/migration/node_ops.hpp>
#include <zmigrate/remote/runner.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/zfs/node.hpp>

#include <fmt/format.h>

namespace zmigrate::migration {

namespace {
constexpr std::chrono::seconds k_vmadm_timeout{300};

bool not_found_text(const std::string& err) {
  return err.find("No such zone") != std::string::npos ||
         err.find("Cannot find VM") != std::string::npos ||
         err.find("not found") != std::string::npos ||
         err.find("No such") != std::string::npos;
}
} // namespace

NodeOps::NodeOps(Context& ctx, const inventory::Server& server)
    : m_ctx(ctx), m_server(server), m_runner(ctx.nodes.runner_for(server)),
      m_zfs(std::make_unique<zfs::ZfsNode>(m_runner, ctx.clock)) {}

NodeOps::~NodeOps() = default;

const zfs::Capabilities& NodeOps::caps() { return m_zfs->capabilities(); }

std::optional<nlohmann::json> NodeOps::vm_get(const std::string& uuid) {
  remote::RunOptions opts;
  opts.timeout = std::chrono::seconds(60);
  const remote::Result r = m_runner.run(remote::Command({"vmadm", "get", uuid}), opts);
  if (!r.ok()) {
    if (not_found_text(r.err)) {
      return std::nullopt;
    }
    throw Error(ExitCode::failure, fmt::format("{}: vmadm get {}", m_runner.host(), uuid), r.err);
  }
  try {
    return nlohmann::json::parse(r.out);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ExitCode::failure, fmt::format("{}: vmadm get {}", m_runner.host(), uuid),
                fmt::format("output is not JSON: {}", e.what()));
  }
}

void NodeOps::vm_stop(const std::string& uuid) {
  remote::RunOptions opts;
  opts.timeout = k_vmadm_timeout;
  remote::run_checked(m_runner, remote::Command({"vmadm", "stop", uuid}), opts);
}

void NodeOps::vm_start(const std::string& uuid) {
  remote::RunOptions opts;
  opts.timeout = k_vmadm_timeout;
  remote::run_checked(m_runner, remote::Command({"vmadm", "start", uuid}), opts);
}

void NodeOps::vm_update(const std::string& uuid,
                        const std::vector<std::pair<std::string, std::string>>& kv) {
  remote::Argv argv{"vmadm", "update", uuid};
  for (const auto& [k, v] : kv) {
    argv.push_back(k + "=" + v);
  }
  remote::RunOptions opts;
  opts.timeout = k_vmadm_timeout;
  remote::run_checked(m_runner, remote::Command(argv), opts);
}

void NodeOps::vm_delete(const std::string& uuid) {
  remote::RunOptions opts;
  opts.timeout = k_vmadm_timeout;
  const remote::Result r = m_runner.run(remote::Command({"vmadm", "delete", uuid}), opts);
  if (!r.ok() && !not_found_text(r.err)) {
    throw Error(ExitCode::failure, fmt::format("{}: vmadm delete {}", m_runner.host(), uuid),
                r.err);
  }
}

std::string NodeOps::zone_export(const std::string& uuid) {
  return remote::run_checked(m_runner, remote::Command({"zonecfg", "-z", uuid, "export"})).out;
}

void NodeOps::zone_import(const std::string& migration_id, const std::string& uuid,
                          const std::string& config) {
  const std::string dir = private_dir(migration_id);
  write_remote_file(m_runner, dir, "zone.cfg", config, "600");
  remote::run_checked(m_runner, remote::Command({"zonecfg", "-z", uuid, "-f", dir + "/zone.cfg"}));
  remote::run_checked(m_runner, remote::Command({"zoneadm", "-z", uuid, "attach", "-F"}));
  m_runner.run(remote::Command({"rm", "-f", dir + "/zone.cfg"}));
}

void NodeOps::zone_remove(const std::string& uuid) {
  // Either may already be gone after an interrupted attempt; what matters is the end state.
  m_runner.run(remote::Command({"zoneadm", "-z", uuid, "detach"}));
  const remote::Result r = m_runner.run(remote::Command({"zonecfg", "-z", uuid, "delete", "-F"}));
  if (!r.ok() && !not_found_text(r.err)) {
    throw Error(ExitCode::failure, fmt::format("{}: zonecfg -z {} delete", m_runner.host(), uuid),
                r.err);
  }
}

void NodeOps::image_import(const std::string& image_uuid) {
  remote::RunOptions opts;
  opts.timeout = std::chrono::minutes(30);
  remote::run_checked(m_runner, remote::Command({"imgadm", "import", "-q", image_uuid}), opts);
}

std::string NodeOps::host_key() {
  std::string key =
      remote::run_checked(m_runner, remote::Command({"cat", "/etc/ssh/ssh_host_ed25519_key.pub"}))
          .out;
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r')) {
    key.pop_back();
  }
  return key;
}

} // namespace zmigrate::migration
