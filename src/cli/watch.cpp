// SPDX-License-Identifier: MPL-2.0
// zmigrate watch VM: follow the operation another zmigrate process runs on a migration, by
// polling the state store (the engine writes phase runs and a progress row there).
#include <zmigrate/cli/commands.hpp>
#include <zmigrate/cli/output.hpp>
#include <zmigrate/cli/runtime.hpp>
#include <zmigrate/migration/watch.hpp>
#include <zmigrate/state/sqlite_store.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>
#include <zmigrate/util/process.hpp>
#include <zmigrate/util/units.hpp>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <memory>
#include <unistd.h>

#include <fmt/format.h>

namespace zmigrate::cli {

namespace {

// A holder on another host that has shown no sign of life (heartbeat, progress) for this long is
// taken for dead, as the engine's own lease takeover does.
constexpr std::chrono::seconds k_remote_lease_stale{300};

} // namespace

migration::LeaseProbe sqlite_lease_probe(state::StateStore& store, const Clock& clock) {
  auto* sqlite = dynamic_cast<state::SqliteStateStore*>(&store);
  const std::string host = local_hostname();
  return [sqlite, host, &clock](const std::string& id) -> std::optional<migration::LeaseStatus> {
    if (sqlite == nullptr) {
      return std::nullopt;
    }
    const std::optional<state::Lease> l = sqlite->find_lease(id);
    if (!l) {
      return std::nullopt;
    }
    migration::LeaseStatus s;
    s.pid = l->pid;
    s.host = l->host;
    s.operation = l->operation;
    if (l->host == host) {
      s.alive = pid_alive(l->pid);
      return s;
    }
    // Another host: no pid to check. The heartbeat moves at every journal step and the progress
    // row about every second during a send; the holder is alive while either is recent.
    auto recent = [&](const std::string& iso) {
      try {
        return !iso.empty() && clock.wall_now() - parse_iso8601(iso) < k_remote_lease_stale;
      } catch (const Error&) {
        return true; // cannot judge a malformed timestamp: keep waiting
      }
    };
    const std::optional<state::Progress> p = sqlite->get_progress(id);
    s.alive = recent(l->heartbeat) || (p && recent(p->updated));
    return s;
  };
}

namespace {

// A finished phase run as one summary line (sync bytes and rate, switch downtime), or "".
std::string done_summary(const migration::WatchEvent& e) {
  const nlohmann::json& d = e.details;
  if (e.state == "failed") {
    return {};
  }
  if (e.phase == "sync" && d.contains("bytes")) {
    const auto ms = d.value("duration_ms", std::int64_t{0});
    return fmt::format("  - sent {} in {} ({})", human_bytes(d.value("bytes", std::uint64_t{0})),
                       human_duration(std::chrono::milliseconds(ms)),
                       human_rate(d.value("rate", 0.0)));
  }
  if (e.phase == "switch" && d.contains("downtime_ms")) {
    return fmt::format("  - downtime {}",
                       human_duration(std::chrono::milliseconds(d.value("downtime_ms", 0LL))));
  }
  return {};
}

void render_text(TerminalReporter& out, const migration::WatchEvent& e) {
  using Kind = migration::WatchEvent::Kind;
  switch (e.kind) {
  case Kind::phase_run:
  case Kind::milestone:
    out.step(e.message.empty() ? e.phase : e.message);
    break;
  case Kind::bytes: {
    state::Progress p;
    p.phase = state::phase_from_string(e.phase);
    p.state = state::State::running;
    p.current = e.current_progress.value_or(0);
    p.total = e.total_progress.value_or(0);
    p.total_approximate = e.total_approximate;
    p.bytes_per_second = e.transfer_bytes_second.value_or(0);
    p.eta_ms = e.eta_ms.value_or(-1);
    out.progress(p);
    break;
  }
  case Kind::phase_done: {
    const std::string line = done_summary(e);
    if (!line.empty() && !out.style().quiet) {
      out.result_line(line);
    }
    break;
  }
  case Kind::end:
    out.result_line(migration::end_line(e));
    break;
  }
}

} // namespace

CommandSpec watch_command() {
  struct Opts {
    std::string vm;
    std::string evacuation;
  };
  auto o = std::make_shared<Opts>();
  return {"watch",
          "Follow the running (or last) operation of an instance's migration, or an evacuation, "
          "until it ends",
          [o](CLI::App& app) {
            add_vm_or_evacuation(
                app, o->vm, o->evacuation,
                "Follow the newest evacuation or restore of this compute node (UUID or hostname) "
                "until it ends: each instance as it moves, done/total, bytes left, ETA");
          },
          [o](Runtime& rt) {
            if (!o->evacuation.empty()) {
              return watch_evacuation(rt, o->evacuation);
            }
            if (o->vm.empty()) {
              throw UsageError("watch", "name an instance (VM) or --evacuation CN");
            }
            state::StateStore& store = rt.store();
            SystemClock clock;
            const migration::LeaseProbe probe = sqlite_lease_probe(store, clock);
            migration::WatchState st = migration::start_watch(store, o->vm);
            TerminalReporter& out = rt.reporter();
            const bool json = rt.globals().json;
            while (true) {
              throw_if_interrupted();
              for (const migration::WatchEvent& e :
                   migration::watch_step(store, probe, clock, st)) {
                if (json) {
                  if (!rt.globals().quiet || e.type == migration::WatchEvent::Type::end) {
                    std::fprintf(stdout, "%s\n", migration::to_json(e).dump().c_str());
                    std::fflush(stdout);
                  }
                } else {
                  render_text(out, e);
                }
              }
              if (st.ended) {
                return st.exit_code;
              }
              clock.sleep_for(migration::k_watch_poll);
            }
          }};
}

} // namespace zmigrate::cli
