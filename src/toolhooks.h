/*
 * toolhooks.h - what Valgrind's memcheck and AddressSanitizer are told about
 * winheap's blocks (issue "tool visibility", RELIABILITY row 30).
 *
 * winheap takes its memory from mmap, so neither tool knows where a block
 * starts or ends unless the allocator says so.  These hooks say it:
 *   - in a Valgrind build (cmake -DWINHEAP_VALGRIND=ON) every block is a
 *     malloc-like block for memcheck (MALLOCLIKE / FREELIKE /
 *     RESIZEINPLACE, so leaks are found as for malloc), headers, free bodies
 *     and slack are NOACCESS, HeapDestroy frees its live blocks one by one
 *     (no leak reports for a destroyed heap), and the
 *     allocator's own accesses inside NOACCESS memory (wh_block_read/write,
 *     wh_link_load/store, the debug fills: nothing else touches it) run
 *     with error reporting disabled for the calling thread;
 *   - in an AddressSanitizer build (detected, or -DWINHEAP_ASAN=ON) the same
 *     places are poisoned by hand; the few functions that read metadata
 *     inside poisoned memory (headers, free-list links, fills) are compiled
 *     without ASan instrumentation (WH_NO_ASAN).
 * In both, every block gets WH_TOOL_RZ bytes of slack after it, so that an
 * overflow of the first byte lands in a NOACCESS / poisoned byte.  In an
 * ordinary build every hook is empty and WH_TOOL_RZ is 0.
 */
#ifndef WINHEAP_TOOLHOOKS_H
#define WINHEAP_TOOLHOOKS_H

#include <stddef.h>
#include <stdint.h>

#ifndef __has_feature
#define __has_feature(x) 0
#endif
#if defined(__SANITIZE_ADDRESS__) || __has_feature(address_sanitizer)
#define WH_TOOL_ASAN 1
#include <sanitizer/asan_interface.h>
#else
#define WH_TOOL_ASAN 0
#endif
#if defined(WINHEAP_VALGRIND) && WINHEAP_VALGRIND
#define WH_TOOL_VALGRIND 1
#include <valgrind/memcheck.h>
#else
#define WH_TOOL_VALGRIND 0
#endif

#if WH_TOOL_ASAN
#define WH_NO_ASAN __attribute__((no_sanitize("address")))
#else
#define WH_NO_ASAN
#endif

/* Slack after every block so that the first byte past it is caught. */
#define WH_TOOL_RZ ((size_t)((WH_TOOL_ASAN || WH_TOOL_VALGRIND) ? 16 : 0))

/* The allocator's own accesses inside memory the program must not touch
 * (headers, links, fills) run between these: memcheck errors off. */
static inline void wh_tool_enter(void) {
#if WH_TOOL_VALGRIND
    VALGRIND_DISABLE_ERROR_REPORTING;
#endif
}
static inline void wh_tool_leave(void) {
#if WH_TOOL_VALGRIND
    VALGRIND_ENABLE_ERROR_REPORTING;
#endif
}

/* A pointer-sized free-list link stored inside a free block. */
WH_NO_ASAN static inline uintptr_t wh_link_load(const void *p) {
    wh_tool_enter();
    uintptr_t v = *(const volatile uintptr_t *)p;
    wh_tool_leave();
    return v;
}
WH_NO_ASAN static inline void wh_link_store(void *p, uintptr_t v) {
    wh_tool_enter();
    *(volatile uintptr_t *)p = v;
    wh_tool_leave();
}

/* Memory the caller must not touch (fresh block areas, headers, slack). */
static inline void wh_tool_noaccess(void *p, size_t n) {
    (void)p, (void)n;
#if WH_TOOL_ASAN
    ASAN_POISON_MEMORY_REGION(p, n);
#endif
#if WH_TOOL_VALGRIND
    VALGRIND_MAKE_MEM_NOACCESS(p, n);
#endif
}
/* The allocator takes [p, p+n) back for its own use, or gives it back to
 * the system: clear what was said about it. */
static inline void wh_tool_release(void *p, size_t n) {
    (void)p, (void)n;
#if WH_TOOL_ASAN
    ASAN_UNPOISON_MEMORY_REGION(p, n);
#endif
#if WH_TOOL_VALGRIND
    VALGRIND_MAKE_MEM_UNDEFINED(p, n);
#endif
}
/* Block p of `size` bytes (capacity `cap`) now belongs to the caller. */
static inline void wh_tool_alloc(void *pool, void *p, size_t size, size_t cap) {
    (void)pool, (void)p, (void)size, (void)cap;
#if WH_TOOL_VALGRIND
    VALGRIND_MALLOCLIKE_BLOCK(p, size, 0, 0);
#endif
#if WH_TOOL_ASAN
    ASAN_UNPOISON_MEMORY_REGION(p, size);
    if (cap > size) ASAN_POISON_MEMORY_REGION((char *)p + size, cap - size);
#endif
}
/* Block p (capacity `cap`) is free again. */
static inline void wh_tool_free(void *pool, void *p, size_t cap) {
    (void)pool, (void)p, (void)cap;
#if WH_TOOL_VALGRIND
    VALGRIND_FREELIKE_BLOCK(p, 0);
#endif
#if WH_TOOL_ASAN
    ASAN_POISON_MEMORY_REGION(p, cap);
#endif
}
/* Block `from` of `old` bytes now is block `to` of `size` bytes (capacity
 * `cap`): an in-place resize (from == to) or a move of the same pages. */
static inline void wh_tool_change(void *pool, void *from, void *to, size_t old, size_t size, size_t cap) {
    (void)pool, (void)from, (void)to, (void)old, (void)size, (void)cap;
#if WH_TOOL_VALGRIND
    if (from == to) {
        VALGRIND_RESIZEINPLACE_BLOCK(to, old, size, 0);
    } else { /* the pages moved (mremap): the contents are the program's */
        VALGRIND_FREELIKE_BLOCK(from, 0);
        VALGRIND_MALLOCLIKE_BLOCK(to, size, 0, 1);
    }
#endif
#if WH_TOOL_ASAN
    ASAN_UNPOISON_MEMORY_REGION(to, size);
    size_t end = cap > old ? cap : old;
    if (end > size) ASAN_POISON_MEMORY_REGION((char *)to + size, end - size);
#endif
}
/* A free of something that is not a live block (double or invalid free):
 * let memcheck report it at the call, as it would for free(). */
static inline void wh_tool_bad_free(void *pool, const void *p) {
    (void)pool, (void)p;
#if WH_TOOL_VALGRIND
    VALGRIND_FREELIKE_BLOCK(p, 0);
#endif
}

#endif /* WINHEAP_TOOLHOOKS_H */
