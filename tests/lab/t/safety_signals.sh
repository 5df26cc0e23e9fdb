#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Lab test: signals and a dropped link during a long transfer never leave the data path behind.
# cn2's veth is throttled (tbf 2 mbit) and web01 gets 8 MiB of fresh random data before each
# case, so its sync takes well over 20 s; `zmigrate sync web01` runs in the background until
# cn2 shows the `zfs recv` of web01's root running, then:
#  1. SIGINT: zmigrate exits 130 within 5 s of the signal; within 10 s no process of the
#     migration (zfs send, pv, the data-path ssh and its master) is left on cn1 and no
#     `zfs recv` or forced-command shell on cn2; no key line of the migration in cn2's
#     authorized_keys and no /var/run/zmigrate entry (or the ledger holds them live and
#     `zmigrate cleanup` removes them); the record is sync/failed; the next (unthrottled)
#     `zmigrate sync` completes and the data matches (zlab-sum on both nodes).
#  2. the same with SIGHUP (the operator's ssh session to the head node dropped) and SIGTERM.
#  3. two SIGINTs 0.2 s apart (an impatient Ctrl-C): still 130 and nothing left.
#  4. a dropped link: cn1's veth goes down until the source's data-path ssh gives up
#     (ServerAliveInterval 5 x 3), then up again: the sync fails within 60 s (no hang), and the
#     next sync ends any stale receiver of the migration before it starts a new one, completes,
#     and the data matches.
# Exit 0 pass, 1 fail, 125 skip (not root, no /dev/fuse, no netns, no tc).
set -euo pipefail
# shellcheck source=lib_migrate.sh
source "$(dirname "$(readlink -f "$0")")/lib_migrate.sh"

if ((EUID == 0)) && ! command -v tc >/dev/null; then
    echo "SKIP: no tc (iproute2) to throttle the link"
    exit 125
fi

mt_setup zmt-sig 10.96.13

# shellcheck source=lib_faults.sh
source "$MT_T_DIR/lib_faults.sh"
FT_SRC=cn1 FT_DST=cn2
V1=$(ft_veth cn1)
V2=$(ft_veth cn2)
{ ip link show dev "$V1" >/dev/null && ip link show dev "$V2" >/dev/null; } || mt_die "no veth $V1 / $V2"
# Never leave the lab throttled or cut off, whatever way the script ends.
trap 'ft_restore; mt_exited $?' EXIT

zm_begin_ok() {
    zm_ok "begin -n cn2 web01" begin -n cn2 "$WEB" || mt_die "begin"
    MIG=$(mig_id "$WEB")
    note "migration $MIG; throttling $V2 (cn2), link drop on $V1 (cn1)"
}

# signal_case LABEL N SIGNAL...: the signals (0.2 s apart) once cn2 receives.
signal_case() {
    local label=$1 n=$2 t0 s
    shift 2
    note "--- $label"
    start_long_sync "$label" "$n" || return 0
    t0=$(now)
    kill "-$1" "$ZPID" 2>/dev/null || true
    shift
    for s in "$@"; do
        sleep 0.2 # the spacing of a repeated Ctrl-C, not a wait for an event
        kill "-$s" "$ZPID" 2>/dev/null || true
    done
    if bg_wait 5; then
        if ((ZRC == 130)); then ok "$label: zmigrate exited 130 $(since "$t0") s after the signal"; else
            fail "$label: zmigrate exited $ZRC (want 130)"
            bg_show
        fi
    else
        fail "$label: zmigrate still runs 5 s after the signal"
        bg_reap
        note "$label: it exited $ZRC $(since "$t0") s after the signal"
        bg_show
    fi
    nothing_left "$label"
    resync_matches "$label"
}

zm_begin_ok

signal_case "SIGINT" 1 INT
signal_case "SIGHUP" 2 HUP
signal_case "SIGTERM" 3 TERM
signal_case "two SIGINTs 0.2 s apart" 4 INT INT

# --- 4. the link drops ------------------------------------------------------------------------
note "--- link drop"
label="link drop"
if start_long_sync "$label" 5; then
    link_down cn1
    t0=$(now)
    # The source's data-path ssh gives up after ServerAliveInterval 5 x ServerAliveCountMax 3.
    if wait_until 60 src_ssh_gone; then
        ok "$label: the source's data-path ssh gave up $(since "$t0") s after the link went down"
    else
        fail "$label: the source's data-path ssh still runs 60 s after the link went down"
    fi
    stale=$(node_procs cn2 "zfs recv .*zones/$WEB\$" | tr '\n' ';')
    note "$label: receiver on cn2 when the link comes back: ${stale:-none}"
    link_up cn1
    if ! bg_wait "$(awk -v t="$(since "$t0")" 'BEGIN { l = 60 - t; print (l < 1 ? 1 : l) }')"; then
        fail "$label: zmigrate sync still runs $(since "$t0") s after the link went down (hangs)"
        kill -KILL "$ZPID" 2>/dev/null || true
        bg_wait 5 || true
    elif ((ZRC != 0 && ZRC != 137)); then
        ok "$label: zmigrate sync failed (exit $ZRC) $(since "$t0") s after the link went down: $(tail -n 1 "$MT_WORK/bg.err")"
    else
        fail "$label: zmigrate sync exited $ZRC although its link dropped mid-stream"
    fi
    stale=$(dst_procs)
    note "$label: left on cn2 before the next sync: $(tr '\n' ';' <<<"${stale:-nothing}")"
    unthrottle cn2
    zm_ok "$label: the next sync completes" sync "$WEB" || true
    for p in $(cut -d' ' -f1 <<<"$stale"); do
        check "$label: the next sync ended the stale process $p on cn2" test ! -e "/proc/$p"
    done
    check "$label: no receiver or forced command of the migration left on cn2 after it ($(dst_procs | tr '\n' ';'))" test -z "$(dst_procs)"
    nothing_left "$label" parked
    sums_equal "$label" cn1 cn2
fi

mt_finish
