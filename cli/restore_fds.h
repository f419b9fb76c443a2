// The program's descriptors made again at their numbers, for `mmtier
// restore` (capsule_format.h, fd_kind): files reopened, pipes with their
// bytes, eventfds, timers, signalfds, epoll sets with their registrations,
// sockets rebound (listening ones listen again; a stream connected to a peer
// outside comes back closed).
#pragma once

#include "snapshot/capsule_format.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mmtier::cli {

// Listening ports a restore moves (`--port-map FROM:TO,...`): a socket the
// capsule has bound to port FROM (TCP or UDP, IPv4 or IPv6) is bound to TO.
using port_map = std::vector<std::pair<uint16_t, uint16_t>>;

// "FROM:TO[,FROM:TO...]" into *out; false if it is not that (ports 1-65535,
// each FROM once).
bool parse_port_map(const std::string &text, port_map *out);

struct fd_image {
  const capsule::manifest_view *m = nullptr;
  const capsule::fd_record *fds = nullptr;
  uint64_t nfds = 0;
  const unsigned char *data = nullptr;  // the fd_data table
  uint64_t data_len = 0;
  const port_map *ports = nullptr;  // or none moved
};

// Before anything is made: "" or why the table cannot be restored (a
// detail out of its table, a kind this command does not know, a dup of
// nothing).
std::string fd_check(const fd_image &im);

// Makes every descriptor at its number; stdio are the command's streams for
// what stays theirs.  Each is made above floor first, then moved into place.
// "" or the line saying which descriptor could not be made and why.
// Nothing is changed on disk: the files the program writes that grew since
// the snapshot are listed in *cuts (its number, its size then), for the
// restorer to cut back once nothing else can fail (what the original wrote
// after the snapshot is not the restored program's).
struct fd_cut {
  int fd;
  uint64_t size;
};
std::string fd_restore(const fd_image &im, const int stdio[3], int floor, std::vector<fd_cut> *cuts);

}  // namespace mmtier::cli
