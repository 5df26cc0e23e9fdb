// SPDX-License-Identifier: MPL-2.0
#pragma once
// Process-wide safety settings made once at start-up, the test-only fault hook switch, and what
// this host and its processes are.

#include <string>

namespace zmigrate {

// No core dumps: the process holds the migration's private SSH key in memory. Sets
// RLIMIT_CORE to 0 (soft and hard) and, on Linux, PR_SET_DUMPABLE to 0 (which also keeps other
// processes of the same user from ptrace-attaching or reading /proc/<pid>/mem). Returns "" when
// all of it took effect, else what failed (the caller warns; the command still runs).
std::string disable_core_dumps();

// True when the build has the test-only fault hook (CMake -DZMIGRATE_FAULT_HOOKS=ON).
bool fault_hooks_compiled_in();

// The journal step at which the fault hook kills the process: `value` (the text of
// $ZMIGRATE_FAULT_STEP, nullptr when unset) in a build with the hook, "" otherwise, so that a
// production binary ignores the variable whatever the environment says.
std::string fault_step_from_env(const char* value);
// fault_step_from_env(getenv("ZMIGRATE_FAULT_STEP")).
std::string fault_step_from_env();

// This host's name (gethostname), "localhost" when it has none: what leases record as `host`.
std::string local_hostname();

// Whether process `pid` of this host still runs (kill(pid, 0); EPERM counts as running).
bool pid_alive(int pid);

} // namespace zmigrate
