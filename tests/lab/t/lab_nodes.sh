#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Lab test of the node infrastructure (tests/lab/lab, tests/lab/node/init): two nodes come up,
# answer ssh with pinned host keys, each sees only its own pool, a node-to-node
# `zfs send | ssh zfs recv` works, `lab exec` enters the node, `down` leaves nothing behind and
# `up` recovers after a kill -9 of every node process.
# Exit: 0 pass, 1 fail, 125 skip (not root, no /dev/fuse, no network namespaces).

set -euo pipefail

LAB_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB="$LAB_HOME/lab"
export LAB_NAME=zmt-nodes LAB_SUBNET=10.97.1 LAB_DIR=/var/tmp/zmigrate-lab-test/zmt-nodes
export LAB_POOL_SIZE=256M
unset LAB_NODES LAB_VERBOSE

skip() { echo "SKIP: $*"; exit 125; }
fail() {
    echo "FAIL: $*"
    local f
    for f in "$LAB_DIR"/nodes/cn*/init.log; do
        [[ -r $f ]] && { echo "--- $f"; tail -n 15 "$f"; }
    done
    exit 1
}
ok() { echo "ok: $(date +%T.%2N) $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

((EUID == 0)) || skip "not root"
[[ -c /dev/fuse ]] || skip "/dev/fuse is missing"
probe="zmt-nodes-probe$$"
ip netns add "$probe" >/dev/null 2>&1 || skip "network namespaces (ip netns) unavailable"
ip netns del "$probe"
for c in zfs-fuse /usr/sbin/sshd unshare nsenter; do
    command -v "$c" >/dev/null || fail "'$c' is not installed (scripts/install-deps)"
done

cleanup() {
    local rc=$?
    "$LAB" down >/dev/null 2>&1 || "$LAB" down || true
    rm -rf "$LAB_DIR/test"
    exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

lab_ssh() { "$LAB" ssh "$@"; }
lab_exec() { "$LAB" exec "$@"; }

# nothing_left: no namespace, link, fuse mount or process of this lab remains.
nothing_left() {
    local what=$1
    if ip netns list | grep -q "^$LAB_NAME-"; then fail "$what: netns left: $(ip netns list | grep "^$LAB_NAME-" | tr '\n' ' ')"; fi
    if ip -o link show | grep -q -- "$LAB_NAME"; then fail "$what: links left: $(ip -o link show | grep -- "$LAB_NAME")"; fi
    if awk '$9 == "fuse.zfs"' /proc/self/mountinfo | grep -q .; then fail "$what: fuse.zfs mounts left in the root namespace"; fi
    if pgrep -f -- "$LAB_NAME" >/dev/null; then fail "$what: processes left: $(pgrep -a -f -- "$LAB_NAME")"; fi
}

# --- up ---------------------------------------------------------------------------------------
"$LAB" down >/dev/null 2>&1 || true
t=$(now)
"$LAB" up 2 || fail "lab up 2"
ok "up 2 nodes in $(since "$t") s"
"$LAB" status || fail "lab status after up"
[[ $("$LAB" env) == "export VMAPI_URL=http://$LAB_SUBNET.1:18081 "* ]] || fail "lab env: $("$LAB" env)"
if [[ -f $LAB_HOME/seed.py && -f $LAB_HOME/sim/inventory.py ]]; then
    [[ -s $LAB_DIR/seed.json ]] || fail "no seed.json after up"
    curl -fsS -m 2 -o /dev/null "http://$LAB_SUBNET.1:18081/ping" || fail "simulator does not answer after up"
    "$LAB" status | grep -q '^sim *up' || fail "lab status does not show the simulator"
    ok "seeded, simulator up"
fi

# --- ssh with pinned host keys -----------------------------------------------------------------
for k in 1 2; do
    out=$(lab_ssh "cn$k" hostname) || fail "ssh cn$k"
    [[ $out == "cn$k" ]] || fail "ssh cn$k answered hostname '$out'"
    out=$(ssh -i "$LAB_DIR/operator_key" -o UserKnownHostsFile="$LAB_DIR/known_hosts" -o StrictHostKeyChecking=yes \
        -o BatchMode=yes -o IdentitiesOnly=yes "root@$LAB_SUBNET.1$k" 'echo $PATH') || fail "plain ssh to cn$k"
    [[ $out == /usr/local/sbin:* ]] || fail "cn$k: PATH of an ssh session is '$out' (want /usr/local/sbin first)"
done
mkdir -p "$LAB_DIR/test"
# A wrong pinned key must be refused: cn2's key filed under cn1's address.
awk -v a="$LAB_SUBNET.11" '$1 == "cn2" { print a, $2, $3 }' "$LAB_DIR/known_hosts" >"$LAB_DIR/test/wrong_known_hosts"
if ssh -i "$LAB_DIR/operator_key" -o UserKnownHostsFile="$LAB_DIR/test/wrong_known_hosts" -o GlobalKnownHostsFile=/dev/null \
    -o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes "root@$LAB_SUBNET.11" true 2>/dev/null; then
    fail "ssh to cn1 accepted a wrong host key"
fi
: >"$LAB_DIR/test/empty_known_hosts"
if ssh -i "$LAB_DIR/operator_key" -o UserKnownHostsFile="$LAB_DIR/test/empty_known_hosts" -o GlobalKnownHostsFile=/dev/null \
    -o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes "root@$LAB_SUBNET.11" true 2>/dev/null; then
    fail "ssh to cn1 accepted an unknown host key"
fi
ok "ssh to both nodes with strict host keys; wrong and unknown keys refused"

# --- node identity files ----------------------------------------------------------------------
out=$(lab_exec cn2 cat /etc/zmigrate-lab/node.json)
python3 - "$out" "$LAB_SUBNET" <<'EOF' || fail "cn2 node.json: $out"
import json, sys
j = json.loads(sys.argv[1]); s = sys.argv[2]
assert j["hostname"] == "cn2", j
assert j["server_uuid"] == "564d0000-0000-4000-8000-000000000002", j
assert j["admin_ip"] == s + ".12", j
assert j["vmapi_url"] == "http://%s.1:18081" % s, j
assert j["imgapi_url"] == "http://%s.1:18084" % s, j
assert j["napi_url"] == "http://%s.1:18083" % s, j
EOF
[[ $(lab_exec cn1 getent hosts cn2 | awk '{ print $1 }') == "$LAB_SUBNET.12" ]] || fail "cn1 does not resolve cn2"
[[ $(lab_exec cn1 zfs get -H -o value atime zones) == off ]] || fail "pool zones on cn1 has atime on"
[[ $(lab_exec cn1 zfs get -H -o value mountpoint zones) == /zones ]] || fail "pool zones on cn1 not at /zones"
lab_exec cn1 sh -c 'touch /usr/local/sbin/x 2>/dev/null' && fail "/usr/local/sbin is writable in cn1"
[[ $(lab_exec cn1 cat /proc/1/cmdline | tr '\0' ' ') == */node/init\ * ]] || fail "lab exec cn1: pid 1 is not the node init"
[[ $(lab_exec cn1 sh -c 'pwd; cat .ssh/authorized_keys') == "/root"$'\n'"$(cat "$LAB_DIR/operator_key.pub")" ]] ||
    fail "lab exec cn1 does not start in the node's /root"
ok "node.json, /etc/hosts, pool properties, read-only /usr/local/sbin, lab exec"

# --- each node sees only its own pool ---------------------------------------------------------
lab_exec cn1 zfs create zones/only-on-cn1 || fail "zfs create on cn1"
lab_exec cn1 zfs list -H -o name | grep -qx zones/only-on-cn1 || fail "cn1 does not list its own dataset"
lab_ssh cn2 zfs list -H -o name | grep -qx zones/only-on-cn1 && fail "cn2 sees cn1's dataset"
lab_exec cn2 sh -c 'ls /zones' | grep -q only-on-cn1 && fail "cn2's /zones shows cn1's dataset"
[[ -d /zones/only-on-cn1 ]] && fail "the root namespace sees cn1's dataset"
ok "datasets of cn1 invisible to cn2 and to the host"

# --- node-to-node zfs send | ssh zfs recv ------------------------------------------------------
lab_exec cn1 sh -c 'dd if=/dev/urandom of=/zones/only-on-cn1/data bs=64k count=64 2>/dev/null && zfs snapshot zones/only-on-cn1@s1' ||
    fail "write + snapshot on cn1"
lab_exec cn1 sh -c 'rm -f /root/.ssh/peer /root/.ssh/peer.pub && ssh-keygen -q -t ed25519 -N "" -C peer -f /root/.ssh/peer' ||
    fail "key generation on cn1"
lab_exec cn1 cat /root/.ssh/peer.pub | lab_ssh cn2 'cat >>/root/.ssh/authorized_keys' || fail "installing cn1's key on cn2"
hostkey=$(lab_ssh cn2 cat /etc/ssh/ssh_host_ed25519_key.pub | awk '{ print $1, $2 }')
printf 'cn2 %s\n' "$hostkey" | lab_exec cn1 sh -c 'cat >/root/.ssh/peer_known_hosts' || fail "pinning cn2's key on cn1"
lab_exec cn1 sh -c 'zfs send zones/only-on-cn1@s1 | ssh -i /root/.ssh/peer -o IdentitiesOnly=yes \
    -o UserKnownHostsFile=/root/.ssh/peer_known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes \
    root@cn2 zfs recv zones/from-cn1' || fail "zfs send cn1 | ssh cn2 zfs recv"
g1=$(lab_exec cn1 zfs get -Hp -o value guid zones/only-on-cn1@s1)
g2=$(lab_exec cn2 zfs get -Hp -o value guid zones/from-cn1@s1) || fail "cn2 has no zones/from-cn1@s1"
[[ -n $g1 && $g1 == "$g2" ]] || fail "snapshot guid differs: cn1 $g1, cn2 $g2"
s1=$(lab_exec cn1 sha256sum /zones/only-on-cn1/data | awk '{ print $1 }')
s2=$(lab_ssh cn2 sha256sum /zones/from-cn1/data | awk '{ print $1 }')
[[ $s1 == "$s2" ]] || fail "received data differs"
lab_exec cn2 zfs list -H -o name | grep -qx zones/from-cn1 || fail "cn2 does not list zones/from-cn1"
ok "zfs send cn1 | ssh cn2 zfs recv (guid $g1)"

# --- down leaves nothing ----------------------------------------------------------------------
t=$(now)
"$LAB" down || fail "lab down"
ok "down in $(since "$t") s"
nothing_left "after down"
"$LAB" status >/dev/null && fail "lab status says up after down"
[[ -s $LAB_DIR/operator_key ]] || fail "down removed the operator key"

# --- up after a crash -------------------------------------------------------------------------
# The rest is about nodes only: no seed, no simulator.
export LAB_SEED=0
t=$(now)
"$LAB" up 2 >/dev/null 2>&1 || fail "second lab up 2"
ok "re-up 2 nodes in $(since "$t") s"
for k in 1 2; do
    mapfile -t pids < <(ip netns pids "$LAB_NAME-cn$k")
    ((${#pids[@]} == 0)) || kill -KILL "${pids[@]}" 2>/dev/null || true
done
pkill -KILL -f -- "--node-ns $LAB_NAME-cn" || true
for ((i = 0; i < 40; i++)); do
    pgrep -f -- "--node-ns $LAB_NAME-cn" >/dev/null || break
    sleep 0.05
done
"$LAB" status >/dev/null && fail "lab status says up after kill -9"
t=$(now)
"$LAB" up 2 || fail "lab up 2 after a crash"
ok "up after kill -9 in $(since "$t") s"
for k in 1 2; do
    [[ $(lab_ssh "cn$k" hostname) == "cn$k" ]] || fail "ssh cn$k after crash recovery"
    lab_exec "cn$k" zfs list -H -o name | grep -q -e only-on-cn1 -e from-cn1 && fail "cn$k pool not fresh after re-up"
done
"$LAB" status >/dev/null || fail "lab status after crash recovery"
"$LAB" down || fail "lab down after crash recovery"
nothing_left "after the final down"
ok "crash recovery; nothing left"
echo "PASS"
