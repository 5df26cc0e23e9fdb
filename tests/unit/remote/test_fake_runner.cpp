// SPDX-License-Identifier: MPL-2.0
// The fake is shared by the ZFS and migration tests: pin down its matching rules.
#include <zmigrate/util/error.hpp>

#include <fakes/fake_runner.hpp>

#include <catch2/catch.hpp>

using zmigrate::fakes::FakeRunner;
namespace fakes = zmigrate::fakes;
namespace remote = zmigrate::remote;

TEST_CASE("fakes::FakeRunner", "[remote]") {
  FakeRunner runner("cn7");
  CHECK(runner.host() == "cn7");

  SECTION("records rendered commands and detail; default is ok and empty") {
    remote::RunOptions opts;
    opts.stdin_data = "secret";
    remote::Result r = runner.run({{"zfs", "list", "-H", "zones/a b"}}, opts);
    CHECK(r.ok());
    CHECK(r.out.empty());
    CHECK(runner.commands == std::vector<std::string>{"zfs list -H 'zones/a b'"});
    REQUIRE(runner.runs.size() == 1);
    CHECK(runner.runs[0].stdin_data == "secret");
    CHECK(runner.runs[0].command.pipeline[0][3] == "zones/a b");
  }

  SECTION("exact rules win over earlier prefix rules") {
    runner.on_prefix("zfs list", fakes::ok("prefix\n"));
    runner.on("zfs list -H", fakes::ok("exact\n"));
    CHECK(runner.run({{"zfs", "list", "-H"}}).out == "exact\n");
    CHECK(runner.run({{"zfs", "list", "-o", "name"}}).out == "prefix\n");
  }

  SECTION("times: rules are used up in order") {
    runner.on("zfs destroy zones/a@s", fakes::failed(1, "dataset is busy\n"), 2);
    runner.on("zfs destroy zones/a@s", fakes::ok());
    CHECK(runner.run({{"zfs", "destroy", "zones/a@s"}}).exit_status == 1);
    CHECK(runner.run({{"zfs", "destroy", "zones/a@s"}}).exit_status == 1);
    CHECK(runner.run({{"zfs", "destroy", "zones/a@s"}}).ok());
    CHECK(runner.commands.size() == 3);
  }

  SECTION("regex and handler rules, default result") {
    runner.set_default(fakes::failed(127, "not found"));
    runner.on_regex("^zfs get .* guid ", fakes::ok("123\n"));
    runner.on_handler(
        [](const remote::Command& c, const remote::RunOptions&) -> std::optional<remote::Result> {
          if (c.pipeline[0][0] == "hostname") {
            return fakes::ok("cn7\n");
          }
          return std::nullopt;
        });
    CHECK(runner.run({{"zfs", "get", "-Hp", "guid", "zones/a"}}).out == "123\n");
    CHECK(runner.run({{"hostname"}}).out == "cn7\n");
    CHECK(runner.run({{"uname"}}).exit_status == 127);
  }

  SECTION("handler may throw a transport error") {
    runner.on_handler(
        [](const remote::Command&, const remote::RunOptions&) -> std::optional<remote::Result> {
          throw zmigrate::Error(zmigrate::ExitCode::remote, "cn7 (10.0.0.7)", "connection lost");
        });
    CHECK_THROWS_AS(runner.run({{"true"}}), zmigrate::Error);
    CHECK(runner.commands.size() == 1);
  }

  SECTION("streams canned output to callbacks") {
    runner.on("zfs send zones/a@s", fakes::result(0, "STREAM", "1\n2\n3"));
    std::string got;
    std::vector<std::string> lines;
    remote::RunOptions opts;
    opts.on_stdout = [&](std::string_view c) { got += c; };
    opts.on_stderr_line = [&](std::string_view l) { lines.emplace_back(l); };
    remote::Result r = runner.run({{"zfs", "send", "zones/a@s"}}, opts);
    CHECK(got == "STREAM");
    CHECK(r.out.empty());
    CHECK(r.bytes_out == 6);
    CHECK(lines == std::vector<std::string>{"1", "2", "3"});
    CHECK(runner.runs[0].streamed_stdout);
  }

  SECTION("bad tokens throw as in production") {
    CHECK_THROWS_AS(runner.run({{"echo", std::string("a\0b", 3)}}), zmigrate::UsageError);
  }

  SECTION("commands_starting_with, clear_record") {
    runner.run({{"zfs", "list"}});
    runner.run({{"zpool", "list"}});
    CHECK(runner.commands_starting_with("zfs ") == std::vector<std::string>{"zfs list"});
    runner.clear_record();
    CHECK(runner.commands.empty());
    CHECK(runner.runs.empty());
  }
}
