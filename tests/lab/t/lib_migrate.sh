# SPDX-License-Identifier: MPL-2.0
# shellcheck shell=bash disable=SC2034
# Shared helpers of the migration lab tests (tests/lab/t/migrate_*.sh); sourced, never run.
#
#   source "$(dirname "$0")/lib_migrate.sh"
#   mt_setup zmt-run 10.95.1      # skip checks, own lab (3 nodes) with `down` in an EXIT trap
#   zm migrate -n cn2 "$WEB"      # runs $ZMIGRATE_BIN; sets ZM_RC, ZM_OUT, ZM_ERR (files)
#   probe cn1 "$WEB" sum writer   # one ssh round trip: JSON of what node cn1 holds of the VM
#   ...; mt_finish                # exit 0 when no check failed, else 1
#
# Checks print "ok - ..." or "FAIL - ..."; a FAIL never stops the script (mt_die does).

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    # ctest globs tests/lab/t/*.sh, so this file is also run as a "test": nothing to do.
    echo "lib_migrate.sh: helpers of the migrate_*.sh lab tests; nothing to run on its own"
    exit 0
fi

MT_T_DIR=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
MT_ROOT=$(cd "$MT_T_DIR/../../.." && pwd)
LAB=$MT_ROOT/tests/lab/lab

WEB=5eed0000-0000-4000-8000-000000000101
MIN=5eed0000-0000-4000-8000-000000000102
LX=5eed0000-0000-4000-8000-000000000103
KVM=5eed0000-0000-4000-8000-000000000201
BHYVE=5eed0000-0000-4000-8000-000000000202
IMG_BASE=1a9e0000-0000-4000-8000-000000000001
IMG_MIN=1a9e0000-0000-4000-8000-000000000002
IMG_DEB=1a9e0000-0000-4000-8000-000000000003
IMG_UBU=1a9e0000-0000-4000-8000-000000000004
CN1=564d0000-0000-4000-8000-000000000001
CN2=564d0000-0000-4000-8000-000000000002
CN3=564d0000-0000-4000-8000-000000000003

MT_FAILS=0
MT_T0=$(date +%s.%N)

ok() { printf 'ok - %s\n' "$*"; }
fail() {
    printf 'FAIL - %s\n' "$*"
    MT_FAILS=$((MT_FAILS + 1))
}
# check DESC CMD...: ok when CMD succeeds, else FAIL.
check() {
    local desc=$1
    shift
    if "$@"; then ok "$desc"; else fail "$desc"; fi
}
mt_die() {
    printf 'FAIL - %s (giving up)\n' "$*"
    MT_FAILS=$((MT_FAILS + 1))
    mt_finish
}
note() { printf '# %s\n' "$*"; }

mt_elapsed() { awk -v a="$MT_T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

mt_finish() {
    trap - EXIT
    mt_cleanup
    if ((MT_FAILS > 0)); then
        printf '# %s: %d check(s) failed (%s s)\n' "${0##*/}" "$MT_FAILS" "$(mt_elapsed)"
        exit 1
    fi
    printf '# %s: all checks passed (%s s)\n' "${0##*/}" "$(mt_elapsed)"
    exit 0
}

# mt_exited STATUS: the EXIT trap. A script that ends without mt_finish (a syntax error, an
# unexpected `exit N`) fails unless it ended with status 0.
mt_exited() {
    if (($1 != 0)); then
        fail "the test script stopped early with status $1 (see its output above)"
    fi
    mt_finish
}

mt_cleanup() {
    mt_watch_stop >/dev/null 2>&1 || true
    if [[ ${MT_KEEP_LAB:-0} == 1 ]]; then
        note "MT_KEEP_LAB=1: lab $LAB_NAME left up ($LAB_DIR)"
        return 0
    fi
    "$LAB" down >/dev/null 2>&1 || true
}

# mt_setup NAME SUBNET [NODES]: skips (125) without root, /dev/fuse or network namespaces; brings
# up a private lab of NODES nodes (default 3) and exports what `lab ssh` and zmigrate need.
mt_setup() {
    if ((EUID != 0)); then
        echo "SKIP: needs root (namespaces, zfs-fuse)"
        exit 125
    fi
    if [[ ! -c /dev/fuse ]]; then
        echo "SKIP: no /dev/fuse"
        exit 125
    fi
    if ! command -v ip >/dev/null || ! ip netns list >/dev/null 2>&1; then
        echo "SKIP: no network namespaces (ip netns)"
        exit 125
    fi
    mt_lab_up "$1" "$2" "${3:-3}"
}

# mt_lab_up NAME SUBNET UP-ARGS...: brings up lab NAME on SUBNET (`lab up UP-ARGS`, down at
# exit), sets ZM, MT_WORK, ZM_OUT, ZM_ERR and exports the lab's environment. The output of
# `lab up` is kept in /var/tmp/zmigrate-lab/NAME.up.log when it fails or MT_UP_KEEP_LOG=1.
mt_lab_up() {
    local name=$1 subnet=$2
    shift 2
    export LAB_NAME=$name LAB_SUBNET=$subnet LAB_DIR=/var/tmp/zmigrate-lab/$name
    ZM=${ZMIGRATE_BIN:-$MT_ROOT/build/zmigrate}
    [[ -x $ZM ]] || { fail "no zmigrate binary at $ZM (set ZMIGRATE_BIN)"; exit 1; }
    trap 'mt_exited $?' EXIT
    trap 'exit 1' INT TERM
    "$LAB" down >/dev/null 2>&1 || true
    local t0=$SECONDS log=/var/tmp/zmigrate-lab/$name.up.log
    mkdir -p /var/tmp/zmigrate-lab
    LAB_VERBOSE=${MT_UP_KEEP_LOG:-0} "$LAB" up "$@" >"$log" 2>&1 ||
        { tail -30 "$log"; mt_die "lab up $*"; }
    [[ ${MT_UP_KEEP_LOG:-0} == 1 ]] || rm -f "$log"
    # shellcheck disable=SC1091
    source "$LAB_DIR/env"
    export VMAPI_URL CNAPI_URL NAPI_URL IMGAPI_URL ZMIGRATE_CONFIG
    MT_WORK=$LAB_DIR/t
    mkdir -p "$MT_WORK"
    ZM_OUT=$MT_WORK/zm.out
    ZM_ERR=$MT_WORK/zm.err
    ZM_RC=0
    ZM_SECS=0
    note "lab $LAB_NAME up ($*) in $((SECONDS - t0)) s; zmigrate: $ZM"
}

# --- zmigrate ---------------------------------------------------------------------------------

# zm ARGS...: runs zmigrate (cap MT_ZM_TIMEOUT s, default 300) with stdout in $ZM_OUT and
# stderr in $ZM_ERR; sets ZM_RC and ZM_SECS. Everything also goes to $MT_WORK/zm.log.
zm() {
    local t0
    t0=$(date +%s.%N)
    ZM_RC=0
    # In a subshell (not exec'd: two commands) with its stderr discarded: bash's "Killed" notice
    # for a SIGKILLed zmigrate (the fault hook) is noise.
    (
        timeout -k 5 "${MT_ZM_TIMEOUT:-300}" "$ZM" "$@" >"$ZM_OUT" 2>"$ZM_ERR" </dev/null
        exit $?
    ) 2>/dev/null || ZM_RC=$?
    ZM_SECS=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    {
        printf '\n$ %s%s zmigrate %s   -> rc %s in %s s\n' "${ZMIGRATE_FAULT_STEP:+ZMIGRATE_FAULT_STEP=}" \
            "${ZMIGRATE_FAULT_STEP:-}" "$*" "$ZM_RC" "$ZM_SECS"
        cat "$ZM_OUT"
        sed 's/^/stderr: /' "$ZM_ERR"
    } >>"$MT_WORK/zm.log"
    return 0
}

# zm_show: the last command's output, indented (for FAIL context).
zm_show() {
    {
        tail -n 15 "$ZM_OUT"
        tail -n 15 "$ZM_ERR"
    } | sed 's/^/#   /'
}

# zm_ok DESC ARGS...: runs zmigrate ARGS and checks it exits 0.
zm_ok() {
    local desc=$1
    shift
    zm "$@"
    if ((ZM_RC == 0)); then
        ok "$desc (${ZM_SECS} s)"
        return 0
    fi
    fail "$desc: zmigrate $* exited $ZM_RC"
    zm_show
    return 1
}

# zm_json EXPR: evaluates the python expression EXPR over the last JSON document zmigrate
# printed (bound to d; all documents in docs). Fails when stdout is not a sequence of JSON
# documents (a stray text line in --json mode is a defect).
zm_json() {
    python3 - "$ZM_OUT" "$1" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
dec = json.JSONDecoder()
docs, i = [], 0
while True:
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text):
        break
    obj, i = dec.raw_decode(text, i)
    docs.append(obj)
if not docs:
    sys.exit("no JSON document on stdout")
d = docs[-1]
v = eval(sys.argv[2])
print(json.dumps(v) if isinstance(v, (dict, list, tuple, bool)) or v is None else v)
EOF
}

# err_line_ok CODE: the last command exited CODE with exactly one stderr line
# "zmigrate: error: ..." (no stack trace, no extra noise).
err_line_ok() {
    local want=$1 lines
    lines=$(grep -c . "$ZM_ERR" || true)
    ((ZM_RC == want)) && ((lines == 1)) && grep -q '^zmigrate: error: ' "$ZM_ERR"
}

# mig_field VM EXPR: python EXPR over `zmigrate --json get VM` (d).
mig_field() {
    local save_out=$ZM_OUT save_rc=$ZM_RC
    ZM_OUT=$MT_WORK/get.out
    zm --json get "$1"
    local rc=$ZM_RC
    if ((rc == 0)); then zm_json "$2"; fi
    ZM_OUT=$save_out
    ZM_RC=$save_rc
    return "$rc"
}

# mig_id VM: id of the VM's (latest) migration.
mig_id() { mig_field "$1" 'd["id"]'; }

# --- nodes ------------------------------------------------------------------------------------

on() {
    local n=$1
    shift
    "$LAB" ssh "$n" "$*"
}

node_index() { printf '%d' "${1#cn}"; }

# What a node holds of an instance, in one ssh round trip. Options: sum (zlab-sum of every
# migrated filesystem, writer file excluded; unmounted ones are mounted for the sum and unmounted
# again), writer (writer file: size, sha256, last seq via zlab-verify), prefix=N (sha256 of the
# writer file's first N bytes).
MT_PROBE_PY=$(
    cat <<'EOF'
import hashlib, json, os, subprocess, sys
uuid = sys.argv[1]
opts = sys.argv[2:]
def run(*a):
    p = subprocess.run(list(a), capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr
out = {"uuid": uuid}
rc, so, se = run("vmadm", "get", uuid)
out["vm"] = json.loads(so) if rc == 0 else None
out["running"] = os.path.exists("/run/zlab/zones/%s.json" % uuid)
rc, so, se = run("zfs", "list", "-H", "-o", "name", "-t", "all")
names = so.split()
mine = [n for n in names if n.split("@")[0] == "zones/" + uuid
        or n.startswith("zones/%s/" % uuid) or n.startswith("zones/%s-disk" % uuid)
        or n.split("@")[0] == "zones/cores/" + uuid]
fs = sorted([n for n in mine if "@" not in n], key=len)
out["datasets"] = {}
if fs:
    rc, so, se = run("zfs", "get", "-Hp", "-o", "name,property,value",
                     "mounted,quota,reservation,refquota,refreservation,origin,guid", *fs)
    for line in so.splitlines():
        n, p, v = line.split("\t")
        out["datasets"].setdefault(n, {})[p] = v
out["snapshots"] = {n: None for n in mine if "@" in n}
if out["snapshots"]:
    rc, so, se = run("zfs", "get", "-Hp", "-o", "name,value", "guid", *out["snapshots"])
    for line in so.splitlines():
        n, v = line.split("\t")
        out["snapshots"][n] = v
out["zm_snaps"] = [n for n in names if "@zmigrate-" in n]
out["images"] = [n[len("zones/"):] for n in names
                 if n.startswith("zones/1a9e") and "@" not in n]
try:
    out["keys"] = [l.strip() for l in open("/root/.ssh/authorized_keys") if "zmigrate" in l]
except OSError:
    out["keys"] = []
out["rundir"] = sorted(os.listdir("/var/run/zmigrate")) if os.path.isdir("/var/run/zmigrate") else []
mounted_here = []
if ("sum" in opts or "writer" in opts) and fs:
    for n in fs:
        if n.startswith("zones/cores/"):
            continue
        if out["datasets"].get(n, {}).get("mounted") != "yes":
            rc, so, se = run("zfs", "mount", n)
            if rc == 0:
                mounted_here.append(n)
try:
    if "sum" in opts:
        out["sums"] = {}
        for n in fs:
            if n.startswith("zones/cores/"):
                continue
            rc, so, se = run("zlab-sum", "--exclude", "zlab-writer.dat", n)
            out["sums"][n] = so.split()[0] if rc == 0 and so else "error: " + se.strip()
    if "writer" in opts and out["vm"] is not None:
        vm = out["vm"]
        if vm["brand"] == "kvm":
            path = "/zones/%s-disk0/zlab-writer.dat" % uuid
        elif vm["brand"] == "bhyve":
            path = "/zones/%s/disk0/zlab-writer.dat" % uuid
        else:
            path = os.path.join(vm["zonepath"], "root/var/tmp/zlab-writer.dat")
        w = {"path": path}
        if os.path.exists(path):
            data = open(path, "rb").read()
            w["size"] = len(data)
            w["sha"] = hashlib.sha256(data).hexdigest()
            for o in opts:
                if o.startswith("prefix="):
                    k = int(o[7:])
                    w["prefix_sha"] = hashlib.sha256(data[:k]).hexdigest() if len(data) >= k else None
            rc, so, se = run("zlab-verify", path)
            w["verify_rc"] = rc
            w["last"] = int(so.strip()) if rc == 0 and so.strip() else None
            w["verify_err"] = se.strip()
        out["writer"] = w
finally:
    for n in reversed(mounted_here):
        run("zfs", "umount", n)
print(json.dumps(out))
EOF
)

# probe NODE VM [sum] [writer] [prefix=N]: writes the JSON to $MT_WORK/probe.NODE and prints
# its path; `pj NODE EXPR` evaluates a python expression over it (d).
probe() {
    local n=$1
    shift
    "$LAB" ssh "$n" python3 - "$@" <<<"$MT_PROBE_PY" >"$MT_WORK/probe.$n" 2>"$MT_WORK/probe.$n.err" || {
        echo "probe $n failed: $(tail -3 "$MT_WORK/probe.$n.err")" >&2
        echo '{}' >"$MT_WORK/probe.$n"
        return 1
    }
}
pj() {
    python3 - "$MT_WORK/probe.$1" "$2" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
v = eval(sys.argv[2])
print(json.dumps(v) if isinstance(v, (dict, list, tuple, bool)) or v is None else v)
EOF
}

# vm_state NODE VM: "running", "stopped", ... or "absent" (vmadm get on the node).
vm_state() {
    local s
    s=$(on "$1" "vmadm get $2 2>/dev/null" | python3 -c 'import json,sys
try: print(json.load(sys.stdin).get("state", "unknown"))
except ValueError: print("absent")') || s=absent
    printf '%s' "$s"
}

# running_now K VM: true when node cnK runs VM right now (its run-state file; no ssh, so cheap
# enough to poll: read through the node init's mount namespace).
node_root() {
    local k pid
    k=$(node_index "$1")
    pid=$(<"$LAB_DIR/nodes/cn$k/init.pid")
    printf '/proc/%s/root' "$pid"
}
running_now() { [[ -e $(node_root "$1")/run/zlab/zones/$2.json ]]; }

# mt_watch_start VM [MAX]: polls every node every 50 ms in the background and logs each moment
# when more than MAX (default 1) copies of VM run to $MT_WORK/both-running. mt_watch_stop: stops
# it; prints the number of such moments.
mt_watch_start() {
    local vm=$1 max=${2:-1} roots=() k
    for k in 1 2 3; do roots+=("$(node_root "cn$k")/run/zlab/zones/$vm.json"); done
    : >"$MT_WORK/both-running"
    : >"$MT_WORK/watch.on"
    (
        while [[ -e $MT_WORK/watch.on ]]; do
            n=0
            for f in "${roots[@]}"; do [[ -e $f ]] && n=$((n + 1)); done
            if ((n > max)); then echo "$(date +%T.%N) $n copies running" >>"$MT_WORK/both-running"; fi
            sleep 0.05
        done
    ) &
    MT_WATCH_PID=$!
}
mt_watch_stop() {
    [[ -n ${MT_WATCH_PID:-} ]] || { echo 0; return 0; }
    rm -f "$MT_WORK/watch.on"
    wait "$MT_WATCH_PID" 2>/dev/null || true
    MT_WATCH_PID=
    grep -c . "$MT_WORK/both-running" || true
}

# --- inventory --------------------------------------------------------------------------------

# vmapi VM EXPR: python EXPR over GET /vms/VM (d).
vmapi() {
    curl -sS --max-time 10 "$VMAPI_URL/vms/$1" | python3 -c "import json,sys
d = json.load(sys.stdin)
v = $2
print(json.dumps(v) if isinstance(v, (dict, list, tuple, bool)) or v is None else v)"
}

# nics_sig VM: the VM's NICs as VMAPI shows them, one sorted line "mac ip network_uuid primary".
nics_sig() {
    vmapi "$1" '" ".join(sorted("%s/%s/%s/%s" % (n["mac"], n["ip"], n.get("network_uuid"), n.get("primary")) for n in d["nics"]))'
}

# ips_never_free VM: true when, for every IP of VM (from VMAPI), the simulator's IP history has
# entries and none says free:true or belongs to another instance. Prints what it found.
ips_never_free() {
    local ips ip bad=0 out
    ips=$(vmapi "$1" '" ".join(n["ip"] for n in d["nics"])')
    [[ -n $ips ]] || { echo "no IPs in VMAPI"; return 1; }
    for ip in $ips; do
        out=$(curl -sS --max-time 10 "$NAPI_URL/_lab/ip-history?ip=$ip" | python3 -c "import json,sys
h = json.load(sys.stdin)
bad = [e for e in h if e.get('free') or (e.get('belongs_to_uuid') not in (None, '$1') and not e.get('reserved'))]
print(len(h), len(bad), json.dumps(bad[:2]))")
        read -r total nbad rest <<<"$out"
        echo "$ip: $total history entries, $nbad bad $rest"
        ((total > 0 && nbad == 0)) || bad=1
    done
    return $bad
}

# wait_until SECS CMD...: retries CMD every 0.3 s.
wait_until() {
    local secs=$1 end
    shift
    end=$((SECONDS + secs))
    while ((SECONDS < end)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.3
    done
    "$@" >/dev/null 2>&1
}

# no_artefacts NODE [VM] [ID]: the node holds no migration snapshot, no zmigrate key line and no
# private dir (if ID given: no /var/run/zmigrate/ID; else the dir is empty). Uses the last probe
# of NODE; prints what is left.
no_artefacts_in_probe() {
    local n=$1 id=${2:-}
    pj "$n" "(d['zm_snaps'], d['keys'], d['rundir'])" | python3 -c "import json,sys
snaps, keys, rundir = json.load(sys.stdin)
id = '$id'
left = []
if snaps: left.append('snapshots %s' % snaps)
if keys: left.append('authorized_keys lines %s' % [k[:60] + '...' + k[-50:] for k in keys])
if (id and id in rundir) or (not id and rundir): left.append('/var/run/zmigrate entries %s' % rundir)
print('; '.join(left) if left else 'nothing left')
sys.exit(1 if left else 0)"
}

# keys_clean NODE...: no zmigrate authorized_keys line and no /var/run/zmigrate entry (fresh probe).
keys_clean() {
    local n rc=0
    for n in "$@"; do
        probe "$n" "$WEB" || rc=1
        pj "$n" "(d['keys'], d['rundir'])" | python3 -c "import json,sys
keys, rundir = json.load(sys.stdin)
sys.exit(1 if keys or rundir else 0)" || {
            echo "$n: keys $(pj "$n" "len(d['keys'])"), rundir $(pj "$n" "d['rundir']")"
            rc=1
        }
    done
    return $rc
}

# keys_parked SRC DST MIG: what a sync that succeeded leaves of its data path and nothing else:
# the one path every live ledger row of MIG names, marked parked; its private dir on both nodes
# (fresh probes), its key line on DST only. Prints what differs.
keys_parked() {
    local src=$1 dst=$2 mig=$3
    probe "$src" "$WEB" || return 1
    probe "$dst" "$WEB" || return 1
    python3 - "$LAB_DIR/state/zmigrate.db" "$mig" "$(pj "$src" "(d['keys'], d['rundir'])")" \
        "$(pj "$dst" "(d['keys'], d['rundir'])")" <<'PY'
import json, sqlite3, sys
con = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
rows = [json.loads(d) for (d,) in con.execute(
    "SELECT details FROM artefacts WHERE migration_id = ? AND removed = '' "
    "AND kind IN ('data_path_dir', 'authorized_key')", (sys.argv[2],))]
paths = sorted({r.get("path_id", "") for r in rows})
src_keys, src_dirs = json.loads(sys.argv[3])
dst_keys, dst_dirs = json.loads(sys.argv[4])
bad = []
if len(rows) != 3 or len(paths) != 1 or not all(r.get("parked") for r in rows):
    bad.append("ledger: %d live rows of paths %s, parked %s" % (len(rows), paths, [r.get("parked") for r in rows]))
if src_keys or sorted(src_dirs) != paths:
    bad.append("source: keys %d, dirs %s" % (len(src_keys), src_dirs))
if len(dst_keys) != 1 or not dst_keys[0].endswith("zmigrate-ephemeral-" + (paths or [""])[0]) or sorted(dst_dirs) != paths:
    bad.append("target: keys %d, dirs %s" % (len(dst_keys), dst_dirs))
print("; ".join(bad) if bad else "the parked path %s only" % paths)
sys.exit(1 if bad else 0)
PY
}

# verify_switched LABEL VM SRC DST [running|stopped]: checks the state after a successful switch
# from node SRC to node DST, printing one ok/FAIL line per property:
#  - SRC: stopped, not running, hidden (do_not_inventory); DST: in the expected state, visible
#  - zlab-sum of every migrated dataset (writer file excluded) equal on both
#  - running instances: DST's writer file starts with SRC's whole file and goes on intact
#  - VMAPI shows DST and the expected state
# Leaves the probes of SRC and DST in $MT_WORK for further checks.
verify_switched() {
    local label=$1 vm=$2 src=$3 dst=$4 want=${5:-running} size
    probe "$src" "$vm" sum writer || fail "$label: probe $src"
    size=$(pj "$src" '(d.get("writer") or {}).get("size", 0)')
    probe "$dst" "$vm" sum writer "prefix=$size" || fail "$label: probe $dst"
    check "$label: source on $src stopped, not running, hidden" \
        test "$(pj "$src" '(d["vm"] or {}).get("state"), d["running"], (d["vm"] or {}).get("do_not_inventory")')" = '["stopped", false, true]'
    if [[ $want == running ]]; then
        check "$label: instance runs on $dst, visible" \
            test "$(pj "$dst" '(d["vm"] or {}).get("state"), d["running"], bool((d["vm"] or {}).get("do_not_inventory"))')" = '["running", true, false]'
    else
        check "$label: instance on $dst is stopped (not started), visible" \
            test "$(pj "$dst" '(d["vm"] or {}).get("state"), d["running"], bool((d["vm"] or {}).get("do_not_inventory"))')" = '["stopped", false, false]'
    fi
    local s d
    s=$(pj "$src" 'd.get("sums")')
    d=$(pj "$dst" 'd.get("sums")')
    if [[ $s == "$d" && $s != null && $s != "{}" && $s != *error* ]]; then
        ok "$label: zlab-sum equal on both for $(pj "$src" '", ".join(sorted(d["sums"]))')"
    else
        fail "$label: zlab-sum differs: $src $s / $dst $d"
    fi
    if [[ $want == running ]]; then
        local sl
        sl=$(pj "$src" '(d.get("writer") or {}).get("last")')
        check "$label: $dst's writer file begins with $src's (seq 1..$sl) and is intact up to seq $(pj "$dst" '(d.get("writer") or {}).get("last")')" \
            test "$(pj "$dst" '(d.get("writer") or {}).get("prefix_sha"), (d.get("writer") or {}).get("verify_rc"), ((d.get("writer") or {}).get("last") or 0) >= '"${sl:-0}")" = "[\"$(pj "$src" '(d.get("writer") or {}).get("sha")')\", 0, true]"
    fi
    local want_srv
    want_srv=$(printf '564d0000-0000-4000-8000-0000000000%02d' "${dst#cn}")
    check "$label: VMAPI shows $dst and $want" \
        test "$(vmapi "$vm" 'd["server_uuid"] + " " + d["state"]')" = "$want_srv $want"
}

# finalize_clean LABEL VM SRC DST: finalize --yes; the source copy and every migration snapshot,
# key and private dir are gone on both nodes.
finalize_clean() {
    local label=$1 vm=$2 src=$3 dst=$4 left n
    zm_ok "$label: finalize --yes" finalize --yes "$vm" || return 0
    probe "$src" "$vm" || true
    check "$label: source instance and datasets gone from $src" \
        test "$(pj "$src" 'd["vm"], sorted(d["datasets"])')" = '[null, []]'
    probe "$dst" "$vm" || true
    for n in "$src" "$dst"; do
        if left=$(no_artefacts_in_probe "$n"); then ok "$label: $n: no migration snapshot, key or private dir"; else
            fail "$label: $n: left after finalize: $left"
        fi
    done
}
