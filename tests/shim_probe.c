/*
 * shim_probe.c - does this process allocate from winheap?  Used by
 * shim_programs.sh to prove that LD_PRELOAD=libwinheap-malloc.so takes
 * effect: the probe is an ordinary program that knows nothing of winheap; it
 * copies a string with strdup (libc calls malloc) and looks the Win32
 * functions up at run time.  It prints "interposed" and exits 0 only if they
 * exist and HeapSize(GetProcessHeap(), 0, copy) is the copy's exact size;
 * otherwise it says why and exits 1.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    const char *text = "winheap shim probe";
    char *copy = strdup(text);
    void *(*get_heap)(void) = (void *(*)(void))dlsym(RTLD_DEFAULT, "GetProcessHeap");
    size_t (*heap_size)(void *, unsigned, const void *) =
        (size_t (*)(void *, unsigned, const void *))dlsym(RTLD_DEFAULT, "HeapSize");
    if (!copy || !get_heap || !heap_size) {
        puts("not interposed: no winheap in this process");
        return 1;
    }
    size_t n = heap_size(get_heap(), 0, copy);
    if (n != strlen(text) + 1) {
        printf("not interposed: HeapSize of strdup's block is %zu, not %zu\n", n, strlen(text) + 1);
        return 1;
    }
    free(copy);
    puts("interposed");
    return 0;
}
