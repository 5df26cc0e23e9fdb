// SPDX-License-Identifier: MPL-2.0
// zmigrate estimate VM | --server CN: bytes a full sync sends and the time at a rate.
#include <zmigrate/cli/commands.hpp>
#include <zmigrate/cli/output.hpp>
#include <zmigrate/cli/runtime.hpp>
#include <zmigrate/migration/estimate.hpp>
#include <zmigrate/migration/measure.hpp>
#include <zmigrate/util/arguments.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/units.hpp>

#include <cmath>
#include <memory>
#include <optional>
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

// An estimate's JSON with the rate it was made at and the measurement that gave the rate.
nlohmann::json with_rate(nlohmann::json j, double rate,
                         const std::optional<migration::LinkMeasurement>& measured) {
  j["rate_bytes_per_second"] = rate;
  if (measured) {
    j["measurement"] = *measured;
  }
  return j;
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
    bool measure = false;
    std::string target;
    std::uint64_t measure_mib = 64;
  };
  auto o = std::make_shared<Opts>();
  return {
      "estimate",
      "Bytes and time a full sync of an instance, or of every instance on a node, needs",
      [o](CLI::App& app) {
        app.add_option("VM", o->vm, "Instance UUID");
        app.add_option("-s,--server", o->server,
                       "Estimate every active instance on this compute node (UUID or hostname)");
        app.add_option("--rate", o->rate_mb_s,
                       "Transfer rate in MiB/s (1024^2 bytes) for the time estimate (default: "
                       "config, else 20)")
            ->check(positive_rate());
        app.add_option("--parallel", o->parallel,
                       "Concurrent streams for the server total (default 1)")
            ->check(CLI::Range(1, 64));
        app.add_flag("--measure", o->measure,
                     "Time a short real transfer from the instance's node (or --server) to "
                     "the node named with -n over the data path, and estimate at that rate");
        app.add_option("-n,--target", o->target,
                       "With --measure: the compute node to measure the link to (UUID or "
                       "hostname)");
        app.add_option("--measure-size", o->measure_mib, "With --measure: MiB to send (default 64)")
            ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{4096}));
      },
      [o](Runtime& rt) {
        if (o->vm.empty() == o->server.empty()) {
          throw UsageError("estimate", "give either an instance UUID or --server CN");
        }
        if (o->measure && o->target.empty()) {
          throw UsageError("estimate --measure",
                           "name the compute node to measure the link to with -n CN");
        }
        if (!o->measure && !o->target.empty()) {
          throw UsageError("estimate -n " + o->target, "-n names the node of --measure; "
                                                       "add --measure or leave -n out");
        }
        if (o->measure && o->rate_mb_s > 0) {
          throw UsageError("estimate --rate", "--measure measures the rate; give one of "
                                              "--rate and --measure");
        }
        if (!o->vm.empty()) {
          require_vm_argument(o->vm);
        }
        if (!o->server.empty()) {
          require_node_argument("--server", o->server);
        }
        if (!o->target.empty()) {
          require_node_argument("-n", o->target);
        }
        migration::Context& ctx = rt.context({Service::vmapi, Service::cnapi});
        double rate = o->rate_mb_s > 0 ? o->rate_mb_s * 1024 * 1024 : ctx.settings.rate_bytes_per_s;
        TerminalReporter& out = rt.reporter();
        std::optional<migration::LinkMeasurement> measured;
        if (o->measure) {
          measured = migration::measure_from(ctx, o->vm, o->server, o->target, o->measure_mib);
          rate = measured->rate_bytes_per_s;
          if (!out.style().json) {
            out.result_line(fmt::format(
                "measured {} -> {}: {} in {} ({} of it the cost of a stream with no data) = {}",
                measured->source_hostname, measured->target_hostname, human_bytes(measured->bytes),
                human_duration(measured->full), human_duration(measured->empty), human_rate(rate)));
          }
          if (rate <= 0) {
            throw Error(ExitCode::failure, "estimate --measure",
                        "the transfer took no measurable time; measure with a larger "
                        "--measure-size");
          }
        }
        if (!o->vm.empty()) {
          const migration::InstanceEstimate e = migration::estimate_instance(ctx, o->vm, rate);
          if (out.style().json) {
            out.json(with_rate(e, rate, measured));
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
          out.json(with_rate(e, rate, measured));
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
