#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Lab test of the SmartOS stand-ins, the agent, the writer and the seed (tests/lab/node/bin,
# tests/lab/seed.py). Brings up a private 2-node lab and checks:
#  - vmadm list/get show the seeded VMs on the right nodes with the seeded shapes
#  - stop/start: fast stop, the writer runs only while the VM runs, zlab-verify accepts its file
#  - zlab_write_rate updates reach the running writer
#  - imgadm import on a node that lacks an image gives the same snapshot GUID as the source
#  - zonecfg export | zonecfg -f + zoneadm attach -F on the other node (and a zfs send | recv of
#    the datasets) reproduce the same vmadm object; vmadm get works before the datasets arrive
#  - the agent's reports reach VMAPI (server_uuid, state changes), a VM set DNI is reported
#    destroyed and comes back when DNI is cleared
#  - vmadm delete refuses indestructible_zoneroot and otherwise removes datasets and config
# Exit 0 pass, 1 fail, 125 skip (not root or no /dev/fuse).

set -uo pipefail

if ((EUID != 0)); then
    echo "SKIP: needs root (namespaces, zfs-fuse)"
    exit 125
fi
if [[ ! -c /dev/fuse ]]; then
    echo "SKIP: no /dev/fuse"
    exit 125
fi

HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
LAB=$HERE/../lab
export LAB_NAME=zmt-standins LAB_SUBNET=10.97.2 LAB_DIR=/var/tmp/zmigrate-lab-test/zmt-standins
export LAB_NODES=2

WEB=5eed0000-0000-4000-8000-000000000101
MIN=5eed0000-0000-4000-8000-000000000102
LX=5eed0000-0000-4000-8000-000000000103
KVM=5eed0000-0000-4000-8000-000000000201
BHYVE=5eed0000-0000-4000-8000-000000000202
IMG_MIN=1a9e0000-0000-4000-8000-000000000002
IMG_DEB=1a9e0000-0000-4000-8000-000000000003
CN1=564d0000-0000-4000-8000-000000000001
CN2=564d0000-0000-4000-8000-000000000002

FAILS=0
pass() { printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; FAILS=$((FAILS + 1)); }
die() { printf 'FAIL %s\n' "$*"; exit 1; }

cleanup() { "$LAB" down >/dev/null 2>&1; }
trap cleanup EXIT

on() { local n=$1; shift; "$LAB" ssh "$n" "$@"; }
# json FILTER: evaluates a python expression over the JSON document on stdin (bound to d).
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
vmapi() { curl -sS --max-time 5 "$VMAPI_URL$1"; }

# wait_for SECONDS DESCRIPTION CMD...: retries CMD every 0.2 s.
wait_for() {
    local secs=$1 desc=$2 end
    shift 2
    end=$(($(date +%s%N) + secs * 1000000000))
    while (($(date +%s%N) < end)); do
        "$@" >/dev/null 2>&1 && { pass "$desc"; return 0; }
        sleep 0.2
    done
    fail "$desc (not within ${secs} s)"
    return 1
}

# vmapi_is UUID SERVER STATE: VMAPI places the VM on SERVER in STATE.
vmapi_is() {
    [[ $(vmapi "/vms/$1" | json '(d["server_uuid"], d["state"])') == "('$2', '$3')" ]]
}
# seq_above SEQ NODE UUID: the VM's writer file verifies and its last sequence is above SEQ.
seq_above() {
    local n
    n=$(on "$2" zlab-verify "$3") && [[ -n $n ]] && ((n > $1))
}
# settled NODE UUID: two reads of the writer's last sequence 0.5 s apart agree (the writer has
# taken a rate change of 0); prints the sequence.
settled() {
    local a b
    a=$(on "$1" zlab-verify "$2") || return 1
    sleep 0.5
    b=$(on "$1" zlab-verify "$2") || return 1
    [[ -n $a && $a == "$b" ]] && echo "$b"
}

"$LAB" down >/dev/null 2>&1
"$LAB" up 2 || die "lab up 2"
# shellcheck disable=SC1091
source "$LAB_DIR/env"

# --- inventory on the nodes -----------------------------------------------------------------
l1=$(on cn1 vmadm list -p -o alias,brand,state,server_uuid) || die "vmadm list on cn1"
l2=$(on cn2 vmadm list -p -o alias,brand,state,server_uuid) || die "vmadm list on cn2"
grep -qx "web01:joyent:running:$CN1" <<<"$l1" && grep -qx "min01:joyent-minimal:running:$CN1" <<<"$l1" &&
    grep -qx "lx01:lx:stopped:$CN1" <<<"$l1" && pass "cn1 runs web01, min01 and has lx01 stopped" ||
    fail "cn1 inventory: $l1"
grep -qx "kvm01:kvm:running:$CN2" <<<"$l2" && grep -qx "bhyve01:bhyve:running:$CN2" <<<"$l2" &&
    pass "cn2 runs kvm01 and bhyve01" || fail "cn2 inventory: $l2"
[[ $(on cn1 vmadm list -H | wc -l) == 3 && $(on cn2 vmadm list -H | wc -l) == 2 ]] &&
    pass "vmadm list -H: 3 VMs on cn1, 2 on cn2" || fail "vmadm list -H counts"

g=$(on cn1 vmadm get $WEB) || die "vmadm get web01"
[[ $(json '(d["brand"], d["alias"], d["zfs_filesystem"], d["quota"], len(d["nics"]), d["nics"][0]["nic_tag"], d["datasets"], d["server_uuid"])' <<<"$g") == \
    "('joyent', 'web01', 'zones/$WEB', 1, 2, 'external', ['zones/$WEB/data'], '$CN1')" ]] &&
    pass "vmadm get web01: brand, alias, zfs_filesystem, quota, nics, delegated dataset, server_uuid" ||
    fail "vmadm get web01: $(json '(d.get("brand"), d.get("zfs_filesystem"), d.get("quota"), d.get("datasets"))' <<<"$g")"
g=$(on cn2 vmadm get $KVM) || die "vmadm get kvm01"
[[ $(json '[x["zfs_filesystem"] for x in d["disks"]], d["hvm"], d["autoboot"]' <<<"$g") == \
    "['zones/$KVM-disk0', 'zones/$KVM-disk1'] True True" ]] &&
    pass "vmadm get kvm01: two sibling disks" || fail "kvm01 disks: $(json 'd.get("disks")' <<<"$g")"
q=$(on cn2 "zfs get -Hp -o value quota,reservation zones/$BHYVE | tr '\n' ' '")
read -r bq br <<<"$q"
((bq > 0)) && [[ $bq == "$br" ]] && pass "bhyve01: quota == reservation ($bq) on zones/<uuid>" ||
    fail "bhyve01 quota/reservation: $q"
on cn2 zfs list -H -o name "zones/$BHYVE/disk0" "zones/$BHYVE/disk1" >/dev/null &&
    pass "bhyve01: child disk datasets" || fail "bhyve01 child disks"
on cn1 vmadm get 11111111-2222-3333-4444-555555555555 >/dev/null 2>&1
[[ $? == 1 ]] && pass "vmadm get of an unknown uuid exits 1" || fail "vmadm get unknown uuid"

# --- images -----------------------------------------------------------------------------------
out=$(on cn2 imgadm get $IMG_MIN 2>&1)
[[ $? != 0 && $out == *ImageNotInstalled* ]] && pass "minimal-64-lts is absent on cn2" ||
    fail "imgadm get on cn2: $out"
on cn2 imgadm import $IMG_MIN >/dev/null || fail "imgadm import on cn2"
g1=$(on cn1 zfs get -Hp -o value guid zones/$IMG_MIN@final)
g2=$(on cn2 zfs get -Hp -o value guid zones/$IMG_MIN@final)
[[ -n $g1 && $g1 == "$g2" ]] && pass "imgadm import gives the source's GUID ($g1)" ||
    fail "image GUIDs differ: cn1 $g1 cn2 $g2"

# --- writer, stop/start -----------------------------------------------------------------------
s1=$(on cn1 zlab-verify $WEB) || fail "zlab-verify web01"
wait_for 10 "web01's writer appends records (after $s1)" seq_above "$s1" cn1 $WEB
t=$(on cn1 "TIMEFORMAT=%R; { time vmadm stop $WEB >/dev/null 2>&1; } 2>&1") || fail "vmadm stop web01"
awk -v t="$t" 'BEGIN { exit !(t < 1.5) }' && pass "vmadm stop took ${t} s" || fail "vmadm stop took ${t} s"
[[ $(on cn1 vmadm list -H -o state uuid=$WEB) == stopped ]] && pass "web01 is stopped" || fail "web01 not stopped"
on cn1 "pgrep -f 'zlab-writer --uuid $WEB'" >/dev/null && fail "writer still runs after stop" ||
    pass "no writer after stop"
s3=$(on cn1 zlab-verify $WEB) || fail "zlab-verify after stop"
sleep 1 # an observation window: proving that nothing is written needs one
s4=$(on cn1 zlab-verify $WEB) || fail "zlab-verify after stop (2)"
[[ -n $s3 && $s3 == "$s4" ]] && pass "file intact and unchanged while stopped (last seq $s3)" ||
    fail "stopped VM's file changed: $s3 -> $s4"
on cn1 vmadm start $WEB 2>/dev/null || fail "vmadm start web01"
wait_for 10 "writer continues after start (after $s4)" seq_above "$s4" cn1 $WEB
on cn1 vmadm update $WEB zlab_write_rate=0 2>/dev/null || fail "vmadm update zlab_write_rate=0"
wait_for 10 "zlab_write_rate=0 pauses the writer" settled cn1 $WEB
s7=$(on cn1 zlab-verify $WEB)
on cn1 vmadm update $WEB zlab_write_rate=16384 2>/dev/null
wait_for 10 "zlab_write_rate=16384 resumes it (after $s7)" seq_above "$s7" cn1 $WEB
on cn2 zlab-verify $KVM >/dev/null && on cn2 zlab-verify $BHYVE >/dev/null &&
    pass "kvm01 and bhyve01 writers' files verify (disk0 datasets)" || fail "kvm/bhyve writer files"
on cn1 "zfs umount zones/cores/$WEB; vmadm stop $WEB; zfs umount zones/$WEB/data; zfs umount zones/$WEB" >/dev/null 2>&1
on cn1 vmadm start $WEB 2>/dev/null && [[ $(on cn1 zfs get -H -o value mounted zones/$WEB) == yes ]] &&
    pass "vmadm start mounts an unmounted zone root" || fail "start with unmounted zone root"

# --- agent -> VMAPI ---------------------------------------------------------------------------
# vmadm start returned; the agent reports the change within ~0.5 s: wait for that report.
wait_for 10 "VMAPI has web01 running on cn1 (the agent's report after start)" \
    vmapi_is $WEB "$CN1" running
on cn1 vmadm stop $MIN 2>/dev/null
wait_for 6 "agent reports min01 stopped" \
    sh -c "curl -s $VMAPI_URL/vms/$MIN | grep -q '\"state\": *\"stopped\"'"
on cn1 vmadm start $MIN 2>/dev/null
wait_for 6 "agent reports min01 running again" \
    sh -c "curl -s $VMAPI_URL/vms/$MIN | grep -q '\"state\": *\"running\"'"
on cn2 vmadm update $KVM do_not_inventory=true 2>/dev/null || fail "vmadm update DNI"
wait_for 6 "a VM set do_not_inventory is reported destroyed" \
    sh -c "curl -s $VMAPI_URL/vms/$KVM | grep -q '\"state\": *\"destroyed\"'"
on cn2 vmadm update $KVM do_not_inventory=false 2>/dev/null
wait_for 6 "clearing do_not_inventory reports it again (running on cn2)" \
    sh -c "curl -s $VMAPI_URL/vms/$KVM | grep -q '\"state\": *\"running\"'"
t0=$(date +%s%N)
vmapi "/vms/$BHYVE?sync=true" >/dev/null
ms=$((($(date +%s%N) - t0) / 1000000))
((ms < 2500)) && pass "GET ?sync=true answered in $ms ms (agent polls sync-requests)" ||
    fail "GET ?sync=true took $ms ms"

# --- configuration and data to the other node -------------------------------------------------
before=$(on cn1 vmadm get $LX) || die "vmadm get lx01"
on cn1 zonecfg -z $LX export >"$LAB_DIR/lx01.cfg" || fail "zonecfg export"
grep -q '^create -b$' "$LAB_DIR/lx01.cfg" && grep -q "^set uuid=$LX$" "$LAB_DIR/lx01.cfg" &&
    pass "zonecfg export prints zonecfg commands" || fail "export: $(head -3 "$LAB_DIR/lx01.cfg")"
on cn2 "cat > /tmp/lx01.cfg" <"$LAB_DIR/lx01.cfg"
on cn2 "zonecfg -z $LX -f /tmp/lx01.cfg && vmadm update $LX do_not_inventory=true && zoneadm -z $LX attach -F" \
    2>/dev/null || fail "zonecfg -f + attach -F on cn2"
z=$(on cn2 zoneadm list -cp | grep ":$LX:")
[[ $z == "-:$LX:installed:/zones/$LX:$LX:lx:excl:"* ]] && pass "zoneadm list -cp: $z" ||
    fail "zoneadm list -cp on cn2: $z"
nods=$(on cn2 vmadm get $LX | json '"zfs_filesystem" not in d and d["state"] == "stopped"')
[[ $nods == True ]] && pass "vmadm get works while the datasets are missing" ||
    fail "vmadm get without datasets: $nods"
on cn2 imgadm import -q $IMG_DEB >/dev/null || fail "import debian on cn2"
on cn1 zfs snapshot -r zones/$LX@vm-migration-1 || fail "snapshot lx01"
on cn1 zfs send -R zones/$LX@vm-migration-1 | on cn2 zfs recv -u zones/$LX || fail "send | recv lx01"
on cn2 zfs mount zones/$LX || fail "mount lx01 on cn2"
after=$(on cn2 vmadm get $LX) || fail "vmadm get lx01 on cn2"
strip='{k: v for k, v in d.items() if k not in ("server_uuid", "last_modified", "platform_buildstamp", "do_not_inventory", "zoneid", "pid", "boot_timestamp")}'
a=$(json "$strip" <<<"$before")
b=$(json "$strip" <<<"$after")
[[ $a == "$b" ]] && pass "export -> zonecfg -f + attach -F + recv reproduces the vmadm object" ||
    fail "vmadm objects differ: $(diff <(tr ',' '\n' <<<"$a") <(tr ',' '\n' <<<"$b") | head -10)"
s1=$(on cn1 zlab-sum zones/$LX | cut -d' ' -f1)
s2=$(on cn2 zlab-sum zones/$LX | cut -d' ' -f1)
[[ -n $s1 && $s1 == "$s2" ]] && pass "zlab-sum of the zone root is the same on both nodes" ||
    fail "zlab-sum differs: $s1 vs $s2"
on cn2 vmadm start $LX 2>/dev/null || fail "start lx01 on cn2"
wait_for 10 "the copy boots on cn2 and its writer's file verifies" on cn2 zlab-verify $LX
on cn2 vmadm stop $LX 2>/dev/null

# --- delete -------------------------------------------------------------------------------------
out=$(on cn1 vmadm delete $MIN 2>&1)
[[ $? == 1 && $out == "Failed to delete VM $MIN: indestructible_zoneroot is set, cannot delete" ]] &&
    pass "vmadm delete refuses indestructible_zoneroot" || fail "delete min01: $out"
on cn1 vmadm update $MIN indestructible_zoneroot=false 2>/dev/null &&
    on cn1 vmadm delete $MIN 2>/dev/null || fail "delete min01 after clearing indestructible_zoneroot"
left=$(on cn1 "zfs list -H -o name -t all | grep $MIN; ls /etc/zones | grep $MIN")
[[ -z $left ]] && pass "vmadm delete removed datasets (root, cores) and config" || fail "left behind: $left"
wait_for 6 "agent reports the deleted VM destroyed" \
    sh -c "curl -s $VMAPI_URL/vms/$MIN | grep -q '\"state\": *\"destroyed\"'"
on cn2 vmadm delete $LX 2>/dev/null && ! on cn2 zfs list zones/$LX >/dev/null 2>&1 &&
    pass "vmadm delete of the lx01 copy on cn2" || fail "delete lx01 copy on cn2"

"$LAB" down >/dev/null 2>&1 || fail "lab down"
trap - EXIT
if ((FAILS)); then
    echo "lab_standins: $FAILS check(s) failed"
    exit 1
fi
echo "lab_standins: all checks passed"
exit 0
