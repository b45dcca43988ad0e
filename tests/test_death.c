/*
 * test_death.c - death tests for SPEC D5 (termination on heap corruption) and
 * D6 (HEAP_GENERATE_EXCEPTIONS).
 *
 * Every scenario runs in a fresh process: the cmocka test forks a child with
 * wh_run_child() (the machinery behind wh_expect_death), the child execs
 * /proc/self/exe with "--scenario <name>", and main() runs that scenario.
 * Options (WINHEAP_TERMINATE_ON_CORRUPTION) are read once at the first call
 * into winheap, so an exec'd process is the only robust way to test the
 * default and the environment variable: each scenario sets up its own
 * environment before its first winheap call.  The parent never calls winheap.
 *
 * D5: double free (small, LFH (delayed slot, remote frees from other
 * threads), 256 KiB and large >= 0xFF000 blocks, delayed, coalesced with a
 * free neighbour, cross-thread, the old address of a block moved by
 * HeapReAlloc), interior free (p+1, p+16, p+16 KiB, LFH slot, inside a large
 * block), HeapReAlloc of a freed block, an overwritten block header:
 * SIGABRT and exactly one stderr line
 *   "winheap: STATUS_HEAP_CORRUPTION (0xC0000374) in <Function> at 0x<addr>: <reason>"
 * where <addr> is the pointer passed (the scenario reports it on stderr first
 * as "scenario-addr <ptr>").  Termination is on by default; the variable set to
 * 0 turns it off (the calls fail with FALSE/NULL and error 87 and the heap stays
 * valid); HeapSetInformation(NULL, HeapEnableTerminationOnCorruption) turns it
 * back on for good.  The pure queries never terminate.
 *
 * D6: a handler installed by winheap_set_exception_handler records (status,
 * heap, flags, size) and longjmps out; per-call and per-heap exceptions for
 * fixed-heap requests that are too big and for SIZE_MAX, HeapReAlloc (block
 * intact), the heap usable and unlocked afterwards (another thread allocates
 * on it); no handler or a handler that returns -> SIGABRT with
 * "winheap: unhandled exception STATUS_NO_MEMORY (0xC0000017) in HeapAlloc";
 * with termination off, HeapReAlloc of a freed block with exceptions raises
 * STATUS_ACCESS_VIOLATION (unhandled: the same line with that status).
 */
#define _GNU_SOURCE
#include "test_util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Child side: scenario helpers                                             */
/* ------------------------------------------------------------------------ */

/* A failed check in a scenario: say which on stderr, exit 3. */
#define CHECK(c)                                                                                    \
    do {                                                                                            \
        if (!(c)) {                                                                                 \
            char b_[300];                                                                           \
            int n_ = snprintf(b_, sizeof b_, "scenario CHECK failed at line %d: %s (LE %u)\n",      \
                              __LINE__, #c, (unsigned)GetLastError());                              \
            if (write(2, b_, (size_t)n_) < 0) { /* nothing */ }                                     \
            _exit(3);                                                                               \
        }                                                                                           \
    } while (0)

/* Tell the parent which address the fatal message must name. */
static void note_addr(const void *p) {
    char b[64];
    int n = snprintf(b, sizeof b, "scenario-addr %p\n", p);
    if (write(2, b, (size_t)n) < 0) { /* nothing */ }
}

static void note(const char *s) {
    if (write(2, s, strlen(s)) < 0) { /* nothing */ }
}

/* Reached only if the fatal call returned. */
static void survived(const char *what) {
    char b[200];
    int n = snprintf(b, sizeof b, "scenario survived: %s returned (LE %u)\n", what, (unsigned)GetLastError());
    if (write(2, b, (size_t)n) < 0) { /* nothing */ }
    _exit(0);
}

static void toc_on(void) {
    CHECK(HeapSetInformation(NULL, HeapEnableTerminationOnCorruption, NULL, 0) == TRUE);
}

static void fill(void *p, size_t n, unsigned char seed) {
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)(seed + i * 7u + (i >> 9));
}

static int intact(const void *p, size_t n, unsigned char seed) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != (unsigned char)(seed + i * 7u + (i >> 9))) return 0;
    return 1;
}

/* Allocate n bytes on h, free, and free again (the second free is fatal). */
static void double_free_of(HANDLE h, size_t n) {
    char *p = HeapAlloc(h, 0, n);
    CHECK(p != NULL);
    fill(p, n < 4096 ? n : 4096, 1);
    CHECK(HeapFree(h, 0, p) == TRUE);
    note_addr(p);
    HeapFree(h, 0, p);
    survived("second HeapFree");
}

/* ---- D5 scenarios ---- */

static void sc_df_small(void) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    double_free_of(h, 32);
}

static void sc_df_process_heap(void) {
    toc_on();
    double_free_of(GetProcessHeap(), 100);
}

/* Enough blocks of one size that the low-fragmentation heap serves them (D16). */
static char **lfh_blocks(HANDLE h, size_t n);
static void sc_df_lfh(void) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    char **v = lfh_blocks(h, 48);
    CHECK(HeapFree(h, 0, v[30]) == TRUE);
    CHECK(HeapFree(h, 0, v[31]) == TRUE);
    note_addr(v[30]);
    HeapFree(h, 0, v[30]);
    survived("second HeapFree of an LFH block");
}

static void sc_df_256k(void) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    double_free_of(h, 256 * 1024);
}

static void sc_df_large(void) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    double_free_of(h, WINHEAP_LARGE_THRESHOLD);
}

static void sc_df_large_2m(void) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    void *keep = HeapAlloc(h, 0, 3 << 20); /* another large block stays live */
    CHECK(keep != NULL);
    double_free_of(h, 2 << 20);
}

/* free p, free q, free p: p may sit in a delay ring / quarantine. */
static void sc_df_delayed(void) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    void *p = HeapAlloc(h, 0, 64), *q = HeapAlloc(h, 0, 64);
    CHECK(p && q);
    CHECK(HeapFree(h, 0, p) == TRUE);
    CHECK(HeapFree(h, 0, q) == TRUE);
    note_addr(p);
    HeapFree(h, 0, p);
    survived("HeapFree p after p, q");
}

static void interior_free(size_t n, size_t off) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    char *p = HeapAlloc(h, 0, n);
    CHECK(p != NULL);
    note_addr(p + off);
    HeapFree(h, 0, p + off);
    survived("HeapFree of an interior pointer");
}

static void sc_interior_p1(void) { interior_free(64, 1); }
static void sc_interior_p16(void) { interior_free(64, 16); }
static void sc_interior_p16k(void) { interior_free(64 * 1024, 16 * 1024); }
static void sc_interior_large(void) { interior_free(WINHEAP_LARGE_THRESHOLD + 4096, 16); }

static void sc_realloc_freed(void) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    void *p = HeapAlloc(h, 0, 64);
    CHECK(p != NULL);
    CHECK(HeapFree(h, 0, p) == TRUE);
    note_addr(p);
    HeapReAlloc(h, 0, p, 128);
    survived("HeapReAlloc of a freed block");
}

static void sc_realloc_interior(void) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    char *p = HeapAlloc(h, 0, 64);
    CHECK(p != NULL);
    note_addr(p + 16);
    HeapReAlloc(h, 0, p + 16, 128);
    survived("HeapReAlloc of an interior pointer");
}

/* a, p, b; free a, free p (p merges into a's free block), free p again */
static void sc_df_coalesced(void) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    void *a = HeapAlloc(h, 0, 200), *p = HeapAlloc(h, 0, 200), *b = HeapAlloc(h, 0, 200);
    CHECK(a && p && b);
    CHECK(HeapFree(h, 0, a) == TRUE);
    CHECK(HeapFree(h, 0, p) == TRUE);
    note_addr(p);
    HeapFree(h, 0, p);
    survived("second HeapFree of a coalesced block");
}

static void *free_in_thread(void *arg) {
    void **a = arg;
    a[2] = (void *)(intptr_t)HeapFree(a[0], 0, a[1]);
    return NULL;
}

/* thread A frees p, thread B frees p */
static void sc_df_cross_thread(void) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    void *p = HeapAlloc(h, 0, 64);
    CHECK(p != NULL);
    void *arg[3] = { h, p, NULL };
    pthread_t t;
    CHECK(pthread_create(&t, NULL, free_in_thread, arg) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(arg[2] == (void *)(intptr_t)TRUE);
    note_addr(p);
    CHECK(pthread_create(&t, NULL, free_in_thread, arg) == 0);
    pthread_join(t, NULL);
    survived("second HeapFree in another thread");
}

/* A large block moved by HeapReAlloc: its old address is a freed block. */
static void sc_df_realloc_moved_large(void) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    char *p = HeapAlloc(h, 0, WINHEAP_LARGE_THRESHOLD);
    CHECK(p != NULL);
    char *guard = HeapAlloc(h, 0, WINHEAP_LARGE_THRESHOLD); /* likely right after p */
    CHECK(guard != NULL);
    char *q = HeapReAlloc(h, 0, p, 16u << 20);
    CHECK(q != NULL);
    if (q == p) {
        note("scenario: block grew in place, nothing to test\n");
        CHECK(HeapFree(h, 0, q) == TRUE);
        CHECK(q != p);
    }
    note_addr(p);
    HeapFree(h, 0, p);
    survived("HeapFree of the old address of a moved large block");
}

/* A small block moved by HeapReAlloc: its old address is no live block. */
static void sc_df_realloc_moved_small(void) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    char *p = HeapAlloc(h, 0, 64);
    char *b = HeapAlloc(h, 0, 64); /* p cannot grow in place */
    CHECK(p && b);
    char *q = HeapReAlloc(h, 0, p, 4000);
    CHECK(q != NULL && q != p);
    note_addr(p);
    HeapFree(h, 0, p);
    survived("HeapFree of the old address of a moved block");
}

/* An overflow that rewrote the header in front of a block. */
static void sc_bad_header(void) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    char *a = HeapAlloc(h, 0, 64), *p = HeapAlloc(h, 0, 64);
    CHECK(a && p);
    wh_test_poke(p - 16, 0x41, 16);
    note_addr(p);
    HeapFree(h, 0, p);
    survived("HeapFree of a block whose header was overwritten");
}

/* LFH blocks (the heap switches the LFH on by the 18th allocation of a size). */
static char **lfh_blocks(HANDLE h, size_t n) {
    static char *v[40];
    for (int i = 0; i < 40; i++) {
        v[i] = HeapAlloc(h, 0, n);
        CHECK(v[i] != NULL);
    }
    ULONG info = 99;
    CHECK(HeapQueryInformation(h, HeapCompatibilityInformation, &info, sizeof info, NULL) == TRUE);
    CHECK(info == 2);
    return v;
}

/* The owner's most recent free (the delayed slot) freed again at once. */
static void sc_df_lfh_immediate(void) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    char **v = lfh_blocks(h, 48);
    CHECK(HeapFree(h, 0, v[30]) == TRUE);
    note_addr(v[30]);
    HeapFree(h, 0, v[30]);
    survived("second HeapFree of the delayed LFH block");
}

struct lfh_remote {
    HANDLE h;
    void *p;
    BOOL r;
};

static void *lfh_free_thread(void *a) {
    struct lfh_remote *x = a;
    x->r = HeapFree(x->h, 0, x->p);
    return NULL;
}

/* Another thread frees an LFH block (remote-free path), the owner frees it again. */
static void sc_df_lfh_remote(void) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    char **v = lfh_blocks(h, 96);
    struct lfh_remote x = { h, v[20], FALSE };
    pthread_t t;
    CHECK(pthread_create(&t, NULL, lfh_free_thread, &x) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(x.r == TRUE);
    note_addr(v[20]);
    HeapFree(h, 0, v[20]);
    survived("owner's HeapFree of a block another thread freed");
}

/* Two other threads free the same LFH block. */
static void sc_df_lfh_remote_twice(void) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    char **v = lfh_blocks(h, 96);
    struct lfh_remote x = { h, v[21], FALSE };
    pthread_t t;
    CHECK(pthread_create(&t, NULL, lfh_free_thread, &x) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(x.r == TRUE);
    note_addr(v[21]);
    CHECK(pthread_create(&t, NULL, lfh_free_thread, &x) == 0);
    pthread_join(t, NULL);
    survived("second remote HeapFree");
}

static void sc_interior_lfh(void) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    char **v = lfh_blocks(h, 48);
    note_addr(v[25] + 16);
    HeapFree(h, 0, v[25] + 16);
    survived("HeapFree of an interior LFH pointer");
}

static void sc_realloc_freed_lfh(void) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    char **v = lfh_blocks(h, 48);
    CHECK(HeapFree(h, 0, v[10]) == TRUE);
    CHECK(HeapFree(h, 0, v[11]) == TRUE);
    note_addr(v[10]);
    HeapReAlloc(h, 0, v[10], 40);
    survived("HeapReAlloc of a freed LFH block");
}

/* Termination is on by default: no HeapSetInformation, variable unset. */
static void sc_default_on(void) {
    unsetenv("WINHEAP_TERMINATE_ON_CORRUPTION");
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    double_free_of(h, 32);
}

static void sc_default_on_interior(void) {
    unsetenv("WINHEAP_TERMINATE_ON_CORRUPTION");
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    char *p = HeapAlloc(h, 0, 64);
    CHECK(p != NULL);
    note_addr(p + 16);
    HeapFree(h, 0, p + 16);
    survived("HeapFree of an interior pointer");
}

static void sc_env_one(void) {
    setenv("WINHEAP_TERMINATE_ON_CORRUPTION", "1", 1);
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    double_free_of(h, 32);
}

/* Double free / interior free / realloc of freed with termination off. */
static void toc_off_checks(HANDLE h) {
    static const size_t sizes[] = { 32, 256 * 1024, WINHEAP_LARGE_THRESHOLD, 2 << 20 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char *keep = HeapAlloc(h, 0, 200);
        CHECK(keep != NULL);
        fill(keep, 200, 9);
        char *p = HeapAlloc(h, 0, sizes[i]);
        CHECK(p != NULL);
        CHECK(HeapFree(h, 0, p) == TRUE);
        SetLastError(0);
        CHECK(HeapFree(h, 0, p) == FALSE);
        CHECK(GetLastError() == ERROR_INVALID_PARAMETER);
        SetLastError(0);
        CHECK(HeapReAlloc(h, 0, p, 64) == NULL);
        CHECK(GetLastError() == ERROR_INVALID_PARAMETER);
        SetLastError(0);
        CHECK(HeapSize(h, 0, p) == (SIZE_T)-1);
        CHECK(GetLastError() == ERROR_INVALID_PARAMETER);
        SetLastError(1234);
        CHECK(HeapValidate(h, 0, p) == FALSE);
        CHECK(GetLastError() == 1234);
        CHECK(HeapValidate(h, 0, NULL) == TRUE);
        CHECK(intact(keep, 200, 9));
        CHECK(HeapFree(h, 0, keep) == TRUE);
    }
    /* interior pointers */
    static const size_t isz[] = { 64, 64 * 1024, WINHEAP_LARGE_THRESHOLD + 4096 };
    static const size_t ioff[] = { 1, 16, 16 * 1024 };
    for (size_t i = 0; i < 3; i++) {
        char *p = HeapAlloc(h, 0, isz[i]);
        CHECK(p != NULL);
        fill(p, 64, 3);
        for (size_t j = 0; j < 3; j++) {
            if (ioff[j] >= isz[i]) continue;
            SetLastError(0);
            CHECK(HeapFree(h, 0, p + ioff[j]) == FALSE);
            CHECK(GetLastError() == ERROR_INVALID_PARAMETER);
            SetLastError(0);
            CHECK(HeapReAlloc(h, 0, p + ioff[j], 32) == NULL);
            CHECK(GetLastError() == ERROR_INVALID_PARAMETER);
        }
        CHECK(HeapSize(h, 0, p) == isz[i]);
        CHECK(intact(p, 64, 3));
        CHECK(HeapValidate(h, 0, p) == TRUE);
        CHECK(HeapValidate(h, 0, NULL) == TRUE);
        CHECK(HeapFree(h, 0, p) == TRUE);
    }
    /* the rejected double free did not put the block on a list twice */
    void *v[64];
    void *q = HeapAlloc(h, 0, 48);
    CHECK(q != NULL);
    CHECK(HeapFree(h, 0, q) == TRUE);
    CHECK(HeapFree(h, 0, q) == FALSE);
    for (int i = 0; i < 64; i++) {
        v[i] = HeapAlloc(h, 0, 48);
        CHECK(v[i] != NULL);
        memset(v[i], i, 48);
        for (int j = 0; j < i; j++) CHECK(v[i] != v[j]);
    }
    for (int i = 0; i < 64; i++) {
        unsigned char *b = v[i];
        for (int k = 0; k < 48; k++) CHECK(b[k] == (unsigned char)i);
        CHECK(HeapFree(h, 0, v[i]) == TRUE);
    }
    CHECK(HeapValidate(h, 0, NULL) == TRUE);
}

static void sc_toc_off(void) {
    setenv("WINHEAP_TERMINATE_ON_CORRUPTION", "0", 1);
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    toc_off_checks(h);
    CHECK(HeapDestroy(h) == TRUE);
    toc_off_checks(GetProcessHeap());
    note("scenario done\n");
}

/* Variable 0, then HeapSetInformation turns termination on for good. */
static void sc_toc_reenabled(void) {
    setenv("WINHEAP_TERMINATE_ON_CORRUPTION", "0", 1);
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    void *p = HeapAlloc(h, 0, 32);
    CHECK(p != NULL);
    CHECK(HeapFree(h, 0, p) == TRUE);
    SetLastError(0);
    CHECK(HeapFree(h, 0, p) == FALSE); /* still off here */
    CHECK(GetLastError() == ERROR_INVALID_PARAMETER);
    CHECK(HeapSetInformation(NULL, HeapEnableTerminationOnCorruption, NULL, 0) == TRUE);
    /* neither the variable nor a repeated call switches it off again */
    setenv("WINHEAP_TERMINATE_ON_CORRUPTION", "0", 1);
    CHECK(HeapSetInformation(NULL, HeapEnableTerminationOnCorruption, NULL, 0) == TRUE);
    HANDLE h2 = HeapCreate(0, 0, 0);
    CHECK(h2 != NULL);
    double_free_of(h2, 32);
}

/* With termination on, HeapSize / HeapValidate / HeapWalk answer, never abort. */
static void sc_queries_no_terminate(void) {
    toc_on();
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    static const size_t sizes[] = { 32, 256 * 1024, WINHEAP_LARGE_THRESHOLD };
    for (size_t i = 0; i < 3; i++) {
        char *p = HeapAlloc(h, 0, sizes[i]);
        char *q = HeapAlloc(h, 0, sizes[i]);
        CHECK(p && q);
        CHECK(HeapFree(h, 0, p) == TRUE);
        SetLastError(0);
        CHECK(HeapSize(h, 0, p) == (SIZE_T)-1);
        CHECK(GetLastError() == ERROR_INVALID_PARAMETER);
        SetLastError(0);
        CHECK(HeapSize(h, 0, q + 16) == (SIZE_T)-1);
        CHECK(GetLastError() == ERROR_INVALID_PARAMETER);
        SetLastError(77);
        CHECK(HeapValidate(h, 0, p) == FALSE);
        CHECK(HeapValidate(h, 0, q + 1) == FALSE);
        CHECK(GetLastError() == 77);
        PROCESS_HEAP_ENTRY e;
        memset(&e, 0, sizeof e);
        e.lpData = q + 16;
        SetLastError(0);
        CHECK(HeapWalk(h, &e) == FALSE);
        CHECK(GetLastError() == ERROR_INVALID_PARAMETER);
        CHECK(HeapFree(h, 0, q) == TRUE);
        CHECK(HeapValidate(h, 0, NULL) == TRUE);
    }
    CHECK(HeapDestroy(h) == TRUE);
    note("scenario done\n");
}

/* ---- D6 scenarios ---- */

static jmp_buf g_jb;
static volatile int g_exc_calls;
static volatile DWORD g_exc_status;
static HANDLE volatile g_exc_heap;
static volatile DWORD g_exc_flags;
static volatile SIZE_T g_exc_size;

static void record(DWORD status, HANDLE heap, DWORD flags, SIZE_T size) {
    g_exc_calls++;
    g_exc_status = status;
    g_exc_heap = heap;
    g_exc_flags = flags;
    g_exc_size = size;
}

static void handler_jump(DWORD status, HANDLE heap, DWORD flags, SIZE_T size) {
    record(status, heap, flags, size);
    longjmp(g_jb, 1);
}

static void handler_return(DWORD status, HANDLE heap, DWORD flags, SIZE_T size) {
    record(status, heap, flags, size);
    note("scenario: handler called and returning\n");
}

static void handler_other(DWORD status, HANDLE heap, DWORD flags, SIZE_T size) {
    (void)status, (void)heap, (void)flags, (void)size;
}

/* 1 if the call raised (handler longjmp'd out), 0 if it returned (*out set). */
static int try_alloc(HANDLE h, DWORD flags, SIZE_T n, void **out) {
    *out = (void *)1;
    if (setjmp(g_jb) == 0) {
        *out = HeapAlloc(h, flags, n);
        return 0;
    }
    return 1;
}

static int try_realloc(HANDLE h, DWORD flags, void *p, SIZE_T n, void **out) {
    *out = (void *)1;
    if (setjmp(g_jb) == 0) {
        *out = HeapReAlloc(h, flags, p, n);
        return 0;
    }
    return 1;
}

/* Exactly one more handler call with these values. */
#define CHECK_RAISED(before, h, n)                                                                  \
    do {                                                                                            \
        CHECK(g_exc_calls == (before) + 1);                                                         \
        CHECK(g_exc_status == STATUS_NO_MEMORY);                                                    \
        CHECK(g_exc_heap == (h));                                                                   \
        CHECK((g_exc_flags & HEAP_GENERATE_EXCEPTIONS) != 0);                                       \
        CHECK(g_exc_size == (SIZE_T)(n));                                                           \
    } while (0)

struct other_arg {
    HANDLE h;
    int ok;
};

static void *other_thread(void *a) {
    struct other_arg *oa = a;
    void *p = HeapAlloc(oa->h, 0, 64);
    if (p) {
        memset(p, 0x5a, 64);
        oa->ok = HeapFree(oa->h, 0, p) == TRUE;
    }
    return NULL;
}

/* Another thread can allocate on h (the failed call left it unlocked). */
static void check_unlocked(HANDLE h) {
    struct other_arg oa = { h, 0 };
    pthread_t t;
    CHECK(pthread_create(&t, NULL, other_thread, &oa) == 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    int r = pthread_timedjoin_np(t, NULL, &ts);
    CHECK(r == 0 /* another thread blocked on the heap lock for 10 s */);
    CHECK(oa.ok);
    /* this thread does not hold the lock either: an unbalanced unlock fails */
    CHECK(HeapLock(h) == TRUE);
    CHECK(HeapUnlock(h) == TRUE);
    SetLastError(0);
    CHECK(HeapUnlock(h) == FALSE);
    CHECK(GetLastError() == ERROR_NOT_OWNER);
    CHECK(HeapValidate(h, 0, NULL) == TRUE);
}

static void sc_exc_per_call(void) {
    CHECK(winheap_set_exception_handler(handler_jump) == NULL);
    HANDLE h = HeapCreate(0, 64 * 1024, 256 * 1024); /* fixed */
    CHECK(h != NULL);
    char *a = HeapAlloc(h, 0, 1000);
    CHECK(a != NULL);
    fill(a, 1000, 5);
    void *p;
    int before = g_exc_calls;
    CHECK(try_alloc(h, HEAP_GENERATE_EXCEPTIONS | HEAP_ZERO_MEMORY, 0x100000, &p) == 1);
    CHECK_RAISED(before, h, 0x100000);
    CHECK((g_exc_flags & HEAP_ZERO_MEMORY) != 0);
    check_unlocked(h);

    before = g_exc_calls;
    CHECK(try_alloc(h, HEAP_GENERATE_EXCEPTIONS, WINHEAP_FIXED_LIMIT, &p) == 1);
    CHECK_RAISED(before, h, WINHEAP_FIXED_LIMIT);
    check_unlocked(h);

    before = g_exc_calls;
    CHECK(try_alloc(h, HEAP_GENERATE_EXCEPTIONS, SIZE_MAX, &p) == 1);
    CHECK_RAISED(before, h, SIZE_MAX);
    check_unlocked(h);

    /* the flag is per call: without it, NULL and error 8, no handler call */
    before = g_exc_calls;
    SetLastError(0);
    CHECK(try_alloc(h, 0, 0x100000, &p) == 0);
    CHECK(p == NULL);
    CHECK(GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
    CHECK(try_alloc(h, 0, SIZE_MAX, &p) == 0);
    CHECK(p == NULL);
    CHECK(g_exc_calls == before);
    /* success with the flag does not raise */
    CHECK(try_alloc(h, HEAP_GENERATE_EXCEPTIONS, 2000, &p) == 0);
    CHECK(p != NULL && p != (void *)1);
    CHECK(g_exc_calls == before);
    CHECK(HeapFree(h, 0, p) == TRUE);

    /* growable heap, SIZE_MAX and PTRDIFF_MAX */
    HANDLE g = HeapCreate(0, 0, 0);
    CHECK(g != NULL);
    before = g_exc_calls;
    CHECK(try_alloc(g, HEAP_GENERATE_EXCEPTIONS, SIZE_MAX, &p) == 1);
    CHECK_RAISED(before, g, SIZE_MAX);
    before = g_exc_calls;
    CHECK(try_alloc(g, HEAP_GENERATE_EXCEPTIONS, (SIZE_T)PTRDIFF_MAX, &p) == 1);
    CHECK_RAISED(before, g, PTRDIFF_MAX);
    check_unlocked(g);

    CHECK(intact(a, 1000, 5));
    CHECK(HeapValidate(h, 0, a) == TRUE);
    CHECK(HeapFree(h, 0, a) == TRUE);
    CHECK(HeapDestroy(h) == TRUE);
    CHECK(HeapDestroy(g) == TRUE);
    note("scenario done\n");
}

static void sc_exc_per_heap(void) {
    winheap_set_exception_handler(handler_jump);
    HANDLE h = HeapCreate(HEAP_GENERATE_EXCEPTIONS, 64 * 1024, 256 * 1024);
    CHECK(h != NULL);
    void *p;
    int before = g_exc_calls;
    CHECK(try_alloc(h, 0, 0x100000, &p) == 1);
    CHECK_RAISED(before, h, 0x100000);
    check_unlocked(h);
    before = g_exc_calls;
    CHECK(try_alloc(h, 0, SIZE_MAX, &p) == 1);
    CHECK_RAISED(before, h, SIZE_MAX);
    check_unlocked(h);
    /* a request that fits does not raise */
    before = g_exc_calls;
    CHECK(try_alloc(h, 0, 100, &p) == 0);
    CHECK(p != NULL && p != (void *)1);
    CHECK(g_exc_calls == before);
    CHECK(HeapFree(h, 0, p) == TRUE);

    /* fill the fixed heap until it raises: the heap is still fine after */
    void *v[4096];
    int n = 0;
    before = g_exc_calls;
    for (; n < 4096; n++) {
        if (try_alloc(h, 0, 1000, &p)) break;
        CHECK(p != NULL);
        v[n] = p;
    }
    CHECK(n > 0 && n < 4096);
    CHECK_RAISED(before, h, 1000);
    check_unlocked(h);
    for (int i = 0; i < n; i++) CHECK(HeapFree(h, 0, v[i]) == TRUE);
    CHECK(HeapValidate(h, 0, NULL) == TRUE);

    HANDLE g = HeapCreate(HEAP_GENERATE_EXCEPTIONS, 0, 0);
    CHECK(g != NULL);
    before = g_exc_calls;
    CHECK(try_alloc(g, 0, SIZE_MAX, &p) == 1);
    CHECK_RAISED(before, g, SIZE_MAX);
    check_unlocked(g);
    CHECK(HeapDestroy(h) == TRUE);
    CHECK(HeapDestroy(g) == TRUE);
    note("scenario done\n");
}

static void sc_exc_realloc(void) {
    winheap_set_exception_handler(handler_jump);
    HANDLE g = HeapCreate(0, 0, 0);
    HANDLE f = HeapCreate(0, 64 * 1024, 256 * 1024);
    CHECK(g && f);
    void *out;
    int before;

    char *p = HeapAlloc(g, 0, 100);
    CHECK(p != NULL);
    fill(p, 100, 11);
    before = g_exc_calls;
    CHECK(try_realloc(g, HEAP_GENERATE_EXCEPTIONS, p, SIZE_MAX, &out) == 1);
    CHECK_RAISED(before, g, SIZE_MAX);
    CHECK(HeapSize(g, 0, p) == 100);
    CHECK(intact(p, 100, 11));
    CHECK(HeapValidate(g, 0, p) == TRUE);
    check_unlocked(g);

    char *q = HeapAlloc(f, 0, 1000);
    CHECK(q != NULL);
    fill(q, 1000, 12);
    before = g_exc_calls;
    CHECK(try_realloc(f, HEAP_GENERATE_EXCEPTIONS, q, 0x100000, &out) == 1);
    CHECK_RAISED(before, f, 0x100000);
    before = g_exc_calls;
    CHECK(try_realloc(f, HEAP_GENERATE_EXCEPTIONS | HEAP_REALLOC_IN_PLACE_ONLY, q, 0x100000, &out) == 1);
    CHECK_RAISED(before, f, 0x100000);
    CHECK((g_exc_flags & HEAP_REALLOC_IN_PLACE_ONLY) != 0);
    CHECK(HeapSize(f, 0, q) == 1000);
    CHECK(intact(q, 1000, 12));
    CHECK(HeapValidate(f, 0, q) == TRUE);
    check_unlocked(f);

    /* a large block */
    char *r = HeapAlloc(g, 0, WINHEAP_LARGE_THRESHOLD);
    CHECK(r != NULL);
    fill(r, WINHEAP_LARGE_THRESHOLD, 13);
    before = g_exc_calls;
    CHECK(try_realloc(g, HEAP_GENERATE_EXCEPTIONS, r, SIZE_MAX - 4095, &out) == 1);
    CHECK_RAISED(before, g, SIZE_MAX - 4095);
    CHECK(HeapSize(g, 0, r) == WINHEAP_LARGE_THRESHOLD);
    CHECK(intact(r, WINHEAP_LARGE_THRESHOLD, 13));
    check_unlocked(g);

    /* without the flag: NULL, error 8, no handler call, block intact */
    before = g_exc_calls;
    SetLastError(0);
    CHECK(try_realloc(g, 0, p, SIZE_MAX, &out) == 0);
    CHECK(out == NULL);
    CHECK(GetLastError() == ERROR_NOT_ENOUGH_MEMORY);
    CHECK(g_exc_calls == before);
    CHECK(intact(p, 100, 11));

    /* lpMem NULL: NULL with error 0, never an exception */
    SetLastError(5);
    CHECK(try_realloc(g, HEAP_GENERATE_EXCEPTIONS, NULL, 10, &out) == 0);
    CHECK(out == NULL);
    CHECK(GetLastError() == 0);
    CHECK(g_exc_calls == before);

    /* the blocks still work */
    CHECK(try_realloc(g, HEAP_GENERATE_EXCEPTIONS, p, 5000, &out) == 0);
    CHECK(out != NULL);
    CHECK(intact(out, 100, 11));
    CHECK(HeapFree(g, 0, out) == TRUE);
    CHECK(HeapFree(g, 0, r) == TRUE);
    CHECK(HeapFree(f, 0, q) == TRUE);
    CHECK(HeapValidate(g, 0, NULL) == TRUE);
    CHECK(HeapValidate(f, 0, NULL) == TRUE);
    CHECK(HeapDestroy(g) == TRUE);
    CHECK(HeapDestroy(f) == TRUE);
    note("scenario done\n");
}

/* Termination off: corruption found by HeapReAlloc with exceptions raises
 * STATUS_ACCESS_VIOLATION (decisions.md). */
static void sc_exc_av_toc_off(void) {
    setenv("WINHEAP_TERMINATE_ON_CORRUPTION", "0", 1);
    winheap_set_exception_handler(handler_jump);
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    char *p = HeapAlloc(h, 0, 64), *q = HeapAlloc(h, 0, 64);
    CHECK(p && q);
    CHECK(HeapFree(h, 0, p) == TRUE);
    void *out;
    int before = g_exc_calls;
    CHECK(try_realloc(h, HEAP_GENERATE_EXCEPTIONS, p, 128, &out) == 1);
    CHECK(g_exc_calls == before + 1);
    CHECK(g_exc_status == STATUS_ACCESS_VIOLATION);
    CHECK(g_exc_heap == h);
    CHECK(g_exc_size == 128);
    check_unlocked(h);
    before = g_exc_calls;
    CHECK(try_realloc(h, HEAP_GENERATE_EXCEPTIONS, q + 16, 128, &out) == 1);
    CHECK(g_exc_status == STATUS_ACCESS_VIOLATION);
    check_unlocked(h);
    /* without the flag: NULL, error 87 */
    SetLastError(0);
    CHECK(try_realloc(h, 0, p, 128, &out) == 0);
    CHECK(out == NULL);
    CHECK(GetLastError() == ERROR_INVALID_PARAMETER);
    CHECK(HeapFree(h, 0, q) == TRUE);
    CHECK(HeapValidate(h, 0, NULL) == TRUE);
    CHECK(HeapDestroy(h) == TRUE);
    note("scenario done\n");
}

static void sc_unhandled_av(void) {
    setenv("WINHEAP_TERMINATE_ON_CORRUPTION", "0", 1);
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    void *p = HeapAlloc(h, 0, 64);
    CHECK(p != NULL);
    CHECK(HeapFree(h, 0, p) == TRUE);
    HeapReAlloc(h, HEAP_GENERATE_EXCEPTIONS, p, 128);
    survived("HeapReAlloc of a freed block with exceptions, no handler");
}

static void sc_set_handler_prev(void) {
    CHECK(winheap_set_exception_handler(handler_jump) == NULL);
    CHECK(winheap_set_exception_handler(handler_return) == handler_jump);
    CHECK(winheap_set_exception_handler(handler_other) == handler_return);
    CHECK(winheap_set_exception_handler(NULL) == handler_other);
    CHECK(winheap_set_exception_handler(NULL) == NULL);
    note("scenario done\n");
}

static void sc_unhandled_alloc(void) {
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    HeapAlloc(h, HEAP_GENERATE_EXCEPTIONS, SIZE_MAX);
    survived("HeapAlloc with exceptions and no handler");
}

static void sc_unhandled_heapflag(void) {
    HANDLE h = HeapCreate(HEAP_GENERATE_EXCEPTIONS, 64 * 1024, 256 * 1024);
    CHECK(h != NULL);
    HeapAlloc(h, 0, 0x100000);
    survived("HeapAlloc on an exception heap, no handler");
}

static void sc_handler_returns(void) {
    winheap_set_exception_handler(handler_return);
    HANDLE h = HeapCreate(0, 64 * 1024, 256 * 1024);
    CHECK(h != NULL);
    HeapAlloc(h, HEAP_GENERATE_EXCEPTIONS, 0x100000);
    survived("HeapAlloc whose handler returned");
}

static void sc_handler_removed(void) {
    winheap_set_exception_handler(handler_jump);
    winheap_set_exception_handler(NULL);
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    HeapAlloc(h, HEAP_GENERATE_EXCEPTIONS, SIZE_MAX);
    survived("HeapAlloc after the handler was removed");
}

static void sc_unhandled_realloc(void) {
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    void *p = HeapAlloc(h, 0, 100);
    CHECK(p != NULL);
    HeapReAlloc(h, HEAP_GENERATE_EXCEPTIONS, p, SIZE_MAX);
    survived("HeapReAlloc with exceptions and no handler");
}

struct scenario {
    const char *name;
    void (*fn)(void);
};

static const struct scenario scenarios[] = {
    { "df_small", sc_df_small },
    { "df_process_heap", sc_df_process_heap },
    { "df_lfh", sc_df_lfh },
    { "df_256k", sc_df_256k },
    { "df_large", sc_df_large },
    { "df_large_2m", sc_df_large_2m },
    { "df_delayed", sc_df_delayed },
    { "interior_p1", sc_interior_p1 },
    { "interior_p16", sc_interior_p16 },
    { "interior_p16k", sc_interior_p16k },
    { "interior_large", sc_interior_large },
    { "realloc_freed", sc_realloc_freed },
    { "realloc_interior", sc_realloc_interior },
    { "df_coalesced", sc_df_coalesced },
    { "df_lfh_immediate", sc_df_lfh_immediate },
    { "df_lfh_remote", sc_df_lfh_remote },
    { "df_lfh_remote_twice", sc_df_lfh_remote_twice },
    { "interior_lfh", sc_interior_lfh },
    { "realloc_freed_lfh", sc_realloc_freed_lfh },
    { "df_cross_thread", sc_df_cross_thread },
    { "df_realloc_moved_large", sc_df_realloc_moved_large },
    { "df_realloc_moved_small", sc_df_realloc_moved_small },
    { "bad_header", sc_bad_header },
    { "exc_av_toc_off", sc_exc_av_toc_off },
    { "unhandled_av", sc_unhandled_av },
    { "default_on", sc_default_on },
    { "default_on_interior", sc_default_on_interior },
    { "env_one", sc_env_one },
    { "toc_off", sc_toc_off },
    { "toc_reenabled", sc_toc_reenabled },
    { "queries_no_terminate", sc_queries_no_terminate },
    { "exc_per_call", sc_exc_per_call },
    { "exc_per_heap", sc_exc_per_heap },
    { "exc_realloc", sc_exc_realloc },
    { "set_handler_prev", sc_set_handler_prev },
    { "unhandled_alloc", sc_unhandled_alloc },
    { "unhandled_heapflag", sc_unhandled_heapflag },
    { "handler_returns", sc_handler_returns },
    { "handler_removed", sc_handler_removed },
    { "unhandled_realloc", sc_unhandled_realloc },
};

/* ------------------------------------------------------------------------ */
/* Parent side                                                              */
/* ------------------------------------------------------------------------ */

static const char *g_argv0 = "test_death";

static void exec_scenario(void *name) {
    char *argv[] = { (char *)g_argv0, "--scenario", (char *)name, NULL };
    execv("/proc/self/exe", argv);
    _exit(127);
}

static void run_scenario(const char *name, wh_child_result *r) {
    wh_run_child(exec_scenario, (void *)name, 60, r);
}

static void dump(const char *name, const wh_child_result *r) {
    fprintf(stderr, "scenario %s: %s %d%s, stderr:\n%s\n", name,
            r->signaled ? "signal" : "exit", r->signaled ? r->signal : r->exit_code,
            r->timed_out ? " (timed out)" : "", r->err);
}

/* The child ran to the end: exit 0, "scenario done" and no winheap line. */
static void expect_clean(const char *name) {
    wh_child_result r;
    run_scenario(name, &r);
    if (r.timed_out || !r.exited || r.exit_code != 0 || !strstr(r.err, "scenario done\n") ||
        strstr(r.err, "winheap:")) {
        dump(name, &r);
        fail_msg("scenario %s did not finish cleanly", name);
    }
}

/*
 * Copy the lines of err that do not start with "scenario" (our own notes)
 * into out; return how many there were.
 */
static int winheap_lines(const char *err, char *out, size_t cap) {
    int n = 0;
    size_t len = 0;
    const char *s = err;
    while (*s) {
        const char *e = strchr(s, '\n');
        size_t l = e ? (size_t)(e - s) + 1 : strlen(s);
        if (strncmp(s, "scenario", 8) != 0) {
            if (len + l < cap) {
                memcpy(out + len, s, l);
                len += l;
            }
            n++;
        }
        s += l;
    }
    out[len] = 0;
    return n;
}

static int note_addr_of(const char *err, unsigned long long *addr) {
    const char *s = strstr(err, "scenario-addr ");
    if (!s) return 0;
    *addr = strtoull(s + 14, NULL, 16);
    return 1;
}

/*
 * SIGABRT with exactly one stderr line
 *   "winheap: STATUS_HEAP_CORRUPTION (0xC0000374) in <func> at 0x<addr>: <reason>\n"
 * where addr is the pointer the scenario passed; reason NULL accepts any.
 */
static void expect_corruption(const char *name, const char *func, const char *reason) {
    wh_child_result r;
    run_scenario(name, &r);
    char lines[4096];
    int n = winheap_lines(r.err, lines, sizeof lines);
    char prefix[160];
    snprintf(prefix, sizeof prefix, "winheap: STATUS_HEAP_CORRUPTION (0xC0000374) in %s at 0x", func);
    const char *why = NULL;
    unsigned long long want = 0, got = 0;
    if (r.timed_out || !r.signaled || r.signal != SIGABRT) {
        why = "child did not die with SIGABRT";
    } else if (n != 1) {
        why = "expected exactly one line on stderr";
    } else if (strncmp(lines, prefix, strlen(prefix)) != 0) {
        why = "line does not start with the expected prefix";
    } else {
        char *end;
        got = strtoull(lines + strlen(prefix), &end, 16);
        if (!note_addr_of(r.err, &want)) {
            why = "scenario did not report its address";
        } else if (got != want) {
            why = "the message names another address";
        } else if (strncmp(end, ": ", 2) != 0) {
            why = "no ': <reason>' after the address";
        } else if (reason) {
            size_t rl = strlen(reason);
            if (strncmp(end + 2, reason, rl) != 0 || strcmp(end + 2 + rl, "\n") != 0) why = "wrong reason";
        } else if (end[strlen(end) - 1] != '\n') {
            why = "line not terminated";
        }
    }
    if (why) {
        dump(name, &r);
        fprintf(stderr, "expected: %s<%llx>: %s\\n (%s; message address %llx)\n", prefix, want,
                reason ? reason : "<any reason>", why, got);
        fail_msg("scenario %s: %s", name, why);
    }
}

/* SIGABRT with exactly one line starting with the unhandled-exception text. */
static void expect_unhandled_status(const char *name, const char *status, const char *func, const char *also) {
    wh_child_result r;
    run_scenario(name, &r);
    char lines[4096];
    int n = winheap_lines(r.err, lines, sizeof lines);
    char prefix[160];
    snprintf(prefix, sizeof prefix, "winheap: unhandled exception %s in %s", status, func);
    size_t pl = strlen(prefix);
    const char *why = NULL;
    if (r.timed_out || !r.signaled || r.signal != SIGABRT)
        why = "child did not die with SIGABRT";
    else if (n != 1)
        why = "expected exactly one line on stderr";
    else if (strncmp(lines, prefix, pl) != 0)
        why = "line does not start with the expected text";
    else if (lines[pl] != '\n' && lines[pl] != ' ' && lines[pl] != ':' && lines[pl] != ',' && lines[pl] != '(')
        why = "function name followed by other characters";
    else if (also && !strstr(r.err, also))
        why = "scenario note missing";
    if (why) {
        dump(name, &r);
        fprintf(stderr, "expected: %s ...\n", prefix);
        fail_msg("scenario %s: %s", name, why);
    }
}

static void expect_unhandled(const char *name, const char *func, const char *also) {
    expect_unhandled_status(name, "STATUS_NO_MEMORY (0xC0000017)", func, also);
}

/* One scenario per test: dies with the corruption line / runs to the end. */
#define CORRUPTION_TEST(name, sc, fn, reason) \
    static void name(void **state) { (void)state; expect_corruption(sc, fn, reason); }
#define CLEAN_TEST(name, sc) \
    static void name(void **state) { (void)state; expect_clean(sc); }

/* wh_expect_death plus the exact line (address and reason) */
static void test_double_free_small(void **state) {
    (void)state;
    wh_expect_death(exec_scenario, "df_small", SIGABRT, "STATUS_HEAP_CORRUPTION (0xC0000374) in HeapFree");
    expect_corruption("df_small", "HeapFree", "double free");
}
CORRUPTION_TEST(test_double_free_process_heap, "df_process_heap", "HeapFree", "double free")
CORRUPTION_TEST(test_double_free_lfh, "df_lfh", "HeapFree", "double free")
CORRUPTION_TEST(test_double_free_256k, "df_256k", "HeapFree", "double free")
CORRUPTION_TEST(test_double_free_large, "df_large", "HeapFree", "double free")
CORRUPTION_TEST(test_double_free_large_2m, "df_large_2m", "HeapFree", "double free")
CORRUPTION_TEST(test_double_free_delayed, "df_delayed", "HeapFree", "double free")
static void test_interior_free_p1(void **state) {
    (void)state;
    wh_expect_death(exec_scenario, "interior_p1", SIGABRT, "STATUS_HEAP_CORRUPTION (0xC0000374) in HeapFree");
    expect_corruption("interior_p1", "HeapFree", "invalid free");
}
CORRUPTION_TEST(test_interior_free_p16, "interior_p16", "HeapFree", "invalid free")
CORRUPTION_TEST(test_interior_free_p16k, "interior_p16k", "HeapFree", "invalid free")
CORRUPTION_TEST(test_interior_free_large, "interior_large", "HeapFree", "invalid free")
CORRUPTION_TEST(test_realloc_freed, "realloc_freed", "HeapReAlloc", "double free")
CORRUPTION_TEST(test_realloc_interior, "realloc_interior", "HeapReAlloc", NULL)
static void test_termination_on_by_default(void **state) {
    (void)state;
    expect_corruption("default_on", "HeapFree", "double free");
    expect_corruption("default_on_interior", "HeapFree", "invalid free");
}
CORRUPTION_TEST(test_env_one_keeps_termination, "env_one", "HeapFree", "double free")
CLEAN_TEST(test_env_zero_turns_termination_off, "toc_off")
CORRUPTION_TEST(test_set_information_reenables_for_good, "toc_reenabled", "HeapFree", "double free")
CLEAN_TEST(test_queries_never_terminate, "queries_no_terminate")
CLEAN_TEST(test_exceptions_per_call, "exc_per_call")
CLEAN_TEST(test_exceptions_per_heap, "exc_per_heap")
CLEAN_TEST(test_exceptions_realloc, "exc_realloc")
CLEAN_TEST(test_set_handler_returns_previous, "set_handler_prev")
static void test_unhandled_no_handler(void **state) {
    (void)state;
    wh_expect_death(exec_scenario, "unhandled_alloc", SIGABRT,
                    "winheap: unhandled exception STATUS_NO_MEMORY (0xC0000017) in HeapAlloc");
    expect_unhandled("unhandled_alloc", "HeapAlloc", NULL);
    expect_unhandled("unhandled_heapflag", "HeapAlloc", NULL);
    expect_unhandled("handler_removed", "HeapAlloc", NULL);
}
static void test_unhandled_handler_returns(void **state) {
    (void)state;
    expect_unhandled("handler_returns", "HeapAlloc", "scenario: handler called and returning\n");
}
static void test_unhandled_realloc(void **state) {
    (void)state;
    expect_unhandled("unhandled_realloc", "HeapReAlloc", NULL);
}

CORRUPTION_TEST(test_double_free_coalesced, "df_coalesced", "HeapFree", "double free")
CORRUPTION_TEST(test_double_free_cross_thread, "df_cross_thread", "HeapFree", "double free")
static void test_free_old_address_after_move(void **state) {
    (void)state;
    expect_corruption("df_realloc_moved_large", "HeapFree", "double free");
    expect_corruption("df_realloc_moved_small", "HeapFree", NULL);
}
CORRUPTION_TEST(test_bad_header, "bad_header", "HeapFree", "bad block header")
static void test_access_violation_when_termination_off(void **state) {
    (void)state;
    expect_clean("exc_av_toc_off");
    expect_unhandled_status("unhandled_av", "STATUS_ACCESS_VIOLATION (0xC0000005)", "HeapReAlloc", NULL);
}

static void test_lfh_double_free(void **state) {
    (void)state;
    expect_corruption("df_lfh_immediate", "HeapFree", "double free");
    expect_corruption("df_lfh_remote", "HeapFree", "double free");
    expect_corruption("df_lfh_remote_twice", "HeapFree", "double free");
}
static void test_lfh_interior_and_realloc(void **state) {
    (void)state;
    expect_corruption("interior_lfh", "HeapFree", "invalid free");
    expect_corruption("realloc_freed_lfh", "HeapReAlloc", "double free");
}

/* A sanity check of the harness itself: a scenario that does not die fails. */
static void test_harness_detects_survivor(void **state) {
    (void)state;
    wh_child_result r;
    run_scenario("set_handler_prev", &r);
    assert_true(r.exited);
    assert_int_equal(r.exit_code, 0);
    assert_non_null(strstr(r.err, "scenario done"));
    run_scenario("no_such_scenario", &r);
    assert_true(r.exited);
    assert_int_equal(r.exit_code, 120);
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "--scenario") == 0) {
        for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++) {
            if (strcmp(argv[2], scenarios[i].name) == 0) {
                scenarios[i].fn();
                return 0;
            }
        }
        fprintf(stderr, "scenario unknown: %s\n", argv[2]);
        return 120;
    }
    if (argc >= 1) g_argv0 = argv[0];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_harness_detects_survivor),
        cmocka_unit_test(test_double_free_small),
        cmocka_unit_test(test_double_free_process_heap),
        cmocka_unit_test(test_double_free_lfh),
        cmocka_unit_test(test_double_free_256k),
        cmocka_unit_test(test_double_free_large),
        cmocka_unit_test(test_double_free_large_2m),
        cmocka_unit_test(test_double_free_delayed),
        cmocka_unit_test(test_interior_free_p1),
        cmocka_unit_test(test_interior_free_p16),
        cmocka_unit_test(test_interior_free_p16k),
        cmocka_unit_test(test_interior_free_large),
        cmocka_unit_test(test_realloc_freed),
        cmocka_unit_test(test_realloc_interior),
        cmocka_unit_test(test_double_free_coalesced),
        cmocka_unit_test(test_lfh_double_free),
        cmocka_unit_test(test_lfh_interior_and_realloc),
        cmocka_unit_test(test_double_free_cross_thread),
        cmocka_unit_test(test_free_old_address_after_move),
        cmocka_unit_test(test_bad_header),
        cmocka_unit_test(test_termination_on_by_default),
        cmocka_unit_test(test_env_one_keeps_termination),
        cmocka_unit_test(test_env_zero_turns_termination_off),
        cmocka_unit_test(test_set_information_reenables_for_good),
        cmocka_unit_test(test_queries_never_terminate),
        cmocka_unit_test(test_exceptions_per_call),
        cmocka_unit_test(test_exceptions_per_heap),
        cmocka_unit_test(test_exceptions_realloc),
        cmocka_unit_test(test_set_handler_returns_previous),
        cmocka_unit_test(test_unhandled_no_handler),
        cmocka_unit_test(test_unhandled_handler_returns),
        cmocka_unit_test(test_unhandled_realloc),
        cmocka_unit_test(test_access_violation_when_termination_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
