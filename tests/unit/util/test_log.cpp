// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/log.hpp>

#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>

using zmigrate::BunyanLogger;
using zmigrate::LogLevel;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "zmigrate-log-XXXXXX").string();
    REQUIRE(::mkdtemp(t.data()) != nullptr);
    path = t;
  }
  ~TempDir() { fs::remove_all(path); }
};

std::vector<nlohmann::json> read_lines(const fs::path& file) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(nlohmann::json::parse(line));
  }
  return lines;
}

// Captures what is written to fd 2 while alive.
class StderrCapture {
public:
  explicit StderrCapture(const fs::path& file) : m_file(file) {
    m_saved = ::dup(STDERR_FILENO);
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, STDERR_FILENO);
    ::close(fd);
  }
  ~StderrCapture() { restore(); }
  std::string text() {
    restore();
    std::ifstream in(m_file);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

private:
  void restore() {
    if (m_saved >= 0) {
      ::dup2(m_saved, STDERR_FILENO);
      ::close(m_saved);
      m_saved = -1;
    }
  }
  fs::path m_file;
  int m_saved = -1;
};

} // namespace

TEST_CASE("zmigrate::BunyanLogger", "[util]") {
  TempDir tmp;
  const fs::path file = tmp.path / "a" / "b" / "zmigrate.log";
  BunyanLogger log("zmigrate");

  SECTION("writes bunyan lines, creating parents 0700 and the file 0600") {
    const mode_t old_mask = ::umask(022);
    log.set_file(file.string());
    ::umask(old_mask);
    log.set_base_field("migration_id", "m-1");
    log.info("begin", {{"vm_uuid", "u-1"}, {"bytes", 42}});
    log.debug("no fields");
    const std::vector<nlohmann::json> lines = read_lines(file);
    REQUIRE(lines.size() == 2);
    const nlohmann::json& l = lines[0];
    CHECK(l["name"] == "zmigrate");
    CHECK(l["hostname"].is_string());
    CHECK(l["pid"] == static_cast<long>(::getpid()));
    CHECK(l["level"] == 30);
    CHECK(l["msg"] == "begin");
    CHECK(l["v"] == 0);
    CHECK(l["migration_id"] == "m-1");
    CHECK(l["vm_uuid"] == "u-1");
    CHECK(l["bytes"] == 42);
    CHECK(std::regex_match(l["time"].get<std::string>(),
                           std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")));
    CHECK(lines[1]["level"] == 20);
    CHECK(lines[1]["migration_id"] == "m-1");

    struct stat st {};
    REQUIRE(::stat(file.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    REQUIRE(::stat(file.parent_path().c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
  }

  SECTION("private whatever the umask: 0700 directories and a 0600 file under umask 000 or 777") {
    for (const mode_t mask : {mode_t{0}, mode_t{0777}}) {
      INFO("umask " << mask);
      fs::remove_all(tmp.path / "a");
      const mode_t old_mask = ::umask(mask);
      BunyanLogger l("zmigrate");
      l.set_file(file.string());
      ::umask(old_mask);
      l.info("x");
      struct stat st {};
      REQUIRE(::stat(file.c_str(), &st) == 0);
      CHECK((st.st_mode & 0777) == 0600);
      for (const fs::path& dir : {file.parent_path(), file.parent_path().parent_path()}) {
        REQUIRE(::stat(dir.c_str(), &st) == 0);
        CHECK((st.st_mode & 0777) == 0700);
      }
      CHECK(read_lines(file).size() == 1);
    }
  }

  SECTION("an existing directory and file keep their modes (the operator's)") {
    fs::create_directories(file.parent_path());
    ::chmod(file.parent_path().c_str(), 0755);
    { std::ofstream(file.string()) << ""; }
    ::chmod(file.c_str(), 0640);
    const mode_t old_mask = ::umask(0);
    log.set_file(file.string());
    ::umask(old_mask);
    struct stat st {};
    REQUIRE(::stat(file.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0640);
    REQUIRE(::stat(file.parent_path().c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0755);
  }

  SECTION("a symlink in place of the log file is not followed") {
    fs::create_directories(file.parent_path());
    fs::create_symlink(tmp.path / "elsewhere", file);
    CHECK_THROWS_AS(log.set_file(file.string()), zmigrate::Error);
    CHECK_FALSE(fs::exists(tmp.path / "elsewhere"));
  }

  SECTION("the file is opened close-on-exec") {
    log.set_file(file.string());
    bool found = false;
    for (const fs::directory_entry& e : fs::directory_iterator("/proc/self/fd")) {
      std::error_code ec;
      if (fs::read_symlink(e.path(), ec) == file) {
        const int fd = std::stoi(e.path().filename().string());
        CHECK((::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
        CHECK((::fcntl(fd, F_GETFL) & O_APPEND) != 0);
        found = true;
      }
    }
    CHECK(found);
  }

  SECTION("appends to an existing file; set_file switches destination") {
    log.set_file(file.string());
    log.info("one");
    BunyanLogger other("zmigrate");
    other.set_file(file.string());
    other.info("two");
    const fs::path second = tmp.path / "second.log";
    log.set_file(second.string());
    log.info("three");
    const std::vector<nlohmann::json> lines = read_lines(file);
    REQUIRE(lines.size() == 2);
    CHECK(lines[0]["msg"] == "one");
    CHECK(lines[1]["msg"] == "two");
    REQUIRE(read_lines(second).size() == 1);
  }

  SECTION("lines before the first file go into it, with the base fields set by then") {
    log.info("validating", {{"host", "cn1"}});
    log.debug("remote command", {{"argv", "zfs list"}});
    log.set_base_field("migration_id", "m-9");
    log.set_file(file.string());
    log.info("after");
    const fs::path second = tmp.path / "second.log";
    log.set_file(second.string());
    const std::vector<nlohmann::json> lines = read_lines(file);
    REQUIRE(lines.size() == 3);
    CHECK(lines[0]["msg"] == "validating");
    CHECK(lines[0]["host"] == "cn1");
    CHECK(lines[0]["migration_id"] == "m-9");
    CHECK(lines[1]["level"] == 20);
    CHECK(lines[2]["msg"] == "after");
    CHECK(read_lines(second).empty()); // replayed once, into the first file only
  }

  SECTION("call fields override base fields; core keys cannot be overridden") {
    log.set_file(file.string());
    log.set_base_field("host", "base");
    log.set_base_field("gone", 1);
    log.set_base_field("gone", nullptr);
    log.warn("m", {{"host", "call"}, {"msg", "evil"}, {"level", 99}, {"v", 7}, {"time", "x"}});
    log.error("m", nlohmann::json::array({1, 2}));
    const std::vector<nlohmann::json> lines = read_lines(file);
    REQUIRE(lines.size() == 2);
    CHECK(lines[0]["host"] == "call");
    CHECK(lines[0]["msg"] == "m");
    CHECK(lines[0]["level"] == 40);
    CHECK(lines[0]["v"] == 0);
    CHECK(lines[0]["time"] != "x");
    CHECK_FALSE(lines[0].contains("gone"));
    CHECK(lines[1]["data"] == nlohmann::json::array({1, 2}));
  }

  SECTION("invalid UTF-8 and newlines never break a line") {
    log.set_file(file.string());
    log.info("bad \xff\xfe utf8\nsecond line", {{"err", "x\xc3"}});
    const std::vector<nlohmann::json> lines = read_lines(file);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0]["msg"] == "bad \xef\xbf\xbd\xef\xbf\xbd utf8\nsecond line");
  }

  SECTION("stderr mirror in human form, from the threshold up") {
    StderrCapture capture(tmp.path / "stderr");
    log.info("not mirrored");
    log.set_stderr_level(LogLevel::debug);
    log.trace("below threshold");
    log.debug("remote command",
              {{"host", "cn1"}, {"argv", "zfs list -H"}, {"exit_status", 0}, {"ok", true}});
    log.warn("two\nlines");
    const std::string text = capture.text();
    CHECK(text == "zmigrate[debug]: remote command argv=\"zfs list -H\" exit_status=0 host=cn1 "
                  "ok=true\n"
                  "zmigrate[warn]: two\\nlines\n");
  }

  SECTION("without a file nothing is written and nothing fails") {
    log.info("nowhere");
    SUCCEED();
  }

  SECTION("set_file fails with the path and the reason") {
    const fs::path blocker = tmp.path / "blocker";
    std::ofstream(blocker) << "x";
    try {
      log.set_file((blocker / "sub" / "x.log").string());
      FAIL("no exception");
    } catch (const zmigrate::Error& e) {
      CHECK(e.subject() == (blocker / "sub").string());
      CHECK_THAT(e.reason(), Catch::Contains("Not a directory"));
      CHECK_THAT(e.reason(), Catch::Contains("cannot create log directory"));
    }
  }

  SECTION("thread-safe: concurrent lines stay whole") {
    log.set_file(file.string());
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&log, t] {
        for (int i = 0; i < 500; ++i) {
          log.info("line", {{"thread", t}, {"i", i}, {"pad", std::string(200, 'p')}});
        }
      });
    }
    for (std::thread& th : threads) {
      th.join();
    }
    CHECK(read_lines(file).size() == 2000);
  }
}

TEST_CASE("zmigrate::level_name", "[util]") {
  CHECK(zmigrate::level_name(LogLevel::trace) == "trace");
  CHECK(zmigrate::level_name(LogLevel::warn) == "warn");
  CHECK(zmigrate::level_name(LogLevel::fatal) == "fatal");
}
