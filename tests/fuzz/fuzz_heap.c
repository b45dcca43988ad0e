/*
 * fuzz_heap.c - differential fuzzer for winheap (RELIABILITY row 31).
 *
 * A libFuzzer target.  The input bytes are decoded into a sequence of heap
 * operations on up to four private heaps (slot 0-3: growable, growable with
 * the LFH switched on, fixed with a small maximum, HEAP_NO_SERIALIZE) plus
 * the process heap (never destroyed), with up to MAX_LIVE live blocks.  Every
 * operation is checked against a model of the live blocks: heap, pointer,
 * requested size, alignment, and contents (a per-block canary pattern written
 * over the whole block after every alloc/realloc, or "reads as zero").
 *
 * Checked after every step: alignment (16 or the requested alignment),
 * HeapSize == model size, contents (canary up to min(old, new) after a
 * realloc, zero where HEAP_ZERO_MEMORY promises it), no overlap with any
 * other live block of any heap, failures only where allowed (impossible
 * sizes, the fixed-heap limit, out of memory on a fixed heap, in-place
 * growth) with the last error ERROR_NOT_ENOUGH_MEMORY and the old block
 * intact, a successful call leaves the last error alone, and
 * HeapValidate(h, 0, NULL) is TRUE.  The walk op checks that the BUSY
 * entries of a full HeapWalk (under HeapLock) are exactly the model's blocks
 * of that heap with cbData == size, in address order inside their region and
 * without overlap, ending with ERROR_NO_MORE_ITEMS; the summary op checks
 * cbAllocated == the sum of the model's sizes.
 *
 * Input format: byte 0 is a configuration byte (bit 0: misuse ops enabled;
 * bit 1: full content check of every block after every step); then each
 * operation is one opcode byte followed by the argument bytes it reads
 * (missing bytes read as 0).  Misuse ops (double free, interior free,
 * foreign pointers, bad handles) run with termination on corruption off
 * (WINHEAP_TERMINATE_ON_CORRUPTION=0 set in LLVMFuzzerInitialize): they must
 * fail with the documented error and leave every heap and block intact.
 *
 * Frees whose flag byte has bit 7 set run on a second thread (the harness
 * waits for each), so that LFH blocks take the other-thread path: the slot
 * is marked pending and zeroed when its owner collects it; the model then
 * checks that nothing of it shows (walk, summary, validate, the contents of
 * the blocks handed out again).
 *
 * Any mismatch prints what happened (with the step number and the model)
 * and calls abort(), which libFuzzer reports as a crash.  Set
 * FUZZ_HEAP_TRACE=1 to print every operation while reproducing.  The debug
 * heap can be fuzzed too: WINHEAP_DEBUG=tail,free,validate (the LFH is then
 * refused, D18), and the page heap, WINHEAP_DEBUG=guard: then a fixed heap's
 * blocks lie outside its reservation (each in a mapping of its own) and
 * HeapSummary's cbReserved counts those mappings, but the heap's limits hold
 * as without guard mode - the model checks that its live bytes never exceed
 * the maximum and that the same requests must fail or succeed.  WINHEAP_SEED is
 * fixed (unless set) so that header keys and slot order repeat.
 */
#include <winheap.h>

#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LIVE 64
#define NSLOTS 4
#define PROC NSLOTS                 /* index of the process heap in H[] */
#define MAX_OK_SIZE ((size_t)0x110000) /* every size the fuzzer asks for that may succeed is below this */
#define IMPOSSIBLE ((size_t)1 << 46) /* sizes above this must fail */
#define PAT_LEN (MAX_OK_SIZE + 256)
#define LE_SENTINEL ((DWORD)0x5EA5F00Du)
#define WALK_LIMIT 4000000           /* entries; more means the walk does not end */
#define FIXED_SLACK ((size_t)0xC00)  /* D7: a fixed heap serves one block of max - 0xC00 */
#define PAGE ((size_t)4096)

enum { K_GROW, K_LFH, K_FIXED, K_NOSER, K_PROCESS };
static const char *const kind_name[] = { "growable", "growable+LFH", "fixed", "no-serialize", "process" };

typedef struct blk {
    unsigned char *p;
    size_t size;
    size_t align;  /* guaranteed alignment of p */
    int heap;      /* index into H[] */
    uint8_t seed;  /* canary: byte i of the block is pat[seed + i] */
    uint8_t zero;  /* contents: all zero instead of the canary */
} blk;

typedef struct hslot {
    HANDLE h;
    int kind;
    size_t max;    /* fixed heaps: dwMaximumSize */
    int depth;     /* HeapLock levels held by the harness */
    int gen_exc;   /* created with HEAP_GENERATE_EXCEPTIONS */
    int nser;      /* HEAP_NO_SERIALIZE heap */
} hslot;

static blk B[MAX_LIVE];
static int nB;
static hslot H[NSLOTS + 1];
static unsigned char *pat;      /* PAT_LEN bytes of pattern */
static unsigned char *zeros;    /* PAT_LEN zero bytes */
static DWORD base_heaps;        /* GetProcessHeaps() with no private heap */
static unsigned long step;
static const char *op_name = "init";
static int trace;
static int full_checks;
static int seed_counter;
static HANDLE last_destroyed;   /* for the bad-handle misuse op */
static unsigned long long total_inputs, total_ops; /* figures for the README */
static int debug_heap;          /* WINHEAP_DEBUG is set: the LFH is refused (D18) */
static int page_heap;           /* WINHEAP_DEBUG has guard (or all): blocks in mappings of their own */

/* ---- reporting ---- */

static void dump_model(void) {
    fprintf(stderr, "  heaps:\n");
    for (int i = 0; i <= NSLOTS; i++)
        if (H[i].h)
            fprintf(stderr, "    [%d] %p %s max=%#zx depth=%d gen_exc=%d\n", i, H[i].h, kind_name[H[i].kind], H[i].max,
                    H[i].depth, H[i].gen_exc);
    fprintf(stderr, "  live blocks (%d):\n", nB);
    for (int i = 0; i < nB; i++)
        fprintf(stderr, "    #%d heap %d %p size %#zx align %zu %s %u\n", i, B[i].heap, (void *)B[i].p, B[i].size,
                B[i].align, B[i].zero ? "zero" : "canary", B[i].seed);
}

__attribute__((format(printf, 2, 3), noreturn)) static void fail_at(int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "\nfuzz_heap: MISMATCH at step %lu (%s), fuzz_heap.c:%d: ", step, op_name, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    dump_model();
    abort();
}
#define FAIL(...) fail_at(__LINE__, __VA_ARGS__)
#define CHECK(cond, ...) \
    do { if (!(cond)) FAIL("check `" #cond "` failed: " __VA_ARGS__); } while (0)

#define TRACE(...) \
    do { if (trace) { fprintf(stderr, "[%lu] ", step); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

/* ---- input ---- */

typedef struct rd {
    const uint8_t *d;
    size_t n, i;
} rd;
static uint8_t u8(rd *r) { return r->i < r->n ? r->d[r->i++] : 0; }
static uint16_t u16(rd *r) { uint16_t a = u8(r); return (uint16_t)(a | (uint16_t)u8(r) << 8); }
static uint32_t u24(rd *r) { uint32_t a = u16(r); return a | (uint32_t)u8(r) << 16; }

/* ---- the exception handler (D6): longjmp back to the call ---- */

static jmp_buf exc_jb;
static volatile int exc_armed;
static volatile DWORD exc_status;
static volatile SIZE_T exc_size;

static void exc_handler(DWORD status, HANDLE heap, DWORD flags, SIZE_T size) {
    (void)heap, (void)flags;
    if (!exc_armed) FAIL("heap exception %#x outside a HeapAlloc/HeapReAlloc call", (unsigned)status);
    exc_armed = 0;
    exc_status = status;
    exc_size = size;
    longjmp(exc_jb, 1);
}

enum { C_ALLOC, C_ALIGNED, C_REALLOC };
typedef struct callres {
    void *p;
    int raised;
    DWORD status;
} callres;

static callres call_alloc(int what, HANDLE h, DWORD flags, size_t align, void *old, size_t size) {
    volatile callres res = { 0 };
    exc_armed = 1;
    if (setjmp(exc_jb) == 0) {
        void *p = what == C_ALLOC ? HeapAlloc(h, flags, size)
                  : what == C_ALIGNED ? winheap_aligned_alloc(h, flags, align, size)
                                      : HeapReAlloc(h, flags, old, size);
        exc_armed = 0;
        res.p = p;
    } else {
        res.raised = 1;
        res.status = exc_status;
        if (exc_size != size) FAIL("exception reports size %#zx for a request of %#zx", (size_t)exc_size, size);
    }
    callres out = { res.p, res.raised, res.status };
    return out;
}

/* ---- model helpers ---- */

static int heap_blocks(int hi) {
    int n = 0;
    for (int i = 0; i < nB; i++) n += B[i].heap == hi;
    return n;
}

static size_t heap_bytes(int hi) {
    size_t s = 0;
    for (int i = 0; i < nB; i++)
        if (B[i].heap == hi) s += B[i].size;
    return s;
}

static int find_block(int hi, const void *p) {
    for (int i = 0; i < nB; i++)
        if (B[i].heap == hi && B[i].p == p) return i;
    return -1;
}

static void remove_block(int i) { B[i] = B[--nB]; }

static uint8_t new_seed(void) { return (uint8_t)(++seed_counter * 37); }

/* First offset in [from, to) where block b differs from its model, or (size_t)-1. */
static size_t content_diff(const blk *b, size_t from, size_t to) {
    if (to <= from) return (size_t)-1;
    const unsigned char *want = b->zero ? zeros + from : pat + b->seed + from;
    if (memcmp(b->p + from, want, to - from) == 0) return (size_t)-1;
    for (size_t i = from; i < to; i++)
        if (b->p[i] != want[i - from]) return i;
    return (size_t)-1;
}

static void check_contents(const blk *b, int full, const char *when) {
    size_t d;
    if (full || b->size <= 128) {
        d = content_diff(b, 0, b->size);
    } else {
        d = content_diff(b, 0, 64);
        if (d == (size_t)-1) d = content_diff(b, b->size - 64, b->size);
    }
    if (d != (size_t)-1)
        FAIL("%s: block %p (heap %d, size %#zx) byte %#zx is %#x, model says %#x", when, (void *)b->p, b->heap, b->size, d,
             b->p[d], b->zero ? 0u : pat[b->seed + d]);
}

static void write_canary(blk *b) {
    b->zero = 0;
    b->seed = new_seed();
    memcpy(b->p, pat + b->seed, b->size);
}

/* HeapSize and alignment of one block; contents (full or head/tail). */
static void check_block(const blk *b, int full, const char *when) {
    CHECK(((uintptr_t)b->p & (b->align - 1)) == 0, "%s: block %p lost its %zu-byte alignment", when, (void *)b->p, b->align);
    SetLastError(LE_SENTINEL);
    SIZE_T s = HeapSize(H[b->heap].h, 0, b->p);
    CHECK(s == b->size, "%s: HeapSize(%p) = %#zx, model %#zx (LE %u)", when, (void *)b->p, (size_t)s, b->size,
          (unsigned)GetLastError());
    CHECK(GetLastError() == LE_SENTINEL, "%s: successful HeapSize changed the last error to %u", when, (unsigned)GetLastError());
    check_contents(b, full, when);
}

static int overlaps(const void *a, size_t an, const void *b, size_t bn) {
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    if (!an) an = 1; /* a zero-byte block still owns a distinct address */
    if (!bn) bn = 1;
    return x < y + bn && y < x + an;
}

/* The block at p of size bytes overlaps no live block (except index skip). */
static void check_no_overlap(const void *p, size_t size, int skip) {
    for (int i = 0; i < nB; i++)
        if (i != skip && overlaps(p, size, B[i].p, B[i].size))
            FAIL("new block %p size %#zx overlaps live block #%d %p size %#zx (heap %d)", p, size, i, (void *)B[i].p,
                 B[i].size, B[i].heap);
}

static void check_heap_valid(int hi, const char *when) {
    if (!H[hi].h) return;
    SetLastError(LE_SENTINEL);
    BOOL ok = HeapValidate(H[hi].h, 0, NULL);
    CHECK(ok, "%s: HeapValidate(%s heap %d, 0, NULL) is FALSE", when, kind_name[H[hi].kind], hi);
    CHECK(GetLastError() == LE_SENTINEL, "%s: HeapValidate changed the last error to %u", when, (unsigned)GetLastError());
}

static void check_all_blocks(int full, const char *when) {
    for (int i = 0; i < nB; i++) {
        if (full) {
            check_block(&B[i], 1, when);
        } else {
            check_contents(&B[i], 0, when);
        }
    }
}

/* After every step: the touched heap validates, every block's head and
 * tail (or all of it) match the model. */
static void after_step(int hi) {
    if (hi >= 0) check_heap_valid(hi, "after step");
    check_all_blocks(full_checks, "after step");
}

static void check_process_heaps(void) {
    HANDLE list[16];
    DWORD want = base_heaps;
    for (int i = 0; i < NSLOTS; i++) want += H[i].h != NULL;
    DWORD n = GetProcessHeaps(16, list);
    CHECK(n == want, "GetProcessHeaps = %u, model %u", (unsigned)n, (unsigned)want);
    CHECK(list[0] == GetProcessHeap(), "GetProcessHeaps()[0] is not the process heap");
    for (int i = 0; i < NSLOTS; i++) {
        if (!H[i].h) continue;
        int found = 0;
        for (DWORD k = 0; k < n && k < 16; k++) found |= list[k] == H[i].h;
        CHECK(found, "heap %p of slot %d missing from GetProcessHeaps", H[i].h, i);
    }
}

/* ---- argument decoding ---- */

static const size_t size_table[32] = {
    0, 1, 15, 16, 17, 127, 128, 129,
    16383, 16384, 16385, 0xFDFFF, 0xFE000, 0xFEFFF, 0xFF000, 0x100000,
    0 /* small random */, 0 /* random < 4 KiB */, 0 /* random < 64 KiB */, 0 /* random < MAX_OK_SIZE */,
    SIZE_MAX, SIZE_MAX - 7, PTRDIFF_MAX, 0x7FFF8,
    255, 256, 512, 1008, 4096, 0x3F400, 0x40000, 16368,
};

static size_t pick_size(rd *r, const blk *old) {
    uint8_t s = u8(r);
    size_t v;
    if (old && (s & 0xC0) == 0xC0) { /* relative to the old size */
        switch (s & 3) {
        case 0: v = old->size * 2 + (s >> 2 & 7); break;
        case 1: v = old->size / 2; break;
        case 2: v = old->size + (u8(r) & 63); break;
        default: v = old->size > 64 ? old->size - (u8(r) & 63) : old->size; break;
        }
        return v < MAX_OK_SIZE ? v : MAX_OK_SIZE - 1;
    }
    unsigned idx = s & 31;
    switch (idx) {
    case 16: v = u8(r); break;
    case 17: v = u16(r) & 0xFFF; break;
    case 18: v = u16(r); break;
    case 19: v = u24(r) % MAX_OK_SIZE; break;
    default: v = size_table[idx];
    }
    if ((s & 0x20) && v < IMPOSSIBLE) { /* a small signed delta around the edge */
        int d = (int8_t)u8(r);
        v = (d < 0 && (size_t)-d > v) ? 0 : v + (size_t)(ptrdiff_t)d;
        if (v >= MAX_OK_SIZE) v = MAX_OK_SIZE - 1;
    }
    return v;
}

static const size_t align_table[16] = { 0, 1, 8, 16, 32, 64, 128, 256, 4096, 0x4000, 0x8000, 0x10000, 0x20000, 0x100000, 3, 48 };

static DWORD extra_bits(uint8_t b) {
    static const DWORD bits[8] = { 0x20, 0x40, 0x80, 0x100, 0x200, 0xC00, 0x10000, (DWORD)0x123u << 18 };
    return bits[b & 7] | (b & 8 ? bits[(b >> 4) & 7] : 0);
}

/* The flags of an alloc or realloc call from its flag byte (bit 4 and up
 * are the caller's); reads the extra-bits byte when bit 2 asks for it. */
static DWORD call_flags(rd *r, uint8_t fl) {
    DWORD flags = 0;
    if (fl & 1) flags |= HEAP_NO_SERIALIZE;
    if (fl & 2) flags |= HEAP_ZERO_MEMORY;
    if (fl & 4) flags |= extra_bits(u8(r));
    if (fl & 8) flags |= HEAP_GENERATE_EXCEPTIONS;
    return flags;
}

/* A live heap: slot byte % 5, the process heap for an empty slot. */
static int pick_heap(rd *r) {
    int hi = u8(r) % (NSLOTS + 1);
    return H[hi].h ? hi : PROC;
}

static int pick_block(rd *r) {
    uint8_t b = u8(r);
    return nB ? b % nB : -1;
}

/* The heap may fail this request only if it is fixed (or the request is impossible). */
static int heap_is_fixed(int hi) { return H[hi].kind == K_FIXED; }
static int exc_on(int hi, DWORD flags) { return H[hi].gen_exc || (flags & HEAP_GENERATE_EXCEPTIONS); }

/* ---- operations ---- */

static void op_create(rd *r) {
    uint8_t a = u8(r), v = u8(r);
    int slot = a & 3, kind = (a >> 2) & 3;
    if (H[slot].h) return;
    hslot s = { 0 };
    s.kind = kind;
    DWORD flags = 0;
    size_t init = 0, max = 0;
    switch (kind) {
    case K_GROW:
        if (v & 1) flags |= HEAP_GENERATE_EXCEPTIONS;
        if (v & 2) flags |= HEAP_TAIL_CHECKING_ENABLED | HEAP_FREE_CHECKING_ENABLED | HEAP_CREATE_ALIGN_16 | HEAP_GROWABLE;
        if (v & 4) flags |= HEAP_CREATE_ENABLE_EXECUTE;
        if (v & 8) init = 0x30000 + (v >> 4) * 0x1000;
        break;
    case K_LFH:
        break;
    case K_FIXED: {
        static const size_t maxes[8] = { 0x8000, 0x10000, 0x40000, 0x100000, 0x200000, 0x5000, 0x12345, 0xFF000 };
        max = maxes[v & 7];
        switch ((v >> 3) & 3) {
        case 0: init = 0; break;
        case 1: init = 0x1000; break;
        case 2: init = max / 2; break;
        default: init = max; break;
        }
        if (v & 0x20) flags |= HEAP_GENERATE_EXCEPTIONS;
        if ((v & 0xC0) == 0xC0) { /* initial > maximum: refused (D7) */
            SetLastError(LE_SENTINEL);
            HANDLE bad = HeapCreate(0, max + 0x1000, max);
            CHECK(bad == NULL && GetLastError() == ERROR_INVALID_PARAMETER,
                  "HeapCreate(0, %#zx, %#zx) = %p, LE %u; want NULL, 87", max + 0x1000, max, bad, (unsigned)GetLastError());
            return;
        }
        break;
    }
    default:
        flags = HEAP_NO_SERIALIZE;
        if (v & 1) init = 0x20000;
        break;
    }
    s.max = max;
    s.gen_exc = (flags & HEAP_GENERATE_EXCEPTIONS) != 0;
    s.nser = kind == K_NOSER;
    TRACE("create slot %d %s flags %#x init %#zx max %#zx", slot, kind_name[kind], (unsigned)flags, init, max);
    SetLastError(LE_SENTINEL);
    s.h = HeapCreate(flags, init, max);
    CHECK(s.h != NULL, "HeapCreate(%#x, %#zx, %#zx) failed, LE %u", (unsigned)flags, init, max, (unsigned)GetLastError());
    CHECK(((uintptr_t)s.h & 0xFFFF) == 0, "handle %p not 64 KiB aligned (D3)", s.h);
    CHECK(GetLastError() == LE_SENTINEL, "successful HeapCreate changed the last error to %u", (unsigned)GetLastError());
    H[slot] = s;
    TRACE("  -> %p", s.h);
    ULONG two = 2, q = 99;
    if (kind != K_GROW) { /* a plain growable heap is left to switch by itself (D16) */
        SetLastError(LE_SENTINEL);
        BOOL set = HeapSetInformation(s.h, HeapCompatibilityInformation, &two, sizeof two);
        if (kind == K_LFH && !debug_heap)
            CHECK(set && GetLastError() == LE_SENTINEL, "HeapSetInformation(LFH) = %d, LE %u", set, (unsigned)GetLastError());
        else
            CHECK(!set && GetLastError() == ERROR_INVALID_PARAMETER, "LFH on a %s heap: %d, LE %u (D16: FALSE, 87)",
                  kind_name[kind], set, (unsigned)GetLastError());
    }
    SIZE_T len = 0;
    CHECK(HeapQueryInformation(s.h, HeapCompatibilityInformation, &q, sizeof q, &len) && len == 4,
          "HeapQueryInformation failed");
    CHECK(q == (kind == K_LFH && !debug_heap ? 2u : 0u), "compatibility value %u on a new %s heap", (unsigned)q,
          kind_name[kind]);
    check_process_heaps();
}

/* The expected outcome of an allocation of `size` (padded to `need` for an
 * aligned one) on heap hi: 1 must succeed, -1 must fail, 0 either. */
static int alloc_expect(int hi, size_t size, size_t need) {
    if (size > IMPOSSIBLE || need > IMPOSSIBLE) return -1;
    if (!heap_is_fixed(hi)) return 1;
    if (need >= WINHEAP_FIXED_LIMIT) return -1;
    if (heap_blocks(hi) == 0 && need + FIXED_SLACK <= H[hi].max) return 1; /* D7 */
    return 0;
}

static void op_alloc(rd *r, int aligned) {
    int hi = pick_heap(r);
    uint8_t fl = u8(r);
    size_t size = pick_size(r, NULL);
    size_t align = aligned ? align_table[u8(r) & 15] : 0;
    DWORD flags = call_flags(r, fl);
    int keep_zero = (fl & 16) != 0;
    if (nB >= MAX_LIVE) return;
    HANDLE h = H[hi].h;
    int bad_align = aligned && (align == 0 || (align & (align - 1)));
    size_t need = size;
    if (aligned && !bad_align && align > 16) need = size > IMPOSSIBLE ? size : size + align + 32;
    int expect = bad_align ? -1 : alloc_expect(hi, size, need);
    TRACE("%s heap %d (%s) flags %#x size %#zx align %zu expect %d", aligned ? "aligned_alloc" : "alloc", hi,
          kind_name[H[hi].kind], (unsigned)flags, size, align, expect);
    SetLastError(LE_SENTINEL);
    callres res = call_alloc(aligned ? C_ALIGNED : C_ALLOC, h, flags, align, NULL, size);
    if (!res.p) {
        DWORD le = GetLastError();
        CHECK(expect <= 0, "allocation of %#zx (align %zu, flags %#x) on %s heap %d failed (LE %u, exception %d)", size, align,
              (unsigned)flags, kind_name[H[hi].kind], hi, (unsigned)le, res.raised);
        if (bad_align) {
            CHECK(le == ERROR_INVALID_PARAMETER && !res.raised, "alignment %zu: LE %u, exception %d; want 87, none", align,
                  (unsigned)le, res.raised);
        } else {
            CHECK(le == ERROR_NOT_ENOUGH_MEMORY, "failed allocation of %#zx left LE %u, want 8", size, (unsigned)le);
            CHECK(res.raised == exc_on(hi, flags), "failed allocation: exception raised %d, expected %d", res.raised,
                  exc_on(hi, flags));
            if (res.raised)
                CHECK(res.status == STATUS_NO_MEMORY, "exception status %#x, want STATUS_NO_MEMORY", (unsigned)res.status);
        }
        after_step(hi);
        return;
    }
    CHECK(!res.raised, "exception raised on success");
    CHECK(expect >= 0, "allocation of %#zx (align %zu) on %s heap %d succeeded (%p) but must fail", size, align,
          kind_name[H[hi].kind], hi, res.p);
    CHECK(GetLastError() == LE_SENTINEL, "successful allocation changed the last error to %u", (unsigned)GetLastError());
    blk b = { .p = res.p, .size = size, .align = (aligned && align > 16) ? align : 16, .heap = hi };
    if (heap_is_fixed(hi) && !page_heap)
        CHECK((uintptr_t)b.p >= (uintptr_t)h && (uintptr_t)b.p + size <= (uintptr_t)h + ((H[hi].max + PAGE - 1) & ~(PAGE - 1)),
              "block %p size %#zx outside its fixed heap's reservation %p + %#zx", res.p, size, h, H[hi].max);
    if (heap_is_fixed(hi) && page_heap)
        CHECK(heap_bytes(hi) + size <= H[hi].max, "a fixed heap of maximum %#zx holds %#zx bytes after a block of %#zx",
              H[hi].max, heap_bytes(hi) + size, size);
    check_no_overlap(b.p, size, -1);
    if (flags & HEAP_ZERO_MEMORY) {
        b.zero = 1;
        check_contents(&b, 1, "HEAP_ZERO_MEMORY");
    }
    SetLastError(LE_SENTINEL);
    CHECK(HeapSize(h, 0, b.p) == size, "HeapSize of a new block is %#zx, want %#zx", (size_t)HeapSize(h, 0, b.p), size);
    if (!(b.zero && keep_zero)) write_canary(&b);
    B[nB++] = b;
    after_step(hi);
}

static void op_realloc(rd *r) {
    int i = pick_block(r);
    uint8_t fl = u8(r);
    if (i < 0) return;
    blk *b = &B[i];
    size_t size = pick_size(r, b);
    int hi = b->heap;
    DWORD flags = call_flags(r, fl);
    int keep_zero = (fl & 16) != 0;
    int in_place = (fl & 32) != 0;
    if (in_place) flags |= HEAP_REALLOC_IN_PLACE_ONLY;
    size_t old = b->size;
    int expect;
    if (size > IMPOSSIBLE || (heap_is_fixed(hi) && size >= WINHEAP_FIXED_LIMIT))
        expect = -1;
    else if (size <= old || (!heap_is_fixed(hi) && !in_place))
        expect = 1; /* a shrink always works (D11); a growable heap always has room */
    else
        expect = 0;
    TRACE("realloc #%d %p heap %d (%s) %#zx -> %#zx flags %#x expect %d", i, (void *)b->p, hi, kind_name[H[hi].kind], old,
          size, (unsigned)flags, expect);
    check_contents(b, 1, "before realloc");
    SetLastError(LE_SENTINEL);
    callres res = call_alloc(C_REALLOC, H[hi].h, flags, 0, b->p, size);
    if (!res.p) {
        DWORD le = GetLastError();
        CHECK(expect <= 0, "HeapReAlloc(%p, %#zx -> %#zx, flags %#x) on %s heap %d failed (LE %u, exception %d)", (void *)b->p,
              old, size, (unsigned)flags, kind_name[H[hi].kind], hi, (unsigned)le, res.raised);
        CHECK(le == ERROR_NOT_ENOUGH_MEMORY, "failed HeapReAlloc left LE %u, want 8", (unsigned)le);
        CHECK(res.raised == exc_on(hi, flags), "failed HeapReAlloc: exception raised %d, expected %d", res.raised,
              exc_on(hi, flags));
        if (res.raised) CHECK(res.status == STATUS_NO_MEMORY, "exception status %#x", (unsigned)res.status);
        check_block(b, 1, "after a failed HeapReAlloc");
        after_step(hi);
        return;
    }
    CHECK(!res.raised, "exception raised on success");
    CHECK(expect >= 0, "HeapReAlloc to %#zx succeeded but must fail", size);
    CHECK(GetLastError() == LE_SENTINEL, "successful HeapReAlloc changed the last error to %u", (unsigned)GetLastError());
    if (in_place) CHECK(res.p == b->p, "HEAP_REALLOC_IN_PLACE_ONLY moved the block %p to %p", (void *)b->p, res.p);
    blk nb = *b;
    nb.p = res.p;
    nb.size = size;
    if (res.p != b->p) nb.align = 16; /* HeapReAlloc keeps only the 16-byte alignment */
    CHECK(((uintptr_t)nb.p & (nb.align - 1)) == 0, "HeapReAlloc returned %p, not %zu-aligned", res.p, nb.align);
    if (heap_is_fixed(hi) && !page_heap)
        CHECK((uintptr_t)nb.p >= (uintptr_t)H[hi].h &&
                  (uintptr_t)nb.p + size <= (uintptr_t)H[hi].h + ((H[hi].max + PAGE - 1) & ~(PAGE - 1)),
              "block %p size %#zx outside its fixed heap's reservation", res.p, size);
    if (heap_is_fixed(hi) && page_heap)
        CHECK(heap_bytes(hi) - old + size <= H[hi].max, "a fixed heap of maximum %#zx holds %#zx bytes after a resize",
              H[hi].max, heap_bytes(hi) - old + size);
    check_no_overlap(nb.p, size, i);
    /* the preserved prefix */
    blk pre = nb;
    pre.size = old < size ? old : size;
    check_contents(&pre, 1, "HeapReAlloc kept contents");
    if ((flags & HEAP_ZERO_MEMORY) && size > old) {
        if (memcmp(nb.p + old, zeros, size - old) != 0)
            for (size_t k = old; k < size; k++)
                if (nb.p[k])
                    FAIL("HEAP_ZERO_MEMORY realloc %#zx -> %#zx: byte %#zx of the grown part is %#x", old, size, k, nb.p[k]);
    }
    SetLastError(LE_SENTINEL);
    CHECK(HeapSize(H[hi].h, 0, nb.p) == size, "HeapSize after HeapReAlloc is %#zx, want %#zx",
          (size_t)HeapSize(H[hi].h, 0, nb.p), size);
    nb.zero = b->zero && (size <= old || (flags & HEAP_ZERO_MEMORY));
    if (!(nb.zero && keep_zero)) write_canary(&nb);
    *b = nb;
    after_step(hi);
}

/* A second thread that frees on request, so that blocks of the LFH take the
 * path of frees by other threads (the slot waits, pending, until the owner
 * collects it).  The harness waits for each free: no two heap calls overlap. */
static struct {
    pthread_t th;
    sem_t go, done;
    HANDLE h;
    DWORD flags;
    void *p;
    BOOL ok;
    DWORD le;
    int started;
} remote;
static unsigned long long remote_frees;

static void *remote_main(void *arg) {
    (void)arg;
    for (;;) {
        while (sem_wait(&remote.go) != 0) {}
        SetLastError(LE_SENTINEL);
        remote.ok = HeapFree(remote.h, remote.flags, remote.p);
        remote.le = GetLastError();
        sem_post(&remote.done);
    }
    return NULL;
}

/* HeapFree(h, flags, p) on the second thread; its result, and its thread's
 * last error in *le. */
static BOOL remote_free(HANDLE h, DWORD flags, void *p, DWORD *le) {
    if (!remote.started) {
        CHECK(sem_init(&remote.go, 0, 0) == 0 && sem_init(&remote.done, 0, 0) == 0, "sem_init");
        CHECK(pthread_create(&remote.th, NULL, remote_main, NULL) == 0, "pthread_create");
        remote.started = 1;
    }
    remote_frees++;
    remote.h = h;
    remote.flags = flags;
    remote.p = p;
    sem_post(&remote.go);
    while (sem_wait(&remote.done) != 0) {}
    *le = remote.le;
    return remote.ok;
}

static void op_free(rd *r) {
    int i = pick_block(r);
    uint8_t fl = u8(r);
    if (i < 0) return;
    blk b = B[i];
    DWORD flags = (fl & 1 ? HEAP_NO_SERIALIZE : 0) | (fl & 2 ? extra_bits(fl >> 2) : 0);
    /* bit 7: free it from the second thread (not while this thread holds
     * the heap's lock: a serialized free of a back-end block would wait) */
    int other = (fl & 0x80) && H[b.heap].depth == 0;
    TRACE("free #%d %p heap %d size %#zx%s", i, (void *)b.p, b.heap, b.size, other ? " (other thread)" : "");
    check_block(&b, 1, "before HeapFree"); /* canary intact on free */
    SetLastError(LE_SENTINEL);
    DWORD le = LE_SENTINEL;
    BOOL ok = other ? remote_free(H[b.heap].h, flags, b.p, &le) : HeapFree(H[b.heap].h, flags, b.p);
    if (!other) le = GetLastError();
    CHECK(ok, "HeapFree(%p) of a live block failed, LE %u", (void *)b.p, (unsigned)le);
    CHECK(le == LE_SENTINEL, "successful HeapFree changed the last error to %u", (unsigned)le);
    CHECK(GetLastError() == LE_SENTINEL, "HeapFree changed the last error of the thread that did not call it");
    remove_block(i);
    after_step(b.heap);
}

static void op_size(void) {
    TRACE("size (every block)");
    for (int i = 0; i < nB; i++) check_block(&B[i], 1, "size op");
}

static void op_validate(rd *r) {
    uint8_t sel = u8(r);
    TRACE("validate");
    for (int hi = 0; hi <= NSLOTS; hi++) check_heap_valid(hi, "validate op");
    for (int i = 0; i < nB; i++) {
        SetLastError(LE_SENTINEL);
        CHECK(HeapValidate(H[B[i].heap].h, 0, B[i].p), "HeapValidate(h, 0, %p) of a live block is FALSE", (void *)B[i].p);
        /* the same pointer as seen by another heap is not one of its blocks */
        int other = (B[i].heap + 1 + sel % NSLOTS) % (NSLOTS + 1);
        if (H[other].h && other != B[i].heap)
            CHECK(!HeapValidate(H[other].h, 0, B[i].p), "HeapValidate(other heap %d, 0, %p) is TRUE", other, (void *)B[i].p);
        CHECK(GetLastError() == LE_SENTINEL, "HeapValidate changed the last error to %u", (unsigned)GetLastError());
        check_block(&B[i], 1, "validate op");
    }
}

typedef struct range {
    uintptr_t lo, hi;
} range;

static int range_cmp(const void *a, const void *b) {
    const range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* One full walk of heap hi; returns a hash of the entries (for the
 * repeatability check) and checks everything it can. */
static uint64_t walk_once(int hi, int check_free, size_t *entries) {
    HANDLE h = H[hi].h;
    PROCESS_HEAP_ENTRY e;
    memset(&e, 0xCD, sizeof e);
    e.lpData = NULL;
    static unsigned char seen[MAX_LIVE];
    memset(seen, 0, sizeof seen);
    static range outer[4096]; /* regions and large blocks */
    size_t nouter = 0;
    uintptr_t reg_lo = 0, reg_hi = 0, last_end = 0;
    int in_region = 0, in_large = 0, nregions = 0;
    BYTE reg_index = 0;
    size_t busy = 0, busy_bytes = 0, n = 0, free_checked = 0;
    uint64_t hash = 1469598103934665603ull;
    for (;;) {
        SetLastError(LE_SENTINEL);
        if (!HeapWalk(h, &e)) break;
        CHECK(++n < WALK_LIMIT, "HeapWalk of heap %d does not end", hi);
        uint64_t fields[5] = { (uintptr_t)e.lpData, e.cbData, e.cbOverhead, e.iRegionIndex, e.wFlags };
        for (int k = 0; k < 5; k++) hash = (hash ^ fields[k]) * 1099511628211ull;
        uintptr_t lo = (uintptr_t)e.lpData, hi_end = lo + e.cbData;
        if (e.wFlags == PROCESS_HEAP_REGION) {
            CHECK(!in_large, "REGION entry %p after the large blocks", e.lpData);
            CHECK((lo & 0xFFFF) == 0, "REGION entry %p not 64 KiB aligned", e.lpData);
            if (nregions == 0) CHECK(e.lpData == h, "first REGION entry %p is not the handle %p", e.lpData, h);
            CHECK((uint64_t)e.Region.dwCommittedSize + e.Region.dwUnCommittedSize == e.cbData,
                  "REGION %p: committed %#x + uncommitted %#x != %#x", e.lpData, (unsigned)e.Region.dwCommittedSize,
                  (unsigned)e.Region.dwUnCommittedSize, (unsigned)e.cbData);
            CHECK((uintptr_t)e.Region.lpFirstBlock >= lo && (uintptr_t)e.Region.lpLastBlock <= hi_end &&
                      e.Region.lpFirstBlock <= e.Region.lpLastBlock,
                  "REGION %p: first/last block %p/%p outside it", e.lpData, e.Region.lpFirstBlock, e.Region.lpLastBlock);
            in_region = 1;
            nregions++;
            reg_lo = lo;
            reg_hi = hi_end;
            reg_index = e.iRegionIndex;
            last_end = lo;
            CHECK(nouter < 4096, "too many regions");
            outer[nouter++] = (range){ lo, hi_end };
            continue;
        }
        CHECK(e.wFlags == PROCESS_HEAP_ENTRY_BUSY || e.wFlags == 0 || e.wFlags == PROCESS_HEAP_UNCOMMITTED_RANGE,
              "entry %p has wFlags %#x", e.lpData, (unsigned)e.wFlags);
        int inside = in_region && !in_large && lo >= reg_lo && lo < reg_hi;
        if (inside) {
            CHECK(hi_end <= reg_hi, "entry %p + %#x runs past its region end %#lx", e.lpData, (unsigned)e.cbData,
                  (unsigned long)reg_hi);
            CHECK(lo >= last_end, "entry %p (flags %#x) not in address order / overlaps the previous one ending at %#lx",
                  e.lpData, (unsigned)e.wFlags, (unsigned long)last_end);
            CHECK(e.iRegionIndex == reg_index, "entry %p region index %u, its REGION says %u", e.lpData,
                  (unsigned)e.iRegionIndex, (unsigned)reg_index);
            last_end = hi_end;
        } else {
            /* past the regions: only large blocks, each one BUSY entry */
            CHECK(e.wFlags == PROCESS_HEAP_ENTRY_BUSY, "entry %p (flags %#x) outside every region", e.lpData,
                  (unsigned)e.wFlags);
            in_large = 1;
            CHECK(nouter < 4096, "too many large blocks");
            outer[nouter++] = (range){ lo, hi_end > lo ? hi_end : lo + 1 };
        }
        if (e.wFlags == PROCESS_HEAP_ENTRY_BUSY) {
            int k = find_block(hi, e.lpData);
            CHECK(k >= 0, "HeapWalk reports a BUSY block %p (cbData %#x) that the model does not have", e.lpData,
                  (unsigned)e.cbData);
            CHECK(!seen[k], "HeapWalk reports block %p twice", e.lpData);
            seen[k] = 1;
            CHECK(e.cbData == (B[k].size > 0xFFFFFFFFu ? 0xFFFFFFFFu : B[k].size), "BUSY entry %p cbData %#x, model size %#zx",
                  e.lpData, (unsigned)e.cbData, B[k].size);
            busy++;
            busy_bytes += B[k].size;
        } else if (e.wFlags == 0 && check_free && free_checked < 256) {
            free_checked++;
            SetLastError(LE_SENTINEL);
            CHECK(!HeapValidate(h, 0, e.lpData), "HeapValidate of the free entry %p (cbData %#x) is TRUE", e.lpData,
                  (unsigned)e.cbData);
            CHECK(GetLastError() == LE_SENTINEL, "HeapValidate changed the last error");
            for (int k = 0; k < nB; k++)
                if (B[k].heap == hi && overlaps(e.lpData, e.cbData, B[k].p, B[k].size))
                    FAIL("free entry %p + %#x overlaps live block %p size %#zx", e.lpData, (unsigned)e.cbData,
                         (void *)B[k].p, B[k].size);
        }
    }
    CHECK(GetLastError() == ERROR_NO_MORE_ITEMS, "HeapWalk of heap %d ended with LE %u after %zu entries, want 259", hi,
          (unsigned)GetLastError(), n);
    CHECK(nregions >= 1, "HeapWalk reported no REGION");
    int want = heap_blocks(hi);
    if ((int)busy != want) {
        for (int k = 0; k < nB; k++)
            if (B[k].heap == hi && !seen[k])
                FAIL("HeapWalk misses live block %p size %#zx (%zu BUSY entries, model %d)", (void *)B[k].p, B[k].size,
                     busy, want);
    }
    (void)busy_bytes;
    /* regions and large blocks never overlap each other */
    *entries = n;
    qsort(outer, nouter, sizeof outer[0], range_cmp);
    for (size_t k = 1; k < nouter; k++)
        CHECK(outer[k].lo >= outer[k - 1].hi, "walk ranges %#lx-%#lx and %#lx-%#lx overlap", (unsigned long)outer[k - 1].lo,
              (unsigned long)outer[k - 1].hi, (unsigned long)outer[k].lo, (unsigned long)outer[k].hi);
    return hash;
}

static void op_walk(rd *r) {
    int hi = pick_heap(r);
    TRACE("walk heap %d (%s)", hi, kind_name[H[hi].kind]);
    SetLastError(LE_SENTINEL);
    CHECK(HeapLock(H[hi].h), "HeapLock failed, LE %u", (unsigned)GetLastError());
    size_t n = 0;
    uint64_t a = walk_once(hi, 1, &n);
    if (n <= 4096) { /* (LFH heaps walk as many thousand slots: once is enough there) */
        uint64_t b = walk_once(hi, 0, &n);
        CHECK(a == b, "two walks of an unchanged heap differ");
    }
    SetLastError(LE_SENTINEL);
    CHECK(HeapUnlock(H[hi].h), "HeapUnlock failed, LE %u", (unsigned)GetLastError());
    CHECK(GetLastError() == LE_SENTINEL, "HeapLock/HeapUnlock changed the last error");
    /* HeapWalk(h, NULL) */
    SetLastError(LE_SENTINEL);
    CHECK(!HeapWalk(H[hi].h, NULL) && GetLastError() == ERROR_INVALID_PARAMETER, "HeapWalk(h, NULL): LE %u",
          (unsigned)GetLastError());
    after_step(hi);
}

static void op_summary(rd *r) {
    int hi = pick_heap(r);
    TRACE("summary heap %d (%s)", hi, kind_name[H[hi].kind]);
    HEAP_SUMMARY s;
    memset(&s, 0xCD, sizeof s);
    s.cb = sizeof s;
    SetLastError(LE_SENTINEL);
    CHECK(HeapSummary(H[hi].h, 0, &s), "HeapSummary failed, LE %u", (unsigned)GetLastError());
    CHECK(GetLastError() == LE_SENTINEL, "successful HeapSummary changed the last error");
    size_t want = heap_bytes(hi);
    CHECK(s.cbAllocated == want, "HeapSummary cbAllocated %#zx, model %#zx (%d blocks)", (size_t)s.cbAllocated, want,
          heap_blocks(hi));
    /* (the page heap's mappings lie outside a fixed heap's reservation) */
    int fixed_pages = heap_is_fixed(hi) && page_heap;
    CHECK(s.cbAllocated <= s.cbCommitted && s.cbCommitted <= s.cbReserved && (fixed_pages || s.cbReserved <= s.cbMaxReserve),
          "HeapSummary allocated %#zx committed %#zx reserved %#zx max %#zx out of order", (size_t)s.cbAllocated,
          (size_t)s.cbCommitted, (size_t)s.cbReserved, (size_t)s.cbMaxReserve);
    if (heap_is_fixed(hi)) {
        size_t rmax = (H[hi].max + PAGE - 1) & ~(PAGE - 1);
        CHECK(s.cbMaxReserve == rmax, "fixed heap cbMaxReserve %#zx, want %#zx", (size_t)s.cbMaxReserve, rmax);
        CHECK(fixed_pages ? s.cbReserved >= rmax : s.cbReserved == rmax, "fixed heap cbReserved %#zx, want %#zx",
              (size_t)s.cbReserved, rmax);
    }
    HEAP_SUMMARY bad = { .cb = sizeof bad - 1 };
    SetLastError(LE_SENTINEL);
    CHECK(!HeapSummary(H[hi].h, 0, &bad) && GetLastError() == ERROR_INVALID_PARAMETER, "HeapSummary with a bad cb");
    bad.cb = sizeof bad;
    SetLastError(LE_SENTINEL);
    CHECK(!HeapSummary(H[hi].h, 1, &bad) && GetLastError() == ERROR_INVALID_PARAMETER, "HeapSummary with flags 1");
    after_step(hi);
}

static void op_lock(rd *r) {
    int hi = pick_heap(r);
    if (H[hi].depth >= 4) return;
    TRACE("lock heap %d depth %d", hi, H[hi].depth);
    SetLastError(LE_SENTINEL);
    CHECK(HeapLock(H[hi].h), "HeapLock failed, LE %u", (unsigned)GetLastError());
    CHECK(GetLastError() == LE_SENTINEL, "successful HeapLock changed the last error");
    H[hi].depth++;
}

static void op_unlock(rd *r) {
    int hi = pick_heap(r);
    TRACE("unlock heap %d depth %d", hi, H[hi].depth);
    SetLastError(LE_SENTINEL);
    BOOL ok = HeapUnlock(H[hi].h);
    if (H[hi].depth > 0 || H[hi].nser) {
        CHECK(ok, "HeapUnlock of a locked heap failed, LE %u", (unsigned)GetLastError());
        CHECK(GetLastError() == LE_SENTINEL, "successful HeapUnlock changed the last error");
        if (H[hi].depth > 0) H[hi].depth--;
    } else {
        CHECK(!ok && GetLastError() == ERROR_NOT_OWNER, "HeapUnlock without the lock: %d, LE %u (D15: FALSE, 288)", ok,
              (unsigned)GetLastError());
    }
}

static void unlock_all(int hi) {
    while (H[hi].depth > 0) {
        CHECK(HeapUnlock(H[hi].h), "HeapUnlock failed");
        H[hi].depth--;
    }
}

static void destroy_slot(int slot) {
    HANDLE h = H[slot].h;
    unlock_all(slot);
    for (int i = 0; i < nB; i++)
        if (B[i].heap == slot) check_block(&B[i], 1, "before HeapDestroy");
    check_heap_valid(slot, "before HeapDestroy");
    SetLastError(LE_SENTINEL);
    CHECK(HeapDestroy(h), "HeapDestroy(%p) failed, LE %u", h, (unsigned)GetLastError());
    CHECK(GetLastError() == LE_SENTINEL, "successful HeapDestroy changed the last error");
    for (int i = nB - 1; i >= 0; i--)
        if (B[i].heap == slot) remove_block(i);
    memset(&H[slot], 0, sizeof H[slot]);
    last_destroyed = h;
    SetLastError(LE_SENTINEL);
    CHECK(!HeapDestroy(h) && GetLastError() == ERROR_INVALID_HANDLE, "second HeapDestroy: LE %u", (unsigned)GetLastError());
    SetLastError(LE_SENTINEL);
    CHECK(!HeapValidate(h, 0, NULL) && GetLastError() == LE_SENTINEL, "HeapValidate of a destroyed heap");
    check_process_heaps();
}

static void op_destroy(rd *r) {
    int slot = u8(r) & 3;
    if (!H[slot].h) {
        SetLastError(LE_SENTINEL);
        CHECK(!HeapDestroy(GetProcessHeap()) && GetLastError() == ERROR_INVALID_HANDLE,
              "HeapDestroy(GetProcessHeap()): LE %u (D3: FALSE, 6)", (unsigned)GetLastError());
        return;
    }
    TRACE("destroy slot %d", slot);
    destroy_slot(slot);
    after_step(PROC);
}

static void op_compact(rd *r) {
    int hi = pick_heap(r);
    TRACE("compact heap %d", hi);
    SetLastError(LE_SENTINEL);
    SIZE_T c = HeapCompact(H[hi].h, 0);
    CHECK(c != 0 ? GetLastError() == LE_SENTINEL : GetLastError() == NO_ERROR, "HeapCompact = %#zx with LE %u", (size_t)c,
          (unsigned)GetLastError());
    after_step(hi);
}

static void op_trim(rd *r) {
    int hi = pick_heap(r);
    uint8_t all = u8(r) & 1;
    TRACE("HeapOptimizeResources %s", all ? "(all heaps)" : "");
    HEAP_OPTIMIZE_RESOURCES_INFORMATION info = { HEAP_OPTIMIZE_RESOURCES_CURRENT_VERSION, 0 };
    SetLastError(LE_SENTINEL);
    CHECK(HeapSetInformation(all ? NULL : H[hi].h, HeapOptimizeResources, &info, sizeof info),
          "HeapOptimizeResources failed, LE %u", (unsigned)GetLastError());
    after_step(hi);
}

/* ---- misuse (termination on corruption off) ---- */

/* p is not a live block of heap hi: HeapFree, HeapSize and HeapReAlloc fail
 * with LE 87, HeapValidate is FALSE and leaves the last error alone.  A
 * pointer inside the heap that is not a live block is corruption (D5): on a
 * heap created with HEAP_GENERATE_EXCEPTIONS, HeapReAlloc raises
 * STATUS_ACCESS_VIOLATION for it (D6); a foreign pointer raises nothing. */
static void expect_refused(int hi, void *p, int corruption, const char *what) {
    HANDLE h = H[hi].h;
    SetLastError(LE_SENTINEL);
    CHECK(!HeapFree(h, 0, p), "%s: HeapFree(%p) succeeded", what, p);
    CHECK(GetLastError() == ERROR_INVALID_PARAMETER, "%s: HeapFree(%p) LE %u, want 87", what, p, (unsigned)GetLastError());
    SetLastError(LE_SENTINEL);
    CHECK(HeapSize(h, 0, p) == (SIZE_T)-1, "%s: HeapSize(%p) succeeded", what, p);
    CHECK(GetLastError() == ERROR_INVALID_PARAMETER, "%s: HeapSize(%p) LE %u, want 87", what, p, (unsigned)GetLastError());
    SetLastError(LE_SENTINEL);
    callres res = call_alloc(C_REALLOC, h, 0, 0, p, 64);
    CHECK(!res.p, "%s: HeapReAlloc(%p) succeeded", what, p);
    CHECK(GetLastError() == ERROR_INVALID_PARAMETER, "%s: HeapReAlloc(%p) LE %u, want 87", what, p, (unsigned)GetLastError());
    int want_exc = corruption && H[hi].gen_exc;
    CHECK(res.raised == want_exc, "%s: HeapReAlloc(%p) raised %d, want %d", what, p, res.raised, want_exc);
    if (res.raised)
        CHECK(res.status == STATUS_ACCESS_VIOLATION, "%s: exception %#x, want STATUS_ACCESS_VIOLATION", what,
              (unsigned)res.status);
    SetLastError(LE_SENTINEL);
    CHECK(!HeapValidate(h, 0, p), "%s: HeapValidate(%p) is TRUE", what, p);
    CHECK(GetLastError() == LE_SENTINEL, "%s: HeapValidate(%p) changed the last error to %u", what, p, (unsigned)GetLastError());
}

static unsigned char static_buf[256];

static void op_misuse(rd *r) {
    uint8_t sub = u8(r), a = u8(r), c = u8(r);
    int touched = -1;
    switch (sub % 7) {
    case 0: { /* free, then use the freed pointer: double free, size, realloc */
        int i = nB ? a % nB : -1;
        if (i < 0) return;
        blk b = B[i];
        TRACE("misuse: double free of %p (heap %d, size %#zx)", (void *)b.p, b.heap, b.size);
        check_block(&b, 1, "before HeapFree");
        CHECK(HeapFree(H[b.heap].h, 0, b.p), "HeapFree of a live block failed");
        remove_block(i);
        expect_refused(b.heap, b.p, 1, "freed pointer");
        touched = b.heap;
        break;
    }
    case 1: { /* a pointer inside a live block */
        int i = nB ? a % nB : -1;
        if (i < 0 || B[i].size < 2) return;
        blk *b = &B[i];
        static const size_t offs[6] = { 1, 8, 16, 32, 48, 4096 };
        size_t k = (c & 8) ? (b->size - 1) & ~(size_t)15 : offs[c % 6];
        if (k == 0) k = 1;
        if (k >= b->size) k = b->size - 1;
        TRACE("misuse: interior pointer %p + %#zx (size %#zx)", (void *)b->p, k, b->size);
        expect_refused(b->heap, b->p + k, 1, "interior pointer");
        touched = b->heap;
        break;
    }
    case 2: { /* another heap's block */
        int i = nB ? a % nB : -1;
        if (i < 0) return;
        int t = (B[i].heap + 1 + c % NSLOTS) % (NSLOTS + 1);
        if (!H[t].h || t == B[i].heap) return;
        TRACE("misuse: block %p of heap %d given to heap %d", (void *)B[i].p, B[i].heap, t);
        expect_refused(t, B[i].p, 0, "foreign block");
        touched = t;
        break;
    }
    case 3: { /* pointers that are no heap's */
        int hi = a % (NSLOTS + 1);
        if (!H[hi].h) hi = PROC;
        unsigned char stack_buf[64];
        memset(stack_buf, 1, sizeof stack_buf);
        void *m = malloc(48);
        CHECK(m != NULL, "malloc failed");
        void *ps[6] = { stack_buf + 16, static_buf + 32, m, (void *)(uintptr_t)0x10, (void *)(uintptr_t)0xdead0000u,
                        (char *)H[hi].h + 16 /* the heap's own header: inside the heap, not a block */ };
        int k = c % 6;
        void *p = ps[k];
        TRACE("misuse: non-block pointer %p to heap %d", p, hi);
        expect_refused(hi, p, k == 5, "non-block pointer");
        free(m);
        touched = hi;
        break;
    }
    case 4: { /* handles that are no heap */
        int hi = a % (NSLOTS + 1);
        if (!H[hi].h) hi = PROC;
        unsigned char stack_buf[16];
        HANDLE hs[6] = { NULL, (HANDLE)(uintptr_t)1, (HANDLE)stack_buf, (char *)H[hi].h + 16,
                         (HANDLE)((uintptr_t)stack_buf & ~(uintptr_t)0xFFFF), last_destroyed };
        HANDLE bad = hs[c % 6];
        for (int k = 0; k <= NSLOTS; k++)
            if (bad == H[k].h) bad = NULL; /* a destroyed heap's address may hold a new heap now */
        void *p = nB ? (void *)B[c % nB].p : (void *)static_buf;
        TRACE("misuse: bad handle %p", bad);
        SetLastError(LE_SENTINEL);
        CHECK(!HeapAlloc(bad, 0, 16) && GetLastError() == ERROR_INVALID_HANDLE, "HeapAlloc(bad handle): LE %u",
              (unsigned)GetLastError());
        SetLastError(LE_SENTINEL);
        CHECK(!HeapReAlloc(bad, 0, p, 16) && GetLastError() == ERROR_INVALID_HANDLE, "HeapReAlloc(bad handle): LE %u",
              (unsigned)GetLastError());
        SetLastError(LE_SENTINEL);
        CHECK(!HeapFree(bad, 0, p) && GetLastError() == ERROR_INVALID_HANDLE, "HeapFree(bad handle): LE %u",
              (unsigned)GetLastError());
        SetLastError(LE_SENTINEL);
        CHECK(HeapFree(bad, 0, NULL), "HeapFree(bad handle, NULL) must be TRUE (D3)");
        SetLastError(LE_SENTINEL);
        CHECK(HeapSize(bad, 0, p) == (SIZE_T)-1 && GetLastError() == ERROR_INVALID_HANDLE, "HeapSize(bad handle): LE %u",
              (unsigned)GetLastError());
        SetLastError(LE_SENTINEL);
        CHECK(!HeapValidate(bad, 0, NULL) && GetLastError() == LE_SENTINEL, "HeapValidate(bad handle)");
        SetLastError(LE_SENTINEL);
        CHECK(!HeapLock(bad) && GetLastError() == ERROR_INVALID_HANDLE, "HeapLock(bad handle)");
        SetLastError(LE_SENTINEL);
        CHECK(!HeapUnlock(bad) && GetLastError() == ERROR_INVALID_HANDLE, "HeapUnlock(bad handle)");
        PROCESS_HEAP_ENTRY e = { .lpData = NULL };
        SetLastError(LE_SENTINEL);
        CHECK(!HeapWalk(bad, &e) && GetLastError() == ERROR_INVALID_HANDLE, "HeapWalk(bad handle)");
        HEAP_SUMMARY s = { .cb = sizeof s };
        SetLastError(LE_SENTINEL);
        CHECK(!HeapSummary(bad, 0, &s) && GetLastError() == ERROR_INVALID_HANDLE, "HeapSummary(bad handle)");
        SetLastError(LE_SENTINEL);
        CHECK(HeapCompact(bad, 0) == 0 && GetLastError() == ERROR_INVALID_HANDLE, "HeapCompact(bad handle)");
        SetLastError(LE_SENTINEL);
        CHECK(!HeapDestroy(bad) && GetLastError() == ERROR_INVALID_HANDLE, "HeapDestroy(bad handle)");
        touched = hi;
        break;
    }
    case 5: { /* HeapReAlloc(NULL) does not allocate; HeapFree(NULL) succeeds */
        int hi = a % (NSLOTS + 1);
        if (!H[hi].h) hi = PROC;
        TRACE("misuse: NULL pointers on heap %d", hi);
        SetLastError(LE_SENTINEL);
        CHECK(!HeapReAlloc(H[hi].h, (c & 1) ? HEAP_ZERO_MEMORY : 0, NULL, c) && GetLastError() == NO_ERROR,
              "HeapReAlloc(h, 0, NULL, n): LE %u (D2: NULL, 0)", (unsigned)GetLastError());
        SetLastError(LE_SENTINEL);
        CHECK(HeapFree(H[hi].h, 0, NULL) && GetLastError() == LE_SENTINEL, "HeapFree(h, 0, NULL)");
        touched = hi;
        break;
    }
    default: { /* a walk entry that names no element */
        int i = nB ? a % nB : -1;
        if (i < 0) return;
        blk *b = &B[i];
        PROCESS_HEAP_ENTRY e;
        memset(&e, 0, sizeof e);
        e.lpData = b->p + 8; /* never an element: misaligned */
        e.wFlags = PROCESS_HEAP_ENTRY_BUSY;
        TRACE("misuse: HeapWalk from %p", e.lpData);
        SetLastError(LE_SENTINEL);
        CHECK(!HeapWalk(H[b->heap].h, &e) && GetLastError() == ERROR_INVALID_PARAMETER,
              "HeapWalk from a bad lpData %p: LE %u (D12: FALSE, 87)", e.lpData, (unsigned)GetLastError());
        touched = b->heap;
        break;
    }
    }
    /* the misuse must not disturb any heap or block */
    for (int hi = 0; hi <= NSLOTS; hi++) check_heap_valid(hi, "after misuse");
    (void)touched;
    check_all_blocks(1, "after misuse");
}

/* ---- the target ---- */

static void reset_iteration(void) {
    op_name = "cleanup";
    for (int hi = 0; hi <= NSLOTS; hi++)
        if (H[hi].h) unlock_all(hi);
    check_all_blocks(1, "end of input");
    for (int i = nB - 1; i >= 0; i--) {
        if (B[i].heap != PROC) continue;
        SetLastError(LE_SENTINEL);
        CHECK(HeapFree(H[PROC].h, 0, B[i].p), "HeapFree(%p) at the end failed, LE %u", (void *)B[i].p,
              (unsigned)GetLastError());
        remove_block(i);
    }
    for (int s = 0; s < NSLOTS; s++)
        if (H[s].h) destroy_slot(s);
    check_heap_valid(PROC, "end of input");
    CHECK(nB == 0, "blocks left in the model");
}

static void print_totals(void) {
    fprintf(stderr, "fuzz_heap: %llu inputs, %llu heap operations (%llu frees from a second thread)\n", total_inputs,
            total_ops, remote_frees);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    setenv("WINHEAP_TERMINATE_ON_CORRUPTION", "0", 1);
    if (!getenv("WINHEAP_SEED")) setenv("WINHEAP_SEED", "20240531", 1); /* reproducible keys and slot order */
    trace = getenv("FUZZ_HEAP_TRACE") && getenv("FUZZ_HEAP_TRACE")[0] == '1';
    const char *dbg = getenv("WINHEAP_DEBUG");
    debug_heap = dbg && dbg[0];
    page_heap = dbg && (strstr(dbg, "guard") || strstr(dbg, "all"));
    pat = malloc(PAT_LEN);
    zeros = calloc(1, PAT_LEN);
    if (!pat || !zeros) abort();
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < PAT_LEN; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        pat[i] = (unsigned char)(x >> 24) | 1; /* never zero: a zeroed byte is always a mismatch */
    }
    winheap_set_exception_handler(exc_handler);
    H[PROC].h = GetProcessHeap();
    H[PROC].kind = K_PROCESS;
    if (!H[PROC].h) abort();
    base_heaps = GetProcessHeaps(0, NULL);
    atexit(print_totals);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!pat) LLVMFuzzerInitialize(NULL, NULL);
    if (size < 1) return 0;
    rd r = { data, size, 1 };
    int misuse = data[0] & 1;
    full_checks = (data[0] & 2) != 0;
    step = 0;
    while (r.i < r.n) {
        uint8_t op = u8(&r);
        step++;
        total_ops++;
        switch (op % 20) {
        case 0: op_name = "create"; op_create(&r); break;
        case 1: case 2: case 3: case 19: op_name = "alloc"; op_alloc(&r, 0); break;
        case 4: op_name = "aligned_alloc"; op_alloc(&r, 1); break;
        case 5: case 6: op_name = "realloc"; op_realloc(&r); break;
        case 7: case 8: op_name = "free"; op_free(&r); break;
        case 9: op_name = "size"; op_size(); break;
        case 10: op_name = "validate"; op_validate(&r); break;
        case 11: op_name = "walk"; op_walk(&r); break;
        case 12: op_name = "summary"; op_summary(&r); break;
        case 13: op_name = "lock"; op_lock(&r); break;
        case 14: op_name = "unlock"; op_unlock(&r); break;
        case 15: op_name = "destroy"; op_destroy(&r); break;
        case 16:
            if (misuse) {
                op_name = "misuse";
                op_misuse(&r);
            } else {
                op_name = "alloc";
                op_alloc(&r, 0);
            }
            break;
        case 17: op_name = "compact"; op_compact(&r); break;
        default: op_name = "trim"; op_trim(&r); break;
        }
    }
    reset_iteration();
    if (++total_inputs % 100000 == 0) print_totals();
    return 0;
}
