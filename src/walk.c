/*
 * walk.c - HeapWalk, HeapValidate, HeapSummary and HeapCompact on one block
 * iterator (wh_backend_first / wh_backend_next).
 *
 * HeapWalk is stateless (SPEC 2.11, D12): everything it needs to find the
 * next element is derived from the previous entry's lpData and wFlags, which
 * are checked against the address map and the keyed block headers before
 * they are trusted.  The elements, in order: for each region (index order) a
 * REGION entry, its blocks in address order (busy or free), its uncommitted
 * range if any; then each LFH segment (a REGION entry, then every slot of
 * its groups, busy or free, one by one: lfh.c); then every large block as
 * one BUSY entry.
 *
 * None of these functions keeps state of its own; all run with the heap lock
 * held by the caller (or on a HEAP_NO_SERIALIZE heap).
 */
#include "lfh.h"

static DWORD clamp32(size_t v) { return v > 0xFFFFFFFFu ? 0xFFFFFFFFu : (DWORD)v; }
static BYTE clamp8(size_t v) { return v > 0xFF ? 0xFF : (BYTE)v; }

static void entry_clear_union(PROCESS_HEAP_ENTRY *e) { memset(&e->Block, 0, sizeof e->Region > sizeof e->Block ? sizeof e->Region : sizeof e->Block); }

static void fill_region(wh_region *r, PROCESS_HEAP_ENTRY *e) {
    size_t committed = (size_t)(r->end - (char *)r);
    e->lpData = r;
    e->cbData = clamp32(r->reserve);
    e->cbOverhead = clamp8((size_t)(r->first - (char *)r));
    e->iRegionIndex = clamp8(r->index);
    e->wFlags = PROCESS_HEAP_REGION;
    entry_clear_union(e);
    e->Region.dwCommittedSize = clamp32(committed);
    e->Region.dwUnCommittedSize = clamp32(r->reserve - committed);
    e->Region.lpFirstBlock = r->first;
    e->Region.lpLastBlock = r->end;
}

static void fill_block(wh_region *r, wh_block *b, const wh_binfo *bi, PROCESS_HEAP_ENTRY *e) {
    e->lpData = wh_block_payload(b);
    e->iRegionIndex = clamp8(r->index);
    entry_clear_union(e);
    if (bi->flags & WH_BF_BUSY) {
        size_t req = wh_binfo_requested(bi);
        e->cbData = clamp32(req);
        e->cbOverhead = clamp8(bi->size - req);
        e->wFlags = PROCESS_HEAP_ENTRY_BUSY;
    } else {
        /* What an allocation could use: less the padding every block keeps
         * (debug tail, tool slack), so that HeapCompact's figure fits. */
        size_t keep = WH_HDR + wh_pad();
        e->cbData = clamp32(bi->size > keep ? bi->size - keep : 0);
        e->cbOverhead = clamp8(keep);
        e->wFlags = 0;
    }
}

static void fill_uncommitted(wh_region *r, PROCESS_HEAP_ENTRY *e) {
    e->lpData = r->end;
    e->cbData = clamp32(r->reserve - (size_t)(r->end - (char *)r));
    e->cbOverhead = 0;
    e->iRegionIndex = clamp8(r->index);
    e->wFlags = PROCESS_HEAP_UNCOMMITTED_RANGE;
    entry_clear_union(e);
}

static void fill_large(wh_large *l, PROCESS_HEAP_ENTRY *e) {
    e->lpData = wh_large_payload(l);
    e->cbData = clamp32(l->requested);
    e->cbOverhead = 0;
    e->iRegionIndex = WH_LARGE_REGION_INDEX;
    e->wFlags = PROCESS_HEAP_ENTRY_BUSY;
    entry_clear_union(e);
}

static wh_status after_lfh(wh_heap *h, PROCESS_HEAP_ENTRY *e, bool *end);

/* The element after region r's uncommitted range (or its last block). */
static wh_status after_uncommitted(wh_heap *h, wh_region *r, PROCESS_HEAP_ENTRY *e, bool *end) {
    if (r->next) {
        fill_region(r->next, e);
        return WH_OK;
    }
    if (h->lfh_head) {
        wh_lfh_walk_region(h->lfh_head, e);
        return WH_OK;
    }
    return after_lfh(h, e, end);
}

/* The element after the last region (BLOCKS and LFH): the large blocks. */
static wh_status after_lfh(wh_heap *h, PROCESS_HEAP_ENTRY *e, bool *end) {
    if (h->large_head) {
        fill_large(h->large_head, e);
        return WH_OK;
    }
    *end = true;
    return WH_OK;
}

static wh_status after_blocks(wh_heap *h, wh_region *r, PROCESS_HEAP_ENTRY *e, bool *end) {
    if (r->end < (char *)r + r->reserve) {
        fill_uncommitted(r, e);
        return WH_OK;
    }
    return after_uncommitted(h, r, e, end);
}

wh_status wh_walk_next(wh_heap *h, PROCESS_HEAP_ENTRY *e, bool *end) {
    *end = false;
    if (!e->lpData) {
        fill_region(&h->region0, e);
        return WH_OK;
    }
    uintptr_t me = wh_region_map_get(e->lpData);
    if (wh_lfh_group_of_entry(me) || (me && !(me & 3) && ((wh_region *)me)->kind == WH_REGION_LFH)) {
        bool past;
        wh_status st = wh_lfh_walk_next(h, e, end, &past);
        if (st == WH_OK && past) return after_lfh(h, e, end);
        return st;
    }
    wh_region *r = wh_region_of(e->lpData);
    if (!r || r->heap != h) return WH_EINVALID;
    wh_binfo bi;
    wh_status st = WH_OK;
    if (r->kind == WH_REGION_LARGE) {
        wh_large *l;
        if ((e->wFlags & (PROCESS_HEAP_REGION | PROCESS_HEAP_UNCOMMITTED_RANGE)) || wh_large_lookup(h, r, e->lpData, &l) != WH_OK)
            return WH_EINVALID;
        if (l->next) {
            fill_large(l->next, e);
            return WH_OK;
        }
        *end = true;
        return WH_OK;
    }
    if (e->wFlags & PROCESS_HEAP_REGION) {
        if (e->lpData != (void *)r) return WH_EINVALID;
        wh_block *b = wh_backend_first(h, r, &bi, &st);
        if (b) {
            fill_block(r, b, &bi, e);
            return WH_OK;
        }
        if (st != WH_OK) return st;
        return after_blocks(h, r, e, end);
    }
    if (e->wFlags & PROCESS_HEAP_UNCOMMITTED_RANGE) {
        if (e->lpData != (void *)r->end) return WH_EINVALID;
        return after_uncommitted(h, r, e, end);
    }
    /* A block entry: its lpData must be a payload with a valid header. */
    wh_block *b = wh_block_of_payload(e->lpData);
    if (((uintptr_t)e->lpData & (WH_ALIGN - 1)) || (char *)b < r->first || (char *)b + WH_MIN_BLOCK > r->end ||
        !wh_block_read(h, b, &bi) || bi.size < WH_MIN_BLOCK || bi.size > (size_t)(r->end - (char *)b))
        return WH_EINVALID;
    wh_block *n = wh_backend_next(h, r, b, &bi, &st);
    if (n) {
        fill_block(r, n, &bi, e);
        return WH_OK;
    }
    if (st != WH_OK) return st;
    return after_blocks(h, r, e, end);
}

static bool large_list_is_valid(wh_heap *h) {
    size_t n = 0;
    wh_large *prev = NULL;
    for (wh_large *l = h->large_head; l; l = l->next) {
        if (++n > h->nlarge) return false;
        wh_large *same;
        if (wh_region_map_get(l) != (uintptr_t)l || wh_large_lookup(h, &l->r, wh_large_payload(l), &same) != WH_OK ||
            l->prev != prev)
            return false;
        prev = l;
    }
    return n == h->nlarge && prev == h->large_tail;
}

bool wh_walk_validate_heap(wh_heap *h) {
    if (h->magic != (WH_HEAP_MAGIC ^ (uintptr_t)h)) return false;
    if (!wh_backend_is_valid(h) || !wh_lfh_is_valid(h)) return false;
    return large_list_is_valid(h);
}

bool wh_walk_validate_block(wh_heap *h, const void *p) {
    wh_group *g = wh_lfh_group_of_entry(wh_region_map_get(p));
    if (g) {
        size_t req;
        return g->heap == h && wh_lfh_lookup(g, p, &req) == WH_OK;
    }
    wh_region *r = wh_region_of(p);
    if (!r || r->heap != h) return false;
    if (r->kind == WH_REGION_LARGE) {
        wh_large *l;
        return wh_large_lookup(h, r, p, &l) == WH_OK;
    }
    if (r->kind != WH_REGION_BLOCKS) return false;
    wh_block *b;
    wh_binfo bi;
    return wh_backend_lookup(h, r, p, &b, &bi) == WH_OK;
}

/* Fill s from the heap's structures; false if a damaged header stopped the
 * count (s is then incomplete). */
bool wh_walk_summary(wh_heap *h, HEAP_SUMMARY *s) {
    size_t allocated = 0, committed = 0, reserved = 0;
    for (wh_region *r = &h->region0; r; r = r->next) {
        wh_binfo bi;
        wh_status st = WH_OK;
        for (wh_block *b = wh_backend_first(h, r, &bi, &st); b; b = wh_backend_next(h, r, b, &bi, &st))
            if (bi.flags & WH_BF_BUSY) allocated += wh_binfo_requested(&bi);
        if (st != WH_OK) return false;
        committed += (size_t)(r->end - (char *)r);
        reserved += r->reserve;
    }
    wh_lfh_summary(h, &allocated, &committed, &reserved);
    for (wh_large *l = h->large_head; l; l = l->next) {
        allocated += l->requested;
        committed += l->committed;
        reserved += l->r.map_size;
    }
    s->cbAllocated = allocated;
    s->cbCommitted = committed;
    s->cbReserved = reserved;
    s->cbMaxReserve = h->max_size ? h->max_size : reserved;
    return true;
}

size_t wh_walk_largest_free(wh_heap *h, bool *ok) {
    size_t best = 0;
    *ok = true;
    /* Under the page heap no block comes from the back end's free blocks:
     * a fixed heap's room is what its charge leaves (large.c), a growable
     * heap's is still reported as its largest free block. */
    if ((wh_debug_flags() & WH_DBG_GUARD) && !(h->flags & HEAP_GROWABLE)) return wh_large_fixed_largest(h);
    for (wh_region *r = &h->region0; r; r = r->next) {
        wh_binfo bi;
        wh_status st = WH_OK;
        for (wh_block *b = wh_backend_first(h, r, &bi, &st); b; b = wh_backend_next(h, r, b, &bi, &st))
            if (!(bi.flags & WH_BF_BUSY) && bi.size > WH_HDR + wh_pad() && bi.size - WH_HDR - wh_pad() > best)
                best = bi.size - WH_HDR - wh_pad();
        if (st != WH_OK) *ok = false;
    }
    return best;
}
