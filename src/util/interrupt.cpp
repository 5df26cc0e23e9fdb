// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>

#include <atomic>
#include <csignal>

#include <fmt/format.h>

namespace zmigrate {

namespace {

// Lock-free atomics only: they are touched from the signal handler.
std::atomic<int> g_signal{0}; // the first signal that arrived
std::atomic<int> g_count{0};

constexpr int k_fatal_count = 3;

extern "C" void on_signal(int sig) {
  if (note_interrupt(sig)) {
    struct sigaction sa {};
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, nullptr);
    raise(sig);
  }
}

const char* signal_text(int sig) {
  switch (sig) {
  case SIGINT:
    return "interrupted (SIGINT)";
  case SIGHUP:
    return "hung up (SIGHUP)";
  default:
    return "terminated (SIGTERM)";
  }
}

} // namespace

bool note_interrupt(int sig) {
  int expected = 0;
  g_signal.compare_exchange_strong(expected, sig);
  return g_count.fetch_add(1) + 1 >= k_fatal_count;
}

void reset_interrupts_for_tests() {
  g_signal = 0;
  g_count = 0;
}

void install_interrupt_handlers() {
  static_assert(std::atomic<int>::is_always_lock_free);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0; // no SA_RESTART: a blocking poll() returns EINTR and sees the request
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
  // A closed ssh pipe or terminal must surface as an error, not kill us mid-journal.
  std::signal(SIGPIPE, SIG_IGN);
}

bool interrupt_requested() {
  return g_count.load() != 0;
}

int interrupt_count() {
  return g_count.load();
}

void throw_if_interrupted() {
  if (g_count.load() != 0) {
    throw Error(ExitCode::interrupted, signal_text(g_signal.load()),
                "stopped between steps; the journal records where. Rerun the same command to "
                "go on, or abort");
  }
}

} // namespace zmigrate
