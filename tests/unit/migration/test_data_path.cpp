// SPDX-License-Identifier: MPL-2.0
#include "fakes/fake_inventory.hpp"
#include "fakes/fake_runner.hpp"
#include "fakes/memory_state_store.hpp"

#include <zmigrate/migration/context.hpp>
#include <zmigrate/migration/data_path.hpp>
#include <zmigrate/remote/command.hpp>
#include <zmigrate/remote/local_runner.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/log.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <future>
#include <spawn.h>
#include <sstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::migration;

namespace {
DataPathSpec spec() {
  DataPathSpec s;
  s.migration_id = "d1d10108-d763-4bb7-8772-9f02ed9600c8";
  s.path_id = "d1d10108-d763-4bb7-8772-9f02ed9600c8-0a1b2c3d";
  s.source_boot = "2026-11-20T08:00:00.000Z";
  s.target_boot = "2026-11-21T09:00:00.000Z";
  s.source_addr = "10.99.0.11";
  s.target_addr = "10.99.0.12";
  s.target_host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey root@cn2";
  s.datasets = {"zones/u1", "zones/u1/data", "zones/u1-disk0"};
  return s;
}
} // namespace

TEST_CASE("migration::recv_script", "[migration]") {
  const std::string script = recv_script(spec());
  CHECK(script.find("'recv '*) ;;") != std::string::npos);
  CHECK(script.find("  'zones/u1'|'zones/u1/data'|'zones/u1-disk0') ;;") != std::string::npos);
  CHECK(script.find("*) zm_refuse ;;") != std::string::npos);
  CHECK(script.find("set -f\n") != std::string::npos);
  CHECK(script.find("/usr/sbin/zfs recv -u \"$ds\" || exit;") != std::string::npos);
  SECTION("resumable receives and the stall watchdog when the target has them") {
    DataPathSpec s = spec();
    s.resumable = true;
    s.watchdog = true;
    const std::string t = recv_script(s);
    CHECK(t.find("recv -u -s") != std::string::npos);
    CHECK(t.find("mbuffer -q -s 128k -m 16M -W 60 | ") != std::string::npos);
  }
  SECTION("hostile dataset names never reach the script") {
    DataPathSpec s = spec();
    s.datasets = {"zones/x') ds=/; rm -rf /;; ('"};
    CHECK_THROWS_AS(recv_script(s), UsageError);
  }
}

TEST_CASE("migration::authorized_keys_line", "[migration][data_path]") {
  // 2026-11-22 01:02:03 UTC; the key expires 48 hours later, written in UTC without a zone.
  const auto now = std::chrono::system_clock::from_time_t(1795309323);
  const std::string line =
      authorized_keys_line(spec(), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEphemeral", now);
  CHECK(line == "restrict,from=\"10.99.0.11\",command=\"/bin/sh /var/run/zmigrate/"
                "d1d10108-d763-4bb7-8772-9f02ed9600c8-0a1b2c3d/recv\","
                "expiry-time=\"202611240102\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEphemeral "
                "zmigrate-ephemeral-d1d10108-d763-4bb7-8772-9f02ed9600c8-0a1b2c3d");
  CHECK(line.find('\n') == std::string::npos);
  DataPathSpec bad = spec();
  bad.source_addr = "10.0.0.1\",command=\"/bin/sh";
  CHECK_THROWS_AS(authorized_keys_line(bad, "ssh-ed25519 AAAA", now), UsageError);
  CHECK_THROWS(authorized_keys_line(spec(), "ssh-ed25519 AAAA\"; evil", now));
  DataPathSpec no_path = spec();
  no_path.path_id.clear();
  CHECK_THROWS_AS(authorized_keys_line(no_path, "ssh-ed25519 AAAA", now), UsageError);
}

TEST_CASE("migration::new_path_id", "[migration][data_path]") {
  const std::string id = new_path_id(spec().migration_id);
  CHECK(id.rfind(spec().migration_id + "-", 0) == 0);
  CHECK(id.size() == spec().migration_id.size() + 9);
  CHECK(path_dir(id) == "/var/run/zmigrate/" + id);
  CHECK(key_marker(id) == "zmigrate-ephemeral-" + id);
  // The target's forced-command shell argv fits the 80 bytes illumos pgrep -f sees.
  CHECK(("/bin/sh " + path_dir(id) + "/recv").size() <= 80);
  CHECK_THROWS_AS(path_dir("x/../y"), UsageError);
}

TEST_CASE("migration::send_pipeline", "[migration][data_path]") {
  const remote::Command cmd =
      send_pipeline(spec(), {"zfs", "send", "-p", "zones/u1@s1"}, "zones/u1", true);
  REQUIRE(cmd.pipeline.size() == 3);
  // zfs send runs with SIGHUP and SIGPIPE ignored: it ends only through its output breaking.
  CHECK(cmd.pipeline[0] == remote::Argv{"sh", "-c", "trap '' HUP PIPE; exec \"$@\"", "sh", "zfs",
                                        "send", "-p", "zones/u1@s1"});
  CHECK(cmd.pipeline[1] == remote::Argv{"pv", "-n", "-b", "-i", "1"});
  const remote::Argv& ssh = cmd.pipeline[2];
  CHECK(ssh.front() == "ssh");
  // The key path first (pgrep -f finds the client by it), then no ssh_config.
  CHECK(ssh[1] == "-i");
  CHECK(ssh[2] == "/var/run/zmigrate/d1d10108-d763-4bb7-8772-9f02ed9600c8-0a1b2c3d/id_ed25519");
  CHECK(ssh[3] == "-o");
  CHECK(ssh[4] == "ControlMaster=no");
  CHECK(std::find(ssh.begin(), ssh.end(), "-F") + 1 ==
        std::find(ssh.begin(), ssh.end(), "/dev/null"));
  CHECK(std::find(ssh.begin(), ssh.end(), "StrictHostKeyChecking=yes") != ssh.end());
  CHECK(std::find(ssh.begin(), ssh.end(), "Compression=no") != ssh.end());
  CHECK(std::find(ssh.begin(), ssh.end(), "ControlMaster=no") != ssh.end());
  CHECK(ssh[ssh.size() - 2] == "recv");
  CHECK(ssh.back() == "zones/u1");
  const std::string text = remote::render(cmd);
  CHECK(text.find(" | pv -n -b -i 1 | ssh ") != std::string::npos);
}

TEST_CASE("migration::send_pipeline with a bandwidth limit", "[migration][data_path]") {
  DataPathSpec s = spec();
  s.rate_limit = 1048576;
  s.throttle_node = "/usr/node/bin/node";
  SECTION("node's throttle replaces pv, and counts") {
    const remote::Command cmd = send_pipeline(s, {"zfs", "send", "zones/u1@s1"}, "zones/u1", true);
    REQUIRE(cmd.pipeline.size() == 3);
    CHECK(cmd.pipeline[1] ==
          remote::Argv{"/usr/node/bin/node", "-e", throttle_script(), "1048576"});
    CHECK(pipeline_counts(s, false));
  }
  SECTION("without node: pv -L") {
    s.throttle_node.clear();
    const remote::Command cmd = send_pipeline(s, {"zfs", "send", "zones/u1@s1"}, "zones/u1", false);
    REQUIRE(cmd.pipeline.size() == 3);
    CHECK(cmd.pipeline[1] == remote::Argv{"pv", "-n", "-b", "-i", "1", "-L", "1048576"});
  }
  SECTION("no limit, no pv: nothing between send and ssh, nothing counted") {
    s.rate_limit = 0;
    CHECK(send_pipeline(s, {"zfs", "send", "zones/u1@s1"}, "zones/u1", false).pipeline.size() == 2);
    CHECK_FALSE(pipeline_counts(s, false));
  }
}

TEST_CASE("data path: node's throttle copies every byte, no faster than the rate", "[data_path]") {
  std::string node;
  for (const char* p : {"/usr/node/bin/node", "/usr/bin/node", "/usr/local/bin/node"}) {
    if (std::filesystem::exists(p)) {
      node = p;
      break;
    }
  }
  if (node.empty()) {
    WARN("no node.js here: the throttle is tested in the lab only");
    return;
  }
  NullLogger log;
  remote::LocalRunner runner(log);
  remote::RunOptions opts;
  opts.timeout = std::chrono::seconds(60);
  std::string input(768 * 1024, 'x');
  for (std::size_t i = 0; i < input.size(); i += 4097) {
    input[i] = static_cast<char>('a' + i % 26);
  }
  opts.stdin_data = input;
  std::vector<std::uint64_t> counts;
  opts.on_stderr_line = [&](std::string_view line) {
    if (auto n = parse_pv_line(line)) {
      counts.push_back(*n);
    }
  };
  const auto start = std::chrono::steady_clock::now();
  // 768 KiB at 512 KiB/s: the last chunk is due after 1.375 s (the first goes at once).
  const remote::Result r =
      runner.run(remote::Command({node, "-e", throttle_script(), "524288"}), opts);
  const auto took = std::chrono::steady_clock::now() - start;
  REQUIRE(r.ok());
  CHECK(r.out == input);
  REQUIRE_FALSE(counts.empty());
  CHECK(counts.back() == input.size());
  CHECK(took >= std::chrono::milliseconds(1200)); // a lower bound only: never faster
  SECTION("a bad rate is refused") {
    opts.stdin_data = "x";
    const remote::Result bad =
        runner.run(remote::Command({node, "-e", throttle_script(), "0"}), opts);
    CHECK(bad.exit_status == 2);
  }
}

TEST_CASE("migration::parse_pv_line", "[migration]") {
  CHECK(parse_pv_line("1048576") == std::optional<std::uint64_t>(1048576));
  CHECK(parse_pv_line(" 42 \r") == std::optional<std::uint64_t>(42));
  CHECK_FALSE(parse_pv_line("cannot receive: failed to read from stream"));
  CHECK_FALSE(parse_pv_line(""));
  CHECK_FALSE(parse_pv_line("12abc"));
}

TEST_CASE("migration::source_ssh_argv uses the configured user and port", "[data_path]") {
  DataPathSpec s = spec();
  s.target_user = "zmig";
  s.target_port = 2222;
  const remote::Argv argv = source_ssh_argv(s, {});
  const auto p = std::find(argv.begin(), argv.end(), "-p");
  REQUIRE(p != argv.end());
  CHECK(*(p + 1) == "2222");
  CHECK(*(p + 2) == "-l");
  CHECK(*(p + 3) == "zmig");
  CHECK(argv.back() == "10.99.0.12");
}

// ---- the real remote scripts, run by the local shells --------------------------------------

namespace {

namespace fs = std::filesystem;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void spit(const fs::path& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << data;
}

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return st.st_mode & 07777U;
}

// The shells the scripts must work with: dash (/bin/sh here) and ksh93 (/bin/sh on SmartOS).
std::vector<std::string> shells() {
  std::vector<std::string> out{"/bin/sh"};
  for (const char* k : {"/usr/bin/ksh93", "/bin/ksh93", "/usr/bin/ksh"}) {
    if (::access(k, X_OK) == 0) {
      out.emplace_back(k);
      break;
    }
  }
  return out;
}

struct Scratch {
  fs::path root;
  Scratch() {
    char tmpl[] = "/var/tmp/zmigrate-dp-test.XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    root = tmpl;
    fs::create_directories(root / "ssh");
    fs::create_directories(root / "bin");
  }
  ~Scratch() {
    std::error_code ec;
    fs::permissions(root, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(root, ec);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  fs::path keys() const { return root / "ssh" / "authorized_keys"; }
  fs::path lock() const { return root / "run" / "authorized_keys.lock"; }
  fs::path dir() const { return root / "run" / "d1-0a1b2c3d"; }
  // A command on PATH ahead of the real ones.
  void shim(const std::string& name, const std::string& body) const {
    spit(root / "bin" / name, "#!/bin/sh\n" + body + "\n");
    fs::permissions(root / "bin" / name, fs::perms::owner_all);
  }
};

const std::string k_operator = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKey operator@head";

std::string line_for(const std::string& path_id) {
  DataPathSpec s = spec();
  s.path_id = path_id;
  return authorized_keys_line(
      s, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEphemeral" + path_id.substr(path_id.size() - 2),
      std::chrono::system_clock::from_time_t(1795309323));
}

remote::Result run_script(const std::string& shell, const Scratch& sc, const std::string& script,
                          const std::vector<std::string>& args) {
  NullLogger log;
  remote::LocalRunner runner(log);
  remote::Argv argv{"env",  "PATH=" + (sc.root / "bin").string() + ":/usr/bin:/bin:/usr/sbin:/sbin",
                    shell,  "-c",
                    script, "sh"};
  argv.insert(argv.end(), args.begin(), args.end());
  remote::RunOptions opts;
  opts.timeout = std::chrono::seconds(60);
  return runner.run(remote::Command(argv), opts);
}

remote::Result install(const std::string& shell, const Scratch& sc, const std::string& line) {
  return run_script(shell, sc, scripts::install_target(),
                    {sc.dir().string(), sc.keys().string(), sc.lock().string(), "echo recv", line});
}

remote::Result cleanup(const std::string& shell, const Scratch& sc, const std::string& line,
                       bool joined, const std::string& dir = "") {
  return run_script(shell, sc, scripts::cleanup(),
                    {dir, sc.keys().string(), sc.lock().string(), line, joined ? "1" : "0"});
}

bool alive(pid_t pid) {
  if (::kill(pid, 0) != 0) {
    return false;
  }
  // A zombie is dead for our purposes (its parent has not reaped it yet).
  const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() || stat[close + 2] != 'Z';
}

// The argv a process shows now, spaces between its words (what pgrep -f matches).
std::string argv_of(pid_t pid) {
  std::string a = slurp("/proc/" + std::to_string(pid) + "/cmdline");
  std::replace(a.begin(), a.end(), '\0', ' ');
  return a;
}

template <class Pred> bool eventually(Pred pred, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

pid_t spawn(const std::vector<std::string>& args, const std::vector<std::string>& env) {
  std::vector<char*> argv;
  for (const std::string& a : args) {
    argv.push_back(const_cast<char*>(a.c_str()));
  }
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const std::string& e : env) {
    envp.push_back(const_cast<char*>(e.c_str()));
  }
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0); // never the test's pipes
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  REQUIRE(rc == 0);
  return pid;
}

} // namespace

TEST_CASE("data path scripts: install and cleanup keep every operator byte", "[data_path]") {
  const std::string mine = line_for(spec().path_id);
  for (const std::string& shell : shells()) {
    DYNAMIC_SECTION(shell) {
      Scratch sc;
      SECTION("a file without a final newline keeps the operator's last line") {
        const std::string before = "# operators\n" + k_operator; // no final newline
        spit(sc.keys(), before);
        fs::permissions(sc.keys(),
                        fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
        const remote::Result r = install(shell, sc, mine);
        REQUIRE(r.ok());
        CHECK(r.out == "added_newline\n");
        CHECK(slurp(sc.keys()) == before + "\n" + mine + "\n");
        CHECK(slurp(sc.dir() / "recv") == "echo recv");
        CHECK_FALSE(fs::exists(sc.lock()));
        // Idempotent: the exact line is there already.
        const remote::Result again = install(shell, sc, mine);
        REQUIRE(again.ok());
        CHECK(again.out.empty());
        CHECK(slurp(sc.keys()) == before + "\n" + mine + "\n");
        // Cleanup takes the line and the newline it added: byte-identical, mode kept.
        const remote::Result c = cleanup(shell, sc, mine, true, sc.dir().string());
        REQUIRE(c.ok());
        CHECK(slurp(sc.keys()) == before);
        CHECK(mode_of(sc.keys()) == 0640);
        CHECK_FALSE(fs::exists(sc.dir()));
        CHECK_FALSE(fs::exists(sc.lock()));
        // Already removed: nothing to do, success.
        CHECK(cleanup(shell, sc, mine, true).ok());
        CHECK(slurp(sc.keys()) == before);
      }
      SECTION("a missing file is created 0600 with the line") {
        REQUIRE(install(shell, sc, mine).ok());
        CHECK(slurp(sc.keys()) == mine + "\n");
        CHECK(mode_of(sc.keys()) == 0600);
      }
      SECTION("removal leaves every other byte identical") {
        const std::string head = "a\n\n  b \r\n" + k_operator + "\n";
        spit(sc.keys(), head + mine + "\nc\\d\ttail");
        const remote::Result c = cleanup(shell, sc, mine, true); // not the last line: newline kept
        REQUIRE(c.ok());
        CHECK(slurp(sc.keys()) == head + "c\\d\ttail");
      }
      SECTION("a glued legacy line, or one that only contains the marker, is never removed") {
        const std::string before = k_operator + mine + "\n" + "# " + mine + "\n" + mine + " x\n";
        spit(sc.keys(), before);
        const remote::Result c = cleanup(shell, sc, mine, false);
        CHECK(c.ok());
        CHECK(slurp(sc.keys()) == before);
      }
      SECTION("a symlinked authorized_keys stays a symlink; its target gets the edit") {
        fs::create_directories(sc.root / "real");
        const fs::path real = sc.root / "real" / "keys";
        spit(real, k_operator + "\n");
        fs::permissions(real,
                        fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
        fs::create_symlink("../real/keys", sc.keys());
        REQUIRE(install(shell, sc, mine).ok());
        CHECK(fs::is_symlink(sc.keys()));
        CHECK(slurp(real) == k_operator + "\n" + mine + "\n");
        REQUIRE(cleanup(shell, sc, mine, false).ok());
        CHECK(fs::is_symlink(sc.keys()));
        CHECK(fs::read_symlink(sc.keys()) == "../real/keys");
        CHECK(slurp(real) == k_operator + "\n");
        CHECK(mode_of(real) == 0640);
        CHECK_FALSE(fs::exists(sc.lock()));
      }
      SECTION("a failing copy or filter leaves the file untouched and fails") {
        const std::string before = k_operator + "\n" + mine + "\n";
        spit(sc.keys(), before);
        SECTION("cp fails") {
          sc.shim("cp", "exit 1");
        }
        SECTION("the filtered copy comes out short (as on a full disk)") {
          sc.shim("cp", "/bin/cp \"$@\" && exit 0");
          // wc answers for the original, then for a copy that lost its bytes
          sc.shim("wc", "n=$(cat /dev/stdin | /usr/bin/wc -c); c=" + (sc.root / "n").string() +
                            "; if [ -f $c ]; then echo 3; else echo $n; : > $c; fi");
        }
        SECTION("the line is there twice") {
          spit(sc.keys(), before + mine + "\n");
        }
        const std::string now = slurp(sc.keys());
        const remote::Result c = cleanup(shell, sc, mine, false);
        CHECK(c.exit_status == 3);
        CHECK(c.err.find("left it untouched") != std::string::npos);
        CHECK(slurp(sc.keys()) == now);
        // No temp file left beside it, and the lock is released.
        std::size_t entries = 0;
        for ([[maybe_unused]] const auto& e : fs::directory_iterator(sc.root / "ssh")) {
          ++entries;
        }
        CHECK(entries == 1);
        CHECK_FALSE(fs::exists(sc.lock()));
      }
      SECTION("two concurrent installs both land") {
        spit(sc.keys(), k_operator); // no final newline either
        const std::string other = line_for(spec().migration_id + "-99999999");
        NullLogger log;
        remote::LocalRunner runner(log);
        const std::string both =
            "\"$1\" -c \"$2\" sh \"$3.a\" \"$4\" \"$5\" r \"$6\" > /dev/null & a=$!; "
            "\"$1\" -c \"$2\" sh \"$3.b\" \"$4\" \"$5\" r \"$7\" > /dev/null & b=$!; "
            "wait $a; ra=$?; wait $b; rb=$?; [ $ra = 0 ] && [ $rb = 0 ]";
        const remote::Result r = runner.run(remote::Command(
            {"sh", "-c", both, "sh", shell, scripts::install_target(), sc.dir().string(),
             sc.keys().string(), sc.lock().string(), mine, other}));
        INFO("both installs exit 0: " << r.err);
        REQUIRE(r.ok());
        const std::string after = slurp(sc.keys());
        INFO("authorized_keys after both: " << nlohmann::json(after).dump());
        CHECK(after.rfind(k_operator + "\n", 0) == 0);
        CHECK((after == k_operator + "\n" + mine + "\n" + other + "\n" ||
               after == k_operator + "\n" + other + "\n" + mine + "\n"));
      }
      SECTION("the lock of a dead process is broken") {
        // A pid that is surely gone: a child we started and reaped.
        const pid_t dead = spawn({"/bin/true"}, {});
        int status = 0;
        REQUIRE(::waitpid(dead, &status, 0) == dead);
        fs::create_directories(sc.lock());
        spit(sc.lock() / "pid", std::to_string(dead) + "\n");
        const auto t0 = std::chrono::steady_clock::now();
        REQUIRE(install(shell, sc, mine).ok());
        CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));
        CHECK(slurp(sc.keys()) == mine + "\n");
        CHECK_FALSE(fs::exists(sc.lock()));
      }
    }
  }
}

TEST_CASE("data path scripts: the kill script ends a stale receiver and sender", "[data_path]") {
  for (const std::string& shell : shells()) {
    DYNAMIC_SECTION(shell) {
      Scratch sc;
      fs::create_directories(sc.dir());
      // A receiver that hangs like a `zfs recv` whose link dropped.
      const fs::path zpid = sc.root / "zfs.pid";
      sc.shim("zfs", "echo $$ > " + zpid.string() + "; exec sleep 300");
      DataPathSpec s = spec();
      s.zfs_path = (sc.root / "bin" / "zfs").string();
      spit(sc.dir() / "recv", recv_script(s));
      const pid_t recv_sh = spawn({shell, (sc.dir() / "recv").string()},
                                  {"SSH_ORIGINAL_COMMAND=recv zones/u1", "PATH=/usr/bin:/bin"});
      // A sender: an ssh client with the path's key (perl rewrites its argv to look like one).
      const pid_t sender = spawn(
          {"/usr/bin/perl", "-e",
           "$0 = 'ssh -i " + (sc.dir() / "id_ed25519").string() + " -F /dev/null'; sleep 300"},
          {});
      // A bystander whose argv only mentions the dir (like the cleanup command that carries the
      // key line): never matched.
      const pid_t bystander =
          spawn({"/usr/bin/perl", "-e",
                 "$0 = 'sh -c x sh command=\"/bin/sh " + (sc.dir() / "recv").string() +
                     "\" ssh -i " + (sc.dir() / "id_ed25519").string() + "'; sleep 300"},
                {});
      REQUIRE(eventually([&] { return fs::exists(zpid) && !slurp(zpid).empty(); },
                         std::chrono::seconds(10)));
      // perl rewrites its argv only once it runs: wait for both, or the kill script may look
      // before the sender looks like one.
      REQUIRE(eventually([&] { return argv_of(sender).rfind("ssh -i ", 0) == 0; },
                         std::chrono::seconds(10)));
      REQUIRE(eventually([&] { return argv_of(bystander).rfind("sh -c x ", 0) == 0; },
                         std::chrono::seconds(10)));
      const pid_t zfs = std::stoi(slurp(zpid));
      CHECK(alive(zfs));
      CHECK(alive(recv_sh)); // the shell did not exec the receiver: it is still findable
      const remote::Result r = run_script(shell, sc, scripts::kill(), {sc.dir().string()});
      CHECK(r.ok());
      int status = 0;
      CHECK(eventually([&] { return ::waitpid(recv_sh, &status, WNOHANG) == recv_sh; },
                       std::chrono::seconds(10)));
      CHECK(eventually([&] { return ::waitpid(sender, &status, WNOHANG) == sender; },
                       std::chrono::seconds(10)));
      CHECK(eventually([&] { return !alive(zfs); }, std::chrono::seconds(10)));
      CHECK(::waitpid(bystander, &status, WNOHANG) == 0); // still running
      ::kill(bystander, SIGKILL);
      ::waitpid(bystander, &status, 0);
      ::kill(recv_sh, SIGKILL);
      ::kill(sender, SIGKILL);
      ::kill(zfs, SIGKILL);
      ::waitpid(recv_sh, &status, WNOHANG);
      ::waitpid(sender, &status, WNOHANG);
    }
  }
}

namespace {

// Runs the forced command `recv` of `sc` as sshd would: `request` in SSH_ORIGINAL_COMMAND,
// `input` on stdin, sc's bin first on PATH.
remote::Result run_forced(remote::LocalRunner& runner, const Scratch& sc, const std::string& shell,
                          const std::string& request, const std::string& input) {
  remote::RunOptions opts;
  opts.timeout = std::chrono::seconds(60);
  opts.stdin_data = input;
  return runner.run(remote::Command({"env", "SSH_ORIGINAL_COMMAND=" + request,
                                     "PATH=" + (sc.root / "bin").string() + ":/usr/bin:/bin", shell,
                                     (sc.dir() / "recv").string()}),
                    opts);
}

} // namespace

TEST_CASE("data path scripts: the forced command receives its datasets one after the other "
          "from one input, and refuses anything else",
          "[data_path]") {
  for (const std::string& shell : shells()) {
    DYNAMIC_SECTION(shell) {
      Scratch sc;
      fs::create_directories(sc.dir());
      // A receiver that reads one line of its input, as `zfs recv` reads exactly its stream.
      const fs::path log = sc.root / "zfs.log";
      sc.shim("zfs", "IFS= read -r line; echo \"$*: $line\" >> " + log.string() +
                         "; case \"$line\" in bad*) exit 3 ;; esac");
      DataPathSpec s = spec();
      s.zfs_path = (sc.root / "bin" / "zfs").string();
      spit(sc.dir() / "recv", recv_script(s));
      NullLogger nlog;
      remote::LocalRunner runner(nlog);
      const auto forced = [&](const std::string& request, const std::string& input) {
        fs::remove(log);
        return run_forced(runner, sc, shell, request, input);
      };
      const auto zfs_log = [&] { return fs::exists(log) ? slurp(log) : std::string(); };

      remote::Result r = forced("recv zones/u1 zones/u1/data", "first\nsecond\n");
      CHECK(r.ok());
      CHECK(zfs_log() == "recv -u zones/u1: first\nrecv -u zones/u1/data: second\n");
      CHECK(r.err == "zmigrate-received zones/u1\nzmigrate-received zones/u1/data\n");
      r = forced("recv zones/u1-disk0", "one\n");
      CHECK(r.ok());
      CHECK(zfs_log() == "recv -u zones/u1-disk0: one\n");
      // The first receive that fails ends it, with its status; the next one never starts.
      r = forced("recv zones/u1 zones/u1/data", "bad\nsecond\n");
      CHECK(r.exit_status == 3);
      CHECK(zfs_log() == "recv -u zones/u1: bad\n");
      CHECK(r.err.find("zmigrate-received") == std::string::npos);
      // Refused (126), nothing received: any word not one of the datasets, as is.
      for (const std::string bad :
           {"recv", "recv ", "recv zones/u1 zones/u2", "recv zones/u1;touch /tmp/zm",
            "recv zones/*", "recv zones/u1/data/..", "measure", "zfs recv zones/u1",
            "recv zones/u1 -F", "recvzones/u1", "recv\tzones/u1 zones/x"}) {
        CAPTURE(bad);
        r = forced(bad, "x\n");
        CHECK(r.exit_status == 126);
        CHECK(zfs_log().empty());
      }
    }
  }
}

TEST_CASE("data path scripts: a measurement's forced command counts and keeps nothing",
          "[data_path]") {
  for (const std::string& shell : shells()) {
    DYNAMIC_SECTION(shell) {
      Scratch sc;
      fs::create_directories(sc.dir());
      // A receiver that would leave a trace: the measurement must never reach it.
      const fs::path touched = sc.root / "zfs-ran";
      sc.shim("zfs", "touch " + touched.string());
      NullLogger log;
      remote::LocalRunner runner(log);
      auto forced = [&](const DataPathSpec& s, const std::string& request,
                        const std::string& input) {
        spit(sc.dir() / "recv", recv_script(s));
        return run_forced(runner, sc, shell, request, input);
      };
      DataPathSpec m = spec();
      m.datasets.clear();
      m.measure = true;
      m.zfs_path = (sc.root / "bin" / "zfs").string();
      // The bytes the sender's producer makes: exactly N MiB (and none for N = 0).
      DataPathSpec local = m;
      const remote::Command producer = measure_pipeline(local, 3);
      REQUIRE(producer.pipeline.size() == 2);
      CHECK(producer.pipeline[1][producer.pipeline[1].size() - 1] == "measure");
      remote::RunOptions popts;
      popts.timeout = std::chrono::seconds(60);
      const remote::Result made = runner.run(remote::Command(producer.pipeline[0]), popts);
      REQUIRE(made.ok());
      CHECK(made.out.size() == 3u << 20);
      const remote::Result counted = forced(m, "measure", made.out);
      CHECK(counted.ok());
      CHECK(parse_pv_line(counted.out.substr(0, counted.out.find('\n'))) == std::uint64_t{3} << 20);
      const remote::Result empty = forced(m, "measure", "");
      CHECK(empty.ok());
      CHECK(parse_pv_line(empty.out.substr(0, empty.out.find('\n'))) == std::uint64_t{0});
      // A measurement's key receives nothing; a migration's key does not measure.
      CHECK(forced(m, "recv zones/u1", "x").exit_status == 126);
      DataPathSpec mig = spec();
      mig.zfs_path = m.zfs_path;
      CHECK(forced(mig, "measure", "x").exit_status == 126);
      CHECK(recv_script(mig).find("measure") == std::string::npos);
      CHECK_FALSE(fs::exists(touched));
    }
  }
}

// ---- DataPath over fake nodes: what goes into the ledger and which exact line is removed -----

namespace {

class FixedClock final : public Clock {
public:
  std::chrono::steady_clock::time_point now() const override { return m_now; }
  std::chrono::system_clock::time_point wall_now() const override {
    return std::chrono::system_clock::from_time_t(1795309323) + wall_ahead; // 2026-11-22 01:02:03
  }
  std::chrono::hours wall_ahead{0}; // how far the wall clock has moved on
  void sleep_for(std::chrono::milliseconds d) override { m_now += d; }

private:
  std::chrono::steady_clock::time_point m_now{};
};

class NoNodes final : public NodeAccess {
public:
  remote::Runner& runner_for(const inventory::Server&) override {
    throw std::logic_error("not used");
  }
};

class WarnLog final : public Logger {
public:
  std::vector<std::string> warnings;
  void log(LogLevel level, std::string_view msg, const nlohmann::json&) override {
    if (level == LogLevel::warn) {
      warnings.emplace_back(msg);
    }
  }
};

bool is_script(const remote::Command& cmd, const std::string& script) {
  return cmd.pipeline.size() == 1 && cmd.pipeline[0].size() > 2 && cmd.pipeline[0][2] == script;
}

std::vector<remote::Argv> runs_of(const fakes::FakeRunner& r, const std::string& script) {
  std::vector<remote::Argv> out;
  for (const auto& run : r.runs) {
    if (is_script(run.command, script)) {
      out.push_back(run.command.pipeline[0]);
    }
  }
  return out;
}

struct PathFixture {
  fakes::FakeInventory inv;
  NoNodes nodes;
  FixedClock clock;
  fakes::MemoryStateStore store{clock};
  WarnLog log;
  NullReporter reporter;
  Context ctx{inv, nodes, store, clock, log, reporter, Settings{}, {}};
  fakes::FakeRunner source{"cn1"};
  fakes::FakeRunner target{"cn2"};
  PathFixture() {
    state::Migration m;
    m.id = spec().migration_id;
    m.vm_uuid = "vm1";
    store.insert_migration(m);
  }
  DataPathSpec path_spec(const std::string& suffix) const {
    DataPathSpec s = spec();
    s.path_id = s.migration_id + "-" + suffix;
    return s;
  }
  std::vector<state::Artefact> live() { return store.live_artefacts(spec().migration_id); }
};

} // namespace

Stream u1_stream() {
  Stream s;
  s.dataset = "zones/u1";
  s.to = "zones/u1@s1";
  return s;
}

TEST_CASE("migration::DataPath records the exact line and removes only it", "[data_path]") {
  PathFixture f;
  f.target.on_handler([](const remote::Command& cmd, const remote::RunOptions&) {
    return is_script(cmd, scripts::install_target()) ? std::optional(fakes::ok("added_newline\n"))
                                                     : std::nullopt;
  });
  DataPath path(f.ctx, f.path_spec("00000001"), f.source, f.target);
  path.open();
  const auto installs = runs_of(f.target, scripts::install_target());
  REQUIRE(installs.size() == 1);
  const remote::Argv& inst = installs[0];
  REQUIRE(inst.size() == 9);
  const std::string dir = "/var/run/zmigrate/" + spec().migration_id + "-00000001";
  CHECK(inst[4] == dir);
  CHECK(inst[5] == "/root/.ssh/authorized_keys");
  CHECK(inst[6] == k_keys_lock_dir);
  const std::string line = inst[8];
  CHECK(line.rfind("restrict,from=\"10.99.0.11\",command=\"/bin/sh " + dir + "/recv\"," +
                       "expiry-time=\"202611240102\" ssh-ed25519 AAAA",
                   0) == 0);
  CHECK(line.size() > 19);
  CHECK(line.substr(line.rfind(' ') + 1) == key_marker(spec().migration_id + "-00000001"));
  // The row holds the exact line and that the install added a newline before it.
  bool key_row = false;
  for (const state::Artefact& a : f.live()) {
    if (a.kind == "authorized_key") {
      key_row = true;
      CHECK(a.host == "cn2");
      CHECK(a.details["line"] == line);
      CHECK(a.details["added_newline"] == true);
      CHECK(a.details["file"] == "/root/.ssh/authorized_keys");
    } else {
      CHECK(a.name == dir);
    }
  }
  CHECK(key_row);
  CHECK(f.live().size() == 3);

  SECTION("a second path of the migration leaves the open one alone") {
    DataPath other(f.ctx, f.path_spec("00000002"), f.target, f.source); // the reverse way
    other.open();
    CHECK(runs_of(f.target, scripts::cleanup()).empty());
    CHECK(runs_of(f.source, scripts::cleanup()).empty());
    CHECK(f.live().size() == 6);
    other.close();
    const auto cleanups = runs_of(f.source, scripts::cleanup()); // other's target is cn1
    REQUIRE(cleanups.size() == 1);
    CHECK(cleanups[0][4] == "/var/run/zmigrate/" + spec().migration_id + "-00000002");
    CHECK(f.live().size() == 3);
  }
  SECTION("close passes exactly the recorded line; the rows go") {
    path.close();
    const auto cleanups = runs_of(f.target, scripts::cleanup());
    REQUIRE(cleanups.size() == 1);
    CHECK(cleanups[0][4] == dir);
    CHECK(cleanups[0][5] == "/root/.ssh/authorized_keys");
    CHECK(cleanups[0][7] == line);
    CHECK(cleanups[0][8] == "1");
    CHECK(runs_of(f.source, scripts::cleanup()).size() == 1);
    for (const auto& run : f.target.runs) {
      CHECK(run.timeout > std::chrono::milliseconds(0)); // every command has a timeout
    }
    CHECK(f.live().empty());
  }
  SECTION("close cleans both nodes at once; the ledger after both") {
    // The source's cleanup waits for the target's to start: it returns only when both run at
    // once (a deadline, not a sleep, for a close that would ask one after the other).
    std::promise<void> target_started;
    std::shared_future<void> started = target_started.get_future().share();
    f.target.on_handler([&](const remote::Command& cmd, const remote::RunOptions&) {
      if (!is_script(cmd, scripts::cleanup())) {
        return std::optional<remote::Result>();
      }
      target_started.set_value();
      return std::optional(fakes::ok());
    });
    bool overlapped = false;
    f.source.on_handler([&](const remote::Command& cmd, const remote::RunOptions&) {
      if (!is_script(cmd, scripts::cleanup())) {
        return std::optional<remote::Result>();
      }
      overlapped = started.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
      return std::optional(fakes::ok());
    });
    path.close();
    CHECK(overlapped);
    CHECK(runs_of(f.source, scripts::cleanup()).size() == 1);
    CHECK(runs_of(f.target, scripts::cleanup()).size() == 1);
    CHECK(f.live().empty());
  }
  SECTION("a refused cleanup keeps the key row live and warns; the next command retries") {
    f.target.on_handler(
        [](const remote::Command& cmd, const remote::RunOptions&) {
          return is_script(cmd, scripts::cleanup())
                     ? std::optional(fakes::failed(3, "zmigrate: ...: left it untouched"))
                     : std::nullopt;
        },
        1);
    path.close();
    std::vector<std::string> kinds;
    for (const state::Artefact& a : f.live()) {
      kinds.push_back(a.kind);
    }
    CHECK(kinds == std::vector<std::string>{"authorized_key"});
    CHECK(std::any_of(f.log.warnings.begin(), f.log.warnings.end(), [](const std::string& w) {
      return w.find("NOT removed") != std::string::npos;
    }));
    DataPath::remove_leftovers(f.ctx, spec().migration_id, f.source, f.target, Leftovers::all);
    const auto cleanups = runs_of(f.target, scripts::cleanup());
    REQUIRE(cleanups.size() == 2);
    CHECK(cleanups[1][4].empty()); // the dir went the first time
    CHECK(cleanups[1][7] == line);
    CHECK(f.live().empty());
  }
  SECTION("a failed send ends the path's processes on both nodes") {
    f.source.on_regex(" recv zones/u1$", fakes::failed(255, "Timeout, server not responding"));
    CHECK_THROWS_AS(path.send(u1_stream(), {"zfs", "send", "zones/u1@s1"}, false, {}),
                    TransientError);
    for (fakes::FakeRunner* r : {&f.source, &f.target}) {
      const auto kills = runs_of(*r, scripts::kill());
      REQUIRE(kills.size() == 1);
      CHECK(kills[0][4] == dir);
    }
  }
  SECTION("a send that throws (interrupt) ends them too, and the error propagates") {
    f.source.on_handler(
        [](const remote::Command& cmd, const remote::RunOptions&) -> std::optional<remote::Result> {
          if (cmd.pipeline.size() > 1) {
            throw Error(ExitCode::interrupted, "send", "interrupted");
          }
          return std::nullopt;
        });
    f.target.on_handler(
        [](const remote::Command& cmd, const remote::RunOptions&) -> std::optional<remote::Result> {
          if (is_script(cmd, scripts::kill())) {
            throw Error(ExitCode::remote, "cn2", "connection lost"); // never masks the first error
          }
          return std::nullopt;
        });
    try {
      path.send(u1_stream(), {"zfs", "send", "zones/u1@s1"}, false, {});
      FAIL("send did not throw");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("interrupted") != std::string::npos);
    }
    CHECK(runs_of(f.source, scripts::kill()).size() == 1);
    CHECK(runs_of(f.target, scripts::kill()).size() == 1);
  }
}

// ---- a path parked by one command and adopted by the migration's next ---------------------

namespace {
std::size_t installs_of(PathFixture& f) {
  return runs_of(f.target, scripts::install_target()).size();
}
std::size_t cleanups_of(PathFixture& f) {
  return runs_of(f.target, scripts::cleanup()).size() +
         runs_of(f.source, scripts::cleanup()).size();
}
bool all_parked(PathFixture& f, bool parked) {
  const auto live = f.live();
  return !live.empty() && std::all_of(live.begin(), live.end(), [&](const state::Artefact& a) {
    return a.details.value("parked", !parked) == parked;
  });
}
} // namespace

TEST_CASE("migration::DataPath parks for the next command, which adopts it without a command",
          "[data_path]") {
  PathFixture f;
  const std::string first = spec().migration_id + "-00000001";
  {
    DataPath path(f.ctx, f.path_spec("00000001"), f.source, f.target);
    path.open();
    REQUIRE(installs_of(f) == 1);
    CHECK(all_parked(f, false));
    path.park();
    CHECK(all_parked(f, true));
    CHECK(f.live().size() == 3);
  } // the destructor of a parked path removes nothing
  CHECK(cleanups_of(f) == 0);
  CHECK(f.live().size() == 3);
  const std::size_t runs_before = f.source.runs.size() + f.target.runs.size();

  SECTION("the same spec adopts it: no command on either node, in use again") {
    DataPath next(f.ctx, f.path_spec("00000002"), f.source, f.target);
    next.open();
    CHECK(f.source.runs.size() + f.target.runs.size() == runs_before);
    CHECK(next.path_id() == first);
    CHECK(all_parked(f, false)); // a crash from here leaves it for the next command to remove
    // A leftover sweep of another command (Leftovers::all) leaves an open path alone.
    DataPath::remove_leftovers(f.ctx, spec().migration_id, f.source, f.target, Leftovers::all);
    CHECK(f.live().size() == 3);
    next.close();
    const auto cleanups = runs_of(f.target, scripts::cleanup());
    REQUIRE(cleanups.size() == 1);
    CHECK(cleanups[0][4] == path_dir(first));
    CHECK(f.live().empty());
  }
  SECTION("a sync's leftover sweep keeps it; every other sweep removes it") {
    DataPath::remove_leftovers(f.ctx, spec().migration_id, f.source, f.target, Leftovers::unparked);
    CHECK(cleanups_of(f) == 0);
    CHECK(f.live().size() == 3);
    DataPath::remove_leftovers(f.ctx, spec().migration_id, f.source, f.target, Leftovers::all);
    CHECK(cleanups_of(f) == 2);
    CHECK(f.live().empty());
  }
  SECTION("a path set up for other datasets is removed and a new one installed") {
    DataPathSpec other = f.path_spec("00000002");
    other.datasets.push_back("zones/u1-disk1");
    DataPath next(f.ctx, other, f.source, f.target);
    next.open();
    CHECK(next.path_id() == other.path_id);
    CHECK(installs_of(f) == 2);
    const auto cleanups = runs_of(f.target, scripts::cleanup());
    REQUIRE(cleanups.size() == 1);
    CHECK(cleanups[0][4] == path_dir(first));
    CHECK(f.live().size() == 3);
  }
  SECTION("a new host key, address or forced command is another path too") {
    DataPathSpec other = f.path_spec("00000002");
    SECTION("host key") {
      other.target_host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther";
    }
    SECTION("source address") {
      other.source_addr = "10.99.0.21";
    }
    SECTION("resumable receives") {
      other.resumable = true;
    }
    SECTION("the target rebooted since (its /var/run is empty)") {
      other.target_boot = "2026-11-22T00:30:00.000Z";
    }
    SECTION("the source's boot unknown") {
      other.source_boot.clear();
    }
    DataPath next(f.ctx, other, f.source, f.target);
    next.open();
    CHECK(next.path_id() == other.path_id);
    CHECK(installs_of(f) == 2);
  }
  SECTION("a path parked a day ago is not adopted (its key expires a day later)") {
    f.clock.wall_ahead = k_park_max_age;
    DataPath next(f.ctx, f.path_spec("00000002"), f.source, f.target);
    next.open();
    CHECK(next.path_id() != first);
    CHECK(installs_of(f) == 2);
    CHECK(cleanups_of(f) == 2);
  }
  SECTION("the reverse way is another path") {
    DataPath back(f.ctx, f.path_spec("00000002"), f.target, f.source);
    back.open();
    CHECK(back.path_id() != first);
    back.close();
  }
  SECTION("a measurement never adopts a migration's path") {
    DataPathSpec m = f.path_spec("00000002");
    m.measure = true;
    CHECK_FALSE(adoptable_path(f.live(), m, "cn1", "cn2", f.clock.wall_now()));
  }
}

TEST_CASE("migration::adoptable_path wants every row of one path parked and whole", "[data_path]") {
  PathFixture f;
  {
    DataPath path(f.ctx, f.path_spec("00000001"), f.source, f.target);
    path.open();
    path.park();
  }
  const auto now = f.clock.wall_now();
  const std::vector<state::Artefact> live = f.live();
  REQUIRE(adoptable_path(live, spec(), "cn1", "cn2", now) == spec().migration_id + "-00000001");
  CHECK_FALSE(adoptable_path(live, spec(), "cn2", "cn1", now));
  for (std::size_t drop = 0; drop < live.size(); ++drop) {
    std::vector<state::Artefact> part = live;
    part.erase(part.begin() + static_cast<std::ptrdiff_t>(drop));
    CHECK_FALSE(adoptable_path(part, spec(), "cn1", "cn2", now)); // a row gone: not whole
    part = live;
    part[drop].details["parked"] = false; // in use when a command died
    CHECK_FALSE(adoptable_path(part, spec(), "cn1", "cn2", now));
    part = live;
    part[drop].created = "not a time";
    CHECK_FALSE(adoptable_path(part, spec(), "cn1", "cn2", now));
  }
}

// ---- every stream of a sync and the sender's prune in one command ---------------------------

TEST_CASE("migration::DataPath::send_streams: one command, a marker after each stream, the tail "
          "last",
          "[data_path]") {
  PathFixture f;
  DataPath path(f.ctx, f.path_spec("00000001"), f.source, f.target);
  path.open();
  Stream a = u1_stream();
  Stream b;
  b.dataset = "zones/u1/data";
  b.to = "zones/u1/data@s1";
  const std::vector<StreamSend> sends{{&a, {"zfs", "send", "zones/u1@s1"}},
                                      {&b, {"zfs", "send", "zones/u1/data@s1"}}};
  remote::Command tail({"zfs", "release", "zmigrate-x", "zones/u1@s0"});
  tail.and_then({"zfs", "destroy", "-r", "zones/u1@s0"});
  const std::size_t before = f.source.runs.size();
  std::vector<std::pair<std::size_t, std::uint64_t>> seen;
  const auto on_bytes = [&](std::size_t i, std::uint64_t n) { seen.emplace_back(i, n); };

  SECTION("everything arrives: one session for the lane, per-stream counts, the tail ran") {
    f.source.on_regex("zmigrate-stream-sent",
                      fakes::result(0, "",
                                    "zmigrate-stream-bytes 0 100\nzmigrate-stream-bytes 0 300\n"
                                    "zmigrate-received zones/u1\nzmigrate-stream-bytes 1 7\n"
                                    "zmigrate-received zones/u1/data\n"
                                    "zmigrate-stream-sent 0\nzmigrate-stream-sent 1\n"));
    int arrived_calls = 0;
    const SendsResult r =
        path.send_streams(sends, true, tail, {}, on_bytes, [&] { ++arrived_calls; });
    CHECK(arrived_calls == 1);                   // once, when the last stream's marker came
    REQUIRE(f.source.runs.size() == before + 1); // one round trip for both streams and the prune
    const remote::Command& cmd = f.source.runs.back().command;
    // The producer (both senders, one after the other), then one ssh for both receives.
    REQUIRE(cmd.pipeline.size() >= 2);
    CHECK(cmd.pipeline[0].size() == 3);
    CHECK(cmd.pipeline[0][0] == "sh");
    const std::string producer = cmd.pipeline[0][2];
    const std::size_t first = producer.find("zfs send zones/u1@s1 | sh -c ");
    const std::size_t second = producer.find(" && sh -c ");
    CHECK(first != std::string::npos);
    CHECK(second != std::string::npos);
    CHECK(producer.find("zfs send zones/u1/data@s1 | sh -c ") > second);
    const std::string text = remote::render(cmd);
    CHECK(text.find(" recv zones/u1 zones/u1/data && sh -c ") != std::string::npos);
    CHECK(text.find(" recv zones/u1 && ") == std::string::npos); // not a session apiece
    CHECK(text.find("sh 0 && sh -c ") != std::string::npos);     // a marker for each
    CHECK(text.find("sh 1 && zfs release zmigrate-x zones/u1@s0 && zfs destroy -r zones/u1@s0") !=
          std::string::npos);
    REQUIRE(r.transfers.size() == 2);
    CHECK(r.transfers[0].bytes == 300);
    CHECK(r.transfers[0].bytes_counted);
    CHECK(r.transfers[1].bytes == 7);
    CHECK(r.tail_ok);
    CHECK(seen == std::vector<std::pair<std::size_t, std::uint64_t>>{{0, 100}, {0, 300}, {1, 7}});
  }
  SECTION("the first stream of a session fails: its dataset is named") {
    f.source.on_regex("zmigrate-stream-sent",
                      fakes::result(1, "", "cannot receive new filesystem stream\n"));
    CHECK_THROWS_WITH(path.send_streams(sends, false, tail, {}, on_bytes),
                      Catch::Contains("send zones/u1 to cn2") &&
                          Catch::Contains("cannot receive new filesystem stream"));
  }
  SECTION("the second stream fails: its dataset is named, the path's processes end") {
    f.source.on_regex("zmigrate-stream-sent",
                      fakes::result(255, "", "zmigrate-received zones/u1\nBroken pipe\n"));
    try {
      path.send_streams(sends, false, tail, {}, on_bytes,
                        [] { FAIL("on_arrived with a stream that did not arrive"); });
      FAIL("no throw");
    } catch (const TransientError& e) {
      CHECK(std::string(e.what()).find("send zones/u1/data to cn2") != std::string::npos);
      CHECK(std::string(e.what()).find("Broken pipe") != std::string::npos);
    }
    CHECK(runs_of(f.source, scripts::kill()).size() == 1);
    CHECK(runs_of(f.target, scripts::kill()).size() == 1);
  }
  SECTION("a marker out of turn is no proof: the stream is not counted as arrived") {
    f.source.on_regex("zmigrate-stream-sent",
                      fakes::result(1, "", "zmigrate-stream-sent 1\nzmigrate-stream-sent 0\n"));
    CHECK_THROWS_AS(path.send_streams(sends, false, tail, {}, on_bytes), TransientError);
  }
  SECTION("every stream arrived, the tail failed: no throw, tail_ok false") {
    f.source.on_regex(
        "zmigrate-stream-sent",
        fakes::result(1, "", "zmigrate-stream-sent 0\nzmigrate-stream-sent 1\ndataset is busy\n"));
    const SendsResult r = path.send_streams(sends, false, tail, {}, on_bytes);
    CHECK(r.transfers.size() == 2);
    CHECK_FALSE(r.tail_ok);
    CHECK(runs_of(f.source, scripts::kill()).empty());
    CHECK(std::any_of(f.log.warnings.begin(), f.log.warnings.end(), [](const std::string& w) {
      return w.find("runs again on its own") != std::string::npos;
    }));
  }
  SECTION("two lanes: run at once, markers in any order across lanes, counts by stream") {
    std::vector<StreamSend> two = sends;
    two[1].lane = 1;
    f.source.on_regex("zmigrate-stream-sent",
                      fakes::result(0, "",
                                    "zmigrate-stream-bytes 1 40\nzmigrate-stream-bytes 0 100\n"
                                    "zmigrate-stream-sent 1\nzmigrate-stream-bytes 0 300\n"
                                    "zmigrate-stream-sent 0\n"));
    const SendsResult r = path.send_streams(two, true, tail, {}, on_bytes);
    REQUIRE(f.source.runs.size() == before + 1);
    const remote::Command& cmd = f.source.runs.back().command;
    CHECK(cmd.lanes_end > 0);
    CHECK(cmd.lane_starts.size() == 1);
    const std::string text = remote::render(cmd);
    CHECK(text.find(" recv zones/u1/data && sh -c ") != std::string::npos);
    CHECK(text.find("sh 1 & zm_l1=$!;") != std::string::npos);
    CHECK(text.find("(exit \"$zm_s\") && zfs release zmigrate-x zones/u1@s0") != std::string::npos);
    CHECK(text.find("pv -n -b -i 1 | ssh") == std::string::npos); // tagged counts instead
    REQUIRE(r.transfers.size() == 2);
    CHECK(r.transfers[0].bytes == 300);
    CHECK(r.transfers[1].bytes == 40);
    CHECK(r.transfers[1].bytes_counted);
    CHECK(r.tail_ok);
    CHECK(seen == std::vector<std::pair<std::size_t, std::uint64_t>>{{1, 40}, {0, 100}, {0, 300}});
  }
  SECTION("two lanes, one fails: that stream is named, the other lane's arrival stands") {
    std::vector<StreamSend> two = sends;
    two[1].lane = 1;
    f.source.on_regex("zmigrate-stream-sent",
                      fakes::result(255, "", "zmigrate-stream-sent 1\nConnection reset\n"));
    CHECK_THROWS_WITH(path.send_streams(two, false, tail, {}, on_bytes),
                      Catch::Contains("send zones/u1 to cn2") &&
                          Catch::Contains("Connection reset"));
    CHECK(runs_of(f.source, scripts::kill()).size() == 1);
  }
  SECTION("in one lane, a later stream's marker before an earlier one's is no proof") {
    Stream c;
    c.dataset = "zones/u1/logs";
    c.to = "zones/u1/logs@s1";
    std::vector<StreamSend> three = sends;
    three.push_back({&c, {"zfs", "send", "zones/u1/logs@s1"}, 0});
    three[1].lane = 1; // lane 0: streams 0 and 2
    f.source.on_regex("zmigrate-stream-sent",
                      fakes::result(0, "",
                                    "zmigrate-stream-sent 2\nzmigrate-stream-sent 1\n"
                                    "zmigrate-stream-sent 0\n"));
    CHECK_THROWS_WITH(path.send_streams(three, false, tail, {}, on_bytes),
                      Catch::Contains("send zones/u1/logs to cn2"));
  }
  SECTION("a command alongside: a lane of its own, first, its marker says it succeeded") {
    const remote::Command hide({"vmadm", "update", "u1", "do_not_inventory=true"});
    f.source.on_regex("zmigrate-stream-sent",
                      fakes::result(0, "",
                                    "zmigrate-stream-bytes 0 30\n"
                                    "Successfully updated VM u1\nzmigrate-alongside-done\n"
                                    "zmigrate-stream-bytes 1 2\n"
                                    "zmigrate-stream-sent 0\nzmigrate-stream-sent 1\n"));
    const SendsResult r = path.send_streams(sends, true, tail, hide, on_bytes);
    REQUIRE(f.source.runs.size() == before + 1); // still one round trip
    const std::string text = remote::render(f.source.runs.back().command);
    CHECK(text.rfind("vmadm update u1 do_not_inventory=true && sh -c "
                     "'echo zmigrate-alongside-done >&2' & zm_l0=$!; sh -c ",
                     0) == 0);
    CHECK(text.find("(exit \"$zm_s\") && zfs release zmigrate-x zones/u1@s0") != std::string::npos);
    CHECK(r.alongside_ok);
    CHECK(r.tail_ok);
    REQUIRE(r.transfers.size() == 2);
    CHECK(r.transfers[0].bytes == 30); // one session of two streams: tagged counts
    CHECK(r.transfers[1].bytes == 2);  // vmadm's line is no count
  }
  SECTION("the command alongside fails: every stream arrived, it and the tail are the caller's") {
    const remote::Command hide({"vmadm", "update", "u1", "do_not_inventory=true"});
    f.source.on_regex("zmigrate-stream-sent",
                      fakes::result(1, "",
                                    "zmigrate-stream-sent 0\nvmadm: lock busy\n"
                                    "zmigrate-stream-sent 1\n"));
    const SendsResult r = path.send_streams(sends, false, tail, hide, on_bytes);
    CHECK(r.transfers.size() == 2);
    CHECK_FALSE(r.alongside_ok);
    CHECK_FALSE(r.tail_ok);
    CHECK(runs_of(f.source, scripts::kill()).empty());
    CHECK(std::any_of(f.log.warnings.begin(), f.log.warnings.end(), [](const std::string& w) {
      return w.find("alongside them failed") != std::string::npos;
    }));
  }
  SECTION("a stream fails while the command alongside succeeded: the stream is named") {
    const remote::Command hide({"vmadm", "update", "u1", "do_not_inventory=true"});
    f.source.on_regex("zmigrate-stream-sent",
                      fakes::result(255, "", "zmigrate-alongside-done\nConnection reset\n"));
    CHECK_THROWS_WITH(path.send_streams(sends, false, tail, hide, on_bytes),
                      Catch::Contains("send zones/u1 to cn2") &&
                          Catch::Contains("exit status 255"));
    CHECK(runs_of(f.source, scripts::kill()).size() == 1);
  }
  SECTION("the alongside marker runs through a real /bin/sh") {
    const remote::Command hide({"vmadm", "update", "u1", "do_not_inventory=true"});
    f.source.on_regex("zmigrate-stream-sent", fakes::ok());
    CHECK_THROWS_AS(path.send_streams(sends, false, {}, hide, on_bytes), TransientError);
    remote::Command cmd;
    for (const auto& run : f.source.runs) {
      if (run.command.lanes_end > 0) {
        cmd = run.command;
      }
    }
    REQUIRE(cmd.pipeline.size() > 1);
    CHECK(cmd.pipeline[0] == hide.pipeline[0]);
    zmigrate::NullLogger log;
    remote::LocalRunner local(log);
    const remote::Result r = local.run(remote::Command(cmd.pipeline[1]));
    CHECK(r.exit_status == 0);
    CHECK(r.err == "zmigrate-alongside-done\n");
  }
  SECTION("under a rate limit (per stream), one lane whatever the lanes asked") {
    DataPathSpec limited = f.path_spec("00000002");
    limited.rate_limit = 1048576;
    path.close();
    DataPath slow(f.ctx, limited, f.source, f.target);
    slow.open();
    std::vector<StreamSend> two = sends;
    two[1].lane = 1;
    f.source.on_regex("zmigrate-stream-sent",
                      fakes::result(0, "", "zmigrate-stream-sent 0\nzmigrate-stream-sent 1\n"));
    slow.send_streams(two, false, tail, {}, on_bytes);
    CHECK(f.source.runs.back().command.lanes_end == 0);
    CHECK(remote::render(f.source.runs.back().command).find("pv -n -b -i 1 -L 1048576") !=
          std::string::npos);
    slow.close();
  }
  SECTION("a tagged count runs through a real /bin/sh: the bytes go on, the count to stderr") {
    std::vector<StreamSend> two = sends;
    two[1].lane = 1;
    f.source.on_regex("zmigrate-stream-sent", fakes::ok());
    CHECK_THROWS_AS(path.send_streams(two, true, {}, {}, on_bytes), TransientError);
    remote::Command cmd;
    for (const auto& run : f.source.runs) {
      if (run.command.lanes_end > 0) {
        cmd = run.command;
      }
    }
    REQUIRE(cmd.pipeline.size() > 1);
    remote::Command meter(cmd.pipeline.at(1)); // sh -c '... pv ...' sh 0
    REQUIRE(meter.pipeline[0].size() == 5);
    CHECK(meter.pipeline[0].back() == "0");
    zmigrate::NullLogger log;
    remote::LocalRunner local(log);
    remote::Command through(remote::Argv{"printf", "%s", "twelve bytes"});
    through.pipe(meter.pipeline[0]).pipe({"wc", "-c"});
    const remote::Result r = local.run(through);
    CHECK(r.exit_status == 0);
    CHECK(r.out == "12\n");
    const auto tagged = parse_tagged_count(r.err.substr(0, r.err.find('\n')));
    REQUIRE(tagged);
    CHECK(*tagged == std::make_pair(std::size_t{0}, std::uint64_t{12}));
    CHECK_FALSE(parse_tagged_count("zmigrate-stream-bytes 0"));
    CHECK_FALSE(parse_tagged_count("zmigrate-stream-bytes x 5"));
    CHECK_FALSE(parse_tagged_count("12"));
  }
  SECTION("the markers run through a real /bin/sh; no marker, no arrival") {
    f.source.on_regex("zmigrate-stream-sent", fakes::ok()); // exit 0 without the markers
    CHECK_THROWS_WITH(path.send_streams(sends, false, {}, {}, on_bytes),
                      Catch::Contains("before this stream's end marker"));
    remote::Command cmd;
    for (const auto& run : f.source.runs) {
      if (run.command.pipeline.size() > 2) {
        cmd = run.command; // the sequence (the kill script ran after it)
      }
    }
    const remote::Argv& marker = cmd.pipeline.at(2);
    REQUIRE(marker.size() == 5);
    CHECK(marker[0] == "sh");
    const std::string out = remote::render(remote::Command(marker)) + " 2>&1";
    FILE* p = popen(out.c_str(), "r");
    REQUIRE(p != nullptr);
    char buf[128] = {};
    const std::size_t n = fread(buf, 1, sizeof buf - 1, p);
    pclose(p);
    CHECK(std::string(buf, n) == "zmigrate-stream-sent 0\n");
  }
}
