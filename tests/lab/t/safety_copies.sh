#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Lab test: never destroy the only copy, never touch another instance's data.
#  1. A corrupt VMAPI record lists, among web01's delegated datasets, another instance's disk
#     on the same node (a leaf dataset with data). `migrate --finalize -n cn2 web01` is refused
#     at begin (exit 4, naming the dataset): the foreign dataset is intact on cn1 and was not
#     copied to cn2, web01 still runs on cn1, no migration was recorded. With the record
#     repaired, `migrate -n cn2 web01` works and the foreign dataset is still intact.
#  2. `migrate -n cn2 lx01` (switch done), then the target copy disappears (`vmadm delete` on
#     cn2). `finalize --yes lx01` refuses (exit 4), says what is missing and points to rollback;
#     the hidden source on cn1 keeps its zone and every dataset with the same data. `rollback`
#     then brings lx01 back on cn1 (VMAPI places it there, visible).
#  3. After finalize of web01 (target proven), the source is gone and the foreign dataset is
#     still intact.
#  5. The hide of the source acts but is reported failed: the undo restores do_not_inventory and
#     autoboot from what the node shows and restarts the source; abort does the same for a source
#     hidden behind the record's back; a new migration completes.
#  4. A dataset whose mountpoint lies outside the zonepath (it travels with the stream) makes the
#     switch stop before the point of no return: the source runs again, visible, nothing was
#     mounted on the target, and abort cleans up.
# Exit 0 pass, 1 fail, 125 skip (not root, no /dev/fuse, no netns).
set -euo pipefail
# shellcheck source=lib_migrate.sh
source "$(dirname "$(readlink -f "$0")")/lib_migrate.sh"

mt_setup zmt-safe 10.96.12

OTHER=5eed0000-0000-4000-8000-0000000009ff
FOREIGN=zones/$OTHER-disk0

# --- 1. a foreign dataset in the inventory ------------------------------------------------------
on cn1 "zfs create -p $FOREIGN && head -c 300000 /dev/urandom > /zones/$OTHER-disk0/data.bin && sync" ||
    mt_die "create the foreign dataset on cn1"
foreign_sum() { on cn1 "zlab-sum $FOREIGN" | cut -d' ' -f1; }
SUM0=$(foreign_sum)
[[ -n $SUM0 ]] || mt_die "zlab-sum of $FOREIGN"
curl -sS --max-time 10 -X PUT -H 'Content-Type: application/json' \
    -d "{\"datasets\": [\"zones/$WEB/data\", \"$FOREIGN\"]}" "$VMAPI_URL/vms/$WEB" >/dev/null ||
    mt_die "corrupt web01's VMAPI record"
[[ $(vmapi "$WEB" '"'"$FOREIGN"'" in d["datasets"]') == true ]] || mt_die "VMAPI did not take the record"

zm migrate --finalize -n cn2 "$WEB"
if ((ZM_RC == 5 || ZM_RC == 4)) && grep -q "$FOREIGN" "$ZM_ERR"; then
    ok "migrate --finalize with a foreign dataset in VMAPI is refused (exit $ZM_RC, names $FOREIGN)"
else
    fail "migrate --finalize with a foreign dataset: rc $ZM_RC"
    zm_show
fi
[[ $(foreign_sum) == "$SUM0" ]] && ok "the foreign dataset is intact on cn1" ||
    fail "the foreign dataset changed on cn1"
on cn2 "zfs list -H -o name $FOREIGN" >/dev/null 2>&1 && fail "the foreign dataset reached cn2" ||
    ok "the foreign dataset was not copied to cn2"
[[ $(vm_state cn1 "$WEB") == running ]] && ok "web01 still runs on cn1" || fail "web01 on cn1: $(vm_state cn1 "$WEB")"
zm --json list --all
[[ $(zm_json 'len([m for m in (d if isinstance(d, list) else d.get("migrations", [])) if m.get("vm_uuid") == "'"$WEB"'"])') == 0 ]] &&
    ok "no migration of web01 was recorded" || fail "a migration of web01 was recorded: $(head -c 300 "$ZM_OUT")"

# A name that looks like web01's own but that the node does not report is refused at begin
# (the datasets come from vmadm on the source, never from the inventory alone).
on cn1 "zfs create zones/$WEB/extra" || mt_die "create zones/$WEB/extra"
curl -sS --max-time 10 -X PUT -H 'Content-Type: application/json' \
    -d "{\"datasets\": [\"zones/$WEB/data\", \"zones/$WEB/extra\"]}" "$VMAPI_URL/vms/$WEB" >/dev/null ||
    mt_die "corrupt web01's VMAPI record (2)"
zm begin -n cn2 "$WEB"
if ((ZM_RC == 4)) && grep -q "zones/$WEB/extra" "$ZM_ERR" && grep -q "vmadm on the source node does not" "$ZM_ERR"; then
    ok "begin with a dataset VMAPI lists but vmadm does not is refused (exit 4, named)"
else
    fail "begin with a dataset only VMAPI lists: rc $ZM_RC"
    zm_show
fi
wait_until 30 on cn1 "zfs destroy zones/$WEB/extra" || fail "destroy zones/$WEB/extra"

# Repaired record: the migration works and leaves the foreign dataset alone.
curl -sS --max-time 10 -X PUT -H 'Content-Type: application/json' \
    -d "{\"datasets\": [\"zones/$WEB/data\"]}" "$VMAPI_URL/vms/$WEB" >/dev/null || mt_die "repair the record"
zm_ok "migrate -n cn2 web01 once the record is repaired" migrate -n cn2 "$WEB"

# --- 2. finalize with the target copy gone -------------------------------------------------------
zm_ok "migrate -n cn2 lx01" migrate -n cn2 "$LX" || mt_die "migrate lx01"
SRC_SUM=$(on cn1 "zlab-sum zones/$LX" | cut -d' ' -f1)
# The operator's mistake: our holds on the target's migration snapshot go first (vmadm would
# refuse otherwise), then the instance (retried: datasets are busy for a moment after a receive).
on cn2 'for s in $(zfs list -H -o name -t snapshot | grep "'"$LX"'@zmigrate-"); do t=${s#*@}; zfs release "${t%-*}" "$s"; done' ||
    mt_die "release the holds of lx01 on cn2"
wait_until 30 on cn2 "vmadm delete $LX" || mt_die "vmadm delete lx01 on cn2: $(on cn2 "vmadm delete $LX" 2>&1)"
[[ $(vm_state cn2 "$LX") == absent ]] || mt_die "lx01 still on cn2"
zm finalize --yes "$LX"
if ((ZM_RC == 4)) && grep -q "rollback" "$ZM_ERR" && grep -qi "no instance\|has no" "$ZM_ERR"; then
    ok "finalize with the target copy gone is refused (exit 4, says what is missing, points to rollback)"
else
    fail "finalize with the target copy gone: rc $ZM_RC"
    zm_show
fi
err_line_ok 4 && ok "the refusal is one 'zmigrate: error:' line" || fail "error output: $(cat "$ZM_ERR")"
[[ $(vm_state cn1 "$LX") != absent ]] && ok "the hidden source lx01 is still on cn1" || fail "lx01 gone from cn1"
[[ $(on cn1 "zlab-sum zones/$LX" | cut -d' ' -f1) == "$SRC_SUM" ]] && ok "the source's data is unchanged" ||
    fail "the source's data changed"
zm_ok "rollback lx01 brings the source back" rollback "$LX"
[[ $(vmapi "$LX" 'd["server_uuid"]') == "$CN1" ]] && ok "VMAPI places lx01 on cn1 again" ||
    fail "VMAPI server of lx01: $(vmapi "$LX" 'd["server_uuid"]')"
[[ $(on cn1 "vmadm get $LX" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("do_not_inventory", False))') == False ]] &&
    ok "lx01 is visible on cn1" || fail "lx01 still hidden on cn1"

# --- 3. finalize when the target is proven ----------------------------------------------------
zm_ok "finalize --yes web01 (target proven)" finalize --yes "$WEB"
[[ $(vm_state cn1 "$WEB") == absent ]] && ok "web01's source is gone from cn1" || fail "web01 still on cn1"
[[ $(foreign_sum) == "$SUM0" ]] && ok "the foreign dataset is still intact on cn1" ||
    fail "the foreign dataset changed on cn1 after finalize"

# --- 5. the hide is applied on the node but reported failed ------------------------------------
# The update that hides the source acts, then fails (a link that drops after vmadm acted), both
# where it runs beside the final delta's streams and where the hide step runs it again: the
# switch's undo reads the node and puts do_not_inventory and autoboot back, and starts lx01 again
# if it ran; the migration is retryable and a rerun completes.
on cn1 "vmadm start $LX" >/dev/null 2>&1 || true
wait_until 20 running_now cn1 "$LX" || mt_die "start lx01 on cn1"
AB0=$(on cn1 "vmadm get $LX" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("autoboot"))')
on cn1 "echo do_not_inventory 2 > /tmp/zlab-fault-update-after" || mt_die "arm the update fault"
zm migrate -n cn2 "$LX"
((ZM_RC != 0)) && ok "the switch fails when the hide is reported failed (rc $ZM_RC)" ||
    fail "migrate lx01 with the hide fault passed"
[[ $(on cn1 "vmadm get $LX" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("do_not_inventory", False), d.get("autoboot"), d.get("state"))') == "False $AB0 running" ]] &&
    ok "lx01 on cn1 is visible again, autoboot restored ($AB0), running" ||
    fail "lx01 on cn1 after the failed hide: $(on cn1 "vmadm get $LX" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("do_not_inventory"), d.get("autoboot"), d.get("state"))')"
[[ $(mig_field "$LX" 'd["phase"] + "/" + d["state"]') == sync/failed ]] && ok "the migration is retryable (sync/failed)" ||
    fail "lx01's migration: $(mig_field "$LX" 'd["phase"] + "/" + d["state"]')"
# What a kill -9 between vmadm's act and the journal would leave: the source hidden while the
# record says it is not. abort puts do_not_inventory and autoboot back from the node's state.
on cn1 "vmadm update $LX do_not_inventory=true autoboot=false" >/dev/null 2>&1 || mt_die "hide lx01 by hand"
zm_ok "abort lx01 (the source hidden behind the record's back)" abort "$LX"
[[ $(on cn1 "vmadm get $LX" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("do_not_inventory", False), d.get("autoboot"))') == "False $AB0" ]] &&
    ok "abort restored do_not_inventory and autoboot ($AB0) on cn1" ||
    fail "lx01 on cn1 after abort: $(on cn1 "vmadm get $LX" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("do_not_inventory"), d.get("autoboot"))')"
zm_ok "rerun migrate lx01 completes" migrate -n cn2 "$LX"
[[ $(vm_state cn2 "$LX") == running && $(vm_state cn1 "$LX") == stopped ]] && ok "lx01 runs on cn2, the source is stopped" ||
    fail "after the rerun: cn1 $(vm_state cn1 "$LX"), cn2 $(vm_state cn2 "$LX")"
# Once only, beside the streams: the hide step runs it again and the switch completes, the
# source hidden (web01, back from cn2 to cn1).
on cn2 "echo do_not_inventory > /tmp/zlab-fault-update-after" || mt_die "arm the update fault on cn2"
zm_ok "migrate web01 back with the hide beside the streams failing once" migrate -n cn1 "$WEB"
on cn2 "test -e /tmp/zlab-fault-update-after" && fail "the hide fault on cn2 never fired" ||
    ok "the hide beside the streams failed once (the fault fired)"
[[ $(on cn2 "vmadm get $WEB" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("do_not_inventory", False), d.get("autoboot"), d.get("state"))') == "True False stopped" ]] &&
    ok "web01's source on cn2 is hidden, autoboot off, stopped" ||
    fail "web01 on cn2: $(on cn2 "vmadm get $WEB" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("do_not_inventory"), d.get("autoboot"), d.get("state"))')"
[[ $(vm_state cn1 "$WEB") == running ]] && ok "web01 runs on cn1" || fail "web01 on cn1: $(vm_state cn1 "$WEB")"
zm_ok "finalize --yes web01 (back on cn1)" finalize --yes "$WEB"

# --- 4. a stream that would mount over the target's own files ---------------------------------
# A dataset of min01 whose mountpoint (sent with the stream) lies outside its zonepath: the switch
# refuses before the point of no return, min01 runs again on cn1, nothing is mounted there on cn2.
on cn1 "zfs create -o mountpoint=/var/tmp/zm-evil zones/$MIN/evil" || mt_die "create zones/$MIN/evil"
zm migrate -n cn2 "$MIN"
if ((ZM_RC == 4)) && grep -q "/var/tmp/zm-evil" "$ZM_ERR"; then
    ok "switch refuses a received mountpoint outside the zonepath (exit 4, names it)"
else
    fail "migrate min01 with a foreign mountpoint: rc $ZM_RC"
    zm_show
fi
[[ $(vm_state cn1 "$MIN") == running ]] && ok "min01 runs on cn1 again" || fail "min01 on cn1: $(vm_state cn1 "$MIN")"
[[ $(on cn1 "vmadm get $MIN" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("do_not_inventory", False), d.get("autoboot"))') == "False True" ]] &&
    ok "min01 is visible with autoboot on cn1" || fail "min01 visibility on cn1"
on cn2 "mount | grep -q zm-evil" && fail "something is mounted at /var/tmp/zm-evil on cn2" ||
    ok "nothing mounted at /var/tmp/zm-evil on cn2"
zm_ok "abort min01" abort "$MIN"
on cn2 "zfs list -H -o name zones/$MIN" >/dev/null 2>&1 && fail "min01's datasets left on cn2" ||
    ok "abort removed min01's datasets on cn2"

mt_finish
