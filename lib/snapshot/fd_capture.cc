// Taking the program's descriptors in the pause (see fd_capture.h).  What
// the kernel shows of each object is read without changing it: a pipe's
// bytes are duplicated with tee(2), a socket's queue is peeked, an eventfd's
// count, a timer's settings and an epoll set's registrations come from
// /proc/self/fdinfo; sockets are taken by fd_socket.cc (a Unix socket's
// peer from sock_diag).
#include "snapshot/fd_capture.h"

#include "snapshot/fd_capture_parts.h"

#include "heap/faults.h"
#include "platform/dirent.h"
#include "platform/fd_guard.h"
#include "platform/sys.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mmtier::detail {
namespace fdcap {

scratch g_s;

namespace {
char *g_line = nullptr;
size_t g_line_cap = 0;
}  // namespace

__attribute__((format(printf, 1, 2))) long fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_line, g_line_cap, fmt, ap);
  va_end(ap);
  return -EOPNOTSUPP;
}

}  // namespace fdcap

namespace {

namespace cap = capsule;
using namespace fdcap;

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


// /proc/self/fdinfo/N into buf (NUL-terminated); its length or -errno.
long read_fdinfo(int fd, char *buf, size_t cap) {
  char path[48];
  snprintf(path, sizeof path, "/proc/thread-self/fdinfo/%d", fd);
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

// Pass 1: every descriptor's identity and kind.
long list_fds(const int *skip, int nskip, uint32_t *count) {
  int guarded[64];
  const int nguarded = fd_guard_list(guarded, 64);
  const long dfd = sys::openat(AT_FDCWD, "/proc/thread-self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
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
        snprintf(link, sizeof link, "/proc/thread-self/fd/%d", fd);
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
    // The open file's flags are shared with the program and taken now;
    // the number's close-on-exec flag is the table's, read by the writer
    // from its copy (fd_capture_finish).
    r->flags = static_cast<uint32_t>(sys::raw(SYS_fcntl, fd, F_GETFL));
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

// Sorts idx[0, n) by their records' inode.
void sort_by_ino(uint32_t *idx, uint32_t n) {
  sort_idx(idx, n, [](uint32_t a, uint32_t b) { return ino_less(*rec(a), *rec(b)); });
}

// Records that are one open file (dup, fork's sharing): the later ones
// point at the first.  Only records of one inode can be; kcmp tells which
// are; without it (a kernel built without checkpoint/restore), one socket
// or pipe end per inode and access mode.
constexpr uint32_t kPairwiseMax = 16;  // records of one inode compared pair by pair

// The eventfd-id line of an eventfd's fdinfo (Linux 5.2); false without.
bool eventfd_id(int fd, uint64_t *id) {
  char buf[512];
  if (read_fdinfo(fd, buf, sizeof buf) < 0) return false;
  const char *p = field(buf, "eventfd-id:");
  if (!p) return false;
  *id = strtoull(p, nullptr, 10);
  return true;
}

long find_dups(uint32_t n) {
  const uint64_t mark = g_s.data.used;
  auto *idx = reinterpret_cast<uint32_t *>(g_s.data.take(uint64_t{n} * 4 + 4, 8));
  if (!idx) return fail("out of room for the descriptors");
  for (uint32_t i = 0; i < n; ++i) idx[i] = i;
  sort_by_ino(idx, n);
  const long pid = sys::getpid();
  bool have_kcmp = true;
  uint64_t *ids = nullptr;  // eventfd-id by record, for the groups sorted
  for (uint32_t lo = 0, hi; lo < n; lo = hi) {
    hi = lo + 1;
    while (hi < n && rec(idx[hi])->ino == rec(idx[lo])->ino && rec(idx[hi])->dev == rec(idx[lo])->dev) ++hi;
    // Many records of one inode (eventfds, timerfds, epoll sets and
    // signalfds all share the anonymous inode): sorted by kind and by the
    // kernel's order of their open files, then number, the copies of each
    // file follow its first, and one query each tells whether it is its
    // neighbour's file, instead of a query per pair.
    if (have_kcmp && hi - lo > kPairwiseMax) {
      // An eventfd's fdinfo names its context (eventfd-id, one per open
      // file): eventfds are ordered and matched by it, without a query.
      if (!ids && (ids = reinterpret_cast<uint64_t *>(g_s.data.take(uint64_t{n} * 8, 8))) == nullptr)
        return fail("out of room for the descriptors");
      bool by_id = true;
      for (uint32_t x = lo; x < hi && by_id; ++x)
        if (rec(idx[x])->kind == static_cast<uint32_t>(cap::fd_kind::eventfd))
          by_id = eventfd_id(rec(idx[x])->fd, &ids[idx[x]]);
      const auto eventfds = [&](const cap::fd_record &x) {
        return by_id && x.kind == static_cast<uint32_t>(cap::fd_kind::eventfd);
      };
      // The others an epoll set can hold: by their place in one (else
      // kcmp orders them, n log n queries: 0.3 s of the pause for 18 000
      // timerfds); those of no kind kept are never matched, by number.
      const bool by_place = rank_by_set(idx + lo, hi - lo, n, ids);
      const auto placed = [&](const cap::fd_record &x) { return by_place && rankable(x); };
      bool ordered = true;
      const auto file_less = [&](uint32_t a, uint32_t b) {
        const cap::fd_record &x = *rec(a), &y = *rec(b);
        if (x.kind != y.kind) return x.kind < y.kind;
        if (eventfds(x) || placed(x)) return ids[a] != ids[b] ? ids[a] < ids[b] : x.fd < y.fd;
        if (x.kind == static_cast<uint32_t>(cap::fd_kind::other)) return x.fd < y.fd;
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
              (eventfds(a) ? ids[idx[x]] == ids[idx[first]] : sys::raw(SYS_kcmp, pid, pid, KCMP_FILE, a.fd, b.fd) == 0))
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
  snprintf(link, sizeof link, "/proc/thread-self/fd/%d", r.fd);
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
  diag_end(diag);
  if (err) return err;
  for (uint32_t i = 0; i < n; ++i) {
    cap::fd_record &r = *rec(i);
    if (r.fd > 2) continue;
    const cap::fd_record *lead = r.same_as >= 0 ? record_of(r.same_as, n) : &r;
    if (!lead) lead = &r;
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
    if (r.same_as < 0) continue;
    if (const cap::fd_record *lead = record_of(r.same_as, n)) r.kind = lead->kind;
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

void fd_capture_finish(const fd_table &t) {
  auto *fds = const_cast<cap::fd_record *>(t.fds);
  for (uint32_t i = 0; i < t.nfds; ++i) {
    cap::fd_record &r = fds[i];
    const long fl = sys::raw(SYS_fcntl, r.fd, F_GETFD);
    r.cloexec = fl > 0 ? static_cast<uint32_t>(fl) & FD_CLOEXEC : 0;
    if (r.same_as < 0 && r.kind == static_cast<uint32_t>(cap::fd_kind::socket) && r.detail_len)
      finish_socket(r.fd, *reinterpret_cast<cap::fd_socket *>(const_cast<unsigned char *>(t.data) + r.detail));
  }
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

namespace {

long scan_fds(int own_fd, char *line, size_t cap, bool *uffd) {
  long found = 0;
  int guarded[64];
  const int nguarded = fd_guard_list(guarded, 64);
  const long dfd = sys::openat(AT_FDCWD, "/proc/thread-self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (dfd < 0) return 0;
  sys::for_each_dirent(static_cast<int>(dfd), [&](const char *name, unsigned char) -> long {
    if (name[0] < '0' || name[0] > '9' || found) return 0;
    const int fd = static_cast<int>(strtol(name, nullptr, 10));
    if (fd == dfd || fd == own_fd) return 0;
    for (int k = 0; k < nguarded; ++k)
      if (guarded[k] == fd) return 0;
    char link[64], target[256];
    snprintf(link, sizeof link, "/proc/thread-self/fd/%d", fd);
    const long n = sys::raw(SYS_readlink, reinterpret_cast<long>(link), reinterpret_cast<long>(target),
                            sizeof target - 1);
    if (n <= 0) return 0;
    target[n] = 0;
    found = fd_unsupported(fd, target, line, cap);
    *uffd = found && strstr(target, "[userfaultfd]");
    return 0;
  });
  sys::close(static_cast<int>(dfd));
  return found;
}

}  // namespace

long fds_unsupported(int own_fd, char *line, size_t cap) {
  bool uffd = false;
  const long found = scan_fds(own_fd, line, cap, &uffd);
  if (!uffd) return found;
  faults_start_settle();
  return scan_fds(own_fd, line, cap, &uffd);
}

}  // namespace mmtier::detail
