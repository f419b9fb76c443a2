// Shared by the interposition forwarders in preload/.
#pragma once

#include <cstddef>

#define MMTIER_EXPORT __attribute__((visibility("default")))

namespace mmtier::detail {
void *slow_malloc(size_t size, size_t align);
void slow_free(void *p);
__attribute__((noinline)) void *small_miss(size_t size);
}  // namespace mmtier::detail
