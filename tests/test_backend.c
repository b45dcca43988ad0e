/*
 * test_backend.c - layer test of src/backend.c, the block allocator inside a
 * heap's regions, called directly (heaps come from HeapCreate; the heap lock
 * is held around every back-end call, as the layer requires).
 *
 * Size classes: wh_backend_class is monotonic, steps by at most one class
 * per 16 bytes, is bsize >> 4 below 512, and no class spans more than 12.5%
 * above 512.  Allocation: payloads are 16-byte aligned, inside a region of
 * the heap, with the exact requested size.  Split / coalesce: three adjacent
 * blocks freed in the orders B,A,C and A,C,B leave the region as one free
 * block (checked with wh_backend_first / next and wh_backend_is_valid after
 * every step).  wh_backend_resize: shrink splits off a free block, grow
 * absorbs the following free block, a busy neighbour refuses, the last block
 * grows by committing more of the region (not past a fixed heap's
 * reservation; an injected commit failure changes nothing).  Hardening: one
 * flipped bit in any of the 128 bits of a neighbour's header is reported
 * (WH_EHEADER) by lookup and free and makes is_valid false, restoring it
 * makes the heap valid again; a free-list link redirected outside the heap
 * (raw or correctly encoded, stack / malloc / another heap / misaligned) is
 * refused with WH_ELIST and never handed out; headers and links are encoded
 * with per-heap keys.  First fit: a fixed 256 KiB heap serves one block of
 * 256 KiB - 0xC00.
 *
 * Headers and free bodies are poisoned in ASan builds: the test reads and
 * writes them only through WH_NO_ASAN helpers, and writes only the
 * requested bytes of a payload.
 */
#define _GNU_SOURCE
#include "test_util.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KB ((size_t)1 << 10)

/* ---- helpers ---- */

WH_NO_ASAN static uint64_t peek64(const void *p) { return *(const volatile uint64_t *)p; }
WH_NO_ASAN static void poke64(void *p, uint64_t v) { *(volatile uint64_t *)p = v; }

/* Block size the back end uses for a request. */
static size_t bsz(size_t req) {
    size_t b = wh_align_up(req + wh_pad() + WH_HDR, WH_ALIGN);
    return b < WH_MIN_BLOCK ? WH_MIN_BLOCK : b;
}

static wh_heap *new_heap(size_t init, size_t max) {
    wh_prim_fail_at(0, 0); /* a failed test may have left it armed */
    HANDLE hh = HeapCreate(0, init, max);
    assert_non_null(hh);
    wh_heap *h = wh_heap_from_handle(hh);
    assert_ptr_equal(h, hh);
    wh_heap_lock(h);
    return h;
}

static void end_heap(wh_heap *h) {
    wh_heap_unlock(h);
    assert_true(HeapDestroy((HANDLE)h));
}

static void *balloc(wh_heap *h, size_t req) {
    wh_status st = WH_OK;
    void *p = wh_backend_alloc(h, req, &st);
    if (!p) fail_msg("wh_backend_alloc(%zu) failed with status %d", req, (int)st);
    assert_true(wh_backend_is_valid(h));
    return p;
}

/* Look up live block p; returns its info. */
static wh_binfo look(wh_heap *h, void *p, wh_block **bout) {
    wh_region *r = wh_region_of(p);
    assert_non_null(r);
    assert_ptr_equal(r->heap, h);
    wh_block *b = NULL;
    wh_binfo bi;
    assert_int_equal(wh_backend_lookup(h, r, p, &b, &bi), WH_OK);
    assert_ptr_equal(b, wh_block_of_payload(p));
    if (bout) *bout = b;
    return bi;
}

static wh_status bfree(wh_heap *h, void *p) {
    wh_block *b;
    wh_binfo bi = look(h, p, &b);
    return wh_backend_free(h, wh_region_of(p), b, &bi);
}

typedef struct blk {
    wh_block *b;
    wh_binfo bi;
} blk;

/* The blocks of r in address order; fails the test on a damaged header. */
static int walk(wh_heap *h, wh_region *r, blk *out, int max) {
    wh_status st = WH_OK;
    wh_binfo bi;
    int n = 0;
    for (wh_block *b = wh_backend_first(h, r, &bi, &st); b; b = wh_backend_next(h, r, b, &bi, &st)) {
        if (n < max) { out[n].b = b; out[n].bi = bi; }
        n++;
    }
    assert_int_equal(st, WH_OK);
    return n;
}

#define BUSY(x) ((x).bi.flags & WH_BF_BUSY)

/* r is exactly one free block covering [first, end), listed in its class. */
static void assert_one_free_block(wh_heap *h, wh_region *r) {
    blk w[4];
    assert_int_equal(walk(h, r, w, 4), 1);
    assert_false(BUSY(w[0]));
    assert_ptr_equal(w[0].b, r->first);
    assert_int_equal(w[0].bi.size, (size_t)(r->end - r->first));
    assert_ptr_equal(r->last, r->first);
    /* It is on the list of its class (bounded walk of the decoded links). */
    int found = 0, steps = 0;
    for (wh_block *x = h->lists[wh_backend_class(w[0].bi.size)]; x && steps < 100000; steps++) {
        if (x == w[0].b) { found = 1; break; }
        x = (wh_block *)(uintptr_t)(peek64((char *)x + WH_HDR) ^ h->key_link);
    }
    assert_true(found);
    assert_true(wh_backend_is_valid(h));
}

static void fill(void *p, size_t n, unsigned seed) {
    unsigned char *c = p;
    for (size_t i = 0; i < n; i++) c[i] = (unsigned char)(seed + i * 31);
}
static void check_fill(const void *p, size_t n, unsigned seed) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != (unsigned char)(seed + i * 31)) fail_msg("byte %zu of %p changed", i, p);
}

/* ---- size classes ---- */

static void test_class_properties(void **state) {
    (void)state;
    /* Linear below 512. */
    for (size_t b = 0; b < 512; b += 16) assert_int_equal(wh_backend_class(b), b >> 4);
    assert_int_equal(wh_backend_class(511), 31);
    assert_int_equal(wh_backend_class(512), 32);
    /* Monotonic, one class at most per 16-byte step, all classes in range;
     * 1 MiB and more share the last list. */
    unsigned prev = wh_backend_class(32);
    for (size_t b = 48; b <= ((size_t)2 << 20); b += 16) {
        unsigned c = wh_backend_class(b);
        assert_true(c < WH_NLISTS);
        assert_true(c == prev || c == prev + 1);
        prev = c;
    }
    assert_int_equal(wh_backend_class((size_t)1 << 20), WH_NLISTS - 1);
    assert_int_equal(wh_backend_class((size_t)1 << 40), WH_NLISTS - 1);
    assert_int_equal(wh_backend_class(((size_t)1 << 20) - 16), WH_NLISTS - 2);
    /* Spread of every class from 512 up: (largest - smallest + 16) <= 1/8 of
     * the smallest size in the class. */
    size_t lo = 512;
    unsigned cls = wh_backend_class(lo);
    for (size_t b = 512 + 16; b <= ((size_t)1 << 20); b += 16) {
        unsigned c = wh_backend_class(b);
        if (c != cls) {
            size_t hi = b - 16;
            if ((hi - lo + 16) * 8 > lo) fail_msg("class %u spans [%zu, %zu]: more than 12.5%%", cls, lo, hi);
            lo = b;
            cls = c;
        }
    }
    /* Every class from 2 to WH_NLISTS - 1 is used by some block size. */
    unsigned seen = 0;
    prev = ~0u;
    for (size_t b = 32; b <= ((size_t)1 << 20); b += 16) {
        unsigned c = wh_backend_class(b);
        if (c != prev) seen++;
        prev = c;
    }
    assert_int_equal(seen, WH_NLISTS - 2);
}

/* ---- allocation ---- */

static void test_alloc_alignment_and_size(void **state) {
    (void)state;
    wh_heap *h = new_heap(0, 0);
    enum { N = 700 };
    static void *ps[N];
    static size_t rq[N];
    uint64_t seed = 12345;
    for (int i = 0; i < N; i++) {
        size_t req = i < 520 ? (size_t)i : (size_t)(wh_rand(&seed) % 200000);
        wh_status st = WH_OK;
        char *p = wh_backend_alloc(h, req, &st);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p & 15, 0);
        wh_region *r = wh_region_of(p);
        assert_non_null(r);
        assert_ptr_equal(r->heap, h);
        assert_int_equal(r->kind, WH_REGION_BLOCKS);
        assert_true(p - WH_HDR >= r->first && p + req <= r->end);
        wh_binfo bi = look(h, p, NULL);
        assert_int_equal(wh_binfo_requested(&bi), req);
        assert_true(bi.flags & WH_BF_BUSY);
        assert_true(bi.size >= bsz(req) && bi.size < bsz(req) + WH_MIN_BLOCK);
        fill(p, req, (unsigned)i);
        ps[i] = p;
        rq[i] = req;
    }
    assert_true(wh_backend_is_valid(h));
    for (int i = 0; i < N; i++) check_fill(ps[i], rq[i], (unsigned)i);
    /* Free in a scrambled order; everything merges back. */
    for (int k = 0; k < N; k++) {
        int i = (int)(((unsigned)k * 379u) % N);
        assert_int_equal(bfree(h, ps[i]), WH_OK);
        if (k % 50 == 0) assert_true(wh_backend_is_valid(h));
    }
    for (wh_region *r = &h->region0; r; r = r->next) assert_one_free_block(h, r);
    end_heap(h);
}

/* ---- split and coalesce ---- */

static void alloc_abc(wh_heap *h, char **a, char **b, char **c) {
    assert_one_free_block(h, &h->region0);
    *a = balloc(h, 100);
    *b = balloc(h, 200);
    *c = balloc(h, 300);
    wh_region *r = &h->region0;
    blk w[8];
    assert_int_equal(walk(h, r, w, 8), 4);
    assert_ptr_equal(w[0].b, r->first);
    assert_ptr_equal(wh_block_payload(w[0].b), *a);
    assert_ptr_equal(wh_block_payload(w[1].b), *b);
    assert_ptr_equal(wh_block_payload(w[2].b), *c);
    assert_int_equal(w[0].bi.size, bsz(100));
    assert_int_equal(w[1].bi.size, bsz(200));
    assert_int_equal(w[2].bi.size, bsz(300));
    assert_int_equal(w[1].bi.prev, bsz(100));
    assert_true(BUSY(w[0]) && BUSY(w[1]) && BUSY(w[2]));
    assert_false(BUSY(w[3])); /* the rest of the region */
    assert_ptr_equal(r->last, w[3].b);
    fill(*a, 100, 1);
    fill(*b, 200, 2);
    fill(*c, 300, 3);
}

static void test_split_coalesce_bac(void **state) {
    (void)state;
    wh_heap *h = new_heap(0, 0);
    wh_region *r = &h->region0;
    char *a, *b, *c;
    alloc_abc(h, &a, &b, &c);
    blk w[8];
    /* Free B: a free hole between busy A and C. */
    assert_int_equal(bfree(h, b), WH_OK);
    assert_true(wh_backend_is_valid(h));
    assert_int_equal(walk(h, r, w, 8), 4);
    assert_true(BUSY(w[0]) && !BUSY(w[1]) && BUSY(w[2]) && !BUSY(w[3]));
    assert_int_equal(w[1].bi.size, bsz(200));
    check_fill(a, 100, 1);
    check_fill(c, 300, 3);
    /* Free A: merges with B. */
    assert_int_equal(bfree(h, a), WH_OK);
    assert_true(wh_backend_is_valid(h));
    assert_int_equal(walk(h, r, w, 8), 3);
    assert_false(BUSY(w[0]));
    assert_int_equal(w[0].bi.size, bsz(100) + bsz(200));
    assert_true(BUSY(w[1]));
    assert_int_equal(w[1].bi.prev, bsz(100) + bsz(200));
    check_fill(c, 300, 3);
    /* Free C: merges both ways, the region is one free block again. */
    assert_int_equal(bfree(h, c), WH_OK);
    assert_one_free_block(h, r);
    end_heap(h);
}

static void test_split_coalesce_acb(void **state) {
    (void)state;
    wh_heap *h = new_heap(0, 0);
    wh_region *r = &h->region0;
    char *a, *b, *c;
    alloc_abc(h, &a, &b, &c);
    blk w[8];
    assert_int_equal(bfree(h, a), WH_OK); /* first block: no predecessor */
    assert_true(wh_backend_is_valid(h));
    assert_int_equal(bfree(h, c), WH_OK); /* merges with the free tail */
    assert_true(wh_backend_is_valid(h));
    assert_int_equal(walk(h, r, w, 8), 3);
    assert_true(!BUSY(w[0]) && BUSY(w[1]) && !BUSY(w[2]));
    assert_ptr_equal(r->last, w[2].b);
    check_fill(b, 200, 2);
    assert_int_equal(bfree(h, b), WH_OK); /* merges with both */
    assert_one_free_block(h, r);
    /* The same blocks come back at the same places. */
    char *a2 = balloc(h, 100), *b2 = balloc(h, 200);
    assert_ptr_equal(a2, a);
    assert_ptr_equal(b2, b);
    end_heap(h);
}

/* ---- resize ---- */

static void test_resize_shrink_and_grow(void **state) {
    (void)state;
    wh_heap *h = new_heap(0, 0);
    wh_region *r = &h->region0;
    char *a = balloc(h, 1000), *b = balloc(h, 100);
    fill(a, 1000, 7);
    fill(b, 100, 8);
    blk w[8];
    wh_block *ab;
    /* Shrink: the tail becomes a free block between A and B. */
    wh_binfo bi = look(h, a, &ab);
    assert_int_equal(wh_backend_resize(h, r, ab, &bi, 100), WH_OK);
    assert_true(wh_backend_is_valid(h));
    assert_int_equal(walk(h, r, w, 8), 4);
    assert_int_equal(w[0].bi.size, bsz(100));
    assert_int_equal(wh_binfo_requested(&w[0].bi), 100);
    assert_false(BUSY(w[1]));
    assert_int_equal(w[1].bi.size, bsz(1000) - bsz(100));
    assert_ptr_equal(wh_block_payload(w[2].b), b);
    assert_int_equal(w[2].bi.prev, bsz(1000) - bsz(100));
    check_fill(a, 100, 7);
    /* Grow into part of the following free block (the rest stays free). */
    bi = look(h, a, &ab);
    assert_int_equal(wh_backend_resize(h, r, ab, &bi, 900), WH_OK);
    assert_true(wh_backend_is_valid(h));
    assert_int_equal(walk(h, r, w, 8), 4);
    assert_int_equal(w[0].bi.size, bsz(900));
    assert_int_equal(wh_binfo_requested(&w[0].bi), 900);
    assert_false(BUSY(w[1]));
    assert_int_equal(w[1].bi.size, bsz(1000) - bsz(900));
    check_fill(a, 100, 7);
    fill(a, 900, 9);
    /* Grow over all of it: A touches B again. */
    bi = look(h, a, &ab);
    assert_int_equal(wh_backend_resize(h, r, ab, &bi, 1000), WH_OK);
    assert_true(wh_backend_is_valid(h));
    assert_int_equal(walk(h, r, w, 8), 3);
    assert_int_equal(w[0].bi.size, bsz(1000));
    assert_ptr_equal(wh_block_payload(w[1].b), b);
    assert_int_equal(w[1].bi.prev, bsz(1000));
    check_fill(a, 900, 9);
    /* The busy neighbour refuses a grow: nothing changes. */
    bi = look(h, a, &ab);
    assert_int_equal(wh_backend_resize(h, r, ab, &bi, 1100), WH_ENOMEM);
    wh_binfo after = look(h, a, NULL);
    assert_int_equal(after.size, bi.size);
    assert_int_equal(wh_binfo_requested(&after), 1000);
    assert_true(wh_backend_is_valid(h));
    /* A shrink too small to split keeps the size, updates the request. */
    assert_int_equal(wh_backend_resize(h, r, ab, &bi, 995), WH_OK);
    after = look(h, a, NULL);
    assert_int_equal(after.size, bsz(1000));
    assert_int_equal(wh_binfo_requested(&after), 995);
    assert_true(wh_backend_is_valid(h));
    check_fill(a, 900, 9);
    check_fill(b, 100, 8);
    end_heap(h);
}

/* Allocate a block that takes exactly the free tail of region r. */
static char *take_tail(wh_heap *h, wh_region *r) {
    blk w[64];
    int n = walk(h, r, w, 64);
    assert_true(n >= 1 && n <= 64);
    assert_false(BUSY(w[n - 1]));
    size_t s = w[n - 1].bi.size;
    assert_true(s >= bsz(0));
    size_t req = s - WH_HDR - wh_pad();
    char *t = balloc(h, req);
    assert_ptr_equal(t, wh_block_payload(w[n - 1].b));
    assert_ptr_equal(r->last, (char *)w[n - 1].b);
    assert_ptr_equal(t - WH_HDR + s, r->end);
    return t;
}

static void test_resize_grow_at_region_end(void **state) {
    (void)state;
    size_t pg = wh_prim_page_size();
    wh_heap *h = new_heap(0, 0);
    wh_region *r = &h->region0;
    (void)balloc(h, 64);
    char *t = take_tail(h, r);
    wh_block *tb;
    wh_binfo bi = look(h, t, &tb);
    size_t old_req = wh_binfo_requested(&bi);
    fill(t, old_req, 21);
    char *end0 = r->end;
    /* An injected commit failure changes nothing. */
    wh_prim_fail_at(1, 0);
    assert_int_equal(wh_backend_resize(h, r, tb, &bi, old_req + 20000), WH_ENOMEM);
    wh_prim_fail_at(0, 0);
    assert_ptr_equal(r->end, end0);
    assert_true(wh_backend_is_valid(h));
    assert_int_equal(look(h, t, NULL).size, bi.size);
    /* Grow: the region commits more and the block extends over it. */
    assert_int_equal(wh_backend_resize(h, r, tb, &bi, old_req + 20000), WH_OK);
    assert_true(r->end >= end0 + 20000);
    assert_int_equal((uintptr_t)r->end % pg, 0);
    assert_true(r->end <= (char *)r + r->reserve);
    assert_true(wh_backend_is_valid(h));
    wh_binfo nb = look(h, t, NULL);
    assert_int_equal(wh_binfo_requested(&nb), old_req + 20000);
    assert_true(nb.size >= bsz(old_req + 20000));
    check_fill(t, old_req, 21);
    memset(t + old_req, 0x5A, 20000);
    blk w[8];
    int n = walk(h, r, w, 8);
    assert_ptr_equal((char *)w[n - 1].b, r->last);
    assert_ptr_equal((char *)w[n - 1].b + w[n - 1].bi.size, r->end);
    /* Past the growable region 0's reservation: ENOMEM in place. */
    bi = nb;
    size_t too_big = (size_t)((char *)r + r->reserve - t) + 16;
    if (too_big < ((size_t)1 << 20)) {
        assert_int_equal(wh_backend_resize(h, r, tb, &bi, too_big), WH_ENOMEM);
        assert_int_equal(look(h, t, NULL).size, nb.size);
        assert_true(wh_backend_is_valid(h));
    }
    end_heap(h);

    /* Fixed 64 KiB heap: grows up to its reservation, not past it. */
    wh_heap *f = new_heap(0, 64 * KB);
    r = &f->region0;
    assert_int_equal(r->reserve, 64 * KB);
    t = take_tail(f, r);
    bi = look(f, t, &tb);
    char *limit = (char *)r + r->reserve;
    size_t max_req = (size_t)(limit - t) - wh_pad();
    assert_int_equal(wh_backend_resize(f, r, tb, &bi, max_req + 16), WH_ENOMEM);
    assert_int_equal(look(f, t, NULL).size, bi.size);
    assert_int_equal(wh_backend_resize(f, r, tb, &bi, max_req), WH_OK);
    assert_ptr_equal(r->end, limit);
    assert_true(wh_backend_is_valid(f));
    memset(t, 1, max_req);
    end_heap(f);
}

/* ---- hardening ---- */

static void test_corrupt_header_detected(void **state) {
    (void)state;
    wh_heap *h = new_heap(0, 0);
    char *a, *b, *c;
    alloc_abc(h, &a, &b, &c);
    wh_region *r = &h->region0;
    wh_block *ab, *bb, *cb;
    wh_binfo ai = look(h, a, &ab), bi0 = look(h, b, &bb), ci = look(h, c, &cb);
    (void)bi0;
    uint64_t *words = (uint64_t *)bb;
    int missed_lookup = 0, missed_free = 0, missed_valid = 0;
    for (int bit = 0; bit < 128; bit++) {
        uint64_t *wp = &words[bit / 64];
        uint64_t orig = peek64(wp);
        poke64(wp, orig ^ (1ull << (bit % 64)));
        wh_block *ob;
        wh_binfo obi;
        if (wh_backend_lookup(h, r, b, &ob, &obi) != WH_EHEADER) missed_lookup++;
        /* B's neighbours cannot be freed over the damaged header. */
        if (wh_backend_free(h, r, ab, &ai) != WH_EHEADER) missed_free++;
        if (wh_backend_free(h, r, cb, &ci) != WH_EHEADER) missed_free++;
        if (wh_backend_is_valid(h)) missed_valid++;
        poke64(wp, orig);
        assert_true(wh_backend_is_valid(h));
        if (missed_free) fail_msg("a free went through a damaged header (bit %d)", bit);
    }
    assert_int_equal(missed_lookup, 0);
    assert_int_equal(missed_valid, 0);
    /* Nothing was changed by the refused frees. */
    check_fill(a, 100, 1);
    check_fill(b, 200, 2);
    check_fill(c, 300, 3);
    assert_true(look(h, a, NULL).flags & WH_BF_BUSY);
    assert_int_equal(bfree(h, b), WH_OK);
    assert_int_equal(bfree(h, a), WH_OK);
    assert_int_equal(bfree(h, c), WH_OK);
    assert_one_free_block(h, r);
    end_heap(h);
}

static int a_static_block[64] __attribute__((aligned(16)));

static void test_free_list_link_outside_heap(void **state) {
    (void)state;
    wh_heap *h = new_heap(0, 0);
    wh_heap *other = new_heap(0, 0);
    char *ob = balloc(other, 200); /* a real block of another heap */
    wh_region *r = &h->region0;
    char *a = balloc(h, 100), *b = balloc(h, 200), *c = balloc(h, 100);
    char *d = balloc(h, 200), *e = balloc(h, 100);
    wh_block *bb = wh_block_of_payload(b);
    uint64_t *links = (uint64_t *)(b); /* next, prev of the free block B */
    assert_int_equal(bfree(h, b), WH_OK);
    assert_true(wh_backend_is_valid(h));
    uint64_t next0 = peek64(&links[0]), prev0 = peek64(&links[1]);
    char stack_buf[64] __attribute__((aligned(16)));
    char *heap_buf = malloc(256);
    assert_non_null(heap_buf);
    char *hb = (char *)wh_align_up((uintptr_t)heap_buf, 16);
    uintptr_t targets[] = {
        (uintptr_t)stack_buf,
        (uintptr_t)stack_buf ^ h->key_link,
        (uintptr_t)a_static_block ^ h->key_link,
        (uintptr_t)hb ^ h->key_link,
        (uintptr_t)wh_block_of_payload(ob) ^ h->key_link,
        ((uintptr_t)bb + 8) ^ h->key_link, /* inside this heap, misaligned */
        0,                                  /* decodes to key_link: nowhere */
    };
    for (size_t k = 0; k < sizeof targets / sizeof targets[0]; k++) {
        for (int which = 0; which < 2; which++) { /* next, then prev */
            poke64(&links[which], targets[k]);
            assert_false(wh_backend_is_valid(h));
            /* Freeing a neighbour of B must unlink B: refused. */
            assert_int_equal(bfree(h, a), WH_ELIST);
            assert_int_equal(bfree(h, c), WH_ELIST);
            /* B heads the list its size maps to: taking it is refused... */
            wh_status st = WH_OK;
            assert_null(wh_backend_alloc(h, 200, &st));
            assert_int_equal(st, WH_ELIST);
            /* ...and no allocation ever returns memory outside the heap. */
            for (size_t req = 8; req <= 600; req += 24) {
                st = WH_OK;
                char *p = wh_backend_alloc(h, req, &st);
                if (!p) {
                    assert_int_equal(st, WH_ELIST);
                    continue;
                }
                wh_region *pr = wh_region_of(p);
                assert_non_null(pr);
                assert_ptr_equal(pr->heap, h);
                assert_ptr_not_equal(p, b);
                assert_true(p < b || p > b + 200);
                assert_int_equal(bfree(h, p), WH_OK);
            }
            poke64(&links[which], which ? prev0 : next0);
            assert_true(wh_backend_is_valid(h));
        }
    }
    /* B not at the head: D (same size) is freed after B and heads the list,
     * D.next = B.  With B's next redirected, D can still be taken; B
     * cannot, and the fake address is never handed out. */
    assert_int_equal(bfree(h, d), WH_OK);
    assert_true(wh_backend_is_valid(h));
    poke64(&links[0], (uintptr_t)stack_buf ^ h->key_link);
    wh_status st = WH_OK;
    char *p1 = wh_backend_alloc(h, 200, &st);
    assert_ptr_equal(p1, d);
    st = WH_OK;
    char *p2 = wh_backend_alloc(h, 200, &st);
    assert_null(p2);
    assert_int_equal(st, WH_ELIST);
    poke64(&links[0], next0);
    assert_true(wh_backend_is_valid(h));
    assert_int_equal(bfree(h, a), WH_OK);
    assert_int_equal(bfree(h, c), WH_OK);
    assert_int_equal(bfree(h, d), WH_OK);
    assert_int_equal(bfree(h, e), WH_OK);
    assert_one_free_block(h, r);
    free(heap_buf);
    (void)stack_buf;
    end_heap(other);
    end_heap(h);
}

static void test_keys_differ_between_heaps(void **state) {
    (void)state;
    wh_heap *h1 = new_heap(0, 0), *h2 = new_heap(0, 0);
    assert_true(h1->key_hdr0 != h2->key_hdr0);
    assert_true(h1->key_hdr1 != h2->key_hdr1);
    assert_true(h1->key_link != h2->key_link);
    assert_true(h1->key_link != 0 && h2->key_link != 0);
    assert_int_equal(h1->region0.first - (char *)h1, h2->region0.first - (char *)h2);
    char *p1 = balloc(h1, 200), *p2 = balloc(h2, 200);
    assert_int_equal(p1 - (char *)h1, p2 - (char *)h2); /* same place, same content */
    wh_block *b1 = wh_block_of_payload(p1), *b2 = wh_block_of_payload(p2);
    wh_binfo i1 = { 0 }, i2 = { 0 };
    assert_true(wh_block_read(h1, b1, &i1));
    assert_true(wh_block_read(h2, b2, &i2));
    assert_int_equal(i1.size, i2.size);
    assert_int_equal(i1.unused, i2.unused);
    /* Stored words differ, and are not the plain decoded words. */
    uint64_t w0 = ((uint64_t)(i1.size >> 4) << 24) | ((uint64_t)i1.unused << 8) | i1.flags;
    assert_true(peek64(&b1->s0) != peek64(&b2->s0));
    assert_true(peek64(&b1->s1) != peek64(&b2->s1));
    assert_true(peek64(&b1->s0) != w0);
    assert_int_equal(peek64(&b1->s0) ^ h1->key_hdr0, w0);
    /* One heap's keys do not decode the other's header. */
    wh_binfo x;
    assert_false(wh_block_read(h2, b1, &x));
    assert_false(wh_block_read(h1, b2, &x));
    /* A copy of h1's header into h2 at the same offset is refused by h2. */
    uint64_t s0 = peek64(&b2->s0), s1 = peek64(&b2->s1);
    poke64(&b2->s0, peek64(&b1->s0));
    poke64(&b2->s1, peek64(&b1->s1));
    wh_block *ob;
    assert_int_equal(wh_backend_lookup(h2, &h2->region0, p2, &ob, &x), WH_EHEADER);
    assert_false(wh_backend_is_valid(h2));
    poke64(&b2->s0, s0);
    poke64(&b2->s1, s1);
    assert_true(wh_backend_is_valid(h2));
    /* Links: a NULL link is stored as the key, never as 0. */
    wh_block *f1 = (wh_block *)h1->region0.last;
    assert_int_equal(peek64((char *)f1 + WH_HDR) ^ h1->key_link, 0); /* next = NULL */
    assert_true(peek64((char *)f1 + WH_HDR) != 0);
    end_heap(h2);
    end_heap(h1);
}

static void test_first_fit_fixed_256k(void **state) {
    (void)state;
    wh_heap *h = new_heap(256 * KB, 256 * KB);
    wh_region *r = &h->region0;
    assert_int_equal(r->reserve, 256 * KB);
    assert_ptr_equal(r->end, (char *)r + 256 * KB);
    assert_one_free_block(h, r);
    size_t req = 256 * KB - 0xC00;
    /* The only free block is in a class below the rounded-up search class:
     * only the first-fit scan of the request's own class finds it. */
    wh_status st = WH_OK;
    char *p = wh_backend_alloc(h, req, &st);
    assert_non_null(p);
    assert_ptr_equal(p, r->first + WH_HDR);
    wh_binfo bi = look(h, p, NULL);
    assert_int_equal(wh_binfo_requested(&bi), req);
    assert_true(wh_backend_is_valid(h));
    memset(p, 0xCD, req);
    st = WH_OK;
    assert_null(wh_backend_alloc(h, req, &st));
    assert_int_equal(st, WH_ENOMEM);
    assert_int_equal(bfree(h, p), WH_OK);
    assert_one_free_block(h, r);
    /* And through the API. */
    wh_heap_unlock(h);
    void *q = HeapAlloc((HANDLE)h, 0, req);
    assert_non_null(q);
    assert_int_equal(HeapSize((HANDLE)h, 0, q), req);
    assert_true(HeapFree((HANDLE)h, 0, q));
    wh_heap_lock(h);
    end_heap(h);
}

int main(void) {
    setenv("WINHEAP_TERMINATE_ON_CORRUPTION", "0", 1);
    (void)GetProcessHeap();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_class_properties),
        cmocka_unit_test(test_alloc_alignment_and_size),
        cmocka_unit_test(test_split_coalesce_bac),
        cmocka_unit_test(test_split_coalesce_acb),
        cmocka_unit_test(test_resize_shrink_and_grow),
        cmocka_unit_test(test_resize_grow_at_region_end),
        cmocka_unit_test(test_corrupt_header_detected),
        cmocka_unit_test(test_free_list_link_outside_heap),
        cmocka_unit_test(test_keys_differ_between_heaps),
        cmocka_unit_test(test_first_fit_fixed_256k),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
