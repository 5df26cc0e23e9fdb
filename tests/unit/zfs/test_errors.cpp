// SPDX-License-Identifier: MPL-2.0
#include "zfs_test_data.hpp"

#include <zmigrate/zfs/errors.hpp>

#include <string>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::zfs;

namespace {

Failure classify_file(const std::string& relative) {
  return classify_failure(testdata::read(relative));
}

} // namespace

TEST_CASE("zfs::classify_failure", "[zfs]") {
  SECTION("missing datasets, all three implementations") {
    for (const char* f :
         {"zfs-fuse/exists-no.err", "zfs-fuse/destroy-ds-missing.err",
          "zfs-fuse/destroy-snap-missing.err", "zfs-fuse/hold-missing.err",
          "zfs-fuse/recv-missing-parent.err", "zfs-fuse/send-missing.err",
          "zfs-fuse/rename-missing.err", "openzfs-2.3/destroy-snap-missing.err",
          "openzfs-2.3/destroy-ds-missing.err", "openzfs-2.3/recv-incr-missing.err"}) {
      CAPTURE(std::string(f));
      CHECK(classify_file(f).kind == FailureKind::dataset_missing);
    }
    CHECK(classify_file("zfs-fuse/exists-no.err").dataset == "zones/nx");
    CHECK(classify_file("zfs-fuse/recv-missing-parent.err").dataset == "zones/nx/child");
    CHECK(classify_file("zfs-fuse/send-missing.err").dataset == "zones/vm@nope");
    CHECK(classify_file("openzfs-2.3/recv-incr-missing.err").dataset == "zones/nx");
  }
  SECTION("busy") {
    for (const char* f : {"zfs-fuse/destroy-busy-after-recv.err", "zfs-fuse/destroy-held.err",
                          "zfs-fuse/destroy-busy-open.err", "openzfs-2.3/destroy-held.err",
                          "openzfs-2.3/destroy-busy.err"}) {
      CAPTURE(std::string(f));
      CHECK(classify_file(f).kind == FailureKind::busy);
    }
    CHECK(classify_file("openzfs-2.3/destroy-held.err").dataset == "zones/vm@zmigrate-m1-2");
    CHECK(classify_file("zfs-fuse/destroy-held.err").dataset == "zones/vm@zmigrate-m1-2");
  }
  SECTION("receive: the target diverged") {
    for (const char* dir : {"zfs-fuse", "openzfs-2.3", "illumos"}) {
      CAPTURE(std::string(dir));
      const Failure modified = classify_file(std::string(dir) + "/recv-incr-modified.err");
      CHECK(modified.kind == FailureKind::target_modified);
      CHECK(modified.dataset == "zones/t1");
      const Failure mismatch = classify_file(std::string(dir) + "/recv-incr-mismatch.err");
      CHECK(mismatch.kind == FailureKind::source_mismatch);
      CHECK(mismatch.dataset == "zones/t2");
      const Failure exists = classify_file(std::string(dir) + "/recv-full-exists.err");
      CHECK(exists.kind == FailureKind::target_exists);
      CHECK(exists.dataset == "zones/t1");
    }
    const Failure snaps = classify_file("zfs-fuse/recv-full-F-has-snapshots.err");
    CHECK(snaps.kind == FailureKind::target_has_snapshots);
    CHECK(snaps.example == "zones/t1@zmigrate-m1-1");
    CHECK(snaps.dataset == "zones/t1");
    CHECK(classify_file("openzfs-2.3/recv-full-F-has-snapshots.err").kind ==
          FailureKind::target_has_snapshots);
    CHECK(classify_failure("cannot restore to zones/t1@s: destination already exists\n").kind ==
          FailureKind::target_exists);
  }
  SECTION("receive: interrupted streams are transient; a token is picked up") {
    for (const char* f : {"zfs-fuse/recv-empty.err", "zfs-fuse/recv-truncated.err",
                          "openzfs-2.3/recv-truncated.err", "openzfs-2.3/recv-empty.err",
                          "illumos/recv-empty.err"}) {
      CAPTURE(std::string(f));
      const Failure fl = classify_file(f);
      CHECK(fl.kind == FailureKind::stream_interrupted);
      CHECK(fl.resume_token.empty());
      CHECK(is_transient(fl.kind));
    }
    const Failure r = classify_file("openzfs-2.3/recv-truncated-resumable.err");
    CHECK(r.kind == FailureKind::stream_interrupted);
    CHECK(r.resume_token.starts_with("1-f4d43fa5b-e0-789c"));
    CHECK(classify_failure("ssh: write: Broken pipe\n").kind == FailureKind::stream_interrupted);
  }
  SECTION("receive: partial state, space, garbage") {
    const Failure p = classify_file("openzfs-2.3/recv-partial-state.err");
    CHECK(p.kind == FailureKind::partial_receive);
    CHECK(p.dataset == "zones/t1");
    CHECK(classify_file("illumos/recv-partial-state.err").kind == FailureKind::partial_receive);
    CHECK(classify_file("zfs-fuse/recv-out-of-space.err").kind == FailureKind::out_of_space);
    CHECK(classify_file("openzfs-2.3/recv-out-of-space.err").kind == FailureKind::out_of_space);
    CHECK(classify_file("openzfs-2.3/recv-quota.err").kind == FailureKind::out_of_space);
    CHECK(classify_file("zfs-fuse/recv-garbage.err").kind == FailureKind::bad_stream);
    CHECK_FALSE(is_transient(FailureKind::bad_stream));
  }
  SECTION("holds, names, options") {
    CHECK(classify_file("zfs-fuse/hold-again.err").kind == FailureKind::tag_exists);
    CHECK(classify_file("openzfs-2.3/hold-again.err").kind == FailureKind::tag_exists);
    CHECK(classify_file("zfs-fuse/release-unknown.err").kind == FailureKind::no_such_tag);
    CHECK(classify_file("openzfs-2.3/release-unknown.err").kind == FailureKind::no_such_tag);
    CHECK(classify_file("zfs-fuse/rename-exists.err").kind == FailureKind::already_exists);
    CHECK(classify_file("zfs-fuse/send-incr-missing.err").kind ==
          FailureKind::incremental_source_missing);
    CHECK(classify_file("zfs-fuse/recv-s-unsupported.err").kind == FailureKind::unsupported);
    CHECK(classify_file("zfs-fuse/send-nvP.err").kind == FailureKind::unsupported);
    CHECK(classify_file("zfs-fuse/get-props-unknown.err").kind == FailureKind::unsupported);
    CHECK(classify_file("zfs-fuse/set-bad-value.err").kind == FailureKind::unknown);
    CHECK(classify_failure("").kind == FailureKind::unknown);
  }
}

TEST_CASE("zfs::throw_failure", "[zfs]") {
  SECTION("Diverged carries the example snapshot") {
    try {
      throw_failure("cn2: zfs recv zones/t1",
                    testdata::read("zfs-fuse/recv-full-F-has-snapshots.err"));
      FAIL("no throw");
    } catch (const Diverged& e) {
      CHECK(e.divergence() == DivergedReason::target_has_snapshots);
      CHECK(e.target_only() == std::vector<std::string>{"zones/t1@zmigrate-m1-1"});
      CHECK(e.exit_code() == ExitCode::zfs);
      CHECK(e.subject() == "cn2: zfs recv zones/t1");
      CHECK(e.reason().starts_with("cannot receive new filesystem stream: destination has "
                                   "snapshots (eg. zones/t1@zmigrate-m1-1) must destroy them to "
                                   "overwrite it; "));
    }
  }
  SECTION("each kind becomes its type") {
    CHECK_THROWS_AS(throw_failure("w", testdata::read("zfs-fuse/exists-no.err")), DatasetMissing);
    CHECK_THROWS_AS(throw_failure("w", testdata::read("zfs-fuse/destroy-held.err")), Busy);
    CHECK_THROWS_AS(throw_failure("w", testdata::read("zfs-fuse/destroy-held.err")),
                    TransientError);
    CHECK_THROWS_AS(throw_failure("w", testdata::read("zfs-fuse/recv-incr-modified.err")),
                    Diverged);
    CHECK_THROWS_AS(throw_failure("w", testdata::read("zfs-fuse/recv-incr-mismatch.err")),
                    Diverged);
    CHECK_THROWS_AS(throw_failure("w", testdata::read("zfs-fuse/recv-out-of-space.err")),
                    OutOfSpace);
    CHECK_THROWS_AS(throw_failure("w", testdata::read("zfs-fuse/recv-empty.err")),
                    StreamInterrupted);
    CHECK_THROWS_AS(throw_failure("w", testdata::read("openzfs-2.3/recv-partial-state.err")),
                    PartialReceive);
    CHECK_THROWS_AS(throw_failure("w", testdata::read("openzfs-2.3/recv-partial-state.err")),
                    TransientError);
    try {
      throw_failure("w", testdata::read("zfs-fuse/set-bad-value.err"));
    } catch (const TransientError&) {
      FAIL("an unknown failure is not transient");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::zfs);
      CHECK(e.reason() ==
            "cannot set property for 'zones/t1': bad numeric value 'banana'; see the zfs message");
    }
  }
  SECTION("the token of an interrupted resumable receive") {
    try {
      throw_failure("w", testdata::read("openzfs-2.3/recv-truncated-resumable.err"));
      FAIL("no throw");
    } catch (const StreamInterrupted& e) {
      CHECK(e.resume_token().starts_with("1-f4d43fa5b-"));
    }
  }
  SECTION("DatasetMissing names the dataset; an empty stderr still says something") {
    try {
      throw_failure("w", testdata::read("openzfs-2.3/recv-incr-missing.err"));
      FAIL("no throw");
    } catch (const DatasetMissing& e) {
      CHECK(e.dataset() == "zones/nx");
    }
    try {
      throw_failure("cn1: zfs list", "");
      FAIL("no throw");
    } catch (const Error& e) {
      CHECK(e.reason() == "failed without a message; see the zfs message");
    }
  }
  CHECK(to_string(FailureKind::target_modified) == "target_modified");
}
