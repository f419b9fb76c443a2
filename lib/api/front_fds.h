// The front-end of the interposed close, close_range and closefrom: the
// application's calls close what it asks for except mmtier's own guarded
// descriptors (platform/fd_guard.h), which it never opened.  Each returns
// what libc's would, with errno set on failure.
#pragma once

namespace mmtier::detail {

int front_close(int fd);
int front_close_range(unsigned first, unsigned last, int flags);
void front_closefrom(int lowfd);

}  // namespace mmtier::detail
