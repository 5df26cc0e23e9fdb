// SPDX-License-Identifier: MPL-2.0
#pragma once
// Typed ZFS errors, only for what callers react to, and the classification of zfs stderr into
// them. The patterns are anchored on the exact texts of OpenZFS 2.x, illumos and zfs-fuse
// (samples in tests/data/zfs/). Transient ones derive from zmigrate::TransientError, so the
// sync/watch retry logic retries them; the rest are permanent.

#include <zmigrate/util/error.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace zmigrate::zfs {

// What a failed zfs command's stderr says went wrong.
enum class FailureKind {
  unknown,
  dataset_missing,            // "dataset does not exist", "destination 'x' does not exist",
                              // "could not find any snapshots to destroy"
  busy,                       // "dataset is busy", "target is busy" (unmount), EBUSY, OpenZFS
                              // "it's being held" (destroy of a held snapshot)
  already_exists,             // create/rename: "dataset already exists"
  tag_exists,                 // hold: "tag already exists on this dataset"
  no_such_tag,                // release: "no such tag on this dataset"
  target_exists,              // full recv: "destination 'x' exists / must specify -F"
  target_has_snapshots,       // full recv -F: "destination has snapshots (eg. x@s)"
  target_modified,            // "destination x has been modified since most recent snapshot"
  source_mismatch,            // "most recent snapshot of x does not match incremental source"
  incremental_source_missing, // send: "incremental source (...) does not exist"
  out_of_space,               // "out of space", "space quota exceeded"
  stream_interrupted,         // "failed to read from stream", "incomplete stream", "checksum
                              // mismatch", "invalid backup stream" (zfs-fuse), broken pipe
  bad_stream,                 // "invalid stream (bad magic number)": not a zfs stream at all
  partial_receive,            // "contains partially-complete state from zfs receive -s"
  unsupported,                // "invalid option 'x'", "unrecognized command"
};

// The classification of one stderr text, with what could be read out of it.
struct Failure {
  FailureKind kind = FailureKind::unknown;
  std::string dataset;      // the dataset or snapshot the message names, when it names one
  std::string example;      // target_has_snapshots: the example snapshot ("eg. x@s")
  std::string resume_token; // stream_interrupted with `recv -s`: the token zfs printed
};

// Classify `stderr_text` of a failed zfs command (any verb). Never throws.
Failure classify_failure(std::string_view stderr_text);

// True for the kinds a caller may retry unchanged after a pause (busy, stream_interrupted,
// partial_receive after resuming).
bool is_transient(FailureKind kind);

// Stable short name of `kind` ("dataset_missing"), for logs and JSON.
std::string_view to_string(FailureKind kind);

// --- Typed errors (all carry ExitCode::zfs) ---

// The dataset or snapshot does not exist.
class DatasetMissing : public Error {
public:
  DatasetMissing(std::string what, std::string why, std::string dataset)
      : Error(ExitCode::zfs, std::move(what), std::move(why)), m_dataset(std::move(dataset)) {}
  const std::string& dataset() const { return m_dataset; }

private:
  std::string m_dataset;
};

// "dataset is busy": usually gone within a second (lab.md gotcha 2); retry.
class Busy : public TransientError {
public:
  Busy(std::string what, std::string why)
      : TransientError(ExitCode::zfs, std::move(what), std::move(why)) {}
};

// Why source and target cannot be joined by an incremental stream.
enum class DivergedReason {
  target_exists,        // full receive into an existing dataset
  target_has_snapshots, // full receive with -F into a dataset that has snapshots
  target_modified,      // target written since its newest snapshot
  source_mismatch,      // target's newest snapshot is not the stream's incremental source
  no_common_snapshot,   // planner: no snapshot GUID in common
  target_ahead,         // planner: target has snapshots after the newest common one
};

// The target holds snapshots or data this migration did not send. Carries what a good message
// needs: the newest common snapshot (if any) and the snapshots only one side has.
class Diverged : public Error {
public:
  Diverged(std::string what, std::string why, DivergedReason reason,
           std::optional<std::string> common = std::nullopt,
           std::vector<std::string> source_only = {}, std::vector<std::string> target_only = {})
      : Error(ExitCode::zfs, std::move(what), std::move(why)), m_reason(reason),
        m_common(std::move(common)), m_source_only(std::move(source_only)),
        m_target_only(std::move(target_only)) {}
  // Why (not to be confused with Error::reason(), the message text).
  DivergedReason divergence() const { return m_reason; }
  const std::optional<std::string>& common() const { return m_common; }
  const std::vector<std::string>& source_only() const { return m_source_only; }
  const std::vector<std::string>& target_only() const { return m_target_only; }

private:
  DivergedReason m_reason;
  std::optional<std::string> m_common;
  std::vector<std::string> m_source_only;
  std::vector<std::string> m_target_only;
};

// The pool or a quota is full. Permanent until someone frees space.
class OutOfSpace : public Error {
public:
  OutOfSpace(std::string what, std::string why)
      : Error(ExitCode::zfs, std::move(what), std::move(why)) {}
};

// The stream stopped early (network cut, sender died). Retry; with `recv -s` resume from
// `resume_token()` (empty when zfs printed none; read receive_resume_token then).
class StreamInterrupted : public TransientError {
public:
  StreamInterrupted(std::string what, std::string why, std::string resume_token = {})
      : TransientError(ExitCode::zfs, std::move(what), std::move(why)),
        m_resume_token(std::move(resume_token)) {}
  const std::string& resume_token() const { return m_resume_token; }

private:
  std::string m_resume_token;
};

// The target holds a partial `recv -s`: resume it (send -t <receive_resume_token>) or discard
// it (zfs recv -A) before anything else can be received.
class PartialReceive : public TransientError {
public:
  PartialReceive(std::string what, std::string why, std::string dataset)
      : TransientError(ExitCode::zfs, std::move(what), std::move(why)),
        m_dataset(std::move(dataset)) {}
  const std::string& dataset() const { return m_dataset; }

private:
  std::string m_dataset;
};

// Throw the typed error for `stderr_text` (classified with classify_failure): `what` names the
// host, verb and operand ("cn2: zfs recv zones/abc"); the reason is the stderr text (trimmed,
// one line) followed by "; " and what to do next. Unknown failures become Error(ExitCode::zfs).
[[noreturn]] void throw_failure(std::string what, std::string_view stderr_text);

// As above with an already classified failure.
[[noreturn]] void throw_failure(std::string what, std::string_view stderr_text,
                                const Failure& failure);

} // namespace zmigrate::zfs
