#!/usr/bin/env bash
# Sanitizer builds.
#   check-sanitize.sh address  ASan+UBSan build (build-asan) of everything; runs the unit tests
#   check-sanitize.sh thread   TSan build (build-tsan) of the concurrency tests (queues, pipeline,
#                              embed stage) and runs them
#   check-sanitize.sh          both
#   a second argument `build-only` builds without running anything
# `make test` runs the whole suite (services included) in the ASan build, then
# the TSan part (under scripts/test-services.sh too: task_feed_test's Redis
# cases skip without SLUICE_TEST_REDIS_URL), so every test runs under a
# sanitizer in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
mode=${1:-all}

# Unity builds (CMake joins each target's sources, 8 at a time, into one
# translation unit): the instrumented builds are compiled from scratch in CI,
# and most of a test file's compile time is parsing the same headers
# (gtest, fmt, spdlog, simdjson). Measured on 5 test files with the ASan
# flags: 58 CPU-seconds one by one, 39 as one unit. The Release build
# (make run, benchmarks) stays one file per unit, so a missing #include still
# shows there.
unity=(-DCMAKE_UNITY_BUILD=ON -DCMAKE_UNITY_BUILD_BATCH_SIZE=8)
# The tests and the front ends (CLI, serve, main, the Python binding) at -O0,
# the stages they drive at -O1 (CMakeLists.txt, SLUICE_LIGHT_COMPILE_OPTIONS):
# with the sanitizers, -O1 made clang spend ~3x as long on a test file, and
# the tests' own code is not where their time goes. And the tests reuse one
# precompiled header of gtest and the common standard headers
# (SLUICE_TEST_PCH, tests/CMakeLists.txt).
light=(-DSLUICE_LIGHT_COMPILE_OPTIONS=-O0 -DSLUICE_TEST_PCH=ON)
# LLVM's linker: ~60 instrumented test executables, each linking most of the
# libraries; job_manager_test links in 0.96 s with lld against 2.87 s with
# GNU ld.
lld=(-DCMAKE_EXE_LINKER_FLAGS=-fuse-ld=lld -DCMAKE_SHARED_LINKER_FLAGS=-fuse-ld=lld
  -DCMAKE_MODULE_LINKER_FLAGS=-fuse-ld=lld)

# Both instrumented builds use clang: with the same flags (-O1 -g, ASan+UBSan)
# it compiled a test file in 5.1 CPU-s where GCC 12 took 14.0, the pipeline's
# unity unit in 28.8 where GCC took 52.8, with objects 3-4x smaller (faster
# links), while the tests ran as fast (two CPU-heavy tests timed interleaved:
# within 3%). The Release build (make run, benchmarks) stays GCC, so both
# compilers' warnings are seen.
export CC=${SANITIZE_CC:-clang} CXX=${SANITIZE_CXX:-clang++}

# Ninja rather than make (faster on a full build: see BENCHMARKS.md "make test";
# the tests are unchanged). A tree configured with another generator
# (before this change) is rebuilt from scratch.
fresh_ninja_tree() {
  if [[ -f $1/CMakeCache.txt ]] && ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$1/CMakeCache.txt"; then
    rm -rf "$1"
  fi
}

asan() {
  fresh_ninja_tree build-asan
  cmake -G Ninja -S . -B build-asan -DSLUICE_SANITIZE=address -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" -DSLUICE_BUILD_BENCH=OFF "${unity[@]}" "${light[@]}" "${lld[@]}" >/dev/null
  cmake --build build-asan -j "$jobs"
  if [[ "${2:-}" != "build-only" ]]; then
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      ctest --test-dir build-asan --output-on-failure -j "$jobs" -L unit --timeout 300
  fi
}

tsan() {
  local build_only=${1:-}
  local targets=(common_test pipeline_test resume_test source_tracker_test source_feed_test
    sluice_embed_stage_test job_manager_test task_feed_test)
  fresh_ninja_tree build-tsan
  cmake -G Ninja -S . -B build-tsan -DSLUICE_SANITIZE=thread -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" -DSLUICE_BUILD_BENCH=OFF "${unity[@]}" "${light[@]}" "${lld[@]}" >/dev/null
  cmake --build build-tsan -j "$jobs" --target "${targets[@]}"
  # The aggregator's background rewrite (its thread and its snapshot
  # connection); its other tests are single-threaded and measure RSS, which
  # TSan's shadow memory would distort.
  local filtered=("aggregator_test:*Background*")
  cmake --build build-tsan -j "$jobs" --target aggregator_test
  [[ $build_only == build-only ]] && return 0
  for t in "${targets[@]}" "${filtered[@]}"; do
    local name=${t%%:*} filter='*'
    [[ $t == *:* ]] && filter=${t#*:}
    bin=$(find build-tsan/tests -type f -name "$name" -perm -u+x | head -1)
    echo "== TSan: $name ($filter)"
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" "$bin" --gtest_brief=1 \
      --gtest_filter="$filter"
  done
}

case "$mode" in
  address) asan "$@" ;;
  thread) tsan "${2:-}" ;;
  all) asan address; tsan ;;
  *) echo "usage: $0 [address|thread]" >&2; exit 2 ;;
esac
