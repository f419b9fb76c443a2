// Descriptors mmtier cannot lose while the process runs (the userfaultfd,
// the PMem tier's file, pagemap): the interposed close, close_range and
// closefrom leave them open, as if they were not the application's to close
// (which they are not).  A daemon that closes "every descriptor above 2"
// would otherwise stop the fault service or cut the PMem tier off.
#pragma once

namespace mmtier::detail {

// Guards fd and returns the descriptor to use from now on: fd itself, or a
// duplicate at 64 or above (close-on-exec; fd is closed) when fd was lower.
// A library descriptor must not sit where the application expects its own
// (0-2 when the program started with them closed, or the low numbers
// shells and daemons dup2 onto, which would close it silently).  Returns
// -EMFILE, leaving fd open and unguarded, when the table is full.
[[nodiscard]] int fd_guard(int fd);
void fd_unguard(int fd);
bool fd_guarded(int fd);
// The guarded descriptors, ascending; returns how many (at most cap).
int fd_guard_list(int *out, int cap);
// In a process restored from a snapshot, where none of them exists: guards
// nothing any more (closes nothing: the numbers may be the program's).
void fd_guard_forget_all();

}  // namespace mmtier::detail
