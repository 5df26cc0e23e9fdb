// SPDX-License-Identifier: MPL-2.0
// Interrupts: the signal-counting rule (util/interrupt.hpp) and how the runners honour an
// interrupt during a command (remote/runner.hpp, RunOptions::interruptible). The real handlers
// are only installed in forked children: Catch2 has its own for SIGINT and SIGTERM.
#include "fakes/child_process.hpp"

#include <zmigrate/remote/local_runner.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>
#include <zmigrate/util/log.hpp>

#include <chrono>
#include <csignal>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

using namespace zmigrate;
using zmigrate::remote::Command;
using zmigrate::remote::LocalRunner;
using zmigrate::remote::Result;
using zmigrate::remote::RunOptions;

namespace {

// Every test starts and ends without a pending interrupt (others would see it otherwise).
struct CleanInterrupts {
  CleanInterrupts() { reset_interrupts_for_tests(); }
  ~CleanInterrupts() { reset_interrupts_for_tests(); }
  CleanInterrupts(const CleanInterrupts&) = delete;
  CleanInterrupts& operator=(const CleanInterrupts&) = delete;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

} // namespace

TEST_CASE("interrupts: the third signal ends the process, the first two are deferred",
          "[util][interrupt]") {
  const CleanInterrupts clean;
  SECTION("the counting rule") {
    CHECK_FALSE(interrupt_requested());
    CHECK_FALSE(note_interrupt(SIGINT));
    CHECK(interrupt_requested());
    CHECK_FALSE(note_interrupt(SIGINT)); // a second Ctrl-C: cleanup must still run
    CHECK(interrupt_count() == 2);
    CHECK(note_interrupt(SIGINT)); // the third: now
    CHECK(note_interrupt(SIGTERM));
    try {
      throw_if_interrupted();
      FAIL("no exception");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::interrupted);
      CHECK(e.subject() == "interrupted (SIGINT)"); // the first signal names it
    }
  }

  SECTION("real signals: SIGINT, SIGHUP deferred; the third kills") {
    const int status = fakes::run_in_child([] {
      install_interrupt_handlers();
      raise(SIGINT);
      if (interrupt_count() != 1) {
        return 10;
      }
      raise(SIGHUP); // an operator's dropped ssh counts like SIGTERM
      if (interrupt_count() != 2) {
        return 11;
      }
      try {
        throw_if_interrupted();
        return 12;
      } catch (const Error& e) {
        if (e.exit_code() != ExitCode::interrupted) {
          return 13;
        }
      }
      raise(SIGTERM);
      return 14; // not reached: the third signal ends the process
    });
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGTERM);
  }

  SECTION("SIGHUP alone is a deferred interrupt, not death") {
    const int status = fakes::run_in_child([] {
      install_interrupt_handlers();
      raise(SIGHUP);
      try {
        throw_if_interrupted();
      } catch (const Error& e) {
        return e.subject() == "hung up (SIGHUP)" ? 0 : 20;
      }
      return 21;
    });
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
}

TEST_CASE("remote::RunOptions: every command has a timeout unless it opts out", "[remote]") {
  const RunOptions defaults;
  CHECK(defaults.timeout == remote::k_default_timeout);
  CHECK(defaults.timeout > std::chrono::milliseconds(0));
  CHECK(defaults.interruptible);
  CHECK(remote::k_no_timeout.count() == 0);
}

TEST_CASE("remote::LocalRunner stops a command when an interrupt arrives", "[remote][interrupt]") {
  const CleanInterrupts clean;
  NullLogger log;
  LocalRunner runner(log, "head");

  SECTION("mid `sleep 30`: within a couple of seconds, ExitCode::interrupted") {
    RunOptions opts;
    opts.timeout = std::chrono::seconds(60);
    // The interrupt comes once the command has visibly started (no guessing with sleeps).
    opts.on_stdout = [](std::string_view chunk) {
      if (chunk.find("started") != std::string_view::npos) {
        note_interrupt(SIGINT);
      }
    };
    const auto start = std::chrono::steady_clock::now();
    try {
      runner.run(Command{{"sh", "-c", "echo started; sleep 30"}}, opts);
      FAIL("no exception");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::interrupted);
      CHECK(e.subject() == "head: sh");
      CHECK_THAT(e.reason(), Catch::StartsWith("interrupted;"));
    }
    CHECK(seconds_since(start) < 3.0);
  }

  SECTION("also when the command closed its output and only the wait is left") {
    RunOptions opts;
    opts.timeout = std::chrono::seconds(60);
    opts.on_stderr_line = [](std::string_view line) {
      if (line == "started") {
        note_interrupt(SIGTERM);
      }
    };
    const auto start = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(
        runner.run(Command{{"sh", "-c", "echo started >&2; exec >&- 2>&-; sleep 30"}}, opts),
        Error);
    CHECK(seconds_since(start) < 3.0);
  }

  SECTION("with no timeout at all") {
    RunOptions opts;
    opts.timeout = remote::k_no_timeout;
    opts.on_stdout = [](std::string_view) { note_interrupt(SIGINT); };
    const auto start = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(runner.run(Command{{"sh", "-c", "echo started; sleep 30"}}, opts), Error);
    CHECK(seconds_since(start) < 3.0);
  }

  SECTION("a command started after the interrupt (cleanup) runs to the end") {
    note_interrupt(SIGINT);
    const Result r = runner.run(Command{{"sh", "-c", "sleep 0.3; echo cleaned"}});
    CHECK(r.ok());
    CHECK(r.out == "cleaned\n");
  }

  SECTION("interruptible = false runs to the end") {
    RunOptions opts;
    opts.interruptible = false;
    opts.on_stderr_line = [](std::string_view) { note_interrupt(SIGINT); };
    const Result r =
        runner.run(Command{{"sh", "-c", "echo started >&2; sleep 0.5; echo done"}}, opts);
    CHECK(r.ok());
    CHECK(r.out == "done\n");
  }
}
