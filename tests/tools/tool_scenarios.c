/*
 * tool_scenarios.c - the mistakes that Valgrind's memcheck and
 * AddressSanitizer must report inside winheap blocks (RELIABILITY row 30).
 *
 * `tool_scenarios <case> <heap>` makes one mistake and exits 0; the driver
 * (tools_valgrind.sh, tools_asan.sh) runs it under the tool and checks that
 * the tool reported it at the faulty line.  <heap> is "process" or "private".
 * Cases: overflow, uaf, uninit, double, leak, destroy (a private heap
 * destroyed with live blocks: no report), realloc (in-place and moving
 * reallocs of valid blocks: no report), clean (no mistake: no report).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <winheap.h>

static volatile char sink;

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *c = argv[1];
    HANDLE h = strcmp(argv[2], "private") == 0 ? HeapCreate(0, 0, 0) : GetProcessHeap();
    /* small (LFH on the process heap), back-end and large sizes */
    size_t sizes[] = { 24, 3000, 2u << 20 };
    for (int i = 0; i < 3; i++) {
        size_t n = sizes[i];
        char *p = HeapAlloc(h, 0, n);
        if (!p) return 3;
        if (!strcmp(c, "overflow")) {
            p[n] = 1; /* TOOL-LINE overflow */
        } else if (!strcmp(c, "uaf")) {
            HeapFree(h, 0, p);
            sink = p[n / 2]; /* TOOL-LINE uaf */
            continue;
        } else if (!strcmp(c, "uninit")) {
            if (p[n - 1] == 42) puts("forty-two"); /* TOOL-LINE uninit */
        } else if (!strcmp(c, "double")) {
            HeapFree(h, 0, p);
            HeapFree(h, 0, p); /* TOOL-LINE double */
            continue;
        } else if (!strcmp(c, "leak")) {
            p = NULL; /* the block is lost */
            continue;
        } else if (!strcmp(c, "realloc")) {
            memset(p, 7, n);
            p = HeapReAlloc(h, 0, p, n / 2);  /* in place */
            p = HeapReAlloc(h, 0, p, n * 3);  /* grows, may move */
            if (!p || p[n / 2 - 1] != 7) return 4;
            memset(p, 1, n * 3);
        }
        if (strcmp(c, "destroy") == 0) {
            memset(p, 1, n);
            continue; /* left live on purpose */
        }
        HeapFree(h, 0, p);
    }
    if (!strcmp(c, "destroy") && h != GetProcessHeap()) HeapDestroy(h);
    return 0;
}
