// SPDX-License-Identifier: MPL-2.0
#pragma once
// The single choke point for remote commands. A command is a pipeline of argvs; every token is
// validated and single-quoted by quote() and never concatenated into a shell by anyone else.

#include <string>
#include <string_view>
#include <vector>

namespace zmigrate::remote {

using Argv = std::vector<std::string>;

// One remote command: stages joined by '|'. Optional redirections take validated paths.
struct Command {
  std::vector<Argv> pipeline;
  std::string stdin_path;   // "< path" when non-empty
  std::string stdout_path;  // "> path" when non-empty
  bool stderr_to_stdout_last = false; // "2>&1" on the last stage
  // Indices of tokens (stage, index) to print as "<redacted>" in logs (key material).
  std::vector<std::pair<std::size_t, std::size_t>> redact;

  Command() = default;
  Command(Argv argv) { pipeline.push_back(std::move(argv)); } // NOLINT: implicit on purpose
  Command& pipe(Argv argv) {
    pipeline.push_back(std::move(argv));
    return *this;
  }
};

// POSIX-shell single-quote `token`. Throws UsageError when the token holds a NUL byte or is
// not valid to pass (empty tokens are allowed and become '').
std::string quote(std::string_view token);

// The shell text for `cmd`, built only from quote()d tokens. Throws UsageError on an empty
// pipeline or an empty argv.
std::string render(const Command& cmd);

// The argv as it goes into the log: redacted tokens replaced.
std::string render_for_log(const Command& cmd);

} // namespace zmigrate::remote
