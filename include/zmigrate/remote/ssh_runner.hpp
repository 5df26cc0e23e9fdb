// SPDX-License-Identifier: MPL-2.0
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <zmigrate/remote/runner.hpp>
#include <zmigrate/util/log.hpp>

namespace zmigrate::remote {

struct SshOptions {
  std::string address;        // IP or name to connect to
  std::string host_label;     // for messages: CN hostname
  int port = 22;
  std::string user = "root";
  std::string identity_file;  // "" = ssh-agent, then ~/.ssh/id_ed25519, id_rsa
  std::string known_hosts;    // "" = ~/.ssh/known_hosts. Strict: unknown or changed key fails.
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::seconds keepalive{15};
};

// libssh session to one host, opened lazily on first run() and reused for every command.
// Host keys are verified strictly against `known_hosts` (never trust on first use).
class SshRunner final : public Runner {
public:
  SshRunner(SshOptions options, Logger& log);
  ~SshRunner() override;
  SshRunner(const SshRunner&) = delete;
  SshRunner& operator=(const SshRunner&) = delete;

  const std::string& host() const override;
  Result run(const Command& cmd, const RunOptions& options = {}) override;
  // Open the session now (connect, verify host key, authenticate). Throws like run().
  void connect();

private:
  struct Impl;
  std::unique_ptr<Impl> m_impl;
};

// Runs commands on this machine through /bin/sh -c render(cmd); same logging and options.
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
