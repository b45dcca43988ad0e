/*
 * test_api_alloc.c - conformance tests for GetProcessHeap, GetProcessHeaps,
 * HeapCreate, HeapDestroy, HeapAlloc, HeapFree, HeapSize and
 * GetLastError/SetLastError (SPEC 2.1-2.5, 2.7, 2.8, 3, 5 and decisions D2,
 * D3, D4, D7, D9, D10, D17).  It checks handles (64 KiB alignment, bad,
 * destroyed and NULL handles on every function), creation flags and sizes
 * (ignored bits, initial > max, fixed-heap limits), block sizes and alignment
 * (0 bytes, 16-byte alignment, exact HeapSize, HEAP_ZERO_MEMORY, sizes near
 * SIZE_MAX), large blocks, bad block pointers (foreign, freed, interior) with
 * termination-on-corruption OFF, the heap list, thread-local last error,
 * release of every mapping by HeapDestroy, and executable heaps.
 * HeapReAlloc is covered by test_api_realloc.c.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>
#include <winheap.h>

#include "test_util.h"

#define KiB ((SIZE_T)1024)
#define MiB ((SIZE_T)1024 * 1024)
#define BAD_SIZE ((SIZE_T)-1)


static int g_static_var = 12345;

static int aligned(const void *p, uintptr_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

/* ---- exception handler used to observe a kept HEAP_GENERATE_EXCEPTIONS ---- */
static jmp_buf g_jb;
static volatile DWORD g_exc_status;
static volatile SIZE_T g_exc_size;
static HANDLE volatile g_exc_heap;
static volatile int g_exc_count;
static void recording_handler(DWORD status, HANDLE heap, DWORD flags, SIZE_T size) {
    (void)flags;
    g_exc_status = status;
    g_exc_heap = heap;
    g_exc_size = size;
    g_exc_count++;
    longjmp(g_jb, 1);
}

/* ------------------------------------------------------------------ */

static void *thread_get_process_heap(void *arg) { (void)arg; return GetProcessHeap(); }

static void test_process_heap_basics(void **state) {
    (void)state;
    HANDLE ph = GetProcessHeap();
    assert_non_null(ph);
    assert_ptr_equal(ph, GetProcessHeap());
    EXPECT(aligned(ph, 0x10000), "process heap %p not 64 KiB aligned", ph);
    pthread_t t;
    void *other = NULL;
    assert_int_equal(pthread_create(&t, NULL, thread_get_process_heap, NULL), 0);
    assert_int_equal(pthread_join(t, &other), 0);
    assert_ptr_equal(other, ph);
    HANDLE list[8];
    DWORD n = GetProcessHeaps(8, list);
    assert_true(n >= 1);
    assert_ptr_equal(list[0], ph);
    void *p = HeapAlloc(ph, 0, 100);
    assert_non_null(p);
    wh_test_fill(p, 100, 3);
    assert_int_equal(HeapSize(ph, 0, p), 100);
    assert_true(HeapValidate(ph, 0, p));
    assert_int_equal(wh_test_check(p, 100, 3), 100);
    assert_true(HeapFree(ph, 0, p));
}

static void test_create_handles_aligned(void **state) {
    (void)state;
    static const struct { DWORD fl; SIZE_T init, max; } kinds[] = {
        {0, 0, 0}, {0, 1, 0}, {0, 8 * MiB, 0}, {0, 0, 64 * KiB}, {0, 256 * KiB, 256 * KiB}, {0, 4096, 1 * MiB},
        {HEAP_NO_SERIALIZE, 0, 0}, {HEAP_GENERATE_EXCEPTIONS, 0, 0}, {HEAP_CREATE_ENABLE_EXECUTE, 0, 0},
        {HEAP_CREATE_ENABLE_EXECUTE, 0, 128 * KiB}, {0, 12345, 0}, {0, 0, 100000},
    };
    enum { N = sizeof kinds / sizeof kinds[0], R = 3 };
    HANDLE h[N * R];
    for (int r = 0; r < R; r++)
        for (int i = 0; i < (int)N; i++) {
            HANDLE x = HeapCreate(kinds[i].fl, kinds[i].init, kinds[i].max);
            EXPECT(x != NULL, "kind %d, LE %u", i, (unsigned)GetLastError());
            EXPECT(aligned(x, 0x10000), "kind %d handle %p", i, x);
            for (int j = 0; j < r * (int)N + i; j++) EXPECT(h[j] != x, "handle %p returned twice", x);
            h[r * N + i] = x;
            void *p = HeapAlloc(x, 0, 32);
            assert_non_null(p);
            assert_int_equal(HeapSize(x, 0, p), 32);
        }
    for (int i = 0; i < (int)(N * R); i++) assert_true(HeapDestroy(h[i]));
}

static void test_create_ignores_unknown_flags(void **state) {
    (void)state;
    static const DWORD ignored[] = {
        HEAP_GROWABLE, HEAP_TAIL_CHECKING_ENABLED, HEAP_FREE_CHECKING_ENABLED, HEAP_DISABLE_COALESCE_ON_FREE,
        HEAP_CREATE_SEGMENT_HEAP, HEAP_CREATE_HARDENED, HEAP_CREATE_ALIGN_16, HEAP_CREATE_ENABLE_TRACING,
        HEAP_ZERO_MEMORY, HEAP_REALLOC_IN_PLACE_ONLY, 0x1000, 0x80000000u, 0x0FFEu << HEAP_TAG_SHIFT,
        HEAP_TAIL_CHECKING_ENABLED | HEAP_FREE_CHECKING_ENABLED | HEAP_CREATE_ALIGN_16 | HEAP_CREATE_SEGMENT_HEAP |
            HEAP_CREATE_HARDENED | HEAP_DISABLE_COALESCE_ON_FREE | HEAP_CREATE_ENABLE_TRACING | 0x7FF80000u,
    };
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) {
        HANDLE h = HeapCreate(ignored[i], 0, 0);
        EXPECT(h != NULL, "flags 0x%x refused, LE %u", (unsigned)ignored[i], (unsigned)GetLastError());
        void *p = HeapAlloc(h, 0, 1000);
        assert_non_null(p);
        wh_test_fill(p, 1000, 7);
        assert_int_equal(HeapSize(h, 0, p), 1000);
        /* Serialized growable heap (NO_SERIALIZE not set by an ignored bit): the LFH may be enabled. */
        ULONG v = 2;
        EXPECT(HeapSetInformation(h, HeapCompatibilityInformation, &v, sizeof v), "flags 0x%x, LE %u",
               (unsigned)ignored[i], (unsigned)GetLastError());
        assert_int_equal(wh_test_check(p, 1000, 7), 1000);
        assert_true(HeapFree(h, 0, p));
        assert_true(HeapDestroy(h));
    }
    /* [OBS] TAIL|FREE|NO_SERIALIZE gives a NO_SERIALIZE heap: NO_SERIALIZE is kept (LFH refused, 87). */
    HANDLE h = HeapCreate(HEAP_TAIL_CHECKING_ENABLED | HEAP_FREE_CHECKING_ENABLED | HEAP_NO_SERIALIZE, 0, 0);
    assert_non_null(h);
    void *p = HeapAlloc(h, 0, 10);
    assert_non_null(p);
    ULONG v = 2;
    SetLastError(0);
    assert_false(HeapSetInformation(h, HeapCompatibilityInformation, &v, sizeof v));
    EXPECT_LE(ERROR_INVALID_PARAMETER);
    assert_true(HeapFree(h, 0, p));
    assert_true(HeapDestroy(h));
    /* GENERATE_EXCEPTIONS is kept, also among ignored bits. */
    h = HeapCreate(HEAP_GENERATE_EXCEPTIONS | HEAP_TAIL_CHECKING_ENABLED | HEAP_CREATE_ALIGN_16, 0, 0);
    assert_non_null(h);
    winheap_exception_handler prev = winheap_set_exception_handler(recording_handler);
    g_exc_count = 0;
    if (setjmp(g_jb) == 0) {
        void *volatile q = HeapAlloc(h, 0, BAD_SIZE);
        winheap_set_exception_handler(prev);
        fail_msg("HeapAlloc(SIZE_MAX) on a GENERATE_EXCEPTIONS heap returned %p without an exception", q);
    }
    winheap_set_exception_handler(prev);
    assert_int_equal(g_exc_count, 1);
    assert_int_equal(g_exc_status, STATUS_NO_MEMORY);
    assert_ptr_equal(g_exc_heap, h);
    assert_true(g_exc_size == BAD_SIZE);
    assert_true(HeapValidate(h, 0, NULL));
    assert_true(HeapDestroy(h));
}

static void test_create_bad_sizes(void **state) {
    (void)state;
    static const SIZE_T pairs[][2] = {
        {2 * MiB, 1 * MiB}, {128 * KiB, 64 * KiB}, {1 * MiB, 4096}, {BAD_SIZE, 1 * MiB}, {256 * KiB + 4096, 256 * KiB},
    };
    DWORD before = GetProcessHeaps(0, NULL);
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        SetLastError(0);
        HANDLE h = HeapCreate(0, pairs[i][0], pairs[i][1]);
        EXPECT(h == NULL, "initial %zu > max %zu accepted", pairs[i][0], pairs[i][1]);
        EXPECT_LE(ERROR_INVALID_PARAMETER);
    }
    /* Sizes that cannot be reserved or committed: NULL, LE 8, no wrap when rounding up to pages. */
    for (SIZE_T k = 0; k < 4096 + 32; k += 1 + k / 8) {
        SIZE_T big = BAD_SIZE - k;
        SetLastError(0);
        HANDLE h = HeapCreate(0, 0, big);
        EXPECT(h == NULL, "max %zx accepted", big);
        EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
        SetLastError(0);
        h = HeapCreate(0, big, 0);
        EXPECT(h == NULL, "initial %zx accepted", big);
        EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
        SetLastError(0);
        h = HeapCreate(0, big, big);
        EXPECT(h == NULL, "initial=max=%zx accepted", big);
        EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
    }
    SetLastError(0);
    assert_null(HeapCreate(0, (SIZE_T)1 << 62, 0));
    EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
    assert_int_equal(GetProcessHeaps(0, NULL), before);
    /* initial == max is fine, initial 0 with a max is fine. */
    HANDLE h = HeapCreate(0, 64 * KiB, 64 * KiB);
    assert_non_null(h);
    assert_true(HeapDestroy(h));
}

static void test_fixed_256k_one_block(void **state) {
    (void)state;
    const SIZE_T want = 256 * KiB - 0xC00;
    const SIZE_T inits[] = {256 * KiB, 0};
    for (int i = 0; i < 2; i++) {
        HANDLE h = HeapCreate(0, inits[i], 256 * KiB);
        assert_non_null(h);
        for (int round = 0; round < 2; round++) {
            void *p = HeapAlloc(h, 0, want);
            EXPECT(p != NULL, "init %zu round %d: 256K-0xC00 refused, LE %u", inits[i], round,
                   (unsigned)GetLastError());
            EXPECT(aligned(p, 16), "%p", p);
            EXPECT((char *)p >= (char *)h && (char *)p + want <= (char *)h + 256 * KiB,
                   "block %p outside the fixed reservation at %p", p, h);
            assert_int_equal(HeapSize(h, 0, p), want);
            wh_test_fill(p, want, 11);
            SetLastError(0);
            assert_null(HeapAlloc(h, 0, 256 * KiB));
            EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
            assert_int_equal(wh_test_check(p, want, 11), want);
            assert_true(HeapValidate(h, 0, NULL));
            assert_true(HeapFree(h, 0, p));
        }
        SetLastError(0);
        assert_null(HeapAlloc(h, 0, 256 * KiB)); /* a request equal to the maximum never fits */
        EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
        assert_true(HeapDestroy(h));
    }
}

static void test_fixed_limit(void **state) {
    (void)state;
    static const SIZE_T refused[] = {WINHEAP_FIXED_LIMIT, WINHEAP_FIXED_LIMIT + 1, 0xFF000, 0x100000,
                                     0x200000, 0x3F0000, 0x400000, 0x1000000};
    const SIZE_T maxes[] = {4 * MiB, 16 * MiB};
    assert_int_equal(WINHEAP_FIXED_LIMIT, 0xFE000);
    for (int m = 0; m < 2; m++) {
        HANDLE h = HeapCreate(0, maxes[m] / 2, maxes[m]);
        assert_non_null(h);
        for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
            for (int z = 0; z < 2; z++) {
                SetLastError(0);
                void *p = HeapAlloc(h, z ? HEAP_ZERO_MEMORY : 0, refused[i]);
                EXPECT(p == NULL, "fixed heap (max %zu) served %zx bytes", maxes[m], refused[i]);
                EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
            }
        void *a = HeapAlloc(h, 0, WINHEAP_FIXED_LIMIT - 16);
        EXPECT(a != NULL, "0xFE000-16 refused, LE %u", (unsigned)GetLastError());
        void *b = HeapAlloc(h, HEAP_ZERO_MEMORY, WINHEAP_FIXED_LIMIT - 1);
        EXPECT(b != NULL, "0xFDFFF refused, LE %u", (unsigned)GetLastError());
        assert_true(aligned(a, 16) && aligned(b, 16));
        assert_int_equal(HeapSize(h, 0, a), WINHEAP_FIXED_LIMIT - 16);
        assert_int_equal(HeapSize(h, 0, b), WINHEAP_FIXED_LIMIT - 1);
        assert_int_equal(wh_test_first_nonzero(b, WINHEAP_FIXED_LIMIT - 1), WINHEAP_FIXED_LIMIT - 1);
        wh_test_fill(a, WINHEAP_FIXED_LIMIT - 16, 1);
        wh_test_fill(b, WINHEAP_FIXED_LIMIT - 1, 2);
        assert_int_equal(wh_test_check(a, WINHEAP_FIXED_LIMIT - 16, 1), WINHEAP_FIXED_LIMIT - 16);
        assert_true(HeapFree(h, 0, a));
        assert_true(HeapFree(h, 0, b));
        assert_true(HeapDestroy(h));
    }
    /* Too small for the request: NULL, LE 8. */
    HANDLE h = HeapCreate(0, 0, 64 * KiB);
    assert_non_null(h);
    SetLastError(0);
    assert_null(HeapAlloc(h, 0, 64 * KiB));
    EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
    SetLastError(0);
    assert_null(HeapAlloc(h, 0, WINHEAP_FIXED_LIMIT - 16));
    EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
    assert_true(HeapDestroy(h));
}

static void test_fixed_heap_fills_and_recovers(void **state) {
    (void)state;
    static void *blk[1024];
    HANDLE h = HeapCreate(0, 0, 1 * MiB);
    assert_non_null(h);
    int n = 0;
    for (;;) {
        SetLastError(0);
        void *p = HeapAlloc(h, 0, 4096);
        if (!p) break;
        EXPECT((char *)p >= (char *)h && (char *)p + 4096 <= (char *)h + 1 * MiB,
               "block %p outside the 1 MiB reservation at %p", p, h);
        wh_test_fill(p, 4096, (unsigned)n);
        blk[n++] = p;
        EXPECT(n < 1024, "fixed 1 MiB heap served %d 4 KiB blocks", n);
    }
    EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
    EXPECT(n >= 200, "fixed 1 MiB heap served only %d 4 KiB blocks", n);
    for (int i = 0; i < n; i++) EXPECT(wh_test_check(blk[i], 4096, (unsigned)i) == 4096, "block %d damaged", i);
    assert_true(HeapValidate(h, 0, NULL));
    assert_true(HeapFree(h, 0, blk[n / 2]));
    blk[n / 2] = HeapAlloc(h, 0, 4096);
    EXPECT(blk[n / 2] != NULL, "freed space not reusable, LE %u", (unsigned)GetLastError());
    for (int i = 0; i < n; i++) assert_true(HeapFree(h, 0, blk[i]));
    int n2 = 0;
    while (n2 < 1024 && (blk[n2] = HeapAlloc(h, 0, 4096)) != NULL) n2++;
    EXPECT(n2 >= n, "after freeing everything only %d of %d blocks fit", n2, n);
    assert_true(HeapDestroy(h));
}

static void test_growable_large_blocks(void **state) {
    (void)state;
    static const SIZE_T sizes[] = {0xFDFF0, 0xFE000, 0xFEFFF, 0xFF000, 0xFF001, 0x100000, 0x100001,
                                   3 * MiB + 5, 8 * MiB, 32 * MiB + 17};
    enum { N = sizeof sizes / sizeof sizes[0] };
    HANDLE heaps[2] = {HeapCreate(0, 0, 0), GetProcessHeap()};
    assert_non_null(heaps[0]);
    assert_int_equal(WINHEAP_LARGE_THRESHOLD, 0xFF000);
    for (int hi = 0; hi < 2; hi++) {
        HANDLE h = heaps[hi];
        void *p[N];
        for (int i = 0; i < (int)N; i++) {
            p[i] = HeapAlloc(h, 0, sizes[i]);
            EXPECT(p[i] != NULL, "heap %d size %zx refused, LE %u", hi, sizes[i], (unsigned)GetLastError());
            EXPECT(aligned(p[i], 16), "size %zx at %p", sizes[i], p[i]);
            EXPECT(HeapSize(h, 0, p[i]) == sizes[i], "size %zx: HeapSize %zx", sizes[i], HeapSize(h, 0, p[i]));
            assert_true(HeapValidate(h, 0, p[i]));
            wh_test_fill(p[i], sizes[i], (unsigned)i);
        }
        for (int i = 0; i < (int)N; i++)
            EXPECT(wh_test_check(p[i], sizes[i], (unsigned)i) == sizes[i], "size %zx damaged", sizes[i]);
        assert_true(HeapValidate(h, 0, NULL));
        for (int i = 0; i < (int)N; i++) assert_true(HeapFree(h, 0, p[i]));
        /* a fresh zeroed large block after a dirty one of the same size */
        void *z = HeapAlloc(h, HEAP_ZERO_MEMORY, 2 * MiB);
        assert_non_null(z);
        assert_int_equal(wh_test_first_nonzero(z, 2 * MiB), 2 * MiB);
        assert_true(HeapFree(h, 0, z));
        assert_true(HeapValidate(h, 0, NULL));
    }
    assert_true(HeapDestroy(heaps[0]));
}

#define MAXWALK 256
typedef struct { PVOID lpData; DWORD cbData; BYTE cbOverhead, iRegionIndex; WORD wFlags; DWORD c, u; } walk_rec;
static int walk_heap(HANDLE h, walk_rec *out) {
    PROCESS_HEAP_ENTRY e;
    memset(&e, 0, sizeof e);
    int n = 0;
    while (HeapWalk(h, &e)) {
        EXPECT(n < MAXWALK, "more than %d walk entries", MAXWALK);
        walk_rec r = {e.lpData, e.cbData, e.cbOverhead, e.iRegionIndex, e.wFlags, 0, 0};
        if (e.wFlags & PROCESS_HEAP_REGION) { r.c = e.Region.dwCommittedSize; r.u = e.Region.dwUnCommittedSize; }
        out[n++] = r;
    }
    EXPECT_LE(ERROR_NO_MORE_ITEMS);
    return n;
}

static void test_large_block_released_and_heap_unchanged(void **state) {
    (void)state;
    static walk_rec w1[MAXWALK], w2[MAXWALK], w3[MAXWALK];
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    void *small[3] = {HeapAlloc(h, 0, 10), HeapAlloc(h, 0, 300), HeapAlloc(h, 0, 5000)};
    assert_true(small[0] && small[1] && small[2]);
    void *warm = HeapAlloc(h, 0, 2 * MiB); /* lets any lazily created bookkeeping exist first */
    assert_non_null(warm);
    assert_true(HeapFree(h, 0, warm));
    int n1 = walk_heap(h, w1);
    int m0 = wh_count_mappings();
    const SIZE_T sz = 2 * MiB + 3;
    void *p = HeapAlloc(h, 0, sz);
    assert_non_null(p);
    wh_test_fill(p, sz, 5);
    int n2 = walk_heap(h, w2);
    assert_int_equal(n2, n1 + 1);
    int found = 0;
    for (int i = 0; i < n2; i++)
        if (w2[i].lpData == p) {
            found++;
            assert_int_equal(w2[i].cbData, sz);
            assert_true(w2[i].wFlags & PROCESS_HEAP_ENTRY_BUSY);
            assert_int_equal(w2[i].iRegionIndex, 64);
        }
    assert_int_equal(found, 1);
    assert_true(HeapFree(h, 0, p));
    assert_int_equal(wh_count_mappings(), m0);
    char perms[5];
    EXPECT(!maps_perms((char *)p + sz / 2, perms), "large block %p still mapped (%s) after HeapFree", p, perms);
    int n3 = walk_heap(h, w3);
    assert_int_equal(n3, n1);
    for (int i = 0; i < n1; i++)
        EXPECT(!memcmp(&w1[i], &w3[i], sizeof w1[i]), "walk entry %d differs after alloc+free of a large block", i);
    assert_true(HeapDestroy(h));
}

static void test_zero_size_blocks(void **state) {
    (void)state;
    enum { N = 64 };
    HANDLE h0 = HeapCreate(0, 0, 0), h1 = HeapCreate(0, 0, 1 * MiB);
    HANDLE heaps[3] = {h0, h1, GetProcessHeap()};
    assert_true(h0 && h1);
    for (int hi = 0; hi < 3; hi++) {
        HANDLE h = heaps[hi];
        void *z[N], *o[N];
        for (int i = 0; i < N; i++) {
            z[i] = HeapAlloc(h, i & 1 ? HEAP_ZERO_MEMORY : 0, 0);
            o[i] = HeapAlloc(h, 0, 1);
            EXPECT(z[i] != NULL, "heap %d: HeapAlloc(h,0,0) NULL, LE %u", hi, (unsigned)GetLastError());
            assert_non_null(o[i]);
            EXPECT(aligned(z[i], 16), "%p", z[i]);
            assert_int_equal(HeapSize(h, 0, z[i]), 0);
            assert_true(HeapValidate(h, 0, z[i]));
            *(volatile uint8_t *)o[i] = 0xEE;
        }
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                EXPECT(i == j || z[i] != z[j], "zero-size block %p returned twice", z[i]);
                EXPECT(z[i] != o[j], "zero-size block %p equals a 1-byte block", z[i]);
            }
        for (int i = 0; i < N; i++) {
            assert_true(HeapFree(h, 0, z[i]));
            SetLastError(0);
            assert_true(HeapSize(h, 0, z[i]) == BAD_SIZE);
            EXPECT_LE(ERROR_INVALID_PARAMETER);
            assert_int_equal(*(volatile uint8_t *)o[i], 0xEE);
            assert_true(HeapFree(h, 0, o[i]));
        }
        assert_true(HeapValidate(h, 0, NULL));
    }
    assert_true(HeapDestroy(h0));
    assert_true(HeapDestroy(h1));
}

static void test_alignment_sizes_no_overlap(void **state) {
    (void)state;
    static const SIZE_T extra[] = {4095, 4096, 4097, 8191, 8192, 16383, 16384, 16385, 65535, 65536, 65537,
                                   0x7FFF8, 0xFDFF0};
    enum { NSMALL = 1100, NEXTRA = sizeof extra / sizeof extra[0], N = NSMALL + NEXTRA };
    static void *p[N];
    static SIZE_T sz[N];
    HANDLE heaps[4] = {GetProcessHeap(), HeapCreate(0, 0, 0), HeapCreate(0, 0, 8 * MiB),
                       HeapCreate(HEAP_NO_SERIALIZE, 0, 0)};
    assert_true(heaps[1] && heaps[2] && heaps[3]);
    uint64_t rs = 42;
    for (int hi = 0; hi < 4; hi++) {
        HANDLE h = heaps[hi];
        for (int i = 0; i < N; i++) {
            sz[i] = i < NSMALL ? (SIZE_T)i : extra[i - NSMALL];
            p[i] = HeapAlloc(h, 0, sz[i]);
            EXPECT(p[i] != NULL, "heap %d size %zu refused, LE %u", hi, sz[i], (unsigned)GetLastError());
            EXPECT(aligned(p[i], 16), "heap %d size %zu at %p", hi, sz[i], p[i]);
            EXPECT(HeapSize(h, 0, p[i]) == sz[i], "heap %d size %zu: HeapSize %zu", hi, sz[i], HeapSize(h, 0, p[i]));
            wh_test_fill(p[i], sz[i], (unsigned)i);
        }
        for (int i = 0; i < N; i++)
            EXPECT(wh_test_check(p[i], sz[i], (unsigned)i) == sz[i], "heap %d: block of %zu at %p overwritten", hi, sz[i], p[i]);
        assert_true(HeapValidate(h, 0, NULL));
        for (int i = N - 1; i > 0; i--) { /* free in random order */
            int j = (int)(wh_rand(&rs) % (uint64_t)(i + 1));
            void *t = p[i]; p[i] = p[j]; p[j] = t;
        }
        for (int i = 0; i < N; i++) EXPECT(HeapFree(h, 0, p[i]), "heap %d free %p", hi, p[i]);
        assert_true(HeapValidate(h, 0, NULL));
    }
    for (int hi = 1; hi < 4; hi++) assert_true(HeapDestroy(heaps[hi]));
}

static void test_zero_memory(void **state) {
    (void)state;
    static const SIZE_T sizes[] = {1, 7, 16, 24, 100, 1000, 4000, 4096, 20000, 70000, 500000, 0xFF000, 2 * MiB};
    HANDLE heaps[3] = {HeapCreate(0, 0, 0), GetProcessHeap(), HeapCreate(0, 0, 4 * MiB)};
    assert_true(heaps[0] && heaps[2]);
    for (int hi = 0; hi < 3; hi++)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            SIZE_T s = sizes[i];
            if (hi == 2 && s >= WINHEAP_FIXED_LIMIT) continue;
            for (int r = 0; r < 3; r++) {
                void *p = HeapAlloc(heaps[hi], 0, s);
                assert_non_null(p);
                memset(p, 0xCD, s);
                assert_true(HeapFree(heaps[hi], 0, p));
                p = HeapAlloc(heaps[hi], r == 2 ? HEAP_ZERO_MEMORY | 0x100 : HEAP_ZERO_MEMORY, s);
                assert_non_null(p);
                size_t nz = wh_test_first_nonzero(p, s);
                EXPECT(nz == s, "heap %d size %zu: byte %zu not zeroed", hi, s, nz);
                memset(p, 0xCD, s);
                assert_true(HeapFree(heaps[hi], 0, p));
            }
        }
    assert_true(HeapDestroy(heaps[0]));
    assert_true(HeapDestroy(heaps[2]));
}

static void test_huge_sizes_fail_cleanly(void **state) {
    (void)state;
    HANDLE heaps[4] = {HeapCreate(0, 0, 0), HeapCreate(0, 0, 1 * MiB), GetProcessHeap(),
                       HeapCreate(HEAP_NO_SERIALIZE, 0, 0)};
    assert_true(heaps[0] && heaps[1] && heaps[3]);
    void *keep = HeapAlloc(heaps[0], 0, 64);
    assert_non_null(keep);
    wh_test_fill(keep, 64, 9);
    for (int hi = 0; hi < 4; hi++) { /* commit what a 100-byte block needs before the baseline */
        void *q = HeapAlloc(heaps[hi], 0, 100);
        assert_non_null(q);
        assert_true(HeapFree(heaps[hi], 0, q));
    }
    int m0 = wh_count_mappings();
    for (int hi = 0; hi < 4; hi++) {
        HANDLE h = heaps[hi];
        for (SIZE_T k = 0; k <= 4096; k++) {
            const SIZE_T s[2] = {SIZE_MAX - k, (SIZE_T)PTRDIFF_MAX + k};
            for (int j = 0; j < 2; j++)
                for (int z = 0; z < 2; z++) {
                    SetLastError(0);
                    void *p = HeapAlloc(h, z ? HEAP_ZERO_MEMORY : 0, s[j]);
                    EXPECT(p == NULL, "heap %d: HeapAlloc(%zx) returned %p", hi, s[j], p);
                    EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
                }
        }
        static const SIZE_T more[] = {(SIZE_T)1 << 47, (SIZE_T)1 << 48, (SIZE_T)1 << 56, (SIZE_T)1 << 62,
                                      (SIZE_T)PTRDIFF_MAX, (SIZE_T)PTRDIFF_MAX - 4096, (SIZE_T)PTRDIFF_MAX - 15};
        for (size_t j = 0; j < sizeof more / sizeof more[0]; j++) {
            SetLastError(0);
            void *p = HeapAlloc(h, 0, more[j]);
            EXPECT(p == NULL, "heap %d: HeapAlloc(%zx) returned %p", hi, more[j], p);
            EXPECT_LE(ERROR_NOT_ENOUGH_MEMORY);
        }
        assert_true(HeapValidate(h, 0, NULL));
        void *q = HeapAlloc(h, 0, 100);
        assert_non_null(q);
        assert_true(HeapFree(h, 0, q));
    }
    assert_int_equal(wh_count_mappings(), m0);
    assert_int_equal(wh_test_check(keep, 64, 9), 64);
    assert_int_equal(HeapSize(heaps[0], 0, keep), 64);
    for (int hi = 0; hi < 4; hi++) if (hi != 2) assert_true(HeapDestroy(heaps[hi]));
}

static void test_call_flag_bits_ignored(void **state) {
    (void)state;
    static const DWORD fl[] = {HEAP_GROWABLE, HEAP_REALLOC_IN_PLACE_ONLY, HEAP_TAIL_CHECKING_ENABLED,
                               HEAP_FREE_CHECKING_ENABLED, HEAP_DISABLE_COALESCE_ON_FREE, 0x100, 0x200, 0xC00,
                               0x1000, HEAP_CREATE_ALIGN_16, HEAP_CREATE_ENABLE_EXECUTE, 1u << HEAP_TAG_SHIFT,
                               0x0FFFu << HEAP_TAG_SHIFT, 0xFFFFFFF2u};
    HANDLE heaps[2] = {HeapCreate(0, 0, 0), GetProcessHeap()};
    assert_non_null(heaps[0]);
    for (int hi = 0; hi < 2; hi++)
        for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++) {
            HANDLE h = heaps[hi];
            void *p = HeapAlloc(h, fl[i], 40);
            EXPECT(p != NULL, "HeapAlloc flags 0x%x refused, LE %u", (unsigned)fl[i], (unsigned)GetLastError());
            assert_true(aligned(p, 16));
            wh_test_fill(p, 40, 1);
            EXPECT(HeapSize(h, fl[i], p) == 40, "HeapSize flags 0x%x", (unsigned)fl[i]);
            void *big = HeapAlloc(h, fl[i], 0x100000);
            assert_non_null(big);
            assert_int_equal(HeapSize(h, 0, big), 0x100000);
            assert_int_equal(wh_test_check(p, 40, 1), 40);
            EXPECT(HeapFree(h, fl[i], p), "HeapFree flags 0x%x", (unsigned)fl[i]);
            EXPECT(HeapFree(h, fl[i], big), "HeapFree flags 0x%x", (unsigned)fl[i]);
        }
    assert_true(HeapDestroy(heaps[0]));
}

static void test_free_null(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0), f = HeapCreate(0, 0, 64 * KiB), dead = HeapCreate(0, 0, 0);
    assert_true(h && f && dead);
    assert_true(HeapDestroy(dead));
    int local;
    HANDLE hs[] = {h, f, GetProcessHeap(), NULL, dead, (HANDLE)0xdead0000, (HANDLE)&local};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
        SetLastError(4242);
        EXPECT(HeapFree(hs[i], 0, NULL), "HeapFree(%p, 0, NULL) FALSE", hs[i]);
        EXPECT_LE(4242);
    }
    assert_true(HeapDestroy(h));
    assert_true(HeapDestroy(f));
}

/* Pointers that lie in no region of heap h (D4). */
static void test_foreign_pointers(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0), other = HeapCreate(0, 0, 0);
    assert_true(h && other);
    void *mine = HeapAlloc(h, 0, 48), *mine_large = HeapAlloc(h, 0, 2 * MiB);
    void *ob = HeapAlloc(other, 0, 48), *olarge = HeapAlloc(other, 0, 2 * MiB);
    void *pb = HeapAlloc(GetProcessHeap(), 0, 48);
    assert_true(mine && mine_large && ob && olarge && pb);
    wh_test_fill(mine, 48, 1); wh_test_fill(ob, 48, 2); wh_test_fill(olarge, 2 * MiB, 3); wh_test_fill(pb, 48, 4);
    char stackbuf[64];
    wh_test_fill(stackbuf, sizeof stackbuf, 5);
    long pg = sysconf(_SC_PAGESIZE);
    char *rw = mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(rw != MAP_FAILED);
    wh_test_fill(rw, (size_t)pg, 6);
    assert_int_equal(munmap(rw + pg, (size_t)pg), 0); /* rw+pg is now unmapped */
    char *m = malloc(64);
    assert_non_null(m);
    wh_test_fill(m, 64, 7);
    void *ptrs[] = {stackbuf, stackbuf + 16, &g_static_var, rw, rw + 16, rw + pg, rw + pg + 32, (void *)1,
                    (void *)16, (void *)0x1000, ob, (char *)ob + 16, olarge, (char *)olarge + 4096, pb, m,
                    (void *)(uintptr_t)test_foreign_pointers, (void *)other, (char *)other + 64,
                    (void *)(uintptr_t)0xdead0000, (void *)(uintptr_t)0x7ffffffff000ull};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) {
        void *x = ptrs[i];
        SetLastError(0);
        EXPECT(!HeapFree(h, 0, x), "HeapFree(foreign #%zu %p) TRUE", i, x);
        EXPECT_LE(ERROR_INVALID_PARAMETER);
        SetLastError(0);
        EXPECT(HeapSize(h, 0, x) == BAD_SIZE, "HeapSize(foreign #%zu %p)", i, x);
        EXPECT_LE(ERROR_INVALID_PARAMETER);
        for (int z = 0; z < 2; z++) {
            SetLastError(0);
            void *r = HeapReAlloc(h, z ? HEAP_ZERO_MEMORY : 0, x, z ? 4096 : 8);
            EXPECT(r == NULL, "HeapReAlloc(foreign #%zu %p) returned %p", i, x, r);
            EXPECT_LE(ERROR_INVALID_PARAMETER);
        }
        SetLastError(4321);
        EXPECT(!HeapValidate(h, 0, x), "HeapValidate(foreign #%zu %p) TRUE", i, x);
        EXPECT_LE(4321);
        EXPECT(HeapValidate(h, 0, NULL), "heap invalid after foreign #%zu %p", i, x);
    }
    /* nothing changed */
    assert_int_equal(wh_test_check(stackbuf, sizeof stackbuf, 5), sizeof stackbuf);
    assert_int_equal(wh_test_check(rw, (size_t)pg, 6), (size_t)pg);
    assert_int_equal(wh_test_check(m, 64, 7), 64);
    assert_int_equal(wh_test_check(ob, 48, 2), 48);
    assert_int_equal(wh_test_check(olarge, 2 * MiB, 3), 2 * MiB);
    assert_int_equal(wh_test_check(pb, 48, 4), 48);
    assert_int_equal(wh_test_check(mine, 48, 1), 48);
    assert_int_equal(g_static_var, 12345);
    assert_int_equal(HeapSize(other, 0, ob), 48);
    assert_int_equal(HeapSize(other, 0, olarge), 2 * MiB);
    assert_true(HeapValidate(other, 0, NULL));
    assert_true(HeapFree(other, 0, ob));
    assert_true(HeapFree(other, 0, olarge));
    assert_true(HeapFree(GetProcessHeap(), 0, pb));
    assert_true(HeapFree(h, 0, mine));
    assert_true(HeapFree(h, 0, mine_large));
    free(m);
    munmap(rw, (size_t)pg);
    assert_true(HeapDestroy(h));
    assert_true(HeapDestroy(other));
}

/* Fails with LE 87 for a pointer inside h that is not a live block start (TOC off). */
static void expect_bad_block(HANDLE h, void *x, const char *what) {
    SetLastError(0);
    EXPECT(!HeapFree(h, 0, x), "HeapFree(%s %p) TRUE", what, x);
    EXPECT_LE(ERROR_INVALID_PARAMETER);
    SetLastError(0);
    EXPECT(HeapSize(h, 0, x) == BAD_SIZE, "HeapSize(%s %p)", what, x);
    EXPECT_LE(ERROR_INVALID_PARAMETER);
    SetLastError(0);
    void *r = HeapReAlloc(h, 0, x, 200);
    EXPECT(r == NULL, "HeapReAlloc(%s %p) returned %p", what, x, r);
    EXPECT_LE(ERROR_INVALID_PARAMETER);
    SetLastError(777);
    EXPECT(!HeapValidate(h, 0, x), "HeapValidate(%s %p) TRUE", what, x);
    EXPECT_LE(777);
    EXPECT(HeapValidate(h, 0, NULL), "heap invalid after %s %p", what, x);
}

static int cmp_ptr(const void *a, const void *b) {
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* n live blocks: all distinct and non-overlapping (sizes sz[i]). */
static void expect_disjoint(void **p, const SIZE_T *sz, int n) {
    static uintptr_t sorted[2048];
    assert_true(n <= 2048);
    for (int i = 0; i < n; i++) wh_test_fill(p[i], sz[i], (unsigned)i + 100);
    for (int i = 0; i < n; i++)
        EXPECT(wh_test_check(p[i], sz[i], (unsigned)i + 100) == sz[i], "block %d (%p, %zu) overlaps another", i, p[i], sz[i]);
    for (int i = 0; i < n; i++) sorted[i] = (uintptr_t)p[i];
    qsort(sorted, (size_t)n, sizeof sorted[0], cmp_ptr);
    for (int i = 1; i < n; i++) EXPECT(sorted[i] != sorted[i - 1], "pointer %p handed out twice", (void *)sorted[i]);
}

static void test_double_and_interior_free(void **state) {
    (void)state;
    static void *p[1200];
    static SIZE_T sz[1200];
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    /* warm the size classes (activates the LFH for 32 and 64 bytes) */
    int n = 0;
    for (int i = 0; i < 40; i++) { sz[n] = 32; p[n] = HeapAlloc(h, 0, 32); assert_non_null(p[n]); n++; }
    for (int i = 0; i < 40; i++) { sz[n] = 64; p[n] = HeapAlloc(h, 0, 64); assert_non_null(p[n]); n++; }
    void *a = p[5], *b = p[45];
    p[5] = p[--n]; sz[5] = sz[n];
    p[45] = p[--n]; sz[45] = sz[n];
    assert_true(HeapFree(h, 0, a));
    assert_true(HeapFree(h, 0, b));
    expect_bad_block(h, a, "double-freed 32");
    expect_bad_block(h, b, "double-freed 64");
    /* coalesced neighbours: c1 c2 c3, free c2 then c1, c2 is now inside a free block */
    void *c1 = HeapAlloc(h, 0, 3000), *c2 = HeapAlloc(h, 0, 3000), *c3 = HeapAlloc(h, 0, 3000);
    assert_true(c1 && c2 && c3);
    wh_test_fill(c3, 3000, 33);
    assert_true(HeapFree(h, 0, c2));
    assert_true(HeapFree(h, 0, c1));
    expect_bad_block(h, c2, "double-freed coalesced");
    expect_bad_block(h, c1, "double-freed 3000");
    /* interior pointers of live blocks */
    void *r = HeapAlloc(h, 0, 256), *L = HeapAlloc(h, 0, 3 * MiB);
    assert_true(r && L);
    wh_test_fill(r, 256, 44);
    wh_test_fill(L, 3 * MiB, 45);
    static const size_t roff[] = {1, 8, 15, 16, 32, 128, 255, 256};
    for (size_t i = 0; i < sizeof roff / sizeof roff[0]; i++) expect_bad_block(h, (char *)r + roff[i], "interior");
    static const size_t loff[] = {1, 16, 4096, MiB, 3 * MiB - 16};
    for (size_t i = 0; i < sizeof loff / sizeof loff[0]; i++) expect_bad_block(h, (char *)L + loff[i], "large interior");
    /* the heap's own control area */
    static const size_t hoff[] = {0, 16, 0x1000, 0x80000};
    for (size_t i = 0; i < sizeof hoff / sizeof hoff[0]; i++) expect_bad_block(h, (char *)h + hoff[i], "control area");
    assert_int_equal(HeapSize(h, 0, r), 256);
    assert_int_equal(wh_test_check(r, 256, 44), 256);
    assert_int_equal(HeapSize(h, 0, L), 3 * MiB);
    assert_int_equal(wh_test_check(L, 3 * MiB, 45), 3 * MiB);
    assert_int_equal(wh_test_check(c3, 3000, 33), 3000);
    /* double free of a large block */
    void *L2 = HeapAlloc(h, 0, 2 * MiB);
    assert_non_null(L2);
    assert_true(HeapFree(h, 0, L2));
    expect_bad_block(h, L2, "double-freed large");
    /* later allocations never hand out a live pointer twice */
    sz[n] = 256; p[n++] = r;
    sz[n] = 3000; p[n++] = c3;
    for (int i = 0; i < 300; i++) { sz[n] = 32; p[n] = HeapAlloc(h, 0, 32); assert_non_null(p[n]); n++; }
    for (int i = 0; i < 300; i++) { sz[n] = 64; p[n] = HeapAlloc(h, 0, 64); assert_non_null(p[n]); n++; }
    for (int i = 0; i < 100; i++) { sz[n] = 3000; p[n] = HeapAlloc(h, 0, 3000); assert_non_null(p[n]); n++; }
    uint64_t rs = 7;
    for (int i = 0; i < 200; i++) {
        sz[n] = 1 + (SIZE_T)(wh_rand(&rs) % 5000);
        p[n] = HeapAlloc(h, 0, sz[n]);
        assert_non_null(p[n]);
        n++;
    }
    sz[n] = 2 * MiB; p[n] = HeapAlloc(h, 0, 2 * MiB); assert_non_null(p[n]); n++;
    expect_disjoint(p, sz, n);
    for (int i = 0; i < n; i++) EXPECT(p[i] != L, "live large block %p handed out again", L);
    assert_true(HeapValidate(h, 0, NULL));
    for (int i = 0; i < n; i++) EXPECT(HeapFree(h, 0, p[i]), "free #%d %p", i, p[i]);
    assert_true(HeapFree(h, 0, L));
    assert_true(HeapValidate(h, 0, NULL));
    assert_true(HeapDestroy(h));
}

static void test_heapsize_exact_and_failure(void **state) {
    (void)state;
    static const SIZE_T sizes[] = {0, 1, 17, 123, 456, 1000, 4096, 65536, 1 * MiB, 0xFF000, 5 * MiB + 1};
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    void *p[sizeof sizes / sizeof sizes[0]];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        p[i] = HeapAlloc(h, 0, sizes[i]);
        assert_non_null(p[i]);
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        SetLastError(99);
        EXPECT(HeapSize(h, 0, p[i]) == sizes[i], "size %zu: HeapSize %zu", sizes[i], HeapSize(h, 0, p[i]));
        EXPECT_LE(99);
    }
    SetLastError(0);
    assert_true(HeapSize(h, 0, NULL) == BAD_SIZE);
    EXPECT_LE(ERROR_INVALID_PARAMETER);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        assert_true(HeapFree(h, 0, p[i]));
        SetLastError(0);
        EXPECT(HeapSize(h, 0, p[i]) == BAD_SIZE, "freed block of %zu", sizes[i]);
        EXPECT_LE(ERROR_INVALID_PARAMETER);
    }
    assert_true(HeapDestroy(h));
}

static void test_bad_handles_every_function(void **state) {
    (void)state;
    HANDLE live = HeapCreate(0, 0, 0);
    assert_non_null(live);
    void *blk = HeapAlloc(live, 0, 64);
    assert_non_null(blk);
    wh_test_fill(blk, 64, 8);
    HANDLE dead = HeapCreate(0, 0, 0);
    assert_non_null(dead);
    void *dead_blk = HeapAlloc(dead, 0, 64);
    assert_non_null(dead_blk);
    assert_true(HeapDestroy(dead));
    int local = 0;
    void *pblk = HeapAlloc(GetProcessHeap(), 0, 64);
    assert_non_null(pblk);
    HANDLE bad[] = {NULL, dead, (HANDLE)0xdead0000, (HANDLE)(uintptr_t)0x100000000ull, (HANDLE)1,
                    (HANDLE)((char *)live + 8), (HANDLE)((char *)live + 0x10000), (HANDLE)&local,
                    (HANDLE)&g_static_var, (HANDLE)blk, (HANDLE)pblk, (HANDLE)(uintptr_t)-65536};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        HANDLE b = bad[i];
        void *ptr = b == dead ? dead_blk : blk;
        SetLastError(0);
        EXPECT(HeapAlloc(b, 0, 16) == NULL, "HeapAlloc(bad #%zu %p)", i, b);
        EXPECT_LE(ERROR_INVALID_HANDLE);
        SetLastError(0);
        EXPECT(HeapAlloc(b, HEAP_ZERO_MEMORY, 2 * MiB) == NULL, "HeapAlloc large (bad #%zu %p)", i, b);
        EXPECT_LE(ERROR_INVALID_HANDLE);
        SetLastError(0);
        EXPECT(HeapReAlloc(b, 0, ptr, 128) == NULL, "HeapReAlloc(bad #%zu %p)", i, b);
        EXPECT_LE(ERROR_INVALID_HANDLE);
        SetLastError(0);
        EXPECT(!HeapFree(b, 0, ptr), "HeapFree(bad #%zu %p)", i, b);
        EXPECT_LE(ERROR_INVALID_HANDLE);
        EXPECT(HeapFree(b, 0, NULL), "HeapFree(bad #%zu %p, NULL)", i, b);
        SetLastError(0);
        EXPECT(HeapSize(b, 0, ptr) == BAD_SIZE, "HeapSize(bad #%zu %p)", i, b);
        EXPECT_LE(ERROR_INVALID_HANDLE);
        SetLastError(0);
        EXPECT(!HeapDestroy(b), "HeapDestroy(bad #%zu %p)", i, b);
        EXPECT_LE(ERROR_INVALID_HANDLE);
        EXPECT(!HeapValidate(b, 0, NULL), "HeapValidate(bad #%zu %p)", i, b);
    }
    assert_int_equal(HeapSize(live, 0, blk), 64);
    assert_int_equal(wh_test_check(blk, 64, 8), 64);
    assert_int_equal(local, 0);
    assert_int_equal(g_static_var, 12345);
    assert_true(HeapValidate(live, 0, NULL));
    assert_true(HeapFree(GetProcessHeap(), 0, pblk));
    assert_true(HeapFree(live, 0, blk));
    assert_true(HeapDestroy(live));
}

static void test_destroy_semantics(void **state) {
    (void)state;
    HANDLE ph = GetProcessHeap();
    void *keep = HeapAlloc(ph, 0, 77);
    assert_non_null(keep);
    wh_test_fill(keep, 77, 12);
    DWORD count = GetProcessHeaps(0, NULL);
    SetLastError(0);
    assert_false(HeapDestroy(ph));
    EXPECT_LE(ERROR_INVALID_HANDLE);
    SetLastError(0);
    assert_false(HeapDestroy(NULL));
    EXPECT_LE(ERROR_INVALID_HANDLE);
    assert_int_equal(GetProcessHeaps(0, NULL), count);
    assert_ptr_equal(GetProcessHeap(), ph);
    assert_int_equal(HeapSize(ph, 0, keep), 77);
    assert_int_equal(wh_test_check(keep, 77, 12), 77);
    void *q = HeapAlloc(ph, 0, 3 * MiB);
    assert_non_null(q);
    assert_true(HeapFree(ph, 0, q));
    assert_true(HeapFree(ph, 0, keep));
    assert_true(HeapValidate(ph, 0, NULL));
    /* a private heap with live blocks (small and large) is destroyed; a second destroy fails */
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    assert_non_null(HeapAlloc(h, 0, 10));
    assert_non_null(HeapAlloc(h, 0, 2 * MiB));
    SetLastError(31337);
    assert_true(HeapDestroy(h));
    EXPECT_LE(31337);
    SetLastError(0);
    assert_false(HeapDestroy(h));
    EXPECT_LE(ERROR_INVALID_HANDLE);
}

static void test_get_process_heaps(void **state) {
    (void)state;
    const HANDLE SENT = (HANDLE)(uintptr_t)0x5A5A5A5A5A5A5A50ull;
    HANDLE buf[64], full[64];
    DWORD base = GetProcessHeaps(0, NULL);
    assert_true(base >= 1 && base < 50);
    HANDLE h[4];
    for (int i = 0; i < 3; i++) {
        h[i] = HeapCreate(i == 1 ? HEAP_NO_SERIALIZE : 0, 0, i == 2 ? 1 * MiB : 0);
        assert_non_null(h[i]);
        assert_int_equal(GetProcessHeaps(0, NULL), base + (DWORD)i + 1);
    }
    for (int i = 0; i < 64; i++) full[i] = SENT;
    SetLastError(555);
    assert_int_equal(GetProcessHeaps(64, full), base + 3);
    EXPECT_LE(555);
    assert_ptr_equal(full[0], GetProcessHeap());
    for (int i = 0; i < 3; i++) assert_ptr_equal(full[base + (DWORD)i], h[i]);
    assert_ptr_equal(full[base + 3], SENT);
    for (DWORD i = 0; i < base + 3; i++)
        for (DWORD j = 0; j < i; j++) EXPECT(full[i] != full[j], "heap %p listed twice", full[i]);
    /* truncation: min(total, n) written, the rest untouched */
    for (DWORD n = 0; n <= base + 4; n++) {
        for (int i = 0; i < 64; i++) buf[i] = SENT;
        assert_int_equal(GetProcessHeaps(n, buf), base + 3);
        DWORD w = n < base + 3 ? n : base + 3;
        for (DWORD i = 0; i < w; i++) EXPECT(buf[i] == full[i], "n=%u: slot %u is %p, not %p", n, i, buf[i], full[i]);
        for (DWORD i = w; i < 64; i++) EXPECT(buf[i] == SENT, "n=%u: slot %u written", n, i);
    }
    /* destroying the middle one keeps the order of the others; a new heap goes last */
    assert_true(HeapDestroy(h[1]));
    assert_int_equal(GetProcessHeaps(0, NULL), base + 2);
    h[3] = HeapCreate(0, 0, 0);
    assert_non_null(h[3]);
    assert_int_equal(GetProcessHeaps(64, buf), base + 3);
    assert_ptr_equal(buf[0], GetProcessHeap());
    assert_ptr_equal(buf[base], h[0]);
    assert_ptr_equal(buf[base + 1], h[2]);
    assert_ptr_equal(buf[base + 2], h[3]);
    assert_true(HeapDestroy(h[0]));
    assert_true(HeapDestroy(h[2]));
    assert_true(HeapDestroy(h[3]));
    assert_int_equal(GetProcessHeaps(0, NULL), base);
}

static void *thread_create_heaps(void *arg) {
    HANDLE *out = arg;
    out[0] = HeapCreate(0, 0, 0);
    out[1] = HeapCreate(0, 0, 1 * MiB);
    return NULL;
}

static void test_create_destroy_changes_count(void **state) {
    (void)state;
    enum { N = 40 };
    HANDLE h[N];
    DWORD base = GetProcessHeaps(0, NULL);
    for (int i = 0; i < N; i++) {
        h[i] = HeapCreate(0, 0, (i % 3) ? 0 : 256 * KiB);
        assert_non_null(h[i]);
        assert_int_equal(GetProcessHeaps(0, NULL), base + (DWORD)i + 1);
    }
    for (int i = 0; i < N; i += 2) {
        assert_true(HeapDestroy(h[i]));
        assert_int_equal(GetProcessHeaps(0, NULL), base + N - (DWORD)i / 2 - 1);
    }
    HANDLE th[2];
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, thread_create_heaps, th), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(th[0] && th[1]);
    assert_int_equal(GetProcessHeaps(0, NULL), base + N / 2 + 2);
    HANDLE buf[64];
    assert_int_equal(GetProcessHeaps(64, buf), base + N / 2 + 2);
    assert_ptr_equal(buf[base + N / 2], th[0]);
    assert_ptr_equal(buf[base + N / 2 + 1], th[1]);
    for (int i = 1; i < N; i += 2) assert_true(HeapDestroy(h[i]));
    assert_true(HeapDestroy(th[0]));
    assert_true(HeapDestroy(th[1]));
    assert_int_equal(GetProcessHeaps(0, NULL), base);
}

struct le_probe { HANDLE h; DWORD initial, after_fail, after_set, after_success; };
static void *thread_last_error(void *arg) {
    struct le_probe *pr = arg;
    int local;
    pr->initial = GetLastError();
    HeapFree(pr->h, 0, &local);
    pr->after_fail = GetLastError();
    SetLastError(2222);
    pr->after_set = GetLastError();
    void *p = HeapAlloc(pr->h, 0, 10);
    HeapFree(pr->h, 0, p);
    pr->after_success = GetLastError();
    return NULL;
}

static void test_last_error_thread_local(void **state) {
    (void)state;
    struct le_probe pr = {HeapCreate(0, 0, 0), 1, 1, 1, 1};
    assert_non_null(pr.h);
    SetLastError(1111);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, thread_last_error, &pr), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    EXPECT_LE(1111);
    assert_int_equal(pr.initial, 0);
    assert_int_equal(pr.after_fail, ERROR_INVALID_PARAMETER);
    assert_int_equal(pr.after_set, 2222);
    assert_int_equal(pr.after_success, 2222);
    SetLastError(0xFFFFFFFFu);
    EXPECT_LE(0xFFFFFFFFu);
    assert_true(HeapDestroy(pr.h));
}

static void test_success_leaves_last_error(void **state) {
    (void)state;
    const DWORD mark = 0xC0FFEE;
    SetLastError(mark);
    assert_non_null(GetProcessHeap());
    EXPECT_LE(mark);
    assert_true(GetProcessHeaps(0, NULL) >= 1);
    EXPECT_LE(mark);
    HANDLE h = HeapCreate(0, 0, 0), f = HeapCreate(0, 0, 256 * KiB);
    assert_true(h && f);
    EXPECT_LE(mark);
    HANDLE hs[2] = {h, f};
    for (int i = 0; i < 2; i++) {
        void *p = HeapAlloc(hs[i], 0, 100);
        void *z = HeapAlloc(hs[i], HEAP_ZERO_MEMORY, 0);
        void *big = HeapAlloc(hs[i], 0, i ? 200 * KiB : 2 * MiB);
        assert_true(p && z && big);
        EXPECT_LE(mark);
        assert_int_equal(HeapSize(hs[i], 0, p), 100);
        EXPECT_LE(mark);
        p = HeapReAlloc(hs[i], 0, p, 5000);
        assert_non_null(p);
        EXPECT_LE(mark);
        p = HeapReAlloc(hs[i], HEAP_REALLOC_IN_PLACE_ONLY, p, 10);
        assert_non_null(p);
        EXPECT_LE(mark);
        assert_true(HeapValidate(hs[i], 0, NULL));
        assert_true(HeapFree(hs[i], 0, p));
        assert_true(HeapFree(hs[i], 0, z));
        assert_true(HeapFree(hs[i], 0, big));
        assert_true(HeapFree(hs[i], 0, NULL));
        EXPECT_LE(mark);
    }
    assert_true(HeapDestroy(h));
    assert_true(HeapDestroy(f));
    EXPECT_LE(mark);
}

static const struct { DWORD fl; SIZE_T init, max; } g_kinds[] = {
    {0, 0, 0}, {0, 8 * MiB, 0}, {0, 256 * KiB, 256 * KiB}, {0, 0, 4 * MiB}, {HEAP_NO_SERIALIZE, 0, 0},
    {HEAP_CREATE_ENABLE_EXECUTE, 0, 0}, {HEAP_CREATE_ENABLE_EXECUTE, 0, 1 * MiB},
};
static void kind_workload(HANDLE h, int fixed) {
    void *a = HeapAlloc(h, 0, 100), *b = HeapAlloc(h, 0, 50000), *c = HeapAlloc(h, 0, fixed ? 100000 : 2 * MiB);
    assert_true(a && b && c);
    memset(c, 1, fixed ? 100000 : 2 * MiB);
    assert_true(HeapFree(h, 0, a));
}

static void test_destroy_releases_mappings(void **state) {
    (void)state;
    enum { K = sizeof g_kinds / sizeof g_kinds[0] };
    (void)GetProcessHeap();
    for (int i = 0; i < (int)K; i++) { /* warm-up */
        HANDLE h = HeapCreate(g_kinds[i].fl, g_kinds[i].init, g_kinds[i].max);
        assert_non_null(h);
        kind_workload(h, g_kinds[i].max != 0);
        assert_true(HeapDestroy(h));
    }
    int base = wh_count_mappings();
    assert_true(base > 0);
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < (int)K; i++) {
            HANDLE h = HeapCreate(g_kinds[i].fl, g_kinds[i].init, g_kinds[i].max);
            assert_non_null(h);
            kind_workload(h, g_kinds[i].max != 0);
            assert_true(HeapDestroy(h));
            int now = wh_count_mappings();
            EXPECT(now == base, "kind %d round %d: %d mappings after destroy, %d before create", i, r, now, base);
        }
}

static void test_destroy_releases_1000_blocks(void **state) {
    (void)state;
    enum { N = 1000 };
    static void *p[N];
    static SIZE_T sz[N];
    HANDLE w = HeapCreate(0, 0, 0);
    assert_non_null(w);
    kind_workload(w, 0);
    assert_true(HeapDestroy(w));
    int base = wh_count_mappings();
    for (int round = 0; round < 2; round++) {
        HANDLE h = HeapCreate(0, 0, 0);
        assert_non_null(h);
        uint64_t rs = 1234 + (uint64_t)round;
        for (int i = 0; i < N; i++) {
            if (i % 100 == 99) sz[i] = WINHEAP_LARGE_THRESHOLD + (SIZE_T)(wh_rand(&rs) % (2 * MiB));
            else if (i % 50 == 49) sz[i] = 64 * KiB + (SIZE_T)(wh_rand(&rs) % (448 * KiB));
            else sz[i] = (SIZE_T)(wh_rand(&rs) % 4097);
            p[i] = HeapAlloc(h, 0, sz[i]);
            EXPECT(p[i] != NULL, "block %d of %zu refused", i, sz[i]);
            if (sz[i]) { ((uint8_t *)p[i])[0] = (uint8_t)i; ((uint8_t *)p[i])[sz[i] - 1] = (uint8_t)i; }
        }
        for (int i = 0; i < N; i++)
            if (sz[i]) EXPECT(((uint8_t *)p[i])[0] == (uint8_t)i && ((uint8_t *)p[i])[sz[i] - 1] == (uint8_t)i,
                              "block %d overwritten", i);
        for (int i = 0; i < N; i += 3) assert_true(HeapFree(h, 0, p[i]));
        assert_true(HeapDestroy(h));
        int now = wh_count_mappings();
        EXPECT(now == base, "round %d: %d mappings after destroy, %d before create", round, now, base);
    }
}

#if defined(__x86_64__)
static int call_code(void *p) {
    int (*fn)(void);
    memcpy(&fn, &p, sizeof fn);
    return fn();
}
#endif

static void test_executable_heap(void **state) {
    (void)state;
#if defined(__x86_64__)
    static const uint8_t ret42[] = {0xB8, 0x2A, 0x00, 0x00, 0x00, 0xC3}; /* mov eax, 42; ret */
    static const uint8_t ret7[] = {0xB8, 0x07, 0x00, 0x00, 0x00, 0xC3};  /* mov eax, 7; ret */
    const SIZE_T fixed_max[] = {0, 1 * MiB};
    for (int k = 0; k < 2; k++) {
        HANDLE h = HeapCreate(HEAP_CREATE_ENABLE_EXECUTE, 0, fixed_max[k]);
        assert_non_null(h);
        char perms[5];
        void *p = HeapAlloc(h, 0, sizeof ret42);
        assert_non_null(p);
        memcpy(p, ret42, sizeof ret42);
        __builtin___clear_cache((char *)p, (char *)p + sizeof ret42);
        assert_true(maps_perms(p, perms));
        EXPECT(perms[2] == 'x', "executable heap block %p has perms %s", p, perms);
        assert_int_equal(call_code(p), 42);
        SIZE_T bs = k ? 512 * KiB : 3 * MiB; /* a large block in the growable case */
        uint8_t *big = HeapAlloc(h, 0, bs);
        assert_non_null(big);
        memcpy(big, ret7, sizeof ret7);
        memcpy(big + bs - 16, ret42, sizeof ret42);
        __builtin___clear_cache((char *)big, (char *)big + bs);
        assert_true(maps_perms(big + bs - 16, perms));
        EXPECT(perms[2] == 'x', "executable heap block %p has perms %s", (void *)big, perms);
        assert_int_equal(call_code(big), 7);
        assert_int_equal(call_code(big + bs - 16), 42);
        /* a normal heap created next to it does not share its executable regions */
        HANDLE n = HeapCreate(0, 0, 0);
        assert_non_null(n);
        void *q = HeapAlloc(n, 0, 64);
        assert_non_null(q);
        assert_true(maps_perms(q, perms));
        EXPECT(perms[2] != 'x', "normal heap block %p is executable (%s)", q, perms);
        assert_true(HeapDestroy(n));
        assert_true(HeapFree(h, 0, big));
        assert_true(HeapFree(h, 0, p));
        assert_true(HeapDestroy(h));
    }
#else
    skip();
#endif
}

static void test_normal_heap_not_executable(void **state) {
    (void)state;
    HANDLE ex = HeapCreate(HEAP_CREATE_ENABLE_EXECUTE, 0, 0); /* exists meanwhile */
    assert_non_null(ex);
    assert_non_null(HeapAlloc(ex, 0, 100));
    HANDLE heaps[4] = {GetProcessHeap(), HeapCreate(0, 0, 0), HeapCreate(0, 0, 4 * MiB),
                       HeapCreate(HEAP_NO_SERIALIZE, 0, 0)};
    assert_true(heaps[1] && heaps[2] && heaps[3]);
    static const SIZE_T sizes[] = {16, 3000, 200000, 0xFF000 + 100};
    for (int hi = 0; hi < 4; hi++)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            if (hi == 2 && sizes[i] >= WINHEAP_FIXED_LIMIT) continue;
            uint8_t *p = HeapAlloc(heaps[hi], 0, sizes[i]);
            assert_non_null(p);
            memset(p, 0xC3, sizes[i]);
            char perms[5];
            const uint8_t *probe[2] = {p, p + sizes[i] - 1};
            for (int j = 0; j < 2; j++) {
                EXPECT(maps_perms(probe[j], perms), "block %p not in /proc/self/maps", (void *)probe[j]);
                EXPECT(perms[0] == 'r' && perms[1] == 'w' && perms[2] != 'x', "heap %d size %zu: %p has perms %s",
                       hi, sizes[i], (void *)probe[j], perms);
            }
            assert_true(HeapFree(heaps[hi], 0, p));
        }
    for (int hi = 1; hi < 4; hi++) assert_true(HeapDestroy(heaps[hi]));
    assert_true(HeapDestroy(ex));
}

int main(void) {
    setenv("WINHEAP_TERMINATE_ON_CORRUPTION", "0", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_process_heap_basics),
        cmocka_unit_test(test_create_handles_aligned),
        cmocka_unit_test(test_create_ignores_unknown_flags),
        cmocka_unit_test(test_create_bad_sizes),
        cmocka_unit_test(test_fixed_256k_one_block),
        cmocka_unit_test(test_fixed_limit),
        cmocka_unit_test(test_fixed_heap_fills_and_recovers),
        cmocka_unit_test(test_growable_large_blocks),
        cmocka_unit_test(test_large_block_released_and_heap_unchanged),
        cmocka_unit_test(test_zero_size_blocks),
        cmocka_unit_test(test_alignment_sizes_no_overlap),
        cmocka_unit_test(test_zero_memory),
        cmocka_unit_test(test_huge_sizes_fail_cleanly),
        cmocka_unit_test(test_call_flag_bits_ignored),
        cmocka_unit_test(test_free_null),
        cmocka_unit_test(test_foreign_pointers),
        cmocka_unit_test(test_double_and_interior_free),
        cmocka_unit_test(test_heapsize_exact_and_failure),
        cmocka_unit_test(test_bad_handles_every_function),
        cmocka_unit_test(test_destroy_semantics),
        cmocka_unit_test(test_get_process_heaps),
        cmocka_unit_test(test_create_destroy_changes_count),
        cmocka_unit_test(test_last_error_thread_local),
        cmocka_unit_test(test_success_leaves_last_error),
        cmocka_unit_test(test_destroy_releases_mappings),
        cmocka_unit_test(test_destroy_releases_1000_blocks),
        cmocka_unit_test(test_executable_heap),
        cmocka_unit_test(test_normal_heap_not_executable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
