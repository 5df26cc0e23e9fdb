#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# The openzfs tier against two OpenZFS 2.3 qemu guests (tests/lab/openzfs/): exact estimates
# (send -nvP) within 1 % of the bytes sent; a sync cut mid-stream resumes from the receive
# resume token and sends only the rest, with identical data; migration snapshots held while
# needed and nothing named zmigrate left after finalize and abort; KVM (zvol disks) and bhyve
# (child zvols, quota == reservation) instances migrate with all their data.
set -uo pipefail
# shellcheck source=lib_openzfs.sh
source "$(dirname "$0")/lib_openzfs.sh"
oz_setup zmoz 10.97.0 --kind openzfs 2

for n in cn1 cn2; do
    v=$(on $n 'zfs version | head -1; zfs get -H -o value atime,compression zones | tr "\n" " "')
    note "$n: $v"
done
for v in "$WEB" "$MIN"; do on cn1 "vmadm update $v zlab_write_rate=0" >/dev/null 2>&1; done
for v in "$KVM" "$BHYVE"; do on cn2 "vmadm update $v zlab_write_rate=0" >/dev/null 2>&1; done
sleep 1

# --- zvols are real -----------------------------------------------------------------------------
t=$(on cn2 "zfs get -H -o name,value type zones/$KVM-disk0 zones/$KVM-disk1 zones/$BHYVE/disk0 zones/$BHYVE/disk1 | awk '{ print \$2 }' | sort -u")
check "seeded KVM and bhyve disks are zvols (type: $t)" test "$t" = volume
q=$(on cn2 "zfs get -Hp -o value quota,reservation zones/$BHYVE | tr '\n' ' '")
read -r bq br <<<"$q"
check "bhyve01 on cn2: quota == reservation ($bq)" test -n "$bq" -a "$bq" = "$br" -a "$bq" != 0

# --- estimate (4) -------------------------------------------------------------------------------
# An instance without snapshots gets a property-based (approximate) estimate by design; with an
# operator snapshot and no writes since, `estimate` dry-runs the sends (send -nvP).
zm --json estimate "$KVM"
note "estimate kvm01 without snapshots: $(zm_json '", ".join("%s %d %s" % (x["dataset"].split("/")[-1], x["bytes"], x["method"]) for x in d["datasets"])')"
on cn2 "zfs snapshot zones/$KVM@op1 zones/$KVM-disk0@op1 zones/$KVM-disk1@op1 && zfs snapshot -r zones/$BHYVE@op1" ||
    fail "operator snapshots @op1 on cn2"
declare -A EST
for v in "$KVM" "$BHYVE"; do
    zm --json estimate "$v"
    if ((ZM_RC != 0)); then
        fail "estimate $v: rc $ZM_RC"
        zm_show
        continue
    fi
    EST[$v]=$(zm_json 'd["size"]')
    note "estimate $v: $(zm_json '", ".join("%s %d %s%s" % (x["dataset"].split("/", 1)[1], x["bytes"], x["method"], "" if x["exact"] else " (not exact)") for x in d["datasets"])')"
    check "estimate $v: every dataset exact by send -nvP ($(zm_json '",".join(sorted(set(x["method"] for x in d["datasets"])))'), ${EST[$v]} bytes)" \
        test "$(zm_json 'all(x["exact"] for x in d["datasets"])')" = true
done

# --- KVM: begin, sync (estimate vs sent, holds), switch, finalize (3, 4, 2) -------------------
KVM_SUMS=$(oz_sums cn2 "$KVM")
note "kvm01 on cn2: $KVM_SUMS"
zm_ok "begin -n cn1 kvm01" --json begin -n cn1 "$KVM" || mt_die "begin kvm01"
zm_noexec --json sync "$KVM"
if ((ZM_RC == 0)); then
    ok "sync kvm01: $(zm_json 'd["sync"]["bytes"]') bytes ($(zm_json '",".join(sorted(set(t["kind"] for t in d["sync"]["transfers"])))'))"
    zm_json '"\n".join("%s %s sent %d est %d exact %s" % (t["dataset"], t["kind"], t["bytes"], t["estimated_bytes"], t["estimate_exact"]) for t in d["sync"]["transfers"])' | sed 's/^/# /'
    # send -nvP counts neither the stream's headers nor the -p property list: a stream of a few
    # KiB is off by a few KiB. The 1 % holds for streams of 1 MiB and more.
    check "sync kvm01: every transfer's estimate comes from send -nvP (exact)" \
        test "$(zm_json 'all(t["estimate_exact"] for t in d["sync"]["transfers"])')" = true
    check "sync kvm01: every transfer of 1 MiB or more within 1 % of its send -nvP estimate" \
        test "$(zm_json 'all(abs(t["bytes"] - t["estimated_bytes"]) <= 0.01 * t["bytes"] for t in d["sync"]["transfers"] if t["bytes"] >= 1 << 20)')" = true
    check "sync kvm01: smaller transfers within 16 KiB of their estimate" \
        test "$(zm_json 'all(abs(t["bytes"] - t["estimated_bytes"]) <= 16384 for t in d["sync"]["transfers"] if t["bytes"] < 1 << 20)')" = true
    check "zmigrate estimate kvm01 (${EST[$KVM]:-?}) within 1 % of the bytes its first sync sent ($(zm_json 'd["sync"]["bytes"]'))" \
        test "$(zm_json 'abs(d["sync"]["bytes"] - '"${EST[$KVM]:-0}"') <= 0.01 * d["sync"]["bytes"]')" = true
    SNAP=$(zm_json 'd["sync"]["snapshot"]')
else
    fail "sync kvm01: rc $ZM_RC"
    zm_show
fi
MIG=$(mig_id "$KVM")
h=$(on cn2 "zfs holds -H zones/$KVM-disk0@\$(zfs list -H -o name -t snapshot zones/$KVM-disk0 | grep -o 'zmigrate-.*' | tail -1)" 2>&1)
check "source snapshot held by zmigrate-$MIG: $h" grep -q "zmigrate-$MIG" <<<"$h"
ht=$(on cn1 "zfs holds -H zones/$KVM-disk0@\$(zfs list -H -o name -t snapshot zones/$KVM-disk0 | grep -o 'zmigrate-.*' | tail -1)" 2>&1)
check "target snapshot held by zmigrate-$MIG: $ht" grep -q "zmigrate-$MIG" <<<"$ht"
d=$(on cn2 "s=\$(zfs list -H -o name -t snapshot zones/$KVM-disk0 | grep zmigrate | tail -1); zfs destroy \$s 2>&1; echo rc=\$?")
check "destroying the held source snapshot is refused ($(tr '\n' ' ' <<<"$d"))" grep -q 'rc=1' <<<"$d"
zm_ok "switch kvm01" --json switch "$KVM"
probe cn1 "$KVM" sum writer
t=$(on cn1 "zfs get -H -o value type zones/$KVM-disk0 zones/$KVM-disk1 | sort -u")
check "kvm01 on cn1: disks are zvols ($t)" test "$t" = volume
check "kvm01 on cn1 running" test "$(pj cn1 'd["running"]')" = true
check "kvm01 on cn1 (zone root and both zvol disks) holds the source's data" test "$(oz_sums cn1 "$KVM")" = "$KVM_SUMS"
check "kvm01 writer file on cn1 intact (last seq $(pj cn1 'd["writer"].get("last")'))" test "$(pj cn1 'd["writer"].get("verify_rc")')" = 0
zm_ok "finalize kvm01" finalize -y "$KVM"
for n in cn1 cn2; do
    left=$(oz_zm_leftovers $n)
    check "after finalize: nothing named zmigrate on $n${left:+: $left}" test -z "$left"
done

# --- bhyve: migrate with quota == reservation and child zvols (3) --------------------------------
BH_SUMS=$(oz_sums cn2 "$BHYVE")
zm_noexec --json migrate -n cn1 --finalize "$BHYVE"
if ((ZM_RC == 0)); then
    ok "migrate --finalize bhyve01 to cn1 (${ZM_SECS} s)"
else
    fail "migrate --finalize bhyve01 to cn1: rc $ZM_RC"
    zm_show
fi
probe cn1 "$BHYVE" sum writer
t=$(on cn1 "zfs get -H -o value type zones/$BHYVE/disk0 zones/$BHYVE/disk1 | sort -u")
check "bhyve01 on cn1: child disks are zvols ($t)" test "$t" = volume
check "bhyve01 on cn1: quota == reservation ($(pj cn1 'd["datasets"]["zones/'"$BHYVE"'"]["quota"]'))" \
    test "$(pj cn1 'd["datasets"]["zones/'"$BHYVE"'"]["quota"] == d["datasets"]["zones/'"$BHYVE"'"]["reservation"] != "0"')" = true
check "bhyve01 on cn1 (zone root and both child zvol disks) holds the source's data" test "$(oz_sums cn1 "$BHYVE")" = "$BH_SUMS"
check "bhyve01 writer file on cn1 intact" test "$(pj cn1 'd["writer"].get("verify_rc")')" = 0
for n in cn1 cn2; do
    left=$(oz_zm_leftovers $n)
    check "after migrate --finalize: nothing named zmigrate on $n${left:+: $left}" test -z "$left"
done

# --- web01: a sync cut mid-stream resumes with only the rest (1), abort releases all (2) ---------
ROOTDIR=/zones/$WEB/root
on cn1 "head -c $((8 << 20)) /dev/urandom > $ROOTDIR/var/db/resume.bin && sync"
zm_ok "begin -n cn2 web01" --json begin --allow-older-platform -n cn2 "$WEB" || mt_die "begin web01"
TAP2=$(source "$MT_ROOT/tests/lab/lib/common.sh"; source "$MT_ROOT/tests/lab/openzfs/guest.sh"; oz_tap 2)
tc qdisc replace dev "$TAP2" root tbf rate 2mbit burst 32kb latency 2s
( zm --json sync "$WEB"; echo "$ZM_RC" >"$MT_WORK/sync1.rc"; cp "$ZM_OUT" "$MT_WORK/sync1.out" ) &
bg=$!
killed=""
for ((i = 0; i < 240; i++)); do
    sleep 0.5
    # the root dataset's stream is the big one: cut it once ~1.5 MB went through
    pid=$(on cn1 "pgrep -f '^zfs send.* zones/$WEB@zmigrate'" 2>/dev/null | head -1)
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
rest=$(on cn1 "zfs send -nvP -t $tok 2>&1 | awk '\$1 == \"size\" { print \$2 }'")
full=$(on cn1 "s=\$(zfs list -H -o name -t snapshot zones/$WEB | grep zmigrate | tail -1); o=\$(zfs get -H -o value origin zones/$WEB); zfs send -nvP -p -c -L -e -i \$o \$s 2>&1 | awk '\$1 == \"size\" { print \$2 }'")
note "root stream: full $full bytes, left per the token $rest bytes"
zm --json sync "$WEB"
if ((ZM_RC == 0)); then
    zm_json '"\n".join("%s %s sent %d est %d" % (t["dataset"], t["kind"], t["bytes"], t["estimated_bytes"]) for t in d["sync"]["transfers"])' | sed 's/^/# /'
    rb=$(zm_json '[t["bytes"] for t in d["sync"]["transfers"] if t["dataset"] == "zones/'"$WEB"'" and t["kind"] == "resume"][0] if any(t["kind"] == "resume" for t in d["sync"]["transfers"]) else -1')
    check "sync after the cut resumed zones/$WEB from the token (kind resume, $rb bytes)" test "$rb" -ge 0
    check "the resume sent only the rest: $rb bytes < the full stream ${full:-?} - 1 MiB" \
        python3 -c "import sys; rb, full = $rb, ${full:-0}; sys.exit(0 if 0 < rb < full - (1 << 20) else 1)"
    # OpenZFS's own figure for the rest (send -nvP -t) runs ~2 % under a compressed stream.
    check "the resume's bytes within 1 % of send -nvP -t's figure for the rest (${rest:-?})" \
        python3 -c "import sys; rb, rest = $rb, ${rest:-0}; sys.exit(0 if rest > 0 and abs(rb - rest) <= rest * 0.01 else 1)"
else
    fail "sync after the cut: rc $ZM_RC"
    zm_show
fi
log=$(oz_log_of "$WEB")
check "the log shows zfs send -t on cn1" grep -q 'zfs send -t' <(oz_sends "$log")
zm_ok "another sync web01" --json sync "$WEB"
probe cn1 "$WEB" sum
probe cn2 "$WEB" sum
s1=$(pj cn1 'd["sums"].get("zones/'"$WEB"'")')
s2=$(pj cn2 'd["sums"].get("zones/'"$WEB"'")')
check "web01 root on cn2 identical to cn1 after the resumed sync ($s2)" test -n "$s1" -a "$s1" = "$s2"
h=$(on cn1 "zfs holds -H \$(zfs list -H -o name -t snapshot zones/$WEB | grep zmigrate | tail -1)" 2>&1)
check "web01 migration snapshot held on cn1 before abort ($h)" grep -q zmigrate <<<"$h"
zm_ok "abort web01" abort "$WEB"
for n in cn1 cn2; do
    left=$(oz_zm_leftovers $n)
    check "after abort: nothing named zmigrate on $n${left:+: $left}" test -z "$left"
done
check "web01 still runs on cn1 after abort" test "$(vm_state cn1 "$WEB")" = running
mt_finish
