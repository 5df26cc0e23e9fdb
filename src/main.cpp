// SPDX-License-Identifier: MPL-2.0
// zmigrate: move Triton instances between compute nodes with zfs send/recv over ssh.
#include <zmigrate/cli/app.hpp>

int main(int argc, char** argv) {
  return zmigrate::cli::run(argc, argv);
}
