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
 *
 * Free checking costs what a call changes, not what the blocks it touches
 * hold: backend.c fills a free block's body once, when its bytes become free,
 * and checks on reuse only the bytes it hands out; only HeapValidate reads
 * every free byte.  The two counters below (bytes filled, bytes checked)
 * let the tests hold the back end to that.
 */
#include "internal.h"

unsigned wh_debug_mode;
_Atomic uint64_t wh_debug_filled, wh_debug_checked;

static inline uint8_t pattern_byte(uint32_t pattern, uintptr_t a) { return (uint8_t)(pattern >> (8 * (a & 3))); }

/* Both run inside memory the program may not touch (tails, free bodies):
 * no ASan instrumentation, memcheck errors off, and volatile bytes so that
 * the loops never become calls to the intercepted memset.  The caller holds
 * the lock of the heap that owns [p, p+n) (or owns the block alone); the
 * counters are process-wide and relaxed. */
WH_NO_ASAN void wh_debug_fill(void *p, size_t n, uint32_t pattern) {
    volatile uint8_t *b = p;
    wh_tool_enter();
    for (size_t i = 0; i < n; i++) b[i] = pattern_byte(pattern, (uintptr_t)(b + i));
    wh_tool_leave();
    atomic_fetch_add_explicit(&wh_debug_filled, n, memory_order_relaxed);
}

/* True if every byte of [p, p+n) holds `pattern`; stops at the first that
 * does not. */
WH_NO_ASAN bool wh_debug_check(const void *p, size_t n, uint32_t pattern) {
    const volatile uint8_t *b = p;
    bool ok = true;
    size_t i;
    wh_tool_enter();
    for (i = 0; i < n && ok; i++) ok = b[i] == pattern_byte(pattern, (uintptr_t)(b + i));
    wh_tool_leave();
    atomic_fetch_add_explicit(&wh_debug_checked, i, memory_order_relaxed);
    return ok;
}
