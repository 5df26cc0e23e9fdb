// SPDX-License-Identifier: MPL-2.0
#pragma once
// Everything a migration command works with, as interfaces. Only main.cpp/cli build the real
// adapters; unit tests pass fakes (tests/fakes/).

#include <zmigrate/inventory/inventory.hpp>
#include <zmigrate/remote/runner.hpp>
#include <zmigrate/state/store.hpp>
#include <zmigrate/util/clock.hpp>
#include <zmigrate/util/log.hpp>
#include <zmigrate/zfs/capabilities.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace zmigrate::migration {

class Link;
class Node;
struct Context;
struct DataPathSpec;

// Gives the engine its nodes and data links: one Node (over one Runner, one SSH session) per
// compute node per zmigrate command. The defaults build the real ones (SmartosNode over
// runner_for, DataPath); engine tests override node(), make_link() and remove_leftover_links()
// with stateful fakes (tests/fakes/fake_node.hpp).
// Which data-link leftovers NodeAccess::remove_leftover_links removes.
enum class Leftovers {
  all,      // every link of the migration not open in this process (switch end, undo, cleanup)
  unparked, // all but a parked one, which the command's own link may adopt (sync, switch start)
};

class NodeAccess {
public:
  NodeAccess();
  virtual ~NodeAccess();
  NodeAccess(const NodeAccess&) = delete;
  NodeAccess& operator=(const NodeAccess&) = delete;
  // The runner for `server` (connects lazily). The reference stays valid for the command.
  virtual remote::Runner& runner_for(const inventory::Server& server) = 0;

  // The node `server` (made on first use). The reference stays valid for the command.
  virtual Node& node(Context& ctx, const inventory::Server& server);
  // A data link from `source` to `target` as `spec` says, not yet open.
  virtual std::unique_ptr<Link> make_link(Context& ctx, const DataPathSpec& spec, Node& source,
                                          Node& target);
  // Remove every data-link artefact of `migration_id` on both nodes as the ledger names them
  // (after a crash); links open in this process are left to their close(), and with
  // Leftovers::unparked a link an earlier command parked (Link::park) is left for this
  // command's link to adopt. Never throws for a node that is unreachable or refuses: leaves its
  // ledger rows live instead (and warns).
  virtual void remove_leftover_links(Context& ctx, const std::string& migration_id, Node& source,
                                     Node& target, Leftovers which);

  // What this command learnt about a node (by runner host), so the phases of one `migrate`
  // probe each node once: ZFS capabilities and the ssh host key.
  struct Facts {
    std::optional<zfs::Capabilities> caps;
    std::string host_key;
  };
  // The facts of `host` (created empty). The reference stays valid for the command.
  Facts& facts_for(const std::string& host) {
    const std::lock_guard<std::mutex> lock(m_facts_mutex);
    return m_facts[host];
  }

  // A data link the running command keeps open across phases (`migrate`: every sync and the
  // switch share one key and one ssh master), or null. Its owner sets and clears it.
  Link* kept_link = nullptr;

private:
  std::mutex m_facts_mutex;
  std::map<std::string, Facts> m_facts;
  std::mutex m_nodes_mutex;
  std::map<std::string, std::unique_ptr<Node>> m_nodes; // by server uuid
};

// Where domain code reports what it is doing; cli/ renders it (sdc-migrate style, or JSON).
class Reporter {
public:
  virtual ~Reporter() = default;
  // "# Migration begin running" style header for a phase.
  virtual void phase_started(const std::string& phase, const std::string& detail) = 0;
  // " - syncing data" style step line.
  virtual void step(const std::string& message) = 0;
  // Byte progress of a transfer; called at most about once a second.
  virtual void progress(const state::Progress& p) = 0;
  // Free-form information (warnings the operator should see, e.g. capability fallbacks).
  virtual void note(const std::string& message) = 0;
};

class NullReporter final : public Reporter {
public:
  void phase_started(const std::string&, const std::string&) override {}
  void step(const std::string&) override {}
  void progress(const state::Progress&) override {}
  void note(const std::string&) override {}
};

// Tunables the engine needs (from Config / flags).
struct Settings {
  double rate_bytes_per_s =
      20.0 * 1024 * 1024;                     // estimate default: 20 MB/s (1024-based, as printed)
  std::uint64_t converge_bytes = 64ULL << 20; // migrate: switch once a delta is below this
  int max_syncs = 6;                          // migrate: incremental syncs before switching
  // --bwlimit / bwlimit: the rate every stream of this command may use, bytes per second
  // (0 = unlimited). evacuate gives each of its parallel migrations its share.
  std::uint64_t bwlimit = 0;
  // streams: how many datasets of an instance a sync sends at once (its disks, delegated
  // datasets), 1..16; one when bwlimit is set.
  std::size_t max_streams = 4;
  std::string state_dir;
  std::string log_dir;
  std::string zfs_path = "/usr/sbin/zfs"; // on the compute nodes
  int ssh_connect_timeout_s = 10;         // ssh.connect_timeout_s: also the data path's
  std::string ssh_user = "root";          // ssh.user: also the data path's, node to node
  int ssh_port = 22;                      // ssh.port: likewise
  bool allow_older_platform = false;
  // Test-only fault hook (ZMIGRATE_FAULT_STEP): SIGKILL this process just before this journal step.
  std::string fault_step;
  // Test-only (engine unit tests): called with each journal step's name just before it runs
  // (`before` true) and just after it ran, before it is journaled ok (`before` false); a throw
  // there fails the step as if the step itself had failed at that point.
  std::function<void(const std::string& step, bool before)> step_hook;
  // This host's name, for leases.
  std::string hostname;
  // --take-over: take the lease of a migration from a zmigrate on another head node whose
  // heartbeat is stale (its pid cannot be checked from here, so only the operator can say it
  // is gone). Without it such a holder is refused, naming it and this flag.
  bool take_over_remote_lease = false;
  // How often Operation's heartbeat thread refreshes the lease (tests make it short).
  int lease_heartbeat_ms = 10000;
  // When this command started (wall clock): a stop request (abort/pause from another shell)
  // made after it stops it; an older one is dropped. The epoch (unset) means "when its first
  // Operation was made", which only tests rely on.
  std::chrono::system_clock::time_point command_started{};
  // How often a running command looks for a stop request, and how long abort/pause wait for the
  // running command to stop before they give up.
  int stop_poll_ms = 500;
  int stop_wait_ms = 60000;
};

struct Context {
  inventory::Inventory& inventory;
  NodeAccess& nodes;
  state::StateStore& store;
  Clock& clock;
  Logger& log;
  Reporter& reporter;
  Settings settings;
  // Called when a command starts working on a migration (the CLI opens its per-migration log).
  std::function<void(const std::string& migration_id, const std::string& vm_uuid)> on_migration;
};

} // namespace zmigrate::migration
