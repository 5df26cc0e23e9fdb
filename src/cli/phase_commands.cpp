// SPDX-License-Identifier: MPL-2.0
// The migration phase subcommands: migrate, begin, sync, pause, switch, rollback, finalize,
// abort.
#include <zmigrate/cli/commands.hpp>
#include <zmigrate/cli/output.hpp>
#include <zmigrate/cli/runtime.hpp>
#include <zmigrate/migration/engine.hpp>
#include <zmigrate/migration/evacuate.hpp>
#include <zmigrate/util/arguments.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/units.hpp>

#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <tuple>
#include <unistd.h>
#include <vector>

#include <fmt/format.h>

namespace zmigrate::cli {

namespace {

constexpr std::initializer_list<Service> k_all_services = {Service::vmapi, Service::cnapi,
                                                           Service::napi, Service::imgapi};

struct VmOptions {
  std::string vm;
};

void add_vm_arg(CLI::App& app, VmOptions& o) {
  app.add_option("VM", o.vm, "Instance UUID")->required();
}

// Every phase command starts here: the VM argument is checked before anything is opened or asked.
migration::Context& start(Runtime& rt, const std::string& vm_uuid) {
  require_vm_argument(vm_uuid);
  migration::Context& ctx = rt.context(k_all_services);
  // Log into the active migration's file at once; a command that starts a new migration keeps
  // its first lines in memory until the migration has an id (never in an older one's log).
  if (auto m = ctx.store.find_active_for_vm(vm_uuid)) {
    rt.log_to_migration(m->id, vm_uuid);
  }
  return ctx;
}

nlohmann::json sync_json(const migration::SyncResult& s) {
  nlohmann::json transfers = nlohmann::json::array();
  for (const migration::DatasetTransfer& t : s.transfers) {
    transfers.push_back({{"dataset", t.dataset},
                         {"kind", t.kind},
                         {"from", t.from},
                         {"to", t.to},
                         {"bytes", t.bytes},
                         {"estimated_bytes", t.estimated_bytes},
                         {"estimate_exact", t.estimate_exact},
                         {"duration_ms", t.duration.count()},
                         {"lane", t.lane}});
  }
  return {{"sync_number", s.sync_number},
          {"snapshot", s.snapshot},
          {"bytes", s.bytes},
          {"duration_ms", s.duration.count()},
          {"bytes_per_second", s.rate_bytes_per_s},
          {"transfers", transfers}};
}

nlohmann::json switch_json(const migration::SwitchResult& s) {
  nlohmann::json steps = nlohmann::json::object();
  for (const migration::TimedStep& t : s.downtime_steps) {
    steps[t.name] = t.duration.count();
  }
  return {{"downtime_ms", s.downtime.count()},
          {"downtime_steps_ms", steps},
          {"final_bytes", s.final_bytes},
          {"was_running", s.was_running}};
}

std::string sync_summary(const migration::SyncResult& s) {
  return fmt::format("  sync {}: {} in {} ({})", s.sync_number, human_bytes(s.bytes),
                     human_duration(s.duration), human_rate(s.rate_bytes_per_s));
}

std::string downtime_summary(const migration::SwitchResult& s) {
  std::string parts;
  for (const migration::TimedStep& t : s.downtime_steps) {
    parts += fmt::format("{}{} {}", parts.empty() ? "" : ", ", t.name, human_duration(t.duration));
  }
  return fmt::format("  downtime: {} ({}){}", human_duration(s.downtime), parts,
                     s.was_running ? "" : " [instance was stopped]");
}

// The pre-flight summary of begin --dry-run and migrate --dry-run, in plain words.
std::vector<std::string> preflight_lines(const migration::BeginResult& r) {
  const nlohmann::json& p = r.plan;
  std::vector<std::string> out;
  out.push_back("Dry run - nothing was changed. The migration would move:");
  out.push_back(fmt::format("  instance   {} ({}), {}, {}, owner {}", p.value("vm", ""),
                            p.value("alias", "").empty() ? "-" : p.value("alias", ""),
                            p.value("brand", ""), p.value("state", ""), p.value("owner_uuid", "")));
  std::string ips;
  for (const nlohmann::json& n : p.value("ips", nlohmann::json::array())) {
    const std::string ip = n.value("ip", "");
    ips += fmt::format("{}{} ({} {}{})", ips.empty() ? "" : ", ", ip.empty() ? "no IPv4" : ip,
                       n.value("interface", ""), n.value("nic_tag", ""),
                       n.value("primary", false) ? ", primary" : "");
  }
  out.push_back(fmt::format("  IPs        {}", ips.empty() ? "none" : ips));
  out.push_back(fmt::format("  from       {} ({})", r.source.hostname, r.source.uuid));
  out.push_back(fmt::format("  to         {} ({}): {}", r.target.hostname, r.target.uuid,
                            p.value("target_reason", "")));
  // Automatic placement: every other node it considered and why it refused each.
  const nlohmann::json placement = p.value("placement", nlohmann::json::object());
  for (const nlohmann::json& n : placement.value("rejected", nlohmann::json::array())) {
    std::string why;
    for (const nlohmann::json& problem : n.value("problems", nlohmann::json::array())) {
      why += (why.empty() ? "" : "; ") + problem.value("text", "");
    }
    out.push_back(
        fmt::format("  not        {} ({}): {}", n.value("hostname", ""), n.value("uuid", ""), why));
  }
  for (const nlohmann::json& d : p.value("sizes", nlohmann::json::array())) {
    out.push_back(fmt::format("  dataset    {}  {}{} ({})", d.value("dataset", ""),
                              d.value("exact", false) ? "" : "about ",
                              human_bytes(d.value("bytes", std::uint64_t{0})),
                              d.value("method", "")));
  }
  const nlohmann::json images = p.value("import_images", nlohmann::json::array());
  std::string imgs;
  for (const nlohmann::json& i : images) {
    imgs += (imgs.empty() ? "" : ", ") + i.get<std::string>();
  }
  out.push_back(fmt::format(
      "  images     {}",
      imgs.empty() ? "none to import" : fmt::format("import on {}: {}", r.target.hostname, imgs)));
  out.push_back(fmt::format(
      "  first sync {}{}, about {} at {} ({})", p.value("bytes_exact", false) ? "" : "about ",
      human_bytes(p.value("bytes", std::uint64_t{0})),
      human_duration(std::chrono::milliseconds(
          static_cast<std::int64_t>(p.value("estimated_sync_s", 0.0) * 1000))),
      human_rate(p.value("rate_bytes_per_s", 0.0)), p.value("rate_basis", "")));
  const nlohmann::json down = p.value("expected_downtime_ms", nlohmann::json());
  out.push_back(fmt::format("  downtime   {} ({})",
                            down.is_number() ? "about " + human_duration(std::chrono::milliseconds(
                                                              down.get<std::int64_t>()))
                                             : std::string("unknown"),
                            p.value("downtime_basis", "")));
  return out;
}

// Where a new migration goes and what it may move: begin's and migrate's options.
struct PlacementOptions {
  VmOptions vm;
  std::string target;
  bool force_core = false;
  bool allow_older = false;
};

void add_placement_options(CLI::App& app, PlacementOptions& o) {
  add_vm_arg(app, o.vm);
  app.add_option("-n,--target", o.target, "Target compute node (UUID or hostname)");
}
void add_placement_flags(CLI::App& app, PlacementOptions& o) {
  app.add_flag("--force-core", o.force_core, "Allow a Triton core instance");
  app.add_flag("--allow-older-platform", o.allow_older,
               "Allow a target with an older platform image than the source");
}

// The arguments checked before anything is opened, then the context with the placement policy.
migration::Context& start_placed(Runtime& rt, const PlacementOptions& o) {
  require_vm_argument(o.vm.vm);
  if (!o.target.empty()) {
    require_node_argument("--target", o.target);
  }
  migration::Context& ctx = start(rt, o.vm.vm);
  ctx.settings.allow_older_platform = o.allow_older;
  return ctx;
}

} // namespace

CommandSpec begin_command() {
  struct Opts {
    PlacementOptions place;
    bool dry_run = false;
  };
  auto o = std::make_shared<Opts>();
  return {"begin", "Validate an instance, choose the target node and prepare a migration",
          [o](CLI::App& app) {
            add_placement_options(app, o->place);
            app.add_flag("--dry-run", o->dry_run,
                         "Print the pre-flight summary and change nothing");
            add_placement_flags(app, o->place);
          },
          [o](Runtime& rt) {
            migration::Context& ctx = start_placed(rt, o->place);
            TerminalReporter& out = rt.reporter();
            out.phase_started("begin", "");
            const PlacementOptions& p = o->place;
            const migration::BeginResult r =
                migration::begin(ctx, {p.vm.vm, p.target, o->dry_run, p.force_core, false, true});
            if (out.style().json) {
              out.json({{"dry_run", r.dry_run},
                        {"plan", r.plan},
                        {"migration", r.dry_run ? nlohmann::json() : nlohmann::json(r.migration)}});
            } else if (r.dry_run) {
              for (const std::string& line : preflight_lines(r)) {
                out.result_line(line);
              }
            } else {
              out.result_line(fmt::format("  migration {}: {} -> {}", r.migration.id,
                                          r.source.hostname, r.target.hostname));
              out.result_line("OK - ready for migration sync");
            }
            return 0;
          }};
}

// What a phase command prints: its JSON document (--json), or else its result lines.
struct PhaseOutput {
  nlohmann::json json;
  std::vector<std::string> lines;
};

// A command whose only argument is the VM and which runs one phase.
CommandSpec
vm_phase_command(std::string name, std::string description,
                 std::function<PhaseOutput(migration::Context&, const std::string& vm)> phase) {
  auto o = std::make_shared<VmOptions>();
  return {name, std::move(description), [o](CLI::App& app) { add_vm_arg(app, *o); },
          [o, name, phase](Runtime& rt) {
            migration::Context& ctx = start(rt, o->vm);
            TerminalReporter& out = rt.reporter();
            out.phase_started(name, "");
            const PhaseOutput r = phase(ctx, o->vm);
            if (out.style().json) {
              out.json(r.json);
            } else {
              for (const std::string& line : r.lines) {
                out.result_line(line);
              }
            }
            return 0;
          }};
}

// A destructive command asks on a terminal (scripts are not asked); anything but yes changes
// nothing.
void confirm(const std::string& question, const std::string& command) {
  std::fprintf(stdout, "%s Continue? [y/N] ", question.c_str());
  std::fflush(stdout);
  std::string answer;
  std::getline(std::cin, answer);
  if (answer != "y" && answer != "Y" && answer != "yes") {
    throw Error(ExitCode::failure, command, "not confirmed; nothing was changed");
  }
}

// sync --all: one sync of each waiting migration, a table, exit 1 when one failed.
static int run_sync_all(Runtime& rt, std::optional<std::uint64_t> bwlimit) {
  migration::Context& ctx = rt.context(k_all_services);
  if (bwlimit) {
    ctx.settings.bwlimit = *bwlimit;
  }
  const migration::SyncAllResult r = migration::sync_all(ctx);
  TerminalReporter& out = rt.reporter();
  std::vector<std::string> failed;
  for (const migration::SyncAllItem& i : r.items) {
    if (i.outcome == "failed") {
      failed.push_back(i.vm_uuid);
    }
  }
  if (out.style().json) {
    nlohmann::json items = nlohmann::json::array();
    for (const migration::SyncAllItem& i : r.items) {
      items.push_back({{"vm_uuid", i.vm_uuid},
                       {"alias", i.alias},
                       {"migration_id", i.migration_id},
                       {"outcome", i.outcome},
                       {"error", i.error},
                       {"bytes", i.bytes},
                       {"duration_ms", i.duration.count()}});
    }
    out.json({{"interrupted", r.interrupted}, {"migrations", items}});
  } else {
    out.result_line(
        fmt::format("{} migration(s) waiting between begin and switch", r.items.size()));
    if (!r.items.empty()) {
      out.result_line(fmt::format("{:<36}  {:<14} {:<11} {:>9} {:>8}  {}", "UUID", "ALIAS",
                                  "RESULT", "SENT", "TIME", "NOTE"));
    }
    for (const migration::SyncAllItem& i : r.items) {
      const bool synced = i.outcome == "synced";
      out.result_line(fmt::format("{:<36}  {:<14} {:<11} {:>9} {:>8}  {}", i.vm_uuid,
                                  (i.alias.empty() ? std::string("-") : i.alias).substr(0, 14),
                                  i.outcome, synced ? human_bytes(i.bytes) : "-",
                                  synced ? human_duration(i.duration) : "-", i.error));
    }
  }
  if (r.interrupted) {
    throw Error(ExitCode::interrupted, "sync --all",
                "interrupted; the migrations not listed were not synced. Run it again to go on");
  }
  if (!failed.empty()) {
    throw Error(ExitCode::failure, "sync --all",
                fmt::format("{} of {} sync(s) failed ({}); see \"zmigrate get VM\"", failed.size(),
                            r.items.size(), fmt::join(failed, ", ")));
  }
  if (!out.style().json) {
    out.result_line("OK - every waiting migration synced or skipped");
  }
  return 0;
}

CommandSpec sync_command() {
  struct Opts {
    VmOptions vm;
    std::string every;
    std::string bwlimit;
    bool all = false;
  };
  auto o = std::make_shared<Opts>();
  return {"sync", "Copy the instance's data to the target while it runs (repeatable)",
          [o](CLI::App& app) {
            app.add_option("VM", o->vm.vm, "Instance UUID (or --all)");
            app.add_flag("--all", o->all,
                         "Sync every migration waiting between begin and switch, one after the "
                         "other (for cron)");
            app.add_option("--every", o->every,
                           "Sync again after each such pause (e.g. 60s, 5m) until interrupted, or "
                           "until \"zmigrate switch\" from another shell takes over");
            add_bwlimit_option(app, o->bwlimit,
                               "Send at most this many bytes per second (e.g. 50M; default: the "
                               "configuration's bwlimit, else unlimited)");
          },
          [o](Runtime& rt) {
            // Checked before anything is read or changed: a bad value is a usage error.
            const std::optional<std::chrono::milliseconds> every =
                o->every.empty()
                    ? std::nullopt
                    : std::optional<std::chrono::milliseconds>(parse_duration(o->every));
            const std::uint64_t bwlimit = resolve_bwlimit(o->bwlimit, 0);
            if (o->all) {
              if (!o->vm.vm.empty() || every) {
                throw UsageError("sync --all", "takes no VM and no --every: it syncs every "
                                               "waiting migration once (run it from cron)");
              }
              return run_sync_all(rt, o->bwlimit.empty() ? std::nullopt
                                                         : std::optional<std::uint64_t>(bwlimit));
            }
            if (o->vm.vm.empty()) {
              throw UsageError("sync", "needs the instance's UUID, or --all");
            }
            migration::Context& ctx = start(rt, o->vm.vm);
            if (!o->bwlimit.empty()) {
              ctx.settings.bwlimit = bwlimit;
            }
            TerminalReporter& out = rt.reporter();
            out.phase_started("sync", "");
            if (!every) {
              const migration::SyncResult r = migration::sync(ctx, o->vm.vm);
              if (out.style().json) {
                out.json({{"sync", sync_json(r)}, {"migration", r.migration}});
              } else {
                out.result_line(sync_summary(r));
                out.result_line("OK - ready for migration sync or migration switch");
              }
              return 0;
            }
            const migration::SyncLoopResult r =
                migration::sync_loop(ctx, o->vm.vm, *every, [&](const migration::SyncResult& s) {
                  if (out.style().json) {
                    out.json({{"sync", sync_json(s)}});
                  } else {
                    out.result_line(sync_summary(s));
                    out.result_line(fmt::format("  next sync in {} (Ctrl-C ends the loop; "
                                                "\"zmigrate switch {}\" takes over)",
                                                human_duration(*every), o->vm.vm));
                  }
                });
            const std::optional<state::Migration> m = ctx.store.find_latest_for_vm(o->vm.vm);
            std::string line;
            if (r.ended == "switch") {
              line = r.switch_by ? fmt::format("Handed over to the switch (pid {} on {}) after {} "
                                               "syncs",
                                               r.switch_by->pid, r.switch_by->host, r.syncs.size())
                                 : fmt::format("The migration was switched by another command "
                                               "after {} syncs",
                                               r.syncs.size());
            } else if (r.ended == "ended") {
              line = fmt::format("The migration was ended by another command (abort) after {} "
                                 "syncs",
                                 r.syncs.size());
            } else {
              line = fmt::format("Stopped after {} syncs; the migration is ready for sync or "
                                 "switch",
                                 r.syncs.size());
            }
            if (out.style().json) {
              out.json({{"ended", r.ended},
                        {"syncs", r.syncs.size()},
                        {"migration", m ? nlohmann::json(*m) : nlohmann::json()}});
            } else {
              out.result_line(line);
            }
            return 0;
          }};
}

CommandSpec switch_command() {
  struct Opts {
    VmOptions vm;
    std::string ready;
  };
  auto o = std::make_shared<Opts>();
  return {"switch", "Stop the instance, send the final delta and start it on the target",
          [o](CLI::App& app) {
            app.add_option("VM", o->vm.vm, "Instance UUID (or --ready CN)");
            app.add_option("--ready", o->ready,
                           "Switch every migration from this compute node that is ready to "
                           "switch (as a manual evacuation leaves them), one after the other");
          },
          [o](Runtime& rt) {
            if (!o->ready.empty()) {
              if (!o->vm.vm.empty()) {
                throw UsageError("switch --ready", "takes no VM: it switches every ready "
                                                   "migration from the node");
              }
              require_node_argument("--ready", o->ready);
              return switch_ready_command(rt, o->ready);
            }
            if (o->vm.vm.empty()) {
              throw UsageError("switch", "needs the instance's UUID, or --ready CN");
            }
            migration::Context& ctx = start(rt, o->vm.vm);
            TerminalReporter& out = rt.reporter();
            out.phase_started("switch", "");
            const migration::SwitchResult r = migration::switch_over(ctx, o->vm.vm);
            if (out.style().json) {
              out.json({{"switch", switch_json(r)}, {"migration", r.migration}});
            } else {
              out.result_line(downtime_summary(r));
              out.result_line("OK - switch was successful");
            }
            return 0;
          }};
}

CommandSpec rollback_command() {
  struct Opts {
    VmOptions vm;
    bool keep_changes = false;
    bool yes = false;
  };
  auto o = std::make_shared<Opts>();
  return {"rollback", "After a switch, make the original instance primary again",
          [o](CLI::App& app) {
            add_vm_arg(app, o->vm);
            app.add_flag("--keep-changes", o->keep_changes,
                         "First send the target's changes since the switch back to the source");
            app.add_flag("-y,--yes", o->yes, "Do not ask for confirmation");
          },
          [o](Runtime& rt) {
            migration::Context& ctx = start(rt, o->vm.vm);
            if (!o->keep_changes && !o->yes && ::isatty(STDIN_FILENO) == 1) {
              // Destructive: say what is thrown away, and ask (scripts are not asked).
              std::string what;
              try {
                const migration::RollbackPreview p = migration::rollback_preview(ctx, o->vm.vm);
                what = fmt::format("{}{} written on {} since the switch", p.approximate ? "~" : "",
                                   human_bytes(p.written_bytes), p.target_hostname);
              } catch (const Error& e) {
                what = fmt::format("what was written on the target since the switch (cannot "
                                   "tell how much: {})",
                                   e.what());
              }
              confirm(fmt::format("This throws away {} (--keep-changes sends it back to the "
                                  "source first).",
                                  what),
                      "rollback");
            }
            TerminalReporter& out = rt.reporter();
            out.phase_started("rollback", "");
            const migration::RollbackResult r = migration::rollback(ctx, o->vm.vm, o->keep_changes);
            if (out.style().json) {
              out.json({{"rollback",
                         {{"kept_changes", r.kept_changes},
                          {"bytes", r.bytes},
                          {"downtime_ms", r.downtime.count()}}},
                        {"migration", r.migration}});
            } else {
              if (r.kept_changes) {
                out.result_line(
                    fmt::format("  sent {} of changes back to the source", human_bytes(r.bytes)));
              }
              out.result_line("OK - rollback was successful");
            }
            return 0;
          }};
}

CommandSpec pause_command() {
  return vm_phase_command(
      "pause", "Stop the running sync of the instance, from any shell; sync or migrate resumes",
      [](migration::Context& ctx, const std::string& vm) -> PhaseOutput {
        const migration::PauseResult r = migration::pause(ctx, vm);
        nlohmann::json j{{"migration", r.migration}};
        std::string line;
        if (r.stopped) {
          j["stopped"] = {{"operation", r.stopped->operation},
                          {"pid", r.stopped->pid},
                          {"host", r.stopped->host}};
          line =
              fmt::format("Migration paused: the {} (pid {}) stopped; it is now {}/{}",
                          r.stopped->operation, r.stopped->pid, state::to_string(r.migration.phase),
                          state::to_string(r.migration.state));
        } else {
          line =
              fmt::format("Nothing was running on it; it stays {}/{} (a migrate that is "
                          "between two syncs stops before its next one)",
                          state::to_string(r.migration.phase), state::to_string(r.migration.state));
        }
        return {j,
                {line, fmt::format("OK - \"zmigrate sync {0}\" or \"zmigrate migrate {0}\" "
                                   "goes on from here",
                                   vm)}};
      });
}

CommandSpec abort_command() {
  return vm_phase_command("abort",
                          "Before a switch, throw the target copy away; the source is untouched "
                          "(a running sync is stopped first)",
                          [](migration::Context& ctx, const std::string& vm) -> PhaseOutput {
                            const state::Migration m = migration::abort(ctx, vm);
                            return {{{"migration", m}}, {"Migration was successfully aborted"}};
                          });
}

CommandSpec finalize_command() {
  struct Opts {
    VmOptions vm;
    bool yes = false;
  };
  auto o = std::make_shared<Opts>();
  return {"finalize", "After a switch, delete the hidden original instance and every artefact",
          [o](CLI::App& app) {
            add_vm_arg(app, o->vm);
            app.add_flag("-y,--yes", o->yes, "Do not ask for confirmation");
          },
          [o](Runtime& rt) {
            require_vm_argument(o->vm.vm); // before the prompt quotes it
            if (!o->yes && ::isatty(STDIN_FILENO) == 1) {
              confirm(fmt::format("This deletes the original instance {} on the source node; "
                                  "rollback will no longer be possible.",
                                  o->vm.vm),
                      "finalize");
            }
            migration::Context& ctx = start(rt, o->vm.vm);
            TerminalReporter& out = rt.reporter();
            out.phase_started("finalize", "");
            const state::Migration m = migration::finalize(ctx, o->vm.vm);
            if (out.style().json) {
              out.json({{"migration", m}});
            } else {
              out.result_line("Done - the migration is finished.");
            }
            return 0;
          }};
}

void add_sync_policy_options(CLI::App& app, SyncPolicyOptions& o) {
  app.add_option("--max-syncs", o.max_syncs,
                 "Incremental syncs at most (per instance) before switching (default 6)")
      ->check(CLI::Range(kMaxSyncsMin, kMaxSyncsMax));
  app.add_option("--converge", o.converge,
                 "Switch once a delta is at most this size (default 64M)");
}

void add_bwlimit_option(CLI::App& app, std::string& rate, const std::string& help) {
  app.add_option("--bwlimit", rate, help);
}

std::uint64_t resolve_bwlimit(const std::string& rate, std::uint64_t config_bwlimit) {
  if (rate.empty()) {
    return config_bwlimit;
  }
  std::string text = rate;
  if (text.ends_with("/s")) {
    text.resize(text.size() - 2);
  }
  try {
    return parse_bytes(text);
  } catch (const UsageError&) {
    throw UsageError(fmt::format("--bwlimit {}", rate),
                     "is not a rate: give bytes per second like 50M (50 MiB/s), 512k or 0 for "
                     "no limit");
  }
}

std::pair<int, std::uint64_t> resolve_sync_policy(const SyncPolicyOptions& o, int config_max_syncs,
                                                  std::uint64_t config_converge) {
  return {o.max_syncs > 0 ? o.max_syncs : config_max_syncs,
          o.converge.empty() ? config_converge : parse_bytes(o.converge)};
}

CommandSpec migrate_command() {
  struct Opts {
    PlacementOptions place;
    SyncPolicyOptions policy;
    bool finalize = false;
    bool offline = false;
    bool dry_run = false;
    std::string max_downtime;
    std::string deadline;
    bool force_after_deadline = false;
    std::string bwlimit;
    std::string evacuation;
    bool no_switch = false;
  };
  auto o = std::make_shared<Opts>();
  return {
      "migrate", "begin, sync until the delta converges, then switch (stops before finalize)",
      [o](CLI::App& app) {
        add_placement_options(app, o->place);
        add_sync_policy_options(app, o->policy);
        app.add_flag("--finalize", o->finalize, "Finalize after a successful switch");
        app.add_option("--max-downtime", o->max_downtime,
                       "Sync until the predicted switch downtime fits this budget (e.g. 500ms)");
        app.add_option("--deadline", o->deadline,
                       "With --max-downtime: stop syncing after this long (e.g. 2h)");
        app.add_flag("--force-after-deadline", o->force_after_deadline,
                     "With --max-downtime: switch anyway when the budget is not met in time");
        add_bwlimit_option(app, o->bwlimit,
                           "Send at most this many bytes per second, final delta included (e.g. "
                           "50M; default: the configuration's bwlimit, else unlimited)");
        app.add_flag("--no-switch", o->no_switch,
                     "Stop ready to switch after the syncs (\"zmigrate switch\" in the window)");
        // evacuate's children only: the node being emptied, recorded for `restore`.
        app.add_option("--evacuation", o->evacuation)->group("");
        app.add_flag("--dry-run", o->dry_run,
                     "Print what the migration would do (the pre-flight summary); change nothing");
        app.add_flag("--offline", o->offline,
                     "Stop the instance first, copy it whole, start it on the target (the "
                     "downtime is the whole copy; for instances that write faster than the link)");
        add_placement_flags(app, o->place);
      },
      [o](Runtime& rt) {
        // Bad values are usage errors, before anything is read.
        std::optional<std::chrono::milliseconds> budget;
        std::optional<std::chrono::milliseconds> deadline;
        if (!o->max_downtime.empty()) {
          budget = parse_duration(o->max_downtime);
        }
        if (!o->deadline.empty()) {
          deadline = parse_duration(o->deadline);
        }
        if ((deadline || o->force_after_deadline) && !budget) {
          throw UsageError("migrate", "--deadline and --force-after-deadline go with "
                                      "--max-downtime");
        }
        if (budget && o->offline) {
          throw UsageError("migrate", "--max-downtime and --offline exclude each other (offline, "
                                      "the downtime is the whole copy)");
        }
        const std::uint64_t bwlimit = resolve_bwlimit(o->bwlimit, 0);
        migration::Context& ctx = start_placed(rt, o->place);
        if (!o->bwlimit.empty()) {
          ctx.settings.bwlimit = bwlimit;
        }
        const std::string& vm = o->place.vm.vm;
        migration::MigrateOptions mo;
        mo.max_downtime = budget;
        mo.deadline = deadline;
        mo.force_after_deadline = o->force_after_deadline;
        mo.begin = {vm, o->place.target, false, o->place.force_core, true};
        std::tie(mo.max_syncs, mo.converge_bytes) =
            resolve_sync_policy(o->policy, ctx.settings.max_syncs, ctx.settings.converge_bytes);
        mo.finalize = o->finalize;
        mo.begin.evacuation = o->evacuation;
        mo.no_switch = o->no_switch;
        mo.offline = o->offline;
        if (o->dry_run) {
          migration::BeginOptions b = mo.begin;
          b.dry_run = true;
          b.summary = true;
          rt.reporter().phase_started("migrate", "");
          const migration::BeginResult br = migration::begin(ctx, b);
          TerminalReporter& out = rt.reporter();
          const std::string then =
              fmt::format("{}; {}",
                          mo.offline ? "then: stop it, copy it whole, switch and start "
                                       "it on the target"
                                     : fmt::format("then: sync until a delta is at most "
                                                   "{} (at most {} syncs), switch",
                                                   human_bytes(mo.converge_bytes), mo.max_syncs),
                          mo.finalize ? "finalize" : "stop before finalize");
          if (out.style().json) {
            out.json({{"dry_run", true},
                      {"plan", br.plan},
                      {"offline", mo.offline},
                      {"finalize", mo.finalize},
                      {"max_syncs", mo.max_syncs},
                      {"converge_bytes", mo.converge_bytes}});
          } else {
            for (const std::string& line : preflight_lines(br)) {
              out.result_line(line);
            }
            out.result_line("  " + then);
          }
          return 0;
        }
        const migration::MigrateResult r = migration::migrate(ctx, mo);
        TerminalReporter& out = rt.reporter();
        if (out.style().json) {
          nlohmann::json syncs = nlohmann::json::array();
          for (const auto& s : r.syncs) {
            syncs.push_back(sync_json(s));
          }
          out.json({{"migration", ctx.store.find_latest_for_vm(vm).value_or(state::Migration{})},
                    {"syncs", syncs},
                    {"switch", r.switched ? switch_json(*r.switched) : nlohmann::json()},
                    {"predicted_downtime_ms", r.predicted_downtime
                                                  ? nlohmann::json(r.predicted_downtime->count())
                                                  : nlohmann::json()},
                    {"offline_downtime_ms", r.offline_downtime
                                                ? nlohmann::json(r.offline_downtime->count())
                                                : nlohmann::json()},
                    {"finalized", r.finalized}});
        } else {
          for (const auto& s : r.syncs) {
            out.result_line(sync_summary(s));
          }
          if (r.switched) {
            out.result_line(downtime_summary(*r.switched));
          }
          if (r.switched && r.predicted_downtime) {
            out.result_line(fmt::format("  predicted downtime {} (budget {}), measured {}",
                                        human_duration(*r.predicted_downtime),
                                        human_duration(*mo.max_downtime),
                                        human_duration(r.switched->downtime)));
          }
          if (r.offline_downtime) {
            out.result_line(
                r.switched && r.switched->was_running
                    ? fmt::format("  downtime (offline): {}, from the stop before the copy to the "
                                  "start on the target",
                                  human_duration(*r.offline_downtime))
                    : std::string("  downtime (offline): none, the instance was not running"));
          }
          out.result_line("OK - switch was successful");
          out.result_line(r.finalized ? "Done - the migration is finished."
                                      : fmt::format("  run \"zmigrate finalize {0}\" to delete "
                                                    "the original, or \"zmigrate rollback {0}\"",
                                                    vm));
        }
        return 0;
      }};
}

} // namespace zmigrate::cli
