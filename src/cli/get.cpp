// SPDX-License-Identifier: MPL-2.0
// zmigrate get VM: one migration in detail, from the state store only.
#include <zmigrate/cli/commands.hpp>
#include <zmigrate/cli/output.hpp>
#include <zmigrate/cli/runtime.hpp>
#include <zmigrate/state/store.hpp>
#include <zmigrate/util/clock.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/units.hpp>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include <fmt/format.h>

namespace zmigrate::cli {

namespace {

std::chrono::milliseconds between(const std::string& from, const std::string& to,
                                  std::chrono::system_clock::time_point now) {
  if (from.empty()) {
    return std::chrono::milliseconds(0);
  }
  try {
    const auto start = parse_iso8601(from);
    const auto end = to.empty() ? now : parse_iso8601(to);
    return std::max(std::chrono::milliseconds(0),
                    std::chrono::duration_cast<std::chrono::milliseconds>(end - start));
  } catch (const Error&) {
    return std::chrono::milliseconds(0);
  }
}

std::string marker(state::State s, bool unicode) {
  switch (s) {
  case state::State::running:
    return unicode ? "►" : ">";
  case state::State::failed:
    return "x";
  case state::State::paused:
  case state::State::successful:
    break;
  }
  return unicode ? "✔" : "+";
}

std::string server_line(const state::Migration& m, const std::string& side) {
  const std::string& uuid = side == "source" ? m.source_server_uuid : m.target_server_uuid;
  const std::string label = server_label(m, side);
  if (uuid.empty()) {
    return "-";
  }
  return label == uuid ? uuid : fmt::format("{} ({})", label, uuid);
}

std::string ms_text(const nlohmann::json& v) {
  return human_duration(std::chrono::milliseconds(v.is_number() ? v.get<long long>() : 0));
}

// Detail lines under a phase run row: what a sync moved, what a switch cost.
std::vector<std::string> run_details(const state::PhaseRun& r) {
  std::vector<std::string> out;
  const nlohmann::json& d = r.details;
  if (!d.is_object()) {
    return out;
  }
  if (d.contains("bytes") && d["bytes"].is_number()) {
    out.push_back(fmt::format("{} in {} ({}){}", human_bytes(d["bytes"].get<std::uint64_t>()),
                              ms_text(d.value("duration_ms", nlohmann::json(0))),
                              human_rate(d.value("rate", 0.0)),
                              d.contains("snapshot") && d["snapshot"].is_string()
                                  ? ", @" + d["snapshot"].get<std::string>()
                                  : std::string()));
  }
  if (d.contains("downtime_ms")) {
    std::string steps;
    if (d.contains("downtime_steps") && d["downtime_steps"].is_object()) {
      for (auto it = d["downtime_steps"].begin(); it != d["downtime_steps"].end(); ++it) {
        steps += fmt::format("{}{} {}", steps.empty() ? "" : ", ", it.key(), ms_text(it.value()));
      }
    }
    out.push_back(fmt::format("downtime {}{}{}{}", ms_text(d["downtime_ms"]),
                              d.value("predicted_downtime_ms", 0) > 0
                                  ? " (predicted " + ms_text(d["predicted_downtime_ms"]) + ")"
                                  : std::string(),
                              steps.empty() ? "" : ": ", steps));
    if (d.contains("final_bytes") && d["final_bytes"].is_number()) {
      out.push_back(
          fmt::format("final delta {}", human_bytes(d["final_bytes"].get<std::uint64_t>())));
    }
  }
  return out;
}

} // namespace

bool utf8_locale() {
  for (const char* name : {"LC_ALL", "LC_CTYPE", "LANG"}) {
    const char* v = std::getenv(name);
    if (v != nullptr && *v != '\0') {
      std::string s(v);
      std::transform(s.begin(), s.end(), s.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      return s.find("utf-8") != std::string::npos || s.find("utf8") != std::string::npos;
    }
  }
  return false;
}

std::string render_get(const state::Migration& m, const std::optional<state::Progress>& progress,
                       bool unicode, std::chrono::system_clock::time_point now) {
  std::string out;
  auto field = [&](const char* name, const std::string& value) {
    out += fmt::format("{:<15}{}\n", std::string(name) + ":", value);
  };
  field("State", fmt::format("{} {}{}", state::to_string(m.phase), state::to_string(m.state),
                             m.archived ? " (archived)" : ""));
  field("Migration", m.id);
  field("Instance", m.vm_uuid);
  field("Source server", server_line(m, "source"));
  field("Target server", server_line(m, "target"));
  field("Created", m.created.empty() ? std::string("-")
                                     : fmt::format("{} ({} ago)", m.created,
                                                   coarse_age(between(m.created, {}, now))));
  field("Automatic", m.automatic ? "yes" : "no");
  field("Syncs", std::to_string(m.num_sync_phases));
  field("Total runtime", human_duration(migration_runtime(m, now)));
  if (!m.error.empty()) {
    field("Error", m.error);
  }
  if (m.history.empty()) {
    return out;
  }

  struct Row {
    std::string mark, phase, age, runtime, message;
    std::vector<std::string> details;
  };
  std::vector<Row> rows;
  for (std::size_t i = 0; i < m.history.size(); ++i) {
    const state::PhaseRun& r = m.history[i];
    Row row;
    row.mark = marker(r.state, unicode);
    row.phase = state::to_string(r.phase);
    row.age = r.started.empty() ? "-" : coarse_age(between(r.started, {}, now));
    row.runtime = human_duration(between(r.started, r.finished, now));
    row.message = r.message;
    if (r.state == state::State::failed && !r.error.empty()) {
      row.message += ": " + r.error;
    }
    row.details = run_details(r);
    const bool last = i + 1 == m.history.size();
    if (last && r.state == state::State::running && progress &&
        progress->state == state::State::running && progress->phase == r.phase &&
        progress->updated >= r.started && progress->total > 0) {
      std::string line = progress_line(*progress, 0);
      const auto first = line.find_first_not_of(" -");
      row.details.push_back(line.substr(first == std::string::npos ? 0 : first));
    }
    rows.push_back(std::move(row));
  }
  std::size_t wp = 5, wa = 3, wr = 7;
  for (const Row& r : rows) {
    wp = std::max(wp, r.phase.size());
    wa = std::max(wa, r.age.size());
    wr = std::max(wr, r.runtime.size());
  }
  out += "\n";
  out += fmt::format("  {:<{}}  {:<{}}  {:<{}}  {}\n", "PHASE", wp, "AGE", wa, "RUNTIME", wr,
                     "MESSAGE");
  for (const Row& r : rows) {
    out += fmt::format("{} {:<{}}  {:<{}}  {:<{}}  {}\n", r.mark, r.phase, wp, r.age, wa, r.runtime,
                       wr, r.message);
    for (const std::string& d : r.details) {
      out += fmt::format("  {:<{}}  {}\n", "", wp + wa + wr + 4, d);
    }
  }
  return out;
}

CommandSpec get_command() {
  struct Opts {
    std::string vm;
    std::string evacuation;
  };
  auto o = std::make_shared<Opts>();
  return {"get", "Show an instance's migration (servers, phases, syncs, downtime) or an evacuation",
          [o](CLI::App& app) {
            add_vm_or_evacuation(
                app, o->vm, o->evacuation,
                "The newest evacuation or restore of this compute node (UUID or hostname) as a "
                "whole: done/total, bytes sent and left, ETA, each instance's progress");
          },
          [o](Runtime& rt) {
            if (!o->evacuation.empty()) {
              return get_evacuation(rt, o->evacuation);
            }
            if (o->vm.empty()) {
              throw UsageError("get", "name an instance (VM) or --evacuation CN");
            }
            state::StateStore& store = rt.store();
            std::optional<state::Migration> m = store.find_active_for_vm(o->vm);
            if (!m) {
              m = store.find_latest_for_vm(o->vm);
            }
            if (!m) {
              throw NotFoundError(fmt::format("instance {}", o->vm),
                                  "no migration recorded in the state store; see \"zmigrate "
                                  "list --all\"");
            }
            const std::optional<state::Progress> progress = store.get_progress(m->id);
            if (rt.globals().json) {
              nlohmann::json j = *m;
              j["progress"] = progress ? nlohmann::json(*progress) : nlohmann::json();
              rt.reporter().json(j);
              return 0;
            }
            const SystemClock clock;
            const bool unicode = utf8_locale() && !rt.globals().no_color;
            std::fputs(render_get(*m, progress, unicode, clock.wall_now()).c_str(), stdout);
            std::fflush(stdout);
            return 0;
          }};
}

} // namespace zmigrate::cli
