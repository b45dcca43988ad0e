/*
 * malloc.c - the malloc shim, libwinheap-malloc.so: C's allocator on the
 * process heap.
 *
 * This file plus the library's objects make a shared library that defines
 * malloc, free, calloc, realloc, reallocarray, posix_memalign, aligned_alloc,
 * memalign, valloc, pvalloc and malloc_usable_size.  Preloaded
 * (LD_PRELOAD=libwinheap-malloc.so) or linked before libc, it takes the place
 * of glibc's allocator for the whole process, libc's own calls included, and
 * every block comes from the same code as HeapAlloc on GetProcessHeap(): the
 * low-fragmentation front end, the back end, large mappings.  That puts the
 * heap under the load of real programs and gives them its hardening.  Only
 * the public functions are called: their fast paths are the LFH's own, and
 * the shim's share of a malloc/free pair is a few percent.
 *
 * Each function keeps C's contract as glibc implements it: malloc(0) and
 * calloc(0, n) return unique pointers, realloc(NULL, n) is malloc(n) and
 * realloc(p, 0) frees p and returns NULL, a failed allocation returns NULL
 * with errno ENOMEM (calloc and reallocarray check n * size for overflow),
 * posix_memalign returns EINVAL or ENOMEM and leaves *out alone, and free
 * keeps errno.  free has no way to report an error, so a free or realloc
 * that the heap refuses always terminates: the first call turns termination
 * on corruption on for good (as HeapSetInformation(NULL,
 * HeapEnableTerminationOnCorruption) does, whatever
 * WINHEAP_TERMINATE_ON_CORRUPTION says), so a double or interior free ends
 * with the library's STATUS_HEAP_CORRUPTION line, and a pointer that is in
 * no block of the process heap at all, which HeapFree merely refuses, ends
 * with the same line here.
 *
 * Start-up and fork: the first call, or the shim's constructor if it comes
 * first, creates the process heap.  The library never calls malloc (it maps
 * memory with mmap and uses pthread_once, mutexes, one pthread key,
 * initial-exec TLS and getrandom), so that first call cannot recurse.
 * Creating the heap installs the library's pthread_atfork handlers, which
 * lock every heap around fork; installed before those of anything that
 * allocates, their prepare handler runs last and their child handler first.
 * The shim keeps no state but the heap handle.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdlib.h>
#include <unistd.h>

#define SHIM_API __attribute__((visibility("default")))

static _Atomic(HANDLE) process_heap;

static WH_NOINLINE HANDLE heap_init(void) {
    HANDLE h = GetProcessHeap();
    if (h) {
        HeapSetInformation(NULL, HeapEnableTerminationOnCorruption, NULL, 0);
        atomic_store_explicit(&process_heap, h, memory_order_release);
    }
    return h; /* NULL: every call fails as on a bad handle, and is retried next time */
}

static inline HANDLE heap(void) {
    HANDLE h = atomic_load_explicit(&process_heap, memory_order_acquire);
    return WH_LIKELY(h != NULL) ? h : heap_init();
}

static WH_NOINLINE void *no_memory(void) {
    errno = ENOMEM;
    return NULL;
}

/* p is in no block of the process heap at all (HeapFree and HeapReAlloc
 * refuse such a pointer; corruption has terminated inside them already). */
static WH_NOINLINE __attribute__((noreturn)) void bad_pointer(const char *func, const void *p) {
    wh_report_corruption(func, p, WH_EFOREIGN);
    abort();
}

static inline void *alloc(size_t n, DWORD flags) {
    void *p = HeapAlloc(heap(), flags, n);
    return WH_LIKELY(p != NULL) ? p : no_memory();
}

static inline void release(void *p) {
    if (WH_UNLIKELY(!HeapFree(heap(), 0, p))) bad_pointer("HeapFree", p); /* HeapFree(NULL) is TRUE */
}

/* n bytes aligned to a (a power of two). */
static void *alloc_aligned(size_t a, size_t n) {
    void *p = winheap_aligned_alloc(heap(), 0, a, n);
    return p ? p : no_memory();
}

/*
 * At load time, before the program can create pthread keys of its own: make
 * the process heap and this thread's LFH cache, so that the library's
 * thread-exit key gets one of the first 32 key numbers, whose
 * pthread_setspecific never allocates (for a higher number glibc callocs a
 * second-level array, which would come back here while the key is being set).
 */
__attribute__((constructor)) static void shim_start(void) { release(alloc(1, 0)); }

SHIM_API void *malloc(size_t n) { return alloc(n, 0); }

SHIM_API void free(void *p) {
    if (!p) return;
    int e = errno;
    release(p);
    errno = e;
}

SHIM_API void *calloc(size_t n, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) return no_memory();
    return alloc(total, HEAP_ZERO_MEMORY);
}

SHIM_API void *realloc(void *p, size_t n) {
    if (!p) return alloc(n, 0);
    if (n == 0) { /* as glibc: free p, return NULL */
        free(p);
        return NULL;
    }
    void *q = HeapReAlloc(heap(), 0, p, n);
    if (WH_LIKELY(q != NULL)) return q;
    if (GetLastError() != ERROR_NOT_ENOUGH_MEMORY) bad_pointer("HeapReAlloc", p);
    return no_memory(); /* p is intact */
}

SHIM_API void *reallocarray(void *p, size_t n, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) return no_memory();
    return realloc(p, total);
}

/* glibc: an alignment that is not a power of two is rounded up to one. */
SHIM_API void *memalign(size_t a, size_t n) {
    if (a > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return NULL;
    }
    if (a & (a - 1)) a = (size_t)1 << (sizeof(size_t) * CHAR_BIT - (size_t)__builtin_clzl(a));
    return alloc_aligned(a ? a : 1, n);
}

/* C11 as glibc 2.38 checks it: the alignment must be a power of two. */
SHIM_API void *aligned_alloc(size_t a, size_t n) {
    if (a == 0 || (a & (a - 1))) {
        errno = EINVAL;
        return NULL;
    }
    return alloc_aligned(a, n);
}

SHIM_API int posix_memalign(void **out, size_t a, size_t n) {
    if (a < sizeof(void *) || (a & (a - 1))) return EINVAL;
    int e = errno;
    void *p = winheap_aligned_alloc(heap(), 0, a, n);
    errno = e;
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

SHIM_API void *valloc(size_t n) { return alloc_aligned(wh_prim_page_size(), n); }

/* valloc of n rounded up to whole pages (at least one). */
SHIM_API void *pvalloc(size_t n) {
    size_t page = wh_prim_page_size();
    if (n > SIZE_MAX - (page - 1)) return no_memory();
    n = n ? wh_align_up(n, page) : page;
    return alloc_aligned(page, n);
}

/* Exactly the size asked for (HeapSize); 0 for NULL or a foreign pointer. */
SHIM_API size_t malloc_usable_size(void *p) {
    if (!p) return 0;
    size_t n = HeapSize(heap(), 0, p);
    return n == (SIZE_T)-1 ? 0 : n;
}
