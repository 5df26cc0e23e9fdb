// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/http/retry.hpp>
#include <zmigrate/util/error.hpp>

#include <deque>
#include <functional>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::http;
using std::chrono::milliseconds;

namespace {

// Advances when asked to sleep; records the sleeps.
class StepClock final : public Clock {
public:
  std::vector<milliseconds> sleeps;
  std::chrono::steady_clock::time_point now() const override { return m_now; }
  std::chrono::system_clock::time_point wall_now() const override {
    return std::chrono::system_clock::time_point{} +
           std::chrono::duration_cast<std::chrono::system_clock::duration>(
               m_now.time_since_epoch());
  }
  void sleep_for(milliseconds d) override {
    sleeps.push_back(d);
    m_now += d;
  }
  void advance(milliseconds d) { m_now += d; }

private:
  std::chrono::steady_clock::time_point m_now{};
};

class RecordingLogger final : public Logger {
public:
  struct Line {
    LogLevel level;
    std::string msg;
    nlohmann::json fields;
  };
  std::vector<Line> lines;
  void log(LogLevel level, std::string_view msg, const nlohmann::json& fields) override {
    lines.push_back({level, std::string(msg), fields});
  }
};

// Plays a script of attempts, each taking `duration` of clock time.
struct ScriptedTransport {
  std::deque<Attempt> script;
  StepClock* clock = nullptr;
  milliseconds duration{7};
  std::vector<Request> seen;
  Attempt operator()(const Request& r) {
    seen.push_back(r);
    clock->advance(duration);
    REQUIRE_FALSE(script.empty());
    Attempt a = script.front();
    script.pop_front();
    return a;
  }
};

Attempt status(long s) {
  return Attempt{Response{s, {}, "{}"}, "", true, ""};
}
Attempt refused() {
  return Attempt{std::nullopt, "Failed to connect to 10.99.0.1 port 18081: Connection refused",
                 true, ""};
}

Request get(std::string service = "VMAPI") {
  Request r;
  r.url = "http://10.99.0.1:18081/vms/x";
  r.headers = {{"x-request-id", "req-1"}};
  r.service = std::move(service);
  return r;
}

ClientOptions options() {
  ClientOptions o;
  o.max_attempts = 4;
  o.initial_backoff = milliseconds(200);
  o.max_backoff = milliseconds(5000);
  return o;
}

} // namespace

TEST_CASE("http::is_retryable_status", "[http]") {
  for (long s : {429L, 500L, 502L, 503L, 504L}) {
    CHECK(is_retryable_status(s));
  }
  for (long s : {200L, 204L, 400L, 404L, 409L, 412L, 422L, 501L, 507L}) {
    CHECK_FALSE(is_retryable_status(s));
  }
}

TEST_CASE("http::backoff_delay", "[http]") {
  const ClientOptions o = options();
  SECTION("doubles per retry, full value at jitter→1, half at jitter 0") {
    CHECK(backoff_delay(o, 1, 0.0) == milliseconds(100));
    CHECK(backoff_delay(o, 1, 0.999999) == milliseconds(199));
    CHECK(backoff_delay(o, 2, 0.0) == milliseconds(200));
    CHECK(backoff_delay(o, 3, 0.0) == milliseconds(400));
    CHECK(backoff_delay(o, 3, 0.5) == milliseconds(600));
  }
  SECTION("capped at max_backoff, even for huge retry counts") {
    CHECK(backoff_delay(o, 10, 1.0) == milliseconds(5000));
    CHECK(backoff_delay(o, 1000, 0.0) == milliseconds(2500));
  }
  SECTION("jitter outside [0,1] is clamped") {
    CHECK(backoff_delay(o, 1, -3.0) == milliseconds(100));
    CHECK(backoff_delay(o, 1, 7.0) == milliseconds(200));
  }
}

TEST_CASE("http::standard_headers", "[http]") {
  Request r;
  SECTION("without a body") {
    const auto h = standard_headers(r, "id-1");
    CHECK(h == std::map<std::string, std::string>{
                   {"accept", "application/json"},
                   {"accept-version", "*"},
                   {"user-agent", std::string("zmigrate/") + ZMIGRATE_VERSION},
                   {"x-request-id", "id-1"}});
  }
  SECTION("with a body: content-type") {
    r.body = "{}";
    CHECK(standard_headers(r, "id-1").at("content-type") == "application/json");
  }
  SECTION("the caller's headers win, whatever their case") {
    r.headers = {{"X-Request-Id", "mine"}, {"Accept-Version", "~7"}, {"X-Extra", "1"}};
    const auto h = standard_headers(r, "id-1");
    CHECK(h.at("x-request-id") == "mine");
    CHECK(h.at("accept-version") == "~7");
    CHECK(h.at("x-extra") == "1");
    CHECK(h.count("X-Request-Id") == 0);
  }
}

TEST_CASE("http::perform_with_retries", "[http]") {
  StepClock clock;
  RecordingLogger log;
  ScriptedTransport transport;
  transport.clock = &clock;
  double next_jitter = 0.0;
  auto jitter = [&] { return next_jitter; };
  auto run = [&](const Request& r, const ClientOptions& o = options()) {
    return perform_with_retries(r, o, std::ref(transport), clock, log, jitter);
  };

  SECTION("success at once: one debug line with every field, no sleep") {
    transport.script = {status(200)};
    CHECK(run(get()).status == 200);
    CHECK(clock.sleeps.empty());
    REQUIRE(log.lines.size() == 1);
    CHECK(log.lines[0].level == LogLevel::debug);
    CHECK(log.lines[0].fields == nlohmann::json{{"method", "GET"},
                                                {"url", "http://10.99.0.1:18081/vms/x"},
                                                {"req_id", "req-1"},
                                                {"attempt", 1},
                                                {"duration_ms", 7},
                                                {"service", "VMAPI"},
                                                {"status", 200}});
  }
  SECTION("4xx is final, not retried") {
    transport.script = {status(404)};
    CHECK(run(get()).status == 404);
    CHECK(transport.seen.size() == 1);
  }
  SECTION("5xx then success: retried with exponential backoff, warn per retry") {
    transport.script = {status(503), status(502), status(200)};
    next_jitter = 0.5;
    CHECK(run(get()).status == 200);
    CHECK(clock.sleeps == std::vector<milliseconds>{milliseconds(150), milliseconds(300)});
    REQUIRE(log.lines.size() == 3);
    CHECK(log.lines[0].level == LogLevel::warn);
    CHECK(log.lines[0].fields["status"] == 503);
    CHECK(log.lines[0].fields["attempt"] == 1);
    CHECK(log.lines[0].fields["delay_ms"] == 150);
    CHECK(log.lines[1].fields["attempt"] == 2);
    CHECK(log.lines[2].level == LogLevel::debug);
    CHECK(log.lines[2].fields["attempt"] == 3);
    // Every attempt carries the same request id.
    for (const Request& r : transport.seen) {
      CHECK(r.headers.at("x-request-id") == "req-1");
    }
  }
  SECTION("5xx on every attempt: the last response is returned") {
    transport.script = {status(500), status(500), status(500), status(500)};
    CHECK(run(get()).status == 500);
    CHECK(transport.seen.size() == 4);
    CHECK(log.lines.back().level == LogLevel::warn);
    CHECK(log.lines.back().msg == "http request failed; no attempts left");
    CHECK(clock.sleeps ==
          std::vector<milliseconds>{milliseconds(100), milliseconds(200), milliseconds(400)});
  }
  SECTION("connection errors then success") {
    transport.script = {refused(), refused(), status(200)};
    CHECK(run(get()).status == 200);
    CHECK(clock.sleeps.size() == 2);
    CHECK(log.lines[0].fields["error"] ==
          "Failed to connect to 10.99.0.1 port 18081: Connection refused");
  }
  SECTION("no response after all attempts: TransientError naming the URL and the setting") {
    transport.script = {refused(), refused(), refused(), refused()};
    try {
      run(get());
      FAIL("no throw");
    } catch (const TransientError& e) {
      CHECK(e.exit_code() == ExitCode::inventory);
      CHECK(e.subject() == "GET http://10.99.0.1:18081/vms/x");
      CHECK(e.reason() == "Failed to connect to 10.99.0.1 port 18081: Connection refused (after "
                          "4 attempts); check that the service is up and VMAPI_URL is right");
    }
    CHECK(transport.seen.size() == 4);
    CHECK(clock.sleeps.size() == 3);
    CHECK(log.lines.back().level == LogLevel::warn);
  }
  SECTION("a single attempt allowed: no 'after N attempts'; unnamed service") {
    ClientOptions o = options();
    o.max_attempts = 1;
    transport.script = {refused()};
    CHECK_THROWS_WITH(run(get(""), o),
                      "GET http://10.99.0.1:18081/vms/x: Failed to connect to 10.99.0.1 port "
                      "18081: Connection refused; check that the service is up and its URL is "
                      "right");
  }
  SECTION("non-idempotent requests are tried once, on 5xx and on connection errors") {
    Request r = get();
    r.method = "POST";
    r.idempotent = false;
    transport.script = {status(503)};
    CHECK(run(r).status == 503);
    CHECK(clock.sleeps.empty());
    transport.script = {refused()};
    CHECK_THROWS_AS(run(r), TransientError);
    CHECK(transport.seen.size() == 2);
  }
  SECTION("a failure a retry cannot fix: Error at once, with the transport's hint") {
    transport.script = {Attempt{std::nullopt, "SSL certificate problem: self-signed certificate",
                                false, "fix the certificate"}};
    try {
      run(get());
      FAIL("no throw");
    } catch (const TransientError&) {
      FAIL("not transient");
    } catch (const Error& e) {
      CHECK(e.reason() == "SSL certificate problem: self-signed certificate; fix the certificate");
    }
    CHECK(transport.seen.size() == 1);
  }
}
