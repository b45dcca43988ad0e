/*
 * test_util.h - helpers shared by the test programs.
 *
 * Death tests: wh_run_child() forks, runs fn(arg) in the child with stderr
 * captured through a pipe, and reports how the child ended and what it wrote.
 * A child that runs longer than `timeout_s` seconds is killed and reported
 * as timed out, so a deadlock fails the test instead of hanging it.
 */
#ifndef WH_TEST_UTIL_H
#define WH_TEST_UTIL_H

#include <stddef.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <winheap.h>

typedef struct wh_child_result {
    int exited;          /* 1 if the child called exit/returned */
    int exit_code;       /* valid if exited */
    int signaled;        /* 1 if killed by a signal */
    int signal;          /* valid if signaled */
    int timed_out;       /* 1 if we had to kill it */
    char err[4096];      /* what it wrote on stderr (NUL-terminated, truncated) */
} wh_child_result;

/* Run fn(arg) in a forked child; the child exits 0 if fn returns. */
void wh_run_child(void (*fn)(void *), void *arg, int timeout_s, wh_child_result *out);

/* Assert that fn(arg) dies with `sig` and that its stderr contains `needle`. */
#define wh_expect_death(fn, arg, sig, needle) wh_expect_death_at(fn, arg, sig, needle, __FILE__, __LINE__)
void wh_expect_death_at(void (*fn)(void *), void *arg, int sig, const char *needle, const char *file, int line);

/* Number of lines in /proc/self/maps (a proxy for the mapping count). */
int wh_count_mappings(void);
/* 1 if every byte of [lo, hi) is covered by mappings whose permission field
 * is exactly `perms` (e.g. "---p"); 1 if no mapping intersects [lo, hi). */
int maps_range_is(const void *lo, const void *hi, const char *perms);
int maps_range_unmapped(const void *lo, const void *hi);
/* Permissions ("rwxp") of the mapping holding addr in perms; 0 if it is not mapped. */
int maps_perms(const void *addr, char perms[5]);
/* Content checks of the API tests: a pattern that depends on the seed and
 * the offset (so a block moved or copied to the wrong place shows), its
 * check (n when intact, else the first bad index), and the first nonzero
 * byte (n if none). */
void wh_test_fill(void *p, size_t n, unsigned seed);
size_t wh_test_check(const void *p, size_t n, unsigned seed);
size_t wh_test_first_nonzero(const void *p, size_t n);

/* Assertions with the source line in the message (cmocka's fail_msg). */
#define EXPECT(cond, fmt, ...) \
    do { if (!(cond)) fail_msg("%s:%d: (%s) " fmt, __FILE__, __LINE__, #cond, ##__VA_ARGS__); } while (0)
#define EXPECT_LE(v) \
    do { DWORD le_ = GetLastError(); \
         if (le_ != (DWORD)(v)) fail_msg("%s:%d: last error %u, expected %u", __FILE__, __LINE__, \
                                         (unsigned)le_, (unsigned)(v)); } while (0)

/* Resident set size of this process in bytes (from /proc/self/statm). */
size_t wh_rss_bytes(void);

/* Write n bytes of `byte` at p even where the allocator told AddressSanitizer
 * or memcheck that nobody may write (block headers, freed memory): the
 * corruption tests provoke exactly that on purpose. */
#ifndef __has_feature
#define __has_feature(x) 0
#endif
#if defined(__SANITIZE_ADDRESS__) || __has_feature(address_sanitizer)
__attribute__((no_sanitize("address")))
#endif
static inline void wh_test_poke(void *p, int byte, size_t n) {
    volatile unsigned char *b = (volatile unsigned char *)p;
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)byte;
}

/* A small deterministic PRNG (xorshift64*) for reproducible workloads. */
static inline uint64_t wh_rand(uint64_t *state) {
    uint64_t x = *state;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

#endif
