#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Many zmigrate processes on one state directory at once, as parallel evacuations and several
# operators' commands make them:
#  - first commands on a new state directory: batches of `get`, `watch` and `list` released
#    together on a new --state-dir (every one creates the database and turns it into WAL at the
#    same moment; STORE_NEW_BATCHES, default 60): list exits 0, get and watch 3 (no migration)
#  - then rounds on the lab's own state directory (new as well at round 1): web01, min01 and lx01
#    migrate together (`migrate --finalize`, one process each, one target) while readers loop
#    over `watch`, `list` and `get`; round 1 moves them from cn1 to cn2, round 2 brings them
#    back, and so on (STORE_ROUNDS, default 4). Every migrate exits 0 and the instance then is
#    where it was sent, VMAPI agreeing; every reader exits 0 (`watch` and `get` may answer 3
#    "no migration" only before their instance's first migration was recorded)
#  - nothing any process printed mentions a locked (or busy) state database
#  - afterwards `list --all` shows each round's migrations, all finalized
# Exit 0 pass, 1 fail, 125 skip (not root, no /dev/fuse, no netns).
set -uo pipefail
# shellcheck source=lib_migrate.sh
source "$(dirname "$(readlink -f "$0")")/lib_migrate.sh"

export LAB_SEED_VMS=web01,min01,lx01
mt_setup zmt-store 10.96.23

ROUNDS=${STORE_ROUNDS:-4}
VMS=("$WEB" "$MIN" "$LX")
declare -A ALIAS=(["$WEB"]=web01 ["$MIN"]=min01 ["$LX"]=lx01)
declare -A WANT_STATE=(["$WEB"]=running ["$MIN"]=running ["$LX"]=stopped)
GATE=$MT_WORK/gate.lock   # held by the script until every process of a round may start
READING=$MT_WORK/reading  # readers loop while it exists
RUNS=$MT_WORK/runs        # one directory per zmigrate process: argv, rc, stdout, stderr
NEW_RUNS=$MT_WORK/runs-new # the same for the commands on new state directories
rm -rf "$RUNS" "$NEW_RUNS" "$MT_WORK"/first-record.* "$MT_WORK"/new-state.*
mkdir -p "$RUNS" "$NEW_RUNS"

[[ -z $(ls -A "$(dirname "$ZMIGRATE_CONFIG")/state" 2>/dev/null) ]] ||
    mt_die "the lab's state directory is not new"
for vm in "${VMS[@]}"; do
    [[ $(vm_state cn1 "$vm") == "${WANT_STATE[$vm]}" ]] || mt_die "${ALIAS[$vm]} is not ${WANT_STATE[$vm]} on cn1"
done
ok "web01, min01 and lx01 are on cn1; the state directory is new"

# run TAG ARGS...: one zmigrate process, recorded under $RUNS/TAG.N (its argv, then rc once it
# ended). Waits for the gate first, so that a round's processes start together.
RUN_N=0
run() {
    local tag=$1 d
    shift
    RUN_N=$((RUN_N + 1))
    d=${RUN_INTO:-$RUNS}/$tag.$BASHPID.$RUN_N
    mkdir -p "$d"
    printf '%s\n' "$*" >"$d/argv"
    # The gate's descriptor came along from the script: while any copy of it is open the
    # script's lock stays, so drop this copy before waiting for the lock to go.
    if [[ -n ${gate_fd:-} ]]; then exec {gate_fd}>&-; fi
    flock -s "$GATE" true
    date +%s.%N >"$d/start"
    timeout -k 5 "${MT_ZM_TIMEOUT:-300}" "$ZM" "$@" >"$d/out" 2>"$d/err" </dev/null
    echo $? >"$d/rc"
}

# reader KIND VM: loops one kind of reader until $READING is gone.
reader() {
    local kind=$1 vm=$2
    while [[ -e $READING ]]; do
        case $kind in
        watch) run "watch-${ALIAS[$vm]}" watch "$vm" ;;
        watchjson) run "watch-${ALIAS[$vm]}" --json watch "$vm" ;;
        get) run "get-${ALIAS[$vm]}" get "$vm" ;;
        getjson) run "get-${ALIAS[$vm]}" --json get "$vm" ;;
        list) run list list ;;
        listall) run list --json list --all ;;
        esac
    done
}

# --- first commands on a new state directory ------------------------------------------------
# The first commands on a new state directory all create the database, and turn it into WAL,
# at the same moment: NEW_BATCHES times, 8 commands on a new --state-dir, released together.
# `get` and `watch` answer 3 (no migration yet), `list` 0; none may find the database locked.
NEW_BATCHES=${STORE_NEW_BATCHES:-60}
t0=$SECONDS
for ((b = 1; b <= NEW_BATCHES; b++)); do
    sd=$MT_WORK/new-state.$b
    exec {gate_fd}>"$GATE"
    flock -x "$gate_fd"
    RUN_INTO=$NEW_RUNS
    for vm in "${VMS[@]}"; do
        run "new$b-get" --state-dir "$sd" get "$vm" &
    done
    run "new$b-watch" --state-dir "$sd" watch "$WEB" &
    run "new$b-watch" --state-dir "$sd" --json watch "$MIN" &
    run "new$b-list" --state-dir "$sd" list &
    run "new$b-list" --state-dir "$sd" list --all &
    run "new$b-list" --state-dir "$sd" --json list &
    RUN_INTO=
    exec {gate_fd}>&- # go
    wait
done
new_bad=0
for d in "$NEW_RUNS"/*; do
    rc=$(cat "$d/rc" 2>/dev/null || echo none)
    case ${d##*/} in
    *-list.*) [[ $rc == 0 ]] ;;
    *) [[ $rc == 3 ]] && grep -q 'no migration' "$d/err" ;;
    esac || {
        new_bad=$((new_bad + 1))
        ((new_bad > 3)) || note "zmigrate $(cat "$d/argv") exited $rc: $(tail -1 "$d/err")"
    }
done
check "$NEW_BATCHES x 8 first commands on a new state directory: each list exited 0, each get and watch 3 (no migration); $new_bad did not ($((SECONDS - t0)) s)" \
    test "$new_bad" = 0

# --- migrations there and back, with readers --------------------------------------------------
FIRST_RECORD=$MT_WORK/first-record # when each instance's first migration was recorded

src=cn1
dst=cn2
t_rounds=$SECONDS
for ((round = 1; round <= ROUNDS; round++)); do
    t0=$SECONDS
    fails_before=$MT_FAILS
    exec {gate_fd}>"$GATE"
    flock -x "$gate_fd"
    : >"$READING"
    readers=()
    for vm in "${VMS[@]}"; do
        reader watch "$vm" &
        readers+=($!)
    done
    reader watchjson "$WEB" &
    readers+=($!)
    reader get "$MIN" &
    readers+=($!)
    reader getjson "$LX" &
    readers+=($!)
    reader list - &
    readers+=($!)
    reader listall - &
    readers+=($!)
    migrators=()
    for vm in "${VMS[@]}"; do
        run "migrate$round-${ALIAS[$vm]}" migrate --finalize -n "$dst" "$vm" &
        migrators+=($!)
    done
    exec {gate_fd}>&- # go: the migrations and the first readers start at the same moment
    if ((round == 1)); then
        # The moment each instance's first record exists (a reader's exit 3 after it is a
        # failure); polled from the store's own view, as `get` gives it.
        for vm in "${VMS[@]}"; do
            (
                until "$ZM" --json get "$vm" >/dev/null 2>&1; do
                    [[ -e $READING ]] || exit 0
                done
                date +%s.%N >"$FIRST_RECORD.$vm"
            ) &
        done
    fi
    for p in "${migrators[@]}"; do wait "$p"; done
    rm -f "$READING"
    for p in "${readers[@]}"; do wait "$p"; done
    wait # the first-record pollers
    n_ok=0
    for d in "$RUNS"/migrate"$round"-*; do
        rc=$(cat "$d/rc" 2>/dev/null || echo none)
        if [[ $rc == 0 ]]; then n_ok=$((n_ok + 1)); else
            fail "round $round: zmigrate $(cat "$d/argv") exited $rc"
            sed 's/^/#   /' "$d/err" | tail -5
        fi
    done
    check "round $round: the 3 concurrent migrate --finalize to $dst exited 0 ($((SECONDS - t0)) s)" test "$n_ok" = 3
    for vm in "${VMS[@]}"; do
        want_srv=$(printf '564d0000-0000-4000-8000-0000000000%02d' "${dst#cn}")
        check "round $round: ${ALIAS[$vm]} is ${WANT_STATE[$vm]} on $dst, gone from $src, VMAPI agrees" \
            test "$(vm_state "$dst" "$vm") $(vm_state "$src" "$vm") $(vmapi "$vm" 'd["server_uuid"]')" = \
            "${WANT_STATE[$vm]} absent $want_srv"
    done
    ((MT_FAILS == fails_before)) || mt_die "round $round failed: the next round would start from an unknown state"
    tmp=$src
    src=$dst
    dst=$tmp
done
note "$ROUNDS rounds in $((SECONDS - t_rounds)) s"

# --- the readers ------------------------------------------------------------------------------
python3 - "$RUNS" "$FIRST_RECORD" "${VMS[@]}" >"$MT_WORK/readers.txt" <<'EOF'
import os, sys
runs, first_prefix, vms = sys.argv[1], sys.argv[2], sys.argv[3:]
first = {}
for vm in vms:
    try:
        first[vm] = float(open("%s.%s" % (first_prefix, vm)).read())
    except (OSError, ValueError):
        first[vm] = None
count, bad = {}, []
for name in sorted(os.listdir(runs)):
    d = os.path.join(runs, name)
    kind = name.split(".")[0].split("-")[0]
    argv = open(os.path.join(d, "argv")).read().strip()
    try:
        rc = int(open(os.path.join(d, "rc")).read())
    except (OSError, ValueError):
        rc = None
    if kind.startswith("migrate"):
        continue
    count[kind] = count.get(kind, 0) + 1
    err = open(os.path.join(d, "err")).read()
    if rc == 0:
        continue
    vm = next((v for v in vms if v in argv), None)
    started = float(open(os.path.join(d, "start")).read()) if os.path.exists(os.path.join(d, "start")) else None
    if rc == 3 and "no migration" in err and vm and started is not None and \
            (first.get(vm) is None or started < first[vm]):
        count["early-3"] = count.get("early-3", 0) + 1
        continue
    bad.append("zmigrate %s exited %s: %s" % (argv, rc, err.strip()[-300:]))
print("counts " + " ".join("%s=%d" % kv for kv in sorted(count.items())))
for b in bad:
    print("bad " + b)
EOF
note "readers: $(sed -n 's/^counts //p' "$MT_WORK/readers.txt")"
nbad=$(grep -c '^bad ' "$MT_WORK/readers.txt")
check "every watch, get and list exited 0 (or 3 before the first record); $nbad did not" test "$nbad" = 0
grep '^bad ' "$MT_WORK/readers.txt" | head -5 | sed 's/^/#   /'
nwatch=$(sed -n 's/^counts .*watch=\([0-9]*\).*/\1/p' "$MT_WORK/readers.txt")
check "the watchers ran (${nwatch:-0} watch processes)" test "${nwatch:-0}" -ge 6

locked=$(grep -rl -i -E 'database is locked|locked for more than|SQLITE_BUSY|database is busy' "$RUNS" "$NEW_RUNS" 2>/dev/null | head -3)
check "no process printed a locked state database${locked:+ (see ${locked//$'\n'/ })}" test -z "$locked"
nproc=$(find "$RUNS" "$NEW_RUNS" -mindepth 1 -maxdepth 1 -type d | wc -l)
note "$nproc zmigrate processes in all"

# --- the record -------------------------------------------------------------------------------
zm_ok "list --all --json" --json list --all
check "list --all shows $((3 * ROUNDS)) migrations, all archived after a successful finalize" \
    test "$(zm_json 'sum(1 for m in (d if isinstance(d, list) else d.get("migrations", [])) if m["phase"] == "finalize" and m["state"] == "successful")')" = "$((3 * ROUNDS))"

mt_finish
