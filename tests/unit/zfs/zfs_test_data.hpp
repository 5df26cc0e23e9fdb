// SPDX-License-Identifier: MPL-2.0
#pragma once
// Recorded zfs outputs of tests/data/zfs/ (see its README for where each came from).

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace zmigrate::zfs::testdata {

// Contents of tests/data/zfs/<relative>, e.g. "zfs-fuse/probe.out". Throws when missing.
inline std::string read(const std::string& relative) {
  const std::string path = std::string(ZMIGRATE_TEST_DATA_DIR) + "/zfs/" + relative;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::runtime_error("missing test data file " + path);
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

} // namespace zmigrate::zfs::testdata
