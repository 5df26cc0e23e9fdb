// SPDX-License-Identifier: MPL-2.0
#pragma once
// A phase as a declared list of named steps, and the one runner that executes any list.
//
// Each step says what it does (run), how it is taken back (undo, empty: nothing to take back),
// and whether it is inside the downtime window. The runner journals every step before and
// after it runs (Operation::step: interrupt check, lease heartbeat, fault hook), times it, and
// sums the downtime window. When a step fails before the phase's point of no return
// (PhaseSpec::commit_after), the runner runs the undos of that step and of every step done
// before it, newest first, each journaled as "<phase>.undo.<step>"; an undo that fails is logged
// and never hides the first error (as Proxmox's phase1_cleanup). Past the point of no return
// nothing is undone: the phase is forward only, and a rerun completes it. Every run and every
// undo looks at the real state first, so either is safe to repeat after a crash.

#include <zmigrate/migration/engine.hpp>
#include <zmigrate/migration/operation.hpp>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace zmigrate::migration {

enum class Window { outside, downtime };

struct Step {
  std::string name;    // unique within the phase: the journal key is "<phase>.<name>"
  std::string message; // the operator's line for it ("" for none)
  std::function<void(nlohmann::json& details)> run;
  std::function<void()> undo = {}; // empty: nothing to take back
  Window window = Window::outside;
  // Read when the step's turn comes: false leaves it out of this run (the plan decided so,
  // possibly in an earlier step). Null: always.
  const bool* when = nullptr;
  std::string breakdown = {}; // the name in the downtime breakdown ("" = name)
};

struct PhaseSpec {
  std::string name; // "switch", "rollback", ...
  std::vector<Step> steps;
  // The point of no return: once the runner is past this step (done, or left out because an
  // earlier run did it), nothing is undone.
  std::string commit_after;
};

struct PhaseReport {
  std::vector<TimedStep> steps;          // every step that ran, in order
  std::vector<TimedStep> downtime_steps; // the Window::downtime ones (breakdown names)
  // From the start of the first downtime step to the end of the last one (journal writes in
  // between included).
  std::chrono::milliseconds downtime{0};
  bool committed = false; // the runner got past commit_after
};

// Run `spec`'s steps in order. Throws the first step failure after the undos (see above);
// `report`, when given, holds what ran so far also on a throw.
PhaseReport run_steps(Context& ctx, Operation& op, const PhaseSpec& spec,
                      PhaseReport* report = nullptr);

} // namespace zmigrate::migration
