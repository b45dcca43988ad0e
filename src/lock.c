/*
 * lock.c - the slow paths of winheap's lock (lock.h): waiting for a lock
 * that another thread holds, and waking a waiter at unlock.
 *
 * A waiter first spins a little (a heap lock is usually held for well under
 * a microsecond), then sleeps on the lock's `contended` futex word.  Before
 * each attempt it sets `contended` to 1, so the holder's unlock knows that
 * it must wake someone; it sleeps only while the word still reads 1, so an
 * unlock that came in between (and cleared it) is never missed.  The
 * protocol and why nothing is lost: lock.h.
 */
#include "internal.h"

#define SPINS 100

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

/*
 * Take l, which the fast path found held.  Precondition: the caller does not
 * hold l.  Returns with l held; never fails.  A signal handler may run at
 * any point of the wait: until the compare-and-swap that takes the lock
 * succeeds, the owner word is not this thread's, and wh_lock_held says so.
 */
void wh_lock_wait(wh_lock *l) {
    WH_ASSERT(!wh_lock_held(l));
    for (int i = 0; i < SPINS; i++) {
        cpu_relax();
        if (atomic_load_explicit(&l->owner, memory_order_relaxed) == NULL && wh_lock_try(l)) return;
    }
    void *self = (void *)&wh_thread_identity;
    for (;;) {
        atomic_store_explicit(&l->contended, 1, memory_order_seq_cst);
        void *expect = NULL;
        if (atomic_compare_exchange_strong_explicit(&l->owner, &expect, self, memory_order_seq_cst,
                                                    memory_order_seq_cst))
            return; /* `contended` stays 1: our unlock wakes the next sleeper, if any */
        wh_prim_futex_wait(&l->contended, 1);
    }
}

/* Called by wh_lock_release after it cleared the owner and read `contended`
 * as 1: clear it and wake one sleeper.  If another unlock cleared it first,
 * that one did the wake. */
void wh_lock_wake(wh_lock *l) {
    if (atomic_exchange_explicit(&l->contended, 0, memory_order_seq_cst) != 0) wh_prim_futex_wake(&l->contended, 1);
}
