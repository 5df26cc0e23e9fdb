// SPDX-License-Identifier: MPL-2.0
#pragma once
// Placement: which compute node may take an instance, and a plan for many instances at once
// that cannot strand one (every node it counts on has room for everything promised to it).
// Pure and deterministic over plain data (inventory objects, promises, options); no I/O.

#include <zmigrate/inventory/types.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace zmigrate::migration {

// What a node has already been promised by one instance that is not counted in CNAPI's
// unreserved figures yet: an active migration heading there, or an earlier instance of the
// same plan.
struct Promise {
  std::string node; // server uuid
  std::uint64_t ram_mib = 0;
  std::uint64_t disk_mib = 0;
  std::uint64_t cpu = 0; // cpu_cap (percent of a CPU); 0 = uncapped
  std::string vm;        // instance uuid
  std::string owner;     // instance owner uuid ("" when unknown)
};

// The promise `vm` makes on `node`: its RAM, required_disk_mib() and cpu_cap.
Promise promise_for(const inventory::Vm& vm, const std::string& node);

// The promises per node, summed.
class PromiseLedger {
public:
  struct Totals {
    std::uint64_t ram_mib = 0;
    std::uint64_t disk_mib = 0;
    std::uint64_t cpu = 0;
    std::size_t count = 0;
  };

  // Adds `p`. A second promise of the same instance replaces the first (an instance is going
  // to one node only).
  void add(const Promise& p);
  // The sums on `node` (zeros when nothing is promised there).
  Totals on(const std::string& node) const;
  // How many promised instances of `owner` go to `node` (0 for an empty owner).
  std::size_t owner_count(const std::string& node, const std::string& owner) const;
  // The promise of instance `vm`, nullptr when it has none.
  const Promise* of(const std::string& vm) const;
  // Every promise, in the order added.
  const std::vector<Promise>& all() const { return m_promises; }
  // The same ledger without the promise of instance `vm` (a retried begin does not compete
  // with itself).
  PromiseLedger without(const std::string& vm) const;

private:
  std::vector<Promise> m_promises;
  std::map<std::string, Totals> m_totals;
  std::map<std::pair<std::string, std::string>, std::size_t> m_owners;
  std::map<std::string, Promise> m_by_vm;
};

struct PlacementOptions {
  bool allow_older_platform = false;
  std::vector<std::string> to;      // nodes allowed as targets (uuid or hostname); empty = any
  std::vector<std::string> exclude; // instances not to move (uuid or alias)
  bool separate_owners = false;     // prefer nodes with fewer instances of the same owner
};

// One reason a node cannot take an instance. `rule` is a stable key (status, setup, reserved,
// headnode, admin_ip, source, to, nic_tag, fabric, traits, cpu, ram, disk, hvm, platform,
// inventory, instance); `text` says it to the operator with the values involved.
struct Problem {
  std::string rule;
  std::string text;
};
void to_json(nlohmann::json& j, const Problem& p);

// Every reason `target` cannot take `vm` from `source`, given what `promises` already promised
// on it (the instance's own promise is not counted), and options.to (a node not listed is
// refused) and allow_older_platform. Empty when the node can take it. Never throws.
std::vector<Problem> placement_problems(const inventory::Vm& vm, const inventory::Server& source,
                                        const inventory::Server& target,
                                        const PromiseLedger& promises,
                                        const PlacementOptions& options);

// The reasons that still decide when the switch comes (capacity and the node can change between
// begin and switch): placement_problems() without the rules that the begin settled or that the
// migration itself changed since: disk (the received copy already fills it), traits (the image's
// are not in the record), platform, source, to and headnode. Empty when the switch may go on.
std::vector<Problem> switch_problems(const inventory::Vm& vm, const inventory::Server& source,
                                     const inventory::Server& target, const PromiseLedger& promises,
                                     const PlacementOptions& options);
// The problems joined into one sentence ("a; b; c").
std::string describe(const std::vector<Problem>& problems);

// A target the operator named with -n is checked, not trusted: throws PreconditionError naming
// the node and listing every reason it cannot take `vm` (options.to is not applied to it).
void check_named_target(const inventory::Vm& vm, const inventory::Server& source,
                        const inventory::Server& target, const PromiseLedger& promises,
                        const PlacementOptions& options);

// A node that was considered and refused, with every reason.
struct RejectedNode {
  std::string uuid;
  std::string hostname;
  std::vector<Problem> problems;
};

// Where one instance goes, or why it can go nowhere.
struct Placement {
  std::string vm_uuid;
  std::string alias;
  bool placed = false;
  std::string target_uuid; // "" when not placed
  std::string target_hostname;
  std::string reason;                 // why this node (the ordering that chose it), or why none
  std::uint64_t free_ram_mib = 0;     // on the chosen node, after the promises before this one
  std::uint64_t free_disk_mib = 0;    // likewise
  std::vector<RejectedNode> rejected; // every node refused, sorted by hostname then uuid
};
void to_json(nlohmann::json& j, const Placement& p);

struct PlacementPlan {
  std::vector<Placement> placements; // in planning order: largest instance first
  std::vector<std::string> excluded; // uuids of instances options.exclude left out
  PromiseLedger promises;            // the input promises plus the plan's own
  bool complete() const;             // every instance placed
  const Placement* find(const std::string& vm_uuid) const; // nullptr when not planned
};

// Plans `vms` off `source` over `servers` at once: instances by size, largest first (RAM, then
// disk, then uuid); each goes to the acceptable node (placement_problems() empty, with the
// promises so far) that has, in this order, the fewest instances of the same owner planned or
// promised there (only with separate_owners), the most free RAM after promises, the most free
// disk, then the lowest hostname, then uuid; its promise is added before the next instance. The
// result is the same for any order of `vms` and `servers`. An instance no node takes keeps
// every rejected node with its reasons. Throws UsageError naming the entry when an entry of
// options.to matches no server, or one of options.exclude matches none of `vms`.
PlacementPlan plan_placement(const std::vector<inventory::Vm>& vms, const inventory::Server& source,
                             const std::vector<inventory::Server>& servers,
                             const PromiseLedger& promises, const PlacementOptions& options);

// The target for one instance (begin without -n): plan_placement of just `vm`. Throws
// PreconditionError listing each rejected node and why when no node takes it.
inventory::Server choose_placement(const inventory::Vm& vm, const inventory::Server& source,
                                   const std::vector<inventory::Server>& servers,
                                   const PromiseLedger& promises, const PlacementOptions& options,
                                   Placement* placement = nullptr);

} // namespace zmigrate::migration
