// SPDX-License-Identifier: MPL-2.0
#pragma once
// MemoryStateStore: the real SqliteStateStore on a private ":memory:" database, plus a record of
// every write as one readable line, so engine tests can assert the order of transitions:
//   CHECK(store.writes_matching("update_migration") ==
//         std::vector<std::string>{"update_migration m1 sync/running", ...});
// `before_write` runs before each write with that line; a test may throw from it to simulate a
// failure (or a crash, with an exception type the engine does not catch) at an exact point.
// Heartbeats may come from Operation's heartbeat thread: they touch nothing here but a counter.

#include <zmigrate/state/sqlite_store.hpp>

#include <atomic>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace zmigrate::fakes {

class MemoryStateStore final : public state::StateStore {
public:
  explicit MemoryStateStore(const Clock& clock) : m_real(":memory:", clock) {}

  // Every write, oldest first. Progress rows and heartbeats are only counted (they are many).
  std::vector<std::string> writes;
  int progress_writes = 0;
  std::atomic<int> heartbeats{0}; // Operation beats from its own thread too
  std::function<void(const std::string& write)> before_write;

  // The writes that start with `prefix`.
  std::vector<std::string> writes_matching(const std::string& prefix) const {
    std::vector<std::string> out;
    for (const std::string& w : writes) {
      if (w.rfind(prefix, 0) == 0) {
        out.push_back(w);
      }
    }
    return out;
  }

  state::SqliteStateStore& real() { return m_real; }

  void insert_migration(const state::Migration& m) override {
    write(fmt::format("insert_migration {} {}", m.id, describe(m)));
    m_real.insert_migration(m);
  }
  // The same optimistic lock as the real store: a stale `m.version` throws, success bumps it.
  void update_migration(state::Migration& m) override {
    write(fmt::format("update_migration {} {}", m.id, describe(m)));
    m_real.update_migration(m);
  }
  std::optional<state::Migration> find_migration(const std::string& id) override {
    return m_real.find_migration(id);
  }
  std::optional<state::Migration> find_active_for_vm(const std::string& vm_uuid) override {
    return m_real.find_active_for_vm(vm_uuid);
  }
  std::optional<state::Migration> find_latest_for_vm(const std::string& vm_uuid) override {
    return m_real.find_latest_for_vm(vm_uuid);
  }
  std::vector<state::Migration> list_migrations(const state::ListFilter& filter) override {
    return m_real.list_migrations(filter);
  }

  std::int64_t add_phase_run(const std::string& migration_id, const state::PhaseRun& r) override {
    write(fmt::format("add_phase_run {} {}/{}", migration_id, state::to_string(r.phase),
                      state::to_string(r.state)));
    return m_real.add_phase_run(migration_id, r);
  }
  void update_phase_run(const std::string& migration_id, const state::PhaseRun& r) override {
    write(fmt::format("update_phase_run {} {}/{}", migration_id, state::to_string(r.phase),
                      state::to_string(r.state)));
    m_real.update_phase_run(migration_id, r);
  }

  std::int64_t begin_step(const state::Step& s) override {
    write(fmt::format("begin_step {}", s.name));
    const std::int64_t id = m_real.begin_step(s);
    m_step_names[id] = s.name;
    return id;
  }
  void end_step(std::int64_t step_id, const std::string& status,
                const nlohmann::json& details) override {
    write(fmt::format("end_step {} {}", m_step_names[step_id], status));
    m_real.end_step(step_id, status, details);
  }
  std::vector<state::Step> steps(const std::string& migration_id,
                                 std::int64_t after_id = 0) override {
    return m_real.steps(migration_id, after_id);
  }
  std::optional<state::Step> completed_step(std::int64_t phase_run_id,
                                            const std::string& name) override {
    return m_real.completed_step(phase_run_id, name);
  }

  std::int64_t record_artefact(const state::Artefact& a) override {
    const std::string what = fmt::format("{} {} {}", a.kind, a.host, a.name);
    write("record_artefact " + what);
    const std::int64_t id = m_real.record_artefact(a);
    m_artefacts[id] = what;
    return id;
  }
  void mark_artefact_removed(std::int64_t id) override {
    write("mark_artefact_removed " + m_artefacts[id]);
    m_real.mark_artefact_removed(id);
  }
  std::vector<state::Artefact> live_artefacts(const std::string& migration_id) override {
    return m_real.live_artefacts(migration_id);
  }
  std::vector<state::Artefact> all_live_artefacts(const std::string& kind) override {
    return m_real.all_live_artefacts(kind);
  }

  void put_progress(const state::Progress& p) override {
    ++progress_writes;
    m_real.put_progress(p);
  }
  std::optional<state::Progress> get_progress(const std::string& migration_id) override {
    return m_real.get_progress(migration_id);
  }

  using state::StateStore::try_acquire_lease;
  std::optional<state::Lease> try_acquire_lease(const state::Lease& lease, int stale_after_s,
                                                bool take_over_remote) override {
    write(fmt::format("acquire_lease {} {}", lease.migration_id, lease.operation));
    return m_real.try_acquire_lease(lease, stale_after_s, take_over_remote);
  }
  void heartbeat(const std::string& migration_id, int pid) override {
    ++heartbeats;
    m_real.heartbeat(migration_id, pid);
  }
  void release_lease(const std::string& migration_id, int pid) override {
    write(fmt::format("release_lease {}", migration_id));
    m_real.release_lease(migration_id, pid);
  }
  std::optional<state::Lease> find_lease(const std::string& migration_id) override {
    return m_real.find_lease(migration_id);
  }
  state::StopOutcome request_stop(const state::StopRequest& r,
                                  const std::vector<std::string>& unstoppable) override {
    write(fmt::format("request_stop {} {}", r.migration_id, r.kind));
    return m_real.request_stop(r, unstoppable);
  }
  std::optional<state::StopRequest> find_stop_request(const std::string& migration_id) override {
    return m_real.find_stop_request(migration_id); // polled by Operation's thread: not a write
  }
  void clear_stop_request(const std::string& migration_id, const std::string& requested) override {
    write(fmt::format("clear_stop_request {}", migration_id));
    m_real.clear_stop_request(migration_id, requested);
  }

private:
  static std::string describe(const state::Migration& m) {
    return fmt::format("{}/{}{}", state::to_string(m.phase), state::to_string(m.state),
                       m.archived ? " archived" : "");
  }
  void write(const std::string& line) {
    if (before_write) {
      before_write(line);
    }
    writes.push_back(line);
  }

  state::SqliteStateStore m_real;
  std::map<std::int64_t, std::string> m_step_names;
  std::map<std::int64_t, std::string> m_artefacts;
};

} // namespace zmigrate::fakes
