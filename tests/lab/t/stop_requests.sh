#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Lab test (issue 14, "Stop, pause and abort from another shell"), on nodes of the smartos
# profile: a second zmigrate process stops the one that is syncing, through the state store.
#  1. pause while a sync runs (throttled link, the receive running on cn2): the sync exits 130
#     within 5 s saying who stopped it, the migration is sync/paused, nothing of the data path
#     is left, web01 never stopped; the next sync goes on and the data is identical.
#  2. abort while a sync runs: the sync stops within 5 s, the abort completes in the same
#     command, the target copy is gone, web01 still runs on cn1 and nothing is left.
#  3. pause while `migrate` runs its syncs: migrate exits 130 before any switch (web01 never
#     stopped); a second `migrate` goes on and switches, with the data proven.
#  4. abort is refused while a switch runs, naming it; the switch completes untouched.
#  5. `sync --every` hands over to `switch` from another shell: a waiting loop ends (exit 0) when
#     the switch starts; a loop whose sync is running stops that sync at once for the switch,
#     which completes; web01 runs on cn2 with its data.
# Exit 0 pass, 1 fail, 125 skip (not root, no /dev/fuse, no netns, no tc, no nsenter).
set -euo pipefail
# shellcheck source=lib_migrate.sh
source "$(dirname "$(readlink -f "$0")")/lib_migrate.sh"

if ((EUID == 0)); then
    for t in tc nsenter; do
        command -v "$t" >/dev/null || { echo "SKIP: no $t"; exit 125; }
    done
fi

export LAB_PROFILE=smartos
mt_setup zmt-stop 10.96.20
# shellcheck source=lib_faults.sh
source "$MT_T_DIR/lib_faults.sh"
trap 'ft_restore; mt_exited $?' EXIT
FT_SRC=cn1 FT_DST=cn2

# stopped_by LABEL KIND T0: the background zmigrate exits 130 within 5 s of T0 (when the second
# command started) with one error line naming `zmigrate KIND`.
stopped_by() {
    local label=$1 kind=$2 t0=$3 took
    if bg_wait 30; then
        took=$(since "$t0")
        if ((ZRC == 130)) && grep -q "^zmigrate: error: .*stopped by \"zmigrate $kind\" from another shell" "$MT_WORK/bg.err"; then
            ok "$label: the running command exited 130 $took s after $kind started: $(tail -n 1 "$MT_WORK/bg.err")"
        else
            fail "$label: the running command exited $ZRC, want 130 naming zmigrate $kind"
            bg_show
        fi
        check "$label: it stopped within 5 s ($took s)" awk -v t="$took" 'BEGIN { exit !(t < 5) }'
    else
        fail "$label: the running command still runs 30 s after $kind"
        bg_reap
    fi
}

state_is() { # LABEL WANT: the migration is WANT (phase/state)
    local st
    st=$(mig_field "$WEB" '"%s/%s" % (d["phase"], d["state"])') || st="get failed"
    check "$1: the migration is $st (want $2)" test "$st" = "$2"
}

# --- 1. pause while a sync runs ---------------------------------------------------------------
zm_ok "begin -n cn2 web01" begin -n cn2 "$WEB" || mt_die "begin"
MIG=$(mig_id "$WEB")
label="pause mid-sync"
note "--- $label"
if start_long_sync "$label" 1; then
    src_watch_start cn1
    t0=$(now)
    zm pause "$WEB"
    if ((ZM_RC == 0)) && grep -q "Migration paused: the sync (pid $ZPID) stopped" "$ZM_OUT"; then
        ok "$label: zmigrate pause returned in $ZM_SECS s: $(head -n 3 "$ZM_OUT" | tr '\n' ' ')"
    else
        fail "$label: zmigrate pause exited $ZM_RC"
        zm_show
    fi
    stopped_by "$label" pause "$t0"
    state_is "$label" sync/paused
    nothing_left "$label"
    stops=$(src_watch_stop)
    check "$label: web01 never stopped on cn1 ($stops polls saw it stopped)" test "$stops" = 0
    unthrottle cn2
    zm_ok "$label: the next sync goes on and completes" sync "$WEB" &&
        sums_equal "$label" cn1 cn2
fi

# --- 2. abort while a sync runs ---------------------------------------------------------------
label="abort mid-sync"
note "--- $label"
if start_long_sync "$label" 2; then
    t0=$(now)
    zm abort "$WEB"
    if ((ZM_RC == 0)) && grep -q "aborted" "$ZM_OUT"; then
        ok "$label: zmigrate abort stopped the sync and aborted in $ZM_SECS s"
    else
        fail "$label: zmigrate abort exited $ZM_RC"
        zm_show
    fi
    stopped_by "$label" abort "$t0"
    st=$(mig_field "$WEB" '"%s/%s archived=%s" % (d["phase"], d["state"], d["archived"])') || st="get failed"
    check "$label: the migration ended as an abort ($st)" test "$st" = "abort/successful archived=True"
    if on cn2 "zfs list -H -o name zones/$WEB" >/dev/null 2>&1; then
        fail "$label: zones/$WEB is still on cn2 after the abort"
    else
        ok "$label: the target copy is gone from cn2"
    fi
    check "$label: web01 still runs on cn1" running_now cn1 "$WEB"
    nothing_left "$label"
fi

# --- 3. pause while migrate runs ----------------------------------------------------------------
label="pause mid-migrate"
note "--- $label"
fill cn1 3
throttle cn2
src_watch_start cn1
bg_zm migrate -n cn2 "$WEB"
if wait_until 90 recv_running; then
    MIG=$(mig_id "$WEB")
    t0=$(now)
    zm pause "$WEB"
    check "$label: zmigrate pause exited 0 ($ZM_RC)" test "$ZM_RC" = 0
    stopped_by "$label" pause "$t0"
    state_is "$label" sync/paused
    stops=$(src_watch_stop)
    check "$label: web01 never stopped on cn1 ($stops polls saw it stopped)" test "$stops" = 0
    nothing_left "$label"
    unthrottle cn2
    if zm_ok "$label: a second migrate goes on and switches" migrate "$WEB"; then
        state_is "$label" switch/successful
        check "$label: web01 runs on cn2" running_now cn2 "$WEB"
        sums_equal "$label" cn1 cn2
    fi
else
    fail "$label: cn2 never received zones/$WEB"
    bg_show
    bg_reap
fi
unthrottle cn2

# --- 4. abort refused while a switch runs -------------------------------------------------------
label="abort during a switch"
note "--- $label"
zm_ok "$label: rollback to cn1" rollback --yes "$WEB" || mt_die "rollback"
zm_ok "$label: begin again" begin -n cn2 "$WEB" || mt_die "begin"
zm_ok "$label: sync" sync "$WEB" || mt_die "sync"
MIG=$(mig_id "$WEB")
fill cn1 4 2
throttle cn2
bg_zm switch "$WEB"
if wait_until 60 recv_running; then
    zm abort "$WEB"
    if err_line_ok 4 && grep -q "busy: 'switch' is running it" "$ZM_ERR"; then
        ok "$label: abort refused with exit 4, naming the switch: $(cat "$ZM_ERR")"
    else
        fail "$label: want exit 4 naming the running switch, got $ZM_RC"
        zm_show
    fi
    unthrottle cn2
    if bg_wait 120 && ((ZRC == 0)); then ok "$label: the switch completed untouched"; else
        fail "$label: the switch exited ${ZRC:-?}"
        bg_show
        bg_reap
    fi
    state_is "$label" switch/successful
else
    fail "$label: the switch never started its final send"
    bg_show
    bg_reap
fi

# --- 5. sync --every hands over to switch --------------------------------------------------------
syncs_done() { mig_field "$WEB" 'd["num_sync_phases"]'; }
at_least_syncs() { (($(syncs_done 2>/dev/null || echo 0) >= $1)); }
loop_ended() { # LABEL T0: the loop exits 0 within 5 s of T0, saying it handed over
    local label=$1 t0=$2 took
    if bg_wait 30; then
        took=$(since "$t0")
        if ((ZRC == 0)) && grep -Eq "Handed over to the switch|switched by another command" "$MT_WORK/bg.out"; then
            ok "$label: the loop ended with exit 0 $took s after the switch started: $(tail -n 1 "$MT_WORK/bg.out")"
        else
            fail "$label: the loop exited $ZRC"
            bg_show
            tail -n 3 "$MT_WORK/bg.out" | sed 's/^/#   /'
        fi
        check "$label: within 5 s ($took s)" awk -v t="$took" 'BEGIN { exit !(t < 5) }'
    else
        fail "$label: the loop still runs 30 s after the switch started"
        bg_reap
    fi
}
again_on_cn2() {
    zm_ok "$1: rollback to cn1" rollback --yes "$WEB" || mt_die "rollback"
    zm_ok "$1: begin again" begin -n cn2 "$WEB" || mt_die "begin"
    MIG=$(mig_id "$WEB")
}

label="sync --every, waiting"
note "--- $label"
again_on_cn2 "$label"
bg_zm sync --every 2s "$WEB"
if wait_until 60 at_least_syncs 2; then
    ok "$label: the loop has synced $(syncs_done) times"
    t0=$(now)
    zm switch "$WEB"
    if ((ZM_RC == 0)); then ok "$label: switch completed in $ZM_SECS s"; else fail "$label: switch exited $ZM_RC"; zm_show; fi
    loop_ended "$label" "$t0"
    state_is "$label" switch/successful
    check "$label: web01 runs on cn2" running_now cn2 "$WEB"
else
    fail "$label: the loop never completed two syncs"
    bg_show
    bg_reap
fi

label="sync --every, mid-sync"
note "--- $label"
again_on_cn2 "$label"
bg_zm sync --every 1s "$WEB"
if wait_until 60 at_least_syncs 1; then
    fill cn1 5
    throttle cn2
    if wait_until 60 recv_running; then
        t0=$(now)
        ("$ZM" switch "$WEB" >"$MT_WORK/sw.out" 2>"$MT_WORK/sw.err" </dev/null; echo $? >"$MT_WORK/sw.rc") &
        sw=$!
        loop_ended "$label" "$t0"
        check "$label: the loop's running sync was stopped for the switch (its phase run says so)" \
            test "$(mig_field "$WEB" 'any(r["phase"] == "sync" and r["state"] == "paused" and "stopped by \"zmigrate switch\"" in r.get("error", "") for r in d["progress_history"])')" = true
        unthrottle cn2
        wait "$sw" || true
        check "$label: the switch completed (exit $(cat "$MT_WORK/sw.rc"))" test "$(cat "$MT_WORK/sw.rc")" = 0
        state_is "$label" switch/successful
        check "$label: web01 runs on cn2" running_now cn2 "$WEB"
        verify_switched "$label" "$WEB" cn1 cn2 running
    else
        fail "$label: the loop's next sync never reached cn2"
        bg_show
        bg_reap
    fi
else
    fail "$label: the loop never completed a sync"
    bg_show
    bg_reap
fi
unthrottle cn2

mt_finish
