// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/util/clock.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/log.hpp>

#include <array>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

namespace zmigrate {

namespace {

constexpr std::array<std::string_view, 7> k_core_keys = {"name", "hostname", "pid", "level",
                                                         "msg",  "time",     "v"};

bool is_core_key(std::string_view key) {
  for (std::string_view core : k_core_keys) {
    if (core == key) {
      return true;
    }
  }
  return false;
}

std::string dump(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// mkdir -p. The directories it creates are private, 0700 whatever the umask (the logs name
// every command and address of a migration); existing ones are the operator's and left alone.
void make_parents(const std::string& path) {
  for (std::size_t slash = path.find('/', 1); slash != std::string::npos;
       slash = path.find('/', slash + 1)) {
    const std::string dir = path.substr(0, slash);
    if (::mkdir(dir.c_str(), 0700) == 0) {
      if (::chmod(dir.c_str(), 0700) != 0) {
        throw Error(ExitCode::failure, dir,
                    fmt::format("cannot set log directory mode: {}", std::strerror(errno)));
      }
    } else if (errno != EEXIST) {
      throw Error(ExitCode::failure, dir,
                  fmt::format("cannot create log directory: {}", std::strerror(errno)));
    }
  }
}

// Opens `path` for appending; a file it creates is 0600 whatever the umask.
int open_log(const std::string& path) {
  constexpr int k_flags = O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW;
  for (int tries = 0; tries < 2; ++tries) {
    const int fd = ::open(path.c_str(), k_flags | O_CREAT | O_EXCL, 0600);
    if (fd >= 0) {
      if (::fchmod(fd, 0600) != 0) {
        const int saved = errno;
        ::close(fd);
        errno = saved;
        return -1;
      }
      return fd;
    }
    if (errno != EEXIST) {
      return -1;
    }
    // Already there (an earlier command of the same migration): append, mode unchanged.
    const int existing = ::open(path.c_str(), k_flags);
    if (existing >= 0 || errno != ENOENT) {
      return existing;
    }
    // Removed between the two opens: try creating it again.
  }
  return -1;
}

void write_all(int fd, const std::string& text) {
  std::string_view rest = text;
  while (!rest.empty()) {
    const ssize_t n = ::write(fd, rest.data(), rest.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return; // a log that cannot be written must not abort a migration
    }
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
}

std::string host_name() {
  std::array<char, 256> buf{};
  if (::gethostname(buf.data(), buf.size() - 1) != 0) {
    return "unknown";
  }
  return buf.data();
}

// A value in key=value form: bare when it is one plain word, else JSON.
std::string human_value(const nlohmann::json& value) {
  if (value.is_string()) {
    const std::string& s = value.get_ref<const std::string&>();
    const bool plain = !s.empty() && s.find_first_of(" \t\n\r\"=\\") == std::string::npos;
    if (plain) {
      nlohmann::json probe = s; // replace invalid UTF-8 the same way as the JSON
      const std::string quoted = dump(probe);
      return quoted.substr(1, quoted.size() - 2);
    }
  }
  return dump(value);
}

} // namespace

std::string_view level_name(LogLevel level) {
  switch (level) {
  case LogLevel::trace:
    return "trace";
  case LogLevel::debug:
    return "debug";
  case LogLevel::info:
    return "info";
  case LogLevel::warn:
    return "warn";
  case LogLevel::error:
    return "error";
  case LogLevel::fatal:
    return "fatal";
  }
  return "unknown";
}

BunyanLogger::BunyanLogger(std::string name) : m_name(std::move(name)), m_hostname(host_name()) {}

BunyanLogger::~BunyanLogger() {
  if (m_fd >= 0) {
    ::close(m_fd);
  }
}

void BunyanLogger::set_file(const std::string& path) {
  make_parents(path);
  const int fd = open_log(path);
  if (fd < 0) {
    throw Error(ExitCode::failure, path,
                fmt::format("cannot open log file: {}", std::strerror(errno)));
  }
  std::lock_guard<std::mutex> lock(m_mutex);
  if (m_fd >= 0) {
    ::close(m_fd);
  }
  m_fd = fd;
  if (!m_had_file) {
    m_had_file = true;
    for (const Pending& p : m_pending) {
      write_all(m_fd, format_line(p.level, p.msg, p.fields, p.time) + "\n");
    }
    m_pending.clear();
    m_pending.shrink_to_fit();
  }
}

void BunyanLogger::set_base_field(const std::string& key, const nlohmann::json& value) {
  std::lock_guard<std::mutex> lock(m_mutex);
  if (value.is_null()) {
    m_base.erase(key);
  } else {
    m_base[key] = value;
  }
}

void BunyanLogger::set_stderr_level(LogLevel min_level) {
  std::lock_guard<std::mutex> lock(m_mutex);
  m_stderr_level = static_cast<int>(min_level);
}

std::string BunyanLogger::format_line(LogLevel level, std::string_view msg,
                                      const nlohmann::json& fields, const std::string& time) const {
  nlohmann::ordered_json line;
  line["name"] = m_name;
  line["hostname"] = m_hostname;
  line["pid"] = static_cast<long>(::getpid());
  line["level"] = static_cast<int>(level);
  for (const auto& [key, value] : m_base.items()) {
    if (!is_core_key(key)) {
      line[key] = value;
    }
  }
  if (fields.is_object()) {
    for (const auto& [key, value] : fields.items()) {
      if (!is_core_key(key)) {
        line[key] = value;
      }
    }
  } else if (!fields.is_null()) {
    line["data"] = fields;
  }
  line["msg"] = std::string(msg);
  line["time"] = time;
  line["v"] = 0;
  return dump(line);
}

std::string BunyanLogger::format_human(LogLevel level, std::string_view msg,
                                       const nlohmann::json& fields) const {
  nlohmann::json text = std::string(msg);
  const std::string quoted = dump(text);
  std::string out =
      fmt::format("{}[{}]: {}", m_name, level_name(level), quoted.substr(1, quoted.size() - 2));
  if (fields.is_object()) {
    for (const auto& [key, value] : fields.items()) {
      out += fmt::format(" {}={}", key, human_value(value));
    }
  } else if (!fields.is_null()) {
    out += " " + dump(fields);
  }
  return out;
}

void BunyanLogger::log(LogLevel level, std::string_view msg, const nlohmann::json& fields) {
  const std::string time = iso8601(std::chrono::system_clock::now());
  std::lock_guard<std::mutex> lock(m_mutex);
  if (m_fd >= 0) {
    write_all(m_fd, format_line(level, msg, fields, time) + "\n");
  } else if (!m_had_file && m_pending.size() < 4096) {
    m_pending.push_back({level, std::string(msg), fields, time});
  }
  if (static_cast<int>(level) >= m_stderr_level) {
    write_all(STDERR_FILENO, format_human(level, msg, fields) + "\n");
  }
}

} // namespace zmigrate
