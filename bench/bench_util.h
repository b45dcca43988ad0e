/*
 * bench_util.h - what the benchmark programs share: a clock, resource usage,
 * a small random generator, pointer arrays that bypass the allocator under
 * test, and the one machine-readable result line.
 */
#ifndef WH_BENCH_UTIL_H
#define WH_BENCH_UTIL_H

#define _GNU_SOURCE
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline long minflt_now(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

/*
 * Peak RSS of this process in KiB: VmHWM from /proc/self/status.  Not
 * getrusage's ru_maxrss, which Linux carries across execve: a program
 * started by a large parent (python3 is ~17 MiB) would report the parent's
 * peak.  VmHWM belongs to the address space made by execve.
 */
static inline long maxrss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) {
            kb = atol(line + 6);
            break;
        }
    if (f) fclose(f);
    if (kb < 0) { /* no /proc: fall back */
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        kb = ru.ru_maxrss;
    }
    return kb;
}

/* Resident bytes of the process now (/proc/self/statm, field 2). */
static inline long rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &res) != 2) res = 0;
        fclose(f);
    }
    return res * sysconf(_SC_PAGESIZE);
}

/* xorshift64*: a few cycles, the same cost whatever the allocator. */
typedef struct { uint64_t s; } rng_t;
static inline void rng_seed(rng_t *r, uint64_t seed) { r->s = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull; }
static inline uint64_t rng_next(rng_t *r) {
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}
/* Uniform in [lo, hi]. */
static inline size_t rng_range(rng_t *r, size_t lo, size_t hi) { return lo + (size_t)((rng_next(r) >> 16) % (hi - lo + 1)); }

/*
 * Skewed sizes, mostly small: the power-of-two bucket k is 4 with
 * probability 1/2, 5 with 1/4, ... up to 14 (16 KiB), and the size is
 * uniform inside (2^(k-1), 2^k].  Half the requests are 9..16 bytes, 94% are
 * at most 256 bytes, a few are kilobytes.
 */
static inline size_t rng_skewed(rng_t *r) {
    uint64_t x = rng_next(r);
    unsigned k = 4 + (unsigned)__builtin_ctzll((x >> 20) | (1ull << 10));
    size_t hi = (size_t)1 << k, lo = hi / 2 + 1;
    return lo + (size_t)((x & 0xFFFFF) % (hi - lo + 1));
}

/* Log-uniform in [lo, hi]. */
static inline size_t rng_loguniform(rng_t *r, size_t lo, size_t hi) {
    double u = (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    double l = __builtin_log((double)lo), h = __builtin_log((double)hi);
    size_t v = (size_t)__builtin_exp(l + u * (h - l));
    return v < lo ? lo : v > hi ? hi : v;
}

/* Bench-owned arrays come straight from mmap, never from the allocator
 * under test, and are touched before any measurement. */
static inline void *xarray(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    memset(p, 0, bytes);
    return p;
}
static inline void xarray_free(void *p, size_t bytes) { munmap(p, bytes); }

/* Keep the compiler from dropping an allocation whose block is unused. */
#define ESCAPE(p) __asm__ volatile("" : : "r"(p) : "memory")

static inline void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("wh_bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

/* The allocator libraries mapped into this process (a check that LD_PRELOAD
 * took effect): comma-separated basenames, or "none". */
static inline void mapped_allocator_libs(char *out, size_t cap) {
    static const char *const names[] = {"mimalloc", "jemalloc", "tcmalloc", "winheap"};
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    size_t n = 0;
    out[0] = 0;
    while (f && fgets(line, sizeof line, f)) {
        char *path = strchr(line, '/');
        if (!path) continue;
        path[strcspn(path, "\n")] = 0;
        const char *base = strrchr(path, '/') + 1;
        for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
            if (!strstr(base, names[i]) || strstr(out, base)) continue;
            int w = snprintf(out + n, cap - n, "%s%s", n ? "," : "", base);
            if (w > 0 && (size_t)w < cap - n) n += (size_t)w;
        }
    }
    if (f) fclose(f);
    if (!n) snprintf(out, cap, "none");
}

/*
 * The result line: key=value pairs on one line of stdout.
 *   workload api seconds maxrss_kb minflt ops [extra...]
 * seconds and minflt cover the measured part; maxrss_kb is the process peak
 * (VmHWM).
 */
static inline void report(const char *workload, const char *api, double seconds, long minflt, long ops,
                          const char *extra_fmt, ...) {
    long peak = maxrss_kb(); /* before stdio's first buffer */
    printf("workload=%s api=%s seconds=%.6f maxrss_kb=%ld minflt=%ld ops=%ld", workload, api, seconds, peak, minflt,
           ops);
    if (extra_fmt && *extra_fmt) {
        va_list ap;
        va_start(ap, extra_fmt);
        putchar(' ');
        vprintf(extra_fmt, ap);
        va_end(ap);
    }
    char libs[256];
    mapped_allocator_libs(libs, sizeof libs);
    printf(" libs=%s\n", libs);
    fflush(stdout);
}

/* "key=value" argument lookup: value of key in argv, or def. */
static inline const char *arg_str(int argc, char **argv, const char *key, const char *def) {
    size_t n = strlen(key);
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], key, n) && argv[i][n] == '=') return argv[i] + n + 1;
    return def;
}
static inline double arg_num(int argc, char **argv, const char *key, double def) {
    const char *s = arg_str(argc, argv, key, NULL);
    return s ? atof(s) : def;
}

#endif /* WH_BENCH_UTIL_H */
