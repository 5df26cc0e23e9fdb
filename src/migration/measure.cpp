// SPDX-License-Identifier: MPL-2.0
// estimate --measure: one empty and one full stream over a measurement's own data path.
#include "engine_common.hpp"

#include <zmigrate/migration/link.hpp>
#include <zmigrate/migration/measure.hpp>
#include <zmigrate/migration/node.hpp>
#include <zmigrate/migration/operation.hpp>
#include <zmigrate/migration/plan.hpp>
#include <zmigrate/state/records.hpp>
#include <zmigrate/util/clock.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/uuid.hpp>

#include <memory>

#include <fmt/format.h>

namespace zmigrate::migration {

double link_rate(std::uint64_t bytes, std::chrono::milliseconds empty,
                 std::chrono::milliseconds full) {
  const std::chrono::milliseconds cost = full > empty ? full - empty : full;
  if (cost.count() <= 0) {
    return 0;
  }
  return static_cast<double>(bytes) / (static_cast<double>(cost.count()) / 1000.0);
}

namespace {

std::string node_name(const inventory::Server& s) {
  return fmt::format("compute node {} ({})", s.hostname, s.uuid);
}

void check_end(const inventory::Server& s) {
  if (s.status != "running") {
    throw PreconditionError(
        node_name(s), fmt::format("CNAPI reports it {}, not running: nothing to measure "
                                  "until it is back",
                                  s.status.empty() ? std::string("without a status") : s.status));
  }
  if (s.admin_ip.empty()) {
    throw PreconditionError(node_name(s),
                            "CNAPI's sysinfo names no admin address for it (NIC \"admin\"); "
                            "the data path runs over the admin network");
  }
}

} // namespace

LinkMeasurement measure_link(Context& ctx, const inventory::Server& source,
                             const inventory::Server& target, const std::string& vm_uuid,
                             std::uint64_t mib) {
  if (source.uuid == target.uuid) {
    throw UsageError(node_name(target),
                     "it is the source node itself; name another compute node with -n");
  }
  check_end(source);
  check_end(target);
  state::Migration m;
  m.id = uuid_v4();
  m.kind = "measurement";
  m.vm_uuid = vm_uuid;
  m.source_server_uuid = source.uuid;
  m.target_server_uuid = target.uuid;
  m.phase = state::Phase::sync;
  m.state = state::State::running;
  m.archived = true; // never an instance's active migration
  m.created = iso8601(ctx.clock.wall_now());
  m.data = {{"measure_mib", mib}};
  ctx.store.insert_migration(m);
  Operation op(ctx, m, "measure");
  op.start_phase(state::Phase::sync, fmt::format("measuring the data path from {} to {}",
                                                 source.hostname, target.hostname));
  LinkMeasurement out;
  out.id = m.id;
  out.source_server_uuid = source.uuid;
  out.source_hostname = source.hostname;
  out.target_server_uuid = target.uuid;
  out.target_hostname = target.hostname;
  try {
    Node& src = ctx.nodes.node(ctx, source);
    Node& dst = ctx.nodes.node(ctx, target);
    DataPathSpec spec = detail::data_path_spec(ctx, op.record(), src, dst, {});
    spec.measure = true;
    spec.resumable = false;
    spec.watchdog = false;
    std::unique_ptr<Link> link = ctx.nodes.make_link(ctx, spec, src, dst);
    op.step(
        "measure.open", [&](nlohmann::json&) { link->open(); },
        fmt::format("setting up a data path from {} to {}", source.hostname, target.hostname));
    MeasureResult empty;
    MeasureResult full;
    op.step("measure.empty", [&](nlohmann::json& d) {
      empty = link->measure(0);
      d["ms"] = empty.duration.count();
    });
    op.step(
        "measure.full",
        [&](nlohmann::json& d) {
          full = link->measure(mib);
          d["bytes"] = full.bytes;
          d["ms"] = full.duration.count();
        },
        fmt::format("sending {} MiB from {} to {}", mib, source.hostname, target.hostname));
    op.step("measure.close", [&](nlohmann::json&) { link->close(); });
    out.bytes = full.bytes;
    out.empty = empty.duration;
    out.full = full.duration;
    out.rate_bytes_per_s = link_rate(full.bytes, empty.duration, full.duration);
    out.measured = iso8601(ctx.clock.wall_now());
    const nlohmann::json j = out;
    op.record().data["measurement"] = j;
    op.finish_phase(state::State::successful, "", j);
  } catch (const std::exception& e) {
    op.finish_phase(state::State::failed, e.what());
    throw;
  }
  return out;
}

LinkMeasurement measure_from(Context& ctx, const std::string& vm_uuid, const std::string& server,
                             const std::string& target, std::uint64_t mib) {
  inventory::Server source;
  if (!vm_uuid.empty()) {
    const std::optional<inventory::Vm> vm = ctx.inventory.find_vm(vm_uuid);
    if (!vm || vm->state == "destroyed") {
      throw NotFoundError(fmt::format("instance {}", vm_uuid), "VMAPI has no such instance");
    }
    source = ctx.inventory.resolve_server(vm->server_uuid);
  } else {
    source = ctx.inventory.resolve_server(server);
  }
  return measure_link(ctx, source, ctx.inventory.resolve_server(target), vm_uuid, mib);
}

std::optional<LinkMeasurement> latest_measurement(Context& ctx, const std::string& source_uuid,
                                                  const std::string& target_uuid) {
  state::ListFilter f;
  f.kind = "measurement";
  f.include_archived = true;
  f.state = state::State::successful;
  f.server_uuid = source_uuid;
  f.limit = k_history_window; // the newest measurements from or to the source are enough
  for (const state::Migration& m : ctx.store.list_migrations(f)) { // newest first
    if (m.source_server_uuid == source_uuid && m.target_server_uuid == target_uuid &&
        m.data.contains("measurement")) {
      LinkMeasurement out = m.data.at("measurement").get<LinkMeasurement>();
      if (out.rate_bytes_per_s > 0) {
        return out;
      }
    }
  }
  return std::nullopt;
}

void to_json(nlohmann::json& j, const LinkMeasurement& m) {
  j = {{"id", m.id},
       {"source_server_uuid", m.source_server_uuid},
       {"source_hostname", m.source_hostname},
       {"target_server_uuid", m.target_server_uuid},
       {"target_hostname", m.target_hostname},
       {"measured", m.measured},
       {"bytes", m.bytes},
       {"empty_stream_ms", m.empty.count()},
       {"stream_ms", m.full.count()},
       {"rate_bytes_per_second", m.rate_bytes_per_s}};
}

void from_json(const nlohmann::json& j, LinkMeasurement& m) {
  m.id = j.value("id", "");
  m.source_server_uuid = j.value("source_server_uuid", "");
  m.source_hostname = j.value("source_hostname", "");
  m.target_server_uuid = j.value("target_server_uuid", "");
  m.target_hostname = j.value("target_hostname", "");
  m.measured = j.value("measured", "");
  m.bytes = j.value("bytes", std::uint64_t{0});
  m.empty = std::chrono::milliseconds(j.value("empty_stream_ms", std::int64_t{0}));
  m.full = std::chrono::milliseconds(j.value("stream_ms", std::int64_t{0}));
  m.rate_bytes_per_s = j.value("rate_bytes_per_second", 0.0);
}

} // namespace zmigrate::migration
