// SPDX-License-Identifier: MPL-2.0
#pragma once
// A data link: the way one zmigrate command moves ZFS streams from one node to another. The
// engine asks NodeAccess::open_link for one and sends typed streams over it; it never sees the
// key, the ssh master or the pipeline. Abstract so engine tests can copy snapshots between fake
// nodes (tests/fakes/fake_node.hpp); the real implementation is DataPath (data_path.hpp): the
// source pipes `zfs send` straight to the target over ssh with an ephemeral, restricted key.

#include <zmigrate/remote/command.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace zmigrate::migration {

class Node;

// What kind of stream brings a dataset on the receiving node up to a snapshot.
enum class StreamKind {
  full,        // everything up to `to`
  incremental, // from `from`, a snapshot of the same dataset both nodes hold (GUID-equal)
  clone,       // from `from`, the clone's origin, which the receiver holds with the same GUID
  resume,      // the rest of an interrupted receive (`token` from the receiver)
};
const char* to_string(StreamKind kind);

// One stream of a sync plan.
struct Stream {
  std::string dataset;
  StreamKind kind = StreamKind::full;
  std::string from;  // full name of the base snapshot ("" for full and resume)
  std::string to;    // full name of the snapshot the stream brings
  std::string token; // resume only
  std::uint64_t estimate = 0;
  bool exact = false; // the estimate is zfs's own (send -nvP)
};

struct TransferResult {
  std::uint64_t bytes = 0; // counted by pv, or the estimate when no counter was available
  bool bytes_counted = false;
  std::chrono::milliseconds duration{0};
};

// What one timed measurement stream brought (Link::measure).
struct MeasureResult {
  std::uint64_t bytes = 0; // counted on the target
  std::chrono::milliseconds duration{0};
};

// One stream of Link::send_streams with its zfs send argv (built by the sending node).
struct StreamSend {
  const Stream* stream = nullptr;
  remote::Argv zfs_send;
  // The lane this stream goes in (stream_lanes): lanes run at once, the streams of a lane one
  // after the other in the order given.
  std::size_t lane = 0;
};

// The lane of each stream of `plan` (in its order, which brings a parent before its children):
// at most `max_lanes` lanes that run at once, balanced by the streams' estimates (largest
// first). Streams that depend on one another share a lane, in plan order: the streams of one
// dataset, and every stream of a dataset below one that a full or clone stream creates (its
// parent must exist before it can be received). Pure.
std::vector<std::size_t> stream_lanes(const std::vector<Stream>& plan, std::size_t max_lanes);

// What Link::send_streams brought: one result per stream, in order, and whether the tail ran
// and succeeded after them.
struct SendsResult {
  std::vector<TransferResult> transfers;
  bool tail_ok = false;
  bool alongside_ok = false; // the command run alongside the streams ran and succeeded
};

class Link {
public:
  virtual ~Link() = default;
  // Adopt the link an earlier command of this migration parked, when it is whole and set up
  // exactly as this one would be (DataPathSpec fingerprint) and young enough; else set the
  // link up (key, pins, master), whatever it creates in the ledger first. Either way, what
  // other links of this migration left goes first (as NodeAccess::remove_leftover_links: the
  // caller holds the lease).
  virtual void open() = 0;
  // Send `stream` (its zfs argv built by the sending node: `zfs_send`). `on_bytes` gets the
  // running byte count about once a second. Throws when the stream did not arrive whole.
  virtual TransferResult send(const Stream& stream, const remote::Argv& zfs_send, bool use_pv,
                              const std::function<void(std::uint64_t)>& on_bytes) = 0;
  // Send every stream of `sends` in order, then run `tail` on the source (its prune, say) once
  // every stream arrived; `alongside` (a command of the source node's, or empty) runs on the
  // source at once with the streams, from their start. The real link does it all in one
  // command on the source (a sequence that stops at the first stream that fails); `on_bytes(i,
  // n)` gets stream i's running count. Throws as send() for the first stream that did not
  // arrive whole, naming it. A tail or an alongside command that fails only leaves tail_ok or
  // alongside_ok false: the caller does its work again on its own (a failed alongside command
  // also keeps the tail from running). `on_arrived`, when set, runs once, as soon as every
  // stream arrived, while the tail may still run (the receiver's own prune can start then).
  // This default sends one stream at a time and leaves the tail and the alongside command to
  // the caller (both false).
  virtual SendsResult send_streams(const std::vector<StreamSend>& sends, bool use_pv,
                                   const remote::Command& tail, const remote::Command& alongside,
                                   const std::function<void(std::size_t, std::uint64_t)>& on_bytes,
                                   const std::function<void()>& on_arrived = {});
  // Send `mib` MiB of zeros to the target's byte counter and time it, for a link opened for a
  // measurement (DataPathSpec::measure; a migration's link refuses). Throws when the count that
  // arrived is not what was sent.
  virtual MeasureResult measure(std::uint64_t mib) = 0;
  // Remove what open() set up. Idempotent; never leaves a ledger row for something removed.
  virtual void close() = 0;
  // Leave what open() set up installed for the next command of the same migration, which adopts
  // it in its open() instead of setting up a new one (no key install, no handshake). Its ledger
  // rows stay live, marked parked: the switch, abort, rollback, finalize and cleanup remove it as
  // they remove every link of the migration, and a parked link nobody adopts in time is removed
  // as a leftover. Never for a measurement's link (closed instead).
  virtual void park() = 0;
  // True when this link is open for `migration_id`, from `source` to `target`, and accepts
  // every dataset of `datasets`.
  virtual bool serves(const std::string& migration_id, const Node& source, const Node& target,
                      const std::vector<std::string>& datasets) const = 0;
};

} // namespace zmigrate::migration
