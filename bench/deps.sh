#!/usr/bin/env bash
# bench/deps.sh - install the peer allocators the benchmarks compare against.
# Debian 12 packages only; glibc's malloc is always there.  Run as root (or
# through sudo).  Safe to run again: installs only what is missing.
set -euo pipefail

# strace: system calls per HeapCreate+HeapDestroy (optional: without it that count is left out)
pkgs=(libmimalloc2.0 libmimalloc-dev libjemalloc2 libtcmalloc-minimal4 gcc make strace)
missing=()
for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "bench/deps.sh: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
    $sudo apt-get update >/dev/null
    $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null || {
        echo "bench/deps.sh: could not install ${missing[*]}; the missing peers will be skipped" >&2
        exit 0
    }
fi
