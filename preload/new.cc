// C++ operator new and delete in every form: forwarders to the allocation
// front-end (lib/api/front.h).
#include "api/front.h"
#include "preload/preload.h"

#include <new>

using namespace mmtier::detail;

namespace {
inline size_t al(std::align_val_t a) { return static_cast<size_t>(a); }
}  // namespace

MMTIER_EXPORT void *operator new(size_t n) { return front_new(n, 16, false); }
MMTIER_EXPORT void *operator new[](size_t n) { return front_new(n, 16, false); }
MMTIER_EXPORT void *operator new(size_t n, const std::nothrow_t &) noexcept { return front_new(n, 16, true); }
MMTIER_EXPORT void *operator new[](size_t n, const std::nothrow_t &) noexcept { return front_new(n, 16, true); }
MMTIER_EXPORT void *operator new(size_t n, std::align_val_t a) { return front_new(n, al(a), false); }
MMTIER_EXPORT void *operator new[](size_t n, std::align_val_t a) { return front_new(n, al(a), false); }
MMTIER_EXPORT void *operator new(size_t n, std::align_val_t a, const std::nothrow_t &) noexcept {
  return front_new(n, al(a), true);
}
MMTIER_EXPORT void *operator new[](size_t n, std::align_val_t a, const std::nothrow_t &) noexcept {
  return front_new(n, al(a), true);
}

MMTIER_EXPORT void operator delete(void *p) noexcept { front_free(p); }
MMTIER_EXPORT void operator delete[](void *p) noexcept { front_free(p); }
MMTIER_EXPORT void operator delete(void *p, const std::nothrow_t &) noexcept { front_free(p); }
MMTIER_EXPORT void operator delete[](void *p, const std::nothrow_t &) noexcept { front_free(p); }
MMTIER_EXPORT void operator delete(void *p, size_t n) noexcept { front_sized_free(p, n, 16); }
MMTIER_EXPORT void operator delete[](void *p, size_t n) noexcept { front_sized_free(p, n, 16); }
MMTIER_EXPORT void operator delete(void *p, std::align_val_t) noexcept { front_free(p); }
MMTIER_EXPORT void operator delete[](void *p, std::align_val_t) noexcept { front_free(p); }
MMTIER_EXPORT void operator delete(void *p, size_t n, std::align_val_t a) noexcept { front_sized_free(p, n, al(a)); }
MMTIER_EXPORT void operator delete[](void *p, size_t n, std::align_val_t a) noexcept { front_sized_free(p, n, al(a)); }
MMTIER_EXPORT void operator delete(void *p, std::align_val_t, const std::nothrow_t &) noexcept { front_free(p); }
MMTIER_EXPORT void operator delete[](void *p, std::align_val_t, const std::nothrow_t &) noexcept { front_free(p); }
