// SPDX-License-Identifier: MPL-2.0
#include "zfs_test_data.hpp"

#include <zmigrate/util/error.hpp>
#include <zmigrate/zfs/capabilities.hpp>

#include <string>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::zfs;

TEST_CASE("zfs::parse_capabilities", "[zfs]") {
  SECTION("zfs-fuse 0.7.0, recorded on the lab machine") {
    const Capabilities c = parse_capabilities(testdata::read("zfs-fuse/probe.out"));
    CHECK(c.implementation == "zfs-fuse");
    CHECK(c.version.empty());
    CHECK_FALSE(c.dry_run_parsable);
    CHECK_FALSE(c.resume_tokens);
    CHECK_FALSE(c.compressed_send);
    CHECK_FALSE(c.large_blocks);
    CHECK_FALSE(c.embedded_data);
    CHECK_FALSE(c.raw_send);
    CHECK(c.holds); // zfs hold/release work there (recorded), only `zfs holds` does not
    CHECK_FALSE(c.bookmarks);
    CHECK_FALSE(c.written_property);
    CHECK_FALSE(c.recv_exclude_props);
    CHECK_FALSE(c.recv_set_props);
    CHECK_FALSE(c.list_parsable);
    CHECK_FALSE(c.multi_snapshot);
    CHECK_FALSE(c.zvols);
    CHECK(c.has_pv);
    CHECK(c.has_mbuffer);
  }
  SECTION("OpenZFS 2.3.2") {
    const Capabilities c = parse_capabilities(testdata::read("openzfs-2.3/probe.out"));
    CHECK(c.implementation == "openzfs 2.3.2");
    CHECK(c.version == "2.3.2");
    CHECK(c.dry_run_parsable);
    CHECK(c.resume_tokens);
    CHECK(c.compressed_send);
    CHECK(c.large_blocks);
    CHECK(c.embedded_data);
    CHECK(c.raw_send);
    CHECK(c.holds);
    CHECK(c.bookmarks);
    CHECK(c.written_property);
    CHECK(c.recv_exclude_props);
    CHECK(c.recv_set_props);
    CHECK(c.list_parsable);
    CHECK(c.multi_snapshot);
    CHECK(c.zvols);
    CHECK(c.has_pv);
    CHECK(c.has_mbuffer);
  }
  SECTION("illumos (2018 usage texts: no -w, no -x)") {
    const Capabilities c = parse_capabilities(testdata::read("illumos/probe.out"));
    CHECK(c.implementation == "illumos");
    CHECK(c.version == "5.11");
    CHECK(c.dry_run_parsable);
    CHECK(c.resume_tokens);
    CHECK(c.compressed_send);
    CHECK(c.large_blocks);
    CHECK(c.embedded_data);
    CHECK_FALSE(c.raw_send);
    CHECK(c.holds);
    CHECK(c.bookmarks);
    CHECK(c.written_property);
    CHECK_FALSE(c.recv_exclude_props);
    CHECK(c.recv_set_props); // -o origin= only
    CHECK(c.list_parsable);
    CHECK(c.multi_snapshot);
    CHECK(c.zvols);
    CHECK_FALSE(c.has_pv);
    CHECK_FALSE(c.has_mbuffer);
  }
  SECTION("output that is not from the probe") {
    CHECK_THROWS_AS(parse_capabilities("cannot receive: failed to read from stream\n"), Error);
    CHECK_THROWS_AS(parse_capabilities(""), Error);
  }
  SECTION("an unknown Linux ZFS without `zfs version` is judged by its usage texts") {
    const std::string out = "@@zmigrate-probe 1\n@@uname\nLinux 4.9\n@@zfs-version\n"
                            "unrecognized command 'version'\n@@zfs-send-usage\n"
                            "\tsend [-DnPpRvLe] [-[iI] snapshot] <snapshot>\n"
                            "\tsend [-Le] [-i snapshot|bookmark] <filesystem|volume|snapshot>\n"
                            "\tsend [-PnvVe] -t <receive_resume_token>\n@@zfs-recv-usage\n"
                            "\treceive [-vnsFu] <filesystem|volume|snapshot>\n"
                            "\treceive -A <filesystem|volume>\n@@tools\n@@end\n";
    const Capabilities c = parse_capabilities(out);
    CHECK(c.implementation == "unknown");
    CHECK(c.dry_run_parsable);
    CHECK(c.resume_tokens);
    CHECK_FALSE(c.compressed_send);
    CHECK(c.large_blocks);
    CHECK_FALSE(c.holds);
    CHECK(c.node.empty());
  }
  SECTION("node.js: SmartOS's own wins over one on PATH") {
    const std::string head = "@@zmigrate-probe 1\n@@uname\nSunOS 5.11\n@@tools\n";
    CHECK(parse_capabilities(head + "/opt/local/bin/node\n/usr/node/bin/node\n@@end\n").node ==
          "/usr/node/bin/node");
    CHECK(parse_capabilities(head + "/usr/bin/node\n@@end\n").node == "/usr/bin/node");
    CHECK(parse_capabilities(head + "node\n@@end\n").node.empty()); // a shell builtin or alias
  }
}

TEST_CASE("zfs::probe_command", "[zfs]") {
  const remote::Command cmd = probe_command();
  REQUIRE(cmd.pipeline.size() == 1);
  REQUIRE(cmd.pipeline[0].size() == 3);
  CHECK(cmd.pipeline[0][0] == "sh");
  CHECK(cmd.pipeline[0][1] == "-c");
  CHECK(cmd.pipeline[0][2] == std::string(probe_script()));
  CHECK(probe_script().find("@@zmigrate-probe 1") != std::string::npos);
}

TEST_CASE("zfs::Capabilities json", "[zfs]") {
  Capabilities c = parse_capabilities(testdata::read("openzfs-2.3/probe.out"));
  const nlohmann::json j = c;
  CHECK(j.at("implementation") == "openzfs 2.3.2");
  CHECK(j.at("multi_snapshot") == true);
  const Capabilities back = j.get<Capabilities>();
  CHECK(back.implementation == c.implementation);
  CHECK(back.raw_send == c.raw_send);
  CHECK(back.multi_snapshot == c.multi_snapshot);
  CHECK(back.has_mbuffer == c.has_mbuffer);
  c.node = "/usr/node/bin/node";
  CHECK(nlohmann::json(c).get<Capabilities>().node == "/usr/node/bin/node");
  const Capabilities old = nlohmann::json{{"implementation", "zfs-fuse"}}.get<Capabilities>();
  CHECK(old.implementation == "zfs-fuse");
  CHECK_FALSE(old.holds);
}

TEST_CASE("zfs::stream_capabilities", "[zfs]") {
  const Capabilities openzfs = parse_capabilities(testdata::read("openzfs-2.3/probe.out"));
  const Capabilities fuse = parse_capabilities(testdata::read("zfs-fuse/probe.out"));
  const Capabilities illumos = parse_capabilities(testdata::read("illumos/probe.out"));
  const Capabilities to_fuse = stream_capabilities(openzfs, fuse);
  CHECK_FALSE(to_fuse.compressed_send);
  CHECK_FALSE(to_fuse.large_blocks);
  CHECK_FALSE(to_fuse.embedded_data);
  CHECK_FALSE(to_fuse.raw_send);
  CHECK(to_fuse.dry_run_parsable); // the sender's own abilities stay
  CHECK(to_fuse.resume_tokens);
  const Capabilities to_illumos = stream_capabilities(openzfs, illumos);
  CHECK(to_illumos.compressed_send);
  CHECK_FALSE(to_illumos.raw_send);
  CHECK(stream_capabilities(openzfs, openzfs).raw_send);
}
