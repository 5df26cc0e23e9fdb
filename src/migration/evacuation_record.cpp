// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/evacuation_record.hpp>
#include <zmigrate/util/clock.hpp>
#include <zmigrate/util/uuid.hpp>

#include <algorithm>
#include <unistd.h>

namespace zmigrate::migration {

namespace {

nlohmann::json item_json(const EvacuationItem& i) {
  return {{"vm_uuid", i.vm_uuid}, {"alias", i.alias},     {"brand", i.brand}, {"state", i.state},
          {"target", i.target},   {"outcome", i.outcome}, {"error", i.error}};
}

bool settled(const std::string& outcome) {
  return outcome != "queued" && outcome != "running";
}

bool moved(const std::string& outcome) {
  return outcome == "migrated" || outcome == "finalized" || outcome == "switched" ||
         outcome == "ready";
}

} // namespace

std::string outcome_of(const state::Migration& m) {
  const bool ok = m.state == state::State::successful;
  if (m.phase == state::Phase::finalize && ok) {
    return "finalized";
  }
  if (m.phase == state::Phase::switch_ && ok) {
    return "migrated";
  }
  if (m.phase == state::Phase::sync && m.state == state::State::paused) {
    return "ready";
  }
  if (m.state == state::State::failed) {
    return "failed";
  }
  return "";
}

std::optional<state::Migration> find_evacuation(state::StateStore& store,
                                                const std::string& server_uuid, bool restore) {
  state::ListFilter f;
  f.kind = k_evacuation_kind;
  f.server_uuid = server_uuid;
  f.include_archived = true;
  for (state::Migration& m : store.list_migrations(f)) {
    const nlohmann::json e = m.data.value("evacuation", nlohmann::json::object());
    if (e.is_object() && e.value("restore", false) == restore) {
      return std::move(m);
    }
  }
  return std::nullopt;
}

EvacuationLog::EvacuationLog(Context& ctx, const inventory::Server& server, bool restore,
                             const nlohmann::json& options,
                             const std::vector<EvacuationItem>& items)
    : m_ctx(ctx) {
  try {
    std::optional<state::Migration> earlier = find_evacuation(ctx.store, server.uuid, restore);
    if (earlier && earlier->state != state::State::successful) {
      m_record = std::move(*earlier);
      // Its instances that this run does not list: they ended (or left the node) since.
      for (nlohmann::json i : m_record.data["evacuation"].value("instances", nlohmann::json())) {
        if (!i.is_object()) {
          continue;
        }
        const std::string vm = i.value("vm_uuid", "");
        if (std::any_of(items.begin(), items.end(),
                        [&vm](const EvacuationItem& it) { return it.vm_uuid == vm; })) {
          continue;
        }
        if (!settled(i.value("outcome", ""))) {
          const std::optional<state::Migration> m = ctx.store.find_latest_for_vm(vm);
          const std::string now = m ? outcome_of(*m) : "";
          i["outcome"] = now.empty() ? "interrupted" : now;
        }
        m_carried.push_back(std::move(i));
      }
      m_record.state = state::State::running;
      m_record.finished.clear();
      m_record.error.clear();
    } else {
      m_record.id = uuid_v4();
      m_record.kind = k_evacuation_kind;
      m_record.source_server_uuid = server.uuid;
      m_record.phase = state::Phase::begin;
      m_record.state = state::State::running;
      m_record.archived = true; // never an instance's active migration
      m_record.created = iso8601(ctx.clock.wall_now());
      m_record.data["evacuation"] = {{"server", server.uuid},
                                     {"hostname", server.hostname},
                                     {"restore", restore},
                                     {"instances", nlohmann::json::array()}};
      ctx.store.insert_migration(m_record);
    }
    nlohmann::json& e = m_record.data["evacuation"];
    e["options"] = options;
    e["pid"] = static_cast<int>(::getpid());
    e["host"] = ctx.settings.hostname;
    e["interrupted"] = false;
    m_ok = true;
    write(items);
  } catch (const std::exception& ex) {
    m_ok = false;
    ctx.log.warn("evacuate: cannot record the evacuation", {{"error", ex.what()}});
  }
}

void EvacuationLog::write(const std::vector<EvacuationItem>& items) {
  if (!m_ok) {
    return;
  }
  nlohmann::json instances = m_carried;
  for (const EvacuationItem& i : items) {
    instances.push_back(item_json(i));
  }
  nlohmann::json& e = m_record.data["evacuation"];
  e["instances"] = std::move(instances);
  e["updated"] = iso8601(m_ctx.clock.wall_now());
  try {
    m_ctx.store.update_migration(m_record);
  } catch (const std::exception& ex) {
    // Another writer (a second evacuate of the same node) moved it on: read it again once.
    m_ctx.log.warn("evacuate: cannot update the evacuation record", {{"error", ex.what()}});
    if (const std::optional<state::Migration> fresh = m_ctx.store.find_migration(m_record.id)) {
      m_record.version = fresh->version;
    }
  }
}

void EvacuationLog::update(const std::vector<EvacuationItem>& items) {
  write(items);
}

void EvacuationLog::finish(const std::vector<EvacuationItem>& items, bool interrupted) {
  if (!m_ok) {
    return;
  }
  bool failed = false;
  for (const nlohmann::json& i : m_carried) {
    failed =
        failed || i.value("outcome", "") == "failed" || i.value("outcome", "") == "interrupted";
  }
  for (const EvacuationItem& i : items) {
    failed = failed || i.outcome == "failed" || i.outcome == "interrupted";
  }
  m_record.state = interrupted ? state::State::paused
                               : (failed ? state::State::failed : state::State::successful);
  m_record.finished = iso8601(m_ctx.clock.wall_now());
  m_record.data["evacuation"]["interrupted"] = interrupted;
  write(items);
}

EvacuationView view_evacuation(const state::Migration& record,
                               const std::map<std::string, state::Migration>& migrations,
                               const std::map<std::string, state::Progress>& progress) {
  EvacuationView v;
  const nlohmann::json e = record.data.value("evacuation", nlohmann::json::object());
  v.id = record.id;
  v.server = e.value("server", record.source_server_uuid);
  v.hostname = e.value("hostname", "");
  v.restore = e.value("restore", false);
  v.state = state::to_string(record.state);
  v.started = record.created;
  v.finished = record.finished;
  v.pid = e.value("pid", 0);
  v.host = e.value("host", "");
  v.updated = e.value("updated", "");
  std::uint64_t finished_bytes = 0;
  int finished_count = 0;
  int not_begun = 0;
  for (const nlohmann::json& i : e.value("instances", nlohmann::json::array())) {
    if (!i.is_object()) {
      continue;
    }
    EvacuationRow r;
    r.vm_uuid = i.value("vm_uuid", "");
    r.alias = i.value("alias", "");
    r.target = i.value("target", "");
    r.outcome = i.value("outcome", "");
    r.error = i.value("error", "");
    const auto m = migrations.find(r.vm_uuid);
    // Only a migration of this evacuation counts (not one from before it).
    if (m != migrations.end() && m->second.created >= record.created && r.outcome != "queued" &&
        r.outcome != "excluded") {
      r.phase = state::to_string(m->second.phase);
      r.state = state::to_string(m->second.state);
      r.sent = moved_totals(m->second).bytes;
      const auto p = progress.find(m->second.id);
      if (r.outcome == "running" && p != progress.end() &&
          p->second.state == state::State::running && p->second.total > 0 &&
          m->second.state == state::State::running) {
        r.current = std::min(p->second.current, p->second.total);
        r.total = p->second.total;
        r.rate = p->second.bytes_per_second;
        if (p->second.eta_ms >= 0) {
          r.eta_ms = p->second.eta_ms;
        }
      }
    }
    ++v.total;
    if (moved(r.outcome)) {
      ++v.done;
      finished_bytes += r.sent;
      ++finished_count;
    } else if (r.outcome == "running") {
      ++v.running;
      if (r.phase.empty() || r.phase == "begin") {
        ++not_begun; // no sync yet: its size is not known
      }
    } else if (r.outcome == "queued") {
      ++v.queued;
      ++not_begun;
    } else if (r.outcome == "failed" || r.outcome == "interrupted") {
      ++v.failed;
    } else {
      ++v.skipped;
    }
    v.sent += r.sent + r.current;
    v.left += r.total - r.current;
    v.rate += r.rate;
    v.rows.push_back(std::move(r));
  }
  if (not_begun > 0) {
    if (finished_count > 0) {
      v.left += finished_bytes / static_cast<std::uint64_t>(finished_count) *
                static_cast<std::uint64_t>(not_begun);
      v.left_approximate = true;
    } else {
      v.left_known = false;
    }
  }
  if (v.left_known && v.rate > 0 && record.state == state::State::running) {
    v.eta_ms = static_cast<std::int64_t>(static_cast<double>(v.left) / v.rate * 1000.0);
  }
  return v;
}

void to_json(nlohmann::json& j, const EvacuationView& v) {
  nlohmann::json rows = nlohmann::json::array();
  for (const EvacuationRow& r : v.rows) {
    nlohmann::json row = {{"vm_uuid", r.vm_uuid}, {"alias", r.alias}, {"target", r.target},
                          {"outcome", r.outcome}, {"phase", r.phase}, {"state", r.state},
                          {"bytes_sent", r.sent}, {"error", r.error}};
    if (r.total > 0) {
      row["current_progress"] = r.current;
      row["total_progress"] = r.total;
      row["transfer_bytes_second"] = r.rate;
      row["eta_ms"] = r.eta_ms ? nlohmann::json(*r.eta_ms) : nlohmann::json();
    }
    rows.push_back(std::move(row));
  }
  j = {{"id", v.id},
       {"server", v.server},
       {"hostname", v.hostname},
       {"restore", v.restore},
       {"state", v.state},
       {"started", v.started},
       {"finished", v.finished},
       {"pid", v.pid},
       {"host", v.host},
       {"updated", v.updated},
       {"total", v.total},
       {"done", v.done},
       {"running", v.running},
       {"queued", v.queued},
       {"failed", v.failed},
       {"skipped", v.skipped},
       {"bytes_sent", v.sent},
       {"bytes_left", v.left_known ? nlohmann::json(v.left) : nlohmann::json()},
       {"bytes_left_approximate", v.left_approximate},
       {"transfer_bytes_second", v.rate},
       {"eta_ms", v.eta_ms ? nlohmann::json(*v.eta_ms) : nlohmann::json()},
       {"instances", rows}};
}

} // namespace zmigrate::migration
