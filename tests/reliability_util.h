/*
 * reliability_util.h - helpers of the reliability tests (test_reliability*.c):
 * CHECK that works in the cmocka parent and in forked/exec'd children, child
 * notes, peeks and pokes into poisoned memory, the exact corruption-line
 * check, exec-of-self scenarios with their own environment.
 */
#ifndef WH_RELIABILITY_UTIL_H
#define WH_RELIABILITY_UTIL_H
#define REL_UNUSED __attribute__((unused))
#include "test_util.h"
#include "lfh.h" /* internals: the address map (is p an LFH slot?), heap keys for forged links */

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__) || __has_feature(address_sanitizer)
#define REL_ASAN 1
#else
#define REL_ASAN 0
#endif
#if defined(__SANITIZE_THREAD__) || __has_feature(thread_sanitizer)
#define REL_TSAN 1
#else
#define REL_TSAN 0
#endif

/* ------------------------------------------------------------------------ */
/* Helpers shared by the parent and the children                            */
/* ------------------------------------------------------------------------ */

static REL_UNUSED int g_in_child;          /* CHECK exits instead of failing the cmocka test */
static REL_UNUSED const char *g_argv0 = "test_reliability";

static REL_UNUSED void say(const char *s) { if (write(2, s, strlen(s)) < 0) { /* nothing */ } }

static REL_UNUSED void check_failed(int line, const char *expr) {
    char b[400];
    snprintf(b, sizeof b, "FAIL: line %d: %s (LE %u)\n", line, expr, (unsigned)GetLastError());
    if (g_in_child) {
        say(b);
        _exit(3);
    }
    fail_msg("%s", b);
}
#define CHECK(c) do { if (!(c)) check_failed(__LINE__, #c); } while (0)

static REL_UNUSED void child_begin(void) { g_in_child = 1; }
static REL_UNUSED void toc_on(void) { CHECK(HeapSetInformation(NULL, HeapEnableTerminationOnCorruption, NULL, 0) == TRUE); }
static REL_UNUSED void note_addr(const void *p) {
    char b[64];
    snprintf(b, sizeof b, "note: addr %p\n", p);
    say(b);
}
static REL_UNUSED void note_done(void) { say("note: done\n"); }
static REL_UNUSED void survived(const char *what) {
    char b[200];
    snprintf(b, sizeof b, "FAIL: survived %s (LE %u)\n", what, (unsigned)GetLastError());
    say(b);
    _exit(4);
}

/* Reads of headers, slack and freed memory (poisoned in the ASan build). */
#if REL_ASAN
__attribute__((no_sanitize("address")))
#endif
static REL_UNUSED unsigned char peek(const void *p) { return *(const volatile unsigned char *)p; }
static REL_UNUSED uint64_t peek64(const void *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | peek((const char *)p + i);
    return v;
}
static REL_UNUSED void poke64(void *p, uint64_t v) {
    for (int i = 0; i < 8; i++) wh_test_poke((char *)p + i, (int)((v >> (8 * i)) & 0xFF), 1);
}
static REL_UNUSED void poke_bytes(void *p, const unsigned char *src, size_t n) {
    for (size_t i = 0; i < n; i++) wh_test_poke((char *)p + i, src[i], 1);
}
static REL_UNUSED void save_bytes(unsigned char *dst, const void *p, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = peek((const char *)p + i);
}

static REL_UNUSED int in_lfh(const void *p) { return (wh_region_map_get(p) & 3) == WH_MAP_GROUP; }

static REL_UNUSED HANDLE new_heap(int lfh) {
    HANDLE h = HeapCreate(0, 0, 0);
    CHECK(h != NULL);
    if (lfh) {
        ULONG two = 2;
        CHECK(HeapSetInformation(h, HeapCompatibilityInformation, &two, sizeof two) == TRUE);
    }
    return h;
}

static REL_UNUSED void fill(void *p, size_t n, unsigned seed) {
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)(seed + i * 7u + (i >> 8));
}
static REL_UNUSED int intact(const void *p, size_t n, unsigned seed) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != (unsigned char)(seed + i * 7u + (i >> 8))) return 0;
    return 1;
}

/* Bytes of the block at p as HeapWalk reports them (back-end blocks: the
 * whole block, header included), or 0 if the walk does not find p. */
static REL_UNUSED size_t block_span(HANDLE h, const void *p) {
    PROCESS_HEAP_ENTRY e = { 0 };
    while (HeapWalk(h, &e))
        if (e.lpData == p) return (size_t)e.cbData + e.cbOverhead;
    return 0;
}
/* First byte of the header of the block that follows back-end block p. */
static REL_UNUSED char *next_header(HANDLE h, char *p) {
    size_t span = block_span(h, p);
    CHECK(span != 0);
    return p - WH_HDR + span;
}

/* Full walk: number of entries; *le gets the error that ended it. */
static REL_UNUSED int walk_count(HANDLE h, DWORD *le, int limit) {
    PROCESS_HEAP_ENTRY e = { 0 };
    int n = 0;
    SetLastError(0);
    while (HeapWalk(h, &e) && n < limit) n++;
    *le = GetLastError();
    return n;
}

/* n blocks of `size` on h: distinct, none overlapping, all valid. */
static REL_UNUSED void check_distinct(HANDLE h, char **v, int n, size_t size) {
    for (int i = 0; i < n; i++) {
        CHECK(v[i] != NULL);
        CHECK(HeapValidate(h, 0, v[i]) == TRUE);
        for (int j = 0; j < i; j++) CHECK(v[i] >= v[j] + size || v[j] >= v[i] + size);
    }
}

/* ------------------------------------------------------------------------ */
/* Parent side: running children and checking how they ended               */
/* ------------------------------------------------------------------------ */

static REL_UNUSED void dump(const char *what, const wh_child_result *r) {
    fprintf(stderr, "[%s] child %s %d%s, stderr:\n%s\n", what, r->signaled ? "signal" : "exit",
            r->signaled ? r->signal : r->exit_code, r->timed_out ? " (timed out)" : "", r->err);
}

/* The lines of err that are not the child's notes: count, first one in out. */
static REL_UNUSED int other_lines(const char *err, char *out, size_t cap) {
    int n = 0;
    out[0] = 0;
    for (const char *s = err; *s;) {
        const char *e = strchr(s, '\n');
        size_t l = e ? (size_t)(e - s) + 1 : strlen(s);
        if (strncmp(s, "note:", 5) != 0) {
            if (n == 0) snprintf(out, cap, "%.*s", (int)l, s);
            n++;
        }
        s += l;
    }
    return n;
}

/* Died of SIGABRT after writing exactly one line, the corruption line of
 * `func` with `reason` (NULL: any) at the address the child noted last
 * (want_addr), else at any address. */
static REL_UNUSED void check_corruption(const wh_child_result *r, const char *what, const char *func, const char *reason,
                             int want_addr) {
    char line[600], prefix[160];
    int n = other_lines(r->err, line, sizeof line);
    snprintf(prefix, sizeof prefix, "winheap: STATUS_HEAP_CORRUPTION (0xC0000374) in %s at 0x", func);
    size_t pl = strlen(prefix);
    const char *why = NULL;
    if (r->timed_out || !r->signaled || r->signal != SIGABRT) {
        why = "the child did not die of SIGABRT";
    } else if (n != 1) {
        why = "not exactly one line on stderr";
    } else if (strncmp(line, prefix, pl) != 0) {
        why = "wrong prefix";
    } else {
        const char *hx = line + pl;
        if (strspn(hx, "0123456789abcdef") != 16 || strncmp(hx + 16, ": ", 2) != 0) {
            why = "address is not 16 hex digits followed by ': '";
        } else if (reason && (strncmp(hx + 18, reason, strlen(reason)) != 0 || strcmp(hx + 18 + strlen(reason), "\n") != 0)) {
            why = "wrong reason";
        } else if (want_addr) {
            const char *a = NULL;
            for (const char *s = strstr(r->err, "note: addr "); s; s = strstr(s + 1, "note: addr ")) a = s;
            if (!a || strtoull(a + 11, NULL, 16) != strtoull(hx, NULL, 16)) why = "the line names another address";
        }
    }
    if (why) {
        dump(what, r);
        fail_msg("%s: %s (expected \"%s<addr>: %s\")", what, why, prefix, reason ? reason : "<any>");
    }
}

/* A forked child's exit code: under ThreadSanitizer a child also inherits
 * the count of races reported earlier in the process and exits with 66. */
static REL_UNUSED int exit_ok(int code) { return code == 0 || (REL_TSAN && code == 66); }
static REL_UNUSED void check_clean(const wh_child_result *r, const char *what) {
    if (r->timed_out || !r->exited || !exit_ok(r->exit_code) || !strstr(r->err, "note: done\n") || strstr(r->err, "winheap:") ||
        strstr(r->err, "FAIL")) {
        dump(what, r);
        fail_msg("%s: the child did not finish cleanly", what);
    }
}

static REL_UNUSED void expect_corruption(void (*fn)(void *), void *arg, const char *what, const char *func, const char *reason) {
    wh_child_result r;
    wh_run_child(fn, arg, 60, &r);
    check_corruption(&r, what, func, reason, 1);
}
static REL_UNUSED void expect_clean(void (*fn)(void *), void *arg, const char *what) {
    wh_child_result r;
    wh_run_child(fn, arg, 60, &r);
    check_clean(&r, what);
}

/* Exec'd scenarios: a fresh process with its own environment. */
struct scenario_run {
    const char *name;
    const char *env[4]; /* "NAME=VALUE" */
};
static REL_UNUSED void exec_scenario(void *arg) {
    struct scenario_run *s = arg;
    unsetenv("WINHEAP_TERMINATE_ON_CORRUPTION");
    unsetenv("WINHEAP_DEBUG");
    unsetenv("WINHEAP_SEED");
    unsetenv("WINHEAP_ZERO_ON_FREE");
    for (int i = 0; i < 4 && s->env[i]; i++) putenv((char *)s->env[i]);
    char *argv[] = { (char *)g_argv0, "--scenario", (char *)s->name, NULL };
    execv("/proc/self/exe", argv);
    _exit(127);
}
static REL_UNUSED void run_scenario(const char *name, const char *env1, const char *env2, wh_child_result *r) {
    struct scenario_run s = { name, { env1, env2, NULL, NULL } };
    wh_run_child(exec_scenario, &s, 60, r);
}

/* The scenarios a test program can run in an exec'd child, and the start of
 * its main(): rel_main_prologue runs the named scenario and returns its exit
 * code when argv asks for one ("--scenario NAME"), else returns -1 after
 * turning termination on corruption off for the in-process tests (read at
 * the first call) and remembering argv[0] for exec_scenario. */
struct rel_scenario {
    const char *name;
    void (*fn)(void);
};
static REL_UNUSED int rel_main_prologue(int argc, char **argv, const struct rel_scenario *sc, size_t n) {
    if (argc >= 3 && strcmp(argv[1], "--scenario") == 0) {
        g_in_child = 1;
        for (size_t i = 0; i < n; i++)
            if (strcmp(argv[2], sc[i].name) == 0) {
                sc[i].fn();
                note_done();
                return 0;
            }
        say("FAIL: unknown scenario\n");
        return 120;
    }
    setenv("WINHEAP_TERMINATE_ON_CORRUPTION", "0", 1);
    g_argv0 = argv[0];
    return -1;
}

enum { K_LFH, K_PROCESS, K_PLAIN };
struct df_case {
    int heap;        /* K_* */
    size_t size;
    int want_lfh;    /* the block must (1) / must not (0) be an LFH slot */
    int pattern;     /* 0: p p; 1: p q p; 2: p, alloc one, p; 3: p, smash its links, p */
};

static REL_UNUSED HANDLE heap_of_kind(int k) { return k == K_PROCESS ? GetProcessHeap() : new_heap(k == K_LFH); }

static REL_UNUSED int g_exc_calls;
static REL_UNUSED DWORD g_exc_status;
static REL_UNUSED SIZE_T g_exc_size;
static REL_UNUSED jmp_buf g_exc_jmp;
static REL_UNUSED void exc_handler(DWORD status, HANDLE heap, DWORD flags, SIZE_T size) {
    (void)heap, (void)flags;
    g_exc_calls++;
    g_exc_status = status;
    g_exc_size = size;
    longjmp(g_exc_jmp, 1);
}

static REL_UNUSED uint8_t pat(uint32_t pattern, const void *a) { return (uint8_t)(pattern >> (8 * ((uintptr_t)a & 3))); }

#endif
