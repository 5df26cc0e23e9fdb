// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/remote/capture.hpp>
#include <zmigrate/remote/local_runner.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <utility>

#include <fmt/format.h>

extern char** environ;

namespace zmigrate::remote {

namespace {

using Clock = std::chrono::steady_clock;

class Fd {
public:
  Fd() = default;
  explicit Fd(int fd) : m_fd(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& other) noexcept : m_fd(std::exchange(other.m_fd, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    reset(std::exchange(other.m_fd, -1));
    return *this;
  }
  int get() const { return m_fd; }
  explicit operator bool() const { return m_fd >= 0; }
  void reset(int fd = -1) {
    if (m_fd >= 0) {
      ::close(m_fd);
    }
    m_fd = fd;
  }

private:
  int m_fd = -1;
};

struct Pipe {
  Fd read;
  Fd write;
};

Pipe make_pipe() {
  std::array<int, 2> fds{};
  if (::pipe2(fds.data(), O_CLOEXEC) != 0) {
    throw Error(ExitCode::failure, "local command",
                fmt::format("cannot create a pipe: {}", std::strerror(errno)));
  }
  Pipe p;
  p.read.reset(fds[0]);
  p.write.reset(fds[1]);
  return p;
}

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

// The spawned shell and its process group. Whatever way run() leaves (timeout, a callback
// throwing), the destructor makes sure nothing of the group is left running or unreaped.
class Child {
public:
  explicit Child(pid_t pid) : m_pid(pid) {}
  ~Child() {
    if (!m_reaped) {
      ::kill(-m_pid, SIGKILL);
      wait();
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // Blocks until the shell exits; returns its exit status, or -1 when a signal ended it.
  int wait() {
    int status = 0;
    while (::waitpid(m_pid, &status, 0) < 0) {
      if (errno != EINTR) {
        m_reaped = true;
        return -1;
      }
    }
    m_reaped = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  // Like wait(), but gives up at `deadline`; returns nullopt then.
  std::optional<int> wait_until(Clock::time_point deadline) {
    std::chrono::milliseconds nap(1);
    while (true) {
      int status = 0;
      const pid_t r = ::waitpid(m_pid, &status, WNOHANG);
      if (r == m_pid) {
        m_reaped = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      if (r < 0 && errno != EINTR) {
        m_reaped = true;
        return -1;
      }
      if (Clock::now() >= deadline) {
        return std::nullopt;
      }
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::milliseconds(50));
    }
  }
  // SIGTERM to the group, SIGKILL after `grace` if the shell is still there; then reaped.
  void terminate(std::chrono::milliseconds grace) {
    ::kill(-m_pid, SIGTERM);
    const Clock::time_point deadline = Clock::now() + grace;
    int status = 0;
    while (Clock::now() < deadline) {
      const pid_t r = ::waitpid(m_pid, &status, WNOHANG);
      if (r == m_pid || (r < 0 && errno != EINTR)) {
        m_reaped = true;
        break;
      }
      ::usleep(10000);
    }
    // Grandchildren may ignore SIGTERM even when the shell is gone.
    ::kill(-m_pid, SIGKILL);
    if (!m_reaped) {
      wait();
    }
  }

private:
  pid_t m_pid;
  bool m_reaped = false;
};

pid_t spawn_shell(const std::string& text, const Pipe& in, const Pipe& out, const Pipe& err) {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_adddup2(&actions, in.read.get(), STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out.write.get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err.write.get(), STDERR_FILENO);
  // Own process group, so a timeout can kill the whole pipeline; default signal handling and an
  // empty mask whatever the caller has blocked or ignored (SIGPIPE must end a writer in a pipe).
  sigset_t empty;
  sigset_t defaults;
  sigemptyset(&empty);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGTERM);
  sigaddset(&defaults, SIGHUP);
  sigaddset(&defaults, SIGCHLD);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::string arg0 = "sh";
  std::string arg1 = "-c";
  std::string arg2 = text;
  std::array<char*, 4> argv = {arg0.data(), arg1.data(), arg2.data(), nullptr};
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, "/bin/sh", &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    throw Error(ExitCode::failure, "local command",
                fmt::format("cannot start /bin/sh: {}", std::strerror(rc)));
  }
  return pid;
}

// Write as much of `data` as the pipe takes now. Returns false when the reader is gone. SIGPIPE
// is blocked in this thread for the write and a pending one consumed, so the caller's signal
// setup does not matter.
bool write_some(int fd, std::string_view& data) {
  sigset_t pipe_set;
  sigset_t old_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
  const ssize_t n = ::write(fd, data.data(), data.size());
  const int saved = errno;
  if (n < 0 && saved == EPIPE) {
    sigset_t pending;
    sigpending(&pending);
    if (sigismember(&pending, SIGPIPE)) {
      const timespec zero{0, 0};
      sigtimedwait(&pipe_set, nullptr, &zero);
    }
  }
  pthread_sigmask(SIG_SETMASK, &old_set, nullptr);
  if (n >= 0) {
    data.remove_prefix(static_cast<std::size_t>(n));
    return true;
  }
  return saved == EAGAIN || saved == EINTR;
}

} // namespace

LocalRunner::LocalRunner(Logger& log, std::string label) : m_log(log), m_label(std::move(label)) {}

const std::string& LocalRunner::host() const {
  return m_label;
}

Result LocalRunner::run(const Command& cmd, const RunOptions& options) {
  const std::string text = render(cmd);
  const Clock::time_point start = Clock::now();
  Result result;
  OutputCollector collector(options, result);

  Pipe in = make_pipe();
  Pipe out = make_pipe();
  Pipe err = make_pipe();
  Child child(spawn_shell(text, in, out, err));
  in.read.reset();
  out.write.reset();
  err.write.reset();
  std::string_view pending_in = options.stdin_data;
  if (pending_in.empty()) {
    in.write.reset();
  } else {
    set_nonblocking(in.write.get());
  }
  set_nonblocking(out.read.get());
  set_nonblocking(err.read.get());

  const auto finish = [&](Result& r) {
    collector.finish();
    r.duration = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
    log_command(m_log, m_label, cmd, r);
    return r;
  };
  const bool has_deadline = options.timeout.count() > 0;
  const Clock::time_point deadline = start + options.timeout;
  const bool interruptible = interruptible_now(options);
  // Stop the command and throw, when an interrupt arrived while it ran.
  const auto check_interrupt = [&] {
    if (interruptible && interrupt_requested()) {
      child.terminate(std::chrono::seconds(1));
      collector.finish();
      result.duration = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
      log_command(m_log, m_label, cmd, result);
      throw_interrupted(m_label, cmd, result.duration);
    }
  };
  std::array<char, 65536> buf{};
  while (out.read || err.read) {
    check_interrupt();
    std::array<pollfd, 3> fds{};
    nfds_t n = 0;
    const auto add = [&](const Fd& fd, short events) {
      if (fd) {
        fds[n++] = pollfd{fd.get(), events, 0};
      }
    };
    add(out.read, POLLIN);
    add(err.read, POLLIN);
    add(in.write, POLLOUT);
    int wait_ms = interruptible ? static_cast<int>(k_interrupt_poll.count()) : -1;
    if (has_deadline) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        child.terminate(std::chrono::seconds(1));
        mark_timed_out(result, options.timeout);
        return finish(result);
      }
      wait_ms = wait_ms < 0 ? static_cast<int>(left.count())
                            : std::min(wait_ms, static_cast<int>(left.count()));
    }
    if (::poll(fds.data(), n, wait_ms) < 0) {
      if (errno == EINTR) {
        continue;
      }
      throw Error(ExitCode::failure, m_label, fmt::format("poll failed: {}", std::strerror(errno)));
    }
    for (nfds_t i = 0; i < n; ++i) {
      if (fds[i].revents == 0) {
        continue;
      }
      const int fd = fds[i].fd;
      if (in.write && fd == in.write.get()) {
        if ((fds[i].revents & (POLLERR | POLLHUP)) != 0 || !write_some(fd, pending_in) ||
            pending_in.empty()) {
          in.write.reset();
        }
        continue;
      }
      const ssize_t got = ::read(fd, buf.data(), buf.size());
      if (got < 0 && (errno == EAGAIN || errno == EINTR)) {
        continue;
      }
      const bool is_out = out.read && fd == out.read.get();
      if (got <= 0) {
        (is_out ? out.read : err.read).reset();
        continue;
      }
      const std::string_view chunk(buf.data(), static_cast<std::size_t>(got));
      if (is_out) {
        collector.add_stdout(chunk);
      } else {
        collector.add_stderr(chunk);
      }
    }
  }
  in.write.reset();
  // The shell may outlive its output pipes (it closed them); the deadline and interrupts still
  // hold.
  std::optional<int> status;
  if (!has_deadline && !interruptible) {
    status = child.wait();
  } else {
    while (true) {
      check_interrupt();
      Clock::time_point until = has_deadline ? deadline : Clock::time_point::max();
      if (interruptible) {
        until = std::min(until, Clock::now() + k_interrupt_poll);
      }
      status = child.wait_until(until);
      if (status || (has_deadline && Clock::now() >= deadline)) {
        break;
      }
    }
  }
  if (status) {
    result.exit_status = *status;
  } else {
    child.terminate(std::chrono::seconds(1));
    mark_timed_out(result, options.timeout);
  }
  return finish(result);
}

} // namespace zmigrate::remote
