// The epoll part of the descriptor capture: an epoll set's registrations,
// each on the number that holds its file now, and the kernel's order of
// the open files of kinds without an id, had from an epoll set of the
// capture's own.  In the pause, no allocation.
#include "snapshot/fd_capture_parts.h"

#include "platform/sys.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/epoll.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mmtier::detail::fdcap {

namespace {

// Each "tfd:" line of epoll set fd's fdinfo (its registrations, in the
// order of its tree), read a piece at a time (a set of a hundred thousand
// registrations is several MiB of text): on(line) for each, false to stop.
// 0, or -errno.
template <class F>
long for_each_registration(int fd, F &&on) {
  char path[48];
  snprintf(path, sizeof path, "/proc/thread-self/fdinfo/%d", fd);
  const long f = sys::openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
  if (f < 0) return f;
  char buf[8192];
  size_t have = 0;
  long err = 0;
  for (bool go = true; go;) {
    const long n = sys::read(static_cast<int>(f), buf + have, sizeof buf - 1 - have);
    if (n < 0) err = n;
    if (n <= 0) break;
    have += static_cast<size_t>(n);
    buf[have] = 0;
    char *p = buf;
    for (char *nl; go && (nl = strchr(p, '\n')); p = nl + 1) {
      *nl = 0;
      if (!strncmp(p, "tfd:", 4)) go = on(static_cast<const char *>(p));
    }
    have = static_cast<size_t>(buf + have - p);
    memmove(buf, p, have);
    if (have == sizeof buf - 1) have = 0;  // a line longer than any the kernel writes
  }
  sys::close(static_cast<int>(f));
  return err;
}

// Whether the set r.fd holds a registration of the file at number tfd
// under that number, asked of the set itself: EPOLL_CTL_ADD of a pair the
// set holds fails with EEXIST, which the kernel finds by key (file,
// number) in the set's tree before it changes anything.  Had the set no
// such pair, the add went through and is taken back at once (the
// program's threads are stopped; a waiter elsewhere sees at most a
// wakeup that finds nothing).
bool set_holds(int epfd, int tfd) {
  epoll_event ev{};
  const long c = sys::raw(SYS_epoll_ctl, epfd, EPOLL_CTL_ADD, tfd, reinterpret_cast<long>(&ev));
  if (c == 0) sys::raw(SYS_epoll_ctl, epfd, EPOLL_CTL_DEL, tfd, reinterpret_cast<long>(&ev));
  return c == -EEXIST;
}

// An epoll set keys a registration by file and number, and the number may
// since hold another file (closed, reused) while the registered file lives
// on under another number.  Each entry's tfd becomes the number that holds
// its file now: a socket's inode is its own, so the number holding that
// inode is right.  Any other file (the anonymous inode every eventfd,
// timerfd, signalfd and epoll set shares; a pipe's two ends): the only
// entry of its number is the file at that number if the set holds that
// pair (set_holds: a lookup in the set's tree).  Otherwise, and where one
// number has several entries, the kernel compares (kcmp KCMP_EPOLL_TFD),
// which finds an entry by its number and its place among the entries of
// that number in the set's order, the fdinfo's (toff), walking the set
// from its start: K such queries cost K*K/2 steps (3.5 s in the pause for
// 18 000 eventfds in one set).  Last entry first, so that the numbers of
// those before it are still the set's.
long resolve_epoll_entries(const cap::fd_record &r, cap::fd_epoll_entry *e, const uint32_t *toff,
                           const uint32_t *ntfd, size_t count, uint32_t n, bool *have_kcmp) {
  const long pid = sys::getpid();
  for (size_t k = count; k-- > 0;) {
    const cap::fd_record *at = record_of(e[k].tfd, n);
    if (at && at->ino == e[k].ino && at->kind == static_cast<uint32_t>(cap::fd_kind::socket)) continue;
    if (!*have_kcmp) continue;  // the restore matches by number and inode
    if (at && at->ino == e[k].ino && ntfd[k] == 1 && set_holds(r.fd, e[k].tfd)) continue;
    kcmp_epoll_slot slot{static_cast<uint32_t>(r.fd), static_cast<uint32_t>(e[k].tfd), toff[k]};
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

// Every entry's toff and the number of entries of its number at once:
// their indices sorted by number (scratch space after the entries, given
// back).
long resolve_epoll(const cap::fd_record &r, cap::fd_epoll_entry *e, size_t count, uint32_t n, bool *have_kcmp) {
  if (!*have_kcmp || count == 0) return 0;  // the restore matches by number and inode
  if (count > UINT32_MAX / 3) return fail("descriptor %d's epoll set is too large", r.fd);
  const uint64_t mark = g_s.data.used;
  auto *idx = reinterpret_cast<uint32_t *>(g_s.data.take(3 * count * sizeof(uint32_t), 4));
  if (!idx) return fail("out of room for descriptor %d's epoll set", r.fd);
  uint32_t *toff = idx + count, *ntfd = toff + count;
  for (uint32_t k = 0; k < count; ++k) idx[k] = k;
  sort_idx(idx, static_cast<uint32_t>(count),
           [e](uint32_t a, uint32_t b) { return e[a].tfd != e[b].tfd ? e[a].tfd < e[b].tfd : a < b; });
  for (uint32_t i = 0, first = 0; i < count; ++i) {
    if (i && e[idx[i]].tfd != e[idx[i - 1]].tfd) first = i;
    toff[idx[i]] = i - first;
    if (i + 1 == count || e[idx[i + 1]].tfd != e[idx[i]].tfd)
      for (uint32_t j = first; j <= i; ++j) ntfd[idx[j]] = i - first + 1;
  }
  const long err = resolve_epoll_entries(r, e, toff, ntfd, count, n, have_kcmp);
  g_s.data.used = mark;
  return err;
}

}  // namespace

// One entry per registration.
long take_epoll(cap::fd_record &r, uint32_t n, bool *have_kcmp) {
  // Aligned and taken (an empty set takes nothing: its offset must still
  // lie within the table).
  if (!g_s.data.take(0, 8)) return fail("out of room for descriptor %d's epoll set", r.fd);
  r.detail = g_s.data.used;
  r.detail_len = 0;
  bool room = true;
  const long err = for_each_registration(r.fd, [&](const char *p) {
    auto *e = reinterpret_cast<cap::fd_epoll_entry *>(g_s.data.take(sizeof(cap::fd_epoll_entry), 8));
    if (!e) return room = false;
    const char *ev = strstr(p, "events:"), *data = strstr(p, "data:"), *ino = strstr(p, "ino:");
    e->tfd = static_cast<int32_t>(strtol(p + 4, nullptr, 10));
    e->events = ev ? static_cast<uint32_t>(strtoul(ev + 7, nullptr, 16)) : 0;
    e->data = data ? strtoull(data + 5, nullptr, 16) : 0;
    e->ino = ino ? strtoull(ino + 4, nullptr, 16) : 0;
    r.detail_len += sizeof *e;
    return true;
  });
  if (!room) return fail("out of room for descriptor %d's epoll set", r.fd);
  if (err < 0) return fail("cannot read descriptor %d's epoll set", r.fd);
  return resolve_epoll(r, reinterpret_cast<cap::fd_epoll_entry *>(g_s.data.base + r.detail),
                       r.detail_len / sizeof(cap::fd_epoll_entry), n, have_kcmp);
}

bool rankable(const cap::fd_record &r) {
  return r.kind == static_cast<uint32_t>(cap::fd_kind::timerfd) ||
         r.kind == static_cast<uint32_t>(cap::fd_kind::signalfd) ||
         r.kind == static_cast<uint32_t>(cap::fd_kind::epoll);
}

// The kernel's order of the open files of idx[0, m) of those kinds,
// without a query per pair: an epoll set of the capture's own, each
// registered in it under its number with its record's index as data, lists
// them in the order of its tree, by file and then number, so the numbers
// of one file come together; place[record] = its place there.  False if
// any cannot be registered (too many watches, an epoll set nested too
// deep): then kcmp orders them.
bool rank_by_set(const uint32_t *idx, uint32_t m, uint32_t n, uint64_t *place) {
  bool any = false;  // many copies of one device or file: nothing to rank, no set
  for (uint32_t x = 0; x < m && !any; ++x) any = rankable(*rec(idx[x]));
  if (!any) return false;
  const long ep = sys::raw(SYS_epoll_create1, EPOLL_CLOEXEC);
  if (ep < 0) return false;
  bool ok = true;
  uint64_t added = 0, seen = 0;
  for (uint32_t x = 0; x < m && ok; ++x) {
    const cap::fd_record &r = *rec(idx[x]);
    if (!rankable(r)) continue;
    epoll_event ev{};
    ev.data.u64 = idx[x];
    ok = sys::raw(SYS_epoll_ctl, ep, EPOLL_CTL_ADD, r.fd, reinterpret_cast<long>(&ev)) == 0;
    added += ok;
  }
  if (ok) {
    const long err = for_each_registration(static_cast<int>(ep), [&](const char *p) {
      const char *data = strstr(p, "data:");
      const uint64_t i = data ? strtoull(data + 5, nullptr, 16) : n;
      if (i >= n) return ok = false;
      place[i] = seen++;
      return true;
    });
    ok = ok && err == 0 && seen == added;
  }
  sys::close(static_cast<int>(ep));
  return ok;
}

}  // namespace mmtier::detail::fdcap
