/*
 * large.c - blocks of WINHEAP_LARGE_THRESHOLD (0xFF000) bytes or more on
 * growable heaps, each in a mapping of its own (SPEC D9).
 *
 * Layout of one large block: a 64 KiB-aligned reservation whose first
 * WH_LARGE_HDR bytes hold the wh_large header, followed by the payload
 * (64-byte aligned); the pages up to the end of the payload are committed and
 * at least one inaccessible page follows, so running off the end of a large
 * block faults at once.  Every large block is published in the address map
 * (so ownership is decided without touching memory) and kept on its heap's
 * list in creation order (so HeapWalk and HeapDestroy see them all).
 *
 * Mappings of 2 MiB and more are 2 MiB-aligned and advised to use
 * transparent huge pages (large_reserve).
 *
 * Freeing unmaps at once and leaves a tombstone in the address map, so a
 * second free of the same pointer is still recognised as a double free.
 * Resizing stays inside the reservation when it can; otherwise the pages
 * move with mremap into a new reservation, without copying (or, when the
 * kernel keeps the committed pages as several mappings, into a new block
 * with a copy).
 *
 * The debug page heap (WINHEAP_DEBUG=guard, D18) puts every block of every
 * heap in such a mapping, its payload placed so that it ends against the
 * inaccessible page (wh_large_map_guarded).  A fixed heap keeps D7's limits
 * under it: its blocks then lie outside its reservation, so each is charged
 * against the heap's maximum what the back end would have used for it
 * (h->fixed_charged; api.c refuses a block whose charge does not fit, and
 * requests of WINHEAP_FIXED_LIMIT or more as always).
 *
 * Locking: wh_large_map touches no heap structure and runs unlocked (a
 * HeapAlloc makes its system calls outside the heap lock); list changes,
 * resizes, frees and the fixed heaps' charge run with the lock held.
 */
#include "internal.h"

static void large_seal(wh_heap *h, wh_large *l) { l->check = wh_harden_large_check(h, l); }


/*
 * Reserve the inaccessible mapping of a large block, aligned to `align` (a
 * power of two, at least WH_CHUNK).  A mapping that can hold a whole 2 MiB
 * page is aligned to 2 MiB and advised to use transparent huge pages
 * (unless WINHEAP_HUGEPAGES=0): a page fault costs about 14 us on the
 * machines we measure on, and a 2 MiB page takes one fault where 4 KiB pages
 * take 512.  Only whole 2 MiB pages inside the committed part become huge, so
 * the guard page after the block still faults at once; the advice is a hint
 * that the kernel may ignore (THP off, no free huge page).  Returns NULL when
 * the reservation fails.  No locks.
 */
static char *large_reserve(size_t map_size, size_t align) {
    bool huge = map_size >= WH_HUGE_PAGE && wh_options_get()->hugepages;
    if (huge && align < WH_HUGE_PAGE) align = WH_HUGE_PAGE;
    char *base = wh_os_reserve(map_size, align);
    if (base && huge) (void)wh_prim.hugepage(base, map_size);
    return base;
}

wh_large *wh_large_map(wh_heap *h, size_t request, wh_status *st) {
    return wh_large_map_aligned(h, request, WH_LARGE_HDR, st);
}

/* Debug heap: the tail padding between the request and the committed end
 * (and the new-block pattern over the request). */
static void large_debug_fill(wh_large *l, bool fresh) {
    unsigned f = wh_debug_flags();
    if (WH_LIKELY(!f)) return;
    char *p = wh_large_payload(l);
    if (fresh && (f & WH_DBG_FREE)) wh_debug_fill(p, l->requested, WH_FILL_NEW);
    if (f & WH_DBG_TAIL) wh_debug_fill(p + l->requested, l->committed - l->offset - l->requested, WH_FILL_TAIL);
}

static bool large_tail_ok(wh_large *l) {
    if (WH_LIKELY(!(wh_debug_flags() & WH_DBG_TAIL))) return true;
    char *p = wh_large_payload(l);
    return wh_debug_check(p + l->requested, l->committed - l->offset - l->requested, WH_FILL_TAIL);
}

/*
 * Debug page heap: a block whose payload ends against the inaccessible page
 * after the committed pages - exactly when the request is a multiple of 16
 * (of `align` for larger alignments), since the payload stays aligned.
 * align: 0 or a power of two; above a page the block is an ordinary aligned
 * large block (the guard page follows its committed end).  No lock needed.
 * NULL + *st (WH_ENOMEM) on failure.
 */
wh_large *wh_large_map_guarded(wh_heap *h, size_t request, size_t align, wh_status *st) {
    size_t page = wh_prim_page_size();
    if (align < WH_ALIGN) align = WH_ALIGN;
    if (request > WH_MAX_REQUEST || align > WH_MAX_REQUEST) {
        *st = WH_ENOMEM;
        return NULL;
    }
    if (align > page) return wh_large_map_aligned(h, request, align, st);
    size_t body = wh_align_up(request, WH_ALIGN);
    size_t commit = wh_align_up(WH_LARGE_HDR + body, page);
    size_t offset = wh_align_down(commit - body, align);
    if (offset < WH_LARGE_HDR) offset = wh_align_down(commit + page - body, align); /* one page more */
    /* (wh_large_map_aligned takes an offset that is not a power of two, or
     * one of WH_LARGE_HDR or more, as the payload offset itself) */
    return wh_large_map_aligned(h, request, offset, st);
}

/* h's charge less `sub` (every block's cost was added when it was made). */
static size_t fixed_less(const wh_heap *h, size_t sub) {
    WH_ASSERT(sub <= h->fixed_charged);
    return h->fixed_charged > sub ? h->fixed_charged - sub : 0;
}

/* Whether a fixed heap's charge can drop `sub` and take `add` within what
 * its back end could have tiled (internal.h); caller holds the lock.  Never
 * fails a change that does not grow the charge. */
bool wh_large_fixed_fits(wh_heap *h, size_t sub, size_t add) {
    if ((h->flags & HEAP_GROWABLE) || add <= sub) return true;
    /* what the back end could tile: the reservation less the heap header */
    size_t cap = h->max_size - (size_t)(h->region0.first - (char *)h);
    size_t used = fixed_less(h, sub) + wh_backend_span(h);
    return used <= cap && add <= cap - used;
}

/* The largest request fixed heap h can still take under the page heap (its
 * blocks are charged against the maximum and never come from the back
 * end's free blocks): what its charge has room for, less a block's header
 * and padding, below WINHEAP_FIXED_LIMIT; 0 if none.  Caller holds the
 * lock. */
size_t wh_large_fixed_largest(wh_heap *h) {
    size_t cap = h->max_size - (size_t)(h->region0.first - (char *)h);
    size_t used = h->fixed_charged + wh_backend_span(h);
    if (used >= cap) return 0;
    size_t room = wh_align_down(cap - used, WH_ALIGN);
    if (room < WH_MIN_BLOCK || room - WH_HDR <= wh_pad()) return 0;
    size_t r = room - WH_HDR - wh_pad();
    return r < WINHEAP_FIXED_LIMIT ? r : WINHEAP_FIXED_LIMIT - 1;
}

/* Apply a change wh_large_fixed_fits allowed (or one that gives back);
 * caller holds the lock.  No-op on growable heaps. */
void wh_large_fixed_account(wh_heap *h, size_t sub, size_t add) {
    if (!(h->flags & HEAP_GROWABLE)) h->fixed_charged = fixed_less(h, sub) + add;
}

wh_large *wh_large_map_aligned(wh_heap *h, size_t request, size_t align, wh_status *st) {
    size_t page = wh_prim_page_size();
    if (request > WH_MAX_REQUEST || align > WH_MAX_REQUEST) {
        *st = WH_ENOMEM;
        return NULL;
    }
    /* `align` is a power of two, or (page heap) the exact payload offset. */
    size_t offset = align < WH_LARGE_HDR ? WH_LARGE_HDR : align;
    size_t commit = wh_align_up(offset + request + WH_TOOL_RZ, page);
    size_t map_size = wh_align_up(commit + page, WH_CHUNK);
    char *base = large_reserve(map_size, align <= WH_CHUNK || (align & (align - 1)) ? WH_CHUNK : align);
    if (base && wh_os_commit(base, commit, (h->flags & HEAP_CREATE_ENABLE_EXECUTE) != 0) != 0) {
        if (wh_prim.release(base, map_size) != 0) wh_fatal_os("munmap");
        base = NULL;
    }
    if (!base) {
        *st = WH_ENOMEM;
        return NULL;
    }
    wh_large *l = (wh_large *)base;
    l->r.magic = WH_REGION_MAGIC ^ (uintptr_t)l;
    l->r.heap = h;
    l->r.next = NULL;
    l->r.index = WH_LARGE_REGION_INDEX;
    l->r.kind = WH_REGION_LARGE;
    l->r.reserve = map_size;
    l->r.map_size = map_size;
    l->r.first = l->r.end = l->r.last = NULL;
    l->requested = request;
    l->committed = commit;
    l->offset = offset;
    large_seal(h, l);
    if (wh_region_map_set(base, map_size, (uintptr_t)l) != 0) {
        if (wh_prim.release(base, map_size) != 0) wh_fatal_os("munmap");
        *st = WH_ENOMEM;
        return NULL;
    }
    wh_tool_alloc(h, wh_large_payload(l), request, commit - offset);
    large_debug_fill(l, true);
    return l;
}

void *wh_large_link(wh_heap *h, wh_large *l) {
    l->prev = h->large_tail;
    l->next = NULL;
    if (h->large_tail)
        h->large_tail->next = l;
    else
        h->large_head = l;
    h->large_tail = l;
    h->nlarge++;
    return wh_large_payload(l);
}

bool wh_large_is_valid(wh_heap *h, wh_large *l) {
    return l->r.magic == (WH_REGION_MAGIC ^ (uintptr_t)l) && l->r.heap == h && l->r.kind == WH_REGION_LARGE &&
           l->check == wh_harden_large_check(h, l) && l->offset >= WH_LARGE_HDR && l->committed >= l->offset + l->requested &&
           l->committed < l->r.map_size && wh_region_map_get(l) == (uintptr_t)l;
}

wh_status wh_large_lookup(wh_heap *h, wh_region *r, const void *p, wh_large **out) {
    wh_large *l = (wh_large *)r;
    if (p != wh_large_payload(l)) return WH_EINVALID;
    if (!wh_large_is_valid(h, l)) return WH_EHEADER;
    if (!large_tail_ok(l)) return WH_ETAIL;
    *out = l;
    return WH_OK;
}

static void large_unlink(wh_heap *h, wh_large *l) {
    if (l->prev)
        l->prev->next = l->next;
    else
        h->large_head = l->next;
    if (l->next)
        l->next->prev = l->prev;
    else
        h->large_tail = l->prev;
    h->nlarge--;
}

void wh_large_free(wh_heap *h, wh_large *l) {
    large_unlink(h, l);
    size_t size = l->r.map_size;
    wh_tool_free(h, wh_large_payload(l), l->committed - l->offset);
    wh_tool_release(l, l->committed); /* (the header reads undefined from here on) */
    (void)wh_region_map_set(l, size, WH_TOMBSTONE(h));
    if (wh_prim.release(l, size) != 0) wh_fatal_os("munmap");
}

void *wh_large_resize(wh_heap *h, wh_large *l, size_t request, bool in_place, wh_status *st) {
    size_t page = wh_prim_page_size();
    if (request > WH_MAX_REQUEST) {
        *st = WH_ENOMEM;
        return NULL;
    }
    size_t commit = wh_align_up(l->offset + request + WH_TOOL_RZ, page);
    size_t old_request = l->requested;
    if (commit + page <= l->r.map_size) {
        /* Fits the reservation (keeping a guard page).  Shrinking keeps its
         * pages committed: nothing is decommitted behind the caller (D8). */
        if (commit > l->committed) {
            if (wh_os_commit((char *)l + l->committed, commit - l->committed,
                               (h->flags & HEAP_CREATE_ENABLE_EXECUTE) != 0) != 0) {
                *st = WH_ENOMEM;
                return NULL;
            }
            l->committed = commit;
        }
        l->requested = request;
        large_seal(h, l);
        wh_tool_change(h, wh_large_payload(l), wh_large_payload(l), old_request, request, l->committed - l->offset);
        large_debug_fill(l, false);
        return wh_large_payload(l);
    }
    if (in_place) {
        *st = WH_ENOMEM;
        return NULL;
    }
    /* Move the pages into a bigger reservation.  Everything that can fail
     * happens before the mremap, so a failure leaves the block as it was. */
    size_t map_size = wh_align_up(commit + page, WH_CHUNK);
    char *dest = large_reserve(map_size, WH_CHUNK);
    if (!dest) {
        *st = WH_ENOMEM;
        return NULL;
    }
    if (wh_region_map_set(dest, map_size, 0) != 0) { /* makes sure the map pages exist */
        if (wh_prim.release(dest, map_size) != 0) wh_fatal_os("munmap");
        *st = WH_ENOMEM;
        return NULL;
    }
    char *old = (char *)l;
    void *old_payload = wh_large_payload(l);
    size_t old_committed = l->committed, old_map = l->r.map_size;
    wh_large *prev = l->prev, *next = l->next;
    /* From the mremap on, the old addresses are unmapped: unpublish them
     * first, so that no lookup ever reads them. */
    (void)wh_region_map_set(old, old_map, WH_TOMBSTONE(h));
    if (!wh_prim.remap(old, old_committed, commit, dest)) {
        (void)wh_region_map_set(old, old_map, (uintptr_t)l);
        /* mremap needs the committed pages to be one mapping; when the
         * kernel kept them as several (commits made at different times),
         * fall back to a new block and a copy. */
        if (wh_prim.release(dest, map_size) != 0) wh_fatal_os("munmap");
        wh_large *nl = wh_large_map(h, request, st);
        if (!nl) return NULL;
        /* Linked right after l, so that it takes l's place in the list
         * (HeapWalk order stays the same as with a remap). */
        nl->prev = l;
        nl->next = l->next;
        if (l->next) l->next->prev = nl; else h->large_tail = nl;
        l->next = nl;
        h->nlarge++;
        void *np = wh_large_payload(nl);
        memcpy(np, wh_large_payload(l), l->requested < request ? l->requested : request);
        wh_large_free(h, l);
        return np;
    }
    /* The old committed pages now live at dest; drop the rest of the old
     * reservation and retarget the map. */
    if (wh_prim.release(old + old_committed, old_map - old_committed) != 0) wh_fatal_os("munmap");
    wh_tool_release(old, old_map);
    /* The moved pages keep the old mapping's advice; a block that grew past
     * 2 MiB gets it now. */
    if (map_size >= WH_HUGE_PAGE && old_map < WH_HUGE_PAGE && wh_options_get()->hugepages)
        (void)wh_prim.hugepage(dest, map_size);
    wh_large *n = (wh_large *)dest;
    n->r.magic = WH_REGION_MAGIC ^ (uintptr_t)n;
    n->r.reserve = n->r.map_size = map_size;
    n->committed = commit;
    n->requested = request;
    if (prev) prev->next = n; else h->large_head = n;
    if (next) next->prev = n; else h->large_tail = n;
    large_seal(h, n);
    wh_tool_change(h, old_payload, wh_large_payload(n), old_request, request, commit - n->offset);
    large_debug_fill(n, false);
    (void)wh_region_map_set(dest, map_size, (uintptr_t)n);
    return wh_large_payload(n);
}

void wh_large_release_all(wh_heap *h) {
    wh_large *l = h->large_head;
    while (l) {
        wh_large *next = l->next;
        size_t size = l->r.map_size;
        wh_tool_release(l, l->committed);
        (void)wh_region_map_set((void *)l, size, 0);
        if (wh_prim.release(l, size) != 0) wh_fatal_os("munmap");
        l = next;
    }
    h->large_head = h->large_tail = NULL;
    h->nlarge = 0;
}
