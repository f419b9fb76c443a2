// Metadata memory straight from the kernel (see meta.h).
#include "support/meta.h"

#include "platform/sys.h"

#include <sys/mman.h>

namespace mmtier::detail {

void *meta_map(size_t bytes) {
  bytes = (bytes + 4095) & ~size_t{4095};
  long r = sys::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return sys::failed(r) ? nullptr : reinterpret_cast<void *>(r);
}

}  // namespace mmtier::detail
