#!/usr/bin/env bash
# Quick start, step 2: the whole test suite, twice - a Debug build with
# AddressSanitizer + UndefinedBehaviorSanitizer and every internal assert on
# (build-asan/), and a Release build (build/).  Exits non-zero if any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
jobs="$(nproc)"
status=0
run() {  # run <dir> <title> <cmake args...>
  local dir=$1 title=$2; shift 2
  echo "=== $title ($dir)"
  cmake -S . -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j"$jobs" >/dev/null
  ctest --test-dir "$dir" -j"$jobs" --output-on-failure || status=1
}
run build-asan "Debug + ASan + UBSan, all asserts" -DCMAKE_BUILD_TYPE=Debug -DWINHEAP_SANITIZE=ON
run build "Release" -DCMAKE_BUILD_TYPE=Release
exit $status
