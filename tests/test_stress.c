/*
 * test_stress.c - two threads on one serialized heap (RELIABILITY #20, #21).
 *
 * Two threads share an array of slots (guarded by the test's own mutex; the
 * HeapAlloc/HeapReAlloc/HeapFree calls are made outside it).  Each thread
 * runs a bounded number of random operations: pick a slot; if it is empty,
 * allocate a block (sizes 0..4096 mostly, some 64 KiB, rare large blocks
 * >= 0xFF000) and fill it with 32-bit words (word index ^ cookie); if it is
 * full, check the block (HeapSize and every payload word) and free it or,
 * sometimes, HeapReAlloc it and check that the prefix survived.  Slots are
 * picked at random, so about half of the frees and reallocs are of blocks
 * the other thread allocated.  Every few thousand operations each thread
 * runs HeapValidate(h, 0, NULL) while the other keeps allocating.
 * At the end: HeapValidate TRUE; the live blocks do not overlap and keep
 * their contents; HeapSummary's cbAllocated equals the sum of HeapSize over
 * the live blocks (plus what the heap held before the run); a HeapWalk finds
 * exactly the live set (plus the blocks held before) as BUSY entries with the
 * right cbData; after freeing everything cbAllocated is back to its start.
 * Run on a private growable heap and on the process heap.  A third test has
 * one thread reallocate and another free blocks that a third allocated.
 */
#define _GNU_SOURCE
#include "test_util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NSLOTS 2048
#define OPS_PER_THREAD 100000
#define VALIDATE_EVERY 4096
#define SYNC_EVERY 1024 /* the threads meet every so many operations */
#define NTHREADS 2

typedef struct slot {
    char *p;
    size_t n;
    uint32_t cookie;
    int owner; /* thread that allocated or last reallocated the block */
    int busy;  /* a thread is working on it outside the slot lock */
} slot;

typedef struct shared {
    HANDLE h;
    pthread_mutex_t mu;
    pthread_barrier_t start;
    pthread_cond_t cv; /* sync_point, with mu */
    unsigned arrived, gen;
    slot s[NSLOTS];
    atomic_int failed;
    char msg[512];
} shared;

typedef struct tstate {
    shared *sh;
    int id;
    uint64_t rng;
    long allocs, frees, cross_frees, reallocs, cross_reallocs, larges, validates;
} tstate;

static shared g_sh;

static void report(shared *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(shared *sh, const char *fmt, ...) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&sh->failed, &expected, 1)) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sh->msg, sizeof sh->msg, fmt, ap);
    va_end(ap);
}

/* Payload: 32-bit word k holds k ^ cookie; the n % 4 tail bytes hold the
 * low bytes of the next word. */
static void fill(char *p, size_t n, uint32_t cookie) {
    size_t k = 0;
    for (; (k + 1) * 4 <= n; k++) {
        uint32_t v = (uint32_t)k ^ cookie;
        memcpy(p + k * 4, &v, 4);
    }
    uint32_t v = (uint32_t)k ^ cookie;
    memcpy(p + k * 4, &v, n - k * 4);
}

/* Offset of the first wrong byte among the first n bytes, or (size_t)-1. */
static size_t check(const char *p, size_t n, uint32_t cookie) {
    size_t k = 0;
    for (; (k + 1) * 4 <= n; k++) {
        uint32_t v = (uint32_t)k ^ cookie, got;
        memcpy(&got, p + k * 4, 4);
        if (got != v) return k * 4;
    }
    uint32_t v = (uint32_t)k ^ cookie;
    if (n > k * 4 && memcmp(p + k * 4, &v, n - k * 4) != 0) return k * 4;
    return (size_t)-1;
}

static size_t pick_size(uint64_t *rng) {
    uint64_t r = wh_rand(rng);
    unsigned sel = (unsigned)(r % 2000);
    if (sel == 0) return WINHEAP_LARGE_THRESHOLD + (size_t)((r >> 16) % 0x100000); /* rare large */
    if (sel < 40) return 65536 + (size_t)((r >> 16) % 64);                        /* some 64 KiB */
    return (size_t)((r >> 16) % 4097);                                              /* 0..4096 */
}

static int is_large(size_t n) { return n >= WINHEAP_LARGE_THRESHOLD; }

/* Both threads meet here every SYNC_EVERY operations, so that their
 * operations interleave (and about half of the frees are cross-thread) even
 * when the scheduler would otherwise run one thread long before the other.
 * Never blocks once a thread has reported a failure. */
static void sync_point(shared *sh) {
    pthread_mutex_lock(&sh->mu);
    unsigned gen = sh->gen;
    if (++sh->arrived == NTHREADS || atomic_load(&sh->failed)) {
        sh->arrived = 0;
        sh->gen++;
        pthread_cond_broadcast(&sh->cv);
    } else {
        while (gen == sh->gen && !atomic_load(&sh->failed)) pthread_cond_wait(&sh->cv, &sh->mu);
    }
    pthread_mutex_unlock(&sh->mu);
}

static void wake_all(shared *sh) {
    pthread_mutex_lock(&sh->mu);
    pthread_cond_broadcast(&sh->cv);
    pthread_mutex_unlock(&sh->mu);
}

static void *worker(void *arg) {
    tstate *t = arg;
    shared *sh = t->sh;
    HANDLE h = sh->h;
    pthread_barrier_wait(&sh->start);
    for (long op = 0; op < OPS_PER_THREAD && !atomic_load(&sh->failed); op++) {
        if (op % SYNC_EVERY == 0) sync_point(sh);
        if (op % VALIDATE_EVERY == VALIDATE_EVERY - 1) {
            /* while the other thread keeps allocating and freeing */
            t->validates++;
            if (HeapValidate(h, 0, NULL) != TRUE) {
                report(sh, "thread %d: HeapValidate FALSE after %ld operations", t->id, op);
                break;
            }
        }
        uint64_t r = wh_rand(&t->rng);
        unsigned idx = (unsigned)(r % NSLOTS);
        pthread_mutex_lock(&sh->mu);
        slot *sl = &sh->s[idx];
        if (sl->busy) {
            pthread_mutex_unlock(&sh->mu);
            continue;
        }
        sl->busy = 1;
        slot cur = *sl;
        pthread_mutex_unlock(&sh->mu);

        slot upd = cur;
        if (!cur.p) {
            size_t n = pick_size(&t->rng);
            char *p = HeapAlloc(h, 0, n);
            if (!p) {
                report(sh, "thread %d: HeapAlloc(%zu) failed, last error %u", t->id, n, (unsigned)GetLastError());
                break;
            }
            if ((uintptr_t)p & 15) report(sh, "thread %d: block %p not 16-byte aligned", t->id, (void *)p);
            upd.p = p;
            upd.n = n;
            upd.cookie = (uint32_t)(wh_rand(&t->rng) >> 32) ^ idx;
            upd.owner = t->id;
            fill(p, n, upd.cookie);
            t->allocs++;
            t->larges += is_large(n);
        } else {
            SIZE_T sz = HeapSize(h, 0, cur.p);
            if (sz != cur.n) {
                report(sh, "thread %d: HeapSize(%p) = %zu, expected %zu", t->id, (void *)cur.p, (size_t)sz, cur.n);
                break;
            }
            size_t off = check(cur.p, cur.n, cur.cookie);
            if (off != (size_t)-1) {
                report(sh, "thread %d: block %p (%zu bytes, allocated by thread %d) changed at offset %zu", t->id,
                       (void *)cur.p, cur.n, cur.owner, off);
                break;
            }
            int cross = cur.owner != t->id;
            if ((r >> 40) % 100 < 15) {
                size_t n = pick_size(&t->rng);
                char *p = HeapReAlloc(h, 0, cur.p, n);
                if (!p) {
                    report(sh, "thread %d: HeapReAlloc(%p, %zu -> %zu) failed, last error %u", t->id,
                           (void *)cur.p, cur.n, n, (unsigned)GetLastError());
                    break;
                }
                size_t keep = cur.n < n ? cur.n : n;
                off = check(p, keep, cur.cookie);
                if (off != (size_t)-1) {
                    report(sh, "thread %d: HeapReAlloc %zu -> %zu lost the contents at offset %zu", t->id, cur.n,
                           n, off);
                    break;
                }
                upd.p = p;
                upd.n = n;
                upd.cookie = (uint32_t)(wh_rand(&t->rng) >> 32) ^ idx;
                upd.owner = t->id;
                fill(p, n, upd.cookie);
                t->reallocs++;
                t->cross_reallocs += cross;
                t->larges += is_large(n);
            } else {
                if (HeapFree(h, 0, cur.p) != TRUE) {
                    report(sh, "thread %d: HeapFree(%p) failed, last error %u", t->id, (void *)cur.p,
                           (unsigned)GetLastError());
                    break;
                }
                upd.p = NULL;
                upd.n = 0;
                t->frees++;
                t->cross_frees += cross;
            }
        }
        pthread_mutex_lock(&sh->mu);
        upd.busy = 0;
        *sl = upd;
        pthread_mutex_unlock(&sh->mu);
    }
    wake_all(sh); /* a thread that stopped early must not leave the other waiting */
    return NULL;
}

typedef struct busy {
    void *p;
    size_t n;
} busy;

static int cmp_busy(const void *a, const void *b) {
    uintptr_t x = (uintptr_t)((const busy *)a)->p, y = (uintptr_t)((const busy *)b)->p;
    return x < y ? -1 : x > y;
}

/* The BUSY entries of a HeapWalk, sorted by address; returns the count. */
static size_t walk_busy(HANDLE h, busy *out, size_t cap) {
    PROCESS_HEAP_ENTRY e;
    memset(&e, 0, sizeof e);
    size_t n = 0;
    long guard = 0;
    assert_true(HeapLock(h));
    while (HeapWalk(h, &e)) {
        assert_true(++guard < 10000000);
        if (e.wFlags & PROCESS_HEAP_ENTRY_BUSY) {
            assert_true(n < cap);
            out[n].p = e.lpData;
            out[n].n = e.cbData;
            n++;
        }
    }
    DWORD le = GetLastError();
    assert_true(HeapUnlock(h));
    assert_int_equal(le, ERROR_NO_MORE_ITEMS);
    qsort(out, n, sizeof *out, cmp_busy);
    return n;
}

static SIZE_T allocated(HANDLE h) {
    HEAP_SUMMARY s;
    memset(&s, 0, sizeof s);
    s.cb = sizeof s;
    assert_true(HeapSummary(h, 0, &s));
    return s.cbAllocated;
}

#define WALKCAP (NSLOTS + 65536)
static busy g_before[WALKCAP], g_walk[WALKCAP], g_expect[WALKCAP];

static void run_stress(HANDLE h, uint64_t seed) {
    shared *sh = &g_sh;
    memset(sh, 0, sizeof *sh);
    sh->h = h;
    pthread_mutex_init(&sh->mu, NULL);
    pthread_cond_init(&sh->cv, NULL);
    pthread_barrier_init(&sh->start, NULL, NTHREADS);

    /* what the heap holds before (the process heap may not be empty) */
    size_t nbefore = walk_busy(h, g_before, WALKCAP);
    SIZE_T alloc_before = allocated(h);

    tstate ts[NTHREADS];
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        memset(&ts[i], 0, sizeof ts[i]);
        ts[i].sh = sh;
        ts[i].id = i;
        ts[i].rng = seed * 0x9E3779B97F4A7C15ull + (uint64_t)i * 7919 + 1;
        assert_int_equal(pthread_create(&th[i], NULL, worker, &ts[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++) pthread_join(th[i], NULL);
    if (atomic_load(&sh->failed)) fail_msg("%s", sh->msg);

    long allocs = 0, frees = 0, cross_frees = 0, reallocs = 0, cross_reallocs = 0, larges = 0, validates = 0;
    for (int i = 0; i < NTHREADS; i++) {
        allocs += ts[i].allocs;
        frees += ts[i].frees;
        cross_frees += ts[i].cross_frees;
        reallocs += ts[i].reallocs;
        cross_reallocs += ts[i].cross_reallocs;
        larges += ts[i].larges;
        validates += ts[i].validates;
    }
    print_message("stress: %ld allocs, %ld frees (%ld cross-thread), %ld reallocs (%ld cross-thread), "
                  "%ld large, %ld validations\n",
                  allocs, frees, cross_frees, reallocs, cross_reallocs, larges, validates);
    assert_true(frees > 10000);
    /* about half of the frees are of the other thread's blocks */
    assert_true(cross_frees * 5 >= frees && cross_frees * 5 <= frees * 4);
    assert_true(cross_reallocs > 100);
    assert_true(validates >= 2 * (OPS_PER_THREAD / VALIDATE_EVERY));

    /* final state */
    assert_true(HeapValidate(h, 0, NULL));
    size_t nlive = 0;
    SIZE_T sum = 0;
    for (size_t i = 0; i < nbefore; i++) g_expect[nlive++] = g_before[i];
    for (int i = 0; i < NSLOTS; i++) {
        slot *sl = &sh->s[i];
        if (!sl->p) continue;
        assert_false(sl->busy);
        SIZE_T sz = HeapSize(h, 0, sl->p);
        assert_int_equal(sz, sl->n);
        sum += sz;
        if (check(sl->p, sl->n, sl->cookie) != (size_t)-1) fail_msg("slot %d: block %p changed", i, (void *)sl->p);
        assert_true(HeapValidate(h, 0, sl->p));
        g_expect[nlive].p = sl->p;
        g_expect[nlive].n = sl->n;
        nlive++;
    }
    qsort(g_expect, nlive, sizeof *g_expect, cmp_busy);
    for (size_t i = 1; i < nlive; i++) {
        char *a = g_expect[i - 1].p;
        if (a + (g_expect[i - 1].n ? g_expect[i - 1].n : 1) > (char *)g_expect[i].p)
            fail_msg("live blocks %p (%zu) and %p overlap", (void *)a, g_expect[i - 1].n, g_expect[i].p);
    }
    assert_int_equal(allocated(h), alloc_before + sum);
    size_t nwalk = walk_busy(h, g_walk, WALKCAP);
    if (nwalk != nlive) fail_msg("HeapWalk found %zu busy blocks, %zu are live", nwalk, nlive);
    for (size_t i = 0; i < nlive; i++) {
        if (g_walk[i].p != g_expect[i].p || g_walk[i].n != g_expect[i].n)
            fail_msg("HeapWalk busy entry %zu is %p (%zu), expected %p (%zu)", i, g_walk[i].p, g_walk[i].n,
                     g_expect[i].p, g_expect[i].n);
    }

    /* free everything */
    for (int i = 0; i < NSLOTS; i++)
        if (sh->s[i].p) assert_true(HeapFree(h, 0, sh->s[i].p));
    assert_true(HeapValidate(h, 0, NULL));
    assert_int_equal(allocated(h), alloc_before);
    assert_int_equal(walk_busy(h, g_walk, WALKCAP), nbefore);
    pthread_barrier_destroy(&sh->start);
    pthread_cond_destroy(&sh->cv);
    pthread_mutex_destroy(&sh->mu);
}

static void test_stress_private_heap(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    run_stress(h, 1);
    assert_true(HeapDestroy(h));
}

static void test_stress_process_heap(void **state) {
    (void)state;
    run_stress(GetProcessHeap(), 2);
}

/* ---- reallocation and free by threads that did not allocate ---- */

#define NX 3000

typedef struct xblk {
    char *p;
    size_t n;
    uint32_t cookie;
} xblk;

static xblk g_x[NX];
static HANDLE g_xh;
static atomic_int g_xfail;
static char g_xmsg[256];

static void xfail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void xfail(const char *fmt, ...) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&g_xfail, &expected, 1)) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_xmsg, sizeof g_xmsg, fmt, ap);
    va_end(ap);
}

static size_t xsize(int i, int round) {
    static const size_t sz[] = { 0, 8, 100, 1000, 4096, 20000, 70000, WINHEAP_LARGE_THRESHOLD, 0x180000 };
    int k = (i * 7 + round * 3) % 9;
    if (k >= 7 && i % 50 != 0) k = i % 7; /* large only for every 50th block */
    return sz[k] + (size_t)(i % 13);
}

static void *x_alloc(void *arg) {
    (void)arg;
    for (int i = 0; i < NX; i++) {
        size_t n = xsize(i, 0);
        char *p = HeapAlloc(g_xh, 0, n);
        if (!p) { xfail("HeapAlloc(%zu) failed", n); return NULL; }
        g_x[i].p = p;
        g_x[i].n = n;
        g_x[i].cookie = 0xA5000000u ^ (uint32_t)i;
        fill(p, n, g_x[i].cookie);
    }
    return NULL;
}

/* Reallocates every block through three sizes, checking the prefix each time. */
static void *x_realloc(void *arg) {
    (void)arg;
    for (int round = 1; round <= 3; round++) {
        for (int i = 0; i < NX && !atomic_load(&g_xfail); i++) {
            xblk *b = &g_x[i];
            size_t n = xsize(i, round);
            char *p = HeapReAlloc(g_xh, round == 2 ? HEAP_ZERO_MEMORY : 0, b->p, n);
            if (!p) { xfail("HeapReAlloc(%zu -> %zu) failed", b->n, n); return NULL; }
            size_t keep = b->n < n ? b->n : n;
            if (check(p, keep, b->cookie) != (size_t)-1) { xfail("block %d lost its contents", i); return NULL; }
            if (round == 2)
                for (size_t j = keep; j < n; j++)
                    if (p[j]) { xfail("block %d: grown byte %zu not zero", i, j); return NULL; }
            if (HeapSize(g_xh, 0, p) != n) { xfail("block %d: HeapSize after realloc", i); return NULL; }
            b->p = p;
            b->n = n;
            b->cookie ^= 0x00010000u * (uint32_t)round;
            fill(p, n, b->cookie);
        }
    }
    return NULL;
}

/* Allocates and frees its own blocks meanwhile, so that the heap is contended. */
static void *x_churn(void *arg) {
    (void)arg;
    static void *mine[256];
    uint64_t rng = 99;
    for (int i = 0; i < 40000 && !atomic_load(&g_xfail); i++) {
        int k = (int)(wh_rand(&rng) % 256);
        if (mine[k]) {
            if (!HeapFree(g_xh, 0, mine[k])) { xfail("churn HeapFree failed"); return NULL; }
            mine[k] = NULL;
        } else {
            mine[k] = HeapAlloc(g_xh, 0, (size_t)(wh_rand(&rng) % 3000));
            if (!mine[k]) { xfail("churn HeapAlloc failed"); return NULL; }
        }
    }
    for (int k = 0; k < 256; k++)
        if (mine[k]) HeapFree(g_xh, 0, mine[k]), mine[k] = NULL;
    return NULL;
}

static void *x_free(void *arg) {
    (void)arg;
    for (int i = 0; i < NX; i++) {
        xblk *b = &g_x[i];
        if (check(b->p, b->n, b->cookie) != (size_t)-1) { xfail("block %d changed before free", i); return NULL; }
        if (!HeapFree(g_xh, 0, b->p)) { xfail("HeapFree of block %d failed", i); return NULL; }
        b->p = NULL;
    }
    return NULL;
}

static void run_thread(void *(*fn)(void *)) {
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fn, NULL), 0);
    pthread_join(t, NULL);
}

static void test_realloc_and_free_from_other_threads(void **state) {
    (void)state;
    g_xh = HeapCreate(0, 0, 0);
    assert_non_null(g_xh);
    run_thread(x_alloc); /* thread A allocates */
    if (atomic_load(&g_xfail)) fail_msg("%s", g_xmsg);
    pthread_t r, c;
    assert_int_equal(pthread_create(&r, NULL, x_realloc, NULL), 0); /* thread B reallocates */
    assert_int_equal(pthread_create(&c, NULL, x_churn, NULL), 0);   /* thread C churns */
    pthread_join(r, NULL);
    pthread_join(c, NULL);
    if (atomic_load(&g_xfail)) fail_msg("%s", g_xmsg);
    assert_true(HeapValidate(g_xh, 0, NULL));
    SIZE_T sum = 0;
    for (int i = 0; i < NX; i++) {
        assert_true(HeapValidate(g_xh, 0, g_x[i].p));
        sum += g_x[i].n;
    }
    assert_int_equal(allocated(g_xh), sum);
    run_thread(x_free); /* thread D frees (A has exited) */
    if (atomic_load(&g_xfail)) fail_msg("%s", g_xmsg);
    assert_true(HeapValidate(g_xh, 0, NULL));
    assert_int_equal(allocated(g_xh), 0);
    assert_int_equal(walk_busy(g_xh, g_walk, WALKCAP), 0);
    /* the freed memory is reusable: the same set fits again */
    run_thread(x_alloc);
    if (atomic_load(&g_xfail)) fail_msg("%s", g_xmsg);
    run_thread(x_free);
    if (atomic_load(&g_xfail)) fail_msg("%s", g_xmsg);
    assert_true(HeapDestroy(g_xh));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stress_private_heap),
        cmocka_unit_test(test_stress_process_heap),
        cmocka_unit_test(test_realloc_and_free_from_other_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
