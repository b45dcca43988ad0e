/*
 * prim_posix.c - the POSIX implementation of the OS contract in prim.h.
 *
 * The only file that calls mmap, mprotect, madvise, mremap, munmap,
 * getrandom and futex, and that reads the environment (it scans environ itself, so
 * that reading an option never allocates).  Reservations are PROT_NONE anonymous mappings with
 * MAP_NORESERVE, aligned by over-reserving and trimming; commit makes pages
 * read/write with mprotect (the kernel then faults them in on first touch).
 *
 * The wrappers in front of the table count the calls that acquire memory and
 * can be armed to fail the Nth one with ENOMEM (wh_prim_fail_at), which is
 * how the fault-injection tests reach every out-of-memory path.  They also
 * keep the number of bytes reserved, so that tests can prove that
 * HeapDestroy gives everything back.
 */
#define _GNU_SOURCE
#include "prim.h"

#include <errno.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static _Atomic uint64_t prim_calls;      /* acquiring calls since the last arming */
static _Atomic uint64_t prim_fail_n;     /* fail the call with this number (0: never) */
static _Atomic int prim_fail_sticky;
static _Atomic size_t prim_reserved;     /* bytes currently mapped by winheap */

/* True if this acquiring call must fail (fault injection). */
static int prim_should_fail(void) {
    uint64_t n = atomic_fetch_add_explicit(&prim_calls, 1, memory_order_relaxed) + 1;
    uint64_t f = atomic_load_explicit(&prim_fail_n, memory_order_relaxed);
    if (f == 0) return 0;
    if (n == f || (n > f && atomic_load_explicit(&prim_fail_sticky, memory_order_relaxed))) {
        errno = ENOMEM;
        return 1;
    }
    return 0;
}

void wh_prim_fail_at(uint64_t n, int sticky) {
    atomic_store(&prim_fail_sticky, sticky);
    atomic_store(&prim_calls, 0);
    atomic_store(&prim_fail_n, n);
}

uint64_t wh_prim_calls(void) { return atomic_load(&prim_calls); }
size_t wh_prim_reserved_bytes(void) { return atomic_load(&prim_reserved); }

size_t wh_prim_page_size(void) {
    static size_t page;
    if (!page) page = (size_t)sysconf(_SC_PAGESIZE);
    return page;
}

/* ---- the POSIX primitives ---- */

static void *posix_reserve(size_t size, size_t align) {
    size_t page = wh_prim_page_size();
    if (align < page) align = page;
    if (size > SIZE_MAX - align - page) { errno = ENOMEM; return NULL; }
    size = (size + page - 1) & ~(page - 1); /* whole pages, so the trims below stay page aligned */
    size_t over = size + align - page;
    char *p = mmap(NULL, over, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return NULL;
    uintptr_t a = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
    size_t head = a - (uintptr_t)p;
    size_t tail = over - head - size;
    if (head) munmap(p, head);
    if (tail) munmap((char *)a + size, tail);
    return (void *)a;
}

static int posix_commit(void *p, size_t size, int exec) {
    int prot = PROT_READ | PROT_WRITE | (exec ? PROT_EXEC : 0);
    return mprotect(p, size, prot);
}

static int posix_decommit(void *p, size_t size) {
    /* Replace the pages with a fresh inaccessible mapping: frees them at once
     * and leaves the range reserved. */
    void *r = mmap(p, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    return r == MAP_FAILED ? -1 : 0;
}

static int posix_purge(void *p, size_t size) { return madvise(p, size, MADV_DONTNEED); }

static int posix_release(void *p, size_t size) { return munmap(p, size); }

static void *posix_remap(void *p, size_t old_size, size_t new_size, void *dest) {
    void *r;
    if (dest)
        r = mremap(p, old_size, new_size, MREMAP_MAYMOVE | MREMAP_FIXED, dest);
    else
        r = mremap(p, old_size, new_size, 0);
    return r == MAP_FAILED ? NULL : r;
}

static int posix_hugepage(void *p, size_t size) {
#ifdef MADV_HUGEPAGE
    return madvise(p, size, MADV_HUGEPAGE);
#else
    (void)p, (void)size;
    return -1;
#endif
}

const wh_prim_ops wh_prim_posix = {
    .reserve = posix_reserve,
    .commit = posix_commit,
    .decommit = posix_decommit,
    .purge = posix_purge,
    .release = posix_release,
    .remap = posix_remap,
    .hugepage = posix_hugepage,
};

/* ---- the counting wrappers that the rest of winheap calls ---- */

static void *wrap_reserve(size_t size, size_t align) {
    if (prim_should_fail()) return NULL;
    void *p = wh_prim_posix.reserve(size, align);
    if (p) atomic_fetch_add(&prim_reserved, (size + wh_prim_page_size() - 1) & ~(wh_prim_page_size() - 1));
    return p;
}
static int wrap_commit(void *p, size_t size, int exec) {
    if (prim_should_fail()) return -1;
    return wh_prim_posix.commit(p, size, exec);
}
static int wrap_release(void *p, size_t size) {
    int r = wh_prim_posix.release(p, size);
    if (r == 0) atomic_fetch_sub(&prim_reserved, size);
    return r;
}
static void *wrap_remap(void *p, size_t old_size, size_t new_size, void *dest) {
    if (prim_should_fail()) return NULL;
    /* A move replaces the destination reservation (accounted by its reserve
     * call) with the old mapping, whose old_size bytes are gone from p. */
    void *r = wh_prim_posix.remap(p, old_size, new_size, dest);
    if (r) {
        if (dest)
            atomic_fetch_sub(&prim_reserved, old_size);
        else if (new_size >= old_size)
            atomic_fetch_add(&prim_reserved, new_size - old_size);
        else
            atomic_fetch_sub(&prim_reserved, old_size - new_size);
    }
    return r;
}

wh_prim_ops wh_prim = {
    .reserve = wrap_reserve,
    .commit = wrap_commit,
    .decommit = posix_decommit,
    .purge = posix_purge,
    .release = wrap_release,
    .remap = wrap_remap,
    .hugepage = posix_hugepage,
};

/* ---- environment, randomness, stderr ---- */

const char *wh_prim_getenv(const char *name) {
    size_t n = 0;
    while (name[n]) n++;
    for (char **e = environ; e && *e; e++) {
        const char *s = *e;
        size_t i = 0;
        while (i < n && s[i] == name[i]) i++;
        if (i == n && s[i] == '=') return s + n + 1;
    }
    return NULL;
}

void wh_prim_random(void *buf, size_t n) {
    unsigned char *b = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(b + got, n - got, GRND_NONBLOCK);
        if (r <= 0) break;
        got += (size_t)r;
    }
    if (got < n) {
        /* Fallback: mix time, addresses and a counter (not cryptographic). */
        static _Atomic uint64_t counter;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)buf ^
                     (atomic_fetch_add(&counter, 1) * 0x9E3779B97F4A7C15ull);
        for (; got < n; got++) {
            x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 29;
            b[got] = (unsigned char)x;
        }
    }
}

void wh_prim_write_stderr(const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(2, buf, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        buf += w;
        n -= (size_t)w;
    }
}

/* The lock's sleeps and wakes (lock.c).  Every outcome of FUTEX_WAIT is
 * fine for the caller, who checks the lock again: woken, EAGAIN (the word
 * changed before the sleep), EINTR (a signal).  errno is kept, because a
 * heap call must not change it (the malloc shim's free keeps errno). */
void wh_prim_futex_wait(_Atomic uint32_t *word, uint32_t val) {
    int saved = errno;
    (void)syscall(SYS_futex, (void *)word, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
    errno = saved;
}

void wh_prim_futex_wake(_Atomic uint32_t *word, int n) {
    int saved = errno;
    (void)syscall(SYS_futex, (void *)word, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
    errno = saved;
}
