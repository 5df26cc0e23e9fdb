#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Lab test (issue 3, "Done when" 4): instance kinds.
#  - lx01 (lx, stopped, image debian-12 only on cn1) to cn2: begin imports the image on cn2
#    (absent before; after: imgadm get works and zones/<image>@final has the source's GUID), then
#    `migrate` finishes it; the zone root arrives as a clone of the image; the instance stays
#    stopped (never started anywhere)
#  - kvm01 (kvm, running, sibling disks zones/<uuid>-disk0/-disk1) from cn2 to cn3 (older
#    platform: refused without --allow-older-platform): every dataset arrives (zlab-sum each),
#    disk sizes (refquota/refreservation) kept, writer continues
#  - bhyve01 (bhyve, running, child disks zones/<uuid>/disk0/1, quota == reservation) from cn2 to
#    cn1: every dataset arrives, quota == reservation again on the target after the switch
# Each is finalized; nothing of the migration is left.
# Exit 0 pass, 1 fail, 125 skip (not root, no /dev/fuse, no netns).
set -euo pipefail
# shellcheck source=lib_migrate.sh
source "$(dirname "$(readlink -f "$0")")/lib_migrate.sh"

mt_setup zmt-kinds 10.95.3

# --- lx01: stopped, image missing on the target ---------------------------------------------
probe cn1 "$LX" || mt_die "probe cn1"
probe cn2 "$LX" || mt_die "probe cn2"
[[ $(pj cn1 'd["vm"]["state"]') == stopped ]] || mt_die "lx01 is not stopped on cn1"
check "before: cn2 does not have image debian-12 ($IMG_DEB)" \
    test "$(pj cn2 "'$IMG_DEB' in d['images']")" = false
img_guid=$(on cn1 "zfs get -Hp -o value guid zones/$IMG_DEB@final")
mt_watch_start "$LX" 0
zm --json begin -n cn2 "$LX"
if ((ZM_RC == 0)); then ok "begin -n cn2 lx01"; else fail "begin -n cn2 lx01: rc $ZM_RC"; zm_show; fi
check "begin's plan names the image import" test "$(zm_json '"'"$IMG_DEB"'" in d["plan"].get("import_images", [])')" = true
if on cn2 "imgadm get $IMG_DEB" >/dev/null 2>&1; then ok "after begin: imgadm get $IMG_DEB works on cn2"; else
    fail "after begin: imgadm get $IMG_DEB fails on cn2"
fi
check "after begin: zones/$IMG_DEB@final on cn2 has the source's GUID ($img_guid)" \
    test "$(on cn2 "zfs get -Hp -o value guid zones/$IMG_DEB@final" 2>/dev/null || true)" = "$img_guid"
zm --json migrate -n cn2 "$LX"
if ((ZM_RC == 0)); then
    ok "migrate (resuming the begin) lx01: syncs $(zm_json '[s["bytes"] for s in d["syncs"]]') bytes, switch $(zm_json 'd["switch"]["downtime_ms"]') ms"
    check "lx01: the switch knows the instance was stopped" test "$(zm_json 'd["switch"]["was_running"]')" = false
else fail "migrate lx01 after begin: rc $ZM_RC"; zm_show; fi
both=$(mt_watch_stop)
check "lx01 was never started on any node during the migration ($both moments)" test "$both" = 0
verify_switched lx01 "$LX" cn1 cn2 stopped
check "lx01: target zone root is a clone of zones/$IMG_DEB@final" \
    test "$(pj cn2 "d['datasets']['zones/$LX'].get('origin')")" = "zones/$IMG_DEB@final"
check "lx01: autoboot stays false on the target" test "$(pj cn2 'd["vm"]["autoboot"]')" = false
finalize_clean lx01 "$LX" cn1 cn2

# --- kvm01: sibling disks, cn2 -> cn3 -------------------------------------------------------
probe cn2 "$KVM" || mt_die "probe kvm01"
kvm_ds=$(pj cn2 'sorted(n for n in d["datasets"] if not n.startswith("zones/cores/"))')
kvm_props=$(pj cn2 '{n: (p.get("refquota"), p.get("refreservation"), p.get("quota")) for n, p in d["datasets"].items() if "-disk" in n}')
check "kvm01 has sibling disks on cn2: $kvm_ds" \
    test "$kvm_ds" = "[\"zones/$KVM\", \"zones/$KVM-disk0\", \"zones/$KVM-disk1\"]"
zm migrate -n cn3 "$KVM"
check "kvm01 -n cn3 (older platform) is refused without --allow-older-platform (exit $ZM_RC)" err_line_ok 4
mt_watch_start "$KVM"
zm --json migrate -n cn3 --allow-older-platform "$KVM"
both=$(mt_watch_stop)
if ((ZM_RC == 0)); then
    ok "migrate -n cn3 kvm01 (${ZM_SECS} s): syncs $(zm_json '[s["bytes"] for s in d["syncs"]]') bytes, downtime $(zm_json 'd["switch"]["downtime_ms"]') ms"
else fail "migrate -n cn3 kvm01: rc $ZM_RC"; zm_show; fi
check "kvm01: never two copies running ($both)" test "$both" = 0
verify_switched kvm01 "$KVM" cn2 cn3
check "kvm01: every dataset on cn3 ($kvm_ds)" \
    test "$(pj cn3 'sorted(n for n in d["datasets"] if not n.startswith("zones/cores/"))')" = "$kvm_ds"
check "kvm01: disk sizes (refquota, refreservation, quota) kept: $kvm_props" \
    test "$(pj cn3 '{n: (p.get("refquota"), p.get("refreservation"), p.get("quota")) for n, p in d["datasets"].items() if "-disk" in n}')" = "$kvm_props"
check "kvm01: vmadm on cn3 sees both disks (none missing)" \
    test "$(pj cn3 '[bool(x.get("missing")) for x in (d["vm"] or {}).get("disks", [])]')" = '[false, false]'
finalize_clean kvm01 "$KVM" cn2 cn3

# --- bhyve01: child disks and quota == reservation, cn2 -> cn1 ------------------------------
probe cn2 "$BHYVE" || mt_die "probe bhyve01"
bh_ds=$(pj cn2 'sorted(n for n in d["datasets"] if not n.startswith("zones/cores/"))')
quota=$(pj cn2 "d['datasets']['zones/$BHYVE']['quota']")
resv=$(pj cn2 "d['datasets']['zones/$BHYVE']['reservation']")
bh_props=$(pj cn2 '{n: (p.get("refquota"), p.get("refreservation")) for n, p in d["datasets"].items() if "/disk" in n}')
check "bhyve01 on cn2: child disks ($bh_ds) and quota == reservation ($quota)" \
    test "$bh_ds $quota" = "[\"zones/$BHYVE\", \"zones/$BHYVE/disk0\", \"zones/$BHYVE/disk1\"] $resv"
zm_ok "begin -n cn1 bhyve01" begin -n cn1 "$BHYVE" || true
check "bhyve01: begin lifted the source quota for the sync (quota now $(on cn2 "zfs get -Hp -o value quota zones/$BHYVE"))" \
    test "$(on cn2 "zfs get -Hp -o value quota zones/$BHYVE")" != "$quota"
mt_watch_start "$BHYVE"
zm --json migrate -n cn1 "$BHYVE"
both=$(mt_watch_stop)
if ((ZM_RC == 0)); then
    ok "migrate bhyve01 after begin (${ZM_SECS} s): syncs $(zm_json '[s["bytes"] for s in d["syncs"]]') bytes, downtime $(zm_json 'd["switch"]["downtime_ms"]') ms"
else fail "migrate bhyve01: rc $ZM_RC"; zm_show; fi
check "bhyve01: never two copies running ($both)" test "$both" = 0
verify_switched bhyve01 "$BHYVE" cn2 cn1
check "bhyve01: every dataset on cn1 ($bh_ds)" \
    test "$(pj cn1 'sorted(n for n in d["datasets"] if not n.startswith("zones/cores/"))')" = "$bh_ds"
check "bhyve01: quota restored on the target: quota == reservation == $quota" \
    test "$(pj cn1 "d['datasets']['zones/$BHYVE']['quota'], d['datasets']['zones/$BHYVE']['reservation']")" = "[\"$quota\", \"$resv\"]"
check "bhyve01: disk sizes (refquota, refreservation) kept: $bh_props" \
    test "$(pj cn1 '{n: (p.get("refquota"), p.get("refreservation")) for n, p in d["datasets"].items() if "/disk" in n}')" = "$bh_props"
finalize_clean bhyve01 "$BHYVE" cn2 cn1

for n in cn1 cn2 cn3; do
    probe "$n" "$WEB" || true
    if left=$(no_artefacts_in_probe "$n"); then ok "$n: no migration snapshot, key or private dir at the end"; else
        fail "$n: left at the end: $left"
    fi
done
zm --json list
check "no active migration left" test "$(zm_json 'len(d)')" = 0

mt_finish
