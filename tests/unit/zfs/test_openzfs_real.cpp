// SPDX-License-Identifier: MPL-2.0
// Outputs recorded for real from OpenZFS 2.3.2 in a lab guest (tests/lab/openzfs/record.sh into
// tests/data/zfs/openzfs-2.3-real/), where they differ from or add to the hand-written set.
#include "zfs_test_data.hpp"

#include <zmigrate/zfs/capabilities.hpp>
#include <zmigrate/zfs/commands.hpp>
#include <zmigrate/zfs/errors.hpp>

#include <string>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::zfs;

TEST_CASE("zfs::classify_failure on real OpenZFS 2.3.2 output", "[zfs]") {
  // A held snapshot: "it's being held. Run 'zfs holds -r ...'", not "dataset is busy".
  const Failure held = classify_failure(testdata::read("openzfs-2.3-real/destroy-held.err"));
  CHECK(held.kind == FailureKind::busy);
  CHECK(held.dataset == "zones/vm@zmigrate-m1-2");
  CHECK(classify_failure(testdata::read("openzfs-2.3-real/hold-again.err")).kind ==
        FailureKind::tag_exists);
  CHECK(classify_failure(testdata::read("openzfs-2.3-real/release-unknown.err")).kind ==
        FailureKind::no_such_tag);
  CHECK(classify_failure(testdata::read("openzfs-2.3-real/recv-incr-modified.err")).kind ==
        FailureKind::target_modified);
  CHECK(classify_failure(testdata::read("openzfs-2.3-real/recv-full-exists.err")).kind ==
        FailureKind::target_exists);
  CHECK(classify_failure(testdata::read("openzfs-2.3-real/recv-full-F-has-snapshots.err")).kind ==
        FailureKind::target_has_snapshots);
  CHECK(classify_failure(testdata::read("openzfs-2.3-real/recv-incr-missing.err")).kind ==
        FailureKind::dataset_missing);
  CHECK(classify_failure(testdata::read("openzfs-2.3-real/recv-truncated.err")).kind ==
        FailureKind::stream_interrupted);
  CHECK(classify_failure(testdata::read("openzfs-2.3-real/recv-empty.err")).kind ==
        FailureKind::stream_interrupted);
}

TEST_CASE("zfs::parse_send_estimate on real OpenZFS 2.3.2 output", "[zfs]") {
  // The incremental line names the source snapshot in full (the hand-written sample had only
  // the snapshot part).
  const auto i = parse_send_estimate(testdata::read("openzfs-2.3-real/send-nvP-incr.out"));
  REQUIRE(i);
  CHECK(i->bytes == 300000);
  REQUIRE(i->streams.size() == 1);
  CHECK(i->streams[0].from == "zones/vm@zmigrate-m1-1");
  CHECK(i->streams[0].to == "zones/vm@zmigrate-m1-2");
  const auto f = parse_send_estimate(testdata::read("openzfs-2.3-real/send-nvP-full.out"));
  REQUIRE(f);
  CHECK(f->bytes == 441496);
  // A resume token of a full stream: the token's contents, then a full line and the size left.
  const auto r = parse_send_estimate(testdata::read("openzfs-2.3-real/send-nvP-resume.out"));
  REQUIRE(r);
  CHECK(r->bytes == 574160);
  REQUIRE(r->streams.size() == 1);
  CHECK(r->streams[0].to == "zones/vm@zmigrate-m1-2");
}

TEST_CASE("zfs::parse_capabilities on the real OpenZFS 2.3.2 probe", "[zfs]") {
  const Capabilities c = parse_capabilities(testdata::read("openzfs-2.3-real/probe.out"));
  CHECK(c.implementation == "openzfs 2.3.2");
  CHECK(c.version == "2.3.2");
  CHECK(c.dry_run_parsable);
  CHECK(c.resume_tokens);
  CHECK(c.compressed_send);
  CHECK(c.large_blocks);
  CHECK(c.embedded_data);
  CHECK(c.raw_send);
  CHECK(c.holds);
  CHECK(c.bookmarks);
  CHECK(c.written_property);
  CHECK(c.list_parsable);
  CHECK(c.multi_snapshot);
  CHECK(c.zvols);
  CHECK(c.has_pv);
  CHECK(c.has_mbuffer);
}
