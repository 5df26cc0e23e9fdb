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
  f.runner.on_prefix("zfs send -nvP -t 1-abc-def", ok(decoded));
  CHECK(node.resume_token_snapshot("1-abc-def") == "zones/vm@zmigrate-m1-2");
  SECTION("a token with shell characters never reaches a command line") {
    f.runner.clear_record();
    CHECK_THROWS_AS(node.resume_token_snapshot("1-abc; rm -rf /"), Error);
    for (const std::string& c : f.runner.commands) {
      CHECK(c.find("rm -rf") == std::string::npos);
    }
  }
  SECTION("a token zfs cannot decode") {
    f.runner.on_prefix("zfs send -nvP -t 1-bad", failed(1, "cannot resume send: bad token\n"));
    CHECK_THROWS_AS(node.resume_token_snapshot("1-bad"), Error);
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
  for (const std::string& c : f.runner.commands) {
    CHECK(c != "zfs mount " + root + "/data");
  }
}
