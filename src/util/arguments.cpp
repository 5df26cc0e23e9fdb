// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/util/arguments.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/net.hpp>
#include <zmigrate/util/uuid.hpp>

#include <fmt/format.h>

namespace zmigrate {

namespace {

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

} // namespace

bool is_node_hostname(std::string_view text) {
  if (text.empty() || text.size() > 255 || !is_alnum(text.front())) {
    return false;
  }
  for (char c : text) {
    if (!is_alnum(c) && c != '.' && c != '-' && c != '_') {
      return false;
    }
  }
  return true;
}

void require_vm_argument(std::string_view value) {
  if (!is_uuid(value)) {
    throw UsageError(fmt::format("VM {}", quoted_text(value)),
                     "not an instance UUID (8-4-4-4-12 hex digits, as `vmadm list` shows)");
  }
}

void require_node_argument(std::string_view option, std::string_view value) {
  if (!is_uuid(value) && !is_node_hostname(value)) {
    throw UsageError(fmt::format("{} {}", option, quoted_text(value)),
                     "not a compute node UUID or hostname");
  }
}

} // namespace zmigrate
