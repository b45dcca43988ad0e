/*
 * test_fault.c - fault injection at every memory-acquiring OS call
 * (RELIABILITY #19, SQLite-style fault simulation).
 *
 * A deterministic mixed workload (a growable heap, a fixed heap, an
 * executable heap and a HEAP_NO_SERIALIZE heap; small and medium blocks,
 * blocks served by the low-fragmentation heap,
 * blocks that need new commits and new regions, large blocks >= 0xFF000,
 * reallocs that grow small -> large and shrink large -> small, frees,
 * HeapOptimizeResources, HeapCompact, HeapDestroy with live blocks) is run
 * once per N with wh_prim_fail_at(N, sticky) armed, for N = 1, 2, ... until a
 * run makes fewer than N acquiring calls; once with sticky = 0 (only the Nth
 * call fails) and once with sticky = 1 (the Nth and every later call fail).
 * Checked on every run:
 *   - a call that fails returns NULL/FALSE with GetLastError() == 8, and only
 *     when an injected failure happened inside it (counted with
 *     wh_prim_calls); with sticky = 0 the same call retried succeeds and at
 *     most one call per run fails;
 *   - after every step HeapValidate(h, 0, NULL) is TRUE on every live heap and
 *     the block touched keeps its fill pattern; all blocks are verified after
 *     every failure and at checkpoints; a failed HeapReAlloc leaves the block
 *     as it was;
 *   - after the workload has destroyed its heaps,
 *     wh_prim_reserved_bytes() - wh_region_map_bytes() is back at its value
 *     before the workload (nothing leaked on any error path).
 * A second test sets RLIMIT_AS (current VM + 64 MiB) in a forked child: large
 * and small allocations then fail with NULL and error 8, the heap validates,
 * every block can be freed, and memory is usable again afterwards.
 * A third test makes the Nth acquiring call of the very first call into
 * winheap fail (in a fresh exec'd process, since the process heap is created
 * then): the call fails cleanly or succeeds, a retry works, and
 * GetProcessHeaps lists exactly the live heaps.
 */
#define _GNU_SOURCE
#include "test_util.h"
#include "prim.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* From src/internal.h (declared here so that this file needs only prim.h). */
size_t wh_region_map_bytes(void);

#define MAXB 512
#define NHEAPS 4 /* growable, fixed, executable, no-serialize */

typedef struct blk {
    char *p;
    size_t n;
    unsigned char tag;
    int heap; /* index into wl.heaps */
} blk;

typedef struct wl {
    uint64_t fail_n;
    int sticky;
    HANDLE heaps[NHEAPS];
    blk b[MAXB];
    int nb;
    int failures;      /* API calls that failed in this run */
    int steps;
    unsigned char next_tag;
    char where[160];   /* the step being run, for messages */
} wl;

/* Fill patterns: byte i of a block with tag t is g_pat[t][i % PER] (PER is a
 * prime, so a block copied to a page-shifted place does not match), kept
 * twice in a row so that any phase can be compared with one memcmp. */
#define PER 4093
static unsigned char g_pat[256][2 * PER];

static void pat_init(void) {
    static int done;
    if (done) return;
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (int t = 0; t < 256; t++) {
        for (int j = 0; j < PER; j++) g_pat[t][j] = (unsigned char)(wh_rand(&s) >> 56);
        memcpy(&g_pat[t][PER], &g_pat[t][0], PER);
    }
    done = 1;
}

static void fill(char *p, size_t n, unsigned char tag) {
    for (size_t off = 0; off < n; off += PER) memcpy(p + off, g_pat[tag], n - off < PER ? n - off : PER);
}

/* First wrong byte in [from, to), or (size_t)-1. */
static size_t bad_range(const char *p, size_t from, size_t to, unsigned char tag) {
    size_t off = from;
    while (off < to) {
        size_t ph = off % PER;
        size_t c = to - off < PER ? to - off : PER;
        if (memcmp(p + off, &g_pat[tag][ph], c) != 0) {
            for (size_t i = 0; i < c; i++)
                if ((unsigned char)p[off + i] != g_pat[tag][ph + i]) return off + i;
        }
        off += c;
    }
    return (size_t)-1;
}

/* First wrong byte of an n-byte block, or (size_t)-1.  Blocks above 64 KiB
 * are sampled (both ends and the middle, 8 KiB each) unless `full`. */
static size_t bad_byte(const char *p, size_t n, unsigned char tag, int full) {
    if (full || n <= 65536) return bad_range(p, 0, n, tag);
    size_t r;
    if ((r = bad_range(p, 0, 8192, tag)) != (size_t)-1) return r;
    if ((r = bad_range(p, n / 2 - 4096, n / 2 + 4096, tag)) != (size_t)-1) return r;
    return bad_range(p, n - 8192, n, tag);
}

#define WFAIL(w, ...)                                                                               \
    do {                                                                                            \
        char m_[400];                                                                               \
        snprintf(m_, sizeof m_, __VA_ARGS__);                                                       \
        fail_msg("fail_at(%llu, sticky=%d), step %d (%s): %s", (unsigned long long)(w)->fail_n,     \
                 (w)->sticky, (w)->steps, (w)->where, m_);                                          \
    } while (0)

static void verify_block(wl *w, int i, int full) {
    blk *b = &w->b[i];
    size_t off = bad_byte(b->p, b->n, b->tag, full);
    if (off != (size_t)-1)
        WFAIL(w, "block %d (%p, %zu bytes) changed at offset %zu", i, (void *)b->p, b->n, off);
    SIZE_T sz = HeapSize(w->heaps[b->heap], 0, b->p);
    if (sz != b->n) WFAIL(w, "HeapSize of block %d is %zu, expected %zu", i, (size_t)sz, b->n);
}

static void verify_all(wl *w) {
    for (int i = 0; i < w->nb; i++)
        if (w->b[i].p) verify_block(w, i, 0);
}

static void validate_heaps(wl *w) {
    for (int k = 0; k < NHEAPS; k++)
        if (w->heaps[k] && HeapValidate(w->heaps[k], 0, NULL) != TRUE)
            WFAIL(w, "HeapValidate(heap %d) is FALSE", k);
}

/* After a step: heaps valid; everything checked every 8 steps. */
static void after_step(wl *w) {
    w->steps++;
    validate_heaps(w);
    if (w->steps % 8 == 0) verify_all(w);
}

/* Could an injected failure have happened inside a call that made the
 * acquiring calls (before, after]? */
static int injected_in(const wl *w, uint64_t before, uint64_t after) {
    if (w->fail_n == 0) return 0;
    if (w->sticky) return after >= w->fail_n;
    return before < w->fail_n && w->fail_n <= after;
}

/* A call failed: it must be an injected failure and say ERROR_NOT_ENOUGH_MEMORY. */
static void check_failure(wl *w, const char *what, uint64_t before, uint64_t after, DWORD le) {
    w->failures++;
    if (le != ERROR_NOT_ENOUGH_MEMORY) WFAIL(w, "%s failed with last error %u, expected 8", what, (unsigned)le);
    if (!injected_in(w, before, after))
        WFAIL(w, "%s failed although no injected failure happened in it (acquiring calls %llu..%llu)", what,
              (unsigned long long)before, (unsigned long long)after);
    if (!w->sticky && w->failures > 1) WFAIL(w, "%s is the second failing call of a run with one fault", what);
    verify_all(w);
    validate_heaps(w);
}

/* ---- workload steps ---- */

static void step_create(wl *w, int k, DWORD flags, SIZE_T init, SIZE_T max) {
    snprintf(w->where, sizeof w->where, "HeapCreate(%#x, %zu, %zu)", (unsigned)flags, (size_t)init, (size_t)max);
    for (int attempt = 0; attempt < 2; attempt++) {
        uint64_t before = wh_prim_calls();
        SetLastError(0);
        HANDLE h = HeapCreate(flags, init, max);
        DWORD le = GetLastError();
        uint64_t after = wh_prim_calls();
        if (h) {
            if (((uintptr_t)h & 0xFFFF) != 0) WFAIL(w, "handle %p not 64 KiB aligned", h);
            w->heaps[k] = h;
            after_step(w);
            return;
        }
        check_failure(w, "HeapCreate", before, after, le);
        if (w->sticky) break;
        /* with one fault, the retry must succeed */
        if (attempt == 1) WFAIL(w, "HeapCreate retry failed");
    }
    w->heaps[k] = NULL;
    after_step(w);
}

/* Allocate n bytes on heap k; returns the block index or -1. */
static int step_alloc(wl *w, int k, DWORD flags, size_t n) {
    if (!w->heaps[k]) return -1;
    snprintf(w->where, sizeof w->where, "HeapAlloc(heap %d, %#x, %zu)", k, (unsigned)flags, n);
    if (w->nb >= MAXB) WFAIL(w, "too many blocks in the workload");
    for (int attempt = 0; attempt < 2; attempt++) {
        uint64_t before = wh_prim_calls();
        SetLastError(0);
        char *p = HeapAlloc(w->heaps[k], flags, n);
        DWORD le = GetLastError();
        uint64_t after = wh_prim_calls();
        if (p) {
            if ((uintptr_t)p & 15) WFAIL(w, "block %p not 16-byte aligned", (void *)p);
            if (HeapSize(w->heaps[k], 0, p) != n) WFAIL(w, "HeapSize of the new block is not %zu", n);
            if (flags & HEAP_ZERO_MEMORY)
                for (size_t i = 0; i < n; i += (n > 65536 ? 61 : 1))
                    if (p[i]) WFAIL(w, "HEAP_ZERO_MEMORY block has byte %zu = %#x", i, (unsigned char)p[i]);
            for (int i = 0; i < w->nb; i++) {
                blk *o = &w->b[i];
                if (o->p && p < o->p + (o->n ? o->n : 1) && o->p < p + (n ? n : 1))
                    WFAIL(w, "new block %p overlaps live block %d (%p, %zu)", (void *)p, i, (void *)o->p, o->n);
            }
            blk *b = &w->b[w->nb];
            b->p = p;
            b->n = n;
            b->tag = w->next_tag++;
            b->heap = k;
            fill(p, n, b->tag);
            after_step(w);
            return w->nb++;
        }
        check_failure(w, "HeapAlloc", before, after, le);
        if (w->sticky) break;
        if (attempt == 1) WFAIL(w, "HeapAlloc retry failed");
    }
    after_step(w);
    return -1;
}

static void step_free(wl *w, int i) {
    if (i < 0 || !w->b[i].p) return;
    blk *b = &w->b[i];
    snprintf(w->where, sizeof w->where, "HeapFree(heap %d, block %d of %zu bytes)", b->heap, i, b->n);
    verify_block(w, i, 1);
    SetLastError(0);
    if (HeapFree(w->heaps[b->heap], 0, b->p) != TRUE)
        WFAIL(w, "HeapFree of a live block failed, last error %u", (unsigned)GetLastError());
    b->p = NULL;
    after_step(w);
}

static void step_realloc(wl *w, int i, DWORD flags, size_t n) {
    if (i < 0 || !w->b[i].p) return;
    blk *b = &w->b[i];
    HANDLE h = w->heaps[b->heap];
    snprintf(w->where, sizeof w->where, "HeapReAlloc(heap %d, %#x, block %d of %zu bytes, %zu)", b->heap,
             (unsigned)flags, i, b->n, n);
    verify_block(w, i, 1);
    for (int attempt = 0; attempt < 2; attempt++) {
        uint64_t before = wh_prim_calls();
        SetLastError(0);
        char *p = HeapReAlloc(h, flags, b->p, n);
        DWORD le = GetLastError();
        uint64_t after = wh_prim_calls();
        if (p) {
            if ((uintptr_t)p & 15) WFAIL(w, "block %p not 16-byte aligned", (void *)p);
            if ((flags & HEAP_REALLOC_IN_PLACE_ONLY) && p != b->p) WFAIL(w, "IN_PLACE_ONLY moved the block");
            size_t keep = b->n < n ? b->n : n;
            size_t off = bad_byte(p, keep, b->tag, 1);
            if (off != (size_t)-1) WFAIL(w, "HeapReAlloc lost the contents at offset %zu", off);
            if (HeapSize(h, 0, p) != n) WFAIL(w, "HeapSize after HeapReAlloc is not %zu", n);
            if (flags & HEAP_ZERO_MEMORY)
                for (size_t j = keep; j < n; j += (n - keep > 65536 ? 61 : 1))
                    if (p[j]) WFAIL(w, "HEAP_ZERO_MEMORY grown byte %zu is %#x", j, (unsigned char)p[j]);
            b->p = p;
            b->n = n;
            b->tag = w->next_tag++;
            fill(p, n, b->tag);
            after_step(w);
            return;
        }
        check_failure(w, "HeapReAlloc", before, after, le);
        /* the block is unchanged */
        if (HeapValidate(h, 0, b->p) != TRUE) WFAIL(w, "block not valid after a failed HeapReAlloc");
        verify_block(w, i, 1);
        if (w->sticky) break;
        if (attempt == 1) WFAIL(w, "HeapReAlloc retry failed");
    }
    after_step(w);
}

static void step_destroy(wl *w, int k) {
    if (!w->heaps[k]) return;
    snprintf(w->where, sizeof w->where, "HeapDestroy(heap %d)", k);
    verify_all(w);
    if (HeapDestroy(w->heaps[k]) != TRUE) WFAIL(w, "HeapDestroy failed, last error %u", (unsigned)GetLastError());
    for (int i = 0; i < w->nb; i++)
        if (w->b[i].p && w->b[i].heap == k) w->b[i].p = NULL;
    w->heaps[k] = NULL;
    after_step(w);
}

static void step_optimize(wl *w, int k) {
    HEAP_OPTIMIZE_RESOURCES_INFORMATION info = { HEAP_OPTIMIZE_RESOURCES_CURRENT_VERSION, 0 };
    HANDLE h = k < 0 ? NULL : w->heaps[k];
    if (k >= 0 && !h) return;
    snprintf(w->where, sizeof w->where, "HeapSetInformation(heap %d, HeapOptimizeResources)", k);
    if (HeapSetInformation(h, HeapOptimizeResources, &info, sizeof info) != TRUE)
        WFAIL(w, "HeapOptimizeResources failed, last error %u", (unsigned)GetLastError());
    after_step(w);
    verify_all(w);
}

static void step_compact(wl *w, int k) {
    if (!w->heaps[k]) return;
    snprintf(w->where, sizeof w->where, "HeapCompact(heap %d)", k);
    HeapCompact(w->heaps[k], 0);
    after_step(w);
}

enum { G = 0, F = 1, X = 2, U = 3 };

/* The workload.  Every heap it creates it destroys. */
static void workload(wl *w) {
    memset(w->heaps, 0, sizeof w->heaps);
    w->nb = 0;
    w->failures = 0;
    w->steps = 0;
    w->next_tag = 1;

    step_create(w, G, 0, 0, 0);
    step_create(w, F, 0, 64 * 1024, 512 * 1024);

    /* small blocks */
    static const size_t small[] = { 0, 1, 16, 24, 100, 500, 1000, 4000, 8000, 100, 48, 48 };
    int s[12];
    for (int i = 0; i < 12; i++) s[i] = step_alloc(w, G, i == 3 ? HEAP_ZERO_MEMORY : 0, small[i]);
    /* blocks that need new commits in region 0 */
    int c1 = step_alloc(w, G, 0, 30000);
    int c2 = step_alloc(w, G, HEAP_ZERO_MEMORY, 64 * 1024);
    int c3 = step_alloc(w, G, 0, 200 * 1024);
    int c4 = step_alloc(w, G, 0, 300 * 1024);
    /* the fixed heap: commit growth inside its reservation */
    int f1 = step_alloc(w, F, 0, 1000);
    int f2 = step_alloc(w, F, 0, 40000);
    int f3 = step_alloc(w, F, HEAP_ZERO_MEMORY, 100000);
    int f4 = step_alloc(w, F, 0, 0);
    /* blocks that need new regions */
    int r1 = step_alloc(w, G, 0, 800 * 1024);
    int r2 = step_alloc(w, G, 0, 900 * 1024);
    int m[20];
    for (int i = 0; i < 20; i++) m[i] = step_alloc(w, G, 0, 64 * 1024 + (size_t)i * 16);
    /* large blocks */
    int l1 = step_alloc(w, G, 0, WINHEAP_LARGE_THRESHOLD);
    int l2 = step_alloc(w, G, HEAP_ZERO_MEMORY, 0x180000);
    int l3 = step_alloc(w, G, 0, 3u << 20);

    /* enough blocks of two sizes that the LFH serves them (segments, groups) */
    int lf[48];
    for (int i = 0; i < 48; i++) lf[i] = step_alloc(w, G, i % 5 == 0 ? HEAP_ZERO_MEMORY : 0, i % 2 ? 64 : 3000);
    if (w->fail_n == 0 && w->heaps[G]) { /* the clean run: the LFH is on now */
        ULONG compat = 0;
        if (!HeapQueryInformation(w->heaps[G], HeapCompatibilityInformation, &compat, sizeof compat, NULL) ||
            compat != 2)
            WFAIL(w, "the LFH is not active after 24 allocations of one size (compatibility %u)", (unsigned)compat);
    }
    for (int i = 0; i < 48; i += 3) step_free(w, lf[i]);
    step_realloc(w, lf[1], 0, 70);      /* in its slot or out of the LFH */
    step_realloc(w, lf[4], 0, 20000);
    step_realloc(w, lf[5], 0, 0x100000); /* LFH -> large */

    /* frees */
    for (int i = 0; i < 20; i += 3) step_free(w, m[i]);
    step_free(w, s[2]);
    step_free(w, s[6]);
    step_free(w, c3);
    step_free(w, l1);
    step_free(w, f2);

    /* an executable heap and an unserialized one, created mid-way */
    step_create(w, X, HEAP_CREATE_ENABLE_EXECUTE, 0, 0);
    int x1 = step_alloc(w, X, 0, 100);
    int x2 = step_alloc(w, X, 0, 0x100000);
    int x3 = step_alloc(w, X, 0, 200 * 1024);
    step_create(w, U, HEAP_NO_SERIALIZE, 0, 0);
    int u1 = step_alloc(w, U, 0, 5000);
    int u2 = step_alloc(w, U, 0, 0x120000);

    /* reallocs: small -> bigger -> large -> larger -> smaller -> small */
    step_realloc(w, s[4], 0, 2000);
    step_realloc(w, s[4], 0, 60000);
    step_realloc(w, s[4], HEAP_ZERO_MEMORY, 0x120000);
    step_realloc(w, s[4], 0, 0x300000);
    step_realloc(w, s[4], 0, 0x100000);
    step_realloc(w, s[4], 0, 500);
    step_realloc(w, s[7], HEAP_ZERO_MEMORY, 9000);
    step_realloc(w, l2, 0, 0x400000);
    step_realloc(w, l3, HEAP_REALLOC_IN_PLACE_ONLY, 2u << 20);
    step_realloc(w, c4, 0, 700 * 1024);
    step_realloc(w, s[8], HEAP_REALLOC_IN_PLACE_ONLY, 10);
    step_realloc(w, f1, 0, 30000);
    step_realloc(w, f3, 0, 500);
    step_realloc(w, x1, 0, 0x110000);
    step_realloc(w, u1, 0, 70000);
    step_realloc(w, u2, 0, 100);

    /* give free pages back, then allocate again (recommits) */
    step_optimize(w, G);
    step_optimize(w, F);
    step_optimize(w, -1);
    step_compact(w, G);
    step_compact(w, F);
    int a1 = step_alloc(w, G, 0, 300 * 1024);
    int a2 = step_alloc(w, G, 0, 200 * 1024);
    int t[40];
    for (int i = 0; i < 40; i++) t[i] = step_alloc(w, G, 0, 4000 + (size_t)i * 100);
    int f5 = step_alloc(w, F, 0, 120000);
    step_realloc(w, f5, 0, 200000);

    /* free about half, in an order that makes the back end coalesce */
    for (int i = 1; i < 40; i += 2) step_free(w, t[i]);
    step_free(w, a1);
    step_free(w, r1);
    step_free(w, s[4]);
    step_free(w, x2);
    step_destroy(w, X);
    step_destroy(w, U);
    step_optimize(w, G);
    step_compact(w, G);
    for (int i = 0; i < 40; i += 4) step_realloc(w, t[i], 0, 20000);
    int l4 = step_alloc(w, G, 0, 0x200000);
    int l5 = step_alloc(w, G, 0, 0x100000);
    step_free(w, l4);
    verify_all(w);

    (void)c1, (void)c2, (void)f4, (void)r2, (void)x3, (void)a2, (void)l5;
    /* destroy with live blocks, large ones included */
    step_destroy(w, F);
    step_destroy(w, G);
}

static size_t held_bytes(void) { return wh_prim_reserved_bytes() - wh_region_map_bytes(); }

static void warm_up(void) {
    assert_non_null(GetProcessHeap());
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    void *p = HeapAlloc(h, 0, 100);
    assert_non_null(p);
    void *q = HeapAlloc(h, 0, WINHEAP_LARGE_THRESHOLD);
    assert_non_null(q);
    assert_true(HeapDestroy(h));
}

/* One run with fail_at(n, sticky); returns the number of acquiring calls. */
static uint64_t one_run(wl *w, uint64_t n, int sticky) {
    size_t base = held_bytes();
    w->fail_n = n;
    w->sticky = sticky;
    wh_prim_fail_at(n, sticky);
    workload(w);
    uint64_t calls = wh_prim_calls();
    wh_prim_fail_at(0, 0);
    size_t now = held_bytes();
    if (now != base)
        fail_msg("fail_at(%llu, sticky=%d): %zd bytes of address space leaked (held %zu before, %zu after)",
                 (unsigned long long)n, sticky, (ssize_t)(now - base), base, now);
    return calls;
}

static wl g_wl;

static void fault_sweep(int sticky) {
    wl *w = &g_wl;
    pat_init();
    warm_up();
    /* a clean run: nothing fails, and the workload does acquire memory */
    uint64_t clean = one_run(w, 0, sticky);
    assert_int_equal(w->failures, 0);
    assert_true(clean >= 20);
    int runs_with_failure = 0;
    uint64_t n;
    for (n = 1; n < 100000; n++) {
        uint64_t calls = one_run(w, n, sticky);
        if (w->failures) runs_with_failure++;
        if (calls < n) {
            /* no fault was injected: the run must have been clean */
            assert_int_equal(w->failures, 0);
            break;
        }
    }
    assert_true(n < 100000);
    print_message("fault sweep sticky=%d: %llu acquiring calls in a clean run, %llu runs, %d with a failing call\n",
                  sticky, (unsigned long long)clean, (unsigned long long)n, runs_with_failure);
    /* most injected faults must surface as a failing call (1 in sticky mode
     * always does: the first fault cannot be absorbed by a retry) */
    assert_true(runs_with_failure > 0);
    if (sticky) assert_true(runs_with_failure >= (int)(n - 1) / 2);
}

static void test_fault_each_call_once(void **state) {
    (void)state;
    fault_sweep(0);
}

static void test_fault_each_call_sticky(void **state) {
    (void)state;
    fault_sweep(1);
}

/* Out-of-memory paths must not leak either when the failure is a real one:
 * a fixed heap that is full, and requests no heap can serve. */
static void test_real_oom_no_leak(void **state) {
    (void)state;
    warm_up();
    size_t base = held_bytes();
    HANDLE f = HeapCreate(0, 0, 256 * 1024);
    assert_non_null(f);
    static void *v[4096];
    int n = 0;
    for (; n < 4096; n++) {
        SetLastError(0);
        v[n] = HeapAlloc(f, 0, 1000);
        if (!v[n]) break;
    }
    assert_true(n > 100 && n < 4096);
    assert_int_equal(GetLastError(), ERROR_NOT_ENOUGH_MEMORY);
    assert_true(HeapValidate(f, 0, NULL));
    for (int i = 0; i < n; i++) assert_true(HeapFree(f, 0, v[i]));
    int n2 = 0;
    for (; n2 < 4096; n2++) {
        v[n2] = HeapAlloc(f, 0, 1000);
        if (!v[n2]) break;
    }
    assert_true(n2 >= n - 1 && n2 <= n + 1);
    assert_true(HeapDestroy(f));
    HANDLE g = HeapCreate(0, 0, 0);
    assert_non_null(g);
    static const SIZE_T huge[] = { SIZE_MAX, SIZE_MAX - 4095, SIZE_MAX - 15, (SIZE_T)PTRDIFF_MAX, (SIZE_T)PTRDIFF_MAX + 1 };
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        SetLastError(0);
        assert_null(HeapAlloc(g, 0, huge[i]));
        assert_int_equal(GetLastError(), ERROR_NOT_ENOUGH_MEMORY);
    }
    assert_true(HeapDestroy(g));
    assert_int_equal(held_bytes(), base);
}

/* ---- RLIMIT_AS in a child ---- */

#define CCHECK(c)                                                                                   \
    do {                                                                                            \
        if (!(c)) {                                                                                 \
            fprintf(stderr, "child CHECK failed at line %d: %s (LE %u)\n", __LINE__, #c,            \
                    (unsigned)GetLastError());                                                      \
            _exit(3);                                                                               \
        }                                                                                           \
    } while (0)

static size_t vm_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long size = 0;
    if (fscanf(f, "%lu", &size) != 1) size = 0;
    fclose(f);
    return (size_t)size * (size_t)sysconf(_SC_PAGESIZE);
}

#define MAXSMALL 200000
static void *g_small[MAXSMALL];

static void rlimit_child(void *arg) {
    (void)arg;
    /* winheap and the process heap exist before the limit */
    HANDLE ph = GetProcessHeap();
    CCHECK(ph != NULL);
    HANDLE h = HeapCreate(0, 0, 0);
    CCHECK(h != NULL);
    void *first = HeapAlloc(h, 0, 100);
    CCHECK(first != NULL);
    memset(first, 0x11, 100);

    size_t vm = vm_bytes();
    CCHECK(vm > 0);
    struct rlimit rl = { vm + (64u << 20), vm + (64u << 20) };
    CCHECK(setrlimit(RLIMIT_AS, &rl) == 0);

    /* large blocks until NULL */
    static void *big[64];
    int nbig = 0;
    for (;;) {
        SetLastError(0);
        char *p = HeapAlloc(h, 0, 4u << 20);
        if (!p) {
            CCHECK(GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
            break;
        }
        p[0] = 1;
        p[(4u << 20) - 1] = 2;
        CCHECK(nbig < 64);
        big[nbig++] = p;
    }
    CCHECK(nbig >= 1);
    CCHECK(HeapValidate(h, 0, NULL) == TRUE);

    /* small blocks until NULL */
    int ns = 0;
    for (;;) {
        SetLastError(0);
        char *p = HeapAlloc(h, 0, 4000);
        if (!p) {
            CCHECK(GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
            break;
        }
        memset(p, (unsigned char)ns, 4000);
        CCHECK(ns < MAXSMALL);
        g_small[ns++] = p;
    }
    CCHECK(HeapValidate(h, 0, NULL) == TRUE);
    /* the address space is exhausted: a large block fails too */
    SetLastError(0);
    CCHECK(HeapAlloc(h, 0, 4u << 20) == NULL);
    CCHECK(GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
    /* the process heap fails cleanly as well */
    for (int i = 0; i < 100000; i++) {
        SetLastError(0);
        void *p = HeapAlloc(ph, 0, 4000);
        if (!p) {
            CCHECK(GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
            break;
        }
        CCHECK(i < 99999);
    }
    CCHECK(HeapValidate(ph, 0, NULL) == TRUE);
    /* a failed grow keeps the block */
    if (ns > 0) {
        SetLastError(0);
        CCHECK(HeapReAlloc(h, 0, g_small[0], 16u << 20) == NULL);
        CCHECK(GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
        CCHECK(HeapSize(h, 0, g_small[0]) == 4000);
        CCHECK(((unsigned char *)g_small[0])[3999] == 0);
    }
    /* HeapCreate fails cleanly or works */
    SetLastError(0);
    HANDLE h2 = HeapCreate(0, 0, 0);
    if (!h2) CCHECK(GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
    else CCHECK(HeapDestroy(h2) == TRUE);

    /* everything can be freed and the heap is intact */
    for (int i = 0; i < ns; i++) {
        CCHECK(((unsigned char *)g_small[i])[i % 4000] == (unsigned char)i);
        CCHECK(HeapFree(h, 0, g_small[i]) == TRUE);
    }
    for (int i = 0; i < nbig; i++) {
        CCHECK(((char *)big[i])[0] == 1 && ((char *)big[i])[(4u << 20) - 1] == 2);
        CCHECK(HeapFree(h, 0, big[i]) == TRUE);
    }
    CCHECK(HeapValidate(h, 0, NULL) == TRUE);
    for (int i = 0; i < 100; i++) CCHECK(((unsigned char *)first)[i] == 0x11);
    /* large blocks went back to the system: one fits again */
    void *again = HeapAlloc(h, 0, 4u << 20);
    CCHECK(again != NULL);
    CCHECK(HeapFree(h, 0, again) == TRUE);
    CCHECK(HeapFree(h, 0, first) == TRUE);
    CCHECK(HeapDestroy(h) == TRUE);
    fprintf(stderr, "child done: %d large, %d small blocks before NULL\n", nbig, ns);
}

static void test_rlimit_as(void **state) {
    (void)state;
    wh_child_result r;
    wh_run_child(rlimit_child, NULL, 120, &r);
    if (r.timed_out || !r.exited || r.exit_code != 0 || !strstr(r.err, "child done")) {
        fprintf(stderr, "child: %s %d%s, stderr:\n%s\n", r.signaled ? "signal" : "exit",
                r.signaled ? r.signal : r.exit_code, r.timed_out ? " (timed out)" : "", r.err);
        fail_msg("RLIMIT_AS child failed");
    }
    print_message("%s", r.err);
}

/* ---- the first call into winheap fails (fresh process) ---- */

/* Runs in a fresh process (exec'd by the test below): the Nth acquiring call
 * of the very first call into winheap (which also creates the process heap)
 * fails.  That call fails cleanly with error 8 or succeeds; a later call
 * works; the registry holds exactly the heaps that exist. */
static int first_call_child(uint64_t n, int sticky) {
    wh_prim_fail_at(n, sticky);
    HANDLE h = HeapCreate(0, 0, 0);
    DWORD le = GetLastError();
    uint64_t calls = wh_prim_calls();
    wh_prim_fail_at(0, 0);
    fprintf(stderr, "calls %llu\n", (unsigned long long)calls);
    if (!h) {
        CCHECK(le == ERROR_NOT_ENOUGH_MEMORY);
        CCHECK(calls >= n);
        h = HeapCreate(0, 0, 0);
        CCHECK(h != NULL);
    }
    HANDLE ph = GetProcessHeap();
    CCHECK(ph != NULL && ph != h);
    HANDLE hs[8];
    CCHECK(GetProcessHeaps(8, hs) == 2);
    CCHECK(hs[0] == ph && hs[1] == h);
    void *p = HeapAlloc(ph, 0, 100), *q = HeapAlloc(h, 0, 100);
    CCHECK(p && q);
    CCHECK(HeapValidate(ph, 0, NULL) == TRUE);
    CCHECK(HeapValidate(h, 0, NULL) == TRUE);
    CCHECK(HeapFree(ph, 0, p) == TRUE);
    CCHECK(HeapDestroy(h) == TRUE);
    CCHECK(GetProcessHeaps(8, hs) == 1);
    fprintf(stderr, "child done\n");
    return 0;
}

static const char *g_argv0 = "test_fault";

struct first_arg {
    char n[32];
    const char *sticky;
};

static void exec_first_call(void *arg) {
    struct first_arg *a = arg;
    char *argv[] = { (char *)g_argv0, "--first-call", a->n, (char *)a->sticky, NULL };
    execv("/proc/self/exe", argv);
    _exit(127);
}

static void test_first_call_fails(void **state) {
    (void)state;
    for (int sticky = 0; sticky <= 1; sticky++) {
        uint64_t n;
        for (n = 1; n < 1000; n++) {
            struct first_arg a;
            snprintf(a.n, sizeof a.n, "%llu", (unsigned long long)n);
            a.sticky = sticky ? "1" : "0";
            wh_child_result r;
            wh_run_child(exec_first_call, &a, 60, &r);
            if (r.timed_out || !r.exited || r.exit_code != 0 || !strstr(r.err, "child done")) {
                fprintf(stderr, "child (n=%llu, sticky=%d): %s %d, stderr:\n%s\n", (unsigned long long)n, sticky,
                        r.signaled ? "signal" : "exit", r.signaled ? r.signal : r.exit_code, r.err);
                fail_msg("first call with fault %llu failed", (unsigned long long)n);
            }
            const char *c = strstr(r.err, "calls ");
            assert_non_null(c);
            if (strtoull(c + 6, NULL, 10) < n) break;
        }
        assert_true(n > 1 && n < 1000);
    }
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "--first-call") == 0)
        return first_call_child(strtoull(argv[2], NULL, 10), atoi(argv[3]));
    if (argc >= 1) g_argv0 = argv[0];

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_oom_no_leak),
        cmocka_unit_test(test_fault_each_call_once),
        cmocka_unit_test(test_fault_each_call_sticky),
        cmocka_unit_test(test_rlimit_as),
        cmocka_unit_test(test_first_call_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
