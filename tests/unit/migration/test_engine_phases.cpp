// SPDX-License-Identifier: MPL-2.0
// The engine's phases end to end over stateful fakes (tests/fakes/engine_world.hpp): every phase's
// happy path judged by its effects on both nodes, VMAPI and the ledger, plus targeted failures
// of the nodes and the data link (a failed final sync restarts the source, a refusing target
// start after the hide is finished by a rerun, ...).
#include "fakes/engine_world.hpp"

#include <zmigrate/migration/engine.hpp>
#include <zmigrate/migration/operation.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

using namespace zmigrate;
using fakes::EngineWorld;

namespace {

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) {
    out += (out.empty() ? "" : "; ") + s;
  }
  return out;
}

#define CHECK_NONE(expr)                                                                           \
  do {                                                                                             \
    const std::vector<std::string> problems_ = (expr);                                             \
    INFO(joined(problems_));                                                                       \
    CHECK(problems_.empty());                                                                      \
  } while (false)

bool called(const fakes::FakeNode& n, const std::string& line) {
  return std::find(n.calls.begin(), n.calls.end(), line) != n.calls.end();
}

} // namespace

TEST_CASE("engine: begin imports the image on the target and changes nothing else",
          "[engine][begin]") {
  EngineWorld w;
  const migration::BeginResult r = w.begin();
  CHECK(r.target.uuid == EngineWorld::k_cn2);
  CHECK_NONE(w.expect_begun());
  CHECK(called(*w.cn2, std::string("image_import ") + EngineWorld::k_image));
  CHECK(w.cn2->instances.empty());
  CHECK_FALSE(w.cn2->has(w.root()));
  CHECK(w.record().data.at("datasets") == nlohmann::json::array({w.root()}));
}

TEST_CASE("engine: begin refuses an image to import that IMGAPI lacks, before any change",
          "[engine][begin]") {
  EngineWorld w;
  SECTION("not in IMGAPI") {
    w.inv.images.erase(EngineWorld::k_image);
  }
  SECTION("in IMGAPI, but not active") {
    w.inv.images[EngineWorld::k_image].state = "failed";
  }
  const auto calls = w.cn2->calls.size();
  CHECK_THROWS_AS(w.begin(), PreconditionError);
  CHECK_FALSE(w.store.find_active_for_vm(EngineWorld::k_vm));
  for (std::size_t i = calls; i < w.cn2->calls.size(); ++i) {
    CHECK(w.cn2->calls[i].rfind("image_import", 0) != 0); // nothing imported
  }
}

TEST_CASE("engine: begin refuses a target that already has the instance's dataset",
          "[engine][begin]") {
  EngineWorld w;
  w.cn2->add_dataset(w.root());
  CHECK_THROWS_AS(w.begin(), PreconditionError);
  CHECK_FALSE(w.has_record());
  CHECK(w.cn2->has(w.root())); // never touched
}

TEST_CASE("engine: sync sends a clone first, then increments; GUIDs prove the data",
          "[engine][sync]") {
  EngineWorld w;
  w.begin();
  const migration::SyncResult first = w.sync();
  CHECK_NONE(w.expect_synced(1));
  REQUIRE(first.transfers.size() == 3);
  CHECK(first.transfers[0].kind == "clone"); // zone root from the image, up to the user's snapshot
  CHECK(first.transfers[0].to == w.root() + "@backup");
  CHECK(first.transfers[1].kind == "incremental");
  CHECK(first.transfers[2].kind == "full"); // the delegated dataset
  CHECK(w.cn2->prop_of(w.root(), "origin") ==
        std::string("zones/") + EngineWorld::k_image + "@final");
  CHECK(EngineWorld::guid(*w.cn1, w.root(), "backup") ==
        EngineWorld::guid(*w.cn2, w.root(), "backup"));
  const std::string snap1 = w.synced_snap();

  const auto trees = [](const fakes::FakeNode& n) {
    return std::count_if(n.calls.begin(), n.calls.end(),
                         [](const std::string& c) { return c.rfind("tree ", 0) == 0; });
  };
  const auto src_trees = trees(*w.cn1);
  const auto dst_trees = trees(*w.cn2);
  const migration::SyncResult second = w.sync();
  CHECK_NONE(w.expect_synced(2));
  // Each tree is read once: the sender's prune works from what the sync read after its
  // snapshot, the receiver's from its tree before the streams and what they brought.
  CHECK(trees(*w.cn1) - src_trees == 1);
  CHECK(trees(*w.cn2) - dst_trees == 1);
  REQUIRE(second.transfers.size() == 2);
  for (const migration::DatasetTransfer& t : second.transfers) {
    CHECK(t.kind == "incremental");
    CHECK(t.from.substr(t.from.find('@') + 1) == snap1);
  }
  // The older migration snapshot is pruned on both sides; the newest is the next base.
  CHECK(EngineWorld::guid(*w.cn1, w.root(), snap1) == 0);
  CHECK(EngineWorld::guid(*w.cn2, w.root(), snap1) == 0);
  CHECK(w.cn2->datasets.at(w.root()).content ==
        w.cn2->datasets.at(w.root()).snapshots.back().content);
}

TEST_CASE("engine: a sync parks its data path, the next sync and the switch adopt it, the switch "
          "removes it",
          "[engine][sync]") {
  EngineWorld w;
  w.cn1->mutable_server().raw["last_boot"] = "2026-12-01T10:00:00.000Z";
  w.cn2->mutable_server().raw["last_boot"] = "2026-12-01T11:00:00.000Z";
  w.begin();
  const auto count = [&](const std::string& prefix) {
    return std::count_if(w.nodes.calls.begin(), w.nodes.calls.end(),
                         [&](const std::string& c) { return c.rfind(prefix, 0) == 0; });
  };
  w.sync();
  CHECK_NONE(w.expect_synced(1)); // one path left, parked in the ledger, nothing else
  CHECK(count("park ") == 1);
  CHECK(count("adopt ") == 0);
  const std::size_t keys_after_first = w.cn2->authorized_keys.size();
  CHECK(keys_after_first > w.operator_keys.size());

  SECTION("the next sync adopts it: no second key line") {
    w.sync();
    CHECK_NONE(w.expect_synced(2));
    CHECK(count("adopt ") == 1);
    CHECK(w.cn2->authorized_keys.size() == keys_after_first);
    w.switch_over();
    CHECK_NONE(w.expect_switched()); // no path, no key line left
    CHECK(count("adopt ") == 2);
  }
  SECTION("abort removes it") {
    w.abort();
    CHECK_NONE(w.expect_aborted());
  }
  SECTION("after a reboot of the target the next sync sets up a new path") {
    w.cn2->mutable_server().raw["last_boot"] = "2026-12-02T07:00:00.000Z";
    w.sync();
    CHECK_NONE(w.expect_synced(2));
    CHECK(count("adopt ") == 0);
  }
  SECTION("a sync that fails removes the one it adopted; the next installs a new one") {
    w.nodes.fail_next_send();
    CHECK_THROWS(w.sync());
    CHECK(w.cn1->paths.empty());
    CHECK(w.cn2->paths.empty());
    CHECK(w.cn2->authorized_keys == w.operator_keys);
    w.sync();
    CHECK_NONE(w.expect_synced(2));
    CHECK(count("adopt ") == 1);
  }
  SECTION("migrate --no-switch parks the path of its syncs") {
    migration::MigrateOptions o;
    o.begin.vm_uuid = EngineWorld::k_vm;
    o.begin.target = EngineWorld::k_cn2;
    o.no_switch = true;
    migration::migrate(w.ctx, o);
    CHECK(count("adopt ") == 1);
    CHECK(count("park ") == 2);
    CHECK(w.cn2->authorized_keys.size() == keys_after_first);
  }
}

TEST_CASE("engine: the sender's prune rides along with the streams; when it fails there it runs "
          "on its own",
          "[engine][sync]") {
  EngineWorld w;
  w.begin();
  w.sync();
  const std::string snap1 = w.synced_snap();
  const auto count = [](const std::vector<std::string>& calls, const std::string& prefix) {
    return std::count_if(calls.begin(), calls.end(),
                         [&](const std::string& c) { return c.rfind(prefix, 0) == 0; });
  };
  const auto tails = count(w.cn1->calls, "prune_tail ");
  const auto releases = count(w.cn1->calls, "release_all ");
  SECTION("in the same round trip as the streams") {
    w.sync();
    CHECK_NONE(w.expect_synced(2));
    CHECK(count(w.cn1->calls, "prune_tail ") == tails + 1);
    CHECK(count(w.cn1->calls, "release_all ") == releases + 1); // the tail's own release
  }
  SECTION("a tail that fails: the prune again, on its own") {
    w.nodes.fail_next_tail = true;
    w.sync();
    CHECK_NONE(w.expect_synced(2));
    CHECK(count(w.cn1->calls, "prune_tail ") == tails);
    CHECK(count(w.cn1->calls, "release_all ") == releases + 1); // prune_snapshots'
  }
  SECTION("a stream that fails: the sender keeps its base, nothing of the tail runs") {
    w.nodes.fail_next_send("injected", 1); // the second stream of the sync fails
    CHECK_THROWS(w.sync());
    CHECK(count(w.cn1->calls, "prune_tail ") == tails);
    CHECK(EngineWorld::guid(*w.cn1, w.root(), snap1) != 0); // the base of the next sync
    CHECK(EngineWorld::guid(*w.cn2, w.root(), snap1) != 0);
    w.sync(); // converges from that base
    CHECK_NONE(w.expect_synced(2));
  }
  SECTION("a node whose prune cannot ride along prunes on its own") {
    w.cn1->ride_prune = false;
    w.sync();
    CHECK_NONE(w.expect_synced(2));
    CHECK(count(w.cn1->calls, "prune_tail ") == tails);
  }
  // Whichever way, the older migration snapshot is gone from the sender, the newest kept.
  CHECK(EngineWorld::guid(*w.cn1, w.root(), snap1) == 0);
  CHECK(EngineWorld::guid(*w.cn1, w.root(), w.synced_snap()) != 0);
}

namespace {

// For the rendezvous tests: waits (real time: the other side is on another thread) until `flag`
// is set or 20 s passed; whether it was set.
bool until_set(const std::atomic<bool>& flag) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!flag.load() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return flag.load();
}

} // namespace

TEST_CASE("engine: the receiver holds and prunes while the sender's prune rides along with the "
          "streams",
          "[engine][sync]") {
  EngineWorld w;
  w.begin();
  w.sync();
  const std::string snap1 = w.synced_snap();
  // A rendezvous (as the switch's VMAPI wait test): the sender's prune tail and the receiver's
  // hold each wait until the other has begun; only when they run at once do both go on in time.
  std::atomic<bool> tail_running{false};
  std::atomic<bool> receiver_pruning{false};
  std::atomic<bool> tail_saw_receiver{false};
  std::atomic<bool> receiver_saw_tail{false};
  w.cn1->gate = [&](const std::string& line) {
    if (line.rfind("prune_tail ", 0) == 0 && !tail_running) {
      tail_running = true;
      tail_saw_receiver = until_set(receiver_pruning);
    }
  };
  w.cn2->gate = [&](const std::string& line) {
    if (line.rfind("hold_all ", 0) == 0 && !receiver_pruning) {
      receiver_pruning = true;
      receiver_saw_tail = until_set(tail_running);
    }
  };
  w.sync();
  w.cn1->gate = {};
  w.cn2->gate = {};
  CHECK(tail_saw_receiver);
  CHECK(receiver_saw_tail);
  CHECK_NONE(w.expect_synced(2));
  // Both pruned: the older migration snapshot gone on each side, the newest kept (and held).
  for (fakes::FakeNode* n : {w.cn1.get(), w.cn2.get()}) {
    CHECK(EngineWorld::guid(*n, w.root(), snap1) == 0);
    CHECK(EngineWorld::guid(*n, w.root(), w.synced_snap()) != 0);
    CHECK_FALSE(n->find_snapshot(w.root() + "@" + w.synced_snap())->holds.empty());
  }
}

TEST_CASE("engine: a sync takes the capability probe of the same boot of a node from the record",
          "[engine][sync]") {
  EngineWorld w;
  w.cn1->mutable_server().raw["last_boot"] = "2026-12-01T10:00:00.000Z";
  w.cn2->mutable_server().raw["last_boot"] = "2026-12-01T11:00:00.000Z";
  w.begin();
  const auto assumed = [](const fakes::FakeNode& n) {
    return std::count(n.calls.begin(), n.calls.end(), "assume_caps");
  };
  w.sync();
  CHECK(assumed(*w.cn1) == 0); // probed, and recorded
  CHECK(assumed(*w.cn2) == 0);
  const nlohmann::json cached = w.record().data.at("node_caps");
  CHECK(cached.at(EngineWorld::k_cn1).at("boot") == "2026-12-01T10:00:00.000Z");
  CHECK(cached.at(EngineWorld::k_cn2).at("caps").at("holds") == w.cn2->caps().holds);
  // The receiver's host key, as its data path took it, is kept with its probe.
  CHECK(cached.at(EngineWorld::k_cn2).at("host_key") == w.cn2->host_key());
  CHECK_FALSE(cached.at(EngineWorld::k_cn1).contains("host_key"));
  const auto key_reads = [](const fakes::FakeNode& n) {
    return std::count(n.calls.begin(), n.calls.end(), "host_key");
  };
  const auto reads_before = key_reads(*w.cn2);
  w.sync();
  CHECK(assumed(*w.cn1) == 1); // the same boot: no probe
  CHECK(assumed(*w.cn2) == 1);
  CHECK(key_reads(*w.cn2) == reads_before); // nor a host key read
  CHECK(std::count(w.cn2->calls.begin(), w.cn2->calls.end(), "assume_host_key") == 1);
  // cn2 rebooted (a platform update may have changed its ZFS): probed again.
  w.cn2->mutable_server().raw["last_boot"] = "2026-12-02T09:00:00.000Z";
  w.sync();
  CHECK(assumed(*w.cn1) == 2);
  CHECK(assumed(*w.cn2) == 1);
  CHECK(w.record().data.at("node_caps").at(EngineWorld::k_cn2).at("boot") ==
        "2026-12-02T09:00:00.000Z");
  CHECK_NONE(w.expect_synced(3));
  // A sync that fails forgets them: the next one asks both nodes again.
  w.nodes.fail_next_send();
  CHECK_THROWS(w.sync());
  CHECK(assumed(*w.cn1) == 3);
  CHECK_FALSE(w.record().data.contains("node_caps"));
  w.sync();
  CHECK(assumed(*w.cn1) == 3);
  CHECK(assumed(*w.cn2) == 2);
  CHECK(w.record().data.contains("node_caps"));
}

TEST_CASE("engine: switch stops and hides the source, starts the target, points VMAPI there",
          "[engine][switch]") {
  EngineWorld w;
  w.begin();
  w.sync();
  w.clock.advance(std::chrono::minutes(5)); // not right after a sync: the switch presyncs
  const migration::SwitchResult r = w.switch_over();
  CHECK(r.was_running);
  CHECK_NONE(w.expect_switched());
  const std::vector<std::string> steps = w.steps_since(0);
  CHECK(std::find(steps.begin(), steps.end(), "switch.presync") != steps.end());
  // The final snapshot is held on both sides as the rollback base.
  const std::string snap = w.synced_snap();
  CHECK_FALSE(w.cn1->find_snapshot(w.root() + "@" + snap)->holds.empty());
  CHECK_FALSE(w.cn2->find_snapshot(w.root() + "@" + snap)->holds.empty());
  CHECK(w.inv.ip_reservations.size() == 2); // reserved for the window, released after
}

TEST_CASE("engine: switch waits for VMAPI beside the steps after the promotion, and unreserves "
          "the IPs after it",
          "[engine][switch]") {
  EngineWorld w;
  w.begin();
  w.sync();
  // A rendezvous: the cleanup's read of the target (the last step on the nodes, after the
  // promotion) and VMAPI's sync=true read each wait until the other has begun. Both go on only
  // when they run at once; a switch that waited first, or after the cleanup, runs into the
  // deadline (real time: they are on two threads) and fails the checks below.
  std::atomic<bool> promoted{false};
  std::atomic<bool> cleanup_reading{false};
  std::atomic<bool> vmapi_reading{false};
  std::atomic<bool> cleanup_saw_vmapi{false};
  std::atomic<bool> vmapi_saw_cleanup{false};
  w.cn2->gate = [&](const std::string& line) {
    if (line.rfind("vm_update ", 0) == 0 &&
        line.find("do_not_inventory=false") != std::string::npos) {
      promoted = true;
    } else if (promoted && line.rfind("tree ", 0) == 0 && !cleanup_reading) {
      cleanup_reading = true;
      cleanup_saw_vmapi = until_set(vmapi_reading);
    }
  };
  w.inv.before_call = [&](const std::string& call) {
    if (call == std::string("find_vm ") + EngineWorld::k_vm + " sync" && !vmapi_reading) {
      vmapi_reading = true;
      vmapi_saw_cleanup = until_set(cleanup_reading);
    }
  };
  const migration::SwitchResult r = w.switch_over();
  w.inv.before_call = {};
  w.cn2->gate = {};
  CHECK(r.was_running);
  CHECK(cleanup_saw_vmapi);
  CHECK(vmapi_saw_cleanup);
  CHECK_NONE(w.expect_switched());
  // The IP reservations go once VMAPI showed the instance on the target.
  const auto sync_read = std::find(w.inv.calls.begin(), w.inv.calls.end(),
                                   std::string("find_vm ") + EngineWorld::k_vm + " sync");
  REQUIRE(sync_read != w.inv.calls.end());
  CHECK(std::none_of(w.inv.calls.begin(), sync_read, [](const std::string& c) {
    return c.find("set_ip_reserved") != std::string::npos && c.find("false") != std::string::npos;
  }));
  CHECK(w.inv.ip_reservations.size() == 2);
}

TEST_CASE("engine: switch hides the source while the final delta streams; when that fails there "
          "the hide runs on its own",
          "[engine][switch]") {
  EngineWorld w;
  w.begin();
  w.sync();
  w.clock.advance(std::chrono::minutes(5)); // a presync first: it carries no hide
  const std::string hide =
      "vm_update " + std::string(EngineWorld::k_vm) + " do_not_inventory=true autoboot=false";
  const auto count = [](const std::vector<std::string>& calls, const std::string& line) {
    return std::count(calls.begin(), calls.end(), line);
  };
  const auto alongside = [&w] {
    return std::count_if(w.nodes.calls.begin(), w.nodes.calls.end(), [](const std::string& c) {
      return c.rfind("alongside vmadm update", 0) == 0;
    });
  };
  SECTION("with the streams: one hide, after the stop, in the final delta's round trip") {
    w.switch_over();
    CHECK(alongside() == 1);
    CHECK(count(w.cn1->calls, hide) == 1);
    const auto stop = std::find(w.cn1->calls.begin(), w.cn1->calls.end(),
                                "vm_stop " + std::string(EngineWorld::k_vm));
    CHECK(std::find(w.cn1->calls.begin(), stop, hide) == stop); // not before the stop
  }
  SECTION("it fails there: the hide step runs it on its own") {
    w.nodes.fail_next_alongside = true; // the presync carries none: this is the final delta's
    w.switch_over();
    CHECK(alongside() == 1);
    CHECK(count(w.cn1->calls, hide) == 1);
  }
  SECTION("a node whose update cannot ride along hides on its own") {
    w.cn1->ride_update = false;
    w.switch_over();
    CHECK(alongside() == 0);
    CHECK(count(w.cn1->calls, hide) == 1);
  }
  SECTION("a stream fails after the hide ran beside it: the source is visible and runs again") {
    w.nodes.fail_next_send("injected",
                           2); // the presync's two streams pass, the final's first fails
    CHECK_THROWS(w.switch_over());
    CHECK(alongside() == 1);
    CHECK(count(w.cn1->calls, hide) == 1); // it did hide, beside the streams
    const nlohmann::json& src = w.cn1->instances.at(EngineWorld::k_vm);
    CHECK_FALSE(src.value("do_not_inventory", false));
    CHECK(src.value("autoboot", false));
    CHECK(w.cn1->running(EngineWorld::k_vm));
    CHECK(w.record().phase == state::Phase::sync);
    CHECK_FALSE(w.record().data["switch"].value("source_hidden", false));
    w.switch_over(); // a retry goes through
  }
  CHECK_NONE(w.expect_switched());
}

TEST_CASE("engine: switch of a stopped instance mounts the target and leaves it stopped",
          "[engine][switch]") {
  EngineWorld w(EngineWorld::Kind::zone, false);
  w.begin();
  w.sync();
  const migration::SwitchResult r = w.switch_over();
  CHECK_FALSE(r.was_running);
  CHECK_NONE(w.expect_switched());
  CHECK(w.cn2->datasets.at(w.root()).mounted);
  CHECK_FALSE(called(*w.cn2, std::string("vm_start ") + EngineWorld::k_vm));
}

TEST_CASE("engine: finalize deletes the hidden source after proving the target",
          "[engine][finalize]") {
  EngineWorld w;
  w.begin();
  w.sync();
  w.switch_over();
  w.finalize();
  CHECK_NONE(w.expect_finalized());
  CHECK(w.cn1->instances.count(EngineWorld::k_vm) == 0);
}

TEST_CASE("engine: finalize refuses when the target's copy differs, and deletes nothing",
          "[engine][finalize]") {
  EngineWorld w;
  w.begin();
  w.sync();
  w.switch_over();
  w.cn2->datasets.at(w.root()).snapshots.back().guid ^= 1; // not the copy the source sent
  CHECK_THROWS_AS(w.finalize(), PreconditionError);
  CHECK(w.cn1->instances.count(EngineWorld::k_vm) != 0);
  for (const std::string& ds : w.instance_datasets()) {
    CHECK(w.cn1->has(ds));
  }
  CHECK(w.record().phase == state::Phase::switch_);
  w.cn2->datasets.at(w.root()).snapshots.back().guid ^= 1;
  w.rollback(); // still possible
  CHECK_NONE(w.expect_rolled_back());
}

TEST_CASE("engine: rollback after a switch makes the source primary again", "[engine][rollback]") {
  EngineWorld w;
  w.begin();
  w.sync();
  w.switch_over();
  w.rollback();
  CHECK_NONE(w.expect_rolled_back());
}

TEST_CASE("engine: abort after a sync throws the target copy away", "[engine][abort]") {
  EngineWorld w;
  w.begin();
  w.sync();
  const auto content = w.cn1->datasets.at(w.root()).content;
  w.abort();
  CHECK_NONE(w.expect_aborted());
  CHECK(w.cn1->datasets.at(w.root()).content == content);
  CHECK(w.cn1->running(EngineWorld::k_vm));
  CHECK_FALSE(called(*w.cn1, std::string("vm_stop ") + EngineWorld::k_vm));
}

TEST_CASE("engine: migrate runs begin, sync, switch and finalize", "[engine][migrate]") {
  SECTION("zone") {
    EngineWorld w;
    const migration::MigrateResult r = w.migrate(true);
    CHECK(r.finalized);
    CHECK_FALSE(r.syncs.empty());
    CHECK_NONE(w.expect_finalized());
    CHECK(w.nodes.links_made == 1); // one data link for every sync and the switch
  }
  SECTION("kvm") {
    EngineWorld w(EngineWorld::Kind::kvm);
    w.migrate(false);
    CHECK_NONE(w.expect_switched());
    CHECK(w.cn2->datasets.at(w.disk(0)).type == "volume");
    CHECK(w.cn2->prop_of(w.disk(0), "origin") ==
          std::string("zones/") + EngineWorld::k_kvm_image + "@final");
    w.finalize();
    CHECK_NONE(w.expect_finalized());
  }
  SECTION("kvm, rolled back") {
    EngineWorld w(EngineWorld::Kind::kvm);
    w.migrate(false);
    w.rollback();
    CHECK_NONE(w.expect_rolled_back());
  }
}

TEST_CASE("engine: a failed final sync restarts the source and returns to sync",
          "[engine][switch]") {
  EngineWorld w;
  w.begin();
  w.sync();
  w.nodes.fail_next_send(); // the first stream after the stop (no presync right after a sync)
  CHECK_THROWS(w.switch_over());
  const state::Migration m = w.record();
  CHECK(m.phase == state::Phase::sync);
  CHECK(m.state == state::State::failed);
  CHECK(w.cn1->running(EngineWorld::k_vm));
  CHECK_FALSE(w.cn1->instances.at(EngineWorld::k_vm).value("do_not_inventory", false));
  CHECK(w.cn2->instances.count(EngineWorld::k_vm) == 0);
  CHECK(w.inv.vms.at(EngineWorld::k_vm).server_uuid == EngineWorld::k_cn1);
  w.switch_over();
  CHECK_NONE(w.expect_switched());
}

TEST_CASE("engine: a target that will not start after the hide is finished by a rerun",
          "[engine][switch]") {
  EngineWorld w;
  w.begin();
  w.sync();
  w.cn2->fail_next("vm_start");
  CHECK_THROWS(w.switch_over());
  const state::Migration m = w.record();
  CHECK(m.phase == state::Phase::switch_);
  CHECK(m.state == state::State::failed);
  CHECK_FALSE(w.cn1->running(EngineWorld::k_vm));
  CHECK_FALSE(w.cn2->running(EngineWorld::k_vm));
  CHECK_THROWS_AS(w.abort(), PreconditionError); // refused once the source is hidden
  w.switch_over();
  CHECK_NONE(w.expect_switched());
}

TEST_CASE("engine: VMAPI failing inside the downtime window never keeps the instance down",
          "[engine][switch]") {
  EngineWorld w;
  w.begin();
  w.sync();
  int failures = 0;
  const std::string put = std::string("put_vm ") + EngineWorld::k_vm;
  SECTION("one failed update: the target starts, the update is made after the start") {
    w.inv.before_call = [&](const std::string& call) {
      if (call == put && failures++ == 0) {
        throw TransientError(ExitCode::inventory,
                             "VMAPI PUT /vms/" + std::string(EngineWorld::k_vm),
                             "503 ServiceUnavailable");
      }
    };
    w.switch_over();
    w.inv.before_call = {};
    CHECK(failures == 2);
    CHECK_NONE(w.expect_switched());
  }
  SECTION("every update fails: exit 5, the instance runs on the target, a rerun finishes") {
    w.inv.before_call = [&](const std::string& call) {
      if (call == put) {
        ++failures;
        throw TransientError(ExitCode::inventory,
                             "VMAPI PUT /vms/" + std::string(EngineWorld::k_vm),
                             "503 ServiceUnavailable");
      }
    };
    try {
      w.switch_over();
      FAIL("the switch succeeded although VMAPI never took the update");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::inventory);
      CHECK_THAT(e.what(), Catch::Contains("rerun \"zmigrate switch"));
    }
    w.inv.before_call = {};
    CHECK(failures == 2);
    CHECK(w.cn2->running(EngineWorld::k_vm));
    CHECK_FALSE(w.cn1->running(EngineWorld::k_vm));
    CHECK(w.record().phase == state::Phase::switch_);
    w.switch_over();
    CHECK_NONE(w.expect_switched());
  }
}

TEST_CASE("engine: Triton's own migration of the instance blocks begin and switch",
          "[engine][begin][switch]") {
  EngineWorld w;
  nlohmann::json tm = {{"id", "7d8a6e2c-1f4b-4c3e-9a5d-2b6c8e0f1a33"},
                       {"vm_uuid", EngineWorld::k_vm},
                       {"phase", "sync"},
                       {"state", "paused"},
                       {"created_timestamp", "2019-04-02T23:34:30.135Z"}};
  SECTION("begin: refused before anything changes, naming the migration") {
    w.inv.triton_migrations[EngineWorld::k_vm] = tm;
    const auto calls1 = w.cn1->calls.size();
    const auto calls2 = w.cn2->calls.size();
    try {
      w.begin();
      FAIL("begin went ahead beside Triton's migration");
    } catch (const PreconditionError& e) {
      CHECK_THAT(e.what(), Catch::Contains("7d8a6e2c-1f4b-4c3e-9a5d-2b6c8e0f1a33") &&
                               Catch::Contains("sdc-migrate abort"));
    }
    CHECK_FALSE(w.store.find_active_for_vm(EngineWorld::k_vm));
    CHECK(w.cn1->calls.size() == calls1);
    CHECK(w.cn2->calls.size() == calls2);
  }
  SECTION("begin: one that switched and waits for its finalize") {
    tm["phase"] = "switch";
    tm["state"] = "successful";
    w.inv.triton_migrations[EngineWorld::k_vm] = tm;
    CHECK_THROWS_WITH(w.begin(), Catch::Contains("sdc-migrate finalize"));
  }
  SECTION("begin: a legacy aborted record does not block") {
    tm["state"] = "aborted";
    w.inv.triton_migrations[EngineWorld::k_vm] = tm;
    w.begin();
    CHECK_NONE(w.expect_begun());
  }
  SECTION("switch: one begun since our begin stops it before the source stops") {
    w.begin();
    w.sync();
    w.inv.triton_migrations[EngineWorld::k_vm] = tm;
    CHECK_THROWS_AS(w.switch_over(), PreconditionError);
    CHECK(w.cn1->running(EngineWorld::k_vm));
    CHECK_FALSE(w.cn2->running(EngineWorld::k_vm));
    CHECK(w.record().phase == state::Phase::sync);
    w.inv.triton_migrations.clear();
    w.switch_over();
    CHECK_NONE(w.expect_switched());
  }
}

TEST_CASE("engine: the mark on the source zone root keeps a second zmigrate out",
          "[engine][begin][switch][safety]") {
  EngineWorld w;
  const std::string other = "5b0c1d2e-3f40-4a51-8b62-7c83d94e0f15"; // unknown to this store
  SECTION("begin marks the source with the migration id; finalize leaves no mark anywhere") {
    w.begin();
    CHECK(w.cn1->prop_of(w.root(), migration::k_mark_property) == w.record().id);
    w.sync();
    w.switch_over();
    CHECK(w.cn2->prop_of(w.root(), migration::k_mark_property) == w.record().id); // received
    w.finalize();
    CHECK(w.cn2->prop_of(w.root(), migration::k_mark_property).empty());
    CHECK_NONE(w.expect_finalized());
  }
  SECTION("abort and rollback remove the mark from the source") {
    w.begin();
    w.sync();
    SECTION("abort") {
      w.abort();
    }
    SECTION("rollback") {
      w.switch_over();
      w.rollback();
    }
    CHECK(w.cn1->prop_of(w.root(), migration::k_mark_property).empty());
    CHECK_FALSE(w.cn2->has(w.root()));
  }
  SECTION("begin refuses a mark this store does not know, before anything changes") {
    w.cn1->set_local(w.root(), migration::k_mark_property, other);
    CHECK_THROWS_WITH(w.begin(), Catch::Contains(other) && Catch::Contains("zfs inherit"));
    CHECK_FALSE(w.store.find_active_for_vm(EngineWorld::k_vm));
    CHECK(w.cn1->prop_of(w.root(), migration::k_mark_property) == other);
    for (const std::string& call : w.cn1->calls) { // read, never written
      CHECK_FALSE(call.starts_with("set_property"));
    }
    CHECK(w.cn2->datasets.count(w.root()) == 0);
  }
  SECTION("a mark of an ended migration of this store is stale: begin takes it over") {
    w.begin();
    const std::string first = w.record().id;
    w.abort();
    w.cn1->set_local(w.root(), migration::k_mark_property, first); // as if the clear was lost
    w.begin();
    CHECK(w.cn1->prop_of(w.root(), migration::k_mark_property) == w.record().id);
  }
  SECTION("switch refuses when another zmigrate overwrote the mark since our begin") {
    w.begin();
    w.sync();
    w.cn1->set_local(w.root(), migration::k_mark_property, other);
    CHECK_THROWS_WITH(w.switch_over(), Catch::Contains(other));
    CHECK(w.cn1->running(EngineWorld::k_vm));
    CHECK(w.record().phase == state::Phase::sync);
    // Not ours to clear: abort ends our migration and leaves the other's mark alone.
    w.abort();
    CHECK(w.cn1->prop_of(w.root(), migration::k_mark_property) == other);
  }
}

TEST_CASE("engine: a received mountpoint outside the zonepath stops the switch before the hide",
          "[engine][switch][safety]") {
  EngineWorld w;
  w.begin();
  w.cn1->set_local(w.root(), "mountpoint", "/etc");
  w.sync();
  CHECK_THROWS_AS(w.switch_over(), PreconditionError);
  CHECK(w.record().phase == state::Phase::sync);
  CHECK(w.cn1->running(EngineWorld::k_vm));
  CHECK_FALSE(w.cn1->instances.at(EngineWorld::k_vm).value("do_not_inventory", false));
  CHECK_FALSE(w.cn2->running(EngineWorld::k_vm));
  w.abort();
  CHECK_NONE(w.expect_aborted());
}

TEST_CASE("engine: destroy_dataset of the fake refuses what the instance does not own",
          "[engine][fake]") {
  EngineWorld w;
  CHECK_THROWS_AS(w.cn1->destroy_dataset("zones", EngineWorld::k_vm), PreconditionError);
  CHECK_THROWS_AS(
      w.cn1->destroy_dataset(std::string("zones/") + EngineWorld::k_image, EngineWorld::k_vm),
      PreconditionError);
  CHECK_THROWS(w.cn1->destroy_dataset(w.root(), EngineWorld::k_vm)); // a running zone's root
  CHECK(w.cn1->has(w.root()));
  CHECK_FALSE(w.cn1->vm_get("00000000-0000-4000-8000-000000000000").has_value());
  CHECK_THROWS(w.cn1->vm_start(EngineWorld::k_vm));
  w.cn1->hold_all({w.root() + "@backup"}, "t");
  CHECK_THROWS(w.cn1->destroy_snapshot(w.root() + "@backup"));
  w.cn1->release_all({w.root() + "@backup"}, "t");
  w.cn1->destroy_snapshot(w.root() + "@backup");
  CHECK_FALSE(w.cn1->has(w.root() + "@backup"));
}

TEST_CASE("engine: a failed begin is retried on the same record", "[engine][begin]") {
  EngineWorld w;
  w.cn2->fail_next("image_import");
  CHECK_THROWS(w.begin());
  const state::Migration failed = w.record();
  CHECK(failed.phase == state::Phase::begin);
  CHECK(failed.state == state::State::failed);
  const migration::BeginResult again = w.begin();
  CHECK(again.migration.id == failed.id); // not a second record
  CHECK(again.target.uuid == failed.target_server_uuid);
  CHECK_NONE(w.expect_begun());
  CHECK(w.record().history.size() == failed.history.size() + 1);
  w.sync();
  CHECK_NONE(w.expect_synced(1));
}

TEST_CASE("engine: rollback of a switch that failed before the target started restarts the "
          "source that ran",
          "[engine][rollback]") {
  EngineWorld w;
  w.begin();
  w.sync();
  w.cn2->fail_always("vm_start");
  CHECK_THROWS(w.switch_over());
  CHECK(w.record().phase == state::Phase::switch_);
  CHECK_FALSE(w.cn1->running(EngineWorld::k_vm));
  w.rollback();
  CHECK_NONE(w.expect_rolled_back());
  CHECK(w.cn1->running(EngineWorld::k_vm)); // it ran before the migration
  CHECK(w.inv.vms.at(EngineWorld::k_vm).state == "running");
}

TEST_CASE("engine: rollback leaves the instance stopped when the operator stopped the target",
          "[engine][rollback]") {
  EngineWorld w;
  w.begin();
  w.sync();
  w.switch_over();
  w.cn2->vm_stop(EngineWorld::k_vm);
  w.rollback();
  CHECK_FALSE(w.cn1->running(EngineWorld::k_vm));
  CHECK(w.cn1->instances.count(EngineWorld::k_vm) == 1);
}

TEST_CASE("engine: finalize that failed after its cleanup finishes on a rerun",
          "[engine][finalize]") {
  EngineWorld w;
  w.begin();
  w.sync();
  w.switch_over();
  w.fail_at_step("finalize.cleanup", 1, false);
  CHECK_THROWS(w.finalize());
  CHECK(w.record().phase == state::Phase::finalize);
  w.clear_step_fault();
  w.finalize();
  CHECK_NONE(w.expect_finalized());
}

TEST_CASE("engine: migrate --finalize rerun after a failed finalize only finishes the finalize",
          "[engine][migrate]") {
  EngineWorld w;
  w.fail_at_step("finalize.delete_source", 1, true);
  CHECK_THROWS(w.migrate(true));
  w.clear_step_fault();
  CHECK(w.record().phase == state::Phase::finalize);
  // Without --finalize the rerun refuses (it never deletes unasked) and changes nothing.
  CHECK_THROWS_AS(w.migrate(false), PreconditionError);
  CHECK(w.record().phase == state::Phase::finalize);
  const int links = w.nodes.links_made;
  const migration::MigrateResult r = w.migrate(true);
  CHECK(r.finalized);
  CHECK(r.syncs.empty()); // no sync, no switch: only the finalize was left
  CHECK(w.nodes.links_made == links);
  CHECK_NONE(w.expect_finalized());
}

TEST_CASE("engine: a begin retry lifts a bhyve quota whose removal an earlier attempt only "
          "recorded",
          "[engine][begin]") {
  EngineWorld w(EngineWorld::Kind::bhyve);
  // The removal fails, and so does its undo (the mark, also a set_property, goes through).
  w.cn1->fail_when([](const std::string& call) {
    return call.starts_with("set_property") && call.find(" quota=") != std::string::npos;
  });
  CHECK_THROWS(w.begin());
  const state::Migration failed = w.record();
  int live = 0;
  for (const state::Artefact& a : w.store.live_artefacts(failed.id)) {
    live += a.kind == "quota_removed" ? 1 : 0;
  }
  CHECK(live == 1); // the ledger still holds the original quota
  CHECK(w.cn1->prop_of(w.root(), "quota") == std::to_string(EngineWorld::k_bhyve_quota));
  w.cn1->clear_faults();
  w.begin();
  CHECK_NONE(w.expect_begun()); // lifted now
  live = 0;
  for (const state::Artefact& a : w.store.live_artefacts(failed.id)) {
    live += a.kind == "quota_removed" ? 1 : 0;
  }
  CHECK(live == 1); // one row, not two
  w.sync();
  w.switch_over();
  CHECK_NONE(w.expect_switched()); // the quota is back at the reservation on both copies
}

namespace {
// migrate --offline of the world's instance to cn2.
migration::MigrateOptions offline_to_cn2() {
  migration::MigrateOptions o;
  o.begin.vm_uuid = EngineWorld::k_vm;
  o.begin.target = EngineWorld::k_cn2;
  o.offline = true;
  return o;
}
} // namespace

TEST_CASE("engine: migrate --offline stops first, copies once, starts on the target",
          "[engine][migrate]") {
  SECTION("a running instance: stopped before the copy, running on the target after") {
    EngineWorld w;
    const migration::MigrateOptions o = offline_to_cn2();
    const migration::MigrateResult r = migration::migrate(w.ctx, o);
    CHECK(r.syncs.size() == 1); // nothing changes while it is stopped
    REQUIRE(r.switched);
    CHECK(r.switched->was_running);
    REQUIRE(r.offline_downtime);
    CHECK_NONE(w.expect_switched());
    CHECK(w.cn2->running(EngineWorld::k_vm));
    // The stop came before the first stream: the copy is of a stopped instance.
    const auto stop = std::find(w.cn1->calls.begin(), w.cn1->calls.end(),
                                std::string("vm_stop ") + EngineWorld::k_vm);
    REQUIRE(stop != w.cn1->calls.end());
    const state::Migration m = w.record();
    CHECK(m.data.at("switch").at("was_running") == true);
    CHECK(m.data.at("offline").contains("stopped_at"));
    CHECK(m.data.at("switch").contains("target_started_at"));
  }

  SECTION("a stopped instance stays stopped and nothing was down") {
    EngineWorld w(EngineWorld::Kind::zone, false);
    const migration::MigrateOptions o = offline_to_cn2();
    const migration::MigrateResult r = migration::migrate(w.ctx, o);
    REQUIRE(r.switched);
    CHECK_FALSE(r.switched->was_running);
    REQUIRE(r.offline_downtime);
    CHECK(r.offline_downtime->count() == 0);
    CHECK_NONE(w.expect_switched());
    CHECK_FALSE(w.cn2->running(EngineWorld::k_vm));
  }

  SECTION("a copy that fails after the stop says the instance is stopped and how to go on") {
    EngineWorld w;
    const migration::MigrateOptions o = offline_to_cn2();
    w.nodes.fail_next_send();
    CHECK_THROWS_WITH(
        migration::migrate(w.ctx, o),
        Catch::Contains("The instance is stopped for the offline migration") &&
            Catch::Contains("zmigrate migrate --offline " + std::string(EngineWorld::k_vm)) &&
            Catch::Contains("zmigrate abort"));
    CHECK_FALSE(w.cn1->running(EngineWorld::k_vm));
    migration::migrate(w.ctx, o); // the rerun goes on
    CHECK_NONE(w.expect_switched());
    CHECK(w.cn2->running(EngineWorld::k_vm));
  }

  SECTION("a target that fills up during the copy: refused, the source started again") {
    EngineWorld w;
    const migration::MigrateOptions o = offline_to_cn2();
    auto cn2 = std::find_if(w.inv.servers.begin(), w.inv.servers.end(),
                            [](const auto& s) { return s.uuid == EngineWorld::k_cn2; });
    REQUIRE(cn2 != w.inv.servers.end());
    const std::uint64_t ram = cn2->unreserved_ram_mib;
    w.ctx.settings.step_hook = [&](const std::string& name, bool before) {
      if (name.rfind("sync.", 0) == 0 && before) {
        cn2->unreserved_ram_mib = 1; // another provision took the room while it copied
      }
    };
    CHECK_THROWS_WITH(migration::migrate(w.ctx, o), Catch::Contains("not enough unreserved RAM") &&
                                                        Catch::Contains("Nothing was switched"));
    CHECK(w.cn1->running(EngineWorld::k_vm)); // the switch's undo: as before the offline stop
    CHECK(w.cn2->instances.count(EngineWorld::k_vm) == 0);
    w.ctx.settings.step_hook = nullptr;
    cn2->unreserved_ram_mib = ram;
    migration::migrate(w.ctx, o); // the rerun goes on
    CHECK_NONE(w.expect_switched());
    CHECK(w.cn2->running(EngineWorld::k_vm));
  }

  SECTION("abort after the offline stop starts the instance again on the source") {
    EngineWorld w;
    w.begin();
    migration::SyncOptions so;
    so.stop_first = true;
    migration::sync(w.ctx, EngineWorld::k_vm, so);
    CHECK_FALSE(w.cn1->running(EngineWorld::k_vm));
    w.abort();
    CHECK_NONE(w.expect_aborted());
    CHECK(w.cn1->running(EngineWorld::k_vm));
  }
}

TEST_CASE("engine: sync --every keeps syncing until a switch takes over or a signal",
          "[engine][sync]") {
  reset_interrupts_for_tests();
  EngineWorld w;
  w.begin();
  w.ctx.settings.command_started = w.clock.wall_now();

  SECTION("a switch from another shell while the loop waits ends it, handed over") {
    int n = 0;
    const migration::SyncLoopResult r = migration::sync_loop(
        w.ctx, EngineWorld::k_vm, std::chrono::seconds(60), [&](const migration::SyncResult&) {
          if (++n == 2) { // another shell runs `zmigrate switch`, which asks first
            state::StopRequest req;
            req.migration_id = w.record().id;
            req.kind = "switch";
            req.pid = 4242;
            req.host = "headnode";
            req.requested = iso8601(w.clock.wall_now());
            REQUIRE(w.store.request_stop(req, migration::unstoppable_operations()).recorded);
          }
        });
    CHECK(r.ended == "switch");
    CHECK(r.syncs.size() == 2);
    REQUIRE(r.switch_by);
    CHECK(r.switch_by->pid == 4242);
    CHECK(w.record().phase == state::Phase::sync);
    CHECK(w.record().state == state::State::paused);
    CHECK(w.record().num_sync_phases == 2);
    // The switch goes on from there (here a later command: the request is not its own).
    w.clock.sleep_for(std::chrono::seconds(1));
    w.ctx.settings.command_started = w.clock.wall_now();
    w.switch_over();
    CHECK_NONE(w.expect_switched());
  }

  SECTION("a signal while it waits ends it after the sync that completed") {
    const migration::SyncLoopResult r =
        migration::sync_loop(w.ctx, EngineWorld::k_vm, std::chrono::seconds(60),
                             [&](const migration::SyncResult&) { note_interrupt(SIGINT); });
    CHECK(r.ended == "interrupted");
    CHECK(r.syncs.size() == 1);
    CHECK(w.record().state == state::State::paused);
  }

  SECTION("a switch that already ran ends a waiting loop too") {
    int n = 0;
    const migration::SyncLoopResult r = migration::sync_loop(
        w.ctx, EngineWorld::k_vm, std::chrono::seconds(60), [&](const migration::SyncResult&) {
          if (++n == 1) {
            w.switch_over();
          }
        });
    CHECK(r.ended == "switch");
    CHECK(r.syncs.size() == 1);
    CHECK_NONE(w.expect_switched());
  }
  reset_interrupts_for_tests();
}

TEST_CASE("engine: sync --every ends when an abort from another shell ended the migration",
          "[engine][sync]") {
  reset_interrupts_for_tests();
  EngineWorld w;
  w.begin();
  const migration::SyncLoopResult r = migration::sync_loop(
      w.ctx, EngineWorld::k_vm, std::chrono::seconds(60),
      [&](const migration::SyncResult&) { w.abort(); }); // the abort runs while the loop waits
  CHECK(r.ended == "ended");
  CHECK(r.syncs.size() == 1);
  CHECK_FALSE(r.switch_by);
  CHECK_NONE(w.expect_aborted());
}

TEST_CASE("engine: begin places with what active migrations promised, checks -n, and its dry "
          "run says why",
          "[engine][begin][placement]") {
  EngineWorld w;
  migration::BeginOptions o;
  o.vm_uuid = EngineWorld::k_vm;
  o.dry_run = true;
  o.summary = true;

  SECTION("the dry run names the chosen node's reason and every rejected node") {
    w.inv.servers[2].reserved = true;
    const migration::BeginResult r = migration::begin(w.ctx, o);
    CHECK(r.target.uuid == EngineWorld::k_cn2);
    CHECK_THAT(r.plan.at("target_reason").get<std::string>(),
               Catch::Contains("most unreserved RAM"));
    const nlohmann::json& rejected = r.plan.at("placement").at("rejected");
    REQUIRE(rejected.size() == 1);
    CHECK(rejected[0]["hostname"] == "cn3");
    CHECK(rejected[0]["problems"][0]["rule"] == "reserved");
    CHECK_FALSE(w.store.find_active_for_vm(EngineWorld::k_vm));
  }
  SECTION("a node named with -n is checked, not trusted") {
    w.inv.servers[2].reserved = true;
    o.target = "cn3";
    CHECK_THROWS_AS(migration::begin(w.ctx, o), PreconditionError);
    CHECK_THROWS_WITH(migration::begin(w.ctx, o),
                      Catch::Contains("cn3") && Catch::Contains("reserved"));
  }
  SECTION("an active migration's promise counts against its target") {
    state::Migration other;
    other.id = "0a0a0a0a-0000-4000-8000-000000000001";
    other.vm_uuid = "0b0b0b0b-0000-4000-8000-000000000001";
    other.source_server_uuid = EngineWorld::k_cn3;
    other.target_server_uuid = EngineWorld::k_cn2;
    other.phase = state::Phase::sync;
    other.state = state::State::paused;
    other.created = "2026-01-01T00:00:00Z";
    other.data = {{"vm", {{"uuid", other.vm_uuid}, {"ram", 65536}, {"brand", "joyent"}}}};
    w.store.insert_migration(other);
    const migration::BeginResult r = migration::begin(w.ctx, o);
    CHECK(r.target.uuid == EngineWorld::k_cn3); // cn2's RAM is promised
    CHECK(migration::active_promises(w.ctx).on(EngineWorld::k_cn2).ram_mib == 65536);
    CHECK(migration::active_promises(w.ctx, other.vm_uuid).on(EngineWorld::k_cn2).count == 0);
  }
  SECTION("the image's traits must match the node's") {
    w.inv.images[EngineWorld::k_image].raw["traits"] = {{"ssd", true}};
    CHECK_THROWS_WITH(migration::begin(w.ctx, o), Catch::Contains("missing trait ssd") &&
                                                      Catch::Contains("cn2") &&
                                                      Catch::Contains("cn3"));
  }
}

TEST_CASE("engine: switch checks the target again and refuses one that can no longer take the "
          "instance, before anything stops",
          "[engine][switch][placement]") {
  EngineWorld w;
  w.begin();
  w.sync();
  w.clock.advance(std::chrono::minutes(5));
  auto cn2 = std::find_if(w.inv.servers.begin(), w.inv.servers.end(),
                          [](const inventory::Server& s) { return s.uuid == EngineWorld::k_cn2; });
  REQUIRE(cn2 != w.inv.servers.end());
  const inventory::Server before = *cn2;
  SECTION("the node filled up since begin") {
    cn2->unreserved_ram_mib = 1;
    try {
      w.switch_over();
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::precondition);
      CHECK_THAT(e.what(), Catch::Contains("not enough unreserved RAM"));
      CHECK_THAT(e.what(), Catch::Contains("Nothing was switched"));
    }
  }
  SECTION("the node went down since begin") {
    cn2->status = "unknown";
    CHECK_THROWS_WITH(w.switch_over(), Catch::Contains("status is 'unknown'"));
  }
  // Nothing changed: still running on the source, the migration ready to switch again.
  CHECK(w.cn1->running(EngineWorld::k_vm));
  CHECK(w.cn2->instances.count(EngineWorld::k_vm) == 0);
  *cn2 = before;
  CHECK(w.switch_over().was_running);
  CHECK_NONE(w.expect_switched());
}

TEST_CASE("engine: switch counts what another active migration promised on its target",
          "[engine][switch][placement]") {
  EngineWorld w;
  w.begin();
  w.sync();
  w.clock.advance(std::chrono::minutes(5));
  auto cn2 = std::find_if(w.inv.servers.begin(), w.inv.servers.end(),
                          [](const inventory::Server& s) { return s.uuid == EngineWorld::k_cn2; });
  REQUIRE(cn2 != w.inv.servers.end());
  const state::Migration ours = w.record();
  const std::uint64_t ram =
      migration::promise_for(w.inv.find_vm(EngineWorld::k_vm).value(), EngineWorld::k_cn2).ram_mib;
  REQUIRE(ram > 0);
  // Room for this instance alone: it switches only while nothing else is headed there.
  cn2->unreserved_ram_mib = 2 * ram - 1;
  state::Migration other = ours;
  other.id = "0ddba11c-0000-4000-8000-000000000001";
  other.vm_uuid = "0ddba11c-0000-4000-8000-0000000000a1";
  other.data["vm"] = {{"uuid", other.vm_uuid},
                      {"brand", "joyent"},
                      {"state", "running"},
                      {"server_uuid", EngineWorld::k_cn1},
                      {"owner_uuid", "930896af-bf8c-48d4-885c-6573a94b1853"},
                      {"ram", ram},
                      {"quota", 1}};
  other.phase = state::Phase::sync;
  other.state = state::State::paused;
  other.history.clear();
  other.version = 0;
  w.store.insert_migration(other);
  REQUIRE(migration::active_promises(w.ctx, EngineWorld::k_vm).on(EngineWorld::k_cn2).ram_mib ==
          ram);
  CHECK_THROWS_WITH(w.switch_over(), Catch::Contains("not enough unreserved RAM"));
  CHECK(w.cn1->running(EngineWorld::k_vm));
  cn2->unreserved_ram_mib = 2 * ram;
  CHECK(w.switch_over().was_running);
}

TEST_CASE("placement: switch_problems keeps what can change, leaves what begin settled",
          "[placement]") {
  EngineWorld w;
  const inventory::Vm vm = *w.inv.find_vm(EngineWorld::k_vm);
  const inventory::Server cn1 = w.inv.resolve_server(EngineWorld::k_cn1);
  inventory::Server cn2 = w.inv.resolve_server(EngineWorld::k_cn2);
  migration::PlacementOptions o;
  CHECK(migration::switch_problems(vm, cn1, cn2, {}, o).empty());
  // The received copy already takes its disk: not counted again.
  cn2.unreserved_disk_mib = 0;
  CHECK(migration::switch_problems(vm, cn1, cn2, {}, o).empty());
  CHECK_FALSE(migration::placement_problems(vm, cn1, cn2, {}, o).empty());
  cn2.reserved = true;
  const std::vector<migration::Problem> p = migration::switch_problems(vm, cn1, cn2, {}, o);
  REQUIRE(p.size() == 1);
  CHECK(p[0].rule == "reserved");
}

TEST_CASE("engine: an instance's datasets go at once, bounded; a bandwidth limit sends one at a "
          "time",
          "[engine][sync]") {
  SECTION("kvm: the zone root and both disks (siblings) in three lanes, the final delta too") {
    EngineWorld w(EngineWorld::Kind::kvm);
    w.begin();
    w.sync();
    REQUIRE(w.nodes.sent_lanes.size() == 1);
    std::vector<std::size_t> lanes = w.nodes.sent_lanes.back();
    std::sort(lanes.begin(), lanes.end());
    CHECK(lanes == std::vector<std::size_t>{0, 1, 2});
    w.migrate(false); // the next syncs and the switch's final delta
    CHECK_NONE(w.expect_switched());
    for (const std::vector<std::size_t>& each : w.nodes.sent_lanes) {
      std::vector<std::size_t> sorted = each;
      std::sort(sorted.begin(), sorted.end());
      CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end()); // one lane each
    }
  }
  SECTION("bhyve: the disks are children of the zone root the first sync creates: one lane "
          "then, at once after") {
    EngineWorld w(EngineWorld::Kind::bhyve);
    w.begin();
    w.sync();
    REQUIRE(w.nodes.sent_lanes.size() == 1);
    for (const std::size_t lane : w.nodes.sent_lanes.back()) {
      CHECK(lane == w.nodes.sent_lanes.back().front());
    }
    w.sync();
    std::vector<std::size_t> later = w.nodes.sent_lanes.back();
    std::sort(later.begin(), later.end());
    CHECK(std::adjacent_find(later.begin(), later.end()) == later.end());
    CHECK_NONE(w.expect_synced(2));
  }
  SECTION("at most `streams` lanes; one under a bandwidth limit") {
    EngineWorld w(EngineWorld::Kind::kvm);
    w.ctx.settings.max_streams = 2;
    w.begin();
    w.sync();
    for (const std::size_t lane : w.nodes.sent_lanes.back()) {
      CHECK(lane < 2);
    }
    w.ctx.settings.bwlimit = 50ULL << 20;
    w.cn1->mutable_caps().has_pv = true; // what limits the rate there
    w.sync();
    for (const std::size_t lane : w.nodes.sent_lanes.back()) {
      CHECK(lane == 0);
    }
    CHECK_NONE(w.expect_synced(2));
  }
}
