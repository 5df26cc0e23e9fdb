// SPDX-License-Identifier: MPL-2.0
#pragma once
// The HTTP seam. CurlHttpClient (libcurl) is the only code that speaks HTTP; tests use
// tests/fakes/fake_http.hpp, which records every request and replays canned responses.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace zmigrate::http {

struct Request {
  std::string method = "GET";                 // GET, PUT, POST, DELETE
  std::string url;                            // absolute: http://vmapi.example/vms/<uuid>
  std::map<std::string, std::string> headers; // any case; the client adds the standard ones
  std::optional<std::string> body;            // JSON text when present
  // Idempotent requests are retried on connection errors and 5xx; others are tried once.
  bool idempotent = true;
  // "VMAPI", "CNAPI", ...: named in logs and in the "check <service>_URL" hint of errors. Optional.
  std::string service;
};

struct Response {
  long status = 0;
  std::map<std::string, std::string> headers; // lower-case names
  std::string body;
};

struct ClientOptions {
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds request_timeout{30000};
  int max_attempts = 4;                           // for idempotent requests
  std::chrono::milliseconds initial_backoff{200}; // doubled per attempt, jittered
  std::chrono::milliseconds max_backoff{5000};    // cap of one backoff sleep
  bool verify_tls = true;
  std::string ca_file; // optional CA bundle for https
  // A response body larger than this aborts the transfer with Error(ExitCode::inventory): a
  // corrupted or hostile service cannot make zmigrate grow memory without bound.
  std::uint64_t max_response_bytes = 64ULL << 20;
};

class Client {
public:
  virtual ~Client() = default;
  // Perform `request`. Returns the final response for every HTTP status (4xx/5xx included, after
  // retries for idempotent 5xx). Throws TransientError(ExitCode::inventory) when no response
  // could be had (DNS, refused, timeout, reset) after the retries, Error(ExitCode::inventory)
  // when retrying cannot help (malformed URL, unsupported scheme, TLS verification failure, a body
  // larger than ClientOptions::max_response_bytes). A response cut short (Content-Length or
  // chunked framing not complete when the connection closed) is never returned: it is retried
  // like a dropped connection and reported as such.
  virtual Response perform(const Request& request) = 0;
};

} // namespace zmigrate::http
