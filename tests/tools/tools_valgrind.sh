#!/usr/bin/env bash
# Runs tool_scenarios under memcheck (Valgrind build of winheap) and checks
# that each mistake is reported at its line, and that correct programs and
# HeapDestroy with live blocks give no report.  Usage: tools_valgrind.sh <tool_scenarios>
set -u
bin=$1
src=$(dirname "$0")/tool_scenarios.c
fail=0
line_of() { grep -n "TOOL-LINE $1" "$src" | cut -d: -f1; }
expect() {  # expect <case> <heap> <pattern in memcheck output> [line]
  local out
  out=$(valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 "$bin" "$1" "$2" 2>&1)
  if ! grep -q "$3" <<<"$out" || { [ -n "${4:-}" ] && ! grep -q "tool_scenarios.c:$4)" <<<"$out"; }; then
    echo "FAIL: $1 on the $2 heap: expected '$3'${4:+ at line $4}"; echo "$out" | tail -25; fail=1
  else
    echo "ok: $1 on the $2 heap: memcheck said '$3'${4:+ at line $4}"
  fi
}
expect_clean() {
  local out
  if ! out=$(valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 "$bin" "$1" "$2" 2>&1); then
    echo "FAIL: $1 on the $2 heap: memcheck reported errors"; echo "$out" | tail -25; fail=1
  else
    echo "ok: $1 on the $2 heap: no report"
  fi
}
for heap in process private; do
  expect overflow "$heap" "Invalid write of size 1" "$(line_of overflow)"
  expect uaf "$heap" "Invalid read of size 1" "$(line_of uaf)"
  expect uninit "$heap" "Conditional jump or move depends on uninitialised value" "$(line_of uninit)"
  expect double "$heap" "Invalid free()" "$(line_of double)"
  expect leak "$heap" "definitely lost"
  expect_clean realloc "$heap"
  expect_clean clean "$heap"
done
expect_clean destroy private
n_fail=$fail
[ $fail -eq 0 ] && echo "tools_valgrind: all passed" || echo "tools_valgrind: FAILED"
exit $n_fail
