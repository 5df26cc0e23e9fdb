// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/remote/capture.hpp>
#include <zmigrate/remote/ssh_runner.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <fmt/format.h>
#include <libssh/libssh.h>

namespace zmigrate::remote {

namespace {

using Clock = std::chrono::steady_clock;

struct KeyFree {
  void operator()(ssh_key key) const { ssh_key_free(key); }
};
using Key = std::unique_ptr<ssh_key_struct, KeyFree>;

std::chrono::milliseconds since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

std::string home_dir() {
  const char* home = std::getenv("HOME");
  return (home != nullptr && *home != '\0') ? std::string(home) : std::string("/root");
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::string seconds_text(std::chrono::milliseconds d) {
  return d.count() % 1000 == 0 ? fmt::format("{}", d.count() / 1000)
                               : fmt::format("{:.3g}", static_cast<double>(d.count()) / 1000.0);
}

// "ssh-ed25519 SHA256:...": what ssh-keyscan | ssh-keygen -lf - shows, for the operator to compare.
std::string server_key_description(ssh_session session) {
  ssh_key raw = nullptr;
  if (ssh_get_server_publickey(session, &raw) != SSH_OK || raw == nullptr) {
    return "an unreadable key";
  }
  Key key(raw);
  unsigned char* hash = nullptr;
  size_t hash_len = 0;
  if (ssh_get_publickey_hash(key.get(), SSH_PUBLICKEY_HASH_SHA256, &hash, &hash_len) != 0) {
    return ssh_key_type_to_char(ssh_key_type(key.get()));
  }
  char* fingerprint = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hash_len);
  ssh_clean_pubkey_hash(&hash);
  std::string text = fmt::format("{} {}", ssh_key_type_to_char(ssh_key_type(key.get())),
                                 fingerprint != nullptr ? fingerprint : "?");
  ssh_string_free_char(fingerprint);
  return text;
}

// Dead peers are found by the kernel even while a command is silent for hours (zfs recv).
void set_tcp_keepalive(socket_t fd, std::chrono::seconds idle) {
  if (fd < 0 || idle.count() <= 0) {
    return;
  }
  const int on = 1;
  const int idle_s = static_cast<int>(idle.count());
  const int interval = std::max(1, idle_s / 3);
  const int count = 3;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
#ifdef TCP_KEEPIDLE
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof idle_s);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
#endif
}

// Acknowledge the node's segments at once instead of up to 40 ms later (Linux's delayed ACK;
// the setting lapses, so it is made again before each wait). sshd leaves Nagle on for commands
// without a terminal: its next small write waits for our ACK of the last one, which made the
// first channel open after the login wait for the timer (measured: 45 ms, 8 ms with this).
void quick_ack(socket_t fd) {
#ifdef TCP_QUICKACK
  if (fd >= 0) {
    const int on = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &on, sizeof on);
  }
#else
  (void)fd;
#endif
}

// An exec channel that is closed and freed whatever way run() leaves.
class Channel {
public:
  explicit Channel(ssh_session session) : m_channel(ssh_channel_new(session)) {}
  ~Channel() {
    if (m_channel != nullptr) {
      if (ssh_channel_is_open(m_channel) != 0) {
        ssh_channel_close(m_channel);
      }
      ssh_channel_free(m_channel);
    }
  }
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;
  ssh_channel get() const { return m_channel; }

  // Ask sshd to signal the command, then close the channel. OpenSSH refuses signal requests
  // for root sessions, so closing is what usually ends it: the command gets EOF on stdin and
  // SIGPIPE on its next write. One that does neither keeps running; callers clean up.
  void abort() {
    if (m_channel != nullptr && ssh_channel_is_open(m_channel) != 0) {
      ssh_channel_request_send_signal(m_channel, "TERM");
      ssh_channel_close(m_channel);
    }
  }

private:
  ssh_channel m_channel;
};

} // namespace

struct SshRunner::Impl {
  SshOptions options;
  Logger& log;
  std::string label;
  ssh_session session = nullptr;
  // One command at a time on the session: libssh sessions are not safe for use from two
  // threads, and a caller that reaches one node from two threads (a failure path killing the
  // data path's processes while a prune runs there) waits instead of corrupting it. Recursive:
  // a callback of a running command may run another one on the same thread.
  std::recursive_mutex mutex;
  // Set when the session failed; the next connect() replaces it. The session is not freed at
  // once because channels on it may still be alive on the unwinding stack.
  bool broken = false;

  Impl(SshOptions opts, Logger& logger)
      : options(std::move(opts)), log(logger),
        label(options.host_label.empty() ? options.address : options.host_label) {}

  ~Impl() { close(); }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  std::string known_hosts() const {
    return options.known_hosts.empty() ? home_dir() + "/.ssh/known_hosts" : options.known_hosts;
  }

  // "cn1 (10.99.0.11)": what failed, for every error message.
  std::string subject() const {
    return label == options.address ? options.address
                                    : fmt::format("{} ({})", label, options.address);
  }

  [[noreturn]] void fail(const std::string& why) {
    broken = true;
    throw Error(ExitCode::remote, subject(), why);
  }

  // Only when no Channel of this session exists any more.
  void close() {
    if (session != nullptr) {
      ssh_disconnect(session);
      ssh_free(session);
      session = nullptr;
    }
    broken = false;
  }

  bool alive() const { return session != nullptr && !broken && ssh_is_connected(session) != 0; }

  void connect() {
    if (alive()) {
      return;
    }
    close();
    const Clock::time_point start = Clock::now();
    session = ssh_new();
    if (session == nullptr) {
      throw Error(ExitCode::remote, subject(), "libssh could not create a session");
    }
    set_options();
    if (ssh_connect(session) != SSH_OK) {
      fail(connect_error(ssh_get_error(session)));
    }
    verify_host_key();
    const std::string method = authenticate();
    set_tcp_keepalive(ssh_get_fd(session), options.keepalive);
    log.debug("ssh session opened", {{"host", label},
                                     {"address", options.address},
                                     {"port", options.port},
                                     {"user", options.user},
                                     {"auth", method},
                                     {"duration_ms", since(start).count()}});
  }

  void set_options() {
    const std::string hosts = known_hosts();
    const int port = options.port;
    // Our config is the whole truth: ~/.ssh/config must not redirect hosts or keys.
    const bool process_config = false;
    const int nodelay = 1;
    const long timeout_s = static_cast<long>(options.connect_timeout.count() / 1000);
    const long timeout_us = static_cast<long>((options.connect_timeout.count() % 1000) * 1000);
    const bool ok = ssh_options_set(session, SSH_OPTIONS_HOST, options.address.c_str()) == 0 &&
                    ssh_options_set(session, SSH_OPTIONS_PORT, &port) == 0 &&
                    ssh_options_set(session, SSH_OPTIONS_USER, options.user.c_str()) == 0 &&
                    ssh_options_set(session, SSH_OPTIONS_PROCESS_CONFIG, &process_config) == 0 &&
                    // One file, the one named in messages, for both lookups.
                    ssh_options_set(session, SSH_OPTIONS_KNOWNHOSTS, hosts.c_str()) == 0 &&
                    ssh_options_set(session, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, hosts.c_str()) == 0 &&
                    ssh_options_set(session, SSH_OPTIONS_TIMEOUT, &timeout_s) == 0 &&
                    ssh_options_set(session, SSH_OPTIONS_TIMEOUT_USEC, &timeout_us) == 0 &&
                    ssh_options_set(session, SSH_OPTIONS_NODELAY, &nodelay) == 0;
    if (!ok) {
      fail(fmt::format("invalid ssh options (user '{}', port {}): {}", options.user, port,
                       ssh_get_error(session)));
    }
  }

  std::string connect_error(const std::string& error) const {
    const std::string where = fmt::format("{}:{}", options.address, options.port);
    if (error.find("refused") != std::string::npos) {
      return fmt::format("connection refused: is sshd running on {}?", where);
    }
    if (error.find("imeout") != std::string::npos || error.find("timed out") != std::string::npos) {
      return fmt::format("no answer from {} within {} s: is the node up and the address right? "
                         "({})",
                         where, seconds_text(options.connect_timeout), error);
    }
    if (error.find("resolve") != std::string::npos ||
        error.find("Name or service") != std::string::npos ||
        error.find("getaddrinfo") != std::string::npos) {
      return fmt::format("cannot resolve '{}': check the address ({})", options.address, error);
    }
    return fmt::format("cannot connect to {}: {}", where, error);
  }

  void verify_host_key() {
    const std::string hosts = known_hosts();
    switch (ssh_session_is_known_server(session)) {
    case SSH_KNOWN_HOSTS_OK:
      return;
    case SSH_KNOWN_HOSTS_CHANGED:
      fail(fmt::format("HOST KEY CHANGED: the server offers {}, which differs from the key in {}; "
                       "this may be an attack or a reinstalled node: verify the fingerprint on "
                       "the node's console before replacing the line",
                       server_key_description(session), hosts));
    case SSH_KNOWN_HOSTS_OTHER:
      fail(fmt::format("HOST KEY CHANGED: the server offers {}, but {} holds a key of another "
                       "type for it; verify the fingerprint on the node's console before "
                       "adding the new key",
                       server_key_description(session), hosts));
    case SSH_KNOWN_HOSTS_UNKNOWN:
      if (!file_exists(hosts)) {
        break; // libssh reports a missing file as UNKNOWN: say which it is
      }
      fail(fmt::format("host key not in {}; add it with ssh-keyscan after verifying the "
                       "fingerprint (the server offers {})",
                       hosts, server_key_description(session)));
    case SSH_KNOWN_HOSTS_NOT_FOUND:
      break;
    case SSH_KNOWN_HOSTS_ERROR:
      fail(fmt::format("cannot check the host key against {}: {}", hosts, ssh_get_error(session)));
    }
    fail(fmt::format("host key not in {} (the file does not exist); add it with ssh-keyscan "
                     "after verifying the fingerprint (the server offers {})",
                     hosts, server_key_description(session)));
  }

  // Returns a name for the method that worked (for the log).
  std::string authenticate() {
    const std::string who = fmt::format("{}@{}", options.user, options.address);
    if (!options.identity_file.empty()) {
      ssh_key raw = nullptr;
      if (ssh_pki_import_privkey_file(options.identity_file.c_str(), nullptr, nullptr, nullptr,
                                      &raw) != SSH_OK) {
        fail(fmt::format("cannot read the private key {}: check that it exists, is readable "
                         "and has no passphrase",
                         options.identity_file));
      }
      Key key(raw);
      const int rc = ssh_userauth_publickey(session, nullptr, key.get());
      if (rc != SSH_AUTH_SUCCESS) {
        fail(fmt::format("authentication failed for {}: check the key in {} (is its public key "
                         "in ~{}/.ssh/authorized_keys there?){}",
                         who, options.identity_file, options.user, auth_detail(rc)));
      }
      return "identity";
    }
    const char* agent = std::getenv("SSH_AUTH_SOCK");
    if (agent != nullptr && *agent != '\0' &&
        ssh_userauth_agent(session, nullptr) == SSH_AUTH_SUCCESS) {
      return "agent";
    }
    if (!alive()) {
      fail(fmt::format("connection lost during authentication: {}", ssh_get_error(session)));
    }
    for (const char* name : {"id_ed25519", "id_rsa"}) {
      const std::string path = home_dir() + "/.ssh/" + name;
      ssh_key raw = nullptr;
      if (!file_exists(path) ||
          ssh_pki_import_privkey_file(path.c_str(), nullptr, nullptr, nullptr, &raw) != SSH_OK) {
        continue;
      }
      Key key(raw);
      if (ssh_userauth_publickey(session, nullptr, key.get()) == SSH_AUTH_SUCCESS) {
        return path;
      }
    }
    const std::string home = home_dir();
    fail(fmt::format("authentication failed for {}: no key was accepted (tried ssh-agent, "
                     "{}/.ssh/id_ed25519, {}/.ssh/id_rsa); set the ssh identity in the "
                     "configuration or check ~{}/.ssh/authorized_keys there",
                     who, home, home, options.user));
  }

  std::string auth_detail(int rc) const {
    if (rc == SSH_AUTH_PARTIAL) {
      return " (the server wants a further authentication method)";
    }
    if (rc == SSH_AUTH_ERROR) {
      return fmt::format(" ({})", ssh_get_error(session));
    }
    return {};
  }

  // A channel with `text` started on it. Reconnects once when a reused session turns out dead:
  // nothing has run yet, so trying again is safe.
  std::unique_ptr<Channel> start(const std::string& text) {
    const bool reused = alive();
    connect();
    std::unique_ptr<Channel> channel = open_channel();
    if (!channel && reused) {
      log.info("ssh session lost; reconnecting", {{"host", label}, {"address", options.address}});
      close();
      connect();
      channel = open_channel();
    }
    if (!channel) {
      fail(fmt::format("cannot open a channel: {}", ssh_get_error(session)));
    }
    if (ssh_channel_request_exec(channel->get(), text.c_str()) != SSH_OK) {
      const std::string error = ssh_get_error(session);
      channel.reset();
      fail(fmt::format("cannot start the command: {}", error));
    }
    return channel;
  }

  // Opened without blocking, so that our ACK of what the node sent meanwhile goes out at once
  // (quick_ack) instead of with the timer: right after the login, sshd's confirmation waited
  // ~40 ms behind its unacknowledged host-keys message (Nagle), the first command of every
  // session with it. Bounded by the connect timeout, as the blocking open was.
  std::unique_ptr<Channel> open_channel() {
    auto channel = std::make_unique<Channel>(session);
    if (channel->get() == nullptr) {
      return nullptr;
    }
    const Clock::time_point deadline = Clock::now() + options.connect_timeout;
    ssh_set_blocking(session, 0);
    int rc = SSH_AGAIN;
    while ((rc = ssh_channel_open_session(channel->get())) == SSH_AGAIN &&
           Clock::now() < deadline) {
      pollfd pfd{ssh_get_fd(session), POLLIN, 0};
      quick_ack(pfd.fd);
      ::poll(&pfd, 1, 50);
    }
    ssh_set_blocking(session, 1);
    if (rc != SSH_OK) {
      return nullptr;
    }
    return channel;
  }

  [[noreturn]] void lost(const Command& cmd, Result& result, Clock::time_point start_time) {
    const std::string error = session != nullptr ? ssh_get_error(session) : "session closed";
    result.duration = since(start_time);
    log.warn("remote command lost", {{"host", label},
                                     {"argv", render_for_log(cmd)},
                                     {"duration_ms", result.duration.count()},
                                     {"bytes_out", result.bytes_out},
                                     {"bytes_err", result.bytes_err},
                                     {"error", error}});
    fail(fmt::format("connection lost while running '{}' ({}); the command may still be running "
                     "there",
                     command_summary(cmd), error));
  }

  // Wait until the socket has data, the deadline passes, or `cap` elapses (libssh may hold
  // already-read packets, so never sleep long on the socket alone).
  void wait_socket(bool has_deadline, Clock::time_point deadline) {
    auto wait = std::chrono::milliseconds(50);
    if (has_deadline) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      wait = std::clamp(left, std::chrono::milliseconds(0), wait);
    }
    pollfd pfd{ssh_get_fd(session), POLLIN, 0};
    ::poll(&pfd, 1, static_cast<int>(wait.count()));
  }

  Result run(const Command& cmd, const RunOptions& options_) {
    const std::string text = render(cmd);
    const Clock::time_point start_time = Clock::now();
    std::unique_ptr<Channel> channel = start(text);
    // The timeout is for the command; connecting has its own (SshOptions::connect_timeout).
    const bool has_deadline = options_.timeout.count() > 0;
    const Clock::time_point deadline = Clock::now() + options_.timeout;
    Result result;
    OutputCollector collector(options_, result);
    const auto finish = [&]() -> Result {
      collector.finish();
      result.duration = since(start_time);
      log_command(log, label, cmd, result);
      return result;
    };
    // An interrupt that arrives while the command runs closes its channel (the session stays
    // usable for the cleanup that follows) and ends run() with Error(ExitCode::interrupted).
    const bool interruptible = interruptible_now(options_);
    const auto check_interrupt = [&] {
      if (interruptible && interrupt_requested()) {
        channel->abort();
        finish();
        throw_interrupted(label, cmd, result.duration);
      }
    };

    ssh_channel ch = channel->get();
    std::string_view pending_in = options_.stdin_data;
    bool eof_sent = false;
    bool out_done = false;
    bool err_done = false;
    std::array<char, 65536> buf{};
    try {
      while (!(out_done && err_done)) {
        bool progress = false;
        for (const int is_stderr : {0, 1}) {
          bool& done = is_stderr != 0 ? err_done : out_done;
          // A bounded number of reads per stream and round: a flood on one stream must not
          // starve the other (their window is shared), stdin, or the deadline check.
          for (int reads = 0; !done && reads < 16; ++reads) {
            const int n = ssh_channel_read_nonblocking(
                ch, buf.data(), static_cast<uint32_t>(buf.size()), is_stderr);
            if (n == SSH_EOF) {
              done = true;
            } else if (n == SSH_ERROR) {
              lost(cmd, result, start_time);
            } else if (n == 0) {
              if (ssh_channel_is_eof(ch) != 0 || ssh_channel_is_closed(ch) != 0) {
                done = ssh_channel_poll(ch, is_stderr) <= 0;
              }
              break;
            } else {
              const std::string_view chunk(buf.data(), static_cast<std::size_t>(n));
              is_stderr != 0 ? collector.add_stderr(chunk) : collector.add_stdout(chunk);
              progress = true;
            }
          }
        }
        // Write only what the remote window takes, so a command that is not reading its stdin
        // (busy writing output) can never block us.
        if (!pending_in.empty() && ssh_channel_is_open(ch) != 0) {
          const uint32_t window = ssh_channel_window_size(ch);
          const std::size_t take = std::min<std::size_t>({pending_in.size(), window, 32768});
          if (take > 0) {
            const int n = ssh_channel_write(ch, pending_in.data(), static_cast<uint32_t>(take));
            if (n == SSH_ERROR) {
              lost(cmd, result, start_time);
            }
            pending_in.remove_prefix(static_cast<std::size_t>(n));
            progress = true;
          }
        }
        if (!eof_sent && (pending_in.empty() || ssh_channel_is_open(ch) == 0)) {
          if (ssh_channel_is_open(ch) != 0) {
            ssh_channel_send_eof(ch);
          }
          eof_sent = true;
        }
        if (out_done && err_done) {
          break;
        }
        check_interrupt();
        if (has_deadline && Clock::now() >= deadline) {
          channel->abort();
          mark_timed_out(result, options_.timeout);
          return finish();
        }
        if (!progress) {
          wait_socket(has_deadline, deadline);
        }
      }
      // Output is over; the exit status follows (or the channel closes on a signal). Poll
      // without blocking so the deadline still holds for a command that closed its output.
      while (true) {
        ssh_set_blocking(session, 0);
        const int status = ssh_channel_get_exit_status(ch);
        ssh_set_blocking(session, 1);
        if (status >= 0 || ssh_channel_is_closed(ch) != 0) {
          result.exit_status = status >= 0 ? status : -1;
          break;
        }
        if (!alive()) {
          lost(cmd, result, start_time);
        }
        check_interrupt();
        if (has_deadline && Clock::now() >= deadline) {
          channel->abort();
          mark_timed_out(result, options_.timeout);
          return finish();
        }
        wait_socket(has_deadline, deadline);
      }
    } catch (const Error&) {
      throw;
    } catch (...) {
      // A callback failed: stop the command rather than leave it writing into nowhere.
      channel->abort();
      throw;
    }
    return finish();
  }
};

SshRunner::SshRunner(SshOptions options, Logger& log)
    : m_impl(std::make_unique<Impl>(std::move(options), log)) {}

SshRunner::~SshRunner() = default;

const std::string& SshRunner::host() const {
  return m_impl->label;
}

Result SshRunner::run(const Command& cmd, const RunOptions& options) {
  const std::lock_guard<std::recursive_mutex> lock(m_impl->mutex);
  return m_impl->run(cmd, options);
}

void SshRunner::connect() {
  const std::lock_guard<std::recursive_mutex> lock(m_impl->mutex);
  m_impl->connect();
}

void SshRunner::disconnect() {
  const std::lock_guard<std::recursive_mutex> lock(m_impl->mutex);
  m_impl->close();
}

} // namespace zmigrate::remote
