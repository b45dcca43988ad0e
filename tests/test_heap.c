/*
 * test_heap.c - layer test of src/heap.c: heap objects, handles, the
 * recursive lock, the registry, the process heap and fork safety.
 *
 * wh_heap_create / wh_heap_destroy for growable heaps (region 0 of at least
 * 1 MiB, rounded to 64 KiB, commit of the initial size rounded to a page)
 * and fixed heaps (reservation = maximum rounded to a page, mapping rounded
 * to 64 KiB, commit clamped to it); region 0's fields and the heap object's
 * size (r->first - base <= 0xBF0); failures at each OS call leave nothing
 * behind; destroy releases every region and large block.
 * wh_heap_from_handle accepts live heaps only: NULL, misaligned and interior
 * addresses, region-1 bases, large-block bases, LFH group chunks,
 * tombstones, stack and destroyed handles are refused without being read.
 * The lock is recursive (wh_heap_lock twice, wh_heap_lock_owned, another
 * thread waits until the last unlock).  wh_heap_list / wh_heap_for_each give
 * creation order with the process heap first.  fork() while other threads
 * loop on a heap's lock (alloc/free, HeapLock + registry calls), from the
 * main thread or from another thread, gives a child that can allocate,
 * free, create and destroy heaps; every child runs under a timeout, so a
 * deadlock fails the test.  Threads exiting (their LFH caches handed back)
 * while a HeapLock holder calls the registry must not deadlock either.
 */
#define _GNU_SOURCE
#include "test_util.h"
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KB ((size_t)1 << 10)
#define MB ((size_t)1 << 20)


static size_t held(void) { return wh_prim_reserved_bytes() - wh_region_map_bytes(); }
static size_t pg(void) { return wh_prim_page_size(); }
static size_t hdr_bytes(void) { return wh_align_up(sizeof(wh_heap), WH_ALIGN); }

static void sleep_ms(int ms) {
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static wh_heap *create(DWORD flags, size_t init, size_t max) {
    wh_prim_fail_at(0, 0);
    wh_status st = WH_OK;
    wh_heap *h = wh_heap_create(flags, init, max, &st);
    if (!h) fail_msg("wh_heap_create(%#x, %zu, %zu) failed: %d", flags, init, max, (int)st);
    return h;
}

/* Shape of region 0 shared by every heap. */
static void check_region0(wh_heap *h, size_t reserve, size_t map_size, size_t commit) {
    char *base = (char *)h;
    wh_region *r = &h->region0;
    assert_int_equal((uintptr_t)h & (WH_CHUNK - 1), 0);
    assert_int_equal(r->magic, WH_REGION_MAGIC ^ (uintptr_t)h);
    assert_int_equal(h->magic, WH_HEAP_MAGIC ^ (uintptr_t)h);
    assert_ptr_equal(r->heap, h);
    assert_null(r->next);
    assert_int_equal(r->index, 0);
    assert_int_equal(r->kind, WH_REGION_BLOCKS);
    assert_int_equal(r->reserve, reserve);
    assert_int_equal(r->map_size, map_size);
    assert_ptr_equal(r->first, base + hdr_bytes());
    assert_true(r->first - base <= 0xBF0);
    assert_ptr_equal(r->end, base + commit);
    assert_ptr_equal(r->last, r->first); /* one free block */
    assert_ptr_equal(h->last_region, r);
    assert_int_equal(h->nregions, 1);
    assert_null(h->large_head);
    assert_true(maps_range_is(base, base + commit, "rw-p"));
    if (commit < map_size) assert_true(maps_range_is(base + commit, base + map_size, "---p"));
    for (size_t off = 0; off < map_size; off += WH_CHUNK) assert_int_equal(wh_region_map_get(base + off), (uintptr_t)h);
    assert_ptr_equal(wh_heap_from_handle((HANDLE)h), h);
    wh_heap_lock(h);
    assert_true(wh_backend_is_valid(h));
    wh_heap_unlock(h);
}

static void test_create_growable(void **state) {
    (void)state;
    size_t held0 = held();
    DWORD n0 = wh_heap_list(0, NULL);
    wh_heap *h = create(0, 0, 0);
    assert_true(h->flags & HEAP_GROWABLE);
    assert_int_equal(h->max_size, 0);
    check_region0(h, WH_REGION0_MIN, WH_REGION0_MIN, pg());
    assert_int_equal(h->next_region_size, 2 * WH_REGION0_MIN);
    assert_int_equal(wh_heap_list(0, NULL), n0 + 1);
    assert_int_equal(held(), held0 + WH_REGION0_MIN);
    /* Initial size above 1 MiB: region 0 is the initial size rounded. */
    wh_heap *g = create(HEAP_NO_SERIALIZE, 3 * MB + 1, 0);
    assert_true(g->flags & HEAP_GROWABLE);
    assert_true(g->flags & HEAP_NO_SERIALIZE);
    check_region0(g, 3 * MB + WH_CHUNK, 3 * MB + WH_CHUNK, 3 * MB + pg());
    assert_true(g->serial > h->serial);
    /* Small initial sizes round to a page; big enough for the header. */
    wh_heap *k = create(0, 5000, 0);
    check_region0(k, WH_REGION0_MIN, WH_REGION0_MIN, 2 * pg());
    assert_true(k->serial > g->serial);
    assert_true(h->key_hdr0 != g->key_hdr0 && g->key_hdr0 != k->key_hdr0);
    wh_heap_destroy(k);
    wh_heap_destroy(g);
    wh_heap_destroy(h);
    assert_int_equal(held(), held0);
    assert_int_equal(wh_heap_list(0, NULL), n0);
}

static void test_create_fixed(void **state) {
    (void)state;
    size_t held0 = held();
    wh_heap *a = create(0, 256 * KB, 256 * KB);
    assert_false(a->flags & HEAP_GROWABLE);
    assert_int_equal(a->max_size, 256 * KB);
    check_region0(a, 256 * KB, 256 * KB, 256 * KB);
    /* Maximum not a page multiple: reserve rounds to a page, the mapping to
     * 64 KiB; the initial commit is one page. */
    wh_heap *b = create(0, 0, 100000);
    check_region0(b, 25 * pg(), 128 * KB, pg());
    assert_int_equal(b->max_size, 25 * pg());
    /* A tiny maximum still holds the heap object and one block. */
    wh_heap *c = create(0, 0, 1);
    check_region0(c, wh_align_up(hdr_bytes() + WH_MIN_BLOCK, pg()), WH_CHUNK, pg());
    /* An initial size above the maximum commits only the reservation. */
    wh_heap *d = create(0, 200 * KB, 64 * KB);
    check_region0(d, 64 * KB, 64 * KB, 64 * KB);
    /* Room for the documented largest fixed-heap block. */
    assert_true((size_t)((char *)a + 256 * KB - a->region0.first) >= 256 * KB - 0xC00 + WH_HDR + wh_pad());
    wh_heap_destroy(d);
    wh_heap_destroy(c);
    wh_heap_destroy(b);
    wh_heap_destroy(a);
    assert_int_equal(held(), held0);
}

static void test_create_failure_clean(void **state) {
    (void)state;
    size_t held0 = held();
    DWORD n0 = wh_heap_list(0, NULL);
    for (uint64_t n = 1; n <= 2; n++) { /* 1: reserve, 2: commit */
        for (int sticky = 0; sticky <= 1; sticky++) {
            wh_prim_fail_at(n, sticky);
            wh_status st = WH_OK;
            assert_null(wh_heap_create(0, 0, 0, &st));
            wh_prim_fail_at(0, 0);
            assert_int_equal(st, WH_ENOMEM);
            assert_int_equal(held(), held0);
            assert_int_equal(wh_heap_list(0, NULL), n0);
        }
    }
    wh_status st = WH_OK;
    assert_null(wh_heap_create(0, WH_MAX_REQUEST + 1, 0, &st));
    assert_int_equal(st, WH_ENOMEM);
    st = WH_OK;
    assert_null(wh_heap_create(0, 0, WH_MAX_REQUEST + 1, &st));
    assert_int_equal(st, WH_ENOMEM);
    assert_int_equal(held(), held0);
    assert_int_equal(wh_heap_list(0, NULL), n0);
}

static void test_destroy_releases_everything(void **state) {
    (void)state;
    size_t held0 = held();
    HANDLE hh = HeapCreate(0, 0, 0);
    assert_non_null(hh);
    wh_heap *h = wh_heap_from_handle(hh);
    void *big[4];
    for (int i = 0; i < 4; i++) { big[i] = HeapAlloc(hh, 0, 0x80000); assert_non_null(big[i]); }
    void *lg = HeapAlloc(hh, 0, 0x200000);
    assert_non_null(lg);
    assert_true(h->nregions > 1);
    char *bases[16];
    size_t sizes[16];
    int n = 0;
    for (wh_region *r = &h->region0; r && n < 16; r = r->next) { bases[n] = (char *)r; sizes[n++] = r->map_size; }
    wh_region *lr = wh_region_of(lg);
    bases[n] = (char *)lr;
    sizes[n++] = lr->map_size;
    assert_true(HeapDestroy(hh));
    for (int i = 0; i < n; i++)
        for (size_t off = 0; off < sizes[i]; off += WH_CHUNK) assert_int_equal(wh_region_map_get(bases[i] + off), 0);
    assert_int_equal(held(), held0);
    assert_null(wh_heap_from_handle(hh));
}

static void test_from_handle_rejects(void **state) {
    (void)state;
    HANDLE hh = HeapCreate(0, 0, 0);
    assert_non_null(hh);
    wh_heap *h = wh_heap_from_handle(hh);
    assert_ptr_equal(h, hh);
    char *base = (char *)h;
    assert_null(wh_heap_from_handle(NULL));
    assert_null(wh_heap_from_handle((HANDLE)1));
    assert_null(wh_heap_from_handle(base + 1));
    assert_null(wh_heap_from_handle(base + 16));
    assert_null(wh_heap_from_handle(base + WH_CHUNK));                 /* inside region 0 */
    assert_null(wh_heap_from_handle(base + h->region0.map_size - WH_CHUNK));
    int on_stack;
    assert_null(wh_heap_from_handle((HANDLE)wh_align_down((uintptr_t)&on_stack, WH_CHUNK)));
    assert_null(wh_heap_from_handle((HANDLE)((uintptr_t)1 << 47)));
    assert_null(wh_heap_from_handle((HANDLE)UINTPTR_MAX));
    /* Region 1's base is a live BLOCKS region of the heap: not a handle. */
    wh_heap_lock(h);
    wh_region *r1 = wh_region_add(h, 4096);
    assert_non_null(r1);
    wh_backend_region_init(h, r1);
    wh_heap_unlock(h);
    assert_int_equal(wh_region_map_get(r1), (uintptr_t)r1);
    assert_null(wh_heap_from_handle((HANDLE)r1));
    /* A large block's base. */
    void *lg = HeapAlloc(hh, 0, 0x100000);
    assert_non_null(lg);
    wh_region *lr = wh_region_of(lg);
    assert_int_equal(lr->kind, WH_REGION_LARGE);
    assert_null(wh_heap_from_handle((HANDLE)lr));
    /* Its tombstone once freed (unmapped: reading it would fault). */
    assert_true(HeapFree(hh, 0, lg));
    assert_int_equal(wh_region_map_get(lr) & 3, 1);
    assert_null(wh_heap_from_handle((HANDLE)lr));
    /* A chunk of an LFH group of the process heap. */
    HANDLE ph = GetProcessHeap();
    if (wh_heap_compat(wh_heap_from_handle(ph)) == 2) {
        void *s = HeapAlloc(ph, 0, 100);
        assert_non_null(s);
        void *chunk = (void *)wh_align_down((uintptr_t)s, WH_CHUNK);
        if (wh_region_map_get(chunk) && wh_region_map_get(chunk) != (uintptr_t)chunk) {
            assert_null(wh_heap_from_handle(chunk));
        }
        assert_true(HeapFree(ph, 0, s));
    }
    /* A destroyed heap: its memory is unmapped, so a read would fault. */
    assert_true(HeapDestroy(hh));
    assert_null(wh_heap_from_handle(hh));
    assert_null(wh_heap_from_handle((HANDLE)r1));
    /* The process heap is a live heap. */
    assert_ptr_equal(wh_heap_from_handle(ph), ph);
}

/* ---- lock ---- */

static _Atomic int t_got, t_owned_before, t_owned_inside, t_unlock_ok, t_unlock_le;

static void *locker(void *arg) {
    wh_heap *h = arg;
    t_owned_before = wh_heap_lock_owned(h);
    SetLastError(0);
    t_unlock_ok = HeapUnlock((HANDLE)h); /* not the owner */
    t_unlock_le = (int)GetLastError();
    wh_heap_lock(h);
    atomic_store(&t_got, 1);
    t_owned_inside = wh_heap_lock_owned(h);
    wh_heap_unlock(h);
    return NULL;
}

static void test_lock_recursive(void **state) {
    (void)state;
    HANDLE hh = HeapCreate(0, 0, 0);
    wh_heap *h = wh_heap_from_handle(hh);
    assert_non_null(h);
    assert_false(wh_heap_lock_owned(h));
    wh_heap_lock(h);
    wh_heap_lock(h);
    assert_true(wh_heap_lock_owned(h));
    assert_int_equal(h->recursion, 2);
    /* Calls into the heap while holding it (recursion through the API). */
    void *p = HeapAlloc(hh, 0, 64);
    assert_non_null(p);
    assert_true(HeapFree(hh, 0, p));
    assert_int_equal(h->recursion, 2);
    atomic_store(&t_got, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, locker, h), 0);
    sleep_ms(150);
    assert_int_equal(atomic_load(&t_got), 0);
    wh_heap_unlock(h);
    assert_true(wh_heap_lock_owned(h));
    sleep_ms(150);
    assert_int_equal(atomic_load(&t_got), 0); /* one level still held */
    wh_heap_unlock(h);
    assert_false(wh_heap_lock_owned(h));
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 10;
    assert_int_equal(pthread_timedjoin_np(t, NULL, &dl), 0);
    assert_int_equal(atomic_load(&t_got), 1);
    assert_false(t_owned_before);
    assert_true(t_owned_inside);
    assert_false(t_unlock_ok);
    assert_int_equal(t_unlock_le, ERROR_NOT_OWNER);
    assert_false(wh_heap_lock_owned(h));
    /* The public pair nests the same way. */
    assert_true(HeapLock(hh));
    assert_true(HeapLock(hh));
    assert_int_equal(h->recursion, 2);
    assert_true(HeapUnlock(hh));
    assert_true(HeapUnlock(hh));
    assert_false(wh_heap_lock_owned(h));
    SetLastError(0);
    assert_false(HeapUnlock(hh));
    assert_int_equal(GetLastError(), ERROR_NOT_OWNER);
    assert_true(HeapDestroy(hh));
}

/* ---- registry ---- */

static HANDLE fe_seen[256];
static int fe_n;
static void fe_collect(wh_heap *h) { if (fe_n < 256) fe_seen[fe_n++] = (HANDLE)h; }

static void test_registry_order(void **state) {
    (void)state;
    HANDLE ph = GetProcessHeap();
    HANDLE a = HeapCreate(0, 0, 0), b = HeapCreate(0, 0, 64 * KB), c = HeapCreate(HEAP_NO_SERIALIZE, 0, 0);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    HANDLE list[256];
    DWORD total = wh_heap_list(256, list);
    assert_true(total >= 4 && total <= 256);
    assert_ptr_equal(list[0], ph);
    assert_ptr_equal(list[total - 3], a);
    assert_ptr_equal(list[total - 2], b);
    assert_ptr_equal(list[total - 1], c);
    assert_int_equal(wh_heap_list(0, NULL), total);
    assert_int_equal(GetProcessHeaps(0, NULL), total);
    /* Only n handles are written. */
    HANDLE two[3] = { NULL, NULL, (HANDLE)0x1234 };
    assert_int_equal(wh_heap_list(2, two), total);
    assert_ptr_equal(two[0], ph);
    assert_ptr_equal(two[2], (HANDLE)0x1234);
    /* for_each_registered visits the same order (wh_heap_for_each skips
     * HEAP_NO_SERIALIZE heaps, whose locks exclude nothing). */
    fe_n = 0;
    wh_heap_for_each_registered(fe_collect);
    assert_int_equal(fe_n, (int)total);
    assert_memory_equal(fe_seen, list, total * sizeof(HANDLE));
    /* Destroy the middle one, create another: order by creation. */
    assert_true(HeapDestroy(b));
    HANDLE d = HeapCreate(0, 0, 0);
    assert_non_null(d);
    assert_int_equal(wh_heap_list(256, list), total);
    assert_ptr_equal(list[0], ph);
    assert_ptr_equal(list[total - 3], a);
    assert_ptr_equal(list[total - 2], c);
    assert_ptr_equal(list[total - 1], d);
    for (DWORD i = 0; i < total; i++) assert_ptr_not_equal(list[i], b);
    assert_true(HeapDestroy(a));
    assert_true(HeapDestroy(c));
    assert_true(HeapDestroy(d));
    assert_int_equal(wh_heap_list(0, NULL), total - 3);
}

static void test_process_heap_first(void **state) {
    (void)state;
    HANDLE ph = GetProcessHeap();
    assert_non_null(ph);
    assert_ptr_equal(wh_heap_process(), ph);
    assert_ptr_equal(wh_heap_process(), wh_heap_process());
    HANDLE x = HeapCreate(0, 0, 0);
    HANDLE list[256];
    DWORD total = wh_heap_list(256, list);
    assert_ptr_equal(list[0], ph);
    wh_heap *p = wh_heap_from_handle(ph);
    for (DWORD i = 1; i < total && i < 256; i++) assert_true(wh_heap_from_handle(list[i])->serial > p->serial);
    assert_true(p->flags & HEAP_GROWABLE);
    SetLastError(0);
    assert_false(HeapDestroy(ph));
    assert_int_equal(GetLastError(), ERROR_INVALID_HANDLE);
    assert_ptr_equal(wh_heap_from_handle(ph), ph);
    assert_true(HeapDestroy(x));
}

/* ---- fork ---- */

static _Atomic int stop_threads, stop_holder;
static _Atomic long loops_done;

static void *alloc_free_loop(void *arg) {
    HANDLE h = arg;
    void *keep[8] = { 0 };
    unsigned i = 0;
    while (!atomic_load(&stop_threads)) {
        unsigned k = i++ % 8;
        if (keep[k]) HeapFree(h, 0, keep[k]);
        keep[k] = HeapAlloc(h, 0, 16 + (i * 37) % 3000);
        if (i % 64 == 0) {
            void *lg = HeapAlloc(h, 0, 0x100000);
            HeapFree(h, 0, lg);
        }
        atomic_fetch_add(&loops_done, 1);
    }
    for (int k = 0; k < 8; k++) HeapFree(h, 0, keep[k]);
    return NULL;
}

/* Holds the heap lock (HeapLock) across allocations and registry calls. */
static void *lock_holder_loop(void *arg) {
    HANDLE h = arg;
    HANDLE list[64];
    while (!atomic_load(&stop_threads) && !atomic_load(&stop_holder)) {
        HeapLock(h);
        void *p = HeapAlloc(h, 0, 200);
        (void)GetProcessHeaps(64, list);
        HANDLE t = HeapCreate(0, 0, 0);
        if (t) HeapDestroy(t);
        HeapFree(h, 0, p);
        HeapUnlock(h);
        atomic_fetch_add(&loops_done, 1);
    }
    return NULL;
}

/* Runs in the child: exit codes name the step that failed. */
static void child_uses_heaps(void *arg) {
    HANDLE h = arg;
    void *p = HeapAlloc(h, 0, 100);
    if (!p) _exit(10);
    memset(p, 1, 100);
    if (!HeapFree(h, 0, p)) _exit(11);
    void *q = HeapAlloc(GetProcessHeap(), 0, 200);
    if (!q) _exit(12);
    if (!HeapFree(GetProcessHeap(), 0, q)) _exit(13);
    HANDLE n = HeapCreate(0, 0, 0);
    if (!n) _exit(14);
    void *r = HeapAlloc(n, 0, 5000), *lg = HeapAlloc(n, 0, 0x100000);
    if (!r || !lg) _exit(15);
    if (!HeapFree(n, 0, r)) _exit(16);
    if (!HeapDestroy(n)) _exit(17);
    if (!HeapValidate(h, 0, NULL)) _exit(18);
    if (!HeapLock(h)) _exit(19);
    if (!HeapUnlock(h)) _exit(20);
    if (wh_heap_lock_owned(wh_heap_from_handle(h))) _exit(21);
}

/* Fork one child running child_uses_heaps; 0 if it succeeded, else a code
 * (41: it hung, 42: killed by a signal, else its own exit code). */
static int fork_one(HANDLE h) {
    wh_child_result res;
    wh_run_child(child_uses_heaps, h, 10, &res);
    if (res.timed_out) return 41;
    if (!res.exited) return 42;
    return res.exit_code;
}

static void start_loops(HANDLE h, pthread_t *t, int with_process_heap) {
    atomic_store(&stop_threads, 0);
    atomic_store(&stop_holder, 0);
    atomic_store(&loops_done, 0);
    if (pthread_create(&t[0], NULL, alloc_free_loop, h) != 0) _exit(50);
    if (pthread_create(&t[1], NULL, lock_holder_loop, h) != 0) _exit(50);
    if (pthread_create(&t[2], NULL, alloc_free_loop, with_process_heap ? GetProcessHeap() : h) != 0) _exit(50);
    while (atomic_load(&loops_done) < 100) sleep_ms(1);
}

static void phase(const char *msg) { (void)!write(2, msg, strlen(msg)); }

static void stop_loops(HANDLE h, pthread_t *t) {
    phase("phase: forks done; stopping the loop threads\n");
    /* The HeapLock holder stops first: threads exiting while it calls the
     * registry is test_thread_exit_while_heaplock_holder_uses_registry. */
    atomic_store(&stop_holder, 1);
    pthread_join(t[1], NULL);
    atomic_store(&stop_threads, 1);
    pthread_join(t[0], NULL);
    pthread_join(t[2], NULL);
    if (!HeapValidate(h, 0, NULL)) _exit(51);
    if (!HeapDestroy(h)) _exit(52);
}

/* Scenario 1 (runs in a child of the test, so that a deadlock in the
 * parent's fork() is caught by the timeout): the main thread forks while
 * three threads loop on the heap lock (alloc/free on h and on the process
 * heap, HeapLock + registry calls on h). */
static void scenario_main_forks(void *arg) {
    (void)arg;
    HANDLE h = HeapCreate(0, 0, 0);
    if (!h) _exit(40);
    pthread_t t[3];
    start_loops(h, t, 1);
    phase("phase: forking\n");
    for (int i = 0; i < 40; i++) {
        int rc = fork_one(h);
        if (rc) _exit(rc);
    }
    stop_loops(h, t);
    phase("phase: loop threads joined\n");
}

typedef struct fork_thread_arg {
    HANDLE h;
    _Atomic int rc, done;
} fork_thread_arg;

static void *forker(void *arg) {
    fork_thread_arg *a = arg;
    for (int i = 0; i < 30 && !atomic_load(&a->rc); i++) atomic_store(&a->rc, fork_one(a->h));
    atomic_store(&a->done, 1);
    return NULL;
}

/* Scenario 2: a second thread forks while the main thread and three loop
 * threads keep taking the lock. */
static void scenario_thread_forks(void *arg) {
    (void)arg;
    HANDLE h = HeapCreate(0, 0, 0);
    if (!h) _exit(40);
    pthread_t t[3], f;
    start_loops(h, t, 0);
    static fork_thread_arg a;
    a.h = h;
    phase("phase: forking\n");
    if (pthread_create(&f, NULL, forker, &a) != 0) _exit(50);
    wh_heap *wh = wh_heap_from_handle(h);
    while (!atomic_load(&a.done)) {
        wh_heap_lock(wh);
        void *p = HeapAlloc(h, 0, 48);
        HeapFree(h, 0, p);
        wh_heap_unlock(wh);
    }
    pthread_join(f, NULL);
    if (atomic_load(&a.rc)) _exit(atomic_load(&a.rc));
    stop_loops(h, t);
    phase("phase: loop threads joined\n");
}

static void run_scenario(void (*fn)(void *), int timeout_s) {
    wh_child_result res;
    wh_run_child(fn, NULL, timeout_s, &res);
    if (res.timed_out) fail_msg("the scenario hung (deadlock); its last phase: %s", res.err);
    if (!res.exited || res.exit_code != 0)
        fail_msg("scenario failed: %s %d (41 = a child hung, 10-21 = a step in the child); stderr: %s",
                 res.exited ? "exit" : "signal", res.exited ? res.exit_code : res.signal, res.err);
}

/* Scenario 3 (no fork): threads that used the process heap exit (their
 * caches are handed back at thread exit) while another thread holds
 * HeapLock(h) and calls GetProcessHeaps / HeapCreate / HeapDestroy. */
static void *short_lived(void *arg) {
    (void)arg;
    void *p = HeapAlloc(GetProcessHeap(), 0, 64);
    HeapFree(GetProcessHeap(), 0, p);
    return NULL;
}

static void scenario_thread_exit(void *arg) {
    (void)arg;
    HANDLE h = HeapCreate(0, 0, 0);
    if (!h) _exit(40);
    atomic_store(&stop_threads, 0);
    atomic_store(&stop_holder, 0);
    atomic_store(&loops_done, 0);
    pthread_t holder;
    if (pthread_create(&holder, NULL, lock_holder_loop, h) != 0) _exit(50);
    while (atomic_load(&loops_done) < 10) sleep_ms(1);
    phase("phase: threads exiting\n");
    for (int i = 0; i < 2000; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, short_lived, NULL) != 0) _exit(50);
        pthread_join(t, NULL);
    }
    phase("phase: done; stopping the lock holder\n");
    atomic_store(&stop_threads, 1);
    pthread_join(holder, NULL);
    if (!HeapDestroy(h)) _exit(52);
}

static void test_thread_exit_while_heaplock_holder_uses_registry(void **state) {
    (void)state;
    run_scenario(scenario_thread_exit, 30);
}

static void test_fork_while_threads_hold_lock(void **state) {
    (void)state;
    run_scenario(scenario_main_forks, 60);
}

static void test_fork_from_other_thread(void **state) {
    (void)state;
    run_scenario(scenario_thread_forks, 60);
}

/* The forking thread itself holds HeapLock: the child inherits one level. */
static void child_holds_lock(void *arg) {
    HANDLE h = arg;
    wh_heap *wh = wh_heap_from_handle(h);
    if (!wh || !wh_heap_lock_owned(wh)) _exit(30);
    void *p = HeapAlloc(h, 0, 64); /* recursive */
    if (!p || !HeapFree(h, 0, p)) _exit(31);
    if (!HeapUnlock(h)) _exit(32);
    if (wh_heap_lock_owned(wh)) _exit(33);
    SetLastError(0);
    if (HeapUnlock(h) || GetLastError() != ERROR_NOT_OWNER) _exit(34);
    if (!HeapLock(h) || !HeapUnlock(h)) _exit(35);
}

static void test_fork_while_holding_heaplock(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    assert_true(HeapLock(h));
    wh_child_result res;
    wh_run_child(child_holds_lock, h, 10, &res);
    assert_false(res.timed_out);
    if (!res.exited || res.exit_code != 0)
        fail_msg("child %s %d: %s", res.exited ? "exit" : "signal", res.exited ? res.exit_code : res.signal, res.err);
    /* The parent still holds exactly its own level. */
    wh_heap *wh = wh_heap_from_handle(h);
    assert_true(wh_heap_lock_owned(wh));
    assert_int_equal(wh->recursion, 1);
    assert_true(HeapUnlock(h));
    assert_false(wh_heap_lock_owned(wh));
    assert_true(HeapDestroy(h));
}

int main(void) {
    setenv("WINHEAP_TERMINATE_ON_CORRUPTION", "0", 1);
    (void)GetProcessHeap();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_growable),
        cmocka_unit_test(test_create_fixed),
        cmocka_unit_test(test_create_failure_clean),
        cmocka_unit_test(test_destroy_releases_everything),
        cmocka_unit_test(test_from_handle_rejects),
        cmocka_unit_test(test_lock_recursive),
        cmocka_unit_test(test_registry_order),
        cmocka_unit_test(test_process_heap_first),
        cmocka_unit_test(test_thread_exit_while_heaplock_holder_uses_registry),
        cmocka_unit_test(test_fork_while_threads_hold_lock),
        cmocka_unit_test(test_fork_from_other_thread),
        cmocka_unit_test(test_fork_while_holding_heaplock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
