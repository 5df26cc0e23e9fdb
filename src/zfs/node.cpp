// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/util/error.hpp>
#include <zmigrate/zfs/errors.hpp>
#include <zmigrate/zfs/node.hpp>

#include <algorithm>
#include <set>

#include <fmt/format.h>

namespace zmigrate::zfs {

namespace {

// The probe is a handful of quick commands; a node that takes longer is not usable anyway.
constexpr std::chrono::milliseconds k_probe_timeout{60000};

std::string operand_of(const remote::Argv& argv) {
  // The last token is the dataset or snapshot for every command ZfsNode runs.
  return argv.size() > 2 ? argv.back() : std::string();
}

std::uint64_t property_u64(const PropertyTable& table, const std::string& name,
                           const std::string& property) {
  auto row = table.find(name);
  if (row == table.end()) {
    return 0;
  }
  auto value = row->second.find(property);
  return value == row->second.end() ? 0 : parse_u64(value->second).value_or(0);
}

} // namespace

ZfsNode::ZfsNode(remote::Runner& runner, Clock& clock, Logger& log, ZfsNodeOptions options)
    : m_runner(runner), m_clock(clock), m_log(log), m_options(std::move(options)) {}

const Capabilities& ZfsNode::capabilities() {
  if (!m_caps) {
    remote::RunOptions options;
    options.timeout = k_probe_timeout;
    const remote::Result r = m_runner.run(probe_command(), options);
    if (!r.ok() && r.out.find("@@zmigrate-probe") == std::string::npos) {
      throw Error(ExitCode::zfs, fmt::format("{}: zfs capability probe", host()),
                  fmt::format("the probe script failed (exit {}): {}", r.exit_status,
                              r.err.empty() ? "no message" : r.err.substr(0, 300)));
    }
    Capabilities caps = parse_capabilities(r.out);
    m_log.info("zfs capabilities", {{"host", host()}, {"capabilities", caps}});
    m_caps = std::move(caps);
  }
  return *m_caps;
}

void ZfsNode::set_capabilities(Capabilities caps) {
  m_caps = std::move(caps);
}

remote::Result ZfsNode::run(remote::Argv argv) {
  if (!argv.empty() && argv.front() == k_zfs && !m_options.zfs_path.empty()) {
    argv.front() = m_options.zfs_path;
  }
  return m_runner.run(remote::Command(std::move(argv)));
}

std::string ZfsNode::what(const remote::Argv& argv) const {
  const std::string verb = argv.size() > 1 ? argv[1] : std::string();
  const std::string operand = operand_of(argv);
  return operand.empty() ? fmt::format("{}: zfs {}", host(), verb)
                         : fmt::format("{}: zfs {} {}", host(), verb, operand);
}

void ZfsNode::fail(const remote::Argv& argv, const remote::Result& result) {
  std::string err = result.err;
  if (err.empty() && result.timed_out) {
    err = "timed out";
  }
  throw_failure(what(argv), err);
}

remote::Result ZfsNode::run_retrying_busy(const remote::Argv& argv, RetryBusy retry) {
  const auto start = m_clock.now();
  std::chrono::milliseconds delay = m_options.busy_first_delay;
  while (true) {
    remote::Result r = run(argv);
    if (r.ok() || retry == RetryBusy::no || classify_failure(r.err).kind != FailureKind::busy) {
      return r;
    }
    const auto elapsed =
        std::chrono::duration_cast<std::chrono::milliseconds>(m_clock.now() - start);
    if (elapsed + delay > m_options.busy_budget) {
      return r;
    }
    m_log.debug("dataset busy, retrying",
                {{"host", host()}, {"operand", operand_of(argv)}, {"delay_ms", delay.count()}});
    m_clock.sleep_for(delay);
    delay = std::min(delay * 2, m_options.busy_max_delay);
  }
}

bool ZfsNode::exists(const ObjectName& name) {
  const remote::Argv argv = build_exists(name);
  const remote::Result r = run(argv);
  if (r.ok()) {
    return true;
  }
  if (classify_failure(r.err).kind == FailureKind::dataset_missing) {
    return false;
  }
  fail(argv, r);
}

std::vector<DatasetEntry> ZfsNode::list_datasets(const DatasetName& root, Recursive recursive) {
  const remote::Argv argv = build_list_datasets({root}, recursive);
  const remote::Result r = run(argv);
  if (!r.ok()) {
    fail(argv, r);
  }
  return parse_dataset_list(r.out);
}

std::vector<SnapshotInfo> ZfsNode::list_snapshots(const DatasetName& dataset) {
  const remote::Argv argv = build_get_snapshot_info(dataset);
  const remote::Result r = run(argv);
  if (!r.ok()) {
    fail(argv, r);
  }
  return parse_snapshot_info(r.out, dataset);
}

PropertyTable ZfsNode::get_properties(const std::vector<ObjectName>& names,
                                      const std::vector<std::string>& props) {
  const std::vector<std::string> asked = supported_properties(props, capabilities());
  if (asked.empty()) {
    PropertyTable empty;
    for (const ObjectName& n : names) {
      empty[n.str()];
    }
    return empty;
  }
  const remote::Argv argv = build_get_properties(names, asked);
  const remote::Result r = run(argv);
  if (!r.ok()) {
    fail(argv, r);
  }
  return parse_properties(r.out);
}

std::uint64_t ZfsNode::guid(const SnapshotName& snapshot) {
  const PropertyTable table = get_properties({snapshot}, {"guid"});
  auto row = table.find(snapshot.str());
  if (row != table.end()) {
    if (auto g = row->second.find("guid"); g != row->second.end()) {
      if (std::optional<std::uint64_t> v = parse_u64(g->second)) {
        return *v;
      }
    }
  }
  throw Error(ExitCode::zfs, fmt::format("{}: zfs get guid {}", host(), snapshot.str()),
              "no numeric guid in the output; please report this");
}

bool ZfsNode::snapshot_atomic(const std::vector<SnapshotName>& snapshots) {
  if (snapshots.empty()) {
    throw UsageError("zfs snapshot", "no snapshot given");
  }
  const std::string& snap = snapshots.front().snap();
  std::vector<DatasetName> wanted;
  for (const SnapshotName& s : snapshots) {
    if (s.snap() != snap) {
      throw UsageError(fmt::format("zfs snapshot {}", s.str()),
                       fmt::format("all snapshots of one call must be named @{}", snap));
    }
    wanted.push_back(s.dataset());
  }

  // What exists below the wanted datasets decides whether -r covers exactly them.
  const remote::Argv list = build_list_datasets(wanted, Recursive::yes);
  const remote::Result listed = run(list);
  if (!listed.ok()) {
    fail(list, listed);
  }
  std::vector<DatasetName> existing;
  for (const DatasetEntry& e : parse_dataset_list(listed.out)) {
    existing.push_back(e.name);
  }

  const SnapshotCommands plan = plan_snapshot_commands(wanted, existing, snap, capabilities());
  if (!plan.atomic) {
    m_log.warn("snapshots are not atomic across datasets on this node",
               {{"host", host()},
                {"implementation", capabilities().implementation},
                {"commands", plan.commands.size()}});
  }
  for (const remote::Argv& argv : plan.commands) {
    const remote::Result r = run(argv);
    if (r.ok()) {
      continue;
    }
    // A re-run after a crash finds the snapshots made: converge when every one is there.
    if (classify_failure(r.err).kind == FailureKind::already_exists) {
      bool all_there = true;
      for (std::size_t i = 2; i < argv.size(); ++i) {
        if (argv[i] != "-r" && !exists(SnapshotName::parse(argv[i]))) {
          all_there = false;
        }
      }
      if (all_there) {
        m_log.info("snapshots exist already", {{"host", host()}, {"snap", snap}});
        continue;
      }
    }
    fail(argv, r);
  }
  return plan.atomic;
}

bool ZfsNode::destroy_snapshot(const SnapshotName& snapshot, Recursive recursive, RetryBusy retry) {
  const remote::Argv argv = build_destroy(snapshot, recursive);
  const remote::Result r = run_retrying_busy(argv, retry);
  if (r.ok()) {
    return true;
  }
  if (classify_failure(r.err).kind == FailureKind::dataset_missing) {
    return false;
  }
  fail(argv, r);
}

bool ZfsNode::destroy_dataset(const DatasetName& dataset, Recursive recursive, RetryBusy retry,
                              ForceUnmount force) {
  const remote::Argv argv = build_destroy(dataset, recursive, force);
  const remote::Result r = run_retrying_busy(argv, retry);
  if (r.ok()) {
    return true;
  }
  if (classify_failure(r.err).kind == FailureKind::dataset_missing) {
    return false;
  }
  fail(argv, r);
}

void ZfsNode::hold(const std::string& tag, const std::vector<SnapshotName>& snapshots) {
  validate_hold_tag(tag);
  if (snapshots.empty()) {
    return;
  }
  if (!capabilities().holds) {
    m_log.info("zfs holds not supported on this node; snapshots are not protected",
               {{"host", host()}, {"tag", tag}});
    return;
  }
  const remote::Argv argv = build_hold(tag, snapshots, Recursive::no);
  const remote::Result r = run(argv);
  if (r.ok()) {
    return;
  }
  if (classify_failure(r.err).kind != FailureKind::tag_exists) {
    fail(argv, r);
  }
  // One snapshot already held makes the whole batch fail: hold the rest one by one.
  for (const SnapshotName& s : snapshots) {
    const remote::Argv one = build_hold(tag, {s}, Recursive::no);
    const remote::Result r1 = run(one);
    if (!r1.ok() && classify_failure(r1.err).kind != FailureKind::tag_exists) {
      fail(one, r1);
    }
  }
}

void ZfsNode::release(const std::string& tag, const std::vector<SnapshotName>& snapshots) {
  validate_hold_tag(tag);
  if (snapshots.empty()) {
    return;
  }
  if (!capabilities().holds) {
    m_log.info("zfs holds not supported on this node; nothing to release",
               {{"host", host()}, {"tag", tag}});
    return;
  }
  auto gone = [](const remote::Result& r) {
    const FailureKind k = classify_failure(r.err).kind;
    return k == FailureKind::no_such_tag || k == FailureKind::dataset_missing;
  };
  const remote::Argv argv = build_release(tag, snapshots, Recursive::no);
  const remote::Result r = run(argv);
  if (r.ok()) {
    return;
  }
  if (!gone(r)) {
    fail(argv, r);
  }
  for (const SnapshotName& s : snapshots) {
    const remote::Argv one = build_release(tag, {s}, Recursive::no);
    const remote::Result r1 = run(one);
    if (!r1.ok() && !gone(r1)) {
      fail(one, r1);
    }
  }
}

std::optional<std::string> ZfsNode::resume_token(const DatasetName& dataset) {
  if (!capabilities().resume_tokens) {
    return std::nullopt;
  }
  const remote::Argv argv = build_get_properties({dataset}, {"receive_resume_token"});
  const remote::Result r = run(argv);
  if (!r.ok()) {
    if (classify_failure(r.err).kind == FailureKind::dataset_missing) {
      return std::nullopt;
    }
    fail(argv, r);
  }
  const PropertyTable table = parse_properties(r.out);
  auto row = table.find(dataset.str());
  return row == table.end() ? std::nullopt : resume_token_of(row->second);
}

SendSize ZfsNode::estimate_send(const SendSpec& spec_in) {
  validate(spec_in);
  const Capabilities& caps = capabilities();
  if (!caps.dry_run_parsable) {
    return estimate_from_properties(spec_in);
  }
  SendSpec spec = spec_in;
  spec.dry_run = true;
  const remote::Argv argv = build_send(spec, caps);
  const remote::Result r = run(argv);
  if (!r.ok()) {
    fail(argv, r);
  }
  // OpenZFS prints the dry-run report on stdout; some older releases on stderr.
  std::optional<SendEstimate> est = parse_send_estimate(r.out);
  if (!est) {
    est = parse_send_estimate(r.err);
  }
  if (!est) {
    throw Error(ExitCode::zfs, what(argv),
                "the dry run printed no size estimate; please report this zfs version");
  }
  return SendSize{est->bytes, est->parsable && est->complete,
                  est->parsable ? "zfs send -nvP" : "zfs send -nv"};
}

SendSize ZfsNode::estimate_from_properties(const SendSpec& spec) {
  if (!spec.resume_token.empty()) {
    throw PreconditionError(fmt::format("{}: estimate of zfs send -t", host()),
                            "this node has no dry-run sends and no resume tokens");
  }
  if (spec.from && std::holds_alternative<BookmarkName>(*spec.from)) {
    throw PreconditionError(fmt::format("{}: estimate of zfs send -i <bookmark>", host()),
                            "this node has no dry-run sends and no bookmarks");
  }
  const SnapshotName& to = *spec.snapshot;
  std::vector<DatasetName> datasets{to.dataset()};
  if (spec.replicate) {
    datasets.clear();
    for (const DatasetEntry& e : list_datasets(to.dataset(), Recursive::yes)) {
      datasets.push_back(e.name);
    }
  }

  const std::optional<SnapshotName> from =
      spec.from ? std::optional<SnapshotName>(std::get<SnapshotName>(*spec.from)) : std::nullopt;
  const bool use_written = from && capabilities().written_property;
  std::vector<ObjectName> names;
  std::vector<std::string> props{"referenced"};
  if (use_written) {
    props.push_back("written@" + from->snap());
  }
  for (const DatasetName& ds : datasets) {
    names.emplace_back(SnapshotName(ds, to.snap()));
    if (from && !use_written) {
      // The top dataset may send from another dataset's snapshot (a clone's origin).
      names.emplace_back(ds == to.dataset() ? *from : SnapshotName(ds, from->snap()));
    }
  }
  const remote::Argv argv =
      build_get_properties(names, supported_properties(props, capabilities()));
  const remote::Result r = run(argv);
  // A child created after `from` lacks that snapshot (the stream carries it whole): zfs still
  // prints the rows it has, and a missing `from` counts as 0 below.
  if (!r.ok() && (classify_failure(r.err).kind != FailureKind::dataset_missing ||
                  r.err.find("'" + to.str() + "'") != std::string::npos)) {
    fail(argv, r);
  }
  const PropertyTable table = parse_properties(r.out);

  std::uint64_t total = 0;
  for (const DatasetName& ds : datasets) {
    const std::string to_name = SnapshotName(ds, to.snap()).str();
    if (!from) {
      total += property_u64(table, to_name, "referenced");
    } else if (use_written) {
      total += property_u64(table, to_name, "written@" + from->snap());
    } else {
      const std::string from_name =
          (ds == to.dataset() ? *from : SnapshotName(ds, from->snap())).str();
      const std::uint64_t now = property_u64(table, to_name, "referenced");
      const std::uint64_t before = property_u64(table, from_name, "referenced");
      total += now > before ? now - before : 0;
    }
  }
  return SendSize{total, false, "properties"};
}

void ZfsNode::set_property(const ObjectName& name, const std::string& property,
                           const std::string& value) {
  const remote::Argv argv = build_set(name, property, value);
  const remote::Result r = run(argv);
  if (!r.ok()) {
    fail(argv, r);
  }
}

void ZfsNode::mount(const DatasetName& dataset) {
  const remote::Argv argv = build_mount(dataset);
  const remote::Result r = run(argv);
  if (!r.ok() && r.err.find("already mounted") == std::string::npos) {
    fail(argv, r);
  }
}

void ZfsNode::create(const DatasetName& dataset, Parents parents,
                     const std::vector<std::pair<std::string, std::string>>& props) {
  const remote::Argv argv = build_create(dataset, parents, props);
  const remote::Result r = run(argv);
  if (!r.ok()) {
    fail(argv, r);
  }
}

void ZfsNode::rename(const DatasetName& from, const DatasetName& to, RetryBusy retry) {
  const remote::Argv argv = build_rename(from, to);
  const remote::Result r = run_retrying_busy(argv, retry);
  if (!r.ok()) {
    fail(argv, r);
  }
}

void ZfsNode::rollback(const SnapshotName& snapshot, DestroyNewer destroy_newer) {
  const remote::Argv argv = build_rollback(snapshot, destroy_newer);
  const remote::Result r = run(argv);
  if (!r.ok()) {
    fail(argv, r);
  }
}

void ZfsNode::recv_abort(const DatasetName& dataset) {
  if (!capabilities().resume_tokens) {
    return;
  }
  const remote::Argv argv = build_recv_abort(dataset, capabilities());
  const remote::Result r = run(argv);
  if (!r.ok()) {
    const FailureKind k = classify_failure(r.err).kind;
    // Nothing partial to discard is the converged state.
    if (k == FailureKind::dataset_missing ||
        r.err.find("does not have any resumable") != std::string::npos) {
      return;
    }
    fail(argv, r);
  }
}

} // namespace zmigrate::zfs
