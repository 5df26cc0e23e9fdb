#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# What the operator sees: `watch --json` of a running sync from a second process, the progress
# bar on a terminal (a real pty from script(1)), plain lines when piped or NO_COLOR, `list` and
# `get` after a whole migration, and the per-migration bunyan log (one line per remote command,
# counted independently from the nodes' sshd logs; no key material).
set -uo pipefail
source "$(dirname "$0")/lib_migrate.sh"

mt_setup zmt-ux 10.95.6
command -v script >/dev/null || mt_die "script(1) (bsdutils) is missing"

# A sync long enough to be watched: ~48 MiB of incompressible data in web01's delegated dataset.
on cn1 "dd if=/dev/urandom of=/zones/$WEB/data/ux-fill bs=1M count=48 2>/dev/null && sync" ||
    mt_die "filling web01"
zm_ok "begin -n cn2 web01" begin --allow-older-platform -n cn2 "$WEB" || mt_die "begin"
ID=$(mig_id "$WEB")

# --- 1. watch --json follows a sync run by another process ---------------------------------
sync_out=$MT_WORK/sync.piped
timeout 300 "$ZM" sync "$WEB" >"$sync_out" 2>&1 </dev/null &
sync_pid=$!
sync_running() { [[ $(mig_field "$WEB" '"%s %s" % (d["phase"], d["state"])') == "sync running" ]]; }
wait_until 30 sync_running || fail "the sync never showed as running in get --json"
watch_out=$MT_WORK/watch.json
t0=$SECONDS
timeout 300 "$ZM" watch --json "$WEB" >"$watch_out" 2>"$MT_WORK/watch.err"
watch_rc=$?
wait "$sync_pid"
sync_rc=$?
check "sync (piped) exited 0" test "$sync_rc" = 0
check "watch --json exited 0 after the sync ($((SECONDS - t0)) s)" test "$watch_rc" = 0
if verdict=$(python3 - "$watch_out" <<'EOF'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
prog = [e for e in ev if e.get("type") == "progress" and e.get("state") == "running"]
bad = []
cur = [e["current_progress"] for e in prog if "current_progress" in e]
if any(b < a for a, b in zip(cur, cur[1:])):
    bad.append("current_progress not monotonic: %s" % cur)
if any(e.get("current_progress", 0) > e.get("total_progress", 1 << 62) for e in prog):
    bad.append("current_progress above total_progress")
eta = [e for e in prog if "eta_ms" in e and "transfer_bytes_second" in e]
if not eta:
    bad.append("no running event with eta_ms and transfer_bytes_second")
if not ev or ev[-1].get("type") != "end":
    bad.append("last event is not type end: %s" % (ev[-1] if ev else None))
elif (ev[-1].get("phase"), ev[-1].get("state")) != ("sync", "paused"):
    bad.append("end event is %s/%s, not sync/paused" % (ev[-1].get("phase"), ev[-1].get("state")))
if any(e.get("phase") != "sync" for e in ev):
    bad.append("events of another phase")
if bad:
    print("; ".join(bad))
    sys.exit(1)
print("%d events, %d running with eta, progress %s" % (len(ev), len(eta), cur[:6]))
EOF
); then ok "watch --json: $verdict"; else fail "watch --json: $verdict"; sed 's/^/#   /' "$watch_out" | head -20; fi

# piped: plain lines, no escapes, no carriage returns
if grep -q $'\x1b\|\r' "$sync_out"; then
    fail "piped sync output has escape codes or carriage returns"
    od -c "$sync_out" | head -5 | sed 's/^/#   /'
else
    ok "piped sync output is plain ($(grep -c . "$sync_out") lines, no ESC, no CR)"
fi
check "piped sync output reports the sync and ends with OK" \
    bash -c "grep -q '^ *sync 1: ' '$sync_out' && tail -1 '$sync_out' | grep -q '^OK - '"

# attaching to a migration with nothing running prints the end event at once
t0=$(date +%s.%N)
zm watch --json "$WEB"
secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
if ((ZM_RC == 0)) && [[ $(grep -c . "$ZM_OUT") == 1 ]] && zm_json 'd["type"] == "end" or exit(1)' >/dev/null; then
    ok "watch --json of an idle migration prints one end event at once (${secs} s)"
else
    fail "watch --json of an idle migration: rc $ZM_RC, $(head -c 300 "$ZM_OUT")"
fi

# --- 2. a terminal: the bar; NO_COLOR: plain -------------------------------------------------
sshd_sessions() { grep -c "Starting session: command for root from $LAB_SUBNET.1 " "$LAB_DIR/nodes/$1/sshd.log" || true; }
on cn1 "dd if=/dev/urandom of=/zones/$WEB/data/ux-fill2 bs=1M count=24 2>/dev/null && sync"
log=$LAB_DIR/log/$ID.log
log_before=$(grep -c . "$log")
s1_before=$(sshd_sessions cn1)
s2_before=$(sshd_sessions cn2)
pty_out=$MT_WORK/sync.pty
script -qec "$ZM sync $WEB" "$pty_out" >/dev/null 2>&1 </dev/null
pty_rc=$?
check "sync on a pty exited 0" test "$pty_rc" = 0
if grep -q $'\x1b\[K' "$pty_out" && grep -q '\[#' "$pty_out" && grep -q '%' "$pty_out"; then
    ok "sync on a pty draws the bar (ESC[K redraws, [###, percent)"
else
    fail "sync on a pty shows no bar"
    od -c "$pty_out" | head -8 | sed 's/^/#   /'
fi
s1_after=$(sshd_sessions cn1)
s2_after=$(sshd_sessions cn2)
log_after=$(grep -c . "$log")

nocolor_out=$MT_WORK/sync.nocolor
on cn1 "dd if=/dev/urandom of=/zones/$WEB/data/ux-fill3 bs=1M count=4 2>/dev/null && sync"
NO_COLOR=1 script -qec "$ZM sync $WEB" "$nocolor_out" >/dev/null 2>&1 </dev/null
# script(1) adds its own header line and CRLF line ends; strip those before looking.
if tail -n +2 "$nocolor_out" | tr -d '\r' | grep -q $'\x1b'; then
    fail "NO_COLOR on a pty still writes escape codes"
elif [[ $(tail -n +2 "$nocolor_out" | grep -o $'\r' | wc -l) -gt $(tail -n +2 "$nocolor_out" | grep -c .) ]]; then
    fail "NO_COLOR on a pty redraws lines with carriage returns"
else
    ok "NO_COLOR on a pty: plain lines"
fi

# --- 3. the log of that pty sync: one line per remote command ----------------------------------
if res=$(python3 - "$log" "$log_before" "$log_after" "$ID" "$WEB" <<'EOF'
import json, sys, collections
path, skip, upto, mid, vm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
lines = open(path).read().splitlines()
bad, hosts, http = [], collections.Counter(), 0
for i, l in enumerate(lines):
    try:
        d = json.loads(l)
    except ValueError:
        bad.append("line %d is not JSON" % (i + 1)); continue
    for k in ("name", "hostname", "pid", "level", "time", "msg", "v"):
        if k not in d:
            bad.append("line %d lacks %s" % (i + 1, k))
    if d.get("migration_id") != mid or d.get("vm_uuid") != vm:
        bad.append("line %d lacks migration_id/vm_uuid" % (i + 1))
    if d.get("msg", "").startswith("remote command"):
        for k in ("host", "argv", "duration_ms", "exit_status"):
            if k not in d:
                bad.append("remote line %d lacks %s" % (i + 1, k))
        if skip <= i < upto:
            hosts[d.get("host")] += 1
    if d.get("msg") == "http request":
        http += 1
        for k in ("method", "url", "status", "duration_ms", "req_id"):
            if k not in d:
                bad.append("http line %d lacks %s" % (i + 1, k))
print(hosts.get("cn1", 0), hosts.get("cn2", 0), http, "; ".join(bad[:5]))
EOF
); then
    read -r l1 l2 nhttp rest <<<"$res"
    [[ -z $rest ]] && ok "every log line is bunyan with migration_id and vm_uuid; $nhttp http lines carry method/url/status/req_id" ||
        fail "log lines: $rest"
    d1=$((s1_after - s1_before))
    d2=$((s2_after - s2_before))
    if ((l1 == d1 && l2 == d2 && d1 > 0)); then
        ok "one log line per remote command of the pty sync: cn1 $l1 = $d1 sshd sessions, cn2 $l2 = $d2"
    else
        fail "remote command lines (cn1 $l1, cn2 $l2) differ from sshd sessions (cn1 $d1, cn2 $d2)"
    fi
else
    fail "could not read the log $log: $res"
fi
# the begin's validation happened before the migration had an id; it is in the log too
check "the log holds begin's validation calls (CNAPI request before 'lease taken')" \
    bash -c "head -20 '$log' | grep -q '\"url\":\"[^\"]*/servers'"

# --- 4. a whole migration, then list and get -------------------------------------------------
zm_ok "switch web01" switch "$WEB"
keyfile=$MT_WORK/keys.seen
: >"$keyfile"
for f in "$LAB_DIR"/log/*.log; do
    grep -l -e 'PRIVATE KEY' -e 'b3BlbnNzaC1rZXktdjE' "$f" >>"$keyfile" || true
done
check "no private key material in any log" test ! -s "$keyfile"
# every ephemeral public key (the authorized_keys line on the target) is redacted as well
check "the ephemeral key's public blob is never logged" \
    bash -c "! grep -h -o 'ssh-ed25519 AAAA[A-Za-z0-9+/=]*' '$LAB_DIR'/log/*.log | grep -v -F -f <(cut -d' ' -f2,3 '$LAB_DIR/known_hosts') | grep -q ."

zm --json list --all
if r=$(zm_json '[(m["vm_uuid"], m["phase"], m["state"]) for m in (d if isinstance(d, list) else d.get("migrations", []))]'); then
    if [[ $r == *"$WEB"*switch*successful* ]]; then ok "list --all --json: $r"; else fail "list --all --json: $r"; fi
else
    fail "list --all --json is not JSON"
fi
zm list -l --all
check "list -l shows the header and a switch/successful row with both CNs" \
    bash -c "head -1 '$ZM_OUT' | grep -q 'UUID *PHASE *STATE *AGE *RUNTIME *SOURCE_CN *TARGET_CN *ERROR' && grep -q '$WEB *switch *successful .* cn1 *cn2' '$ZM_OUT'"
zm list -s successful
check "list -s successful lists it; -s failed does not" \
    bash -c "grep -q '$WEB' '$ZM_OUT' && ! '$ZM' list -s failed | grep -q '$WEB'"

zm --json get "$WEB"
if r=$(zm_json '" ".join("%s/%s" % (e["phase"], e["state"]) for e in d["progress_history"])'); then
    if [[ $r == "begin/paused sync/paused sync/paused sync/paused switch/successful" ]]; then
        ok "get --json phase runs: $r"
    else
        fail "get --json phase runs: $r"
    fi
fi
r=$(zm_json '[e for e in d["progress_history"] if e["phase"] == "switch"][0].get("details", {})')
if python3 -c "import json,sys; d=json.loads(sys.argv[1]); s=d.get('downtime_steps',{}); sys.exit(0 if d.get('downtime_ms',0) > 0 and {'stop','final_sync','start_target'} <= set(s) else 1)" "$r"; then
    ok "get --json: switch downtime with its steps"
else
    fail "get --json: no switch downtime breakdown: $r"
fi
zm get "$WEB"
check "get: header fields, a row per phase run, sync bytes/rate, downtime" \
    bash -c "grep -q '^State: *switch successful' '$ZM_OUT' && grep -q '^Source server: *cn1' '$ZM_OUT' && grep -q '^Target server: *cn2' '$ZM_OUT' && [[ \$(grep -c ' sync ' '$ZM_OUT') -ge 3 ]] && grep -q 'MB/s' '$ZM_OUT' && grep -qi 'downtime' '$ZM_OUT'"
if grep -q $'\x1b' "$ZM_OUT"; then fail "get (piped) has escape codes"; else ok "get (piped) has no escape codes"; fi

# --- 5. rollback says what it throws away, and asks on a terminal -----------------------------
# web01's writer has written on cn2 since the switch; answering "n" on a pty changes nothing.
rb_out=$MT_WORK/rollback.pty
printf 'n\n' | script -qec "$ZM rollback $WEB" "$rb_out" >/dev/null 2>&1
rb_rc=$?
if ((rb_rc == 1)) && grep -q 'This throws away .* written on cn2 since the switch' "$rb_out" &&
    grep -q 'not confirmed; nothing was changed' "$rb_out"; then
    ok "rollback on a pty says how much was written on cn2 since the switch and asks; 'n' refuses"
else
    fail "rollback on a pty: rc $rb_rc: $(tr -d '\r' <"$rb_out" | tail -3)"
fi
check "the refused rollback changed nothing (switch/successful)" \
    test "$(mig_field "$WEB" 'd["phase"] + "/" + d["state"]')" = switch/successful

mt_finish
