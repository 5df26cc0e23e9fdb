// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/data_path.hpp>
#include <zmigrate/remote/keygen.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/zfs/names.hpp>

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

namespace zmigrate::migration {

namespace {

// Constant scripts run as `sh -c SCRIPT sh ARG...`: values arrive as positional parameters and
// are never spliced into shell text.
constexpr const char* k_write_file_script =
    "umask 077; mkdir -p \"$1\" && chmod 700 \"$1\" && cat > \"$1/$2.tmp\" && "
    "chmod \"$3\" \"$1/$2.tmp\" && mv -f \"$1/$2.tmp\" \"$1/$2\"";
// Target side of open(): the forced-command script ($4) into $1/recv, then the key line (stdin)
// appended to $2 unless a line with marker $3 is there already.
constexpr const char* k_install_target_script =
    "umask 077; mkdir -p \"$1\" && chmod 700 \"$1\" && printf '%s' \"$4\" > \"$1/recv.tmp\" && "
    "chmod 700 \"$1/recv.tmp\" && mv -f \"$1/recv.tmp\" \"$1/recv\" || exit 1; "
    "d=$(dirname \"$2\"); mkdir -p \"$d\" && chmod 700 \"$d\" || exit 1; "
    "[ -f \"$2\" ] && grep -q -F -e \"$3\" \"$2\" && exit 0; cat >> \"$2\"";
// Source side of open(): the private key (stdin) into $1/id_ed25519, the pinned host key line
// ($2) into $1/known_hosts, then the multiplexing master (the remaining arguments), whose stdio
// goes to /dev/null so it never holds our channel open. Exit 3: master did not start.
constexpr const char* k_install_source_script =
    "umask 077; mkdir -p \"$1\" && chmod 700 \"$1\" && cat > \"$1/id_ed25519.tmp\" && "
    "chmod 600 \"$1/id_ed25519.tmp\" && mv -f \"$1/id_ed25519.tmp\" \"$1/id_ed25519\" && "
    "printf '%s\\n' \"$2\" > \"$1/known_hosts\" && chmod 600 \"$1/known_hosts\" || exit 1; "
    "shift 2; \"$@\" < /dev/null > /dev/null 2>&1 || exit 3";
// Cleanup on one node: end the master of dir $1 and remove the dir (when $1 is not empty), then
// remove the key line with marker $3 from $2 (when $2 is not empty).
constexpr const char* k_cleanup_script =
    "if [ -n \"$1\" ]; then ssh -o ControlPath=\"$1/master\" -O exit x < /dev/null > /dev/null "
    "2>&1; rm -rf \"$1\" || exit 1; fi; f=$2; [ -n \"$f\" ] && [ -f \"$f\" ] || exit 0; "
    "grep -q -F -e \"$3\" \"$f\" || exit 0; t=\"$f.zmigrate.$$\"; "
    "grep -v -F -e \"$3\" \"$f\" > \"$t\"; chmod 600 \"$t\" && mv -f \"$t\" \"$f\"";

void check_token(const std::string& what, const std::string& value) {
  for (char c : value) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-' || c == ':' || c == '_';
    if (!ok) {
      throw UsageError(fmt::format("{} '{}'", what, value),
                       "holds characters not allowed in an address or id");
    }
  }
  if (value.empty()) {
    throw UsageError(what, "is empty");
  }
}

std::string ssh_key_body(const std::string& line) {
  // "ssh-ed25519 AAAA... comment" -> "ssh-ed25519 AAAA..." (validated base64 body).
  const auto sp = line.find(' ');
  if (sp == std::string::npos) {
    throw Error(ExitCode::remote, "host key", fmt::format("'{}' is not an ssh public key", line));
  }
  const std::string type = line.substr(0, sp);
  std::string rest = line.substr(sp + 1);
  const auto sp2 = rest.find(' ');
  if (sp2 != std::string::npos) {
    rest.resize(sp2);
  }
  while (!rest.empty() && (rest.back() == '\n' || rest.back() == '\r')) {
    rest.pop_back();
  }
  for (char c : rest) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '+' || c == '/' || c == '=';
    if (!ok) {
      throw Error(ExitCode::remote, "host key", "key body is not base64");
    }
  }
  check_token("key type", type);
  return type + " " + rest;
}

} // namespace

std::string private_dir(const std::string& migration_id) {
  check_token("migration id", migration_id);
  return "/var/run/zmigrate/" + migration_id;
}

std::string key_marker(const std::string& migration_id) {
  check_token("migration id", migration_id);
  return "zmigrate-ephemeral-" + migration_id;
}

std::string recv_script(const DataPathSpec& spec) {
  std::string cases;
  for (const std::string& ds : spec.datasets) {
    const zfs::DatasetName name(ds); // validated: no quotes, spaces or metacharacters
    cases += fmt::format("'recv {0}') ds='{0}' ;;\n", name.str());
  }
  const std::string recv_flags = spec.resumable ? "-u -s" : "-u";
  const std::string reader =
      spec.watchdog ? fmt::format("mbuffer -q -s 128k -m 16M -W {} | ", spec.watchdog_s) : "";
  return fmt::format(
      "#!/bin/sh\n"
      "# zmigrate {id}: forced command of the ephemeral data-path key.\n"
      "# Receives only into this migration's datasets; anything else is refused.\n"
      "PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
      "case \"$SSH_ORIGINAL_COMMAND\" in\n"
      "{cases}"
      "*) echo \"zmigrate: refused by the forced command of migration {id}\" >&2; exit 126 ;;\n"
      "esac\n"
      "{reader}{zfs} recv {flags} \"$ds\"\n",
      fmt::arg("id", spec.migration_id), fmt::arg("cases", cases), fmt::arg("reader", reader),
      fmt::arg("zfs", spec.zfs_path), fmt::arg("flags", recv_flags));
}

std::string authorized_keys_line(const DataPathSpec& spec, const std::string& public_key) {
  check_token("source address", spec.source_addr);
  // Run by /bin/sh, not executed: /run (and /var/run) is mounted noexec on systemd nodes.
  return fmt::format("from=\"{}\",no-pty,no-port-forwarding,no-agent-forwarding,"
                     "no-X11-forwarding,no-user-rc,command=\"/bin/sh {}/recv\" {} {}\n",
                     spec.source_addr, private_dir(spec.migration_id), ssh_key_body(public_key),
                     key_marker(spec.migration_id));
}

remote::Argv source_ssh_argv(const DataPathSpec& spec, const std::vector<std::string>& request) {
  check_token("target address", spec.target_addr);
  check_token("target user", spec.target_user);
  const std::string dir = private_dir(spec.migration_id);
  remote::Argv argv{
      "ssh", "-i", dir + "/id_ed25519", "-o", "IdentitiesOnly=yes", "-o",
      "UserKnownHostsFile=" + dir + "/known_hosts", "-o", "GlobalKnownHostsFile=/dev/null", "-o",
      "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "Compression=no", "-o",
      "Ciphers=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr", "-o",
      // Classic X25519 first: the hybrid post-quantum default of OpenSSH 9 costs
      // ~150 ms of CPU per handshake here, for a key that lives minutes. Names
      // known to every OpenSSH since 7.4 (an unknown name is a fatal error).
      "KexAlgorithms=curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256", "-o",
      "GSSAPIAuthentication=no", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o",
      "ConnectTimeout=" + std::to_string(spec.connect_timeout_s), "-o",
      "ControlPath=" + dir + "/master", "-o", "LogLevel=ERROR", "-p",
      std::to_string(spec.target_port), "-l", spec.target_user, spec.target_addr};
  argv.insert(argv.end(), request.begin(), request.end());
  return argv;
}

remote::Command send_pipeline(const DataPathSpec& spec, const remote::Argv& zfs_send,
                              const std::string& dataset, bool use_pv) {
  const zfs::DatasetName name(dataset);
  remote::Command cmd(zfs_send);
  if (use_pv) {
    cmd.pipe({"pv", "-n", "-b", "-i", "1"});
  }
  remote::Argv ssh = source_ssh_argv(spec, {"recv", name.str()});
  // ControlMaster=no: use the master when it is up, connect directly when it is not.
  ssh.insert(ssh.begin() + 1, {"-o", "ControlMaster=no"});
  cmd.pipe(ssh);
  return cmd;
}

std::optional<std::uint64_t> parse_pv_line(std::string_view line) {
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) {
    line.remove_suffix(1);
  }
  while (!line.empty() && line.front() == ' ') {
    line.remove_prefix(1);
  }
  if (line.empty()) {
    return std::nullopt;
  }
  std::uint64_t value = 0;
  const auto [ptr, ec] = std::from_chars(line.data(), line.data() + line.size(), value);
  if (ec != std::errc() || ptr != line.data() + line.size()) {
    return std::nullopt;
  }
  return value;
}

// How long a command that sets up or checks the data path may take: the source's ssh to the
// target must connect within spec.connect_timeout_s, the rest is a few process starts.
std::chrono::seconds setup_timeout(const DataPathSpec& spec) {
  return std::chrono::seconds(std::max(30, 3 * spec.connect_timeout_s));
}

void write_remote_file(remote::Runner& runner, const std::string& dir, const std::string& name,
                       const std::string& content, const std::string& mode) {
  remote::RunOptions opts;
  opts.stdin_data = content;
  opts.timeout = std::chrono::seconds(30);
  remote::run_checked(
      runner, remote::Command({"sh", "-c", k_write_file_script, "sh", dir, name, mode}), opts);
}

DataPath::DataPath(Context& ctx, DataPathSpec spec, remote::Runner& source, remote::Runner& target)
    : m_ctx(ctx), m_spec(std::move(spec)), m_source(source), m_target(target) {}

DataPath::~DataPath() {
  try {
    close();
  } catch (const std::exception& e) {
    m_ctx.log.warn("data path: cleanup failed", {{"error", e.what()}});
  }
}

void DataPath::open() {
  remove_leftovers(m_ctx, m_spec.migration_id, m_source, m_target);
  const std::string dir = private_dir(m_spec.migration_id);
  const remote::KeyPair key = remote::generate_ed25519();
  const std::string now = iso8601(m_ctx.clock.wall_now());

  // Ledger first: a crash after any of the writes below leaves a row that tells the next
  // command what to remove.
  auto record = [&](const std::string& kind, const std::string& host, const std::string& name) {
    state::Artefact a;
    a.migration_id = m_spec.migration_id;
    a.kind = kind;
    a.host = host;
    a.name = name;
    a.created = now;
    m_artefacts.push_back(m_ctx.store.record_artefact(a));
  };
  // Rows name the node by its runner's host, so cleanup finds the right node whichever way the
  // data flowed (rollback --keep-changes sends from the target back to the source).
  record("data_path_dir", m_target.host(), dir);
  record("authorized_key", m_target.host(), m_spec.authorized_keys);
  record("data_path_dir", m_source.host(), dir);
  m_open = true;

  // Two commands: the target learns the key (and its forced command) first, then the source
  // gets the private key and the pin and starts the master, which proves the path works.
  {
    remote::RunOptions opts;
    opts.stdin_data = authorized_keys_line(m_spec, key.public_line);
    opts.timeout = setup_timeout(m_spec);
    remote::run_checked(
        m_target,
        remote::Command({"sh", "-c", k_install_target_script, "sh", dir, m_spec.authorized_keys,
                         key_marker(m_spec.migration_id), recv_script(m_spec)}),
        opts);
  }
  const std::string pin = fmt::format(
      "{} {}",
      m_spec.target_port == 22 ? m_spec.target_addr
                               : fmt::format("[{}]:{}", m_spec.target_addr, m_spec.target_port),
      ssh_key_body(m_spec.target_host_key));
  remote::Argv argv{"sh", "-c", k_install_source_script, "sh", dir, pin};
  remote::Argv master = source_ssh_argv(m_spec, {});
  master.insert(master.begin() + 1,
                {"-o", "ControlMaster=yes", "-o", "ControlPersist=120", "-N", "-f"});
  argv.insert(argv.end(), master.begin(), master.end());
  remote::RunOptions opts;
  opts.stdin_data = key.private_openssh;
  opts.timeout = setup_timeout(m_spec);
  const remote::Result r = m_source.run(remote::Command(argv), opts);
  if (r.exit_status == 3) {
    // Not fatal: every send connects on its own when there is no master.
    m_ctx.log.warn("data path: ssh master did not start; streams will connect directly",
                   {{"exit_status", r.exit_status}});
  } else if (!r.ok()) {
    throw Error(ExitCode::remote, fmt::format("{}: installing the data-path key", m_source.host()),
                r.err.empty() ? fmt::format("exit status {}", r.exit_status) : r.err);
  }
}

TransferResult DataPath::send(const remote::Argv& zfs_send, const std::string& dataset, bool use_pv,
                              const std::function<void(std::uint64_t)>& on_bytes) {
  const remote::Command cmd = send_pipeline(m_spec, zfs_send, dataset, use_pv);
  TransferResult out;
  std::string errors;
  remote::RunOptions opts;
  opts.on_stderr_line = [&](std::string_view line) {
    if (auto n = use_pv ? parse_pv_line(line) : std::nullopt) {
      out.bytes = *n;
      out.bytes_counted = true;
      if (on_bytes) {
        on_bytes(*n);
      }
    } else {
      errors.append(line);
      errors.push_back('\n');
    }
  };
  const auto start = m_ctx.clock.now();
  const remote::Result r = m_source.run(cmd, opts);
  out.duration = std::chrono::duration_cast<std::chrono::milliseconds>(m_ctx.clock.now() - start);
  if (!r.ok()) {
    while (!errors.empty() && errors.back() == '\n') {
      errors.pop_back();
    }
    throw TransientError(
        ExitCode::zfs, fmt::format("{}: send {} to {}", m_source.host(), dataset, m_target.host()),
        fmt::format("exit status {}: {}; the next sync resumes from the last snapshot the "
                    "target confirmed",
                    r.exit_status, errors.empty() ? std::string("no error text") : errors));
  }
  return out;
}

bool DataPath::serves(const std::string& migration_id, const remote::Runner& source,
                      const remote::Runner& target,
                      const std::vector<std::string>& datasets) const {
  if (!m_open || migration_id != m_spec.migration_id || &source != &m_source ||
      &target != &m_target) {
    return false;
  }
  for (const std::string& ds : datasets) {
    if (std::find(m_spec.datasets.begin(), m_spec.datasets.end(), ds) == m_spec.datasets.end()) {
      return false;
    }
  }
  return true;
}

void DataPath::close() {
  if (!m_open) {
    return;
  }
  m_open = false;
  remove_leftovers(m_ctx, m_spec.migration_id, m_source, m_target);
}

void DataPath::remove_leftovers(Context& ctx, const std::string& migration_id,
                                remote::Runner& source, remote::Runner& target) {
  const std::string dir = private_dir(migration_id);
  const std::string marker = key_marker(migration_id);
  // One command per node, whatever it holds.
  for (remote::Runner* runner : {&source, &target}) {
    std::vector<state::Artefact> mine;
    std::string dir_arg;
    std::string keys_arg;
    for (const state::Artefact& a : ctx.store.live_artefacts(migration_id)) {
      if (a.host != runner->host()) {
        continue;
      }
      if (a.kind == "data_path_dir") {
        dir_arg = dir;
        mine.push_back(a);
      } else if (a.kind == "authorized_key") {
        keys_arg = a.name;
        mine.push_back(a);
      }
    }
    if (mine.empty()) {
      continue;
    }
    try {
      const remote::Result r = runner->run(
          remote::Command({"sh", "-c", k_cleanup_script, "sh", dir_arg, keys_arg, marker}));
      if (r.ok()) {
        for (const state::Artefact& a : mine) {
          ctx.store.mark_artefact_removed(a.id);
        }
      } else {
        ctx.log.warn("data path: could not remove artefacts",
                     {{"host", runner->host()}, {"err", r.err}});
      }
    } catch (const Error& e) {
      ctx.log.warn("data path: node unreachable during cleanup; will retry next command",
                   {{"host", runner->host()}, {"error", e.what()}});
    }
  }
}

} // namespace zmigrate::migration
