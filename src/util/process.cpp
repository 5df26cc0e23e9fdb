// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/util/process.hpp>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <sys/resource.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <fmt/format.h>

namespace zmigrate {

std::string disable_core_dumps() {
  std::string problems;
  rlimit none{};
  none.rlim_cur = 0;
  none.rlim_max = 0;
  if (::setrlimit(RLIMIT_CORE, &none) != 0) {
    problems = fmt::format("setrlimit(RLIMIT_CORE, 0): {}", std::strerror(errno));
  }
#ifdef __linux__
  // Also covers core_pattern pipes that ignore RLIMIT_CORE (systemd-coredump, apport).
  if (::prctl(PR_SET_DUMPABLE, 0L, 0L, 0L, 0L) != 0) {
    problems += fmt::format("{}prctl(PR_SET_DUMPABLE, 0): {}", problems.empty() ? "" : "; ",
                            std::strerror(errno));
  }
#endif
  return problems;
}

bool fault_hooks_compiled_in() {
#ifdef ZMIGRATE_FAULT_HOOKS
  return true;
#else
  return false;
#endif
}

std::string fault_step_from_env(const char* value) {
  if (!fault_hooks_compiled_in() || value == nullptr) {
    return "";
  }
  return value;
}

std::string fault_step_from_env() {
  return fault_step_from_env(std::getenv("ZMIGRATE_FAULT_STEP"));
}

std::string local_hostname() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0) {
    return "localhost";
  }
  return buf;
}

bool pid_alive(int pid) {
  if (pid <= 0) {
    return false;
  }
  return ::kill(pid, 0) == 0 || errno == EPERM;
}

} // namespace zmigrate
