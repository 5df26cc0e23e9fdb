#!/usr/bin/env python3
# SPDX-License-Identifier: MPL-2.0
"""Inventory simulator of the zmigrate lab: VMAPI, CNAPI, NAPI and IMGAPI over one shared state.

    inventory.py --seed FILE --listen ADDR --state-dir DIR [--port-base 18081]
                 [--images-dir DIR] [--sync-timeout SECONDS] [--fresh]

Ports: VMAPI base, CNAPI base+1, NAPI base+2, IMGAPI base+3. State is kept in DIR/state.json
(reloaded on restart when the seed is unchanged), the request log in DIR/requests.log, the pid in
DIR/pid. SIGTERM or SIGINT stops it cleanly (exit 0). README.md beside this file lists the
endpoints, the /_lab/ control API and the seed fields read.
"""

import argparse
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from model import State, log  # noqa: E402
from services import ROUTES, SERVER_NAMES, lab_routes  # noqa: E402
from simhttp import SERVICES, App, Faults, RequestLog, make_server  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description="Triton inventory simulator for the zmigrate lab")
    ap.add_argument("--seed", required=True, help="seed.json written by seed.py generate")
    ap.add_argument("--listen", default="127.0.0.1", help="address to bind every service on")
    ap.add_argument("--state-dir", required=True, help="directory for state, pid, request log")
    ap.add_argument("--port-base", type=int, default=18081, help="VMAPI port; +1 CNAPI, "
                    "+2 NAPI, +3 IMGAPI")
    ap.add_argument("--images-dir", default=None, help="where <uuid>.zfs image files are "
                    "(default: images/ beside the seed) for images without a file field")
    ap.add_argument("--sync-timeout", type=float, default=3.0,
                    help="seconds GET /vms/:uuid?sync=true waits for the next report")
    ap.add_argument("--fresh", action="store_true", help="ignore DIR/state.json, load the seed")
    args = ap.parse_args(argv)

    os.makedirs(args.state_dir, exist_ok=True)
    state = State(args.seed, args.state_dir, args.images_dir, args.sync_timeout)
    try:
        state.load(fresh=args.fresh)
    except (OSError, ValueError) as e:
        log("cannot load the seed %s: %s" % (args.seed, e))
        return 1
    app = App(state, Faults(), RequestLog(os.path.join(args.state_dir, "requests.log")))
    lab = lab_routes()
    from services import ping
    lab.add("GET", "/_lab/ping", ping)

    servers = []
    try:
        for i, service in enumerate(SERVICES):
            srv = make_server(args.listen, args.port_base + i, service, SERVER_NAMES[service],
                              ROUTES[service](), lab, app)
            servers.append((service, srv))
    except OSError as e:
        log("cannot listen on %s:%d: %s" % (args.listen, args.port_base + len(servers), e))
        for _, srv in servers:
            srv.server_close()
        return 1

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    threads = []
    for service, srv in servers:
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                             name="serve-" + service, daemon=True)
        t.start()
        threads.append(t)
    pid_path = os.path.join(args.state_dir, "pid")
    with open(pid_path, "w", encoding="utf-8") as f:
        f.write("%d\n" % os.getpid())
    log("pid %d serving %s on %s" % (os.getpid(), ", ".join(
        "%s:%d" % (s, args.port_base + i) for i, s in enumerate(SERVICES)), args.listen))

    while not stop.wait(0.5):
        pass

    log("stopping")
    stoppers = [threading.Thread(target=srv.shutdown) for _, srv in servers]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join()
    for _, srv in servers:
        srv.server_close()
    try:
        with open(pid_path, encoding="utf-8") as f:
            if f.read().strip() == str(os.getpid()):
                os.unlink(pid_path)
    except OSError:
        pass
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
