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

# zm as in lib_migrate.sh, with a longer cap: under TCG a migration of a few MB between two
# guests takes minutes (OZ_ZM_TIMEOUT seconds, default 900).
zm() {
    local t0
    t0=$(date +%s.%N)
    ZM_RC=0
    (
        timeout -k 5 "${OZ_ZM_TIMEOUT:-900}" "$ZM" "$@" >"$ZM_OUT" 2>"$ZM_ERR" </dev/null
        exit $?
    ) 2>/dev/null || ZM_RC=$?
    ZM_SECS=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    {
        printf '\n$ zmigrate %s   -> rc %s in %s s\n' "$*" "$ZM_RC" "$ZM_SECS"
        cat "$ZM_OUT"
        sed 's/^/stderr: /' "$ZM_ERR"
    } >>"$MT_WORK/zm.log"
    return 0
}

# oz_setup NAME SUBNET UP-ARGS...: skips (125) without root or qemu; brings up the lab.
oz_setup() {
    local name=$1 subnet=$2
    shift 2
    if ((EUID != 0)); then
        echo "SKIP: needs root (taps, qemu, namespaces)"
        exit 125
    fi
    if ! command -v qemu-system-x86_64 >/dev/null || ! command -v debootstrap >/dev/null; then
        echo "SKIP: qemu-system-x86 / debootstrap not installed (scripts/install-deps)"
        exit 125
    fi
    if [[ ! -c /dev/net/tun ]]; then
        echo "SKIP: no /dev/net/tun"
        exit 125
    fi
    export LAB_NAME=$name LAB_SUBNET=$subnet LAB_DIR=/var/tmp/zmigrate-lab/$name
    ZM=${ZMIGRATE_BIN:-$MT_ROOT/build/zmigrate}
    [[ -x $ZM ]] || { fail "no zmigrate binary at $ZM (set ZMIGRATE_BIN)"; exit 1; }
    trap mt_finish EXIT
    trap 'exit 1' INT TERM
    "$LAB" down >/dev/null 2>&1 || true
    local t0=$SECONDS log=/var/tmp/zmigrate-lab/$name.up.log
    mkdir -p /var/tmp/zmigrate-lab
    LAB_VERBOSE=1 "$LAB" up "$@" >"$log" 2>&1 || { tail -30 "$log"; mt_die "lab up $*"; }
    grep -E 'booted cold|image .* ready|nodes up|seed:' "$log" | sed 's/^/# /'
    # shellcheck disable=SC1091
    source "$LAB_DIR/env"
    export VMAPI_URL CNAPI_URL NAPI_URL IMGAPI_URL ZMIGRATE_CONFIG
    MT_WORK=$LAB_DIR/t
    mkdir -p "$MT_WORK"
    ZM_OUT=$MT_WORK/zm.out
    ZM_ERR=$MT_WORK/zm.err
    note "lab $LAB_NAME up ($*) in $((SECONDS - t0)) s; zmigrate: $ZM"
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

# zm_noexec ARGS...: runs zmigrate ARGS like zm. On a systemd Linux node /run is mounted noexec,
# and zmigrate's data path executes its forced-command script /var/run/zmigrate/<id>/recv on the
# target, which then fails with "Permission denied" (exit 126). That is a zmigrate defect (the
# forced command must run the script through sh): it is reported as a FAIL here, then /run is
# remounted exec on every guest (a workaround, so the rest of the tier still tests the OpenZFS
# features) and ARGS run again.
OZ_NOEXEC_SEEN=0
zm_noexec() {
    zm "$@"
    if ((ZM_RC != 0)) && grep -q 'zmigrate/[^ ]*/recv: Permission denied' "$ZM_ERR"; then
        fail "zmigrate $1: the target's /run is noexec (as systemd mounts it) and zmigrate's forced command executes /var/run/zmigrate/<id>/recv: $(grep -o 'exit status 126.*Permission denied' "$ZM_ERR" | head -1) [zmigrate bug in src/migration/data_path.cpp; workaround: remount /run exec in the guests]"
        OZ_NOEXEC_SEEN=1
        local k
        for k in $(sed -n 's/^LAB_OPENZFS_NODES=//p' "$LAB_DIR/lab.conf" | tr -d '"'); do
            on "cn$k" 'mount -o remount,exec /run' || fail "remount /run exec on cn$k"
        done
        # The failed run left its migration where the next command goes on from.
        zm "$@"
    fi
    return 0
}

# oz_sums NODE VM: zlab-sum of each of the VM's mounted datasets (zone root, disks; not cores),
# without the writer file and the halt stamp `lastexited`, the uuid replaced by VM.
oz_sums() {
    on "$1" "for d in \$(zfs list -H -o name -r zones | grep -E '^zones/$2(\$|/|-disk)'); do
        zlab-sum --exclude zlab-writer.dat --exclude lastexited \$d; done" | sed "s/$2/VM/g"
}
