#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Lab test (issue 3, "Done when" 6): bad input changes nothing and exits with the documented
# code (include/zmigrate/util/error.hpp), with one "zmigrate: error: ..." line on stderr:
#   unknown VM (3), unknown CN (3), no migration to sync (3), usage (2), same CN (4),
#   no capacity (4: placement and -n), target not running (4), already migrating (4),
#   switch before sync (4), finalize and rollback before switch (4), Triton's own migration of
#   the instance in VMAPI (4), an API down (5),
#   host key mismatch (6).
# "Nothing changed" is checked on the nodes (no dataset, zone or snapshot of the instance on the
# targets, source still running and visible) and in the state store (list --all).
# Exit 0 pass, 1 fail, 125 skip (not root, no /dev/fuse, no netns).
set -euo pipefail
# shellcheck source=lib_migrate.sh
source "$(dirname "$(readlink -f "$0")")/lib_migrate.sh"

mt_setup zmt-bad 10.95.5

NOSUCH=5eed0000-0000-4000-8000-000000000999

# refused WANT DESC ARGS...: zmigrate ARGS exits WANT with a single error line.
refused() {
    local want=$1 desc=$2
    shift 2
    zm "$@"
    if err_line_ok "$want"; then
        ok "$desc: exit $want, $(cut -c1-150 "$ZM_ERR")"
    else
        fail "$desc: expected exit $want and one 'zmigrate: error:' line, got exit $ZM_RC"
        zm_show
    fi
}

# unchanged VM SRC EXPECT_MIGRATIONS: VM still runs on SRC and is visible there with no
# migration snapshot; no other node has a zone, dataset or snapshot of it; the state store holds
# EXPECT_MIGRATIONS records (all, archived included).
unchanged() {
    local vm=$1 src=$2 want=$3 n bad=""
    for n in cn1 cn2 cn3; do
        probe "$n" "$vm" || bad+=" probe $n failed;"
        if [[ $n == "$src" ]]; then
            [[ $(pj "$n" '(d["vm"] or {}).get("state"), bool((d["vm"] or {}).get("do_not_inventory")), d["zm_snaps"]') == '["running", false, []]' ]] ||
                bad+=" $n: $(pj "$n" '(d["vm"] or {}).get("state"), (d["vm"] or {}).get("do_not_inventory"), d["zm_snaps"]');"
        else
            [[ $(pj "$n" 'd["vm"], sorted(d["datasets"]), d["zm_snaps"]') == '[null, [], []]' ]] ||
                bad+=" $n: $(pj "$n" 'bool(d["vm"]), sorted(d["datasets"]), d["zm_snaps"]');"
        fi
    done
    zm --json list --all
    local count
    count=$(zm_json 'len(d)' 2>/dev/null || echo "?")
    [[ $count == "$want" ]] || bad+=" state store has $count migration(s), expected $want;"
    [[ $(vmapi "$vm" 'd["server_uuid"] + " " + d["state"]') == "$(lab_node_uuid_of "$src") running" ]] ||
        bad+=" VMAPI: $(vmapi "$vm" 'd["server_uuid"] + " " + d["state"]');"
    if [[ -z $bad ]]; then ok "  ...and nothing changed (nodes, VMAPI, $want record(s) in the state store)"; else
        fail "  ...but something changed:$bad"
    fi
}
lab_node_uuid_of() { printf '564d0000-0000-4000-8000-0000000000%02d' "${1#cn}"; }

lab_server() { # lab_server UUID JSON: POST /_lab/servers/UUID
    curl -sS --max-time 10 -X POST -H 'Content-Type: application/json' -d "$2" \
        "$CNAPI_URL/_lab/servers/$1" >/dev/null
}
server_field() {
    curl -sS --max-time 10 "$CNAPI_URL/servers/$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"
}

# --- nothing exists yet ---------------------------------------------------------------------
refused 3 "begin of an unknown VM" begin -n cn2 "$NOSUCH"
refused 3 "migrate of an unknown VM" migrate -n cn2 "$NOSUCH"
refused 3 "begin -n nosuch (unknown CN)" begin -n nosuch "$WEB"
refused 3 "begin -n <unknown server uuid>" begin -n 564d0000-0000-4000-8000-000000000099 "$WEB"
refused 4 "begin -n cn1 (the instance's own CN)" begin -n cn1 "$WEB"
refused 3 "sync without a migration" sync "$WEB"
refused 3 "switch without a migration" switch "$WEB"
zm begin
check "begin without a VM is a usage error (exit 2, got $ZM_RC)" test "$ZM_RC" = 2
unchanged "$WEB" cn1 0

# No capacity: every other node has no unreserved RAM.
ram2=$(server_field "$CN2" unreserved_ram)
ram3=$(server_field "$CN3" unreserved_ram)
lab_server "$CN2" '{"unreserved_ram": 0}'
lab_server "$CN3" '{"unreserved_ram": 0}'
refused 4 "begin with no node that has capacity (placement)" begin "$WEB"
refused 4 "begin -n cn2 without capacity on cn2" begin -n cn2 "$WEB"
refused 4 "migrate with no capacity anywhere" migrate "$WEB"
lab_server "$CN2" "{\"unreserved_ram\": $ram2}"
lab_server "$CN3" "{\"unreserved_ram\": $ram3}"
# A target that is not running.
lab_server "$CN3" '{"status": "unknown"}'
refused 4 "begin -n cn3 while cn3's status is unknown" begin -n cn3 "$WEB"
lab_server "$CN3" '{"status": "running"}'
unchanged "$WEB" cn1 0

# Triton's own migration of the instance (sdc-migrate; VMAPI's record): begin and migrate refuse,
# naming it; once VMAPI's record is gone (as finalize, abort and rollback leave it), nothing blocks.
curl -fsS --max-time 10 -X POST -H 'Content-Type: application/json' \
    -d "{\"id\": \"7d8a6e2c-1f4b-4c3e-9a5d-2b6c8e0f1a33\", \"vm_uuid\": \"$WEB\", \"source_server_uuid\": \"$CN1\", \"target_server_uuid\": \"$CN3\", \"phase\": \"sync\", \"state\": \"paused\"}" \
    "$VMAPI_URL/_lab/migrations" >/dev/null || mt_die "cannot store a Triton migration in the simulator"
refused 4 "begin beside Triton's own migration" begin -n cn2 "$WEB"
check "  ...the error names it and sdc-migrate" grep -q '7d8a6e2c-1f4b-4c3e-9a5d-2b6c8e0f1a33.*sdc-migrate abort' "$ZM_ERR"
refused 4 "migrate beside Triton's own migration" migrate -n cn2 "$WEB"
unchanged "$WEB" cn1 0
curl -fsS --max-time 10 -X DELETE "$VMAPI_URL/migrations/$WEB" >/dev/null || mt_die "cannot delete the Triton migration"

# An API down: VMAPI on a closed port.
refused 5 "begin with VMAPI unreachable (closed port)" --vmapi-url "http://$LAB_SUBNET.1:9" begin -n cn2 "$WEB"
VMAPI_URL=http://$LAB_SUBNET.1:9 zm begin -n cn2 "$WEB"
check "begin with VMAPI_URL on a closed port: exit 5 (got $ZM_RC)" err_line_ok 5
CNAPI_URL=http://$LAB_SUBNET.1:9 zm begin -n cn2 "$WEB"
check "begin with CNAPI_URL on a closed port: exit 5 (got $ZM_RC)" err_line_ok 5
unchanged "$WEB" cn1 0

# Host key mismatch: a known_hosts copy with another key for cn2.
hk=$MT_WORK/hostkey
mkdir -p "$hk"
rm -f "$hk/k" "$hk/k.pub"
ssh-keygen -q -t ed25519 -N '' -f "$hk/k"
newkey=$(cut -d' ' -f1,2 "$hk/k.pub")
awk -v k="$newkey" -v a="$LAB_SUBNET.12" '{ split($1, h, ","); m = 0
        for (i in h) if (h[i] == a || h[i] == "cn2") m = 1
        if (m) print $1, k; else print }' "$LAB_DIR/known_hosts" >"$hk/known_hosts"
python3 - "$ZMIGRATE_CONFIG" "$hk" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["ssh"]["known_hosts"] = sys.argv[2] + "/known_hosts"
json.dump(c, open(sys.argv[2] + "/zmigrate.json", "w"))
EOF
ZMIGRATE_CONFIG=$hk/zmigrate.json zm begin -n cn2 "$WEB"
if err_line_ok 6; then ok "begin -n cn2 with a changed host key for cn2: exit 6, $(cut -c1-120 "$ZM_ERR")"; else
    fail "host key mismatch: expected exit 6, got $ZM_RC"
    zm_show
fi
unchanged "$WEB" cn1 0

# --- with a migration in begin/paused ---------------------------------------------------------
zm_ok "begin -n cn2 web01" begin -n cn2 "$WEB" || mt_die "begin failed"
MIG=$(mig_id "$WEB")
refused 4 "begin again (already migrating, same target)" begin -n cn2 "$WEB"
refused 4 "begin again (already migrating, other target)" begin -n cn3 "$WEB"
refused 4 "switch before any sync" switch "$WEB"
refused 4 "finalize before switch" finalize --yes "$WEB"
refused 4 "rollback before switch" rollback "$WEB"
check "the migration is still $MIG in begin/paused with no sync" \
    test "$(mig_field "$WEB" 'd["id"], d["phase"], d["state"], d["num_sync_phases"]')" = "[\"$MIG\", \"begin\", \"paused\", 0]"
unchanged "$WEB" cn1 1
zm_ok "abort (cleans up the begin)" abort "$WEB" || true
zm --json list
check "no active migration after abort" test "$(zm_json 'len(d)')" = 0
unchanged "$WEB" cn1 1

mt_finish
