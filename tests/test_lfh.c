/*
 * test_lfh.c - layer test of src/lfh.c: how often the low-fragmentation
 * front end leaves its fast path, and what happens to empty groups.
 *
 * Speed is measured by bench/, never here; what is tested is the work the
 * slow paths do, counted by the thread caches themselves (wh_lfh_counts:
 * entries of the allocation slow path, groups laid out, groups carved from
 * new memory), for access patterns that once made them do far too much:
 *
 * - the owner's newest free waits in its group's delay register and is not
 *   handed out by the next allocation of its size (hardening), and that
 *   costs no slow path: a random replacement of a working set (the
 *   `workingset` benchmark's pattern) stays on the fast path;
 * - a batch allocated, freed and allocated again reuses its groups: none is
 *   carved from new memory;
 * - an empty group still serves other size classes before new memory is
 *   carved, and a block freed by its owner still does not come back at once;
 * - a pooled group goes first to a thread that needs its class, with its old
 *   slot order (but not to a fork child, whose order is its own).
 */
#define _GNU_SOURCE
#include "test_util.h"
#include "lfh.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* A private heap with the LFH on (D16: HeapSetInformation(..., 2)). */
static HANDLE lfh_heap(void) {
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    ULONG two = 2;
    assert_true(HeapSetInformation(h, HeapCompatibilityInformation, &two, sizeof two));
    return h;
}

static wh_lfh_counts counts(HANDLE h) {
    wh_heap *hp = wh_heap_from_handle(h);
    assert_non_null(hp);
    wh_lfh_counts c;
    wh_lfh_counts_get(hp, &c);
    return c;
}

/* Sizes as the benchmarks draw them: half of 9..16 bytes, most up to 256. */
static size_t skewed(uint64_t *s) {
    uint64_t r = wh_rand(s);
    if (r % 2) return 9 + (size_t)(r >> 8) % 8;
    if (r % 16 < 15) return 17 + (size_t)(r >> 8) % 240;
    return 257 + (size_t)(r >> 8) % 3000;
}

/* Random replacement in a working set of 20,000 blocks: after the set is
 * built, the slow path may run for a small share of the allocations only
 * (new groups, collecting, switching groups).  When the skipped newest
 * free stayed at the head of its group's list for good, every later
 * allocation from that group took the slow path: 90% of them. */
static void test_working_set_stays_on_the_fast_path(void **state) {
    (void)state;
    HANDLE h = lfh_heap();
    enum { SLOTS = 20000, OPS = 400000 };
    char **v = calloc(SLOTS, sizeof *v);
    assert_non_null(v);
    uint64_t s = 42;
    for (int i = 0; i < SLOTS; i++) assert_non_null(v[i] = HeapAlloc(h, 0, skewed(&s)));
    wh_lfh_counts a = counts(h);
    for (int k = 0; k < OPS; k++) {
        int j = (int)(wh_rand(&s) % SLOTS);
        assert_true(HeapFree(h, 0, v[j]));
        assert_non_null(v[j] = HeapAlloc(h, 0, skewed(&s)));
        v[j][0] = 1;
    }
    wh_lfh_counts b = counts(h);
    uint64_t slow = b.slow - a.slow;
    EXPECT(slow * 10 < OPS, "%llu of %d allocations took the slow path", (unsigned long long)slow, (int)OPS);
    assert_true(HeapValidate(h, 0, NULL));
    free(v);
    assert_true(HeapDestroy(h));
}

/* A batch of 30,000 blocks of 16..128 bytes, freed, allocated again four
 * times: after the first round the groups it emptied serve the next ones
 * (through the pool, laid out again for their class), so no group is
 * carved from new memory and the heap reserves nothing more. */
static void test_batch_reuses_its_groups(void **state) {
    (void)state;
    HANDLE h = lfh_heap();
    enum { N = 30000 };
    void **v = calloc(N, sizeof *v);
    assert_non_null(v);
    uint64_t s = 7;
    wh_lfh_counts a = counts(h);
    HEAP_SUMMARY s0 = { .cb = sizeof s0 }, s1 = { .cb = sizeof s1 };
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < N; i++) assert_non_null(v[i] = HeapAlloc(h, 0, 16 + (size_t)(wh_rand(&s) % 113)));
        for (int i = 0; i < N; i++) assert_true(HeapFree(h, 0, v[i]));
        wh_lfh_counts b = counts(h);
        if (getenv("TEST_LFH_TRACE"))
            fprintf(stderr, "round %d: slow %llu layout %llu carve %llu\n", round, (unsigned long long)(b.slow - a.slow),
                    (unsigned long long)(b.layout - a.layout), (unsigned long long)(b.carve - a.carve));
        if (round == 0) {
            EXPECT(b.carve - a.carve >= 8, "round 0 carved %llu groups", (unsigned long long)(b.carve - a.carve));
            assert_true(HeapSummary(h, 0, &s0));
        } else {
            EXPECT(b.carve == a.carve, "round %d carved %llu groups", round, (unsigned long long)(b.carve - a.carve));
        }
        a = b;
    }
    assert_true(HeapSummary(h, 0, &s1));
    EXPECT(s1.cbReserved == s0.cbReserved, "reserved %zu after round 0, %zu after round 4", s0.cbReserved, s1.cbReserved);
    assert_true(HeapValidate(h, 0, NULL));
    free(v);
    assert_true(HeapDestroy(h));
}

/* Empty groups serve other classes: 20,000
 * blocks of 100 bytes freed, then 12,000 of 160 bytes (same group size, less
 * memory) are served without carving a single new group. */
static void test_empty_groups_serve_other_classes(void **state) {
    (void)state;
    HANDLE h = lfh_heap();
    enum { N = 20000, M = 12000 };
    void **v = calloc(N, sizeof *v);
    assert_non_null(v);
    for (int i = 0; i < N; i++) assert_non_null(v[i] = HeapAlloc(h, 0, 100));
    for (int i = 0; i < N; i++) assert_true(HeapFree(h, 0, v[i]));
    wh_lfh_counts a = counts(h);
    HEAP_SUMMARY s0 = { .cb = sizeof s0 }, s1 = { .cb = sizeof s1 };
    assert_true(HeapSummary(h, 0, &s0));
    for (int i = 0; i < M; i++) assert_non_null(v[i] = HeapAlloc(h, 0, 160));
    wh_lfh_counts b = counts(h);
    assert_true(HeapSummary(h, 0, &s1));
    EXPECT(b.layout > a.layout, "the 160-byte class needed no group (%llu)", (unsigned long long)(b.layout - a.layout));
    EXPECT(b.carve == a.carve, "%llu groups carved while empty ones were there", (unsigned long long)(b.carve - a.carve));
    EXPECT(s1.cbReserved == s0.cbReserved, "reserved %zu -> %zu", s0.cbReserved, s1.cbReserved);
    for (int i = 0; i < M; i++) assert_true(HeapFree(h, 0, v[i]));
    assert_true(HeapValidate(h, 0, NULL));
    free(v);
    assert_true(HeapDestroy(h));
}

/* The newest free (in the delay register) is not handed out next, whatever
 * the state of its group's list:
 * in every pattern below the next allocation of the size never returns the
 * block just freed (RELIABILITY row 28 tests the fresh-group case). */
static void test_newest_free_not_handed_out_next(void **state) {
    (void)state;
    HANDLE h = lfh_heap();
    enum { N = 64 };
    void *v[N];
    for (int i = 0; i < N; i++) assert_non_null(v[i] = HeapAlloc(h, 0, 48));
    uint64_t s = 3;
    for (int k = 0; k < 5000; k++) {
        int j = (int)(wh_rand(&s) % N);
        void *old = v[j];
        assert_true(HeapFree(h, 0, old));
        assert_non_null(v[j] = HeapAlloc(h, 0, 48));
        EXPECT(v[j] != old, "step %d: the block freed just before came back", k);
    }
    for (int i = 0; i < N; i++) assert_true(HeapFree(h, 0, v[i]));
    assert_true(HeapValidate(h, 0, NULL));
    assert_true(HeapDestroy(h));
}

/* The hot path's class table agrees with the formula for every size up to
 * the LFH's limit, and classes keep the rounding the README states: slots
 * are 16-byte multiples (D10), a size never maps below itself, and from 128
 * bytes up the rounding wastes at most 12.5% of the request (between 64
 * and 128 the 16-byte steps allow up to 23%, at 65 bytes). */
static void test_class_table_matches_formula(void **state) {
    (void)state;
    for (size_t n = 0; n <= WH_LFH_MAX; n++) {
        unsigned c = wh_lfh_class(n);
        EXPECT(c == wh_lfh_class_calc(n), "size %zu: table %u, formula %u", n, c, wh_lfh_class_calc(n));
        size_t slot = wh_lfh_class_size(c);
        EXPECT(c < WH_LFH_NCLASSES && slot >= n && slot % 16 == 0, "size %zu: class %u of %zu bytes", n, c, slot);
        if (n >= 128) EXPECT((slot - n) * 8 <= n, "size %zu wastes %zu of %zu", n, slot - n, slot);
    }
}

/* Group layout: colouring (the header a few cache lines into its chunk)
 * never costs a slot: every class's groups hold as many slots as an
 * uncoloured layout could, and groups of a class whose slots leave room
 * still take more than one colour.  16-byte slots cost 17 bytes and a little: 1 byte of exact size
 * each and the group header shared by all. */
static void test_colouring_costs_no_slot(void **state) {
    (void)state;
    HANDLE h = lfh_heap();
    enum { N = 400 };
    static void *v[N];
    for (unsigned c = 0; c < WH_LFH_NCLASSES; c++) {
        size_t size = wh_lfh_class_size(c);
        if (size + WH_TOOL_RZ > WH_LFH_MAX) break; /* (tool builds: the last class goes to the back end) */
        void *p = HeapAlloc(h, 0, size);
        assert_non_null(p);
        wh_group *g = wh_lfh_group_of_entry(wh_region_map_get(p));
        assert_non_null(g);
        /* (the slot's size from the group: tool builds add slack to requests) */
        size_t span = (size_t)g->chunks << WH_CHUNK_SHIFT, hdr = sizeof(wh_group), width = g->meta_width, slot = g->slot_size;
        size_t n = (span - hdr) / (slot + width);
        while (n && ((hdr + n * width + 15) & ~(size_t)15) + n * slot > span) n--;
        EXPECT(g->nslots == n, "class %u (%zu-byte slots): %u slots, an uncoloured group holds %zu", c, slot, g->nslots, n);
        if (slot == 16) EXPECT((double)span / g->nslots < 17.04, "16-byte slots cost %.3f bytes", (double)span / g->nslots);
        assert_true(HeapFree(h, 0, p));
    }
    /* 4000-byte blocks (4096-byte slots leave 3,840 bytes of slack a group)
     * over several groups: their headers take more than one offset. */
    uintptr_t offs = 0;
    for (int i = 0; i < N; i++) {
        assert_non_null(v[i] = HeapAlloc(h, 0, 4000));
        wh_group *g = wh_lfh_group_of_entry(wh_region_map_get(v[i]));
        offs |= (uintptr_t)1 << (((uintptr_t)g & (WH_CHUNK - 1)) / 64 % 64);
    }
    EXPECT(__builtin_popcountll(offs) > 1, "every 4096-byte group has its header at the same offset (%#lx)",
           (unsigned long)offs);
    for (int i = 0; i < N; i++) assert_true(HeapFree(h, 0, v[i]));
    assert_true(HeapValidate(h, 0, NULL));
    assert_true(HeapDestroy(h));
}

/* A thread's empty groups go to the pool when it exits; a later thread that
 * needs the same class takes such a group first and lays it out with its
 * old shuffle, so it gets the same slots (whose pages are resident) in the
 * same order.  A fork child does not: its randomization is its own (row 24). */
#define POOL_N 6
#define POOL_SIZE 15000 /* 16 KiB slots: fresh ones come out two at a time, in shuffled order */
static HANDLE pool_heap;
static void *pool_worker(void *arg) {
    void **out = arg;
    for (int i = 0; i < POOL_N; i++) assert_non_null(out[i] = HeapAlloc(pool_heap, 0, POOL_SIZE));
    for (int i = 0; i < POOL_N; i++) assert_true(HeapFree(pool_heap, 0, out[i]));
    return NULL;
}
static void run_pool_worker(void **out) {
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, pool_worker, out), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
}
static void test_pooled_group_keeps_its_order(void **state) {
    (void)state;
    pool_heap = lfh_heap();
    void *a[POOL_N], *b[POOL_N];
    run_pool_worker(a);
    run_pool_worker(b); /* takes the first thread's group from the pool */
    for (int i = 0; i < POOL_N; i++) EXPECT(a[i] == b[i], "block %d: %p, before %p", i, b[i], a[i]);
    /* A fork child lays the same group out with a seed of its own.  Its
     * first six blocks can still match by chance (about 1 in 128: the
     * shuffle of a 16-slot window has 128 forms), so up to three children
     * are tried; all three matching is the failure (about 1 in 2 million). */
    void **shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(shared != MAP_FAILED);
    int same = POOL_N;
    for (int child = 0; child < 3 && same == POOL_N; child++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            run_pool_worker(shared);
            _exit(0);
        }
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        same = 0;
        for (int i = 0; i < POOL_N; i++) same += shared[i] == a[i];
    }
    EXPECT(same < POOL_N, "three fork children got their parent's %d blocks in the parent's order", POOL_N);
    run_pool_worker(b); /* the parent still gets its order */
    for (int i = 0; i < POOL_N; i++) EXPECT(a[i] == b[i], "after the fork, block %d: %p, before %p", i, b[i], a[i]);
    munmap(shared, 4096);
    assert_true(HeapDestroy(pool_heap));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_working_set_stays_on_the_fast_path),
        cmocka_unit_test(test_batch_reuses_its_groups),
        cmocka_unit_test(test_empty_groups_serve_other_classes),
        cmocka_unit_test(test_newest_free_not_handed_out_next),
        cmocka_unit_test(test_class_table_matches_formula),
        cmocka_unit_test(test_colouring_costs_no_slot),
        cmocka_unit_test(test_pooled_group_keeps_its_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
