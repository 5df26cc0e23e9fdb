// SPDX-License-Identifier: MPL-2.0
#pragma once
// The remote-execution seam. SshRunner (libssh, one session per host, reused) and LocalRunner
// (fork/exec of /bin/sh -c render(cmd)) implement it; tests/fakes/fake_runner.hpp records argv.
// Every implementation logs one line per command: host, argv (redacted), exit status, duration
// and byte counts; never stdin data.

#include <zmigrate/remote/command.hpp>
#include <zmigrate/util/error.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace zmigrate::remote {

struct Result {
  int exit_status = -1; // -1 when killed by a signal, timed out, or no status came back
  std::string out;      // stdout; empty when RunOptions::on_stdout was set
  std::string err;      // stderr (always captured; only the last k_max_err_bytes are kept)
  std::chrono::milliseconds duration{0};
  std::uint64_t bytes_out = 0; // stdout bytes received, streamed or not
  std::uint64_t bytes_err = 0; // stderr bytes received
  bool timed_out = false;      // RunOptions::timeout expired; the command was killed
  bool ok() const { return exit_status == 0; }
};

// Result::err keeps at most this many bytes (the tail: the last lines say why).
inline constexpr std::size_t k_max_err_bytes = 1024 * 1024;

// How long a command may run when the caller does not say (RunOptions::timeout).
inline constexpr std::chrono::milliseconds k_default_timeout = std::chrono::minutes(5);
// RunOptions::timeout for commands that legitimately run for hours (zfs send streams): no
// limit. Their liveness comes from TCP keepalive, progress and interrupts instead.
inline constexpr std::chrono::milliseconds k_no_timeout{0};
// How often a waiting runner looks at interrupt_requested().
inline constexpr std::chrono::milliseconds k_interrupt_poll = std::chrono::milliseconds(200);

struct RunOptions {
  // Data written to the command's stdin, then EOF. Empty = no stdin (EOF at once). Never logged.
  std::string stdin_data;
  // Counted from the start of the command (connecting has its own timeout); k_no_timeout (0) =
  // no limit. Every command has a limit unless its caller opts out. On expiry exit_status is -1,
  // timed_out is true and err ends with "timed out after N s".
  // LocalRunner kills the command's process group. SshRunner asks for SIGTERM and closes the
  // channel; OpenSSH ignores signals for root, so the remote command ends on EOF/SIGPIPE, and one
  // that neither reads nor writes may keep running there (callers clean up).
  std::chrono::milliseconds timeout = k_default_timeout;
  // Interrupts (util/interrupt.hpp). The rule: a command is stopped by an interrupt that arrives
  // *while it runs*; one started after the interrupt (the cleanup that follows it) runs to the
  // end, so cleanup always completes (a third signal kills the process). Runners check every
  // k_interrupt_poll; when it fires they stop the command as on a timeout (LocalRunner kills its
  // process group, SshRunner closes the channel) and throw Error(ExitCode::interrupted,
  // "<host>: <argv0>", "interrupted; ..."). false: never stopped by an interrupt (a command
  // that must not be cut in the middle; it still has its timeout).
  bool interruptible = true;
  // Called for each complete line of stderr (without the '\n') as it arrives, and once for a
  // final unterminated line (progress counters like `pv -n`).
  std::function<void(std::string_view line)> on_stderr_line;
  // Called with each chunk of stdout as it arrives; when set, Result::out stays empty (streams
  // never pass through memory whole). An exception thrown here ends the command and propagates.
  std::function<void(std::string_view chunk)> on_stdout;
};

class Runner {
public:
  virtual ~Runner() = default;
  // Name for messages and logs: the CN hostname (or address).
  virtual const std::string& host() const = 0;
  // Run `cmd`, wait, and return its result. A non-zero exit (or a timeout) is a value, not an
  // exception. Throws UsageError when `cmd` cannot be rendered, Error(ExitCode::remote, ...) when
  // the transport fails (connect, auth, host key, lost session); the message names the host and
  // what to check. Throws Error(ExitCode::interrupted) when an interrupt stopped it (see
  // RunOptions::interruptible).
  virtual Result run(const Command& cmd, const RunOptions& options = {}) = 0;
};

// Run `cmd` and return its result when the exit status is 0. Otherwise throws
// Error(`code`, "<host>: <argv[0]> <argv[1]>", "exit status N: <trimmed stderr>") (or
// "timed out after N s"). Transport errors propagate from run() unchanged.
Result run_checked(Runner& runner, const Command& cmd, const RunOptions& options = {},
                   ExitCode code = ExitCode::failure);

// For runner implementations: whether `options` lets an interrupt stop a command starting now
// (interruptible, and no interrupt has arrived yet), and the error they throw when one did.
bool interruptible_now(const RunOptions& options);
[[noreturn]] void throw_interrupted(const std::string& host, const Command& cmd,
                                    std::chrono::milliseconds ran);

} // namespace zmigrate::remote
