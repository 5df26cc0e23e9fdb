// SPDX-License-Identifier: MPL-2.0
#pragma once
// Pure argv builders and output parsers for zfs commands. Nothing here runs anything: every
// builder returns a remote::Argv made only of validated names and fixed option tokens (argv[0]
// is "zfs"; zfs::ZfsNode may replace it with a configured path), and every parser takes the text
// a command printed. Builders that take Capabilities use only the options that node supports:
// optional speed-ups (send -c/-L/-e, recv -s/-x) are dropped silently on nodes without them;
// options that change meaning (send -w, -t, -n, recv -o origin=, recv -A, bookmarks) throw
// PreconditionError instead.

#include <zmigrate/remote/command.hpp>
#include <zmigrate/zfs/capabilities.hpp>
#include <zmigrate/zfs/names.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace zmigrate::zfs {

inline constexpr std::string_view k_zfs = "zfs";

enum class Recursive { no, yes };
enum class Parents { no, yes };      // zfs create -p
enum class ForceUnmount { no, yes }; // zfs destroy -f
enum class DestroyNewer { no, yes }; // zfs rollback -r

// --- Listing ---------------------------------------------------------------------------------

struct DatasetEntry {
  DatasetName name;
  std::string type; // "filesystem" or "volume"
  bool operator==(const DatasetEntry&) const = default;
};

// `zfs list -H -o name,type -t filesystem,volume [-r] ROOT...`. Throws UsageError when `roots`
// is empty.
remote::Argv build_list_datasets(const std::vector<DatasetName>& roots, Recursive recursive);
// Rows of build_list_datasets() output, in output order (parents before children). Throws
// Error(ExitCode::zfs) on a line that is not "<name>\t<type>" with a valid name.
std::vector<DatasetEntry> parse_dataset_list(std::string_view out);

// `zfs list -H -o name [-t bookmark] NAME`: exit 0 when NAME exists; works on every
// implementation (bookmarks need `-t bookmark`).
remote::Argv build_exists(const ObjectName& name);
// `zfs list -H -t all -o name NAME`: exit 0 when NAME (dataset, snapshot or bookmark) exists.
// The form SmartosNode runs; an absent NAME fails with zfs's own "'NAME': dataset does not
// exist" (exit 1), which is the only answer that proves absence.
remote::Argv build_exists_any_type(const ObjectName& name);

// `zfs list -H -o name -t filesystem,volume -r ROOT`: ROOT and its descendants, one name a line,
// parents first. A missing ROOT fails ("dataset does not exist").
remote::Argv build_list_hierarchy(const DatasetName& root);

// `zfs list -H -t snapshot -o name -s creation -r -d 1 DS`: the snapshots of DS (not of its
// children), oldest first.
remote::Argv build_list_snapshot_names(const DatasetName& dataset);
// Snapshot names from build_list_snapshot_names() output. Throws Error(ExitCode::zfs) on a line
// that is not a snapshot name.
std::vector<SnapshotName> parse_snapshot_names(std::string_view out);
// `zfs list -H -o name -t snapshot -s creation -r -d 1 DS`: what build_list_snapshot_names()
// lists, with -o before -t as SmartosNode has always run it (the lab greps that form).
// parse_snapshot_names() reads its output.
remote::Argv build_list_snapshots(const DatasetName& dataset);

// --- Properties --------------------------------------------------------------------------------

// property → value for one object; a "-" value (not applicable / none) is left out.
using Properties = std::map<std::string, std::string>;
// object name ("zones/x", "zones/x@s") → its properties.
using PropertyTable = std::map<std::string, Properties>;

// The properties zmigrate reads about datasets and snapshots.
inline const std::vector<std::string> k_standard_properties = {
    "guid",        "used",     "referenced",     "usedbydataset",        "quota",
    "reservation", "refquota", "refreservation", "receive_resume_token", "written",
    "type",        "origin",   "mounted",        "compressratio"};

// Throws UsageError unless `name` is a property name we may pass: non-empty, ≤ 256, of
// [A-Za-z0-9_.:@#-], not starting with '-' (covers user properties and written@snap).
void validate_property_name(std::string_view name);

// `props` without those `caps` cannot answer (written*, receive_resume_token on zfs-fuse):
// zfs-fuse rejects the whole `zfs get` when one property is unknown.
std::vector<std::string> supported_properties(const std::vector<std::string>& props,
                                              const Capabilities& caps);

// `zfs get -Hp -o name,property,value P1,P2 NAME...`. Throws UsageError on an empty list or a
// bad property name.
remote::Argv build_get_properties(const std::vector<ObjectName>& names,
                                  const std::vector<std::string>& props);
// Rows of build_get_properties() output; "-" values are left out. Lines without three
// tab-separated fields are skipped (zfs prints nothing else on stdout).
PropertyTable parse_properties(std::string_view out);

// `zfs get -Hp -o name,property,value -r P1,P2 ROOT...`: the properties of every dataset and
// snapshot under the roots in one command (parse_properties() reads it). Throws UsageError on
// no root, no property or a bad property name (a comma inside one would smuggle in another).
remote::Argv build_get_tree(const std::vector<DatasetName>& roots,
                            const std::vector<std::string>& props);

// `zfs get -Hp -r -o name,property,value,source mountpoint,zoned,type ROOT...`: what decides
// whether a filesystem may be mounted on this node (the source tells a mountpoint set locally or
// by a received stream from an inherited one). Throws UsageError on no root.
remote::Argv build_get_mountpoint_sources(const std::vector<DatasetName>& roots);

// `zfs get -Hp -o name,value PROP NAME...`: one property of several objects, "<name>\t<value>"
// lines. Throws UsageError on no name or a bad property name.
remote::Argv build_get_values(const std::vector<ObjectName>& names, const std::string& property);

// `zfs get -Hp -o property,value P1,P2 NAME`: properties of one object, "<prop>\t<value>" lines.
// Throws UsageError on no property or a bad property name.
remote::Argv build_get_properties_of(const ObjectName& name, const std::vector<std::string>& props);

// A snapshot with what identifies it across nodes (guid) and orders it (createtxg).
struct SnapshotInfo {
  SnapshotName name;
  std::uint64_t guid = 0;
  std::uint64_t createtxg = 0;
  bool operator==(const SnapshotInfo&) const = default;
};

// `zfs get -Hp -r -d 1 -o name,property,value guid,createtxg DS`: one command for the
// snapshots of DS with GUIDs (zfs-fuse has no `zfs get -t` and prints `zfs list -o guid`
// humanized, so this form works everywhere).
remote::Argv build_get_snapshot_info(const DatasetName& dataset);
// The snapshots of `dataset` in build_get_snapshot_info() output, ordered by createtxg (oldest
// first); rows of the dataset itself and of its children are ignored. Throws
// Error(ExitCode::zfs) when a snapshot lacks a numeric guid.
std::vector<SnapshotInfo> parse_snapshot_info(std::string_view out, const DatasetName& dataset);

// Decimal u64, or nullopt.
std::optional<std::uint64_t> parse_u64(std::string_view text);

// --- Snapshots ---------------------------------------------------------------------------------

// `zfs snapshot [-r] A@s B@s ...` (several operands need caps.multi_snapshot). Throws
// UsageError on an empty list.
remote::Argv build_snapshot(const std::vector<SnapshotName>& snapshots, Recursive recursive);

// The commands that snapshot exactly `wanted` as `snap`, given every dataset that exists under
// the wanted ones (`existing`, e.g. from `zfs list -r` of the roots).
// - A root (a wanted dataset with no wanted ancestor) whose whole subtree is wanted gets `-r`:
//   that is how bhyve child disks and delegated datasets (children of the zone root) are
//   included, and it also catches a child created between listing and snapshot.
// - When every root is covered that way: ONE `zfs snapshot -r r1@s r2@s` (multi_snapshot) or,
//   with a single root, `zfs snapshot -r r1@s` on any implementation: atomic.
// - When some root has children that are not wanted: the wanted datasets are listed one by one
//   without -r: one atomic command with multi_snapshot.
// - Without multi_snapshot (zfs-fuse) and several roots (KVM sibling disks), one command per
//   root (or per dataset): `atomic` is false, and callers must snapshot a stopped instance.
struct SnapshotCommands {
  std::vector<remote::Argv> commands;
  bool atomic = true;
};
// Throws UsageError when `wanted` is empty or `snap` is not a valid snapshot component.
SnapshotCommands plan_snapshot_commands(const std::vector<DatasetName>& wanted,
                                        const std::vector<DatasetName>& existing,
                                        const std::string& snap, const Capabilities& caps);

// --- Send / receive ----------------------------------------------------------------------------

enum class IncrementalKind {
  single,        // -i: from → to, nothing between
  intermediates, // -I: every snapshot between from and to as well (user snapshots travel)
};

using SendFrom = std::variant<SnapshotName, BookmarkName>;

struct SendSpec {
  std::optional<SnapshotName> snapshot; // what to send; required unless resume_token is set
  std::optional<SendFrom> from;         // incremental source (snapshot, or bookmark for -i)
  IncrementalKind incremental = IncrementalKind::single;
  bool replicate = false;    // -R: descendants, their snapshots and properties
  bool props = false;        // -p
  bool compressed = false;   // -c (dropped without caps.compressed_send)
  bool large_blocks = false; // -L (dropped without caps.large_blocks)
  bool embedded = false;     // -e (dropped without caps.embedded_data)
  bool raw = false;          // -w (throws without caps.raw_send)
  std::string resume_token;  // send -t TOKEN; excludes snapshot, from, -R, -p, -I
  bool dry_run = false;      // -n -v -P: print the size estimate, send nothing
};

// Throws UsageError when `spec` is inconsistent: no snapshot (and no token); a token together
// with snapshot/from/-R/-p/-I; a malformed token; from == snapshot; a bookmark with -I or -R.
// With a token, -c/-L/-e/-w are ignored (the token carries them).
void validate(const SendSpec& spec);

// `zfs send [-n -v -P] [-R] [-p] [-c] [-L] [-e] [-w] [-i|-I FROM] SNAP` or
// `zfs send [-n -v -P] -t TOKEN`. `caps`: the sender's, or stream_capabilities(sender,
// receiver) when the stream goes to another node. Throws UsageError (validate) or
// PreconditionError when `caps` lack -n/-P (dry_run), -t, -w or bookmarks.
remote::Argv build_send(const SendSpec& spec, const Capabilities& caps);

// `zfs send -nvP [-R] [-p] [-c] [-L] [-e] [-w] [-i|-I FROM] SNAP` or `zfs send -nvP -t TOKEN`:
// the dry run of build_send(spec) (spec.dry_run is implied) with the three flags in one word, as
// SmartosNode runs it. Throws as build_send() does, and PreconditionError when `caps` lack
// dry_run_parsable.
remote::Argv build_send_estimate(const SendSpec& spec, const Capabilities& caps);

// `zfs send -nvP -t TOKEN`: decode a resume token (read from the receiving node) on the sending
// node; its report names the snapshot it resumes ("toname = DS@SNAP"). No capability check: a
// zfs without -t fails the command, which the caller reports. Throws UsageError unless
// is_valid_resume_token(token).
remote::Argv build_resume_token_decode(const std::string& token);

// Who may let `zfs recv -F` roll the target back and destroy what is not in the stream.
enum class RecvForce {
  no,
  // The caller asserts the target holds nothing this migration did not create (it received
  // every snapshot there itself). Never use it for a dataset found on the target.
  target_is_ours,
};

struct RecvSpec {
  explicit RecvSpec(DatasetName target) : dataset(std::move(target)) {}
  DatasetName dataset;
  bool unmounted = true;              // -u: do not mount what is received
  RecvForce force = RecvForce::no;    // -F
  bool resumable = true;              // -s (dropped without caps.resume_tokens)
  bool exclude_encryption = true;     // -x encryption (dropped without caps.recv_exclude_props)
  std::optional<SnapshotName> origin; // -o origin=SNAP (throws without caps.recv_set_props)
};

// `zfs recv [-u] [-F] [-s] [-x encryption] [-o origin=SNAP] DS`.
remote::Argv build_recv(const RecvSpec& spec, const Capabilities& caps);
// `zfs recv -A DS`: discard a partial resumable receive. PreconditionError without resume tokens.
remote::Argv build_recv_abort(const DatasetName& dataset, const Capabilities& caps);

// True for text shaped like a receive_resume_token ("1-<hex>-<hex>-<hex>", ≤ 16 KiB).
bool is_valid_resume_token(std::string_view token);
// The receive_resume_token in `props`, if set and well-formed.
std::optional<std::string> resume_token_of(const Properties& props);

// One stream of a (possibly replicated) send as the dry run describes it.
struct StreamEstimate {
  std::string from; // "" for a full stream; "snap", "@snap", "ds@snap" or "ds#bm" as printed
  std::string to;   // ds@snap
  std::optional<std::uint64_t> bytes;
  bool operator==(const StreamEstimate&) const = default;
};

struct SendEstimate {
  std::uint64_t bytes = 0; // the total line, else the sum of the streams' sizes
  bool parsable = false;   // sizes were exact numbers (-P), not "1.2M"
  bool complete = false;   // a total line was printed or every stream had a size
  std::vector<StreamEstimate> streams;
};

// Parse a dry-run / verbose send report: OpenZFS 2.x and illumos `-nvP` lines
// ("full\tDS@S\tN", "incremental\tA\tDS@B\tN", "size\tN"; a missing N means 0 on older
// illumos), the human form ("full send of DS@S estimated size is 1.2M", "send from @A to DS@B
// estimated size is 1.2M", "total estimated size is 1.2M") and zfs-fuse `-v` ("sending from @A
// to DS@B", no size). Other lines ("resume token contents:", nvlist dump) are skipped.
// nullopt when nothing in `out` is such a line.
std::optional<SendEstimate> parse_send_estimate(std::string_view out);

// "1.2M", "512", "512B", "15.5K", "10.0G", "1.52MiB" → bytes (powers of 1024), or nullopt.
std::optional<std::uint64_t> parse_human_size(std::string_view text);

// --- Destroy, holds, and the rest --------------------------------------------------------------

// `zfs destroy [-f] [-r] DS`.
remote::Argv build_destroy(const DatasetName& dataset, Recursive recursive, ForceUnmount force);
// `zfs destroy [-r] DS@snap` (-r: the same snapshot of every descendant too).
remote::Argv build_destroy(const SnapshotName& snapshot, Recursive recursive);

// Throws UsageError unless `tag` is a valid hold tag: non-empty, ≤ 200, of
// [A-Za-z0-9_.:-], not starting with '-' or '.' (reserved by libzfs).
void validate_hold_tag(std::string_view tag);
// `zfs hold [-r] TAG S1 S2 ...` / `zfs release [-r] TAG S1 S2 ...`. Throws UsageError on a bad
// tag or an empty list.
remote::Argv build_hold(const std::string& tag, const std::vector<SnapshotName>& snapshots,
                        Recursive recursive);
remote::Argv build_release(const std::string& tag, const std::vector<SnapshotName>& snapshots,
                           Recursive recursive);

// `zfs rename FROM TO` for datasets; `zfs rename DS@a DS@b` for snapshots (same dataset, else
// UsageError).
remote::Argv build_rename(const DatasetName& from, const DatasetName& to);
remote::Argv build_rename(const SnapshotName& from, const SnapshotName& to);

// `zfs set PROP=VALUE NAME` (one property: zfs-fuse takes only one). Throws UsageError on a bad
// property name or a value holding control characters.
remote::Argv build_set(const ObjectName& name, const std::string& property,
                       const std::string& value);
// `zfs inherit PROP NAME`: removes a local value (a user property so set is gone). Throws
// UsageError on a bad property name.
remote::Argv build_inherit(const ObjectName& name, const std::string& property);
// `zfs mount DS`.
remote::Argv build_mount(const DatasetName& dataset);
// `zfs create [-p] [-o k=v]... DS`. Throws UsageError on bad property names or values.
remote::Argv build_create(const DatasetName& dataset, Parents parents,
                          const std::vector<std::pair<std::string, std::string>>& props = {});
// `zfs rollback [-r] DS@snap` (-r destroys the snapshots newer than `snapshot`).
remote::Argv build_rollback(const SnapshotName& snapshot, DestroyNewer destroy_newer);

} // namespace zmigrate::zfs
