// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/util/error.hpp>
#include <zmigrate/util/units.hpp>

#include <catch2/catch.hpp>

using namespace zmigrate;
using std::chrono::milliseconds;

TEST_CASE("util::human_bytes", "[util]") {
  CHECK(human_bytes(0) == "0B");
  CHECK(human_bytes(1023) == "1023B");
  CHECK(human_bytes(1536) == "1.5kB");
  CHECK(human_bytes(57985434) == "55.3MB");
  CHECK(human_rate(57985434) == "55.3MB/s");
  CHECK(human_rate(0) == "0B/s");
}

TEST_CASE("util::human_duration", "[util]") {
  CHECK(human_duration(milliseconds(850)) == "850ms");
  CHECK(human_duration(milliseconds(4200)) == "4.2s");
  CHECK(human_duration(milliseconds(80'000)) == "1m20s");
  CHECK(human_duration(milliseconds(3'723'000)) == "1h2m3s");
}

TEST_CASE("util::parse_bytes", "[util]") {
  CHECK(parse_bytes("1048576") == 1048576);
  CHECK(parse_bytes("20MB") == 20ULL << 20);
  CHECK(parse_bytes("1.5G") == 3ULL << 29);
  CHECK(parse_bytes("512k") == 512ULL << 10);
  CHECK(parse_bytes("2GiB") == 2ULL << 30);
  CHECK_THROWS_AS(parse_bytes("lots"), UsageError);
  CHECK_THROWS_AS(parse_bytes("5X"), UsageError);
}

TEST_CASE("util::parse_duration", "[util]") {
  using std::chrono::milliseconds;
  CHECK(parse_duration("90") == milliseconds(90'000));
  CHECK(parse_duration("60s") == milliseconds(60'000));
  CHECK(parse_duration("500ms") == milliseconds(500));
  CHECK(parse_duration("5m") == milliseconds(300'000));
  CHECK(parse_duration("1.5h") == milliseconds(5'400'000));
  for (const char* bad : {"", "0", "-5s", "5 s", " 5s", "5x", "1m30s", "inf", "s", "1e300"}) {
    INFO(bad);
    CHECK_THROWS_WITH(parse_duration(bad), Catch::Contains(std::string("duration '") + bad + "'") &&
                                               Catch::Contains("e.g. 500ms, 60s, 5m"));
  }
}
