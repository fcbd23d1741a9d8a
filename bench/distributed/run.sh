#!/usr/bin/env bash
# Worker scaling (docs/DISTRIBUTED.md, issue 11): a corpus enqueued once per
# run (`sluice enqueue`), then 1, 2 or 4 `sluice worker --exit-when-idle`
# processes ingest it into PostgreSQL (a fresh table per run, dropped after)
# through a fresh `sluice mock-api` per run. The mock's own counters are the
# truth for requests, 200s, 429s and tokens; the store's row count for
# chunks; Redis MONITOR (commands sent by clients = round trips: the client
# does not pipeline) and INFO commandstats (every command executed, those
# inside Lua scripts included) for the coordination cost. Wall time runs
# from the first worker's start to the last worker's exit. Every ratio is
# computed within one run of this script.
#
#   bash scripts/test-services.sh -- bash bench/distributed/run.sh build/src/cli/sluice
#
# Two phases:
#   rate-limited  TPM (default 120000) with a one-second burst, 20 ms per
#                 request, FILES_LIMITED files of 8 paragraphs: tokens
#                 embedded (the mock's count of 200s) over what the API could
#                 admit (burst + TPM/60 per second), over the wall time
#                 (worker start-up included) and over the mock's busy span
#                 (first request received to last answer sent, the measure
#                 of issue 15), and the 429 share, at 1, 2 and 4
#                 workers. A token limit, not a request limit: the adaptive
#                 batch sizer grows batches, so a request limit alone does
#                 not bind (--batch-size is only where the sizer starts).
#   fast          no limit, FAST_LATENCY_MS (5) per request: chunks stored
#                 per second at 1 and 2 workers, interleaved 1,2,1,2... for
#                 REPEATS (2) pairs. Worker i is pinned to core i mod NPROC
#                 with taskset; the mock, Redis and PostgreSQL are not pinned
#                 and share the cores with the workers.
#
# Environment: PHASES ("limited fast"), TPM (120000), FILES_LIMITED (100), FILES_FAST (600),
# FAST_LATENCY_MS (5), REPEATS (2), SLUICE_TEST_REDIS_URL and
# SLUICE_TEST_PG_DSN (set by test-services.sh).
set -euo pipefail
sluice=$(realpath "${1:?usage: run.sh PATH/TO/sluice}")
redis=${SLUICE_TEST_REDIS_URL:?run under scripts/test-services.sh}
pg=${SLUICE_TEST_PG_DSN:?run under scripts/test-services.sh}
tpm=${TPM:-120000}
files_limited=${FILES_LIMITED:-100}
files_fast=${FILES_FAST:-600}
fast_latency=${FAST_LATENCY_MS:-5}
repeats=${REPEATS:-2}
phases=${PHASES:-limited fast}  # either or both
cores=$(nproc)
redis_host=${redis#redis://}
redis_port=${redis_host##*:}
redis_host=${redis_host%%:*}
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench-dist-XXXXXX")
mock_pid=""
cleanup() {
  [[ -n "$mock_pid" ]] && kill "$mock_pid" 2>/dev/null && wait "$mock_pid" 2>/dev/null
  [[ -n "$monitor_pid" ]] && kill "$monitor_pid" 2>/dev/null && wait "$monitor_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

corpus() {  # corpus DIR FILES PARAGRAPHS
  mkdir -p "$1"
  for f in $(seq 0 $(($2 - 1))); do
    for para in $(seq 0 $(($3 - 1))); do
      printf 'Paragraph %d of file %d: the sluice gate %d is inspected, the valve %d sealed and the level sensor %d read before the flood season.\n\n' \
        "$para" "$f" "$((para * 7 + f))" "$((para + f % 5))" "$((f * 3 + para))"
    done >"$1/doc$f.md"
  done
}
corpus "$work/limited" "$files_limited" 8
corpus "$work/fast" "$files_fast" 24

start_mock() {  # start_mock [mock-api flags...]; sets url
  "$sluice" mock-api --port 0 --dimensions 64 "$@" >"$work/mock.out" 2>&1 &
  mock_pid=$!
  url=""
  for _ in $(seq 100); do
    url=$(grep -o 'http://[^ ]*/v1' "$work/mock.out" || true)
    [[ -n "$url" ]] && break
    sleep 0.05  # polling for the port, not synchronisation of the measured runs
  done
  [[ -n "$url" ]] || { echo "mock-api did not start: $(cat "$work/mock.out")" >&2; exit 1; }
}

stop_mock() {
  kill "$mock_pid" && wait "$mock_pid" 2>/dev/null || true
  mock_pid=""
}

redis_calls() {  # total commands Redis has executed, and per command
  redis-cli -h "$redis_host" -p "$redis_port" INFO commandstats | tr -d '\r' |
    sed -n 's/^cmdstat_\([a-z|]*\):calls=\([0-9]*\),.*/\1 \2/p'
}

# MONITOR sees every command a client sent (a round trip) apart from those
# a Lua script ran (marked "[N lua]"). It costs Redis time, so it runs only
# where the API is the limit (the rate-limited phase) and in one extra
# counting run per worker count of the fast phase, outside its timed pairs.
monitor_pid=""
monitor_start() {
  redis-cli -h "$redis_host" -p "$redis_port" MONITOR >"$work/monitor" &
  monitor_pid=$!
  until [[ -s "$work/monitor" ]]; do sleep 0.01; done  # its "OK": MONITOR is on
}
monitor_stop() {  # monitor_stop TASKS: round trips per task, and the top commands
  redis-cli -h "$redis_host" -p "$redis_port" PING >/dev/null
  sleep 0.2  # let the last lines reach the file; read after, not a synchronisation of the run
  kill "$monitor_pid" && wait "$monitor_pid" 2>/dev/null || true
  monitor_pid=""
  python3 - "$work/monitor" "$1" <<'PY'
import collections, re, sys
tasks = int(sys.argv[2])
counts = collections.Counter()
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r'^[0-9.]+ \[\d+ ([^\]]+)\] "([^"]+)"', line)
    if not m or m.group(1) == "lua":
        continue
    counts[m.group(2).lower()] += 1
counts["ping"] -= 1  # ours
total = sum(v for v in counts.values() if v > 0)
top = ", ".join(f"{k} {v / tasks:.2f}" for k, v in counts.most_common(4))
print(f"{total / tasks:.2f} | {top}")
PY
}

run=0
# job CORPUS N PIN [ingest flags...]: enqueue the corpus as a fresh job into
# a fresh table, start N workers, wait for them. Leaves "start end tasks
# stored stats" in $work/result (not a subshell: $run must count).
job() {
  local dir=$1 n=$2 pin=$3
  shift 3
  run=$((run + 1))
  local name="bench-$$-$run" table="bench_dist_$$_$run"
  "$sluice" enqueue "$dir" --redis "$redis" --job "$name" --budget-name "$name" --store "$pg" \
    --table "$table" --endpoint "$url" --model mock --no-progress --log-level error \
    --out "$work/out-$run" "$@" >"$work/enqueue-$run.log" 2>&1 ||
    { echo "enqueue failed: $(cat "$work/enqueue-$run.log")" >&2; exit 1; }
  local tasks
  tasks=$(grep -o 'enqueued [0-9]*' "$work/enqueue-$run.log" | cut -d' ' -f2)
  redis_calls >"$work/calls-before-$run"
  local start end pids=() i
  start=$(date +%s.%N)
  for i in $(seq 0 $((n - 1))); do
    local prefix=()
    [[ "$pin" == pin ]] && prefix=(taskset -c $((i % cores)))
    "${prefix[@]}" "$sluice" worker --redis "$redis" --job "$name" --exit-when-idle \
      --log-level error >"$work/worker-$run-$i.log" 2>&1 &
    pids+=($!)
  done
  local failed=0
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { failed=1; echo "worker $i failed: $(tail -5 "$work/worker-$run-$i.log")" >&2; }
  done
  end=$(date +%s.%N)
  redis_calls >"$work/calls-after-$run"
  ((failed == 0)) || exit 1
  local stored stats
  stored=$(psql "$pg" -tAc "SELECT count(*) FROM \"$table\"")
  psql "$pg" -qc "DROP TABLE IF EXISTS \"$table\", \"${table}_sources\", \"${table}_files\", \"${table}_embedding_cache\", \"${table}_run_chunks\"" >/dev/null
  stats=$(curl -s "${url%/v1}/stats")
  echo "$start $end $tasks $stored $stats" >"$work/result"
}

summary() {  # summary RUN: Redis commands per task, total and the top ones
  python3 - "$work/calls-before-$1" "$work/calls-after-$1" "$2" <<'PY'
import sys
def load(p):
    return {k: int(v) for k, v in (l.split() for l in open(p) if l.strip())}
before, after, tasks = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
delta = {k: after[k] - before.get(k, 0) for k in after}
delta["info"] = delta.get("info", 0) - 1  # our own INFO
delta = {k: v for k, v in delta.items() if v > 0}
total = sum(delta.values())
top = ", ".join(f"{k} {v / tasks:.2f}" for k, v in sorted(delta.items(), key=lambda kv: -kv[1])[:5])
print(f"{total / tasks:.2f} | {top}")
PY
}

echo "## $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load: $(uptime | sed 's/.*load average: //')"
echo
if [[ " $phases " == *" limited "* ]]; then
echo "### Rate-limited: TPM $tpm, burst 1 s, 20 ms per request, $files_limited files (one task each)"
echo
echo "| workers | tasks | chunks stored | requests | 200s | 429s (share) | tokens embedded | wall time | ratio over the wall time | first request to last answer | ratio over that span | Redis round trips per task | top round trips per task |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for n in 1 2 4; do
  start_mock --tpm "$tpm" --burst-seconds 1 --latency-ms 20
  monitor_start
  job "$work/limited" "$n" nopin --chunk-tokens 32 --chunk-overlap 0 --max-attempts 50
  read -r start end tasks stored stats <"$work/result"
  stop_mock
  calls=$(monitor_stop "$tasks")
  python3 - "$n" "$start" "$end" "$tasks" "$stored" "$tpm" "$stats" "$calls" <<'PY'
import json, sys
n, start, end, tasks, stored, tpm, stats, calls = sys.argv[1:]
s = json.loads(stats)
secs = float(end) - float(start)
busy = float(s["busy_span_s"])
# What the API could admit: one burst (1 s of the limit) plus the limit's
# rate over the span.
ceiling = float(tpm) / 60 * (1 + secs)
busy_ceiling = float(tpm) / 60 * (1 + busy)
share = 100.0 * s["rate_limited"] / max(1, s["requests"])
tokens = s["tokens_embedded"]
print(f"| {n} | {tasks} | {stored} | {s['requests']} | {s['ok']} | {s['rate_limited']} ({share:.1f}%) | "
      f"{tokens} | {secs:.1f} s | {tokens / ceiling:.3f} | {busy:.1f} s | {tokens / busy_ceiling:.3f} | {calls} |")
PY
done
fi
if [[ " $phases " == *" fast "* ]]; then
echo
echo "### Fast: no limit, $fast_latency ms per request, $files_fast files (one task each), worker i on core i mod $cores, mock/Redis/PostgreSQL unpinned"
echo
echo "| pair | workers | tasks | chunks stored | requests | wall time | chunks/s | vs 1 worker of the pair | Redis commands per task (scripts' inner ones included) | top | load (1 min) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for pair in $(seq 1 "$repeats"); do
  one=""
  for n in 1 2; do
    start_mock --latency-ms "$fast_latency"
    job "$work/fast" "$n" pin --chunk-tokens 64 --chunk-overlap 0
    read -r start end tasks stored stats <"$work/result"
    stop_mock
    calls=$(summary "$run" "$tasks")
    rate=$(python3 -c "print($stored / ($end - $start))")
    [[ $n == 1 ]] && one=$rate
    load=$(cut -d' ' -f1 /proc/loadavg)
    python3 - "$pair" "$n" "$start" "$end" "$tasks" "$stored" "$stats" "$calls" "$one" "$load" <<'PY'
import json, sys
pair, n, start, end, tasks, stored, stats, calls, one, load = sys.argv[1:]
s = json.loads(stats)
secs = float(end) - float(start)
rate = int(stored) / secs
print(f"| {pair} | {n} | {tasks} | {stored} | {s['requests']} | {secs:.1f} s | {rate:,.0f} | "
      f"{rate / float(one):.2f}x | {calls} | {load} |")
PY
  done
done
echo
echo "### Fast, counting runs (MONITOR on, not timed): Redis round trips per task"
echo
echo "| workers | tasks | requests | round trips per task | top round trips per task |"
echo "|---|---|---|---|---|"
for n in 1 2; do
  start_mock --latency-ms "$fast_latency"
  monitor_start
  job "$work/fast" "$n" pin --chunk-tokens 64 --chunk-overlap 0
  read -r start end tasks stored stats <"$work/result"
  stop_mock
  calls=$(monitor_stop "$tasks")
  requests=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['requests'])" "$stats")
  echo "| $n | $tasks | $requests | $calls |"
done
fi
