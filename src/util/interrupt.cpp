// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>

#include <atomic>
#include <csignal>
#include <mutex>

#include <fmt/format.h>

namespace zmigrate {

namespace {

// Lock-free atomics only: they are touched from the signal handler.
std::atomic<int> g_signal{0}; // the first signal that arrived
std::atomic<int> g_count{0};

constexpr int k_fatal_count = 3;

// Never touched by the signal handler.
std::mutex g_request_mutex;
std::string g_request_text; // guarded by g_request_mutex

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
  const std::lock_guard lock(g_request_mutex);
  g_request_text.clear();
}

void note_stop_request(const std::string& why) {
  {
    const std::lock_guard lock(g_request_mutex);
    if (!g_request_text.empty()) {
      return;
    }
    g_request_text = why;
  }
  int expected = 0;
  g_signal.compare_exchange_strong(expected, SIGTERM);
  g_count.fetch_add(1);
}

std::string stop_request_text() {
  const std::lock_guard lock(g_request_mutex);
  return g_request_text;
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
    if (std::string why = stop_request_text(); !why.empty()) {
      throw Error(ExitCode::interrupted, "stopped on request", why);
    }
    throw Error(ExitCode::interrupted, signal_text(g_signal.load()),
                "stopped between steps; the journal records where. Rerun the same command to "
                "go on, or abort");
  }
}

} // namespace zmigrate
