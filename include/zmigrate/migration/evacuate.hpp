// SPDX-License-Identifier: MPL-2.0
#pragma once
// evacuate: migrate every instance off one compute node, one after the other, each as a whole
// `migrate` (begin, syncs, switch, optionally finalize). Where each goes is planned for all of
// them at once before the first moves (plan_placement, with what active migrations promised),
// so no node is counted on twice. One instance failing does not stop the
// others; the result says what happened to each, and each failed migration stays in the state
// store for `get`, `rollback` or `abort`.

#include <zmigrate/migration/context.hpp>
#include <zmigrate/migration/engine.hpp>
#include <zmigrate/migration/placement.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace zmigrate::migration {

struct EvacuateOptions {
  std::string server;               // the CN to empty: UUID or hostname
  std::string target;               // "" = placement for each instance
  std::vector<std::string> to;      // placement only onto these nodes (uuid or hostname)
  std::vector<std::string> exclude; // instances to leave where they are (uuid or alias)
  bool separate_owners = false;     // spread each owner's instances over the targets
  bool dry_run = false;
  bool finalize = false;
  bool force_core = false;
  bool include_stopped = true;
  int max_syncs = 6;
  std::uint64_t converge_bytes = 64ULL << 20;
};

struct EvacuationItem {
  std::string vm_uuid;
  std::string alias;
  std::string brand;
  std::string state;   // as VMAPI listed it
  std::string target;  // hostname chosen (or planned)
  std::string outcome; // planned, refused (dry run), migrated, finalized, skipped, failed,
                       // interrupted, excluded (--exclude)
  std::string error;   // why skipped or failed
  std::string reason;  // why the plan chose `target`, or why it found no node
  std::vector<RejectedNode> rejected; // the nodes the plan refused, each with every reason
  std::chrono::milliseconds downtime{0};
  std::uint64_t bytes = 0;
};

struct EvacuateResult {
  inventory::Server server;
  std::vector<EvacuationItem> items;
  bool interrupted = false; // SIGINT/SIGTERM: the items after the last one were not started
  bool all_ok() const;
};

// The instances to move off `server`, in the order evacuate takes them (pure): stopped ones
// first (no downtime at stake), then running ones by alias, then UUID.
std::vector<inventory::Vm> evacuation_order(std::vector<inventory::Vm> vms, bool include_stopped);

// Lists the active instances on `options.server` (VMAPI), plans them all (plan_placement;
// options.target makes it the only node), and migrates each to its planned node; an instance
// whose migration is begun already goes on to its recorded target (not planned anew). `dry_run`
// plans every instance (target or every rejected node, validation) and changes nothing. Throws
// UsageError for a `to` or `exclude` entry that matches nothing. Throws only for what stops the
// whole evacuation before it starts (an unknown server, the inventory unreachable). An interrupt
// (SIGINT/SIGTERM) stops the instance being moved at the end of its current step and starts no
// other; the result says so (`interrupted`).
EvacuateResult evacuate(Context& ctx, const EvacuateOptions& options);

} // namespace zmigrate::migration
