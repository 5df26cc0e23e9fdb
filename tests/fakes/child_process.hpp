// SPDX-License-Identifier: MPL-2.0
#pragma once
// run_in_child(body): runs `body` (returning an exit status) in a forked child and returns the
// child's wait status, for tests of what a whole process does (signals, limits, exit codes).
// An exception in the child exits 99. Buffered stdio is flushed first so the child never
// writes it a second time.

#include <cstdio>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

namespace zmigrate::fakes {

template <typename F> int run_in_child(F body) {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int rc = 1;
    try {
      rc = body();
    } catch (...) {
      rc = 99;
    }
    ::_exit(rc);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return status;
}

// The exit status of a wait status, or 128 + the signal that ended the child.
inline int exit_code_of(int wait_status) {
  return WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
}

} // namespace zmigrate::fakes
