#!/usr/bin/env bash
# Quick start, step 2: the whole test suite - a Debug build with
# AddressSanitizer + UndefinedBehaviorSanitizer and every internal assert on
# (build-asan/), a Release build (build/), the threaded tests under
# ThreadSanitizer (build-tsan/), and the memcheck visibility test in a
# Valgrind build (build-vg/), then a short run of the differential fuzzer
# (build-fuzz/).  Exits non-zero if any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
jobs="$(nproc)"
# The tests that start threads; they also run under ThreadSanitizer.
TSAN_TESTS="test_stress|test_api_info|test_api_walk|test_heap|test_reliability_threads|test_lfh"
status=0
run() {  # run <dir> <title> <ctest filter or ""> <cmake args...>
  local dir=$1 title=$2 filter=$3; shift 3
  echo "=== $title ($dir)"
  cmake -S . -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j"$jobs" >/dev/null
  ctest --test-dir "$dir" -j"$jobs" --output-on-failure ${filter:+-R "$filter"} || status=1
}
run build-asan "Debug + ASan + UBSan, all asserts" "" -DCMAKE_BUILD_TYPE=Debug -DWINHEAP_SANITIZE=ON
run build "Release" "" -DCMAKE_BUILD_TYPE=Release
run build-tsan "ThreadSanitizer: the threaded tests" "$TSAN_TESTS" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWINHEAP_TSAN=ON
run build-vg "Valgrind build: memcheck sees every block" "tools_valgrind" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWINHEAP_VALGRIND=ON
echo "=== the differential fuzzer: saved reproducers, then 60 seconds (build-fuzz)"
bash scripts/fuzz.sh 60 || status=1
if [ $status -eq 0 ]; then echo "winheap: all test runs passed"; else echo "winheap: SOME TEST RUNS FAILED"; fi
exit $status
