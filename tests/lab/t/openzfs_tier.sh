#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# The openzfs tier (issue 5) in one mixed lab: cn1 and cn2 are OpenZFS 2.3 qemu guests
# (tests/lab/openzfs/), cn3 is a zfs-fuse node (older platform). Seeded with web01 on cn1, min01 on
# cn3, kvm01 and bhyve01 on cn2, writers idle (every process in a TCG guest costs ~10x).
#  - the capability probe: every OpenZFS feature on the guests, none on zfs-fuse;
#  - KVM (sibling zvol disks, one a clone of the image) and bhyve (child zvols,
#    quota == reservation) instances migrate with all their data and their users' snapshots;
#    compressed sends (-c -L -e) between the two OpenZFS nodes;
#  - `estimate` dry-runs `send -nvP` and matches the bytes the first sync sent within 1 %;
#  - migration snapshots are held while needed (a destroy is refused), released by finalize
#    and abort, nothing named zmigrate left;
#  - a sync cut mid-stream resumes from the receive resume token, sends only the rest, and the
#    data is identical;
#  - zfs-fuse -> OpenZFS: the sends leave out -c/-L/-e and the migration works. (The other way
#    cannot be tested: zfs-fuse silently mis-receives OpenZFS 2.3 streams, files missing and
#    exit status 0, so the lab builds its filesystem images on the zfs-fuse node.)
set -uo pipefail
# shellcheck source=lib_openzfs.sh
source "$(dirname "$0")/lib_openzfs.sh"
export LAB_SEED_VMS=web01,min01@3,kvm01,bhyve01 LAB_WRITE_RATE=0
oz_setup zmoz 10.97.0 --kind openzfs 2 --zfs-fuse 1
# A TCG guest needs seconds for an ssh handshake: the guest-to-guest data path gets 60 s.
python3 - "$ZMIGRATE_CONFIG" <<'PY' || mt_die "cannot set ssh.connect_timeout_s"
import json, sys
c = json.load(open(sys.argv[1]))
c.setdefault("ssh", {})["connect_timeout_s"] = 60
json.dump(c, open(sys.argv[1], "w"))
PY

# in_pct A B PCT: |A - B| <= PCT % of B.
in_pct() { python3 -c "import sys; a, b, p = $1, $2, $3; sys.exit(0 if b > 0 and abs(a - b) <= b * p / 100 else 1)"; }
# dev_pct A B: (A - B) / B in percent, 2 decimals.
dev_pct() { python3 -c "print('%+.2f' % (($1 - $2) * 100.0 / $2))"; }

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
# types_of NODE DATASETS...: the sorted, unique `type` of DATASETS on NODE.
types_of() {
    local n=$1
    shift
    on "$n" "zfs get -H -o value type $*" | sort -u | tr '\n' ' ' | sed 's/ $//'
}

v1=$(on cn1 'zfs version | head -1')
v3=$(on cn3 'zfs version 2>/dev/null | head -1; true')
note "cn1, cn2: ${v1:-?}; cn3: zfs-fuse ${v3}"

# --- the seed is real: zvols, quota == reservation ---------------------------------------------
t=$(types_of cn2 "zones/$KVM-disk0 zones/$KVM-disk1 zones/$BHYVE/disk0 zones/$BHYVE/disk1")
check "seeded KVM and bhyve disks are zvols (type: $t)" test "$t" = volume
read -r bq br <<<"$(on cn2 "zfs get -Hp -o value quota,reservation zones/$BHYVE | tr '\n' ' '")"
check "bhyve01 on cn2: quota == reservation ($bq)" test -n "$bq" -a "$bq" = "${br:-}" -a "$bq" != 0

# Operator snapshots, which must travel with the instances (TRITON-1809).
on cn2 "zfs snapshot zones/$KVM@op1 zones/$KVM-disk0@op1 zones/$KVM-disk1@op1 && zfs snapshot -r zones/$BHYVE@op1" ||
    fail "operator snapshots @op1 on cn2"

# --- kvm01 cn2 -> cn1: zvols, clone of the image, -c -L -e, caps, finalize ---------------------
KVM_SUMS=$(oz_sums cn2 "$KVM")
oz_migrate_finalize "kvm01 cn2 -> cn1" "$KVM" -n cn1
if ((ZM_RC == 0)); then
    zm_json '"\n".join("%s %s %s -> %s: sent %d est %d%s" % (t["dataset"].split("/", 1)[1], t["kind"], t["from"].split("@")[-1] or "-", t["to"].split("@")[-1], t["bytes"], t["estimated_bytes"], "" if t["estimate_exact"] else " (approx)") for s in d["syncs"] for t in s["transfers"])' | sed 's/^/# /'
    check "kvm01: every transfer's estimate is a send -nvP dry run" \
        test "$(zm_json 'all(t["estimate_exact"] for s in d["syncs"] for t in s["transfers"])')" = true
    # OpenZFS's own -nvP runs ~2 % under a compressed incremental zvol stream (the same
    # stream measured with `zfs send | wc -c` in the guest, without zmigrate): 3 % here.
    check "kvm01: the zvol streams of 1 MiB or more within 3 % of their send -nvP estimate" \
        test "$(zm_json 'all(abs(t["bytes"] - t["estimated_bytes"]) <= 0.03 * t["bytes"] for s in d["syncs"] for t in s["transfers"] if t["bytes"] >= 1 << 20)')" = true
    check "kvm01: disk0 went as a clone of the image, then its users' snapshot onwards" \
        test "$(zm_json '[t["kind"] for t in d["syncs"][0]["transfers"] if t["dataset"].endswith("-disk0")][:2] == ["clone", "incremental"]')" = true
fi
LOG=$(oz_log_of "$KVM")
check "OpenZFS -> OpenZFS: every send cn2 ran has -c -L -e" all_stream_flags "$LOG" cn2
check "OpenZFS -> OpenZFS: the receive on cn1 is resumable (zfs recv -u -s)" grep -q 'zfs recv -u -s' "$LOG"
c1=$(oz_caps "$LOG" cn1)
note "cn1 caps: $c1"
check "probe on OpenZFS (cn1, $v1): every feature" python3 - "$c1" "$v1" <<'PY'
import json, sys
c = json.loads(sys.argv[1])
assert c["implementation"].startswith("openzfs"), c
assert c["version"] and c["version"] in sys.argv[2], (c["version"], sys.argv[2])
for k in ("dry_run_parsable", "resume_tokens", "compressed_send", "large_blocks", "embedded_data",
          "raw_send", "holds", "bookmarks", "written_property", "zvols", "list_parsable",
          "recv_exclude_props", "recv_set_props", "multi_snapshot", "has_pv", "has_mbuffer"):
    assert c[k] is True, k
PY
probe cn1 "$KVM" sum writer
check "kvm01 on cn1: disks are zvols" test "$(types_of cn1 "zones/$KVM-disk0 zones/$KVM-disk1")" = volume
check "kvm01 on cn1 running" test "$(pj cn1 'd["running"]')" = true
check "kvm01 on cn1 (zone root and both zvol disks) holds the source's data" test "$(oz_sums cn1 "$KVM")" = "$KVM_SUMS"
check "kvm01 writer file on cn1 intact" test "$(pj cn1 'd["writer"].get("verify_rc")')" = 0
s=$(on cn1 "zfs list -H -o name -t snapshot zones/$KVM zones/$KVM-disk0 zones/$KVM-disk1" | grep -c '@op1$')
check "kvm01 on cn1 kept the operator snapshots @op1 ($s of 3)" test "$s" = 3
oz_nothing_left "after migrate --finalize kvm01" cn1 cn2

# --- bhyve01 cn2 -> cn1: child zvols, quota == reservation ------------------------------------
BH_SUMS=$(oz_sums cn2 "$BHYVE")
oz_migrate_finalize "bhyve01 cn2 -> cn1" "$BHYVE" -n cn1
probe cn1 "$BHYVE" sum writer
check "bhyve01 on cn1: child disks are zvols" test "$(types_of cn1 "zones/$BHYVE/disk0 zones/$BHYVE/disk1")" = volume
check "bhyve01 on cn1: quota == reservation ($(pj cn1 'd["datasets"]["zones/'"$BHYVE"'"]["quota"]'))" \
    test "$(pj cn1 'd["datasets"]["zones/'"$BHYVE"'"]["quota"] == d["datasets"]["zones/'"$BHYVE"'"]["reservation"] != "0"')" = true
check "bhyve01 on cn1 (zone root and both child zvol disks) holds the source's data" test "$(oz_sums cn1 "$BHYVE")" = "$BH_SUMS"
check "bhyve01 writer file on cn1 intact" test "$(pj cn1 'd["writer"].get("verify_rc")')" = 0
s=$(on cn1 "zfs list -H -o name -t snapshot -r zones/$BHYVE" | grep -c '@op1$')
check "bhyve01 on cn1 kept the operator snapshots @op1 ($s of 3)" test "$s" = 3
oz_nothing_left "after migrate --finalize bhyve01" cn1 cn2

# --- web01 cn1 -> cn2: estimate vs sent, holds, a cut sync resumed, abort ---------------------
ROOTDIR=/zones/$WEB/root
on cn1 "head -c $((8 << 20)) /dev/urandom > $ROOTDIR/var/db/est.bin && sync && zfs snapshot -r zones/$WEB@op1" ||
    fail "8 MiB more data and @op1 in web01"
zm --json estimate "$WEB"
EST=0
if ((ZM_RC == 0)); then
    EST=$(zm_json 'd["size"]')
    note "estimate web01: $(zm_json '", ".join("%s %d %s" % (x["dataset"].split("/", 1)[1], x["bytes"], x["method"]) for x in d["datasets"])')"
    check "estimate web01: every dataset exact by send -nvP ($EST bytes)" \
        test "$(zm_json 'all(x["exact"] and x["method"] == "send -nvP" for x in d["datasets"])')" = true
else
    fail "estimate web01: rc $ZM_RC"
    zm_show
fi
zm_ok "begin -n cn2 web01" --json begin -n cn2 "$WEB" || mt_die "begin web01"
zm --json sync "$WEB"
if ((ZM_RC == 0)); then
    sent=$(zm_json 'd["sync"]["bytes"]')
    zm_json '"\n".join("%s %s: sent %d est %d" % (t["dataset"].split("/", 1)[1], t["kind"], t["bytes"], t["estimated_bytes"]) for t in d["sync"]["transfers"])' | sed 's/^/# /'
    check "web01's first sync: every transfer of 1 MiB or more within 1 % of its send -nvP estimate" \
        test "$(zm_json 'all(abs(t["bytes"] - t["estimated_bytes"]) <= 0.01 * t["bytes"] for t in d["sync"]["transfers"] if t["bytes"] >= 1 << 20)')" = true
    check "zmigrate estimate web01 ($EST) within 1 % of the bytes its first sync sent ($sent, $(dev_pct "$EST" "$sent") %)" \
        in_pct "$EST" "$sent" 1
else
    fail "sync web01: rc $ZM_RC"
    zm_show
fi
MIG=$(mig_id "$WEB")
snap_of() { on "$1" "zfs list -H -o name -t snapshot zones/$WEB | grep zmigrate | tail -1"; }
s1=$(snap_of cn1)
h=$(on cn1 "zfs holds -H $s1" 2>&1)
check "source snapshot held by zmigrate-$MIG ($s1)" grep -q "zmigrate-$MIG" <<<"$h"
h=$(on cn2 "zfs holds -H $(snap_of cn2)" 2>&1)
check "target snapshot held by zmigrate-$MIG" grep -q "zmigrate-$MIG" <<<"$h"
d=$(on cn1 "zfs destroy $s1 2>&1; echo rc=\$?")
check "destroying the held source snapshot is refused ($(tr '\n' ' ' <<<"$d"))" grep -q 'rc=1' <<<"$d"

on cn1 "head -c $((8 << 20)) /dev/urandom > $ROOTDIR/var/db/resume.bin && sync" || fail "8 MiB more in web01"
TAP2=$(source "$MT_ROOT/tests/lab/lib/common.sh"; source "$MT_ROOT/tests/lab/openzfs/guest.sh"; oz_tap 2)
tc qdisc replace dev "$TAP2" root tbf rate 2mbit burst 32kb latency 2s
(zm --json sync "$WEB"; echo "$ZM_RC" >"$MT_WORK/sync1.rc") &
bg=$!
killed=""
for ((i = 0; i < 240; i++)); do
    sleep 0.5
    # the root dataset's stream is the big one: cut it once ~1.5 MB went through (a real send
    # starts `zfs send -p`; the dry run before it, `zfs send -nvP -p ...`, must not match)
    pid=$(on cn1 "pgrep -f '^zfs send -p .* zones/$WEB@zmigrate'" 2>/dev/null | head -1)
    if [[ -n $pid ]]; then
        sleep 6
        on cn1 "kill -TERM $pid" && killed=$pid
        break
    fi
    kill -0 $bg 2>/dev/null || break
done
wait $bg
tc qdisc del dev "$TAP2" root 2>/dev/null || true
check "the sending zfs process of web01's root stream was killed mid-stream (pid ${killed:-none})" test -n "$killed"
check "the interrupted sync failed (rc $(cat "$MT_WORK/sync1.rc"))" test "$(cat "$MT_WORK/sync1.rc")" != 0
tok=$(on cn2 "zfs get -H -o value receive_resume_token zones/$WEB" 2>&1)
check "target has a receive_resume_token for zones/$WEB (${tok:0:24}...)" grep -Eq '^[0-9]+-[0-9a-f]+-[0-9a-f]+-[0-9a-f]+$' <<<"$tok"
read -r rest full <<<"$(on cn1 "zfs send -nvP -t $tok 2>&1 | awk '\$1 == \"size\" { print \$2 }'; s=\$(zfs list -H -o name -t snapshot zones/$WEB | grep zmigrate | tail -1); p=\$(zfs list -H -o name -t snapshot zones/$WEB | grep zmigrate | tail -2 | head -1); zfs send -nvP -p -c -L -e -i \$p \$s 2>&1 | awk '\$1 == \"size\" { print \$2 }'" | tr '\n' ' ')"
note "root stream: ${full:-?} bytes in all, ${rest:-?} left per the token (send -nvP -t)"
zm --json sync "$WEB"
if ((ZM_RC == 0)); then
    zm_json '"\n".join("%s %s: sent %d est %d" % (t["dataset"].split("/", 1)[1], t["kind"], t["bytes"], t["estimated_bytes"]) for t in d["sync"]["transfers"])' | sed 's/^/# /'
    rb=$(zm_json '([t["bytes"] for t in d["sync"]["transfers"] if t["dataset"] == "zones/'"$WEB"'" and t["kind"] == "resume"] or [-1])[0]')
    check "the sync after the cut resumed zones/$WEB from the token ($rb bytes)" test "$rb" -ge 0
    check "the resume sent only the rest: $rb bytes < ${full:-?} - 1 MiB" \
        python3 -c "import sys; sys.exit(0 if 0 < $rb < ${full:-0} - (1 << 20) else 1)"
    # `send -nvP -t` is the full stream less the bytes the token says were received; the
    # sender restarts at the start of the record the receiver had not finished, so the resume
    # resends up to one record (recordsize 128 KiB here) more, plus the resumed stream's own
    # BEGIN record (with the -p property list) and END: measured 130,184 and 132,896 more.
    check "the resume's bytes within one record (+16 KiB) of send -nvP -t's figure for the rest (${rest:-?}, $((rb - ${rest:-0})) bytes more)" \
        python3 -c "import sys; sys.exit(0 if 0 <= $rb - ${rest:-0} <= (128 << 10) + (16 << 10) else 1)"
else
    fail "sync after the cut: rc $ZM_RC"
    zm_show
fi
check "the log shows zfs send -t on cn1" grep -q 'zfs send -t' <(oz_sends "$(oz_log_of "$WEB")")
probe cn1 "$WEB" sum
probe cn2 "$WEB" sum
s1=$(pj cn1 'd["sums"].get("zones/'"$WEB"'")')
s2=$(pj cn2 'd["sums"].get("zones/'"$WEB"'")')
check "web01 root on cn2 identical to cn1 after the resumed sync ($s2)" test -n "$s1" -a "$s1" = "$s2"
zm_ok "abort web01" abort "$WEB"
oz_nothing_left "after abort" cn1 cn2
check "web01 still runs on cn1 after abort" test "$(vm_state cn1 "$WEB")" = running

# --- min01 cn3 (zfs-fuse) -> cn1 (OpenZFS): no -c/-L/-e, the migration works ------------------
MIN_SUMS=$(oz_sums cn3 "$MIN")
oz_migrate_finalize "min01 cn3 (zfs-fuse) -> cn1 (OpenZFS)" "$MIN" -n cn1
LOG=$(oz_log_of "$MIN")
oz_sends "$LOG" | sed 's/^/#   /'
check "zfs-fuse -> OpenZFS: no -c/-L/-e/-w in cn3's sends" no_stream_flags "$LOG" cn3
# the forced command installed on cn1 (logged with its script): a plain, non-resumable receive
check "zfs-fuse -> OpenZFS: the receive on cn1 is not resumable (zfs recv -u, no -s)" \
    bash -c "grep -q 'zfs recv -u \\\\\"' '$LOG' && ! grep -q 'zfs recv -u -s' '$LOG'"
c3=$(oz_caps "$LOG" cn3)
note "cn3 caps: $c3"
check "probe on zfs-fuse (cn3): implementation zfs-fuse, none of the OpenZFS features" python3 - "$c3" <<'PY'
import json, sys
c = json.loads(sys.argv[1])
assert c["implementation"] == "zfs-fuse", c
for k in ("dry_run_parsable", "resume_tokens", "compressed_send", "large_blocks", "embedded_data",
          "raw_send", "bookmarks", "written_property", "zvols", "list_parsable", "recv_set_props"):
    assert c[k] is False, k
assert c["has_pv"] and c["has_mbuffer"]
PY
check "min01 on cn1 running" test "$(vm_state cn1 "$MIN")" = running
check "min01 on cn1 (OpenZFS) holds the data it had on cn3 (zfs-fuse)" test "$(oz_sums cn1 "$MIN")" = "$MIN_SUMS"
oz_nothing_left "after migrate --finalize min01" cn1 cn3
mt_finish
