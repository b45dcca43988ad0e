/*
 * harden.c - keyed metadata checks, corruption reports and heap exceptions.
 *
 * Block headers are stored XOR-ed with per-heap random keys and carry a
 * 24-bit keyed hash of their address and contents (internal.h describes the
 * layout), so an overflow that rewrites a neighbour's header is detected the
 * next time the header is used instead of being followed.  This file holds
 * the keys, the hash, and the two ways a call can end badly:
 *   - corruption (SPEC D5): one line on stderr, written with write(2) from a
 *     stack buffer (no allocation), naming STATUS_HEAP_CORRUPTION, the
 *     function and the address; then abort().  Only if termination is on.
 *   - exceptions (SPEC D6): the handler set with
 *     winheap_set_exception_handler, else a line on stderr and abort().
 */
#include "internal.h"

#include <stdlib.h>

/* The process's random stream: splitmix64 over an atomic counter, seeded
 * from getrandom (or from WINHEAP_SEED, which makes keys and the LFH's slot
 * order reproducible).  A fork child reseeds (wh_harden_reseed), so its
 * future randomization differs from its parent's; the keys of heaps that
 * existed before the fork necessarily stay. */
static _Atomic uint64_t rng_state;
static _Atomic int rng_seeded;
static wh_lock rng_lock = WH_LOCK_INITIALIZER;

wh_lock *wh_harden_rng_lock(void) { return &rng_lock; }

static void rng_seed(uint64_t mix) {
    const wh_options *o = wh_options_get();
    uint64_t s;
    if (o->seeded)
        s = o->seed ^ mix;
    else
        wh_prim_random(&s, sizeof s);
    atomic_store(&rng_state, s);
}

uint64_t wh_harden_random64(void) {
    if (WH_UNLIKELY(!atomic_load_explicit(&rng_seeded, memory_order_acquire))) {
        wh_lock_acquire(&rng_lock);
        if (!atomic_load_explicit(&rng_seeded, memory_order_relaxed)) {
            rng_seed(0);
            atomic_store_explicit(&rng_seeded, 1, memory_order_release);
        }
        wh_lock_release(&rng_lock);
    }
    uint64_t z = atomic_fetch_add_explicit(&rng_state, 0x9E3779B97F4A7C15ull, memory_order_relaxed) +
                 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Bumped by every reseed: what was drawn in an earlier generation (a fork
 * parent's stream) must not be reused as if it were this process's. */
static _Atomic uint32_t rng_generation;

uint32_t wh_harden_generation(void) { return atomic_load_explicit(&rng_generation, memory_order_relaxed); }

void wh_harden_reseed(uint64_t mix) {
    rng_seed(mix * 0xD6E8FEB86659FD93ull);
    atomic_fetch_add(&rng_generation, 1);
    atomic_store(&rng_seeded, 1);
}

void wh_harden_init_keys(wh_heap *h) {
    h->key_hdr0 = wh_harden_random64();
    h->key_hdr1 = wh_harden_random64();
    h->key_link = wh_harden_random64() | 1; /* never 0: a zeroed link must not decode to NULL */
    h->key_large = wh_harden_random64();
}

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    x *= 0x94D049BB133111EBull;
    return x ^ (x >> 32);
}

/* Every field a free or resize trusts is hashed on its own (a sum would let
 * two fields change in step). */
uint64_t wh_harden_large_check(const wh_heap *h, const wh_large *l) {
    if (!WH_HARDEN) return 0;
    uint64_t x = mix64((uint64_t)(uintptr_t)l ^ h->key_large);
    x = mix64(x ^ l->requested);
    x = mix64(x ^ l->committed);
    x = mix64(x ^ l->r.reserve);
    x = mix64(x ^ l->r.map_size);
    return mix64(x ^ l->offset);
}

const char *wh_status_reason(wh_status s) {
    switch (s) {
    case WH_OK: return "ok";
    case WH_ENOMEM: return "out of memory";
    case WH_EFOREIGN: return "pointer not in this heap";
    case WH_EDOUBLE: return "double free";
    case WH_EINVALID: return "invalid free";
    case WH_EHEADER: return "bad block header";
    case WH_ELIST: return "free list corrupted";
    case WH_ETAIL: return "block tail overwritten";
    case WH_EFREEMOD: return "write after free";
    }
    return "unknown";
}

size_t wh_fmt_hex(char *out, uint64_t v, int digits) {
    static const char hex[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--) {
        out[i] = hex[v & 15];
        v >>= 4;
    }
    return (size_t)digits;
}

size_t wh_fmt_dec(char *out, uint64_t v) {
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

static size_t put(char *buf, size_t at, size_t cap, const char *s) {
    while (*s && at < cap) buf[at++] = *s++;
    return at;
}

void wh_report_corruption(const char *func, const void *addr, wh_status why) {
    if (!wh_options_toc()) return;
    char buf[256];
    size_t n = 0, cap = sizeof buf - 1;
    n = put(buf, n, cap, "winheap: STATUS_HEAP_CORRUPTION (0xC0000374) in ");
    n = put(buf, n, cap, func);
    n = put(buf, n, cap, " at 0x");
    n += wh_fmt_hex(buf + n, (uint64_t)(uintptr_t)addr, 16);
    n = put(buf, n, cap, ": ");
    n = put(buf, n, cap, wh_status_reason(why));
    buf[n++] = '\n';
    wh_prim_write_stderr(buf, n);
    abort();
}

static _Atomic(winheap_exception_handler) exception_handler;

WINHEAP_API winheap_exception_handler winheap_set_exception_handler(winheap_exception_handler handler) {
    return atomic_exchange(&exception_handler, handler);
}

void wh_raise_exception(const char *func, DWORD status, HANDLE heap, DWORD flags, SIZE_T size) {
    winheap_exception_handler fn = atomic_load(&exception_handler);
    if (fn) fn(status, heap, flags, size);
    char buf[256];
    size_t n = 0, cap = sizeof buf - 1;
    n = put(buf, n, cap, "winheap: unhandled exception ");
    n = put(buf, n, cap, status == STATUS_NO_MEMORY ? "STATUS_NO_MEMORY (0xC0000017)" : "STATUS_ACCESS_VIOLATION (0xC0000005)");
    n = put(buf, n, cap, " in ");
    n = put(buf, n, cap, func);
    n = put(buf, n, cap, " (heap 0x");
    n += wh_fmt_hex(buf + n, (uint64_t)(uintptr_t)heap, 16);
    n = put(buf, n, cap, ", size ");
    n += wh_fmt_dec(buf + n, size);
    n = put(buf, n, cap, ")");
    buf[n++] = '\n';
    wh_prim_write_stderr(buf, n);
    abort();
}

void wh_assert_fail(const char *file, int line, const char *expr) {
    char buf[512];
    size_t n = 0, cap = sizeof buf - 1;
    n = put(buf, n, cap, "winheap: assertion failed: ");
    n = put(buf, n, cap, expr);
    n = put(buf, n, cap, " at ");
    n = put(buf, n, cap, file);
    n = put(buf, n, cap, ":");
    n += wh_fmt_dec(buf + n, (uint64_t)line);
    buf[n++] = '\n';
    wh_prim_write_stderr(buf, n);
    abort();
}
