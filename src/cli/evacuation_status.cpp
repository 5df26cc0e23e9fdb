// SPDX-License-Identifier: MPL-2.0
// get --evacuation CN and watch --evacuation CN: an evacuation (or restore) as a whole, from its
// record and each instance's own migration record and progress row in the state store.
#include <zmigrate/cli/commands.hpp>
#include <zmigrate/cli/output.hpp>
#include <zmigrate/cli/runtime.hpp>
#include <zmigrate/migration/evacuation_record.hpp>
#include <zmigrate/util/clock.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>
#include <zmigrate/util/process.hpp>
#include <zmigrate/util/units.hpp>

#include <cstdio>
#include <map>

#include <fmt/format.h>

namespace zmigrate::cli {

namespace {

// A record on another host whose evacuate process has shown no sign of life for this long is
// taken for ended, as the leases are.
constexpr std::chrono::seconds k_remote_evacuation_stale{300};

std::optional<state::Migration> latest_evacuation(state::StateStore& store,
                                                  const std::string& server) {
  state::ListFilter f;
  f.kind = migration::k_evacuation_kind;
  f.include_archived = true;
  for (state::Migration& m : store.list_migrations(f)) {
    const nlohmann::json e = m.data.value("evacuation", nlohmann::json::object());
    if (m.source_server_uuid == server ||
        (e.is_object() && e.value("hostname", "") == server && !server.empty())) {
      return std::move(m);
    }
  }
  return std::nullopt;
}

state::Migration find_record(state::StateStore& store, const std::string& server) {
  std::optional<state::Migration> rec = latest_evacuation(store, server);
  if (!rec) {
    throw NotFoundError(fmt::format("evacuation of {}", server),
                        "none recorded in the state store (by UUID or hostname); \"zmigrate "
                        "list --evacuation CN\" lists what older evacuations left");
  }
  return std::move(*rec);
}

migration::EvacuationView current_view(state::StateStore& store, const state::Migration& rec) {
  std::map<std::string, state::Migration> migrations;
  std::map<std::string, state::Progress> progress;
  for (const nlohmann::json& i : rec.data.value("evacuation", nlohmann::json::object())
                                     .value("instances", nlohmann::json::array())) {
    const std::string vm = i.is_object() ? i.value("vm_uuid", "") : "";
    if (vm.empty()) {
      continue;
    }
    std::optional<state::Migration> m = store.find_active_for_vm(vm);
    if (!m) {
      m = store.find_latest_for_vm(vm);
    }
    if (!m) {
      continue;
    }
    if (m->state == state::State::running) {
      if (std::optional<state::Progress> p = store.get_progress(m->id)) {
        progress.emplace(m->id, std::move(*p));
      }
    }
    migrations.emplace(vm, std::move(*m));
  }
  return migration::view_evacuation(rec, migrations, progress);
}

std::string since(const std::string& iso, std::chrono::system_clock::time_point now) {
  try {
    return coarse_age(
        std::chrono::duration_cast<std::chrono::milliseconds>(now - parse_iso8601(iso)));
  } catch (const Error&) {
    return "?";
  }
}

std::string summary_line(const migration::EvacuationView& v) {
  std::string left;
  if (!v.left_known) {
    left = "left unknown until one finishes";
  } else {
    left = fmt::format("{}{} left", v.left_approximate ? "~" : "", human_bytes(v.left));
  }
  std::string line = fmt::format(
      "{} of {} done, {} running, {} queued, {} failed, {} skipped; {} sent, {}", v.done, v.total,
      v.running, v.queued, v.failed, v.skipped, human_bytes(v.sent), left);
  if (v.rate > 0) {
    line += fmt::format(" at {}", human_rate(v.rate));
  }
  if (v.eta_ms) {
    line += fmt::format(", ETA ~{}", human_duration(std::chrono::milliseconds(*v.eta_ms)));
  }
  return line;
}

std::string row_progress(const migration::EvacuationRow& r) {
  if (r.total == 0) {
    return r.error;
  }
  std::string s = fmt::format("{} of {}", human_bytes(r.current), human_bytes(r.total));
  if (r.rate > 0) {
    s += fmt::format(" at {}", human_rate(r.rate));
  }
  if (r.eta_ms) {
    s += fmt::format(", ETA {}", human_duration(std::chrono::milliseconds(*r.eta_ms)));
  }
  return s;
}

// Whether the evacuate process that wrote `v` may still run: on this host its pid, elsewhere
// its last write or a running migration of it.
bool writer_alive(const migration::EvacuationView& v, state::StateStore& store,
                  const Clock& clock) {
  if (v.host == local_hostname()) {
    return pid_alive(v.pid);
  }
  try {
    if (clock.wall_now() - parse_iso8601(v.updated) < k_remote_evacuation_stale) {
      return true;
    }
  } catch (const Error&) {
    return true; // cannot judge a malformed time stamp: keep waiting
  }
  const migration::LeaseProbe probe = sqlite_lease_probe(store, clock);
  for (const migration::EvacuationRow& r : v.rows) {
    if (r.state == "running") {
      if (const std::optional<state::Migration> m = store.find_active_for_vm(r.vm_uuid)) {
        const std::optional<migration::LeaseStatus> l = probe(m->id);
        if (l && l->alive) {
          return true;
        }
      }
    }
  }
  return false;
}

} // namespace

void add_vm_or_evacuation(CLI::App& app, std::string& vm, std::string& evacuation,
                          const std::string& evacuation_help) {
  CLI::Option* v = app.add_option("VM", vm, "Instance UUID");
  v->excludes(app.add_option("--evacuation", evacuation, evacuation_help));
  // --json, --quiet and --no-color may follow the instance, as with sdc-migrate.
  app.fallthrough();
}

std::string render_evacuation(const migration::EvacuationView& v,
                              std::chrono::system_clock::time_point now) {
  std::string out = fmt::format(
      "{} of {} ({}): {}, started {} ago{}\n", v.restore ? "Restore" : "Evacuation",
      v.hostname.empty() ? v.server : v.hostname, v.server,
      v.state == "paused" ? "interrupted (run the same command again to go on)" : v.state,
      since(v.started, now),
      v.state == "running" ? fmt::format(" (pid {} on {})", v.pid, v.host) : std::string());
  out += "  " + summary_line(v) + "\n";
  if (v.rows.empty()) {
    return out;
  }
  std::vector<std::vector<std::string>> rows{
      {"UUID", "ALIAS", "TARGET", "RESULT", "PHASE", "STATE", "SENT", "NOW"}};
  for (const migration::EvacuationRow& r : v.rows) {
    rows.push_back({r.vm_uuid, r.alias.empty() ? "-" : r.alias, r.target.empty() ? "-" : r.target,
                    r.outcome, r.phase.empty() ? "-" : r.phase, r.state.empty() ? "-" : r.state,
                    human_bytes(r.sent + r.current), row_progress(r)});
  }
  std::vector<std::size_t> width(rows.front().size(), 0);
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < row.size(); ++c) {
      width[c] = std::max(width[c], row[c].size());
    }
  }
  out += "\n";
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t c = 0; c < row.size(); ++c) {
      line += c + 1 == row.size() ? row[c] : fmt::format("{:<{}}  ", row[c], width[c]);
    }
    while (!line.empty() && line.back() == ' ') {
      line.pop_back();
    }
    out += line + "\n";
  }
  return out;
}

int get_evacuation(Runtime& rt, const std::string& server) {
  state::StateStore& store = rt.store();
  const state::Migration rec = find_record(store, server);
  const migration::EvacuationView v = current_view(store, rec);
  if (rt.globals().json) {
    rt.reporter().json({{"evacuation", v}});
    return 0;
  }
  const SystemClock clock;
  std::fputs(render_evacuation(v, clock.wall_now()).c_str(), stdout);
  std::fflush(stdout);
  return 0;
}

int watch_evacuation(Runtime& rt, const std::string& server) {
  state::StateStore& store = rt.store();
  SystemClock clock;
  TerminalReporter& out = rt.reporter();
  const bool json = rt.globals().json;
  const std::string id = find_record(store, server).id;
  std::map<std::string, std::string> seen; // vm -> what was last said of it
  bool was_gone = false; // the writer looked gone at the previous poll too, since gone_since
  std::chrono::steady_clock::time_point gone_since{};
  while (true) {
    throw_if_interrupted();
    const std::optional<state::Migration> rec = store.find_migration(id);
    if (!rec) {
      throw NotFoundError(fmt::format("evacuation of {}", server),
                          "its record vanished from the state store");
    }
    const migration::EvacuationView v = current_view(store, *rec);
    const bool running = v.state == "running";
    // The evacuate process gone while the record says running: it was killed (or crashed).
    const bool gone = running && !writer_alive(v, store, clock);
    if (gone && !was_gone) {
      gone_since = clock.now();
    }
    was_gone = gone;
    const bool writer_gone = gone && clock.now() - gone_since >= migration::k_watch_orphan_grace;
    const bool ended = !running || writer_gone;
    bool changed = false;
    for (const migration::EvacuationRow& r : v.rows) {
      const std::string said = fmt::format("{} {} {}", r.outcome, r.phase.empty() ? "-" : r.phase,
                                           r.state.empty() ? "-" : r.state);
      if (seen[r.vm_uuid] != said) {
        seen[r.vm_uuid] = said;
        changed = true;
        if (!json) {
          out.step(fmt::format("{} ({}) to {}: {}{}", r.alias.empty() ? "-" : r.alias, r.vm_uuid,
                               r.target.empty() ? "-" : r.target, r.outcome,
                               r.phase.empty() ? std::string()
                                               : fmt::format(" ({} {})", r.phase, r.state)));
        }
      }
    }
    if (changed || ended) {
      if (json) {
        std::fprintf(stdout, "%s\n", nlohmann::json({{"evacuation", v}}).dump().c_str());
        std::fflush(stdout);
      } else {
        out.result_line(
            fmt::format("{}: {}", v.hostname.empty() ? v.server : v.hostname, summary_line(v)));
      }
    }
    if (ended) {
      const std::string what = fmt::format("{} of {}", v.restore ? "restore" : "evacuation",
                                           v.hostname.empty() ? v.server : v.hostname);
      if (writer_gone) {
        throw Error(ExitCode::failure, what,
                    fmt::format("the evacuate process (pid {} on {}) is gone while it ran; run "
                                "the same command again to go on",
                                v.pid, v.host));
      }
      if (v.state == "successful") {
        if (!json) {
          out.result_line(fmt::format("OK - {} {}", v.hostname.empty() ? v.server : v.hostname,
                                      v.restore ? "restored" : "evacuated"));
        }
        return 0;
      }
      if (v.state == "paused") {
        throw Error(ExitCode::interrupted, what,
                    "interrupted; run the same command again to go on");
      }
      throw Error(ExitCode::failure, what,
                  fmt::format("{} of {} failed; \"zmigrate get VM\" shows why, and \"zmigrate "
                              "rollback\" or \"abort\" or a rerun goes on",
                              v.failed, v.total));
    }
    clock.sleep_for(migration::k_watch_poll);
  }
}

} // namespace zmigrate::cli
