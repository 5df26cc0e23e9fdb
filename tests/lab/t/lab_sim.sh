#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Lab test of the inventory simulator (tests/lab/sim/inventory.py): every endpoint's shape and
# status codes against tests/data/fixtures, restify error bodies, keep-alive, destroyed reports
# from a non-current server, NIC/IP ownership and the IP history, every fault mode, the request
# log, persistence across a restart and /_lab/reset. Needs no root: the simulator runs on
# 127.0.0.1 on free ports with a seed written to a temporary directory (tests/lab/sim/test_sim.py).
# Exit: 0 pass, 1 fail, 125 skip (no python3 or curl).

set -euo pipefail

LAB_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

command -v python3 >/dev/null || { echo "SKIP: python3 is missing"; exit 125; }
command -v curl >/dev/null || { echo "SKIP: curl is missing"; exit 125; }

if timeout 120 python3 "$LAB_HOME/sim/test_sim.py"; then
    echo "ok: lab_sim"
    exit 0
fi
echo "FAIL: lab_sim"
exit 1
