// SPDX-License-Identifier: MPL-2.0
#pragma once
// The single choke point for remote commands. A command is a pipeline of argvs; every token is
// single-quoted by quote() and no one else ever concatenates text into a shell line. Runners get
// the shell text only from render(); logs get it only from render_for_log().

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace zmigrate::remote {

using Argv = std::vector<std::string>;

// One remote command: stages joined by " | ", optional redirections. The exit status of a
// pipeline is the status of its last stage (POSIX sh has no portable pipefail).
struct Command {
  std::vector<Argv> pipeline;
  std::string stdin_path;             // "< path" on the first stage when non-empty; absolute
  std::string stdout_path;            // "> path" on the last stage when non-empty; absolute
  bool stderr_to_stdout_last = false; // "2>&1" on the last stage (after any "> path")
  // Stages that start the next command of a sequence (" && " before them instead of " | "):
  // a few commands in one round trip, stopping at the first that fails, whose status is the
  // sequence's. No redirections with a sequence (render refuses them: which command would they
  // belong to?).
  std::vector<std::size_t> sequence_starts;
  // Concurrent lanes (append_concurrent): when lanes_end > 0, stages [0, lanes_end) are lanes
  // that run at once, each starting at stage 0 or at one of lane_starts; the command after
  // them (from lanes_end, a sequence start) runs only when every lane succeeded. The lanes'
  // status is that of a failed lane (0 when all succeeded).
  std::vector<std::size_t> lane_starts;
  std::size_t lanes_end = 0;
  // Tokens (stage, index) shown as <redacted> by render_for_log() (key material, secrets).
  std::vector<std::pair<std::size_t, std::size_t>> redact;

  Command() = default;
  Command(Argv argv) { pipeline.push_back(std::move(argv)); } // NOLINT: implicit on purpose
  // Append a stage: `Command{{"zfs", "send", snap}}.pipe({"pv", "-n"})`.
  Command& pipe(Argv argv) {
    pipeline.push_back(std::move(argv));
    return *this;
  }
  // Append a command run only when everything before it succeeded:
  // `Command{{"zfs", "release", ...}}.and_then({"zfs", "destroy", ...})`.
  Command& and_then(Argv argv) {
    sequence_starts.push_back(pipeline.size());
    pipeline.push_back(std::move(argv));
    return *this;
  }
  // Mark token `index` of stage `stage` as secret for logs.
  Command& redact_token(std::size_t stage, std::size_t index) {
    redact.emplace_back(stage, index);
    return *this;
  }
};

// Append `next` to `into` as the next command of a sequence (" && " before it; `into` empty:
// `next` alone), its own pipes, sequences and redactions kept. Throws UsageError when either
// has a redirection (render would refuse the sequence).
void append_sequence(Command& into, const Command& next);

// Make `into` (which must be empty) a set of lanes run at once: each of `lanes` (a pipeline or a
// sequence, no redirections) in the background, then a wait for every one of them; a later
// append_sequence() runs only when all of them succeeded. Fewer than two lanes: the one lane
// alone, as append_sequence would. Throws UsageError when `into` is not empty or a lane has a
// redirection or lanes of its own.
void append_concurrent(Command& into, const std::vector<Command>& lanes);

// POSIX-shell quoting of one token. Tokens made only of [A-Za-z0-9_@%+=:,./-] come back as they
// are (readable logs); anything else, including "", is wrapped in single quotes with each ' written
// as '\''. The result always stands for exactly `token` as one word. Throws UsageError when
// `token` holds a NUL byte (it cannot be passed through argv).
std::string quote(std::string_view token);

// The shell text for `cmd`: quote()d tokens, stages joined by " | " (" && " before a sequence's
// next command), quoted redirections. Lanes render as `L0 & zm_l0=$!; L1 & zm_l1=$!; zm_s=0;
// wait "$zm_l0" || zm_s=$?; wait "$zm_l1" || zm_s=$?; (exit "$zm_s")`, then ` && ` and the rest:
// fixed text, POSIX sh (ksh93, bash, dash).
// A first token that the shell would read as a reserved word or an assignment ("if", "!",
// "A=b") is quoted so it stays a command name. Throws UsageError on an empty pipeline, an empty
// argv, a NUL byte, a relative redirection path, a redact index out of range, or a sequence
// with a redirection or whose next command starts at stage 0 or past the end.
std::string render(const Command& cmd);

// render(cmd) with each redacted token replaced by <redacted>; for logs and error messages.
// Throws like render().
std::string render_for_log(const Command& cmd);

// The first `count` tokens of the first stage, redacted and quoted, joined by spaces
// ("zfs send"); a short name for the command in error messages. Never throws on empty commands.
std::string command_summary(const Command& cmd, std::size_t count = 2);

} // namespace zmigrate::remote
