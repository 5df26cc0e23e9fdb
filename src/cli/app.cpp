// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/cli/app.hpp>
#include <zmigrate/cli/commands.hpp>
#include <zmigrate/cli/runtime.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/interrupt.hpp>

#include <cstdio>
#include <iostream>

#include <fmt/format.h>

namespace zmigrate::cli {

namespace {

// The subcommands, in the order `--help` lists them.
std::vector<CommandSpec> command_table() {
  return {migrate_command(),  begin_command(),    sync_command(),     pause_command(),
          switch_command(),   rollback_command(), finalize_command(), abort_command(),
          evacuate_command(), restore_command(),  estimate_command(), watch_command(),
          list_command(),     get_command(),      cleanup_command()};
}

} // namespace

const std::vector<LocationOption>& location_options() {
  static const std::vector<LocationOption> options{
      {"--config", "config",
       "Configuration file (default $ZMIGRATE_CONFIG or /etc/zmigrate/config.json)",
       &GlobalOptions::config_file},
      {"--state-dir", "state_dir", "State directory (default /var/lib/zmigrate)",
       &GlobalOptions::state_dir},
      {"--log-dir", "log_dir", "Log directory (default /var/log/zmigrate)",
       &GlobalOptions::log_dir},
      {"--vmapi-url", "vmapi_url", "VMAPI URL (overrides $VMAPI_URL)", &GlobalOptions::vmapi_url},
      {"--cnapi-url", "cnapi_url", "CNAPI URL (overrides $CNAPI_URL)", &GlobalOptions::cnapi_url},
      {"--napi-url", "napi_url", "NAPI URL (overrides $NAPI_URL)", &GlobalOptions::napi_url},
      {"--imgapi-url", "imgapi_url", "IMGAPI URL (overrides $IMGAPI_URL)",
       &GlobalOptions::imgapi_url},
  };
  return options;
}

std::unique_ptr<CLI::App> build_app(GlobalOptions& g, std::vector<CommandSpec>* specs_out) {
  auto app = std::make_unique<CLI::App>(
      "zmigrate: move Triton instances between compute nodes with zfs send/recv over ssh,\n"
      "keeping them running while they sync and switching with seconds of downtime.",
      "zmigrate");
  app->require_subcommand(1);
  app->set_version_flag("--version", std::string("zmigrate ") + ZMIGRATE_VERSION);
  // One error policy for the command line too: one line, as every other error.
  app->failure_message([](const CLI::App*, const CLI::Error& e) {
    std::string what = e.what();
    while (!what.empty() && (what.back() == '\n' || what.back() == ' ')) {
      what.pop_back();
    }
    return "zmigrate: error: " + what + " (see \"zmigrate --help\")\n";
  });
  app->option_defaults()->always_capture_default(false);
  for (const LocationOption& o : location_options()) {
    app->add_option(o.flag, g.*o.member, o.help);
  }
  app->add_flag("-j,--json", g.json, "Machine-readable JSON output");
  app->add_flag("-q,--quiet", g.quiet, "Only errors and the final result (for cron)");
  app->add_flag("--no-color,--no-ansi", g.no_color, "No escape codes or live progress line");
  app->add_flag("-v,--verbose", g.verbose, "Mirror debug log lines to stderr (twice: trace)");
  app->add_flag("--take-over", g.take_over,
                "Take over a migration whose lease is held by a zmigrate on another head node "
                "with a stale heartbeat (only when that process is really gone)");
  app->footer("Exit status: 0 ok, 1 failed, 2 usage, 3 not found, 4 refused by the migration "
              "state, 5 inventory API, 6 ssh, 7 zfs, 8 state store, 9 configuration, 130 "
              "interrupted. See zmigrate(1).");
  std::vector<CommandSpec> specs = command_table();
  for (CommandSpec& spec : specs) {
    CLI::App* sub = app->add_subcommand(spec.name, spec.description);
    // Global options may follow the subcommand: `zmigrate estimate --server cn1 --json`.
    sub->fallthrough();
    spec.declare(*sub);
  }
  if (specs_out != nullptr) {
    *specs_out = std::move(specs);
  }
  return app;
}

int run(int argc, char** argv) {
  GlobalOptions globals;
  std::vector<CommandSpec> specs;
  std::unique_ptr<CLI::App> app;
  try {
    app = build_app(globals, &specs);
    app->parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app ? app->exit(e) : 1;
    return rc == 0 ? 0 : static_cast<int>(ExitCode::usage);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zmigrate: error: %s\n", e.what());
    return static_cast<int>(ExitCode::usage);
  }
  install_interrupt_handlers();
  try {
    for (CommandSpec& spec : specs) {
      if (app->got_subcommand(spec.name)) {
        Runtime runtime(globals);
        return spec.run(runtime);
      }
    }
    return static_cast<int>(ExitCode::usage);
  } catch (const Error& e) {
    std::fflush(stdout);
    std::string why = e.reason();
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) {
      why.pop_back();
    }
    std::fprintf(stderr, "zmigrate: error: %s: %s\n", e.subject().c_str(), why.c_str());
    return static_cast<int>(e.exit_code());
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "zmigrate: error: %s\n", e.what());
    return static_cast<int>(ExitCode::failure);
  }
}

} // namespace zmigrate::cli
