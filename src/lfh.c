/*
 * lfh.c - the low-fragmentation front end: segments, groups, thread caches
 * (the slow paths; the hot paths are static inline in lfh.h).
 *
 * Memory: an LFH segment is a 4 MiB region reserved for the heap; its first
 * 64 KiB chunk holds the segment header and the thread caches (wh_tlh), the
 * other 63 chunks are carved into groups of 1, 2 or 4 chunks (bigger slots
 * get bigger groups so that few bytes are lost at a group's end).  A group's
 * chunks are committed when it is first carved and stay committed (a page
 * fault costs more than keeping the page, SPEC D8); an empty group goes back
 * to the heap's pool and is reused by any class of the same group size and
 * by any thread.
 *
 * Ownership: a group belongs to one thread cache at a time.  When a thread
 * exits (pthread key destructor) its caches are marked free, taking no heap
 * lock (a thread that holds HeapLock may be waiting for the registry);
 * their groups are handed back under the heap lock by the next thread that
 * needs a cache or a group in that heap: empty ones to the pool, the others
 * to the heap's per-class abandoned list, from which the next thread that
 * needs a group of that class adopts them, collecting the frees that other
 * threads made in the meantime.  Frees by other threads
 * never wait: they mark the slot "pending" with a compare-and-swap on its
 * metadata (which is also what catches two threads freeing the same block),
 * leave the requested size in the slot's second word and push it on the
 * group's thread-free list with a compare-and-swap.  They do not zero the
 * body: the owner does when it collects the list (collect), in its own
 * cache, before the slot can be handed out again.  (A write after free into
 * a pending slot is therefore scrubbed rather than reported.)
 *
 * Locking: the owner's paths take no lock.  Getting, adopting and retiring
 * groups, creating segments and thread caches, walking, validating and
 * summarizing run under the heap lock (LFH heaps are always serialized).
 */
#include "lfh.h"

#include <stdlib.h>

static pthread_key_t exit_key;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;
static __thread int exit_key_set;

/* A small per-thread table from heap serial to this thread's cache.  The
 * serial is kept here, so a destroyed heap's entry is never dereferenced. */
#define TL_CACHE 8
static __thread struct {
    uint64_t serial;
    wh_tlh *tlh;
} tl_cache[TL_CACHE];
static __thread unsigned tl_next;

/* ---- zero on free of big blocks ---- */

/* Zero [p+8, p+n) of a block of WH_SCRUB_BIG bytes or more.  Every whole
 * page inside it is read first and written only if it holds something:
 * a page the program never touched is not resident, reading it maps the
 * kernel's shared zero page, and writing it would make it resident (a
 * 12 KiB block whose first and last bytes were written has one such page).
 * The bytes are the same zeros either way.  No lock; p is a slot that no
 * one else uses. */
WH_NO_ASAN void wh_lfh_scrub_big(char *p, size_t n) {
    size_t page = wh_prim_page_size();
    /* p is 16-byte aligned and the slot holds n rounded up to 16 */
    char *end = p + wh_align_up(n, sizeof(wh_v16));
    char *first = (char *)wh_align_up((uintptr_t)p + 16, page), *last = (char *)((uintptr_t)end & ~(uintptr_t)(page - 1));
    wh_tool_enter();
    *(volatile uint64_t *)(p + 8) = 0;
    for (volatile wh_v16 *w = (volatile wh_v16 *)(p + 16); w < (volatile wh_v16 *)first; w++) *w = (wh_v16){ 0, 0 };
    for (char *pg = first; pg < last; pg += page) {
        const volatile wh_v16 *v = (const volatile wh_v16 *)pg;
        size_t k = 0, nv = page / sizeof(wh_v16);
        while (k < nv) {
            wh_v16 a = v[k];
            if (a[0] | a[1]) break;
            k++;
        }
        for (volatile wh_v16 *w = (volatile wh_v16 *)pg + k; k < nv; k++, w++) *w = (wh_v16){ 0, 0 };
    }
    for (volatile wh_v16 *w = (volatile wh_v16 *)last; w < (volatile wh_v16 *)end; w++) *w = (wh_v16){ 0, 0 };
    wh_tool_leave();
}

/* ---- links ---- */

/* The key of h's groups: links and magic are encoded with it (0 only in
 * the measurement build without LFH hardening). */
static inline uint64_t group_key(const wh_heap *h) { return WH_LFH_HARDEN ? h->key_link : 0; }

static inline uintptr_t enc(const wh_group *g, const void *p) { return p ? (uintptr_t)p ^ g->key : 0; }

static bool slot_was_handed(const wh_group *g, uint32_t i);

/* Decode a stored link of group g; false if it does not name a free slot
 * start of g. */
static bool dec(const wh_group *g, uintptr_t stored, char **out, uint32_t *idx) {
    if (!stored) {
        *out = NULL;
        return true;
    }
    char *p = (char *)(stored ^ g->key);
    uint32_t i = wh_group_index(g, p);
    if (i == UINT32_MAX || i >= wh_group_handed(g) || wh_group_meta(g, i) != 0 || !slot_was_handed(g, i)) return false;
    *out = p;
    *idx = i;
    return true;
}

/* ---- segments ---- */

static size_t seg_header_bytes(void) { return wh_align_up(sizeof(wh_lfh_seg), 64); }

/* New segment for h; caller holds the heap lock.  NULL on failure. */
static wh_lfh_seg *seg_new(wh_heap *h) {
    char *base = wh_region_reserve(WH_SEG_SIZE, WH_CHUNK, false);
    if (!base) return NULL;
    wh_lfh_seg *s = (wh_lfh_seg *)base;
    s->r.magic = WH_REGION_MAGIC ^ (uintptr_t)s;
    s->r.heap = h;
    s->r.index = h->lfh_tail ? h->lfh_tail->r.index + 1 : 0; /* walked after the BLOCKS regions */
    s->r.kind = WH_REGION_LFH;
    s->r.reserve = s->r.map_size = WH_SEG_SIZE;
    s->r.first = base + WH_CHUNK;
    s->r.end = base + WH_SEG_SIZE;
    s->magic = WH_SEG_MAGIC ^ (uintptr_t)s;
    s->used = 1;
    s->committed = 1;
    s->meta_used = seg_header_bytes();
    if (wh_region_map_set(base, WH_SEG_SIZE, (uintptr_t)s) != 0) {
        if (wh_prim.release(base, WH_SEG_SIZE) != 0) wh_fatal_os("munmap");
        return NULL;
    }
    if (h->lfh_tail)
        h->lfh_tail->next = s;
    else
        h->lfh_head = s;
    h->lfh_tail = s;
    return s;
}

/* First run of k free chunks in s, or -1. */
static int seg_find_run(const wh_lfh_seg *s, unsigned k) {
    uint64_t mask = (k == 64) ? ~0ull : ((1ull << k) - 1);
    for (unsigned i = 1; i + k <= WH_SEG_CHUNKS; i += k)
        if (!(s->used & (mask << i))) return (int)i;
    return -1;
}

static unsigned group_chunks_for(size_t slot) { return slot <= 512 ? 1 : slot <= 2048 ? 2 : 4; }
static unsigned pool_index(unsigned chunks) { return chunks == 1 ? 0 : chunks == 2 ? 1 : 2; }

/* Where the group's chunks start (its header is a few cache lines in). */
static inline char *group_base(const wh_group *g) { return (char *)((uintptr_t)g & ~(uintptr_t)(WH_CHUNK - 1)); }

/* Lay out the group whose header is at `old` (k chunks from its base, which
 * are zero past that header) for class c; returns the group, whose header
 * may have moved.  Caller holds the lock and no list holds the group.
 *
 * Cache colouring: every group would otherwise put its header and slot
 * metadata at a 64 KiB-aligned address, and all of those share a few cache
 * sets; the header goes up to 15 cache lines (by chunk number) into the
 * first chunk.  The offset comes only out of the slack that the slots leave
 * at the end anyway, so colouring never costs a slot (before 2026-12-07 it
 * cost up to 960 bytes a group: a 16-byte block took 17.2 bytes, now 17.05;
 * 16-byte groups, which leave almost no slack, are not coloured). */
static wh_group *group_init(wh_heap *h, wh_lfh_seg *s, wh_group *old, unsigned k, unsigned c) {
    char *base = group_base(old);
    size_t slot = wh_lfh_class_size(c);
    size_t span = (size_t)k << WH_CHUNK_SHIFT;
    unsigned width = slot <= 254 ? 1 : 2; /* the byte must hold 1 + slot - 0 */
    size_t hdr = sizeof(wh_group);
    size_t n = (span - hdr) / (slot + width);
    while (n && wh_align_up(hdr + n * width, WH_ALIGN) + n * slot > span) n--;
    size_t slack = span - (wh_align_up(hdr + n * width, WH_ALIGN) + n * slot);
    size_t colour = (size_t)(((uintptr_t)base >> WH_CHUNK_SHIFT) % 16) * 64;
    if (colour > slack) colour = slack & ~(size_t)63;
    wh_group *g = (wh_group *)(base + colour);
    size_t total = span - colour; /* from g to the end */
    wh_tool_release(base, span); /* a pooled group's old slots become metadata */
    if (g != old) {
        memset((void *)old, 0, hdr); /* the old header may lie in the new metadata or slots */
        /* (the segment's map pages exist already: this cannot fail) */
        (void)wh_region_map_set(base, span, (uintptr_t)g | WH_MAP_GROUP);
    }
    g->magic = WH_GROUP_MAGIC ^ (uintptr_t)g ^ group_key(h);
    g->heap = h;
    g->seg = s;
    atomic_store_explicit(&g->owner, NULL, memory_order_relaxed);
    g->next = g->prev = NULL;
    atomic_store_explicit(&g->thread_free, 0, memory_order_relaxed);
    g->free_list = 0;
    g->delay = 0;
    g->key = group_key(h);
    g->seed = wh_harden_random64() | 1;
    g->seed_gen = wh_harden_generation();
    g->slots_off = (uint32_t)wh_align_up(hdr + n * width, WH_ALIGN);
    g->slot_size = (uint16_t)slot;
    g->zero = wh_zero_on_free();
    g->nslots = (uint32_t)n;
    g->recip = (((uint64_t)1 << 48) + slot - 1) / slot;
    atomic_store_explicit(&g->bump, 0, memory_order_relaxed);
    g->used = 0;
    g->cls = (uint16_t)c;
    g->chunks = (uint8_t)k;
    g->meta_width = (uint8_t)width;
    atomic_store_explicit(&g->state, WH_GROUP_OWNED, memory_order_relaxed);
    memset((void *)g->meta, 0, n * width);
    wh_tool_noaccess(wh_group_slots(g), total - g->slots_off);
    return g;
}

/* Carve a new group of k chunks; caller holds the lock.  NULL on failure. */
static wh_group *group_carve(wh_heap *h, unsigned k) {
    wh_lfh_seg *s;
    int at = -1;
    for (s = h->lfh_head; s; s = s->next)
        if ((at = seg_find_run(s, k)) >= 0) break;
    if (!s) {
        s = seg_new(h);
        if (!s) return NULL;
        at = seg_find_run(s, k);
    }
    uint64_t bits = (((k == 64) ? ~0ull : ((1ull << k) - 1))) << at;
    char *base = (char *)s + ((size_t)at << WH_CHUNK_SHIFT);
    if ((s->committed & bits) != bits) {
        if (wh_os_commit(base, (size_t)k << WH_CHUNK_SHIFT, (h->flags & HEAP_CREATE_ENABLE_EXECUTE) != 0) != 0)
            return NULL;
        s->committed |= bits;
    }
    s->used |= bits;
    wh_group *g = (wh_group *)base; /* group_init colours it */
    g->seg = s;
    g->chunks = (uint8_t)k;
    /* The segment's map pages exist already: this cannot fail. */
    (void)wh_region_map_set(base, (size_t)k << WH_CHUNK_SHIFT, (uintptr_t)g | WH_MAP_GROUP);
    return g;
}

/* ---- collecting remote frees ---- */

/* Move g's thread-free list onto its free list; caller owns g (or holds
 * the heap lock and g has no owner).  A damaged link ends the collection
 * (the rest is dropped, never followed) and is reported. */
static void collect(wh_group *g) {
    uintptr_t head = atomic_exchange_explicit(&g->thread_free, 0, memory_order_acquire);
    uint32_t n = 0;
    while (head && n < g->nslots) {
        char *p = (char *)(head ^ g->key);
        uint32_t i = wh_group_index(g, p);
        if (i == UINT32_MAX || i >= wh_group_handed(g) || wh_group_meta(g, i) != wh_meta_pending(g)) {
            wh_report_corruption("HeapAlloc", p, WH_ELIST);
            break;
        }
        head = wh_link_load(p);
        /* The requested size the freeing thread left at p + 8 (a damaged
         * one only makes the scrub cover the whole slot). */
        size_t req = wh_link_load(p + 8);
        wh_lfh_scrub(g, p, req < 16 ? 16 : req < g->slot_size ? req : g->slot_size); /* (16: the size word goes too) */
        wh_group_meta_set(g, i, 0);
        wh_link_store(p, g->free_list);
        g->free_list = enc(g, p);
        n++;
    }
    g->used -= n < g->used ? n : g->used;
}

/* Slot index of the k-th fresh slot: a keyed permutation within each full
 * window of 16 slots (multiply by an odd number, then xor: both bijective
 * modulo 16), sequential in a last partial window. */
typedef struct fresh_perm {
    uint32_t base, mul, mask; /* mul 0: no shuffle (a last partial window) */
} fresh_perm;
static inline fresh_perm fresh_window(const wh_group *g, uint32_t k) {
    fresh_perm w = { k & ~(WH_LFH_WINDOW - 1), 0, 0 };
    if (!WH_HARDEN || w.base + WH_LFH_WINDOW > g->nslots) return w;
    uint64_t x = (g->seed ^ w.base) * 0x9E3779B97F4A7C15ull;
    w.mul = (uint32_t)(x >> 56) | 1u;
    w.mask = (uint32_t)(x >> 60);
    return w;
}
static inline uint32_t fresh_at(fresh_perm w, uint32_t k) {
    return w.mul ? w.base | (((k * w.mul) ^ w.mask) & (WH_LFH_WINDOW - 1)) : k;
}
/* True if slot i has been handed to a list since the group was laid out:
 * every slot of the windows below bump's, and in bump's own window (which
 * big slots take a few at a time) those of its first fresh positions. */
static bool slot_was_handed(const wh_group *g, uint32_t i) {
    uint32_t b = atomic_load_explicit(&g->bump, memory_order_relaxed);
    uint32_t base = b & ~(WH_LFH_WINDOW - 1);
    if (i < base) return true;
    fresh_perm w = fresh_window(g, base);
    for (uint32_t k = base; k < b; k++)
        if (fresh_at(w, k) == i) return true;
    return false;
}

/* Put the next fresh slots of the current window (in their shuffled order)
 * on g's free list, so that the next allocations take the fast path: the
 * rest of the window, or for slots of 512 bytes and more about a page's
 * worth at a time (at least two): their link words are written now, and a page that only a
 * link touched is a page made resident for nothing.  False if g has no
 * fresh slot left. */
static bool group_extend(wh_group *g) {
    uint32_t b = atomic_load_explicit(&g->bump, memory_order_relaxed);
    if (b >= g->nslots) return false;
    uint32_t end = (b | (WH_LFH_WINDOW - 1)) + 1;
    uint32_t step = g->slot_size >= 2048 ? 2 : 4096 / g->slot_size;
    if (end - b > step) end = b + step;
    if (end > g->nslots) end = g->nslots;
    atomic_store_explicit(&g->bump, end, memory_order_relaxed);
    fresh_perm w = fresh_window(g, b); /* [b, end) lies in one window */
    size_t size = g->slot_size;
    char *win = wh_group_slots(g) + (size_t)w.base * size; /* the window's first slot */
    uintptr_t key = g->key, head = g->free_list; /* (locals: the link stores cannot change them) */
    if (w.mul) {
        uint32_t mul = w.mul, mask = w.mask, km = end * mul;
        __asm__("" : "+r"(win)); /* one register, not g plus an offset in every step */
        for (uint32_t n = end - b; n; n--) { /* k = end - 1 down to b */
            km -= mul; /* k * mul */
            char *p = win + (size_t)((km ^ mask) & (WH_LFH_WINDOW - 1)) * size;
            wh_link_store(p, head);
            head = (uintptr_t)p ^ key;
        }
    } else {
        for (char *p = win + (size_t)(end - w.base) * size, *first = win + (size_t)(b - w.base) * size; p > first;) {
            p -= size;
            wh_link_store(p, head);
            head = (uintptr_t)p ^ key;
        }
    }
    g->free_list = head;
    return true;
}

static void *take(wh_group *g, char *p, uint32_t i, size_t size) {
    wh_link_store(p, 0);
    wh_group_meta_set(g, i, 1u + g->slot_size - (unsigned)size);
    g->used++;
    wh_tool_alloc(g->heap, p, size, g->slot_size);
    return p;
}

/* Pop a slot from g for `size` bytes: from the free list, then the
 * thread-free list, then fresh slots; NULL if g has none.  The slot in the
 * delay register (the owner's newest free) joins the list only after
 * another slot was taken, or is handed out itself only if `last_resort`
 * (out of memory).  Caller owns g.  A damaged link or a slot written after
 * its free is reported (D5) and the list dropped from there on: a
 * redirected list is never followed. */
static void *group_pop(wh_group *g, size_t size, bool last_resort) {
    char *p = NULL;
    uint32_t i = 0;
    for (int round = 0; round < 2 && !p; round++) {
        if (g->free_list) {
            char *q;
            uint32_t j;
            if (!dec(g, g->free_list, &p, &i)) {
                wh_report_corruption("HeapAlloc", (void *)(g->free_list ^ g->key), WH_ELIST);
                g->free_list = 0;
                p = NULL;
            } else if (!dec(g, wh_link_load(p), &q, &j)) {
                wh_report_corruption("HeapAlloc", p, WH_ELIST);
                g->free_list = 0;
                p = NULL;
            } else if (!wh_lfh_clean(g, p)) {
                wh_report_corruption("HeapAlloc", p, WH_EFREEMOD);
                g->free_list = 0;
                p = NULL;
            } else {
                g->free_list = wh_link_load(p);
                break;
            }
        }
        if (round == 0 && atomic_load_explicit(&g->thread_free, memory_order_relaxed)) {
            collect(g);
            continue;
        }
        break;
    }
    if (!p && group_extend(g)) { /* (its head was listed just now: no check needed) */
        p = (char *)(g->free_list ^ g->key);
        i = wh_group_index(g, p);
        g->free_list = wh_link_load(p);
    }
    if (!p && g->delay) {
        if (!last_resort) return NULL;
        p = (char *)g->delay;
        g->delay = 0;
        if ((i = wh_group_index(g, p)) == UINT32_MAX || wh_group_meta(g, i) != 0) return NULL;
        if (!wh_lfh_clean(g, p)) {
            wh_report_corruption("HeapAlloc", p, WH_EFREEMOD);
            return NULL;
        }
        return take(g, p, i, size);
    }
    if (!p) return NULL;
    wh_lfh_delay_flush(g, "HeapAlloc");
    return take(g, p, i, size);
}

/* True if g can serve an allocation other than its newest free. */
static bool group_has_room(wh_group *g) {
    return g->free_list || atomic_load_explicit(&g->thread_free, memory_order_relaxed) ||
           atomic_load_explicit(&g->bump, memory_order_relaxed) < g->nslots;
}

static void list_push(wh_group **head, wh_group *g) {
    g->prev = NULL;
    g->next = *head;
    if (*head) (*head)->prev = g;
    *head = g;
}

static void list_remove(wh_group **head, wh_group *g) {
    if (g->prev)
        g->prev->next = g->next;
    else
        *head = g->next;
    if (g->next) g->next->prev = g->prev;
    g->next = g->prev = NULL;
}

static void reclaim_exited(wh_heap *h);

/* Give g, an empty group of t that is not current, back to the heap's pool.
 * Caller is t's thread and holds the heap lock. */
static void group_pool(wh_heap *h, wh_tlh *t, wh_group *g) {
    list_remove(&t->list[g->cls], g);
    atomic_store_explicit(&g->owner, NULL, memory_order_relaxed);
    atomic_store_explicit(&g->state, WH_GROUP_POOLED, memory_order_relaxed);
    list_push(&h->pool[pool_index(g->chunks)], g);
}

/* The pool is empty: t's own empty groups of every class (none current,
 * none with frees in flight; the slow path's scan retires only those of
 * the class it looks at) go to it, so that memory one class gave up serves
 * another before new memory is carved.  Caller is t's thread and holds the
 * heap lock. */
static void tlh_trim(wh_heap *h, wh_tlh *t) {
    for (unsigned c = 0; c < WH_LFH_NCLASSES; c++)
        for (wh_group *o = t->list[c], *next; o; o = next) {
            next = o->next;
            if (o->used == 0 && !atomic_load_explicit(&o->thread_free, memory_order_relaxed)) group_pool(h, t, o);
        }
}

/* A group for class c owned by t: adopted, pooled or new.  Caller is t's
 * thread and holds the heap lock.  NULL if out of memory. */
static wh_group *group_get(wh_heap *h, wh_tlh *t, unsigned c) {
    wh_group *g = h->abandoned[c];
    if (g) {
        list_remove(&h->abandoned[c], g);
        atomic_store_explicit(&g->state, WH_GROUP_OWNED, memory_order_relaxed);
        atomic_store_explicit(&g->owner, t, memory_order_release);
        collect(g);
        return g;
    }
    unsigned k = group_chunks_for(wh_lfh_class_size(c));
    if (!h->pool[pool_index(k)]) {
        reclaim_exited(h); /* groups of exited threads, then this thread's empty ones, then new memory */
        if ((g = h->abandoned[c])) return group_get(h, t, c);
        if (!h->pool[pool_index(k)]) tlh_trim(h, t);
    }
    /* A pooled group last laid out for this very class, if one of the first
     * 16 is: laid out again with its old shuffle (seed) it hands out the
     * same slots first, whose pages are resident already; another class's
     * slots lie elsewhere and make new pages resident (bench scale, 2
     * threads after 1: peak RSS 7.6 -> 7.1 MiB).  A seed drawn before a fork is
     * not kept in the child, whose randomization must be its own. */
    g = h->pool[pool_index(k)];
    int looked = 0;
    for (wh_group *o = g; o && looked < 16; o = o->next, looked++)
        if (o->cls == c) {
            g = o;
            break;
        }
    bool same = g && g->cls == c && g->seed_gen == wh_harden_generation();
    uint64_t seed = g ? g->seed : 0;
    if (g) {
        list_remove(&h->pool[pool_index(k)], g);
        /* The new layout needs zeros past the header.  With zero on free,
         * an empty group's slots are zero past their link words and the
         * slots past the handed-out bound were never written, so clearing
         * the old metadata and the old links is enough, and the pages that
         * no slot used stay untouched (not resident: clearing the whole
         * group made every page of it resident, 64 to 256 KiB per reuse). */
        char *end = group_base(g) + ((size_t)g->chunks << WH_CHUNK_SHIFT);
        wh_tool_release(g->meta, (size_t)(end - (char *)g->meta));
        if (wh_zero_on_free()) {
            char *slots = wh_group_slots(g);
            uint32_t hi = wh_group_handed(g);
            memset((void *)g->meta, 0, (size_t)(slots - (char *)g->meta));
            for (uint32_t i = 0; i < hi; i++)
                if (slot_was_handed(g, i)) memset(slots + (size_t)i * g->slot_size, 0, 8);
        } else {
            memset((void *)g->meta, 0, (size_t)(end - (char *)g->meta));
        }
    } else if (!(g = group_carve(h, k))) {
        return NULL;
    } else {
        wh_count(&t->n_carve);
    }
    wh_count(&t->n_layout);
    g = group_init(h, g->seg, g, k, c);
    if (same) g->seed = seed;
    atomic_store_explicit(&g->owner, t, memory_order_release);
    return g;
}

void *wh_lfh_alloc_slow(wh_tlh *t, unsigned c, size_t size) {
    wh_group *g = t->cur[c];
    void *p;
    wh_count(&t->n_slow);
    if (g && (p = group_pop(g, size, false))) return p;
    /* Another group of this class that has room; empty groups beyond the
     * first one found go back to the heap's pool for other classes and
     * threads.  (Keeping them, free lists and all, for the next batch of
     * the class was tried on 2026-12-07: 8% fewer instructions on batch
     * but no faster, since a kept list is a chain of cache misses while a
     * group laid out again gets its links written in one pass; group_get
     * gives the group back to this class with its old slot order.) */
    wh_group *found = NULL;
    for (wh_group *o = t->list[c], *next; o; o = next) {
        next = o->next;
        if (!group_has_room(o)) continue;
        if (!found) {
            found = o;
        } else if (o->used == 0 && !atomic_load_explicit(&o->thread_free, memory_order_relaxed)) {
            wh_heap_lock(t->heap);
            group_pool(t->heap, t, o);
            wh_heap_unlock(t->heap);
        }
    }
    if (found) {
        list_remove(&t->list[c], found);
        if (g) list_push(&t->list[c], g);
        t->cur[c] = found;
        if ((p = group_pop(found, size, false))) return p;
        g = found;
    }
    wh_heap *h = t->heap;
    wh_heap_lock(h);
    wh_group *n = group_get(h, t, c);
    wh_heap_unlock(h);
    if (!n) return g ? group_pop(g, size, true) : NULL; /* out of memory: reuse the newest free */
    if (g) list_push(&t->list[c], g);
    t->cur[c] = n;
    return group_pop(n, size, true);
}

/* The slot this thread is freeing on the remote path, between marking it
 * free and pushing it on the thread-free list (NULL otherwise).  A fork
 * from a signal handler that interrupted that window must not list the slot
 * again in the child (group_rebuild): the interrupted free pushes it when
 * the handler returns. */
static __thread void *volatile remote_in_flight;

/* Free slot i (at p) of g, which another thread owns or nobody does; no
 * lock.  WH_OK, or WH_EHEADER / WH_EDOUBLE with nothing changed. */
wh_status wh_lfh_free_remote(wh_group *g, uint32_t i, void *p) {
    if (g->magic != (WH_GROUP_MAGIC ^ (uintptr_t)g ^ g->key)) return WH_EHEADER;
    if (atomic_load_explicit(&g->state, memory_order_relaxed) == WH_GROUP_POOLED) return WH_EDOUBLE;
    unsigned m = wh_group_meta(g, i);
    if (m == 0 || m == wh_meta_pending(g)) return WH_EDOUBLE;
    if (m > g->slot_size + 1u) return WH_EHEADER;
    /* Mark it pending (a compare-and-swap: of two threads freeing it at
     * once, one fails).  The body is not touched here: the owner scrubs it
     * when it collects the thread-free list, in its own cache, so that a
     * block freed by another thread does not move all its cache lines to
     * that thread and back.  Only the link and the size are written. */
    remote_in_flight = p;
    atomic_signal_fence(memory_order_seq_cst);
    if (!wh_group_meta_cas(g, i, m, wh_meta_pending(g))) { /* another thread freed it meanwhile */
        remote_in_flight = NULL;
        return WH_EDOUBLE;
    }
    wh_tool_free(g->heap, p, g->slot_size);
    wh_link_store((char *)p + 8, g->slot_size + 1 - m);
    uintptr_t old = atomic_load_explicit(&g->thread_free, memory_order_relaxed);
    do {
        wh_link_store(p, old);
    } while (!atomic_compare_exchange_weak_explicit(&g->thread_free, &old, enc(g, p), memory_order_release,
                                                    memory_order_relaxed));
    atomic_signal_fence(memory_order_seq_cst);
    remote_in_flight = NULL;
    return WH_OK;
}

wh_status wh_lfh_lookup(wh_group *g, const void *p, size_t *requested) {
    uint32_t i = wh_group_index(g, p);
    if (i == UINT32_MAX) return WH_EINVALID;
    unsigned m = wh_group_meta(g, i);
    if (m == 0 || m == wh_meta_pending(g)) return WH_EDOUBLE;
    if (m > g->slot_size + 1u) return WH_EHEADER;
    *requested = g->slot_size - (m - 1);
    return WH_OK;
}

wh_status wh_lfh_resize(wh_group *g, void *p, size_t size, size_t *old_out) {
    size_t old;
    wh_status st = wh_lfh_lookup(g, p, &old);
    if (st != WH_OK) return st;
    *old_out = old;
    if (size > g->slot_size - WH_TOOL_RZ) return WH_ENOMEM;
    if (size < old) { /* keep "zero past the request": the free scrubs only the request */
        size_t from = size > 8 ? size : 8;
        if (old > from) memset((char *)p + from, 0, old - from);
    }
    wh_group_meta_set(g, wh_group_index(g, p), 1u + g->slot_size - (unsigned)size);
    wh_tool_change(g->heap, p, p, old, size, g->slot_size);
    return WH_OK;
}

/* ---- thread caches ---- */

static void exit_destructor(void *arg) {
    (void)arg;
    wh_lfh_thread_exit();
}
static void exit_key_create(void) { (void)pthread_key_create(&exit_key, exit_destructor); }

static void tlh_release(wh_heap *h, wh_tlh *t);

void wh_lfh_counts_get(wh_heap *h, wh_lfh_counts *out) {
    *out = (wh_lfh_counts){ 0, 0, 0 };
    for (wh_tlh *t = atomic_load_explicit(&h->tlhs, memory_order_acquire); t; t = t->next) {
        out->slow += atomic_load_explicit(&t->n_slow, memory_order_relaxed);
        out->layout += atomic_load_explicit(&t->n_layout, memory_order_relaxed);
        out->carve += atomic_load_explicit(&t->n_carve, memory_order_relaxed);
    }
}

/* Hand back the groups of every cache whose thread has exited; caller
 * holds the lock. */
static void reclaim_exited(wh_heap *h) {
    for (wh_tlh *t = atomic_load_explicit(&h->tlhs, memory_order_acquire); t; t = t->next)
        if (!atomic_load_explicit(&t->thread, memory_order_acquire)) tlh_release(h, t);
}

/* A thread cache with no groups (a released one, or zeroed memory from the
 * heap's segments); caller holds the lock. */
static wh_tlh *tlh_new(wh_heap *h) {
    for (wh_tlh *t = atomic_load_explicit(&h->tlhs, memory_order_acquire); t; t = t->next)
        if (!atomic_load_explicit(&t->thread, memory_order_acquire)) {
            tlh_release(h, t);
            return t;
        }
    size_t need = wh_align_up(sizeof(wh_tlh), 64);
    wh_lfh_seg *s;
    for (s = h->lfh_head; s; s = s->next)
        if (s->meta_used + need <= WH_CHUNK) break;
    if (!s && !(s = seg_new(h))) return NULL;
    wh_tlh *t = (wh_tlh *)((char *)s + s->meta_used);
    s->meta_used += need;
    memset(t, 0, sizeof *t);
    t->heap = h;
    t->next = atomic_load_explicit(&h->tlhs, memory_order_relaxed);
    atomic_store_explicit(&h->tlhs, t, memory_order_release);
    return t;
}

wh_tlh *wh_lfh_tlh(wh_heap *h) {
    for (unsigned i = 0; i < TL_CACHE; i++)
        if (tl_cache[i].serial == h->serial) return tl_cache[i].tlh;
    void *self = &wh_thread_identity;
    wh_heap_lock(h);
    wh_tlh *t;
    for (t = atomic_load_explicit(&h->tlhs, memory_order_relaxed); t; t = t->next)
        if (atomic_load_explicit(&t->thread, memory_order_relaxed) == self) break;
    if (!t && (t = tlh_new(h))) atomic_store_explicit(&t->thread, self, memory_order_release);
    wh_heap_unlock(h);
    if (!t) return NULL;
    unsigned slot = tl_next++ % TL_CACHE;
    tl_cache[slot].serial = h->serial;
    tl_cache[slot].tlh = t;
    if (!exit_key_set) {
        /* Set before the calls: pthread_setspecific may allocate (keys
         * numbered 32 and up), and that allocation comes back here. */
        exit_key_set = 1;
        pthread_once(&exit_key_once, exit_key_create);
        (void)pthread_setspecific(exit_key, (void *)1);
    }
    return t;
}

/* Hand every group of t back (caller holds the heap lock; t's thread has
 * exited or, in a fork child, no longer exists). */
static void tlh_release(wh_heap *h, wh_tlh *t) {
    for (unsigned c = 0; c < WH_LFH_NCLASSES; c++) {
        wh_group *g = t->cur[c];
        t->cur[c] = NULL;
        if (g) list_push(&t->list[c], g);
        while ((g = t->list[c])) {
            list_remove(&t->list[c], g);
            atomic_store_explicit(&g->owner, NULL, memory_order_relaxed);
            wh_lfh_delay_flush(g, "HeapAlloc");
            collect(g);
            if (g->used == 0 && !atomic_load_explicit(&g->thread_free, memory_order_acquire)) {
                atomic_store_explicit(&g->state, WH_GROUP_POOLED, memory_order_relaxed);
                list_push(&h->pool[pool_index(g->chunks)], g);
            } else {
                atomic_store_explicit(&g->state, WH_GROUP_ABANDONED, memory_order_relaxed);
                list_push(&h->abandoned[c], g);
            }
        }
    }
    atomic_store_explicit(&t->thread, NULL, memory_order_release);
}

/* Mark this thread's caches in h free (no heap lock: the registry lock
 * keeps h alive, the list is read lock-free). */
static void thread_exit_heap(wh_heap *h) {
    void *self = &wh_thread_identity;
    for (wh_tlh *t = atomic_load_explicit(&h->tlhs, memory_order_acquire); t; t = t->next)
        if (atomic_load_explicit(&t->thread, memory_order_relaxed) == self)
            atomic_store_explicit(&t->thread, NULL, memory_order_release);
}

void wh_lfh_thread_exit(void) {
    wh_heap_for_each_registered(thread_exit_heap);
    memset(tl_cache, 0, sizeof tl_cache);
    wh_api_forget_thread_cache();
    /* A destructor that runs after ours may allocate again: that builds a
     * new cache and sets the key again (glibc runs destructors up to four
     * rounds). */
    exit_key_set = 0;
}

/* Fork child: a group whose owner thread was inside its lock-free paths at
 * the fork may hold a torn free list or a half-scrubbed slot, and a slot
 * that a vanished thread was freeing may be marked free but on no list.
 * Rebuild the group's lists from its slot metadata, which is what decides
 * busy or free: every free slot (pending ones too: the thread-free list is
 * dropped) is scrubbed and listed again.  The one
 * exception is the slot that the forking thread's own interrupted remote
 * free is handling (remote_in_flight): it counts as busy here and reaches
 * the thread-free list when that free completes (its compare-and-swap then
 * fails once against the emptied list and retries). */
static void group_rebuild(wh_group *g) {
    uint32_t hi = wh_group_handed(g), used = 0;
    char *mine = remote_in_flight;
    atomic_store_explicit(&g->thread_free, 0, memory_order_relaxed);
    g->free_list = 0;
    g->delay = 0; /* (free: listed again below) */
    for (uint32_t i = hi; i-- > 0;) {
        char *p = wh_group_slots(g) + (size_t)i * g->slot_size;
        unsigned m = wh_group_meta(g, i);
        if ((m && m != wh_meta_pending(g)) || p == mine) {
            used++;
            continue;
        }
        if (!m && !slot_was_handed(g, i)) continue; /* still fresh: group_extend lists it later */
        if (m) wh_group_meta_set(g, i, 0); /* was on the thread-free list, which is dropped */
        wh_lfh_scrub(g, p, g->slot_size);
        wh_link_store(p, g->free_list);
        g->free_list = enc(g, p);
    }
    g->used = used;
}

/*
 * Fork child (heap.c's handler; the forking thread is the only thread).
 * The caches of the threads that are gone: their groups are rebuilt, then
 * with hand_back (fork_prepare took h's lock, so h's lists are consistent)
 * the caches are handed back at once, as before; without it (the forking
 * thread holds h's lock, perhaps in a call interrupted half way through
 * h's lists) only marked as exited, as a thread exit does, and handed back
 * by the next call that needs a group (reclaim_exited).  Caches that were
 * marked exited before the fork are left alone in that case: the
 * interrupted call may be handing one back.  The forking thread's own
 * caches are never touched: its interrupted call may be updating them.
 */
void wh_lfh_fork_child(wh_heap *h, bool hand_back) {
    void *self = &wh_thread_identity;
    for (wh_tlh *t = atomic_load_explicit(&h->tlhs, memory_order_relaxed); t; t = t->next) {
        void *owner = atomic_load_explicit(&t->thread, memory_order_relaxed);
        if (owner == self || (!hand_back && !owner)) continue;
        for (unsigned c = 0; c < WH_LFH_NCLASSES; c++) {
            if (t->cur[c]) group_rebuild(t->cur[c]);
            for (wh_group *g = t->list[c]; g; g = g->next) group_rebuild(g);
        }
        if (hand_back)
            tlh_release(h, t);
        else
            atomic_store_explicit(&t->thread, NULL, memory_order_release);
    }
}

void wh_lfh_release_all(wh_heap *h) {
    wh_lfh_seg *s = h->lfh_head;
    while (s) {
        wh_lfh_seg *next = s->next;
        wh_region_release(&s->r);
        s = next;
    }
    h->lfh_head = h->lfh_tail = NULL;
}

/* ---- iteration: groups of a segment in address order ---- */

/* The group whose first chunk is at or after chunk `from` of s, or NULL. */
static wh_group *seg_group_from(wh_lfh_seg *s, unsigned from) {
    for (unsigned i = from; i < WH_SEG_CHUNKS; i++) {
        if (!(s->used >> i & 1)) continue;
        char *base = (char *)s + ((size_t)i << WH_CHUNK_SHIFT);
        wh_group *g = wh_lfh_group_of_entry(wh_region_map_get(base));
        if (g && group_base(g) == base) return g;
    }
    return NULL;
}

static unsigned group_chunk(const wh_group *g) {
    return (unsigned)(((uintptr_t)g - (uintptr_t)g->seg) >> WH_CHUNK_SHIFT);
}

/* A free slot holds zeros past its link word. */
WH_NO_ASAN static bool slot_zero(const char *p, size_t slot) {
    uint64_t acc = 0;
    if (!wh_zero_on_free()) return true;
    wh_tool_enter();
    for (size_t o = 8; o < slot; o += 8) acc |= *(const volatile uint64_t *)(p + o);
    wh_tool_leave();
    return acc == 0;
}

static bool group_is_valid(wh_heap *h, wh_lfh_seg *s, wh_group *g, size_t *busy_bytes) {
    if (g->magic != (WH_GROUP_MAGIC ^ (uintptr_t)g ^ group_key(h)) || g->heap != h || g->seg != s) return false;
    if (g->chunks != 1 && g->chunks != 2 && g->chunks != 4) return false;
    char *end = group_base(g) + ((size_t)g->chunks << WH_CHUNK_SHIFT);
    if (g->slot_size != wh_lfh_class_size(g->cls) || wh_group_slots(g) < (char *)g->meta ||
        wh_group_slots(g) + (size_t)g->nslots * g->slot_size > end)
        return false;
    for (unsigned k = 0; k < g->chunks; k++)
        if (wh_region_map_get((char *)g + ((size_t)k << WH_CHUNK_SHIFT)) != ((uintptr_t)g | WH_MAP_GROUP)) return false;
    if (atomic_load_explicit(&g->bump, memory_order_relaxed) > g->nslots) return false;
    uint32_t hi = wh_group_handed(g);
    size_t sum = 0;
    /* Slot contents and the free list can be checked only when no other
     * thread owns the group (its owner allocates without the heap lock). */
    wh_tlh *o = atomic_load_explicit(&g->owner, memory_order_relaxed);
    bool mine = !o || atomic_load_explicit(&o->thread, memory_order_relaxed) == (void *)&wh_thread_identity;
    for (uint32_t i = 0; i < g->nslots; i++) {
        /* acquire: a slot is zeroed before its metadata says free (0);
         * pending slots (freed by another thread) are not zeroed yet */
        unsigned m = g->meta_width == 1 ? atomic_load_explicit(&g->meta[i], memory_order_acquire)
                                        : atomic_load_explicit((_Atomic uint16_t *)__builtin_assume_aligned((void *)&g->meta[2 * i], 2), memory_order_acquire);
        if ((m > g->slot_size + 1u && m != wh_meta_pending(g)) || (i >= hi && m != 0)) return false;
        if (m == wh_meta_pending(g)) continue; /* freed by another thread, scrubbed when collected */
        if (m)
            sum += g->slot_size - (m - 1);
        else if (mine && i < hi && !slot_zero(wh_group_slots(g) + (size_t)i * g->slot_size, g->slot_size))
            return false; /* a write after free */
    }
    *busy_bytes += sum;
    if (mine && g->delay) { /* a free slot of g whose link word is still 0 */
        uint32_t i = wh_group_index(g, (void *)g->delay);
        if (i == UINT32_MAX || i >= hi || wh_group_meta(g, i) != 0 || wh_link_load((void *)g->delay) != 0) return false;
    }
    if (mine) {
        uint32_t n = 0;
        uintptr_t at = g->free_list;
        while (at) {
            char *p;
            uint32_t i;
            if (++n > g->nslots || !dec(g, at, &p, &i)) return false;
            at = wh_link_load(p);
        }
    }
    return true;
}

bool wh_lfh_is_valid(wh_heap *h) {
    for (wh_lfh_seg *s = h->lfh_head; s; s = s->next) {
        if (s->magic != (WH_SEG_MAGIC ^ (uintptr_t)s) || s->r.heap != h || s->r.kind != WH_REGION_LFH ||
            wh_region_map_get(s) != (uintptr_t)s || !(s->used & 1))
            return false;
        uint64_t seen = 1;
        for (wh_group *g = seg_group_from(s, 1); g; g = seg_group_from(s, group_chunk(g) + g->chunks)) {
            size_t busy = 0;
            if (!group_is_valid(h, s, g, &busy)) return false;
            seen |= ((1ull << g->chunks) - 1) << group_chunk(g);
        }
        if (seen != s->used || (s->used & ~s->committed)) return false;
    }
    return true;
}

void wh_lfh_summary(wh_heap *h, size_t *allocated, size_t *committed, size_t *reserved) {
    for (wh_lfh_seg *s = h->lfh_head; s; s = s->next) {
        *committed += (size_t)__builtin_popcountll(s->committed) << WH_CHUNK_SHIFT;
        *reserved += WH_SEG_SIZE;
        for (wh_group *g = seg_group_from(s, 1); g; g = seg_group_from(s, group_chunk(g) + g->chunks)) {
            uint32_t hi = wh_group_handed(g);
            for (uint32_t i = 0; i < hi; i++) {
                unsigned m = wh_group_meta(g, i);
                if (m && m != wh_meta_pending(g)) *allocated += g->slot_size - (m - 1);
            }
        }
    }
}

/* ---- HeapWalk ---- */

static BYTE clamp8(size_t v) { return v > 0xFF ? 0xFF : (BYTE)v; }
static DWORD clamp32(size_t v) { return v > 0xFFFFFFFFu ? 0xFFFFFFFFu : (DWORD)v; }

/* Region number of segment s as HeapWalk reports it: after the BLOCKS regions. */
static BYTE seg_index(const wh_lfh_seg *s) { return clamp8((size_t)s->r.heap->nregions + s->r.index); }

void wh_lfh_walk_region(wh_lfh_seg *s, PROCESS_HEAP_ENTRY *e) {
    size_t committed = (size_t)__builtin_popcountll(s->committed) << WH_CHUNK_SHIFT;
    e->lpData = s;
    e->cbData = clamp32(WH_SEG_SIZE);
    e->cbOverhead = clamp8(s->meta_used);
    e->iRegionIndex = seg_index(s);
    e->wFlags = PROCESS_HEAP_REGION;
    memset(&e->Region, 0, sizeof e->Region);
    e->Region.dwCommittedSize = clamp32(committed);
    e->Region.dwUnCommittedSize = clamp32(WH_SEG_SIZE - committed);
    e->Region.lpFirstBlock = s->r.first;
    e->Region.lpLastBlock = s->r.end;
}

static void fill_slot(wh_group *g, uint32_t i, PROCESS_HEAP_ENTRY *e) {
    unsigned m = wh_group_meta(g, i);
    e->lpData = wh_group_slots(g) + (size_t)i * g->slot_size;
    e->iRegionIndex = seg_index(g->seg);
    memset(&e->Region, 0, sizeof e->Region);
    if (m && m != wh_meta_pending(g)) {
        size_t req = g->slot_size - (m - 1);
        e->cbData = clamp32(req);
        e->cbOverhead = clamp8(g->slot_size - req + g->meta_width);
        e->wFlags = PROCESS_HEAP_ENTRY_BUSY;
    } else {
        e->cbData = g->slot_size;
        e->cbOverhead = g->meta_width;
        e->wFlags = 0;
    }
}

/*
 * The element of segment s at or after chunk `from`, in address order: the
 * first slot of a group, or an uncommitted run of chunks (chunks that belong
 * to no group are never committed: groups keep theirs, even in the pool).
 * After the segment: the next segment's REGION entry, else *past.
 */
static void walk_from(wh_lfh_seg *s, unsigned from, PROCESS_HEAP_ENTRY *e, bool *past) {
    unsigned i = from;
    while (i < WH_SEG_CHUNKS) {
        char *base = (char *)s + ((size_t)i << WH_CHUNK_SHIFT);
        if (s->used >> i & 1) {
            wh_group *g = wh_lfh_group_of_entry(wh_region_map_get(base));
            bool starts = g && group_base(g) == base;
            if (starts && g->nslots) {
                fill_slot(g, 0, e);
                return;
            }
            i += starts ? g->chunks : 1;
            continue;
        }
        unsigned j = i;
        while (j < WH_SEG_CHUNKS && !(s->used >> j & 1)) j++;
        e->lpData = base;
        e->cbData = clamp32((size_t)(j - i) << WH_CHUNK_SHIFT);
        e->cbOverhead = 0;
        e->iRegionIndex = seg_index(s);
        e->wFlags = PROCESS_HEAP_UNCOMMITTED_RANGE;
        memset(&e->Region, 0, sizeof e->Region);
        return;
    }
    if (s->next)
        wh_lfh_walk_region(s->next, e);
    else
        *past = true;
}

wh_status wh_lfh_walk_next(wh_heap *h, PROCESS_HEAP_ENTRY *e, bool *end, bool *past) {
    *end = *past = false;
    uintptr_t me = wh_region_map_get(e->lpData);
    wh_group *g = wh_lfh_group_of_entry(me);
    if (e->wFlags & (PROCESS_HEAP_REGION | PROCESS_HEAP_UNCOMMITTED_RANGE)) {
        wh_lfh_seg *s = (wh_lfh_seg *)me;
        if (g || !s || (me & 3) || s->r.heap != h || s->r.kind != WH_REGION_LFH) return WH_EINVALID;
        uintptr_t off = (uintptr_t)e->lpData - (uintptr_t)s;
        unsigned i = (unsigned)(off >> WH_CHUNK_SHIFT);
        if (e->wFlags & PROCESS_HEAP_REGION) {
            if (off) return WH_EINVALID;
            walk_from(s, 1, e, past);
            return WH_OK;
        }
        if ((off & (WH_CHUNK - 1)) || i == 0 || (s->used >> i & 1)) return WH_EINVALID;
        while (i < WH_SEG_CHUNKS && !(s->used >> i & 1)) i++;
        walk_from(s, i, e, past);
        return WH_OK;
    }
    if (!g || g->heap != h) return WH_EINVALID;
    uint32_t i = wh_group_index(g, e->lpData);
    if (i == UINT32_MAX) return WH_EINVALID;
    if (i + 1 < g->nslots) {
        fill_slot(g, i + 1, e);
        return WH_OK;
    }
    walk_from(g->seg, group_chunk(g) + g->chunks, e, past);
    return WH_OK;
}
