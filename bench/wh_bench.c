/*
 * wh_bench.c - allocator workloads for winheap and its peers.
 *
 *   wh_bench WORKLOAD api=heap|private|malloc|floor [scale=X] [teardown=free] [threads=N]
 *
 * api=heap     HeapAlloc/HeapFree/HeapReAlloc on GetProcessHeap()
 * api=private  the same on HeapCreate(0,0,0) with HeapCompatibilityInformation 2
 * api=malloc   malloc/free/realloc: run it under LD_PRELOAD of mimalloc,
 *              jemalloc, tcmalloc or winheap's malloc shim, or bare for glibc
 * api=floor    (workload create only) the system calls of an empty heap and
 *              one page fault, made directly: the floor HeapCreate+HeapDestroy
 *              is compared with
 *
 * Built twice: wh_bench (linked with libwinheap.a, every api) and
 * wh_bench_malloc (-DWH_NO_WINHEAP, api=malloc only, so that the malloc peers
 * run in a process that holds no copy of winheap).
 *
 * Prints one line: workload= api= seconds= maxrss_kb= minflt= ops= [extra].
 * scale multiplies the operation counts (1 = the runner's default size).
 */
#include "bench_util.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#ifndef WH_NO_WINHEAP
#include <winheap.h>
#endif

enum { API_MALLOC, API_HEAP, API_PRIVATE, API_FLOOR };
static int g_api = API_MALLOC;
static const char *g_api_name = "malloc";
static double g_scale = 1.0;
#ifndef WH_NO_WINHEAP
static HANDLE g_heap;
#endif

static long scaled(double n) {
    long v = (long)(n * g_scale);
    return v < 1 ? 1 : v;
}

/* ---- the allocator API under test ---- */

static inline void *A(size_t n) {
#ifndef WH_NO_WINHEAP
    if (g_api != API_MALLOC) return HeapAlloc(g_heap, 0, n);
#endif
    return malloc(n);
}
static inline void F(void *p) {
#ifndef WH_NO_WINHEAP
    if (g_api != API_MALLOC) {
        HeapFree(g_heap, 0, p);
        return;
    }
#endif
    free(p);
}
static inline void *R(void *p, size_t n) {
#ifndef WH_NO_WINHEAP
    if (g_api != API_MALLOC) return HeapReAlloc(g_heap, 0, p, n);
#endif
    return realloc(p, n);
}
static inline void *AX(size_t n) {
    void *p = A(n);
    if (!p) die("out of memory allocating %zu bytes", n);
    return p;
}

static void setup_api(const char *name) {
    g_api_name = name;
    if (!strcmp(name, "malloc")) {
        g_api = API_MALLOC;
        return;
    }
#ifndef WH_NO_WINHEAP
    if (!strcmp(name, "heap")) {
        g_api = API_HEAP;
        g_heap = GetProcessHeap();
        return;
    }
    if (!strcmp(name, "private") || !strcmp(name, "floor")) {
        g_api = !strcmp(name, "floor") ? API_FLOOR : API_PRIVATE;
        g_heap = HeapCreate(0, 0, 0);
        ULONG two = 2;
        if (!g_heap || !HeapSetInformation(g_heap, HeapCompatibilityInformation, &two, sizeof two))
            die("HeapCreate/HeapSetInformation failed (%u)", (unsigned)GetLastError());
        return;
    }
#endif
    die("unknown api '%s'", name);
}

/* Write the first and last byte, as a user of the block would. */
static inline void touch(void *p, size_t n) {
    ((volatile char *)p)[0] = (char)n;
    ((volatile char *)p)[n - 1] = (char)n;
}

/* ---- pairs: allocate and free at once, sizes 16..256 ---- */
static void wl_pairs(void) {
    long n = scaled(20e6);
    rng_t r;
    rng_seed(&r, 1);
    long f0 = minflt_now();
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        size_t sz = rng_range(&r, 16, 256);
        void *p = AX(sz);
        touch(p, sz);
        ESCAPE(p);
        F(p);
    }
    double t = now_s() - t0;
    report("pairs", g_api_name, t, minflt_now() - f0, n, NULL);
}

/* ---- batch: allocate 100k blocks of 16..128, then free them all ---- */
static void wl_batch(void) {
    const long batch = 100000;
    long rounds = scaled(60);
    void **v = xarray(batch * sizeof *v);
    rng_t r;
    rng_seed(&r, 2);
    long f0 = minflt_now();
    double t0 = now_s();
    for (long k = 0; k < rounds; k++) {
        for (long i = 0; i < batch; i++) {
            size_t sz = rng_range(&r, 16, 128);
            v[i] = AX(sz);
            touch(v[i], sz);
        }
        for (long i = 0; i < batch; i++) F(v[i]);
    }
    double t = now_s() - t0;
    report("batch", g_api_name, t, minflt_now() - f0, rounds * batch * 2, NULL);
    xarray_free(v, batch * sizeof *v);
}

/* ---- workingset: 50k live slots of skewed sizes, replace random slots ---- */
static void wl_workingset(void) {
    const long slots = 50000;
    long n = scaled(10e6);
    void **v = xarray(slots * sizeof *v);
    rng_t r;
    rng_seed(&r, 3);
    long f0 = minflt_now();
    double t0 = now_s();
    for (long i = 0; i < slots; i++) {
        size_t sz = rng_skewed(&r);
        v[i] = AX(sz);
        touch(v[i], sz);
    }
    for (long i = 0; i < n; i++) {
        long j = (long)((rng_next(&r) >> 16) % slots);
        F(v[j]);
        size_t sz = rng_skewed(&r);
        v[j] = AX(sz);
        touch(v[j], sz);
    }
    for (long i = 0; i < slots; i++) F(v[i]);
    double t = now_s() - t0;
    report("workingset", g_api_name, t, minflt_now() - f0, n, NULL);
    xarray_free(v, slots * sizeof *v);
}

/* ---- larson: two threads, two halves of a slot array, swapped every round ---- */
#define LARSON_HALF 8192
static void **larson_slots[2];
static long larson_rounds;
static pthread_barrier_t larson_bar;

static void *larson_thread(void *arg) {
    long id = (long)(intptr_t)arg;
    rng_t r;
    rng_seed(&r, 100 + (uint64_t)id);
    void **mine = larson_slots[id];
    for (long i = 0; i < LARSON_HALF; i++) {
        size_t sz = rng_range(&r, 8, 1000);
        mine[i] = AX(sz);
        touch(mine[i], sz);
    }
    pthread_barrier_wait(&larson_bar);
    for (long k = 0; k < larson_rounds; k++) {
        void **s = larson_slots[(id + k + 1) & 1]; /* round 0: the other thread's half */
        for (long i = 0; i < LARSON_HALF; i++) {
            long j = (long)((rng_next(&r) >> 16) % LARSON_HALF);
            F(s[j]);
            size_t sz = rng_range(&r, 8, 1000);
            s[j] = AX(sz);
            touch(s[j], sz);
        }
        pthread_barrier_wait(&larson_bar);
    }
    return NULL;
}

static void wl_larson(void) {
    larson_rounds = scaled(400);
    for (int i = 0; i < 2; i++) larson_slots[i] = xarray(LARSON_HALF * sizeof(void *));
    pthread_barrier_init(&larson_bar, NULL, 2);
    pthread_t th[2];
    long f0 = minflt_now();
    double t0 = now_s();
    for (long i = 0; i < 2; i++) pthread_create(&th[i], NULL, larson_thread, (void *)(intptr_t)i);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int h = 0; h < 2; h++)
        for (long i = 0; i < LARSON_HALF; i++) F(larson_slots[h][i]);
    double t = now_s() - t0;
    report("larson", g_api_name, t, minflt_now() - f0, 2 * larson_rounds * LARSON_HALF, NULL);
}

/* ---- prodcons: one thread allocates, another frees, through a ring ---- */
#define RING 4096
static void *_Atomic ring[RING];
static _Atomic long ring_head, ring_tail; /* head: next to write; tail: next to read */
static long pc_n;

static inline void spin_wait(int *spins) {
    if (++*spins < 64)
        __builtin_ia32_pause();
    else {
        *spins = 0;
        sched_yield();
    }
}

static void *producer(void *arg) {
    (void)arg;
    rng_t r;
    rng_seed(&r, 5);
    long head = 0;
    for (long i = 0; i < pc_n; i++) {
        size_t sz = rng_range(&r, 16, 256);
        size_t *p = AX(sz);
        p[0] = sz;
        ((volatile char *)p)[sz - 1] = 1;
        int spins = 0;
        while (head - atomic_load_explicit(&ring_tail, memory_order_acquire) >= RING) spin_wait(&spins);
        atomic_store_explicit(&ring[head % RING], p, memory_order_relaxed);
        atomic_store_explicit(&ring_head, ++head, memory_order_release);
    }
    return NULL;
}

static void *consumer(void *arg) {
    (void)arg;
    long tail = 0, sum = 0;
    while (tail < pc_n) {
        int spins = 0;
        long head;
        while ((head = atomic_load_explicit(&ring_head, memory_order_acquire)) == tail) spin_wait(&spins);
        for (; tail < head; tail++) {
            size_t *p = atomic_load_explicit(&ring[tail % RING], memory_order_relaxed);
            sum += (long)p[0];
            F(p);
        }
        atomic_store_explicit(&ring_tail, tail, memory_order_release);
    }
    return (void *)(intptr_t)sum;
}

static void wl_prodcons(void) {
    pc_n = scaled(5e6);
    pthread_t a, b;
    long f0 = minflt_now();
    double t0 = now_s();
    pthread_create(&b, NULL, consumer, NULL);
    pthread_create(&a, NULL, producer, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    double t = now_s() - t0;
    report("prodcons", g_api_name, t, minflt_now() - f0, pc_n, NULL);
}

/* ---- threads: short threads that leave live blocks for the main thread ---- */
#define TH_BLOCKS 512
typedef struct { void *live[TH_BLOCKS / 2]; uint64_t seed; } th_job;

static void *short_thread(void *arg) {
    th_job *j = arg;
    rng_t r;
    rng_seed(&r, j->seed);
    void *tmp[TH_BLOCKS / 2];
    for (int i = 0; i < TH_BLOCKS / 2; i++) {
        size_t a = rng_range(&r, 16, 256), b = rng_range(&r, 16, 256);
        j->live[i] = AX(a);
        touch(j->live[i], a);
        tmp[i] = AX(b);
        touch(tmp[i], b);
    }
    for (int i = 0; i < TH_BLOCKS / 2; i++) F(tmp[i]);
    return NULL;
}

static void wl_threads(void) {
    long pairs = scaled(1000);
    th_job *jobs = xarray(4 * sizeof *jobs); /* two running, two waiting to be freed */
    long f0 = minflt_now();
    double t0 = now_s();
    for (long k = 0; k < pairs; k++) {
        th_job *cur = &jobs[(k & 1) * 2], *prev = &jobs[((k + 1) & 1) * 2];
        pthread_t th[2];
        for (int i = 0; i < 2; i++) {
            cur[i].seed = (uint64_t)k * 2 + (uint64_t)i;
            if (pthread_create(&th[i], NULL, short_thread, &cur[i])) die("pthread_create");
        }
        if (k > 0) /* the previous pair's blocks, freed while the new pair runs */
            for (int i = 0; i < 2; i++)
                for (int b = 0; b < TH_BLOCKS / 2; b++) F(prev[i].live[b]);
        for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    }
    th_job *last = &jobs[((pairs - 1) & 1) * 2];
    for (int i = 0; i < 2; i++)
        for (int b = 0; b < TH_BLOCKS / 2; b++) F(last[i].live[b]);
    double t = now_s() - t0;
    report("threads", g_api_name, t, minflt_now() - f0, pairs * 2, NULL);
}

/* ---- realloc: string builders growing by small appends ---- */
static void wl_realloc(void) {
    enum { NB = 4 };
    long n = scaled(6e6);
    struct { char *p; size_t len, target; } b[NB];
    rng_t r;
    rng_seed(&r, 7);
    long f0 = minflt_now();
    double t0 = now_s();
    for (int i = 0; i < NB; i++) {
        b[i].p = AX(16);
        b[i].len = 0;
        b[i].target = rng_loguniform(&r, 64, 64 << 10);
    }
    for (long i = 0; i < n; i++) {
        int k = (int)((rng_next(&r) >> 20) % NB);
        size_t add = rng_range(&r, 1, 32);
        char *q = R(b[k].p, b[k].len + add);
        if (!q) die("realloc to %zu failed", b[k].len + add);
        memset(q + b[k].len, 'a' + (int)(i & 15), add);
        b[k].p = q;
        b[k].len += add;
        if (b[k].len >= b[k].target) { /* the string is done: a new one */
            F(b[k].p);
            b[k].p = AX(16);
            b[k].len = 0;
            b[k].target = rng_loguniform(&r, 64, 64 << 10);
        }
    }
    for (int i = 0; i < NB; i++) F(b[i].p);
    double t = now_s() - t0;
    report("realloc", g_api_name, t, minflt_now() - f0, n, NULL);
}

/* ---- large: 1-32 MiB blocks, allocated, reallocated and freed, every page touched ---- */
static void touch_pages(char *p, size_t from, size_t to) {
    for (size_t o = from; o < to; o += 4096) p[o] = 1;
    if (to) p[to - 1] = 1;
}

static void wl_large(void) {
    enum { NS = 4 };
    long n = scaled(240);
    struct { char *p; size_t n; } s[NS] = {{0}};
    rng_t r;
    rng_seed(&r, 8);
    long f0 = minflt_now();
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        int k = (int)((rng_next(&r) >> 20) % NS);
        size_t sz = rng_loguniform(&r, 1 << 20, 32 << 20);
        if (s[k].p && (rng_next(&r) & 1)) { /* reallocate: keep the contents */
            char *q = R(s[k].p, sz);
            if (!q) die("realloc to %zu failed", sz);
            s[k].p = q;
            if (sz > s[k].n) touch_pages(q, s[k].n, sz);
        } else {
            if (s[k].p) F(s[k].p);
            s[k].p = AX(sz);
            touch_pages(s[k].p, 0, sz);
        }
        s[k].n = sz;
    }
    for (int k = 0; k < NS; k++)
        if (s[k].p) F(s[k].p);
    double t = now_s() - t0;
    long flt = minflt_now() - f0;
    report("large", g_api_name, t, flt, n, "minflt_per_op=%.1f", (double)flt / (double)n);
}

/* ---- destroy: fill a heap with 1M small blocks, then tear it down ---- */
static void wl_destroy(const char *teardown) {
    long n = scaled(1e6);
    void **v = xarray((size_t)n * sizeof *v);
    rng_t r;
    rng_seed(&r, 9);
    int each = g_api == API_MALLOC || g_api == API_HEAP || !strcmp(teardown, "free");
    long f0 = minflt_now();
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        size_t sz = rng_range(&r, 16, 64);
        v[i] = AX(sz);
        touch(v[i], sz);
    }
    double t1 = now_s();
    if (each)
        for (long i = 0; i < n; i++) F(v[i]);
#ifndef WH_NO_WINHEAP
    if (g_api == API_PRIVATE) {
        if (!HeapDestroy(g_heap)) die("HeapDestroy failed");
        g_heap = NULL;
    }
#endif
    double t2 = now_s();
    report(each && g_api == API_PRIVATE ? "destroy-free" : "destroy", g_api_name, t2 - t0, minflt_now() - f0, n,
           "fill_s=%.6f teardown_s=%.6f teardown=%s", t1 - t0, t2 - t1,
           g_api == API_PRIVATE ? (each ? "free-each+HeapDestroy" : "HeapDestroy") : "free-each");
    xarray_free(v, (size_t)n * sizeof *v);
}

/* ---- create: an empty HeapCreate + HeapDestroy, many times ---- */
#ifndef WH_NO_WINHEAP
static void floor_once(void) {
    /* What an empty growable heap needs from the system: reserve 1 MiB
     * aligned to 64 KiB (map more, trim both ends), commit the first page,
     * touch it, give it all back. */
    const size_t size = 1 << 20, align = 64 << 10, page = 4096;
    size_t over = size + align - page;
    char *p = mmap(NULL, over, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    uintptr_t a = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
    size_t head = a - (uintptr_t)p, tail = over - head - size;
    if (head) munmap(p, head);
    if (tail) munmap((char *)a + size, tail);
    if (mprotect((void *)a, page, PROT_READ | PROT_WRITE)) die("mprotect");
    ((volatile char *)a)[0] = 1;
    munmap((void *)a, size);
}

static void wl_create(void) {
    if (g_api != API_PRIVATE && g_api != API_FLOOR) die("create needs api=private or api=floor");
    long n = scaled(20000);
    HeapDestroy(g_heap); /* the api's own heap is not used here */
    long f0 = minflt_now();
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        if (g_api == API_FLOOR) {
            floor_once();
            continue;
        }
        HANDLE h = HeapCreate(0, 0, 0);
        if (!h) die("HeapCreate failed");
        ESCAPE(h);
        if (!HeapDestroy(h)) die("HeapDestroy failed");
    }
    double t = now_s() - t0;
    long flt = minflt_now() - f0;
    report("create", g_api_name, t, flt, n, "us_per_op=%.3f minflt_per_op=%.3f", t * 1e6 / (double)n,
           (double)flt / (double)n);
}
#else
static void wl_create(void) { die("create needs api=private or api=floor (wh_bench)"); }
#endif

/* ---- scale: the same independent work on one thread, then on two ---- */
#define SC_SLOTS 4096
static long sc_n;
static pthread_barrier_t sc_bar;

static void *scale_thread(void *arg) {
    rng_t r;
    rng_seed(&r, 200 + (uint64_t)(intptr_t)arg);
    void **v = xarray(SC_SLOTS * sizeof *v);
    for (long i = 0; i < SC_SLOTS; i++) {
        size_t sz = rng_skewed(&r);
        v[i] = AX(sz);
        touch(v[i], sz);
    }
    pthread_barrier_wait(&sc_bar);
    for (long i = 0; i < sc_n; i++) {
        long j = (long)((rng_next(&r) >> 16) % SC_SLOTS);
        F(v[j]);
        size_t sz = rng_skewed(&r);
        v[j] = AX(sz);
        touch(v[j], sz);
    }
    pthread_barrier_wait(&sc_bar);
    for (long i = 0; i < SC_SLOTS; i++) F(v[i]);
    xarray_free(v, SC_SLOTS * sizeof *v);
    return NULL;
}

static double scale_run(int nthreads) {
    pthread_t th[2];
    pthread_barrier_init(&sc_bar, NULL, (unsigned)nthreads + 1);
    for (long i = 0; i < nthreads; i++) pthread_create(&th[i], NULL, scale_thread, (void *)(intptr_t)(i + nthreads));
    pthread_barrier_wait(&sc_bar); /* all filled */
    double t0 = now_s();
    pthread_barrier_wait(&sc_bar); /* all done */
    double t = now_s() - t0;
    for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&sc_bar);
    return t;
}

static void wl_scale(void) {
    sc_n = scaled(16e6);
    long f0 = minflt_now();
    double t1 = scale_run(1);
    double t2 = scale_run(2);
    report("scale", g_api_name, t2, minflt_now() - f0, 2 * sc_n, "t1_s=%.6f t2_s=%.6f speedup=%.3f", t1, t2,
           2.0 * t1 / t2);
}

/* ---- footprint: RSS growth over a million live blocks of one size ---- */
static void wl_footprint(size_t size) {
    long n = scaled(1e6);
    void **v = xarray((size_t)n * sizeof *v);
    /* warm the allocator up (its own metadata, thread cache) before the baseline */
    void *w = AX(size);
    F(w);
    long f0 = minflt_now();
    long rss0 = rss_bytes();
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        v[i] = AX(size);
        memset(v[i], 0x5A, size);
    }
    double t = now_s() - t0;
    long rss1 = rss_bytes();
    long flt = minflt_now() - f0;
    char name[32];
    snprintf(name, sizeof name, "footprint%zu", size);
    report(name, g_api_name, t, flt, n, "rss_growth=%ld bytes_per_block=%.2f", rss1 - rss0,
           (double)(rss1 - rss0) / (double)n);
    for (long i = 0; i < n; i++) F(v[i]);
    xarray_free(v, (size_t)n * sizeof *v);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr,
                "usage: %s WORKLOAD api=heap|private|malloc|floor [scale=X] [teardown=free]\n"
                "workloads: pairs batch workingset larson prodcons threads realloc large destroy create scale "
                "footprint16 footprint64\n",
                argv[0]);
        return 2;
    }
    const char *wl = argv[1];
    g_scale = arg_num(argc, argv, "scale", 1.0);
    setup_api(arg_str(argc, argv, "api", "malloc"));
    if (!strcmp(wl, "pairs")) wl_pairs();
    else if (!strcmp(wl, "batch")) wl_batch();
    else if (!strcmp(wl, "workingset")) wl_workingset();
    else if (!strcmp(wl, "larson")) wl_larson();
    else if (!strcmp(wl, "prodcons")) wl_prodcons();
    else if (!strcmp(wl, "threads")) wl_threads();
    else if (!strcmp(wl, "realloc")) wl_realloc();
    else if (!strcmp(wl, "large")) wl_large();
    else if (!strcmp(wl, "destroy")) wl_destroy(arg_str(argc, argv, "teardown", "destroy"));
    else if (!strcmp(wl, "create")) wl_create();
    else if (!strcmp(wl, "scale")) wl_scale();
    else if (!strcmp(wl, "footprint16")) wl_footprint(16);
    else if (!strcmp(wl, "footprint64")) wl_footprint(64);
    else die("unknown workload '%s'", wl);
    return 0;
}
