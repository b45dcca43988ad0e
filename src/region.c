/*
 * region.c - a heap's reserved regions and the process-wide address map.
 *
 * A region is a 64 KiB-aligned reservation.  BLOCKS regions hold the heap's
 * blocks: their header sits at the base (region 0 also holds the heap object,
 * so the handle is the region's base), then the blocks tile [first, end),
 * where `end` is the committed end.  Pages past `end` are reserved but
 * inaccessible until an allocation needs them (commit on demand, SPEC D8).
 * LARGE regions hold one large block each (large.c).
 *
 * The address map answers "which region holds this address?" without
 * touching the address: one machine word per 64 KiB chunk of the 47-bit user
 * address space, in a two-level table whose leaves (512 KiB each, 4 GiB of
 * address space) are mapped on first use and never released.  Readers are
 * lock-free (atomic loads); writers hold map_lock.  An entry is 0 (not
 * winheap's), a region pointer, a group of the low-fragmentation front end
 * (group | 2, lfh.c), or a tombstone (WH_TOMBSTONE) left by a released
 * large block so that a second free of it is recognised as a double
 * free rather than a foreign pointer.  Every ownership decision (bad
 * handles, foreign pointers, HeapValidate of garbage) goes through here
 * before any heap memory is read.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

#define MAP_ADDR_BITS WH_MAP_ADDR_BITS
#define MAP_L2_BITS WH_MAP_L2_BITS
#define MAP_L2_SIZE ((size_t)sizeof(uintptr_t) << MAP_L2_BITS)

/* The map's first level (lookups inline in internal.h; hidden symbol). */
_Atomic(_Atomic uintptr_t *) wh_map_l1[(size_t)1 << WH_MAP_L1_BITS];
#define map_l1 wh_map_l1
static wh_lock map_lock = WH_LOCK_INITIALIZER;
static _Atomic size_t map_bytes;

size_t wh_region_map_bytes(void) { return atomic_load(&map_bytes); }

/* fork(): heap.c's atfork handlers hold the map lock across the fork (or
 * leave it to the forking thread if that thread's interrupted call holds
 * it). */
wh_lock *wh_region_map_lock(void) { return &map_lock; }

wh_region *wh_region_of(const void *p) {
    uintptr_t e = wh_region_map_get(p);
    if (!e || (e & 3)) return NULL;
    return (wh_region *)e;
}

/* The leaf covering address a, mapped if needed.  Caller holds map_lock.
 * NULL if the OS refused the memory. */
static _Atomic uintptr_t *map_leaf(uintptr_t a) {
    size_t i = a >> (WH_CHUNK_SHIFT + MAP_L2_BITS);
    _Atomic uintptr_t *leaf = atomic_load_explicit(&map_l1[i], memory_order_relaxed);
    if (leaf) return leaf;
    void *m = wh_os_reserve(MAP_L2_SIZE, wh_prim_page_size());
    if (!m) return NULL;
    if (wh_os_commit(m, MAP_L2_SIZE, false) != 0) {
        if (wh_prim.release(m, MAP_L2_SIZE) != 0) wh_fatal_os("munmap");
        return NULL;
    }
    atomic_fetch_add(&map_bytes, MAP_L2_SIZE);
    leaf = m;
    atomic_store_explicit(&map_l1[i], leaf, memory_order_release);
    return leaf;
}

int wh_region_map_set(void *base, size_t size, uintptr_t value) {
    uintptr_t a = (uintptr_t)base, end = a + size;
    if ((a | size) & (WH_CHUNK - 1) || a >> MAP_ADDR_BITS || size > ((uintptr_t)1 << MAP_ADDR_BITS) - a) return -1;
    wh_lock_acquire(&map_lock);
    /* Map every leaf first so that the update cannot fail half way. */
    for (uintptr_t c = a; c < end; c = (c | (((uintptr_t)1 << (WH_CHUNK_SHIFT + MAP_L2_BITS)) - 1)) + 1) {
        if (!map_leaf(c)) {
            wh_lock_release(&map_lock);
            return -1;
        }
    }
    for (uintptr_t c = a; c < end; c += WH_CHUNK) {
        _Atomic uintptr_t *leaf = atomic_load_explicit(&map_l1[c >> (WH_CHUNK_SHIFT + MAP_L2_BITS)], memory_order_relaxed);
        atomic_store_explicit(&leaf[(c >> WH_CHUNK_SHIFT) & (((uintptr_t)1 << MAP_L2_BITS) - 1)], value, memory_order_release);
    }
    wh_lock_release(&map_lock);
    return 0;
}

void wh_fatal_os(const char *what) {
    char buf[128];
    size_t n = 0;
    const char *pre = "winheap: fatal: the system refused to release memory (";
    while (*pre) buf[n++] = *pre++;
    while (*what && n < 100) buf[n++] = *what++;
    buf[n++] = ')';
    buf[n++] = '\n';
    wh_prim_write_stderr(buf, n);
    abort();
}

/* An acquiring OS call failed: a shortage (ENOMEM, EAGAIN) is an answer for
 * the caller; any other error means the process's mappings are not what
 * winheap believes, which is fatal (RELIABILITY row 19). */
static void check_shortage(const char *what) {
    if (errno != ENOMEM && errno != EAGAIN) {
        char buf[160];
        size_t n = 0;
        const char *pre = "winheap: fatal: the system refused memory for another reason than a shortage (";
        while (*pre) buf[n++] = *pre++;
        while (*what && n < 140) buf[n++] = *what++;
        const char *mid = ", errno ";
        while (*mid) buf[n++] = *mid++;
        n += wh_fmt_dec(buf + n, (uint64_t)errno);
        buf[n++] = ')';
        buf[n++] = '\n';
        wh_prim_write_stderr(buf, n);
        abort();
    }
}

void *wh_os_reserve(size_t size, size_t align) {
    void *p = wh_prim.reserve(size, align);
    if (!p) check_shortage("mmap");
    return p;
}

int wh_os_commit(void *p, size_t size, bool exec) {
    int r = wh_prim.commit(p, size, exec);
    if (r != 0) check_shortage("mprotect");
    return r;
}

void *wh_region_reserve(size_t map_size, size_t commit, bool exec) {
    void *p = wh_os_reserve(map_size, WH_CHUNK);
    if (!p) return NULL;
    if (commit && wh_os_commit(p, commit, exec) != 0) {
        if (wh_prim.release(p, map_size) != 0) wh_fatal_os("munmap");
        return NULL;
    }
    return p;
}

/* How much to commit beyond the bare need: a few pages at a time keeps the
 * mprotect calls rare without committing much that is not used. */
#define COMMIT_STEP ((size_t)64 << 10)

/*
 * Create a new BLOCKS region for h with room for a block of `need` bytes.
 * Preconditions: h growable; caller holds the heap lock.
 * Returns the region, linked after h->last_region and published in the map
 * (the caller lays out its blocks); NULL on failure with nothing left behind.
 */
wh_region *wh_region_add(wh_heap *h, size_t need) {
    size_t hdr = wh_align_up(sizeof(wh_region), WH_ALIGN);
    size_t page = wh_prim_page_size();
    size_t min = wh_align_up(hdr + need, WH_CHUNK);
    size_t size = h->next_region_size;
    if (size < min) size = min;
    size_t commit = wh_align_up(hdr + need, page);
    if (commit < COMMIT_STEP) commit = COMMIT_STEP;
    if (commit > size) commit = size;
    bool exec = (h->flags & HEAP_CREATE_ENABLE_EXECUTE) != 0;
    char *base = wh_region_reserve(size, commit, exec);
    if (!base) return NULL;
    wh_region *r = (wh_region *)base;
    r->magic = WH_REGION_MAGIC ^ (uintptr_t)r;
    r->heap = h;
    r->next = NULL;
    r->index = h->nregions;
    r->kind = WH_REGION_BLOCKS;
    r->reserve = size;
    r->map_size = size;
    r->first = base + hdr;
    r->end = base + commit;
    r->last = NULL;
    if (wh_region_map_set(base, size, (uintptr_t)r) != 0) {
        if (wh_prim.release(base, size) != 0) wh_fatal_os("munmap");
        return NULL;
    }
    h->last_region->next = r;
    h->last_region = r;
    h->nregions++;
    h->next_region_size = h->next_region_size < WH_REGION_MAX / 2 ? h->next_region_size * 2 : WH_REGION_MAX;
    return r;
}

/*
 * Commit r up to at least new_end (rounded up to a page; may commit up to
 * COMMIT_STEP ahead, never past the reservation).  The caller extends the
 * block tiling over the new space.  Caller holds the heap lock.
 * WH_OK, or WH_ENOMEM with nothing changed.
 */
wh_status wh_region_commit_to(wh_heap *h, wh_region *r, char *new_end) {
    char *limit = (char *)r + r->reserve;
    size_t page = wh_prim_page_size();
    if (new_end > limit) return WH_ENOMEM;
    if (new_end <= r->end) return WH_OK;
    char *want = (char *)wh_align_up((uintptr_t)new_end, page);
    char *ahead = r->end + COMMIT_STEP;
    if (ahead > want) want = ahead;
    if (want > limit) want = limit;
    if (wh_os_commit(r->end, (size_t)(want - r->end), (h->flags & HEAP_CREATE_ENABLE_EXECUTE) != 0) != 0)
        return WH_ENOMEM;
    r->end = want;
    return WH_OK;
}

void wh_region_decommit_tail(wh_heap *h, wh_region *r, char *from) {
    (void)h;
    WH_ASSERT(((uintptr_t)from & (wh_prim_page_size() - 1)) == 0);
    if (from >= r->end) return;
    if (wh_prim.decommit(from, (size_t)(r->end - from)) != 0) wh_fatal_os("mmap(PROT_NONE)");
    r->end = from;
}

/* Unpublish r from the map, then unmap it.  The caller has unlinked it. */
void wh_region_release(wh_region *r) {
    size_t size = r->map_size;
    /* Clearing the map cannot fail: its leaves exist since the region was
     * published. */
    (void)wh_region_map_set(r, size, 0);
    wh_tool_release(r, size); /* all of it: a decommitted tail may still be poisoned */
    if (wh_prim.release(r, size) != 0) wh_fatal_os("munmap");
}
