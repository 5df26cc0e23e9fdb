// SPDX-License-Identifier: MPL-2.0
// Bad arguments are refused locally: exit 2 and one line on stderr, before any configuration is
// read or any service asked (the endpoints below do not exist; a request would fail otherwise).
#include <zmigrate/cli/app.hpp>
#include <zmigrate/util/arguments.hpp>
#include <zmigrate/util/error.hpp>

#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

using namespace zmigrate;

namespace {

struct Outcome {
  int rc = -1;
  std::string err;
  std::string out;
};

// cli::run in a child process (it installs signal handlers and prints), stdout and stderr
// captured in files.
Outcome run_cli(std::vector<std::string> args) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("zmigrate-args-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string err_path = (dir / "err").string();
  const std::string out_path = (dir / "out").string();
  // Nothing buffered may be inherited and written twice by the child.
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int null = ::open("/dev/null", O_RDONLY);
    if (err < 0 || out < 0 || null < 0) {
      ::_exit(99);
    }
    ::dup2(err, STDERR_FILENO);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(null, STDIN_FILENO);
    // Nothing real to reach: a request would fail with exit 5, not the usage error expected.
    ::setenv("ZMIGRATE_CONFIG", (dir / "no-such-config.json").c_str(), 1);
    ::setenv("VMAPI_URL", "http://127.0.0.1:9", 1);
    ::setenv("CNAPI_URL", "http://127.0.0.1:9", 1);
    ::setenv("ZMIGRATE_STATE_DIR", (dir / "state").c_str(), 1);
    ::setenv("ZMIGRATE_LOG_DIR", (dir / "log").c_str(), 1);
    args.insert(args.begin(), "zmigrate");
    std::vector<char*> argv;
    for (std::string& a : args) {
      argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    const int rc = cli::run(static_cast<int>(args.size()), argv.data());
    std::fflush(stdout);
    std::fflush(stderr);
    ::_exit(rc);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  Outcome o;
  o.rc = WEXITSTATUS(status);
  auto slurp = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  o.err = slurp(err_path);
  o.out = slurp(out_path);
  std::filesystem::remove_all(dir);
  return o;
}

std::size_t lines(const std::string& text) {
  std::size_t n = 0;
  for (char c : text) {
    n += c == '\n' ? 1 : 0;
  }
  return n;
}

const std::string k_vm = "ef375f03-57ca-44a9-bc8d-63aec09fbc37";

} // namespace

TEST_CASE("zmigrate::require_vm_argument / require_node_argument", "[cli]") {
  CHECK_NOTHROW(require_vm_argument(k_vm));
  CHECK_NOTHROW(require_vm_argument("EF375F03-57CA-44A9-BC8D-63AEC09FBC37"));
  for (const char* bad :
       {"", "web01", "; rm -rf /", "$(id)", "-n", "ef375f03-57ca-44a9-bc8d-63aec09fbc3",
        "ef375f03-57ca-44a9-bc8d-63aec09fbc37\n"}) {
    INFO(bad);
    CHECK_THROWS_AS(require_vm_argument(bad), UsageError);
  }
  try {
    require_vm_argument("a\nb");
    FAIL("no throw");
  } catch (const UsageError& e) {
    CHECK(e.exit_code() == ExitCode::usage);
    CHECK(std::string(e.what()).find('\n') == std::string::npos);
    CHECK(e.subject() == "VM \"a\\x0ab\"");
  }
  for (const char* good :
       {"cn1", "headnode", "CN-01.lab", "cn_2", "564d0000-0000-4000-8000-000000000001"}) {
    INFO(good);
    CHECK_NOTHROW(require_node_argument("--target", good));
  }
  for (const char* bad : {"", "-cn1", ".cn1", "cn1; id", "$(id)", "cn 1", "cn1/x", "cn1\n"}) {
    INFO(bad);
    CHECK_THROWS_AS(require_node_argument("--target", bad), UsageError);
  }
}

TEST_CASE("cli: a VM argument that is not a UUID is a one-line usage error", "[cli]") {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"begin", "web01"},
                                             {"begin", "-n", "cn2", "$(id)"},
                                             {"migrate", "-n", "cn2", "web01"},
                                             {"sync", "web01"},
                                             {"switch", "; rm -rf /"},
                                             {"rollback", "web01"},
                                             {"abort", "web01"},
                                             {"finalize", "-y", "web01"},
                                             {"finalize", "web01"}}) {
    INFO(args[0] << " " << args.back());
    const Outcome o = run_cli(args);
    CHECK(o.rc == 2);
    CHECK(lines(o.err) == 1);
    CHECK_THAT(o.err, Catch::StartsWith("zmigrate: error: VM \"") &&
                          Catch::Contains("not an instance UUID"));
    CHECK(o.out.empty());
  }
}

TEST_CASE("cli: a --target that is neither a UUID nor a hostname is a usage error", "[cli]") {
  for (const std::string& cmd : {std::string("begin"), std::string("migrate")}) {
    const Outcome o = run_cli({cmd, "-n", "cn2; id", k_vm});
    CHECK(o.rc == 2);
    CHECK(lines(o.err) == 1);
    CHECK_THAT(o.err,
               Catch::StartsWith("zmigrate: error: --target \"cn2; id\": not a compute node"));
  }
}

TEST_CASE("cli: --version prints the version and exits 0", "[cli]") {
  const Outcome o = run_cli({"--version"});
  CHECK(o.rc == 0);
  CHECK(o.out == std::string("zmigrate ") + ZMIGRATE_VERSION + "\n");
  CHECK(o.err.empty());
}

TEST_CASE("cli: a bad --rate or an unknown option is one line and exit 2", "[cli]") {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"estimate", "--rate", "0", k_vm},
                                             {"estimate", "--rate", "-3", k_vm},
                                             {"estimate", "--rate", "fast", k_vm},
                                             {"estimate", "--rate", "1e999", k_vm},
                                             {"abort", "--yes", k_vm}}) {
    INFO(args[1] << " " << args[2]);
    const Outcome o = run_cli(args);
    CHECK(o.rc == 2);
    CHECK(lines(o.err) == 1);
    CHECK_THAT(o.err, Catch::StartsWith("zmigrate: error: "));
    CHECK(o.err.size() < 200); // no 300-digit bound
    CHECK(o.out.empty());
  }
  CHECK_THAT(run_cli({"estimate", "--rate", "0", k_vm}).err,
             Catch::Contains("--rate: \"0\" is not a rate in MiB/s above 0"));
}
