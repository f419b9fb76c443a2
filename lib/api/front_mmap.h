// The front-end of the interposed anonymous-memory calls: mmap, munmap,
// mremap, madvise and mprotect (preload/mmap.cc forwards to these).
// Anonymous private mappings of at least MMTIER_MMAP_THRESHOLD bytes are
// managed (placed on tiers inside the heap's reservation); file mappings,
// shared mappings, stacks, huge-page, locked and executable mappings pass
// through untouched.  Calls on addresses inside the reservation are
// carried out by the heap (heap/mappings.cc), so that managed memory
// behaves exactly as anonymous memory does; the rest goes to the kernel.
// (The allocator engine's own calls never come here: lib/alloc/engine_os.cc.)
// Each returns what libc's would, with errno set on failure.
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace mmtier::detail {

void *front_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int front_munmap(void *addr, size_t len);
int front_mprotect(void *addr, size_t len, int prot);
int front_madvise(void *addr, size_t len, int advice);
// new_addr: only with MREMAP_FIXED.
void *front_mremap(void *old, size_t old_len, size_t new_len, int flags, void *new_addr);

}  // namespace mmtier::detail
