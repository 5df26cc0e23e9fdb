// SPDX-License-Identifier: MPL-2.0
#pragma once
// `zmigrate estimate --measure -n CN`: time a short real transfer between two compute nodes over
// the data path a sync uses (the same ephemeral key, ssh options and master), so estimates and
// the pre-flight summary go by the link's rate instead of a configured guess.
//
// A measurement is a record of its own kind in the state store (Migration::kind "measurement",
// archived from the start): its key, pins and directories are in the ledger under that record
// as a migration's are, so `cleanup` removes what a killed measurement left. `list` and `get VM`
// never show it.

#include <zmigrate/inventory/types.hpp>
#include <zmigrate/migration/context.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace zmigrate::migration {

struct LinkMeasurement {
  std::string id; // the measurement record
  std::string source_server_uuid;
  std::string source_hostname;
  std::string target_server_uuid;
  std::string target_hostname;
  std::string measured; // when (ISO 8601, UTC)
  std::uint64_t bytes = 0;
  // A stream with no data (the fixed cost of one stream: connection over the master, forced
  // command, process starts) and the stream of `bytes`.
  std::chrono::milliseconds empty{0};
  std::chrono::milliseconds full{0};
  double rate_bytes_per_s = 0; // bytes / (full - empty)
};

// The rate of `bytes` sent in `full` when a stream with nothing in it takes `empty`: the
// difference is what the bytes cost. When the difference is not positive (a link so fast that
// 64 MiB vanish in the noise), the whole `full` counts. 0 when nothing was timed.
double link_rate(std::uint64_t bytes, std::chrono::milliseconds empty,
                 std::chrono::milliseconds full);

// Measure the data path from `source` to `target` with `mib` MiB of zeros (and once with none),
// for the record of `vm_uuid` ("" for a node estimate). Journaled; the data path is removed
// before it returns. Throws UsageError when the two nodes are one, PreconditionError when
// either is not running or has no admin address.
LinkMeasurement measure_link(Context& ctx, const inventory::Server& source,
                             const inventory::Server& target, const std::string& vm_uuid,
                             std::uint64_t mib);

// The same from the node of instance `vm_uuid`, or from node `server` when `vm_uuid` is empty,
// to node `target` (UUIDs or hostnames): resolves them in VMAPI and CNAPI (NotFoundError for an
// unknown instance or node), then measure_link.
LinkMeasurement measure_from(Context& ctx, const std::string& vm_uuid, const std::string& server,
                             const std::string& target, std::uint64_t mib);

// The newest successful measurement from `source_uuid` to `target_uuid` in the store.
std::optional<LinkMeasurement> latest_measurement(Context& ctx, const std::string& source_uuid,
                                                  const std::string& target_uuid);

void to_json(nlohmann::json& j, const LinkMeasurement& m);
void from_json(const nlohmann::json& j, LinkMeasurement& m);

} // namespace zmigrate::migration
