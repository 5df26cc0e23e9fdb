// SPDX-License-Identifier: MPL-2.0
#pragma once
// SIGINT/SIGTERM are deferred to the end of the current journaled step (as Proxmox defers them
// in critical sections): the step finishes, the command cleans up (keys, leases) and exits 130.
// A second signal ends the process at once; the ledger lets the next command clean up.

namespace zmigrate {

void install_interrupt_handlers();
bool interrupt_requested();
// Throws Error(ExitCode::interrupted) when a signal arrived.
void throw_if_interrupted();

} // namespace zmigrate
