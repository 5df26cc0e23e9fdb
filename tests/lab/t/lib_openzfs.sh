# SPDX-License-Identifier: MPL-2.0
# shellcheck shell=bash disable=SC2034
# Helpers of the openzfs lab tier (tests/lab/t/openzfs_*.sh, ctest label `openzfs`): the
# migrate helpers of lib_migrate.sh plus a lab with OpenZFS qemu guests (tests/lab/openzfs/).
#
#   source "$(dirname "$0")/lib_openzfs.sh"
#   oz_setup zmoz 10.97.0 --kind openzfs 2     # lab up with these arguments, down at exit

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    echo "lib_openzfs.sh: helpers of the openzfs_*.sh lab tests; nothing to run on its own"
    exit 0
fi

# shellcheck source=lib_migrate.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib_migrate.sh"

# Under TCG a migration of a few MB between two guests takes minutes: zm's cap is 15 minutes.
MT_ZM_TIMEOUT=${MT_ZM_TIMEOUT:-900}

# oz_setup NAME SUBNET UP-ARGS...: skips (125) without root, qemu, debootstrap, /dev/net/tun or
# /dev/fuse (the tier's lab has a zfs-fuse node); brings up the lab (mt_lab_up, `lab up` log kept).
oz_setup() {
    if ((EUID != 0)); then
        echo "SKIP: needs root (taps, qemu, namespaces)"
        exit 125
    fi
    if ! command -v qemu-system-x86_64 >/dev/null || ! command -v debootstrap >/dev/null; then
        echo "SKIP: qemu-system-x86 / debootstrap not installed (scripts/install-deps)"
        exit 125
    fi
    local dev
    for dev in /dev/net/tun /dev/fuse; do
        if [[ ! -c $dev ]]; then
            echo "SKIP: no $dev"
            exit 125
        fi
    done
    MT_UP_KEEP_LOG=1 mt_lab_up "$@"
    grep -E 'booted cold|image .* ready|nodes up|seed:|up in' "/var/tmp/zmigrate-lab/$1.up.log" | sed 's/^/# /'
}

# oz_log_of VM: path of the log of the VM's latest migration.
oz_log_of() {
    local id
    id=$(mig_id "$1") || return 1
    printf '%s/log/%s.log' "$LAB_DIR" "$id"
}

# oz_sends LOG: the zfs send argvs zmigrate ran (one per line, the pipeline cut at the first |).
oz_sends() {
    python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try:
        j = json.loads(line)
    except ValueError:
        continue
    a = j.get("argv")
    if isinstance(a, list):
        a = " ".join(a)
    # the send runs under `sh -c "trap '' HUP PIPE; exec \"$@\"" sh zfs send ...`
    if isinstance(a, str) and a.startswith("sh -c") and " sh zfs send" in a.split("|")[0]:
        a = a[a.index(" sh zfs send") + 4:]
    # real sends only: a dry run (-n, -nvP) is an estimate
    if isinstance(a, str) and a.startswith("zfs send") and not any(
            w.startswith("-") and not w.startswith("--") and "n" in w for w in a.split("|")[0].split()):
        print(j.get("host", "?"), a.split("|")[0].strip())
PY
}

# oz_caps LOG HOST: the capabilities zmigrate probed on HOST (JSON), from the log.
oz_caps() {
    python3 - "$1" "$2" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try:
        j = json.loads(line)
    except ValueError:
        continue
    if j.get("msg") == "zfs capabilities" and j.get("host") == sys.argv[2]:
        print(json.dumps(j.get("caps") or j.get("capabilities")))
        break
PY
}

# oz_zm_leftovers NODE: every snapshot, bookmark and hold named zmigrate on NODE (empty: none).
oz_zm_leftovers() {
    on "$1" 'zfs list -H -o name -t snapshot,bookmark 2>/dev/null | grep zmigrate;
        for s in $(zfs list -H -o name -t snapshot 2>/dev/null); do
            zfs holds -H "$s" 2>/dev/null | awk "\$2 ~ /zmigrate/ { print \"hold\", \$1, \$2 }"
        done; true'
}

# oz_sums NODE VM: zlab-sum of each of the VM's mounted datasets (zone root, disks; not cores),
# without the writer file and the halt stamp `lastexited`, the uuid replaced by VM.
oz_sums() {
    on "$1" "for d in \$(zfs list -H -o name -r zones | grep -E '^zones/$2(\$|/|-disk)'); do
        zlab-sum --exclude zlab-writer.dat --exclude lastexited \$d; done" | sed "s/$2/VM/g"
}

# oz_migrate_finalize LABEL VM ARGS...: `zmigrate --json migrate ARGS... --finalize VM` as one
# check named LABEL (its output stays in $ZM_OUT for zm_json).
oz_migrate_finalize() {
    local label=$1 vm=$2
    shift 2
    zm --json migrate "$@" --finalize "$vm"
    if ((ZM_RC == 0)); then
        ok "migrate --finalize $label (${ZM_SECS} s)"
    else
        fail "migrate --finalize $label: rc $ZM_RC"
        zm_show
    fi
}

# oz_nothing_left WHEN NODE...: checks that no snapshot, bookmark or hold named zmigrate is left
# on each NODE.
oz_nothing_left() {
    local when=$1 n left
    shift
    for n in "$@"; do
        left=$(oz_zm_leftovers "$n")
        check "$when: nothing named zmigrate on $n${left:+: $left}" test -z "$left"
    done
}
