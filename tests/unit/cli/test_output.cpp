// SPDX-License-Identifier: MPL-2.0
// TerminalReporter: what --quiet and --json leave on stdout.
#include <zmigrate/cli/output.hpp>

#include <cstdio>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using namespace zmigrate;
using namespace zmigrate::cli;

namespace {

// Everything the reporter printed for one sync's worth of events and its final line.
std::string printed(OutputStyle style) {
  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  {
    TerminalReporter r(style, f);
    r.phase_started("sync", "");
    r.step("syncing data");
    state::Progress p;
    p.phase = state::Phase::sync;
    p.state = state::State::running;
    p.current = 42;
    p.total = 100;
    r.progress(p);
    r.note("the target pool has 10% free");
    r.result_line("OK - sync was successful");
  }
  std::rewind(f);
  std::string out;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
    out.append(buf, n);
  }
  std::fclose(f);
  return out;
}

} // namespace

TEST_CASE("cli: --quiet leaves only the final result on stdout", "[cli]") {
  OutputStyle quiet;
  quiet.quiet = true;
  CHECK(printed(quiet) == "OK - sync was successful\n");
  OutputStyle plain;
  const std::string all = printed(plain);
  CHECK_THAT(all, Catch::Contains("# Migration sync running") &&
                      Catch::Contains(" - syncing data") && Catch::Contains("42%") &&
                      Catch::Contains("note: the target pool") &&
                      Catch::EndsWith("OK - sync was successful\n"));
}
