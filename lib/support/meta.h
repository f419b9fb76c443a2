// Metadata memory: zero-filled, lazily committed regions taken straight from
// the kernel, so that mmtier's own bookkeeping never goes through malloc.
#pragma once

#include <cstddef>

namespace mmtier::detail {

// Returns a zeroed, page-aligned region of at least bytes, or nullptr.
// Untouched pages cost nothing (MAP_NORESERVE).
void *meta_map(size_t bytes);

}  // namespace mmtier::detail
