// SPDX-License-Identifier: MPL-2.0
#pragma once
// Subcommand table entries. Each returns the CommandSpec (name, description, options, run) of
// one subcommand; cli/app.cpp lists them in one visible table.

#include <zmigrate/cli/app.hpp>
#include <zmigrate/migration/evacuation_record.hpp>
#include <zmigrate/migration/watch.hpp>
#include <zmigrate/state/records.hpp>
#include <zmigrate/state/store.hpp>
#include <zmigrate/util/clock.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace zmigrate::cli {

CommandSpec migrate_command();
CommandSpec begin_command();
CommandSpec sync_command();
CommandSpec pause_command();
CommandSpec switch_command();
CommandSpec rollback_command();
CommandSpec abort_command();
CommandSpec finalize_command();
CommandSpec estimate_command();
CommandSpec evacuate_command();
CommandSpec restore_command();
// switch --ready CN (in evacuate.cpp, with the evacuation's end table).
int switch_ready_command(Runtime& rt, const std::string& server);
CommandSpec watch_command();
CommandSpec list_command();
CommandSpec get_command();
CommandSpec cleanup_command();

// --max-syncs and --converge, shared by migrate and evacuate.
struct SyncPolicyOptions {
  int max_syncs = -1;   // -1: from the configuration
  std::string converge; // "": from the configuration
};
void add_sync_policy_options(CLI::App& app, SyncPolicyOptions& o);
// The values to use: the options when given, else `config_max_syncs`/`config_converge`.
// Throws UsageError for a malformed --converge.
std::pair<int, std::uint64_t> resolve_sync_policy(const SyncPolicyOptions& o, int config_max_syncs,
                                                  std::uint64_t config_converge);

// --bwlimit RATE: the bytes per second each stream may use ("50M" or "50M/s" = 50 MiB/s,
// 1024-based; 0 = unlimited, also over the configuration's bwlimit).
void add_bwlimit_option(CLI::App& app, std::string& rate, const std::string& help);
// The limit to use: --bwlimit when given (UsageError for a malformed RATE), else `config_bwlimit`.
std::uint64_t resolve_bwlimit(const std::string& rate, std::uint64_t config_bwlimit);

// --- Rendering of list and get (pure; `now` is the wall clock) ---

// Coarse age for tables: "42s", "5m", "3h", "2d".
std::string coarse_age(std::chrono::milliseconds d);
// Time spent in phases: the sum of every phase run's duration, a running one counted up to now.
std::chrono::milliseconds migration_runtime(const state::Migration& m,
                                            std::chrono::system_clock::time_point now);
// "cn1" (the hostname recorded at begin in data.<side>.hostname), else the server UUID.
// `side` is "source" or "target".
std::string server_label(const state::Migration& m, const std::string& side);
// True when `cn` is the UUID or the recorded hostname of the source or target node.
bool involves_server(const state::Migration& m, const std::string& cn);
// True when `m` was begun by an evacuation of `cn` (UUID, or the source's recorded hostname).
bool of_evacuation(const state::Migration& m, const std::string& cn);
// How an evacuation stands, from its migrations (pure): total, moved (switched or finalized),
// finalized, ready (synced, waiting for the switch), running, failed, and the bytes sent so far
// (syncs and final deltas).
struct EvacuationSummary {
  std::size_t total = 0, moved = 0, finalized = 0, ready = 0, running = 0, failed = 0;
  std::uint64_t bytes_sent = 0;
};
EvacuationSummary summarize_evacuation(const std::vector<state::Migration>& migrations);
// "cn1: 5 of 7 moved (4 finalized), 1 ready to switch, 1 running, 0 failed; 21.3MB sent".
std::string evacuation_line(const std::string& server, const EvacuationSummary& s);
// The `list` table: UUID PHASE STATE AGE RUNTIME, with `long_format` also SOURCE_CN TARGET_CN
// ERROR. Always has the header line.
std::string render_list(const std::vector<state::Migration>& migrations, bool long_format,
                        std::chrono::system_clock::time_point now);
// The `get` page: the summary block, then one row per phase run with a marker (✔ ok, ► running,
// x failed; "+ > x" when `unicode` is false), each sync's bytes and rate, the switch downtime
// with its steps, and the live progress of a running transfer.
std::string render_get(const state::Migration& m, const std::optional<state::Progress>& progress,
                       bool unicode, std::chrono::system_clock::time_point now);
// get and watch: the instance (VM) or, excluding it, --evacuation CN with `evacuation_help`.
void add_vm_or_evacuation(CLI::App& app, std::string& vm, std::string& evacuation,
                          const std::string& evacuation_help);

// get --evacuation CN: the newest evacuation or restore of CN (UUID or hostname) as a whole: its
// state, done/total, bytes sent and left, rate and ETA, and per instance its outcome, phase,
// bytes and running transfer. watch --evacuation CN follows it until it ends (exit 0 when every
// instance moved, 1 when one failed or the evacuate process is gone, 130 interrupted).
int get_evacuation(Runtime& rt, const std::string& server);
int watch_evacuation(Runtime& rt, const std::string& server);
std::string render_evacuation(const migration::EvacuationView& v,
                              std::chrono::system_clock::time_point now);
// The lease of a migration as `watch` sees it: the SQLite lease row, with the holder's pid
// checked when it is on this host, else its heartbeat and progress row.
migration::LeaseProbe sqlite_lease_probe(state::StateStore& store, const Clock& clock);

// Whether the locale (LC_ALL, LC_CTYPE, LANG) is UTF-8.
bool utf8_locale();

} // namespace zmigrate::cli
