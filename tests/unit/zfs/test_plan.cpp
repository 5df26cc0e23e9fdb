// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/util/error.hpp>
#include <zmigrate/zfs/plan.hpp>

#include <string>
#include <vector>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::zfs;
using Names = std::vector<std::string>;

namespace {

// Snapshots of `dataset` named and GUID'd as given, createtxg in list order.
std::vector<SnapshotInfo> snaps(const char* dataset,
                                std::vector<std::pair<const char*, std::uint64_t>> list) {
  std::vector<SnapshotInfo> out;
  std::uint64_t txg = 10;
  for (const auto& [name, guid] : list) {
    out.push_back(SnapshotInfo{SnapshotName(DatasetName(dataset), name), guid, txg});
    txg += 10;
  }
  return out;
}

const std::vector<SnapshotInfo> k_source = snaps("zones/vm", {{"daily-1", 101},
                                                              {"zmigrate-m1-1", 201},
                                                              {"user-a", 301},
                                                              {"zmigrate-m1-2", 401},
                                                              {"zmigrate-m1-3", 501}});

SyncInput input(std::optional<std::vector<SnapshotInfo>> target, std::string to = "zmigrate-m1-3") {
  SyncInput in;
  in.source = k_source;
  in.target = std::move(target);
  in.to = std::move(to);
  return in;
}

} // namespace

TEST_CASE("zfs::plan_sync", "[zfs]") {
  SECTION("no target dataset: full send") {
    const SyncPlan p = plan_sync(input(std::nullopt));
    CHECK(p.action == SyncAction::full);
    CHECK(p.to == "zmigrate-m1-3");
    CHECK_FALSE(p.from);
    CHECK_FALSE(p.force);
    CHECK(p.source_only.size() == 5);
  }
  SECTION("target exists without snapshots") {
    const SyncPlan theirs = plan_sync(input(std::vector<SnapshotInfo>{}));
    CHECK(theirs.action == SyncAction::conflict);
    CHECK(theirs.conflict == DivergedReason::target_exists);
    SyncInput in = input(std::vector<SnapshotInfo>{});
    in.ownership = RecvForce::target_is_ours;
    const SyncPlan ours = plan_sync(in);
    CHECK(ours.action == SyncAction::full);
    CHECK(ours.force);
  }
  SECTION("common newest snapshot: incremental from it, intermediates listed") {
    const SyncPlan p = plan_sync(input(snaps("zones/vm", {{"zmigrate-m1-1", 201}})));
    CHECK(p.action == SyncAction::incremental);
    CHECK(p.from == std::optional<std::string>("zmigrate-m1-1"));
    CHECK(p.common == p.from);
    CHECK(p.intermediates == Names{"user-a", "zmigrate-m1-2"});
    CHECK_FALSE(p.force);
    CHECK(p.source_only == Names{"zones/vm@daily-1", "zones/vm@user-a", "zones/vm@zmigrate-m1-2",
                                 "zones/vm@zmigrate-m1-3"});
    CHECK(p.target_only.empty());
  }
  SECTION("the newest common snapshot wins over older ones") {
    const SyncPlan p = plan_sync(input(
        snaps("zones/vm", {{"daily-1", 101}, {"zmigrate-m1-1", 201}, {"zmigrate-m1-2", 401}})));
    CHECK(p.action == SyncAction::incremental);
    CHECK(p.from == std::optional<std::string>("zmigrate-m1-2"));
    CHECK(p.intermediates.empty());
  }
  SECTION("common by GUID even when the target named it differently") {
    const SyncPlan p = plan_sync(input(snaps("zones/other", {{"renamed", 401}})));
    CHECK(p.action == SyncAction::incremental);
    CHECK(p.from == std::optional<std::string>("zmigrate-m1-2")); // the source's name
  }
  SECTION("names equal but GUIDs differ: not common") {
    const SyncPlan p = plan_sync(input(snaps("zones/vm", {{"zmigrate-m1-1", 999}})));
    CHECK(p.action == SyncAction::conflict);
    CHECK(p.conflict == DivergedReason::no_common_snapshot);
    CHECK(p.target_only == Names{"zones/vm@zmigrate-m1-1"});
    CHECK_FALSE(p.common);
  }
  SECTION("same name, other GUID, after a real common snapshot: target ahead") {
    const SyncPlan p =
        plan_sync(input(snaps("zones/vm", {{"zmigrate-m1-1", 201}, {"zmigrate-m1-2", 999}})));
    CHECK(p.action == SyncAction::conflict);
    CHECK(p.conflict == DivergedReason::target_ahead);
    CHECK(p.common == std::optional<std::string>("zmigrate-m1-1"));
    CHECK(p.target_only == Names{"zones/vm@zmigrate-m1-2"});
  }
  SECTION("target has its own newer snapshots: conflict even when ours") {
    SyncInput in = input(snaps("zones/vm", {{"zmigrate-m1-2", 401}, {"local-x", 777}}));
    in.ownership = RecvForce::target_is_ours;
    const SyncPlan p = plan_sync(in);
    CHECK(p.action == SyncAction::conflict);
    CHECK(p.conflict == DivergedReason::target_ahead);
    CHECK(p.common == std::optional<std::string>("zmigrate-m1-2"));
    CHECK(p.explanation.find("local-x") != std::string::npos);
  }
  SECTION("older target-only snapshots do not block an incremental") {
    const SyncPlan p =
        plan_sync(input(snaps("zones/vm", {{"old-local", 55}, {"zmigrate-m1-2", 401}})));
    CHECK(p.action == SyncAction::incremental);
    CHECK(p.from == std::optional<std::string>("zmigrate-m1-2"));
    CHECK(p.target_only == Names{"zones/vm@old-local"});
  }
  SECTION("target already has the snapshot, or a newer one of the source") {
    const SyncPlan done = plan_sync(input(snaps("zones/vm", {{"zmigrate-m1-3", 501}})));
    CHECK(done.action == SyncAction::nothing);
    const SyncPlan ahead =
        plan_sync(input(snaps("zones/vm", {{"zmigrate-m1-3", 501}}), "zmigrate-m1-2"));
    CHECK(ahead.action == SyncAction::nothing);
    CHECK(ahead.explanation.find("newer") != std::string::npos);
  }
  SECTION("a resume token comes first") {
    SyncInput in = input(snaps("zones/vm", {{"zmigrate-m1-1", 201}}));
    in.resume_token = "1-abc-e0-789c";
    const SyncPlan p = plan_sync(in);
    CHECK(p.action == SyncAction::resume);
    CHECK(p.resume_token == "1-abc-e0-789c");
    CHECK(p.common == std::optional<std::string>("zmigrate-m1-1"));
    SyncInput fresh = input(std::nullopt);
    fresh.resume_token = "1-abc-e0-789c";
    CHECK(plan_sync(fresh).action == SyncAction::resume);
  }
  SECTION("ownership makes an incremental use -F") {
    SyncInput in = input(snaps("zones/vm", {{"zmigrate-m1-2", 401}}));
    in.ownership = RecvForce::target_is_ours;
    const SyncPlan p = plan_sync(in);
    CHECK(p.action == SyncAction::incremental);
    CHECK(p.force);
  }
  SECTION("`to` must be a source snapshot") {
    CHECK_THROWS_AS(plan_sync(input(std::nullopt, "zmigrate-m1-9")), PreconditionError);
  }
}

TEST_CASE("zfs::throw_conflict", "[zfs]") {
  const SyncPlan p = plan_sync(input(snaps("zones/vm", {{"zmigrate-m1-1", 201}, {"mine", 888}})));
  REQUIRE(p.action == SyncAction::conflict);
  try {
    throw_conflict(p, "cn2: zones/vm");
    FAIL("no throw");
  } catch (const Diverged& e) {
    CHECK(e.subject() == "cn2: zones/vm");
    CHECK(e.divergence() == DivergedReason::target_ahead);
    CHECK(e.common() == std::optional<std::string>("zmigrate-m1-1"));
    CHECK(e.target_only() == Names{"zones/vm@mine"});
    CHECK(e.source_only().size() == 4);
    CHECK(e.reason().find("newest common snapshot: @zmigrate-m1-1") != std::string::npos);
    CHECK(e.reason().find("only on the target: zones/vm@mine") != std::string::npos);
  }
  CHECK_THROWS_AS(throw_conflict(plan_sync(input(std::nullopt)), "x"), UsageError);
}
