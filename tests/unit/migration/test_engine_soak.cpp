// SPDX-License-Identifier: MPL-2.0
// A soak of the engine over its fakes: random operator commands, each with a random fault half
// of the time, many faults per migration (the matrices inject one per run):
//   - a step that fails (before or after a random step run),
//   - the process killed before a random state store write (EngineWorld::crash_at_write),
//   - a node operation that fails once (on the source or the target),
//   - a data link whose next send or open fails.
// After every command the invariants hold (EngineWorld::invariants: never two running copies,
// the source intact until a finalize proved the target, the ledger and the nodes agree, the
// operator's authorized_keys untouched but for lines the ledger knows). At the end of an
// episode the documented ways on, without faults, must bring the migration to an end
// (finalized, rolled back or aborted) with that end's state exactly.
//
// "engine soak (short)" runs 20 episodes in every unit run. The long soak is hidden:
//   ZMIGRATE_SOAK_EPISODES=500 ZMIGRATE_SOAK_SEED=7 build/tests/zmigrate_tests '[.soak]'
// (scripts/soak); its last result is in docs/reliability.md.
#include "fakes/engine_world.hpp"

#include <zmigrate/migration/engine.hpp>
#include <zmigrate/migration/transitions.hpp>
#include <zmigrate/util/error.hpp>

#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

using namespace zmigrate;
using fakes::EngineWorld;
using migration::Action;

namespace {

struct SoakResult {
  int episodes = 0;
  int commands = 0;
  int faults = 0;  // faults that fired
  int crashes = 0; // of them, kills
  std::vector<std::string> violations;
};

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) {
    out += (out.empty() ? "" : "; ") + s;
  }
  return out;
}

const char* const k_node_ops[] = {
    "vm_get",          "vm_stop",          "vm_start",          "vm_update",
    "vm_delete",       "zone_export",      "zone_import",       "zone_remove",
    "image_import",    "set_property",     "properties",        "snapshot_recursive",
    "destroy_dataset", "destroy_snapshot", "hold_all",          "release_all",
    "create_dataset",  "rollback_to",      "mount_filesystems", "tree"};

class Episode {
public:
  Episode(std::mt19937& rng, SoakResult& out) : m_rng(rng), m_out(out) {
    const EngineWorld::Kind kinds[] = {EngineWorld::Kind::zone, EngineWorld::Kind::kvm,
                                       EngineWorld::Kind::bhyve};
    m_world = std::make_unique<EngineWorld>(kinds[pick(3)], pick(4) != 0);
    m_base = m_world->baseline();
  }

  void run(int max_commands) {
    for (int i = 0; i < max_commands && !ended(); ++i) {
      command(pick(2) == 0);
    }
    finish();
  }

private:
  int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(m_rng); }
  EngineWorld& w() { return *m_world; }
  bool ended() { return w().has_record() && w().record().archived; }

  void violation(const std::string& what) {
    m_out.violations.push_back(
        fmt::format("episode {}: {} (after: {})", m_out.episodes, what, joined(m_log)));
  }

  // One random fault armed for the next command.
  void arm_fault() {
    EngineWorld& x = w();
    switch (pick(5)) {
    case 0: { // a step fails at its n-th run (any step), before or after it
      auto seen = std::make_shared<int>(0);
      const int n = 1 + pick(15);
      const bool before = pick(2) == 0;
      x.ctx.settings.step_hook = [&x, seen, n, before](const std::string& name, bool is_before) {
        if (is_before) {
          ++*seen;
        }
        if (*seen == n && is_before == before) {
          ++x.hook_fired;
          throw Error(ExitCode::failure, "step " + name, "injected (soak)");
        }
      };
      m_log.push_back(fmt::format("step fault at run {} {}", n, before ? "before" : "after"));
      return;
    }
    case 1: {
      const int k = 1 + pick(70);
      x.crash_at_write(k);
      m_log.push_back(fmt::format("kill -9 before write {}", k));
      return;
    }
    case 2:
    case 3: {
      fakes::FakeNode& n = pick(2) == 0 ? *x.cn1 : *x.cn2;
      const char* op = k_node_ops[pick(static_cast<int>(std::size(k_node_ops)))];
      n.fail_next(op, "injected (soak)");
      m_log.push_back(fmt::format("{} fails once on {}", op, n.host()));
      return;
    }
    default:
      if (pick(2) == 0) {
        x.nodes.fail_next_send("injected (soak)", pick(3));
        m_log.push_back("a send fails");
      } else {
        x.nodes.fail_next_open("injected (soak)");
        m_log.push_back("a link open fails");
      }
      return;
    }
  }

  int fired() {
    EngineWorld& x = w();
    return x.hook_fired + x.cn1->injected + x.cn2->injected + (x.crashed ? 1 : 0);
  }

  void disarm() {
    EngineWorld& x = w();
    if (x.crashed) {
      ++m_out.crashes;
    }
    x.restart_after_crash();
    x.clear_step_fault();
    x.cn1->clear_faults();
    x.cn2->clear_faults();
    x.nodes.fail_next_send("", 0); // an empty message arms nothing
    x.nodes.fail_next_open("");
  }

  // A random command the record accepts (or begin/migrate when there is none).
  void command(bool with_fault) {
    EngineWorld& x = w();
    std::vector<Action> can =
        migration::allowed_actions(x.has_record() ? std::optional(x.record()) : std::nullopt);
    std::vector<std::string> names;
    for (Action a : can) {
      names.push_back(migration::to_string(a));
    }
    if (can.empty() || can.front() == Action::begin || !x.has_record() || x.record().archived) {
      names.push_back("migrate");
    }
    if (names.empty()) {
      violation("no command is allowed on a record that did not end");
      return;
    }
    const std::string what = names[static_cast<std::size_t>(pick(static_cast<int>(names.size())))];
    const int before = fired();
    if (with_fault) {
      arm_fault();
    }
    m_log.push_back(what);
    try {
      run(what, pick(4) == 0);
    } catch (const EngineWorld::Crash&) {
    } catch (const std::exception&) {
    }
    m_out.faults += fired() - before;
    disarm();
    ++m_out.commands;
    check(what);
  }

  void run(const std::string& what, bool finalize_too) {
    EngineWorld& x = w();
    if (what == "begin") {
      x.begin();
    } else if (what == "sync") {
      x.sync();
    } else if (what == "switch") {
      x.switch_over();
    } else if (what == "rollback") {
      x.rollback();
    } else if (what == "finalize") {
      x.finalize();
    } else if (what == "abort") {
      x.abort();
    } else {
      x.migrate(finalize_too);
    }
  }

  void check(const std::string& after) {
    EngineWorld& x = w();
    const bool throwing_away = x.has_record() && (x.record().phase == state::Phase::abort ||
                                                  x.record().phase == state::Phase::rollback);
    std::vector<std::string> dangling;
    for (const std::string& p : x.invariants(m_base, !throwing_away, &dangling)) {
      violation("after " + after + ": " + p);
    }
  }

  // The documented ways on, without faults, until the migration ends; then its end state.
  void finish() {
    EngineWorld& x = w();
    for (int i = 0; i < 6 && x.has_record() && !x.record().archived; ++i) {
      const state::Phase phase = x.record().phase;
      try {
        if (phase == state::Phase::rollback) {
          x.rollback();
        } else if (phase == state::Phase::abort) {
          x.abort();
        } else if (phase == state::Phase::finalize) {
          x.finalize();
        } else {
          x.migrate(true);
        }
      } catch (const std::exception& e) {
        violation(fmt::format("the way on from {} threw: {}", state::to_string(phase), e.what()));
        return;
      }
    }
    if (!x.has_record()) {
      return; // every begin failed before it wrote a record: nothing happened
    }
    const state::Migration m = x.record();
    if (!m.archived) {
      violation("the ways on did not end the migration: " + state::to_string(m.phase) + "/" +
                state::to_string(m.state));
      return;
    }
    std::vector<std::string> bad;
    if (m.phase == state::Phase::finalize) {
      bad = x.expect_finalized();
    } else if (m.phase == state::Phase::rollback) {
      bad = x.expect_rolled_back();
    } else {
      bad = x.expect_aborted();
    }
    for (const std::string& p : bad) {
      violation("end state " + state::to_string(m.phase) + ": " + p);
    }
  }

  std::mt19937& m_rng;
  SoakResult& m_out;
  std::unique_ptr<EngineWorld> m_world;
  EngineWorld::Baseline m_base;
  std::vector<std::string> m_log;
};

SoakResult soak(unsigned seed, int episodes) {
  SoakResult r;
  std::mt19937 rng(seed);
  for (int i = 0; i < episodes; ++i) {
    ++r.episodes;
    Episode(rng, r).run(12);
  }
  return r;
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

void report(unsigned seed, const SoakResult& r) {
  WARN(fmt::format("engine soak, seed {}: {} episodes, {} commands, {} faults injected ({} of "
                   "them kills), {} invariant violations",
                   seed, r.episodes, r.commands, r.faults, r.crashes, r.violations.size()));
  for (std::size_t i = 0; i < r.violations.size() && i < 5; ++i) {
    INFO(r.violations[i]);
  }
  CHECK(r.violations.empty());
}

} // namespace

TEST_CASE("engine soak (short): random commands with random faults keep every invariant",
          "[engine][soak-short]") {
  const unsigned seed = 20261202;
  const SoakResult r = soak(seed, 20);
  CHECK(r.faults > 0);
  report(seed, r);
}

TEST_CASE("engine soak: random commands with random faults keep every invariant", "[.soak]") {
  const unsigned seed = static_cast<unsigned>(env_int("ZMIGRATE_SOAK_SEED", 1));
  const SoakResult r = soak(seed, env_int("ZMIGRATE_SOAK_EPISODES", 200));
  report(seed, r);
}
