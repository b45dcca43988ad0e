/*
 * mi_heap_bench.c - mimalloc's private heaps (mi_heap_new / mi_heap_malloc /
 * mi_heap_destroy), the peer of winheap's HeapCreate / HeapAlloc /
 * HeapDestroy.  Built only where libmimalloc-dev is installed.
 *
 *   mi_heap_bench destroy [teardown=free] [scale=X]
 *   mi_heap_bench create [scale=X]
 *
 * Same result line and the same sizes and counts as wh_bench's workloads of
 * those names.
 */
#include "bench_util.h"

#include <mimalloc.h>

static double g_scale = 1.0;
static long scaled(double n) {
    long v = (long)(n * g_scale);
    return v < 1 ? 1 : v;
}

static void wl_destroy(const char *teardown) {
    long n = scaled(1e6);
    int each = !strcmp(teardown, "free");
    void **v = xarray((size_t)n * sizeof *v);
    rng_t r;
    rng_seed(&r, 9);
    mi_heap_t *h = mi_heap_new();
    if (!h) die("mi_heap_new failed");
    long f0 = minflt_now();
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        size_t sz = rng_range(&r, 16, 64);
        v[i] = mi_heap_malloc(h, sz);
        if (!v[i]) die("out of memory");
        ((volatile char *)v[i])[0] = (char)sz;
        ((volatile char *)v[i])[sz - 1] = (char)sz;
    }
    double t1 = now_s();
    if (each) {
        for (long i = 0; i < n; i++) mi_free(v[i]);
        mi_heap_delete(h);
    } else {
        mi_heap_destroy(h);
    }
    double t2 = now_s();
    report(each ? "destroy-free" : "destroy", "mi_heap", t2 - t0, minflt_now() - f0, n,
           "fill_s=%.6f teardown_s=%.6f teardown=%s", t1 - t0, t2 - t1,
           each ? "mi_free-each+mi_heap_delete" : "mi_heap_destroy");
    xarray_free(v, (size_t)n * sizeof *v);
}

static void wl_create(void) {
    long n = scaled(20000);
    long f0 = minflt_now();
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        mi_heap_t *h = mi_heap_new();
        if (!h) die("mi_heap_new failed");
        ESCAPE(h);
        mi_heap_destroy(h);
    }
    double t = now_s() - t0;
    long flt = minflt_now() - f0;
    report("create", "mi_heap", t, flt, n, "us_per_op=%.3f minflt_per_op=%.3f", t * 1e6 / (double)n,
           (double)flt / (double)n);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s destroy|create [teardown=free] [scale=X]\n", argv[0]);
        return 2;
    }
    g_scale = arg_num(argc, argv, "scale", 1.0);
    if (!strcmp(argv[1], "destroy")) wl_destroy(arg_str(argc, argv, "teardown", "destroy"));
    else if (!strcmp(argv[1], "create")) wl_create();
    else die("unknown workload '%s'", argv[1]);
    return 0;
}
