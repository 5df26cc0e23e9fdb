#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Lab test (issue 3, "Done when" 5): kill -9 of zmigrate at journal steps of sync and switch,
# through the test-only fault hook (ZMIGRATE_FAULT_STEP=<step> makes zmigrate SIGKILL itself
# just before that step). After each crash:
#  - never both copies running: checked right after the crash (vmadm on both nodes) and by a
#    50 ms watcher of the nodes' run state over the crash and the rerun
#  - rerunning the same command converges (exit 0)
#  - after the rerun no ephemeral key survives (no zmigrate line in authorized_keys, no
#    /var/run/zmigrate/<id>) on either node
#  - sync: one migration snapshot per dataset, same GUID on both sides
#  - switch: data intact (zlab-sum, writer records continue), VMAPI on the target
# web01 moves back and forth between cn1 and cn2, finalized after each switch:
#   cn1->cn2: sync.send, sync.prune, sync.open_data_path, switch.stop_source
#   cn2->cn1: switch.final_sync.send;  cn1->cn2: switch.hide_source
#   cn2->cn1: switch.promote_target;   cn1->cn2: `migrate` killed at switch.start_target;
#   then three `migrate` runs killed -9 at random moments (seeded; the seed is printed)
# Exit 0 pass, 1 fail, 125 skip (not root, no /dev/fuse, no netns).
set -euo pipefail
# shellcheck source=lib_migrate.sh
source "$(dirname "$(readlink -f "$0")")/lib_migrate.sh"

mt_setup zmt-crash 10.95.4

# crash_and_rerun SRC DST STEP ARGS...: zmigrate ARGS killed at STEP, checks, then rerun.
crash_and_rerun() {
    local src=$1 dst=$2 step=$3 label s_src s_dst left
    shift 3
    label="kill -9 at $step ($*)"
    mt_watch_start "$WEB"
    export ZMIGRATE_FAULT_STEP=$step
    zm "$@" "$WEB"
    unset ZMIGRATE_FAULT_STEP
    if ((ZM_RC == 137)); then ok "$label: zmigrate died by SIGKILL (exit 137)"; else
        fail "$label: expected death by SIGKILL (137), got exit $ZM_RC: the step was not reached"
        zm_show
    fi
    local running=0
    running_now "$src" "$WEB" && running=$((running + 1))
    running_now "$dst" "$WEB" && running=$((running + 1))
    s_src=$(vm_state "$src" "$WEB")
    s_dst=$(vm_state "$dst" "$WEB")
    if ((running <= 1)) && ! [[ $s_src == running && $s_dst == running ]]; then
        ok "$label: right after the crash not both running ($src $s_src, $dst $s_dst)"
    else fail "$label: both copies running after the crash ($src $s_src, $dst $s_dst)"; fi
    probe "$dst" "$WEB" || true
    note "left by the crash on $dst: $(pj "$dst" 'len(d["keys"])') key line(s), private dirs $(pj "$dst" 'd["rundir"]')"
    zm "$@" "$WEB"
    if ((ZM_RC == 0)); then ok "$label: rerun converges (exit 0, ${ZM_SECS} s)"; else
        fail "$label: rerun exited $ZM_RC"
        zm_show
    fi
    local both
    both=$(mt_watch_stop)
    check "$label: never two copies running over crash and rerun ($both overlapping moments)" test "$both" = 0
    if [[ $1 == sync ]]; then
        # A sync that succeeded parks its data path for the migration's next command.
        if left=$(keys_parked "$src" "$dst" "$(mig_id "$WEB")"); then ok "$label: $left is left on $src and $dst"; else
            fail "$label: after the rerun: $left"
        fi
    elif left=$(keys_clean "$src" "$dst"); then ok "$label: no ephemeral key or private dir left on $src and $dst"; else
        fail "$label: after the rerun: $left"
    fi
}

# snaps_consistent SRC DST: one migration snapshot per dataset, the same GUIDs on both nodes.
snaps_consistent() {
    probe "$1" "$WEB" && probe "$2" "$WEB" || return 1
    local s d
    s=$(pj "$1" 'sorted((k, v) for k, v in d["snapshots"].items() if "@zmigrate-" in k)')
    d=$(pj "$2" 'sorted((k, v) for k, v in d["snapshots"].items() if "@zmigrate-" in k)')
    [[ $s == "$d" ]] || { echo "$1 $s / $2 $d"; return 1; }
    [[ $(pj "$1" 'len(set(k.split("@")[0] for k in d["snapshots"] if "@zmigrate-" in k)) == len([k for k in d["snapshots"] if "@zmigrate-" in k]) >= 2') == true ]] ||
        { echo "not one snapshot per dataset: $s"; return 1; }
}

# round SRC DST STEP: begin, sync, switch killed at STEP, rerun, verify, finalize.
round() {
    local src=$1 dst=$2 step=$3
    note "--- $src -> $dst, crash at $step"
    zm_ok "begin -n $dst" begin -n "$dst" "$WEB" || mt_die "begin"
    zm_ok "sync" sync "$WEB" || mt_die "sync"
    crash_and_rerun "$src" "$dst" "$step" switch
    verify_switched "$step" "$WEB" "$src" "$dst"
    finalize_clean "$step" "$WEB" "$src" "$dst"
}

# --- cn1 -> cn2: crashes in sync, then in switch before the source is stopped -----------------
note "--- cn1 -> cn2, crashes in sync"
zm_ok "begin -n cn2" begin -n cn2 "$WEB" || mt_die "begin"
for step in sync.send sync.prune sync.open_data_path; do
    crash_and_rerun cn1 cn2 "$step" sync
    if why=$(snaps_consistent cn1 cn2); then ok "kill -9 at $step: one migration snapshot per dataset, same GUID on both"; else
        fail "kill -9 at $step: snapshots after the rerun: $why"
    fi
done
check "the migration counts 3 completed syncs" \
    test "$(mig_field "$WEB" 'd["phase"], d["state"], d["num_sync_phases"]')" = '["sync", "paused", 3]'
crash_and_rerun cn1 cn2 switch.stop_source switch
verify_switched switch.stop_source "$WEB" cn1 cn2
finalize_clean switch.stop_source "$WEB" cn1 cn2

# --- crashes later in the switch ------------------------------------------------------------
round cn2 cn1 switch.final_sync.send
round cn1 cn2 switch.hide_source
round cn2 cn1 switch.promote_target

note "--- cn1 -> cn2, migrate killed at switch.start_target"
crash_and_rerun cn1 cn2 switch.start_target migrate -n cn2
verify_switched "migrate/switch.start_target" "$WEB" cn1 cn2
finalize_clean "migrate/switch.start_target" "$WEB" cn1 cn2

# random_kill SRC DST SEED: `migrate -n DST` killed -9 at a moment a seeded generator picks
# (within the few seconds a migration of web01 takes here; any moment is a valid test, so
# this is no wait for an event), then rerun to the end: never two copies running, the rerun
# converges, no key or private dir left, data intact, finalize clean.
random_kill() {
    local src=$1 dst=$2 seed=$3 delay pid label left both
    delay=$(awk -v s="$seed" 'BEGIN { srand(s); printf "%.2f", 0.2 + rand() * 3 }')
    label="migrate killed -9 after ${delay} s (seed $seed)"
    note "--- $src -> $dst, $label"
    mt_watch_start "$WEB"
    (exec "$ZM" migrate -n "$dst" "$WEB" >>"$MT_WORK/zm.log" 2>&1 </dev/null) &
    pid=$!
    sleep "$delay"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    zm migrate -n "$dst" "$WEB"
    if ((ZM_RC == 0)); then ok "$label: rerun converges (exit 0, ${ZM_SECS} s)"; else
        fail "$label: rerun exited $ZM_RC"
        zm_show
    fi
    both=$(mt_watch_stop)
    check "$label: never two copies running over kill and rerun ($both overlapping moments)" test "$both" = 0
    if left=$(keys_clean "$src" "$dst"); then ok "$label: no ephemeral key or private dir left on $src and $dst"; else
        fail "$label: after the rerun: $left"
    fi
    verify_switched "$label" "$WEB" "$src" "$dst"
    finalize_clean "$label" "$WEB" "$src" "$dst"
}
seed=${MT_CRASH_SEED:-20261202}
note "random kills: seed $seed (MT_CRASH_SEED=$seed reruns the same moments)"
random_kill cn2 cn1 "$seed"
random_kill cn1 cn2 "$((seed + 1))"
random_kill cn2 cn1 "$((seed + 2))"

if hist=$(ips_never_free "$WEB"); then ok "web01's IPs were never free through all of it"; else fail "IP history: $hist"; fi
zm --json list
check "no active migration left" test "$(zm_json 'len(d)')" = 0

mt_finish
