#!/usr/bin/env bash
# bench/run.sh - the benchmark suite in one command.
#
#   bench/run.sh [--quick] [--reps N] [--only w1,w2] [--alloc a1,a2] [--no-chart]
#                [--idle-budget S] [--timeout S] [--from-json FILE]
#
# Installs the peer allocators if missing (bench/deps.sh), builds winheap
# (Release, build/) and the bench programs (bench/build/), runs every
# (workload, allocator) pair --reps times (3 by default; the median is kept),
# shows a progress line per run on stderr, writes bench/results/latest.{csv,md,json},
# prints the tables (time and peak RSS as ratios to mimalloc and to glibc) and
# the targets of the performance issue, and writes the chart docs/bench.svg.
# --quick runs every workload at a fifth of its size once (a smoke test;
# results go to bench/results/quick.* and no chart is written).
# --from-json bench/results/latest.json reports again from the raw runs of an
# earlier run (tables, targets, chart) without building or running anything.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

for a in "$@"; do
    case "$a" in
        --from-json|--from-json=*) exec python3 "$here/run.py" --root "$root" "$@" ;;  # report only
    esac
done

"$here/deps.sh"

# winheap itself, "if needed": configure build/ (Release) if it does not exist;
# rebuild only the two targets the bench uses (the static library and, where
# the CMakeLists has it, the malloc shim), and only when a source is newer
# than them, so that a run does not race a build or test run in build/.
if [ ! -f "$root/build/CMakeCache.txt" ]; then
    echo "bench: configuring winheap (Release) in build/" >&2
    cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
btype="$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$root/build/CMakeCache.txt")"
if [ "$btype" != "Release" ]; then
    echo "bench: warning: build/ is configured as '$btype', not Release; figures may not be representative" >&2
fi
targets=(winheap_static)
shim_target=0
if grep -q 'add_library(winheap-malloc' "$root/CMakeLists.txt"; then
    targets+=(winheap-malloc)
    shim_target=1
fi
stale=0
[ -f "$root/build/libwinheap.a" ] || stale=1
[ "$shim_target" = 1 ] && [ ! -f "$root/build/libwinheap-malloc.so" ] && stale=1
if [ "$stale" = 0 ] && [ -n "$(find "$root/src" "$root/include" "$root/CMakeLists.txt" -newer "$root/build/libwinheap.a" \( -name '*.[ch]' -o -name CMakeLists.txt \) 2>/dev/null | head -1)" ]; then
    stale=1
fi
export WH_BENCH_BUILD="build/libwinheap.a up to date with the sources"
if [ "$stale" = 1 ]; then
    WH_BENCH_BUILD="build/ rebuilt from the working tree"
    echo "bench: building winheap (build/: ${targets[*]})" >&2
    tflags=()
    for t in "${targets[@]}"; do tflags+=(--target "$t"); done
    if ! cmake --build "$root/build" -j2 "${tflags[@]}" >"$root/build/bench-build.log" 2>&1; then
        if [ -f "$root/build/libwinheap.a" ]; then
            echo "bench: warning: the winheap build failed (see build/bench-build.log); using the existing build/libwinheap.a" >&2
            WH_BENCH_BUILD="the build of the working tree FAILED; the existing build/libwinheap.a of $(date -r "$root/build/libwinheap.a" '+%Y-%m-%d %H:%M:%S') was used, so the commit below may not be what ran"
        else
            cat "$root/build/bench-build.log" >&2
            exit 1
        fi
    fi
fi

echo "bench: building the bench programs (bench/build/)" >&2
make -s -C "$here" >/dev/null

exec python3 "$here/run.py" --root "$root" "$@"
