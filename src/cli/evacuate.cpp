// SPDX-License-Identifier: MPL-2.0
// zmigrate evacuate CN: plan every instance off a compute node at once, then migrate them one
// after the other.
#include <zmigrate/cli/commands.hpp>
#include <zmigrate/cli/output.hpp>
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
  };
  auto o = std::make_shared<Opts>();
  return {
      "evacuate", "Migrate every instance off a compute node, one after the other",
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
        app.add_flag("--running-only", o->running_only, "Leave stopped instances where they are");
        app.add_flag("--force-core", o->force_core, "Also move Triton core instances");
        app.add_flag("--allow-older-platform", o->allow_older,
                     "Allow targets with an older platform image than the source");
        add_sync_policy_options(app, o->policy);
      },
      [o](Runtime& rt) {
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
        const migration::EvacuateResult r = migration::evacuate(ctx, eo);

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
                    {"dry_run", o->dry_run},
                    {"interrupted", r.interrupted},
                    {"instances", items}});
        } else {
          out.result_line(fmt::format("{} ({}): {} instance(s){}", r.server.hostname, r.server.uuid,
                                      r.items.size(),
                                      o->dry_run ? ", dry run: nothing changed" : ""));
          if (!r.items.empty()) {
            out.result_line(fmt::format("{:<36}  {:<14} {:<8} {:<11} {:<10} {:>9}  {}", "UUID",
                                        "ALIAS", "STATE", "RESULT", "TARGET", "DOWNTIME", "NOTE"));
          }
          for (const auto& i : r.items) {
            const bool moved = i.outcome == "migrated" || i.outcome == "finalized";
            // An instance no node takes: every node and why, one line each, below its row.
            const bool unplaced = i.target.empty() && !i.rejected.empty();
            out.result_line(fmt::format(
                "{:<36}  {:<14} {:<8} {:<11} {:<10} {:>9}  {}", i.vm_uuid,
                (i.alias.empty() ? std::string("-") : i.alias).substr(0, 14), i.state, i.outcome,
                i.target.empty() ? "-" : i.target,
                moved && i.state == "running" ? human_duration(i.downtime) : "-",
                unplaced
                    ? std::string("no compute node can take it:")
                    : (i.error.empty() ? (moved ? human_bytes(i.bytes) + " sent" : "") : i.error)));
            if (unplaced) {
              for (const migration::RejectedNode& n : i.rejected) {
                out.result_line(fmt::format("    {} ({}): {}", n.hostname, n.uuid,
                                            migration::describe(n.problems)));
              }
            }
          }
        }
        if (r.interrupted) {
          throw Error(ExitCode::interrupted, fmt::format("evacuate {}", r.server.hostname),
                      "interrupted; instances after the last one listed were not started. "
                      "Run the same command again to go on");
        }
        if (bad > 0) {
          throw Error(ExitCode::failure, fmt::format("evacuate {}", r.server.hostname),
                      fmt::format("{} of {} instance(s) failed ({}); see \"zmigrate get VM\", "
                                  "then \"zmigrate migrate VM\", \"rollback\" or \"abort\"",
                                  bad, r.items.size(), fmt::join(bad_names, ", ")));
        }
        if (!out.style().json && !o->dry_run) {
          out.result_line(fmt::format("OK - {} evacuated", r.server.hostname));
        }
        return 0;
      }};
}

} // namespace zmigrate::cli
