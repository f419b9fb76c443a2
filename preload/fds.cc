// close, close_range and closefrom: forwarders (lib/api/front_fds.h).
#include "api/front_fds.h"
#include "preload/preload.h"

using namespace mmtier::detail;

extern "C" {
MMTIER_EXPORT int close(int fd) { return front_close(fd); }
MMTIER_EXPORT int close_range(unsigned first, unsigned last, int flags) { return front_close_range(first, last, flags); }
MMTIER_EXPORT void closefrom(int lowfd) { front_closefrom(lowfd); }
}  // extern "C"
