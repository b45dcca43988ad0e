/*
 * test_reliability_contracts.c - RELIABILITY.md rows 13-18 and 25-28 on the
 * Heap* API: data hygiene (13), realloc failures (14, 15), huge sizes and
 * checked arithmetic (16, 17), fixed heaps (18), diagnostics on a damaged
 * heap (25), the debug heap (26), termination on corruption (27) and
 * randomization (28).  Same conventions as test_reliability.c (rows 1-12):
 * the program runs with termination on corruption OFF, termination-on cases
 * run in forked children that switch it on and must die of SIGABRT with
 * exactly one "winheap: STATUS_HEAP_CORRUPTION (0xC0000374) in ..." line,
 * and cases that depend on start-up options (WINHEAP_DEBUG, WINHEAP_SEED,
 * WINHEAP_TERMINATE_ON_CORRUPTION) exec this program with "--scenario".
 * Row 13 also checks the matrix's zero-on-free (no stale data from earlier
 * owners); row 27 checks that the fatal path writes one line with write(2)
 * (stderr fully buffered) and never allocates (malloc fails and reports while
 * armed; in sanitizer builds a sanitizer malloc hook reports).  Section 10
 * wins over the matrix: fixed heaps refuse requests from 0xFE000 (D7), the
 * reason for HeapReAlloc of a freed block is "double free" (decisions.md).
 * Shim parts of rows 14, 16 and 17 belong to tests/test_shim_api.c and
 * tests/shim_programs.sh.
 */
#define _GNU_SOURCE
#include "reliability_util.h"

/* ------------------------------------------------------------------------ */
/* Row 13: read after free, uninitialised data                              */
/* ------------------------------------------------------------------------ */

static uint8_t secret(const void *a) { return (uint8_t)(((uintptr_t)a * 0x9E3779B97F4A7C15ull) >> 56) | 1; }
static void put_secret(char *p, size_t n) { for (size_t i = 0; i < n; i++) p[i] = (char)secret(p + i); }
/* Bytes of [p+from, p+n) that still hold the secret of their address. */
static size_t stale(const char *p, size_t from, size_t n) {
    size_t k = 0;
    for (size_t i = from; i < n; i++) k += peek(p + i) == secret(p + i);
    return k;
}

static void test_row_13_zero_memory_and_grown_tails(void **state) {
    (void)state;
    const size_t sizes[] = { 16, 64, 200, 5000, 20000, 300000, 0x100000 };
    HANDLE heaps[3] = { new_heap(1), new_heap(0), GetProcessHeap() };
    for (int k = 0; k < 3; k++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            HANDLE h = heaps[k];
            size_t n = sizes[s];
            int cnt = n > 100000 ? 3 : 32;
            char *v[32];
            for (int i = 0; i < cnt; i++) {
                CHECK((v[i] = HeapAlloc(h, 0, n)) != NULL);
                memset(v[i], 0xA5, n);
            }
            for (int i = 0; i < cnt; i++) CHECK(HeapFree(h, 0, v[i]));
            for (int i = 0; i < cnt; i++) {
                CHECK((v[i] = HeapAlloc(h, HEAP_ZERO_MEMORY, n)) != NULL);
                for (size_t j = 0; j < n; j++) CHECK(v[i][j] == 0);
            }
            /* grown with HEAP_ZERO_MEMORY: the old part kept, the rest zero */
            for (int i = 0; i < cnt; i++) {
                memset(v[i], 0x3C, n);
                size_t m = n + n / 2 + 10;
                char *g = HeapReAlloc(h, HEAP_ZERO_MEMORY, v[i], m);
                CHECK(g != NULL);
                for (size_t j = 0; j < n; j++) CHECK((unsigned char)g[j] == 0x3C);
                for (size_t j = n; j < m; j++) CHECK(g[j] == 0);
                CHECK(HeapFree(h, 0, g));
            }
        }
    /* in place over stale bytes: an LFH slot's slack, a freed back-end neighbour */
    HANDLE h = heaps[0];
    char *v[64];
    for (int i = 0; i < 64; i++) memset(v[i] = HeapAlloc(h, 0, 64), 0xA5, 64);
    for (int i = 0; i < 64; i++) CHECK(HeapFree(h, 0, v[i]));
    for (int i = 0; i < 64; i++) {
        char *p = HeapAlloc(h, 0, 50);
        CHECK(p && in_lfh(p));
        CHECK(HeapReAlloc(h, HEAP_ZERO_MEMORY | HEAP_REALLOC_IN_PLACE_ONLY, p, 64) == p);
        for (int j = 50; j < 64; j++) CHECK(p[j] == 0);
        v[i] = p;
    }
    for (int i = 0; i < 64; i++) CHECK(HeapFree(h, 0, v[i]));
    h = new_heap(0);
    char *a = HeapAlloc(h, 0, 100), *b = HeapAlloc(h, 0, 100), *c = HeapAlloc(h, 0, 100);
    memset(b, 0xA5, 100);
    CHECK(HeapFree(h, 0, b));
    CHECK(HeapReAlloc(h, HEAP_ZERO_MEMORY | HEAP_REALLOC_IN_PLACE_ONLY, a, 200) == a);
    for (int j = 100; j < 200; j++) CHECK(a[j] == 0);
    CHECK(!in_lfh(a) && HeapFree(h, 0, a) && HeapFree(h, 0, c) && HeapDestroy(h));
    CHECK(HeapDestroy(heaps[0]) && HeapDestroy(heaps[1]));
}

/* The matrix: no stale data from other owners (zero-on-free). */
static void test_row_13_no_stale_data_after_free(void **state) {
    (void)state;
    const size_t sizes[] = { 64, 200, 20000 };
    for (int lfh = 0; lfh <= 1; lfh++)
        for (size_t s = 0; s < 3; s++) {
            HANDLE h = new_heap(lfh);
            size_t n = sizes[s];
            char *v[32];
            for (int i = 0; i < 32; i++) {
                CHECK((v[i] = HeapAlloc(h, 0, n)) != NULL);
                put_secret(v[i], n);
            }
            for (int i = 0; i < 32; i += 2) CHECK(HeapFree(h, 0, v[i])); /* odd ones stay: no merging */
            for (int i = 0; i < 32; i += 2) {
                size_t k = stale(v[i], 16, n); /* a freed block, past its links */
                if (k > (n - 16) / 10)
                    fail_msg("row 13 (%s block, %zu bytes): freed block %d still holds %zu of %zu bytes of its data",
                             in_lfh(v[i]) ? "LFH" : "back-end", n, i, k, n - 16);
            }
            for (int i = 0; i < 32; i += 2) {
                char *q = HeapAlloc(h, 0, n);
                CHECK(q != NULL);
                size_t k = stale(q, 0, n);
                if (k > n / 10)
                    fail_msg("row 13 (%s block, %zu bytes): a new block holds %zu stale bytes of an earlier owner",
                             in_lfh(q) ? "LFH" : "back-end", n, k);
            }
            CHECK(HeapDestroy(h));
        }
}

/* A back-end block grown in place takes in its free successor, whose keyed
 * header and list links lay just past the old end: none of it (nor any
 * earlier owner's data) may show in the grown part.  Growths by one header,
 * by half the successor, and by the whole successor (no remainder left). */
static void test_row_13_grown_in_place_shows_no_metadata(void **state) {
    (void)state;
    const size_t base[] = { 300, 20000 };
    for (int s = 0; s < 2; s++)
        for (int g = 0; g < 3; g++) {
            HANDLE h = new_heap(0);
            size_t n = base[s];
            char *a = HeapAlloc(h, 0, n), *b = HeapAlloc(h, 0, n), *c = HeapAlloc(h, 0, n);
            CHECK(a && b && c && !in_lfh(a));
            put_secret(b, n);
            CHECK(HeapFree(h, 0, b)); /* a's successor: a free block between a and c */
            size_t room = (size_t)(c - a) - 16; /* up to c's header */
            size_t to = g == 0 ? n + 16 : g == 1 ? n + (room - n) / 2 : room;
            char *a2 = HeapReAlloc(h, HEAP_REALLOC_IN_PLACE_ONLY, a, to);
            /* (the whole gap less the slack that tool builds keep after a block) */
            while (!a2 && g == 2 && to > room - 64) a2 = HeapReAlloc(h, HEAP_REALLOC_IN_PLACE_ONLY, a, to -= 16);
            CHECK(a2 == a);
            size_t nz = 0;
            for (size_t i = n; i < to; i++) nz += a2[i] != 0;
            if (nz)
                fail_msg("row 13: a %zu-byte block grown in place to %zu shows %zu nonzero bytes of its old successor", n,
                         to, nz);
            CHECK(HeapValidate(h, 0, NULL) && HeapFree(h, 0, a2) && HeapFree(h, 0, c) && HeapDestroy(h));
        }
}

/* A block carved from free blocks that merged shows no header or link of
 * theirs (they would give away the heap's keys), whichever way they merged:
 * into the predecessor, absorbing the successor, or into the tail a shrink
 * gives back; and a second free of a merged block is still a double free. */
static void merged_df_child(void *arg) {
    int how = *(int *)arg;
    child_begin();
    toc_on();
    HANDLE h = new_heap(0);
    char *a = HeapAlloc(h, 0, 300), *b = HeapAlloc(h, 0, 300), *c = HeapAlloc(h, 0, 300);
    CHECK(a && b && c);
    if (how) CHECK(HeapFree(h, 0, a) && HeapFree(h, 0, b)); /* b's header lies inside a */
    else CHECK(HeapFree(h, 0, c) && HeapFree(h, 0, b));     /* c's header lies inside b: free c again */
    note_addr(how ? b : c);
    HeapFree(h, 0, how ? b : c);
    survived("a second free of a merged block");
}
static void test_row_13_merged_blocks_leave_no_metadata(void **state) {
    (void)state;
    const size_t sizes[] = { 300, 20000 };
    for (int s = 0; s < 2; s++)
        for (int how = 0; how < 3; how++) {
            HANDLE h = new_heap(0);
            size_t n = sizes[s];
            char *a = HeapAlloc(h, 0, n), *b = HeapAlloc(h, 0, n), *c = HeapAlloc(h, 0, n), *d = HeapAlloc(h, 0, n);
            CHECK(a && b && c && d && !in_lfh(a));
            /* a, b and c with their headers, less a's header and the slack
             * that tool builds keep after a block */
            size_t span = (size_t)(d - a) - 64;
            if (how == 0) { /* b joins a, then c joins both */
                CHECK(HeapFree(h, 0, a) && HeapFree(h, 0, b) && HeapFree(h, 0, c));
            } else if (how == 1) { /* b absorbs c, a absorbs both */
                CHECK(HeapFree(h, 0, c) && HeapFree(h, 0, b) && HeapFree(h, 0, a));
            } else { /* b and c merge; a's shrink gives its tail back, which absorbs them */
                CHECK(HeapFree(h, 0, b) && HeapFree(h, 0, c));
                CHECK(HeapReAlloc(h, HEAP_REALLOC_IN_PLACE_ONLY, a, 16) == a && HeapFree(h, 0, a));
            }
            SetLastError(0);
            CHECK(HeapFree(h, 0, b) == FALSE && GetLastError() == ERROR_INVALID_PARAMETER); /* (termination is off) */
            char *e = HeapAlloc(h, 0, span); /* (without HEAP_ZERO_MEMORY) */
            CHECK(e == a);
            size_t nz = 0;
            for (size_t i = 0; i < span; i++) nz += e[i] != 0;
            if (nz) fail_msg("row 13: a block carved from merged %zu-byte blocks (case %d) shows %zu nonzero bytes", n, how, nz);
            CHECK(HeapValidate(h, 0, NULL) && HeapFree(h, 0, e) && HeapFree(h, 0, d) && HeapDestroy(h));
        }
    /* with termination on, the second free of a block merged either way says "double free" */
    for (int how = 0; how < 2; how++)
        expect_corruption(merged_df_child, &how, how ? "row 13: double free of a block its predecessor absorbed"
                                                     : "row 13: double free of a block that absorbed its successor",
                          "HeapFree", "double free");
}

/* ------------------------------------------------------------------------ */
/* Row 14: realloc of a freed or foreign block                              */
/* ------------------------------------------------------------------------ */

static const struct df_case row14_cases[] = {
    { K_PLAIN, 200, 0, 0 }, { K_LFH, 64, 1, 0 }, { K_PROCESS, 64, 1, 0 }, { K_PLAIN, 2u << 20, 0, 0 },
};
static void row14_child(void *arg) {
    const struct df_case *c = arg;
    child_begin();
    toc_on();
    HANDLE h = heap_of_kind(c->heap);
    char *keep = HeapAlloc(h, 0, c->size), *p = HeapAlloc(h, 0, c->size);
    CHECK(keep && p && in_lfh(p) == c->want_lfh);
    CHECK(HeapFree(h, 0, p) == TRUE);
    note_addr(p);
    HeapReAlloc(h, 0, p, 64);
    survived("HeapReAlloc of a freed block");
}
static void foreign_realloc_child(void *arg) {
    (void)arg;
    child_begin();
    toc_on();
    HANDLE h = new_heap(1), other = new_heap(1);
    _Alignas(16) char stackbuf[64];
    char *ob = HeapAlloc(other, 0, 64), *ob2 = HeapAlloc(other, 0, 40000);
    CHECK(ob && ob2);
    fill(ob, 64, 6);
    void *cands[] = { stackbuf, (void *)1, ob, ob2 };
    for (int i = 0; i < 4; i++) {
        SetLastError(0);
        CHECK(HeapReAlloc(h, 0, cands[i], 16) == NULL && GetLastError() == ERROR_INVALID_PARAMETER);
    }
    CHECK(intact(ob, 64, 6) && HeapSize(other, 0, ob) == 64 && HeapValidate(other, 0, NULL));
    note_done();
}
static size_t allocated(HANDLE h) {
    HEAP_SUMMARY s = { .cb = sizeof s };
    CHECK(HeapSummary(h, 0, &s) == TRUE);
    return s.cbAllocated;
}
static void test_row_14_realloc_freed_or_foreign(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof row14_cases / sizeof row14_cases[0]; i++) {
        const struct df_case *c = &row14_cases[i];
        char what[48];
        snprintf(what, sizeof what, "row 14 case %zu", i);
        expect_corruption(row14_child, (void *)c, what, "HeapReAlloc", "double free");
        HANDLE h = heap_of_kind(c->heap);
        char *keep = HeapAlloc(h, 0, c->size), *p = HeapAlloc(h, 0, c->size);
        CHECK(keep && p);
        CHECK(HeapFree(h, 0, p) == TRUE);
        size_t before = allocated(h);
        DWORD le;
        int walked = walk_count(h, &le, 1 << 20);
        SetLastError(0);
        CHECK(HeapReAlloc(h, 0, p, 64) == NULL && GetLastError() == ERROR_INVALID_PARAMETER);
        SetLastError(0);
        CHECK(HeapReAlloc(h, 0, p, c->size * 2) == NULL && GetLastError() == ERROR_INVALID_PARAMETER);
        CHECK(allocated(h) == before && walk_count(h, &le, 1 << 20) == walked); /* nothing new, nothing copied */
        CHECK(HeapValidate(h, 0, NULL) == TRUE && HeapFree(h, 0, keep) == TRUE);
        if (c->heap != K_PROCESS) CHECK(HeapDestroy(h));
    }
    /* foreign: NULL/87, with termination on as well (test_row_04 covers every
     * foreign kind); shim realloc((void*)1, 16): tests/test_shim_api.c */
    expect_clean(foreign_realloc_child, NULL, "row 14 foreign pointers with termination on");
}

/* ------------------------------------------------------------------------ */
/* Row 15: a failed realloc keeps the original                              */
/* ------------------------------------------------------------------------ */

static void realloc_fails_keeps(HANDLE h, char *p, size_t n, DWORD flags, SIZE_T to) {
    SetLastError(0);
    CHECK(HeapReAlloc(h, flags, p, to) == NULL);
    CHECK(GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
    CHECK(HeapValidate(h, 0, p) == TRUE && HeapSize(h, 0, p) == n && intact(p, n, 15));
}
static void test_row_15_failed_realloc_keeps_block(void **state) {
    (void)state;
    HANDLE lfh = new_heap(1), plain = new_heap(0), fixed = HeapCreate(0, 0, 1 << 20);
    CHECK(fixed != NULL);
    struct { HANDLE h; size_t n; size_t grow_in_place; } cases[] = {
        { lfh, 64, 1000 }, { plain, 200, 100000 }, { plain, 20000, 0x200000 }, { lfh, 0x100000, 64u << 20 },
        { fixed, 200, 2000 }, { GetProcessHeap(), 100, 5000 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        HANDLE h = cases[i].h;
        size_t n = cases[i].n;
        char *p = HeapAlloc(h, 0, n), *after = HeapAlloc(h, 0, n); /* a busy neighbour */
        CHECK(p && after);
        fill(p, n, 15);
        realloc_fails_keeps(h, p, n, 0, ~(SIZE_T)0 - 7);
        realloc_fails_keeps(h, p, n, 0, ~(SIZE_T)0);
        realloc_fails_keeps(h, p, n, 0, (SIZE_T)PTRDIFF_MAX + 1);
        realloc_fails_keeps(h, p, n, HEAP_ZERO_MEMORY, ~(SIZE_T)0 - 15);
        realloc_fails_keeps(h, p, n, HEAP_REALLOC_IN_PLACE_ONLY, n + cases[i].grow_in_place);
        if (h == fixed) realloc_fails_keeps(h, p, n, 0, 2 << 20); /* beyond the maximum */
        CHECK(HeapFree(h, 0, p) && HeapFree(h, 0, after) && HeapValidate(h, 0, NULL));
    }
    CHECK(HeapDestroy(lfh) && HeapDestroy(plain) && HeapDestroy(fixed));
}

/* ------------------------------------------------------------------------ */
/* Rows 16 and 17: sizes near SIZE_MAX, count x size                        */
/* ------------------------------------------------------------------------ */

static void huge_fails(HANDLE h, SIZE_T n) {
    SetLastError(0);
    CHECK(HeapAlloc(h, 0, n) == NULL && GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
}
static void test_row_16_huge_sizes(void **state) {
    (void)state;
    HANDLE lfh = new_heap(1), plain = new_heap(0), fixed = HeapCreate(0, 0, 1 << 20);
    CHECK(fixed != NULL);
    HANDLE heaps[4] = { lfh, plain, fixed, GetProcessHeap() };
    char *keep[4];
    for (int k = 0; k < 4; k++) fill(keep[k] = HeapAlloc(heaps[k], 0, 100), 100, 15);
    for (SIZE_T k = 0; k <= (1u << 14); k++) {
        for (int i = 0; i < 4; i++) {
            HANDLE h = heaps[i];
            if ((k & 63) == 0) { /* right after a small alloc/free */
                void *s = HeapAlloc(h, 0, 32);
                CHECK(s && HeapFree(h, 0, s));
            }
            huge_fails(h, SIZE_MAX - k);
            huge_fails(h, (SIZE_T)PTRDIFF_MAX + k);
            huge_fails(h, (SIZE_T)PTRDIFF_MAX - k);
            if ((k & 15) == 0) {
                SetLastError(0);
                CHECK(HeapAlloc(h, HEAP_ZERO_MEMORY, SIZE_MAX - k) == NULL && GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
                SetLastError(0);
                CHECK(winheap_aligned_alloc(h, 0, 64, SIZE_MAX - k) == NULL && GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
                realloc_fails_keeps(h, keep[i], 100, 0, SIZE_MAX - k);
            }
        }
    }
    /* HEAP_GENERATE_EXCEPTIONS: STATUS_NO_MEMORY with the requested size */
    winheap_set_exception_handler(exc_handler);
    for (int i = 0; i < 4; i++)
        for (volatile SIZE_T k = 0; k <= (1u << 14); k += 97) {
            volatile SIZE_T n = (k & 1) ? SIZE_MAX - k : (SIZE_T)PTRDIFF_MAX + k;
            g_exc_calls = 0;
            if (setjmp(g_exc_jmp) == 0) {
                HeapAlloc(heaps[i], HEAP_GENERATE_EXCEPTIONS, n);
                fail_msg("row 16: no exception for %zu bytes", (size_t)n);
            }
            CHECK(g_exc_calls == 1 && g_exc_status == STATUS_NO_MEMORY && g_exc_size == n);
        }
    winheap_set_exception_handler(NULL);
    for (int k = 0; k < 4; k++) {
        CHECK(HeapValidate(heaps[k], 0, NULL) && intact(keep[k], 100, 15) && HeapFree(heaps[k], 0, keep[k]));
        void *s = HeapAlloc(heaps[k], 0, 1000);
        CHECK(s && HeapFree(heaps[k], 0, s));
    }
    /* heap sizes round up to pages without wrapping */
    for (SIZE_T k = 0; k < 4096; k += 511) {
        SetLastError(0);
        CHECK(HeapCreate(0, SIZE_MAX - k, 0) == NULL && GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
        SetLastError(0);
        CHECK(HeapCreate(0, 0, SIZE_MAX - k) == NULL && GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
    }
    /* shim malloc/realloc/memalign/posix_memalign: tests/test_shim_api.c */
    CHECK(HeapDestroy(lfh) && HeapDestroy(plain) && HeapDestroy(fixed));
}

static void test_row_17_checked_multiply(void **state) {
    (void)state;
    /* the library's n x size / n + size helpers, fuzzed against 128-bit math */
    uint64_t s = 17;
    for (int i = 0; i < 1000000; i++) {
        size_t a = (size_t)wh_rand(&s) >> (wh_rand(&s) & 63), b = (size_t)wh_rand(&s) >> (wh_rand(&s) & 63);
        size_t out = 0;
        unsigned __int128 m = (unsigned __int128)a * b, sum = (unsigned __int128)a + b;
        CHECK(wh_mul_overflow(a, b, &out) == (m > SIZE_MAX));
        if (m <= SIZE_MAX) CHECK(out == (size_t)m);
        CHECK(wh_add_overflow(a, b, &out) == (sum > SIZE_MAX));
        if (sum <= SIZE_MAX) CHECK(out == (size_t)sum);
    }
    /* alignment + size must not wrap in winheap_aligned_alloc */
    HANDLE h = new_heap(0);
    const SIZE_T al[] = { 32, 4096, (SIZE_T)1 << 20, (SIZE_T)1 << 40, (SIZE_T)1 << 62, (SIZE_T)1 << 63 };
    for (size_t i = 0; i < sizeof al / sizeof al[0]; i++)
        for (SIZE_T k = 0; k < 64; k++) {
            SetLastError(0);
            CHECK(winheap_aligned_alloc(h, 0, al[i], SIZE_MAX - al[i] - k) == NULL);
            CHECK(GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
            SetLastError(0);
            CHECK(winheap_aligned_alloc(h, 0, al[i], (SIZE_T)1 << 63) == NULL && GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
        }
    CHECK(HeapValidate(h, 0, NULL) && HeapDestroy(h));
    /* shim calloc(SIZE_MAX,2), calloc(LONG_MAX+1,2), reallocarray: tests/test_shim_api.c */
}

/* ------------------------------------------------------------------------ */
/* Row 18: fixed-size heap at its maximum                                   */
/* ------------------------------------------------------------------------ */

#define FILL_MAX 40000
static char *g_fill[FILL_MAX];
static int fill_until_null(HANDLE h, uint64_t seed, int mixed) {
    int n = 0;
    uint64_t s = seed;
    for (;;) {
        size_t sz = mixed ? 16 + wh_rand(&s) % 2000 : 100;
        SetLastError(0);
        char *p = HeapAlloc(h, 0, sz);
        if (!p) {
            CHECK(GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
            return n;
        }
        CHECK(!in_lfh(p) && n < FILL_MAX);
        g_fill[n++] = p;
    }
}
static void free_all(HANDLE h, int n) {
    for (int i = 0; i < n; i++) CHECK(HeapFree(h, 0, g_fill[i]) == TRUE);
}
/* Every block free again: one free block per region, no busy entry. */
static void check_empty(HANDLE h) {
    PROCESS_HEAP_ENTRY e = { 0 };
    int regions = 0, frees = 0;
    while (HeapWalk(h, &e)) {
        CHECK(!(e.wFlags & PROCESS_HEAP_ENTRY_BUSY));
        regions += !!(e.wFlags & PROCESS_HEAP_REGION);
        frees += e.wFlags == 0;
    }
    CHECK(GetLastError() == ERROR_NO_MORE_ITEMS && regions == 1 && frees == 1);
}
static void test_row_18_fixed_heap_at_maximum(void **state) {
    (void)state;
    const SIZE_T maxes[] = { 256 << 10, 1 << 20, 4 << 20 };
    for (size_t m = 0; m < 3; m++) {
        HANDLE h = HeapCreate(0, 64 << 10, maxes[m]);
        CHECK(h != NULL);
        huge_fails(h, maxes[m] + 1);
        huge_fails(h, WINHEAP_FIXED_LIMIT);         /* D7: 0xFE000 and more */
        huge_fails(h, WINHEAP_FIXED_LIMIT + 4096);
        if (maxes[m] >= (4 << 20)) {                 /* D7, not the matrix's 0x7FFF8 */
            char *p = HeapAlloc(h, 0, 0x7FFF8), *q = HeapAlloc(h, 0, WINHEAP_FIXED_LIMIT - 16);
            CHECK(p && q && HeapFree(h, 0, p) && HeapFree(h, 0, q));
        }
        for (int mixed = 0; mixed <= 1; mixed++) {
            int first = fill_until_null(h, 99, mixed);
            CHECK(first > 18);
            ULONG v = 9;
            CHECK(HeapQueryInformation(h, HeapCompatibilityInformation, &v, sizeof v, NULL) && v == 0);
            CHECK(HeapValidate(h, 0, NULL));
            free_all(h, first);
            check_empty(h);
            int second = fill_until_null(h, 99, mixed);
            if (second < first - 1 || second > first + 1)
                fail_msg("row 18 (max %zu, %s sizes): the first fill took %d blocks, the second %d", (size_t)maxes[m],
                         mixed ? "mixed" : "100-byte", first, second);
            free_all(h, second);
            check_empty(h);
        }
        ULONG two = 2;
        SetLastError(0);
        CHECK(HeapSetInformation(h, HeapCompatibilityInformation, &two, sizeof two) == FALSE &&
              GetLastError() == ERROR_INVALID_PARAMETER); /* no LFH on a fixed heap (D16) */
        CHECK(HeapDestroy(h));
    }
    /* HEAP_GENERATE_EXCEPTIONS: over-limit requests raise STATUS_NO_MEMORY */
    HANDLE h = HeapCreate(HEAP_GENERATE_EXCEPTIONS, 0, 1 << 20);
    CHECK(h != NULL);
    winheap_set_exception_handler(exc_handler);
    SIZE_T reqs[] = { (1 << 20) + 1, WINHEAP_FIXED_LIMIT };
    for (int i = 0; i < 2; i++) {
        g_exc_calls = 0;
        if (setjmp(g_exc_jmp) == 0) {
            HeapAlloc(h, 0, reqs[i]);
            fail_msg("row 18: no exception");
        }
        CHECK(g_exc_calls == 1 && g_exc_status == STATUS_NO_MEMORY && g_exc_size == reqs[i]);
    }
    winheap_set_exception_handler(NULL);
    CHECK(HeapValidate(h, 0, NULL) && HeapDestroy(h));
}

/* ------------------------------------------------------------------------ */
/* Row 25: HeapValidate / HeapWalk on a corrupted heap                      */
/* ------------------------------------------------------------------------ */

static void row25_checks(void) {
    DWORD le;
    /* an intact heap with every kind of element: the walk ends with 259 */
    HANDLE h = new_heap(0);
    char *v[5];
    for (int i = 0; i < 5; i++) CHECK((v[i] = HeapAlloc(h, 0, 20000)) != NULL && !in_lfh(v[i]));
    char *big = HeapAlloc(h, 0, 0x100000);
    CHECK(big && walk_count(h, &le, 100000) < 100000 && le == ERROR_NO_MORE_ITEMS);
    /* a cyclic free list: x -> y -> x, with correctly keyed links */
    uint64_t key = ((wh_heap *)h)->key_link;
    char *x = v[1], *y = v[3];
    CHECK(HeapFree(h, 0, x) && HeapFree(h, 0, y)); /* list: y, x */
    uint64_t saved = peek64(x);                     /* x's next link */
    CHECK((saved ^ key) == 0);                      /* x was the last */
    poke64(x, (uint64_t)(uintptr_t)(y - WH_HDR) ^ key);
    CHECK(HeapValidate(h, 0, NULL) == FALSE);       /* bounded: returns at all */
    CHECK(walk_count(h, &le, 100000) < 100000 && le == ERROR_NO_MORE_ITEMS); /* blocks are intact */
    poke64(x, saved);
    CHECK(HeapValidate(h, 0, NULL) == TRUE);
    /* a size field: the walk stops with FALSE (87), validation fails */
    unsigned char hdr[16];
    save_bytes(hdr, v[2] - WH_HDR, 16);
    wh_test_poke(v[2] - WH_HDR + 3, hdr[3] ^ 0x10, 1);
    CHECK(HeapValidate(h, 0, NULL) == FALSE && HeapValidate(h, 0, v[2]) == FALSE);
    CHECK(walk_count(h, &le, 100000) < 100000 && le == ERROR_INVALID_PARAMETER);
    poke_bytes(v[2] - WH_HDR, hdr, 16);
    CHECK(HeapValidate(h, 0, NULL) == TRUE && walk_count(h, &le, 100000) < 100000 && le == ERROR_NO_MORE_ITEMS);
    CHECK(HeapFree(h, 0, v[0]) && HeapFree(h, 0, v[2]) && HeapFree(h, 0, v[4]) && HeapFree(h, 0, big));
    CHECK(HeapDestroy(h));
    /* an LFH free list that loops on itself */
    h = new_heap(1);
    char *w[32];
    for (int i = 0; i < 32; i++) CHECK((w[i] = HeapAlloc(h, 0, 64)) != NULL && in_lfh(w[i]));
    /* (w[11], the newest free, waits in the delay register: w[9] is listed) */
    CHECK(HeapFree(h, 0, w[7]) && HeapFree(h, 0, w[9]) && HeapFree(h, 0, w[11]));
    key = ((wh_heap *)h)->key_link;
    saved = peek64(w[9]);
    poke64(w[9], (uint64_t)(uintptr_t)w[9] ^ key);
    CHECK(HeapValidate(h, 0, NULL) == FALSE);
    CHECK(walk_count(h, &le, 1 << 20) < (1 << 20) && le == ERROR_NO_MORE_ITEMS);
    poke64(w[9], saved);
    CHECK(HeapValidate(h, 0, NULL) == TRUE);
    /* the link word of the slot in the delay register (0 until it is listed) */
    saved = peek64(w[11]);
    poke64(w[11], (uint64_t)(uintptr_t)w[7] ^ key);
    CHECK(HeapValidate(h, 0, NULL) == FALSE);
    poke64(w[11], saved);
    CHECK(HeapValidate(h, 0, NULL) == TRUE);
    CHECK(HeapDestroy(h));
}
static void row25_child(void *arg) {
    (void)arg;
    child_begin();
    toc_on(); /* diagnostics never terminate */
    row25_checks();
    note_done();
}
static void sc_tail_validate(void) { /* WINHEAP_DEBUG=tail, termination on by default */
    HANDLE h = new_heap(0);
    char *p = HeapAlloc(h, 0, 100);
    CHECK(p != NULL);
    wh_test_poke(p + 104, 0, 1);
    DWORD le;
    CHECK(HeapValidate(h, 0, NULL) == FALSE && HeapValidate(h, 0, p) == FALSE);
    CHECK(walk_count(h, &le, 100000) < 100000 && le == ERROR_NO_MORE_ITEMS);
    wh_test_poke(p + 104, 0xAB, 1);
    CHECK(HeapValidate(h, 0, NULL) == TRUE);
}
static void test_row_25_validate_and_walk_corrupted(void **state) {
    (void)state;
    row25_checks();
    expect_clean(row25_child, NULL, "row 25 with termination on");
    wh_child_result r;
    run_scenario("tail_validate", "WINHEAP_DEBUG=tail", NULL, &r);
    check_clean(&r, "row 25 damaged tail, termination on");
}

/* ------------------------------------------------------------------------ */
/* Row 26: the debug-flag contract (D18, D7)                                */
/* ------------------------------------------------------------------------ */

static void tail_ok(const char *p, size_t n) {
    for (size_t i = 0; i < WH_TAIL_BYTES; i++) CHECK(peek(p + n + i) == 0xAB);
}
static void sc_debug_contract(void) {
    HANDLE h = new_heap(0), ph = GetProcessHeap();
    HANDLE heaps[2] = { h, ph };
    for (int k = 0; k < 2; k++)
        for (size_t n = 0; n < 64; n++) {
            char *p = HeapAlloc(heaps[k], 0, n), *z = HeapAlloc(heaps[k], HEAP_ZERO_MEMORY, n);
            CHECK(p && z && !in_lfh(p));
            tail_ok(p, n);
            tail_ok(z, n);
            for (size_t i = 0; i < n; i++) CHECK(peek(p + i) == pat(WH_FILL_NEW, p + i) && z[i] == 0);
            unsigned char old = peek(p + n + (n % 8)); /* every tail byte counts */
            wh_test_poke(p + n + (n % 8), old ^ 1, 1);
            CHECK(HeapValidate(heaps[k], 0, p) == FALSE && HeapValidate(heaps[k], 0, NULL) == FALSE);
            wh_test_poke(p + n + (n % 8), old, 1);
            CHECK(HeapValidate(heaps[k], 0, p) == TRUE && HeapFree(heaps[k], 0, p) && HeapFree(heaps[k], 0, z));
        }
    /* in-place shrink and grow re-pad the tail */
    char *p = HeapAlloc(h, 0, 200);
    CHECK(HeapReAlloc(h, HEAP_REALLOC_IN_PLACE_ONLY, p, 100) == p);
    tail_ok(p, 100);
    CHECK(HeapReAlloc(h, HEAP_REALLOC_IN_PLACE_ONLY, p, 37) == p);
    tail_ok(p, 37);
    CHECK(HeapReAlloc(h, HEAP_REALLOC_IN_PLACE_ONLY, p, 150) == p);
    tail_ok(p, 150);
    CHECK(HeapValidate(h, 0, NULL));
    /* freed bytes read 0xFEEEFEEE and every one is checked */
    char *q = HeapAlloc(h, 0, 256), *r = HeapAlloc(h, 0, 256);
    CHECK(q && r && HeapFree(h, 0, q));
    for (int i = 16; i < 256; i++) CHECK(peek(q + i) == pat(WH_FILL_FREE, q + i));
    for (int i = 16; i < 256; i += 37) {
        unsigned char old = peek(q + i);
        wh_test_poke(q + i, old ^ 0x80, 1);
        CHECK(HeapValidate(h, 0, NULL) == FALSE);
        wh_test_poke(q + i, old, 1);
        CHECK(HeapValidate(h, 0, NULL) == TRUE);
    }
    /* no LFH while debugging */
    char *v[100];
    for (int i = 0; i < 100; i++) CHECK((v[i] = HeapAlloc(h, 0, 32)) && !in_lfh(v[i]));
    ULONG c = 9, two = 2;
    CHECK(HeapQueryInformation(h, HeapCompatibilityInformation, &c, sizeof c, NULL) && c == 0);
    CHECK(HeapQueryInformation(ph, HeapCompatibilityInformation, &c, sizeof c, NULL) && c == 0);
    CHECK(HeapSetInformation(h, HeapCompatibilityInformation, &two, sizeof two) == FALSE);
    for (int i = 0; i < 100; i++) CHECK(HeapFree(h, 0, v[i]));
    CHECK(HeapFree(h, 0, p) && HeapFree(h, 0, r) && HeapValidate(h, 0, NULL));
}
static void test_row_26_debug_flag_contract(void **state) {
    (void)state;
    wh_child_result r;
    run_scenario("debug_contract", "WINHEAP_DEBUG=tail,free", "WINHEAP_TERMINATE_ON_CORRUPTION=0", &r);
    check_clean(&r, "row 26 WINHEAP_DEBUG=tail,free");
    /* D7: HeapCreate ignores the checking flags: this is an ordinary heap */
    HANDLE h = HeapCreate(HEAP_TAIL_CHECKING_ENABLED | HEAP_FREE_CHECKING_ENABLED, 0, 0);
    CHECK(h != NULL);
    char *v[20];
    for (int i = 0; i < 20; i++) CHECK((v[i] = HeapAlloc(h, 0, 32)) != NULL);
    ULONG c = 0;
    CHECK(HeapQueryInformation(h, HeapCompatibilityInformation, &c, sizeof c, NULL) && c == 2 && in_lfh(v[19]));
    CHECK(HeapDestroy(h));
}

/* ------------------------------------------------------------------------ */
/* Row 27: the termination-on-corruption contract                           */
/* ------------------------------------------------------------------------ */

/* A malloc that fails (and says so) while armed: the fatal path must not
 * allocate.  Sanitizer runtimes own malloc, so there a hook only reports. */
static volatile int g_malloc_armed;
static void malloc_seen(void) { say("MALLOC called on the fatal path\n"); }
#if REL_ASAN || REL_TSAN
int __sanitizer_install_malloc_and_free_hooks(void (*)(const volatile void *, size_t), void (*)(const volatile void *));
static void malloc_hook(const volatile void *p, size_t n) {
    (void)p, (void)n;
    if (g_malloc_armed) malloc_seen();
}
static void free_hook(const volatile void *p) { (void)p; }
static void arm_malloc(void) {
    __sanitizer_install_malloc_and_free_hooks(malloc_hook, free_hook);
    g_malloc_armed = 1;
}
#else
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
#define ARMED_FAIL(ret) do { if (g_malloc_armed) { malloc_seen(); errno = ENOMEM; return ret; } } while (0)
void *malloc(size_t n) { ARMED_FAIL(NULL); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { ARMED_FAIL(NULL); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { ARMED_FAIL(NULL); return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { ARMED_FAIL(NULL); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { ARMED_FAIL(NULL); return __libc_memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n) {
    ARMED_FAIL(ENOMEM);
    void *p = __libc_memalign(a, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
static void arm_malloc(void) { g_malloc_armed = 1; }
#endif

static void sc_toc_contract(void) { /* started with WINHEAP_TERMINATE_ON_CORRUPTION=0 */
    HANDLE h = new_heap(1);
    char *p = HeapAlloc(h, 0, 64);
    CHECK(p && HeapFree(h, 0, p));
    SetLastError(0);
    CHECK(HeapFree(h, 0, p) == FALSE && GetLastError() == ERROR_INVALID_PARAMETER); /* off at start-up */
    SetLastError(1234);
    CHECK(HeapSetInformation(NULL, HeapEnableTerminationOnCorruption, NULL, 0) == TRUE && GetLastError() == 1234);
    /* every way we know to switch it off again */
    ULONG zero = 0;
    HeapSetInformation(NULL, HeapEnableTerminationOnCorruption, &zero, sizeof zero);
    HeapSetInformation(h, HeapEnableTerminationOnCorruption, &zero, sizeof zero);
    setenv("WINHEAP_TERMINATE_ON_CORRUPTION", "0", 1);
    HANDLE h2 = new_heap(0); /* a heap created afterwards is covered too */
    char *q = HeapAlloc(h2, 0, 64);
    CHECK(q && HeapFree(h2, 0, q));
    /* stdio fully buffered: a line that appears was written with write(2) */
    static char buf[8192];
    setvbuf(stderr, buf, _IOFBF, sizeof buf);
    note_addr(q);
    arm_malloc();
    HeapFree(h2, 0, q);
    g_malloc_armed = 0;
    survived("a double free after HeapEnableTerminationOnCorruption");
}
static void test_row_27_termination_contract(void **state) {
    (void)state;
    wh_child_result r;
    run_scenario("toc_contract", "WINHEAP_TERMINATE_ON_CORRUPTION=0", NULL, &r);
    check_corruption(&r, "row 27", "HeapFree", "double free", 1);
    if (strstr(r.err, "MALLOC")) fail_msg("row 27: the fatal path allocated");
    /* the hook itself works: armed, a malloc is seen */
    wh_run_child(exec_scenario, &(struct scenario_run){ "malloc_hook_selftest", { NULL } }, 30, &r);
    if (!strstr(r.err, "MALLOC called")) {
        dump("row 27 hook self-test", &r);
        fail_msg("row 27: the malloc hook does not see malloc");
    }
}
static void sc_malloc_hook_selftest(void) {
    arm_malloc();
    void *volatile p = malloc(100);
    g_malloc_armed = 0;
    free(p);
}

/* ------------------------------------------------------------------------ */
/* Row 28: randomization and reuse delay                                    */
/* ------------------------------------------------------------------------ */

/* 1 if the 16 addresses go up (or down) by one constant stride. */
static int constant_stride(char **v) {
    ptrdiff_t d = v[1] - v[0];
    for (int i = 2; i < 16; i++)
        if (v[i] - v[i - 1] != d) return 0;
    return 1;
}
static void test_row_28_randomization_and_reuse_delay(void **state) {
    (void)state;
    HANDLE h = new_heap(0);
    char *v[18 + 64];
    for (int i = 0; i < 18 + 64; i++) {
        CHECK((v[i] = HeapAlloc(h, 0, 48)) != NULL);
        if (i >= 18) CHECK(in_lfh(v[i])); /* on no later than the 18th allocation (D16) */
    }
    int monotonic = 0;
    for (int w = 0; w < 4; w++) monotonic += constant_stride(v + 18 + 16 * w);
    if (monotonic == 4) fail_msg("row 28: LFH addresses come out in a constant stride");
    check_distinct(h, v, 18 + 64, 48);
    CHECK(HeapDestroy(h));
    /* a freed block is not the next one of its size */
    HANDLE heaps[2] = { new_heap(1), GetProcessHeap() };
    const size_t sizes[] = { 1, 16, 48, 100, 1000, 8000, 16000 };
    for (int k = 0; k < 2; k++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            char *keep = HeapAlloc(heaps[k], 0, sizes[s]);
            for (int i = 0; i < 300; i++) {
                char *p = HeapAlloc(heaps[k], 0, sizes[s]);
                CHECK(p && in_lfh(p) && HeapFree(heaps[k], 0, p));
                char *q = HeapAlloc(heaps[k], 0, sizes[s]);
                CHECK(q != NULL);
                if (q == p) fail_msg("row 28: a freed block of %zu bytes came back at once", sizes[s]);
                CHECK(HeapFree(heaps[k], 0, q));
            }
            CHECK(HeapFree(heaps[k], 0, keep));
        }
    CHECK(HeapDestroy(heaps[0]));
    /* WINHEAP_SEED makes both reproducible; different or no seeds differ */
    char seq[4][1024];
    const char *envs[4] = { "WINHEAP_SEED=4242", "WINHEAP_SEED=4242", "WINHEAP_SEED=4243", NULL };
    for (int i = 0; i < 4; i++) {
        wh_child_result r;
        run_scenario("seq", envs[i], NULL, &r);
        check_clean(&r, "row 28 sequence");
        const char *l = strstr(r.err, "note: seq ");
        CHECK(l != NULL);
        snprintf(seq[i], sizeof seq[i], "%.*s", (int)strcspn(l, "\n"), l);
    }
    if (strcmp(seq[0], seq[1]) != 0) fail_msg("row 28: the same seed gave\n%s\n%s", seq[0], seq[1]);
    if (strcmp(seq[0], seq[2]) == 0) fail_msg("row 28: two seeds gave the same order");
    wh_child_result r;
    run_scenario("seq", NULL, NULL, &r);
    const char *l = strstr(r.err, "note: seq ");
    CHECK(l != NULL && strncmp(l, seq[3], strlen(seq[3])) != 0); /* unseeded runs differ */
}
static void sc_seq(void) {
    HANDLE h = new_heap(1);
    char *v[80], out[1024];
    size_t n = (size_t)snprintf(out, sizeof out, "note: seq");
    for (int i = 0; i < 80; i++) CHECK((v[i] = HeapAlloc(h, 0, 48)) != NULL);
    for (int i = 1; i < 48; i++) n += (size_t)snprintf(out + n, sizeof out - n, " %td", (v[i] - v[0]) / 16);
    n += (size_t)snprintf(out + n, sizeof out - n, " |");
    for (int i = 0; i < 16; i++) { /* the reuse order */
        CHECK(HeapFree(h, 0, v[2 * i]));
        char *q = HeapAlloc(h, 0, 48);
        n += (size_t)snprintf(out + n, sizeof out - n, " %td", (q - v[0]) / 16);
    }
    snprintf(out + n, sizeof out - n, "\n");
    say(out);
}

/* ------------------------------------------------------------------------ */
/* main                                                                     */
/* ------------------------------------------------------------------------ */

static const struct rel_scenario scenarios[] = {
    { "tail_validate", sc_tail_validate },   { "debug_contract", sc_debug_contract },
    { "toc_contract", sc_toc_contract },     { "malloc_hook_selftest", sc_malloc_hook_selftest },
    { "seq", sc_seq },
};

int main(int argc, char **argv) {
    int rc = rel_main_prologue(argc, argv, scenarios, sizeof scenarios / sizeof scenarios[0]);
    if (rc >= 0) return rc;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_13_zero_memory_and_grown_tails),
        cmocka_unit_test(test_row_13_no_stale_data_after_free),
        cmocka_unit_test(test_row_13_grown_in_place_shows_no_metadata),
        cmocka_unit_test(test_row_13_merged_blocks_leave_no_metadata),
        cmocka_unit_test(test_row_14_realloc_freed_or_foreign),
        cmocka_unit_test(test_row_15_failed_realloc_keeps_block),
        cmocka_unit_test(test_row_16_huge_sizes),
        cmocka_unit_test(test_row_17_checked_multiply),
        cmocka_unit_test(test_row_18_fixed_heap_at_maximum),
        cmocka_unit_test(test_row_25_validate_and_walk_corrupted),
        cmocka_unit_test(test_row_26_debug_flag_contract),
        cmocka_unit_test(test_row_27_termination_contract),
        cmocka_unit_test(test_row_28_randomization_and_reuse_delay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
