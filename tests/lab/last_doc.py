#!/usr/bin/env python3
# SPDX-License-Identifier: MPL-2.0
"""Print the last of the JSON documents on stdin, on one line.

zmigrate --json prints its progress as JSON lines before the result document; a lab test wants
the result. Fails when stdin is not a sequence of JSON documents.
"""
import json
import sys

text, dec, docs, i = sys.stdin.read(), json.JSONDecoder(), [], 0
while True:
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text):
        break
    obj, i = dec.raw_decode(text, i)
    docs.append(obj)
if not docs:
    sys.exit("no JSON document on stdin")
print(json.dumps(docs[-1]))
