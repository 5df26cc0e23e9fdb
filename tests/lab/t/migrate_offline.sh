#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Lab test (issue 14, migrator.sh's modes): `migrate --offline`, on nodes of the smartos profile.
#  - web01 (running, a writer inside) cn1 -> cn2: the instance is stopped before the first byte
#    is sent (no zone of web01 runs anywhere while the copy goes), copied in one sync, started
#    on cn2; the printed downtime (stop to start on the target) covers the whole copy; the data
#    and the writer's file are identical up to the stop; never two copies running.
#  - lx01 (stopped) cn1 -> cn2: copied and switched, never started anywhere; "downtime: none".
# Exit 0 pass, 1 fail, 125 skip (not root, no /dev/fuse, no netns).
set -euo pipefail
# shellcheck source=lib_migrate.sh
source "$(dirname "$(readlink -f "$0")")/lib_migrate.sh"

export LAB_PROFILE=smartos
mt_setup zmt-off 10.96.21
# shellcheck source=lib_faults.sh
source "$MT_T_DIR/lib_faults.sh" # recv_running: the receive in cn2's namespace only
FT_SRC=cn1 FT_DST=cn2

# --- web01: running ---------------------------------------------------------------------------
label="offline web01"
running_now cn1 "$WEB" || mt_die "web01 does not run on cn1"
: >"$MT_WORK/first-recv"
(
    # The moment cn2 first receives web01, and whether web01 still ran on cn1 then.
    end=$((SECONDS + 120))
    while ((SECONDS < end)); do
        if recv_running; then
            if running_now cn1 "$WEB"; then echo running; else echo stopped; fi >"$MT_WORK/first-recv"
            break
        fi
        sleep 0.02
    done
) &
recv_watch=$!
zm --json migrate --offline -n cn2 "$WEB"
wait "$recv_watch" 2>/dev/null || true
if ((ZM_RC == 0)); then
    ok "$label: migrate --offline -n cn2 in $ZM_SECS s"
else
    fail "$label: migrate --offline exited $ZM_RC"
    zm_show
fi
check "$label: when cn2 first received web01 it was already stopped on cn1 ($(cat "$MT_WORK/first-recv"))" \
    test "$(cat "$MT_WORK/first-recv")" = stopped
check "$label: one sync, the whole copy" test "$(zm_json 'len(d["syncs"])')" = 1
down=$(zm_json 'd["offline_downtime_ms"]')
copy=$(zm_json 'd["syncs"][0]["duration_ms"]')
check "$label: the offline downtime ($down ms) covers the copy ($copy ms) and the switch" \
    python3 -c "import sys; sys.exit(not (int('$down') >= int('$copy') + int('$(zm_json 'd["switch"]["downtime_ms"]')')))"
check "$label: the switch knows it was running" test "$(zm_json 'd["switch"]["was_running"]')" = true
verify_switched "$label" "$WEB" cn1 cn2 running

# --- lx01: stopped ----------------------------------------------------------------------------
label="offline lx01"
mt_watch_start "$LX" 0
zm migrate --offline -n cn2 "$LX"
if ((ZM_RC == 0)) && grep -q "downtime (offline): none, the instance was not running" "$ZM_OUT"; then
    ok "$label: migrate --offline -n cn2 in $ZM_SECS s: $(grep 'downtime (offline)' "$ZM_OUT")"
else
    fail "$label: migrate --offline exited $ZM_RC without the 'downtime: none' line"
    zm_show
fi
n=$(mt_watch_stop)
check "$label: never started anywhere ($n moments with a copy running)" test "$n" = 0
verify_switched "$label" "$LX" cn1 cn2 stopped

mt_finish
