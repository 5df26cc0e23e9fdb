// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/util/error.hpp>
#include <zmigrate/zfs/capabilities.hpp>

#include <map>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace zmigrate::zfs {

namespace {

// The probe script. A fixed constant: nothing is ever interpolated into it. Each section is
// cut short with head so an unexpected full usage text cannot flood the session. Exit
// statuses are printed where success itself is the answer.
constexpr std::string_view k_probe_script = R"PROBE(
echo '@@zmigrate-probe 1'
echo '@@uname'
uname -sr 2>&1
echo '@@zfs-version'
zfs version 2>&1 | head -n 3
echo '@@zpool-upgrade-v'
zpool upgrade -v 2>&1 | grep -v '^ ' | head -n 100
echo '@@zfs-send-usage'
zfs send 2>&1 | head -n 12
echo '@@zfs-recv-usage'
zfs receive 2>&1 | head -n 12
echo '@@zfs-snapshot-usage'
zfs snapshot 2>&1 | head -n 4
echo '@@zfs-hold-usage'
zfs hold 2>&1 | head -n 4
echo '@@zfs-bookmark-usage'
zfs bookmark 2>&1 | head -n 3
echo '@@zfs-get-written'
zfs get -H -o value written "$(zpool list -H -o name 2>/dev/null | head -n 1)" >/dev/null 2>&1
echo "exit $?"
echo '@@zfs-list-p'
zfs list -Hp -o name -d 0 >/dev/null 2>&1
echo "exit $?"
echo '@@tools'
for t in pv mbuffer zfs-fuse node; do command -v "$t" 2>/dev/null; done
if [ -x /usr/node/bin/node ]; then echo /usr/node/bin/node; fi
echo '@@end'
)PROBE";

using Sections = std::map<std::string, std::vector<std::string>>;

std::vector<std::string> split_lines(std::string_view text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t nl = text.find('\n', start);
    if (nl == std::string_view::npos) {
      nl = text.size();
    }
    std::string line(text.substr(start, nl - start));
    if (!line.empty() && line.back() == '\r') {
      line.pop_back();
    }
    lines.push_back(std::move(line));
    start = nl + 1;
  }
  return lines;
}

Sections split_sections(std::string_view output) {
  Sections sections;
  std::string current;
  for (std::string& line : split_lines(output)) {
    if (line.starts_with("@@")) {
      current = line.substr(2);
      sections[current]; // present even when empty
      continue;
    }
    if (!current.empty()) {
      sections[current].push_back(std::move(line));
    }
  }
  return sections;
}

std::string trim(std::string_view s) {
  const std::size_t b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) {
    return {};
  }
  const std::size_t e = s.find_last_not_of(" \t");
  return std::string(s.substr(b, e - b + 1));
}

// Option letters a usage text mentions: "[-DLPbc]" gives D L P b c, "-t <token>" gives t,
// "[-i|-I snapshot]" gives i and I. Long options ("--redact") are not letters and are skipped.
std::set<char> usage_flags(const std::vector<std::string>& lines) {
  std::set<char> flags;
  for (const std::string& line : lines) {
    for (std::size_t i = 0; i + 1 < line.size(); ++i) {
      if (line[i] != '-') {
        continue;
      }
      const bool starts_option = i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t' ||
                                 line[i - 1] == '[' || line[i - 1] == '|';
      if (!starts_option) {
        continue;
      }
      std::size_t j = i + 1;
      while (j < line.size() &&
             ((line[j] >= 'a' && line[j] <= 'z') || (line[j] >= 'A' && line[j] <= 'Z'))) {
        flags.insert(line[j]);
        ++j;
      }
      i = j - 1;
    }
  }
  return flags;
}

// Usage lines of one subcommand (those starting with "\t<name> " and their continuations),
// so "For the property list" and error lines never count.
std::vector<std::string> usage_lines(const std::vector<std::string>& section,
                                     std::string_view name) {
  std::vector<std::string> lines;
  bool in_usage = false;
  for (const std::string& line : section) {
    const std::string t = trim(line);
    if (t.starts_with(std::string(name) + " ") || t == name) {
      in_usage = true;
      lines.push_back(t);
    } else if (in_usage && !t.empty() &&
               (line.starts_with("\t ") || line.starts_with("\t\t") ||
                line.starts_with("        "))) {
      lines.push_back(t); // continuation line ("\t    [-d | -e] <filesystem>")
    } else {
      in_usage = false;
    }
  }
  return lines;
}

bool has(const std::set<char>& flags, char c) {
  return flags.count(c) != 0;
}

bool section_says(const Sections& s, const std::string& name, std::string_view text) {
  auto it = s.find(name);
  if (it == s.end()) {
    return false;
  }
  for (const std::string& line : it->second) {
    if (line.find(text) != std::string::npos) {
      return true;
    }
  }
  return false;
}

const std::vector<std::string>& section(const Sections& s, const std::string& name) {
  static const std::vector<std::string> k_empty;
  auto it = s.find(name);
  return it == s.end() ? k_empty : it->second;
}

std::string basename(std::string_view path) {
  const std::size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

} // namespace

void to_json(nlohmann::json& j, const Capabilities& c) {
  j = nlohmann::json{
      {"implementation", c.implementation},
      {"version", c.version},
      {"dry_run_parsable", c.dry_run_parsable},
      {"resume_tokens", c.resume_tokens},
      {"compressed_send", c.compressed_send},
      {"large_blocks", c.large_blocks},
      {"embedded_data", c.embedded_data},
      {"raw_send", c.raw_send},
      {"holds", c.holds},
      {"bookmarks", c.bookmarks},
      {"written_property", c.written_property},
      {"recv_exclude_props", c.recv_exclude_props},
      {"recv_set_props", c.recv_set_props},
      {"list_parsable", c.list_parsable},
      {"multi_snapshot", c.multi_snapshot},
      {"zvols", c.zvols},
      {"has_pv", c.has_pv},
      {"has_mbuffer", c.has_mbuffer},
      {"node", c.node},
  };
}

void from_json(const nlohmann::json& j, Capabilities& c) {
  c = Capabilities{};
  c.implementation = j.value("implementation", std::string());
  c.version = j.value("version", std::string());
  c.dry_run_parsable = j.value("dry_run_parsable", false);
  c.resume_tokens = j.value("resume_tokens", false);
  c.compressed_send = j.value("compressed_send", false);
  c.large_blocks = j.value("large_blocks", false);
  c.embedded_data = j.value("embedded_data", false);
  c.raw_send = j.value("raw_send", false);
  c.holds = j.value("holds", false);
  c.bookmarks = j.value("bookmarks", false);
  c.written_property = j.value("written_property", false);
  c.recv_exclude_props = j.value("recv_exclude_props", false);
  c.recv_set_props = j.value("recv_set_props", false);
  c.list_parsable = j.value("list_parsable", false);
  c.multi_snapshot = j.value("multi_snapshot", false);
  c.zvols = j.value("zvols", false);
  c.has_pv = j.value("has_pv", false);
  c.has_mbuffer = j.value("has_mbuffer", false);
  c.node = j.value("node", std::string());
}

Capabilities stream_capabilities(const Capabilities& sender, const Capabilities& receiver) {
  Capabilities c = sender;
  c.compressed_send = sender.compressed_send && receiver.compressed_send;
  c.large_blocks = sender.large_blocks && receiver.large_blocks;
  c.embedded_data = sender.embedded_data && receiver.embedded_data;
  c.raw_send = sender.raw_send && receiver.raw_send;
  return c;
}

std::string_view probe_script() {
  return k_probe_script;
}

remote::Command probe_command() {
  return remote::Command(remote::Argv{"sh", "-c", std::string(k_probe_script)});
}

Capabilities parse_capabilities(std::string_view output) {
  const Sections s = split_sections(output);
  if (s.find("zmigrate-probe 1") == s.end()) {
    throw Error(ExitCode::zfs, "capability probe",
                "the output is not from zmigrate's probe script (a forced command or a login "
                "banner answered?); check that the operator key has a normal root shell");
  }

  Capabilities c;

  // Which implementation: `zfs version` exists only in OpenZFS ≥ 0.8; illumos says SunOS.
  const std::vector<std::string>& uname = section(s, "uname");
  const std::string uname_line = uname.empty() ? std::string() : trim(uname.front());
  bool has_zfs_fuse = false;
  for (const std::string& line : section(s, "tools")) {
    const std::string tool = basename(trim(line));
    c.has_pv = c.has_pv || tool == "pv";
    c.has_mbuffer = c.has_mbuffer || tool == "mbuffer";
    has_zfs_fuse = has_zfs_fuse || tool == "zfs-fuse";
    // SmartOS's own node (vmadm runs on it) wins over one found on PATH.
    if (tool == "node" && trim(line).front() == '/' &&
        (c.node.empty() || trim(line) == "/usr/node/bin/node")) {
      c.node = trim(line);
    }
  }
  for (const std::string& line : section(s, "zfs-version")) {
    const std::string t = trim(line);
    if (t.starts_with("zfs-") && !t.starts_with("zfs-kmod-")) {
      const std::string rest = t.substr(4);
      c.version = rest.substr(0, rest.find('-'));
      c.implementation = "openzfs " + c.version;
      break;
    }
  }
  if (c.implementation.empty()) {
    if (uname_line.starts_with("SunOS")) {
      c.implementation = "illumos";
      const std::size_t space = uname_line.find(' ');
      c.version = space == std::string::npos ? std::string() : trim(uname_line.substr(space + 1));
    } else if (has_zfs_fuse) {
      c.implementation = "zfs-fuse";
    } else {
      c.implementation = "unknown";
    }
  }

  const std::set<char> send = usage_flags(usage_lines(section(s, "zfs-send-usage"), "send"));
  const std::set<char> recv = usage_flags(usage_lines(section(s, "zfs-recv-usage"), "receive"));

  c.dry_run_parsable = has(send, 'n') && has(send, 'P');
  c.resume_tokens = has(send, 't') && has(recv, 's') && has(recv, 'A');
  c.compressed_send = has(send, 'c');
  c.large_blocks = has(send, 'L');
  c.embedded_data = has(send, 'e');
  c.raw_send = has(send, 'w');
  c.recv_exclude_props = has(recv, 'x');
  c.recv_set_props = has(recv, 'o');

  c.holds = !usage_lines(section(s, "zfs-hold-usage"), "hold").empty();
  c.bookmarks = !usage_lines(section(s, "zfs-bookmark-usage"), "bookmark").empty();
  for (const std::string& line : usage_lines(section(s, "zfs-snapshot-usage"), "snapshot")) {
    if (line.ends_with("...")) {
      c.multi_snapshot = true;
    }
  }
  c.written_property = section_says(s, "zfs-get-written", "exit 0");
  c.list_parsable = section_says(s, "zfs-list-p", "exit 0");
  // zfs-fuse cannot create volumes (`zfs create -V` aborts); every kernel ZFS can.
  c.zvols = c.implementation != "zfs-fuse";
  return c;
}

} // namespace zmigrate::zfs
