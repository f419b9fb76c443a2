// POSIX timers and per-thread pending signals, in the pause (capture.cc).
#include "snapshot/capture.h"

#include "platform/sys.h"
#include "snapshot/capsule_format.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mmtier::detail {

namespace cap = mmtier::capsule;

namespace {

const char *after(const char *s, const char *key) {
  const char *at = strstr(s, key);
  return at ? at + strlen(key) : nullptr;
}

}  // namespace

// POSIX timers, in the pause: /proc/self/timers names each (id, signal and
// value, notification, clock), timer_gettime says what it has left.
long capture_timers(cap::timer_record *timers, uint32_t max, uint32_t *count, char *line, size_t line_cap) {
  *count = 0;
  static char buf[16384];  // under the snapshot's one-at-a-time lock
  size_t have = 0;
  const long fd = sys::openat(AT_FDCWD, "/proc/self/timers", O_RDONLY | O_CLOEXEC, 0);
  if (fd >= 0) {
    for (long n; have < sizeof buf - 1 &&
                 (n = sys::read(static_cast<int>(fd), buf + have, sizeof buf - 1 - have)) > 0;)
      have += static_cast<size_t>(n);
    sys::close(static_cast<int>(fd));
  }
  buf[have] = 0;
  if (have >= sizeof buf - 1) {
    snprintf(line, line_cap, "more than %u POSIX timers (not supported)", max);
    return -EOPNOTSUPP;
  }
  for (const char *rec = strstr(buf, "ID: "); rec; rec = strstr(rec + 4, "\nID: ")) {
    if (*rec == '\n') ++rec;
    if (*count == max) {
      snprintf(line, line_cap, "more than %u POSIX timers (not supported)", max);
      return -EOPNOTSUPP;
    }
    cap::timer_record &t = timers[*count];
    memset(&t, 0, sizeof t);
    t.id = static_cast<int32_t>(strtol(rec + 4, nullptr, 10));
    const char *next = strstr(rec + 4, "\nID: ");
    const char *sig = after(rec, "signal: ");
    const char *notify = after(rec, "notify: ");
    const char *clock = after(rec, "ClockID: ");
    if (!sig || !notify || !clock || (next && (sig > next || notify > next || clock > next))) {
      snprintf(line, line_cap, "POSIX timer %d: /proc/self/timers is not as expected", t.id);
      return -EOPNOTSUPP;
    }
    char *end = nullptr;
    t.signo = static_cast<int32_t>(strtol(sig, &end, 10));
    t.value = *end == '/' ? strtoull(end + 1, nullptr, 16) : 0;
    t.clock = static_cast<int32_t>(strtol(clock, nullptr, 10));
    const bool none = !strncmp(notify, "none/", 5), by_tid = strstr(notify, "/tid.") && (!next || strstr(notify, "/tid.") < next);
    if (!none && strncmp(notify, "signal/", 7)) {
      snprintf(line, line_cap, "POSIX timer %d notifies as %.16s (not supported)", t.id, notify);
      return -EOPNOTSUPP;
    }
    t.notify = none ? SIGEV_NONE : by_tid ? 4 /* SIGEV_THREAD_ID */ : SIGEV_SIGNAL;
    if (by_tid) t.tid = static_cast<int32_t>(strtol(strstr(notify, "/tid.") + 5, nullptr, 10));
    struct {
      long is, ins, vs, vns;
    } its = {};
    if (sys::raw(SYS_timer_gettime, t.id, reinterpret_cast<long>(&its)) != 0) {
      snprintf(line, line_cap, "POSIX timer %d: timer_gettime failed", t.id);
      return -EOPNOTSUPP;
    }
    t.interval_ns = its.is * 1000000000 + its.ins;
    t.value_ns = its.vs * 1000000000 + its.vns;
    ++*count;
  }
  return 0;
}

}  // namespace mmtier::detail
