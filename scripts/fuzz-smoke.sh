#!/usr/bin/env bash
# Fuzz smoke run (`make fuzz-smoke`, part of `make test`): builds every
# libFuzzer target under fuzz/ with clang + ASan/UBSan in build-fuzz/, then
# runs each for a bounded time from the seeds in fuzz/corpus/<name>/.
# Exits non-zero on any crash, leak, timeout or OOM and prints the reproducer.
#
# Environment:
#   FUZZ_SECONDS  seconds per target (default 10)
#   FUZZ_JOBS     targets run at once (default: nproc, at most 2)
#   FUZZ_BUILD    build directory (default build-fuzz)
#   FUZZ_TARGETS  space-separated subset of targets (default: all built)
# `fuzz-smoke.sh build-only` builds the targets and runs none (`make test`
# builds them while the ASan suite runs).
# Reproduce a finding: build-fuzz/fuzz/<target> <reproducer file>
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${FUZZ_BUILD:-build-fuzz}
SECONDS_PER_TARGET=${FUZZ_SECONDS:-10}
JOBS=${FUZZ_JOBS:-$(nproc)}
((JOBS > 2)) && JOBS=2
((JOBS < 1)) && JOBS=1

if ! command -v clang++ >/dev/null; then
  echo "fuzz-smoke: clang++ not found (apt-get install clang libclang-rt-14-dev)" >&2
  exit 1
fi

echo "fuzz-smoke: configuring $BUILD (clang, ASan+UBSan, libFuzzer)"
# Ninja, as scripts/check-sanitize.sh; a tree made with make is rebuilt.
if [[ -f $BUILD/CMakeCache.txt ]] && ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$BUILD/CMakeCache.txt"; then
  rm -rf "$BUILD"
fi
CC=clang CXX=clang++ cmake -G Ninja -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSLUICE_BUILD_FUZZERS=ON -DSLUICE_SANITIZE=address \
  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link" -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link" \
  -DSLUICE_BUILD_BENCH=OFF -DSLUICE_BUILD_PYTHON=OFF -DCMAKE_EXE_LINKER_FLAGS=-fuse-ld=lld \
  >"$BUILD.configure.log" 2>&1 || {
  cat "$BUILD.configure.log" >&2
  exit 1
}
echo "fuzz-smoke: building fuzz targets"
cmake --build "$BUILD" --target sluice_fuzzers -j "$(nproc)" >"$BUILD.build.log" 2>&1 || {
  tail -50 "$BUILD.build.log" >&2
  exit 1
}

if [[ ${1:-} == build-only ]]; then
  echo "fuzz-smoke: built"
  exit 0
fi

mapfile -t lines <"$BUILD/fuzz/fuzz_targets.txt"
targets=()
declare -A corpus_of
for line in "${lines[@]}"; do
  [[ -z $line ]] && continue
  read -r name corpus <<<"$line"
  if [[ -n ${FUZZ_TARGETS:-} && " $FUZZ_TARGETS " != *" $name "* ]]; then continue; fi
  targets+=("$name")
  corpus_of[$name]=$corpus
done
if ((${#targets[@]} == 0)); then
  echo "fuzz-smoke: no fuzz targets were configured" >&2
  exit 1
fi

WORK="$ROOT/$BUILD/fuzz-work"
rm -rf "$WORK"
mkdir -p "$WORK"
export SLUICE_FUZZ_TMPDIR=${SLUICE_FUZZ_TMPDIR:-$([[ -w /dev/shm ]] && echo /dev/shm || echo /tmp)}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_one() {
  local name=$1 corpus=${corpus_of[$1]}
  local dir="$WORK/$name"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  if [[ -d fuzz/corpus/$corpus ]]; then cp fuzz/corpus/"$corpus"/* "$dir/corpus/" 2>/dev/null || true; fi
  "$BUILD/fuzz/$name" "$dir/corpus" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 \
    -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/" >"$dir/log" 2>&1
}

echo "fuzz-smoke: ${#targets[@]} targets, ${SECONDS_PER_TARGET}s each, $JOBS at a time"
failed=()
pids=()
names=()
flush() {
  local i
  for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then
      echo "  ok    ${names[$i]} ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$WORK/${names[$i]}/log" | grep -o '[0-9]*$' || echo '?') runs)"
    else
      failed+=("${names[$i]}")
      echo "  FAIL  ${names[$i]}"
    fi
  done
  pids=()
  names=()
}
for name in "${targets[@]}"; do
  run_one "$name" &
  pids+=($!)
  names+=("$name")
  if ((${#pids[@]} >= JOBS)); then flush; fi
done
flush

if ((${#failed[@]} > 0)); then
  for name in "${failed[@]}"; do
    echo "---- $name: last lines of $WORK/$name/log" >&2
    tail -40 "$WORK/$name/log" >&2
    for f in "$WORK/$name"/artifacts/*; do
      [[ -e $f ]] && echo "reproducer: $f  (run: $BUILD/fuzz/$name $f)" >&2
    done
  done
  echo "fuzz-smoke: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz-smoke: all ${#targets[@]} targets ran clean"
