// PMU access tracker (see pmu_tracker.h): the perf_event_open plumbing, the
// thread coverage set, and opening, draining and refreshing the events.
#include "track/pmu_tracker.h"

#include "heap/heap.h"
#include "platform/clock.h"
#include "platform/sys.h"
#include "support/layout.h"
#include "support/errors.h"
#include "support/log.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <time.h>

#include <cerrno>
#include <climits>
#include <cstdarg>
#include <cstring>

namespace mmtier::detail {

namespace {

pmu_status status_for_errno(long e) {
  switch (e) {
    case EACCES:
    case EPERM: return pmu_status::no_permission;
    case ENOSYS: return pmu_status::no_kernel_support;
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case EBUSY:
    case ENOSPC: return pmu_status::out_of_resources;
    default: return pmu_status::unsupported_event;
  }
}

long perf_open(perf_event_attr *a, long pid, int cpu, int group) {
  return sys::raw(SYS_perf_event_open, reinterpret_cast<long>(a), pid, cpu, group,
                  PERF_FLAG_FD_CLOEXEC);
}

long perf_ioctl(int fd, unsigned long req, long arg) {
  return sys::raw(SYS_ioctl, fd, static_cast<long>(req), arg);
}

// A plain cycles counter: tells "no PMU at all" from "a PMU without memory
// sampling".  fd (closed again) or -errno.
long probe_cycles() {
  perf_event_attr a{};
  a.type = PERF_TYPE_HARDWARE;
  a.size = sizeof a;
  a.config = PERF_COUNT_HW_CPU_CYCLES;
  a.disabled = 1;
  a.exclude_kernel = 1;
  a.exclude_hv = 1;
  long fd = perf_open(&a, 0, -1, -1);
  if (fd >= 0) sys::close(static_cast<int>(fd));
  return fd;
}

// Lists this process's threads (ascending or not); how many were written.
size_t list_tids(uint32_t *out, size_t cap) {
  long fd = sys::openat(AT_FDCWD, "/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (fd < 0) return 0;
  alignas(8) char buf[4096];
  size_t n = 0;
  for (;;) {
    long got = sys::raw(SYS_getdents64, fd, reinterpret_cast<long>(buf), sizeof buf);
    if (got == -EINTR) continue;
    if (got <= 0) break;
    for (long off = 0; off < got;) {
      unsigned short reclen;
      memcpy(&reclen, buf + off + 16, sizeof reclen);
      const char *name = buf + off + 19;
      uint64_t tid = 0;
      const char *q = name;
      if (*q >= '0' && *q <= '9' && pmu_parse_u64(q, &tid) && *q == '\0' && tid <= UINT32_MAX &&
          n < cap)
        out[n++] = static_cast<uint32_t>(tid);
      if (reclen == 0) break;
      off += reclen;
    }
  }
  sys::close(static_cast<int>(fd));
  return n;
}

constexpr uint8_t kCovered = 1;
constexpr uint8_t kPending = 2;
constexpr uint8_t kUnseen = 0x80;

}  // namespace

// --- thread coverage

size_t pmu_threads::find(uint32_t tid) const {
  size_t lo = 0, hi = n_;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (tid_[mid] < tid) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

bool pmu_threads::insert_at(size_t i, uint32_t tid, uint8_t state, uint64_t time) {
  if (n_ == kPmuMaxThreads) return false;
  memmove(tid_ + i + 1, tid_ + i, (n_ - i) * sizeof tid_[0]);
  memmove(time_ + i + 1, time_ + i, (n_ - i) * sizeof time_[0]);
  memmove(state_ + i + 1, state_ + i, (n_ - i) * sizeof state_[0]);
  tid_[i] = tid;
  time_[i] = time;
  state_[i] = state;
  n_++;
  return true;
}

void pmu_threads::erase_at(size_t i) {
  memmove(tid_ + i, tid_ + i + 1, (n_ - i - 1) * sizeof tid_[0]);
  memmove(time_ + i, time_ + i + 1, (n_ - i - 1) * sizeof time_[0]);
  memmove(state_ + i, state_ + i + 1, (n_ - i - 1) * sizeof state_[0]);
  n_--;
}

void pmu_threads::covered(uint32_t tid, uint64_t time) {
  size_t i = find(tid);
  if (i < n_ && tid_[i] == tid) {
    state_[i] = kCovered;
    if (time > time_[i]) time_[i] = time;
    return;
  }
  insert_at(i, tid, kCovered, time);
}

void pmu_threads::exited(uint32_t tid, uint64_t time) {
  size_t i = find(tid);
  if (i < n_ && tid_[i] == tid && time >= time_[i]) erase_at(i);
}

size_t pmu_threads::scan(const uint32_t *tids, size_t n, uint32_t *attach, size_t cap) {
  for (size_t i = 0; i < n_; i++) state_[i] |= kUnseen;
  size_t m = 0;
  for (size_t k = 0; k < n; k++) {
    const uint32_t tid = tids[k];
    size_t i = find(tid);
    if (i < n_ && tid_[i] == tid) {
      state_[i] &= static_cast<uint8_t>(~kUnseen);
      if (state_[i] == kPending && m < cap) attach[m++] = tid;
    } else {
      insert_at(i, tid, kPending, 0);
    }
  }
  size_t w = 0;
  for (size_t i = 0; i < n_; i++) {
    if (state_[i] & kUnseen) continue;
    tid_[w] = tid_[i];
    time_[w] = time_[i];
    state_[w] = state_[i];
    w++;
  }
  n_ = w;
  return m;
}

bool pmu_threads::is_covered(uint32_t tid) const {
  size_t i = find(tid);
  return i < n_ && tid_[i] == tid && state_[i] == kCovered;
}

bool pmu_threads::is_pending(uint32_t tid) const {
  size_t i = find(tid);
  return i < n_ && tid_[i] == tid && state_[i] == kPending;
}

// --- live tracker

pmu_status pmu_tracker::fail(pmu_status s, const char *fmt, ...) {
  release(true);
  va_list ap;
  va_start(ap, fmt);
  vformat(reason_, sizeof reason_, fmt, ap);
  va_end(ap);
  status_ = s;
  MMTIER_DEBUG("pebs: %s: %s", pmu_status_name(s), reason_);
  return s;
}

void pmu_tracker::release(bool unmap) {
  for (size_t i = 0; i < nrings_; i++) {
    if (unmap && rings_[i].map) sys::munmap(rings_[i].map, rings_[i].len);
  }
  for (size_t i = 0; i < nfds_; i++) sys::close(fds_[i].fd);
  nrings_ = nfds_ = nids_ = 0;
  threads_.reset();
  status_ = pmu_status::closed;
}

void pmu_tracker::close() {
  release(true);
  format(reason_, sizeof reason_, "closed");
}

void pmu_tracker::forget_after_fork() {
  release(false);
  format(reason_, sizeof reason_, "closed in a fork child");
}

void pmu_tracker::ignore_tid(uint32_t tid) {
  for (size_t i = 0; i < nignore_; i++)
    if (ignore_[i] == tid) return;
  if (nignore_ < kPmuMaxIgnoredTids) ignore_[nignore_++] = tid;
}

bool pmu_tracker::add_fd(int fd, int cpu, uint32_t tid) {
  if (nfds_ == kPmuMaxEvents) return false;
  fds_[nfds_++] = {fd, cpu, tid};
  return true;
}

void pmu_tracker::add_id(uint64_t id, pmu_kind kind) {
  if (nids_ == kPmuMaxEvents) return;
  size_t i = nids_;
  while (i > 0 && ids_[i - 1].id > id) {
    ids_[i] = ids_[i - 1];
    i--;
  }
  ids_[i] = {id, kind};
  nids_++;
}

pmu_tracker::ring_slot *pmu_tracker::ring_for(int cpu) {
  for (size_t i = 0; i < nrings_; i++)
    if (rings_[i].cpu == cpu) return &rings_[i];
  return nullptr;
}

long pmu_tracker::open_event(const pmu_event_spec &s, size_t spec_index, const attempt &a,
                             uint32_t tid, int cpu, int group, bool aux) {
  perf_event_attr at{};
  at.type = s.type;
  at.size = sizeof at;
  const uint64_t *cfg = aux ? s.aux_config : s.config;
  at.config = cfg[0];
  at.config1 = cfg[1];
  at.config2 = cfg[2];
  if (!aux) {
    at.sample_period = s.period;
    at.sample_type = kPmuSampleType;
    // FORK/EXIT records once per fork: from the first spec's events only.
    at.task = spec_index == 0;
  }
  at.precise_ip = a.precise;
  at.inherit = 1;
  if (a.modern) {
    at.inherit_thread = 1;
    at.remove_on_exec = 1;
    at.use_clockid = 1;
    at.clockid = CLOCK_MONOTONIC;
  }
  if (s.exclude_ok) {
    at.exclude_hv = 1;
    at.exclude_kernel = a.user_only;
  }
  return perf_open(&at, static_cast<long>(tid), cpu, group);
}

// Finds the attempt each spec opens with (on the calling thread and the
// spec's first CPU); specs that open with none are dropped.
pmu_status pmu_tracker::probe(uint32_t tid) {
  char first_why[200] = "";
  pmu_status first_status = pmu_status::unsupported_event;
  size_t kept = 0;
  for (size_t i = 0; i < plan_.n; i++) {
    const pmu_event_spec &s = plan_.ev[i];
    int cpu = -1;
    for (size_t c = 0; c < kPmuMaxCpus && cpu < 0; c++)
      if (s.cpus.has(static_cast<int>(c))) cpu = static_cast<int>(c);
    bool opened = false;
    long perm_err = 0, last_err = 0;
    attempt last{};
    for (int modern = 1; modern >= 0 && !opened; modern--) {
      for (int user = s.exclude_ok && !params_.sample_kernel ? 1 : 0;
           user <= (s.exclude_ok ? 1 : 0) && !opened; user++) {
        for (int pr = s.max_precise; pr >= s.min_precise && !opened; pr--) {
          attempt a{modern != 0, user != 0, static_cast<uint8_t>(pr)};
          if (cpu < 0) break;
          long leader = -1;
          if (s.aux_leader) {
            leader = open_event(s, kept, a, tid, cpu, -1, true);
            if (leader < 0) {
              last_err = -leader;
              last = a;
              if (last_err == EACCES || last_err == EPERM) perm_err = last_err;
              continue;
            }
          }
          long fd = open_event(s, kept, a, tid, cpu, static_cast<int>(leader), false);
          if (leader >= 0) sys::close(static_cast<int>(leader));
          if (fd >= 0) {
            sys::close(static_cast<int>(fd));
            chosen_[kept] = a;
            opened = true;
          } else {
            last_err = -fd;
            last = a;
            if (last_err == EACCES || last_err == EPERM) perm_err = last_err;
          }
        }
      }
    }
    if (opened) {
      if (kept != i) plan_.ev[kept] = s;
      kept++;
      continue;
    }
    if (!first_why[0]) {
      long err = perm_err ? perm_err : last_err;
      first_status = cpu < 0 ? pmu_status::unsupported_event : status_for_errno(err);
      char paranoid[16] = "?", ebuf[24];
      if (pmu_read_text("/proc/sys/kernel/perf_event_paranoid", paranoid, sizeof paranoid) > 0)
        for (char *q = paranoid; *q; q++)
          if (*q == '\n') *q = '\0';
      if (cpu < 0) format(first_why, sizeof first_why, "PMU %s covers no online CPU", s.pmu);
      else
        format(first_why, sizeof first_why,
               "perf_event_open(%s %s, precise_ip=%u%s) failed: %s (perf_event_paranoid=%s)", s.pmu,
               s.kind == pmu_kind::load    ? "loads"
               : s.kind == pmu_kind::store ? "stores"
                                           : "ops",
               static_cast<unsigned>(last.precise), last.user_only ? ", user only" : "",
               errno_name(err, ebuf), paranoid);
    }
  }
  plan_.n = static_cast<uint32_t>(kept);
  if (kept == 0) return fail(first_status, "%s", first_why);
  return pmu_status::ok;
}

// Opens every spec's events for thread tid on each of its CPUs, each writing
// to its CPU's ring (created by the first event there).  Returns the
// sampling events opened.
int pmu_tracker::attach(uint32_t tid, bool first) {
  int opened = 0;
  for (size_t i = 0; i < plan_.n; i++) {
    const pmu_event_spec &s = plan_.ev[i];
    for (size_t c = 0; c < kPmuMaxCpus; c++) {
      const int cpu = static_cast<int>(c);
      if (!s.cpus.has(cpu)) continue;
      if (nfds_ + 2 > kPmuMaxEvents) {
        stats_.attach_failures++;
        continue;
      }
      long leader = -1;
      if (s.aux_leader) {
        leader = open_event(s, i, chosen_[i], tid, cpu, -1, true);
        if (leader < 0) {
          stats_.attach_failures++;
          continue;
        }
        add_fd(static_cast<int>(leader), cpu, tid);
      }
      long fd = open_event(s, i, chosen_[i], tid, cpu, static_cast<int>(leader), false);
      if (fd < 0) {
        stats_.attach_failures++;
        continue;
      }
      add_fd(static_cast<int>(fd), cpu, tid);
      ring_slot *r = ring_for(cpu);
      if (!r && nrings_ < kPmuMaxCpus) {
        for (;;) {
          const size_t len = (size_t{ring_pages_} + 1) * kPageSize;
          long m =
              sys::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, static_cast<int>(fd), 0);
          if (!sys::failed(m)) {
            rings_[nrings_++] = {cpu, static_cast<int>(fd), reinterpret_cast<void *>(m), len};
            r = &rings_[nrings_ - 1];
            break;
          }
          // The mlock allowance (perf_event_mlock_kb, RLIMIT_MEMLOCK): try smaller.
          if ((m == -EPERM || m == -ENOMEM) && ring_pages_ > 1) {
            ring_pages_ /= 2;
            continue;
          }
          if (first && nrings_ == 0) {
            char ebuf[24];
            format(reason_, sizeof reason_, "mmap of a perf ring buffer failed: %s", errno_name(-m, ebuf));
            status_ = status_for_errno(-m);
          }
          break;
        }
        if (!r) {
          stats_.attach_failures++;
          continue;
        }
      } else if (!r) {
        stats_.attach_failures++;
        continue;
      } else if (perf_ioctl(static_cast<int>(fd), PERF_EVENT_IOC_SET_OUTPUT, r->fd) < 0) {
        stats_.attach_failures++;
        continue;
      }
      uint64_t id = 0;
      if (perf_ioctl(static_cast<int>(fd), PERF_EVENT_IOC_ID, reinterpret_cast<long>(&id)) == 0)
        add_id(id, s.kind);
      opened++;
    }
  }
  if (opened > 0) stats_.threads_attached++;
  return opened;
}

pmu_status pmu_tracker::open(const pmu_params &p) {
  release(true);
  stats_ = {};
  params_ = p;
  if (!params_.sysfs_root) params_.sysfs_root = "/sys";
  base_ = p.base;
  size_ = p.size;
  if (size_ == 0) {
    base_ = g_heap.base;
    size_ = g_heap.size;
  }
  if (size_ == 0)
    return fail(pmu_status::invalid_argument, "no managed range (the heap is not initialised)");
  ring_pages_ = p.ring_pages;
  if (ring_pages_ == 0 || (ring_pages_ & (ring_pages_ - 1)) != 0 || ring_pages_ > (1u << 16))
    return fail(pmu_status::invalid_argument, "ring_pages %u is not a power of two up to 65536",
                ring_pages_);
  pid_ = static_cast<uint32_t>(sys::getpid());

  char why[220];
  pmu_status st;
  if (p.plan) {
    plan_ = *p.plan;
    st = plan_.n > 0 && plan_.n <= kPmuMaxSpecs ? pmu_status::ok : pmu_status::invalid_argument;
    format(why, sizeof why, "the given plan has %u event kinds", plan_.n);
  } else {
    st = pmu_plan_events(params_, &plan_, why, sizeof why);
  }
  if (st != pmu_status::ok) {
    if (st == pmu_status::no_pmu) {
      long c = probe_cycles();
      if (c >= 0)
        return fail(pmu_status::unsupported_event,
                    "%s; the PMU counts cycles but has no memory sampling", why);
      if (c == -ENOSYS)
        return fail(pmu_status::no_kernel_support, "perf_event_open is not available (ENOSYS)");
      char ebuf[24];
      return fail(pmu_status::no_pmu, "%s; perf_event_open(cpu-cycles) failed: %s", why, errno_name(-c, ebuf));
    }
    return fail(st, "%s", why);
  }

  const uint32_t self = static_cast<uint32_t>(sys::raw(SYS_gettid));
  st = probe(self);
  if (st != pmu_status::ok) return st;

  status_ = pmu_status::unsupported_event;
  format(reason_, sizeof reason_, "no event could be opened on the calling thread");
  if (attach(self, true) == 0 || nrings_ == 0) {
    const pmu_status bad = status_;
    char saved[sizeof reason_];
    format(saved, sizeof saved, "%s", reason_);
    return fail(bad, "%s", saved);
  }
  const uint64_t now = chosen_[0].modern ? sys::mono_ns() : 0;
  threads_.covered(self, now);

  // Every other thread alive now gets its own events; threads they create
  // from here on inherit them.
  uint32_t tids[kPmuMaxThreads];
  const size_t n = list_tids(tids, kPmuMaxThreads);
  for (size_t i = 0; i < n; i++) {
    if (tids[i] == self) continue;
    if (attach(tids[i], false) > 0) threads_.covered(tids[i], now);
  }

  status_ = pmu_status::ok;
  format(reason_, sizeof reason_,
         "%s: %u event kind(s) on %zu CPU ring(s) of %u pages, precise_ip=%u, %s%s",
         plan_.vendor == pmu_vendor::intel     ? "Intel PEBS"
         : plan_.vendor == pmu_vendor::amd_ibs ? "AMD IBS"
                                               : "given events",
         plan_.n, nrings_, ring_pages_, static_cast<unsigned>(chosen_[0].precise),
         chosen_[0].user_only ? "user-only" : "user+kernel",
         chosen_[0].modern ? "" : ", old kernel (no inherit_thread)");
  MMTIER_DEBUG("pebs: %s", reason_);
  return status_;
}

void pmu_tracker::on_task(void *self, bool exit, uint32_t, uint32_t tid, uint64_t time) {
  auto *t = static_cast<pmu_tracker *>(self);
  if (exit) t->threads_.exited(tid, time);
  else t->threads_.covered(tid, time);
}

namespace {

// Samples go to the caller's sink; task records update the tracker's thread
// set first.
struct drain_adapter {
  void *tracker;
  void (*on_task)(void *, bool, uint32_t, uint32_t, uint64_t);
  const pmu_sink *user;
  static void sample(void *c, const pmu_sample &x) {
    auto *a = static_cast<drain_adapter *>(c);
    if (a->user->sample) a->user->sample(a->user->ctx, x);
  }
  static void task(void *c, bool exit, uint32_t pid, uint32_t tid, uint64_t time) {
    auto *a = static_cast<drain_adapter *>(c);
    a->on_task(a->tracker, exit, pid, tid, time);
    if (a->user->task) a->user->task(a->user->ctx, exit, pid, tid, time);
  }
};

}  // namespace

size_t pmu_tracker::drain(const pmu_sink &sink) {
  if (!is_open()) return 0;
  pmu_filter f;
  f.layout = pmu_layout_for(kPmuSampleType);
  f.base = base_;
  f.size = size_;
  f.pid = pid_;
  f.ids = ids_;
  f.nids = nids_;
  f.default_kind = pmu_kind::mixed;  // an unknown id: DATA_SRC decides
  f.ignore_tids = ignore_;
  f.nignore = nignore_;
  drain_adapter ad{this, on_task, &sink};
  pmu_sink as;
  as.sample = drain_adapter::sample;
  as.task = drain_adapter::task;
  as.ctx = &ad;
  size_t total = 0;
  for (size_t i = 0; i < nrings_; i++) {
    pmu_ring_view v;
    if (pmu_ring_from_mapping(rings_[i].map, rings_[i].len, &v))
      total += pmu_parse_ring(v, f, as, &stats_);
  }
  return total;
}

size_t pmu_tracker::refresh() {
  if (!is_open()) return 0;
  uint32_t tids[kPmuMaxThreads];
  const size_t n = list_tids(tids, kPmuMaxThreads);
  uint32_t todo[64];
  const size_t m = threads_.scan(tids, n, todo, 64);
  size_t attached = 0;
  const uint64_t now = chosen_[0].modern ? sys::mono_ns() : 0;
  for (size_t i = 0; i < m; i++) {
    if (attach(todo[i], false) > 0) {
      threads_.covered(todo[i], now);
      attached++;
    }
  }
  return attached;
}

}  // namespace mmtier::detail
