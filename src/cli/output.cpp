// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/cli/output.hpp>
#include <zmigrate/util/units.hpp>

#include <algorithm>
#include <cstdlib>
#include <unistd.h>

#include <fmt/format.h>

namespace zmigrate::cli {

OutputStyle detect_style(bool json, bool quiet, bool no_color) {
  OutputStyle s;
  s.json = json;
  s.quiet = quiet;
  const char* nc = std::getenv("NO_COLOR");
  const bool term = ::isatty(STDOUT_FILENO) == 1;
  const char* t = std::getenv("TERM");
  s.tty = term && !no_color && (nc == nullptr || *nc == '\0') &&
          !(t != nullptr && std::string(t) == "dumb");
  return s;
}

std::string progress_line(const state::Progress& p, int bar_width) {
  const std::uint64_t total = std::max(p.total, p.current);
  const int pct = total == 0 ? 0
                             : static_cast<int>(std::min<std::uint64_t>(
                                   100, p.current * 100 / std::max<std::uint64_t>(total, 1)));
  std::string bar;
  if (bar_width > 0) {
    const int filled = pct * bar_width / 100;
    bar = "[" + std::string(static_cast<std::size_t>(filled), '#') +
          std::string(static_cast<std::size_t>(bar_width - filled), ' ') + "] ";
  }
  std::string line = fmt::format("  - running: {}{}%{}  {}/{}", bar, pct,
                                 p.total_approximate ? " (approximate)" : "",
                                 human_bytes(p.current), human_bytes(total));
  if (p.bytes_per_second > 0) { // no rate yet in the first half second
    line += "  " + human_rate(p.bytes_per_second);
  }
  if (p.eta_ms > 0) {
    line += fmt::format("  (ETA {})", human_duration(std::chrono::milliseconds(p.eta_ms)));
  }
  return line;
}

TerminalReporter::TerminalReporter(OutputStyle style, std::FILE* out)
    : m_style(style), m_out(out) {}

void TerminalReporter::end_live_line() {
  m_last_plain_pct.clear();
  if (m_live) {
    std::fputs("\n", m_out);
    m_live = false;
  }
}

void TerminalReporter::phase_started(const std::string& phase, const std::string& detail) {
  if (m_style.quiet) {
    return;
  }
  end_live_line();
  if (m_style.json) {
    std::fprintf(
        m_out, "%s\n",
        nlohmann::json{{"type", "phase"}, {"phase", phase}, {"message", detail}}.dump().c_str());
  } else {
    std::fprintf(m_out, "# Migration %s running%s%s\n", phase.c_str(), detail.empty() ? "" : ": ",
                 detail.c_str());
  }
  std::fflush(m_out);
}

void TerminalReporter::step(const std::string& message) {
  if (m_style.quiet) {
    return;
  }
  end_live_line();
  if (m_style.json) {
    std::fprintf(m_out, "%s\n",
                 nlohmann::json{{"type", "progress"}, {"message", message}}.dump().c_str());
  } else {
    std::fprintf(m_out, " - %s\n", message.c_str());
  }
  std::fflush(m_out);
}

void TerminalReporter::progress(const state::Progress& p) {
  if (m_style.quiet) {
    return;
  }
  if (m_style.json) {
    nlohmann::json j{{"type", "progress"},
                     {"phase", state::to_string(p.phase)},
                     {"state", state::to_string(p.state)},
                     {"current_progress", p.current},
                     {"total_progress", std::max(p.total, p.current)},
                     {"eta_ms", p.eta_ms},
                     {"transfer_bytes_second", static_cast<std::uint64_t>(p.bytes_per_second)}};
    std::fprintf(m_out, "%s\n", j.dump().c_str());
  } else if (m_style.tty) {
    std::fprintf(m_out, "\r\033[K%s", progress_line(p, 30).c_str());
    m_live = true;
  } else {
    // Plain lines (cron mail, logs): one per percent step at most, none repeating the last.
    const std::string line = progress_line(p, 0);
    const std::string pct = line.substr(0, line.find('%'));
    if (pct == m_last_plain_pct) {
      return;
    }
    m_last_plain_pct = pct;
    std::fprintf(m_out, "%s\n", line.c_str());
  }
  std::fflush(m_out);
}

void TerminalReporter::note(const std::string& message) {
  if (m_style.quiet) {
    return;
  }
  end_live_line();
  if (m_style.json) {
    std::fprintf(m_out, "%s\n",
                 nlohmann::json{{"type", "note"}, {"message", message}}.dump().c_str());
  } else {
    std::fprintf(m_out, "   note: %s\n", message.c_str());
  }
  std::fflush(m_out);
}

void TerminalReporter::result_line(const std::string& text) {
  end_live_line();
  std::fprintf(m_out, "%s\n", text.c_str());
  std::fflush(m_out);
}

void TerminalReporter::json(const nlohmann::json& doc) {
  end_live_line();
  std::fprintf(m_out, "%s\n", doc.dump(2).c_str());
  std::fflush(m_out);
}

} // namespace zmigrate::cli
