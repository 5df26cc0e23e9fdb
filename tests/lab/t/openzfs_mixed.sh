#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# The openzfs tier in a mixed lab: zfs-fuse nodes cn1, cn2 and OpenZFS 2.3 guests cn3, cn4.
# The capability probe reports each kind right; compressed sends (-c -L -e) are used between the
# two OpenZFS nodes and left out (cleanly, the migration works) whenever zfs-fuse is on either
# end: web01 goes cn1 -> cn3 -> cn4 -> cn1 with its data intact.
set -uo pipefail
# shellcheck source=lib_openzfs.sh
source "$(dirname "$0")/lib_openzfs.sh"
oz_setup zmozmx 10.97.1 2 --openzfs 2

on cn1 "vmadm update $WEB zlab_write_rate=0" >/dev/null 2>&1
sleep 1
SUMS=$(oz_sums cn1 "$WEB")

# hop FROM TO: migrate web01 FROM -> TO with --finalize; checks the data; leaves the log in $LOG.
hop() {
    local from=$1 to=$2
    zm_noexec --json migrate --allow-older-platform -n "$to" --finalize "$WEB"
    if ((ZM_RC == 0)); then
        ok "migrate web01 $from -> $to (${ZM_SECS} s)"
    else
        fail "migrate web01 $from -> $to: rc $ZM_RC"
        zm_show
    fi
    LOG=$(oz_log_of "$WEB")
    oz_sends "$LOG" | sed 's/^/#   /'
    on "$to" "vmadm update $WEB zlab_write_rate=0" >/dev/null 2>&1
    check "web01 on $to holds the data it had on cn1" test "$(oz_sums "$to" "$WEB")" = "$SUMS"
    local left
    left=$(oz_zm_leftovers "$from"; oz_zm_leftovers "$to")
    check "nothing named zmigrate left on $from and $to${left:+: $left}" test -z "$left"
}

# no_stream_flags LOG HOST: the sends HOST ran carry none of -c -L -e -w.
no_stream_flags() {
    local s
    s=$(oz_sends "$1" | awk -v h="$2" '$1 == h')
    [[ -n $s ]] && ! grep -Eq -- ' -[a-zA-Z]*[cLew]' <<<"$(sed 's/ -[it] [^ ]*//g' <<<"$s")"
}

# all_stream_flags LOG HOST: every (non-resume) send HOST ran carries -c, -L and -e.
all_stream_flags() {
    local s f
    s=$(oz_sends "$1" | awk -v h="$2" '$1 == h' | grep -v -- ' -t ')
    [[ -n $s ]] || return 1
    for f in -c -L -e; do
        grep -v -- " $f " <<<"$s" | grep -q . && return 1
    done
    return 0
}

hop cn1 cn3
check "zfs-fuse -> OpenZFS: no -c/-L/-e in cn1's sends" no_stream_flags "$LOG" cn1

# The capability probe (6), as zmigrate recorded it in the log of this migration.
c1=$(oz_caps "$LOG" cn1)
c3=$(oz_caps "$LOG" cn3)
note "cn1 caps: $c1"
note "cn3 caps: $c3"
check "probe on zfs-fuse (cn1): implementation zfs-fuse, none of the OpenZFS features" python3 - "$c1" <<'PY'
import json, sys
c = json.loads(sys.argv[1])
assert c["implementation"] == "zfs-fuse", c
for k in ("dry_run_parsable", "resume_tokens", "compressed_send", "large_blocks", "embedded_data",
          "raw_send", "bookmarks", "written_property", "zvols", "list_parsable", "recv_set_props"):
    assert c[k] is False, k
assert c["has_pv"] and c["has_mbuffer"]
PY
zv=$(on cn3 "zfs version | head -1")
check "probe on OpenZFS (cn3, $zv): every feature" python3 - "$c3" "$zv" <<'PY'
import json, sys
c = json.loads(sys.argv[1])
assert c["implementation"].startswith("openzfs"), c
assert c["version"] and c["version"] in sys.argv[2], (c["version"], sys.argv[2])
for k in ("dry_run_parsable", "resume_tokens", "compressed_send", "large_blocks", "embedded_data",
          "raw_send", "holds", "bookmarks", "written_property", "zvols", "list_parsable",
          "recv_exclude_props", "recv_set_props", "multi_snapshot", "has_pv", "has_mbuffer"):
    assert c[k] is True, k
PY

hop cn3 cn4
check "OpenZFS -> OpenZFS: every send cn3 ran has -c -L -e" all_stream_flags "$LOG" cn3

hop cn4 cn1
check "OpenZFS -> zfs-fuse: no -c/-L/-e in cn4's sends" no_stream_flags "$LOG" cn4
mt_finish
