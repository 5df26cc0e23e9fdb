# SPDX-License-Identifier: MPL-2.0
# shellcheck shell=bash disable=SC2034
# Fault helpers of the lab tests (safety_signals.sh, faults_*.sh, tests/lab/soak); sourced after
# lib_migrate.sh and mt_setup, never run. Every fault here is one an operator meets on real
# compute nodes: a throttled or dropped link, sshd gone, an API answering 503, a full pool.
#
#   FT_SRC=cn1 FT_DST=cn2 MIG=<migration id>   # whose processes src_procs/dst_procs look for
#   trap 'ft_restore; mt_exited $?' EXIT       # never leave the lab throttled or cut off
#
# A fault is held for a chosen time only where the fault's length is the point of the case (a
# short link drop); everything else waits for the event it checks, with a deadline.

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    echo "lib_faults.sh: helpers of the lab fault tests; nothing to run on its own"
    exit 0
fi

# shellcheck disable=SC1091
source "$MT_ROOT/tests/lab/lib/common.sh"

FT_SRC=${FT_SRC:-cn1}
FT_DST=${FT_DST:-cn2}
MIG=${MIG:-}

ft_veth() { lab_node_veth "$(node_index "$1")"; }
ft_init_pid() { cat "$LAB_DIR/nodes/cn$(node_index "$1")/init.pid"; }

# throttle NODE / unthrottle NODE: NODE's link at 2 mbit (a sync of 8 MiB takes ~35 s).
throttle() { tc qdisc replace dev "$(ft_veth "$1")" root tbf rate 2mbit burst 32kb latency 400ms; }
unthrottle() { tc qdisc del dev "$(ft_veth "$1")" root 2>/dev/null || true; }
link_down() { ip link set dev "$(ft_veth "$1")" down; }
link_up() { ip link set dev "$(ft_veth "$1")" up; }

# node_procs NODE ERE: "pid argv" of each process in NODE's network namespace whose command line
# matches ERE (pgrep -f sees every lab's processes: the pid namespace is shared).
node_procs() {
    local ns p
    ns=$(readlink "/proc/$(ft_init_pid "$1")/ns/net")
    for p in $(pgrep -f -- "$2" || true); do
        [[ $(readlink "/proc/$p/ns/net" 2>/dev/null) == "$ns" ]] || continue
        printf '%s %s\n' "$p" "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"
    done
}

# What the migration runs: on the source its send pipeline (the snapshot names and the path dir
# hold the migration id), the data-path ssh and master; on the target the forced-command shell
# (path dir) and the instance's receivers.
src_procs() { node_procs "$FT_SRC" "$MIG|zfs send .*zones/$WEB"; }
dst_procs() { node_procs "$FT_DST" "$MIG|zfs recv .*zones/$WEB(/|\$)"; }
recv_running() { [[ -n $(node_procs "$FT_DST" "zfs recv .*zones/$WEB\$") ]]; }
no_procs() { [[ -z $(src_procs) && -z $(dst_procs) ]]; }
src_ssh_gone() { [[ -z $(node_procs "$FT_SRC" "^ssh -i /var/run/zmigrate/$MIG.* recv ") ]]; }

# sshd_kill NODE: SIGKILL to every sshd of NODE, the listener and every session (a crashed or
# OOM-killed sshd; the node itself stays up). sshd_start NODE: starts it again from inside the
# node's namespaces (as an operator at the console would) and waits until it accepts.
sshd_pids() { node_procs "$1" '^(/usr/sbin/)?sshd' | cut -d' ' -f1; }
sshd_kill() {
    local p
    for p in $(sshd_pids "$1"); do kill -KILL "$p" 2>/dev/null || true; done
    wait_until 10 test -z "$(sshd_pids "$1")"
}
sshd_up() { on "$1" true; }
sshd_start() {
    nsenter -t "$(ft_init_pid "$1")" -a /usr/sbin/sshd -f /etc/ssh/sshd_config -E /var/log/sshd.restarted.log ||
        return 1
    wait_until 20 sshd_up "$1"
}

# vmapi_fault JSON: adds a fault to the simulated Triton services (tests/lab/sim/README.md);
# prints its id. vmapi_faults_clear: removes all.
vmapi_fault() { curl -fsS --max-time 10 -X POST -H 'Content-Type: application/json' -d "$1" "$VMAPI_URL/_lab/faults" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
vmapi_fault_hits() { curl -fsS --max-time 10 "$VMAPI_URL/_lab/faults" | python3 -c "import json,sys; print(sum(f['hits'] for f in json.load(sys.stdin) if f['id'] == '$1'))"; }
vmapi_faults_clear() { curl -fsS --max-time 10 -X DELETE "$VMAPI_URL/_lab/faults" >/dev/null 2>&1 || true; }

# ft_restore: every link up and unthrottled, sshd running and no API fault, on every node.
ft_restore() {
    local n
    for n in cn1 cn2 cn3; do
        unthrottle "$n"
        link_up "$n" 2>/dev/null || true
        [[ -n $(sshd_pids "$n" 2>/dev/null) ]] || sshd_start "$n" >/dev/null 2>&1 || true
    done
    vmapi_faults_clear
}

# fill NODE TAG [MIB]: MIB (default 8) MiB of fresh random data in web01's root on NODE.
fill() {
    on "$1" "head -c $((${3:-8} << 20)) /dev/urandom > /zones/$WEB/root/var/tmp/zfault-$2.bin && sync" ||
        mt_die "filling web01 on $1"
}

# bg_zm ARGS...: zmigrate ARGS in the background (ZPID), not through `timeout`, so that signals
# reach zmigrate itself; a watchdog SIGKILLs it after 180 s so a hang cannot stall the test.
bg_zm() {
    BG_CMD="$*"
    "$ZM" "$@" >"$MT_WORK/bg.out" 2>"$MT_WORK/bg.err" </dev/null &
    ZPID=$!
    (
        sleep 180
        kill -KILL "$ZPID" 2>/dev/null
    ) >/dev/null 2>&1 &
    ZDOG=$!
}
bg_sync() { bg_zm sync "$WEB"; }
# bg_wait SECS: waits up to SECS for zmigrate to exit; sets ZRC (or returns 1 while it runs).
bg_wait() {
    local end
    end=$(awk -v a="$(date +%s.%N)" -v s="$1" 'BEGIN { printf "%.3f", a + s }')
    while kill -0 "$ZPID" 2>/dev/null; do
        if awk -v a="$end" -v b="$(date +%s.%N)" 'BEGIN { exit !(b > a) }'; then return 1; fi
        sleep 0.05
    done
    ZRC=0
    wait "$ZPID" 2>/dev/null || ZRC=$? # (no "Killed" notice of the shell)
    kill "$ZDOG" 2>/dev/null || true
    wait "$ZDOG" 2>/dev/null || true
    {
        printf '\n$ zmigrate %s (background)   -> rc %s\n' "$BG_CMD" "$ZRC"
        cat "$MT_WORK/bg.out"
        sed 's/^/stderr: /' "$MT_WORK/bg.err"
    } >>"$MT_WORK/zm.log"
    return 0
}
# bg_reap: kills a zmigrate still running (after a FAIL) and collects it.
bg_reap() { bg_wait 120 || { kill -KILL "$ZPID" 2>/dev/null || true; bg_wait 5 || true; }; }
bg_show() { tail -n 8 "$MT_WORK/bg.err" | sed 's/^/#   /'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# start_long_sync LABEL TAG: fills web01 on FT_SRC, throttles FT_DST, starts the sync and waits
# (deadline 90 s) until FT_DST receives web01's root; false (after a FAIL) when it never did.
start_long_sync() {
    local label=$1
    fill "$FT_SRC" "$2"
    throttle "$FT_DST"
    bg_sync
    local t0 end
    t0=$(now)
    end=$((SECONDS + 90))
    until recv_running; do
        if ! kill -0 "$ZPID" 2>/dev/null || ((SECONDS >= end)); then
            fail "$label: $FT_DST never showed the zfs recv of zones/$WEB running (zmigrate alive: $(kill -0 "$ZPID" 2>/dev/null && echo yes || echo no))"
            bg_show
            unthrottle "$FT_DST"
            bg_reap
            return 1
        fi
        sleep 0.2
    done
    note "$label: $FT_DST receives zones/$WEB $(since "$t0") s after the start"
}

# nothing_left LABEL [parked]: no process, key line or private dir of the migration is left (or
# the ledger holds them and `zmigrate cleanup` removes them). With "parked" (after a sync that
# succeeded), the one data path that sync parked for the migration's next command may stay:
# its ssh master on the source (it ends by itself 120 s after its last stream), its key line and
# dirs, every ledger row of it marked parked; cleanup must sweep it all the same.
nothing_left() {
    local label=$1 mode=${2:-} left procs parked
    procs() {
        if [[ $mode == parked ]]; then
            src_procs | grep -v -- ' -o ControlMaster=yes -o ControlPersist=120 -N -f ' || true
        else
            src_procs
        fi
        dst_procs
    }
    if wait_until 10 test -z "$(procs)"; then ok "$label: no send pipeline on $FT_SRC, no zfs recv or forced command on $FT_DST"; else
        fail "$label: left running after 10 s: $FT_SRC: $(src_procs | tr '\n' ';') $FT_DST: $(dst_procs | tr '\n' ';')"
    fi
    if [[ $mode == parked ]]; then
        if parked=$(keys_parked "$FT_SRC" "$FT_DST" "$MIG"); then
            ok "$label: what is left is the path the sync parked, whole in the ledger ($parked)"
        else
            fail "$label: not the one parked path the ledger holds: $parked"
        fi
    fi
    if left=$(keys_clean "$FT_SRC" "$FT_DST"); then
        ok "$label: no key line of the migration in authorized_keys, no /var/run/zmigrate entry"
    else
        note "$label: left: $left; the ledger must hold it and cleanup remove it"
        zm --json cleanup
        if ((ZM_RC == 0)) && left=$(keys_clean "$FT_SRC" "$FT_DST"); then ok "$label: zmigrate cleanup removed what was left"; else
            fail "$label: key line or private dir left, not removed by cleanup (rc $ZM_RC): $left"
            zm_show
        fi
        if [[ $mode == parked ]]; then
            mode=
            if wait_until 10 test -z "$(procs)"; then ok "$label: cleanup ended the parked path's ssh master"; else
                fail "$label: left running after cleanup: $FT_SRC: $(src_procs | tr '\n' ';')"
            fi
        fi
    fi
}

# sums_equal LABEL A B: zlab-sum of every dataset of web01 equal on nodes A and B.
sums_equal() {
    local label=$1 s d
    probe "$2" "$WEB" sum || fail "$label: probe $2"
    probe "$3" "$WEB" sum || fail "$label: probe $3"
    s=$(pj "$2" 'd.get("sums")')
    d=$(pj "$3" 'd.get("sums")')
    if [[ $s == "$d" && $s != null && $s != "{}" && $s != *error* ]]; then
        ok "$label: zlab-sum equal on $2 and $3 for $(pj "$2" '", ".join(sorted(d["sums"]))')"
    else
        fail "$label: zlab-sum differs: $2 $s / $3 $d"
    fi
}

# resync_matches LABEL: the record is sync/failed; the next unthrottled sync completes and both
# nodes hold the same data.
resync_matches() {
    local label=$1 st
    st=$(mig_field "$WEB" '"%s/%s" % (d["phase"], d["state"])') || st="get failed"
    check "$label: the migration is $st (want sync/failed)" test "$st" = sync/failed
    unthrottle "$FT_DST"
    zm_ok "$label: the next sync completes" sync "$WEB" || return 0
    sums_equal "$label" "$FT_SRC" "$FT_DST"
}

# src_watch_start NODE / src_watch_stop: logs every 50 ms poll at which web01 does not run on
# NODE; src_watch_stop prints how many there were (0: it never stopped).
src_watch_start() {
    local f
    f=$(node_root "$1")/run/zlab/zones/$WEB.json
    : >"$MT_WORK/src-stopped"
    : >"$MT_WORK/src-watch.on"
    (
        while [[ -e $MT_WORK/src-watch.on ]]; do
            [[ -e $f ]] || echo "$(date +%T.%N) not running" >>"$MT_WORK/src-stopped"
            sleep 0.05
        done
    ) &
    FT_SRC_WATCH=$!
}
src_watch_stop() {
    rm -f "$MT_WORK/src-watch.on"
    wait "${FT_SRC_WATCH:-}" 2>/dev/null || true
    grep -c . "$MT_WORK/src-stopped" || true
}
