// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/estimate.hpp>
#include <zmigrate/migration/node.hpp>
#include <zmigrate/util/error.hpp>

#include <algorithm>
#include <charconv>
#include <functional>
#include <map>
#include <queue>

#include <fmt/format.h>

namespace zmigrate::migration {

double transfer_seconds(std::uint64_t bytes, double rate) {
  return rate > 0 ? static_cast<double>(bytes) / rate : 0;
}

double makespan_seconds(std::vector<std::uint64_t> sizes, int parallel, double rate) {
  if (parallel < 1) {
    parallel = 1;
  }
  std::sort(sizes.begin(), sizes.end(), std::greater<>());
  std::priority_queue<double, std::vector<double>, std::greater<>> lanes;
  for (int i = 0; i < parallel; ++i) {
    lanes.push(0);
  }
  double end = 0;
  for (std::uint64_t s : sizes) {
    const double start = lanes.top();
    lanes.pop();
    const double finish = start + transfer_seconds(s, rate);
    end = std::max(end, finish);
    lanes.push(finish);
  }
  return end;
}

namespace {

// A numeric property from `zfs get -Hp` (0 when absent, empty or "-").
std::uint64_t u64_prop(const std::map<std::string, std::string>& props, const std::string& ds,
                       const char* name) {
  const auto it = props.find(name);
  if (it == props.end() || it->second.empty() || it->second == "-") {
    return 0;
  }
  std::uint64_t v = 0;
  const char* end = it->second.data() + it->second.size();
  const auto [ptr, ec] = std::from_chars(it->second.data(), end, v);
  if (ec != std::errc() || ptr != end) {
    throw Error(ExitCode::zfs, fmt::format("{}: property {}", ds, name),
                fmt::format("'{}' is not a number of bytes", it->second));
  }
  return v;
}

} // namespace

InstanceEstimate estimate_vm(Node& node, const inventory::Vm& vm, const inventory::Server& server,
                             double rate) {
  InstanceEstimate e;
  e.vm_uuid = vm.uuid;
  e.alias = vm.alias;
  e.brand = vm.brand;
  e.state = vm.state;
  e.server_uuid = server.uuid;
  e.server_hostname = server.hostname;
  for (const std::string& root : inventory::instance_datasets(vm)) {
    for (const std::string& ds : node.hierarchy(root)) {
      DatasetEstimate d;
      d.dataset = ds;
      // A full sync sends the dataset as of a new snapshot, with its older snapshots. Where the
      // node can dry-run a send that figure is exact up to the writes made since the newest
      // snapshot (`written`); without a snapshot `written` alone stands in, and without either
      // (zfs-fuse) referenced + usedbysnapshots; both labelled approximate. A clone is counted
      // from its origin, as begin imports the image on the target; if the origin turns out not
      // to be there, the sync sends it in full and this figure is low.
      const std::vector<SnapshotInfo> snaps = node.snapshots(ds);
      const auto& caps = node.caps();
      if (caps.dry_run_parsable && !snaps.empty()) {
        // What the first sync sends: the oldest snapshot (from the clone's origin, which begin
        // imports on the target with the image), then every later one, then what was written
        // since the newest (the sync's own snapshot).
        const auto props = node.properties(ds, {"origin", "written"});
        auto prop = [&](const char* name) {
          const auto it = props.find(name);
          return it == props.end() || it->second == "-" ? std::string() : it->second;
        };
        const auto [first_bytes, first_exact] =
            node.estimate_send(snaps.front().name, prop("origin"), "");
        std::uint64_t total = first_bytes;
        bool is_exact = first_exact;
        if (snaps.size() > 1) {
          const auto [rest_bytes, rest_exact] =
              node.estimate_send(snaps.back().name, snaps.front().name, "");
          total += rest_bytes;
          is_exact = is_exact && rest_exact;
        }
        if (caps.written_property) {
          const std::uint64_t written = u64_prop(props, ds, "written");
          total += written;
          is_exact = is_exact && written == 0;
        } else {
          is_exact = false;
        }
        d.bytes = total;
        d.exact = is_exact;
        d.method = "send -nvP";
      } else if (caps.written_property && snaps.empty()) {
        // No snapshot to dry-run: `written` is what a first send carries (for a clone, what
        // was written since its origin; otherwise everything it references). Approximate.
        d.bytes = u64_prop(node.properties(ds, {"written"}), ds, "written");
        d.exact = false;
        d.method = "written";
      } else {
        const auto props = node.properties(ds, {"referenced", "usedbysnapshots"});
        d.bytes = u64_prop(props, ds, "referenced") + u64_prop(props, ds, "usedbysnapshots");
        d.exact = false;
        d.method = "referenced+usedbysnapshots";
      }
      e.bytes += d.bytes;
      e.exact = e.exact && d.exact;
      e.datasets.push_back(d);
    }
  }
  e.seconds = transfer_seconds(e.bytes, rate);
  return e;
}

InstanceEstimate estimate_instance(Context& ctx, const std::string& vm_uuid, double rate) {
  const std::optional<inventory::Vm> vm = ctx.inventory.find_vm(vm_uuid);
  if (!vm || vm->state == "destroyed") {
    throw NotFoundError(fmt::format("instance {}", vm_uuid), "VMAPI has no such instance");
  }
  const inventory::Server server = ctx.inventory.resolve_server(vm->server_uuid);
  Node& node = ctx.nodes.node(ctx, server);
  return estimate_vm(node, *vm, server, rate);
}

ServerEstimate estimate_server(Context& ctx, const std::string& name, double rate, int parallel) {
  const inventory::Server server = ctx.inventory.resolve_server(name);
  ServerEstimate e;
  e.server_uuid = server.uuid;
  e.server_hostname = server.hostname;
  e.parallel = parallel;
  Node& node = ctx.nodes.node(ctx, server);
  std::vector<std::uint64_t> sizes;
  for (const inventory::Vm& vm : ctx.inventory.list_vms(server.uuid, "active")) {
    if (vm.do_not_inventory) {
      continue;
    }
    InstanceEstimate i = estimate_vm(node, vm, server, rate);
    e.bytes += i.bytes;
    e.exact = e.exact && i.exact;
    sizes.push_back(i.bytes);
    e.instances.push_back(std::move(i));
  }
  e.seconds = makespan_seconds(sizes, parallel, rate);
  return e;
}

void to_json(nlohmann::json& j, const DatasetEstimate& e) {
  j = {{"dataset", e.dataset}, {"bytes", e.bytes}, {"exact", e.exact}, {"method", e.method}};
}

void to_json(nlohmann::json& j, const InstanceEstimate& e) {
  j = {{"vm_uuid", e.vm_uuid},
       {"alias", e.alias},
       {"brand", e.brand},
       {"state", e.state},
       {"server_uuid", e.server_uuid},
       {"server_hostname", e.server_hostname},
       {"size", e.bytes},
       {"exact", e.exact},
       {"seconds", e.seconds},
       {"datasets", e.datasets}};
}

void to_json(nlohmann::json& j, const ServerEstimate& e) {
  j = {{"server_uuid", e.server_uuid},
       {"server_hostname", e.server_hostname},
       {"size", e.bytes},
       {"exact", e.exact},
       {"parallel", e.parallel},
       {"seconds", e.seconds},
       {"instances", e.instances}};
}

} // namespace zmigrate::migration
