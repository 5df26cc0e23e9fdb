// SPDX-License-Identifier: MPL-2.0
#pragma once
// FakeZfsPool: an in-memory ZFS (datasets, snapshots with GUIDs and createtxg, properties, holds)
// that answers the zfs commands zfs::ZfsNode sends, through a FakeRunner handler. Phase tests
// then use the real ZfsNode (so argv and parsing are exercised) over state that persists across
// steps, and assert on the pool's contents as well as on FakeRunner::commands.
//
//   fakes::FakeRunner runner{"cn1"};
//   fakes::FakeZfsPool pool;
//   pool.add_dataset("zones/vm");
//   pool.install(runner);                  // answers zfs list/get/snapshot/destroy/hold/...
//   zfs::ZfsNode node{runner, clock, log};
//   node.set_capabilities(fakes::FakeZfsPool::openzfs_capabilities());
//
// Failures use the OpenZFS 2.3 wording, so zfs::classify_failure() sees what it sees in
// production. `zfs send`/`zfs recv` are not answered (they run in pipelines across hosts); tests
// simulate a transfer with receive_from(). Commands it does not know fall through to the
// FakeRunner's other rules.

#include "fakes/fake_runner.hpp"

#include <zmigrate/zfs/capabilities.hpp>
#include <zmigrate/zfs/names.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace zmigrate::fakes {

class FakeZfsPool {
public:
  struct Snapshot {
    std::string snap;
    std::uint64_t guid = 0;
    std::uint64_t createtxg = 0;
    std::set<std::string> holds;
    std::map<std::string, std::string> props; // "referenced", "used", ...
  };
  struct Dataset {
    std::string type = "filesystem";
    std::uint64_t createtxg = 0;
    std::map<std::string, std::string> props; // user-set and numeric properties
    std::vector<Snapshot> snapshots;          // oldest first
    std::string resume_token;                 // receive_resume_token; "" = none
  };

  // --- State (public: tests read and change it directly) ---
  std::map<std::string, Dataset> datasets; // by full name
  std::uint64_t txg = 100;
  // Remaining "dataset is busy" answers per destroy/rename operand (lab.md gotcha 2).
  std::map<std::string, int> busy;

  // A GUID no other pool in this process has (real GUIDs are random 64-bit numbers, so two
  // pools never share one unless a stream carried it).
  static std::uint64_t new_guid() {
    static std::uint64_t counter = 0;
    return (++counter) * 0x9e3779b97f4a7c15ULL;
  }

  // Capabilities to give a ZfsNode over this pool (the fake does not answer the probe).
  static zfs::Capabilities openzfs_capabilities() {
    zfs::Capabilities c;
    c.implementation = "openzfs 2.3.2";
    c.version = "2.3.2";
    c.dry_run_parsable = c.resume_tokens = c.compressed_send = c.large_blocks = true;
    c.embedded_data = c.raw_send = c.holds = c.bookmarks = c.written_property = true;
    c.recv_exclude_props = c.recv_set_props = c.list_parsable = c.multi_snapshot = true;
    c.zvols = c.has_pv = c.has_mbuffer = true;
    return c;
  }
  static zfs::Capabilities zfs_fuse_capabilities() {
    zfs::Capabilities c;
    c.implementation = "zfs-fuse";
    c.holds = true; // hold/release work on zfs-fuse (tests/data/zfs/README.md)
    c.has_pv = c.has_mbuffer = true;
    return c;
  }

  // Add a dataset (and its missing parents).
  Dataset& add_dataset(const std::string& name, const std::string& type = "filesystem") {
    const zfs::DatasetName ds(name);
    if (!ds.is_pool() && datasets.count(ds.parent().str()) == 0) {
      add_dataset(ds.parent().str());
    }
    Dataset& d = datasets[name];
    d.type = type;
    d.createtxg = ++txg;
    return d;
  }
  // Add a snapshot with a fresh (or given) GUID; returns it.
  Snapshot& add_snapshot(const std::string& full_name,
                         std::optional<std::uint64_t> guid = std::nullopt) {
    const zfs::SnapshotName s = zfs::SnapshotName::parse(full_name);
    Dataset& d = datasets.at(s.dataset().str());
    d.snapshots.push_back(Snapshot{s.snap(), guid.value_or(new_guid()), ++txg, {}, {}});
    return d.snapshots.back();
  }
  bool has(const std::string& name) const {
    return find_snapshot(name) != nullptr || datasets.count(name) != 0;
  }
  const Snapshot* find_snapshot(const std::string& full_name) const {
    const std::size_t at = full_name.find('@');
    if (at == std::string::npos) {
      return nullptr;
    }
    auto d = datasets.find(full_name.substr(0, at));
    if (d == datasets.end()) {
      return nullptr;
    }
    for (const Snapshot& s : d->second.snapshots) {
      if (s.snap == full_name.substr(at + 1)) {
        return &s;
      }
    }
    return nullptr;
  }
  Snapshot* find_snapshot(const std::string& full_name) {
    return const_cast<Snapshot*>(static_cast<const FakeZfsPool*>(this)->find_snapshot(full_name));
  }
  // Snapshot names of `dataset`, oldest first.
  std::vector<std::string> snapshot_names(const std::string& dataset) const {
    std::vector<std::string> out;
    for (const Snapshot& s : datasets.at(dataset).snapshots) {
      out.push_back(s.snap);
    }
    return out;
  }

  // Simulate `zfs send [-I from] src@snap | zfs recv target` from `source`: copies the source
  // snapshots of `src_dataset` up to `snap` (same GUIDs) that `target` lacks, creating it.
  void receive_from(const FakeZfsPool& source, const std::string& src_dataset,
                    const std::string& snap, const std::string& target) {
    if (datasets.count(target) == 0) {
      add_dataset(target, source.datasets.at(src_dataset).type);
    }
    Dataset& t = datasets.at(target);
    for (const Snapshot& s : source.datasets.at(src_dataset).snapshots) {
      const bool present = std::any_of(t.snapshots.begin(), t.snapshots.end(),
                                       [&](const Snapshot& x) { return x.guid == s.guid; });
      if (!present) {
        Snapshot copy = s;
        copy.holds.clear();
        copy.createtxg = ++txg;
        t.snapshots.push_back(copy);
      }
      if (s.snap == snap) {
        break;
      }
    }
    t.resume_token.clear();
  }

  // Answer zfs commands run on `runner` from this pool.
  void install(FakeRunner& runner) {
    runner.on_handler([this](const remote::Command& cmd,
                             const remote::RunOptions&) -> std::optional<remote::Result> {
      if (cmd.pipeline.size() != 1 || cmd.pipeline[0].size() < 2 || cmd.pipeline[0][0] != "zfs") {
        return std::nullopt;
      }
      return handle(cmd.pipeline[0]);
    });
  }

private:
  using Argv = std::vector<std::string>;

  static remote::Result missing(const std::string& name) {
    return failed(1, "cannot open '" + name + "': dataset does not exist\n");
  }

  std::optional<remote::Result> handle(const Argv& a) {
    const std::string& verb = a[1];
    std::set<std::string> flags;
    std::vector<std::string> args;
    std::map<std::string, std::string> opts; // -o / -t / -d / -s values
    for (std::size_t i = 2; i < a.size(); ++i) {
      if (a[i].size() > 1 && a[i][0] == '-') {
        if (a[i] == "-o" || a[i] == "-t" || a[i] == "-d" || a[i] == "-s") {
          const std::string& key = a[i];
          flags.insert(key);
          opts[key] = i + 1 < a.size() ? a[i + 1] : std::string();
          ++i;
        } else {
          for (std::size_t k = 1; k < a[i].size(); ++k) {
            flags.insert(std::string("-") + a[i][k]);
          }
        }
      } else {
        args.push_back(a[i]);
      }
    }
    if (verb == "list") {
      return list(flags, opts, args);
    }
    if (verb == "get") {
      return get(flags, args);
    }
    if (verb == "snapshot") {
      return snapshot(flags.count("-r") != 0, args);
    }
    if (verb == "destroy") {
      return destroy(flags.count("-r") != 0, args);
    }
    if (verb == "hold" || verb == "release") {
      return hold(verb == "hold", args);
    }
    if (verb == "create") {
      return create(flags.count("-p") != 0, args);
    }
    if (verb == "rename") {
      return rename(args);
    }
    if (verb == "set" && args.size() == 2) {
      const std::size_t eq = args[0].find('=');
      if (!has(args[1])) {
        return missing(args[1]);
      }
      if (Snapshot* s = find_snapshot(args[1])) {
        s->props[args[0].substr(0, eq)] = args[0].substr(eq + 1);
      } else {
        datasets.at(args[1]).props[args[0].substr(0, eq)] = args[0].substr(eq + 1);
      }
      return ok();
    }
    if (verb == "mount" || verb == "rollback") {
      return args.size() == 1 && has(args[0]) ? ok() : missing(args.empty() ? "" : args[0]);
    }
    return std::nullopt;
  }

  remote::Result list(const std::set<std::string>& flags,
                      const std::map<std::string, std::string>& opts,
                      const std::vector<std::string>& args) {
    auto opt = [&](const char* key) {
      auto it = opts.find(key);
      return it == opts.end() ? std::string() : it->second;
    };
    std::string out;
    for (const std::string& root : args) {
      if (!has(root)) {
        return missing(root);
      }
      if (opt("-t") == "snapshot") {
        for (const Snapshot& snap : datasets.at(root).snapshots) {
          out += root + "@" + snap.snap + "\n";
        }
      } else if (opt("-o") == "name" && flags.count("-r") == 0) {
        out += root + "\n";
      } else {
        for (const auto& [name, d] : datasets) {
          if (name == root || (flags.count("-r") != 0 && name.rfind(root + "/", 0) == 0)) {
            out += name + "\t" + d.type + "\n";
          }
        }
      }
    }
    return ok(out);
  }

  std::string value_of(const std::string& name, const std::string& prop) const {
    if (const Snapshot* s = find_snapshot(name)) {
      if (prop == "guid") {
        return std::to_string(s->guid);
      }
      if (prop == "createtxg") {
        return std::to_string(s->createtxg);
      }
      if (prop == "type") {
        return "snapshot";
      }
      auto it = s->props.find(prop);
      return it == s->props.end() ? "-" : it->second;
    }
    const Dataset& d = datasets.at(name);
    if (prop == "type") {
      return d.type;
    }
    if (prop == "createtxg") {
      return std::to_string(d.createtxg);
    }
    if (prop == "receive_resume_token") {
      return d.resume_token.empty() ? "-" : d.resume_token;
    }
    auto it = d.props.find(prop);
    return it == d.props.end() ? "-" : it->second;
  }

  remote::Result get(const std::set<std::string>& flags, const std::vector<std::string>& args) {
    if (args.size() < 2) {
      return failed(2, "usage: zfs get\n");
    }
    std::vector<std::string> props;
    std::size_t start = 0;
    while (start <= args[0].size()) {
      const std::size_t comma = args[0].find(',', start);
      props.push_back(
          args[0].substr(start, comma == std::string::npos ? std::string::npos : comma - start));
      if (comma == std::string::npos) {
        break;
      }
      start = comma + 1;
    }
    std::vector<std::string> names;
    for (std::size_t i = 1; i < args.size(); ++i) {
      if (!has(args[i])) {
        return missing(args[i]);
      }
      names.push_back(args[i]);
      if (flags.count("-r") != 0 && datasets.count(args[i]) != 0) {
        for (const Snapshot& s : datasets.at(args[i]).snapshots) {
          names.push_back(args[i] + "@" + s.snap);
        }
        for (const auto& [name, d] : datasets) {
          const std::string child = name.substr(0, name.rfind('/'));
          if (name != args[i] && child == args[i]) {
            names.push_back(name);
          }
        }
      }
    }
    std::string out;
    for (const std::string& n : names) {
      for (const std::string& p : props) {
        out += n + "\t" + p + "\t" + value_of(n, p) + "\n";
      }
    }
    return ok(out);
  }

  remote::Result snapshot(bool recursive, const std::vector<std::string>& args) {
    std::vector<std::string> targets;
    for (const std::string& a : args) {
      const zfs::SnapshotName s = zfs::SnapshotName::parse(a);
      if (datasets.count(s.dataset().str()) == 0) {
        return missing(s.dataset().str());
      }
      for (const auto& [name, d] : datasets) {
        if (name == s.dataset().str() ||
            (recursive && s.dataset().contains(zfs::DatasetName(name)))) {
          targets.push_back(name + "@" + s.snap());
        }
      }
    }
    for (const std::string& t : targets) {
      if (find_snapshot(t) != nullptr) {
        return failed(1, "cannot create snapshot '" + t + "': dataset already exists\n");
      }
    }
    ++txg; // one txg for all: atomic
    for (const std::string& t : targets) {
      const zfs::SnapshotName s = zfs::SnapshotName::parse(t);
      datasets.at(s.dataset().str())
          .snapshots.push_back(Snapshot{s.snap(), new_guid(), txg, {}, {}});
    }
    return ok();
  }

  bool take_busy(const std::string& name) {
    auto it = busy.find(name);
    if (it == busy.end() || it->second <= 0) {
      return false;
    }
    --it->second;
    return true;
  }

  remote::Result destroy(bool recursive, const std::vector<std::string>& args) {
    if (args.size() != 1) {
      return failed(2, "usage: zfs destroy\n");
    }
    const std::string& name = args[0];
    if (take_busy(name)) {
      return failed(1, "cannot destroy '" + name + "': dataset is busy\n");
    }
    const std::size_t at = name.find('@');
    if (at != std::string::npos) {
      const std::string ds = name.substr(0, at);
      if (datasets.count(ds) == 0) {
        return missing(ds);
      }
      const Snapshot* s = find_snapshot(name);
      if (s == nullptr) {
        return failed(1, "could not find any snapshots to destroy; check snapshot names.\n");
      }
      if (!s->holds.empty()) {
        return failed(1, "cannot destroy snapshot " + name + ": dataset is busy\n");
      }
      for (auto& [dname, d] : datasets) {
        if (dname == ds || (recursive && dname.rfind(ds + "/", 0) == 0)) {
          std::erase_if(d.snapshots,
                        [&](const Snapshot& x) { return x.snap == name.substr(at + 1); });
        }
      }
      return ok();
    }
    if (datasets.count(name) == 0) {
      return missing(name);
    }
    const bool has_dependents = !datasets.at(name).snapshots.empty() ||
                                std::any_of(datasets.begin(), datasets.end(), [&](const auto& kv) {
                                  return kv.first.rfind(name + "/", 0) == 0;
                                });
    if (has_dependents && !recursive) {
      return failed(
          1, "cannot destroy '" + name +
                 "': filesystem has children\nuse '-r' to destroy the following datasets:\n");
    }
    std::erase_if(datasets, [&](const auto& kv) {
      return kv.first == name || kv.first.rfind(name + "/", 0) == 0;
    });
    return ok();
  }

  remote::Result hold(bool holding, const std::vector<std::string>& args) {
    if (args.size() < 2) {
      return failed(2, "usage: zfs hold\n");
    }
    const std::string& tag = args[0];
    for (std::size_t i = 1; i < args.size(); ++i) {
      const Snapshot* s = find_snapshot(args[i]);
      if (s == nullptr) {
        return missing(args[i]);
      }
      if (holding && s->holds.count(tag) != 0) {
        return failed(1, "cannot hold snapshot '" + args[i] +
                             "': tag already exists on this dataset\n");
      }
      if (!holding && s->holds.count(tag) == 0) {
        return failed(1, "cannot release hold from snapshot '" + args[i] +
                             "': no such tag on this dataset\n");
      }
    }
    for (std::size_t i = 1; i < args.size(); ++i) {
      Snapshot* s = find_snapshot(args[i]);
      if (holding) {
        s->holds.insert(tag);
      } else {
        s->holds.erase(tag);
      }
    }
    return ok();
  }

  remote::Result create(bool parents, const std::vector<std::string>& args) {
    const std::string& name = args.back();
    if (datasets.count(name) != 0) {
      return parents ? ok() : failed(1, "cannot create '" + name + "': dataset already exists\n");
    }
    const zfs::DatasetName ds(name);
    if (!parents && !ds.is_pool() && datasets.count(ds.parent().str()) == 0) {
      return failed(1, "cannot create '" + name + "': parent does not exist\n");
    }
    add_dataset(name);
    return ok();
  }

  remote::Result rename(const std::vector<std::string>& args) {
    if (args.size() != 2) {
      return failed(2, "usage: zfs rename\n");
    }
    const std::string& from = args[0];
    const std::string& to = args[1];
    if (take_busy(from)) {
      return failed(1, "cannot rename '" + from + "': dataset is busy\n");
    }
    if (!has(from)) {
      return missing(from);
    }
    if (has(to)) {
      return failed(1, "cannot rename to '" + to + "': dataset already exists\n");
    }
    if (Snapshot* s = find_snapshot(from)) {
      s->snap = to.substr(to.find('@') + 1);
      return ok();
    }
    std::map<std::string, Dataset> moved;
    for (auto it = datasets.begin(); it != datasets.end();) {
      if (it->first == from || it->first.rfind(from + "/", 0) == 0) {
        moved[to + it->first.substr(from.size())] = std::move(it->second);
        it = datasets.erase(it);
      } else {
        ++it;
      }
    }
    datasets.merge(moved);
    return ok();
  }
};

} // namespace zmigrate::fakes
