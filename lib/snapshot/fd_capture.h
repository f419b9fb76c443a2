// The program's descriptors as a snapshot takes them, in its pause: for
// each, what a restore needs to make it again (capsule_format.h, fd_kind):
// a file's path and offset, a pipe's buffered bytes, an eventfd's count, a
// timer's settings, an epoll set's registrations, a socket's addresses and
// state.  Descriptors that share one open file (dup) are recorded as such.
#pragma once

#include "snapshot/capsule_format.h"

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

struct fd_table {
  const capsule::fd_record *fds;
  uint32_t nfds;
  const char *paths;          // fd_record::path: offset into it
  const unsigned char *data;  // fd_record::detail: offset into it
  uint64_t data_len;
  uintptr_t scratch_lo, scratch_hi;  // the memory holding all of it (not the image's)
};

// In the pause, every other thread stopped: every descriptor but skip's and
// mmtier's own.  0, or -errno with a line naming the descriptor that cannot
// be taken (a datagram pair with descriptors in flight, a socket of a family
// no restore makes...).  No allocation: the tables live in a reserved range
// of their own, which the writer leaves out of the capsule.
long fd_capture(const int *skip, int nskip, fd_table *out, char *line, size_t cap);

// In the writer, before it closes the program's descriptors: what the
// pause left out because it cannot change with the program running.  Each
// number's close-on-exec flag (the writer's table is its own copy, as of
// the pause) and a TCP connection's family and peer (the socket is shared,
// but its family never changes, nor its peer while it lasts; one reset
// since reads as no peer, which a restore does not need: the connection
// comes back closed).  Raw system calls only (a fork's child).
void fd_capture_finish(const fd_table &t);

// Gives that range back (after the writer was forked with its copy).
void fd_capture_release();
// Forgets it without unmapping: in a restored process, which never had it.
void fd_capture_forget();

// With the program running, before the pause: 0, or -EOPNOTSUPP with a line
// when descriptor fd (its /proc/self/fd link is target) is of a kind no
// restore can make again.
long fd_unsupported(int fd, const char *target, char *line, size_t cap);
// The same for every descriptor of the process but mmtier's own (guarded)
// and own_fd.  A userfaultfd not yet guarded may be the fault service's,
// opened by a start under way in another thread: looked at again once
// that start is done.
long fds_unsupported(int own_fd, char *line, size_t cap);

}  // namespace mmtier::detail
