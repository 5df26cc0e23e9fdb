// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/cli/process_launcher.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

extern char** environ;

namespace zmigrate::cli {

std::vector<std::string> migrate_argv(const std::string& program, const GlobalOptions& globals,
                                      const migration::MigrationRequest& request) {
  std::vector<std::string> argv{program};
  const auto pass = [&argv](const char* flag, const std::string& value) {
    if (!value.empty()) {
      argv.insert(argv.end(), {flag, value});
    }
  };
  for (const LocationOption& o : location_options()) {
    pass(o.flag, globals.*o.member);
  }
  if (globals.take_over) {
    argv.emplace_back("--take-over");
  }
  argv.insert(argv.end(), {"--quiet", "--no-color", "migrate", request.vm_uuid});
  pass("-n", request.target_uuid);
  argv.insert(argv.end(), {"--max-syncs", std::to_string(request.max_syncs), "--converge",
                           std::to_string(request.converge_bytes)});
  if (request.finalize) {
    argv.emplace_back("--finalize");
  }
  if (request.force_core) {
    argv.emplace_back("--force-core");
  }
  if (request.allow_older_platform) {
    argv.emplace_back("--allow-older-platform");
  }
  if (request.bwlimit > 0) {
    argv.insert(argv.end(), {"--bwlimit", std::to_string(request.bwlimit)});
  }
  if (request.no_switch) {
    argv.emplace_back("--no-switch");
  }
  pass("--evacuation", request.evacuation);
  return argv;
}

std::string child_error(const std::string& stderr_text, int exit_status) {
  constexpr std::string_view prefix = "zmigrate: error: ";
  std::string last;
  std::string error;
  std::size_t at = 0;
  while (at < stderr_text.size()) {
    const std::size_t nl = std::min(stderr_text.find('\n', at), stderr_text.size());
    const std::string line = stderr_text.substr(at, nl - at);
    if (!line.empty()) {
      last = line;
      if (line.starts_with(prefix)) {
        error = line.substr(prefix.size());
      }
    }
    at = nl + 1;
  }
  if (!error.empty()) {
    return error;
  }
  if (!last.empty()) {
    return last;
  }
  return exit_status == 0 ? std::string() : fmt::format("exited with status {}", exit_status);
}

std::string self_executable() {
  std::string path;
#ifdef __linux__
  std::array<char, 4096> buf{};
  const ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n > 0) {
    path.assign(buf.data(), static_cast<std::size_t>(n));
  }
#elif defined(__sun)
  // illumos: the path exec() was given, made absolute.
  if (const char* name = ::getexecname(); name != nullptr) {
    if (char* real = ::realpath(name, nullptr); real != nullptr) {
      path = real;
      std::free(real);
    }
  }
#endif
  if (path.empty()) {
    throw Error(ExitCode::failure, "evacuate --parallel",
                "cannot find this program's own path; run with --parallel 1");
  }
  return path;
}

ProcessLauncher::ProcessLauncher(std::string program, GlobalOptions globals)
    : m_program(std::move(program)), m_globals(std::move(globals)) {}

ProcessLauncher::~ProcessLauncher() {
  for (Child& c : m_children) {
    if (!c.stopped) {
      ::kill(c.pid, SIGTERM);
    }
  }
  for (Child& c : m_children) {
    int status = 0;
    while (::waitpid(c.pid, &status, 0) < 0 && errno == EINTR) {
    }
    ::close(c.err_fd);
  }
}

void ProcessLauncher::start(const migration::MigrationRequest& request) {
  const std::vector<std::string> args = migrate_argv(m_program, m_globals, request);
  // Its stderr: a temporary file that no name points to, so nothing is left when we end.
  std::FILE* err = std::tmpfile();
  if (err == nullptr) {
    throw Error(ExitCode::failure, fmt::format("evacuate: migration of {}", request.vm_uuid),
                fmt::format("cannot create a temporary file: {}", std::strerror(errno)));
  }
  const int err_fd = ::dup(::fileno(err));
  std::fclose(err);
  if (err_fd < 0) {
    throw Error(ExitCode::failure, fmt::format("evacuate: migration of {}", request.vm_uuid),
                fmt::format("cannot keep a temporary file: {}", std::strerror(errno)));
  }
  ::fcntl(err_fd, F_SETFD, FD_CLOEXEC); // the child gets it as fd 2 only

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, err_fd, STDERR_FILENO);
  sigset_t empty;
  sigset_t defaults;
  sigemptyset(&empty);
  sigemptyset(&defaults);
  for (const int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD}) {
    sigaddset(&defaults, sig);
  }
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<std::string> storage = args;
  std::vector<char*> argv;
  argv.reserve(storage.size() + 1);
  for (std::string& a : storage) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, m_program.c_str(), &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    ::close(err_fd);
    throw Error(ExitCode::failure, fmt::format("evacuate: migration of {}", request.vm_uuid),
                fmt::format("cannot start {}: {}", m_program, std::strerror(rc)));
  }
  m_children.push_back({pid, request.vm_uuid, err_fd, false});
}

namespace {

// SIGCHLD must not be "ignored" for sigtimedwait to see it: a handler that does nothing.
extern "C" void on_child(int) {}

} // namespace

std::optional<migration::MigrationExit> ProcessLauncher::wait_any() {
  // SIGCHLD blocked while this waits, so a child that ends between the reaping pass and the wait
  // stays pending and ends the wait at once. The interrupt signals stay open: their handler ends
  // the wait (EINTR); one that landed just before the wait, or in another thread, is seen within
  // one tick. Either way an interrupt noted since the last return ends the wait (the caller then
  // stops the children and waits again).
  struct sigaction child_action {};
  child_action.sa_handler = on_child;
  sigemptyset(&child_action.sa_mask);
  child_action.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  struct sigaction old_action {};
  ::sigaction(SIGCHLD, &child_action, &old_action);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigset_t old_mask;
  ::pthread_sigmask(SIG_BLOCK, &chld, &old_mask);
  const auto restore = [&] {
    ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    ::sigaction(SIGCHLD, &old_action, nullptr);
  };
  constexpr long k_tick_ns = 100'000'000;
  while (!m_children.empty()) {
    int status = 0;
    pid_t pid = 0;
    auto it = m_children.begin();
    // Only our own children: another child of this process is not ours to reap.
    for (; it != m_children.end(); ++it) {
      pid = ::waitpid(it->pid, &status, WNOHANG);
      if (pid != 0) {
        break;
      }
    }
    if (pid < 0 && errno != EINTR) {
      const int err = errno;
      restore();
      throw Error(ExitCode::failure, "evacuate",
                  fmt::format("waiting for the migrations failed: {}", std::strerror(err)));
    }
    if (pid <= 0) {
      if (interrupt_count() != m_interrupts_seen) {
        m_interrupts_seen = interrupt_count();
        restore();
        return std::nullopt;
      }
      const timespec tick{0, k_tick_ns};
      ::sigtimedwait(&chld, nullptr, &tick); // a child ended, a signal, or a tick
      continue;
    }
    restore();
    migration::MigrationExit done;
    done.vm_uuid = it->vm_uuid;
    if (WIFEXITED(status)) {
      done.exit_status = WEXITSTATUS(status);
    } else {
      done.exit_status = 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    std::string text;
    std::array<char, 4096> buf{};
    ::lseek(it->err_fd, 0, SEEK_SET);
    for (;;) {
      const ssize_t n = ::read(it->err_fd, buf.data(), buf.size());
      if (n > 0) {
        text.append(buf.data(), static_cast<std::size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        break;
      }
    }
    ::close(it->err_fd);
    m_children.erase(it);
    if (done.exit_status != 0) {
      done.error = child_error(text, done.exit_status);
      if (WIFSIGNALED(status)) {
        done.error = fmt::format("{} (ended by signal {})", done.error, WTERMSIG(status));
      }
    }
    return done;
  }
  restore();
  return std::nullopt;
}

void ProcessLauncher::stop_all() {
  for (Child& c : m_children) {
    if (!c.stopped) {
      ::kill(c.pid, SIGTERM);
      c.stopped = true;
    }
  }
}

} // namespace zmigrate::cli
