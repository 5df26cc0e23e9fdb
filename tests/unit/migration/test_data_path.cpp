// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/data_path.hpp>
#include <zmigrate/remote/command.hpp>
#include <zmigrate/util/error.hpp>

#include <catch2/catch.hpp>

using namespace zmigrate;
using namespace zmigrate::migration;

namespace {
DataPathSpec spec() {
  DataPathSpec s;
  s.migration_id = "d1d10108-d763-4bb7-8772-9f02ed9600c8";
  s.source_addr = "10.99.0.11";
  s.target_addr = "10.99.0.12";
  s.target_host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey root@cn2";
  s.datasets = {"zones/u1", "zones/u1/data", "zones/u1-disk0"};
  return s;
}
} // namespace

TEST_CASE("migration::recv_script", "[migration]") {
  const std::string script = recv_script(spec());
  CHECK(script.find("'recv zones/u1') ds='zones/u1' ;;") != std::string::npos);
  CHECK(script.find("'recv zones/u1-disk0') ds='zones/u1-disk0' ;;") != std::string::npos);
  CHECK(script.find("*) echo") != std::string::npos);
  CHECK(script.find("/usr/sbin/zfs recv -u \"$ds\"") != std::string::npos);
  SECTION("resumable receives and the stall watchdog when the target has them") {
    DataPathSpec s = spec();
    s.resumable = true;
    s.watchdog = true;
    const std::string t = recv_script(s);
    CHECK(t.find("recv -u -s") != std::string::npos);
    CHECK(t.find("mbuffer -q -s 128k -m 16M -W 60 | ") != std::string::npos);
  }
  SECTION("hostile dataset names never reach the script") {
    DataPathSpec s = spec();
    s.datasets = {"zones/x') ds=/; rm -rf /;; ('"};
    CHECK_THROWS_AS(recv_script(s), UsageError);
  }
}

TEST_CASE("migration::authorized_keys_line", "[migration]") {
  const std::string line =
      authorized_keys_line(spec(), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEphemeral");
  CHECK(line.rfind("from=\"10.99.0.11\",no-pty,no-port-forwarding,no-agent-forwarding,"
                   "no-X11-forwarding,no-user-rc,command=\"/bin/sh /var/run/zmigrate/"
                   "d1d10108-d763-4bb7-8772-9f02ed9600c8/recv\" ssh-ed25519 ",
                   0) == 0);
  CHECK(line.find(key_marker(spec().migration_id)) != std::string::npos);
  CHECK(line.back() == '\n');
  DataPathSpec bad = spec();
  bad.source_addr = "10.0.0.1\",command=\"/bin/sh";
  CHECK_THROWS_AS(authorized_keys_line(bad, "ssh-ed25519 AAAA"), UsageError);
  CHECK_THROWS(authorized_keys_line(spec(), "ssh-ed25519 AAAA\"; evil"));
}

TEST_CASE("migration::send_pipeline", "[migration]") {
  const remote::Command cmd =
      send_pipeline(spec(), {"zfs", "send", "-p", "zones/u1@s1"}, "zones/u1", true);
  REQUIRE(cmd.pipeline.size() == 3);
  CHECK(cmd.pipeline[1] == remote::Argv{"pv", "-n", "-b", "-i", "1"});
  const remote::Argv& ssh = cmd.pipeline[2];
  CHECK(ssh.front() == "ssh");
  CHECK(std::find(ssh.begin(), ssh.end(), "StrictHostKeyChecking=yes") != ssh.end());
  CHECK(std::find(ssh.begin(), ssh.end(), "Compression=no") != ssh.end());
  CHECK(std::find(ssh.begin(), ssh.end(), "ControlMaster=no") != ssh.end());
  CHECK(ssh[ssh.size() - 2] == "recv");
  CHECK(ssh.back() == "zones/u1");
  const std::string text = remote::render(cmd);
  CHECK(text.find(" | pv -n -b -i 1 | ssh ") != std::string::npos);
}

TEST_CASE("migration::parse_pv_line", "[migration]") {
  CHECK(parse_pv_line("1048576") == std::optional<std::uint64_t>(1048576));
  CHECK(parse_pv_line(" 42 \r") == std::optional<std::uint64_t>(42));
  CHECK_FALSE(parse_pv_line("cannot receive: failed to read from stream"));
  CHECK_FALSE(parse_pv_line(""));
  CHECK_FALSE(parse_pv_line("12abc"));
}
