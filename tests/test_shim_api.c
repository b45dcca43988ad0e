/*
 * test_shim_api.c - the malloc shim (libwinheap-malloc.so, src/shim/malloc.c)
 * against C's contract as glibc implements it.
 *
 * This program is linked against the shim and not against libc's allocator
 * alone: the shim comes before libc in the symbol search order, so every
 * malloc of the process (libc's own, cmocka's) is the shim's, and the
 * winheap API it calls is the shim's copy of the library.  The first test
 * proves that (a block from malloc and one from strdup have their exact
 * HeapSize on the process heap).
 *
 * Checked: malloc(0)/calloc(0, n) unique pointers; 16-byte alignment and
 * malloc_usable_size >= request for every size class up to large blocks;
 * NULL + ENOMEM for impossible sizes, calloc and reallocarray overflow;
 * calloc zeroes reused memory; realloc(NULL, n), realloc(p, 0) (frees, NULL),
 * growing/shrinking across the LFH, back end and large blocks with the
 * contents kept, a failed realloc leaving the block intact; posix_memalign
 * (EINVAL, ENOMEM with *out untouched), aligned_alloc, memalign (non-powers
 * of two rounded up), valloc and pvalloc alignment; free keeps errno; blocks
 * freed by other threads; fork from a thread while another thread allocates,
 * the child then allocating and freeing (a hang is a failure); no recursion
 * when the program creates 40 pthread keys before its first allocation.
 * Death tests (forked children, SIGABRT and the exact stderr line): double
 * free (small and large), interior free, free of a pointer that is no block,
 * realloc((void *)1, 16), realloc of a freed block, and the same again in a
 * re-executed child with WINHEAP_TERMINATE_ON_CORRUPTION=0, which the shim
 * overrides: free has no error channel.
 */
#define _GNU_SOURCE
#include "test_util.h"

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

#define EXPECT(cond, fmt, ...) \
    do { if (!(cond)) fail_msg("%s:%d: (%s) " fmt, __FILE__, __LINE__, #cond, ##__VA_ARGS__); } while (0)

/* GCC may drop a malloc whose result is unused, or fold a failed malloc:
 * calls through this volatile table are kept as written. */
static struct {
    void *(*malloc)(size_t);
    void *(*calloc)(size_t, size_t);
    void *(*realloc)(void *, size_t);
    void *(*reallocarray)(void *, size_t, size_t);
    void *(*aligned_alloc)(size_t, size_t);
    void *(*memalign)(size_t, size_t);
    void *(*valloc)(size_t);
    void *(*pvalloc)(size_t);
    int (*posix_memalign)(void **, size_t, size_t);
    void (*free)(void *);
} *volatile C, c_funcs = { malloc, calloc, realloc, reallocarray, aligned_alloc, memalign, valloc, pvalloc,
                           posix_memalign, free };

static const size_t sizes[] = { 0,     1,      15,     16,      17,      100,      1000,     4096,
                                16383, 16384,  16385,  100000,  0xFEFFF, 0xFF000,  2 * MiB + 3 };

static void fill(void *p, size_t n, unsigned seed) {
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)(seed * 131u + i * 7u + (i >> 9) + 1u);
}
static int intact(const void *p, size_t n, unsigned seed) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != (unsigned char)(seed * 131u + i * 7u + (i >> 9) + 1u)) return 0;
    return 1;
}
static int aligned_to(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }
/* p is a live block of the process heap (without terminating if not). */
static int live(const void *p) { return HeapValidate(GetProcessHeap(), 0, p); }

/* ---- the shim is the process's allocator ---- */

static void test_interposed(void **state) {
    (void)state;
    void *p = C->malloc(37);
    EXPECT(p != NULL, "malloc");
    EXPECT(HeapSize(GetProcessHeap(), 0, p) == 37, "malloc's block is a process heap block of 37 bytes");
    char *s = strdup("a string copied by libc"); /* libc's own call to malloc */
    EXPECT(s != NULL, "strdup");
    EXPECT(HeapSize(GetProcessHeap(), 0, s) == strlen(s) + 1, "strdup's block comes from the process heap");
    free(s);
    C->free(p);
    EXPECT(!live(p), "freed");
}

/* ---- malloc, free, calloc ---- */

static void test_malloc_sizes(void **state) {
    (void)state;
    void *z1 = C->malloc(0), *z2 = C->malloc(0);
    EXPECT(z1 && z2 && z1 != z2, "malloc(0) returns unique pointers");
    EXPECT(live(z1) && live(z2), "malloc(0) blocks are blocks");
    C->free(z1);
    C->free(z2);
    void *p[sizeof sizes / sizeof sizes[0]];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        p[i] = C->malloc(sizes[i]);
        EXPECT(p[i] != NULL, "malloc(%zu)", sizes[i]);
        EXPECT(aligned_to(p[i], 16), "malloc(%zu) = %p is 16-byte aligned", sizes[i], p[i]);
        EXPECT(malloc_usable_size(p[i]) >= sizes[i], "usable size of %zu bytes: %zu", sizes[i],
               malloc_usable_size(p[i]));
        fill(p[i], sizes[i], (unsigned)i);
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        EXPECT(intact(p[i], sizes[i], (unsigned)i), "block of %zu bytes kept its contents", sizes[i]);
        C->free(p[i]);
    }
    EXPECT(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL)");
    C->free(NULL);
}

static void test_enomem(void **state) {
    (void)state;
    static const size_t huge[] = { SIZE_MAX, SIZE_MAX - 4096, PTRDIFF_MAX, (size_t)1 << 50 };
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        errno = 0;
        EXPECT(C->malloc(huge[i]) == NULL && errno == ENOMEM, "malloc(%zu): errno %d", huge[i], errno);
        errno = 0;
        EXPECT(C->calloc(1, huge[i]) == NULL && errno == ENOMEM, "calloc(1, %zu): errno %d", huge[i], errno);
    }
    errno = 0;
    EXPECT(C->calloc(SIZE_MAX, 2) == NULL && errno == ENOMEM, "calloc(SIZE_MAX, 2) overflows: errno %d", errno);
    errno = 0;
    EXPECT(C->calloc(2, SIZE_MAX) == NULL && errno == ENOMEM, "calloc(2, SIZE_MAX): errno %d", errno);
    errno = 0;
    EXPECT(C->calloc((size_t)1 << 33, (size_t)1 << 31) == NULL && errno == ENOMEM, "2^64 overflows: errno %d", errno);
    void *p = C->malloc(10); /* the heap is usable afterwards */
    EXPECT(p != NULL && live(p), "malloc after failures");
    C->free(p);
}

static void test_free_keeps_errno(void **state) {
    (void)state;
    void *blocks[] = { C->malloc(24), C->malloc(5000), C->malloc(300 * KiB), C->malloc(3 * MiB),
                       C->memalign(4096, 100), C->memalign(64 * KiB, 70 * KiB), C->calloc(3, 3) };
    errno = EDOM;
    C->free(NULL);
    EXPECT(errno == EDOM, "free(NULL) changed errno to %d", errno);
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) {
        EXPECT(blocks[i] != NULL, "block %zu", i);
        errno = EDOM;
        C->free(blocks[i]);
        EXPECT(errno == EDOM, "free of block %zu changed errno to %d", i, errno);
    }
    void *p = C->malloc(2 * MiB);
    errno = ERANGE;
    EXPECT(C->realloc(p, 0) == NULL, "realloc(p, 0)");
    EXPECT(errno == ERANGE, "realloc(p, 0) changed errno to %d", errno);
}

static void test_calloc_zeroes(void **state) {
    (void)state;
    static const size_t cs[] = { 8, 64, 200, 4096, 16000, 70000, 0xFF000 + 1 };
    enum { N = 64 };
    void *p[N];
    for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
        for (int i = 0; i < N; i++) { /* dirty blocks of the size, then free them for reuse */
            p[i] = C->malloc(cs[k]);
            EXPECT(p[i] != NULL, "malloc");
            memset(p[i], 0xA5, cs[k]);
        }
        for (int i = 0; i < N; i++) C->free(p[i]);
        for (int i = 0; i < N; i++) {
            unsigned char *q = C->calloc(cs[k] / 8, 8);
            EXPECT(q != NULL, "calloc(%zu, 8)", cs[k] / 8);
            for (size_t j = 0; j < cs[k] / 8 * 8; j++) EXPECT(q[j] == 0, "calloc byte %zu of %zu not zero", j, cs[k]);
            p[i] = q;
        }
        for (int i = 0; i < N; i++) C->free(p[i]);
    }
    void *a = C->calloc(0, 5), *b = C->calloc(5, 0);
    EXPECT(a && b && a != b, "calloc of 0 bytes returns unique pointers");
    C->free(a);
    C->free(b);
}

/* ---- realloc, reallocarray ---- */

static void test_realloc_steps(void **state) {
    (void)state;
    char *p = C->realloc(NULL, 100);
    EXPECT(p != NULL && HeapSize(GetProcessHeap(), 0, p) == 100, "realloc(NULL, 100) is malloc(100)");
    fill(p, 100, 1);
    /* through the LFH, the back end, a large block and back, contents kept */
    static const size_t steps[] = { 10, 100, 1000, 16 * KiB, 16 * KiB + 1, 200 * KiB, 0xFF000, 3 * MiB, 5 * MiB,
                                    300 * KiB, 5000, 24, 1 };
    size_t have = 100, keep = 100;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        char *q = C->realloc(p, steps[i]);
        EXPECT(q != NULL, "realloc to %zu", steps[i]);
        EXPECT(aligned_to(q, 16), "realloc result aligned");
        if (steps[i] < keep) keep = steps[i];
        EXPECT(intact(q, keep, 1), "realloc %zu -> %zu kept the first %zu bytes", have, steps[i], keep);
        EXPECT(malloc_usable_size(q) >= steps[i], "usable after realloc");
        if (steps[i] > keep) { /* refill so that later steps check more */
            fill(q, steps[i], 1);
            keep = steps[i];
        }
        have = steps[i];
        p = q;
    }
    void *old = p;
    errno = 0;
    EXPECT(C->realloc(p, 0) == NULL, "realloc(p, 0) returns NULL");
    EXPECT(errno == 0, "realloc(p, 0) sets no error");
    EXPECT(!live(old), "realloc(p, 0) freed p");
}

static void test_realloc_enomem_keeps_block(void **state) {
    (void)state;
    static const size_t from[] = { 100, 5000, 3 * MiB };
    for (size_t i = 0; i < sizeof from / sizeof from[0]; i++) {
        char *p = C->malloc(from[i]);
        fill(p, from[i], 7);
        errno = 0;
        EXPECT(C->realloc(p, SIZE_MAX / 2) == NULL && errno == ENOMEM, "realloc to SIZE_MAX/2: errno %d", errno);
        errno = 0;
        EXPECT(C->realloc(p, SIZE_MAX) == NULL && errno == ENOMEM, "realloc to SIZE_MAX: errno %d", errno);
        EXPECT(live(p) && HeapSize(GetProcessHeap(), 0, p) == from[i] && intact(p, from[i], 7),
               "block of %zu intact after failed realloc", from[i]);
        C->free(p);
    }
}

static void test_reallocarray(void **state) {
    (void)state;
    int *a = C->reallocarray(NULL, 3, sizeof(int));
    EXPECT(a != NULL && HeapSize(GetProcessHeap(), 0, a) == 3 * sizeof(int), "reallocarray(NULL, 3, 4)");
    a[0] = 1, a[1] = 2, a[2] = 3;
    a = C->reallocarray(a, 1000, sizeof(int));
    EXPECT(a != NULL && a[0] == 1 && a[1] == 2 && a[2] == 3, "reallocarray grows with the contents");
    errno = 0;
    EXPECT(C->reallocarray(a, SIZE_MAX / 2, 3) == NULL && errno == ENOMEM, "overflow: errno %d", errno);
    errno = 0;
    EXPECT(C->reallocarray(a, (size_t)1 << 32, (size_t)1 << 32) == NULL && errno == ENOMEM, "2^64: errno %d", errno);
    EXPECT(live(a) && a[2] == 3 && HeapSize(GetProcessHeap(), 0, a) == 1000 * sizeof(int), "block intact");
    EXPECT(C->reallocarray(a, 0, 4) == NULL && !live(a), "reallocarray(p, 0, 4) frees as realloc(p, 0)");
}

/* ---- aligned allocation ---- */

static void test_posix_memalign(void **state) {
    (void)state;
    static const size_t ps[] = { 0, 1, 24, 1000, 5000, 70000, MiB + 5 };
    for (size_t a = sizeof(void *); a <= 4 * MiB; a <<= 1) {
        for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
            void *p = (void *)0x1234;
            errno = EDOM;
            int rc = C->posix_memalign(&p, a, ps[i]);
            EXPECT(rc == 0 && p != NULL && p != (void *)0x1234, "posix_memalign(%zu, %zu) = %d", a, ps[i], rc);
            EXPECT(errno == EDOM, "posix_memalign changed errno");
            EXPECT(aligned_to(p, a), "posix_memalign(%zu, %zu) = %p", a, ps[i], p);
            EXPECT(malloc_usable_size(p) >= ps[i], "usable size");
            fill(p, ps[i], 3);
            EXPECT(intact(p, ps[i], 3), "writable");
            C->free(p);
        }
    }
    static const size_t bad[] = { 0, 1, 2, 3, 4, 12, 24, 48, 4095, SIZE_MAX, SIZE_MAX / 2 };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *p = (void *)0x1234;
        EXPECT(C->posix_memalign(&p, bad[i], 16) == EINVAL, "alignment %zu is invalid", bad[i]);
        EXPECT(p == (void *)0x1234, "*out untouched on EINVAL");
    }
    static const size_t big[][2] = { { 64, SIZE_MAX - 100 }, { 4096, SIZE_MAX / 2 }, { (size_t)1 << 62, 16 } };
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        void *p = (void *)0x1234;
        errno = EDOM;
        EXPECT(C->posix_memalign(&p, big[i][0], big[i][1]) == ENOMEM, "posix_memalign(%zu, %zu)", big[i][0], big[i][1]);
        EXPECT(p == (void *)0x1234, "*out untouched on ENOMEM");
        EXPECT(errno == EDOM, "errno untouched");
    }
}

static void test_aligned_alloc_memalign(void **state) {
    (void)state;
    for (size_t a = 1; a <= 2 * MiB; a <<= 1) {
        void *p = C->aligned_alloc(a, 3 * a);
        void *q = C->memalign(a, 100);
        EXPECT(p && aligned_to(p, a) && malloc_usable_size(p) >= 3 * a, "aligned_alloc(%zu) = %p", a, p);
        EXPECT(q && aligned_to(q, a) && malloc_usable_size(q) >= 100, "memalign(%zu) = %p", a, q);
        C->free(p);
        C->free(q);
    }
    static const size_t odd[][2] = { { 3, 4 }, { 24, 32 }, { 48, 64 }, { 100, 128 }, { 5000, 8192 }, { 70000, 131072 } };
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        void *q = C->memalign(odd[i][0], 10);
        EXPECT(q && aligned_to(q, odd[i][1]), "memalign(%zu) rounds the alignment up to %zu: %p", odd[i][0],
               odd[i][1], q);
        C->free(q);
        errno = 0;
        EXPECT(C->aligned_alloc(odd[i][0], 10) == NULL && errno == EINVAL, "aligned_alloc(%zu): errno %d", odd[i][0],
               errno);
    }
    void *q = C->memalign(0, 10);
    EXPECT(q && aligned_to(q, 16), "memalign(0, 10)");
    C->free(q);
    errno = 0;
    EXPECT(C->aligned_alloc(0, 10) == NULL && errno == EINVAL, "aligned_alloc(0): errno %d", errno);
    errno = 0;
    EXPECT(C->memalign(SIZE_MAX / 2 + 2, 10) == NULL && errno == EINVAL, "memalign(> SIZE_MAX/2+1): errno %d", errno);
    errno = 0;
    EXPECT(C->memalign(64, SIZE_MAX - 10) == NULL && errno == ENOMEM, "memalign huge: errno %d", errno);
    errno = 0;
    EXPECT(C->aligned_alloc(4096, SIZE_MAX / 2) == NULL && errno == ENOMEM, "aligned_alloc huge: errno %d", errno);
    /* aligned blocks are ordinary blocks: realloc keeps the contents, free takes them */
    char *p = C->memalign(4096, 100);
    fill(p, 100, 9);
    p = C->realloc(p, 200 * KiB);
    EXPECT(p && intact(p, 100, 9), "realloc of an aligned block");
    C->free(p);
}

static void test_valloc_pvalloc(void **state) {
    (void)state;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    static const size_t vs[] = { 0, 1, 100, 4095, 4096, 4097, 70000, 3 * MiB };
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {
        void *v = C->valloc(vs[i]);
        void *pv = C->pvalloc(vs[i]);
        size_t whole = vs[i] ? (vs[i] + page - 1) / page * page : page;
        EXPECT(v && aligned_to(v, page) && malloc_usable_size(v) >= vs[i], "valloc(%zu) = %p", vs[i], v);
        EXPECT(pv && aligned_to(pv, page) && malloc_usable_size(pv) >= whole, "pvalloc(%zu) = %p, usable %zu",
               vs[i], pv, pv ? malloc_usable_size(pv) : 0);
        memset(pv, 0x5A, whole);
        C->free(v);
        C->free(pv);
    }
    errno = 0;
    EXPECT(C->valloc(SIZE_MAX - page) == NULL && errno == ENOMEM, "valloc huge: errno %d", errno);
    errno = 0;
    EXPECT(C->pvalloc(SIZE_MAX) == NULL && errno == ENOMEM, "pvalloc(SIZE_MAX) overflows: errno %d", errno);
    errno = 0;
    EXPECT(C->pvalloc(SIZE_MAX - 2 * page) == NULL && errno == ENOMEM, "pvalloc huge: errno %d", errno);
}

/* ---- threads and fork ---- */

enum { SLOTS = 256 };
static _Atomic(void *) mailbox[SLOTS];
static atomic_int stop_flag;

static uint64_t next_size(uint64_t *rng) {
    uint64_t r = wh_rand(rng);
    switch (r % 16) {
    case 0: return 20000 + r % 300000;
    case 1: return 0x100000 + r % 0x80000; /* large */
    default: return r % 2000;
    }
}

/* Allocate, and free whatever another thread left in the mailbox. */
static void *exchanger(void *arg) {
    uint64_t rng = (uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    while (!atomic_load(&stop_flag)) {
        size_t n = next_size(&rng);
        unsigned char *p = C->malloc(n);
        if (!p) abort();
        if (n) p[0] = p[n - 1] = (unsigned char)n;
        void *old = atomic_exchange(&mailbox[wh_rand(&rng) % SLOTS], p);
        if (old) C->free(old);
    }
    return NULL;
}

static void drain_mailbox(void) {
    for (int i = 0; i < SLOTS; i++) C->free(atomic_exchange(&mailbox[i], NULL));
}

static void test_threads_cross_free(void **state) {
    (void)state;
    pthread_t t[4];
    atomic_store(&stop_flag, 0);
    for (uintptr_t i = 0; i < 4; i++) EXPECT(pthread_create(&t[i], NULL, exchanger, (void *)(i + 1)) == 0, "thread");
    usleep(300 * 1000);
    atomic_store(&stop_flag, 1);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    drain_mailbox();
    EXPECT(HeapValidate(GetProcessHeap(), 0, NULL), "process heap valid after cross-thread frees");
}

static void *child_thread(void *arg) {
    for (int i = 0; i < 1000; i++) C->free(C->malloc((size_t)i * 7));
    return arg;
}

/* In the fork child: the heap works, from this thread and from a new one. */
static void child_allocates(void *arg) {
    (void)arg;
    uint64_t rng = 42;
    void *keep[64] = { 0 };
    for (int i = 0; i < 2000; i++) {
        int k = (int)(wh_rand(&rng) % 64);
        C->free(keep[k]);
        keep[k] = C->malloc(next_size(&rng));
        if (!keep[k]) _exit(2);
    }
    for (int k = 0; k < 64; k++) C->free(keep[k]);
    char *s = strdup("child");
    void *a = C->memalign(4096, 5000);
    void *r = C->realloc(C->malloc(10), 2 * MiB);
    if (!s || !a || !r) _exit(3);
    C->free(s), C->free(a), C->free(r);
    pthread_t t;
    if (pthread_create(&t, NULL, child_thread, NULL) != 0 || pthread_join(t, NULL) != 0) _exit(4);
    if (!HeapValidate(GetProcessHeap(), 0, NULL)) _exit(5);
}

static void *forker(void *arg) {
    int *failures = arg;
    for (int i = 0; i < 40; i++) {
        wh_child_result r;
        wh_run_child(child_allocates, NULL, 20, &r);
        if (r.timed_out || !r.exited || r.exit_code != 0) {
            fprintf(stderr, "fork child %d: %s %d; stderr: %s\n", i, r.timed_out ? "timed out" : r.exited ? "exit" : "signal",
                    r.exited ? r.exit_code : r.signal, r.err);
            (*failures)++;
        }
    }
    return NULL;
}

static void test_fork_while_allocating(void **state) {
    (void)state;
    pthread_t alloc[2], f;
    int failures = 0;
    atomic_store(&stop_flag, 0);
    for (uintptr_t i = 0; i < 2; i++) EXPECT(pthread_create(&alloc[i], NULL, exchanger, (void *)(i + 10)) == 0, "thread");
    EXPECT(pthread_create(&f, NULL, forker, &failures) == 0, "forking thread");
    pthread_join(f, NULL);
    atomic_store(&stop_flag, 1);
    for (int i = 0; i < 2; i++) pthread_join(alloc[i], NULL);
    drain_mailbox();
    EXPECT(failures == 0, "%d of 40 fork children failed or hung", failures);
    EXPECT(HeapValidate(GetProcessHeap(), 0, NULL), "parent heap valid");
}

/* ---- re-executed scenarios: a fresh process reads the environment anew ---- */

static const char *g_self = "/proc/self/exe";

static void note_addr(const void *p) {
    char b[64];
    int n = snprintf(b, sizeof b, "scenario-addr %p\n", p);
    if (write(2, b, (size_t)n) < 0) { /* nothing */ }
}

static void sc_double_free(void) {
    void *p = C->malloc(48);
    C->free(p);
    note_addr(p);
    C->free(p);
}
static void sc_foreign_free(void) {
    static char not_a_block[64];
    note_addr(not_a_block + 16);
    C->free(not_a_block + 16);
}
static void sc_realloc_freed(void) {
    void *p = C->malloc(3 * MiB);
    C->free(p);
    note_addr(p);
    C->realloc(p, 16);
}
/* 40 keys (one past 32 set) before the program's first allocation. */
static void *sc_thread(void *arg) {
    C->free(C->malloc(64));
    return arg;
}
static void sc_keys_first(void) {
    pthread_key_t k[40];
    for (int i = 0; i < 40; i++)
        if (pthread_key_create(&k[i], NULL) != 0) _exit(2);
    for (int i = 0; i < 40; i++) pthread_setspecific(k[i], (void *)1);
    void *p = C->malloc(10);
    pthread_t t;
    if (!p || pthread_create(&t, NULL, sc_thread, NULL) != 0 || pthread_join(t, NULL) != 0) _exit(3);
    C->free(p);
}

static const struct {
    const char *name;
    void (*fn)(void);
} scenarios[] = {
    { "double_free", sc_double_free },
    { "foreign_free", sc_foreign_free },
    { "realloc_freed", sc_realloc_freed },
    { "keys_first", sc_keys_first },
};

struct exec_args {
    const char *scenario;
    const char *toc; /* value of WINHEAP_TERMINATE_ON_CORRUPTION, or NULL */
};

static void exec_scenario(void *arg) {
    struct exec_args *a = arg;
    if (a->toc)
        setenv("WINHEAP_TERMINATE_ON_CORRUPTION", a->toc, 1);
    else
        unsetenv("WINHEAP_TERMINATE_ON_CORRUPTION");
    execl(g_self, g_self, "--scenario", a->scenario, (char *)NULL);
    _exit(126);
}

/* Run a scenario in a fresh process: SIGABRT and exactly the line
 * "winheap: STATUS_HEAP_CORRUPTION (0xC0000374) in <func> at <addr>: <why>". */
static void expect_exec_death(const char *scenario, const char *toc, const char *func, const char *why) {
    struct exec_args a = { scenario, toc };
    wh_child_result r;
    wh_run_child(exec_scenario, &a, 30, &r);
    void *addr = NULL;
    const char *at = strstr(r.err, "scenario-addr ");
    EXPECT(at && sscanf(at, "scenario-addr %p", &addr) == 1, "scenario %s did not start; stderr: %s", scenario, r.err);
    char want[256];
    snprintf(want, sizeof want, "scenario-addr %p\nwinheap: STATUS_HEAP_CORRUPTION (0xC0000374) in %s at 0x%016" PRIxPTR
             ": %s\n", addr, func, (uintptr_t)addr, why);
    EXPECT(!r.timed_out && r.signaled && r.signal == SIGABRT && strcmp(r.err, want) == 0,
           "scenario %s (TOC=%s): %s %d, stderr:\n%s\nexpected:\n%s", scenario, toc ? toc : "unset",
           r.timed_out ? "timeout" : r.signaled ? "signal" : "exit", r.signaled ? r.signal : r.exit_code, r.err, want);
}

static void test_death_exec(void **state) {
    (void)state;
    for (int i = 0; i < 2; i++) {
        const char *toc = i ? "0" : NULL; /* the shim terminates even with termination switched off */
        expect_exec_death("double_free", toc, "HeapFree", "double free");
        expect_exec_death("foreign_free", toc, "HeapFree", "pointer not in this heap");
        expect_exec_death("realloc_freed", toc, "HeapReAlloc", "double free");
    }
}

static void test_no_recursion_keys_first(void **state) {
    (void)state;
    struct exec_args a = { "keys_first", NULL };
    wh_child_result r;
    wh_run_child(exec_scenario, &a, 30, &r);
    EXPECT(!r.timed_out && r.exited && r.exit_code == 0, "%s %d; stderr: %s",
           r.timed_out ? "timeout" : r.signaled ? "signal" : "exit", r.signaled ? r.signal : r.exit_code, r.err);
}

/* ---- death tests in forked children ---- */

struct death {
    void *p;      /* what the fatal call gets */
    int realloc;  /* realloc(p, 16) instead of free(p) */
    int twice;    /* free p first */
};

static void die(void *arg) {
    struct death *d = arg;
    if (d->twice) C->free(d->p);
    if (d->realloc)
        C->realloc(d->p, 16);
    else
        C->free(d->p);
}

static void expect_death(void *p, int twice, int realloc_, const char *func, const char *why) {
    struct death d = { p, realloc_, twice };
    char want[256];
    snprintf(want, sizeof want, "winheap: STATUS_HEAP_CORRUPTION (0xC0000374) in %s at 0x%016" PRIxPTR ": %s\n", func,
             (uintptr_t)p, why);
    wh_child_result r;
    wh_run_child(die, &d, 30, &r);
    EXPECT(!r.timed_out && r.signaled && r.signal == SIGABRT && strcmp(r.err, want) == 0,
           "%s %d, stderr:\n%s\nexpected:\n%s", r.timed_out ? "timeout" : r.signaled ? "signal" : "exit",
           r.signaled ? r.signal : r.exit_code, r.err, want);
}

static void test_death_fork(void **state) {
    (void)state;
    char *small = C->malloc(64), *mid = C->malloc(40 * KiB), *large = C->malloc(2 * MiB);
    int on_stack = 0;
    expect_death(small, 1, 0, "HeapFree", "double free");
    expect_death(mid, 1, 0, "HeapFree", "double free");
    expect_death(large, 1, 0, "HeapFree", "double free");
    expect_death(small + 16, 0, 0, "HeapFree", "invalid free");
    expect_death(mid + 32, 0, 0, "HeapFree", "invalid free");
    expect_death(&on_stack, 0, 0, "HeapFree", "pointer not in this heap");
    expect_death((void *)1, 0, 1, "HeapReAlloc", "pointer not in this heap");
    expect_death(small, 1, 1, "HeapReAlloc", "double free");
    expect_death(small + 16, 0, 1, "HeapReAlloc", "invalid free");
    /* the parent's blocks are untouched by what the children did */
    EXPECT(live(small) && live(mid) && live(large), "parent blocks live");
    C->free(small), C->free(mid), C->free(large);
}

int main(int argc, char **argv) {
    C = &c_funcs;
    if (argc >= 3 && strcmp(argv[1], "--scenario") == 0) {
        for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++) {
            if (strcmp(argv[2], scenarios[i].name) == 0) {
                scenarios[i].fn();
                return 0;
            }
        }
        fprintf(stderr, "scenario unknown: %s\n", argv[2]);
        return 120;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interposed),
        cmocka_unit_test(test_malloc_sizes),
        cmocka_unit_test(test_enomem),
        cmocka_unit_test(test_free_keeps_errno),
        cmocka_unit_test(test_calloc_zeroes),
        cmocka_unit_test(test_realloc_steps),
        cmocka_unit_test(test_realloc_enomem_keeps_block),
        cmocka_unit_test(test_reallocarray),
        cmocka_unit_test(test_posix_memalign),
        cmocka_unit_test(test_aligned_alloc_memalign),
        cmocka_unit_test(test_valloc_pvalloc),
        cmocka_unit_test(test_threads_cross_free),
        cmocka_unit_test(test_fork_while_allocating),
        cmocka_unit_test(test_no_recursion_keys_first),
        cmocka_unit_test(test_death_fork),
        cmocka_unit_test(test_death_exec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
