/*
 * prim.h - the contract between winheap and the operating system.
 *
 * Every call winheap makes into the kernel for memory (mmap, mprotect,
 * madvise, mremap, munmap) goes through the table below; nothing else in the
 * library includes <sys/mman.h>.  Tests swap the table or arm the failure
 * counter to make the Nth call that acquires memory fail, which is how the
 * fault-injection tests reach every error path.
 *
 * Calls that acquire memory (reserve, commit, map, remap) can fail; they
 * return NULL / -1 and leave errno set (ENOMEM for injected failures).
 * Calls that give memory back (decommit, purge, release) are expected to
 * succeed; a failure there is a fatal error reported by the caller.
 */
#ifndef WINHEAP_PRIM_H
#define WINHEAP_PRIM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct wh_prim_ops {
    /* Reserve `size` bytes of inaccessible address space aligned to `align`
     * (a power of two, at least the page size).  Sizes everywhere in this
     * table are whole pages (reserve rounds up; release and the others must
     * be given page multiples).  NULL on failure. */
    void *(*reserve)(size_t size, size_t align);
    /* Make [p, p+size) readable and writable (and executable if `exec`).
     * 0 on success, -1 on failure (nothing changed). */
    int (*commit)(void *p, size_t size, int exec);
    /* Make [p, p+size) inaccessible and give its pages back. 0 / -1. */
    int (*decommit)(void *p, size_t size);
    /* Give the pages of [p, p+size) back but keep them accessible (they read
     * as zero afterwards). 0 / -1. */
    int (*purge)(void *p, size_t size);
    /* Unmap [p, p+size). 0 / -1. */
    int (*release)(void *p, size_t size);
    /* Resize the mapping [p, p+old) to `new_size` bytes.  If `dest` is
     * non-NULL the mapping moves to dest (which must be a reservation of at
     * least new_size bytes that this call replaces), else it must stay in
     * place.  Returns the new address or NULL (nothing changed). */
    void *(*remap)(void *p, size_t old_size, size_t new_size, void *dest);
    /* Advice: back [p, p+size) with transparent huge pages where the kernel
     * can (2 MiB pages: one fault instead of 512).  0 / -1; a failure only
     * means the advice was not taken. */
    int (*hugepage)(void *p, size_t size);
} wh_prim_ops;

/* The table in use.  Initialised to the POSIX implementation. */
extern wh_prim_ops wh_prim;

/* The POSIX implementation (prim_posix.c), for tests that wrap it. */
extern const wh_prim_ops wh_prim_posix;

/* Fault injection: after this call, the `n`th call that acquires memory
 * (reserve, commit, remap; counted from 1) fails with ENOMEM, and so does
 * every later one if `sticky`.  n == 0 disarms.  Thread-safe. */
void wh_prim_fail_at(uint64_t n, int sticky);
/* Number of acquiring calls made since the last wh_prim_fail_at(). */
uint64_t wh_prim_calls(void);
/* Bytes of address space currently reserved through this layer (mappings
 * winheap holds).  Used by tests to prove that nothing leaks. */
size_t wh_prim_reserved_bytes(void);

/* System page size (4096 on x86-64 Linux). */
size_t wh_prim_page_size(void);
/* Read an environment variable without allocating; NULL if unset. */
const char *wh_prim_getenv(const char *name);
/* Fill `buf` with `n` random bytes (getrandom, falling back to time and
 * addresses).  Never fails. */
void wh_prim_random(void *buf, size_t n);
/* Write all of buf to stderr with write(2); never allocates. */
void wh_prim_write_stderr(const char *buf, size_t n);
/* Futexes of the lock (lock.c), private to the process.  wait sleeps while
 * *word == val, until a wake, a signal or a spurious return; wake wakes up
 * to n sleepers.  Neither fails nor changes errno. */
void wh_prim_futex_wait(_Atomic uint32_t *word, uint32_t val);
void wh_prim_futex_wake(_Atomic uint32_t *word, int n);

#endif /* WINHEAP_PRIM_H */
