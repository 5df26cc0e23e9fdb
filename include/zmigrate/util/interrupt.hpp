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

#include <string>

namespace zmigrate {

void install_interrupt_handlers();
bool interrupt_requested();
// How many of those signals arrived so far (0 = none).
int interrupt_count();
// Throws Error(ExitCode::interrupted) when a signal arrived (or a stop request was noted).
void throw_if_interrupted();

// Another command asked this one to stop (`zmigrate abort` or `pause` from a second shell, read
// from the state store): counts as the first signal, so journal steps and running remote
// commands stop as they do for SIGTERM, and throw_if_interrupted() then says `why`. Safe to call
// from any thread; only the first request's text is kept.
void note_stop_request(const std::string& why);
// The text given to note_stop_request, or "" when none was noted.
std::string stop_request_text();

// The signal-counting rule on its own, for tests: records one arrival of `sig` and returns true
// when the process must now end at once (the third signal and later). The handler calls it.
bool note_interrupt(int sig);
// Forget every signal so far (tests only).
void reset_interrupts_for_tests();

} // namespace zmigrate
