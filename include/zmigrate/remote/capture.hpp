// SPDX-License-Identifier: MPL-2.0
#pragma once
// What every Runner does with a command's output, in one place: stream or capture stdout,
// split stderr into lines for the callback while keeping its tail, count bytes, and write the
// one log line per command. Used by LocalRunner, SshRunner and tests/fakes/fake_runner.hpp.

#include <zmigrate/remote/runner.hpp>
#include <zmigrate/util/log.hpp>

#include <string>
#include <string_view>

namespace zmigrate::remote {

// Feeds output chunks into `result` following `options` (on_stdout, on_stderr_line). Callback
// exceptions propagate out of add_stdout()/add_stderr()/finish().
class OutputCollector {
public:
  OutputCollector(const RunOptions& options, Result& result);
  // Stdout bytes as they arrive: to on_stdout when set, else appended to result.out.
  void add_stdout(std::string_view data);
  // Stderr bytes as they arrive: appended to result.err (tail of k_max_err_bytes kept) and, when
  // on_stderr_line is set, each complete line passed to it.
  void add_stderr(std::string_view data);
  // End of output: passes a final unterminated stderr line to on_stderr_line.
  void finish();

private:
  const RunOptions& m_options;
  Result& m_result;
  std::string m_partial_line;
};

// Append "timed out after N s" (on its own line) to result.err and mark the result as killed.
void mark_timed_out(Result& result, std::chrono::milliseconds timeout);

// The log line for one finished command: debug when it exited 0, warn otherwise, with fields
// {host, argv (render_for_log), exit_status, duration_ms, bytes_out, bytes_err[, timed_out]}.
// Never logs stdin data or redacted tokens.
void log_command(Logger& log, const std::string& host, const Command& cmd, const Result& result);

} // namespace zmigrate::remote
