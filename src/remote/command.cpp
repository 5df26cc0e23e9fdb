// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/remote/command.hpp>
#include <zmigrate/util/error.hpp>

#include <algorithm>
#include <array>

#include <fmt/format.h>

namespace zmigrate::remote {

namespace {

bool is_safe_char(char c) {
  if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
    return true;
  }
  switch (c) {
  case '_':
  case '@':
  case '%':
  case '+':
  case '=':
  case ':':
  case ',':
  case '.':
  case '/':
  case '-':
    return true;
  default:
    return false;
  }
}

// Printable for an error message without echoing control bytes to a terminal.
std::string describe_token(std::string_view token) {
  std::string shown;
  for (char c : token.substr(0, 60)) {
    const auto u = static_cast<unsigned char>(c);
    shown += (u < 0x20 || u == 0x7f) ? fmt::format("\\x{:02x}", u) : std::string(1, c);
  }
  if (token.size() > 60) {
    shown += "...";
  }
  return fmt::format("argument \"{}\"", shown);
}

std::string quote_always(std::string_view token) {
  std::string out;
  out.reserve(token.size() + 2);
  out += '\'';
  for (char c : token) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  out += '\'';
  return out;
}

// Unquoted, these would not be a command name in the first position of a simple command.
bool needs_quote_as_command_name(std::string_view token) {
  static constexpr std::array<std::string_view, 16> k_reserved = {
      "!",    "{",  "}",   "case", "do", "done", "elif",  "else",
      "esac", "fi", "for", "if",   "in", "then", "until", "while"};
  if (std::find(k_reserved.begin(), k_reserved.end(), token) != k_reserved.end()) {
    return true;
  }
  // NAME=value is an assignment, not a command. Quote whenever '=' appears: cheap and clear.
  return token.find('=') != std::string_view::npos;
}

std::string quote_path(const std::string& path, const char* what) {
  if (path.empty() || path.front() != '/') {
    throw UsageError(describe_token(path),
                     fmt::format("the {} redirection needs an absolute path", what));
  }
  return quote(path);
}

std::string render_impl(const Command& cmd, bool for_log) {
  if (cmd.pipeline.empty()) {
    throw UsageError("command", "empty pipeline: nothing to run");
  }
  for (const auto& [stage, index] : cmd.redact) {
    if (stage >= cmd.pipeline.size() || index >= cmd.pipeline[stage].size()) {
      throw UsageError("command",
                       fmt::format("redacted token ({}, {}) does not exist", stage, index));
    }
  }
  for (const std::size_t start : cmd.sequence_starts) {
    if (start == 0 || start >= cmd.pipeline.size()) {
      throw UsageError("command", fmt::format("sequence start {} is not a later stage", start));
    }
  }
  const bool redirects =
      !cmd.stdin_path.empty() || !cmd.stdout_path.empty() || cmd.stderr_to_stdout_last;
  if (!cmd.sequence_starts.empty() && redirects) {
    throw UsageError("command", "a sequence of commands cannot have redirections");
  }
  const auto is_sequence_start = [&](std::size_t s) {
    return std::find(cmd.sequence_starts.begin(), cmd.sequence_starts.end(), s) !=
           cmd.sequence_starts.end();
  };
  const bool lanes = cmd.lanes_end > 0;
  if (!lanes && !cmd.lane_starts.empty()) {
    throw UsageError("command", "lane starts without lanes");
  }
  if (lanes) {
    if (redirects) {
      throw UsageError("command", "concurrent lanes cannot have redirections");
    }
    if (cmd.lanes_end > cmd.pipeline.size() ||
        (cmd.lanes_end < cmd.pipeline.size() && !is_sequence_start(cmd.lanes_end))) {
      throw UsageError("command", fmt::format("lanes end {} is not the start of the command "
                                              "after them",
                                              cmd.lanes_end));
    }
    for (std::size_t i = 0; i < cmd.lane_starts.size(); ++i) {
      const std::size_t start = cmd.lane_starts[i];
      if (start == 0 || start >= cmd.lanes_end || is_sequence_start(start) ||
          (i > 0 && start <= cmd.lane_starts[i - 1])) {
        throw UsageError("command", fmt::format("lane start {} is not a later stage", start));
      }
    }
  }
  // After the last lane: wait for every lane; the status is a failed lane's.
  const auto join = [&] {
    const std::size_t n = cmd.lane_starts.size() + 1;
    std::string text = fmt::format(" & zm_l{}=$!; zm_s=0;", n - 1);
    for (std::size_t k = 0; k < n; ++k) {
      text += fmt::format(" wait \"$zm_l{}\" || zm_s=$?;", k);
    }
    return text + " (exit \"$zm_s\")";
  };
  std::string out;
  std::size_t lane = 0;
  for (std::size_t s = 0; s < cmd.pipeline.size(); ++s) {
    const Argv& argv = cmd.pipeline[s];
    if (argv.empty()) {
      throw UsageError("command", fmt::format("stage {} of the pipeline has no argv", s + 1));
    }
    if (s > 0) {
      if (lanes &&
          std::find(cmd.lane_starts.begin(), cmd.lane_starts.end(), s) != cmd.lane_starts.end()) {
        out += fmt::format(" & zm_l{}=$!; ", lane++);
      } else if (lanes && s == cmd.lanes_end) {
        out += join() + " && ";
      } else {
        out += is_sequence_start(s) ? " && " : " | ";
      }
    }
    for (std::size_t i = 0; i < argv.size(); ++i) {
      if (i > 0) {
        out += ' ';
      }
      // Quote even secrets, so a NUL is refused when rendering for the log as well.
      std::string quoted = quote(argv[i]);
      if (i == 0 && quoted.front() != '\'' && needs_quote_as_command_name(argv[i])) {
        quoted = quote_always(argv[i]);
      }
      const bool secret = std::find(cmd.redact.begin(), cmd.redact.end(),
                                    std::pair<std::size_t, std::size_t>{s, i}) != cmd.redact.end();
      out += (for_log && secret) ? std::string("<redacted>") : quoted;
    }
    if (s == 0 && !cmd.stdin_path.empty()) {
      out += " < " + quote_path(cmd.stdin_path, "stdin");
    }
    if (s + 1 == cmd.pipeline.size()) {
      if (!cmd.stdout_path.empty()) {
        out += " > " + quote_path(cmd.stdout_path, "stdout");
      }
      if (cmd.stderr_to_stdout_last) {
        out += " 2>&1";
      }
    }
  }
  if (lanes && cmd.lanes_end == cmd.pipeline.size()) {
    out += join();
  }
  return out;
}

} // namespace

std::string quote(std::string_view token) {
  if (token.find('\0') != std::string_view::npos) {
    throw UsageError(describe_token(token),
                     "contains a NUL byte, which cannot be passed to a command");
  }
  if (!token.empty() && std::all_of(token.begin(), token.end(), is_safe_char)) {
    return std::string(token);
  }
  return quote_always(token);
}

std::string render(const Command& cmd) {
  return render_impl(cmd, false);
}

std::string render_for_log(const Command& cmd) {
  return render_impl(cmd, true);
}

std::string command_summary(const Command& cmd, std::size_t count) {
  if (cmd.pipeline.empty()) {
    return "(empty command)";
  }
  std::string out;
  const Argv& argv = cmd.pipeline.front();
  for (std::size_t i = 0; i < argv.size() && i < count; ++i) {
    const bool secret = std::find(cmd.redact.begin(), cmd.redact.end(),
                                  std::pair<std::size_t, std::size_t>{0, i}) != cmd.redact.end();
    if (i > 0) {
      out += ' ';
    }
    if (secret) {
      out += "<redacted>";
    } else if (argv[i].find('\0') != std::string::npos) {
      out += "<invalid>";
    } else {
      out += quote(argv[i]);
    }
  }
  return out.empty() ? std::string("(empty command)") : out;
}

namespace {

// `next`'s stages, sequence starts and redactions appended to `into` from stage `at`.
void append_stages(Command& into, const Command& next) {
  const std::size_t at = into.pipeline.size();
  for (const std::size_t start : next.sequence_starts) {
    into.sequence_starts.push_back(at + start);
  }
  for (const auto& [stage, index] : next.redact) {
    into.redact.emplace_back(at + stage, index);
  }
  into.pipeline.insert(into.pipeline.end(), next.pipeline.begin(), next.pipeline.end());
}

void check_joinable(const Command& c) {
  if (!c.stdin_path.empty() || !c.stdout_path.empty() || c.stderr_to_stdout_last) {
    throw UsageError("command", "a sequence of commands cannot have redirections");
  }
}

} // namespace

void append_sequence(Command& into, const Command& next) {
  check_joinable(into);
  check_joinable(next);
  if (next.lanes_end > 0) {
    throw UsageError("command", "concurrent lanes can only start a command");
  }
  if (next.pipeline.empty()) {
    return;
  }
  if (!into.pipeline.empty()) {
    into.sequence_starts.push_back(into.pipeline.size());
  }
  append_stages(into, next);
}

void append_concurrent(Command& into, const std::vector<Command>& lanes) {
  if (!into.pipeline.empty()) {
    throw UsageError("command", "concurrent lanes can only start a command");
  }
  std::vector<const Command*> given;
  for (const Command& lane : lanes) {
    check_joinable(lane);
    if (lane.lanes_end > 0) {
      throw UsageError("command", "a lane cannot have lanes of its own");
    }
    if (!lane.pipeline.empty()) {
      given.push_back(&lane);
    }
  }
  if (given.size() < 2) {
    for (const Command* lane : given) {
      append_sequence(into, *lane);
    }
    return;
  }
  for (const Command* lane : given) {
    if (!into.pipeline.empty()) {
      into.lane_starts.push_back(into.pipeline.size());
    }
    append_stages(into, *lane);
  }
  into.lanes_end = into.pipeline.size();
}

} // namespace zmigrate::remote
