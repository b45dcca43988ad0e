/*
 * test_api_info.c - API conformance tests for HeapLock / HeapUnlock,
 * HeapQueryInformation and HeapSetInformation (SPEC 1.3, 2.10, 2.13, 2.14,
 * 3, 4.1-4.5 and decisions D2, D3, D5, D8, D15, D16), plus the binary layout
 * of PROCESS_HEAP_ENTRY, HEAP_SUMMARY and HEAP_OPTIMIZE_RESOURCES_INFORMATION
 * and the numeric values of the constants.
 *
 * Locking is tested with real threads: a second thread's serialized call must
 * block while the lock is held (a flag set after its call returns stays clear
 * across a short sleep, then gets set after HeapUnlock), HeapLock is
 * recursive, a non-owner's HeapUnlock fails with ERROR_NOT_OWNER, a
 * HEAP_NO_SERIALIZE heap excludes nothing, and a walk under HeapLock stays
 * consistent while another thread allocates.  The information classes are
 * checked for every success and error case of /work/notes/decisions.md,
 * including LFH activation (set, automatic, refused, irreversible) and
 * HeapOptimizeResources keeping blocks intact while it decommits.  Turning on
 * termination on corruption runs in a forked child.  The program runs with
 * termination off (WINHEAP_TERMINATE_ON_CORRUPTION=0).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

#define KiB ((SIZE_T)1024)
#define MiB (KiB * 1024)
#define BLOCK_MS 200    /* how long a blocked thread must stay blocked */
#define WAIT_MS 10000   /* how long we wait for something that must happen */

/* ------------------------------------------------------------------ helpers */

static void sleep_ms(int ms) {
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0) {}
}
static int flag_get(int *f) { return __atomic_load_n(f, __ATOMIC_SEQ_CST); }
static void flag_set(int *f, int v) { __atomic_store_n(f, v, __ATOMIC_SEQ_CST); }
/* Wait until *f becomes nonzero; 1 if it did within ms milliseconds. */
static int flag_wait(int *f, int ms) {
    for (int t = 0; t < ms; t += 5) {
        if (flag_get(f)) return 1;
        sleep_ms(5);
    }
    return flag_get(f) != 0;
}

typedef struct job {
    HANDLE h;
    int op;        /* what the thread does, see job_main */
    SIZE_T size;
    void *ptr;     /* in/out */
    BOOL ret;
    DWORD err;
    int started, done;
    int release;   /* op LOCK_HOLD: unlock when this becomes nonzero */
} job;

enum { OP_ALLOC, OP_FREE, OP_LOCK_UNLOCK, OP_UNLOCK, OP_LOCK_HOLD, OP_VALIDATE, OP_NOSER_LOCK, OP_NOSER_QUERY };

static void *job_main(void *arg) {
    job *j = arg;
    flag_set(&j->started, 1);
    switch (j->op) {
    case OP_ALLOC: j->ptr = HeapAlloc(j->h, 0, j->size); j->ret = j->ptr != NULL; break;
    case OP_FREE: j->ret = HeapFree(j->h, 0, j->ptr); break;
    case OP_LOCK_UNLOCK:
        j->ret = HeapLock(j->h);
        flag_set(&j->done, 1);
        if (j->ret) j->ret = HeapUnlock(j->h);
        return NULL;
    case OP_UNLOCK:
        SetLastError(0);
        j->ret = HeapUnlock(j->h);
        j->err = GetLastError();
        break;
    case OP_LOCK_HOLD:
        j->ret = HeapLock(j->h);
        flag_set(&j->done, 1);
        while (!flag_get(&j->release)) sleep_ms(2);
        if (j->ret) j->ret = HeapUnlock(j->h);
        return NULL;
    case OP_VALIDATE: j->ret = HeapValidate(j->h, 0, NULL); break;
    case OP_NOSER_QUERY: /* a per-call HEAP_NO_SERIALIZE skips the lock (SPEC 1.3) */
        j->ret = HeapValidate(j->h, HEAP_NO_SERIALIZE, NULL) && HeapCompact(j->h, HEAP_NO_SERIALIZE) > 0;
        break;
    case OP_NOSER_LOCK:
        j->ret = HeapLock(j->h) && HeapUnlock(j->h);
        break;
    }
    flag_set(&j->done, 1);
    return NULL;
}

static pthread_t job_start(job *j) {
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, job_main, j), 0);
    assert_true(flag_wait(&j->started, WAIT_MS));
    return t;
}

static ULONG query_compat(HANDLE h) {
    ULONG v = 0xDEADBEEF;
    SIZE_T rl = 0;
    assert_true(HeapQueryInformation(h, HeapCompatibilityInformation, &v, sizeof v, &rl));
    assert_int_equal(rl, sizeof(ULONG));
    return v;
}

static void set_compat_fails(HANDLE h, ULONG v, DWORD err) {
    SetLastError(0);
    assert_false(HeapSetInformation(h, HeapCompatibilityInformation, &v, sizeof v));
    assert_int_equal(GetLastError(), err);
}

static HANDLE dead_heap(void) {
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    assert_true(HeapDestroy(h));
    return h;
}
#define RANDOM_HANDLE ((HANDLE)(uintptr_t)0x7a3450000ULL)

/* --------------------------------------------------- layouts and constants */

static void test_layout_process_heap_entry(void **state) {
    (void)state;
    assert_int_equal(sizeof(PROCESS_HEAP_ENTRY), 40);
    assert_int_equal(offsetof(PROCESS_HEAP_ENTRY, lpData), 0);
    assert_int_equal(offsetof(PROCESS_HEAP_ENTRY, cbData), 8);
    assert_int_equal(offsetof(PROCESS_HEAP_ENTRY, cbOverhead), 12);
    assert_int_equal(offsetof(PROCESS_HEAP_ENTRY, iRegionIndex), 13);
    assert_int_equal(offsetof(PROCESS_HEAP_ENTRY, wFlags), 14);
    assert_int_equal(offsetof(PROCESS_HEAP_ENTRY, Block), 16);
    assert_int_equal(offsetof(PROCESS_HEAP_ENTRY, Region), 16);
    assert_int_equal(offsetof(PROCESS_HEAP_ENTRY, Block.hMem), 16);
    assert_int_equal(offsetof(PROCESS_HEAP_ENTRY, Block.dwReserved), 24);
    assert_int_equal(offsetof(PROCESS_HEAP_ENTRY, Region.dwCommittedSize), 16);
    assert_int_equal(offsetof(PROCESS_HEAP_ENTRY, Region.dwUnCommittedSize), 20);
    assert_int_equal(offsetof(PROCESS_HEAP_ENTRY, Region.lpFirstBlock), 24);
    assert_int_equal(offsetof(PROCESS_HEAP_ENTRY, Region.lpLastBlock), 32);
    PROCESS_HEAP_ENTRY e;
    assert_int_equal(sizeof e.cbData, 4);
    assert_int_equal(sizeof e.cbOverhead, 1);
    assert_int_equal(sizeof e.iRegionIndex, 1);
    assert_int_equal(sizeof e.wFlags, 2);
    assert_int_equal(sizeof e.Block.dwReserved, 12);
    assert_int_equal(sizeof e.Region.dwCommittedSize, 4);
    assert_int_equal(sizeof(LPPROCESS_HEAP_ENTRY), sizeof(void *));
    assert_int_equal(PROCESS_HEAP_REGION, 0x0001);
    assert_int_equal(PROCESS_HEAP_UNCOMMITTED_RANGE, 0x0002);
    assert_int_equal(PROCESS_HEAP_ENTRY_BUSY, 0x0004);
    assert_int_equal(PROCESS_HEAP_SEG_ALLOC, 0x0008);
    assert_int_equal(PROCESS_HEAP_ENTRY_MOVEABLE, 0x0010);
    assert_int_equal(PROCESS_HEAP_ENTRY_DDESHARE, 0x0020);
}

static void test_layout_summary_and_info(void **state) {
    (void)state;
    assert_int_equal(sizeof(HEAP_SUMMARY), 40);
    assert_int_equal(offsetof(HEAP_SUMMARY, cb), 0);
    assert_int_equal(offsetof(HEAP_SUMMARY, cbAllocated), 8);
    assert_int_equal(offsetof(HEAP_SUMMARY, cbCommitted), 16);
    assert_int_equal(offsetof(HEAP_SUMMARY, cbReserved), 24);
    assert_int_equal(offsetof(HEAP_SUMMARY, cbMaxReserve), 32);
    HEAP_SUMMARY s;
    assert_int_equal(sizeof s.cb, 4);
    assert_int_equal(sizeof s.cbAllocated, 8);
    assert_int_equal(sizeof(HEAP_OPTIMIZE_RESOURCES_INFORMATION), 8);
    assert_int_equal(offsetof(HEAP_OPTIMIZE_RESOURCES_INFORMATION, Version), 0);
    assert_int_equal(offsetof(HEAP_OPTIMIZE_RESOURCES_INFORMATION, Flags), 4);
    assert_int_equal(HEAP_OPTIMIZE_RESOURCES_CURRENT_VERSION, 1);
    assert_int_equal(HeapCompatibilityInformation, 0);
    assert_int_equal(HeapEnableTerminationOnCorruption, 1);
    assert_int_equal(HeapOptimizeResources, 3);
    assert_int_equal(HeapTag, 7);
    assert_int_equal(sizeof(ULONG), 4);
    assert_int_equal(sizeof(DWORD), 4);
    assert_int_equal(sizeof(BOOL), 4);
    assert_int_equal(sizeof(SIZE_T), sizeof(void *));
    assert_int_equal(ERROR_INVALID_HANDLE, 6);
    assert_int_equal(ERROR_GEN_FAILURE, 31);
    assert_int_equal(ERROR_INVALID_PARAMETER, 87);
    assert_int_equal(ERROR_INSUFFICIENT_BUFFER, 122);
    assert_int_equal(ERROR_NO_MORE_ITEMS, 259);
    assert_int_equal(ERROR_NOT_OWNER, 288);
    assert_int_equal(ERROR_NOACCESS, 998);
}

/* ------------------------------------------------------- HeapLock / Unlock */

static void test_lock_recursive(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    SetLastError(1234);
    assert_true(HeapLock(h));
    assert_true(HeapLock(h));
    assert_int_equal(GetLastError(), 1234);
    /* the owner may use the heap while holding the lock */
    void *p = HeapAlloc(h, 0, 100);
    assert_non_null(p);
    void *q = HeapAlloc(h, 0, 200 * KiB);
    assert_non_null(q);
    assert_true(HeapFree(h, 0, p));
    assert_true(HeapValidate(h, 0, NULL));
    PROCESS_HEAP_ENTRY e;
    memset(&e, 0, sizeof e);
    assert_true(HeapWalk(h, &e));
    assert_true(HeapFree(h, 0, q));
    assert_true(HeapUnlock(h));
    assert_true(HeapUnlock(h));
    assert_int_equal(GetLastError(), 1234);
    /* one unlock too many */
    SetLastError(0);
    assert_false(HeapUnlock(h));
    assert_int_equal(GetLastError(), ERROR_NOT_OWNER);
    /* the lock is really free again: another thread gets it */
    static job j;
    j = (job){ .h = h, .op = OP_LOCK_UNLOCK };
    pthread_t t = job_start(&j);
    assert_true(flag_wait(&j.done, WAIT_MS));
    pthread_join(t, NULL);
    assert_true(j.ret);
    assert_true(HeapDestroy(h));
}

static void test_lock_blocks_other_threads(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    void *victim = HeapAlloc(h, 0, 150 * KiB);
    assert_non_null(victim);
    assert_true(HeapLock(h));
    /* sizes far above any LFH class, first of their size: served under the lock */
    /* static: a thread that never returns must not outlive its job */
    static job ja, jf, jl, jv;
    ja = (job){ .h = h, .op = OP_ALLOC, .size = 200 * KiB };
    jf = (job){ .h = h, .op = OP_FREE, .ptr = victim };
    jl = (job){ .h = h, .op = OP_LOCK_UNLOCK };
    jv = (job){ .h = h, .op = OP_VALIDATE };
    pthread_t ta = job_start(&ja), tf = job_start(&jf), tl = job_start(&jl), tv = job_start(&jv);
    /* per-call HEAP_NO_SERIALIZE queries do not wait for the lock */
    static job jn;
    jn = (job){ .h = h, .op = OP_NOSER_QUERY };
    pthread_t tn = job_start(&jn);
    int n_done = flag_wait(&jn.done, WAIT_MS);
    sleep_ms(BLOCK_MS);
    int a_done = flag_get(&ja.done), f_done = flag_get(&jf.done);
    int l_done = flag_get(&jl.done), v_done = flag_get(&jv.done);
    /* the owner still works */
    void *mine = HeapAlloc(h, 0, 64);
    assert_non_null(mine);
    assert_true(HeapFree(h, 0, mine));
    assert_true(HeapUnlock(h));
    int ok = flag_wait(&ja.done, WAIT_MS) & flag_wait(&jf.done, WAIT_MS) & flag_wait(&jl.done, WAIT_MS) &
             flag_wait(&jv.done, WAIT_MS);
    assert_true(ok);
    assert_true(n_done);
    pthread_join(tn, NULL);
    assert_true(jn.ret);
    pthread_join(ta, NULL);
    pthread_join(tf, NULL);
    pthread_join(tl, NULL);
    pthread_join(tv, NULL);
    assert_int_equal(a_done, 0);
    assert_int_equal(f_done, 0);
    assert_int_equal(l_done, 0);
    assert_int_equal(v_done, 0);
    assert_true(ja.ret);
    assert_true(jf.ret);
    assert_true(jl.ret);
    assert_true(jv.ret);
    assert_int_equal(HeapSize(h, 0, ja.ptr), 200 * KiB);
    assert_true(HeapFree(h, 0, ja.ptr));
    assert_true(HeapValidate(h, 0, NULL));
    assert_true(HeapDestroy(h));
}

static void test_unlock_non_owner(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    /* nobody holds it */
    SetLastError(0);
    assert_false(HeapUnlock(h));
    assert_int_equal(GetLastError(), ERROR_NOT_OWNER);
    job j0 = { .h = h, .op = OP_UNLOCK };
    pthread_t t0 = job_start(&j0);
    pthread_join(t0, NULL);
    assert_false(j0.ret);
    assert_int_equal(j0.err, ERROR_NOT_OWNER);
    /* main holds it (twice); another thread's unlock fails and changes nothing */
    assert_true(HeapLock(h));
    assert_true(HeapLock(h));
    job j1 = { .h = h, .op = OP_UNLOCK };
    pthread_t t1 = job_start(&j1);
    pthread_join(t1, NULL);
    assert_false(j1.ret);
    assert_int_equal(j1.err, ERROR_NOT_OWNER);
    assert_true(HeapUnlock(h)); /* one level left */
    static job jl, jh; /* static: a thread that never returns must not outlive its job */
    jl = (job){ .h = h, .op = OP_LOCK_UNLOCK };
    pthread_t tl = job_start(&jl);
    sleep_ms(BLOCK_MS);
    int early = flag_get(&jl.done);
    assert_true(HeapUnlock(h));
    int late = flag_wait(&jl.done, WAIT_MS);
    assert_int_equal(early, 0);
    assert_true(late);
    pthread_join(tl, NULL);
    assert_true(jl.ret);
    /* a lock held by another thread: main is not the owner */
    jh = (job){ .h = h, .op = OP_LOCK_HOLD };
    pthread_t th = job_start(&jh);
    assert_true(flag_wait(&jh.done, WAIT_MS));
    SetLastError(0);
    BOOL r = HeapUnlock(h);
    DWORD e = GetLastError();
    flag_set(&jh.release, 1);
    pthread_join(th, NULL);
    assert_false(r);
    assert_int_equal(e, ERROR_NOT_OWNER);
    assert_true(jh.ret);
    assert_true(HeapDestroy(h));
}

static void test_lock_no_serialize_heap(void **state) {
    (void)state;
    HANDLE h = HeapCreate(HEAP_NO_SERIALIZE, 0, 0);
    assert_non_null(h);
    SetLastError(1234);
    assert_true(HeapLock(h));
    assert_int_equal(GetLastError(), 1234);
    /* no exclusion: another thread's HeapLock succeeds at once */
    static job j, ja; /* static: a thread that never returns must not outlive its job */
    j = (job){ .h = h, .op = OP_NOSER_LOCK };
    pthread_t t = job_start(&j);
    int done = flag_wait(&j.done, WAIT_MS);
    assert_true(done);
    pthread_join(t, NULL);
    assert_true(HeapUnlock(h));
    assert_true(j.ret);
    /* and so does its HeapAlloc while main holds the "lock" */
    assert_true(HeapLock(h));
    ja = (job){ .h = h, .op = OP_ALLOC, .size = 300 };
    pthread_t ta = job_start(&ja);
    done = flag_wait(&ja.done, WAIT_MS);
    assert_true(done);
    pthread_join(ta, NULL);
    assert_true(HeapUnlock(h));
    assert_non_null(ja.ptr);
    assert_true(HeapFree(h, 0, ja.ptr));
    assert_true(HeapDestroy(h));
}

static void test_lock_bad_handle(void **state) {
    (void)state;
    HANDLE bad[4] = { NULL, dead_heap(), RANDOM_HANDLE, (HANDLE)((char *)GetProcessHeap() + 16) };
    for (int i = 0; i < 4; i++) {
        SetLastError(0);
        assert_false(HeapLock(bad[i]));
        assert_int_equal(GetLastError(), ERROR_INVALID_HANDLE);
        SetLastError(0);
        assert_false(HeapUnlock(bad[i]));
        assert_int_equal(GetLastError(), ERROR_INVALID_HANDLE);
    }
}

static void test_lock_process_heap(void **state) {
    (void)state;
    HANDLE ph = GetProcessHeap();
    assert_true(HeapLock(ph));
    void *p = HeapAlloc(ph, 0, 10);
    assert_non_null(p);
    assert_true(HeapFree(ph, 0, p));
    assert_true(HeapUnlock(ph));
}

/* A worker that allocates and frees mixed sizes until told to stop. */
typedef struct churn {
    HANDLE h;
    int stop;
    long ops;
} churn;

static void *churn_main(void *arg) {
    churn *c = arg;
    void *ring[64] = {0};
    SIZE_T sz[64] = {0};
    uint64_t rs = 0xC0FFEE;
    long ops = 0;
    while (!flag_get(&c->stop)) {
        uint64_t r = wh_rand(&rs);
        int k = (int)(r % 64);
        if (ring[k]) {
            unsigned char *b = ring[k];
            if (sz[k] && (b[0] != (unsigned char)k || b[sz[k] - 1] != (unsigned char)k)) abort();
            if (!HeapFree(c->h, 0, ring[k])) abort();
        }
        SIZE_T n = (r >> 8) % 4 == 0 ? (SIZE_T)((r >> 16) % 40000) : (SIZE_T)((r >> 16) % 256);
        ring[k] = HeapAlloc(c->h, 0, n);
        if (!ring[k]) abort();
        sz[k] = n;
        memset(ring[k], k, n);
        __atomic_store_n(&c->ops, ++ops, __ATOMIC_RELAXED);
    }
    for (int k = 0; k < 64; k++) if (ring[k]) HeapFree(c->h, 0, ring[k]);
    return NULL;
}

/* Collect one walk and check order and non-overlap (D12); returns the
 * number of entries, fails the test on an inconsistency. */
static size_t walk_consistent(HANDLE h) {
    PROCESS_HEAP_ENTRY e;
    memset(&e, 0xcd, sizeof e);
    e.lpData = NULL;
    size_t n = 0, regions = 0;
    uintptr_t rbase = 0, rend = 0, prev_end = 0;
    int seen_large = 0;
    SetLastError(0);
    while (HeapWalk(h, &e)) {
        uintptr_t a = (uintptr_t)e.lpData;
        if (n == 0) {
            assert_int_equal(e.wFlags, PROCESS_HEAP_REGION);
            assert_ptr_equal(e.lpData, h);
        }
        if (e.wFlags == PROCESS_HEAP_REGION) {
            assert_false(seen_large);
            assert_int_equal(e.iRegionIndex, regions);
            regions++;
            rbase = a;
            rend = a + e.cbData;
            prev_end = rbase;
        } else if (e.iRegionIndex == 64 && e.wFlags == PROCESS_HEAP_ENTRY_BUSY) {
            seen_large = 1;
            assert_true(a + e.cbData <= rbase || a >= rend);
        } else {
            assert_false(seen_large);
            assert_true(e.wFlags == 0 || e.wFlags == PROCESS_HEAP_ENTRY_BUSY ||
                        e.wFlags == PROCESS_HEAP_UNCOMMITTED_RANGE);
            assert_int_equal(e.iRegionIndex, regions - 1);
            assert_true(a >= prev_end);
            assert_true(a + e.cbData <= rend);
            prev_end = a + e.cbData;
        }
        if (++n > 2000000) fail_msg("HeapWalk does not end");
    }
    assert_int_equal(GetLastError(), ERROR_NO_MORE_ITEMS);
    return n;
}

static void test_lock_walk_while_other_thread_allocates(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    churn c = { .h = h };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, churn_main, &c), 0);
    while (__atomic_load_n(&c.ops, __ATOMIC_RELAXED) < 1000) sleep_ms(1);
    long before = __atomic_load_n(&c.ops, __ATOMIC_RELAXED);
    for (int i = 0; i < 40; i++) {
        assert_true(HeapLock(h));
        size_t n = walk_consistent(h);
        BOOL v = HeapValidate(h, 0, NULL);
        size_t n2 = walk_consistent(h);
        assert_true(HeapUnlock(h));
        assert_true(n >= 3 && n2 >= 3);
        assert_true(v);
        sleep_ms(2);
    }
    long after = __atomic_load_n(&c.ops, __ATOMIC_RELAXED);
    flag_set(&c.stop, 1);
    pthread_join(t, NULL);
    assert_true(after > before); /* the worker really ran in between */
    assert_true(HeapValidate(h, 0, NULL));
    assert_true(HeapDestroy(h));
}

/* ------------------------------------------------- HeapQueryInformation */

static void test_query_errors(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    ULONG v = 0x55555555;
    SIZE_T rl = 0x5555;
    /* NULL handle: ERROR_NOACCESS, ReturnLength untouched */
    SetLastError(0);
    assert_false(HeapQueryInformation(NULL, HeapCompatibilityInformation, &v, sizeof v, &rl));
    assert_int_equal(GetLastError(), ERROR_NOACCESS);
    assert_int_equal(rl, 0x5555);
    assert_int_equal(v, 0x55555555);
    /* bad handles */
    HANDLE bad[3] = { dead_heap(), RANDOM_HANDLE, (HANDLE)((char *)h + 4096) };
    for (int i = 0; i < 3; i++) {
        SetLastError(0);
        assert_false(HeapQueryInformation(bad[i], HeapCompatibilityInformation, &v, sizeof v, &rl));
        assert_int_equal(GetLastError(), ERROR_INVALID_HANDLE);
    }
    /* too small: 122 and the required size */
    for (SIZE_T len = 0; len < 4; len++) {
        rl = 0x5555;
        SetLastError(0);
        assert_false(HeapQueryInformation(h, HeapCompatibilityInformation, len ? &v : NULL, len, &rl));
        assert_int_equal(GetLastError(), ERROR_INSUFFICIENT_BUFFER);
        assert_int_equal(rl, 4);
        SetLastError(0);
        assert_false(HeapQueryInformation(h, HeapCompatibilityInformation, &v, len, NULL));
        assert_int_equal(GetLastError(), ERROR_INSUFFICIENT_BUFFER);
    }
    assert_int_equal(v, 0x55555555);
    /* NULL buffer with a big enough length */
    SetLastError(0);
    assert_false(HeapQueryInformation(h, HeapCompatibilityInformation, NULL, 4, &rl));
    assert_int_equal(GetLastError(), ERROR_NOACCESS);
    SetLastError(0);
    assert_false(HeapQueryInformation(h, HeapCompatibilityInformation, NULL, 64, NULL));
    assert_int_equal(GetLastError(), ERROR_NOACCESS);
    /* unknown classes */
    const int unknown[6] = { 2, 4, 5, 7, 99, -1 };
    for (int i = 0; i < 6; i++) {
        ULONG buf[8];
        SetLastError(0);
        assert_false(HeapQueryInformation(h, (HEAP_INFORMATION_CLASS)unknown[i], buf, sizeof buf, &rl));
        assert_int_equal(GetLastError(), ERROR_INVALID_PARAMETER);
    }
    assert_true(HeapDestroy(h));
}

static void test_query_success(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    ULONG v = 0xDEADBEEF;
    SIZE_T rl = 0x5555;
    SetLastError(1234);
    assert_true(HeapQueryInformation(h, HeapCompatibilityInformation, &v, sizeof v, &rl));
    assert_int_equal(GetLastError(), 1234);
    assert_int_equal(v, 0);
    assert_int_equal(rl, 4);
    /* a larger buffer: writes 4 bytes only */
    unsigned char buf[8];
    memset(buf, 0xAA, sizeof buf);
    rl = 0x5555;
    assert_true(HeapQueryInformation(h, HeapCompatibilityInformation, buf, 5, &rl));
    assert_int_equal(rl, 4);
    ULONG got;
    memcpy(&got, buf, 4);
    assert_int_equal(got, 0);
    for (int i = 4; i < 8; i++) assert_int_equal(buf[i], 0xAA);
    /* ReturnLength is optional */
    v = 0xDEADBEEF;
    assert_true(HeapQueryInformation(h, HeapCompatibilityInformation, &v, sizeof v, NULL));
    assert_int_equal(v, 0);
    /* other private heaps are 0 too when fresh */
    HANDLE hn = HeapCreate(HEAP_NO_SERIALIZE, 0, 0), hf = HeapCreate(0, 0, MiB);
    assert_int_equal(query_compat(hn), 0);
    assert_int_equal(query_compat(hf), 0);
    /* the process heap answers 0 or 2 */
    ULONG pv = query_compat(GetProcessHeap());
    assert_true(pv == 0 || pv == 2);
    assert_true(HeapDestroy(hn));
    assert_true(HeapDestroy(hf));
    assert_true(HeapDestroy(h));
}

/* --------------------------------------------------- HeapSetInformation */

static void test_set_compat(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    ULONG v;
    /* argument errors */
    v = 2;
    SetLastError(0);
    assert_false(HeapSetInformation(NULL, HeapCompatibilityInformation, &v, sizeof v));
    assert_int_equal(GetLastError(), ERROR_INVALID_HANDLE);
    HANDLE bad[2] = { dead_heap(), RANDOM_HANDLE };
    for (int i = 0; i < 2; i++) set_compat_fails(bad[i], 2, ERROR_INVALID_HANDLE);
    SetLastError(0);
    assert_false(HeapSetInformation(h, HeapCompatibilityInformation, NULL, 4));
    assert_int_equal(GetLastError(), ERROR_INVALID_PARAMETER);
    for (SIZE_T len = 0; len < 4; len++) {
        SetLastError(0);
        assert_false(HeapSetInformation(h, HeapCompatibilityInformation, &v, len));
        assert_int_equal(GetLastError(), ERROR_INVALID_PARAMETER);
    }
    const ULONG other[4] = { 3, 4, 0x100, 0xFFFFFFFF };
    for (int i = 0; i < 4; i++) set_compat_fails(h, other[i], ERROR_INVALID_PARAMETER);
    assert_int_equal(query_compat(h), 0);
    /* 0 and 1 before the LFH: accepted, no change */
    for (ULONG x = 0; x < 2; x++) {
        SetLastError(1234);
        assert_true(HeapSetInformation(h, HeapCompatibilityInformation, &x, sizeof x));
        assert_int_equal(GetLastError(), 1234);
        assert_int_equal(query_compat(h), 0);
    }
    /* 2 turns the LFH on, for good */
    v = 2;
    SetLastError(1234);
    assert_true(HeapSetInformation(h, HeapCompatibilityInformation, &v, sizeof v));
    assert_int_equal(GetLastError(), 1234);
    assert_int_equal(query_compat(h), 2);
    set_compat_fails(h, 0, ERROR_GEN_FAILURE);
    set_compat_fails(h, 1, ERROR_GEN_FAILURE);
    assert_int_equal(query_compat(h), 2);
    v = 2;
    assert_true(HeapSetInformation(h, HeapCompatibilityInformation, &v, sizeof v));
    assert_int_equal(query_compat(h), 2);
    /* the heap works with it */
    void *p[100];
    for (int i = 0; i < 100; i++) { p[i] = HeapAlloc(h, 0, 40); assert_non_null(p[i]); memset(p[i], i, 40); }
    for (int i = 0; i < 100; i++) {
        assert_int_equal(HeapSize(h, 0, p[i]), 40);
        assert_int_equal(((unsigned char *)p[i])[39], i);
        assert_true(HeapFree(h, 0, p[i]));
    }
    assert_true(HeapValidate(h, 0, NULL));
    /* the process heap accepts it as well */
    v = 2;
    assert_true(HeapSetInformation(GetProcessHeap(), HeapCompatibilityInformation, &v, sizeof v));
    assert_int_equal(query_compat(GetProcessHeap()), 2);
    assert_true(HeapDestroy(h));
}

static void test_set_compat_refused(void **state) {
    (void)state;
    HANDLE hn = HeapCreate(HEAP_NO_SERIALIZE, 0, 0);
    HANDLE hf = HeapCreate(0, 0, MiB);
    HANDLE hf2 = HeapCreate(0, 256 * KiB, 256 * KiB);
    HANDLE hs[3] = { hn, hf, hf2 };
    for (int i = 0; i < 3; i++) {
        assert_non_null(hs[i]);
        set_compat_fails(hs[i], 2, ERROR_INVALID_PARAMETER);
        assert_int_equal(query_compat(hs[i]), 0);
        /* and no LFH appears on its own either */
        void *p[100];
        for (int k = 0; k < 100; k++) { p[k] = HeapAlloc(hs[i], 0, 48); assert_non_null(p[k]); }
        for (int k = 0; k < 100; k += 2) assert_true(HeapFree(hs[i], 0, p[k]));
        for (int k = 0; k < 100; k++) assert_non_null(HeapAlloc(hs[i], 0, 32));
        assert_int_equal(query_compat(hs[i]), 0);
        assert_true(HeapValidate(hs[i], 0, NULL));
        assert_true(HeapDestroy(hs[i]));
    }
}

static void test_lfh_activates_by_itself(void **state) {
    (void)state;
    /* 18 live allocations of one size */
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    assert_int_equal(query_compat(h), 0);
    for (int i = 0; i < 18; i++) assert_non_null(HeapAlloc(h, 0, 48));
    assert_int_equal(query_compat(h), 2);
    set_compat_fails(h, 0, ERROR_GEN_FAILURE);
    set_compat_fails(h, 1, ERROR_GEN_FAILURE);
    assert_int_equal(query_compat(h), 2);
    assert_true(HeapValidate(h, 0, NULL));
    assert_true(HeapDestroy(h));
    /* 18 allocations of one size, each freed at once */
    h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    assert_int_equal(query_compat(h), 0);
    for (int i = 0; i < 18; i++) {
        void *p = HeapAlloc(h, 0, 100);
        assert_non_null(p);
        assert_true(HeapFree(h, 0, p));
    }
    assert_int_equal(query_compat(h), 2);
    assert_true(HeapDestroy(h));
}

static void termination_child(void *arg) {
    (void)arg;
    if (!HeapSetInformation(NULL, HeapEnableTerminationOnCorruption, NULL, 0)) _exit(3);
    /* the buffer is ignored; calling it again is fine */
    ULONG junk = 0x12345678;
    if (!HeapSetInformation(NULL, HeapEnableTerminationOnCorruption, &junk, sizeof junk)) _exit(4);
    if (!HeapSetInformation(NULL, HeapEnableTerminationOnCorruption, NULL, 0)) _exit(5);
    /* it is on now, although the environment turned it off: a double free aborts */
    HANDLE h = HeapCreate(0, 0, 0);
    void *p = HeapAlloc(h, 0, 64);
    void *keep = HeapAlloc(h, 0, 64);
    (void)keep;
    if (!h || !p || !HeapFree(h, 0, p)) _exit(6);
    HeapFree(h, 0, p);
    _exit(7); /* still alive: termination did not take effect */
}

static void test_set_termination_on_corruption(void **state) {
    (void)state;
    wh_child_result r;
    wh_run_child(termination_child, NULL, 30, &r);
    if (r.exited) fail_msg("child exited with code %d (3-5: HeapSetInformation failed, 7: no termination)", r.exit_code);
    assert_false(r.timed_out);
    assert_true(r.signaled);
    assert_int_equal(r.signal, SIGABRT);
    assert_non_null(strstr(r.err, "STATUS_HEAP_CORRUPTION (0xC0000374) in HeapFree"));
    assert_non_null(strstr(r.err, "double free"));
}

static void test_set_optimize_errors(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    HEAP_OPTIMIZE_RESOURCES_INFORMATION oi = { HEAP_OPTIMIZE_RESOURCES_CURRENT_VERSION, 0 };
    HANDLE targets[2] = { NULL, h };
    for (int t = 0; t < 2; t++) {
        HANDLE x = targets[t];
        SetLastError(0);
        assert_false(HeapSetInformation(x, HeapOptimizeResources, NULL, sizeof oi));
        assert_int_equal(GetLastError(), ERROR_INVALID_PARAMETER);
        for (SIZE_T len = 0; len < 8; len++) {
            SetLastError(0);
            assert_false(HeapSetInformation(x, HeapOptimizeResources, &oi, len));
            assert_int_equal(GetLastError(), ERROR_INVALID_PARAMETER);
        }
        const DWORD badver[4] = { 0, 2, 0x100, 0xFFFFFFFF };
        for (int i = 0; i < 4; i++) {
            HEAP_OPTIMIZE_RESOURCES_INFORMATION b = { badver[i], 0 };
            SetLastError(0);
            assert_false(HeapSetInformation(x, HeapOptimizeResources, &b, sizeof b));
            assert_int_equal(GetLastError(), ERROR_INVALID_PARAMETER);
        }
        /* good calls; a longer buffer is fine */
        SetLastError(1234);
        assert_true(HeapSetInformation(x, HeapOptimizeResources, &oi, sizeof oi));
        assert_int_equal(GetLastError(), 1234);
        unsigned char big[16] = {0};
        memcpy(big, &oi, sizeof oi);
        assert_true(HeapSetInformation(x, HeapOptimizeResources, big, sizeof big));
    }
    HANDLE bad[2] = { dead_heap(), RANDOM_HANDLE };
    for (int i = 0; i < 2; i++) {
        SetLastError(0);
        assert_false(HeapSetInformation(bad[i], HeapOptimizeResources, &oi, sizeof oi));
        assert_int_equal(GetLastError(), ERROR_INVALID_HANDLE);
    }
    assert_true(HeapValidate(h, 0, NULL));
    assert_true(HeapDestroy(h));
}

static SIZE_T committed(HANDLE h) {
    HEAP_SUMMARY s;
    memset(&s, 0, sizeof s);
    s.cb = sizeof s;
    assert_true(HeapSummary(h, 0, &s));
    return s.cbCommitted;
}

static void test_set_optimize_keeps_blocks(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    enum { N = 60 };
    void *p[N];
    SIZE_T sz[N];
    for (int i = 0; i < N; i++) {
        sz[i] = 40000 + 1000 * (SIZE_T)i; /* distinct sizes, none LFH-served */
        p[i] = HeapAlloc(h, 0, sz[i]);
        assert_non_null(p[i]);
        memset(p[i], 0x40 + i, sz[i]);
    }
    /* free long runs between a few survivors; blocks 51..59 (the end of the
     * last region) are all freed, so whole free pages exist at the top */
    for (int i = 0; i < N; i++) if (i % 10) { assert_true(HeapFree(h, 0, p[i])); p[i] = NULL; }
    SIZE_T c0 = committed(h);
    HEAP_OPTIMIZE_RESOURCES_INFORMATION oi = { HEAP_OPTIMIZE_RESOURCES_CURRENT_VERSION, 0 };
    assert_true(HeapSetInformation(h, HeapOptimizeResources, &oi, sizeof oi));
    SIZE_T c1 = committed(h);
    assert_true(c1 < c0); /* D8: the free pages were decommitted */
    assert_true(c1 >= 6 * 40000);
    assert_true(HeapValidate(h, 0, NULL));
    walk_consistent(h);
    /* plus an LFH-managed population, trimmed as well */
    ULONG two = 2;
    assert_true(HeapSetInformation(h, HeapCompatibilityInformation, &two, sizeof two));
    void *s[500];
    for (int i = 0; i < 500; i++) { s[i] = HeapAlloc(h, 0, 32); assert_non_null(s[i]); memset(s[i], i & 0xff, 32); }
    for (int i = 0; i < 500; i++) if (i % 50) { assert_true(HeapFree(h, 0, s[i])); s[i] = NULL; }
    assert_true(HeapSetInformation(h, HeapOptimizeResources, &oi, sizeof oi));
    assert_true(HeapValidate(h, 0, NULL));
    walk_consistent(h);
    for (int i = 0; i < N; i++) {
        if (!p[i]) continue;
        assert_true(HeapValidate(h, 0, p[i]));
        assert_int_equal(HeapSize(h, 0, p[i]), sz[i]);
        for (SIZE_T k = 0; k < sz[i]; k += 511) assert_int_equal(((unsigned char *)p[i])[k], 0x40 + i);
        assert_int_equal(((unsigned char *)p[i])[sz[i] - 1], 0x40 + i);
    }
    for (int i = 0; i < 500; i++) {
        if (!s[i]) continue;
        assert_true(HeapValidate(h, 0, s[i]));
        for (int k = 0; k < 32; k++) assert_int_equal(((unsigned char *)s[i])[k], i & 0xff);
    }
    /* the heap is fully usable afterwards, including the decommitted space */
    for (int i = 0; i < N; i++) {
        if (p[i]) continue;
        p[i] = HeapAlloc(h, 0, sz[i]);
        assert_non_null(p[i]);
        memset(p[i], 0x40 + i, sz[i]);
    }
    for (int i = 0; i < 500; i++) if (!s[i]) { s[i] = HeapAlloc(h, 0, 32); assert_non_null(s[i]); memset(s[i], i & 0xff, 32); }
    assert_true(HeapSetInformation(NULL, HeapOptimizeResources, &oi, sizeof oi));
    assert_true(HeapValidate(h, 0, NULL));
    walk_consistent(h);
    for (int i = 0; i < N; i++) {
        assert_int_equal(((unsigned char *)p[i])[0], 0x40 + i);
        assert_int_equal(((unsigned char *)p[i])[sz[i] - 1], 0x40 + i);
        assert_true(HeapFree(h, 0, p[i]));
    }
    for (int i = 0; i < 500; i++) {
        assert_int_equal(((unsigned char *)s[i])[31], i & 0xff);
        assert_true(HeapFree(h, 0, s[i]));
    }
    assert_true(HeapValidate(h, 0, NULL));
    assert_true(HeapValidate(GetProcessHeap(), 0, NULL));
    assert_true(HeapDestroy(h));
}

static void test_set_unknown_classes(void **state) {
    (void)state;
    HANDLE h = HeapCreate(0, 0, 0);
    assert_non_null(h);
    const int unknown[8] = { 2, 4, 5, 6, 7, 8, 99, -1 };
    for (int i = 0; i < 8; i++) {
        ULONG buf[8] = { 1, 0 };
        SetLastError(0);
        assert_false(HeapSetInformation(h, (HEAP_INFORMATION_CLASS)unknown[i], buf, sizeof buf));
        assert_int_equal(GetLastError(), ERROR_INVALID_PARAMETER);
        SetLastError(0);
        assert_false(HeapSetInformation(h, (HEAP_INFORMATION_CLASS)unknown[i], NULL, 0));
        assert_int_equal(GetLastError(), ERROR_INVALID_PARAMETER);
    }
    assert_int_equal(query_compat(h), 0);
    assert_true(HeapValidate(h, 0, NULL));
    assert_true(HeapDestroy(h));
}

int main(void) {
    setenv("WINHEAP_TERMINATE_ON_CORRUPTION", "0", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_process_heap_entry),
        cmocka_unit_test(test_layout_summary_and_info),
        cmocka_unit_test(test_lock_recursive),
        cmocka_unit_test(test_lock_blocks_other_threads),
        cmocka_unit_test(test_unlock_non_owner),
        cmocka_unit_test(test_lock_no_serialize_heap),
        cmocka_unit_test(test_lock_bad_handle),
        cmocka_unit_test(test_lock_process_heap),
        cmocka_unit_test(test_lock_walk_while_other_thread_allocates),
        cmocka_unit_test(test_query_errors),
        cmocka_unit_test(test_query_success),
        cmocka_unit_test(test_set_compat),
        cmocka_unit_test(test_set_compat_refused),
        cmocka_unit_test(test_lfh_activates_by_itself),
        cmocka_unit_test(test_set_optimize_errors),
        cmocka_unit_test(test_set_optimize_keeps_blocks),
        cmocka_unit_test(test_set_unknown_classes),
        cmocka_unit_test(test_set_termination_on_corruption),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
