// SPDX-License-Identifier: MPL-2.0
// `zmigrate cleanup`: what the ledger still records as live, removed where that loses nothing.
#include <zmigrate/cli/commands.hpp>
#include <zmigrate/cli/output.hpp>
#include <zmigrate/cli/runtime.hpp>
#include <zmigrate/migration/cleanup.hpp>

#include <cstdio>
#include <memory>

#include <fmt/format.h>

namespace zmigrate::cli {

CommandSpec cleanup_command() {
  struct Opts {
    bool dry_run = false;
  };
  auto o = std::make_shared<Opts>();
  return {"cleanup",
          "Remove every live data-path key and directory of every migration (archived ones too)",
          [o](CLI::App& app) {
            app.add_flag("--dry-run", o->dry_run, "Only show what would be removed");
            app.fallthrough();
          },
          [o](Runtime& rt) {
            // NAPI for IP reservations, CNAPI to find the nodes.
            migration::Context& ctx = rt.context({Service::cnapi, Service::napi});
            const migration::CleanupResult r = migration::cleanup(ctx, o->dry_run);
            if (rt.globals().json) {
              nlohmann::json items = nlohmann::json::array();
              for (const migration::CleanupItem& i : r.items) {
                items.push_back({{"migration", i.migration_id},
                                 {"vm_uuid", i.vm_uuid},
                                 {"kind", i.kind},
                                 {"host", i.host},
                                 {"name", i.name},
                                 {"outcome", i.outcome},
                                 {"why", i.why}});
              }
              rt.reporter().json({{"items", items}, {"complete", r.complete()}});
            } else {
              for (const migration::CleanupItem& i : r.items) {
                std::fputs(fmt::format("{:<12} {:<15} {:<15} {}  (migration {} of {}){}\n",
                                       i.outcome, i.kind, i.host, i.name, i.migration_id,
                                       i.vm_uuid.empty() ? "?" : i.vm_uuid,
                                       i.why.empty() ? "" : ": " + i.why)
                               .c_str(),
                           stdout);
              }
              std::fputs(r.items.empty() ? "nothing to clean up\n"
                         : r.complete()  ? "cleanup complete\n"
                                         : "cleanup incomplete: rerun it when the nodes answer\n",
                         stdout);
              std::fflush(stdout);
            }
            return r.complete() ? 0 : 1;
          }};
}

} // namespace zmigrate::cli
