/*
 * heap.c - heap objects: creation and destruction, the registry behind
 * GetProcessHeaps, the recursive heap lock, and the process heap.
 *
 * A heap object lives at the start of its first region, right after the
 * region header, so the handle is the region's 64 KiB-aligned base (SPEC D3,
 * 2.3).  A handle is recognised through the address map (region.c): it must
 * be the base of a live region 0, which is decided without reading the
 * memory the handle points at, so NULL, random, misaligned and destroyed
 * handles are all refused safely.
 *
 * The registry is a list in creation order under registry_lock; the process
 * heap is created first (lazily, at the first call that needs it) and stays
 * first, as GetProcessHeaps requires (D17).
 *
 * The heap lock behaves like a critical section: a wh_lock (lock.h) plus a
 * recursion count (inline in internal.h), so that a thread holding HeapLock
 * can still call the other functions on that heap (SPEC 1.3, D15).  fork()
 * is made safe with pthread_atfork: every winheap lock is taken before the
 * fork and released after it in both processes (the child, which has only
 * the forking thread, also hands back the other threads' LFH caches).  A
 * lock that the forking thread itself holds - a HeapLock of its own, or the
 * heap call that a signal handler calling fork() interrupted - is left as
 * it is: the interrupted call finishes and unlocks when the handler returns,
 * in the parent and in the child alike.
 */
#include "lfh.h"

#include <sched.h>
#include <unistd.h>
#include <stdlib.h>

static wh_lock registry_lock = WH_LOCK_INITIALIZER;
static wh_heap *registry_head, *registry_tail;
static DWORD registry_count;
static _Atomic uint64_t heap_serial;
_Atomic uint64_t wh_destroy_epoch;

static wh_lock process_lock = WH_LOCK_INITIALIZER;
static _Atomic(wh_heap *) process_heap;

/* One byte per thread whose address identifies the thread (lock owner,
 * owner of LFH thread caches; lock.h). */
__thread char wh_thread_identity __attribute__((tls_model("initial-exec")));

/* Switch the low-fragmentation mode on for good (D16).  Only growable,
 * serialized heaps get here. */
void wh_heap_enable_lfh(wh_heap *h) {
    atomic_store_explicit((_Atomic uint32_t *)&h->compat, 2, memory_order_relaxed);
}

/* ---- fork ---- */

/*
 * fork() may be called from a signal handler that interrupted a winheap call
 * of the same thread (RELIABILITY row 24b).  That call may hold any of the
 * locks, may be half way through taking or releasing one, and may be in the
 * middle of an update that the lock protects; its thread is the only one
 * that will run on in the child.  So the handlers below take only the locks
 * that the forking thread does not hold already (wh_lock_held is exact at
 * every instruction, lock.h), remember which ones they took, and release
 * exactly those; the interrupted call keeps its locks, finishes its update
 * when the handler returns and unlocks as usual, in both processes.  A lock
 * the forking thread holds is never waited for (that would wait for
 * itself) and never counted one level deeper (the interrupted call may be
 * between taking a heap lock and setting its recursion to 1).
 *
 * What was taken is recorded in fork_took (the global locks) and in each
 * heap's fork_taken (false outside the handlers).  A field of fork_took is
 * written only by a thread that holds the lock it describes (taken here or
 * held by its interrupted call), a heap's flag only by a thread that holds
 * the registry lock, so two threads forking at once cannot mix them up.
 * If the interrupted call holds the registry lock, it may be
 * linking a new heap in or unlinking one (wh_heap_create/destroy): every
 * single store of those keeps the list walkable from its head, which is all
 * the handlers do with it.
 *
 * Not solved, and not solvable from here: in a process with other threads,
 * a fork from a signal handler whose interrupted call holds a lock that
 * another thread waits for while holding a lock fork_prepare needs (for
 * example the map lock, wanted by a thread inside its own heap's lock)
 * deadlocks; POSIX leaves fork() from a signal handler of a multithreaded
 * process undefined for the same kind of reason.
 */
static struct {
    bool process, registry, map, rng;
} fork_took;

/* Take l unless the calling thread holds it.  True if taken. */
static bool take_unless_held(wh_lock *l) {
    if (wh_lock_held(l)) return false;
    wh_lock_acquire(l);
    return true;
}

/* Release what fork_prepare took, in reverse order.  Runs in the parent and,
 * after the child's own work, in the child. */
static void fork_release(void) {
    if (fork_took.rng) wh_lock_release(wh_harden_rng_lock());
    if (fork_took.map) wh_lock_release(wh_region_map_lock());
    for (wh_heap *h = registry_head; h; h = h->reg_next)
        if (h->fork_taken) {
            h->fork_taken = false;
            wh_lock_release(&h->lock);
        }
    if (fork_took.registry) wh_lock_release(&registry_lock);
    if (fork_took.process) wh_lock_release(&process_lock);
}

/*
 * Take every lock winheap has, so that the child starts with consistent
 * heaps: process_lock, registry_lock, each serialized heap's lock, then the
 * map and seeding locks (both leaves: their holders take no other lock).
 * A thread that holds a heap lock may be waiting for process_lock (its first
 * GetProcessHeap) or registry_lock (HeapCreate inside HeapLock): so the
 * heap locks are only tried, and on a miss everything taken so far is
 * released and the whole round starts again.  Locks the forking thread
 * holds are skipped (see above).
 */
static void fork_prepare(void) {
    for (;;) {
        fork_took.process = take_unless_held(&process_lock);
        fork_took.registry = take_unless_held(&registry_lock);
        wh_heap *h, *stop;
        for (h = registry_head; h; h = h->reg_next) {
            h->fork_taken = false;
            if ((h->flags & HEAP_NO_SERIALIZE) || wh_lock_held(&h->lock)) continue;
            if (!wh_lock_try(&h->lock)) break;
            h->fork_taken = true;
        }
        if (!h) break;
        stop = h;
        for (h = registry_head; h != stop; h = h->reg_next)
            if (h->fork_taken) {
                h->fork_taken = false;
                wh_lock_release(&h->lock);
            }
        if (fork_took.registry) wh_lock_release(&registry_lock);
        if (fork_took.process) wh_lock_release(&process_lock);
        sched_yield();
    }
    fork_took.map = take_unless_held(wh_region_map_lock());
    fork_took.rng = take_unless_held(wh_harden_rng_lock());
}

static void fork_parent(void) { fork_release(); }

/*
 * The child: only the forking thread exists.  Forget the other threads'
 * waits, hand back the LFH caches of the threads that are gone (at once on
 * a heap whose lock fork_prepare took; on a heap whose lock the forking
 * thread held, which may be in the middle of an update, only marked as
 * exited, to be handed back by the next call that needs a group, as after a
 * thread exit), reseed the random stream, then release what fork_prepare
 * took.
 */
static void fork_child(void) {
    wh_lock_fork_child(&process_lock);
    wh_lock_fork_child(&registry_lock);
    wh_lock_fork_child(wh_region_map_lock());
    wh_lock_fork_child(wh_harden_rng_lock());
    for (wh_heap *h = registry_head; h; h = h->reg_next) {
        wh_lock_fork_child(&h->lock);
        if (!(h->flags & HEAP_NO_SERIALIZE)) wh_lfh_fork_child(h, h->fork_taken);
    }
    wh_harden_reseed((uint64_t)getpid());
    fork_release();
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void atfork_install(void) { pthread_atfork(fork_prepare, fork_parent, fork_child); }

/* ---- creation ---- */

static size_t heap_header_bytes(void) { return wh_align_up(sizeof(wh_heap), WH_ALIGN); }

/*
 * Create a heap.  flags are already reduced to the kept ones (D7); sizes are
 * the caller's.  Returns the heap, registered, or NULL with *st = WH_ENOMEM
 * (nothing left behind).  Takes the registry lock.
 */
wh_heap *wh_heap_create(DWORD flags, size_t initial, size_t maximum, wh_status *st) {
    size_t page = wh_prim_page_size();
    size_t hdr = heap_header_bytes();
    wh_options_get(); /* fixes the debug switches before the first block */
    pthread_once(&atfork_once, atfork_install);
    if (initial > WH_MAX_REQUEST || maximum > WH_MAX_REQUEST) {
        *st = WH_ENOMEM;
        return NULL;
    }
    size_t commit = wh_align_up(initial ? initial : 1, page);
    size_t reserve, map_size;
    if (maximum) {
        reserve = wh_align_up(maximum, page);
        if (reserve < hdr + WH_MIN_BLOCK) reserve = wh_align_up(hdr + WH_MIN_BLOCK, page);
        if (commit > reserve) commit = reserve;
        map_size = wh_align_up(reserve, WH_CHUNK);
    } else {
        flags |= HEAP_GROWABLE;
        if (commit < wh_align_up(hdr + WH_MIN_BLOCK, page)) commit = wh_align_up(hdr + WH_MIN_BLOCK, page);
        reserve = map_size = wh_align_up(commit > WH_REGION0_MIN ? commit : WH_REGION0_MIN, WH_CHUNK);
    }
    char *base = wh_region_reserve(map_size, commit, (flags & HEAP_CREATE_ENABLE_EXECUTE) != 0);
    if (!base) {
        *st = WH_ENOMEM;
        return NULL;
    }
    wh_heap *h = (wh_heap *)base;
    /* Fresh pages read as zero: only the non-zero fields need setting. */
    h->region0.magic = WH_REGION_MAGIC ^ (uintptr_t)h;
    h->region0.heap = h;
    h->region0.index = 0;
    h->region0.kind = WH_REGION_BLOCKS;
    h->region0.reserve = reserve;
    h->region0.map_size = map_size;
    h->region0.first = base + hdr;
    h->region0.end = base + commit;
    h->magic = WH_HEAP_MAGIC ^ (uintptr_t)h;
    h->serial = atomic_fetch_add(&heap_serial, 1) + 1;
    h->flags = flags;
    h->max_size = maximum ? reserve : 0;
    wh_harden_init_keys(h); /* the lock: zeroed memory is an unlocked wh_lock */
    h->last_region = &h->region0;
    h->nregions = 1;
    h->next_region_size = reserve * 2 < WH_REGION_MAX ? reserve * 2 : WH_REGION_MAX;
    wh_backend_region_init(h, &h->region0);
    if (wh_region_map_set(base, map_size, (uintptr_t)h) != 0) {
        wh_tool_release(base, commit);
        if (wh_prim.release(base, map_size) != 0) wh_fatal_os("munmap");
        *st = WH_ENOMEM;
        return NULL;
    }
    wh_lock_acquire(&registry_lock);
    /* The fork handlers may walk the list in a signal handler on this
     * thread: h is complete before it becomes reachable. */
    atomic_signal_fence(memory_order_seq_cst);
    h->reg_prev = registry_tail;
    if (registry_tail)
        registry_tail->reg_next = h;
    else
        registry_head = h;
    registry_tail = h;
    registry_count++;
    wh_lock_release(&registry_lock);
    return h;
}

/* Valgrind build: tell memcheck that every live block of h is freed. */
static void tool_free_live_blocks(wh_heap *h) {
    PROCESS_HEAP_ENTRY e;
    bool end = false;
    memset(&e, 0, sizeof e);
    while (wh_walk_next(h, &e, &end) == WH_OK && !end)
        if (e.wFlags & PROCESS_HEAP_ENTRY_BUSY) wh_tool_free(h, e.lpData, 0);
}

/*
 * Destroy a private heap: unregister it, then release every large block and
 * region (region 0, which holds the heap object, last).  The caller checked
 * that h is live and not the process heap; no other thread may use h.
 */
void wh_heap_destroy(wh_heap *h) {
    wh_lock_acquire(&registry_lock);
    if (h->reg_prev)
        h->reg_prev->reg_next = h->reg_next;
    else
        registry_head = h->reg_next;
    if (h->reg_next)
        h->reg_next->reg_prev = h->reg_prev;
    else
        registry_tail = h->reg_prev;
    registry_count--;
    wh_lock_release(&registry_lock);

    atomic_fetch_add(&wh_destroy_epoch, 1);
    if (WH_TOOL_VALGRIND) tool_free_live_blocks(h); /* no leak reports for a destroyed heap */
    wh_large_release_all(h);
    wh_lfh_release_all(h);
    wh_region *r = h->region0.next;
    while (r) {
        wh_region *next = r->next;
        wh_region_release(r);
        r = next;
    }
    wh_region_release(&h->region0);
}

wh_heap *wh_heap_from_handle(HANDLE handle) {
    uintptr_t a = (uintptr_t)handle;
    if (WH_UNLIKELY(!a || (a & (WH_CHUNK - 1)))) return NULL;
    uintptr_t e = wh_region_map_get(handle);
    if (WH_UNLIKELY(e != a)) return NULL; /* not the base of a live region (or a tombstone) */
    wh_heap *h = (wh_heap *)a;
    if (WH_UNLIKELY(h->region0.kind != WH_REGION_BLOCKS || h->region0.index != 0 ||
                    h->magic != (WH_HEAP_MAGIC ^ a)))
        return NULL;
    return h;
}

/* The process heap, created at the first call that needs it; if the system
 * refused the memory then, a later call tries again. */
wh_heap *wh_heap_process(void) {
    wh_heap *h = atomic_load_explicit(&process_heap, memory_order_acquire);
    if (WH_LIKELY(h)) return h;
    wh_options_get();
    wh_lock_acquire(&process_lock);
    h = atomic_load_explicit(&process_heap, memory_order_relaxed);
    if (!h) {
        wh_status st;
        h = wh_heap_create(0, 0, 0, &st);
        if (h && !wh_debug_flags()) wh_heap_enable_lfh(h); /* the LFH from the start, unless debugging */
        atomic_store_explicit(&process_heap, h, memory_order_release);
    }
    wh_lock_release(&process_lock);
    return h;
}

/* Call fn(h) for every registered heap under the registry lock only (h
 * cannot be destroyed meanwhile); fn must take no heap lock. */
void wh_heap_for_each_registered(void (*fn)(wh_heap *)) {
    wh_lock_acquire(&registry_lock);
    for (wh_heap *h = registry_head; h; h = h->reg_next) fn(h);
    wh_lock_release(&registry_lock);
}

/*
 * Call fn(h) with h's lock held, for every serialized heap.  The registry
 * lock is taken before heap locks, but a thread holding HeapLock may be
 * waiting for the registry (HeapCreate inside HeapLock): so a heap lock is
 * only tried, and on a miss everything is released and the walk starts
 * again.  fn must therefore be harmless to repeat on a heap.
 */
void wh_heap_for_each(void (*fn)(wh_heap *)) {
    for (;;) {
        bool missed = false;
        wh_lock_acquire(&registry_lock);
        for (wh_heap *h = registry_head; h; h = h->reg_next) {
            if (h->flags & HEAP_NO_SERIALIZE) continue;
            if (!wh_heap_trylock(h)) {
                missed = true;
                break;
            }
            fn(h);
            wh_heap_unlock(h);
        }
        wh_lock_release(&registry_lock);
        if (!missed) return;
        sched_yield();
    }
}

DWORD wh_heap_list(DWORD n, HANDLE *out) {
    wh_lock_acquire(&registry_lock);
    DWORD total = registry_count, i = 0;
    for (wh_heap *h = registry_head; h && i < n && out; h = h->reg_next) out[i++] = (HANDLE)h;
    wh_lock_release(&registry_lock);
    return total;
}
