#!/usr/bin/env python3
# SPDX-License-Identifier: MPL-2.0
"""How many ssh connections from one peer a lab node's sshd had open at once.

usage: sshd_peaks.py LOG FIRST_LINE LAST_LINE PEER_ADDRESS

A lab node's sshd runs with LogLevel VERBOSE and logs, in order, every connection's start
("Connection from ADDR port P on ...") and end ("Disconnected from user root ADDR port P",
"Connection closed by ADDR port P", ...). Between lines FIRST_LINE and LAST_LINE (0-based, end
excluded) this prints, as JSON, the peak number of connections from PEER_ADDRESS open at the same
moment of that log, how many it opened, and how many were still open at LAST_LINE.
"""

import json
import re
import sys

OPENED = re.compile(r"Connection from (\S+) port (\d+) on ")
CLOSED = re.compile(
    r"(?:Disconnected from (?:user \S+ |authenticating user \S+ |invalid user \S+ )?"
    r"|Connection closed by (?:authenticating user \S+ |invalid user \S+ )?"
    r"|Connection reset by )(\d+\.\d+\.\d+\.\d+) port (\d+)"
)


def peaks(lines, peer):
    live = set()
    best = total = 0
    for line in lines:
        m = OPENED.match(line)
        if m and m[1] == peer:
            live.add(m[2])
            total += 1
            best = max(best, len(live))
            continue
        m = CLOSED.search(line)
        if m and m[1] == peer:
            live.discard(m[2])
    return {"peak": best, "opened": total, "open_at_end": len(live)}


def main():
    log, first, last, peer = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    with open(log, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()[first:last]
    print(json.dumps(peaks(lines, peer)))


if __name__ == "__main__":
    main()
