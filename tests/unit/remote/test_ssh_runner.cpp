// SPDX-License-Identifier: MPL-2.0
// SshRunner against a real, throwaway sshd on 127.0.0.1 (own host key, own authorized_keys,
// config under /var/tmp; nothing outside that directory is changed). Skipped with a warning when
// not root or when sshd is not installed.
#include <zmigrate/remote/ssh_runner.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>
#include <zmigrate/util/log.hpp>

#include <arpa/inet.h>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <spawn.h>
#include <sstream>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>

extern char** environ;

using zmigrate::Error;
using zmigrate::ExitCode;
using zmigrate::remote::Command;
using zmigrate::remote::Result;
using zmigrate::remote::RunOptions;
using zmigrate::remote::SshOptions;
using zmigrate::remote::SshRunner;
namespace fs = std::filesystem;

namespace {

struct LogLine {
  zmigrate::LogLevel level;
  std::string msg;
  nlohmann::json fields;
};

class RecordingLogger final : public zmigrate::Logger {
public:
  std::vector<LogLine> lines;
  void log(zmigrate::LogLevel level, std::string_view msg, const nlohmann::json& fields) override {
    lines.push_back(LogLine{level, std::string(msg), fields});
  }
  int count(std::string_view msg) const {
    return static_cast<int>(
        std::count_if(lines.begin(), lines.end(), [&](const LogLine& l) { return l.msg == msg; }));
  }
};

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

pid_t spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  std::vector<std::string> copy = args;
  for (std::string& a : copy) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (::posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
    return -1;
  }
  return pid;
}

int run_and_wait(const std::vector<std::string>& args) {
  const pid_t pid = spawn(args);
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid) {
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

long status_kb(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) {
      return std::stol(line.substr(std::string(key).size()));
    }
  }
  return -1;
}

// Children of `parent` (sshd's per-connection processes).
std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> found;
  for (const fs::directory_entry& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    std::string stat = read_file(e.path() / "stat");
    const std::size_t close_paren = stat.rfind(')');
    if (close_paren == std::string::npos) {
      continue;
    }
    std::istringstream rest(stat.substr(close_paren + 2));
    std::string state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent) {
      found.push_back(std::stoi(name));
    }
  }
  return found;
}

// One sshd on 127.0.0.1:<random port> with its own keys; removed with everything it made.
class LocalSshd {
public:
  LocalSshd() {
    std::string t = "/var/tmp/zmigrate-sshd-XXXXXX";
    if (::mkdtemp(t.data()) == nullptr) {
      return;
    }
    dir = t;
    const std::string keygen = "/usr/bin/ssh-keygen";
    if (run_and_wait(
            {keygen, "-q", "-t", "ed25519", "-N", "", "-f", (dir / "host_key").string()}) != 0 ||
        run_and_wait(
            {keygen, "-q", "-t", "ed25519", "-N", "", "-f", (dir / "host_key2").string()}) != 0 ||
        run_and_wait(
            {keygen, "-q", "-t", "ed25519", "-N", "", "-f", (dir / "id_ed25519").string()}) != 0 ||
        run_and_wait(
            {keygen, "-q", "-t", "ed25519", "-N", "", "-f", (dir / "other_key").string()}) != 0) {
      return;
    }
    write_file(dir / "authorized_keys", read_file(dir / "id_ed25519.pub"));
    for (int attempt = 0; attempt < 5 && pid < 0; ++attempt) {
      port = free_port();
      write_file(dir / "known_hosts", host_line("host_key.pub"));
      write_file(dir / "sshd_config", "Port " + std::to_string(port) +
                                          "\n"
                                          "ListenAddress 127.0.0.1\n"
                                          "HostKey " +
                                          (dir / "host_key").string() +
                                          "\n"
                                          "PidFile " +
                                          (dir / "sshd.pid").string() +
                                          "\n"
                                          "AuthorizedKeysFile " +
                                          (dir / "authorized_keys").string() +
                                          "\n"
                                          "PermitRootLogin prohibit-password\n"
                                          "PasswordAuthentication no\n"
                                          "KbdInteractiveAuthentication no\n"
                                          "UsePAM no\n"
                                          "StrictModes no\n"
                                          "LogLevel VERBOSE\n");
      const Command sshd_cmd{{"/usr/sbin/sshd", "-D", "-f", (dir / "sshd_config").string(), "-E",
                              (dir / "sshd.log").string()}};
      // sshd insists on /run/sshd; when the host has none, give it one in a private mount
      // namespace instead of creating it on the host.
      const pid_t p =
          ::access("/run/sshd", F_OK) == 0
              ? spawn(sshd_cmd.pipeline[0])
              : spawn({"/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                       "mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -m 0755 /run/sshd && "
                       "exec " +
                           zmigrate::remote::render(sshd_cmd)});
      for (int i = 0; i < 250 && p > 0; ++i) {
        // sshd writes its pid file once it listens (probing the port would spawn children).
        if (fs::exists(dir / "sshd.pid")) {
          pid = p;
          break;
        }
        int status = 0;
        if (::waitpid(p, &status, WNOHANG) == p) {
          break; // port taken or bad config; try again
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }
  ~LocalSshd() {
    if (pid > 0) {
      for (pid_t child : children_of(pid)) {
        ::kill(child, SIGKILL);
      }
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
    if (!dir.empty()) {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  }
  LocalSshd(const LocalSshd&) = delete;
  LocalSshd& operator=(const LocalSshd&) = delete;

  bool up() const { return pid > 0; }

  // A known_hosts line for this server with the public key in `pub_file`.
  std::string host_line(const std::string& pub_file) const {
    std::istringstream pub(read_file(dir / pub_file));
    std::string type;
    std::string key;
    pub >> type >> key;
    return "[127.0.0.1]:" + std::to_string(port) + " " + type + " " + key + "\n";
  }

  SshOptions options() const {
    SshOptions o;
    o.address = "127.0.0.1";
    o.host_label = "cn-test";
    o.port = port;
    o.user = "root";
    o.identity_file = (dir / "id_ed25519").string();
    o.known_hosts = (dir / "known_hosts").string();
    o.connect_timeout = std::chrono::seconds(5);
    return o;
  }

  fs::path dir;
  int port = 0;
  pid_t pid = -1;
};

bool can_run_sshd() {
  if (::geteuid() != 0) {
    WARN("SshRunner tests skipped: they need root to run a throwaway sshd");
    return false;
  }
  if (::access("/usr/sbin/sshd", X_OK) != 0 || ::access("/usr/bin/ssh-keygen", X_OK) != 0) {
    WARN("SshRunner tests skipped: /usr/sbin/sshd or ssh-keygen is not installed");
    return false;
  }
  if (::access("/run/sshd", F_OK) != 0 && ::access("/usr/bin/unshare", X_OK) != 0) {
    WARN("SshRunner tests skipped: /run/sshd is missing and unshare is not installed");
    return false;
  }
  return true;
}

std::string error_reason(const std::function<void()>& f, ExitCode* code = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (code != nullptr) {
      *code = e.exit_code();
    }
    return e.what();
  }
  return "(no error)";
}

} // namespace

TEST_CASE("remote::SshRunner::run", "[remote][ssh]") {
  if (!can_run_sshd()) {
    SUCCEED("skipped");
    return;
  }
  LocalSshd sshd;
  REQUIRE(sshd.up());
  RecordingLogger log;
  SshRunner runner(sshd.options(), log);
  CHECK(runner.host() == "cn-test");

  SECTION("exit status, stdout and stderr apart; one session for many commands") {
    Result r = runner.run(Command{{"sh", "-c", "echo out; echo err >&2; exit 3"}});
    CHECK(r.exit_status == 3);
    CHECK(r.out == "out\n");
    CHECK(r.err == "err\n");
    for (int i = 0; i < 5; ++i) {
      CHECK(runner.run(Command{{"printf", "%s", "it's $(x)"}}).out == "it's $(x)");
    }
    CHECK(log.count("ssh session opened") == 1);
    CHECK(log.count("remote command") == 5);
    CHECK(log.count("remote command failed") == 1);
    const std::string sshd_log = read_file(sshd.dir / "sshd.log");
    std::size_t accepted = 0;
    for (std::size_t p = sshd_log.find("Accepted publickey"); p != std::string::npos;
         p = sshd_log.find("Accepted publickey", p + 1)) {
      ++accepted;
    }
    CHECK(accepted == 1);
    const LogLine& last = log.lines.back();
    CHECK(last.fields["host"] == "cn-test");
    CHECK(last.fields["argv"] == "printf %s 'it'\\''s $(x)'");
  }

  SECTION("killed by a signal is -1") {
    CHECK(runner.run(Command{{"kill", "-9", "0"}}).exit_status == -1);
    CHECK(runner.run(Command{{"true"}}).ok()); // the session survives
  }

  SECTION("stdin is delivered, then EOF; big stdin with big stdout does not deadlock") {
    std::string data(3 * 1024 * 1024, 'x');
    for (std::size_t i = 0; i < data.size(); i += 991) {
      data[i] = static_cast<char>('a' + i % 26);
    }
    RunOptions opts;
    opts.stdin_data = data;
    Result r = runner.run(Command{{"cat"}}, opts);
    CHECK(r.ok());
    CHECK(r.out == data);
    CHECK(runner.run(Command{{"cat"}}).out.empty());
    RunOptions ignored;
    ignored.stdin_data = std::string(4 * 1024 * 1024, 'y');
    CHECK(runner.run(Command{{"true"}}, ignored).ok());
  }

  SECTION("big stdout and stderr at the same time") {
    Result r = runner.run(
        Command{{"sh", "-c", "head -c 3000000 /dev/zero >&2 & head -c 3000000 /dev/zero; wait"}});
    CHECK(r.ok());
    CHECK(r.out.size() == 3000000);
    CHECK(r.bytes_err == 3000000);
  }

  SECTION("20 MB of stdout streams through without piling up in memory") {
    std::ofstream("/proc/self/clear_refs") << "5"; // reset the peak RSS
    const long before = status_kb("VmRSS:");
    std::uint64_t seen = 0;
    RunOptions opts;
    opts.on_stdout = [&](std::string_view chunk) { seen += chunk.size(); };
    const auto start = std::chrono::steady_clock::now();
    Result r = runner.run(Command{{"head", "-c", "20000000", "/dev/zero"}}, opts);
    const auto took = std::chrono::steady_clock::now() - start;
    const long peak = status_kb("VmHWM:");
    CHECK(r.ok());
    CHECK(seen == 20000000);
    CHECK(r.out.empty());
    CHECK(r.bytes_out == 20000000);
    INFO("RSS before " << before << " kB, peak " << peak << " kB");
#if defined(__SANITIZE_ADDRESS__)
    (void)peak; // ASan's quarantine keeps freed chunks resident: RSS says nothing here
#else
    CHECK(peak - before < 10 * 1024);
#endif
    CHECK(took < std::chrono::seconds(20));
  }

  SECTION("stderr lines arrive as they come") {
    std::vector<std::string> lines;
    RunOptions opts;
    opts.on_stderr_line = [&](std::string_view l) { lines.emplace_back(l); };
    Result r =
        runner.run(Command{{"sh", "-c", "printf '1\\n2\\n' >&2; sleep 0.1; printf 3 >&2"}}, opts);
    CHECK(r.ok());
    CHECK(lines == std::vector<std::string>{"1", "2", "3"});
  }

  SECTION("timeout ends the command, and the session stays usable") {
    runner.connect();
    RunOptions opts;
    // Generous: sshd here takes ~0.4 s to start a command.
    opts.timeout = std::chrono::milliseconds(1500);
    const auto start = std::chrono::steady_clock::now();
    Result r = runner.run(Command{{"sh", "-c", "echo started; sleep 30"}}, opts);
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
    CHECK(r.exit_status == -1);
    CHECK(r.timed_out);
    CHECK(r.out == "started\n");
    CHECK(r.err == "timed out after 1.5 s");
    CHECK(runner.run(Command{{"echo", "after"}}).out == "after\n");
    CHECK(log.count("ssh session opened") == 1);
  }

  SECTION("timeout ends a remote command that is still writing") {
    // OpenSSH ignores signal requests for root sessions; closing the channel is what ends it
    // (SIGPIPE on its next write, EOF on stdin).
    runner.connect();
    RunOptions opts;
    opts.timeout = std::chrono::milliseconds(1500);
    Result r =
        runner.run(Command{{"sh", "-c", "echo $$; while :; do echo tick; sleep 0.1; done"}}, opts);
    CHECK(r.timed_out);
    const pid_t remote_pid = static_cast<pid_t>(std::stol(r.out.substr(0, r.out.find('\n'))));
    bool gone = false;
    for (int i = 0; i < 100 && !gone; ++i) {
      gone = ::kill(remote_pid, 0) != 0 ||
             read_file("/proc/" + std::to_string(remote_pid) + "/stat").find(") Z") !=
                 std::string::npos;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    CHECK(gone);
  }

  SECTION("timeout holds when the command closed its output but keeps running") {
    RunOptions opts;
    opts.timeout = std::chrono::seconds(1);
    const auto start = std::chrono::steady_clock::now();
    Result r = runner.run(Command{{"sh", "-c", "exec >&- 2>&-; sleep 30"}}, opts);
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
    CHECK(r.timed_out);
  }

  SECTION("an interrupt during a command closes its channel; cleanup commands still run") {
    struct Clean {
      Clean() { zmigrate::reset_interrupts_for_tests(); }
      ~Clean() { zmigrate::reset_interrupts_for_tests(); }
      Clean(const Clean&) = delete;
      Clean& operator=(const Clean&) = delete;
    } clean;
    runner.connect();
    RunOptions opts;
    opts.timeout = std::chrono::seconds(60);
    opts.on_stdout = [](std::string_view) { zmigrate::note_interrupt(SIGINT); };
    const auto start = std::chrono::steady_clock::now();
    try {
      runner.run(Command{{"sh", "-c", "echo started; sleep 30"}}, opts);
      FAIL("no exception");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::interrupted);
      CHECK(e.subject() == "cn-test: sh");
    }
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
    // Started after the interrupt: runs to the end, on the same session.
    CHECK(runner.run(Command{{"sh", "-c", "sleep 0.3; echo after"}}).out == "after\n");
    CHECK(log.count("ssh session opened") == 1);
  }

  SECTION("a session lost between commands is reconnected once") {
    CHECK(runner.run(Command{{"true"}}).ok());
    for (pid_t child : children_of(sshd.pid)) {
      ::kill(child, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK(runner.run(Command{{"echo", "again"}}).out == "again\n");
    CHECK(log.count("ssh session opened") == 2);
  }

  SECTION("a session lost during a command fails that command") {
    ExitCode code = ExitCode::ok;
    const std::string why = error_reason(
        [&] {
          RunOptions opts;
          opts.on_stdout = [&](std::string_view) {
            for (pid_t child : children_of(sshd.pid)) {
              ::kill(child, SIGKILL);
            }
          };
          runner.run(Command{{"sh", "-c", "echo x; sleep 5"}}, opts);
        },
        &code);
    CHECK(code == ExitCode::remote);
    CHECK_THAT(why, Catch::Contains("cn-test (127.0.0.1)") &&
                        Catch::Contains("connection lost while running 'sh -c'"));
    CHECK(runner.run(Command{{"echo", "back"}}).out == "back\n");
  }

  SECTION("a throwing callback propagates and the session stays usable") {
    RunOptions opts;
    opts.on_stdout = [](std::string_view) { throw std::runtime_error("disk full"); };
    CHECK_THROWS_WITH(runner.run(Command{{"yes"}}, opts), "disk full");
    CHECK(runner.run(Command{{"echo", "ok"}}).out == "ok\n");
  }
}

TEST_CASE("remote::SshRunner::connect", "[remote][ssh]") {
  if (!can_run_sshd()) {
    SUCCEED("skipped");
    return;
  }
  LocalSshd sshd;
  REQUIRE(sshd.up());
  zmigrate::NullLogger log;
  SshOptions opts = sshd.options();
  ExitCode code = ExitCode::ok;

  SECTION("works with the right key and known host") {
    SshRunner runner(opts, log);
    runner.connect();
    CHECK(runner.run(Command{{"id", "-u"}}).out == "0\n");
  }

  SECTION("unknown host key is refused, known_hosts untouched") {
    write_file(sshd.dir / "known_hosts", "");
    SshRunner runner(opts, log);
    const std::string why = error_reason([&] { runner.connect(); }, &code);
    CHECK(code == ExitCode::remote);
    CHECK_THAT(why,
               Catch::StartsWith("cn-test (127.0.0.1): host key not in " + opts.known_hosts +
                                 "; add it with ssh-keyscan after verifying the fingerprint") &&
                   Catch::Contains("ssh-ed25519 SHA256:"));
    CHECK(read_file(sshd.dir / "known_hosts").empty());
    // Commands are refused the same way.
    CHECK_THROWS_AS(runner.run(Command{{"true"}}), Error);
  }

  SECTION("missing known_hosts file is refused") {
    opts.known_hosts = (sshd.dir / "no_such_known_hosts").string();
    SshRunner runner(opts, log);
    CHECK_THAT(error_reason([&] { runner.connect(); }),
               Catch::Contains("host key not in") && Catch::Contains("does not exist"));
    CHECK_FALSE(fs::exists(opts.known_hosts));
  }

  SECTION("changed host key is refused loudly") {
    write_file(sshd.dir / "known_hosts", sshd.host_line("host_key2.pub"));
    SshRunner runner(opts, log);
    const std::string why = error_reason([&] { runner.connect(); }, &code);
    CHECK(code == ExitCode::remote);
    CHECK_THAT(why, Catch::Contains("HOST KEY CHANGED") && Catch::Contains("SHA256:"));
  }

  SECTION("wrong key: authentication failure names user, address and key file") {
    opts.identity_file = (sshd.dir / "other_key").string();
    SshRunner runner(opts, log);
    CHECK_THAT(error_reason([&] { runner.connect(); }),
               Catch::Contains("authentication failed for root@127.0.0.1: check the key in " +
                               opts.identity_file));
  }

  SECTION("unreadable key file") {
    opts.identity_file = (sshd.dir / "no_such_key").string();
    SshRunner runner(opts, log);
    CHECK_THAT(error_reason([&] { runner.connect(); }),
               Catch::Contains("cannot read the private key " + opts.identity_file));
  }

  SECTION("nothing listening: connection refused") {
    opts.port = free_port();
    SshRunner runner(opts, log);
    CHECK_THAT(error_reason([&] { runner.connect(); }, &code),
               Catch::Equals("cn-test (127.0.0.1): connection refused: is sshd running on "
                             "127.0.0.1:" +
                             std::to_string(opts.port) + "?"));
    CHECK(code == ExitCode::remote);
  }
}

TEST_CASE("remote::SshRunner::connect timeout", "[remote]") {
  // A port that accepts TCP connections but never speaks SSH.
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(fd, 4) == 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  SshOptions opts;
  opts.address = "127.0.0.1";
  opts.port = ntohs(addr.sin_port);
  opts.known_hosts = "/nonexistent/known_hosts";
  opts.connect_timeout = std::chrono::milliseconds(1000);
  zmigrate::NullLogger log;
  SshRunner runner(opts, log);
  CHECK(runner.host() == "127.0.0.1");
  const auto start = std::chrono::steady_clock::now();
  ExitCode code = ExitCode::ok;
  const std::string why = error_reason([&] { runner.run(Command{{"true"}}); }, &code);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
  CHECK(code == ExitCode::remote);
  CHECK_THAT(why, Catch::StartsWith("127.0.0.1: no answer from 127.0.0.1:" +
                                    std::to_string(opts.port) + " within 1 s"));
  ::close(fd);
}
