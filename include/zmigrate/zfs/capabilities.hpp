// SPDX-License-Identifier: MPL-2.0
#pragma once
// What a node's ZFS can do. Probed once per node per zmigrate command with ONE remote command
// (probe_command()), parsed by parse_capabilities(); zfs::ZfsNode caches the result. zfs-fuse
// (the lab) lacks most of it, and every builder in zfs/commands.hpp degrades accordingly.

#include <zmigrate/remote/command.hpp>

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace zmigrate::zfs {

struct Capabilities {
  std::string implementation;      // "openzfs 2.3.2", "illumos", "zfs-fuse", "unknown"
  std::string version;             // "2.3.2" for OpenZFS; uname release for illumos; else ""
  bool dry_run_parsable = false;   // zfs send -nvP
  bool resume_tokens = false;      // recv -s, send -t, receive_resume_token, recv -A
  bool compressed_send = false;    // send -c
  bool large_blocks = false;       // send -L
  bool embedded_data = false;      // send -e
  bool raw_send = false;           // send -w
  bool holds = false;              // zfs hold/release (tags on snapshots)
  bool bookmarks = false;          // zfs bookmark, send -i #bookmark
  bool written_property = false;   // written, written@snap
  bool recv_exclude_props = false; // recv -x
  bool recv_set_props = false;     // recv -o (e.g. -o origin=)
  bool list_parsable = false;      // zfs list -p
  bool multi_snapshot = false;     // zfs snapshot a@s b@s (several datasets, one atomic txg)
  bool zvols = false;
  bool has_pv = false;
  bool has_mbuffer = false;
  // Absolute path of node.js ("" = none): /usr/node/bin/node in a SmartOS global zone (vmadm
  // runs on it), else the first `node` on PATH. The bandwidth limit's throttle runs on it.
  std::string node;
};

void to_json(nlohmann::json& j, const Capabilities& c);
// Missing keys keep their defaults (false / ""), so records written by older versions load.
void from_json(const nlohmann::json& j, Capabilities& c);

// What a stream from `sender` to `receiver` may use: the sender's capabilities with the stream
// features (compressed_send, large_blocks, embedded_data, raw_send) kept only where the receiver
// has them too (zfs-fuse cannot receive a `send -c/-L/-e` stream). Pass this to build_send()
// whenever the stream goes to another node.
Capabilities stream_capabilities(const Capabilities& sender, const Capabilities& receiver);

// The one probe command: `sh -c <fixed script>`. The script is a constant in our source (no
// interpolated values); it prints sections "@@<name>" with usage texts, `zfs version`,
// `zpool upgrade -v`, the exit status of `zfs get written` and `zfs list -p`, and the paths of
// pv, mbuffer and node. Works with the POSIX sh of Linux and illumos.
remote::Command probe_command();

// The fixed script inside probe_command() (tests/data/zfs/record-zfs-fuse.sh extracts it from
// this file's source to record real output).
std::string_view probe_script();

// Capabilities from the stdout of probe_command(). Throws Error(ExitCode::zfs) when the text
// is not probe output (no "@@zmigrate-probe" header, e.g. a forced command answered instead).
Capabilities parse_capabilities(std::string_view output);

} // namespace zmigrate::zfs
