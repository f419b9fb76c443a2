// The preload library runs the background mover (promotion and demotion);
// asked for (priority 101) before the runtime starts at load (102,
// lib/api/runtime.cc).
#include "api/runtime.h"

namespace {
__attribute__((constructor(101))) void want_background() { mmtier::detail::runtime_want_background(); }
}  // namespace
