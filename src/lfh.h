/*
 * lfh.h - the low-fragmentation front end: structures and the hot paths.
 *
 * Requests of up to 16 KiB on growable, serialized heaps whose
 * HeapCompatibilityInformation is 2 are served from groups of equal slots
 * (SPEC 6, D16).  A group is a 64 KiB-aligned run of 1, 2 or 4 chunks of an
 * LFH segment (a 4 MiB region of its own); every chunk of a group is
 * published in the address map as (group | 2), so a pointer finds its group
 * with one map lookup and no header in front of the block.
 *
 * Each group belongs to one thread cache (wh_tlh: one per thread and heap).
 * The owner allocates from and frees to the group's free list with plain
 * loads and stores; other threads push their frees onto the group's atomic
 * thread-free list (free-list sharding), which the owner collects when its
 * list runs dry, before taking fresh slots.  The owner's newest free waits
 * in a one-slot delay register (`delay`) and joins the free list only at
 * the owner's next free of the group (or after the slow path's next pop), so
 * a freed block is never handed back by the allocation that follows its
 * free; fresh slots come out in a
 * random order within windows of 16 slots.  Per slot, one byte (two for slots of 256
 * bytes and more) of out-of-band metadata holds 0 for a free slot, else
 * 1 + (slot size - requested size): the exact HeapSize without a header, the
 * busy/free state that HeapWalk, HeapValidate and double-free detection read,
 * all with relaxed atomics so that a walk under HeapLock is safe while owners
 * keep allocating (D15).
 *
 * Free-list links are stored XOR-ed with a per-heap key and checked (inside
 * the group, on a slot boundary, slot marked free) before they are followed.
 */
#ifndef WINHEAP_LFH_H
#define WINHEAP_LFH_H

#include "internal.h"

#define WH_LFH_NCLASSES 64
#define WH_SEG_CHUNKS 64
#define WH_SEG_SIZE ((size_t)WH_SEG_CHUNKS << WH_CHUNK_SHIFT) /* 4 MiB */
#define WH_MAP_GROUP ((uintptr_t)2)                           /* address-map tag of a group chunk */
#define WH_GROUP_MAGIC 0x5748475250303031ull                  /* "WHGRP001" */
#define WH_SEG_MAGIC 0x5748534547303031ull                    /* "WHSEG001" */

enum { WH_GROUP_OWNED = 1, WH_GROUP_ABANDONED = 2, WH_GROUP_POOLED = 3 };

struct wh_tlh;

typedef struct wh_group {
    /* cache line 0: everything the owner's allocation and free read */
    struct wh_heap *heap;
    _Atomic(struct wh_tlh *) owner; /* owning thread cache; NULL if abandoned or pooled */
    uintptr_t free_list;            /* encoded head of the free slots the owner allocates from (LIFO) */
    uintptr_t delay;                /* the owner's newest free (plain address), on no list until the next free */
    uintptr_t key;                  /* link key (heap->key_link) */
    uint64_t recip;                 /* ceil(2^48 / slot_size): slot index by multiplication */
    uint32_t slots_off;             /* offset of slot 0 from the group */
    uint16_t slot_size;             /* (<= WH_LFH_MAX) */
    uint16_t zero;                  /* 1: zero on free and check on reuse (wh_zero_on_free() when laid out) */
    uint32_t nslots;
    uint32_t used;                  /* busy slots as the owner counts them (owner only) */
    /* cache line 1 and on: the slow paths */
    uint64_t magic;                 /* WH_GROUP_MAGIC ^ address ^ heap key */
    _Atomic uintptr_t thread_free;  /* encoded head of frees from other threads */
    struct wh_lfh_seg *seg;
    struct wh_group *next, *prev;   /* owner's class list, the heap's abandoned list, or the pool */
    uint64_t seed;                  /* randomizes the order of fresh slots */
    _Atomic uint32_t bump;          /* fresh slots start here (in shuffled order, see wh_group_handed) */
    _Atomic uint32_t state;         /* WH_GROUP_* */
    uint16_t cls;                   /* the class it is laid out for (kept in the pool) */
    uint8_t chunks;                 /* 1, 2 or 4 */
    uint8_t meta_width;             /* 1 or 2 bytes per slot */
    uint32_t seed_gen;              /* wh_harden_generation() when `seed` was drawn */
    _Atomic uint8_t meta[];         /* per slot: 0 free, else 1 + slot_size - requested */
} wh_group;
_Static_assert(offsetof(wh_group, magic) == 64, "the hot fields of a group fill one cache line");

static inline char *wh_group_slots(const wh_group *g) { return (char *)g + g->slots_off; }

typedef struct wh_lfh_seg {
    wh_region r;                    /* kind WH_REGION_LFH; chunk 0 holds this header and thread caches */
    uint64_t magic;
    struct wh_lfh_seg *next;        /* the heap's segment list, creation order */
    uint64_t used;                  /* bit i: chunk i belongs to a group (bit 0: the header chunk) */
    uint64_t committed;             /* bit i: chunk i is committed */
    size_t meta_used;               /* bytes of chunk 0 handed out to thread caches */
} wh_lfh_seg;

/* One thread's cache for one heap. */
typedef struct wh_tlh {
    struct wh_heap *heap;
    _Atomic(void *) thread;         /* owner thread identity; NULL once the thread exited (reusable) */
    struct wh_tlh *next;            /* the heap's list of thread caches */
    wh_group *cur[WH_LFH_NCLASSES]; /* the group each class allocates from */
    wh_group *list[WH_LFH_NCLASSES];/* the other groups owned per class */
    /* What the slow paths did (written by the owner only, read by
     * wh_lfh_counts): entries of wh_lfh_alloc_slow, groups laid out for a
     * class (from the pool or new memory), groups carved from new memory. */
    _Atomic uint64_t n_slow, n_layout, n_carve;
} wh_tlh;

/* The slow-path counters of every thread cache of h, summed (monotonic:
 * a released cache keeps its counts).  No lock. */
typedef struct wh_lfh_counts {
    uint64_t slow, layout, carve;
} wh_lfh_counts;
void wh_lfh_counts_get(wh_heap *h, wh_lfh_counts *out);
static inline void wh_count(_Atomic uint64_t *c) {
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
}

extern __thread char wh_thread_identity __attribute__((tls_model("initial-exec")));

/* ---- size classes: 16..128 in steps of 16, then 8 per doubling ----
 * Every class boundary up to 1 KiB is a multiple of 16, so the hot path
 * reads those classes from a table by (size + 15) / 16; larger sizes take
 * the formula.  tests/test_lfh.c checks that both agree for every size. */
static inline unsigned wh_lfh_class_calc(size_t size) {
    if (size <= 128) return size ? (unsigned)((size - 1) >> 4) : 0;
    size_t s = size - 1;
    unsigned fl = 63u - (unsigned)__builtin_clzll((unsigned long long)s);
    return 8u + (fl - 7u) * 8u + ((unsigned)(s >> (fl - 3)) & 7u);
}
#define WH_LFH_CLASS_TABLE_MAX 1024
static const uint8_t wh_lfh_class_table[WH_LFH_CLASS_TABLE_MAX / 16 + 1] = {
    0,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 16, 17, 17, 18,
    18, 19, 19, 20, 20, 21, 21, 22, 22, 23, 23, 24, 24, 24, 24, 25, 25, 25, 25, 26, 26, 26,
    26, 27, 27, 27, 27, 28, 28, 28, 28, 29, 29, 29, 29, 30, 30, 30, 30, 31, 31, 31, 31,
};
static inline unsigned wh_lfh_class(size_t size) {
    if (WH_LIKELY(size <= WH_LFH_CLASS_TABLE_MAX)) return wh_lfh_class_table[(size + 15) >> 4];
    return wh_lfh_class_calc(size);
}
static inline size_t wh_lfh_class_size(unsigned c) {
    if (c < 8) return (size_t)(c + 1) << 4;
    unsigned fl = 7u + (c - 8u) / 8u, sub = (c - 8u) % 8u;
    return (size_t)(9u + sub) << (fl - 3u);
}

/* ---- slot metadata ---- */
static inline unsigned wh_group_meta(const wh_group *g, uint32_t i) {
    if (g->meta_width == 1) return atomic_load_explicit(&g->meta[i], memory_order_relaxed);
    return atomic_load_explicit((_Atomic uint16_t *)__builtin_assume_aligned((void *)&g->meta[2 * i], 2), memory_order_relaxed);
}
static inline void wh_group_meta_set(wh_group *g, uint32_t i, unsigned v) {
    if (g->meta_width == 1)
        atomic_store_explicit(&g->meta[i], (uint8_t)v, memory_order_relaxed);
    else
        atomic_store_explicit((_Atomic uint16_t *)__builtin_assume_aligned((void *)&g->meta[2 * i], 2), (uint16_t)v, memory_order_relaxed);
}
static inline unsigned wh_group_meta_take(wh_group *g, uint32_t i) {
    if (g->meta_width == 1) return atomic_exchange_explicit(&g->meta[i], 0, memory_order_acq_rel);
    return atomic_exchange_explicit((_Atomic uint16_t *)__builtin_assume_aligned((void *)&g->meta[2 * i], 2), 0, memory_order_acq_rel);
}

/* The metadata value of a slot that another thread freed and that waits on
 * the group's thread-free list for its owner to scrub it (lfh.c collect):
 * free to every check, not yet zeroed.  Above every size value (1 +
 * slot_size <= 241 for 1-byte metadata, <= 16385 for 2-byte). */
static inline unsigned wh_meta_pending(const wh_group *g) { return g->meta_width == 1 ? 0xFFu : 0xFFFFu; }
/* Metadata from `expect` to `v` if it still holds `expect`; false if not. */
static inline bool wh_group_meta_cas(wh_group *g, uint32_t i, unsigned expect, unsigned v) {
    if (g->meta_width == 1) {
        uint8_t e = (uint8_t)expect;
        return atomic_compare_exchange_strong_explicit(&g->meta[i], &e, (uint8_t)v, memory_order_acq_rel, memory_order_relaxed);
    }
    uint16_t e = (uint16_t)expect;
    return atomic_compare_exchange_strong_explicit((_Atomic uint16_t *)__builtin_assume_aligned((void *)&g->meta[2 * i], 2), &e,
                                                   (uint16_t)v, memory_order_acq_rel, memory_order_relaxed);
}

/* Slots [0, hi) may have been handed out: fresh slots come out in a
 * shuffled order within windows of 16, so the bound is bump rounded up. */
#define WH_LFH_WINDOW 16u
static inline uint32_t wh_group_handed(const wh_group *g) {
    uint32_t b = atomic_load_explicit(&g->bump, memory_order_relaxed);
    uint32_t hi = (b + WH_LFH_WINDOW - 1) & ~(WH_LFH_WINDOW - 1);
    return hi < g->nslots ? hi : g->nslots;
}

/* Index of the slot that starts at p, or UINT32_MAX if p is not a slot start. */
static inline uint32_t wh_group_index(const wh_group *g, const void *p) {
    uintptr_t off = (uintptr_t)p - (uintptr_t)wh_group_slots(g);
    uint32_t i = (uint32_t)((off * g->recip) >> 48);
    if (WH_UNLIKELY((uintptr_t)p < (uintptr_t)wh_group_slots(g) || i >= g->nslots || (uintptr_t)i * g->slot_size != off))
        return UINT32_MAX;
    return i;
}

static inline wh_group *wh_lfh_group_of_entry(uintptr_t e) {
    return (e & 3) == WH_MAP_GROUP ? (wh_group *)(e & ~(uintptr_t)3) : NULL;
}

/* ---- lfh.c ---- */
void *wh_lfh_alloc_slow(wh_tlh *t, unsigned cls, size_t size);
wh_status wh_lfh_free_remote(wh_group *g, uint32_t i, void *p);
/* The calling thread's cache for h (creating it); NULL if out of memory. */
wh_tlh *wh_lfh_tlh(wh_heap *h);
/* HeapSize / HeapValidate of a slot: WH_OK and the requested size. */
wh_status wh_lfh_lookup(wh_group *g, const void *p, size_t *requested);
/* Resize slot p in place to `size` if it fits the slot (WH_OK) else WH_ENOMEM;
 * a slot that is not a live block: wh_lfh_lookup's status.  *old gets the
 * size before the call whenever p is a live block.  No lock. */
wh_status wh_lfh_resize(wh_group *g, void *p, size_t size, size_t *old);
void wh_lfh_release_all(wh_heap *h);
bool wh_lfh_is_valid(wh_heap *h);
void wh_lfh_summary(wh_heap *h, size_t *allocated, size_t *committed, size_t *reserved);
/* Walk support: fill e with the element after the LFH element lpData
 * (REGION of a segment or a slot), or the first element of segment s. */
wh_status wh_lfh_walk_next(wh_heap *h, PROCESS_HEAP_ENTRY *e, bool *end, bool *past);
void wh_lfh_walk_region(wh_lfh_seg *s, PROCESS_HEAP_ENTRY *e);
/* The calling thread is exiting: mark its caches free (their groups are
 * handed back later, under the heap lock).  Takes the registry lock. */
void wh_lfh_thread_exit(void);
/* Fork child, from heap.c's handler: repair the groups of the threads that
 * are gone and hand their caches back (hand_back: fork_prepare took h's
 * lock) or only mark them as exited (the forking thread holds h's lock and
 * may be in the middle of an update of h's lists). */
void wh_lfh_fork_child(wh_heap *h, bool hand_back);

/* ---- zero on free ----
 * A freed slot is zeroed past its link word, so no data passes from one
 * owner to the next; a slot handed out again is checked for a write after
 * free (HeapValidate checks every byte of every free slot). */
/* 16-byte vectors for the scrub and the check: 16 bytes per instruction
 * (SSE2 on x86-64).  The accesses are volatile so that the compilers keep
 * them inline (never a call to the memset that ASan or a preloaded library
 * intercepts) and never drop them as dead stores. */
typedef uint64_t wh_v16 __attribute__((vector_size(16), aligned(16)));

/* From this size on a scrub looks at whole pages first (lfh.c). */
#define WH_SCRUB_BIG ((size_t)3 << 12)

/* Zero [p+8, p+n) (rounded up to 16 bytes, which stays inside the slot:
 * slots are 16-byte multiples).  n is the block's requested size: the slack
 * after it was zero when the slot was handed out.  (Measured on this
 * machine, 2026-11-25: the stores dominate; clamped, unrolled variants that
 * avoid the data-dependent loop exit were slower for mid-size blocks.) */
void wh_lfh_scrub_big(char *p, size_t n);
/* Zero [p+16, p+n) rounded up to 16 bytes; inside wh_tool_enter/leave. */
WH_NO_ASAN static inline void wh_lfh_zero_from16(char *p, size_t n) {
    const wh_v16 z = { 0, 0 };
    for (size_t o = 16; o < n; o += 16) *(volatile wh_v16 *)(p + o) = z;
}
WH_NO_ASAN static inline void wh_lfh_scrub(const wh_group *g, char *p, size_t n) {
    if (!WH_ZERO_ON_FREE || !g->zero || n <= 8) return;
    if (WH_UNLIKELY(n >= WH_SCRUB_BIG)) {
        wh_lfh_scrub_big(p, n);
        return;
    }
    wh_tool_enter();
    *(volatile uint64_t *)(p + 8) = 0;
    wh_lfh_zero_from16(p, n);
    wh_tool_leave();
}
/* The owner's free of p with hardening: as wh_lfh_scrub, but the link word
 * is zeroed too (by the first 16-byte store; without zero on free, alone),
 * since p waits in the delay register before it is listed. */
WH_NO_ASAN static inline void wh_lfh_scrub_freed(const wh_group *g, char *p, size_t n) {
    if (!WH_ZERO_ON_FREE || !g->zero || WH_UNLIKELY(n >= WH_SCRUB_BIG)) {
        wh_link_store(p, 0);
        wh_lfh_scrub(g, p, n);
        return;
    }
    wh_tool_enter();
    *(volatile wh_v16 *)p = (wh_v16){ 0, 0 };
    wh_lfh_zero_from16(p, n);
    wh_tool_leave();
}

/* The slot in g's delay register joins its free list, unless its link word
 * was written after its free: then it is reported from `func` (D5) and
 * kept off every list.  The register is left empty.  Caller owns g, or
 * holds the heap lock and g has no owner. */
static inline void wh_lfh_delay_flush(wh_group *g, const char *func) {
    uintptr_t d = g->delay;
    if (!d) return;
    g->delay = 0;
    if (WH_UNLIKELY(wh_link_load((void *)d) != 0)) {
        wh_report_corruption(func, (void *)d, WH_ELIST);
        return;
    }
    wh_link_store((void *)d, g->free_list);
    g->free_list = d ^ g->key;
}
/* Slot p of g is clean: slots up to 256 bytes are checked whole (past the
 * link word), bigger ones on their first 256 bytes and their last word. */
WH_NO_ASAN static inline bool wh_lfh_clean(const wh_group *g, const char *p) {
    if (!WH_ZERO_ON_FREE || !g->zero) return true;
    size_t slot = g->slot_size, n = slot <= 256 ? slot : 256;
    wh_tool_enter();
    wh_v16 a = { *(const volatile uint64_t *)(p + 8), *(const volatile uint64_t *)(p + slot - 8) };
    for (size_t o = 16; o < n; o += 16) a |= *(const volatile wh_v16 *)(p + o);
    wh_tool_leave();
    return (a[0] | a[1]) == 0;
}

/* ---- hot paths ---- */

/* Allocate `size` (<= WH_LFH_MAX) bytes from the head of thread cache t's
 * current group of its class; NULL when that needs the slow path (which
 * this never calls, so that a caller's fast path makes no call at all). */
static inline void *wh_lfh_alloc_fast(wh_tlh *t, size_t size) {
    unsigned c = wh_lfh_class(size + WH_TOOL_RZ);
    wh_group *g = t->cur[c];
    if (WH_LIKELY(g != NULL && g->free_list != 0)) {
        char *p = (char *)(g->free_list ^ g->key);
        uint32_t i = wh_group_index(g, p);
#if WH_LFH_HARDEN
        if (WH_LIKELY(i != UINT32_MAX && wh_group_meta(g, i) == 0 && wh_lfh_clean(g, p))) {
            g->free_list = wh_link_load(p);
#else
        if (WH_LIKELY(wh_lfh_clean(g, p))) {
            g->free_list = wh_link_load(p);
#endif
            /* The next allocation's slot: the list runs through the slots
             * themselves, so without this each allocation would wait for
             * the line of the next (shuffled, not sequential) slot. */
            __builtin_prefetch((const void *)(g->free_list ^ g->key));
            wh_link_store(p, 0);
            wh_group_meta_set(g, i, 1u + g->slot_size - (unsigned)size);
            g->used++;
            wh_tool_alloc(g->heap, p, size, g->slot_size);
            return p;
        }
    }
    return NULL;
}

/* Allocate `size` (<= WH_LFH_MAX) bytes from thread cache t.  NULL on failure. */
static inline void *wh_lfh_alloc(wh_tlh *t, size_t size) {
    void *p = wh_lfh_alloc_fast(t, size);
    if (WH_LIKELY(p != NULL)) return p;
    return wh_lfh_alloc_slow(t, wh_lfh_class(size + WH_TOOL_RZ), size);
}

/* Free slot p of group g (whose heap was checked by the caller). */
static inline wh_status wh_lfh_free(wh_group *g, void *p) {
    uint32_t i = wh_group_index(g, p);
    if (WH_UNLIKELY(i == UINT32_MAX)) return WH_EINVALID;
    wh_tlh *o = atomic_load_explicit(&g->owner, memory_order_relaxed);
    /* The owner's path; a damaged group header cannot name this thread as
     * owner, and the remote path checks the group's magic. */
    if (WH_LIKELY(o != NULL && atomic_load_explicit(&o->thread, memory_order_relaxed) == (void *)&wh_thread_identity)) {
        /* An exchange, not a load and a store: two threads freeing the same
         * block at once must not both succeed. */
        unsigned m = wh_group_meta_take(g, i);
        if (WH_UNLIKELY(m - 1u > g->slot_size)) { /* free (0), pending or damaged */
            if (m) wh_group_meta_set(g, i, m);
            return m == 0 || m == wh_meta_pending(g) ? WH_EDOUBLE : WH_EHEADER;
        }
        if (WH_LFH_HARDEN)
            wh_lfh_scrub_freed(g, p, g->slot_size + 1 - m); /* the bytes the program could write, link word too */
        else
            wh_lfh_scrub(g, p, g->slot_size + 1 - m);
        wh_tool_free(g->heap, p, g->slot_size);
        if (WH_LFH_HARDEN) {
            /* p waits in the delay register (link word 0) until the
             * owner's next free of this group or its slow path's next pop,
             * so the next allocation cannot hand it back; the slot it
             * replaces there joins the list now. */
            wh_lfh_delay_flush(g, "HeapFree");
            g->delay = (uintptr_t)p;
        } else {
            wh_link_store(p, g->free_list);
            g->free_list = (uintptr_t)p ^ g->key;
        }
        g->used--; /* an empty group is handed back by the owner's next slow path */
        return WH_OK;
    }
    return wh_lfh_free_remote(g, i, p);
}

#endif /* WINHEAP_LFH_H */
