// SPDX-License-Identifier: MPL-2.0
#pragma once
// The remote-execution seam. SshRunner (libssh, one session per host per zmigrate command) and
// LocalRunner (fork/exec via /bin/sh -c render(cmd)) implement it; FakeRunner records argv.
// Every implementation logs host, argv (redacted), duration and exit status for every command.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <zmigrate/remote/command.hpp>

namespace zmigrate::remote {

struct Result {
  int exit_status = -1; // -1 when killed by a signal or when no status came back
  std::string out;
  std::string err;
  std::chrono::milliseconds duration{0};
  bool ok() const { return exit_status == 0; }
};

struct RunOptions {
  // Data written to the command's stdin, then EOF. Empty = no stdin (EOF at once).
  std::string stdin_data;
  // 0 = no limit. On expiry the channel is closed and the command counted as failed (-1) with
  // err "timed out after N s".
  std::chrono::milliseconds timeout{0};
  // Called for each complete line of stderr as it arrives (progress counters like `pv -n`).
  std::function<void(std::string_view line)> on_stderr_line;
  // Called with each chunk of stdout as it arrives; when set, Result::out stays empty
  // (streams never pass through memory whole).
  std::function<void(std::string_view chunk)> on_stdout;
};

class Runner {
public:
  virtual ~Runner() = default;
  // Name for messages and logs: the CN hostname (or address).
  virtual const std::string& host() const = 0;
  // Run `cmd`, wait, and return its result. A non-zero exit is a value, not an exception.
  // Throws Error(ExitCode::remote, ...) when the transport fails (connect, auth, host key, lost
  // session); the message names the host and what to check.
  virtual Result run(const Command& cmd, const RunOptions& options = {}) = 0;
};

// Run and throw Error(code, "<host>: <argv[0..1]>", stderr) unless the exit status is 0.
Result run_checked(Runner& runner, const Command& cmd, const RunOptions& options = {});

} // namespace zmigrate::remote
