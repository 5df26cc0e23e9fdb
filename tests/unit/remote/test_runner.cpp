// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/remote/runner.hpp>
#include <zmigrate/util/error.hpp>

#include <fakes/fake_runner.hpp>

#include <catch2/catch.hpp>

using zmigrate::Error;
using zmigrate::ExitCode;
using zmigrate::fakes::FakeRunner;
using zmigrate::remote::Command;
using zmigrate::remote::run_checked;
namespace fakes = zmigrate::fakes;

namespace {

Error checked_error(FakeRunner& runner, const Command& cmd, ExitCode code = ExitCode::failure) {
  try {
    run_checked(runner, cmd, {}, code);
  } catch (const Error& e) {
    return e;
  }
  FAIL("run_checked did not throw");
  return Error(ExitCode::ok, "", "");
}

} // namespace

TEST_CASE("remote::run_checked", "[remote]") {
  FakeRunner runner("cn1");

  SECTION("returns the result on success") {
    runner.on("zfs list -H", fakes::ok("zones\n"));
    CHECK(run_checked(runner, Command{{"zfs", "list", "-H"}}).out == "zones\n");
  }

  SECTION("failure names host, argv[0..1], status and stderr; default code is failure") {
    runner.on_prefix("zfs destroy",
                     fakes::failed(1, "cannot destroy 'zones/a': dataset is busy\n"));
    const Error e = checked_error(runner, Command{{"zfs", "destroy", "-r", "zones/a"}});
    CHECK(e.exit_code() == ExitCode::failure);
    CHECK(e.subject() == "cn1: zfs destroy");
    CHECK(e.reason() == "exit status 1: cannot destroy 'zones/a': dataset is busy");
  }

  SECTION("the caller picks the exit code") {
    runner.set_default(fakes::failed(2, "boom"));
    CHECK(checked_error(runner, Command{{"zfs", "list"}}, ExitCode::zfs).exit_code() ==
          ExitCode::zfs);
  }

  SECTION("empty stderr still says what happened") {
    runner.set_default(fakes::failed(3, " \n"));
    CHECK(checked_error(runner, Command{{"false"}}).reason() == "exit status 3");
    runner.set_default(fakes::failed(-1, ""));
    CHECK(checked_error(runner, Command{{"false"}}).reason() ==
          "killed by a signal or no exit status");
  }

  SECTION("timeouts say so") {
    runner.set_default(fakes::timed_out(std::chrono::seconds(30)));
    const Error e = checked_error(runner, Command{{"zfs", "recv", "zones/a"}});
    CHECK(e.reason() == "timed out after 30 s");
  }

  SECTION("long stderr is cut to its last lines") {
    std::string err;
    for (int i = 1; i <= 30; ++i) {
      err += "line " + std::to_string(i) + "\n";
    }
    runner.set_default(fakes::failed(1, err));
    const std::string reason = checked_error(runner, Command{{"x"}}).reason();
    CHECK(reason.rfind("exit status 1: ...line 21\n", 0) == 0);
    CHECK(reason.size() < 200);
    CHECK(reason.substr(reason.size() - 7) == "line 30");
    runner.set_default(fakes::failed(1, std::string(10000, 'e')));
    CHECK(checked_error(runner, Command{{"x"}}).reason().size() < 2100);
  }

  SECTION("redacted tokens stay out of the message") {
    runner.set_default(fakes::failed(1, "no"));
    const Error e = checked_error(runner, Command{{"tool", "SECRET"}}.redact_token(0, 1));
    CHECK(e.subject() == "cn1: tool <redacted>");
  }

  SECTION("transport errors pass through unchanged") {
    runner.on_handler(
        [](const Command&,
           const zmigrate::remote::RunOptions&) -> std::optional<zmigrate::remote::Result> {
          throw Error(ExitCode::remote, "cn1 (10.0.0.1)", "connection refused");
        });
    const Error e = checked_error(runner, Command{{"true"}});
    CHECK(e.exit_code() == ExitCode::remote);
    CHECK(e.subject() == "cn1 (10.0.0.1)");
  }
}
