/*
 * api.c - the Win32 entry points.
 *
 * Each function reads as a chain of failure cases: check the handle (never
 * dereferenced unless it is a live heap, D3), combine the call's flags with
 * the heap's (SPEC 1.3), decide who owns the pointer through the address map
 * before reading any header (D4), take the heap lock unless HEAP_NO_SERIALIZE
 * is in effect, call down into heap/backend/large/walk, release the lock, and
 * only then turn a failure into its outcome: the last error, a corruption
 * report (D5) or an exception (D6).  The last error is set here and nowhere
 * else, and a successful call leaves it alone (D2).
 */
#include "lfh.h"

static __thread DWORD last_error __attribute__((tls_model("initial-exec")));

WINHEAP_API DWORD WINAPI GetLastError(void) { return last_error; }
WINHEAP_API void WINAPI SetLastError(DWORD dwErrCode) { last_error = dwErrCode; }

WINHEAP_API const char *winheap_version(void) { return WINHEAP_VERSION_STRING; }

#define ALLOC_FLAGS (HEAP_NO_SERIALIZE | HEAP_GENERATE_EXCEPTIONS | HEAP_ZERO_MEMORY)
#define REALLOC_FLAGS (ALLOC_FLAGS | HEAP_REALLOC_IN_PLACE_ONLY)
#define CREATE_FLAGS (HEAP_NO_SERIALIZE | HEAP_GENERATE_EXCEPTIONS | HEAP_CREATE_ENABLE_EXECUTE)

/* The heap for a handle, or NULL with ERROR_INVALID_HANDLE. */
static wh_heap *heap_of(HANDLE handle) {
    wh_heap *h = wh_heap_from_handle(handle);
    if (WH_UNLIKELY(!h)) last_error = ERROR_INVALID_HANDLE;
    return h;
}

static inline void lock_if(wh_heap *h, bool ser) { if (ser) wh_heap_lock(h); }
static inline void unlock_if(wh_heap *h, bool ser) { if (ser) wh_heap_unlock(h); }

/*
 * Who owns p, as seen by heap h: a group of h's LFH (o->g), a BLOCKS or LARGE
 * region of h (o->r), a large block of h released earlier (WH_EDOUBLE), a
 * place inside h that holds no blocks (WH_EINVALID), or nobody
 * (WH_EFOREIGN).  Reads only the address map and the header it names.
 */
typedef struct owner {
    wh_region *r;
    wh_group *g;
    wh_status st;
} owner;

static void owner_of(wh_heap *h, uintptr_t e, owner *o) {
    o->r = NULL;
    o->g = NULL;
    o->st = WH_OK;
    switch (e & 3) {
    case 1:
        o->st = e == WH_TOMBSTONE(h) ? WH_EDOUBLE : WH_EFOREIGN;
        return;
    case 2:
        o->g = wh_lfh_group_of_entry(e);
        if (o->g->heap != h) {
            o->g = NULL;
            o->st = WH_EFOREIGN;
        }
        return;
    default:
        o->r = (wh_region *)e;
        if (!o->r || o->r->heap != h) {
            o->r = NULL;
            o->st = WH_EFOREIGN;
        } else if (o->r->kind == WH_REGION_LFH) {
            o->r = NULL;
            o->st = WH_EINVALID;
        }
    }
}

/* The last (heap, thread cache) pair this thread allocated from, trusted
 * while no heap has been destroyed since (wh_destroy_epoch). */
static __thread struct {
    HANDLE handle;
    uint64_t epoch;
    wh_tlh *tlh;
} tl_last __attribute__((tls_model("initial-exec"))) = { (HANDLE)1, 0, NULL };

/* The thread's caches were handed back (thread exit): forget the pair. */
void wh_api_forget_thread_cache(void) {
    tl_last.handle = (HANDLE)1;
    tl_last.tlh = NULL;
}

/* Debug heap "validate" switch (D18): check the whole heap at the start of
 * every call.  False (after a corruption report) if it is damaged. */
static bool debug_validate(wh_heap *h, const char *func) {
    if (WH_LIKELY(!(wh_debug_flags() & WH_DBG_VALIDATE))) return true;
    bool ser = !(h->flags & HEAP_NO_SERIALIZE);
    lock_if(h, ser);
    bool ok = wh_walk_validate_heap(h);
    unlock_if(h, ser);
    if (ok) return true;
    wh_report_corruption(func, h, WH_EHEADER);
    last_error = ERROR_INVALID_PARAMETER;
    return false;
}

/* Turn a failed HeapAlloc/HeapReAlloc into its outcome (called unlocked). */
static void *alloc_failed(const char *func, wh_heap *h, DWORD flags, size_t size, wh_status st, const void *addr) {
    DWORD status = STATUS_NO_MEMORY;
    if (wh_status_is_corruption(st)) {
        wh_report_corruption(func, addr ? addr : (const void *)h, st);
        last_error = ERROR_INVALID_PARAMETER;
        status = STATUS_ACCESS_VIOLATION;
    } else if (st == WH_EFOREIGN) {
        last_error = ERROR_INVALID_PARAMETER;
        return NULL;
    } else {
        last_error = ERROR_NOT_ENOUGH_MEMORY;
    }
    if (flags & HEAP_GENERATE_EXCEPTIONS) wh_raise_exception(func, status, (HANDLE)h, flags, size);
    return NULL;
}

/*
 * Debug page heap (D18): a block of `size` bytes (aligned to `align`, 0 for
 * 16) in a mapping of its own that ends against an inaccessible page.  A
 * fixed heap keeps D7's limits: the caller has refused requests at or over
 * WINHEAP_FIXED_LIMIT, and the block's cost is charged against the heap's
 * maximum before anything is mapped (large.c).  Takes the heap lock itself
 * if ser (the mapping is made unlocked).  The payload, or NULL + *st
 * (WH_ENOMEM: no memory, or the fixed heap is full) with nothing changed.
 */
static WH_NOINLINE void *alloc_guarded(wh_heap *h, bool ser, size_t size, size_t align, wh_status *st) {
    bool fixed = !(h->flags & HEAP_GROWABLE);
    size_t cost = fixed ? wh_large_fixed_cost(size) : 0;
    if (fixed) {
        lock_if(h, ser);
        bool fits = wh_large_fixed_fits(h, 0, cost);
        if (fits) wh_large_fixed_account(h, 0, cost);
        unlock_if(h, ser);
        if (!fits) {
            *st = WH_ENOMEM;
            return NULL;
        }
    }
    wh_large *l = wh_large_map_guarded(h, size, align, st);
    void *p = NULL;
    lock_if(h, ser);
    if (l)
        p = wh_large_link(h, l);
    else
        wh_large_fixed_account(h, cost, 0);
    unlock_if(h, ser);
    return p;
}

/* Allocate without zeroing: the LFH for small blocks when it is on, else
 * the back end, or a large block (every block under the page heap).  Takes
 * the heap lock itself if ser. */
static void *alloc_block(wh_heap *h, bool ser, size_t size, wh_status *st) {
    if (WH_UNLIKELY(wh_debug_flags() & WH_DBG_GUARD)) {
        if (!(h->flags & HEAP_GROWABLE) && size >= WINHEAP_FIXED_LIMIT) {
            *st = WH_ENOMEM;
            return NULL;
        }
        return alloc_guarded(h, ser, size, 0, st);
    }
    if (size <= WH_LFH_MAX - WH_TOOL_RZ && wh_heap_compat(h) == 2) {
        uint64_t epoch = atomic_load_explicit(&wh_destroy_epoch, memory_order_relaxed);
        wh_tlh *t = wh_lfh_tlh(h);
        if (t) {
            tl_last.handle = (HANDLE)h;
            tl_last.epoch = epoch;
            tl_last.tlh = t;
            void *p = wh_lfh_alloc(t, size);
            if (p) return p;
        }
        /* No memory for a group: the back end may still have room. */
    }
    if (h->flags & HEAP_GROWABLE) {
        if (size >= WINHEAP_LARGE_THRESHOLD) {
            wh_large *l = wh_large_map(h, size, st); /* the system calls run unlocked */
            if (!l) return NULL;
            lock_if(h, ser);
            void *p = wh_large_link(h, l);
            unlock_if(h, ser);
            return p;
        }
    } else if (size >= WINHEAP_FIXED_LIMIT) {
        *st = WH_ENOMEM;
        return NULL;
    }
    lock_if(h, ser);
    void *p = wh_backend_alloc(h, size, st);
    /* D16 counts every allocation of a class; a call with HEAP_NO_SERIALIZE
     * on a serialized heap promises that no other thread is inside it. */
    if (p && (h->flags & HEAP_GROWABLE) && !(h->flags & HEAP_NO_SERIALIZE)) wh_heap_count_alloc(h, size);
    unlock_if(h, ser);
    return p;
}

WINHEAP_API HANDLE WINAPI GetProcessHeap(void) {
    wh_heap *h = wh_heap_process();
    if (!h) last_error = ERROR_NOT_ENOUGH_MEMORY;
    return (HANDLE)h;
}

WINHEAP_API DWORD WINAPI GetProcessHeaps(DWORD NumberOfHeaps, PHANDLE ProcessHeaps) {
    if (!wh_heap_process()) {
        last_error = ERROR_NOT_ENOUGH_MEMORY;
        return 0;
    }
    return wh_heap_list(ProcessHeaps ? NumberOfHeaps : 0, ProcessHeaps);
}

WINHEAP_API HANDLE WINAPI HeapCreate(DWORD flOptions, SIZE_T dwInitialSize, SIZE_T dwMaximumSize) {
    if (!wh_heap_process()) { /* the process heap comes first in the registry */
        last_error = ERROR_NOT_ENOUGH_MEMORY;
        return NULL;
    }
    if (dwMaximumSize && dwInitialSize > dwMaximumSize) {
        last_error = ERROR_INVALID_PARAMETER;
        return NULL;
    }
    wh_status st = WH_OK;
    wh_heap *h = wh_heap_create(flOptions & CREATE_FLAGS, dwInitialSize, dwMaximumSize, &st);
    if (!h) last_error = ERROR_NOT_ENOUGH_MEMORY;
    return (HANDLE)h;
}

WINHEAP_API BOOL WINAPI HeapDestroy(HANDLE hHeap) {
    wh_heap *h = heap_of(hHeap);
    if (!h) return FALSE;
    if (h == wh_heap_process()) {
        last_error = ERROR_INVALID_HANDLE;
        return FALSE;
    }
    wh_heap_destroy(h);
    return TRUE;
}

static WH_NOINLINE void *heap_alloc_slow(HANDLE hHeap, DWORD dwFlags, SIZE_T dwBytes) {
    wh_heap *h = heap_of(hHeap);
    if (!h || !debug_validate(h, "HeapAlloc")) return NULL;
    DWORD flags = h->flags | (dwFlags & ALLOC_FLAGS);
    wh_status st = WH_OK;
    void *p = alloc_block(h, !(flags & HEAP_NO_SERIALIZE), dwBytes, &st);
    if (WH_UNLIKELY(!p)) return alloc_failed("HeapAlloc", h, flags, dwBytes, st, NULL);
    if (flags & HEAP_ZERO_MEMORY) memset(p, 0, dwBytes);
    return p;
}

/* HeapAlloc's fast path found no slot at the head of its group: the LFH's
 * slow path with the same thread cache, else the general path. */
static WH_NOINLINE void *heap_alloc_lfh_slow(HANDLE hHeap, DWORD dwFlags, SIZE_T dwBytes) {
    void *p = wh_lfh_alloc_slow(tl_last.tlh, wh_lfh_class(dwBytes + WH_TOOL_RZ), dwBytes);
    if (WH_UNLIKELY(!p)) return heap_alloc_slow(hHeap, dwFlags, dwBytes);
    if (dwFlags & HEAP_ZERO_MEMORY) memset(p, 0, dwBytes);
    return p;
}

WINHEAP_API LPVOID WINAPI HeapAlloc(HANDLE hHeap, DWORD dwFlags, SIZE_T dwBytes) {
    /* Hot path: the thread's last LFH heap, a small block. */
    if (WH_LIKELY(hHeap == tl_last.handle && dwBytes <= WH_LFH_MAX - WH_TOOL_RZ &&
                  tl_last.epoch == atomic_load_explicit(&wh_destroy_epoch, memory_order_relaxed))) {
        /* No call on this path but tail calls, so it needs no stack frame. */
        void *p = wh_lfh_alloc_fast(tl_last.tlh, dwBytes);
        if (WH_LIKELY(p != NULL)) {
            if (dwFlags & HEAP_ZERO_MEMORY) return memset(p, 0, dwBytes);
            return p;
        }
        return heap_alloc_lfh_slow(hHeap, dwFlags, dwBytes);
    }
    return heap_alloc_slow(hHeap, dwFlags, dwBytes);
}

WINHEAP_API LPVOID winheap_aligned_alloc(HANDLE hHeap, DWORD dwFlags, SIZE_T alignment, SIZE_T dwBytes) {
    if (alignment == 0 || (alignment & (alignment - 1))) {
        if (!heap_of(hHeap)) return NULL;
        last_error = ERROR_INVALID_PARAMETER;
        return NULL;
    }
    if (alignment <= WH_ALIGN) return HeapAlloc(hHeap, dwFlags, dwBytes);
    wh_heap *h = heap_of(hHeap);
    if (!h) return NULL;
    DWORD flags = h->flags | (dwFlags & ALLOC_FLAGS);
    bool ser = !(flags & HEAP_NO_SERIALIZE);
    wh_status st = WH_ENOMEM;
    void *p = NULL;
    if (dwBytes <= WH_MAX_REQUEST && alignment <= WH_MAX_REQUEST) {
        size_t padded = dwBytes + alignment + WH_MIN_BLOCK;
        if (WH_UNLIKELY(wh_debug_flags() & WH_DBG_GUARD)) { /* page heap; fixed heaps: the same limit as below */
            if ((h->flags & HEAP_GROWABLE) || padded < WINHEAP_FIXED_LIMIT) p = alloc_guarded(h, ser, dwBytes, alignment, &st);
        } else if (h->flags & HEAP_GROWABLE) {
            if (padded >= WINHEAP_LARGE_THRESHOLD || alignment > WH_CHUNK / 4) {
                wh_large *l = wh_large_map_aligned(h, dwBytes, alignment, &st);
                if (l) {
                    lock_if(h, ser);
                    p = wh_large_link(h, l);
                    unlock_if(h, ser);
                }
            } else {
                lock_if(h, ser);
                p = wh_backend_alloc_aligned(h, dwBytes, alignment, &st);
                unlock_if(h, ser);
            }
        } else if (padded < WINHEAP_FIXED_LIMIT) {
            lock_if(h, ser);
            p = wh_backend_alloc_aligned(h, dwBytes, alignment, &st);
            unlock_if(h, ser);
        }
    }
    if (!p) return alloc_failed("winheap_aligned_alloc", h, flags, dwBytes, st, NULL);
    if (flags & HEAP_ZERO_MEMORY) memset(p, 0, dwBytes);
    return p;
}

static BOOL free_failed(wh_heap *h, const void *p, wh_status st) {
    if (wh_status_is_corruption(st)) {
        wh_tool_bad_free(h, p); /* memcheck reports it at the call, as for free() */
        wh_report_corruption("HeapFree", p, st);
    }
    last_error = ERROR_INVALID_PARAMETER;
    return FALSE;
}

static WH_NOINLINE BOOL heap_free_slow(HANDLE hHeap, DWORD dwFlags, LPVOID lpMem, uintptr_t e) {
    wh_heap *h = heap_of(hHeap);
    if (!h || !debug_validate(h, "HeapFree")) return FALSE;
    bool ser = wh_heap_serialized(h, dwFlags);
    owner o;
    owner_of(h, e, &o);
    wh_status st = o.st;
    if (o.g) {
        st = wh_lfh_free(o.g, lpMem);
    } else if (o.r) {
        lock_if(h, ser);
        if (o.r->kind == WH_REGION_LARGE) {
            wh_large *l;
            st = wh_large_lookup(h, o.r, lpMem, &l);
            if (st == WH_OK) {
                wh_large_fixed_account(h, wh_large_fixed_cost(l->requested), 0); /* (page heap on a fixed heap) */
                wh_large_free(h, l);
            }
        } else {
            wh_block *b;
            wh_binfo bi;
            st = wh_backend_lookup(h, o.r, lpMem, &b, &bi);
            if (st == WH_OK) st = wh_backend_free(h, o.r, b, &bi);
        }
        unlock_if(h, ser);
    }
    if (WH_LIKELY(st == WH_OK)) return TRUE;
    return free_failed(h, lpMem, st);
}

WINHEAP_API BOOL WINAPI HeapFree(HANDLE hHeap, DWORD dwFlags, LPVOID lpMem) {
    if (!lpMem) return TRUE;
    uintptr_t e = wh_region_map_get(lpMem);
    wh_group *g = wh_lfh_group_of_entry(e);
    /* Hot path: an LFH block of this very heap (a live group names a live
     * heap, so the handle needs no other check). */
    if (WH_LIKELY(g != NULL && (HANDLE)g->heap == hHeap)) {
        wh_status st = wh_lfh_free(g, lpMem);
        if (WH_LIKELY(st == WH_OK)) return TRUE;
        return free_failed(g->heap, lpMem, st);
    }
    return heap_free_slow(hHeap, dwFlags, lpMem, e);
}

/*
 * Resize a block of a BLOCKS region (caller holds the lock): in place if the
 * block's space allows, else (unless in place only) by moving it, to a large
 * block when the new size calls for one.  Returns the new pointer or NULL
 * with *st; the block is unchanged on failure.
 */
static void *realloc_small(wh_heap *h, wh_region *r, void *p, size_t size, DWORD flags, size_t *old, wh_status *st) {
    wh_block *b;
    wh_binfo bi;
    if ((*st = wh_backend_lookup(h, r, p, &b, &bi)) != WH_OK) return NULL;
    *old = wh_binfo_requested(&bi);
    bool in_place = (flags & HEAP_REALLOC_IN_PLACE_ONLY) != 0;
    bool growable = (h->flags & HEAP_GROWABLE) != 0;
    void *np;
    if (!growable && size >= WINHEAP_FIXED_LIMIT) {
        *st = WH_ENOMEM;
        return NULL;
    }
    if (growable && size >= WINHEAP_LARGE_THRESHOLD) {
        if (in_place) {
            *st = WH_ENOMEM;
            return NULL;
        }
        wh_large *l = wh_large_map(h, size, st);
        np = l ? wh_large_link(h, l) : NULL;
    } else {
        *st = wh_backend_resize(h, r, b, &bi, size);
        if (*st == WH_OK) return p;
        if (*st != WH_ENOMEM || in_place) return NULL;
        np = wh_backend_alloc(h, size, st);
    }
    if (!np) return NULL;
    memcpy(np, p, *old < size ? *old : size);
    /* The allocation may have changed b's neighbours: look it up again. */
    if ((*st = wh_backend_lookup(h, r, p, &b, &bi)) == WH_OK) *st = wh_backend_free(h, r, b, &bi);
    WH_ASSERT(*st == WH_OK);
    *st = WH_OK;
    return np;
}

/*
 * Resize a block in a mapping of its own (caller holds the lock).  On a
 * fixed heap (page heap) the limits of a back-end block apply: the new size
 * must stay below WINHEAP_FIXED_LIMIT and its cost fit the maximum.  Returns
 * the new pointer, or NULL with *st (WH_ENOMEM) and the block unchanged.
 */
static void *realloc_large(wh_heap *h, wh_large *l, size_t size, DWORD flags, wh_status *st) {
    bool in_place = (flags & HEAP_REALLOC_IN_PLACE_ONLY) != 0;
    if (WH_UNLIKELY(wh_debug_flags() & WH_DBG_GUARD) && !in_place && size != l->requested &&
        ((h->flags & HEAP_GROWABLE) ||
         (size < WINHEAP_FIXED_LIMIT && wh_large_fixed_fits(h, 0, wh_large_fixed_cost(size))))) {
        /* Page heap: the block moves to a new guarded mapping, so that it
         * still ends against the inaccessible page (resized where it is,
         * its end would move away from it).  A fixed heap too full to hold
         * both copies for a moment resizes in place below. */
        void *np = alloc_guarded(h, false, size, 0, st); /* (the caller holds the lock if the heap has one) */
        if (!np) return NULL;
        memcpy(np, wh_large_payload(l), l->requested < size ? l->requested : size);
        if (!(h->flags & HEAP_GROWABLE)) wh_large_fixed_account(h, wh_large_fixed_cost(l->requested), 0);
        wh_large_free(h, l);
        return np;
    }
    if (h->flags & HEAP_GROWABLE) return wh_large_resize(h, l, size, in_place, st);
    if (size >= WINHEAP_FIXED_LIMIT) {
        *st = WH_ENOMEM;
        return NULL;
    }
    size_t was = wh_large_fixed_cost(l->requested), cost = wh_large_fixed_cost(size);
    if (!wh_large_fixed_fits(h, was, cost)) {
        *st = WH_ENOMEM;
        return NULL;
    }
    void *np = wh_large_resize(h, l, size, in_place, st);
    if (np) wh_large_fixed_account(h, was, cost);
    return np;
}

/* Resize an LFH block: in its slot if it fits, else by moving it (unless
 * in place only).  No lock needed for the slot itself. */
static void *realloc_lfh(wh_heap *h, wh_group *g, void *p, size_t size, DWORD flags, size_t *old, wh_status *st) {
    if ((*st = wh_lfh_resize(g, p, size, old)) == WH_OK) return p;
    if (*st != WH_ENOMEM || (flags & HEAP_REALLOC_IN_PLACE_ONLY)) return NULL;
    void *np = alloc_block(h, !(flags & HEAP_NO_SERIALIZE), size, st);
    if (!np) return NULL;
    memcpy(np, p, *old < size ? *old : size);
    *st = wh_lfh_free(g, p);
    WH_ASSERT(*st == WH_OK);
    *st = WH_OK;
    return np;
}

WINHEAP_API LPVOID WINAPI HeapReAlloc(HANDLE hHeap, DWORD dwFlags, LPVOID lpMem, SIZE_T dwBytes) {
    /* Hot path: an LFH block of the thread's last LFH heap (never a debug
     * heap) that its slot can hold; anything else takes the general path,
     * which repeats the checks and reports the errors. */
    if (WH_LIKELY(hHeap == tl_last.handle &&
                  tl_last.epoch == atomic_load_explicit(&wh_destroy_epoch, memory_order_relaxed))) {
        wh_group *g = wh_lfh_group_of_entry(wh_region_map_get(lpMem));
        size_t old;
        if (g && (HANDLE)g->heap == hHeap && wh_lfh_resize(g, lpMem, dwBytes, &old) == WH_OK) {
            if ((dwFlags & HEAP_ZERO_MEMORY) && dwBytes > old) memset((char *)lpMem + old, 0, dwBytes - old);
            return lpMem;
        }
    }
    wh_heap *h = heap_of(hHeap);
    if (!h || !debug_validate(h, "HeapReAlloc")) return NULL;
    DWORD flags = h->flags | (dwFlags & REALLOC_FLAGS);
    if (!lpMem) {
        last_error = NO_ERROR;
        return NULL;
    }
    bool ser = !(flags & HEAP_NO_SERIALIZE);
    size_t old = 0;
    void *np = NULL;
    owner o;
    owner_of(h, wh_region_map_get(lpMem), &o);
    wh_status st = o.st;
    if (o.g) {
        np = realloc_lfh(h, o.g, lpMem, dwBytes, flags, &old, &st);
    } else if (o.r) {
        lock_if(h, ser);
        if (o.r->kind == WH_REGION_LARGE) {
            wh_large *l;
            st = wh_large_lookup(h, o.r, lpMem, &l);
            if (st == WH_OK) {
                old = l->requested;
                np = realloc_large(h, l, dwBytes, flags, &st);
            }
        } else {
            np = realloc_small(h, o.r, lpMem, dwBytes, flags, &old, &st);
        }
        unlock_if(h, ser);
    }
    if (!np) return alloc_failed("HeapReAlloc", h, flags, dwBytes, st, lpMem);
    if ((flags & HEAP_ZERO_MEMORY) && dwBytes > old) memset((char *)np + old, 0, dwBytes - old);
    return np;
}

WINHEAP_API SIZE_T WINAPI HeapSize(HANDLE hHeap, DWORD dwFlags, LPCVOID lpMem) {
    wh_heap *h = heap_of(hHeap);
    if (!h || !debug_validate(h, "HeapSize")) return (SIZE_T)-1;
    bool ser = wh_heap_serialized(h, dwFlags);
    size_t size = (SIZE_T)-1;
    owner o;
    owner_of(h, wh_region_map_get(lpMem), &o);
    if (o.g) {
        if (wh_lfh_lookup(o.g, lpMem, &size) != WH_OK) size = (SIZE_T)-1;
    } else if (o.r) {
        lock_if(h, ser);
        if (o.r->kind == WH_REGION_LARGE) {
            wh_large *l;
            if (wh_large_lookup(h, o.r, lpMem, &l) == WH_OK) size = l->requested;
        } else {
            wh_block *b;
            wh_binfo bi;
            if (wh_backend_lookup(h, o.r, lpMem, &b, &bi) == WH_OK) size = wh_binfo_requested(&bi);
        }
        unlock_if(h, ser);
    }
    if (size == (SIZE_T)-1) last_error = ERROR_INVALID_PARAMETER;
    return size;
}

WINHEAP_API BOOL WINAPI HeapValidate(HANDLE hHeap, DWORD dwFlags, LPCVOID lpMem) {
    wh_heap *h = wh_heap_from_handle(hHeap); /* never changes the last error (D2) */
    if (!h) return FALSE;
    bool ser = wh_heap_serialized(h, dwFlags);
    lock_if(h, ser);
    bool ok = lpMem ? wh_walk_validate_block(h, lpMem) : wh_walk_validate_heap(h);
    unlock_if(h, ser);
    return ok;
}

WINHEAP_API SIZE_T WINAPI HeapCompact(HANDLE hHeap, DWORD dwFlags) {
    wh_heap *h = heap_of(hHeap);
    if (!h) return 0;
    bool ser = wh_heap_serialized(h, dwFlags);
    bool ok;
    lock_if(h, ser);
    size_t largest = wh_walk_largest_free(h, &ok);
    unlock_if(h, ser);
    if (!ok) {
        wh_report_corruption("HeapCompact", h, WH_EHEADER);
        last_error = ERROR_INVALID_PARAMETER;
        return 0;
    }
    if (largest == 0) last_error = NO_ERROR;
    return largest;
}

WINHEAP_API BOOL WINAPI HeapLock(HANDLE hHeap) {
    wh_heap *h = heap_of(hHeap);
    if (!h) return FALSE;
    if (!(h->flags & HEAP_NO_SERIALIZE)) wh_heap_lock(h);
    return TRUE;
}

WINHEAP_API BOOL WINAPI HeapUnlock(HANDLE hHeap) {
    wh_heap *h = heap_of(hHeap);
    if (!h) return FALSE;
    if (h->flags & HEAP_NO_SERIALIZE) return TRUE;
    if (!wh_heap_lock_owned(h)) {
        last_error = ERROR_NOT_OWNER;
        return FALSE;
    }
    wh_heap_unlock(h);
    return TRUE;
}

WINHEAP_API BOOL WINAPI HeapWalk(HANDLE hHeap, LPPROCESS_HEAP_ENTRY lpEntry) {
    wh_heap *h = heap_of(hHeap);
    if (!h) return FALSE;
    if (!lpEntry) {
        last_error = ERROR_INVALID_PARAMETER;
        return FALSE;
    }
    bool ser = !(h->flags & HEAP_NO_SERIALIZE);
    bool end = false;
    lock_if(h, ser);
    wh_status st = wh_walk_next(h, lpEntry, &end);
    unlock_if(h, ser);
    if (st == WH_OK && !end) return TRUE;
    if (st == WH_OK) {
        last_error = ERROR_NO_MORE_ITEMS;
        return FALSE;
    }
    /* A walk never terminates the process (D5): an entry that no longer
     * names an element (the heap changed under an unlocked walk) and
     * damaged metadata both end it with ERROR_INVALID_PARAMETER. */
    last_error = ERROR_INVALID_PARAMETER;
    return FALSE;
}

WINHEAP_API BOOL WINAPI HeapSummary(HANDLE hHeap, DWORD dwFlags, LPHEAP_SUMMARY lpSummary) {
    wh_heap *h = heap_of(hHeap);
    if (!h) return FALSE;
    if (!lpSummary || lpSummary->cb != sizeof(HEAP_SUMMARY) || dwFlags != 0) {
        last_error = ERROR_INVALID_PARAMETER;
        return FALSE;
    }
    bool ser = !(h->flags & HEAP_NO_SERIALIZE);
    HEAP_SUMMARY s = { .cb = sizeof(HEAP_SUMMARY) };
    lock_if(h, ser);
    bool ok = wh_walk_summary(h, &s);
    unlock_if(h, ser);
    if (!ok) {
        wh_report_corruption("HeapSummary", h, WH_EHEADER);
        last_error = ERROR_INVALID_PARAMETER;
        return FALSE;
    }
    *lpSummary = s;
    return TRUE;
}

WINHEAP_API BOOL WINAPI HeapQueryInformation(HANDLE HeapHandle, HEAP_INFORMATION_CLASS HeapInformationClass,
                                             PVOID HeapInformation, SIZE_T HeapInformationLength,
                                             PSIZE_T ReturnLength) {
    if (!HeapHandle) { /* as Windows: the NULL handle faults inside, ReturnLength untouched */
        last_error = ERROR_NOACCESS;
        return FALSE;
    }
    wh_heap *h = heap_of(HeapHandle);
    if (!h) return FALSE;
    if (HeapInformationClass != HeapCompatibilityInformation) {
        last_error = ERROR_INVALID_PARAMETER;
        return FALSE;
    }
    if (ReturnLength) *ReturnLength = sizeof(ULONG);
    if (HeapInformationLength < sizeof(ULONG)) {
        last_error = ERROR_INSUFFICIENT_BUFFER;
        return FALSE;
    }
    if (!HeapInformation) {
        last_error = ERROR_NOACCESS;
        return FALSE;
    }
    ULONG v = wh_heap_compat(h);
    memcpy(HeapInformation, &v, sizeof v);
    return TRUE;
}

/* HeapCompatibilityInformation on one heap (D16). */
static BOOL set_compat(wh_heap *h, const void *info, size_t len) {
    ULONG v;
    if (!info || len < sizeof v) {
        last_error = ERROR_INVALID_PARAMETER;
        return FALSE;
    }
    memcpy(&v, info, sizeof v);
    if (v == 2) {
        if ((h->flags & HEAP_NO_SERIALIZE) || !(h->flags & HEAP_GROWABLE) || wh_debug_flags()) {
            last_error = ERROR_INVALID_PARAMETER;
            return FALSE;
        }
        wh_heap_enable_lfh(h);
        return TRUE;
    }
    if (v == 0 || v == 1) {
        if (wh_heap_compat(h) == 2) {
            last_error = ERROR_GEN_FAILURE; /* the LFH cannot be turned off */
            return FALSE;
        }
        return TRUE;
    }
    last_error = ERROR_INVALID_PARAMETER;
    return FALSE;
}

static void trim_heap(wh_heap *h) {
    bool ser = !(h->flags & HEAP_NO_SERIALIZE);
    lock_if(h, ser);
    wh_backend_trim(h);
    unlock_if(h, ser);
}

/* wh_heap_for_each holds the lock already.  (HEAP_NO_SERIALIZE heaps are
 * not trimmed by a process-wide request: another thread may be inside.) */
static void trim_locked(wh_heap *h) { wh_backend_trim(h); }

WINHEAP_API BOOL WINAPI HeapSetInformation(HANDLE HeapHandle, HEAP_INFORMATION_CLASS HeapInformationClass,
                                           PVOID HeapInformation, SIZE_T HeapInformationLength) {
    wh_heap *h = NULL;
    if (HeapHandle && !(h = heap_of(HeapHandle))) return FALSE;
    switch (HeapInformationClass) {
    case HeapCompatibilityInformation:
        if (!h) {
            last_error = ERROR_INVALID_HANDLE;
            return FALSE;
        }
        return set_compat(h, HeapInformation, HeapInformationLength);
    case HeapEnableTerminationOnCorruption:
        wh_options_enable_toc();
        return TRUE;
    case HeapOptimizeResources: {
        HEAP_OPTIMIZE_RESOURCES_INFORMATION info;
        if (!HeapInformation || HeapInformationLength < sizeof info) {
            last_error = ERROR_INVALID_PARAMETER;
            return FALSE;
        }
        memcpy(&info, HeapInformation, sizeof info);
        if (info.Version != HEAP_OPTIMIZE_RESOURCES_CURRENT_VERSION) {
            last_error = ERROR_INVALID_PARAMETER;
            return FALSE;
        }
        if (h)
            trim_heap(h);
        else
            wh_heap_for_each(trim_locked);
        return TRUE;
    }
    default:
        last_error = ERROR_INVALID_PARAMETER;
        return FALSE;
    }
}
