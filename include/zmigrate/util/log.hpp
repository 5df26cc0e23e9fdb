// SPDX-License-Identifier: MPL-2.0
#pragma once
// Structured logging in the bunyan format Triton operators already read: one JSON object per
// line with name, hostname, pid, level, time, msg, v, plus caller fields (migration_id, vm_uuid,
// req_id, host, argv, duration_ms, ...). Secrets never reach a logger: callers pass redacted argv.

#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace zmigrate {

enum class LogLevel : int { trace = 10, debug = 20, info = 30, warn = 40, error = 50, fatal = 60 };

class Logger {
public:
  virtual ~Logger() = default;
  virtual void log(LogLevel level, std::string_view msg, const nlohmann::json& fields = {}) = 0;

  void debug(std::string_view msg, const nlohmann::json& fields = {}) {
    log(LogLevel::debug, msg, fields);
  }
  void info(std::string_view msg, const nlohmann::json& fields = {}) {
    log(LogLevel::info, msg, fields);
  }
  void warn(std::string_view msg, const nlohmann::json& fields = {}) {
    log(LogLevel::warn, msg, fields);
  }
  void error(std::string_view msg, const nlohmann::json& fields = {}) {
    log(LogLevel::error, msg, fields);
  }
};

// Discards everything.
class NullLogger final : public Logger {
public:
  void log(LogLevel, std::string_view, const nlohmann::json&) override {}
};

// Appends bunyan JSON lines to files and optionally mirrors them to stderr (-v). Thread-safe.
// Base fields (e.g. migration_id, vm_uuid) are added to every line; set_file() switches the
// destination when a command learns which migration it works on.
class BunyanLogger final : public Logger {
public:
  explicit BunyanLogger(std::string name = "zmigrate");
  ~BunyanLogger() override;
  // Open (append, 0640, parents created) `path` as the log destination. Throws Error on failure.
  void set_file(const std::string& path);
  void set_base_field(const std::string& key, const nlohmann::json& value);
  // Mirror lines at `min_level` or above to stderr in a short human form.
  void set_stderr_level(LogLevel min_level);
  void log(LogLevel level, std::string_view msg, const nlohmann::json& fields = {}) override;

private:
  std::mutex m_mutex;
  std::string m_name;
  std::string m_hostname;
  int m_fd = -1;
  int m_stderr_level = 1000;
  nlohmann::json m_base = nlohmann::json::object();
};

} // namespace zmigrate
