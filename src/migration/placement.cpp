// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/placement.hpp>
#include <zmigrate/migration/plan.hpp>
#include <zmigrate/util/error.hpp>

#include <algorithm>
#include <set>
#include <sstream>

#include <fmt/format.h>

namespace zmigrate::migration {

using nlohmann::json;

namespace {

std::uint64_t minus(std::uint64_t a, std::uint64_t b) {
  return a > b ? a - b : 0;
}

// DAPI's hard-filter-traits rules for one trait: a boolean must equal; a string must equal the
// node's string or be in the node's array; an array must hold the node's string or share an
// item with the node's array.
bool trait_matches(const json& node, const json& wanted) {
  if (wanted.is_boolean()) {
    return node.is_boolean() && node == wanted;
  }
  if (wanted.is_string()) {
    if (node.is_string()) {
      return node == wanted;
    }
    return node.is_array() && std::find(node.begin(), node.end(), wanted) != node.end();
  }
  if (wanted.is_array()) {
    if (node.is_string()) {
      return std::find(wanted.begin(), wanted.end(), node) != wanted.end();
    }
    if (node.is_array()) {
      return std::any_of(wanted.begin(), wanted.end(), [&](const json& w) {
        return std::find(node.begin(), node.end(), w) != node.end();
      });
    }
  }
  return false;
}

// The traits the instance asks for: its own (VMAPI or package), the image's winning on a clash.
json requested_traits(const inventory::Vm& vm) {
  json out = vm.traits.is_object() ? vm.traits : json::object();
  if (vm.image_traits.is_object()) {
    for (const auto& [k, v] : vm.image_traits.items()) {
      out[k] = v;
    }
  }
  return out;
}

void check_traits(const inventory::Vm& vm, const inventory::Server& target,
                  std::vector<Problem>& out) {
  const json wanted = requested_traits(vm);
  const json node = target.traits.is_object() ? target.traits : json::object();
  // As DAPI: a node with traits is kept for the instances that ask for exactly those traits.
  if (wanted.empty()) {
    if (!node.empty()) {
      out.push_back({"traits", fmt::format("the node has traits {} and the instance asks for none",
                                           node.dump())});
    }
    return;
  }
  for (const auto& [name, value] : wanted.items()) {
    const auto it = node.find(name);
    if (it == node.end()) {
      out.push_back({"traits", fmt::format("missing trait {} (the instance asks for {})", name,
                                           value.dump())});
    } else if (!trait_matches(*it, value)) {
      out.push_back({"traits", fmt::format("trait {} is {} on the node, the instance asks for {}",
                                           name, it->dump(), value.dump())});
    }
  }
  std::vector<std::string> extra;
  for (const auto& [name, value] : node.items()) {
    if (!wanted.contains(name)) {
      extra.push_back(name);
    }
  }
  if (!extra.empty()) {
    out.push_back({"traits", fmt::format("the node has trait(s) {} the instance does not ask for",
                                         fmt::join(extra, ", "))});
  }
}

void check_nics(const inventory::Vm& vm, const inventory::Server& target,
                std::vector<Problem>& out) {
  std::set<std::string> said;
  for (const inventory::Nic& nic : vm.nics) {
    const std::string tag = nic.required_nic_tag();
    if (tag.empty() || !said.insert(tag).second) {
      continue;
    }
    const std::string name = nic.interface.empty() ? nic.mac : nic.interface;
    if (nic.fabric) {
      if (!target.fabric(tag)) {
        out.push_back(
            {"fabric",
             target.overlay_nic_tags.empty()
                 ? fmt::format("NIC {} is on a fabric (overlay tag {}) and the node has no "
                               "underlay NIC tag {}",
                               name, tag, inventory::k_underlay_nic_tag)
                 : fmt::format("NIC {} is on a fabric (overlay tag {}) and the node carries only "
                               "overlay tag(s) {}",
                               name, tag, fmt::join(target.overlay_nic_tags, ", "))});
      }
      continue;
    }
    if (target.has_nic_tag(tag)) {
      continue;
    }
    const bool down =
        std::binary_search(target.down_nic_tags.begin(), target.down_nic_tags.end(), tag);
    out.push_back({"nic_tag", down ? fmt::format("missing NIC tag {} for NIC {} (only on links "
                                                 "that are down)",
                                                 tag, name)
                                   : fmt::format("missing NIC tag {} for NIC {}", tag, name)});
  }
}

// The promised totals on `node`, less what instance `vm` itself promised there.
PromiseLedger::Totals others_on(const PromiseLedger& promises, const std::string& node,
                                const std::string& vm) {
  PromiseLedger::Totals t = promises.on(node);
  if (const Promise* p = promises.of(vm); p != nullptr && p->node == node) {
    t.ram_mib = minus(t.ram_mib, p->ram_mib);
    t.disk_mib = minus(t.disk_mib, p->disk_mib);
    t.cpu = minus(t.cpu, p->cpu);
    t.count = t.count > 0 ? t.count - 1 : 0;
  }
  return t;
}

std::string promised_text(const PromiseLedger::Totals& t, std::uint64_t amount) {
  if (t.count == 0) {
    return "";
  }
  return fmt::format(", {} MiB promised to {} other migration(s)", amount, t.count);
}

bool listed(const std::vector<std::string>& names, const inventory::Server& s) {
  return std::any_of(names.begin(), names.end(),
                     [&](const std::string& n) { return n == s.uuid || n == s.hostname; });
}

std::vector<Problem> problems_with(const inventory::Vm& vm, const inventory::Server& source,
                                   const inventory::Server& target,
                                   const PromiseLedger::Totals& promised,
                                   const PlacementOptions& options, bool apply_to) {
  std::vector<Problem> out;
  if (target.uuid == source.uuid) {
    out.push_back({"source", "it is the instance's current server"});
  }
  if (apply_to && !options.to.empty() && !listed(options.to, target)) {
    out.push_back({"to", "not one of the nodes given with --to"});
  }
  if (!target.setup) {
    out.push_back({"setup", "not set up"});
  }
  if (target.status != "running") {
    out.push_back({"status", fmt::format("status is '{}', not running", target.status)});
  }
  if (target.reserved) {
    out.push_back({"reserved", "reserved"});
  }
  if (target.headnode) {
    out.push_back({"headnode", "is a head node"});
  }
  if (target.admin_ip.empty()) {
    out.push_back({"admin_ip", "has no admin address in sysinfo"});
  }
  for (const std::string& p : target.placement_problems) {
    out.push_back({"inventory", "its CNAPI record cannot be read for placement: " + p});
  }
  for (const std::string& p : vm.placement_problems) {
    out.push_back(
        {"instance", "the instance's inventory record cannot be read for placement: " + p});
  }
  check_nics(vm, target, out);
  check_traits(vm, target, out);
  if (vm.is_hvm()) {
    if (vm.brand == "bhyve" && !target.bhyve_capable) {
      out.push_back({"hvm", "cannot run bhyve instances (sysinfo \"Bhyve Capable\" is not true)"});
    } else if (vm.brand == "kvm" && !target.vm_capable) {
      out.push_back({"hvm", "cannot run KVM instances (sysinfo \"VM Capable\" is not true)"});
    }
    const std::uint32_t max_vcpus = target.bhyve_max_vcpus.value_or(16);
    if (vm.brand == "bhyve" && target.bhyve_capable && vm.vcpus > max_vcpus) {
      out.push_back({"hvm", fmt::format("the instance has {} vcpus, the node's bhyve takes at "
                                        "most {}",
                                        vm.vcpus, max_vcpus)});
    }
  }
  if (vm.cpu_cap && target.unreserved_cpu) {
    const std::uint64_t free = minus(*target.unreserved_cpu, promised.cpu);
    if (*vm.cpu_cap > free) {
      out.push_back(
          {"cpu", fmt::format("not enough unreserved CPU (cpu_cap {} > {} unreserved{})",
                              *vm.cpu_cap, free,
                              promised.count == 0
                                  ? std::string()
                                  : fmt::format(" after {} promised to {} other migration(s)",
                                                promised.cpu, promised.count))});
    }
  }
  const std::uint64_t free_ram = minus(target.unreserved_ram_mib, promised.ram_mib);
  if (free_ram < vm.ram_mib) {
    out.push_back({"ram", fmt::format("not enough unreserved RAM ({} MiB free{}, {} MiB needed: "
                                      "{} MiB short)",
                                      free_ram, promised_text(promised, promised.ram_mib),
                                      vm.ram_mib, vm.ram_mib - free_ram)});
  }
  const std::uint64_t disk = required_disk_mib(vm);
  const std::uint64_t free_disk = minus(target.unreserved_disk_mib, promised.disk_mib);
  if (free_disk < disk) {
    out.push_back({"disk", fmt::format("not enough unreserved disk ({} MiB free{}, {} MiB needed: "
                                       "{} MiB short)",
                                       free_disk, promised_text(promised, promised.disk_mib), disk,
                                       disk - free_disk)});
  }
  if (!options.allow_older_platform && !source.current_platform.empty() &&
      inventory::platform_older(target.current_platform, source.current_platform)) {
    out.push_back({"platform", fmt::format("platform {} is older than the source's {} "
                                           "(--allow-older-platform)",
                                           target.current_platform, source.current_platform)});
  }
  return out;
}

bool vm_named(const std::string& name, const inventory::Vm& vm) {
  return name == vm.uuid || (!vm.alias.empty() && name == vm.alias);
}

} // namespace

Promise promise_for(const inventory::Vm& vm, const std::string& node) {
  Promise p;
  p.node = node;
  p.ram_mib = vm.ram_mib;
  p.disk_mib = required_disk_mib(vm);
  p.cpu = vm.cpu_cap.value_or(0);
  p.vm = vm.uuid;
  p.owner = vm.owner_uuid;
  return p;
}

void PromiseLedger::add(const Promise& p) {
  if (!p.vm.empty() && m_by_vm.count(p.vm) > 0) {
    const auto it = std::find_if(m_promises.begin(), m_promises.end(),
                                 [&](const Promise& q) { return q.vm == p.vm; });
    if (it != m_promises.end()) {
      Totals& t = m_totals[it->node];
      t.ram_mib = minus(t.ram_mib, it->ram_mib);
      t.disk_mib = minus(t.disk_mib, it->disk_mib);
      t.cpu = minus(t.cpu, it->cpu);
      t.count -= 1;
      if (!it->owner.empty()) {
        m_owners[{it->node, it->owner}] -= 1;
      }
      m_promises.erase(it);
    }
  }
  m_promises.push_back(p);
  if (!p.vm.empty()) {
    m_by_vm[p.vm] = p;
  }
  Totals& t = m_totals[p.node];
  t.ram_mib += p.ram_mib;
  t.disk_mib += p.disk_mib;
  t.cpu += p.cpu;
  t.count += 1;
  if (!p.owner.empty()) {
    m_owners[{p.node, p.owner}] += 1;
  }
}

const Promise* PromiseLedger::of(const std::string& vm) const {
  const auto it = m_by_vm.find(vm);
  return it == m_by_vm.end() ? nullptr : &it->second;
}

PromiseLedger::Totals PromiseLedger::on(const std::string& node) const {
  const auto it = m_totals.find(node);
  return it == m_totals.end() ? Totals{} : it->second;
}

std::size_t PromiseLedger::owner_count(const std::string& node, const std::string& owner) const {
  if (owner.empty()) {
    return 0;
  }
  const auto it = m_owners.find({node, owner});
  return it == m_owners.end() ? 0 : it->second;
}

PromiseLedger PromiseLedger::without(const std::string& vm) const {
  PromiseLedger out;
  for (const Promise& p : m_promises) {
    if (p.vm != vm) {
      out.add(p);
    }
  }
  return out;
}

void to_json(json& j, const Problem& p) {
  j = {{"rule", p.rule}, {"text", p.text}};
}

void to_json(json& j, const Placement& p) {
  json rejected = json::array();
  for (const RejectedNode& r : p.rejected) {
    rejected.push_back({{"uuid", r.uuid}, {"hostname", r.hostname}, {"problems", r.problems}});
  }
  j = {{"vm_uuid", p.vm_uuid},
       {"alias", p.alias},
       {"placed", p.placed},
       {"target",
        p.placed ? json{{"uuid", p.target_uuid}, {"hostname", p.target_hostname}} : json()},
       {"reason", p.reason},
       {"free_ram_mib", p.free_ram_mib},
       {"free_disk_mib", p.free_disk_mib},
       {"rejected", rejected}};
}

std::vector<Problem> placement_problems(const inventory::Vm& vm, const inventory::Server& source,
                                        const inventory::Server& target,
                                        const PromiseLedger& promises,
                                        const PlacementOptions& options) {
  return problems_with(vm, source, target, others_on(promises, target.uuid, vm.uuid), options,
                       true);
}

std::vector<Problem> switch_problems(const inventory::Vm& vm, const inventory::Server& source,
                                     const inventory::Server& target, const PromiseLedger& promises,
                                     const PlacementOptions& options) {
  static const std::set<std::string> k_settled = {"disk",   "traits", "platform",
                                                  "source", "to",     "headnode"};
  std::vector<Problem> out;
  for (Problem& p : placement_problems(vm, source, target, promises, options)) {
    if (k_settled.count(p.rule) == 0) {
      out.push_back(std::move(p));
    }
  }
  return out;
}

std::string describe(const std::vector<Problem>& problems) {
  std::string out;
  for (const Problem& p : problems) {
    out += (out.empty() ? "" : "; ") + p.text;
  }
  return out;
}

void check_named_target(const inventory::Vm& vm, const inventory::Server& source,
                        const inventory::Server& target, const PromiseLedger& promises,
                        const PlacementOptions& options) {
  const std::vector<Problem> problems =
      problems_with(vm, source, target, others_on(promises, target.uuid, vm.uuid), options, false);
  if (!problems.empty()) {
    throw PreconditionError(fmt::format("target {} ({})", target.hostname, target.uuid),
                            describe(problems));
  }
}

bool PlacementPlan::complete() const {
  return std::all_of(placements.begin(), placements.end(),
                     [](const Placement& p) { return p.placed; });
}

const Placement* PlacementPlan::find(const std::string& vm_uuid) const {
  for (const Placement& p : placements) {
    if (p.vm_uuid == vm_uuid) {
      return &p;
    }
  }
  return nullptr;
}

PlacementPlan plan_placement(const std::vector<inventory::Vm>& vms, const inventory::Server& source,
                             const std::vector<inventory::Server>& servers,
                             const PromiseLedger& promises, const PlacementOptions& options) {
  for (const std::string& name : options.to) {
    if (!std::any_of(servers.begin(), servers.end(), [&](const inventory::Server& s) {
          return s.uuid == name || s.hostname == name;
        })) {
      throw UsageError(fmt::format("--to {}", name),
                       "matches no compute node in CNAPI (by UUID or hostname); check the name");
    }
  }
  for (const std::string& name : options.exclude) {
    if (std::none_of(vms.begin(), vms.end(),
                     [&](const inventory::Vm& vm) { return vm_named(name, vm); })) {
      throw UsageError(fmt::format("--exclude {}", name),
                       fmt::format("matches none of the instances on {} (by UUID or alias); "
                                   "check the name",
                                   source.hostname));
    }
  }

  PlacementPlan plan;
  plan.promises = promises;
  std::vector<const inventory::Vm*> order;
  for (const inventory::Vm& vm : vms) {
    if (std::any_of(options.exclude.begin(), options.exclude.end(),
                    [&](const std::string& n) { return vm_named(n, vm); })) {
      plan.excluded.push_back(vm.uuid);
    } else {
      order.push_back(&vm);
    }
  }
  std::sort(plan.excluded.begin(), plan.excluded.end());
  std::sort(order.begin(), order.end(), [](const inventory::Vm* a, const inventory::Vm* b) {
    if (a->ram_mib != b->ram_mib) {
      return a->ram_mib > b->ram_mib;
    }
    const std::uint64_t da = required_disk_mib(*a);
    const std::uint64_t db = required_disk_mib(*b);
    if (da != db) {
      return da > db;
    }
    return a->uuid < b->uuid;
  });
  std::vector<const inventory::Server*> nodes;
  for (const inventory::Server& s : servers) {
    if (s.uuid != source.uuid) {
      nodes.push_back(&s);
    }
  }
  std::sort(nodes.begin(), nodes.end(), [](const inventory::Server* a, const inventory::Server* b) {
    return a->hostname != b->hostname ? a->hostname < b->hostname : a->uuid < b->uuid;
  });

  struct Candidate {
    const inventory::Server* node;
    std::size_t owners;
    std::uint64_t free_ram;
    std::uint64_t free_disk;
  };
  for (const inventory::Vm* vm : order) {
    Placement p;
    p.vm_uuid = vm->uuid;
    p.alias = vm->alias;
    std::vector<Candidate> ok;
    for (const inventory::Server* s : nodes) {
      const PromiseLedger::Totals promised = others_on(plan.promises, s->uuid, vm->uuid);
      std::vector<Problem> problems = problems_with(*vm, source, *s, promised, options, true);
      if (problems.empty()) {
        ok.push_back(
            {s, options.separate_owners ? plan.promises.owner_count(s->uuid, vm->owner_uuid) : 0,
             minus(s->unreserved_ram_mib, promised.ram_mib),
             minus(s->unreserved_disk_mib, promised.disk_mib)});
      } else {
        p.rejected.push_back({s->uuid, s->hostname, std::move(problems)});
      }
    }
    if (ok.empty()) {
      p.reason = nodes.empty() ? "no other compute node in CNAPI"
                               : fmt::format("none of {} node(s) can take it", nodes.size());
      plan.placements.push_back(std::move(p));
      continue;
    }
    // `nodes` is sorted by hostname then uuid, so a stable sort keeps that as the last tie-break.
    std::stable_sort(ok.begin(), ok.end(), [](const Candidate& a, const Candidate& b) {
      if (a.owners != b.owners) {
        return a.owners < b.owners;
      }
      if (a.free_ram != b.free_ram) {
        return a.free_ram > b.free_ram;
      }
      return a.free_disk > b.free_disk;
    });
    const Candidate& best = ok.front();
    p.placed = true;
    p.target_uuid = best.node->uuid;
    p.target_hostname = best.node->hostname;
    p.free_ram_mib = best.free_ram;
    p.free_disk_mib = best.free_disk;
    p.reason = fmt::format("placement: of {} acceptable node(s), the one with the most unreserved "
                           "RAM after promises ({} MiB, {} MiB of disk){}",
                           ok.size(), best.free_ram, best.free_disk,
                           options.separate_owners
                               ? fmt::format(" among those with the fewest instances of the "
                                             "owner ({})",
                                             best.owners)
                               : std::string());
    plan.promises.add(promise_for(*vm, best.node->uuid));
    plan.placements.push_back(std::move(p));
  }
  return plan;
}

inventory::Server choose_placement(const inventory::Vm& vm, const inventory::Server& source,
                                   const std::vector<inventory::Server>& servers,
                                   const PromiseLedger& promises, const PlacementOptions& options,
                                   Placement* placement) {
  const PlacementPlan plan = plan_placement({vm}, source, servers, promises, options);
  const Placement& p = plan.placements.front();
  if (placement != nullptr) {
    *placement = p;
  }
  if (!p.placed) {
    std::ostringstream why;
    why << "no compute node can take it";
    for (const RejectedNode& r : p.rejected) {
      why << "; " << r.hostname << " (" << r.uuid << "): " << describe(r.problems);
    }
    why << ". Free capacity or name a node with -n";
    throw PreconditionError(fmt::format("placement of {}", vm.uuid), why.str());
  }
  for (const inventory::Server& s : servers) {
    if (s.uuid == p.target_uuid) {
      return s;
    }
  }
  throw Error(ExitCode::failure, "placement", "chose a node that is not in the list");
}

} // namespace zmigrate::migration
