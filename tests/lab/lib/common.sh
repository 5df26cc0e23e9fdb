# SPDX-License-Identifier: MPL-2.0
# shellcheck shell=bash disable=SC2034
# Shared helpers of the lab scripts (sourced by tests/lab/lab and the lab tests).
# Resolves the lab parameters of tests/lab/CONTRACT.md and names every lab object in one place.

LAB_NAME=${LAB_NAME:-zmlab}
LAB_SUBNET=${LAB_SUBNET:-10.99.0}
LAB_DIR=${LAB_DIR:-/var/tmp/zmigrate-lab/$LAB_NAME}
LAB_NODES=${LAB_NODES:-3}
LAB_POOL_SIZE=${LAB_POOL_SIZE:-1G}

# Directory holding tests/lab (the lab, node/, sim/, seed.py).
LAB_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

LAB_BRIDGE="${LAB_NAME}br"
LAB_HEAD_ADDR="$LAB_SUBNET.1"

lab_msg() { printf 'lab: %s\n' "$*" >&2; }
lab_die() { printf 'lab: %s\n' "$*" >&2; exit 1; }

# lab_check_params: dies with a reason when a parameter cannot name kernel objects or paths.
lab_check_params() {
    [[ $LAB_NAME =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] ||
        lab_die "LAB_NAME '$LAB_NAME' must be letters, digits, '-', '_' or '.'"
    ((${#LAB_BRIDGE} <= 15)) ||
        lab_die "LAB_NAME '$LAB_NAME' is too long: the bridge name '$LAB_BRIDGE' exceeds 15 characters"
    [[ $LAB_SUBNET =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] ||
        lab_die "LAB_SUBNET '$LAB_SUBNET' must be the first three octets of a /24, e.g. 10.99.0"
    [[ $LAB_NODES =~ ^[0-9]+$ ]] && ((LAB_NODES >= 1 && LAB_NODES <= 99)) ||
        lab_die "node count '$LAB_NODES' must be 1..99"
    case "$LAB_DIR" in
        /*) ;;
        *) lab_die "LAB_DIR '$LAB_DIR' must be an absolute path" ;;
    esac
    case "$LAB_DIR/" in
        /tmp/* | /run/* | /root/* | /etc/* | /zones/* | /var/lib/zfs/* | /usr/local/sbin/*)
            lab_die "LAB_DIR '$LAB_DIR' is hidden inside the nodes (they mount private copies there); use e.g. /var/tmp/..." ;;
    esac
}

# Names and addresses of node K.
lab_node_ns() { printf '%s-cn%d' "$LAB_NAME" "$1"; }
lab_node_addr() { printf '%s.%d' "$LAB_SUBNET" $((10 + $1)); }
lab_node_uuid() { printf '564d0000-0000-4000-8000-0000000000%02d' "$1"; }
lab_node_dir() { printf '%s/nodes/cn%d' "$LAB_DIR" "$1"; }
# Host side of node K's veth: the netns name when it fits IFNAMSIZ, else a short stable name.
lab_node_veth() {
    local name
    name=$(lab_node_ns "$1")
    if ((${#name} > 15)); then
        name="zl$(printf '%s' "$LAB_NAME" | cksum | cut -c1-8)c$1"
    fi
    printf '%s' "$name"
}

# lab_node_index NODE: prints K for "cnK" or "K"; dies otherwise.
lab_node_index() {
    local k=${1#cn}
    [[ $k =~ ^[0-9]+$ ]] && ((10#$k >= 1)) || lab_die "unknown node '$1' (expected cnK, e.g. cn1)"
    printf '%d' $((10#$k))
}

# lab_alive PID: true when PID is a live (non-zombie) process.
lab_alive() {
    local pid=$1 state
    [[ -n $pid && -r /proc/$pid/stat ]] || return 1
    state=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# lab_node_init_pid K: prints the host pid of node K's init if it is running, else fails.
lab_node_init_pid() {
    local f pid
    f="$(lab_node_dir "$1")/init.pid"
    [[ -r $f ]] || return 1
    pid=$(<"$f")
    lab_alive "$pid" || return 1
    # Guard against pid reuse: the init's command line names this node of this lab.
    local cmd
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmd == *"--node-ns $(lab_node_ns "$1") "* ]] || return 1
    printf '%s' "$pid"
}
