// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/migration/data_path.hpp>
#include <zmigrate/migration/node.hpp>
#include <zmigrate/remote/keygen.hpp>
#include <zmigrate/util/error.hpp>
#include <zmigrate/zfs/names.hpp>

#include <algorithm>
#include <charconv>
#include <ctime>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>

#include <fmt/format.h>

namespace zmigrate::migration {

namespace {

// What the forced command writes on stderr after each receive, before the dataset's name.
constexpr std::string_view k_received_prefix = "zmigrate-received ";

// Constant scripts run as `sh -c SCRIPT sh ARG...`: values arrive as positional parameters and
// are never spliced into shell text.
constexpr const char* k_write_file_script =
    "umask 077; mkdir -p \"$1\" && chmod 700 \"$1\" && cat > \"$1/$2.tmp\" && "
    "chmod \"$3\" \"$1/$2.tmp\" && mv -f \"$1/$2.tmp\" \"$1/$2\"";
// Source side of open(): the private key (stdin) into $1/id_ed25519, the pinned host key line
// ($2) into $1/known_hosts, then the multiplexing master (the remaining arguments), whose stdio
// goes to /dev/null so it never holds our channel open. Exit 3: master did not start.
constexpr const char* k_install_source_script =
    "umask 077; mkdir -p \"$1\" && chmod 700 \"$1\" && cat > \"$1/id_ed25519.tmp\" && "
    "chmod 600 \"$1/id_ed25519.tmp\" && mv -f \"$1/id_ed25519.tmp\" \"$1/id_ed25519\" && "
    "printf '%s\\n' \"$2\" > \"$1/known_hosts\" && chmod 600 \"$1/known_hosts\" || exit 1; "
    "shift 2; \"$@\" < /dev/null > /dev/null 2>&1 || exit 3";
// Shared by the scripts that edit authorized_keys: byte-wise comparisons (LC_ALL=C), the node
// lock (mkdir is atomic on every POSIX filesystem; the holder's pid is inside, a waiter breaks
// the lock only when that pid is gone, under a second mkdir lock so two breakers never remove a
// fresh lock; gives up after ~30 s), and a read-only scan of a file for the exact line
// $zm_line (zm_n: how many times; zm_nl: 0 when the file does not end with a newline). Only
// shell builtins read the file: illumos' /usr/bin/grep and awk lack the POSIX options.
constexpr const char* k_common_sh = R"sh(LC_ALL=C; export LC_ALL; umask 077
zm_nap() {
  if sleep 0.1 2>/dev/null; then zm_i=$((zm_i + 1)); else sleep 1; zm_i=$((zm_i + 10)); fi
}
zm_lock() {
  zm_i=0; zm_gone=0
  mkdir -p "${1%/*}" || return 1
  while ! mkdir "$1" 2>/dev/null; do
    if [ ! -d "$1" ]; then
      # Released between the mkdir and this look (its holder just ended): try again at once;
      # only a mkdir that keeps failing with no lock there cannot create it.
      zm_gone=$((zm_gone + 1))
      if [ "$zm_gone" -ge 20 ]; then
        echo "zmigrate: cannot create the lock $1" >&2
        return 1
      fi
      continue
    fi
    zm_gone=0
    zm_p=$(cat "$1/pid" 2>/dev/null)
    if [ -n "$zm_p" ] && ! kill -0 "$zm_p" 2>/dev/null && mkdir "$1.break" 2>/dev/null; then
      [ "$(cat "$1/pid" 2>/dev/null)" = "$zm_p" ] && rm -rf "$1"
      rmdir "$1.break"
      continue
    fi
    if [ "$zm_i" -ge 300 ]; then
      echo "zmigrate: the lock $1 is held by process ${zm_p:-unknown} for 30 s; if no zmigrate command runs on this node, remove $1" >&2
      return 1
    fi
    zm_nap
  done
  zm_lockdir=$1
  trap 'rm -rf "$zm_lockdir"' 0
  trap 'exit 1' 1 2 13 15
  echo $$ > "$1/pid" || return 1
}
zm_scan() {
  zm_n=0; zm_nl=1
  while IFS= read -r zm_x; do
    if [ "$zm_x" = "$zm_line" ]; then zm_n=$((zm_n + 1)); fi
  done
  if [ -n "$zm_x" ]; then
    zm_nl=0
    if [ "$zm_x" = "$zm_line" ]; then zm_n=$((zm_n + 1)); fi
  fi
  return 0
}
)sh";
// Ends the processes of data path dir $1 (see scripts::kill()). The patterns are anchored at the
// start of the argv: the forced-command shell is `<shell> $1/recv`, the clients `ssh -i $1/id_...`;
// a command line that merely mentions them (this script's own, whose arguments may hold the key
// line, and the session shell that runs it) never matches. illumos pgrep -f sees only the first
// 80 bytes of an argv: both patterns end within them.
constexpr const char* k_kill_sh = R"sh(zm_kill() {
  zm_ps=$(pgrep -f "^[^ ]+ $1/recv" 2>/dev/null; pgrep -f "^ssh -i $1/id_" 2>/dev/null)
  zm_all=
  for zm_q in $zm_ps; do
    if [ "$zm_q" != $$ ]; then zm_all="$zm_all $zm_q $(pgrep -P "$zm_q" 2>/dev/null)"; fi
  done
  if [ -n "$zm_all" ]; then kill $zm_all 2>/dev/null; fi
  return 0
}
)sh";
// Target side of open() (see scripts::install_target()).
constexpr const char* k_install_target_sh =
    R"sh(mkdir -p "$1" && chmod 700 "$1" && printf '%s' "$4" > "$1/recv.tmp" && chmod 700 "$1/recv.tmp" && mv -f "$1/recv.tmp" "$1/recv" || exit 1
f=$2; zm_line=$5
zm_d=$(dirname "$f") || exit 1
if [ ! -d "$zm_d" ]; then mkdir -p "$zm_d" && chmod 700 "$zm_d" || exit 1; fi
zm_lock "$3" || exit 1
if [ -s "$f" ]; then
  zm_scan < "$f" || { echo "zmigrate: cannot read $f" >&2; exit 1; }
  if [ "$zm_n" -gt 0 ]; then exit 0; fi
  if [ "$zm_nl" = 0 ]; then
    printf '\n' >> "$f" || { echo "zmigrate: cannot append to $f" >&2; exit 1; }
    echo added_newline
  fi
fi
printf '%s\n' "$zm_line" >> "$f" || { echo "zmigrate: cannot append to $f" >&2; exit 1; }
)sh";
// Cleanup on one node (see scripts::cleanup()). A regular file is rewritten through a copy in
// its own directory (cp -p keeps mode and owner) and renamed over it; a symlink keeps being a
// symlink: its target is rewritten through the path, from a checked copy, with a backup.
constexpr const char* k_cleanup_sh = R"sh(if [ -n "$1" ]; then
  zm_kill "$1"
  ssh -o ControlPath="$1/master" -O exit x < /dev/null > /dev/null 2>&1
  rm -rf "$1" || exit 1
fi
if [ -n "$6" ]; then rm -rf "$6"; fi
f=$2; zm_line=$4
if [ -z "$f" ] || [ -z "$zm_line" ] || [ ! -e "$f" ]; then exit 0; fi
zm_tmp=
zm_fail() {
  if [ -n "$zm_tmp" ]; then rm -f "$zm_tmp"; fi
  echo "zmigrate: $f: $1; left it untouched" >&2
  exit 3
}
zm_filter() {
  zm_n=0; zm_rb=0; zm_owe=0; zm_last=0
  while IFS= read -r zm_x; do
    if [ "$zm_x" = "$zm_line" ]; then
      zm_n=$((zm_n + 1)); zm_rb=$((zm_rb + ${#zm_x} + 1)); zm_last=1
      continue
    fi
    if [ "$zm_owe" = 1 ]; then printf '\n' || return 1; fi
    printf '%s' "$zm_x" || return 1
    zm_owe=1; zm_last=0
  done
  if [ -n "$zm_x" ]; then
    if [ "$zm_x" = "$zm_line" ]; then
      zm_n=$((zm_n + 1)); zm_rb=$((zm_rb + ${#zm_x})); zm_last=1
    else
      if [ "$zm_owe" = 1 ]; then printf '\n' || return 1; fi
      printf '%s' "$zm_x" || return 1
      zm_owe=0; zm_last=0
    fi
  fi
  if [ "$zm_owe" = 1 ]; then
    if [ "$5" = 1 ] && [ "$zm_last" = 1 ]; then zm_rb=$((zm_rb + 1)); else printf '\n' || return 1; fi
  fi
  return 0
}
zm_lock "$3" || exit 3
zm_scan < "$f" || zm_fail "cannot read it"
if [ "$zm_n" = 0 ]; then exit 0; fi
if [ "$zm_n" != 1 ]; then zm_fail "the data-path key line is there $zm_n times, not once"; fi
zm_size=$(wc -c < "$f") || zm_fail "cannot measure it"
if [ -h "$f" ]; then
  zm_tmp="$3/filtered"
  zm_filter "$@" < "$f" > "$zm_tmp" || zm_fail "cannot write the filtered copy $zm_tmp"
else
  zm_tmp="$(dirname "$f")/.zmigrate-keys.$$"
  cp -p "$f" "$zm_tmp" || zm_fail "cannot copy it to $zm_tmp"
  zm_filter "$@" < "$f" > "$zm_tmp" || zm_fail "cannot write the filtered copy $zm_tmp"
fi
zm_got=$(wc -c < "$zm_tmp") || zm_fail "cannot measure the filtered copy"
if [ "$zm_n" != 1 ] || [ $((zm_got)) != $((zm_size - zm_rb)) ]; then
  zm_fail "the filtered copy has $((zm_got)) bytes, not $((zm_size - zm_rb)) (a write failed?)"
fi
if [ -h "$f" ]; then
  cat "$f" > "$3/orig" && [ $(($(wc -c < "$3/orig"))) = $((zm_size)) ] || zm_fail "cannot back it up"
  if ! cat "$zm_tmp" > "$f" || [ $(($(wc -c < "$f"))) != $((zm_got)) ]; then
    cat "$3/orig" > "$f"
    echo "zmigrate: $f: rewriting it through its symlink failed; restored it from $3/orig" >&2
    exit 3
  fi
else
  mv -f "$zm_tmp" "$f" || zm_fail "cannot move $zm_tmp over it"
fi
exit 0
)sh";

void check_token(const std::string& what, const std::string& value) {
  for (char c : value) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-' || c == ':' || c == '_';
    if (!ok) {
      throw UsageError(fmt::format("{} '{}'", what, value),
                       "holds characters not allowed in an address or id");
    }
  }
  if (value.empty()) {
    throw UsageError(what, "is empty");
  }
}

std::string ssh_key_body(const std::string& line) {
  // "ssh-ed25519 AAAA... comment" -> "ssh-ed25519 AAAA..." (validated base64 body).
  const auto sp = line.find(' ');
  if (sp == std::string::npos) {
    throw Error(ExitCode::remote, "host key", fmt::format("'{}' is not an ssh public key", line));
  }
  const std::string type = line.substr(0, sp);
  std::string rest = line.substr(sp + 1);
  const auto sp2 = rest.find(' ');
  if (sp2 != std::string::npos) {
    rest.resize(sp2);
  }
  while (!rest.empty() && (rest.back() == '\n' || rest.back() == '\r')) {
    rest.pop_back();
  }
  for (char c : rest) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '+' || c == '/' || c == '=';
    if (!ok) {
      throw Error(ExitCode::remote, "host key", "key body is not base64");
    }
  }
  check_token("key type", type);
  return type + " " + rest;
}

// Path ids of the data paths open in this process: remove_leftovers() leaves their rows to
// their own close().
std::mutex g_open_mutex;
std::set<std::string> g_open_paths;

bool path_is_open(const std::string& path_id) {
  const std::lock_guard<std::mutex> lock(g_open_mutex);
  return g_open_paths.count(path_id) != 0;
}

void set_path_open(const std::string& path_id, bool open) {
  const std::lock_guard<std::mutex> lock(g_open_mutex);
  if (open) {
    g_open_paths.insert(path_id);
  } else {
    g_open_paths.erase(path_id);
  }
}

std::string json_text(const nlohmann::json& j, const char* key) {
  if (j.is_object() && j.contains(key) && j[key].is_string()) {
    return j[key].get<std::string>();
  }
  return {};
}

// The last non-empty line of `text` (a script's reason on stderr).
std::string last_line(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) {
    text.pop_back();
  }
  const auto nl = text.rfind('\n');
  return nl == std::string::npos ? text : text.substr(nl + 1);
}

// The live data-path rows of one node, grouped by path: one cleanup command per path.
struct PathRows {
  std::string dir;       // path dir to remove ("" = none)
  std::string keys_file; // authorized_keys file ("" = no key row)
  std::string line;      // the exact line installed there
  bool joined = false;   // install added a newline before it (the file had no final newline)
  std::vector<std::int64_t> dir_rows;
  std::vector<std::int64_t> key_rows;
};

// The rows grouped by path, newest path first: when each left a line (a node that refused
// every cleanup), the line of the oldest is the last one to go, with the newline its install
// added before it.
std::vector<PathRows> paths_of(const std::vector<state::Artefact>& rows) {
  std::map<std::string, PathRows> paths;
  for (const state::Artefact& a : rows) {
    std::string pid = json_text(a.details, "path_id");
    if (a.kind == "data_path_dir") {
      PathRows& p = paths[pid.empty() ? "dir:" + a.name : pid];
      p.dir = a.name;
      p.dir_rows.push_back(a.id);
    } else if (a.kind == "authorized_key") {
      PathRows& p = paths[pid.empty() ? "key:" + a.name : pid];
      const std::string file = json_text(a.details, "file");
      p.keys_file = file.empty() ? a.name : file;
      p.line = json_text(a.details, "line");
      p.joined = a.details.is_object() && a.details.value("added_newline", false);
      p.key_rows.push_back(a.id);
    }
  }
  std::vector<PathRows> order;
  for (auto& entry : paths) {
    order.push_back(std::move(entry.second));
  }
  auto newest = [](const PathRows& p) {
    std::int64_t id = 0;
    for (std::int64_t row : p.dir_rows) {
      id = std::max(id, row);
    }
    for (std::int64_t row : p.key_rows) {
      id = std::max(id, row);
    }
    return id;
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](const PathRows& a, const PathRows& b) { return newest(a) > newest(b); });
  return order;
}

// One path's cleanup command; marks what it removed. Never throws for a failing or unreachable
// node: warns and leaves the rows live.
// What the cleanup of one path on one node did: its remote part runs without the store, the
// reporter or the log, so both nodes' parts can run at once; apply_cleaned() records it.
struct Cleaned {
  PathRows path;
  bool do_key = false;
  bool ran = false;
  remote::Result result;
  std::string unreachable; // the error when the node could not be asked
};

std::vector<Cleaned> clean_remote(remote::Runner& runner, const std::vector<PathRows>& paths,
                                  const std::string& migration_dir) {
  std::vector<Cleaned> out;
  for (const PathRows& p : paths) {
    Cleaned c;
    c.path = p;
    c.do_key = !p.key_rows.empty() && !p.line.empty();
    if (!p.dir_rows.empty() || c.do_key) {
      try {
        remote::RunOptions opts;
        opts.timeout = std::chrono::seconds(90); // the lock alone may take 30 s
        remote::Command cmd({"sh", "-c", scripts::cleanup(), "sh", p.dir,
                             c.do_key ? p.keys_file : std::string(), k_keys_lock_dir,
                             c.do_key ? p.line : std::string(), p.joined ? "1" : "0",
                             migration_dir});
        cmd.redact_token(0, 7); // the public key: not secret, but kept out of logs as before
        c.result = runner.run(cmd, opts);
        c.ran = true;
      } catch (const Error& e) {
        c.unreachable = e.what();
      }
    }
    out.push_back(std::move(c));
  }
  return out;
}

void apply_cleaned(Context& ctx, const remote::Runner& runner, const std::vector<Cleaned>& done) {
  for (const Cleaned& c : done) {
    const PathRows& p = c.path;
    if (!p.key_rows.empty() && p.line.empty()) {
      // Rows of a zmigrate older than the exact-line ledger: only the marker is known, and a
      // marker match could take an operator's line with it. Leave it to the operator.
      ctx.log.warn("data path: the ledger does not hold the exact authorized_keys line of this "
                   "key; remove the line ending in the migration's zmigrate-ephemeral- marker "
                   "by hand, then run the command again",
                   {{"host", runner.host()}, {"file", p.keys_file}});
    }
    if (!c.unreachable.empty()) {
      ctx.log.warn("data path: node unreachable during cleanup; will retry next command",
                   {{"host", runner.host()}, {"error", c.unreachable}});
      continue;
    }
    if (!c.ran) {
      continue;
    }
    const remote::Result& r = c.result;
    if (r.ok() || r.exit_status == 3) {
      for (std::int64_t row : p.dir_rows) {
        ctx.store.mark_artefact_removed(row);
      }
    }
    if (r.ok() && c.do_key) {
      for (std::int64_t row : p.key_rows) {
        ctx.store.mark_artefact_removed(row);
      }
    }
    if (r.exit_status == 3 && c.do_key) {
      ctx.reporter.note(fmt::format(
          "{}: the ephemeral key line was NOT removed from {} (the file is left untouched: "
          "{}); the key only runs this migration's receiver from its source and expires "
          "within 48 hours; the next command of this migration retries",
          runner.host(), p.keys_file, last_line(r.err)));
    }
    if (!r.ok()) {
      ctx.log.warn(r.exit_status == 3
                       ? "data path: the ephemeral key line was NOT removed from authorized_keys "
                         "(the file is left untouched); the ledger keeps it for the next command"
                       : "data path: could not remove artefacts; the ledger keeps them for the "
                         "next command",
                   {{"host", runner.host()},
                    {"file", p.keys_file},
                    {"exit_status", r.exit_status},
                    {"err", r.err}});
    }
  }
}

// Runs the cleanup of each path of each node's rows, marking what it removed: the two nodes'
// commands at once (each runner has its own session), then the ledger, here. Never throws for
// a failing or unreachable node: warns and leaves the rows live.
// `migration_dir` (when not empty) goes as well: the migration's own dir (zone config files).
void clean_nodes(Context& ctx,
                 const std::vector<std::pair<remote::Runner*, std::vector<state::Artefact>>>& jobs,
                 const std::string& migration_dir = "") {
  std::vector<std::vector<PathRows>> paths;
  for (const auto& job : jobs) {
    paths.push_back(paths_of(job.second));
  }
  std::vector<std::vector<Cleaned>> done(jobs.size());
  const bool at_once =
      jobs.size() == 2 && jobs[0].first != jobs[1].first && !paths[0].empty() && !paths[1].empty();
  if (at_once) {
    auto second = std::async(std::launch::async,
                             [&] { return clean_remote(*jobs[1].first, paths[1], migration_dir); });
    try {
      done[0] = clean_remote(*jobs[0].first, paths[0], migration_dir);
    } catch (...) {
      second.wait();
      throw;
    }
    done[1] = second.get();
  } else {
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      done[i] = clean_remote(*jobs[i].first, paths[i], migration_dir);
    }
  }
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    apply_cleaned(ctx, *jobs[i].first, done[i]);
  }
}

} // namespace

namespace scripts {
const std::string& install_target() {
  static const std::string s = std::string(k_common_sh) + k_install_target_sh;
  return s;
}
const std::string& cleanup() {
  static const std::string s = std::string(k_common_sh) + k_kill_sh + k_cleanup_sh;
  return s;
}
const std::string& kill() {
  static const std::string s = std::string(k_common_sh) + k_kill_sh + "zm_kill \"$1\"\n";
  return s;
}
} // namespace scripts

std::string private_dir(const std::string& migration_id) {
  check_token("migration id", migration_id);
  return "/var/run/zmigrate/" + migration_id;
}

std::string path_dir(const std::string& path_id) {
  check_token("data path id", path_id);
  return "/var/run/zmigrate/" + path_id;
}

std::string key_marker(const std::string& path_id) {
  check_token("data path id", path_id);
  return "zmigrate-ephemeral-" + path_id;
}

std::string new_path_id(const std::string& migration_id) {
  check_token("migration id", migration_id);
  std::random_device rd;
  return fmt::format("{}-{:08x}", migration_id, static_cast<std::uint32_t>(rd()));
}

std::string path_fingerprint(const DataPathSpec& spec) {
  std::vector<std::string> datasets = spec.datasets;
  std::sort(datasets.begin(), datasets.end());
  const nlohmann::json j = {
      {"source", spec.source_server_uuid}, {"target", spec.target_server_uuid},
      {"source_boot", spec.source_boot},   {"target_boot", spec.target_boot},
      {"source_addr", spec.source_addr},   {"target_addr", spec.target_addr},
      {"port", spec.target_port},          {"user", spec.target_user},
      {"host_key", spec.target_host_key},  {"datasets", datasets},
      {"measure", spec.measure},           {"keys", spec.authorized_keys},
      {"recv", recv_script(spec)}};
  return fmt::format("{:016x}", std::hash<std::string>{}(j.dump()));
}

std::optional<std::string> adoptable_path(const std::vector<state::Artefact>& live,
                                          const DataPathSpec& spec, const std::string& source_host,
                                          const std::string& target_host,
                                          std::chrono::system_clock::time_point now) {
  if (spec.measure || source_host == target_host || spec.source_boot.empty() ||
      spec.target_boot.empty()) {
    return std::nullopt; // a boot unknown: the dirs may be gone with a reboot
  }
  const std::string fp = path_fingerprint(spec);
  struct Seen {
    bool usable = true;
    bool source_dir = false;
    bool target_dir = false;
    bool key = false;
    std::int64_t newest = 0;
  };
  std::map<std::string, Seen> paths;
  for (const state::Artefact& a : live) {
    if (a.migration_id != spec.migration_id ||
        (a.kind != "data_path_dir" && a.kind != "authorized_key")) {
      continue;
    }
    const std::string pid = json_text(a.details, "path_id");
    if (pid.empty()) {
      continue;
    }
    Seen& p = paths[pid];
    p.newest = std::max(p.newest, a.id);
    bool young = false;
    try {
      young = now - parse_iso8601(a.created) < k_park_max_age;
    } catch (const std::exception&) {
      young = false; // unreadable: not adopted, removed as a leftover
    }
    const bool parked = a.details.is_object() && a.details.value("parked", false) &&
                        json_text(a.details, "spec") == fp;
    if (!parked || !young) {
      p.usable = false;
    }
    if (a.kind == "authorized_key") {
      if (a.host != target_host || json_text(a.details, "line").empty()) {
        p.usable = false;
      }
      p.key = true;
    } else if (a.host == source_host && a.name == path_dir(pid)) {
      p.source_dir = true;
    } else if (a.host == target_host && a.name == path_dir(pid)) {
      p.target_dir = true;
    } else {
      p.usable = false;
    }
  }
  std::optional<std::string> best;
  std::int64_t best_row = 0;
  for (const auto& [pid, p] : paths) {
    if (p.usable && p.source_dir && p.target_dir && p.key && p.newest > best_row) {
      best = pid;
      best_row = p.newest;
    }
  }
  return best;
}

std::string recv_script(const DataPathSpec& spec) {
  // The request is `recv DS...`: one receive after the other from the one input (a compound
  // stream: a dataset, then the children it creates), each DS one of this migration's.
  std::string allowed;
  for (const std::string& ds : spec.datasets) {
    const zfs::DatasetName name(ds); // validated: no quotes, spaces or metacharacters
    allowed += fmt::format("{}'{}'", allowed.empty() ? "" : "|", name.str());
  }
  std::string cases;
  if (spec.measure) {
    // Counts and discards: the count goes back on stdout for the sender to compare.
    cases += "'measure') wc -c; rc=$?; exit $rc ;;\n";
  }
  if (!allowed.empty()) {
    cases += "'recv '*) ;;\n";
  }
  const std::string recv_flags = spec.resumable ? "-u -s" : "-u";
  const std::string reader =
      spec.watchdog ? fmt::format("mbuffer -q -s 128k -m 16M -W {} | ", spec.watchdog_s) : "";
  // Split on spaces only, no globbing: every word after `recv` must be one of the names, as is.
  // After each receive, a line on stderr names it (the sender times each stream by it and
  // names the one that failed). The receiver is not the script's last command: a shell that
  // execs its last command (ksh93) would replace the `/bin/sh <dir>/recv` argv by which the
  // kill script finds it.
  return fmt::format(
      "#!/bin/sh\n"
      "# zmigrate {id}: forced command of the ephemeral data-path key.\n"
      "# Receives only into this migration's datasets; anything else is refused.\n"
      "PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
      "zm_refuse() {{ echo \"zmigrate: refused by the forced command of migration {id}\" >&2; "
      "exit 126; }}\n"
      "case \"$SSH_ORIGINAL_COMMAND\" in\n"
      "{cases}"
      "*) zm_refuse ;;\n"
      "esac\n"
      "set -f\n"
      "IFS=' '\n"
      "set -- $SSH_ORIGINAL_COMMAND\n"
      "shift\n"
      "[ $# -gt 0 ] || zm_refuse\n"
      "for ds in \"$@\"; do\n"
      "  case \"$ds\" in\n"
      "  {allowed}) ;;\n"
      "  *) zm_refuse ;;\n"
      "  esac\n"
      "done\n"
      "{reader}{{ for ds in \"$@\"; do {zfs} recv {flags} \"$ds\" || exit; "
      "echo \"{received}$ds\" >&2; done; }}\n"
      "rc=$?\n"
      "exit $rc\n",
      fmt::arg("id", spec.migration_id), fmt::arg("cases", cases),
      fmt::arg("allowed", allowed.empty() ? std::string("''") : allowed),
      fmt::arg("reader", reader), fmt::arg("zfs", spec.zfs_path), fmt::arg("flags", recv_flags),
      fmt::arg("received", k_received_prefix));
}

std::string authorized_keys_line(const DataPathSpec& spec, const std::string& public_key,
                                 std::chrono::system_clock::time_point now) {
  check_token("source address", spec.source_addr);
  const std::time_t t = std::chrono::system_clock::to_time_t(now + std::chrono::hours(48));
  std::tm tm{};
  gmtime_r(&t, &tm);
  const std::string expiry = fmt::format("{:04}{:02}{:02}{:02}{:02}", tm.tm_year + 1900,
                                         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min);
  // Run by /bin/sh, not executed: /run (and /var/run) is mounted noexec on systemd nodes.
  return fmt::format("restrict,from=\"{}\",command=\"/bin/sh {}/recv\",expiry-time=\"{}\" {} {}",
                     spec.source_addr, path_dir(spec.path_id), expiry, ssh_key_body(public_key),
                     key_marker(spec.path_id));
}

remote::Argv source_ssh_argv(const DataPathSpec& spec, const std::vector<std::string>& request) {
  check_token("target address", spec.target_addr);
  check_token("target user", spec.target_user);
  const std::string dir = path_dir(spec.path_id);
  remote::Argv argv{
      "ssh", "-i", dir + "/id_ed25519", "-F", "/dev/null", "-o", "IdentitiesOnly=yes", "-o",
      "UserKnownHostsFile=" + dir + "/known_hosts", "-o", "GlobalKnownHostsFile=/dev/null", "-o",
      "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "Compression=no", "-o",
      "Ciphers=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr", "-o",
      // Classic X25519 first: the hybrid post-quantum default of OpenSSH 9 costs
      // ~150 ms of CPU per handshake here, for a key that lives minutes. Names
      // known to every OpenSSH since 7.4 (an unknown name is a fatal error).
      "KexAlgorithms=curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256", "-o",
      "GSSAPIAuthentication=no", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o",
      "ConnectTimeout=" + std::to_string(spec.connect_timeout_s), "-o",
      "ControlPath=" + dir + "/master", "-o", "LogLevel=ERROR", "-p",
      std::to_string(spec.target_port), "-l", spec.target_user, spec.target_addr};
  argv.insert(argv.end(), request.begin(), request.end());
  return argv;
}

namespace {
// Options go after `ssh -i <key>`: the key path must stay in the first 80 bytes of the argv.
constexpr std::ptrdiff_t k_ssh_options_at = 3;
// Runs its arguments with SIGHUP and SIGPIPE ignored (kept across exec).
constexpr const char* k_send_wrapper = "trap '' HUP PIPE; exec \"$@\"";
} // namespace

namespace {
constexpr std::string_view k_bytes_prefix = "zmigrate-stream-bytes ";
// pv's counts, each line tagged with $1: pv's output goes on to the next stage (fd 3), its
// stderr through the loop to this stage's stderr.
constexpr const char* k_tagged_pv =
    "exec 3>&1; pv -n -b -i 1 2>&1 >&3 3>&- | while read -r n; do echo \"zmigrate-stream-bytes "
    "$1 $n\"; done 3>&- >&2";
} // namespace

std::optional<std::pair<std::size_t, std::uint64_t>> parse_tagged_count(std::string_view line) {
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) {
    line.remove_suffix(1);
  }
  if (line.substr(0, k_bytes_prefix.size()) != k_bytes_prefix) {
    return std::nullopt;
  }
  line.remove_prefix(k_bytes_prefix.size());
  const std::size_t space = line.find(' ');
  if (space == std::string_view::npos) {
    return std::nullopt;
  }
  const std::optional<std::uint64_t> tag = parse_pv_line(line.substr(0, space));
  const std::optional<std::uint64_t> n = parse_pv_line(line.substr(space + 1));
  if (!tag || !n) {
    return std::nullopt;
  }
  return std::make_pair(static_cast<std::size_t>(*tag), *n);
}

remote::Command send_pipeline(const DataPathSpec& spec, const remote::Argv& zfs_send,
                              const std::string& dataset, bool use_pv,
                              std::optional<std::size_t> tag) {
  const zfs::DatasetName name(dataset);
  // zfs send ignores SIGHUP and SIGPIPE, so it never dies of the session ending (an interrupt
  // closes the channel) and ends only through its output breaking (the data-path ssh killed or
  // gone): zfs-fuse leaves the snapshot of an incremental send "busy" until it restarts when its
  // `zfs send` client is killed mid-stream, and every later prune of it fails.
  remote::Argv send{"sh", "-c", k_send_wrapper, "sh"};
  send.insert(send.end(), zfs_send.begin(), zfs_send.end());
  remote::Command cmd(send);
  if (spec.rate_limit > 0 && !spec.throttle_node.empty()) {
    cmd.pipe({spec.throttle_node, "-e", throttle_script(), std::to_string(spec.rate_limit)});
  } else if (spec.rate_limit > 0) {
    cmd.pipe({"pv", "-n", "-b", "-i", "1", "-L", std::to_string(spec.rate_limit)});
  } else if (use_pv && tag) {
    cmd.pipe({"sh", "-c", k_tagged_pv, "sh", std::to_string(*tag)});
  } else if (use_pv) {
    cmd.pipe({"pv", "-n", "-b", "-i", "1"});
  }
  remote::Argv ssh = source_ssh_argv(spec, {"recv", name.str()});
  // ControlMaster=no: use the master when it is up, connect directly when it is not.
  ssh.insert(ssh.begin() + k_ssh_options_at, {"-o", "ControlMaster=no"});
  cmd.pipe(ssh);
  return cmd;
}

remote::Command compound_pipeline(const DataPathSpec& spec, const std::vector<StreamSend>& sends,
                                  const std::vector<std::size_t>& members, bool use_pv) {
  // The senders one after the other into one input, each with its own count; the producer is
  // that sequence, rendered (every token quoted) as the script of one `sh -c`.
  remote::Command inner;
  remote::Argv request{"recv"};
  for (const std::size_t i : members) {
    const zfs::DatasetName name(sends[i].stream->dataset);
    remote::Argv send{"sh", "-c", k_send_wrapper, "sh"};
    send.insert(send.end(), sends[i].zfs_send.begin(), sends[i].zfs_send.end());
    remote::Command one(send);
    if (use_pv) {
      one.pipe({"sh", "-c", k_tagged_pv, "sh", std::to_string(i)});
    }
    append_sequence(inner, one);
    request.push_back(name.str());
  }
  remote::Command cmd({"sh", "-c", remote::render(inner)});
  remote::Argv ssh = source_ssh_argv(spec, request);
  ssh.insert(ssh.begin() + k_ssh_options_at, {"-o", "ControlMaster=no"});
  cmd.pipe(ssh);
  return cmd;
}

bool pipeline_counts(const DataPathSpec& spec, bool use_pv) {
  return use_pv || spec.rate_limit > 0;
}

const std::string& throttle_script() {
  // A fixed constant (the rate arrives as argv[1]). Each chunk is written, then input pauses
  // until the time at which the bytes so far are due; a write that fills the pipe waits for
  // 'drain'. A broken output ends it with status 1 (node ignores SIGPIPE).
  static const std::string script =
      "const r=Number(process.argv[1]),i=process.stdin,o=process.stdout,e=process.stderr;"
      "if(!(r>0)){e.write(\"zmigrate throttle: bad rate\\n\");process.exit(2);}"
      "let n=0,t0=Date.now();"
      "const tick=setInterval(()=>e.write(n+\"\\n\"),1000);"
      "o.on(\"error\",()=>process.exit(1));"
      "i.on(\"data\",c=>{i.pause();n+=c.length;"
      "const go=()=>{let a=n*1000/r-(Date.now()-t0);"
      "if(a<-100){t0=Date.now()-n*1000/r-100;a=-100;}"
      "setTimeout(()=>i.resume(),Math.max(0,a));};"
      "if(o.write(c))go();else o.once(\"drain\",go);});"
      "i.on(\"end\",()=>{clearInterval(tick);e.write(n+\"\\n\");o.end();});";
  return script;
}

remote::Command measure_pipeline(const DataPathSpec& spec, std::uint64_t mib) {
  remote::Command cmd({"sh", "-c", "exec dd if=/dev/zero bs=1048576 count=\"$1\" 2>/dev/null", "sh",
                       std::to_string(mib)});
  remote::Argv ssh = source_ssh_argv(spec, {"measure"});
  ssh.insert(ssh.begin() + k_ssh_options_at, {"-o", "ControlMaster=no"});
  cmd.pipe(ssh);
  return cmd;
}

std::optional<std::uint64_t> parse_pv_line(std::string_view line) {
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) {
    line.remove_suffix(1);
  }
  while (!line.empty() && line.front() == ' ') {
    line.remove_prefix(1);
  }
  if (line.empty()) {
    return std::nullopt;
  }
  std::uint64_t value = 0;
  const auto [ptr, ec] = std::from_chars(line.data(), line.data() + line.size(), value);
  if (ec != std::errc() || ptr != line.data() + line.size()) {
    return std::nullopt;
  }
  return value;
}

// How long a command that sets up or checks the data path may take: the source's ssh to the
// target must connect within spec.connect_timeout_s, the rest is a few process starts.
std::chrono::seconds setup_timeout(const DataPathSpec& spec) {
  return std::chrono::seconds(std::max(30, 3 * spec.connect_timeout_s));
}

void write_remote_file(remote::Runner& runner, const std::string& dir, const std::string& name,
                       const std::string& content, const std::string& mode) {
  remote::RunOptions opts;
  opts.stdin_data = content;
  opts.timeout = std::chrono::seconds(30);
  remote::run_checked(
      runner, remote::Command({"sh", "-c", k_write_file_script, "sh", dir, name, mode}), opts);
}

DataPath::DataPath(Context& ctx, DataPathSpec spec, remote::Runner& source, remote::Runner& target)
    : m_ctx(ctx), m_spec(std::move(spec)), m_source(source), m_target(target) {
  if (m_spec.path_id.empty()) {
    m_spec.path_id = new_path_id(m_spec.migration_id);
  }
  check_token("data path id", m_spec.path_id);
}

DataPath::~DataPath() {
  try {
    close();
  } catch (const std::exception& e) {
    m_ctx.log.warn("data path: cleanup failed", {{"error", e.what()}});
  }
}

void DataPath::open() {
  if (m_open) {
    return;
  }
  const std::string fingerprint = path_fingerprint(m_spec);
  if (const std::optional<std::string> parked =
          adoptable_path(m_ctx.store.live_artefacts(m_spec.migration_id), m_spec, m_source.host(),
                         m_target.host(), m_ctx.clock.wall_now());
      parked && !path_is_open(*parked)) {
    // An earlier command of this migration parked it whole, set up as this one would be: in
    // use from now on (a crash from here leaves it unparked, for the next command to remove
    // with its processes), every other path of the migration goes.
    m_spec.path_id = *parked;
    set_path_open(m_spec.path_id, true);
    m_open = true;
    for (state::Artefact a : m_ctx.store.live_artefacts(m_spec.migration_id)) {
      if (json_text(a.details, "path_id") == m_spec.path_id &&
          (a.kind == "data_path_dir" || a.kind == "authorized_key")) {
        a.details["parked"] = false;
        m_artefacts.push_back(m_ctx.store.record_artefact(a));
      }
    }
    remove_leftovers(m_ctx, m_spec.migration_id, m_source, m_target, Leftovers::all);
    m_ctx.log.info("data path: adopted the path an earlier command parked",
                   {{"path_id", m_spec.path_id}});
    return;
  }
  // Earlier paths of this migration first: their stale receivers and senders end (a dropped link
  // leaves `zfs recv` hanging on the target), their keys and dirs go.
  remove_leftovers(m_ctx, m_spec.migration_id, m_source, m_target, Leftovers::all);
  const std::string dir = path_dir(m_spec.path_id);
  const remote::KeyPair key = remote::generate_ed25519();
  const auto wall = m_ctx.clock.wall_now();
  const std::string now = iso8601(wall);
  const std::string line = authorized_keys_line(m_spec, key.public_line, wall);

  // Ledger first: a crash after any of the writes below leaves a row that tells the next
  // command exactly what to remove.
  auto record = [&](const std::string& kind, const std::string& host, const std::string& name,
                    nlohmann::json details) {
    state::Artefact a;
    a.migration_id = m_spec.migration_id;
    a.kind = kind;
    a.host = host;
    a.name = name;
    a.details = std::move(details);
    a.created = now;
    return a;
  };
  set_path_open(m_spec.path_id, true);
  m_open = true;
  // Rows name the node by its runner's host, so cleanup finds the right node whichever way the
  // data flowed (rollback --keep-changes sends from the target back to the source).
  // "spec": what the path was set up for (path_fingerprint), for a later command to adopt it
  // once parked.
  const nlohmann::json dir_details = {
      {"path_id", m_spec.path_id}, {"spec", fingerprint}, {"parked", false}};
  nlohmann::json key_details = {{"path_id", m_spec.path_id},
                                {"file", m_spec.authorized_keys},
                                {"line", line},
                                {"added_newline", false},
                                {"spec", fingerprint},
                                {"parked", false}};
  // The name holds the marker: each path has its own row (rows are unique by name).
  state::Artefact key_row =
      record("authorized_key", m_target.host(),
             fmt::format("{} {}", m_spec.authorized_keys, key_marker(m_spec.path_id)), key_details);
  m_artefacts.push_back(
      m_ctx.store.record_artefact(record("data_path_dir", m_target.host(), dir, dir_details)));
  m_artefacts.push_back(m_ctx.store.record_artefact(key_row));
  m_artefacts.push_back(
      m_ctx.store.record_artefact(record("data_path_dir", m_source.host(), dir, dir_details)));

  // Two commands: the target learns the key (and its forced command) first, then the source
  // gets the private key and the pin and starts the master, which proves the path works.
  {
    remote::RunOptions opts;
    opts.timeout = setup_timeout(m_spec) + std::chrono::seconds(30); // + the lock's 30 s
    remote::Command cmd({"sh", "-c", scripts::install_target(), "sh", dir, m_spec.authorized_keys,
                         k_keys_lock_dir, recv_script(m_spec), line});
    cmd.redact_token(0, 8);
    const remote::Result r = remote::run_checked(m_target, cmd, opts);
    if (r.out.find("added_newline") != std::string::npos) {
      // The operator's file had no final newline: cleanup takes the one added back with the line.
      key_row.details["added_newline"] = true;
      m_ctx.store.record_artefact(key_row);
    }
  }
  const std::string pin = fmt::format(
      "{} {}",
      m_spec.target_port == 22 ? m_spec.target_addr
                               : fmt::format("[{}]:{}", m_spec.target_addr, m_spec.target_port),
      ssh_key_body(m_spec.target_host_key));
  remote::Argv argv{"sh", "-c", k_install_source_script, "sh", dir, pin};
  remote::Argv master = source_ssh_argv(m_spec, {});
  master.insert(master.begin() + k_ssh_options_at,
                {"-o", "ControlMaster=yes", "-o", "ControlPersist=120", "-N", "-f"});
  argv.insert(argv.end(), master.begin(), master.end());
  remote::RunOptions opts;
  opts.stdin_data = key.private_openssh;
  opts.timeout = setup_timeout(m_spec);
  const remote::Result r = m_source.run(remote::Command(argv), opts);
  if (r.exit_status == 3) {
    // Not fatal: every send connects on its own when there is no master.
    m_ctx.log.warn("data path: ssh master did not start; streams will connect directly",
                   {{"exit_status", r.exit_status}});
  } else if (!r.ok()) {
    throw Error(ExitCode::remote, fmt::format("{}: installing the data-path key", m_source.host()),
                r.err.empty() ? fmt::format("exit status {}", r.exit_status) : r.err);
  }
}

void DataPath::kill_processes() noexcept {
  for (remote::Runner* runner : {&m_source, &m_target}) {
    try {
      remote::RunOptions opts;
      opts.timeout = std::chrono::seconds(30);
      const remote::Result r = runner->run(
          remote::Command({"sh", "-c", scripts::kill(), "sh", path_dir(m_spec.path_id)}), opts);
      if (!r.ok()) {
        m_ctx.log.warn("data path: could not end the data path's processes",
                       {{"host", runner->host()}, {"exit_status", r.exit_status}, {"err", r.err}});
      }
    } catch (const std::exception& e) {
      m_ctx.log.warn("data path: could not end the data path's processes",
                     {{"host", runner->host()}, {"error", e.what()}});
    }
  }
}

TransferResult DataPath::send(const Stream& stream, const remote::Argv& zfs_send, bool use_pv,
                              const std::function<void(std::uint64_t)>& on_bytes) {
  const remote::Command cmd = send_pipeline(m_spec, zfs_send, stream.dataset, use_pv);
  const bool counts = pipeline_counts(m_spec, use_pv);
  TransferResult out;
  std::string errors;
  remote::RunOptions opts;
  // A stream takes as long as its data: no time limit. A dropped link ends it through ssh's
  // ServerAlive probes on the source; an interrupt (Ctrl-C) ends it at once.
  opts.timeout = remote::k_no_timeout;
  opts.on_stderr_line = [&](std::string_view line) {
    if (auto n = counts ? parse_pv_line(line) : std::nullopt) {
      out.bytes = *n;
      out.bytes_counted = true;
      if (on_bytes) {
        on_bytes(*n);
      }
    } else {
      errors.append(line);
      errors.push_back('\n');
    }
  };
  const auto start = m_ctx.clock.now();
  remote::Result r;
  try {
    r = m_source.run(cmd, opts);
  } catch (...) {
    // Interrupted, or the session to the source broke: the receiver may hang on the target.
    kill_processes();
    throw;
  }
  out.duration = std::chrono::duration_cast<std::chrono::milliseconds>(m_ctx.clock.now() - start);
  if (!r.ok()) {
    kill_processes();
    throw send_failure(stream.dataset, r.exit_status, errors);
  }
  return out;
}

TransientError DataPath::send_failure(const std::string& dataset, int exit_status,
                                      std::string errors) const {
  while (!errors.empty() && errors.back() == '\n') {
    errors.pop_back();
  }
  std::string text;
  for (std::size_t at = 0; at < errors.size();) {
    const std::size_t nl = std::min(errors.find('\n', at), errors.size());
    if (nl > at) {
      text += (text.empty() ? "" : "; ") + errors.substr(at, nl - at);
    }
    at = nl + 1;
  }
  // 255 is ssh's own failure (ssh(1)): the connection to the target broke or never came up.
  const bool ssh_failed = exit_status == 255;
  return TransientError(
      ssh_failed ? ExitCode::remote : ExitCode::zfs,
      fmt::format("{}: send {} to {}", m_source.host(), dataset, m_target.host()),
      fmt::format("{}exit status {}: {}; the next sync resumes from the last snapshot the "
                  "target confirmed",
                  ssh_failed ? fmt::format("the data path's ssh to {} failed or lost its "
                                           "connection, ",
                                           m_target.host())
                             : "",
                  exit_status, text.empty() ? std::string("no error text") : text));
}

namespace {
// After each stream of send_streams: one line on stderr naming the stream that arrived. It is
// also what stops the sequence when this process is gone: its session closed, the marker's
// write fails, and neither the next stream nor the tail starts without anyone watching.
constexpr const char* k_stream_marker = "echo \"zmigrate-stream-sent $1\" >&2";
constexpr std::string_view k_marker_prefix = "zmigrate-stream-sent ";
// After the command run alongside the streams, when it succeeded.
constexpr const char* k_alongside_marker = "echo zmigrate-alongside-done >&2";
constexpr std::string_view k_alongside_done = "zmigrate-alongside-done";
} // namespace

SendsResult DataPath::send_streams(const std::vector<StreamSend>& sends, bool use_pv,
                                   const remote::Command& tail, const remote::Command& alongside,
                                   const std::function<void(std::size_t, std::uint64_t)>& on_bytes,
                                   const std::function<void()>& on_arrived) {
  SendsResult out;
  if (sends.empty()) {
    return out; // nothing to ride along with: the tail and the alongside command are the caller's
  }
  // The lanes, each its streams in the order given; a rate limit holds per stream, so one lane.
  std::map<std::size_t, std::vector<std::size_t>> by_lane;
  for (std::size_t i = 0; i < sends.size(); ++i) {
    by_lane[m_spec.rate_limit > 0 ? 0 : sends[i].lane].push_back(i);
  }
  // Streams in more than one lane, or several in one session: pv's counts say which stream
  // they are of. (The alongside lane has no counts, only its marker.)
  const bool concurrent = by_lane.size() > 1;
  // A lane of several streams goes through one session (compound_pipeline); not under a rate
  // limit, whose meter does not tag its counts.
  const auto compound = [&](const std::vector<std::size_t>& members) {
    return members.size() > 1 && m_spec.rate_limit == 0;
  };
  const bool tagged_counts =
      concurrent || std::any_of(by_lane.begin(), by_lane.end(),
                                [&](const auto& lane) { return compound(lane.second); });
  const bool with_alongside = !alongside.pipeline.empty();
  std::vector<std::size_t> lane_of(sends.size(), 0);
  std::vector<std::vector<std::size_t>> lanes;
  std::vector<remote::Command> lane_cmds;
  if (with_alongside) {
    // First, so that a failed stream's status (ssh's 255, say) is the command's.
    remote::Command c;
    append_sequence(c, alongside);
    append_sequence(c, remote::Command({"sh", "-c", k_alongside_marker}));
    lane_cmds.push_back(std::move(c));
  }
  for (const auto& [lane, members] : by_lane) {
    remote::Command c;
    if (compound(members)) {
      append_sequence(c, compound_pipeline(m_spec, sends, members, use_pv));
    }
    for (const std::size_t i : members) {
      lane_of[i] = lanes.size();
      if (!compound(members)) {
        append_sequence(
            c, send_pipeline(m_spec, sends[i].zfs_send, sends[i].stream->dataset, use_pv,
                             tagged_counts ? std::optional<std::size_t>(i) : std::nullopt));
      }
      // After a compound session, a marker for each of its streams: its status is theirs.
      append_sequence(c, remote::Command({"sh", "-c", k_stream_marker, "sh", std::to_string(i)}));
    }
    lanes.push_back(members);
    lane_cmds.push_back(std::move(c));
  }
  remote::Command cmd;
  remote::append_concurrent(cmd, lane_cmds);
  append_sequence(cmd, tail);
  const bool counts = pipeline_counts(m_spec, use_pv);
  out.transfers.resize(sends.size());
  std::vector<bool> arrived(sends.size(), false);
  // What the forced command said it received (k_received_prefix), and when: times each stream
  // of a compound session, and names the one that failed.
  std::vector<bool> received(sends.size(), false);
  std::vector<decltype(m_ctx.clock.now())> received_at(sends.size());
  std::size_t n_arrived = 0;
  std::vector<std::size_t> next_in_lane(lanes.size(), 0); // position of each lane's next stream
  std::string errors;
  const auto started = m_ctx.clock.now();
  std::vector<decltype(m_ctx.clock.now())> since(lanes.size(), started); // each lane's last marker
  const auto count = [&](std::size_t i, std::uint64_t n) {
    out.transfers[i].bytes = n;
    out.transfers[i].bytes_counted = true;
    if (on_bytes) {
      on_bytes(i, n);
    }
  };
  remote::RunOptions opts;
  opts.timeout = remote::k_no_timeout; // as send(): as long as the data takes
  opts.on_stderr_line = [&](std::string_view line) {
    std::string_view l = line;
    while (!l.empty() && (l.back() == '\r' || l.back() == '\n')) {
      l.remove_suffix(1);
    }
    const std::optional<std::uint64_t> marked =
        l.substr(0, k_marker_prefix.size()) == k_marker_prefix
            ? parse_pv_line(l.substr(k_marker_prefix.size()))
            : std::nullopt;
    const std::size_t i = marked ? static_cast<std::size_t>(*marked) : sends.size();
    const std::string_view got = l.substr(0, k_received_prefix.size()) == k_received_prefix
                                     ? l.substr(k_received_prefix.size())
                                     : std::string_view();
    // The first stream into that dataset not yet received, in the order of the sends.
    std::size_t into = sends.size();
    for (std::size_t k = 0; !got.empty() && k < sends.size() && into == sends.size(); ++k) {
      if (!received[k] && !arrived[k] && sends[k].stream->dataset == got) {
        into = k;
      }
    }
    if (with_alongside && l == k_alongside_done) {
      out.alongside_ok = true;
    } else if (into < sends.size()) {
      received[into] = true;
      received_at[into] = m_ctx.clock.now();
    } else if (i < sends.size() && !arrived[i] &&
               lanes[lane_of[i]][next_in_lane[lane_of[i]]] == i) {
      // In turn within its lane: the stream arrived (received when the target said so).
      const std::size_t lane = lane_of[i];
      const auto now = received[i] ? received_at[i] : m_ctx.clock.now();
      out.transfers[i].duration =
          std::chrono::duration_cast<std::chrono::milliseconds>(now - since[lane]);
      since[lane] = now;
      ++next_in_lane[lane];
      arrived[i] = true;
      ++n_arrived;
      if (n_arrived == sends.size() && on_arrived) {
        on_arrived(); // the source may still run the tail
      }
      if (!concurrent) {
        errors.clear(); // what a stream that arrived said is not the next one's error
      }
    } else if (auto tagged = counts && tagged_counts ? parse_tagged_count(l) : std::nullopt;
               tagged && tagged->first < sends.size() && !arrived[tagged->first]) {
      count(tagged->first, tagged->second);
    } else if (auto n = counts && !tagged_counts && n_arrived < sends.size() ? parse_pv_line(line)
                                                                             : std::nullopt) {
      count(lanes[0][next_in_lane[0]], *n);
    } else {
      errors.append(line);
      errors.push_back('\n');
    }
  };
  remote::Result r;
  try {
    r = m_source.run(cmd, opts);
  } catch (...) {
    kill_processes(); // as send(): the receiver may hang on the target
    throw;
  }
  if (n_arrived < sends.size()) {
    kill_processes();
    if (r.ok()) {
      errors += "the source's command ended before this stream's end marker\n";
    }
    // The first stream neither arrived nor received (one received in a compound session whose
    // later stream failed is not the one to name).
    std::size_t first = sends.size();
    for (std::size_t k = 0; k < sends.size() && first == sends.size(); ++k) {
      if (!arrived[k] && !received[k]) {
        first = k;
      }
    }
    if (first == sends.size()) {
      first = static_cast<std::size_t>(std::find(arrived.begin(), arrived.end(), false) -
                                       arrived.begin());
    }
    throw send_failure(sends[first].stream->dataset, r.exit_status, errors);
  }
  out.tail_ok = !tail.pipeline.empty() && r.ok();
  if (with_alongside && !out.alongside_ok) {
    m_ctx.log.warn("data path: every stream arrived, the command alongside them failed; it runs "
                   "again on its own",
                   {{"host", m_source.host()}, {"exit_status", r.exit_status}, {"err", errors}});
  }
  if (!tail.pipeline.empty() && !r.ok()) {
    m_ctx.log.warn("data path: every stream arrived, the command after them failed; it runs "
                   "again on its own",
                   {{"host", m_source.host()}, {"exit_status", r.exit_status}, {"err", errors}});
  }
  return out;
}

MeasureResult DataPath::measure(std::uint64_t mib) {
  if (!m_spec.measure) {
    throw Error(ExitCode::failure, "data path " + m_spec.path_id,
                "measure on a link not opened for a measurement");
  }
  remote::RunOptions opts;
  opts.timeout = remote::k_no_timeout; // an interrupt ends it; a dead link by ServerAlive
  const auto start = m_ctx.clock.now();
  remote::Result r;
  try {
    r = m_source.run(measure_pipeline(m_spec, mib), opts);
  } catch (...) {
    kill_processes();
    throw;
  }
  MeasureResult out;
  out.duration = std::chrono::duration_cast<std::chrono::milliseconds>(m_ctx.clock.now() - start);
  const std::optional<std::uint64_t> count = parse_pv_line(r.out.substr(0, r.out.find('\n')));
  const std::uint64_t sent = mib * 1024 * 1024;
  if (!r.ok() || !count || *count != sent) {
    kill_processes();
    throw TransientError(
        ExitCode::remote,
        fmt::format("{}: measure the data path to {}", m_source.host(), m_target.host()),
        fmt::format("exit status {}, {} of {} bytes counted on the target{}", r.exit_status,
                    count ? std::to_string(*count) : std::string("no count"), sent,
                    r.err.empty() ? std::string() : ": " + r.err));
  }
  out.bytes = *count;
  return out;
}

bool DataPath::serves(const std::string& migration_id, const Node& source, const Node& target,
                      const std::vector<std::string>& datasets) const {
  if (!m_open || migration_id != m_spec.migration_id) {
    return false;
  }
  // The same two nodes: by server UUID (two labels may name one node, or one label two).
  const bool same_ends = m_spec.source_server_uuid.empty() || m_spec.target_server_uuid.empty()
                             ? source.host() == m_source.host() && target.host() == m_target.host()
                             : source.server().uuid == m_spec.source_server_uuid &&
                                   target.server().uuid == m_spec.target_server_uuid;
  if (!same_ends) {
    return false;
  }
  for (const std::string& ds : datasets) {
    if (std::find(m_spec.datasets.begin(), m_spec.datasets.end(), ds) == m_spec.datasets.end()) {
      return false;
    }
  }
  return true;
}

void DataPath::close() {
  if (!m_open) {
    return;
  }
  m_open = false;
  set_path_open(m_spec.path_id, false);
  // Exactly this path's rows (the ones still live), one command per node.
  const std::vector<state::Artefact> live = m_ctx.store.live_artefacts(m_spec.migration_id);
  std::vector<std::pair<remote::Runner*, std::vector<state::Artefact>>> jobs;
  for (remote::Runner* runner : {&m_source, &m_target}) {
    std::vector<state::Artefact> mine;
    for (const state::Artefact& a : live) {
      if (a.host == runner->host() &&
          std::find(m_artefacts.begin(), m_artefacts.end(), a.id) != m_artefacts.end()) {
        mine.push_back(a);
      }
    }
    jobs.emplace_back(runner, std::move(mine));
  }
  clean_nodes(m_ctx, jobs);
  m_artefacts.clear();
}

void DataPath::park() {
  if (!m_open) {
    return;
  }
  if (m_spec.measure) {
    close();
    return;
  }
  for (state::Artefact a : m_ctx.store.live_artefacts(m_spec.migration_id)) {
    if (std::find(m_artefacts.begin(), m_artefacts.end(), a.id) != m_artefacts.end()) {
      a.details["parked"] = true;
      m_ctx.store.record_artefact(a);
    }
  }
  m_open = false;
  set_path_open(m_spec.path_id, false);
  m_artefacts.clear();
}

void DataPath::remove_leftovers(Context& ctx, const std::string& migration_id,
                                remote::Runner& source, remote::Runner& target, Leftovers which) {
  const std::vector<state::Artefact> live = ctx.store.live_artefacts(migration_id);
  // One command per path per node, whatever it holds.
  std::vector<std::pair<remote::Runner*, std::vector<state::Artefact>>> jobs;
  for (remote::Runner* runner : {&source, &target}) {
    if (runner == &target && &target == &source) {
      break;
    }
    std::vector<state::Artefact> mine;
    for (const state::Artefact& a : live) {
      if (a.host != runner->host() || (a.kind != "data_path_dir" && a.kind != "authorized_key")) {
        continue;
      }
      const std::string pid = json_text(a.details, "path_id");
      if (!pid.empty() && path_is_open(pid)) {
        continue; // in use by an open path of this process; its close() removes it
      }
      if (which == Leftovers::unparked && a.details.is_object() &&
          a.details.value("parked", false)) {
        continue; // parked for this command's own path to adopt; its open() decides
      }
      mine.push_back(a);
    }
    jobs.emplace_back(runner, std::move(mine));
  }
  clean_nodes(ctx, jobs, private_dir(migration_id));
}

} // namespace zmigrate::migration
