#include "snapshot/periodic.h"

#include "config/config.h"
#include "platform/clock.h"
#include "platform/dirent.h"
#include "platform/sys.h"
#include "snapshot/capsule_dir.h"
#include "snapshot/capsule_format.h"
#include "snapshot/capture.h"
#include "support/log.h"

#include <fcntl.h>
#include <time.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace mmtier::detail {
namespace cap = capsule;
namespace {

struct found {
  char entry[cap::kNameMax + sizeof cap::kSuffix];
  uint64_t created;
};
constexpr size_t kMaxFound = 1024;
found g_found[kMaxFound];  // under the control thread alone
int g_last_error = 0;      // the last failure said, to say each reason once

// The creation time in the manifest of capsule entry, 0 if unreadable.
uint64_t created_of(int dirfd, const char *entry) {
  char path[sizeof found::entry + sizeof cap::kManifest + 1];
  snprintf(path, sizeof path, "%s/%s", entry, cap::kManifest);
  const long fd = sys::openat(dirfd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0);
  if (fd < 0) return 0;
  cap::header h;
  const long n = sys::pread(static_cast<int>(fd), &h, sizeof h, cap::kHeaderOffset);
  sys::close(static_cast<int>(fd));
  return n == static_cast<long>(sizeof h) && h.header_size == sizeof h ? h.created_ns : 0;
}

}  // namespace

void periodic_prefix(char *out, size_t cap) { snprintf(out, cap, "auto-%ld-", sys::getpid()); }

long prune_capsules(int dirfd, const char *prefix, uint32_t keep) {
  const size_t plen = strlen(prefix), slen = sizeof cap::kSuffix - 1;
  size_t n = 0;
  long r = sys::raw(SYS_lseek, dirfd, 0, SEEK_SET);
  if (r < 0) return r;
  r = sys::for_each_dirent(dirfd, [&](const char *name, unsigned char) -> long {
    const size_t len = strlen(name);
    if (n == kMaxFound || len <= plen + slen || len >= sizeof found::entry || strncmp(name, prefix, plen) != 0 ||
        strcmp(name + len - slen, cap::kSuffix) != 0)
      return 0;
    memcpy(g_found[n].entry, name, len + 1);
    g_found[n].created = created_of(dirfd, name);
    ++n;
    return 0;
  });
  if (r < 0) return r;
  // Newest first (insertion sort: a few dozen entries).
  for (size_t i = 1; i < n; ++i)
    for (size_t j = i; j > 0 && g_found[j - 1].created < g_found[j].created; --j) {
      found t = g_found[j];
      g_found[j] = g_found[j - 1];
      g_found[j - 1] = t;
    }
  long deleted = 0;
  for (size_t i = keep; i < n; ++i) {
    const char *why = nullptr;
    if (const int e = cap::remove(dirfd, g_found[i].entry, &why); e == 0)
      ++deleted;
    else
      MMTIER_INFO("periodic snapshots: %s not deleted: %s", g_found[i].entry, why ? why : strerror(-e));
  }
  return deleted;
}

long periodic_snapshot() {
  const config &c = config_get();
  char name[cap::kNameMax + 1];
  periodic_prefix(name, sizeof name);
  const size_t at = strlen(name);
  const time_t now = static_cast<time_t>(sys::real_ns() / 1000000000);
  struct tm tm;
  gmtime_r(&now, &tm);
  snprintf(name + at, sizeof name - at, "%04d%02d%02d-%02d%02d%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
           tm.tm_hour, tm.tm_min, tm.tm_sec);
  static snap_result res;  // the control thread's alone
  const long r = snapshot_take({name, nullptr, -1}, &res);
  if (r == 1) return r;
  if (r < 0) {
    if (-r != g_last_error) MMTIER_WARN("periodic snapshot %s failed: %s", name, res.line);
    g_last_error = static_cast<int>(-r);
    return r;
  }
  g_last_error = 0;
  const long dirfd = sys::openat(AT_FDCWD, c.snapshot_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (dirfd >= 0) {
    name[at] = 0;
    prune_capsules(static_cast<int>(dirfd), name, c.snapshot_keep);
    sys::close(static_cast<int>(dirfd));
  }
  return 0;
}

}  // namespace mmtier::detail
