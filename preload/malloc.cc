// The malloc family: forwarders to the allocation front-end
// (lib/api/front.h), whose fast paths are inline here.
#include "api/front.h"
#include "preload/preload.h"

using namespace mmtier::detail;

extern "C" {

MMTIER_EXPORT void *malloc(size_t size) { return front_malloc(size); }
MMTIER_EXPORT void free(void *p) { front_free(p); }
MMTIER_EXPORT void *calloc(size_t n, size_t size) { return front_calloc(n, size); }
MMTIER_EXPORT void *realloc(void *p, size_t size) { return front_realloc(p, size); }
MMTIER_EXPORT void *reallocarray(void *p, size_t n, size_t size) { return front_reallocarray(p, n, size); }
MMTIER_EXPORT int posix_memalign(void **out, size_t align, size_t size) { return front_posix_memalign(out, align, size); }
MMTIER_EXPORT void *aligned_alloc(size_t align, size_t size) { return front_aligned_alloc(align, size); }
MMTIER_EXPORT void *memalign(size_t align, size_t size) { return front_memalign(align, size); }
MMTIER_EXPORT void *valloc(size_t size) { return front_valloc(size); }
MMTIER_EXPORT void *pvalloc(size_t size) { return front_pvalloc(size); }
MMTIER_EXPORT size_t malloc_usable_size(void *p) { return front_usable_size(p); }

MMTIER_EXPORT void *__libc_malloc(size_t size) { return front_malloc(size); }
MMTIER_EXPORT void __libc_free(void *p) { front_free(p); }
MMTIER_EXPORT void *__libc_calloc(size_t n, size_t size) { return front_calloc(n, size); }
MMTIER_EXPORT void *__libc_realloc(void *p, size_t size) { return front_realloc(p, size); }
MMTIER_EXPORT void *__libc_memalign(size_t align, size_t size) { return front_memalign(align, size); }
MMTIER_EXPORT void *__libc_valloc(size_t size) { return front_valloc(size); }
MMTIER_EXPORT void *__libc_pvalloc(size_t size) { return front_pvalloc(size); }

}  // extern "C"
