/*
 * overflow.c - a program with two heap bugs, for trying the debug heap:
 *   WINHEAP_DEBUG=tail,free build/winheap-overflow
 * It writes one byte past a 13-byte block and one byte into a freed block,
 * asks HeapValidate about both, then frees the overflowed block, which the
 * debug heap reports as corruption (termination on corruption is on by
 * default, as on 64-bit Windows).
 */
#include <stdio.h>

#include <winheap.h>

int main(void) {
    HANDLE h = HeapCreate(0, 0, 0);
    unsigned char *p = HeapAlloc(h, 0, 13);
    unsigned char *q = HeapAlloc(h, 0, 64);
    printf("HeapValidate(h, 0, p) of a fresh block: %s\n", HeapValidate(h, 0, p) ? "TRUE" : "FALSE");
    p[13] = 0; /* one byte too far */
    printf("after p[13] = 0: HeapValidate(h, 0, p) = %s\n", HeapValidate(h, 0, p) ? "TRUE" : "FALSE");
    HeapFree(h, 0, q);
    q[40] ^= 1; /* write after free */
    printf("after a write into a freed block: HeapValidate(h, 0, NULL) = %s\n",
           HeapValidate(h, 0, NULL) ? "TRUE" : "FALSE");
    q[40] ^= 1;
    printf("freeing the overflowed block...\n");
    fflush(stdout);
    HeapFree(h, 0, p);
    printf("not reached with WINHEAP_DEBUG=tail\n");
    return 0;
}
