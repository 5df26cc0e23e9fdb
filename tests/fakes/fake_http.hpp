// SPDX-License-Identifier: MPL-2.0
#pragma once
// FakeHttp: an http::Client that replays canned responses and records every request.
//
//   FakeHttp http;
//   http.on_json("GET", "http://vmapi/vms/x", 200, vm_json);
//   http.on("GET", "http://vmapi/vms/y", 404, R"({"code":"ResourceNotFound","message":"VM not
//   found"})");
//   ... code under test ...
//   CHECK(http.requests.at(0).url == "http://vmapi/vms/x");
//
// Responses for one method+URL are queued: each request takes the next, and the last one stays
// (so a single canned response answers any number of requests). A request with no canned
// response goes to `handler` when set, else throws std::logic_error naming it.

#include <zmigrate/http/client.hpp>
#include <zmigrate/util/error.hpp>

#include <deque>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace zmigrate::fakes {

class FakeHttp final : public http::Client {
public:
  // Every request performed, in order.
  std::vector<http::Request> requests;
  // Answers requests that have no canned response.
  std::function<http::Response(const http::Request&)> handler;

  // Queue a response with `status` and raw `body` for `method` `url` (query string included).
  void on(const std::string& method, const std::string& url, long status, std::string body,
          std::map<std::string, std::string> headers = {}) {
    m_canned[{method, url}].push_back(
        Outcome{http::Response{status, std::move(headers), std::move(body)}, ""});
  }
  // Queue a JSON response.
  void on_json(const std::string& method, const std::string& url, long status,
               const nlohmann::json& body) {
    on(method, url, status, body.dump(), {{"content-type", "application/json"}});
  }
  // Queue a restify error: {"code": code, "message": message}.
  void on_error(const std::string& method, const std::string& url, long status,
                const std::string& code, const std::string& message) {
    on_json(method, url, status, {{"code", code}, {"message", message}});
  }
  // Queue a transport failure: perform() throws TransientError(ExitCode::inventory), as
  // CurlHttpClient does when no response came.
  void fail(const std::string& method, const std::string& url, std::string why) {
    m_canned[{method, url}].push_back(Outcome{std::nullopt, std::move(why)});
  }

  http::Response perform(const http::Request& request) override {
    requests.push_back(request);
    const auto it = m_canned.find({request.method, request.url});
    if (it != m_canned.end() && !it->second.empty()) {
      Outcome outcome = it->second.front();
      if (it->second.size() > 1) {
        it->second.pop_front();
      }
      if (!outcome.response) {
        throw TransientError(ExitCode::inventory, request.method + " " + request.url,
                             outcome.failure);
      }
      return *outcome.response;
    }
    if (handler) {
      return handler(request);
    }
    throw std::logic_error("FakeHttp: no canned response for " + request.method + " " +
                           request.url);
  }

  // "GET http://..." for each request, for compact assertions.
  std::vector<std::string> request_lines() const {
    std::vector<std::string> lines;
    for (const http::Request& r : requests) {
      lines.push_back(r.method + " " + r.url);
    }
    return lines;
  }

private:
  struct Outcome {
    std::optional<http::Response> response;
    std::string failure;
  };
  std::map<std::pair<std::string, std::string>, std::deque<Outcome>> m_canned;
};

} // namespace zmigrate::fakes
