/*
 * test_region.c - layer test of src/region.c: the process-wide address map
 * and the regions of a heap.
 *
 * The address map: wh_region_map_get / wh_region_of of a heap handle and of
 * addresses inside every 64 KiB chunk of its regions; of addresses that are
 * not winheap's (stack, static, malloc, NULL, (void *)1, above 2^47, kernel
 * half) - all 0 / NULL, answered without touching the address; set and clear
 * through wh_region_map_set (neighbours untouched, bad or wrapping ranges
 * refused); the tombstone (WH_TOMBSTONE(h) = serial << 2 | 1) left by a
 * freed large block; the map grows by exactly one 512 KiB leaf when a new
 * 4 GiB window is first used and never otherwise (map_set accepts addresses
 * that are not reserved, so fresh windows far from any mapping are used); a
 * fault injected into a leaf's reserve or commit leaves neither a mapping
 * nor an entry behind.
 * Regions: wh_region_add links a new region after the last, numbers it,
 * publishes it (the back end then lays it out as one free block) and
 * doubles next_region_size up to WH_REGION_MAX (never beyond, also from a
 * start that is not a power of two); failures leave the heap unchanged; a
 * region added in a fresh window (placed there by a wrapped reserve) needs
 * a map leaf, whose failure is also clean.  wh_region_commit_to commits on
 * demand up to, never past, the reservation.
 */
#define _GNU_SOURCE
#include "test_util.h"
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define KB ((size_t)1 << 10)
#define MB ((size_t)1 << 20)
#define GB4 ((uintptr_t)1 << 32)
#define LEAF_BYTES ((size_t)512 << 10) /* one leaf: 2^16 entries of 8 bytes */

/* Fresh 4 GiB windows, far from every mapping of the process (map_set
 * only writes the map, so nothing needs to be mapped there). */
#define WIN_SET ((uintptr_t)0x5A0000000000ull)
#define WIN_GROW ((uintptr_t)0x5A1000000000ull)
#define WIN_FAULT ((uintptr_t)0x5A2000000000ull)
#define WIN_HOOK ((uintptr_t)0x5A3000000000ull)



static size_t held(void) { return wh_prim_reserved_bytes() - wh_region_map_bytes(); }

static wh_heap *new_heap(DWORD flags, size_t init, size_t max) {
    wh_prim_fail_at(0, 0); /* a failed test may have left it armed */
    HANDLE hh = HeapCreate(flags, init, max);
    assert_non_null(hh);
    wh_heap *h = wh_heap_from_handle(hh);
    assert_ptr_equal(h, hh);
    return h;
}

/* Every chunk of [base, base+size) maps to `value` (probing the start, an
 * interior address and the last byte of each chunk). */
static void assert_chunks(const void *base, size_t size, uintptr_t value) {
    const char *b = base;
    for (size_t off = 0; off < size; off += WH_CHUNK) {
        assert_int_equal(wh_region_map_get(b + off), value);
        assert_int_equal(wh_region_map_get(b + off + 0x1234), value);
        assert_int_equal(wh_region_map_get(b + off + WH_CHUNK - 1), value);
        wh_region *want = (value && !(value & 1)) ? (wh_region *)value : NULL;
        assert_ptr_equal(wh_region_of(b + off + 0x777), want);
    }
}

/* ---- a reserve wrapper that places one region in a chosen window ---- */

static void *(*orig_reserve)(size_t, size_t);
static int (*orig_release)(void *, size_t);
static char *hook_hint;        /* next 64 KiB-aligned reservation goes here */
static char *hook_base[8];
static int hook_n;

static void *hook_reserve(size_t size, size_t align) {
    if (hook_hint && align == WH_CHUNK) {
        char *want = hook_hint;
        hook_hint = NULL;
        void *p = mmap(want, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
        if (p == MAP_FAILED) return NULL;
        if (p != want) { munmap(p, size); return NULL; }
        hook_base[hook_n++] = p;
        return p;
    }
    return orig_reserve(size, align);
}

static int hook_release(void *p, size_t size) {
    for (int i = 0; i < hook_n; i++)
        if (hook_base[i] == p) {
            hook_base[i] = hook_base[--hook_n];
            return munmap(p, size);
        }
    return orig_release(p, size);
}

static void hook_install(void) {
    orig_reserve = wh_prim.reserve;
    orig_release = wh_prim.release;
    wh_prim.reserve = hook_reserve;
    wh_prim.release = hook_release;
    hook_hint = NULL;
}

static void hook_remove(void) {
    wh_prim.reserve = orig_reserve;
    wh_prim.release = orig_release;
}

/* ---- tests ---- */

static void test_map_heap_handle(void **state) {
    (void)state;
    wh_heap *h = new_heap(0, 0, 0);
    assert_int_equal(wh_region_map_get(h), (uintptr_t)h);
    assert_ptr_equal(wh_region_of(h), &h->region0);
    assert_int_equal(h->region0.map_size, WH_REGION0_MIN);
    assert_chunks(h, h->region0.map_size, (uintptr_t)h);
    /* Just outside the region is not this heap. */
    assert_int_not_equal(wh_region_map_get((char *)h + h->region0.map_size), (uintptr_t)h);
    assert_int_not_equal(wh_region_map_get((char *)h - 1), (uintptr_t)h);
    /* A fixed heap whose reservation is not a 64 KiB multiple: the map
     * covers the whole mapping. */
    wh_heap *f = new_heap(0, 0, 100000);
    assert_int_equal(f->region0.map_size, 128 * KB);
    assert_chunks(f, 128 * KB, (uintptr_t)f);
    assert_true(HeapDestroy((HANDLE)f));
    assert_true(HeapDestroy((HANDLE)h));
}

static int a_static;

static void test_map_foreign_addresses(void **state) {
    (void)state;
    int on_stack = 0;
    void *m = malloc(64);
    assert_non_null(m);
    const void *addrs[] = {
        NULL, (void *)1, (void *)0xFFFF, &on_stack, &a_static, m, (void *)&test_map_foreign_addresses,
        (void *)(((uintptr_t)1 << 47) - 1), (void *)((uintptr_t)1 << 47), (void *)(((uintptr_t)1 << 47) + WH_CHUNK),
        (void *)((uintptr_t)1 << 48), (void *)0xFFFF800000000000ull, (void *)0xFFFFFFFFFFFF0000ull, (void *)UINTPTR_MAX,
    };
    for (size_t i = 0; i < sizeof addrs / sizeof addrs[0]; i++) {
        assert_int_equal(wh_region_map_get(addrs[i]), 0);
        assert_null(wh_region_of(addrs[i]));
    }
    free(m);
}

static void test_map_set_and_clear(void **state) {
    (void)state;
    char *w = (char *)WIN_SET + 64 * WH_CHUNK;
    uintptr_t before_lo = wh_region_map_get(w - WH_CHUNK), before_hi = wh_region_map_get(w + 3 * WH_CHUNK);
    assert_int_equal(wh_region_map_set(w, 3 * WH_CHUNK, 0x123450), 0);
    assert_chunks(w, 3 * WH_CHUNK, 0x123450);
    assert_int_equal(wh_region_map_get(w - WH_CHUNK), before_lo);
    assert_int_equal(wh_region_map_get(w + 3 * WH_CHUNK), before_hi);
    /* An odd value reads back as-is but is no region. */
    assert_int_equal(wh_region_map_set(w + WH_CHUNK, WH_CHUNK, 0x77), 0);
    assert_int_equal(wh_region_map_get(w + WH_CHUNK + 5), 0x77);
    assert_null(wh_region_of(w + WH_CHUNK + 5));
    assert_int_equal(wh_region_map_get(w), 0x123450);
    /* Clear. */
    assert_int_equal(wh_region_map_set(w, 3 * WH_CHUNK, 0), 0);
    assert_chunks(w, 3 * WH_CHUNK, 0);

    /* A real reservation: not published until map_set. */
    char *r = wh_region_reserve(2 * WH_CHUNK, 0, false);
    assert_non_null(r);
    assert_int_equal(wh_region_map_get(r), 0);
    assert_int_equal(wh_region_map_set(r, 2 * WH_CHUNK, 0xABCD0), 0);
    assert_chunks(r, 2 * WH_CHUNK, 0xABCD0);
    assert_int_equal(wh_region_map_set(r, 2 * WH_CHUNK, 0), 0);
    assert_chunks(r, 2 * WH_CHUNK, 0);
    assert_int_equal(wh_prim.release(r, 2 * WH_CHUNK), 0);
}

static void test_map_set_rejects_bad_ranges(void **state) {
    (void)state;
    char *w = (char *)WIN_SET + 200 * WH_CHUNK;
    size_t mb = wh_region_map_bytes();
    assert_int_equal(wh_region_map_set(w + 16, WH_CHUNK, 0x10), -1);            /* misaligned base */
    assert_int_equal(wh_region_map_set(w, WH_CHUNK + 4096, 0x10), -1);          /* misaligned size */
    assert_int_equal(wh_region_map_set((void *)(((uintptr_t)1 << 47) - WH_CHUNK), 2 * WH_CHUNK, 0x10), -1);
    assert_int_equal(wh_region_map_set((void *)((uintptr_t)1 << 47), WH_CHUNK, 0x10), -1);
    assert_int_equal(wh_region_map_get(w), 0);
    assert_int_equal(wh_region_map_get(w + WH_CHUNK), 0);
    assert_int_equal(wh_region_map_bytes(), mb);
}

static void test_map_set_rejects_wrapping_size(void **state) {
    (void)state;
    /* base + size wraps past 2^64: [base, base+size) is not a range below
     * 2^47, so the call must fail (-1), not report success having set
     * nothing. */
    char *w = (char *)WIN_SET + 300 * WH_CHUNK;
    assert_int_equal(wh_region_map_set(w, (size_t)0 - WH_CHUNK, 0x10), -1);
    assert_int_equal(wh_region_map_set(w, (size_t)0 - (uintptr_t)w, 0x10), -1); /* end == 0 exactly */
    assert_int_equal(wh_region_map_get(w), 0);
}

static void test_tombstone_after_large_free(void **state) {
    (void)state;
    wh_heap *h = new_heap(0, 0, 0);
    char *p = HeapAlloc((HANDLE)h, 0, 0x100000);
    assert_non_null(p);
    wh_region *r = wh_region_of(p);
    assert_non_null(r);
    assert_int_equal(r->kind, WH_REGION_LARGE);
    assert_ptr_equal(r->heap, h);
    char *base = (char *)r;
    size_t size = r->map_size;
    assert_chunks(base, size, (uintptr_t)r);
    assert_true(HeapFree((HANDLE)h, 0, p));
    uintptr_t tomb = WH_TOMBSTONE(h);
    assert_int_equal(wh_region_map_get(p) & 1, 1);
    assert_int_equal(wh_region_map_get(p), tomb);
    assert_chunks(base, size, tomb);
    /* Another heap's tombstone is different. */
    wh_heap *g = new_heap(0, 0, 0);
    char *q = HeapAlloc((HANDLE)g, 0, 0x100000);
    assert_non_null(q);
    char *qbase = (char *)wh_region_of(q);
    size_t qsize = wh_region_of(q)->map_size;
    assert_true(HeapFree((HANDLE)g, 0, q));
    assert_int_equal(wh_region_map_get(q), WH_TOMBSTONE(g));
    assert_int_not_equal(wh_region_map_get(q), tomb);
    /* A large block still live when its heap is destroyed leaves 0. */
    char *s = HeapAlloc((HANDLE)g, 0, 0x180000);
    assert_non_null(s);
    char *sbase = (char *)wh_region_of(s);
    size_t ssize = wh_region_of(s)->map_size;
    assert_true(HeapDestroy((HANDLE)g));
    assert_chunks(sbase, ssize, 0);
    (void)qbase;
    (void)qsize;
    assert_true(HeapDestroy((HANDLE)h));
}

/* Check the shape of region r just added to h as number idx. */
static void check_new_region(wh_heap *h, wh_region *r, uint32_t idx, size_t need) {
    assert_null(r->last); /* the caller lays out the blocks */
    wh_backend_region_init(h, r);
    size_t hdr = wh_align_up(sizeof(wh_region), WH_ALIGN);
    assert_int_equal((uintptr_t)r & (WH_CHUNK - 1), 0);
    assert_int_equal(r->magic, WH_REGION_MAGIC ^ (uintptr_t)r);
    assert_ptr_equal(r->heap, h);
    assert_int_equal(r->kind, WH_REGION_BLOCKS);
    assert_int_equal(r->index, idx);
    assert_null(r->next);
    assert_ptr_equal(h->last_region, r);
    assert_int_equal(h->nregions, idx + 1);
    assert_ptr_equal(r->first, (char *)r + hdr);
    assert_true(r->reserve >= hdr + need);
    assert_int_equal(r->map_size % WH_CHUNK, 0);
    assert_true(r->end >= r->first + need && r->end <= (char *)r + r->reserve);
    assert_int_equal((uintptr_t)r->end % wh_prim_page_size(), 0);
    assert_ptr_equal(r->last, r->first); /* one free block */
    assert_true(maps_range_is(r, r->end, "rw-p"));
    if (r->end < (char *)r + r->map_size) assert_true(maps_range_is(r->end, (char *)r + r->map_size, "---p"));
    assert_chunks(r, r->map_size, (uintptr_t)r);
    assert_true(wh_backend_is_valid(h));
}

static void test_region_add_growth(void **state) {
    (void)state;
    size_t base_held = held();
    wh_heap *h = new_heap(0, 0, 0);
    wh_heap_lock(h);
    assert_int_equal(h->nregions, 1);
    assert_int_equal(h->next_region_size, 2 * MB);
    wh_region *prev = &h->region0, *regs[10];
    size_t expect = 2 * MB;
    for (uint32_t i = 1; i <= 9; i++) {
        wh_region *r = wh_region_add(h, 4096);
        assert_non_null(r);
        regs[i] = r;
        assert_ptr_equal(prev->next, r);
        check_new_region(h, r, i, 4096);
        assert_int_equal(r->reserve, expect);
        expect = expect * 2 > WH_REGION_MAX ? WH_REGION_MAX : expect * 2;
        assert_int_equal(h->next_region_size, expect);
        prev = r;
    }
    assert_int_equal(regs[9]->reserve, WH_REGION_MAX);
    assert_int_equal(h->next_region_size, WH_REGION_MAX);
    /* A need bigger than the next size gets a region big enough. */
    wh_region *big = wh_region_add(h, WH_REGION_MAX + 3 * MB);
    assert_non_null(big);
    check_new_region(h, big, 10, WH_REGION_MAX + 3 * MB);
    assert_int_equal(h->next_region_size, WH_REGION_MAX);
    wh_heap_unlock(h);
    char *bases[12];
    size_t sizes[12];
    int n = 0;
    for (wh_region *r = h->region0.next; r; r = r->next) { bases[n] = (char *)r; sizes[n++] = r->map_size; }
    assert_int_equal(n, 10);
    assert_true(HeapDestroy((HANDLE)h));
    for (int i = 0; i < n; i++) assert_chunks(bases[i], sizes[i], 0);
    assert_int_equal(held(), base_held);
}

static void test_region_add_caps_odd_sizes(void **state) {
    (void)state;
    /* next_region_size doubles "up to WH_REGION_MAX" from any start, not
     * only from a power of two: a 5 MiB region 0 gives 10, 20, 40, 80, 160
     * MiB and then must stop at 256 MiB. */
    wh_heap *h = new_heap(0, 5 * MB, 0);
    wh_heap_lock(h);
    assert_int_equal(h->region0.reserve, 5 * MB);
    assert_int_equal(h->next_region_size, 10 * MB);
    for (uint32_t i = 1; i <= 7; i++) {
        wh_region *r = wh_region_add(h, 4096);
        assert_non_null(r);
        assert_true(r->reserve <= WH_REGION_MAX);
        assert_true(h->next_region_size <= WH_REGION_MAX);
    }
    assert_int_equal(h->next_region_size, WH_REGION_MAX);
    wh_heap_unlock(h);
    assert_true(HeapDestroy((HANDLE)h));
}

static void test_region_add_failure_clean(void **state) {
    (void)state;
    size_t start = held();
    wh_heap *h = new_heap(0, 0, 0);
    wh_heap_lock(h);
    size_t before = held(), next = h->next_region_size;
    for (uint64_t n = 1; n <= 2; n++) { /* 1: the reserve, 2: the commit */
        wh_prim_fail_at(n, 0);
        assert_null(wh_region_add(h, 4096));
        assert_int_equal(wh_prim_calls(), n);
        wh_prim_fail_at(0, 0);
        assert_int_equal(held(), before);
        assert_int_equal(h->nregions, 1);
        assert_null(h->region0.next);
        assert_ptr_equal(h->last_region, &h->region0);
        assert_int_equal(h->next_region_size, next);
        assert_true(wh_backend_is_valid(h));
    }
    wh_region *r = wh_region_add(h, 4096);
    assert_non_null(r);
    check_new_region(h, r, 1, 4096);
    wh_heap_unlock(h);
    assert_true(HeapDestroy((HANDLE)h));
    assert_int_equal(held(), start);
}

static void test_commit_to(void **state) {
    (void)state;
    size_t pg = wh_prim_page_size();
    wh_heap *h = new_heap(0, 0, 0);
    wh_region *r = &h->region0;
    char *limit = (char *)r + r->reserve;
    wh_heap_lock(h);
    char *end0 = r->end;
    assert_true(maps_range_is(r, end0, "rw-p"));
    assert_true(maps_range_is(end0, limit, "---p"));
    /* At or below the end: nothing to do. */
    assert_int_equal(wh_region_commit_to(h, r, end0), WH_OK);
    assert_int_equal(wh_region_commit_to(h, r, end0 - 16), WH_OK);
    assert_ptr_equal(r->end, end0);
    /* An injected failure changes nothing. */
    wh_prim_fail_at(1, 0);
    assert_int_equal(wh_region_commit_to(h, r, end0 + 1), WH_ENOMEM);
    wh_prim_fail_at(0, 0);
    assert_ptr_equal(r->end, end0);
    assert_true(maps_range_is(end0, limit, "---p"));
    /* One byte more: at least a page, page aligned, within the reservation. */
    assert_int_equal(wh_region_commit_to(h, r, end0 + 1), WH_OK);
    char *end1 = r->end;
    assert_true(end1 >= end0 + pg && end1 <= limit);
    assert_int_equal((uintptr_t)end1 % pg, 0);
    assert_true(maps_range_is(r, end1, "rw-p"));
    if (end1 < limit) assert_true(maps_range_is(end1, limit, "---p"));
    for (volatile char *p = end0; p < end1; p += pg) { p[0] = 1; p[pg - 1] = 2; }
    /* Past the reservation: refused, nothing changed. */
    assert_int_equal(wh_region_commit_to(h, r, limit + 1), WH_ENOMEM);
    assert_int_equal(wh_region_commit_to(h, r, limit + MB), WH_ENOMEM);
    assert_ptr_equal(r->end, end1);
    /* Up to the reservation. */
    assert_int_equal(wh_region_commit_to(h, r, limit - 100), WH_OK);
    assert_ptr_equal(r->end, limit);
    assert_true(maps_range_is(r, limit, "rw-p"));
    for (volatile char *p = end1; p < limit; p += pg) p[0] = 3;
    wh_heap_unlock(h);
    assert_true(HeapDestroy((HANDLE)h)); /* tiling not extended: do not reuse */

    /* Fixed heap whose reservation (100 KiB) is smaller than its mapping
     * (128 KiB): commit stops at the reservation. */
    wh_heap *f = new_heap(0, 0, 100000);
    r = &f->region0;
    limit = (char *)r + r->reserve;
    assert_int_equal(r->reserve, 25 * pg);
    wh_heap_lock(f);
    assert_int_equal(wh_region_commit_to(f, r, limit + 1), WH_ENOMEM);
    assert_int_equal(wh_region_commit_to(f, r, limit), WH_OK);
    assert_ptr_equal(r->end, limit);
    assert_true(maps_range_is(r, limit, "rw-p"));
    assert_true(maps_range_is(limit, (char *)r + r->map_size, "---p"));
    wh_heap_unlock(f);
    assert_true(HeapDestroy((HANDLE)f));
}

static void test_map_bytes_leaf_growth(void **state) {
    (void)state;
    char *w = (char *)WIN_GROW;
    size_t mb = wh_region_map_bytes(), rb = wh_prim_reserved_bytes();
    /* First use of a 4 GiB window: exactly one leaf. */
    assert_int_equal(wh_region_map_set(w + 10 * WH_CHUNK, WH_CHUNK, 0x1000), 0);
    assert_int_equal(wh_region_map_bytes(), mb + LEAF_BYTES);
    assert_int_equal(wh_prim_reserved_bytes(), rb + LEAF_BYTES);
    /* More entries in the same window, even at both of its ends: nothing. */
    assert_int_equal(wh_region_map_set(w, 4 * WH_CHUNK, 0x2000), 0);
    assert_int_equal(wh_region_map_set(w + GB4 - WH_CHUNK, WH_CHUNK, 0x3000), 0);
    assert_int_equal(wh_region_map_bytes(), mb + LEAF_BYTES);
    assert_int_equal(wh_region_map_get(w + 10 * WH_CHUNK), 0x1000);
    assert_int_equal(wh_region_map_get(w + 3 * WH_CHUNK), 0x2000);
    assert_int_equal(wh_region_map_get(w + GB4 - 1), 0x3000);
    /* A range crossing into the next (fresh) window: one more leaf. */
    assert_int_equal(wh_region_map_set(w + GB4 - 2 * WH_CHUNK, 4 * WH_CHUNK, 0x4000), 0);
    assert_int_equal(wh_region_map_bytes(), mb + 2 * LEAF_BYTES);
    assert_int_equal(wh_region_map_get(w + GB4 + WH_CHUNK), 0x4000);
    assert_int_equal(wh_region_map_get(w + GB4 + 2 * WH_CHUNK), 0);
    /* A range spanning two fresh windows at once: two leaves. */
    char *w3 = w + 3 * GB4;
    assert_int_equal(wh_region_map_set(w3 - WH_CHUNK, 2 * WH_CHUNK, 0x5000), 0);
    assert_int_equal(wh_region_map_bytes(), mb + 4 * LEAF_BYTES);
    /* Clearing never releases leaves. */
    assert_int_equal(wh_region_map_set(w, GB4 + 2 * WH_CHUNK, 0), 0);
    assert_int_equal(wh_region_map_set(w3 - WH_CHUNK, 2 * WH_CHUNK, 0), 0);
    assert_int_equal(wh_region_map_bytes(), mb + 4 * LEAF_BYTES);
    assert_int_equal(wh_prim_reserved_bytes(), rb + 4 * LEAF_BYTES);
    assert_int_equal(wh_region_map_get(w + 10 * WH_CHUNK), 0);
    assert_int_equal(wh_region_map_get(w + GB4 - 1), 0);
    /* Heaps created and destroyed next to existing heaps do not grow the
     * map once their window has a leaf (same window as a live heap). */
    wh_heap *a = new_heap(0, 0, 0);
    size_t mb2 = wh_region_map_bytes();
    for (int i = 0; i < 8; i++) {
        HANDLE t = HeapCreate(0, 0, 0);
        assert_non_null(t);
        if (((uintptr_t)t >> 32) == ((uintptr_t)a >> 32)) {
            assert_true(HeapDestroy(t));
            assert_int_equal(wh_region_map_bytes(), mb2);
        } else {
            assert_true(HeapDestroy(t));
            mb2 = wh_region_map_bytes();
        }
    }
    assert_true(HeapDestroy((HANDLE)a));
}

static void test_map_leaf_fault(void **state) {
    (void)state;
    char *w = (char *)WIN_FAULT;
    size_t mb = wh_region_map_bytes(), rb = wh_prim_reserved_bytes();
    /* 1: the leaf's reserve fails; 2: its commit fails (leaf released). */
    for (uint64_t n = 1; n <= 2; n++) {
        wh_prim_fail_at(n, 0);
        assert_int_equal(wh_region_map_set(w, WH_CHUNK, 0x10), -1);
        assert_int_equal(wh_prim_calls(), n);
        wh_prim_fail_at(0, 0);
        assert_int_equal(wh_region_map_bytes(), mb);
        assert_int_equal(wh_prim_reserved_bytes(), rb);
        assert_int_equal(wh_region_map_get(w), 0);
    }
    /* Sticky failure. */
    wh_prim_fail_at(1, 1);
    assert_int_equal(wh_region_map_set(w, WH_CHUNK, 0x10), -1);
    wh_prim_fail_at(0, 0);
    assert_int_equal(wh_prim_reserved_bytes(), rb);
    /* Range over two fresh windows; the second leaf fails: no entry is
     * written in either window; the first leaf, if kept, is map memory. */
    char *x = w + 2 * GB4 - WH_CHUNK;
    static const uint64_t second_leaf[] = { 3, 1, 2 }; /* after the first try, leaf 1 exists */
    for (int i = 0; i < 3; i++) {
        size_t h0 = held();
        wh_prim_fail_at(second_leaf[i], 0);
        assert_int_equal(wh_region_map_set(x, 2 * WH_CHUNK, 0x20), -1);
        assert_int_equal(wh_prim_calls(), second_leaf[i]);
        wh_prim_fail_at(0, 0);
        assert_int_equal(wh_region_map_get(x), 0);
        assert_int_equal(wh_region_map_get(x + WH_CHUNK), 0);
        assert_int_equal(held(), h0);
    }
    /* Without a fault the same calls work. */
    assert_int_equal(wh_region_map_set(w, WH_CHUNK, 0x10), 0);
    assert_int_equal(wh_region_map_get(w), 0x10);
    assert_int_equal(wh_region_map_set(x, 2 * WH_CHUNK, 0x20), 0);
    assert_int_equal(wh_region_map_get(x + WH_CHUNK), 0x20);
    assert_int_equal(wh_region_map_set(w, WH_CHUNK, 0), 0);
    assert_int_equal(wh_region_map_set(x, 2 * WH_CHUNK, 0), 0);
}

static void test_region_add_leaf_fault(void **state) {
    (void)state;
    size_t pg = wh_prim_page_size();
    (void)pg;
    wh_heap *h = new_heap(0, 0, 0);
    wh_heap_lock(h);
    size_t mb = wh_region_map_bytes(), rb = wh_prim_reserved_bytes();
    size_t next = h->next_region_size;
    char *w = (char *)WIN_HOOK;
    hook_install();
    /* The region lands in a fresh window (the wrapped reserve is not
     * counted): call 1 = region commit, 2 = leaf reserve, 3 = leaf commit. */
    for (uint64_t n = 2; n <= 3; n++) {
        hook_hint = w;
        wh_prim_fail_at(n, 0);
        assert_null(wh_region_add(h, 4096));
        assert_int_equal(wh_prim_calls(), n);
        wh_prim_fail_at(0, 0);
        assert_null(hook_hint);       /* the region was reserved at w ... */
        assert_int_equal(hook_n, 0);  /* ... and released again */
        assert_true(maps_range_unmapped(w, w + next));
        assert_int_equal(wh_region_map_bytes(), mb);
        assert_int_equal(wh_prim_reserved_bytes(), rb);
        assert_int_equal(wh_region_map_get(w), 0);
        assert_int_equal(h->nregions, 1);
        assert_null(h->region0.next);
        assert_ptr_equal(h->last_region, &h->region0);
        assert_int_equal(h->next_region_size, next);
    }
    /* No fault: the region is added there with one new leaf. */
    hook_hint = w;
    wh_region *r = wh_region_add(h, 4096);
    assert_ptr_equal(r, w);
    check_new_region(h, r, 1, 4096);
    assert_int_equal(wh_region_map_bytes(), mb + LEAF_BYTES);
    /* A second region in the same window needs no leaf. */
    hook_hint = w + 64 * MB;
    wh_region *r2 = wh_region_add(h, 4096);
    assert_ptr_equal(r2, w + 64 * MB);
    check_new_region(h, r2, 2, 4096);
    assert_int_equal(wh_region_map_bytes(), mb + LEAF_BYTES);
    wh_heap_unlock(h);
    assert_true(HeapDestroy((HANDLE)h)); /* releases through the hook */
    assert_int_equal(hook_n, 0);
    hook_remove();
    assert_chunks(w, 2 * MB, 0);
    assert_true(maps_range_unmapped(w, w + 128 * MB));
}

int main(void) {
    setenv("WINHEAP_TERMINATE_ON_CORRUPTION", "0", 1);
    (void)GetProcessHeap();
    HeapDestroy(HeapCreate(0, 0, 0));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_heap_handle),
        cmocka_unit_test(test_map_foreign_addresses),
        cmocka_unit_test(test_map_set_and_clear),
        cmocka_unit_test(test_map_set_rejects_bad_ranges),
        cmocka_unit_test(test_map_set_rejects_wrapping_size),
        cmocka_unit_test(test_tombstone_after_large_free),
        cmocka_unit_test(test_region_add_growth),
        cmocka_unit_test(test_region_add_caps_odd_sizes),
        cmocka_unit_test(test_region_add_failure_clean),
        cmocka_unit_test(test_commit_to),
        cmocka_unit_test(test_map_bytes_leaf_growth),
        cmocka_unit_test(test_map_leaf_fault),
        cmocka_unit_test(test_region_add_leaf_fault),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
