// C++ operator new in every form (see front.h): the allocation is the
// front's; throwing is left to the program's own C++ runtime (found with
// dlsym), so this library needs no C++ runtime of its own and
// std::set_new_handler keeps working.
#include "api/front.h"

#include <dlfcn.h>

#include <atomic>
#include <cstdlib>

namespace mmtier::detail {

namespace {

using handler_fn = void (*)();
using get_handler_fn = handler_fn (*)();
using throw_fn = void (*)();

// Found on first use.  Namespace-scope atomics, not function-local statics:
// those need guard functions, which would pull the C++ exception runtime
// and its start-up allocation into the library.
std::atomic<throw_fn> g_throw{nullptr};
std::atomic<get_handler_fn> g_get_handler{nullptr};

[[noreturn]] void throw_bad_alloc() {
  throw_fn fn = g_throw.load(std::memory_order_acquire);
  if (!fn) {
    fn = reinterpret_cast<throw_fn>(dlsym(RTLD_DEFAULT, "_ZSt17__throw_bad_allocv"));
    g_throw.store(fn, std::memory_order_release);
  }
  if (fn) fn();
  abort();
}

handler_fn current_new_handler() {
  get_handler_fn fn = g_get_handler.load(std::memory_order_acquire);
  if (!fn) {
    fn = reinterpret_cast<get_handler_fn>(dlsym(RTLD_DEFAULT, "_ZSt15get_new_handlerv"));
    g_get_handler.store(fn, std::memory_order_release);
  }
  return fn ? fn() : nullptr;
}

}  // namespace

void *front_new_slow(size_t size, size_t align, bool nothrow) {
  for (;;) {
    void *p = align <= 16 ? front_malloc(size) : front_malloc_slow(size, align);
    if (__builtin_expect(p != nullptr, 1)) return p;
    handler_fn h = current_new_handler();
    if (!h) {
      if (nothrow) return nullptr;
      throw_bad_alloc();
    }
    h();
  }
}

}  // namespace mmtier::detail
