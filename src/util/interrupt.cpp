// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>

#include <atomic>
#include <csignal>

namespace zmigrate {

namespace {
std::atomic<int> g_signal{0};

extern "C" void on_signal(int sig) {
  if (g_signal.exchange(sig) != 0) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}
} // namespace

void install_interrupt_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  // A closed ssh pipe or terminal must surface as an error, not kill us mid-journal.
  std::signal(SIGPIPE, SIG_IGN);
}

bool interrupt_requested() {
  return g_signal.load() != 0;
}

void throw_if_interrupted() {
  if (const int sig = g_signal.load(); sig != 0) {
    throw Error(ExitCode::interrupted,
                sig == SIGINT ? "interrupted (SIGINT)" : "terminated (SIGTERM)",
                "stopped between steps; the journal records where. Rerun the same command to "
                "go on, or abort");
  }
}

} // namespace zmigrate
