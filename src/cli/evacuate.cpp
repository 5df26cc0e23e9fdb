// SPDX-License-Identifier: MPL-2.0
// zmigrate evacuate CN: plan every instance off a compute node at once, then migrate them, one
// after the other or (--parallel) several at once as `zmigrate migrate` processes.
#include <zmigrate/cli/commands.hpp>
#include <zmigrate/cli/output.hpp>
#include <zmigrate/cli/process_launcher.hpp>
#include <zmigrate/cli/runtime.hpp>
#include <zmigrate/migration/evacuate.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/units.hpp>

#include <memory>
#include <tuple>

#include <fmt/format.h>

namespace zmigrate::cli {

namespace {

// Why the plan chose an instance's node, and the nodes it refused (each with every reason).
nlohmann::json rejected_json(const migration::EvacuationItem& i) {
  nlohmann::json rejected = nlohmann::json::array();
  for (const migration::RejectedNode& n : i.rejected) {
    rejected.push_back({{"uuid", n.uuid}, {"hostname", n.hostname}, {"problems", n.problems}});
  }
  return {{"reason", i.reason}, {"rejected", rejected}};
}

// The end table (or JSON) of evacuate and restore, and their exit status.
int report(Runtime& rt, const migration::EvacuateResult& r, bool dry_run, const std::string& verb,
           const std::string& done_word) {
  TerminalReporter& out = rt.reporter();
  std::size_t bad = 0;
  std::vector<std::string> bad_names;
  for (const auto& i : r.items) {
    if (i.outcome == "failed" || i.outcome == "interrupted") {
      ++bad;
      bad_names.push_back(i.vm_uuid);
    }
  }
  if (out.style().json) {
    nlohmann::json items = nlohmann::json::array();
    for (const auto& i : r.items) {
      items.push_back({{"vm_uuid", i.vm_uuid},
                       {"alias", i.alias},
                       {"brand", i.brand},
                       {"state", i.state},
                       {"target", i.target},
                       {"outcome", i.outcome},
                       {"error", i.error},
                       {"downtime_ms", i.downtime.count()},
                       {"bytes", i.bytes},
                       {"placement", rejected_json(i)}});
    }
    out.json({{"server", {{"uuid", r.server.uuid}, {"hostname", r.server.hostname}}},
              {"dry_run", dry_run},
              {"interrupted", r.interrupted},
              {"instances", items}});
  } else {
    out.result_line(fmt::format("{} ({}): {} instance(s){}", r.server.hostname, r.server.uuid,
                                r.items.size(), dry_run ? ", dry run: nothing changed" : ""));
    if (!r.items.empty()) {
      out.result_line(fmt::format("{:<36}  {:<14} {:<8} {:<11} {:<10} {:>9}  {}", "UUID", "ALIAS",
                                  "STATE", "RESULT", "TARGET", "DOWNTIME", "NOTE"));
    }
    for (const auto& i : r.items) {
      const bool moved =
          i.outcome == "migrated" || i.outcome == "finalized" || i.outcome == "switched";
      // An instance no node takes: every node and why, one line each, below its row.
      const bool unplaced = i.target.empty() && !i.rejected.empty();
      out.result_line(fmt::format(
          "{:<36}  {:<14} {:<8} {:<11} {:<10} {:>9}  {}", i.vm_uuid,
          (i.alias.empty() ? std::string("-") : i.alias).substr(0, 14), i.state, i.outcome,
          i.target.empty() ? "-" : i.target,
          moved && i.state == "running" ? human_duration(i.downtime) : "-",
          unplaced ? std::string("no compute node can take it:")
                   : (i.error.empty()
                          ? (moved || i.outcome == "ready" ? human_bytes(i.bytes) + " sent" : "")
                          : i.error)));
      if (unplaced) {
        for (const migration::RejectedNode& n : i.rejected) {
          out.result_line(
              fmt::format("    {} ({}): {}", n.hostname, n.uuid, migration::describe(n.problems)));
        }
      }
    }
  }
  if (r.interrupted) {
    throw Error(ExitCode::interrupted, fmt::format("{} {}", verb, r.server.hostname),
                "interrupted; the instances not listed were not started. Run the same "
                "command again to go on");
  }
  if (bad > 0) {
    throw Error(ExitCode::failure, fmt::format("{} {}", verb, r.server.hostname),
                fmt::format("{} of {} instance(s) failed ({}); see \"zmigrate get VM\", "
                            "then \"zmigrate migrate VM\", \"rollback\" or \"abort\"",
                            bad, r.items.size(), fmt::join(bad_names, ", ")));
  }
  if (!out.style().json && !dry_run) {
    out.result_line(fmt::format("OK - {} {}", r.server.hostname, done_word));
  }
  return 0;
}

} // namespace

CommandSpec evacuate_command() {
  struct Opts {
    std::string server;
    std::string target;
    bool dry_run = false;
    bool finalize = false;
    bool force_core = false;
    bool allow_older = false;
    bool running_only = false;
    std::vector<std::string> to;
    std::vector<std::string> exclude;
    bool separate_owners = false;
    SyncPolicyOptions policy;
    int parallel = 1;
    int per_node = 0;
    std::string bwlimit;
    std::string switch_mode = "auto";
  };
  auto o = std::make_shared<Opts>();
  return {"evacuate", "Migrate every instance off a compute node, several at once with --parallel",
          [o](CLI::App& app) {
            app.add_option("CN", o->server, "Compute node to empty (UUID or hostname)")->required();
            app.add_option("-n,--target", o->target,
                           "Target compute node for every instance (default: placement per "
                           "instance)");
            app.add_option("--to", o->to,
                           "Place instances only on these compute nodes (UUID or hostname; "
                           "repeatable)")
                ->delimiter(',');
            app.add_option("--exclude", o->exclude,
                           "Leave this instance where it is (UUID or alias; repeatable)")
                ->delimiter(',');
            app.add_flag("--separate-owners", o->separate_owners,
                         "Prefer targets with the fewest instances of the same owner");
            app.add_flag("--dry-run", o->dry_run,
                         "Show which instance would go where, or why no node can take it; change "
                         "nothing");
            app.add_flag("--finalize", o->finalize,
                         "Finalize each instance after its successful switch");
            app.add_flag("--running-only", o->running_only,
                         "Leave stopped instances where they are");
            app.add_flag("--force-core", o->force_core, "Also move Triton core instances");
            app.add_flag("--allow-older-platform", o->allow_older,
                         "Allow targets with an older platform image than the source");
            add_sync_policy_options(app, o->policy);
            app.add_option("--parallel", o->parallel,
                           "Migrate up to this many instances at once, each as its own process "
                           "(default 1: one after the other)")
                ->check(CLI::Range(1, 64));
            app.add_option("--per-node", o->per_node,
                           "At most this many of them into any one target node (default: as "
                           "--parallel)")
                ->check(CLI::Range(1, 64));
            app.add_option("--switch", o->switch_mode,
                           "auto: each instance switches once synced; manual: each stops ready to "
                           "switch, for a switch of the whole node in the window")
                ->check(CLI::IsMember({"auto", "manual"}));
            add_bwlimit_option(app, o->bwlimit,
                               "Bytes per second shared by all the evacuation's transfers (e.g. "
                               "100M), each of the --parallel migrations getting an equal share "
                               "(default: each migration the configuration's bwlimit)");
          },
          [o](Runtime& rt) {
            const std::uint64_t budget = resolve_bwlimit(o->bwlimit, 0);
            migration::Context& ctx =
                rt.context({Service::vmapi, Service::cnapi, Service::napi, Service::imgapi});
            ctx.settings.allow_older_platform = o->allow_older;
            migration::EvacuateOptions eo;
            eo.server = o->server;
            eo.target = o->target;
            eo.to = o->to;
            eo.exclude = o->exclude;
            eo.separate_owners = o->separate_owners;
            eo.dry_run = o->dry_run;
            eo.finalize = o->finalize;
            eo.force_core = o->force_core;
            eo.include_stopped = !o->running_only;
            std::tie(eo.max_syncs, eo.converge_bytes) =
                resolve_sync_policy(o->policy, ctx.settings.max_syncs, ctx.settings.converge_bytes);
            eo.manual_switch = o->switch_mode == "manual";
            if (eo.manual_switch && o->finalize) {
              throw UsageError("evacuate --switch manual", "stops each instance ready to switch: "
                                                           "finalize after \"zmigrate switch "
                                                           "--ready\", not with --finalize");
            }
            eo.parallel = o->parallel;
            eo.per_node = o->per_node;
            eo.bwlimit = o->bwlimit.empty() ? 0 : budget;
            std::unique_ptr<ProcessLauncher> launcher;
            if (o->parallel > 1 && !o->dry_run) {
              launcher = std::make_unique<ProcessLauncher>(self_executable(), rt.globals());
              eo.launcher = launcher.get();
            }
            const migration::EvacuateResult r = migration::evacuate(ctx, eo);
            launcher.reset();

            if (eo.manual_switch && !o->dry_run) {
              return report(rt, r, false, "evacuate",
                            fmt::format("ready to switch: \"zmigrate switch --ready {}\" switches "
                                        "them",
                                        r.server.hostname));
            }
            return report(rt, r, o->dry_run, "evacuate", "evacuated");
          }};
}

int switch_ready_command(Runtime& rt, const std::string& server) {
  migration::Context& ctx =
      rt.context({Service::vmapi, Service::cnapi, Service::napi, Service::imgapi});
  const migration::EvacuateResult r = migration::switch_ready(ctx, server);
  return report(rt, r, false, "switch --ready", "switched");
}

CommandSpec restore_command() {
  struct Opts {
    std::string server;
    bool dry_run = false;
    bool finalize = false;
    SyncPolicyOptions policy;
    int parallel = 1;
    std::string bwlimit;
  };
  auto o = std::make_shared<Opts>();
  return {"restore", "Move back the instances an evacuation took off a compute node",
          [o](CLI::App& app) {
            app.add_option("CN", o->server, "The evacuated compute node (UUID or hostname)")
                ->required();
            app.add_flag("--dry-run", o->dry_run,
                         "Show which instances would go back; change nothing");
            app.add_flag("--finalize", o->finalize,
                         "Finalize each instance after its successful switch back");
            add_sync_policy_options(app, o->policy);
            app.add_option("--parallel", o->parallel,
                           "Migrate up to this many instances at once, each as its own process "
                           "(default 1)")
                ->check(CLI::Range(1, 64));
            add_bwlimit_option(app, o->bwlimit,
                               "Bytes per second shared by all the transfers, each of the "
                               "--parallel migrations getting an equal share (e.g. 100M)");
          },
          [o](Runtime& rt) {
            const std::uint64_t budget = resolve_bwlimit(o->bwlimit, 0);
            migration::Context& ctx =
                rt.context({Service::vmapi, Service::cnapi, Service::napi, Service::imgapi});
            migration::RestoreOptions ro;
            ro.server = o->server;
            ro.dry_run = o->dry_run;
            ro.finalize = o->finalize;
            ro.parallel = o->parallel;
            ro.bwlimit = o->bwlimit.empty() ? 0 : budget;
            std::tie(ro.max_syncs, ro.converge_bytes) =
                resolve_sync_policy(o->policy, ctx.settings.max_syncs, ctx.settings.converge_bytes);
            std::unique_ptr<ProcessLauncher> launcher;
            if (o->parallel > 1 && !o->dry_run) {
              launcher = std::make_unique<ProcessLauncher>(self_executable(), rt.globals());
              ro.launcher = launcher.get();
            }
            const migration::EvacuateResult r = migration::restore(ctx, ro);
            launcher.reset();
            return report(rt, r, o->dry_run, "restore", "restored");
          }};
}

} // namespace zmigrate::cli
