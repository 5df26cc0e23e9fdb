// SPDX-License-Identifier: MPL-2.0
// estimate_instance() over a FakeRunner that answers the node's zfs commands with real recorded
// output (probes of OpenZFS 2.3.2 and zfs-fuse 0.7.0, `send -nvP` lines as OpenZFS prints them).
#include "fakes/fake_inventory.hpp"
#include "fakes/fake_node_access.hpp"
#include "fakes/fake_runner.hpp"
#include "fakes/memory_state_store.hpp"
#include "unit/zfs/zfs_test_data.hpp"

#include <zmigrate/migration/context.hpp>
#include <zmigrate/migration/estimate.hpp>
#include <zmigrate/remote/command.hpp>
#include <zmigrate/util/clock.hpp>
#include <zmigrate/util/log.hpp>
#include <zmigrate/zfs/capabilities.hpp>

#include <string>
#include <vector>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::migration;
using fakes::failed;
using fakes::FakeRunner;
using fakes::ok;
using Strings = std::vector<std::string>;

namespace {

const std::string k_vm = "5eed0000-0000-4000-8000-0000000e5701";
const std::string k_image = "2f56d126-20d0-11e9-9033-a3b1bbb8b4cb";
const std::string k_server = "44454c4c-3200-1042-8058-b4c04f383432";
const std::string k_root = "zones/" + k_vm;
const std::string k_data = k_root + "/data";
const double k_rate = 20.0 * 1024 * 1024;

// The rendered commands SmartosNode runs.
std::string probe() {
  return remote::render(zfs::probe_command());
}
std::string list_tree(const std::string& root) {
  return "zfs list -H -o name -t filesystem,volume -r " + root;
}
std::string list_snapshots(const std::string& ds) {
  return "zfs list -H -o name -t snapshot -s creation -r -d 1 " + ds;
}

struct EstimateFixture {
  fakes::FakeInventory inv;
  FakeRunner runner{"10.99.0.11"};
  fakes::OneNodeAccess nodes{runner};
  SystemClock clock; // nothing here sleeps: no dataset is busy
  fakes::MemoryStateStore store{clock};
  NullLogger log;
  NullReporter reporter;
  Context ctx{inv, nodes, store, clock, log, reporter, Settings{}, {}};

  EstimateFixture() {
    inv.add_server(k_server, "cn1", "10.99.0.11");
    inv.add_vm({{"uuid", k_vm},
                {"alias", "web01"},
                {"brand", "joyent"},
                {"state", "running"},
                {"server_uuid", k_server},
                {"image_uuid", k_image},
                {"zpool", "zones"},
                {"datasets", nlohmann::json::array()}});
    // Anything not answered below fails loudly instead of looking like an empty dataset.
    runner.set_default(failed(127, "FakeRunner: unexpected command"));
  }

  // The node answers the capability probe with a recorded probe output of `dir`.
  void probe_answers(const std::string& dir) {
    runner.on(probe(), ok(zfs::testdata::read(dir + "/probe.out")));
  }
};

} // namespace

TEST_CASE("migration::estimate_instance of a clone sends from its image origin", "[estimate]") {
  EstimateFixture f;
  f.probe_answers("openzfs-2.3-real");
  const std::string origin = "zones/" + k_image + "@final";
  const std::string snap = k_root + "@before-upgrade";
  const std::string data_snap = k_data + "@before-upgrade";
  const std::string send_clone = "zfs send -nvP -p -c -L -e -i " + origin + " " + snap;
  const std::string send_data = "zfs send -nvP -p -c -L -e " + data_snap;
  f.runner.on(list_tree(k_root), ok(k_root + "\n" + k_data + "\n"))
      .on(list_snapshots(k_root), ok(snap + "\n"))
      .on("zfs get -Hp -o name,value guid " + snap, ok(snap + "\t7340254463761430615\n"))
      .on("zfs get -Hp -o property,value origin,written " + k_root,
          ok("origin\t" + origin + "\nwritten\t8192\n"))
      // OpenZFS 2.3 names the source of `-i` in full (tests/data/zfs/openzfs-2.3-real).
      .on(send_clone, ok("incremental\t" + origin + "\t" + snap + "\t300000\nsize\t300000\n"))
      // The delegated dataset is no clone: its one snapshot goes in full.
      .on(list_snapshots(k_data), ok(data_snap + "\n"))
      .on("zfs get -Hp -o name,value guid " + data_snap, ok(data_snap + "\t12223444265049338694\n"))
      .on("zfs get -Hp -o property,value origin,written " + k_data, ok("origin\t-\nwritten\t0\n"))
      .on(send_data, ok("full\t" + data_snap + "\t441496\nsize\t441496\n"));

  const InstanceEstimate e = estimate_instance(f.ctx, k_vm, k_rate);

  CHECK(f.runner.commands == Strings{
                                 list_tree(k_root),
                                 list_snapshots(k_root),
                                 "zfs get -Hp -o name,value guid " + snap,
                                 probe(),
                                 "zfs get -Hp -o property,value origin,written " + k_root,
                                 send_clone,
                                 list_snapshots(k_data),
                                 "zfs get -Hp -o name,value guid " + data_snap,
                                 "zfs get -Hp -o property,value origin,written " + k_data,
                                 send_data,
                             });
  // Never a full stream of the clone (that would carry the whole image).
  CHECK(f.runner.commands_starting_with("zfs send -nvP -p -c -L -e " + k_root + "@").empty());
  CHECK(f.inv.calls == Strings{"find_vm " + k_vm, "resolve_server " + k_server});
  CHECK(f.nodes.requested == Strings{k_server});

  CHECK(e.vm_uuid == k_vm);
  CHECK(e.alias == "web01");
  CHECK(e.brand == "joyent");
  CHECK(e.state == "running");
  CHECK(e.server_uuid == k_server);
  CHECK(e.server_hostname == "cn1");
  REQUIRE(e.datasets.size() == 2);
  CHECK(e.datasets[0].dataset == k_root);
  CHECK(e.datasets[0].bytes == 300000 + 8192); // the dry run's size, plus written since
  CHECK_FALSE(e.datasets[0].exact);            // written != 0
  CHECK(e.datasets[0].method == "send -nvP");
  CHECK(e.datasets[1].dataset == k_data);
  CHECK(e.datasets[1].bytes == 441496);
  CHECK(e.datasets[1].exact); // written == 0
  CHECK(e.datasets[1].method == "send -nvP");
  CHECK(e.bytes == 300000 + 8192 + 441496);
  CHECK_FALSE(e.exact);
  CHECK(e.seconds == Approx(static_cast<double>(e.bytes) / k_rate));
}

TEST_CASE("migration::estimate_instance sends the oldest snapshot in full, then -I to the newest",
          "[estimate]") {
  EstimateFixture f;
  f.probe_answers("openzfs-2.3-real");
  const std::string oldest = k_root + "@zmigrate-m1-1";
  const std::string newest = k_root + "@zmigrate-m1-2";
  const std::string guids = "zfs get -Hp -o name,value guid " + oldest + " " + newest;
  const std::string props = "zfs get -Hp -o property,value origin,written " + k_root;
  const std::string send_full = "zfs send -nvP -p -c -L -e " + oldest;
  const std::string send_incr = "zfs send -nvP -p -c -L -e -I " + oldest + " " + newest;
  f.runner.on(list_tree(k_root), ok(k_root + "\n"))
      .on(list_snapshots(k_root), ok(oldest + "\n" + newest + "\n"))
      .on(guids, ok(oldest + "\t7340254463761430615\n" + newest + "\t12223444265049338694\n"))
      .on(send_full, ok("full\t" + oldest + "\t441496\nsize\t441496\n"))
      .on(send_incr, ok("incremental\t" + oldest + "\t" + newest + "\t300000\nsize\t300000\n"));
  const Strings expected_commands{
      list_tree(k_root), list_snapshots(k_root), guids, probe(), props, send_full, send_incr,
  };

  SECTION("nothing written since the newest snapshot: exact") {
    f.runner.on(props, ok("origin\t-\nwritten\t0\n"));
    const InstanceEstimate e = estimate_instance(f.ctx, k_vm, k_rate);
    CHECK(f.runner.commands == expected_commands);
    REQUIRE(e.datasets.size() == 1);
    CHECK(e.datasets[0].dataset == k_root);
    CHECK(e.datasets[0].bytes == 441496 + 300000);
    CHECK(e.datasets[0].exact);
    CHECK(e.datasets[0].method == "send -nvP");
    CHECK(e.bytes == 441496 + 300000);
    CHECK(e.exact);
    CHECK(e.seconds == Approx(static_cast<double>(441496 + 300000) / k_rate));
  }
  SECTION("writes since the newest snapshot are added: approximate") {
    f.runner.on(props, ok("origin\t-\nwritten\t1048576\n"));
    const InstanceEstimate e = estimate_instance(f.ctx, k_vm, k_rate);
    CHECK(f.runner.commands == expected_commands);
    REQUIRE(e.datasets.size() == 1);
    CHECK(e.datasets[0].bytes == 441496 + 300000 + 1048576);
    CHECK_FALSE(e.datasets[0].exact);
    CHECK(e.datasets[0].method == "send -nvP");
    CHECK(e.bytes == 441496 + 300000 + 1048576);
    CHECK_FALSE(e.exact);
  }
  // No -i from an origin for a dataset that is not a clone.
  CHECK(f.runner.commands_starting_with("zfs send -nvP -p -c -L -e -i ").empty());
}

TEST_CASE("migration::estimate_instance without parsable dry runs uses referenced sizes",
          "[estimate]") {
  EstimateFixture f;
  f.probe_answers("zfs-fuse");
  const std::string s1 = k_root + "@zmigrate-m1-1";
  const std::string s2 = k_root + "@zmigrate-m1-2";
  const std::string guids = "zfs get -Hp -o name,value guid " + s1 + " " + s2;
  const std::string root_props =
      "zfs get -Hp -o property,value referenced,usedbysnapshots " + k_root;
  const std::string data_props =
      "zfs get -Hp -o property,value referenced,usedbysnapshots " + k_data;
  f.runner.on(list_tree(k_root), ok(k_root + "\n" + k_data + "\n"))
      .on(list_snapshots(k_root), ok(s1 + "\n" + s2 + "\n"))
      .on(guids, ok(s1 + "\t3820162723289415912\n" + s2 + "\t11746604645947039234\n"))
      .on(root_props, ok("referenced\t1458176\nusedbysnapshots\t90112\n"))
      .on(list_snapshots(k_data), ok()) // no snapshots
      .on(data_props, ok("referenced\t1187840\nusedbysnapshots\t0\n"));

  const InstanceEstimate e = estimate_instance(f.ctx, k_vm, k_rate);

  CHECK(f.runner.commands == Strings{
                                 list_tree(k_root),
                                 list_snapshots(k_root),
                                 guids,
                                 probe(),
                                 root_props,
                                 list_snapshots(k_data),
                                 data_props,
                             });
  // zfs-fuse has neither `send -nvP` nor `written` (it rejects the whole `zfs get`).
  CHECK(f.runner.commands_starting_with("zfs send").empty());
  for (const std::string& c : f.runner.commands_starting_with("zfs get")) {
    CHECK(c.find("written") == std::string::npos);
  }
  REQUIRE(e.datasets.size() == 2);
  CHECK(e.datasets[0].dataset == k_root);
  CHECK(e.datasets[0].bytes == 1458176 + 90112);
  CHECK_FALSE(e.datasets[0].exact);
  CHECK(e.datasets[0].method == "referenced+usedbysnapshots");
  CHECK(e.datasets[1].dataset == k_data);
  CHECK(e.datasets[1].bytes == 1187840);
  CHECK_FALSE(e.datasets[1].exact);
  CHECK(e.datasets[1].method == "referenced+usedbysnapshots");
  CHECK(e.bytes == 1458176 + 90112 + 1187840);
  CHECK_FALSE(e.exact);
  CHECK(e.seconds == Approx(static_cast<double>(e.bytes) / k_rate));
}

TEST_CASE("migration::estimate_instance of a dataset without snapshots counts `written`",
          "[estimate]") {
  // A clone's `written` is what was written since its origin: what the first sync's -i origin
  // stream carries. No dry run is possible without a snapshot, so it is approximate.
  EstimateFixture f;
  f.probe_answers("openzfs-2.3-real");
  f.runner.on(list_tree(k_root), ok(k_root + "\n"))
      .on(list_snapshots(k_root), ok(""))
      .on("zfs get -Hp -o property,value written " + k_root, ok("written\t4194304\n"));

  const InstanceEstimate e = estimate_instance(f.ctx, k_vm, k_rate);

  CHECK(f.runner.commands == Strings{list_tree(k_root), list_snapshots(k_root), probe(),
                                     "zfs get -Hp -o property,value written " + k_root});
  CHECK(f.runner.commands_starting_with("zfs send").empty());
  REQUIRE(e.datasets.size() == 1);
  CHECK(e.datasets[0].bytes == 4194304);
  CHECK_FALSE(e.datasets[0].exact);
  CHECK(e.datasets[0].method == "written");
  CHECK_FALSE(e.exact);
}
