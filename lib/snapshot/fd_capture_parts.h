// The pieces of the descriptor capture (fd_capture.cc) that its socket
// and epoll parts (fd_socket.cc, fd_epoll.cc) share: the scratch tables in
// their reserved range, the failure line, the records and their details.
// Internal to the snapshot layer, used in the pause (no allocation) and,
// for what the writer finishes, in the writer.
#pragma once

#include "platform/sys.h"
#include "snapshot/capsule_format.h"

#include <sys/mman.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstring>

namespace mmtier::detail::fdcap {

namespace cap = capsule;

constexpr uint64_t kStep = uint64_t{1} << 20;
constexpr uint64_t kRecordsMax = uint64_t{64} << 20;  // about 900 000 descriptors
constexpr uint64_t kPathsMax = uint64_t{256} << 20;
constexpr uint64_t kDataMax = uint64_t{1} << 30;  // buffered bytes and details

// A slice of the reserved range, made writable a step at a time (strict
// overcommit charges only what is used).
struct area {
  char *base = nullptr;
  uint64_t used = 0, writable = 0, limit = 0;
  char *take(uint64_t n, uint64_t align = 1) {
    const uint64_t at = (used + align - 1) & ~(align - 1);
    if (at + n > limit || at + n < at) return nullptr;
    while (at + n > writable) {
      if (sys::failed(sys::mprotect(base + writable, kStep, PROT_READ | PROT_WRITE))) return nullptr;
      writable += kStep;
    }
    used = at + n;
    return base + at;
  }
};

struct scratch {
  uintptr_t lo = 0, hi = 0;
  area recs, paths, data;
};
extern scratch g_s;  // under the snapshot's one-at-a-time lock

// Writes the line a failed capture gives (printf-style); -EOPNOTSUPP.
__attribute__((format(printf, 1, 2))) long fail(const char *fmt, ...);

inline cap::fd_record *rec(uint32_t i) { return reinterpret_cast<cap::fd_record *>(g_s.recs.base) + i; }

// A detail of T (zeroed) plus extra bytes after it, 8-aligned; the record
// points at it.
template <class T>
T *detail(cap::fd_record &r, uint64_t extra = 0) {
  char *p = g_s.data.take(sizeof(T) + extra, 8);
  if (!p) return nullptr;
  memset(p, 0, sizeof(T));
  r.detail = static_cast<uint64_t>(p - g_s.data.base);
  r.detail_len = sizeof(T) + extra;
  return reinterpret_cast<T *>(p);
}
// An int socket option of fd (0 when it cannot be read).
inline int sockopt(int fd, int level, int name) {
  int v = 0;
  socklen_t len = sizeof v;
  return sys::raw(SYS_getsockopt, fd, level, name, reinterpret_cast<long>(&v), reinterpret_cast<long>(&len)) == 0 ? v
                                                                                                                  : 0;
}

// The record of descriptor fd (records are in ascending order of number,
// as /proc/self/fd lists them), or nullptr.
inline const cap::fd_record *record_of(int fd, uint32_t n) {
  uint32_t lo = 0, hi = n;
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo) / 2;
    if (rec(mid)->fd < fd) lo = mid + 1;
    else hi = mid;
  }
  if (lo < n && rec(lo)->fd == fd) return rec(lo);
  for (uint32_t i = 0; i < n; ++i)  // not in order after all
    if (rec(i)->fd == fd) return rec(i);
  return nullptr;
}

// Sorts idx[0, n) by less(record index, record index) (heapsort: no
// allocation, n log n).
template <class Less>
void sort_idx(uint32_t *idx, uint32_t n, Less &&before) {
  auto less = [&](uint32_t x, uint32_t y) { return before(idx[x], idx[y]); };
  auto sift = [&](uint32_t root, uint32_t end) {
    for (uint32_t child; (child = 2 * root + 1) < end; root = child) {
      if (child + 1 < end && less(child, child + 1)) ++child;
      if (!less(root, child)) return;
      const uint32_t t = idx[root];
      idx[root] = idx[child];
      idx[child] = t;
    }
  };
  for (uint32_t i = n / 2; i-- > 0;) sift(i, n);
  for (uint32_t end = n; end-- > 1;) {
    const uint32_t t = idx[0];
    idx[0] = idx[end];
    idx[end] = t;
    sift(0, end);
  }
}

// The epoll part (fd_epoll.cc).  An epoll set's registrations, each on the
// number that holds its file now.
long take_epoll(cap::fd_record &r, uint32_t n, bool *have_kcmp);
// Kinds an epoll set can hold that have no id of their open file in their
// fdinfo (an eventfd has eventfd-id).
bool rankable(const cap::fd_record &r);
// place[record] for each record of idx[0, m) of those kinds: the kernel's
// order of their open files (see fd_epoll.cc); false if not to be had.
bool rank_by_set(const uint32_t *idx, uint32_t m, uint32_t n, uint64_t *place);

// The sockets' part (fd_socket.cc).  The table of one sock_diag dump: a
// Unix socket's peer and backlog by inode, sorted; peer kNotSeen: not in
// the dump (asked alone).
struct unix_peer {
  uint64_t ino, peer;
  uint32_t backlog, pad;
};
struct unix_peers {
  unix_peer *v = nullptr;
  uint32_t n = 0;
  size_t bytes = 0;
};
// The netlink socket for sock_diag (made on first use), and the table of
// one dump when the process has many sockets.
struct diag_state {
  int nl = -1;
  uint32_t asked = 0;  // Unix sockets asked about alone
  bool dumped = false;
  unix_peers peers;
};
// A socket's family, type, addresses, options, state and (a pair within
// the process) its queue; records [0, n) are the process's descriptors.
long take_socket(cap::fd_record &r, diag_state &diag, uint32_t n);
// In the writer: a TCP connection's family and peer, which take_socket left
// out of the pause (its family AF_UNSPEC until then).
void finish_socket(int fd, cap::fd_socket &d);
// Closes and frees what diag holds.
void diag_end(diag_state &diag);

}  // namespace mmtier::detail::fdcap
