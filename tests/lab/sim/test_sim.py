#!/usr/bin/env python3
# SPDX-License-Identifier: MPL-2.0
"""Tests of the inventory simulator (run by tests/lab/t/lab_sim.sh; needs no root).

Starts inventory.py on 127.0.0.1 on free ports with a small seed written to a temporary
directory, then checks shapes against tests/data/fixtures, status codes and error bodies,
keep-alive, the destroyed-report and IP rules, the IP history, every fault mode, the request log,
persistence across a restart and /_lab/reset. Exit 0 when every check passes, 1 otherwise.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "..", "data", "fixtures"))
INVENTORY = os.path.join(HERE, "inventory.py")
SYNC_TIMEOUT = 1.0

CN1 = "564d0000-0000-4000-8000-000000000001"
CN2 = "564d0000-0000-4000-8000-000000000002"
CN3 = "564d0000-0000-4000-8000-000000000003"
OWNER = "930896af-bf8c-48d4-885c-6573a94b1853"
NET_ADMIN = "a0000000-0000-4000-8000-000000000001"
NET_EXT = "a0000000-0000-4000-8000-000000000002"
IMG1 = "b0000000-0000-4000-8000-000000000001"
IMG2 = "b0000000-0000-4000-8000-000000000002"
IMG3 = "b0000000-0000-4000-8000-000000000003"
Z1 = "c0000000-0000-4000-8000-000000000001"
LX1 = "c0000000-0000-4000-8000-000000000002"
KVM1 = "c0000000-0000-4000-8000-000000000003"
BHYVE1 = "c0000000-0000-4000-8000-000000000004"
GONE1 = "c0000000-0000-4000-8000-000000000005"
NEW1 = "c0000000-0000-4000-8000-000000000006"
MISSING = "c0000000-0000-4000-8000-0000000000ff"
Z1_MAC_ADMIN = "90:b8:d0:00:00:01"
Z1_MAC_EXT = "90:b8:d0:00:00:02"

SERVICES = ("vmapi", "cnapi", "napi", "imgapi")

FAILURES = []
CHECKS = [0]


def check(cond, what):
    CHECKS[0] += 1
    if not cond:
        FAILURES.append(what)
        print("    FAIL: %s" % what)
    return cond


def fixture(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------------------------- setup

def free_port_base():
    for base in range(28081, 40000, 10):
        socks = []
        try:
            for i in range(4):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", base + i))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no 4 free consecutive ports")


def nic(mac, ip, tag="admin", primary=False, net=None, **extra):
    d = {"interface": "net%d" % int(mac[-1]), "mac": mac, "ip": ip, "netmask": "255.255.255.0",
         "gateway": ip.rsplit(".", 1)[0] + ".1", "nic_tag": tag, "primary": primary,
         "vlan_id": 0}
    if net:
        d["network_uuid"] = net
    d.update(extra)
    return d


def write_seed(tmp):
    os.makedirs(os.path.join(tmp, "images"))
    os.makedirs(os.path.join(tmp, "other"))
    with open(os.path.join(tmp, "images", IMG1 + ".zfs"), "wb") as f:
        f.write(os.urandom(300000))
    with open(os.path.join(tmp, "other", "img2.zfs"), "wb") as f:
        f.write(b"zfs stream of image 2\n" * 1000)
    seed = {
        "datacenter": "lab-dc",
        "servers": [
            {"uuid": CN1, "hostname": "cn1", "admin_ip": "10.199.0.11", "ram": 8192,
             "unreserved_ram": 5000, "unreserved_disk": 60000, "traits": {"ssd": True}},
            {"uuid": CN2, "hostname": "cn2", "admin_ip": "10.199.0.12", "ram": 16384},
            {"uuid": CN3, "hostname": "cn3", "admin_ip": "10.199.0.13", "ram": 4096,
             "reserved": True, "setup": False},
        ],
        "networks": [
            {"uuid": NET_ADMIN, "name": "admin", "subnet": "10.199.0.0/24",
             "gateway": "10.199.0.1", "nic_tag": "admin", "resolvers": ["10.199.0.1"]},
            {"uuid": NET_EXT, "name": "external", "subnet": "10.198.0.0/24",
             "nic_tag": "external"},
        ],
        "images": [
            {"uuid": IMG1, "name": "base-64", "version": "1.0.0", "type": "zone-dataset",
             "os": "smartos"},
            {"uuid": IMG2, "name": "ubuntu", "version": "2.0.0", "type": "zvol", "os": "linux",
             "file": "other/img2.zfs"},
            {"uuid": IMG3, "name": "missing-file", "version": "1.0.0"},
        ],
        "vms": [
            {"uuid": Z1, "alias": "zone1", "brand": "joyent", "state": "running",
             "zone_state": "running", "server_uuid": CN1, "image_uuid": IMG1,
             "owner_uuid": OWNER, "max_physical_memory": 1024, "ram": 1024, "quota": 10,
             "autoboot": True, "zfs_filesystem": "zones/" + Z1, "zonepath": "/zones/" + Z1,
             "zpool": "zones", "cpu_cap": 100, "create_timestamp": "2024-01-01T00:00:00.000Z",
             "tags": {"role": "db"},
             "nics": [nic(Z1_MAC_ADMIN, "10.199.0.101", primary=True),
                      nic(Z1_MAC_EXT, "10.198.0.50", tag="external", net=NET_EXT)]},
            {"uuid": LX1, "alias": "lx1", "brand": "lx", "state": "stopped",
             "zone_state": "installed", "server_uuid": CN1, "image_uuid": IMG1,
             "owner_uuid": OWNER, "max_physical_memory": 512, "quota": 5,
             "nics": [nic("90:b8:d0:00:00:03", "10.199.0.103", primary=True)]},
            {"uuid": KVM1, "alias": "kvm1", "brand": "kvm", "state": "running",
             "zone_state": "running", "server_uuid": CN2, "owner_uuid": OWNER,
             "max_physical_memory": 2048, "ram": 1024, "vcpus": 1, "cpu_type": "host",
             "quota": 10,
             "disks": [
                 {"path": "/dev/zvol/rdsk/zones/%s-disk0" % KVM1, "boot": False,
                  "model": "virtio", "media": "disk", "image_uuid": IMG2, "image_size": 10240,
                  "image_name": "ubuntu",
                  "zfs_filesystem": "zones/%s-disk0" % KVM1, "zpool": "zones", "size": 10240,
                  "compression": "off", "block_size": 8192},
                 {"path": "/dev/zvol/rdsk/zones/%s-disk1" % KVM1, "boot": False,
                  "model": "virtio", "media": "disk", "zfs_filesystem": "zones/%s-disk1" % KVM1,
                  "zpool": "zones", "size": 5120, "compression": "off", "block_size": 8192}],
             "nics": [nic("90:b8:d0:00:00:04", "10.199.0.104", primary=True, model="virtio")]},
            {"uuid": BHYVE1, "alias": "bhyve1", "brand": "bhyve", "state": "running",
             "zone_state": "running", "server_uuid": CN2, "owner_uuid": OWNER,
             "max_physical_memory": 1024, "ram": 1024, "vcpus": 1, "quota": 20,
             "flexible_disk_size": 20480,
             "disks": [{"path": "/dev/zvol/rdsk/zones/%s/disk0" % BHYVE1, "boot": True,
                        "image_uuid": IMG2, "size": 10240,
                        "zfs_filesystem": "zones/%s/disk0" % BHYVE1}],
             "nics": [nic("90:b8:d0:00:00:05", "10.199.0.105", primary=True)]},
            {"uuid": GONE1, "alias": "gone", "brand": "joyent", "state": "destroyed",
             "zone_state": "destroyed", "server_uuid": CN1, "owner_uuid": OWNER,
             "image_uuid": IMG1, "nics": []},
        ],
    }
    path = os.path.join(tmp, "seed.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(seed, f, indent=1)
    return path


class Sim:
    def __init__(self, tmp, seed, base):
        self.tmp = tmp
        self.seed = seed
        self.base = base
        self.state_dir = os.path.join(tmp, "sim")
        self.proc = None
        self.conns = {}

    def port(self, service):
        return self.base + SERVICES.index(service)

    def start(self):
        self.logf = open(os.path.join(self.tmp, "sim.out"), "a")
        self.proc = subprocess.Popen(
            [sys.executable, INVENTORY, "--seed", self.seed, "--listen", "127.0.0.1",
             "--state-dir", self.state_dir, "--port-base", str(self.base),
             "--sync-timeout", str(SYNC_TIMEOUT)],
            stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("simulator exited at start, see %s/sim.out" % self.tmp)
            try:
                if all(self.raw_call(s, "GET", "/ping")[0] == 200 for s in SERVICES):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("simulator did not answer /ping")

    def stop(self):
        self.conns.clear()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode if self.proc else None

    def raw_call(self, service, method, path, body=None, headers=None, conn=None):
        """One request; returns (status, headers dict lowercased, raw bytes)."""
        own = conn is None
        if own:
            conn = http.client.HTTPConnection("127.0.0.1", self.port(service), timeout=10)
        hdrs = {"accept": "application/json"}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs["content-type"] = "application/json"
        hdrs.update(headers or {})
        try:
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            raw = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, raw
        finally:
            if own:
                conn.close()

    def call(self, service, method, path, body=None, headers=None):
        """Like raw_call on a kept-alive connection per service; body parsed as JSON."""
        conn = self.conns.get(service)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port(service), timeout=10)
            self.conns[service] = conn
        try:
            st, h, raw = self.raw_call(service, method, path, body, headers, conn)
        except (http.client.HTTPException, OSError):
            self.conns.pop(service, None)
            conn.close()
            raise
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return st, h, parsed

    def get(self, service, path):
        return self.call(service, "GET", path)

    def url(self, service, path):
        return "http://127.0.0.1:%d%s" % (self.port(service), path)


def is_error_body(body, code, message=None):
    return (isinstance(body, dict) and body.get("code") == code and "message" in body
            and (message is None or body["message"] == message))


# ---------------------------------------------------------------------------------- tests

def t_ping_and_headers(sim):
    for s in SERVICES:
        st, h, body = sim.get(s, "/ping")
        check(st == 200 and body == {"ping": "pong"},
              "%s /ping -> 200 pong (%s %r)" % (s, st, body))
        check(h.get("content-type") == "application/json", "%s content-type json" % s)
        check(len(h.get("x-request-id", "")) >= 32, "%s generates x-request-id" % s)
    st, h, _ = sim.call("vmapi", "GET", "/ping", headers={"x-request-id": "abc-123"})
    check(h.get("x-request-id") == "abc-123", "x-request-id echoed")
    st, h, body = sim.call("napi", "GET", "/nics/zz", headers={"x-request-id": "err-1"})
    check(h.get("x-request-id") == "err-1", "x-request-id echoed on errors")


def t_routes_and_methods(sim):
    st, h, body = sim.get("vmapi", "/no/such/route")
    check(st == 404 and body == fixture("vmapi-error-resourcenotfound.json"),
          "unknown route -> 404 fixture body (%s %r)" % (st, body))
    for s in SERVICES:
        st, _, body = sim.get(s, "/nope")
        check(st == 404 and is_error_body(body, "ResourceNotFound", "Route does not exist"),
              "%s unknown route 404" % s)
    st, h, body = sim.call("vmapi", "POST", "/vms/%s" % Z1, {})
    check(st == 405 and is_error_body(body, "BadMethod", "POST is not allowed"),
          "POST /vms/:uuid -> 405 BadMethod (%s %r)" % (st, body))
    check("GET" in h.get("allow", ""), "405 carries Allow")
    st, _, body = sim.call("cnapi", "DELETE", "/servers/%s" % CN1)
    check(st == 405 and is_error_body(body, "BadMethod"), "DELETE /servers/:uuid -> 405")
    st, h, body = sim.call("vmapi", "FROB", "/vms/%s" % Z1)
    check(st == 405 and is_error_body(body, "BadMethod", "FROB is not allowed")
          and h.get("content-type") == "application/json", "unknown method -> 405 BadMethod")
    st, _, body = sim.call("vmapi", "PUT", "/vms/%s" % Z1, b"{not json")
    check(st == 400 and is_error_body(body, "InvalidContent"), "bad JSON body -> 400")
    st, h, raw = sim.raw_call("vmapi", "HEAD", "/vms/%s" % Z1)
    check(st == 200 and raw == b"" and int(h.get("content-length", 0)) > 0,
          "HEAD answers headers only")


def t_vmapi_shapes(sim):
    minimal = fixture("vmapi-vm-minimal.json")
    st, h, vm = sim.get("vmapi", "/vms/%s" % Z1)
    check(st == 200, "GET /vms/:uuid 200")
    missing = set(minimal) - set(vm)
    check(not missing, "joyent VM has every vmapi-vm-minimal.json key (missing %s)" % missing)
    joyent = fixture("vmapi-vm-joyent-zone.json")
    seeded = {"uuid", "brand", "image_uuid", "server_uuid", "alias", "ram",
              "max_physical_memory", "quota", "cpu_cap", "create_timestamp", "destroyed",
              "last_modified", "zone_state", "state", "zpool", "owner_uuid", "nics",
              "customer_metadata", "internal_metadata", "tags", "snapshots"}
    check(seeded <= set(joyent), "test premise: keys come from the joyent fixture")
    check(seeded <= set(vm), "joyent VM keys as fixture (missing %s)" % (seeded - set(vm)))
    check(vm["image_uuid"] == IMG1 and vm["state"] == "running" and vm["server_uuid"] == CN1,
          "joyent VM values")
    check(vm["zfs_filesystem"] == "zones/" + Z1 and vm["zonepath"] == "/zones/" + Z1,
          "zfs_filesystem/zonepath")
    check(vm["destroyed"] is None and vm["last_modified"], "destroyed null, last_modified set")
    nic_keys = set(joyent["nics"][0])
    check(nic_keys <= set(vm["nics"][0]), "VM nic keys as fixture")
    check(vm["nics"][0].get("network_uuid") == NET_ADMIN, "VM nic network_uuid derived")

    st, _, kvm = sim.get("vmapi", "/vms/%s" % KVM1)
    kfix = fixture("vmapi-vm-kvm.json")
    check(st == 200 and "image_uuid" not in kvm, "kvm VM has no top-level image_uuid")
    check(kvm.get("vcpus") == 1 and kvm.get("cpu_type") == "host", "kvm vcpus/cpu_type")
    check(len(kvm.get("disks") or []) == 2, "kvm has 2 disks")
    check(set(kfix["disks"][0]) <= set(kvm["disks"][0]), "kvm disk keys as fixture")
    check(kvm.get("zfs_filesystem") == "zones/" + KVM1 and kvm.get("zonepath") == "/zones/" + KVM1,
          "kvm zfs_filesystem/zonepath included")
    st, _, bh = sim.get("vmapi", "/vms/%s" % BHYVE1)
    check(st == 200 and "image_uuid" not in bh and bh["disks"][0]["image_uuid"] == IMG2,
          "bhyve: disks, no top-level image_uuid")
    check(bh.get("quota") == 20 and bh.get("flexible_disk_size") == 20480,
          "bhyve keeps quota and other vmadm fields")

    st, _, body = sim.get("vmapi", "/vms/%s" % MISSING)
    check(st == 404 and body == {"code": "ResourceNotFound", "message": "VM not found"},
          "unknown VM -> 404 VM not found (%s %r)" % (st, body))
    st, _, body = sim.get("vmapi", "/vms/not-a-uuid")
    vf = fixture("vmapi-error-validationfailed.json")
    check(st == 409 and body.get("code") == vf["code"] and isinstance(body.get("errors"), list)
          and set(vf["errors"][0]) == set(body["errors"][0])
          and body["errors"][0]["field"] == "uuid",
          "bad uuid -> 409 ValidationFailed with errors[] (%s %r)" % (st, body))
    st, _, body = sim.get("vmapi", "/vms/%s?owner_uuid=%s" % (Z1, CN1))
    check(st == 404, "GET /vms/:uuid?owner_uuid=other -> 404")
    st, _, body = sim.get("vmapi", "/vms/%s?fields=uuid,state" % Z1)
    check(body == {"uuid": Z1, "state": "running"}, "fields= projects")


def t_vmapi_list(sim):
    st, h, vms = sim.get("vmapi", "/vms")
    uuids = [v["uuid"] for v in vms]
    check(st == 200 and set(uuids) == {Z1, LX1, KVM1, BHYVE1, GONE1},
          "GET /vms lists every VM incl. destroyed (as VMAPI does without state=)")
    check(uuids == sorted(uuids, reverse=True), "default order uuid DESC")
    check(h.get("x-joyent-resource-count") == "5", "x-joyent-resource-count")
    _, _, vms = sim.get("vmapi", "/vms?state=active")
    check({v["uuid"] for v in vms} == {Z1, LX1, KVM1, BHYVE1}, "state=active drops destroyed")
    _, _, vms = sim.get("vmapi", "/vms?state=destroyed")
    check([v["uuid"] for v in vms] == [GONE1], "state=destroyed")
    _, _, vms = sim.get("vmapi", "/vms?state=running&server_uuid=%s" % CN1)
    check([v["uuid"] for v in vms] == [Z1], "state=running&server_uuid=cn1")
    _, _, vms = sim.get("vmapi", "/vms?server_uuid=%s&state=active" % CN2)
    check({v["uuid"] for v in vms} == {KVM1, BHYVE1}, "server_uuid=cn2")
    _, _, vms = sim.get("vmapi", "/vms?owner_uuid=%s&state=stopped" % OWNER)
    check([v["uuid"] for v in vms] == [LX1], "owner_uuid & state=stopped")
    _, h, vms = sim.get("vmapi", "/vms?limit=2&offset=1")
    check(len(vms) == 2 and [v["uuid"] for v in vms] == sorted(
        [Z1, LX1, KVM1, BHYVE1, GONE1], reverse=True)[1:3], "limit/offset")
    check(h.get("x-joyent-resource-count") == "5", "resource count ignores limit")
    _, _, vms = sim.get("vmapi", "/vms?tag.role=db")
    check([v["uuid"] for v in vms] == [Z1], "tag.role=db")
    _, _, vms = sim.get("vmapi", "/vms?uuids=%s,%s&fields=uuid" % (Z1, KVM1))
    check(sorted(vms, key=lambda v: v["uuid"]) == [{"uuid": Z1}, {"uuid": KVM1}],
          "uuids= and fields=")
    st, _, body = sim.get("vmapi", "/vms?limit=0")
    check(st == 409 and is_error_body(body, "ValidationFailed") and body["errors"][0]["field"]
          == "limit", "limit=0 -> 409 ValidationFailed")
    st, _, body = sim.get("vmapi", "/vms?server_uuid=cn1")
    check(st == 409 and body["errors"][0]["field"] == "server_uuid", "bad server_uuid -> 409")
    st, _, body = sim.get("vmapi", "/statuses?uuids=%s,%s" % (Z1, LX1))
    check(body == {Z1: "running", LX1: "stopped"}, "GET /statuses")


def t_cnapi(sim):
    fix = fixture("cnapi-server.json")
    st, _, srv = sim.get("cnapi", "/servers/%s" % CN1)
    check(st == 200, "GET /servers/:uuid 200")
    missing = set(fix) - set(srv)
    check(not missing, "server has every cnapi-server.json key (missing %s)" % missing)
    smissing = set(fix["sysinfo"]) - set(srv["sysinfo"])
    check(not smissing, "sysinfo has every fixture key (missing %s)" % smissing)
    admin = [n for n in srv["sysinfo"]["Network Interfaces"].values()
             if "admin" in n.get("NIC Names", [])]
    check(len(admin) == 1 and admin[0]["ip4addr"] == "10.199.0.11",
          "sysinfo admin NIC ip4addr is the node address")
    check(srv["hostname"] == "cn1" and srv["status"] == "running" and srv["setup"] is True
          and srv["reserved"] is False and srv["traits"] == {"ssd": True}
          and srv["datacenter"] == "lab-dc" and srv["ram"] == 8192, "server values")
    check(srv["unreserved_ram"] == 5000 and srv["unreserved_disk"] == 60000,
          "unreserved_* as seeded (%s %s)" % (srv["unreserved_ram"], srv["unreserved_disk"]))
    check(set(srv["vms"]) == {Z1, LX1}, "server vms = live VMs on it")
    for k in ("ram", "unreserved_ram", "unreserved_disk", "unreserved_cpu"):
        check(isinstance(srv[k], int), "%s is a number" % k)
    st, _, body = sim.get("cnapi", "/servers/%s" % MISSING)
    check(st == 404 and body == {"code": "ResourceNotFound",
                                 "message": "Server %s not found" % MISSING},
          "unknown server -> 404 (%s %r)" % (st, body))
    st, _, lst = sim.get("cnapi", "/servers")
    check(st == 200 and [s["uuid"] for s in lst] == [CN1, CN2, CN3], "GET /servers lists all")
    check("sysinfo" not in lst[0] and "unreserved_ram" not in lst[0] and "hostname" in lst[0]
          and "status" in lst[0], "list without extras: no sysinfo/capacity")
    _, _, lst = sim.get("cnapi", "/servers?extras=sysinfo,capacity")
    check("sysinfo" in lst[0] and "unreserved_ram" in lst[0] and "vms" not in lst[0],
          "extras=sysinfo,capacity")
    _, _, lst = sim.get("cnapi", "/servers?extras=all")
    check(not (set(fix) - set(lst[0])), "extras=all gives the full object")
    _, _, lst = sim.get("cnapi", "/servers?hostname=cn2")
    check([s["uuid"] for s in lst] == [CN2], "hostname=cn2")
    _, _, lst = sim.get("cnapi", "/servers?uuids=%s,%s" % (CN1, CN3))
    check([s["uuid"] for s in lst] == [CN1, CN3], "uuids=")
    _, _, lst = sim.get("cnapi", "/servers?setup=true")
    check([s["uuid"] for s in lst] == [CN1, CN2], "setup=true")
    _, _, lst = sim.get("cnapi", "/servers?reserved=true")
    check([s["uuid"] for s in lst] == [CN3], "reserved=true")
    st, _, body = sim.get("cnapi", "/servers?setup=maybe")
    check(st == 409 and is_error_body(body, "InvalidParameters"), "setup=maybe -> 409")
    st, _, body = sim.get("cnapi", "/servers?limit=5000")
    check(st == 400 and is_error_body(body, "InvalidParameters"), "limit=5000 -> 400")


def t_napi(sim):
    st, _, net = sim.get("napi", "/networks/%s" % NET_ADMIN)
    check(st == 200 and net["subnet"] == "10.199.0.0/24" and net["netmask"] == "255.255.255.0"
          and net["gateway"] == "10.199.0.1" and net["nic_tag"] == "admin"
          and net["vlan_id"] == 0 and "provision_start_ip" in net and "provision_end_ip" in net,
          "GET /networks/:uuid shape")
    st, _, body = sim.get("napi", "/networks/%s" % MISSING)
    check(st == 404 and body == {"code": "ResourceNotFound", "message": "network not found"},
          "unknown network 404")
    st, _, body = sim.get("napi", "/networks/xyz")
    check(st == 422 and is_error_body(body, "InvalidParameters") and body.get("errors"),
          "bad network uuid -> 422 InvalidParameters")
    st, _, lst = sim.get("napi", "/networks?name=external")
    check([n["uuid"] for n in lst] == [NET_EXT], "GET /networks?name=")

    ipfix = fixture("napi-ip.json")
    st, _, ip = sim.get("napi", "/networks/%s/ips/10.199.0.101" % NET_ADMIN)
    check(st == 200 and set(ipfix) <= set(ip) and ip["belongs_to_uuid"] == Z1
          and ip["belongs_to_type"] == "zone" and ip["owner_uuid"] == OWNER
          and ip["free"] is False and ip["reserved"] is False,
          "used IP: napi-ip.json keys, owned by the VM (%r)" % ip)
    st, _, ip = sim.get("napi", "/networks/%s/ips/10.198.0.50" % NET_EXT)
    check(ip.get("belongs_to_uuid") == Z1, "nic with explicit network_uuid owns its IP")
    st, _, ip = sim.get("napi", "/networks/%s/ips/10.199.0.200" % NET_ADMIN)
    check(st == 200 and ip == {"ip": "10.199.0.200", "network_uuid": NET_ADMIN,
                               "reserved": False, "free": True},
          "unused IP -> synthetic free record (%r)" % ip)
    st, _, body = sim.get("napi", "/networks/%s/ips/10.5.0.1" % NET_ADMIN)
    check(st == 404 and body == {"code": "ResourceNotFound", "message": "IP is not in subnet"},
          "IP outside subnet -> 404")
    st, _, body = sim.get("napi", "/networks/%s/ips/banana" % NET_ADMIN)
    check(st == 404 and body == {"code": "ResourceNotFound", "message": "Invalid IP address"},
          "invalid IP -> 404")
    resfix = fixture("napi-ip-reserve-response.json")
    st, _, ip = sim.call("napi", "PUT", "/networks/%s/ips/10.199.0.201" % NET_ADMIN,
                         {"reserved": True})
    check(st == 200 and set(resfix) <= set(ip) and ip["reserved"] is True and ip["free"] is False,
          "PUT reserved=true -> reserve response shape (%r)" % ip)
    st, _, ip = sim.call("napi", "PUT", "/networks/%s/ips/10.199.0.201" % NET_ADMIN,
                         {"reserved": False})
    check(st == 200 and ip["free"] is True and ip["reserved"] is False, "unreserve frees it")
    st, _, body = sim.call("napi", "PUT", "/networks/%s/ips/10.199.0.201" % NET_ADMIN,
                           {"reserved": "maybe"})
    check(st == 422 and is_error_body(body, "InvalidParameters")
          and body["errors"][0]["field"] == "reserved", "reserved=maybe -> 422 (%r)" % body)
    st, _, body = sim.call("napi", "PUT", "/networks/%s/ips/10.7.0.1" % NET_ADMIN,
                           {"reserved": True})
    check(st == 404, "PUT IP outside subnet -> 404")
    _, _, ips = sim.get("napi", "/networks/%s/ips" % NET_ADMIN)
    check({i["ip"] for i in ips} >= {"10.199.0.101", "10.199.0.103", "10.199.0.104"},
          "GET /networks/:uuid/ips lists used IPs")

    nicfix = fixture("napi-nic.json")
    st, _, nics = sim.get("napi", "/nics?belongs_to_uuid=%s&belongs_to_type=zone" % Z1)
    check(st == 200 and sorted(n["mac"] for n in nics) == [Z1_MAC_ADMIN, Z1_MAC_EXT],
          "GET /nics?belongs_to_uuid=")
    missing = set(nicfix) - set(nics[0])
    check(not missing, "NIC has every napi-nic.json key (missing %s)" % missing)
    check(nics[0]["network_uuid"] == NET_ADMIN and nics[0]["cn_uuid"] == CN1
          and nics[0]["owner_uuid"] == OWNER, "NIC network_uuid/cn_uuid/owner")
    for form in ("90:b8:d0:00:00:01", "90b8d0000001", "90:B8:D0:00:00:01"):
        st, _, n = sim.get("napi", "/nics/%s" % form)
        check(st == 200 and n["mac"] == Z1_MAC_ADMIN and n["ip"] == "10.199.0.101",
              "GET /nics/%s" % form)
    st, _, body = sim.get("napi", "/nics/90b8d00000ff")
    check(st == 404 and body == {"code": "ResourceNotFound", "message": "nic not found"},
          "unknown NIC 404")
    st, _, body = sim.get("napi", "/nics/zz")
    check(st == 422 and is_error_body(body, "InvalidParameters"), "bad MAC -> 422")


def t_imgapi(sim):
    fix = fixture("imgapi-image.json")
    st, _, man = sim.get("imgapi", "/images/%s" % IMG1)
    missing = set(fix) - set(man) - {"urn"}
    check(st == 200 and not missing, "manifest keys as imgapi-image.json (missing %s)" % missing)
    with open(os.path.join(sim.tmp, "images", IMG1 + ".zfs"), "rb") as f:
        data = f.read()
    import hashlib
    check(man["files"] and man["files"][0]["size"] == len(data)
          and man["files"][0]["sha1"] == hashlib.sha1(data).hexdigest()
          and set(fix["files"][0]) <= set(man["files"][0]), "files[] from the image file")
    check(man["state"] == "active" and man["type"] == "zone-dataset" and man["name"] == "base-64",
          "manifest values")
    st, h, raw = sim.raw_call("imgapi", "GET", "/images/%s/file" % IMG1)
    check(st == 200 and raw == data and int(h["content-length"]) == len(data),
          "GET /images/:uuid/file streams the file")
    check(h.get("content-type") == "application/octet-stream" and h.get("content-md5"),
          "file content-type and content-md5")
    st, h, raw = sim.raw_call("imgapi", "GET", "/images/%s/file" % IMG2)
    check(st == 200 and raw == b"zfs stream of image 2\n" * 1000,
          "seed file field relative to the seed directory")
    st, _, man3 = sim.get("imgapi", "/images/%s" % IMG3)
    check(st == 200 and man3["files"] == [], "image without file: files []")
    st, _, body = sim.get("imgapi", "/images/%s/file" % IMG3)
    check(st == 404 and is_error_body(body, "ResourceNotFound"), "absent file -> 404")
    st, _, body = sim.get("imgapi", "/images/%s" % MISSING)
    check(st == 404 and is_error_body(body, "ResourceNotFound"), "unknown image -> 404")
    _, _, lst = sim.get("imgapi", "/images?name=ubuntu")
    check([m["uuid"] for m in lst] == [IMG2], "GET /images?name=")
    _, _, lst = sim.get("imgapi", "/images")
    check({m["uuid"] for m in lst} == {IMG1, IMG2, IMG3}, "GET /images")


def t_keepalive(sim):
    conn = http.client.HTTPConnection("127.0.0.1", sim.port("vmapi"), timeout=5)
    sim.raw_call("vmapi", "GET", "/vms/%s" % Z1, conn=conn)
    sock = conn.sock
    st, h, _ = sim.raw_call("vmapi", "GET", "/vms/%s" % MISSING, conn=conn)
    check(sock is not None and conn.sock is sock and st == 404,
          "two requests (200 then 404) on one connection")
    st, _, _ = sim.raw_call("vmapi", "PUT", "/vms/%s" % Z1, {"state": "running"}, conn=conn)
    check(conn.sock is sock and st == 200, "PUT with body on the same connection")
    conn.close()
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects}\n",
         sim.url("cnapi", "/servers/%s" % CN1), sim.url("cnapi", "/servers/%s" % CN2)],
        capture_output=True, text=True, timeout=10)
    check(out.returncode == 0 and out.stdout.split() == ["1", "0"],
          "curl reuses the connection for the second URL (%r %r)" % (out.stdout, out.stderr))


def t_put_new_vm(sim):
    body = {"uuid": NEW1, "alias": "new1", "brand": "joyent-minimal", "state": "running",
            "zone_state": "running", "server_uuid": CN2, "owner_uuid": OWNER,
            "image_uuid": IMG1, "max_physical_memory": 256, "quota": 5, "zoneid": 7,
            "nics": [nic("90:b8:d0:00:00:06", "10.199.0.106", primary=True)]}
    st, _, vm = sim.call("vmapi", "PUT", "/vms/%s" % NEW1, body)
    check(st == 200 and vm["uuid"] == NEW1 and vm["server_uuid"] == CN2 and "zoneid" not in vm,
          "agent PUT creates the VM (%s)" % st)
    st, _, got = sim.get("vmapi", "/vms/%s" % NEW1)
    check(st == 200 and got["state"] == "running" and got["last_modified"], "new VM readable")
    st, _, n = sim.get("napi", "/nics/90b8d0000006")
    check(st == 200 and n["belongs_to_uuid"] == NEW1 and n["cn_uuid"] == CN2, "NIC created")
    lm = got["last_modified"]
    time.sleep(0.01)
    sim.call("vmapi", "PUT", "/vms/%s" % NEW1, body)
    _, _, got = sim.get("vmapi", "/vms/%s" % NEW1)
    check(got["last_modified"] == lm, "identical report keeps last_modified")
    body2 = dict(body, state="stopped", zone_state="installed")
    sim.call("vmapi", "PUT", "/vms/%s" % NEW1, body2)
    _, _, got = sim.get("vmapi", "/vms/%s" % NEW1)
    check(got["state"] == "stopped" and got["last_modified"] > lm,
          "changed report updates state and last_modified")
    _, _, n = sim.get("napi", "/nics/90b8d0000006")
    check(n["state"] == "stopped", "NIC state follows the VM")
    body3 = dict(body2, nics=[nic("90:b8:d0:00:00:06", "10.199.0.107", primary=True)])
    sim.call("vmapi", "PUT", "/vms/%s" % NEW1, body3)
    _, _, old = sim.get("napi", "/networks/%s/ips/10.199.0.106" % NET_ADMIN)
    _, _, new = sim.get("napi", "/networks/%s/ips/10.199.0.107" % NET_ADMIN)
    check(old["free"] is True and new["belongs_to_uuid"] == NEW1, "changed NIC IP moves the IP")
    st, _, body = sim.call("vmapi", "PUT", "/vms/%s" % NEW1, {"uuid": Z1})
    check(st == 409 and is_error_body(body, "ValidationFailed"), "uuid mismatch -> 409")
    st, _, body = sim.call("vmapi", "PUT", "/vms/%s" % NEW1, [1, 2])
    check(st == 409 and is_error_body(body, "ValidationFailed"), "non-object body -> 409")
    st, _, body = sim.call("vmapi", "PUT", "/vms/%s" % MISSING,
                           {"state": "destroyed", "server_uuid": CN1})
    check(st == 200, "destroyed report of an unknown VM is accepted")
    st, _, _ = sim.get("vmapi", "/vms/%s" % MISSING)
    check(st == 404, "... and creates nothing")


def t_destroyed_reports_and_ips(sim):
    ip_res = "10.199.0.101"   # reserved before the destroy: must never be free
    ip_ext = "10.198.0.50"    # not reserved: freed by the destroy
    st, _, ip = sim.call("napi", "PUT", "/networks/%s/ips/%s" % (NET_ADMIN, ip_res),
                         {"reserved": True})
    check(st == 200 and ip["reserved"] is True and ip["belongs_to_uuid"] == Z1
          and ip["free"] is False, "reserve the VM's IP")
    _, _, cn1_before = sim.get("cnapi", "/servers/%s" % CN1)
    _, _, cn2_before = sim.get("cnapi", "/servers/%s" % CN2)

    # The operator tells VMAPI the VM now lives on cn2 (partial body).
    st, _, vm = sim.call("vmapi", "PUT", "/vms/%s" % Z1, {"server_uuid": CN2})
    check(st == 200 and vm["server_uuid"] == CN2 and vm["state"] == "running",
          "operator PUT moves the VM to cn2")
    _, _, n = sim.get("napi", "/nics/%s" % Z1_MAC_ADMIN)
    check(n["cn_uuid"] == CN2, "NIC cn_uuid follows the VM")
    _, _, cn1_after = sim.get("cnapi", "/servers/%s" % CN1)
    _, _, cn2_after = sim.get("cnapi", "/servers/%s" % CN2)
    check(cn1_after["unreserved_ram"] == cn1_before["unreserved_ram"] + 1024
          and cn2_after["unreserved_ram"] == cn2_before["unreserved_ram"] - 1024,
          "capacity follows the VM (%s->%s, %s->%s)" % (
              cn1_before["unreserved_ram"], cn1_after["unreserved_ram"],
              cn2_before["unreserved_ram"], cn2_after["unreserved_ram"]))
    check(Z1 in cn2_after["vms"] and Z1 not in cn1_after["vms"], "server vms follow the VM")

    # The hidden source (DNI on cn1) is reported destroyed by cn1's agent: ignored.
    sim.call("vmapi", "DELETE", "/_lab/requests")
    st, _, vm = sim.call("vmapi", "PUT", "/vms/%s" % Z1,
                         {"uuid": Z1, "state": "destroyed", "zone_state": "destroyed",
                          "server_uuid": CN1})
    check(st == 200 and vm["state"] == "running" and vm["server_uuid"] == CN2,
          "destroyed report from a non-current server is ignored")
    _, _, reqs = sim.get("vmapi", "/_lab/requests?method=PUT")
    check(reqs and "ignored" in reqs[-1].get("note", ""), "the ignored report is noted in the log")
    _, _, vm = sim.get("vmapi", "/vms/%s" % Z1)
    check(vm["state"] == "running" and vm["destroyed"] is None, "VM still running")
    _, _, ip = sim.get("napi", "/networks/%s/ips/%s" % (NET_EXT, ip_ext))
    check(ip["free"] is False and ip["belongs_to_uuid"] == Z1, "IPs still owned")

    # The target's agent reports the VM (full object) from cn2.
    _, _, full = sim.get("vmapi", "/vms/%s" % Z1)
    st, _, vm = sim.call("vmapi", "PUT", "/vms/%s" % Z1, dict(full, server_uuid=CN2))
    check(st == 200 and vm["server_uuid"] == CN2, "report from the current server accepted")

    # A later destroy on cn2 (the current server) destroys it.
    st, _, vm = sim.call("vmapi", "PUT", "/vms/%s" % Z1,
                         {"uuid": Z1, "state": "destroyed", "server_uuid": CN2})
    check(st == 200 and vm["state"] == "destroyed" and vm["zone_state"] == "destroyed"
          and vm["destroyed"], "destroyed report from the current server destroys the VM")
    _, _, nics = sim.get("napi", "/nics?belongs_to_uuid=%s" % Z1)
    check(nics == [], "the destroyed VM's NICs are deleted")
    _, _, ip = sim.get("napi", "/networks/%s/ips/%s" % (NET_ADMIN, ip_res))
    check(ip["reserved"] is True and ip["free"] is False and ip.get("owner_uuid") == OWNER
          and "belongs_to_uuid" not in ip, "reserved IP keeps reserved+owner (%r)" % ip)
    _, _, ip = sim.get("napi", "/networks/%s/ips/%s" % (NET_EXT, ip_ext))
    check(ip == {"ip": ip_ext, "network_uuid": NET_EXT, "reserved": False, "free": True},
          "unreserved IP is freed (%r)" % ip)
    _, _, vms = sim.get("vmapi", "/vms?state=active")
    check(Z1 not in [v["uuid"] for v in vms], "destroyed VM not in state=active")
    _, _, vms = sim.get("vmapi", "/vms")
    check(Z1 in [v["uuid"] for v in vms], "destroyed VM still in the default list")

    # It comes back (a rollback re-reports it from cn1 after the operator moved it back).
    sim.call("vmapi", "PUT", "/vms/%s" % Z1, dict(full, server_uuid=CN1, state="running"))
    _, _, vm = sim.get("vmapi", "/vms/%s" % Z1)
    check(vm["state"] == "running" and vm["destroyed"] is None and vm["server_uuid"] == CN1,
          "a live report brings the VM back")
    _, _, ip = sim.get("napi", "/networks/%s/ips/%s" % (NET_ADMIN, ip_res))
    check(ip["belongs_to_uuid"] == Z1 and ip["reserved"] is True, "reserved IP owned again")
    sim.call("napi", "PUT", "/networks/%s/ips/%s" % (NET_ADMIN, ip_res), {"reserved": False})
    _, _, ip = sim.get("napi", "/networks/%s/ips/%s" % (NET_ADMIN, ip_res))
    check(ip["reserved"] is False and ip["free"] is False and ip["belongs_to_uuid"] == Z1,
          "unreserving an IP a NIC holds keeps it owned")

    _, _, hist = sim.get("vmapi", "/_lab/ip-history?ip=%s" % ip_res)
    check(len(hist) >= 4, "ip history records every change (%d)" % len(hist))
    check(all(h["free"] is False for h in hist), "reserved IP was never free: %r"
          % [(h["free"], h["reserved"], h["belongs_to_uuid"]) for h in hist])
    check(all(set(h) >= {"time", "ip", "network_uuid", "free", "reserved", "belongs_to_uuid",
                         "cause"} for h in hist), "history entry fields")
    _, _, hist = sim.get("napi", "/_lab/ip-history?ip=%s" % ip_ext)
    check([h["free"] for h in hist] == [False, True, False],
          "unreserved IP history: owned, freed, owned again (%r)" % [h["free"] for h in hist])
    _, _, full_hist = sim.get("cnapi", "/_lab/ip-history")
    check(len(full_hist) > len(hist), "ip history on every port")


def t_sync(sim):
    def later():
        time.sleep(0.3)
        sim.raw_call("vmapi", "PUT", "/vms/%s" % LX1,
                     {"state": "running", "zone_state": "running", "server_uuid": CN1})

    seen = []

    def watch():
        time.sleep(0.15)
        seen.append(sim.raw_call("vmapi", "GET", "/_lab/sync-requests?server_uuid=%s" % CN1))

    threads = [threading.Thread(target=later), threading.Thread(target=watch)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    st, _, vm = sim.call("vmapi", "GET", "/vms/%s?sync=true" % LX1)
    dt = time.monotonic() - t0
    for t in threads:
        t.join()
    check(st == 200 and vm["state"] == "running" and 0.25 <= dt < SYNC_TIMEOUT,
          "sync=true waits for the next report (%.2fs, %s)" % (dt, vm.get("state")))
    check(seen and json.loads(seen[0][2]) == [LX1], "/_lab/sync-requests lists the waiting VM")
    t0 = time.monotonic()
    st, _, vm = sim.call("vmapi", "GET", "/vms/%s?sync=true" % LX1)
    dt = time.monotonic() - t0
    check(st == 200 and SYNC_TIMEOUT - 0.1 <= dt < SYNC_TIMEOUT + 1,
          "sync=true without a report answers after the timeout (%.2fs)" % dt)


def t_faults(sim):
    def add(spec):
        st, _, body = sim.call("vmapi", "POST", "/_lab/faults", spec)
        check(st == 200 and body.get("id"), "POST /_lab/faults %r -> id (%s %r)" % (spec, st, body))
        return body.get("id")

    add({"service": "vmapi", "mode": "500"})
    st, _, body = sim.get("cnapi", "/ping")
    check(st == 200, "vmapi fault does not hit cnapi")
    st, h, body = sim.get("vmapi", "/vms/%s" % LX1)
    check(st == 500 and is_error_body(body, "InternalError") and
          h.get("content-type") == "application/json", "mode 500 -> InternalError")
    st, _, _ = sim.get("vmapi", "/vms/%s" % LX1)
    check(st == 200, "count defaults to 1")

    add({"service": "napi", "method": "GET", "path_regex": "^/nics", "mode": "503", "count": 2})
    st, _, _ = sim.get("napi", "/networks/%s" % NET_ADMIN)
    check(st == 200, "path_regex does not match other paths")
    st, _, _ = sim.call("napi", "PUT", "/nics/90b8d0000003", {"state": "running"})
    check(st == 200, "method filter spares PUT")
    for i in range(2):
        st, _, body = sim.get("napi", "/nics?belongs_to_uuid=%s" % LX1)
        check(st == 503 and is_error_body(body, "ServiceUnavailable"), "mode 503 hit %d" % i)
    st, _, _ = sim.get("napi", "/nics?belongs_to_uuid=%s" % LX1)
    check(st == 200, "count 2 then normal")

    add({"service": "cnapi", "mode": "slow", "delay_ms": 400})
    t0 = time.monotonic()
    st, _, body = sim.get("cnapi", "/servers/%s" % CN1)
    dt = time.monotonic() - t0
    check(st == 200 and body.get("uuid") == CN1 and dt >= 0.38, "mode slow (%.2fs)" % dt)

    add({"service": "vmapi", "mode": "malformed", "path_regex": "^/vms/"})
    st, h, raw = sim.raw_call("vmapi", "GET", "/vms/%s" % LX1)
    bad = False
    try:
        json.loads(raw)
    except ValueError:
        bad = True
    check(st == 200 and bad and h.get("content-type") == "application/json"
          and int(h["content-length"]) == len(raw), "mode malformed -> 200 invalid JSON")

    add({"service": "vmapi", "mode": "drop"})
    dropped = False
    try:
        sim.raw_call("vmapi", "GET", "/vms/%s" % LX1)
    except (http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine):
        dropped = True
    check(dropped, "mode drop closes the connection without an answer")
    add({"service": "imgapi", "mode": "drop"})
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", sim.url("imgapi", "/ping")],
                         capture_output=True, text=True, timeout=10)
    check(out.returncode == 52, "curl sees an empty reply on drop (rc %d)" % out.returncode)

    add({"service": "imgapi", "mode": "malformed", "path_regex": "/file$"})
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null",
                          sim.url("imgapi", "/images/%s/file" % IMG1)],
                         capture_output=True, text=True, timeout=10)
    check(out.returncode == 18, "malformed file download is truncated (curl rc %d)"
          % out.returncode)

    fid = add({"service": "*", "mode": "503", "count": -1, "path_regex": "^/ping"})
    for s in SERVICES:
        st, _, _ = sim.get(s, "/ping")
        check(st == 503, "service * and count -1 hit %s" % s)
    st, _, _ = sim.get("vmapi", "/_lab/faults")
    check(st == 200, "/_lab/ is never faulted")
    _, _, faults = sim.get("napi", "/_lab/faults")
    mine = [f for f in faults if f["id"] == fid]
    check(mine and mine[0]["hits"] == 4 and mine[0]["remaining"] == -1 and mine[0]["active"],
          "GET /_lab/faults shows hits and remaining")
    st, _, body = sim.call("imgapi", "DELETE", "/_lab/faults")
    check(st == 200 and body.get("cleared", 0) >= 1, "DELETE /_lab/faults")
    st, _, _ = sim.get("vmapi", "/ping")
    check(st == 200, "cleared faults no longer fire")

    add({"service": "vmapi", "method": "PUT", "mode": "500", "after": True})
    st, _, _ = sim.call("vmapi", "PUT", "/vms/%s" % LX1,
                        {"state": "stopped", "zone_state": "installed", "server_uuid": CN1})
    _, _, vm = sim.get("vmapi", "/vms/%s" % LX1)
    check(st == 500 and vm["state"] == "stopped", "after=true: the request is applied, then 500")
    fid = add({"service": "cnapi", "mode": "500", "count": -1})
    st, _, _ = sim.call("cnapi", "DELETE", "/_lab/faults/%s" % fid)
    check(st == 200 and sim.get("cnapi", "/ping")[0] == 200, "DELETE /_lab/faults/:id")

    for spec in ({"service": "vmapi", "mode": "teapot"}, {"service": "dns", "mode": "500"},
                 {"service": "vmapi", "mode": "500", "count": 0},
                 {"service": "vmapi", "mode": "500", "path_regex": "("}):
        st, _, body = sim.call("vmapi", "POST", "/_lab/faults", spec)
        check(st == 409 and is_error_body(body, "InvalidArgument"), "bad fault %r -> 409" % spec)


def t_request_log(sim):
    sim.call("napi", "GET", "/nics/%s" % Z1_MAC_ADMIN.replace(":", ""),
             headers={"x-request-id": "log-check-1"})
    path = os.path.join(sim.state_dir, "requests.log")
    with open(path, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    mine = [e for e in lines if e.get("x-request-id") == "log-check-1"]
    check(len(mine) == 1 and mine[0]["service"] == "napi" and mine[0]["method"] == "GET"
          and mine[0]["status"] == 200 and mine[0]["path"].startswith("/nics/")
          and isinstance(mine[0]["duration_ms"], (int, float)) and mine[0]["time"],
          "requests.log JSON line with time/service/method/path/status/duration_ms/x-request-id")
    check(any(e.get("fault") == "drop" and e["status"] == 0 for e in lines),
          "dropped requests are logged")
    _, _, recent = sim.get("vmapi", "/_lab/requests?service=napi&limit=1")
    check(recent and recent[-1]["x-request-id"] == "log-check-1", "GET /_lab/requests filters")


def t_restart(sim):
    _, _, before_vm = sim.get("vmapi", "/vms/%s" % Z1)
    _, _, before_hist = sim.get("vmapi", "/_lab/ip-history")
    pid_path = os.path.join(sim.state_dir, "pid")
    with open(pid_path) as f:
        check(int(f.read()) == sim.proc.pid, "pid file holds the pid")
    t0 = time.monotonic()
    rc = sim.stop()
    check(rc == 0 and time.monotonic() - t0 < 2, "SIGTERM: clean exit 0 within 2 s (rc %s)" % rc)
    check(not os.path.exists(pid_path), "pid file removed at exit")
    sim.start()
    _, _, vm = sim.get("vmapi", "/vms/%s" % Z1)
    check(vm == before_vm, "VM state survives a restart")
    _, _, hist = sim.get("vmapi", "/_lab/ip-history")
    check(hist == before_hist, "ip history survives a restart")
    _, _, n = sim.get("napi", "/nics/90b8d0000006")
    check(n.get("ip") == "10.199.0.107", "NICs survive a restart")
    _, _, vm = sim.get("vmapi", "/vms/%s" % NEW1)
    check(vm.get("state") == "stopped", "reported VMs survive a restart")


def t_reset(sim):
    st, _, body = sim.call("cnapi", "POST", "/_lab/reset")
    check(st == 200 and body.get("reset") is True, "POST /_lab/reset")
    st, _, _ = sim.get("vmapi", "/vms/%s" % NEW1)
    check(st == 404, "reset forgets reported VMs")
    _, _, vm = sim.get("vmapi", "/vms/%s" % LX1)
    check(vm["state"] == "stopped", "reset restores seeded VMs")
    _, _, hist = sim.get("vmapi", "/_lab/ip-history")
    check(hist and all(h["cause"].startswith("reset") for h in hist),
          "reset restarts the ip history from the seed")


def t_vmapi_migrations(sim):
    st, _, body = sim.get("vmapi", "/migrations/%s" % Z1)
    check(st == 404 and is_error_body(body, "ResourceNotFound", "migration not found"),
          "GET /migrations/:vm none -> 404 migration not found")
    st, _, body = sim.get("vmapi", "/migrations/%s" % MISSING)
    check(st == 404 and is_error_body(body, "ResourceNotFound", "VM not found"),
          "GET /migrations/:unknown vm -> 404 VM not found")
    fix = fixture("vmapi-migration-raw.json")
    rec = dict(fix, vm_uuid=Z1, target_vm_uuid=Z1)
    st, _, made = sim.call("vmapi", "POST", "/_lab/migrations", rec)
    check(st == 200 and made["id"] == fix["id"], "POST /_lab/migrations")
    st, _, raw = sim.get("vmapi", "/migrations/%s?format=raw" % Z1)
    check(st == 200 and sorted(raw) == sorted(fix) and raw["phase"] == "sync",
          "GET /migrations/:vm?format=raw: the raw record's fields (%s)" % sorted(raw))
    st, _, view = sim.get("vmapi", "/migrations/%s" % Z1)
    check(st == 200 and "id" not in view and view["state"] == "paused"
          and view["vm_uuid"] == Z1, "GET /migrations/:vm: the translated view (no id)")
    _, _, lst = sim.get("vmapi", "/migrations?format=raw&vm_uuid=%s" % Z1)
    check([m["id"] for m in lst] == [fix["id"]], "GET /migrations?vm_uuid=")
    _, _, lst = sim.get("vmapi", "/migrations?source_server_uuid=%s" % CN2)
    check(lst == [], "source_server_uuid matches the target only once successful")
    st, _, _ = sim.call("vmapi", "DELETE", "/migrations/%s" % Z1)
    check(st == 200, "DELETE /migrations/:vm")
    st, _, _ = sim.get("vmapi", "/migrations/%s" % Z1)
    check(st == 404, "gone after DELETE")


TESTS = [t_ping_and_headers, t_routes_and_methods, t_vmapi_shapes, t_vmapi_list, t_cnapi,
         t_napi, t_imgapi, t_keepalive, t_put_new_vm, t_destroyed_reports_and_ips, t_sync,
         t_faults, t_request_log, t_restart, t_reset, t_vmapi_migrations]


def main():
    tmp = tempfile.mkdtemp(prefix="zmigrate-sim-test.")
    keep = os.environ.get("KEEP_TMP")
    sim = Sim(tmp, write_seed(tmp), free_port_base())
    t_start = time.monotonic()
    try:
        sim.start()
        for t in TESTS:
            print("  %s" % t.__name__[2:])
            before = len(FAILURES)
            try:
                t(sim)
            except Exception as e:  # one broken test must not hide the others
                traceback.print_exc()
                FAILURES.append("%s raised %r" % (t.__name__, e))
            if len(FAILURES) > before and sim.proc.poll() is not None:
                FAILURES.append("simulator died")
                break
    finally:
        rc = sim.stop()
        if rc not in (0, None):
            FAILURES.append("simulator exit status %s" % rc)
        if FAILURES or keep:
            print("  simulator output and state kept in %s" % tmp)
            try:
                with open(os.path.join(tmp, "sim.out")) as f:
                    sys.stdout.write("".join(f.readlines()[-30:]))
            except OSError:
                pass
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("%d checks, %d failed, %.1fs" % (CHECKS[0], len(FAILURES), time.monotonic() - t_start))
    for f in FAILURES:
        print("FAILED: %s" % f)
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
