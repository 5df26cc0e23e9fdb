#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# evacuate --parallel: empty cn1 (7 running and stopped instances of every brand, writers on)
# onto four other nodes that differ (cn3 lacks the external NIC tag, cn4 has trait ssd=true and
# is kept for the instance asking for it, cn5 runs an older platform), with --parallel 3
# --per-node 2 --bwlimit. The plan explains every refused node; the evacuation is killed (-9,
# every zmigrate process, as a head-node crash) midway and run again to the end; the journal
# and the nodes' sshd logs prove that at no moment more than 3 transfers ran, nor more than 2
# into one node, and the journal that no stream went faster than its share of the budget; every
# instance's data is checked on its new node and VMAPI places it there; then `restore cn1` brings them all back.
set -uo pipefail
source "$(dirname "$0")/lib_migrate.sh"

export LAB_LAYOUT=evacuate LAB_SEED_VMS=web01,min01,lx01,kvm01@1,bhyve01@1
mt_setup zmt-par 10.96.24 5

BUDGET=$((3 << 20)) # bytes/s for the whole evacuation: 1 MiB/s for each of 3
ALL=$(curl -sS "$VMAPI_URL/vms?server_uuid=564d0000-0000-4000-8000-000000000001&state=active" |
    python3 -c 'import json,sys; print(" ".join(sorted(v["uuid"] for v in json.load(sys.stdin))))')
read -ra VMS <<<"$ALL"
check "cn1 holds 7 instances (${#VMS[@]})" test "${#VMS[@]}" = 7
APP01=5eed0000-0000-4000-8000-000000000111
APP02=5eed0000-0000-4000-8000-000000000112

# --- the plan -----------------------------------------------------------------------------------
zm_ok "evacuate --dry-run cn1" --json evacuate --dry-run cn1
plan=$(zm_json '" ".join(sorted("%s:%s" % (i["alias"], i["target"]) for i in d["instances"]))')
note "plan: $plan"
check "app02 (asks for ssd) goes to cn4, the node kept for it" \
    test "$(zm_json '[i["target"] for i in d["instances"] if i["alias"] == "app02"][0]')" = cn4
check "no instance goes to cn5 (older platform) or to cn1" \
    bash -c "! grep -qE ':(cn5|cn1)( |$)' <<<'$plan'"
check "only app01 (admin NIC only) may go to cn3: web01 is refused there for its external NIC" \
    test "$(zm_json '[p["text"] for i in d["instances"] if i["alias"] == "web01" for n in i["placement"]["rejected"] if n["hostname"] == "cn3" for p in n["problems"] if p["rule"] == "nic_tag"][0]')" = "missing NIC tag external for NIC net0"
check "web01 is refused on cn4 for its traits and on cn5 for its platform" \
    test "$(zm_json '" ".join(sorted(n["hostname"] + ":" + p["rule"] for i in d["instances"] if i["alias"] == "web01" for n in i["placement"]["rejected"] if n["hostname"] != "cn1" for p in n["problems"]))')" = "cn3:nic_tag cn4:traits cn5:platform"
zm --json list --all
check "the dry run created no migration" test "$(zm_json 'len(d) if isinstance(d, list) else len(d.get("migrations", []))')" = 0

# --- the evacuation, killed midway --------------------------------------------------------------
# Where each node's sshd log stands now: the limits are checked again from what the nodes saw.
log_marks() { local k; for k in 1 2 3 4 5; do wc -l <"$LAB_DIR/nodes/cn$k/sshd.log"; done | paste -sd' '; }
read -ra MARK_START <<<"$(log_marks)"
# peaks NODE PEER FROM TO: connections from PEER in NODE's sshd log between two marks (arrays'
# names), by sshd_peaks.py.
peaks() {
    local -n from=$3 to=$4
    python3 "$(dirname "$0")/../sshd_peaks.py" "$LAB_DIR/nodes/$1/sshd.log" \
        "${from[${1#cn} - 1]}" "${to[${1#cn} - 1]}" "$2"
}
EVAC=(evacuate --finalize --parallel 3 --per-node 2 --bwlimit "$BUDGET" cn1)
"$ZM" "${EVAC[@]}" >"$MT_WORK/evac1.out" 2>"$MT_WORK/evac1.err" </dev/null &
evac_pid=$!
disown "$evac_pid" # killed below: no job notice
finalized() {
    "$ZM" --json list --all 2>/dev/null | python3 -c 'import json,sys
d = json.load(sys.stdin); ms = d if isinstance(d, list) else d.get("migrations", [])
print(sum(1 for m in ms if m["phase"] == "finalize" and m["state"] == "successful"))'
}
two_done_one_going() {
    (($(finalized) >= 2)) && [[ $("$ZM" --json list 2>/dev/null | python3 -c 'import json,sys
d = json.load(sys.stdin); ms = d if isinstance(d, list) else d.get("migrations", [])
print(len(ms))') -ge 1 ]]
}
# The evacuation is a record of its own: get/watch --evacuation follow it from another shell.
evac_record() { "$ZM" --json get --evacuation cn1 2>/dev/null | python3 -c "import json,sys; d = json.load(sys.stdin)['evacuation']; print($1)"; }
check "get --evacuation cn1 finds the evacuation while it runs" wait_until 60 evac_record 'd["id"]'
"$ZM" --json watch --evacuation cn1 >"$MT_WORK/watch1.out" 2>"$MT_WORK/watch1.err" </dev/null &
watch_pid=$!
if wait_until 240 two_done_one_going; then
    ok "two instances finalized and others under way: killing every zmigrate process (-9)"
else
    fail "the evacuation did not get midway in 240 s ($(finalized) finalized)"
fi
zm_ok "get --evacuation cn1, midway" --json get --evacuation cn1
EVAC_ID=$(zm_json 'd["evacuation"]["id"]')
check "it is running, in the evacuate process, with all 7 instances and some done" \
    test "$(zm_json '"%s %d %d %s" % (d["evacuation"]["state"], d["evacuation"]["pid"], d["evacuation"]["total"], d["evacuation"]["done"] >= 2 and d["evacuation"]["bytes_sent"] > 0)')" = "running $evac_pid 7 True"
KILLED_AT=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
# The evacuation and its migrations (its children, each in its own process group); stopped
# first, so it starts none between the listing and the kill.
kill -STOP "$evac_pid"
mapfile -t kids < <(pgrep -P "$evac_pid")
note "evacuate pid $evac_pid, its migrations: ${kids[*]}"
check "the migrations run as child processes of the evacuation (${#kids[@]})" test "${#kids[@]}" -ge 1
kill -KILL "$evac_pid" "${kids[@]}" 2>/dev/null
gone() { local p; for p in "$evac_pid" "${kids[@]}"; do kill -0 "$p" 2>/dev/null && return 1; done; return 0; }
check "none of them runs any more" wait_until 10 gone
note "killed at $KILLED_AT with $(finalized) finalized"
# sshd does not always log the end of a connection whose client was killed: the connections of
# the killed run are counted up to here, those of the rerun from here.
read -ra MARK_KILL <<<"$(log_marks)"

watch_ended() { ! kill -0 "$watch_pid" 2>/dev/null; }
check "watch --evacuation, started before the kill, ends once the evacuate process is gone" \
    wait_until 30 watch_ended
wait "$watch_pid"
watch_rc=$?
check "it exits 1 and says the evacuate process is gone ($watch_rc: $(tail -1 "$MT_WORK/watch1.err"))" \
    bash -c "[[ $watch_rc == 1 ]] && grep -q 'the evacuate process (pid $evac_pid on .*) is gone while it ran; run the same command again' '$MT_WORK/watch1.err'"
check "its JSON lines followed the evacuation (instances done before the kill)" \
    bash -c "python3 -c 'import json,sys; ds = [json.loads(l)[\"evacuation\"] for l in open(sys.argv[1])]; sys.exit(0 if len(ds) >= 2 and ds[-1][\"done\"] >= 2 else 1)' '$MT_WORK/watch1.out'"

# The rerun, followed by watch --evacuation from another shell until it ends.
(timeout -k 5 600 "$ZM" "${EVAC[@]}" >"$MT_WORK/evac2.out" 2>"$MT_WORK/evac2.err" </dev/null) &
rerun_pid=$!
rerun_started() { [[ $(evac_record 'd["pid"]') != "$evac_pid" ]]; }
check "the rerun takes up the evacuation's record" wait_until 60 rerun_started
MT_ZM_TIMEOUT=600 zm_ok "watch --evacuation cn1 follows the rerun to its end" watch --evacuation cn1
check "watch: a line as each instance moved on, and OK - cn1 evacuated at the end" \
    bash -c "grep -q ' to cn[24]: finalized' '$ZM_OUT' && tail -1 '$ZM_OUT' | grep -q '^OK - cn1 evacuated'"
wait "$rerun_pid"
rerun_rc=$?
check "the same evacuate again goes on to the end (exit $rerun_rc)" test "$rerun_rc" = 0
# The nodes log a connection's end a moment after the process that held it exits: the logs are
# read once every node logged the end of each connection of the evacuation.
read -ra MARK_END <<<"$(log_marks)"
all_closed() {
    read -ra MARK_END <<<"$(log_marks)"
    [[ $(peaks cn1 "$LAB_SUBNET.1" MARK_KILL MARK_END) == *'"open_at_end": 0}' ]] || return 1
    local n
    for n in cn2 cn3 cn4; do
        [[ $(peaks "$n" "$LAB_SUBNET.11" MARK_KILL MARK_END) == *'"open_at_end": 0}' ]] || return 1
    done
}
check "every node logged the end of every connection of the rerun" wait_until 10 all_closed
tail -9 "$MT_WORK/evac2.out" | sed 's/^/#   /'
check "it says cn1 is evacuated" bash -c "tail -1 '$MT_WORK/evac2.out' | grep -q '^OK - cn1 evacuated'"
check "cn1 has no instance left" test -z "$(on cn1 'vmadm list -H -o uuid')"

zm_ok "get --evacuation cn1, after the rerun" --json get --evacuation cn1
check "the same record, successful: 7 of 7 done, nothing left, bytes counted" \
    test "$(zm_json '"%s %s %d %d %s %s" % (d["evacuation"]["id"], d["evacuation"]["state"], d["evacuation"]["total"], d["evacuation"]["done"], d["evacuation"]["bytes_left"], d["evacuation"]["bytes_sent"] > 0)')" = "$EVAC_ID successful 7 7 0 True"
zm_ok "get --evacuation cn1 as text" get --evacuation cn1
sed 's/^/#   /' "$ZM_OUT"
check "the text names the evacuation and counts it" \
    bash -c "head -2 '$ZM_OUT' | grep -q '^Evacuation of cn1 (564d0000-0000-4000-8000-000000000001): successful' && grep -q '7 of 7 done' '$ZM_OUT'"
zm_ok "list --evacuation cn1" --json list --evacuation cn1
check "list --evacuation: 7 of 7 moved and finalized, none failed, bytes counted" \
    test "$(zm_json '"%d %d %d %d %s" % (d["evacuation"]["total"], d["evacuation"]["moved"], d["evacuation"]["finalized"], d["evacuation"]["failed"], d["evacuation"]["bytes_sent"] > 0)')" = "7 7 7 0 True"

# --- where each went, and its data ---------------------------------------------------------------
for vm in "${VMS[@]}"; do
    srv=$(vmapi "$vm" 'd["server_uuid"]')
    dst=cn$((10#${srv: -2}))
    want=$(vmapi "$vm" 'd["state"]')
    alias=$(vmapi "$vm" 'd["alias"]')
    check "$alias: VMAPI places it on $dst (not cn1, cn5), $want" \
        bash -c "[[ $dst != cn1 && $dst != cn5 ]]"
    probe "$dst" "$vm" sum writer >/dev/null || fail "$alias: probe $dst"
    check "$alias: on $dst in VMAPI's state, visible, its data intact" \
        test "$(pj "$dst" '(d["vm"] or {}).get("state"), bool((d["vm"] or {}).get("do_not_inventory")), all(not str(v).startswith("error") for v in (d.get("sums") or {}).values()), (d.get("writer") or {}).get("verify_rc", 0)')" = "[\"$want\", false, true, 0]"
    [[ $alias == app02 ]] && check "app02 is on cn4" test "$dst" = cn4
done

# --- the limits, from the journal ----------------------------------------------------------------
python3 - "$LAB_DIR/state/zmigrate.db" "$BUDGET" "$KILLED_AT" >"$MT_WORK/limits.out" <<'EOF'
import datetime, json, sqlite3, sys
db, budget, killed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
share = budget // 3
def t(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
target = dict(con.execute("SELECT id, target_server_uuid FROM migrations WHERE kind = 'migration'"))
# A step still 'running' was killed: it ran until the kill.
rows = [(m, name, t(st), t(fi) if fi else t(killed), json.loads(det or "{}"))
        for m, name, st, fi, det in con.execute(
            "SELECT migration_id, name, started, finished, details FROM steps")]
runs = [(m, t(st), t(fi) if fi else t(killed)) for m, st, fi in con.execute(
    "SELECT migration_id, started, finished FROM phase_runs")]
def peak(intervals):
    ev = sorted([(a, 1) for a, b in intervals] + [(b, -1) for a, b in intervals],
                key=lambda e: (e[0], e[1]))
    n = best = 0
    for _, d in ev:
        n += d
        best = max(best, n)
    return best
sends = [(m, a, b, d) for m, name, a, b, d in rows if name.endswith(".send")]
out = {"sends": len(sends), "migrations": len(target)}
out["peak_sends"] = peak([(a, b) for m, a, b, d in sends])
out["peak_sends_per_node"] = max(peak([(a, b) for m, a, b, d in sends if target[m] == node])
                                 for node in set(target.values()))
out["peak_phases"] = peak([(a, b) for m, a, b in runs])
out["peak_phases_per_node"] = max(peak([(a, b) for m, a, b in runs if target[m] == node])
                                  for node in set(target.values()))
# The streams: a send step of a sync sends its streams one after another in one command (its
# details list each with its own duration); a step of one stream is that stream.
streams = []
for m, a, b, d in sends:
    if isinstance(d.get("streams"), list):
        at = a
        for one in d["streams"]:
            end = min(b, at + one.get("duration_ms", 0) / 1000.0)
            streams.append((m, at, end, one))
            at = end
    else:
        streams.append((m, a, b, d))
out["streams"] = len(streams)
# Every counted stream: no faster than its share (the first 64 KiB chunk goes at once, and at
# most 100 ms of budget is carried over).
fast = []
counted = 0
for m, a, b, d in streams:
    if d.get("counted") and d.get("bytes", 0) > 0:
        counted += 1
        if d["bytes"] > share * (b - a) + share * 0.1 + 65536:
            fast.append("%s %d B in %.2f s" % (m[:8], d["bytes"], b - a))
out["counted"] = counted
out["too_fast"] = fast
# All streams together, in 1-second buckets (each stream's bytes spread over its time).
buckets = {}
for m, a, b, d in streams:
    if d.get("bytes", 0) > 0 and b > a:
        rate = d["bytes"] / (b - a)
        s = a
        while s < b:
            e = min(b, int(s) + 1)
            buckets[int(s)] = buckets.get(int(s), 0) + rate * (e - s)
            s = e
out["peak_bucket"] = int(max(buckets.values())) if buckets else 0
out["sent"] = sum(d.get("bytes", 0) for m, a, b, d in streams)
print(json.dumps(out))
EOF
limits=$(cat "$MT_WORK/limits.out")
note "journal: $limits"
lim() { python3 -c "import json,sys; d = json.loads(sys.argv[1]); print($1)" "$limits"; }
check "7 migrations, every stream in the journal" test "$(lim '"%d %s" % (d["migrations"], d["sends"] >= 7)')" = "7 True"
check "never more than 3 transfers at once ($(lim 'd["peak_sends"]')), nor migrations in a phase ($(lim 'd["peak_phases"]'))" \
    test "$(lim 'd["peak_sends"] <= 3 and d["peak_phases"] <= 3')" = True
check "never more than 2 into one node ($(lim 'd["peak_sends_per_node"]'), phases $(lim 'd["peak_phases_per_node"]'))" \
    test "$(lim 'd["peak_sends_per_node"] <= 2 and d["peak_phases_per_node"] <= 2')" = True
check "more than one ran at once (the evacuation was parallel)" test "$(lim 'd["peak_phases"] >= 2')" = True
check "no counted stream faster than its share of $((BUDGET >> 20)) MiB/s ($(lim 'd["counted"]') counted)" \
    test "$(lim 'd["too_fast"] == [] and d["counted"] > 0')" = True
check "all streams together within the budget in every second ($(lim 'd["peak_bucket"]') B/s)" \
    test "$(lim 'd["peak_bucket"] <= '"$BUDGET"' * 1.1')" = True
# --- the limits, from the nodes' sshd logs -------------------------------------------------------
# From the evacuation's start to the end of its rerun, in each node's own log (sshd_peaks.py):
# the head's logins to cn1 (each migration logs in to its source) and cn1's connections to each
# target (each migration's data path).
pk() { python3 -c "import json,sys; d = json.loads(sys.argv[1]); print($2)" "$1"; }
data_paths=0
for run in "MARK_START MARK_KILL killed run" "MARK_KILL MARK_END rerun"; do
    read -r from to what <<<"$run"
    p=$(peaks cn1 "$LAB_SUBNET.1" "$from" "$to")
    note "$what, cn1's sshd, logins from the head: $p"
    check "$what: cn1's sshd saw at most 3 logins from the head at once ($(pk "$p" 'd["peak"]'))" \
        test "$(pk "$p" 'd["peak"] <= 3 and d["opened"] >= 1')" = True
    for n in cn2 cn3 cn4; do
        p=$(peaks "$n" "$LAB_SUBNET.11" "$from" "$to")
        note "$what, $n's sshd, data paths from cn1: $p"
        check "$what: $n's sshd saw at most 2 data paths from cn1 at once ($(pk "$p" 'd["peak"]'))" \
            test "$(pk "$p" 'd["peak"] <= 2')" = True
        data_paths=$((data_paths + $(pk "$p" 'd["opened"]')))
    done
done
check "the data paths ran node to node ($data_paths from cn1)" test "$data_paths" -ge 7
# A data path runs on cn1, not on the head: one the kill left running counts on into the rerun.
for n in cn2 cn3 cn4; do
    p=$(peaks "$n" "$LAB_SUBNET.11" MARK_START MARK_END)
    check "killed run and rerun together: $n's sshd saw at most 2 data paths from cn1 at once ($(pk "$p" 'd["peak"]'))" \
        test "$(pk "$p" 'd["peak"] <= 2')" = True
done

check "no key, private dir or migration snapshot left on any node" \
    bash -c "for n in cn1 cn2 cn3 cn4; do '$LAB' ssh \$n 'ls /var/run/zmigrate 2>/dev/null; grep -c zmigrate- /root/.ssh/authorized_keys | grep -v ^0; zfs list -H -t snapshot -o name | grep @zmigrate-' | grep -q . && exit 1; done; exit 0"

# --- restore ---------------------------------------------------------------------------------
# app02 asks for trait ssd, which cn1 does not have: it is the one instance cn1 cannot take back.
zm_ok "restore --dry-run cn1" --json restore --dry-run cn1
check "the dry run plans the 6 others for cn1 and refuses app02 for its trait" \
    test "$(zm_json '" ".join(sorted("%s:%s" % (i["alias"], i["outcome"]) for i in d["instances"]))')" = "app01:planned app02:refused bhyve01:planned kvm01:planned lx01:planned min01:planned web01:planned"
check "app02's refusal names the trait" \
    bash -c "grep -q 'missing trait ssd' <<<'$(zm_json '[i["error"] for i in d["instances"] if i["alias"] == "app02"][0]')'"
MT_ZM_TIMEOUT=600 zm_ok "restore --finalize --parallel 3 cn1" restore --finalize --parallel 3 cn1
tail -9 "$ZM_OUT" | sed 's/^/#   /'
back=$(for vm in "${VMS[@]}"; do [[ $vm == "$APP02" ]] || vmapi "$vm" 'd["server_uuid"]'; done | sort -u)
check "every instance but app02 is back on cn1 (VMAPI)" test "$back" = 564d0000-0000-4000-8000-000000000001
check "cn1 holds those 6 again" test "$(on cn1 'vmadm list -H -o uuid' | wc -l)" = 6
check "app02 stays on cn4, skipped" \
    bash -c "[[ $(vmapi "$APP02" 'd["server_uuid"]') == *04 ]] && grep -q 'app02 .* skipped' '$ZM_OUT'"
zm_ok "restore cn1 again: nothing more to move back" restore cn1
check "it lists only app02 (skipped again)" grep -q '^cn1 (.*): 1 instance(s)' "$ZM_OUT"

# --- a manual evacuation: copy now, switch in the window ----------------------------------------
zm_ok "evacuate --switch manual --parallel 3 cn1" --json evacuate --switch manual --parallel 3 cn1
check "the 6 instances on cn1 are ready to switch" \
    test "$(zm_json '" ".join(sorted(set(i["outcome"] for i in d["instances"]))) + " %d" % len(d["instances"])')" = "ready 6"
check "they still run on cn1 (VMAPI)" \
    test "$(for vm in "${VMS[@]}"; do [[ $vm == "$APP02" ]] || vmapi "$vm" 'd["server_uuid"]'; done | sort -u)" = 564d0000-0000-4000-8000-000000000001
zm_ok "sync --all keeps their copies fresh" --json sync --all
check "sync --all synced the 6" \
    test "$(zm_json '" ".join(sorted(set(i["outcome"] for i in d["migrations"]))) + " %d" % len(d["migrations"])')" = "synced 6"
zm_ok "switch --ready cn1" switch --ready cn1
tail -8 "$ZM_OUT" | sed 's/^/#   /'
check "every one switched, with its downtime" test "$(grep -c ' switched ' "$ZM_OUT")" = 6
check "none is on cn1 any more (VMAPI)" \
    bash -c "! grep -q 000000000001 <<<'$(for vm in "${VMS[@]}"; do vmapi "$vm" 'd["server_uuid"]'; done)'"
zm_ok "switch --ready cn1 again: nothing is ready" switch --ready cn1
check "it lists none" grep -q '^cn1 (.*): 0 instance(s)' "$ZM_OUT"

mt_finish
