// SPDX-License-Identifier: MPL-2.0
#pragma once
// The command line: global options, the table of subcommands, dispatch, and the one catch site
// that turns exceptions into "zmigrate: error: <what>: <why>" and an exit code.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace zmigrate::cli {

struct GlobalOptions {
  std::string config_file;
  std::string state_dir;
  std::string log_dir;
  std::string vmapi_url;
  std::string cnapi_url;
  std::string napi_url;
  std::string imgapi_url;
  bool json = false;
  bool quiet = false;
  bool no_color = false;
  int verbose = 0;
  bool take_over = false; // --take-over: Settings::take_over_remote_lease
};

// The global options that say where the configuration, state, logs and APIs are: one table for
// their declaration (build_app), the configuration's flag layer (Runtime::config) and the command
// line of the migrations an evacuation runs as processes (migrate_argv), so a new one reaches all
// three.
struct LocationOption {
  const char* flag; // "--state-dir"
  const char* key;  // configuration key: "state_dir"
  const char* help;
  std::string GlobalOptions::*member;
};
const std::vector<LocationOption>& location_options();

class Runtime;

// One row of the subcommand table: name, one-line description, how to declare its options and
// how to run it once parsed.
struct CommandSpec {
  std::string name;
  std::string description;
  std::function<void(CLI::App&)> declare;
  std::function<int(Runtime&)> run;
};

// The whole CLI definition with every subcommand (used by main and by the docs tests, which walk
// it to check the man page and completions). `specs` receives the table when not null; the
// subcommands' options write into storage the table owns, so parse only with `specs` given and
// alive (with nullptr the app is for reading its definition only).
std::unique_ptr<CLI::App> build_app(GlobalOptions& globals, std::vector<CommandSpec>* specs);

// Parse `argv`, run the chosen subcommand, and return the process exit code. Never throws.
int run(int argc, char** argv);

} // namespace zmigrate::cli
