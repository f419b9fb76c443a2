// libmmtier_api.so: the explicit API for programs that link against mmtier
// and keep their own malloc.  Starts the runtime when loaded, so that an
// invalid configuration stops the program before main(), and writes the
// exit report if asked.
#include "api/runtime.h"

namespace {

__attribute__((constructor(101))) void mmtier_api_start() { mmtier::detail::runtime_start(); }
__attribute__((destructor)) void mmtier_api_stop() { mmtier::detail::runtime_exit_report(); }

}  // namespace
