// SPDX-License-Identifier: MPL-2.0
#pragma once
// OneNodeAccess: a NodeAccess that hands out the one FakeRunner for every server (every node of
// the test is that runner) and records which servers were asked for.

#include "fakes/fake_runner.hpp"

#include <zmigrate/migration/context.hpp>

#include <string>
#include <vector>

namespace zmigrate::fakes {

class OneNodeAccess final : public migration::NodeAccess {
public:
  explicit OneNodeAccess(FakeRunner& runner) : m_runner(runner) {}
  remote::Runner& runner_for(const inventory::Server& server) override {
    requested.push_back(server.uuid);
    return m_runner;
  }
  std::vector<std::string> requested;

private:
  FakeRunner& m_runner;
};

} // namespace zmigrate::fakes
