#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Lab test (issue 10, "The fault suite"): kill -9 at every journaled step, not a chosen few.
# The steps are not listed here: a reference run of each way (migrate --finalize, rollback,
# abort) journals its steps in the state database, and the test reads them from there, so a
# step added to the engine is covered without touching this file. For each step S, zmigrate is
# killed by the test-only fault hook (ZMIGRATE_FAULT_STEP=S: SIGKILL just before S), then the
# same command is rerun. web01 (a running zone) covers every step of its reference runs; lx01 (a
# stopped lx zone) and bhyve01 (a running bhyve VM with two disks) then cover the steps only
# they journal (mount_target, remove_quota, restore_quota, ...). After each:
#  - never two copies of web01 running (a 50 ms watcher over the crash and the rerun)
#  - the rerun converges (exit 0)
#  - no key line or private dir of the migration on either node
#  - migrate --finalize: the instance runs on the target only, the source copy is gone, a 2 MiB
#    random file in its root and its delegated dataset hash as on the source before; the
#    writer file goes on intact
#  - rollback: the instance runs on the source again, with the same files; abort: the target
#    holds nothing of it
# Exit 0 pass, 1 fail, 125 skip (not root, no /dev/fuse, no netns, no python3 sqlite3).
set -euo pipefail
# shellcheck source=lib_migrate.sh
source "$(dirname "$(readlink -f "$0")")/lib_migrate.sh"

python3 -c 'import sqlite3' 2>/dev/null || { echo "SKIP: python3 without sqlite3"; exit 125; }

mt_setup zmt-csteps 10.96.17
STATE_DB=$LAB_DIR/state/zmigrate.db

# steps_of ID PHASE...: the distinct journaled step names of migration ID in PHASEs, in order.
steps_of() {
    python3 - "$STATE_DB" "$@" <<'EOF'
import sqlite3, sys
db, mid, phases = sys.argv[1], sys.argv[2], sys.argv[3:]
con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
seen = []
for (name,) in con.execute("SELECT name FROM steps WHERE migration_id = ? ORDER BY id", (mid,)):
    if name.split(".")[0] in phases and ".undo." not in name and name not in seen:
        seen.append(name)
print("\n".join(seen))
EOF
}

# files_sum NODE: what must move intact, as one line: the sha256 of a 2 MiB random file in
# the instance's root (the rest of the root dataset holds the zone's own configuration, which
# the migration rewrites) and the zlab-sum of every dataset below the root (delegated, disks).
files_sum() {
    on "$1" "sha256sum /zones/$WEB/root/var/tmp/zcrash.bin | cut -d' ' -f1" || return 1
    probe "$1" "$WEB" sum && pj "$1" 'sorted((k, v) for k, v in d.get("sums", {}).items() if k != "zones/'"$WEB"'")'
}

# after_crash LABEL: the checks common to every crash and rerun.
after_crash() {
    local label=$1 both left
    both=$(mt_watch_stop)
    check "$label: never two copies running over crash and rerun ($both overlapping moments)" test "$both" = 0
    if left=$(keys_clean cn1 cn2); then ok "$label: no key line or private dir left"; else
        fail "$label: after the rerun: $left"
    fi
}

# crash CMD STEP ARGS...: zmigrate ARGS killed at STEP (must die by SIGKILL), then rerun.
crash() {
    local label="kill -9 at $1"
    shift
    mt_watch_start "$WEB"
    export ZMIGRATE_FAULT_STEP=${label#kill -9 at }
    zm "$@"
    unset ZMIGRATE_FAULT_STEP
    if ((ZM_RC == 137)); then CRASHES=$((CRASHES + 1)); else
        fail "$label: expected death by SIGKILL (137), got exit $ZM_RC: the step was not reached"
        zm_show
    fi
    zm "$@"
    if ((ZM_RC == 0)); then ok "$label: the rerun of $1 converges (${ZM_SECS} s)"; else
        fail "$label: the rerun of $* exited $ZM_RC"
        zm_show
    fi
    after_crash "$label"
}

CRASHES=0
other() { [[ $1 == cn1 ]] && echo cn2 || echo cn1; }
# marker NODE: a 2 MiB random file in web01's ($WEB's) root, written once.
marker() { on "$1" "mkdir -p /zones/$WEB/root/var/tmp && head -c $((2 << 20)) /dev/urandom > /zones/$WEB/root/var/tmp/zcrash.bin && sync"; }

# migrate_crashes WANT STEP...: for each STEP, `migrate --finalize` of $WEB from $HERE to the
# other node killed at STEP and rerun; then the source copy is gone and the instance is on the
# target in state WANT (running: with its writer file intact), its files hashed as before.
migrate_crashes() {
    local want=$1 step dst sum0 sum1
    shift
    for step in "$@"; do
        dst=$(other "$HERE")
        sum0=$(files_sum "$HERE" | tr '\n' ' ') || fail "probe $HERE"
        if [[ $step == begin.import_image.* ]]; then
            # The image stayed on the node the instance came from: delete it there, so that this
            # migration imports it. Where another instance still uses it, go there first and
            # come back to the node the image can leave.
            if ! on "$dst" "imgadm delete ${step#begin.import_image.}" >/dev/null 2>&1; then
                zm_ok "$step: move to $dst first (its image is in use there)" migrate --finalize -n "$dst" "$WEB" || mt_die "move"
                HERE=$dst
                dst=$(other "$HERE")
                sum0=$(files_sum "$HERE" | tr '\n' ' ') || fail "probe $HERE"
                on "$dst" "imgadm delete ${step#begin.import_image.}" >/dev/null || fail "imgadm delete on $dst"
            fi
        fi
        crash "$step" migrate --finalize -n "$dst" "$WEB"
        probe "$HERE" "$WEB" || true
        check "kill -9 at $step: the source copy on $HERE is gone" test "$(pj "$HERE" 'd["vm"], sorted(d["datasets"])')" = '[null, []]'
        probe "$dst" "$WEB" writer || true
        if [[ $want == running ]]; then
            check "kill -9 at $step: the instance runs on $dst, visible, its writer file intact" \
                test "$(pj "$dst" '(d["vm"] or {}).get("state"), d["running"], bool((d["vm"] or {}).get("do_not_inventory")), (d.get("writer") or {}).get("verify_rc")')" = '["running", true, false, 0]'
        else
            check "kill -9 at $step: the instance is on $dst, stopped, visible" \
                test "$(pj "$dst" '(d["vm"] or {}).get("state"), d["running"], bool((d["vm"] or {}).get("do_not_inventory"))')" = '["stopped", false, false]'
        fi
        sum1=$(files_sum "$dst" | tr '\n' ' ') || true
        check "kill -9 at $step: its files on $dst hash as on $HERE before ($sum1 / $sum0)" test "$sum1" = "$sum0"
        HERE=$dst
    done
}

# --- migrate --finalize: begin, sync, switch and finalize -------------------------------------
HERE=cn1
marker cn1 || mt_die "filling web01"
zm_ok "reference: migrate --finalize -n cn2" migrate --finalize -n cn2 "$WEB" || mt_die "reference migrate"
HERE=cn2
mapfile -t MIGRATE_STEPS < <(steps_of "$(mig_id "$WEB")" begin sync switch finalize)
note "${#MIGRATE_STEPS[@]} journaled steps of migrate --finalize: ${MIGRATE_STEPS[*]}"
((${#MIGRATE_STEPS[@]} >= 20)) || fail "only ${#MIGRATE_STEPS[@]} steps journaled by migrate --finalize"
migrate_crashes running "${MIGRATE_STEPS[@]}"

# --- rollback ---------------------------------------------------------------------------------
# to_switched DST: begin, sync and switch web01 to DST (not finalized).
to_switched() {
    zm_ok "begin -n $1" begin -n "$1" "$WEB" && zm_ok "sync" sync "$WEB" && zm_ok "switch" switch "$WEB"
}
dst=$(other "$HERE")
to_switched "$dst" || mt_die "reference switch"
zm_ok "reference: rollback" rollback "$WEB" || mt_die "reference rollback"
mapfile -t ROLLBACK_STEPS < <(steps_of "$(mig_id "$WEB")" rollback)
note "${#ROLLBACK_STEPS[@]} journaled steps of rollback: ${ROLLBACK_STEPS[*]}"
((${#ROLLBACK_STEPS[@]} >= 3)) || fail "only ${#ROLLBACK_STEPS[@]} steps journaled by rollback"
for step in "${ROLLBACK_STEPS[@]}"; do
    SUM0=$(files_sum "$HERE" | tr '\n' ' ') || fail "probe $HERE"
    to_switched "$dst" || mt_die "switch before the rollback crash"
    crash "$step" rollback "$WEB"
    probe "$HERE" "$WEB" || true
    check "kill -9 at $step: web01 runs on $HERE again, visible" \
        test "$(pj "$HERE" '(d["vm"] or {}).get("state"), d["running"], bool((d["vm"] or {}).get("do_not_inventory"))')" = '["running", true, false]'
    check "kill -9 at $step: not running on $dst" test "$(running_now "$dst" "$WEB" && echo yes || echo no)" = no
    check "kill -9 at $step: web01's files on $HERE hash as before" test "$(files_sum "$HERE" | tr '\n' ' ')" = "$SUM0"
done

# --- abort ------------------------------------------------------------------------------------
zm_ok "begin -n $dst" begin -n "$dst" "$WEB" && zm_ok "sync" sync "$WEB" || mt_die "sync before the reference abort"
zm_ok "reference: abort" abort "$WEB" || mt_die "reference abort"
mapfile -t ABORT_STEPS < <(steps_of "$(mig_id "$WEB")" abort)
note "${#ABORT_STEPS[@]} journaled steps of abort: ${ABORT_STEPS[*]}"
((${#ABORT_STEPS[@]} >= 2)) || fail "only ${#ABORT_STEPS[@]} steps journaled by abort"
for step in "${ABORT_STEPS[@]}"; do
    zm_ok "begin -n $dst" begin -n "$dst" "$WEB" && zm_ok "sync" sync "$WEB" || mt_die "sync before the abort crash"
    crash "$step" abort "$WEB"
    probe "$dst" "$WEB" || true
    check "kill -9 at $step: $dst holds nothing of web01" test "$(pj "$dst" 'd["vm"], sorted(d["datasets"]), d["zm_snaps"]')" = '[null, [], []]'
    check "kill -9 at $step: web01 still runs on $HERE" running_now "$HERE" "$WEB"
done

# --- the steps only other kinds run: a stopped lx zone, a running bhyve VM -----------------------
# (begin.remove_quota and switch.restore_quota for bhyve, switch.mount_target for a stopped
# instance, ...): their reference runs journal them; each is crashed as above.
EXTRA=0
for kind in "$LX stopped cn1" "$BHYVE running cn2"; do
    read -r WEB want HERE <<<"$kind"
    marker "$HERE" || mt_die "filling $WEB"
    dst=$(other "$HERE")
    zm_ok "reference: migrate --finalize -n $dst $WEB" migrate --finalize -n "$dst" "$WEB" || mt_die "reference migrate of $WEB"
    HERE=$dst
    new=()
    for step in $(steps_of "$(mig_id "$WEB")" begin sync switch finalize); do
        [[ " ${MIGRATE_STEPS[*]} " == *" $step "* ]] || new+=("$step")
    done
    note "steps of $WEB ($want) that web01 does not run: ${new[*]:-none}"
    migrate_crashes "$want" "${new[@]}"
    MIGRATE_STEPS+=("${new[@]}")
    EXTRA=$((EXTRA + ${#new[@]}))
done
((EXTRA >= 2)) || fail "only $EXTRA steps of lx01 and bhyve01 that web01 does not run"

total=$((${#MIGRATE_STEPS[@]} + ${#ROLLBACK_STEPS[@]} + ${#ABORT_STEPS[@]}))
check "killed at all $total journaled steps ($CRASHES SIGKILLs reached their step)" test "$CRASHES" = "$total"
mt_finish
