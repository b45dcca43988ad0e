/*
 * debug_pairs.c - what free checking (WINHEAP_DEBUG=free) costs next to a
 * big free block: the measurement behind the README's debug-heap figures.
 *
 *   make -C bench debug && WINHEAP_DEBUG=free bench/build/debug_pairs
 *
 * Two heaps, each with a free block of about 60 MiB right next to where the
 * small blocks go: a fixed heap created with its whole 64 MiB committed
 * (HeapCreate(0, 64 MiB, 64 MiB)), and a growable heap on which 120 blocks of
 * 512 KiB were allocated and freed again (they merge).  On each, 1,000 pairs
 * of HeapAlloc(100) / HeapFree are timed (best of 5 runs, or one run if it
 * takes over a second), and 1,000 rounds of HeapAlloc(100), HeapReAlloc in
 * place to 300, then to 50, HeapFree (without a debug switch the growable
 * heap's low-fragmentation front end refuses that in-place growth: n/a).
 * Only the public API is used, so the same program measures any version.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <winheap.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void die(const char *what) {
    fprintf(stderr, "debug_pairs: %s failed (error %u)\n", what, (unsigned)GetLastError());
    exit(1);
}

/* Best of 5 (or the first run if that takes over a second): seconds for
 * 1,000 alloc/free pairs (resize: with two in-place resizes in between), or
 * -1 if an in-place resize is refused. */
static double pairs(HANDLE h, int resize) {
    double best = 1e9;
    for (int run = 0; run < 5 && (run == 0 || best < 1.0); run++) {
        double t0 = now();
        for (int i = 0; i < 1000; i++) {
            char *p = HeapAlloc(h, 0, 100);
            if (!p) die("HeapAlloc(100)");
            if (resize) {
                if (HeapReAlloc(h, HEAP_REALLOC_IN_PLACE_ONLY, p, 300) != p ||
                    HeapReAlloc(h, HEAP_REALLOC_IN_PLACE_ONLY, p, 50) != p) {
                    HeapFree(h, 0, p);
                    return -1;
                }
            }
            if (!HeapFree(h, 0, p)) die("HeapFree");
        }
        double t = now() - t0;
        if (t < best) best = t;
    }
    return best;
}

static void report(const char *name, HANDLE h, double setup) {
    if (!HeapValidate(h, 0, NULL)) die("HeapValidate");
    printf("%-38s setup %7.1f ms | 1,000 pairs %10.3f ms", name, setup * 1e3, pairs(h, 0) * 1e3);
    fflush(stdout);
    double r = pairs(h, 1);
    if (r < 0)
        printf(" | with resizes: n/a\n");
    else
        printf(" | with resizes %10.3f ms\n", r * 1e3);
    if (!HeapValidate(h, 0, NULL)) die("HeapValidate");
}

int main(void) {
    const char *mode = getenv("WINHEAP_DEBUG");
    printf("WINHEAP_DEBUG=%s\n", mode ? mode : "(unset)");

    double t0 = now();
    HANDLE f = HeapCreate(0, (SIZE_T)64 << 20, (SIZE_T)64 << 20);
    if (!f) die("HeapCreate(0, 64 MiB, 64 MiB)");
    report("fixed heap, 64 MiB committed:", f, now() - t0);
    HeapDestroy(f);

    t0 = now();
    HANDLE g = HeapCreate(0, 0, 0);
    if (!g) die("HeapCreate(0, 0, 0)");
    static void *v[120];
    for (int i = 0; i < 120; i++)
        if (!(v[i] = HeapAlloc(g, 0, 512 << 10))) die("HeapAlloc(512 KiB)");
    for (int i = 0; i < 120; i++)
        if (!HeapFree(g, 0, v[i])) die("HeapFree(512 KiB)");
    report("growable heap, 120 x 512 KiB freed:", g, now() - t0);
    HeapDestroy(g);
    return 0;
}
