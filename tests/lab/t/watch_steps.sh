#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Lab test (issue 14, "Watch shows everything"): `zmigrate watch` in a second process shows every
# step message of a switch and of a rollback, with the same words and in the same order as the
# command itself prints them, in plain text and in JSON.
# The link to the receiving node is throttled and a little new data written first, so that the
# phase's data pass lasts seconds: the watchers attach while the phase runs (the record says
# switch/running, resp. rollback/running), catch up with what the phase printed so far, and
# follow it to its end.
# Exit 0 pass, 1 fail, 125 skip (not root, no /dev/fuse, no netns, no tc).
set -euo pipefail
# shellcheck source=lib_migrate.sh
source "$(dirname "$(readlink -f "$0")")/lib_migrate.sh"

if ((EUID == 0)) && ! command -v tc >/dev/null; then
    echo "SKIP: no tc (iproute2) to throttle the link"
    exit 125
fi

mt_setup zmt-wsteps 10.96.19
# shellcheck source=lib_faults.sh
source "$MT_T_DIR/lib_faults.sh"
trap 'ft_restore; mt_exited $?' EXIT

phase_is() { [[ $(mig_field "$WEB" '"%s/%s" % (d["phase"], d["state"])' 2>/dev/null) == "$1" ]]; }

# watched LABEL PHASE SLOW_NODE ARGS...: zmigrate ARGS (a PHASE command) in the background with
# SLOW_NODE's link throttled; two watchers (plain and --json) attach once the record shows
# PHASE/running; then every " - " step line of the command must appear in both watchers, in
# order.
watched() {
    local label=$1 phase=$2 slow=$3 cpid w1 w2 rc
    shift 3
    throttle "$slow"
    "$ZM" "$@" >"$MT_WORK/cmd.out" 2>"$MT_WORK/cmd.err" </dev/null &
    cpid=$!
    if ! wait_until 60 phase_is "$phase/running"; then
        fail "$label: the record never showed $phase/running"
        unthrottle "$slow"
        wait "$cpid" || true
        return 0
    fi
    "$ZM" watch "$WEB" >"$MT_WORK/watch.out" 2>&1 </dev/null &
    w1=$!
    "$ZM" watch --json "$WEB" >"$MT_WORK/watch.json" 2>&1 </dev/null &
    w2=$!
    # Both watchers have had their first look once each printed a line; then the rest may run fast.
    wait_until 30 test -s "$MT_WORK/watch.out" -a -s "$MT_WORK/watch.json" ||
        fail "$label: a watcher printed nothing within 30 s"
    unthrottle "$slow"
    rc=0
    wait "$cpid" || rc=$?
    check "$label: zmigrate $* exits 0 (got $rc)" test "$rc" = 0
    for p in "$w1" "$w2"; do
        wait_until 30 test ! -e "/proc/$p" || { fail "$label: a watcher did not end with the phase"; kill "$p" 2>/dev/null || true; }
        wait "$p" 2>/dev/null || true
    done
    {
        printf '\n$ zmigrate %s\n' "$*"
        cat "$MT_WORK/cmd.out" "$MT_WORK/cmd.err"
        printf '\n$ zmigrate watch (second process)\n'
        cat "$MT_WORK/watch.out"
        printf '\n$ zmigrate watch --json (third process)\n'
        cat "$MT_WORK/watch.json"
    } >>"$MT_WORK/zm.log"
    python3 - "$label" "$MT_WORK/cmd.out" "$MT_WORK/watch.out" "$MT_WORK/watch.json" <<'EOF'
import json, sys
label, cmd, plain, js = sys.argv[1:]
steps = [l[3:].rstrip("\n") for l in open(cmd) if l.startswith(" - ")]
seen = [l[3:].rstrip("\n") for l in open(plain) if l.startswith(" - ")]
dec, text, i, msgs = json.JSONDecoder(), open(js).read(), 0, []
while i < len(text):
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text):
        break
    obj, i = dec.raw_decode(text, i)
    if obj.get("type") == "progress" and obj.get("message"):
        msgs.append(obj["message"])
def subsequence(want, got):
    it = iter(got)
    return all(any(w == g for g in it) for w in want)
ok = True
for name, got in (("plain watch", seen), ("watch --json", msgs)):
    if len(steps) >= 5 and subsequence(steps, got):
        print("ok - %s: %s shows all %d step lines of the command, in order" % (label, name, len(steps)))
    else:
        ok = False
        print("FAIL - %s: %s shows %r; the command printed %r" % (label, name, got, steps))
sys.exit(0 if ok else 1)
EOF
    (($? == 0)) || MT_FAILS=$((MT_FAILS + 1))
}

zm_ok "begin -n cn2 web01" begin -n cn2 "$WEB" || mt_die "begin"
MIG=$(mig_id "$WEB")
zm_ok "sync" sync "$WEB" || mt_die "sync"
# The switch's presync sends this at 2 mbit (about 8 s).
fill cn1 1 2
watched "switch" switch cn2 switch "$WEB"
verify_switched "switch" "$WEB" cn1 cn2

# The rollback sends what the target wrote since the switch back (--keep-changes), at 2 mbit.
fill cn2 2 2
watched "rollback" rollback cn1 rollback --keep-changes --yes "$WEB"
probe cn1 "$WEB" || true
check "rollback: web01 runs on cn1 again, visible" \
    test "$(pj cn1 '(d["vm"] or {}).get("state"), d["running"], bool((d["vm"] or {}).get("do_not_inventory"))')" = '["running", true, false]'
nothing_left "rollback"

mt_finish
