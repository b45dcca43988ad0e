/*
 * test_api_walk.c - API conformance tests for the heap inspection functions:
 * HeapWalk, HeapValidate, HeapSummary and HeapCompact (SPEC 2.9, 2.11, 2.12,
 * 2.15, 3 and decisions D2, D4, D5, D8, D9, D12, D13, D14).
 *
 * Every walk is checked against the structural rules of D12 by walk_check():
 * one REGION entry first per region (region 0 at the handle, committed +
 * uncommitted == reserved, uncommitted entries adding up to the region's
 * dwUnCommittedSize), block and uncommitted entries in address order inside
 * their region without overlap, and large blocks (index 64, no region entry)
 * after all regions.  On top of that the tests compare walks with the set of
 * live blocks (back-end, LFH - also allocated by other threads and freed
 * remotely - and large), with HeapSummary and with HeapCompact, check that
 * walking is stateless and changes nothing, and exercise every error path
 * with the last-error values decided in /work/notes/decisions.md.  The
 * program runs with termination on corruption off
 * (WINHEAP_TERMINATE_ON_CORRUPTION=0); one forked child turns it on to prove
 * that HeapValidate and HeapWalk never terminate on a bad pointer (D5).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

#define KiB ((SIZE_T)1024)
#define MiB (KiB * 1024)
#define PAGE ((uintptr_t)4096)
#define LARGE_INDEX 64
#define WALK_LIMIT 2000000

/* ------------------------------------------------------------------ helpers */

typedef struct walk {
    PROCESS_HEAP_ENTRY *e;
    size_t n, cap;
    DWORD err; /* GetLastError() after the final FALSE */
} walk;

typedef struct walk_stats {
    size_t regions, busy, large, freeb, uncommitted;
    size_t busy_bytes, large_bytes, reserved, committed, uncommitted_bytes, max_free;
} walk_stats;

/* Walk h to the end, starting from a structure filled with `fill` and
 * lpData = NULL. */
static void walk_run_fill(HANDLE h, walk *w, int fill) {
    PROCESS_HEAP_ENTRY ent;
    memset(&ent, fill, sizeof ent);
    ent.lpData = NULL;
    w->n = 0;
    SetLastError(0xBEEF);
    while (HeapWalk(h, &ent)) {
        if (w->n == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 256;
            w->e = realloc(w->e, w->cap * sizeof *w->e);
            assert_non_null(w->e);
        }
        w->e[w->n++] = ent;
        if (w->n > WALK_LIMIT) fail_msg("HeapWalk does not end");
    }
    w->err = GetLastError();
}
static void walk_run(HANDLE h, walk *w) { walk_run_fill(h, w, 0); }
static void walk_free(walk *w) { free(w->e); memset(w, 0, sizeof *w); }

static int is_large(const PROCESS_HEAP_ENTRY *e) {
    return e->wFlags == PROCESS_HEAP_ENTRY_BUSY && e->iRegionIndex == LARGE_INDEX;
}

/* The structural rules of D12; fills *st (may be NULL). */
static void walk_check(HANDLE h, const walk *w, walk_stats *st) {
    walk_stats s;
    memset(&s, 0, sizeof s);
    assert_int_equal(w->err, ERROR_NO_MORE_ITEMS);
    assert_true(w->n >= 1);
    assert_int_equal(w->e[0].wFlags, PROCESS_HEAP_REGION);
    assert_ptr_equal(w->e[0].lpData, h);
    uintptr_t rbase = 0, rend = 0, first = 0, last = 0, prev_end = 0;
    size_t r_uncommitted = 0, r_expect_unc = 0;
    int in_region = 0, seen_large = 0;
    uintptr_t rb[256], re[256];
    size_t nr = 0;
    for (size_t i = 0; i < w->n; i++) {
        const PROCESS_HEAP_ENTRY *e = &w->e[i];
        uintptr_t a = (uintptr_t)e->lpData;
        if (e->wFlags == PROCESS_HEAP_REGION) {
            assert_false(seen_large);
            if (in_region) assert_int_equal(r_uncommitted, r_expect_unc);
            assert_int_equal(e->iRegionIndex, s.regions);
            assert_true(e->cbData > 0);
            assert_true(e->cbOverhead > 0); /* the region's control structures */
            assert_int_equal(a % PAGE, 0);
            assert_int_equal((size_t)e->Region.dwCommittedSize + e->Region.dwUnCommittedSize, e->cbData);
            rbase = a;
            rend = a + e->cbData;
            first = (uintptr_t)e->Region.lpFirstBlock;
            last = (uintptr_t)e->Region.lpLastBlock;
            assert_true(first >= rbase && first <= last && last <= rend);
            for (size_t k = 0; k < nr; k++) assert_true(rend <= rb[k] || rbase >= re[k]);
            if (nr < 256) { rb[nr] = rbase; re[nr] = rend; nr++; }
            prev_end = rbase;
            r_uncommitted = 0;
            r_expect_unc = e->Region.dwUnCommittedSize;
            in_region = 1;
            s.regions++;
            s.reserved += e->cbData;
            s.committed += e->Region.dwCommittedSize;
        } else if (is_large(e)) {
            if (in_region) assert_int_equal(r_uncommitted, r_expect_unc);
            in_region = 0;
            seen_large = 1;
            assert_int_equal(a % 16, 0);
            for (size_t k = 0; k < nr; k++) assert_true(a + e->cbData <= rb[k] || a >= re[k]);
            s.large++;
            s.large_bytes += e->cbData;
            s.busy++;
            s.busy_bytes += e->cbData;
        } else {
            assert_true(in_region);
            assert_false(seen_large);
            assert_int_equal(e->iRegionIndex, s.regions - 1);
            assert_true(a >= prev_end);
            assert_true(a + e->cbData <= rend);
            if (e->wFlags == PROCESS_HEAP_UNCOMMITTED_RANGE) {
                assert_int_equal(a % PAGE, 0);
                assert_int_equal(e->cbData % PAGE, 0);
                assert_true(e->cbData > 0);
                r_uncommitted += e->cbData;
                s.uncommitted++;
                s.uncommitted_bytes += e->cbData;
            } else if (e->wFlags == PROCESS_HEAP_ENTRY_BUSY) {
                assert_int_equal(a % 16, 0);
                assert_true(a >= first && a + e->cbData <= last);
                assert_true(e->cbOverhead > 0); /* header plus slack (SPEC 2.11) */
                s.busy++;
                s.busy_bytes += e->cbData;
            } else if (e->wFlags == 0) {
                assert_true(a >= first && a + e->cbData <= last);
                assert_true(e->cbOverhead > 0); /* header bytes */
                s.freeb++;
                if (e->cbData > s.max_free) s.max_free = e->cbData;
            } else {
                fail_msg("entry %zu has unexpected wFlags 0x%x", i, e->wFlags);
            }
            prev_end = a + e->cbData;
        }
    }
    if (in_region) assert_int_equal(r_uncommitted, r_expect_unc);
    if (st) *st = s;
}

static void entry_equal(const PROCESS_HEAP_ENTRY *a, const PROCESS_HEAP_ENTRY *b) {
    assert_ptr_equal(a->lpData, b->lpData);
    assert_int_equal(a->cbData, b->cbData);
    assert_int_equal(a->cbOverhead, b->cbOverhead);
    assert_int_equal(a->iRegionIndex, b->iRegionIndex);
    assert_int_equal(a->wFlags, b->wFlags);
    if (a->wFlags & PROCESS_HEAP_REGION) {
        assert_int_equal(a->Region.dwCommittedSize, b->Region.dwCommittedSize);
        assert_int_equal(a->Region.dwUnCommittedSize, b->Region.dwUnCommittedSize);
        assert_ptr_equal(a->Region.lpFirstBlock, b->Region.lpFirstBlock);
        assert_ptr_equal(a->Region.lpLastBlock, b->Region.lpLastBlock);
    }
}

static void walks_equal(const walk *a, const walk *b) {
    assert_int_equal(a->n, b->n);
    assert_int_equal(a->err, b->err);
    for (size_t i = 0; i < a->n; i++) entry_equal(&a->e[i], &b->e[i]);
}

static HEAP_SUMMARY summary(HANDLE h) {
    HEAP_SUMMARY s;
    memset(&s, 0, sizeof s);
    s.cb = sizeof s;
    assert_true(HeapSummary(h, 0, &s));
    return s;
}

static void summary_equal(HEAP_SUMMARY a, HEAP_SUMMARY b) {
    assert_int_equal(a.cbAllocated, b.cbAllocated);
    assert_int_equal(a.cbCommitted, b.cbCommitted);
    assert_int_equal(a.cbReserved, b.cbReserved);
    assert_int_equal(a.cbMaxReserve, b.cbMaxReserve);
}

/* Find the entry whose lpData == p; -1 if none, -2 if more than one. */
static long walk_find(const walk *w, const void *p) {
    long found = -1;
    for (size_t i = 0; i < w->n; i++)
        if (w->e[i].lpData == p) { if (found >= 0) return -2; found = (long)i; }
    return found;
}

static void fill(void *p, SIZE_T n, unsigned seed) {
    unsigned char *c = p;
    for (SIZE_T i = 0; i < n; i++) c[i] = (unsigned char)(seed + i * 7);
}
static int check_fill(const void *p, SIZE_T n, unsigned seed) {
    const unsigned char *c = p;
    for (SIZE_T i = 0; i < n; i++) if (c[i] != (unsigned char)(seed + i * 7)) return 0;
    return 1;
}

typedef struct blk { void *p; SIZE_T n; unsigned seed; } blk;
static int blk_cmp(const void *a, const void *b) {
    uintptr_t x = (uintptr_t)((const blk *)a)->p, y = (uintptr_t)((const blk *)b)->p;
    return x < y ? -1 : x > y;
}

/* A size mix: mostly small, some medium, a few up to ~300 KiB (never large). */
static SIZE_T mixed_size(uint64_t *rs) {
    uint64_t r = wh_rand(rs);
    switch (r % 20) {
    case 0: return (SIZE_T)(32769 + (r >> 8) % 260000);
    case 1: case 2: case 3: return (SIZE_T)(2049 + (r >> 8) % 30000);
    case 4: case 5: case 6: case 7: case 8: case 9: return (SIZE_T)(129 + (r >> 8) % 1920);
    default: return (SIZE_T)((r >> 8) % 129);
    }
}

/* ------------------------------------------------------------- HeapWalk */

static void test_walk_fresh_growable_heap(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    walk w = {0};
    walk_run(h, &w);
    walk_stats s;
    walk_check(h, &w, &s);
    assert_int_equal(s.regions, 1);
    assert_int_equal(s.busy, 0);
    assert_true(s.freeb >= 1);
    assert_true(w.n >= 3);
    /* region, then free block(s), then the uncommitted rest of the reservation */
    assert_int_equal(w.e[0].wFlags, PROCESS_HEAP_REGION);
    assert_int_equal(w.e[0].iRegionIndex, 0);
    assert_true(w.e[0].cbData >= MiB); /* region 0 of a growable heap reserves >= 1 MiB */
    assert_int_equal(w.e[1].wFlags, 0);
    assert_int_equal(w.e[w.n - 1].wFlags, PROCESS_HEAP_UNCOMMITTED_RANGE);
    for (size_t i = 1; i + 1 < w.n; i++) assert_true(w.e[i].wFlags == 0 || w.e[i].wFlags == PROCESS_HEAP_UNCOMMITTED_RANGE);
    HEAP_SUMMARY hs = summary(h);
    assert_int_equal(hs.cbAllocated, 0);
    assert_int_equal(hs.cbReserved, s.reserved);
    assert_int_equal(hs.cbCommitted, s.committed);
    walk_free(&w);
    assert_true(HeapDestroy(h));
}

static void test_walk_live_blocks_exactly_once(void **state) {
    (void)state;
    enum { N = 1000 };
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    blk *b = calloc(N, sizeof *b);
    assert_non_null(b);
    uint64_t rs = 0x1234567;
    for (int i = 0; i < N; i++) {
        b[i].n = mixed_size(&rs);
        b[i].p = HeapAlloc(h, 0, b[i].n);
        assert_non_null(b[i].p);
        b[i].seed = (unsigned)i;
        fill(b[i].p, b[i].n, b[i].seed);
    }
    size_t live = 0, live_bytes = 0;
    for (int i = 0; i < N; i++) {
        if (i % 3 == 0) { assert_true(HeapFree(h, 0, b[i].p)); continue; }
        b[live++] = b[i];
        live_bytes += b[i].n;
    }
    qsort(b, live, sizeof *b, blk_cmp);
    walk w = {0};
    walk_run(h, &w);
    walk_stats s;
    walk_check(h, &w, &s);
    assert_int_equal(s.busy, live);
    assert_int_equal(s.busy_bytes, live_bytes);
    blk *busy = calloc(s.busy ? s.busy : 1, sizeof *busy);
    size_t nb = 0;
    for (size_t i = 0; i < w.n; i++)
        if (w.e[i].wFlags & PROCESS_HEAP_ENTRY_BUSY) { busy[nb].p = w.e[i].lpData; busy[nb].n = w.e[i].cbData; nb++; }
    qsort(busy, nb, sizeof *busy, blk_cmp);
    for (size_t i = 0; i < live; i++) {
        assert_ptr_equal(busy[i].p, b[i].p);
        assert_int_equal(busy[i].n, b[i].n);
    }
    /* HeapSummary agrees with the live set and with the walk */
    HEAP_SUMMARY hs = summary(h);
    assert_int_equal(hs.cbAllocated, live_bytes);
    assert_int_equal(hs.cbReserved, s.reserved);
    assert_int_equal(hs.cbCommitted, s.committed);
    assert_true(HeapValidate(h, 0, NULL));
    for (size_t i = 0; i < live; i++) {
        assert_int_equal(HeapSize(h, 0, b[i].p), b[i].n);
        assert_true(check_fill(b[i].p, b[i].n, b[i].seed));
    }
    free(busy);
    free(b);
    walk_free(&w);
    assert_true(HeapDestroy(h));
}

static void test_walk_lfh_blocks_reported_one_by_one(void **state) {
    (void)state;
    enum { N = 300 };
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    ULONG two = 2;
    assert_true(HeapSetInformation(h, HeapCompatibilityInformation, &two, sizeof two));
    void *p[N];
    for (int i = 0; i < N; i++) { p[i] = HeapAlloc(h, 0, 24 + (i % 3)); assert_non_null(p[i]); }
    for (int i = 0; i < N; i += 4) { assert_true(HeapFree(h, 0, p[i])); p[i] = NULL; }
    walk w = {0};
    walk_run(h, &w);
    walk_stats s;
    walk_check(h, &w, &s);
    size_t live = 0;
    for (int i = 0; i < N; i++) {
        if (!p[i]) continue;
        live++;
        long k = walk_find(&w, p[i]);
        assert_true(k >= 0);
        assert_int_equal(w.e[k].wFlags, PROCESS_HEAP_ENTRY_BUSY);
        assert_int_equal(w.e[k].cbData, 24 + (i % 3));
    }
    assert_int_equal(s.busy, live);
    walk_free(&w);
    assert_true(HeapDestroy(h));
}

static void test_walk_large_blocks_after_regions(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    void *small[10];
    for (int i = 0; i < 10; i++) { small[i] = HeapAlloc(h, 0, 100 * (i + 1)); assert_non_null(small[i]); }
    const SIZE_T ls[3] = { WINHEAP_LARGE_THRESHOLD, 2 * MiB + 5, 5 * MiB + 123 };
    void *lp[3];
    HEAP_SUMMARY before = summary(h);
    for (int i = 0; i < 3; i++) { lp[i] = HeapAlloc(h, 0, ls[i]); assert_non_null(lp[i]); }
    walk w = {0};
    walk_run(h, &w);
    walk_stats s;
    walk_check(h, &w, &s);
    assert_int_equal(s.large, 3);
    assert_int_equal(s.large_bytes, ls[0] + ls[1] + ls[2]);
    for (int i = 0; i < 3; i++) {
        long k = walk_find(&w, lp[i]);
        assert_true(k >= 0);
        assert_int_equal(w.e[k].wFlags, PROCESS_HEAP_ENTRY_BUSY);
        assert_int_equal(w.e[k].iRegionIndex, LARGE_INDEX);
        assert_int_equal(w.e[k].cbData, ls[i]);
        /* no region entry precedes it, all large entries come last */
        for (size_t j = (size_t)k; j < w.n; j++) assert_true(is_large(&w.e[j]));
    }
    /* HeapSummary counts the large blocks */
    HEAP_SUMMARY after = summary(h);
    assert_int_equal(after.cbAllocated, before.cbAllocated + ls[0] + ls[1] + ls[2]);
    assert_true(after.cbReserved >= s.reserved + ls[0] + ls[1] + ls[2]);
    assert_true(after.cbCommitted >= s.committed + ls[0] + ls[1] + ls[2]);
    assert_true(after.cbCommitted <= after.cbReserved);
    assert_int_equal(after.cbMaxReserve, after.cbReserved);
    /* HeapValidate on large blocks */
    for (int i = 0; i < 3; i++) {
        SetLastError(1234);
        assert_true(HeapValidate(h, 0, lp[i]));
        assert_false(HeapValidate(h, 0, (char *)lp[i] + 16));
        assert_int_equal(GetLastError(), 1234);
    }
    /* freeing one removes exactly its entry */
    assert_true(HeapFree(h, 0, lp[1]));
    walk w2 = {0};
    walk_run(h, &w2);
    walk_check(h, &w2, &s);
    assert_int_equal(s.large, 2);
    assert_int_equal(walk_find(&w2, lp[1]), -1);
    assert_int_equal(w2.n, w.n - 1);
    SetLastError(1234);
    assert_false(HeapValidate(h, 0, lp[1])); /* unmapped now: no crash */
    assert_int_equal(GetLastError(), 1234);
    assert_int_equal(summary(h).cbAllocated, before.cbAllocated + ls[0] + ls[2]);
    walk_free(&w);
    walk_free(&w2);
    assert_true(HeapDestroy(h));
}

static void test_walk_large_alloc_free_leaves_walk_identical(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    uint64_t rs = 99;
    for (int i = 0; i < 50; i++) assert_non_null(HeapAlloc(h, 0, mixed_size(&rs)));
    walk a = {0}, b = {0};
    walk_run(h, &a);
    walk_check(h, &a, NULL);
    HEAP_SUMMARY sa = summary(h);
    void *big = HeapAlloc(h, 0, 3 * MiB);
    assert_non_null(big);
    memset(big, 0x5a, 3 * MiB);
    assert_true(HeapFree(h, 0, big));
    walk_run(h, &b);
    walks_equal(&a, &b);
    summary_equal(sa, summary(h));
    walk_free(&a);
    walk_free(&b);
    assert_true(HeapDestroy(h));
}

static void test_walk_twice_identical_and_summary_unchanged(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    uint64_t rs = 7;
    void *p[200];
    for (int i = 0; i < 200; i++) { p[i] = HeapAlloc(h, 0, mixed_size(&rs)); assert_non_null(p[i]); }
    for (int i = 0; i < 200; i += 5) assert_true(HeapFree(h, 0, p[i]));
    assert_non_null(HeapAlloc(h, 0, 2 * MiB));
    HEAP_SUMMARY s0 = summary(h);
    walk a = {0}, b = {0}, c = {0};
    walk_run(h, &a);
    walk_check(h, &a, NULL);
    summary_equal(s0, summary(h));
    walk_run(h, &b);
    walks_equal(&a, &b);
    /* a walk that starts from a garbage-filled entry gives the same result */
    walk_run_fill(h, &c, 0xcd);
    walks_equal(&a, &c);
    walk_run_fill(h, &c, 0xff);
    walks_equal(&a, &c);
    summary_equal(s0, summary(h));
    walk_free(&a);
    walk_free(&b);
    walk_free(&c);
    assert_true(HeapDestroy(h));
}

static void test_walk_is_stateless(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    uint64_t rs = 11;
    for (int i = 0; i < 100; i++) assert_non_null(HeapAlloc(h, 0, mixed_size(&rs)));
    assert_non_null(HeapAlloc(h, 0, WINHEAP_LARGE_THRESHOLD + 1));
    walk a = {0};
    walk_run(h, &a);
    walk_check(h, &a, NULL);
    /* two interleaved walks with separate entries */
    PROCESS_HEAP_ENTRY x, y;
    memset(&x, 0, sizeof x);
    memset(&y, 0xcd, sizeof y);
    y.lpData = NULL;
    for (size_t i = 0; i < a.n; i++) {
        assert_true(HeapWalk(h, &x));
        assert_true(HeapWalk(h, &y));
        entry_equal(&x, &a.e[i]);
        entry_equal(&y, &a.e[i]);
    }
    SetLastError(0);
    assert_false(HeapWalk(h, &x));
    assert_int_equal(GetLastError(), ERROR_NO_MORE_ITEMS);
    /* resuming from a copy of any entry continues the same sequence */
    for (size_t k = 0; k < a.n; k += (a.n / 17) + 1) {
        PROCESS_HEAP_ENTRY z = a.e[k];
        for (size_t i = k + 1; i < a.n; i++) {
            assert_true(HeapWalk(h, &z));
            entry_equal(&z, &a.e[i]);
        }
        SetLastError(0);
        assert_false(HeapWalk(h, &z));
        assert_int_equal(GetLastError(), ERROR_NO_MORE_ITEMS);
    }
    /* the last entry resumes straight to the end */
    PROCESS_HEAP_ENTRY z = a.e[a.n - 1];
    SetLastError(0);
    assert_false(HeapWalk(h, &z));
    assert_int_equal(GetLastError(), ERROR_NO_MORE_ITEMS);
    walk_free(&a);
    assert_true(HeapDestroy(h));
}

static void test_walk_many_regions(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    void *p[256];
    int n = 0;
    walk w = {0};
    walk_stats s = {0};
    while (n < 256) {
        p[n] = HeapAlloc(h, 0, 0xF0000);
        assert_non_null(p[n]);
        n++;
        if (n % 4 == 0) {
            walk_run(h, &w);
            walk_check(h, &w, &s);
            if (s.regions >= 3) break;
        }
    }
    assert_true(s.regions >= 3);
    assert_int_equal(s.large, 0);
    assert_int_equal(s.busy, (size_t)n);
    for (int i = 0; i < n; i++) {
        long k = walk_find(&w, p[i]);
        assert_true(k >= 0);
        assert_int_equal(w.e[k].cbData, 0xF0000);
    }
    HEAP_SUMMARY hs = summary(h);
    assert_int_equal(hs.cbReserved, s.reserved);
    assert_int_equal(hs.cbCommitted, s.committed);
    assert_int_equal(hs.cbMaxReserve, hs.cbReserved);
    assert_int_equal(hs.cbAllocated, (size_t)n * 0xF0000);
    assert_true(HeapValidate(h, 0, NULL));
    walk_free(&w);
    assert_true(HeapDestroy(h));
}

static void test_walk_errors(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    void *p = HeapAlloc(h, 0, 100);
    assert_non_null(p);
    PROCESS_HEAP_ENTRY e;
    /* NULL entry */
    SetLastError(0);
    assert_false(HeapWalk(h, NULL));
    assert_int_equal(GetLastError(), ERROR_INVALID_PARAMETER);
    /* bad handles */
    HANDLE bad[3] = { NULL, (HANDLE)(uintptr_t)0x7a3450000ULL, (HANDLE)((char *)h + 16) };
    for (int i = 0; i < 3; i++) {
        memset(&e, 0, sizeof e);
        SetLastError(0);
        assert_false(HeapWalk(bad[i], &e));
        assert_int_equal(GetLastError(), ERROR_INVALID_HANDLE);
    }
    HANDLE gone = HeapCreate(0, 0, 0);
    assert_non_null(gone);
    assert_true(HeapDestroy(gone));
    memset(&e, 0, sizeof e);
    SetLastError(0);
    assert_false(HeapWalk(gone, &e));
    assert_int_equal(GetLastError(), ERROR_INVALID_HANDLE);
    /* lpData that matches no element (also: elements of another heap) */
    HANDLE other = HeapCreate(0, 0, 0);
    assert_non_null(other);
    void *op = HeapAlloc(other, 0, 100), *olarge = HeapAlloc(other, 0, 2 * MiB);
    assert_non_null(op); assert_non_null(olarge);
    int local;
    ULONG two = 2;
    assert_true(HeapSetInformation(other, HeapCompatibilityInformation, &two, sizeof two));
    void *olfh = NULL;
    for (int i = 0; i < 40; i++) { olfh = HeapAlloc(other, 0, 32); assert_non_null(olfh); }
    void *nomatch[7] = { &local, (void *)1, (char *)p + 16, op, olarge, (char *)p + 4096 * 64, olfh };
    walk w = {0};
    walk_run(h, &w);
    long k = walk_find(&w, p);
    assert_true(k > 0);
    for (int i = 0; i < 7; i++) {
        e = w.e[k];
        e.lpData = nomatch[i];
        SetLastError(0);
        assert_false(HeapWalk(h, &e));
        assert_int_equal(GetLastError(), ERROR_INVALID_PARAMETER);
    }
    /* the end */
    e = w.e[w.n - 1];
    SetLastError(0);
    assert_false(HeapWalk(h, &e));
    assert_int_equal(GetLastError(), ERROR_NO_MORE_ITEMS);
    /* success leaves the last error alone */
    memset(&e, 0, sizeof e);
    SetLastError(1234);
    assert_true(HeapWalk(h, &e));
    assert_int_equal(GetLastError(), 1234);
    /* every REGION entry of another heap (block regions, LFH segments) */
    walk ow = {0};
    walk_run(other, &ow);
    walk_check(other, &ow, NULL);
    size_t oregions = 0;
    for (size_t i = 0; i < ow.n; i++) {
        if (ow.e[i].wFlags != PROCESS_HEAP_REGION) continue;
        oregions++;
        e = ow.e[i];
        SetLastError(0);
        assert_false(HeapWalk(h, &e));
        assert_int_equal(GetLastError(), ERROR_INVALID_PARAMETER);
    }
    assert_true(oregions >= 1);
    walk_free(&ow);
    walk_free(&w);
    assert_true(HeapDestroy(other));
    assert_true(HeapDestroy(h));
}

static void test_walk_process_heap(void **state) {
    (void)state;
    HANDLE ph = GetProcessHeap();
    assert_non_null(ph);
    assert_true(HeapLock(ph));
    walk w = {0};
    walk_run(ph, &w);
    walk_stats s;
    walk_check(ph, &w, &s);
    assert_true(HeapUnlock(ph));
    assert_true(s.regions >= 1);
    walk_free(&w);
}

static void test_walk_fixed_heap_commit_on_demand(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 4 * KiB, MiB);
    assert_non_null(h);
    HEAP_SUMMARY s0 = summary(h);
    assert_int_equal(s0.cbMaxReserve, MiB);
    assert_int_equal(s0.cbReserved, s0.cbMaxReserve);
    assert_true(s0.cbCommitted <= 256 * KiB); /* committed on demand, not up front */
    assert_true(s0.cbCommitted >= 4 * KiB);
    walk w = {0};
    walk_stats ws;
    walk_run(h, &w);
    walk_check(h, &w, &ws);
    assert_int_equal(ws.regions, 1);
    assert_int_equal(ws.committed, s0.cbCommitted);
    assert_int_equal(ws.reserved, s0.cbReserved);
    assert_true(ws.uncommitted_bytes > 0);
    assert_int_equal(ws.uncommitted_bytes, ws.reserved - ws.committed);
    void *p = HeapAlloc(h, 0, 512 * KiB);
    assert_non_null(p);
    memset(p, 0x11, 512 * KiB);
    HEAP_SUMMARY s1 = summary(h);
    assert_true(s1.cbCommitted >= 512 * KiB);
    assert_true(s1.cbCommitted > s0.cbCommitted);
    assert_true(s1.cbCommitted <= s1.cbReserved);
    assert_int_equal(s1.cbReserved, s0.cbReserved);
    assert_int_equal(s1.cbMaxReserve, MiB);
    assert_int_equal(s1.cbAllocated, 512 * KiB);
    walk_run(h, &w);
    walk_check(h, &w, &ws);
    assert_int_equal(ws.committed, s1.cbCommitted);
    assert_int_equal(ws.uncommitted_bytes, ws.reserved - ws.committed);
    long k = walk_find(&w, p);
    assert_true(k >= 0);
    assert_int_equal(w.e[k].cbData, 512 * KiB);
    walk_free(&w);
    assert_true(HeapDestroy(h));
}

static void test_walk_other_heap_kinds(void **state) {
    (void)state;
    HANDLE hs[3] = { HeapCreate(HEAP_NO_SERIALIZE, 0, 0), HeapCreate(HEAP_CREATE_ENABLE_EXECUTE, 0, 0),
                     HeapCreate(HEAP_GENERATE_EXCEPTIONS, 64 * KiB, 2 * MiB) };
    for (int j = 0; j < 3; j++) {
        HANDLE h = hs[j];
        assert_non_null(h);
        void *p[150];
        SIZE_T n[150];
        uint64_t rs = 31 + (uint64_t)j;
        for (int i = 0; i < 150; i++) {
            n[i] = mixed_size(&rs) % 9000;
            p[i] = HeapAlloc(h, 0, n[i]);
            assert_non_null(p[i]);
        }
        for (int i = 0; i < 150; i += 4) { assert_true(HeapFree(h, 0, p[i])); p[i] = NULL; }
        walk w = {0};
        walk_stats s;
        walk_run(h, &w);
        walk_check(h, &w, &s);
        size_t live = 0, bytes = 0;
        for (int i = 0; i < 150; i++) {
            if (!p[i]) continue;
            live++;
            bytes += n[i];
            long k = walk_find(&w, p[i]);
            assert_true(k >= 0);
            assert_int_equal(w.e[k].wFlags, PROCESS_HEAP_ENTRY_BUSY);
            assert_int_equal(w.e[k].cbData, n[i]);
        }
        assert_int_equal(s.busy, live);
        HEAP_SUMMARY hsum = summary(h);
        assert_int_equal(hsum.cbAllocated, bytes);
        assert_int_equal(hsum.cbCommitted, s.committed);
        assert_int_equal(hsum.cbReserved, s.reserved);
        walk_free(&w);
        assert_true(HeapDestroy(h));
    }
}

/* cbData is a DWORD: a block of 4 GiB or more is reported clamped, not wrapped. */
static void test_walk_clamps_huge_block(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    const SIZE_T big = ((SIZE_T)4 << 30) + 100;
    void *p = HeapAlloc(h, 0, big);
    if (!p) {
        assert_true(HeapDestroy(h));
        skip(); /* no 4 GiB of address space here */
    }
    assert_int_equal(HeapSize(h, 0, p), big);
    walk w = {0};
    walk_stats s;
    walk_run(h, &w);
    walk_check(h, &w, &s);
    long k = walk_find(&w, p);
    assert_true(k >= 0);
    assert_int_equal(w.e[k].cbData, 0xFFFFFFFFu);
    assert_int_equal(w.e[k].iRegionIndex, LARGE_INDEX);
    HEAP_SUMMARY hs = summary(h);
    assert_int_equal(hs.cbAllocated, big);
    assert_true(hs.cbReserved >= big);
    assert_true(HeapValidate(h, 0, p));
    assert_true(HeapFree(h, 0, p));
    walk_free(&w);
    assert_true(HeapDestroy(h));
}

/* LFH blocks allocated by other threads (some of which have exited, one still
 * alive and owning its groups) and freed by this one: the walk reports exactly
 * the live blocks, a remotely freed block is never BUSY, and HeapSummary agrees. */
typedef struct lfh_job {
    HANDLE h;
    blk *b;
    int n, first;
    int stay;  /* keep the thread alive until `go` is set */
    int ready, go;
} lfh_job;

static void *lfh_thread(void *arg) {
    lfh_job *j = arg;
    for (int i = 0; i < j->n; i++) {
        SIZE_T n = (SIZE_T)(16 + 16 * ((i + j->first) % 4));
        void *p = HeapAlloc(j->h, 0, n);
        if (!p) abort();
        fill(p, n, (unsigned)(j->first + i));
        j->b[i].p = p;
        j->b[i].n = n;
        j->b[i].seed = (unsigned)(j->first + i);
    }
    __atomic_store_n(&j->ready, 1, __ATOMIC_SEQ_CST);
    while (j->stay && !__atomic_load_n(&j->go, __ATOMIC_SEQ_CST)) usleep(1000);
    return NULL;
}

static void check_live_set(HANDLE h, blk *b, int nb) {
    blk *live = calloc((size_t)nb, sizeof *live);
    size_t nl = 0, bytes = 0;
    for (int i = 0; i < nb; i++) if (b[i].p) { live[nl++] = b[i]; bytes += b[i].n; }
    walk w = {0};
    walk_stats s;
    walk_run(h, &w);
    walk_check(h, &w, &s);
    assert_int_equal(s.busy, nl);
    assert_int_equal(s.busy_bytes, bytes);
    for (size_t i = 0; i < nl; i++) {
        long k = walk_find(&w, live[i].p);
        assert_true(k >= 0);
        assert_int_equal(w.e[k].wFlags, PROCESS_HEAP_ENTRY_BUSY);
        assert_int_equal(w.e[k].cbData, live[i].n);
        assert_true(check_fill(live[i].p, live[i].n, live[i].seed));
    }
    assert_int_equal(summary(h).cbAllocated, bytes);
    assert_true(HeapValidate(h, 0, NULL));
    walk_free(&w);
    free(live);
}

static void test_walk_lfh_other_threads(void **state) {
    (void)state;
    enum { T = 3, PER = 300 };
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    ULONG two = 2;
    assert_true(HeapSetInformation(h, HeapCompatibilityInformation, &two, sizeof two));
    blk *b = calloc(T * PER, sizeof *b);
    static lfh_job j[T];
    pthread_t t[T];
    for (int i = 0; i < T; i++) {
        j[i] = (lfh_job){ .h = h, .b = b + i * PER, .n = PER, .first = i * PER, .stay = (i == T - 1) };
        assert_int_equal(pthread_create(&t[i], NULL, lfh_thread, &j[i]), 0);
    }
    for (int i = 0; i < T - 1; i++) pthread_join(t[i], NULL);
    while (!__atomic_load_n(&j[T - 1].ready, __ATOMIC_SEQ_CST)) usleep(1000);
    check_live_set(h, b, T * PER);
    /* remote frees: into exited threads' groups and into a live owner's groups */
    for (int i = 0; i < T * PER; i += 3) {
        assert_true(HeapFree(h, 0, b[i].p));
        SetLastError(1234);
        assert_false(HeapValidate(h, 0, b[i].p));
        assert_int_equal(GetLastError(), 1234);
        b[i].p = NULL;
    }
    check_live_set(h, b, T * PER);
    __atomic_store_n(&j[T - 1].go, 1, __ATOMIC_SEQ_CST);
    pthread_join(t[T - 1], NULL);
    check_live_set(h, b, T * PER);
    /* this thread allocates again (adopting or reusing groups) */
    for (int i = 0; i < T * PER; i += 3) {
        b[i].n = 48;
        b[i].p = HeapAlloc(h, 0, 48);
        assert_non_null(b[i].p);
        fill(b[i].p, 48, b[i].seed);
    }
    check_live_set(h, b, T * PER);
    free(b);
    assert_true(HeapDestroy(h));
}

/* A block freed by another thread waits, marked pending, on its group's
 * thread-free list until the owner collects and zeroes it.  While it waits
 * it is free to every function (walk, summary, HeapSize, HeapValidate), a
 * second free of it fails on both paths (the owner's and the remote one),
 * and once the owner takes it again it comes back zeroed. */
typedef struct pend_job {
    HANDLE h;
    char *p[64];
    int phase, done;
    int refree_ok[64];
    DWORD refree_le;
    int reused, dirty;
} pend_job;

static void pend_wait(pend_job *j, int phase) {
    while (__atomic_load_n(&j->phase, __ATOMIC_SEQ_CST) != phase) usleep(500);
}

static void *pend_owner(void *arg) {
    pend_job *j = arg;
    for (int i = 0; i < 64; i++) {
        j->p[i] = HeapAlloc(j->h, 0, 200);
        if (!j->p[i]) abort();
        memset(j->p[i], 0x5A, 200);
    }
    __atomic_store_n(&j->done, 1, __ATOMIC_SEQ_CST);
    pend_wait(j, 1); /* the main thread freed them: the owner frees them again */
    for (int i = 0; i < 64; i++) {
        SetLastError(0);
        j->refree_ok[i] = HeapFree(j->h, 0, j->p[i]);
        if (!j->refree_ok[i]) j->refree_le = GetLastError();
    }
    __atomic_store_n(&j->done, 2, __ATOMIC_SEQ_CST);
    pend_wait(j, 2); /* allocate until the freed slots come back */
    char *q[256];
    for (int k = 0; k < 256; k++) {
        q[k] = HeapAlloc(j->h, 0, 200);
        if (!q[k]) abort();
        for (int i = 0; i < 64; i++)
            if (q[k] == j->p[i]) {
                j->reused++;
                for (int b = 0; b < 200; b++) if (q[k][b]) { j->dirty++; break; }
            }
    }
    for (int k = 0; k < 256; k++) HeapFree(j->h, 0, q[k]);
    __atomic_store_n(&j->done, 3, __ATOMIC_SEQ_CST);
    return NULL;
}

static void test_lfh_pending_remote_frees(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    ULONG two = 2;
    assert_true(HeapSetInformation(h, HeapCompatibilityInformation, &two, sizeof two));
    static pend_job j;
    memset(&j, 0, sizeof j);
    j.h = h;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, pend_owner, &j), 0);
    while (__atomic_load_n(&j.done, __ATOMIC_SEQ_CST) != 1) usleep(500);
    HEAP_SUMMARY s0 = summary(h);
    for (int i = 0; i < 64; i++) assert_true(HeapFree(h, 0, j.p[i])); /* remote frees: pending */
    assert_int_equal(summary(h).cbAllocated, s0.cbAllocated - 64 * 200);
    assert_true(HeapValidate(h, 0, NULL));
    walk w = {0};
    walk_stats ws;
    walk_run(h, &w);
    walk_check(h, &w, &ws);
    for (int i = 0; i < 64; i++) {
        long k = walk_find(&w, j.p[i]);
        assert_true(k >= 0);
        assert_int_equal(w.e[k].wFlags, 0); /* free, not busy */
        SetLastError(0);
        assert_int_equal(HeapSize(h, 0, j.p[i]), (SIZE_T)-1);
        assert_int_equal(GetLastError(), ERROR_INVALID_PARAMETER);
        SetLastError(1234);
        assert_false(HeapValidate(h, 0, j.p[i]));
        assert_int_equal(GetLastError(), 1234);
    }
    walk_free(&w);
    /* the remote path refuses a second free of a pending block */
    SetLastError(0);
    assert_false(HeapFree(h, 0, j.p[0]));
    assert_int_equal(GetLastError(), ERROR_INVALID_PARAMETER);
    __atomic_store_n(&j.phase, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&j.done, __ATOMIC_SEQ_CST) != 2) usleep(500);
    for (int i = 0; i < 64; i++) assert_false(j.refree_ok[i]); /* the owner's path refuses too */
    assert_int_equal(j.refree_le, ERROR_INVALID_PARAMETER);
    assert_true(HeapValidate(h, 0, NULL));
    __atomic_store_n(&j.phase, 2, __ATOMIC_SEQ_CST);
    pthread_join(t, NULL);
    assert_int_equal(j.done, 3);
    assert_true(j.reused > 0);   /* the owner collected the pending slots */
    assert_int_equal(j.dirty, 0); /* and they came back zeroed */
    assert_true(HeapValidate(h, 0, NULL));
    assert_true(HeapDestroy(h));
}

/* ---------------------------------------------------------- HeapSummary */

static void test_summary_errors(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    HEAP_SUMMARY s;
    const DWORD badcb[5] = { 0, 20, sizeof s - 1, sizeof s + 1, 0xFFFFFFFF };
    for (int i = 0; i < 5; i++) {
        memset(&s, 0, sizeof s);
        s.cb = badcb[i];
        SetLastError(0);
        assert_false(HeapSummary(h, 0, &s));
        assert_int_equal(GetLastError(), ERROR_INVALID_PARAMETER);
    }
    const DWORD badfl[3] = { HEAP_NO_SERIALIZE, 2, 0x80000000 };
    for (int i = 0; i < 3; i++) {
        memset(&s, 0, sizeof s);
        s.cb = sizeof s;
        SetLastError(0);
        assert_false(HeapSummary(h, badfl[i], &s));
        assert_int_equal(GetLastError(), ERROR_INVALID_PARAMETER);
    }
    HANDLE gone = HeapCreate(0, 0, 0);
    assert_true(HeapDestroy(gone));
    HANDLE bad[3] = { NULL, gone, (HANDLE)(uintptr_t)0x7a3450000ULL };
    for (int i = 0; i < 3; i++) {
        memset(&s, 0, sizeof s);
        s.cb = sizeof s;
        SetLastError(0);
        assert_false(HeapSummary(bad[i], 0, &s));
        assert_int_equal(GetLastError(), ERROR_INVALID_HANDLE);
    }
    /* success leaves the last error alone */
    memset(&s, 0, sizeof s);
    s.cb = sizeof s;
    SetLastError(1234);
    assert_true(HeapSummary(h, 0, &s));
    assert_int_equal(GetLastError(), 1234);
    assert_true(HeapDestroy(h));
}

static void test_summary_allocated_tracks_heapsize(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    HEAP_SUMMARY s = summary(h);
    assert_int_equal(s.cbAllocated, 0);
    assert_true(s.cbCommitted <= s.cbReserved);
    assert_int_equal(s.cbMaxReserve, s.cbReserved);
    uint64_t rs = 5;
    enum { N = 400 };
    void *p[N];
    size_t total = 0;
    for (int i = 0; i < N; i++) {
        SIZE_T n = mixed_size(&rs);
        p[i] = HeapAlloc(h, 0, n);
        assert_non_null(p[i]);
        total += n;
    }
    for (int i = 0; i < N; i += 7) { total -= HeapSize(h, 0, p[i]); assert_true(HeapFree(h, 0, p[i])); p[i] = NULL; }
    size_t sum = 0;
    for (int i = 0; i < N; i++) if (p[i]) sum += HeapSize(h, 0, p[i]);
    assert_int_equal(sum, total);
    s = summary(h);
    assert_int_equal(s.cbAllocated, sum);
    assert_true(s.cbAllocated <= s.cbCommitted);
    assert_true(s.cbCommitted <= s.cbReserved);
    assert_int_equal(s.cbMaxReserve, s.cbReserved);
    /* one more block of n bytes changes cbAllocated by exactly n */
    const SIZE_T sizes[6] = { 0, 1, 17, 777, 40000, 300000 };
    for (int i = 0; i < 6; i++) {
        HEAP_SUMMARY a = summary(h);
        void *q = HeapAlloc(h, 0, sizes[i]);
        assert_non_null(q);
        HEAP_SUMMARY b = summary(h);
        assert_int_equal(b.cbAllocated, a.cbAllocated + sizes[i]);
        assert_true(HeapFree(h, 0, q));
        assert_int_equal(summary(h).cbAllocated, a.cbAllocated);
    }
    /* HeapReAlloc changes it by the size difference */
    HEAP_SUMMARY a = summary(h);
    void *q = HeapAlloc(h, 0, 100);
    q = HeapReAlloc(h, 0, q, 5000);
    assert_non_null(q);
    assert_int_equal(summary(h).cbAllocated, a.cbAllocated + 5000);
    q = HeapReAlloc(h, 0, q, 10);
    assert_non_null(q);
    assert_int_equal(summary(h).cbAllocated, a.cbAllocated + 10);
    assert_true(HeapFree(h, 0, q));
    assert_true(HeapDestroy(h));
}

static void test_summary_fixed_heap_max_reserve(void **state) {
    (void)state;
    /* the maximum is rounded up to pages */
    HANDLE h = HeapCreate(0, 0, MiB + 100);
    assert_non_null(h);
    HEAP_SUMMARY s = summary(h);
    assert_int_equal(s.cbMaxReserve, MiB + 4096);
    assert_int_equal(s.cbReserved, s.cbMaxReserve);
    assert_true(s.cbCommitted > 0 && s.cbCommitted <= s.cbReserved);
    assert_int_equal(s.cbAllocated, 0);
    assert_true(HeapDestroy(h));
    /* initial == maximum: everything committed */
    h = HeapCreate(0, 256 * KiB, 256 * KiB);
    assert_non_null(h);
    s = summary(h);
    assert_int_equal(s.cbMaxReserve, 256 * KiB);
    assert_int_equal(s.cbReserved, 256 * KiB);
    assert_int_equal(s.cbCommitted, 256 * KiB);
    assert_true(HeapDestroy(h));
}

static void test_summary_process_heap(void **state) {
    (void)state;
    HEAP_SUMMARY s = summary(GetProcessHeap());
    assert_true(s.cbCommitted > 0);
    assert_true(s.cbAllocated <= s.cbCommitted);
    assert_true(s.cbCommitted <= s.cbReserved);
    assert_int_equal(s.cbMaxReserve, s.cbReserved);
}

/* --------------------------------------------------------- HeapValidate */

static void test_validate_healthy_heaps(void **state) {
    (void)state;
    HANDLE hs[4] = { HeapCreate(0, 0, 0), HeapCreate(HEAP_NO_SERIALIZE, 0, 0), HeapCreate(0, 64 * KiB, 512 * KiB),
                     GetProcessHeap() };
    for (int j = 0; j < 4; j++) {
        HANDLE h = hs[j];
        assert_non_null(h);
        SetLastError(1234);
        assert_true(HeapValidate(h, 0, NULL));
        assert_true(HeapValidate(h, HEAP_NO_SERIALIZE, NULL));
        assert_int_equal(GetLastError(), 1234);
        uint64_t rs = 3 + (uint64_t)j;
        void *p[100];
        for (int i = 0; i < 100; i++) {
            p[i] = HeapAlloc(h, 0, mixed_size(&rs) % 20000);
            assert_non_null(p[i]);
        }
        for (int i = 0; i < 100; i += 3) assert_true(HeapFree(h, 0, p[i]));
        SetLastError(1234);
        assert_true(HeapValidate(h, 0, NULL));
        for (int i = 0; i < 100; i++) if (i % 3) assert_true(HeapValidate(h, 0, p[i]));
        assert_int_equal(GetLastError(), 1234);
        for (int i = 0; i < 100; i++) if (i % 3) assert_true(HeapFree(h, 0, p[i]));
        assert_true(HeapValidate(h, 0, NULL));
        if (j < 3) assert_true(HeapDestroy(h));
    }
}

static void test_validate_bad_pointers(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    HANDLE other = HeapCreate(0, 0, 0);
    assert_non_null(h); assert_non_null(other);
    void *live = HeapAlloc(h, 0, 200);
    void *freed = HeapAlloc(h, 0, 200);
    void *keep = HeapAlloc(h, 0, 200); /* keeps `freed` from merging into the top */
    void *foreign = HeapAlloc(other, 0, 200);
    void *foreign_large = HeapAlloc(other, 0, 2 * MiB);
    ULONG two = 2;
    assert_true(HeapSetInformation(other, HeapCompatibilityInformation, &two, sizeof two));
    void *foreign_lfh = NULL;
    for (int i = 0; i < 40; i++) { foreign_lfh = HeapAlloc(other, 0, 48); assert_non_null(foreign_lfh); }
    assert_non_null(live); assert_non_null(freed); assert_non_null(keep); assert_non_null(foreign);
    assert_non_null(foreign_large);
    assert_true(HeapFree(h, 0, freed));
    int local = 0;
    static char stat[64];
    const void *bad[] = { freed, (char *)live + 16, (char *)live + 1, (char *)live + 8, &local, stat, foreign,
                          foreign_large, foreign_lfh, (void *)1, (void *)(uintptr_t)0xdeadbe00, h };
    SetLastError(1234);
    assert_true(HeapValidate(h, 0, live));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        SetLastError(1234);
        if (HeapValidate(h, 0, bad[i])) fail_msg("HeapValidate TRUE for bad pointer #%zu (%p)", i, bad[i]);
        assert_int_equal(GetLastError(), 1234);
    }
    /* the foreign block is fine in its own heap */
    assert_true(HeapValidate(other, 0, foreign));
    assert_true(HeapValidate(other, 0, foreign_large));
    assert_true(HeapValidate(other, 0, foreign_lfh));
    /* freed and interior LFH blocks are not valid blocks either */
    void *lfree = HeapAlloc(other, 0, 48), *lkeep = HeapAlloc(other, 0, 48);
    assert_non_null(lfree); assert_non_null(lkeep);
    assert_true(HeapFree(other, 0, lfree));
    SetLastError(1234);
    assert_false(HeapValidate(other, 0, lfree));
    assert_false(HeapValidate(other, 0, (char *)lkeep + 16));
    assert_false(HeapValidate(other, 0, (char *)lkeep + 1));
    assert_int_equal(GetLastError(), 1234);
    assert_true(HeapValidate(other, 0, lkeep));
    /* nothing was changed */
    assert_true(HeapValidate(h, 0, NULL));
    assert_true(HeapValidate(other, 0, NULL));
    assert_int_equal(HeapSize(h, 0, live), 200);
    /* a bad handle is FALSE */
    assert_false(HeapValidate(NULL, 0, NULL));
    assert_false(HeapValidate((HANDLE)(uintptr_t)0x7a3450000ULL, 0, NULL));
    assert_true(HeapDestroy(h));
    assert_true(HeapDestroy(other));
}

static void test_validate_walk_entries(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    uint64_t rs = 17;
    void *p[100];
    for (int i = 0; i < 100; i++) { p[i] = HeapAlloc(h, 0, mixed_size(&rs)); assert_non_null(p[i]); }
    for (int i = 0; i < 100; i += 2) assert_true(HeapFree(h, 0, p[i]));
    assert_non_null(HeapAlloc(h, 0, 3 * MiB));
    walk w = {0};
    walk_run(h, &w);
    walk_check(h, &w, NULL);
    size_t busy = 0, other = 0;
    for (size_t i = 0; i < w.n; i++) {
        SetLastError(1234);
        BOOL ok = HeapValidate(h, 0, w.e[i].lpData);
        assert_int_equal(GetLastError(), 1234);
        if (w.e[i].wFlags & PROCESS_HEAP_ENTRY_BUSY) { assert_true(ok); busy++; }
        else {
            if (ok) fail_msg("HeapValidate TRUE for non-busy walk entry %zu (wFlags 0x%x)", i, w.e[i].wFlags);
            other++;
        }
    }
    assert_int_equal(busy, 51);
    assert_true(other >= 2);
    walk_free(&w);
    assert_true(HeapDestroy(h));
}

/* ---------------------------------------------------------- HeapCompact */

static void test_compact_bad_handle(void **state) {
    (void)state;
    HANDLE gone = HeapCreate(0, 0, 0);
    assert_true(HeapDestroy(gone));
    HANDLE bad[3] = { NULL, gone, (HANDLE)(uintptr_t)0x7a3450000ULL };
    for (int i = 0; i < 3; i++) {
        SetLastError(0);
        assert_int_equal(HeapCompact(bad[i], 0), 0);
        assert_int_equal(GetLastError(), ERROR_INVALID_HANDLE);
    }
}

static void test_compact_matches_walk(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    /* distinct sizes, so that no size class reaches the LFH */
    void *p[40];
    for (int i = 0; i < 40; i++) { p[i] = HeapAlloc(h, 0, 1000 + 997 * (SIZE_T)i); assert_non_null(p[i]); }
    assert_true(HeapFree(h, 0, p[20]));
    assert_true(HeapFree(h, 0, p[10]));
    HEAP_SUMMARY s0 = summary(h);
    SetLastError(1234);
    SIZE_T c = HeapCompact(h, 0);
    assert_int_equal(GetLastError(), 1234);
    assert_true(c >= 1000 + 997 * 20);
    assert_true(c <= s0.cbCommitted);
    walk w = {0};
    walk_stats ws;
    walk_run(h, &w);
    walk_check(h, &w, &ws);
    assert_int_equal(c, ws.max_free);
    assert_int_equal(HeapCompact(h, HEAP_NO_SERIALIZE), c);
    /* HeapCompact decommits nothing */
    HEAP_SUMMARY s1 = summary(h);
    assert_int_equal(s1.cbCommitted, s0.cbCommitted);
    assert_int_equal(s1.cbReserved, s0.cbReserved);
    /* the reported block can be allocated without committing more */
    void *q = HeapAlloc(h, 0, c);
    assert_non_null(q);
    assert_int_equal(summary(h).cbCommitted, s0.cbCommitted);
    walk_free(&w);
    assert_true(HeapDestroy(h));
}

static void test_compact_fixed_heap_whole(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 256 * KiB, 256 * KiB);
    assert_non_null(h);
    SIZE_T c = HeapCompact(h, 0);
    assert_true(c >= 256 * KiB - 0xC00);
    assert_true(c <= 256 * KiB);
    void *p = HeapAlloc(h, 0, c);
    assert_non_null(p);
    memset(p, 1, c);
    assert_true(HeapValidate(h, 0, NULL));
    assert_true(HeapDestroy(h));
}

static void test_compact_fixed_heap_full(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 256 * KiB);
    assert_non_null(h);
    enum { MAXP = 40000 };
    void **p = calloc(MAXP, sizeof *p);
    SIZE_T *sz = calloc(MAXP, sizeof *sz);
    int n = 0;
    static const SIZE_T steps[] = { 4096, 2048, 1024, 512, 256, 128, 64, 32, 16, 8, 1, 0 };
    for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
        for (;;) {
            assert_true(n < MAXP);
            void *q = HeapAlloc(h, 0, steps[k]);
            if (!q) { assert_int_equal(GetLastError(), ERROR_NOT_ENOUGH_MEMORY); break; }
            p[n] = q;
            sz[n] = steps[k];
            n++;
        }
    }
    assert_true(n > 40);
    SetLastError(1234);
    assert_int_equal(HeapCompact(h, 0), 0);
    assert_int_equal(GetLastError(), 0);
    /* everything is committed now */
    HEAP_SUMMARY s = summary(h);
    assert_int_equal(s.cbCommitted, s.cbReserved);
    /* free a 4096-byte block in the middle of the others */
    int mid = 20;
    assert_int_equal(sz[mid], 4096);
    assert_true(HeapFree(h, 0, p[mid]));
    SetLastError(1234);
    SIZE_T c = HeapCompact(h, 0);
    assert_true(c >= 4096);
    assert_int_equal(GetLastError(), 1234);
    void *q = HeapAlloc(h, 0, c);
    assert_non_null(q);
    /* and the freed space is gone again */
    SetLastError(1234);
    assert_int_equal(HeapCompact(h, 0), 0);
    assert_int_equal(GetLastError(), 0);
    assert_true(HeapValidate(h, 0, NULL));
    free(p);
    free(sz);
    assert_true(HeapDestroy(h));
}

/* D5: the pure queries never terminate on a pointer that is not a live block,
 * even with termination on corruption switched on (run in a child). */
static void queries_child(void *arg) {
    (void)arg;
    if (!HeapSetInformation(NULL, HeapEnableTerminationOnCorruption, NULL, 0)) _exit(10);
    HANDLE h = HeapCreate(0, 0, 0);
    void *p = HeapAlloc(h, 0, 100), *q = HeapAlloc(h, 0, 100), *r = HeapAlloc(h, 0, 100);
    void *big = HeapAlloc(h, 0, 2 * MiB);
    if (!h || !p || !q || !r || !big) _exit(11);
    if (!HeapFree(h, 0, p) || !HeapFree(h, 0, big)) _exit(12);
    /* LFH blocks too: one freed, one kept */
    ULONG two = 2;
    if (!HeapSetInformation(h, HeapCompatibilityInformation, &two, sizeof two)) _exit(13);
    void *s[40];
    for (int i = 0; i < 40; i++) if (!(s[i] = HeapAlloc(h, 0, 32))) _exit(14);
    if (!HeapFree(h, 0, s[20])) _exit(15);
    int local;
    const void *bad[8] = { p, (char *)q + 16, (char *)q + 1, &local, big, (char *)r + 48, (char *)s[21] + 16, s[20] };
    for (int i = 0; i < 8; i++) {
        SetLastError(1234);
        if (HeapValidate(h, 0, bad[i])) _exit(20 + i);
        if (GetLastError() != 1234) _exit(30 + i);
        PROCESS_HEAP_ENTRY e;
        memset(&e, 0, sizeof e);
        e.lpData = (void *)bad[i];
        e.wFlags = PROCESS_HEAP_ENTRY_BUSY;
        e.cbData = 100;
        if (i == 0 || i == 7) continue; /* a freed block may be a real (free) element */
        SetLastError(0);
        if (HeapWalk(h, &e)) _exit(40 + i);
        if (GetLastError() != ERROR_INVALID_PARAMETER) _exit(50 + i);
    }
    /* entries of another heap (its REGION entry, a block) are no elements of h */
    HANDLE o = HeapCreate(0, 0, 0);
    void *op = HeapAlloc(o, 0, 100);
    PROCESS_HEAP_ENTRY e;
    memset(&e, 0, sizeof e);
    if (!o || !op || !HeapWalk(o, &e)) _exit(61);
    for (int i = 0; i < 2; i++) {
        if (i == 1) { e.lpData = op; e.wFlags = PROCESS_HEAP_ENTRY_BUSY; }
        SetLastError(0);
        if (HeapWalk(h, &e)) _exit(62 + i);
        if (GetLastError() != ERROR_INVALID_PARAMETER) _exit(64 + i);
    }
    if (!HeapValidate(h, 0, NULL)) _exit(60);
    _exit(0);
}

static void test_queries_never_terminate(void **state) {
    (void)state;
    wh_child_result r;
    wh_run_child(queries_child, NULL, 30, &r);
    if (!r.exited || r.exit_code != 0)
        fail_msg("child: exited=%d code=%d signaled=%d sig=%d timed_out=%d stderr=%s", r.exited, r.exit_code,
                 r.signaled, r.signal, r.timed_out, r.err);
    assert_null(strstr(r.err, "STATUS_HEAP_CORRUPTION"));
}

int main(void) {
    setenv("WINHEAP_TERMINATE_ON_CORRUPTION", "0", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_walk_fresh_growable_heap),
        cmocka_unit_test(test_walk_live_blocks_exactly_once),
        cmocka_unit_test(test_walk_lfh_blocks_reported_one_by_one),
        cmocka_unit_test(test_walk_lfh_other_threads),
        cmocka_unit_test(test_lfh_pending_remote_frees),
        cmocka_unit_test(test_walk_large_blocks_after_regions),
        cmocka_unit_test(test_walk_large_alloc_free_leaves_walk_identical),
        cmocka_unit_test(test_walk_twice_identical_and_summary_unchanged),
        cmocka_unit_test(test_walk_is_stateless),
        cmocka_unit_test(test_walk_many_regions),
        cmocka_unit_test(test_walk_errors),
        cmocka_unit_test(test_walk_process_heap),
        cmocka_unit_test(test_walk_fixed_heap_commit_on_demand),
        cmocka_unit_test(test_walk_other_heap_kinds),
        cmocka_unit_test(test_walk_clamps_huge_block),
        cmocka_unit_test(test_summary_errors),
        cmocka_unit_test(test_summary_allocated_tracks_heapsize),
        cmocka_unit_test(test_summary_fixed_heap_max_reserve),
        cmocka_unit_test(test_summary_process_heap),
        cmocka_unit_test(test_validate_healthy_heaps),
        cmocka_unit_test(test_validate_bad_pointers),
        cmocka_unit_test(test_validate_walk_entries),
        cmocka_unit_test(test_compact_bad_handle),
        cmocka_unit_test(test_compact_matches_walk),
        cmocka_unit_test(test_compact_fixed_heap_whole),
        cmocka_unit_test(test_compact_fixed_heap_full),
        cmocka_unit_test(test_queries_never_terminate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
