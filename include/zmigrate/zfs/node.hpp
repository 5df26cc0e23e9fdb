// SPDX-License-Identifier: MPL-2.0
#pragma once
// ZfsNode: the typed ZFS operations on one compute node, over its remote::Runner (the single
// choke point that logs every command). Builds argv with zfs/commands.hpp, parses the output,
// and turns failures into the typed errors of zfs/errors.hpp. Failures throw
// Error(ExitCode::zfs, "<host>: zfs <verb> <operand>", "<stderr>; <what to do>") or a subclass.
// Operations that converge (destroy of something absent, a hold that exists, a release of a
// missing hold, a snapshot that already exists) succeed quietly, so phases can be re-run.

#include <zmigrate/remote/runner.hpp>
#include <zmigrate/util/clock.hpp>
#include <zmigrate/util/log.hpp>
#include <zmigrate/zfs/capabilities.hpp>
#include <zmigrate/zfs/commands.hpp>
#include <zmigrate/zfs/names.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace zmigrate::zfs {

enum class RetryBusy { no, yes };

struct ZfsNodeOptions {
  // The zfs binary on the node; replaces argv[0] of every command (the probe uses PATH).
  std::string zfs_path = "zfs";
  // How long "dataset is busy" is retried (lab.md gotcha 2: it lasts ~0.5 s after a receive).
  std::chrono::milliseconds busy_budget{3000};
  // First pause between busy retries; doubles up to busy_max_delay.
  std::chrono::milliseconds busy_first_delay{100};
  std::chrono::milliseconds busy_max_delay{800};
};

// The size of a send, from the dry run when the node has one, else estimated from properties.
struct SendSize {
  std::uint64_t bytes = 0;
  bool exact = false; // true: zfs's own `send -nvP` figure; false: approximation
  std::string method; // "zfs send -nvP", "zfs send -nv" or "properties"
};

class ZfsNode {
public:
  ZfsNode(remote::Runner& runner, Clock& clock, Logger& log, ZfsNodeOptions options = {});

  const std::string& host() const { return m_runner.host(); }

  // The node's capabilities; probed with one command on first use, then cached. Throws
  // Error(ExitCode::zfs) when the probe output is not recognised, or the runner's transport
  // error.
  const Capabilities& capabilities();
  // Use `caps` instead of probing (e.g. recorded in the migration journal, or in tests).
  void set_capabilities(Capabilities caps);

  // True when the dataset, snapshot or bookmark exists.
  bool exists(const ObjectName& name);
  // `root` and (with Recursive::yes) its descendants, parents first. Throws DatasetMissing.
  std::vector<DatasetEntry> list_datasets(const DatasetName& root, Recursive recursive);
  // Snapshots of `dataset` (not of its children) with guid and createtxg, oldest first. Throws
  // DatasetMissing when the dataset does not exist.
  std::vector<SnapshotInfo> list_snapshots(const DatasetName& dataset);
  // `props` of every name in `names` ("-" values left out). Properties this node cannot answer
  // (written*, receive_resume_token on zfs-fuse) are dropped from the request, so they are
  // simply absent. Throws DatasetMissing when a name does not exist.
  PropertyTable get_properties(const std::vector<ObjectName>& names,
                               const std::vector<std::string>& props);
  // GUID of `snapshot`. Throws DatasetMissing.
  std::uint64_t guid(const SnapshotName& snapshot);

  // Snapshot every dataset of `snapshots` (all with the same snapshot component) in as few
  // commands as the node allows (see plan_snapshot_commands: children of a wanted dataset are
  // included with -r when all of them are wanted). Returns whether it was one atomic command;
  // a non-atomic fallback is logged. Snapshots that already exist (a re-run) count as done.
  // Throws UsageError on mixed snapshot components, DatasetMissing, or the typed error.
  bool snapshot_atomic(const std::vector<SnapshotName>& snapshots);

  // Destroy; false when it did not exist. With RetryBusy::yes, "dataset is busy" is retried
  // with backoff for up to options.busy_budget before Busy is thrown.
  bool destroy_snapshot(const SnapshotName& snapshot, Recursive recursive, RetryBusy retry);
  bool destroy_dataset(const DatasetName& dataset, Recursive recursive, RetryBusy retry,
                       ForceUnmount force = ForceUnmount::no);

  // Place / remove hold `tag` on `snapshots`. A no-op (logged) when the node has no holds; a
  // hold already there, or a release of a hold (or snapshot) not there, counts as done.
  void hold(const std::string& tag, const std::vector<SnapshotName>& snapshots);
  void release(const std::string& tag, const std::vector<SnapshotName>& snapshots);

  // The dataset's receive_resume_token; nullopt when none, when the dataset does not exist, or
  // when the node has no resume tokens.
  std::optional<std::string> resume_token(const DatasetName& dataset);

  // Size of the stream `spec` would produce. With `send -nvP` support the node's own estimate
  // (exact = true when every size was printed); otherwise from properties (exact = false):
  // full: `referenced` of the snapshot (of each descendant's with -R); incremental:
  // `written@from` of the snapshot when available, else the growth of `referenced`.
  // Throws UsageError (invalid spec), PreconditionError (a resume token or bookmark on a node
  // without dry runs), DatasetMissing or the typed error.
  SendSize estimate_send(const SendSpec& spec);

  // `zfs set PROP=VALUE NAME`.
  void set_property(const ObjectName& name, const std::string& property, const std::string& value);
  // `zfs mount DS`; a dataset already mounted counts as done.
  void mount(const DatasetName& dataset);
  // `zfs create [-p] [-o k=v]... DS`.
  void create(const DatasetName& dataset, Parents parents,
              const std::vector<std::pair<std::string, std::string>>& props = {});
  // `zfs rename`, with "dataset is busy" retried like destroy.
  void rename(const DatasetName& from, const DatasetName& to, RetryBusy retry);
  // `zfs rollback [-r] DS@snap`.
  void rollback(const SnapshotName& snapshot, DestroyNewer destroy_newer);
  // `zfs recv -A DS`: discard a partial resumable receive. No-op without resume tokens.
  void recv_abort(const DatasetName& dataset);

private:
  remote::Result run(remote::Argv argv);
  // Throw the typed error for a failed command: "<host>: zfs <verb> <operand>".
  [[noreturn]] void fail(const remote::Argv& argv, const remote::Result& result);
  std::string what(const remote::Argv& argv) const;
  // Run `argv` (a destroy or rename), retrying "dataset is busy" within the budget.
  remote::Result run_retrying_busy(const remote::Argv& argv, RetryBusy retry);
  SendSize estimate_from_properties(const SendSpec& spec);

  remote::Runner& m_runner;
  Clock& m_clock;
  Logger& m_log;
  ZfsNodeOptions m_options;
  std::optional<Capabilities> m_caps;
};

} // namespace zmigrate::zfs
