// SPDX-License-Identifier: MPL-2.0
#pragma once
// Rendering: human text in the style of sdc-migrate, or JSON with --json. Progress on a
// terminal is a live line with a bar, rate and ETA; when stdout is not a terminal or NO_COLOR is
// set, plain lines without escape codes or carriage returns.

#include <zmigrate/migration/context.hpp>

#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

namespace zmigrate::cli {

struct OutputStyle {
  bool json = false;  // --json: events as JSON lines, results as one JSON document
  bool quiet = false; // --quiet: only errors and the final result
  bool tty = false;   // live progress line
};

// Decide the style from flags, isatty(stdout) and NO_COLOR.
OutputStyle detect_style(bool json, bool quiet, bool no_color);

// "  - running: 42%  55.3MB/s  (ETA 1m20s)" plus a bar when `bar_width` > 0.
std::string progress_line(const state::Progress& p, int bar_width);

class TerminalReporter final : public migration::Reporter {
public:
  explicit TerminalReporter(OutputStyle style, std::FILE* out = stdout);
  void phase_started(const std::string& phase, const std::string& detail) override;
  void step(const std::string& message) override;
  void progress(const state::Progress& p) override;
  void note(const std::string& message) override;
  // Print a final line ("OK - ..."), ending any live progress line first.
  void result_line(const std::string& text);
  // Print a JSON document (--json results).
  void json(const nlohmann::json& doc);
  const OutputStyle& style() const { return m_style; }

private:
  void end_live_line();
  OutputStyle m_style;
  std::FILE* m_out;
  bool m_live = false;
  std::string m_last_plain_pct; // "  - running: 42" of the last plain progress line
};

} // namespace zmigrate::cli
