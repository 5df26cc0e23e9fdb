// SPDX-License-Identifier: MPL-2.0
#pragma once
// Process-wide safety settings made once at start-up, and the test-only fault hook switch.

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

} // namespace zmigrate
