// SPDX-License-Identifier: MPL-2.0
#include "zfs_test_data.hpp"

#include <zmigrate/util/error.hpp>
#include <zmigrate/zfs/commands.hpp>

#include <string>
#include <vector>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::zfs;
using Argv = std::vector<std::string>;

namespace {

Capabilities caps_of(const std::string& dir) {
  return parse_capabilities(testdata::read(dir + "/probe.out"));
}

SnapshotName snap(const char* text) {
  return SnapshotName::parse(text);
}
DatasetName ds(const char* text) {
  return DatasetName(text);
}

} // namespace

TEST_CASE("zfs::build_list_datasets", "[zfs]") {
  CHECK(build_list_datasets({ds("zones/vm")}, Recursive::yes) ==
        Argv{"zfs", "list", "-H", "-o", "name,type", "-t", "filesystem,volume", "-r", "zones/vm"});
  CHECK(build_list_datasets({ds("zones/a"), ds("zones/b")}, Recursive::no) ==
        Argv{"zfs", "list", "-H", "-o", "name,type", "-t", "filesystem,volume", "zones/a",
             "zones/b"});
  CHECK_THROWS_AS(build_list_datasets({}, Recursive::no), UsageError);
  CHECK(build_exists(snap("zones/a@s")) == Argv{"zfs", "list", "-H", "-o", "name", "zones/a@s"});
  CHECK(build_exists(BookmarkName::parse("zones/a#b")) ==
        Argv{"zfs", "list", "-H", "-o", "name", "-t", "bookmark", "zones/a#b"});
  CHECK(build_list_snapshot_names(ds("zones/vm")) == Argv{"zfs", "list", "-H", "-t", "snapshot",
                                                          "-o", "name", "-s", "creation", "-r",
                                                          "-d", "1", "zones/vm"});
}

TEST_CASE("zfs: the listing forms SmartosNode runs", "[zfs]") {
  CHECK(build_exists_any_type(ds("zones/vm")) ==
        Argv{"zfs", "list", "-H", "-t", "all", "-o", "name", "zones/vm"});
  CHECK(build_exists_any_type(snap("zones/vm@zmigrate-m1-1")) ==
        Argv{"zfs", "list", "-H", "-t", "all", "-o", "name", "zones/vm@zmigrate-m1-1"});
  CHECK(build_list_hierarchy(ds("zones/vm")) ==
        Argv{"zfs", "list", "-H", "-o", "name", "-t", "filesystem,volume", "-r", "zones/vm"});
  CHECK(build_list_snapshots(ds("zones/vm")) == Argv{"zfs", "list", "-H", "-o", "name", "-t",
                                                     "snapshot", "-s", "creation", "-r", "-d", "1",
                                                     "zones/vm"});
  // Names are validated where they are made: nothing unvalidated reaches these builders.
  CHECK_THROWS_AS(build_list_hierarchy(ds("zones/-r")), UsageError);
  CHECK_THROWS_AS(build_list_snapshots(ds("zones/a b")), UsageError);
  CHECK_THROWS_AS(build_exists_any_type(ObjectName::parse("zones/vm@a;b")), UsageError);
}

TEST_CASE("zfs::parse_dataset_list", "[zfs]") {
  // The zfs-fuse recording lists name,type,origin,mounted; cut it to our two columns.
  const std::vector<DatasetEntry> rows = parse_dataset_list(
      "zones/vm\tfilesystem\nzones/vm/data\tfilesystem\nzones/vm/disk0\tvolume\n");
  REQUIRE(rows.size() == 3);
  CHECK(rows[0] == DatasetEntry{ds("zones/vm"), "filesystem"});
  CHECK(rows[2] == DatasetEntry{ds("zones/vm/disk0"), "volume"});
  CHECK(parse_dataset_list("").empty());
  CHECK_THROWS_AS(parse_dataset_list("zones/vm\tsnapshot\n"), Error);
  CHECK_THROWS_AS(parse_dataset_list("zones/a b\tfilesystem\n"), Error);
  CHECK_THROWS_AS(parse_dataset_list("no datasets available\n"), Error);
}

TEST_CASE("zfs::parse_snapshot_names", "[zfs]") {
  const std::vector<SnapshotName> names =
      parse_snapshot_names(testdata::read("zfs-fuse/list-snapshots.out"));
  REQUIRE(names.size() == 2);
  CHECK(names[0].str() == "zones/vm@zmigrate-m1-1");
  CHECK(names[1].str() == "zones/vm@zmigrate-m1-2");
  CHECK_THROWS_AS(parse_snapshot_names("zones/vm\n"), Error);
}

TEST_CASE("zfs::build_get_properties", "[zfs]") {
  CHECK(build_get_properties({ds("zones/vm"), snap("zones/vm@s")}, {"guid", "used"}) ==
        Argv{"zfs", "get", "-Hp", "-o", "name,property,value", "guid,used", "zones/vm",
             "zones/vm@s"});
  CHECK(build_get_properties({snap("zones/vm@b")}, {"written@a"}) ==
        Argv{"zfs", "get", "-Hp", "-o", "name,property,value", "written@a", "zones/vm@b"});
  CHECK_THROWS_AS(build_get_properties({ds("zones/vm")}, {"guid,used"}), UsageError);
  CHECK_THROWS_AS(build_get_properties({ds("zones/vm")}, {"-o"}), UsageError);
  CHECK_THROWS_AS(build_get_properties({ds("zones/vm")}, {"a b"}), UsageError);
  CHECK_THROWS_AS(build_get_properties({}, {"guid"}), UsageError);
  CHECK_THROWS_AS(build_get_properties({ds("zones/vm")}, {}), UsageError);
  CHECK_NOTHROW(validate_property_name("com.joyent:owner"));
}

TEST_CASE("zfs::build_get_tree", "[zfs]") {
  CHECK(build_get_tree({ds("zones/vm")}, {"guid", "createtxg"}) ==
        Argv{"zfs", "get", "-Hp", "-o", "name,property,value", "-r", "guid,createtxg", "zones/vm"});
  CHECK(build_get_tree({ds("zones/vm"), ds("zones/vm-disk0")},
                       {"guid", "createtxg", "receive_resume_token"}) ==
        Argv{"zfs", "get", "-Hp", "-o", "name,property,value", "-r",
             "guid,createtxg,receive_resume_token", "zones/vm", "zones/vm-disk0"});
  CHECK_THROWS_AS(build_get_tree({}, {"guid"}), UsageError); // would read every pool
  CHECK_THROWS_AS(build_get_tree({ds("zones/vm")}, {}), UsageError);
  CHECK_THROWS_AS(build_get_tree({ds("zones/vm")}, {"guid,used"}), UsageError);
  CHECK_THROWS_AS(build_get_tree({ds("zones/vm")}, {"guid", "-o"}), UsageError);
  CHECK_THROWS_AS(build_get_tree({ds("zones/vm")}, {"guid", "a\nb"}), UsageError);
  CHECK_THROWS_AS(build_get_tree({ds("zones/vm")}, {std::string("a\0b", 3)}), UsageError);
}

TEST_CASE("zfs::build_get_mountpoint_sources", "[zfs]") {
  CHECK(build_get_mountpoint_sources({ds("zones/vm")}) ==
        Argv{"zfs", "get", "-Hp", "-r", "-o", "name,property,value,source", "mountpoint,zoned,type",
             "zones/vm"});
  CHECK(build_get_mountpoint_sources({ds("zones/a"), ds("zones/b")}) ==
        Argv{"zfs", "get", "-Hp", "-r", "-o", "name,property,value,source", "mountpoint,zoned,type",
             "zones/a", "zones/b"});
  CHECK_THROWS_AS(build_get_mountpoint_sources({}), UsageError);
}

TEST_CASE("zfs::build_get_values and build_get_properties_of", "[zfs]") {
  CHECK(build_get_values({snap("zones/vm@a"), snap("zones/vm@b")}, "guid") ==
        Argv{"zfs", "get", "-Hp", "-o", "name,value", "guid", "zones/vm@a", "zones/vm@b"});
  CHECK_THROWS_AS(build_get_values({}, "guid"), UsageError);
  CHECK_THROWS_AS(build_get_values({snap("zones/vm@a")}, "guid,used"), UsageError);
  CHECK_THROWS_AS(build_get_values({snap("zones/vm@a")}, ""), UsageError);
  CHECK_THROWS_AS(build_get_values({snap("zones/vm@a")}, "guid\n"), UsageError);

  CHECK(build_get_properties_of(ds("zones/vm"), {"quota", "reservation"}) ==
        Argv{"zfs", "get", "-Hp", "-o", "property,value", "quota,reservation", "zones/vm"});
  CHECK(build_get_properties_of(snap("zones/vm@s"), {"referenced"}) ==
        Argv{"zfs", "get", "-Hp", "-o", "property,value", "referenced", "zones/vm@s"});
  CHECK_THROWS_AS(build_get_properties_of(ds("zones/vm"), {}), UsageError);
  CHECK_THROWS_AS(build_get_properties_of(ds("zones/vm"), {"quota", "-r"}), UsageError);
  CHECK_THROWS_AS(build_get_properties_of(ds("zones/vm"), {"quota reservation"}), UsageError);
}

TEST_CASE("zfs::supported_properties", "[zfs]") {
  const std::vector<std::string> all = k_standard_properties;
  const std::vector<std::string> fuse = supported_properties(all, caps_of("zfs-fuse"));
  CHECK(std::find(fuse.begin(), fuse.end(), "written") == fuse.end());
  CHECK(std::find(fuse.begin(), fuse.end(), "receive_resume_token") == fuse.end());
  CHECK(std::find(fuse.begin(), fuse.end(), "guid") != fuse.end());
  CHECK(fuse.size() == all.size() - 2);
  CHECK(supported_properties({"written@a"}, caps_of("zfs-fuse")).empty());
  CHECK(supported_properties(all, caps_of("openzfs-2.3")) == all);
}

TEST_CASE("zfs::parse_properties", "[zfs]") {
  SECTION("zfs-fuse recording: '-' is absent") {
    const PropertyTable t = parse_properties(testdata::read("zfs-fuse/get-props.out"));
    REQUIRE(t.count("zones/vm") == 1);
    REQUIRE(t.count("zones/vm@zmigrate-m1-1") == 1);
    const Properties& fs = t.at("zones/vm");
    CHECK(parse_u64(fs.at("guid")).has_value());
    CHECK(fs.at("type") == "filesystem");
    CHECK(fs.at("quota") == "1073741824");
    CHECK(fs.at("mounted") == "yes");
    CHECK(fs.at("compressratio") == "1.00x");
    CHECK(fs.count("origin") == 0);
    const Properties& s = t.at("zones/vm@zmigrate-m1-1");
    CHECK(s.at("type") == "snapshot");
    CHECK(s.count("usedbydataset") == 0);
    CHECK(s.count("quota") == 0);
    CHECK(s.count("mounted") == 0);
    CHECK(parse_u64(s.at("referenced")).value_or(0) > 0);
  }
  SECTION("partial output of a failed get still parses") {
    const PropertyTable t = parse_properties(testdata::read("zfs-fuse/get-props-missing.out"));
    CHECK(t.size() == 1);
    CHECK(t.count("zones/vm") == 1);
  }
  SECTION("resume token") {
    const PropertyTable t = parse_properties(testdata::read("openzfs-2.3/get-resume-token.out"));
    const std::optional<std::string> token = resume_token_of(t.at("zones/vm"));
    REQUIRE(token);
    CHECK(token->starts_with("1-f4d43fa5b-e0-789c"));
    CHECK_FALSE(
        resume_token_of(parse_properties("zones/vm\treceive_resume_token\t-\n").at("zones/vm")));
    CHECK_FALSE(resume_token_of(Properties{{"receive_resume_token", "1-x;rm -rf-a-b"}}));
  }
}

TEST_CASE("zfs::parse_snapshot_info", "[zfs]") {
  SECTION("zfs-fuse recording of get -r -d 1: the dataset and its children are ignored") {
    const std::vector<SnapshotInfo> s =
        parse_snapshot_info(testdata::read("zfs-fuse/get-snapshot-guids-d1.out"), ds("zones/vm"));
    REQUIRE(s.size() == 2);
    CHECK(s[0].name.str() == "zones/vm@zmigrate-m1-1");
    CHECK(s[1].name.str() == "zones/vm@zmigrate-m1-2");
    CHECK(s[0].createtxg < s[1].createtxg);
    CHECK(s[0].guid != 0);
    CHECK(s[0].guid != s[1].guid);
  }
  SECTION("ordered by createtxg, not by name") {
    const std::vector<SnapshotInfo> s = parse_snapshot_info(
        "zones/a@z\tguid\t1\nzones/a@z\tcreatetxg\t5\nzones/a@b\tguid\t2\nzones/a@b\tcreatetxg\t9\n"
        "zones/a@a\tguid\t3\nzones/a@a\tcreatetxg\t7\n",
        ds("zones/a"));
    REQUIRE(s.size() == 3);
    CHECK(s[0].name.snap() == "z");
    CHECK(s[1].name.snap() == "a");
    CHECK(s[2].name.snap() == "b");
  }
  SECTION("a snapshot without a numeric guid is an error") {
    CHECK_THROWS_AS(parse_snapshot_info("zones/a@s\tguid\t12.2E\n", ds("zones/a")), Error);
  }
  CHECK(build_get_snapshot_info(ds("zones/vm")) == Argv{"zfs", "get", "-Hp", "-r", "-d", "1", "-o",
                                                        "name,property,value", "guid,createtxg",
                                                        "zones/vm"});
}

TEST_CASE("zfs::build_snapshot", "[zfs]") {
  CHECK(build_snapshot({snap("zones/a@s"), snap("zones/b@s")}, Recursive::no) ==
        Argv{"zfs", "snapshot", "zones/a@s", "zones/b@s"});
  CHECK(build_snapshot({snap("zones/a@s")}, Recursive::yes) ==
        Argv{"zfs", "snapshot", "-r", "zones/a@s"});
  CHECK_THROWS_AS(build_snapshot({}, Recursive::no), UsageError);
}

TEST_CASE("zfs::plan_snapshot_commands", "[zfs]") {
  const Capabilities openzfs = caps_of("openzfs-2.3");
  const Capabilities fuse = caps_of("zfs-fuse");
  const std::string s = "zmigrate-m1-1";

  SECTION("bhyve: zone root with child disks and a delegated dataset → one -r, atomic anywhere") {
    const std::vector<DatasetName> tree{ds("zones/vm"), ds("zones/vm/disk0"), ds("zones/vm/data")};
    for (const Capabilities& caps : {openzfs, fuse}) {
      const SnapshotCommands p = plan_snapshot_commands(tree, tree, s, caps);
      CHECK(p.atomic);
      REQUIRE(p.commands.size() == 1);
      CHECK(p.commands[0] == Argv{"zfs", "snapshot", "-r", "zones/vm@zmigrate-m1-1"});
    }
  }
  SECTION("KVM: sibling disks → one command with multi_snapshot") {
    const std::vector<DatasetName> w{ds("zones/vm"), ds("zones/vm-disk0"), ds("zones/vm-disk1")};
    const SnapshotCommands p = plan_snapshot_commands(w, w, s, openzfs);
    CHECK(p.atomic);
    REQUIRE(p.commands.size() == 1);
    CHECK(p.commands[0] == Argv{"zfs", "snapshot", "zones/vm@zmigrate-m1-1",
                                "zones/vm-disk0@zmigrate-m1-1", "zones/vm-disk1@zmigrate-m1-1"});
  }
  SECTION("KVM on zfs-fuse: one command per dataset, not atomic") {
    const std::vector<DatasetName> w{ds("zones/vm"), ds("zones/vm-disk0")};
    const SnapshotCommands p = plan_snapshot_commands(w, w, s, fuse);
    CHECK_FALSE(p.atomic);
    REQUIRE(p.commands.size() == 2);
    CHECK(p.commands[0] == Argv{"zfs", "snapshot", "zones/vm@zmigrate-m1-1"});
    CHECK(p.commands[1] == Argv{"zfs", "snapshot", "zones/vm-disk0@zmigrate-m1-1"});
  }
  SECTION("multi roots with children, all wanted: -r on every root in one command") {
    const std::vector<DatasetName> w{ds("zones/vm"), ds("zones/vm/disk0"), ds("zones/vm-disk1")};
    const SnapshotCommands p = plan_snapshot_commands(w, w, s, openzfs);
    CHECK(p.atomic);
    REQUIRE(p.commands.size() == 1);
    CHECK(p.commands[0] ==
          Argv{"zfs", "snapshot", "-r", "zones/vm@zmigrate-m1-1", "zones/vm-disk1@zmigrate-m1-1"});
  }
  SECTION("a child that is not wanted keeps -r away") {
    const std::vector<DatasetName> w{ds("zones/vm"), ds("zones/vm/data")};
    const std::vector<DatasetName> existing{ds("zones/vm"), ds("zones/vm/data"),
                                            ds("zones/vm/tmp")};
    const SnapshotCommands p = plan_snapshot_commands(w, existing, s, openzfs);
    CHECK(p.atomic);
    REQUIRE(p.commands.size() == 1);
    CHECK(p.commands[0] ==
          Argv{"zfs", "snapshot", "zones/vm@zmigrate-m1-1", "zones/vm/data@zmigrate-m1-1"});
    const SnapshotCommands f = plan_snapshot_commands(w, existing, s, fuse);
    CHECK_FALSE(f.atomic);
    CHECK(f.commands.size() == 2);
  }
  SECTION("a single dataset without children: no -r") {
    const SnapshotCommands p = plan_snapshot_commands({ds("zones/vm")}, {ds("zones/vm")}, s, fuse);
    CHECK(p.atomic);
    REQUIRE(p.commands.size() == 1);
    CHECK(p.commands[0] == Argv{"zfs", "snapshot", "zones/vm@zmigrate-m1-1"});
  }
  SECTION("bad input") {
    CHECK_THROWS_AS(plan_snapshot_commands({}, {}, s, openzfs), UsageError);
    CHECK_THROWS_AS(plan_snapshot_commands({ds("zones/vm")}, {}, "a b", openzfs), UsageError);
  }
}

TEST_CASE("zfs::build_send", "[zfs]") {
  const Capabilities openzfs = caps_of("openzfs-2.3");
  const Capabilities fuse = caps_of("zfs-fuse");
  const Capabilities illumos = caps_of("illumos");

  SendSpec full;
  full.snapshot = snap("zones/vm@zmigrate-m1-1");
  full.replicate = true;
  full.compressed = full.large_blocks = full.embedded = true;

  SECTION("full replicate with speed-ups where the node has them") {
    CHECK(build_send(full, openzfs) ==
          Argv{"zfs", "send", "-R", "-c", "-L", "-e", "zones/vm@zmigrate-m1-1"});
    CHECK(build_send(full, illumos) ==
          Argv{"zfs", "send", "-R", "-c", "-L", "-e", "zones/vm@zmigrate-m1-1"});
    CHECK(build_send(full, fuse) == Argv{"zfs", "send", "-R", "zones/vm@zmigrate-m1-1"});
  }
  SECTION("incremental -i / -I from a snapshot") {
    SendSpec inc = full;
    inc.snapshot = snap("zones/vm@zmigrate-m1-2");
    inc.from = snap("zones/vm@zmigrate-m1-1");
    CHECK(build_send(inc, fuse) ==
          Argv{"zfs", "send", "-R", "-i", "zones/vm@zmigrate-m1-1", "zones/vm@zmigrate-m1-2"});
    inc.incremental = IncrementalKind::intermediates;
    inc.props = true;
    inc.replicate = false;
    CHECK(build_send(inc, openzfs) == Argv{"zfs", "send", "-p", "-c", "-L", "-e", "-I",
                                           "zones/vm@zmigrate-m1-1", "zones/vm@zmigrate-m1-2"});
  }
  SECTION("a clone sent incrementally from its origin") {
    SendSpec clone;
    clone.snapshot = snap("zones/vm@zmigrate-m1-1");
    clone.from = snap("zones/img@final");
    CHECK(build_send(clone, fuse) ==
          Argv{"zfs", "send", "-i", "zones/img@final", "zones/vm@zmigrate-m1-1"});
  }
  SECTION("from a bookmark: OpenZFS only") {
    SendSpec bm;
    bm.snapshot = snap("zones/vm@zmigrate-m1-2");
    bm.from = BookmarkName::parse("zones/vm#zmigrate-m1-1");
    CHECK(build_send(bm, openzfs) ==
          Argv{"zfs", "send", "-i", "zones/vm#zmigrate-m1-1", "zones/vm@zmigrate-m1-2"});
    CHECK_THROWS_AS(build_send(bm, fuse), PreconditionError);
    bm.incremental = IncrementalKind::intermediates;
    CHECK_THROWS_AS(build_send(bm, openzfs), UsageError);
    bm.incremental = IncrementalKind::single;
    bm.replicate = true;
    CHECK_THROWS_AS(build_send(bm, openzfs), UsageError);
  }
  SECTION("dry run") {
    SendSpec dry = full;
    dry.dry_run = true;
    CHECK(build_send(dry, openzfs) ==
          Argv{"zfs", "send", "-n", "-v", "-P", "-R", "-c", "-L", "-e", "zones/vm@zmigrate-m1-1"});
    CHECK_THROWS_AS(build_send(dry, fuse), PreconditionError);
  }
  SECTION("resume token") {
    SendSpec r;
    r.resume_token = "1-f4d43fa5b-e0-789c63a2";
    CHECK(build_send(r, openzfs) == Argv{"zfs", "send", "-t", "1-f4d43fa5b-e0-789c63a2"});
    r.dry_run = true;
    CHECK(build_send(r, illumos) ==
          Argv{"zfs", "send", "-n", "-v", "-P", "-t", "1-f4d43fa5b-e0-789c63a2"});
    r.dry_run = false;
    CHECK_THROWS_AS(build_send(r, fuse), PreconditionError);
    r.compressed = true; // ignored: the token carries the stream's flags
    CHECK(build_send(r, openzfs) == Argv{"zfs", "send", "-t", "1-f4d43fa5b-e0-789c63a2"});
    SendSpec both = r;
    both.snapshot = snap("zones/vm@s");
    CHECK_THROWS_AS(build_send(both, openzfs), UsageError);
    SendSpec rep = r;
    rep.replicate = true;
    CHECK_THROWS_AS(build_send(rep, openzfs), UsageError);
    SendSpec bad;
    bad.resume_token = "1-abc-e0-78;rm";
    CHECK_THROWS_AS(build_send(bad, openzfs), UsageError);
  }
  SECTION("raw sends never fall back silently") {
    SendSpec raw;
    raw.snapshot = snap("zones/vm@s");
    raw.raw = true;
    CHECK(build_send(raw, openzfs) == Argv{"zfs", "send", "-w", "zones/vm@s"});
    CHECK_THROWS_AS(build_send(raw, illumos), PreconditionError);
    CHECK_THROWS_AS(build_send(raw, fuse), PreconditionError);
  }
  SECTION("invalid specs") {
    CHECK_THROWS_AS(build_send(SendSpec{}, openzfs), UsageError);
    SendSpec same;
    same.snapshot = snap("zones/vm@s");
    same.from = snap("zones/vm@s");
    CHECK_THROWS_AS(build_send(same, openzfs), UsageError);
  }
}

TEST_CASE("zfs::build_send_estimate", "[zfs]") {
  const Capabilities openzfs = caps_of("openzfs-2.3");
  const Capabilities fuse = caps_of("zfs-fuse");
  const Capabilities illumos = caps_of("illumos");

  SendSpec full;
  full.snapshot = snap("zones/vm@zmigrate-m1-1");
  full.props = true;
  full.compressed = full.large_blocks = full.embedded = true;
  CHECK(build_send_estimate(full, openzfs) ==
        Argv{"zfs", "send", "-nvP", "-p", "-c", "-L", "-e", "zones/vm@zmigrate-m1-1"});
  full.dry_run = true; // implied either way
  CHECK(build_send_estimate(full, illumos) ==
        Argv{"zfs", "send", "-nvP", "-p", "-c", "-L", "-e", "zones/vm@zmigrate-m1-1"});
  CHECK_THROWS_AS(build_send_estimate(full, fuse), PreconditionError);

  SendSpec inc = full;
  inc.snapshot = snap("zones/vm@zmigrate-m1-2");
  inc.from = snap("zones/vm@zmigrate-m1-1");
  inc.incremental = IncrementalKind::intermediates;
  CHECK(build_send_estimate(inc, openzfs) == Argv{"zfs", "send", "-nvP", "-p", "-c", "-L", "-e",
                                                  "-I", "zones/vm@zmigrate-m1-1",
                                                  "zones/vm@zmigrate-m1-2"});
  SendSpec clone = full;
  clone.from = snap("zones/img@final");
  CHECK(build_send_estimate(clone, openzfs) == Argv{"zfs", "send", "-nvP", "-p", "-c", "-L", "-e",
                                                    "-i", "zones/img@final",
                                                    "zones/vm@zmigrate-m1-1"});

  SendSpec token;
  token.resume_token = "1-f4d43fa5b-e0-789c63a2";
  CHECK(build_send_estimate(token, openzfs) ==
        Argv{"zfs", "send", "-nvP", "-t", "1-f4d43fa5b-e0-789c63a2"});
  SendSpec bad_token;
  bad_token.resume_token = "1-abc-e0-78;rm";
  CHECK_THROWS_AS(build_send_estimate(bad_token, openzfs), UsageError);
  SendSpec same = full;
  same.from = full.snapshot;
  CHECK_THROWS_AS(build_send_estimate(same, openzfs), UsageError);
  CHECK_THROWS_AS(build_send_estimate(SendSpec{}, openzfs), UsageError);
}

TEST_CASE("zfs::build_resume_token_decode", "[zfs]") {
  CHECK(build_resume_token_decode("1-f4d43fa5b-e0-789c63a2") ==
        Argv{"zfs", "send", "-nvP", "-t", "1-f4d43fa5b-e0-789c63a2"});
  CHECK_THROWS_AS(build_resume_token_decode(""), UsageError);
  CHECK_THROWS_AS(build_resume_token_decode("1-abc-def"), UsageError);
  CHECK_THROWS_AS(build_resume_token_decode("1-abc-e0-78; rm -rf /"), UsageError);
  CHECK_THROWS_AS(build_resume_token_decode("1-abc-e0-78\n9c"), UsageError);
  CHECK_THROWS_AS(build_resume_token_decode("-t"), UsageError);
}

TEST_CASE("zfs::build_recv", "[zfs]") {
  const Capabilities openzfs = caps_of("openzfs-2.3");
  const Capabilities fuse = caps_of("zfs-fuse");
  const Capabilities illumos = caps_of("illumos");
  RecvSpec spec{ds("zones/vm")};

  CHECK(build_recv(spec, openzfs) ==
        Argv{"zfs", "recv", "-u", "-s", "-x", "encryption", "zones/vm"});
  CHECK(build_recv(spec, illumos) == Argv{"zfs", "recv", "-u", "-s", "zones/vm"});
  CHECK(build_recv(spec, fuse) == Argv{"zfs", "recv", "-u", "zones/vm"});

  spec.force = RecvForce::target_is_ours;
  CHECK(build_recv(spec, fuse) == Argv{"zfs", "recv", "-u", "-F", "zones/vm"});
  CHECK(build_recv(spec, openzfs) ==
        Argv{"zfs", "recv", "-u", "-F", "-s", "-x", "encryption", "zones/vm"});

  RecvSpec clone{ds("zones/vm")};
  clone.origin = snap("zones/img@final");
  clone.exclude_encryption = false;
  clone.resumable = false;
  clone.unmounted = false;
  CHECK(build_recv(clone, illumos) ==
        Argv{"zfs", "recv", "-o", "origin=zones/img@final", "zones/vm"});
  CHECK_THROWS_AS(build_recv(clone, fuse), PreconditionError);

  CHECK(build_recv_abort(ds("zones/vm"), openzfs) == Argv{"zfs", "recv", "-A", "zones/vm"});
  CHECK_THROWS_AS(build_recv_abort(ds("zones/vm"), fuse), PreconditionError);
}

TEST_CASE("zfs::parse_send_estimate", "[zfs]") {
  SECTION("OpenZFS 2.3 -nvP full") {
    const auto e = parse_send_estimate(testdata::read("openzfs-2.3/send-nvP-full.out"));
    REQUIRE(e);
    CHECK(e->bytes == 1597440);
    CHECK(e->parsable);
    CHECK(e->complete);
    REQUIRE(e->streams.size() == 1);
    CHECK(e->streams[0] == StreamEstimate{"", "zones/vm@zmigrate-m1-1", std::uint64_t{1597440}});
  }
  SECTION("OpenZFS 2.3 -nvP incremental") {
    const auto e = parse_send_estimate(testdata::read("openzfs-2.3/send-nvP-incr.out"));
    REQUIRE(e);
    CHECK(e->bytes == 315392);
    REQUIRE(e->streams.size() == 1);
    CHECK(e->streams[0].from == "zmigrate-m1-1");
    CHECK(e->streams[0].to == "zones/vm@zmigrate-m1-2");
  }
  SECTION("OpenZFS 2.3 -nvP -R: the size line is the total") {
    const auto e = parse_send_estimate(testdata::read("openzfs-2.3/send-nvP-R-full.out"));
    REQUIRE(e);
    CHECK(e->streams.size() == 9);
    CHECK(e->bytes == 109452360);
    const auto i = parse_send_estimate(testdata::read("openzfs-2.3/send-nvP-R-I.out"));
    REQUIRE(i);
    CHECK(i->bytes == 324096);
    CHECK(i->streams.size() == 4);
  }
  SECTION("OpenZFS 2.3 from a bookmark and with a resume token") {
    const auto b = parse_send_estimate(testdata::read("openzfs-2.3/send-nvP-bookmark.out"));
    REQUIRE(b);
    CHECK(b->streams.at(0).from == "zones/vm#zmigrate-m1-1");
    CHECK(b->bytes == 315392);
    const auto r = parse_send_estimate(testdata::read("openzfs-2.3/send-nvP-resume.out"));
    REQUIRE(r);
    CHECK(r->bytes == 1065984);
    REQUIRE(r->streams.size() == 1);
    CHECK(r->streams[0].to == "zones/vm@zmigrate-m1-1");
  }
  SECTION("human sizes (-nv): approximate") {
    const auto e = parse_send_estimate(testdata::read("openzfs-2.3/send-nv-full.out"));
    REQUIRE(e);
    CHECK_FALSE(e->parsable);
    CHECK(e->complete);
    CHECK(e->bytes == 1593836); // 1.52 MiB
    const auto r = parse_send_estimate(testdata::read("illumos/send-nv-R.out"));
    REQUIRE(r);
    REQUIRE(r->streams.size() == 4);
    CHECK(r->streams[0] == StreamEstimate{"", "zones/vm@zmigrate-m1-1", std::uint64_t{512}});
    CHECK(r->streams[1].from == "@zmigrate-m1-1");
    CHECK(r->streams[1].bytes == std::uint64_t{15872});
    CHECK(r->bytes == 10737418240ULL);
    const auto i = parse_send_estimate(testdata::read("illumos/send-nv-incr.out"));
    REQUIRE(i);
    CHECK(i->bytes == 1258291);
  }
  SECTION("older illumos -P omits a zero size") {
    const auto e = parse_send_estimate(testdata::read("illumos/send-nvP-incr-empty.out"));
    REQUIRE(e);
    CHECK(e->bytes == 0);
    CHECK(e->complete);
    CHECK(e->streams.at(0).bytes == std::uint64_t{0});
  }
  SECTION("zfs-fuse -v: streams without sizes") {
    const auto e = parse_send_estimate(testdata::read("zfs-fuse/send-v-incr-I-R.err"));
    REQUIRE(e);
    CHECK_FALSE(e->complete);
    REQUIRE(e->streams.size() == 3);
    CHECK(e->streams[0].from == "@zmigrate-m1-1");
    CHECK(e->streams[0].to == "zones/vm@zmigrate-m1-2");
    CHECK_FALSE(e->streams[0].bytes);
    const auto f = parse_send_estimate(testdata::read("zfs-fuse/send-v-R-full.err"));
    REQUIRE(f);
    CHECK(f->streams.at(0).from.empty());
  }
  SECTION("nothing recognisable") {
    CHECK_FALSE(parse_send_estimate(""));
    CHECK_FALSE(parse_send_estimate(testdata::read("zfs-fuse/send-nvP.err")));
  }
}

TEST_CASE("zfs::parse_human_size", "[zfs]") {
  CHECK(parse_human_size("512") == std::uint64_t{512});
  CHECK(parse_human_size("512B") == std::uint64_t{512});
  CHECK(parse_human_size("1K") == std::uint64_t{1024});
  CHECK(parse_human_size("1.5K") == std::uint64_t{1536});
  CHECK(parse_human_size("1.2M") == std::uint64_t{1258291});
  CHECK(parse_human_size("10.0G") == std::uint64_t{10737418240ULL});
  CHECK(parse_human_size("1.00MiB") == std::uint64_t{1048576});
  CHECK(parse_human_size("2T") == std::uint64_t{2199023255552ULL});
  CHECK_FALSE(parse_human_size(""));
  CHECK_FALSE(parse_human_size("M"));
  CHECK_FALSE(parse_human_size("1.2.3M"));
  CHECK_FALSE(parse_human_size("-1"));
  CHECK_FALSE(parse_human_size("12.2E5"));
}

TEST_CASE("zfs::is_valid_resume_token", "[zfs]") {
  CHECK(is_valid_resume_token("1-f4d43fa5b-e0-789c63a2"));
  CHECK_FALSE(is_valid_resume_token(""));
  CHECK_FALSE(is_valid_resume_token("-"));
  CHECK_FALSE(is_valid_resume_token("1-f4d-e0"));
  CHECK_FALSE(is_valid_resume_token("1-f4d-e0-78 9c"));
  CHECK_FALSE(is_valid_resume_token("1-f4d-e0-789c-1"));
  CHECK_FALSE(is_valid_resume_token("1-xyz-e0-789c"));
}

TEST_CASE("zfs::build_destroy", "[zfs]") {
  CHECK(build_destroy(ds("zones/vm"), Recursive::yes, ForceUnmount::yes) ==
        Argv{"zfs", "destroy", "-f", "-r", "zones/vm"});
  CHECK(build_destroy(ds("zones/vm"), Recursive::no, ForceUnmount::no) ==
        Argv{"zfs", "destroy", "zones/vm"});
  CHECK(build_destroy(snap("zones/vm@s"), Recursive::yes) ==
        Argv{"zfs", "destroy", "-r", "zones/vm@s"});
  CHECK(build_destroy(snap("zones/vm@s"), Recursive::no) == Argv{"zfs", "destroy", "zones/vm@s"});
}

TEST_CASE("zfs::build_hold", "[zfs]") {
  const std::string tag = migration_hold_tag("m1");
  CHECK(build_hold(tag, {snap("zones/a@s"), snap("zones/b@s")}, Recursive::no) ==
        Argv{"zfs", "hold", "zmigrate-m1", "zones/a@s", "zones/b@s"});
  CHECK(build_release(tag, {snap("zones/a@s")}, Recursive::yes) ==
        Argv{"zfs", "release", "-r", "zmigrate-m1", "zones/a@s"});
  CHECK_THROWS_AS(build_hold(".send-1", {snap("zones/a@s")}, Recursive::no), UsageError);
  CHECK_THROWS_AS(build_hold("-r", {snap("zones/a@s")}, Recursive::no), UsageError);
  CHECK_THROWS_AS(build_hold("a b", {snap("zones/a@s")}, Recursive::no), UsageError);
  CHECK_THROWS_AS(build_hold(tag, {}, Recursive::no), UsageError);
  CHECK_THROWS_AS(build_release("a\nb", {snap("zones/a@s")}, Recursive::no), UsageError);
  CHECK_THROWS_AS(build_release("", {snap("zones/a@s")}, Recursive::no), UsageError);
}

TEST_CASE("zfs::build_rename", "[zfs]") {
  CHECK(build_rename(ds("zones/a"), ds("zones/b")) == Argv{"zfs", "rename", "zones/a", "zones/b"});
  CHECK(build_rename(snap("zones/a@x"), snap("zones/a@y")) ==
        Argv{"zfs", "rename", "zones/a@x", "zones/a@y"});
  CHECK_THROWS_AS(build_rename(snap("zones/a@x"), snap("zones/b@y")), UsageError);
}

TEST_CASE("zfs::build_set", "[zfs]") {
  CHECK(build_set(ds("zones/vm"), "quota", "10737418240") ==
        Argv{"zfs", "set", "quota=10737418240", "zones/vm"});
  CHECK(build_set(ds("zones/vm"), "com.joyent:note", "it's fine; really") ==
        Argv{"zfs", "set", "com.joyent:note=it's fine; really", "zones/vm"});
  CHECK_THROWS_AS(build_set(ds("zones/vm"), "quota", "1\n2"), UsageError);
  CHECK_THROWS_AS(build_set(ds("zones/vm"), "quota=1 zones/x", "2"), UsageError);
  CHECK(build_set(ds("zones/vm"), "quota", "") == Argv{"zfs", "set", "quota=", "zones/vm"});
  CHECK_THROWS_AS(build_set(ds("zones/vm"), "quota", std::string("1\0", 2)), UsageError);
  CHECK_THROWS_AS(build_set(ds("zones/vm"), "", "1"), UsageError);
}

TEST_CASE("zfs::build_create", "[zfs]") {
  CHECK(build_create(ds("zones/a/b"), Parents::yes) == Argv{"zfs", "create", "-p", "zones/a/b"});
  CHECK(build_create(ds("zones/a"), Parents::no, {{"canmount", "off"}, {"quota", "1G"}}) ==
        Argv{"zfs", "create", "-o", "canmount=off", "-o", "quota=1G", "zones/a"});
  CHECK_THROWS_AS(build_create(ds("zones/a"), Parents::no, {{"a b", "c"}}), UsageError);
  CHECK(build_mount(ds("zones/a")) == Argv{"zfs", "mount", "zones/a"});
  CHECK(build_rollback(snap("zones/a@s"), DestroyNewer::yes) ==
        Argv{"zfs", "rollback", "-r", "zones/a@s"});
  CHECK(build_rollback(snap("zones/a@s"), DestroyNewer::no) ==
        Argv{"zfs", "rollback", "zones/a@s"});
}
