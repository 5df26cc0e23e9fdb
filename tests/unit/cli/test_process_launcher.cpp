// SPDX-License-Identifier: MPL-2.0
#include "fakes/child_process.hpp"

#include <zmigrate/cli/app.hpp>
#include <zmigrate/cli/config.hpp>
#include <zmigrate/cli/process_launcher.hpp>
#include <zmigrate/util/interrupt.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <pthread.h>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::cli;

TEST_CASE("cli::migrate_argv passes the command line's globals and the request", "[cli]") {
  GlobalOptions g;
  g.state_dir = "/var/lib/zm";
  g.vmapi_url = "http://10.0.0.1";
  g.json = true; // not passed: the child's output is not shown
  g.verbose = 2;
  migration::MigrationRequest r;
  r.vm_uuid = "u1";
  r.target_uuid = "t1";
  r.max_syncs = 4;
  r.converge_bytes = 1024;
  r.finalize = true;
  r.bwlimit = 5000;
  r.evacuation = "cn1-uuid";
  CHECK(migrate_argv("/usr/bin/zmigrate", g, r) == std::vector<std::string>{"/usr/bin/zmigrate",
                                                                            "--state-dir",
                                                                            "/var/lib/zm",
                                                                            "--vmapi-url",
                                                                            "http://10.0.0.1",
                                                                            "--quiet",
                                                                            "--no-color",
                                                                            "migrate",
                                                                            "u1",
                                                                            "-n",
                                                                            "t1",
                                                                            "--max-syncs",
                                                                            "4",
                                                                            "--converge",
                                                                            "1024",
                                                                            "--finalize",
                                                                            "--bwlimit",
                                                                            "5000",
                                                                            "--evacuation",
                                                                            "cn1-uuid"});
  r.finalize = false;
  r.bwlimit = 0;
  r.force_core = true;
  r.evacuation.clear();
  g = {};
  g.take_over = true;
  CHECK(migrate_argv("zm", g, r) == std::vector<std::string>{"zm", "--take-over", "--quiet",
                                                             "--no-color", "migrate", "u1", "-n",
                                                             "t1", "--max-syncs", "4", "--converge",
                                                             "1024", "--force-core"});
}

TEST_CASE("cli::migrate_argv is a command line the CLI accepts, with every location option and "
          "the configuration's extremes",
          "[cli]") {
  GlobalOptions g;
  int n = 0;
  for (const LocationOption& o : location_options()) {
    g.*o.member = "value-" + std::to_string(n++);
  }
  for (const int max_syncs : {kMaxSyncsMin, kMaxSyncsMax}) {
    migration::MigrationRequest r;
    r.vm_uuid = "u1";
    r.target_uuid = "t1";
    r.max_syncs = max_syncs;
    r.converge_bytes = 1ULL << 40;
    r.bwlimit = 1;
    r.no_switch = true;
    r.evacuation = "cn1";
    const std::vector<std::string> argv = migrate_argv("zmigrate", g, r);
    std::vector<char*> c_argv;
    for (const std::string& a : argv) {
      c_argv.push_back(const_cast<char*>(a.c_str()));
    }
    GlobalOptions parsed;
    std::vector<CommandSpec> specs; // the subcommands' option storage lives in them
    const std::unique_ptr<CLI::App> app = build_app(parsed, &specs);
    INFO(max_syncs);
    REQUIRE_NOTHROW(app->parse(static_cast<int>(c_argv.size()), c_argv.data()));
    for (const LocationOption& o : location_options()) {
      CHECK(parsed.*o.member == g.*o.member);
    }
    CHECK(parsed.quiet);
    CHECK(app->got_subcommand("migrate"));
  }
}

TEST_CASE("cli::child_error", "[cli]") {
  CHECK(child_error("warning: x\nzmigrate: error: switch u1: refused\n", 4) ==
        "switch u1: refused");
  CHECK(child_error("zmigrate: error: a: b\nlater noise\n", 1) == "a: b");
  CHECK(child_error("only this\n", 1) == "only this");
  CHECK(child_error("", 137) == "exited with status 137");
  CHECK(child_error("", 0).empty());
}

TEST_CASE("cli::self_executable", "[cli]") {
  const std::string self = self_executable();
  CHECK(self.front() == '/');
  CHECK(self.find("zmigrate") != std::string::npos);
}

namespace {

// A program that stands in for `zmigrate migrate`: `body` as a shell script, arguments ignored.
std::string script(const std::filesystem::path& dir, const std::string& name,
                   const std::string& body) {
  const std::filesystem::path p = dir / name;
  std::ofstream(p) << "#!/bin/sh\n" << body << "\n";
  std::filesystem::permissions(p, std::filesystem::perms::owner_all);
  return p.string();
}

migration::MigrationRequest request(const std::string& vm) {
  migration::MigrationRequest r;
  r.vm_uuid = vm;
  r.target_uuid = "t1";
  r.max_syncs = 1;
  r.converge_bytes = 1;
  return r;
}

} // namespace

TEST_CASE("cli::ProcessLauncher::wait_any ends for an interrupt, also one that came just before, "
          "and reaps only its own children",
          "[cli][interrupt]") {
  std::string tmpl = (std::filesystem::temp_directory_path() / "zmigrate-launcher-XXXXXX").string();
  REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
  const std::filesystem::path dir = tmpl;
  const std::string sleeper = script(dir, "sleeper", "exec sleep 60");
  const std::string quick = script(dir, "quick", "exit 3");

  SECTION("an interrupt noted before the wait (the race after the caller's check)") {
    const int status = fakes::run_in_child([&] {
      install_interrupt_handlers();
      ProcessLauncher launcher(sleeper, GlobalOptions{});
      launcher.start(request("u1"));
      ::raise(SIGTERM); // after any check the caller made, before it waits
      if (launcher.wait_any()) {
        return 10; // a child ended first: the wait missed the interrupt
      }
      launcher.stop_all();
      const std::optional<migration::MigrationExit> done = launcher.wait_any();
      if (!done || done->vm_uuid != "u1" || done->exit_status != 128 + SIGTERM) {
        return 11;
      }
      return 0;
    });
    CHECK(fakes::exit_code_of(status) == 0);
  }

  SECTION("an interrupt sent from another thread while it waits") {
    const int status = fakes::run_in_child([&] {
      install_interrupt_handlers();
      ProcessLauncher launcher(sleeper, GlobalOptions{});
      launcher.start(request("u1"));
      std::thread signaller([] { ::kill(::getpid(), SIGTERM); });
      const bool ended_for_interrupt = !launcher.wait_any();
      signaller.join();
      if (!ended_for_interrupt) {
        return 20;
      }
      return 0; // the destructor stops and reaps the sleeper
    });
    CHECK(fakes::exit_code_of(status) == 0);
  }

  SECTION("a child of its own, not another child of the process") {
    const int status = fakes::run_in_child([&] {
      const pid_t other = ::fork();
      if (other == 0) {
        ::_exit(7);
      }
      ProcessLauncher launcher(quick, GlobalOptions{});
      launcher.start(request("u2"));
      const std::optional<migration::MigrationExit> done = launcher.wait_any();
      if (!done || done->vm_uuid != "u2" || done->exit_status != 3 ||
          done->error != "exited with status 3") {
        return 30;
      }
      if (launcher.wait_any()) {
        return 31; // nothing of its own is left
      }
      // And the wait left the signal mask and SIGCHLD's action as they were.
      sigset_t mask;
      ::pthread_sigmask(SIG_SETMASK, nullptr, &mask);
      struct sigaction action {};
      ::sigaction(SIGCHLD, nullptr, &action);
      if (sigismember(&mask, SIGCHLD) != 0 || action.sa_handler != SIG_DFL) {
        return 33;
      }
      int other_status = 0;
      if (::waitpid(other, &other_status, 0) != other || fakes::exit_code_of(other_status) != 7) {
        return 32; // the launcher reaped a child that was not its own
      }
      return 0;
    });
    CHECK(fakes::exit_code_of(status) == 0);
  }
  std::filesystem::remove_all(dir);
}
