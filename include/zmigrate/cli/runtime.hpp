// SPDX-License-Identifier: MPL-2.0
#pragma once
// The composition root of one zmigrate command: configuration and the real adapters (libcurl,
// libssh, SQLite, system clock, bunyan log), built lazily so a command only opens what it uses.

#include <zmigrate/cli/app.hpp>
#include <zmigrate/cli/config.hpp>
#include <zmigrate/migration/context.hpp>

#include <map>
#include <memory>
#include <string>

namespace zmigrate::http {
class Client;
}

namespace zmigrate::cli {

class TerminalReporter;

class Runtime {
public:
  explicit Runtime(const GlobalOptions& globals);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  const GlobalOptions& globals() const { return m_globals; }
  const Config& config();
  // The engine context; requires the endpoints in `services` to be configured.
  migration::Context& context(std::initializer_list<Service> services);
  state::StateStore& store();
  inventory::Inventory& inventory(std::initializer_list<Service> services);
  Logger& log();
  TerminalReporter& reporter();
  // Log into <log_dir>/<migration-id>.log from now on (and tag lines with the ids).
  void log_to_migration(const std::string& migration_id, const std::string& vm_uuid);

private:
  struct Impl;
  GlobalOptions m_globals;
  std::unique_ptr<Impl> m_impl;
};

} // namespace zmigrate::cli
