// The capture of sockets (see fd_capture_parts.h): each socket's family,
// type, addresses and state, a Unix socket's peer from sock_diag (a query
// each for the first few, then one dump for the rest), and the queue of a
// pair within the process, peeked.
#include "snapshot/fd_capture_parts.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

namespace mmtier::detail::fdcap {
namespace {

constexpr uint64_t kNotSeen = ~uint64_t{0};
constexpr uint32_t kUnixAskEach = 16;  // sockets asked one by one up to this many
constexpr uint8_t kTcpClose = 7, kTcpListen = 10;  // tcp_info::tcpi_state (TCP_CLOSE, TCP_LISTEN)

// Asks sock_diag about one Unix socket (ino), or about all of the
// namespace's (ino 0: a dump): peers and queue lengths.  0 or -EIO.
long unix_diag_ask(int nl, uint64_t ino) {
  struct {
    nlmsghdr h;
    unix_diag_req r;
  } q;
  memset(&q, 0, sizeof q);
  q.h.nlmsg_len = sizeof q;
  q.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  q.h.nlmsg_flags = NLM_F_REQUEST | (ino ? 0 : NLM_F_DUMP);
  q.r.sdiag_family = AF_UNIX;
  q.r.udiag_ino = static_cast<uint32_t>(ino);
  q.r.udiag_states = ino ? 0 : ~0u;
  q.r.udiag_show = UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN;
  q.r.udiag_cookie[0] = q.r.udiag_cookie[1] = ~0u;
  sockaddr_nl to{};
  to.nl_family = AF_NETLINK;
  if (sys::raw(SYS_sendto, nl, reinterpret_cast<long>(&q), sizeof q, 0, reinterpret_cast<long>(&to), sizeof to) < 0)
    return -EIO;
  return 0;
}

// A sock_diag answer's peer inode and queue length (a listener's backlog).
void unix_diag_attrs(const nlmsghdr *h, uint64_t *peer, uint32_t *backlog) {
  auto *m = static_cast<const unix_diag_msg *>(NLMSG_DATA(h));
  int left = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *m));
  for (auto *a = reinterpret_cast<const rtattr *>(m + 1); RTA_OK(a, left); a = RTA_NEXT(a, left)) {
    if (a->rta_type == UNIX_DIAG_PEER) *peer = *static_cast<const uint32_t *>(RTA_DATA(a));
    if (a->rta_type == UNIX_DIAG_RQLEN) *backlog = static_cast<const unix_diag_rqlen *>(RTA_DATA(a))->udiag_wqueue;
  }
}

// sock_diag about one Unix socket: its peer's inode and, listening, its
// backlog.  0 or -errno.
long unix_diag(int nl, uint64_t ino, uint64_t *peer, uint32_t *backlog) {
  if (unix_diag_ask(nl, ino) < 0) return -EIO;
  alignas(8) char buf[4096];
  const long n = sys::raw(SYS_recvfrom, nl, reinterpret_cast<long>(buf), sizeof buf, 0, 0, 0);
  if (n < static_cast<long>(sizeof(nlmsghdr))) return -EIO;
  auto *h = reinterpret_cast<nlmsghdr *>(buf);
  if (h->nlmsg_type == NLMSG_ERROR) {
    const auto *e = static_cast<const nlmsgerr *>(NLMSG_DATA(h));
    return e->error ? e->error : -EIO;
  }
  if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || h->nlmsg_len > static_cast<uint32_t>(n)) return -EIO;
  unix_diag_attrs(h, peer, backlog);
  return 0;
}


unix_peer *find_peer(const unix_peers &t, uint64_t ino) {
  uint32_t lo = 0, hi = t.n;
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo) / 2;
    if (t.v[mid].ino < ino) lo = mid + 1;
    else hi = mid;
  }
  return lo < t.n && t.v[lo].ino == ino ? &t.v[lo] : nullptr;
}

// The table for the socket records' inodes; empty (each asked alone)
// when there are no more than kUnixAskEach or the dump fails.
unix_peers unix_dump(int nl, uint32_t n) {
  unix_peers t;
  uint32_t socks = 0;
  for (uint32_t i = 0; i < n; ++i) socks += rec(i)->kind == static_cast<uint32_t>(cap::fd_kind::socket);
  if (socks <= kUnixAskEach) return t;
  t.bytes = (uint64_t{socks} * sizeof(unix_peer) + 4095) & ~size_t{4095};
  const long m = sys::mmap(nullptr, t.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (sys::failed(m)) return unix_peers{};
  t.v = reinterpret_cast<unix_peer *>(m);
  for (uint32_t i = 0; i < n; ++i)
    if (rec(i)->kind == static_cast<uint32_t>(cap::fd_kind::socket)) t.v[t.n++] = {rec(i)->ino, kNotSeen, 0, 0};
  // Sorted by inode (insertion into the sorted prefix, with a shell sort's
  // gaps: no allocation), copies dropped.
  for (uint32_t gap = t.n / 2; gap > 0; gap /= 2)
    for (uint32_t i = gap; i < t.n; ++i)
      for (uint32_t j = i; j >= gap && t.v[j - gap].ino > t.v[j].ino; j -= gap) {
        const unix_peer x = t.v[j];
        t.v[j] = t.v[j - gap];
        t.v[j - gap] = x;
      }
  uint32_t u = 0;
  for (uint32_t i = 0; i < t.n; ++i)
    if (!u || t.v[u - 1].ino != t.v[i].ino) t.v[u++] = t.v[i];
  t.n = u;
  bool done = false;
  if (unix_diag_ask(nl, 0) == 0) {
    alignas(8) static char buf[32768];  // the capturing thread's only (one snapshot at a time)
    while (!done) {
      long got = sys::raw(SYS_recvfrom, nl, reinterpret_cast<long>(buf), sizeof buf, 0, 0, 0);
      if (got <= 0) break;
      int left = static_cast<int>(got);
      for (auto *h = reinterpret_cast<nlmsghdr *>(buf); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
        if (h->nlmsg_type == NLMSG_DONE) {
          done = true;
          break;
        }
        if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) {  // an error: ask each alone
          left = 0;
          got = -1;
          break;
        }
        unix_peer *e = find_peer(t, static_cast<const unix_diag_msg *>(NLMSG_DATA(h))->udiag_ino);
        if (!e) continue;
        e->peer = 0;
        unix_diag_attrs(h, &e->peer, &e->backlog);
      }
      if (got < 0) break;
    }
  }
  if (!done) {
    // Part of a dump is no answer: the socket's own queries decide.  What
    // is left of it in the socket is read by nobody: a fresh one for them.
    sys::munmap(t.v, t.bytes);
    return unix_peers{};
  }
  return t;
}

bool has_port(const unsigned char *sa, uint32_t len) {
  const int family = reinterpret_cast<const sockaddr *>(sa)->sa_family;
  if (family == AF_INET && len >= sizeof(sockaddr_in)) return reinterpret_cast<const sockaddr_in *>(sa)->sin_port;
  if (family == AF_INET6 && len >= sizeof(sockaddr_in6)) return reinterpret_cast<const sockaddr_in6 *>(sa)->sin6_port;
  if (family == AF_UNIX) return len > sizeof(sa_family_t);
  return false;
}

// The messages or bytes queued to one end of a pair within the process,
// peeked (SO_PEEK_OFF walks a datagram queue message by message); with
// senders, a bound datagram socket's messages and who sent each
// (kSockQueueSenders).
long take_queue(cap::fd_record &r, cap::fd_socket *&d, bool senders = false) {
  if (d->type == SOCK_STREAM) {
    int queued = 0;
    if (sys::raw(SYS_ioctl, r.fd, FIONREAD, reinterpret_cast<long>(&queued)) != 0 || queued <= 0) return 0;
    if (!g_s.data.take(static_cast<uint64_t>(queued))) return fail("out of room for descriptor %d's queue", r.fd);
    const long n = sys::raw(SYS_recvfrom, r.fd, reinterpret_cast<long>(d + 1), queued, MSG_PEEK | MSG_DONTWAIT, 0, 0);
    if (n != queued) return fail("cannot copy the %d bytes queued to descriptor %d", queued, r.fd);
    d->queued = static_cast<uint64_t>(queued);
    r.detail_len += d->queued;
    return 0;
  }
  // The program's peek offset, put back after (-1, off, when unknown).
  int old_off = -1;
  socklen_t old_len = sizeof old_off;
  if (sys::raw(SYS_getsockopt, r.fd, SOL_SOCKET, SO_PEEK_OFF, reinterpret_cast<long>(&old_off),
               reinterpret_cast<long>(&old_len)) != 0)
    old_off = -1;
  int zero = 0;
  if (sys::raw(SYS_setsockopt, r.fd, SOL_SOCKET, SO_PEEK_OFF, reinterpret_cast<long>(&zero), sizeof zero) != 0)
    return fail("cannot read the messages queued to descriptor %d", r.fd);
  if (senders) d->options |= cap::kSockQueueSenders;
  // Per message: its length, then (senders) the sender's address length
  // and address, then its bytes.
  constexpr size_t kMax = 65536, kAddr = sizeof(sockaddr_un);
  const size_t head = senders ? 8 + kAddr : 4;
  long err = 0;
  for (;;) {
    char *at = g_s.data.take(head + kMax);
    if (!at) {
      err = fail("out of room for descriptor %d's queue", r.fd);
      break;
    }
    iovec iov = {at + head, kMax};
    char ctl[64] = {};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl;
    mh.msg_controllen = sizeof ctl;
    if (senders) {
      mh.msg_name = at + 8;
      mh.msg_namelen = kAddr;
    }
    const long n = sys::raw(SYS_recvmsg, r.fd, reinterpret_cast<long>(&mh), MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0 || n > static_cast<long>(kMax) || (mh.msg_flags & MSG_CTRUNC) || mh.msg_controllen) {
      g_s.data.used -= head + kMax;
      if (n >= 0) err = fail("descriptor %d has a message queued with descriptors or more than 64 KiB (not supported)", r.fd);
      if (n >= 0 && mh.msg_controllen) {
        // Descriptors passed in it were installed by the peek: closed again
        // (after a failed recvmsg the kernel leaves msg_controllen as given).
        for (cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
          if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            for (size_t k = 0; k < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); ++k)
              sys::close(reinterpret_cast<int *>(CMSG_DATA(c))[k]);
      }
      break;
    }
    const uint32_t len = static_cast<uint32_t>(n);
    memcpy(at, &len, 4);
    size_t used = 4 + len;
    if (senders) {
      // The address packed after its length: only what the kernel gave.
      const uint32_t alen = mh.msg_namelen < kAddr ? mh.msg_namelen : static_cast<uint32_t>(kAddr);
      memcpy(at + 4, &alen, 4);
      memmove(at + 8 + alen, at + head, len);
      used = 8 + alen + len;
    }
    g_s.data.used -= head + kMax - used;
    d->queued += used;
    r.detail_len += used;
  }
  sys::raw(SYS_setsockopt, r.fd, SOL_SOCKET, SO_PEEK_OFF, reinterpret_cast<long>(&old_off), sizeof old_off);
  return err;
}

// The queue a capsule keeps: a pair end's, or a bound Unix datagram
// socket's (what the program's own sockets, or any other, sent it and it
// has not read yet), with each sender, sent again at restore from the same
// socket where the sender is the program's.
long take_kept_queue(cap::fd_record &r, cap::fd_socket *&d) {
  if (d->state == static_cast<uint32_t>(cap::socket_state::pair)) return take_queue(r, d);
  if (d->domain == AF_UNIX && d->type == SOCK_DGRAM && d->state == static_cast<uint32_t>(cap::socket_state::bound))
    return take_queue(r, d, true);
  return 0;
}

// Whether a Unix socket's peer (its inode) is one of the process's
// sockets: the dump's table holds every socket record's inode (sorted);
// before the dump, the records.
bool peer_in_process(const diag_state &diag, uint64_t peer_ino, uint32_t n) {
  if (diag.peers.n) return find_peer(diag.peers, peer_ino) != nullptr;
  for (uint32_t j = 0; j < n; ++j)
    if (rec(j)->kind == static_cast<uint32_t>(cap::fd_kind::socket) && rec(j)->ino == peer_ino) return true;
  return false;
}

// A server's many connections come back closed: that a socket is a TCP
// connection (neither listening nor closed) is all the pause needs to
// know, one query (every system call is paid in the pause, thousands of
// times); its family and peer do not change and are read by the writer
// (finish_socket).
bool tcp_connection(int fd, cap::fd_socket &d) {
  tcp_info ti{};
  socklen_t tl = sizeof ti;
  if (sys::raw(SYS_getsockopt, fd, IPPROTO_TCP, TCP_INFO, reinterpret_cast<long>(&ti), reinterpret_cast<long>(&tl)) != 0 ||
      ti.tcpi_state == kTcpClose || ti.tcpi_state == kTcpListen)
    return false;
  d.type = SOCK_STREAM;
  d.protocol = IPPROTO_TCP;
  d.domain = AF_UNSPEC;
  d.state = static_cast<uint32_t>(cap::socket_state::connected);
  return true;
}

}  // namespace

long take_socket(cap::fd_record &r, diag_state &diag, uint32_t n) {
  auto *d = detail<cap::fd_socket>(r);
  if (!d) return fail("out of room for the descriptors");
  const int fd = r.fd;
  if (tcp_connection(fd, *d)) return 0;
  socklen_t len = sizeof d->peer;
  if (sys::raw(SYS_getpeername, fd, reinterpret_cast<long>(d->peer), reinterpret_cast<long>(&len)) == 0)
    d->peer_len = len;
  d->type = sockopt(fd, SOL_SOCKET, SO_TYPE);
  d->domain = sockopt(fd, SOL_SOCKET, SO_DOMAIN);
  if (d->domain != AF_UNIX && d->domain != AF_INET && d->domain != AF_INET6)
    return fail("descriptor %d is a socket of address family %d, which a restore cannot make again (not supported)",
                fd, d->domain);
  d->protocol = sockopt(fd, SOL_SOCKET, SO_PROTOCOL);
  len = sizeof d->local;
  if (sys::raw(SYS_getsockname, fd, reinterpret_cast<long>(d->local), reinterpret_cast<long>(&len)) == 0)
    d->local_len = len;
  uint32_t o = 0;
  if (sockopt(fd, SOL_SOCKET, SO_REUSEADDR)) o |= cap::kSockReuseAddr;
  if (sockopt(fd, SOL_SOCKET, SO_REUSEPORT)) o |= cap::kSockReusePort;
  if (sockopt(fd, SOL_SOCKET, SO_KEEPALIVE)) o |= cap::kSockKeepAlive;
  if (sockopt(fd, SOL_SOCKET, SO_BROADCAST)) o |= cap::kSockBroadcast;
  if (d->domain == AF_UNIX && sockopt(fd, SOL_SOCKET, SO_PASSCRED)) o |= cap::kSockPassCred;
  if (d->domain != AF_UNIX && d->type == SOCK_STREAM && sockopt(fd, IPPROTO_TCP, TCP_NODELAY)) o |= cap::kSockNoDelay;
  if (d->domain == AF_INET6 && sockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY)) o |= cap::kSockV6Only;
  d->options = o;
  const bool listening = sockopt(fd, SOL_SOCKET, SO_ACCEPTCONN);
  d->backlog = 128;
  uint64_t peer_ino = 0;
  if (d->domain == AF_UNIX) {
    int &nl = diag.nl;
    if (nl < 0) {
      nl = static_cast<int>(sys::raw(SYS_socket, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
      if (nl < 0) return fail("cannot ask the kernel about descriptor %d's peer (sock_diag): %s", fd, strerror(-nl));
    }
    // The first few asked alone; past them, one dump for the rest.
    if (!diag.dumped && diag.asked >= kUnixAskEach) {
      diag.dumped = true;
      diag.peers = unix_dump(nl, n);
      if (!diag.peers.n) {
        // A failed dump may leave its answer queued: a fresh socket.
        sys::close(nl);
        nl = static_cast<int>(sys::raw(SYS_socket, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
        if (nl < 0) return fail("cannot ask the kernel about descriptor %d's peer (sock_diag): %s", fd, strerror(-nl));
      }
    }
    uint32_t backlog = 0;
    const unix_peer *known = diag.peers.n ? find_peer(diag.peers, r.ino) : nullptr;
    if (known && known->peer != kNotSeen) {
      peer_ino = known->peer;
      backlog = known->backlog;
    } else if (long e = unix_diag(nl, r.ino, &peer_ino, &backlog); e < 0) {
      return fail("cannot ask the kernel about descriptor %d's peer (sock_diag): %s", fd,
                  strerror(static_cast<int>(-e)));
    } else {
      ++diag.asked;
    }
    if (listening && backlog) d->backlog = backlog;
  }
  bool tcp_in_flight = false;  // a TCP socket past connect() with no peer now: connecting, reset, closing
  if (d->domain != AF_UNIX && d->type == SOCK_STREAM) {
    tcp_info ti{};
    socklen_t tl = sizeof ti;
    if (sys::raw(SYS_getsockopt, fd, IPPROTO_TCP, TCP_INFO, reinterpret_cast<long>(&ti), reinterpret_cast<long>(&tl)) ==
        0) {
      if (listening && ti.tcpi_sacked) d->backlog = ti.tcpi_sacked;  // a listener's sk_max_ack_backlog
      tcp_in_flight = !listening && ti.tcpi_state != kTcpClose;
      if (!listening && ti.tcpi_state == kTcpClose && ti.tcpi_segs_out == 0 && ti.tcpi_segs_in == 0)
        d->options |= cap::kSockOnlyBound;
    }
  }
  const bool in_process = peer_ino && peer_in_process(diag, peer_ino, n);
  if (listening)
    d->state = static_cast<uint32_t>(cap::socket_state::listening);
  else if (in_process)
    d->state = static_cast<uint32_t>(cap::socket_state::pair);
  else if (d->peer_len > sizeof(sa_family_t) || peer_ino || tcp_in_flight)
    d->state = static_cast<uint32_t>(cap::socket_state::connected);
  else if (d->local_len && has_port(d->local, d->local_len))
    d->state = static_cast<uint32_t>(cap::socket_state::bound);
  else
    d->state = static_cast<uint32_t>(cap::socket_state::unbound);
  if (in_process) d->pair = peer_ino;
  return take_kept_queue(r, d);
}

void finish_socket(int fd, cap::fd_socket &d) {
  if (d.state != static_cast<uint32_t>(cap::socket_state::connected) || d.domain != AF_UNSPEC) return;
  d.domain = sockopt(fd, SOL_SOCKET, SO_DOMAIN);
  socklen_t len = sizeof d.peer;
  if (sys::raw(SYS_getpeername, fd, reinterpret_cast<long>(d.peer), reinterpret_cast<long>(&len)) == 0)
    d.peer_len = len;
}

void diag_end(diag_state &diag) {
  if (diag.nl >= 0) sys::close(diag.nl);
  if (diag.peers.v) sys::munmap(diag.peers.v, diag.peers.bytes);
  diag = diag_state{};
}

}  // namespace mmtier::detail::fdcap
