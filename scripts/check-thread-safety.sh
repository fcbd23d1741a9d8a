#!/usr/bin/env bash
# Clang's thread-safety analysis over the sources: the SLUICE_GUARDED_BY /
# SLUICE_REQUIRES annotations (include/sluice/thread_annotations.h) checked
# with -Werror=thread-safety. GCC has no such analysis, so the default build
# never sees them.
#
#   check-thread-safety.sh            every translation unit under src/ and tests/
#   check-thread-safety.sh FILE...    only these (paths as in the repo)
#
# Configures build-clang with clang++ (only for its compile_commands.json)
# and runs each compile command with -fsyntax-only: no objects, no link, so
# it costs a parse of each file rather than a build.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

cmake -S . -B build-clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang \
  -DCMAKE_BUILD_TYPE=Debug -DSLUICE_BUILD_BENCH=OFF -DSLUICE_BUILD_PYTHON=OFF \
  -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >/dev/null

python3 - "$jobs" "$@" <<'PY'
import json, os, shlex, subprocess, sys
from concurrent.futures import ThreadPoolExecutor

jobs, wanted = int(sys.argv[1]), {os.path.abspath(f) for f in sys.argv[2:]}
root = os.getcwd()
commands = []
for entry in json.load(open("build-clang/compile_commands.json")):
    path = os.path.abspath(os.path.join(entry["directory"], entry["file"]))
    if not path.startswith((root + "/src/", root + "/tests/")) or not path.endswith(".cc"):
        continue
    if wanted and path not in wanted:
        continue
    args = shlex.split(entry["command"])
    if args and os.path.basename(args[0]) == "ccache":
        args = args[1:]
    # Drop the output, compile only far enough to analyse.
    out, i = [], 0
    while i < len(args):
        if args[i] == "-o":
            i += 2
            continue
        out.append(args[i])
        i += 1
    commands.append((path, entry["directory"],
                     out + ["-fsyntax-only", "-Wthread-safety", "-Werror=thread-safety"]))

def run(item):
    path, cwd, cmd = item
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return path, r.returncode, r.stderr

failed = 0
with ThreadPoolExecutor(jobs) as pool:
    for path, rc, err in pool.map(run, commands):
        if rc != 0 or "thread-safety" in err:
            failed += 1
            print(f"== {os.path.relpath(path, root)}\n{err}", file=sys.stderr)
print(f"thread-safety: {len(commands)} files, {failed} with findings")
sys.exit(1 if failed else 0)
PY
