// SPDX-License-Identifier: MPL-2.0
#include "fakes/fake_runner.hpp"
#include "zfs_test_data.hpp"

#include <zmigrate/util/error.hpp>
#include <zmigrate/zfs/errors.hpp>
#include <zmigrate/zfs/node.hpp>

#include <chrono>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::zfs;
using fakes::FakeRunner;
using Strings = std::vector<std::string>;
using std::chrono::milliseconds;

namespace {

// Advances when asked to sleep and records each sleep (there is no shared fake clock yet).
class SteppingClock final : public Clock {
public:
  std::chrono::steady_clock::time_point now() const override { return m_now; }
  std::chrono::system_clock::time_point wall_now() const override { return {}; }
  void sleep_for(milliseconds d) override {
    sleeps.push_back(d);
    m_now += d;
  }
  std::vector<milliseconds> sleeps;

private:
  std::chrono::steady_clock::time_point m_now{};
};

Capabilities caps_of(const std::string& dir) {
  return parse_capabilities(testdata::read(dir + "/probe.out"));
}

const std::string k_missing = "cannot open 'zones/nx': dataset does not exist\n";
const std::string k_busy = "cannot destroy 'zones/vm@s': dataset is busy\n";

struct Fixture {
  FakeRunner runner{"cn1"};
  SteppingClock clock;
  NullLogger log;
  ZfsNode node{runner, clock, log};

  explicit Fixture(const std::string& impl = "zfs-fuse") { node.set_capabilities(caps_of(impl)); }
};

} // namespace

TEST_CASE("zfs::ZfsNode::capabilities", "[zfs]") {
  FakeRunner runner{"cn1"};
  SteppingClock clock;
  NullLogger log;
  ZfsNode node{runner, clock, log};
  runner.on_prefix("sh -c ", fakes::ok(testdata::read("zfs-fuse/probe.out")));
  CHECK(node.capabilities().implementation == "zfs-fuse");
  CHECK(node.capabilities().holds);
  CHECK(runner.commands.size() == 1); // probed once, then cached
  REQUIRE(runner.runs.size() == 1);
  CHECK(runner.runs[0].command.pipeline[0] == probe_command().pipeline[0]);

  FakeRunner banner{"cn2"};
  ZfsNode other{banner, clock, log};
  banner.set_default(fakes::ok("Welcome to SmartOS\n"));
  CHECK_THROWS_AS(other.capabilities(), Error);
}

TEST_CASE("zfs::ZfsNode::exists", "[zfs]") {
  Fixture f;
  f.runner.on("zfs list -H -o name zones/vm", fakes::ok("zones/vm\n"));
  f.runner.on("zfs list -H -o name zones/nx", fakes::failed(1, k_missing));
  f.runner.on("zfs list -H -o name zones/bad", fakes::failed(1, "internal error: out of memory\n"));
  CHECK(f.node.exists(DatasetName("zones/vm")));
  CHECK_FALSE(f.node.exists(DatasetName("zones/nx")));
  CHECK_THROWS_AS(f.node.exists(DatasetName("zones/bad")), Error);
}

TEST_CASE("zfs::ZfsNode::list_snapshots", "[zfs]") {
  Fixture f;
  f.runner.on("zfs get -Hp -r -d 1 -o name,property,value guid,createtxg zones/vm",
              fakes::ok(testdata::read("zfs-fuse/get-snapshot-guids-d1.out")));
  const std::vector<SnapshotInfo> s = f.node.list_snapshots(DatasetName("zones/vm"));
  REQUIRE(s.size() == 2);
  CHECK(s[0].name.snap() == "zmigrate-m1-1");

  f.runner.on("zfs get -Hp -r -d 1 -o name,property,value guid,createtxg zones/nx",
              fakes::failed(1, k_missing));
  try {
    f.node.list_snapshots(DatasetName("zones/nx"));
    FAIL("no throw");
  } catch (const DatasetMissing& e) {
    CHECK(e.subject() == "cn1: zfs get zones/nx");
    CHECK(e.dataset() == "zones/nx");
  }
}

TEST_CASE("zfs::ZfsNode::get_properties", "[zfs]") {
  SECTION("zfs-fuse: properties it cannot answer are not asked for") {
    Fixture f;
    f.runner.on("zfs get -Hp -o name,property,value guid,used zones/vm",
                fakes::ok("zones/vm\tguid\t42\nzones/vm\tused\t1024\n"));
    const PropertyTable t = f.node.get_properties(
        {DatasetName("zones/vm")}, {"guid", "written", "used", "receive_resume_token"});
    CHECK(t.at("zones/vm").at("guid") == "42");
    CHECK(t.at("zones/vm").count("written") == 0);
    CHECK(f.runner.commands == Strings{"zfs get -Hp -o name,property,value guid,used zones/vm"});
  }
  SECTION("OpenZFS: asked as given") {
    Fixture f("openzfs-2.3");
    f.node.get_properties({DatasetName("zones/vm")}, {"guid", "written"});
    CHECK(f.runner.commands == Strings{"zfs get -Hp -o name,property,value guid,written zones/vm"});
  }
  SECTION("nothing answerable: no command") {
    Fixture f;
    const PropertyTable t = f.node.get_properties({DatasetName("zones/vm")}, {"written"});
    CHECK(f.runner.commands.empty());
    CHECK(t.count("zones/vm") == 1);
  }
  SECTION("guid") {
    Fixture f;
    f.runner.on("zfs get -Hp -o name,property,value guid zones/vm@s",
                fakes::ok("zones/vm@s\tguid\t77\n"));
    CHECK(f.node.guid(SnapshotName::parse("zones/vm@s")) == 77);
  }
}

TEST_CASE("zfs::ZfsNode::snapshot_atomic", "[zfs]") {
  const std::string list_bhyve =
      "zfs list -H -o name,type -t filesystem,volume -r zones/vm zones/vm/disk0 zones/vm/data";
  const std::string tree =
      "zones/vm\tfilesystem\nzones/vm/data\tfilesystem\nzones/vm/disk0\tvolume\n"
      "zones/vm/data\tfilesystem\nzones/vm/disk0\tvolume\n";
  const std::vector<SnapshotName> bhyve{SnapshotName::parse("zones/vm@zmigrate-m1-1"),
                                        SnapshotName::parse("zones/vm/disk0@zmigrate-m1-1"),
                                        SnapshotName::parse("zones/vm/data@zmigrate-m1-1")};
  SECTION("bhyve zone on zfs-fuse: one recursive snapshot") {
    Fixture f;
    f.runner.on(list_bhyve, fakes::ok(tree));
    CHECK(f.node.snapshot_atomic(bhyve));
    CHECK(f.runner.commands == Strings{list_bhyve, "zfs snapshot -r zones/vm@zmigrate-m1-1"});
  }
  SECTION("KVM sibling disks: one command on OpenZFS, one each on zfs-fuse") {
    const std::vector<SnapshotName> kvm{SnapshotName::parse("zones/vm@s"),
                                        SnapshotName::parse("zones/vm-disk0@s")};
    const std::string list =
        "zfs list -H -o name,type -t filesystem,volume -r zones/vm zones/vm-disk0";
    Fixture o("openzfs-2.3");
    o.runner.on(list, fakes::ok("zones/vm\tfilesystem\nzones/vm-disk0\tvolume\n"));
    CHECK(o.node.snapshot_atomic(kvm));
    CHECK(o.runner.commands == Strings{list, "zfs snapshot zones/vm@s zones/vm-disk0@s"});
    Fixture f;
    f.runner.on(list, fakes::ok("zones/vm\tfilesystem\nzones/vm-disk0\tvolume\n"));
    CHECK_FALSE(f.node.snapshot_atomic(kvm));
    CHECK(f.runner.commands ==
          Strings{list, "zfs snapshot zones/vm@s", "zfs snapshot zones/vm-disk0@s"});
  }
  SECTION("a re-run finds the snapshots made: converges") {
    Fixture f;
    f.runner.on(list_bhyve, fakes::ok(tree));
    f.runner.on(
        "zfs snapshot -r zones/vm@zmigrate-m1-1",
        fakes::failed(1,
                      "cannot create snapshot 'zones/vm@zmigrate-m1-1': dataset already exists\n"));
    f.runner.on("zfs list -H -o name zones/vm@zmigrate-m1-1",
                fakes::ok("zones/vm@zmigrate-m1-1\n"));
    CHECK(f.node.snapshot_atomic(bhyve));
  }
  SECTION("a missing dataset stops it before any snapshot") {
    Fixture f;
    f.runner.on_prefix("zfs list",
                       fakes::failed(1, "cannot open 'zones/vm/data': dataset does not exist\n"));
    CHECK_THROWS_AS(f.node.snapshot_atomic(bhyve), DatasetMissing);
    CHECK(f.runner.commands_starting_with("zfs snapshot").empty());
  }
  SECTION("mixed snapshot names are refused") {
    Fixture f;
    CHECK_THROWS_AS(f.node.snapshot_atomic(
                        {SnapshotName::parse("zones/a@x"), SnapshotName::parse("zones/b@y")}),
                    UsageError);
    CHECK(f.runner.commands.empty());
  }
}

TEST_CASE("zfs::ZfsNode::destroy_snapshot", "[zfs]") {
  const SnapshotName s = SnapshotName::parse("zones/vm@s");
  SECTION("busy for a while, then gone: retried with backoff on the injected clock") {
    Fixture f;
    f.runner.on("zfs destroy zones/vm@s", fakes::failed(1, k_busy), 3);
    CHECK(f.node.destroy_snapshot(s, Recursive::no, RetryBusy::yes));
    CHECK(f.runner.commands.size() == 4);
    CHECK(f.clock.sleeps ==
          std::vector<milliseconds>{milliseconds(100), milliseconds(200), milliseconds(400)});
  }
  SECTION("busy beyond ~3 s: Busy, a transient error") {
    Fixture f;
    f.runner.on("zfs destroy zones/vm@s", fakes::failed(1, k_busy));
    CHECK_THROWS_AS(f.node.destroy_snapshot(s, Recursive::no, RetryBusy::yes), Busy);
    milliseconds slept{0};
    for (milliseconds d : f.clock.sleeps) {
      slept += d;
    }
    CHECK(slept <= milliseconds(3000));
    CHECK(slept >= milliseconds(2000));
    CHECK(f.clock.sleeps == std::vector<milliseconds>{milliseconds(100), milliseconds(200),
                                                      milliseconds(400), milliseconds(800),
                                                      milliseconds(800)});
  }
  SECTION("without retry: one attempt") {
    Fixture f;
    f.runner.on("zfs destroy zones/vm@s", fakes::failed(1, k_busy));
    CHECK_THROWS_AS(f.node.destroy_snapshot(s, Recursive::no, RetryBusy::no), TransientError);
    CHECK(f.runner.commands.size() == 1);
    CHECK(f.clock.sleeps.empty());
  }
  SECTION("already gone (zfs-fuse and OpenZFS wording): false") {
    Fixture f;
    f.runner.on("zfs destroy -r zones/vm@s",
                fakes::failed(1, testdata::read("zfs-fuse/destroy-snap-missing.err")));
    CHECK_FALSE(f.node.destroy_snapshot(s, Recursive::yes, RetryBusy::yes));
    Fixture o("openzfs-2.3");
    o.runner.on("zfs destroy zones/vm@s",
                fakes::failed(1, testdata::read("openzfs-2.3/destroy-snap-missing.err")));
    CHECK_FALSE(o.node.destroy_snapshot(s, Recursive::no, RetryBusy::yes));
  }
  SECTION("other failures are typed and name host, verb and operand") {
    Fixture f;
    f.runner.on("zfs destroy zones/vm@s",
                fakes::failed(1, testdata::read("zfs-fuse/destroy-snap-has-clone.err")));
    try {
      f.node.destroy_snapshot(s, Recursive::no, RetryBusy::yes);
      FAIL("no throw");
    } catch (const Error& e) {
      CHECK(e.subject() == "cn1: zfs destroy zones/vm@s");
      CHECK(e.exit_code() == ExitCode::zfs);
      CHECK(e.reason().find("snapshot has dependent clones") != std::string::npos);
    }
  }
}

TEST_CASE("zfs::ZfsNode::destroy_dataset", "[zfs]") {
  Fixture f;
  f.runner.on("zfs destroy -r zones/t8",
              fakes::failed(1, testdata::read("zfs-fuse/destroy-busy-after-recv.err")), 1);
  CHECK(f.node.destroy_dataset(DatasetName("zones/t8"), Recursive::yes, RetryBusy::yes));
  CHECK(f.runner.commands == Strings{"zfs destroy -r zones/t8", "zfs destroy -r zones/t8"});
  f.runner.on("zfs destroy -f -r zones/nx", fakes::failed(1, k_missing));
  CHECK_FALSE(f.node.destroy_dataset(DatasetName("zones/nx"), Recursive::yes, RetryBusy::yes,
                                     ForceUnmount::yes));
}

TEST_CASE("zfs::ZfsNode::hold", "[zfs]") {
  const std::vector<SnapshotName> two{SnapshotName::parse("zones/a@s"),
                                      SnapshotName::parse("zones/b@s")};
  SECTION("one command for all") {
    Fixture f;
    f.node.hold("zmigrate-m1", two);
    f.node.release("zmigrate-m1", two);
    CHECK(f.runner.commands == Strings{"zfs hold zmigrate-m1 zones/a@s zones/b@s",
                                       "zfs release zmigrate-m1 zones/a@s zones/b@s"});
  }
  SECTION("a hold already there: the rest one by one") {
    Fixture f;
    f.runner.on("zfs hold zmigrate-m1 zones/a@s zones/b@s",
                fakes::failed(1, testdata::read("zfs-fuse/hold-again.err")));
    f.runner.on("zfs hold zmigrate-m1 zones/a@s",
                fakes::failed(1, testdata::read("openzfs-2.3/hold-again.err")));
    f.node.hold("zmigrate-m1", two);
    CHECK(f.runner.commands == Strings{"zfs hold zmigrate-m1 zones/a@s zones/b@s",
                                       "zfs hold zmigrate-m1 zones/a@s",
                                       "zfs hold zmigrate-m1 zones/b@s"});
  }
  SECTION("a release of a missing hold or snapshot converges") {
    Fixture f;
    f.runner.on("zfs release zmigrate-m1 zones/a@s zones/b@s",
                fakes::failed(1, testdata::read("zfs-fuse/release-unknown.err")));
    f.runner.on("zfs release zmigrate-m1 zones/b@s", fakes::failed(1, k_missing));
    CHECK_NOTHROW(f.node.release("zmigrate-m1", two));
  }
  SECTION("a node without holds: no command") {
    Fixture f;
    Capabilities c = caps_of("zfs-fuse");
    c.holds = false;
    f.node.set_capabilities(c);
    f.node.hold("zmigrate-m1", two);
    f.node.release("zmigrate-m1", two);
    CHECK(f.runner.commands.empty());
  }
  SECTION("bad tags never reach the node") {
    Fixture f;
    CHECK_THROWS_AS(f.node.hold("-r", two), UsageError);
    CHECK(f.runner.commands.empty());
  }
}

TEST_CASE("zfs::ZfsNode::resume_token", "[zfs]") {
  Fixture fuse;
  CHECK_FALSE(fuse.node.resume_token(DatasetName("zones/vm")));
  CHECK(fuse.runner.commands.empty());

  Fixture o("openzfs-2.3");
  o.runner.on("zfs get -Hp -o name,property,value receive_resume_token zones/vm",
              fakes::ok(testdata::read("openzfs-2.3/get-resume-token.out")));
  o.runner.on("zfs get -Hp -o name,property,value receive_resume_token zones/new",
              fakes::ok("zones/new\treceive_resume_token\t-\n"));
  o.runner.on("zfs get -Hp -o name,property,value receive_resume_token zones/nx",
              fakes::failed(1, k_missing));
  CHECK(o.node.resume_token(DatasetName("zones/vm")).value_or("").starts_with("1-f4d43fa5b-"));
  CHECK_FALSE(o.node.resume_token(DatasetName("zones/new")));
  CHECK_FALSE(o.node.resume_token(DatasetName("zones/nx")));
}

TEST_CASE("zfs::ZfsNode::estimate_send", "[zfs]") {
  SendSpec full;
  full.snapshot = SnapshotName::parse("zones/vm@zmigrate-m1-1");
  SendSpec inc;
  inc.snapshot = SnapshotName::parse("zones/vm@zmigrate-m1-2");
  inc.from = SnapshotName::parse("zones/vm@zmigrate-m1-1");

  SECTION("OpenZFS: the dry run's own figure") {
    Fixture f("openzfs-2.3");
    f.runner.on("zfs send -n -v -P -i zones/vm@zmigrate-m1-1 zones/vm@zmigrate-m1-2",
                fakes::ok(testdata::read("openzfs-2.3/send-nvP-incr.out")));
    const SendSize s = f.node.estimate_send(inc);
    CHECK(s.bytes == 315392);
    CHECK(s.exact);
    CHECK(s.method == "zfs send -nvP");
  }
  SECTION("zfs-fuse full: referenced of the snapshot") {
    Fixture f;
    f.runner.on("zfs get -Hp -o name,property,value referenced zones/vm@zmigrate-m1-1",
                fakes::ok("zones/vm@zmigrate-m1-1\treferenced\t1187840\n"));
    const SendSize s = f.node.estimate_send(full);
    CHECK(s.bytes == 1187840);
    CHECK_FALSE(s.exact);
    CHECK(s.method == "properties");
  }
  SECTION("zfs-fuse incremental: growth of referenced, never negative") {
    Fixture f;
    f.runner.on("zfs get -Hp -o name,property,value referenced zones/vm@zmigrate-m1-2 "
                "zones/vm@zmigrate-m1-1",
                fakes::ok("zones/vm@zmigrate-m1-2\treferenced\t1458176\nzones/"
                          "vm@zmigrate-m1-1\treferenced\t1187840\n"));
    CHECK(f.node.estimate_send(inc).bytes == 1458176 - 1187840);
    Fixture g;
    g.runner.on_prefix(
        "zfs get",
        fakes::ok(
            "zones/vm@zmigrate-m1-2\treferenced\t100\nzones/vm@zmigrate-m1-1\treferenced\t900\n"));
    CHECK(g.node.estimate_send(inc).bytes == 0);
  }
  SECTION("zfs-fuse replicate: summed over the tree") {
    Fixture f;
    SendSpec rep = full;
    rep.replicate = true;
    f.runner.on("zfs list -H -o name,type -t filesystem,volume -r zones/vm",
                fakes::ok("zones/vm\tfilesystem\nzones/vm/data\tfilesystem\n"));
    f.runner.on("zfs get -Hp -o name,property,value referenced zones/vm@zmigrate-m1-1 "
                "zones/vm/data@zmigrate-m1-1",
                fakes::ok("zones/vm@zmigrate-m1-1\treferenced\t1000\nzones/vm/"
                          "data@zmigrate-m1-1\treferenced\t500\n"));
    CHECK(f.node.estimate_send(rep).bytes == 1500);
  }
  SECTION("zfs-fuse replicate incremental: a child without the old snapshot counts whole") {
    Fixture f;
    SendSpec rep = inc;
    rep.replicate = true;
    f.runner.on("zfs list -H -o name,type -t filesystem,volume -r zones/vm",
                fakes::ok("zones/vm\tfilesystem\nzones/vm/new\tfilesystem\n"));
    f.runner.on(
        "zfs get -Hp -o name,property,value referenced zones/vm@zmigrate-m1-2 "
        "zones/vm@zmigrate-m1-1 zones/vm/new@zmigrate-m1-2 zones/vm/new@zmigrate-m1-1",
        fakes::result(
            1,
            "zones/vm@zmigrate-m1-2\treferenced\t3000\nzones/vm@zmigrate-m1-1\treferenced\t1000\n"
            "zones/vm/new@zmigrate-m1-2\treferenced\t700\n",
            "cannot open 'zones/vm/new@zmigrate-m1-1': dataset does not exist\n"));
    CHECK(f.node.estimate_send(rep).bytes == 2000 + 700);
    f.runner.on_prefix(
        "zfs get",
        fakes::failed(1, "cannot open 'zones/vm@zmigrate-m1-2': dataset does not exist\n"));
    f.runner.on("zfs list -H -o name,type -t filesystem,volume -r zones/vm",
                fakes::ok("zones/vm\tfilesystem\n"));
    CHECK_THROWS_AS(f.node.estimate_send(inc), DatasetMissing);
  }
  SECTION("no dry run but `written` (a node like that): written@from") {
    Fixture f("illumos");
    Capabilities c = caps_of("illumos");
    c.dry_run_parsable = false;
    f.node.set_capabilities(c);
    f.runner.on("zfs get -Hp -o name,property,value referenced,written@zmigrate-m1-1 "
                "zones/vm@zmigrate-m1-2",
                fakes::ok("zones/vm@zmigrate-m1-2\treferenced\t9999\nzones/"
                          "vm@zmigrate-m1-2\twritten@zmigrate-m1-1\t4096\n"));
    CHECK(f.node.estimate_send(inc).bytes == 4096);
  }
  SECTION("a resume token without dry runs cannot be estimated") {
    Fixture f;
    SendSpec r;
    r.resume_token = "1-ab-e0-789c";
    CHECK_THROWS_AS(f.node.estimate_send(r), PreconditionError);
  }
}

TEST_CASE("zfs::ZfsNode misc", "[zfs]") {
  SECTION("a configured zfs path replaces argv[0]") {
    FakeRunner runner{"cn1"};
    SteppingClock clock;
    NullLogger log;
    ZfsNodeOptions options;
    options.zfs_path = "/usr/sbin/zfs";
    ZfsNode node{runner, clock, log, options};
    node.set_capabilities(caps_of("zfs-fuse"));
    node.mount(DatasetName("zones/vm"));
    CHECK(runner.commands == Strings{"/usr/sbin/zfs mount zones/vm"});
  }
  SECTION("mount of a mounted dataset, create, set, rename, rollback") {
    Fixture f;
    f.runner.on("zfs mount zones/t1",
                fakes::failed(1, testdata::read("zfs-fuse/mount-already.err")));
    CHECK_NOTHROW(f.node.mount(DatasetName("zones/t1")));
    f.node.create(DatasetName("zones/p/q"), Parents::yes);
    f.node.set_property(DatasetName("zones/vm"), "quota", "none");
    f.node.rename(DatasetName("zones/a"), DatasetName("zones/b"), RetryBusy::yes);
    f.node.rollback(SnapshotName::parse("zones/a@s"), DestroyNewer::yes);
    CHECK(f.runner.commands == Strings{"zfs mount zones/t1", "zfs create -p zones/p/q",
                                       "zfs set quota=none zones/vm", "zfs rename zones/a zones/b",
                                       "zfs rollback -r zones/a@s"});
    f.runner.on("zfs rename zones/t1 zones/t2",
                fakes::failed(1, testdata::read("zfs-fuse/rename-exists.err")));
    CHECK_THROWS_AS(f.node.rename(DatasetName("zones/t1"), DatasetName("zones/t2"), RetryBusy::yes),
                    Error);
  }
  SECTION("recv -A only where resume tokens exist") {
    Fixture f;
    f.node.recv_abort(DatasetName("zones/vm"));
    CHECK(f.runner.commands.empty());
    Fixture o("openzfs-2.3");
    o.runner.on(
        "zfs recv -A zones/vm",
        fakes::failed(1, "'zones/vm' does not have any resumable receive state to abort\n"));
    CHECK_NOTHROW(o.node.recv_abort(DatasetName("zones/vm")));
    CHECK(o.runner.commands == Strings{"zfs recv -A zones/vm"});
  }
}
