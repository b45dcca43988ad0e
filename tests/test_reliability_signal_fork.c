/*
 * test_reliability_signal_fork.c - RELIABILITY.md row 24b: fork() from a
 * signal handler that interrupts HeapAlloc/HeapFree of the same, only,
 * thread, 1000 times.  No fork may hang (a timeout is a failure), every
 * child must finish the interrupted call and then find its heaps fully
 * usable, and the parent's heap must stay valid.  The other parts of row 24
 * (fork while threads hammer a heap; the child's random stream) are in
 * test_reliability_threads.c.  The whole scenario runs in a child process
 * of the test, with termination on corruption off; under ThreadSanitizer it
 * skips itself (the runtime's own signal handling and fork interception get
 * in the way) and says so.
 */
#define _GNU_SOURCE
#include "reliability_util.h"

#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/*
 * Row 24b: fork from a signal handler that interrupts HeapAlloc/HeapFree of
 * the same (only) thread, 1000 times.  A 300 us interval timer sends
 * SIGALRM while the thread allocates and frees blocks of 64 MiB (8 MiB
 * under ASan, whose shadow pages would make every fork slow) and 1 MiB
 * (mappings of their own; the 64 MiB ones write 1024 address-map entries
 * under the map lock), back-end blocks of 16 KiB to 256 KiB (under the heap
 * lock, committing as they go; the free pages are decommitted every 64
 * rounds so that commits keep happening) and small LFH blocks.  The handler
 * forks, so the fork handlers run while the interrupted call may hold the
 * heap lock or the map lock (a fork handler that waits for it deadlocks:
 * the timeout catches that).  The child only notes that it is the child
 * and returns from the handler, so the interrupted call completes and
 * unlocks as it would have; right after that call the driver sees the note
 * and checks that the child's heaps are fully usable: the kept blocks are
 * intact and free, blocks of every kind can be allocated and freed, the
 * heap validates, a new heap works, so does the process heap; then it
 * exits 0 (2 if a check failed).  Calling the heap from the handler itself
 * would re-enter the call the handler interrupted, which no allocator
 * supports; row 24b does not ask for it.  The note says how many forks hit
 * a heap call, the heap lock held and the map lock held (about 990, 700 and
 * 10-20 of 1000 in a Release build); the parent validates its heap at the end.
 */
#define SF_KEEP 16
#define SF_BIG (REL_ASAN ? (8u << 20) : (64u << 20))
static HANDLE g_sf_heap;
static char *g_sf_keep[SF_KEEP];
static volatile sig_atomic_t g_sf_pending, g_sf_forks, g_sf_in_child, g_sf_in_call, g_sf_stop;
static volatile sig_atomic_t g_sf_hit_call, g_sf_hit_heap_lock, g_sf_hit_map_lock;
static volatile pid_t g_sf_pid;
static void sf_handler(int sig) {
    (void)sig;
    int saved = errno;
    if (!g_sf_pending && !g_sf_in_child && !g_sf_stop && g_sf_forks < 1000) {
        /* what the interrupted code holds, read before the fork (atomic loads) */
        int in_call = g_sf_in_call;
        int heap_lock = wh_heap_lock_owned((wh_heap *)g_sf_heap);
        int map_lock = wh_lock_held(wh_region_map_lock());
        pid_t pid = fork();
        if (pid == 0) {
            g_sf_in_child = 1; /* nothing else: the interrupted call finishes first */
        } else if (pid > 0) {
            g_sf_pid = pid;
            g_sf_pending = 1;
            g_sf_forks++;
            g_sf_hit_call += in_call;
            g_sf_hit_heap_lock += heap_lock;
            g_sf_hit_map_lock += map_lock;
        }
    }
    errno = saved;
}
#define SF_CHECK(c)                                                        \
    do {                                                                   \
        if (!(c)) {                                                        \
            char b_[200];                                                  \
            snprintf(b_, sizeof b_, "FAIL in the fork child: line %d: %s\n", __LINE__, #c); \
            say(b_);                                                       \
            _exit(2);                                                      \
        }                                                                  \
    } while (0)
/* The fork child, right after the interrupted heap call returned: is
 * everything usable? */
static void sf_child(void) {
    HANDLE h = g_sf_heap;
    for (int k = 0; k < SF_KEEP; k++) {
        if (!g_sf_keep[k]) continue;
        SF_CHECK(g_sf_keep[k][0] == (char)k && HeapValidate(h, 0, g_sf_keep[k]) == TRUE);
        SF_CHECK(HeapFree(h, 0, g_sf_keep[k]) == TRUE);
        g_sf_keep[k] = NULL;
    }
    static const size_t sizes[] = { 1, 100, 4000, 30000, 200000, 1u << 20 };
    void *p[6];
    for (int i = 0; i < 6; i++) {
        SF_CHECK((p[i] = HeapAlloc(h, 0, sizes[i])) != NULL);
        memset(p[i], 0x5A, sizes[i]);
    }
    for (int i = 0; i < 6; i++) SF_CHECK(HeapFree(h, 0, p[i]) == TRUE);
    SF_CHECK(HeapValidate(h, 0, NULL) == TRUE);
    HANDLE n = HeapCreate(0, 0, 0);
    SF_CHECK(n != NULL);
    void *a = HeapAlloc(n, 0, 100), *b = HeapAlloc(n, 0, 30000), *c = HeapAlloc(n, 0, 1u << 20);
    SF_CHECK(a && b && c && HeapValidate(n, 0, NULL) == TRUE);
    SF_CHECK(HeapFree(n, 0, b) == TRUE && HeapDestroy(n) == TRUE);
    void *d = HeapAlloc(GetProcessHeap(), 0, 64);
    SF_CHECK(d && HeapFree(GetProcessHeap(), 0, d) == TRUE && HeapValidate(GetProcessHeap(), 0, NULL) == TRUE);
    _exit(0);
}
static void sf_driver(void *arg) {
    (void)arg;
    child_begin();
    g_sf_heap = new_heap(1);
    (void)GetProcessHeap();
    struct sigaction sa = { 0 };
    sa.sa_handler = sf_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = { { 0, 300 }, { 0, 300 } };
    setitimer(ITIMER_REAL, &it, NULL);
    HEAP_OPTIMIZE_RESOURCES_INFORMATION oi = { HEAP_OPTIMIZE_RESOURCES_CURRENT_VERSION, 0 };
    int ok = 0, failed = 0, hung = 0, first_status = 0;
    double since = now(), deadline = now() + 80;
    for (unsigned i = 0; ok + failed + hung < 1000 && now() < deadline; i++) {
        unsigned k = i % SF_KEEP;
        if (g_sf_keep[k]) {
            g_sf_in_call = 1;
            BOOL freed = HeapFree(g_sf_heap, 0, g_sf_keep[k]);
            g_sf_in_call = 0;
            g_sf_keep[k] = NULL;
            if (g_sf_in_child) sf_child();
            CHECK(freed == TRUE);
        }
        /* 1 MiB and 64 MiB: mappings of their own (64 MiB: 1024 address-map
         * entries written under the map lock); 16..256 KiB: the back end;
         * else the LFH */
        size_t n = i % 8 == 0 ? SF_BIG : i % 4 == 0 ? (1u << 20) : i % 4 == 2 ? 16384 + (i * 7919u) % 245760 : 1 + (i * 131u) % 2000;
        g_sf_in_call = 1;
        char *q = HeapAlloc(g_sf_heap, 0, n);
        g_sf_in_call = 0;
        if (q) q[0] = (char)k;
        g_sf_keep[k] = q;
        if (g_sf_in_child) sf_child();
        CHECK(q != NULL);
        if (i % 64 == 63) {
            g_sf_in_call = 1;
            BOOL done = HeapSetInformation(g_sf_heap, HeapOptimizeResources, &oi, sizeof oi);
            g_sf_in_call = 0;
            if (g_sf_in_child) sf_child();
            CHECK(done == TRUE);
        }
        if (!g_sf_pending) {
            since = now();
            continue;
        }
        int status;
        pid_t w = waitpid(g_sf_pid, &status, WNOHANG);
        if (w == g_sf_pid) {
            if (WIFEXITED(status) && WEXITSTATUS(status) == 0) ok++;
            else if (!failed++) first_status = status;
            g_sf_pending = 0;
        } else if (now() - since > 5) {
            kill(g_sf_pid, SIGKILL);
            waitpid(g_sf_pid, &status, 0);
            hung++;
            g_sf_pending = 0;
        }
    }
    g_sf_stop = 1;
    if (g_sf_in_child) sf_child(); /* forked between a heap call and the end of the loop */
    struct itimerval off = { { 0, 0 }, { 0, 0 } };
    setitimer(ITIMER_REAL, &off, NULL);
    if (g_sf_pending) { /* the loop ran out of time with a child pending */
        int status;
        waitpid(g_sf_pid, &status, 0);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) ok++;
        else if (!failed++) first_status = status;
        g_sf_pending = 0;
    }
    char b[300];
    snprintf(b, sizeof b,
             "note: %d forks from the handler: %d ok, %d failed (first status 0x%x), %d hung; "
             "%d interrupted a heap call, %d with the heap lock held, %d with the map lock held\n",
             (int)g_sf_forks, ok, failed, first_status, hung, (int)g_sf_hit_call, (int)g_sf_hit_heap_lock,
             (int)g_sf_hit_map_lock);
    say(b);
    CHECK(ok + failed + hung >= 1000);
    CHECK(failed == 0 && hung == 0);
    /* the point of the row: most forks land inside a heap call, many of them
     * with the heap lock held by the interrupted call */
    CHECK(g_sf_hit_call >= 500 && g_sf_hit_heap_lock >= 50);
    CHECK(HeapValidate(g_sf_heap, 0, NULL) == TRUE);
    for (int k = 0; k < SF_KEEP; k++) CHECK(!g_sf_keep[k] || HeapFree(g_sf_heap, 0, g_sf_keep[k]));
    CHECK(HeapValidate(g_sf_heap, 0, NULL) == TRUE && HeapDestroy(g_sf_heap) == TRUE);
    note_done();
}
static void test_row_24_fork_from_signal_handler(void **state) {
    (void)state;
    if (REL_TSAN) {
        print_message("SKIP under ThreadSanitizer: row 24 fork from a signal handler\n");
        return;
    }
    wh_child_result r;
    wh_run_child(sf_driver, NULL, 100, &r);
    print_message("%s", r.err);
    if (r.timed_out) {
        dump("row 24 signal fork", &r);
        fail_msg("row 24: the process that forks from its signal handler hung (deadlock in the fork handlers?)");
    }
    check_clean(&r, "row 24 fork from a signal handler");
}

int main(void) {
    setenv("WINHEAP_TERMINATE_ON_CORRUPTION", "0", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_24_fork_from_signal_handler),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
