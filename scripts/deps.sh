#!/usr/bin/env bash
# Installs the Debian packages that building and testing winheap needs, if
# any is missing.  Sourced by build.sh and test.sh; safe to run again.
#   cmake, gcc, clang ..... the build (clang for the sanitizer runtimes and libFuzzer)
#   libclang-rt-14-dev .... the libFuzzer and sanitizer runtimes of clang 14
#   valgrind .............. memcheck, and its headers for the -DWINHEAP_VALGRIND=ON build
#   pkg-config, libcmocka-dev  the unit-test framework (cmocka)
#   python3, perl, git, sqlite3  tests/shim_programs.sh runs these real programs
#                           with and without the malloc shim and compares them
set -euo pipefail
need=()
for p in cmake gcc clang libclang-rt-14-dev pkg-config libcmocka-dev valgrind python3 perl git sqlite3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "winheap: installing Debian packages: ${need[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
