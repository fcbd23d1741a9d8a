#!/usr/bin/env bash
# `make test` after the package install: the whole suite in the ASan+UBSan
# build against real services (scripts/test-services.sh), the concurrency
# tests in the TSan build, then the fuzz smoke run.
#
# The TSan and fuzz builds are compiled while the ASan suite runs, at the
# lowest CPU priority (nice 19). The suite leaves much of the two cores idle
# (its tests wait on services, child processes and timeouts: 295 CPU-s in a
# 250-s run, 118% of 200%), and a nice-19 compiler gets a core mostly when
# no test wants it. One after the other, the two builds took ~6 of the ~19
# minutes of a run without a compiler cache; this way the whole run takes
# 13-15 (BENCHMARKS.md "make test time"), and the tests' summed time rose from
# 474 to 589-687 s (with the -O0 test code, check-sanitize.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

bash scripts/check-sanitize.sh address build-only

background_log=build-background.log
echo "make test: building the TSan and fuzz targets in the background (nice 19, $background_log)"
# A process group of its own (job control on for this one job), so one kill
# stops the compilers too. Not a session of its own: with the kernel's
# autogroups (sched_autogroup_enabled) each session is scheduled as one
# group, and nice only orders processes within their group; a first
# version started it with setsid and the suite's tests took 800 s
# (summed) instead of ~470.
set -m
nice -n 19 bash -c \
  'bash scripts/check-sanitize.sh thread build-only && bash scripts/fuzz-smoke.sh build-only' \
  </dev/null >"$background_log" 2>&1 &
background=$!
set +m
stop_background() { kill -- "-$background" 2>/dev/null || true; }
trap stop_background EXIT

bash scripts/test-services.sh -- ctest --test-dir build-asan --output-on-failure -j "$jobs" \
  --timeout 300 -LE bench

if ! wait "$background"; then
  echo "make test: the TSan or fuzz build failed; the end of $background_log:" >&2
  tail -60 "$background_log" >&2
  exit 1
fi
trap - EXIT

# Both builds are up to date now: these only run.
bash scripts/test-services.sh -- bash scripts/check-sanitize.sh thread
bash scripts/fuzz-smoke.sh
