/*
 * backend.c - the general block allocator inside a heap's regions.
 *
 * A TLSF-style good fit: free blocks sit on segregated lists indexed by size
 * class (32 linear classes in 16-byte steps below 512 bytes, then eight
 * classes per power of two up to 1 MiB, and one list for everything larger),
 * and a two-word bitmap says which lists are non-empty, so finding a block is
 * a couple of bit scans: O(1).  Requests are rounded up to the next class
 * boundary before the scan, so any block on the chosen list fits; if none
 * does, the request's own class is searched first-fit, so a block that fits
 * exactly is found even when it is not at a region's end.
 *
 * Blocks tile each region from `first` to the committed `end`; every block
 * carries the 16-byte encoded header of internal.h with its size and the
 * size of its physical predecessor (boundary tags), so freeing merges with
 * both neighbours in O(1).  When no free block fits, the last block of a
 * region with uncommitted reserve is extended by committing more pages; a
 * growable heap then adds a region; a fixed heap fails.
 *
 * Safety: every header is decoded through its keyed check before it is
 * trusted, free-list links are stored encoded and checked for range,
 * alignment and back-pointer consistency before an unlink, and every check
 * that a call needs runs before the call modifies anything - so a call that
 * finds corruption returns it with the heap unchanged.  A block that is freed
 * always has its own header rewritten as free (even when it is merged into
 * its predecessor), so a second free is recognised from block state.
 *
 * Locking: every function here runs with the heap lock held (or on a
 * HEAP_NO_SERIALIZE heap).
 */
#include "internal.h"

/* ---- size classes ---- */

#define LINEAR_LIMIT 512u
#define BIG_CLASS (WH_NLISTS - 1)

unsigned wh_backend_class(size_t bsize) {
    if (bsize < LINEAR_LIMIT) return (unsigned)(bsize >> 4);
    if (bsize >= ((size_t)1 << 20)) return BIG_CLASS;
    unsigned fl = 63u - (unsigned)__builtin_clzll((unsigned long long)bsize);
    unsigned sl = (unsigned)(bsize >> (fl - 3)) & 7u;
    return 32u + (fl - 9u) * 8u + sl;
}
_Static_assert(32 + (19 - 9) * 8 + 7 == WH_NLISTS - 2, "class table covers up to 1 MiB");

/* The smallest class all of whose blocks are >= bsize. */
static unsigned class_search(size_t bsize) {
    if (bsize < LINEAR_LIMIT) return (unsigned)(bsize >> 4);
    unsigned fl = 63u - (unsigned)__builtin_clzll((unsigned long long)bsize);
    size_t step = (size_t)1 << (fl - 3);
    size_t up = (bsize + step - 1) & ~(step - 1);
    return wh_backend_class(up);
}

static inline size_t block_size_for(size_t request) { return wh_block_size_for(request); }

/* ---- bitmap ---- */

static inline void bit_set(wh_heap *h, unsigned c) { h->bitmap[c >> 6] |= 1ull << (c & 63); }
static inline void bit_clear(wh_heap *h, unsigned c) { h->bitmap[c >> 6] &= ~(1ull << (c & 63)); }

/* First non-empty class >= c, or -1. */
static int bit_find_from(const wh_heap *h, unsigned c) {
    for (unsigned w = c >> 6; w < 2; w++) {
        uint64_t m = h->bitmap[w];
        if (w == (c >> 6)) m &= ~0ull << (c & 63);
        if (m) return (int)(w * 64 + (unsigned)__builtin_ctzll(m));
    }
    return -1;
}

/* ---- headers ---- */

static inline void hdr_write(const wh_heap *h, wh_block *b, size_t size, size_t prev, unsigned flags, unsigned unused) {
    wh_binfo bi = { .size = size, .prev = prev, .flags = flags, .unused = unused };
    wh_block_write(h, b, &bi);
}

/* Decode the header at b, which must lie in r; WH_OK or WH_EHEADER. */
static wh_status hdr_read(const wh_heap *h, const wh_region *r, const wh_block *b, wh_binfo *bi) {
    if ((char *)b < r->first || (char *)b + WH_MIN_BLOCK > r->end || ((uintptr_t)b & (WH_ALIGN - 1)))
        return WH_EHEADER;
    if (!wh_block_read(h, b, bi)) return WH_EHEADER;
    if (bi->size < WH_MIN_BLOCK || (bi->size & (WH_ALIGN - 1)) || bi->size > (size_t)(r->end - (char *)b))
        return WH_EHEADER;
    if ((bi->flags & WH_BF_BUSY) && bi->unused > bi->size - WH_HDR) return WH_EHEADER;
    return WH_OK;
}

/* Rewrite only the `prev` field of the header at b (a valid header). */
static void hdr_set_prev(const wh_heap *h, wh_block *b, size_t prev) {
    wh_binfo bi = { 0 };
    bool ok = wh_block_read(h, b, &bi);
    WH_ASSERT(ok);
    (void)ok;
    bi.prev = prev;
    wh_block_write(h, b, &bi);
}

/* After b (in r) took size `size`: fix the successor's prev or r->last. */
static void link_successor(const wh_heap *h, wh_region *r, wh_block *b, size_t size) {
    char *n = (char *)b + size;
    if (n < r->end)
        hdr_set_prev(h, (wh_block *)n, size);
    else
        r->last = (char *)b;
}

/* ---- debug heap (D18): fills and checks, no-ops unless WINHEAP_DEBUG ---- */

/* A busy block of `size` bytes now holds `request` bytes: lay the tail
 * padding (and the new-block pattern over the request if `fresh`). */
static void dbg_busy(wh_block *b, size_t size, size_t request, bool fresh) {
    unsigned f = wh_debug_flags();
    if (WH_LIKELY(!f)) return;
    char *p = wh_block_payload(b);
    if (fresh && (f & WH_DBG_FREE)) wh_debug_fill(p, request, WH_FILL_NEW);
    if (f & WH_DBG_TAIL) wh_debug_fill(p + request, size - WH_HDR - request, WH_FILL_TAIL);
}
/*
 * Free checking keeps one invariant: the body of every free block - its
 * bytes past the header and the two links, [b + WH_MIN_BLOCK, b + size) -
 * holds the free pattern, except where the program wrote after free.  So
 * each change fills only the bytes that become body (a freed block, the
 * header and links of a neighbour merged into it, pages just committed) and
 * checks only the body bytes it takes away (the part of a free block that is
 * handed out, and the 32 bytes behind it that become the remainder's header
 * and links).  The rest of a big free block is neither read nor written
 * again; HeapValidate(h, 0, NULL) checks every free byte.  Committed pages
 * arrive zeroed (fresh, or decommitted by HeapOptimizeResources and
 * committed again): the code that commits them fills them.
 */

/* Fill [from, to) with the free pattern (nothing if from >= to). */
static void dbg_fill_free(char *from, char *to) {
    if (WH_UNLIKELY(wh_debug_flags() & WH_DBG_FREE) && from < to) wh_debug_fill(from, (size_t)(to - from), WH_FILL_FREE);
}
/* True if [from, to) holds the free pattern (or free checking is off). */
static bool dbg_check_free(const char *from, const char *to) {
    return WH_LIKELY(!(wh_debug_flags() & WH_DBG_FREE)) || from >= to ||
           wh_debug_check(from, (size_t)(to - from), WH_FILL_FREE);
}
/* Fill the whole body of free block b (a block whose bytes are all new). */
static void dbg_free(wh_block *b, size_t size) { dbg_fill_free((char *)b + WH_MIN_BLOCK, (char *)b + size); }
/* The whole body of free block b holds the pattern (HeapValidate). */
static bool dbg_free_ok(const wh_block *b, size_t size) {
    return dbg_check_free((const char *)b + WH_MIN_BLOCK, (const char *)b + size);
}
/* The body bytes of free block b (`size` bytes) that a block of `take`
 * bytes carved from its start uses up - its own, and the remainder's header
 * and links behind it - hold the pattern. */
static bool dbg_take_ok(const wh_block *b, size_t size, size_t take) {
    size_t end = take + WH_MIN_BLOCK < size ? take + WH_MIN_BLOCK : size;
    return dbg_check_free((const char *)b + WH_MIN_BLOCK, (const char *)b + end);
}
static bool dbg_tail_ok(wh_block *b, const wh_binfo *bi) {
    if (WH_LIKELY(!(wh_debug_flags() & WH_DBG_TAIL))) return true;
    size_t req = wh_binfo_requested(bi);
    return wh_debug_check((char *)wh_block_payload(b) + req, bi->size - WH_HDR - req, WH_FILL_TAIL);
}

/* ---- zero on free (every build; the debug heap's free checking uses its
 * pattern instead) ----
 *
 * A freed block's payload is zeroed, so no data passes from one owner to
 * the next, and the header and links of a block that merges into another
 * are zeroed too, so that a block carved later never shows the program a
 * keyed header or an encoded link (they would give away the heap's keys;
 * before 2026-12-07 merged headers stayed, reading free, to recognise a
 * second free: wh_backend_lookup now tells that from where the pointer
 * lies).  The body of a free block (past its header and links) therefore
 * holds only zeros; anything else is a write after free: it is checked on
 * a sample of the body when the block is reused, and over the whole body by
 * HeapValidate. */

/* Check [p, p+n) (16-byte aligned, n a multiple of 16) for a write after
 * free: every byte is zero. */
WH_NO_ASAN static bool body_clean(const char *p, size_t n) {
    uint64_t acc = 0;
    wh_tool_enter();
    for (size_t i = 0; i < n; i += 16) acc |= *(const volatile uint64_t *)(p + i) | *(const volatile uint64_t *)(p + i + 8);
    wh_tool_leave();
    return acc == 0;
}

/* The body of free block b of `size` bytes is clean: all of it, or (on
 * reuse) its first 256 bytes and its last 16. */
static bool free_body_ok(const wh_block *b, size_t size, bool all) {
    if (!wh_zero_on_free() || (wh_debug_flags() & WH_DBG_FREE)) return true; /* the pattern check covers it */
    const char *body = (const char *)b + WH_MIN_BLOCK;
    size_t n = size - WH_MIN_BLOCK;
    if (all || n <= 272) return body_clean(body, n);
    return body_clean(body, 256) && body_clean(body + n - 16, 16);
}

/* Zero [p, p+n) that the program may no longer touch (ASan: no check). */
WH_NO_ASAN static void scrub(void *p, size_t n) {
    volatile char *c = p;
    if (!wh_zero_on_free()) return;
    wh_tool_enter();
    if (!WH_TOOL_ASAN && n >= 64) {
        memset(p, 0, n); /* (ASan intercepts memset and would check the poison) */
    } else {
        size_t i = 0;
        if (((uintptr_t)p & 7) == 0)
            for (; i + 8 <= n; i += 8) *(volatile uint64_t *)(c + i) = 0;
        for (; i < n; i++) c[i] = 0;
    }
    wh_tool_leave();
}

/* Zero the header (and links) of a block that another block absorbs: key
 * material, cleared whatever the zeroing of data does. */
WH_NO_ASAN static void scrub_meta(void *p, size_t n) {
    wh_tool_enter();
    for (size_t i = 0; i < n; i += 8) *(volatile uint64_t *)((char *)p + i) = 0;
    wh_tool_leave();
}

/* ---- free lists ---- */

static inline wh_freelinks *links_of(wh_block *b) { return (wh_freelinks *)((char *)b + WH_HDR); }
/* The links live inside the free block: read and write them only through
 * wh_link_load / wh_link_store (toolhooks.h). */
static inline uintptr_t next_of(wh_block *b) { return wh_link_load(&links_of(b)->next); }
static inline uintptr_t prev_of(wh_block *b) { return wh_link_load(&links_of(b)->prev); }
static inline void set_next(wh_block *b, uintptr_t v) { wh_link_store(&links_of(b)->next, v); }
static inline void set_prev(wh_block *b, uintptr_t v) { wh_link_store(&links_of(b)->prev, v); }
static inline uintptr_t link_enc(const wh_heap *h, const wh_block *p) { return (uintptr_t)p ^ h->key_link; }

/* Decode a stored link; false if it points outside h's regions or is
 * misaligned (a redirected list is never followed). */
static bool link_dec(const wh_heap *h, uintptr_t stored, wh_block **out) {
    uintptr_t p = stored ^ h->key_link;
    if (p == 0) {
        *out = NULL;
        return true;
    }
    if (p & (WH_ALIGN - 1)) return false;
    wh_region *r = wh_region_of((void *)p);
    if (!r || r->heap != h || r->kind != WH_REGION_BLOCKS) return false;
    if ((char *)p < r->first || (char *)p + WH_MIN_BLOCK > r->end) return false;
    *out = (wh_block *)p;
    return true;
}

static void list_insert(wh_heap *h, wh_block *b, size_t size) {
    unsigned c = wh_backend_class(size);
    wh_block *head = h->lists[c];
    set_next(b, link_enc(h, head));
    set_prev(b, link_enc(h, NULL));
    if (head) set_prev(head, link_enc(h, b));
    h->lists[c] = b;
    bit_set(h, c);
}

/* Check that free block b of `size` can be unlinked safely: its links
 * decode, and its neighbours on the list point back at it. */
static wh_status list_check(const wh_heap *h, wh_block *b, size_t size) {
    unsigned c = wh_backend_class(size);
    wh_block *next, *prev;
    if (!link_dec(h, next_of(b), &next) || !link_dec(h, prev_of(b), &prev)) return WH_ELIST;
    if (prev ? next_of(prev) != link_enc(h, b) : h->lists[c] != b) return WH_ELIST;
    if (next && prev_of(next) != link_enc(h, b)) return WH_ELIST;
    return WH_OK;
}

/* Unlink b; list_check(b) passed. */
static void list_unlink(wh_heap *h, wh_block *b, size_t size) {
    unsigned c = wh_backend_class(size);
    wh_block *next = NULL, *prev = NULL;
    (void)link_dec(h, next_of(b), &next);
    (void)link_dec(h, prev_of(b), &prev);
    if (prev)
        set_next(prev, next_of(b));
    else {
        h->lists[c] = next;
        if (!next) bit_clear(h, c);
    }
    if (next) set_prev(next, prev_of(b));
}

/* ---- region layout ---- */

void wh_backend_region_init(wh_heap *h, wh_region *r) {
    size_t n = (size_t)(r->end - r->first);
    if (n < WH_MIN_BLOCK) {
        r->last = NULL;
        return;
    }
    wh_block *b = (wh_block *)r->first;
    wh_tool_noaccess(b, n);
    hdr_write(h, b, n, 0, 0, 0);
    dbg_free(b, n);
    r->last = r->first;
    list_insert(h, b, n);
}

/* Take the free block b (in r) off its list, having checked its header,
 * its links and (free checking) the body bytes that a block of `take`
 * bytes carved from it will use.  WH_OK with *bi, or corruption with
 * nothing changed. */
static wh_status take_free(wh_heap *h, wh_region *r, wh_block *b, wh_binfo *bi, size_t take) {
    wh_status st = hdr_read(h, r, b, bi);
    if (st != WH_OK) return st;
    if (bi->flags & WH_BF_BUSY) return WH_ELIST;
    st = list_check(h, b, bi->size);
    if (st != WH_OK) return st;
    if (!dbg_take_ok(b, bi->size, take) || !free_body_ok(b, bi->size, false)) return WH_EFREEMOD;
    list_unlink(h, b, bi->size);
    return WH_OK;
}

/*
 * Make room at the end of some region for a block of bsize bytes by
 * committing more of it, or (growable heaps) by adding a region.  Returns a
 * free block of at least bsize bytes, already off the free lists, with *rout
 * its region; NULL with *st on failure (nothing changed).
 */
static wh_block *grow(wh_heap *h, size_t bsize, wh_region **rout, wh_binfo *bi, wh_status *st) {
    for (wh_region *r = &h->region0; r; r = r->next) {
        char *limit = (char *)r + r->reserve;
        wh_block *last = (wh_block *)r->last;
        wh_binfo lb = { 0 };
        bool last_free = false;
        if (last) {
            if (hdr_read(h, r, last, &lb) != WH_OK) { *st = WH_EHEADER; return NULL; }
            last_free = !(lb.flags & WH_BF_BUSY);
        }
        char *start = last_free ? (char *)last : (last ? r->end : r->first);
        /* A busy last block may have taken a remainder too small to split
         * off at the old committed end: take that slack back, so that
         * filling a heap page by page wastes nothing. */
        size_t keep = 0;
        if (last && !last_free) {
            keep = block_size_for(wh_binfo_requested(&lb) + wh_pad());
            if (keep < lb.size) start = (char *)last + keep;
            else keep = 0;
        }
        if ((size_t)(limit - start) < bsize) continue;
        if (last_free) {
            wh_status s = list_check(h, last, lb.size);
            if (s != WH_OK) { *st = s; return NULL; }
            /* the part of it the new block takes (the rest keeps its pattern) */
            if (!dbg_take_ok(last, lb.size, bsize)) { *st = WH_EFREEMOD; return NULL; }
        }
        char *old_end = r->end;
        if (wh_region_commit_to(h, r, start + bsize) != WH_OK) { *st = WH_ENOMEM; return NULL; }
        wh_tool_noaccess(old_end, (size_t)(r->end - old_end));
        wh_block *b = (wh_block *)start;
        size_t prev = last ? (last_free ? lb.prev : lb.size) : 0;
        if (last_free) list_unlink(h, last, lb.size);
        if (keep) { /* shrink the busy last block to what it needs */
            hdr_write(h, last, keep, lb.prev, WH_BF_BUSY, (unsigned)(keep - WH_HDR - wh_binfo_requested(&lb)));
            prev = keep;
        }
        size_t size = (size_t)(r->end - start);
        hdr_write(h, b, size, prev, 0, 0);
        /* The body of a free last block holds the pattern up to the old end
         * already; the pages committed now (and a busy block's slack) not. */
        dbg_fill_free(last_free ? old_end : start + WH_MIN_BLOCK, r->end);
        r->last = start;
        *rout = r;
        *bi = (wh_binfo){ .size = size, .prev = prev, .flags = 0, .unused = 0 };
        return b;
    }
    if (!(h->flags & HEAP_GROWABLE)) { *st = WH_ENOMEM; return NULL; }
    wh_region *r = wh_region_add(h, bsize);
    if (!r) { *st = WH_ENOMEM; return NULL; }
    wh_backend_region_init(h, r);
    if (!r->last) { *st = WH_ENOMEM; return NULL; }
    wh_block *b = (wh_block *)r->last;
    wh_status s = take_free(h, r, b, bi, bsize);
    if (s != WH_OK) { *st = s; return NULL; }
    *rout = r;
    return b;
}

/* Mark b (free, off the lists, `size` bytes, in r) busy for `request`,
 * splitting off the tail as a free block when it is big enough. */
static void carve(wh_heap *h, wh_region *r, wh_block *b, size_t size, size_t prev, size_t bsize, size_t request) {
    size_t rem = size - bsize;
    if (rem >= WH_MIN_BLOCK) {
        wh_block *t = (wh_block *)((char *)b + bsize);
        hdr_write(h, t, rem, bsize, 0, 0);
        link_successor(h, r, t, rem);
        list_insert(h, t, rem);
        size = bsize;
    }
    hdr_write(h, b, size, prev, WH_BF_BUSY, (unsigned)(size - WH_HDR - request));
    if (rem < WH_MIN_BLOCK) link_successor(h, r, b, size);
    scrub_meta(wh_block_payload(b), WH_MIN_BLOCK - WH_HDR); /* the old free-list links */
    wh_tool_alloc(h, wh_block_payload(b), request, size - WH_HDR);
    dbg_busy(b, size, request, true);
}

void *wh_backend_alloc(wh_heap *h, size_t request, wh_status *st) {
    WH_ASSERT(request < ((size_t)1 << 20));
    size_t bsize = block_size_for(request + wh_pad());
    wh_binfo bi = { 0 };
    wh_region *r = NULL;
    wh_block *b = NULL;
    int c = bit_find_from(h, class_search(bsize));
    if (c >= 0) {
        b = h->lists[c];
        r = wh_region_of(b);
        if (!r || r->heap != h) { *st = WH_ELIST; return NULL; }
        wh_status s = take_free(h, r, b, &bi, bsize);
        if (s != WH_OK) { *st = s; return NULL; }
    } else {
        /* First fit within the request's own class (bounded by the list). */
        unsigned own = wh_backend_class(bsize);
        wh_block *it = h->lists[own];
        size_t guard = 0;
        while (it && guard++ < ((size_t)1 << 20)) {
            wh_region *ir = wh_region_of(it);
            wh_binfo ib;
            if (!ir || ir->heap != h || hdr_read(h, ir, it, &ib) != WH_OK || (ib.flags & WH_BF_BUSY)) {
                *st = WH_ELIST;
                return NULL;
            }
            if (ib.size >= bsize) {
                wh_status s = take_free(h, ir, it, &bi, bsize);
                if (s != WH_OK) { *st = s; return NULL; }
                b = it;
                r = ir;
                break;
            }
            wh_block *nx;
            if (!link_dec(h, next_of(it), &nx)) { *st = WH_ELIST; return NULL; }
            it = nx;
        }
        if (!b) {
            b = grow(h, bsize, &r, &bi, st);
            if (!b) return NULL;
        }
    }
    carve(h, r, b, bi.size, bi.prev, bsize, request);
    return wh_block_payload(b);
}

void *wh_backend_alloc_aligned(wh_heap *h, size_t request, size_t align, wh_status *st) {
    WH_ASSERT(align > WH_ALIGN && (align & (align - 1)) == 0);
    /* Room for the block, a free block in front of it, and the alignment. */
    size_t padded = request + align + WH_MIN_BLOCK;
    if (padded >= ((size_t)1 << 20)) {
        *st = WH_ENOMEM;
        return NULL;
    }
    char *p = wh_backend_alloc(h, padded, st);
    if (!p) return NULL;
    wh_block *b = wh_block_of_payload(p);
    wh_region *r = wh_region_of(b);
    wh_binfo bi;
    if (!r || hdr_read(h, r, b, &bi) != WH_OK) {
        *st = WH_EHEADER;
        return NULL;
    }
    char *q = (char *)wh_align_up((uintptr_t)p, align);
    if (q != p && (size_t)(q - p) < WH_MIN_BLOCK) q += align;
    if (q != p) {
        /* Give the front back as a free block.  Its predecessor is busy: b
         * was carved from a free block, and free blocks never touch. */
        size_t front = (size_t)(q - p);
        wh_block *nb = wh_block_of_payload(q);
        size_t nsize = bi.size - front;
        hdr_write(h, b, front, bi.prev, 0, 0);
        hdr_write(h, nb, nsize, front, WH_BF_BUSY, (unsigned)(nsize - WH_HDR - (padded - front)));
        link_successor(h, r, nb, nsize);
        wh_tool_free(h, p, bi.size - WH_HDR);
        wh_tool_alloc(h, q, padded - front, nsize - WH_HDR);
        dbg_free(b, front);
        list_insert(h, b, front);
        b = nb;
        if (hdr_read(h, r, b, &bi) != WH_OK) {
            *st = WH_EHEADER;
            return NULL;
        }
    }
    /* Trim the tail down to the request. */
    *st = wh_backend_resize(h, r, b, &bi, request);
    return *st == WH_OK ? q : NULL;
}

wh_status wh_backend_lookup(wh_heap *h, wh_region *r, const void *p, wh_block **out, wh_binfo *bi) {
    wh_block *b = wh_block_of_payload(p);
    if (((uintptr_t)p & (WH_ALIGN - 1)) || (char *)b < r->first || (char *)b + WH_MIN_BLOCK > r->end)
        return WH_EINVALID;
    if (hdr_read(h, r, b, bi) != WH_OK) {
        /* Not a valid header: a damaged header at a real block boundary, a
         * pointer into a live block (interior), or one into free memory: a
         * freed block that merged into a neighbour, whose header is gone.
         * Walk the region to tell (error path only). */
        wh_binfo wb;
        for (char *q = r->first; q < r->end;) {
            if (hdr_read(h, r, (wh_block *)q, &wb) != WH_OK || q == (char *)b) return WH_EHEADER;
            if ((char *)b < q + wb.size) return (wb.flags & WH_BF_BUSY) ? WH_EINVALID : WH_EDOUBLE;
            q += wb.size;
        }
        return WH_EINVALID;
    }
    if (!(bi->flags & WH_BF_BUSY)) return WH_EDOUBLE;
    if (!dbg_tail_ok(b, bi)) return WH_ETAIL;
    *out = b;
    return WH_OK;
}

/* Read the neighbours of block b (size bi->size) in r and check them:
 * the successor's prev must equal b's size and the predecessor's size must
 * equal b's prev.  Outputs are NULL when the neighbour does not exist. */
static wh_status neighbours(wh_heap *h, wh_region *r, wh_block *b, const wh_binfo *bi, wh_block **nx, wh_binfo *nbi,
                            wh_block **pv, wh_binfo *pbi) {
    *nx = NULL;
    *pv = NULL;
    char *n = (char *)b + bi->size;
    if (n < r->end) {
        if (hdr_read(h, r, (wh_block *)n, nbi) != WH_OK || nbi->prev != bi->size) return WH_EHEADER;
        *nx = (wh_block *)n;
    } else if (n != r->end || r->last != (char *)b) {
        return WH_EHEADER;
    }
    if ((char *)b != r->first) {
        char *p = (char *)b - bi->prev;
        if (bi->prev == 0 || p < r->first) return WH_EHEADER;
        if (hdr_read(h, r, (wh_block *)p, pbi) != WH_OK || pbi->size != bi->prev) return WH_EHEADER;
        *pv = (wh_block *)p;
    } else if (bi->prev != 0) {
        return WH_EHEADER;
    }
    return WH_OK;
}

wh_status wh_backend_free(wh_heap *h, wh_region *r, wh_block *b, const wh_binfo *bi) {
    wh_block *nx, *pv;
    wh_binfo nbi, pbi;
    wh_status st = neighbours(h, r, b, bi, &nx, &nbi, &pv, &pbi);
    if (st != WH_OK) return st;
    bool merge_next = nx && !(nbi.flags & WH_BF_BUSY);
    bool merge_prev = pv && !(pbi.flags & WH_BF_BUSY);
    if (merge_next && (st = list_check(h, nx, nbi.size)) != WH_OK) return st;
    if (merge_prev && (st = list_check(h, pv, pbi.size)) != WH_OK) return st;
    /* Every check passed: modify.  Free checking fills what becomes body:
     * b's payload past its links (all of b when it joins its predecessor)
     * and the header and links of a successor it absorbs. */
    char *fill_from = merge_prev ? (char *)b : (char *)b + WH_MIN_BLOCK;
    char *fill_to = (char *)b + bi->size + (merge_next ? WH_MIN_BLOCK : 0);
    if (!(wh_debug_flags() & WH_DBG_FREE)) scrub(wh_block_payload(b), bi->size - WH_HDR);
    wh_tool_free(h, wh_block_payload(b), bi->size - WH_HDR);
    wh_block *start = b;
    size_t size = bi->size, prev = bi->prev;
    if (merge_prev)
        scrub_meta(b, WH_HDR); /* b's header now lies inside its predecessor */
    else
        hdr_write(h, b, bi->size, bi->prev, 0, 0); /* b itself reads free from now on */
    if (merge_next) {
        list_unlink(h, nx, nbi.size);
        scrub_meta(nx, WH_MIN_BLOCK); /* its header and links */
        size += nbi.size;
    }
    if (merge_prev) {
        list_unlink(h, pv, pbi.size);
        start = pv;
        size += pbi.size;
        prev = pbi.prev;
    }
    hdr_write(h, start, size, prev, 0, 0);
    dbg_fill_free(fill_from, fill_to);
    link_successor(h, r, start, size);
    list_insert(h, start, size);
    return WH_OK;
}

wh_status wh_backend_resize(wh_heap *h, wh_region *r, wh_block *b, const wh_binfo *bi, size_t request) {
    size_t nbsize = block_size_for(request + wh_pad());
    void *p = wh_block_payload(b);
    size_t old = wh_binfo_requested(bi);
    /* The block's capacity holds the new size and keeps it: a growth into
     * the room an earlier growth took (below), or a shrink that leaves too
     * little to give back.  Only b's own header (checked by the caller's
     * lookup) changes, so the neighbours are not read. */
    if (nbsize <= bi->size && (request >= old || bi->size - nbsize < WH_MIN_BLOCK)) {
        hdr_write(h, b, bi->size, bi->prev, WH_BF_BUSY, (unsigned)(bi->size - WH_HDR - request));
        wh_tool_change(h, p, p, old, request, bi->size - WH_HDR);
        dbg_busy(b, bi->size, request, false);
        return WH_OK;
    }
    wh_block *nx, *pv;
    wh_binfo nbi, pbi;
    wh_status st = neighbours(h, r, b, bi, &nx, &nbi, &pv, &pbi);
    if (st != WH_OK) return st;
    bool next_free = nx && !(nbi.flags & WH_BF_BUSY);
    if (next_free && (st = list_check(h, nx, nbi.size)) != WH_OK) return st;

    if (nbsize <= bi->size) {
        /* Shrink (always possible): give the tail back. */
        size_t rem = bi->size - nbsize;
        hdr_write(h, b, nbsize, bi->prev, WH_BF_BUSY, (unsigned)(nbsize - WH_HDR - request));
        wh_block *t = (wh_block *)((char *)b + nbsize);
        if (!(wh_debug_flags() & WH_DBG_FREE)) scrub(t, rem); /* the program's old bytes */
        wh_tool_change(h, p, p, old, request, nbsize - WH_HDR);
        dbg_busy(b, nbsize, request, false);
        /* new body: the given-back tail and a free successor's header and links */
        char *fill_to = (char *)t + rem + (next_free ? WH_MIN_BLOCK : 0);
        if (next_free) {
            list_unlink(h, nx, nbi.size);
            scrub_meta(nx, WH_MIN_BLOCK);
            rem += nbi.size;
        }
        hdr_write(h, t, rem, nbsize, 0, 0);
        dbg_fill_free((char *)t + WH_MIN_BLOCK, fill_to);
        link_successor(h, r, t, rem);
        list_insert(h, t, rem);
        return WH_OK;
    }

    /* Grow into the following free block and, at the region's end, into
     * uncommitted reserve. */
    size_t avail = bi->size + (next_free ? nbi.size : 0);
    char *run_end = (char *)b + avail;
    bool at_end = run_end == r->end;
    size_t room = at_end ? (size_t)((char *)r + r->reserve - r->end) : 0;
    if (avail + room < nbsize) return WH_ENOMEM;
    /* A block that grows tends to grow again (a buffer or string built by
     * appends): take up to an eighth more, at most WH_GROW_ROOM, where it
     * fits, so that the next growths find room inside the block instead of
     * splitting the free successor and relinking it each time.  HeapSize
     * stays exact; the room is slack like a block's padding and goes back
     * with the block, or when it shrinks.  Not under the debug heap, whose
     * tail and free patterns cover the whole slack. */
    if (request > old && !wh_debug_flags()) {
        size_t extra = request / 8 < WH_GROW_ROOM ? request / 8 : WH_GROW_ROOM;
        size_t roomy = block_size_for(request + wh_pad() + extra);
        if (roomy <= avail + room) nbsize = roomy;
    }
    /* The body bytes of the successor that the grown block (and the
     * remainder's header and links behind it) take must hold the pattern. */
    if (next_free && !dbg_take_ok(nx, nbi.size, (size_t)((char *)b + nbsize - (char *)nx))) return WH_EFREEMOD;
    char *old_end = r->end;
    if (avail < nbsize && wh_region_commit_to(h, r, (char *)b + nbsize) != WH_OK) return WH_ENOMEM;
    wh_tool_noaccess(old_end, (size_t)(r->end - old_end));
    if (next_free) {
        list_unlink(h, nx, nbi.size);
        /* The successor's keyed header and list links now lie inside the
         * grown block (or under the remainder's new header, written below):
         * the program must not read them (they would give away the header
         * and link keys).  Its body is zero (or the free pattern) already. */
        scrub_meta(nx, WH_MIN_BLOCK);
    }
    size_t total = at_end ? (size_t)(r->end - (char *)b) : avail;
    size_t rem = total - nbsize;
    if (rem >= WH_MIN_BLOCK) {
        hdr_write(h, b, nbsize, bi->prev, WH_BF_BUSY, (unsigned)(nbsize - WH_HDR - request));
        wh_tool_change(h, p, p, old, request, nbsize - WH_HDR);
        dbg_busy(b, nbsize, request, false);
        wh_block *t = (wh_block *)((char *)b + nbsize);
        hdr_write(h, t, rem, nbsize, 0, 0);
        /* Below run_end the remainder's body is the successor's, which holds
         * the pattern already; past it lie the pages just committed. */
        char *body = (char *)t + WH_MIN_BLOCK;
        char *known = next_free && run_end > body ? run_end : body;
        dbg_fill_free(known, (char *)b + total);
        link_successor(h, r, t, rem);
        list_insert(h, t, rem);
    } else {
        hdr_write(h, b, total, bi->prev, WH_BF_BUSY, (unsigned)(total - WH_HDR - request));
        wh_tool_change(h, p, p, old, request, total - WH_HDR);
        dbg_busy(b, total, request, false);
        link_successor(h, r, b, total);
    }
    return WH_OK;
}

/* ---- iteration (walk.c) ---- */

wh_block *wh_backend_first(wh_heap *h, wh_region *r, wh_binfo *bi, wh_status *st) {
    if (r->first + WH_MIN_BLOCK > r->end) return NULL;
    if (hdr_read(h, r, (wh_block *)r->first, bi) != WH_OK) {
        *st = WH_EHEADER;
        return NULL;
    }
    return (wh_block *)r->first;
}

wh_block *wh_backend_next(wh_heap *h, wh_region *r, wh_block *b, wh_binfo *bi, wh_status *st) {
    char *n = (char *)b + bi->size;
    if (n >= r->end) return NULL;
    size_t prev = bi->size;
    if (hdr_read(h, r, (wh_block *)n, bi) != WH_OK || bi->prev != prev) {
        *st = WH_EHEADER;
        return NULL;
    }
    return (wh_block *)n;
}

/* ---- HeapOptimizeResources ---- */

void wh_backend_trim(wh_heap *h) {
    size_t page = wh_prim_page_size();
    for (wh_region *r = &h->region0; r; r = r->next) {
        wh_binfo bi;
        wh_status st = WH_OK;
        /* Purge the whole pages inside interior free blocks. */
        for (wh_block *b = wh_backend_first(h, r, &bi, &st); b; b = wh_backend_next(h, r, b, &bi, &st)) {
            if (bi.flags & WH_BF_BUSY || (char *)b == r->last) continue;
            uintptr_t lo = wh_align_up((uintptr_t)b + WH_MIN_BLOCK, page);
            uintptr_t hi = wh_align_down((uintptr_t)b + bi.size, page);
            if (hi > lo && !(wh_debug_flags() & WH_DBG_FREE) && wh_prim.purge((void *)lo, hi - lo) != 0)
                wh_fatal_os("madvise"); /* (purged pages would lose the free pattern) */
        }
        if (st != WH_OK) return; /* damaged: leave it for HeapValidate to report */
        /* Decommit the free tail of the region. */
        wh_block *last = (wh_block *)r->last;
        if (!last || hdr_read(h, r, last, &bi) != WH_OK || (bi.flags & WH_BF_BUSY)) continue;
        char *keep = (char *)wh_align_up((uintptr_t)last + WH_MIN_BLOCK, page);
        if (keep >= r->end || list_check(h, last, bi.size) != WH_OK) continue;
        list_unlink(h, last, bi.size);
        wh_region_decommit_tail(h, r, keep);
        size_t size = (size_t)(keep - (char *)last);
        hdr_write(h, last, size, bi.prev, 0, 0);
        list_insert(h, last, size);
    }
}

/* ---- a fixed heap's use of its reservation (large.c, the page heap) ---- */

size_t wh_backend_span(wh_heap *h) {
    wh_region *r = &h->region0;
    wh_binfo bi;
    if (!r->last) return 0;
    if (hdr_read(h, r, (wh_block *)r->last, &bi) != WH_OK) return (size_t)(r->end - r->first);
    return (size_t)(((bi.flags & WH_BF_BUSY) ? r->end : r->last) - r->first);
}

/* ---- validation ---- */

bool wh_backend_is_valid(wh_heap *h) {
    size_t free_blocks = 0;
    for (wh_region *r = &h->region0; r; r = r->next) {
        if (r->heap != h || r->kind != WH_REGION_BLOCKS || r->magic != (WH_REGION_MAGIC ^ (uintptr_t)r)) return false;
        if (r->end > (char *)r + r->reserve || r->first > r->end) return false;
        wh_binfo bi;
        wh_status st = WH_OK;
        char *last = NULL;
        bool prev_free = false;
        for (wh_block *b = wh_backend_first(h, r, &bi, &st); b; b = wh_backend_next(h, r, b, &bi, &st)) {
            bool is_free = !(bi.flags & WH_BF_BUSY);
            if ((char *)b == r->first && bi.prev != 0) return false;
            if (is_free && prev_free) return false; /* neighbours must have been merged */
            if (is_free) {
                free_blocks++;
                if (list_check(h, b, bi.size) != WH_OK || !dbg_free_ok(b, bi.size) || !free_body_ok(b, bi.size, true))
                    return false;
            } else if (!dbg_tail_ok(b, &bi)) {
                return false;
            }
            prev_free = is_free;
            last = (char *)b;
        }
        if (st != WH_OK) return false;
        if (last != r->last) return false;
        if (last) {
            if (hdr_read(h, r, (wh_block *)last, &bi) != WH_OK || last + bi.size != r->end) return false;
        } else if (r->first + WH_MIN_BLOCK <= r->end) {
            return false;
        }
    }
    /* Every list: bounded traversal, right class, free, bitmap agrees. */
    size_t listed = 0;
    for (unsigned c = 0; c < WH_NLISTS; c++) {
        bool bit = (h->bitmap[c >> 6] >> (c & 63)) & 1;
        if (bit != (h->lists[c] != NULL)) return false;
        wh_block *prev = NULL;
        for (wh_block *b = h->lists[c]; b;) {
            if (++listed > free_blocks) return false; /* a cycle or a foreign block */
            wh_region *r = wh_region_of(b);
            wh_binfo bi;
            if (!r || r->heap != h || hdr_read(h, r, b, &bi) != WH_OK) return false;
            if ((bi.flags & WH_BF_BUSY) || wh_backend_class(bi.size) != c) return false;
            wh_block *back;
            if (!link_dec(h, prev_of(b), &back) || back != prev) return false;
            wh_block *nx;
            if (!link_dec(h, next_of(b), &nx)) return false;
            prev = b;
            b = nx;
        }
    }
    return listed == free_blocks;
}
