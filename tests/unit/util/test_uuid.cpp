// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/util/uuid.hpp>

#include <set>

#include <catch2/catch.hpp>

TEST_CASE("util::uuid_v4", "[util]") {
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    const std::string u = zmigrate::uuid_v4();
    CHECK(u.size() == 36);
    CHECK(zmigrate::is_uuid(u));
    CHECK(u[14] == '4');                                         // version
    CHECK(std::string("89ab").find(u[19]) != std::string::npos); // RFC 4122 variant
    CHECK(u.find_first_of("ABCDEF") == std::string::npos);
    seen.insert(u);
  }
  CHECK(seen.size() == 200);
}

TEST_CASE("util::is_uuid", "[util]") {
  CHECK(zmigrate::is_uuid("564d555a-328d-c8c4-4166-fc96982fa89f")); // SMBIOS, not v4
  CHECK(zmigrate::is_uuid("EF375F03-57CA-44A9-BC8D-63AEC09FBC37"));
  CHECK_FALSE(zmigrate::is_uuid(""));
  CHECK_FALSE(zmigrate::is_uuid("cn1"));
  CHECK_FALSE(zmigrate::is_uuid("564d555a328dc8c44166fc96982fa89f"));
  CHECK_FALSE(zmigrate::is_uuid("564d555a-328d-c8c4-4166-fc96982fa89g"));
  CHECK_FALSE(zmigrate::is_uuid("564d555a-328d-c8c4-4166-fc96982fa89f0"));
  CHECK_FALSE(zmigrate::is_uuid("564d555a-328dc-8c4-4166-fc96982fa89f"));
}
