# SPDX-License-Identifier: MPL-2.0
"""Reads zlab-writer records (tests/lab/CONTRACT.md) on a node; bench/run pipes this file into
`python3 - ARGS` over ssh.

  last FILE        -> "SEQ TIME_NS" of the file's last whole record
  at FILE SEQ...   -> "SEQ TIME_NS" for each SEQ (records are consecutive from seq 1)

Exit 1 with a message when a record is missing or is not the one expected."""
import struct
import sys

REC = 512
HEAD = struct.Struct('>8sQQ16s')


def read(f, seq):
    f.seek((seq - 1) * REC)
    rec = f.read(REC)
    if len(rec) != REC:
        sys.exit('writer_gap: no record %d' % seq)
    magic, s, t, _ = HEAD.unpack(rec[:40])
    if magic != b'ZLABREC1' or s != seq:
        sys.exit('writer_gap: record at %d is not seq %d' % ((seq - 1) * REC, seq))
    return t


def main(argv):
    if len(argv) < 2:
        sys.exit('usage: writer_gap.py last FILE | at FILE SEQ...')
    with open(argv[1], 'rb') as f:
        if argv[0] == 'last':
            f.seek(0, 2)
            n = f.tell() // REC
            if n == 0:
                sys.exit('writer_gap: %s holds no record' % argv[1])
            print(n, read(f, n))
        elif argv[0] == 'at':
            for a in argv[2:]:
                print(int(a), read(f, int(a)))
        else:
            sys.exit('writer_gap: unknown mode %s' % argv[0])


main(sys.argv[1:])
