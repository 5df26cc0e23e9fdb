#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Lab test: the CN-to-CN data path never changes an authorized_keys line it did not write and
# never locks root out.
#  1. cn2's /root/.ssh/authorized_keys ends WITHOUT a newline, the operator's key on its last
#     line (the lab defect: the ephemeral line was glued to it, and the marker-based cleanup then
#     removed the operator's line: root locked out). `migrate -n cn2 web01` succeeds, the file is
#     byte-identical afterwards (sha256) and the operator still logs in.
#  2. Cleanup has to remove the key line but cannot rewrite the file (a `cp` on cn2's PATH that
#     fails for authorized_keys, as on a full disk): `migrate -n cn2 min01` still succeeds, the
#     file is intact (the original bytes plus only the ephemeral line), zmigrate warns, and the
#     ledger row stays live. Once cp works again, `zmigrate cleanup` (after a --dry-run that
#     changes nothing) removes exactly that line: the file is byte-identical to the original.
#  3. A stale receiver (a `/bin/sh <path dir>/recv` forced command that hangs, as after a dropped
#     link) is ended by the next command of its migration.
# Exit 0 pass, 1 fail, 125 skip (not root, no /dev/fuse, no netns).
set -euo pipefail
# shellcheck source=lib_migrate.sh
source "$(dirname "$(readlink -f "$0")")/lib_migrate.sh"

mt_setup zmt-keys 10.96.11

AK=/root/.ssh/authorized_keys
ak_sum() { "$LAB" exec "$1" sha256sum "$AK" | cut -d' ' -f1; }
ak_lines() { "$LAB" exec "$1" sh -c "grep -c zmigrate-ephemeral $AK || true"; }
# state_db: the state database of zmigrate (the sqlite file of $LAB_DIR/state with an artefacts
# table).
state_db() {
    python3 - "$LAB_DIR/state" <<'EOF'
import os, sqlite3, sys
for root, _, files in os.walk(sys.argv[1]):
    for f in sorted(files):
        p = os.path.join(root, f)
        if p.endswith(("-wal", "-shm", "-journal")):
            continue
        try:
            sqlite3.connect("file:%s?mode=ro" % p, uri=True).execute("SELECT 1 FROM artefacts LIMIT 1")
        except sqlite3.Error:
            continue
        print(p)
        sys.exit(0)
sys.exit("no state database under " + sys.argv[1])
EOF
}
live_key_rows() {
    # live authorized_key rows of migration $1 on any node
    python3 - "$(state_db)" "$1" <<'EOF'
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
print(db.execute("SELECT count(*) FROM artefacts WHERE migration_id = ? AND kind = 'authorized_key' AND removed = ''", (sys.argv[2],)).fetchone()[0])
EOF
}

# --- 1. no final newline ----------------------------------------------------------------------
op_key=$(cat "$LAB_DIR/operator_key.pub") # $(...) drops the final newline
"$LAB" exec cn2 sh -c 'printf "%s" "$1" > "$2"' sh "# operator keys of cn2
$op_key" "$AK" || mt_die "writing cn2's authorized_keys"
"$LAB" exec cn2 sh -c "[ -n \"\$(tail -c 1 $AK)\" ]" || mt_die "cn2's authorized_keys still ends with a newline"
"$LAB" exec cn2 sh -c "tail -n 1 $AK" | grep -q -F -x -e "$op_key" || mt_die "the operator key is not the last line"
sum0=$(ak_sum cn2)
note "cn2: authorized_keys without a final newline, the operator key last (sha256 $sum0)"

zm --json migrate -n cn2 "$WEB"
if ((ZM_RC == 0)); then ok "migrate -n cn2 web01 exited 0 (${ZM_SECS} s)"; else
    fail "migrate -n cn2 web01 exited $ZM_RC"
    zm_show
fi
check "web01 runs on cn2 after the migration" \
    test "$(vmapi "$WEB" 'd["server_uuid"] + " " + d["state"]')" = "$CN2 running"
sum1=$(ak_sum cn2)
check "cn2's authorized_keys is byte-identical to before (sha256 $sum1)" test "$sum1" = "$sum0"
check "the operator still logs in to cn2 with its key" "$LAB" ssh cn2 true
check "cn1's authorized_keys holds no ephemeral line" test "$(ak_lines cn1)" = 0
"$LAB" exec cn2 sh -c 'ls -A /var/run/zmigrate 2>/dev/null' >"$MT_WORK/rundir" || true
check "cn2: no data-path dir or lock left in /var/run/zmigrate ($(tr '\n' ' ' <"$MT_WORK/rundir"))" \
    test ! -s "$MT_WORK/rundir"

# --- 2. the rewrite fails: the file stays intact, the row stays live ----------------------------
shim=$LAB_DIR/shim-bin
mkdir -p "$shim"
cat >"$shim/cp" <<'EOF'
#!/bin/sh
# zmigrate lab: cp fails for authorized_keys (as on a full disk), works for everything else.
case "$*" in
*authorized_keys*) echo "cp: error writing: No space left on device" >&2; exit 1 ;;
esac
exec /bin/cp "$@"
EOF
chmod 755 "$shim/cp"
# Only in cn2's mount namespace (the node's / is rprivate): /usr/local/bin precedes /bin there.
"$LAB" exec cn2 mount --bind "$shim" /usr/local/bin || mt_die "bind-mounting the cp shim on cn2"
"$LAB" ssh cn2 'command -v cp' | grep -q '^/usr/local/bin/cp$' || {
    "$LAB" exec cn2 umount /usr/local/bin || true
    mt_die "the cp shim is not first on cn2's PATH"
}

zm --json migrate -n cn2 "$MIN"
"$LAB" exec cn2 umount /usr/local/bin || fail "removing the cp shim from cn2"
ZM_OUT_MIN=$MT_WORK/zm.out.min01
cp "$ZM_OUT" "$ZM_OUT_MIN"
if ((ZM_RC == 0)); then ok "migrate -n cn2 min01 exited 0 although the key line could not be removed (${ZM_SECS} s)"; else
    fail "migrate -n cn2 min01 exited $ZM_RC"
    zm_show
fi
MIG2=$(mig_id "$MIN") || mt_die "no migration id of min01"
after=$MT_WORK/ak.after
"$LAB" exec cn2 cat "$AK" >"$after"
python3 - "$after" "$op_key" "$MIG2" <<'EOF' && ok "cn2's authorized_keys is intact: the original bytes, a newline, one ephemeral line of $MIG2" || fail "cn2's authorized_keys changed beyond the ephemeral line: $(od -c "$after" | tail -5)"
import sys
data = open(sys.argv[1], "rb").read()
orig = b"# operator keys of cn2\n" + sys.argv[2].encode()
assert data.startswith(orig + b"\n"), "original bytes not kept"
rest = data[len(orig) + 1:]
assert rest.endswith(b"\n") and rest.count(b"\n") == 1, "more than one added line"
assert rest.startswith(b"restrict,from=") and rest.rstrip(b"\n").split(b" ")[-1].startswith(
    b"zmigrate-ephemeral-" + sys.argv[3].encode() + b"-"), rest
EOF
check "the operator still logs in to cn2" "$LAB" ssh cn2 true
check "the ledger keeps the authorized_key row of $MIG2 live" test "$(live_key_rows "$MIG2")" = 1
if grep -q 'ephemeral key line was NOT removed' "$LAB_DIR/log/$MIG2.log"; then
    ok "zmigrate logged a warning that the key line was not removed"
else
    fail "no warning about the key line that was not removed in $LAB_DIR/log/$MIG2.log"
fi
check "zmigrate told the operator (a --json note naming cn2 and the file)" \
    bash -c "grep -F 'cn2: the ephemeral key line was NOT removed from /root/.ssh/authorized_keys' '$ZM_OUT_MIN' | grep -q -F '\"type\":\"note\"'"

# once cp works again, `zmigrate cleanup` removes exactly that line (and says so)
zm cleanup --dry-run
if ((ZM_RC == 0)) && grep -q "^would remove *authorized_key" "$ZM_OUT"; then ok "cleanup --dry-run lists the key line"; else
    fail "cleanup --dry-run: rc $ZM_RC"
    zm_show
fi
check "cleanup --dry-run changed nothing" test "$(live_key_rows "$MIG2")" = 1
zm_ok "cleanup (cp works again)" cleanup || true
grep -q "^removed *authorized_key" "$ZM_OUT" && ok "cleanup reports the key line removed" ||
    fail "cleanup output: $(cat "$ZM_OUT")"
check "the ledger row of $MIG2 is removed" test "$(live_key_rows "$MIG2")" = 0
zm_ok "finalize --yes min01" finalize --yes "$MIN" || true
sum2=$(ak_sum cn2)
check "cn2's authorized_keys is byte-identical to the original again (sha256 $sum2)" test "$sum2" = "$sum0"
check "the operator still logs in to cn2" "$LAB" ssh cn2 true

# --- 3. a stale receiver is ended by the next command of its migration --------------------------
# web01's migration (switched, not finalized) gets a hanging forced command on cn2 and a live
# data_path_dir row, as a dropped link and a crashed zmigrate leave them.
MIG1=$(mig_id "$WEB") || mt_die "no migration id of web01"
pdir=/var/run/zmigrate/$MIG1-5ta1e000
"$LAB" exec cn2 sh -c "mkdir -p $pdir && printf '%s\n' 'sleep 600' 'rc=\$?' 'exit \$rc' >$pdir/recv"
"$LAB" exec cn2 sh -c "nohup /bin/sh $pdir/recv </dev/null >/dev/null 2>&1 &"
deadline=$((SECONDS + 10))
until "$LAB" exec cn2 pgrep -f "^/bin/sh $pdir/recv" >/dev/null; do
    ((SECONDS < deadline)) || break
    sleep 0.1
done
check "a stale receiver runs on cn2" bash -c "'$LAB' exec cn2 pgrep -f '^/bin/sh $pdir/recv' >/dev/null"
python3 - "$(state_db)" "$MIG1" "$pdir" <<'EOF' || fail "recording the stale dir row"
import sqlite3, sys, json
db = sqlite3.connect(sys.argv[1])
# the name the ledger gives cn2: the host of the key row of web01's migration (its target)
host = db.execute("SELECT host FROM artefacts WHERE migration_id = ? AND kind = 'authorized_key'",
                  (sys.argv[2],)).fetchone()[0]
db.execute("INSERT INTO artefacts (migration_id, kind, host, name, details, created, removed) VALUES (?, 'data_path_dir', ?, ?, ?, '2026-01-01T00:00:00.000Z', '')",
           (sys.argv[2], host, sys.argv[3], json.dumps({"path_id": sys.argv[3].rsplit("/", 1)[1]})))
db.commit()
EOF
zm_ok "finalize --yes web01" finalize --yes "$WEB" || true
deadline=$((SECONDS + 10))
while "$LAB" exec cn2 pgrep -f "^/bin/sh $pdir/recv" >/dev/null; do
    ((SECONDS < deadline)) || break
    sleep 0.1
done
check "the stale receiver on cn2 is gone" bash -c "! '$LAB' exec cn2 pgrep -f '^/bin/sh $pdir/recv' >/dev/null"
check "its dir is gone" bash -c "! '$LAB' exec cn2 test -e '$pdir'"
check "cn2's authorized_keys is still byte-identical to the original" test "$(ak_sum cn2)" = "$sum0"

mt_finish
