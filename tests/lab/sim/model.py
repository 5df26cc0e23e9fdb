# SPDX-License-Identifier: MPL-2.0
"""In-memory inventory shared by the four simulated services (VMAPI, CNAPI, NAPI, IMGAPI).

One State object holds servers, networks, images, VMs, NICs and IP records behind one lock.
Every change is written to <state-dir>/state.json (write to a temporary file, then rename), so a
restarted simulator answers as before. Shapes follow the Triton documentation and the fixtures in
tests/data/fixtures (see README.md beside this file for the field lists and defaults).
"""

import copy
import datetime
import hashlib
import ipaddress
import json
import os
import re
import sys
import threading
import time
import uuid as uuidlib

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
STATE_VERSION = 1

# Field defaults of a VMAPI VM object (tests/data/fixtures/vmapi-vm-minimal.json, vm-agent's
# minimalVmapiVm); every VM answer carries at least these keys.
VM_DEFAULTS = [
    ("uuid", None), ("alias", None), ("autoboot", None), ("brand", None), ("billing_id", None),
    ("cpu_cap", None), ("cpu_shares", None), ("create_timestamp", None),
    ("customer_metadata", {}), ("datasets", []), ("destroyed", None),
    ("firewall_enabled", False), ("internal_metadata", {}), ("last_modified", None),
    ("limit_priv", None), ("max_locked_memory", None), ("max_lwps", None),
    ("max_physical_memory", None), ("max_swap", None), ("nics", []), ("owner_uuid", None),
    ("platform_buildstamp", None), ("quota", None), ("ram", None), ("resolvers", None),
    ("server_uuid", None), ("snapshots", []), ("state", None), ("tags", {}),
    ("zfs_filesystem", None), ("zfs_io_priority", None), ("zone_state", None),
    ("zonepath", None), ("zpool", None), ("image_uuid", None),
]
HVM_BRANDS = ("kvm", "bhyve")
# vmadm-only keys a VMAPI object does not carry.
VM_DROP_KEYS = ("zoneid", "zonedid", "pid", "v", "zonename", "boot_timestamp", "exit_status",
                "exit_timestamp")
# Keys whose change alone does not make a VM "changed" (so repeated identical reports are quiet).
VM_VOLATILE_KEYS = ("last_modified",)

SERVER_PRIVATE = "_lab"


class ApiError(Exception):
    """A restify-style error: HTTP status, rest code, message, optional errors[] and extra keys."""

    def __init__(self, status, code, message, errors=None, extra=None, headers=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self):
        out = {"code": self.code, "message": self.message}
        if self.errors is not None:
            out["errors"] = self.errors
        out.update(self.extra)
        return out


def vmapi_validation(errors, message="Invalid Parameters"):
    return ApiError(409, "ValidationFailed", message, errors=errors)


def napi_invalid(errors, message="Invalid parameters"):
    return ApiError(422, "InvalidParameters", message, errors=errors)


def now_iso(t=None):
    t = time.time() if t is None else t
    d = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (d.microsecond // 1000)


def is_uuid(s):
    return isinstance(s, str) and bool(UUID_RE.match(s))


def norm_mac(mac):
    """'90:B8:D0:57:53:70', '90b8d0575370', '90-b8-...' -> '90:b8:d0:57:53:70'; None if invalid."""
    if not isinstance(mac, str):
        return None
    hexdigits = re.sub(r"[:\-.]", "", mac).lower()
    if not re.fullmatch(r"[0-9a-f]{12}", hexdigits):
        return None
    return ":".join(hexdigits[i:i + 2] for i in range(0, 12, 2))


def parse_bool(v, default=None):
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        if v.lower() == "true":
            return True
        if v.lower() == "false":
            return False
    return default


def _num(v, default=0):
    if isinstance(v, bool):
        return default
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, str):
        try:
            return float(v) if "." in v else int(v)
        except ValueError:
            return default
    return default


def _as_list(v):
    """Seed collections may be lists or objects keyed by uuid."""
    if v is None:
        return []
    if isinstance(v, dict):
        out = []
        for k, item in v.items():
            if isinstance(item, dict):
                item = dict(item)
                item.setdefault("uuid", k)
                out.append(item)
        return out
    if isinstance(v, list):
        return [x for x in v if isinstance(x, dict)]
    return []


def log(msg):
    sys.stderr.write("%s sim: %s\n" % (now_iso(), msg))
    sys.stderr.flush()


def vm_state_from(obj):
    state = obj.get("state")
    if state:
        return state
    zs = obj.get("zone_state")
    if zs in ("running", "ready"):
        return "running"
    if zs in ("installed", "configured", "down", "shutting_down"):
        return "stopped"
    if zs == "destroyed":
        return "destroyed"
    return zs


def vm_usage(vm):
    """(ram MiB, disk MiB, cpu) a live VM takes from its server's capacity."""
    ram = _num(vm.get("max_physical_memory"), 0) or _num(vm.get("ram"), 0)
    quota_mib = _num(vm.get("quota"), 0) * 1024
    disks_mib = sum(_num(d.get("size"), 0) for d in (vm.get("disks") or []) if isinstance(d, dict))
    brand = vm.get("brand")
    if brand == "kvm":
        disk = disks_mib + quota_mib
    elif brand == "bhyve":
        disk = quota_mib if quota_mib else disks_mib
    else:
        disk = quota_mib
    return ram, disk, _num(vm.get("cpu_cap"), 0)


class State:
    """The simulator's inventory; every public method takes the lock itself."""

    def __init__(self, seed_path, state_dir, images_dir=None, sync_timeout=3.0):
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.seed_path = os.path.abspath(seed_path) if seed_path else None
        self.state_dir = os.path.abspath(state_dir)
        self.images_dir = os.path.abspath(images_dir) if images_dir else None
        self.sync_timeout = sync_timeout
        self.d = None
        self.report_seq = {}      # vm uuid -> number of accepted reports (for ?sync=true)
        self.sync_waiters = {}    # vm uuid -> number of GET ?sync=true waiting
        self.file_sums = {}       # path -> (mtime, size, sha1, md5)

    # ------------------------------------------------------------------ load / save

    def state_file(self):
        return os.path.join(self.state_dir, "state.json")

    def load(self, fresh=False):
        """Loads state.json when it exists and was made from the same seed; else the seed."""
        with self.lock:
            seed_sum = self._seed_sum()
            path = self.state_file()
            if not fresh and os.path.exists(path):
                try:
                    with open(path, encoding="utf-8") as f:
                        d = json.load(f)
                    if d.get("version") == STATE_VERSION and d.get("seed_sha256") == seed_sum:
                        d.setdefault("migrations", {})
                        self.d = d
                        log("state restored from %s (%d vms, %d ip-history entries)"
                            % (path, len(d["vms"]), len(d["ip_history"])))
                        return
                    log("state.json was made from another seed: starting from the seed")
                except (OSError, ValueError, KeyError) as e:
                    log("cannot read %s (%s): starting from the seed" % (path, e))
            self._load_seed(cause="seed")

    def reset(self, seed_path=None):
        with self.lock:
            if seed_path:
                self.seed_path = os.path.abspath(seed_path)
            self._load_seed(cause="reset")
            self.report_seq.clear()
            self.cond.notify_all()

    def _seed_sum(self):
        if not self.seed_path:
            return None
        with open(self.seed_path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    def _load_seed(self, cause):
        seed = {}
        if self.seed_path:
            with open(self.seed_path, encoding="utf-8") as f:
                seed = json.load(f)
        if not isinstance(seed, dict):
            raise ValueError("seed %s: top level must be an object" % self.seed_path)
        seed_dir = os.path.dirname(self.seed_path) if self.seed_path else os.getcwd()
        dc = seed.get("datacenter") or seed.get("datacenter_name") or "lab"
        d = {
            "version": STATE_VERSION,
            "seed_path": self.seed_path,
            "seed_sha256": self._seed_sum(),
            "loaded_at": now_iso(),
            "servers": {}, "networks": {}, "images": {}, "vms": {}, "nics": {}, "ips": {},
            "ip_history": [], "migrations": {},
        }
        self.d = d
        for n in _as_list(seed.get("networks")):
            net = self._norm_network(n)
            d["networks"][net["uuid"]] = net
            d["ips"][net["uuid"]] = {}
        for s in _as_list(seed.get("servers")):
            srv = self._norm_server(s, dc)
            d["servers"][srv["uuid"]] = srv
        for i in _as_list(seed.get("images")):
            img = self._norm_image(i, seed_dir)
            d["images"][img["uuid"]] = img
        for rec in _as_list(seed.get("ips")):
            self._seed_ip(rec, cause)
        for n in _as_list(seed.get("networks")):
            for rec in _as_list(n.get("ips")):
                rec = dict(rec)
                rec.setdefault("network_uuid", n.get("uuid"))
                self._seed_ip(rec, cause)
        for m in _as_list(seed.get("migrations")):
            self._put_migration(m)
        for v in _as_list(seed.get("vms")) + _as_list(seed.get("instances")):
            uuid = v.get("uuid") or v.get("zonename")
            if not is_uuid(uuid):
                log("seed: VM without a valid uuid skipped")
                continue
            if v.get("do_not_inventory") in (True, "true"):
                continue
            raw = self._clean_vm(v, uuid)
            raw.setdefault("create_timestamp", now_iso())
            raw.setdefault("last_modified", now_iso())
            raw["state"] = vm_state_from(raw) or "running"
            if raw["state"] == "destroyed":
                raw.setdefault("destroyed", raw["last_modified"])
            d["vms"][uuid] = raw
            if raw["state"] != "destroyed":
                self._sync_nics(uuid, "%s vm %s" % (cause, uuid))
        # Server capacity in the seed is what is left with the seeded VMs placed: remember
        # the capacity without them so later placements move it.
        for srv in d["servers"].values():
            p = srv[SERVER_PRIVATE]
            used_ram = used_disk = used_cpu = 0
            for vm in self._live_vms_on(srv["uuid"]):
                r, dk, c = vm_usage(vm)
                used_ram += r
                used_disk += dk
                used_cpu += c
            for key, used in (("ram", used_ram), ("disk", used_disk), ("cpu", used_cpu)):
                given = p.pop("given_unreserved_" + key)
                if given is not None:
                    p["base_unreserved_" + key] = given + used
        self._save()
        log("%s: loaded %s: %d servers, %d networks, %d images, %d vms"
            % (cause, self.seed_path, len(d["servers"]), len(d["networks"]), len(d["images"]),
               len(d["vms"])))

    def _save(self):
        tmp = self.state_file() + ".tmp"
        data = json.dumps(self.d, indent=1, sort_keys=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(data)
        os.replace(tmp, self.state_file())

    # ------------------------------------------------------------------ seed normalisation

    def _norm_network(self, n):
        uuid = n.get("uuid")
        if not is_uuid(uuid):
            raise ValueError("seed network without a valid uuid: %r" % (n,))
        subnet = n.get("subnet")
        net = None
        if isinstance(subnet, str) and "/" in subnet:
            net = ipaddress.ip_network(subnet, strict=False)
        else:
            start = subnet or n.get("subnet_start") or n.get("subnet_start_ip")
            bits = n.get("subnet_bits")
            mask = n.get("netmask")
            base = start or n.get("gateway") or n.get("provision_start_ip")
            if base and (bits or mask):
                net = ipaddress.ip_network("%s/%s" % (base, bits or mask), strict=False)
        if net is None:
            raise ValueError("seed network %s: give subnet as CIDR (or subnet_start/gateway "
                             "and netmask)" % uuid)
        hosts = list(net.hosts()) if net.num_addresses <= 65536 else None
        out = dict(n)
        out.pop("ips", None)
        out["uuid"] = uuid
        out.setdefault("name", "net-%s" % uuid[:8])
        out.setdefault("vlan_id", 0)
        out["subnet"] = str(net)
        out["netmask"] = str(net.netmask)
        out.setdefault("family", "ipv%d" % net.version)
        out.setdefault("nic_tag", "admin")
        out.setdefault("mtu", 1500)
        out.setdefault("fabric", False)
        out.setdefault("resolvers", [])
        if hosts:
            out.setdefault("gateway", str(hosts[0]))
            out.setdefault("provision_start_ip", str(hosts[1] if len(hosts) > 1 else hosts[0]))
            out.setdefault("provision_end_ip", str(hosts[-1]))
        return out

    def _norm_server(self, s, dc):
        uuid = s.get("uuid") or (s.get("sysinfo") or {}).get("UUID")
        if not is_uuid(uuid):
            raise ValueError("seed server without a valid uuid: %r" % (s,))
        sysinfo = copy.deepcopy(s.get("sysinfo") or {})
        hostname = s.get("hostname") or s.get("name") or sysinfo.get("Hostname") or uuid[:8]
        admin_ip = (s.get("admin_ip") or s.get("ip") or s.get("address") or s.get("ip4addr")
                    or self._sysinfo_admin_ip(sysinfo) or "")
        ram = int(_num(s.get("ram"), 0) or _num(sysinfo.get("MiB of Memory"), 0) or 16384)
        cores = int(_num(s.get("cpu_cores"), 0) or _num(sysinfo.get("CPU Total Cores"), 0) or 4)
        pool_bytes = int(_num(s.get("disk_pool_size_bytes"), 0)
                         or _num(s.get("disk"), 0) * 1048576
                         or _num(sysinfo.get("Zpool Size in GiB"), 0) * 1073741824
                         or 100 * 1073741824)
        platform = s.get("current_platform") or sysinfo.get("Live Image") or "20240101T000000Z"
        rr = _num(s.get("reservation_ratio"), 0.15) if "reservation_ratio" in s else 0.15
        mac = s.get("admin_mac") or "02:08:20:%02x:%02x:%02x" % tuple(bytes.fromhex(uuid[-6:]))
        created = s.get("created") or now_iso()
        sysinfo.setdefault("Live Image", platform)
        sysinfo.setdefault("System Type", "SunOS")
        sysinfo.setdefault("Boot Time", str(int(time.time())))
        sysinfo.setdefault("Datacenter Name", s.get("datacenter") or dc)
        sysinfo.setdefault("SDC Version", "7.0")
        sysinfo.setdefault("Manufacturer", "zmigrate lab")
        sysinfo.setdefault("Product", "lab node")
        sysinfo.setdefault("Serial Number", "LAB-%s" % uuid[-12:])
        sysinfo.setdefault("SKU Number", "")
        sysinfo.setdefault("HW Version", "None")
        sysinfo.setdefault("HW Family", "")
        sysinfo.setdefault("Setup", "true")
        sysinfo.setdefault("VM Capable", True)
        sysinfo.setdefault("CPU Type", "Unknown")
        sysinfo.setdefault("CPU Virtualization", "none")
        sysinfo.setdefault("CPU Physical Cores", cores)
        sysinfo["UUID"] = uuid
        sysinfo.setdefault("Hostname", hostname)
        sysinfo.setdefault("CPU Total Cores", cores)
        sysinfo.setdefault("MiB of Memory", str(ram))
        sysinfo.setdefault("Zpool", "zones")
        sysinfo.setdefault("Zpool Disks", "lab0")
        sysinfo.setdefault("Zpool Profile", "striped")
        sysinfo.setdefault("Zpool Creation", int(time.time()))
        sysinfo.setdefault("Zpool Size in GiB", pool_bytes // 1073741824)
        sysinfo.setdefault("Disks", {"lab0": {"Size in GB": pool_bytes // 1000000000}})
        sysinfo.setdefault("Boot Parameters", {"console": "text", "headnode": "false"})
        sysinfo.setdefault("SDC Agents", [])
        nifs = sysinfo.setdefault("Network Interfaces", {})
        if admin_ip and not self._sysinfo_admin_ip(sysinfo):
            nifs["net0"] = {"MAC Address": mac, "ip4addr": admin_ip, "Link Status": "up",
                            "NIC Names": ["admin"]}
        sysinfo.setdefault("Virtual Network Interfaces", {})
        sysinfo.setdefault("Link Aggregations", {})
        out = {
            "sysinfo": sysinfo,
            "ram": ram,
            "current_platform": platform,
            "headnode": bool(s.get("headnode", False)),
            "boot_platform": s.get("boot_platform") or platform,
            "datacenter": s.get("datacenter") or dc,
            "overprovision_ratio": s.get("overprovision_ratio", 1),
            "reservation_ratio": rr,
            "reservoir": bool(s.get("reservoir", False)),
            "traits": s.get("traits") or {},
            "rack_identifier": s.get("rack_identifier", ""),
            "comments": s.get("comments", ""),
            "uuid": uuid,
            "hostname": hostname,
            "reserved": bool(s.get("reserved", False)),
            "boot_params": s.get("boot_params") or {},
            "kernel_flags": s.get("kernel_flags") or {},
            "default_console": s.get("default_console", "serial"),
            "serial": s.get("serial", "ttyb"),
            "setup": bool(s.get("setup", True)),
            "setting_up": bool(s.get("setting_up", False)),
            "last_boot": s.get("last_boot") or created,
            "created": created,
            "transitional_status": s.get("transitional_status", ""),
            "status": s.get("status", "running"),
            "overprovision_ratios": s.get("overprovision_ratios") or {"ram": 1},
            "agents": s.get("agents") or [],
        }
        # Any other field the seed gives is served as is.
        for k, v in s.items():
            if k not in out and k not in ("admin_ip", "ip", "address", "ip4addr", "admin_mac",
                                          "name", "cpu_cores", "disk", "vms", "unreserved_ram",
                                          "unreserved_disk", "unreserved_cpu"):
                out[k] = v
        out[SERVER_PRIVATE] = {
            "pool_bytes": pool_bytes,
            "base_unreserved_ram": int(ram * (1 - rr)),
            "base_unreserved_disk": pool_bytes // 1048576,
            "base_unreserved_cpu": cores * 100,
            "given_unreserved_ram": s.get("unreserved_ram"),
            "given_unreserved_disk": s.get("unreserved_disk"),
            "given_unreserved_cpu": s.get("unreserved_cpu"),
        }
        return out

    @staticmethod
    def _sysinfo_admin_ip(sysinfo):
        for section in ("Network Interfaces", "Virtual Network Interfaces"):
            for nic in (sysinfo.get(section) or {}).values():
                if isinstance(nic, dict) and "admin" in (nic.get("NIC Names") or []) \
                        and nic.get("ip4addr"):
                    return nic["ip4addr"]
        return None

    def _norm_image(self, i, seed_dir):
        manifest = dict(i.get("manifest") or {})
        for k, v in i.items():
            if k not in ("manifest", "file", "path", "file_path", "stream", "servers", "nodes",
                         "absent_on", "present_on"):
                manifest.setdefault(k, v)
        uuid = manifest.get("uuid")
        if not is_uuid(uuid):
            raise ValueError("seed image without a valid uuid: %r" % (i,))
        manifest.setdefault("v", 2)
        manifest.setdefault("owner", ZERO_UUID)
        manifest.setdefault("name", "image-%s" % uuid[:8])
        manifest.setdefault("version", "1.0.0")
        manifest.setdefault("state", "active")
        manifest.setdefault("disabled", False)
        manifest.setdefault("public", True)
        manifest.setdefault("published_at", now_iso())
        manifest.setdefault("type", "zone-dataset")
        manifest.setdefault("os", "smartos")
        manifest.setdefault("description", "")
        manifest.setdefault("requirements", {})
        file_ = i.get("file") or i.get("path") or i.get("file_path") or i.get("stream")
        if file_:
            path = file_ if os.path.isabs(file_) else os.path.join(seed_dir, file_)
        else:
            path = os.path.join(self.images_dir or os.path.join(seed_dir, "images"),
                                "%s.zfs" % uuid)
        return {"uuid": uuid, "manifest": manifest, "file": os.path.abspath(path),
                "seed_files": manifest.get("files")}

    def _seed_ip(self, rec, cause):
        net = rec.get("network_uuid")
        ip = rec.get("ip")
        if net not in self.d["networks"] or not self._ip_in_network(net, ip):
            log("seed: ip %r of network %r skipped" % (ip, net))
            return
        r = {k: rec[k] for k in ("reserved", "owner_uuid", "belongs_to_uuid", "belongs_to_type")
             if k in rec and rec[k] is not None}
        r["reserved"] = bool(parse_bool(r.get("reserved"), False))
        self._set_ip(net, str(ipaddress.ip_address(ip)), r, cause)

    # ------------------------------------------------------------------ VMAPI

    def _clean_vm(self, v, uuid):
        raw = copy.deepcopy(v)
        for k in VM_DROP_KEYS:
            raw.pop(k, None)
        raw["uuid"] = uuid
        return raw

    def vm_view(self, raw, fields=None):
        """The VMAPI answer for a stored VM (translateVm: default keys, no image_uuid for HVM)."""
        out = {}
        for k, dflt in VM_DEFAULTS:
            out[k] = copy.deepcopy(raw.get(k, dflt))
        for k, v in raw.items():
            if k not in out:
                out[k] = copy.deepcopy(v)
        if out.get("ram") is None and out.get("max_physical_memory") is not None:
            out["ram"] = out["max_physical_memory"]
        zpool = out.get("zpool") or "zones"
        if not out.get("zfs_filesystem"):
            out["zfs_filesystem"] = "%s/%s" % (zpool, out["uuid"])
        if not out.get("zonepath"):
            out["zonepath"] = "/" + out["zfs_filesystem"]
        if out.get("brand") in HVM_BRANDS:
            out.pop("image_uuid", None)
            out.setdefault("vcpus", None)
            out.setdefault("cpu_type", None)
            out.setdefault("disks", [])
        for nic in out.get("nics") or []:
            if isinstance(nic, dict) and not nic.get("network_uuid"):
                net = self._find_network(nic.get("ip"), nic.get("nic_tag"))
                if net:
                    nic["network_uuid"] = net
        if fields:
            if "*" not in fields:
                out = {k: v for k, v in out.items() if k in fields}
        return out

    # ------------------------------------------------------------------ VMAPI migrations
    # Triton's own migration records (VMAPI lib/apis/moray.js, lib/vm-migration/*.js): one per
    # VM uuid; finalize and a successful abort or rollback delete it.

    def _put_migration(self, rec):
        if not isinstance(rec, dict) or not is_uuid(rec.get("vm_uuid")):
            raise ApiError(409, "InvalidArgument", "a migration needs a vm_uuid")
        m = dict(rec)
        m.setdefault("id", str(uuidlib.uuid4()))
        m.setdefault("target_vm_uuid", m["vm_uuid"])
        m.setdefault("action", "begin")
        m.setdefault("automatic", False)
        m.setdefault("created_timestamp", now_iso())
        m.setdefault("phase", "begin")
        m.setdefault("state", "running")
        m.setdefault("num_sync_phases", 0)
        m.setdefault("progress_history", [])
        for side in ("source_process_details", "target_process_details"):
            m.setdefault(side, {"pid": -1, "host": "", "port": -1})
        m.setdefault("data_version", 1)
        self.d["migrations"][m["vm_uuid"]] = m
        return m

    def put_migration(self, rec):
        with self.lock:
            m = self._put_migration(rec)
            self._save()
            return dict(m)

    def delete_migration(self, vm_uuid):
        with self.lock:
            m = self.d["migrations"].pop(vm_uuid, None)
            if m is not None:
                self._save()
            return m

    def get_migration(self, vm_uuid):
        with self.lock:
            m = self.d["migrations"].get(vm_uuid)
            return dict(m) if m is not None else None

    def list_migrations(self, q):
        with self.lock:
            out = []
            for m in self.d["migrations"].values():
                if q.get("vm_uuid") and m.get("vm_uuid") != q["vm_uuid"]:
                    continue
                if q.get("owner_uuid") and m.get("owner_uuid") != q["owner_uuid"]:
                    continue
                if q.get("state") and q["state"] != "active" and m.get("state") != q["state"]:
                    continue
                if q.get("target_server_uuid") and m.get("target_server_uuid") != q["target_server_uuid"]:
                    continue
                src = q.get("source_server_uuid")
                if src and not (m.get("source_server_uuid") == src or (
                        m.get("target_server_uuid") == src and (
                            m.get("state") == "successful"
                            or (m.get("phase") == "rollback" and m.get("state") == "failed")))):
                    continue
                out.append(dict(m))
            return sorted(out, key=lambda m: m.get("created_timestamp", ""), reverse=True)

    def get_vm(self, uuid, owner_uuid=None, fields=None):
        with self.lock:
            raw = self.d["vms"].get(uuid)
            if raw is None or (owner_uuid and raw.get("owner_uuid") != owner_uuid):
                return None
            return self.vm_view(raw, fields)

    def wait_report(self, uuid, timeout=None):
        """Blocks until the next accepted report of VM uuid or timeout; True when one came."""
        timeout = self.sync_timeout if timeout is None else timeout
        with self.cond:
            start = self.report_seq.get(uuid, 0)
            self.sync_waiters[uuid] = self.sync_waiters.get(uuid, 0) + 1
            try:
                return self.cond.wait_for(lambda: self.report_seq.get(uuid, 0) != start, timeout)
            finally:
                self.sync_waiters[uuid] -= 1
                if not self.sync_waiters[uuid]:
                    del self.sync_waiters[uuid]

    def sync_requests(self, server_uuid=None):
        with self.lock:
            out = []
            for uuid in self.sync_waiters:
                raw = self.d["vms"].get(uuid)
                if server_uuid and (raw is None or raw.get("server_uuid") != server_uuid):
                    continue
                out.append(uuid)
            return sorted(out)

    def list_vms(self, q):
        """q: dict of query parameters (already validated by the caller)."""
        with self.lock:
            vms = list(self.d["vms"].values())
            state = q.get("state")
            uuids = set(q["uuids"].split(",")) if q.get("uuids") else None
            tags = {k[4:]: v for k, v in q.items() if k.startswith("tag.")}
            out = []
            for raw in vms:
                st = raw.get("state")
                if state and state != "all":
                    if state == "active":
                        if st in ("destroyed", "failed"):
                            continue
                    elif st != state:
                        continue
                if uuids is not None and raw["uuid"] not in uuids:
                    continue
                skip = False
                for key in ("uuid", "owner_uuid", "server_uuid", "brand", "image_uuid",
                            "billing_id", "zone_state"):
                    if q.get(key) and raw.get(key) != q[key]:
                        skip = True
                if q.get("alias") and not str(raw.get("alias") or "").startswith(q["alias"]):
                    skip = True
                if q.get("ram") and str(_num(raw.get("max_physical_memory"), None)) != q["ram"]:
                    skip = True
                for tk, tv in tags.items():
                    have = (raw.get("tags") or {}).get(tk)
                    if have is None or (tv != "*" and str(have).lower() != tv.lower()
                                        and str(have) != tv):
                        skip = True
                if not skip:
                    out.append(raw)
            sort = q.get("sort") or "uuid"
            field, _, order = sort.partition(".")
            if field == "ram":
                field = "max_physical_memory"
            desc = order.lower() != "asc"
            out.sort(key=lambda r: (r.get(field) is None, str(r.get(field)), r["uuid"]),
                     reverse=desc)
            total = len(out)
            marker = q.get("marker_uuid")
            if marker:
                idx = next((i for i, r in enumerate(out) if r["uuid"] == marker), None)
                out = out[idx + 1:] if idx is not None else out
            offset = int(q.get("offset") or 0)
            limit = int(q.get("limit") or 1000)
            out = out[offset:offset + limit]
            fields = q.get("fields_list")
            return [self.vm_view(r, fields) for r in out], total

    def put_vm(self, uuid, body, source="put"):
        """vm-agent style upsert. Returns (vm view, note or None)."""
        if not isinstance(body, dict):
            raise vmapi_validation([{"field": "vm", "code": "Invalid",
                                     "message": "body must be a VM object"}])
        if body.get("uuid") not in (None, uuid):
            raise vmapi_validation([{"field": "uuid", "code": "Invalid",
                                     "message": "uuid in body (%s) does not match the URL"
                                                % body.get("uuid")}])
        for key in ("server_uuid", "owner_uuid"):
            if body.get(key) is not None and not is_uuid(body.get(key)):
                raise vmapi_validation([{"field": key, "code": "Invalid",
                                         "message": "Invalid UUID"}])
        if body.get("nics") is not None and not isinstance(body.get("nics"), list):
            raise vmapi_validation([{"field": "nics", "code": "Invalid",
                                     "message": "nics must be an array"}])
        with self.cond:
            note = None
            cur = self.d["vms"].get(uuid)
            reporter = body.get("server_uuid")
            destroyed = vm_state_from(body) == "destroyed"
            if destroyed:
                if cur is None:
                    note = "destroyed report for unknown VM %s ignored" % uuid
                    log(note)
                    view = self.vm_view(self._clean_vm(body, uuid))
                    return view, note
                if reporter and cur.get("server_uuid") and reporter != cur["server_uuid"]:
                    note = ("destroyed report for VM %s from server %s ignored: VMAPI has it on "
                            "server %s" % (uuid, reporter, cur["server_uuid"]))
                    log(note)
                    return self.vm_view(cur), note
                new = dict(cur)
                for k, v in self._clean_vm(body, uuid).items():
                    if k != "server_uuid":
                        new[k] = v
                new["state"] = "destroyed"
                new["zone_state"] = "destroyed"
                if cur.get("state") != "destroyed" or not cur.get("destroyed"):
                    new["destroyed"] = now_iso()
            else:
                new = dict(cur) if cur else {}
                new.update(self._clean_vm(body, uuid))
                new["state"] = vm_state_from(new) or "running"
                if new["state"] != "destroyed":
                    new["destroyed"] = None
                new.setdefault("create_timestamp", now_iso())
                if cur and reporter and cur.get("server_uuid") and reporter != cur["server_uuid"]:
                    note = "VM %s moved from server %s to %s (%s)" % (
                        uuid, cur["server_uuid"], reporter, source)
                    log(note)
                elif cur is None:
                    note = "VM %s created on server %s (%s)" % (uuid, new.get("server_uuid"),
                                                               source)
            changed = cur is None or self._vm_cmp(cur) != self._vm_cmp(new)
            if changed:
                new["last_modified"] = now_iso()
                self.d["vms"][uuid] = new
                if new["state"] == "destroyed":
                    self._drop_vm_nics(uuid, "vmapi destroyed vm %s" % uuid)
                else:
                    self._sync_nics(uuid, "vmapi %s vm %s" % (source, uuid))
                self._save()
            self.report_seq[uuid] = self.report_seq.get(uuid, 0) + 1
            self.cond.notify_all()
            return self.vm_view(self.d["vms"][uuid]), note

    def put_vms(self, server_uuid, vms):
        """vm-agent's full report of one server: upserts each and destroys VMs VMAPI has on that
        server that are missing from the report."""
        notes = []
        seen = set()
        for uuid, vm in vms:
            vm = dict(vm)
            vm.setdefault("server_uuid", server_uuid)
            _, note = self.put_vm(uuid, vm, source="put-all")
            seen.add(uuid)
            if note:
                notes.append(note)
        with self.lock:
            gone = [u for u, raw in self.d["vms"].items()
                    if raw.get("server_uuid") == server_uuid and raw.get("state") != "destroyed"
                    and u not in seen]
        for uuid in gone:
            _, note = self.put_vm(uuid, {"state": "destroyed", "server_uuid": server_uuid},
                                  source="put-all")
            if note:
                notes.append(note)
        return notes

    @staticmethod
    def _vm_cmp(raw):
        return json.dumps({k: v for k, v in raw.items() if k not in VM_VOLATILE_KEYS},
                          sort_keys=True)

    def _live_vms_on(self, server_uuid):
        return [v for v in self.d["vms"].values()
                if v.get("server_uuid") == server_uuid and v.get("state") not in ("destroyed",
                                                                                  "failed")]

    def statuses(self, uuids):
        with self.lock:
            return {u: self.d["vms"][u].get("state") for u in uuids if u in self.d["vms"]}

    # ------------------------------------------------------------------ NAPI: IPs and NICs

    def _ip_in_network(self, net_uuid, ip):
        net = self.d["networks"].get(net_uuid)
        if not net:
            return False
        try:
            return ipaddress.ip_address(ip) in ipaddress.ip_network(net["subnet"])
        except (ValueError, TypeError):
            return False

    def _find_network(self, ip, nic_tag=None):
        try:
            addr = ipaddress.ip_address(ip)
        except (ValueError, TypeError):
            return None
        found = None
        for net in self.d["networks"].values():
            if addr in ipaddress.ip_network(net["subnet"]):
                if nic_tag and net.get("nic_tag") == nic_tag:
                    return net["uuid"]
                found = found or net["uuid"]
        return found

    def ip_view(self, net_uuid, ip, rec):
        """NAPI IP.serialize(): free is false when reserved or when anything owns it."""
        out = {"ip": ip, "reserved": bool(rec.get("reserved")) if rec else False,
               "free": not (rec or {}).get("reserved")}
        if rec:
            for k in ("belongs_to_type", "belongs_to_uuid", "owner_uuid"):
                if rec.get(k) is not None:
                    out[k] = rec[k]
                    out["free"] = False
        out["network_uuid"] = net_uuid
        return out

    def _set_ip(self, net_uuid, ip, rec, cause):
        """Writes (or, rec None, deletes) an IP record and logs the change in the history."""
        ips = self.d["ips"].setdefault(net_uuid, {})
        before = self.ip_view(net_uuid, ip, ips.get(ip))
        if rec:
            ips[ip] = rec
        else:
            ips.pop(ip, None)
        after = self.ip_view(net_uuid, ip, ips.get(ip))
        if before != after:
            self.d["ip_history"].append({
                "time": now_iso(), "ip": ip, "network_uuid": net_uuid,
                "free": after["free"], "reserved": after["reserved"],
                "belongs_to_uuid": after.get("belongs_to_uuid"),
                "belongs_to_type": after.get("belongs_to_type"),
                "owner_uuid": after.get("owner_uuid"), "cause": cause})

    def _claim_ip(self, net_uuid, ip, vm_uuid, owner, cause):
        rec = dict(self.d["ips"].get(net_uuid, {}).get(ip) or {})
        prev = rec.get("belongs_to_uuid")
        if prev and prev != vm_uuid:
            cause += " (took it from %s)" % prev
        rec["belongs_to_uuid"] = vm_uuid
        rec["belongs_to_type"] = "zone"
        if owner:
            rec["owner_uuid"] = owner
        rec["reserved"] = bool(rec.get("reserved"))
        self._set_ip(net_uuid, ip, rec, cause)

    def _release_ip(self, net_uuid, ip, vm_uuid, cause):
        rec = self.d["ips"].get(net_uuid, {}).get(ip)
        if not rec or rec.get("belongs_to_uuid") not in (None, vm_uuid):
            return
        if rec.get("reserved"):
            keep = {"reserved": True}
            if rec.get("owner_uuid"):
                keep["owner_uuid"] = rec["owner_uuid"]
            self._set_ip(net_uuid, ip, keep, cause)
        else:
            self._set_ip(net_uuid, ip, None, cause)

    def _sync_nics(self, vm_uuid, cause):
        """Makes NAPI's NICs and IPs follow the VM's nics[]."""
        raw = self.d["vms"][vm_uuid]
        nics = self.d["nics"]
        owner = raw.get("owner_uuid")
        desired = {}
        for vnic in raw.get("nics") or []:
            if not isinstance(vnic, dict):
                continue
            mac = norm_mac(vnic.get("mac"))
            if not mac:
                continue
            desired[mac] = vnic
        for mac in [m for m, n in nics.items() if n.get("belongs_to_uuid") == vm_uuid]:
            if mac not in desired:
                self._delete_nic(mac, cause)
        ts = now_iso()
        for mac, vnic in desired.items():
            ip = vnic.get("ip")
            try:
                ip = str(ipaddress.ip_address(ip)) if ip else None
            except ValueError:
                ip = None
            net_uuid = vnic.get("network_uuid")
            if net_uuid not in self.d["networks"] or (ip and not self._ip_in_network(net_uuid, ip)):
                net_uuid = self._find_network(ip, vnic.get("nic_tag")) if ip else net_uuid
            net = self.d["networks"].get(net_uuid) or {}
            old = nics.get(mac)
            nic = dict(old) if old else {"created_timestamp": ts}
            nic.update({
                "mac": mac,
                "primary": bool(vnic.get("primary", False)),
                "owner_uuid": owner or nic.get("owner_uuid"),
                "belongs_to_uuid": vm_uuid,
                "belongs_to_type": "zone",
                "ip": ip,
                "netmask": vnic.get("netmask") or net.get("netmask"),
                "vlan_id": vnic.get("vlan_id", net.get("vlan_id", 0)),
                "nic_tag": vnic.get("nic_tag") or net.get("nic_tag"),
                "gateway": vnic.get("gateway") or net.get("gateway"),
                "resolvers": net.get("resolvers") or raw.get("resolvers") or [],
                "network_uuid": net_uuid,
                "mtu": vnic.get("mtu") or net.get("mtu", 1500),
                "state": "stopped" if raw.get("state") == "stopped" else "running",
                "cn_uuid": raw.get("server_uuid"),
            })
            if vnic.get("model"):
                nic["model"] = vnic["model"]
            for k in [k for k, v in nic.items() if v is None]:
                del nic[k]
            if old and (old.get("ip"), old.get("network_uuid")) != (ip, net_uuid) \
                    and old.get("ip") and old.get("network_uuid"):
                self._release_ip(old["network_uuid"], old["ip"], vm_uuid, cause + " (ip changed)")
            if old != nic:
                nic["modified_timestamp"] = ts
                nics[mac] = nic
            if ip and net_uuid:
                self._claim_ip(net_uuid, ip, vm_uuid, owner, cause)

    def _delete_nic(self, mac, cause):
        nic = self.d["nics"].pop(mac, None)
        if nic and nic.get("ip") and nic.get("network_uuid"):
            self._release_ip(nic["network_uuid"], nic["ip"], nic.get("belongs_to_uuid"), cause)

    def _drop_vm_nics(self, vm_uuid, cause):
        for mac in [m for m, n in self.d["nics"].items() if n.get("belongs_to_uuid") == vm_uuid]:
            self._delete_nic(mac, cause)

    def get_network(self, uuid):
        with self.lock:
            net = self.d["networks"].get(uuid)
            return copy.deepcopy(net) if net else None

    def list_networks(self, q):
        with self.lock:
            out = []
            for net in self.d["networks"].values():
                if all(str(net.get(k)) == v for k, v in q.items()
                       if k in ("name", "nic_tag", "vlan_id", "uuid", "family", "fabric")):
                    out.append(copy.deepcopy(net))
            return out

    def check_ip(self, net_uuid, ip_str):
        """Validates the :ip of /networks/:uuid/ips/:ip as NAPI does; returns the canonical IP."""
        try:
            addr = ipaddress.ip_address(ip_str)
        except ValueError:
            raise ApiError(404, "ResourceNotFound", "Invalid IP address")
        net = ipaddress.ip_network(self.d["networks"][net_uuid]["subnet"])
        if addr.version != net.version:
            raise ApiError(404, "ResourceNotFound",
                           "IP and subnet are of different address families")
        if addr not in net:
            raise ApiError(404, "ResourceNotFound", "IP is not in subnet")
        return str(addr)

    def get_ip(self, net_uuid, ip_str):
        with self.lock:
            ip = self.check_ip(net_uuid, ip_str)
            return self.ip_view(net_uuid, ip, self.d["ips"].get(net_uuid, {}).get(ip))

    def list_ips(self, net_uuid):
        with self.lock:
            recs = self.d["ips"].get(net_uuid, {})
            keyed = sorted(recs.items(), key=lambda kv: ipaddress.ip_address(kv[0]))
            return [self.ip_view(net_uuid, ip, rec) for ip, rec in keyed]

    def put_ip(self, net_uuid, ip_str, params):
        errors = []
        for key in ("reserved", "free", "unassign", "check_owner"):
            if key in params and parse_bool(params[key]) is None:
                errors.append({"field": key, "code": "InvalidParameter",
                               "message": "must be a boolean value"})
        for key in ("owner_uuid", "belongs_to_uuid"):
            if params.get(key) is not None and not is_uuid(params[key]):
                errors.append({"field": key, "code": "InvalidParameter",
                               "message": "invalid UUID"})
        if params.get("belongs_to_type") is not None and \
                not isinstance(params.get("belongs_to_type"), str):
            errors.append({"field": "belongs_to_type", "code": "InvalidParameter",
                           "message": "must be a string"})
        if errors:
            raise napi_invalid(errors)
        with self.lock:
            ip = self.check_ip(net_uuid, ip_str)
            cause = "napi put ip %s" % json.dumps(
                {k: params[k] for k in sorted(params)
                 if k in ("reserved", "free", "unassign", "owner_uuid", "belongs_to_uuid",
                          "belongs_to_type")}, sort_keys=True)
            cur = self.d["ips"].get(net_uuid, {}).get(ip)
            if parse_bool(params.get("free")) and "unassign" not in params:
                self._set_ip(net_uuid, ip, None, cause)
                self._save()
                return {"ip": ip, "network_uuid": net_uuid, "reserved": False, "free": True}
            has_bt = params.get("belongs_to_uuid") or params.get("belongs_to_type")
            if has_bt and not (params.get("belongs_to_uuid") or (cur or {}).get("belongs_to_uuid")):
                raise napi_invalid([{"field": "belongs_to_uuid", "code": "MissingParameter",
                                     "message": "Missing parameter"}])
            if has_bt and not (params.get("belongs_to_type") or (cur or {}).get("belongs_to_type")):
                raise napi_invalid([{"field": "belongs_to_type", "code": "MissingParameter",
                                     "message": "Missing parameter"}])
            rec = dict(cur or {})
            for key in ("owner_uuid", "belongs_to_uuid", "belongs_to_type"):
                if params.get(key) is not None:
                    rec[key] = params[key]
            if "reserved" in params:
                rec["reserved"] = parse_bool(params["reserved"])
            rec["reserved"] = bool(rec.get("reserved"))
            if parse_bool(params.get("unassign")):
                rec.pop("belongs_to_uuid", None)
                rec.pop("belongs_to_type", None)
                if not rec["reserved"]:
                    rec.pop("owner_uuid", None)
            if "reserved" in params and not rec["reserved"] and not rec.get("belongs_to_uuid"):
                # Unreserving an IP no NIC holds hands it back to the pool.
                rec = None
            self._set_ip(net_uuid, ip, rec, cause)
            self._save()
            return self.ip_view(net_uuid, ip, self.d["ips"].get(net_uuid, {}).get(ip))

    def list_nics(self, q):
        with self.lock:
            out = []
            for nic in self.d["nics"].values():
                ok = True
                for key in ("belongs_to_uuid", "belongs_to_type", "owner_uuid", "network_uuid",
                            "nic_tag", "cn_uuid", "state", "ip"):
                    if q.get(key) is not None:
                        wanted = q[key].split(",")
                        if str(nic.get(key)) not in wanted:
                            ok = False
                if ok:
                    out.append(copy.deepcopy(nic))
            out.sort(key=lambda n: n["mac"])
            return out

    def get_nic(self, mac):
        with self.lock:
            nic = self.d["nics"].get(mac)
            return copy.deepcopy(nic) if nic else None

    def put_nic(self, mac, params):
        """Updates the NIC fields NAPI lets a caller change (cn_uuid, state, primary, ...)."""
        allowed = ("cn_uuid", "state", "primary", "owner_uuid", "model", "allow_ip_spoofing",
                   "allow_mac_spoofing", "allow_dhcp_spoofing", "allow_restricted_traffic")
        with self.lock:
            nic = self.d["nics"].get(mac)
            if nic is None:
                raise ApiError(404, "ResourceNotFound", "nic not found")
            for k in allowed:
                if k in params:
                    nic[k] = parse_bool(params[k], params[k]) if k == "primary" else params[k]
            nic["modified_timestamp"] = now_iso()
            self._save()
            return copy.deepcopy(nic)

    def ip_history(self, q):
        with self.lock:
            out = []
            for h in self.d["ip_history"]:
                if q.get("ip") and h["ip"] != q["ip"]:
                    continue
                if q.get("network_uuid") and h["network_uuid"] != q["network_uuid"]:
                    continue
                out.append(dict(h))
            return out

    # ------------------------------------------------------------------ CNAPI

    def server_view(self, uuid, extras=None):
        """extras None: the full GetServer object; else a set of ServerList extras."""
        with self.lock:
            srv = self.d["servers"].get(uuid)
            if srv is None:
                return None
            p = srv[SERVER_PRIVATE]
            out = {k: copy.deepcopy(v) for k, v in srv.items() if k != SERVER_PRIVATE}
            live = self._live_vms_on(uuid)
            used_ram = used_disk = used_cpu = 0
            zone_quota = kvm_quota = kvm_vol = 0
            vms = {}
            for vm in live:
                r, dk, c = vm_usage(vm)
                used_ram += r
                used_disk += dk
                used_cpu += c
                if vm.get("brand") in HVM_BRANDS:
                    kvm_quota += _num(vm.get("quota"), 0) * 1073741824
                    kvm_vol += sum(_num(d.get("size"), 0) for d in (vm.get("disks") or [])
                                   if isinstance(d, dict)) * 1048576
                else:
                    zone_quota += _num(vm.get("quota"), 0) * 1073741824
                vms[vm["uuid"]] = {
                    "uuid": vm["uuid"], "owner_uuid": vm.get("owner_uuid"),
                    "quota": vm.get("quota"), "max_physical_memory": vm.get("max_physical_memory"),
                    "zone_state": vm.get("zone_state"), "state": vm.get("state"),
                    "brand": vm.get("brand"), "cpu_cap": vm.get("cpu_cap"),
                    "last_modified": vm.get("last_modified")}
            ram_total = out["ram"] * 1048576
            out["vms"] = vms
            out["last_heartbeat"] = now_iso()
            out["memory_total_bytes"] = ram_total
            out["memory_arc_bytes"] = 0
            out["memory_available_bytes"] = max(0, int(ram_total - used_ram * 1048576))
            out["memory_provisionable_bytes"] = int(
                (p["base_unreserved_ram"] - used_ram) * 1048576)
            out["disk_kvm_zvol_used_bytes"] = 0
            out["disk_kvm_zvol_volsize_bytes"] = int(kvm_vol)
            out["disk_kvm_quota_bytes"] = int(kvm_quota)
            out["disk_zone_quota_bytes"] = int(zone_quota)
            out["disk_cores_quota_bytes"] = 0
            out["disk_installed_images_used_bytes"] = 0
            out["disk_pool_size_bytes"] = p["pool_bytes"]
            out["unreserved_cpu"] = int(p["base_unreserved_cpu"] - used_cpu)
            out["unreserved_ram"] = int(p["base_unreserved_ram"] - used_ram)
            out["unreserved_disk"] = int(p["base_unreserved_disk"] - used_disk)
            if extras is None:
                return out
            want = set(extras)
            every = "all" in want
            if not (every or "sysinfo" in want):
                out.pop("sysinfo", None)
            if not (every or "vms" in want):
                out.pop("vms", None)
            if not (every or "agents" in want):
                out.pop("agents", None)
            if not (every or "memory" in want):
                for k in [k for k in out if k.startswith("memory_")]:
                    del out[k]
            if not (every or "disk" in want):
                for k in [k for k in out if k.startswith("disk_")]:
                    del out[k]
            if not (every or "capacity" in want):
                for k in ("unreserved_cpu", "unreserved_ram", "unreserved_disk"):
                    out.pop(k, None)
            if not want:
                out.pop("last_heartbeat", None)
            return out

    def server_uuids(self):
        with self.lock:
            return sorted(self.d["servers"])

    def lab_update_server(self, uuid, params):
        with self.lock:
            srv = self.d["servers"].get(uuid)
            if srv is None:
                return None
            for k, v in params.items():
                if k in ("uuid", SERVER_PRIVATE):
                    continue
                if k in ("unreserved_ram", "unreserved_disk", "unreserved_cpu"):
                    key = k.split("_")[1]
                    used = [0, 0, 0]
                    for vm in self._live_vms_on(uuid):
                        for i, x in enumerate(vm_usage(vm)):
                            used[i] += x
                    srv[SERVER_PRIVATE]["base_unreserved_" + key] = _num(v, 0) + used[
                        ("ram", "disk", "cpu").index(key)]
                    continue
                srv[k] = v
            self._save()
        return self.server_view(uuid)

    # ------------------------------------------------------------------ IMGAPI

    def _file_sums(self, path):
        try:
            st = os.stat(path)
        except OSError:
            return None
        cached = self.file_sums.get(path)
        if cached and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
            return cached
        sha1 = hashlib.sha1()
        md5 = hashlib.md5()
        with open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                sha1.update(chunk)
                md5.update(chunk)
        import base64
        entry = (st.st_mtime_ns, st.st_size, sha1.hexdigest(),
                 base64.b64encode(md5.digest()).decode())
        self.file_sums[path] = entry
        return entry

    def image_view(self, uuid):
        with self.lock:
            img = self.d["images"].get(uuid)
            if img is None:
                return None
            man = copy.deepcopy(img["manifest"])
            path = img["file"]
        sums = self._file_sums(path)
        if sums:
            files = [{"sha1": sums[2], "size": sums[1], "compression": "none"}]
            if img.get("seed_files"):
                f0 = dict(img["seed_files"][0])
                f0.update(files[0])
                files = [f0]
            man["files"] = files
        else:
            man["files"] = img.get("seed_files") or []
        return man

    def list_images(self, q):
        with self.lock:
            uuids = list(self.d["images"])
        out = []
        state = q.get("state") or "active"
        for uuid in uuids:
            man = self.image_view(uuid)
            if man is None:
                continue
            if state != "all" and man.get("state") != state:
                continue
            if any(q.get(k) is not None and str(man.get(k)) != q[k]
                   for k in ("name", "version", "os", "type", "owner", "uuid")):
                continue
            if q.get("public") is not None and man.get("public") != parse_bool(q["public"]):
                continue
            out.append(man)
        out.sort(key=lambda m: (str(m.get("published_at")), m["uuid"]))
        return out

    def image_file(self, uuid):
        """(path, size, md5 base64) of the image file, None when the image or file is absent."""
        with self.lock:
            img = self.d["images"].get(uuid)
            if img is None:
                return None, "image"
            path = img["file"]
        sums = self._file_sums(path)
        if not sums:
            return None, "file"
        return (path, sums[1], sums[3]), None

    # ------------------------------------------------------------------ debugging

    def dump(self):
        with self.lock:
            return copy.deepcopy(self.d)
