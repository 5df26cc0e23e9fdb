// SPDX-License-Identifier: MPL-2.0
// zmigrate: move Triton instances between compute nodes with zfs send/recv over ssh.
#include <zmigrate/cli/app.hpp>
#include <zmigrate/util/process.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  // Before anything is read: a core dump would hold the migration's private key.
  const std::string problem = zmigrate::disable_core_dumps();
  if (!problem.empty()) {
    std::fprintf(stderr, "zmigrate: warning: cannot disable core dumps: %s\n", problem.c_str());
  }
  return zmigrate::cli::run(argc, argv);
}
