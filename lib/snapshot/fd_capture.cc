// Taking the program's descriptors in the pause (see fd_capture.h).  What
// the kernel shows of each object is read without changing it: a pipe's
// bytes are duplicated with tee(2), a socket's queue is peeked, an eventfd's
// count, a timer's settings and an epoll set's registrations come from
// /proc/self/fdinfo, a Unix socket's peer from sock_diag.
#include "snapshot/fd_capture.h"

#include "platform/dirent.h"
#include "platform/fd_guard.h"
#include "platform/sys.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mmtier::detail {
namespace {

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
} g_s;  // under the snapshot's one-at-a-time lock

char *g_line = nullptr;
size_t g_line_cap = 0;

__attribute__((format(printf, 1, 2))) long fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_line, g_line_cap, fmt, ap);
  va_end(ap);
  return -EOPNOTSUPP;
}

bool reserve() {
  const uint64_t len = kRecordsMax + kPathsMax + kDataMax;
  const long p = sys::mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (sys::failed(p)) return false;
  // A flag no mapping of the image has: never merged with a neighbour.
  sys::madvise(reinterpret_cast<void *>(p), len, MADV_DONTDUMP);
  g_s.lo = static_cast<uintptr_t>(p);
  g_s.hi = g_s.lo + len;
  char *b = reinterpret_cast<char *>(p);
  g_s.recs = {b, 0, 0, kRecordsMax};
  g_s.paths = {b + kRecordsMax, 0, 0, kPathsMax};
  g_s.data = {b + kRecordsMax + kPathsMax, 0, 0, kDataMax};
  return true;
}

cap::fd_record *rec(uint32_t i) { return reinterpret_cast<cap::fd_record *>(g_s.recs.base) + i; }

// /proc/self/fdinfo/N into buf (NUL-terminated); its length or -errno.
long read_fdinfo(int fd, char *buf, size_t cap) {
  char path[48];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
  const long f = sys::openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
  if (f < 0) return f;
  long have = 0;
  for (long n; have < static_cast<long>(cap) - 1 &&
               (n = sys::read(static_cast<int>(f), buf + have, cap - 1 - static_cast<size_t>(have))) > 0;)
    have += n;
  sys::close(static_cast<int>(f));
  buf[have > 0 ? have : 0] = 0;
  return have;
}

// The text after "key" at the start of a line of buf, or null.
const char *field(const char *buf, const char *key) {
  const size_t n = strlen(key);
  for (const char *p = buf; p && *p;) {
    if (!strncmp(p, key, n)) return p + n;
    p = strchr(p, '\n');
    if (p) ++p;
  }
  return nullptr;
}

uint64_t hex_field(const char *buf, const char *key, uint64_t dflt) {
  const char *p = field(buf, key);
  return p ? strtoull(p, nullptr, 16) : dflt;
}

long dec_field(const char *buf, const char *key, long dflt) {
  const char *p = field(buf, key);
  return p ? strtol(p, nullptr, 0) : dflt;
}

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

// Pass 1: every descriptor's identity and kind.
long list_fds(const int *skip, int nskip, uint32_t *count) {
  int guarded[64];
  const int nguarded = fd_guard_list(guarded, 64);
  const long dfd = sys::openat(AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (dfd < 0) return fail("cannot list the descriptors: %s", strerror(static_cast<int>(-dfd)));
  uint32_t n = 0;
  long err = 0;
  char *root = g_s.paths.take(1);
  if (root) *root = 0;
  sys::for_each_dirent(static_cast<int>(dfd), [&](const char *name, unsigned char) -> long {
    if (name[0] < '0' || name[0] > '9' || err) return 0;
    const int fd = static_cast<int>(strtol(name, nullptr, 10));
    if (fd == dfd) return 0;
    for (int k = 0; k < nskip; ++k)
      if (skip[k] == fd) return 0;
    for (int k = 0; k < nguarded; ++k)
      if (guarded[k] == fd) return 0;
    auto *r = reinterpret_cast<cap::fd_record *>(g_s.recs.take(sizeof(cap::fd_record), 8));
    char *path = g_s.paths.take(4097);
    if (!r || !path) {
      err = fail("more descriptors than a snapshot can hold");
      return 0;
    }
    memset(r, 0, sizeof *r);
    r->fd = fd;
    r->same_as = -1;
    // A socket's link says only its inode: made here, not read (a server
    // holds thousands, and every system call is paid in the pause).
    struct stat st;
    long len = -1;
    if (sys::raw(SYS_fstat, fd, reinterpret_cast<long>(&st)) == 0) {
      if (S_ISSOCK(st.st_mode)) {
        len = snprintf(path, 4096, "socket:[%lu]", static_cast<unsigned long>(st.st_ino));
      } else {
        char link[48];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        len = sys::raw(SYS_readlink, reinterpret_cast<long>(link), reinterpret_cast<long>(path), 4096);
      }
    }
    if (len < 0) {
      // Closed meanwhile by nobody (every thread is stopped): not ours.
      g_s.recs.used -= sizeof *r;
      g_s.paths.used -= 4097;
      return 0;
    }
    path[len] = 0;
    g_s.paths.used -= 4097 - static_cast<uint64_t>(len) - 1;
    r->path = static_cast<uint32_t>(path - g_s.paths.base);
    r->flags = static_cast<uint32_t>(sys::raw(SYS_fcntl, fd, F_GETFL));
    r->cloexec = static_cast<uint32_t>(sys::raw(SYS_fcntl, fd, F_GETFD)) & FD_CLOEXEC;
    r->dev = st.st_dev;
    r->ino = st.st_ino;
    r->size = static_cast<uint64_t>(st.st_size);
    const bool named = path[0] == '/' && !strstr(path, " (deleted)");
    cap::fd_kind kind = cap::fd_kind::other;
    if (S_ISREG(st.st_mode) && (named || fd > 2)) {
      // Unnamed above the standard streams: its bytes go into the capsule.
      kind = named ? cap::fd_kind::file : cap::fd_kind::unnamed;
      const long off = sys::raw(SYS_lseek, fd, 0, SEEK_CUR);
      r->offset = off > 0 ? static_cast<uint64_t>(off) : 0;
      if (named) {
        auto *d = detail<cap::fd_file>(*r);
        if (!d) {
          err = fail("out of room for the descriptors");
          return 0;
        }
        d->mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
      }
    } else if (S_ISDIR(st.st_mode) && named) {
      kind = cap::fd_kind::dir;
    } else if ((S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) && named) {
      kind = cap::fd_kind::device;
    } else if (S_ISFIFO(st.st_mode)) {
      kind = cap::fd_kind::pipe;
    } else if (S_ISSOCK(st.st_mode)) {
      kind = cap::fd_kind::socket;
    } else if (!strcmp(path, "anon_inode:[eventfd]")) {
      kind = cap::fd_kind::eventfd;
    } else if (!strcmp(path, "anon_inode:[timerfd]")) {
      kind = cap::fd_kind::timerfd;
    } else if (!strcmp(path, "anon_inode:[signalfd]")) {
      kind = cap::fd_kind::signalfd;
    } else if (!strcmp(path, "anon_inode:[eventpoll]")) {
      kind = cap::fd_kind::epoll;
    }
    r->kind = static_cast<uint32_t>(kind);
    ++n;
    return 0;
  });
  sys::close(static_cast<int>(dfd));
  *count = n;
  return err;
}

bool ino_less(const cap::fd_record &a, const cap::fd_record &b) {
  return a.ino != b.ino ? a.ino < b.ino : a.dev != b.dev ? a.dev < b.dev : a.fd < b.fd;
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

// Sorts idx[0, n) by their records' inode.
void sort_by_ino(uint32_t *idx, uint32_t n) {
  sort_idx(idx, n, [](uint32_t a, uint32_t b) { return ino_less(*rec(a), *rec(b)); });
}

// Records that are one open file (dup, fork's sharing): the later ones
// point at the first.  Only records of one inode can be; kcmp tells which
// are; without it (a kernel built without checkpoint/restore), one socket
// or pipe end per inode and access mode.
constexpr uint32_t kPairwiseMax = 16;  // records of one inode compared pair by pair

long find_dups(uint32_t n) {
  const uint64_t mark = g_s.data.used;
  auto *idx = reinterpret_cast<uint32_t *>(g_s.data.take(uint64_t{n} * 4 + 4, 8));
  if (!idx) return fail("out of room for the descriptors");
  for (uint32_t i = 0; i < n; ++i) idx[i] = i;
  sort_by_ino(idx, n);
  const long pid = sys::getpid();
  bool have_kcmp = true;
  for (uint32_t lo = 0, hi; lo < n; lo = hi) {
    hi = lo + 1;
    while (hi < n && rec(idx[hi])->ino == rec(idx[lo])->ino && rec(idx[hi])->dev == rec(idx[lo])->dev) ++hi;
    // Many records of one inode (eventfds, timerfds, epoll sets and
    // signalfds all share the anonymous inode): sorted by kind and by the
    // kernel's order of their open files (kcmp orders them), then number,
    // the copies of each file follow its first in n log n queries instead
    // of a query per pair.
    if (have_kcmp && hi - lo > kPairwiseMax) {
      bool ordered = true;
      const auto file_less = [&](uint32_t a, uint32_t b) {
        const cap::fd_record &x = *rec(a), &y = *rec(b);
        if (x.kind != y.kind) return x.kind < y.kind;
        const long r = sys::raw(SYS_kcmp, pid, pid, KCMP_FILE, x.fd, y.fd);
        if (r < 0 || r > 2) ordered = false;  // no order: the pairs below decide
        if (r == 1 || r == 2) return r == 1;
        return x.fd < y.fd;
      };
      sort_idx(idx + lo, hi - lo, file_less);
      if (ordered) {
        for (uint32_t x = lo + 1, first = lo; x < hi; ++x) {
          cap::fd_record &a = *rec(idx[x]);
          const cap::fd_record &b = *rec(idx[first]);
          if (a.kind != static_cast<uint32_t>(cap::fd_kind::other) && a.kind == b.kind &&
              sys::raw(SYS_kcmp, pid, pid, KCMP_FILE, a.fd, b.fd) == 0)
            a.same_as = b.fd;
          else
            first = x;
        }
        continue;
      }
      // By number again, for the pairs.
      sort_idx(idx + lo, hi - lo, [](uint32_t a, uint32_t b) { return rec(a)->fd < rec(b)->fd; });
    }
    // Within one inode, in the table's order (by number): a copy points
    // at the first of its open file.
    for (uint32_t x = lo + 1; x < hi; ++x) {
      cap::fd_record &a = *rec(idx[x]);
      if (a.kind == static_cast<uint32_t>(cap::fd_kind::other)) continue;
      for (uint32_t y = lo; y < x; ++y) {
        const cap::fd_record &b = *rec(idx[y]);
        if (b.same_as >= 0 || b.kind != a.kind) continue;
        bool same = false;
        if (have_kcmp) {
          const long r = sys::raw(SYS_kcmp, pid, pid, KCMP_FILE, a.fd, b.fd);
          if (r == -ENOSYS || r == -EPERM) have_kcmp = false;
          same = r == 0;
        }
        if (!have_kcmp)
          same = (a.kind == static_cast<uint32_t>(cap::fd_kind::socket) ||
                  a.kind == static_cast<uint32_t>(cap::fd_kind::pipe)) &&
                 (a.flags & O_ACCMODE) == (b.flags & O_ACCMODE);
        if (same) {
          a.same_as = b.fd;
          break;
        }
      }
    }
  }
  g_s.data.used = mark;
  return 0;
}

// A pipe end: its capacity and, on the first end of each pipe, a copy of
// what is buffered when the program holds a read end (tee duplicates it;
// the program reads it all later).  Bytes on their way to a reader outside
// the process are not the program's: a restore makes the pipe without them
// (and without that reader).
long take_pipe(cap::fd_record &r, uint32_t i, uint32_t n) {
  const char *path = g_s.paths.base + r.path;
  bool first = true;
  for (uint32_t j = 0; j < i; ++j)
    if (rec(j)->kind == r.kind && rec(j)->ino == r.ino && rec(j)->dev == r.dev) first = false;
  int rd = -1;
  for (uint32_t j = 0; first && rd < 0 && j < n; ++j) {
    const cap::fd_record &o = *rec(j);
    if (o.kind == r.kind && o.ino == r.ino && o.dev == r.dev && (o.flags & O_ACCMODE) != O_WRONLY) rd = o.fd;
  }
  int queued = 0;
  if (rd >= 0 && sys::raw(SYS_ioctl, rd, FIONREAD, reinterpret_cast<long>(&queued)) != 0) queued = 0;
  auto *d = detail<cap::fd_pipe>(r, static_cast<uint64_t>(queued));
  long err = 0;
  if (!d) {
    err = fail("the bytes buffered in the pipes are more than a snapshot holds");
  } else {
    d->id = r.ino;
    d->fifo = path[0] == '/';
    const long c = sys::raw(SYS_fcntl, r.fd, F_GETPIPE_SZ);
    d->capacity = c > 0 ? static_cast<uint32_t>(c) : 65536;
    d->queued = static_cast<uint64_t>(queued);
  }
  if (!err && queued > 0) {
    // One tee into a pipe as large takes all of it (tee starts at the
    // front each time: never twice).
    int tmp[2];
    long got = 0;
    if (sys::raw(SYS_pipe2, reinterpret_cast<long>(tmp), O_CLOEXEC | O_NONBLOCK) == 0) {
      sys::raw(SYS_fcntl, tmp[1], F_SETPIPE_SZ, static_cast<long>(d->capacity));
      const long t = sys::raw(SYS_tee, rd, tmp[1], queued, SPLICE_F_NONBLOCK);
      auto *out = reinterpret_cast<char *>(d + 1);
      for (long m; got < t && (m = sys::read(tmp[0], out + got, static_cast<size_t>(t - got))) > 0;) got += m;
      sys::close(tmp[0]);
      sys::close(tmp[1]);
    }
    if (got != queued) err = fail("cannot copy the %d bytes buffered in the pipe of descriptor %d", queued, r.fd);
  }
  return err;
}

// A detail of T filled from the descriptor's fdinfo by fill(buf, d).
template <class T, class F>
long from_fdinfo(cap::fd_record &r, const char *what, F &&fill) {
  char buf[512];
  if (read_fdinfo(r.fd, buf, sizeof buf) < 0) return fail("cannot read descriptor %d's %s", r.fd, what);
  T *d = detail<T>(r);
  if (!d) return fail("out of room for the descriptors");
  fill(buf, d);
  return 0;
}

long take_eventfd(cap::fd_record &r) {
  return from_fdinfo<cap::fd_eventfd>(r, "eventfd", [](const char *buf, cap::fd_eventfd *d) {
    d->count = hex_field(buf, "eventfd-count:", 0);
    d->semaphore = static_cast<uint32_t>(dec_field(buf, "eventfd-semaphore:", 0));
  });
}

// "(sec, nsec)" after key.
void pair_field(const char *buf, const char *key, int64_t *a, int64_t *b) {
  const char *p = field(buf, key);
  *a = *b = 0;
  if (!p || !(p = strchr(p, '('))) return;
  char *end = nullptr;
  *a = strtoll(p + 1, &end, 10);
  if (end && *end == ',') *b = strtoll(end + 1, nullptr, 10);
}

void timer_from(const char *buf, cap::fd_timerfd *d) {
  d->clockid = static_cast<int32_t>(dec_field(buf, "clockid:", CLOCK_MONOTONIC));
  d->ticks = static_cast<uint64_t>(dec_field(buf, "ticks:", 0));
  d->settime_flags = static_cast<uint32_t>(strtoul(field(buf, "settime flags:") ?: "0", nullptr, 8));
  pair_field(buf, "it_value:", &d->value_sec, &d->value_nsec);
  pair_field(buf, "it_interval:", &d->interval_sec, &d->interval_nsec);
  // The kernel shows what is left.  An absolute timer on a clock that means
  // the same after a reboot keeps its instant; on the others what is left.
  constexpr uint32_t kAbs = 1;  // TFD_TIMER_ABSTIME
  const bool wall = d->clockid == CLOCK_REALTIME || d->clockid == CLOCK_REALTIME_ALARM;
  if ((d->settime_flags & kAbs) && wall && (d->value_sec || d->value_nsec)) {
    struct timespec now;
    sys::raw(SYS_clock_gettime, CLOCK_REALTIME, reinterpret_cast<long>(&now));
    d->value_sec += now.tv_sec;
    d->value_nsec += now.tv_nsec;
    if (d->value_nsec >= 1'000'000'000) {
      d->value_nsec -= 1'000'000'000;
      ++d->value_sec;
    }
  } else {
    d->settime_flags &= ~kAbs;
  }
}

long take_timerfd(cap::fd_record &r) { return from_fdinfo<cap::fd_timerfd>(r, "timer", timer_from); }

long take_signalfd(cap::fd_record &r) {
  return from_fdinfo<cap::fd_signalfd>(
      r, "signalfd", [](const char *buf, cap::fd_signalfd *d) { d->mask = hex_field(buf, "sigmask:", 0); });
}

// The record of descriptor fd (records are in ascending order of number,
// as /proc/self/fd lists them), or nullptr.
const cap::fd_record *record_of(int fd, uint32_t n) {
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

// An epoll set keys a registration by file and number, and the number may
// since hold another file (closed, reused) while the registered file lives
// on under another number.  Each entry's tfd becomes the number that holds
// its file now: a socket's inode is its own, so the number holding that
// inode is right; any other file (the anonymous inode every eventfd,
// timerfd, signalfd and epoll set shares; a pipe's two ends) is compared
// by the kernel (kcmp KCMP_EPOLL_TFD).  Last entry first: an entry's place
// among those of its number (toff) counts the entries before it, still
// unchanged.
long resolve_epoll(const cap::fd_record &r, cap::fd_epoll_entry *e, size_t count, uint32_t n, bool *have_kcmp) {
  const long pid = sys::getpid();
  for (size_t k = count; k-- > 0;) {
    const cap::fd_record *at = record_of(e[k].tfd, n);
    if (at && at->ino == e[k].ino && at->kind == static_cast<uint32_t>(cap::fd_kind::socket)) continue;
    if (!*have_kcmp) continue;  // the restore matches by number and inode
    kcmp_epoll_slot slot{static_cast<uint32_t>(r.fd), static_cast<uint32_t>(e[k].tfd), 0};
    for (size_t j = 0; j < k; ++j) slot.toff += e[j].tfd == e[k].tfd;
    const auto same = [&](int fd) {
      const long c = sys::raw(SYS_kcmp, pid, pid, KCMP_EPOLL_TFD, fd, reinterpret_cast<long>(&slot));
      if (c == -ENOSYS || c == -EPERM) *have_kcmp = false;
      return c == 0;
    };
    if (at && at->ino == e[k].ino && same(at->fd)) continue;
    if (!*have_kcmp) continue;
    int32_t holder = -1;
    for (uint32_t i = 0; i < n && holder < 0 && *have_kcmp; ++i)
      if (rec(i)->ino == e[k].ino && rec(i)->fd != e[k].tfd && same(rec(i)->fd)) holder = rec(i)->fd;
    if (!*have_kcmp) continue;
    if (holder < 0)
      return fail("descriptor %d's epoll set holds a file registered as descriptor %d, which no descriptor of the "
                  "process holds now (closed here, open elsewhere): a restore could not register it again",
                  r.fd, e[k].tfd);
    e[k].tfd = holder;
  }
  return 0;
}

// One entry per "tfd:" line of the fdinfo, read a piece at a time (a set
// of a hundred thousand registrations is several MiB of text).
long take_epoll(cap::fd_record &r, uint32_t n, bool *have_kcmp) {
  char path[48];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", r.fd);
  const long f = sys::openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
  if (f < 0) return fail("cannot read descriptor %d's epoll set", r.fd);
  // Aligned and taken (an empty set takes nothing: its offset must still
  // lie within the table).
  if (!g_s.data.take(0, 8)) {
    sys::close(static_cast<int>(f));
    return fail("out of room for descriptor %d's epoll set", r.fd);
  }
  r.detail = g_s.data.used;
  r.detail_len = 0;
  char buf[8192];
  size_t have = 0;
  long err = 0;
  for (;;) {
    const long n = sys::read(static_cast<int>(f), buf + have, sizeof buf - 1 - have);
    if (n < 0) err = fail("cannot read descriptor %d's epoll set", r.fd);
    if (n <= 0) break;
    have += static_cast<size_t>(n);
    buf[have] = 0;
    char *p = buf;
    for (char *nl; (nl = strchr(p, '\n')); p = nl + 1) {
      *nl = 0;
      if (strncmp(p, "tfd:", 4)) continue;
      auto *e = reinterpret_cast<cap::fd_epoll_entry *>(g_s.data.take(sizeof(cap::fd_epoll_entry), 8));
      if (!e) {
        err = fail("out of room for descriptor %d's epoll set", r.fd);
        break;
      }
      const char *ev = strstr(p, "events:"), *data = strstr(p, "data:"), *ino = strstr(p, "ino:");
      e->tfd = static_cast<int32_t>(strtol(p + 4, nullptr, 10));
      e->events = ev ? static_cast<uint32_t>(strtoul(ev + 7, nullptr, 16)) : 0;
      e->data = data ? strtoull(data + 5, nullptr, 16) : 0;
      e->ino = ino ? strtoull(ino + 4, nullptr, 16) : 0;
      r.detail_len += sizeof *e;
    }
    if (err) break;
    have = static_cast<size_t>(buf + have - p);
    memmove(buf, p, have);
    if (have == sizeof buf - 1) have = 0;  // a line longer than any the kernel writes
  }
  sys::close(static_cast<int>(f));
  if (err) return err;
  return resolve_epoll(r, reinterpret_cast<cap::fd_epoll_entry *>(g_s.data.base + r.detail),
                       r.detail_len / sizeof(cap::fd_epoll_entry), n, have_kcmp);
}

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

// The peers and backlogs of many Unix sockets from one sock_diag dump of
// the namespace's Unix sockets (a query each is two system calls in the
// pause), sorted by inode.  peer kNotSeen: not in the dump (asked alone).
struct unix_peer {
  uint64_t ino, peer;
  uint32_t backlog, pad;
};
constexpr uint64_t kNotSeen = ~uint64_t{0};
constexpr uint32_t kUnixAskEach = 16;  // sockets asked one by one up to this many
struct unix_peers {
  unix_peer *v = nullptr;
  uint32_t n = 0;
  size_t bytes = 0;
};

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

int sockopt(int fd, int level, int name) {
  int v = 0;
  socklen_t len = sizeof v;
  return sys::raw(SYS_getsockopt, fd, level, name, reinterpret_cast<long>(&v), reinterpret_cast<long>(&len)) == 0 ? v
                                                                                                                  : 0;
}

// The messages or bytes queued to one end of a pair within the process,
// peeked (SO_PEEK_OFF walks a datagram queue message by message).
long take_queue(cap::fd_record &r, cap::fd_socket *&d) {
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
  long err = 0;
  for (;;) {
    char *at = g_s.data.take(4 + 65536);
    if (!at) {
      err = fail("out of room for descriptor %d's queue", r.fd);
      break;
    }
    iovec iov = {at + 4, 65536};
    char ctl[64] = {};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl;
    mh.msg_controllen = sizeof ctl;
    const long n = sys::raw(SYS_recvmsg, r.fd, reinterpret_cast<long>(&mh), MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0 || n > 65536 || (mh.msg_flags & MSG_CTRUNC) || mh.msg_controllen) {
      g_s.data.used -= 4 + 65536;
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
    g_s.data.used -= 65536 - len;
    d->queued += 4 + len;
    r.detail_len += 4 + len;
  }
  sys::raw(SYS_setsockopt, r.fd, SOL_SOCKET, SO_PEEK_OFF, reinterpret_cast<long>(&old_off), sizeof old_off);
  return err;
}

// The netlink socket for sock_diag (made on first use), and the table of
// one dump when the process has many sockets.
struct diag_state {
  int nl = -1;
  uint32_t asked = 0;  // Unix sockets asked about alone
  bool dumped = false;
  unix_peers peers;
};

long take_socket(cap::fd_record &r, diag_state &diag, uint32_t n) {
  auto *d = detail<cap::fd_socket>(r);
  if (!d) return fail("out of room for the descriptors");
  const int fd = r.fd;
  // A server's many connections come back closed: their peer's family and
  // their type are all there is to know (every system call is paid in
  // the pause, thousands of times).
  socklen_t len = sizeof d->peer;
  if (sys::raw(SYS_getpeername, fd, reinterpret_cast<long>(d->peer), reinterpret_cast<long>(&len)) == 0)
    d->peer_len = len;
  d->type = sockopt(fd, SOL_SOCKET, SO_TYPE);
  const int peer_family = d->peer_len ? reinterpret_cast<const sockaddr *>(d->peer)->sa_family : AF_UNSPEC;
  if ((peer_family == AF_INET || peer_family == AF_INET6) && d->type == SOCK_STREAM) {
    d->domain = peer_family;
    d->protocol = IPPROTO_TCP;
    d->state = static_cast<uint32_t>(cap::socket_state::connected);
    return 0;
  }
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
      tcp_in_flight = !listening && ti.tcpi_state != 7 /* TCP_CLOSE */;
      if (!listening && ti.tcpi_state == 7 && ti.tcpi_segs_out == 0 && ti.tcpi_segs_in == 0)
        d->options |= cap::kSockOnlyBound;
    }
  }
  bool in_process = false;
  for (uint32_t j = 0; peer_ino && j < n; ++j)
    if (rec(j)->kind == static_cast<uint32_t>(cap::fd_kind::socket) && rec(j)->ino == peer_ino) in_process = true;
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
  if (in_process) {
    d->pair = peer_ino;
    return take_queue(r, d);
  }
  return 0;
}

// Pass 2: what each kind keeps, for the first descriptor of each open
// file; then what stays the restoring command's: a pipe or connected
// socket on 0-2 whose peer is not the program's (a shell's pipe, a
// journal's socket).
// A deleted file, O_TMPFILE file or memfd: its bytes, whole (read through
// a descriptor of its own: the program's may be write-only, and its offset
// must not move), and a memfd's seals.
long take_unnamed(cap::fd_record &r, uint64_t *total) {
  const char *path = g_s.paths.base + r.path;
  if (r.size > cap::kUnnamedMax - *total)
    return fail("descriptor %d is %s, an unnamed file of %llu bytes: a snapshot keeps at most %llu MiB of such files",
                r.fd, path, static_cast<unsigned long long>(r.size),
                static_cast<unsigned long long>(cap::kUnnamedMax >> 20));
  auto *d = detail<cap::fd_unnamed>(r, r.size);
  if (!d) return fail("out of room for the content of descriptor %d", r.fd);
  d->size = r.size;
  d->memfd = !strncmp(path, "/memfd:", 7);
  const long seals = d->memfd ? sys::raw(SYS_fcntl, r.fd, F_GET_SEALS) : 0;
  d->seals = seals > 0 ? static_cast<uint32_t>(seals) : 0;
  char link[48];
  snprintf(link, sizeof link, "/proc/self/fd/%d", r.fd);
  const long in = sys::openat(AT_FDCWD, link, O_RDONLY | O_CLOEXEC, 0);
  if (in < 0) return fail("cannot read descriptor %d (%s): error %ld", r.fd, path, -in);
  auto *out = reinterpret_cast<char *>(d + 1);
  uint64_t got = 0;
  for (long m; got < r.size && (m = sys::pread(static_cast<int>(in), out + got, r.size - got,
                                                static_cast<off_t>(got))) > 0;)
    got += static_cast<uint64_t>(m);
  sys::close(static_cast<int>(in));
  if (got != r.size) return fail("cannot read the %llu bytes of descriptor %d (%s)",
                                 static_cast<unsigned long long>(r.size), r.fd, path);
  *total += r.size;
  return 0;
}

long take_details(uint32_t n) {
  uint64_t unnamed = 0;
  diag_state diag;
  long err = 0;
  bool have_kcmp = true;
  for (uint32_t i = 0; i < n && !err; ++i) {
    cap::fd_record &r = *rec(i);
    if (r.same_as >= 0) continue;
    switch (static_cast<cap::fd_kind>(r.kind)) {
      case cap::fd_kind::pipe: err = take_pipe(r, i, n); break;
      case cap::fd_kind::eventfd: err = take_eventfd(r); break;
      case cap::fd_kind::timerfd: err = take_timerfd(r); break;
      case cap::fd_kind::signalfd: err = take_signalfd(r); break;
      case cap::fd_kind::epoll: err = take_epoll(r, n, &have_kcmp); break;
      case cap::fd_kind::socket: err = take_socket(r, diag, n); break;
      case cap::fd_kind::unnamed: err = take_unnamed(r, &unnamed); break;
      default: break;
    }
  }
  if (diag.nl >= 0) sys::close(diag.nl);
  if (diag.peers.v) sys::munmap(diag.peers.v, diag.peers.bytes);
  if (err) return err;
  for (uint32_t i = 0; i < n; ++i) {
    cap::fd_record &r = *rec(i);
    if (r.fd > 2) continue;
    const cap::fd_record *lead = &r;
    for (uint32_t j = 0; r.same_as >= 0 && j < n; ++j)
      if (rec(j)->fd == r.same_as) lead = rec(j);
    bool outside = false;
    if (r.kind == static_cast<uint32_t>(cap::fd_kind::pipe)) {
      // The other end among the program's descriptors?
      const int mode = static_cast<int>(r.flags & O_ACCMODE);
      outside = mode != O_RDWR;
      for (uint32_t j = 0; outside && j < n; ++j) {
        const cap::fd_record &o = *rec(j);
        if (o.kind == r.kind && o.ino == r.ino && o.dev == r.dev && static_cast<int>(o.flags & O_ACCMODE) != mode)
          outside = false;
      }
    } else if (r.kind == static_cast<uint32_t>(cap::fd_kind::socket) && lead->detail_len) {
      const auto *d = reinterpret_cast<const cap::fd_socket *>(g_s.data.base + lead->detail);
      outside = d->state == static_cast<uint32_t>(cap::socket_state::connected);
    }
    if (outside) r.kind = static_cast<uint32_t>(cap::fd_kind::other);
  }
  // A copy above 2 of such a stream is the command's stream too.
  for (uint32_t i = 0; i < n; ++i) {
    cap::fd_record &r = *rec(i);
    for (uint32_t j = 0; r.same_as >= 0 && j < n; ++j)
      if (rec(j)->fd == r.same_as) r.kind = rec(j)->kind;
  }
  return 0;
}

}  // namespace

long fd_capture(const int *skip, int nskip, fd_table *out, char *line, size_t cap) {
  g_line = line;
  g_line_cap = cap;
  memset(out, 0, sizeof *out);
  if (!g_s.lo && !reserve()) {
    snprintf(line, cap, "out of memory for the descriptor table");
    return -ENOMEM;
  }
  g_s.recs.used = g_s.paths.used = g_s.data.used = 0;
  uint32_t n = 0;
  if (long r = list_fds(skip, nskip, &n); r < 0) return r;
  if (long r = find_dups(n); r < 0) return r;
  if (long r = take_details(n); r < 0) return r;
  out->fds = rec(0);
  out->nfds = n;
  out->paths = g_s.paths.base;
  out->data = reinterpret_cast<const unsigned char *>(g_s.data.base);
  out->data_len = g_s.data.used;
  out->scratch_lo = g_s.lo;
  out->scratch_hi = g_s.hi;
  return 0;
}

void fd_capture_release() {
  if (!g_s.lo) return;
  sys::munmap(reinterpret_cast<void *>(g_s.lo), g_s.hi - g_s.lo);
  g_s = scratch{};
}

void fd_capture_forget() { g_s = scratch{}; }

long fd_unsupported(int fd, const char *target, char *line, size_t cap) {
  g_line = line;
  g_line_cap = cap;
  static constexpr const char *kMade[] = {"anon_inode:[eventfd]", "anon_inode:[timerfd]", "anon_inode:[signalfd]",
                                          "anon_inode:[eventpoll]"};
  if (!strncmp(target, "anon_inode:", 11)) {
    for (const char *k : kMade)
      if (!strcmp(target, k)) return 0;
    return fail("descriptor %d is %s, which a restore cannot make again (not supported)", fd, target);
  }
  if (!strncmp(target, "socket:", 7)) {
    const int domain = sockopt(fd, SOL_SOCKET, SO_DOMAIN);
    if (domain != AF_UNIX && domain != AF_INET && domain != AF_INET6)
      return fail("descriptor %d is a socket of address family %d, which a restore cannot make again (not supported)",
                  fd, domain);
  }
  return 0;
}

}  // namespace mmtier::detail
