#!/usr/bin/env bash
# Soak benchmark (issue 14): a generated corpus (1 GiB by default) through the
# simulated API with a mix of faults and two SIGKILLs, against a clean run of
# the same corpus. Not part of `make test`; results go in BENCHMARKS.md.
#
#   bench/soak/soak.sh [--keep] [--bytes N] [--dir DIR] [--sluice PATH]
#
# Environment (flags win): SOAK_BYTES (corpus size, default 1073741824),
# SOAK_DIR (work dir, default $TMPDIR/sluice-soak-$$), SOAK_KEEP=1 (keep it),
# SLUICE (binary, default build/src/cli/sluice), SOAK_SEED (corpus, mock and
# run seed, default 14), SOAK_KILL_AT (fractions of the clean run's chunk
# count at which the soak runs are SIGKILLed, default "0.25 0.60"),
# SOAK_RSS_LIMIT_MB (256), SOAK_SLOPE_LIMIT_MB_PER_MIN (2); "MB" here is MiB (2^20
# bytes), as are all the memory figures printed.
#
# What it does:
#   1. generates the corpus (seeded): many small .md/.txt files, some of
#      64 KiB-2 MiB, and large ones of 10-40 MiB, random paragraphs from a
#      5,000-word vocabulary, under <domain>/<category>/ folders;
#   2. clean run: a healthy `sluice mock-api` (latency, RPM/TPM limits) and
#      one uninterrupted `sluice ingest` into clean.db;
#   3. soak runs: a second mock with the same latency and limits plus faults
#      (500s, connection resets, malformed bodies, wrong dimensions, 429s at
#      the start); the same ingest command into soak.db, SIGKILLed when the
#      store holds SOAK_KILL_AT of the clean run's chunks, rerun after each
#      kill, the last run to completion; then one more rerun, which must find
#      nothing to do;
#   4. every run is sampled once a second (VmRSS, VmHWM from /proc/PID/status)
#      into rss-<run>.csv; its peak is the kernel's ru_maxrss from wait4;
#   5. compares soak.db with clean.db (rows, symmetric EXCEPT, lost,
#      duplicated), the reports, the dead letters and the aggregate files;
#      prints a summary with PASS/FAIL per criterion (summary.txt, summary.json).
# Exit status: 0 all criteria pass, 1 one fails, 2 usage or setup error.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bytes=${SOAK_BYTES:-1073741824}
work=${SOAK_DIR:-${TMPDIR:-/tmp}/sluice-soak-$$}
keep=${SOAK_KEEP:-0}
sluice=${SLUICE:-$repo/build/src/cli/sluice}
seed=${SOAK_SEED:-14}
kill_at=${SOAK_KILL_AT:-0.25 0.60}
rss_limit_mb=${SOAK_RSS_LIMIT_MB:-256}
slope_limit=${SOAK_SLOPE_LIMIT_MB_PER_MIN:-2}

while (($#)); do
  case $1 in
    --keep) keep=1 ;;
    --bytes) bytes=$2; shift ;;
    --dir) work=$2; shift ;;
    --sluice) sluice=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "soak: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[[ $bytes =~ ^[0-9]+$ ]] || { echo "soak: SOAK_BYTES must be a number of bytes" >&2; exit 2; }
[[ -x $sluice ]] || { echo "soak: no sluice binary at $sluice (build it, or set SLUICE)" >&2; exit 2; }
for tool in python3 sqlite3; do
  command -v "$tool" >/dev/null || { echo "soak: needs $tool (scripts/install-deps.sh)" >&2; exit 2; }
done

mkdir -p "$work"
work=$(cd "$work" && pwd)
mock_pids=()
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local pid
  for pid in "${mock_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${mock_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ $keep == 1 ]]; then
    echo "soak: kept $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[soak %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# ---------------------------------------------------------------- helpers --
# gen.py ROOT BYTES SEED: the corpus, deterministic for a seed and size.
cat >"$work/gen.py" <<'PY'
import os, random, sys

root, total, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
letters = "abcdefghijklmnopqrstuvwxyz"
vocab = set()
while len(vocab) < 5000:
    vocab.add("".join(rng.choice(letters) for _ in range(rng.randint(2, 11))))
vocab = sorted(vocab)

def paragraph():
    words = rng.choices(vocab, k=rng.randint(40, 160))
    out, i = [], 0
    while i < len(words):
        n = rng.randint(6, 20)
        s = " ".join(words[i:i + n])
        out.append(s[0].upper() + s[1:] + ".")
        i += n
    return " ".join(out)

KIB, MIB = 1024, 1024 * 1024
def log_uniform(lo, hi):
    return int(lo * (hi / lo) ** rng.random())

# 35% of the bytes in large files (10-40 MiB), 35% in 64 KiB-2 MiB files,
# 30% in 200 B-32 KiB files; in a small corpus the budgets cap the sizes.
sizes = []
for share, pick in ((0.35, lambda: rng.randint(10 * MIB, 40 * MIB)),
                    (0.35, lambda: log_uniform(64 * KIB, 2 * MIB)),
                    (0.30, lambda: log_uniform(200, 32 * KIB))):
    budget = int(total * share)
    while budget > 0:
        size = min(pick(), budget)
        sizes.append(size)
        budget -= size
rng.shuffle(sizes)

domains = ["manuals", "web", "books", "exports"]
categories = ["pumps", "valves", "misc", "general"]
written = 0
for n, size in enumerate(sizes):
    folder = os.path.join(root, rng.choice(domains), rng.choice(categories))
    os.makedirs(folder, exist_ok=True)
    markdown = rng.random() < 0.6
    path = os.path.join(folder, f"doc-{n:06d}.{'md' if markdown else 'txt'}")
    with open(path, "w", encoding="utf-8") as f:
        done, section = 0, 0
        if markdown:
            title = f"# Document {n} {' '.join(rng.choices(vocab, k=3))}\n\n"
            f.write(title)
            done += len(title)
        while done < size:
            if markdown and rng.random() < 0.08:
                section += 1
                head = f"## Section {section} {' '.join(rng.choices(vocab, k=2))}\n\n"
                f.write(head)
                done += len(head)
            p = paragraph() + "\n\n"
            f.write(p)
            done += len(p)
    written += done
print(f"{len(sizes)} files, {written} bytes")
PY

# run.py --csv F --result F --log F [--kill-db DB --kill-at N] -- CMD...:
# runs CMD, samples VmRSS/VmHWM every second (and VmHWM every 50 ms),
# SIGKILLs it once the store DB holds N chunks (read-only count, once a
# second), reaps it with wait4 for ru_maxrss.
cat >"$work/run.py" <<'PY'
import json, os, signal, sqlite3, sys, time

args = sys.argv[1:]
cut = args.index("--")
opts = dict(zip(args[:cut:2], args[1:cut:2]))
cmd = args[cut + 1:]
kill_at = int(opts.get("--kill-at", "0"))
kill_db = opts.get("--kill-db")

def stored(db):
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM chunks").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0

def status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out

fd = os.open(opts["--log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
start = time.monotonic()
pid = os.posix_spawnp(cmd[0], cmd, dict(os.environ),
                      file_actions=[(os.POSIX_SPAWN_DUP2, fd, 1), (os.POSIX_SPAWN_DUP2, fd, 2)])
os.close(fd)
killed_at = None
max_rss = 0
hwm = 0
samples = 0
next_tick = start + 1.0
with open(opts["--csv"], "w") as csv:
    csv.write("t_s,rss_kb,hwm_kb,stored\n")
    while True:
        wpid, wstatus, usage = os.wait4(pid, os.WNOHANG)
        if wpid == pid:
            break
        now = time.monotonic()
        hwm = max(hwm, status(pid).get("VmHWM", 0))  # every 50 ms: the peak up to the exit
        if now >= next_tick:
            next_tick += 1.0
            st = status(pid)
            count = stored(kill_db) if kill_db else -1
            if "VmRSS" in st:
                samples += 1
                max_rss = max(max_rss, st["VmRSS"])
                csv.write(f"{now - start:.2f},{st['VmRSS']},{st.get('VmHWM', 0)},{count}\n")
                csv.flush()
            if kill_at and killed_at is None and count >= kill_at:
                os.kill(pid, signal.SIGKILL)
                killed_at = count
        time.sleep(0.05)
elapsed = time.monotonic() - start
result = {
    "exit": os.waitstatus_to_exitcode(wstatus),
    # ru_maxrss also counts the forked helper before exec (~15 MB of Python),
    # so it bounds the peak from above; VmHWM is the binary's own, read last
    # at most 50 ms before it exited.
    "peak_rss_kb": usage.ru_maxrss,
    "last_vmhwm_kb": hwm,
    "max_sampled_rss_kb": max_rss,
    "samples": samples,
    "elapsed_s": round(elapsed, 2),
    "killed_at_stored": killed_at,
}
with open(opts["--result"], "w") as f:
    json.dump(result, f)
print(json.dumps(result))
PY

# summary.py WORK RSS_LIMIT_MB SLOPE_LIMIT: reads the results and prints the table.
cat >"$work/summary.py" <<'PY'
import csv, json, os, sys

work, rss_limit, slope_limit = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
def load(name, default=None):
    path = os.path.join(work, name)
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)

def flat(name):
    rows = []
    with open(os.path.join(work, name)) as f:
        for r in csv.DictReader(f):
            rows.append((float(r["t_s"]), int(r["rss_kb"]) / 1024))
    if len(rows) < 2:
        return None
    end = rows[-1][0]
    first = [m for t, m in rows if t < end / 2]
    second = [(t / 60, m) for t, m in rows if t >= end / 2]
    slope = None
    if len(second) >= 5:
        n = len(second)
        mt = sum(t for t, _ in second) / n
        mm = sum(m for _, m in second) / n
        var = sum((t - mt) ** 2 for t, _ in second)
        slope = sum((t - mt) * (m - mm) for t, m in second) / var if var else None
    return {"samples": len(rows), "duration_s": end,
            "first_half_max_mb": max(first) if first else None,
            "second_half_max_mb": max(m for _, m in second) if second else None,
            "second_half_slope_mb_per_min": slope}

runs = load("runs.json")
cmp = load("compare.json")
s = {"corpus": load("corpus.json"), "runs": [], "compare": cmp, "criteria": []}
print()
print(f"corpus: {s['corpus']['files']} files, {s['corpus']['bytes'] / 2**20:.1f} MiB")
print("peak RSS = ru_maxrss from wait4 (an upper bound: it includes the forked helper's ~15 MB "
      "before exec); VmHWM = the binary's own peak, read last <= 50 ms before exit")
print()
print(f"{'run':<10} {'exit':>5} {'killed at':>10} {'elapsed s':>10} {'peak RSS MiB':>13} {'VmHWM MiB':>10} "
      f"{'1st half max':>13} {'2nd half max':>13} {'2nd slope MiB/min':>18} "
      f"{'stored':>8} {'cache hits':>10} {'retries':>8} {'dead':>5}")
for name in runs:
    r = load(f"result-{name}.json")
    rep = load(f"report-{name}.json", {})
    fl = flat(f"rss-{name}.csv") or {}
    row = {"name": name, **r, "flat": fl, "report": {k: rep.get(k) for k in (
        "status", "reconciled", "chunks_produced", "chunks_stored", "chunks_dead_lettered",
        "chunks_abandoned", "cache_hits", "requests", "retries", "rate_limited",
        "server_errors", "transport_errors", "malformed_responses", "sources_unchanged",
        "sources_completed", "elapsed_s", "chunks_per_s")}}
    s["runs"].append(row)
    def f(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) else "-"
    print(f"{name:<10} {r['exit']:>5} {f(r['killed_at_stored'], 'd'):>10} {r['elapsed_s']:>10.1f} "
          f"{r['peak_rss_kb'] / 1024:>13.1f} {r['last_vmhwm_kb'] / 1024:>10.1f} "
          f"{f(fl.get('first_half_max_mb'), '.1f'):>13} "
          f"{f(fl.get('second_half_max_mb'), '.1f'):>13} "
          f"{f(fl.get('second_half_slope_mb_per_min'), '+.2f'):>18} "
          f"{f(rep.get('chunks_stored'), 'd'):>8} {f(rep.get('cache_hits'), 'd'):>10} "
          f"{f(rep.get('retries'), 'd'):>8} {f(rep.get('chunks_dead_lettered'), 'd'):>5}")
print()
print("mock (faults) stats: " + json.dumps(load("mock-faults-stats.json", {})))
print()
for k, v in cmp.items():
    print(f"  {k:<34} {v}")

def crit(name, ok, detail):
    s["criteria"].append({"criterion": name, "pass": bool(ok), "detail": detail})

soak_runs = [x for x in s["runs"] if x["name"].startswith("soak")]
peaks = {x["name"]: round(max(x["peak_rss_kb"], x["last_vmhwm_kb"]) / 1024, 1) for x in s["runs"]}
crit(f"peak RSS <= {rss_limit:g} MiB in every run", max(peaks.values()) <= rss_limit,
     ", ".join(f"{k} {v}" for k, v in peaks.items()))
final = soak_runs[-1]
slope = final["flat"].get("second_half_slope_mb_per_min")
crit(f"flat: final soak run's 2nd-half RSS slope <= {slope_limit:g} MiB/min",
     slope is not None and slope <= slope_limit,
     "too few samples" if slope is None else
     f"{slope:+.2f} MiB/min; 1st-half max {final['flat']['first_half_max_mb']:.1f} MiB, "
     f"2nd-half max {final['flat']['second_half_max_mb']:.1f} MiB")
kills = [x for x in soak_runs if x["exit"] == -9]
crit("two SIGKILLs landed mid-run", len(kills) == 2,
     ", ".join(f"{x['name']} at {x['killed_at_stored']} stored" for x in kills) or "none")
crit("0 lost chunks", cmp["lost"] == 0, f"{cmp['lost']} clean rows missing from soak")
dups = cmp["extra_ids"] + cmp["dup_positions"] + max(0, cmp["dup_texts_soak"] - cmp["dup_texts_clean"])
crit("0 duplicated chunks", dups == 0,
     f"{cmp['extra_ids']} ids only in soak, {cmp['dup_positions']} (source, ordinal) twice, "
     f"{cmp['dup_texts_soak']} repeated texts vs {cmp['dup_texts_clean']} in clean")
crit("stores identical (id, text, embedding)",
     cmp["rows_soak"] == cmp["rows_clean"] and cmp["soak_except_clean"] == 0
     and cmp["clean_except_soak"] == 0,
     f"{cmp['rows_soak']} vs {cmp['rows_clean']} rows, EXCEPT {cmp['soak_except_clean']} / "
     f"{cmp['clean_except_soak']}")
rep = final["report"]
crit("final run's report reconciles, exit 0, 0 dead letters",
     rep.get("reconciled") is True and final["exit"] == 0 and rep.get("chunks_dead_lettered") == 0
     and cmp["dead_letter_lines"] == 0,
     f"reconciled={rep.get('reconciled')}, exit {final['exit']}, "
     f"dead-lettered {rep.get('chunks_dead_lettered')}, dead-letter file {cmp['dead_letter_lines']} lines")
rerun = [x for x in s["runs"] if x["name"] == "rerun"][0]["report"]
crit("(extra) a rerun after completion sends no request and stores nothing",
     rerun.get("requests") == 0 and rerun.get("chunks_stored") == 0 and rerun.get("reconciled") is True,
     f"requests {rerun.get('requests')}, stored {rerun.get('chunks_stored')}, "
     f"unchanged sources {rerun.get('sources_unchanged')}")
crit("(extra) sluice verify of the soak store is clean, aggregate files identical",
     cmp["verify_soak_exit"] == 0 and cmp["aggregate_files_differ"] == 0,
     f"verify exit {cmp['verify_soak_exit']}, {cmp['aggregate_files_differ']} aggregate files differ")
print()
for c in s["criteria"]:
    print(f"{'PASS' if c['pass'] else 'FAIL'}  {c['criterion']}: {c['detail']}")
with open(os.path.join(work, "summary.json"), "w") as f:
    json.dump(s, f, indent=1)
sys.exit(0 if all(c["pass"] for c in s["criteria"]) else 1)
PY

# ------------------------------------------------------------------- mocks --
export OPENAI_API_KEY=sk-soak-not-secret
# Same latency and limits for both mocks; the limits are well above what two
# cores reach, so they add headers and pacing but never dominate.
mock_common=(--dimensions 64 --latency-ms 10 --jitter-ms 20 --rpm 30000 --tpm 300000000
  --threads 2 --api-key-env OPENAI_API_KEY --seed "$seed")
mock_faults=(--fail-500 0.02 --fail-reset 0.01 --fail-malformed 0.01 --fail-wrong-dims 0.01
  --fail-429-first 10)

start_mock() { # NAME ARGS... -> sets mock_url
  local name=$1
  shift
  "$sluice" mock-api "$@" >"$work/mock-$name.log" 2>&1 &
  mock_pids+=($!)
  local i
  for ((i = 0; i < 100; i++)); do
    mock_url=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$work/mock-$name.log")
    [[ -n $mock_url ]] && return 0
    sleep 0.1
  done
  echo "soak: mock $name did not start:" >&2
  cat "$work/mock-$name.log" >&2
  exit 2
}

ingest() { # RUN STORE OUT URL [KILL_AT]
  local run=$1 store=$2 out=$3 url=$4 kill=${5:-0}
  local killargs=()
  ((kill > 0)) && killargs=(--kill-db "$store" --kill-at "$kill")
  python3 "$work/run.py" --csv "$work/rss-$run.csv" --result "$work/result-$run.json" \
    --log "$work/log-$run.txt" "${killargs[@]}" -- \
    "$sluice" ingest "$work/corpus" --endpoint "$url" --model soak-model --dimensions 64 \
    --store "sqlite:$store" --out "$out" --no-progress --report "$work/report-$run.json"
  runs+=("$run")
}

# ------------------------------------------------------------------- corpus --
log "work dir $work; corpus $bytes bytes, seed $seed; $sluice"
python3 "$work/gen.py" "$work/corpus" "$bytes" "$seed" >"$work/gen.txt"
read -r files _ written _ <"$work/gen.txt"
printf '{"files": %d, "bytes": %d, "seed": %d}\n' "${files}" "${written}" "$seed" >"$work/corpus.json"
log "corpus: $(cat "$work/gen.txt")"

runs=()
# --------------------------------------------------------------- clean run --
start_mock healthy "${mock_common[@]}"
log "clean run against $mock_url"
ingest clean "$work/clean.db" "$work/clean-out" "$mock_url"
expected=$(sqlite3 -readonly "$work/clean.db" 'SELECT count(*) FROM chunks')
log "clean run stored $expected chunks"

# --------------------------------------------------------------- soak runs --
start_mock faults "${mock_common[@]}" "${mock_faults[@]}"
faults_url=$mock_url
n=0
for fraction in $kill_at; do
  n=$((n + 1))
  at=$(python3 -c "import math,sys; print(max(1, math.ceil($expected * $fraction)))")
  log "soak run $n against $faults_url, SIGKILL at $at stored chunks ($fraction)"
  ingest "soak$n" "$work/soak.db" "$work/soak-out" "$faults_url" "$at"
done
n=$((n + 1))
log "soak run $n to completion"
ingest "soak$n" "$work/soak.db" "$work/soak-out" "$faults_url"
log "rerun: nothing left to do"
ingest rerun "$work/soak.db" "$work/soak-out" "$faults_url"
python3 - "$faults_url" >"$work/mock-faults-stats.json" <<'PY'
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1].rsplit("/v1", 1)[0] + "/stats", timeout=10).read().decode())
PY

# ----------------------------------------------------------------- compare --
log "comparing soak.db with clean.db"
cols="id, text, embedding"
all_cols="id, source_id, ordinal, byte_begin, byte_end, text, domain, category, metadata, model, dims, embedding, token_estimate, file_id"
file_cols="file_id, path, size_bytes, mtime_ns, content_hash, chunk_count"
sqlite3 -readonly "$work/soak.db" >"$work/compare.txt" <<SQL
ATTACH 'file:$work/clean.db?mode=ro' AS c;
SELECT 'rows_soak', count(*) FROM main.chunks;
SELECT 'rows_clean', count(*) FROM c.chunks;
SELECT 'soak_except_clean', count(*) FROM (SELECT $cols FROM main.chunks EXCEPT SELECT $cols FROM c.chunks);
SELECT 'clean_except_soak', count(*) FROM (SELECT $cols FROM c.chunks EXCEPT SELECT $cols FROM main.chunks);
SELECT 'all_columns_soak_except_clean', count(*) FROM (SELECT $all_cols FROM main.chunks EXCEPT SELECT $all_cols FROM c.chunks);
SELECT 'all_columns_clean_except_soak', count(*) FROM (SELECT $all_cols FROM c.chunks EXCEPT SELECT $all_cols FROM main.chunks);
SELECT 'lost', count(*) FROM c.chunks WHERE id NOT IN (SELECT id FROM main.chunks);
SELECT 'extra_ids', count(*) FROM main.chunks WHERE id NOT IN (SELECT id FROM c.chunks);
SELECT 'dup_positions', count(*) FROM (SELECT 1 FROM main.chunks GROUP BY source_id, ordinal HAVING count(*) > 1);
SELECT 'dup_texts_soak', count(*) - count(DISTINCT text) FROM main.chunks;
SELECT 'dup_texts_clean', count(*) - count(DISTINCT text) FROM c.chunks;
SELECT 'bad_embedding_length', count(*) FROM main.chunks WHERE length(embedding) != 64 * 4;
SELECT 'files_soak', count(*) FROM main.files;
SELECT 'files_clean', count(*) FROM c.files;
SELECT 'files_differ', count(*) FROM (SELECT $file_cols FROM main.files EXCEPT SELECT $file_cols FROM c.files);
SELECT 'run_chunks_left_soak', count(*) FROM main.run_chunks;
SQL
{
  cat "$work/compare.txt"
  echo "dead_letter_lines|$({ wc -l <"$work/soak-out/.dead-letter.jsonl"; } 2>/dev/null || echo 0)"
  if diff -rq -x '.*' "$work/clean-out" "$work/soak-out" >"$work/aggregate-diff.txt" 2>&1; then
    echo "aggregate_files_differ|0"
  else
    echo "aggregate_files_differ|$(wc -l <"$work/aggregate-diff.txt")"
  fi
  echo "verify_soak_exit|$("$sluice" verify --store "sqlite:$work/soak.db" "$work/corpus" \
    >"$work/verify.txt" 2>&1; echo $?)"
} | python3 -c '
import json, sys
print(json.dumps({k: int(v) for k, v in (line.strip().split("|") for line in sys.stdin if line.strip())}))
' >"$work/compare.json"

printf '%s\n' "${runs[@]}" | python3 -c 'import json,sys; print(json.dumps([l.strip() for l in sys.stdin]))' >"$work/runs.json"
set +e
python3 "$work/summary.py" "$work" "$rss_limit_mb" "$slope_limit" | tee "$work/summary.txt"
status=${PIPESTATUS[0]}
set -e
exit "$((status == 0 ? 0 : 1))"
