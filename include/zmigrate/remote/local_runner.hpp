// SPDX-License-Identifier: MPL-2.0
#pragma once

#include <zmigrate/remote/runner.hpp>
#include <zmigrate/util/log.hpp>

#include <string>

namespace zmigrate::remote {

// Runs commands on this machine (the head node, tests) as `/bin/sh -c render(cmd)` in a new
// process group; same options, result and logging as SshRunner. On timeout the whole process
// group gets SIGTERM, then SIGKILL after a second. Throws Error(ExitCode::failure) when the
// process cannot be started (fork, pipe), UsageError when `cmd` cannot be rendered.
class LocalRunner final : public Runner {
public:
  explicit LocalRunner(Logger& log, std::string label = "localhost");
  const std::string& host() const override;
  Result run(const Command& cmd, const RunOptions& options = {}) override;

private:
  Logger& m_log;
  std::string m_label;
};

} // namespace zmigrate::remote
