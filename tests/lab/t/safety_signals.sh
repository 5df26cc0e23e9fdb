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

# shellcheck disable=SC1091
source "$MT_ROOT/tests/lab/lib/common.sh"
V1=$(lab_node_veth 1)
V2=$(lab_node_veth 2)
{ ip link show dev "$V1" >/dev/null && ip link show dev "$V2" >/dev/null; } || mt_die "no veth $V1 / $V2"
ROOTDIR=/zones/$WEB/root

throttle() { tc qdisc replace dev "$V2" root tbf rate 2mbit burst 32kb latency 400ms; }
unthrottle() { tc qdisc del dev "$V2" root 2>/dev/null || true; }
link_up() { ip link set dev "$V1" up; }
# Never leave the lab throttled or cut off, whatever way the script ends.
trap 'unthrottle; link_up 2>/dev/null || true; mt_exited $?' EXIT

# node_procs NODE ERE: "pid argv" of each process in NODE's network namespace whose command line
# matches ERE (pgrep -f sees every lab's processes: the pid namespace is shared).
node_procs() {
    local ns p
    ns=$(readlink "/proc/$(<"$LAB_DIR/nodes/$1/init.pid")/ns/net")
    for p in $(pgrep -f -- "$2" || true); do
        [[ $(readlink "/proc/$p/ns/net" 2>/dev/null) == "$ns" ]] || continue
        printf '%s %s\n' "$p" "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"
    done
}
# What the migration runs: on the source its send pipeline (the snapshot names and the path dir
# hold the migration id), the data-path ssh and master; on the target the forced-command shell
# (path dir) and web01's receivers.
src_procs() { node_procs cn1 "$MIG|zfs send .*zones/$WEB"; }
dst_procs() { node_procs cn2 "$MIG|zfs recv .*zones/$WEB(/|\$)"; }
recv_running() { [[ -n $(node_procs cn2 "zfs recv .*zones/$WEB\$") ]]; }
no_procs() { [[ -z $(src_procs) && -z $(dst_procs) ]]; }
src_ssh_gone() { [[ -z $(node_procs cn1 "^ssh -i /var/run/zmigrate/$MIG.* recv ") ]]; }

zm_begin_ok() {
    zm_ok "begin -n cn2 web01" begin -n cn2 "$WEB" || mt_die "begin"
    MIG=$(mig_id "$WEB")
    note "migration $MIG; throttling $V2 (cn2), link drop on $V1 (cn1)"
}

# fill N: 8 MiB of fresh random data in web01's root (a sync of it takes ~35 s at 2 mbit).
fill() { on cn1 "head -c $((8 << 20)) /dev/urandom > $ROOTDIR/var/tmp/zsig-$1.bin && sync" || mt_die "filling web01"; }

# bg_sync: `zmigrate sync web01` in the background (ZPID), not through `timeout`, so that the
# signals reach zmigrate itself; a watchdog SIGKILLs it after 180 s so a hang cannot stall us.
bg_sync() {
    "$ZM" sync "$WEB" >"$MT_WORK/bg.out" 2>"$MT_WORK/bg.err" </dev/null &
    ZPID=$!
    (
        sleep 180
        kill -KILL "$ZPID" 2>/dev/null
    ) >/dev/null 2>&1 &
    ZDOG=$!
}
# bg_wait SECS: waits up to SECS for zmigrate to exit; sets ZRC (or returns 1 while it runs).
bg_wait() {
    local end
    end=$(awk -v a="$(date +%s.%N)" -v s="$1" 'BEGIN { printf "%.3f", a + s }')
    while kill -0 "$ZPID" 2>/dev/null; do
        if awk -v a="$end" -v b="$(date +%s.%N)" 'BEGIN { exit !(b > a) }'; then return 1; fi
        sleep 0.05
    done
    ZRC=0
    wait "$ZPID" || ZRC=$?
    kill "$ZDOG" 2>/dev/null || true
    wait "$ZDOG" 2>/dev/null || true
    {
        printf '\n$ zmigrate sync %s (background)   -> rc %s\n' "$WEB" "$ZRC"
        cat "$MT_WORK/bg.out"
        sed 's/^/stderr: /' "$MT_WORK/bg.err"
    } >>"$MT_WORK/zm.log"
    return 0
}
bg_show() { tail -n 8 "$MT_WORK/bg.err" | sed 's/^/#   /'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# start_long_sync LABEL N: fills, throttles, starts the sync and waits (deadline 90 s) until cn2
# receives web01's root; false (after a FAIL) when it never did.
start_long_sync() {
    local label=$1
    fill "$2"
    throttle
    bg_sync
    local t0 end
    t0=$(now)
    end=$((SECONDS + 90))
    until recv_running; do
        if ! kill -0 "$ZPID" 2>/dev/null || ((SECONDS >= end)); then
            fail "$label: cn2 never showed the zfs recv of zones/$WEB running (zmigrate alive: $(kill -0 "$ZPID" 2>/dev/null && echo yes || echo no))"
            bg_show
            unthrottle
            bg_wait 120 || kill -KILL "$ZPID" 2>/dev/null || true
            return 1
        fi
        sleep 0.2
    done
    note "$label: cn2 receives zones/$WEB $(since "$t0") s after the start"
}

# nothing_left LABEL: no process, key line or private dir of the migration is left.
nothing_left() {
    local label=$1 left
    if wait_until 10 no_procs; then ok "$label: no send pipeline on cn1, no zfs recv or forced command on cn2"; else
        fail "$label: left running after 10 s: cn1: $(src_procs | tr '\n' ';') cn2: $(dst_procs | tr '\n' ';')"
    fi
    if left=$(keys_clean cn1 cn2); then
        ok "$label: no key line of the migration in authorized_keys, no /var/run/zmigrate entry"
    else
        note "$label: left: $left; the ledger must hold it and cleanup remove it"
        zm --json cleanup
        if ((ZM_RC == 0)) && left=$(keys_clean cn1 cn2); then ok "$label: zmigrate cleanup removed what was left"; else
            fail "$label: key line or private dir left, not removed by cleanup (rc $ZM_RC): $left"
            zm_show
        fi
    fi
}

# resync_matches LABEL: the record is sync/failed; the next unthrottled sync completes and both
# nodes hold the same data.
resync_matches() {
    local label=$1 st
    st=$(mig_field "$WEB" '"%s/%s" % (d["phase"], d["state"])') || st="get failed"
    check "$label: the migration is $st (want sync/failed)" test "$st" = sync/failed
    unthrottle
    zm_ok "$label: the next sync completes" sync "$WEB" || return 0
    probe cn1 "$WEB" sum || fail "$label: probe cn1"
    probe cn2 "$WEB" sum || fail "$label: probe cn2"
    local s d
    s=$(pj cn1 'd.get("sums")')
    d=$(pj cn2 'd.get("sums")')
    if [[ $s == "$d" && $s != null && $s != "{}" && $s != *error* ]]; then
        ok "$label: zlab-sum equal on both for $(pj cn1 '", ".join(sorted(d["sums"]))')"
    else
        fail "$label: zlab-sum differs: cn1 $s / cn2 $d"
    fi
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
        bg_wait 120 || { kill -KILL "$ZPID" 2>/dev/null || true; bg_wait 5 || true; }
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
    ip link set dev "$V1" down
    t0=$(now)
    # The source's data-path ssh gives up after ServerAliveInterval 5 x ServerAliveCountMax 3.
    if wait_until 60 src_ssh_gone; then
        ok "$label: the source's data-path ssh gave up $(since "$t0") s after the link went down"
    else
        fail "$label: the source's data-path ssh still runs 60 s after the link went down"
    fi
    stale=$(node_procs cn2 "zfs recv .*zones/$WEB\$" | tr '\n' ';')
    note "$label: receiver on cn2 when the link comes back: ${stale:-none}"
    link_up
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
    unthrottle
    zm_ok "$label: the next sync completes" sync "$WEB" || true
    for p in $(cut -d' ' -f1 <<<"$stale"); do
        check "$label: the next sync ended the stale process $p on cn2" test ! -e "/proc/$p"
    done
    check "$label: no receiver or forced command of the migration left on cn2 after it ($(dst_procs | tr '\n' ';'))" no_procs
    nothing_left "$label"
    probe cn1 "$WEB" sum || fail "$label: probe cn1"
    probe cn2 "$WEB" sum || fail "$label: probe cn2"
    s=$(pj cn1 'd.get("sums")')
    d=$(pj cn2 'd.get("sums")')
    if [[ $s == "$d" && $s != null && $s != "{}" && $s != *error* ]]; then
        ok "$label: zlab-sum equal on both for $(pj cn1 '", ".join(sorted(d["sums"]))')"
    else
        fail "$label: zlab-sum differs: cn1 $s / cn2 $d"
    fi
fi


mt_finish
