// Interposed C++ operator new and delete in every form.  Throwing is left to
// the program's own C++ runtime (found with dlsym), so this library needs no
// C++ runtime of its own and std::set_new_handler keeps working.
#include "alloc/engine.h"
#include "alloc/small.h"
#include "api/runtime.h"
#include "heap/heap.h"
#include "preload/preload.h"

#include <dlfcn.h>

#include <cstdlib>
#include <new>

using namespace mmtier::detail;

namespace {

using handler_fn = void (*)();
using get_handler_fn = handler_fn (*)();
using throw_fn = void (*)();

[[noreturn]] void throw_bad_alloc() {
  static throw_fn fn = reinterpret_cast<throw_fn>(dlsym(RTLD_DEFAULT, "_ZSt17__throw_bad_allocv"));
  if (fn) fn();
  abort();
}

handler_fn current_new_handler() {
  static get_handler_fn fn =
      reinterpret_cast<get_handler_fn>(dlsym(RTLD_DEFAULT, "_ZSt15get_new_handlerv"));
  return fn ? fn() : nullptr;
}

inline void *try_new(size_t size, size_t align) {
  if (__builtin_expect(size <= kSmallMax && align <= 16, 1)) {
    if (void *p = small_alloc_fast(size)) return p;
    if (void *p = small_alloc_slow(size)) {
      heap_maybe_start();  // as in malloc
      return p;
    }
  }
  if (__builtin_expect(runtime_ready() && align <= 16, 1)) {
    void *p = mmtier_je_malloc(size);
    heap_maybe_start();
    if (__builtin_expect(p != nullptr, 1)) return p;
  }
  return slow_malloc(size, align);
}

void *new_impl(size_t size, size_t align, bool nothrow) {
  for (;;) {
    void *p = try_new(size, align);
    if (__builtin_expect(p != nullptr, 1)) return p;
    handler_fn h = current_new_handler();
    if (!h) {
      if (nothrow) return nullptr;
      throw_bad_alloc();
    }
    h();
  }
}

inline void delete_impl(void *p) {
  if (__builtin_expect(heap_small_contains(p), 1)) small_free(p);
  else if (__builtin_expect(heap_contains(p), 1)) mmtier_je_free(p);
  else slow_free(p);
}

inline void sized_delete(void *p, size_t size, size_t align) {
  if (__builtin_expect(heap_small_contains(p), 1))
    small_free(p);
  else if (__builtin_expect(heap_contains(p), 1))
    mmtier_je_sdallocx(p, size, align > 16 ? je_align_flag(align) : 0);
  else
    slow_free(p);
}

}  // namespace

MMTIER_EXPORT void *operator new(size_t n) { return new_impl(n, 16, false); }
MMTIER_EXPORT void *operator new[](size_t n) { return new_impl(n, 16, false); }
MMTIER_EXPORT void *operator new(size_t n, const std::nothrow_t &) noexcept { return new_impl(n, 16, true); }
MMTIER_EXPORT void *operator new[](size_t n, const std::nothrow_t &) noexcept { return new_impl(n, 16, true); }
MMTIER_EXPORT void *operator new(size_t n, std::align_val_t a) { return new_impl(n, static_cast<size_t>(a), false); }
MMTIER_EXPORT void *operator new[](size_t n, std::align_val_t a) { return new_impl(n, static_cast<size_t>(a), false); }
MMTIER_EXPORT void *operator new(size_t n, std::align_val_t a, const std::nothrow_t &) noexcept {
  return new_impl(n, static_cast<size_t>(a), true);
}
MMTIER_EXPORT void *operator new[](size_t n, std::align_val_t a, const std::nothrow_t &) noexcept {
  return new_impl(n, static_cast<size_t>(a), true);
}

MMTIER_EXPORT void operator delete(void *p) noexcept { delete_impl(p); }
MMTIER_EXPORT void operator delete[](void *p) noexcept { delete_impl(p); }
MMTIER_EXPORT void operator delete(void *p, const std::nothrow_t &) noexcept { delete_impl(p); }
MMTIER_EXPORT void operator delete[](void *p, const std::nothrow_t &) noexcept { delete_impl(p); }
MMTIER_EXPORT void operator delete(void *p, size_t n) noexcept { sized_delete(p, n, 16); }
MMTIER_EXPORT void operator delete[](void *p, size_t n) noexcept { sized_delete(p, n, 16); }
MMTIER_EXPORT void operator delete(void *p, std::align_val_t) noexcept { delete_impl(p); }
MMTIER_EXPORT void operator delete[](void *p, std::align_val_t) noexcept { delete_impl(p); }
MMTIER_EXPORT void operator delete(void *p, size_t n, std::align_val_t a) noexcept {
  sized_delete(p, n, static_cast<size_t>(a));
}
MMTIER_EXPORT void operator delete[](void *p, size_t n, std::align_val_t a) noexcept {
  sized_delete(p, n, static_cast<size_t>(a));
}
MMTIER_EXPORT void operator delete(void *p, std::align_val_t, const std::nothrow_t &) noexcept { delete_impl(p); }
MMTIER_EXPORT void operator delete[](void *p, std::align_val_t, const std::nothrow_t &) noexcept { delete_impl(p); }
