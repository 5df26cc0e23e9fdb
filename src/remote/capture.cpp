// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/remote/capture.hpp>

#include <fmt/format.h>

namespace zmigrate::remote {

OutputCollector::OutputCollector(const RunOptions& options, Result& result)
    : m_options(options), m_result(result) {}

void OutputCollector::add_stdout(std::string_view data) {
  if (data.empty()) {
    return;
  }
  m_result.bytes_out += data.size();
  if (m_options.on_stdout) {
    m_options.on_stdout(data);
  } else {
    m_result.out.append(data);
  }
}

void OutputCollector::add_stderr(std::string_view data) {
  if (data.empty()) {
    return;
  }
  m_result.bytes_err += data.size();
  m_result.err.append(data);
  // Trim in big steps so a chatty command costs amortised O(1) per byte.
  if (m_result.err.size() > 2 * k_max_err_bytes) {
    m_result.err.erase(0, m_result.err.size() - k_max_err_bytes);
  }
  if (!m_options.on_stderr_line) {
    return;
  }
  std::size_t start = 0;
  for (std::size_t nl = data.find('\n'); nl != std::string_view::npos;
       nl = data.find('\n', start)) {
    if (m_partial_line.empty()) {
      m_options.on_stderr_line(data.substr(start, nl - start));
    } else {
      m_partial_line.append(data.substr(start, nl - start));
      std::string line;
      line.swap(m_partial_line);
      m_options.on_stderr_line(line);
    }
    start = nl + 1;
  }
  m_partial_line.append(data.substr(start));
  // A runaway line without newlines must not grow without bound.
  if (m_partial_line.size() > k_max_err_bytes) {
    std::string line;
    line.swap(m_partial_line);
    m_options.on_stderr_line(line);
  }
}

void OutputCollector::finish() {
  if (m_result.err.size() > k_max_err_bytes) {
    m_result.err.erase(0, m_result.err.size() - k_max_err_bytes);
  }
  if (m_options.on_stderr_line && !m_partial_line.empty()) {
    std::string line;
    line.swap(m_partial_line);
    m_options.on_stderr_line(line);
  }
}

void mark_timed_out(Result& result, std::chrono::milliseconds timeout) {
  result.exit_status = -1;
  result.timed_out = true;
  if (!result.err.empty() && result.err.back() != '\n') {
    result.err += '\n';
  }
  const auto ms = timeout.count();
  result.err += (ms % 1000 == 0) ? fmt::format("timed out after {} s", ms / 1000)
                                 : fmt::format("timed out after {:.3g} s", ms / 1000.0);
}

void log_command(Logger& log, const std::string& host, const Command& cmd, const Result& result) {
  nlohmann::json fields = {
      {"host", host},
      {"argv", render_for_log(cmd)},
      {"exit_status", result.exit_status},
      {"duration_ms", result.duration.count()},
      {"bytes_out", result.bytes_out},
      {"bytes_err", result.bytes_err},
  };
  if (result.timed_out) {
    fields["timed_out"] = true;
  }
  if (result.ok()) {
    log.debug("remote command", fields);
  } else {
    log.warn("remote command failed", fields);
  }
}

} // namespace zmigrate::remote
