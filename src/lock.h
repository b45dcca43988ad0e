/*
 * lock.h - winheap's own lock: a mutex whose owner word is the lock.
 *
 * Every lock of the library (each heap's lock, the registry, the process
 * heap's creation, the address map's writers, the random stream's seeding)
 * is a wh_lock.  It is taken with one compare-and-swap of its owner word
 * from NULL to the caller's identity (the address of a per-thread byte), so
 * "this thread holds the lock" is exact at every instruction: there is no
 * moment at which the lock is held but its owner not yet recorded, as there
 * is with a pthread mutex plus a separate owner field.  The fork handlers
 * (heap.c) need that: fork() from a signal handler that interrupted a heap
 * call of the same thread must see which locks the interrupted call holds,
 * and leave exactly those alone.
 *
 * Contention: a thread that finds the lock held spins briefly, then sleeps
 * on a futex.  `contended` is the futex word: 1 while some thread may be
 * asleep or about to sleep, 0 otherwise.  A waiter sets it to 1 before each
 * attempt and sleeps only while it still reads 1; an unlocker clears the
 * owner, then, if `contended` is 1, swaps it to 0 and wakes one sleeper, who
 * sets it to 1 again before its next attempt (Drepper's "mutex, take 2",
 * with the owner word in place of the locked state).  The waiter's store
 * and compare-and-swap and the unlocker's store and load are sequentially
 * consistent, so either the unlocker's load of `contended` comes after the
 * waiter's store (it reads 1 and wakes a sleeper, or the waiter, not yet
 * asleep, finds the word 0 and tries again) or the waiter's
 * compare-and-swap comes after the unlocker cleared the owner (and sees the
 * lock free): no wakeup is lost.  The flag is not a
 * count, on purpose: a fork child, whose other threads are gone, can clear
 * it (wh_lock_fork_child) without having to know whether the forking
 * thread itself was half way through a wait; a stale 1 would cost one
 * futex_wake system call, nothing else.
 *
 * A zeroed wh_lock is unlocked (fresh heap memory needs no initialisation).
 * The lock is not recursive; the heap lock (internal.h) keeps a recursion
 * count on top, touched only by the owner.
 */
#ifndef WINHEAP_LOCK_H
#define WINHEAP_LOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* One byte per thread whose address identifies the thread (lock owner,
 * owner of LFH thread caches); the forking thread keeps its address in the
 * fork child.  Defined in heap.c. */
extern __thread char wh_thread_identity __attribute__((tls_model("initial-exec")));

typedef struct wh_lock {
    _Atomic(void *) owner;       /* NULL, or the holder's &wh_thread_identity: the lock itself */
    _Atomic uint32_t contended;  /* futex word: 1 while a waiter may sleep */
} wh_lock;
#define WH_LOCK_INITIALIZER { NULL, 0 }

/* Slow paths (lock.c). */
void wh_lock_wait(wh_lock *l);   /* spin, then sleep until the lock is taken */
void wh_lock_wake(wh_lock *l);   /* clear `contended` and wake one sleeper */

/* True if the calling thread holds l.  Exact even in a signal handler that
 * interrupted the holder's own lock or unlock. */
static inline bool wh_lock_held(wh_lock *l) {
    return atomic_load_explicit(&l->owner, memory_order_relaxed) == (void *)&wh_thread_identity;
}

/* Take l if it is free.  True if taken; never waits. */
static inline bool wh_lock_try(wh_lock *l) {
    void *expect = NULL;
    return atomic_compare_exchange_strong_explicit(&l->owner, &expect, (void *)&wh_thread_identity,
                                                   memory_order_acquire, memory_order_relaxed);
}

/* Take l, waiting as long as it takes.  Precondition: the caller does not
 * hold l (it would wait for itself forever). */
static inline void wh_lock_acquire(wh_lock *l) {
    if (__builtin_expect(!wh_lock_try(l), 0)) wh_lock_wait(l);
}

/* Release l.  Precondition: the caller holds l.  The owner store is
 * sequentially consistent so that the load of `contended` after it cannot
 * be ordered before it (see the protocol above). */
static inline void wh_lock_release(wh_lock *l) {
    atomic_store_explicit(&l->owner, NULL, memory_order_seq_cst);
    if (__builtin_expect(atomic_load_explicit(&l->contended, memory_order_seq_cst) != 0, 0)) wh_lock_wake(l);
}

/* In a fork child (one thread, the forking one): forget the other threads'
 * waits.  The owner word is left alone: after the fork handlers every lock
 * is free or held by the forking thread. */
static inline void wh_lock_fork_child(wh_lock *l) {
    atomic_store_explicit(&l->contended, 0, memory_order_relaxed);
}

#endif /* WINHEAP_LOCK_H */
