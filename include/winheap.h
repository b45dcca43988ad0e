/*
 * winheap.h - the Win32 heap API on Linux.
 *
 * Declares the Win32 types, constants, structures and heap functions with
 * their Windows names and signatures (SPEC D1), plus a few documented
 * winheap_* extensions.  Native C calling convention; 64-bit Linux first.
 *
 * The basic Win32 types are guarded so that this header can be included by a
 * program that already defines them (define WINHEAP_HAVE_WIN32_TYPES before
 * including it, or include it after a header that defines _WINDEF_).
 */
#ifndef WINHEAP_H
#define WINHEAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define WINHEAP_API __attribute__((visibility("default")))
#else
#define WINHEAP_API
#endif

#ifndef WINAPI
#define WINAPI
#endif

/* ---- basic Win32 types (SPEC 1.1) ---- */
#if !defined(WINHEAP_HAVE_WIN32_TYPES) && !defined(_WINDEF_) && !defined(_MINWINDEF_)
#define WINHEAP_HAVE_WIN32_TYPES 1
typedef uint32_t DWORD;
typedef uint32_t ULONG;
typedef uint16_t WORD;
typedef uint8_t BYTE;
typedef int32_t BOOL;
typedef size_t SIZE_T;
typedef SIZE_T *PSIZE_T;
typedef void *HANDLE;
typedef HANDLE *PHANDLE;
typedef void *LPVOID;
typedef void *PVOID;
typedef const void *LPCVOID;
#endif
#ifndef TRUE
#define TRUE 1
#endif
#ifndef FALSE
#define FALSE 0
#endif

/* ---- HEAP_* flags (SPEC 4.6) ---- */
#define HEAP_NO_SERIALIZE 0x00000001
#define HEAP_GROWABLE 0x00000002
#define HEAP_GENERATE_EXCEPTIONS 0x00000004
#define HEAP_ZERO_MEMORY 0x00000008
#define HEAP_REALLOC_IN_PLACE_ONLY 0x00000010
#define HEAP_TAIL_CHECKING_ENABLED 0x00000020
#define HEAP_FREE_CHECKING_ENABLED 0x00000040
#define HEAP_DISABLE_COALESCE_ON_FREE 0x00000080
#define HEAP_CREATE_SEGMENT_HEAP 0x00000100
#define HEAP_CREATE_HARDENED 0x00000200
#define HEAP_CREATE_ALIGN_16 0x00010000
#define HEAP_CREATE_ENABLE_TRACING 0x00020000
#define HEAP_CREATE_ENABLE_EXECUTE 0x00040000
#define HEAP_MAXIMUM_TAG 0x0FFF
#define HEAP_PSEUDO_TAG_FLAG 0x8000
#define HEAP_TAG_SHIFT 18
#ifndef MEMORY_ALLOCATION_ALIGNMENT
#define MEMORY_ALLOCATION_ALIGNMENT 16
#endif

/* ---- PROCESS_HEAP_ENTRY (SPEC 4.1, 4.2) ---- */
#define PROCESS_HEAP_REGION 0x0001
#define PROCESS_HEAP_UNCOMMITTED_RANGE 0x0002
#define PROCESS_HEAP_ENTRY_BUSY 0x0004
#define PROCESS_HEAP_SEG_ALLOC 0x0008
#define PROCESS_HEAP_ENTRY_MOVEABLE 0x0010
#define PROCESS_HEAP_ENTRY_DDESHARE 0x0020

typedef struct _PROCESS_HEAP_ENTRY {
    PVOID lpData;
    DWORD cbData;
    BYTE cbOverhead;
    BYTE iRegionIndex;
    WORD wFlags;
    union {
        struct {
            HANDLE hMem;
            DWORD dwReserved[3];
        } Block;
        struct {
            DWORD dwCommittedSize;
            DWORD dwUnCommittedSize;
            LPVOID lpFirstBlock;
            LPVOID lpLastBlock;
        } Region;
    };
} PROCESS_HEAP_ENTRY, *LPPROCESS_HEAP_ENTRY, *PPROCESS_HEAP_ENTRY;

/* ---- HEAP_SUMMARY (SPEC 4.3) ---- */
typedef struct _HEAP_SUMMARY {
    DWORD cb;
    SIZE_T cbAllocated;
    SIZE_T cbCommitted;
    SIZE_T cbReserved;
    SIZE_T cbMaxReserve;
} HEAP_SUMMARY, *PHEAP_SUMMARY, *LPHEAP_SUMMARY;

/* ---- heap information (SPEC 4.4, 4.5) ---- */
typedef enum _HEAP_INFORMATION_CLASS {
    HeapCompatibilityInformation = 0,
    HeapEnableTerminationOnCorruption = 1,
    HeapOptimizeResources = 3,
    HeapTag = 7
} HEAP_INFORMATION_CLASS;

#define HEAP_OPTIMIZE_RESOURCES_CURRENT_VERSION 1
typedef struct _HEAP_OPTIMIZE_RESOURCES_INFORMATION {
    DWORD Version;
    DWORD Flags;
} HEAP_OPTIMIZE_RESOURCES_INFORMATION, *PHEAP_OPTIMIZE_RESOURCES_INFORMATION;

/* ---- error codes (SPEC 4.7) ---- */
#ifndef ERROR_SUCCESS
#define ERROR_SUCCESS 0
#endif
#ifndef NO_ERROR
#define NO_ERROR 0
#endif
#define ERROR_INVALID_HANDLE 6
#define ERROR_NOT_ENOUGH_MEMORY 8
#define ERROR_OUTOFMEMORY 14
#define ERROR_GEN_FAILURE 31
#define ERROR_INVALID_PARAMETER 87
#define ERROR_INSUFFICIENT_BUFFER 122
#define ERROR_NO_MORE_ITEMS 259
#define ERROR_NOT_OWNER 288
#define ERROR_NOACCESS 998

/* ---- NTSTATUS codes (SPEC 4.8) ---- */
#define STATUS_ACCESS_VIOLATION ((DWORD)0xC0000005)
#define STATUS_NO_MEMORY ((DWORD)0xC0000017)
#define STATUS_HEAP_CORRUPTION ((DWORD)0xC0000374)
#define STATUS_INVALID_PARAMETER ((DWORD)0xC000000D)
#define STATUS_INVALID_HANDLE ((DWORD)0xC0000008)

/* ---- the Win32 functions ---- */
WINHEAP_API HANDLE WINAPI GetProcessHeap(void);
WINHEAP_API DWORD WINAPI GetProcessHeaps(DWORD NumberOfHeaps, PHANDLE ProcessHeaps);
WINHEAP_API HANDLE WINAPI HeapCreate(DWORD flOptions, SIZE_T dwInitialSize, SIZE_T dwMaximumSize);
WINHEAP_API BOOL WINAPI HeapDestroy(HANDLE hHeap);
WINHEAP_API LPVOID WINAPI HeapAlloc(HANDLE hHeap, DWORD dwFlags, SIZE_T dwBytes);
WINHEAP_API LPVOID WINAPI HeapReAlloc(HANDLE hHeap, DWORD dwFlags, LPVOID lpMem, SIZE_T dwBytes);
WINHEAP_API BOOL WINAPI HeapFree(HANDLE hHeap, DWORD dwFlags, LPVOID lpMem);
WINHEAP_API SIZE_T WINAPI HeapSize(HANDLE hHeap, DWORD dwFlags, LPCVOID lpMem);
WINHEAP_API BOOL WINAPI HeapValidate(HANDLE hHeap, DWORD dwFlags, LPCVOID lpMem);
WINHEAP_API SIZE_T WINAPI HeapCompact(HANDLE hHeap, DWORD dwFlags);
WINHEAP_API BOOL WINAPI HeapLock(HANDLE hHeap);
WINHEAP_API BOOL WINAPI HeapUnlock(HANDLE hHeap);
WINHEAP_API BOOL WINAPI HeapWalk(HANDLE hHeap, LPPROCESS_HEAP_ENTRY lpEntry);
WINHEAP_API BOOL WINAPI HeapSummary(HANDLE hHeap, DWORD dwFlags, LPHEAP_SUMMARY lpSummary);
WINHEAP_API BOOL WINAPI HeapQueryInformation(HANDLE HeapHandle, HEAP_INFORMATION_CLASS HeapInformationClass,
                                             PVOID HeapInformation, SIZE_T HeapInformationLength,
                                             PSIZE_T ReturnLength);
WINHEAP_API BOOL WINAPI HeapSetInformation(HANDLE HeapHandle, HEAP_INFORMATION_CLASS HeapInformationClass,
                                           PVOID HeapInformation, SIZE_T HeapInformationLength);
WINHEAP_API DWORD WINAPI GetLastError(void);
WINHEAP_API void WINAPI SetLastError(DWORD dwErrCode);

/* ---- winheap extensions ---- */

/*
 * HEAP_GENERATE_EXCEPTIONS (SPEC D6).  When a HeapAlloc/HeapReAlloc call
 * with exceptions in effect fails, the handler is called with the NTSTATUS
 * (STATUS_NO_MEMORY, or STATUS_ACCESS_VIOLATION for corruption), the heap,
 * the call's effective flags and the requested size.  The heap is consistent
 * and unlocked when the handler runs, so it may leave with longjmp or
 * siglongjmp, as an __except block would.  If no handler is set, or the
 * handler returns, the exception is unhandled: one line on stderr naming the
 * status, then abort().  Returns the previous handler.  Process-wide.
 */
typedef void (*winheap_exception_handler)(DWORD status, HANDLE heap, DWORD flags, SIZE_T size);
WINHEAP_API winheap_exception_handler winheap_set_exception_handler(winheap_exception_handler handler);

/*
 * HeapAlloc with a stronger alignment: the block starts at a multiple of
 * `alignment` (a power of two; 16 or less is a plain HeapAlloc).  It is an
 * ordinary block of the heap: HeapSize, HeapReAlloc (which keeps only the
 * 16-byte alignment), HeapFree, HeapWalk and HeapDestroy treat it as any
 * other.  Flags as HeapAlloc.  NULL with ERROR_INVALID_PARAMETER if the
 * alignment is not a power of two, ERROR_NOT_ENOUGH_MEMORY if it cannot be
 * served (fixed heaps refuse what does not fit below 0xFE000 with padding).
 */
WINHEAP_API LPVOID winheap_aligned_alloc(HANDLE hHeap, DWORD dwFlags, SIZE_T alignment, SIZE_T dwBytes);

/* The library's version string, e.g. "0.1.0". */
WINHEAP_API const char *winheap_version(void);

/* Large-block threshold of growable heaps (SPEC 5, D9): requests of this
 * many bytes or more get a mapping of their own. */
#define WINHEAP_LARGE_THRESHOLD ((SIZE_T)0xFF000)
/* Fixed heaps refuse requests of this many bytes or more (SPEC D7). */
#define WINHEAP_FIXED_LIMIT ((SIZE_T)0xFE000)

#ifdef __cplusplus
}
#endif

#endif /* WINHEAP_H */
