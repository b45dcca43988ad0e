#!/usr/bin/env bash
# Runs tool_scenarios (ASan build of winheap) and checks that AddressSanitizer
# reports an overflow and a use after free inside winheap blocks at the faulty
# line, and that correct programs run clean.  Usage: tools_asan.sh <tool_scenarios>
set -u
bin=$1
src=$(dirname "$0")/tool_scenarios.c
fail=0
line_of() { grep -n "TOOL-LINE $1" "$src" | cut -d: -f1; }
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=0
expect() {  # expect <case> <heap> <pattern> <line>
  local out
  out=$("$bin" "$1" "$2" 2>&1)
  if ! grep -q "$3" <<<"$out" || ! grep -q "tool_scenarios.c:$4" <<<"$out"; then
    echo "FAIL: $1 on the $2 heap: expected '$3' at line $4"; echo "$out" | tail -20; fail=1
  else
    echo "ok: $1 on the $2 heap: ASan said '$3' at line $4"
  fi
}
for heap in process private; do
  expect overflow "$heap" "AddressSanitizer: use-after-poison" "$(line_of overflow)"
  expect uaf "$heap" "AddressSanitizer: use-after-poison" "$(line_of uaf)"
  for c in realloc clean; do
    if ! out=$("$bin" "$c" "$heap" 2>&1); then echo "FAIL: $c on the $heap heap"; echo "$out" | tail -20; fail=1; else echo "ok: $c on the $heap heap: clean"; fi
  done
done
if ! out=$("$bin" destroy private 2>&1); then echo "FAIL: destroy"; echo "$out" | tail; fail=1; else echo "ok: destroy with live blocks: clean"; fi
[ $fail -eq 0 ] && echo "tools_asan: all passed" || echo "tools_asan: FAILED"
exit $fail
