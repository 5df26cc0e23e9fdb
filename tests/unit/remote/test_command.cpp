// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/remote/command.hpp>
#include <zmigrate/remote/local_runner.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/log.hpp>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

using zmigrate::UsageError;
using zmigrate::remote::Argv;
using zmigrate::remote::Command;
using zmigrate::remote::command_summary;
using zmigrate::remote::quote;
using zmigrate::remote::render;
using zmigrate::remote::render_for_log;

namespace {

const std::vector<std::string>& hostile_tokens() {
  static const std::vector<std::string> tokens = {
      "",
      " ",
      "a b",
      "$(touch /tmp/zmigrate-pwned)",
      "`touch /tmp/zmigrate-pwned`",
      "${HOME}",
      "$HOME",
      "a;b",
      "a && b",
      "a || b",
      "a|b",
      "a&",
      "line1\nline2",
      "\n",
      "trailing newline\n",
      "'",
      "''",
      "it's",
      "\"",
      "\"quoted\" 'both'",
      "'\\''",
      "\\",
      "back\\slash\\",
      "*",
      "?",
      "[a-z]*",
      "{a,b}",
      "~",
      "~root",
      "#comment",
      "-n",
      "--help",
      "-",
      "!",
      "if",
      "A=b",
      "<in",
      ">out",
      "2>&1",
      "tab\there",
      "cr\rlf",
      "\x01\x02\x1b[31mred",
      "\x7f",
      "caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x90\x9f",
      "\xff\xfe invalid utf-8 \x80",
      "%s%n%d",
      "\\n",
      std::string(5000, 'x') + "'",
  };
  return tokens;
}

// Runs `cmd` through the real /bin/sh and returns its stdout.
std::string sh_output(const Command& cmd) {
  zmigrate::NullLogger log;
  zmigrate::remote::LocalRunner runner(log);
  zmigrate::remote::Result r = runner.run(cmd);
  INFO("command: " << render(cmd) << "\nstderr: " << r.err);
  REQUIRE(r.exit_status == 0);
  return r.out;
}

std::string bracketed(const std::vector<std::string>& tokens) {
  std::string s;
  for (const std::string& t : tokens) {
    s += "[" + t + "]";
  }
  return s;
}

} // namespace

TEST_CASE("remote::quote", "[remote]") {
  SECTION("safe tokens stay readable") {
    for (const char* t : {"zfs", "zones/8a1e-4c@zm-20261122T010203Z", "-o", "name,used,guid",
                          "key=value", "100%", "user@host", "a+b", "host:/path", "./rel", "-"}) {
      CHECK(quote(t) == t);
    }
  }
  SECTION("everything else is single-quoted") {
    CHECK(quote("") == "''");
    CHECK(quote("a b") == "'a b'");
    CHECK(quote("it's") == "'it'\\''s'");
    CHECK(quote("'") == "''\\'''");
    CHECK(quote("$(id)") == "'$(id)'");
    CHECK(quote("a\nb") == "'a\nb'");
    CHECK(quote("~") == "'~'");
    CHECK(quote("caf\xc3\xa9") == "'caf\xc3\xa9'");
    for (const std::string& t : hostile_tokens()) {
      const std::string q = quote(t);
      if (q != t) { // "-n", "if", "A=b" are plain words to quote(); render() handles position
        REQUIRE(q.size() >= 2);
        CHECK(q.front() == '\'');
        CHECK(q.back() == '\'');
      }
    }
  }
  SECTION("NUL is refused") {
    CHECK_THROWS_AS(quote(std::string("a\0b", 3)), UsageError);
    CHECK_THROWS_WITH(quote(std::string("\0", 1)), Catch::Contains("NUL"));
  }
}

TEST_CASE("remote::render", "[remote]") {
  SECTION("single argv") {
    CHECK(render(Command{{"zfs", "list", "-H", "-o", "name"}}) == "zfs list -H -o name");
    CHECK(render(Command{{"echo", "a b", ""}}) == "echo 'a b' ''");
  }
  SECTION("pipeline and redirections") {
    Command c{{"zfs", "send", "zones/a@s1"}};
    c.pipe({"pv", "-n"}).pipe({"ssh", "cn2", "zfs recv zones/a"});
    CHECK(render(c) == "zfs send zones/a@s1 | pv -n | ssh cn2 'zfs recv zones/a'");
    c.stdin_path = "/var/tmp/in put";
    c.stdout_path = "/var/tmp/it's";
    c.stderr_to_stdout_last = true;
    CHECK(render(c) == "zfs send zones/a@s1 < '/var/tmp/in put' | pv -n | ssh cn2 "
                       "'zfs recv zones/a' > '/var/tmp/it'\\''s' 2>&1");
  }
  SECTION("a first token the shell would not run as a command is quoted") {
    CHECK(render(Command{{"if", "true"}}) == "'if' true");
    CHECK(render(Command{{"!", "true"}}) == "'!' true");
    CHECK(render(Command{{"A=b", "c=d"}}) == "'A=b' c=d");
    CHECK(render(Command{{"echo"}}.pipe({"{"})) == "echo | '{'");
  }
  SECTION("a sequence: the next command only after the previous one succeeded") {
    Command c{{"zfs", "release", "zmigrate-1", "zones/a@s1"}};
    c.and_then({"zfs", "destroy", "-r", "zones/a@s1"}).and_then({"zfs", "destroy", "x y@s1"});
    CHECK(render(c) == "zfs release zmigrate-1 zones/a@s1 && zfs destroy -r zones/a@s1 && zfs "
                       "destroy 'x y@s1'");
    Command mixed{{"echo", "a"}};
    mixed.pipe({"tr", "a", "b"}).and_then({"if"});
    CHECK(render(mixed) == "echo a | tr a b && 'if'");
    Command redirected{{"cat"}};
    redirected.and_then({"cat"});
    redirected.stdout_path = "/tmp/x";
    CHECK_THROWS_AS(render(redirected), UsageError);
    // append_sequence: pipelines one after another, each keeping its pipes and redactions.
    Command seq;
    zmigrate::remote::append_sequence(seq, Command{{"zfs", "send", "a@1"}}.pipe({"ssh", "t"}));
    Command second{{"printf", "%s", "secret"}};
    second.pipe({"ssh", "t"}).redact_token(0, 2);
    zmigrate::remote::append_sequence(seq, second);
    zmigrate::remote::append_sequence(seq, Command{});
    Command third{{"zfs", "release", "t", "a@0"}};
    third.and_then({"zfs", "destroy", "a@0"});
    zmigrate::remote::append_sequence(seq, third);
    CHECK(render(seq) == "zfs send a@1 | ssh t && printf %s secret | ssh t && zfs release t a@0 && "
                         "zfs destroy a@0");
    CHECK(zmigrate::remote::render_for_log(seq).find("secret") == std::string::npos);
    Command to_file{{"cat"}};
    to_file.stdout_path = "/tmp/x";
    CHECK_THROWS_AS(zmigrate::remote::append_sequence(seq, to_file), UsageError);
    Command bad_start{{"cat"}};
    bad_start.sequence_starts = {0};
    CHECK_THROWS_AS(render(bad_start), UsageError);
    bad_start.sequence_starts = {1};
    CHECK_THROWS_AS(render(bad_start), UsageError);
  }
  SECTION("concurrent lanes: each in the background, a wait for each, then the rest") {
    Command c;
    Command first{{"zfs", "send", "a@1"}};
    first.pipe({"ssh", "t"}).and_then({"echo", "0"});
    Command second{{"printf", "%s", "secret"}};
    second.redact_token(0, 2);
    zmigrate::remote::append_concurrent(c, {first, Command{}, second});
    CHECK(render(c) == "zfs send a@1 | ssh t && echo 0 & zm_l0=$!; printf %s secret & "
                       "zm_l1=$!; zm_s=0; wait \"$zm_l0\" || zm_s=$?; wait \"$zm_l1\" || "
                       "zm_s=$?; (exit \"$zm_s\")");
    CHECK(zmigrate::remote::render_for_log(c).find("secret") == std::string::npos);
    zmigrate::remote::append_sequence(c, Command{{"zfs", "release", "t", "a@0"}});
    const std::string joined = render(c);
    const std::string end = "(exit \"$zm_s\") && zfs release t a@0";
    CHECK(joined.substr(joined.size() - end.size()) == end);
    // One lane (or none) is a plain sequence.
    Command one;
    zmigrate::remote::append_concurrent(one, {Command{}, first});
    CHECK(render(one) == "zfs send a@1 | ssh t && echo 0");
    CHECK(one.lanes_end == 0);
    // Lanes only start a command, never nest, never redirect.
    CHECK_THROWS_AS(zmigrate::remote::append_concurrent(one, {first, second}), UsageError);
    Command nested;
    CHECK_THROWS_AS(zmigrate::remote::append_concurrent(nested, {c, first}), UsageError);
    CHECK_THROWS_AS(zmigrate::remote::append_sequence(nested, c), UsageError);
    Command to_file{{"cat"}};
    to_file.stdout_path = "/tmp/x";
    CHECK_THROWS_AS(zmigrate::remote::append_concurrent(nested, {first, to_file}), UsageError);
    Command bad = c;
    bad.stdout_path = "/tmp/x";
    CHECK_THROWS_AS(render(bad), UsageError);
    bad = c;
    bad.lanes_end = 1; // inside the first lane's pipe, not a command's start
    CHECK_THROWS_AS(render(bad), UsageError);
    bad = c;
    bad.lane_starts = {2}; // a sequence start inside a lane
    CHECK_THROWS_AS(render(bad), UsageError);
    Command stray{{"cat"}};
    stray.lane_starts = {1};
    CHECK_THROWS_AS(render(stray), UsageError);
  }
  SECTION("refusals") {
    CHECK_THROWS_AS(render(Command{}), UsageError);
    CHECK_THROWS_AS(render(Command{Argv{}}), UsageError);
    CHECK_THROWS_AS(render(Command{{"ls"}}.pipe({})), UsageError);
    Command rel{{"cat"}};
    rel.stdin_path = "relative";
    CHECK_THROWS_AS(render(rel), UsageError);
    Command nul{{"cat"}};
    nul.stdout_path = std::string("/a\0b", 4);
    CHECK_THROWS_AS(render(nul), UsageError);
    Command bad_redact{{"cat"}};
    bad_redact.redact_token(0, 1);
    CHECK_THROWS_AS(render(bad_redact), UsageError);
  }
}

TEST_CASE("remote::render_for_log", "[remote]") {
  Command c{{"sh", "-c", "umask 077; cat > /root/.ssh/k", "SECRET-KEY"}};
  c.pipe({"tee", "SECRET2"}).redact_token(0, 3).redact_token(1, 1);
  const std::string logged = render_for_log(c);
  CHECK(logged == "sh -c 'umask 077; cat > /root/.ssh/k' <redacted> | tee <redacted>");
  CHECK(logged.find("SECRET") == std::string::npos);
  CHECK(render(c).find("SECRET-KEY") != std::string::npos);
  Command nul{{"echo", std::string("x\0", 2)}};
  nul.redact_token(0, 1);
  CHECK_THROWS_AS(render_for_log(nul), UsageError);
}

TEST_CASE("remote::command_summary", "[remote]") {
  CHECK(command_summary(Command{{"zfs", "destroy", "-r", "zones/a"}}) == "zfs destroy");
  CHECK(command_summary(Command{{"hostname"}}) == "hostname");
  CHECK(command_summary(Command{{"vmadm", "get", "a b"}}, 3) == "vmadm get 'a b'");
  CHECK(command_summary(Command{{"x", "secret"}}.redact_token(0, 1)) == "x <redacted>");
  CHECK(command_summary(Command{}) == "(empty command)");
}

TEST_CASE("remote::render through /bin/sh", "[remote]") {
  SECTION("each hostile token comes back exactly") {
    for (const std::string& t : hostile_tokens()) {
      CHECK(sh_output(Command{{"printf", "%s\\n", t}}) == t + "\n");
    }
  }
  SECTION("token boundaries survive: all hostile tokens in one argv") {
    Argv argv{"printf", "[%s]"};
    argv.insert(argv.end(), hostile_tokens().begin(), hostile_tokens().end());
    CHECK(sh_output(Command{argv}) == bracketed(hostile_tokens()));
  }
  SECTION("random byte strings") {
    std::mt19937 rng(20261122);
    std::uniform_int_distribution<int> byte(1, 255);
    std::uniform_int_distribution<int> length(0, 48);
    for (int i = 0; i < 300; ++i) {
      std::vector<std::string> tokens(3);
      for (std::string& t : tokens) {
        const int n = length(rng);
        for (int k = 0; k < n; ++k) {
          t += static_cast<char>(byte(rng));
        }
      }
      Argv argv{"printf", "[%s]"};
      argv.insert(argv.end(), tokens.begin(), tokens.end());
      CHECK(sh_output(Command{argv}) == bracketed(tokens));
    }
  }
  SECTION("a sequence stops at the first command that fails, with its status") {
    Command ok{{"printf", "%s", "a;b"}};
    ok.and_then({"printf", "%s", "$(c)"});
    CHECK(sh_output(ok) == "a;b$(c)");
    Command stops{{"sh", "-c", "exit 3"}};
    stops.and_then({"printf", "%s", "not reached"});
    zmigrate::NullLogger log;
    zmigrate::remote::LocalRunner runner(log);
    const zmigrate::remote::Result r = runner.run(stops);
    CHECK(r.exit_status == 3);
    CHECK(r.out.empty());
  }
  SECTION("concurrent lanes run at once; the rest runs only when every lane succeeded") {
    char dir_template[] = "/tmp/zmigrate-test-XXXXXX";
    REQUIRE(::mkdtemp(dir_template) != nullptr);
    const std::string dir = dir_template;
    const std::string fifo = dir + "/lane's fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    // The first lane reads what the second writes: one after the other they never end (the
    // runner's timeout fails the check); at once they do. Then the status of a failed lane, and
    // the command after them only when none failed. /bin/sh, and ksh93 (SmartOS's) when here.
    Command reader{{"sh", "-c", "read -r x < \"$1\"; echo \"got $x\"", "sh", fifo}};
    Command writer{{"sh", "-c", "echo hello > \"$1\"", "sh", fifo}};
    Command after{{"echo", "after"}};
    std::vector<Argv> shells{{}};
    for (const char* ksh : {"/usr/bin/ksh93", "/bin/ksh93", "/bin/ksh"}) {
      if (::access(ksh, X_OK) == 0) {
        shells.push_back({ksh, "-c"});
        break;
      }
    }
    zmigrate::NullLogger log;
    zmigrate::remote::LocalRunner runner(log);
    zmigrate::remote::RunOptions opts;
    opts.timeout = std::chrono::seconds(20);
    const auto run = [&](const Argv& shell, const Command& c) {
      if (shell.empty()) {
        return runner.run(c, opts);
      }
      Argv argv = shell;
      argv.push_back(render(c));
      return runner.run(Command{argv}, opts);
    };
    for (const Argv& shell : shells) {
      INFO("shell: " << (shell.empty() ? std::string("/bin/sh") : shell.front()));
      Command both;
      zmigrate::remote::append_concurrent(both, {reader, writer});
      zmigrate::remote::append_sequence(both, after);
      const zmigrate::remote::Result r = run(shell, both);
      CHECK(r.exit_status == 0);
      CHECK(r.out == "got hello\nafter\n");
      Command fails;
      zmigrate::remote::append_concurrent(
          fails, {Command{{"sh", "-c", "exit 3"}}, Command{{"echo", "other lane"}}});
      zmigrate::remote::append_sequence(fails, after);
      const zmigrate::remote::Result f = run(shell, fails);
      CHECK(f.exit_status == 3);
      CHECK(f.out == "other lane\n"); // the other lane ran to its end; `after` did not run
      Command last_fails;
      zmigrate::remote::append_concurrent(
          last_fails, {Command{{"echo", "first lane"}}, Command{{"sh", "-c", "exit 4"}}});
      CHECK(run(shell, last_fails).exit_status == 4);
    }
    CHECK(::unlink(fifo.c_str()) == 0);
    CHECK(::rmdir(dir.c_str()) == 0);
  }
  SECTION("pipelines and redirections to a hostile path") {
    char dir_template[] = "/tmp/zmigrate-test-XXXXXX";
    REQUIRE(::mkdtemp(dir_template) != nullptr);
    const std::string dir = dir_template;
    const std::string path = dir + "/it's a $(file) `x` *";
    Command write{{"printf", "%s\\n", "a'b"}};
    write.pipe({"tr", "a", "A"});
    write.stdout_path = path;
    CHECK(sh_output(write).empty());
    Command read{{"cat"}};
    read.stdin_path = path;
    read.pipe({"cat"});
    CHECK(sh_output(read) == "A'b\n");
    std::ifstream f(path);
    std::stringstream content;
    content << f.rdbuf();
    CHECK(content.str() == "A'b\n");
    CHECK(::unlink(path.c_str()) == 0);
    CHECK(::rmdir(dir.c_str()) == 0);
  }
  SECTION("reserved words and assignments stay command names") {
    zmigrate::NullLogger log;
    zmigrate::remote::LocalRunner runner(log);
    CHECK(runner.run(Command{{"!", "false"}}).exit_status == 127);
    CHECK(runner.run(Command{{"A=b", "true"}}).exit_status == 127);
  }
  CHECK(::access("/tmp/zmigrate-pwned", F_OK) != 0);
}
