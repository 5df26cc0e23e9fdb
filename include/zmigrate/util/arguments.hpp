// SPDX-License-Identifier: MPL-2.0
#pragma once
// Checks of command-line arguments, made before any request: a bad argument is a one-line usage
// error (exit 2), never a request to a service or a command on a node.

#include <string>
#include <string_view>

namespace zmigrate {

// True for a plausible compute node hostname: 1..255 characters of [A-Za-z0-9._-], starting
// with a letter or digit (so never an option or a path).
bool is_node_hostname(std::string_view text);

// Throws UsageError("VM \"<value>\"", "not an instance UUID ...") unless `value` is a UUID.
void require_vm_argument(std::string_view value);

// Throws UsageError("<option> \"<value>\"", ...) unless `value` is a compute node UUID or a
// hostname (is_node_hostname). `option` names the flag in the message ("--target").
void require_node_argument(std::string_view option, std::string_view value);

} // namespace zmigrate
