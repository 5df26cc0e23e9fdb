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
