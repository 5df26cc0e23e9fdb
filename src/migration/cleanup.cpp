// SPDX-License-Identifier: MPL-2.0
#include "engine_common.hpp"

#include <zmigrate/migration/cleanup.hpp>
#include <zmigrate/migration/data_path.hpp>
#include <zmigrate/migration/operation.hpp>
#include <zmigrate/util/error.hpp>

#include <map>
#include <optional>
#include <set>

namespace zmigrate::migration {

namespace {

bool data_path_kind(const std::string& kind) {
  return kind == "data_path_dir" || kind == "authorized_key";
}

CleanupItem item_of(const state::Artefact& a, const std::string& vm_uuid, std::string outcome,
                    std::string why = {}) {
  return {a.migration_id, vm_uuid, a.kind, a.host, a.name, std::move(outcome), std::move(why)};
}

// The rows of one migration: what cleanup may remove, removed (or reported).
void clean_one(Context& ctx, const state::Migration& m, const std::vector<state::Artefact>& rows,
               bool dry_run, std::vector<CleanupItem>& out) {
  auto mine = [&](const state::Artefact& a) {
    return data_path_kind(a.kind) || (m.archived && a.kind == "ip_reservation");
  };
  for (const state::Artefact& a : rows) {
    if (!mine(a)) {
      out.push_back(item_of(a, m.vm_uuid, "kept",
                            m.archived ? "part of the instance's data: check it by hand"
                                       : "the migration's own: its rollback, abort or finalize "
                                         "removes it"));
    }
  }
  std::vector<state::Artefact> todo;
  for (const state::Artefact& a : rows) {
    if (mine(a)) {
      todo.push_back(a);
    }
  }
  if (todo.empty()) {
    return;
  }
  if (dry_run) {
    for (const state::Artefact& a : todo) {
      out.push_back(item_of(a, m.vm_uuid, "would remove"));
    }
    return;
  }
  std::optional<Operation> op;
  try {
    op.emplace(ctx, m, "cleanup"); // never beside a command that is working on it
  } catch (const PreconditionError& e) {
    for (const state::Artefact& a : todo) {
      out.push_back(item_of(a, m.vm_uuid, "busy", e.reason()));
    }
    return;
  }
  std::string why;
  try {
    bool has_path = false;
    for (const state::Artefact& a : todo) {
      if (a.kind == "ip_reservation") {
        ctx.inventory.set_ip_reserved(a.details.at("network_uuid").get<std::string>(),
                                      a.details.at("ip").get<std::string>(), false);
        ctx.store.mark_artefact_removed(a.id);
      } else {
        has_path = true;
      }
    }
    if (has_path) {
      detail::Ends ends = detail::open_ends(ctx, m);
      ctx.nodes.remove_leftover_links(ctx, m.id, *ends.source, *ends.target, Leftovers::all);
    }
  } catch (const Error& e) {
    why = e.what();
  }
  std::set<std::int64_t> live;
  for (const state::Artefact& a : ctx.store.live_artefacts(m.id)) {
    live.insert(a.id);
  }
  for (const state::Artefact& a : todo) {
    if (live.count(a.id) == 0) {
      out.push_back(item_of(a, m.vm_uuid, "removed"));
    } else {
      out.push_back(item_of(a, m.vm_uuid, "left",
                            why.empty() ? "the node did not answer or refused (see the log); "
                                          "rerun cleanup when it is back"
                                        : why));
    }
  }
}

} // namespace

bool CleanupResult::complete() const {
  for (const CleanupItem& i : items) {
    if (i.outcome == "left" || i.outcome == "busy") {
      return false;
    }
  }
  return true;
}

CleanupResult cleanup(Context& ctx, bool dry_run) {
  std::map<std::string, std::vector<state::Artefact>> by_migration;
  for (const state::Artefact& a : ctx.store.all_live_artefacts("")) {
    by_migration[a.migration_id].push_back(a);
  }
  CleanupResult result;
  for (const auto& [id, rows] : by_migration) {
    const std::optional<state::Migration> m = ctx.store.find_migration(id);
    if (!m) {
      for (const state::Artefact& a : rows) {
        result.items.push_back(item_of(a, "", "left", "no migration record names it"));
      }
      continue;
    }
    clean_one(ctx, *m, rows, dry_run, result.items);
  }
  return result;
}

} // namespace zmigrate::migration
