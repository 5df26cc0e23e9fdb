// SPDX-License-Identifier: MPL-2.0
#pragma once
// evacuate --parallel: each migration runs as its own `zmigrate migrate` process, started from
// this executable with the same global options. A process per migration keeps each one's ssh
// sessions, lease and state-store connection its own, as if an operator had started them in
// several shells; the state store is the only thing they share.

#include <zmigrate/cli/app.hpp>
#include <zmigrate/migration/evacuate.hpp>

#include <string>
#include <sys/types.h>
#include <vector>

namespace zmigrate::cli {

// The argv of the `zmigrate migrate` process for `request` (pure): `program`, the global options
// that were given on this command line (config, state and log dirs, API URLs, --take-over), then
// `--quiet --no-color migrate VM -n TARGET` with the request's policy and --bwlimit.
std::vector<std::string> migrate_argv(const std::string& program, const GlobalOptions& globals,
                                      const migration::MigrationRequest& request);

// The "what: why" of a failed child from its stderr (its last `zmigrate: error: ` line, else its
// last line), or how it ended when it printed nothing.
std::string child_error(const std::string& stderr_text, int exit_status);

class ProcessLauncher final : public migration::MigrationLauncher {
public:
  // `program` is this executable (self_executable()).
  ProcessLauncher(std::string program, GlobalOptions globals);
  // Asks the children still running to stop (SIGTERM) and waits for them: none is left behind
  // unaccounted for when the evacuation itself fails.
  ~ProcessLauncher() override;
  ProcessLauncher(const ProcessLauncher&) = delete;
  ProcessLauncher& operator=(const ProcessLauncher&) = delete;

  // Starts the child in its own process group (a terminal's Ctrl-C reaches only this process,
  // which passes one SIGTERM on: each child then stops at its next step boundary, once), stdin
  // and stdout on /dev/null, stderr into an unlinked temporary file.
  void start(const migration::MigrationRequest& request) override;
  // Waits for one of its children to end; returns nullopt at once when an interrupt signal
  // arrived since the last return (also one that came just before the call), else when one
  // arrives while it waits (at most a tick of 100 ms later). Reaps only its own children.
  std::optional<migration::MigrationExit> wait_any() override;
  void stop_all() override;

private:
  struct Child {
    pid_t pid = -1;
    std::string vm_uuid;
    int err_fd = -1;
    bool stopped = false;
  };
  std::string m_program;
  GlobalOptions m_globals;
  std::vector<Child> m_children;
  int m_interrupts_seen = 0; // interrupt_count() at the last wait_any that returned for one
};

// The path of the running executable (/proc/self/exe on Linux, /proc/self/path/a.out on
// illumos). Throws Error when neither can be read.
std::string self_executable();

} // namespace zmigrate::cli
