/*
 * test_large.c - layer test of src/large.c: blocks in mappings of their own.
 *
 * wh_large_map + wh_large_link: the header sits at a 64 KiB-aligned base,
 * the payload at base + WH_LARGE_HDR (64-byte aligned), the committed pages
 * end right after the payload (plus the tool slack) and the page after them
 * is inaccessible (---p in /proc/self/maps: a guard page, never touched);
 * every chunk of the mapping is published in the address map; the heap's
 * list keeps creation order (head, tail, prev/next, nlarge).  Aligned maps
 * put the payload on the requested boundary.  wh_large_resize: inside the
 * reservation (same address, more pages committed, guard kept; shrinking
 * keeps the pages); in_place refusal; moving with mremap (contents kept,
 * exactly one reserve and one remap, list position kept, the old range
 * unmapped and tombstoned, accounting follows); the copy fallback when the
 * remap is refused; a refused destination reservation changes nothing.
 * wh_large_free unmaps (mapping count back, range unmapped, tombstone);
 * HeapDestroy releases live large blocks (entries back to 0).
 * wh_large_is_valid / wh_large_lookup detect a changed requested size (and
 * the other header fields, including map_size, which decides how much a
 * free unmaps).
 * Huge pages: a mapping of 2 MiB or more is 2 MiB-aligned and carries the
 * MADV_HUGEPAGE advice ("hg" in /proc/self/smaps VmFlags), also after a
 * resize moved it there; smaller ones do not; the guard page stays.
 */
#define _GNU_SOURCE
#include "test_util.h"
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KB ((size_t)1 << 10)
#define MB ((size_t)1 << 20)



static size_t held(void) { return wh_prim_reserved_bytes() - wh_region_map_bytes(); }
static size_t pg(void) { return wh_prim_page_size(); }

static wh_heap *new_heap(void) {
    wh_prim_fail_at(0, 0); /* a failed test may have left it armed */
    HANDLE hh = HeapCreate(0, 0, 0);
    assert_non_null(hh);
    wh_heap *h = wh_heap_from_handle(hh);
    assert_ptr_equal(h, hh);
    return h;
}

/* Map and link a large block; returns its header. */
static wh_large *lalloc(wh_heap *h, size_t req) {
    wh_status st = WH_OK;
    wh_large *l = wh_large_map(h, req, &st);
    if (!l) fail_msg("wh_large_map(%zu) failed: %d", req, (int)st);
    wh_heap_lock(h);
    void *p = wh_large_link(h, l);
    wh_heap_unlock(h);
    assert_ptr_equal(p, wh_large_payload(l));
    return l;
}

static void lfree(wh_heap *h, wh_large *l) {
    wh_heap_lock(h);
    wh_large_free(h, l);
    wh_heap_unlock(h);
}

static void assert_chunks(const void *base, size_t size, uintptr_t value) {
    for (size_t off = 0; off < size; off += WH_CHUNK) {
        assert_int_equal(wh_region_map_get((const char *)base + off), value);
        assert_int_equal(wh_region_map_get((const char *)base + off + WH_CHUNK - 1), value);
    }
}

/* Layout of a live block of `req` bytes with the default offset. */
static void check_layout(wh_heap *h, wh_large *l, size_t req) {
    char *base = (char *)l, *p = wh_large_payload(l);
    assert_int_equal((uintptr_t)base & (WH_CHUNK - 1), 0);
    assert_ptr_equal(p, base + WH_LARGE_HDR);
    assert_int_equal((uintptr_t)p & 63, 0);
    assert_int_equal(l->offset, WH_LARGE_HDR);
    assert_int_equal(l->requested, req);
    assert_int_equal(l->committed, wh_align_up(WH_LARGE_HDR + req + WH_TOOL_RZ, pg()));
    assert_int_equal(l->r.map_size % WH_CHUNK, 0);
    assert_int_equal(l->r.reserve, l->r.map_size);
    assert_true(l->r.map_size >= l->committed + pg());
    assert_int_equal(l->r.kind, WH_REGION_LARGE);
    assert_int_equal(l->r.index, WH_LARGE_REGION_INDEX);
    assert_ptr_equal(l->r.heap, h);
    assert_int_equal(l->r.magic, WH_REGION_MAGIC ^ (uintptr_t)l);
    assert_true(wh_large_is_valid(h, l));
    assert_ptr_equal(wh_region_of(p), &l->r);
    assert_chunks(base, l->r.map_size, (uintptr_t)l);
    /* Committed through the payload's end; the next page is the guard. */
    char *cend = base + l->committed;
    assert_true(cend >= p + req && cend - (p + req) < (ptrdiff_t)(pg() + WH_TOOL_RZ));
    assert_true(maps_range_is(base, cend, "rw-p"));
    assert_true(maps_range_is(cend, cend + pg(), "---p"));
    assert_true(maps_range_is(cend, base + l->r.map_size, "---p"));
}

/* 1 if the smaps VMA that contains `p` lists `flag` in its VmFlags line,
 * 0 if not, -1 if no VMA contains p. */
static int vma_has_flag(const void *p, const char *flag) {
    FILE *f = fopen("/proc/self/smaps", "r");
    assert_non_null(f);
    char line[512];
    int in = 0, found = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') == line + strspn(line, "0123456789abcdef")) {
            in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
            continue;
        }
        if (in && strncmp(line, "VmFlags:", 8) == 0) {
            char want[8];
            snprintf(want, sizeof want, " %s", flag);
            found = strstr(line, want) != NULL;
            break;
        }
    }
    fclose(f);
    return found;
}

static void test_hugepage_advice(void **state) {
    (void)state;
    FILE *thp = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!thp) {
        print_message("no transparent huge pages in this kernel: skipped\n");
        skip();
    }
    fclose(thp);
    wh_heap *h = new_heap();
    wh_large *big = lalloc(h, 8 * MB + 3);
    check_layout(h, big, 8 * MB + 3);
    assert_int_equal((uintptr_t)big & (WH_HUGE_PAGE - 1), 0);
    assert_int_equal(vma_has_flag(wh_large_payload(big), "hg"), 1);
    memset(wh_large_payload(big), 7, 8 * MB + 3);
    wh_large *small = lalloc(h, 0x100000);
    check_layout(h, small, 0x100000);
    assert_int_equal(vma_has_flag(wh_large_payload(small), "hg"), 0);
    /* Growing the small one far past its reservation moves it (mremap): the
     * new mapping is advised too and the contents came along. */
    memset(wh_large_payload(small), 9, 0x100000);
    wh_status st = WH_OK;
    wh_heap_lock(h);
    unsigned char *q = wh_large_resize(h, small, 12 * MB, false, &st);
    wh_heap_unlock(h);
    assert_non_null(q);
    wh_large *moved = (wh_large *)wh_region_of(q);
    check_layout(h, moved, 12 * MB);
    assert_int_equal(q[0], 9);
    assert_int_equal(q[0x100000 - 1], 9);
    assert_int_equal(vma_has_flag(q, "hg"), 1);
    lfree(h, big);
    lfree(h, moved);
    assert_true(HeapDestroy((HANDLE)h));
}

static void test_layout(void **state) {
    (void)state;
    wh_heap *h = new_heap();
    size_t base_held = held();
    static const size_t sizes[] = { 0xFF000, 0x100000, 0x100000 - WH_LARGE_HDR, 0x100000 - WH_LARGE_HDR - 16,
                                    0x100000 - WH_LARGE_HDR + 1, 0x123457, 3 * MB + 5 };
    size_t expect_held = base_held;
    wh_large *ls[7];
    for (int i = 0; i < 7; i++) {
        wh_large *l = lalloc(h, sizes[i]);
        check_layout(h, l, sizes[i]);
        memset(wh_large_payload(l), 0x40 + i, sizes[i]);
        expect_held += l->r.map_size;
        assert_int_equal(held(), expect_held);
        ls[i] = l;
    }
    for (int i = 0; i < 7; i++) {
        unsigned char *p = wh_large_payload(ls[i]);
        assert_int_equal(p[0], 0x40 + i);
        assert_int_equal(p[sizes[i] - 1], 0x40 + i);
        lfree(h, ls[i]);
    }
    assert_int_equal(held(), base_held);
    assert_true(HeapDestroy((HANDLE)h));
}

static void test_aligned_layout(void **state) {
    (void)state;
    wh_heap *h = new_heap();
    static const size_t aligns[] = { 4096, WH_CHUNK, 256 * KB, 2 * MB };
    for (int i = 0; i < 4; i++) {
        wh_status st = WH_OK;
        wh_large *l = wh_large_map_aligned(h, 0x100000, aligns[i], &st);
        assert_non_null(l);
        wh_heap_lock(h);
        char *p = wh_large_link(h, l);
        wh_heap_unlock(h);
        assert_int_equal((uintptr_t)p & (aligns[i] - 1), 0);
        assert_int_equal((uintptr_t)l & (WH_CHUNK - 1), 0);
        assert_true(wh_large_is_valid(h, l));
        char *cend = (char *)l + l->committed;
        assert_true(cend >= p + 0x100000);
        assert_true(maps_range_is(p, cend, "rw-p"));
        assert_true(maps_range_is(cend, cend + pg(), "---p"));
        memset(p, 1, 0x100000);
        lfree(h, l);
    }
    assert_true(HeapDestroy((HANDLE)h));
}

static void test_list_order(void **state) {
    (void)state;
    wh_heap *h = new_heap();
    assert_null(h->large_head);
    assert_int_equal(h->nlarge, 0);
    wh_large *l[4];
    for (int i = 0; i < 4; i++) {
        l[i] = lalloc(h, 0x100000 + (size_t)i * 4096);
        assert_ptr_equal(h->large_tail, l[i]);
        assert_int_equal(h->nlarge, (size_t)i + 1);
    }
    assert_ptr_equal(h->large_head, l[0]);
    for (int i = 0; i < 4; i++) {
        assert_ptr_equal(l[i]->prev, i ? l[i - 1] : NULL);
        assert_ptr_equal(l[i]->next, i < 3 ? l[i + 1] : NULL);
    }
    lfree(h, l[1]); /* middle */
    assert_ptr_equal(l[0]->next, l[2]);
    assert_ptr_equal(l[2]->prev, l[0]);
    assert_int_equal(h->nlarge, 3);
    lfree(h, l[0]); /* head */
    assert_ptr_equal(h->large_head, l[2]);
    assert_null(l[2]->prev);
    lfree(h, l[3]); /* tail */
    assert_ptr_equal(h->large_tail, l[2]);
    assert_null(l[2]->next);
    assert_int_equal(h->nlarge, 1);
    lfree(h, l[2]);
    assert_null(h->large_head);
    assert_null(h->large_tail);
    assert_int_equal(h->nlarge, 0);
    assert_true(HeapDestroy((HANDLE)h));
}

static void test_resize_in_reservation(void **state) {
    (void)state;
    wh_heap *h = new_heap();
    wh_large *l = lalloc(h, 0x100000);
    char *p = wh_large_payload(l);
    for (size_t i = 0; i < 0x100000; i += 4096) p[i] = (char)(i >> 12);
    size_t map = l->r.map_size, held0 = held();
    size_t in_max = map - pg() - WH_LARGE_HDR - WH_TOOL_RZ; /* largest request kept in place */
    wh_heap_lock(h);
    wh_status st = WH_OK;
    /* A commit refused by the system changes nothing. */
    size_t c0 = l->committed;
    wh_prim_fail_at(1, 0);
    assert_null(wh_large_resize(h, l, 0x108000, false, &st));
    wh_prim_fail_at(0, 0);
    assert_int_equal(st, WH_ENOMEM);
    assert_int_equal(l->requested, 0x100000);
    assert_int_equal(l->committed, c0);
    assert_true(wh_large_is_valid(h, l));
    assert_true(maps_range_is((char *)l + c0, (char *)l + map, "---p"));
    /* Grow within the reservation: same address, more committed, guard kept. */
    assert_ptr_equal(wh_large_resize(h, l, 0x108000, false, &st), p);
    assert_int_equal(l->requested, 0x108000);
    assert_int_equal(l->committed, wh_align_up(WH_LARGE_HDR + 0x108000 + WH_TOOL_RZ, pg()));
    assert_true(wh_large_is_valid(h, l));
    assert_true(maps_range_is(l, (char *)l + l->committed, "rw-p"));
    assert_true(maps_range_is((char *)l + l->committed, (char *)l + l->committed + pg(), "---p"));
    memset(p + 0x100000, 7, 0x8000);
    /* Up to the last request that keeps a guard page. */
    assert_ptr_equal(wh_large_resize(h, l, in_max, true, &st), p);
    assert_int_equal(l->committed, map - pg());
    assert_true(maps_range_is((char *)l + map - pg(), (char *)l + map, "---p"));
    /* One byte more cannot stay in place. */
    st = WH_OK;
    assert_null(wh_large_resize(h, l, in_max + 1, true, &st));
    assert_int_equal(st, WH_ENOMEM);
    assert_int_equal(l->requested, in_max);
    assert_true(wh_large_is_valid(h, l));
    /* Shrink: same address, pages stay committed. */
    size_t committed = l->committed;
    assert_ptr_equal(wh_large_resize(h, l, 0x1000, false, &st), p);
    assert_int_equal(l->requested, 0x1000);
    assert_int_equal(l->committed, committed);
    assert_true(wh_large_is_valid(h, l));
    for (size_t i = 0; i < 0x1000; i += 4096) assert_int_equal(p[i], (char)(i >> 12));
    assert_int_equal(held(), held0);
    wh_large_free(h, l);
    wh_heap_unlock(h);
    assert_true(HeapDestroy((HANDLE)h));
}

static void test_resize_moves_with_mremap(void **state) {
    (void)state;
    wh_heap *h = new_heap();
    wh_large *a = lalloc(h, 0x100000), *l = lalloc(h, 0x100000), *c = lalloc(h, 0x100000);
    unsigned char *p = wh_large_payload(l);
    for (size_t i = 0; i < 0x100000; i++) p[i] = (unsigned char)(i * 13 + (i >> 9));
    char *old = (char *)l;
    size_t old_map = l->r.map_size, held0 = held(), mb0 = wh_region_map_bytes();
    wh_heap_lock(h);
    wh_prim_fail_at(0, 0);
    wh_status st = WH_OK;
    unsigned char *np = wh_large_resize(h, l, 4 * MB, false, &st);
    uint64_t calls = wh_prim_calls();
    assert_non_null(np);
    assert_ptr_not_equal(np, p);
    /* mremap path: one reserve and one remap (plus two calls per new map
     * leaf); the copy fallback would have mapped a new block. */
    size_t leaves = (wh_region_map_bytes() - mb0) / ((size_t)512 << 10);
    assert_int_equal(calls, 2 + 2 * leaves);
    wh_large *n = (wh_large *)(np - WH_LARGE_HDR);
    check_layout(h, n, 4 * MB);
    for (size_t i = 0; i < 0x100000; i++)
        if (np[i] != (unsigned char)(i * 13 + (i >> 9))) fail_msg("byte %zu lost in the move", i);
    memset(np + 0x100000, 0xEE, 3 * MB);
    /* The old range is gone and tombstoned. */
    assert_true(maps_range_unmapped(old, old + old_map));
    assert_chunks(old, old_map, WH_TOMBSTONE(h));
    assert_null(wh_region_of(old + WH_LARGE_HDR));
    /* The list keeps the block's place. */
    assert_ptr_equal(a->next, n);
    assert_ptr_equal(n->prev, a);
    assert_ptr_equal(n->next, c);
    assert_ptr_equal(c->prev, n);
    assert_int_equal(h->nlarge, 3);
    assert_int_equal(held(), held0 - old_map + n->r.map_size);
    /* Moving the tail block updates large_tail. */
    unsigned char *cp = wh_large_resize(h, c, 6 * MB, false, &st);
    assert_non_null(cp);
    wh_large *c2 = (wh_large *)(cp - WH_LARGE_HDR);
    assert_ptr_equal(h->large_tail, c2);
    assert_ptr_equal(n->next, c2);
    assert_true(wh_large_is_valid(h, c2));
    wh_large_free(h, a);
    wh_large_free(h, n);
    wh_large_free(h, c2);
    wh_heap_unlock(h);
    assert_true(HeapDestroy((HANDLE)h));
}

static void *refuse_remap(void *p, size_t old_size, size_t new_size, void *dest) {
    (void)p, (void)old_size, (void)new_size, (void)dest;
    errno = ENOMEM;
    return NULL;
}

static void test_resize_move_fallback_and_failure(void **state) {
    (void)state;
    wh_heap *h = new_heap();
    wh_large *l = lalloc(h, 0x100000), *c = lalloc(h, 0x100000);
    unsigned char *p = wh_large_payload(l);
    for (size_t i = 0; i < 0x100000; i++) p[i] = (unsigned char)(i * 7);
    size_t held0 = held(), map0 = l->r.map_size, map_c = c->r.map_size;
    wh_heap_lock(h);
    /* The destination reservation is refused: nothing changes. */
    wh_prim_fail_at(1, 0);
    wh_status st = WH_OK;
    assert_null(wh_large_resize(h, l, 3 * MB, false, &st));
    wh_prim_fail_at(0, 0);
    assert_int_equal(st, WH_ENOMEM);
    assert_true(wh_large_is_valid(h, l));
    assert_int_equal(l->requested, 0x100000);
    assert_chunks(l, map0, (uintptr_t)l);
    assert_int_equal(held(), held0);
    assert_int_equal(p[0x100000 - 1], (unsigned char)((0x100000 - 1) * 7));
    /* The remap is refused: the block is copied into a new mapping. */
    void *(*saved)(void *, size_t, size_t, void *) = wh_prim.remap;
    wh_prim.remap = refuse_remap;
    unsigned char *np = wh_large_resize(h, l, 3 * MB, false, &st);
    wh_prim.remap = saved;
    assert_non_null(np);
    wh_large *n = (wh_large *)(np - WH_LARGE_HDR);
    check_layout(h, n, 3 * MB);
    for (size_t i = 0; i < 0x100000; i++)
        if (np[i] != (unsigned char)(i * 7)) fail_msg("byte %zu lost in the copy", i);
    assert_chunks(l, map0, WH_TOMBSTONE(h));
    assert_true(maps_range_unmapped(l, (char *)l + map0));
    /* The copy takes the old block's place in the list (before c). */
    assert_ptr_equal(h->large_head, n);
    assert_null(n->prev);
    assert_ptr_equal(n->next, c);
    assert_ptr_equal(c->prev, n);
    assert_ptr_equal(h->large_tail, c);
    assert_int_equal(h->nlarge, 2);
    assert_int_equal(held(), held0 - map0 + n->r.map_size);
    wh_large_free(h, n);
    wh_large_free(h, c);
    wh_heap_unlock(h);
    assert_int_equal(held(), held0 - map0 - map_c);
    assert_true(HeapDestroy((HANDLE)h));
}

static void test_free_unmaps(void **state) {
    (void)state;
    wh_heap *h = new_heap();
    size_t held0 = held();
    int maps0 = wh_count_mappings();
    wh_large *l = lalloc(h, 0x200000);
    char *base = (char *)l;
    size_t map = l->r.map_size;
    memset(wh_large_payload(l), 3, 0x200000);
    assert_true(wh_count_mappings() > maps0);
    lfree(h, l);
    assert_int_equal(wh_count_mappings(), maps0);
    assert_true(maps_range_unmapped(base, base + map));
    assert_chunks(base, map, WH_TOMBSTONE(h));
    assert_int_equal(held(), held0);
    /* HeapDestroy releases live large blocks: entries back to 0. */
    wh_large *x = lalloc(h, 0x100000), *y = lalloc(h, 0x300000);
    char *xb = (char *)x, *yb = (char *)y;
    size_t xm = x->r.map_size, ym = y->r.map_size;
    assert_true(HeapDestroy((HANDLE)h));
    assert_chunks(xb, xm, 0);
    assert_chunks(yb, ym, 0);
    assert_true(maps_range_unmapped(xb, xb + xm));
    assert_true(maps_range_unmapped(yb, yb + ym));
    assert_int_equal(held(), held0 - WH_REGION0_MIN);
}

static void test_is_valid_detects_changes(void **state) {
    (void)state;
    wh_heap *h = new_heap(), *g = new_heap();
    wh_large *l = lalloc(h, 0x100000);
    char *p = wh_large_payload(l);
    wh_large *out = NULL;
    wh_heap_lock(h);
    assert_true(wh_large_is_valid(h, l));
    assert_int_equal(wh_large_lookup(h, &l->r, p, &out), WH_OK);
    assert_ptr_equal(out, l);
    assert_false(wh_large_is_valid(g, l)); /* another heap */
    /* The requested size, changed by one either way. */
    l->requested++;
    assert_false(wh_large_is_valid(h, l));
    assert_int_equal(wh_large_lookup(h, &l->r, p, &out), WH_EHEADER);
    l->requested -= 2;
    assert_false(wh_large_is_valid(h, l));
    l->requested++;
    assert_true(wh_large_is_valid(h, l));
    /* Every other field too. */
    size_t *fields[] = { &l->committed, &l->r.reserve, &l->offset };
    for (int i = 0; i < 3; i++) {
        size_t v = *fields[i];
        *fields[i] = v + 4096;
        assert_false(wh_large_is_valid(h, l));
        *fields[i] = v;
        assert_true(wh_large_is_valid(h, l));
    }
    uint64_t m = l->r.magic;
    l->r.magic ^= 1;
    assert_false(wh_large_is_valid(h, l));
    l->r.magic = m;
    l->check ^= 1ull << 40;
    assert_false(wh_large_is_valid(h, l));
    l->check ^= 1ull << 40;
    l->r.kind = WH_REGION_BLOCKS;
    assert_false(wh_large_is_valid(h, l));
    l->r.kind = WH_REGION_LARGE;
    assert_true(wh_large_is_valid(h, l));
    /* Not the payload start. */
    assert_int_equal(wh_large_lookup(h, &l->r, p + 16, &out), WH_EINVALID);
    assert_int_equal(wh_large_lookup(h, &l->r, p - 64, &out), WH_EINVALID);
    assert_int_equal(wh_large_lookup(h, &l->r, p, &out), WH_OK);
    wh_large_free(h, l);
    wh_heap_unlock(h);
    assert_true(HeapDestroy((HANDLE)g));
    assert_true(HeapDestroy((HANDLE)h));
}

static void test_is_valid_covers_map_size(void **state) {
    (void)state;
    /* map_size decides how much wh_large_free unmaps and unpublishes: a
     * header whose map_size was enlarged must not pass as valid (it would
     * unmap the neighbouring mapping on free). */
    wh_heap *h = new_heap();
    wh_large *l = lalloc(h, 0x100000);
    wh_heap_lock(h);
    size_t v = l->r.map_size;
    l->r.map_size = v + WH_CHUNK;
    bool valid = wh_large_is_valid(h, l);
    l->r.map_size = v;
    assert_false(valid);
    assert_true(wh_large_is_valid(h, l));
    wh_large_free(h, l);
    wh_heap_unlock(h);
    assert_true(HeapDestroy((HANDLE)h));
}

int main(void) {
    setenv("WINHEAP_TERMINATE_ON_CORRUPTION", "0", 1);
    (void)GetProcessHeap();
    HeapDestroy(HeapCreate(0, 0, 0));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_aligned_layout),
        cmocka_unit_test(test_list_order),
        cmocka_unit_test(test_resize_in_reservation),
        cmocka_unit_test(test_resize_moves_with_mremap),
        cmocka_unit_test(test_resize_move_fallback_and_failure),
        cmocka_unit_test(test_free_unmaps),
        cmocka_unit_test(test_is_valid_detects_changes),
        cmocka_unit_test(test_is_valid_covers_map_size),
        cmocka_unit_test(test_hugepage_advice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
