// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/data_path.hpp>
#include <zmigrate/remote/keygen.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/zfs/names.hpp>

#include <charconv>

#include <fmt/format.h>

namespace zmigrate::migration {

namespace {

// Constant scripts run as `sh -c SCRIPT sh ARG...`: values arrive as positional parameters and
// are never spliced into shell text.
constexpr const char* k_write_file_script =
    "umask 077; mkdir -p \"$1\" && chmod 700 \"$1\" && cat > \"$1/$2.tmp\" && "
    "chmod \"$3\" \"$1/$2.tmp\" && mv -f \"$1/$2.tmp\" \"$1/$2\"";
constexpr const char* k_append_key_script =
    "umask 077; d=$(dirname \"$1\"); mkdir -p \"$d\" && chmod 700 \"$d\" && "
    "{ [ -f \"$1\" ] && grep -q -F -e \"$2\" \"$1\" && exit 0; cat >> \"$1\"; }";
constexpr const char* k_remove_key_script =
    "f=$1; [ -f \"$f\" ] || exit 0; grep -q -F -e \"$2\" \"$f\" || exit 0; "
    "t=\"$f.zmigrate.$$\"; grep -v -F -e \"$2\" \"$f\" > \"$t\"; chmod 600 \"$t\" && mv -f \"$t\" \"$f\"";

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
  return fmt::format("from=\"{}\",no-pty,no-port-forwarding,no-agent-forwarding,"
                     "no-X11-forwarding,no-user-rc,command=\"{}/recv\" {} {}\n",
                     spec.source_addr, private_dir(spec.migration_id), ssh_key_body(public_key),
                     key_marker(spec.migration_id));
}

remote::Argv source_ssh_argv(const DataPathSpec& spec, const std::vector<std::string>& request) {
  check_token("target address", spec.target_addr);
  check_token("target user", spec.target_user);
  const std::string dir = private_dir(spec.migration_id);
  remote::Argv argv{"ssh",
                    "-i",
                    dir + "/id_ed25519",
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                    "UserKnownHostsFile=" + dir + "/known_hosts",
                    "-o",
                    "GlobalKnownHostsFile=/dev/null",
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "Compression=no",
                    "-o",
                    "Ciphers=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr",
                    "-o",
                    "ServerAliveInterval=5",
                    "-o",
                    "ServerAliveCountMax=3",
                    "-o",
                    "ConnectTimeout=10",
                    "-o",
                    "ControlPath=" + dir + "/master",
                    "-o",
                    "LogLevel=ERROR",
                    "-p",
                    std::to_string(spec.target_port),
                    "-l",
                    spec.target_user,
                    spec.target_addr};
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

void write_remote_file(remote::Runner& runner, const std::string& dir, const std::string& name,
                       const std::string& content, const std::string& mode) {
  remote::RunOptions opts;
  opts.stdin_data = content;
  opts.timeout = std::chrono::seconds(30);
  remote::run_checked(runner, remote::Command({"sh", "-c", k_write_file_script, "sh", dir, name, mode}),
                      opts);
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

  write_remote_file(m_target, dir, "recv", recv_script(m_spec), "700");
  {
    remote::RunOptions opts;
    opts.stdin_data = authorized_keys_line(m_spec, key.public_line);
    opts.timeout = std::chrono::seconds(30);
    remote::run_checked(m_target,
                        remote::Command({"sh", "-c", k_append_key_script, "sh",
                                         m_spec.authorized_keys, key_marker(m_spec.migration_id)}),
                        opts);
  }
  write_remote_file(m_source, dir, "id_ed25519", key.private_openssh, "600");
  write_remote_file(m_source, dir, "known_hosts",
                    fmt::format("{} {}\n", m_spec.target_port == 22
                                               ? m_spec.target_addr
                                               : fmt::format("[{}]:{}", m_spec.target_addr,
                                                             m_spec.target_port),
                                ssh_key_body(m_spec.target_host_key)),
                    "600");

  // Start a multiplexing master now so each stream (and the switch's final one) skips the ssh
  // handshake. Its stdio goes to /dev/null so it never holds our channel open.
  remote::Argv master = source_ssh_argv(m_spec, {});
  master.insert(master.begin() + 1, {"-o", "ControlMaster=yes", "-o", "ControlPersist=120", "-N",
                                     "-f"});
  remote::Command cmd(master);
  cmd.stdin_path = "/dev/null";
  cmd.stdout_path = "/dev/null";
  cmd.stderr_to_stdout_last = true;
  remote::RunOptions opts;
  opts.timeout = std::chrono::seconds(20);
  const remote::Result r = m_source.run(cmd, opts);
  if (!r.ok()) {
    // Not fatal: every send connects on its own when there is no master.
    m_ctx.log.warn("data path: ssh master did not start; streams will connect directly",
                   {{"exit_status", r.exit_status}});
  }
}

TransferResult DataPath::send(const remote::Argv& zfs_send, const std::string& dataset,
                              bool use_pv, const std::function<void(std::uint64_t)>& on_bytes) {
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
  for (const state::Artefact& a : ctx.store.live_artefacts(migration_id)) {
    if (a.kind != "data_path_dir" && a.kind != "authorized_key") {
      continue;
    }
    if (a.host != source.host() && a.host != target.host()) {
      continue;
    }
    remote::Runner& runner = a.host == source.host() ? source : target;
    try {
      remote::Result r;
      if (a.kind == "authorized_key") {
        r = runner.run(remote::Command({"sh", "-c", k_remove_key_script, "sh", a.name, marker}));
      } else {
        {
          // End the multiplexing master, if any, before its socket goes away.
          remote::Argv stop{"ssh", "-o", "ControlPath=" + dir + "/master", "-O", "exit", "x"};
          remote::Command c(stop);
          c.stdin_path = "/dev/null";
          c.stdout_path = "/dev/null";
          c.stderr_to_stdout_last = true;
          runner.run(c);
        }
        r = runner.run(remote::Command({"rm", "-rf", dir}));
      }
      if (r.ok()) {
        ctx.store.mark_artefact_removed(a.id);
      } else {
        ctx.log.warn("data path: could not remove artefact",
                     {{"kind", a.kind}, {"host", runner.host()}, {"err", r.err}});
      }
    } catch (const Error& e) {
      ctx.log.warn("data path: node unreachable during cleanup; will retry next command",
                   {{"kind", a.kind}, {"error", e.what()}});
    }
  }
}

} // namespace zmigrate::migration
