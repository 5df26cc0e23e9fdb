#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Lab test (issue 10, "The fault suite"): storage faults, on the target's pool and on the head
# node's state database.
#  1. the target pool fills during a sync (a reservation leaves it 4 MiB while 16 MiB of new
#     data stream in): the sync fails with exit 7 and one line that says the pool is out of
#     space; the source's data and the synced base stay on both nodes, the target gains no
#     dataset or snapshot, nothing of the migration is left; with space freed the next sync
#     completes and the data matches.
#  2. a read-only state database (its directory mounted read-only, which binds root too): every
#     command that writes is refused with exit 8 and one line naming the database; the file,
#     both nodes and the inventory are unchanged (checked); with the mount gone, sync works.
#  3. a corrupt state database (its header overwritten): refused with exit 8 and one line that
#     names the file, which is left byte for byte as it was; nodes unchanged.
# Exit 0 pass, 1 fail, 125 skip (not root, no /dev/fuse, no netns, no unshare).
set -euo pipefail
# shellcheck source=lib_migrate.sh
source "$(dirname "$(readlink -f "$0")")/lib_migrate.sh"

if ((EUID == 0)) && ! command -v unshare >/dev/null; then
    echo "SKIP: no unshare (util-linux) for a read-only mount"
    exit 125
fi

mt_setup zmt-fsto 10.96.16
# shellcheck source=lib_faults.sh
source "$MT_T_DIR/lib_faults.sh"
trap 'ft_restore; mt_exited $?' EXIT
STATE=$LAB_DIR/state

# nodes_sig: what both nodes hold of web01 and of zmigrate (datasets, snapshots with GUIDs, key
# lines, private dirs) and VMAPI's record of it, as one line.
nodes_sig() {
    local n
    for n in cn1 cn2; do
        probe "$n" "$WEB" || return 1
        pj "$n" '(sorted(d["datasets"]), d["snapshots"], d["keys"], d["rundir"], d["running"])'
    done
    curl -fsS --max-time 10 "$VMAPI_URL/vms/$WEB" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["server_uuid"], d["state"], d.get("last_modified"))'
}
state_sum() { sha256sum "$STATE"/zmigrate.db* 2>/dev/null | awk '{ print $1 }' | tr '\n' ' '; }

FT_SRC=cn1 FT_DST=cn2
zm_ok "begin -n cn2 web01" begin -n cn2 "$WEB" || mt_die "begin"
MIG=$(mig_id "$WEB")
zm_ok "the first sync" sync "$WEB" || mt_die "sync"

# --- 1. the target pool fills during a sync -----------------------------------------------------
label="target pool full"
note "--- $label"
fill cn1 1 16
avail=$(on cn2 "zfs get -Hp -o value available zones")
on cn2 "zfs create -o canmount=off -o refreservation=$((avail - (4 << 20))) zones/zfault-filler" || mt_die "$label: cannot fill cn2's pool"
note "$label: cn2's pool zones has $(on cn2 "zfs get -H -o value available zones") available for 16 MiB of new data"
probe cn1 "$WEB" && before_src=$(pj cn1 '(sorted(d["datasets"]), d["snapshots"])')
probe cn2 "$WEB" && before_dst=$(pj cn2 '(sorted(d["datasets"]), d["snapshots"])')
zm sync "$WEB"
if err_line_ok 7; then ok "$label: the sync failed with exit 7 in ${ZM_SECS} s: $(cat "$ZM_ERR")"; else
    fail "$label: want exit 7 and one error line, got exit $ZM_RC"
    zm_show
fi
check "$label: the error says the target is out of space" grep -qi 'space' "$ZM_ERR"
probe cn1 "$WEB" || true
probe cn2 "$WEB" || true
# The sync's own snapshot may stay on the source (in the ledger; the next sync sends it).
check "$label: the source keeps its datasets and every snapshot it had (same GUIDs); anything new is this migration's" \
    python3 -c "import json,sys
ds0, snaps0 = json.loads(sys.argv[1]); ds1, snaps1 = json.loads(sys.argv[2])
new = [k for k in snaps1 if k not in snaps0]
sys.exit(not (ds0 == ds1 and all(snaps1.get(k) == v for k, v in snaps0.items())
              and all('@zmigrate-$MIG-' in k for k in new)))" "$before_src" "$(pj cn1 '(sorted(d["datasets"]), d["snapshots"])')"
# The datasets go at once: one whose stream arrived before the pool filled keeps this
# migration's new snapshot (the next sync sends the others from their own bases); the zone root,
# whose stream did not fit, gained nothing.
check "$label: the target gained no dataset, lost no snapshot, and anything new is this migration's snapshot of a dataset other than the zone root" \
    python3 -c "import json,sys
ds0, snaps0 = json.loads(sys.argv[1]); ds1, snaps1 = json.loads(sys.argv[2])
new = [k for k in snaps1 if k not in snaps0]
sys.exit(not (ds0 == ds1 and all(snaps1.get(k) == v for k, v in snaps0.items())
              and all('@zmigrate-$MIG-' in k and not k.startswith('zones/$WEB@') for k in new)))" "$before_dst" "$(pj cn2 '(sorted(d["datasets"]), d["snapshots"])')"
nothing_left "$label"
on cn2 "zfs set refreservation=none zones/zfault-filler && zfs destroy zones/zfault-filler" || mt_die "$label: cannot free cn2's pool"
resync_matches "$label"

# --- 2. a read-only state database --------------------------------------------------------------
# ro_zm ARGS...: zmigrate ARGS with the state directory mounted read-only (a private mount
# namespace, so nothing else sees the mount).
ro_zm() {
    local t0
    t0=$(date +%s.%N)
    ZM_RC=0
    unshare --mount --propagation private sh -c 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"' \
        sh "$STATE" timeout -k 5 120 "$ZM" "$@" >"$ZM_OUT" 2>"$ZM_ERR" </dev/null || ZM_RC=$?
    ZM_SECS=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    printf '\n$ (state read-only) zmigrate %s   -> rc %s\n%s\n' "$*" "$ZM_RC" "$(cat "$ZM_OUT" "$ZM_ERR")" >>"$MT_WORK/zm.log"
}
label="read-only state database"
note "--- $label"
fill cn1 2 1
sig0=$(nodes_sig)
sum0=$(state_sum)
for args in "sync $WEB" "switch $WEB" "abort $WEB" "begin -n cn3 $LX"; do
    # shellcheck disable=SC2086
    ro_zm $args
    if err_line_ok 8 && grep -q "$STATE" "$ZM_ERR"; then ok "$label: $args refused with exit 8: $(cat "$ZM_ERR")"; else
        fail "$label: $args: want exit 8 and one error line naming $STATE, got exit $ZM_RC"
        zm_show
    fi
done
check "$label: the state database is unchanged" test "$(state_sum)" = "$sum0"
check "$label: both nodes and VMAPI are unchanged" test "$(nodes_sig)" = "$sig0"
zm_ok "$label: with the mount gone, sync works" sync "$WEB" || true
sums_equal "$label" cn1 cn2

# --- 3. a corrupt state database ----------------------------------------------------------------
label="corrupt state database"
note "--- $label"
BAD=$MT_WORK/bad-state
rm -rf "$BAD"
mkdir -p "$BAD"
cp "$STATE/zmigrate.db" "$BAD/zmigrate.db"
printf 'this is not an SQLite file, it was overwritten' | dd of="$BAD/zmigrate.db" conv=notrunc status=none
bad0=$(sha256sum "$BAD/zmigrate.db")
sig0=$(nodes_sig)
for args in "sync $WEB" "list" "get $WEB"; do
    # shellcheck disable=SC2086
    zm --state-dir "$BAD" $args
    if err_line_ok 8 && grep -q "$BAD" "$ZM_ERR"; then ok "$label: $args refused with exit 8: $(cat "$ZM_ERR")"; else
        fail "$label: $args: want exit 8 and one error line naming $BAD, got exit $ZM_RC"
        zm_show
    fi
done
check "$label: the corrupt file is left byte for byte" test "$(sha256sum "$BAD/zmigrate.db")" = "$bad0"
check "$label: no file was added beside it ($(ls "$BAD" | tr '\n' ' '))" test "$(ls "$BAD")" = zmigrate.db
check "$label: both nodes and VMAPI are unchanged" test "$(nodes_sig)" = "$sig0"

zm_ok "abort the migration" abort "$WEB" || true
nothing_left "after the abort"

mt_finish
