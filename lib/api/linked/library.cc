// libmmtier_api.so: the explicit API for programs that link against mmtier
// and keep their own malloc.  Everything it needs is in the core (linked
// whole), including the runtime's start at load and the exit report
// (lib/api/runtime.cc); this file only asks for the background mover.
#include "api/runtime.h"

namespace {
__attribute__((constructor(101))) void want_background() { mmtier::detail::runtime_want_background(); }
}  // namespace
