#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Record real OpenZFS outputs in an openzfs lab guest, named like tests/data/zfs/openzfs-2.3/
# (whose files were written by hand), and show how they differ after masking names and numbers.
# Usage: tests/lab/openzfs/record.sh NODE OUTDIR   (a lab with the openzfs guest NODE is up)
set -euo pipefail
node=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
mkdir -p "$out"
probe=$(sed -n '/k_probe_script = R"PROBE(/,/)PROBE"/p' "$root/src/zfs/capabilities.cpp" | sed '1d;$d')
"$here/../lab" ssh "$node" bash -s >"$out/all.txt" 2>&1 <<EOS || true
set +e
rec() { name=\$1; shift; "\$@" >/tmp/rec.out 2>/tmp/rec.err; rc=\$?; echo "=== \$name rc=\$rc"; cat /tmp/rec.out; echo "--- stderr"; cat /tmp/rec.err; }
zfs destroy -r zones/vm 2>/dev/null; zfs destroy -r zones/t1 2>/dev/null; zfs destroy -r zones/t2 2>/dev/null
zfs create zones/vm && head -c 300000 /dev/urandom > /zones/vm/a && zfs snapshot zones/vm@zmigrate-m1-1
head -c 200000 /dev/urandom > /zones/vm/b && zfs snapshot zones/vm@zmigrate-m1-2
cat > /tmp/probe.sh <<'PROBE'
$probe
PROBE
rec probe sh /tmp/probe.sh
rec send-nvP-full zfs send -nvP zones/vm@zmigrate-m1-1
rec send-nvP-incr zfs send -nvP -i zones/vm@zmigrate-m1-1 zones/vm@zmigrate-m1-2
rec send-nvP-R-full zfs send -nvP -R zones/vm@zmigrate-m1-2
rec send-nvP-R-I zfs send -nvP -R -I zones/vm@zmigrate-m1-1 zones/vm@zmigrate-m1-2
zfs bookmark zones/vm@zmigrate-m1-1 zones/vm#zmigrate-m1-1
rec send-nvP-bookmark zfs send -nvP -i zones/vm#zmigrate-m1-1 zones/vm@zmigrate-m1-2
rec send-nv-full zfs send -nv zones/vm@zmigrate-m1-1
zfs send zones/vm@zmigrate-m1-1 | zfs recv -u zones/t1
rec recv-full-exists sh -c 'zfs send zones/vm@zmigrate-m1-1 | zfs recv -u zones/t1'
rec recv-full-F-has-snapshots sh -c 'zfs send zones/vm@zmigrate-m1-1 | zfs recv -u -F zones/t1'
zfs set readonly=off zones/t1; zfs mount zones/t1; echo x > /zones/t1/new; sync
rec recv-incr-modified sh -c 'zfs send -i @zmigrate-m1-1 zones/vm@zmigrate-m1-2 | zfs recv -u zones/t1'
zfs umount zones/t1
rec recv-incr-missing sh -c 'zfs send -i @zmigrate-m1-1 zones/vm@zmigrate-m1-2 | zfs recv -u zones/nx'
rec recv-truncated sh -c 'zfs send zones/vm@zmigrate-m1-2 | head -c 250000 | zfs recv -u zones/t2'
rec recv-truncated-resumable sh -c 'zfs send zones/vm@zmigrate-m1-2 | head -c 250000 | zfs recv -u -s zones/t2'
rec get-resume-token zfs get -Hp -o name,property,value receive_resume_token zones/t2
tok=\$(zfs get -H -o value receive_resume_token zones/t2)
rec send-nvP-resume zfs send -nvP -t \$tok
rec recv-partial-state sh -c 'zfs send zones/vm@zmigrate-m1-2 | zfs recv -u zones/t2'
rec recv-empty sh -c 'zfs recv -u zones/t4 </dev/null'
rec get-snapshot-guids-d1 zfs get -Hp -r -d 1 -o name,property,value guid,createtxg zones/vm
zfs hold zmigrate-m1 zones/vm@zmigrate-m1-2
rec destroy-held zfs destroy zones/vm@zmigrate-m1-2
rec hold-again zfs hold zmigrate-m1 zones/vm@zmigrate-m1-2
rec release-unknown zfs release zmigrate-other zones/vm@zmigrate-m1-2
rec destroy-snap-missing zfs destroy zones/vm@nope
rec destroy-ds-missing zfs destroy -r zones/nx
rec holds zfs holds -H zones/vm@zmigrate-m1-2
zfs release zmigrate-m1 zones/vm@zmigrate-m1-2
zfs recv -A zones/t2 2>/dev/null
zfs destroy -r zones/vm; zfs destroy -r zones/t1; zfs destroy -r zones/t2 2>/dev/null
EOS
# Split into NAME.out / NAME.err like the hand-written set.
python3 - "$out" <<'PY'
import os, re, sys
out = sys.argv[1]
text = open(os.path.join(out, "all.txt"), errors="replace").read()
for block in re.split(r"^=== ", text, flags=re.M)[1:]:
    head, _, body = block.partition("\n")
    name, rc = head.split(" rc=")
    so, _, se = body.partition("--- stderr\n")
    open(os.path.join(out, name + ".out"), "w").write(so)
    open(os.path.join(out, name + ".err"), "w").write(se)
    open(os.path.join(out, "INDEX.tsv"), "a").write("%s\t%s\n" % (name, rc.strip()))
PY
echo "$out"
