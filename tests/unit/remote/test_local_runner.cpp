// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/remote/local_runner.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/log.hpp>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>

using zmigrate::remote::Command;
using zmigrate::remote::LocalRunner;
using zmigrate::remote::Result;
using zmigrate::remote::RunOptions;

namespace {

struct LogLine {
  zmigrate::LogLevel level;
  std::string msg;
  nlohmann::json fields;
};

class RecordingLogger final : public zmigrate::Logger {
public:
  std::vector<LogLine> lines;
  void log(zmigrate::LogLevel level, std::string_view msg, const nlohmann::json& fields) override {
    lines.push_back(LogLine{level, std::string(msg), fields});
  }
};

bool process_gone(pid_t pid) {
  for (int i = 0; i < 200; ++i) {
    if (::kill(pid, 0) != 0) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

} // namespace

TEST_CASE("remote::LocalRunner::run", "[remote]") {
  RecordingLogger log;
  LocalRunner runner(log, "head");
  CHECK(runner.host() == "head");

  SECTION("exit status, stdout and stderr kept apart") {
    Result r = runner.run(Command{{"sh", "-c", "echo out; echo err >&2; exit 3"}});
    CHECK(r.exit_status == 3);
    CHECK_FALSE(r.ok());
    CHECK(r.out == "out\n");
    CHECK(r.err == "err\n");
    CHECK(r.bytes_out == 4);
    CHECK(r.bytes_err == 4);
    CHECK_FALSE(r.timed_out);
  }

  SECTION("killed by a signal is -1") {
    // Process group 0 is the group the runner made: the shell it started dies too.
    CHECK(runner.run(Command{{"kill", "-9", "0"}}).exit_status == -1);
  }

  SECTION("stdin is delivered, then EOF; big stdin and stdout do not deadlock") {
    std::string data(3 * 1024 * 1024, 'x');
    for (std::size_t i = 0; i < data.size(); i += 997) {
      data[i] = static_cast<char>('a' + i % 26);
    }
    RunOptions opts;
    opts.stdin_data = data;
    Result r = runner.run(Command{{"cat"}}, opts);
    CHECK(r.ok());
    CHECK(r.out == data);
  }

  SECTION("no stdin data means EOF at once") {
    Result r = runner.run(Command{{"cat"}});
    CHECK(r.ok());
    CHECK(r.out.empty());
  }

  SECTION("a command that ignores its stdin does not hang or kill us with SIGPIPE") {
    RunOptions opts;
    opts.stdin_data = std::string(4 * 1024 * 1024, 'y');
    Result r = runner.run(Command{{"true"}}, opts);
    CHECK(r.ok());
  }

  SECTION("big stdout and stderr at the same time do not deadlock") {
    Result r = runner.run(
        Command{{"sh", "-c", "head -c 3000000 /dev/zero >&2 & head -c 3000000 /dev/zero; wait"}});
    CHECK(r.ok());
    CHECK(r.out.size() == 3000000);
    CHECK(r.bytes_err == 3000000);
    CHECK(r.err.size() == zmigrate::remote::k_max_err_bytes);
  }

  SECTION("stderr keeps only its tail") {
    Result r = runner.run(Command{{"sh", "-c", "head -c 5000000 /dev/zero >&2; echo last >&2"}});
    CHECK(r.bytes_err == 5000005);
    CHECK(r.err.size() == zmigrate::remote::k_max_err_bytes);
    CHECK(r.err.substr(r.err.size() - 5) == "last\n");
  }

  SECTION("stdout streams to the callback, 20 MB without keeping it") {
    std::uint64_t seen = 0;
    std::size_t calls = 0;
    RunOptions opts;
    opts.on_stdout = [&](std::string_view chunk) {
      seen += chunk.size();
      ++calls;
    };
    Result r = runner.run(Command{{"head", "-c", "20000000", "/dev/zero"}}, opts);
    CHECK(r.ok());
    CHECK(r.out.empty());
    CHECK(seen == 20000000);
    CHECK(r.bytes_out == 20000000);
    CHECK(calls > 1);
  }

  SECTION("stderr lines arrive one by one, the last one even without a newline") {
    std::vector<std::string> lines;
    RunOptions opts;
    opts.on_stderr_line = [&](std::string_view line) { lines.emplace_back(line); };
    Result r = runner.run(
        Command{{"sh", "-c", "printf '10\\n20\\n' >&2; sleep 0.05; printf 30 >&2"}}, opts);
    CHECK(r.ok());
    CHECK(lines == std::vector<std::string>{"10", "20", "30"});
    CHECK(r.err == "10\n20\n30");
  }

  SECTION("timeout kills the whole process group") {
    char path_template[] = "/tmp/zmigrate-test-pid-XXXXXX";
    const int fd = ::mkstemp(path_template);
    REQUIRE(fd >= 0);
    ::close(fd);
    const std::string pid_file = path_template;
    RunOptions opts;
    opts.timeout = std::chrono::milliseconds(300);
    const auto start = std::chrono::steady_clock::now();
    Command cmd{{"sh", "-c", "sleep 30 & echo $! > \"$1\"; echo partial; wait", "sh", pid_file}};
    Result r = runner.run(cmd, opts);
    const auto took = std::chrono::steady_clock::now() - start;
    CHECK(r.exit_status == -1);
    CHECK(r.timed_out);
    CHECK(r.out == "partial\n");
    CHECK(r.err == "timed out after 0.3 s");
    CHECK(took < std::chrono::seconds(5));
    std::ifstream f(pid_file);
    pid_t background = 0;
    f >> background;
    REQUIRE(background > 0);
    CHECK(process_gone(background));
    ::unlink(pid_file.c_str());
  }

  SECTION("timeout when the shell has closed its pipes") {
    RunOptions opts;
    opts.timeout = std::chrono::seconds(1);
    Result r = runner.run(Command{{"sh", "-c", "exec >&- 2>&-; sleep 30"}}, opts);
    CHECK(r.timed_out);
    CHECK(r.err == "timed out after 1 s");
  }

  SECTION("a throwing callback ends the command and propagates") {
    RunOptions opts;
    opts.on_stdout = [](std::string_view) { throw std::runtime_error("disk full"); };
    const auto start = std::chrono::steady_clock::now();
    CHECK_THROWS_WITH(runner.run(Command{{"yes"}}, opts), "disk full");
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
  }

  SECTION("one log line per command, stdin and secrets never logged") {
    RunOptions opts;
    opts.stdin_data = "STDIN-SECRET";
    runner.run(Command{{"cat", "/dev/null"}}, opts);
    runner.run(Command{{"sh", "-c", "exit 2", "TOKEN-SECRET"}}.redact_token(0, 3));
    REQUIRE(log.lines.size() == 2);
    CHECK(log.lines[0].level == zmigrate::LogLevel::debug);
    CHECK(log.lines[0].fields["host"] == "head");
    CHECK(log.lines[0].fields["argv"] == "cat /dev/null");
    CHECK(log.lines[0].fields["exit_status"] == 0);
    CHECK(log.lines[0].fields.contains("duration_ms"));
    CHECK(log.lines[0].fields["bytes_out"] == 0);
    CHECK(log.lines[0].fields["bytes_err"] == 0);
    CHECK(log.lines[1].level == zmigrate::LogLevel::warn);
    CHECK(log.lines[1].fields["exit_status"] == 2);
    CHECK(log.lines[1].fields["argv"] == "sh -c 'exit 2' <redacted>");
    for (const LogLine& line : log.lines) {
      const std::string dumped = line.msg + line.fields.dump();
      CHECK(dumped.find("SECRET") == std::string::npos);
    }
  }

  SECTION("a command that cannot be rendered is refused before anything runs") {
    CHECK_THROWS_AS(runner.run(Command{{"echo", std::string("\0", 1)}}), zmigrate::UsageError);
    CHECK(log.lines.empty());
  }
}
