/*
 * options.c - the runtime options, read once from the environment.
 *
 * Every WINHEAP_* variable is read here and nowhere else, at the first call
 * into winheap (pthread_once), so that a program may still set them in main()
 * before it first uses a heap.  Termination on corruption (SPEC D5) is on by
 * default; WINHEAP_TERMINATE_ON_CORRUPTION=0 turns the process default off,
 * and HeapSetInformation(NULL, HeapEnableTerminationOnCorruption, NULL, 0)
 * turns it on for good.  WINHEAP_DEBUG=tail,free,validate,guard (or all)
 * turns on the debug heap of D18 (debug.c).  WINHEAP_SEED=<decimal> fixes the random stream
 * (header keys, LFH slot order) for reproducible runs.  WINHEAP_HUGEPAGES=0
 * stops the transparent-huge-page advice on large blocks (large.c).
 * WINHEAP_ZERO_ON_FREE=0 stops the zeroing of freed blocks and the
 * write-after-free checks on their reuse (lfh.h, backend.c): the price of
 * RELIABILITY rows 11 and 13, for programs that want the speed instead.
 */
#include "internal.h"

static wh_options opts;
static pthread_once_t opts_once = PTHREAD_ONCE_INIT;
static _Atomic int toc_forced; /* set by HeapSetInformation; never cleared */
/* True until the environment says otherwise: a block zeroed before the
 * options are read is valid either way. */
bool wh_zero_mode = true;

static void options_read(void) {
    opts.terminate_on_corruption = true;
    const char *v = wh_prim_getenv("WINHEAP_TERMINATE_ON_CORRUPTION");
    if (v && v[0] == '0' && v[1] == 0) opts.terminate_on_corruption = false;
    v = wh_prim_getenv("WINHEAP_DEBUG");
    while (v && *v) {
        static const struct { const char *name; unsigned bit; } names[] = {
            { "tail", WH_DBG_TAIL }, { "free", WH_DBG_FREE }, { "validate", WH_DBG_VALIDATE },
            { "guard", WH_DBG_GUARD }, { "all", WH_DBG_TAIL | WH_DBG_FREE | WH_DBG_VALIDATE | WH_DBG_GUARD },
        };
        size_t n = 0;
        while (v[n] && v[n] != ',') n++;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strlen(names[i].name) == n && memcmp(names[i].name, v, n) == 0) opts.debug |= names[i].bit;
        v += n;
        if (*v == ',') v++;
    }
    wh_debug_mode = opts.debug;
    opts.hugepages = true;
    v = wh_prim_getenv("WINHEAP_HUGEPAGES");
    if (v && v[0] == '0' && v[1] == 0) opts.hugepages = false;
    v = wh_prim_getenv("WINHEAP_ZERO_ON_FREE");
    if (v && v[0] == '0' && v[1] == 0) wh_zero_mode = false;
    v = wh_prim_getenv("WINHEAP_SEED");
    if (v && *v) {
        uint64_t s = 0;
        for (; *v >= '0' && *v <= '9'; v++) s = s * 10 + (uint64_t)(*v - '0');
        opts.seeded = true;
        opts.seed = s;
    }
}

const wh_options *wh_options_get(void) {
    pthread_once(&opts_once, options_read);
    return &opts;
}

bool wh_options_toc(void) {
    if (atomic_load_explicit(&toc_forced, memory_order_relaxed)) return true;
    return wh_options_get()->terminate_on_corruption;
}

void wh_options_enable_toc(void) {
    wh_options_get();
    atomic_store(&toc_forced, 1);
}
