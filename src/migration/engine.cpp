// SPDX-License-Identifier: MPL-2.0
// begin, sync and migrate. Switch is in engine_switch.cpp; rollback, abort and finalize in
// engine_undo.cpp.
#include "engine_common.hpp"

#include <zmigrate/migration/data_path.hpp>
#include <zmigrate/migration/engine.hpp>
#include <zmigrate/migration/estimate.hpp>
#include <zmigrate/migration/measure.hpp>
#include <zmigrate/migration/placement.hpp>
#include <zmigrate/migration/plan.hpp>
#include <zmigrate/migration/steps.hpp>
#include <zmigrate/migration/transitions.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>
#include <zmigrate/util/units.hpp>
#include <zmigrate/util/uuid.hpp>
#include <zmigrate/zfs/names.hpp>

#include <algorithm>
#include <optional>

#include <fmt/format.h>

namespace zmigrate::migration {

using detail::Ends;

state::Migration load_active(Context& ctx, const std::string& vm_uuid) {
  std::optional<state::Migration> m = ctx.store.find_active_for_vm(vm_uuid);
  if (!m) {
    throw NotFoundError(fmt::format("migration of {}", vm_uuid),
                        fmt::format("no active migration; start one with \"zmigrate begin {0}\" "
                                    "or \"zmigrate migrate {0}\"",
                                    vm_uuid));
  }
  return *m;
}

inventory::Vm with_image_traits(Context& ctx, inventory::Vm vm) {
  if (!vm.image_uuid.empty()) {
    std::optional<inventory::Image> image;
    try {
      image = ctx.inventory.find_image(vm.image_uuid);
    } catch (const Error& e) {
      if (e.exit_code() == ExitCode::interrupted) {
        throw;
      }
      // IMGAPI is needed only when an image is to be imported; an instance whose image traits
      // cannot be read is placed on its own and its package's traits, as before they counted.
      ctx.log.warn("placement: image traits unknown",
                   {{"image_uuid", vm.image_uuid}, {"error", e.what()}});
    }
    if (image) {
      const auto it = image->raw.find("traits");
      if (it != image->raw.end() && it->is_object()) {
        vm.image_traits = *it;
      } else if (it != image->raw.end() && !it->is_null()) {
        vm.placement_problems.push_back(
            fmt::format("IMGAPI image {}: field \"traits\" is {}, expected an object", image->uuid,
                        it->type_name()));
      }
    }
  }
  return vm;
}

PromiseLedger active_promises(Context& ctx, const std::string& except_vm) {
  PromiseLedger out;
  for (const state::Migration& m : ctx.store.list_migrations(state::ListFilter{})) {
    if (m.archived || m.vm_uuid == except_vm || m.target_server_uuid.empty()) {
      continue;
    }
    const bool on_source =
        m.phase == state::Phase::begin || m.phase == state::Phase::sync ||
        (m.phase == state::Phase::switch_ && m.state != state::State::successful);
    if (!on_source) {
      continue;
    }
    try {
      out.add(promise_for(detail::recorded_vm(m), m.target_server_uuid));
    } catch (const Error&) {
      // A record whose instance cannot be read promises nothing we could size.
      Promise p;
      p.node = m.target_server_uuid;
      p.vm = m.vm_uuid;
      out.add(p);
    }
  }
  return out;
}

namespace {

nlohmann::json server_json(const inventory::Server& s) {
  return {{"uuid", s.uuid}, {"hostname", s.hostname}, {"admin_ip", s.admin_ip}};
}

inventory::Vm require_vm(Context& ctx, const std::string& vm_uuid) {
  std::optional<inventory::Vm> vm = ctx.inventory.find_vm(vm_uuid);
  if (!vm || vm->state == "destroyed") {
    throw NotFoundError(
        fmt::format("instance {}", vm_uuid),
        "VMAPI has no such instance; check the UUID with \"sdc-vmapi /vms?alias=...\"");
  }
  return *vm;
}

PlacementOptions placement_options(Context& ctx) {
  PlacementOptions o;
  o.allow_older_platform = ctx.settings.allow_older_platform;
  return o;
}

// The target the operator named (checked, with what active migrations promised there), or the
// best one placement finds (`placement` says why, and which nodes it rejected).
inventory::Server choose_target_of(Context& ctx, const inventory::Vm& vm,
                                   const inventory::Server& source, const std::string& named,
                                   Placement* placement) {
  const PromiseLedger promises = active_promises(ctx, vm.uuid);
  if (named.empty()) {
    return choose_placement(vm, source, ctx.inventory.list_servers(), promises,
                            placement_options(ctx), placement);
  }
  inventory::Server target = ctx.inventory.resolve_server(named);
  check_named_target(vm, source, target, promises, placement_options(ctx));
  return target;
}

// Look at both nodes: the instance must be where VMAPI says, and absent from the target. The
// datasets come from the node, never from the inventory alone: a corrupt VMAPI record naming
// another instance's disk must not get it copied, let alone destroyed by finalize.
std::vector<std::string> check_nodes(const inventory::Vm& vm, Node& source, Node& target,
                                     const inventory::Server& target_server) {
  const std::optional<nlohmann::json> on_source = source.vm_get(vm.uuid);
  if (!on_source) {
    throw PreconditionError(fmt::format("instance {}", vm.uuid),
                            fmt::format("VMAPI says it is on {} but vmadm there does not know it; "
                                        "let vm-agent catch up and retry",
                                        source.server().hostname));
  }
  // The zone config the switch copies carries vmadm's zonepath; the mount checks use VMAPI's.
  if (const std::string zp = on_source->value("zonepath", ""); !zp.empty() && zp != vm.zonepath) {
    throw PreconditionError(fmt::format("instance {}", vm.uuid),
                            fmt::format("vmadm on {} says its zonepath is '{}', VMAPI says '{}'; "
                                        "let vm-agent catch up and retry, or check the instance",
                                        source.server().hostname, zp, vm.zonepath));
  }
  std::vector<std::string> listed = inventory::instance_datasets(vm);
  listed.insert(listed.end(), vm.datasets.begin(), vm.datasets.end()); // children too
  const std::vector<std::string> roots = instance_roots(vm.uuid, *on_source, listed);
  if (target.vm_get(vm.uuid)) {
    throw PreconditionError(
        fmt::format("target {}", target_server.hostname),
        fmt::format("already has an instance {}; remove it there first", vm.uuid));
  }
  for (const std::string& ds : roots) {
    if (target.dataset_exists(ds)) {
      throw PreconditionError(fmt::format("target {}: {}", target_server.hostname, ds),
                              "dataset already exists; zmigrate never overwrites data it did not "
                              "create: remove it on the target or choose another node");
    }
  }
  return roots;
}

// The target of a begin: the one the operator names; on a retry without one, the node the first
// attempt chose while it still fits (images it imported there are not imported twice).
std::string retry_target(Context& ctx, const inventory::Vm& vm, const inventory::Server& source,
                         const std::optional<state::Migration>& earlier, const std::string& named) {
  if (!named.empty() || !earlier || earlier->target_server_uuid.empty()) {
    return named;
  }
  try {
    const inventory::Server t = ctx.inventory.resolve_server(earlier->target_server_uuid);
    if (placement_problems(vm, source, t, active_promises(ctx, vm.uuid), placement_options(ctx))
            .empty()) {
      return t.uuid;
    }
  } catch (const NotFoundError&) {
    // That node is gone from CNAPI: place anew.
  }
  return {};
}

// The live ledger row of a quota that begin removed from `dataset`, if any.
std::optional<state::Artefact> removed_quota(Context& ctx, const std::string& migration_id,
                                             const std::string& dataset) {
  for (const state::Artefact& a : ctx.store.live_artefacts(migration_id)) {
    if (a.kind == "quota_removed" && a.name == dataset) {
      return a;
    }
  }
  return std::nullopt;
}

struct ImageNeeds {
  std::vector<std::string> imports;                 // images the target lacks
  nlohmann::json origins = nlohmann::json::array(); // every clone origin
  std::string mark; // k_mark_property on the zone root ("" when unset), read in the same call
};

// Every dataset that is a clone of an image (zone roots, KVM disk0) needs that image on the
// target, so the first sync can send only what differs from it, as Triton's ensure-image does.
ImageNeeds image_needs(Node& source, Node& target, const std::vector<std::string>& roots,
                       const std::string& zone_root) {
  ImageNeeds out;
  const DatasetTree src_tree = source.tree(roots, {"origin", k_mark_property});
  out.mark = src_tree.prop(zone_root, k_mark_property);
  for (const std::string& ds : src_tree.datasets) {
    const std::string origin = src_tree.prop(ds, "origin");
    if (origin.empty()) {
      continue;
    }
    out.origins.push_back(origin);
    const std::string origin_ds = origin.substr(0, origin.find('@'));
    const std::string image = origin_ds.substr(origin_ds.find('/') + 1);
    // Only an image (<pool>/<image-uuid>) is imported; a clone of anything else is sent in full.
    if (is_uuid(image) &&
        std::find(out.imports.begin(), out.imports.end(), image) == out.imports.end() &&
        !target.dataset_exists(origin_ds)) {
      out.imports.push_back(image);
    }
  }
  return out;
}

} // namespace

nlohmann::json preflight(Context& ctx, const inventory::Vm& vm, const inventory::Server& target,
                         Node& source, const inventory::Server& source_server, bool named,
                         const Placement* placement) {
  nlohmann::json j;
  j["owner_uuid"] = vm.owner_uuid;
  j["state"] = vm.state;
  nlohmann::json ips = nlohmann::json::array();
  for (const inventory::Nic& n : vm.nics) {
    ips.push_back({{"ip", n.ip},
                   {"interface", n.interface},
                   {"nic_tag", n.nic_tag},
                   {"network_uuid", n.network_uuid},
                   {"mac", n.mac},
                   {"primary", n.primary}});
  }
  j["ips"] = ips;
  j["target_reason"] =
      named || placement == nullptr
          ? fmt::format("named with -n, or the target of the begin being retried ({} checked: "
                        "setup, running, not reserved, NIC tags, traits, CPU, room after "
                        "promises, HVM, platform)",
                        target.hostname)
          : placement->reason;
  if (placement != nullptr && !named) {
    j["placement"] = *placement;
  }
  // What this head node measured before: the rate of its earlier syncs of at least 1 MiB and
  // the downtime of its earlier switches of running instances.
  std::vector<double> rates;
  std::vector<double> downtimes;
  state::ListFilter recent;
  recent.include_archived = true;
  recent.limit = k_history_window;
  for (const state::Migration& m : ctx.store.list_migrations(recent)) {
    for (const nlohmann::json& s : m.data.value("syncs", nlohmann::json::array())) {
      if (s.value("bytes", std::uint64_t{0}) >= (1ULL << 20) && s.value("rate", 0.0) > 0) {
        rates.push_back(s.value("rate", 0.0));
      }
    }
    const nlohmann::json sw = m.data.value("switch", nlohmann::json::object());
    if (sw.value("was_running", false) && sw.value("downtime_ms", 0) > 0) {
      downtimes.push_back(sw.value("downtime_ms", 0));
    }
  }
  // The link between these two nodes measured by `estimate --measure` goes first: it is this
  // very path; then what earlier syncs achieved; then the configured guess.
  const std::optional<LinkMeasurement> link =
      latest_measurement(ctx, source_server.uuid, target.uuid);
  double rate = ctx.settings.rate_bytes_per_s;
  std::string basis = "the configured rate (rate_mb_s)";
  if (link) {
    rate = link->rate_bytes_per_s;
    basis = fmt::format("the link from {} to {} measured by estimate --measure at {}",
                        source_server.hostname, target.hostname, link->measured);
  } else if (!rates.empty()) {
    rate = median(rates);
    basis = fmt::format("the median of {} earlier syncs on this head node", rates.size());
  }
  j["rate_bytes_per_s"] = rate;
  j["rate_basis"] = basis;
  const InstanceEstimate e = estimate_vm(source, vm, source_server, rate);
  nlohmann::json sizes = nlohmann::json::array();
  for (const DatasetEstimate& d : e.datasets) {
    sizes.push_back(d);
  }
  j["sizes"] = sizes;
  j["bytes"] = e.bytes;
  j["bytes_exact"] = e.exact;
  j["estimated_sync_s"] = e.seconds;
  if (vm.state != "running") {
    j["expected_downtime_ms"] = 0;
    j["downtime_basis"] = "the instance is not running";
  } else if (downtimes.empty()) {
    j["expected_downtime_ms"] = nullptr;
    j["downtime_basis"] = "no earlier switch on this head node to go by; the switch measures it";
  } else {
    j["expected_downtime_ms"] = static_cast<std::int64_t>(median(downtimes));
    j["downtime_basis"] =
        fmt::format("the median of {} earlier switches on this head node", downtimes.size());
  }
  return j;
}

BeginResult begin(Context& ctx, const BeginOptions& options) {
  BeginResult result;
  result.dry_run = options.dry_run;

  // Validate before anything changes: instance, migration state, servers.
  const inventory::Vm vm = require_vm(ctx, options.vm_uuid);
  validate_instance(vm, options.force_core);
  // None, or a begin that failed or was interrupted: this one retries it on the same record.
  const std::optional<state::Migration> earlier = ctx.store.find_active_for_vm(vm.uuid);
  check_action(Action::begin, earlier);
  detail::refuse_triton_migration(ctx, vm.uuid);
  result.source = ctx.inventory.resolve_server(vm.server_uuid);
  Placement placement;
  {
    const inventory::Vm placed = with_image_traits(ctx, vm);
    result.target = choose_target_of(
        ctx, placed, result.source,
        retry_target(ctx, placed, result.source, earlier, options.target), &placement);
  }
  Node& source = ctx.nodes.node(ctx, result.source);
  Node& target = ctx.nodes.node(ctx, result.target);
  const std::vector<std::string> roots = check_nodes(vm, source, target, result.target);
  const ImageNeeds images = image_needs(source, target, roots, vm.zfs_filesystem);
  // Another zmigrate's migration of this instance (its mark on the zone root): refuse before
  // anything changes. One of ours (a retried begin, or a stale mark of an ended one) goes on.
  if (const std::string why =
          mark_problem(vm.zfs_filesystem, source.host(), images.mark,
                       images.mark.empty() || ctx.store.find_migration(images.mark).has_value());
      !why.empty()) {
    throw PreconditionError(fmt::format("instance {}", vm.uuid), why);
  }
  const std::vector<std::string>& imports = images.imports;
  // imgadm on the target fetches each from IMGAPI: one that IMGAPI lacks fails here, before
  // anything changes, not half-way through the begin.
  for (const std::string& image : imports) {
    const std::optional<inventory::Image> found = ctx.inventory.find_image(image);
    if (!found || (found->state != "active" && found->state != "disabled")) {
      throw PreconditionError(
          fmt::format("image {}", image),
          fmt::format("the instance's datasets are clones of it and {} lacks it, but IMGAPI {}; "
                      "import it there by hand (imgadm import) or make it available in IMGAPI",
                      result.target.hostname,
                      found ? "has it in state " + found->state : "does not have it"));
    }
  }
  const nlohmann::json& origins = images.origins;
  std::map<std::string, std::string> quota;
  if (vm.brand == "bhyve") {
    quota = source.properties(vm.zfs_filesystem, {"quota", "reservation"});
  }
  // A failed begin whose quota could not be put back: the ledger knows the original.
  const std::optional<state::Artefact> removed =
      earlier ? removed_quota(ctx, earlier->id, vm.zfs_filesystem) : std::nullopt;
  if (removed) {
    quota["quota"] = removed->details.value("quota", "none");
  }
  const bool must_remove_quota = vm.brand == "bhyve" && quota["quota"] != "0" &&
                                 !quota["quota"].empty() && quota["quota"] == quota["reservation"];

  state::Migration& m = result.migration;
  m.id = earlier ? earlier->id : uuid_v4();
  m.vm_uuid = vm.uuid;
  m.source_server_uuid = result.source.uuid;
  m.target_server_uuid = result.target.uuid;
  m.phase = state::Phase::begin;
  m.state = state::State::running;
  m.automatic = options.automatic;
  m.created = iso8601(ctx.clock.wall_now());
  m.data = {{"vm", vm.raw},
            {"alias", vm.alias},
            {"brand", vm.brand},
            {"source", server_json(result.source)},
            {"target", server_json(result.target)},
            {"autoboot", vm.autoboot},
            {"state_at_begin", vm.state},
            {"snap_n", 0},
            {"datasets", roots},
            {"image", {{"origins", origins}, {"imported", imports}}},
            {"quota",
             {{"must_remove", must_remove_quota},
              {"quota", quota["quota"]},
              {"reservation", quota["reservation"]}}}};
  if (!options.evacuation.empty()) {
    m.data["evacuation"] = {{"server", options.evacuation}};
  }
  result.plan = {{"vm", vm.uuid},
                 {"alias", vm.alias},
                 {"brand", vm.brand},
                 {"source", server_json(result.source)},
                 {"target", server_json(result.target)},
                 {"datasets", roots},
                 {"import_images", imports},
                 {"remove_quota_for_sync", must_remove_quota}};
  if (options.dry_run && options.summary) {
    // Named with -n, or the retried begin's node: placement did not run.
    const bool named = !placement.placed;
    result.plan.update(preflight(ctx, vm, result.target, source, result.source, named,
                                 placement.placed ? &placement : nullptr));
  }
  if (options.dry_run) {
    return result;
  }

  std::optional<Operation> held;
  if (earlier) {
    // Lease first, then the record read under it (another command may have changed it); the
    // retry keeps the record's identity and history, and takes this attempt's plan.
    held.emplace(ctx, vm.uuid, Action::begin, "begin");
    const state::Migration& fresh = held->record();
    m.created = fresh.created;
    m.history = fresh.history;
    m.version = fresh.version;
    held->record() = m;
  } else {
    ctx.store.insert_migration(m);
    held.emplace(ctx, m, "begin");
  }
  Operation& op = *held;
  op.start_phase(state::Phase::begin, "reserving instance");
  // Each image import is kept on failure (an image is the node's, shared by its instances); the
  // removed quota is put back, so a failed begin leaves the source as it was.
  PhaseSpec spec{"begin", {}, ""};
  // First, so another zmigrate sees the instance taken before anything else changes. Kept on a
  // failed begin (the record stays active); abort, rollback and finalize remove it.
  spec.steps.push_back({"mark_source", "", [&](nlohmann::json& d) {
                          detail::mark_source(ctx, m, source, vm.zfs_filesystem);
                          d["mark"] = m.id;
                        }});
  for (const std::string& image : imports) {
    spec.steps.push_back({"import_image." + image,
                          fmt::format("importing image {} on {}", image, result.target.hostname),
                          [&target, image](nlohmann::json& d) {
                            target.image_import(image);
                            d["image"] = image;
                          }});
  }
  // bhyve: quota == reservation leaves no room for snapshots during sync (TRITON-1407).
  spec.steps.push_back({"remove_quota", "",
                        [&](nlohmann::json& d) {
                          d["quota"] = quota["quota"];
                          // An earlier attempt's row (its removal may not have happened, or
                          // not been put back) already holds the original: no second row.
                          if (!removed_quota(ctx, m.id, vm.zfs_filesystem)) {
                            state::Artefact a;
                            a.migration_id = m.id;
                            a.kind = "quota_removed";
                            a.host = "source";
                            a.name = vm.zfs_filesystem;
                            a.details = {{"quota", quota["quota"]}};
                            a.created = iso8601(ctx.clock.wall_now());
                            ctx.store.record_artefact(a);
                          }
                          source.set_property(vm.zfs_filesystem, "quota", "none");
                        },
                        [&] {
                          for (const state::Artefact& a : ctx.store.live_artefacts(m.id)) {
                            if (a.kind == "quota_removed") {
                              source.set_property(a.name, "quota",
                                                  a.details.value("quota", "none"));
                              ctx.store.mark_artefact_removed(a.id);
                            }
                          }
                        },
                        Window::outside, &must_remove_quota});
  try {
    run_steps(ctx, op, spec);
    op.finish_phase(state::State::paused);
  } catch (const std::exception& e) {
    if (const std::optional<state::StopRequest> r = op.stopped_by()) {
      const Error stopped = op.stop_error(*r); // begin/failed: begin again, or abort
      op.finish_phase(state::State::failed, stopped.what());
      throw stopped;
    }
    op.finish_phase(state::State::failed, e.what());
    throw;
  }
  result.migration = op.record();
  return result;
}

SyncResult sync(Context& ctx, const std::string& vm_uuid, const SyncOptions& options) {
  Operation op(ctx, vm_uuid, Action::sync, options.operation); // lease, re-read, check
  op.start_phase(state::Phase::sync, "syncing data");
  SyncResult result;
  try {
    Ends ends = detail::open_ends(ctx, op.record());
    const inventory::Vm vm = detail::recorded_vm(op.record());
    if (options.stop_first) {
      op.step(
          "stop_source",
          [&](nlohmann::json& d) {
            state::Migration& m = op.record();
            const auto src = ends.source->vm_get(vm.uuid);
            if (!src) {
              throw Error(ExitCode::failure,
                          fmt::format("{}: instance {}", ends.source->host(), vm.uuid),
                          "is gone from the source node; check \"vmadm list\" there");
            }
            const bool runs = src->value("state", "") == "running";
            if (!m.data.contains("switch")) {
              m.data["switch"] = nlohmann::json::object();
            }
            // A rerun after a crash finds it stopped by us: what it was before counts.
            if (!m.data["switch"].contains("was_running")) {
              m.data["switch"]["was_running"] = runs;
            }
            if (!m.data.contains("offline")) {
              m.data["offline"] = {{"stopped_at", iso8601(ctx.clock.wall_now())}};
            }
            op.save(); // before the stop: an abort after a crash here starts it again
            if (src->value("state", "") != "stopped") {
              ends.source->vm_stop(vm.uuid);
            }
            d["was_running"] = m.data["switch"]["was_running"];
          },
          "stopping the instance (offline: it stays stopped until it starts on the target)");
    }
    if (ctx.nodes.kept_link == nullptr) {
      // A path the previous command parked stays for this sync's own to adopt.
      ctx.nodes.remove_leftover_links(ctx, op.id(), *ends.source, *ends.target,
                                      Leftovers::unparked);
    }
    ctx.reporter.step("syncing data");
    detail::SyncOptions so;
    so.park_path = true; // the next sync or the switch adopts it
    result = detail::sync_datasets(ctx, op, ends, "sync", so);
    op.record().num_sync_phases += 1;
    nlohmann::json syncs = op.record().data.value("syncs", nlohmann::json::array());
    syncs.push_back({{"n", op.record().num_sync_phases},
                     {"snapshot", result.snapshot},
                     {"bytes", result.bytes},
                     {"duration_ms", result.duration.count()},
                     {"rate", result.rate_bytes_per_s},
                     {"ended", iso8601(ctx.clock.wall_now())}});
    op.record().data["syncs"] = syncs;
    op.record().data["last_sync_end"] = iso8601(ctx.clock.wall_now());
    op.finish_phase(state::State::paused, {},
                    {{"bytes", result.bytes},
                     {"duration_ms", result.duration.count()},
                     {"rate", result.rate_bytes_per_s},
                     {"snapshot", result.snapshot}});
  } catch (const std::exception& e) {
    if (const std::optional<state::StopRequest> r = op.stopped_by()) {
      // Stopped on request: a pause (or a switch taking over a sync --every loop) leaves
      // sync/paused (the next sync or the switch goes on), an abort sync/failed (the abort that
      // asked goes on).
      const Error stopped = op.stop_error(*r);
      op.finish_phase(r->kind == "abort" ? state::State::failed : state::State::paused,
                      stopped.what());
      throw stopped;
    }
    op.finish_phase(state::State::failed, e.what());
    const Error* err = dynamic_cast<const Error*>(&e);
    if (options.stop_first && err != nullptr &&
        detail::json_bool(op.record().data.value("switch", nlohmann::json::object()),
                          "was_running")) {
      // migrate --offline stopped it: say so, and how to go on, rather than leave it unsaid.
      throw Error(err->exit_code(), err->subject(),
                  fmt::format("{}. The instance is stopped for the offline migration: rerun "
                              "\"zmigrate migrate --offline {}\" to go on, or \"zmigrate abort "
                              "{}\" to start it again on the source",
                              err->reason(), vm_uuid, vm_uuid));
    }
    throw;
  }
  result.migration = op.record();
  result.sync_number = result.migration.num_sync_phases;
  return result;
}

namespace {

// migrate --offline: from the stop before the copy to the start on the target, as recorded.
std::chrono::milliseconds offline_downtime(const state::Migration& m) {
  const nlohmann::json sw = m.data.value("switch", nlohmann::json::object());
  const std::string stopped =
      m.data.value("offline", nlohmann::json::object()).value("stopped_at", "");
  const std::string started = sw.value("target_started_at", "");
  if (!detail::json_bool(sw, "was_running") || stopped.empty() || started.empty()) {
    return std::chrono::milliseconds(0);
  }
  try {
    return std::max(std::chrono::milliseconds(0),
                    std::chrono::duration_cast<std::chrono::milliseconds>(parse_iso8601(started) -
                                                                          parse_iso8601(stopped)));
  } catch (const Error&) {
    return std::chrono::milliseconds(0);
  }
}

} // namespace

namespace {

// Why a sync --every loop of `vm_uuid` ends, if it must: "switch" when a switch from another
// command took over (it holds the lease, asked the loop to stop, or has run; `by` when known),
// "ended" when the migration is no longer active (an abort from another shell ended it).
struct LoopEnd {
  std::string why;
  std::optional<state::Lease> by;
};
std::optional<LoopEnd> loop_end(Context& ctx, const std::string& vm_uuid) {
  const std::optional<state::Migration> m = ctx.store.find_active_for_vm(vm_uuid);
  if (!m) {
    return LoopEnd{"ended", std::nullopt};
  }
  if (std::optional<state::Lease> h = ctx.store.find_lease(m->id); h && h->operation == "switch") {
    return LoopEnd{"switch", h};
  }
  if (const auto r = ctx.store.find_stop_request(m->id); r && r->kind == "switch") {
    bool newer = true;
    if (ctx.settings.command_started != std::chrono::system_clock::time_point{}) {
      try {
        newer = parse_iso8601(r->requested) >= ctx.settings.command_started;
      } catch (const Error&) {
        newer = true;
      }
    }
    if (newer) {
      state::Lease by;
      by.pid = r->pid;
      by.host = r->host;
      by.operation = "switch";
      return LoopEnd{"switch", by};
    }
  }
  if (m->phase != state::Phase::begin && m->phase != state::Phase::sync) {
    return LoopEnd{"switch", std::nullopt}; // switched meanwhile by another command
  }
  return std::nullopt;
}

} // namespace

SyncLoopResult sync_loop(Context& ctx, const std::string& vm_uuid,
                         std::chrono::milliseconds interval,
                         const std::function<void(const SyncResult&)>& on_sync) {
  SyncLoopResult out;
  SyncOptions so;
  so.operation = "sync-every";
  while (true) {
    try {
      SyncResult s = sync(ctx, vm_uuid, so);
      if (on_sync) {
        on_sync(s);
      }
      out.syncs.push_back(std::move(s));
    } catch (const Error&) {
      if (std::optional<LoopEnd> end = loop_end(ctx, vm_uuid)) {
        out.ended = end->why;
        out.switch_by = end->by;
        return out;
      }
      throw;
    }
    const auto until = ctx.clock.now() + interval;
    while (ctx.clock.now() < until) {
      if (interrupt_requested()) {
        out.ended = "interrupted";
        return out;
      }
      if (std::optional<LoopEnd> end = loop_end(ctx, vm_uuid)) {
        out.ended = end->why;
        out.switch_by = end->by;
        return out;
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(until - ctx.clock.now());
      ctx.clock.sleep_for(std::min(left, std::chrono::milliseconds(200)));
    }
  }
}

MigrateResult migrate(Context& ctx, const MigrateOptions& options) {
  if (options.no_switch && (options.finalize || options.offline || options.max_downtime)) {
    throw UsageError("migrate --no-switch", "stops ready to switch: it goes with neither "
                                            "--finalize, --offline nor --max-downtime");
  }
  MigrateResult result;
  // Resume a migration of this instance that an earlier `migrate` left half-way.
  std::optional<state::Migration> active = ctx.store.find_active_for_vm(options.begin.vm_uuid);
  if (!active || is_retry(Action::begin, *active)) { // none yet, or a begin to retry
    BeginOptions b = options.begin;
    b.automatic = true;
    ctx.reporter.phase_started("begin", "");
    result.begin = begin(ctx, b);
    active = result.begin.migration;
  } else {
    result.begin.migration = *active;
  }
  // One data path (key, pin, ssh master) for every sync and the switch of this command; its
  // destructor removes it on every way out. Without it each phase opens its own.
  std::unique_ptr<Link> kept;
  struct KeptReset {
    NodeAccess& nodes;
    ~KeptReset() { nodes.kept_link = nullptr; }
  } kept_reset{ctx.nodes};
  // A finalize that an earlier `migrate --finalize` left half-way: only the finalize remains.
  const bool finalizing = active->phase == state::Phase::finalize;
  if (finalizing && !options.finalize) {
    throw PreconditionError(
        "migrate",
        fmt::format("migration {} was finalizing when it stopped; run \"zmigrate finalize {}\" "
                    "(or migrate --finalize) to finish it",
                    active->id, options.begin.vm_uuid));
  }
  const bool switched = finalizing || (active->phase == state::Phase::switch_ &&
                                       active->state == state::State::successful);
  if (!switched) {
    Ends ends = detail::open_ends(ctx, *active);
    // Under the lease: Link::open removes what earlier links of this migration left (a killed
    // earlier command's key line and directories), and no live command's link may be among
    // them.
    Operation lease(ctx, *active, "migrate");
    try {
      std::vector<std::string> datasets;
      for (const std::string& ds : ends.source->tree(detail::instance_roots(*active)).datasets) {
        datasets.push_back(ds);
      }
      kept = ctx.nodes.make_link(
          ctx, detail::data_path_spec(ctx, *active, *ends.source, *ends.target, datasets),
          *ends.source, *ends.target);
      kept->open();
      ctx.nodes.kept_link = kept.get();
    } catch (const Error& e) {
      ctx.log.warn("migrate: no shared data path; each phase opens its own", {{"error", e.what()}});
      kept.reset();
    }
  }
  if (switched) {
    // Nothing to sync: only finalize may remain. An earlier migrate killed after its switch
    // may have left its data path (a key line, private dirs): remove it under the lease now,
    // as a sync or switch would, rather than leave it to finalize or cleanup.
    if (!finalizing) {
      Ends ends = detail::open_ends(ctx, *active);
      Operation lease(ctx, *active, "migrate");
      ctx.nodes.remove_leftover_links(ctx, active->id, *ends.source, *ends.target, Leftovers::all);
    }
  } else if (active->phase != state::Phase::switch_) {
    std::vector<std::uint64_t> incrementals;
    int syncs = active->num_sync_phases;
    const auto syncing_since = ctx.clock.now();
    const std::optional<std::chrono::milliseconds> fixed =
        options.max_downtime ? detail::measured_switch_fixed(ctx) : std::nullopt;
    while (true) {
      ctx.reporter.phase_started("sync", "");
      SyncOptions so;
      so.stop_first = options.offline && syncs == active->num_sync_phases;
      SyncResult s = sync(ctx, options.begin.vm_uuid, so);
      if (syncs > 0 || s.transfers.empty() || s.transfers.front().kind == "incremental") {
        incrementals.push_back(s.bytes);
      }
      ++syncs;
      result.syncs.push_back(std::move(s));
      const auto took = result.syncs.back().duration;
      if (options.max_downtime && !options.offline) {
        const DowntimePrediction p = predict_downtime(
            result.syncs.back().migration.data.value("syncs", nlohmann::json::array()), fixed);
        result.predicted_downtime = p.total;
        ctx.reporter.note(fmt::format(
            "predicted downtime {} (fixed steps {}, final delta {} at {}; the instance writes "
            "{}), budget {}",
            human_duration(p.total), human_duration(p.fixed), human_bytes(p.delta_bytes),
            human_rate(p.link_rate),
            p.write_rate_known ? human_rate(p.write_rate) : std::string("an unknown rate yet"),
            human_duration(*options.max_downtime)));
        if (p.write_rate_known && p.total <= *options.max_downtime) {
          break;
        }
        const bool out_of_time = options.deadline
                                     ? ctx.clock.now() - syncing_since >= *options.deadline
                                     : static_cast<int>(incrementals.size()) >= options.max_syncs;
        if (out_of_time) {
          if (options.force_after_deadline) {
            ctx.reporter.note("the budget is not met, and --force-after-deadline switches anyway");
            break;
          }
          throw Error(
              ExitCode::failure, fmt::format("migrate {}", options.begin.vm_uuid),
              fmt::format("the predicted downtime {} is above the budget {} after {} syncs "
                          "({}): the instance writes {} and the final delta would go at {}. "
                          "It is ready to switch: \"zmigrate switch {}\" when that downtime is "
                          "acceptable, or rerun with --force-after-deadline",
                          human_duration(p.total), human_duration(*options.max_downtime), syncs,
                          options.deadline ? "the deadline passed"
                                           : fmt::format("--max-syncs {}", options.max_syncs),
                          p.write_rate_known ? human_rate(p.write_rate) : std::string("?"),
                          human_rate(p.link_rate), options.begin.vm_uuid));
        }
        continue;
      }
      if (options.offline || // stopped: nothing changes, one copy is the whole of it
          !should_sync_again(incrementals, options.converge_bytes, options.max_syncs, took)) {
        break;
      }
    }
  }
  const state::Migration now = switched ? *active : load_active(ctx, options.begin.vm_uuid);
  if (!options.no_switch && !switched &&
      !(now.phase == state::Phase::switch_ && now.state == state::State::successful)) {
    ctx.reporter.phase_started("switch", "");
    result.switched = switch_over(ctx, options.begin.vm_uuid);
    if (options.offline) {
      result.offline_downtime = offline_downtime(result.switched->migration);
    }
  }
  if (kept && !options.finalize && !result.switched) {
    // --no-switch: the path stays for the migration's next sync or its switch to adopt.
    kept->park();
    ctx.nodes.kept_link = nullptr;
  } else if (kept && !options.finalize) {
    // Closed here rather than by its destructor, so that what goes wrong is seen: a node that
    // cannot be reached keeps its ledger rows, which the next command or cleanup removes.
    try {
      kept->close();
    } catch (const Error& e) {
      ctx.log.warn("migrate: the data path was not removed; the next command or zmigrate "
                   "cleanup removes it",
                   {{"error", e.what()}});
      ctx.reporter.note(fmt::format("the data path was not removed ({}); \"zmigrate cleanup\" "
                                    "removes it",
                                    e.what()));
    }
    ctx.nodes.kept_link = nullptr;
  }
  if (options.finalize) {
    // finalize sends nothing: the link goes first, so that nothing of it outlives the migration
    // (a crash after finalize leaves no key line behind).
    if (kept) {
      kept->close();
      ctx.nodes.kept_link = nullptr;
    }
    ctx.reporter.phase_started("finalize", "");
    finalize(ctx, options.begin.vm_uuid);
    result.finalized = true;
  }
  return result;
}

} // namespace zmigrate::migration
