// SPDX-License-Identifier: MPL-2.0
#pragma once
// The CN-to-CN data path: the source sends straight to the target over ssh with an ephemeral
// ed25519 key made for one migration. The public key on the target is restricted to the source
// address, no pty/forwarding, a forced command that can only `zfs recv` into this migration's
// datasets, and an expiry 48 hours on. Everything it creates is recorded in the ledger first.
// A `sync` that succeeds parks its path (DataPath::park) and the migration's next command adopts
// it (no key install, no new master); every other way out removes it, and so do the switch,
// abort, rollback, finalize and cleanup, and the next command after a crash.
//
// The pure functions below build every text and argv; DataPath executes them.

#include <zmigrate/migration/context.hpp>
#include <zmigrate/migration/link.hpp>
#include <zmigrate/remote/command.hpp>
#include <zmigrate/remote/runner.hpp>
#include <zmigrate/util/error.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace zmigrate::migration {

struct DataPathSpec {
  std::string migration_id;
  // This path's own id (migration id + "-" + 8 hex digits, made by the DataPath constructor when
  // empty): names its private dir, key marker and ssh ControlPath, so two paths of one migration
  // (a kept path and the reverse path of a rollback) never share or remove each other's files.
  std::string path_id;
  // The CNAPI server UUIDs of the two ends (Link::serves compares them; "" = by host label).
  std::string source_server_uuid;
  std::string target_server_uuid;
  // The boot of each end as CNAPI reports it (node_boot): a path is adopted only on the boots
  // it was set up on (a reboot empties /var/run: the private dirs are gone); "" never adopts.
  std::string source_boot;
  std::string target_boot;
  std::string source_addr; // the address the target sees the source connect from
  std::string target_addr; // where the source connects to
  // The configured ssh port and user of the target (ssh.port / ssh.user); the caller sets them.
  int target_port = 22;
  std::string target_user = "root";
  std::string
      target_host_key; // "ssh-ed25519 AAAA..." read from the target over the operator session
  std::vector<std::string> datasets; // validated dataset names the key may receive into
  // A measurement's key (estimate --measure): its forced command also accepts `measure`, which
  // counts the bytes it is sent, prints the count and keeps nothing.
  bool measure = false;
  bool resumable = false; // target zfs supports recv -s
  bool watchdog = false;  // target has mbuffer: receiver aborts when the stream stalls
  int watchdog_s = 60;
  // ssh ConnectTimeout of the source's connection to the target (ssh.connect_timeout_s); the
  // commands that install the key and start the master may take max(30 s, 3x this).
  int connect_timeout_s = 10;
  std::string zfs_path = "/usr/sbin/zfs";
  // Bandwidth limit of every stream in bytes per second (0 = none), enforced on the source by
  // the throttle below on `throttle_node` (node.js there), else by `pv -L`.
  std::uint64_t rate_limit = 0;
  std::string throttle_node;
  std::string authorized_keys = "/root/.ssh/authorized_keys";
};

// /var/run/zmigrate/<migration-id>: private (0700) directory of a migration on a node (zone
// config files), on tmpfs on SmartOS and in the lab, so nothing there survives a reboot.
std::string private_dir(const std::string& migration_id);
// /var/run/zmigrate/<path-id>: the private (0700) directory of one data path on both nodes.
std::string path_dir(const std::string& path_id);
// Comment that ends the authorized_keys line of one data path.
std::string key_marker(const std::string& path_id);
// A fresh path id for `migration_id`: "<migration-id>-<8 hex digits>".
std::string new_path_id(const std::string& migration_id);
// The node-wide lock that serialises zmigrate's edits of authorized_keys (a mkdir lock holding the
// holder's pid; a dead holder's lock is broken, a live one is waited for up to 30 s).
inline constexpr const char* k_keys_lock_dir = "/var/run/zmigrate/authorized_keys.lock";
// The forced command script installed on the target (validated names only; throws UsageError).
// It runs as `/bin/sh <path dir>/recv` and never execs the receiver, so the kill script finds
// the shell by that argv and its receiver by parent pid.
std::string recv_script(const DataPathSpec& spec);
// The restricted authorized_keys line (no newline) for `public_key` ("ssh-ed25519 AAAA..."):
// restrict, from=<source addr>, command="/bin/sh <path dir>/recv", and expiry-time 48 hours
// after `now` in UTC without a zone suffix (the margin makes the node's timezone irrelevant).
std::string authorized_keys_line(const DataPathSpec& spec, const std::string& public_key,
                                 std::chrono::system_clock::time_point now);
// The constant remote scripts, exposed so tests run them with a local /bin/sh. Each runs as
// `sh -c SCRIPT sh ARG...`; values arrive only as positional parameters.
namespace scripts {
// DIR FILE LOCK RECV LINE: writes RECV to DIR/recv; appends LINE to FILE under LOCK unless that
// exact line is there, first adding a newline when FILE does not end with one (then prints
// "added_newline").
const std::string& install_target();
// DIR FILE LOCK LINE JOINED [MIGDIR]: ends DIR's processes and ssh master and removes DIR (when
// DIR is not empty), removes MIGDIR (the migration's dir, when given), then under LOCK removes the
// lines of FILE that are byte-for-byte LINE (when FILE and LINE are not empty), and the newline
// install added before it when JOINED is "1" and LINE was the last line. Refuses (exit 3, FILE
// untouched) when LINE is there more than once or the filtered copy cannot be written and checked;
// exit 0 when LINE is not there. Exit 1: DIR left.
const std::string& cleanup();
// DIR: ends the processes of a data path: the target's `/bin/sh DIR/recv` shells with their
// children (the receivers), the source's ssh clients using DIR's key (and their pipelines).
const std::string& kill();
} // namespace scripts
// The ssh client argv the source runs to reach the target with the ephemeral key, asking the
// forced command for `request` ("recv <dataset>"). Fast cipher, no compression, keepalives,
// strict pinned host key, no ssh_config (-F /dev/null), multiplexed over a master started by
// DataPath::open(). The argv starts with `ssh -i <path dir>/id_ed25519` (extra options come
// after it), so the key path sits in the first 80 bytes that illumos pgrep -f sees.
remote::Argv source_ssh_argv(const DataPathSpec& spec, const std::vector<std::string>& request);
// The full pipeline run on the source: zfs send ... [| meter] | ssh ... recv <dataset>, zfs send
// run through `sh -c` with SIGHUP and SIGPIPE ignored (it ends by its output breaking). The meter
// is the throttle when spec.rate_limit is set (node, else `pv -L`), else `pv -n -b -i 1` when
// `use_pv`; each prints the running byte count on stderr once a second. With `tag` (a stream
// in one of several lanes that run at once), pv's counts come as `zmigrate-stream-bytes TAG N`
// lines (parse_tagged_count), so concurrent streams' counts are told apart.
// Whether the pipeline's stderr carries byte counts (parse_pv_line).
bool pipeline_counts(const DataPathSpec& spec, bool use_pv);
// The throttle run on node.js: `node -e SCRIPT RATE` copies stdin to stdout at RATE bytes/s at
// most, in the pipe's chunks (64 KiB), with at most 100 ms of unused budget carried over (so an
// idle moment never turns into a burst), and prints the byte count on stderr once a second and
// at the end.
const std::string& throttle_script();
remote::Command send_pipeline(const DataPathSpec& spec, const remote::Argv& zfs_send,
                              const std::string& dataset, bool use_pv,
                              std::optional<std::size_t> tag = std::nullopt);
// Several streams of one lane (sends[i] for each i of `members`, in order: a dataset, then the
// children it creates, or one dataset's streams one after the other) through one ssh session:
// `sh -c '<send 1 [| tagged pv]> && <send 2 ...>' | ssh ... recv DS1 DS2`, the forced command
// receiving them one after the other from the one input. One session and one forced command
// instead of one per stream, and each sender starts while the receive before it finishes. Not
// with a rate limit (its meter's counts are untagged). With `use_pv`, counts are tagged by i.
remote::Command compound_pipeline(const DataPathSpec& spec, const std::vector<StreamSend>& sends,
                                  const std::vector<std::size_t>& members, bool use_pv);
// Parses a `zmigrate-stream-bytes TAG N` line of a tagged pipeline: {TAG, N}.
std::optional<std::pair<std::size_t, std::uint64_t>> parse_tagged_count(std::string_view line);
// The measurement pipeline run on the source: `mib` MiB of zeros from dd into ssh ... measure.
remote::Command measure_pipeline(const DataPathSpec& spec, std::uint64_t mib);
// Parses one line of `pv -n -b` output (a byte count); nullopt for any other stderr line.
std::optional<std::uint64_t> parse_pv_line(std::string_view line);

// How old a parked path may be for a command to adopt it: its key line expires 48 hours after
// its install, so an adopted path leaves a day for the command's streams to authenticate.
inline constexpr std::chrono::hours k_park_max_age{24};
// What a path's install depends on, not its id (ends and their boots, addresses, port and user,
// pinned host key, datasets, the forced command's text, the keys file): two specs with one
// fingerprint set up interchangeable paths.
std::string path_fingerprint(const DataPathSpec& spec);
// The parked path among `live` (the live ledger rows of spec.migration_id) that a path for
// `spec` from `source_host` to `target_host` may adopt at `now`: every row of the path parked
// with spec's fingerprint, its dir on both nodes and its key line on the target in the ledger,
// none older than k_park_max_age, both boots known. The newest such; nullopt when there is none.
std::optional<std::string> adoptable_path(const std::vector<state::Artefact>& live,
                                          const DataPathSpec& spec, const std::string& source_host,
                                          const std::string& target_host,
                                          std::chrono::system_clock::time_point now);

class DataPath final : public Link {
public:
  // `source`/`target` are the operator sessions to the two nodes.
  DataPath(Context& ctx, DataPathSpec spec, remote::Runner& source, remote::Runner& target);
  ~DataPath() override; // best-effort close() if still open; never throws
  DataPath(const DataPath&) = delete;
  DataPath& operator=(const DataPath&) = delete;

  // Adopt the path an earlier command parked when adoptable_path() names one (no command);
  // else make the key, install it on the target and on the source, start the multiplexing
  // master. Leftovers of every other path of this migration go first (from the ledger, ending
  // their processes).
  void open() override;
  // Send one stream. `on_bytes` gets the running byte count about once a second. When the send
  // fails or throws, this path's processes on both nodes are ended (best effort) first.
  TransferResult send(const Stream& stream, const remote::Argv& zfs_send, bool use_pv,
                      const std::function<void(std::uint64_t)>& on_bytes) override;
  // Every stream and the tail in one command on the source: each stream's pipeline, after each
  // a marker line on stderr (zmigrate-stream-sent N) that tells which arrived, then the tail.
  // Streams of different lanes (StreamSend::lane) run at once (remote::append_concurrent), the
  // tail only once every lane succeeded; with a rate limit, one lane (the limit is per stream).
  // `alongside` is one more lane of its own, its marker (zmigrate-alongside-done) after it.
  SendsResult send_streams(const std::vector<StreamSend>& sends, bool use_pv,
                           const remote::Command& tail, const remote::Command& alongside,
                           const std::function<void(std::size_t, std::uint64_t)>& on_bytes,
                           const std::function<void()>& on_arrived = {}) override;
  MeasureResult measure(std::uint64_t mib) override;
  // Remove the key, the known_hosts pin, the forced command and the master. Idempotent.
  void close() override;
  // Mark the rows parked and leave everything installed (the master ends by itself 120 s after
  // its last stream). A measurement's path is closed instead.
  void park() override;
  // True when this path is open for `migration_id`, from `source` to `target`, and its forced
  // command accepts every dataset of `datasets`.
  bool serves(const std::string& migration_id, const Node& source, const Node& target,
              const std::vector<std::string>& datasets) const override;

  const std::string& path_id() const { return m_spec.path_id; }

  // Remove every data-path artefact of `migration_id` on both nodes (ledger-driven cleanup after
  // a crash): for each live row, exactly the dir and the key line the row names. Rows of a path
  // that is open in this process are left to its close(). Never throws for a node that is
  // unreachable or refuses: leaves its ledger rows live instead (and warns).
  // With Leftovers::unparked, the rows of a parked path stay too (the caller's link adopts it).
  static void remove_leftovers(Context& ctx, const std::string& migration_id,
                               remote::Runner& source, remote::Runner& target, Leftovers which);

private:
  void kill_processes() noexcept;
  // The error of a stream that did not arrive whole (`errors`: its stderr lines).
  TransientError send_failure(const std::string& dataset, int exit_status,
                              std::string errors) const;

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
