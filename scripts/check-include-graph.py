#!/usr/bin/env python3
"""Checks that no two folders under src/ include each other, directly or
through others (docs/ARCHITECTURE.md, "Where things live"): each folder is a
layer, and a cycle would mean two of them can only be understood together.
Prints the folder graph; exits 1 with the cycle when there is one."""
import os
import re
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
folders = {d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))}
edges = {f: set() for f in folders}
include = re.compile(r'^\s*#\s*include\s+"([A-Za-z0-9_]+)/', re.M)
for folder in folders:
    for dirpath, _, files in os.walk(os.path.join(root, folder)):
        for name in files:
            if not name.endswith((".cc", ".h")):
                continue
            with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                for target in include.findall(f.read()):
                    if target in folders and target != folder:
                        edges[folder].add(target)

for folder in sorted(edges):
    print(f"{folder} -> {', '.join(sorted(edges[folder])) or '(none)'}")

state = {}  # folder -> "open" while on the path, "done" after


def visit(folder, path):
    state[folder] = "open"
    for target in sorted(edges[folder]):
        if state.get(target) == "open":
            cycle = path[path.index(target):] + [target]
            print("include cycle: " + " -> ".join(cycle), file=sys.stderr)
            sys.exit(1)
        if target not in state:
            visit(target, path + [target])
    state[folder] = "done"


for folder in sorted(edges):
    if folder not in state:
        visit(folder, [folder])
print("no include cycle between src/ folders")
