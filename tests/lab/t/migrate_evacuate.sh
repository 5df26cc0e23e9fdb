#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# evacuate: empty cn2 (kvm01 with sibling disks, bhyve01 with child disks and quota, both
# running) onto cn1. A dry run changes nothing; a bad target is refused; the real run moves both
# instances, finalizes them, and leaves cn2 with no instance and no migration artefact.
set -uo pipefail
source "$(dirname "$0")/lib_migrate.sh"

mt_setup zmt-evac 10.95.7

# --- refusals change nothing ------------------------------------------------------------------
zm evacuate -n cn2 cn2
check "evacuate -n cn2 cn2 is refused (exit 4, one error line)" err_line_ok 4
zm evacuate cn9
check "evacuate of an unknown node exits 3" err_line_ok 3

# --- dry run ----------------------------------------------------------------------------------
zm_ok "evacuate --dry-run -n cn1 cn2" --json evacuate --dry-run -n cn1 cn2
r=$(zm_json '" ".join(sorted("%s:%s:%s" % (i["alias"], i["outcome"], i["target"]) for i in d["instances"]))')
check "dry run plans both instances onto cn1 ($r)" test "$r" = "bhyve01:planned:cn1 kvm01:planned:cn1"
zm --json list --all
check "the dry run created no migration" test "$(zm_json 'len(d) if isinstance(d, list) else len(d.get("migrations", []))')" = 0
check "kvm01 and bhyve01 still run on cn2" \
    test "$(vm_state cn2 "$KVM") $(vm_state cn2 "$BHYVE")" = "running running"

# --- the evacuation ---------------------------------------------------------------------------
zm_ok "evacuate --finalize -n cn1 cn2" evacuate --finalize -n cn1 cn2
sed 's/^/#   /' "$ZM_OUT" | tail -6
check "the summary shows both finalized with a downtime" \
    bash -c "grep -q 'kvm01 .* finalized *cn1' '$ZM_OUT' && grep -q 'bhyve01 .* finalized *cn1' '$ZM_OUT' && tail -1 '$ZM_OUT' | grep -q '^OK - cn2 evacuated'"
check "kvm01 and bhyve01 run on cn1" \
    test "$(vm_state cn1 "$KVM") $(vm_state cn1 "$BHYVE")" = "running running"
check "VMAPI shows both on cn1" \
    test "$(vmapi "$KVM" 'd["server_uuid"]') $(vmapi "$BHYVE" 'd["server_uuid"]')" = "$CN1 $CN1"
check "cn2 has no instance left" test -z "$(on cn2 'vmadm list -H -o uuid')"
left=$(on cn2 "zfs list -H -o name -t all 2>/dev/null | grep -E '$KVM|$BHYVE|zmigrate' || true")
check "cn2 has no dataset or snapshot of them left${left:+: $left}" test -z "$left"
check "no key or private dir left on cn1 or cn2" \
    bash -c "[ -z \"\$('$LAB' ssh cn1 'ls /var/run/zmigrate 2>/dev/null; grep -c zmigrate-ephemeral /root/.ssh/authorized_keys 2>/dev/null | grep -v ^0')\" ] && [ -z \"\$('$LAB' ssh cn2 'ls /var/run/zmigrate 2>/dev/null; grep -c zmigrate-ephemeral /root/.ssh/authorized_keys 2>/dev/null | grep -v ^0')\" ]"

# --- nothing left to do -----------------------------------------------------------------------
zm_ok "evacuate cn2 again: nothing to move" evacuate cn2
check "it says 0 instances" grep -q '^cn2 (.*): 0 instance(s)' "$ZM_OUT"

mt_finish
