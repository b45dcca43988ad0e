/*
 * test_reliability.c - RELIABILITY.md rows 1, 2 and 4-12 on the Heap* API
 * (the misuse and corruption rows); rows 13-18 and 25-28 are in
 * test_reliability_contracts.c, rows 3 and 19-24 in test_reliability_threads.c.
 * One test (or a few) per row, named test_row_NN_<case>.
 *
 * The program runs with termination on corruption OFF (main() sets
 * WINHEAP_TERMINATE_ON_CORRUPTION=0 before its first winheap call), so the
 * in-process tests check the clean failures of D4/D5 (FALSE/NULL, error 87,
 * HeapValidate TRUE afterwards, later allocations never hand a block out
 * twice).  Cases with termination ON run in a forked child that first calls
 * HeapSetInformation(NULL, HeapEnableTerminationOnCorruption, NULL, 0); the
 * parent checks SIGABRT and that the child wrote exactly one line,
 *   "winheap: STATUS_HEAP_CORRUPTION (0xC0000374) in <Function> at 0x<addr>: <reason>"
 * with <addr> the pointer the child noted ("note: ..." lines are the
 * children's own).  Cases that need options read at start-up (the debug heap,
 * WINHEAP_DEBUG) exec this program again with "--scenario <name>".  Where
 * SPEC section 10 and the matrix differ, section 10 wins: a pointer in no
 * region of the heap (stack, static, mmap, another heap's block) is FALSE/87
 * even with termination on (D4); the reasons are those of notes/decisions.md
 * ("invalid free" for interior pointers).  Row 11 is tested twice: with the
 * debug heap's free checking (D18), and on the default heap, where the matrix
 * asks for a zero fill verified on reuse and by HeapValidate.  Deliberate
 * writes into headers, slack and freed memory go through wh_test_poke.
 */
#define _GNU_SOURCE
#include "reliability_util.h"

/* ------------------------------------------------------------------------ */
/* Rows 1 and 2: double free, immediate and delayed                         */
/* ------------------------------------------------------------------------ */


static void df_child(void *arg) {
    const struct df_case *c = arg;
    child_begin();
    toc_on();
    HANDLE h = heap_of_kind(c->heap);
    char *p = HeapAlloc(h, 0, c->size), *q = HeapAlloc(h, 0, c->size);
    CHECK(p && q && in_lfh(p) == c->want_lfh);
    fill(p, c->size < 4096 ? c->size : 4096, 1);
    CHECK(HeapFree(h, 0, p) == TRUE);
    if (c->pattern == 1) CHECK(HeapFree(h, 0, q) == TRUE);
    if (c->pattern == 2) CHECK(HeapAlloc(h, 0, c->size) != p); /* p stays in the delay slot */
    if (c->pattern == 3) wh_test_poke(p, 0x5c, 16);           /* the list says nothing any more */
    if (c->size >= WINHEAP_LARGE_THRESHOLD) {                  /* the pages are gone */
        CHECK(msync((void *)((uintptr_t)p & ~(uintptr_t)4095), 4096, MS_ASYNC) != 0 && errno == ENOMEM);
    }
    note_addr(p);
    HeapFree(h, 0, p);
    survived("the second HeapFree");
}

/* Termination off: the second free fails with 87, the heap stays valid, and
 * later allocations never hand p out twice. */
static void df_off(const struct df_case *c) {
    HANDLE h = heap_of_kind(c->heap);
    char *p = HeapAlloc(h, 0, c->size), *q = HeapAlloc(h, 0, c->size);
    CHECK(p && q && in_lfh(p) == c->want_lfh);
    CHECK(HeapFree(h, 0, p) == TRUE);
    if (c->pattern == 1) CHECK(HeapFree(h, 0, q) == TRUE);
    char *extra = c->pattern == 2 ? HeapAlloc(h, 0, c->size) : NULL;
    CHECK(extra != p);
    SetLastError(0);
    CHECK(HeapFree(h, 0, p) == FALSE);
    CHECK(GetLastError() == ERROR_INVALID_PARAMETER);
    CHECK(HeapValidate(h, 0, NULL) == TRUE);
    int n = c->size >= 0x40000 ? 8 : 64;
    char *v[64];
    for (int i = 0; i < n; i++) v[i] = HeapAlloc(h, 0, c->size);
    check_distinct(h, v, n, c->size);
    for (int i = 0; i < n; i++) CHECK(HeapFree(h, 0, v[i]) == TRUE);
    if (extra) CHECK(HeapFree(h, 0, extra) == TRUE);
    if (c->pattern != 1) CHECK(HeapFree(h, 0, q) == TRUE);
    CHECK(HeapValidate(h, 0, NULL) == TRUE);
    if (c->heap != K_PROCESS) CHECK(HeapDestroy(h) == TRUE);
}

static const struct df_case row1_cases[] = {
    { K_LFH, 64, 1, 0 }, { K_PROCESS, 100, 1, 0 }, { K_PLAIN, 100, 0, 0 }, { K_PLAIN, 20000, 0, 0 },
    { K_LFH, 40000, 0, 0 }, { K_LFH, 64, 1, 3 }, { K_PLAIN, 20000, 0, 3 },
};
static const struct df_case row2_cases[] = {
    { K_LFH, 64, 1, 1 }, { K_LFH, 64, 1, 2 }, { K_PROCESS, 700, 1, 2 }, { K_PLAIN, 100, 0, 1 },
    { K_PLAIN, 256 << 10, 0, 1 }, { K_LFH, 0x100000, 0, 1 }, { K_PLAIN, 2u << 20, 0, 1 },
};

static void test_row_01_double_free_immediate(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof row1_cases / sizeof row1_cases[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "row 1 case %zu (size %zu)", i, row1_cases[i].size);
        expect_corruption(df_child, (void *)&row1_cases[i], what, "HeapFree", "double free");
        if (row1_cases[i].pattern != 3) df_off(&row1_cases[i]);
    }
}

static void test_row_02_double_free_delayed_and_large(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof row2_cases / sizeof row2_cases[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "row 2 case %zu (size %zu)", i, row2_cases[i].size);
        expect_corruption(df_child, (void *)&row2_cases[i], what, "HeapFree", "double free");
        df_off(&row2_cases[i]);
    }
}

/* ------------------------------------------------------------------------ */
/* Row 4: foreign pointers (D4: FALSE/87 even with termination on)          */
/* ------------------------------------------------------------------------ */

static void foreign_checks(void) {
    HANDLE h = new_heap(1), other = new_heap(1);
    _Alignas(16) char stackbuf[64];
    static _Alignas(16) char staticbuf[64];
    char *rw = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *none = mmap(NULL, 65536, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(rw != MAP_FAILED && none != MAP_FAILED);
    memset(rw, 0x33, 65536);
    memset(stackbuf, 0x44, sizeof stackbuf);
    char *own = HeapAlloc(h, 0, 64);
    char *o_lfh = HeapAlloc(other, 0, 64), *o_be = HeapAlloc(other, 0, 40000), *o_large = HeapAlloc(other, 0, 0x100000);
    char *o_ph = HeapAlloc(GetProcessHeap(), 0, 64);
    CHECK(own && o_lfh && o_be && o_large && o_ph && in_lfh(o_lfh) && in_lfh(o_ph));
    fill(o_lfh, 64, 2);
    fill(o_be, 40000, 3);
    fill(o_large, 0x100000, 4);
    void *cands[] = { stackbuf, stackbuf + 16, staticbuf, rw, rw + 16, none, none + 16, (void *)1, (void *)16,
                      (void *)(uintptr_t)0xFFFF800000000000ull, o_lfh, o_be, o_large, o_ph };
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
        void *c = cands[i];
        SetLastError(0);
        CHECK(HeapFree(h, 0, c) == FALSE && GetLastError() == ERROR_INVALID_PARAMETER);
        SetLastError(0);
        CHECK(HeapReAlloc(h, 0, c, 32) == NULL && GetLastError() == ERROR_INVALID_PARAMETER);
        SetLastError(0);
        CHECK(HeapSize(h, 0, c) == (SIZE_T)-1 && GetLastError() == ERROR_INVALID_PARAMETER);
        SetLastError(1234);
        CHECK(HeapValidate(h, 0, c) == FALSE && GetLastError() == 1234);
    }
    /* nothing was modified */
    CHECK(HeapValidate(other, 0, o_lfh) && HeapValidate(other, 0, o_be) && HeapValidate(other, 0, o_large));
    CHECK(HeapSize(other, 0, o_lfh) == 64 && HeapSize(other, 0, o_be) == 40000 && HeapSize(other, 0, o_large) == 0x100000);
    CHECK(intact(o_lfh, 64, 2) && intact(o_be, 40000, 3) && intact(o_large, 0x100000, 4));
    for (int i = 0; i < 65536; i++) CHECK((unsigned char)rw[i] == 0x33);
    for (int i = 0; i < 64; i++) CHECK((unsigned char)stackbuf[i] == 0x44);
    CHECK(HeapValidate(h, 0, NULL) && HeapValidate(other, 0, NULL) && HeapValidate(GetProcessHeap(), 0, NULL));
    CHECK(HeapFree(h, 0, own) && HeapFree(other, 0, o_lfh) && HeapFree(other, 0, o_be) && HeapFree(other, 0, o_large));
    CHECK(HeapFree(GetProcessHeap(), 0, o_ph));
    CHECK(HeapDestroy(h) && HeapDestroy(other));
    munmap(rw, 65536);
    munmap(none, 65536);
}
static void foreign_child(void *arg) {
    (void)arg;
    child_begin();
    toc_on();
    foreign_checks();
    note_done();
}
static void test_row_04_foreign_pointer(void **state) {
    (void)state;
    foreign_checks();                                                   /* termination off */
    expect_clean(foreign_child, NULL, "row 4 with termination on");    /* D4: still no abort */
}

/* ------------------------------------------------------------------------ */
/* Row 5: interior pointers (D5: "invalid free")                            */
/* ------------------------------------------------------------------------ */

struct interior_case {
    int heap;
    size_t size;
    size_t off;
    int want_lfh;
};
static const struct interior_case row5_cases[] = {
    { K_PLAIN, 100, 1, 0 }, { K_PLAIN, 100, 16, 0 }, { K_PLAIN, 65536, 16 << 10, 0 }, { K_LFH, 100, 16, 1 },
    { K_LFH, 100, 1, 1 }, { K_PROCESS, 100, 16, 1 }, { K_PLAIN, 2u << 20, 16, 0 }, { K_PLAIN, 2u << 20, 16 << 10, 0 },
};
static void interior_child(void *arg) {
    const struct interior_case *c = arg;
    child_begin();
    toc_on();
    HANDLE h = heap_of_kind(c->heap);
    char *p = HeapAlloc(h, 0, c->size);
    CHECK(p && in_lfh(p) == c->want_lfh);
    fill(p, c->size < 65536 ? c->size : 65536, 5);
    note_addr(p + c->off);
    HeapFree(h, 0, p + c->off);
    survived("HeapFree of an interior pointer");
}
static void test_row_05_interior_pointer(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof row5_cases / sizeof row5_cases[0]; i++) {
        const struct interior_case *c = &row5_cases[i];
        char what[64];
        snprintf(what, sizeof what, "row 5 case %zu (p+%zu)", i, c->off);
        expect_corruption(interior_child, (void *)c, what, "HeapFree", "invalid free");
        HANDLE h = heap_of_kind(c->heap);
        char *p = HeapAlloc(h, 0, c->size);
        CHECK(p != NULL);
        fill(p, c->size < 65536 ? c->size : 65536, 5);
        SetLastError(0);
        CHECK(HeapFree(h, 0, p + c->off) == FALSE && GetLastError() == ERROR_INVALID_PARAMETER);
        CHECK(HeapValidate(h, 0, NULL) == TRUE && HeapValidate(h, 0, p) == TRUE);
        CHECK(intact(p, c->size < 65536 ? c->size : 65536, 5));
        CHECK(HeapFree(h, 0, p) == TRUE);
        if (c->heap != K_PROCESS) CHECK(HeapDestroy(h) == TRUE);
    }
}

/* ------------------------------------------------------------------------ */
/* Row 6: NULL and trivial arguments                                        */
/* ------------------------------------------------------------------------ */


static void test_row_06_null_and_trivial_arguments(void **state) {
    (void)state;
    HANDLE heaps[3] = { new_heap(1), new_heap(0), GetProcessHeap() };
    winheap_set_exception_handler(exc_handler);
    g_exc_calls = 0;
    for (int k = 0; k < 3; k++) {
        HANDLE h = heaps[k];
        SetLastError(77);
        CHECK(HeapFree(h, 0, NULL) == TRUE && GetLastError() == 77);
        SetLastError(77);
        CHECK(HeapReAlloc(h, 0, NULL, 1) == NULL && GetLastError() == 0); /* D2: no implicit alloc */
        if (setjmp(g_exc_jmp) == 0) CHECK(HeapReAlloc(h, HEAP_GENERATE_EXCEPTIONS, NULL, 1) == NULL);
        CHECK(g_exc_calls == 0);
        char *v[40];
        for (int i = 0; i < 40; i++) {
            v[i] = HeapAlloc(h, 0, 0);
            CHECK(v[i] != NULL && ((uintptr_t)v[i] & 15) == 0 && HeapSize(h, 0, v[i]) == 0);
            for (int j = 0; j < i; j++) CHECK(v[i] != v[j]);
        }
        for (int i = 0; i < 40; i++) CHECK(HeapFree(h, 0, v[i]) == TRUE);
        CHECK(HeapValidate(h, 0, NULL) == TRUE);
    }
    SetLastError(77);
    CHECK(HeapFree(NULL, 0, NULL) == TRUE && HeapFree((HANDLE)0x1234, 0, NULL) == TRUE); /* D3 */
    winheap_set_exception_handler(NULL);
    CHECK(HeapDestroy(heaps[0]) && HeapDestroy(heaps[1]));
}

/* ------------------------------------------------------------------------ */
/* Row 7: bad and stale heap handles                                        */
/* ------------------------------------------------------------------------ */

static void bad_handle_checks(HANDLE bad) {
    PROCESS_HEAP_ENTRY e = { 0 };
    HEAP_SUMMARY s = { .cb = sizeof s };
    ULONG v = 2;
    SIZE_T len = 0;
    char local[32];
#define LE6(expr) do { SetLastError(0); CHECK(expr); CHECK(GetLastError() == ERROR_INVALID_HANDLE); } while (0)
    LE6(HeapAlloc(bad, 0, 16) == NULL);
    LE6(HeapReAlloc(bad, 0, local, 16) == NULL);
    LE6(HeapFree(bad, 0, local) == FALSE);
    LE6(HeapSize(bad, 0, local) == (SIZE_T)-1);
    LE6(HeapCompact(bad, 0) == 0);
    LE6(HeapLock(bad) == FALSE);
    LE6(HeapUnlock(bad) == FALSE);
    LE6(HeapWalk(bad, &e) == FALSE);
    LE6(HeapSummary(bad, 0, &s) == FALSE);
    LE6(HeapDestroy(bad) == FALSE);
    LE6(winheap_aligned_alloc(bad, 0, 64, 16) == NULL);
    LE6(HeapSetInformation(bad, HeapCompatibilityInformation, &v, sizeof v) == FALSE);
    if (bad) LE6(HeapQueryInformation(bad, HeapCompatibilityInformation, &v, sizeof v, &len) == FALSE);
#undef LE6
    SetLastError(1234);
    CHECK(HeapValidate(bad, 0, NULL) == FALSE && GetLastError() == 1234); /* D2: never changes LE */
}

static void bad_handles_all(void) {
    HANDLE keep = new_heap(1);
    char *blk = HeapAlloc(keep, 0, 64), *big = HeapAlloc(keep, 0, 0x100000);
    CHECK(blk && big);
    HANDLE dead = new_heap(1);
    CHECK(HeapAlloc(dead, 0, 64) && HeapAlloc(dead, 0, 0x100000));
    CHECK(HeapDestroy(dead) == TRUE);
    char *none = mmap(NULL, 3 * 65536, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(none != MAP_FAILED);
    HANDLE none_aligned = (HANDLE)(((uintptr_t)none + 65535) & ~(uintptr_t)65535);
    _Alignas(65536) static char static_chunk[65536];
    HANDLE bads[] = { NULL, dead, (HANDLE)0x12345, (HANDLE)(uintptr_t)0x7f0000000000ull, none_aligned,
                      (HANDLE)static_chunk, (HANDLE)blk, (HANDLE)((char *)keep + 65536),
                      (HANDLE)((uintptr_t)big & ~(uintptr_t)65535), /* a large block's own mapping */
                      (HANDLE)((uintptr_t)blk & ~(uintptr_t)65535), /* an LFH group chunk */
                      (HANDLE)~(uintptr_t)65535 };
    DWORD before = GetProcessHeaps(0, NULL);
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) bad_handle_checks(bads[i]);
    /* the NULL handle: HeapQueryInformation says ERROR_NOACCESS (D3) */
    ULONG v;
    SetLastError(0);
    CHECK(HeapQueryInformation(NULL, HeapCompatibilityInformation, &v, sizeof v, NULL) == FALSE &&
          GetLastError() == ERROR_NOACCESS);
    /* HeapDestroy(GetProcessHeap()) fails and changes nothing (D3) */
    HANDLE ph = GetProcessHeap();
    char *pb = HeapAlloc(ph, 0, 300);
    CHECK(pb != NULL);
    fill(pb, 300, 9);
    SetLastError(0);
    CHECK(HeapDestroy(ph) == FALSE && GetLastError() == ERROR_INVALID_HANDLE);
    CHECK(GetProcessHeap() == ph && GetProcessHeaps(0, NULL) == before);
    CHECK(HeapValidate(ph, 0, NULL) && HeapValidate(ph, 0, pb) && intact(pb, 300, 9) && HeapFree(ph, 0, pb));
    CHECK(HeapValidate(keep, 0, NULL) && HeapFree(keep, 0, blk) && HeapFree(keep, 0, big) && HeapDestroy(keep));
    munmap(none, 3 * 65536);
}
static void bad_handle_child(void *arg) {
    (void)arg;
    child_begin();
    toc_on();
    bad_handles_all();
    note_done();
}
static void test_row_07_bad_and_stale_handles(void **state) {
    (void)state;
    bad_handles_all();
    expect_clean(bad_handle_child, NULL, "row 7 with termination on");
}

/* ------------------------------------------------------------------------ */
/* Row 8: one byte past the block                                           */
/* ------------------------------------------------------------------------ */

/* Without tail checking: the byte past a 48-byte back-end block is the first
 * byte of the neighbour's header (in the tool builds, past 16 bytes of
 * slack: the first byte that reaches metadata).  Caught by the free. */
static char *overflow_target(HANDLE h, char *a, size_t n) {
    char *t = next_header(h, a);
    if (WH_TOOL_RZ == 0) CHECK(t == a + n); /* p[HeapSize(p)] is metadata here (no tool slack) */
    CHECK(t >= a + n && t <= a + n + WH_TOOL_RZ);
    return t;
}
static void row8_child(void *arg) {
    (void)arg;
    child_begin();
    toc_on();
    HANDLE h = new_heap(0);
    char *a = HeapAlloc(h, 0, 48), *b = HeapAlloc(h, 0, 48);
    CHECK(a && b && !in_lfh(a));
    char *t = overflow_target(h, a, 48);
    wh_test_poke(t, peek(t) ^ 0xcc, 1);
    note_addr(a);
    HeapFree(h, 0, a);
    survived("HeapFree of a block that overflowed into metadata");
}
static void test_row_08_one_byte_overflow(void **state) {
    (void)state;
    /* termination off: FALSE/87, and restoring the byte repairs everything */
    HANDLE h = new_heap(0);
    char *a = HeapAlloc(h, 0, 48), *b = HeapAlloc(h, 0, 48);
    CHECK(a && b && !in_lfh(a));
    char *t = overflow_target(h, a, 48);
    unsigned char old = peek(t);
    wh_test_poke(t, old ^ 0xcc, 1);
    SetLastError(0);
    CHECK(HeapFree(h, 0, a) == FALSE && GetLastError() == ERROR_INVALID_PARAMETER);
    CHECK(HeapValidate(h, 0, NULL) == FALSE);
    wh_test_poke(t, old, 1);
    CHECK(HeapValidate(h, 0, NULL) == TRUE && HeapFree(h, 0, a) == TRUE && HeapFree(h, 0, b) == TRUE);
    CHECK(HeapDestroy(h));
    expect_corruption(row8_child, NULL, "row 8 without tail checking", "HeapFree", "bad block header");
    /* with tail checking (D18): HeapValidate(h,0,p) sees p[HeapSize(p)] */
    wh_child_result r;
    run_scenario("tail_byte", "WINHEAP_DEBUG=tail", "WINHEAP_TERMINATE_ON_CORRUPTION=0", &r);
    check_clean(&r, "row 8 with WINHEAP_DEBUG=tail");
}
static void sc_tail_byte(void) {
    HANDLE heaps[2] = { new_heap(0), GetProcessHeap() };
    const size_t sizes[] = { 0, 1, 15, 16, 17, 48, 100, 4000, 20000, 300000, 0x100000 };
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            HANDLE h = heaps[k];
            size_t n = sizes[i];
            char *p = HeapAlloc(h, 0, n);
            CHECK(p && HeapSize(h, 0, p) == n && HeapValidate(h, 0, p));
            unsigned char old = peek(p + n);
            wh_test_poke(p + n, 0xcc, 1);
            CHECK(HeapValidate(h, 0, p) == FALSE && HeapValidate(h, 0, NULL) == FALSE);
            wh_test_poke(p + n, old, 1);
            CHECK(HeapValidate(h, 0, p) == TRUE && HeapValidate(h, 0, NULL) == TRUE);
            CHECK(HeapFree(h, 0, p) == TRUE);
        }
}

/* ------------------------------------------------------------------------ */
/* Row 9: overflow into the next block's header                             */
/* ------------------------------------------------------------------------ */

enum { SMASH_16, SMASH_8, SMASH_NUL, SMASH_REPLAY };
struct hdr_case {
    int smash;
    int victim_free; /* the neighbour is a free block */
    int call;        /* TOC-on child: 0 HeapFree(b), 1 HeapReAlloc(b), 2 HeapFree(a) */
};
/* a, b, c adjacent back-end blocks; overwrite b's header from a. Returns
 * the header address; *saved gets its 16 bytes. */
static char *smash_header(HANDLE h, char *a, char *b, char *c, int how, unsigned char *saved) {
    char *hb = next_header(h, a);
    CHECK(hb == b - WH_HDR);
    save_bytes(saved, hb, 16);
    if (how == SMASH_16) {
        wh_test_poke(hb, 0x41, 16);
    } else if (how == SMASH_8) {
        wh_test_poke(hb, 0x41, 8);
    } else if (how == SMASH_NUL) { /* poison null byte: the first non-zero byte */
        int i = 0;
        while (i < 15 && saved[i] == 0) i++;
        wh_test_poke(hb + i, 0, 1);
    } else { /* replay c's valid header at b: keyed by address, so it fails */
        unsigned char ch[16];
        save_bytes(ch, c - WH_HDR, 16);
        poke_bytes(hb, ch, 16);
    }
    return hb;
}
static void three_blocks(HANDLE h, char **a, char **b, char **c) {
    *a = HeapAlloc(h, 0, 200);
    *b = HeapAlloc(h, 0, 200);
    *c = HeapAlloc(h, 0, 200);
    CHECK(*a && *b && *c && !in_lfh(*a));
}
static void row9_child(void *arg) {
    const struct hdr_case *hc = arg;
    child_begin();
    toc_on();
    HANDLE h = new_heap(0);
    char *a, *b, *c;
    unsigned char saved[16];
    three_blocks(h, &a, &b, &c);
    smash_header(h, a, b, c, hc->smash, saved);
    /* the pure queries answer and never terminate (D5) */
    CHECK(HeapSize(h, 0, b) == (SIZE_T)-1 && HeapValidate(h, 0, b) == FALSE && HeapValidate(h, 0, NULL) == FALSE);
    DWORD le;
    CHECK(walk_count(h, &le, 100000) < 100000 && le == ERROR_INVALID_PARAMETER);
    note_addr(hc->call == 2 ? a : b);
    if (hc->call == 0) HeapFree(h, 0, b);
    if (hc->call == 1) HeapReAlloc(h, 0, b, 400);
    if (hc->call == 2) HeapFree(h, 0, a);
    survived("a call on a damaged header");
}
static void test_row_09_neighbour_header_overflow(void **state) {
    (void)state;
    for (int how = SMASH_16; how <= SMASH_REPLAY; how++) {
        HANDLE h = new_heap(0);
        char *a, *b, *c;
        unsigned char saved[16];
        three_blocks(h, &a, &b, &c);
        fill(b, 200, 11);
        char *hb = smash_header(h, a, b, c, how, saved);
        SetLastError(0);
        CHECK(HeapSize(h, 0, b) == (SIZE_T)-1 && GetLastError() == ERROR_INVALID_PARAMETER);
        CHECK(HeapValidate(h, 0, b) == FALSE && HeapValidate(h, 0, NULL) == FALSE);
        DWORD le;
        CHECK(walk_count(h, &le, 100000) < 100000 && le == ERROR_INVALID_PARAMETER); /* stops with FALSE */
        SetLastError(0);
        CHECK(HeapReAlloc(h, 0, b, 400) == NULL && GetLastError() == ERROR_INVALID_PARAMETER);
        SetLastError(0);
        CHECK(HeapFree(h, 0, b) == FALSE && GetLastError() == ERROR_INVALID_PARAMETER);
        SetLastError(0);
        CHECK(HeapFree(h, 0, a) == FALSE && GetLastError() == ERROR_INVALID_PARAMETER);
        SetLastError(0);
        CHECK(HeapFree(h, 0, c) == FALSE && GetLastError() == ERROR_INVALID_PARAMETER);
        poke_bytes(hb, saved, 16); /* nothing was lost */
        CHECK(HeapValidate(h, 0, NULL) == TRUE && intact(b, 200, 11));
        CHECK(walk_count(h, &le, 100000) < 100000 && le == ERROR_NO_MORE_ITEMS);
        CHECK(HeapFree(h, 0, a) && HeapFree(h, 0, b) && HeapFree(h, 0, c) && HeapValidate(h, 0, NULL));
        CHECK(HeapDestroy(h));
    }
    /* a free neighbour: its damaged header is never followed by a merge */
    {
        HANDLE h = new_heap(0);
        char *a, *b, *c;
        unsigned char saved[16];
        three_blocks(h, &a, &b, &c);
        CHECK(HeapFree(h, 0, b) == TRUE);
        char *hb = smash_header(h, a, b, c, SMASH_16, saved);
        SetLastError(0);
        CHECK(HeapFree(h, 0, a) == FALSE && GetLastError() == ERROR_INVALID_PARAMETER);
        CHECK(HeapFree(h, 0, c) == FALSE && HeapValidate(h, 0, NULL) == FALSE);
        poke_bytes(hb, saved, 16);
        CHECK(HeapFree(h, 0, a) && HeapFree(h, 0, c) && HeapValidate(h, 0, NULL) && HeapDestroy(h));
    }
    /* LFH slots keep their metadata out of band: an overflow into the next
     * slot changes only its data */
    {
        HANDLE h = new_heap(1);
        char *v[48];
        for (int i = 0; i < 48; i++) v[i] = HeapAlloc(h, 0, 48);
        char *a = NULL, *b = NULL;
        size_t slot = wh_lfh_class_size(wh_lfh_class(48 + WH_TOOL_RZ));
        for (int i = 0; i < 48 && !a; i++)
            for (int j = 0; j < 48; j++)
                if (v[j] == v[i] + slot) { a = v[i]; b = v[j]; break; }
        CHECK(a && b && in_lfh(a));
        wh_test_poke(a + 48, 0x41, slot - 48 + 16);
        CHECK(HeapSize(h, 0, b) == 48 && HeapValidate(h, 0, b) && HeapValidate(h, 0, NULL));
        for (int i = 0; i < 48; i++) CHECK(HeapFree(h, 0, v[i]) == TRUE);
        CHECK(HeapDestroy(h));
    }
    static const struct hdr_case cases[] = {
        { SMASH_16, 0, 0 }, { SMASH_8, 0, 1 }, { SMASH_NUL, 0, 0 }, { SMASH_REPLAY, 0, 0 }, { SMASH_16, 0, 2 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "row 9 case %zu", i);
        expect_corruption(row9_child, (void *)&cases[i], what, cases[i].call == 1 ? "HeapReAlloc" : "HeapFree",
                          "bad block header");
    }
}

/* ------------------------------------------------------------------------ */
/* Row 10: running off a large block faults at the guard page              */
/* ------------------------------------------------------------------------ */

static void hexline(const char *pre, uintptr_t v) {
    char b[64];
    size_t n = 0;
    while (*pre) b[n++] = *pre++;
    b[n++] = '0';
    b[n++] = 'x';
    for (int i = 15; i >= 0; i--) b[n++] = "0123456789abcdef"[(v >> (4 * i)) & 15];
    b[n++] = '\n';
    if (write(2, b, n) < 0) { /* nothing */ }
}
static void segv_note(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)uc;
    hexline("note: fault ", (uintptr_t)si->si_addr);
    /* SA_RESETHAND: returning re-runs the access, which now kills us */
}
static void row10_child(void *arg) {
    size_t n = *(size_t *)arg;
    child_begin();
    HANDLE h = new_heap(0);
    char *p = HeapAlloc(h, 0, n);
    CHECK(p != NULL && HeapSize(h, 0, p) == n);
    uintptr_t end = ((uintptr_t)p + n + WH_TOOL_RZ + 4095) & ~(uintptr_t)4095;
    for (char *q = p + n; (uintptr_t)q < end; q++) wh_test_poke(q, 0x5a, 1); /* slack up to the page end */
    hexline("note: expect ", end);
    struct sigaction sa = { 0 };
    sa.sa_sigaction = segv_note;
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
    sigaction(SIGSEGV, &sa, NULL);
    wh_test_poke((char *)end, 0x5a, 1);
    survived("a write past the end of a large block's last page");
}
static void test_row_10_large_block_guard_page(void **state) {
    (void)state;
    /* payload ending mid-page (slack up to the page end), and exactly at it */
    size_t sizes[] = { 0x100000, 0x100000 - WH_LARGE_HDR - WH_TOOL_RZ, 0x300000 + 1234 };
    for (int i = 0; i < 3; i++) {
        wh_child_result r;
        wh_run_child(row10_child, &sizes[i], 60, &r);
        const char *e = strstr(r.err, "note: expect "), *f = strstr(r.err, "note: fault ");
        if (r.timed_out || !r.signaled || r.signal != SIGSEGV || !e || !f ||
            strtoull(e + 13, NULL, 16) != strtoull(f + 12, NULL, 16)) {
            dump("row 10", &r);
            fail_msg("row 10 size %zu: expected SIGSEGV at the first byte past the block's last page", sizes[i]);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Row 11: write after free, before reuse                                   */
/* ------------------------------------------------------------------------ */


/* Default heap (no debug switches): the matrix asks for a zero fill that
 * is verified on reuse and by HeapValidate. */
static void test_row_11_write_after_free_default(void **state) {
    (void)state;
    for (int lfh = 0; lfh <= 1; lfh++) {
        HANDLE h = new_heap(lfh);
        char *v[8];
        for (int i = 0; i < 8; i++) v[i] = HeapAlloc(h, 0, 200);
        char *p = v[3];
        CHECK(in_lfh(p) == lfh);
        CHECK(HeapFree(h, 0, p) == TRUE);
        unsigned char old = peek(p + 100);
        wh_test_poke(p + 100, old ^ 0x42, 1);
        CHECK(HeapValidate(h, 0, NULL) == FALSE); /* the write is seen */
        for (int i = 0; i < 40; i++) {
            char *q = HeapAlloc(h, 0, 200);
            CHECK(q != p); /* never handed out with the stray byte */
            if (q) CHECK(HeapFree(h, 0, q) == TRUE);
        }
        wh_test_poke(p + 100, old, 1);
        CHECK(HeapDestroy(h));
    }
}
static void row11_default_child(void *arg) {
    (void)arg;
    child_begin();
    toc_on();
    HANDLE h = new_heap(0);
    char *a = HeapAlloc(h, 0, 200), *p = HeapAlloc(h, 0, 200), *c = HeapAlloc(h, 0, 200);
    CHECK(a && p && c);
    CHECK(HeapFree(h, 0, p) == TRUE);
    wh_test_poke(p + 100, peek(p + 100) ^ 0x42, 1);
    for (int i = 0; i < 40; i++) HeapAlloc(h, 0, 200); /* the reuse must notice */
    survived("reuse of a block written after free");
}
static void test_row_11_write_after_free_default_toc(void **state) {
    (void)state;
    wh_child_result r;
    wh_run_child(row11_default_child, NULL, 60, &r);
    check_corruption(&r, "row 11 default heap, termination on", "HeapAlloc", "write after free", 0);
}
/* WINHEAP_DEBUG=free (D18): freed blocks read 0xFEEEFEEE, checked on reuse
 * and by HeapValidate. */
static void sc_free_check(void) {
    HANDLE h = new_heap(0);
    char *a = HeapAlloc(h, 0, 200), *p = HeapAlloc(h, 0, 200), *c = HeapAlloc(h, 0, 200);
    CHECK(a && p && c && !in_lfh(p));
    for (int i = 0; i < 200; i++) CHECK(peek(p + i) == pat(WH_FILL_NEW, p + i)); /* new: 0xBAADF00D */
    CHECK(HeapFree(h, 0, p) == TRUE);
    for (int i = 16; i < 200; i++) CHECK(peek(p + i) == pat(WH_FILL_FREE, p + i)); /* past the links */
    CHECK(HeapValidate(h, 0, NULL) == TRUE);
    unsigned char old = peek(p + 100);
    wh_test_poke(p + 100, old ^ 0x42, 1);
    CHECK(HeapValidate(h, 0, NULL) == FALSE);
    wh_test_poke(p + 100, old, 1);
    CHECK(HeapValidate(h, 0, NULL) == TRUE);
    wh_test_poke(p + 100, old ^ 0x42, 1);
    for (int i = 0; i < 10; i++) CHECK(HeapAlloc(h, 0, 200) != p);
    if (getenv("REL_TOC")) {
        toc_on();
        note_addr(h);
        HeapAlloc(h, 0, 200);
        survived("reuse of a block written after free (debug)");
    }
    wh_test_poke(p + 100, old, 1);
}
static void test_row_11_write_after_free_debug(void **state) {
    (void)state;
    wh_child_result r;
    run_scenario("free_check", "WINHEAP_DEBUG=free", "WINHEAP_TERMINATE_ON_CORRUPTION=0", &r);
    check_clean(&r, "row 11 WINHEAP_DEBUG=free, termination off");
    struct scenario_run s = { "free_check", { "WINHEAP_DEBUG=free", "WINHEAP_TERMINATE_ON_CORRUPTION=0", "REL_TOC=1", NULL } };
    wh_run_child(exec_scenario, &s, 60, &r);
    check_corruption(&r, "row 11 WINHEAP_DEBUG=free, termination on", "HeapAlloc", "write after free", 0);
}

/* ------------------------------------------------------------------------ */
/* Row 12: free-list link overwrite                                         */
/* ------------------------------------------------------------------------ */

static unsigned char rand_byte(void) {
    static uint64_t s = 0x9e3779b97f4a7c15ull;
    unsigned char b;
    do b = (unsigned char)wh_rand(&s); while (b == 0);
    return b;
}
/* Free a block and overwrite it with one random (non-zero) byte; returns it.
 * In the LFH the newest free waits in its group's delay register, on no
 * list, until the owner's next free: `listed` frees a second block, so that
 * p is on the free list (the tcache-poisoning case proper); without it the
 * link word that is overwritten is the delay register's, which is never
 * followed (it must still be 0 when the slot joins the list). */
static char *smash_free(HANDLE h, int lfh, size_t n, char **v, int nv, int listed) {
    for (int i = 0; i < nv; i++) CHECK((v[i] = HeapAlloc(h, 0, n)) != NULL && in_lfh(v[i]) == lfh);
    char *p = v[nv / 2];
    CHECK(HeapFree(h, 0, p) == TRUE);
    if (listed) CHECK(HeapFree(h, 0, v[nv / 2 + 1]) == TRUE); /* p heads its free list */
    wh_test_poke(p, rand_byte(), n);
    return p;
}
struct row12_case {
    int lfh, listed, nv;
    const char *func; /* where TOC reports it */
};
static void row12_child(void *arg) {
    const struct row12_case *c = arg;
    child_begin();
    toc_on();
    HANDLE h = new_heap(c->lfh);
    char *v[16];
    smash_free(h, c->lfh, 64, v, c->nv, c->listed);
    /* The row's "allocate twice".  Listed, the first pop follows p's link.
     * In the delay register, p is checked when it leaves it: after any pop
     * on the slow path, which the first allocation takes when 16 blocks
     * used up the group's listed slots, or at the owner's next free (8
     * blocks: the allocations stay on the fast path). */
    HeapAlloc(h, 0, 64);
    HeapAlloc(h, 0, 64);
    if (!c->listed) HeapFree(h, 0, v[0]);
    survived("allocations through an overwritten free list");
}
static void test_row_12_free_list_link_overwrite(void **state) {
    (void)state;
    static const struct row12_case cases[] = {
        { 0, 1, 16, "HeapAlloc" }, { 1, 1, 16, "HeapAlloc" }, { 1, 0, 16, "HeapAlloc" }, { 1, 0, 8, "HeapFree" },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int lfh = cases[k].lfh, listed = cases[k].listed;
        HANDLE h = new_heap(lfh);
        char *v[16];
        char *p = smash_free(h, lfh, 64, v, cases[k].nv, listed);
        uintptr_t forged = (uintptr_t)(peek64(p) ^ ((wh_heap *)h)->key_link); /* where the link now points */
        CHECK(HeapValidate(h, 0, NULL) == FALSE); /* the heap reports it */
        char *got[100];
        int n = 0;
        for (int i = 0; i < 100; i++) {
            SetLastError(0);
            char *q = HeapAlloc(h, 0, 64);
            if (!q) { /* refused: corruption reported as 87, never out of memory */
                CHECK(GetLastError() == ERROR_INVALID_PARAMETER);
                continue;
            }
            /* p itself may come back (it is a free slot); never a forged address */
            CHECK(HeapValidate(h, 0, q) == TRUE && HeapSize(h, 0, q) == 64); /* inside the heap */
            CHECK((uintptr_t)q != forged && (uintptr_t)q != forged + WH_HDR);
            CHECK(q != p); /* (smashed: never handed out again) */
            got[n++] = q;
            if (!listed && i == 1) CHECK(HeapFree(h, 0, v[0]) == TRUE); /* p leaves the delay register */
        }
        check_distinct(h, got, n, 64);
        for (int i = 0; i < n; i++) CHECK(HeapFree(h, 0, got[i]) == TRUE);
        CHECK(HeapDestroy(h));
        char what[64];
        snprintf(what, sizeof what, "row 12 %s%s, %d blocks", lfh ? "LFH" : "back end", listed ? "" : ", delay register",
                 cases[k].nv);
        wh_child_result r;
        wh_run_child(row12_child, (void *)&cases[k], 60, &r);
        check_corruption(&r, what, cases[k].func, "free list corrupted", 0);
    }
}

/* ------------------------------------------------------------------------ */
/* main                                                                     */
/* ------------------------------------------------------------------------ */

/* WINHEAP_ZERO_ON_FREE=0 turns rows 11 and 13 off, and nothing else: freed
 * bytes stay as they were and a write after free goes unnoticed (which is
 * what is checked here, to show the switch takes effect), while
 * HEAP_ZERO_MEMORY, grown tails and every other check still hold. */
static void sc_zero_off(void) {
    for (int lfh = 0; lfh <= 1; lfh++) {
        HANDLE h = new_heap(lfh);
        char *v[8];
        for (int i = 0; i < 8; i++) CHECK((v[i] = HeapAlloc(h, 0, 200)) != NULL && in_lfh(v[i]) == lfh);
        memset(v[3], 'S', 200);
        CHECK(HeapFree(h, 0, v[3]) == TRUE);
        CHECK(peek(v[3] + 100) == 'S');           /* not zeroed */
        wh_test_poke(v[3] + 120, 'W', 1);          /* a write after free ... */
        CHECK(HeapValidate(h, 0, NULL) == TRUE);   /* ... is not looked for */
        int dirty = 0;
        for (int k = 0; k < 64; k++) {             /* the freed block comes back: only its request is zero */
            char *z = HeapAlloc(h, HEAP_ZERO_MEMORY, 200);
            CHECK(z != NULL);
            for (int i = 0; i < 200; i++) CHECK(z[i] == 0);
            dirty |= z == v[3];
            char *g = HeapReAlloc(h, HEAP_ZERO_MEMORY, z, 190);
            CHECK(g == z);
            memset(g, 'T', 190);
            CHECK((g = HeapReAlloc(h, HEAP_ZERO_MEMORY | HEAP_REALLOC_IN_PLACE_ONLY, g, 200)) == z);
            for (int i = 190; i < 200; i++) CHECK(g[i] == 0); /* the grown tail */
            CHECK(HeapFree(h, 0, g) == TRUE);
        }
        CHECK(dirty);
        for (int i = 0; i < 8; i++) CHECK(i == 3 || HeapFree(h, 0, v[i]) == TRUE);
        CHECK(HeapFree(h, 0, v[0]) == FALSE);      /* double frees are still found */
        CHECK(HeapValidate(h, 0, NULL) == TRUE && HeapDestroy(h));
    }
}
static void test_rows_11_13_zero_on_free_off(void **state) {
    (void)state;
    wh_child_result r;
    run_scenario("zero_off", "WINHEAP_ZERO_ON_FREE=0", "WINHEAP_TERMINATE_ON_CORRUPTION=0", &r);
    check_clean(&r, "WINHEAP_ZERO_ON_FREE=0");
}

static const struct rel_scenario scenarios[] = {
    { "tail_byte", sc_tail_byte },
    { "free_check", sc_free_check },
    { "zero_off", sc_zero_off },
};

int main(int argc, char **argv) {
    int rc = rel_main_prologue(argc, argv, scenarios, sizeof scenarios / sizeof scenarios[0]);
    if (rc >= 0) return rc;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_01_double_free_immediate),
        cmocka_unit_test(test_row_02_double_free_delayed_and_large),
        cmocka_unit_test(test_row_04_foreign_pointer),
        cmocka_unit_test(test_row_05_interior_pointer),
        cmocka_unit_test(test_row_06_null_and_trivial_arguments),
        cmocka_unit_test(test_row_07_bad_and_stale_handles),
        cmocka_unit_test(test_row_08_one_byte_overflow),
        cmocka_unit_test(test_row_09_neighbour_header_overflow),
        cmocka_unit_test(test_row_10_large_block_guard_page),
        cmocka_unit_test(test_row_11_write_after_free_debug),
        cmocka_unit_test(test_row_11_write_after_free_default),
        cmocka_unit_test(test_row_11_write_after_free_default_toc),
        cmocka_unit_test(test_rows_11_13_zero_on_free_off),
        cmocka_unit_test(test_row_12_free_list_link_overwrite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
