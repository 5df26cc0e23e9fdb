# SPDX-License-Identifier: MPL-2.0
"""Bookkeeping for bench/run: records measurements as JSON lines, then reports them.

  bench.py last-doc FILE                 print the last JSON document of zmigrate --json output
  bench.py record JSONL FIG [k=v ...] [--zm FILE] [--time-v FILE] [--json-file FILE]
                                         append one measurement; v is parsed as JSON when it can
                                         be (numbers), else kept as a string; --zm adds the sync /
                                         switch object of a zmigrate --json run, --time-v the peak
                                         RSS of a /usr/bin/time -v report, --json-file the keys of
                                         a JSON object (zmigrate_plan_bench's output)
  bench.py report JSONL OUT              compute the figures, write OUT (JSON), print a table
  bench.py sshd-count LOG FIRST LAST HEAD PEER
                                         count the connections and sessions a node's sshd logged
                                         in lines FIRST..LAST-1 (0-based), by peer address: HEAD,
                                         PEER (the other node) or elsewhere; prints JSON
  bench.py sshd-summary SOURCE.json TARGET.json
                                         one line of two sshd-count results, for the progress

No figure is judged pass/fail: targets are printed beside the measured values."""
import json
import re
import statistics
import sys


def docs(text):
    """Every JSON document in zmigrate --json output (compact progress lines, then the result
    pretty-printed), in order."""
    dec = json.JSONDecoder()
    out = []
    i = 0
    n = len(text)
    while i < n:
        while i < n and text[i] in ' \t\r\n':
            i += 1
        if i >= n:
            break
        try:
            obj, end = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            # not JSON (a stray line): skip to the next line
            nl = text.find('\n', i)
            i = n if nl < 0 else nl + 1
            continue
        out.append(obj)
        i = end
    return out


def last_doc(path):
    with open(path) as f:
        d = docs(f.read())
    if not d:
        raise SystemExit('bench.py: %s holds no JSON document' % path)
    return d[-1]


def peak_rss_kib(path):
    with open(path) as f:
        for line in f:
            if 'Maximum resident set size' in line:
                return int(line.rsplit(':', 1)[1].strip())
    raise SystemExit('bench.py: %s has no "Maximum resident set size" line' % path)


def parse_value(v):
    try:
        return json.loads(v)
    except ValueError:
        return v


def cmd_record(argv):
    path, fig = argv[0], argv[1]
    rec = {'fig': fig}
    i = 2
    while i < len(argv):
        a = argv[i]
        if a == '--zm':
            d = last_doc(argv[i + 1])
            for key in ('sync', 'switch', 'syncs', 'rollback'):
                if key in d:
                    rec['zm_' + key] = d[key]
            i += 2
        elif a == '--json-file':
            with open(argv[i + 1]) as f:
                rec.update(json.load(f))
            i += 2
        elif a == '--time-v':
            rec['peak_rss_kib'] = peak_rss_kib(argv[i + 1])
            i += 2
        else:
            k, _, v = a.partition('=')
            rec[k] = parse_value(v)
            i += 1
    with open(path, 'a') as f:
        f.write(json.dumps(rec, sort_keys=True) + '\n')


# --------------------------------------------------------------------------------------------
# sshd logs (figure 8): a lab node's sshd runs with LogLevel VERBOSE and writes, without time
# stamps, "Connection from ADDR port P on ADDR port 22 ..." per connection and
# "Starting session: KIND for USER from ADDR port P id N" per session (each remote command; KIND
# is "command" or "forced-command (key-option) '...'" for a key with a forced command).

SSHD_CONNECTION = re.compile(r'Connection from (\S+) port (\d+) on ')
SSHD_SESSION = re.compile(r'Starting session: (.*) for \S+ from (\S+) port (\d+) id \d+$')
# zmigrate's data-path directory differs per migration; the kind is kept without it
SSHD_PATH_ID = re.compile(r'/var/run/zmigrate/[^/\s\']+/')


def sshd_count(lines, head, peer):
    def who(addr):
        return 'head' if addr == head else 'other_node' if addr == peer else 'elsewhere'
    out = {'sessions_from_head': 0, 'sessions_from_other_node': 0, 'sessions_from_elsewhere': 0,
           'connections_from_head': 0, 'connections_from_other_node': 0,
           'connections_from_elsewhere': 0, 'session_kinds': {}, 'log_lines': len(lines),
           'head_address': head, 'other_node_address': peer}
    for line in lines:
        m = SSHD_CONNECTION.match(line)
        if m:
            out['connections_from_' + who(m[1])] += 1
            continue
        m = SSHD_SESSION.match(line)
        if m:
            w = who(m[2])
            out['sessions_from_' + w] += 1
            kind = '%s: %s' % (w, SSHD_PATH_ID.sub('/var/run/zmigrate/<path>/', m[1]))
            out['session_kinds'][kind] = out['session_kinds'].get(kind, 0) + 1
    out['sessions'] = sum(out['sessions_from_' + w] for w in ('head', 'other_node', 'elsewhere'))
    out['connections'] = sum(out['connections_from_' + w]
                             for w in ('head', 'other_node', 'elsewhere'))
    return out


def cmd_sshd_count(argv):
    log, first, last, head, peer = argv[0], int(argv[1]), int(argv[2]), argv[3], argv[4]
    with open(log, encoding='utf-8', errors='replace') as f:
        lines = f.read().splitlines()[first:last]
    print(json.dumps(sshd_count(lines, head, peer), sort_keys=True))


def cmd_sshd_summary(argv):
    parts = []
    for role, path in zip(('source', 'target'), argv):
        with open(path) as f:
            c = json.load(f)
        parts.append('%s %d sessions from head + %d from the other node%s, %d connections' % (
            role, c['sessions_from_head'], c['sessions_from_other_node'],
            ' + %d from elsewhere' % c['sessions_from_elsewhere']
            if c['sessions_from_elsewhere'] else '', c['connections']))
    print(', '.join(parts))


# --------------------------------------------------------------------------------------------
# report

def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {'median': statistics.median(values), 'min': min(values), 'max': max(values),
            'n': len(values), 'values': values}


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def med(s):
    return s['median'] if s else None


def pipes_ms(transfers):
    """Milliseconds the send | ssh | recv pipes of a sync took: streams of one lane one after
    the other, lanes at once (the longest lane)."""
    lanes = {}
    for t in transfers:
        lanes[t.get('lane', 0)] = lanes.get(t.get('lane', 0), 0) + t['duration_ms']
    return max(lanes.values()) if lanes else 0


def overhead(r):
    """Milliseconds of a zmigrate sync spent outside its send | ssh | recv pipes."""
    s = r.get('zm_sync')
    if not s or 'transfers' not in s:
        return None
    return s['duration_ms'] - pipes_ms(s['transfers'])


def build(records):
    by = {}
    for r in records:
        by.setdefault(r['fig'], []).append(r)
    meta = {}
    for r in by.get('meta', []):
        meta.update({k: v for k, v in r.items() if k != 'fig'})
    res = {'meta': meta, 'notes': [r['text'] for r in by.get('note', [])]}

    # 1. switch downtime
    rounds = by.get('switch', [])
    zm_down = stats([r['zm_switch']['downtime_ms'] for r in rounds if 'zm_switch' in r])
    gaps = stats([r.get('writer_gap_ms') for r in rounds])
    # zmigrate's order of the downtime window, then any step this list does not know
    order = ['stop', 'final_sync', 'hide_source', 'update_vmapi', 'promote_target', 'start_target']
    seen = {k for r in rounds for k in r.get('zm_switch', {}).get('downtime_steps_ms', {})}
    step_names = [k for k in order if k in seen] + sorted(seen - set(order))
    steps = {k: stats([r['zm_switch']['downtime_steps_ms'].get(k) for r in rounds
                       if 'zm_switch' in r]) for k in step_names}
    base = stats([r['ms'] for r in by.get('switch_baseline', [])])
    res['switch_downtime'] = {
        'rounds': [{k: r.get(k) for k in ('round', 'from', 'to', 'switch_wall_ms', 'writer_gap_ms',
                                          'writer_last_source_seq', 'finalize_attempts')}
                   | {'downtime_ms': r.get('zm_switch', {}).get('downtime_ms'),
                      'downtime_steps_ms': r.get('zm_switch', {}).get('downtime_steps_ms'),
                      'final_bytes': r.get('zm_switch', {}).get('final_bytes')}
                   for r in rounds],
        'zmigrate_downtime_ms': zm_down,
        'writer_gap_ms': gaps,
        'downtime_steps_ms': steps,
        'baseline_snapshot_1mb_incremental_ms': base,
        'ratio_zmigrate_to_baseline': ratio(med(zm_down), med(base)),
        'writer_rate_bytes_s': meta.get('switch_write_rate'),
    }

    # 2. 10 MB delta sync vs syncoid
    zs = by.get('delta_zmigrate', [])
    ys = by.get('delta_syncoid', [])
    zwall = stats([r['wall_ms'] for r in zs])
    ywall = stats([r['wall_ms'] for r in ys])
    res['delta_sync'] = {
        'delta_bytes_written': meta.get('delta_bytes'),
        'zmigrate_wall_ms': zwall,
        'zmigrate_reported_ms': stats([r.get('zm_sync', {}).get('duration_ms') for r in zs]),
        'zmigrate_bytes': stats([r.get('zm_sync', {}).get('bytes') for r in zs]),
        'zmigrate_outside_transfers_ms': stats([overhead(r) for r in zs]),
        'syncoid_wall_ms': ywall,
        'ratio_zmigrate_to_syncoid': ratio(med(zwall), med(ywall)),
        'target_ratio_max': 0.5,
    }

    # 3. full sync throughput
    fz = by.get('full_zmigrate', [])
    fp = by.get('full_plain', [])
    z_rate = stats([r['zm_sync']['bytes'] / (r['wall_ms'] / 1000.0) for r in fz if 'zm_sync' in r])
    z_own = stats([r['zm_sync'].get('bytes_per_second') for r in fz if 'zm_sync' in r])
    # the data path alone: bytes over the time of the send | ssh | recv pipes themselves
    z_pipe = stats([sum(t['bytes'] for t in r['zm_sync']['transfers'])
                    / (pipes_ms(r['zm_sync']['transfers']) / 1000.0)
                    for r in fz if r.get('zm_sync', {}).get('transfers')
                    and pipes_ms(r['zm_sync']['transfers']) > 0])
    p_rate = stats([r['bytes'] / (r['wall_ms'] / 1000.0) for r in fp])
    res['full_sync'] = {
        'zmigrate_bytes': stats([r.get('zm_sync', {}).get('bytes') for r in fz]),
        'zmigrate_wall_ms': stats([r['wall_ms'] for r in fz]),
        'zmigrate_bytes_per_s_wall': z_rate,
        'zmigrate_bytes_per_s_reported': z_own,
        'zmigrate_bytes_per_s_transfers': z_pipe,
        'zmigrate_outside_transfers_ms': stats([overhead(r) for r in fz]),
        'plain_bytes': stats([r['bytes'] for r in fp]),
        'plain_wall_ms': stats([r['wall_ms'] for r in fp]),
        'plain_bytes_per_s': p_rate,
        'ratio_wall': ratio(med(z_rate), med(p_rate)),
        'ratio_reported': ratio(med(z_own), med(p_rate)),
        'ratio_transfers': ratio(med(z_pipe), med(p_rate)),
        'target_ratio_min': 0.95,
    }

    # 4. migrate wall time
    mg = by.get('migrate', [])
    res['migrate'] = {
        'wall_ms': stats([r['wall_ms'] for r in mg]),
        'syncs': stats([len(r.get('zm_syncs', [])) for r in mg]),
        'sync_ms': [[s.get('duration_ms') for s in r.get('zm_syncs', [])] for r in mg],
        'bytes_sent': stats([sum(s.get('bytes', 0) for s in r.get('zm_syncs', []))
                             + (r.get('zm_switch') or {}).get('final_bytes', 0) for r in mg]),
        'instance_bytes': meta.get('migrate_instance_bytes'),
        'downtime_ms': stats([(r.get('zm_switch') or {}).get('downtime_ms') for r in mg]),
        'target_wall_ms_max': 5000,
    }

    # 5. peak RSS
    res['peak_rss'] = {
        'full_sync_kib': stats([r.get('peak_rss_kib') for r in fz]),
        'delta_sync_kib': stats([r.get('peak_rss_kib') for r in zs]),
        'target_kib_max': 64 * 1024,
    }

    # 7. evacuation, --parallel 1 vs 3
    ev = {r.get('parallel'): r for r in by.get('evacuate', [])}
    rs = {r.get('parallel'): r for r in by.get('restore', [])}
    p1, p3 = ev.get(1, {}), ev.get(3, {})
    res['evacuate'] = {
        'instances': p1.get('instances'),
        'bytes': p1.get('bytes'),
        'parallel_1_wall_ms': p1.get('wall_ms'),
        'parallel_3_wall_ms': p3.get('wall_ms'),
        'speedup': ratio(p1.get('wall_ms'), p3.get('wall_ms')),
        'restore_parallel_1_wall_ms': rs.get(1, {}).get('wall_ms'),
        'restore_parallel_3_wall_ms': rs.get(3, {}).get('wall_ms'),
    }

    # 8. remote commands per sync, per node, from the nodes' sshd logs
    windows = {}
    for r in by.get('sshd_window', []):
        windows.setdefault(r['window'], {}).setdefault(r['role'], []).append(r)
    counted = ('sessions', 'sessions_from_head', 'sessions_from_other_node',
               'sessions_from_elsewhere', 'connections', 'connections_from_head',
               'connections_from_other_node', 'connections_from_elsewhere')

    def window(name):
        w = windows.get(name)
        if not w:
            return None
        out = {}
        for role, rs in w.items():
            out[role] = {'node': rs[0].get('node'), 'session_kinds': rs[0].get('session_kinds')}
            out[role].update({k: stats([x.get(k) for x in rs]) for k in counted})
        return out

    rc = {
        'zmigrate_incremental_sync': window('zmigrate_incremental_sync'),
        'zmigrate_unchanged_sync': window('zmigrate_unchanged_sync'),
        'syncoid_incremental': window('syncoid_incremental'),
        'syncoid_unchanged': window('syncoid_unchanged'),
        'delta_bytes_written': 1 << 20,
        'zmigrate_incremental_wall_ms': stats([r['wall_ms'] for r in by.get('cmds_zmigrate', [])]),
        'zmigrate_incremental_bytes': stats([r.get('zm_sync', {}).get('bytes')
                                             for r in by.get('cmds_zmigrate', [])]),
        'syncoid_incremental_wall_ms': stats([r['wall_ms'] for r in by.get('cmds_syncoid', [])]),
        'target_sessions_per_node_max': 2,
    }
    inc = rc['zmigrate_incremental_sync'] or {}
    rc['zmigrate_incremental_sessions_per_node_max'] = max(
        (med(v['sessions']) for v in inc.values() if v.get('sessions')), default=None)
    res['remote_commands'] = rc

    # 9. a sync when nothing changed: zmigrate sync vs syncoid
    iz = by.get('idle_zmigrate', [])
    iy = by.get('idle_syncoid', [])
    izwall = stats([r['wall_ms'] for r in iz])
    iywall = stats([r['wall_ms'] for r in iy])
    res['unchanged_sync'] = {
        'zmigrate_wall_ms': izwall,
        'zmigrate_reported_ms': stats([r.get('zm_sync', {}).get('duration_ms') for r in iz]),
        'zmigrate_bytes': stats([r.get('zm_sync', {}).get('bytes') for r in iz]),
        'zmigrate_peak_rss_kib': stats([r.get('peak_rss_kib') for r in iz]),
        'syncoid_wall_ms': iywall,
        'ratio_zmigrate_to_syncoid': ratio(med(izwall), med(iywall)),
        'target_ratio_max': 0.5,
    }

    # 10. a 2-disk KVM instance's first sync: datasets at once vs one after the other
    kz = [r for r in by.get('kvm_full', []) if r.get('zm_sync', {}).get('transfers')]
    one = [r for r in kz if r.get('streams') == 1]
    many = [r for r in kz if r.get('streams') != 1]
    w1 = stats([r['wall_ms'] for r in one])
    wn = stats([r['wall_ms'] for r in many])
    p1 = stats([pipes_ms(r['zm_sync']['transfers']) for r in one])
    pn = stats([pipes_ms(r['zm_sync']['transfers']) for r in many])
    res['kvm_concurrent'] = {
        'disk_bytes_written_each': meta.get('kvm_disk_bytes'),
        'streams': max((r.get('streams') for r in many), default=None),
        'zmigrate_bytes': stats([r['zm_sync'].get('bytes') for r in kz]),
        'lanes_used': stats([len({t.get('lane', 0) for t in r['zm_sync']['transfers']})
                             for r in many]),
        'one_at_a_time_wall_ms': w1,
        'at_once_wall_ms': wn,
        'one_at_a_time_pipes_ms': p1,
        'at_once_pipes_ms': pn,
        'ratio_wall': ratio(med(wn), med(w1)),
        'ratio_pipes': ratio(med(pn), med(p1)),
    }

    # 6. placement planning
    pl = by.get('placement', [])
    last = pl[-1] if pl else {}
    res['placement'] = {
        'instances': last.get('instances'),
        'nodes': last.get('nodes'),
        'plan_ms': stats([v for r in pl for v in r.get('plan_ms', [])]),
        'placed': last.get('placed'),
        'unplaced': last.get('unplaced'),
        'rejections': last.get('rejections'),
        'target_ms_max': 1000,
    }
    return res


def fmt_ms(s):
    if not s:
        return 'n/a'
    if s['n'] == 1:
        return '%.0f ms' % s['median']
    return '%.0f ms (min %.0f, max %.0f, n=%d)' % (s['median'], s['min'], s['max'], s['n'])


def fmt_rate(s):
    if not s:
        return 'n/a'
    m = 1024.0 * 1024.0
    return '%.1f MiB/s (min %.1f, max %.1f, n=%d)' % (s['median'] / m, s['min'] / m,
                                                       s['max'] / m, s['n'])


def fmt_ratio(r):
    return 'n/a' if r is None else '%.2f' % r


def fmt_kib(s):
    if not s:
        return 'n/a'
    return '%.1f MiB (max %.1f, n=%d)' % (s['median'] / 1024.0, s['max'] / 1024.0, s['n'])


def fmt_bytes(v):
    return 'n/a' if v is None else '%.1f MiB' % (v / 1048576.0)


def table(res):
    m = res['meta']
    sd, ds, fs, mg, rss = (res['switch_downtime'], res['delta_sync'], res['full_sync'],
                           res['migrate'], res['peak_rss'])
    lines = [
        'zmigrate bench (%s, zmigrate %s, lab %s, pool %s)' % (
            m.get('started', '?'), m.get('zmigrate_version', '?'), m.get('lab_name', '?'),
            m.get('pool_size', '?')),
        'SHARED MACHINE: %s cores; load average at start %s, at end %s. Times are CPU-bound and'
        % (m.get('cpus', '?'), m.get('load_start', '?'), m.get('load_end', '?')),
        'move with the load; compare the ratios (measured side by side in this run), not the'
        ' absolute values.',
        '',
        '1. switch downtime, web01 with its writer at %s B/s, %s rounds alternating between cn1 and cn2'
        % (sd.get('writer_rate_bytes_s'), (sd['zmigrate_downtime_ms'] or {}).get('n', 0)),
        '   zmigrate switch.downtime_ms     %s' % fmt_ms(sd['zmigrate_downtime_ms']),
        '   writer gap (last record on the source -> first on the target)',
        '                                   %s' % fmt_ms(sd['writer_gap_ms']),
    ]
    for k, s in sd['downtime_steps_ms'].items():
        lines.append('     step %-25s %s' % (k, fmt_ms(s)))
    lines += [
        '   baseline: zfs snapshot + 1 MiB incremental send | ssh | recv',
        '                                   %s' % fmt_ms(sd['baseline_snapshot_1mb_incremental_ms']),
        '   ratio zmigrate downtime/baseline %s' % fmt_ratio(sd['ratio_zmigrate_to_baseline']),
        '',
        '2. %s delta sync: zmigrate sync vs syncoid (target ratio <= 0.5)'
        % fmt_bytes(ds['delta_bytes_written']),
        '   zmigrate sync (wall, head)      %s' % fmt_ms(ds['zmigrate_wall_ms']),
        '   zmigrate sync (its own figure)  %s' % fmt_ms(ds['zmigrate_reported_ms']),
        '     of which outside the pipes    %s' % fmt_ms(ds['zmigrate_outside_transfers_ms']),
        '   syncoid (wall, on cn1)          %s' % fmt_ms(ds['syncoid_wall_ms']),
        '   ratio zmigrate/syncoid          %s' % fmt_ratio(ds['ratio_zmigrate_to_syncoid']),
        '',
        '3. full sync throughput (first sync of a begin) vs plain zfs send | ssh -c aes128-gcm | zfs recv'
        ' (target ratio >= 0.95)',
        '   zmigrate bytes sent             %s' % fmt_bytes(med(fs['zmigrate_bytes'])),
        '   zmigrate (bytes / wall time)    %s' % fmt_rate(fs['zmigrate_bytes_per_s_wall']),
        '   zmigrate (its own rate)         %s' % fmt_rate(fs['zmigrate_bytes_per_s_reported']),
        '   zmigrate (the send pipes alone) %s' % fmt_rate(fs['zmigrate_bytes_per_s_transfers']),
        '   zmigrate time outside the pipes %s' % fmt_ms(fs['zmigrate_outside_transfers_ms']),
        '   plain pipe bytes sent           %s' % fmt_bytes(med(fs['plain_bytes'])),
        '   plain pipe (bytes / wall time)  %s' % fmt_rate(fs['plain_bytes_per_s']),
        '   ratio zmigrate/plain            %s (wall), %s (own rate), %s (send pipes alone)'
        % (fmt_ratio(fs['ratio_wall']), fmt_ratio(fs['ratio_reported']),
           fmt_ratio(fs['ratio_transfers'])),
        '',
        '4. zmigrate migrate end to end, %s instance (target <= 5000 ms)'
        % fmt_bytes(mg['instance_bytes']),
        '   wall time                       %s' % fmt_ms(mg['wall_ms']),
        '   bytes sent (syncs + final delta) %s' % fmt_bytes(med(mg['bytes_sent'])),
        '   syncs before the switch         %s (each %s ms)' % (
            'n/a' if not mg['syncs'] else '%d' % mg['syncs']['median'],
            ', '.join(str(x) for x in (mg['sync_ms'][0] if mg['sync_ms'] else []))),
        '   its downtime                    %s' % fmt_ms(mg['downtime_ms']),
        '',
        '5. zmigrate peak RSS (target <= 64 MiB)',
        '   during a full sync (%s)   %s' % (fmt_bytes(m.get('full_bytes')),
                                              fmt_kib(rss['full_sync_kib'])),
        '   during a delta sync (%s)   %s' % (fmt_bytes(m.get('delta_bytes')),
                                               fmt_kib(rss['delta_sync_kib'])),
    ]
    pm = res['placement']
    lines += [
        '',
        '6. placement planning, %s instances over %s nodes (target <= 1000 ms)'
        % (pm['instances'] or '?', pm['nodes'] or '?'),
        '   plan_placement                  %s' % fmt_ms(pm['plan_ms']),
        '   placed / unplaced               %s / %s (%s node rejections with reasons)'
        % (pm['placed'], pm['unplaced'], pm['rejections']),
    ]
    ev = res.get('evacuate') or {}
    if ev.get('parallel_1_wall_ms') is not None:
        def ms(v):
            return 'n/a' if v is None else '%.0f ms' % v
        lines += [
            '',
            '7. evacuate cn1 -> cn2, %s instances (%s sent), the same ones twice'
            % (ev['instances'], fmt_bytes(ev['bytes'])),
            '   --parallel 1                    %s (restore %s)'
            % (ms(ev['parallel_1_wall_ms']), ms(ev['restore_parallel_1_wall_ms'])),
            '   --parallel 3                    %s (restore %s)'
            % (ms(ev['parallel_3_wall_ms']), ms(ev['restore_parallel_3_wall_ms'])),
            '   speed-up                        %s' % fmt_ratio(ev['speedup']),
        ]
    rc = res.get('remote_commands') or {}
    if any(rc.get(k) for k in ('zmigrate_incremental_sync', 'zmigrate_unchanged_sync',
                               'syncoid_incremental', 'syncoid_unchanged')):
        def count(s):
            if not s:
                return 'n/a'
            if s['min'] == s['max']:
                return '%g' % s['median']
            return '%g (%g-%g)' % (s['median'], s['min'], s['max'])
        inc = rc.get('zmigrate_incremental_sync') or {}
        lines += [
            '',
            '8. remote commands per sync, per node, from the nodes\' sshd logs (target <= 2 per node'
            ' per incremental sync)',
            '   sessions = remote commands; "other node" = the data path (the source logs in to'
            ' the target)',
            '   %-30s %-7s %-5s %9s %11s %11s' % ('', 'node', '', 'sessions', 'from head',
                                                   'other node') + '  connections',
        ]
        for key, label in (('zmigrate_incremental_sync', 'zmigrate sync, 1 MiB changed'),
                           ('zmigrate_unchanged_sync', 'zmigrate sync, nothing changed'),
                           ('syncoid_incremental', 'syncoid, 1 MiB changed'),
                           ('syncoid_unchanged', 'syncoid, nothing changed')):
            w = rc.get(key) or {}
            for role in ('source', 'target'):
                c = w.get(role)
                if not c:
                    continue
                lines.append('   %-30s %-7s %-5s %9s %11s %11s  %s' % (
                    label if role == 'source' else '', role, c.get('node') or '?',
                    count(c['sessions']), count(c['sessions_from_head']),
                    count(c['sessions_from_other_node']), count(c['connections'])))
        mx = rc.get('zmigrate_incremental_sessions_per_node_max')
        lines.append('   zmigrate incremental sync: %s sessions on the busiest node (target <= 2)'
                     % ('n/a' if mx is None else '%g' % mx))
        lines.append('   (syncoid runs inside the source node: its source sessions are the'
                     ' bench\'s own login that starts it)')
        for role in ('source', 'target'):
            kinds = (inc.get(role) or {}).get('session_kinds') or {}
            for k, n in sorted(kinds.items()):
                lines.append('     zmigrate %s sessions: %dx %s' % (role, n, k))
    us = res.get('unchanged_sync') or {}
    if us.get('zmigrate_wall_ms') or us.get('syncoid_wall_ms'):
        lines += [
            '',
            '9. sync when nothing changed: zmigrate sync vs syncoid (target ratio <= 0.5)',
            '   zmigrate sync (wall, head)      %s' % fmt_ms(us['zmigrate_wall_ms']),
            '   zmigrate sync (its own figure)  %s' % fmt_ms(us['zmigrate_reported_ms']),
            '   syncoid (wall, on the source)   %s' % fmt_ms(us['syncoid_wall_ms']),
            '   ratio zmigrate/syncoid          %s' % fmt_ratio(us['ratio_zmigrate_to_syncoid']),
        ]
    kc = res.get('kvm_concurrent') or {}
    if kc.get('one_at_a_time_wall_ms') or kc.get('at_once_wall_ms'):
        lines += [
            '',
            '10. first sync of a 2-disk KVM instance (%s written to each disk): its datasets at'
            ' once (streams %s) vs one after the other (streams 1)'
            % (fmt_bytes(kc['disk_bytes_written_each']), kc['streams']),
            '   bytes sent                      %s' % fmt_bytes(med(kc['zmigrate_bytes'])),
            '   lanes used at once              %s' % (
                'n/a' if not kc['lanes_used'] else '%g' % kc['lanes_used']['median']),
            '   one after the other (wall)      %s' % fmt_ms(kc['one_at_a_time_wall_ms']),
            '   at once (wall)                  %s' % fmt_ms(kc['at_once_wall_ms']),
            '   the send pipes, one after the other %s' % fmt_ms(kc['one_at_a_time_pipes_ms']),
            '   the send pipes, at once         %s' % fmt_ms(kc['at_once_pipes_ms']),
            '   ratio at once/one at a time     %s (wall), %s (send pipes)'
            % (fmt_ratio(kc['ratio_wall']), fmt_ratio(kc['ratio_pipes'])),
        ]
    if res['notes']:
        lines += ['', 'notes:'] + ['  - ' + n for n in res['notes']]
    return '\n'.join(lines)


def cmd_report(argv):
    path, out = argv[0], argv[1]
    records = []
    with open(path) as f:
        for line in f:
            if line.strip():
                records.append(json.loads(line))
    res = build(records)
    with open(out, 'w') as f:
        json.dump(res, f, indent=2, sort_keys=True)
        f.write('\n')
    print(table(res))


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    cmd, rest = argv[0], argv[1:]
    if cmd == 'last-doc':
        print(json.dumps(last_doc(rest[0]), sort_keys=True))
    elif cmd == 'record':
        cmd_record(rest)
    elif cmd == 'report':
        cmd_report(rest)
    elif cmd == 'sshd-count':
        cmd_sshd_count(rest)
    elif cmd == 'sshd-summary':
        cmd_sshd_summary(rest)
    else:
        raise SystemExit(__doc__)


if __name__ == '__main__':
    main(sys.argv[1:])
