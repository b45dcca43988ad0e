/*
 * test_debug_heap.c - the debug heap (SPEC D18) beyond the reliability rows
 * that already cover it (8, 11 and 26 in test_reliability*.c): what free
 * checking costs next to a big free block, and the page heap on fixed heaps
 * (D7 with D18).
 *
 * Free checking must cost what a call changes, not what the blocks it touches
 * hold: 1,000 small alloc/free pairs (and in-place resizes, aligned blocks)
 * beside a free block of about 60 MiB may fill and check only a few KiB each.
 * That is counted, never timed: debug.c counts every byte it fills or checks
 * (wh_debug_filled, wh_debug_checked; this program links the static library
 * and reads them), and each pair's share is bounded as it goes, so the old
 * behaviour fails at the first pair instead of running for minutes.  The
 * same scenario checks that a write after free inside the big block is still
 * found, by HeapValidate(h, 0, NULL) and when those bytes are handed out, and
 * that pages committed on demand, and decommitted by HeapOptimizeResources
 * and committed again, carry the pattern (HeapValidate is TRUE).
 *
 * The page heap keeps a fixed heap's limits: requests of 0xFE000 or more and
 * requests larger than the heap can hold fail (NULL, ERROR_NOT_ENOUGH_MEMORY,
 * or the exception), filling the heap until NULL stops after exactly as many
 * blocks as without guard mode (the parent, which runs without WINHEAP_DEBUG,
 * fills the same heaps and compares), HeapSummary, HeapWalk and HeapValidate
 * agree, and HeapDestroy unmaps every block.
 *
 * Every case needs WINHEAP_DEBUG at start-up, so each runs as a scenario: the
 * program execs itself with "--scenario <name>" (reliability_util.h), the
 * child reports through "note:" lines, and the parent checks that it
 * finished cleanly.  Termination on corruption is off in the children.
 */
#define _GNU_SOURCE
#include "reliability_util.h"

/* ------------------------------------------------------------------------ */
/* Free checking next to a big free block                                   */
/* ------------------------------------------------------------------------ */

#define MiB ((SIZE_T)1 << 20)
#define PAIRS 1000
/* The bytes one round below may fill and check: a few times its blocks
 * (a 100-byte block is 128 bytes; the old code took 60 MiB and more). */
#define ROUND_WORK 4096

static uint64_t work(void) {
    return atomic_load(&wh_debug_filled) + atomic_load(&wh_debug_checked);
}

/* 1,000 rounds of each small pattern on h, each round's work bounded. */
static void bounded_rounds(HANDLE h, const char *what) {
    for (int kind = 0; kind < 3; kind++) {
        uint64_t start = work();
        for (int i = 0; i < PAIRS; i++) {
            char *p;
            if (kind == 2) {
                CHECK((p = winheap_aligned_alloc(h, 0, 64, 100)) != NULL && ((uintptr_t)p & 63) == 0);
            } else {
                CHECK((p = HeapAlloc(h, 0, 100)) != NULL);
            }
            if (kind == 1) { /* in place, grown into the big block and shrunk back */
                CHECK(HeapReAlloc(h, HEAP_REALLOC_IN_PLACE_ONLY, p, 300) == p);
                CHECK(HeapReAlloc(h, HEAP_REALLOC_IN_PLACE_ONLY, p, 50) == p);
            }
            CHECK(HeapFree(h, 0, p));
            uint64_t w = work() - start;
            if (w > (uint64_t)(i + 1) * ROUND_WORK) {
                char b[200];
                snprintf(b, sizeof b, "FAIL: %s, pattern %d: %llu bytes filled and checked in %d rounds\n", what, kind,
                         (unsigned long long)w, i + 1);
                say(b);
                _exit(3);
            }
        }
        /* the counters do count: every round fills its new block at least */
        CHECK(work() - start >= (uint64_t)PAIRS * 50);
    }
    CHECK(HeapValidate(h, 0, NULL));
}

/* Allocate blocks of `n` bytes until NULL; returns how many (at most cap). */
static int fill_with(HANDLE h, SIZE_T n, char **v, int cap) {
    int k = 0;
    while (k < cap && (v[k] = HeapAlloc(h, 0, n)) != NULL) k++;
    CHECK(k < cap);
    return k;
}

/* A write after free inside h's big free block (the one the small blocks
 * come from) is reported by HeapValidate(h, 0, NULL) and, when its bytes
 * are handed out again, by the allocation (NULL, 87); the heap is whole
 * again once the byte is restored. */
static void write_after_free_found(HANDLE h) {
    char *p = HeapAlloc(h, 0, 100);
    CHECK(p && HeapFree(h, 0, p));
    /* near: in the bytes the next small block takes */
    unsigned char old = peek(p + 50);
    wh_test_poke(p + 50, old ^ 0x42, 1);
    CHECK(HeapValidate(h, 0, NULL) == FALSE);
    SetLastError(0);
    CHECK(HeapAlloc(h, 0, 100) == NULL && GetLastError() == ERROR_INVALID_PARAMETER);
    wh_test_poke(p + 50, old, 1);
    CHECK(HeapValidate(h, 0, NULL) == TRUE);
    /* far: 32 MiB on; small blocks do not reach it, big ones do */
    char *far = p + 32 * MiB;
    old = peek(far);
    wh_test_poke(far, old ^ 0x42, 1);
    CHECK(HeapValidate(h, 0, NULL) == FALSE);
    char *q = HeapAlloc(h, 0, 100);
    CHECK(q != NULL && HeapFree(h, 0, q));
    static char *v[100];
    int k = 0, refused = 0;
    while (k < 100) {
        SetLastError(0);
        if ((v[k] = HeapAlloc(h, 0, 0xF0000)) == NULL) {
            refused = GetLastError() == ERROR_INVALID_PARAMETER;
            break;
        }
        k++;
    }
    CHECK(refused); /* the block that would take the written byte */
    for (int i = 0; i < k; i++) CHECK(HeapFree(h, 0, v[i]));
    wh_test_poke(far, old, 1);
    CHECK(HeapValidate(h, 0, NULL) == TRUE);
}

static void sc_free_cost(void) {
    static char *v[100];
    /* a fixed heap committed whole: one 64 MiB free block from the start */
    HANDLE a = HeapCreate(0, 64 * MiB, 64 * MiB);
    CHECK(a != NULL && HeapValidate(a, 0, NULL));
    bounded_rounds(a, "fixed heap, 64 MiB committed");
    write_after_free_found(a);
    bounded_rounds(a, "fixed heap, 64 MiB committed, after the write-after-free checks");
    CHECK(HeapDestroy(a));

    /* a fixed heap committed on demand, its blocks freed and merged */
    HANDLE b = HeapCreate(0, 0, 64 * MiB);
    CHECK(b != NULL);
    int n = fill_with(b, 0xF0000, v, 100);
    CHECK(n >= 60);
    for (int i = 0; i < n; i++) CHECK(HeapFree(b, 0, v[i]));
    CHECK(HeapValidate(b, 0, NULL));
    bounded_rounds(b, "fixed heap, committed on demand");
    /* decommitted, then committed again by the next growth */
    HEAP_OPTIMIZE_RESOURCES_INFORMATION info = { HEAP_OPTIMIZE_RESOURCES_CURRENT_VERSION, 0 };
    CHECK(HeapSetInformation(b, HeapOptimizeResources, &info, sizeof info));
    HEAP_SUMMARY s = { .cb = sizeof s };
    CHECK(HeapSummary(b, 0, &s) && s.cbCommitted < 1 * MiB);
    CHECK(HeapValidate(b, 0, NULL));
    /* a block grown in place into pages committed for it (its remainder
     * lies on them), then freed */
    char *gp = HeapAlloc(b, 0, 100);
    CHECK(gp && HeapReAlloc(b, HEAP_REALLOC_IN_PLACE_ONLY, gp, 0xF0000) == gp);
    CHECK(HeapValidate(b, 0, NULL));
    CHECK(HeapFree(b, 0, gp) && HeapValidate(b, 0, NULL));
    int m = fill_with(b, 0xF0000, v, 100);
    CHECK(m == n);
    for (int i = 0; i < m; i++) CHECK(HeapFree(b, 0, v[i]));
    CHECK(HeapValidate(b, 0, NULL));
    bounded_rounds(b, "fixed heap, decommitted and committed again");
    write_after_free_found(b);
    CHECK(HeapDestroy(b));

    /* a growable heap: 120 blocks of 512 KiB freed (they merge) */
    HANDLE g = HeapCreate(0, 0, 0);
    CHECK(g != NULL);
    static char *w[120];
    for (int i = 0; i < 120; i++) CHECK((w[i] = HeapAlloc(g, 0, 512 << 10)) != NULL && !in_lfh(w[i]));
    for (int i = 0; i < 120; i++) CHECK(HeapFree(g, 0, w[i]));
    CHECK(HeapValidate(g, 0, NULL));
    bounded_rounds(g, "growable heap, 120 x 512 KiB freed");
    CHECK(HeapDestroy(g));
}

/* run_scenario with a longer limit: a sanitizer build at -O0 reads the
 * 64 MiB heaps byte by byte in every HeapValidate (about 10 s of a child's
 * time, more on a loaded machine). */
static void run_long(const char *name, const char *env1, const char *env2, wh_child_result *r) {
    struct scenario_run s = { name, { env1, env2, NULL, NULL } };
    wh_run_child(exec_scenario, &s, 120, r);
}

static void test_free_checking_cost(void **state) {
    (void)state;
    /* (not with validate: then every call reads the whole heap, by design) */
    const char *modes[] = { "WINHEAP_DEBUG=free", "WINHEAP_DEBUG=tail,free" };
    for (int i = 0; i < 2; i++) {
        wh_child_result r;
        run_long("free_cost", modes[i], "WINHEAP_TERMINATE_ON_CORRUPTION=0", &r);
        check_clean(&r, modes[i]);
    }
}

/* ------------------------------------------------------------------------ */
/* The page heap on fixed heaps                                             */
/* ------------------------------------------------------------------------ */

static const SIZE_T g_maxes[] = { 64 << 10, 256 << 10, 1 << 20 };
#define NMAXES 3
#define GFILL 20000
static char *g_blocks[GFILL];

/* Allocate until NULL (100-byte blocks, or mixed sizes from `seed`); the
 * failure must be out of memory.  Returns the count. */
static int fill_fixed(HANDLE h, int mixed, uint64_t seed) {
    int n = 0;
    for (;;) {
        SIZE_T sz = mixed ? 16 + wh_rand(&seed) % 2000 : 100;
        SetLastError(0);
        char *p = HeapAlloc(h, 0, sz);
        if (!p) {
            CHECK(GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
            return n;
        }
        CHECK(n < GFILL && ((uintptr_t)p & 15) == 0 && HeapSize(h, 0, p) == sz);
        g_blocks[n++] = p;
    }
}

/* The requests that must fail on a fixed heap of maximum `max`: NULL with
 * ERROR_NOT_ENOUGH_MEMORY, nothing allocated. */
static void over_limit_fails(HANDLE h, SIZE_T max) {
    const SIZE_T sizes[] = { max + 1, max + 4096, WINHEAP_FIXED_LIMIT, WINHEAP_FIXED_LIMIT + 4096, 0x100000, 64 * MiB };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        SetLastError(0);
        CHECK(HeapAlloc(h, 0, sizes[i]) == NULL && GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
        SetLastError(0);
        CHECK(winheap_aligned_alloc(h, 0, 64, sizes[i]) == NULL && GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
    }
}

/* HeapWalk, HeapSummary and HeapValidate agree on h: `n` busy blocks of
 * `bytes` bytes in all. */
static void consistent(HANDLE h, SIZE_T max, int n, SIZE_T bytes) {
    PROCESS_HEAP_ENTRY e = { 0 };
    int busy = 0;
    SIZE_T sum = 0;
    SetLastError(0);
    while (HeapWalk(h, &e))
        if (e.wFlags & PROCESS_HEAP_ENTRY_BUSY) {
            busy++;
            sum += e.cbData;
            CHECK(HeapSize(h, 0, e.lpData) == e.cbData && HeapValidate(h, 0, e.lpData));
        }
    CHECK(GetLastError() == ERROR_NO_MORE_ITEMS && busy == n && sum == bytes);
    HEAP_SUMMARY s = { .cb = sizeof s };
    CHECK(HeapSummary(h, 0, &s) && s.cbAllocated == bytes && s.cbMaxReserve == wh_align_up(max, 4096));
    CHECK(s.cbCommitted <= s.cbReserved);
    CHECK(HeapValidate(h, 0, NULL));
}

/* The page after p's last byte (after the tools' slack) is inaccessible; in
 * an ordinary build it starts right at the block's end rounded to its
 * alignment (16, or `align` for an aligned block). */
static void guarded(const char *p, SIZE_T n, size_t align) {
    uintptr_t end = (uintptr_t)p + n + WH_TOOL_RZ;
    uintptr_t guard = wh_align_up(end, 4096);
    if (WH_TOOL_RZ == 0) CHECK(guard == wh_align_up((uintptr_t)p + n, align));
    CHECK(maps_range_is((void *)guard, (void *)(guard + 4096), "---p"));
    CHECK(!maps_range_unmapped((void *)guard, (void *)(guard + 4096)));
    CHECK(maps_range_is((void *)(guard - 1), (void *)guard, "rw-p"));
}

static void sc_guard_fixed(void) {
    for (int m = 0; m < NMAXES; m++) {
        SIZE_T max = g_maxes[m];
        HANDLE h = HeapCreate(0, m == 1 ? 64 << 10 : 0, max);
        CHECK(h != NULL);
        over_limit_fails(h, max);
        consistent(h, max, 0, 0);
        /* every block against its guard page, its cost charged */
        char *p = HeapAlloc(h, 0, 100), *q = winheap_aligned_alloc(h, 0, 256, 1000);
        CHECK(p && q && ((uintptr_t)q & 255) == 0);
        guarded(p, 100, 16);
        guarded(q, 1000, 256);
        CHECK(((wh_heap *)h)->fixed_charged == wh_large_fixed_cost(100) + wh_large_fixed_cost(1000));
        /* HeapReAlloc keeps the limits and the block */
        SetLastError(0);
        CHECK(HeapReAlloc(h, 0, p, WINHEAP_FIXED_LIMIT) == NULL && GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
        SetLastError(0);
        CHECK(HeapReAlloc(h, 0, p, max) == NULL && GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
        CHECK(HeapSize(h, 0, p) == 100 && HeapValidate(h, 0, p));
        CHECK((p = HeapReAlloc(h, 0, p, max / 4)) != NULL && HeapSize(h, 0, p) == max / 4);
        guarded(p, max / 4, 16); /* a resized block still ends against its guard page */
        CHECK((p = HeapReAlloc(h, 0, p, 10)) != NULL);
        guarded(p, 10, 16);
        CHECK(((wh_heap *)h)->fixed_charged == wh_large_fixed_cost(10) + wh_large_fixed_cost(1000));
        CHECK(HeapFree(h, 0, p) && HeapFree(h, 0, q) && ((wh_heap *)h)->fixed_charged == 0);
        /* HeapCompact reports the largest block the charge still allows:
         * it can be allocated, and one more byte cannot (unless the answer
         * is the limit's), before and after other blocks take their share */
        for (int k = 0; k < 2; k++) {
            char *other = k ? HeapAlloc(h, 0, max / 3) : NULL;
            CHECK(!k || other);
            SIZE_T c = HeapCompact(h, 0);
            CHECK(c > 0 && c < WINHEAP_FIXED_LIMIT && c <= max);
            char *big = HeapAlloc(h, 0, c);
            CHECK(big != NULL);
            CHECK(HeapFree(h, 0, big));
            if (c < WINHEAP_FIXED_LIMIT - 1) {
                SetLastError(0);
                CHECK(HeapAlloc(h, 0, c + 1) == NULL && GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
            }
            CHECK(!other || HeapFree(h, 0, other));
        }
        /* fill until NULL, twice, then mixed sizes; report the counts */
        int live = 0;
        for (int mixed = 0; mixed <= 1; mixed++) {
            int n = fill_fixed(h, mixed, 7 + (uint64_t)m);
            SIZE_T bytes = 0;
            for (int i = 0; i < n; i++) bytes += HeapSize(h, 0, g_blocks[i]);
            CHECK(n > 0 && bytes <= max);
            consistent(h, max, n, bytes);
            over_limit_fails(h, max);
            SetLastError(0);
            CHECK(winheap_aligned_alloc(h, 0, 64, 2000) == NULL && GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
            guarded(g_blocks[n / 2], HeapSize(h, 0, g_blocks[n / 2]), 16);
            char b[80];
            snprintf(b, sizeof b, "note: fill %d %d %d\n", m, mixed, n);
            say(b);
            for (int i = 0; i < n; i++) CHECK(HeapFree(h, 0, g_blocks[i]));
            consistent(h, max, 0, 0);
            CHECK(((wh_heap *)h)->fixed_charged == 0);
            live = fill_fixed(h, mixed, 7 + (uint64_t)m);
            CHECK(live == n);
            if (mixed) break;
            for (int i = 0; i < live; i++) CHECK(HeapFree(h, 0, g_blocks[i]));
        }
        /* HeapDestroy with the mixed fill live: every mapping goes */
        for (int i = 0; i < live; i++) CHECK(wh_region_of(g_blocks[i]) != NULL);
        CHECK(HeapDestroy(h));
        for (int i = 0; i < live; i++) {
            uintptr_t pg = (uintptr_t)g_blocks[i] & ~(uintptr_t)4095;
            CHECK(wh_region_map_get(g_blocks[i]) == 0 && maps_range_unmapped((void *)pg, (void *)(pg + 4096)));
        }
    }
    /* HEAP_GENERATE_EXCEPTIONS: over the limit raises STATUS_NO_MEMORY */
    HANDLE h = HeapCreate(HEAP_GENERATE_EXCEPTIONS, 0, 64 << 10);
    CHECK(h != NULL);
    winheap_set_exception_handler(exc_handler);
    const SIZE_T reqs[] = { 0x100000, (64 << 10) + 1 };
    for (int i = 0; i < 2; i++) {
        g_exc_calls = 0;
        if (setjmp(g_exc_jmp) == 0) {
            HeapAlloc(h, 0, reqs[i]);
            CHECK(!"no exception");
        }
        CHECK(g_exc_calls == 1 && g_exc_status == STATUS_NO_MEMORY && g_exc_size == reqs[i]);
    }
    winheap_set_exception_handler(NULL);
    CHECK(HeapValidate(h, 0, NULL) && HeapDestroy(h));
    /* growable heaps: no limit; aligned blocks are guarded too */
    HANDLE g = HeapCreate(0, 0, 0);
    char *big = HeapAlloc(g, 0, 0x100000), *al = winheap_aligned_alloc(g, 0, 4096, 5000);
    CHECK(big && al && ((uintptr_t)al & 4095) == 0);
    guarded(big, 0x100000, 16);
    guarded(al, 5000, 4096);
    /* resized blocks move to new guarded mappings, contents kept */
    memset(big, 0x3C, 0x100000);
    CHECK((big = HeapReAlloc(g, 0, big, 0x180008)) != NULL && big[0] == 0x3C && big[0xFFFFF] == 0x3C);
    guarded(big, 0x180008, 16);
    CHECK((big = HeapReAlloc(g, 0, big, 40)) != NULL && big[0] == 0x3C && big[39] == 0x3C);
    guarded(big, 40, 16);
    CHECK((al = HeapReAlloc(g, HEAP_ZERO_MEMORY, al, 9000)) != NULL && al[8999] == 0);
    guarded(al, 9000, 16);
    CHECK(HeapValidate(g, 0, NULL));
    CHECK(HeapFree(g, 0, big) && HeapFree(g, 0, al) && HeapDestroy(g));
}

static void test_guard_fixed_heap_limits(void **state) {
    (void)state;
    /* without guard mode (this process): the counts to match */
    int want[NMAXES][2];
    for (int m = 0; m < NMAXES; m++) {
        HANDLE h = HeapCreate(0, m == 1 ? 64 << 10 : 0, g_maxes[m]);
        CHECK(h != NULL);
        for (int mixed = 0; mixed <= 1; mixed++) {
            want[m][mixed] = fill_fixed(h, mixed, 7 + (uint64_t)m);
            for (int i = 0; i < want[m][mixed]; i++) CHECK(HeapFree(h, 0, g_blocks[i]));
        }
        CHECK(HeapDestroy(h));
    }
    for (int tail = 0; tail <= 1; tail++) {
        const char *mode = tail ? "WINHEAP_DEBUG=guard,tail" : "WINHEAP_DEBUG=guard";
        wh_child_result r;
        run_long("guard_fixed", mode, "WINHEAP_TERMINATE_ON_CORRUPTION=0", &r);
        check_clean(&r, mode);
        if (tail) break; /* (the tail padding changes every block's cost: no counts to compare) */
        for (int m = 0; m < NMAXES; m++)
            for (int mixed = 0; mixed <= 1; mixed++) {
                char key[40];
                snprintf(key, sizeof key, "note: fill %d %d ", m, mixed);
                const char *l = strstr(r.err, key);
                CHECK(l != NULL);
                int got = atoi(l + strlen(key));
                if (got != want[m][mixed])
                    fail_msg("max %zu, %s: %d blocks under guard mode, %d without", (size_t)g_maxes[m],
                             mixed ? "mixed sizes" : "100 bytes", got, want[m][mixed]);
            }
    }
}

/* ------------------------------------------------------------------------ */
/* main                                                                     */
/* ------------------------------------------------------------------------ */

static const struct rel_scenario scenarios[] = {
    { "free_cost", sc_free_cost },
    { "guard_fixed", sc_guard_fixed },
};

int main(int argc, char **argv) {
    int rc = rel_main_prologue(argc, argv, scenarios, sizeof scenarios / sizeof scenarios[0]);
    if (rc >= 0) return rc;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_free_checking_cost),
        cmocka_unit_test(test_guard_fixed_heap_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
