// The program's descriptors made again at their numbers, for `mmtier
// restore` (capsule_format.h, fd_kind): files reopened, pipes with their
// bytes, eventfds, timers, signalfds, epoll sets with their registrations,
// sockets rebound (listening ones listen again; a stream connected to a peer
// outside comes back closed).
#pragma once

#include "snapshot/capsule_format.h"

#include <cstdint>
#include <string>

namespace mmtier::cli {

struct fd_image {
  const capsule::manifest_view *m = nullptr;
  const capsule::fd_record *fds = nullptr;
  uint64_t nfds = 0;
  const unsigned char *data = nullptr;  // the fd_data table
  uint64_t data_len = 0;
};

// Before anything is made: "" or why the table cannot be restored (a
// detail out of its table, a kind this command does not know, a dup of
// nothing).
std::string fd_check(const fd_image &im);

// Makes every descriptor at its number; stdio are the command's streams for
// what stays theirs.  Each is made above floor first, then moved into place.
// "" or the line saying which descriptor could not be made and why.
std::string fd_restore(const fd_image &im, const int stdio[3], int floor);

}  // namespace mmtier::cli
