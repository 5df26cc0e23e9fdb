// SPDX-License-Identifier: MPL-2.0
// SmartosNode over a FakeRunner: "absent" is proven by vmadm's own answer (and zoneadm), never
// inferred from an error text; destroys refuse anything that is not the instance's; mountpoints
// set by a stream must lie under the zonepath; a resume token names its snapshot.
// engine_common.hpp is the engine's internal header (detail::), reached from the source tree.
#include "../src/migration/engine_common.hpp"
#include "fakes/fake_inventory.hpp"
#include "fakes/fake_node_access.hpp"
#include "fakes/fake_runner.hpp"
#include "fakes/memory_state_store.hpp"

#include <zmigrate/migration/context.hpp>
#include <zmigrate/migration/smartos_node.hpp>
#include <zmigrate/util/clock.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/log.hpp>

#include <string>
#include <vector>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::migration;
using fakes::failed;
using fakes::FakeRunner;
using fakes::ok;

namespace {

const std::string k_vm = "5eed0000-0000-4000-8000-000000000101";
const std::string k_other = "5eed0000-0000-4000-8000-0000000009ff";

struct Fixture {
  fakes::FakeInventory inv;
  FakeRunner runner{"10.99.0.11"};
  fakes::OneNodeAccess nodes{runner};
  SystemClock clock;
  fakes::MemoryStateStore store{clock};
  NullLogger log;
  NullReporter reporter;
  Context ctx{inv, nodes, store, clock, log, reporter, Settings{}, {}};
  inventory::Server server;
  // The node supports holds and multi-dataset snapshots (as every SmartOS node does).
  void with_holds() {
    zfs::Capabilities caps;
    caps.holds = caps.multi_snapshot = true;
    nodes.facts_for(runner.host()).caps = caps;
  }
  Fixture() {
    server.uuid = "564d0000-0000-4000-8000-000000000001";
    server.hostname = "cn1";
    server.admin_ip = "10.99.0.11";
  }
};

const std::string k_get = "vmadm get " + k_vm;
const std::string k_zones = "zoneadm list -cp";
const std::string k_not_found = "zoneadm: " + k_vm + ": No such zone configured\n";

} // namespace

TEST_CASE("SmartosNode::vm_get proves absence", "[migration][node_ops][safety]") {
  Fixture f;
  SmartosNode node(f.ctx, f.server);
  SECTION("vmadm's own not-found answer and zoneadm without the zone: absent") {
    f.runner.on(k_get, failed(1, k_not_found))
        .on(k_zones, ok("0:global:running:/::liveimg:shared:0\n"));
    CHECK_FALSE(node.vm_get(k_vm).has_value());
  }
  SECTION("zoneadm still lists it: cannot tell, throws") {
    f.runner.on(k_get, failed(1, k_not_found))
        .on(k_zones,
            ok("-:" + k_vm + ":installed:/zones/" + k_vm + ":" + k_vm + ":joyent:excl:-\n"));
    CHECK_THROWS_AS(node.vm_get(k_vm), Error);
  }
  SECTION("a broken vmadm whose text merely says 'not found' is not 'absent'") {
    f.runner.on(k_get, failed(1, "vmadm: module not found\n"));
    CHECK_THROWS_WITH(node.vm_get(k_vm), Catch::Contains("cannot tell"));
    f.runner.clear_record();
  }
  SECTION("another exit status with the right text is not 'absent' either") {
    f.runner.on(k_get, failed(127, k_not_found));
    CHECK_THROWS_AS(node.vm_get(k_vm), Error);
  }
  SECTION("not-found for another uuid is not 'absent'") {
    f.runner.on(k_get, failed(1, "zoneadm: " + k_other + ": No such zone configured\n"));
    CHECK_THROWS_AS(node.vm_get(k_vm), Error);
  }
  SECTION("an answer for another instance is refused") {
    f.runner.on(k_get, ok("{\"uuid\": \"" + k_other + "\"}"));
    CHECK_THROWS_WITH(node.vm_get(k_vm), Catch::Contains("another instance"));
  }
  SECTION("the instance itself") {
    f.runner.on(k_get, ok("{\"uuid\": \"" + k_vm + "\", \"state\": \"running\"}"));
    const auto j = node.vm_get(k_vm);
    REQUIRE(j);
    CHECK(j->value("state", "") == "running");
  }
}

TEST_CASE("SmartosNode::vm_delete passes a failure only when the instance is proven gone",
          "[migration][node_ops][safety]") {
  Fixture f;
  SmartosNode node(f.ctx, f.server);
  f.runner.on("vmadm delete " + k_vm, failed(1, "Failed to delete VM: something not found\n"));
  SECTION("gone") {
    f.runner.on(k_get, failed(1, k_not_found)).on(k_zones, ok(""));
    CHECK_NOTHROW(node.vm_delete(k_vm));
  }
  SECTION("still there") {
    f.runner.on(k_get, ok("{\"uuid\": \"" + k_vm + "\"}"));
    CHECK_THROWS_AS(node.vm_delete(k_vm), Error);
  }
}

TEST_CASE("SmartosNode::dataset_exists proves absence", "[migration][node_ops][safety]") {
  Fixture f;
  SmartosNode node(f.ctx, f.server);
  const std::string ds = "zones/" + k_vm;
  const std::string cmd = "zfs list -H -t all -o name " + ds;
  SECTION("zfs's own answer") {
    f.runner.on(cmd, failed(1, "cannot open '" + ds + "': dataset does not exist\n"));
    CHECK_FALSE(node.dataset_exists(ds));
  }
  SECTION("anything else: cannot tell") {
    f.runner.on(cmd, failed(1, "internal error: out of memory\n"));
    CHECK_THROWS_AS(node.dataset_exists(ds), Error);
  }
  SECTION("present") {
    f.runner.on(cmd, ok(ds + "\n"));
    CHECK(node.dataset_exists(ds));
  }
}

TEST_CASE("SmartosNode::destroy_dataset destroys only the instance's own",
          "[migration][node_ops][safety]") {
  Fixture f;
  SmartosNode node(f.ctx, f.server);
  for (const std::string& ds :
       {std::string("zones"), std::string("zones/cores"), "zones/" + k_other,
        "zones/" + k_other + "-disk0", "zones/images/" + k_vm}) {
    CHECK_THROWS_AS(node.destroy_dataset(ds, k_vm), PreconditionError);
  }
  CHECK(f.runner.commands.empty()); // refused before any command
  node.destroy_dataset("zones/" + k_vm + "-disk0", k_vm);
  CHECK(f.runner.commands == std::vector<std::string>{"zfs destroy -r zones/" + k_vm + "-disk0"});
}

TEST_CASE("SmartosNode::check_mountpoints", "[migration][node_ops][safety]") {
  Fixture f;
  SmartosNode node(f.ctx, f.server);
  const std::string root = "zones/" + k_vm;
  const std::string cmd =
      "zfs get -Hp -r -o name,property,value,source mountpoint,zoned,type " + root;
  auto lines = [&](const std::string& mp, const std::string& source, const std::string& zoned) {
    return root + "\tmountpoint\t/zones/" + k_vm + "\tlocal\n" + root + "\tzoned\toff\tdefault\n" +
           root + "\ttype\tfilesystem\t-\n" + root + "/data\tmountpoint\t" + mp + "\t" + source +
           "\n" + root + "/data\tzoned\t" + zoned + "\tlocal\n" + root +
           "/data\ttype\tfilesystem\t-\n";
  };
  SECTION("under the zonepath") {
    f.runner.on(cmd, ok(lines("/zones/" + k_vm + "/data", "received", "off")));
    CHECK_NOTHROW(node.check_mountpoints({root}, "/zones/" + k_vm));
  }
  SECTION("a received mountpoint over the global zone's files is refused") {
    f.runner.on(cmd, ok(lines("/etc", "received", "off")));
    CHECK_THROWS_WITH(node.check_mountpoints({root}, "/zones/" + k_vm), Catch::Contains("/etc"));
  }
  SECTION("a look-alike prefix is refused") {
    f.runner.on(cmd, ok(lines("/zones/" + k_vm + "x", "local", "off")));
    CHECK_THROWS_AS(node.check_mountpoints({root}, "/zones/" + k_vm), PreconditionError);
  }
  SECTION("a zoned (delegated) dataset is the zone's business") {
    f.runner.on(cmd, ok(lines("/data", "local", "on")));
    CHECK_NOTHROW(node.check_mountpoints({root}, "/zones/" + k_vm));
  }
  SECTION("inherited mountpoints follow the checked names") {
    f.runner.on(cmd, ok(lines("/zones/" + k_vm + "/data", "inherited from " + root, "off")));
    CHECK_NOTHROW(node.check_mountpoints({root}, "/zones/" + k_vm));
  }
}

TEST_CASE("migration::detail::put_vmapi_server writes the instance as VMAPI has it now",
          "[migration][safety]") {
  Fixture f;
  const nlohmann::json at_begin = {{"uuid", k_vm},
                                   {"alias", "web01"},
                                   {"brand", "joyent"},
                                   {"state", "running"},
                                   {"server_uuid", "564d0000-0000-4000-8000-000000000001"},
                                   {"zfs_filesystem", "zones/" + k_vm},
                                   {"zonepath", "/zones/" + k_vm},
                                   {"zpool", "zones"},
                                   {"tags", {{"role", "old"}}}};
  const inventory::Vm vm = inventory::parse_vm(at_begin);
  nlohmann::json now = at_begin;
  now["tags"] = {{"role", "changed after begin"}};
  f.inv.add_vm(now);
  detail::put_vmapi_server(f.ctx, vm, "564d0000-0000-4000-8000-000000000002", "stopped");
  REQUIRE(f.inv.vm_puts.size() == 1);
  const nlohmann::json& body = f.inv.vm_puts[0].body;
  CHECK(body["tags"]["role"] == "changed after begin");
  CHECK(body["server_uuid"] == "564d0000-0000-4000-8000-000000000002");
  CHECK(body["state"] == "stopped");
}

TEST_CASE("SmartosNode destroys: a failure passes only when the name is proven gone",
          "[migration][node_ops][safety]") {
  Fixture f;
  SmartosNode node(f.ctx, f.server);
  const std::string snap = "zones/" + k_vm + "@zmigrate-m1-1";
  f.runner.on("zfs destroy " + snap, failed(1, "could not find any snapshots to destroy\n"));
  SECTION("gone: fine") {
    f.runner.on("zfs list -H -t all -o name " + snap,
                failed(1, "cannot open '" + snap + "': dataset does not exist\n"));
    CHECK_NOTHROW(node.destroy_snapshot(snap));
  }
  SECTION("still there: the failure stands") {
    f.runner.on("zfs list -H -t all -o name " + snap, ok(snap + "\n"));
    CHECK_THROWS_AS(node.destroy_snapshot(snap), Error);
  }
  SECTION("cannot tell: the failure stands") {
    f.runner.on("zfs list -H -t all -o name " + snap, failed(2, "zfs: broken\n"));
    CHECK_THROWS_AS(node.destroy_snapshot(snap), Error);
  }
}

TEST_CASE("SmartosNode::resume_token_snapshot decodes the token on this node",
          "[migration][node_ops][safety]") {
  Fixture f;
  f.nodes.facts_for(f.runner.host()).caps = zfs::Capabilities{}; // probed already
  SmartosNode node(f.ctx, f.server);
  // Real OpenZFS 2.3.2 output of `zfs send -nvP -t <token>` (tests/data/zfs/openzfs-2.3-real).
  const std::string decoded =
      "resume token contents:\nnvlist version: 0\n\tobject = 0x2\n"
      "\toffset = 0x0\n\tbytes = 0x20b38\n\ttoguid = 0xa9a265cbe60d3346\n"
      "\ttoname = zones/vm@zmigrate-m1-2\nfull\tzones/vm@zmigrate-m1-2\t574160\n"
      "size\t574160\n";
  f.runner.on("zfs send -nvP -t 1-abc-def-789c", ok(decoded));
  CHECK(node.resume_token_snapshot("1-abc-def-789c") == "zones/vm@zmigrate-m1-2");
  SECTION("a token with shell characters never reaches a command line") {
    f.runner.clear_record();
    for (const std::string& bad : {std::string("1-abc; rm -rf /"), std::string("1-abc-def"),
                                   std::string("1-abc-def-78 rm -rf /")}) {
      try {
        node.resume_token_snapshot(bad);
        FAIL("accepted " << bad);
      } catch (const Error& e) {
        CHECK(e.exit_code() == ExitCode::zfs); // the other node's token, not a usage error
      }
    }
    CHECK(f.runner.commands.empty());
  }
  SECTION("a token zfs cannot decode") {
    f.runner.on("zfs send -nvP -t 1-bad-0-0", failed(1, "cannot resume send: bad token\n"));
    CHECK_THROWS_AS(node.resume_token_snapshot("1-bad-0-0"), Error);
    CHECK(f.runner.commands.back() == "zfs send -nvP -t 1-bad-0-0");
  }
}

TEST_CASE("SmartosNode::mount_filesystems leaves zoned (delegated) datasets to the zone",
          "[migration][node_ops][safety]") {
  Fixture f;
  SmartosNode node(f.ctx, f.server);
  const std::string root = "zones/" + k_vm;
  f.runner.on("zfs get -Hp -r -o name,property,value,source mountpoint,zoned,type " + root,
              ok(root + "\tmountpoint\t/zones/" + k_vm + "\tlocal\n" + root +
                 "\tzoned\toff\tdefault\n" + root + "\ttype\tfilesystem\t-\n"));
  const std::string props =
      root + "\tguid\t1\n" + root + "\tcreatetxg\t1\n" + root + "\ttype\tfilesystem\n" + root +
      "\tmounted\tno\n" + root + "\tmountpoint\t/zones/" + k_vm + "\n" + root + "\tcanmount\ton\n" +
      root + "\tzoned\toff\n" + root + "/data\tguid\t2\n" + root + "/data\tcreatetxg\t2\n" + root +
      "/data\ttype\tfilesystem\n" + root + "/data\tmounted\tno\n" + root +
      "/data\tmountpoint\t/data\n" + root + "/data\tcanmount\ton\n" + root + "/data\tzoned\ton\n";
  f.runner.on_prefix("zfs get -Hp -o name,property,value -r guid,createtxg,type,mounted",
                     ok(props));
  const std::vector<std::string> mounted = node.mount_filesystems({root}, "/zones/" + k_vm);
  CHECK(mounted == std::vector<std::string>{root});
  CHECK(f.runner.commands_starting_with("zfs mount ") ==
        std::vector<std::string>{"zfs mount " + root});
  for (const std::string& c : f.runner.commands) {
    CHECK(c != "zfs mount " + root + "/data");
  }
}

TEST_CASE("SmartosNode runs each zfs command as it always has", "[migration][node_ops]") {
  // The lab greps these argv in the node logs: they come from the builders of src/zfs now, and
  // must render exactly as SmartosNode built them by hand before.
  Fixture f;
  zfs::Capabilities caps;
  caps.holds = caps.multi_snapshot = caps.dry_run_parsable = caps.resume_tokens = true;
  caps.compressed_send = caps.large_blocks = caps.embedded_data = true;
  f.nodes.facts_for(f.runner.host()).caps = caps;
  SmartosNode node(f.ctx, f.server);
  const std::string root = "zones/" + k_vm;
  const std::string disk = "zones/" + k_vm + "-disk0";
  const std::string s1 = root + "@zmigrate-m1-1";
  const std::string s2 = root + "@zmigrate-m1-2";
  auto only = [&](const std::vector<std::string>& expected) {
    CHECK(f.runner.commands == expected);
    f.runner.clear_record();
  };

  f.runner.on("zfs list -H -t all -o name " + s1, ok(s1 + "\n"));
  CHECK(node.dataset_exists(s1));
  only({"zfs list -H -t all -o name " + s1});

  node.hierarchy(root);
  only({"zfs list -H -o name -t filesystem,volume -r " + root});

  f.runner.on("zfs list -H -o name -t snapshot -s creation -r -d 1 " + root,
              ok(s1 + "\n" + s2 + "\n"));
  f.runner.on("zfs get -Hp -o name,value guid " + s1 + " " + s2, ok(s1 + "\t11\n" + s2 + "\t22\n"));
  const std::vector<SnapshotInfo> snaps = node.snapshots(root);
  REQUIRE(snaps.size() == 2);
  CHECK(snaps[1].guid == 22);
  only({"zfs list -H -o name -t snapshot -s creation -r -d 1 " + root,
        "zfs get -Hp -o name,value guid " + s1 + " " + s2});

  node.properties(root, {"quota", "reservation"});
  node.properties(s1, {"referenced"});
  only({"zfs get -Hp -o property,value quota,reservation " + root,
        "zfs get -Hp -o property,value referenced " + s1});

  node.tree({root, disk}, {"origin", "referenced"});
  only({"zfs get -Hp -o name,property,value -r guid,createtxg,origin,referenced " + root + " " +
        disk});

  node.check_mountpoints({root}, "/zones/" + k_vm);
  only({"zfs get -Hp -r -o name,property,value,source mountpoint,zoned,type " + root});

  node.snapshot_recursive({root, disk}, "zmigrate-m1-1");
  only({"zfs snapshot -r " + s1 + " " + disk + "@zmigrate-m1-1"});

  node.destroy_snapshot(s1);
  node.destroy_snapshot_recursive(s1);
  node.destroy_dataset(disk, k_vm);
  node.rollback_to(s2);
  only({"zfs destroy " + s1, "zfs destroy -r " + s1, "zfs destroy -r " + disk,
        "zfs rollback " + s2});

  node.create_dataset("zones/cores/" + k_vm, {{"mountpoint", "/zones/" + k_vm + "/cores"}});
  node.set_property(root, "quota", "");
  only({"zfs create -p zones/cores/" + k_vm,
        "zfs set mountpoint=/zones/" + k_vm + "/cores zones/cores/" + k_vm,
        "zfs set quota= " + root});

  node.hold_all({s1, s2}, "zmigrate-m1");
  node.release_all({s1, s2}, "zmigrate-m1");
  only({"zfs hold zmigrate-m1 " + s1 + " " + s2, "zfs release zmigrate-m1 " + s1 + " " + s2});

  using Argv = std::vector<std::string>;
  CHECK(node.send_argv(s1, "", "", caps) == Argv{"zfs", "send", "-p", "-c", "-L", "-e", s1});
  CHECK(node.send_argv(s2, s1, "", caps) ==
        Argv{"zfs", "send", "-p", "-c", "-L", "-e", "-I", s1, s2});
  CHECK(node.send_argv(s1, "zones/img@final", "", caps) ==
        Argv{"zfs", "send", "-p", "-c", "-L", "-e", "-i", "zones/img@final", s1});
  CHECK(node.send_argv(s1, "", "", zfs::Capabilities{}) == Argv{"zfs", "send", "-p", s1});
  CHECK(node.send_argv(s2, "", "1-abc-def-789c", caps) ==
        Argv{"zfs", "send", "-t", "1-abc-def-789c"});
  CHECK(f.runner.commands.empty()); // building an argv runs nothing

  node.estimate_send(s2, s1, "");
  node.estimate_send(s2, "", "1-abc-def-789c");
  only({"zfs send -nvP -p -c -L -e -I " + s1 + " " + s2, "zfs send -nvP -t 1-abc-def-789c"});

  SECTION("without multi-dataset snapshots: one per root") {
    caps.multi_snapshot = false;
    f.nodes.facts_for(f.runner.host()).caps = caps;
    SmartosNode fuse(f.ctx, f.server);
    fuse.snapshot_recursive({root, disk}, "zmigrate-m1-1");
    only({"zfs snapshot -r " + s1, "zfs snapshot -r " + disk + "@zmigrate-m1-1"});
  }
  SECTION("bad names, tags and values never reach a command") {
    CHECK_THROWS_AS(node.set_property(root, "quota", "1\nzfs destroy -r zones"), UsageError);
    CHECK_THROWS_AS(node.set_property(root, "quota=1 zones", "2"), UsageError);
    CHECK_THROWS_AS(node.set_property(s1, "quota", "1"), UsageError); // a dataset's property
    CHECK_THROWS_AS(node.hold_all({s1}, "-r"), UsageError);
    CHECK_THROWS_AS(node.release_all({s1}, "a b"), UsageError);
    CHECK_THROWS_AS(node.properties(root, {"quota,reservation"}), UsageError);
    CHECK_THROWS_AS(node.tree({root}, {"-o"}), UsageError);
    CHECK_THROWS_AS(node.dataset_exists("zones/a b"), UsageError);
    CHECK_THROWS_AS(node.send_argv("zones/x@a;b", "", "", caps), UsageError);
    CHECK(f.runner.commands.empty());
  }
  SECTION("no roots: nothing to read, nothing runs") {
    CHECK(node.tree({}).datasets.empty());
    CHECK_NOTHROW(node.check_mountpoints({}, "/zones/" + k_vm));
    CHECK(f.runner.commands.empty());
  }
}

TEST_CASE("SmartosNode::snapshot_and_read: snapshot, hold and read in one command",
          "[migration][node_ops]") {
  Fixture f;
  f.with_holds();
  const std::string root = "zones/" + k_vm;
  const std::string snap = "zmigrate-m1-2";
  const std::string get = "zfs get -Hp -o name,property,value -r guid,createtxg,referenced " + root;
  const std::string tree_out = root + "\tguid\t1\n" + root + "\tcreatetxg\t5\n" + root +
                               "\treferenced\t100\n" + root + "@" + snap + "\tguid\t7\n" + root +
                               "@" + snap + "\tcreatetxg\t9\n" + root + "@" + snap +
                               "\treferenced\t100\n";
  const std::string one = "zfs snapshot -r " + root + "@" + snap + " && zfs hold -r zmigrate-m1 " +
                          root + "@" + snap + " && " + get;
  SECTION("one command; the tree is read after the snapshot") {
    f.runner.on(one, ok(tree_out));
    SmartosNode node(f.ctx, f.server);
    const Node::SnapshotRead r =
        node.snapshot_and_read({root}, snap, "zmigrate-m1", {"referenced"});
    CHECK(f.runner.commands == std::vector<std::string>{one});
    CHECK(r.held);
    REQUIRE(r.tree.has(root + "@" + snap));
    CHECK(r.tree.snapshots.at(root).at(0).guid == 7);
    CHECK(r.tree.prop(root, "referenced") == "100");
  }
  SECTION("no tag: no hold") {
    f.runner.on("zfs snapshot -r " + root + "@" + snap + " && " + get, ok(tree_out));
    SmartosNode node(f.ctx, f.server);
    const Node::SnapshotRead r = node.snapshot_and_read({root}, snap, "", {"referenced"});
    CHECK(f.runner.commands.size() == 1);
    CHECK_FALSE(r.held);
    CHECK(r.tree.has(root + "@" + snap));
  }
  SECTION("the hold refused after the snapshot: the node says it exists, the tree is read again") {
    f.runner.on(one, failed(1, "cannot hold: tag already exists\n"));
    f.runner.on("zfs list -H -t all -o name " + root + "@" + snap, ok(root + "@" + snap + "\n"));
    f.runner.on(get, ok(tree_out));
    SmartosNode node(f.ctx, f.server);
    const Node::SnapshotRead r =
        node.snapshot_and_read({root}, snap, "zmigrate-m1", {"referenced"});
    CHECK(f.runner.commands ==
          std::vector<std::string>{one, "zfs list -H -t all -o name " + root + "@" + snap, get});
    CHECK_FALSE(r.held); // the caller holds it (hold_all tolerates a hold taken)
    CHECK(r.tree.has(root + "@" + snap));
  }
  SECTION("no snapshot made: zfs's error stands, nothing is read") {
    f.runner.on(one, failed(1, "cannot create snapshot: out of space\n"));
    f.runner.on("zfs list -H -t all -o name " + root + "@" + snap,
                failed(1, "cannot open '" + root + "@" + snap + "': dataset does not exist\n"));
    f.runner.on("zfs snapshot -r " + root + "@" + snap,
                failed(1, "cannot create snapshot: out of space\n"));
    SmartosNode node(f.ctx, f.server);
    CHECK_THROWS_WITH(node.snapshot_and_read({root}, snap, "zmigrate-m1", {"referenced"}),
                      Catch::Contains("out of space"));
    CHECK(f.runner.commands_starting_with("zfs get").empty());
  }
}

TEST_CASE("migration::detail::tree_after foresees what the streams bring the receiver",
          "[migration][sync]") {
  const std::string ds = "zones/" + k_vm;
  const std::string data = ds + "/data";
  const auto snap = [](const std::string& d, const std::string& s, std::uint64_t guid,
                       std::uint64_t txg) {
    return SnapshotInfo{d + "@" + s, guid, txg};
  };
  const auto put = [](DatasetTree& t, const std::string& d, std::vector<SnapshotInfo> snaps) {
    t.datasets.push_back(d);
    t.props[d]["guid"] = "1";
    for (const SnapshotInfo& s : snaps) {
      t.props[s.name] = {{"guid", std::to_string(s.guid)},
                         {"createtxg", std::to_string(s.createtxg)}};
    }
    t.snapshots[d] = std::move(snaps);
  };
  DatasetTree before;
  put(before, ds, {snap(ds, "zmigrate-m1-1", 11, 10)});
  DatasetTree sender;
  put(sender, ds,
      {snap(ds, "zmigrate-m1-1", 11, 10), snap(ds, "backup", 12, 20),
       snap(ds, "zmigrate-m1-2", 13, 30), snap(ds, "zmigrate-m1-3", 14, 40)});
  put(sender, data, {snap(data, "zmigrate-m1-3", 21, 40)});
  Stream inc;
  inc.dataset = ds;
  inc.kind = StreamKind::incremental;
  inc.from = ds + "@zmigrate-m1-1";
  inc.to = ds + "@zmigrate-m1-3";
  Stream full;
  full.dataset = data;
  full.kind = StreamKind::full;
  full.to = data + "@zmigrate-m1-3";

  SECTION("-I brings every snapshot after its base; a full stream its one, and the dataset") {
    const std::optional<DatasetTree> after = detail::tree_after(before, sender, {inc, full});
    REQUIRE(after);
    std::vector<std::string> names;
    for (const SnapshotInfo& s : after->snapshots.at(ds)) {
      names.push_back(s.name);
    }
    CHECK(names == std::vector<std::string>{ds + "@zmigrate-m1-1", ds + "@backup",
                                            ds + "@zmigrate-m1-2", ds + "@zmigrate-m1-3"});
    CHECK(after->prop(ds + "@zmigrate-m1-2", "guid") == "13");
    CHECK(after->has(data));
    REQUIRE(after->snapshots.at(data).size() == 1);
    CHECK(after->snapshots.at(data)[0].name == data + "@zmigrate-m1-3");
    CHECK(before.snapshots.at(ds).size() == 1); // pure
  }
  SECTION("a resumed stream, or one the sender's tree does not know: cannot be told") {
    Stream resume;
    resume.dataset = ds;
    resume.kind = StreamKind::resume;
    resume.token = "1-abc";
    CHECK_FALSE(detail::tree_after(before, sender, {resume}));
    Stream stray = inc;
    stray.to = ds + "@zmigrate-m1-9";
    CHECK_FALSE(detail::tree_after(before, sender, {stray}));
    Stream backwards = inc;
    backwards.from = ds + "@zmigrate-m1-3";
    backwards.to = ds + "@zmigrate-m1-1";
    CHECK_FALSE(detail::tree_after(before, sender, {backwards}));
  }
  SECTION("nothing sent: the tree as it was") {
    const std::optional<DatasetTree> after = detail::tree_after(before, sender, {});
    REQUIRE(after);
    CHECK(after->snapshots.at(ds).size() == 1);
  }
}

TEST_CASE("SmartosNode::release_and_destroy holds the kept snapshot in the prune's one command",
          "[migration][node_ops]") {
  Fixture f;
  f.with_holds();
  const std::string root = "zones/" + k_vm;
  const std::string kept = root + "@zmigrate-m1-2";
  const std::string old = root + "@zmigrate-m1-1";
  const std::string one = "zfs hold zmigrate-m1 " + kept + " && zfs release zmigrate-m1 " + old +
                          " && zfs destroy -r " + old;
  SECTION("one command") {
    f.runner.on(one, ok(""));
    SmartosNode node(f.ctx, f.server);
    node.release_and_destroy({kept}, {old}, "zmigrate-m1", {old}, {});
    CHECK(f.runner.commands == std::vector<std::string>{one});
  }
  SECTION("a failure: each step again with its own tolerance, the hold first") {
    f.runner.on(one, failed(1, "cannot hold snapshot: tag already exists on this dataset\n"));
    SmartosNode node(f.ctx, f.server);
    node.release_and_destroy({kept}, {old}, "zmigrate-m1", {old}, {});
    REQUIRE(f.runner.commands.size() >= 4);
    CHECK(f.runner.commands[1] == "zfs hold zmigrate-m1 " + kept);
    CHECK(f.runner.commands[2] == "zfs release zmigrate-m1 " + old);
    CHECK(f.runner.commands[3] == "zfs destroy -r " + old);
  }
}
