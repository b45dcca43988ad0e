/*
 * debug.c - the debug heap of SPEC D18: fill patterns and their checks.
 *
 * WINHEAP_DEBUG=tail,free,validate,guard (or all), read once at start-up
 * (options.c), turns on the gflags-style switches for every heap of the
 * process:
 *   tail      at least 8 bytes of 0xAB after every block; a changed byte
 *             makes HeapValidate(h,0,p) FALSE and a free report corruption;
 *             the padding is rewritten after an in-place resize.
 *   free      new blocks are filled with 0xBAADF00D, freed blocks with
 *             0xFEEEFEEE; the pattern is checked when a free block is reused
 *             and by HeapValidate(h,0,NULL) ("write after free").
 *   validate  every call validates the whole heap first.
 *   guard     page heap: every block gets a mapping of its own and ends (to
 *             the 16-byte alignment) against an inaccessible page, so the
 *             first byte written past a 16-byte-multiple block faults.
 * The low-fragmentation front end is off while any switch is on, as on
 * Windows.  The patterns are laid by address (byte a holds byte a % 4 of
 * the little-endian word), so free blocks that merge stay consistent.
 */
#include "internal.h"

unsigned wh_debug_mode;

static inline uint8_t pattern_byte(uint32_t pattern, uintptr_t a) { return (uint8_t)(pattern >> (8 * (a & 3))); }

/* Both run inside memory the program may not touch (tails, free bodies):
 * no ASan instrumentation, memcheck errors off, and volatile bytes so that
 * the loops never become calls to the intercepted memset. */
WH_NO_ASAN void wh_debug_fill(void *p, size_t n, uint32_t pattern) {
    volatile uint8_t *b = p;
    wh_tool_enter();
    for (size_t i = 0; i < n; i++) b[i] = pattern_byte(pattern, (uintptr_t)(b + i));
    wh_tool_leave();
}

WH_NO_ASAN bool wh_debug_check(const void *p, size_t n, uint32_t pattern) {
    const volatile uint8_t *b = p;
    bool ok = true;
    wh_tool_enter();
    for (size_t i = 0; i < n && ok; i++) ok = b[i] == pattern_byte(pattern, (uintptr_t)(b + i));
    wh_tool_leave();
    return ok;
}
