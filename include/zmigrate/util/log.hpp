// SPDX-License-Identifier: MPL-2.0
#pragma once
// Structured logging in the bunyan format Triton operators already read: one JSON object per
// line with name, hostname, pid, level, time, msg, v, plus caller fields (migration_id, vm_uuid,
// req_id, host, argv, duration_ms, ...). Secrets never reach a logger: callers pass redacted argv.

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace zmigrate {

enum class LogLevel : int { trace = 10, debug = 20, info = 30, warn = 40, error = 50, fatal = 60 };

class Logger {
public:
  virtual ~Logger() = default;
  virtual void log(LogLevel level, std::string_view msg, const nlohmann::json& fields = {}) = 0;

  void trace(std::string_view msg, const nlohmann::json& fields = {}) {
    log(LogLevel::trace, msg, fields);
  }
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

// Appends bunyan JSON lines to a file and optionally mirrors them to stderr (-v). Thread-safe.
// Each line: {"name","hostname","pid","level", base fields, call fields, "msg","time","v":0}, with
// time in ISO 8601 UTC milliseconds. Call fields override base fields of the same name; the
// bunyan core keys (name, hostname, pid, level, msg, time, v) cannot be overridden. Invalid
// UTF-8 in strings is replaced (U+FFFD) rather than dropping the line.
// Base fields (e.g. migration_id, vm_uuid) are added to every line; set_file() switches the
// destination when a command learns which migration it works on. Lines logged before the first
// file is set (a command's validation, before it knows its migration) are kept in memory (at
// most 4096) and written to that first file, with the base fields of that moment, so the
// migration's log holds every remote command and API call of the command.
class BunyanLogger final : public Logger {
public:
  explicit BunyanLogger(std::string name = "zmigrate");
  ~BunyanLogger() override;
  BunyanLogger(const BunyanLogger&) = delete;
  BunyanLogger& operator=(const BunyanLogger&) = delete;

  // Open `path` for appending (O_APPEND|O_CLOEXEC|O_NOFOLLOW; created 0600 and missing parent
  // directories created 0700, whatever the umask; an existing file or directory keeps its mode)
  // and make it the destination; the previous file is closed. Throws
  // Error(ExitCode::failure, path, reason) when a directory or the file cannot be created.
  void set_file(const std::string& path);
  // Add `key` to every following line; a null `value` removes it.
  void set_base_field(const std::string& key, const nlohmann::json& value);
  // Mirror lines at `min_level` or above to stderr in a short human form:
  //   zmigrate[warn]: remote command failed host=cn1 argv="zfs list" exit_status=1
  // (call fields only). Off until called.
  void set_stderr_level(LogLevel min_level);
  void log(LogLevel level, std::string_view msg, const nlohmann::json& fields = {}) override;

private:
  std::string format_line(LogLevel level, std::string_view msg, const nlohmann::json& fields,
                          const std::string& time) const;
  std::string format_human(LogLevel level, std::string_view msg,
                           const nlohmann::json& fields) const;

  std::mutex m_mutex;
  std::string m_name;
  std::string m_hostname;
  int m_fd = -1;
  int m_stderr_level = 1000;
  bool m_had_file = false;
  struct Pending {
    LogLevel level;
    std::string msg;
    nlohmann::json fields;
    std::string time;
  };
  std::vector<Pending> m_pending; // until the first set_file()
  nlohmann::json m_base = nlohmann::json::object();
};

// "trace", "debug", "info", "warn", "error" or "fatal".
std::string_view level_name(LogLevel level);

} // namespace zmigrate
