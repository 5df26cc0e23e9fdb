// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/remote/capture.hpp>

#include <catch2/catch.hpp>

using zmigrate::remote::Command;
using zmigrate::remote::k_max_err_bytes;
using zmigrate::remote::OutputCollector;
using zmigrate::remote::Result;
using zmigrate::remote::RunOptions;

namespace {

struct Line {
  zmigrate::LogLevel level;
  std::string msg;
  nlohmann::json fields;
};

class RecordingLogger final : public zmigrate::Logger {
public:
  std::vector<Line> lines;
  void log(zmigrate::LogLevel level, std::string_view msg, const nlohmann::json& fields) override {
    lines.push_back(Line{level, std::string(msg), fields});
  }
};

} // namespace

TEST_CASE("remote::OutputCollector", "[remote]") {
  Result result;
  RunOptions options;

  SECTION("captures stdout and stderr and counts bytes") {
    OutputCollector c(options, result);
    c.add_stdout("ab");
    c.add_stdout("");
    c.add_stdout("c");
    c.add_stderr("e\n");
    c.finish();
    CHECK(result.out == "abc");
    CHECK(result.err == "e\n");
    CHECK(result.bytes_out == 3);
    CHECK(result.bytes_err == 2);
  }

  SECTION("streams stdout; stderr lines split across chunks") {
    std::string streamed;
    std::vector<std::string> lines;
    options.on_stdout = [&](std::string_view chunk) { streamed += chunk; };
    options.on_stderr_line = [&](std::string_view line) { lines.emplace_back(line); };
    OutputCollector c(options, result);
    c.add_stdout("data");
    c.add_stderr("12");
    c.add_stderr("3\n45");
    c.add_stderr("\n\n6");
    CHECK(lines == std::vector<std::string>{"123", "45", ""});
    c.finish();
    CHECK(lines == std::vector<std::string>{"123", "45", "", "6"});
    CHECK(streamed == "data");
    CHECK(result.out.empty());
    CHECK(result.bytes_out == 4);
    CHECK(result.err == "123\n45\n\n6");
  }

  SECTION("stderr keeps its tail only") {
    OutputCollector c(options, result);
    const std::string chunk(64 * 1024, 'x');
    for (int i = 0; i < 40; ++i) {
      c.add_stderr(chunk);
    }
    c.add_stderr("END");
    c.finish();
    CHECK(result.bytes_err == 40 * chunk.size() + 3);
    CHECK(result.err.size() == k_max_err_bytes);
    CHECK(result.err.substr(result.err.size() - 3) == "END");
  }

  SECTION("a line without newlines cannot grow without bound") {
    std::vector<std::size_t> sizes;
    options.on_stderr_line = [&](std::string_view line) { sizes.push_back(line.size()); };
    OutputCollector c(options, result);
    const std::string chunk(512 * 1024, 'p');
    for (int i = 0; i < 5; ++i) {
      c.add_stderr(chunk);
    }
    c.finish();
    std::size_t total = 0;
    for (std::size_t s : sizes) {
      CHECK(s <= k_max_err_bytes + chunk.size());
      total += s;
    }
    CHECK(total == 5 * chunk.size());
  }
}

TEST_CASE("remote::mark_timed_out", "[remote]") {
  Result r;
  r.exit_status = 0;
  r.err = "partial";
  zmigrate::remote::mark_timed_out(r, std::chrono::milliseconds(2500));
  CHECK(r.exit_status == -1);
  CHECK(r.timed_out);
  CHECK(r.err == "partial\ntimed out after 2.5 s");
}

TEST_CASE("remote::log_command", "[remote]") {
  RecordingLogger log;
  Result r;
  r.exit_status = 0;
  r.duration = std::chrono::milliseconds(12);
  r.bytes_out = 5;
  r.out = "SECRET-OUT";
  Command cmd{{"zfs", "recv", "KEY"}};
  cmd.redact_token(0, 2);
  zmigrate::remote::log_command(log, "cn2", cmd, r);
  r.exit_status = 1;
  r.timed_out = true;
  zmigrate::remote::log_command(log, "cn2", cmd, r);
  REQUIRE(log.lines.size() == 2);
  CHECK(log.lines[0].level == zmigrate::LogLevel::debug);
  CHECK(log.lines[0].fields == nlohmann::json{{"host", "cn2"},
                                              {"argv", "zfs recv <redacted>"},
                                              {"exit_status", 0},
                                              {"duration_ms", 12},
                                              {"bytes_out", 5},
                                              {"bytes_err", 0}});
  CHECK(log.lines[1].level == zmigrate::LogLevel::warn);
  CHECK(log.lines[1].fields["timed_out"] == true);
}
