#!/usr/bin/env bash
# Quick start, step 1: install what is missing, build everything in build/
# (Release: the libraries, the demo, the tests) and run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
echo
./build/winheap-demo
