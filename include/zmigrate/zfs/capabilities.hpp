// SPDX-License-Identifier: MPL-2.0
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace zmigrate::zfs {

// What a node's ZFS can do, probed once per node per command (zfs-fuse lacks most of it).
struct Capabilities {
  std::string implementation; // "openzfs 2.3.2", "zfs-fuse", "illumos"
  bool dry_run_parsable = false; // zfs send -nvP
  bool resume_tokens = false;    // recv -s, send -t, receive_resume_token
  bool compressed_send = false;  // send -c
  bool large_blocks = false;     // send -L
  bool embedded_data = false;    // send -e
  bool raw_send = false;         // send -w
  bool holds = false;            // zfs hold/release
  bool bookmarks = false;
  bool written_property = false;
  bool recv_exclude_props = false; // recv -x
  bool list_parsable = false;    // zfs list -p
  bool zvols = false;
  bool has_pv = false;
  bool has_mbuffer = false;
};

void to_json(nlohmann::json& j, const Capabilities& c);
void from_json(const nlohmann::json& j, Capabilities& c);

} // namespace zmigrate::zfs
