// SPDX-License-Identifier: MPL-2.0
#pragma once
// Human units in the style of sdc-migrate: 1024-based sizes with one decimal ("55.3MB"),
// durations like humanize-duration ("1h2m3s", "850ms").

#include <chrono>
#include <cstdint>
#include <string>

namespace zmigrate {

// 0 → "0B", 1536 → "1.5kB", 57985434 → "55.3MB".
std::string human_bytes(std::uint64_t bytes);
// human_bytes(rate) + "/s".
std::string human_rate(double bytes_per_second);
// 850 ms → "850ms", 4.2 s → "4.2s", 80 s → "1m20s", 3723 s → "1h2m3s".
std::string human_duration(std::chrono::milliseconds d);
// Parse a size like "20MB", "1.5G", "512k", "1048576" (1024-based; B optional). Throws UsageError.
std::uint64_t parse_bytes(const std::string& text);
// Parse a duration like "500ms", "30s", "5m", "2h" or "90" (seconds). Throws UsageError naming
// the text for anything else (no unit mix, no negative or zero-length value).
std::chrono::milliseconds parse_duration(const std::string& text);

} // namespace zmigrate
