// Taking a snapshot (see capture.h): prepare the capsule while the program
// runs, stop every thread (each records where it stopped), fork the writer
// from the stopped process, resume, and wait for the writer.
#include "snapshot/capture.h"

#include "config/config.h"
#include "heap/heap.h"
#include "platform/clock.h"
#include "platform/dirent.h"
#include "platform/fd_guard.h"
#include "platform/proc_maps.h"
#include "platform/resume_point.h"
#include "platform/sys.h"
#include "snapshot/capsule_dir.h"
#include "snapshot/chain.h"
#include "snapshot/fd_capture.h"
#include "snapshot/proc_text.h"
#include "snapshot/thread_signals.h"
#include "snapshot/restore_note.h"
#include "snapshot/writer.h"
#include "snapshot/zeroio.h"
#include "support/crc32c.h"
#include "support/log.h"
#include "support/thread.h"
#include "support/world.h"

#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

// glibc's rseq registration (2.35 and later): where in each thread's TLS
// the area is, and its size; absent from older glibc (weak: null).
extern "C" {
extern const ptrdiff_t __rseq_offset __attribute__((weak));
extern const unsigned int __rseq_size __attribute__((weak));
}

namespace mmtier::detail {

restore_note g_restore_note;
uintptr_t (*g_snapshot_stats_page)() = nullptr;

namespace {

namespace cap = capsule;

constexpr int kMaxThreads = 4096;
constexpr uint64_t kStopTimeoutNs = 1'000'000'000;

pthread_mutex_t g_one = PTHREAD_MUTEX_INITIALIZER;  // one snapshot at a time
bool g_held = false;         // a snapshot's hold is under way (snap_request::hold)
snap_result g_held_result;   // its result, counted when it ends
snap_thread g_threads[kMaxThreads];
std::atomic<int> g_nthreads{0};
int g_nthreads_total = 0;  // in the table, the capturer's and service threads included

uint64_t fs_base() {
#if defined(__x86_64__)
  uint64_t v = 0;
  sys::raw(SYS_arch_prctl, 0x1003 /* ARCH_GET_FS */, reinterpret_cast<long>(&v));
  return v;
#else
  return 0;
#endif
}

constexpr uint32_t kRseqSig = 0x53053053;  // x86-64's RSEQ_SIG
constexpr long kRseqUnregister = 1;

// The kernel's per-thread state a restore sets again, read by the thread
// itself (async-signal-safe).
void thread_state(snap_thread &t) {
  sys::raw(SYS_prctl, PR_GET_TID_ADDRESS, reinterpret_cast<long>(&t.clear_tid));
  size_t len = 0;
  sys::raw(SYS_get_robust_list, 0, reinterpret_cast<long>(&t.robust_head), reinterpret_cast<long>(&len));
  t.robust_len = len;
  stack_t ss;
  memset(&ss, 0, sizeof ss);
  if (sys::raw(SYS_sigaltstack, 0, reinterpret_cast<long>(&ss)) == 0) {
    t.altstack_sp = reinterpret_cast<uint64_t>(ss.ss_sp);
    t.altstack_size = ss.ss_size;
    t.altstack_flags = static_cast<uint32_t>(ss.ss_flags & ~SS_ONSTACK);
  } else {
    t.altstack_flags = SS_DISABLE;
  }
  sys::raw(SYS_prctl, PR_GET_NAME, reinterpret_cast<long>(t.name));
  // glibc's registration, confirmed by the kernel: registering the same
  // area again says EBUSY.  (A thread without one would be registered by
  // the probe, and is unregistered at once.)
  if (&__rseq_size && &__rseq_offset && __rseq_size && t.fs_base) {
    const uint64_t area = t.fs_base + static_cast<uint64_t>(__rseq_offset);
    for (uint32_t len32 : {32u, static_cast<uint32_t>(__rseq_size)}) {
      const long r = sys::raw(SYS_rseq, static_cast<long>(area), len32, 0, kRseqSig);
      if (r == 0) sys::raw(SYS_rseq, static_cast<long>(area), len32, kRseqUnregister, kRseqSig);
      if (r == -EBUSY) {
        t.rseq_area = area;
        t.rseq_len = len32;
        t.rseq_sig = kRseqSig;
        break;
      }
    }
  }
}

// Signals pending for the whole process (thread_signals.h): the capsule's
// records.
constexpr uint32_t kMaxPending = kMaxProcessSignals;
cap::signal_record g_pending[kMaxPending];  // under g_one
uint32_t g_npending = 0;

// In each stopped thread (the stop signal's handler): where it stopped,
// and where a restore resumes it.
resume_point *capture_thread(void *uc, int tid) {
  if (tid == sys::getpid()) {
    // The leader also takes the process's (only it may queue a kill()'s
    // siginfo again), its own first and held back, as the capturer does
    // in capture_process.
    thread_signals_take(tid, true);
    process_signals_take();
    thread_signals_requeue_deferred();
  } else {
    thread_signals_take(tid);
  }
  const int i = g_nthreads.fetch_add(1, std::memory_order_relaxed);
  if (i >= kMaxThreads) return nullptr;
  snap_thread &t = g_threads[i];
  memset(&t, 0, sizeof t);
  t.tid = tid;
  t.fs_base = fs_base();
  t.uc = uc;
  thread_state(t);
  return kResumePoints ? &t.rp : nullptr;
}

// A thread of a restored process landing where it was stopped: off the
// restorer's range.
void landed() {
  if (__atomic_sub_fetch(&g_restore_note.users, 1, __ATOMIC_ACQ_REL) == 0)
    sys::raw(SYS_futex, reinterpret_cast<long>(&g_restore_note.users), FUTEX_WAKE_PRIVATE, 1);
}

void set_line(snap_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void set_line(snap_result *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->line, sizeof r->line, fmt, ap);
  va_end(ap);
}

long capture_pending(snap_result *res) {
  g_npending = 0;
  const siginfo_t *taken = nullptr;
  uint32_t n = process_signals_taken(&taken);
  if (n == UINT32_MAX) {  // not by the leader (it is this thread, or gone)
    process_signals_take();
    n = process_signals_taken(&taken);
  }
  if (n > kMaxPending) {
    set_line(res, "more than %u signals are pending for the process (not supported)", kMaxPending);
    return -EOPNOTSUPP;
  }
  for (uint32_t i = 0; i < n; ++i) memcpy(g_pending[i].info, &taken[i], sizeof g_pending[i].info);
  g_npending = n;
  return 0;
}

constexpr uint32_t kMaxTimers = 32;
cap::timer_record g_timers[kMaxTimers];  // under g_one
uint32_t g_ntimers;

cap::procstate_record g_proc;  // under g_one
char g_cwd[4096];
char g_exe[4096];

// The process's own state, in the pause (the program cannot change it
// meanwhile): signal dispositions, limits, interval timers, umask, cwd.
void capture_procstate() {
  cap::procstate_record &p = g_proc;
  memset(&p, 0, sizeof p);
  for (uint32_t sig = 1; sig <= cap::kSignals; ++sig) {
    struct {
      uint64_t handler, flags, restorer, mask;
    } k = {};
    if (sys::raw(SYS_rt_sigaction, sig, 0, reinterpret_cast<long>(&k), 8) == 0)
      p.sigactions[sig - 1] = {k.handler, k.flags, k.restorer, k.mask};
  }
  for (uint32_t r = 0; r < cap::kRlimits; ++r) {
    struct {
      uint64_t cur, max;
    } lim = {};
    if (sys::raw(SYS_prlimit64, 0, r, 0, reinterpret_cast<long>(&lim)) == 0) p.rlimits[r] = {lim.cur, lim.max};
  }
  for (int w = 0; w < 3; ++w) {
    struct {
      long is, ius, vs, vus;
    } it = {};
    if (sys::raw(SYS_getitimer, w, reinterpret_cast<long>(&it)) == 0)
      p.itimers[w] = {it.is * 1000000 + it.ius, it.vs * 1000000 + it.vus};
  }
  p.personality = static_cast<uint32_t>(sys::raw(SYS_personality, 0xffffffff));
  if (sys::raw(SYS_getcwd, reinterpret_cast<long>(g_cwd), sizeof g_cwd) < 0) g_cwd[0] = 0;
  // "Umask:\t0022" in status (the umask call would have to set one).
  char status[4096];
  read_small("/proc/thread-self/status", status, sizeof status);
  if (const char *u = strstr(status, "Umask:\t")) p.umask = static_cast<uint32_t>(strtoul(u + 7, nullptr, 8));
  // The layout the kernel keeps (PR_SET_MM_MAP at restore): stat fields
  // 26-28 and 45-51, counted after the command's closing parenthesis.
  char stat[1024];
  read_small("/proc/thread-self/stat", stat, sizeof stat);
  if (const char *s = strrchr(stat, ')')) {
    uint64_t field[53] = {};
    int f = 2;
    for (++s; *s && f < 52;) {
      while (*s == ' ') ++s;
      ++f;
      field[f] = strtoull(s, nullptr, 10);
      while (*s && *s != ' ') ++s;
    }
    const int at[cap::kMmFields] = {26, 27, 45, 46, 47, 0, 28, 48, 49, 50, 51};
    for (uint32_t k = 0; k < cap::kMmFields; ++k) p.mm[k] = at[k] ? field[at[k]] : 0;
  }
  p.mm[cap::kMmBrk] = static_cast<uint64_t>(sys::raw(SYS_brk, 0));
  const long afd = sys::openat(AT_FDCWD, "/proc/thread-self/auxv", O_RDONLY | O_CLOEXEC, 0);
  if (afd >= 0) {
    const long n = sys::read(static_cast<int>(afd), p.auxv, sizeof p.auxv);
    sys::close(static_cast<int>(afd));
    if (n > 0) p.auxv_words = static_cast<uint32_t>(n / 8);
  }
  const long n = sys::raw(SYS_readlink, reinterpret_cast<long>("/proc/thread-self/exe"), reinterpret_cast<long>(g_exe),
                          sizeof g_exe - 1);
  g_exe[n > 0 ? n : 0] = 0;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  p.flags |= cap::kProcUnrestorable;
#endif
}

// The header, as much as is known before the stop.
void fill_header(cap::header *h) {
  memset(h, 0, sizeof *h);
  sys::raw(SYS_getrandom, reinterpret_cast<long>(h->capsule_id), sizeof h->capsule_id, 0);
  h->created_ns = sys::real_ns();
  snprintf(h->mmtier_version, sizeof h->mmtier_version, "%s", MMTIER_VERSION_STRING);
  h->pid = static_cast<int32_t>(sys::getpid());
  h->restore_note_size = sizeof(restore_note);
  char stat[1024];
  read_small("/proc/self/stat", stat, sizeof stat);
  // Field 22, counted after the command name's closing parenthesis.
  if (const char *p = strrchr(stat, ')')) {
    int field = 2;
    for (++p; *p && field < 22; ++p)
      if (*p == ' ') ++field;
    h->starttime = strtoull(p, nullptr, 10);
  }
  read_small("/proc/sys/kernel/random/boot_id", h->boot_id, sizeof h->boot_id);
  h->uid = static_cast<uint32_t>(getuid());
  h->gid = static_cast<uint32_t>(getgid());
  h->euid = static_cast<uint32_t>(geteuid());
  h->egid = static_cast<uint32_t>(getegid());
  read_small("/proc/self/comm", h->comm, sizeof h->comm);
  h->cmdline_crc = launch_cmdline_crc();
  read_small("/proc/sys/kernel/osrelease", h->kernel_release, sizeof h->kernel_release);
  char version[512];
  read_small("/proc/sys/kernel/version", version, sizeof version);
  h->kernel_version_crc = crc32c(0, version, strlen(version));
  // The kernel's vDSO: a restore needs the same one (the program's libc
  // holds addresses inside it).
  sys::maps_reader maps;
  if (maps.open() == 0) {
    sys::maps_entry e;
    while (maps.next(&e)) {
      const bool vdso = e.name_len == 6 && !memcmp(e.name, "[vdso]", 6);
      const bool vvar = e.name_len >= 6 && !memcmp(e.name, "[vvar", 5);
      if (vdso) {
        h->vdso_len = e.hi - e.lo;
        h->vdso_crc = crc32c(0, reinterpret_cast<const void *>(e.lo), e.hi - e.lo);
      } else if (vvar) {
        h->vvar_len += e.hi - e.lo;
      }
    }
    maps.close();
  }
  h->page_size = 4096;
  h->restore_note_addr = reinterpret_cast<uint64_t>(&g_restore_note);
}

struct prepared {
  int parent_dirfd = -1;
  uint64_t parent_dev = 0, parent_ino = 0;
  char name[80] = {};
  int base_dirfd = -1;  // the capsule this one builds on (incremental), or -1
  cap::pending pend;
  int report[2] = {-1, -1};  // the writer's line
  int pause[2] = {-1, -1};   // the pause's length, to the writer
};

void close_fd(int &fd) {
  if (fd >= 0) sys::close(fd);
  fd = -1;
}

void release(prepared &p, bool remove) {
  if (remove)
    cap::abort(p.parent_dirfd, &p.pend);
  else
    cap::release(&p.pend);
  close_fd(p.report[0]);
  close_fd(p.report[1]);
  close_fd(p.pause[0]);
  close_fd(p.pause[1]);
  close_fd(p.base_dirfd);
  close_fd(p.parent_dirfd);
}

void remember(const prepared &p, const cap::header &h) {
  chain_remember(p.parent_dev, p.parent_ino, p.name, h.capsule_id);
}

// P0, with the program running: the directory, the capsule's files, pipes.
// What no restore can bring back, found with the program running: a child
// process (a capsule holds one process), and kernel objects of a kind that
// cannot be made again (io_uring, another userfaultfd, perf events, BPF,
// pidfds, inotify and fanotify).  0, or -EOPNOTSUPP with the line naming it.
long unsupported(const snap_request &req, snap_result *res) {
  long found = 0;
  const long tdir = sys::openat(AT_FDCWD, "/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (tdir >= 0) {
    sys::for_each_dirent(static_cast<int>(tdir), [&](const char *name, unsigned char) -> long {
      if (name[0] < '0' || name[0] > '9' || found) return 0;
      char path[64], buf[256];
      snprintf(path, sizeof path, "/proc/self/task/%s/children", name);
      read_small(path, buf, sizeof buf);
      if (buf[0]) {
        const long child = strtol(buf, nullptr, 10);
        set_line(res, "process %ld is a child of this one: a capsule holds one process (not supported)", child);
        found = -EOPNOTSUPP;
      }
      return 0;
    });
    sys::close(static_cast<int>(tdir));
  }
  if (found) return found;
  return fds_unsupported(req.own_fd, res->line, sizeof res->line);
}

vm_advice g_advice;  // read before the stop (under g_one; not on a stack)

long prepare(const snap_request &req, prepared *p, snap_result *res) {
  if (long r = unsupported(req, res); r < 0) return r;
  if (long r = read_vm_advice(&g_advice, res->line, sizeof res->line); r < 0) return r;
  const char *dir = req.dir ? req.dir : config_get().snapshot_dir;
  if (!dir || !dir[0]) {
    set_line(res, "no capsule directory: set MMTIER_SNAPSHOT_DIR");
    return -ENOENT;
  }
  char name[80];
  if (req.name) {
    if (!cap::valid_name(req.name)) {
      set_line(res, "invalid capsule name \"%.64s\": use 1 to 64 of A-Z a-z 0-9 . _ -, not starting with a dot",
               req.name);
      return -EINVAL;
    }
    snprintf(name, sizeof name, "%s", req.name);
  } else {
    default_capsule_name(name, sizeof name);
  }
  if (strlen(dir) + strlen(name) + sizeof cap::kSuffix + 1 > sizeof res->path) {
    set_line(res, "the capsule directory's path is too long");
    return -ENAMETOOLONG;
  }
  size_t at = 0;
  for (const char *part : {dir, "/", static_cast<const char *>(name), cap::kSuffix}) {
    const size_t n = strlen(part);
    memcpy(res->path + at, part, n);
    at += n;
  }
  res->path[at] = 0;
  if (int r = cap::make_dirs(dir); r < 0) {
    set_line(res, "cannot create the capsule directory %s: %s", dir, strerror(-r));
    return r;
  }
  long fd = sys::openat(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (fd < 0) {
    set_line(res, "cannot open the capsule directory %s: %s", dir, strerror(static_cast<int>(-fd)));
    return fd;
  }
  p->parent_dirfd = static_cast<int>(fd);
  struct stat dst;
  if (sys::raw(SYS_fstat, fd, reinterpret_cast<long>(&dst)) == 0) {
    p->parent_dev = dst.st_dev;
    p->parent_ino = dst.st_ino;
  }
  memcpy(p->name, name, sizeof p->name);
  if (!req.full && config_get().snapshot_chain > 1)
    p->base_dirfd = chain_open_base(p->parent_dirfd, p->parent_dev, p->parent_ino);
  if (int r = cap::begin(p->parent_dirfd, name, &p->pend); r < 0) {
    if (r == -EEXIST)
      set_line(res, "a capsule named %s exists in %s", name, dir);
    else
      set_line(res, "cannot create the capsule in %s: %s", dir, strerror(-r));
    close_fd(p->parent_dirfd);
    return r;
  }
  long e = sys::raw(SYS_pipe2, reinterpret_cast<long>(p->report), O_CLOEXEC | O_NONBLOCK);
  if (e == 0) e = sys::raw(SYS_pipe2, reinterpret_cast<long>(p->pause), O_CLOEXEC);
  if (e < 0) {
    set_line(res, "cannot make a pipe: %s", strerror(static_cast<int>(-e)));
    release(*p, true);
    return e;
  }
  return 0;
}

constexpr long kRestored = -100000;  // stop_and_fork: this is a restored process

// The capturer in a restored process, resumed in stop_and_fork with the
// world stopped as it was at the snapshot: waits for every thread to be
// off the restorer's range and removes it, then puts every layer right
// and lets the others go (quiesce_restored).  Nothing of the snapshot's
// descriptors exists here.
void restored(uint64_t mask) {
  fd_guard_forget_all();
  if (g_restore_note.magic == kRestoreNoteMagic && g_restore_note.host_pid > 0)
    sys::set_host_pid(g_restore_note.host_pid);
  landed();
  for (int u; (u = __atomic_load_n(&g_restore_note.users, __ATOMIC_ACQUIRE)) > 0;)
    sys::raw(SYS_futex, reinterpret_cast<long>(&g_restore_note.users), FUTEX_WAIT_PRIVATE, u, 0);
  if (g_restore_note.magic == kRestoreNoteMagic && g_restore_note.b_len)
    sys::munmap(reinterpret_cast<void *>(g_restore_note.b_lo), g_restore_note.b_len);
  if (g_restore_note.magic == kRestoreNoteMagic && (g_restore_note.flags & kNoteThinClone)) heap_note_thin_clone();
  quiesce_restored();
  // ZeroIO: the capsule's PMem files, held for the next snapshot to link.
  if (g_restore_note.magic == kRestoreNoteMagic && g_restore_note.npmem_fds <= 8)
    heap_adopt_capsule_storage(g_restore_note.pmem_fds, g_restore_note.npmem_fds);
  // The dead original's service threads, started only to end, are gone
  // before the program goes on (a stop right away would wait for them).
  const int n = g_nthreads_total;
  for (int i = 0; i < n; ++i) {
    if (!(g_threads[i].flags & cap::kThreadService) || !g_threads[i].clear_tid) continue;
    // The kernel clears the word at the thread's exit; the C library may
    // then give its stack, word included, to a new thread at once.
    // A new thread of the program could take both (its TID is free once
    // the old one ended): a bounded wait.
    auto *word = reinterpret_cast<int *>(g_threads[i].clear_tid);
    const int tid = g_threads[i].tid;
    const timespec step = {0, 100'000'000};
    for (int k = 0; k < 20 && __atomic_load_n(word, __ATOMIC_ACQUIRE) == tid; ++k)
      sys::raw(SYS_futex, reinterpret_cast<long>(word), FUTEX_WAIT, tid, reinterpret_cast<long>(&step));
  }
  // Now mmtier's own threads may start again (the frozen units want
  // re-sharing).
  g_start_due.store(true, std::memory_order_release);
  sys::raw(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&mask), 0, 8);
}

// In the pause: the process's own state, its pending signals and its
// POSIX timers, into wa.
long capture_state(writer_args &wa, snap_result *res) {
  capture_procstate();
  // The capturing thread's own first, held back until the process's are
  // taken (taking those takes the thread's own first).
  thread_signals_take(static_cast<int>(sys::raw(SYS_gettid)), true);
  const long pending = capture_pending(res);
  thread_signals_requeue_deferred();
  bool overflow = false;
  const cap::thread_signal_record *ts = nullptr;
  wa.nthread_signals = thread_signals_taken(&ts, &overflow);
  wa.thread_signals = ts;
  if (overflow) {
    set_line(res, "more than %u signals are pending for single threads (not supported)", kMaxThreadSignals);
    return -EOPNOTSUPP;
  }
  if (pending < 0) return pending;
  if (long r = capture_timers(g_timers, kMaxTimers, &g_ntimers, res->line, sizeof res->line); r < 0) return r;
  wa.signals = g_pending;
  wa.nsignals = g_npending;
  wa.timers = g_timers;
  wa.ntimers = g_ntimers;
  wa.proc = &g_proc;
  wa.cwd = g_cwd;
  wa.exe = g_exe;
  return 0;
}

// In the pause: memory the writer would see otherwise than the program
// does (shared_copy.h), then the process's state.  The advice is read
// again, every thread stopped, when the program changed what a fork wipes
// since it was read (or a thread stopped inside such a call).
long capture_process(writer_args &wa, snap_result *res) {
  if (!fork_advice_settled(g_advice.epoch))
    if (long r = read_vm_advice(&g_advice, res->line, sizeof res->line); r < 0) return r;
  if (long r = shared_copy_take(&wa.shared, *wa.advice, res->line, sizeof res->line); r < 0) return r;
  const long r = capture_state(wa, res);
  if (r < 0) shared_copy_release(&wa.shared);
  return r;
}

// mmtier's own threads, which ran on, after the n stopped ones: a restore
// lets each one end as the C library expects of a detached thread.  The
// new count.
int add_service_threads(int n) {
  service_thread services[8];
  const int nservices = service_threads(services, 8);
  for (int k = 0; k < nservices && n < kMaxThreads - 1; ++k) {
    snap_thread &t = g_threads[n++];
    memset(&t, 0, sizeof t);
    t.tid = services[k].tid;
    t.flags = cap::kThreadService;
    t.fs_base = services[k].fs_base;
    t.clear_tid = services[k].clear_tid;
    t.robust_head = services[k].robust_head;
    t.robust_len = services[k].robust_len;
    t.rp = services[k].rp;
    t.altstack_flags = SS_DISABLE;
    t.sigmask = ~uint64_t{0};
    memcpy(t.name, "mmtier-service", 15);
  }
  return n;
}

// P1: stops the world, forks the writer, resumes.  The writer's pid file
// descriptor, or -errno, or kRestored.
long stop_and_fork(writer_args &wa, snap_result *res, bool hold) {
  g_world_landed_hook = landed;
  g_nthreads.store(0, std::memory_order_relaxed);
  thread_signals_reset();
  world_stats ws{};
  const uint64_t t0 = sys::mono_ns();
  if (long r = world_stop(quiesce_reason::snapshot, kStopTimeoutNs, &ws, capture_thread); r < 0) {
    if (r == -EAGAIN) {
      char who[32] = "";
      const long tid = world_signal_blocker(who, sizeof who);
      if (tid)
        set_line(res, "thread %ld (%s) blocks the stop signal and cannot be stopped", tid, who);
      else
        set_line(res, "a thread did not stop within 1 s");
    } else {
      set_line(res, "cannot stop the threads: %s", strerror(static_cast<int>(-r)));
    }
    return r;
  }
  int n = g_nthreads.load(std::memory_order_acquire);
  if (n >= kMaxThreads) {
    world_resume();
    set_line(res, "more than %d threads", kMaxThreads - 1);
    return -E2BIG;
  }
  n = add_service_threads(n);
  snap_thread &me = g_threads[n++];
  memset(&me, 0, sizeof me);
  me.tid = static_cast<int32_t>(sys::raw(SYS_gettid));
  me.flags = cap::kThreadCapturer;
  me.fs_base = fs_base();
  thread_state(me);
  wa.threads = g_threads;
  wa.nthreads = static_cast<uint32_t>(n);
  g_nthreads_total = n;
  const uint64_t t_stopped = sys::mono_ns();
  if (long r = capture_process(wa, res); r < 0) {
    world_resume();
    return r;
  }
  wa.stats_page = g_snapshot_stats_page ? g_snapshot_stats_page() : 0;
  const uint64_t t_process = sys::mono_ns();
  {
    const int skip[] = {wa.parent_dirfd, wa.pend->dirfd, wa.manifest_fd,    wa.mem_fd, wa.report_fd,
                        wa.pause_fd,     wa.report_read_fd, wa.pause_write_fd, wa.own_fd, wa.base_dirfd};
    if (long r = fd_capture(skip, sizeof skip / sizeof *skip, &wa.fds, res->line, sizeof res->line); r < 0) {
      world_resume();
      fd_capture_release();
      shared_copy_release(&wa.shared);
      return r;
    }
  }
  const uint64_t t_fds = sys::mono_ns();
  res->frozen_in_stop = heap_snapshot_frozen_in_stop();
  // Every PMem unit is frozen now: the linked PMem file becomes the
  // capsule's.
  pmem_hand_over(&wa, res);
  // The writer must never run a handler of the program's: every signal
  // blocked across the fork (the child keeps the mask).
  sigset_t all, old;
  sigfillset(&all);
  sys::raw(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&all), reinterpret_cast<long>(&old), 8);
  memcpy(&me.sigmask, &old, sizeof me.sigmask);
  // A restore resumes this thread here, in this frame (live in the image:
  // the fork below is made from it).
  if (kResumePoints && mmtier_resume_point_save(&me.rp)) {
    fd_capture_forget();  // its range was not the image's
    restored(g_threads[wa.nthreads - 1].sigmask);
    return kRestored;
  }
  int pidfd = -1;
  // No exit signal: the program's SIGCHLD handler and its wait() never see
  // the writer.  Raw clone, not fork(): no atfork handler runs (the stop
  // already put every layer in its fork state).
  const uint64_t t_fork = sys::mono_ns();
  const long pid = sys::raw(SYS_clone, CLONE_PIDFD, 0, reinterpret_cast<long>(&pidfd), 0, 0);
  if (pid == 0) writer_start(wa);
  const uint64_t t_forked = sys::mono_ns();
  sys::raw(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&old), 0, 8);
  if (!hold || pid < 0) world_resume();
  fd_capture_release();  // the writer has its copy
  shared_copy_release(&wa.shared);
  res->paused_ns = sys::mono_ns() - t0;
  res->threads = static_cast<uint32_t>(n);
  // Where the pause went (MMTIER_LOG=debug), microseconds.
  MMTIER_DEBUG("snapshot pause %llu us: layers entered %llu (the freeze in the stop, samples settled), threads "
               "stopped %llu, process state %llu, descriptors %llu, PMem hand-over %llu, the writer's fork %llu",
               static_cast<unsigned long long>(res->paused_ns / 1000), static_cast<unsigned long long>(ws.enter_ns / 1000),
               static_cast<unsigned long long>((t_stopped - t0 - ws.enter_ns) / 1000),
               static_cast<unsigned long long>((t_process - t_stopped) / 1000),
               static_cast<unsigned long long>((t_fds - t_process) / 1000),
               static_cast<unsigned long long>((t_fork - t_fds) / 1000),
               static_cast<unsigned long long>((t_forked - t_fork) / 1000));
  if (pid < 0) {
    set_line(res, "cannot start the writer process: %s", strerror(static_cast<int>(-pid)));
    return pid;
  }
  return pidfd;
}

// P3: the writer's exit status (0, or an errno value with its line).
int wait_writer(int pidfd, prepared &p, snap_result *res) {
  siginfo_t si;
  memset(&si, 0, sizeof si);
  long r;
  while ((r = sys::raw(SYS_waitid, P_PIDFD, pidfd, reinterpret_cast<long>(&si), WEXITED | __WALL, 0)) == -EINTR) {
  }
  sys::close(pidfd);
  if (r < 0) {
    set_line(res, "cannot wait for the writer: %s", strerror(static_cast<int>(-r)));
    return static_cast<int>(-r);
  }
  if (si.si_code != CLD_EXITED) {
    set_line(res, "the writer was killed by signal %d", si.si_status);
    return EINTR;
  }
  if (si.si_status == 0) return 0;
  char line[200];
  const long n = sys::read(p.report[0], line, sizeof line - 1);
  line[n > 0 ? n : 0] = 0;
  set_line(res, "%s", n > 0 ? line : "the writer failed");
  return si.si_status;
}

}  // namespace

namespace {

long take(const snap_request &req, snap_result *res) {
  memset(res, 0, sizeof *res);
  if (pthread_mutex_trylock(&g_one) != 0) {
    set_line(res, "another snapshot of this process is under way");
    return -EBUSY;
  }
  if (lazy_fill_pending()) {
    // Its missing pages would be saved as never touched.
    pthread_mutex_unlock(&g_one);
    set_line(res, "a lazy restore (mmtier restore --lazy) is still filling this process's memory; try again once "
                  "it is done");
    return -EBUSY;
  }
  prepared p;
  long r = prepare(req, &p, res);
  if (r < 0) {
    pthread_mutex_unlock(&g_one);
    return r;
  }
  writer_args wa;
  memset(static_cast<void *>(&wa), 0, sizeof wa);  // every field zero, whatever its initializer
  wa.parent_dirfd = p.parent_dirfd;
  wa.pend = &p.pend;
  wa.manifest_fd = p.pend.manifest_fd;
  wa.mem_fd = p.pend.mem_fd;
  wa.report_fd = p.report[1];
  wa.pause_fd = p.pause[0];
  wa.report_read_fd = p.report[0];
  wa.own_fd = req.own_fd;
  wa.pause_write_fd = p.pause[1];
  fill_header(&wa.hdr);
  wa.heap_lo = g_heap.base;
  wa.heap_hi = g_heap.base + g_heap.size;
  pmem_link_storage(req.copy_pmem ? -1 : p.pend.dirfd, &wa, res);  // -1: nothing linked
  wa.base_dirfd = p.base_dirfd;
  chain_base_id(wa.base_id);
  wa.base_max_files = config_get().snapshot_chain;
  wa.advice = &g_advice;
  // PMem units the program's own fork left private (written since): shared
  // again first where nothing need stop for it, so that the stop's fork
  // does not copy their page tables (heap_reshare_now).
  res->reshared_before = heap_reshare_now().bytes;
  res->frozen_before = heap_snapshot_prefreeze();
  const long pidfd = stop_and_fork(wa, res, req.hold);
  if (pidfd == kRestored) {
    // The snapshot's files and pipes were the dead original's.  Its next
    // snapshot builds on the capsule it came back from.
    remember(p, wa.hdr);
    pthread_mutex_unlock(&g_one);
    MMTIER_INFO("restored from snapshot %s", res->path);
    // mmtier's threads (mover, control socket) start again now, not at the
    // program's next allocation slow path: an idle restored server must
    // answer `mmtier snapshot` too.
    heap_maybe_start();
    return 1;
  }
  if (pidfd < 0) {
    release(p, true);
    pthread_mutex_unlock(&g_one);
    return pidfd;
  }
  // The writer waits for the pause's length before it writes the manifest.
  sys::write(p.pause[1], &res->paused_ns, sizeof res->paused_ns);
  const int err = wait_writer(static_cast<int>(pidfd), p, res);
  cap::header h;
  if (!err && sys::pread(p.pend.manifest_fd, &h, sizeof h, sizeof(cap::status_block)) == sizeof h) {
    res->mem_bytes = h.mem_size;
    res->pmem_linked = h.pmem_linked;
    res->shared = h.shared;
    remember(p, h);
  }
  release(p, err != 0);
  if (req.hold) {
    if (err) world_resume();  // no capsule: the program goes on
    else g_held = true;       // until snapshot_hold_end
  }
  pthread_mutex_unlock(&g_one);
  if (err) return -err;
  MMTIER_INFO("snapshot %s: %u threads stopped for %llu us, %llu bytes of memory written, %llu bytes shared with "
              "earlier capsules, %llu bytes of PMem linked; PMem mappings frozen: %llu bytes before the stop, %llu in "
              "it; %llu bytes copied to share units a fork had left private",
              res->path, res->threads, static_cast<unsigned long long>(res->paused_ns / 1000),
              static_cast<unsigned long long>(res->mem_bytes), static_cast<unsigned long long>(res->shared),
              static_cast<unsigned long long>(res->pmem_linked), static_cast<unsigned long long>(res->frozen_before),
              static_cast<unsigned long long>(res->frozen_in_stop), static_cast<unsigned long long>(res->reshared_before));
  if (res->pmem_note[0]) MMTIER_INFO("snapshot %s: %s", res->path, res->pmem_note);
  return 0;
}

}  // namespace

long snapshot_take(const snap_request &req, snap_result *res) {
  const long r = take(req, res);
  if (r == 0 && g_held)
    g_held_result = *res;  // counted once the threads go on: the page's lock is held now
  else if (r != 1)         // 1: this is the restored process
    snapshot_count(r, *res);
  return r;
}

void snapshot_hold_end(bool resume) {
  if (!g_held) return;
  g_held = false;
  if (!resume) return;
  world_resume();
  snapshot_count(0, g_held_result);
}

}  // namespace mmtier::detail
