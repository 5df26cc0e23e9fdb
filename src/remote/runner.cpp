// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/remote/runner.hpp>
#include <zmigrate/util/interrupt.hpp>

#include <fmt/format.h>

namespace zmigrate::remote {

namespace {

// The last few lines of stderr: enough to say why, short enough for one error message.
std::string trimmed_stderr(const std::string& err) {
  constexpr std::size_t k_max_chars = 2000;
  constexpr int k_max_lines = 10;
  const std::size_t begin = err.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) {
    return {};
  }
  const std::size_t end = err.find_last_not_of(" \t\r\n") + 1;
  std::size_t from = end;
  for (int lines = 0; lines < k_max_lines && from > begin; ++lines) {
    const std::size_t nl = err.rfind('\n', from - 1);
    from = (nl == std::string::npos || nl < begin) ? begin : nl + 1;
    if (from > begin) {
      --from; // step onto the '\n' so the next search finds the line before
    }
  }
  if (from > begin && err[from] == '\n') {
    ++from;
  }
  if (end - from > k_max_chars) {
    from = end - k_max_chars;
  }
  std::string text = err.substr(from, end - from);
  return from > begin ? "..." + text : text;
}

} // namespace

Result run_checked(Runner& runner, const Command& cmd, const RunOptions& options, ExitCode code) {
  Result result = runner.run(cmd, options);
  if (result.ok()) {
    return result;
  }
  const std::string what = fmt::format("{}: {}", runner.host(), command_summary(cmd));
  const std::string err = trimmed_stderr(result.err);
  if (result.timed_out) {
    throw Error(code, what, err);
  }
  const std::string status = result.exit_status < 0
                                 ? std::string("killed by a signal or no exit status")
                                 : fmt::format("exit status {}", result.exit_status);
  throw Error(code, what, err.empty() ? status : fmt::format("{}: {}", status, err));
}

bool interruptible_now(const RunOptions& options) {
  return options.interruptible && !interrupt_requested();
}

void throw_interrupted(const std::string& host, const Command& cmd, std::chrono::milliseconds ran) {
  throw Error(ExitCode::interrupted, fmt::format("{}: {}", host, command_summary(cmd, 1)),
              fmt::format("interrupted; the command was stopped after {:.1f} s. Rerun the same "
                          "zmigrate command to go on, or abort",
                          static_cast<double>(ran.count()) / 1000.0));
}

} // namespace zmigrate::remote
