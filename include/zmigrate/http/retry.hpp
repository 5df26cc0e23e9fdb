// SPDX-License-Identifier: MPL-2.0
#pragma once
// The request policy shared by every transport: standard headers, which failures are retried,
// how long to back off, and the logging of each attempt. Kept apart from libcurl so that it is
// tested with a scripted transport and a fake clock.

#include <zmigrate/http/client.hpp>
#include <zmigrate/util/clock.hpp>
#include <zmigrate/util/log.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>

namespace zmigrate::http {

// What one try of a request produced: a response, or a transport failure.
struct Attempt {
  std::optional<Response> response;
  std::string error;     // transport failure text ("Failed to connect to ... : Connection refused")
  bool retryable = true; // false when a retry cannot help (malformed URL, TLS verification)
  std::string hint;      // what to check, when the default hint does not fit ("" = default)
};

// Sends `request` exactly once. Reports transport failures in the Attempt instead of throwing.
using Transport = std::function<Attempt(const Request& request)>;

// True for the statuses an idempotent request is retried on: 429, 500, 502, 503, 504 (not 501
// or 507: those do not change on their own).
bool is_retryable_status(long status);

// The sleep before retry number `retry` (1 = first retry): initial_backoff * 2^(retry-1), capped
// at max_backoff, then scaled by `jitter` (in [0, 1)) into [50%, 100%] of that.
std::chrono::milliseconds backoff_delay(const ClientOptions& options, int retry, double jitter);

// The request headers to send, lower-case names: accept: application/json, accept-version: *,
// user-agent: zmigrate/<version>, x-request-id: `request_id`, content-type: application/json
// when there is a body. Headers the caller set (any case) win over these.
std::map<std::string, std::string> standard_headers(const Request& request,
                                                    const std::string& request_id);

// The hint for a request that got no response: "check that the service is up and VMAPI_URL is
// right" (or "... its URL is right" when `service` is empty).
std::string unreachable_hint(const std::string& service);

// Performs `request` (headers already final) through `transport`. Idempotent requests are tried
// up to options.max_attempts times on retryable transport failures and retryable statuses,
// sleeping backoff_delay(..., jitter()) on `clock` in between; other requests are tried once.
// Every attempt is logged with method, url, status or error, duration_ms, req_id, attempt and
// service: debug when it is the answer, warn when it is retried or when retries ran out. Returns
// the last response, whatever its status. Throws TransientError(ExitCode::inventory, "<METHOD>
// <url>", "<error>; <hint>") when no response came, or Error(ExitCode::inventory, ...) when the
// failure is not retryable.
Response perform_with_retries(const Request& request, const ClientOptions& options,
                              const Transport& transport, Clock& clock, Logger& log,
                              const std::function<double()>& jitter);

} // namespace zmigrate::http
