#!/usr/bin/python3
# SPDX-License-Identifier: MPL-2.0
"""SmartOS stand-ins for the zmigrate lab (one library, many commands).

The small executables next to this file (vmadm, zonecfg, zoneadm, imgadm,
sysinfo, zlab-agent, zlab-writer, zlab-sum, zlab-verify) import this module and
call main(<command>, argv).  Running this file directly works too:
`zlablib.py vmadm list`.

Where SmartOS keeps state, so do we (inside each lab node's private mounts):
  /etc/zones/index, /etc/zones/<uuid>.xml   zone configuration (zonecfg XML)
  /zones/<uuid>/config/*.json                metadata.json, tags.json, routes.json
  zfs datasets in pool "zones"               zones/<uuid>, zones/cores/<uuid>, disks
  /tmp/.sysinfo.json                         sysinfo cache (written by seed apply)
Lab-only state:
  /run/zlab/zones/<uuid>.json                run state of a running zone (zoneid, writer pid)
  /run/zlab/generation                       touched by every mutation (agent watches it)
  /var/lib/zfs/zlab/imgadm/<uuid>.json       imported image manifests (per node, persistent)
Formats follow vmadm(8), zonecfg(8), zoneadm(8), imgadm(8) of SmartOS; see
tests/lab/CONTRACT.md for the subset and the deliberate lab deviations.
"""

import base64
import fcntl
import hashlib
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import time


def quoteattr(value):
    """An XML attribute value in double quotes (xml.sax.saxutils pulls in urllib)."""
    value = str(value).replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')
    value = value.replace('"', '&quot;').replace('\n', '&#10;').replace('\r', '&#13;')
    return '"%s"' % value.replace('\t', '&#9;')


class _Lazy:
    """Imports a module on first use (keeps the start of every command cheap)."""

    def __init__(self, name):
        self._name = name
        self._mod = None

    def __getattr__(self, attr):
        if self._mod is None:
            import importlib
            self._mod = importlib.import_module(self._name)
        return getattr(self._mod, attr)


ElementTree = _Lazy('xml.etree.ElementTree')
uuidlib = _Lazy('uuid')


def _urllib():
    import urllib.error
    import urllib.request
    return urllib

POOL = 'zones'
ZONES_ETC = os.environ.get('ZLAB_ETC_ZONES', '/etc/zones')
RUN_DIR = os.environ.get('ZLAB_RUN_DIR', '/run/zlab')
NODE_JSON = os.environ.get('ZLAB_NODE_CONFIG', '/etc/zmigrate-lab/node.json')
STATE_DIR = os.environ.get('ZLAB_STATE_DIR', '/var/lib/zfs/zlab')
SYSINFO_CACHE = '/tmp/.sysinfo.json'
GIB = 1024 * 1024 * 1024
MIB = 1024 * 1024
UUID_RE = re.compile(r'^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-'
                     r'[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')
HVM_BRANDS = ('kvm', 'bhyve')
BRANDS = ('joyent', 'joyent-minimal', 'lx', 'kvm', 'bhyve')
BRAND_TYPE = {'joyent': 'OS', 'joyent-minimal': 'OS', 'lx': 'LX',
              'kvm': 'KVM', 'bhyve': 'BHYV'}
DEFAULT_WRITE_RATE = 8192
WRITER_FILE = 'zlab-writer.dat'


class Fail(Exception):
    """A command failure: message for stderr and the exit status."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.message = message
        self.code = code


def is_uuid(text):
    return bool(text) and bool(UUID_RE.match(text))


def now_iso():
    t = time.time()
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(t)) + \
        '.%03dZ' % int((t % 1) * 1000)


def iso_from_epoch(secs):
    return time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime(secs))


def js_number(value):
    """Numbers as JavaScript prints them: integral floats without '.0'."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def dumps(obj):
    return json.dumps(obj, indent=2, ensure_ascii=False)


def write_atomic(path, data, mode=0o644):
    tmp = '%s.tmp.%d' % (path, os.getpid())
    with open(tmp, 'w') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


# ---------------------------------------------------------------------------
# node configuration, locking, generation

def node_config():
    cfg = read_json(NODE_JSON, {}) or {}
    return cfg


def sysinfo():
    """The node's sysinfo: the seed's cache if present, else built from node.json."""
    info = read_json(SYSINFO_CACHE)
    if isinstance(info, dict) and info.get('UUID'):
        return info
    cfg = node_config()
    return {
        'Live Image': cfg.get('platform', '20240101T000000Z'),
        'System Type': 'SunOS',
        'Boot Time': str(int(time.time())),
        'Datacenter Name': cfg.get('datacenter_name', 'lab'),
        'SDC Version': '7.0',
        'UUID': cfg.get('server_uuid', ''),
        'Hostname': cfg.get('hostname', os.uname().nodename),
        'Setup': 'true',
        'Zpool': POOL,
        'Network Interfaces': {
            'e1000g0': {'MAC Address': '', 'ip4addr': cfg.get('admin_ip', ''),
                        'Link Status': 'up', 'NIC Names': ['admin']},
        },
    }


def ensure_run_dir():
    os.makedirs(os.path.join(RUN_DIR, 'zones'), exist_ok=True)


class Lock:
    """Node-wide exclusive lock for every command that changes zones."""

    def __enter__(self):
        ensure_run_dir()
        self.fd = os.open(os.path.join(RUN_DIR, 'lock'), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        bump_generation()
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def bump_generation():
    ensure_run_dir()
    path = os.path.join(RUN_DIR, 'generation')
    with open(path, 'a') as f:
        f.write('.')
    if os.path.getsize(path) > 4096:
        write_atomic(path, '')


# ---------------------------------------------------------------------------
# zfs

def run(cmd, input=None, check=False):
    p = subprocess.run(cmd, input=input, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if check and p.returncode != 0:
        raise Fail(p.stderr.strip() or '%s failed' % ' '.join(cmd))
    return p


def zfs(*args, busy_retry=False, check=True):
    """Run zfs; with busy_retry, retry 'dataset is busy' for a few seconds (zfs-fuse)."""
    deadline = time.time() + 8
    delay = 0.05
    while True:
        p = run(['zfs'] + list(args))
        if p.returncode == 0 or not busy_retry or 'busy' not in p.stderr \
                or time.time() > deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    if check and p.returncode != 0:
        raise Fail(p.stderr.strip() or 'zfs %s failed' % ' '.join(args))
    return p


ZFS_PROPS = ('type', 'quota', 'refquota', 'reservation', 'refreservation',
             'creation', 'mounted', 'mountpoint', 'compression', 'recordsize',
             'origin', 'userrefs', 'guid', 'used')

_OPENZFS = None


def openzfs():
    """True on a node with a kernel OpenZFS (the lab's openzfs guests): KVM and bhyve disks are
    real zvols there. zfs-fuse nodes (no zvols) keep disks as filesystems."""
    global _OPENZFS
    if _OPENZFS is None:
        _OPENZFS = os.path.isdir('/sys/module/zfs')
    return _OPENZFS


# openzfs: a KVM/bhyve disk is a zvol holding an ext4 filesystem (the guest's disk), mounted
# where the lab's filesystem disks are (/zones/<uuid>-diskN, /zones/<uuid>/diskN) so the
# writer, zlab-sum and zlab-verify work the same on both kinds of node.
ZVOL_MOUNT_OPTS = 'noatime,commit=1'


def zvol_dev(ds):
    return '/dev/zvol/' + ds


def zvol_wait(ds, timeout=20):
    dev = zvol_dev(ds)
    deadline = time.time() + timeout
    while not os.path.exists(dev):
        if time.time() > deadline:
            raise Fail('zvol %s: %s did not appear' % (ds, dev))
        time.sleep(0.05)
    return dev


def zvol_mounted(ds):
    mp = '/' + ds
    try:
        with open('/proc/self/mounts') as f:
            return any(line.split()[1] == mp for line in f)
    except OSError:
        return False


def zvol_mkfs(ds):
    # Inode tables and journal written now: a lazy init would keep writing to the zvol in the
    # background and make every snapshot differ.
    run(['mkfs.ext4', '-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0',
         '-L', ds.split('/')[-1][-12:], zvol_wait(ds)], check=True)


def zvol_mount(ds):
    if zvol_mounted(ds):
        return
    dev = zvol_wait(ds)
    mp = '/' + ds
    os.makedirs(mp, exist_ok=True)
    p = run(['mount', '-t', 'ext4', '-o', ZVOL_MOUNT_OPTS, dev, mp])
    if p.returncode != 0:
        raise Fail('cannot mount zvol %s on %s: %s' % (ds, mp, p.stderr.strip()))


def zvol_umount(ds):
    if zvol_mounted(ds):
        run(['umount', '/' + ds], check=True)


def zfs_props(names=None):
    """{dataset: {prop: value}} for all datasets (or the given ones), via zfs get -Hp."""
    props = ZFS_PROPS + (('volsize', 'volblocksize') if openzfs() else ())
    args = ['get', '-Hp', '-o', 'name,property,value', ','.join(props)]
    if names:
        args += list(names)
    p = zfs(*args, check=False)
    out = {}
    for line in p.stdout.splitlines():
        parts = line.split('\t')
        if len(parts) != 3:
            continue
        out.setdefault(parts[0], {})[parts[1]] = parts[2]
    return out


def zfs_exists(name):
    return zfs('list', '-H', '-o', 'name', '-t', 'all', name, check=False).returncode == 0


def zfs_num(props, key):
    try:
        return int(props.get(key, '0'))
    except ValueError:
        return 0


def zfs_mount_if_needed(name):
    p = zfs('get', '-Hp', '-o', 'value', 'mounted', name, check=False)
    if p.returncode != 0:
        return False
    if p.stdout.strip() != 'yes':
        q = zfs('mount', name, check=False)
        if q.returncode != 0 and 'already mounted' not in q.stderr:
            raise Fail(q.stderr.strip())
    return True


def zfs_destroy(name, recursive=False):
    if not zfs_exists(name):
        return
    args = ['destroy'] + (['-r'] if recursive else []) + [name]
    zfs(*args, busy_retry=True)


# ---------------------------------------------------------------------------
# zone configuration: index + XML

INDEX_HEADER = ('# DO NOT EDIT: this file is automatically generated by zoneadm(8)\n'
                '# and zonecfg(8).  Any manual changes will be lost.\n#\n')


def read_index():
    """[(name, state, path, uuid)] excluding the global zone."""
    entries = []
    try:
        with open(os.path.join(ZONES_ETC, 'index')) as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith('#'):
                    continue
                parts = line.split(':')
                if parts[0] == 'global':
                    continue
                while len(parts) < 4:
                    parts.append('')
                entries.append((parts[0], parts[1], parts[2], parts[3]))
    except FileNotFoundError:
        pass
    return entries


def write_index(entries):
    os.makedirs(ZONES_ETC, exist_ok=True)
    text = INDEX_HEADER + 'global:installed:/\n'
    for name, state, path, zuuid in entries:
        text += '%s:%s:%s:%s\n' % (name, state, path, zuuid)
    write_atomic(os.path.join(ZONES_ETC, 'index'), text)


def index_entry(name):
    for e in read_index():
        if e[0] == name or e[3] == name:
            return e
    return None


def set_index_state(name, state, path=None, zuuid=None):
    entries = read_index()
    out = []
    found = False
    for e in entries:
        if e[0] == name:
            found = True
            if state is None:
                continue
            e = (e[0], state, path or e[2], zuuid or e[3])
        out.append(e)
    if not found and state is not None:
        out.append((name, state, path or '', zuuid or ''))
    write_index(out)


def xml_path(name):
    return os.path.join(ZONES_ETC, name + '.xml')


# rctl aliases of zonecfg: alias -> (rctl name, action)
RCTL_ALIASES = {
    'cpu-shares': ('zone.cpu-shares', 'none'),
    'max-lwps': ('zone.max-lwps', 'deny'),
    'max-processes': ('zone.max-processes', 'deny'),
    'max-shm-memory': ('zone.max-shm-memory', 'deny'),
    'max-shm-ids': ('zone.max-shm-ids', 'deny'),
    'max-msg-ids': ('zone.max-msg-ids', 'deny'),
    'max-sem-ids': ('zone.max-sem-ids', 'deny'),
    'max-locked-memory': ('zone.max-locked-memory', 'deny'),
    'max-swap': ('zone.max-swap', 'deny'),
    'zfs-io-priority': ('zone.zfs-io-priority', 'none'),
}
MCAP_RCTLS = {'physical': 'zone.max-physical-memory', 'locked': 'zone.max-locked-memory',
              'swap': 'zone.max-swap'}
GLOBAL_PROPS = ('zonename', 'zonepath', 'brand', 'autoboot', 'bootargs', 'pool',
                'limitpriv', 'scheduling-class', 'ip-type', 'hostid', 'fs-allowed')
XML_ZONE_ATTRS = ('zonepath', 'autoboot', 'brand', 'bootargs', 'pool', 'limitpriv',
                  'scheduling-class', 'ip-type', 'hostid', 'fs-allowed')
NET_PROPS = ('address', 'allowed-address', 'physical', 'mac-addr', 'vlan-id',
             'global-nic', 'defrouter')
FS_PROPS = ('dir', 'special', 'raw', 'type')
FS_XML = {'dir': 'directory', 'special': 'special', 'raw': 'raw', 'type': 'type'}


class ZoneConfig:
    """In-memory zonecfg document (the subset SmartOS uses)."""

    def __init__(self, name):
        self.name = name
        self.props = {}          # zonepath, autoboot, brand, limitpriv, ip-type, ...
        self.debugid = None
        self.uuid = None
        self.fs = []             # {'dir','special','raw','type','options':[...]}
        self.nets = []           # {'props': {..}, 'attrs': [[name, value], ...]}
        self.devices = []        # {'match': str, 'attrs': [[name, value], ...]}
        self.rctls = []          # {'name': str, 'values': [(priv, limit, action)]}
        self.attrs = []          # {'name','type','value'}
        self.datasets = []       # {'name', 'alias'}

    # -- helpers used by vmadm
    def attr(self, name, default=None):
        for a in self.attrs:
            if a['name'] == name:
                return a['value']
        return default

    def set_attr(self, name, value, atype='string'):
        for a in self.attrs:
            if a['name'] == name:
                if value is None:
                    self.attrs.remove(a)
                else:
                    a['value'] = str(value)
                return
        if value is not None:
            self.attrs.append({'name': name, 'type': atype, 'value': str(value)})

    def rctl(self, name):
        for r in self.rctls:
            if r['name'] == name and r['values']:
                return r['values'][0][1]
        return None

    def set_rctl(self, name, limit, action=None):
        if action is None:
            action = 'none' if name in ('zone.cpu-shares', 'zone.zfs-io-priority') else 'deny'
        for r in self.rctls:
            if r['name'] == name:
                if limit is None:
                    self.rctls.remove(r)
                else:
                    r['values'] = [('privileged', str(limit), action)]
                return
        if limit is not None:
            self.rctls.append({'name': name, 'values': [('privileged', str(limit), action)]})

    # -- XML
    @classmethod
    def load(cls, name):
        path = xml_path(name)
        try:
            tree = ElementTree.parse(path)
        except FileNotFoundError:
            return None
        except ElementTree.ParseError as e:
            raise Fail('%s: %s' % (path, e))
        root = tree.getroot()
        zc = cls(root.get('name', name))
        for k in XML_ZONE_ATTRS:
            if root.get(k) is not None:
                zc.props[k] = root.get(k)
        zc.debugid = root.get('debugid')
        for el in root:
            if el.tag == 'filesystem':
                fs = {k: el.get(FS_XML[k], '') for k in FS_PROPS}
                fs['options'] = [o.get('name') for o in el if o.tag == 'fsoption']
                zc.fs.append(fs)
            elif el.tag == 'network':
                props = {k: el.get(k) for k in NET_PROPS if el.get(k) is not None}
                attrs = [[a.get('name'), a.get('value')] for a in el if a.tag == 'net-attr']
                zc.nets.append({'props': props, 'attrs': attrs})
            elif el.tag == 'device':
                attrs = [[a.get('name'), a.get('value')] for a in el if a.tag == 'net-attr']
                zc.devices.append({'match': el.get('match', ''), 'attrs': attrs})
            elif el.tag == 'rctl':
                vals = [(v.get('priv'), v.get('limit'), v.get('action'))
                        for v in el if v.tag == 'rctl-value']
                zc.rctls.append({'name': el.get('name'), 'values': vals})
            elif el.tag == 'attr':
                zc.attrs.append({'name': el.get('name'), 'type': el.get('type', 'string'),
                                 'value': el.get('value', '')})
            elif el.tag == 'dataset':
                zc.datasets.append({'name': el.get('name'), 'alias': el.get('alias', '')})
        e = index_entry(zc.name)
        if e and e[3]:
            zc.uuid = e[3]
        return zc

    def to_xml(self):
        lines = ['<?xml version="1.0" encoding="UTF-8"?>',
                 '<!DOCTYPE zone PUBLIC "-//Sun Microsystems Inc//DTD Zones//EN" '
                 '"file:///usr/share/lib/xml/dtd/zonecfg.dtd.1">',
                 '<!--',
                 '    DO NOT EDIT THIS FILE.  Use zonecfg(8) instead.',
                 '-->']
        attrs = 'name=%s' % quoteattr(self.name)
        for k in XML_ZONE_ATTRS:
            if self.props.get(k) not in (None, ''):
                attrs += ' %s=%s' % (k, quoteattr(self.props[k]))
        if self.debugid is not None:
            attrs += ' debugid=%s' % quoteattr(str(self.debugid))
        lines.append('<zone %s>' % attrs)
        for fs in self.fs:
            a = ' '.join('%s=%s' % (FS_XML[k], quoteattr(fs[k])) for k in FS_PROPS if fs.get(k))
            if fs.get('options'):
                lines.append('  <filesystem %s>' % a)
                for o in fs['options']:
                    lines.append('    <fsoption name=%s/>' % quoteattr(o))
                lines.append('  </filesystem>')
            else:
                lines.append('  <filesystem %s/>' % a)
        for n in self.nets:
            a = ' '.join('%s=%s' % (k, quoteattr(n['props'][k])) for k in NET_PROPS
                         if n['props'].get(k) not in (None, ''))
            if n['attrs']:
                lines.append('  <network %s>' % a)
                for k, v in n['attrs']:
                    lines.append('    <net-attr name=%s value=%s/>' % (quoteattr(k), quoteattr(v)))
                lines.append('  </network>')
            else:
                lines.append('  <network %s/>' % a)
        for d in self.devices:
            if d['attrs']:
                lines.append('  <device match=%s>' % quoteattr(d['match']))
                for k, v in d['attrs']:
                    lines.append('    <net-attr name=%s value=%s/>' % (quoteattr(k), quoteattr(v)))
                lines.append('  </device>')
            else:
                lines.append('  <device match=%s/>' % quoteattr(d['match']))
        for r in self.rctls:
            lines.append('  <rctl name=%s>' % quoteattr(r['name']))
            for priv, limit, action in r['values']:
                lines.append('    <rctl-value priv=%s limit=%s action=%s/>'
                             % (quoteattr(priv), quoteattr(limit), quoteattr(action)))
            lines.append('  </rctl>')
        for a in self.attrs:
            lines.append('  <attr name=%s type=%s value=%s/>'
                         % (quoteattr(a['name']), quoteattr(a['type']), quoteattr(a['value'])))
        for d in self.datasets:
            if d.get('alias'):
                lines.append('  <dataset name=%s alias=%s/>' % (quoteattr(d['name']),
                                                                quoteattr(d['alias'])))
            else:
                lines.append('  <dataset name=%s/>' % quoteattr(d['name']))
        lines.append('</zone>')
        return '\n'.join(lines) + '\n'

    def save(self, state=None):
        """Write the XML; create/keep the index entry (state given for new zones)."""
        os.makedirs(ZONES_ETC, exist_ok=True)
        if self.debugid is None:
            self.debugid = next_debugid()
        write_atomic(xml_path(self.name), self.to_xml())
        e = index_entry(self.name)
        zuuid = self.uuid or (e[3] if e else '') or \
            (self.name if is_uuid(self.name) else str(uuidlib.uuid4()))
        self.uuid = zuuid
        if e is None:
            set_index_state(self.name, state or 'configured', self.props.get('zonepath', ''), zuuid)
        else:
            set_index_state(self.name, state or e[1], self.props.get('zonepath', e[2]), zuuid)

    # -- zonecfg export
    def export(self):
        out = ['create -b']
        if self.props.get('zonepath'):
            out.append('set zonepath=%s' % self.props['zonepath'])
        if self.props.get('brand'):
            out.append('set brand=%s' % self.props['brand'])
        out.append('set autoboot=%s' % ('true' if self.props.get('autoboot') == 'true'
                                        else 'false'))
        for k in ('bootargs', 'pool', 'limitpriv', 'scheduling-class', 'ip-type', 'hostid',
                  'fs-allowed'):
            if self.props.get(k):
                out.append('set %s=%s' % (k, self.props[k]))
        if self.uuid:
            out.append('set uuid=%s' % self.uuid)
        for fs in self.fs:
            out.append('add fs')
            for k in FS_PROPS:
                if fs.get(k):
                    out.append('set %s=%s' % (k, quoteit(fs[k])))
            for o in fs.get('options', []):
                out.append('add options %s' % (('"%s"' % o) if '=' in o else o))
            out.append('end')
        for n in self.nets:
            out.append('add net')
            for k in NET_PROPS:
                if n['props'].get(k):
                    out.append('set %s=%s' % (k, quoteit(n['props'][k])))
            for k, v in n['attrs']:
                out.append('add property (name=%s,value="%s")' % (k, v))
            out.append('end')
        for d in self.devices:
            out.append('add device')
            out.append('set match=%s' % quoteit(d['match']))
            for k, v in d['attrs']:
                out.append('add property (name=%s,value="%s")' % (k, v))
            out.append('end')
        for r in self.rctls:
            out.append('add rctl')
            out.append('set name=%s' % r['name'])
            for priv, limit, action in r['values']:
                out.append('add value (priv=%s,limit=%s,action=%s)' % (priv, limit, action))
            out.append('end')
        for a in self.attrs:
            out.append('add attr')
            out.append('set name=%s' % quoteit(a['name']))
            out.append('set type=%s' % quoteit(a['type']))
            if a['value']:
                out.append('set value=%s' % quoteit(a['value']))
            out.append('end')
        for d in self.datasets:
            out.append('add dataset')
            out.append('set name=%s' % quoteit(d['name']))
            if d.get('alias'):
                out.append('set alias=%s' % quoteit(d['alias']))
            out.append('end')
        return '\n'.join(out) + '\n'


def quoteit(s):
    return '"%s"' % s if ' ' in s else s


def next_debugid():
    hi = 0
    try:
        names = os.listdir(ZONES_ETC)
    except FileNotFoundError:
        names = []
    for n in names:
        if not n.endswith('.xml'):
            continue
        try:
            root = ElementTree.parse(os.path.join(ZONES_ETC, n)).getroot()
            hi = max(hi, int(root.get('debugid', '0')))
        except (ElementTree.ParseError, ValueError, OSError):
            pass
    return hi + 1


def parse_size(text):
    """zonecfg memory sizes: 128m, 1g, 1024k or bytes -> bytes."""
    m = re.match(r'^(\d+(?:\.\d+)?)([kKmMgGtT]?)[bB]?$', text.strip())
    if not m:
        raise Fail('Invalid size: %s' % text)
    mult = {'': 1, 'k': 1024, 'm': MIB, 'g': GIB, 't': 1024 * GIB}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


# ---------------------------------------------------------------------------
# zonecfg command language

class ZonecfgSyntax(Exception):
    pass


def zc_tokenize(text):
    """Split zonecfg input into commands (lists of tokens).

    Tokens: words; '=' glued values (set prop=value: value runs to whitespace/';');
    parenthesised complex values become ('complex', [(k, v), ...]).
    """
    cmds = []
    cur = []
    i = 0
    n = len(text)

    def read_quoted(j):
        j += 1
        buf = ''
        while j < n and text[j] != '"':
            if text[j] == '\\' and j + 1 < n:
                j += 1
            buf += text[j]
            j += 1
        if j >= n:
            raise ZonecfgSyntax('unterminated quoted string')
        return buf, j + 1

    while i < n:
        c = text[i]
        if c == '#' and not cur:
            while i < n and text[i] != '\n':
                i += 1
            continue
        if c in ' \t\r':
            i += 1
            continue
        if c in ';\n':
            if cur:
                cmds.append(cur)
                cur = []
            i += 1
            continue
        if c == '(':
            j = i + 1
            pairs = []
            while True:
                while j < n and text[j] in ' \t':
                    j += 1
                if j < n and text[j] == ')':
                    j += 1
                    break
                m = re.match(r'([A-Za-z_-]+)\s*=\s*', text[j:])
                if not m:
                    raise ZonecfgSyntax('syntax error in complex value')
                key = m.group(1)
                j += m.end()
                if j < n and text[j] == '"':
                    val, j = read_quoted(j)
                else:
                    k = j
                    while j < n and text[j] not in ',)\n':
                        j += 1
                    val = text[k:j].strip()
                pairs.append((key, val))
                while j < n and text[j] in ' \t':
                    j += 1
                if j < n and text[j] == ',':
                    j += 1
                    continue
                if j < n and text[j] == ')':
                    j += 1
                    break
                raise ZonecfgSyntax('syntax error in complex value')
            cur.append(('complex', pairs))
            i = j
            continue
        if c == '"':
            val, i = read_quoted(i)
            cur.append(val)
            continue
        j = i
        while j < n and text[j] not in ' \t\r\n;=("':
            j += 1
        word = text[i:j]
        if j < n and text[j] == '=':
            j += 1
            if j < n and text[j] == '"':
                val, j = read_quoted(j)
            else:
                k = j
                while j < n and text[j] not in ' \t\r\n;':
                    j += 1
                val = text[k:j]
            cur.append(('assign', word, val))
            i = j
            continue
        cur.append(word)
        i = j
    if cur:
        cmds.append(cur)
    return cmds


class ZonecfgSession:
    """Executes zonecfg commands against one zone, like zonecfg -z ZONE."""

    RESOURCES = ('fs', 'net', 'device', 'rctl', 'attr', 'dataset', 'capped-memory',
                 'capped-cpu')

    def __init__(self, zone, out):
        self.zone = zone
        self.out = out
        self.cfg = ZoneConfig.load(zone)
        self.exists = self.cfg is not None
        self.dirty = False
        self.scope = None       # (restype, dict, original-or-None)
        self.errors = 0

    def err(self, msg):
        self.errors += 1
        sys.stderr.write(msg + '\n')

    def need_cfg(self):
        if self.cfg is None:
            raise Fail('%s: No such zone configured' % self.zone)
        return self.cfg

    def run_commands(self, cmds):
        for cmd in cmds:
            self.execute(cmd)
            if self.errors:
                # non-interactive: stop at the first error and save nothing
                sys.stderr.write('%s: configuration not saved\n' % self.zone)
                return 1
        if self.scope is not None:
            self.err('%s: resource incomplete; use end or cancel' % self.zone)
        if self.dirty:
            self.commit()
        return 0 if self.errors == 0 else 1

    def commit(self):
        cfg = self.need_cfg()
        if not cfg.props.get('zonepath'):
            raise Fail('zonepath cannot be empty.')
        with Lock():
            cfg.save()
        self.dirty = False

    def execute(self, cmd):
        verb = cmd[0] if isinstance(cmd[0], str) else None
        if verb is None:
            return self.err('syntax error')
        args = cmd[1:]
        fn = getattr(self, 'cmd_' + verb.replace('-', '_'), None)
        if fn is None:
            return self.err('%s: Unknown command' % verb)
        fn(args)

    # -- global scope
    def cmd_create(self, args):
        force = '-F' in args
        if self.exists and not force:
            raise Fail('Zone %s already exists; use create -F to overwrite.' % self.zone)
        self.cfg = ZoneConfig(self.zone)
        self.cfg.props['ip-type'] = 'shared'
        self.cfg.props['autoboot'] = 'false'
        self.dirty = True

    def cmd_set(self, args):
        if len(args) != 1 or not isinstance(args[0], tuple) or args[0][0] != 'assign':
            return self.err('set: syntax error (use set <property-name>=<property-value>)')
        _, prop, value = args[0]
        if self.scope is not None:
            return self.scope_set(prop, value)
        cfg = self.need_cfg()
        if prop == 'zonename':
            cfg.name = value
        elif prop == 'uuid':
            cfg.uuid = value
        elif prop == 'autoboot':
            if value not in ('true', 'false'):
                return self.err('%s value must be true or false' % prop)
            cfg.props['autoboot'] = value
        elif prop in RCTL_ALIASES:
            rname, action = RCTL_ALIASES[prop]
            cfg.set_rctl(rname, value, action)
        elif prop in GLOBAL_PROPS:
            cfg.props[prop] = value
        else:
            return self.err('%s: unknown property' % prop)
        self.dirty = True

    def cmd_clear(self, args):
        if not args or not isinstance(args[0], str):
            return self.err('clear: syntax error')
        prop = args[0]
        if self.scope is not None:
            self.scope[1].pop(prop, None)
            return
        cfg = self.need_cfg()
        if prop in RCTL_ALIASES:
            cfg.set_rctl(RCTL_ALIASES[prop][0], None)
        else:
            cfg.props.pop(prop, None)
        self.dirty = True

    def cmd_add(self, args):
        if self.scope is not None:
            return self.scope_add(args)
        self.need_cfg()
        if not args or args[0] not in self.RESOURCES:
            return self.err('add: unknown resource type')
        rt = args[0]
        res = {'props': {}, 'attrs': [], 'values': [], 'options': []}
        if rt == 'capped-memory':
            res['mcap'] = {}
        self.scope = (rt, res, None)

    def matches(self, rt, item, conds):
        for key, val in conds:
            if rt == 'net':
                have = item['props'].get(key)
            elif rt == 'device':
                have = item['match'] if key == 'match' else None
            elif rt == 'fs':
                have = item.get(key)
            else:
                have = item.get(key)
            if have != val:
                return False
        return True

    def find(self, rt, conds):
        cfg = self.need_cfg()
        lst = {'net': cfg.nets, 'device': cfg.devices, 'rctl': cfg.rctls, 'attr': cfg.attrs,
               'dataset': cfg.datasets, 'fs': cfg.fs}.get(rt)
        if lst is None:
            return None, []
        return lst, [x for x in lst if self.matches(rt, x, conds)]

    def cmd_select(self, args):
        self.need_cfg()
        if not args or args[0] not in self.RESOURCES:
            return self.err('select: unknown resource type')
        rt = args[0]
        conds = [(a[1], a[2]) for a in args[1:] if isinstance(a, tuple) and a[0] == 'assign']
        if rt in ('capped-memory', 'capped-cpu'):
            self.scope = (rt, {'props': {}, 'mcap': {}}, 'select')
            return
        lst, found = self.find(rt, conds)
        if len(found) == 0:
            return self.err('select: No such resource with that id')
        if len(found) > 1:
            return self.err('select: More than one resource matches')
        item = found[0]
        res = self.to_scope(rt, item)
        self.scope = (rt, res, item)

    def to_scope(self, rt, item):
        if rt == 'net':
            return {'props': dict(item['props']), 'attrs': [list(a) for a in item['attrs']]}
        if rt == 'device':
            return {'props': {'match': item['match']}, 'attrs': [list(a) for a in item['attrs']]}
        if rt == 'rctl':
            return {'props': {'name': item['name']}, 'values': list(item['values'])}
        if rt == 'attr':
            return {'props': {'name': item['name'], 'type': item['type'], 'value': item['value']}}
        if rt == 'dataset':
            return {'props': {'name': item['name'], 'alias': item.get('alias', '')}}
        if rt == 'fs':
            return {'props': {k: item.get(k, '') for k in FS_PROPS},
                    'options': list(item.get('options', []))}
        return {'props': {}}

    def cmd_remove(self, args):
        if self.scope is not None:
            return self.scope_remove(args)
        self.need_cfg()
        args = [a for a in args if a != '-F']
        if not args or args[0] not in self.RESOURCES:
            return self.err('remove: unknown resource type')
        rt = args[0]
        conds = [(a[1], a[2]) for a in args[1:] if isinstance(a, tuple) and a[0] == 'assign']
        if rt == 'capped-cpu':
            self.cfg.set_rctl('zone.cpu-cap', None)
            self.dirty = True
            return
        if rt == 'capped-memory':
            for r in MCAP_RCTLS.values():
                self.cfg.set_rctl(r, None)
            self.dirty = True
            return
        lst, found = self.find(rt, conds)
        if not found:
            return self.err('remove %s: No such resource with that id' % rt)
        for x in found:
            lst.remove(x)
        self.dirty = True

    # -- resource scope
    def scope_set(self, prop, value):
        rt, res, _ = self.scope
        if rt == 'capped-memory':
            if prop not in MCAP_RCTLS:
                return self.err('%s: unknown property' % prop)
            res['mcap'][prop] = parse_size(value)
            return
        if rt == 'capped-cpu':
            if prop != 'ncpus':
                return self.err('%s: unknown property' % prop)
            res['props']['ncpus'] = value
            return
        res['props'][prop] = value

    def scope_add(self, args):
        rt, res, _ = self.scope
        if len(args) == 2 and args[0] == 'property' and isinstance(args[1], tuple) \
                and args[1][0] == 'complex' and rt in ('net', 'device'):
            d = dict(args[1][1])
            if 'name' not in d or 'value' not in d:
                return self.err('property: name and value required')
            res['attrs'] = [a for a in res['attrs'] if a[0] != d['name']]
            res['attrs'].append([d['name'], d['value']])
            return
        if len(args) == 2 and args[0] == 'value' and isinstance(args[1], tuple) \
                and args[1][0] == 'complex' and rt == 'rctl':
            d = dict(args[1][1])
            res['values'].append((d.get('priv', 'privileged'), d.get('limit', ''),
                                  d.get('action', 'deny')))
            return
        if len(args) == 2 and args[0] == 'options' and rt == 'fs':
            res['options'].append(args[1] if isinstance(args[1], str) else '')
            return
        self.err('add: syntax error in resource scope')

    def scope_remove(self, args):
        rt, res, _ = self.scope
        if len(args) == 2 and args[0] == 'property' and isinstance(args[1], tuple):
            d = dict(args[1][1])
            res['attrs'] = [a for a in res['attrs'] if a[0] != d.get('name')]
            return
        if len(args) == 2 and args[0] == 'value' and isinstance(args[1], tuple):
            d = dict(args[1][1])
            res['values'] = [v for v in res['values'] if v[1] != d.get('limit')]
            return
        self.err('remove: syntax error in resource scope')

    def cmd_cancel(self, args):
        self.scope = None

    def cmd_end(self, args):
        if self.scope is None:
            return self.err('end: not in resource scope')
        cfg = self.need_cfg()
        rt, res, orig = self.scope
        p = res.get('props', {})
        if rt == 'capped-memory':
            for k, v in res['mcap'].items():
                cfg.set_rctl(MCAP_RCTLS[k], v, 'deny')
        elif rt == 'capped-cpu':
            if 'ncpus' in p:
                cfg.set_rctl('zone.cpu-cap', int(round(float(p['ncpus']) * 100)), 'deny')
        elif rt == 'net':
            item = {'props': {k: p[k] for k in NET_PROPS if p.get(k)}, 'attrs': res['attrs']}
            self.replace(cfg.nets, orig, item)
        elif rt == 'device':
            if not p.get('match'):
                return self.err('match not specified')
            self.replace(cfg.devices, orig, {'match': p['match'], 'attrs': res['attrs']})
        elif rt == 'rctl':
            if not p.get('name'):
                return self.err('name not specified')
            self.replace(cfg.rctls, orig, {'name': p['name'], 'values': res['values']})
        elif rt == 'attr':
            if not p.get('name'):
                return self.err('name not specified')
            item = {'name': p['name'], 'type': p.get('type', 'string'),
                    'value': p.get('value', '')}
            if orig is None:
                for a in cfg.attrs:
                    if a['name'] == item['name']:
                        self.scope = None
                        return self.err('Cannot add attr: resource already exists')
            self.replace(cfg.attrs, orig, item)
        elif rt == 'dataset':
            if not p.get('name'):
                return self.err('name not specified')
            self.replace(cfg.datasets, orig, {'name': p['name'], 'alias': p.get('alias', '')})
        elif rt == 'fs':
            item = {k: p.get(k, '') for k in FS_PROPS}
            item['options'] = res.get('options', [])
            self.replace(cfg.fs, orig, item)
        self.scope = None
        self.dirty = True

    @staticmethod
    def replace(lst, orig, item):
        if orig is not None and orig in lst:
            lst[lst.index(orig)] = item
        else:
            lst.append(item)

    # -- misc
    def cmd_commit(self, args):
        if self.dirty:
            self.commit()

    def cmd_verify(self, args):
        self.need_cfg()

    def cmd_exit(self, args):
        pass

    def cmd_revert(self, args):
        self.cfg = ZoneConfig.load(self.zone)
        self.dirty = False

    def cmd_export(self, args):
        cfg = self.need_cfg()
        text = cfg.export()
        if len(args) >= 2 and args[0] == '-f':
            with open(args[1], 'w') as f:
                f.write(text)
        else:
            self.out.write(text)

    def cmd_delete(self, args):
        self.need_cfg()
        e = index_entry(self.zone)
        if e and e[1] not in ('configured', 'incomplete'):
            raise Fail('Zone %s not in configured state; delete not allowed.' % self.zone)
        with Lock():
            try:
                os.unlink(xml_path(self.zone))
            except FileNotFoundError:
                pass
            set_index_state(self.zone, None)
        self.cfg = None
        self.dirty = False

    def cmd_info(self, args):
        cfg = self.need_cfg()
        w = self.out.write
        want = args[0] if args and isinstance(args[0], str) else None
        conds = [(a[1], a[2]) for a in args[1:] if isinstance(a, tuple) and a[0] == 'assign']
        if want is None:
            w('zonename: %s\n' % cfg.name)
            for k in ('zonepath', 'brand', 'autoboot', 'bootargs', 'pool', 'limitpriv',
                      'scheduling-class', 'ip-type', 'hostid', 'fs-allowed'):
                w('%s: %s\n' % (k, cfg.props.get(k, '')))
            for alias, (rname, _) in sorted(RCTL_ALIASES.items()):
                v = cfg.rctl(rname)
                if v is not None:
                    w('[%s: %s]\n' % (alias, v))
        elif want in ('zonename', 'zonepath', 'brand', 'autoboot', 'bootargs', 'pool',
                      'limitpriv', 'scheduling-class', 'ip-type', 'hostid', 'fs-allowed'):
            w('%s: %s\n' % (want, cfg.name if want == 'zonename' else cfg.props.get(want, '')))
            return
        elif want == 'uuid':
            w('uuid: %s\n' % (cfg.uuid or ''))
            return
        for rt in ('fs', 'net', 'device', 'rctl', 'attr', 'dataset'):
            if want is not None and want != rt:
                continue
            _, items = self.find(rt, conds)
            for item in items:
                w('%s:\n' % rt)
                if rt == 'net':
                    for k in NET_PROPS:
                        v = item['props'].get(k)
                        w('\t%s: %s\n' % (k, v) if v else '\t%s not specified\n' % k)
                    for k, v in item['attrs']:
                        w('\tproperty: (name=%s,value="%s")\n' % (k, v))
                elif rt == 'device':
                    w('\tmatch: %s\n' % item['match'])
                    for k, v in item['attrs']:
                        w('\tproperty: (name=%s,value="%s")\n' % (k, v))
                elif rt == 'rctl':
                    w('\tname: %s\n' % item['name'])
                    for priv, limit, action in item['values']:
                        w('\tvalue: (priv=%s,limit=%s,action=%s)\n' % (priv, limit, action))
                elif rt == 'attr':
                    w('\tname: %s\n\ttype: %s\n\tvalue: %s\n'
                      % (item['name'], item['type'], item['value']))
                elif rt == 'dataset':
                    w('\tname: %s\n' % item['name'])
                elif rt == 'fs':
                    for k in FS_PROPS:
                        w('\t%s: %s\n' % (k, item.get(k, '')))
                    w('\toptions: [%s]\n' % ','.join(item.get('options', [])))


def cmd_zonecfg(argv):
    zone = None
    by_uuid = False
    cmdfile = None
    rest = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == '-z' and i + 1 < len(argv):
            zone = argv[i + 1]
            i += 2
        elif a == '-u' and i + 1 < len(argv):
            zone = argv[i + 1]
            by_uuid = True
            i += 2
        elif a == '-f' and i + 1 < len(argv) and not rest:
            cmdfile = argv[i + 1]
            i += 2
        else:
            rest = argv[i:]
            break
    if zone is None:
        raise Fail('usage:\tzonecfg -z <zone> (-f <command-file> | <command>)', 2)
    if by_uuid:
        e = index_entry(zone)
        if e is None:
            raise Fail('%s: No such zone configured' % zone)
        zone = e[0]
    session = ZonecfgSession(zone, sys.stdout)
    try:
        if cmdfile is not None:
            with open(cmdfile) as f:
                text = f.read()
        elif rest:
            text = ' '.join(rest)
        else:
            text = sys.stdin.read()
        cmds = zc_tokenize(text)
    except ZonecfgSyntax as e:
        raise Fail('%s: %s' % (cmdfile or 'zonecfg', e))
    except OSError as e:
        raise Fail('zonecfg: %s: %s' % (cmdfile, e.strerror))
    return session.run_commands(cmds)


# ---------------------------------------------------------------------------
# run state (what is "running": /run/zlab is a private tmpfs per node)

def runfile(name):
    return os.path.join(RUN_DIR, 'zones', name + '.json')


def run_state(name):
    return read_json(runfile(name))


def pid_alive(pid):
    if not pid:
        return False
    try:
        with open('/proc/%d/stat' % pid) as f:
            stat = f.read()
    except OSError:
        return False
    state = stat.rsplit(')', 1)[-1].split()[0]
    return state not in ('Z', 'X')


def zone_state(entry):
    """zoneadm state of an index entry: running if booted, else the index state."""
    if entry is None:
        return None
    if entry[1] == 'installed' and run_state(entry[0]) is not None:
        return 'running'
    return entry[1]


def next_zoneid():
    path = os.path.join(RUN_DIR, 'next_zoneid')
    try:
        with open(path) as f:
            n = int(f.read().strip() or '1')
    except (OSError, ValueError):
        n = 1
    write_atomic(path, str(n + 1))
    return n


# ---------------------------------------------------------------------------
# vmadm object (what `vmadm get` prints), built like vmload does: zone XML,
# zoneadm state, zfs properties, JSON files under <zonepath>/config, sysinfo.

def unbase64(v):
    try:
        return base64.b64decode(v).decode('utf-8')
    except (ValueError, UnicodeDecodeError):
        return v


def fix_bool(v):
    return v == 'true' if v in ('true', 'false') else v


def numberify(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return js_number(f)


def unmangle_mem(v):
    try:
        return js_number(int(v) / MIB)
    except (TypeError, ValueError):
        return v


def split_commas(v):
    return [x for x in v.split(',') if x]


TRANSLATE = {None: lambda v: v, 'b64': unbase64, 'bool': fix_bool, 'num': numberify,
             'mem': unmangle_mem, 'list': split_commas}

ATTR_MAP = {
    'vm-version': ('v', 'num'),
    'create-timestamp': ('create_timestamp', None),
    'dataset-uuid': ('image_uuid', None),
    'billing-id': ('billing_id', None),
    'owner-uuid': ('owner_uuid', None),
    'package-name': ('package_name', None),
    'package-version': ('package_version', None),
    'tmpfs': ('tmpfs', 'num'),
    'hostname': ('hostname', None),
    'dns-domain': ('dns_domain', None),
    'default-gateway': ('default_gateway', None),
    'archive-on-delete': ('archive_on_delete', 'bool'),
    'maintain-resolvers': ('maintain_resolvers', 'bool'),
    'firewall-enabled': ('firewall_enabled', 'bool'),
    'resolvers': ('resolvers', 'list'),
    'alias': ('alias', 'b64'),
    'do-not-inventory': ('do_not_inventory', 'bool'),
    'ram': ('ram', 'num'),
    'vcpus': ('vcpus', 'num'),
    'cpu-type': ('cpu_type', None),
    'vm-autoboot': ('vm_autoboot', 'bool'),
    'boot': ('boot', None),
    'bootrom': ('bootrom', None),
    'com1': ('com1', None),
    'com2': ('com2', None),
    'flexible-disk-size': ('flexible_disk_size', 'num'),
    'restart-init': ('restart_init', 'bool'),
    'init-name': ('init_name', None),
    'kernel-version': ('kernel_version', None),
    'docker': ('docker', 'bool'),
    'internal-metadata-namespaces': ('internal_metadata_namespaces', 'list'),
    'provisioning': ('provisioning', 'bool'),
    'failed': ('failed', None),
    'disk-driver': ('disk_driver', None),
    'nic-driver': ('nic_driver', None),
    'vga': ('vga', None),
    'vnc-port': ('vnc_port', 'num'),
    'zlog-mode': ('zlog_mode', None),
    'zlog-name': ('zlog_name', None),
    'zlab-write-rate': ('zlab_write_rate', 'num'),
}
ATTR_BY_KEY = {v[0]: (k, v[1]) for k, v in ATTR_MAP.items()}
RCTL_MAP = {
    'zone.cpu-shares': ('cpu_shares', 'num'),
    'zone.cpu-cap': ('cpu_cap', 'num'),
    'zone.max-lwps': ('max_lwps', 'num'),
    'zone.max-msg-ids': ('max_msg_ids', 'num'),
    'zone.max-sem-ids': ('max_sem_ids', 'num'),
    'zone.max-shm-ids': ('max_shm_ids', 'num'),
    'zone.max-shm-memory': ('max_shm_memory', 'mem'),
    'zone.zfs-io-priority': ('zfs_io_priority', 'num'),
    'zone.max-physical-memory': ('max_physical_memory', 'mem'),
    'zone.max-locked-memory': ('max_locked_memory', 'mem'),
    'zone.max-swap': ('max_swap', 'mem'),
}
RCTL_BY_KEY = {v[0]: (k, v[1]) for k, v in RCTL_MAP.items()}
NET_MAP = {'physical': ('interface', None), 'mac-addr': ('mac', 'mac'),
           'vlan-id': ('vlan_id', 'num'), 'global-nic': ('nic_tag', None)}
NET_ATTR_MAP = {
    'ip': None, 'ips': 'list', 'netmask': None, 'gateway': None, 'gateways': 'list',
    'network_uuid': None, 'primary': 'bool', 'model': None, 'mtu': 'num',
    'allow_dhcp_spoofing': 'bool', 'allow_ip_spoofing': 'bool', 'allow_mac_spoofing': 'bool',
    'allow_restricted_traffic': 'bool', 'allow_unfiltered_promisc': 'bool',
    'allowed_ips': 'list', 'dhcp_server': 'bool', 'vrrp_vrid': 'num', 'vrrp_primary_ip': None,
}
DISK_ATTR_MAP = {
    'boot': ('boot', 'bool'), 'model': ('model', None), 'media': ('media', None),
    'image-uuid': ('image_uuid', None), 'image-size': ('image_size', 'num'),
    'image-name': ('image_name', None), 'uuid': ('uuid', None), 'pci-slot': ('pci_slot', None),
    'guest-block-size': ('guest_block_size', None), 'notrim': ('notrim', 'bool'),
}
ZVOL_PREFIX = '/dev/zvol/rdsk/'


def fix_mac(mac):
    try:
        return ':'.join('%02x' % int(p, 16) for p in mac.split(':'))
    except ValueError:
        return mac


def ruin_mac(mac):
    """zonecfg stores MACs without leading zeros in each octet."""
    return ':'.join((p.lstrip('0') or '0') for p in mac.lower().split(':'))


def iface_index(name):
    m = re.match(r'^net(\d+)$', name or '')
    return int(m.group(1)) if m else 0


def disk_index(path):
    m = re.match(r'^.*[-/]disk(\d+)$', path or '')
    return int(m.group(1)) if m else 0


def disk_dataset(path):
    if path.startswith(ZVOL_PREFIX):
        return path[len(ZVOL_PREFIX):]
    if path.startswith('/dev/zvol/dsk/'):
        return path[len('/dev/zvol/dsk/'):]
    return None


class Ctx:
    """Caches what several VM loads share (one zfs get for the whole pool)."""

    def __init__(self):
        self._zfs = None
        self._sysinfo = None

    @property
    def zfs(self):
        if self._zfs is None:
            self._zfs = zfs_props()
        return self._zfs

    @property
    def sysinfo(self):
        if self._sysinfo is None:
            self._sysinfo = sysinfo()
        return self._sysinfo


def load_vm(name, ctx=None, with_zfs=True):
    """The vmadm object of zone `name` (uuid), or None if no such zone."""
    entry = index_entry(name)
    if entry is None:
        return None
    cfg = ZoneConfig.load(entry[0])
    if cfg is None:
        return None
    ctx = ctx or Ctx()
    brand = cfg.props.get('brand', 'joyent')
    hvm = brand in HVM_BRANDS
    vm = {}
    vm['zonename'] = cfg.name
    vm['autoboot'] = cfg.props.get('autoboot') == 'true'
    vm['brand'] = brand
    if cfg.props.get('limitpriv'):
        vm['limit_priv'] = cfg.props['limitpriv']
    for r in cfg.rctls:
        if r['name'] in RCTL_MAP and r['values']:
            key, tr = RCTL_MAP[r['name']]
            vm[key] = TRANSLATE[tr](r['values'][0][1])
    for a in cfg.attrs:
        if a['name'] in ATTR_MAP:
            key, tr = ATTR_MAP[a['name']]
            vm[key] = TRANSLATE[tr](a['value'])
    if hvm:
        vm['autoboot'] = vm.pop('vm_autoboot', False)
    nics = []
    for n in cfg.nets:
        nic = {}
        for k in NET_PROPS:
            if k in NET_MAP and n['props'].get(k) is not None:
                key, tr = NET_MAP[k]
                v = n['props'][k]
                nic[key] = fix_mac(v) if tr == 'mac' else TRANSLATE[tr](v)
        for k, v in n['attrs']:
            if k in NET_ATTR_MAP:
                nic[k] = TRANSLATE[NET_ATTR_MAP[k]](v)
        nics.append(nic)
    nics.sort(key=lambda x: iface_index(x.get('interface')))
    vm['nics'] = nics
    if hvm or cfg.devices:
        disks = []
        for d in cfg.devices:
            disk = {'path': d['match']}
            for k, v in d['attrs']:
                if k in DISK_ATTR_MAP:
                    key, tr = DISK_ATTR_MAP[k]
                    disk[key] = TRANSLATE[tr](v)
            disks.append(disk)
        disks.sort(key=lambda x: disk_index(x.get('path')))
        vm['disks'] = disks
    if cfg.datasets:
        vm['datasets'] = [d['name'] for d in cfg.datasets]
    vm['uuid'] = entry[3] or cfg.name
    zstate = zone_state(entry)
    vm['zone_state'] = zstate
    vm['zonepath'] = cfg.props.get('zonepath', entry[2])
    vm['hvm'] = hvm
    rs = run_state(cfg.name) if zstate == 'running' else None
    if rs:
        vm['zoneid'] = rs.get('zoneid')
    zonepath = vm['zonepath']
    mtimes = []
    for p in (xml_path(cfg.name), os.path.join(zonepath, 'config', 'metadata.json'),
              os.path.join(zonepath, 'config', 'routes.json'),
              os.path.join(zonepath, 'config', 'tags.json')):
        try:
            mtimes.append(os.stat(p).st_mtime)
        except OSError:
            pass
    if mtimes:
        vm['last_modified'] = iso_from_epoch(int(max(mtimes)))
    if 'firewall_enabled' not in vm:
        vm['firewall_enabled'] = False
    si = ctx.sysinfo
    if si.get('UUID'):
        vm['server_uuid'] = si['UUID']
    if si.get('Datacenter Name'):
        vm['datacenter_name'] = si['Datacenter Name']
    if si.get('Live Image'):
        vm['platform_buildstamp'] = si['Live Image']
    if zstate == 'installed':
        vm['state'] = 'stopped'
    else:
        vm['state'] = zstate
    if vm['state'] == 'stopped' and vm.get('provisioning') is True:
        vm['state'] = 'provisioning'
    if vm.get('failed'):
        vm['state'] = 'failed'
    if rs:
        vm['boot_timestamp'] = iso_from_epoch(int(rs.get('boot_time', 0)))
        if pid_alive(rs.get('writer_pid')):
            vm['pid'] = rs['writer_pid']
    if not hvm and 'resolvers' not in vm:
        vm['resolvers'] = []
    md = read_json(os.path.join(zonepath, 'config', 'metadata.json'), {}) or {}
    vm['customer_metadata'] = md.get('customer_metadata', {})
    vm['internal_metadata'] = md.get('internal_metadata', {})
    vm['routes'] = read_json(os.path.join(zonepath, 'config', 'routes.json'), {}) or {}
    vm['tags'] = read_json(os.path.join(zonepath, 'config', 'tags.json'), {}) or {}
    if with_zfs:
        add_zfs_properties(vm, ctx.zfs)
    return vm


def add_zfs_properties(vm, zprops):
    mounts = {}
    for name, p in zprops.items():
        mp = p.get('mountpoint')
        if mp and mp not in ('-', 'none', 'legacy'):
            mounts.setdefault(mp, name)
    zonepath = vm['zonepath']
    ds = mounts.get(zonepath)
    if ds is None and zonepath.lstrip('/') in zprops:
        ds = zonepath.lstrip('/')
    if ds is not None:
        p = zprops[ds]
        snap = zprops.get(ds + '@indestructible')
        if snap and zfs_num(snap, 'userrefs') > 0:
            vm['indestructible_zoneroot'] = True
        if vm['brand'] == 'bhyve':
            vm['quota'] = js_number(zfs_num(p, 'refquota') / GIB)
        else:
            vm['quota'] = js_number(zfs_num(p, 'quota') / GIB)
        if 'create_timestamp' not in vm and p.get('creation'):
            vm['create_timestamp'] = iso_from_epoch(zfs_num(p, 'creation'))
        if p.get('compression') not in (None, 'off', '-'):
            vm['zfs_root_compression'] = p['compression']
        if p.get('recordsize') not in (None, '-'):
            vm['zfs_root_recsize'] = zfs_num(p, 'recordsize')
        vm['zfs_filesystem'] = ds
        vm['zpool'] = ds.split('/')[0]
        delegated = ds + '/data'
        if delegated in zprops:
            dsnap = zprops.get(delegated + '@indestructible')
            if dsnap and zfs_num(dsnap, 'userrefs') > 0:
                vm['indestructible_delegated'] = True
        snaps = []
        prefix = ds + '@vmsnap-'
        for name, sp in zprops.items():
            if name.startswith(prefix):
                snaps.append({'name': name[len(prefix):],
                              'size': js_number(zfs_num(sp, 'used') / MIB),
                              'created_at': iso_from_epoch(zfs_num(sp, 'creation'))})
        snaps.sort(key=lambda s: s['created_at'], reverse=True)
        vm['snapshots'] = snaps
    for d in vm.get('disks', []):
        dname = disk_dataset(d.get('path', ''))
        if dname and dname in zprops:
            p = zprops[dname]
            d['zfs_filesystem'] = dname
            d['zpool'] = dname.split('/')[0]
            d['compression'] = p.get('compression', 'off')
            d['refreservation'] = js_number(-(-zfs_num(p, 'refreservation') // MIB))
            if p.get('type') == 'volume':
                d['size'] = js_number(zfs_num(p, 'volsize') / MIB)
                d['block_size'] = zfs_num(p, 'volblocksize') or 8192
            else:
                # lab: disks are filesystems (zfs-fuse has no zvols); refquota stands in for
                # volsize
                d['size'] = js_number(zfs_num(p, 'refquota') / MIB)
                d['block_size'] = 8192
        else:
            d['missing'] = True


def all_vm_names():
    return [e[0] for e in read_index()]


def load_all(ctx=None, with_zfs=True):
    ctx = ctx or Ctx()
    vms = []
    for name in all_vm_names():
        vm = load_vm(name, ctx, with_zfs=with_zfs)
        if vm is not None:
            vms.append(vm)
    return vms


def writer_path(vm):
    """Where the workload writer of this VM writes (see CONTRACT.md)."""
    if vm['brand'] in HVM_BRANDS:
        disks = vm.get('disks') or []
        if not disks:
            return None
        ds = disk_dataset(disks[0].get('path', ''))
        if ds is None:
            return None
        return '/%s/%s' % (ds, WRITER_FILE)
    return os.path.join(vm['zonepath'], 'root', 'var', 'tmp', WRITER_FILE)


# ---------------------------------------------------------------------------
# boot / halt (shared by zoneadm and vmadm)

BIN_DIR = os.path.dirname(os.path.realpath(__file__))


def vm_datasets(vm):
    """Datasets a VM uses, zone root first (names derived like SmartOS lays them out)."""
    root = vm.get('zfs_filesystem') or vm['zonepath'].lstrip('/')
    names = [root]
    for d in vm.get('datasets', []):
        names.append(d)
    for d in vm.get('disks', []):
        ds = disk_dataset(d.get('path', ''))
        if ds and ds not in names:
            names.append(ds)
    return names


def mount_vm(vm, name):
    zprops = zfs_props()
    root = vm['zonepath'].lstrip('/')
    if root not in zprops:
        raise Fail("zoneadm: zone '%s': zonepath %s does not exist" % (name, vm['zonepath']))
    ordered = [root]
    cores = 'zones/cores/' + name
    if cores in zprops:
        ordered.append(cores)
    for ds in vm_datasets(vm)[1:]:
        if ds in zprops:
            ordered.append(ds)
    for child in sorted(zprops):
        if child.startswith(root + '/') and '@' not in child and child not in ordered:
            ordered.append(child)
    for ds in ordered:
        p = zprops.get(ds, {})
        if p.get('type') == 'volume':
            try:
                zvol_mount(ds)
            except Fail as e:
                raise Fail("zoneadm: zone '%s': %s" % (name, e))
            continue
        if p.get('mounted') == 'no' and p.get('mountpoint') not in ('none', 'legacy', '-'):
            q = zfs('mount', ds, check=False)
            if q.returncode != 0 and 'already mounted' not in q.stderr:
                raise Fail("zoneadm: zone '%s': %s" % (name, q.stderr.strip()))


def boot_zone(name):
    """Boot an installed zone: mount its datasets, mark it running, start its writer."""
    entry = index_entry(name)
    if entry is None:
        raise Fail('zoneadm: %s: No such zone configured' % name)
    state = zone_state(entry)
    if state == 'running':
        raise Fail("zoneadm: zone '%s': zone is already booted" % name)
    if state != 'installed':
        raise Fail("zoneadm: zone '%s': boot operation is invalid for %s zones." % (name, state))
    vm = load_vm(name, with_zfs=False)
    mount_vm(vm, name)
    rs = {'zoneid': next_zoneid(), 'boot_time': int(time.time()), 'writer_pid': None}
    path = writer_path(vm)
    if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        logf = open(os.path.join(RUN_DIR, 'zones', name + '.writer.log'), 'ab')
        p = subprocess.Popen([os.path.join(BIN_DIR, 'zlab-writer'), '--uuid', vm['uuid'],
                              '--file', path],
                             stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                             start_new_session=True, close_fds=True, cwd='/')
        logf.close()
        rs['writer_pid'] = p.pid
    write_atomic(runfile(name), json.dumps(rs))


def halt_zone(name, force=False):
    """Halt a running zone: end its writer (SIGTERM: it completes the current record)."""
    rs = run_state(name)
    if rs is None:
        raise Fail("zoneadm: zone '%s': zone is already halted" % name)
    pid = rs.get('writer_pid')
    if pid_alive(pid):
        try:
            os.kill(pid, signal.SIGKILL if force else signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + 10
        while pid_alive(pid) and time.time() < deadline:
            time.sleep(0.005)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.005)
    try:
        os.unlink(runfile(name))
    except FileNotFoundError:
        pass
    e = index_entry(name)
    if e is not None and e[2]:
        try:
            with open(os.path.join(e[2], 'lastexited'), 'w') as f:
                f.write('%d.000000000 -1\n' % int(time.time()))
        except OSError:
            pass


def signal_writer(name, sig=signal.SIGHUP):
    rs = run_state(name)
    if rs and pid_alive(rs.get('writer_pid')):
        try:
            os.kill(rs['writer_pid'], sig)
        except ProcessLookupError:
            pass


def create_cores(name, zonepath):
    # as SmartOS: zones/cores (mountpoint none, gzip), zones/cores/<uuid> 100G quota,
    # mounted inside the zone root at <zonepath>/cores
    if not zfs_exists('zones/cores'):
        zfs('create', '-o', 'mountpoint=none', '-o', 'compression=gzip', 'zones/cores',
            check=False)
    ds = 'zones/cores/' + name
    if not zfs_exists(ds):
        zfs('create', '-o', 'quota=100G', '-o', 'mountpoint=%s/cores' % zonepath, ds)


# ---------------------------------------------------------------------------
# zoneadm

def cmd_zoneadm(argv):
    zone = None
    by_uuid = False
    i = 0
    while i < len(argv) and argv[i] in ('-z', '-u', '-R'):
        if i + 1 >= len(argv):
            raise Fail('zoneadm: option requires an argument -- %s' % argv[i][1:], 2)
        if argv[i] == '-z':
            zone = argv[i + 1]
        elif argv[i] == '-u':
            zone = argv[i + 1]
            by_uuid = True
        i += 2
    if i >= len(argv):
        raise Fail('usage:\tzoneadm [-z <zone>] [-u <uuid-match>] <subcommand>', 2)
    sub = argv[i]
    args = argv[i + 1:]
    if sub == 'list':
        return zoneadm_list(zone, args)
    if zone is None:
        raise Fail('zoneadm: zone name required', 2)
    entry = index_entry(zone)
    if entry is None:
        raise Fail('zoneadm: %s: No such zone configured' % zone)
    name = entry[0]
    state = zone_state(entry)
    with Lock():
        if sub == 'boot':
            boot_zone(name)
        elif sub in ('halt', 'shutdown'):
            if state != 'running':
                raise Fail("zoneadm: zone '%s': zone is already halted" % name)
            halt_zone(name)
        elif sub == 'reboot':
            if state == 'running':
                halt_zone(name)
            boot_zone(name)
        elif sub == 'attach':
            if state != 'configured':
                raise Fail("zoneadm: zone '%s': attach operation is invalid for %s zones."
                           % (name, state))
            cfg = ZoneConfig.load(name)
            zonepath = cfg.props.get('zonepath', entry[2])
            if '-F' not in args:
                if not zfs_exists(zonepath.lstrip('/')):
                    raise Fail("zoneadm: zone '%s': zonepath %s does not exist"
                               % (name, zonepath))
                create_cores(name, zonepath)
            try:
                os.unlink(os.path.join(zonepath, 'SUNWdetached.xml'))
            except OSError:
                pass
            set_index_state(name, 'installed')
        elif sub == 'detach':
            if state != 'installed':
                raise Fail("zoneadm: zone '%s': detach operation is invalid for %s zones."
                           % (name, state))
            cfg = ZoneConfig.load(name)
            try:
                write_atomic(os.path.join(cfg.props.get('zonepath', entry[2]),
                                          'SUNWdetached.xml'), cfg.to_xml())
            except OSError:
                pass
            set_index_state(name, 'configured')
        elif sub == 'uninstall':
            if state != 'installed':
                raise Fail("zoneadm: zone '%s': uninstall operation is invalid for %s zones."
                           % (name, state))
            zfs_destroy(entry[2].lstrip('/'), recursive=True)
            set_index_state(name, 'configured')
        elif sub in ('ready', 'verify', 'install'):
            pass
        else:
            raise Fail('zoneadm: %s is not a valid subcommand' % sub, 2)
    return 0


def zoneadm_list(zone, args):
    flags = ''.join(a.lstrip('-') for a in args if a.startswith('-'))
    entries = read_index()
    rows = [('0', 'global', 'running', '/', '', 'liveimg', 'shared', '0')]
    for e in entries:
        st = zone_state(e)
        rs = run_state(e[0]) if st == 'running' else None
        cfg = ZoneConfig.load(e[0])
        brand = cfg.props.get('brand', '') if cfg else ''
        iptype = 'excl' if cfg and cfg.props.get('ip-type') == 'exclusive' else 'shared'
        debugid = str(cfg.debugid) if cfg and cfg.debugid is not None else '-'
        zid = str(rs.get('zoneid')) if rs else '-'
        rows.append((zid, e[0], st, e[2], e[3], brand, iptype, debugid))
    if zone is not None:
        rows = [r for r in rows if r[1] == zone or r[4] == zone]
        if not rows:
            raise Fail('zoneadm: %s: No such zone configured' % zone)
    elif 'c' not in flags:
        rows = [r for r in rows if r[2] == 'running' or ('i' in flags and r[2] == 'installed')]
    for r in rows:
        if 'p' in flags:
            print(':'.join(r))
        elif 'v' in flags:
            pass
        else:
            print(r[1])
    if 'v' in flags and 'p' not in flags:
        print('  ID NAME             STATUS     PATH                           BRAND    IP    ')
        for r in rows:
            print('%4s %-16s %-10s %-30s %-8s %-6s' % (r[0], r[1], r[2], r[3], r[5], r[6]))
    return 0


# ---------------------------------------------------------------------------
# vmadm

LIST_FIELDS = {
    'alias': ('ALIAS', 10), 'autoboot': ('AUTOBOOT', 8), 'billing_id': ('BILLING_ID', 36),
    'boot_timestamp': ('BOOT_TIMESTAMP', 24), 'brand': ('BRAND', 14), 'cpu_cap': ('CPU_CAP', 7),
    'cpu_shares': ('CPU_SHARE', 9), 'cpu_type': ('CPU_TYPE', 8),
    'create_timestamp': ('CREATE_TIMESTAMP', 24), 'dns_domain': ('DOMAIN', 32),
    'do_not_inventory': ('DNI', 5), 'docker': ('DOCKER', 6), 'firewall_enabled':
    ('FIREWALL_ENABLED', 16), 'hostname': ('HOSTNAME', 32), 'hvm': ('HVM', 5),
    'image_uuid': ('IMAGE_UUID', 36), 'indestructible_delegated': ('INDESTR_DATA', 12),
    'indestructible_zoneroot': ('INDESTR_ROOT', 12), 'ram': ('RAM', 7),
    'max_locked_memory': ('MAX_LOCKED', 10), 'max_lwps': ('MAX_LWP', 7),
    'max_physical_memory': ('MAX_PHYS', 8), 'max_swap': ('MAX_SWAP', 8),
    'owner_uuid': ('OWNER_UUID', 36), 'package_name': ('PACKAGE_NAME', 32),
    'package_version': ('PACKAGE_VER', 11), 'pid': ('PID', 6), 'quota': ('QUOTA', 5),
    'zone_state': ('ZONE_STATE', 10), 'state': ('STATE', 16), 'tmpfs': ('TMPFS', 5),
    'type': ('TYPE', 4), 'uuid': ('UUID', 36), 'vcpus': ('VCPUS', 5),
    'zfs_io_priority': ('IO_PRIORITY', 11), 'zpool': ('ZPOOL', 12),
    'zonename': ('ZONENAME', 12), 'zonepath': ('ZONEPATH', 40), 'zoneid': ('ZONEID', 6),
    'server_uuid': ('SERVER_UUID', 36), 'zlab_write_rate': ('WRITE_RATE', 10),
}
DEFAULT_ORDER = 'uuid,type,ram,state,alias'
DEFAULT_SORT = 'ram,uuid'

VMADM_USAGE = """Usage: /usr/vm/sbin/vmadm <command> [options]

create [-f <filename>]
delete <uuid>
get <uuid>
list [-p] [-H] [-o field,...] [-s field,...] [field=value ...]
lookup [-j|-1] [-o field,...] [field=value ...]
reboot <uuid> [-F]
start <uuid> [option=value ...]
stop <uuid> [-F] [-t timeout]
update <uuid> [-f <filename>]
 -or- update <uuid> property=value [property=value ...]

For more detailed information on the use of this command,type 'man vmadm'."""


def vmadm_usage(message):
    raise Fail((message + '\n' if message else '') + VMADM_USAGE, 2)


def add_fake_fields(vm):
    vm['type'] = BRAND_TYPE.get(vm.get('brand'), 'OS')
    if vm.get('brand') not in HVM_BRANDS and 'max_physical_memory' in vm:
        vm['ram'] = vm['max_physical_memory']
    return vm


def flatten(obj, key):
    cur = obj
    for part in key.split('.'):
        if isinstance(cur, list):
            try:
                cur = cur[int(part)]
            except (ValueError, IndexError):
                return None
        elif isinstance(cur, dict):
            cur = cur.get(part)
        else:
            return None
        if cur is None:
            return None
    return cur


def str_value(v):
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, list):
        return ','.join(str_value(x) for x in v)
    if isinstance(v, float):
        return str(js_number(v))
    return str(v)


def filter_match(vm, key, want):
    if '*' in key:
        head, _, tail = key.partition('.*.')
        items = flatten(vm, head) or []
        vals = [flatten(x, tail) for x in items] if isinstance(items, list) else []
    else:
        vals = [flatten(vm, key)]
    for v in vals:
        if v is None:
            continue
        s = str_value(v)
        if want.startswith('~'):
            if re.search(want[1:], s):
                return True
        elif s == want:
            return True
    return False


def parse_kv(args):
    out = {}
    for a in args:
        if '=' not in a:
            vmadm_usage('Bad arguments: unable to split ' + a)
        k, _, v = a.partition('=')
        out[k] = v
    return out


def get_uuid(cmd, args):
    if not args or not is_uuid(args[0]):
        vmadm_usage('Invalid or missing UUID for ' + cmd)
    return args[0], args[1:]


def find_vm_entry(uuid_):
    e = index_entry(uuid_)
    return e


def vmadm_list(args):
    opts = {'o': DEFAULT_ORDER, 's': DEFAULT_SORT, 'p': False, 'H': False}
    rest = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ('-o', '-s') and i + 1 < len(args):
            opts[a[1]] = args[i + 1]
            i += 2
            continue
        if a.startswith('-') and len(a) > 1 and '=' not in a:
            for c in a[1:]:
                if c == 'p':
                    opts['p'] = True
                elif c == 'H':
                    opts['H'] = True
                elif c == 'h':
                    pass
                else:
                    vmadm_usage('Invalid option: -' + c)
            i += 1
            continue
        rest.append(a)
        i += 1
    filters = parse_kv(rest)
    order = opts['o'].split(',')
    for f in order:
        if f not in LIST_FIELDS and not re.match(r'^(tags|customer_metadata|internal_metadata)\.',
                                                 f) and not re.match(r'^(nics|disks)\.\d+\.', f):
            raise Fail('invalid order field: ' + f)
    vms = [add_fake_fields(v) for v in load_all()]
    vms = [v for v in vms if all(filter_match(v, k, w) for k, w in filters.items())]

    def sort_key(vm):
        keys = []
        for f in opts['s'].split(','):
            desc = f.startswith('-')
            v = flatten(vm, f.lstrip('+-'))
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                k = (1, -v if desc else v, '')
            elif v is None:
                k = (2, 0, '')
            else:
                k = (1, 0, str_value(v))
            keys.append(k)
        return keys

    vms.sort(key=sort_key)
    lines = []
    if not opts['p'] and not opts['H']:
        lines.append('  '.join('%-*s' % (LIST_FIELDS.get(f, (f.upper(), 20))[1],
                                         LIST_FIELDS.get(f, (f.upper(), 20))[0])
                               for f in order).rstrip())
    for vm in vms:
        vals = []
        for f in order:
            v = flatten(vm, f)
            s = str_value(v) if (v is not None and v != '') else ('' if opts['p'] else '-')
            vals.append(s)
        if opts['p']:
            lines.append(':'.join(vals))
        else:
            lines.append('  '.join('%-*s' % (LIST_FIELDS.get(f, (f, 20))[1], s)
                                   for f, s in zip(order, vals)).rstrip())
    if lines:
        print('\n'.join(lines))
    return 0


def vmadm_lookup(args):
    as_json = False
    unique = False
    fields = None
    rest = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == '-o' and i + 1 < len(args):
            fields = args[i + 1].split(',')
            i += 2
            continue
        if a in ('-j', '--json'):
            as_json = True
        elif a in ('-1', '--unique'):
            unique = True
        elif a == '-j1' or a == '-1j':
            as_json = unique = True
        else:
            rest.append(a)
        i += 1
    if fields and not as_json:
        raise Fail('Cannot specify -o without -j')
    filters = parse_kv(rest)
    vms = [add_fake_fields(v) for v in load_all()]
    vms = [v for v in vms if all(filter_match(v, k, w) for k, w in filters.items())]
    if unique and len(vms) != 1:
        raise Fail('Requested unique lookup but found %d results.' % len(vms))
    if as_json:
        if fields:
            vms = [{f: v[f] for f in fields if f in v} for v in vms]
        else:
            for v in vms:
                v.pop('type', None)
                if v.get('brand') not in HVM_BRANDS:
                    v.pop('ram', None)
        print(dumps(vms))
    else:
        for v in vms:
            print(v['uuid'])
    return 0


def vmadm_get(args):
    u, _ = get_uuid('get', args)
    vm = load_vm(u)
    if vm is None:
        raise Fail('zoneadm: %s: No such zone configured' % u)
    print(dumps(vm))
    return 0


def vmadm_start(args):
    u, rest = get_uuid('start', args)
    for a in rest:
        if '=' not in a:
            vmadm_usage('Bad arguments: unable to split ' + a)
    with Lock():
        e = find_vm_entry(u)
        if e is None:
            raise Fail('Unable to start VM %s: VM %s not found' % (u, u))
        st = zone_state(e)
        if st == 'running':
            sys.stderr.write("VM %s is already 'running'\n" % u)
            return 0
        if st != 'installed':
            raise Fail('Unable to start VM %s: Cannot start vm from state "%s", must be '
                       '"stopped".' % (u, st))
        try:
            boot_zone(e[0])
        except Fail as f:
            raise Fail('Unable to start VM %s: %s' % (u, f.message))
    sys.stderr.write('Successfully started VM %s\n' % u)
    return 0


def vmadm_stop(args, command='stop'):
    force = False
    rest = []
    i = 0
    while i < len(args):
        if args[i] == '-F':
            force = True
        elif args[i] == '-t' and i + 1 < len(args):
            i += 1
        else:
            rest.append(args[i])
        i += 1
    u, _ = get_uuid(command, rest)
    with Lock():
        e = find_vm_entry(u)
        if e is None:
            raise Fail('VM %s not found' % u)
        st = zone_state(e)
        if st != 'running':
            if command == 'stop':
                sys.stderr.write("VM %s is already not 'running' (currently: %s)\n"
                                 % (u, 'stopped' if st == 'installed' else st))
                return 0
            raise Fail("VM %s is not 'running' (currently: %s)" % (u, st))
        halt_zone(e[0], force=force)
        if command == 'reboot':
            boot_zone(e[0])
    sys.stderr.write('Successfully completed %s for VM %s\n' % (command, u))
    return 0


def read_payload(path):
    try:
        if path in (None, '-'):
            if sys.stdin.isatty():
                vmadm_usage('Will not update from stdin when stdin is a tty.')
            text = sys.stdin.read()
        else:
            with open(path) as f:
                text = f.read()
        payload = json.loads(text)
    except OSError as e:
        raise Fail('%s: %s' % (path, e.strerror))
    except ValueError as e:
        raise Fail('Invalid JSON payload: %s' % e)
    if not isinstance(payload, dict):
        raise Fail('Invalid JSON payload: not an object')
    return payload


BOOL_KEYS = ('autoboot', 'do_not_inventory', 'indestructible_zoneroot',
             'indestructible_delegated', 'firewall_enabled', 'archive_on_delete',
             'maintain_resolvers')
INT_KEYS = ('quota', 'ram', 'max_physical_memory', 'max_locked_memory', 'max_swap',
            'cpu_shares', 'cpu_cap', 'max_lwps', 'zfs_io_priority', 'tmpfs', 'vcpus',
            'zlab_write_rate', 'max_msg_ids', 'max_sem_ids', 'max_shm_ids', 'max_shm_memory')
STRING_ATTR_KEYS = ('billing_id', 'owner_uuid', 'package_name', 'package_version',
                    'hostname', 'dns_domain', 'cpu_type', 'kernel_version')
MEM_RCTL_KEYS = ('max_physical_memory', 'max_locked_memory', 'max_swap', 'max_shm_memory')


def normalize(payload):
    bad = []
    out = {}
    for k, v in payload.items():
        if k in BOOL_KEYS:
            if isinstance(v, bool):
                out[k] = v
            elif v in ('true', 'false'):
                out[k] = v == 'true'
            else:
                bad.append(k)
        elif k in INT_KEYS:
            if v in ('', None):
                out[k] = None
            else:
                try:
                    out[k] = js_number(float(v))
                except (TypeError, ValueError):
                    raise Fail('Invalid value for %s: %s:%s' % (k, json.dumps(v),
                                                               type(v).__name__))
        elif k == 'resolvers' and isinstance(v, str):
            out[k] = [x for x in v.split(',') if x]
        else:
            out[k] = v
    if bad:
        raise Fail('Invalid value(s) for: ' + ','.join(bad))
    return out


def set_indestructible(dataset, on):
    snap = dataset + '@indestructible'
    if on:
        p = zfs('snapshot', snap, check=False)
        if p.returncode != 0 and 'exists' not in p.stderr:
            raise Fail(p.stderr.strip())
        p = zfs('hold', 'do_not_destroy', snap, check=False)
        if p.returncode != 0 and 'tag already exists' not in p.stderr:
            raise Fail(p.stderr.strip())
    else:
        if not zfs_exists(snap):
            return
        zfs('release', 'do_not_destroy', snap, check=False)
        zfs('destroy', snap, busy_retry=True)


def update_json_files(zonepath, payload):
    cfgdir = os.path.join(zonepath, 'config')
    md_path = os.path.join(cfgdir, 'metadata.json')
    changed = {}
    md = None
    for kind in ('customer_metadata', 'internal_metadata'):
        sets = payload.get('set_' + kind)
        rems = payload.get('remove_' + kind)
        repl = payload.get(kind)
        if sets is None and rems is None and repl is None:
            continue
        if md is None:
            md = read_json(md_path, {}) or {}
        cur = dict(md.get(kind, {})) if repl is None else dict(repl)
        cur.update(sets or {})
        for r in (rems if isinstance(rems, list) else (rems or '').split(',') if rems else []):
            cur.pop(r, None)
        md[kind] = cur
        changed['metadata.json'] = md
    for kind, fname in (('tags', 'tags.json'), ('routes', 'routes.json')):
        sets = payload.get('set_' + kind)
        rems = payload.get('remove_' + kind)
        repl = payload.get(kind)
        if sets is None and rems is None and repl is None:
            continue
        cur = dict(read_json(os.path.join(cfgdir, fname), {}) or {}) if repl is None \
            else dict(repl)
        cur.update(sets or {})
        for r in (rems if isinstance(rems, list) else (rems or '').split(',') if rems else []):
            cur.pop(r, None)
        changed[fname] = cur
    if changed:
        if not os.path.isdir(zonepath):
            raise Fail('zonepath %s is not mounted' % zonepath)
        os.makedirs(cfgdir, exist_ok=True)
        for fname, obj in changed.items():
            if fname == 'metadata.json':
                obj.setdefault('customer_metadata', {})
                obj.setdefault('internal_metadata', {})
            write_atomic(os.path.join(cfgdir, fname), json.dumps(obj, indent=2) + '\n')


def apply_update(name, payload):
    vm = load_vm(name)
    cfg = ZoneConfig.load(name)
    brand = vm['brand']
    hvm = brand in HVM_BRANDS
    p = normalize(payload)
    cfg_changed = False
    root = vm.get('zfs_filesystem') or vm['zonepath'].lstrip('/')
    for k, v in p.items():
        if k == 'autoboot':
            if hvm:
                cfg.set_attr('vm-autoboot', 'true' if v else 'false')
            else:
                cfg.props['autoboot'] = 'true' if v else 'false'
            cfg_changed = True
        elif k in ('do_not_inventory', 'firewall_enabled', 'archive_on_delete',
                   'maintain_resolvers'):
            cfg.set_attr(ATTR_BY_KEY[k][0], 'true' if v else None)
            cfg_changed = True
        elif k == 'alias':
            cfg.set_attr('alias', base64.b64encode(v.encode()).decode() if v else None)
            cfg_changed = True
        elif k in STRING_ATTR_KEYS:
            attr = 'kernel-version' if k == 'kernel_version' else ATTR_BY_KEY[k][0]
            cfg.set_attr(attr, v if v not in ('', None) else None)
            cfg_changed = True
        elif k == 'resolvers':
            cfg.set_attr('resolvers', ','.join(v) if v else None)
            cfg_changed = True
        elif k in ('vcpus', 'tmpfs', 'zlab_write_rate'):
            cfg.set_attr(ATTR_BY_KEY[k][0], None if v is None else v)
            cfg_changed = True
        elif k == 'ram':
            if hvm:
                cfg.set_attr('ram', v)
            else:
                cfg.set_rctl('zone.max-physical-memory', None if v is None else int(v * MIB))
            cfg_changed = True
        elif k in RCTL_BY_KEY:
            rname, tr = RCTL_BY_KEY[k]
            if v is not None and tr == 'mem':
                v = int(v * MIB)
            cfg.set_rctl(rname, None if v is None else int(v))
            cfg_changed = True
        elif k == 'quota':
            if not zfs_exists(root):
                raise Fail('cannot set quota: dataset %s does not exist' % root)
            val = 'none' if not v else '%dG' % int(v) if float(v).is_integer() \
                else '%dM' % int(v * 1024)
            zfs('set', '%s=%s' % ('refquota' if brand == 'bhyve' else 'quota', val), root)
        elif k == 'indestructible_zoneroot':
            set_indestructible(root, v)
        elif k == 'indestructible_delegated':
            if vm.get('datasets'):
                set_indestructible(vm['datasets'][0], v)
    update_json_files(vm['zonepath'], p)
    if cfg_changed:
        cfg.save()
    if 'zlab_write_rate' in p:
        signal_writer(name)


def vmadm_update(args):
    u, rest = get_uuid('update', args)
    path = None
    kv = []
    i = 0
    while i < len(rest):
        if rest[i] == '-f' and i + 1 < len(rest):
            path = rest[i + 1]
            i += 2
            continue
        kv.append(rest[i])
        i += 1
    payload = parse_kv(kv) if kv else read_payload(path)
    with Lock():
        e = find_vm_entry(u)
        if e is None:
            raise Fail('VM %s not found' % u)
        apply_update(e[0], payload)
    # Lab fault (never on a real node): /tmp/zlab-fault-update-after holds a property name and
    # optionally a count (default 1); an update that sets it is applied and then reported as
    # failed, that many times, as when the link to the node drops after vmadm acted. The file is
    # removed when it has fired the last time.
    fault = '/tmp/zlab-fault-update-after'
    try:
        with open(fault) as f:
            words = f.read().split()
    except OSError:
        words = []
    prop = words[0] if words else None
    if prop and prop in payload:
        left = int(words[1]) if len(words) > 1 and words[1].isdigit() else 1
        if left > 1:
            with open(fault + '.tmp', 'w') as f:
                f.write('%s %d\n' % (prop, left - 1))
            os.rename(fault + '.tmp', fault)
        else:
            os.unlink(fault)
        raise Fail('zlab fault: update of %s applied, then reported failed' % prop, 255)
    sys.stderr.write('Successfully updated VM %s\n' % u)
    return 0


def vmadm_delete(args):
    u, _ = get_uuid('delete', args)
    with Lock():
        e = find_vm_entry(u)
        if e is None:
            raise Fail('Failed to delete VM %s: VM %s not found' % (u, u))
        name = e[0]
        vm = load_vm(name)
        if vm.get('indestructible_zoneroot'):
            raise Fail('Failed to delete VM %s: indestructible_zoneroot is set, cannot delete'
                       % u)
        if vm.get('indestructible_delegated'):
            raise Fail('Failed to delete VM %s: indestructible_delegated is set, cannot delete'
                       % u)
        if zone_state(e) == 'running':
            halt_zone(name, force=True)
        destroy_vm_datasets(name, vm)
        try:
            os.unlink(xml_path(name))
        except FileNotFoundError:
            pass
        set_index_state(name, None)
    sys.stderr.write('Successfully deleted VM %s\n' % u)
    return 0


def destroy_vm_datasets(name, vm):
    cores = 'zones/cores/' + name
    if zfs_exists(cores):
        zfs('umount', cores, check=False)
        zfs_destroy(cores, recursive=True)
    root = vm['zonepath'].lstrip('/')
    names = set()
    for d in vm.get('disks', []):
        ds = disk_dataset(d.get('path', ''))
        if ds:
            names.add(ds)
    for ds in zfs_props():
        if ds.startswith(root + '-disk') and '@' not in ds:
            names.add(ds)
    if openzfs():
        # ext4 in the zvols: unmount before the zvols (and the zone root above them) go.
        for ds in sorted(names):
            zvol_umount(ds)
    zfs_destroy(root, recursive=True)
    for ds in sorted(names):
        zfs_destroy(ds, recursive=True)


# -- vmadm create (used by seed apply; follows vmadm(8) payloads)

LIMITPRIV = {
    'joyent': 'default,dtrace_proc,dtrace_user',
    'joyent-minimal': 'default,dtrace_proc,dtrace_user',
    'lx': 'default',
    'kvm': 'default,-file_link_any,-net_access,-proc_fork,-proc_info,-proc_session',
    'bhyve': 'default,-file_link_any,-net_access,-proc_fork,-proc_info,-proc_session',
}


def random_mac():
    b = os.urandom(3)
    return '90:b8:d0:%02x:%02x:%02x' % (b[0], b[1], b[2])


def prefix_len(netmask):
    try:
        return sum(bin(int(x)).count('1') for x in netmask.split('.'))
    except ValueError:
        return 24


def build_config(payload, u):
    brand = payload['brand']
    hvm = brand in HVM_BRANDS
    cfg = ZoneConfig(u)
    cfg.uuid = u
    zonepath = payload.get('zonepath', '/zones/' + u)
    cfg.props['zonepath'] = zonepath
    cfg.props['brand'] = brand
    autoboot = payload.get('autoboot', True)
    cfg.props['autoboot'] = 'false' if hvm else ('true' if autoboot else 'false')
    cfg.props['limitpriv'] = payload.get('limit_priv', LIMITPRIV[brand])
    cfg.props['ip-type'] = 'exclusive'
    for i, nic in enumerate(payload.get('nics', [])):
        props = {'physical': nic.get('interface', 'net%d' % i),
                 'mac-addr': ruin_mac(nic.get('mac') or random_mac()),
                 'vlan-id': str(nic.get('vlan_id', 0)),
                 'global-nic': nic.get('nic_tag', 'admin')}
        attrs = []
        if nic.get('ip'):
            attrs.append(['ip', nic['ip']])
            attrs.append(['ips', '%s/%d' % (nic['ip'], prefix_len(nic.get('netmask', '')))])
        if nic.get('netmask'):
            attrs.append(['netmask', nic['netmask']])
        if nic.get('gateway'):
            attrs.append(['gateway', nic['gateway']])
            attrs.append(['gateways', nic['gateway']])
        if nic.get('network_uuid'):
            attrs.append(['network_uuid', nic['network_uuid']])
        if nic.get('primary'):
            attrs.append(['primary', 'true'])
        if hvm:
            attrs.append(['model', nic.get('model', 'virtio')])
        cfg.nets.append({'props': props, 'attrs': attrs})
    for i, d in enumerate(payload.get('disks', []) if hvm else []):
        if brand == 'kvm':
            path = '%s%s-disk%d' % (ZVOL_PREFIX, zonepath.lstrip('/'), i)
        else:
            path = '%s%s/disk%d' % (ZVOL_PREFIX, zonepath.lstrip('/'), i)
        attrs = [['boot', 'true' if d.get('boot') else 'false'],
                 ['model', d.get('model', 'virtio')], ['media', d.get('media', 'disk')]]
        if d.get('image_uuid'):
            attrs.append(['image-uuid', d['image_uuid']])
            if d.get('image_size'):
                attrs.append(['image-size', str(d['image_size'])])
            if d.get('image_name'):
                attrs.append(['image-name', d['image_name']])
        cfg.devices.append({'match': path, 'attrs': attrs})
    if hvm:
        ram = int(payload.get('ram', 256))
        mpm = int(payload.get('max_physical_memory', ram + (1024 if brand == 'kvm' else 256)))
    else:
        mpm = int(payload.get('max_physical_memory', payload.get('ram', 256)))
        ram = None
    rctls = [('zone.cpu-shares', payload.get('cpu_shares', 100)),
             ('zone.max-lwps', payload.get('max_lwps', 2000)),
             ('zone.max-msg-ids', payload.get('max_msg_ids', 4096)),
             ('zone.max-sem-ids', payload.get('max_sem_ids', 4096)),
             ('zone.max-shm-ids', payload.get('max_shm_ids', 4096)),
             ('zone.max-shm-memory', int(payload.get('max_shm_memory', mpm)) * MIB),
             ('zone.zfs-io-priority', payload.get('zfs_io_priority', 100)),
             ('zone.max-physical-memory', mpm * MIB),
             ('zone.max-locked-memory', int(payload.get('max_locked_memory', mpm)) * MIB),
             ('zone.max-swap', int(payload.get('max_swap', max(mpm, 256))) * MIB)]
    if payload.get('cpu_cap'):
        rctls.append(('zone.cpu-cap', payload['cpu_cap']))
    for rname, limit in rctls:
        cfg.set_rctl(rname, int(limit))
    attrs = [('vm-version', '1'),
             ('create-timestamp', payload.get('create_timestamp') or now_iso())]
    if not hvm and payload.get('image_uuid'):
        attrs.append(('dataset-uuid', payload['image_uuid']))
    attrs += [('billing-id', payload.get('billing_id', '00000000-0000-0000-0000-000000000000')),
              ('owner-uuid', payload.get('owner_uuid', '00000000-0000-0000-0000-000000000000'))]
    for key, attr in (('package_name', 'package-name'), ('package_version', 'package-version'),
                      ('hostname', 'hostname'), ('dns_domain', 'dns-domain')):
        if payload.get(key):
            attrs.append((attr, payload[key]))
    if not hvm and payload.get('tmpfs'):
        attrs.append(('tmpfs', str(payload['tmpfs'])))
    if payload.get('resolvers'):
        attrs.append(('resolvers', ','.join(payload['resolvers'])))
    if brand == 'lx':
        attrs.append(('kernel-version', payload.get('kernel_version', '4.3.0')))
    if payload.get('alias'):
        attrs.append(('alias', base64.b64encode(payload['alias'].encode()).decode()))
    if hvm:
        attrs += [('ram', str(ram)), ('vcpus', str(payload.get('vcpus', 1))),
                  ('vm-autoboot', 'true' if autoboot else 'false')]
        if brand == 'kvm':
            attrs.append(('cpu-type', payload.get('cpu_type', 'host')))
    if payload.get('do_not_inventory'):
        attrs.append(('do-not-inventory', 'true'))
    if payload.get('firewall_enabled'):
        attrs.append(('firewall-enabled', 'true'))
    if payload.get('zlab_write_rate') is not None:
        attrs.append(('zlab-write-rate', str(int(payload['zlab_write_rate']))))
    for name, value in attrs:
        cfg.set_attr(name, value)
    if payload.get('delegate_dataset') and not hvm:
        cfg.datasets.append({'name': '%s/data' % zonepath.lstrip('/'), 'alias': ''})
    return cfg


def create_zvol_disk(u, ds, size, image_uuid):
    """openzfs: disk ds as a zvol of size MiB (a clone of the image's zvol for an image disk),
    with an ext4 filesystem, mounted. Returns ds."""
    if image_uuid:
        src = 'zones/%s@final' % image_uuid
        if not zfs_exists(src):
            raise Fail('Failed to create VM %s: image %s does not exist on zpool zones'
                       % (u, image_uuid))
        zfs('clone', src, ds)
        if zfs_props([ds]).get(ds, {}).get('type') != 'volume':
            raise Fail('Failed to create VM %s: image %s is not a zvol image' % (u, image_uuid))
        cur = zfs_num(zfs_props([ds])[ds], 'volsize')
        if size * MIB > cur:
            zfs('set', 'volsize=%dM' % size, ds)
        zfs('set', 'refreservation=auto', ds)
    else:
        zfs('create', '-V', '%dM' % size, '-o', 'volblocksize=8k', ds)
        zvol_mkfs(ds)
    zvol_mount(ds)
    return ds


def vmadm_create(args):
    path = None
    if len(args) >= 2 and args[0] == '-f':
        path = args[1]
    payload = read_payload(path)
    brand = payload.get('brand')
    if brand not in BRANDS:
        raise Fail('Invalid brand while validating payload: %s' % json.dumps(brand))
    u = payload.get('uuid') or str(uuidlib.uuid4())
    with Lock():
        if index_entry(u) is not None:
            raise Fail('VM with uuid %s already exists' % u)
        hvm = brand in HVM_BRANDS
        cfg = build_config(payload, u)
        zonepath = cfg.props['zonepath']
        root = zonepath.lstrip('/')
        quota = payload.get('quota', 10)
        qval = '%dG' % int(quota) if quota else 'none'
        created = []
        try:
            if not hvm:
                img = payload.get('image_uuid')
                if not img or not zfs_exists('zones/%s@final' % img):
                    raise Fail('Failed to create VM %s: image %s does not exist on zpool zones'
                               % (u, img))
                zfs('clone', '-o', 'quota=' + qval, 'zones/%s@final' % img, root)
                created.append(root)
                if payload.get('delegate_dataset'):
                    zfs('create', root + '/data')
            else:
                zfs('create', '-o', ('refquota=' if brand == 'bhyve' else 'quota=') + qval, root)
                created.append(root)
                total = 0
                for i, d in enumerate(payload.get('disks', [])):
                    ds = disk_dataset(cfg.devices[i]['match'])
                    size = int(d.get('size') or d.get('image_size') or 16)
                    total += size
                    if openzfs():
                        created.append(create_zvol_disk(u, ds, size, d.get('image_uuid')))
                        continue
                    opts = ['-o', 'refquota=%dM' % size, '-o', 'refreservation=%dM' % size]
                    if d.get('image_uuid'):
                        src = 'zones/%s@final' % d['image_uuid']
                        if not zfs_exists(src):
                            raise Fail('Failed to create VM %s: image %s does not exist on '
                                       'zpool zones' % (u, d['image_uuid']))
                        zfs('clone', *opts, src, ds)
                    else:
                        zfs('create', *opts, ds)
                    created.append(ds)
                if brand == 'bhyve':
                    # lab: real bhyve reserves refquota + disk refreservations; a 1 GiB
                    # pool cannot, so quota = reservation = disks + 16 MiB here (openzfs:
                    # the zvols' real refreservations + 16 MiB)
                    r = '%dM' % (total + 16)
                    if openzfs():
                        resv = sum(zfs_num(pp, 'refreservation') for n, pp in
                                   zfs_props().items() if n.startswith(root + '/disk'))
                        r = str(resv + (16 << 20))
                    zfs('set', 'quota=' + r, root)
                    zfs('set', 'reservation=' + r, root)
            create_cores(u, zonepath)
            created.append('zones/cores/' + u)
            os.makedirs(os.path.join(zonepath, 'config'), exist_ok=True)
            os.makedirs(os.path.join(zonepath, 'root'), exist_ok=True)
            md = {'customer_metadata': payload.get('customer_metadata', {}),
                  'internal_metadata': payload.get('internal_metadata', {})}
            cdir = os.path.join(zonepath, 'config')
            write_atomic(os.path.join(cdir, 'metadata.json'), json.dumps(md, indent=2) + '\n')
            write_atomic(os.path.join(cdir, 'tags.json'),
                         json.dumps(payload.get('tags', {}), indent=2) + '\n')
            write_atomic(os.path.join(cdir, 'routes.json'),
                         json.dumps(payload.get('routes', {}), indent=2) + '\n')
            cfg.save(state='installed')
            if payload.get('indestructible_zoneroot'):
                set_indestructible(root, True)
            if payload.get('indestructible_delegated') and payload.get('delegate_dataset'):
                set_indestructible(root + '/data', True)
        except Fail:
            for ds in reversed(created):
                zfs('destroy', '-r', ds, check=False)
            raise
        if payload.get('autoboot', True):
            boot_zone(u)
    sys.stderr.write('Successfully created VM %s\n' % u)
    return 0


def cmd_vmadm(argv):
    if not argv:
        vmadm_usage(None)
    cmd, args = argv[0], argv[1:]
    if cmd in ('help', '-h', '--help'):
        print(VMADM_USAGE)
        return 0
    handlers = {
        'list': vmadm_list, 'lookup': vmadm_lookup, 'get': vmadm_get, 'json': vmadm_get,
        'start': vmadm_start, 'boot': vmadm_start, 'stop': vmadm_stop,
        'halt': vmadm_stop, 'update': vmadm_update, 'delete': vmadm_delete,
        'destroy': vmadm_delete, 'create': vmadm_create,
        'reboot': lambda a: vmadm_stop(a, 'reboot'),
    }
    if cmd not in handlers:
        vmadm_usage('Invalid command: "%s".' % cmd)
    return handlers[cmd](args)


# ---------------------------------------------------------------------------
# imgadm

def imgadm_fail(code, message):
    raise Fail('imgadm: error (%s): %s' % (code, message))


def image_source():
    return (os.environ.get('IMGAPI_URL') or node_config().get('imgapi_url') or '').rstrip('/')


def manifest_path(u):
    return os.path.join(STATE_DIR, 'imgadm', u + '.json')


def installed_image(u):
    """{'manifest', 'source'} of an installed image, or None."""
    if not zfs_exists('zones/%s@final' % u):
        return None
    rec = read_json(manifest_path(u))
    if not rec:
        rec = {'manifest': {'uuid': u, 'name': u[:8], 'version': '', 'type': 'zone-dataset',
                            'os': 'other', 'state': 'active', 'disabled': False,
                            'public': False, 'published_at': ''}}
    return rec


def http_json(url, timeout=10):
    req = _urllib().request.Request(url, headers={'accept': 'application/json',
                                                'accept-version': '*'})
    with _urllib().request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode())


def imgadm_import(u, quiet=False):
    src = image_source()
    if not src:
        imgadm_fail('NoSources', 'no image sources configured (set IMGAPI_URL)')
    try:
        m = http_json('%s/images/%s' % (src, u))
    except _urllib().error.HTTPError as e:
        if e.code == 404:
            imgadm_fail('ActiveImageNotFound',
                        'an active image "%s" was not found in image sources' % u)
        imgadm_fail('SourcesError', 'GET %s/images/%s: HTTP %d' % (src, u, e.code))
    except (_urllib().error.URLError, OSError, ValueError) as e:
        imgadm_fail('SourcesError', 'unable to access source %s: %s' % (src, e))
    label = '%s (%s@%s)' % (u, m.get('name', ''), m.get('version', ''))
    if installed_image(u):
        print('Image %s is already installed, skipping' % label)
        return
    if m.get('origin') and not installed_image(m['origin']):
        imgadm_import(m['origin'], quiet)
    if not quiet:
        print('Importing %s from "%s"' % (label, src))
    try:
        resp = _urllib().request.urlopen('%s/images/%s/file' % (src, u), timeout=30)
    except (_urllib().error.URLError, OSError) as e:
        imgadm_fail('DownloadError', 'error downloading image %s file: %s' % (u, e))
    recv = subprocess.Popen(['zfs', 'recv', 'zones/' + u], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sha1 = hashlib.sha1()
    size = 0
    try:
        while True:
            chunk = resp.read(1 << 16)
            if not chunk:
                break
            sha1.update(chunk)
            size += len(chunk)
            recv.stdin.write(chunk)
    except (BrokenPipeError, OSError):
        pass
    finally:
        try:
            recv.stdin.close()
        except OSError:
            pass
        resp.close()
    err = recv.stderr.read().decode(errors='replace')
    if recv.wait() != 0:
        zfs('destroy', '-r', 'zones/' + u, check=False)
        imgadm_fail('ImportError', 'zfs receive of image %s failed: %s' % (u, err.strip()))
    files = m.get('files') or [{}]
    want = files[0].get('sha1') if files else None
    if want and want != sha1.hexdigest():
        zfs('destroy', '-r', 'zones/' + u, check=False)
        imgadm_fail('DownloadError', 'image %s file sha1 mismatch: expected %s, got %s'
                    % (u, want, sha1.hexdigest()))
    os.makedirs(os.path.dirname(manifest_path(u)), exist_ok=True)
    write_atomic(manifest_path(u), json.dumps({'manifest': m, 'source': src}, indent=2))
    print('Imported image %s' % label)


def image_record(u, zprops):
    rec = installed_image(u)
    if rec is None:
        return None
    clones = sorted(n for n, p in zprops.items() if p.get('origin') == 'zones/%s@final' % u)
    out = {'manifest': rec['manifest'], 'zpool': POOL, 'cloneNames': clones,
           'clones': len(clones)}
    if rec.get('source'):
        out['source'] = rec['source']
    return out


def cmd_imgadm(argv):
    if not argv:
        raise Fail('usage: imgadm [OPTIONS] COMMAND [ARGS...]', 2)
    cmd, args = argv[0], argv[1:]
    opts = [a for a in args if a.startswith('-')]
    pos = [a for a in args if not a.startswith('-')]
    if cmd == 'import':
        if not pos:
            raise Fail('imgadm import: error: missing UUID argument', 2)
        with Lock():
            for u in pos:
                imgadm_import(u, quiet='-q' in opts)
        return 0
    if cmd in ('get', 'info'):
        if not pos:
            raise Fail('imgadm get: error: missing UUID argument', 2)
        rec = image_record(pos[0], zfs_props())
        if rec is None:
            imgadm_fail('ImageNotInstalled', 'image "%s" was not found on zpool "%s"'
                        % (pos[0], POOL))
        print(dumps(rec))
        return 0
    if cmd == 'list':
        zprops = zfs_props()
        recs = []
        for name in sorted(zprops):
            if name.endswith('@final') and name.count('/') == 1:
                u = name[len('zones/'):-len('@final')]
                if is_uuid(u):
                    r = image_record(u, zprops)
                    if r:
                        recs.append(r)
        recs.sort(key=lambda r: (r['manifest'].get('published_at', ''),
                                 r['manifest'].get('name', '')))
        if '-j' in opts or '--json' in opts:
            print(dumps(recs))
            return 0
        rows = []
        for r in recs:
            m = r['manifest']
            rows.append((m.get('uuid', ''), m.get('name', ''), m.get('version', ''),
                         'I' if m.get('origin') else '-', m.get('os', ''), m.get('type', ''),
                         (m.get('published_at') or '')[:10]))
        if '-H' not in opts:
            rows.insert(0, ('UUID', 'NAME', 'VERSION', 'FLAGS', 'OS', 'TYPE', 'PUB'))
        if rows:
            widths = [max(len(r[i]) for r in rows) for i in range(7)]
            for r in rows:
                print('  '.join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
        return 0
    if cmd == 'delete':
        if not pos:
            raise Fail('imgadm delete: error: missing UUID argument', 2)
        u = pos[0]
        with Lock():
            zprops = zfs_props()
            rec = image_record(u, zprops)
            if rec is None:
                imgadm_fail('ImageNotInstalled', 'image "%s" was not found on zpool "%s"'
                            % (u, POOL))
            if rec['clones']:
                imgadm_fail('ImageHasDependentClones', 'image %s has dependent clones: %s'
                            % (u, ', '.join(rec['cloneNames'])))
            zfs_destroy('zones/' + u, recursive=True)
            try:
                os.unlink(manifest_path(u))
            except FileNotFoundError:
                pass
        print('Deleted image %s' % u)
        return 0
    raise Fail('imgadm: error (UnknownCommand): unknown command: "%s"' % cmd, 1)


# ---------------------------------------------------------------------------
# workload writer: fixed-size self-checking records
#
# record (512 bytes): magic "ZLABREC1" | seq u64be | time_ns u64be | vm uuid (16) |
#                     filler (440, derived from seq) | sha256 of the preceding 480 bytes

REC_SIZE = 512
REC_MAGIC = b'ZLABREC1'
REC_HEAD = struct.Struct('>8sQQ16s')


def make_record(seq, uuid_bytes, t_ns=None):
    head = REC_HEAD.pack(REC_MAGIC, seq, t_ns if t_ns is not None else time.time_ns(),
                         uuid_bytes)
    filler = (hashlib.sha256(struct.pack('>Q', seq)).digest() * 14)[:440]
    body = head + filler
    return body + hashlib.sha256(body).digest()


def check_record(rec):
    """(seq, uuid_bytes) of a valid record, or None."""
    if len(rec) != REC_SIZE or rec[:8] != REC_MAGIC:
        return None
    if hashlib.sha256(rec[:480]).digest() != rec[480:]:
        return None
    _, seq, _, ub = REC_HEAD.unpack(rec[:40])
    return seq, ub


def uuid_bytes(u):
    try:
        return uuidlib.UUID(u).bytes
    except (ValueError, TypeError):
        return b'\0' * 16


def writer_rate(u):
    try:
        cfg = ZoneConfig.load(u)
        v = cfg.attr('zlab-write-rate') if cfg else None
        return int(v) if v is not None else DEFAULT_WRITE_RATE
    except (Fail, ValueError):
        return DEFAULT_WRITE_RATE


def cmd_writer(argv):
    u = None
    path = None
    rate = None
    i = 0
    while i < len(argv):
        if argv[i] == '--uuid' and i + 1 < len(argv):
            u = argv[i + 1]
        elif argv[i] == '--file' and i + 1 < len(argv):
            path = argv[i + 1]
        elif argv[i] == '--rate' and i + 1 < len(argv):
            rate = int(argv[i + 1])
        else:
            raise Fail('usage: zlab-writer [--uuid UUID] [--file PATH] [--rate BYTES_PER_SEC]', 2)
        i += 2
    if path is None:
        if u is None:
            raise Fail('zlab-writer: --file or --uuid required', 2)
        vm = load_vm(u, with_zfs=False)
        if vm is None:
            raise Fail('zlab-writer: no such VM %s' % u)
        path = writer_path(vm)
    fixed_rate = rate is not None
    if rate is None:
        rate = writer_rate(u) if u else DEFAULT_WRITE_RATE
    ub = uuid_bytes(u)
    flags = {'stop': False, 'reload': False}
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd)

    def on_stop(signum, frame):
        flags['stop'] = True

    def on_hup(signum, frame):
        flags['reload'] = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    size = os.fstat(fd).st_size
    whole = size - size % REC_SIZE
    if whole != size:
        os.ftruncate(fd, whole)
    seq = 0
    if whole:
        last = check_record(os.pread(fd, REC_SIZE, whole - REC_SIZE))
        if last is None:
            sys.stderr.write('zlab-writer: %s: last record is damaged\n' % path)
            return 1
        seq = last[0]
    offset = whole
    sys.stderr.write('zlab-writer: pid %d writing %s from seq %d at %d B/s\n'
                     % (os.getpid(), path, seq + 1, rate))
    next_t = time.monotonic()
    while not flags['stop']:
        if flags['reload']:
            flags['reload'] = False
            if not fixed_rate and u:
                rate = writer_rate(u)
                sys.stderr.write('zlab-writer: rate now %d B/s\n' % rate)
            next_t = time.monotonic()
        if rate <= 0:
            wait = 3600.0
        else:
            batch = max(1, int(rate * 0.1) // REC_SIZE)
            data = b''.join(make_record(seq + k + 1, ub) for k in range(batch))
            try:
                done = 0
                while done < len(data):
                    done += os.pwrite(fd, data[done:], offset + done)
                os.fsync(fd)
                seq += batch
                offset += len(data)
            except OSError as e:
                # keep the file made of whole records (ENOSPC, EDQUOT, ...)
                os.ftruncate(fd, offset)
                sys.stderr.write('zlab-writer: write failed at seq %d: %s\n'
                                 % (seq + 1, e.strerror))
                next_t = time.monotonic() + 1.0
            next_t += batch * REC_SIZE / rate
            now = time.monotonic()
            if next_t < now - 1.0:
                next_t = now
            wait = max(0.0, next_t - now)
        if flags['stop']:
            break
        try:
            select.select([rfd], [], [], wait)
        except InterruptedError:
            pass
        try:
            while os.read(rfd, 512):
                pass
        except BlockingIOError:
            pass
    os.close(fd)
    sys.stderr.write('zlab-writer: stopped after seq %d\n' % seq)
    return 0


def verify_file(path, want_uuid=None):
    """(records, first_seq, last_seq, error-or-None) of a writer file."""
    count = 0
    first = None
    last = None
    with open(path, 'rb') as f:
        offset = 0
        while True:
            rec = f.read(REC_SIZE)
            if not rec:
                break
            if len(rec) < REC_SIZE:
                return count, first, last, 'partial record of %d bytes at offset %d' \
                    % (len(rec), offset)
            r = check_record(rec)
            if r is None:
                return count, first, last, 'damaged record at offset %d' % offset
            seq, ub = r
            if want_uuid is not None and ub != want_uuid:
                return count, first, last, 'record at offset %d belongs to %s' \
                    % (offset, uuidlib.UUID(bytes=ub))
            if last is not None and seq != last + 1:
                return count, first, last, 'sequence jumps from %d to %d at offset %d' \
                    % (last, seq, offset)
            if first is None:
                first = seq
            last = seq
            count += 1
            offset += REC_SIZE
    return count, first, last, None


def cmd_verify(argv):
    min_seq = None
    verbose = False
    target = None
    i = 0
    while i < len(argv):
        if argv[i] == '--min-seq' and i + 1 < len(argv):
            min_seq = int(argv[i + 1])
            i += 2
            continue
        if argv[i] == '-v':
            verbose = True
        elif target is None:
            target = argv[i]
        else:
            raise Fail('usage: zlab-verify [-v] [--min-seq N] FILE|VM_UUID', 2)
        i += 1
    if target is None:
        raise Fail('usage: zlab-verify [-v] [--min-seq N] FILE|VM_UUID', 2)
    want = None
    path = target
    if is_uuid(target) and not os.path.exists(target):
        vm = load_vm(target, with_zfs=False)
        if vm is None:
            raise Fail('zlab-verify: no such VM %s' % target, 2)
        path = writer_path(vm)
        want = uuid_bytes(vm['uuid'])
    if not os.path.exists(path):
        raise Fail('zlab-verify: %s: No such file or directory' % path, 2)
    count, first, last, err = verify_file(path, want)
    if err is None and first is not None and first != 1:
        err = 'first record has seq %d, not 1' % first
    if err is None and min_seq is not None and (last or 0) < min_seq:
        err = 'last seq %d is below %d' % (last or 0, min_seq)
    if verbose:
        sys.stderr.write('%s: records=%d first=%s last=%s\n' % (path, count, first, last))
    if err:
        raise Fail('zlab-verify: %s: %s' % (path, err))
    print(last or 0)
    return 0


# ---------------------------------------------------------------------------
# zlab-sum: sha256 over names and contents under a path (one filesystem)

def tree_digest(root, excludes=()):
    h = hashlib.sha256()
    st = os.lstat(root)
    dev = st.st_dev

    def walk(rel):
        full = os.path.join(root, rel) if rel else root
        try:
            names = sorted(os.listdir(full), key=lambda n: n.encode('utf-8', 'surrogateescape'))
        except OSError as e:
            raise Fail('zlab-sum: %s: %s' % (full, e.strerror))
        for name in names:
            if not rel and name == '.zfs':
                continue
            if name in excludes:
                continue
            r = os.path.join(rel, name) if rel else name
            p = os.path.join(root, r)
            s = os.lstat(p)
            rb = r.encode('utf-8', 'surrogateescape')
            if os.path.islink(p):
                h.update(b'L' + rb + b'\0' + os.readlink(p).encode('utf-8', 'surrogateescape')
                         + b'\0')
            elif os.path.isdir(p):
                h.update(b'D' + rb + b'\0')
                if s.st_dev == dev:
                    walk(r)
            elif os.path.isfile(p):
                fh = hashlib.sha256()
                with open(p, 'rb') as f:
                    while True:
                        b = f.read(1 << 20)
                        if not b:
                            break
                        fh.update(b)
                h.update(b'F' + rb + b'\0' + fh.digest())
            else:
                h.update(b'O' + rb + b'\0')

    walk('')
    return h.hexdigest()


def cmd_sum(argv):
    excludes = []
    targets = []
    i = 0
    while i < len(argv):
        if argv[i] == '--exclude' and i + 1 < len(argv):
            excludes.append(argv[i + 1])
            i += 2
            continue
        targets.append(argv[i])
        i += 1
    if not targets:
        raise Fail('usage: zlab-sum [--exclude NAME]... PATH|DATASET...', 2)
    for t in targets:
        path = t
        if not t.startswith('/'):
            p = zfs('get', '-Hp', '-o', 'value', 'mountpoint,mounted', t, check=False)
            if p.returncode != 0:
                raise Fail('zlab-sum: %s' % (p.stderr.strip() or 'no such dataset ' + t))
            mp, mounted = (p.stdout.split('\n') + ['', ''])[:2]
            if mounted.strip() == '-' and openzfs() and zvol_mounted(t):
                mp, mounted = '/' + t, 'yes'  # a zvol disk: its ext4 filesystem
            if mounted.strip() != 'yes':
                raise Fail('zlab-sum: dataset %s is not mounted' % t)
            path = mp.strip()
        if not os.path.isdir(path):
            raise Fail('zlab-sum: %s: not a directory' % path)
        print('%s  %s' % (tree_digest(path, excludes), t))
    return 0


# ---------------------------------------------------------------------------
# zlab-agent: reports VMs to VMAPI like vm-agent (PUT /vms/:uuid)

def log(msg):
    sys.stderr.write('%s zlab-agent: %s\n' % (now_iso(), msg))
    sys.stderr.flush()


def put_vm(vmapi, vm, timeout=3.0):
    body = json.dumps(vm).encode()
    req = _urllib().request.Request('%s/vms/%s' % (vmapi, vm['uuid']), data=body, method='PUT',
                                 headers={'content-type': 'application/json',
                                          'accept': 'application/json',
                                          'accept-version': '*',
                                          'user-agent': 'vm-agent/lab (zlab-agent) server/%s'
                                          % vm.get('server_uuid', '')})
    with _urllib().request.urlopen(req, timeout=timeout) as r:
        r.read()


def get_sync_requests(vmapi, server):
    req = _urllib().request.Request('%s/_lab/sync-requests?server_uuid=%s' % (vmapi, server),
                                    headers={'accept': 'application/json'})
    with _urllib().request.urlopen(req, timeout=1.0) as r:
        out = json.loads(r.read().decode() or '[]')
    return [u for u in out if isinstance(u, str)] if isinstance(out, list) else []


def watch_signature():
    sig = []
    for p in (os.path.join(RUN_DIR, 'generation'), ZONES_ETC,
              os.path.join(ZONES_ETC, 'index'), os.path.join(RUN_DIR, 'zones')):
        try:
            s = os.stat(p)
            sig.append((p, s.st_mtime_ns, s.st_size))
        except OSError:
            sig.append((p, None, None))
    return sig


def cmd_agent(argv):
    cfg = node_config()
    vmapi = (os.environ.get('VMAPI_URL') or cfg.get('vmapi_url') or '').rstrip('/')
    if not vmapi:
        raise Fail('zlab-agent: no vmapi_url in %s' % NODE_JSON)
    poll = float(cfg.get('agent_poll_interval', 0.4))
    resend = float(cfg.get('agent_resend_interval', 10))
    once = '--once' in argv
    ensure_run_dir()
    state_path = os.path.join(RUN_DIR, 'agent-state.json')
    st = read_json(state_path, {}) or {}
    reported = st.get('reported', {})     # uuid -> last object sent (visible VMs)
    sent_json = {}                        # uuid -> json text last sent successfully
    dirty = set(reported)
    last_sig = None
    last_full = 0.0
    backoff = 0.0
    next_try = 0.0
    server = sysinfo().get('UUID') or cfg.get('server_uuid', '')
    log('starting: server %s, VMAPI %s' % (server, vmapi))
    stop = {'flag': False}

    def on_term(signum, frame):
        stop['flag'] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    while not stop['flag']:
        now = time.monotonic()
        sig = watch_signature()
        full = now - last_full >= resend
        if now >= next_try and not once:
            # VMAPI's GET /vms/:uuid?sync=true waits for our next report: report those now
            try:
                wanted = get_sync_requests(vmapi, server)
            except (_urllib().error.URLError, OSError, ValueError):
                wanted = []
            for u in wanted:
                if u in sent_json:
                    sent_json[u] = None
        if sig != last_sig or full or dirty or None in sent_json.values():
            last_sig = sig
            try:
                vms = load_all()
            except Exception as e:          # keep the agent alive on odd node states
                log('load failed: %s' % e)
                vms = None
            if vms is not None:
                visible = {v['uuid']: v for v in vms if not v.get('do_not_inventory')}
                for u, v in visible.items():
                    text = json.dumps(v, sort_keys=True)
                    if full or sent_json.get(u) != text:
                        dirty.add(u)
                for u in list(reported):
                    if u not in visible:
                        dirty.add(u)
                if full:
                    last_full = now
            if dirty and now >= next_try and vms is not None:
                failed = False
                for u in sorted(dirty):
                    if u in visible:
                        obj = visible[u]
                    else:
                        obj = dict(reported.get(u) or {'uuid': u})
                        obj['state'] = 'destroyed'
                        obj['zone_state'] = 'destroyed'
                    try:
                        put_vm(vmapi, obj)
                    except (_urllib().error.URLError, OSError, ValueError) as e:
                        if not failed:
                            log('PUT /vms/%s failed: %s (will retry)' % (u, e))
                        failed = True
                        continue
                    dirty.discard(u)
                    if u in visible:
                        sent_json[u] = json.dumps(obj, sort_keys=True)
                        reported[u] = obj
                    else:
                        log('reported %s destroyed' % u)
                        reported.pop(u, None)
                        sent_json.pop(u, None)
                try:
                    write_atomic(state_path, json.dumps({'reported': reported}))
                except OSError:
                    pass
                if failed:
                    backoff = min(max(0.5, backoff * 2), 5.0)
                    next_try = time.monotonic() + backoff
                else:
                    backoff = 0.0
        if once and not dirty:
            break
        time.sleep(poll)
    log('exiting')
    return 0


# ---------------------------------------------------------------------------
# sysinfo

def cmd_sysinfo(argv):
    print(dumps(sysinfo()))
    return 0


COMMANDS = {
    'vmadm': cmd_vmadm, 'zonecfg': cmd_zonecfg, 'zoneadm': cmd_zoneadm,
    'imgadm': cmd_imgadm, 'sysinfo': cmd_sysinfo, 'zlab-agent': cmd_agent,
    'zlab-writer': cmd_writer, 'zlab-verify': cmd_verify, 'zlab-sum': cmd_sum,
}


def main(command, argv):
    try:
        return COMMANDS[command](argv) or 0
    except Fail as f:
        sys.stdout.flush()
        sys.stderr.write(f.message + '\n')
        return f.code
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.stderr.write('usage: zlablib.py {%s} ARGS...\n' % ','.join(sorted(COMMANDS)))
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
