// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/evacuate.hpp>
#include <zmigrate/migration/evacuation_record.hpp>
#include <zmigrate/migration/plan.hpp>
#include <zmigrate/migration/transitions.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>

#include <algorithm>
#include <functional>
#include <map>

#include <fmt/format.h>

namespace zmigrate::migration {

bool EvacuateResult::all_ok() const {
  return std::none_of(items.begin(), items.end(), [](const EvacuationItem& i) {
    return i.outcome == "failed" || i.outcome == "interrupted";
  });
}

std::vector<inventory::Vm> evacuation_order(std::vector<inventory::Vm> vms, bool include_stopped) {
  std::vector<inventory::Vm> out;
  for (inventory::Vm& vm : vms) {
    if (vm.state == "destroyed" || vm.state == "failed") {
      continue;
    }
    if (!include_stopped && vm.state != "running") {
      continue;
    }
    out.push_back(std::move(vm));
  }
  std::stable_sort(out.begin(), out.end(), [](const inventory::Vm& a, const inventory::Vm& b) {
    const bool ra = a.state == "running";
    const bool rb = b.state == "running";
    if (ra != rb) {
      return !ra;
    }
    if (a.alias != b.alias) {
      return a.alias < b.alias;
    }
    return a.uuid < b.uuid;
  });
  return out;
}

MovedTotals moved_totals(const state::Migration& m) {
  MovedTotals t;
  const auto count = [&t](const nlohmann::json& details, const char* key) {
    if (details.contains(key) && details[key].is_number_integer() &&
        details[key].get<std::int64_t>() >= 0) {
      t.bytes += details[key].get<std::uint64_t>();
    }
  };
  for (const state::PhaseRun& r : m.history) {
    // A finished sync ends "paused" (Triton's spelling: ready for the next sync or the switch).
    const bool done = r.state == state::State::successful ||
                      (r.phase == state::Phase::sync && r.state == state::State::paused);
    if (!done || !r.details.is_object()) {
      continue;
    }
    if (r.phase == state::Phase::sync) {
      count(r.details, "bytes");
    } else if (r.phase == state::Phase::switch_) {
      count(r.details, "final_bytes");
      if (r.details.contains("downtime_ms") && r.details["downtime_ms"].is_number()) {
        t.downtime = std::chrono::milliseconds(r.details["downtime_ms"].get<long long>());
      }
    }
  }
  return t;
}

void summarize_record(const state::Migration& m, EvacuationItem& item) {
  const MovedTotals moved = moved_totals(m);
  item.bytes = moved.bytes;
  item.downtime = moved.downtime;
  if (const nlohmann::json t = m.data.value("target", nlohmann::json::object());
      t.is_object() && t.contains("hostname") && t["hostname"].is_string()) {
    item.target = t["hostname"].get<std::string>();
  }
}

std::optional<std::size_t> next_to_start(const std::vector<QueuedMigration>& queue,
                                         const std::vector<std::string>& running_targets,
                                         int parallel, int per_node) {
  if (static_cast<int>(running_targets.size()) >= std::max(1, parallel)) {
    return std::nullopt;
  }
  for (std::size_t i = 0; i < queue.size(); ++i) {
    const auto on_target =
        std::count(running_targets.begin(), running_targets.end(), queue[i].target_uuid);
    if (per_node <= 0 || on_target < per_node) {
      return i;
    }
  }
  return std::nullopt;
}

void InProcessLauncher::start(const MigrationRequest& request) {
  MigrateOptions mo;
  mo.begin = {request.vm_uuid, request.target_uuid, false, request.force_core, true};
  mo.begin.evacuation = request.evacuation;
  mo.max_syncs = request.max_syncs;
  mo.converge_bytes = request.converge_bytes;
  mo.finalize = request.finalize;
  mo.no_switch = request.no_switch;
  const Settings saved = m_ctx.settings;
  m_ctx.settings.allow_older_platform = request.allow_older_platform;
  if (request.bwlimit > 0) {
    m_ctx.settings.bwlimit = request.bwlimit;
  }
  MigrationExit done;
  done.vm_uuid = request.vm_uuid;
  try {
    migrate(m_ctx, mo);
  } catch (const Error& e) {
    done.exit_status = static_cast<int>(e.exit_code());
    done.error = e.what();
  } catch (const std::exception& e) {
    done.exit_status = static_cast<int>(ExitCode::failure);
    done.error = e.what();
  }
  m_ctx.settings = saved;
  m_done.push_back(std::move(done));
}

std::optional<MigrationExit> InProcessLauncher::wait_any() {
  if (m_done.empty()) {
    return std::nullopt;
  }
  MigrationExit done = std::move(m_done.front());
  m_done.erase(m_done.begin());
  return done;
}

namespace {

// Starts the queued migrations within the limits and waits for them; fills their items.
void run_queue(Context& ctx, const EvacuateOptions& options, std::vector<QueuedMigration> queue,
               std::vector<EvacuationItem>& items, EvacuateResult& result) {
  InProcessLauncher local(ctx);
  MigrationLauncher& launcher = options.launcher != nullptr ? *options.launcher : local;
  const int parallel = options.launcher != nullptr ? std::max(1, options.parallel) : 1;
  std::uint64_t share = 0;
  if (options.bwlimit > 0) {
    share = std::max<std::uint64_t>(1, options.bwlimit / static_cast<std::uint64_t>(parallel));
  }
  const auto item_of = [&items](const std::string& vm) -> EvacuationItem& {
    return *std::find_if(items.begin(), items.end(),
                         [&vm](const EvacuationItem& i) { return i.vm_uuid == vm; });
  };
  EvacuationLog record(ctx, result.server, options.restore,
                       {{"parallel", parallel},
                        {"per_node", options.per_node},
                        {"bwlimit", options.bwlimit},
                        {"switch", options.manual_switch ? "manual" : "auto"},
                        {"finalize", options.finalize}},
                       items);
  std::vector<std::string> running_vms;
  std::vector<std::string> running_targets;
  bool stopping = false;
  try {
    for (;;) {
      while (!stopping && !interrupt_requested()) {
        const std::optional<std::size_t> at =
            next_to_start(queue, running_targets, parallel, options.per_node);
        if (!at) {
          break;
        }
        const QueuedMigration q = queue[*at];
        queue.erase(queue.begin() + static_cast<std::ptrdiff_t>(*at));
        EvacuationItem& item = item_of(q.vm_uuid);
        item.outcome = "running";
        MigrationRequest req;
        req.vm_uuid = q.vm_uuid;
        req.target_uuid = q.target_uuid;
        req.max_syncs = options.max_syncs;
        req.converge_bytes = options.converge_bytes;
        req.finalize = options.finalize;
        req.force_core = options.force_core;
        req.allow_older_platform = ctx.settings.allow_older_platform;
        req.bwlimit = share;
        req.evacuation = options.restore ? std::string() : result.server.uuid;
        req.no_switch = options.manual_switch;
        ctx.log.info("evacuate: migration started", {{"vm_uuid", q.vm_uuid},
                                                     {"target", q.target_uuid},
                                                     {"running", running_vms.size() + 1},
                                                     {"queued", queue.size()},
                                                     {"bwlimit", share}});
        running_vms.push_back(q.vm_uuid);
        running_targets.push_back(q.target_uuid);
        ctx.reporter.phase_started("evacuate",
                                   fmt::format("{} ({}, {}) to {}", item.vm_uuid,
                                               item.alias.empty() ? "-" : item.alias, item.state,
                                               item.target.empty() ? q.target_uuid : item.target));
        record.update(items);
        launcher.start(req);
      }
      if (interrupt_requested() && !stopping) {
        stopping = true;
        result.interrupted = true;
        launcher.stop_all();
      }
      const std::optional<MigrationExit> done = launcher.wait_any();
      if (!done) {
        if (running_vms.empty()) {
          break;
        }
        continue; // a signal ended the wait: stop the others (above), then wait for them
      }
      const auto at = std::find(running_vms.begin(), running_vms.end(), done->vm_uuid);
      if (at != running_vms.end()) {
        running_targets.erase(running_targets.begin() + (at - running_vms.begin()));
        running_vms.erase(at);
      }
      EvacuationItem& item = item_of(done->vm_uuid);
      item.error = done->error;
      if (done->exit_status == 0) {
        const std::optional<state::Migration> m = ctx.store.find_latest_for_vm(done->vm_uuid);
        if (m) {
          summarize_record(*m, item);
        }
        item.outcome =
            options.manual_switch ? "ready" : (options.finalize ? "finalized" : "migrated");
      } else if (done->exit_status == static_cast<int>(ExitCode::interrupted)) {
        item.outcome = "interrupted";
        result.interrupted = true;
        stopping = true;
      } else if (done->exit_status == static_cast<int>(ExitCode::precondition) &&
                 !ctx.store.find_active_for_vm(done->vm_uuid)) {
        item.outcome = "skipped"; // refused before anything changed
      } else {
        item.outcome = "failed";
      }
      ctx.log.info("evacuate: migration ended", {{"vm_uuid", done->vm_uuid},
                                                 {"exit_status", done->exit_status},
                                                 {"outcome", item.outcome},
                                                 {"running", running_vms.size()}});
      if (running_vms.empty() && (stopping || queue.empty())) {
        break;
      }
      record.update(items);
    }
  } catch (...) {
    record.finish(items, true); // the migrations' own records say the rest
    throw;
  }
  record.finish(items, result.interrupted || stopping);
}

} // namespace

EvacuateResult evacuate(Context& ctx, const EvacuateOptions& options) {
  EvacuateResult result;
  result.server = ctx.inventory.resolve_server(options.server);
  std::string named_uuid; // -n: the only target
  if (!options.target.empty()) {
    const inventory::Server t = ctx.inventory.resolve_server(options.target);
    named_uuid = t.uuid;
    if (t.uuid == result.server.uuid) {
      throw PreconditionError(fmt::format("target {}", t.hostname),
                              "is the server being evacuated; choose another with -n, or none "
                              "for placement");
    }
  }
  std::vector<inventory::Vm> listed = ctx.inventory.list_vms(result.server.uuid, "active");
  // A migration off this node that switched (or was switching) when an earlier run of the
  // evacuation stopped: VMAPI lists its instance on the target now, yet it is not finished
  // (--finalize finalizes it). Every active migration from this node goes on.
  state::ListFilter from_here;
  from_here.server_uuid = result.server.uuid;
  for (const state::Migration& m : ctx.store.list_migrations(from_here)) {
    if (m.archived || m.source_server_uuid != result.server.uuid ||
        std::any_of(listed.begin(), listed.end(),
                    [&m](const inventory::Vm& v) { return v.uuid == m.vm_uuid; })) {
      continue;
    }
    if (std::optional<inventory::Vm> vm = ctx.inventory.find_vm(m.vm_uuid)) {
      listed.push_back(std::move(*vm));
    }
  }
  const std::vector<inventory::Vm> vms =
      evacuation_order(std::move(listed), options.include_stopped);

  // One plan for all of them, before any moves: the instances begin would refuse (core zones,
  // unsupported brands) take no room in it.
  PlacementOptions popts;
  popts.allow_older_platform = ctx.settings.allow_older_platform;
  popts.to = options.to;
  if (!named_uuid.empty()) {
    popts.to = {named_uuid};
  }
  popts.separate_owners = options.separate_owners;
  // --exclude names any instance on the node (a typo is refused by plan_placement); those that
  // are not placed anyway (core zones, ...) are left out here.
  std::vector<std::string> excluded;
  for (const std::string& name : options.exclude) {
    bool seen = false;
    for (const inventory::Vm& vm : vms) {
      if (name == vm.uuid || (!vm.alias.empty() && name == vm.alias)) {
        excluded.push_back(vm.uuid);
        seen = true;
      }
    }
    if (!seen) {
      popts.exclude.push_back(name); // plan_placement names it as a typo
    }
  }
  std::sort(excluded.begin(), excluded.end());
  std::vector<inventory::Vm> placeable;
  std::map<std::string, std::pair<std::string, std::string>> invalid; // uuid: what, why
  std::map<std::string, inventory::Vm> traits_of_image;               // one IMGAPI read per image
  std::map<std::string, state::Migration> continuing; // past begin: keeps its target
  for (const inventory::Vm& vm : vms) {
    if (std::binary_search(excluded.begin(), excluded.end(), vm.uuid)) {
      continue;
    }
    // An instance whose begin is done goes on to the node it was begun to (migrate resumes
    // it); its promise there is already among the active ones. A failed begin is placed anew.
    if (const std::optional<state::Migration> m = ctx.store.find_active_for_vm(vm.uuid);
        m && !is_retry(Action::begin, *m) && !m->target_server_uuid.empty()) {
      continuing[vm.uuid] = *m;
      continue;
    }
    try {
      validate_instance(vm, options.force_core);
    } catch (const PreconditionError& e) {
      invalid[vm.uuid] = {e.subject(), e.reason()};
      continue;
    }
    inventory::Vm placed = vm;
    const auto cached = traits_of_image.find(vm.image_uuid);
    if (cached != traits_of_image.end()) {
      placed.image_traits = cached->second.image_traits;
      placed.placement_problems.insert(placed.placement_problems.end(),
                                       cached->second.placement_problems.begin(),
                                       cached->second.placement_problems.end());
    } else {
      inventory::Vm probe;
      probe.image_uuid = vm.image_uuid;
      probe = with_image_traits(ctx, probe);
      traits_of_image[vm.image_uuid] = probe;
      placed.image_traits = probe.image_traits;
      placed.placement_problems.insert(placed.placement_problems.end(),
                                       probe.placement_problems.begin(),
                                       probe.placement_problems.end());
    }
    placeable.push_back(std::move(placed));
  }
  const PlacementPlan plan = plan_placement(placeable, result.server, ctx.inventory.list_servers(),
                                            active_promises(ctx), popts);
  ctx.log.info("evacuate: placement planned", {{"server", result.server.uuid},
                                               {"instances", plan.placements.size()},
                                               {"complete", plan.complete()}});

  // Each instance's item, in the order evacuation_order gave; those that move are queued.
  std::vector<EvacuationItem> items;
  std::vector<QueuedMigration> queue;
  for (const inventory::Vm& vm : vms) {
    if (interrupt_requested()) {
      result.interrupted = true;
      break;
    }
    EvacuationItem item;
    item.vm_uuid = vm.uuid;
    item.alias = vm.alias;
    item.brand = vm.brand;
    item.state = vm.state;
    if (std::binary_search(excluded.begin(), excluded.end(), vm.uuid)) {
      item.outcome = "excluded";
      item.error = "left where it is (--exclude)";
      items.push_back(std::move(item));
      continue;
    }
    const Placement* placement = plan.find(vm.uuid);
    std::string target = named_uuid;
    const auto c = continuing.find(vm.uuid);
    if (c != continuing.end()) {
      target = c->second.target_server_uuid;
      item.target =
          c->second.data.value("target", nlohmann::json::object()).value("hostname", target);
      item.reason =
          fmt::format("its migration {} goes on to the node it was begun to", c->second.id);
    } else if (placement != nullptr) {
      item.reason = placement->reason;
      item.rejected = placement->rejected;
      if (placement->placed) {
        target = placement->target_uuid;
        item.target = placement->target_hostname;
      }
    }
    try {
      if (const auto bad = invalid.find(vm.uuid); bad != invalid.end()) {
        throw PreconditionError(bad->second.first, bad->second.second);
      }
      if (placement != nullptr && !placement->placed) {
        std::string why = "no compute node can take it";
        for (const RejectedNode& r : placement->rejected) {
          why += fmt::format("; {} ({}): {}", r.hostname, r.uuid, describe(r.problems));
        }
        throw PreconditionError(fmt::format("placement of {}", vm.uuid),
                                why + ". Free capacity, widen --to, or --exclude it");
      }
      if (!options.dry_run) {
        item.outcome = "queued";
        queue.push_back({vm.uuid, target});
      } else if (c != continuing.end()) {
        item.outcome = "planned"; // migrate would resume it; nothing to begin
      } else {
        ctx.reporter.phase_started(
            "evacuate",
            fmt::format("{} ({}, {})", vm.uuid, vm.alias.empty() ? "-" : vm.alias, vm.state));
        BeginOptions b{vm.uuid, target, true, options.force_core, true};
        const BeginResult r = begin(ctx, b);
        item.target = r.target.hostname;
        item.outcome = "planned";
      }
    } catch (const Error& e) {
      item.error = e.what();
      if (e.exit_code() == ExitCode::interrupted) {
        item.outcome = "interrupted";
        result.interrupted = true;
      } else if (dynamic_cast<const PreconditionError*>(&e) != nullptr) {
        // Refused before anything changed (core zone, no capacity, ...).
        item.outcome = options.dry_run ? "refused" : "skipped";
      } else {
        item.outcome = "failed";
      }
    } catch (const std::exception& e) {
      item.outcome = "failed";
      item.error = e.what();
    }
    items.push_back(std::move(item));
    if (result.interrupted) {
      break;
    }
  }
  // Also with nothing left to start: the evacuation's record then says it ended (a rerun after
  // a crash that came once every migration had ended finds only that to do).
  if (!result.interrupted && !options.dry_run) {
    run_queue(ctx, options, queue, items, result);
  }
  for (EvacuationItem& item : items) {
    if (item.outcome == "queued") {
      continue; // never started: the message says to run the command again
    }
    ctx.log.info("evacuate: instance done",
                 {{"vm_uuid", item.vm_uuid}, {"outcome", item.outcome}, {"error", item.error}});
    result.items.push_back(std::move(item));
  }
  return result;
}

namespace {

// The migrations `filter` lists (none archived) whose record accepts `action` and that `keep`
// keeps, oldest first.
std::vector<state::Migration> accepting(Context& ctx, const state::ListFilter& filter,
                                        Action action,
                                        const std::function<bool(const state::Migration&)>& keep) {
  std::vector<state::Migration> out;
  for (state::Migration& m : ctx.store.list_migrations(filter)) {
    const std::vector<Action> allowed = allowed_actions(m);
    if (!m.archived && std::find(allowed.begin(), allowed.end(), action) != allowed.end() &&
        keep(m)) {
      out.push_back(std::move(m));
    }
  }
  std::sort(out.begin(), out.end(), [](const state::Migration& a, const state::Migration& b) {
    return a.created != b.created ? a.created < b.created : a.id < b.id;
  });
  return out;
}

// One command of a bulk run (sync --all, switch --ready): runs `body`, which sets the outcome
// when it succeeds; otherwise the outcome says how it ended: "interrupted", "skipped" (refused
// before anything changed, or the record changed since it was listed) or "failed", and `error`
// says why. Returns true when the run must stop (interrupted).
bool run_one(const std::function<void()>& body, std::string& outcome, std::string& error) {
  try {
    body();
  } catch (const Error& e) {
    error = e.what();
    if (e.exit_code() == ExitCode::interrupted) {
      outcome = "interrupted";
      return true;
    }
    const bool refused = dynamic_cast<const PreconditionError*>(&e) != nullptr ||
                         dynamic_cast<const NotFoundError*>(&e) != nullptr;
    outcome = refused ? "skipped" : "failed";
  } catch (const std::exception& e) {
    outcome = "failed";
    error = e.what();
  }
  return false;
}

} // namespace

SyncAllResult sync_all(Context& ctx) {
  SyncAllResult result;
  for (const state::Migration& m : accepting(ctx, state::ListFilter{}, Action::sync,
                                             [](const state::Migration&) { return true; })) {
    if (interrupt_requested()) {
      result.interrupted = true;
      break;
    }
    SyncAllItem item;
    item.vm_uuid = m.vm_uuid;
    item.alias = m.data.value("alias", std::string());
    item.migration_id = m.id;
    ctx.reporter.phase_started(
        "sync", fmt::format("{} ({})", m.vm_uuid, item.alias.empty() ? "-" : item.alias));
    result.interrupted = run_one(
        [&] {
          const SyncResult r = sync(ctx, m.vm_uuid);
          item.outcome = "synced";
          item.bytes = r.bytes;
          item.duration = r.duration;
        },
        item.outcome, item.error);
    ctx.log.info("sync --all: migration done",
                 {{"vm_uuid", item.vm_uuid}, {"outcome", item.outcome}, {"error", item.error}});
    result.items.push_back(std::move(item));
    if (result.interrupted) {
      break;
    }
  }
  return result;
}

EvacuateResult switch_ready(Context& ctx, const std::string& server) {
  EvacuateResult result;
  result.server = ctx.inventory.resolve_server(server);
  state::ListFilter filter;
  filter.server_uuid = result.server.uuid;
  const std::string source = result.server.uuid;
  for (const state::Migration& m :
       accepting(ctx, filter, Action::switch_, [&source](const state::Migration& x) {
         // A failed switch is for its own command (switch VM or rollback), not for a batch.
         return x.source_server_uuid == source && x.phase != state::Phase::switch_;
       })) {
    if (interrupt_requested()) {
      result.interrupted = true;
      break;
    }
    EvacuationItem item;
    item.vm_uuid = m.vm_uuid;
    item.alias = m.data.value("alias", std::string());
    item.brand = m.data.value("brand", std::string());
    item.state = m.data.value("state_at_begin", std::string());
    item.target = m.data.value("target", nlohmann::json::object()).value("hostname", "");
    ctx.reporter.phase_started("switch",
                               fmt::format("{} ({}) to {}", m.vm_uuid,
                                           item.alias.empty() ? "-" : item.alias, item.target));
    result.interrupted = run_one(
        [&] {
          const SwitchResult r = switch_over(ctx, m.vm_uuid);
          item.outcome = "switched";
          item.downtime = r.downtime;
          item.bytes = r.final_bytes;
        },
        item.outcome, item.error);
    ctx.log.info("switch --ready: migration done",
                 {{"vm_uuid", item.vm_uuid}, {"outcome", item.outcome}, {"error", item.error}});
    result.items.push_back(std::move(item));
    if (result.interrupted) {
      break;
    }
  }
  return result;
}

EvacuateResult restore(Context& ctx, const RestoreOptions& options) {
  EvacuateResult result;
  result.server = ctx.inventory.resolve_server(options.server);
  state::ListFilter filter;
  filter.include_archived = true;
  filter.server_uuid = result.server.uuid;
  std::map<std::string, state::Migration> newest; // per instance, of those naming the server
  for (state::Migration& m : ctx.store.list_migrations(filter)) {
    auto at = newest.find(m.vm_uuid);
    if (at == newest.end() || at->second.created < m.created) {
      newest[m.vm_uuid] = std::move(m);
    }
  }
  std::vector<EvacuationItem> items;
  std::vector<QueuedMigration> queue;
  for (auto& [vm_uuid, candidate] : newest) {
    // The instance's newest migration of all, not only of those naming this server.
    const std::optional<state::Migration> m = ctx.store.find_latest_for_vm(vm_uuid);
    if (!m || m->id != candidate.id || m->source_server_uuid != result.server.uuid) {
      continue;
    }
    const nlohmann::json ev = m->data.value("evacuation", nlohmann::json::object());
    if (!ev.is_object() || ev.value("server", std::string()) != result.server.uuid) {
      continue; // moved away by hand, not by an evacuation of this node
    }
    const std::optional<inventory::Vm> vm = ctx.inventory.find_vm(vm_uuid);
    if (!vm || vm->server_uuid != m->target_server_uuid || vm->state == "destroyed" ||
        vm->state == "failed") {
      continue; // gone, or moved on since
    }
    EvacuationItem item;
    item.vm_uuid = vm_uuid;
    item.alias = vm->alias;
    item.brand = vm->brand;
    item.state = vm->state;
    item.target = result.server.hostname;
    item.reason = fmt::format("evacuated by migration {}", m->id);
    const bool finalized =
        m->phase == state::Phase::finalize && m->state == state::State::successful;
    if (!finalized) {
      item.outcome = options.dry_run ? "refused" : "skipped";
      item.error = fmt::format("migration {} is not finalized: its source copy is still on {}; "
                               "\"zmigrate rollback {}\" brings it back",
                               m->id, result.server.hostname, vm_uuid);
    } else if (options.dry_run) {
      // Checked as a named target, as the migration back will be.
      try {
        begin(ctx, {vm_uuid, result.server.uuid, true, false, true});
        item.outcome = "planned";
      } catch (const PreconditionError& e) {
        item.outcome = "refused";
        item.error = e.what();
      }
    } else {
      item.outcome = "queued";
      queue.push_back({vm_uuid, result.server.uuid});
    }
    items.push_back(std::move(item));
  }
  if (!options.dry_run) {
    EvacuateOptions eo;
    eo.server = result.server.uuid;
    eo.finalize = options.finalize;
    eo.max_syncs = options.max_syncs;
    eo.converge_bytes = options.converge_bytes;
    eo.parallel = options.parallel;
    eo.bwlimit = options.bwlimit;
    eo.launcher = options.launcher;
    eo.restore = true;
    run_queue(ctx, eo, queue, items, result);
  }
  for (EvacuationItem& item : items) {
    if (item.outcome != "queued") {
      result.items.push_back(std::move(item));
    }
  }
  return result;
}

} // namespace zmigrate::migration
