// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/http/retry.hpp>
#include <zmigrate/util/error.hpp>

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

namespace zmigrate::http {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

long long elapsed_ms(std::chrono::steady_clock::time_point start,
                     std::chrono::steady_clock::time_point end) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(end - start).count();
}

} // namespace

bool is_retryable_status(long status) {
  return status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

std::chrono::milliseconds backoff_delay(const ClientOptions& options, int retry, double jitter) {
  using std::chrono::milliseconds;
  const long long initial = std::max<long long>(options.initial_backoff.count(), 0);
  const long long cap = std::max<long long>(options.max_backoff.count(), 0);
  long long base = initial;
  // Doubling stops at the cap, so a large attempt count cannot overflow.
  for (int i = 1; i < retry && base < cap; ++i) {
    base *= 2;
  }
  base = std::min(base, cap);
  const double j = std::clamp(jitter, 0.0, 1.0);
  // Half fixed, half random: retries from several zmigrate processes spread out, yet the wait
  // never collapses to zero.
  return milliseconds(static_cast<long long>(static_cast<double>(base) * (0.5 + 0.5 * j)));
}

std::map<std::string, std::string> standard_headers(const Request& request,
                                                    const std::string& request_id) {
  std::map<std::string, std::string> headers{
      {"accept", "application/json"},
      {"accept-version", "*"},
      {"user-agent", std::string("zmigrate/") + ZMIGRATE_VERSION},
      {"x-request-id", request_id},
  };
  if (request.body) {
    headers["content-type"] = "application/json";
  }
  for (const auto& [name, value] : request.headers) {
    headers[lower(name)] = value;
  }
  return headers;
}

std::string unreachable_hint(const std::string& service) {
  if (service.empty()) {
    return "check that the service is up and its URL is right";
  }
  return fmt::format("check that the service is up and {}_URL is right", service);
}

Response perform_with_retries(const Request& request, const ClientOptions& options,
                              const Transport& transport, Clock& clock, Logger& log,
                              const std::function<double()>& jitter) {
  const int max_attempts = request.idempotent ? std::max(options.max_attempts, 1) : 1;
  const std::string subject = fmt::format("{} {}", request.method, request.url);
  std::string req_id;
  for (const auto& [name, value] : request.headers) {
    if (lower(name) == "x-request-id") {
      req_id = value;
    }
  }

  for (int attempt = 1;; ++attempt) {
    const auto start = clock.now();
    Attempt result = transport(request);
    nlohmann::json fields{{"method", request.method},
                          {"url", request.url},
                          {"req_id", req_id},
                          {"attempt", attempt},
                          {"duration_ms", elapsed_ms(start, clock.now())}};
    if (!request.service.empty()) {
      fields["service"] = request.service;
    }
    const bool last = attempt >= max_attempts;

    if (result.response) {
      fields["status"] = result.response->status;
      if (last || !is_retryable_status(result.response->status)) {
        if (attempt > 1 && is_retryable_status(result.response->status)) {
          log.warn("http request failed; no attempts left", fields);
        } else {
          log.debug("http request", fields);
        }
        return std::move(*result.response);
      }
    } else {
      fields["error"] = result.error;
      if (last || !result.retryable) {
        log.warn("http request failed", fields);
        const std::string hint =
            result.hint.empty() ? unreachable_hint(request.service) : result.hint;
        const std::string why = fmt::format("{}; {}", result.error, hint);
        if (!result.retryable) {
          throw Error(ExitCode::inventory, subject, why);
        }
        if (attempt > 1) {
          throw TransientError(
              ExitCode::inventory, subject,
              fmt::format("{} (after {} attempts); {}", result.error, attempt, hint));
        }
        throw TransientError(ExitCode::inventory, subject, why);
      }
    }

    const std::chrono::milliseconds delay = backoff_delay(options, attempt, jitter());
    fields["delay_ms"] = delay.count();
    log.warn("http request failed; retrying", fields);
    clock.sleep_for(delay);
  }
}

} // namespace zmigrate::http
