// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/zfs/errors.hpp>

#include <regex>

#include <fmt/format.h>

namespace zmigrate::zfs {

namespace {

// zfs wraps some messages ("does not\nmatch incremental source"); match on one line.
std::string one_line(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool space = false;
  for (char c : text) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      space = !out.empty();
      continue;
    }
    if (space) {
      out += ' ';
      space = false;
    }
    out += c;
  }
  return out;
}

bool contains(const std::string& text, std::string_view needle) {
  return text.find(needle) != std::string::npos;
}

// First capture of `pattern` in `text`, or "".
std::string capture(const std::string& text, const char* pattern) {
  std::smatch m;
  const std::regex re(pattern);
  if (std::regex_search(text, m, re) && m.size() > 1) {
    return m[1].str();
  }
  return {};
}

std::string hint(FailureKind kind) {
  switch (kind) {
  case FailureKind::dataset_missing:
    return "check the name; it may have been destroyed, renamed or never received";
  case FailureKind::busy:
    return "the dataset is in use (mounted, held, or just received); retry in a moment";
  case FailureKind::already_exists:
    return "a dataset of that name exists already; inspect it before reusing the name";
  case FailureKind::tag_exists:
    return "the snapshot already carries this hold";
  case FailureKind::no_such_tag:
    return "the snapshot does not carry this hold";
  case FailureKind::target_exists:
  case FailureKind::target_has_snapshots:
  case FailureKind::source_mismatch:
    return "the target holds data this migration did not send; inspect it (zfs list -t all -r) "
           "and remove it only if that is safe, then run the command again";
  case FailureKind::target_modified:
    return "the target was written to after its newest snapshot (mounted, atime=on?); it is "
           "rolled back only when it holds nothing but this migration's data";
  case FailureKind::incremental_source_missing:
    return "the snapshot to send from is gone on the source; a new full send is needed";
  case FailureKind::out_of_space:
    return "free space on the pool or raise the quota, then run the command again";
  case FailureKind::stream_interrupted:
    return "the stream stopped early (network or sender); run the command again, it resumes "
           "where the target allows";
  case FailureKind::bad_stream:
    return "the receiver did not get a zfs stream (something else wrote into the pipe, such as "
           "a login banner or an error text); check the sending side";
  case FailureKind::partial_receive:
    return "resume the partial receive (the next sync does) or discard it with 'zfs recv -A'";
  case FailureKind::unsupported:
    return "this ZFS lacks the option or command; the capability probe should have avoided it, "
           "please report this";
  case FailureKind::unknown:
    break;
  }
  return "see the zfs message";
}

DivergedReason diverged_reason(FailureKind kind) {
  switch (kind) {
  case FailureKind::target_has_snapshots:
    return DivergedReason::target_has_snapshots;
  case FailureKind::target_modified:
    return DivergedReason::target_modified;
  case FailureKind::source_mismatch:
    return DivergedReason::source_mismatch;
  default:
    return DivergedReason::target_exists;
  }
}

} // namespace

Failure classify_failure(std::string_view stderr_text) {
  const std::string t = one_line(stderr_text);
  Failure f;
  if (contains(t, "contains partially-complete state from")) {
    f.kind = FailureKind::partial_receive;
    f.dataset = capture(t, R"(destination (\S+) contains partially-complete state)");
  } else if (std::string token = capture(t, R"(zfs send -t ([0-9A-Za-z-]+))"); !token.empty()) {
    f.kind = FailureKind::stream_interrupted;
    f.resume_token = std::move(token);
  } else if (contains(t, "has been modified since most recent snapshot")) {
    f.kind = FailureKind::target_modified;
    f.dataset = capture(t, R"(destination (\S+) has been modified)");
  } else if (contains(t, "does not match incremental source")) {
    f.kind = FailureKind::source_mismatch;
    f.dataset = capture(t, R"(most recent snapshot of (\S+) does not match)");
  } else if (contains(t, "destination has snapshots")) {
    f.kind = FailureKind::target_has_snapshots;
    f.example = capture(t, R"(destination has snapshots \(eg\. ([^)\s]+)\))");
    const std::size_t at = f.example.find('@');
    f.dataset = at == std::string::npos ? std::string() : f.example.substr(0, at);
  } else if (contains(t, "destination already exists") ||
             std::regex_search(t, std::regex(R"(destination '[^']+' exists)"))) {
    f.kind = FailureKind::target_exists;
    f.dataset = capture(t, R"(destination '([^']+)' exists)");
    if (f.dataset.empty()) {
      f.dataset = capture(t, R"(cannot restore to (\S+): destination already exists)");
    }
  } else if (contains(t, "incremental source") &&
             (contains(t, "does not exist") || contains(t, "no longer exists") ||
              contains(t, "could not be found"))) {
    f.kind = FailureKind::incremental_source_missing;
    f.dataset = capture(t, R"(incremental source \(([^)]+)\))");
  } else if (contains(t, "does not exist") || contains(t, "could not find any snapshots")) {
    f.kind = FailureKind::dataset_missing;
    f.dataset = capture(t, R"('([^']+)': dataset does not exist)");
    if (f.dataset.empty()) {
      f.dataset = capture(t, R"(destination '([^']+)' does not exist)");
    }
    if (f.dataset.empty()) {
      f.dataset = capture(t, R"(could not send (\S+): does not exist)");
    }
  } else if (contains(t, "dataset is busy") || contains(t, "target is busy") ||
             contains(t, "Device or resource busy") || contains(t, "it's being held")) {
    // OpenZFS 2.x refuses to destroy a held snapshot with "it's being held. Run 'zfs holds -r
    // ...'" (recorded in a lab guest); zfs-fuse and illumos say "dataset is busy".
    f.kind = FailureKind::busy;
    f.dataset = capture(t, R"(cannot destroy '([^']+)')");
    if (f.dataset.empty()) {
      f.dataset = capture(t, R"(cannot destroy snapshot (\S+):)");
    }
  } else if (contains(t, "out of space") || contains(t, "quota exceeded")) {
    f.kind = FailureKind::out_of_space;
  } else if (contains(t, "bad magic number")) {
    f.kind = FailureKind::bad_stream;
  } else if (contains(t, "failed to read from stream") || contains(t, "incomplete stream") ||
             contains(t, "checksum mismatch") || contains(t, "invalid backup stream") ||
             contains(t, "Broken pipe") || contains(t, "broken pipe")) {
    f.kind = FailureKind::stream_interrupted;
  } else if (contains(t, "tag already exists on this dataset")) {
    f.kind = FailureKind::tag_exists;
  } else if (contains(t, "no such tag on this dataset")) {
    f.kind = FailureKind::no_such_tag;
  } else if (contains(t, "dataset already exists")) {
    f.kind = FailureKind::already_exists;
  } else if (contains(t, "invalid option '") || contains(t, "unrecognized command '") ||
             contains(t, "invalid property '")) {
    f.kind = FailureKind::unsupported;
  }
  return f;
}

bool is_transient(FailureKind kind) {
  return kind == FailureKind::busy || kind == FailureKind::stream_interrupted ||
         kind == FailureKind::partial_receive;
}

std::string_view to_string(FailureKind kind) {
  switch (kind) {
  case FailureKind::unknown:
    return "unknown";
  case FailureKind::dataset_missing:
    return "dataset_missing";
  case FailureKind::busy:
    return "busy";
  case FailureKind::already_exists:
    return "already_exists";
  case FailureKind::tag_exists:
    return "tag_exists";
  case FailureKind::no_such_tag:
    return "no_such_tag";
  case FailureKind::target_exists:
    return "target_exists";
  case FailureKind::target_has_snapshots:
    return "target_has_snapshots";
  case FailureKind::target_modified:
    return "target_modified";
  case FailureKind::source_mismatch:
    return "source_mismatch";
  case FailureKind::incremental_source_missing:
    return "incremental_source_missing";
  case FailureKind::out_of_space:
    return "out_of_space";
  case FailureKind::stream_interrupted:
    return "stream_interrupted";
  case FailureKind::bad_stream:
    return "bad_stream";
  case FailureKind::partial_receive:
    return "partial_receive";
  case FailureKind::unsupported:
    return "unsupported";
  }
  return "unknown";
}

void throw_failure(std::string what, std::string_view stderr_text) {
  throw_failure(std::move(what), stderr_text, classify_failure(stderr_text));
}

void throw_failure(std::string what, std::string_view stderr_text, const Failure& failure) {
  std::string message = one_line(stderr_text);
  if (message.size() > 500) {
    message = message.substr(0, 500) + "...";
  }
  if (message.empty()) {
    message = "failed without a message";
  }
  const std::string why = fmt::format("{}; {}", message, hint(failure.kind));
  switch (failure.kind) {
  case FailureKind::dataset_missing:
    throw DatasetMissing(std::move(what), why, failure.dataset);
  case FailureKind::busy:
    throw Busy(std::move(what), why);
  case FailureKind::target_exists:
  case FailureKind::target_has_snapshots:
  case FailureKind::target_modified:
  case FailureKind::source_mismatch: {
    std::vector<std::string> target_only;
    if (!failure.example.empty()) {
      target_only.push_back(failure.example);
    }
    throw Diverged(std::move(what), why, diverged_reason(failure.kind), std::nullopt, {},
                   std::move(target_only));
  }
  case FailureKind::out_of_space:
    throw OutOfSpace(std::move(what), why);
  case FailureKind::stream_interrupted:
    throw StreamInterrupted(std::move(what), why, failure.resume_token);
  case FailureKind::partial_receive:
    throw PartialReceive(std::move(what), why, failure.dataset);
  default:
    throw Error(ExitCode::zfs, std::move(what), why);
  }
}

} // namespace zmigrate::zfs
