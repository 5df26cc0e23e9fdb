// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/util/process.hpp>

#include <cstdio>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <catch2/catch.hpp>

using namespace zmigrate;

TEST_CASE("zmigrate::disable_core_dumps", "[util]") {
  // In a child: the test process itself keeps its limits (and stays dumpable for debuggers).
  // Nothing buffered may be inherited and written twice by the child.
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int status = disable_core_dumps().empty() ? 0 : 1;
    rlimit limit{};
    if (::getrlimit(RLIMIT_CORE, &limit) != 0 || limit.rlim_cur != 0 || limit.rlim_max != 0) {
      status |= 2;
    }
#ifdef __linux__
    if (::prctl(PR_GET_DUMPABLE, 0L, 0L, 0L, 0L) != 0) {
      status |= 4;
    }
#endif
    ::_exit(status);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  INFO("1: reported a problem, 2: RLIMIT_CORE not 0, 4: still dumpable");
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("zmigrate::fault_step_from_env", "[util]") {
  CHECK(fault_step_from_env(nullptr).empty());
#ifdef ZMIGRATE_FAULT_HOOKS
  // A lab build (-DZMIGRATE_FAULT_HOOKS=ON): the variable names the step.
  CHECK(fault_hooks_compiled_in());
  CHECK(fault_step_from_env("switch_stop_source") == "switch_stop_source");
#else
  // The default build ignores the variable: the engine never sees a step name.
  CHECK_FALSE(fault_hooks_compiled_in());
  CHECK(fault_step_from_env("switch_stop_source").empty());
#endif
}
