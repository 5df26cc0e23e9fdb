// SPDX-License-Identifier: MPL-2.0
#pragma once
// `zmigrate estimate`: what a full sync of an instance (or of every instance on a node) will send
// and how long it takes at a given rate. Changes nothing.

#include <zmigrate/migration/context.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace zmigrate::migration {

struct DatasetEstimate {
  std::string dataset;
  std::uint64_t bytes = 0;
  bool exact = false;
  std::string method; // "send -nvP" or the property used ("referenced")
};

struct InstanceEstimate {
  std::string vm_uuid;
  std::string alias;
  std::string brand;
  std::string state;
  std::string server_uuid;
  std::string server_hostname;
  std::vector<DatasetEstimate> datasets;
  std::uint64_t bytes = 0;
  bool exact = true;  // every dataset exact
  double seconds = 0; // at the rate
};

struct ServerEstimate {
  std::string server_uuid;
  std::string server_hostname;
  std::vector<InstanceEstimate> instances;
  std::uint64_t bytes = 0; // mig-estimator's "purge" value: what evacuating the node sends
  bool exact = true;
  int parallel = 1;
  double seconds = 0; // makespan with `parallel` streams, each at the rate
};

// Seconds to send `bytes` at `rate_bytes_per_s`.
double transfer_seconds(std::uint64_t bytes, double rate_bytes_per_s);
// Makespan of sending the given sizes on `parallel` streams of `rate` each (longest first onto
// the least loaded stream).
double makespan_seconds(std::vector<std::uint64_t> sizes, int parallel, double rate_bytes_per_s);

InstanceEstimate estimate_instance(Context& ctx, const std::string& vm_uuid, double rate);
// The same for an instance already read, on its node.
InstanceEstimate estimate_vm(Node& node, const inventory::Vm& vm, const inventory::Server& server,
                             double rate);
ServerEstimate estimate_server(Context& ctx, const std::string& server, double rate, int parallel);

void to_json(nlohmann::json& j, const DatasetEstimate& e);
void to_json(nlohmann::json& j, const InstanceEstimate& e);
void to_json(nlohmann::json& j, const ServerEstimate& e);

} // namespace zmigrate::migration
