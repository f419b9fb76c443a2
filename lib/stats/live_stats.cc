// Live statistics for other processes (see live_stats.h and live_format.h).
//
// Writers: the heap's change hook (any thread, heap lock held), the mover's
// scan hook (the mover thread) and the statistics API.  They serialise on
// g_lock, which is only ever taken last (no heap call is made while it is
// held) and only around stores into the page.
#include "stats/live_stats.h"

#include "stats/agent_client.h"

#include "stats/live_format.h"

#include "config/config.h"
#include "heap/faults.h"
#include "heap/heap.h"
#include "mover/mover.h"
#include "snapshot/capture.h"
#include "platform/clock.h"
#include "platform/sys.h"
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
// A process publishes once it has this many units placed by policy (16 MiB):
// most processes of a host (shell tools, build steps) never get there, and
// pay for no directory, file or page.  Sooner when mmtier's threads start
// sooner (MMTIER_BACKGROUND_AT): the control socket goes next to the page.
constexpr size_t kPublishUnits = 8;
size_t publish_units() { return std::min(kPublishUnits, mover_start_units()); }

// Written under g_lock; the atomics are also read without it.
struct publisher {
  std::atomic<stats_page *> page{nullptr};  // nullptr: none yet (or none at all)
  std::atomic<bool> disabled{false};        // off, impossible, or exited: never try again
  char path[kPathMax + 32] = {};
  uint64_t dev = 0, ino = 0;  // of the file at path (no descriptor is kept)
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
  p->policy = cfg.policy == policy_kind::ratio       ? live_format::kPolicyRatio
              : cfg.policy == policy_kind::bandwidth ? live_format::kPolicyBandwidth
                                                     : live_format::kPolicyDramFirst;
  p->ratio_dram = cfg.ratio_dram;
  p->ratio_pmem = cfg.ratio_pmem;
  p->promote = cfg.promote;
  p->unit_size = kUnitSize;
  p->scan_interval_ns = cfg.scan_interval_ns;
  p->migrate_limit_bps = uint64_t{cfg.migrate_mbps} << 20;
  if (const int node = heap_slow_node(); node >= 0) {
    char name[32];
    format(name, sizeof name, "NUMA node %d", node);
    copy_name(p->pmem_path, sizeof p->pmem_path, name);
  } else {
    copy_name(p->pmem_path, sizeof p->pmem_path, cfg.pmem_path);
  }
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

// The directory's own lock, taken around every rename into it and every
// removal from it, by writers and by the mmtier command alike: a stale file
// is only removed while nobody can be putting a live one in its place.
// Held for a few system calls, never across anything else.
struct dir_lock {
  int fd;
  explicit dir_lock(int dfd) : fd(dfd) {
    while (sys::raw(SYS_flock, fd, LOCK_EX) == -EINTR) {
    }
  }
  ~dir_lock() { sys::raw(SYS_flock, fd, LOCK_UN); }
};

// Removes files of processes that are gone, looking at no more than
// kSweepEntries entries: a process that ends with _exit, or is killed,
// leaves its file behind (4 KiB of tmpfs each), so every process that
// starts publishing also cleans up after others.  A pid still in use may be
// a process that exec'd into something else: the mmtier command removes
// those (it reads the process's mappings, which costs more).
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
    if (sys::raw(SYS_kill, pid, 0) == -ESRCH) sys::unlinkat(dfd, name, 0);
  }
}

// Makes the file <dir>/<pid>.stats with a filled page and maps it: written
// under a temporary name with write() (a full file system is an error here,
// never a SIGBUS later; it must be tmpfs or ramfs, where a written page
// stays written), then renamed over whatever stale file had the name.  The
// descriptor is closed once the page is mapped: the process keeps nothing
// open.  Returns the page, or nullptr with *err set.
stats_page *make_page(int dfd, const char *name, long pid, unsigned uid, long *err) {
  char tmp[64];
  format(tmp, sizeof tmp, ".%s.%ld.tmp", name, static_cast<long>(sys::raw(SYS_gettid)));
  const long fd = sys::openat(dfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    *err = fd;
    return nullptr;
  }
  // Odd sequence: a reader that sees the page now waits for the end.
  auto *first = reinterpret_cast<stats_page *>(g_first);
  memset(g_first, 0, sizeof g_first);
  fill_identity(first, pid, uid);
  first->seq = 1;
  long r = sys::pwrite(static_cast<int>(fd), g_first, kFileSize, 0);
  void *map = nullptr;
  if (r == static_cast<long>(kFileSize)) {
    r = sys::mmap(nullptr, kFileSize, PROT_READ | PROT_WRITE, MAP_SHARED, static_cast<int>(fd), 0);
    if (!sys::failed(r)) map = reinterpret_cast<void *>(r);
  } else if (r >= 0) {
    r = -ENOSPC;
  }
  struct stat st;
  if (map && sys::raw(SYS_fstat, fd, reinterpret_cast<long>(&st)) == 0) {
    dir_lock g(dfd);
    r = sys::raw(SYS_renameat, dfd, reinterpret_cast<long>(tmp), dfd, reinterpret_cast<long>(name));
  } else if (map) {
    r = -EIO;
  }
  sys::close(static_cast<int>(fd));
  if (!map || r < 0) {
    if (map) sys::munmap(map, kFileSize);
    sys::unlinkat(dfd, tmp, 0);
    *err = r < 0 ? r : -EIO;
    return nullptr;
  }
  g_pub.dev = st.st_dev;
  g_pub.ino = st.st_ino;
  auto *page = static_cast<stats_page *>(map);
  __atomic_store_n(&page->seq, uint64_t{2}, __ATOMIC_RELEASE);
  return page;
}

// Creates and maps this process's page (sweep: also remove files of dead
// processes), in the directory checked first: it must be on tmpfs, belong
// to this user and be closed to others' writes.
void create_locked(bool sweep) {
  const config &cfg = config_get();
  if (cfg.stats_off) {
    g_pub.disabled.store(true, std::memory_order_relaxed);
    return;
  }
  const long pid = sys::host_pid();
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
  long err = 0;
  stats_page *page = make_page(static_cast<int>(dfd), name, pid, uid, &err);
  if (page && sweep) {
    dir_lock g(static_cast<int>(dfd));
    sweep_stale(static_cast<int>(dfd), pid);
  }
  sys::close(static_cast<int>(dfd));
  if (!page) return give_up(chosen, "cannot create a file in", g_dir, -err);
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
  p->frozen_bytes = uint64_t{c.frozen_own + c.frozen_inherited} * kUnitSize;
}

void put_resident(stats_page *p, const resident_split &res) {
  for (int t = 0; t < live_format::kTiers; ++t) p->tiers[t].resident_bytes = res.bytes[t];
  p->frozen_copied_bytes = res.frozen_copied;
  p->resident_ns = sys::real_ns();
}

void put_snapshots(stats_page *p) {
  snapshot_counters s;
  snapshot_counters_get(&s);
  p->snapshots = s.taken;
  p->snapshots_failed = s.failed;
  p->snapshot_last_ns = s.last_ns;
  p->snapshot_last_pause_ns = s.last_pause_ns;
  p->snapshot_last_written_bytes = s.last_written;
  p->snapshot_last_shared_bytes = s.last_shared;
  p->snapshot_last_linked_bytes = s.last_linked;
  p->snapshot_pause_max_ns = s.pause_max_ns;
  p->snapshot_pause_total_ns = s.pause_total_ns;
  p->snapshot_written_bytes = s.written;
}

// The snapshot layer's hook, as a snapshot ends (no lock held).
void on_snapshot() {
  pthread_mutex_lock(&g_lock);
  if (stats_page *p = g_pub.page.load(std::memory_order_relaxed)) {
    write_begin(p);
    put_snapshots(p);
    write_end(p);
  }
  pthread_mutex_unlock(&g_lock);
}

// The heap's change hook (heap lock held).  The page is made here once the
// process has placed enough memory by policy (publish_units).
void on_heap_change(const heap_counters &c) {
  if (g_pub.disabled.load(std::memory_order_relaxed)) return;
  if (!g_pub.page.load(std::memory_order_relaxed)) {
    if (c.policy_units[0] + c.policy_units[1] < publish_units()) return;
    pthread_mutex_lock(&g_lock);
    if (!g_pub.page.load(std::memory_order_relaxed) && !g_pub.disabled.load(std::memory_order_relaxed))
      create_locked(true);
    pthread_mutex_unlock(&g_lock);
  }
  resident_split res;
  bool measured = false;
  const uint64_t now = sys::mono_ns();
  const uint64_t mover = g_pub.mover_mono.load(std::memory_order_relaxed);
  const uint64_t resident = g_pub.resident_mono.load(std::memory_order_relaxed);
  const bool mover_active = mover && now - mover < 2 * kSecond;
  if (!mover_active && c.units[0] + c.units[1] <= kInlineResidentUnits &&
      (!resident || now - resident >= kSecond)) {
    res = heap_resident_split_locked();
    measured = true;
  }
  pthread_mutex_lock(&g_lock);
  if (stats_page *p = g_pub.page.load(std::memory_order_relaxed)) {
    write_begin(p);
    put_counters(p, c);
    put_snapshots(p);
    // Also when the mover never runs (no userfaultfd: "moves unavailable").
    p->kernel_lacks = faults_kernel_lacks();
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
  agent_client_tick();
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
  resident_split res;
  if (measure) {
    res = heap_resident_split();
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
    p->kernel_lacks = faults_kernel_lacks();
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
    p->reshares = ms.reshares;
    p->reshare_bytes = ms.reshare_bytes;
    p->reshare_stops = ms.reshare_stops;
    p->reshare_pause_max_ns = ms.reshare_pause_max_ns;
    p->reshare_pause_total_ns = ms.reshare_pause_total_ns;
    p->reshare_stop_refusals = ms.reshare_stop_refusals;
    p->reshare_failed = ms.reshare_failed;
    put_snapshots(p);
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
bool g_child_publishes = false;  // the parent published: so does the child, at once

void fork_child() {
  pthread_mutex_init(&g_lock, nullptr);
  stats_page *p = g_pub.page.load(std::memory_order_relaxed);
  g_child_publishes = p != nullptr;
  if (p) sys::munmap(p, kFileSize);
  g_pub.page.store(nullptr, std::memory_order_relaxed);
  g_pub.path[0] = '\0';
  g_pub.dev = g_pub.ino = 0;
  g_pub.resident_mono.store(0, std::memory_order_relaxed);
  g_pub.mover_mono.store(0, std::memory_order_relaxed);
  g_pub.seen_requests = g_pub.asked_mono = g_pub.rate_mono = g_pub.rate_bytes = g_pub.measure_ns = 0;
}

void fork_child_ready() {
  // A child of a process too small to publish publishes, like any process,
  // once it places enough memory of its own.
  if (g_pub.disabled.load(std::memory_order_relaxed) || !g_child_publishes) return;
  heap_counters c;
  heap_counters_get(&c);
  pthread_mutex_lock(&g_lock);
  // A restored process's heap may have published already (its change hook
  // runs as the heap lock is given back): one page, never two.
  if (g_pub.page.load(std::memory_order_relaxed)) {
    pthread_mutex_unlock(&g_lock);
    return;
  }
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
  // The node agent's client runs after each scan, also without a page.
  agent_client_register();
  mover_set_scan_hook(on_scan);
  if (config_get().stats_off) return;
  quiesce_register(kRankLiveStats, {page_lock, page_unlock, fork_child, fork_child_ready, nullptr});
  heap_set_change_hook(on_heap_change);
  __atomic_store_n(&g_snapshot_done_hook, &on_snapshot, __ATOMIC_RELEASE);
  // A process that already placed enough while starting up (memory asked
  // for by constructors) publishes now.
  heap_counters c;
  heap_counters_get(&c);
  if (c.policy_units[0] + c.policy_units[1] >= publish_units()) {
    pthread_mutex_lock(&g_lock);
    create_locked(true);
    if (stats_page *p = g_pub.page.load(std::memory_order_relaxed)) {
      write_begin(p);
      put_counters(p, c);
      write_end(p);
    }
    pthread_mutex_unlock(&g_lock);
  }
}

void live_stats_resident(const resident_split &bytes) {
  pthread_mutex_lock(&g_lock);
  if (stats_page *p = g_pub.page.load(std::memory_order_relaxed)) {
    write_begin(p);
    put_resident(p, bytes);
    write_end(p);
    g_pub.resident_mono.store(sys::mono_ns(), std::memory_order_relaxed);
  }
  pthread_mutex_unlock(&g_lock);
}

uintptr_t live_stats_page() { return reinterpret_cast<uintptr_t>(g_pub.page.load(std::memory_order_relaxed)); }

bool live_stats_dir(char *out, size_t cap) {
  pthread_mutex_lock(&g_lock);
  const char *slash = g_pub.path[0] ? strrchr(g_pub.path, '/') : nullptr;
  const size_t n = slash ? static_cast<size_t>(slash - g_pub.path) : 0;
  const bool ok = slash && n < cap;
  if (ok) {
    memcpy(out, g_pub.path, n);
    out[n] = 0;
  }
  pthread_mutex_unlock(&g_lock);
  return ok;
}

void live_stats_exit() {
  pthread_mutex_lock(&g_lock);
  g_pub.disabled.store(true, std::memory_order_relaxed);
  // Only if the name is still our file (it may be gone, removed as stale by
  // a reader that could not see our mapping, or another's after that).
  if (g_pub.path[0]) {
    char *slash = strrchr(g_pub.path, '/');
    *slash = '\0';
    const long dfd = sys::openat(AT_FDCWD, g_pub.path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
    *slash = '/';
    if (dfd >= 0) {
      dir_lock g(static_cast<int>(dfd));
      struct stat b;
      if (sys::raw(SYS_newfstatat, dfd, reinterpret_cast<long>(slash + 1), reinterpret_cast<long>(&b),
                   AT_SYMLINK_NOFOLLOW) == 0 &&
          b.st_ino == g_pub.ino && b.st_dev == g_pub.dev)
        sys::unlinkat(static_cast<int>(dfd), slash + 1, 0);
    }
    if (dfd >= 0) sys::close(static_cast<int>(dfd));
  }
  g_pub.path[0] = '\0';
  pthread_mutex_unlock(&g_lock);
}

}  // namespace mmtier::detail
