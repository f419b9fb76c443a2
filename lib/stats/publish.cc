// Live statistics for other processes (see publish.h and published.h).
//
// Writers: the heap's change hook (any thread, heap lock held), the mover's
// scan hook (the mover thread) and the statistics API.  They serialise on
// g_lock, which is only ever taken last (no heap call is made while it is
// held) and only around stores into the page.
#include "stats/publish.h"

#include "stats/published.h"

#include "config/config.h"
#include "heap/heap.h"
#include "migrate/mover.h"
#include "platform/sys.h"
#include "support/fd_guard.h"
#include "support/log.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

#include <atomic>
#include <cstring>

namespace mmtier::detail {
namespace {

using published::stats_page;

constexpr size_t kFileSize = 4096;
static_assert(sizeof(stats_page) <= kFileSize, "the page fits one file page");
// A process without a mover measures its resident bytes in the heap's
// change hook, at most once a second, while it has at most this many units
// (a pass costs about 1.5 ms per GiB).
constexpr size_t kInlineResidentUnits = 256;
constexpr uint64_t kSecond = 1000000000u;
// The mover measures every kIdlePeriod, or every kAskedPeriod while a
// reader asked within the last kAskedWindow.
constexpr uint64_t kIdlePeriod = 10 * kSecond, kAskedPeriod = kSecond, kAskedWindow = 10 * kSecond;

// Written under g_lock; the atomics are also read without it.
struct publisher {
  std::atomic<stats_page *> page{nullptr};  // nullptr: none yet (or none at all)
  std::atomic<bool> disabled{false};        // off, impossible, or exited: never try again
  int fd = -1;
  char path[kPathMax + 32] = {};
  std::atomic<uint64_t> resident_mono{0};  // when resident bytes were last measured
  std::atomic<uint64_t> mover_mono{0};     // when the mover last published
  // The mover thread's own.
  uint64_t seen_requests = 0;
  uint64_t asked_mono = 0;  // when a reader last asked for a refresh
  uint64_t rate_mono = 0, rate_bytes = 0;
};

publisher P;
pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

uint64_t clock_ns(clockid_t c) {
  timespec ts;
  clock_gettime(c, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * kSecond + static_cast<uint64_t>(ts.tv_nsec);
}
uint64_t mono_ns() { return clock_ns(CLOCK_MONOTONIC); }
uint64_t real_ns() { return clock_ns(CLOCK_REALTIME); }

void write_begin(stats_page *p) {
  __atomic_store_n(&p->seq, p->seq + 1, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_RELEASE);
}
void write_end(stats_page *p) {
  p->updated_ns = real_ns();
  __atomic_store_n(&p->seq, p->seq + 1, __ATOMIC_RELEASE);
}

void copy_name(char *dst, size_t cap, const char *src) {
  size_t i = 0;
  for (; i + 1 < cap && src[i]; ++i) dst[i] = src[i];
  dst[i] = '\0';
}

void read_comm(char out[16]) {
  memset(out, 0, 16);
  long fd = sys::openat(AT_FDCWD, "/proc/self/comm", O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return;
  long n = sys::read(static_cast<int>(fd), out, 15);
  sys::close(static_cast<int>(fd));
  for (long i = 0; i < n; ++i)
    if (out[i] == '\n') out[i] = '\0';
}

void fill_identity(stats_page *p, long pid, unsigned uid) {
  const config &cfg = config_get();
  memset(p, 0, sizeof *p);
  p->magic = published::kMagic;
  p->version = published::kVersion;
  p->size = sizeof *p;
  p->pid = static_cast<int32_t>(pid);
  p->uid = uid;
  p->started_ns = real_ns();
  read_comm(p->comm);
  p->policy = cfg.policy == policy_kind::ratio ? published::kPolicyRatio : published::kPolicyDramFirst;
  p->ratio_dram = cfg.ratio_dram;
  p->ratio_pmem = cfg.ratio_pmem;
  p->promote = cfg.promote;
  p->unit_size = kUnitSize;
  p->scan_interval_ns = cfg.scan_interval_ns;
  p->migrate_limit_bps = uint64_t{cfg.migrate_mbps} << 20;
  copy_name(p->pmem_path, sizeof p->pmem_path, cfg.pmem_path);
  for (int t = 0; t < published::kTiers; ++t) {
    const size_t limit = heap_tier_limit(t);
    p->tiers[t].limit_bytes = limit == SIZE_MAX ? published::kNone : limit;
    p->tiers[t].resident_bytes = published::kNone;
  }
  p->dram_budget_bytes = published::kNone;
}

// Warns once per process image; publishing then stays off.
void give_up(const char *what, const char *dir, long err) {
  P.disabled.store(true, std::memory_order_relaxed);
  MMTIER_WARN("not publishing live statistics: %s %s (error %ld); set MMTIER_STATS_DIR", what, dir, err);
}

// Removes files of processes that are gone, looking at no more than
// kSweepEntries entries: a process that ends with _exit, or is killed,
// leaves its file behind (4 KiB of tmpfs each), so every process that
// creates a page also cleans up after others.  A pid still in use may be a
// process that exec'd into something else: the mmtier command removes those
// (it checks the lock, which costs more system calls).
constexpr size_t kSweepEntries = 64;

void sweep_stale(int dfd, long self) {
  alignas(8) char buf[4096];
  long n = sys::raw(SYS_getdents64, dfd, reinterpret_cast<long>(buf), sizeof buf);
  size_t seen = 0;
  for (long off = 0; off < n && seen < kSweepEntries; ++seen) {
    const char *rec = buf + off;
    unsigned short reclen;
    memcpy(&reclen, rec + 16, sizeof reclen);
    const char *name = rec + 19;
    off += reclen;
    long pid = 0;
    size_t i = 0;
    for (; name[i] >= '0' && name[i] <= '9' && pid < (1L << 40); ++i) pid = pid * 10 + (name[i] - '0');
    if (i == 0 || strcmp(name + i, ".stats") != 0 || pid == self || pid <= 0) continue;
    if (sys::raw(SYS_kill, pid, 0) != -ESRCH) continue;
    // Gone.  Its pid may have been taken since by a process now renaming
    // its own page into place: remove only the file we found unlocked.
    const long fd = sys::openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0);
    if (fd < 0) continue;
    struct stat a, b;
    if (sys::raw(SYS_flock, fd, LOCK_EX | LOCK_NB) == 0 && sys::raw(SYS_fstat, fd, reinterpret_cast<long>(&a)) == 0 &&
        sys::raw(SYS_newfstatat, dfd, reinterpret_cast<long>(name), reinterpret_cast<long>(&b), AT_SYMLINK_NOFOLLOW) == 0 &&
        a.st_ino == b.st_ino && a.st_dev == b.st_dev)
      sys::unlinkat(dfd, name, 0);
    sys::close(static_cast<int>(fd));
  }
}

// Creates and maps <dir>/<pid>.stats, locked, under a temporary name first
// so that no reader ever sees an unlocked or half-filled page under the
// final name (and a stale file of an earlier process with this pid is
// replaced in one step).
void create_locked() {
  const config &cfg = config_get();
  if (cfg.stats_off) {
    P.disabled.store(true, std::memory_order_relaxed);
    return;
  }
  const long pid = sys::getpid();
  const unsigned uid = static_cast<unsigned>(sys::raw(SYS_geteuid));
  char dir[kPathMax];
  if (cfg.stats_dir[0]) copy_name(dir, sizeof dir, cfg.stats_dir);
  else format(dir, sizeof dir, "/dev/shm/mmtier-%u", uid);
  long r = sys::raw(SYS_mkdirat, AT_FDCWD, reinterpret_cast<long>(dir), 0700);
  if (r < 0 && r != -EEXIST) return give_up("cannot create", dir, -r);
  const long dfd = sys::openat(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
  if (dfd < 0) return give_up("cannot open", dir, -dfd);
  struct stat st;
  r = sys::raw(SYS_fstat, dfd, reinterpret_cast<long>(&st));
  if (r < 0 || st.st_uid != uid || (st.st_mode & 022)) {
    sys::close(static_cast<int>(dfd));
    return give_up(r < 0 ? "cannot stat" : "not a private directory of this user:", dir, r < 0 ? -r : 0);
  }
  char tmp[48], name[48];
  format(tmp, sizeof tmp, ".%ld.new", pid);
  format(name, sizeof name, "%ld.stats", pid);
  sys::unlinkat(static_cast<int>(dfd), tmp, 0);  // left by a process with this pid that died creating it
  long fd = sys::openat(static_cast<int>(dfd), tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  void *map = MAP_FAILED;
  const char *what = "cannot create a file in";
  if (fd >= 0) {
    what = "cannot set up a file in";
    r = sys::raw(SYS_flock, fd, LOCK_EX | LOCK_NB);
    if (r == 0) r = sys::ftruncate(static_cast<int>(fd), kFileSize);
    if (r == 0) {
      r = sys::mmap(nullptr, kFileSize, PROT_READ | PROT_WRITE, MAP_SHARED, static_cast<int>(fd), 0);
      if (!sys::failed(r)) map = reinterpret_cast<void *>(r);
      else r = r < 0 ? r : -ENOMEM;
    }
    if (map != MAP_FAILED) {
      fill_identity(static_cast<stats_page *>(map), pid, uid);
      r = sys::raw(SYS_renameat, dfd, reinterpret_cast<long>(tmp), dfd, reinterpret_cast<long>(name));
      what = "cannot name a file in";
    }
  } else {
    r = fd;
  }
  if (r < 0) {
    if (map != MAP_FAILED) sys::munmap(map, kFileSize);
    if (fd >= 0) {
      sys::unlinkat(static_cast<int>(dfd), tmp, 0);
      sys::close(static_cast<int>(fd));
    }
    sys::close(static_cast<int>(dfd));
    return give_up(what, dir, -r);
  }
  sweep_stale(static_cast<int>(dfd), pid);
  sys::close(static_cast<int>(dfd));
  fd_guard(static_cast<int>(fd));
  P.fd = static_cast<int>(fd);
  format(P.path, sizeof P.path, "%s/%s", dir, name);
  P.page.store(static_cast<stats_page *>(map), std::memory_order_release);
}

void put_counters(stats_page *p, const heap_counters &c) {
  for (int t = 0; t < published::kTiers; ++t) {
    p->tiers[t].placed_bytes = uint64_t{c.units[t]} * kUnitSize;
    p->tiers[t].peak_bytes = uint64_t{c.peak_units[t]} * kUnitSize;
  }
  p->fallbacks = c.fallbacks;
  p->mmap_bytes = c.mmap_bytes;
  p->forks = c.forks;
}

void put_resident(stats_page *p, const size_t res[2]) {
  for (int t = 0; t < published::kTiers; ++t) p->tiers[t].resident_bytes = res[t];
  p->resident_ns = real_ns();
}

// The heap's change hook (heap lock held).
void on_heap_change(const heap_counters &c) {
  if (P.disabled.load(std::memory_order_relaxed)) return;
  size_t res[2];
  bool measured = false;
  const uint64_t now = mono_ns();
  const uint64_t mover = P.mover_mono.load(std::memory_order_relaxed);
  const uint64_t resident = P.resident_mono.load(std::memory_order_relaxed);
  const bool mover_active = mover && now - mover < 2 * kSecond;
  if (!mover_active && c.units[0] + c.units[1] <= kInlineResidentUnits &&
      (!resident || now - resident >= kSecond)) {
    heap_resident_split_locked(res);
    measured = true;
  }
  pthread_mutex_lock(&g_lock);
  if (!P.page.load(std::memory_order_relaxed) && !P.disabled.load(std::memory_order_relaxed)) create_locked();
  if (stats_page *p = P.page.load(std::memory_order_relaxed)) {
    write_begin(p);
    put_counters(p, c);
    if (measured) {
      put_resident(p, res);
      P.resident_mono.store(now, std::memory_order_relaxed);
    }
    write_end(p);
  }
  pthread_mutex_unlock(&g_lock);
}

// The mover's scan hook (the mover thread, no lock held).
void on_scan() {
  stats_page *page = P.page.load(std::memory_order_acquire);
  if (!page || P.disabled.load(std::memory_order_relaxed)) return;
  mover_stats ms;
  mover_stats_get(&ms);
  const uint64_t now = mono_ns();
  // A reader asks for fresh resident figures by counting up refresh_requests.
  const uint64_t asked = __atomic_load_n(&page->refresh_requests, __ATOMIC_RELAXED);
  bool fresh_ask = false;
  if (asked != P.seen_requests) {
    P.seen_requests = asked;
    P.asked_mono = now;
    fresh_ask = true;
  }
  const uint64_t period = P.asked_mono && now - P.asked_mono < kAskedWindow ? kAskedPeriod : kIdlePeriod;
  const uint64_t last = P.resident_mono.load(std::memory_order_relaxed);
  const uint64_t age = now - last;
  const bool measure = !last || age >= period || (fresh_ask && age >= kSecond / 4);
  size_t res[2];
  if (measure) heap_resident_split(res);
  if (!P.rate_mono) {
    P.rate_mono = now;
    P.rate_bytes = ms.bytes_migrated;
  }
  uint64_t rate = 0;
  bool new_rate = false;
  if (now - P.rate_mono >= kSecond) {
    rate = (ms.bytes_migrated - P.rate_bytes) * kSecond / (now - P.rate_mono);
    P.rate_mono = now;
    P.rate_bytes = ms.bytes_migrated;
    new_rate = true;
  }
  pthread_mutex_lock(&g_lock);
  if (stats_page *p = page) {
    write_begin(p);
    p->mover_running = ms.running;
    p->scan_interval_ns = ms.scan_interval_ns;
    p->scans = ms.scans;
    p->promotions = ms.promotions;
    p->demotions = ms.demotions;
    p->migrations_failed = ms.migrations_failed;
    p->bytes_migrated = ms.bytes_migrated;
    if (new_rate) p->migrate_rate_bps = rate;
    p->samples = ms.samples;
    p->samples_touched = ms.samples_touched;
    p->tracking_faults = ms.tracking_faults;
    p->cpu_ns = ms.cpu_ns;
    p->dram_budget_bytes = ms.dram_budget_units == SIZE_MAX ? published::kNone : ms.dram_budget_units * kUnitSize;
    memcpy(p->heat_histogram, ms.heat_histogram, sizeof p->heat_histogram);
    if (measure) {
      put_resident(p, res);
      P.resident_mono.store(now, std::memory_order_relaxed);
    }
    write_end(p);
  }
  P.mover_mono.store(now, std::memory_order_relaxed);
  pthread_mutex_unlock(&g_lock);
}

// The child must not write into its parent's page; it creates its own on
// its first change (on_heap_change).
void publish_fork_child() {
  pthread_mutex_init(&g_lock, nullptr);
  if (stats_page *p = P.page.load(std::memory_order_relaxed)) sys::munmap(p, kFileSize);
  if (P.fd >= 0) {
    fd_unguard(P.fd);
    sys::close(P.fd);
  }
  P.page.store(nullptr, std::memory_order_relaxed);
  P.fd = -1;
  P.path[0] = '\0';
  P.resident_mono.store(0, std::memory_order_relaxed);
  P.mover_mono.store(0, std::memory_order_relaxed);
  P.seen_requests = P.asked_mono = P.rate_mono = P.rate_bytes = 0;
}

}  // namespace

void publish_init() {
  static bool once = false;
  if (once) return;
  once = true;
  if (config_get().stats_off) return;
  pthread_atfork(nullptr, nullptr, publish_fork_child);
  size_t res[2];
  heap_resident_split(res);
  heap_counters c;
  heap_counters_get(&c);
  pthread_mutex_lock(&g_lock);
  create_locked();
  if (stats_page *p = P.page.load(std::memory_order_relaxed)) {
    write_begin(p);
    put_counters(p, c);
    put_resident(p, res);
    write_end(p);
    P.resident_mono.store(mono_ns(), std::memory_order_relaxed);
  }
  pthread_mutex_unlock(&g_lock);
  heap_set_change_hook(on_heap_change);
  mover_set_scan_hook(on_scan);
}

void publish_resident(const size_t bytes[2]) {
  pthread_mutex_lock(&g_lock);
  if (stats_page *p = P.page.load(std::memory_order_relaxed)) {
    write_begin(p);
    put_resident(p, bytes);
    write_end(p);
    P.resident_mono.store(mono_ns(), std::memory_order_relaxed);
  }
  pthread_mutex_unlock(&g_lock);
}

void publish_exit() {
  pthread_mutex_lock(&g_lock);
  P.disabled.store(true, std::memory_order_relaxed);
  if (P.path[0]) {
    sys::unlinkat(AT_FDCWD, P.path, 0);
    P.path[0] = '\0';
  }
  pthread_mutex_unlock(&g_lock);
}

}  // namespace mmtier::detail
