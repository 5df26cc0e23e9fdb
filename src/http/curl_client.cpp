// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/http/curl_client.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/uuid.hpp>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <limits>
#include <mutex>
#include <string_view>

#include <curl/curl.h>
#include <fmt/format.h>

namespace zmigrate::http {

namespace {

struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

// curl_slist_append returns NULL and leaves the list alone when it runs out of memory.
bool append(Slist& list, const std::string& line) {
  curl_slist* head = curl_slist_append(list.get(), line.c_str());
  if (head == nullptr) {
    return false;
  }
  static_cast<void>(list.release());
  list.reset(head);
  return true;
}

void global_init() {
  static std::once_flag once;
  static CURLcode status = CURLE_OK;
  std::call_once(once, [] { status = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (status != CURLE_OK) {
    throw Error(ExitCode::inventory, "libcurl", curl_easy_strerror(status));
  }
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

struct BodySink {
  std::string* body = nullptr;
  std::uint64_t limit = 0;
  bool too_large = false;
};

// Returning less than was offered makes libcurl abort the transfer with CURLE_WRITE_ERROR.
std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
  auto& sink = *static_cast<BodySink*>(user);
  const std::size_t n = size * count;
  if (n > sink.limit || sink.body->size() > sink.limit - n) {
    sink.too_large = true;
    return 0;
  }
  sink.body->append(data, n);
  return n;
}

std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
  auto& headers = *static_cast<std::map<std::string, std::string>*>(user);
  const std::string_view line(data, size * count);
  // A new status line starts a new response (after 100 Continue): forget earlier headers.
  if (line.rfind("HTTP/", 0) == 0) {
    headers.clear();
    return size * count;
  }
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos) {
    return size * count;
  }
  std::string name(trim(line.substr(0, colon)));
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const std::string value(trim(line.substr(colon + 1)));
  auto [it, inserted] = headers.emplace(name, value);
  if (!inserted) {
    it->second += ", " + value;
  }
  return size * count;
}

// Failures that a second try can fix: the service was down, slow, or dropped the connection.
bool retryable_curl_error(CURLcode code) {
  switch (code) {
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_CONNECT:
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
    return true;
  default:
    return false;
  }
}

bool tls_verification_error(CURLcode code) {
  return code == CURLE_PEER_FAILED_VERIFICATION || code == CURLE_SSL_CACERT_BADFILE ||
         code == CURLE_SSL_CERTPROBLEM;
}

} // namespace

struct CurlHttpClient::Handle {
  CURL* curl = nullptr;
  char error[CURL_ERROR_SIZE] = {0};
  ~Handle() {
    if (curl != nullptr) {
      curl_easy_cleanup(curl);
    }
  }
};

CurlHttpClient::CurlHttpClient(ClientOptions options, Clock& clock, Logger& log)
    : m_handle(std::make_unique<Handle>()), m_options(std::move(options)), m_clock(clock),
      m_log(log), m_rng(std::random_device{}()) {
  global_init();
  m_handle->curl = curl_easy_init();
  if (m_handle->curl == nullptr) {
    throw Error(ExitCode::inventory, "libcurl", "curl_easy_init failed");
  }
  if (!m_options.verify_tls) {
    m_log.warn("TLS certificate verification is disabled for https inventory URLs");
  }
}

CurlHttpClient::~CurlHttpClient() = default;

Response CurlHttpClient::perform(const Request& request) {
  Request prepared = request;
  prepared.headers = standard_headers(request, uuid_v4());
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  return perform_with_retries(
      prepared, m_options, [this](const Request& r) { return attempt_once(r); }, m_clock, m_log,
      [this, &unit] { return unit(m_rng); });
}

Attempt CurlHttpClient::attempt_once(const Request& request) {
  CURL* curl = m_handle->curl;
  // Reset drops the previous request's options but keeps live connections and the DNS cache.
  curl_easy_reset(curl);
  m_handle->error[0] = '\0';

  Slist headers;
  bool headers_ok = true;
  for (const auto& [name, value] : request.headers) {
    headers_ok = headers_ok && append(headers, fmt::format("{}: {}", name, value));
  }
  // No "Expect: 100-continue" round trip for bodies: the services answer at once.
  headers_ok = headers_ok && append(headers, "expect:");
  if (!headers_ok) {
    return Attempt{std::nullopt, "out of memory building request headers", false, ""};
  }

  Response response;
  curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, m_handle->error);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(m_options.connect_timeout.count()));
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(m_options.request_timeout.count()));
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, m_options.verify_tls ? 1L : 0L);
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, m_options.verify_tls ? 2L : 0L);
  if (!m_options.ca_file.empty()) {
    curl_easy_setopt(curl, CURLOPT_CAINFO, m_options.ca_file.c_str());
  }
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
  BodySink sink{&response.body, m_options.max_response_bytes, false};
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
  // A declared Content-Length over the limit is refused before any of the body is read (0 means
  // "no limit" to libcurl: on_body alone enforces a zero limit).
  if (m_options.max_response_bytes > 0) {
    curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE,
                     static_cast<curl_off_t>(std::min<std::uint64_t>(
                         m_options.max_response_bytes,
                         static_cast<std::uint64_t>(std::numeric_limits<curl_off_t>::max()))));
  }
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &response.headers);

  if (request.method == "GET") {
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
  } else if (request.method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }
  if (request.body) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.body->data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(request.body->size()));
  } else if (request.method == "POST" || request.method == "PUT") {
    // An empty body still needs "content-length: 0" or some proxies wait for one.
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(0));
  }

  const CURLcode code = curl_easy_perform(curl);
  if (sink.too_large || code == CURLE_FILESIZE_EXCEEDED) {
    // Not retried: the same service would send the same oversized answer again.
    return Attempt{std::nullopt,
                   fmt::format("response larger than {} bytes", m_options.max_response_bytes),
                   false,
                   "the service's answer is corrupt or hostile, or the limit "
                   "(http::ClientOptions::max_response_bytes) is too low for it"};
  }
  if (code != CURLE_OK) {
    Attempt failed;
    failed.error = m_handle->error[0] != '\0' ? std::string(m_handle->error)
                                              : std::string(curl_easy_strerror(code));
    failed.retryable = retryable_curl_error(code);
    if (tls_verification_error(code)) {
      failed.hint = "the server's TLS certificate did not verify; fix the certificate or name a "
                    "CA bundle in the configuration (\"http\": {\"ca_file\": ...})";
    } else if (code == CURLE_PARTIAL_FILE) {
      failed.error = "response truncated: " + failed.error;
    } else if (code == CURLE_URL_MALFORMAT || code == CURLE_UNSUPPORTED_PROTOCOL) {
      failed.hint = request.service.empty() ? std::string("check the URL")
                                            : fmt::format("check {}_URL", request.service);
    }
    return failed;
  }
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  response.status = status;
  return Attempt{std::move(response), "", true, ""};
}

} // namespace zmigrate::http
