// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/cli/commands.hpp>
#include <zmigrate/util/clock.hpp>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::cli;
using state::Phase;
using state::State;

namespace {

const auto k_now = parse_iso8601("2026-11-22T02:00:00.000Z");

state::PhaseRun run(std::int64_t id, Phase phase, State st, const std::string& started,
                    const std::string& finished, const std::string& message,
                    nlohmann::json details = nlohmann::json::object()) {
  state::PhaseRun r;
  r.id = id;
  r.phase = phase;
  r.state = st;
  r.started = started;
  r.finished = finished;
  r.message = message;
  r.details = std::move(details);
  return r;
}

state::Migration sample() {
  state::Migration m;
  m.id = "11111111-2222-4333-8444-555555555555";
  m.vm_uuid = "5eed0000-0000-4000-8000-000000000101";
  m.source_server_uuid = "564d0000-0000-4000-8000-000000000001";
  m.target_server_uuid = "564d0000-0000-4000-8000-000000000002";
  m.phase = Phase::switch_;
  m.state = State::successful;
  m.automatic = true;
  m.num_sync_phases = 2;
  m.created = "2026-11-22T01:00:00.000Z";
  m.data = {{"source", {{"uuid", m.source_server_uuid}, {"hostname", "cn1"}}},
            {"target", {{"uuid", m.target_server_uuid}, {"hostname", "cn2"}}}};
  m.history = {
      run(1, Phase::begin, State::paused, "2026-11-22T01:00:00.000Z", "2026-11-22T01:00:02.000Z",
          "reserving instance"),
      run(2, Phase::sync, State::paused, "2026-11-22T01:00:10.000Z", "2026-11-22T01:01:10.000Z",
          "syncing data",
          {{"bytes", 3ULL << 30},
           {"duration_ms", 60000},
           {"rate", 53687091.2},
           {"snapshot", "zmigrate-x-1"}}),
      run(3, Phase::switch_, State::successful, "2026-11-22T01:02:00.000Z",
          "2026-11-22T01:02:30.000Z", "switching instances",
          {{"downtime_ms", 4200}, {"downtime_steps", {{"stop", 1000}, {"final_sync", 2500}}}}),
  };
  return m;
}

} // namespace

TEST_CASE("cli::coarse_age", "[cli]") {
  CHECK(coarse_age(std::chrono::seconds(42)) == "42s");
  CHECK(coarse_age(std::chrono::minutes(5)) == "5m");
  CHECK(coarse_age(std::chrono::hours(3)) == "3h");
  CHECK(coarse_age(std::chrono::hours(49)) == "2d");
  CHECK(coarse_age(std::chrono::milliseconds(-5)) == "0s");
}

TEST_CASE("cli::migration_runtime", "[cli]") {
  state::Migration m = sample();
  CHECK(migration_runtime(m, k_now) == std::chrono::seconds(2 + 60 + 30));
  m.history.push_back(run(4, Phase::finalize, State::running, "2026-11-22T01:59:00.000Z", "", "x"));
  CHECK(migration_runtime(m, k_now) == std::chrono::seconds(2 + 60 + 30 + 60));
}

TEST_CASE("cli::server_label and involves_server", "[cli]") {
  state::Migration m = sample();
  CHECK(server_label(m, "source") == "cn1");
  CHECK(involves_server(m, "cn2"));
  CHECK(involves_server(m, "564d0000-0000-4000-8000-000000000001"));
  CHECK_FALSE(involves_server(m, "cn3"));
  m.data = nlohmann::json::object();
  CHECK(server_label(m, "target") == "564d0000-0000-4000-8000-000000000002");
  CHECK_FALSE(involves_server(m, "cn2"));
}

TEST_CASE("cli::render_list", "[cli]") {
  state::Migration failed = sample();
  failed.vm_uuid = "5eed0000-0000-4000-8000-000000000102";
  failed.phase = Phase::sync;
  failed.state = State::failed;
  failed.error = "zfs receive failed:\nout of space";
  const std::string table = render_list({sample(), failed}, false, k_now);
  CHECK(table == "UUID                                  PHASE   STATE       AGE  RUNTIME\n"
                 "5eed0000-0000-4000-8000-000000000101  switch  successful  1h   1m32s\n"
                 "5eed0000-0000-4000-8000-000000000102  sync    failed      1h   1m32s\n");
  const std::string wide = render_list({sample(), failed}, true, k_now);
  CHECK(wide.find("SOURCE_CN  TARGET_CN  ERROR\n") != std::string::npos);
  CHECK(wide.find("cn1        cn2        -\n") != std::string::npos);
  CHECK(wide.find("cn1        cn2        zfs receive failed: out of space\n") != std::string::npos);
  CHECK(render_list({}, false, k_now) == "UUID  PHASE  STATE  AGE  RUNTIME\n");
}

TEST_CASE("cli::render_get", "[cli]") {
  const std::string page = render_get(sample(), std::nullopt, true, k_now);
  CHECK(page.find("State:         switch successful\n") != std::string::npos);
  CHECK(page.find("Source server: cn1 (564d0000-0000-4000-8000-000000000001)\n") !=
        std::string::npos);
  CHECK(page.find("Automatic:     yes\n") != std::string::npos);
  CHECK(page.find("Total runtime: 1m32s\n") != std::string::npos);
  CHECK(page.find("  PHASE   AGE  RUNTIME  MESSAGE\n") != std::string::npos);
  CHECK(page.find("✔ begin   1h   2.0s     reserving instance\n") != std::string::npos);
  CHECK(page.find("3.0GB in 1m0s (51.2MB/s), @zmigrate-x-1\n") != std::string::npos);
  CHECK(page.find("downtime 4.2s: final_sync 2.5s, stop 1.0s\n") != std::string::npos);

  state::Migration m = sample();
  m.phase = Phase::sync;
  m.state = State::running;
  m.history.pop_back();
  m.history.push_back(
      run(4, Phase::sync, State::running, "2026-11-22T01:59:00.000Z", "", "syncing data"));
  state::Progress p;
  p.migration_id = m.id;
  p.phase = Phase::sync;
  p.state = State::running;
  p.current = 50;
  p.total = 100;
  p.updated = "2026-11-22T01:59:30.000Z";
  const std::string ascii = render_get(m, p, false, k_now);
  CHECK(ascii.find("> sync") != std::string::npos);
  CHECK(ascii.find("+ begin") != std::string::npos);
  CHECK(ascii.find("running: 50%") != std::string::npos);
  CHECK(ascii.find("✔") == std::string::npos);
}

TEST_CASE("cli::summarize_evacuation", "[cli]") {
  using namespace zmigrate::state;
  const auto make = [](Phase p, State s, const std::string& ev) {
    Migration m;
    m.phase = p;
    m.state = s;
    m.source_server_uuid = "cn1-uuid";
    m.data["source"] = {{"hostname", "cn1"}};
    if (!ev.empty()) {
      m.data["evacuation"] = {{"server", ev}};
    }
    PhaseRun sync;
    sync.phase = Phase::sync;
    sync.state = State::paused;
    sync.details = {{"bytes", 100}};
    PhaseRun sw;
    sw.phase = Phase::switch_;
    sw.state = State::successful;
    sw.details = {{"final_bytes", 5}, {"downtime_ms", 300}};
    m.history = {sync, sw};
    return m;
  };
  const Migration fin = make(Phase::finalize, State::successful, "cn1-uuid");
  CHECK(of_evacuation(fin, "cn1"));
  CHECK(of_evacuation(fin, "cn1-uuid"));
  CHECK_FALSE(of_evacuation(fin, "cn2"));
  CHECK_FALSE(of_evacuation(make(Phase::finalize, State::successful, ""), "cn1"));
  const EvacuationSummary s = summarize_evacuation(
      {fin, make(Phase::switch_, State::successful, "cn1-uuid"),
       make(Phase::sync, State::paused, "cn1-uuid"), make(Phase::sync, State::running, "cn1-uuid"),
       make(Phase::switch_, State::failed, "cn1-uuid")});
  CHECK(s.total == 5);
  CHECK(s.moved == 2);
  CHECK(s.finalized == 1);
  CHECK(s.ready == 1);
  CHECK(s.running == 1);
  CHECK(s.failed == 1);
  CHECK(s.bytes_sent == 5 * 105);
  CHECK(evacuation_line("cn1", s) ==
        "cn1: 2 of 5 moved (1 finalized), 1 ready to switch, 1 running, 1 failed; 525B sent");
}

TEST_CASE("cli::render_evacuation", "[cli]") {
  migration::EvacuationView v;
  v.id = "e1";
  v.server = "564d0000-0000-4000-8000-000000000001";
  v.hostname = "cn1";
  v.state = "running";
  v.started = "2026-12-07T02:00:00.000Z";
  v.pid = 42;
  v.host = "head";
  v.total = 2;
  v.done = 1;
  v.running = 1;
  v.sent = 3 << 20;
  v.left = 1 << 20;
  v.left_approximate = true;
  v.rate = 1 << 20;
  v.eta_ms = 1000;
  migration::EvacuationRow a;
  a.vm_uuid = "u1";
  a.alias = "web01";
  a.target = "cn2";
  a.outcome = "finalized";
  a.phase = "finalize";
  a.state = "successful";
  a.sent = 2 << 20;
  migration::EvacuationRow b = a;
  b.vm_uuid = "u2";
  b.alias = "db01";
  b.outcome = "running";
  b.phase = "sync";
  b.state = "running";
  b.sent = 0;
  b.current = 1 << 20;
  b.total = 2 << 20;
  b.rate = 1 << 20;
  b.eta_ms = 1000;
  v.rows = {a, b};
  const auto now = parse_iso8601("2026-12-07T02:03:00.000Z");
  const std::string text = render_evacuation(v, now);
  INFO(text);
  CHECK_THAT(text, Catch::StartsWith("Evacuation of cn1 (564d0000-0000-4000-8000-000000000001): "
                                     "running, started 3m ago (pid 42 on head)\n"));
  CHECK_THAT(text, Catch::Contains("1 of 2 done, 1 running, 0 queued, 0 failed, 0 skipped; "));
  CHECK_THAT(text, Catch::Contains("~1.0MB left at 1.0MB/s, ETA ~1.0s"));
  CHECK_THAT(text, Catch::Contains("UUID  ALIAS  TARGET  RESULT     PHASE     STATE       SENT"));
  CHECK_THAT(text, Catch::Contains("u2    db01   cn2     running    sync      running"));
  CHECK_THAT(text, Catch::Contains("1.0MB of 2.0MB at 1.0MB/s, ETA 1.0s"));
  v.state = "paused";
  CHECK_THAT(render_evacuation(v, now),
             Catch::Contains("interrupted (run the same command again to go on)"));
}
