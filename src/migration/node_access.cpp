// SPDX-License-Identifier: MPL-2.0
// The real nodes and links NodeAccess hands out by default.
#include <zmigrate/migration/context.hpp>
#include <zmigrate/migration/data_path.hpp>
#include <zmigrate/migration/link.hpp>
#include <zmigrate/migration/node.hpp>
#include <zmigrate/migration/smartos_node.hpp>

namespace zmigrate::migration {

NodeAccess::NodeAccess() = default;
NodeAccess::~NodeAccess() = default;

Node& NodeAccess::node(Context& ctx, const inventory::Server& server) {
  const std::lock_guard<std::mutex> lock(m_nodes_mutex);
  std::unique_ptr<Node>& slot = m_nodes[server.uuid];
  if (!slot) {
    slot = std::make_unique<SmartosNode>(ctx, server);
  }
  return *slot;
}

std::unique_ptr<Link> NodeAccess::make_link(Context& ctx, const DataPathSpec& spec, Node& source,
                                            Node& target) {
  return std::make_unique<DataPath>(ctx, spec, runner_for(source.server()),
                                    runner_for(target.server()));
}

void NodeAccess::remove_leftover_links(Context& ctx, const std::string& migration_id, Node& source,
                                       Node& target, Leftovers which) {
  DataPath::remove_leftovers(ctx, migration_id, runner_for(source.server()),
                             runner_for(target.server()), which);
}

SendsResult Link::send_streams(const std::vector<StreamSend>& sends, bool use_pv,
                               const remote::Command& /*tail*/,
                               const remote::Command& /*alongside*/,
                               const std::function<void(std::size_t, std::uint64_t)>& on_bytes,
                               const std::function<void()>& on_arrived) {
  SendsResult out;
  for (std::size_t i = 0; i < sends.size(); ++i) {
    std::function<void(std::uint64_t)> each;
    if (on_bytes) {
      each = [&on_bytes, i](std::uint64_t n) { on_bytes(i, n); };
    }
    out.transfers.push_back(send(*sends[i].stream, sends[i].zfs_send, use_pv, each));
  }
  if (on_arrived && !sends.empty()) {
    on_arrived();
  }
  return out; // the tail and the alongside command are the caller's
}

const char* to_string(StreamKind kind) {
  switch (kind) {
  case StreamKind::full:
    return "full";
  case StreamKind::incremental:
    return "incremental";
  case StreamKind::clone:
    return "clone";
  case StreamKind::resume:
    return "resume";
  }
  return "full";
}

} // namespace zmigrate::migration
