// SPDX-License-Identifier: MPL-2.0
#pragma once
// SIGINT, SIGTERM and SIGHUP (the operator's ssh to the head node dropped) are deferred, as
// Proxmox defers them in critical sections:
//   - the first signal asks the command to stop: journal steps stop at the next step boundary
//     (throw_if_interrupted), and a remote command that was already running when it arrived is
//     ended within a fraction of a second (the runners check interrupt_requested() while they
//     wait); then the command cleans up (keys, leases) and exits 130;
//   - a second signal is counted and deferred too, so that cleanup still runs to the end;
//   - a third (or later) signal ends the process at once with that signal's default action;
//     the ledger lets the next command clean up what is left.

namespace zmigrate {

void install_interrupt_handlers();
bool interrupt_requested();
// How many of those signals arrived so far (0 = none).
int interrupt_count();
// Throws Error(ExitCode::interrupted) when a signal arrived.
void throw_if_interrupted();

// The signal-counting rule on its own, for tests: records one arrival of `sig` and returns true
// when the process must now end at once (the third signal and later). The handler calls it.
bool note_interrupt(int sig);
// Forget every signal so far (tests only).
void reset_interrupts_for_tests();

} // namespace zmigrate
