// SPDX-License-Identifier: MPL-2.0
#pragma once
// http::Client over libcurl. One easy handle is reused for every request, so connections to the
// inventory services are kept alive across calls. Thread-compatible: use one instance per thread.

#include <zmigrate/http/client.hpp>
#include <zmigrate/http/retry.hpp>
#include <zmigrate/util/clock.hpp>
#include <zmigrate/util/log.hpp>

#include <memory>
#include <random>

namespace zmigrate::http {

class CurlHttpClient final : public Client {
public:
  // `clock` paces retries; `log` receives one line per attempt. Both must outlive the client.
  // Throws Error(ExitCode::inventory) when libcurl cannot be initialised. With
  // options.verify_tls false a warning is logged once (TLS is never unverified silently).
  CurlHttpClient(ClientOptions options, Clock& clock, Logger& log);
  ~CurlHttpClient() override;
  CurlHttpClient(const CurlHttpClient&) = delete;
  CurlHttpClient& operator=(const CurlHttpClient&) = delete;

  // See Client::perform and perform_with_retries (http/retry.hpp). Adds standard_headers() with a
  // fresh x-request-id (the same for every attempt of one request) unless the caller set one.
  Response perform(const Request& request) override;

private:
  Attempt attempt_once(const Request& request);

  struct Handle;
  std::unique_ptr<Handle> m_handle;
  ClientOptions m_options;
  Clock& m_clock;
  Logger& m_log;
  std::mt19937_64 m_rng;
};

} // namespace zmigrate::http
