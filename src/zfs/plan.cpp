// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/util/error.hpp>
#include <zmigrate/zfs/plan.hpp>

#include <map>
#include <set>

#include <fmt/format.h>

namespace zmigrate::zfs {

namespace {

std::string list_text(const std::vector<std::string>& names) {
  if (names.empty()) {
    return "none";
  }
  constexpr std::size_t k_shown = 5;
  std::string out;
  for (std::size_t i = 0; i < names.size() && i < k_shown; ++i) {
    out += (i == 0 ? "" : ", ") + names[i];
  }
  if (names.size() > k_shown) {
    out += fmt::format(" and {} more", names.size() - k_shown);
  }
  return out;
}

SyncPlan conflict(SyncPlan plan, DivergedReason reason, std::string explanation) {
  plan.action = SyncAction::conflict;
  plan.conflict = reason;
  plan.explanation = std::move(explanation);
  return plan;
}

} // namespace

SyncPlan plan_sync(const SyncInput& input) {
  SyncPlan plan;
  plan.to = input.to;
  const bool ours = input.ownership == RecvForce::target_is_ours;

  std::map<std::uint64_t, std::size_t> source_index; // guid → position, oldest first
  std::optional<std::size_t> to_index;
  for (std::size_t i = 0; i < input.source.size(); ++i) {
    source_index.emplace(input.source[i].guid, i);
    if (input.source[i].name.snap() == input.to) {
      to_index = i;
    }
  }
  if (!to_index) {
    throw PreconditionError(fmt::format("snapshot @{}", input.to),
                            "it is not among the source's snapshots; create it before syncing");
  }

  std::set<std::uint64_t> target_guids;
  if (input.target) {
    for (const SnapshotInfo& t : *input.target) {
      target_guids.insert(t.guid);
      if (source_index.count(t.guid) == 0) {
        plan.target_only.push_back(t.name.str());
      }
    }
  }
  for (const SnapshotInfo& s : input.source) {
    if (target_guids.count(s.guid) == 0) {
      plan.source_only.push_back(s.name.str());
    }
  }

  // The newest target snapshot the source also has, and whatever the target has after it.
  std::optional<std::size_t> common_source;
  std::vector<std::string> newer_on_target;
  if (input.target) {
    for (const SnapshotInfo& t : *input.target) {
      auto it = source_index.find(t.guid);
      if (it != source_index.end()) {
        common_source = it->second;
        newer_on_target.clear();
      } else {
        newer_on_target.push_back(t.name.str());
      }
    }
  }
  if (common_source) {
    plan.common = input.source[*common_source].name.snap();
  }

  if (!input.resume_token.empty()) {
    plan.action = SyncAction::resume;
    plan.resume_token = input.resume_token;
    plan.explanation = "the target holds a partial receive; resume it, then plan again";
    return plan;
  }
  if (!input.target) {
    plan.action = SyncAction::full;
    plan.explanation = fmt::format("the target does not exist; full send of @{}", input.to);
    return plan;
  }
  if (input.target->empty()) {
    if (ours) {
      plan.action = SyncAction::full;
      plan.force = true;
      plan.explanation = fmt::format(
          "the target exists without snapshots and is ours; full send of @{} with -F", input.to);
      return plan;
    }
    return conflict(std::move(plan), DivergedReason::target_exists,
                    "the target dataset exists (without snapshots) and was not created by this "
                    "migration");
  }
  if (!common_source) {
    return conflict(
        std::move(plan), DivergedReason::no_common_snapshot,
        fmt::format("no snapshot in common by GUID; target-only: {}", list_text(plan.target_only)));
  }
  if (!newer_on_target.empty()) {
    return conflict(std::move(plan), DivergedReason::target_ahead,
                    fmt::format("the target has snapshots after the common @{} that the source "
                                "lacks: {}",
                                *plan.common, list_text(newer_on_target)));
  }
  if (*common_source >= *to_index) {
    plan.action = SyncAction::nothing;
    plan.explanation =
        *common_source == *to_index
            ? fmt::format("the target already has @{}", input.to)
            : fmt::format("the target already has @{}, newer than @{}", *plan.common, input.to);
    return plan;
  }
  plan.action = SyncAction::incremental;
  plan.from = plan.common;
  plan.force = ours;
  for (std::size_t i = *common_source + 1; i < *to_index; ++i) {
    plan.intermediates.push_back(input.source[i].name.snap());
  }
  plan.explanation =
      fmt::format("incremental from @{} (common by GUID) to @{}", *plan.from, input.to);
  return plan;
}

void throw_conflict(const SyncPlan& plan, std::string what) {
  if (plan.action != SyncAction::conflict || !plan.conflict) {
    throw UsageError("throw_conflict", "the plan is not a conflict");
  }
  const std::string why = fmt::format(
      "{}; newest common snapshot: {}; only on the source: {}; only on the target: {}; the "
      "target holds data this migration did not send: inspect it and remove it only if that is "
      "safe, then run the command again",
      plan.explanation, plan.common ? "@" + *plan.common : std::string("none"),
      list_text(plan.source_only), list_text(plan.target_only));
  throw Diverged(std::move(what), why, *plan.conflict, plan.common, plan.source_only,
                 plan.target_only);
}

} // namespace zmigrate::zfs
