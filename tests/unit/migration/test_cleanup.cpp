// SPDX-License-Identifier: MPL-2.0
// migration::cleanup over fakes: it removes only what loses nothing (finished migrations' IP
// reservations, data-path rows), never an instance's data, never beside a running command.
#include "fakes/fake_inventory.hpp"
#include "fakes/fake_node_access.hpp"
#include "fakes/fake_runner.hpp"
#include "fakes/memory_state_store.hpp"

#include <zmigrate/migration/cleanup.hpp>
#include <zmigrate/migration/context.hpp>
#include <zmigrate/util/clock.hpp>
#include <zmigrate/util/log.hpp>

#include <algorithm>
#include <string>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::migration;

namespace {

struct Fixture {
  fakes::FakeInventory inv;
  fakes::FakeRunner runner{"10.99.0.12"};
  fakes::OneNodeAccess nodes{runner};
  SystemClock clock;
  fakes::MemoryStateStore store{clock};
  NullLogger log;
  NullReporter reporter;
  Context ctx{inv, nodes, store, clock, log, reporter, Settings{}, {}};

  state::Migration add(const std::string& id, bool archived) {
    state::Migration m;
    m.id = id;
    m.vm_uuid = "5eed0000-0000-4000-8000-000000000101";
    m.source_server_uuid = "564d0000-0000-4000-8000-000000000001";
    m.target_server_uuid = "564d0000-0000-4000-8000-000000000002";
    m.archived = archived;
    m.created = "2026-12-02T00:00:00.000Z";
    store.insert_migration(m);
    return m;
  }
  void row(const std::string& id, const std::string& kind, const std::string& name,
           const nlohmann::json& details = nlohmann::json::object()) {
    state::Artefact a;
    a.migration_id = id;
    a.kind = kind;
    a.host = kind == "ip_reservation" ? "napi" : "target";
    a.name = name;
    a.details = details;
    a.created = "2026-12-02T00:00:00.000Z";
    store.record_artefact(a);
  }
};

const nlohmann::json k_ip = {{"network_uuid", "a1b2c3d4-0000-4000-8000-000000000001"},
                             {"ip", "10.1.1.5"}};

} // namespace

TEST_CASE("migration::cleanup", "[migration][cleanup][safety]") {
  Fixture f;
  f.add("m-done", true);
  f.add("m-active", false);
  f.row("m-done", "ip_reservation", "net/10.1.1.5", k_ip);
  f.row("m-active", "ip_reservation", "net/10.1.1.6", k_ip);
  f.row("m-active", "target_dataset", "zones/5eed0000-0000-4000-8000-000000000101");

  SECTION("dry run: reports, changes nothing") {
    const CleanupResult r = cleanup(f.ctx, true);
    CHECK(f.inv.ip_reservations.empty());
    CHECK(f.store.live_artefacts("m-done").size() == 1);
    REQUIRE(r.items.size() == 3);
    CHECK(r.complete());
  }
  SECTION("a finished migration's reservation goes; an active one's data is only reported") {
    const CleanupResult r = cleanup(f.ctx, false);
    CHECK(f.inv.ip_reservations == std::vector<fakes::FakeInventory::IpReservation>{
                                       {k_ip["network_uuid"], "10.1.1.5", false}});
    CHECK(f.store.live_artefacts("m-done").empty());
    CHECK(f.store.live_artefacts("m-active").size() == 2); // its own: untouched
    CHECK(f.runner.commands.empty());                      // nothing ran on any node
    std::vector<std::string> outcomes;
    for (const CleanupItem& i : r.items) {
      outcomes.push_back(i.migration_id + " " + i.kind + " " + i.outcome);
    }
    std::sort(outcomes.begin(), outcomes.end());
    CHECK(outcomes == std::vector<std::string>{"m-active ip_reservation kept",
                                               "m-active target_dataset kept",
                                               "m-done ip_reservation removed"});
    CHECK(r.complete());
  }
  SECTION("a migration whose lease a live command holds is left alone") {
    state::Lease l;
    l.migration_id = "m-done";
    l.pid = static_cast<int>(::getppid()); // alive, not us
    l.host = f.ctx.settings.hostname;
    l.operation = "rollback";
    l.heartbeat = "2026-12-02T00:00:00.000Z";
    REQUIRE_FALSE(f.store.try_acquire_lease(l, 300));
    const CleanupResult r = cleanup(f.ctx, false);
    CHECK(f.inv.ip_reservations.empty());
    CHECK(f.store.live_artefacts("m-done").size() == 1);
    CHECK_FALSE(r.complete());
  }
}
