#!/usr/bin/env bash
# The differential fuzzer (RELIABILITY row 31, tests/fuzz/fuzz_heap.c).
#
#   scripts/fuzz.sh [seconds] [extra libFuzzer options...]
#
# Builds tests/fuzz/fuzz_heap with clang (-DWINHEAP_FUZZ=ON: libFuzzer +
# AddressSanitizer + UndefinedBehaviorSanitizer) in build-fuzz/, replays the
# saved reproducers of tests/fuzz/crashes/ (regressions), then fuzzes for the
# given number of seconds (default 60) from the seeds of tests/fuzz/corpus/
# (new inputs go to build-fuzz/corpus/, crashes to build-fuzz/crashes/).
# Prints the number of executions; exits non-zero on any crash, leak,
# timeout or mismatch.  FUZZ_JOBS=n runs n fuzzing processes in parallel.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
bash scripts/deps.sh
out=build-fuzz
mkdir -p "$out"
if ! { CC=clang cmake -S . -B "$out" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWINHEAP_FUZZ=ON -DWINHEAP_TESTS=OFF &&
       cmake --build "$out" --target fuzz_heap -j"$(nproc)"; } >"$out/build.log" 2>&1; then
  tail -30 "$out/build.log"
  echo "fuzz_heap: build failed (log: $out/build.log)" >&2
  exit 1
fi
bin=$out/tests/fuzz/fuzz_heap
rm -rf "$out/crashes"
mkdir -p "$out/corpus" "$out/crashes"

# 1. Regressions: every saved reproducer must pass now.
shopt -s nullglob
repro=(tests/fuzz/crashes/*)
if ((${#repro[@]})); then
  echo "=== fuzz_heap: replaying ${#repro[@]} saved reproducer(s)"
  if ! "$bin" -runs=0 "${repro[@]}" >"$out/regress.log" 2>&1; then
    grep -E '^Running:|MISMATCH|SUMMARY:|runtime error|^winheap:' "$out/regress.log" | tail -20
    echo "fuzz_heap: a saved reproducer fails (log: $out/regress.log)" >&2
    exit 1
  fi
fi

# 2. Fuzz.
echo "=== fuzz_heap: fuzzing for ${seconds}s"
log=$out/fuzz.log
status=0
opts=(-max_len=4096 -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1
      -artifact_prefix="$out/crashes/" "$@")
jobs=${FUZZ_JOBS:-1}
if ((jobs > 1)); then
  "$bin" "${opts[@]}" -jobs="$jobs" -workers="$jobs" "$out/corpus" tests/fuzz/corpus >"$log" 2>&1 || status=$?
  cat fuzz-*.log >>"$log" 2>/dev/null || true
  rm -f fuzz-*.log
else
  "$bin" "${opts[@]}" "$out/corpus" tests/fuzz/corpus >"$log" 2>&1 || status=$?
fi
grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|^fuzz_heap: [0-9]+ inputs' "$log" || true
execs=$(grep -ho 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s += $2} END {print s + 0}')
echo "fuzz_heap: $execs executions in ${seconds}s"
crashes=("$out"/crashes/*)
if ((status != 0)) || ((${#crashes[@]})); then
  grep -E 'MISMATCH|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|SUMMARY:|runtime error|^winheap:|Test unit written' "$log" | head -20 || true
  echo "fuzz_heap: FAILED (exit $status; reproducers: ${crashes[*]:-none}; log: $log)" >&2
  exit 1
fi
echo "fuzz_heap: no findings"
