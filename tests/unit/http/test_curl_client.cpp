// SPDX-License-Identifier: MPL-2.0
// CurlHttpClient against a tiny HTTP/1.1 server on 127.0.0.1 started by the test: real libcurl,
// real sockets, no waiting on backoff (the clock is fake).
#include <zmigrate/http/curl_client.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/uuid.hpp>

#include <arpa/inet.h>
#include <atomic>
#include <cctype>
#include <deque>
#include <mutex>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::http;
using std::chrono::milliseconds;

namespace {

class StepClock final : public Clock {
public:
  std::vector<milliseconds> sleeps;
  std::chrono::steady_clock::time_point now() const override { return m_now; }
  std::chrono::system_clock::time_point wall_now() const override {
    return std::chrono::system_clock::time_point{};
  }
  void sleep_for(milliseconds d) override {
    sleeps.push_back(d);
    m_now += d;
  }

private:
  std::chrono::steady_clock::time_point m_now{};
};

// Serves canned replies, one per request, over keep-alive connections; records what it got.
class TinyServer {
public:
  struct Reply {
    int status = 200;
    std::string body = "{}";
    std::string extra_headers; // "Name: value\r\n" lines
    milliseconds delay{0};
    bool hang_up = false; // close the connection instead of answering
    std::string raw;      // when set: send exactly these bytes, then close the connection
    bool endless = false; // 200 without Content-Length, then body bytes until the peer closes
  };
  struct Seen {
    std::string method;
    std::string target;
    std::map<std::string, std::string> headers; // lower-case names
    std::string body;
    int connection = 0;
  };

  TinyServer() {
    m_listen = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(m_listen >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    REQUIRE(::bind(m_listen, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(m_listen, 8) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(m_listen, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    m_port = ntohs(addr.sin_port);
    m_acceptor = std::thread([this] { accept_loop(); });
  }
  ~TinyServer() {
    m_stop = true;
    m_acceptor.join();
    for (std::thread& t : m_workers) {
      t.join();
    }
    ::close(m_listen);
  }
  TinyServer(const TinyServer&) = delete;
  TinyServer& operator=(const TinyServer&) = delete;

  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(m_port) + path;
  }
  // Queue replies; the last one answers every later request.
  void reply(Reply r) {
    std::lock_guard lock(m_mutex);
    m_replies.push_back(std::move(r));
  }
  std::vector<Seen> seen() {
    std::lock_guard lock(m_mutex);
    return m_seen;
  }
  int connections() {
    std::lock_guard lock(m_mutex);
    return m_connections;
  }

private:
  bool wait_readable(int fd) {
    while (!m_stop) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 20) > 0) {
        return true;
      }
    }
    return false;
  }

  void accept_loop() {
    while (wait_readable(m_listen)) {
      const int fd = ::accept4(m_listen, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        continue;
      }
      int id = 0;
      {
        std::lock_guard lock(m_mutex);
        id = ++m_connections;
      }
      m_workers.emplace_back([this, fd, id] { serve(fd, id); });
    }
  }

  void serve(int fd, int id) {
    std::string buffer;
    for (;;) {
      std::size_t header_end = buffer.find("\r\n\r\n");
      while (header_end == std::string::npos) {
        char chunk[4096];
        if (!wait_readable(fd)) {
          ::close(fd);
          return;
        }
        const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
        if (n <= 0) {
          ::close(fd);
          return;
        }
        buffer.append(chunk, static_cast<std::size_t>(n));
        header_end = buffer.find("\r\n\r\n");
      }
      Seen s;
      s.connection = id;
      const std::string head = buffer.substr(0, header_end);
      buffer.erase(0, header_end + 4);
      std::size_t line_end = head.find("\r\n");
      const std::string request_line = head.substr(0, line_end);
      s.method = request_line.substr(0, request_line.find(' '));
      s.target =
          request_line.substr(s.method.size() + 1, request_line.rfind(' ') - s.method.size() - 1);
      while (line_end != std::string::npos) {
        const std::size_t start = line_end + 2;
        line_end = head.find("\r\n", start);
        const std::string line = head.substr(start, line_end - start);
        const std::size_t colon = line.find(':');
        if (colon == std::string::npos) {
          continue;
        }
        std::string name = line.substr(0, colon);
        for (char& c : name) {
          c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        }
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(' '));
        s.headers[name] = value;
      }
      const std::size_t length =
          s.headers.count("content-length") ? std::stoul(s.headers["content-length"]) : 0;
      while (buffer.size() < length) {
        char chunk[4096];
        if (!wait_readable(fd)) {
          ::close(fd);
          return;
        }
        const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
        if (n <= 0) {
          ::close(fd);
          return;
        }
        buffer.append(chunk, static_cast<std::size_t>(n));
      }
      s.body = buffer.substr(0, length);
      buffer.erase(0, length);

      Reply r;
      {
        std::lock_guard lock(m_mutex);
        m_seen.push_back(s);
        if (!m_replies.empty()) {
          r = m_replies.front();
          if (m_replies.size() > 1) {
            m_replies.pop_front();
          }
        }
      }
      for (milliseconds waited{0}; waited < r.delay && !m_stop; waited += milliseconds(10)) {
        std::this_thread::sleep_for(milliseconds(10));
      }
      if (r.hang_up) {
        ::close(fd);
        return;
      }
      if (!r.raw.empty()) {
        ::send(fd, r.raw.data(), r.raw.size(), MSG_NOSIGNAL);
        ::close(fd);
        return;
      }
      if (r.endless) {
        const std::string status_and_headers =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[";
        const std::string chunk(64 * 1024, ' ');
        bool ok =
            ::send(fd, status_and_headers.data(), status_and_headers.size(), MSG_NOSIGNAL) >= 0;
        while (ok && !m_stop) {
          ok = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL) >= 0;
        }
        ::close(fd);
        return;
      }
      const std::string out = "HTTP/1.1 " + std::to_string(r.status) + " Whatever\r\n" +
                              "Content-Type: application/json\r\n" + r.extra_headers +
                              "Content-Length: " + std::to_string(r.body.size()) + "\r\n\r\n" +
                              r.body;
      if (::send(fd, out.data(), out.size(), MSG_NOSIGNAL) < 0) {
        ::close(fd);
        return;
      }
    }
  }

  int m_listen = -1;
  int m_port = 0;
  std::atomic<bool> m_stop{false};
  std::thread m_acceptor;
  std::vector<std::thread> m_workers;
  std::mutex m_mutex;
  std::deque<Reply> m_replies;
  std::vector<Seen> m_seen;
  int m_connections = 0;
};

TinyServer::Reply answer(int status, std::string body, std::string extra_headers = "") {
  TinyServer::Reply r;
  r.status = status;
  r.body = std::move(body);
  r.extra_headers = std::move(extra_headers);
  return r;
}

// A port with nothing listening: bound, then closed.
int unused_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

ClientOptions fast_options() {
  ClientOptions o;
  o.connect_timeout = milliseconds(2000);
  o.request_timeout = milliseconds(5000);
  o.max_attempts = 3;
  return o;
}

} // namespace

TEST_CASE("http::CurlHttpClient", "[http]") {
  TinyServer server;
  StepClock clock;
  NullLogger log;
  CurlHttpClient client(fast_options(), clock, log);

  SECTION("GET: standard headers out, status/body/lower-case headers in") {
    server.reply(answer(200, R"({"uuid":"x"})", "X-Request-Id: abc\r\nX-Resource-Count: 1\r\n"));
    Request r;
    r.url = server.url("/vms/x?sync=true");
    const Response resp = client.perform(r);
    CHECK(resp.status == 200);
    CHECK(resp.body == R"({"uuid":"x"})");
    CHECK(resp.headers.at("x-resource-count") == "1");
    CHECK(resp.headers.at("content-type") == "application/json");
    const auto seen = server.seen();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].method == "GET");
    CHECK(seen[0].target == "/vms/x?sync=true");
    CHECK(seen[0].headers.at("accept") == "application/json");
    CHECK(seen[0].headers.at("accept-version") == "*");
    CHECK(seen[0].headers.at("user-agent") == std::string("zmigrate/") + ZMIGRATE_VERSION);
    CHECK(is_uuid(seen[0].headers.at("x-request-id")));
    CHECK(seen[0].headers.count("content-type") == 0);
  }

  SECTION("PUT with a JSON body") {
    Request r;
    r.method = "PUT";
    r.url = server.url("/networks/n/ips/10.0.0.1");
    r.body = R"({"reserved":true})";
    r.headers["X-Request-Id"] = "caller-id";
    CHECK(client.perform(r).status == 200);
    const auto seen = server.seen();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].method == "PUT");
    CHECK(seen[0].body == R"({"reserved":true})");
    CHECK(seen[0].headers.at("content-type") == "application/json");
    CHECK(seen[0].headers.at("x-request-id") == "caller-id");
    CHECK(seen[0].headers.count("expect") == 0);
  }

  SECTION("POST and DELETE without a body") {
    Request r;
    r.method = "POST";
    r.idempotent = false;
    r.url = server.url("/vms/x?action=stop");
    CHECK(client.perform(r).status == 200);
    r.method = "DELETE";
    r.url = server.url("/migrations/x");
    CHECK(client.perform(r).status == 200);
    const auto seen = server.seen();
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].method == "POST");
    CHECK(seen[0].headers.at("content-length") == "0");
    CHECK(seen[1].method == "DELETE");
  }

  SECTION("the connection is kept alive across requests") {
    Request r;
    r.url = server.url("/ping");
    for (int i = 0; i < 3; ++i) {
      CHECK(client.perform(r).status == 200);
    }
    CHECK(server.seen().size() == 3);
    CHECK(server.connections() == 1);
  }

  SECTION("5xx retried with the same request id; backoff slept on the clock") {
    server.reply(answer(503, R"({"code":"ServiceUnavailable","message":"busy"})"));
    server.reply(answer(200, "{}"));
    Request r;
    r.url = server.url("/vms/x");
    CHECK(client.perform(r).status == 200);
    const auto seen = server.seen();
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].headers.at("x-request-id") == seen[1].headers.at("x-request-id"));
    REQUIRE(clock.sleeps.size() == 1);
    CHECK(clock.sleeps[0] >= milliseconds(100));
    CHECK(clock.sleeps[0] <= milliseconds(200));
  }

  SECTION("a dropped connection is retried") {
    TinyServer::Reply hang_up;
    hang_up.hang_up = true;
    server.reply(hang_up);
    server.reply(answer(200, R"({"ok":true})"));
    Request r;
    r.url = server.url("/vms/x");
    CHECK(client.perform(r).body == R"({"ok":true})");
    CHECK(server.seen().size() == 2);
  }

  SECTION("connection refused: TransientError after the attempts") {
    Request r;
    r.url = "http://127.0.0.1:" + std::to_string(unused_port()) + "/vms/x";
    r.service = "VMAPI";
    try {
      client.perform(r);
      FAIL("no throw");
    } catch (const TransientError& e) {
      CHECK(e.exit_code() == ExitCode::inventory);
      CHECK(e.subject() == "GET " + r.url);
      CHECK_THAT(e.reason(), Catch::Contains("(after 3 attempts)") &&
                                 Catch::EndsWith("check that the service is up and VMAPI_URL "
                                                 "is right"));
    }
    CHECK(clock.sleeps.size() == 2);
  }

  SECTION("request timeout") {
    ClientOptions o = fast_options();
    o.request_timeout = milliseconds(200);
    o.max_attempts = 1;
    CurlHttpClient impatient(o, clock, log);
    TinyServer::Reply slow;
    slow.delay = milliseconds(3000);
    server.reply(slow);
    Request r;
    r.url = server.url("/vms/slow");
    CHECK_THROWS_AS(impatient.perform(r), TransientError);
  }

  SECTION("an unsupported scheme is not retried") {
    Request r;
    r.url = "ftp://127.0.0.1/vms/x";
    r.service = "CNAPI";
    try {
      client.perform(r);
      FAIL("no throw");
    } catch (const TransientError&) {
      FAIL("not transient");
    } catch (const Error& e) {
      CHECK_THAT(e.reason(), Catch::EndsWith("check CNAPI_URL"));
    }
    CHECK(clock.sleeps.empty());
  }

  SECTION("an endless body is cut off at max_response_bytes, not retried") {
    ClientOptions o = fast_options();
    o.max_response_bytes = 1 << 20;
    CurlHttpClient bounded(o, clock, log);
    TinyServer::Reply endless;
    endless.endless = true;
    server.reply(endless);
    Request r;
    r.url = server.url("/vms");
    r.service = "VMAPI";
    try {
      bounded.perform(r);
      FAIL("no throw");
    } catch (const TransientError&) {
      FAIL("not transient");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::inventory);
      CHECK(e.subject() == "GET " + r.url);
      CHECK_THAT(e.reason(), Catch::StartsWith("response larger than 1048576 bytes; "));
    }
    CHECK(server.seen().size() == 1);
    CHECK(clock.sleeps.empty());
  }

  SECTION("a declared Content-Length over the limit is refused before the body") {
    ClientOptions o = fast_options();
    o.max_response_bytes = 1000;
    CurlHttpClient bounded(o, clock, log);
    TinyServer::Reply huge;
    huge.raw = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
               "Content-Length: 999999999999\r\n\r\n[{\"uuid\":";
    server.reply(huge);
    Request r;
    r.url = server.url("/vms");
    try {
      bounded.perform(r);
      FAIL("no throw");
    } catch (const TransientError&) {
      FAIL("not transient");
    } catch (const Error& e) {
      CHECK(e.subject() == "GET " + r.url);
      CHECK_THAT(e.reason(), Catch::StartsWith("response larger than 1000 bytes; "));
    }
  }

  SECTION("a body within the limit is returned whole") {
    ClientOptions o = fast_options();
    o.max_response_bytes = 1000;
    CurlHttpClient bounded(o, clock, log);
    server.reply(answer(200, std::string(1000, 'x')));
    Request r;
    r.url = server.url("/vms");
    CHECK(bounded.perform(r).body.size() == 1000);
  }

  SECTION("a truncated response (connection closed before Content-Length) is an error") {
    TinyServer::Reply cut;
    cut.raw = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
              "Content-Length: 100\r\n\r\n{\"uuid\":\"a\",";
    server.reply(cut);
    Request r;
    r.url = server.url("/vms/a");
    r.service = "VMAPI";
    try {
      client.perform(r);
      FAIL("no throw");
    } catch (const TransientError& e) {
      CHECK(e.exit_code() == ExitCode::inventory);
      CHECK(e.subject() == "GET " + r.url);
      CHECK_THAT(e.reason(), Catch::StartsWith("response truncated: ") &&
                                 Catch::Contains("(after 3 attempts)"));
    }
    CHECK(server.seen().size() == 3);
  }

  SECTION("a truncated chunked response is an error") {
    TinyServer::Reply cut;
    cut.raw = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
              "Transfer-Encoding: chunked\r\n\r\n5\r\n[{\"a\"\r\n";
    server.reply(cut);
    Request r;
    r.url = server.url("/vms");
    CHECK_THROWS_AS(client.perform(r), TransientError);
  }
}
