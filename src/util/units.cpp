// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/units.hpp>

#include <array>
#include <cctype>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>

namespace zmigrate {

std::string human_bytes(std::uint64_t bytes) {
  static constexpr std::array<const char*, 7> k_units{"B", "kB", "MB", "GB", "TB", "PB", "EB"};
  if (bytes < 1024) {
    return fmt::format("{}B", bytes);
  }
  double v = static_cast<double>(bytes);
  std::size_t i = 0;
  while (v >= 1024.0 && i + 1 < k_units.size()) {
    v /= 1024.0;
    ++i;
  }
  return fmt::format("{:.1f}{}", v, k_units[i]);
}

std::string human_rate(double bytes_per_second) {
  if (!(bytes_per_second > 0)) {
    return "0B/s";
  }
  return human_bytes(static_cast<std::uint64_t>(std::llround(bytes_per_second))) + "/s";
}

std::string human_duration(std::chrono::milliseconds d) {
  const long long ms = d.count() < 0 ? 0 : d.count();
  if (ms < 1000) {
    return fmt::format("{}ms", ms);
  }
  if (ms < 60'000) {
    return fmt::format("{:.1f}s", static_cast<double>(ms) / 1000.0);
  }
  long long s = ms / 1000;
  const long long h = s / 3600;
  s %= 3600;
  const long long m = s / 60;
  s %= 60;
  if (h > 0) {
    return fmt::format("{}h{}m{}s", h, m, s);
  }
  return fmt::format("{}m{}s", m, s);
}

std::chrono::milliseconds parse_duration(const std::string& text) {
  const char* begin = text.c_str();
  char* end = nullptr;
  const double v = std::strtod(begin, &end);
  const std::string unit(end == nullptr ? "" : end);
  double ms_per = 0;
  if (unit.empty() || unit == "s") {
    ms_per = 1000;
  } else if (unit == "ms") {
    ms_per = 1;
  } else if (unit == "m") {
    ms_per = 60'000;
  } else if (unit == "h") {
    ms_per = 3'600'000;
  }
  if (end == begin || !(v > 0) || std::isinf(v) || ms_per == 0 || v * ms_per > 1e12 ||
      std::isspace(static_cast<unsigned char>(text.front()))) {
    throw UsageError(fmt::format("duration '{}'", text),
                     "expected a positive number with an optional unit: ms, s (the default), m "
                     "or h, e.g. 500ms, 60s, 5m");
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(v * ms_per));
}

std::uint64_t parse_bytes(const std::string& text) {
  const char* begin = text.c_str();
  char* end = nullptr;
  const double v = std::strtod(begin, &end);
  if (end == begin || !(v >= 0) || std::isinf(v)) {
    throw UsageError(fmt::format("size '{}'", text),
                     "expected a number with an optional unit (k, M, G, T)");
  }
  std::string unit(end);
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b')) {
    unit.pop_back();
  }
  if (unit.size() == 2 && (unit[1] == 'i' || unit[1] == 'I')) {
    unit.pop_back();
  }
  double mult = 1;
  if (unit.empty()) {
    mult = 1;
  } else if (unit.size() == 1) {
    switch (std::tolower(static_cast<unsigned char>(unit[0]))) {
    case 'k':
      mult = 1024.0;
      break;
    case 'm':
      mult = 1024.0 * 1024;
      break;
    case 'g':
      mult = 1024.0 * 1024 * 1024;
      break;
    case 't':
      mult = 1024.0 * 1024 * 1024 * 1024;
      break;
    default:
      throw UsageError(fmt::format("size '{}'", text), "unknown unit; use k, M, G or T");
    }
  } else {
    throw UsageError(fmt::format("size '{}'", text), "unknown unit; use k, M, G or T");
  }
  return static_cast<std::uint64_t>(std::llround(v * mult));
}

} // namespace zmigrate
