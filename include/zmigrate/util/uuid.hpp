// SPDX-License-Identifier: MPL-2.0
#pragma once
// RFC 4122 UUIDs: request ids for the inventory APIs, and a syntax check for arguments that may be
// a UUID or a name.

#include <string>
#include <string_view>

namespace zmigrate {

// A random (version 4) UUID in lower-case 8-4-4-4-12 form, from /dev/urandom.
// Throws Error(ExitCode::failure) when /dev/urandom cannot be read.
std::string uuid_v4();

// True when `text` has the 8-4-4-4-12 hex form (either case); the version is not checked, as
// Triton server UUIDs come from SMBIOS and are not version 4.
bool is_uuid(std::string_view text);

} // namespace zmigrate
