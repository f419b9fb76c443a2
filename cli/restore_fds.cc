// Making the program's descriptors again (see restore_fds.h).
#include "restore_fds.h"

#include "cli.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <stdexcept>
#include <vector>

#ifndef TFD_IOC_SET_TICKS
#define TFD_IOC_SET_TICKS _IOW('T', 0, uint64_t)  // linux/timerfd.h, which clashes with the C library's
#endif

namespace mmtier::cli {
namespace {

namespace cap = mmtier::capsule;

struct failed {
  std::string line;
};

[[noreturn]] void fail(const std::string &line) { throw failed{line}; }

std::string why() { return strerror(errno); }

uint64_t min_detail(cap::fd_kind k) {
  switch (k) {
    case cap::fd_kind::pipe: return sizeof(cap::fd_pipe);
    case cap::fd_kind::eventfd: return sizeof(cap::fd_eventfd);
    case cap::fd_kind::timerfd: return sizeof(cap::fd_timerfd);
    case cap::fd_kind::signalfd: return sizeof(cap::fd_signalfd);
    case cap::fd_kind::socket: return sizeof(cap::fd_socket);
    case cap::fd_kind::unnamed: return sizeof(cap::fd_unnamed);
    default: return 0;
  }
}

template <class T>
const T *detail(const fd_image &im, const cap::fd_record &r) {
  return reinterpret_cast<const T *>(im.data + r.detail);
}

// A descriptor moved to at least floor, close-on-exec; the old one closed.
int high(int fd, int floor, const char *what, int want) {
  if (fd < 0) fail(strf("descriptor %d: cannot make its %s: %s", want, what, why().c_str()));
  const int n = fcntl(fd, F_DUPFD_CLOEXEC, floor);
  const int e = errno;
  close(fd);
  errno = e;
  if (n < 0) fail(strf("descriptor %d: no room above %d: %s", want, floor, why().c_str()));
  return n;
}

// The status flags the program had (O_NONBLOCK, O_APPEND...).
void set_flags(int fd, const cap::fd_record &r) {
  const int keep = O_APPEND | O_NONBLOCK | O_ASYNC | O_DIRECT | O_NOATIME;
  fcntl(fd, F_SETFL, static_cast<int>(r.flags) & keep);
}

struct maker {
  const fd_image &im;
  int floor;
  struct pipe_ends {
    int rd, wr;
    bool rd_given = false, wr_given = false;  // each once; a second open end of one mode is opened anew
  };
  std::map<uint64_t, pipe_ends> pipes;  // pipe id: its ends, temporaries
  std::map<uint64_t, int> pair_ends;              // a pair's inode: its end, made with its peer
  std::vector<int> spare;                         // temporaries closed at the end
  std::map<std::pair<uint64_t, uint64_t>, int> unnamed;  // an unnamed file's (dev, inode): it, made (in spare)

  int reopen(int fd, int flags, int want) {
    const std::string link = strf("/proc/self/fd/%d", fd);
    return high(open(link.c_str(), flags | O_CLOEXEC), floor, "pipe end", want);
  }

  // A deleted file, O_TMPFILE file or memfd: made unnamed again (a memfd
  // with its name and seals; a file as O_TMPFILE in its directory, else in
  // the temporary directory), its bytes written, then opened with the
  // program's access mode at its offset.
  int unnamed_of(const cap::fd_record &r) {
    const auto *d = detail<cap::fd_unnamed>(im, r);
    std::string path = cap::string_at(*im.m, r.path);
    if (const size_t del = path.rfind(" (deleted)"); del != std::string::npos) path.resize(del);
    // Made once per file: a second open of it (another open file, not a
    // dup) opens the one made again, so writes through either are seen
    // through both, as they were.
    const auto key = std::make_pair(r.dev, r.ino);
    auto made = unnamed.find(key);
    if (made == unnamed.end()) made = unnamed.emplace(key, make_unnamed(r, *d, path)).first;
    const int mode = static_cast<int>(r.flags) & O_ACCMODE;
    const int out = open(strf("/proc/self/fd/%d", made->second).c_str(), mode | O_CLOEXEC);
    if (out < 0) fail(strf("descriptor %d: cannot open %s again as it was: %s", r.fd, path.c_str(), why().c_str()));
    if (lseek(out, static_cast<off_t>(r.offset), SEEK_SET) < 0) {
      const std::string e = why();
      close(out);
      fail(strf("descriptor %d: cannot seek %s: %s", r.fd, path.c_str(), e.c_str()));
    }
    return high(out, floor, "unnamed file", r.fd);
  }

  // The unnamed file with its bytes and seals, read-write, above floor
  // (closed at the end with the other temporaries).
  int make_unnamed(const cap::fd_record &r, const cap::fd_unnamed &d, const std::string &path) {
    int fd = -1;
    if (d.memfd) {
      const std::string name = path.substr(7);  // after "/memfd:"
      fd = memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
    } else {
      const size_t slash = path.rfind('/');
      const std::string dir = slash == std::string::npos || slash == 0 ? "/" : path.substr(0, slash);
      fd = open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
      if (fd < 0) {
        const char *tmp = getenv("TMPDIR");
        fd = open(tmp && *tmp ? tmp : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
      }
    }
    if (fd < 0) fail(strf("descriptor %d: cannot make the unnamed file %s again: %s", r.fd, path.c_str(), why().c_str()));
    fd = high(fd, floor, "unnamed file", r.fd);
    spare.push_back(fd);
    const char *bytes = reinterpret_cast<const char *>(&d + 1);
    for (uint64_t done = 0; done < d.size;) {
      const ssize_t w = pwrite(fd, bytes + done, d.size - done, static_cast<off_t>(done));
      if (w <= 0) fail(strf("descriptor %d: cannot write the content of %s again: %s", r.fd, path.c_str(), why().c_str()));
      done += static_cast<uint64_t>(w);
    }
    if (d.memfd && d.seals && fcntl(fd, F_ADD_SEALS, static_cast<int>(d.seals)) != 0)
      fail(strf("descriptor %d: cannot seal %s again: %s", r.fd, path.c_str(), why().c_str()));
    return fd;
  }

  int pipe_end(const cap::fd_record &r) {
    const auto *d = detail<cap::fd_pipe>(im, r);
    const char *path = cap::string_at(*im.m, r.path);
    auto it = pipes.find(d->id);
    if (it == pipes.end()) {
      int rd, wr;
      if (d->fifo) {
        // Both ends through one read-write open (never blocks, never ENXIO).
        const int both = high(open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC), floor, "FIFO", r.fd);
        struct stat st;
        if (fstat(both, &st) != 0 || !S_ISFIFO(st.st_mode))
          fail(strf("descriptor %d: %s is no longer a FIFO", r.fd, path));
        rd = wr = both;
      } else {
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0) fail(strf("descriptor %d: cannot make a pipe: %s", r.fd, why().c_str()));
        rd = high(p[0], floor, "pipe", r.fd);
        wr = high(p[1], floor, "pipe", r.fd);
      }
      if (d->capacity) fcntl(wr, F_SETPIPE_SZ, static_cast<int>(d->capacity));
      if (d->queued) {
        const int fl = fcntl(wr, F_GETFL);
        fcntl(wr, F_SETFL, fl | O_NONBLOCK);
        const auto *bytes = reinterpret_cast<const char *>(d + 1);
        for (uint64_t done = 0; done < d->queued;) {
          const ssize_t w = write(wr, bytes + done, d->queued - done);
          if (w <= 0)
            fail(strf("descriptor %d: cannot put back the %llu bytes its pipe held: %s", r.fd,
                      static_cast<unsigned long long>(d->queued), w < 0 ? why().c_str() : "full"));
          done += static_cast<uint64_t>(w);
        }
        fcntl(wr, F_SETFL, fl);
      }
      spare.push_back(rd);
      if (wr != rd) spare.push_back(wr);
      it = pipes.emplace(d->id, pipe_ends{rd, wr}).first;
    }
    pipe_ends &e = it->second;
    const int mode = static_cast<int>(r.flags) & O_ACCMODE;
    int fd;
    if (mode == O_RDONLY && e.rd != e.wr && !e.rd_given) {
      fd = fcntl(e.rd, F_DUPFD_CLOEXEC, floor);
      e.rd_given = true;
    } else if (mode == O_WRONLY && e.rd != e.wr && !e.wr_given) {
      fd = fcntl(e.wr, F_DUPFD_CLOEXEC, floor);
      e.wr_given = true;
    } else {
      // Another open of the pipe (its own status flags), or a FIFO's end.
      fd = reopen(e.rd, mode | O_NONBLOCK, r.fd);
    }
    if (fd < 0) fail(strf("descriptor %d: cannot make its pipe end: %s", r.fd, why().c_str()));
    return fd;
  }

  int eventfd_of(const cap::fd_record &r) {
    const auto *d = detail<cap::fd_eventfd>(im, r);
    const int fd = high(eventfd(0, EFD_CLOEXEC | (d->semaphore ? EFD_SEMAPHORE : 0)), floor, "eventfd", r.fd);
    if (d->count && write(fd, &d->count, sizeof d->count) != sizeof d->count)
      fail(strf("descriptor %d: cannot set its eventfd's count: %s", r.fd, why().c_str()));
    return fd;
  }

  int timerfd_of(const cap::fd_record &r) {
    const auto *d = detail<cap::fd_timerfd>(im, r);
    const int fd = high(timerfd_create(d->clockid, TFD_CLOEXEC), floor, "timer", r.fd);
    itimerspec its{};
    its.it_value = {static_cast<time_t>(d->value_sec), static_cast<long>(d->value_nsec)};
    its.it_interval = {static_cast<time_t>(d->interval_sec), static_cast<long>(d->interval_nsec)};
    const bool interval = its.it_interval.tv_sec || its.it_interval.tv_nsec;
    // A periodic timer that fired and was not read yet is not re-armed by
    // the kernel until it is (fdinfo shows it_value 0): its next
    // expiration is an interval away.
    if (!its.it_value.tv_sec && !its.it_value.tv_nsec && interval) its.it_value = its.it_interval;
    const bool armed = its.it_value.tv_sec || its.it_value.tv_nsec;
    // fdinfo gives the time left; an absolute timer (kept absolute for
    // TFD_TIMER_CANCEL_ON_SET) gets it added to its clock's now.
    const int flags = static_cast<int>(d->settime_flags & (TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET));
    auto arm = [&](itimerspec t) {
      if (flags & TFD_TIMER_ABSTIME) {
        timespec now{};
        clock_gettime(static_cast<clockid_t>(d->clockid), &now);
        t.it_value.tv_sec += now.tv_sec;
        t.it_value.tv_nsec += now.tv_nsec;
        if (t.it_value.tv_nsec >= 1000000000) {
          t.it_value.tv_nsec -= 1000000000;
          ++t.it_value.tv_sec;
        }
      }
      if (timerfd_settime(fd, flags, &t, nullptr) != 0)
        fail(strf("descriptor %d: cannot set its timer: %s", r.fd, why().c_str()));
    };
    // Armed first: setting a timer clears the expirations counted.
    if (armed) arm(its);
    if (d->ticks) {
      // Expirations the program had not read: set as they were where the
      // kernel allows it (checkpoint/restore kernels), else one at once
      // (then the interval, if any).
      uint64_t ticks = d->ticks;
      if (ioctl(fd, TFD_IOC_SET_TICKS, &ticks) != 0) {
        itimerspec now = its;
        now.it_value = {0, 1};
        const int saved = flags;
        if (saved & TFD_TIMER_ABSTIME) {
          if (timerfd_settime(fd, 0, &now, nullptr) != 0)
            fail(strf("descriptor %d: cannot set its timer: %s", r.fd, why().c_str()));
        } else {
          arm(now);
        }
      }
    }
    return fd;
  }

  int signalfd_of(const cap::fd_record &r) {
    const auto *d = detail<cap::fd_signalfd>(im, r);
    sigset_t set;
    sigemptyset(&set);
    for (int s = 1; s <= 64; ++s)
      if (d->mask & (uint64_t{1} << (s - 1))) sigaddset(&set, s);
    return high(signalfd(-1, &set, SFD_CLOEXEC), floor, "signalfd", r.fd);
  }

  void options(int fd, const cap::fd_socket &d) {
    const int one = 1;
    if (d.options & cap::kSockReuseAddr) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (d.options & cap::kSockReusePort) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (d.options & cap::kSockKeepAlive) setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    if (d.options & cap::kSockBroadcast) setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one);
    if (d.options & cap::kSockPassCred) setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
    if (d.options & cap::kSockNoDelay) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (d.domain == AF_INET6) {
      const int v6 = (d.options & cap::kSockV6Only) ? 1 : 0;
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6, sizeof v6);
    }
  }

  // Binds to the address the socket had.  A Unix socket's file left by the
  // killed original (nobody answers on it) is removed first.
  void bind_to(int fd, const cap::fd_socket &d, int want) {
    sockaddr_storage moved;
    const auto *sa = local_of(d, &moved);
    if (bind(fd, sa, d.local_len) == 0) return;
    const int err = errno;
    const auto *un = reinterpret_cast<const sockaddr_un *>(d.local);
    if (err == EADDRINUSE && d.domain == AF_UNIX && d.local_len > sizeof(sa_family_t) && un->sun_path[0]) {
      struct stat st;
      const int probe = socket(AF_UNIX, d.type | SOCK_CLOEXEC, 0);
      const bool stale = lstat(un->sun_path, &st) == 0 && S_ISSOCK(st.st_mode) && probe >= 0 &&
                         connect(probe, sa, d.local_len) != 0 && errno == ECONNREFUSED;
      if (probe >= 0) close(probe);
      if (stale && unlink(un->sun_path) == 0 && bind(fd, sa, d.local_len) == 0) return;
      errno = err;
    }
    errno = err;
    fail(strf("descriptor %d: cannot bind its socket to %s again: %s", want,
              address(reinterpret_cast<const unsigned char *>(sa), d.local_len).c_str(), why().c_str()));
  }

  // The socket's local address, its port moved when the port map names it
  // (copied into *room).
  const sockaddr *local_of(const cap::fd_socket &d, sockaddr_storage *room) const {
    const auto *sa = reinterpret_cast<const sockaddr *>(d.local);
    if (!im.ports || (d.domain != AF_INET && d.domain != AF_INET6) || d.local_len > sizeof *room) return sa;
    memcpy(room, d.local, d.local_len);
    in_port_t *port = d.domain == AF_INET ? &reinterpret_cast<sockaddr_in *>(room)->sin_port
                                          : &reinterpret_cast<sockaddr_in6 *>(room)->sin6_port;
    for (const auto &[from, to] : *im.ports)
      if (ntohs(*port) == from) {
        *port = htons(to);
        return reinterpret_cast<const sockaddr *>(room);
      }
    return sa;
  }

  static std::string address(const unsigned char *a, uint32_t len) {
    const auto *sa = reinterpret_cast<const sockaddr *>(a);
    char host[64] = "";
    if (sa->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
      const auto *in = reinterpret_cast<const sockaddr_in *>(a);
      inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
      return strf("%s:%u", host, ntohs(in->sin_port));
    }
    if (sa->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
      const auto *in = reinterpret_cast<const sockaddr_in6 *>(a);
      inet_ntop(AF_INET6, &in->sin6_addr, host, sizeof host);
      return strf("[%s]:%u", host, ntohs(in->sin6_port));
    }
    if (sa->sa_family == AF_UNIX && len > sizeof(sa_family_t)) {
      const auto *un = reinterpret_cast<const sockaddr_un *>(a);
      if (!un->sun_path[0])
        return "@" + std::string(un->sun_path + 1, len - sizeof(sa_family_t) - 1);
      return std::string(un->sun_path, strnlen(un->sun_path, len - sizeof(sa_family_t)));
    }
    return "an unnamed address";
  }

  // What was queued to this end, sent again through its peer.
  void requeue(int peer, const cap::fd_socket &d, int want) {
    if (!d.queued) return;
    const auto *p = reinterpret_cast<const unsigned char *>(&d + 1);
    bool ok = true;
    if (d.type == SOCK_STREAM) {
      for (uint64_t done = 0; ok && done < d.queued;) {
        const ssize_t w = send(peer, p + done, d.queued - done, MSG_DONTWAIT | MSG_NOSIGNAL);
        ok = w > 0;
        if (ok) done += static_cast<uint64_t>(w);
      }
    } else {
      for (uint64_t at = 0; ok && at + 4 <= d.queued;) {
        uint32_t len;
        memcpy(&len, p + at, 4);
        ok = at + 4 + len <= d.queued && send(peer, p + at + 4, len, MSG_DONTWAIT | MSG_NOSIGNAL) == len;
        at += 4 + len;
      }
    }
    if (!ok) fail(strf("descriptor %d: cannot queue its %llu bytes again: %s", want,
                       static_cast<unsigned long long>(d.queued), why().c_str()));
  }

  int socket_of(const cap::fd_record &r) {
    const auto &d = *detail<cap::fd_socket>(im, r);
    const auto state = static_cast<cap::socket_state>(d.state);
    if (state == cap::socket_state::pair) {
      if (auto it = pair_ends.find(r.ino); it != pair_ends.end()) {
        const int fd = it->second;
        pair_ends.erase(it);
        return fd;
      }
      int sv[2];
      if (socketpair(AF_UNIX, d.type | SOCK_CLOEXEC, 0, sv) != 0)
        fail(strf("descriptor %d: cannot make its socket pair: %s", r.fd, why().c_str()));
      const int mine = high(sv[0], floor, "socket pair", r.fd), theirs = high(sv[1], floor, "socket pair", r.fd);
      requeue(theirs, d, r.fd);
      // The peer's queue, sent through this end, when its record comes.
      for (uint64_t j = 0; j < im.nfds; ++j) {
        const cap::fd_record &o = im.fds[j];
        if (o.same_as < 0 && o.kind == r.kind && o.ino == d.pair) requeue(mine, *detail<cap::fd_socket>(im, o), o.fd);
      }
      pair_ends[d.pair] = theirs;
      return mine;
    }
    const int fd = high(socket(d.domain, d.type | SOCK_CLOEXEC, d.protocol), floor, "socket", r.fd);
    options(fd, d);
    const auto *sa = reinterpret_cast<const sockaddr *>(d.local);
    const bool named = d.local_len > sizeof(sa_family_t) &&
                       (sa->sa_family == AF_UNIX || (sa->sa_family == AF_INET
                                                         ? reinterpret_cast<const sockaddr_in *>(d.local)->sin_port
                                                         : reinterpret_cast<const sockaddr_in6 *>(d.local)->sin6_port));
    switch (state) {
      case cap::socket_state::listening:
        bind_to(fd, d, r.fd);
        if (listen(fd, static_cast<int>(d.backlog)) != 0)
          fail(strf("descriptor %d: cannot listen on %s again: %s", r.fd, address(d.local, d.local_len).c_str(),
                    why().c_str()));
        break;
      case cap::socket_state::bound:
        // A TCP connection reset before the snapshot looks bound (no peer,
        // the server's port): its port is a listener's, taken again, and
        // the program only has an error left to read from it.  One the
        // program only bound (no segment ever) gets its port or the restore
        // fails.
        if (d.domain != AF_UNIX && d.type == SOCK_STREAM && !(d.options & cap::kSockOnlyBound)) {
          sockaddr_storage moved;
          if (bind(fd, local_of(d, &moved), d.local_len) != 0 && errno != EADDRINUSE)
            fail(strf("descriptor %d: cannot bind its socket to %s again: %s", r.fd,
                      address(d.local, d.local_len).c_str(), why().c_str()));
        } else {
          bind_to(fd, d, r.fd);
        }
        break;
      case cap::socket_state::connected:
        if (d.type == SOCK_DGRAM) {
          // A datagram socket's peer is only an address: connected again
          // (a Unix peer that is gone leaves it unconnected).
          if (named) bind_to(fd, d, r.fd);
          if (connect(fd, reinterpret_cast<const sockaddr *>(d.peer), d.peer_len) != 0 && d.domain != AF_UNIX)
            fail(strf("descriptor %d: cannot connect its socket to %s again: %s", r.fd,
                      address(d.peer, d.peer_len).c_str(), why().c_str()));
        } else {
          // A connection's other side saw it end when the original died:
          // closed both ways, reads see the end of the stream.
          shutdown(fd, SHUT_RDWR);
        }
        break;
      default: break;
    }
    return fd;
  }
};

// The messages queued to a bound Unix datagram socket, sent to it again,
// in their order, each from the program's socket bound to its sender's
// address (the program's descriptors are in place): a reply goes where it
// went.  A sender that was not the program's (another process, or an
// unbound socket) sends from an unbound socket: the program reads the
// message with no sender address.
void resend_queues(const fd_image &im) {
  const auto sender_fd = [&](const unsigned char *addr, uint32_t alen) {
    for (uint64_t j = 0; j < im.nfds; ++j) {
      const cap::fd_record &o = im.fds[j];
      if (o.same_as >= 0 || o.kind != static_cast<uint32_t>(cap::fd_kind::socket)) continue;
      const auto *od = detail<cap::fd_socket>(im, o);
      if (od->domain == AF_UNIX && od->type == SOCK_DGRAM && alen > sizeof(sa_family_t) && od->local_len == alen &&
          !memcmp(od->local, addr, alen))
        return o.fd;
    }
    return -1;
  };
  for (uint64_t i = 0; i < im.nfds; ++i) {
    const cap::fd_record &r = im.fds[i];
    if (r.same_as >= 0 || r.kind != static_cast<uint32_t>(cap::fd_kind::socket)) continue;
    const auto &d = *detail<cap::fd_socket>(im, r);
    if (!(d.options & cap::kSockQueueSenders) || !d.queued) continue;
    const auto *p = reinterpret_cast<const unsigned char *>(&d + 1);
    int anon = -1;
    bool ok = true;
    for (uint64_t at = 0; ok && at < d.queued;) {
      uint32_t len = 0, alen = 0;
      ok = at + 8 <= d.queued;
      if (ok) {
        memcpy(&len, p + at, 4);
        memcpy(&alen, p + at + 4, 4);
        ok = alen <= sizeof(sockaddr_un) && at + 8 + alen + len <= d.queued;
      }
      if (!ok) fail(strf("descriptor %d: its queued messages are malformed", r.fd));
      int from = sender_fd(p + at + 8, alen);
      if (from < 0) {
        if (anon < 0) anon = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        from = anon;
      }
      ok = from >= 0 && sendto(from, p + at + 8 + alen, len, MSG_DONTWAIT | MSG_NOSIGNAL,
                               reinterpret_cast<const sockaddr *>(d.local), d.local_len) == static_cast<ssize_t>(len);
      at += 8 + alen + len;
    }
    if (anon >= 0) close(anon);
    if (!ok)
      fail(strf("descriptor %d: cannot queue its %llu bytes of messages again: %s", r.fd,
                static_cast<unsigned long long>(d.queued), why().c_str()));
  }
}

}  // namespace

std::string fd_check(const fd_image &im) {
  std::map<int, const cap::fd_record *> by_fd;
  for (uint64_t i = 0; i < im.nfds; ++i) {
    const cap::fd_record &r = im.fds[i];
    const auto kind = static_cast<cap::fd_kind>(r.kind);
    if (r.kind < static_cast<uint32_t>(cap::fd_kind::file) || r.kind > static_cast<uint32_t>(cap::fd_kind::unnamed))
      return strf("descriptor %d is of a kind this command does not know (%u)", r.fd, r.kind);
    if (r.fd < 0 || by_fd.count(r.fd)) return strf("descriptor %d is in the table twice", r.fd);
    if (r.same_as >= 0) {
      auto it = by_fd.find(r.same_as);
      if (it == by_fd.end() || it->second->kind != r.kind || it->second->same_as >= 0)
        return strf("descriptor %d is a copy of descriptor %d, which is not before it", r.fd, r.same_as);
    } else if (r.kind != static_cast<uint32_t>(cap::fd_kind::other)) {
      const uint64_t need = min_detail(kind);
      if (r.detail % 8 || r.detail > im.data_len || r.detail_len > im.data_len - r.detail || r.detail_len < need)
        return strf("descriptor %d's details lie outside the capsule's table", r.fd);
      uint64_t extra = 0;
      if (kind == cap::fd_kind::pipe) extra = detail<cap::fd_pipe>(im, r)->queued;
      if (kind == cap::fd_kind::socket) extra = detail<cap::fd_socket>(im, r)->queued;
      if (kind == cap::fd_kind::unnamed) extra = detail<cap::fd_unnamed>(im, r)->size;
      if (kind == cap::fd_kind::epoll && r.detail_len % sizeof(cap::fd_epoll_entry))
        return strf("descriptor %d's epoll set is malformed", r.fd);
      if (extra > r.detail_len - need) return strf("descriptor %d's buffered bytes lie outside the capsule", r.fd);
      if (kind == cap::fd_kind::socket) {
        const auto *d = detail<cap::fd_socket>(im, r);
        if (d->local_len > sizeof d->local || d->peer_len > sizeof d->peer || d->state > 4)
          return strf("descriptor %d's socket is malformed", r.fd);
      }
    }
    by_fd[r.fd] = &r;
  }
  return "";
}

std::string fd_restore(const fd_image &im, const int stdio[3], int floor, std::vector<fd_cut> *cuts) {
  cuts->clear();
  maker mk{im, floor, {}, {}, {}, {}};
  std::vector<std::pair<int, int>> placed;  // (program's number, temporary)
  std::map<int, int> tmp_of;
  bool std_done[3] = {};
  try {
    for (uint64_t i = 0; i < im.nfds; ++i) {
      const cap::fd_record &r = im.fds[i];
      const char *path = cap::string_at(*im.m, r.path);
      const auto kind = static_cast<cap::fd_kind>(r.kind);
      int fd = -1;
      if (r.same_as >= 0) {
        fd = fcntl(tmp_of.at(r.same_as), F_DUPFD_CLOEXEC, floor);
      } else if (kind == cap::fd_kind::other || (kind == cap::fd_kind::device && !strncmp(path, "/dev/pts/", 9))) {
        if (r.fd > 2)
          fail(strf("descriptor %d (%s) cannot be restored: a deleted or unnamed file, or an object of a kind "
                    "not made again",
                    r.fd, path));
        fd = fcntl(stdio[r.fd], F_DUPFD_CLOEXEC, floor);
      } else if (kind == cap::fd_kind::file || kind == cap::fd_kind::dir || kind == cap::fd_kind::device) {
        const int flags = static_cast<int>(r.flags) & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY);
        const int opened = open(path, flags | O_CLOEXEC | (kind == cap::fd_kind::dir ? O_DIRECTORY : 0));
        if (opened < 0) fail(strf("cannot reopen descriptor %d, %s: %s", r.fd, path, why().c_str()));
        struct stat st;
        if (kind == cap::fd_kind::file &&
            (fstat(opened, &st) != 0 || st.st_ino != r.ino || static_cast<uint64_t>(st.st_dev) != r.dev)) {
          // Another inode: a file read only is the same when its size and
          // modification time are (a new container's overlay, a copy with
          // its times); one the program writes must be the very file.
          const int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
          const bool same = (static_cast<int>(r.flags) & O_ACCMODE) == O_RDONLY &&
                            r.detail_len >= sizeof(cap::fd_file) && static_cast<uint64_t>(st.st_size) == r.size &&
                            mtime == detail<cap::fd_file>(im, r)->mtime_ns;
          if (!same) fail(strf("descriptor %d: %s is another file than at the snapshot", r.fd, path));
        }
        // A file the program writes is cut back to its size at the snapshot
        // (by the restorer, last).  Not a standard stream: a log file there is
        // usually shared with other processes (a shell's redirection),
        // whose output stays.
        const int mode = static_cast<int>(r.flags) & O_ACCMODE;
        if (kind == cap::fd_kind::file && r.fd > 2 && mode != O_RDONLY && static_cast<uint64_t>(st.st_size) > r.size)
          cuts->push_back({r.fd, r.size});
        if (kind == cap::fd_kind::file && lseek(opened, static_cast<off_t>(r.offset), SEEK_SET) < 0)
          fail(strf("descriptor %d: cannot seek %s: %s", r.fd, path, why().c_str()));
        fd = high(opened, floor, "file", r.fd);
      } else {
        switch (kind) {
          case cap::fd_kind::pipe: fd = mk.pipe_end(r); break;
          case cap::fd_kind::eventfd: fd = mk.eventfd_of(r); break;
          case cap::fd_kind::timerfd: fd = mk.timerfd_of(r); break;
          case cap::fd_kind::signalfd: fd = mk.signalfd_of(r); break;
          case cap::fd_kind::epoll: fd = high(epoll_create1(EPOLL_CLOEXEC), floor, "epoll set", r.fd); break;
          case cap::fd_kind::socket: fd = mk.socket_of(r); break;
          case cap::fd_kind::unnamed: fd = mk.unnamed_of(r); break;
          default: break;
        }
        if (fd >= 0) set_flags(fd, r);
      }
      if (fd < 0) fail(strf("cannot restore descriptor %d: %s", r.fd, why().c_str()));
      placed.push_back({r.fd, fd});
      tmp_of[r.fd] = fd;
      if (r.fd >= 0 && r.fd < 3) std_done[r.fd] = true;
    }
    // A stream the program had closed stays closed, unless the capsule
    // predates descriptor tables.
    if (!im.fds)
      for (int k = 0; k < 3; ++k)
        if (!std_done[k]) placed.push_back({k, fcntl(stdio[k], F_DUPFD_CLOEXEC, floor)});
    for (const auto &[want, tmp] : placed) {
      bool cloexec = false;
      for (uint64_t i = 0; i < im.nfds; ++i)
        if (im.fds[i].fd == want) cloexec = im.fds[i].cloexec;
      if (dup3(tmp, want, cloexec ? O_CLOEXEC : 0) != want)
        fail(strf("cannot place descriptor %d: %s", want, why().c_str()));
      close(tmp);
    }
    for (int fd : mk.spare) close(fd);
    for (const auto &[ino, fd] : mk.pair_ends) close(fd);
    // Every registration, on the numbers the program knows (an epoll set
    // keys them by number).  A number the program closed after it
    // registered (the file lives on under another): that one.
    for (uint64_t i = 0; i < im.nfds; ++i) {
      const cap::fd_record &r = im.fds[i];
      if (r.kind != static_cast<uint32_t>(cap::fd_kind::epoll) || r.same_as >= 0) continue;
      const auto *e = detail<cap::fd_epoll_entry>(im, r);
      for (uint64_t k = 0; k < r.detail_len / sizeof *e; ++k) {
        int target = -1;
        for (uint64_t j = 0; j < im.nfds && target < 0; ++j)
          if (im.fds[j].fd == e[k].tfd && im.fds[j].ino == e[k].ino) target = e[k].tfd;
        for (uint64_t j = 0; j < im.nfds && target < 0; ++j)
          if (im.fds[j].ino == e[k].ino) target = im.fds[j].fd;
        if (target < 0)
          fail(strf("descriptor %d: its epoll set holds descriptor %d, which is gone", r.fd, e[k].tfd));
        epoll_event ev{};
        ev.events = e[k].events;
        ev.data.u64 = e[k].data;
        if (epoll_ctl(r.fd, EPOLL_CTL_ADD, target, &ev) != 0)
          fail(strf("descriptor %d: cannot register descriptor %d in its epoll set again: %s", r.fd, target,
                    why().c_str()));
      }
    }
    resend_queues(im);
  } catch (const failed &f) {
    return f.line;
  } catch (const std::out_of_range &) {
    return "the descriptor table refers to a descriptor it does not hold";
  }
  return "";
}

}  // namespace mmtier::cli

namespace mmtier::cli {

bool parse_port_map(const std::string &text, port_map *out) {
  out->clear();
  size_t at = 0;
  while (at <= text.size()) {
    const size_t comma = std::min(text.find(',', at), text.size());
    const std::string item = text.substr(at, comma - at);
    unsigned from = 0, to = 0;
    int used = 0;
    if (sscanf(item.c_str(), "%5u:%5u%n", &from, &to, &used) != 2 || used != static_cast<int>(item.size()) ||
        !isdigit(static_cast<unsigned char>(item[0])) || !from || !to || from > 65535 || to > 65535)
      return false;
    for (const auto &p : *out)
      if (p.first == from) return false;
    out->emplace_back(static_cast<uint16_t>(from), static_cast<uint16_t>(to));
    at = comma + 1;
  }
  return !out->empty();
}

}  // namespace mmtier::cli
