// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/link.hpp>
#include <zmigrate/migration/plan.hpp>
#include <zmigrate/util/error.hpp>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::migration;

namespace {

inventory::Vm make_vm() {
  inventory::Vm vm;
  vm.uuid = "5eed0000-0000-4000-8000-000000000101";
  vm.alias = "web01";
  vm.brand = "joyent";
  vm.state = "running";
  vm.ram_mib = 512;
  vm.quota_gib = 10;
  return vm;
}

} // namespace

TEST_CASE("migration::validate_instance", "[migration]") {
  inventory::Vm vm = make_vm();
  CHECK_NOTHROW(validate_instance(vm, false));
  SECTION("unsupported brand") {
    vm.brand = "docker";
    CHECK_THROWS_AS(validate_instance(vm, false), PreconditionError);
  }
  SECTION("state") {
    vm.state = "provisioning";
    CHECK_THROWS_WITH(validate_instance(vm, false), Catch::Contains("only running or stopped"));
  }
  SECTION("core zones need --force-core, NAT zones do not") {
    vm.tags = {{"smartdc_type", "core"}};
    CHECK_THROWS_WITH(validate_instance(vm, false), Catch::Contains("--force-core"));
    CHECK_NOTHROW(validate_instance(vm, true));
    vm.tags["smartdc_role"] = "nat";
    CHECK_NOTHROW(validate_instance(vm, false));
  }
}

TEST_CASE("migration::hide_zone_config", "[migration]") {
  const std::string exported = "create -b\n"
                               "set zonepath=/zones/u\n"
                               "set autoboot=true\n"
                               "add attr\n"
                               "set name=alias\n"
                               "set type=string\n"
                               "set value=\"web01\"\n"
                               "end\n"
                               "add attr\n"
                               "set name=do-not-inventory\n"
                               "set type=string\n"
                               "set value=false\n"
                               "end\n";
  const std::string hidden = hide_zone_config(exported);
  CHECK(hidden.find("set autoboot=false") != std::string::npos);
  CHECK(hidden.find("set autoboot=true") == std::string::npos);
  CHECK(hidden.find("set value=false") == std::string::npos);
  CHECK(hidden.find("set name=alias") != std::string::npos);
  CHECK(
      hidden.find("add attr\nset name=do-not-inventory\nset type=string\nset value=true\nend\n") !=
      std::string::npos);
}

TEST_CASE("migration::should_sync_again", "[migration]") {
  CHECK(should_sync_again({}, 1000, 6));
  CHECK(should_sync_again({100000}, 1000, 6));
  CHECK_FALSE(should_sync_again({500}, 1000, 6));           // converged
  CHECK_FALSE(should_sync_again({100000, 95000}, 1000, 6)); // not shrinking
  CHECK(should_sync_again({100000, 50000}, 1000, 6));
  CHECK_FALSE(should_sync_again({9, 8, 7, 6, 5, 4}, 1, 6)); // budget
  using std::chrono::milliseconds;
  CHECK_FALSE(should_sync_again({}, 1000, 6, milliseconds(2000)));       // quick full sync
  CHECK_FALSE(should_sync_again({100000}, 1000, 6, milliseconds(5000))); // quick delta
  CHECK(should_sync_again({}, 1000, 6, milliseconds(5001)));
  CHECK(should_sync_again({100000}, 1000, 6, milliseconds(60000)));
}

TEST_CASE("migration::owned_by_instance", "[migration][safety]") {
  const std::string u = "5eed0000-0000-4000-8000-000000000101";
  CHECK(owned_by_instance("zones/" + u, u));
  CHECK(owned_by_instance("zones/" + u + "/data", u));
  CHECK(owned_by_instance("zones/" + u + "/disk0", u));
  CHECK(owned_by_instance("zones/" + u + "-disk0", u));
  CHECK(owned_by_instance("zones/" + u + "-disk12", u));
  CHECK(owned_by_instance("zones/cores/" + u, u));
  CHECK(owned_by_instance("data/" + u, u));
  // Never a pool root, another instance's or an image, or a look-alike name.
  CHECK_FALSE(owned_by_instance("zones", u));
  CHECK_FALSE(owned_by_instance("zones/cores", u));
  CHECK_FALSE(owned_by_instance("zones/5eed0000-0000-4000-8000-0000000009ff-disk0", u));
  CHECK_FALSE(owned_by_instance("zones/5eed0000-0000-4000-8000-000000000102/data", u));
  CHECK_FALSE(owned_by_instance("zones/" + u + "-disk", u));
  CHECK_FALSE(owned_by_instance("zones/" + u + "-diskX", u));
  CHECK_FALSE(owned_by_instance("zones/" + u + "x", u));
  CHECK_FALSE(owned_by_instance("zones/x/" + u, u));
  CHECK_FALSE(owned_by_instance("zones/cores/" + u + "/x", u));
  CHECK_FALSE(owned_by_instance("zones/" + u + "; rm -rf /", u));
  CHECK_FALSE(owned_by_instance("", u));
  CHECK_FALSE(owned_by_instance("zones/" + u, ""));
}

TEST_CASE("migration::instance_roots", "[migration][safety]") {
  const std::string u = "5eed0000-0000-4000-8000-000000000101";
  const nlohmann::json zone = {
      {"uuid", u}, {"zfs_filesystem", "zones/" + u}, {"datasets", {"zones/" + u + "/data"}}};
  SECTION("a zone: its root only (the delegated child travels with it)") {
    CHECK(instance_roots(u, zone, {"zones/" + u, "zones/" + u + "/data"}) ==
          std::vector<std::string>{"zones/" + u});
  }
  SECTION("KVM: sibling disks are roots of their own") {
    const nlohmann::json kvm = {{"uuid", u},
                                {"zfs_filesystem", "zones/" + u},
                                {"disks",
                                 {{{"zfs_filesystem", "zones/" + u + "-disk0"}},
                                  {{"zfs_filesystem", "zones/" + u + "-disk1"}}}}};
    CHECK(instance_roots(u, kvm, {}) ==
          std::vector<std::string>{"zones/" + u, "zones/" + u + "-disk0", "zones/" + u + "-disk1"});
  }
  SECTION("a dataset VMAPI lists but the node does not is refused, named") {
    try {
      instance_roots(u, zone, {"zones/" + u, "zones/5eed0000-0000-4000-8000-0000000009ff-disk0"});
      FAIL("no exception");
    } catch (const PreconditionError& e) {
      CHECK_THAT(e.what(), Catch::Contains("zones/5eed0000-0000-4000-8000-0000000009ff-disk0"));
      CHECK_THAT(e.what(), Catch::Contains("VMAPI lists it"));
    }
  }
  SECTION("a foreign dataset on the node's own record is refused") {
    nlohmann::json bad = zone;
    bad["datasets"].push_back("zones/other");
    CHECK_THROWS_AS(instance_roots(u, bad, {}), PreconditionError);
    bad = zone;
    bad["zfs_filesystem"] = "zones";
    CHECK_THROWS_AS(instance_roots(u, bad, {}), PreconditionError);
    bad = zone;
    bad["zfs_filesystem"] = "zones/" + u + "/x";
    CHECK_THROWS_AS(instance_roots(u, bad, {}), PreconditionError);
    bad = zone;
    bad.erase("zfs_filesystem");
    CHECK_THROWS_AS(instance_roots(u, bad, {}), PreconditionError);
  }
}

TEST_CASE("migration::resume_token_problem", "[migration][safety]") {
  const std::string ds = "zones/5eed0000-0000-4000-8000-000000000101";
  const std::string id = "c2f3b2c2-a864-464b-b08c-387a60745008";
  CHECK(resume_token_problem(ds, id, ds + "@zmigrate-" + id + "-3").empty());
  CHECK_THAT(resume_token_problem(ds, id, "zones/other@zmigrate-" + id + "-3"),
             Catch::Contains("another dataset"));
  CHECK_THAT(resume_token_problem(ds, id, ds + "/data@zmigrate-" + id + "-3"),
             Catch::Contains("another dataset"));
  CHECK_THAT(resume_token_problem(ds, id, ds + "@zmigrate-0000-1"),
             Catch::Contains("not a snapshot of migration"));
  CHECK_THAT(resume_token_problem(ds, id, ds + "@users-snap"),
             Catch::Contains("not a snapshot of migration"));
  CHECK_THAT(resume_token_problem(ds, id, ds), Catch::Contains("not a snapshot"));
}

TEST_CASE("plan_switch decides the switch's optional steps from the record", "[migration][plan]") {
  inventory::Vm vm;
  vm.uuid = "5eed0000-0000-4000-8000-0000000e0b01";
  nlohmann::json data = {{"quota", {{"must_remove", true}}}};
  SECTION("a running instance, no recent sync: presync, target started, quota restored") {
    const SwitchPlan p = plan_switch(data, vm, "running", false);
    CHECK(p.before_hide);
    CHECK(p.was_running);
    CHECK(p.presync);
    CHECK_FALSE(p.mount_target);
    CHECK(p.restore_quota);
    CHECK_FALSE(p.protect);
  }
  SECTION("right after a sync: no presync") {
    CHECK_FALSE(plan_switch(data, vm, "running", true).presync);
  }
  SECTION("a stopped instance: mounted, not started") {
    const SwitchPlan p = plan_switch(data, vm, "stopped", false);
    CHECK_FALSE(p.was_running);
    CHECK(p.mount_target);
    CHECK_FALSE(p.presync);
  }
  SECTION("the source hidden by an earlier attempt: forward only, was_running as recorded") {
    data["switch"] = {{"source_hidden", true}, {"was_running", true}};
    const SwitchPlan p = plan_switch(data, vm, "", false);
    CHECK(p.resuming);
    CHECK_FALSE(p.before_hide);
    CHECK(p.was_running);
    CHECK_FALSE(p.presync);
  }
  SECTION("deletion protection goes to the target") {
    vm.indestructible_zoneroot = true;
    const SwitchPlan p = plan_switch(data, vm, "running", false);
    CHECK(p.protect);
    CHECK(p.indestructible ==
          std::vector<std::pair<std::string, std::string>>{{"indestructible_zoneroot", "true"}});
  }
}

TEST_CASE("migration::predict_downtime", "[migration][plan]") {
  using std::chrono::milliseconds;
  // A full sync of 100 MiB in 10 s (the link: 10 MiB/s), then an incremental one of 4 MiB whose
  // snapshot came 20 s after the first one's: the instance writes about 200 KiB/s.
  const nlohmann::json two = nlohmann::json::array(
      {{{"bytes", 100ULL << 20}, {"duration_ms", 10000}, {"ended", "2026-12-01T00:00:10.000Z"}},
       {{"bytes", 4ULL << 20}, {"duration_ms", 1000}, {"ended", "2026-12-01T00:00:21.000Z"}}});

  SECTION("fixed steps from history plus the final delta at the link's rate") {
    const DowntimePrediction p = predict_downtime(two, milliseconds(800));
    CHECK(p.write_rate_known);
    CHECK(p.write_rate == Approx((4ULL << 20) / 20.0).epsilon(0.001));
    CHECK(p.link_rate == Approx((100ULL << 20) / 10.0).epsilon(0.001));
    // The last sync ran 1 s: about 205 KiB written meanwhile, 20 ms at 10 MiB/s, plus a
    // stream's fixed cost: that sync took 1 s for 400 ms of bytes, so 600 ms.
    CHECK(p.delta_bytes == (4ULL << 20) / 20);
    CHECK(p.final_sync.count() == Approx(620).margin(2));
    CHECK(p.total.count() == Approx(1420).margin(2));
  }

  SECTION("no history: the default fixed cost") {
    CHECK(predict_downtime(two, std::nullopt).fixed == k_default_switch_fixed);
  }

  SECTION("a writer faster than the link: the delta dominates") {
    nlohmann::json fast = two;
    fast[1]["bytes"] = 150ULL << 20; // 150 MiB written in 20 s, the last sync took 15 s
    fast[1]["duration_ms"] = 15000;
    fast[1]["ended"] = "2026-12-01T00:00:35.000Z";
    const DowntimePrediction p = predict_downtime(fast, milliseconds(800));
    CHECK(p.write_rate == Approx((150ULL << 20) / 20.0).epsilon(0.001));
    // 7.5 MiB/s for 15 s = 112.5 MiB at 10 MiB/s = 11.25 s.
    CHECK(p.final_sync.count() == Approx(11250).margin(2));
  }

  SECTION("one sync: the write rate is unknown") {
    const DowntimePrediction p = predict_downtime(nlohmann::json::array({two[0]}), std::nullopt);
    CHECK_FALSE(p.write_rate_known);
    CHECK(p.delta_bytes == 0);
  }

  SECTION("older records without end times: unknown, no throw") {
    nlohmann::json old = two;
    old[0].erase("ended");
    old[1].erase("ended");
    CHECK_FALSE(predict_downtime(old, std::nullopt).write_rate_known);
  }
}

TEST_CASE("migration::mark_problem", "[migration]") {
  CHECK(mark_problem("zones/a", "cn1", "", false).empty());
  CHECK(mark_problem("zones/a", "cn1", "m-1", true).empty());
  const std::string why = mark_problem("zones/a", "cn1", "m-1", false);
  CHECK_THAT(why, Catch::Contains("zones/a on cn1 carries zmigrate:migration=m-1") &&
                      Catch::Contains("zfs inherit zmigrate:migration zones/a"));
}

TEST_CASE("plan::median", "[plan]") {
  CHECK(median({}) == 0);
  CHECK(median({3}) == 3);
  CHECK(median({5, 1, 3}) == 3);
  CHECK(median({4, 1, 3, 2}) == Approx(2.5));
}

namespace {
Stream stream(const std::string& ds, StreamKind kind, std::uint64_t estimate) {
  Stream s;
  s.dataset = ds;
  s.kind = kind;
  s.to = ds + "@zmigrate-m-1";
  s.estimate = estimate;
  return s;
}
} // namespace

TEST_CASE("migration::stream_lanes: concurrent, balanced, a dataset after what it needs",
          "[migration][plan]") {
  const std::uint64_t mib = 1U << 20;
  SECTION("two disks of a KVM instance (siblings) and its zone root: disks apart") {
    const std::vector<Stream> plan{stream("zones/u1", StreamKind::full, 1 * mib),
                                   stream("zones/u1-disk0", StreamKind::clone, 900 * mib),
                                   stream("zones/u1-disk1", StreamKind::full, 800 * mib)};
    CHECK(stream_lanes(plan, 4) == std::vector<std::size_t>{2, 0, 1});
    CHECK(stream_lanes(plan, 2) == std::vector<std::size_t>{1, 0, 1}); // the small one joins
    CHECK(stream_lanes(plan, 1) == std::vector<std::size_t>{0, 0, 0});
    CHECK(stream_lanes(plan, 0) == std::vector<std::size_t>{0, 0, 0});
  }
  SECTION("children of a dataset this sync creates wait for it, in its lane") {
    const std::vector<Stream> plan{stream("zones/u2", StreamKind::full, 1 * mib),
                                   stream("zones/u2/disk0", StreamKind::full, 500 * mib),
                                   stream("zones/u2/disk1", StreamKind::full, 500 * mib),
                                   stream("zones/u2x", StreamKind::full, 10 * mib)};
    // zones/u2x is no child of zones/u2 (a name prefix is not a parent).
    CHECK(stream_lanes(plan, 4) == std::vector<std::size_t>{0, 0, 0, 1});
  }
  SECTION("children of a dataset that exists (an incremental) go at once") {
    const std::vector<Stream> plan{stream("zones/u2", StreamKind::incremental, 0),
                                   stream("zones/u2/disk0", StreamKind::incremental, 50 * mib),
                                   stream("zones/u2/disk1", StreamKind::full, 40 * mib)};
    CHECK(stream_lanes(plan, 4) == std::vector<std::size_t>{2, 0, 1});
  }
  SECTION("the streams of one dataset stay together and in order; a resumed one creates") {
    const std::vector<Stream> plan{stream("zones/u3", StreamKind::full, 5 * mib),
                                   stream("zones/u3", StreamKind::incremental, 5 * mib),
                                   stream("zones/u3/data", StreamKind::full, 1 * mib),
                                   stream("zones/u4", StreamKind::resume, 3 * mib),
                                   stream("zones/u4/data", StreamKind::incremental, 0)};
    CHECK(stream_lanes(plan, 4) == std::vector<std::size_t>{0, 0, 0, 1, 1});
  }
  SECTION("many datasets over few lanes: the largest first, each to the least loaded lane") {
    std::vector<Stream> plan;
    for (const std::uint64_t size : {10, 70, 20, 60, 30, 50}) {
      plan.push_back(
          stream("zones/u5-disk" + std::to_string(size), StreamKind::incremental, size * mib));
    }
    const std::vector<std::size_t> lanes = stream_lanes(plan, 2);
    std::uint64_t load[2] = {0, 0};
    for (std::size_t i = 0; i < plan.size(); ++i) {
      load[lanes.at(i)] += plan[i].estimate;
    }
    CHECK(load[0] == 120 * mib); // 70 + 30 + 20
    CHECK(load[1] == 120 * mib); // 60 + 50 + 10
    CHECK(stream_lanes({}, 4).empty());
  }
}
