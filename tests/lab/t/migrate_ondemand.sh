#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Lab test (issue 3, "Done when" 2 and 3): on-demand phases.
#  - begin -n cn2 web01, three syncs with writes in between: the first is full, the next two send
#    only the delta (they carry the files written since, and are much smaller than the first);
#    after each sync the target holds the newest snapshot (same GUID), unmounted, and only the
#    newest migration snapshot is kept on either side; the source keeps running
#  - switch: runs on cn2 with the written files
#  - rollback (without --keep-changes): back on cn1 (VMAPI, running, visible), a file written on
#    the target after the switch is not carried back, target instance and datasets gone, no
#    migration snapshot, key or private dir left
#  - a second migration begin/sync/switch, a marker written on the target, rollback
#    --keep-changes: the marker and the target's writer records are on cn1
#  - abort after a sync of min01 (-n cn2): target datasets and zone gone, source untouched
#    (running, visible, indestructible, no migration snapshot)
# Exit 0 pass, 1 fail, 125 skip (not root, no /dev/fuse, no netns).
set -euo pipefail
# shellcheck source=lib_migrate.sh
source "$(dirname "$(readlink -f "$0")")/lib_migrate.sh"

mt_setup zmt-ond 10.95.2

ROOTDIR=/zones/$WEB/root/var/tmp

# snaps_ok SRC DST: after a sync, every dataset on both sides has exactly one migration snapshot,
# the same GUID on both, and the target's datasets are not mounted (received with -u).
snaps_ok() {
    probe "$1" "$WEB" && probe "$2" "$WEB" || return 1
    local s d
    s=$(pj "$1" 'sorted((k, v) for k, v in d["snapshots"].items() if "@zmigrate-" in k)')
    d=$(pj "$2" 'sorted((k, v) for k, v in d["snapshots"].items() if "@zmigrate-" in k)')
    [[ $s == "$d" ]] || { echo "snapshots differ: $1 $s / $2 $d"; return 1; }
    [[ $(pj "$1" 'sorted(set(k.split("@")[0] for k in d["snapshots"] if "@zmigrate-" in k)) == sorted(k.split("@")[0] for k in d["snapshots"] if "@zmigrate-" in k) and len([k for k in d["snapshots"] if "@zmigrate-" in k]) >= 2') == true ]] ||
        { echo "not exactly one migration snapshot per dataset: $s"; return 1; }
    [[ $(pj "$2" '[n for n, p in d["datasets"].items() if p.get("mounted") == "yes"]') == "[]" ]] ||
        { echo "target datasets mounted: $(pj "$2" 'd["datasets"]')"; return 1; }
}

# --- begin and three syncs ------------------------------------------------------------------
zm --json begin -n cn2 "$WEB"
if ((ZM_RC == 0)) && [[ $(zm_json 'd["migration"]["phase"] + "/" + d["migration"]["state"]') == begin/paused ]]; then
    ok "begin -n cn2 web01: begin/paused (--json parses)"
else
    fail "begin -n cn2 web01: rc $ZM_RC"
    zm_show
    mt_die "begin"
fi
declare -a BYTES MS
for i in 1 2 3; do
    if ((i > 1)); then
        kib=$((256 * (i - 1)))
        on cn1 "head -c $((kib * 1024)) /dev/urandom > $ROOTDIR/ondemand-$i.bin && sync"
        note "wrote $kib KiB into web01 on cn1 (plus the writer's 16 KiB/s)"
    fi
    zm --json sync "$WEB"
    if ((ZM_RC != 0)); then
        fail "sync $i: rc $ZM_RC"
        zm_show
        mt_die "sync $i"
    fi
    BYTES[i]=$(zm_json 'd["sync"]["bytes"]')
    MS[i]=$(zm_json 'd["sync"]["duration_ms"]')
    kinds=$(zm_json '",".join(sorted(set(t["kind"] for t in d["sync"]["transfers"])))')
    ok "sync $i: ${BYTES[i]} bytes in ${MS[i]} ms ($kinds), sync_number $(zm_json 'd["sync"]["sync_number"]')"
    if ((i == 1)); then
        check "sync 1 is a full send (full/clone streams only)" \
            test "$(zm_json 'all(t["kind"] in ("full", "clone") for t in d["sync"]["transfers"])')" = true
    else
        check "sync $i is incremental only" test "$kinds" = incremental
        check "sync $i carries the $kib KiB written (${BYTES[i]} >= $((kib * 1024)))" test "${BYTES[i]}" -ge $((kib * 1024))
        check "sync $i is a delta: ${BYTES[i]} bytes < a quarter of the full sync (${BYTES[1]})" \
            test $((BYTES[i] * 4)) -lt "${BYTES[1]}"
    fi
    if why=$(snaps_ok cn1 cn2); then ok "after sync $i: one migration snapshot per dataset, same GUID on both, target unmounted"; else
        fail "after sync $i: $why"
    fi
done
check "the source kept running through the syncs; no zone on the target yet" \
    test "$(pj cn1 'd["vm"]["state"], d["running"]')$(pj cn2 'd["vm"]')" = '["running", true]null'
check "migration record: phase sync, paused, 3 syncs" \
    test "$(mig_field "$WEB" 'd["phase"], d["state"], d["num_sync_phases"]')" = '["sync", "paused", 3]'

# --- switch ---------------------------------------------------------------------------------
mt_watch_start "$WEB"
zm --json switch "$WEB"
both=$(mt_watch_stop)
if ((ZM_RC == 0)); then
    ok "switch: downtime $(zm_json 'd["switch"]["downtime_ms"]') ms ($(zm_json '", ".join("%s %s" % kv for kv in d["switch"]["downtime_steps_ms"].items())'))"
else
    fail "switch: rc $ZM_RC"
    zm_show
    mt_die "switch"
fi
check "never two copies running during the switch ($both overlaps)" test "$both" = 0
if ! { probe cn1 "$WEB" sum && probe cn2 "$WEB" sum writer; }; then fail "probe after switch"; fi
check "web01 runs on cn2, source hidden and stopped" \
    test "$(pj cn2 'd["vm"]["state"]')/$(pj cn1 'd["vm"]["state"], d["vm"].get("do_not_inventory")')" = 'running/["stopped", true]'
check "the target has the data written between syncs (equal zlab-sum)" \
    test "$(pj cn1 'd["sums"]')" = "$(pj cn2 'd["sums"]')"
on cn2 "head -c 65536 /dev/urandom > $ROOTDIR/discard-me.bin && sync"

# --- rollback without --keep-changes --------------------------------------------------------
mt_watch_start "$WEB"
zm --json rollback "$WEB"
both=$(mt_watch_stop)
if ((ZM_RC == 0)); then ok "rollback (${ZM_SECS} s, kept_changes $(zm_json 'd["rollback"]["kept_changes"]'))"; else
    fail "rollback: rc $ZM_RC"
    zm_show
fi
check "never two copies running during the rollback ($both overlaps)" test "$both" = 0
check "VMAPI: web01 on cn1, running" test "$(vmapi "$WEB" 'd["server_uuid"] + " " + d["state"]')" = "$CN1 running"
if ! { probe cn1 "$WEB" writer && probe cn2 "$WEB"; }; then fail "probe after rollback"; fi
check "cn1 runs web01 again, visible, autoboot on" \
    test "$(pj cn1 'd["vm"]["state"], d["running"], bool(d["vm"].get("do_not_inventory")), d["vm"]["autoboot"]')" = '["running", true, false, true]'
check "cn1 writer file intact after the rollback" test "$(pj cn1 'd["writer"]["verify_rc"]')" = 0
check "cn2: instance and datasets gone" test "$(pj cn2 'd["vm"], sorted(d["datasets"])')" = '[null, []]'
for n in cn1 cn2; do
    if left=$(no_artefacts_in_probe "$n"); then ok "$n: no migration snapshot, key or private dir after rollback"; else
        fail "$n: left after rollback: $left"
    fi
done
if on cn1 "test -e $ROOTDIR/discard-me.bin"; then
    fail "rollback without --keep-changes carried a file written on the target back"
else ok "the file written on the target after the switch was not carried back"; fi
check "files written between the syncs are still on cn1" on cn1 "test -s $ROOTDIR/ondemand-2.bin -a -s $ROOTDIR/ondemand-3.bin"
zm --json list
check "no active migration after rollback" test "$(zm_json 'len(d)')" = 0
zm --json list --all
check "the rolled-back migration is archived in phase rollback" \
    test "$(zm_json '[(m["phase"], m["state"]) for m in d if m["vm_uuid"] == "'"$WEB"'"]')" = '[["rollback", "successful"]]'
if ips=$(ips_never_free "$WEB"); then ok "IPs never free through switch and rollback"; else fail "IP history: $ips"; fi

# --- second migration, rollback --keep-changes ----------------------------------------------
zm_ok "begin -n cn2 web01 (second migration)" begin -n cn2 "$WEB" || mt_die "second begin"
zm_ok "sync" sync "$WEB" || mt_die "second sync"
zm_ok "switch" --json switch "$WEB" || mt_die "second switch"
note "second switch: downtime $(zm_json 'd["switch"]["downtime_ms"]') ms"
on cn2 "printf 'kept %s\n' \$(date +%s%N) > $ROOTDIR/kept-marker.txt && head -c 131072 /dev/urandom > $ROOTDIR/kept.bin && sync"
sleep 2 # let the writer on cn2 add records the rollback must carry back
if ! { probe cn2 "$WEB" sum writer; }; then fail "probe cn2 before rollback"; fi
tsize=$(pj cn2 'd["writer"]["size"]')
tsha=$(pj cn2 'd["writer"]["sha"]')
tlast=$(pj cn2 'd["writer"]["last"]')
marker=$(on cn2 "sha256sum $ROOTDIR/kept-marker.txt $ROOTDIR/kept.bin" | awk '{print $1}' | tr '\n' ' ')
mt_watch_start "$WEB"
zm --json rollback --keep-changes "$WEB"
both=$(mt_watch_stop)
if ((ZM_RC == 0)); then
    ok "rollback --keep-changes: sent $(zm_json 'd["rollback"]["bytes"]') bytes back (${ZM_SECS} s)"
    check "--json says kept_changes with bytes > 128 KiB" \
        test "$(zm_json 'd["rollback"]["kept_changes"] and d["rollback"]["bytes"] > 131072')" = true
else
    fail "rollback --keep-changes: rc $ZM_RC"
    zm_show
fi
check "never two copies running during rollback --keep-changes ($both overlaps)" test "$both" = 0
got=$(on cn1 "sha256sum $ROOTDIR/kept-marker.txt $ROOTDIR/kept.bin" 2>/dev/null | awk '{print $1}' | tr '\n' ' ' || true)
check "the marker files written on the target are on cn1, identical" test "$got" = "$marker"
if ! { probe cn1 "$WEB" writer "prefix=$tsize" && probe cn2 "$WEB"; }; then fail "probe after rollback --keep-changes"; fi
check "cn1's writer file starts with the target's records up to seq $tlast (byte for byte)" \
    test "$(pj cn1 'd["writer"].get("prefix_sha")')" = "$tsha"
check "cn1 runs web01, writer intact, VMAPI on cn1" \
    test "$(pj cn1 'd["vm"]["state"], d["writer"]["verify_rc"]') $(vmapi "$WEB" 'd["server_uuid"]')" = "[\"running\", 0] $CN1"
check "cn2: instance and datasets gone" test "$(pj cn2 'd["vm"], sorted(d["datasets"])')" = '[null, []]'
for n in cn1 cn2; do
    if left=$(no_artefacts_in_probe "$n"); then ok "$n: nothing left after rollback --keep-changes"; else
        fail "$n: left after rollback --keep-changes: $left"
    fi
done

# --- abort after a sync (min01, -n cn2) -----------------------------------------------------
if ! { probe cn1 "$MIN" sum; }; then fail "probe min01"; fi
min_before=$(pj cn1 'd["sums"], d["vm"]["state"], d["vm"].get("indestructible_zoneroot"), sorted(d["snapshots"])')
zm_ok "begin -n cn2 min01" begin -n cn2 "$MIN" || true
zm_ok "sync min01" sync "$MIN" || true
probe cn2 "$MIN" || true
check "cn2 received min01's datasets" test "$(pj cn2 "'zones/$MIN' in d['datasets']")" = true
zm_ok "abort min01" abort "$MIN" || true
if ! { probe cn1 "$MIN" sum && probe cn2 "$MIN"; }; then fail "probe after abort"; fi
check "cn2: no zone and no dataset of min01 left" test "$(pj cn2 'd["vm"], sorted(d["datasets"])')" = '[null, []]'
check "cn1: min01 untouched (same sums, running, indestructible, same snapshots)" \
    test "$(pj cn1 'd["sums"], d["vm"]["state"], d["vm"].get("indestructible_zoneroot"), sorted(d["snapshots"])')" = "$min_before"
check "cn1: min01 visible, autoboot on" test "$(pj cn1 'bool(d["vm"].get("do_not_inventory")), d["vm"]["autoboot"]')" = '[false, true]'
for n in cn1 cn2; do
    if left=$(no_artefacts_in_probe "$n"); then ok "$n: no migration snapshot, key or private dir after abort"; else
        fail "$n: left after abort: $left"
    fi
done
check "VMAPI: min01 on cn1, running" test "$(vmapi "$MIN" 'd["server_uuid"] + " " + d["state"]')" = "$CN1 running"
zm --json list
check "no active migration left" test "$(zm_json 'len(d)')" = 0

note "syncs: 1: ${BYTES[1]} B/${MS[1]} ms, 2: ${BYTES[2]} B/${MS[2]} ms, 3: ${BYTES[3]} B/${MS[3]} ms"
mt_finish
