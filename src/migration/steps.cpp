// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/steps.hpp>

namespace zmigrate::migration {

namespace {

std::chrono::milliseconds ms_since(Context& ctx, std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(ctx.clock.now() - t);
}

// Take back `done` (newest first) after a failure before the point of no return.
void undo_all(Context& ctx, Operation& op, const PhaseSpec& spec,
              const std::vector<const Step*>& done) {
  for (auto it = done.rbegin(); it != done.rend(); ++it) {
    const Step& s = **it;
    if (!s.undo) {
      continue;
    }
    try {
      op.compensate(spec.name + ".undo." + s.name, [&](nlohmann::json&) { s.undo(); });
    } catch (const std::exception& e) {
      ctx.log.error("undo failed", {{"step", spec.name + "." + s.name}, {"error", e.what()}});
    }
  }
}

} // namespace

PhaseReport run_steps(Context& ctx, Operation& op, const PhaseSpec& spec, PhaseReport* report) {
  PhaseReport local;
  PhaseReport& r = report != nullptr ? *report : local;
  std::vector<const Step*> done; // including the one that failed: its undo looks first
  std::chrono::steady_clock::time_point window_start{};
  bool in_window = false;
  r.committed = false; // no commit_after: every failure is undone
  for (const Step& s : spec.steps) {
    if (s.when != nullptr && !*s.when) {
      r.committed = r.committed || s.name == spec.commit_after;
      continue;
    }
    const auto t = ctx.clock.now();
    if (s.window == Window::downtime && !in_window) {
      window_start = t;
      in_window = true;
    }
    try {
      op.step(spec.name + "." + s.name, s.run, s.message);
    } catch (...) {
      if (!r.committed) {
        done.push_back(&s);
        undo_all(ctx, op, spec, done);
      }
      throw;
    }
    const auto took = ms_since(ctx, t);
    r.steps.push_back({s.name, took});
    if (s.window == Window::downtime) {
      r.downtime_steps.push_back({s.breakdown.empty() ? s.name : s.breakdown, took});
      r.downtime = ms_since(ctx, window_start);
    }
    done.push_back(&s);
    if (s.name == spec.commit_after) {
      r.committed = true;
    }
  }
  return r;
}

} // namespace zmigrate::migration
