# SPDX-License-Identifier: MPL-2.0
# shellcheck shell=bash
# The lab's openzfs node kind: node cnK is a qemu (TCG) guest running Debian with OpenZFS 2.3,
# sourced by tests/lab/lab. The guest joins the lab bridge through a tap device, takes its
# address and name from the kernel command line and answers ssh on <S>.(10+K):22, so zmigrate,
# the simulator and the other nodes reach it exactly like a namespace node.
#
# Fast path: each (image, subnet, K) has a "slot" under the image cache: a qcow2 overlay of the
# root image and a qcow2 pool disk, booted cold once (pool `zones` created, atime=off), then
# `savevm zlab`. Every later `up` starts the slot with `-loadvm zlab` (a running guest with an
# empty pool in a few seconds), sets the clock and copies in the per-lab files (operator key,
# node.json, /etc/hosts, the stand-ins of tests/lab/node/bin) and starts zlab-agent.

OZ_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OZ_MEM=${LAB_OPENZFS_MEM:-1024}
OZ_TAG=zlab

oz_msg() { printf 'lab: %s\n' "$*" >&2; }

# oz_tap K: host side tap of guest K (IFNAMSIZ-safe).
oz_tap() {
    local name="${LAB_NAME}q$1"
    if ((${#name} > 15)); then
        name="zq$(printf '%s' "$LAB_NAME" | cksum | cut -c1-8)q$1"
    fi
    printf '%s' "$name"
}

oz_mac() {
    local h
    h=$(printf '%s' "$LAB_SUBNET" | cksum | awk '{ printf "%02x:%02x", int($1 / 256) % 256, $1 % 256 }')
    printf '52:54:%s:00:%02x' "$h" "$1"
}

# oz_is_guest K: true when node K of this lab is an openzfs guest.
oz_is_guest() {
    [[ -f $(lab_node_dir "$1")/kind ]] && [[ $(<"$(lab_node_dir "$1")/kind") == openzfs ]]
}

# oz_image: prints the image directory, building it when the cache has none (minutes).
oz_image() {
    if [[ -z ${OZ_IMAGE_DIR:-} ]]; then
        OZ_IMAGE_DIR=$("$OZ_HOME/build-image") || lab_die "openzfs: guest image build failed"
    fi
    printf '%s' "$OZ_IMAGE_DIR"
}

oz_slot_dir() { printf '%s/slots/%s-cn%d' "$(oz_image)" "$LAB_SUBNET" "$1"; }

oz_ssh_slot() { # K CMD... (as root with the slot key; host key pinned by the slot)
    local k=$1 s
    shift
    s=$(oz_slot_dir "$k")
    ssh -i "$s/slot_key" -o IdentitiesOnly=yes -o UserKnownHostsFile="$s/known_hosts" \
        -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes \
        -o ConnectTimeout=20 -o ServerAliveInterval=5 -o ServerAliveCountMax=3 -o LogLevel=ERROR \
        "root@$(lab_node_addr "$k")" -- "$@"
}

# oz_monitor SOCK CMD: one HMP command over the monitor socket; prints its output.
oz_monitor() {
    python3 - "$1" "$2" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(300)
def until_prompt():
    buf = b''
    while not buf.endswith(b'(qemu) '):
        d = s.recv(65536)
        if not d:
            break
        buf += d
    return buf
until_prompt()
s.sendall(sys.argv[2].encode() + b'\n')
out = until_prompt().decode(errors='replace')
lines = [l for l in out.replace('\r', '').split('\n')[1:] if not l.startswith('(qemu)')]
sys.stdout.write('\n'.join(l for l in lines if l.strip()) + ('\n' if any(l.strip() for l in lines) else ''))
PY
}

# oz_qemu_pid K: pid of guest K's qemu when it runs.
oz_qemu_pid() {
    local f pid
    f="$(lab_node_dir "$1")/qemu.pid"
    [[ -r $f ]] || return 1
    pid=$(<"$f")
    lab_alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-name zlab-$LAB_NAME-cn$1," || return 1
    printf '%s' "$pid"
}

# oz_launch K MODE: starts qemu for guest K (MODE cold|loadvm), daemonized.
oz_launch() {
    local k=$1 mode=$2 img s d key64 extra=()
    img=$(oz_image)
    s=$(oz_slot_dir "$k")
    d=$(lab_node_dir "$k")
    key64=$(base64 -w0 <"$s/slot_key.pub")
    [[ $mode == loadvm ]] && extra=(-loadvm "$OZ_TAG")
    rm -f "$d/qemu.pid" "$d/monitor.sock"
    : >"$d/console.log"
    qemu-system-x86_64 -name "zlab-$LAB_NAME-cn$k,process=zlab-$LAB_NAME-cn$k" \
        -machine q35 -accel tcg,thread=multi,tb-size=256 -cpu max -smp 1 -m "$OZ_MEM" \
        -nodefaults -no-user-config -display none \
        -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
        -append "root=LABEL=zlabroot rw console=ttyS0 quiet net.ifnames=0 zlab.ip=$(lab_node_addr "$k")/24 zlab.host=cn$k zlab.key=$key64" \
        -drive "file=$s/root.qcow2,if=none,id=root,format=qcow2,cache=unsafe" -device virtio-blk-pci,drive=root \
        -drive "file=$s/pool.qcow2,if=none,id=pool,format=qcow2,cache=unsafe" -device virtio-blk-pci,drive=pool,serial=zlabpool \
        -netdev "tap,id=n0,ifname=$(oz_tap "$k"),script=no,downscript=no" -device "virtio-net-pci,netdev=n0,mac=$(oz_mac "$k")" \
        -device virtio-rng-pci -serial "file:$d/console.log" -monitor "unix:$d/monitor.sock,server,nowait" \
        -daemonize -pidfile "$d/qemu.pid" "${extra[@]}" >>"$d/qemu.log" 2>&1 ||
        lab_die "cn$k: qemu failed to start (see $d/qemu.log)"
}

# oz_wait_ssh K SECONDS: until the guest answers ssh with the slot key.
oz_wait_ssh() {
    local k=$1 secs=$2 t0=$SECONDS
    while ((SECONDS - t0 < secs)); do
        oz_ssh_slot "$k" true 2>/dev/null && return 0
        oz_qemu_pid "$k" >/dev/null || return 1
        sleep 0.5
    done
    return 1
}

# oz_prepare_slot K: boots slot K cold when it has no saved state, creates the pool and saves
# the VM state. Leaves the guest running.
oz_cold_slot() {
    local k=$1 s d i t0=$SECONDS
    s=$(oz_slot_dir "$k")
    d=$(lab_node_dir "$k")
    rm -rf "$s"
    mkdir -p "$s"
    ssh-keygen -q -t ed25519 -N '' -C "zlab-slot-cn$k" -f "$s/slot_key"
    qemu-img create -q -f qcow2 -F raw -b "$(oz_image)/root.raw" "$s/root.qcow2"
    qemu-img create -q -f qcow2 "$s/pool.qcow2" "${LAB_POOL_SIZE:-1G}"
    oz_launch "$k" cold
    # The guest prints its (first-boot) host key on the serial console: pin it from there.
    for ((i = 0; i < 600; i++)); do
        grep -q '^ZLAB-HOSTKEY ' "$d/console.log" 2>/dev/null && break
        oz_qemu_pid "$k" >/dev/null || lab_die "cn$k: qemu exited during the cold boot (see $d/console.log)"
        sleep 0.5
    done
    grep -q '^ZLAB-HOSTKEY ' "$d/console.log" || lab_die "cn$k: no host key on the console after 300 s (see $d/console.log)"
    printf '%s %s\n' "$(lab_node_addr "$k")" "$(grep -a '^ZLAB-HOSTKEY ' "$d/console.log" | head -1 | awk '{ print $2, $3 }')" >"$s/known_hosts"
    oz_wait_ssh "$k" 300 || lab_die "cn$k: no ssh after the cold boot (see $d/console.log)"
    oz_ssh_slot "$k" 'set -e
        modprobe zfs
        dev=/dev/disk/by-id/virtio-zlabpool
        for i in $(seq 50); do [ -e $dev ] && break; sleep 0.2; done
        zpool create -f -o ashift=12 -O atime=off -O compression=lz4 -m /zones zones $dev
        [ "$(zfs get -H -o value atime zones)" = off ]
        mkdir -p /etc/zones /etc/zmigrate-lab /var/lib/zfs/zlab /run/zlab
        sync; ip neigh flush all' >>"$d/qemu.log" 2>&1 || lab_die "cn$k: pool setup in the guest failed (see $d/qemu.log)"
    oz_monitor "$d/monitor.sock" "savevm $OZ_TAG" >>"$d/qemu.log" 2>&1
    oz_monitor "$d/monitor.sock" "info snapshots" | grep -q " $OZ_TAG " ||
        lab_die "cn$k: savevm $OZ_TAG failed (see $d/qemu.log)"
    echo "$OZ_TAG" >"$s/saved"
    oz_msg "cn$k: openzfs guest booted cold and saved in $((SECONDS - t0)) s"
}

# oz_start K: starts guest K (fast path when its slot is saved). Sets nothing up for the lab.
oz_start() {
    local k=$1 s
    s=$(oz_slot_dir "$k")
    if [[ -s $s/saved && -s $s/root.qcow2 && -s $s/known_hosts ]]; then
        oz_launch "$k" loadvm
        if oz_wait_ssh "$k" 60; then
            return 0
        fi
        oz_msg "cn$k: the saved state did not come up; booting cold"
        oz_stop "$k"
    fi
    oz_cold_slot "$k"
}

# oz_personalize K N: clock, per-lab files and the stand-ins into guest K; starts zlab-agent.
oz_personalize() {
    local k=$1 n=$2 d s st
    d=$(lab_node_dir "$k")
    s=$(oz_slot_dir "$k")
    st="$d/stage"
    rm -rf "$st"
    mkdir -p "$st/usr/local/sbin" "$st/etc/zmigrate-lab" "$st/root/.ssh"
    cp -a "$LAB_HOME/node/bin/." "$st/usr/local/sbin/"
    cp "$d/lab/node.json" "$st/etc/zmigrate-lab/node.json"
    cp "$d/hosts" "$st/etc/hosts"
    cat "$s/slot_key.pub" "$LAB_DIR/operator_key.pub" >"$st/root/.ssh/authorized_keys"
    chmod 0600 "$st/root/.ssh/authorized_keys"
    cp "$s/known_hosts" "$d/ssh_known_hosts"
    # A TCG guest on a loaded machine can be slow to answer right after the restore: retry.
    local try
    for try in 1 2 3; do
        tar -C "$st" -cf - usr etc root | oz_ssh_slot "$k" "set -e
        date -s @$(date +%s.%N) >/dev/null
        tar -C / -xf - --no-overwrite-dir --no-same-owner
        chown -R root:root /root/.ssh /usr/local/sbin
        hostname cn$k
        mkdir -p /run/zlab /etc/zones
        pkill -x -f '/usr/bin/python3 /usr/local/sbin/zlab-agent' || true
        setsid -f /usr/local/sbin/zlab-agent >>/var/log/zlab-agent.log 2>&1 </dev/null
        true" >>"$d/qemu.log" 2>&1 && break
        ((try < 3)) || lab_die "cn$k: cannot set up the guest over ssh (see $d/qemu.log)"
        sleep 2
    done
    rm -rf "$st"
}

# oz_host_key K: "ssh-ed25519 AAAA..." of guest K (pinned by its slot).
oz_host_key() { awk '{ print $2, $3 }' "$(oz_slot_dir "$1")/known_hosts" 2>/dev/null || true; }

oz_add_tap() {
    local tap
    tap=$(oz_tap "$1")
    ip link show dev "$tap" >/dev/null 2>&1 && ip link del dev "$tap"
    ip tuntap add dev "$tap" mode tap || lab_die "cn$1: cannot create tap $tap"
    ip link set dev "$tap" master "$LAB_BRIDGE" up
}

# oz_stop K: ends guest K's qemu (monitor quit, then TERM, then KILL) and removes its tap.
oz_stop() {
    local k=$1 pid i d
    d=$(lab_node_dir "$k")
    if pid=$(oz_qemu_pid "$k"); then
        timeout 3 bash -c "$(declare -f oz_monitor); oz_monitor '$d/monitor.sock' quit" >/dev/null 2>&1 || true
        for ((i = 0; i < 60; i++)); do lab_alive "$pid" || break; sleep 0.05; done
        lab_alive "$pid" && kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < 100; i++)); do lab_alive "$pid" || break; sleep 0.05; done
        lab_alive "$pid" && kill -KILL "$pid" 2>/dev/null
        for ((i = 0; i < 40; i++)); do lab_alive "$pid" || break; sleep 0.05; done
    fi
    rm -f "$d/qemu.pid" "$d/monitor.sock"
    local tap
    tap=$(oz_tap "$k")
    ip link show dev "$tap" >/dev/null 2>&1 && { ip link del dev "$tap" 2>/dev/null || true; }
    return 0
}

# oz_leftovers K: prints what of guest K is still there.
oz_leftovers() {
    local k=$1 pid
    pid=$(oz_qemu_pid "$k") && echo "qemu $pid (cn$k)"
    ip link show dev "$(oz_tap "$k")" >/dev/null 2>&1 && echo "tap $(oz_tap "$k")"
    return 0
}

# Host processes of this lab's guests (qemu of a crashed `up` without a pid file, too).
oz_lab_qemus() {
    pgrep -f -- "-name zlab-$LAB_NAME-cn[0-9]+," 2>/dev/null || true
}
