#!/usr/bin/env bash
# cpp_package_test.sh BUILD_DIR SOURCE_DIR CXX CC: installs BUILD_DIR into a
# temp prefix, configures and builds examples/cpp against it, runs it on
# examples/corpus and checks what it printed against the SQLite store.
set -euo pipefail
build=$1 src=$2 cxx=$3 cc=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake --install "$build" --prefix "$work/prefix" >"$work/install.log"
test -f "$work/prefix/lib/cmake/sluice/sluiceConfig.cmake"
test -f "$work/prefix/lib/cmake/sluice/sluiceConfigVersion.cmake"
test -f "$work/prefix/include/sluice/pipeline.h"
test -f "$work/prefix/include/sluice/handoff.h"
if [[ -e "$work/prefix/include/sluice/mock_api.h" ]]; then
  echo "FAIL: mock_api.h installed without its library" >&2
  exit 1
fi

# Nothing from the source tree: only the prefix is given.
cmake -S "$src/examples/cpp" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Debug \
  >"$work/configure.log" || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/build" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }

"$work/build/sluice_example" "$src/examples/corpus" "$work/run" "worn gate seal replacement" \
  >"$work/out.txt"
cat "$work/out.txt"

fail() { echo "FAIL: $*" >&2; exit 1; }
stored=$(sed -n 's/^stored \([0-9]*\) chunks$/\1/p' "$work/out.txt")
[[ -n "$stored" && "$stored" -gt 0 ]] || fail "no 'stored N chunks' line"
rows=$(sqlite3 "$work/run/example.db" "SELECT count(*) FROM chunks")
[[ "$rows" == "$stored" ]] || fail "the store holds $rows chunks, the example stored $stored"
grep -q '^complete: ok$' "$work/out.txt" || fail "the completion callback did not run"
# The progress callback's last call has the final counts.
grep -q "^progress: [0-9]* sources, $stored chunks stored (final)$" "$work/out.txt" ||
  fail "no final progress call with $stored chunks"
[[ $(grep -c '^hit ' "$work/out.txt") == 3 ]] || fail "expected 3 search hits"
# The hash embedder is lexical: the seal replacement procedure ranks first.
head -1 <(grep '^hit ' "$work/out.txt") | grep -q 'gate-seal-replacement' ||
  fail "the top hit is not the seal procedure"
echo "cpp_package_test: ok ($stored chunks)"
