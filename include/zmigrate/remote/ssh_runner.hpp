// SPDX-License-Identifier: MPL-2.0
#pragma once

#include <zmigrate/remote/local_runner.hpp> // for existing includes of LocalRunner from here
#include <zmigrate/remote/runner.hpp>
#include <zmigrate/util/log.hpp>

#include <chrono>
#include <memory>
#include <string>

namespace zmigrate::remote {

struct SshOptions {
  std::string address;    // IP or name to connect to
  std::string host_label; // for messages and logs: CN hostname ("" = address)
  int port = 22;
  std::string user = "root";
  std::string identity_file; // "" = ssh-agent, then ~/.ssh/id_ed25519, ~/.ssh/id_rsa
  std::string known_hosts;   // "" = ~/.ssh/known_hosts. Strict: unknown or changed key fails.
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::seconds keepalive{15}; // 0 = none
};

// libssh session to one host, opened lazily on first run() and reused for every command (each
// run() opens a new exec channel on it). Host keys are verified strictly against `known_hosts`
// (never trust on first use; the file is never written). When the session is found dead before
// a command starts, it is reconnected once; a session lost during a command fails that command.
// Not thread-safe: one SshRunner per thread.
class SshRunner final : public Runner {
public:
  SshRunner(SshOptions options, Logger& log);
  ~SshRunner() override;
  SshRunner(const SshRunner&) = delete;
  SshRunner& operator=(const SshRunner&) = delete;

  const std::string& host() const override;
  Result run(const Command& cmd, const RunOptions& options = {}) override;
  // Open the session now (connect, verify host key, authenticate); no-op when connected.
  // Throws Error(ExitCode::remote, "<host> (<address>)", why) naming what to check.
  void connect();
  // Close the session (the next run() connects again).
  void disconnect();

private:
  struct Impl;
  std::unique_ptr<Impl> m_impl;
};

} // namespace zmigrate::remote
