/*
 * test_api_realloc.c - conformance tests for HeapReAlloc (SPEC 2.6, 3, 5 and
 * decisions D2, D4, D9, D10, D11): lpMem NULL gives NULL with last error 0
 * and never an exception; size 0 keeps a block; contents are preserved up to
 * min(old, new) whether the block moves or not, across the small/large
 * threshold in both directions; HEAP_ZERO_MEMORY zeroes from the old
 * requested size (slack included, also after shrink-then-grow);
 * HEAP_REALLOC_IN_PLACE_ONLY shrinks always work and failed grows leave the
 * block intact with last error 8; huge sizes fail without wrapping and keep
 * the original; fixed-heap limits; ignored flag bits; stale and foreign
 * pointers; and a random workload that checks neighbours are never damaged.
 * Termination on corruption is OFF in this program.
 * HeapAlloc/HeapFree/HeapSize/HeapCreate are covered by test_api_alloc.c.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <winheap.h>

#include "test_util.h"

#define KiB ((SIZE_T)1024)
#define MiB ((SIZE_T)1024 * 1024)
#define BAD_SIZE ((SIZE_T)-1)
#define MIN(a, b) ((a) < (b) ? (a) : (b))


static int aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

static jmp_buf g_jb;
static volatile int g_exc_count;
static volatile DWORD g_exc_status;
static void recording_handler(DWORD status, HANDLE heap, DWORD flags, SIZE_T size) {
    (void)heap; (void)flags; (void)size;
    g_exc_status = status;
    g_exc_count++;
    longjmp(g_jb, 1);
}

/* ------------------------------------------------------------------ */

static void test_realloc_null_pointer(void **state) {
    (void)state;
    HANDLE heaps[4] = {HeapCreate(0, 0, 0), HeapCreate(0, 0, 256 * KiB), GetProcessHeap(),
                       HeapCreate(HEAP_GENERATE_EXCEPTIONS, 0, 0)};
    assert_true(heaps[0] && heaps[1] && heaps[3]);
    static const DWORD fl[] = {0, HEAP_ZERO_MEMORY, HEAP_REALLOC_IN_PLACE_ONLY, HEAP_GENERATE_EXCEPTIONS,
                               HEAP_GENERATE_EXCEPTIONS | HEAP_ZERO_MEMORY | HEAP_REALLOC_IN_PLACE_ONLY};
    static const SIZE_T sz[] = {0, 10, 5000, 2 * MiB, BAD_SIZE};
    winheap_exception_handler prev = winheap_set_exception_handler(recording_handler);
    g_exc_count = 0;
    if (setjmp(g_jb) != 0) {
        winheap_set_exception_handler(prev);
        fail_msg("HeapReAlloc(lpMem = NULL) raised exception 0x%x", (unsigned)g_exc_status);
    }
    for (int hi = 0; hi < 4; hi++)
        for (size_t f = 0; f < sizeof fl / sizeof fl[0]; f++)
            for (size_t s = 0; s < sizeof sz / sizeof sz[0]; s++) {
                SetLastError(1234);
                void *r = HeapReAlloc(heaps[hi], fl[f], NULL, sz[s]);
                EXPECT(r == NULL, "heap %d flags 0x%x size %zu: returned %p", hi, (unsigned)fl[f], sz[s], r);
                EXPECT_LE(0);
            }
    winheap_set_exception_handler(prev);
    assert_int_equal(g_exc_count, 0);
    for (int hi = 0; hi < 4; hi++) {
        assert_true(HeapValidate(heaps[hi], 0, NULL));
        if (hi != 2) assert_true(HeapDestroy(heaps[hi]));
    }
}

static void test_realloc_size_zero(void **state) {
    (void)state;
    static const SIZE_T from[] = {0, 1, 100, 5000, 100000, 2 * MiB};
    HANDLE heaps[3] = {HeapCreate(0, 0, 0), GetProcessHeap(), HeapCreate(0, 0, 1 * MiB)};
    assert_true(heaps[0] && heaps[2]);
    for (int hi = 0; hi < 3; hi++)
        for (size_t i = 0; i < sizeof from / sizeof from[0]; i++)
            for (int inplace = 0; inplace < 2; inplace++) {
                HANDLE h = heaps[hi];
                if (hi == 2 && from[i] >= WINHEAP_FIXED_LIMIT) continue;
                void *p = HeapAlloc(h, 0, from[i]);
                assert_non_null(p);
                wh_test_fill(p, from[i], 3);
                void *q = HeapReAlloc(h, inplace ? HEAP_REALLOC_IN_PLACE_ONLY : 0, p, 0);
                EXPECT(q != NULL, "heap %d: HeapReAlloc(%zu -> 0) NULL, LE %u", hi, from[i], (unsigned)GetLastError());
                if (inplace) assert_ptr_equal(q, p);
                assert_true(aligned16(q));
                assert_int_equal(HeapSize(h, 0, q), 0);
                assert_true(HeapValidate(h, 0, q));
                void *r = HeapReAlloc(h, HEAP_ZERO_MEMORY, q, 50);
                assert_non_null(r);
                assert_int_equal(HeapSize(h, 0, r), 50);
                EXPECT(wh_test_first_nonzero(r, 50) == 50, "heap %d from %zu: byte %zu of the regrown block not zero", hi,
                       from[i], wh_test_first_nonzero(r, 50));
                assert_true(HeapFree(h, 0, r));
            }
    assert_true(HeapValidate(heaps[0], 0, NULL));
    assert_true(HeapDestroy(heaps[0]));
    assert_true(HeapDestroy(heaps[2]));
}

static const SIZE_T g_sizes[] = {0, 1, 15, 16, 17, 100, 1000, 4096, 5000, 65536, 200000,
                                 WINHEAP_FIXED_LIMIT - 16, 0xFF000, 0xFF001, 3 * MiB + 7};
enum { NSIZES = sizeof g_sizes / sizeof g_sizes[0] };

static void test_realloc_preserves_contents(void **state) {
    (void)state;
    HANDLE heaps[2] = {HeapCreate(0, 0, 0), GetProcessHeap()};
    assert_non_null(heaps[0]);
    for (int hi = 0; hi < 2; hi++)
        for (int a = 0; a < NSIZES; a++)
            for (int b = 0; b < NSIZES; b++)
                for (int blocked = 0; blocked < 2; blocked++) {
                    HANDLE h = heaps[hi];
                    SIZE_T from = g_sizes[a], to = g_sizes[b];
                    void *p = HeapAlloc(h, 0, from);
                    void *nb = blocked ? HeapAlloc(h, 0, 48) : NULL; /* a live neighbour that forces moves */
                    assert_non_null(p);
                    wh_test_fill(p, from, (unsigned)a);
                    if (nb) wh_test_fill(nb, 48, 99);
                    void *q = HeapReAlloc(h, 0, p, to);
                    EXPECT(q != NULL, "heap %d: %zu -> %zu failed, LE %u", hi, from, to, (unsigned)GetLastError());
                    EXPECT(aligned16(q), "%zu -> %zu: %p", from, to, q);
                    EXPECT(HeapSize(h, 0, q) == to, "%zu -> %zu: HeapSize %zu", from, to, HeapSize(h, 0, q));
                    size_t keep = MIN(from, to);
                    EXPECT(wh_test_check(q, keep, (unsigned)a) == keep, "heap %d: %zu -> %zu (moved %d): byte %zu lost", hi,
                           from, to, q != p, wh_test_check(q, keep, (unsigned)a));
                    if (nb) EXPECT(wh_test_check(nb, 48, 99) == 48, "%zu -> %zu damaged the neighbour", from, to);
                    wh_test_fill(q, to, 5);
                    assert_true(HeapValidate(h, 0, q));
                    if (q != p) {
                        SetLastError(0);
                        EXPECT(HeapSize(h, 0, p) == BAD_SIZE, "%zu -> %zu: old block %p still live", from, to, p);
                        EXPECT_LE(ERROR_INVALID_PARAMETER);
                    }
                    assert_true(HeapFree(h, 0, q));
                    if (nb) assert_true(HeapFree(h, 0, nb));
                }
    assert_true(HeapValidate(heaps[0], 0, NULL));
    assert_true(HeapDestroy(heaps[0]));
}

static void test_realloc_zero_growth(void **state) {
    (void)state;
    HANDLE heaps[3] = {HeapCreate(0, 0, 0), GetProcessHeap(), HeapCreate(0, 0, 4 * MiB)};
    assert_true(heaps[0] && heaps[2]);
    for (int hi = 0; hi < 3; hi++)
        for (int a = 0; a < NSIZES; a++)
            for (int b = a + 1; b < NSIZES; b++)
                for (int inplace = 0; inplace < 2; inplace++) {
                    HANDLE h = heaps[hi];
                    SIZE_T from = g_sizes[a], to = g_sizes[b];
                    if (hi == 2 && to >= WINHEAP_FIXED_LIMIT) continue;
                    void *p = HeapAlloc(h, 0, from);
                    assert_non_null(p);
                    wh_test_fill(p, from, (unsigned)a);
                    DWORD fl = HEAP_ZERO_MEMORY | (inplace ? HEAP_REALLOC_IN_PLACE_ONLY : 0);
                    SetLastError(0);
                    void *q = HeapReAlloc(h, fl, p, to);
                    if (inplace && q == NULL) { /* allowed: the block could not grow where it is */
                        EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
                        assert_int_equal(HeapSize(h, 0, p), from);
                        assert_int_equal(wh_test_check(p, from, (unsigned)a), from);
                        assert_true(HeapFree(h, 0, p));
                        continue;
                    }
                    EXPECT(q != NULL, "heap %d: %zu -> %zu failed, LE %u", hi, from, to, (unsigned)GetLastError());
                    if (inplace) assert_ptr_equal(q, p);
                    assert_int_equal(wh_test_check(q, from, (unsigned)a), from);
                    size_t nz = wh_test_first_nonzero((char *)q + from, to - from);
                    EXPECT(nz == to - from, "heap %d: %zu -> %zu: byte %zu of the growth not zero", hi, from, to,
                           from + nz);
                    assert_true(HeapFree(h, 0, q));
                }
    assert_true(HeapDestroy(heaps[0]));
    assert_true(HeapDestroy(heaps[2]));
}

/* Zeroing starts at the old requested size, not at the capacity: stale bytes left by a shrink are cleared. */
static void test_realloc_shrink_then_grow_zero(void **state) {
    (void)state;
    static const SIZE_T sizes[] = {16, 100, 4096, 65536, 200000, WINHEAP_FIXED_LIMIT - 16, 1 * MiB, 4 * MiB + 3};
    static const SIZE_T shrink_to[] = {0, 1, 7, 15};
    HANDLE heaps[2] = {HeapCreate(0, 0, 0), GetProcessHeap()};
    assert_non_null(heaps[0]);
    for (int hi = 0; hi < 2; hi++)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
            for (size_t k = 0; k < sizeof shrink_to / sizeof shrink_to[0]; k++)
                for (int inplace = 0; inplace < 2; inplace++) {
                    HANDLE h = heaps[hi];
                    SIZE_T s = sizes[i], t = shrink_to[k];
                    DWORD ip = inplace ? HEAP_REALLOC_IN_PLACE_ONLY : 0;
                    uint8_t *p = HeapAlloc(h, HEAP_ZERO_MEMORY, s);
                    assert_non_null(p);
                    memset(p, 0x5A, s);
                    memset(p, 0, t);
                    uint8_t *q = HeapReAlloc(h, ip, p, t);
                    assert_non_null(q);
                    if (inplace) assert_ptr_equal(q, p);
                    SetLastError(0);
                    uint8_t *r = HeapReAlloc(h, HEAP_ZERO_MEMORY | ip, q, s);
                    if (r == NULL) {
                        /* an in-place grow back may fail only for a large block (mapping shrunk) */
                        EXPECT(inplace && s >= WINHEAP_LARGE_THRESHOLD, "heap %d: %zu -> %zu -> %zu failed, LE %u",
                               hi, s, t, s, (unsigned)GetLastError());
                        EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
                        assert_int_equal(HeapSize(h, 0, q), t);
                        assert_true(HeapFree(h, 0, q));
                        continue;
                    }
                    if (inplace) assert_ptr_equal(r, q);
                    assert_int_equal(HeapSize(h, 0, r), s);
                    size_t nz = wh_test_first_nonzero(r, s);
                    EXPECT(nz == s, "heap %d: %zu -> %zu -> %zu (in place %d): byte %zu is 0x%02x, not 0", hi, s, t, s,
                           inplace, nz, nz < s ? r[nz] : 0);
                    assert_true(HeapFree(h, 0, r));
                }
    assert_true(HeapDestroy(heaps[0]));
}

static void test_realloc_in_place_shrink_always(void **state) {
    (void)state;
    HANDLE heaps[3] = {HeapCreate(0, 0, 0), GetProcessHeap(), HeapCreate(0, 0, 4 * MiB)};
    assert_true(heaps[0] && heaps[2]);
    for (int hi = 0; hi < 3; hi++)
        for (int a = 0; a < NSIZES; a++) {
            HANDLE h = heaps[hi];
            SIZE_T s = g_sizes[a];
            if (hi == 2 && s >= WINHEAP_FIXED_LIMIT) continue;
            const SIZE_T targets[] = {s, s - (s > 0), s / 2, 15, 1, 0};
            void *p = HeapAlloc(h, 0, s);
            void *nb = HeapAlloc(h, 0, 32);
            assert_true(p && nb);
            wh_test_fill(p, s, 1);
            wh_test_fill(nb, 32, 2);
            for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
                if (targets[t] > HeapSize(h, 0, p)) continue;
                SIZE_T cur = HeapSize(h, 0, p);
                void *q = HeapReAlloc(h, HEAP_REALLOC_IN_PLACE_ONLY, p, targets[t]);
                EXPECT(q == p, "heap %d: in-place shrink %zu -> %zu returned %p (block %p), LE %u", hi, cur,
                       targets[t], q, p, (unsigned)GetLastError());
                assert_int_equal(HeapSize(h, 0, p), targets[t]);
                assert_int_equal(wh_test_check(p, targets[t], 1), targets[t]);
                (void)cur;
            }
            assert_int_equal(wh_test_check(nb, 32, 2), 32);
            assert_true(HeapValidate(h, 0, NULL));
            assert_true(HeapFree(h, 0, p));
            assert_true(HeapFree(h, 0, nb));
        }
    /* blocks served by the LFH (many blocks of one size class) shrink in place too */
    void *lfh[40];
    for (int i = 0; i < 40; i++) { lfh[i] = HeapAlloc(heaps[0], 0, 48); assert_non_null(lfh[i]); wh_test_fill(lfh[i], 48, (unsigned)i); }
    for (int i = 0; i < 40; i++) {
        void *q = HeapReAlloc(heaps[0], HEAP_REALLOC_IN_PLACE_ONLY, lfh[i], (SIZE_T)(i % 48));
        EXPECT(q == lfh[i], "LFH block %d: in-place shrink returned %p", i, q);
        assert_int_equal(HeapSize(heaps[0], 0, lfh[i]), i % 48);
    }
    for (int i = 0; i < 40; i++) {
        assert_int_equal(wh_test_check(lfh[i], (size_t)(i % 48), (unsigned)i), (size_t)(i % 48));
        assert_true(HeapFree(heaps[0], 0, lfh[i]));
    }
    assert_true(HeapDestroy(heaps[0]));
    assert_true(HeapDestroy(heaps[2]));
}

static void test_realloc_in_place_grow_failure(void **state) {
    (void)state;
    /* a fixed 64 KiB heap cannot hold 200 KiB: NULL, LE 8, block unchanged */
    HANDLE f = HeapCreate(0, 0, 64 * KiB);
    assert_non_null(f);
    void *p = HeapAlloc(f, 0, 100), *nb = HeapAlloc(f, 0, 100);
    assert_true(p && nb);
    wh_test_fill(p, 100, 1);
    static const SIZE_T fsz[] = {200 * KiB, 64 * KiB, WINHEAP_FIXED_LIMIT, 1 * MiB};
    for (size_t i = 0; i < sizeof fsz / sizeof fsz[0]; i++)
        for (int z = 0; z < 2; z++) {
            SetLastError(0);
            void *q = HeapReAlloc(f, HEAP_REALLOC_IN_PLACE_ONLY | (z ? HEAP_ZERO_MEMORY : 0), p, fsz[i]);
            EXPECT(q == NULL, "fixed 64K heap grew %p to %zu in place", p, fsz[i]);
            EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
            assert_int_equal(HeapSize(f, 0, p), 100);
            assert_int_equal(wh_test_check(p, 100, 1), 100);
            assert_true(HeapValidate(f, 0, p));
        }
    assert_true(HeapDestroy(f));
    /* growable heap: an in-heap block cannot grow in place to 1 GiB */
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    static const SIZE_T gsz[] = {100, 3000, 70000};
    for (size_t i = 0; i < sizeof gsz / sizeof gsz[0]; i++) {
        void *b = HeapAlloc(h, 0, gsz[i]);
        assert_non_null(b);
        wh_test_fill(b, gsz[i], 2);
        SetLastError(0);
        assert_null(HeapReAlloc(h, HEAP_REALLOC_IN_PLACE_ONLY, b, 1024 * MiB));
        EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
        assert_int_equal(HeapSize(h, 0, b), gsz[i]);
        assert_int_equal(wh_test_check(b, gsz[i], 2), gsz[i]);
        assert_true(HeapFree(h, 0, b));
    }
    /* a block surrounded by live blocks: either it grows in place (neighbours intact) or NULL, LE 8, intact */
    void *blk[40];
    for (int i = 0; i < 40; i++) { blk[i] = HeapAlloc(h, 0, 32); assert_non_null(blk[i]); wh_test_fill(blk[i], 32, (unsigned)i); }
    static const SIZE_T grow[] = {33, 48, 64, 4096, 70000, 2 * MiB};
    for (size_t g = 0; g < sizeof grow / sizeof grow[0]; g++) {
        int i = 10 + (int)g;
        SetLastError(0);
        void *q = HeapReAlloc(h, HEAP_REALLOC_IN_PLACE_ONLY, blk[i], grow[g]);
        if (q == NULL) {
            EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
            assert_int_equal(HeapSize(h, 0, blk[i]), 32);
            assert_int_equal(wh_test_check(blk[i], 32, (unsigned)i), 32);
        } else {
            assert_ptr_equal(q, blk[i]);
            assert_int_equal(HeapSize(h, 0, q), grow[g]);
            assert_int_equal(wh_test_check(q, 32, (unsigned)i), 32);
            memset((char *)q + 32, 0xEE, grow[g] - 32);
            q = HeapReAlloc(h, HEAP_REALLOC_IN_PLACE_ONLY, q, 32);
            assert_ptr_equal(q, blk[i]);
        }
        for (int j = 0; j < 40; j++)
            EXPECT(wh_test_check(blk[j], 32, (unsigned)j) == 32, "in-place grow of block %d to %zu damaged block %d", i,
                   grow[g], j);
    }
    for (int i = 0; i < 40; i++) assert_true(HeapFree(h, 0, blk[i]));
    assert_true(HeapValidate(h, 0, NULL));
    assert_true(HeapDestroy(h));
    /* with HEAP_GENERATE_EXCEPTIONS the failure raises STATUS_NO_MEMORY and the block stays intact */
    HANDLE e = HeapCreate(HEAP_GENERATE_EXCEPTIONS, 0, 0);
    assert_non_null(e);
    void *volatile eb = HeapAlloc(e, 0, 100);
    assert_non_null(eb);
    wh_test_fill(eb, 100, 3);
    winheap_exception_handler prev = winheap_set_exception_handler(recording_handler);
    g_exc_count = 0;
    if (setjmp(g_jb) == 0) {
        void *volatile q = HeapReAlloc(e, HEAP_REALLOC_IN_PLACE_ONLY, eb, 1024 * MiB);
        winheap_set_exception_handler(prev);
        fail_msg("failed in-place grow returned %p without an exception", q);
    }
    winheap_set_exception_handler(prev);
    assert_int_equal(g_exc_count, 1);
    assert_int_equal(g_exc_status, STATUS_NO_MEMORY);
    assert_int_equal(HeapSize(e, 0, eb), 100);
    assert_int_equal(wh_test_check(eb, 100, 3), 100);
    assert_true(HeapValidate(e, 0, NULL));
    assert_true(HeapDestroy(e));
}

static void test_realloc_huge_fails_keeps_original(void **state) {
    (void)state;
    static const SIZE_T from[] = {0, 100, 70000, 2 * MiB};
    HANDLE heaps[3] = {HeapCreate(0, 0, 0), GetProcessHeap(), HeapCreate(0, 0, 1 * MiB)};
    assert_true(heaps[0] && heaps[2]);
    static const DWORD fl[] = {0, HEAP_ZERO_MEMORY, HEAP_REALLOC_IN_PLACE_ONLY, HEAP_ZERO_MEMORY | 0x100};
    for (int hi = 0; hi < 3; hi++)
        for (size_t i = 0; i < sizeof from / sizeof from[0]; i++) {
            HANDLE h = heaps[hi];
            if (hi == 2 && from[i] >= WINHEAP_FIXED_LIMIT) continue;
            void *p = HeapAlloc(h, 0, from[i]);
            assert_non_null(p);
            wh_test_fill(p, from[i], 8);
            for (SIZE_T k = 0; k <= 1024; k++) {
                const SIZE_T s[3] = {SIZE_MAX - k, (SIZE_T)PTRDIFF_MAX + k, (SIZE_T)PTRDIFF_MAX - k};
                for (int j = 0; j < 3; j++)
                    for (size_t f = 0; f < sizeof fl / sizeof fl[0]; f++) {
                        SetLastError(0);
                        void *q = HeapReAlloc(h, fl[f], p, s[j]);
                        EXPECT(q == NULL, "heap %d: %zu -> %zx returned %p", hi, from[i], s[j], q);
                        EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
                    }
            }
            static const SIZE_T more[] = {(SIZE_T)1 << 47, (SIZE_T)1 << 48, (SIZE_T)1 << 62, (SIZE_T)1 << 63};
            for (size_t j = 0; j < sizeof more / sizeof more[0]; j++) {
                SetLastError(0);
                assert_null(HeapReAlloc(h, 0, p, more[j]));
                EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
            }
            assert_int_equal(HeapSize(h, 0, p), from[i]);
            assert_int_equal(wh_test_check(p, from[i], 8), from[i]);
            assert_true(HeapValidate(h, 0, p));
            assert_true(HeapFree(h, 0, p));
            assert_true(HeapValidate(h, 0, NULL));
        }
    assert_true(HeapDestroy(heaps[0]));
    assert_true(HeapDestroy(heaps[2]));
}

static void test_realloc_fixed_heap_limits(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 4 * MiB);
    assert_non_null(h);
    void *p = HeapAlloc(h, 0, 100);
    assert_non_null(p);
    wh_test_fill(p, 100, 4);
    static const SIZE_T refused[] = {WINHEAP_FIXED_LIMIT, WINHEAP_FIXED_LIMIT + 1, 0xFF000, 2 * MiB, 4 * MiB};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        SetLastError(0);
        EXPECT(HeapReAlloc(h, 0, p, refused[i]) == NULL, "fixed heap grew a block to %zx", refused[i]);
        EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
        assert_int_equal(HeapSize(h, 0, p), 100);
        assert_int_equal(wh_test_check(p, 100, 4), 100);
    }
    void *q = HeapReAlloc(h, HEAP_ZERO_MEMORY, p, WINHEAP_FIXED_LIMIT - 16);
    EXPECT(q != NULL, "0xFE000-16 refused, LE %u", (unsigned)GetLastError());
    assert_int_equal(wh_test_check(q, 100, 4), 100);
    assert_int_equal(wh_test_first_nonzero((char *)q + 100, WINHEAP_FIXED_LIMIT - 116), WINHEAP_FIXED_LIMIT - 116);
    q = HeapReAlloc(h, 0, q, 50);
    assert_non_null(q);
    assert_int_equal(wh_test_check(q, 50, 4), 50);
    assert_true(HeapFree(h, 0, q));
    assert_true(HeapDestroy(h));
    /* [OBS]/D7: a 256 KiB fixed heap lets its only block grow to 256K - 0xC00 (D11: into the free space after it) */
    h = HeapCreate(0, 256 * KiB, 256 * KiB);
    assert_non_null(h);
    p = HeapAlloc(h, 0, 100);
    assert_non_null(p);
    wh_test_fill(p, 100, 6);
    q = HeapReAlloc(h, 0, p, 256 * KiB - 0xC00);
    EXPECT(q != NULL, "256K fixed heap: 100 -> 256K-0xC00 refused, LE %u", (unsigned)GetLastError());
    assert_int_equal(HeapSize(h, 0, q), 256 * KiB - 0xC00);
    assert_int_equal(wh_test_check(q, 100, 6), 100);
    memset(q, 1, 256 * KiB - 0xC00);
    SetLastError(0);
    assert_null(HeapReAlloc(h, 0, q, 256 * KiB));
    EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
    assert_int_equal(HeapSize(h, 0, q), 256 * KiB - 0xC00);
    assert_true(HeapFree(h, 0, q));
    assert_true(HeapDestroy(h));
}

static void test_realloc_small_large_transitions(void **state) {
    (void)state;
    static const SIZE_T chain[] = {1000, 2 * MiB, 6 * MiB + 5, 0x100000, 500, 0xFF000, 0xFEFFF, 0xFF000,
                                   40 * MiB, 16, 0x120000, 0};
    HANDLE heaps[2] = {HeapCreate(0, 0, 0), GetProcessHeap()};
    assert_non_null(heaps[0]);
    for (int hi = 0; hi < 2; hi++)
        for (int z = 0; z < 2; z++) {
            HANDLE h = heaps[hi];
            void *nb = HeapAlloc(h, 0, 64);
            void *p = HeapAlloc(h, 0, chain[0]);
            assert_true(p && nb);
            wh_test_fill(nb, 64, 77);
            wh_test_fill(p, chain[0], 1);
            SIZE_T cur = chain[0];
            for (size_t i = 1; i < sizeof chain / sizeof chain[0]; i++) {
                SIZE_T to = chain[i];
                void *q = HeapReAlloc(h, z ? HEAP_ZERO_MEMORY : 0, p, to);
                EXPECT(q != NULL, "heap %d: %zx -> %zx failed, LE %u", hi, cur, to, (unsigned)GetLastError());
                assert_true(aligned16(q));
                EXPECT(HeapSize(h, 0, q) == to, "%zx -> %zx: HeapSize %zx", cur, to, HeapSize(h, 0, q));
                size_t keep = MIN(cur, to);
                EXPECT(wh_test_check(q, keep, (unsigned)i) == keep, "heap %d: %zx -> %zx: byte %zu lost", hi, cur, to,
                       wh_test_check(q, keep, (unsigned)i));
                if (z && to > cur)
                    EXPECT(wh_test_first_nonzero((char *)q + cur, to - cur) == to - cur, "%zx -> %zx: growth not zero", cur, to);
                assert_true(HeapValidate(h, 0, q));
                wh_test_fill(q, to, (unsigned)i + 1);
                p = q;
                cur = to;
            }
            assert_int_equal(wh_test_check(nb, 64, 77), 64);
            assert_true(HeapFree(h, 0, p));
            assert_true(HeapFree(h, 0, nb));
            assert_true(HeapValidate(h, 0, NULL));
        }
    assert_true(HeapDestroy(heaps[0]));
}

static void test_realloc_flag_bits_ignored(void **state) {
    (void)state;
    static const DWORD fl[] = {HEAP_GROWABLE, HEAP_TAIL_CHECKING_ENABLED, HEAP_FREE_CHECKING_ENABLED,
                               HEAP_DISABLE_COALESCE_ON_FREE, 0x100, 0x200, 0xC00, 0x1000, HEAP_CREATE_ALIGN_16,
                               HEAP_CREATE_ENABLE_EXECUTE, 1u << HEAP_TAG_SHIFT, 0x0FFFu << HEAP_TAG_SHIFT,
                               0xFFFFFFE2u};
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++) {
        void *p = HeapAlloc(h, 0, 40);
        assert_non_null(p);
        wh_test_fill(p, 40, 2);
        SetLastError(0);
        void *q = HeapReAlloc(h, fl[i], p, 4000);
        EXPECT(q != NULL, "flags 0x%x refused, LE %u", (unsigned)fl[i], (unsigned)GetLastError());
        assert_int_equal(HeapSize(h, 0, q), 4000);
        assert_int_equal(wh_test_check(q, 40, 2), 40);
        q = HeapReAlloc(h, fl[i], q, 2 * MiB);
        assert_non_null(q);
        assert_int_equal(wh_test_check(q, 40, 2), 40);
        q = HeapReAlloc(h, fl[i], q, 10);
        assert_non_null(q);
        assert_int_equal(HeapSize(h, 0, q), 10);
        assert_int_equal(wh_test_check(q, 10, 2), 10);
        assert_true(HeapFree(h, 0, q));
    }
    assert_true(HeapDestroy(h));
}

static void test_realloc_stale_and_foreign_pointers(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0), other = HeapCreate(0, 0, 0);
    assert_true(h && other);
    /* the old address of a moved block is released */
    void *p = HeapAlloc(h, 0, 64), *nb = HeapAlloc(h, 0, 64);
    assert_true(p && nb);
    void *q = HeapReAlloc(h, 0, p, 100000);
    assert_non_null(q);
    if (q != p) {
        static const DWORD fl[] = {0, HEAP_REALLOC_IN_PLACE_ONLY, HEAP_ZERO_MEMORY};
        for (size_t f = 0; f < 3; f++) {
            SetLastError(0);
            assert_null(HeapReAlloc(h, fl[f], p, 10));
            EXPECT_LE(ERROR_INVALID_PARAMETER);
        }
        SetLastError(0);
        assert_false(HeapFree(h, 0, p));
        EXPECT_LE(ERROR_INVALID_PARAMETER);
    }
    /* freed small and large blocks, interior pointers */
    void *L = HeapAlloc(h, 0, 2 * MiB), *s = HeapAlloc(h, 0, 300);
    assert_true(L && s);
    wh_test_fill(L, 2 * MiB, 1);
    wh_test_fill(s, 300, 2);
    void *bad[] = {(char *)L + 16, (char *)L + 4096, (char *)s + 16, (char *)s + 1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        SetLastError(0);
        EXPECT(HeapReAlloc(h, 0, bad[i], 50) == NULL, "interior %p", bad[i]);
        EXPECT_LE(ERROR_INVALID_PARAMETER);
        SetLastError(0);
        EXPECT(HeapReAlloc(h, HEAP_REALLOC_IN_PLACE_ONLY, bad[i], 8) == NULL, "interior %p", bad[i]);
        EXPECT_LE(ERROR_INVALID_PARAMETER);
    }
    assert_int_equal(wh_test_check(L, 2 * MiB, 1), 2 * MiB);
    assert_int_equal(wh_test_check(s, 300, 2), 300);
    assert_true(HeapFree(h, 0, L));
    assert_true(HeapFree(h, 0, s));
    void *freed[] = {L, s};
    for (int i = 0; i < 2; i++) {
        SetLastError(0);
        EXPECT(HeapReAlloc(h, 0, freed[i], 50) == NULL, "freed %p", freed[i]);
        EXPECT_LE(ERROR_INVALID_PARAMETER);
    }
    /* another heap's block: NULL, 87, untouched and still owned by the other heap */
    void *ob = HeapAlloc(other, 0, 80), *olarge = HeapAlloc(other, 0, 3 * MiB);
    assert_true(ob && olarge);
    wh_test_fill(ob, 80, 3);
    wh_test_fill(olarge, 3 * MiB, 4);
    void *ov[] = {ob, olarge};
    for (int i = 0; i < 2; i++) {
        SetLastError(0);
        EXPECT(HeapReAlloc(h, 0, ov[i], 10) == NULL, "other heap's block %p", ov[i]);
        EXPECT_LE(ERROR_INVALID_PARAMETER);
        SetLastError(0);
        EXPECT(HeapReAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, ov[i], 5 * MiB) == NULL, "other heap's block %p", ov[i]);
        EXPECT_LE(ERROR_INVALID_PARAMETER);
    }
    assert_int_equal(HeapSize(other, 0, ob), 80);
    assert_int_equal(HeapSize(other, 0, olarge), 3 * MiB);
    assert_int_equal(wh_test_check(ob, 80, 3), 80);
    assert_int_equal(wh_test_check(olarge, 3 * MiB, 4), 3 * MiB);
    assert_true(HeapValidate(h, 0, NULL));
    assert_true(HeapValidate(other, 0, NULL));
    assert_true(HeapFree(h, 0, q));
    assert_true(HeapFree(h, 0, nb));
    assert_true(HeapDestroy(h));
    assert_true(HeapDestroy(other));
}

/* Random reallocs over many live blocks: contents, sizes, alignment, neighbours and last error. */
/* The free block that follows p in a walk of h (its lpData), or NULL. */
static char *free_after(HANDLE h, const void *p) {
    PROCESS_HEAP_ENTRY e = { .lpData = NULL };
    int seen = 0;
    while (HeapWalk(h, &e)) {
        if (seen && !(e.wFlags & (PROCESS_HEAP_ENTRY_BUSY | PROCESS_HEAP_REGION | PROCESS_HEAP_UNCOMMITTED_RANGE)))
            return e.lpData;
        if (e.lpData == p) seen = 1;
        else if (seen) return NULL; /* a busy block or a range comes first */
    }
    return NULL;
}

/* A back-end block that grows takes room to grow into (up to an eighth of
 * its size): appends of a few bytes then change only its own header, not
 * the free block after it; sizes stay exact throughout (D10); a shrink
 * gives the room back; where the room does not fit (a full fixed heap) the
 * growth still succeeds with what there is. */
static void test_realloc_growth_takes_room(void **state) {
    (void)state;
    if (getenv("WINHEAP_DEBUG")) skip(); /* the debug heap takes no room (its patterns cover all slack) */
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    SIZE_T n = 20000;
    char *p = HeapAlloc(h, 0, n);
    assert_non_null(p);
    wh_test_fill(p, n, 5);
    char *f0 = free_after(h, p);
    assert_non_null(f0);
    assert_true(f0 < p + n + 64); /* no room before the first growth */
    assert_ptr_equal(HeapReAlloc(h, HEAP_REALLOC_IN_PLACE_ONLY, p, n + 16), p);
    char *f1 = free_after(h, p);
    EXPECT(f1 >= p + n + n / 8, "the first growth took %td bytes of room, not about %zu", f1 - (p + n), (size_t)n / 8);
    /* 100 appends of 16 bytes: the free successor never moves */
    for (SIZE_T k = 2; k <= 100; k++) {
        assert_ptr_equal(HeapReAlloc(h, HEAP_REALLOC_IN_PLACE_ONLY, p, n + 16 * k), p);
        EXPECT(HeapSize(h, 0, p) == n + 16 * k, "HeapSize %zu after growing to %zu", HeapSize(h, 0, p), n + 16 * k);
        EXPECT(free_after(h, p) == f1, "append %zu moved the free successor", (size_t)k);
    }
    HEAP_SUMMARY s = { .cb = sizeof s };
    assert_true(HeapSummary(h, 0, &s));
    EXPECT(s.cbAllocated == n + 1600, "cbAllocated %zu, requested %zu", s.cbAllocated, n + 1600);
    assert_int_equal(wh_test_check(p, n, 5), n);
    /* a shrink gives the room back */
    assert_ptr_equal(HeapReAlloc(h, 0, p, 1000), p);
    EXPECT(free_after(h, p) < p + 1100, "the shrink kept %td bytes", free_after(h, p) - p);
    assert_int_equal(wh_test_check(p, 1000, 5), 1000);
    assert_true(HeapValidate(h, 0, NULL));
    assert_true(HeapFree(h, 0, p));
    assert_true(HeapDestroy(h));

    /* A fixed heap: growth up to the largest block that fits, in place. */
    h = HeapCreate(0, 256 * KiB, 256 * KiB);
    assert_non_null(h);
    SIZE_T big = 256 * KiB - 0xC00;
    p = HeapAlloc(h, 0, big - 4096);
    assert_non_null(p);
    assert_ptr_equal(HeapReAlloc(h, HEAP_REALLOC_IN_PLACE_ONLY, p, big), p);
    assert_int_equal(HeapSize(h, 0, p), big);
    assert_null(HeapReAlloc(h, HEAP_REALLOC_IN_PLACE_ONLY, p, big + 4096));
    assert_true(HeapValidate(h, 0, NULL));
    assert_true(HeapDestroy(h));
}

static void test_realloc_random_workload(void **state) {
    (void)state;
    enum { N = 200, OPS = 4000 };
    static void *p[N];
    static SIZE_T sz[N];
    static unsigned seed[N];
    HANDLE heaps[3] = {HeapCreate(0, 0, 0), GetProcessHeap(), HeapCreate(0, 0, 32 * MiB)};
    assert_true(heaps[0] && heaps[2]);
    for (int hi = 0; hi < 3; hi++) {
        HANDLE h = heaps[hi];
        uint64_t rs = 99 + (uint64_t)hi;
        for (int i = 0; i < N; i++) {
            sz[i] = (SIZE_T)(wh_rand(&rs) % 600);
            seed[i] = (unsigned)i;
            p[i] = HeapAlloc(h, 0, sz[i]);
            assert_non_null(p[i]);
            wh_test_fill(p[i], sz[i], seed[i]);
        }
        for (int op = 0; op < OPS; op++) {
            int i = (int)(wh_rand(&rs) % N);
            uint64_t r = wh_rand(&rs);
            SIZE_T to;
            switch (r % 8) {
            case 0: to = 0; break;
            case 1: to = sz[i] / 2; break;
            case 2: to = sz[i] + 1 + (r >> 8) % 64; break;
            case 3: to = (r >> 8) % 70000; break;
            case 4: to = hi == 2 ? (r >> 8) % 0x40000 : WINHEAP_LARGE_THRESHOLD - 64 + (r >> 8) % 0x30000; break;
            default: to = (r >> 8) % 2000; break;
            }
            DWORD fl = ((r >> 40) & 1 ? HEAP_ZERO_MEMORY : 0) | ((r >> 41) % 4 == 0 ? HEAP_REALLOC_IN_PLACE_ONLY : 0);
            SetLastError(0xABCD);
            void *q = HeapReAlloc(h, fl, p[i], to);
            if (!q) {
                EXPECT(fl & HEAP_REALLOC_IN_PLACE_ONLY, "heap %d op %d: %zu -> %zu failed, LE %u", hi, op, sz[i], to,
                       (unsigned)GetLastError());
                EXPECT(to > sz[i], "heap %d op %d: in-place shrink %zu -> %zu failed", hi, op, sz[i], to);
                EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
                assert_int_equal(HeapSize(h, 0, p[i]), sz[i]);
                assert_int_equal(wh_test_check(p[i], sz[i], seed[i]), sz[i]);
                continue;
            }
            EXPECT_LE(0xABCD);
            if (fl & HEAP_REALLOC_IN_PLACE_ONLY) assert_ptr_equal(q, p[i]);
            EXPECT(aligned16(q), "%p", q);
            EXPECT(HeapSize(h, 0, q) == to, "op %d: HeapSize %zu, expected %zu", op, HeapSize(h, 0, q), to);
            size_t keep = MIN(sz[i], to);
            EXPECT(wh_test_check(q, keep, seed[i]) == keep, "heap %d op %d: %zu -> %zu lost byte %zu", hi, op, sz[i], to,
                   wh_test_check(q, keep, seed[i]));
            if ((fl & HEAP_ZERO_MEMORY) && to > sz[i])
                EXPECT(wh_test_first_nonzero((char *)q + sz[i], to - sz[i]) == to - sz[i], "op %d: growth not zeroed", op);
            p[i] = q;
            sz[i] = to;
            seed[i] = (unsigned)op;
            wh_test_fill(q, to, seed[i]);
            if (op % 500 == 499) {
                for (int j = 0; j < N; j++)
                    EXPECT(wh_test_check(p[j], sz[j], seed[j]) == sz[j], "heap %d op %d: block %d damaged", hi, op, j);
                assert_true(HeapValidate(h, 0, NULL));
            }
        }
        for (int j = 0; j < N; j++) {
            assert_int_equal(wh_test_check(p[j], sz[j], seed[j]), sz[j]);
            assert_true(HeapFree(h, 0, p[j]));
        }
        assert_true(HeapValidate(h, 0, NULL));
    }
    assert_true(HeapDestroy(heaps[0]));
    assert_true(HeapDestroy(heaps[2]));
}

int main(void) {
    setenv("WINHEAP_TERMINATE_ON_CORRUPTION", "0", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_realloc_null_pointer),
        cmocka_unit_test(test_realloc_size_zero),
        cmocka_unit_test(test_realloc_preserves_contents),
        cmocka_unit_test(test_realloc_zero_growth),
        cmocka_unit_test(test_realloc_shrink_then_grow_zero),
        cmocka_unit_test(test_realloc_in_place_shrink_always),
        cmocka_unit_test(test_realloc_in_place_grow_failure),
        cmocka_unit_test(test_realloc_huge_fails_keeps_original),
        cmocka_unit_test(test_realloc_fixed_heap_limits),
        cmocka_unit_test(test_realloc_small_large_transitions),
        cmocka_unit_test(test_realloc_flag_bits_ignored),
        cmocka_unit_test(test_realloc_stale_and_foreign_pointers),
        cmocka_unit_test(test_realloc_growth_takes_room),
        cmocka_unit_test(test_realloc_random_workload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
