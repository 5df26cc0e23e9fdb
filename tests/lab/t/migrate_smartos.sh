#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Lab test: the main migrations under LAB_PROFILE=smartos (tests/lab/CONTRACT.md, "Profile
# smartos"): nodes without pv and mbuffer, ksh93 as /bin/sh, SmartOS's sshd_config (no client
# keep-alives, host keys in /var/ssh, OpenSSH's session limits).
#  - the profile is in force on every node (checked, not assumed), and zmigrate's capability
#    probe reports pv and mbuffer absent (its debug log), so no stream uses them
#  - web01 (running joyent zone, writer on) `migrate -n cn2`: data proven as migrate_running.sh
#    does (zlab-sum of every dataset, the target's writer file begins with the source's and is
#    intact), never two copies running; then `rollback` brings it back to cn1
#  - kvm01 (kvm, sibling disks) cn2 -> cn3 and lx01 (lx, stopped, image only on cn1) cn1 -> cn2,
#    as migrate_kinds.sh does, each finalized
#  - min01 begin + sync + abort: nothing left on cn2, the source untouched
# A zmigrate defect the profile reveals is a FAIL with its diagnosis ("DEFECT" lines). Where the
# defect has an operator workaround (the host key, below), the test applies it after recording
# the FAIL, so the rest of the profile is still exercised; once zmigrate is fixed the workaround
# is never applied.
# Exit 0 pass, 1 fail, 125 skip (not root, no /dev/fuse, no netns, no ksh93 binary).
set -euo pipefail
# shellcheck source=lib_migrate.sh
source "$(dirname "$(readlink -f "$0")")/lib_migrate.sh"

if ((EUID == 0)) && [[ ! -x /usr/bin/ksh93 ]]; then
    echo "SKIP: no /usr/bin/ksh93 (Debian package ksh; scripts/install-deps installs it)"
    exit 125
fi
export LAB_PROFILE=smartos
mt_setup zmt-sos 10.96.14

# --- the profile is in force ----------------------------------------------------------------
for n in cn1 cn2 cn3; do
    check "$n: /bin/sh is ksh93 ($(on "$n" "/bin/sh -c 'echo \"\${.sh.version}\"'" 2>&1 || true))" \
        test "$(on "$n" "/bin/sh -c 'case \"\${.sh.version}\" in *93*) echo ksh93 ;; *) echo other ;; esac'" 2>/dev/null || true)" = ksh93
    check "$n: no pv and no mbuffer (command -v fails in /bin/sh and in root's login shell)" \
        on "$n" "! command -v pv && ! command -v mbuffer && /bin/sh -c '! command -v pv && ! command -v mbuffer'"
    check "$n: sshd -T: clientaliveinterval 0" \
        test "$(on "$n" "/usr/sbin/sshd -T -f /etc/ssh/sshd_config | grep -i '^clientaliveinterval '" 2>/dev/null || true)" = "clientaliveinterval 0"
    hk=$(on "$n" "/usr/sbin/sshd -T -f /etc/ssh/sshd_config | awk 'tolower(\$1) == \"hostkey\" { print \$2 }' | tr '\n' ' '" 2>/dev/null || true)
    check "$n: sshd's host keys are /var/ssh/ssh_host_*_key ($hk)" \
        test "$hk" = "/var/ssh/ssh_host_rsa_key /var/ssh/ssh_host_ecdsa_key /var/ssh/ssh_host_ed25519_key "
    check "$n: the host keys are in /var/ssh, none in /etc/ssh" \
        on "$n" "test -s /var/ssh/ssh_host_ed25519_key -a -s /var/ssh/ssh_host_ed25519_key.pub && ! ls /etc/ssh/ssh_host_* >/dev/null 2>&1"
done
check "the key the operator pins (known_hosts) is cn2's /var/ssh/ssh_host_ed25519_key.pub" \
    test "$(awk '$1 == "cn2" { print $2, $3 }' "$LAB_DIR/known_hosts")" = "$(on cn2 "awk '{ print \$1, \$2 }' /var/ssh/ssh_host_ed25519_key.pub")"

# mig_logs_say_no_tools: every capability probe in zmigrate's logs reported pv and mbuffer
# absent, and no command used them. Prints what it found.
mig_logs_say_no_tools() {
    python3 - "$LAB_DIR/log" <<'EOF'
import glob, json, sys
probes, used = [], []
for f in glob.glob(sys.argv[1] + "/*.log"):
    for line in open(f, errors="replace"):
        try:
            j = json.loads(line)
        except ValueError:
            continue
        if j.get("msg") == "zfs capabilities":
            probes.append((j.get("host"), j["caps"].get("has_pv"), j["caps"].get("has_mbuffer")))
        a = j.get("argv")
        if isinstance(a, str) and ("| pv " in a or "mbuffer -" in a):
            used.append(a[:120])
bad = [p for p in probes if p[1] is not False or p[2] is not False]
print("%d probes, %d report a tool, %d commands used one %s" % (len(probes), len(bad), len(used), (bad + used)[:2]))
sys.exit(0 if probes and not bad and not used else 1)
EOF
}

# host_key_defect: true when the last zmigrate command failed reading the target's host key
# from /etc/ssh (where SmartOS has none).
host_key_defect() { grep -q 'ssh_host_ed25519_key' "$ZM_ERR" "$ZM_OUT" 2>/dev/null; }
WORKAROUND=0
# apply_host_key_workaround: what an operator would do on SmartOS today: a symlink
# /etc/ssh/ssh_host_ed25519_key.pub -> /var/ssh/ssh_host_ed25519_key.pub on every node.
apply_host_key_workaround() {
    ((WORKAROUND)) && return 0
    WORKAROUND=1
    note "WORKAROUND (for the rest of this test only): /etc/ssh/ssh_host_ed25519_key.pub -> /var/ssh/ssh_host_ed25519_key.pub on every node"
    local n
    for n in cn1 cn2 cn3; do
        on "$n" "ln -sf /var/ssh/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ed25519_key.pub" || fail "$n: workaround symlink"
    done
}

# --- web01: running joyent zone, cn1 -> cn2, writer on --------------------------------------
probe cn1 "$WEB" writer || mt_die "probe cn1"
[[ $(pj cn1 'd["vm"]["state"]') == running && $(pj cn1 'd["running"]') == true ]] ||
    mt_die "web01 does not run on cn1 before the test"
nics_before=$(nics_sig "$WEB")
ok "web01 runs on cn1 with its writer (seq $(pj cn1 'd["writer"]["last"]'))"
mt_watch_start "$WEB"
zm --json migrate -n cn2 "$WEB"
if ((ZM_RC != 0)) && host_key_defect; then
    fail "DEFECT: migrate -n cn2 web01 exited $ZM_RC: zmigrate reads the target's host key from /etc/ssh/ssh_host_ed25519_key.pub (src/migration/node_ops.cpp NodeOps::host_key), which SmartOS does not have: its sshd_config's HostKey lines name /var/ssh/ssh_host_*_key"
    zm_show
    apply_host_key_workaround
    zm --json migrate -n cn2 "$WEB"
fi
both=$(mt_watch_stop)
if ((ZM_RC == 0)); then ok "migrate -n cn2 web01 exited 0 (${ZM_SECS} s)"; else
    fail "migrate -n cn2 web01 exited $ZM_RC"
    zm_show
    mt_die "web01 migrate failed under the smartos profile"
fi
note "$(zm_json '"syncs %s bytes; downtime %d ms" % ([s["bytes"] for s in d["syncs"]], d["switch"]["downtime_ms"])')"
check "never two copies running at once ($both overlapping moments)" test "$both" = 0
verify_switched web01 "$WEB" cn1 cn2
src_last=$(pj cn1 'd["writer"]["last"]')
if on cn2 "zlab-verify --min-seq $src_last $WEB" >/dev/null; then
    ok "zlab-verify on cn2 passes with --min-seq $src_last (the writer went on from the source's last record)"
else
    fail "zlab-verify --min-seq $src_last on cn2: $(on cn2 "zlab-verify --min-seq $src_last $WEB" 2>&1 || true)"
fi
check "web01: the final snapshot has the same GUID on both nodes" \
    test "$(pj cn1 'sorted((k.split("@")[0], v) for k, v in d["snapshots"].items() if "@zmigrate-" in k)')" = \
    "$(pj cn2 'sorted((k.split("@")[0], v) for k, v in d["snapshots"].items() if "@zmigrate-" in k)')"
check "web01: NICs unchanged in VMAPI" test "$(nics_sig "$WEB")" = "$nics_before"
if out=$(mig_logs_say_no_tools); then ok "zmigrate's probe found no pv and no mbuffer, and no stream used them: $out"; else
    fail "zmigrate saw or used pv/mbuffer on a smartos node: $out"
fi

# --- web01: rollback to cn1 -----------------------------------------------------------------
mt_watch_start "$WEB"
zm --json rollback "$WEB"
both=$(mt_watch_stop)
if ((ZM_RC == 0)); then ok "rollback web01 (${ZM_SECS} s)"; else fail "rollback web01: rc $ZM_RC"; zm_show; fi
check "rollback: never two copies running ($both)" test "$both" = 0
probe cn1 "$WEB" writer || fail "probe cn1 after rollback"
probe cn2 "$WEB" || fail "probe cn2 after rollback"
check "rollback: cn1 runs web01 again, visible, autoboot on, writer intact" \
    test "$(pj cn1 'd["vm"]["state"], d["running"], bool(d["vm"].get("do_not_inventory")), d["vm"]["autoboot"], d["writer"]["verify_rc"]')" = '["running", true, false, true, 0]'
check "rollback: cn2 holds no zone and no dataset of web01" test "$(pj cn2 'd["vm"], sorted(d["datasets"])')" = '[null, []]'
check "rollback: VMAPI shows cn1, running" test "$(vmapi "$WEB" 'd["server_uuid"] + " " + d["state"]')" = "$CN1 running"
for n in cn1 cn2; do
    if left=$(no_artefacts_in_probe "$n"); then ok "rollback: $n: no migration snapshot, key or private dir"; else
        fail "rollback: $n: left: $left"
    fi
done

# --- kvm01: sibling disks, cn2 -> cn3 -------------------------------------------------------
probe cn2 "$KVM" || mt_die "probe kvm01"
kvm_ds=$(pj cn2 'sorted(n for n in d["datasets"] if not n.startswith("zones/cores/"))')
kvm_props=$(pj cn2 '{n: (p.get("refquota"), p.get("refreservation"), p.get("quota")) for n, p in d["datasets"].items() if "-disk" in n}')
mt_watch_start "$KVM"
zm --json migrate -n cn3 --allow-older-platform "$KVM"
if ((ZM_RC != 0)) && host_key_defect; then
    fail "DEFECT: migrate kvm01: the target's host key is read from /etc/ssh (see web01)"
    apply_host_key_workaround
    zm --json migrate -n cn3 --allow-older-platform "$KVM"
fi
both=$(mt_watch_stop)
if ((ZM_RC == 0)); then ok "migrate -n cn3 kvm01 (${ZM_SECS} s)"; else fail "migrate -n cn3 kvm01: rc $ZM_RC"; zm_show; fi
check "kvm01: never two copies running ($both)" test "$both" = 0
verify_switched kvm01 "$KVM" cn2 cn3
check "kvm01: every dataset on cn3 ($kvm_ds)" \
    test "$(pj cn3 'sorted(n for n in d["datasets"] if not n.startswith("zones/cores/"))')" = "$kvm_ds"
check "kvm01: disk sizes kept: $kvm_props" \
    test "$(pj cn3 '{n: (p.get("refquota"), p.get("refreservation"), p.get("quota")) for n, p in d["datasets"].items() if "-disk" in n}')" = "$kvm_props"
finalize_clean kvm01 "$KVM" cn2 cn3

# --- lx01: stopped, image only on cn1, cn1 -> cn2 -------------------------------------------
probe cn2 "$LX" || mt_die "probe cn2 lx01"
check "before: cn2 does not have image debian-12" test "$(pj cn2 "'$IMG_DEB' in d['images']")" = false
img_guid=$(on cn1 "zfs get -Hp -o value guid zones/$IMG_DEB@final")
mt_watch_start "$LX" 0
zm --json migrate -n cn2 "$LX"
if ((ZM_RC != 0)) && host_key_defect; then
    fail "DEFECT: migrate lx01: the target's host key is read from /etc/ssh (see web01)"
    apply_host_key_workaround
    zm --json migrate -n cn2 "$LX"
fi
both=$(mt_watch_stop)
if ((ZM_RC == 0)); then ok "migrate -n cn2 lx01 (${ZM_SECS} s)"; else fail "migrate -n cn2 lx01: rc $ZM_RC"; zm_show; fi
check "lx01 was never started anywhere ($both)" test "$both" = 0
verify_switched lx01 "$LX" cn1 cn2 stopped
check "lx01: image imported on cn2 with the source's GUID" \
    test "$(on cn2 "zfs get -Hp -o value guid zones/$IMG_DEB@final" 2>/dev/null || true)" = "$img_guid"
check "lx01: target zone root is a clone of zones/$IMG_DEB@final" \
    test "$(pj cn2 "d['datasets']['zones/$LX'].get('origin')")" = "zones/$IMG_DEB@final"
finalize_clean lx01 "$LX" cn1 cn2

# --- min01: begin, sync, abort --------------------------------------------------------------
probe cn1 "$MIN" sum || fail "probe min01"
min_before=$(pj cn1 'd["sums"], d["vm"]["state"], d["vm"].get("indestructible_zoneroot"), sorted(d["snapshots"])')
zm_ok "begin -n cn2 min01" begin -n cn2 "$MIN" || true
zm sync "$MIN"
if ((ZM_RC != 0)) && host_key_defect; then
    fail "DEFECT: sync min01: the target's host key is read from /etc/ssh (see web01)"
    apply_host_key_workaround
    zm sync "$MIN"
fi
if ((ZM_RC == 0)); then ok "sync min01 (${ZM_SECS} s)"; else fail "sync min01: rc $ZM_RC"; zm_show; fi
probe cn2 "$MIN" || true
check "cn2 received min01's datasets" test "$(pj cn2 "'zones/$MIN' in d['datasets']")" = true
zm_ok "abort min01" abort "$MIN" || true
probe cn1 "$MIN" sum || fail "probe cn1 after abort"
probe cn2 "$MIN" || fail "probe cn2 after abort"
check "abort: cn2 holds no zone and no dataset of min01" test "$(pj cn2 'd["vm"], sorted(d["datasets"])')" = '[null, []]'
check "abort: min01 on cn1 untouched (sums, running, indestructible, snapshots)" \
    test "$(pj cn1 'd["sums"], d["vm"]["state"], d["vm"].get("indestructible_zoneroot"), sorted(d["snapshots"])')" = "$min_before"
check "abort: VMAPI shows min01 on cn1, running" test "$(vmapi "$MIN" 'd["server_uuid"] + " " + d["state"]')" = "$CN1 running"

# --- the end --------------------------------------------------------------------------------
for n in cn1 cn2 cn3; do
    probe "$n" "$WEB" || true
    if left=$(no_artefacts_in_probe "$n"); then ok "$n: no migration snapshot, key or private dir at the end"; else
        fail "$n: left at the end: $left"
    fi
done
zm --json list
check "no active migration left" test "$(zm_json 'len(d)')" = 0
if out=$(mig_logs_say_no_tools); then ok "all probes: no pv, no mbuffer; no command used them ($out)"; else
    fail "pv/mbuffer seen or used: $out"
fi
((WORKAROUND)) && note "the host key workaround was applied: zmigrate defect (see the DEFECT lines)"
mt_finish
