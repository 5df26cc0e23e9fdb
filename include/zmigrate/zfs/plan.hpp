// SPDX-License-Identifier: MPL-2.0
#pragma once
// Pure planning of one dataset's sync: which stream brings the target to a given source
// snapshot. The core rule: send from the newest snapshot the target confirms by GUID (names
// prove nothing: a same-named snapshot with another GUID is someone else's data).

#include <zmigrate/zfs/commands.hpp>
#include <zmigrate/zfs/errors.hpp>

#include <optional>
#include <string>
#include <vector>

namespace zmigrate::zfs {

enum class SyncAction {
  nothing,     // the target already has `to` (or a newer snapshot of the source)
  full,        // full send of `to`
  incremental, // send from `from` (the newest common snapshot) to `to`
  resume,      // send -t `resume_token`, then plan again
  conflict,    // the target holds snapshots or data this migration did not send
};

struct SyncInput {
  // Snapshots of the source dataset, oldest first (as list_snapshots() returns them).
  std::vector<SnapshotInfo> source;
  // Snapshots of the target dataset, oldest first; nullopt when the target does not exist.
  std::optional<std::vector<SnapshotInfo>> target;
  // Snapshot component (after '@') the target must end up with; must be in `source`.
  std::string to;
  // The target's receive_resume_token, "" when none (or the node has no resume tokens).
  std::string resume_token;
  // target_is_ours: the caller asserts everything on the target came from this migration, so
  // the receive may use -F (roll back writes such as atime updates since the last snapshot).
  RecvForce ownership = RecvForce::no;
};

struct SyncPlan {
  SyncAction action = SyncAction::nothing;
  std::optional<std::string> from; // incremental: snapshot component of the common snapshot
  std::string to;                  // snapshot component to send
  std::string resume_token;        // resume: the token to send from
  bool force = false;              // the receive should use -F (only with target_is_ours)
  // Source snapshots strictly between `from` and `to` (send -I carries them; -i skips them).
  std::vector<std::string> intermediates;
  // The newest snapshot the target confirms by GUID (as named on the source), if any.
  std::optional<std::string> common;
  // Source snapshots whose GUID the target lacks / target snapshots whose GUID the source lacks
  // (full names as each side lists them), for messages and for Diverged.
  std::vector<std::string> source_only;
  std::vector<std::string> target_only;
  std::optional<DivergedReason> conflict; // set when action == conflict
  std::string explanation;                // one line saying why, for logs and messages
};

// Decide how to bring the target to `input.to`:
// - a resume token → resume (whatever else is there; plan again afterwards);
// - no target dataset → full;
// - a target without snapshots → full with -F when the target is ours, else conflict
//   (target_exists);
// - no snapshot in common by GUID → conflict (no_common_snapshot);
// - target snapshots newer than the newest common one → conflict (target_ahead), also when the
//   target is ours (the caller rolls back to `common` and plans again);
// - the common snapshot is `to` or newer on the source → nothing;
// - else incremental from the common snapshot, -F when the target is ours.
// Throws PreconditionError when `input.to` is not among the source snapshots.
SyncPlan plan_sync(const SyncInput& input);

// Throw zfs::Diverged for a conflict plan: `what` names host and dataset ("cn2: zones/abc");
// the reason lists the common snapshot and the snapshots only one side has.
// Throws UsageError when `plan` is not a conflict.
[[noreturn]] void throw_conflict(const SyncPlan& plan, std::string what);

} // namespace zmigrate::zfs
