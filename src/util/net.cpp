// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/util/net.hpp>

#include <arpa/inet.h>
#include <array>
#include <cstring>
#include <netinet/in.h>
#include <sys/socket.h>

#include <fmt/format.h>

namespace zmigrate {

namespace {

// inet_pton wants a NUL-terminated string; a view with an embedded NUL is not an address.
bool parses(int family, std::string_view text, void* out) {
  if (text.empty() || text.size() > 64 || text.find('\0') != std::string_view::npos) {
    return false;
  }
  const std::string s(text);
  return ::inet_pton(family, s.c_str(), out) == 1;
}

} // namespace

bool is_ipv4(std::string_view text) {
  in_addr a{};
  return parses(AF_INET, text, &a);
}

bool is_ipv6(std::string_view text) {
  in6_addr a{};
  return parses(AF_INET6, text, &a);
}

bool is_ip_literal(std::string_view text) {
  return is_ipv4(text) || is_ipv6(text);
}

bool same_ip(std::string_view a, std::string_view b) {
  in_addr a4{};
  in_addr b4{};
  if (parses(AF_INET, a, &a4) && parses(AF_INET, b, &b4)) {
    return std::memcmp(&a4, &b4, sizeof a4) == 0;
  }
  in6_addr a6{};
  in6_addr b6{};
  if (parses(AF_INET6, a, &a6) && parses(AF_INET6, b, &b6)) {
    return std::memcmp(&a6, &b6, sizeof a6) == 0;
  }
  return a == b;
}

std::string quoted_text(std::string_view text) {
  constexpr std::size_t k_max = 80;
  std::string out = "\"";
  for (char c : text.substr(0, k_max)) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  out += '"';
  if (text.size() > k_max) {
    out += "...";
  }
  return out;
}

} // namespace zmigrate
