#!/usr/bin/env bash
# Shared rate budget (docs/SHARED_BUDGET.md): 1, 2 and 4 `sluice ingest`
# processes, each on its own folder and store, against one `sluice mock-api`
# with a request limit and a one-second burst, with and without
# --budget-redis. Prints, per run, the mock's own counters: requests, 200s,
# 429s, and the 200s over what the API could admit during the run (its burst
# plus RPM/60 per second of wall time, start-up of the processes included).
# A fresh mock per run, so its counters are the run's.
#
#   bash scripts/test-services.sh -- bash bench/shared_budget/run.sh build/src/cli/sluice
#
# Environment: RPM (default 1200), BURST seconds (1), FILES per process (48),
# SLUICE_TEST_REDIS_URL (set by test-services.sh).
set -euo pipefail
sluice=$(realpath "${1:?usage: run.sh PATH/TO/sluice}")
redis=${SLUICE_TEST_REDIS_URL:?run under scripts/test-services.sh}
rpm=${RPM:-1200}
burst=${BURST:-1}
files=${FILES:-48}
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench-budget-XXXXXX")
mock_pid=""
cleanup() {
  [[ -n "$mock_pid" ]] && kill "$mock_pid" 2>/dev/null && wait "$mock_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Four folders of deterministic text.
for p in 0 1 2 3; do
  mkdir -p "$work/c$p"
  for f in $(seq 0 $((files - 1))); do
    for para in $(seq 0 7); do
      printf 'Paragraph %d of file %d in folder %d: the sluice gate %d is inspected, the valve %d sealed and the level sensor %d read before the flood season.\n\n' \
        "$para" "$f" "$p" "$((para * 7 + f))" "$((para + p))" "$((f * 3 + para))"
    done >"$work/c$p/doc$f.md"
  done
done

run() {  # run NAME PROCESSES [budget flags...]
  local label=$1 name=$1-$2 n=$2
  shift 2
  "$sluice" mock-api --port 0 --rpm "$rpm" --burst-seconds "$burst" --dimensions 16 \
    --latency-ms 20 >"$work/mock.out" 2>&1 &
  mock_pid=$!
  local url=""
  for _ in $(seq 100); do
    url=$(grep -o 'http://[^ ]*/v1' "$work/mock.out" || true)
    [[ -n "$url" ]] && break
    sleep 0.05  # polling for the port, not synchronisation of the measured runs
  done
  local start end pids=()
  start=$(date +%s.%N)
  for p in $(seq 0 $((n - 1))); do
    "$sluice" ingest "$work/c$p" --endpoint "$url" --model mock --store "sqlite:$work/$name-$p.db" \
      --out "$work/$name-$p" --no-progress --batch-size 2 --chunk-tokens 32 --chunk-overlap 0 \
      --max-attempts 50 --log-level error "$@" >/dev/null 2>"$work/$name-$p.log" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || echo "  process $pid failed: $(cat "$work/$name"-*.log)"; done
  end=$(date +%s.%N)
  local stats
  stats=$(curl -s "${url%/v1}/stats")
  kill "$mock_pid" && wait "$mock_pid" 2>/dev/null || true
  mock_pid=""
  python3 - "$label" "$n" "$start" "$end" "$rpm" "$stats" "$burst" <<'PY'
import json, sys
name, n, start, end, rpm, stats, burst = sys.argv[1:]
s = json.loads(stats)
secs = float(end) - float(start)
ceiling = float(rpm) / 60 * (float(burst) + secs)  # what the API could admit during the run
share = 100.0 * s["rate_limited"] / max(1, s["requests"])
print(f"| {name} | {n} | {s['requests']} | {s['ok']} | {s['rate_limited']} ({share:.1f}%) | "
      f"{secs:.1f} s | {s['ok'] / secs:.2f} | {ceiling:.0f} | {s['ok'] / ceiling:.3f} |")
PY
}

echo "RPM $rpm, burst $burst s, $files files per process, batch 2, mock latency 20 ms"
echo "| run | processes | requests | 200s | 429s (share) | wall time | 200s/s | API could admit | ratio |"
echo "|---|---|---|---|---|---|---|---|---|"
for n in 1 2 4; do
  run "alone" "$n"
  run "shared" "$n" --budget-redis "$redis" --budget-name "bench-$$-$n"
done
