/*
 * internal.h - every internal structure of winheap with its layout and
 * invariants, the cross-file prototypes grouped by file (read it as a table
 * of contents), the assert tiers, and small inline helpers.
 *
 * Layers, each calling only downward:
 *     api.c   -> heap.c -> (backend.c | large.c) -> region.c -> prim_posix.c
 *     walk.c  reads the same structures through backend.c's block iterator.
 *     harden.c (header encoding, corruption reports) and options.c
 *     (environment) are used by every layer.
 */
#ifndef WINHEAP_INTERNAL_H
#define WINHEAP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "winheap.h"
#include "prim.h"
#include "lock.h"
#include "toolhooks.h"

#ifndef WH_DEBUG_LEVEL
#define WH_DEBUG_LEVEL 0
#endif

/* Zero on free and the write-after-free checks on reuse (RELIABILITY rows
 * 11 and 13): on by default.  WINHEAP_ZERO_ON_FREE=0 in the environment
 * turns them off for the process (options.c); cmake
 * -DWINHEAP_ZERO_ON_FREE=OFF compiles them out, only to measure their cost. */
#ifndef WH_ZERO_ON_FREE
#define WH_ZERO_ON_FREE 1
#endif
extern bool wh_zero_mode; /* options.c: false once WINHEAP_ZERO_ON_FREE=0 was read */
static inline bool wh_zero_on_free(void) { return WH_ZERO_ON_FREE && wh_zero_mode; }

/* The hardening of the hardening issue beyond what the SPEC's semantics
 * need: keyed, checked block headers (back end and large blocks); keyed LFH
 * links checked before they are followed; no immediate reuse of a freed
 * LFH slot; fresh LFH slots in a shuffled order.  (Double-free and interior-
 * pointer detection are D4/D5 semantics and stay.)  cmake
 * -DWINHEAP_HARDENING=OFF exists only to measure its cost (README
 * "Speed"); never ship it off. */
#ifndef WH_HARDEN
#define WH_HARDEN 1
#endif
#define WH_LFH_HARDEN WH_HARDEN

#define WH_LIKELY(x) __builtin_expect(!!(x), 1)
#define WH_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define WH_NOINLINE __attribute__((noinline))

/* ------------------------------------------------------------------ */
/* Assert tiers (compiled out below their level).                      */
/*   1: API misuse the library can survive; 2: O(1) invariants;        */
/*   3: O(n) checks (walk a list, validate a heap).                    */
/* The failure path formats into a stack buffer and never allocates.   */
/* ------------------------------------------------------------------ */
__attribute__((noreturn)) void wh_assert_fail(const char *file, int line, const char *expr);
#define WH_ASSERT_AT(lvl, c) \
    do { if (WH_DEBUG_LEVEL >= (lvl) && WH_UNLIKELY(!(c))) wh_assert_fail(__FILE__, __LINE__, #c); } while (0)
#define WH_ASSERT_API(c) WH_ASSERT_AT(1, c)
#define WH_ASSERT(c) WH_ASSERT_AT(2, c)
#define WH_ASSERT_EXPENSIVE(c) WH_ASSERT_AT(3, c)

/* ------------------------------------------------------------------ */
/* Sizes and limits                                                    */
/* ------------------------------------------------------------------ */
#define WH_ALIGN ((size_t)16)                  /* MEMORY_ALLOCATION_ALIGNMENT */
#define WH_HDR ((size_t)16)                    /* block header bytes */
#define WH_MIN_BLOCK ((size_t)32)              /* header + two free-list links */
#define WH_GROW_ROOM ((size_t)16 << 10)         /* most room a growing back-end block takes (backend.c) */
#define WH_CHUNK_SHIFT 16
#define WH_CHUNK ((size_t)1 << WH_CHUNK_SHIFT)  /* 64 KiB: handle and region alignment */
#define WH_REGION0_MIN ((size_t)1 << 20)        /* first region of a growable heap */
#define WH_REGION_MAX ((size_t)256 << 20)       /* growth cap of later regions */
#define WH_HUGE_PAGE ((size_t)2 << 20)          /* transparent huge page size (x86-64) */
#define WH_LARGE_HDR ((size_t)128)              /* large block header; payload 64-byte aligned */
#define WH_LARGE_REGION_INDEX 64                /* iRegionIndex of large blocks (SPEC 2.11) */
/* The largest request an allocator layer is ever asked for: everything above
 * fails before any arithmetic, so no rounding below can wrap. */
#define WH_MAX_REQUEST ((size_t)1 << 46)

_Static_assert(WINHEAP_LARGE_THRESHOLD < ((size_t)1 << 20), "in-heap blocks stay below 1 MiB");
_Static_assert(WINHEAP_FIXED_LIMIT < WINHEAP_LARGE_THRESHOLD, "fixed limit below large threshold");

static inline size_t wh_align_up(size_t x, size_t a) { return (x + a - 1) & ~(a - 1); }
static inline size_t wh_align_down(size_t x, size_t a) { return x & ~(a - 1); }
/* Bytes of the back-end block (header included) that holds `need` bytes
 * (a request plus its padding; need <= WH_MAX_REQUEST). */
static inline size_t wh_block_size_for(size_t need) {
    size_t b = wh_align_up(need + WH_HDR, WH_ALIGN);
    return b < WH_MIN_BLOCK ? WH_MIN_BLOCK : b;
}
static inline bool wh_mul_overflow(size_t a, size_t b, size_t *out) { return __builtin_mul_overflow(a, b, out); }
static inline bool wh_add_overflow(size_t a, size_t b, size_t *out) { return __builtin_add_overflow(a, b, out); }

/* ------------------------------------------------------------------ */
/* Status codes returned by the layers below api.c                     */
/* ------------------------------------------------------------------ */
typedef enum wh_status {
    WH_OK = 0,
    WH_ENOMEM,      /* out of memory / address space / fixed heap full */
    WH_EFOREIGN,    /* pointer in no region of this heap (D4) */
    WH_EDOUBLE,     /* pointer to a block that is already free (D5) */
    WH_EINVALID,    /* pointer inside the heap but not a block start (D5) */
    WH_EHEADER,     /* a block header fails its check (D5) */
    WH_ELIST,       /* a free-list link fails its check (D5) */
    WH_ETAIL,       /* debug heap: the tail padding after a block changed */
    WH_EFREEMOD,    /* debug heap: a free block was written to */
} wh_status;
/* The address-map tombstone that a released large block of heap h leaves:
 * low bits 01 (region pointers end in 00, LFH groups in 10). */
#define WH_TOMBSTONE(h) ((uintptr_t)((h)->serial << 2) | 1)
/* Corruption = the D5 statuses. */
static inline bool wh_status_is_corruption(wh_status s) { return s >= WH_EDOUBLE; }
const char *wh_status_reason(wh_status s);

/* ------------------------------------------------------------------ */
/* Block header (16 bytes, immediately before the payload)             */
/*                                                                     */
/*  decoded w0 = size_units:40 << 24 | unused:16 << 8 | flags:8        */
/*  decoded w1 = prev_units:40 << 24 | check:24                        */
/*  stored  s0 = w0 ^ heap->key_hdr0, s1 = w1 ^ heap->key_hdr1         */
/*                                                                     */
/* size = whole block bytes (header included), multiple of 16, >= 32.  */
/* prev = size of the physically previous block (0 for the first).    */
/* unused = capacity - requested for busy blocks, capacity = size-16.  */
/* check = a keyed hash of (address, w0, prev) - an overflow that      */
/* rewrites a header is caught on its next use.  Invariants (enforced  */
/* by wh_backend_is_valid): blocks tile [first, end) of their   */
/* region; prev matches; no two free blocks are adjacent; every free   */
/* block is on exactly the free list of its size class.                */
/* ------------------------------------------------------------------ */
typedef struct wh_block {
    uint64_t s0;
    uint64_t s1;
} wh_block;
_Static_assert(sizeof(wh_block) == 16, "block header is 16 bytes");

enum {
    WH_BF_BUSY = 0x01,  /* allocated */
    WH_BF_GROUP = 0x02, /* reserved: holds LFH slots (front-end issue) */
};

typedef struct wh_binfo {
    size_t size;
    size_t prev;
    unsigned flags;
    unsigned unused;
} wh_binfo;

/* Free blocks keep two encoded links at the start of their payload:
 * stored = pointer ^ heap->key_link; decoded links are checked for range
 * and alignment before they are followed. */
typedef struct wh_freelinks {
    uintptr_t next;
    uintptr_t prev;
} wh_freelinks;

/* ------------------------------------------------------------------ */
/* Region: a 64 KiB-aligned reservation holding blocks                 */
/* ------------------------------------------------------------------ */
enum { WH_REGION_BLOCKS = 1, WH_REGION_LARGE = 2, WH_REGION_LFH = 3 };

typedef struct wh_region {
    uint64_t magic;            /* WH_REGION_MAGIC ^ address */
    struct wh_heap *heap;      /* owner */
    struct wh_region *next;    /* next region of the heap, index order */
    uint32_t index;            /* region number (0 holds the heap object) */
    uint32_t kind;             /* WH_REGION_BLOCKS or WH_REGION_LARGE */
    size_t reserve;            /* bytes of the heap's reservation (page multiple) */
    size_t map_size;           /* bytes actually mapped (64 KiB multiple >= reserve) */
    char *first;               /* first block header (BLOCKS) */
    char *end;                 /* committed end == end of the block tiling (BLOCKS) */
    char *last;                /* header of the last block, or NULL if none (BLOCKS) */
} wh_region;
#define WH_REGION_MAGIC 0x57484547494f4e31ull /* "WHEGION1" */

/* A large block: a mapping of its own, header at the mapping's base. */
typedef struct wh_large {
    wh_region r;               /* kind WH_REGION_LARGE; r.reserve = mapping bytes */
    struct wh_large *prev, *next; /* the heap's large list, creation order */
    size_t requested;          /* HeapSize */
    size_t committed;          /* bytes read/write from the base */
    size_t offset;             /* payload offset from the base: WH_LARGE_HDR, or more for aligned blocks */
    uint64_t check;            /* keyed hash of (address, requested, committed, reserve) */
} wh_large;
_Static_assert(sizeof(wh_large) <= WH_LARGE_HDR, "large header fits");

/* ------------------------------------------------------------------ */
/* Heap object: lives in region 0 right after its region header; the   */
/* handle is the 64 KiB-aligned base of region 0.                      */
/* ------------------------------------------------------------------ */
#define WH_LFH_MAX ((size_t)16 << 10)   /* the LFH serves requests up to 16 KiB (SPEC 6) */
#define WH_LFH_CLASSES 80               /* back-end classes of blocks up to WH_LFH_MAX */
#define WH_LFH_ACTIVATE 18              /* allocations of one class that switch it on (D16) */
#define WH_NLISTS 121 /* 32 linear (16-byte steps) + 11 x 8 log classes + 1 for >= 1 MiB */

struct wh_lfh_seg;
struct wh_tlh;
struct wh_group;

typedef struct wh_heap {
    wh_region region0;         /* must stay first: handle == &region0 == heap */
    uint64_t magic;            /* WH_HEAP_MAGIC ^ address */
    uint64_t serial;           /* unique per HeapCreate in this process, never reused */
    uint32_t flags;            /* kept creation flags | HEAP_GROWABLE for growable heaps */
    uint32_t compat;           /* HeapCompatibilityInformation value: 0 or 2 */
    size_t max_size;           /* fixed heap: its reservation; 0 for growable heaps */
    /* registry (GetProcessHeaps), protected by the registry lock */
    struct wh_heap *reg_prev, *reg_next;
    /* the heap lock: a wh_lock (its owner word is the lock) made recursive
     * by a depth count that only the owner touches */
    wh_lock lock;
    uint32_t recursion;        /* owner's depth */
    bool fork_taken;           /* fork_prepare took this lock (heap.c; forking thread only) */
    /* keys of the encoded metadata (random per heap) */
    uint64_t key_hdr0, key_hdr1, key_link, key_large;
    /* regions (caller holds the lock) */
    wh_region *last_region;
    uint32_t nregions;
    size_t next_region_size;
    /* large blocks (caller holds the lock) */
    wh_large *large_head, *large_tail;
    size_t nlarge;
    /* fixed heap under the debug page heap: what its blocks in mappings of
     * their own take from its maximum (large.c; caller holds the lock) */
    size_t fixed_charged;
    /* D16: allocations counted per size class until the low-fragmentation
     * mode switches on by itself (caller holds the lock) */
    uint8_t lfh_hits[WH_LFH_CLASSES];
    /* low-fragmentation front end (lfh.c; caller holds the lock) */
    struct wh_lfh_seg *lfh_head, *lfh_tail;  /* segments, creation order */
    _Atomic(struct wh_tlh *) tlhs;           /* thread caches (pushed under the lock, read lock-free) */
    struct wh_group *abandoned[64];          /* groups of exited threads, per class */
    struct wh_group *pool[3];                /* empty groups of 1, 2, 4 chunks */
    /* back end: segregated free lists and the bitmap of non-empty lists */
    uint64_t bitmap[2];
    wh_block *lists[WH_NLISTS];
} wh_heap;
#define WH_HEAP_MAGIC 0x5748484541503031ull
_Static_assert(sizeof(wh_heap) + 32 <= 0xC00, "a fixed heap's metadata leaves room for a block of max - 0xC00"); /* "WHHEAP01" */

/* ------------------------------------------------------------------ */
/* options.c - runtime options read once from the environment          */
/* ------------------------------------------------------------------ */
typedef struct wh_options {
    bool terminate_on_corruption; /* WINHEAP_TERMINATE_ON_CORRUPTION (default 1) */
    unsigned debug;               /* WINHEAP_DEBUG: WH_DBG_* switches (D18) */
    bool seeded;                  /* WINHEAP_SEED=<number>: reproducible randomization */
    bool hugepages;               /* WINHEAP_HUGEPAGES (default 1): THP advice on large blocks */
    uint64_t seed;
} wh_options;
const wh_options *wh_options_get(void);     /* reads the environment at the first call */
bool wh_options_toc(void);                   /* termination on corruption in force now */
void wh_options_enable_toc(void);            /* HeapSetInformation: on for good */

/* ------------------------------------------------------------------ */
/* debug.c - the debug heap (D18)                                      */
/* ------------------------------------------------------------------ */
enum { WH_DBG_TAIL = 1, WH_DBG_FREE = 2, WH_DBG_VALIDATE = 4, WH_DBG_GUARD = 8 };
#define WH_FILL_TAIL 0xABABABABu  /* tail padding */
#define WH_FILL_NEW 0xBAADF00Du   /* a new block (free checking) */
#define WH_FILL_FREE 0xFEEEFEEEu  /* a free block (free checking) */
#define WH_TAIL_BYTES ((size_t)8) /* the least tail padding */
extern unsigned wh_debug_mode; /* the WH_DBG_* switches, fixed when the first heap is created */
static inline unsigned wh_debug_flags(void) { return wh_debug_mode; }
static inline size_t wh_debug_tail(void) { return (wh_debug_flags() & WH_DBG_TAIL) ? WH_TAIL_BYTES : 0; }
/* Bytes every block keeps after its request: debug tail plus tool slack. */
static inline size_t wh_pad(void) { return wh_debug_tail() + WH_TOOL_RZ; }
void wh_debug_fill(void *p, size_t n, uint32_t pattern);
bool wh_debug_check(const void *p, size_t n, uint32_t pattern);
/* Bytes wh_debug_fill has written and wh_debug_check has read since the
 * process started (all patterns, all heaps): the tests bound the work of
 * free checking with them. */
extern _Atomic uint64_t wh_debug_filled, wh_debug_checked;

/* ------------------------------------------------------------------ */
/* harden.c - header encoding, corruption reports, exceptions          */
/* ------------------------------------------------------------------ */
void wh_harden_init_keys(wh_heap *h);
uint64_t wh_harden_random64(void);          /* the process's random stream (WINHEAP_SEED fixes it) */
void wh_harden_reseed(uint64_t mix);        /* fork child: a stream of its own */
uint32_t wh_harden_generation(void);        /* how many reseeds (forks) this process's stream has had */
wh_lock *wh_harden_rng_lock(void);          /* the seeding lock, for heap.c's fork handlers only */
/* The 24-bit check of a back-end header: a keyed hash of its fields and
 * its address (inline: every header read and write computes it). */
static inline uint32_t wh_harden_check(const wh_heap *h, const void *addr, uint64_t w0, uint64_t prev_units) {
    if (!WH_HARDEN) return 0;
    uint64_t x = w0 ^ (prev_units * 0xD6E8FEB86659FD93ull) ^ ((uint64_t)(uintptr_t)addr * 0x9E3779B97F4A7C15ull) ^ h->key_hdr1;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    return (uint32_t)(x & 0xFFFFFF);
}
uint64_t wh_harden_large_check(const wh_heap *h, const wh_large *l);
/* Report corruption found by `func` at `addr`.  With termination on: one
 * line on stderr and abort().  Otherwise returns. */
void wh_report_corruption(const char *func, const void *addr, wh_status why);
/* Raise a heap exception (D6): call the handler; if there is none or it
 * returns, report the unhandled exception and abort. */
void wh_raise_exception(const char *func, DWORD status, HANDLE heap, DWORD flags, SIZE_T size);
/* Format helpers that never allocate. */
size_t wh_fmt_hex(char *out, uint64_t v, int digits);
size_t wh_fmt_dec(char *out, uint64_t v);

/* Encode / decode a block header.  decode returns false if the check fails. */
WH_NO_ASAN static inline void wh_block_write(const wh_heap *h, wh_block *b, const wh_binfo *bi) {
    uint64_t w0 = ((uint64_t)(bi->size >> 4) << 24) | ((uint64_t)(bi->unused & 0xFFFF) << 8) | (bi->flags & 0xFF);
    uint64_t pu = (uint64_t)(bi->prev >> 4);
    uint64_t w1 = (pu << 24) | wh_harden_check(h, b, w0, pu);
    wh_tool_enter();
    b->s0 = w0 ^ h->key_hdr0;
    b->s1 = w1 ^ h->key_hdr1;
    wh_tool_leave();
}
WH_NO_ASAN static inline bool wh_block_read(const wh_heap *h, const wh_block *b, wh_binfo *bi) {
    wh_tool_enter();
    uint64_t w0 = b->s0 ^ h->key_hdr0;
    uint64_t w1 = b->s1 ^ h->key_hdr1;
    wh_tool_leave();
    uint64_t pu = w1 >> 24;
    if (WH_UNLIKELY((w1 & 0xFFFFFF) != wh_harden_check(h, b, w0, pu))) return false;
    bi->size = (size_t)(w0 >> 24) << 4;
    bi->unused = (unsigned)((w0 >> 8) & 0xFFFF);
    bi->flags = (unsigned)(w0 & 0xFF);
    bi->prev = (size_t)pu << 4;
    return true;
}
static inline void *wh_block_payload(wh_block *b) { return (char *)b + WH_HDR; }
static inline wh_block *wh_block_of_payload(const void *p) { return (wh_block *)((char *)p - WH_HDR); }

/* ------------------------------------------------------------------ */
/* region.c - reservations, commit on demand, the address map          */
/* ------------------------------------------------------------------ */
/* The address map: one entry per 64 KiB chunk of the address space.
 * 0 = not winheap's; a wh_region pointer; an LFH group | 2; or a tombstone
 * (WH_TOMBSTONE) for a released large block.  Lock-free reads. */
#define WH_MAP_ADDR_BITS 47
#define WH_MAP_L2_BITS 16
#define WH_MAP_L1_BITS (WH_MAP_ADDR_BITS - WH_CHUNK_SHIFT - WH_MAP_L2_BITS)
extern _Atomic(_Atomic uintptr_t *) wh_map_l1[(size_t)1 << WH_MAP_L1_BITS];
/* Inline: HeapFree's hot path starts here. */
static inline uintptr_t wh_region_map_get(const void *p) {
    uintptr_t a = (uintptr_t)p;
    if (WH_UNLIKELY(a >> WH_MAP_ADDR_BITS)) return 0;
    _Atomic uintptr_t *leaf = atomic_load_explicit(&wh_map_l1[a >> (WH_CHUNK_SHIFT + WH_MAP_L2_BITS)], memory_order_acquire);
    if (WH_UNLIKELY(!leaf)) return 0;
    return atomic_load_explicit(&leaf[(a >> WH_CHUNK_SHIFT) & (((uintptr_t)1 << WH_MAP_L2_BITS) - 1)], memory_order_acquire);
}
/* Region containing p (a live BLOCKS or LARGE region), or NULL. */
wh_region *wh_region_of(const void *p);   /* NULL for tombstones and LFH group chunks */
/* Set the entries of [base, base+size) to `value`.  -1 if a map page
 * could not be allocated (nothing changed). */
int wh_region_map_set(void *base, size_t size, uintptr_t value);
size_t wh_region_map_bytes(void);
/* The map writers' lock, for heap.c's fork handlers only. */
wh_lock *wh_region_map_lock(void);
/* The acquiring OS calls as every layer makes them: NULL / -1 on a
 * shortage (ENOMEM, EAGAIN); any other error is fatal (a message, then
 * abort). */
void *wh_os_reserve(size_t size, size_t align);
int wh_os_commit(void *p, size_t size, bool exec);
/* Reserve a 64 KiB-aligned region of map_size bytes and commit its first
 * `commit` bytes (exec: PROT_EXEC).  Does not publish it in the map.
 * NULL on failure (nothing left behind). */
void *wh_region_reserve(size_t map_size, size_t commit, bool exec);
/* Create the next BLOCKS region of heap h (caller holds the lock) with room
 * for a block of `need` bytes, committed as far as needed; publishes it in
 * the map and links it after h->last_region.  The caller lays out its
 * blocks (wh_backend_region_init).  NULL on failure. */
wh_region *wh_region_add(wh_heap *h, size_t need);
/* Commit more of r so that its end moves to at least new_end (page
 * rounded; may commit ahead).  WH_OK or WH_ENOMEM. */
wh_status wh_region_commit_to(wh_heap *h, wh_region *r, char *new_end);
/* Unpublish and unmap a region (never region 0 while the heap is used). */
void wh_region_release(wh_region *r);
/* Decommit [from, r->end): the region's end moves back to `from`. */
void wh_region_decommit_tail(wh_heap *h, wh_region *r, char *from);
/* A fatal OS error while giving memory back: report and abort. */
__attribute__((noreturn)) void wh_fatal_os(const char *what);

/* ------------------------------------------------------------------ */
/* backend.c - blocks inside regions (TLSF-style segregated fit)       */
/* Every function: caller holds the heap lock (or the heap is          */
/* HEAP_NO_SERIALIZE) unless it says otherwise.                        */
/* ------------------------------------------------------------------ */
/* Lay out a fresh region's committed space as one free block. */
void wh_backend_region_init(wh_heap *h, wh_region *r);
/* Allocate a block for `request` bytes (< 1 MiB).  NULL + *st. */
void *wh_backend_alloc(wh_heap *h, size_t request, wh_status *st);
/* Allocate a block for `request` bytes whose payload is aligned to `align`
 * (a power of two, > 16).  NULL + *st. */
void *wh_backend_alloc_aligned(wh_heap *h, size_t request, size_t align, wh_status *st);
/* Look up the busy block whose payload is p in BLOCKS region r. */
wh_status wh_backend_lookup(wh_heap *h, wh_region *r, const void *p, wh_block **out, wh_binfo *bi);
/* Requested size of a busy block. */
static inline size_t wh_binfo_requested(const wh_binfo *bi) { return bi->size - WH_HDR - bi->unused; }
/* Free a busy block found by wh_backend_lookup.  WH_OK or corruption. */
wh_status wh_backend_free(wh_heap *h, wh_region *r, wh_block *b, const wh_binfo *bi);
/* Resize a busy block in place to `request` bytes: shrink, or grow into
 * the free block that follows (committing more of the region if the
 * block is last).  WH_OK, WH_ENOMEM (nothing changed) or corruption. */
wh_status wh_backend_resize(wh_heap *h, wh_region *r, wh_block *b, const wh_binfo *bi, size_t request);
/* Decommit / purge free pages of every region (HeapOptimizeResources). */
void wh_backend_trim(wh_heap *h);
/* Bytes of region 0 from its first block to the end of its last busy one
 * (a trailing free block does not count; a damaged last header counts as
 * everything committed): what a fixed heap's back end uses of it. */
size_t wh_backend_span(wh_heap *h);
/* Free-list class of a block size (exposed for the layer test). */
unsigned wh_backend_class(size_t bsize);
/* Whole-heap structural check of the block tiling and the free lists,
 * bounded on corrupted data.  True if valid. */
bool wh_backend_is_valid(wh_heap *h);
/* Block iteration for walk.c: the block after b in r, or NULL at the end
 * (or on a damaged header, with *st = WH_EHEADER). */
wh_block *wh_backend_next(wh_heap *h, wh_region *r, wh_block *b, wh_binfo *bi, wh_status *st);
/* First block of r (NULL if none) with its info. */
wh_block *wh_backend_first(wh_heap *h, wh_region *r, wh_binfo *bi, wh_status *st);

/* ------------------------------------------------------------------ */
/* large.c - blocks in mappings of their own                           */
/* ------------------------------------------------------------------ */
/* Map a new large block for `request` bytes (no lock needed: it touches
 * no heap structure).  NULL + *st. */
wh_large *wh_large_map(wh_heap *h, size_t request, wh_status *st);
/* The same with the payload aligned to `align` (a power of two). */
wh_large *wh_large_map_aligned(wh_heap *h, size_t request, size_t align, wh_status *st);
/* Debug page heap: the payload (aligned to `align`, a power of two; 0 for
 * 16) ends against an inaccessible page, to 16 bytes or to its alignment
 * if that is larger (alignments above a page: as wh_large_map_aligned). */
wh_large *wh_large_map_guarded(wh_heap *h, size_t request, size_t align, wh_status *st);
/* Fixed heaps under the page heap (D7 with D18): what a block of `request`
 * bytes in a mapping of its own takes from the heap's maximum - the bytes
 * the back end would have used for it. */
static inline size_t wh_large_fixed_cost(size_t request) { return wh_block_size_for(request + wh_pad()); }
/* Whether h's charge can go from releasing `sub` to taking `add` bytes of
 * cost within its maximum (always true for growable heaps and when add <=
 * sub).  wh_large_fixed_account applies it.  Caller holds the lock. */
bool wh_large_fixed_fits(wh_heap *h, size_t sub, size_t add);
void wh_large_fixed_account(wh_heap *h, size_t sub, size_t add);
/* HeapCompact of fixed heap h under the page heap: the largest request its
 * charge still has room for.  Caller holds the lock. */
size_t wh_large_fixed_largest(wh_heap *h);
/* Put a mapped block on h's list (caller holds the lock); returns its payload. */
void *wh_large_link(wh_heap *h, wh_large *l);
/* Validate that p is the payload of live large block l of h. */
wh_status wh_large_lookup(wh_heap *h, wh_region *r, const void *p, wh_large **out);
/* Free (caller holds the lock). */
void wh_large_free(wh_heap *h, wh_large *l);
/* Resize (caller holds the lock); may move unless in_place.  Returns the
 * new payload or NULL + *st (the block is unchanged). */
void *wh_large_resize(wh_heap *h, wh_large *l, size_t request, bool in_place, wh_status *st);
static inline void *wh_large_payload(wh_large *l) { return (char *)l + l->offset; }
bool wh_large_is_valid(wh_heap *h, wh_large *l);
/* Release every large block of a heap being destroyed. */
void wh_large_release_all(wh_heap *h);

/* ------------------------------------------------------------------ */
/* heap.c - heap objects, the registry, the lock, the process heap     */
/* ------------------------------------------------------------------ */
wh_heap *wh_heap_create(DWORD flags, size_t initial, size_t maximum, wh_status *st);
void wh_heap_destroy(wh_heap *h);
/* The live heap whose handle is `handle`, or NULL; never dereferences a
 * handle that is not a live heap. */
wh_heap *wh_heap_from_handle(HANDLE handle);
/* Incremented by every HeapDestroy: a per-thread cache of "handle -> thread
 * cache" is trusted only while the epoch it saw is current. */
extern _Atomic uint64_t wh_destroy_epoch;
wh_heap *wh_heap_process(void);            /* created at the first call; NULL if that failed */
DWORD wh_heap_list(DWORD n, HANDLE *out);  /* GetProcessHeaps */
void wh_heap_for_each(void (*fn)(wh_heap *)); /* fn(h) with h locked, every serialized heap; may repeat */
void wh_heap_for_each_registered(void (*fn)(wh_heap *)); /* registry lock only; fn takes no heap lock */
/* HeapCompatibilityInformation: 0, or 2 once the LFH mode is on (for good). */
static inline uint32_t wh_heap_compat(const wh_heap *h) {
    return atomic_load_explicit((_Atomic uint32_t *)&h->compat, memory_order_relaxed);
}
void wh_heap_enable_lfh(wh_heap *h);
/* Count one allocation of `size` bytes toward D16's automatic switch.
 * Caller holds the lock of a growable, serialized heap. */
static inline void wh_heap_count_alloc(wh_heap *h, size_t size) {
    if (WH_LIKELY(wh_heap_compat(h) != 0) || size > WH_LFH_MAX || wh_debug_flags()) return;
    unsigned c = wh_backend_class(size + WH_HDR);
    WH_ASSERT(c < WH_LFH_CLASSES);
    if (++h->lfh_hits[c] >= WH_LFH_ACTIVATE) wh_heap_enable_lfh(h);
}
static inline bool wh_heap_serialized(const wh_heap *h, DWORD call_flags) {
    return !((h->flags | call_flags) & HEAP_NO_SERIALIZE);
}
/* The heap lock: a critical section (recursive for its owner).  Inline here
 * so that every layer can take it without calling up into heap.c.  The
 * wh_lock records its owner in the same atomic step that takes it, so
 * wh_heap_lock_owned is exact even in a signal handler that interrupted
 * one of these functions; `recursion` is written only while the lock is
 * held, by its owner. */
static inline bool wh_heap_lock_owned(wh_heap *h) { return wh_lock_held(&h->lock); }
static inline void wh_heap_lock(wh_heap *h) {
    if (wh_lock_held(&h->lock)) {
        h->recursion++;
        return;
    }
    wh_lock_acquire(&h->lock);
    h->recursion = 1;
}
/* Like wh_heap_lock but gives up at once if another thread holds it. */
static inline bool wh_heap_trylock(wh_heap *h) {
    if (wh_lock_held(&h->lock)) {
        h->recursion++;
        return true;
    }
    if (!wh_lock_try(&h->lock)) return false;
    h->recursion = 1;
    return true;
}
static inline void wh_heap_unlock(wh_heap *h) {
    WH_ASSERT(wh_heap_lock_owned(h) && h->recursion > 0);
    if (--h->recursion == 0) wh_lock_release(&h->lock);
}

/* ------------------------------------------------------------------ */
/* walk.c - HeapWalk, HeapValidate, HeapSummary, HeapCompact           */
/* (caller holds the heap lock)                                        */
/* ------------------------------------------------------------------ */
wh_status wh_walk_next(wh_heap *h, PROCESS_HEAP_ENTRY *e, bool *end);
bool wh_walk_validate_heap(wh_heap *h);
bool wh_walk_validate_block(wh_heap *h, const void *p);
bool wh_walk_summary(wh_heap *h, HEAP_SUMMARY *s);
size_t wh_walk_largest_free(wh_heap *h, bool *ok);


/* ------------------------------------------------------------------ */
/* api.c                                                               */
/* ------------------------------------------------------------------ */
/* Called by lfh.c when the thread's caches are handed back at its exit. */
void wh_api_forget_thread_cache(void);

#endif /* WINHEAP_INTERNAL_H */
