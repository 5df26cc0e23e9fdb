// SPDX-License-Identifier: MPL-2.0
#pragma once
// Internal helpers shared by the engine's phase files (not part of the public API).

#include <zmigrate/migration/context.hpp>
#include <zmigrate/migration/data_path.hpp>
#include <zmigrate/migration/engine.hpp>
#include <zmigrate/migration/link.hpp>
#include <zmigrate/migration/node.hpp>
#include <zmigrate/migration/operation.hpp>

#include <atomic>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace zmigrate::migration::detail {

// Both ends of a migration, resolved afresh from CNAPI by UUID.
struct Ends {
  inventory::Server source_server;
  inventory::Server target_server;
  Node* source = nullptr; // NodeAccess owns the nodes for the command
  Node* target = nullptr;
};

Ends open_ends(Context& ctx, const state::Migration& m);

// The instance as recorded at begin (VMAPI JSON), parsed.
inventory::Vm recorded_vm(const state::Migration& m);

// The instance's dataset roots as begin read them from the source node's vmadm (data.datasets),
// each checked again with owned_by_instance(): the only names any phase snapshots, sends,
// mounts or destroys. Records written before data.datasets existed fall back to the recorded
// instance, checked the same way. Throws PreconditionError naming a foreign dataset.
std::vector<std::string> instance_roots(const state::Migration& m);

// Run `a` here and `b` on a second thread at once, wait for both, rethrow the first failure.
// Only for remote work on two different nodes (each Node has its own session): neither may
// touch the state store or the reporter.
inline void both(const std::function<void()>& a, const std::function<void()>& b) {
  auto fb = std::async(std::launch::async, b);
  std::exception_ptr ea;
  try {
    a();
  } catch (...) {
    ea = std::current_exception();
  }
  fb.wait();
  if (ea) {
    std::rethrow_exception(ea);
  }
  fb.get(); // rethrows b's failure
}

struct SyncOptions {
  bool reverse = false; // data flows from the target back to the source (rollback)
  bool prune = true;    // drop older migration snapshots afterwards
  bool estimate = true; // size every stream first (progress totals)
  Link* path = nullptr; // an open data link to reuse (the switch keeps one open)
  bool holds = true;    // hold the new snapshot on both sides (source before sending); the final
                        // sync inside the downtime window leaves that to the caller, afterwards
  // A data path this sync opens itself is parked when the whole sync succeeds (Link::park), for
  // the migration's next command to adopt; closed when anything fails.
  bool park_path = false;
  // A command of the sending node's to run on it at once with the streams, when they all go
  // in one round trip (the switch's hide); `alongside_ok`, when set, tells whether it ran there
  // and succeeded. When it did not, the caller runs it on its own.
  remote::Command alongside;
  bool* alongside_ok = nullptr;
};

// Snapshot, plan, send and prune: one sync of every dataset of the instance to the target.
// `label` names the journal steps ("sync", "switch.final_sync", "rollback.reverse_sync").
SyncResult sync_datasets(Context& ctx, Operation& op, Ends& ends, const std::string& label,
                         const SyncOptions& options = {});

// The data path spec between `src` and `dst` for this instance's datasets.
// With a bandwidth limit (settings.bwlimit), refuses a sending node that can enforce none
// (neither node.js nor pv): PreconditionError naming it. Called before anything changes (sync
// before its snapshot, switch in prepare, before anything stops).
void check_rate_limit(Context& ctx, Node& sender);
DataPathSpec data_path_spec(Context& ctx, const state::Migration& m, Node& src, Node& dst,
                            const std::vector<std::string>& datasets);

// The boot of a compute node as CNAPI reports it: `last_boot`, else sysinfo "Boot Time"; ""
// when neither is there.
std::string node_boot(const inventory::Server& s);
// Both nodes' capabilities, at once: from the migration record (data.node_caps.<server uuid>:
// boot, probe, caps) when an earlier command probed the same boot of the node with the same
// probe, else probed (one command per node) and recorded for the next command.
void probe_both(Operation& op, Node& a, Node& b);

// What a prune of `t` (a node's tree of `roots`) removes: every snapshot of this migration but
// `keep` (`doomed`, released first), as `destroy -r` of each root's (`recursive`) and `destroy`
// of what no root covers (`single`). Pure.
struct PruneOrder {
  std::vector<std::string> doomed;
  std::vector<std::string> recursive;
  std::vector<std::string> single;
};
PruneOrder prune_order(const std::string& migration_id, const std::vector<std::string>& roots,
                       const std::string& keep, const DatasetTree& t);

// Remove every snapshot of this migration on `node` for the instance's datasets, except `keep`
// (a snap name like zmigrate-<id>-3; "" removes all). Holds `hold` (the kept snapshots, when the
// caller has not held them yet) and releases holds first; one remote command
// (Node::release_and_destroy). `known`: the node's tree of `roots` as this command read it or
// tree_after() foresees it (else it is read). A snapshot `known` names that is not there (or one
// it misses) costs only the slower path: every destroy proves its name gone, and the next prune
// sees what this one missed.
void prune_snapshots(Context& ctx, Node& node, const std::string& migration_id,
                     const std::vector<std::string>& roots, const std::string& keep,
                     const DatasetTree* known = nullptr, const std::vector<std::string>& hold = {});

// The receiver's tree once it has received `plan`: `before` (read before the streams) and what
// each stream brings, taken from the sender's tree: a full or clone stream its snapshot, an
// incremental one (`zfs send -I`) every snapshot of its dataset after its base up to its end.
// nullopt when that cannot be told from the trees (a resumed stream, a stream whose ends the
// sender's tree lacks). Pure. For a prune's names and GUIDs: a snapshot it adds carries the
// sender's createtxg, which the receiver's own do not compare with.
std::optional<DatasetTree> tree_after(const DatasetTree& before, const DatasetTree& sender,
                                      const std::vector<Stream>& plan);

// NAPI: reserve every NIC IP not already reserved; remember which ones (data.reserved_ips and the
// ledger) so only those are unreserved later.
// Refuses (exit 4) while Triton's own migration (VMAPI's record: sdc-migrate, CloudAPI) holds
// the instance: two movers of one instance would fight over its datasets, IPs and VMAPI record.
void refuse_triton_migration(Context& ctx, const std::string& vm_uuid);
// begin.mark_source: put k_mark_property=<migration id> on the source zone root, with its ledger
// row first (one row per migration however often a begin is retried).
void mark_source(Context& ctx, const state::Migration& m, Node& source, const std::string& ds);
// Remove the mark of `m` from `ds` on `node` when it is there with m's id (a value someone else
// set is left alone), then retire the ledger row. A missing dataset has no mark to remove.
void clear_mark(Context& ctx, const state::Migration& m, Node& node, const std::string& ds);

// abort, pause and a switch taking over a `sync --every` loop (engine_undo.cpp): refuse while a
// live switch, rollback, abort or finalize holds `m`'s lease; ask the command holding it to stop
// (a StopRequest of `kind`) and wait until the lease is free (Settings::stop_wait_ms), returning
// that command, if one ran.
void refuse_if_unstoppable(Context& ctx, const state::Migration& m);

// The switch's fixed steps as this head node measured them: the median, over earlier switches
// of running instances, of their downtime minus their final sync (std::nullopt: none yet).
std::optional<std::chrono::milliseconds> measured_switch_fixed(Context& ctx);
std::optional<state::Lease> stop_running_command(Context& ctx, const state::Migration& m,
                                                 const std::string& kind);

void reserve_ips(Context& ctx, Operation& op, const inventory::Vm& vm);
void unreserve_ips(Context& ctx, Operation& op);

// Wait until VMAPI shows the instance on `server_uuid` with `state` (or any state when empty).
// With `cancel`, it returns early (without an answer) once *cancel is set: for a wait run
// beside other steps whose command failed meanwhile.
void wait_vmapi(Context& ctx, const std::string& vm_uuid, const std::string& server_uuid,
                const std::string& state, const std::atomic<bool>* cancel = nullptr);

// Tell VMAPI the instance now lives on `server_uuid` (PUT /vms/:uuid as vm-agent does), from
// the instance as VMAPI has it now (`current`, or read here when not given), never from the
// copy recorded at begin: whatever changed since (tags, metadata) is kept.
void put_vmapi_server(Context& ctx, const inventory::Vm& vm, const std::string& server_uuid,
                      const std::string& state,
                      const std::optional<nlohmann::json>& current = std::nullopt);

bool json_bool(const nlohmann::json& j, const char* key, bool def = false);

// Make the instance `vm` (its `vmadm get` object on `node`) visible with `autoboot` again:
// do_not_inventory=false and autoboot as given, each only when the node shows otherwise.
// Returns true when the instance was hidden (do_not_inventory): Triton's vm-agent had reported
// it gone, and VMAPI shows it again only after the agent's next report (wait_vmapi).
bool restore_visibility(Node& node, const nlohmann::json& vm, bool autoboot);

// The source as it was before a switch that did not pass its point of no return (its undo, and
// abort): visible with its autoboot again, started when it ran before (switch.was_running), and,
// when it had been hidden, shown by VMAPI on the source again (wait_vmapi). `on_start` runs
// just before a start (the operator's line).
void put_source_back(Context& ctx, const state::Migration& m, Ends& ends, const inventory::Vm& vm,
                     const std::function<void()>& on_start = {});

} // namespace zmigrate::migration::detail
