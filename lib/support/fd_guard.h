// Descriptors mmtier cannot lose while the process runs (the userfaultfd,
// the PMem tier's file, pagemap): the interposed close, close_range and
// closefrom leave them open, as if they were not the application's to close
// (which they are not).  A daemon that closes "every descriptor above 2"
// would otherwise stop the fault service or cut the PMem tier off.
#pragma once

namespace mmtier::detail {

void fd_guard(int fd);
void fd_unguard(int fd);
bool fd_guarded(int fd);
// The guarded descriptors, ascending; returns how many (at most cap).
int fd_guard_list(int *out, int cap);

}  // namespace mmtier::detail
