// C++ operator new in every form (see front.h): the allocation is the
// front's; throwing is left to the program's own C++ runtime (found with
// dlsym), so this library needs no C++ runtime of its own and
// std::set_new_handler keeps working.
#include "api/front.h"

#include <dlfcn.h>

#include <cstdlib>

namespace mmtier::detail {

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
