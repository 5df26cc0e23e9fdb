#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Records real zfs-fuse command outputs into tests/data/zfs/zfs-fuse/ (stdout in NAME.out, stderr
# in NAME.err, exit status and command in INDEX.tsv). Runs a scratch pool inside a private mount
# and pid namespace, so nothing outside /var/tmp/zmigrate-zfs-record is touched; everything is
# gone when the namespace exits. Needs root, /dev/fuse and zfs-fuse. Usage: record-zfs-fuse.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../../.." && pwd)
out="$here/zfs-fuse"
scratch=/var/tmp/zmigrate-zfs-record
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 125; }
command -v zfs-fuse >/dev/null || { echo "needs zfs-fuse" >&2; exit 125; }

# The probe script is recorded exactly as the source defines it (between the raw-string markers).
probe=$(sed -n '/R"PROBE(/,/)PROBE"/p' "$src/src/zfs/capabilities.cpp" | sed '1d;$d')
[ -n "$probe" ] || { echo "probe script not found in src/zfs/capabilities.cpp" >&2; exit 1; }

rm -rf "$out" "$scratch"
mkdir -p "$out" "$scratch"
export out scratch probe

unshare --mount --pid --fork --mount-proc bash -s <<'INNER'
set -u
mount --make-rprivate /
mount -t tmpfs tmpfs /run && mkdir -p /run/lock /run/zfs
mount -t tmpfs tmpfs /var/lib/zfs
mount -t tmpfs tmpfs /tmp
mkdir -p "$scratch/mnt" && mount -t tmpfs tmpfs "$scratch/mnt"
zfs-fuse --no-kstat-mount --no-daemon >"$scratch/zfs-fuse.log" 2>&1 &
zfs_pid=$!
cleanup() { zpool export -f zones >/dev/null 2>&1; kill -9 "$zfs_pid" 2>/dev/null; }
trap cleanup EXIT
for _ in $(seq 1 100); do zpool list >/dev/null 2>&1 && break; sleep 0.1; done
truncate -s 512M "$scratch/pool.img"
zpool create -f -m "$scratch/mnt" -O atime=off zones "$scratch/pool.img" 2>/dev/null
M="$scratch/mnt"

printf 'name\texit\tcommand\n' >"$out/INDEX.tsv"
# rec NAME 'shell command': stdout -> NAME.out, stderr -> NAME.err (kept only when non-empty).
rec() {
  local name=$1 cmd=$2 rc=0
  bash -c "$cmd" >"$out/$name.out" 2>"$out/$name.err" || rc=$?
  [ -s "$out/$name.out" ] || rm -f "$out/$name.out"
  [ -s "$out/$name.err" ] || rm -f "$out/$name.err"
  printf '%s\t%s\t%s\n' "$name" "$rc" "${cmd//$scratch/\$SCRATCH}" >>"$out/INDEX.tsv"
}
fill() { dd if=/dev/urandom of="$M/$1" bs=64k count="$2" 2>/dev/null; }

# Capability probe and usage texts.
rec probe 'sh -c "$probe"'
rec send-usage 'zfs send'
rec recv-usage 'zfs receive'
rec hold-usage 'zfs hold'
rec version 'zfs version'
rec snapshot-multi 'zfs create zones/m1 && zfs create zones/m2 && zfs snapshot zones/m1@s zones/m2@s'
rec get-written 'zfs get -Hp written zones'
rec list-p 'zfs list -Hp -o name zones'
rec send-nvP 'zfs snapshot zones/m1@s && zfs send -nvP zones/m1@s'

# A small tree like a bhyve zone: root, children, snapshots.
zfs create zones/vm && zfs create zones/vm/disk0 && zfs create zones/vm/data
fill vm/f 16; fill vm/data/f 8
zfs snapshot -r zones/vm@zmigrate-m1-1
fill vm/g 4
zfs snapshot -r zones/vm@zmigrate-m1-2
zfs set quota=1G zones/vm
rec list-datasets 'zfs list -H -o name,type,origin,mounted -t filesystem,volume -r zones/vm'
rec list-snapshots 'zfs list -H -t snapshot -o name -s creation -r -d 1 zones/vm'
rec list-snapshots-none 'zfs list -H -t snapshot -o name -s creation -r -d 1 zones/vm/disk0/../x'
rec list-missing 'zfs list -H -o name -t filesystem,volume -r zones/nx'
rec list-guid-humanized 'zfs list -H -o name,guid -t all -r zones/vm'
rec get-props 'zfs get -Hp -o name,property,value guid,createtxg,creation,used,referenced,usedbydataset,quota,reservation,refquota,refreservation,type,origin,mounted,compressratio zones/vm zones/vm@zmigrate-m1-1'
rec get-props-missing 'zfs get -Hp -o name,property,value guid zones/vm zones/nx'
rec get-props-unknown 'zfs get -Hp -o name,property,value guid,receive_resume_token zones/vm'
rec get-snapshot-guids 'zfs get -Hp -o name,property,value guid,createtxg -t snapshot -r -d 1 zones/vm'
rec get-snapshot-guids-d1 'zfs get -Hp -r -d 1 -o name,property,value guid,createtxg zones/vm'
rec hold 'zfs hold zmigrate-m1 zones/vm@zmigrate-m1-1'
rec holds 'zfs holds zones/vm@zmigrate-m1-1'
rec release 'zfs release zmigrate-m1 zones/vm@zmigrate-m1-1'

# Send -v output (zfs-fuse has no -n/-P).
rec send-v-full 'zfs send -v zones/vm@zmigrate-m1-1 >/dev/null'
rec send-v-incr 'zfs send -v -i zones/vm@zmigrate-m1-1 zones/vm@zmigrate-m1-2 >/dev/null'
rec send-v-incr-I-R 'zfs send -v -R -I @zmigrate-m1-1 zones/vm@zmigrate-m1-2 >/dev/null'
rec send-v-R-full 'zfs send -v -R zones/vm@zmigrate-m1-1 >/dev/null'
rec send-missing 'zfs send zones/vm@nope >/dev/null'
rec send-incr-missing 'zfs send -i zones/vm@nope zones/vm@zmigrate-m1-2 >/dev/null'

# Receives: success and every failure we classify.
zfs send zones/vm/data@zmigrate-m1-1 >"$scratch/s1"
zfs send -i zones/vm/data@zmigrate-m1-1 zones/vm/data@zmigrate-m1-2 >"$scratch/i12"
rec recv-full-ok "zfs receive -u -v zones/t1 <$scratch/s1"
rec recv-full-exists "zfs receive -u zones/t1 <$scratch/s1"
rec recv-full-F-has-snapshots "zfs receive -u -F zones/t1 <$scratch/s1"
rec recv-missing-parent "zfs receive -u zones/nx/child <$scratch/s1"
zfs mount zones/t1 && touch "$M/t1/dirty"
rec recv-incr-modified "zfs receive -u zones/t1 <$scratch/i12"
rec recv-incr-ok-F "zfs receive -u -F -v zones/t1 <$scratch/i12"
rec recv-incr-again "zfs receive -u zones/t1 <$scratch/i12"
zfs create zones/t2 && zfs snapshot zones/t2@other
rec recv-incr-mismatch "zfs receive -u zones/t2 <$scratch/i12"
rec recv-full-exists-with-snapshots "zfs receive -u zones/t2 <$scratch/s1"
rec recv-truncated "head -c 70000 $scratch/s1 | zfs receive -u zones/t3"
rec recv-empty "zfs receive -u zones/t4 </dev/null"
rec recv-garbage "head -c 4096 /dev/urandom | zfs receive -u zones/t5"
zfs create -o quota=1M zones/small
rec recv-out-of-space "zfs send zones/vm@zmigrate-m1-1 | zfs receive -u zones/small/t"
rec recv-s-unsupported "zfs receive -s -u zones/t6 <$scratch/s1"

# Existence, destroy, rename, holds.
rec exists-yes 'zfs list -H -o name zones/vm'
rec exists-no 'zfs list -H -o name zones/nx'
rec destroy-snap-missing 'zfs destroy zones/vm@nope'
rec destroy-ds-missing 'zfs destroy -r zones/nx'
zfs clone zones/vm@zmigrate-m1-1 zones/clone1
rec destroy-snap-has-clone 'zfs destroy zones/vm@zmigrate-m1-1'
rec destroy-has-children 'zfs destroy zones/vm'
rec rename-missing 'zfs rename zones/nx zones/ny'
rec rename-exists 'zfs rename zones/t1 zones/t2'
rec create-exists 'zfs create -p zones/t1'
rec create-p-ok 'zfs create -p zones/p/q/r'
rec set-bad-value 'zfs set quota=banana zones/t1'
rec mount-already 'zfs mount zones/t1'
rec hold-again 'zfs hold zmigrate-m1 zones/vm@zmigrate-m1-2 && zfs hold zmigrate-m1 zones/vm@zmigrate-m1-2'
rec destroy-held 'zfs destroy zones/vm@zmigrate-m1-2'
rec release-unknown 'zfs release zmigrate-other zones/vm@zmigrate-m1-2'
rec hold-missing 'zfs hold zmigrate-m1 zones/vm@nope'
zfs release zmigrate-m1 zones/vm@zmigrate-m1-2
# "dataset is busy" (lab.md gotcha 2): destroy a dataset right after a receive mounted it.
# It depends on timing, so try a few times and keep the first failure.
for i in 1 2 3 4 5 6; do
  zfs send zones/vm/data@zmigrate-m1-1 | zfs receive "zones/t8x$i"
  if ! zfs destroy -r "zones/t8x$i" 2>/dev/null; then
    zfs send zones/vm/data@zmigrate-m1-1 | zfs receive "zones/t8y$i"
    rec destroy-busy-after-recv "zfs destroy -r zones/t8y$i"
    break
  fi
done
# A process with its cwd inside the dataset: the unmount fails (Linux umount wording).
(cd "$M/t1" && exec sleep 5) &
sleeper=$!
sleep 0.3
rec destroy-busy-open 'zfs destroy -r zones/t1'
kill "$sleeper" 2>/dev/null
wait "$sleeper" 2>/dev/null
exit 0
INNER
rm -rf "$scratch"
echo "recorded into $out"
