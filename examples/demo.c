/*
 * demo.c - the main job of the quick start: a tour of winheap.
 *
 * Creates a growable heap and a fixed 256 KiB heap, allocates, reallocates
 * and frees blocks of several sizes (one of them a large block with a mapping
 * of its own), walks both heaps with HeapWalk, prints their HeapSummary, and
 * shows what the API answers for a few mistakes.  Everything it prints comes
 * from the API; run it to see what a heap looks like inside.
 */
#include <stdio.h>
#include <string.h>

#include <winheap.h>

static const char *kind(const PROCESS_HEAP_ENTRY *e) {
    if (e->wFlags & PROCESS_HEAP_REGION) return "region";
    if (e->wFlags & PROCESS_HEAP_UNCOMMITTED_RANGE) return "uncommitted";
    if (e->wFlags & PROCESS_HEAP_ENTRY_BUSY) return e->iRegionIndex == 64 ? "busy (large)" : "busy";
    return "free";
}

static void walk(HANDLE h, const char *name) {
    PROCESS_HEAP_ENTRY e;
    memset(&e, 0, sizeof e);
    printf("\n  HeapWalk of %s:\n", name);
    printf("    %-14s %-18s %12s %9s %7s\n", "element", "address", "bytes", "overhead", "region");
    int n = 0;
    HeapLock(h);
    while (HeapWalk(h, &e)) {
        printf("    %-14s %-18p %12lu %9u %7u", kind(&e), e.lpData, (unsigned long)e.cbData, e.cbOverhead,
               e.iRegionIndex);
        if (e.wFlags & PROCESS_HEAP_REGION)
            printf("   committed %lu, uncommitted %lu", (unsigned long)e.Region.dwCommittedSize,
                   (unsigned long)e.Region.dwUnCommittedSize);
        printf("\n");
        n++;
    }
    DWORD err = GetLastError();
    HeapUnlock(h);
    printf("    (%d elements; the walk ended with error %lu%s)\n", n, (unsigned long)err,
           err == ERROR_NO_MORE_ITEMS ? " = ERROR_NO_MORE_ITEMS, the normal end" : "");
}

static void summary(HANDLE h, const char *name) {
    HEAP_SUMMARY s = { .cb = sizeof s };
    if (!HeapSummary(h, 0, &s)) {
        printf("  HeapSummary(%s) failed: %lu\n", name, (unsigned long)GetLastError());
        return;
    }
    printf("\n  HeapSummary of %s: allocated %lu, committed %lu, reserved %lu, max reserve %lu bytes\n", name,
           (unsigned long)s.cbAllocated, (unsigned long)s.cbCommitted, (unsigned long)s.cbReserved,
           (unsigned long)s.cbMaxReserve);
}

int main(void) {
    printf("winheap %s demo: the Win32 heap API on Linux\n", winheap_version());

    /* A growable heap: max 0. */
    HANDLE g = HeapCreate(0, 0, 0);
    printf("\n1. HeapCreate(0, 0, 0) -> growable heap %p (64 KiB aligned: %s)\n", g,
           ((size_t)g & 0xFFFF) == 0 ? "yes" : "no");
    char *a = HeapAlloc(g, 0, 100);
    char *b = HeapAlloc(g, HEAP_ZERO_MEMORY, 5000);
    char *big = HeapAlloc(g, 0, 3u << 20);
    void *zero = HeapAlloc(g, 0, 0);
    strcpy(a, "hello from a winheap block");
    printf("   HeapAlloc 100 -> %p, HeapSize %lu, contents \"%s\"\n", (void *)a, (unsigned long)HeapSize(g, 0, a), a);
    printf("   HeapAlloc 5000 zeroed -> %p, HeapSize %lu, first byte %d\n", (void *)b,
           (unsigned long)HeapSize(g, 0, b), b[0]);
    printf("   HeapAlloc 3 MiB -> %p (a large block in a mapping of its own), HeapSize %lu\n", (void *)big,
           (unsigned long)HeapSize(g, 0, big));
    printf("   HeapAlloc 0 -> %p, HeapSize %lu\n", zero, (unsigned long)HeapSize(g, 0, zero));

    char *a2 = HeapReAlloc(g, HEAP_ZERO_MEMORY, a, 300);
    printf("   HeapReAlloc 100 -> 300 bytes: %p (%s), HeapSize %lu, contents kept: \"%s\", byte 299 = %d\n",
           (void *)a2, a2 == a ? "in place" : "moved", (unsigned long)HeapSize(g, 0, a2), a2, a2[299]);
    void *shrunk = HeapReAlloc(g, HEAP_REALLOC_IN_PLACE_ONLY, b, 10);
    printf("   HeapReAlloc 5000 -> 10 bytes in place only: %s, HeapSize %lu\n", shrunk == b ? "same block" : "failed",
           (unsigned long)HeapSize(g, 0, b));
    HeapFree(g, 0, zero);
    walk(g, "the growable heap");
    summary(g, "the growable heap");

    /* A fixed heap: 256 KiB reserved once. */
    HANDLE f = HeapCreate(0, 64 * 1024, 256 * 1024);
    printf("\n2. HeapCreate(0, 64 KiB, 256 KiB) -> fixed heap %p\n", f);
    void *blocks[64];
    int n = 0;
    while (n < 64 && (blocks[n] = HeapAlloc(f, 0, 8000)) != NULL) n++;
    printf("   HeapAlloc 8000 bytes until it failed: %d blocks, then NULL with error %lu (ERROR_NOT_ENOUGH_MEMORY)\n",
           n, (unsigned long)GetLastError());
    for (int i = 0; i < n; i += 2) HeapFree(f, 0, blocks[i]);
    printf("   freed every other block; HeapCompact says the largest free block is %lu bytes\n",
           (unsigned long)HeapCompact(f, 0));
    void *tooBig = HeapAlloc(f, 0, 0xFE000);
    printf("   HeapAlloc 0xFE000 on a fixed heap -> %p (error %lu)\n", tooBig, (unsigned long)GetLastError());
    walk(f, "the fixed heap (first lines)");
    summary(f, "the fixed heap");

    printf("\n3. Mistakes get answers, not crashes:\n");
    int local;
    BOOL ok = HeapFree(g, 0, &local);
    printf("   HeapFree of a stack address -> %s, error %lu (ERROR_INVALID_PARAMETER)\n", ok ? "TRUE" : "FALSE",
           (unsigned long)GetLastError());
    ok = HeapDestroy(GetProcessHeap());
    printf("   HeapDestroy(GetProcessHeap()) -> %s, error %lu (ERROR_INVALID_HANDLE)\n", ok ? "TRUE" : "FALSE",
           (unsigned long)GetLastError());
    printf("   HeapValidate of both heaps -> %s, %s\n", HeapValidate(g, 0, NULL) ? "valid" : "INVALID",
           HeapValidate(f, 0, NULL) ? "valid" : "INVALID");

    DWORD count = GetProcessHeaps(0, NULL);
    printf("\n4. GetProcessHeaps: %lu heaps (the process heap and the two above)\n", (unsigned long)count);
    HeapDestroy(g);
    HeapDestroy(f);
    printf("   after HeapDestroy of both: %lu heap(s); the destroyed handle is now refused: HeapAlloc -> %p, error %lu\n",
           (unsigned long)GetProcessHeaps(0, NULL), HeapAlloc(g, 0, 16), (unsigned long)GetLastError());
    return 0;
}
