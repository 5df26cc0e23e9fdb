// SPDX-License-Identifier: MPL-2.0
// zmigrate estimate VM | --server CN: bytes a full sync sends and the time at a rate.
#include <zmigrate/cli/commands.hpp>
#include <zmigrate/cli/output.hpp>
#include <zmigrate/cli/runtime.hpp>
#include <zmigrate/migration/estimate.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/units.hpp>

#include <cmath>
#include <memory>
#include <string>

#include <fmt/format.h>

namespace zmigrate::cli {

namespace {

// A rate > 0 in MiB/s, named in the message (CLI::PositiveNumber prints a 300-digit bound).
CLI::Validator positive_rate() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double v = 0;
        std::size_t used = 0;
        try {
          v = std::stod(text, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used == 0 || used != text.size() || !std::isfinite(v) || v <= 0) {
          return "\"" + text + "\" is not a rate in MiB/s above 0 (e.g. 110 for a 1 Gbit/s link)";
        }
        return "";
      },
      "MiB/s > 0");
}

} // namespace

namespace {

std::string seconds_text(double s) {
  return human_duration(std::chrono::milliseconds(static_cast<long long>(s * 1000)));
}

void print_instance(TerminalReporter& out, const migration::InstanceEstimate& e) {
  out.result_line(fmt::format("{}  {:<14} {:<8} {:<8} {:>9}{}  {}", e.vm_uuid,
                              e.alias.substr(0, 14), e.brand, e.state, human_bytes(e.bytes),
                              e.exact ? " " : "~", seconds_text(e.seconds)));
  for (const migration::DatasetEstimate& d : e.datasets) {
    out.result_line(fmt::format("    {:<60} {:>9}{}  ({})", d.dataset, human_bytes(d.bytes),
                                d.exact ? " " : "~", d.method));
  }
}

} // namespace

CommandSpec estimate_command() {
  struct Opts {
    std::string vm;
    std::string server;
    double rate_mb_s = 0;
    int parallel = 1;
  };
  auto o = std::make_shared<Opts>();
  return {"estimate",
          "Bytes and time a full sync of an instance, or of every instance on a node, needs",
          [o](CLI::App& app) {
            app.add_option("VM", o->vm, "Instance UUID");
            app.add_option(
                "-s,--server", o->server,
                "Estimate every active instance on this compute node (UUID or hostname)");
            app.add_option("--rate", o->rate_mb_s,
                           "Transfer rate in MiB/s (1024^2 bytes) for the time estimate (default: "
                           "config, else 20)")
                ->check(positive_rate());
            app.add_option("--parallel", o->parallel,
                           "Concurrent streams for the server total (default 1)")
                ->check(CLI::Range(1, 64));
          },
          [o](Runtime& rt) {
            if (o->vm.empty() == o->server.empty()) {
              throw UsageError("estimate", "give either an instance UUID or --server CN");
            }
            migration::Context& ctx = rt.context({Service::vmapi, Service::cnapi});
            const double rate =
                o->rate_mb_s > 0 ? o->rate_mb_s * 1024 * 1024 : ctx.settings.rate_bytes_per_s;
            TerminalReporter& out = rt.reporter();
            if (!o->vm.empty()) {
              const migration::InstanceEstimate e = migration::estimate_instance(ctx, o->vm, rate);
              if (out.style().json) {
                nlohmann::json j = e;
                j["rate_bytes_per_second"] = rate;
                out.json(j);
              } else {
                print_instance(out, e);
                out.result_line(fmt::format("total {}{} at {} = {}{}", human_bytes(e.bytes),
                                            e.exact ? "" : " (approximate)", human_rate(rate),
                                            seconds_text(e.seconds),
                                            e.exact ? "" : "  (~ marks approximate figures)"));
              }
              return 0;
            }
            const migration::ServerEstimate e =
                migration::estimate_server(ctx, o->server, rate, o->parallel);
            if (out.style().json) {
              nlohmann::json j = e;
              j["rate_bytes_per_second"] = rate;
              out.json(j);
            } else {
              out.result_line(fmt::format("{} ({}): {} active instances", e.server_hostname,
                                          e.server_uuid, e.instances.size()));
              for (const migration::InstanceEstimate& i : e.instances) {
                print_instance(out, i);
              }
              out.result_line(fmt::format("purge total {}{} at {} with {} stream{} = {}",
                                          human_bytes(e.bytes), e.exact ? "" : " (approximate)",
                                          human_rate(rate), e.parallel, e.parallel == 1 ? "" : "s",
                                          seconds_text(e.seconds)));
            }
            return 0;
          }};
}

} // namespace zmigrate::cli
