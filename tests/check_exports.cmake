# check_exports.cmake - SPEC D1: the shared library exports the Win32 heap API
# and documented winheap_* extensions, and nothing else.
#
# Usage: cmake -DLIB=<path to libwinheap.so> [-DEXTRA=<name;name...>] -P check_exports.cmake
#
# EXTRA names further functions that must be exported and are allowed (the
# malloc family of the shim, libwinheap-malloc.so).
#
# Runs `nm -D --defined-only` on LIB and fails if a defined dynamic symbol of
# type T, D, B, W, V, i or R (code, data, bss, weak, indirect function,
# read-only data) is neither one of the 18 Win32 functions nor a name starting
# with winheap_, or if one of the 18 functions is missing.  Version suffixes
# (name@VER, name@@VER) are ignored.  Absolute symbols (type A, version nodes)
# are not exports of code or data and are not checked.

if(NOT DEFINED LIB OR LIB STREQUAL "")
  message(FATAL_ERROR "check_exports: pass -DLIB=<path to libwinheap.so>")
endif()
if(NOT EXISTS "${LIB}")
  message(FATAL_ERROR "check_exports: ${LIB} does not exist")
endif()

set(WH_REQUIRED
  GetProcessHeap GetProcessHeaps HeapCreate HeapDestroy HeapAlloc HeapReAlloc
  HeapFree HeapSize HeapValidate HeapCompact HeapLock HeapUnlock HeapWalk
  HeapSummary HeapQueryInformation HeapSetInformation GetLastError SetLastError)
if(DEFINED EXTRA)
  list(APPEND WH_REQUIRED ${EXTRA})
endif()
list(LENGTH WH_REQUIRED WH_NREQUIRED)

if(DEFINED NM AND NOT NM STREQUAL "")
  set(WH_NM "${NM}")
else()
  find_program(WH_NM NAMES nm llvm-nm gcc-nm)
endif()
if(NOT WH_NM)
  message(FATAL_ERROR "check_exports: nm not found")
endif()

execute_process(
  COMMAND "${WH_NM}" -D --defined-only "${LIB}"
  OUTPUT_VARIABLE nm_out
  ERROR_VARIABLE nm_err
  RESULT_VARIABLE nm_rc)
if(NOT nm_rc EQUAL 0)
  message(FATAL_ERROR "check_exports: '${WH_NM} -D --defined-only ${LIB}' failed (${nm_rc}): ${nm_err}")
endif()

# One symbol per line: "<address> <type> <name>" (address may be blank).
string(REPLACE ";" "\\;" nm_out "${nm_out}")
string(REPLACE "\n" ";" nm_lines "${nm_out}")

set(found "")
set(bad "")
set(nsyms 0)
foreach(line IN LISTS nm_lines)
  string(STRIP "${line}" line)
  if(line STREQUAL "")
    continue()
  endif()
  if(NOT line MATCHES "^([0-9A-Fa-f]+[ \t]+)?([A-Za-z?-])[ \t]+([^ \t]+)$")
    list(APPEND bad "<unparsed nm line: ${line}>")
    continue()
  endif()
  set(type "${CMAKE_MATCH_2}")
  set(name "${CMAKE_MATCH_3}")
  string(REGEX REPLACE "@.*$" "" name "${name}")
  if(NOT type MATCHES "^[TDBWVRi]$")
    continue()
  endif()
  math(EXPR nsyms "${nsyms} + 1")
  list(FIND WH_REQUIRED "${name}" idx)
  if(NOT idx EQUAL -1)
    list(APPEND found "${name}")
  elseif(name MATCHES "^winheap_")
    # documented extension
  else()
    list(APPEND bad "${name} (${type})")
  endif()
endforeach()

set(missing "")
foreach(fn IN LISTS WH_REQUIRED)
  list(FIND found "${fn}" idx)
  if(idx EQUAL -1)
    list(APPEND missing "${fn}")
  endif()
endforeach()

set(msg "")
if(bad)
  list(JOIN bad ", " bad_s)
  string(APPEND msg "symbols exported that are neither Win32 heap functions nor winheap_*: ${bad_s}\n")
endif()
if(missing)
  list(JOIN missing ", " missing_s)
  string(APPEND msg "required functions not exported: ${missing_s}\n")
endif()
if(NOT msg STREQUAL "")
  message(FATAL_ERROR "check_exports: ${LIB}:\n${msg}")
endif()
message(STATUS "check_exports: ${LIB}: ${nsyms} exported symbols, all allowed; all ${WH_NREQUIRED} required functions present")
