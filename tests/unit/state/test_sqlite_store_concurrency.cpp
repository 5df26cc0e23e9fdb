// SPDX-License-Identifier: MPL-2.0
// Many writers on one state database: processes (fork) and threads, each with its own
// SqliteStateStore, do what concurrent migrations and `watch`es do, at the same moment, on a
// new database and on one already in use. No call may fail: each waits for the others.

#include <zmigrate/state/sqlite_store.hpp>
#include <zmigrate/util/error.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <mutex>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>

using namespace zmigrate;
using namespace zmigrate::state;
namespace fs = std::filesystem;

namespace {

constexpr int k_steps = 12;                                 // journal steps per migration
constexpr auto k_watch_deadline = std::chrono::seconds(60); // a hung run fails, never blocks

class TempDir {
public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "zmigrate-concurrency-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    m_path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(m_path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (m_path / name).string(); }

private:
  fs::path m_path;
};

std::string migration_id(int worker, int trip) {
  return fmt::format("m{}-{}", worker, trip);
}
std::string vm_of(int worker) {
  return fmt::format("vm{}", worker);
}

// A held lease, beaten from a thread as Operation does (the store is shared with the main
// thread). Losing it, or a beat that fails, is recorded in `failure`.
class Beater {
public:
  Beater(SqliteStateStore& store, std::string key) : m_store(store), m_key(std::move(key)) {
    m_thread = std::thread([this] {
      std::unique_lock lock(m_mutex);
      // Far more often than Operation beats, so that beats meet the other writers.
      while (!m_cv.wait_for(lock, std::chrono::milliseconds(2), [this] { return m_stop; })) {
        lock.unlock();
        std::string failure;
        try {
          m_store.heartbeat(m_key, 0);
          (void)m_store.find_stop_request(m_key);
        } catch (const std::exception& e) {
          failure = fmt::format("heartbeat of {}: {}", m_key, e.what());
        }
        lock.lock();
        if (!failure.empty()) {
          m_failure = failure;
          return;
        }
      }
    });
  }
  ~Beater() { stop(); }
  Beater(const Beater&) = delete;
  Beater& operator=(const Beater&) = delete;
  std::string stop() {
    {
      const std::lock_guard lock(m_mutex);
      m_stop = true;
    }
    m_cv.notify_all();
    if (m_thread.joinable()) {
      m_thread.join();
    }
    const std::lock_guard lock(m_mutex);
    return m_failure;
  }

private:
  SqliteStateStore& m_store;
  std::string m_key;
  std::mutex m_mutex;
  std::condition_variable m_cv;
  bool m_stop = false;
  std::string m_failure;
  std::thread m_thread; // last: starts once the members it uses exist
};

// One migration of `worker`'s instance, the calls in the order the engine makes them: the
// active-migration check, the record, the lease (beaten meanwhile), a phase run with its
// journal, artefacts and progress, record updates, then the archived record and the release.
// Throws on the first failing call.
void one_migration(SqliteStateStore& store, int worker, int trip) {
  const std::string id = migration_id(worker, trip);
  const std::string vm = vm_of(worker);
  if (store.find_active_for_vm(vm)) {
    throw std::runtime_error(fmt::format("{}: an active migration is left over", vm));
  }
  Migration m;
  m.id = id;
  m.vm_uuid = vm;
  m.source_server_uuid = trip % 2 == 0 ? "cn1" : "cn3";
  m.target_server_uuid = trip % 2 == 0 ? "cn3" : "cn1";
  m.data = {{"vm", {{"alias", vm}, {"padding", std::string(1500, 'x')}}}};
  store.insert_migration(m);
  Lease lease;
  lease.migration_id = id;
  lease.operation = "migrate";
  if (const std::optional<Lease> holder = store.try_acquire_lease(lease, 60)) {
    throw std::runtime_error(fmt::format("{}: lease refused, held by pid {}", id, holder->pid));
  }
  Beater beater(store, id);
  Migration record = *store.find_migration(id);
  PhaseRun run;
  run.phase = Phase::sync;
  run.id = store.add_phase_run(id, run);
  for (int k = 0; k < k_steps; ++k) {
    Step s;
    s.migration_id = id;
    s.phase_run_id = run.id;
    s.name = fmt::format("sync.step{}", k);
    const std::int64_t step = store.begin_step(s);
    Artefact a;
    a.migration_id = id;
    a.kind = "snapshot";
    a.host = m.source_server_uuid;
    a.name = fmt::format("zones/{}@zmigrate-{}", vm, k);
    const std::int64_t artefact = store.record_artefact(a);
    Progress p;
    p.migration_id = id;
    p.current = static_cast<std::uint64_t>(k + 1);
    p.total = k_steps;
    store.put_progress(p);
    store.end_step(step, "ok", {{"k", k}});
    if (k > 0) {
      store.mark_artefact_removed(artefact - 1);
    }
    run.current_progress = static_cast<std::uint64_t>(k + 1);
    store.update_phase_run(id, run);
    record.num_sync_phases = k + 1;
    store.update_migration(record);
  }
  for (const Artefact& a : store.live_artefacts(id)) {
    store.mark_artefact_removed(a.id);
  }
  run.state = State::successful;
  store.update_phase_run(id, run);
  record.phase = Phase::finalize;
  record.state = State::successful;
  record.archived = true;
  store.update_migration(record);
  const std::string lost = beater.stop();
  if (!lost.empty()) {
    throw std::runtime_error(lost);
  }
  store.release_lease(id, 0);
}

// A migrator: its instance there and back, `trips` migrations, on a store opened for each one
// (every command opens the database afresh).
void migrator(const std::string& path, int worker, int trips) {
  for (int trip = 0; trip < trips; ++trip) {
    SqliteStateStore store(path);
    one_migration(store, worker, trip);
  }
}

// What `watch` and `list` read, until every migration of `workers` x `trips` is archived and
// successful with its whole journal: the list, each journal read on from the last id seen,
// progress and leases. Throws when the journal goes backwards or the deadline passes.
void watcher(const std::string& path, int workers, int trips) {
  const auto deadline = std::chrono::steady_clock::now() + k_watch_deadline;
  SqliteStateStore store(path);
  std::map<std::string, std::int64_t> last_step;
  std::map<std::string, int> seen_steps;
  ListFilter all;
  all.include_archived = true;
  while (true) {
    int done = 0;
    for (const Migration& m : store.list_migrations(all)) {
      for (const Step& s : store.steps(m.id, last_step[m.id])) {
        if (s.id <= last_step[m.id]) {
          throw std::runtime_error(fmt::format("{}: journal went backwards", m.id));
        }
        last_step[m.id] = s.id;
        ++seen_steps[m.id];
      }
      (void)store.get_progress(m.id);
      (void)store.find_lease(m.id);
      if (m.archived && m.state == State::successful && seen_steps[m.id] == k_steps) {
        ++done;
      }
    }
    if (done == workers * trips) {
      return;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error(
          fmt::format("only {} of {} migrations seen finished", done, workers * trips));
    }
    // A short-lived reader as well, as `zmigrate list` and `get` are.
    SqliteStateStore once(path);
    (void)once.find_latest_for_vm(vm_of(0));
  }
}

// Runs every body at once: in forked children (`processes`) or threads, all released together
// by one event (a pipe closed, a flag set) so that they really open the database together.
// Returns each body's failure text ("" when it succeeded).
std::vector<std::string> run_together(const std::vector<std::function<void()>>& bodies,
                                      bool processes, const TempDir& dir) {
  std::vector<std::string> failures(bodies.size());
  if (processes) {
    int gate[2];
    REQUIRE(pipe(gate) == 0);
    std::fflush(stdout);
    std::fflush(stderr);
    std::vector<pid_t> pids;
    for (std::size_t i = 0; i < bodies.size(); ++i) {
      const pid_t pid = fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        close(gate[1]);
        char c = 0;
        (void)!read(gate[0], &c, 1); // returns at EOF: the parent closed the gate
        int rc = 0;
        try {
          bodies[i]();
        } catch (const std::exception& e) {
          std::ofstream(dir.file(fmt::format("child{}.err", i))) << e.what();
          rc = 1;
        }
        _exit(rc);
      }
      pids.push_back(pid);
    }
    close(gate[0]);
    close(gate[1]); // go
    for (std::size_t i = 0; i < pids.size(); ++i) {
      int status = 0;
      REQUIRE(waitpid(pids[i], &status, 0) == pids[i]);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::ifstream in(dir.file(fmt::format("child{}.err", i)));
        failures[i] = std::string(std::istreambuf_iterator<char>(in), {});
        if (failures[i].empty()) {
          failures[i] = fmt::format("wait status {}", status);
        }
      }
    }
    return failures;
  }
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    threads.emplace_back([&, i] {
      while (!go.load()) {
        std::this_thread::yield();
      }
      try {
        bodies[i]();
      } catch (const std::exception& e) {
        failures[i] = e.what();
      }
    });
  }
  go = true;
  for (std::thread& t : threads) {
    t.join();
  }
  return failures;
}

void check_all_succeeded(const std::vector<std::string>& failures) {
  for (std::size_t i = 0; i < failures.size(); ++i) {
    INFO("worker " << i);
    CHECK(failures[i] == "");
  }
}

// Every migration recorded once, archived and successful, with its whole journal and no live
// artefact or lease left.
void check_records(const std::string& path, int workers, int trips) {
  SqliteStateStore store(path);
  ListFilter all;
  all.include_archived = true;
  CHECK(store.list_migrations(all).size() == static_cast<std::size_t>(workers * trips));
  for (int w = 0; w < workers; ++w) {
    for (int t = 0; t < trips; ++t) {
      const std::string id = migration_id(w, t);
      INFO(id);
      const std::optional<Migration> m = store.find_migration(id);
      REQUIRE(m);
      CHECK(m->archived);
      CHECK(m->state == State::successful);
      CHECK(m->num_sync_phases == k_steps);
      CHECK(store.steps(id).size() == static_cast<std::size_t>(k_steps));
      CHECK(store.live_artefacts(id).empty());
      CHECK_FALSE(store.find_lease(id));
    }
  }
}

} // namespace

TEST_CASE("state::SqliteStateStore: concurrent processes and threads share one database",
          "[state][store][concurrency]") {
  constexpr int k_migrators = 4;
  constexpr int k_watchers = 3;
  constexpr int k_trips = 2; // there and back
  const bool processes = GENERATE(true, false);
  // A new state directory each round (every worker creates or converts the file at once), then
  // one round on a database that exists already, made and closed before the workers start.
  const int rounds = 3;
  TempDir dir;
  for (int round = 0; round <= rounds; ++round) {
    const bool fresh = round < rounds;
    const std::string path = dir.file(fmt::format("r{}/zmigrate.db", round));
    if (!fresh) {
      SqliteStateStore seed(path);
    }
    INFO((processes ? "processes" : "threads")
         << ", round " << round << (fresh ? " (new database)" : ""));
    std::vector<std::function<void()>> bodies;
    for (int w = 0; w < k_migrators; ++w) {
      bodies.emplace_back([path, w] { migrator(path, w, k_trips); });
    }
    for (int i = 0; i < k_watchers; ++i) {
      bodies.emplace_back([path] { watcher(path, k_migrators, k_trips); });
    }
    check_all_succeeded(run_together(bodies, processes, dir));
    check_records(path, k_migrators, k_trips);
  }
}

TEST_CASE("state::SqliteStateStore: many processes open a new database at the same moment",
          "[state][store][concurrency]") {
  // The moment the issue was about: the first commands on a new state directory all turn the
  // new file into WAL together. Only opening, many times over, so a race is likely to happen.
  constexpr int k_openers = 6;
  TempDir dir;
  for (int round = 0; round < 20; ++round) {
    const std::string path = dir.file(fmt::format("r{}/zmigrate.db", round));
    std::vector<std::function<void()>> bodies;
    for (int i = 0; i < k_openers; ++i) {
      bodies.emplace_back([path, i] {
        SqliteStateStore store(path);
        Lease l;
        l.migration_id = fmt::format("key{}", i);
        l.operation = "open";
        if (store.try_acquire_lease(l, 60)) {
          throw std::runtime_error("lease refused");
        }
      });
    }
    INFO("round " << round);
    check_all_succeeded(run_together(bodies, true, dir));
    SqliteStateStore store(path);
    CHECK(store.schema_version() == SqliteStateStore::k_schema_version);
    for (int i = 0; i < k_openers; ++i) {
      CHECK(store.find_lease(fmt::format("key{}", i)));
    }
  }
}
