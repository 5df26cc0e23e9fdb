// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/state/records.hpp>
#include <zmigrate/util/error.hpp>

#include <fstream>
#include <set>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::state;

namespace {

nlohmann::json load_fixture(const std::string& name) {
  std::ifstream in(std::string(ZMIGRATE_FIXTURES_DIR) + "/" + name);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

std::set<std::string> keys_of(const nlohmann::json& j) {
  std::set<std::string> out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    out.insert(it.key());
  }
  return out;
}

} // namespace

TEST_CASE("state::to_string", "[state]") {
  CHECK(to_string(Phase::begin) == "begin");
  CHECK(to_string(Phase::sync) == "sync");
  CHECK(to_string(Phase::switch_) == "switch");
  CHECK(to_string(Phase::abort) == "abort");
  CHECK(to_string(Phase::rollback) == "rollback");
  CHECK(to_string(Phase::finalize) == "finalize");
  CHECK(to_string(State::running) == "running");
  CHECK(to_string(State::paused) == "paused");
  CHECK(to_string(State::failed) == "failed");
  CHECK(to_string(State::successful) == "successful");
}

TEST_CASE("state::phase_from_string", "[state]") {
  for (Phase p : {Phase::begin, Phase::sync, Phase::switch_, Phase::abort, Phase::rollback,
                  Phase::finalize}) {
    CHECK(phase_from_string(to_string(p)) == p);
  }
  try {
    phase_from_string("pause");
    FAIL("no exception");
  } catch (const Error& e) {
    CHECK(e.exit_code() == ExitCode::state);
    CHECK(e.subject() == "migration phase 'pause'");
  }
  CHECK_THROWS_AS(phase_from_string("switch_"), Error);
  CHECK_THROWS_AS(phase_from_string(""), Error);
}

TEST_CASE("state::state_from_string", "[state]") {
  for (State s : {State::running, State::paused, State::failed, State::successful}) {
    CHECK(state_from_string(to_string(s)) == s);
  }
  try {
    state_from_string("aborted"); // Triton's legacy spelling is not ours
    FAIL("no exception");
  } catch (const Error& e) {
    CHECK(e.exit_code() == ExitCode::state);
  }
}

TEST_CASE("state::to_json(PhaseRun)", "[state]") {
  PhaseRun r;
  r.id = 7;
  r.phase = Phase::switch_;
  r.state = State::failed;
  r.message = "switching instances";
  r.error = "zfs set failure";
  r.started = "2023-03-18T04:32:43.408Z";
  r.finished = "2023-03-18T04:32:56.232Z";
  r.current_progress = 1;
  r.total_progress = 100;
  const nlohmann::json j = r;
  CHECK(j["type"] == "progress");
  CHECK(j["id"] == 7);
  CHECK(j["phase"] == "switch");
  CHECK(j["state"] == "failed");
  CHECK(j["message"] == "switching instances");
  CHECK(j["error"] == "zfs set failure");
  CHECK(j["started_timestamp"] == "2023-03-18T04:32:43.408Z");
  CHECK(j["finished_timestamp"] == "2023-03-18T04:32:56.232Z");
  CHECK(j["current_progress"] == 1);
  CHECK(j["total_progress"] == 100);
  CHECK(j["duration_ms"] == 12824);
  CHECK_FALSE(j.contains("details"));

  SECTION("every field of Triton's raw failed entry that we model has the same name") {
    const nlohmann::json raw =
        load_fixture("vmapi-migration-progress-entry-raw-failed-switch.json");
    for (const std::string& key : keys_of(raw)) {
      if (key == "job_uuid" || key == "disallowRetry") {
        continue; // workflow internals with no zmigrate equivalent
      }
      INFO(key);
      CHECK(j.contains(key));
    }
  }

  SECTION("a running entry leaves out what is not known yet, as Triton does") {
    r.state = State::running;
    r.finished.clear();
    r.error.clear();
    r.details = {{"bytes", 42}};
    const nlohmann::json running = r;
    CHECK_FALSE(running.contains("finished_timestamp"));
    CHECK_FALSE(running.contains("duration_ms"));
    CHECK_FALSE(running.contains("error"));
    CHECK(running["details"]["bytes"] == 42);
  }
}

TEST_CASE("state::to_json(Migration)", "[state]") {
  Migration m;
  m.id = "0f1b7e4c-1111-4c2a-9d6e-000000000001";
  m.vm_uuid = "40c3c6ec-8be5-476a-ca35-c0ea2b0858e3";
  m.source_server_uuid = "44454c4c-5000-104d-8037-b7c04f5a5131";
  m.target_server_uuid = "564d0b8f-38e7-4c8c-8a4a-5d2b7a1a1b1b";
  m.phase = Phase::switch_;
  m.state = State::successful;
  m.automatic = true;
  m.num_sync_phases = 3;
  m.created = "2019-03-25T19:21:29.336Z";
  m.finished = "2019-03-25T19:22:40.948Z";
  m.data = {{"vm", {{"alias", "secret-internal"}}}};
  PhaseRun r;
  r.phase = Phase::begin;
  r.state = State::successful;
  r.message = "reserving instance";
  r.started = "2019-03-25T19:21:35.882Z";
  r.finished = "2019-03-25T19:21:51.959Z";
  r.current_progress = 100;
  m.history.push_back(r);

  const nlohmann::json j = m;
  CHECK(j["id"] == m.id);
  CHECK(j["vm_uuid"] == m.vm_uuid);
  CHECK(j["source_server_uuid"] == m.source_server_uuid);
  CHECK(j["target_server_uuid"] == m.target_server_uuid);
  CHECK(j["phase"] == "switch");
  CHECK(j["state"] == "successful");
  CHECK(j["automatic"] == true);
  CHECK(j["archived"] == false);
  CHECK(j["num_sync_phases"] == 3);
  CHECK(j["created_timestamp"] == m.created);
  CHECK(j["finished_timestamp"] == m.finished);
  CHECK_FALSE(j.contains("error"));
  CHECK_FALSE(j.contains("data")); // internal: the VM as it was at begin
  REQUIRE(j["progress_history"].size() == 1);
  CHECK(j["progress_history"][0]["duration_ms"] == 16077);

  SECTION("history entries carry every key of CloudAPI's rendering of the same entries") {
    const nlohmann::json cloudapi = load_fixture("cloudapi-migration.json");
    for (const std::string& key : keys_of(cloudapi["progress_history"][0])) {
      INFO(key);
      CHECK(j["progress_history"][0].contains(key));
    }
    for (const std::string& key : keys_of(cloudapi)) {
      if (key == "machine" || key == "duration_ms") {
        continue; // CloudAPI's rename of vm_uuid; a derived total we do not compute
      }
      INFO(key);
      CHECK(j.contains(key));
    }
  }

  SECTION("an error is shown once set") {
    m.state = State::failed;
    m.error = "failed to switch migration instance - zfs set failure";
    const nlohmann::json failed = m;
    CHECK(failed["error"] == m.error);
  }
}

TEST_CASE("state::to_json(Step)", "[state]") {
  Step s;
  s.id = 3;
  s.migration_id = "m1";
  s.phase_run_id = 2;
  s.name = "switch.stop_source";
  s.status = "ok";
  s.started = "2026-01-01T00:00:00.000Z";
  s.finished = "2026-01-01T00:00:01.500Z";
  s.details = {{"stopped", true}};
  const nlohmann::json j = s;
  CHECK(j == nlohmann::json{{"id", 3},
                            {"migration_id", "m1"},
                            {"phase_run_id", 2},
                            {"name", "switch.stop_source"},
                            {"status", "ok"},
                            {"started_timestamp", "2026-01-01T00:00:00.000Z"},
                            {"finished_timestamp", "2026-01-01T00:00:01.500Z"},
                            {"duration_ms", 1500},
                            {"details", {{"stopped", true}}}});
}

TEST_CASE("state::to_json(Artefact)", "[state]") {
  Artefact a;
  a.id = 9;
  a.migration_id = "m1";
  a.kind = "snapshot";
  a.host = "cn1";
  a.name = "zones/abc@vm-migration-1";
  a.created = "2026-01-01T00:00:00.000Z";
  const nlohmann::json live = a;
  CHECK(live["kind"] == "snapshot");
  CHECK(live["host"] == "cn1");
  CHECK(live["name"] == "zones/abc@vm-migration-1");
  CHECK(live["details"] == nlohmann::json::object());
  CHECK(live["created_timestamp"] == a.created);
  CHECK_FALSE(live.contains("removed_timestamp"));
  a.removed = "2026-01-01T00:05:00.000Z";
  const nlohmann::json removed = a;
  CHECK(removed["removed_timestamp"] == a.removed);
}

TEST_CASE("state::to_json(Progress)", "[state]") {
  Progress p;
  p.migration_id = "m1";
  p.phase = Phase::sync;
  p.state = State::running;
  p.current = 1024;
  p.total = 4096;
  p.bytes_per_second = 512;
  p.eta_ms = 6000;
  p.updated = "2026-01-01T00:00:00.000Z";
  const nlohmann::json j = p;
  // The names of a Triton watch event (triton.md §2.2).
  CHECK(j["type"] == "progress");
  CHECK(j["phase"] == "sync");
  CHECK(j["state"] == "running");
  CHECK(j["current_progress"] == 1024);
  CHECK(j["total_progress"] == 4096);
  CHECK(j["transfer_bytes_second"] == 512.0);
  CHECK(j["eta_ms"] == 6000);
  CHECK(j["total_approximate"] == false);
  p.eta_ms = -1;
  const nlohmann::json no_eta = p;
  CHECK_FALSE(no_eta.contains("eta_ms"));
}
