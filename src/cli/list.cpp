// SPDX-License-Identifier: MPL-2.0
// zmigrate list: the migrations in the state store, in sdc-migrate's columns. Reads only the
// store (hostnames come from the record), so it works without the inventory APIs.
#include <zmigrate/cli/commands.hpp>
#include <zmigrate/cli/output.hpp>
#include <zmigrate/cli/runtime.hpp>
#include <zmigrate/migration/evacuate.hpp>
#include <zmigrate/state/store.hpp>
#include <zmigrate/util/clock.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/units.hpp>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <regex>

#include <fmt/format.h>

namespace zmigrate::cli {

namespace {

bool looks_like_uuid(const std::string& s) {
  static const std::regex k_uuid("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                                 "[0-9a-fA-F]{12}$");
  return std::regex_match(s, k_uuid);
}

std::string recorded_hostname(const state::Migration& m, const std::string& side) {
  const auto it = m.data.find(side);
  if (it == m.data.end() || !it->is_object()) {
    return {};
  }
  const auto h = it->find("hostname");
  return h != it->end() && h->is_string() ? h->get<std::string>() : std::string();
}

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

std::chrono::milliseconds since(const std::string& iso, std::chrono::system_clock::time_point now) {
  if (iso.empty()) {
    return std::chrono::milliseconds(0);
  }
  try {
    return std::max(
        std::chrono::milliseconds(0),
        std::chrono::duration_cast<std::chrono::milliseconds>(now - parse_iso8601(iso)));
  } catch (const Error&) {
    return std::chrono::milliseconds(0);
  }
}

} // namespace

std::string coarse_age(std::chrono::milliseconds d) {
  const long long s = std::max<long long>(0, d.count() / 1000);
  if (s < 60) {
    return fmt::format("{}s", s);
  }
  if (s < 3600) {
    return fmt::format("{}m", s / 60);
  }
  if (s < 86400) {
    return fmt::format("{}h", s / 3600);
  }
  return fmt::format("{}d", s / 86400);
}

std::chrono::milliseconds migration_runtime(const state::Migration& m,
                                            std::chrono::system_clock::time_point now) {
  std::chrono::milliseconds total{0};
  for (const state::PhaseRun& r : m.history) {
    if (r.started.empty()) {
      continue;
    }
    try {
      const auto start = parse_iso8601(r.started);
      const auto end = r.finished.empty() ? now : parse_iso8601(r.finished);
      if (end > start) {
        total += std::chrono::duration_cast<std::chrono::milliseconds>(end - start);
      }
    } catch (const Error&) {
      // A malformed timestamp leaves that run out of the sum.
    }
  }
  return total;
}

std::string server_label(const state::Migration& m, const std::string& side) {
  const std::string host = recorded_hostname(m, side);
  if (!host.empty()) {
    return host;
  }
  const std::string& uuid = side == "source" ? m.source_server_uuid : m.target_server_uuid;
  return uuid.empty() ? "-" : uuid;
}

bool involves_server(const state::Migration& m, const std::string& cn) {
  return cn == m.source_server_uuid || cn == m.target_server_uuid ||
         cn == recorded_hostname(m, "source") || cn == recorded_hostname(m, "target");
}

bool of_evacuation(const state::Migration& m, const std::string& cn) {
  const auto ev = m.data.find("evacuation");
  if (ev == m.data.end() || !ev->is_object() || !ev->contains("server") ||
      !(*ev)["server"].is_string()) {
    return false;
  }
  const std::string server = (*ev)["server"].get<std::string>();
  return cn == server || (server == m.source_server_uuid && cn == recorded_hostname(m, "source"));
}

EvacuationSummary summarize_evacuation(const std::vector<state::Migration>& migrations) {
  EvacuationSummary s;
  for (const state::Migration& m : migrations) {
    ++s.total;
    const bool ok = m.state == state::State::successful;
    if (m.phase == state::Phase::finalize && ok) {
      ++s.moved;
      ++s.finalized;
    } else if (m.phase == state::Phase::switch_ && ok) {
      ++s.moved;
    } else if (m.state == state::State::failed) {
      ++s.failed;
    } else if (m.state == state::State::running) {
      ++s.running;
    } else if (m.phase == state::Phase::sync && m.state == state::State::paused) {
      ++s.ready;
    }
    s.bytes_sent += migration::moved_totals(m).bytes;
  }
  return s;
}

std::string evacuation_line(const std::string& server, const EvacuationSummary& s) {
  return fmt::format("{}: {} of {} moved ({} finalized), {} ready to switch, {} running, {} "
                     "failed; {} sent",
                     server, s.moved, s.total, s.finalized, s.ready, s.running, s.failed,
                     human_bytes(s.bytes_sent));
}

std::string render_list(const std::vector<state::Migration>& migrations, bool long_format,
                        std::chrono::system_clock::time_point now) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header{"UUID", "PHASE", "STATE", "AGE", "RUNTIME"};
  if (long_format) {
    header.insert(header.end(), {"SOURCE_CN", "TARGET_CN", "ERROR"});
  }
  rows.push_back(header);
  for (const state::Migration& m : migrations) {
    std::vector<std::string> row{m.vm_uuid, state::to_string(m.phase), state::to_string(m.state),
                                 coarse_age(since(m.created, now)),
                                 human_duration(migration_runtime(m, now))};
    if (long_format) {
      row.insert(row.end(), {server_label(m, "source"), server_label(m, "target"),
                             m.error.empty() ? "-" : one_line(m.error)});
    }
    rows.push_back(std::move(row));
  }
  std::vector<std::size_t> width(header.size(), 0);
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (i + 1 == row.size()) {
        line += row[i];
      } else {
        line += fmt::format("{:<{}}  ", row[i], width[i]);
      }
    }
    out += line + "\n";
  }
  return out;
}

CommandSpec list_command() {
  struct Opts {
    std::string state;
    std::string server;
    bool all = false;
    bool long_format = false;
    std::string evacuation;
  };
  auto o = std::make_shared<Opts>();
  return {"list", "List migrations (active ones unless --all), newest first",
          [o](CLI::App& app) {
            app.add_option("-s,--state", o->state, "Only migrations in this state")
                ->check(CLI::IsMember({"running", "paused", "failed", "successful"}));
            app.add_option("-n,--server", o->server,
                           "Only migrations from or to this compute node (UUID or hostname)");
            app.add_flag("-a,--all", o->all, "Include finished (archived) migrations");
            app.add_option("--evacuation", o->evacuation,
                           "The migrations of the evacuation of this compute node (finished ones "
                           "too), with how far it got");
            app.add_flag("-l,--long", o->long_format,
                         "Also show the source and target nodes and the error");
            app.fallthrough();
          },
          [o](Runtime& rt) {
            state::ListFilter filter;
            if (!o->state.empty()) {
              filter.state = state::state_from_string(o->state);
            }
            filter.include_archived = o->all || !o->evacuation.empty();
            if (!o->server.empty() && looks_like_uuid(o->server)) {
              filter.server_uuid = o->server;
            }
            std::vector<state::Migration> found = rt.store().list_migrations(filter);
            if (!o->server.empty() && filter.server_uuid.empty()) {
              std::erase_if(
                  found, [&](const state::Migration& m) { return !involves_server(m, o->server); });
            }
            if (!o->evacuation.empty()) {
              // The evacuation's own migrations, the newest of each instance (a rerun resumes
              // them; a restore's are not the evacuation's).
              std::erase_if(found, [&](const state::Migration& m) {
                return !of_evacuation(m, o->evacuation);
              });
              std::vector<std::string> seen;
              std::erase_if(found, [&seen](const state::Migration& m) {
                if (std::find(seen.begin(), seen.end(), m.vm_uuid) != seen.end()) {
                  return true; // newest first: an older one of the same instance
                }
                seen.push_back(m.vm_uuid);
                return false;
              });
              const EvacuationSummary s = summarize_evacuation(found);
              if (rt.globals().json) {
                nlohmann::json j = nlohmann::json::array();
                for (const state::Migration& m : found) {
                  j.push_back(m);
                }
                rt.reporter().json({{"evacuation",
                                     {{"server", o->evacuation},
                                      {"total", s.total},
                                      {"moved", s.moved},
                                      {"finalized", s.finalized},
                                      {"ready", s.ready},
                                      {"running", s.running},
                                      {"failed", s.failed},
                                      {"bytes_sent", s.bytes_sent}}},
                                    {"migrations", j}});
                return 0;
              }
              const SystemClock clock;
              std::fputs(render_list(found, o->long_format, clock.wall_now()).c_str(), stdout);
              std::fputs((evacuation_line(o->evacuation, s) + "\n").c_str(), stdout);
              std::fflush(stdout);
              return 0;
            }
            if (rt.globals().json) {
              nlohmann::json j = nlohmann::json::array();
              for (const state::Migration& m : found) {
                j.push_back(m);
              }
              rt.reporter().json(j);
              return 0;
            }
            const SystemClock clock;
            std::fputs(render_list(found, o->long_format, clock.wall_now()).c_str(), stdout);
            std::fflush(stdout);
            return 0;
          }};
}

} // namespace zmigrate::cli
