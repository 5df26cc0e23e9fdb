// SPDX-License-Identifier: MPL-2.0
#pragma once
// ManualClock: a Clock whose time moves only when someone sleeps on it or a test advances it, so
// engine tests that poll (wait_vmapi sleeps between VMAPI reads, the node layer backs off while
// a dataset is busy) finish at once and deterministically, and never sleep for real. Thread-safe:
// Operation's heartbeat thread reads the wall clock through the state store.

#include <zmigrate/util/clock.hpp>

#include <atomic>
#include <chrono>

namespace zmigrate::fakes {

class ManualClock final : public Clock {
public:
  std::chrono::steady_clock::time_point now() const override {
    return std::chrono::steady_clock::time_point(std::chrono::milliseconds(m_ms.load()));
  }
  std::chrono::system_clock::time_point wall_now() const override {
    // 2026-12-01T00:00:00Z plus the elapsed time.
    return std::chrono::system_clock::time_point(std::chrono::seconds(1796083200)) +
           std::chrono::milliseconds(m_ms.load());
  }
  void sleep_for(std::chrono::milliseconds d) override {
    m_ms += d.count();
    ++sleeps;
  }
  void advance(std::chrono::milliseconds d) { m_ms += d.count(); }

  std::atomic<int> sleeps{0};

private:
  std::atomic<long long> m_ms{1000000};
};

} // namespace zmigrate::fakes
