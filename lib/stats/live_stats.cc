// Live statistics for other processes (see live_stats.h and live_format.h).
//
// Writers: the heap's change hook (any thread, heap lock held), the mover's
// scan hook (the mover thread) and the statistics API.  They serialise on
// g_lock, which is only ever taken last (no heap call is made while it is
// held) and only around stores into the page.
#include "stats/live_stats.h"

#include "stats/live_format.h"

#include "config/config.h"
#include "heap/heap.h"
#include "mover/mover.h"
#include "platform/clock.h"
#include "platform/sys.h"
#include "platform/fd_guard.h"
#include "support/log.h"
#include "support/quiesce.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstring>

namespace mmtier::detail {
namespace {

using live_format::stats_page;

constexpr size_t kFileSize = 4096;
static_assert(sizeof(stats_page) <= kFileSize, "the page fits one file page");
// A process without a mover measures its resident bytes in the heap's
// change hook, at most once a second, while it has at most this many units
// (a pass costs about 1.5 ms per GiB).
constexpr size_t kInlineResidentUnits = 256;
constexpr uint64_t kSecond = 1000000000u;
// The mover measures every kIdlePeriod, or every kAskedPeriod while a
// reader asked within the last kAskedWindow; never more often than keeps
// the measuring under 1 % of its time (a pass costs about 1.5 ms per GiB).
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
  uint64_t measure_ns = 0;  // how long the mover's last measurement took
};

publisher g_pub;
pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

void write_begin(stats_page *p) {
  __atomic_store_n(&p->seq, p->seq + 1, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_RELEASE);
}
void write_end(stats_page *p) {
  p->updated_ns = sys::real_ns();
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
  p->magic = live_format::kMagic;
  p->version = live_format::kVersion;
  p->size = sizeof *p;
  p->pid = static_cast<int32_t>(pid);
  p->uid = uid;
  p->started_ns = sys::real_ns();
  read_comm(p->comm);
  p->policy = cfg.policy == policy_kind::ratio ? live_format::kPolicyRatio : live_format::kPolicyDramFirst;
  p->ratio_dram = cfg.ratio_dram;
  p->ratio_pmem = cfg.ratio_pmem;
  p->promote = cfg.promote;
  p->unit_size = kUnitSize;
  p->scan_interval_ns = cfg.scan_interval_ns;
  p->migrate_limit_bps = uint64_t{cfg.migrate_mbps} << 20;
  copy_name(p->pmem_path, sizeof p->pmem_path, cfg.pmem_path);
  for (int t = 0; t < live_format::kTiers; ++t) {
    const size_t limit = heap_tier_limit(t);
    p->tiers[t].limit_bytes = limit == SIZE_MAX ? live_format::kNone : limit;
    p->tiers[t].resident_bytes = live_format::kNone;
  }
  p->dram_budget_bytes = live_format::kNone;
}

// Publishing stays off from here on.  Said as a warning when the user
// chose the directory, as information for the default one (anyone can make
// /dev/shm/mmtier-<uid> unusable; that must not put a line on every
// program's stderr).
void give_up(bool chosen, const char *what, const char *dir, long err) {
  g_pub.disabled.store(true, std::memory_order_relaxed);
  if (chosen) MMTIER_WARN("not publishing live statistics: %s %s (error %ld)", what, dir, err);
  else MMTIER_INFO("not publishing live statistics: %s %s (error %ld); set MMTIER_STATS_DIR", what, dir, err);
}

// Creation and the sweep run under g_lock, so their buffers are static: no
// large frame on the stack of whichever thread gets there.
char g_dir[kPathMax];
alignas(8) char g_dents[4096];
alignas(8) unsigned char g_first[kFileSize];

// Removes files of processes that are gone, looking at no more than
// kSweepEntries entries: a process that ends with _exit, or is killed,
// leaves its file behind (4 KiB of tmpfs each), so every process that
// starts publishing also cleans up after others.  A pid still in use may be
// a process that exec'd into something else: the mmtier command removes
// those (it checks the lock of every file, which costs more system calls).
// A file is removed only while this process holds its lock and it is still
// the file of that name; its owner, if one appears, takes the lock after
// and sees it unlinked (create_locked).
constexpr size_t kSweepEntries = 64;

void sweep_stale(int dfd, long self) {
  long n = sys::raw(SYS_getdents64, dfd, reinterpret_cast<long>(g_dents), sizeof g_dents);
  size_t seen = 0;
  for (long off = 0; off < n && seen < kSweepEntries; ++seen) {
    const char *rec = g_dents + off;
    unsigned short reclen;
    memcpy(&reclen, rec + 16, sizeof reclen);
    const char *name = rec + 19;
    off += reclen;
    long pid = 0;
    size_t i = 0;
    for (; name[i] >= '0' && name[i] <= '9' && pid < (1L << 40); ++i) pid = pid * 10 + (name[i] - '0');
    if (i == 0 || strcmp(name + i, ".stats") != 0 || pid == self || pid <= 0) continue;
    if (sys::raw(SYS_kill, pid, 0) != -ESRCH) continue;
    const long fd = sys::openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0);
    if (fd < 0) continue;
    struct stat a, b;
    if (sys::raw(SYS_fstat, fd, reinterpret_cast<long>(&a)) == 0 && S_ISREG(a.st_mode) &&
        sys::raw(SYS_flock, fd, LOCK_EX | LOCK_NB) == 0 &&
        sys::raw(SYS_newfstatat, dfd, reinterpret_cast<long>(name), reinterpret_cast<long>(&b), AT_SYMLINK_NOFOLLOW) == 0 &&
        a.st_ino == b.st_ino && a.st_dev == b.st_dev)
      sys::unlinkat(dfd, name, 0);
    sys::close(static_cast<int>(fd));
  }
}

// Opens <dir>/<pid>.stats and takes its lock.  A file of that name may be
// left by an earlier process with this pid (its lock is free), or be held
// for a moment by a reader removing it (then it is unlinked once we get
// the lock, and made anew).  Busy for long: another live process has the
// name (pid namespaces sharing the directory); -EBUSY.
long open_locked(int dfd, const char *name, unsigned uid) {
  for (int attempt = 0; attempt < 4; ++attempt) {
    const long fd = sys::openat(dfd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0600);
    if (fd < 0) return fd;
    struct stat st;
    long r = sys::raw(SYS_fstat, fd, reinterpret_cast<long>(&st));
    if (r == 0 && (!S_ISREG(st.st_mode) || st.st_uid != uid)) r = -EPERM;
    for (int i = 0; r == 0 && i < 50; ++i) {
      r = sys::raw(SYS_flock, fd, LOCK_EX | LOCK_NB);
      if (r != -EWOULDBLOCK) break;
      timespec ms = {0, 1000000};
      sys::raw(SYS_nanosleep, reinterpret_cast<long>(&ms), 0);
      r = i == 49 ? -EBUSY : 0;
    }
    if (r == 0) r = sys::raw(SYS_fstat, fd, reinterpret_cast<long>(&st));
    if (r == 0 && st.st_nlink > 0) return fd;
    sys::close(static_cast<int>(fd));
    if (r < 0) return r;
  }
  return -EAGAIN;
}

// Creates, fills, maps and locks this process's page (sweep: also remove
// files of dead processes).  The file is filled with write() before it is
// mapped, so a full file system is an error here and never a SIGBUS later,
// and it must be on tmpfs (or ramfs), where a written page stays written.
void create_locked(bool sweep) {
  const config &cfg = config_get();
  if (cfg.stats_off) {
    g_pub.disabled.store(true, std::memory_order_relaxed);
    return;
  }
  const long pid = sys::getpid();
  const unsigned uid = static_cast<unsigned>(sys::raw(SYS_geteuid));
  const bool chosen = cfg.stats_dir[0] != '\0';
  if (chosen) copy_name(g_dir, sizeof g_dir, cfg.stats_dir);
  else format(g_dir, sizeof g_dir, "/dev/shm/mmtier-%u", uid);
  long r = sys::raw(SYS_mkdirat, AT_FDCWD, reinterpret_cast<long>(g_dir), 0700);
  if (r < 0 && r != -EEXIST) return give_up(chosen, "cannot create", g_dir, -r);
  const long dfd = sys::openat(AT_FDCWD, g_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
  if (dfd < 0) return give_up(chosen, "cannot open", g_dir, -dfd);
  struct stat st;
  struct statfs sf;
  const char *what = nullptr;
  r = sys::raw(SYS_fstat, dfd, reinterpret_cast<long>(&st));
  // Only its user may write there; the default directory is private.
  if (r < 0) what = "cannot stat";
  else if (st.st_uid != uid || (st.st_mode & (chosen ? 022 : 077)))
    what = chosen ? "not a directory of this user closed to others' writes:" : "not a private directory of this user:";
  else if ((r = sys::raw(SYS_fstatfs, dfd, reinterpret_cast<long>(&sf))) < 0) what = "cannot statfs";
  else if (sf.f_type != TMPFS_MAGIC && sf.f_type != RAMFS_MAGIC) what = "not on tmpfs:";
  if (what) {
    sys::close(static_cast<int>(dfd));
    return give_up(chosen, what, g_dir, r < 0 ? -r : 0);
  }
  char name[48];
  format(name, sizeof name, "%ld.stats", pid);
  const long fd = open_locked(static_cast<int>(dfd), name, uid);
  if (fd < 0) {
    sys::close(static_cast<int>(dfd));
    return give_up(chosen, fd == -EBUSY ? "another live process holds its file in" : "cannot create a file in", g_dir, -fd);
  }
  // Odd sequence: a reader that sees the page now waits for the end.
  auto *first = reinterpret_cast<stats_page *>(g_first);
  memset(g_first, 0, sizeof g_first);
  fill_identity(first, pid, uid);
  first->seq = 1;
  void *map = MAP_FAILED;
  r = sys::pwrite(static_cast<int>(fd), g_first, kFileSize, 0);
  if (r == static_cast<long>(kFileSize)) {
    r = sys::mmap(nullptr, kFileSize, PROT_READ | PROT_WRITE, MAP_SHARED, static_cast<int>(fd), 0);
    if (!sys::failed(r)) map = reinterpret_cast<void *>(r);
  } else if (r >= 0) {
    r = -ENOSPC;
  }
  const int guarded = map == MAP_FAILED ? -1 : fd_guard(static_cast<int>(fd));
  if (guarded < 0) {
    if (map != MAP_FAILED) sys::munmap(map, kFileSize);
    sys::unlinkat(static_cast<int>(dfd), name, 0);  // ours: we hold its lock
    sys::close(static_cast<int>(fd));
    sys::close(static_cast<int>(dfd));
    return give_up(chosen, "cannot set up a file in", g_dir, r < 0 ? -r : EMFILE);
  }
  auto *page = static_cast<stats_page *>(map);
  __atomic_store_n(&page->seq, uint64_t{2}, __ATOMIC_RELEASE);
  if (sweep) sweep_stale(static_cast<int>(dfd), pid);
  sys::close(static_cast<int>(dfd));
  g_pub.fd = guarded;
  format(g_pub.path, sizeof g_pub.path, "%s/%s", g_dir, name);
  g_pub.page.store(page, std::memory_order_release);
}

void put_counters(stats_page *p, const heap_counters &c) {
  for (int t = 0; t < live_format::kTiers; ++t) {
    p->tiers[t].placed_bytes = uint64_t{c.units[t]} * kUnitSize;
    p->tiers[t].peak_bytes = uint64_t{c.peak_units[t]} * kUnitSize;
    p->tiers[t].policy_bytes = uint64_t{c.policy_units[t]} * kUnitSize;
  }
  p->fallbacks = c.fallbacks;
  p->mmap_bytes = c.mmap_bytes;
  p->forks = c.forks;
}

void put_resident(stats_page *p, const size_t res[2]) {
  for (int t = 0; t < live_format::kTiers; ++t) p->tiers[t].resident_bytes = res[t];
  p->resident_ns = sys::real_ns();
}

// The heap's change hook (heap lock held).
void on_heap_change(const heap_counters &c) {
  if (g_pub.disabled.load(std::memory_order_relaxed)) return;
  size_t res[2];
  bool measured = false;
  const uint64_t now = sys::mono_ns();
  const uint64_t mover = g_pub.mover_mono.load(std::memory_order_relaxed);
  const uint64_t resident = g_pub.resident_mono.load(std::memory_order_relaxed);
  const bool mover_active = mover && now - mover < 2 * kSecond;
  if (!mover_active && c.units[0] + c.units[1] <= kInlineResidentUnits &&
      (!resident || now - resident >= kSecond)) {
    heap_resident_split_locked(res);
    measured = true;
  }
  pthread_mutex_lock(&g_lock);
  if (stats_page *p = g_pub.page.load(std::memory_order_relaxed)) {
    write_begin(p);
    put_counters(p, c);
    if (measured) {
      put_resident(p, res);
      g_pub.resident_mono.store(now, std::memory_order_relaxed);
    }
    write_end(p);
  }
  pthread_mutex_unlock(&g_lock);
}

// The mover's scan hook (the mover thread, no lock held).
void on_scan() {
  stats_page *page = g_pub.page.load(std::memory_order_acquire);
  if (!page || g_pub.disabled.load(std::memory_order_relaxed)) return;
  mover_stats ms;
  mover_stats_get(&ms);
  const uint64_t now = sys::mono_ns();
  // A reader asks for fresh resident figures by counting up refresh_requests.
  const uint64_t asked = __atomic_load_n(&page->refresh_requests, __ATOMIC_RELAXED);
  if (asked != g_pub.seen_requests) {
    g_pub.seen_requests = asked;
    g_pub.asked_mono = now;
  }
  // Measuring takes at most 1 % of the mover's time, however large the heap.
  const uint64_t period = std::max(g_pub.asked_mono && now - g_pub.asked_mono < kAskedWindow ? kAskedPeriod : kIdlePeriod,
                                   100 * g_pub.measure_ns);
  const uint64_t last = g_pub.resident_mono.load(std::memory_order_relaxed);
  const uint64_t age = now - last;
  const bool measure = !last || age >= period;
  size_t res[2];
  if (measure) {
    heap_resident_split(res);
    g_pub.measure_ns = sys::mono_ns() - now;
  }
  if (!g_pub.rate_mono) {
    g_pub.rate_mono = now;
    g_pub.rate_bytes = ms.bytes_migrated;
  }
  uint64_t rate = 0;
  bool new_rate = false;
  if (now - g_pub.rate_mono >= kSecond) {
    rate = (ms.bytes_migrated - g_pub.rate_bytes) * kSecond / (now - g_pub.rate_mono);
    g_pub.rate_mono = now;
    g_pub.rate_bytes = ms.bytes_migrated;
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
    for (int i = 0; i < live_format::kFailReasons && i < failure_tally::kMax; ++i)
      p->failures[i] = {ms.failures.err[i], 0, ms.failures.count[i]};
    p->failed_other = ms.failures.other;
    p->map_count_holds = ms.map_count_holds;
    p->bytes_migrated = ms.bytes_migrated;
    if (new_rate) p->migrate_rate_bps = rate;
    p->samples = ms.samples;
    p->samples_touched = ms.samples_touched;
    p->tracking_faults = ms.tracking_faults;
    p->cpu_ns = ms.cpu_ns;
    p->dram_budget_bytes = ms.dram_budget_units == SIZE_MAX ? live_format::kNone : ms.dram_budget_units * kUnitSize;
    memcpy(p->heat_histogram, ms.heat_histogram, sizeof p->heat_histogram);
    if (measure) {
      put_resident(p, res);
      g_pub.resident_mono.store(now, std::memory_order_relaxed);
    }
    write_end(p);
  }
  g_pub.mover_mono.store(now, std::memory_order_relaxed);
  pthread_mutex_unlock(&g_lock);
}

// The quiesce sequence, rank kRankLiveStats (support/quiesce.h).
void page_lock() { pthread_mutex_lock(&g_lock); }
void page_unlock() { pthread_mutex_unlock(&g_lock); }

// The child must not write into its parent's page: it drops it, and makes
// its own once every layer is reset (child_ready), still in the fork
// handler, before the program can sandbox or drop privileges in the child
// (no sweep there: that can wait for a process start).
void fork_child() {
  pthread_mutex_init(&g_lock, nullptr);
  if (stats_page *p = g_pub.page.load(std::memory_order_relaxed)) sys::munmap(p, kFileSize);
  if (g_pub.fd >= 0) {
    fd_unguard(g_pub.fd);
    sys::close(g_pub.fd);
  }
  g_pub.page.store(nullptr, std::memory_order_relaxed);
  g_pub.fd = -1;
  g_pub.path[0] = '\0';
  g_pub.resident_mono.store(0, std::memory_order_relaxed);
  g_pub.mover_mono.store(0, std::memory_order_relaxed);
  g_pub.seen_requests = g_pub.asked_mono = g_pub.rate_mono = g_pub.rate_bytes = g_pub.measure_ns = 0;
}

void fork_child_ready() {
  if (g_pub.disabled.load(std::memory_order_relaxed)) return;
  heap_counters c;
  heap_counters_get(&c);
  pthread_mutex_lock(&g_lock);
  create_locked(false);
  if (stats_page *p = g_pub.page.load(std::memory_order_relaxed)) {
    write_begin(p);
    put_counters(p, c);
    write_end(p);
  }
  pthread_mutex_unlock(&g_lock);
}

}  // namespace

void live_stats_init() {
  static bool once = false;
  if (once) return;
  once = true;
  if (config_get().stats_off) return;
  quiesce_register(kRankLiveStats, {page_lock, page_unlock, fork_child, fork_child_ready});
  size_t res[2];
  heap_resident_split(res);
  heap_counters c;
  heap_counters_get(&c);
  pthread_mutex_lock(&g_lock);
  create_locked(true);
  if (stats_page *p = g_pub.page.load(std::memory_order_relaxed)) {
    write_begin(p);
    put_counters(p, c);
    put_resident(p, res);
    write_end(p);
    g_pub.resident_mono.store(sys::mono_ns(), std::memory_order_relaxed);
  }
  pthread_mutex_unlock(&g_lock);
  heap_set_change_hook(on_heap_change);
  mover_set_scan_hook(on_scan);
}

void live_stats_resident(const size_t bytes[2]) {
  pthread_mutex_lock(&g_lock);
  if (stats_page *p = g_pub.page.load(std::memory_order_relaxed)) {
    write_begin(p);
    put_resident(p, bytes);
    write_end(p);
    g_pub.resident_mono.store(sys::mono_ns(), std::memory_order_relaxed);
  }
  pthread_mutex_unlock(&g_lock);
}

void live_stats_exit() {
  pthread_mutex_lock(&g_lock);
  g_pub.disabled.store(true, std::memory_order_relaxed);
  // Only if the name is still our file (we hold its lock, so nobody else
  // can have made it theirs; it may be gone, or another's after removal).
  struct stat a, b;
  if (g_pub.path[0] && sys::raw(SYS_fstat, g_pub.fd, reinterpret_cast<long>(&a)) == 0 &&
      sys::raw(SYS_newfstatat, AT_FDCWD, reinterpret_cast<long>(g_pub.path), reinterpret_cast<long>(&b),
               AT_SYMLINK_NOFOLLOW) == 0 &&
      a.st_ino == b.st_ino && a.st_dev == b.st_dev)
    sys::unlinkat(AT_FDCWD, g_pub.path, 0);
  g_pub.path[0] = '\0';
  pthread_mutex_unlock(&g_lock);
}

}  // namespace mmtier::detail
