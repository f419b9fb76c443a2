// Fault service (see faults.h): one userfaultfd per process and a handler
// thread with every signal blocked, which reads fault messages and answers
// each one.  An answer that the kernel refuses for now (-EAGAIN: the address
// space is changing under an mremap whose event is still unread) is retried
// after the next read.
#include "heap/faults.h"
#include "heap/heap_internal.h"

#include "config/config.h"

#include "platform/clock.h"
#include "platform/fd_guard.h"
#include "platform/sys.h"
#include "platform/uffd.h"
#include "support/thread.h"
#include "support/errors.h"
#include "support/layout.h"
#include "support/log.h"
#include "support/quiesce.h"
#include "support/world.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <time.h>

#include <cerrno>
#include <cstring>

namespace mmtier::detail {
namespace {

constexpr uint64_t kNeeded = UFFD_FEATURE_EVENT_REMAP;
constexpr uint64_t kWanted = UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_THREAD_ID |
                             UFFD_FEATURE_MOVE | UFFD_FEATURE_WP_UNPOPULATED;

std::atomic<int> g_fd{-1};
// The handler thread reads the descriptor (set once it runs, cleared when
// it stops): a fault taken before would wait for a thread not there yet.
std::atomic<int> g_serving{0};  // a futex word: faults_start waits for it
// Faults read and not all answered yet: a batch in hand, or retries held
// (faults_caught_up).  Set before the read, so that a fault taken off the
// descriptor is always either unread or counted here.
std::atomic<int> g_in_hand{0};
uint64_t g_features = 0;
pthread_mutex_t g_start_lock = PTHREAD_MUTEX_INITIALIZER;
bool g_failed = false;  // started and failed: do not retry in this process
std::atomic<uint64_t> g_generation{0};

// Post-copy window.  An answer copies from the promotion's view of the
// slot, which the promotion unmaps once the window is closed: the close
// waits for every answer that may still read it (g_pc_answering).
std::atomic<uintptr_t> g_pc_dst{0};
std::atomic<uintptr_t> g_pc_src{0};
std::atomic<size_t> g_pc_len{0};
std::atomic<uint32_t> g_pc_answering{0};

// Hold window: missing faults inside wait for the mover's wake, but the
// mover's own (its thread id: g_hold_tid).
std::atomic<uintptr_t> g_hold_dst{0};
std::atomic<size_t> g_hold_len{0};
std::atomic<uint32_t> g_hold_tid{0};

// Sample table and the handler's use of it.
std::atomic<fault_sample *> g_samples{nullptr};
std::atomic<size_t> g_samples_n{0};
std::atomic<int> g_samples_readers{0};

// Answers against move-outs (faults_moveout_begin): a missing-page fault
// is answered inside a section the sampler waits for, and not while a
// move-out is under way (tried again after the next read).
std::atomic<uint32_t> g_answering{0};
std::atomic<uint32_t> g_moving_out{0};

std::atomic<uint64_t> g_faults{0}, g_sample_faults{0}, g_postcopy_faults{0}, g_wp_faults{0};
std::atomic<clockid_t> g_cpu_clock{0};
std::atomic<bool> g_have_cpu_clock{false};

alignas(kPageSize) const unsigned char g_zero_page[kPageSize] = {};

uint32_t faults_lacks_of(uint64_t features) {
  uint32_t lacks = 0;
  if (!(features & UFFD_FEATURE_PAGEFAULT_FLAG_WP)) lacks |= kLackWriteProtect;
  if (!(features & UFFD_FEATURE_WP_UNPOPULATED)) lacks |= kLackWpUnpopulated;
  if (!(features & UFFD_FEATURE_MOVE)) lacks |= kLackMove;
  return lacks;
}

bool sample_holds(const fault_sample &s, uintptr_t page) { return page - s.page < (s.len ? s.len : kPageSize); }

// The entry whose range holds page (entries never overlap).
fault_sample *find_sample(fault_sample *t, size_t n, uintptr_t page) {
  size_t lo = 0, hi = n;  // the first entry starting after page
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (t[mid].page <= page) lo = mid + 1;
    else hi = mid;
  }
  if (lo > 0 && sample_holds(t[lo - 1], page)) return &t[lo - 1];
  // The sampler keeps the table sorted; should it ever not be, answering a
  // hidden page with a zero page would lose its data: look at every entry.
  for (size_t i = 0; i < n; ++i)
    if (sample_holds(t[i], page)) return &t[i];
  return nullptr;
}

// A write-protect fault on a page sampled in place: the page is
// unprotected, its waiters woken, and the sample counts as written.
// False if the page is not such a sample.
bool answer_watched(int fd, uintptr_t page, uint32_t ptid, uint64_t read_ns) {
  bool found = false;
  g_samples_readers.fetch_add(1, std::memory_order_seq_cst);
  if (fault_sample *t = g_samples.load(std::memory_order_seq_cst)) {
    fault_sample *s = find_sample(t, g_samples_n.load(std::memory_order_acquire), page);
    // Only while the sample holds the page: once it is back, a write-protect
    // fault there is a demotion's.
    const uint8_t st = s ? s->state.load(std::memory_order_acquire) : 0;
    if (s && s->by_wp && (st == kSampleOut || st == kSampleMoving)) {
      found = true;
      uint8_t want = kSampleOut;
      if (s->state.compare_exchange_strong(want, kSampleMoving, std::memory_order_acq_rel)) {
        s->touch_ns.store(read_ns, std::memory_order_relaxed);
        if (const faults_hook_fn hook = g_faults_test_hook.load(std::memory_order_acquire)) hook(3, page);
        faults_sample_restore(*s);
        s->written.store(1, std::memory_order_relaxed);
        s->ptid = ptid;
        s->answered_ns = sys::mono_ns();
        s->state.store(kSampleTouched, std::memory_order_release);
        g_sample_faults.fetch_add(1, std::memory_order_relaxed);
      } else {
        sys::uffd::wake(fd, reinterpret_cast<void *>(page), kPageSize);  // the sampler unprotects it
      }
    }
  }
  g_samples_readers.fetch_sub(1, std::memory_order_release);
  if (found) g_faults.fetch_add(1, std::memory_order_relaxed);
  return found;
}

// Runs f as an answer (see g_answering); false, without running it, while a
// sample is going out.  Sequentially consistent on both sides (with
// faults_moveout_begin): either the sampler sees the answer in flight and
// waits for it, or the answer sees the move-out and waits its turn.
template <class F>
bool answer_section(F &&f) {
  g_answering.fetch_add(1, std::memory_order_seq_cst);
  const bool clear = g_moving_out.load(std::memory_order_seq_cst) == 0;
  if (clear) f();
  g_answering.fetch_sub(1, std::memory_order_release);
  return clear;
}

// A missing-page fault on a sample that is out: 1 answered (moved back
// here, or being moved back by the sampler, who wakes it), -1 to retry
// later, 0 when no sample holds the page now (never one, or back already).
int answer_sample(int fd, uintptr_t page, uint64_t flags, uint32_t ptid, uint64_t read_ns) {
  int result = 0;
  g_samples_readers.fetch_add(1, std::memory_order_seq_cst);
  if (fault_sample *t = g_samples.load(std::memory_order_seq_cst)) {
    if (fault_sample *s = find_sample(t, g_samples_n.load(std::memory_order_acquire), page)) {
      uint8_t want = kSampleOut;
      if (s->state.compare_exchange_strong(want, kSampleMoving, std::memory_order_acq_rel)) {
        if (!s->touch_ns.load(std::memory_order_relaxed)) s->touch_ns.store(read_ns, std::memory_order_relaxed);
        if (const faults_hook_fn hook = g_faults_test_hook.load(std::memory_order_acquire)) hook(3, page);
        if (faults_sample_restore(*s) == -EAGAIN) {
          s->state.store(kSampleOut, std::memory_order_release);
          result = -1;
        } else {
          if (flags & UFFD_PAGEFAULT_FLAG_WRITE) s->written.store(1, std::memory_order_relaxed);
          s->ptid = ptid;
          s->answered_ns = sys::mono_ns();
          s->state.store(kSampleTouched, std::memory_order_release);
          g_sample_faults.fetch_add(1, std::memory_order_relaxed);
          result = 1;
        }
      } else if (want == kSampleMoving) {
        // Whoever took it from kSampleOut puts it back and wakes it.
        sys::uffd::wake(fd, reinterpret_cast<void *>(page), kPageSize);
        result = 1;
      }
      // Back already: the entry no longer holds the page.  A fault there
      // now is another's (the page dropped since, or a unit that became
      // pending in the same window), or one read together with the fault
      // that brought it back.
    }
  }
  g_samples_readers.fetch_sub(1, std::memory_order_release);
  if (result > 0) g_faults.fetch_add(1, std::memory_order_relaxed);
  return result;
}

// Answers one missing-page fault of thread ptid (0: not known), read from
// the userfaultfd at read_ns (a sample's first touch); false to retry later
// (-EAGAIN).
bool answer(int fd, uintptr_t addr, uint64_t flags, uint32_t ptid, uint64_t read_ns) {
  const uintptr_t page = align_down(addr, kPageSize);
  void *p = reinterpret_cast<void *>(page);
  if (flags & UFFD_PAGEFAULT_FLAG_WP) {
    if (answer_watched(fd, page, ptid, read_ns)) return true;
    // A write to a unit being demoted: it waits for the mover's wake.
    g_wp_faults.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  long r = 0;
  size_t done = 0;
  // A sampled page?
  int sampled = 0;
  if (!answer_section([&] { sampled = answer_sample(fd, page, flags, ptid, read_ns); })) return false;
  if (sampled) return sampled > 0;
  // A page of a unit being demoted where write-protect cannot cover
  // missing pages: it waits like a write (the mover wakes it).
  if (page - g_hold_dst.load(std::memory_order_seq_cst) < g_hold_len.load(std::memory_order_seq_cst)) {
    // The mover reading a page that went away after it looked (a raw
    // madvise past mmtier): held, it would wait for itself.  It gets the
    // zeros the page now holds, write-protected so a writer still waits.
    if (ptid && ptid == g_hold_tid.load(std::memory_order_acquire)) {
      size_t done = 0;
      long r = sys::uffd::copy_protected(fd, p, g_zero_page, kPageSize, &done);
      if (r == -EAGAIN) return false;
      if (r < 0) sys::uffd::wake(fd, p, kPageSize);
      g_faults.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    g_wp_faults.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  // Inside the post-copy window?  Sequentially consistent with the close
  // (faults_postcopy_close): either this sees the window closed, or the
  // close waits until the copy from its view is done.
  g_pc_answering.fetch_add(1, std::memory_order_seq_cst);
  const uintptr_t dst = g_pc_dst.load(std::memory_order_seq_cst);
  const size_t len = g_pc_len.load(std::memory_order_seq_cst);
  const bool postcopy = page - dst < len;
  if (postcopy) {
    if (const faults_hook_fn hook = g_faults_test_hook.load(std::memory_order_acquire)) hook(2, page);
    const uintptr_t src = g_pc_src.load(std::memory_order_acquire) + (page - dst);
    r = sys::uffd::copy(fd, p, reinterpret_cast<const void *>(src), kPageSize, &done);
    if (r == 0) g_postcopy_faults.fetch_add(1, std::memory_order_relaxed);
  }
  g_pc_answering.fetch_sub(1, std::memory_order_release);
  if (!postcopy) {
    // The first access to a PMem unit whose storage waits for it.
    const int pending = heap_pending_fault(fd, page);
    if (pending == -EAGAIN) return false;
    if (pending > 0) return true;  // counted by the heap (pmem_first_touches), not as tracking
    // Not a sample, not being promoted: a page that never existed, or one
    // put back already (the fill then fails with -EEXIST).  Asked again as
    // one answer with the fill: the page may have gone out since it was
    // looked at above (a new window), and zeros filled into its hole would
    // take the place of its data.
    const bool answered = answer_section([&] {
      sampled = answer_sample(fd, page, flags, ptid, read_ns);
      if (sampled) return;
      if (const faults_hook_fn hook = g_faults_test_hook.load(std::memory_order_acquire)) hook(1, page);
      r = flags & UFFD_PAGEFAULT_FLAG_WRITE ? sys::uffd::copy(fd, p, g_zero_page, kPageSize, &done)
                                            : sys::uffd::zeropage(fd, p, kPageSize);
    });
    if (!answered) return false;
    if (sampled) return sampled > 0;
  }
  if (r == -EAGAIN) return false;
  // -EEXIST: someone filled the page first; -ENOENT: the range is no longer
  // registered.  Either way the waiter must be woken to retry its access.
  if (r < 0) sys::uffd::wake(fd, p, kPageSize);
  g_faults.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void *handler_main(void *) {
  clockid_t cid;
  if (pthread_getcpuclockid(pthread_self(), &cid) == 0) {
    g_cpu_clock.store(cid, std::memory_order_relaxed);
    g_have_cpu_clock.store(true, std::memory_order_release);
  }
  const int fd = g_fd.load(std::memory_order_acquire);
  g_serving.store(1, std::memory_order_release);
  sys::raw(SYS_futex, reinterpret_cast<long>(&g_serving), FUTEX_WAKE_PRIVATE, INT32_MAX);
  constexpr size_t kBatch = 64;
  uffd_msg msgs[kBatch];
  struct pending {
    uintptr_t addr;
    uint64_t flags;
    uint32_t ptid;
    uint64_t read_ns;
  } retry[256];
  size_t nretry = 0;
  for (;;) {
    pollfd pfd = {fd, POLLIN, 0};
    // With faults waiting for a retry, come back soon even without news.
    long pr = sys::raw(SYS_poll, reinterpret_cast<long>(&pfd), 1, nretry ? 1 : -1);
    if (pr < 0 && pr != -EINTR) break;
    if (const faults_hook_fn hook = g_faults_test_hook.load(std::memory_order_acquire)) hook(0, 0);
    g_in_hand.store(1, std::memory_order_seq_cst);
    long n = sys::read(fd, msgs, sizeof msgs);
    if (n < 0 && n != -EAGAIN && n != -EINTR) break;
    const size_t count = n > 0 ? static_cast<size_t>(n) / sizeof(uffd_msg) : 0;
    const uint64_t read_ns = sys::mono_ns();  // when these faults were seen (a retry keeps its own)
    // Retries first (their mremap event has been read by now, or soon).
    size_t keep = 0;
    for (size_t i = 0; i < nretry; ++i)
      if (!answer(fd, retry[i].addr, retry[i].flags, retry[i].ptid, retry[i].read_ns)) retry[keep++] = retry[i];
    nretry = keep;
    for (size_t i = 0; i < count; ++i) {
      const uffd_msg &m = msgs[i];
      if (m.event != UFFD_EVENT_PAGEFAULT) continue;  // REMAP: reading it is the answer
      const uint32_t ptid = (g_features & UFFD_FEATURE_THREAD_ID) ? m.arg.pagefault.feat.ptid : 0;
      if (!answer(fd, m.arg.pagefault.address, m.arg.pagefault.flags, ptid, read_ns)) {
        if (nretry < sizeof retry / sizeof retry[0])
          retry[nretry++] = {m.arg.pagefault.address, m.arg.pagefault.flags, ptid, read_ns};
        else sys::uffd::wake(fd, reinterpret_cast<void *>(align_down(m.arg.pagefault.address, kPageSize)), kPageSize);
      }
    }
    g_in_hand.store(nretry ? 1 : 0, std::memory_order_release);
  }
  // Nothing moves any more: new migrations and samples see no service.
  MMTIER_ERROR("fault service stopped reading its userfaultfd; memory is not moved between tiers any more");
  // No new unit waits for a first touch; those waiting become DRAM, their
  // faulting threads woken (else they would wait for ever).
  g_serving.store(0, std::memory_order_release);
  heap_pending_abandon();
  g_fd.store(-1, std::memory_order_release);
  return nullptr;
}

}  // namespace

void faults_start_settle() {
  pthread_mutex_lock(&g_start_lock);
  pthread_mutex_unlock(&g_start_lock);
}

bool faults_start() {
  if (g_fd.load(std::memory_order_acquire) >= 0) return true;
  pthread_mutex_lock(&g_start_lock);
  bool ok = g_fd.load(std::memory_order_acquire) >= 0;
  if (!ok && !g_failed) {
    long err = 0;
    const uint64_t have = sys::uffd::features(&err);
    long fd = -1;
    if (err == -EPERM || err == -EACCES) {
      MMTIER_WARN("this process may not use userfaultfd (uid %ld: vm.unprivileged_userfaultfd is 0 and "
                  "/dev/userfaultfd is not open to it); memory is placed on the tiers but not moved between "
                  "them. scripts/install-host.sh opens /dev/userfaultfd to the group mmtier (README: every "
                  "process on a host)",
                  static_cast<long>(sys::raw(SYS_geteuid)));
    } else if ((have & kNeeded) != kNeeded) {
      MMTIER_WARN("userfaultfd is not available or lacks mremap events (features 0x%lx, error %ld); "
                  "memory is not moved between tiers",
                  static_cast<unsigned long>(have), -err);
    } else {
      fd = sys::uffd::open();
      if (fd >= 0) {
        sys::raw(SYS_fcntl, fd, F_SETFL, O_NONBLOCK);
        g_features = have & kWanted;
        // Tests run the paths of older kernels (MMTIER_HIDE_FEATURES).
        const uint32_t hide = config_get().hide_features;
        if (hide & kHideWpUnpopulated) g_features &= ~uint64_t{UFFD_FEATURE_WP_UNPOPULATED};
        if (hide & kHideMove) g_features &= ~uint64_t{UFFD_FEATURE_MOVE};
        if (hide & kHideWriteProtect)
          g_features &= ~uint64_t{UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_UNPOPULATED};
        if (sys::uffd::api(static_cast<int>(fd), g_features) < 0) {
          sys::close(static_cast<int>(fd));
          fd = -1;
        }
      }
      if (fd < 0) MMTIER_WARN("cannot open a userfaultfd (error %ld); memory is not moved between tiers", -fd);
    }
    if (fd >= 0) {
      const int guarded = fd_guard(static_cast<int>(fd));
      if (guarded < 0) {
        sys::close(static_cast<int>(fd));
        MMTIER_WARN("no room to guard the userfaultfd; memory is not moved between tiers");
      }
      fd = guarded;
    }
    if (fd >= 0) {
      // Said once per process (not again in a fork child).
      static bool said = false;
      if (!said) {
        said = true;
        // What cannot work is a warning; a fallback's cost, information.
        const uint32_t lacks = faults_lacks_of(g_features);
        if (lacks & kLackWriteProtect) MMTIER_WARN("%s", kernel_lack_meaning(kLackWriteProtect));
        else if (lacks & kLackWpUnpopulated) MMTIER_INFO("%s", kernel_lack_meaning(kLackWpUnpopulated));
        if (lacks & kLackMove) MMTIER_INFO("%s", kernel_lack_meaning(kLackMove));
      }
      g_generation.fetch_add(1, std::memory_order_relaxed);
      g_fd.store(static_cast<int>(fd), std::memory_order_release);
      const int e = start_service_thread(handler_main, "mmtier-uffd");
      if (e == 0) {
        ok = true;
        // Until the thread reads the descriptor, a fault would wait for it:
        // placement gives storage at first touch only once it does (a
        // second at most; a busy machine may take that long to run it).
        const timespec step = {0, 10'000'000};
        for (int i = 0; i < 100 && !g_serving.load(std::memory_order_acquire); ++i)
          sys::raw(SYS_futex, reinterpret_cast<long>(&g_serving), FUTEX_WAIT_PRIVATE, 0,
                   reinterpret_cast<long>(&step));
      } else {
        MMTIER_WARN("cannot start the fault service thread (error %d)", e);
        g_fd.store(-1, std::memory_order_release);
        sys::close(static_cast<int>(fd));
      }
    }
    g_failed = !ok;
  }
  pthread_mutex_unlock(&g_start_lock);
  return ok;
}

uint64_t faults_generation() { return g_generation.load(std::memory_order_acquire); }

bool faults_ready() { return g_fd.load(std::memory_order_acquire) >= 0; }
bool faults_serving() { return faults_ready() && g_serving.load(std::memory_order_acquire) != 0; }
int faults_fd() { return g_fd.load(std::memory_order_acquire); }
bool faults_can_demote() { return faults_ready() && (g_features & UFFD_FEATURE_PAGEFAULT_FLAG_WP); }
bool faults_wp_unpopulated() { return faults_ready() && (g_features & UFFD_FEATURE_WP_UNPOPULATED); }
bool faults_can_move() { return faults_ready() && (g_features & UFFD_FEATURE_MOVE); }
bool faults_can_sample() { return faults_can_move() || faults_can_demote(); }

bool faults_caught_up() {
  const int fd = g_fd.load(std::memory_order_acquire);
  if (fd < 0) return true;
  // The descriptor first, then the hands: a fault read in between was
  // counted in hand before the read.
  pollfd pfd = {fd, POLLIN, 0};
  if (sys::raw(SYS_poll, reinterpret_cast<long>(&pfd), 1, 0) > 0) return false;
  return g_in_hand.load(std::memory_order_seq_cst) == 0;
}

uint32_t faults_kernel_lacks() {
  if (!faults_ready()) return g_failed ? static_cast<uint32_t>(kLackUserfaultfd) : 0u;
  return faults_lacks_of(g_features);
}

void faults_hold_open(void *addr, size_t len) {
  g_hold_tid.store(static_cast<uint32_t>(sys::raw(SYS_gettid)), std::memory_order_release);
  g_hold_dst.store(reinterpret_cast<uintptr_t>(addr), std::memory_order_seq_cst);
  g_hold_len.store(len, std::memory_order_seq_cst);
}

void faults_hold_close() {
  g_hold_len.store(0, std::memory_order_seq_cst);
  g_hold_dst.store(0, std::memory_order_seq_cst);
}

void faults_postcopy_open(void *dst, const void *src, size_t len) {
  g_pc_src.store(reinterpret_cast<uintptr_t>(src), std::memory_order_relaxed);
  g_pc_dst.store(reinterpret_cast<uintptr_t>(dst), std::memory_order_relaxed);
  g_pc_len.store(len, std::memory_order_release);
}

void faults_postcopy_close() {
  g_pc_len.store(0, std::memory_order_seq_cst);
  g_pc_dst.store(0, std::memory_order_seq_cst);
  // An answer in flight never waits for the promotion: this wait is as
  // short as one page's copy.
  while (g_pc_answering.load(std::memory_order_seq_cst) != 0) sched_yield();
}

long faults_sample_restore(fault_sample &s) {
  const int fd = g_fd.load(std::memory_order_acquire);
  void *page = reinterpret_cast<void *>(s.page);
  void *side = reinterpret_cast<void *>(s.side);
  const size_t len = s.len ? s.len : kPageSize;
  if (s.by_wp) {
    const long r = sys::uffd::write_protect(fd, page, len, false);
    if (r < 0) MMTIER_ERROR("sampling: cannot unprotect page %p (error %ld)", page, -r);
    sys::uffd::wake(fd, page, len);
    return r;
  }
  // A whole unit moves back as one huge page, or (split at the side) page
  // by page: what is back already (s.back) is never asked again, a retry
  // goes on from there.
  size_t at = s.back;
  long r = -EOPNOTSUPP;
  bool taken = false;
  while (faults_can_move() && at < len) {
    size_t done = 0;
    r = sys::uffd::move(fd, static_cast<char *>(page) + at, static_cast<char *>(side) + at, len - at, &done);
    at += done;
    if (r == -EEXIST) {
      // Something mapped this page while its data was at the side (nothing
      // here may: see faults_moveout_begin), and overwriting it could lose
      // a write: its data stays at the side, the rest goes back.
      MMTIER_ERROR("sampling: cannot put page %p back (it was mapped meanwhile); its data stays at %p",
                   static_cast<char *>(page) + at, static_cast<char *>(side) + at);
      taken = true;
      at += kPageSize;
    } else if (r != 0 && (r != -EAGAIN || done == 0)) {
      break;
    }
    s.back = static_cast<uint32_t>(at);
  }
  if (at >= len) {
    if (taken) sys::uffd::wake(fd, page, len);
    return taken ? -EEXIST : 0;
  }
  if (r == -EAGAIN) return r;
  // The side page cannot move (shared since fork, swapped, flags changed
  // under it): copy it back, then drop the side copy.
  size_t done = 0;
  r = sys::uffd::copy(fd, static_cast<char *>(page) + at, static_cast<char *>(side) + at, len - at, &done);
  s.back = static_cast<uint32_t>(at + done);
  // No memory for the page now (a cgroup at its limit): the data stays at
  // the side until a later try; giving up would lose it.
  if (r == -EAGAIN || r == -ENOMEM) return -EAGAIN;
  if (r == 0) {
    // (A page left at the side above keeps its data there.)
    if (taken) sys::madvise(static_cast<char *>(side) + at, len - at, MADV_DONTNEED);
    else sys::madvise(side, len, MADV_DONTNEED);
    if (taken) sys::uffd::wake(fd, page, len);
    return taken ? -EEXIST : 0;
  }
  // -EEXIST as above (the copy stops at such a page).
  MMTIER_ERROR("sampling: cannot put page %p back (error %ld); its data stays at %p",
               static_cast<char *>(page) + s.back, -r, static_cast<char *>(side) + s.back);
  sys::uffd::wake(fd, page, len);
  return r;
}

std::atomic<faults_hook_fn> g_faults_test_hook{nullptr};

void faults_moveout_begin() {
  g_moving_out.fetch_add(1, std::memory_order_seq_cst);
  // An answer in flight never waits for the sampler (it moves a page back,
  // or fills one, and returns): this wait is as short as one answer.
  while (g_answering.load(std::memory_order_seq_cst) != 0) sched_yield();
}

void faults_moveout_end() { g_moving_out.fetch_sub(1, std::memory_order_release); }

void faults_samples_publish(fault_sample *table, size_t n) {
  g_samples_n.store(n, std::memory_order_release);
  g_samples.store(table, std::memory_order_seq_cst);
}

void faults_samples_retract() {
  // Pairs with the handler's increment-then-load: sequentially consistent
  // on both sides, so either it sees no table or this sees it reading.
  g_samples.store(nullptr, std::memory_order_seq_cst);
  while (g_samples_readers.load(std::memory_order_seq_cst) != 0) sched_yield();
  g_samples_n.store(0, std::memory_order_release);
}

void faults_counters_get(fault_counters *out) {
  out->faults = g_faults.load(std::memory_order_relaxed);
  out->sample_faults = g_sample_faults.load(std::memory_order_relaxed);
  out->postcopy_faults = g_postcopy_faults.load(std::memory_order_relaxed);
  out->wp_faults = g_wp_faults.load(std::memory_order_relaxed);
  out->cpu_ns = 0;
  if (g_have_cpu_clock.load(std::memory_order_acquire))
    out->cpu_ns = sys::clock_ns(g_cpu_clock.load(std::memory_order_relaxed));
}

namespace {

void start_lock() { pthread_mutex_lock(&g_start_lock); }
void start_unlock() { pthread_mutex_unlock(&g_start_lock); }

void fork_child() {
  // The parent's descriptor and thread are not ours; registrations did not
  // survive the fork.  Start afresh on first use.
  g_serving.store(0, std::memory_order_relaxed);
  const int fd = g_fd.exchange(-1, std::memory_order_acq_rel);
  if (fd >= 0) {
    fd_unguard(fd);
    sys::close(fd);
  }
  pthread_mutex_init(&g_start_lock, nullptr);
  g_failed = false;
  g_have_cpu_clock.store(false, std::memory_order_relaxed);
  // The parent's handler thread may have been inside an answer at the fork
  // (or the snapshot): its counts are not this process's, and the waits
  // on them (a promotion's close, a sample going out) would never end.
  g_pc_answering.store(0, std::memory_order_relaxed);
  g_answering.store(0, std::memory_order_relaxed);
  g_moving_out.store(0, std::memory_order_relaxed);
  g_in_hand.store(0, std::memory_order_relaxed);  // else no sample idle until its service answers one
  faults_postcopy_close();
  faults_hold_close();
  g_samples.store(nullptr, std::memory_order_relaxed);
  g_samples_n.store(0, std::memory_order_relaxed);
  g_samples_readers.store(0, std::memory_order_relaxed);
}

}  // namespace

void faults_fork_register() { quiesce_register(kRankFaultsStart, {start_lock, start_unlock, fork_child, nullptr, nullptr}); }

}  // namespace mmtier::detail
