// SPDX-License-Identifier: MPL-2.0
#pragma once
// Time is injected so tests never sleep: FakeClock (tests/fakes) advances when asked to sleep.

#include <chrono>
#include <cstdint>
#include <string>

namespace zmigrate {

class Clock {
public:
  virtual ~Clock() = default;
  // Monotonic time, for durations and timeouts.
  virtual std::chrono::steady_clock::time_point now() const = 0;
  // Wall-clock time, for timestamps in records and logs.
  virtual std::chrono::system_clock::time_point wall_now() const = 0;
  virtual void sleep_for(std::chrono::milliseconds d) = 0;
};

class SystemClock final : public Clock {
public:
  std::chrono::steady_clock::time_point now() const override;
  std::chrono::system_clock::time_point wall_now() const override;
  void sleep_for(std::chrono::milliseconds d) override;
};

// ISO 8601 UTC with milliseconds, as Triton writes timestamps: 2026-11-22T01:02:03.456Z.
std::string iso8601(std::chrono::system_clock::time_point t);
// Inverse of iso8601(); throws UsageError on malformed text.
std::chrono::system_clock::time_point parse_iso8601(const std::string& text);

} // namespace zmigrate
