#!/usr/bin/python3
# SPDX-License-Identifier: MPL-2.0
"""Seed of the zmigrate lab: what the simulator serves and what the nodes hold.

    seed.py generate --lab-dir D --nodes N --subnet S   > D/seed.json
    seed.py apply --lab-dir D [--rebuild-images]

`generate` prints the seed (servers, networks, images, vms, lab) as JSON; the inventory
simulator loads it. `apply` makes the nodes match it: builds each image stream once on the
first node into D/images/<uuid>.zfs (zfs send of zones/<uuid>@final; the simulator serves it at
/images/<uuid>/file), imports the images with imgadm on the nodes listed in `present_on`,
creates every VM on its node with `vmadm create`, fills a few MB of data and leaves the running
ones running (each runs zlab-writer). One ssh session per node, nodes in parallel.
Run twice on the same nodes, apply fails clearly ("VM ... already exists").

Fixed identities (tests name instances by these; N < 2 puts cn2's VMs on cn1):

| alias   | uuid                                 | brand          | node | state   | image        |
|---------|--------------------------------------|----------------|------|---------|--------------|
| web01   | 5eed0000-0000-4000-8000-000000000101 | joyent         | cn1  | running | base-64-lts  |
| min01   | 5eed0000-0000-4000-8000-000000000102 | joyent-minimal | cn1  | running | minimal-64   |
| lx01    | 5eed0000-0000-4000-8000-000000000103 | lx             | cn1  | stopped | debian-12    |
| kvm01   | 5eed0000-0000-4000-8000-000000000201 | kvm            | cn2  | running | ubuntu-24.04 |
| bhyve01 | 5eed0000-0000-4000-8000-000000000202 | bhyve          | cn2  | running | ubuntu-24.04 |

web01 has two NICs (external + admin) and a delegated dataset (zones/<uuid>/data); min01 has
indestructible_zoneroot=true; kvm01 has sibling disks zones/<uuid>-disk0 (clone of the image)
and -disk1; bhyve01 has child disks zones/<uuid>/disk0, /disk1 and quota == reservation on
zones/<uuid>.

| image          | uuid                                 | type         | imported on |
|----------------|--------------------------------------|--------------|-------------|
| base-64-lts    | 1a9e0000-0000-4000-8000-000000000001 | zone-dataset | every node  |
| minimal-64-lts | 1a9e0000-0000-4000-8000-000000000002 | zone-dataset | cn1         |
| debian-12      | 1a9e0000-0000-4000-8000-000000000003 | lx-dataset   | cn1         |
| ubuntu-24.04   | 1a9e0000-0000-4000-8000-000000000004 | zvol         | cn2         |

LAB_LAYOUT=evacuate (5 nodes and more; `lab up 5`) makes a node to empty with real choices: it
seeds two more running joyent instances on cn1, app01 (admin NIC only) and app02 (asks for trait
ssd=true), and makes the targets differ: cn3 has no `external` NIC tag (only app01 may go
there), cn4 has trait ssd=true (kept for app02, as DAPI does), and the last node runs an older
platform (as always). With LAB_SEED_VMS=...,kvm01@1,bhyve01@1 cn1 holds every brand.

Networks: admin ae700000-0000-4000-8000-000000000001 (S.0/24, nic_tag admin),
external ae700000-0000-4000-8000-000000000002 (198.51.100.0/24, gateway .1, nic_tag external).
Servers: cnK = 564d0000-0000-4000-8000-0000000000KK at S.(10+K).
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
import time

OWNER = 'c0ffee00-0000-4000-8000-000000000001'
ADMIN_NET = 'ae700000-0000-4000-8000-000000000001'
EXTERNAL_NET = 'ae700000-0000-4000-8000-000000000002'
EXTERNAL_PREFIX = '198.51.100'
PKG = {256: '5ac40000-0000-4000-8000-000000000256', 512: '5ac40000-0000-4000-8000-000000000512',
       1024: '5ac40000-0000-4000-8000-000000001024'}
PLATFORM = '20240101T000000Z'
OLD_PLATFORM = '20230601T000000Z'

IMG_BASE = '1a9e0000-0000-4000-8000-000000000001'
IMG_MINIMAL = '1a9e0000-0000-4000-8000-000000000002'
IMG_DEBIAN = '1a9e0000-0000-4000-8000-000000000003'
IMG_UBUNTU = '1a9e0000-0000-4000-8000-000000000004'

# image uuid -> manifest basics, where it is imported (node numbers, 2 = min(2, N)),
# and what its dataset holds (path -> size in bytes of deterministic data, or text)
IMAGES = [
    {'uuid': IMG_BASE, 'name': 'base-64-lts', 'version': '23.4.0', 'type': 'zone-dataset',
     'os': 'smartos', 'published_at': '2024-01-10T00:00:00Z', 'nodes': 'all',
     'description': 'A 64-bit SmartOS image with just essential packages installed.',
     'files': {'root/etc/release': 'SmartOS base-64-lts 23.4.0 (lab)\n',
               'root/opt/local/bin/pkgin': 300000, 'root/usr/lib/libc.so.1': 200000,
               'root/var/tmp/': None, 'root/var/db/': None}},
    {'uuid': IMG_MINIMAL, 'name': 'minimal-64-lts', 'version': '23.4.0', 'type': 'zone-dataset',
     'os': 'smartos', 'published_at': '2024-01-11T00:00:00Z', 'nodes': [1],
     'description': 'A 64-bit SmartOS image with minimal packages.',
     'files': {'root/etc/release': 'SmartOS minimal-64-lts 23.4.0 (lab)\n',
               'root/usr/lib/libc.so.1': 150000, 'root/var/tmp/': None, 'root/var/db/': None}},
    {'uuid': IMG_DEBIAN, 'name': 'debian-12', 'version': '20240115', 'type': 'lx-dataset',
     'os': 'linux', 'published_at': '2024-01-15T00:00:00Z', 'nodes': [1],
     'description': 'Debian 12 (bookworm) LX image.',
     'requirements': {'brand': 'lx'},
     'files': {'root/etc/os-release': 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n',
               'root/usr/bin/bash': 250000, 'root/var/tmp/': None, 'root/var/db/': None}},
    {'uuid': IMG_UBUNTU, 'name': 'ubuntu-24.04', 'version': '20240201', 'type': 'zvol',
     'os': 'linux', 'published_at': '2024-02-01T00:00:00Z', 'nodes': [2], 'image_size': 16,
     'description': 'Ubuntu 24.04 LTS HVM image (a filesystem standing in for a zvol).',
     'files': {'disk.img': 1048576}},
]

VMS = [
    {'uuid': '5eed0000-0000-4000-8000-000000000101', 'alias': 'web01', 'brand': 'joyent',
     'node': 1, 'state': 'running', 'image_uuid': IMG_BASE, 'ram': 512, 'quota': 1,
     'create_timestamp': '2024-03-01T10:00:00.000Z', 'delegate_dataset': True,
     'nics': [('external', 11, True), ('admin', 101, False)],
     'tags': {'role': 'web', 'env': 'lab'}, 'customer_metadata': {'role': 'web'},
     'write_rate': 16384, 'fill': {'root/var/db/zlab-fill.bin': 3 << 20, 'data/fill.bin': 1 << 20}},
    {'uuid': '5eed0000-0000-4000-8000-000000000102', 'alias': 'min01', 'brand': 'joyent-minimal',
     'node': 1, 'state': 'running', 'image_uuid': IMG_MINIMAL, 'ram': 256, 'quota': 1,
     'create_timestamp': '2024-03-02T10:00:00.000Z', 'indestructible_zoneroot': True,
     'nics': [('external', 12, True)], 'tags': {'role': 'cache'},
     'write_rate': 8192, 'fill': {'root/var/db/zlab-fill.bin': 2 << 20}},
    {'uuid': '5eed0000-0000-4000-8000-000000000103', 'alias': 'lx01', 'brand': 'lx',
     'node': 1, 'state': 'stopped', 'image_uuid': IMG_DEBIAN, 'ram': 512, 'quota': 1,
     'create_timestamp': '2024-03-03T10:00:00.000Z', 'kernel_version': '4.3.0',
     'nics': [('external', 13, True)], 'tags': {'role': 'batch'},
     'write_rate': 8192, 'fill': {'root/var/db/zlab-fill.bin': 2 << 20}},
    {'uuid': '5eed0000-0000-4000-8000-000000000201', 'alias': 'kvm01', 'brand': 'kvm',
     'node': 2, 'state': 'running', 'ram': 256, 'quota': 1, 'vcpus': 1,
     'create_timestamp': '2024-03-04T10:00:00.000Z',
     'disks': [{'image_uuid': IMG_UBUNTU, 'boot': True, 'size': 16}, {'size': 8}],
     'nics': [('external', 21, True)], 'tags': {'role': 'db'},
     'write_rate': 8192, 'fill': {'disk0/fill.bin': 2 << 20, 'disk1/fill.bin': 1 << 20}},
    {'uuid': '5eed0000-0000-4000-8000-000000000202', 'alias': 'bhyve01', 'brand': 'bhyve',
     'node': 2, 'state': 'running', 'ram': 512, 'quota': 1, 'vcpus': 1,
     'create_timestamp': '2024-03-05T10:00:00.000Z',
     'disks': [{'image_uuid': IMG_UBUNTU, 'boot': True, 'size': 16}, {'size': 8}],
     'nics': [('external', 22, True)], 'tags': {'role': 'app'},
     'write_rate': 8192, 'fill': {'disk0/fill.bin': 2 << 20, 'disk1/fill.bin': 1 << 20}},
]

# LAB_LAYOUT=evacuate: more instances on cn1, each a small running joyent zone with a writer.
EVACUATE_VMS = [
    {'uuid': '5eed0000-0000-4000-8000-000000000111', 'alias': 'app01', 'brand': 'joyent',
     'node': 1, 'state': 'running', 'image_uuid': IMG_BASE, 'ram': 256, 'quota': 1,
     'create_timestamp': '2024-03-06T10:00:00.000Z', 'nics': [('admin', 111, True)],
     'tags': {'role': 'app'}, 'write_rate': 8192, 'fill': {'root/var/db/zlab-fill.bin': 1 << 20}},
    {'uuid': '5eed0000-0000-4000-8000-000000000112', 'alias': 'app02', 'brand': 'joyent',
     'node': 1, 'state': 'running', 'image_uuid': IMG_BASE, 'ram': 256, 'quota': 1,
     'create_timestamp': '2024-03-07T10:00:00.000Z', 'nics': [('external', 112, True)],
     'traits': {'ssd': True}, 'tags': {'role': 'app'}, 'write_rate': 8192,
     'fill': {'root/var/db/zlab-fill.bin': 1 << 20}},
]

SERVER_SHAPES = [  # (ram MiB, unreserved_ram, unreserved_disk MiB, cores)
    (16384, 11520, 40960, 8), (32768, 25600, 81920, 16), (8192, 6144, 20480, 4),
    (24576, 19456, 61440, 8)]


def server_uuid(k):
    return '564d0000-0000-4000-8000-0000000000%02d' % k


def node_addr(subnet, k):
    return '%s.%d' % (subnet, 10 + k)


def vm_node(vm, nodes):
    return min(vm['node'], nodes)


def image_nodes(img, nodes):
    if img['nodes'] == 'all':
        return list(range(1, nodes + 1))
    return sorted({min(k, nodes) for k in img['nodes']})


def mac_for(vm_uuid, i):
    n = int(vm_uuid[-3:], 16)
    return '90:b8:d0:5e:%02x:%02x' % (n & 0xff, 0x10 + i)


def nic_objects(vm, subnet):
    out = []
    for i, (tag, host, primary) in enumerate(vm['nics']):
        if tag == 'external':
            ip, gw, net = '%s.%d' % (EXTERNAL_PREFIX, host), '%s.1' % EXTERNAL_PREFIX, EXTERNAL_NET
        else:
            ip, gw, net = '%s.%d' % (subnet, host), '%s.1' % subnet, ADMIN_NET
        nic = {'interface': 'net%d' % i, 'mac': mac_for(vm['uuid'], i), 'vlan_id': 0,
               'nic_tag': tag, 'ip': ip, 'ips': ['%s/24' % ip], 'netmask': '255.255.255.0',
               'network_uuid': net, 'primary': primary}
        if primary:
            nic['gateway'] = gw
            nic['gateways'] = [gw]
        if vm['brand'] in ('kvm', 'bhyve'):
            nic['model'] = 'virtio'
        out.append(nic)
    return out


def hvm_mem(vm):
    return vm['ram'] + 256


def vm_object(vm, subnet, nodes):
    """The VM as VMAPI holds it (shapes of fixtures/vmapi-vm-*.json)."""
    hvm = vm['brand'] in ('kvm', 'bhyve')
    u = vm['uuid']
    mpm = hvm_mem(vm) if hvm else vm['ram']
    o = {
        'uuid': u, 'alias': vm['alias'], 'brand': vm['brand'], 'state': vm['state'],
        'zone_state': 'running' if vm['state'] == 'running' else 'installed',
        'server_uuid': server_uuid(vm_node(vm, nodes)), 'owner_uuid': OWNER,
        'billing_id': PKG.get(vm['ram'], PKG[512]), 'ram': vm['ram'],
        'max_physical_memory': mpm, 'max_swap': max(mpm, 256), 'max_locked_memory': mpm,
        'max_lwps': 2000, 'quota': vm['quota'], 'cpu_cap': None, 'cpu_shares': 100,
        'zfs_io_priority': 100, 'create_timestamp': vm['create_timestamp'], 'destroyed': None,
        'last_modified': vm['create_timestamp'], 'zpool': 'zones',
        'autoboot': vm['state'] == 'running', 'nics': nic_objects(vm, subnet),
        'resolvers': ['%s.1' % subnet] if not hvm else [],
        'customer_metadata': vm.get('customer_metadata', {}), 'internal_metadata': {},
        'tags': vm.get('tags', {}), 'snapshots': [], 'firewall_enabled': False,
        'zfs_filesystem': 'zones/' + u, 'zonepath': '/zones/' + u,
        'platform_buildstamp': PLATFORM,
    }
    if not hvm:
        o['image_uuid'] = vm['image_uuid']
        o['datasets'] = ['zones/%s/data' % u] if vm.get('delegate_dataset') else []
    else:
        o['vcpus'] = vm.get('vcpus', 1)
        if vm['brand'] == 'kvm':
            o['cpu_type'] = 'host'
        disks = []
        for i, d in enumerate(vm['disks']):
            ds = 'zones/%s-disk%d' % (u, i) if vm['brand'] == 'kvm' else 'zones/%s/disk%d' % (u, i)
            disk = {'path': '/dev/zvol/rdsk/' + ds, 'boot': bool(d.get('boot')),
                    'model': 'virtio', 'media': 'disk'}
            if d.get('image_uuid'):
                img = next(x for x in IMAGES if x['uuid'] == d['image_uuid'])
                disk.update({'image_uuid': d['image_uuid'], 'image_size': img['image_size'],
                             'image_name': img['name']})
            disk.update({'zfs_filesystem': ds, 'zpool': 'zones', 'size': d['size'],
                         'compression': 'off', 'refreservation': d['size'], 'block_size': 8192})
            disks.append(disk)
        o['disks'] = disks
        o['datasets'] = []
    if vm.get('indestructible_zoneroot'):
        o['indestructible_zoneroot'] = True
    if vm.get('traits'):
        o['traits'] = vm['traits']
    if vm['brand'] == 'lx':
        o['kernel_version'] = vm.get('kernel_version', '4.3.0')
    return o


def vmadm_payload(vm, subnet):
    """The vmadm create payload that makes this VM on its node."""
    hvm = vm['brand'] in ('kvm', 'bhyve')
    p = {'uuid': vm['uuid'], 'brand': vm['brand'], 'alias': vm['alias'],
         'autoboot': vm['state'] == 'running', 'owner_uuid': OWNER,
         'billing_id': PKG.get(vm['ram'], PKG[512]), 'quota': vm['quota'],
         'create_timestamp': vm['create_timestamp'], 'tags': vm.get('tags', {}),
         'customer_metadata': vm.get('customer_metadata', {}), 'internal_metadata': {},
         'nics': nic_objects(vm, subnet), 'zlab_write_rate': vm['write_rate']}
    if hvm:
        p.update({'ram': vm['ram'], 'max_physical_memory': hvm_mem(vm), 'vcpus': vm['vcpus'],
                  'disks': []})
        for d in vm['disks']:
            disk = {'boot': bool(d.get('boot')), 'model': 'virtio', 'size': d['size']}
            if d.get('image_uuid'):
                img = next(x for x in IMAGES if x['uuid'] == d['image_uuid'])
                disk.update({'image_uuid': d['image_uuid'], 'image_size': img['image_size'],
                             'image_name': img['name']})
            p['disks'].append(disk)
    else:
        p.update({'image_uuid': vm['image_uuid'], 'max_physical_memory': vm['ram'],
                  'resolvers': ['%s.1' % subnet]})
        for k in ('delegate_dataset', 'kernel_version'):
            if k in vm:
                p[k] = vm[k]
    if vm.get('indestructible_zoneroot'):
        p['indestructible_zoneroot'] = True
    return p


def sysinfo_for(k, subnet, shape, platform):
    ram, _, _, cores = shape
    return {
        'Live Image': platform, 'System Type': 'SunOS', 'Boot Time': '1704067200',
        'Datacenter Name': 'lab', 'SDC Version': '7.0', 'Manufacturer': 'zmigrate lab',
        'Product': 'Lab Node', 'Serial Number': 'LAB-CN%d' % k, 'SKU Number': '',
        'HW Version': 'None', 'HW Family': '', 'Setup': 'true', 'VM Capable': True,
        'Bhyve Capable': True,
        'CPU Type': 'Lab CPU', 'CPU Virtualization': 'vmx', 'CPU Physical Cores': cores // 2,
        'UUID': server_uuid(k), 'Hostname': 'cn%d' % k, 'CPU Total Cores': cores,
        'MiB of Memory': str(ram), 'Zpool': 'zones', 'Zpool Disks': 'c1t0d0',
        'Zpool Profile': 'striped', 'Zpool Creation': 1704067200, 'Zpool Size in GiB': 1,
        'Disks': {'c1t0d0': {'Size in GB': 1}},
        'Boot Parameters': {'console': 'text', 'headnode': 'false'},
        'SDC Agents': [],
        'Network Interfaces': {
            'e1000g0': {'MAC Address': '00:50:56:00:%02x:01' % k,
                        'ip4addr': node_addr(subnet, k), 'Link Status': 'up',
                        'NIC Names': ['admin']},
            'e1000g1': {'MAC Address': '00:50:56:00:%02x:02' % k, 'ip4addr': '',
                        'Link Status': 'up', 'NIC Names': ['external']},
        },
        'Virtual Network Interfaces': {},
        'Link Aggregations': {},
    }


def selected_vms():
    """VMS, or those named in LAB_SEED_VMS (comma-separated aliases, each optionally @K to place
    it on cnK); LAB_WRITE_RATE (bytes/s) overrides every writer's rate. The openzfs tier seeds
    only what it migrates: every process in a TCG guest costs ~10x what it costs on the host."""
    only = {}
    for item in (a for a in os.environ.get('LAB_SEED_VMS', '').split(',') if a):
        alias, _, node = item.partition('@')
        if node and not node.isdigit():
            die('LAB_SEED_VMS: %r: the node after @ is a number (cn3 is @3)' % item)
        only[alias] = int(node) if node else None
    layout = os.environ.get('LAB_LAYOUT', '')
    if layout not in ('', 'evacuate'):
        die('LAB_LAYOUT is "evacuate" or unset, not %r' % layout)
    known = VMS + (EVACUATE_VMS if layout == 'evacuate' else [])
    unknown = sorted(set(only) - {vm['alias'] for vm in known})
    if unknown:
        die('LAB_SEED_VMS names no seed instance: %s (known: %s)'
            % (', '.join(unknown), ', '.join(vm['alias'] for vm in known)))
    vms = [dict(vm) for vm in VMS if not only or vm['alias'] in only]
    vms += [dict(vm) for vm in known[len(VMS):]]
    for vm in vms:
        if only.get(vm['alias']):
            vm['node'] = only[vm['alias']]
    rate = os.environ.get('LAB_WRITE_RATE', '')
    if rate:
        if not rate.isdigit():
            die('LAB_WRITE_RATE must be a number of bytes per second, not %r' % rate)
        for vm in vms:
            vm['write_rate'] = int(rate)
    return vms


def generate(nodes, subnet):
    seed_vms = selected_vms()
    used_images = {vm.get('image_uuid') for vm in seed_vms} | \
        {d.get('image_uuid') for vm in seed_vms for d in vm.get('disks', [])}
    servers = []
    for k in range(1, nodes + 1):
        shape = SERVER_SHAPES[(k - 1) % len(SERVER_SHAPES)]
        platform = OLD_PLATFORM if (nodes >= 2 and k == nodes) else PLATFORM
        ram, unres_ram, unres_disk, cores = shape
        servers.append({
            'uuid': server_uuid(k), 'hostname': 'cn%d' % k, 'admin_ip': node_addr(subnet, k),
            'status': 'running', 'setup': True, 'reserved': False, 'reservoir': False,
            'headnode': False, 'traits': {}, 'ram': ram, 'cpu_cores': cores,
            'unreserved_ram': unres_ram, 'unreserved_disk': unres_disk,
            'unreserved_cpu': cores * 100, 'reservation_ratio': 0.15,
            'disk_pool_size_bytes': (unres_disk + 8192) * 1024 * 1024,
            'current_platform': platform, 'boot_platform': platform, 'datacenter': 'lab',
            'rack_identifier': '', 'comments': '',
            'sysinfo': sysinfo_for(k, subnet, shape, platform),
        })
    if os.environ.get('LAB_LAYOUT', '') == 'evacuate' and nodes >= 4:
        servers[2]['sysinfo']['Network Interfaces']['e1000g1']['NIC Names'] = []
        servers[3]['traits'] = {'ssd': True}
    networks = [
        {'uuid': ADMIN_NET, 'name': 'admin', 'subnet': '%s.0/24' % subnet,
         'netmask': '255.255.255.0', 'gateway': '%s.1' % subnet, 'nic_tag': 'admin',
         'vlan_id': 0, 'provision_start_ip': '%s.100' % subnet,
         'provision_end_ip': '%s.250' % subnet, 'resolvers': ['%s.1' % subnet], 'mtu': 1500,
         'family': 'ipv4', 'owner_uuids': []},
        {'uuid': EXTERNAL_NET, 'name': 'external', 'subnet': '%s.0/24' % EXTERNAL_PREFIX,
         'netmask': '255.255.255.0', 'gateway': '%s.1' % EXTERNAL_PREFIX, 'nic_tag': 'external',
         'vlan_id': 0, 'provision_start_ip': '%s.10' % EXTERNAL_PREFIX,
         'provision_end_ip': '%s.250' % EXTERNAL_PREFIX, 'resolvers': ['%s.1' % subnet],
         'mtu': 1500, 'family': 'ipv4'},
    ]
    images = []
    for img in IMAGES:
        m = {'v': 2, 'uuid': img['uuid'], 'owner': '00000000-0000-0000-0000-000000000000',
             'name': img['name'], 'version': img['version'], 'state': 'active',
             'disabled': False, 'public': True, 'published_at': img['published_at'],
             'type': img['type'], 'os': img['os'], 'description': img['description'],
             'requirements': img.get('requirements', {}),
             'files': [{'compression': 'none'}]}
        if img.get('image_size'):
            m['image_size'] = img['image_size']
        # An image no seeded instance uses is in IMGAPI but imported nowhere (LAB_SEED_VMS); one
        # that is used is imported on its nodes and on every node of an instance using it.
        present = []
        if img['uuid'] in used_images:
            users = {vm_node(vm, nodes) for vm in seed_vms
                     if img['uuid'] in {vm.get('image_uuid')} |
                     {d.get('image_uuid') for d in vm.get('disks', [])}}
            present = sorted(set(image_nodes(img, nodes)) | users)
        images.append({'manifest': m, 'present_on': ['cn%d' % k for k in present]})
    vms = [vm_object(vm, subnet, nodes) for vm in seed_vms]
    lab = {
        'generator': 'tests/lab/seed.py', 'nodes': nodes, 'subnet': subnet,
        'vms': {vm['uuid']: {'alias': vm['alias'], 'node': 'cn%d' % vm_node(vm, nodes),
                             'write_rate': vm['write_rate'],
                             'fill': vm['fill'],
                             'payload': vmadm_payload(vm, subnet)} for vm in seed_vms},
    }
    return {'datacenter': 'lab', 'servers': servers, 'networks': networks, 'images': images,
            'vms': vms, 'lab': lab}


# ---------------------------------------------------------------------------
# apply

BUILD_SCRIPT = r'''
import json, os, random, subprocess, sys
images = json.loads(%(images)r)
out = sys.stdout.buffer
for img in images:
    ds = 'zones/zlab-build-' + img['uuid']
    subprocess.run(['zfs', 'destroy', '-r', ds], stderr=subprocess.DEVNULL)
    zvol = img.get('type') == 'zvol' and os.path.isdir('/sys/module/zfs')
    mp = '/' + ds
    if zvol:
        # openzfs node: a zvol image is a real zvol holding an ext4 filesystem with the files
        import time
        subprocess.run(['zfs', 'create', '-V', '%%dM' %% img['image_size'], '-o', 'volblocksize=8k', ds], check=True)
        dev = '/dev/zvol/' + ds
        for i in range(400):
            if os.path.exists(dev):
                break
            time.sleep(0.05)
        subprocess.run(['mkfs.ext4', '-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', dev], check=True)
        os.makedirs(mp, exist_ok=True)
        subprocess.run(['mount', '-t', 'ext4', '-o', 'noatime', dev, mp], check=True)
    else:
        subprocess.run(['zfs', 'create', ds], check=True)
    rnd = random.Random(img['uuid'])
    for path, spec in sorted(img['files'].items()):
        full = os.path.join(mp, path)
        if path.endswith('/'):
            os.makedirs(full, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, 'wb') as f:
            f.write(spec.encode() if isinstance(spec, str) else rnd.randbytes(spec))
    if zvol:
        subprocess.run(['umount', mp], check=True)
        os.rmdir(mp)
    subprocess.run(['zfs', 'snapshot', ds + '@final'], check=True)
    p = subprocess.run(['zfs', 'send', ds + '@final'], stdout=subprocess.PIPE, check=True)
    out.write(b'ZLABIMG %%s %%d\n' %% (img['uuid'].encode(), len(p.stdout)))
    out.write(p.stdout)
    out.flush()
    for i in range(40):
        if subprocess.run(['zfs', 'destroy', '-r', ds], stderr=subprocess.DEVNULL).returncode == 0:
            break
        import time; time.sleep(0.1)
'''

NODE_SCRIPT = r'''
import json, os, random, subprocess, sys, time
job = json.loads(%(job)r)
def run(cmd, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if p.returncode != 0:
        sys.stderr.write('%%s: %%s failed:\n%%s' %% (job['node'], ' '.join(cmd), p.stdout))
        sys.exit(1)
    return p.stdout
with open('/tmp/.sysinfo.json.tmp', 'w') as f:
    json.dump(job['sysinfo'], f, indent=2)
os.rename('/tmp/.sysinfo.json.tmp', '/tmp/.sysinfo.json')
for u in job['images']:
    run(['imgadm', 'import', '-q', u])
for vm in job['vms']:
    u = vm['payload']['uuid']
    path = '/tmp/zlab-seed-%%s.json' %% u
    with open(path, 'w') as f:
        json.dump(vm['payload'], f)
    run(['vmadm', 'create', '-f', path])
    os.unlink(path)
    brand = vm['payload']['brand']
    for rel, size in sorted(vm['fill'].items()):
        if brand == 'kvm' and rel.startswith('disk'):
            d, _, name = rel.partition('/')
            full = '/zones/%%s-%%s/%%s' %% (u, d, name)
        else:
            full = '/zones/%%s/%%s' %% (u, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        rnd = random.Random(u + rel)
        with open(full, 'wb') as f:
            f.write(rnd.randbytes(size))
            f.flush()
            os.fsync(f.fileno())
print(json.dumps({'node': job['node'], 'vms': run(['vmadm', 'list', '-p', '-o', 'uuid,alias,state'])}))
'''


class Apply:
    def __init__(self, lab_dir, rebuild):
        self.lab_dir = lab_dir
        self.rebuild = rebuild
        path = os.path.join(lab_dir, 'seed.json')
        try:
            with open(path) as f:
                self.seed = json.load(f)
        except (OSError, ValueError) as e:
            die('cannot read %s: %s' % (path, e))
        self.nodes = {}
        for s in self.seed['servers']:
            self.nodes[s['hostname']] = {'addr': s['admin_ip'], 'server': s}
        for p in ('operator_key', 'known_hosts'):
            if not os.path.exists(os.path.join(lab_dir, p)):
                die('%s/%s is missing (is the lab up?)' % (lab_dir, p))

    def ssh(self, node, script, binary=False):
        addr = self.nodes[node]['addr']
        cmd = ['ssh', '-i', os.path.join(self.lab_dir, 'operator_key'), '-o', 'IdentitiesOnly=yes',
               '-o', 'UserKnownHostsFile=' + os.path.join(self.lab_dir, 'known_hosts'),
               '-o', 'GlobalKnownHostsFile=/dev/null', '-o', 'StrictHostKeyChecking=yes',
               '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', '-o', 'LogLevel=ERROR',
               'root@' + addr, '--', '/usr/bin/python3', '-']
        p = subprocess.run(cmd, input=script.encode(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise ApplyError('%s (%s): remote script failed (status %d):\n%s'
                             % (node, addr, p.returncode,
                                p.stderr.decode(errors='replace').rstrip()))
        return p.stdout if binary else p.stdout.decode()

    def build_images(self):
        imgdir = os.path.join(self.lab_dir, 'images')
        os.makedirs(imgdir, exist_ok=True)

        def kind_of(node):
            return 'openzfs' if os.path.exists(os.path.join(self.lab_dir, 'nodes', node, 'kind')) \
                else 'zfs-fuse'
        ordered = sorted(self.nodes, key=lambda n: int(n[2:]))
        first_of_kind = {}
        for n in ordered:
            first_of_kind.setdefault(kind_of(n), n)

        def builder(img):
            # An openzfs guest makes zvol images real zvols. In a mixed lab the filesystem images
            # are built on a zfs-fuse node: OpenZFS receives zfs-fuse's streams, but zfs-fuse
            # silently mis-receives OpenZFS 2.3's (files missing, exit status 0).
            if img['type'] == 'zvol':
                return first_of_kind.get('openzfs', ordered[0])
            return first_of_kind.get('zfs-fuse', ordered[0])

        todo = {}  # node -> [(img, recipe)]
        for img in IMAGES:
            node = builder(img)
            kind = kind_of(node)
            recipe = hashlib.sha256(json.dumps(img, sort_keys=True).encode()).hexdigest()
            if kind != 'zfs-fuse':
                recipe = hashlib.sha256((recipe + kind).encode()).hexdigest()
            stream = os.path.join(imgdir, img['uuid'] + '.zfs')
            stamp = stream + '.recipe'
            try:
                with open(stamp) as f:
                    same = f.read().strip() == recipe
            except OSError:
                same = False
            if self.rebuild or not same or not os.path.exists(stream):
                todo.setdefault(node, []).append((img, recipe))
        built = 0
        for node, items in sorted(todo.items()):
            spec = json.dumps([{'uuid': i['uuid'], 'files': i['files'], 'type': i['type'],
                                'image_size': i.get('image_size', 16)} for i, _ in items])
            data = self.ssh(node, BUILD_SCRIPT % {'images': spec}, binary=True)
            pos = 0
            recipes = {i['uuid']: r for i, r in items}
            while pos < len(data):
                nl = data.index(b'\n', pos)
                tag, u, size = data[pos:nl].decode().split()
                if tag != 'ZLABIMG':
                    die('bad image stream framing from %s' % node)
                size = int(size)
                body = data[nl + 1:nl + 1 + size]
                pos = nl + 1 + size
                stream = os.path.join(imgdir, u + '.zfs')
                with open(stream + '.tmp', 'wb') as f:
                    f.write(body)
                os.rename(stream + '.tmp', stream)
                with open(stream + '.recipe', 'w') as f:
                    f.write(recipes[u] + '\n')
                built += 1
        return built

    def node_jobs(self):
        lab = self.seed.get('lab', {})
        jobs = {n: {'node': n, 'sysinfo': v['server'].get('sysinfo', {}), 'images': [], 'vms': []}
                for n, v in self.nodes.items()}
        for img in self.seed['images']:
            u = img['manifest']['uuid']
            for n in img.get('present_on', []):
                if n in jobs:
                    jobs[n]['images'].append(u)
        for u, info in lab.get('vms', {}).items():
            n = info['node']
            if n not in jobs:
                die('VM %s is placed on %s, which is not in the seed' % (u, n))
            needed = [d.get('image_uuid') for d in info['payload'].get('disks', [])] + \
                [info['payload'].get('image_uuid')]
            for i in needed:
                if i and i not in jobs[n]['images']:
                    jobs[n]['images'].append(i)
            jobs[n]['vms'].append({'payload': info['payload'], 'fill': info['fill']})
        return jobs

    def run(self):
        t0 = time.time()
        built = self.build_images()
        t1 = time.time()
        jobs = self.node_jobs()
        results = {}
        errors = []

        def work(node, job):
            try:
                results[node] = self.ssh(node, NODE_SCRIPT % {'job': json.dumps(job)})
            except ApplyError as e:
                errors.append(str(e))

        threads = [threading.Thread(target=work, args=(n, j)) for n, j in jobs.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            die('\n'.join(errors))
        nvms = sum(len(j['vms']) for j in jobs.values())
        sys.stderr.write('seed: %d image stream(s) built in %.1f s; %d VM(s) created on %d '
                         'node(s) in %.1f s\n' % (built, t1 - t0, nvms, len(jobs),
                                                   time.time() - t1))


class ApplyError(Exception):
    pass


def die(msg):
    sys.stderr.write('seed.py: %s\n' % msg)
    raise SystemExit(1)


def main():
    ap = argparse.ArgumentParser(description='zmigrate lab seed')
    sub = ap.add_subparsers(dest='cmd', required=True)
    g = sub.add_parser('generate', help='print seed.json')
    g.add_argument('--lab-dir', default=os.environ.get('LAB_DIR'))
    g.add_argument('--nodes', type=int, default=int(os.environ.get('LAB_NODES', '3')))
    g.add_argument('--subnet', default=os.environ.get('LAB_SUBNET', '10.99.0'))
    a = sub.add_parser('apply', help='make the nodes match LAB_DIR/seed.json')
    a.add_argument('--lab-dir', default=os.environ.get('LAB_DIR'))
    a.add_argument('--rebuild-images', action='store_true')
    args = ap.parse_args()
    if args.cmd == 'generate':
        if args.nodes < 1:
            die('--nodes must be at least 1')
        json.dump(generate(args.nodes, args.subnet), sys.stdout, indent=2)
        sys.stdout.write('\n')
        return 0
    if not args.lab_dir:
        die('--lab-dir is required')
    try:
        Apply(args.lab_dir, args.rebuild_images).run()
    except ApplyError as e:
        die(str(e))
    return 0


if __name__ == '__main__':
    sys.exit(main())
