// The preload library's start and end: the runtime starts before main()
// (so that an invalid configuration stops the program there), and the exit
// report is written when the program ends.  Nothing is torn down: memory
// stays valid for destructors and atexit handlers that run after ours.
#include "api/runtime.h"

namespace {

__attribute__((constructor(101))) void mmtier_preload_start() { mmtier::detail::runtime_start(); }
__attribute__((destructor(101))) void mmtier_preload_end() { mmtier::detail::runtime_exit_report(); }

}  // namespace
