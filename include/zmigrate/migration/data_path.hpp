// SPDX-License-Identifier: MPL-2.0
#pragma once
// The CN-to-CN data path: the source sends straight to the target over ssh with an ephemeral
// ed25519 key made for one zmigrate command. The public key on the target is restricted to the
// source address, no pty/forwarding, and a forced command that can only `zfs recv` into this
// migration's datasets. Everything it creates is recorded in the ledger first and removed on
// every exit path (and by the next command after a crash).
//
// The pure functions below build every text and argv; DataPath executes them.

#include <zmigrate/migration/context.hpp>
#include <zmigrate/remote/command.hpp>
#include <zmigrate/remote/runner.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace zmigrate::migration {

struct DataPathSpec {
  std::string migration_id;
  std::string source_addr; // the address the target sees the source connect from
  std::string target_addr; // where the source connects to
  int target_port = 22;
  std::string target_user = "root";
  std::string
      target_host_key; // "ssh-ed25519 AAAA..." read from the target over the operator session
  std::vector<std::string> datasets; // validated dataset names the key may receive into
  bool resumable = false;            // target zfs supports recv -s
  bool watchdog = false;             // target has mbuffer: receiver aborts when the stream stalls
  int watchdog_s = 60;
  // ssh ConnectTimeout of the source's connection to the target (ssh.connect_timeout_s); the
  // commands that install the key and start the master may take max(30 s, 3x this).
  int connect_timeout_s = 10;
  std::string zfs_path = "/usr/sbin/zfs";
  std::string authorized_keys = "/root/.ssh/authorized_keys";
};

// /var/run/zmigrate/<migration-id>: private (0700) directory on both nodes, on tmpfs on SmartOS
// and in the lab, so key material never survives a reboot.
std::string private_dir(const std::string& migration_id);
// Comment that marks the authorized_keys line of this migration (used to remove it).
std::string key_marker(const std::string& migration_id);
// The forced command script installed on the target (validated names only; throws UsageError).
std::string recv_script(const DataPathSpec& spec);
// The restricted authorized_keys line for `public_key` ("ssh-ed25519 AAAA...").
std::string authorized_keys_line(const DataPathSpec& spec, const std::string& public_key);
// The ssh client argv the source runs to reach the target with the ephemeral key, asking the
// forced command for `request` ("recv <dataset>"). Fast cipher, no compression, keepalives,
// strict pinned host key, multiplexed over a master started by DataPath::open().
remote::Argv source_ssh_argv(const DataPathSpec& spec, const std::vector<std::string>& request);
// The full pipeline run on the source: zfs send ... [| pv -n -b -i 1] | ssh ... recv <dataset>.
remote::Command send_pipeline(const DataPathSpec& spec, const remote::Argv& zfs_send,
                              const std::string& dataset, bool use_pv);
// Parses one line of `pv -n -b` output (a byte count); nullopt for any other stderr line.
std::optional<std::uint64_t> parse_pv_line(std::string_view line);

struct TransferResult {
  std::uint64_t bytes = 0; // counted by pv, or the estimate when no counter was available
  bool bytes_counted = false;
  std::chrono::milliseconds duration{0};
};

class DataPath {
public:
  // `source`/`target` are the operator sessions to the two nodes.
  DataPath(Context& ctx, DataPathSpec spec, remote::Runner& source, remote::Runner& target);
  ~DataPath(); // best-effort close() if still open; never throws
  DataPath(const DataPath&) = delete;
  DataPath& operator=(const DataPath&) = delete;

  // Remove leftovers of earlier commands of this migration (from the ledger and by marker), make
  // the key, install it on the target and on the source, start the multiplexing master.
  void open();
  // Send one stream. `on_bytes` gets the running byte count about once a second.
  TransferResult send(const remote::Argv& zfs_send, const std::string& dataset, bool use_pv,
                      const std::function<void(std::uint64_t)>& on_bytes);
  // Remove the key, the known_hosts pin, the forced command and the master. Idempotent.
  void close();
  // True when this path is open for `migration_id`, from `source` to `target`, and its forced
  // command accepts every dataset of `datasets`.
  bool serves(const std::string& migration_id, const remote::Runner& source,
              const remote::Runner& target, const std::vector<std::string>& datasets) const;

  // Remove every data-path artefact of `migration_id` on both nodes (ledger-driven cleanup after
  // a crash). Never throws for a node that is unreachable: leaves its ledger rows live instead.
  static void remove_leftovers(Context& ctx, const std::string& migration_id,
                               remote::Runner& source, remote::Runner& target);

private:
  Context& m_ctx;
  DataPathSpec m_spec;
  remote::Runner& m_source;
  remote::Runner& m_target;
  bool m_open = false;
  std::vector<std::int64_t> m_artefacts;
};

// Write `content` to `dir`/`name` on `runner` atomically with `mode` (octal text, e.g. "600"),
// creating `dir` 0700. The content travels on stdin, never in argv or logs.
void write_remote_file(remote::Runner& runner, const std::string& dir, const std::string& name,
                       const std::string& content, const std::string& mode);

} // namespace zmigrate::migration
