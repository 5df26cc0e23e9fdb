// SPDX-License-Identifier: MPL-2.0
#pragma once
// FakeRunner: a Runner that records every command it is asked to run and answers from canned
// results. Tests assert on the record, e.g.
//   CHECK(runner.commands == std::vector<std::string>{"zfs snapshot zones/abc@zm-1"});
// Commands are rendered with the real render(), so bad tokens (NUL) throw as in production,
// and the strings in `commands` are exactly the shell text a real runner would send.
//
// Matching, for each run(): exact rules first (in the order added), then prefix, regex and
// handler rules in the order added; rules given a `times` count stop matching when used up.
// Nothing matches → the default result (exit 0, no output) unless set_default() changed it.
// Streaming callbacks (on_stdout, on_stderr_line) are served from the canned result just as a
// real runner would serve them.

#include <zmigrate/remote/capture.hpp>
#include <zmigrate/remote/command.hpp>
#include <zmigrate/remote/runner.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <regex>
#include <string>
#include <utility>
#include <vector>

namespace zmigrate::fakes {

// A canned result: exit `status` with `out` and `err`.
inline remote::Result result(int status, std::string out = {}, std::string err = {}) {
  remote::Result r;
  r.exit_status = status;
  r.out = std::move(out);
  r.err = std::move(err);
  return r;
}
inline remote::Result ok(std::string out = {}) {
  return result(0, std::move(out));
}
inline remote::Result failed(int status, std::string err) {
  return result(status, {}, std::move(err));
}
// The result of a command killed by RunOptions::timeout.
inline remote::Result timed_out(std::chrono::milliseconds timeout) {
  remote::Result r = result(-1);
  remote::mark_timed_out(r, timeout);
  return r;
}

struct RecordedRun {
  std::string rendered; // remote::render(command)
  remote::Command command;
  std::string stdin_data;
  std::chrono::milliseconds timeout{0};
  bool streamed_stdout = false; // on_stdout was set
};

class FakeRunner final : public remote::Runner {
public:
  // Return a result to answer the command, or nullopt to let later rules try. May throw (e.g.
  // Error(ExitCode::remote, ...) to simulate a lost connection).
  using Handler = std::function<std::optional<remote::Result>(const remote::Command&,
                                                              const remote::RunOptions&)>;

  explicit FakeRunner(std::string host = "cn1") : m_host(std::move(host)) {}

  // --- The record ---
  std::vector<std::string> commands; // rendered text of every run(), in order
  std::vector<RecordedRun> runs;     // full detail of every run(), in order

  // --- Canned answers; each returns *this for chaining. `times` 0 = unlimited. ---
  FakeRunner& on(std::string rendered, remote::Result r, int times = 0) {
    m_rules.push_back(Rule{Kind::exact, std::move(rendered), {}, {}, std::move(r), times});
    return *this;
  }
  FakeRunner& on_prefix(std::string prefix, remote::Result r, int times = 0) {
    m_rules.push_back(Rule{Kind::prefix, std::move(prefix), {}, {}, std::move(r), times});
    return *this;
  }
  // `pattern` is an ECMAScript regex searched for (std::regex_search) in the rendered text.
  FakeRunner& on_regex(const std::string& pattern, remote::Result r, int times = 0) {
    m_rules.push_back(Rule{Kind::regex, pattern, std::regex(pattern), {}, std::move(r), times});
    return *this;
  }
  FakeRunner& on_handler(Handler handler, int times = 0) {
    m_rules.push_back(Rule{Kind::handler, {}, {}, std::move(handler), {}, times});
    return *this;
  }
  // The answer when no rule matches (initially exit 0, empty output).
  FakeRunner& set_default(remote::Result r) {
    m_default = std::move(r);
    return *this;
  }
  // Forget the record (rules stay).
  void clear_record() {
    commands.clear();
    runs.clear();
  }
  // Rendered commands starting with `prefix`, in order.
  std::vector<std::string> commands_starting_with(const std::string& prefix) const {
    std::vector<std::string> found;
    for (const std::string& c : commands) {
      if (c.rfind(prefix, 0) == 0) {
        found.push_back(c);
      }
    }
    return found;
  }

  // --- Runner ---
  const std::string& host() const override { return m_host; }

  remote::Result run(const remote::Command& cmd, const remote::RunOptions& options = {}) override {
    std::string rendered = remote::render(cmd);
    commands.push_back(rendered);
    runs.push_back(RecordedRun{rendered, cmd, options.stdin_data, options.timeout,
                               static_cast<bool>(options.on_stdout)});
    remote::Result canned = answer(cmd, options, rendered);

    // Serve the canned output through the same collector the real runners use.
    remote::Result r;
    r.exit_status = canned.exit_status;
    r.timed_out = canned.timed_out;
    r.duration = canned.duration;
    remote::OutputCollector collector(options, r);
    collector.add_stdout(canned.out);
    collector.add_stderr(canned.err);
    collector.finish();
    return r;
  }

private:
  enum class Kind { exact, prefix, regex, handler };
  struct Rule {
    Kind kind;
    std::string text;
    std::regex pattern;
    Handler handler;
    remote::Result result;
    int remaining; // 0 = unlimited; -1 = used up
  };

  static bool use(Rule& rule) {
    if (rule.remaining < 0) {
      return false;
    }
    if (rule.remaining > 0 && --rule.remaining == 0) {
      rule.remaining = -1;
    }
    return true;
  }

  remote::Result answer(const remote::Command& cmd, const remote::RunOptions& options,
                        const std::string& rendered) {
    for (Rule& rule : m_rules) {
      if (rule.kind == Kind::exact && rule.remaining >= 0 && rule.text == rendered && use(rule)) {
        return rule.result;
      }
    }
    for (Rule& rule : m_rules) {
      if (rule.remaining < 0) {
        continue;
      }
      switch (rule.kind) {
      case Kind::exact:
        break;
      case Kind::prefix:
        if (rendered.rfind(rule.text, 0) == 0 && use(rule)) {
          return rule.result;
        }
        break;
      case Kind::regex:
        if (std::regex_search(rendered, rule.pattern) && use(rule)) {
          return rule.result;
        }
        break;
      case Kind::handler:
        if (std::optional<remote::Result> r = rule.handler(cmd, options)) {
          use(rule);
          return *r;
        }
        break;
      }
    }
    return m_default;
  }

  std::string m_host;
  std::vector<Rule> m_rules;
  remote::Result m_default = ok();
};

} // namespace zmigrate::fakes
