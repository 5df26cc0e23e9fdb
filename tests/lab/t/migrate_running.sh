#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Lab test (issue 3, "Done when" 1): `zmigrate migrate -n cn2` of web01, a running joyent zone
# whose writer is on, then `finalize --yes`. Checks the real state on the nodes and in the
# simulator, not just exit codes:
#  - --json output is a stream of JSON documents; syncs (full, then deltas) and switch downtime
#  - target data == source data at the moment it stopped (zlab-sum of every dataset, writer file
#    excluded; the target's writer file starts with the source's file byte for byte and
#    zlab-verify passes with --min-seq = the source's last record); final snapshot GUIDs match
#  - VMAPI shows cn2 and running; NICs unchanged; the IPs were never free (simulator IP history);
#    no IP left reserved
#  - runs on cn2 (vmadm and the node's run state), source hidden (do_not_inventory), autoboot
#    off and stopped; cores dataset on the target; never two copies running (50 ms watcher)
#  - no ephemeral key or private dir after the switch; `get` and `list` show the migration
#  - finalize: source instance and datasets gone on cn1, no zmigrate snapshot on any node, no
#    key line, no private dir; the instance still runs on cn2 and VMAPI still has it there
# Exit 0 pass, 1 fail, 125 skip (not root, no /dev/fuse, no netns).
set -euo pipefail
# shellcheck source=lib_migrate.sh
source "$(dirname "$(readlink -f "$0")")/lib_migrate.sh"

mt_setup zmt-run 10.95.1

# --- before ---------------------------------------------------------------------------------
probe cn1 "$WEB" writer || mt_die "probe cn1"
[[ $(pj cn1 'd["vm"]["state"]') == running && $(pj cn1 'd["running"]') == true ]] ||
    mt_die "web01 does not run on cn1 before the test"
w0=$(pj cn1 'd["writer"]["last"]')
nics_before=$(nics_sig "$WEB")
[[ $(vmapi "$WEB" 'd["server_uuid"]') == "$CN1" ]] || mt_die "VMAPI does not show web01 on cn1"
ok "web01 runs on cn1 with its writer (seq $w0), VMAPI agrees"

# --- migrate --------------------------------------------------------------------------------
mt_watch_start "$WEB"
zm --json migrate -n cn2 "$WEB"
both=$(mt_watch_stop)
if ((ZM_RC == 0)); then ok "migrate -n cn2 web01 exited 0 (wall ${ZM_SECS} s)"; else
    fail "migrate -n cn2 web01 exited $ZM_RC"
    zm_show
    mt_die "migrate failed"
fi
if zm_json 'len(docs)' >/dev/null 2>"$MT_WORK/json.err"; then ok "--json output parses ($(zm_json 'len(docs)') documents)"; else
    fail "--json output does not parse: $(tail -1 "$MT_WORK/json.err")"
fi
check "--json: migration in phase switch, state successful" \
    test "$(zm_json 'd["migration"]["phase"] + "/" + d["migration"]["state"]')" = switch/successful
check "--json: target server is cn2" test "$(zm_json 'd["migration"]["target_server_uuid"]')" = "$CN2"
MIG=$(zm_json 'd["migration"]["id"]')
nsync=$(zm_json 'len(d["syncs"])')
note "migration $MIG: $nsync sync(s) before the switch"
zm_json '"\n".join("sync %d: %d bytes in %d ms (%.0f B/s) kinds %s" % (s["sync_number"], s["bytes"], s["duration_ms"], s["bytes_per_second"], ",".join(sorted(set(t["kind"] for t in s["transfers"])))) for s in d["syncs"])' | sed 's/^/# /'
zm_json '"switch: downtime %d ms (%s), final delta %d bytes" % (d["switch"]["downtime_ms"], ", ".join("%s %d ms" % kv for kv in d["switch"]["downtime_steps_ms"].items()), d["switch"]["final_bytes"])' | sed 's/^/# /'
check "first sync is full (full/clone streams), the later ones incremental and smaller" \
    test "$(zm_json 'all(t["kind"] in ("full","clone") for t in d["syncs"][0]["transfers"]) and all(t["kind"] == "incremental" for s in d["syncs"][1:] for t in s["transfers"]) and all(s["bytes"] < d["syncs"][0]["bytes"] for s in d["syncs"][1:])')" = true
check "switch reports a positive downtime with a per-step breakdown and was_running" \
    test "$(zm_json 'd["switch"]["downtime_ms"] > 0 and len(d["switch"]["downtime_steps_ms"]) >= 3 and d["switch"]["was_running"]')" = true
check "never two copies running at once (watcher saw $both overlapping moments)" test "$both" = 0

# --- after the switch -----------------------------------------------------------------------
probe cn1 "$WEB" sum writer || fail "probe cn1"
src_last=$(pj cn1 'd["writer"]["last"]')
src_size=$(pj cn1 'd["writer"]["size"]')
probe cn2 "$WEB" sum writer "prefix=$src_size" || fail "probe cn2"
note "source writer stopped at seq $src_last ($src_size bytes); target writer now at seq $(pj cn2 'd["writer"]["last"]')"

check "source copy on cn1 is stopped (vmadm and run state)" \
    test "$(pj cn1 'd["vm"]["state"], d["running"]')" = '["stopped", false]'
check "source copy on cn1 is hidden (do_not_inventory) with autoboot off" \
    test "$(pj cn1 'd["vm"].get("do_not_inventory"), d["vm"].get("autoboot")')" = '[true, false]'
check "instance runs on cn2 (vmadm and run state)" \
    test "$(pj cn2 'd["vm"]["state"], d["running"]')" = '["running", true]'
check "target copy is visible (no do_not_inventory) with autoboot on" \
    test "$(pj cn2 'bool(d["vm"].get("do_not_inventory")), d["vm"].get("autoboot")')" = '[false, true]'
check "source writer file is intact up to seq $src_last" test "$(pj cn1 'd["writer"]["verify_rc"]')" = 0
if on cn2 "zlab-verify --min-seq $src_last $WEB" >/dev/null; then
    ok "zlab-verify on cn2 passes with --min-seq $src_last (the writer went on from the source's last record)"
else
    fail "zlab-verify --min-seq $src_last on cn2: $(on cn2 "zlab-verify --min-seq $src_last $WEB" 2>&1 || true)"
fi
check "target writer file begins with the source's whole file, byte for byte" \
    test "$(pj cn2 'd["writer"].get("prefix_sha")')" = "$(pj cn1 'd["writer"]["sha"]')"
src_sums=$(pj cn1 'd["sums"]')
dst_sums=$(pj cn2 'd["sums"]')
if [[ $src_sums == "$dst_sums" ]] && [[ $(pj cn1 'len(d["sums"])') -ge 2 ]]; then
    ok "zlab-sum of every dataset (writer file excluded) equal on both: $(pj cn1 '", ".join(sorted(d["sums"]))')"
else
    fail "zlab-sum differs: cn1 $src_sums cn2 $dst_sums"
fi
snap_src=$(pj cn1 'sorted((k.split("@")[0], v) for k, v in d["snapshots"].items() if "@zmigrate-" in k)')
snap_dst=$(pj cn2 'sorted((k.split("@")[0], v) for k, v in d["snapshots"].items() if "@zmigrate-" in k)')
check "the final migration snapshot (rollback base) has the same GUID on both nodes" \
    test "$snap_src" = "$snap_dst" -a "$snap_src" != "[]"
check "target has the cores dataset zones/cores/$WEB" \
    test "$(pj cn2 "'zones/cores/$WEB' in d['datasets']")" = true
check "VMAPI: server_uuid cn2, state running" \
    test "$(vmapi "$WEB" 'd["server_uuid"] + " " + d["state"]')" = "$CN2 running"
nics_after=$(nics_sig "$WEB")
check "VMAPI: NICs and IPs unchanged ($nics_after)" test "$nics_after" = "$nics_before"
if hist=$(ips_never_free "$WEB"); then ok "IPs never free nor taken by another owner: $(tr '\n' ';' <<<"$hist")"; else
    fail "IP history shows a free IP: $hist"
fi
reserved=$(curl -sS "$VMAPI_URL/vms/$WEB" | python3 -c "import json,sys,urllib.request
d = json.load(sys.stdin)
print(sum(1 for n in d['nics'] if json.load(urllib.request.urlopen('$NAPI_URL/networks/%s/ips/%s' % (n['network_uuid'], n['ip'])))['reserved']))")
check "no IP left reserved after the switch ($reserved reserved)" test "$reserved" = 0
for n in cn1 cn2; do
    if left=$(no_artefacts_in_probe "$n" "$MIG"); then ok "$n: no ephemeral key or private dir after the switch"; else
        # the final snapshot legitimately stays; only keys and dirs count here
        if [[ $(pj "$n" 'bool(d["keys"]) or "'"$MIG"'" in d["rundir"]') == false ]]; then
            ok "$n: no ephemeral key or private dir after the switch (rollback base snapshot kept)"
        else fail "$n: left after switch: $left"; fi
    fi
done

zm --json list
check "list --json shows the migration of web01 as switch/successful" \
    test "$(zm_json '[m["phase"] + "/" + m["state"] for m in d if m["vm_uuid"] == "'"$WEB"'"]')" = '["switch/successful"]'
zm --json get "$WEB"
check "get --json: id, servers, 1+ syncs and the switch downtime" \
    test "$(zm_json 'd["id"] == "'"$MIG"'" and d["source_server_uuid"] == "'"$CN1"'" and d["num_sync_phases"] >= 1 and any(r["phase"] == "switch" and r["state"] == "successful" and r["details"]["downtime_ms"] > 0 for r in d["progress_history"])')" = true
zm get "$WEB"
check "get (human) exits 0 and names the downtime" grep -q downtime "$ZM_OUT"

# --- finalize -------------------------------------------------------------------------------
zm_ok "finalize --yes web01" finalize --yes "$WEB" || true
for n in cn1 cn2 cn3; do probe "$n" "$WEB" writer || fail "probe $n"; done
check "cn1: source instance gone (vmadm get fails)" test "$(pj cn1 'd["vm"]')" = null
check "cn1: no dataset of web01 left (zones/$WEB*, cores)" test "$(pj cn1 'sorted(d["datasets"])')" = "[]"
for n in cn1 cn2 cn3; do
    if left=$(no_artefacts_in_probe "$n"); then ok "$n: no zmigrate snapshot, key line or private dir"; else
        fail "$n: left after finalize: $left"
    fi
done
check "cn2: instance still runs, writer intact" \
    test "$(pj cn2 'd["vm"]["state"], d["running"], d["writer"]["verify_rc"]')" = '["running", true, 0]'
check "cn2: datasets of web01 intact (root, data, cores)" \
    test "$(pj cn2 'sorted(d["datasets"])')" = "[\"zones/$WEB\", \"zones/$WEB/data\", \"zones/cores/$WEB\"]"
sleep 1 # the agent of cn1 reports the deleted source within ~0.5 s: it must change nothing
check "VMAPI after finalize: still cn2, running" \
    test "$(vmapi "$WEB" 'd["server_uuid"] + " " + d["state"]')" = "$CN2 running"
if hist=$(ips_never_free "$WEB"); then ok "IPs still never free after finalize"; else fail "IP history after finalize: $hist"; fi
zm --json list
check "list --json: no active migration left" test "$(zm_json 'len(d)')" = 0
zm --json list --all
check "list --all --json: the migration is archived in phase finalize" \
    test "$(zm_json '[(m["phase"], m["state"], m["archived"]) for m in d if m["id"] == "'"$MIG"'"]')" = '[["finalize", "successful", true]]'

mt_finish
