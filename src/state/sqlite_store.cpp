// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/state/sqlite_store.hpp>
#include <zmigrate/util/error.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <random>
#include <signal.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

#include <climits>
#include <fmt/format.h>
#include <sqlite3.h>

namespace zmigrate::state {

namespace {

// Each entry moves the schema one version forward. Never edit a released entry: add a new one
// (ALTER TABLE, or create-copy-drop-rename for changes ALTER cannot make).
constexpr std::array<SchemaUpgrade, 4> k_upgrades{{
    {1, R"sql(
CREATE TABLE migrations (
  id                 TEXT PRIMARY KEY NOT NULL,
  vm_uuid            TEXT NOT NULL,
  source_server_uuid TEXT NOT NULL DEFAULT '',
  target_server_uuid TEXT NOT NULL DEFAULT '',
  phase              TEXT NOT NULL,
  state              TEXT NOT NULL,
  automatic          INTEGER NOT NULL DEFAULT 0,
  archived           INTEGER NOT NULL DEFAULT 0,
  num_sync_phases    INTEGER NOT NULL DEFAULT 0,
  created            TEXT NOT NULL,
  finished           TEXT NOT NULL DEFAULT '',
  error              TEXT NOT NULL DEFAULT '',
  data               TEXT NOT NULL DEFAULT '{}'
);
-- At most one active migration per instance, whatever two racing "begin"s decided.
CREATE UNIQUE INDEX migrations_active_vm ON migrations (vm_uuid) WHERE archived = 0;
CREATE INDEX migrations_vm ON migrations (vm_uuid, created);
CREATE INDEX migrations_created ON migrations (created);
CREATE INDEX migrations_state ON migrations (state);
CREATE INDEX migrations_source ON migrations (source_server_uuid);
CREATE INDEX migrations_target ON migrations (target_server_uuid);

CREATE TABLE phase_runs (
  id               INTEGER PRIMARY KEY AUTOINCREMENT,
  migration_id     TEXT NOT NULL REFERENCES migrations (id) ON DELETE CASCADE,
  phase            TEXT NOT NULL,
  state            TEXT NOT NULL,
  message          TEXT NOT NULL DEFAULT '',
  error            TEXT NOT NULL DEFAULT '',
  started          TEXT NOT NULL,
  finished         TEXT NOT NULL DEFAULT '',
  current_progress INTEGER NOT NULL DEFAULT 0,
  total_progress   INTEGER NOT NULL DEFAULT 100,
  details          TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX phase_runs_migration ON phase_runs (migration_id, id);

CREATE TABLE steps (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  migration_id TEXT NOT NULL REFERENCES migrations (id) ON DELETE CASCADE,
  phase_run_id INTEGER REFERENCES phase_runs (id) ON DELETE CASCADE,
  name         TEXT NOT NULL,
  status       TEXT NOT NULL,
  started      TEXT NOT NULL,
  finished     TEXT NOT NULL DEFAULT '',
  details      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX steps_migration ON steps (migration_id, id);
CREATE INDEX steps_run_name ON steps (phase_run_id, name, status);

CREATE TABLE artefacts (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  migration_id TEXT NOT NULL REFERENCES migrations (id) ON DELETE CASCADE,
  kind         TEXT NOT NULL,
  host         TEXT NOT NULL,
  name         TEXT NOT NULL,
  details      TEXT NOT NULL DEFAULT '{}',
  created      TEXT NOT NULL,
  removed      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX artefacts_migration ON artefacts (migration_id, id);
CREATE INDEX artefacts_live ON artefacts (kind, id) WHERE removed = '';

CREATE TABLE progress (
  migration_id      TEXT PRIMARY KEY NOT NULL REFERENCES migrations (id) ON DELETE CASCADE,
  phase             TEXT NOT NULL,
  state             TEXT NOT NULL,
  current           INTEGER NOT NULL,
  total             INTEGER NOT NULL,
  total_approximate INTEGER NOT NULL,
  bytes_per_second  REAL NOT NULL,
  eta_ms            INTEGER NOT NULL,
  message           TEXT NOT NULL,
  updated           TEXT NOT NULL
);

CREATE TABLE leases (
  key       TEXT PRIMARY KEY NOT NULL,
  pid       INTEGER NOT NULL,
  host      TEXT NOT NULL,
  operation TEXT NOT NULL,
  heartbeat TEXT NOT NULL
);
)sql"},
    // The optimistic lock of update_migration: bumped by every update, checked by the next.
    {2, R"sql(
ALTER TABLE migrations ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
)sql"},
    // abort and pause from another shell: at most one request per migration.
    {3, R"sql(
CREATE TABLE stop_requests (
  migration_id TEXT PRIMARY KEY NOT NULL,
  kind         TEXT NOT NULL,
  pid          INTEGER NOT NULL,
  host         TEXT NOT NULL,
  requested    TEXT NOT NULL
);
)sql"},
    // estimate --measure: a link measurement is a record of its own kind (its data-path rows
    // need a record), never shown as a migration of its instance.
    {4, R"sql(
ALTER TABLE migrations ADD COLUMN kind TEXT NOT NULL DEFAULT 'migration';
)sql"},
}};

static_assert(k_upgrades.back().version == SqliteStateStore::k_schema_version,
              "k_schema_version must be the version of the last schema upgrade");

constexpr int k_busy_timeout_ms = 5000;

enum class Durability { normal, full };

// Turns an SQLite failure into the one error shape the CLI prints, with a hint that fits the
// class of failure rather than SQLite's terse text alone.
[[noreturn]] void throw_sqlite(const std::string& path, int rc, const std::string& message,
                               const std::string& doing) {
  const std::string why = fmt::format("{}: {}", doing, message);
  switch (rc & 0xff) {
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    throw TransientError(ExitCode::state, path,
                         fmt::format("{}; another zmigrate process kept the state database "
                                     "locked for more than {} s; retry",
                                     why, k_busy_timeout_ms / 1000));
  case SQLITE_READONLY:
  case SQLITE_CANTOPEN:
  case SQLITE_PERM:
  case SQLITE_AUTH:
    throw Error(ExitCode::state, path,
                fmt::format("{}; check permissions or set --state-dir", why));
  case SQLITE_FULL:
    throw Error(ExitCode::state, path,
                fmt::format("{}; free some space on the filesystem of the state directory", why));
  case SQLITE_NOTADB:
  case SQLITE_CORRUPT:
    throw Error(ExitCode::state, path,
                fmt::format("{}; this is not a usable zmigrate state database (restore it from "
                            "a backup, or set --state-dir to use another one)",
                            why));
  case SQLITE_IOERR:
    throw Error(ExitCode::state, path,
                fmt::format("{}; check the disk and filesystem holding the state directory", why));
  default:
    throw Error(ExitCode::state, path, why);
  }
}

std::string json_text(const nlohmann::json& j) {
  // Error strings copied from remote stderr may carry invalid UTF-8: keep them, never throw.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// A process we may not signal (EPERM) is alive too; only ESRCH (or anything else) is "gone".
bool pid_alive(int pid) {
  if (pid <= 0) {
    return false; // kill(0 or -n) would address process groups
  }
  return kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

std::string local_hostname() {
  std::array<char, HOST_NAME_MAX + 1> buf{};
  if (gethostname(buf.data(), buf.size() - 1) != 0) {
    return "localhost";
  }
  return std::string(buf.data());
}

// mkdir -p for the parents of the database; directories we create are private (0700), those
// that exist are left as the operator made them.
void make_parent_dirs(const std::string& path) {
  const std::string::size_type slash = path.find_last_of('/');
  if (slash == std::string::npos || slash == 0) {
    return;
  }
  const std::string dir = path.substr(0, slash);
  std::string::size_type pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    const std::string part = dir.substr(0, pos);
    if (part.empty()) {
      continue;
    }
    if (mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) {
      throw Error(ExitCode::state, path,
                  fmt::format("cannot open state database: cannot create directory {}: {}; "
                              "check permissions or set --state-dir",
                              part, std::strerror(errno)));
    }
  }
}

// SQLite would create the file with the umask's mode; the VM records it holds are nobody
// else's business, so create it 0600 first (WAL and shm files inherit the database's mode).
// Only a missing file is opened here, and exclusively: closing any descriptor of a file drops
// every POSIX lock this process holds on it, so opening and closing an existing database would
// silently unlock another connection of this process (another thread's store) in the middle of
// its transaction. A file that does not exist yet has no such connection.
void create_private_file(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) == 0) {
    return;
  }
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) {
      return; // another process or thread created it first
    }
    throw Error(ExitCode::state, path,
                fmt::format("cannot open state database: {}; check permissions or set "
                            "--state-dir",
                            std::strerror(errno)));
  }
  close(fd);
}

} // namespace

std::span<const SchemaUpgrade> schema_upgrades() {
  return k_upgrades;
}

std::string SqliteStateStore::default_path(const std::string& state_dir) {
  if (!state_dir.empty() && state_dir.back() == '/') {
    return state_dir + "zmigrate.db";
  }
  return state_dir + "/zmigrate.db";
}

// ---------------------------------------------------------------------------------------------
// Connection, statements and transactions: RAII over the sqlite3 C API.

namespace detail {

class SqliteConnection {
public:
  explicit SqliteConnection(std::string path) : m_path(std::move(path)) {}
  ~SqliteConnection() {
    if (m_db != nullptr) {
      sqlite3_close_v2(m_db);
    }
  }
  SqliteConnection(const SqliteConnection&) = delete;
  SqliteConnection& operator=(const SqliteConnection&) = delete;

  sqlite3* db() const { return m_db; }
  sqlite3** out() { return &m_db; }
  const std::string& path() const { return m_path; }

  [[noreturn]] void fail(int rc, const std::string& doing) const {
    const std::string message = m_db != nullptr ? sqlite3_errmsg(m_db) : sqlite3_errstr(rc);
    throw_sqlite(m_path, rc, message, doing);
  }

  void exec(const char* sql, const std::string& doing) {
    char* err = nullptr;
    const int rc = sqlite3_exec(m_db, sql, nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      const std::string message = err != nullptr ? err : sqlite3_errstr(rc);
      sqlite3_free(err);
      throw_sqlite(m_path, rc, message, doing);
    }
  }

  // Switching synchronous is only allowed outside a transaction, so Transaction does it
  // before BEGIN and only when the level changes.
  void set_durability(Durability d) {
    if (d == m_durability) {
      return;
    }
    exec(d == Durability::full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
         "cannot set synchronous mode");
    m_durability = d;
  }

private:
  std::string m_path;
  sqlite3* m_db = nullptr;
  Durability m_durability = Durability::normal;
};

} // namespace detail

namespace {

using Connection = detail::SqliteConnection;

class Statement {
public:
  Statement(Connection& c, const char* sql, std::string doing)
      : m_conn(c), m_doing(std::move(doing)) {
    const int rc = sqlite3_prepare_v2(c.db(), sql, -1, &m_stmt, nullptr);
    if (rc != SQLITE_OK) {
      c.fail(rc, m_doing);
    }
  }
  ~Statement() { sqlite3_finalize(m_stmt); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& text(int i, const std::string& v) {
    check(sqlite3_bind_text(m_stmt, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Statement& json(int i, const nlohmann::json& v) { return text(i, json_text(v)); }
  Statement& integer(int i, std::int64_t v) {
    check(sqlite3_bind_int64(m_stmt, i, v));
    return *this;
  }
  Statement& real(int i, double v) {
    check(sqlite3_bind_double(m_stmt, i, v));
    return *this;
  }
  Statement& null(int i) {
    check(sqlite3_bind_null(m_stmt, i));
    return *this;
  }

  // True when a row is ready, false when the statement is done.
  bool step() {
    const int rc = sqlite3_step(m_stmt);
    if (rc == SQLITE_ROW) {
      return true;
    }
    if (rc == SQLITE_DONE) {
      return false;
    }
    m_conn.fail(rc, m_doing);
  }
  // Runs a statement that returns no rows; returns the number of rows changed.
  int run() {
    while (step()) {
    }
    return sqlite3_changes(m_conn.db());
  }
  // The primary result code of the last failed step, for callers that map constraints.
  int try_run() {
    int rc = SQLITE_ROW;
    while (rc == SQLITE_ROW) {
      rc = sqlite3_step(m_stmt);
    }
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
  }

  std::string col_text(int i) const {
    const unsigned char* p = sqlite3_column_text(m_stmt, i);
    if (p == nullptr) {
      return {};
    }
    return std::string(reinterpret_cast<const char*>(p),
                       static_cast<std::size_t>(sqlite3_column_bytes(m_stmt, i)));
  }
  std::int64_t col_int(int i) const { return sqlite3_column_int64(m_stmt, i); }
  double col_real(int i) const { return sqlite3_column_double(m_stmt, i); }
  nlohmann::json col_json(int i) const {
    const std::string t = col_text(i);
    if (t.empty()) {
      return nlohmann::json::object();
    }
    nlohmann::json j = nlohmann::json::parse(t, nullptr, false);
    if (j.is_discarded()) {
      throw Error(ExitCode::state, m_conn.path(),
                  fmt::format("{}: corrupt JSON in column {}; restore the state database from "
                              "a backup",
                              m_doing, sqlite3_column_name(m_stmt, i)));
    }
    return j;
  }

private:
  void check(int rc) {
    if (rc != SQLITE_OK) {
      m_conn.fail(rc, m_doing);
    }
  }

  Connection& m_conn;
  std::string m_doing;
  sqlite3_stmt* m_stmt = nullptr;
};

// `PRAGMA journal_mode=WAL`, returning the mode in force. On a file that is not WAL yet (a new
// state directory) the pragma reads the header under a shared lock, then upgrades it to write
// the new mode; SQLite answers that upgrade with SQLITE_BUSY at once, without the busy handler,
// when another connection holds a lock, so several zmigrate processes starting together on a
// new state directory fail there even though nobody keeps the database locked. Only this pragma
// is retried, with a jittered backoff, for as long as the busy timeout; once the file is WAL the
// pragma takes a read lock only (which waits in the busy handler) and writes nothing.
std::string enable_wal(Connection& c, const std::string& doing) {
  using SteadyClock = std::chrono::steady_clock;
  const SteadyClock::time_point deadline =
      SteadyClock::now() + std::chrono::milliseconds(k_busy_timeout_ms);
  std::minstd_rand jitter(static_cast<std::minstd_rand::result_type>(
      static_cast<unsigned>(getpid()) ^
      static_cast<unsigned>(SteadyClock::now().time_since_epoch().count())));
  int ceiling_ms = 2;
  while (true) {
    sqlite3_stmt* st = nullptr;
    int rc = sqlite3_prepare_v2(c.db(), "PRAGMA journal_mode=WAL", -1, &st, nullptr);
    std::string mode;
    if (rc == SQLITE_OK) {
      rc = sqlite3_step(st);
      if (rc == SQLITE_ROW) {
        const unsigned char* text = sqlite3_column_text(st, 0);
        mode = text != nullptr ? reinterpret_cast<const char*>(text) : "";
      }
    }
    // The error message belongs to the connection until the next call: keep it for fail().
    const std::string message = rc == SQLITE_ROW || rc == SQLITE_DONE || rc == SQLITE_OK
                                    ? std::string()
                                    : std::string(sqlite3_errmsg(c.db()));
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
      return mode;
    }
    if ((rc & 0xff) != SQLITE_BUSY || SteadyClock::now() >= deadline) {
      throw_sqlite(c.path(), rc, message, doing);
    }
    // Sleeping a random part of a growing ceiling keeps the openers from retrying in step.
    std::uniform_int_distribution<int> pause_ms(1, ceiling_ms);
    std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms(jitter)));
    ceiling_ms = std::min(ceiling_ms * 2, 50);
  }
}

// One transaction. Writes take the write lock up front (IMMEDIATE) so that two processes never
// both read, then both try to upgrade to a write and deadlock into SQLITE_BUSY. commit() is
// explicit; the destructor only ever rolls back.
class Transaction {
public:
  enum class Kind { read, write };
  Transaction(Connection& c, Kind kind, Durability durability, std::string doing)
      : m_conn(c), m_doing(std::move(doing)) {
    if (kind == Kind::write) {
      m_conn.set_durability(durability);
    }
    m_conn.exec(kind == Kind::write ? "BEGIN IMMEDIATE" : "BEGIN", m_doing);
    m_open = true;
  }
  ~Transaction() {
    if (m_open && sqlite3_get_autocommit(m_conn.db()) == 0) {
      sqlite3_exec(m_conn.db(), "ROLLBACK", nullptr, nullptr, nullptr);
    }
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  void commit() {
    m_conn.exec("COMMIT", m_doing);
    m_open = false;
  }

private:
  Connection& m_conn;
  std::string m_doing;
  bool m_open = false;
};

constexpr const char* k_migration_columns =
    "id, vm_uuid, source_server_uuid, target_server_uuid, phase, state, automatic, archived, "
    "num_sync_phases, created, finished, error, data, version, kind";

Migration read_migration(const Statement& st) {
  Migration m;
  m.id = st.col_text(0);
  m.vm_uuid = st.col_text(1);
  m.source_server_uuid = st.col_text(2);
  m.target_server_uuid = st.col_text(3);
  m.phase = phase_from_string(st.col_text(4));
  m.state = state_from_string(st.col_text(5));
  m.automatic = st.col_int(6) != 0;
  m.archived = st.col_int(7) != 0;
  m.num_sync_phases = static_cast<int>(st.col_int(8));
  m.created = st.col_text(9);
  m.finished = st.col_text(10);
  m.error = st.col_text(11);
  m.data = st.col_json(12);
  m.version = st.col_int(13);
  m.kind = st.col_text(14);
  return m;
}

void bind_migration(Statement& st, const Migration& m, const std::string& created) {
  st.text(1, m.id)
      .text(2, m.vm_uuid)
      .text(3, m.source_server_uuid)
      .text(4, m.target_server_uuid)
      .text(5, to_string(m.phase))
      .text(6, to_string(m.state))
      .integer(7, m.automatic ? 1 : 0)
      .integer(8, m.archived ? 1 : 0)
      .integer(9, m.num_sync_phases)
      .text(10, created)
      .text(11, m.finished)
      .text(12, m.error)
      .json(13, m.data)
      .integer(14, m.version)
      .text(15, m.kind);
}

void load_history(Connection& c, Migration& m) {
  Statement st(c,
               "SELECT id, phase, state, message, error, started, finished, current_progress, "
               "total_progress, details FROM phase_runs WHERE migration_id = ?1 ORDER BY id",
               "cannot read the phase history");
  st.text(1, m.id);
  m.history.clear();
  while (st.step()) {
    PhaseRun r;
    r.id = st.col_int(0);
    r.phase = phase_from_string(st.col_text(1));
    r.state = state_from_string(st.col_text(2));
    r.message = st.col_text(3);
    r.error = st.col_text(4);
    r.started = st.col_text(5);
    r.finished = st.col_text(6);
    r.current_progress = static_cast<std::uint64_t>(st.col_int(7));
    r.total_progress = static_cast<std::uint64_t>(st.col_int(8));
    r.details = st.col_json(9);
    m.history.push_back(std::move(r));
  }
}

std::vector<Migration> query_migrations(Connection& c, Statement& st) {
  std::vector<Migration> out;
  while (st.step()) {
    out.push_back(read_migration(st));
  }
  for (Migration& m : out) {
    load_history(c, m);
  }
  return out;
}

// The newest migration matching `where` (one text parameter ?1), with its history.
std::optional<Migration> select_one_migration(Connection& c, const char* where,
                                              const std::string& arg, const std::string& doing) {
  Statement st(c,
               fmt::format("SELECT {} FROM migrations WHERE {} ORDER BY created DESC, rowid "
                           "DESC LIMIT 1",
                           k_migration_columns, where)
                   .c_str(),
               doing);
  st.text(1, arg);
  std::vector<Migration> found = query_migrations(c, st);
  if (found.empty()) {
    return std::nullopt;
  }
  return std::move(found.front());
}

std::int64_t insert_phase_run(Connection& c, const std::string& migration_id, const PhaseRun& r,
                              const std::string& started) {
  Statement st(c,
               "INSERT INTO phase_runs (migration_id, phase, state, message, error, started, "
               "finished, current_progress, total_progress, details) "
               "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
               fmt::format("cannot record a phase run of migration {}", migration_id));
  st.text(1, migration_id)
      .text(2, to_string(r.phase))
      .text(3, to_string(r.state))
      .text(4, r.message)
      .text(5, r.error)
      .text(6, started)
      .text(7, r.finished)
      .integer(8, static_cast<std::int64_t>(r.current_progress))
      .integer(9, static_cast<std::int64_t>(r.total_progress))
      .json(10, r.details);
  const int rc = st.try_run();
  if ((rc & 0xff) == SQLITE_CONSTRAINT) {
    throw Error(ExitCode::state, fmt::format("migration {}", migration_id),
                "no such migration in the state database (cannot add a phase run)");
  }
  if (rc != SQLITE_OK) {
    c.fail(rc, fmt::format("cannot record a phase run of migration {}", migration_id));
  }
  return sqlite3_last_insert_rowid(c.db());
}

Step read_step(const Statement& st) {
  Step s;
  s.id = st.col_int(0);
  s.migration_id = st.col_text(1);
  s.phase_run_id = st.col_int(2);
  s.name = st.col_text(3);
  s.status = st.col_text(4);
  s.started = st.col_text(5);
  s.finished = st.col_text(6);
  s.details = st.col_json(7);
  return s;
}

constexpr const char* k_step_columns =
    "id, migration_id, COALESCE(phase_run_id, 0), name, status, started, finished, details";

Artefact read_artefact(const Statement& st) {
  Artefact a;
  a.id = st.col_int(0);
  a.migration_id = st.col_text(1);
  a.kind = st.col_text(2);
  a.host = st.col_text(3);
  a.name = st.col_text(4);
  a.details = st.col_json(5);
  a.created = st.col_text(6);
  a.removed = st.col_text(7);
  return a;
}

constexpr const char* k_artefact_columns =
    "id, migration_id, kind, host, name, details, created, removed";

std::optional<Lease> read_lease(Connection& c, const std::string& key) {
  Statement st(c, "SELECT key, pid, host, operation, heartbeat FROM leases WHERE key = ?1",
               fmt::format("cannot read the lease of {}", key));
  st.text(1, key);
  if (!st.step()) {
    return std::nullopt;
  }
  Lease l;
  l.migration_id = st.col_text(0);
  l.pid = static_cast<int>(st.col_int(1));
  l.host = st.col_text(2);
  l.operation = st.col_text(3);
  l.heartbeat = st.col_text(4);
  return l;
}

} // namespace

// ---------------------------------------------------------------------------------------------
// Opening and schema upgrades.

SqliteStateStore::SqliteStateStore(const std::string& path)
    : m_path(path), m_own_clock(std::make_unique<SystemClock>()), m_clock(m_own_clock.get()),
      m_hostname(local_hostname()) {
  open(schema_upgrades());
}

SqliteStateStore::SqliteStateStore(const std::string& path, const Clock& clock,
                                   std::span<const SchemaUpgrade> upgrades)
    : m_path(path), m_clock(&clock), m_hostname(local_hostname()) {
  open(upgrades);
}

SqliteStateStore::~SqliteStateStore() = default;

void SqliteStateStore::open(std::span<const SchemaUpgrade> upgrades) {
  for (std::size_t i = 0; i < upgrades.size(); ++i) {
    if (upgrades[i].version != static_cast<int>(i) + 1) {
      throw std::logic_error("schema upgrades must be numbered 1, 2, 3, ... without gaps");
    }
  }
  const bool in_memory = m_path == ":memory:";
  if (m_path.empty()) {
    throw Error(ExitCode::state, "state database", "no path given; set --state-dir");
  }
  if (!in_memory) {
    make_parent_dirs(m_path);
    create_private_file(m_path);
  }

  m_db = std::make_unique<Connection>(m_path);
  const std::string doing = "cannot open state database";
  const int rc =
      sqlite3_open_v2(m_path.c_str(), m_db->out(),
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    m_db->fail(rc, doing);
  }
  sqlite3_extended_result_codes(m_db->db(), 1);
  sqlite3_busy_timeout(m_db->db(), k_busy_timeout_ms);
  if (sqlite3_db_readonly(m_db->db(), "main") == 1) {
    throw_sqlite(m_path, SQLITE_READONLY, "the file is read-only", doing);
  }

  {
    // journal_mode answers with the mode in force; anything but "wal" on a file means the
    // filesystem cannot do WAL (e.g. NFS) and crash safety would silently weaken.
    const std::string mode = enable_wal(*m_db, doing);
    if (!in_memory && mode != "wal") {
      throw Error(ExitCode::state, m_path,
                  fmt::format("{}: cannot enable the WAL journal (journal mode is '{}'); put "
                              "the state directory on a local filesystem",
                              doing, mode));
    }
  }
  m_db->exec("PRAGMA synchronous=NORMAL", doing);
  m_db->exec("PRAGMA foreign_keys=ON", doing);
  upgrade_schema(upgrades);
}

int SqliteStateStore::schema_version() {
  std::lock_guard lock(m_mutex);
  return read_user_version();
}

int SqliteStateStore::read_user_version() {
  Statement st(*m_db, "PRAGMA user_version", "cannot open state database");
  return st.step() ? static_cast<int>(st.col_int(0)) : 0;
}

void SqliteStateStore::upgrade_schema(std::span<const SchemaUpgrade> upgrades) {
  const int latest = upgrades.empty() ? 0 : upgrades.back().version;
  const auto refuse_newer = [&](int found) {
    if (found > latest) {
      throw Error(ExitCode::state, m_path,
                  fmt::format("schema version {} is newer than this zmigrate supports ({}); "
                              "upgrade zmigrate",
                              found, latest));
    }
  };
  int version = read_user_version();
  refuse_newer(version);
  if (version == latest) {
    return;
  }
  const std::string doing = fmt::format(
      "cannot upgrade the state database from schema version {} to {}", version, latest);
  Transaction tx(*m_db, Transaction::Kind::write, Durability::full, doing);
  // Another process may have upgraded it while we waited for the write lock.
  version = read_user_version();
  refuse_newer(version);
  for (const SchemaUpgrade& u : upgrades) {
    if (u.version <= version) {
      continue;
    }
    m_db->exec(u.sql, doing);
    m_db->exec(fmt::format("PRAGMA user_version = {}", u.version).c_str(), doing);
  }
  tx.commit();
}

std::string SqliteStateStore::now() const {
  return iso8601(m_clock->wall_now());
}

// ---------------------------------------------------------------------------------------------
// Migrations.

void SqliteStateStore::insert_migration(const Migration& m) {
  std::lock_guard lock(m_mutex);
  const std::string doing = fmt::format("cannot record migration {}", m.id);
  Transaction tx(*m_db, Transaction::Kind::write, Durability::full, doing);
  {
    Statement st(*m_db,
                 "INSERT INTO migrations (id, vm_uuid, source_server_uuid, target_server_uuid, "
                 "phase, state, automatic, archived, num_sync_phases, created, finished, error, "
                 "data, version, kind) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
                 "?13, ?14, ?15)",
                 doing);
    bind_migration(st, m, m.created.empty() ? now() : m.created);
    const int rc = st.try_run();
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
      throw Error(ExitCode::state, fmt::format("migration {}", m.id),
                  "a migration with this id already exists in the state database");
    }
    if (rc == SQLITE_CONSTRAINT_UNIQUE) {
      const std::optional<Migration> active = find_active_unlocked(m.vm_uuid);
      throw PreconditionError(
          fmt::format("instance {}", m.vm_uuid),
          fmt::format("an active migration {} already exists for this instance (another "
                      "zmigrate may have just started it); see \"zmigrate list\"",
                      active ? active->id : std::string("(unknown)")));
    }
    if (rc != SQLITE_OK) {
      m_db->fail(rc, doing);
    }
  }
  for (const PhaseRun& r : m.history) {
    insert_phase_run(*m_db, m.id, r, r.started.empty() ? now() : r.started);
  }
  tx.commit();
}

void SqliteStateStore::update_migration(Migration& m) {
  std::lock_guard lock(m_mutex);
  const std::string doing = fmt::format("cannot update migration {}", m.id);
  Transaction tx(*m_db, Transaction::Kind::write, Durability::full, doing);
  {
    Statement st(*m_db,
                 "UPDATE migrations SET vm_uuid = ?2, source_server_uuid = ?3, "
                 "target_server_uuid = ?4, phase = ?5, state = ?6, automatic = ?7, "
                 "archived = ?8, num_sync_phases = ?9, "
                 "created = COALESCE(NULLIF(?10, ''), created), finished = ?11, error = ?12, "
                 "data = ?13, kind = ?15, version = version + 1 WHERE id = ?1 AND version = ?14",
                 doing);
    bind_migration(st, m, m.created);
    const int rc = st.try_run();
    if (rc == SQLITE_CONSTRAINT_UNIQUE) {
      throw PreconditionError(fmt::format("instance {}", m.vm_uuid),
                              fmt::format("cannot reactivate migration {}: the instance already "
                                          "has another active migration",
                                          m.id));
    }
    if (rc != SQLITE_OK) {
      m_db->fail(rc, doing);
    }
  }
  if (sqlite3_changes(m_db->db()) == 0) {
    Statement st(*m_db, "SELECT version FROM migrations WHERE id = ?1", doing);
    st.text(1, m.id);
    if (!st.step()) {
      throw Error(ExitCode::state, fmt::format("migration {}", m.id),
                  "no such migration in the state database (cannot update it)");
    }
    throw Error(ExitCode::state, fmt::format("migration {}", m.id),
                fmt::format("lost update refused: the record changed under this process "
                            "(version {} in the state database, {} when this process read it), "
                            "so another zmigrate process wrote it; nothing was written. See "
                            "\"zmigrate get {}\" and rerun the command",
                            st.col_int(0), m.version, m.vm_uuid));
  }
  tx.commit();
  ++m.version;
}

std::optional<Migration> SqliteStateStore::find_active_unlocked(const std::string& vm_uuid) {
  return select_one_migration(*m_db, "vm_uuid = ?1 AND archived = 0 AND kind = 'migration'",
                              vm_uuid,
                              fmt::format("cannot read the migrations of instance {}", vm_uuid));
}

std::optional<Migration> SqliteStateStore::find_migration(const std::string& id) {
  std::lock_guard lock(m_mutex);
  const std::string doing = fmt::format("cannot read migration {}", id);
  Transaction tx(*m_db, Transaction::Kind::read, Durability::normal, doing);
  std::optional<Migration> m = select_one_migration(*m_db, "id = ?1", id, doing);
  tx.commit();
  return m;
}

std::optional<Migration> SqliteStateStore::find_active_for_vm(const std::string& vm_uuid) {
  std::lock_guard lock(m_mutex);
  Transaction tx(*m_db, Transaction::Kind::read, Durability::normal,
                 fmt::format("cannot read the migrations of instance {}", vm_uuid));
  std::optional<Migration> m = find_active_unlocked(vm_uuid);
  tx.commit();
  return m;
}

std::optional<Migration> SqliteStateStore::find_latest_for_vm(const std::string& vm_uuid) {
  std::lock_guard lock(m_mutex);
  const std::string doing = fmt::format("cannot read the migrations of instance {}", vm_uuid);
  Transaction tx(*m_db, Transaction::Kind::read, Durability::normal, doing);
  std::optional<Migration> m =
      select_one_migration(*m_db, "vm_uuid = ?1 AND kind = 'migration'", vm_uuid, doing);
  tx.commit();
  return m;
}

std::vector<Migration> SqliteStateStore::list_migrations(const ListFilter& filter) {
  std::lock_guard lock(m_mutex);
  const std::string doing = "cannot list migrations";
  Transaction tx(*m_db, Transaction::Kind::read, Durability::normal, doing);
  Statement st(*m_db,
               fmt::format("SELECT {} FROM migrations "
                           "WHERE (?1 IS NULL OR state = ?1) "
                           "AND (?2 = '' OR source_server_uuid = ?2 OR target_server_uuid = ?2) "
                           "AND (?3 OR archived = 0) "
                           "AND kind = ?4 "
                           "ORDER BY created DESC, rowid DESC LIMIT ?5",
                           k_migration_columns)
                   .c_str(),
               doing);
  if (filter.state) {
    st.text(1, to_string(*filter.state));
  } else {
    st.null(1);
  }
  st.text(2, filter.server_uuid)
      .integer(3, filter.include_archived ? 1 : 0)
      .text(4, filter.kind)
      .integer(5, filter.limit == 0 ? -1 : static_cast<std::int64_t>(filter.limit));
  std::vector<Migration> out = query_migrations(*m_db, st);
  tx.commit();
  return out;
}

// ---------------------------------------------------------------------------------------------
// Phase runs.

std::int64_t SqliteStateStore::add_phase_run(const std::string& migration_id, const PhaseRun& r) {
  std::lock_guard lock(m_mutex);
  const std::string doing = fmt::format("cannot record a phase run of migration {}", migration_id);
  Transaction tx(*m_db, Transaction::Kind::write, Durability::full, doing);
  const std::int64_t id =
      insert_phase_run(*m_db, migration_id, r, r.started.empty() ? now() : r.started);
  tx.commit();
  return id;
}

void SqliteStateStore::update_phase_run(const std::string& migration_id, const PhaseRun& r) {
  std::lock_guard lock(m_mutex);
  const std::string doing =
      fmt::format("cannot update phase run {} of migration {}", r.id, migration_id);
  Transaction tx(*m_db, Transaction::Kind::write, Durability::full, doing);
  Statement st(*m_db,
               "UPDATE phase_runs SET phase = ?3, state = ?4, message = ?5, error = ?6, "
               "started = COALESCE(NULLIF(?7, ''), started), finished = ?8, "
               "current_progress = ?9, total_progress = ?10, details = ?11 "
               "WHERE id = ?1 AND migration_id = ?2",
               doing);
  st.integer(1, r.id)
      .text(2, migration_id)
      .text(3, to_string(r.phase))
      .text(4, to_string(r.state))
      .text(5, r.message)
      .text(6, r.error)
      .text(7, r.started)
      .text(8, r.finished)
      .integer(9, static_cast<std::int64_t>(r.current_progress))
      .integer(10, static_cast<std::int64_t>(r.total_progress))
      .json(11, r.details);
  if (st.run() == 0) {
    throw Error(ExitCode::state, fmt::format("migration {}", migration_id),
                fmt::format("no phase run {} in the state database (cannot update it)", r.id));
  }
  tx.commit();
}

// ---------------------------------------------------------------------------------------------
// Journal.

std::int64_t SqliteStateStore::begin_step(const Step& s) {
  std::lock_guard lock(m_mutex);
  const std::string doing =
      fmt::format("cannot journal step {} of migration {}", s.name, s.migration_id);
  Transaction tx(*m_db, Transaction::Kind::write, Durability::full, doing);
  Statement st(*m_db,
               "INSERT INTO steps (migration_id, phase_run_id, name, status, started, finished, "
               "details) VALUES (?1, ?2, ?3, 'running', ?4, '', ?5)",
               doing);
  st.text(1, s.migration_id);
  if (s.phase_run_id == 0) {
    st.null(2);
  } else {
    st.integer(2, s.phase_run_id);
  }
  st.text(3, s.name).text(4, s.started.empty() ? now() : s.started).json(5, s.details);
  const int rc = st.try_run();
  if ((rc & 0xff) == SQLITE_CONSTRAINT) {
    throw Error(ExitCode::state, fmt::format("migration {}", s.migration_id),
                fmt::format("cannot journal step {}: no such migration or phase run {} in the "
                            "state database",
                            s.name, s.phase_run_id));
  }
  if (rc != SQLITE_OK) {
    m_db->fail(rc, doing);
  }
  const std::int64_t id = sqlite3_last_insert_rowid(m_db->db());
  tx.commit();
  return id;
}

void SqliteStateStore::end_step(std::int64_t step_id, const std::string& status,
                                const nlohmann::json& details) {
  std::lock_guard lock(m_mutex);
  const std::string doing = fmt::format("cannot finish journal step {}", step_id);
  Transaction tx(*m_db, Transaction::Kind::write, Durability::full, doing);
  nlohmann::json merged;
  {
    Statement st(*m_db, "SELECT details FROM steps WHERE id = ?1", doing);
    st.integer(1, step_id);
    if (!st.step()) {
      throw Error(ExitCode::state, fmt::format("journal step {}", step_id),
                  "no such step in the state database (cannot finish it)");
    }
    merged = st.col_json(0);
  }
  if (merged.is_object() && details.is_object()) {
    merged.update(details);
  } else if (!details.is_null()) {
    merged = details;
  }
  Statement st(*m_db, "UPDATE steps SET status = ?2, finished = ?3, details = ?4 WHERE id = ?1",
               doing);
  st.integer(1, step_id).text(2, status).text(3, now()).json(4, merged);
  st.run();
  tx.commit();
}

std::vector<Step> SqliteStateStore::steps(const std::string& migration_id, std::int64_t after_id) {
  std::lock_guard lock(m_mutex);
  const std::string doing = fmt::format("cannot read the journal of migration {}", migration_id);
  Statement st(*m_db,
               fmt::format("SELECT {} FROM steps WHERE migration_id = ?1 AND id > ?2 ORDER BY id",
                           k_step_columns)
                   .c_str(),
               doing);
  st.text(1, migration_id).integer(2, after_id);
  std::vector<Step> out;
  while (st.step()) {
    out.push_back(read_step(st));
  }
  return out;
}

std::optional<Step> SqliteStateStore::completed_step(std::int64_t phase_run_id,
                                                     const std::string& name) {
  std::lock_guard lock(m_mutex);
  const std::string doing = fmt::format("cannot read the journal of phase run {}", phase_run_id);
  Statement st(*m_db,
               fmt::format("SELECT {} FROM steps WHERE phase_run_id = ?1 AND name = ?2 AND "
                           "status = 'ok' ORDER BY id DESC LIMIT 1",
                           k_step_columns)
                   .c_str(),
               doing);
  st.integer(1, phase_run_id).text(2, name);
  if (!st.step()) {
    return std::nullopt;
  }
  return read_step(st);
}

// ---------------------------------------------------------------------------------------------
// Ledger.

std::int64_t SqliteStateStore::record_artefact(const Artefact& a) {
  std::lock_guard lock(m_mutex);
  const std::string doing = fmt::format("cannot record {} {} on {} for migration {}", a.kind,
                                        a.name, a.host, a.migration_id);
  Transaction tx(*m_db, Transaction::Kind::write, Durability::full, doing);
  std::int64_t id = 0;
  {
    Statement st(*m_db,
                 "SELECT id FROM artefacts WHERE migration_id = ?1 AND kind = ?2 AND host = ?3 "
                 "AND name = ?4 AND removed = '' ORDER BY id LIMIT 1",
                 doing);
    st.text(1, a.migration_id).text(2, a.kind).text(3, a.host).text(4, a.name);
    if (st.step()) {
      id = st.col_int(0);
    }
  }
  if (id != 0) {
    Statement st(*m_db, "UPDATE artefacts SET details = ?2 WHERE id = ?1", doing);
    st.integer(1, id).json(2, a.details);
    st.run();
  } else {
    Statement st(*m_db,
                 "INSERT INTO artefacts (migration_id, kind, host, name, details, created, "
                 "removed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, '')",
                 doing);
    st.text(1, a.migration_id)
        .text(2, a.kind)
        .text(3, a.host)
        .text(4, a.name)
        .json(5, a.details)
        .text(6, a.created.empty() ? now() : a.created);
    const int rc = st.try_run();
    if ((rc & 0xff) == SQLITE_CONSTRAINT) {
      throw Error(ExitCode::state, fmt::format("migration {}", a.migration_id),
                  fmt::format("cannot record {} {}: no such migration in the state database",
                              a.kind, a.name));
    }
    if (rc != SQLITE_OK) {
      m_db->fail(rc, doing);
    }
    id = sqlite3_last_insert_rowid(m_db->db());
  }
  tx.commit();
  return id;
}

void SqliteStateStore::mark_artefact_removed(std::int64_t id) {
  std::lock_guard lock(m_mutex);
  const std::string doing = fmt::format("cannot mark artefact {} removed", id);
  Transaction tx(*m_db, Transaction::Kind::write, Durability::full, doing);
  Statement st(*m_db,
               "UPDATE artefacts SET removed = CASE WHEN removed = '' THEN ?2 ELSE removed END "
               "WHERE id = ?1",
               doing);
  st.integer(1, id).text(2, now());
  if (st.run() == 0) {
    throw Error(ExitCode::state, fmt::format("artefact {}", id),
                "no such artefact in the state database");
  }
  tx.commit();
}

std::vector<Artefact> SqliteStateStore::live_artefacts(const std::string& migration_id) {
  std::lock_guard lock(m_mutex);
  Statement st(*m_db,
               fmt::format("SELECT {} FROM artefacts WHERE migration_id = ?1 AND removed = '' "
                           "ORDER BY id",
                           k_artefact_columns)
                   .c_str(),
               fmt::format("cannot read the artefacts of migration {}", migration_id));
  st.text(1, migration_id);
  std::vector<Artefact> out;
  while (st.step()) {
    out.push_back(read_artefact(st));
  }
  return out;
}

std::vector<Artefact> SqliteStateStore::all_live_artefacts(const std::string& kind) {
  std::lock_guard lock(m_mutex);
  Statement st(*m_db,
               fmt::format("SELECT {} FROM artefacts WHERE (?1 = '' OR kind = ?1) AND "
                           "removed = '' ORDER BY id",
                           k_artefact_columns)
                   .c_str(),
               "cannot read the artefact ledger");
  st.text(1, kind);
  std::vector<Artefact> out;
  while (st.step()) {
    out.push_back(read_artefact(st));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Progress.

void SqliteStateStore::put_progress(const Progress& p) {
  std::lock_guard lock(m_mutex);
  const std::string doing =
      fmt::format("cannot record the progress of migration {}", p.migration_id);
  Transaction tx(*m_db, Transaction::Kind::write, Durability::normal, doing);
  Statement st(*m_db,
               "INSERT INTO progress (migration_id, phase, state, current, total, "
               "total_approximate, bytes_per_second, eta_ms, message, updated) "
               "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
               "ON CONFLICT (migration_id) DO UPDATE SET phase = excluded.phase, "
               "state = excluded.state, current = excluded.current, total = excluded.total, "
               "total_approximate = excluded.total_approximate, "
               "bytes_per_second = excluded.bytes_per_second, eta_ms = excluded.eta_ms, "
               "message = excluded.message, updated = excluded.updated",
               doing);
  st.text(1, p.migration_id)
      .text(2, to_string(p.phase))
      .text(3, to_string(p.state))
      .integer(4, static_cast<std::int64_t>(p.current))
      .integer(5, static_cast<std::int64_t>(p.total))
      .integer(6, p.total_approximate ? 1 : 0)
      .real(7, p.bytes_per_second)
      .integer(8, p.eta_ms)
      .text(9, p.message)
      .text(10, p.updated.empty() ? now() : p.updated);
  const int rc = st.try_run();
  if ((rc & 0xff) == SQLITE_CONSTRAINT) {
    throw Error(ExitCode::state, fmt::format("migration {}", p.migration_id),
                "no such migration in the state database (cannot record its progress)");
  }
  if (rc != SQLITE_OK) {
    m_db->fail(rc, doing);
  }
  tx.commit();
}

std::optional<Progress> SqliteStateStore::get_progress(const std::string& migration_id) {
  std::lock_guard lock(m_mutex);
  Statement st(*m_db,
               "SELECT migration_id, phase, state, current, total, total_approximate, "
               "bytes_per_second, eta_ms, message, updated FROM progress WHERE migration_id = ?1",
               fmt::format("cannot read the progress of migration {}", migration_id));
  st.text(1, migration_id);
  if (!st.step()) {
    return std::nullopt;
  }
  Progress p;
  p.migration_id = st.col_text(0);
  p.phase = phase_from_string(st.col_text(1));
  p.state = state_from_string(st.col_text(2));
  p.current = static_cast<std::uint64_t>(st.col_int(3));
  p.total = static_cast<std::uint64_t>(st.col_int(4));
  p.total_approximate = st.col_int(5) != 0;
  p.bytes_per_second = st.col_real(6);
  p.eta_ms = st.col_int(7);
  p.message = st.col_text(8);
  p.updated = st.col_text(9);
  return p;
}

// ---------------------------------------------------------------------------------------------
// Leases.

bool SqliteStateStore::lease_is_stale(const Lease& holder, int stale_after_s) const {
  if (holder.host == m_hostname) {
    // A live process here is never stale, however old its heartbeat: it may be in a long
    // silent command, and two processes working on one migration is the thing to prevent.
    return !pid_alive(holder.pid);
  }
  // Another host's pid cannot be checked: only the heartbeat's age says anything.
  if (stale_after_s <= 0) {
    return false;
  }
  try {
    const auto age = m_clock->wall_now() - parse_iso8601(holder.heartbeat);
    return age > std::chrono::seconds(stale_after_s);
  } catch (const Error&) {
    return true; // an unreadable heartbeat proves nothing about a live holder
  }
}

std::optional<Lease> SqliteStateStore::try_acquire_lease(const Lease& lease, int stale_after_s,
                                                         bool take_over_remote) {
  std::lock_guard lock(m_mutex);
  Lease want = lease;
  if (want.host.empty()) {
    want.host = m_hostname;
  }
  if (want.pid == 0) {
    want.pid = static_cast<int>(getpid());
  }
  want.heartbeat = now();
  const std::string doing = fmt::format("cannot take the lease of {}", want.migration_id);
  Transaction tx(*m_db, Transaction::Kind::write, Durability::full, doing);
  if (std::optional<Lease> holder = read_lease(*m_db, want.migration_id)) {
    const bool ours = holder->host == want.host && holder->pid == want.pid;
    if (!ours) {
      if (!lease_is_stale(*holder, stale_after_s)) {
        return holder;
      }
      if (holder->host != m_hostname && !take_over_remote) {
        holder->stale_remote = true;
        return holder;
      }
    }
  }
  Statement st(*m_db,
               "INSERT INTO leases (key, pid, host, operation, heartbeat) "
               "VALUES (?1, ?2, ?3, ?4, ?5) "
               "ON CONFLICT (key) DO UPDATE SET pid = excluded.pid, host = excluded.host, "
               "operation = excluded.operation, heartbeat = excluded.heartbeat",
               doing);
  st.text(1, want.migration_id)
      .integer(2, want.pid)
      .text(3, want.host)
      .text(4, want.operation)
      .text(5, want.heartbeat);
  st.run();
  tx.commit();
  m_lease_hosts[want.migration_id] = want.host;
  return std::nullopt;
}

const std::string& SqliteStateStore::lease_host(const std::string& key) const {
  const auto it = m_lease_hosts.find(key);
  return it != m_lease_hosts.end() ? it->second : m_hostname;
}

void SqliteStateStore::heartbeat(const std::string& migration_id, int pid) {
  std::lock_guard lock(m_mutex);
  if (pid == 0) {
    pid = static_cast<int>(getpid());
  }
  const std::string doing = fmt::format("cannot refresh the lease of {}", migration_id);
  Transaction tx(*m_db, Transaction::Kind::write, Durability::normal, doing);
  Statement st(*m_db, "UPDATE leases SET heartbeat = ?4 WHERE key = ?1 AND pid = ?2 AND host = ?3",
               doing);
  st.text(1, migration_id).integer(2, pid).text(3, lease_host(migration_id)).text(4, now());
  if (st.run() == 0) {
    const std::optional<Lease> holder = read_lease(*m_db, migration_id);
    throw PreconditionError(
        fmt::format("migration {}", migration_id),
        holder ? fmt::format("lost the lease: zmigrate pid {} on {} took it over (\"{}\") "
                             "because this process looked dead or hung; stopping here",
                             holder->pid, holder->host, holder->operation)
               : std::string("lost the lease: it was released or taken over by another "
                             "zmigrate process; stopping here"));
  }
  tx.commit();
}

void SqliteStateStore::release_lease(const std::string& migration_id, int pid) {
  std::lock_guard lock(m_mutex);
  if (pid == 0) {
    pid = static_cast<int>(getpid());
  }
  const std::string doing = fmt::format("cannot release the lease of {}", migration_id);
  Transaction tx(*m_db, Transaction::Kind::write, Durability::full, doing);
  Statement st(*m_db, "DELETE FROM leases WHERE key = ?1 AND pid = ?2 AND host = ?3", doing);
  st.text(1, migration_id).integer(2, pid).text(3, lease_host(migration_id));
  st.run();
  tx.commit();
  m_lease_hosts.erase(migration_id);
}

std::optional<Lease> SqliteStateStore::find_lease(const std::string& key) {
  std::lock_guard lock(m_mutex);
  return read_lease(*m_db, key);
}

// ---------------------------------------------------------------------------------------------
// Stop requests.

StopOutcome SqliteStateStore::request_stop(const StopRequest& r,
                                           const std::vector<std::string>& unstoppable) {
  std::lock_guard lock(m_mutex);
  const std::string doing =
      fmt::format("cannot record the {} request of {}", r.kind, r.migration_id);
  Transaction tx(*m_db, Transaction::Kind::write, Durability::full, doing);
  StopOutcome out;
  out.holder = read_lease(*m_db, r.migration_id);
  if (out.holder && std::find(unstoppable.begin(), unstoppable.end(), out.holder->operation) !=
                        unstoppable.end()) {
    return out;
  }
  Statement st(*m_db,
               "INSERT INTO stop_requests (migration_id, kind, pid, host, requested) "
               "VALUES (?1, ?2, ?3, ?4, ?5) "
               "ON CONFLICT (migration_id) DO UPDATE SET kind = excluded.kind, pid = excluded.pid, "
               "host = excluded.host, requested = excluded.requested",
               doing);
  st.text(1, r.migration_id)
      .text(2, r.kind)
      .integer(3, r.pid != 0 ? r.pid : static_cast<int>(getpid()))
      .text(4, r.host.empty() ? m_hostname : r.host)
      .text(5, r.requested.empty() ? now() : r.requested);
  st.run();
  tx.commit();
  out.recorded = true;
  return out;
}

std::optional<StopRequest> SqliteStateStore::find_stop_request(const std::string& migration_id) {
  std::lock_guard lock(m_mutex);
  Statement st(*m_db,
               "SELECT migration_id, kind, pid, host, requested FROM stop_requests "
               "WHERE migration_id = ?1",
               fmt::format("cannot read the stop request of {}", migration_id));
  st.text(1, migration_id);
  if (!st.step()) {
    return std::nullopt;
  }
  StopRequest r;
  r.migration_id = st.col_text(0);
  r.kind = st.col_text(1);
  r.pid = static_cast<int>(st.col_int(2));
  r.host = st.col_text(3);
  r.requested = st.col_text(4);
  return r;
}

void SqliteStateStore::clear_stop_request(const std::string& migration_id,
                                          const std::string& requested) {
  std::lock_guard lock(m_mutex);
  const std::string doing = fmt::format("cannot drop the stop request of {}", migration_id);
  Transaction tx(*m_db, Transaction::Kind::write, Durability::normal, doing);
  Statement st(*m_db, "DELETE FROM stop_requests WHERE migration_id = ?1 AND requested = ?2",
               doing);
  st.text(1, migration_id).text(2, requested);
  st.run();
  tx.commit();
}

} // namespace zmigrate::state
