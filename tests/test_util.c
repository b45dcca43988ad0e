/*
 * test_util.c - fork-based death tests and process probes for the test
 * programs (see test_util.h).
 */
#define _GNU_SOURCE
#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void wh_run_child(void (*fn)(void *), void *arg, int timeout_s, wh_child_result *out) {
    memset(out, 0, sizeof *out);
    int fds[2];
    if (pipe(fds) != 0) { perror("pipe"); abort(); }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); abort(); }
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        close(fds[1]);
        /* no core files from expected deaths */
        signal(SIGABRT, SIG_DFL);
        fn(arg);
        _exit(0);
    }
    close(fds[1]);
    size_t len = 0;
    time_t deadline = time(NULL) + timeout_s;
    int status = 0;
    int done = 0;
    for (;;) {
        struct pollfd p = { .fd = fds[0], .events = POLLIN };
        int r = poll(&p, 1, 100);
        if (r > 0) {
            char tmp[512];
            ssize_t n = read(fds[0], tmp, sizeof tmp);
            if (n > 0) {
                size_t room = sizeof out->err - 1 - len;
                size_t take = (size_t)n < room ? (size_t)n : room;
                memcpy(out->err + len, tmp, take);
                len += take;
                continue;
            }
            if (n == 0) break; /* EOF: child closed stderr (exited) */
        }
        if (waitpid(pid, &status, WNOHANG) == pid) { done = 1; break; }
        if (time(NULL) > deadline) {
            kill(pid, SIGKILL);
            out->timed_out = 1;
            break;
        }
    }
    close(fds[0]);
    out->err[len] = 0;
    if (!done) waitpid(pid, &status, 0);
    if (WIFEXITED(status)) { out->exited = 1; out->exit_code = WEXITSTATUS(status); }
    if (WIFSIGNALED(status)) { out->signaled = 1; out->signal = WTERMSIG(status); }
}

void wh_expect_death_at(void (*fn)(void *), void *arg, int sig, const char *needle, const char *file, int line) {
    wh_child_result r;
    wh_run_child(fn, arg, 30, &r);
    if (r.timed_out || !r.signaled || r.signal != sig || (needle && !strstr(r.err, needle))) {
        fprintf(stderr, "%s:%d: expected death by signal %d with \"%s\" on stderr; got %s %d, stderr:\n%s\n",
                file, line, sig, needle ? needle : "", r.timed_out ? "timeout" : r.signaled ? "signal" : "exit",
                r.signaled ? r.signal : r.exit_code, r.err);
        fail_msg("death test failed at %s:%d", file, line);
    }
}

int wh_count_mappings(void) {
    int fd = open("/proc/self/maps", O_RDONLY);
    if (fd < 0) return -1;
    char buf[8192];
    int lines = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++) lines += buf[i] == '\n';
    close(fd);
    return lines;
}

size_t wh_rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long size = 0, res = 0;
    if (fscanf(f, "%lu %lu", &size, &res) != 2) res = 0;
    fclose(f);
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

/* ---- /proc/self/maps probes ---- */

/* 1 if every byte of [lo, hi) is covered by mappings whose permission field
 * is exactly `perms` (e.g. "---p"), 0 otherwise. */
int maps_range_is(const void *lo_p, const void *hi_p, const char *perms) {
    uintptr_t lo = (uintptr_t)lo_p, hi = (uintptr_t)hi_p, cur = lo;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return 0;
    char line[512];
    int ok = 1;
    while (cur < hi && fgets(line, sizeof line, f)) {
        unsigned long s, e;
        char p[8];
        if (sscanf(line, "%lx-%lx %7s", &s, &e, p) != 3) continue;
        if (e <= cur || s >= hi) continue;
        if (s > cur || strcmp(p, perms) != 0) { ok = 0; break; }
        cur = e;
    }
    fclose(f);
    return ok && cur >= hi;
}

/* 1 if no mapping intersects [lo, hi). */
int maps_range_unmapped(const void *lo_p, const void *hi_p) {
    uintptr_t lo = (uintptr_t)lo_p, hi = (uintptr_t)hi_p;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return 0;
    char line[512];
    int ok = 1;
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx", &s, &e) != 2) continue;
        if (s < hi && e > lo) { ok = 0; break; }
    }
    fclose(f);
    return ok;
}

void wh_test_fill(void *p, size_t n, unsigned seed) {
    uint8_t *b = p;
    for (size_t i = 0; i < n; i++) b[i] = (uint8_t)(seed * 131u + i * 7u + (i >> 9) + 1u);
}

size_t wh_test_check(const void *p, size_t n, unsigned seed) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != (uint8_t)(seed * 131u + i * 7u + (i >> 9) + 1u)) return i;
    return n;
}

size_t wh_test_first_nonzero(const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i]) return i;
    return n;
}

/* Permissions ("rwxp") of the mapping holding addr; 0 if it is not mapped. */
int maps_perms(const void *addr, char perms[5]) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return 0;
    char line[512];
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char pr[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, pr) == 3 && (uintptr_t)addr >= lo && (uintptr_t)addr < hi) {
            memcpy(perms, pr, 5);
            found = 1;
            break;
        }
    }
    fclose(f);
    return found;
}
