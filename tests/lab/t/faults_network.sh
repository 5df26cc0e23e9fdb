#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Lab test (issue 10, "The fault suite"): the network and service faults an operator meets,
# on nodes of the smartos profile (no sshd keep-alives, ksh93 as /bin/sh; CONTRACT.md). For
# each: the instance is never left stopped without a way forward, nothing of the migration is
# left behind, and the next command resumes and ends with the data proven (zlab-sum).
#  1. a short link drop mid-sync (cn1's link down 3 s while cn2 receives): the transfer rides
#     it out (TCP retransmits; the data path's ServerAlive allows 15 s) and the sync completes.
#  2. sshd killed on the target mid-sync (listener and sessions, SIGKILL): the sync fails
#     within 60 s (no hang), the source's pipeline ends; with sshd back the next sync removes
#     what the dead node kept (key line, private dir) and completes.
#  3. sshd down on the target when the switch starts: refused before anything stops (web01
#     never stops on cn1, the record stays in sync); with sshd back the switch completes.
#  4. the source unreachable when the switch starts (its link down): refused within the
#     connect timeout, web01 never stops; with the link back the switch completes.
#  5. VMAPI failing inside the downtime window: one 503 on the update is retried and the switch
#     completes; an outage of every update (503 until cleared) never keeps the instance down:
#     it runs on the target when the switch ends with exit 5, and the rerun finishes VMAPI's
#     part; an update applied whose answer is lost (connection dropped after it) is retried.
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
mt_setup zmt-fnet 10.96.15
# shellcheck source=lib_faults.sh
source "$MT_T_DIR/lib_faults.sh"
trap 'ft_restore; mt_exited $?' EXIT

# refused_untouched LABEL SRC WANT_RC: the last command exited WANT_RC with one error line, the
# source never stopped (src_watch), the record is still sync/paused or sync/failed.
refused_untouched() {
    local label=$1 src=$2 want=$3 stops st
    stops=$(src_watch_stop)
    if err_line_ok "$want"; then ok "$label: refused with exit $want in ${ZM_SECS} s: $(cat "$ZM_ERR")"; else
        fail "$label: want exit $want and one error line, got exit $ZM_RC"
        zm_show
    fi
    check "$label: web01 never stopped on $src ($stops polls saw it stopped)" test "$stops" = 0
    st=$(mig_field "$WEB" '"%s/%s" % (d["phase"], d["state"])') || st="get failed"
    check "$label: the migration is still in sync ($st)" test "${st%%/*}" = sync
}

# --- 1. a short link drop mid-sync --------------------------------------------------------------
FT_SRC=cn1 FT_DST=cn2
zm_ok "begin -n cn2 web01" begin -n cn2 "$WEB" || mt_die "begin"
MIG=$(mig_id "$WEB")
label="short link drop"
note "--- $label"
if start_long_sync "$label" 1; then
    link_down cn1
    sleep 3 # the length of the drop is the fault under test
    link_up cn1
    unthrottle cn2
    if bg_wait 120; then
        if ((ZRC == 0)); then ok "$label: the sync rode out a 3 s drop and completed"; else
            fail "$label: the sync exited $ZRC after a 3 s link drop"
            bg_show
        fi
    else
        fail "$label: the sync still runs 120 s after the drop"
        bg_reap
    fi
    nothing_left "$label" parked
    sums_equal "$label" cn1 cn2
fi

# --- 2. sshd killed on the target mid-sync ----------------------------------------------------
label="sshd killed on the target mid-sync"
note "--- $label"
if start_long_sync "$label" 2; then
    t0=$(now)
    sshd_kill cn2 || fail "$label: sshd of cn2 still alive after SIGKILL"
    if bg_wait 60; then
        if ((ZRC != 0 && ZRC != 137)); then
            ok "$label: the sync failed (exit $ZRC) $(since "$t0") s after: $(tail -n 1 "$MT_WORK/bg.err")"
        else
            fail "$label: the sync exited $ZRC although the target's sshd died mid-stream"
        fi
        check "$label: one error line on stderr" test "$(grep -c . "$MT_WORK/bg.err")/$(grep -c '^zmigrate: error: ' "$MT_WORK/bg.err")" = 1/1
    else
        fail "$label: the sync still runs 60 s after the target's sshd died (hangs)"
        bg_reap
    fi
    if wait_until 15 test -z "$(src_procs)"; then ok "$label: the source's send pipeline ended"; else
        fail "$label: left on cn1: $(src_procs | tr '\n' ';')"
    fi
    unthrottle cn2
    sshd_start cn2 || mt_die "sshd does not start again on cn2"
    resync_matches "$label"
    nothing_left "$label" parked
fi

# --- 3. sshd down on the target when the switch starts ------------------------------------------
label="target sshd down at switch"
note "--- $label"
sshd_kill cn2 || fail "$label: sshd of cn2 still alive after SIGKILL"
src_watch_start cn1
zm switch "$WEB"
refused_untouched "$label" cn1 6
sshd_start cn2 || mt_die "sshd does not start again on cn2"
zm_ok "$label: the switch completes with sshd back" switch "$WEB" && verify_switched "$label" "$WEB" cn1 cn2
finalize_clean "$label" "$WEB" cn1 cn2

# --- 4. the source unreachable when the switch starts -----------------------------------------
FT_SRC=cn2 FT_DST=cn1
label="source unreachable at switch"
note "--- $label"
zm_ok "begin -n cn1 web01" begin -n cn1 "$WEB" || mt_die "begin"
MIG=$(mig_id "$WEB")
zm_ok "$label: sync" sync "$WEB" || mt_die "sync"
src_watch_start cn2
link_down cn2
zm switch "$WEB"
link_up cn2
refused_untouched "$label" cn2 6
zm_ok "$label: the switch completes with the link back" switch "$WEB" && verify_switched "$label" "$WEB" cn2 cn1
finalize_clean "$label" "$WEB" cn2 cn1

# --- 5. VMAPI failing inside the downtime window ----------------------------------------------
# The one VMAPI write of a switch is its PUT /vms/<uuid> inside the window (update_vmapi).
put_fault() { vmapi_fault "{\"service\": \"vmapi\", \"method\": \"PUT\", \"path_regex\": \"^/vms/$WEB\", $1}"; }

FT_SRC=cn1 FT_DST=cn2
label="one VMAPI 503 in the window"
note "--- $label"
zm_ok "begin -n cn2 web01" begin -n cn2 "$WEB" || mt_die "begin"
zm_ok "$label: sync" sync "$WEB" || mt_die "sync"
f=$(put_fault '"mode": "503", "count": 1')
zm_ok "$label: the switch completes" switch "$WEB" && verify_switched "$label" "$WEB" cn1 cn2
check "$label: the fault was hit ($(vmapi_fault_hits "$f") time(s))" test "$(vmapi_fault_hits "$f")" = 1
vmapi_faults_clear
finalize_clean "$label" "$WEB" cn1 cn2

FT_SRC=cn2 FT_DST=cn1
label="VMAPI updates failing in the window"
note "--- $label"
zm_ok "begin -n cn1 web01" begin -n cn1 "$WEB" || mt_die "begin"
zm_ok "$label: sync" sync "$WEB" || mt_die "sync"
f=$(put_fault '"mode": "503", "count": -1')
zm switch "$WEB"
if err_line_ok 5; then ok "$label: the switch ends with exit 5 in ${ZM_SECS} s: $(cat "$ZM_ERR")"; else
    fail "$label: want exit 5 and one error line, got exit $ZM_RC"
    zm_show
fi
check "$label: the error tells the operator to rerun the switch" grep -q 'rerun' "$ZM_ERR"
probe cn1 "$WEB" || true
check "$label: the instance runs on the target although VMAPI could not be updated" \
    test "$(pj cn1 'd["running"], bool((d["vm"] or {}).get("do_not_inventory"))')" = '[true, false]'
check "$label: only one copy runs (cn2 does not)" test "$(running_now cn2 "$WEB" && echo yes || echo no)" = no
vmapi_faults_clear
zm_ok "$label: the rerun finishes the switch" switch "$WEB" && verify_switched "$label" "$WEB" cn2 cn1
finalize_clean "$label" "$WEB" cn2 cn1

FT_SRC=cn1 FT_DST=cn2
label="VMAPI update applied, answer lost"
note "--- $label"
zm_ok "begin -n cn2 web01" begin -n cn2 "$WEB" || mt_die "begin"
zm_ok "$label: sync" sync "$WEB" || mt_die "sync"
f=$(put_fault '"mode": "drop", "after": true, "count": 1')
zm_ok "$label: the switch completes" switch "$WEB" && verify_switched "$label" "$WEB" cn1 cn2
check "$label: the fault was hit ($(vmapi_fault_hits "$f") time(s))" test "$(vmapi_fault_hits "$f")" = 1
vmapi_faults_clear
finalize_clean "$label" "$WEB" cn1 cn2

mt_finish
