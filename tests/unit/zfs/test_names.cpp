// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/util/error.hpp>
#include <zmigrate/zfs/names.hpp>

#include <string>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::zfs;

TEST_CASE("zfs::DatasetName", "[zfs]") {
  SECTION("accepts Triton names") {
    CHECK(DatasetName("zones").str() == "zones");
    CHECK(DatasetName("zones/4e7b1c5a-0d2f-4a47-9b3c-2f2f1a9e0c11").pool() == "zones");
    CHECK(DatasetName("zones/4e7b1c5a-0d2f-4a47-9b3c-2f2f1a9e0c11-disk0").str().size() > 10);
    CHECK(DatasetName("zones/a/b_c.d:e-f").str() == "zones/a/b_c.d:e-f");
  }
  SECTION("rejects shell metacharacters, spaces, options and path tricks") {
    for (const char* bad :
         {"",           "zones/a b",  "zones/a;rm", "zones/$(x)",   "zones/`x`", "zones/a|b",
          "zones/a&b",  "zones/a'b",  "zones/a\"b", "zones/a\\b",   "zones/a*",  "zones/a?",
          "zones/a\nb", "zones/a\tb", "-zones",     "zones/-rf",    "zones//a",  "zones/",
          "/zones",     "zones/..",   "zones/.",    "zones/a/../b", "zones/a@s", "zones/a#b",
          "zones/a%b",  "1zones",     "zones/a>b",  "zones/é"}) {
      CAPTURE(std::string(bad));
      CHECK_THROWS_AS(DatasetName(bad), UsageError);
    }
  }
  SECTION("255 characters at most") {
    const std::string ok = "zones/" + std::string(249, 'a');
    CHECK(DatasetName(ok).str().size() == 255);
    CHECK_THROWS_AS(DatasetName(ok + "a"), UsageError);
  }
  SECTION("the error names the offending text with control bytes escaped") {
    try {
      DatasetName("zones/a\nb");
      FAIL("no throw");
    } catch (const UsageError& e) {
      CHECK(e.subject() == "dataset name 'zones/a\\x0ab'");
    }
  }
  SECTION("parent, child, contains, is_pool") {
    const DatasetName ds("zones/vm/disk0");
    CHECK(ds.parent() == DatasetName("zones/vm"));
    CHECK(DatasetName("zones").is_pool());
    CHECK_FALSE(ds.is_pool());
    CHECK_THROWS_AS(DatasetName("zones").parent(), UsageError);
    CHECK(DatasetName("zones/vm").child("disk0") == ds);
    CHECK_THROWS_AS(DatasetName("zones/vm").child("a b"), UsageError);
    CHECK(DatasetName("zones/vm").contains(ds));
    CHECK(DatasetName("zones").contains(ds));
    CHECK_FALSE(ds.contains(ds));
    CHECK_FALSE(DatasetName("zones/v").contains(ds)); // prefix of a component is not a parent
    CHECK_FALSE(ds.contains(DatasetName("zones/vm")));
  }
}

TEST_CASE("zfs::SnapshotName", "[zfs]") {
  const SnapshotName s = SnapshotName::parse("zones/vm@zmigrate-m1-1");
  CHECK(s.dataset() == DatasetName("zones/vm"));
  CHECK(s.snap() == "zmigrate-m1-1");
  CHECK(s.str() == "zones/vm@zmigrate-m1-1");
  CHECK(SnapshotName(DatasetName("zones/vm"), "vm-migration-1").str() == "zones/vm@vm-migration-1");
  for (const char* bad : {"zones/vm", "zones/vm@", "zones/vm@a b", "zones/vm@-r", "zones/vm@a@b",
                          "zones/vm@a/b", "zones/vm@..", "@snap", "zones/vm@a;b", "zones/vm@a#b"}) {
    CAPTURE(std::string(bad));
    CHECK_THROWS_AS(SnapshotName::parse(bad), UsageError);
  }
  const std::string ds = "zones/" + std::string(240, 'a');
  CHECK(SnapshotName(DatasetName(ds), std::string(8, 's')).str().size() == 255);
  CHECK_THROWS_AS(SnapshotName(DatasetName(ds), std::string(9, 's')), UsageError);
}

TEST_CASE("zfs::BookmarkName", "[zfs]") {
  const BookmarkName b = BookmarkName::parse("zones/vm#zmigrate-m1-1");
  CHECK(b.dataset() == DatasetName("zones/vm"));
  CHECK(b.bookmark() == "zmigrate-m1-1");
  CHECK(b.str() == "zones/vm#zmigrate-m1-1");
  CHECK_THROWS_AS(BookmarkName::parse("zones/vm"), UsageError);
  CHECK_THROWS_AS(BookmarkName::parse("zones/vm#"), UsageError);
  CHECK_THROWS_AS(BookmarkName::parse("zones/vm#a b"), UsageError);
}

TEST_CASE("zfs::ObjectName", "[zfs]") {
  CHECK(ObjectName::parse("zones/a").str() == "zones/a");
  CHECK(ObjectName::parse("zones/a@s").str() == "zones/a@s");
  CHECK(ObjectName::parse("zones/a#b").str() == "zones/a#b");
  CHECK_THROWS_AS(ObjectName::parse("zones/a@"), UsageError);
  const ObjectName from_snap = SnapshotName::parse("zones/a@s");
  CHECK(from_snap.str() == "zones/a@s");
}

TEST_CASE("zfs::migration_snap_name", "[zfs]") {
  CHECK(migration_snap_name("m1", 1) == "zmigrate-m1-1");
  CHECK(migration_snap_name("4e7b1c5a-0d2f-4a47-9b3c-2f2f1a9e0c11", 12) ==
        "zmigrate-4e7b1c5a-0d2f-4a47-9b3c-2f2f1a9e0c11-12");
  CHECK_THROWS_AS(migration_snap_name("m1", 0), UsageError);
  CHECK_THROWS_AS(migration_snap_name("", 1), UsageError);
  CHECK_THROWS_AS(migration_snap_name("a b", 1), UsageError);
  CHECK_THROWS_AS(migration_snap_name("a_b", 1), UsageError);
  CHECK(migration_hold_tag("m1") == "zmigrate-m1");
  CHECK_THROWS_AS(migration_hold_tag("m;1"), UsageError);
}

TEST_CASE("zfs::parse_migration_snap", "[zfs]") {
  const std::string uuid = "4e7b1c5a-0d2f-4a47-9b3c-2f2f1a9e0c11";
  CHECK(parse_migration_snap("m1", "zmigrate-m1-1") == 1);
  CHECK(parse_migration_snap("m1", "zmigrate-m1-42") == 42);
  CHECK(parse_migration_snap(uuid, migration_snap_name(uuid, 7)) == 7);
  CHECK(parse_migration_snap("m1", "zmigrate-m2-1") == -1);
  CHECK(parse_migration_snap("m1", "zmigrate-m1-") == -1);
  CHECK(parse_migration_snap("m1", "zmigrate-m1-01") == -1);
  CHECK(parse_migration_snap("m1", "zmigrate-m1-1x") == -1);
  CHECK(parse_migration_snap("m1", "zmigrate-m11-1") == -1);
  CHECK(parse_migration_snap("m1", "vm-migration-1") == -1);
  CHECK(parse_migration_snap("m1", "zmigrate-m1-9999999999") == -1);
  // An id that is a prefix of another migration's id does not claim its snapshots.
  CHECK(parse_migration_snap("4e7b1c5a", migration_snap_name(uuid, 3)) == -1);
}

TEST_CASE("zfs::is_zmigrate_snap", "[zfs]") {
  CHECK(is_zmigrate_snap("zmigrate-m1-1"));
  CHECK(is_zmigrate_snap("zmigrate-4e7b1c5a-0d2f-4a47-9b3c-2f2f1a9e0c11-3"));
  CHECK_FALSE(is_zmigrate_snap("zmigrate--1"));
  CHECK_FALSE(is_zmigrate_snap("zmigrate-m1"));
  CHECK_FALSE(is_zmigrate_snap("zmigrate-m1-0"));
  CHECK_FALSE(is_zmigrate_snap("vm-migration-1"));
  CHECK_FALSE(is_zmigrate_snap("daily-2026-01-01"));
}
