// SPDX-License-Identifier: MPL-2.0
#pragma once
// IP address literals. Addresses read from the inventory APIs end up on command lines (ssh,
// the data path), so they are checked to be plain literals first.

#include <string>
#include <string_view>

namespace zmigrate {

// True when `text` is an IPv4 dotted-quad ("10.0.0.5") or an IPv6 literal ("fd00::5"), as
// inet_pton parses them: no prefix length, zone id, brackets, port or whitespace.
bool is_ipv4(std::string_view text);
bool is_ipv6(std::string_view text);
bool is_ip_literal(std::string_view text);

// True when `a` and `b` are the same address ("fd00::5" and "FD00:0::5"); plain string
// equality when either is not an IP literal.
bool same_ip(std::string_view a, std::string_view b);

// `text` for an error message: JSON-style quoted, control characters and quotes escaped, at most
// about 80 characters, so hostile values cannot forge lines or hide in a message.
std::string quoted_text(std::string_view text);

} // namespace zmigrate
