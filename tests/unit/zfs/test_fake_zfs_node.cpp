// SPDX-License-Identifier: MPL-2.0
// ZfsNode and the sync planner over tests/fakes/fake_zfs_node.hpp: a whole sync cycle with state.
#include "fakes/fake_zfs_node.hpp"

#include <zmigrate/zfs/errors.hpp>
#include <zmigrate/zfs/node.hpp>
#include <zmigrate/zfs/plan.hpp>

#include <chrono>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::zfs;
using fakes::FakeRunner;
using fakes::FakeZfsPool;
using Strings = std::vector<std::string>;

namespace {

class StillClock final : public Clock {
public:
  std::chrono::steady_clock::time_point now() const override { return m_now; }
  std::chrono::system_clock::time_point wall_now() const override { return {}; }
  void sleep_for(std::chrono::milliseconds d) override { m_now += d; }

private:
  std::chrono::steady_clock::time_point m_now{};
};

struct Node {
  FakeRunner runner;
  FakeZfsPool pool;
  ZfsNode zfs;
  Node(const std::string& host, Clock& clock, Logger& log, const Capabilities& caps)
      : runner(host), zfs(runner, clock, log) {
    pool.install(runner);
    zfs.set_capabilities(caps);
  }
};

SyncPlan plan(Node& src, Node& dst, const std::string& ds, const std::string& to) {
  SyncInput in;
  in.source = src.zfs.list_snapshots(DatasetName(ds));
  if (dst.zfs.exists(DatasetName(ds))) {
    in.target = dst.zfs.list_snapshots(DatasetName(ds));
  }
  in.to = to;
  in.resume_token = dst.zfs.resume_token(DatasetName(ds)).value_or("");
  return plan_sync(in);
}

} // namespace

TEST_CASE("zfs::ZfsNode over FakeZfsPool", "[zfs]") {
  StillClock clock;
  NullLogger log;
  for (const Capabilities& caps :
       {FakeZfsPool::openzfs_capabilities(), FakeZfsPool::zfs_fuse_capabilities()}) {
    CAPTURE(caps.implementation);
    Node cn1("cn1", clock, log, caps);
    Node cn2("cn2", clock, log, caps);
    cn1.pool.add_dataset("zones/vm");
    cn1.pool.add_dataset("zones/vm/disk0", "volume");
    cn1.pool.add_snapshot("zones/vm@user-a");
    const std::string tag = migration_hold_tag("m1");

    // begin: first migration snapshot of the whole tree, held, full send.
    const std::string s1 = migration_snap_name("m1", 1);
    CHECK(cn1.zfs.snapshot_atomic(
        {SnapshotName::parse("zones/vm@" + s1), SnapshotName::parse("zones/vm/disk0@" + s1)}));
    CHECK(cn1.runner.commands_starting_with("zfs snapshot") ==
          Strings{"zfs snapshot -r zones/vm@" + s1});
    cn1.zfs.hold(tag, {SnapshotName::parse("zones/vm@" + s1)});
    CHECK(cn1.pool.find_snapshot("zones/vm@" + s1)->holds.count(tag) == 1);

    SyncPlan p = plan(cn1, cn2, "zones/vm", s1);
    CHECK(p.action == SyncAction::full);
    cn2.pool.receive_from(cn1.pool, "zones/vm", s1, "zones/vm");
    CHECK(cn2.pool.snapshot_names("zones/vm") == Strings{"user-a", s1});

    // sync: a second snapshot goes incrementally from the one the target confirms by GUID.
    const std::string s2 = migration_snap_name("m1", 2);
    CHECK(cn1.zfs.snapshot_atomic(
        {SnapshotName::parse("zones/vm@" + s2), SnapshotName::parse("zones/vm/disk0@" + s2)}));
    p = plan(cn1, cn2, "zones/vm", s2);
    CHECK(p.action == SyncAction::incremental);
    CHECK(p.from == std::optional<std::string>(s1));
    cn2.pool.receive_from(cn1.pool, "zones/vm", s2, "zones/vm");
    CHECK(plan(cn1, cn2, "zones/vm", s2).action == SyncAction::nothing);

    // A snapshot someone made on the target blocks the next incremental.
    cn2.pool.add_snapshot("zones/vm@local");
    const std::string s3 = migration_snap_name("m1", 3);
    cn1.zfs.snapshot_atomic(
        {SnapshotName::parse("zones/vm@" + s3), SnapshotName::parse("zones/vm/disk0@" + s3)});
    p = plan(cn1, cn2, "zones/vm", s3);
    CHECK(p.action == SyncAction::conflict);
    CHECK_THROWS_AS(throw_conflict(p, "cn2: zones/vm"), Diverged);

    // finalize: a held snapshot refuses destroy (busy, retried, then Busy); release, destroy.
    CHECK_THROWS_AS(cn1.zfs.destroy_snapshot(SnapshotName::parse("zones/vm@" + s1), Recursive::yes,
                                             RetryBusy::yes),
                    Busy);
    cn1.zfs.release(tag, {SnapshotName::parse("zones/vm@" + s1)});
    cn1.zfs.release(tag, {SnapshotName::parse("zones/vm@" + s1)}); // converges
    cn1.pool.busy["zones/vm@" + s1] = 2;                           // just received: busy briefly
    CHECK(cn1.zfs.destroy_snapshot(SnapshotName::parse("zones/vm@" + s1), Recursive::yes,
                                   RetryBusy::yes));
    CHECK_FALSE(cn1.zfs.destroy_snapshot(SnapshotName::parse("zones/vm@" + s1), Recursive::yes,
                                         RetryBusy::yes));
    CHECK(cn1.pool.snapshot_names("zones/vm/disk0") == Strings{s2, s3});

    // rollback of the target: destroy what this migration received there.
    CHECK(cn2.zfs.destroy_dataset(DatasetName("zones/vm"), Recursive::yes, RetryBusy::yes));
    CHECK_FALSE(cn2.zfs.exists(DatasetName("zones/vm")));
    CHECK_FALSE(cn2.zfs.destroy_dataset(DatasetName("zones/vm"), Recursive::yes, RetryBusy::yes));
  }
}

TEST_CASE("fakes::FakeZfsPool", "[zfs]") {
  FakeZfsPool pool;
  pool.add_dataset("zones/a/b");
  CHECK(pool.has("zones/a"));
  pool.add_snapshot("zones/a/b@s", 42);
  CHECK(pool.find_snapshot("zones/a/b@s")->guid == 42);
  FakeRunner runner{"cn1"};
  pool.install(runner);
  StillClock clock;
  NullLogger log;
  ZfsNode node{runner, clock, log};
  node.set_capabilities(FakeZfsPool::openzfs_capabilities());
  CHECK(node.guid(SnapshotName::parse("zones/a/b@s")) == 42);
  node.create(DatasetName("zones/x/y"), Parents::yes);
  CHECK(pool.has("zones/x/y"));
  node.rename(DatasetName("zones/x"), DatasetName("zones/z"), RetryBusy::yes);
  CHECK(pool.has("zones/z/y"));
  CHECK_FALSE(pool.has("zones/x"));
  node.set_property(DatasetName("zones/z"), "quota", "1024");
  CHECK(node.get_properties({DatasetName("zones/z")}, {"quota", "origin"}).at("zones/z") ==
        Properties{{"quota", "1024"}});
  CHECK_THROWS_AS(node.list_datasets(DatasetName("zones/nx"), Recursive::yes), DatasetMissing);
  pool.datasets.at("zones/a/b").resume_token = "1-ab-e0-789c";
  CHECK(node.resume_token(DatasetName("zones/a/b")) == std::optional<std::string>("1-ab-e0-789c"));
}
