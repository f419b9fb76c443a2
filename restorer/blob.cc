// The restorer: position-independent code without the C library that
// `mmtier restore` copies into its range B and jumps to, on B's stack, in
// the process that becomes the restored one (it already has the program's
// PID, descriptors, working directory and namespaces).  It removes the
// command's mappings, moves the vDSO where the capsule had it, maps the
// capsule's memory at its addresses, sets the process's state, starts every
// other thread with its own TID, and jumps each thread to its resume point
// (lib/snapshot/capture.cc), where the restored library takes over.  Any
// failure before the jump: one line to the command, exit 1; nothing of the
// program has run.
//
// Built freestanding into a flat binary (restorer/CMakeLists.txt): no
// relocations, no data of its own (everything is in the plan), so it runs
// wherever it is copied.
#include "plan.h"

#include <asm/unistd.h>
#include <linux/futex.h>
#include <linux/mman.h>
#include <linux/prctl.h>
#include <linux/sched.h>
#include <linux/signal.h>
#include <linux/ioctl.h>
#include <linux/userfaultfd.h>

using namespace mmtier::restorer;

extern "C" {
void *memcpy(void *d, const void *s, unsigned long n) {
  char *dd = static_cast<char *>(d);
  const char *ss = static_cast<const char *>(s);
  for (unsigned long i = 0; i < n; ++i) dd[i] = ss[i];
  return d;
}
void *memset(void *d, int c, unsigned long n) {
  char *dd = static_cast<char *>(d);
  for (unsigned long i = 0; i < n; ++i) dd[i] = static_cast<char>(c);
  return d;
}
}

namespace {

inline long sc(long n, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0) {
  long r;
  register long r10 asm("r10") = d;
  register long r8 asm("r8") = e;
  register long r9 asm("r9") = f;
  asm volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
  return r;
}

constexpr long kProtRead = 1, kProtWrite = 2;
constexpr long kMapShared = 0x01, kMapPrivate = 0x02, kMapAnon = 0x20, kMapGrowsDown = 0x100, kMapNoReserve = 0x4000;
constexpr long kMapFixed = 0x10, kMapFixedNoReplace = 0x100000;
constexpr long kArchSetFs = 0x1002;
constexpr long kPrSetMm = 35, kPrSetMmMap = 14;

// "restore failed: what (error N) at 0x...", to the command; exit 1.
[[noreturn]] void fail(plan *p, const char *what, long err, uint64_t at) {
  char line[256];
  unsigned long n = 0;
  auto put = [&](const char *s) {
    for (; *s && n + 1 < sizeof line; ++s) line[n++] = *s;
  };
  put(what);
  if (err) {
    put(" (errno ");
    char d[24];
    int k = 0;
    for (unsigned long v = static_cast<unsigned long>(err < 0 ? -err : err); v || !k; v /= 10)
      d[k++] = static_cast<char>('0' + v % 10);
    while (k && n + 1 < sizeof line) line[n++] = d[--k];
    put(")");
  }
  if (at) {
    put(" at 0x");
    int shift = 60;
    while (shift > 0 && !((at >> shift) & 0xf)) shift -= 4;
    for (; shift >= 0 && n + 1 < sizeof line; shift -= 4) line[n++] = "0123456789abcdef"[(at >> shift) & 0xf];
  }
  line[n++] = '\n';
  sc(__NR_write, p->err_fd, reinterpret_cast<long>(line), static_cast<long>(n));
  sc(__NR_exit_group, 1);
  __builtin_unreachable();
}

bool failed(long r) { return static_cast<unsigned long>(r) > static_cast<unsigned long>(-4096); }

void read_exact(plan *p, int fd, uint64_t addr, uint64_t len, uint64_t off) {
  while (len) {
    long r = sc(__NR_pread64, fd, static_cast<long>(addr), static_cast<long>(len), static_cast<long>(off));
    if (r == -4) continue;  // EINTR
    if (r <= 0) fail(p, "cannot read the capsule's memory", r ? -r : 5, addr);
    addr += static_cast<uint64_t>(r);
    len -= static_cast<uint64_t>(r);
    off += static_cast<uint64_t>(r);
  }
}

void map_region(plan *p, const map_op &m) {
  const uint64_t len = m.end - m.start;
  const auto kind = static_cast<map_kind>(m.kind);
  long prot = static_cast<long>(m.prot);
  if (m.ncopies) prot |= kProtWrite | kProtRead;
  long flags = kMapFixedNoReplace;
  long fd = -1;
  switch (kind) {
    case map_kind::reserve:
      flags |= kMapPrivate | kMapAnon | kMapNoReserve;
      prot = 0;
      break;
    case map_kind::anon:
      flags |= kMapPrivate | kMapAnon;
      break;
    case map_kind::stack:
      flags |= kMapPrivate | kMapAnon | kMapGrowsDown;
      break;
    case map_kind::anon_shared:
      flags |= kMapShared | kMapAnon;
      break;
    case map_kind::file:
      flags |= kMapPrivate;
      fd = m.fd;
      break;
    case map_kind::file_shared:
      if (m.ncopies) fail(p, "a shared file mapping to be written", 0, m.start);
      flags |= kMapShared;
      fd = m.fd;
      break;
    default:
      fail(p, "a mapping of an unknown kind", 0, m.start);
  }
  const long r = sc(__NR_mmap, static_cast<long>(m.start), static_cast<long>(len), prot, flags, fd,
                    static_cast<long>(m.file_offset));
  if (failed(r)) fail(p, "cannot map memory", -r, m.start);
  if (static_cast<uint64_t>(r) != m.start) fail(p, "the kernel mapped memory elsewhere", 0, m.start);
  // Large anonymous memory is filled through huge pages where the kernel
  // has them: a fault per 2 MiB, not per 4 KiB (each first touch of a page
  // is the dominant cost of an eager restore).  A region the program asked
  // not to have them keeps its wish.
  const bool anon = kind == map_kind::anon || kind == map_kind::stack;
  if (anon && len >= (uint64_t{2} << 20) && m.ncopies && !m.lazy && !m.no_huge && !(m.madv & 2 /* kMadvNoHuge */))
    sc(__NR_madvise, static_cast<long>(m.start), static_cast<long>(len), 14 /* MADV_HUGEPAGE */);
  for (uint64_t i = 0; !m.lazy && i < m.ncopies; ++i) {
    const copy_op &c = p->copies[m.first_copy + i];
    if (!c.map) {
      read_exact(p, c.fd, c.addr, c.len, c.mem_off);
      continue;
    }
    const long q = sc(__NR_mmap, static_cast<long>(c.addr), static_cast<long>(c.len), prot, kMapPrivate | kMapFixed,
                      c.fd, static_cast<long>(c.mem_off));
    if (failed(q)) fail(p, "cannot map the capsule's memory", -q, c.addr);
  }
  if (prot != static_cast<long>(m.prot)) {
    const long e = sc(__NR_mprotect, static_cast<long>(m.start), static_cast<long>(len), static_cast<long>(m.prot));
    if (failed(e)) fail(p, "cannot protect memory", -e, m.start);
  }
  // The madvise bits of capsule::region_madv.
  const long advice[] = {14 /* HUGEPAGE */, 15 /* NOHUGEPAGE */, 16 /* DONTDUMP */, 18 /* WIPEONFORK */,
                         12 /* MERGEABLE */};
  for (int b = 0; b < 5; ++b)
    if (m.madv & (1u << b)) sc(__NR_madvise, static_cast<long>(m.start), static_cast<long>(len), advice[b]);
  if (m.madv & (1u << 5)) sc(__NR_mlock, static_cast<long>(m.start), static_cast<long>(len));
}

// A lazy restore: one userfaultfd for every lazy map, registered for
// missing pages and handed to the command's init (cli/restore_lazy.cc),
// which fills them from the capsule while the program runs.  It asks for
// fork, mremap, munmap and MADV_DONTNEED events, so that a child's memory
// is filled too and memory the program gave back stays zero.  Nothing here
// keeps the descriptor: when init is done it closes it and the kernel
// unregisters everything.
void hand_over_faults(plan *p) {
  if (p->lazy_fd < 0) return;
  const long uffd = sc(__NR_userfaultfd, 02000000 /* O_CLOEXEC */ | 04000 /* O_NONBLOCK */);
  if (failed(uffd)) fail(p, "cannot make a userfaultfd for the lazy restore", -uffd, 0);
  uffdio_api api = {};
  api.api = UFFD_API;
  api.features = UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE |
                 UFFD_FEATURE_EVENT_UNMAP;
  long r = sc(__NR_ioctl, uffd, static_cast<long>(UFFDIO_API), reinterpret_cast<long>(&api));
  if (failed(r)) fail(p, "the kernel refuses the userfaultfd events a lazy restore needs", -r, 0);
  // The sentinel: registered, never touched; the fill copies it in last.
  r = sc(__NR_mmap, static_cast<long>(p->sentinel), 4096, kProtRead, kMapPrivate | kMapAnon | kMapFixedNoReplace, -1, 0);
  if (static_cast<uint64_t>(r) != p->sentinel) fail(p, "cannot map the lazy restore's sentinel", failed(r) ? -r : 0, p->sentinel);
  for (uint32_t i = 0; i <= p->nmaps; ++i) {
    const map_op sentinel = {p->sentinel, p->sentinel + 4096, 0, 0, 0, -1, 0, 0, 0, 1, 0};
    const map_op &m = i < p->nmaps ? p->maps[i] : sentinel;
    if (!m.lazy) continue;
    uffdio_register reg = {};
    reg.range.start = m.start;
    reg.range.len = m.end - m.start;
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    r = sc(__NR_ioctl, uffd, static_cast<long>(UFFDIO_REGISTER), reinterpret_cast<long>(&reg));
    if (failed(r)) fail(p, "cannot register memory for the lazy restore", -r, m.start);
  }
  struct {
    uint64_t len;
    int32_t level, type;
    int32_t fd, pad;
  } cm = {20 /* CMSG_LEN(sizeof(int)) */, 1 /* SOL_SOCKET */, 1 /* SCM_RIGHTS */, static_cast<int32_t>(uffd), 0};
  uint64_t where = p->sentinel;
  struct {
    void *base;
    uint64_t len;
  } iov = {&where, sizeof where};
  struct {
    void *name;
    uint32_t namelen, pad0;
    void *iov;
    uint64_t iovlen;
    void *control;
    uint64_t controllen;
    int32_t flags, pad1;
  } msg = {nullptr, 0, 0, &iov, 1, &cm, 24 /* CMSG_SPACE(sizeof(int)) */, 0, 0};
  r = sc(__NR_sendmsg, p->lazy_fd, reinterpret_cast<long>(&msg), 0x4000 /* MSG_NOSIGNAL */);
  if (failed(r)) fail(p, "cannot hand the lazy restore's faults to the command", -r, 0);
  sc(__NR_close, uffd);
}

void move_kernel_mappings(plan *p) {
  for (uint32_t i = 0; i < p->nmoves; ++i) {
    const move_op &m = p->moves[i];
    if (m.lo == m.to) continue;
    const long r = sc(__NR_mremap, static_cast<long>(m.lo), static_cast<long>(m.hi - m.lo),
                      static_cast<long>(m.hi - m.lo), MREMAP_MAYMOVE | MREMAP_FIXED, static_cast<long>(m.to));
    if (failed(r) || static_cast<uint64_t>(r) != m.to) fail(p, "cannot move the vDSO", failed(r) ? -r : 0, m.to);
  }
}

struct prctl_mm_map_k {
  uint64_t start_code, end_code, start_data, end_data, start_brk, brk, start_stack, arg_start, arg_end, env_start,
      env_end;
  uint64_t auxv;
  uint32_t auxv_size;
  uint32_t exe_fd;
};

void set_mm(plan *p) {
  prctl_mm_map_k mm;
  mm.start_code = p->mm[0];
  mm.end_code = p->mm[1];
  mm.start_data = p->mm[2];
  mm.end_data = p->mm[3];
  mm.start_brk = p->mm[4];
  mm.brk = p->mm[5];
  mm.start_stack = p->mm[6];
  mm.arg_start = p->mm[7];
  mm.arg_end = p->mm[8];
  mm.env_start = p->mm[9];
  mm.env_end = p->mm[10];
  mm.auxv = reinterpret_cast<uint64_t>(p->auxv);
  mm.auxv_size = p->auxv_words * 8;
  mm.exe_fd = static_cast<uint32_t>(p->exe_fd);
  long r = sc(__NR_prctl, kPrSetMm, kPrSetMmMap, reinterpret_cast<long>(&mm), sizeof mm, 0);
  if (failed(r) && p->exe_fd >= 0) {
    // Without the executable: /proc/self/exe stays the command's.
    mm.exe_fd = ~0u;
    r = sc(__NR_prctl, kPrSetMm, kPrSetMmMap, reinterpret_cast<long>(&mm), sizeof mm, 0);
  }
  if (failed(r)) fail(p, "cannot set the process's memory layout (PR_SET_MM_MAP)", -r, 0);
}

void set_process_state(plan *p) {
  for (long sig = 1; sig <= 64; ++sig) {
    if (sig == 9 || sig == 19) continue;  // SIGKILL, SIGSTOP
    const kernel_sigaction &k = p->sigactions[sig - 1];
    const long r = sc(__NR_rt_sigaction, sig, reinterpret_cast<long>(&k), 0, 8);
    if (failed(r) && r != -22) fail(p, "cannot set a signal's disposition", -r, static_cast<uint64_t>(sig));
  }
  for (long w = 0; w < 3; ++w) {
    struct {
      long is, ius, vs, vus;
    } it = {p->itimers[w][0] / 1000000, p->itimers[w][0] % 1000000, p->itimers[w][1] / 1000000,
            p->itimers[w][1] % 1000000};
    if (it.vs || it.vus) sc(__NR_setitimer, w, reinterpret_cast<long>(&it), 0);
  }
  // Limits above what this process may raise stay where they are.
  for (long r = 0; r < 16; ++r) sc(__NR_prlimit64, 0, r, reinterpret_cast<long>(p->rlimits[r]), 0);
  // Pending signals, from the leader (whose PID the kernel lets queue any
  // siginfo to itself); every signal is blocked until the threads jump.
  for (uint32_t i = 0; i < p->nsignals && i < 32; ++i) {
    int32_t signo;
    __builtin_memcpy(&signo, p->signals[i], 4);
    const long r = sc(__NR_rt_sigqueueinfo, p->pid, signo, reinterpret_cast<long>(p->signals[i]));
    if (failed(r)) fail(p, "cannot queue a pending signal again", -r, static_cast<uint64_t>(signo));
  }
}

// The signals pending for thread tid alone, queued again by that thread
// itself: only to itself does the kernel take every siginfo (a kernel's, a
// tgkill's); every signal is blocked until the threads jump.  Should the
// queue be full, at least the signal.
void queue_own_signals(plan *p, int32_t tid) {
  for (uint32_t i = 0; i < p->nthread_signals && i < 32; ++i) {
    if (p->thread_signals[i].tid != tid) continue;
    int32_t signo;
    __builtin_memcpy(&signo, p->thread_signals[i].info, 4);
    if (failed(sc(__NR_rt_tgsigqueueinfo, p->pid, tid, signo, reinterpret_cast<long>(p->thread_signals[i].info))))
      sc(__NR_tgkill, p->pid, tid, signo);
  }
}

// The POSIX timers, with their ids: asked for by id where the kernel
// takes one (PR_TIMER_CREATE_RESTORE_IDS, 6.16), else made in id order from
// a process that has none, with fillers for the ids in between (the kernel
// hands ids out in increasing order), which go again.  Then each is armed
// with what it had left.  By the leader, once every thread exists (a timer
// may signal one of them).
void make_timers(plan *p) {
  if (!p->ntimers) return;
  struct sigevent_k {
    uint64_t value;
    int32_t signo, notify, tid, pad[11];
  };
  static_assert(sizeof(sigevent_k) == 64);
  // Linux 6.16 makes a timer at the id asked for; before, ids come from
  // a per-process counter that only goes up (wrapping at INT_MAX), so the
  // ids below each one are used up by timers made and deleted at once.
  const bool by_id = !p->timers_in_order && sc(__NR_prctl, 77 /* PR_TIMER_CREATE_RESTORE_IDS */, 1 /* ON */) == 0;
  int32_t next = 0;
  for (uint32_t i = 0; i < p->ntimers && i < kMaxTimers; ++i) {
    const timer_op &t = p->timers[i];
    while (!by_id && next < t.id) {
      sigevent_k none = {};
      none.notify = 1;  // SIGEV_NONE
      int32_t id = -1;
      const long r = sc(__NR_timer_create, 1 /* CLOCK_MONOTONIC */, reinterpret_cast<long>(&none),
                        reinterpret_cast<long>(&id));
      if (failed(r) || id >= t.id) fail(p, "cannot give a POSIX timer its id", -r, static_cast<uint64_t>(t.id));
      sc(__NR_timer_delete, id);
      next = id + 1;
    }
    sigevent_k ev = {};
    ev.value = t.value;
    ev.signo = t.signo;
    ev.notify = t.notify;
    ev.tid = t.tid;
    int32_t id = t.id;
    const long r = sc(__NR_timer_create, t.clock, reinterpret_cast<long>(&ev), reinterpret_cast<long>(&id));
    if (failed(r)) fail(p, "cannot make a POSIX timer again", -r, static_cast<uint64_t>(t.id));
    if (id != t.id) fail(p, "a POSIX timer did not get its id", 0, static_cast<uint64_t>(t.id));
    next = id + 1;
  }
  if (by_id) sc(__NR_prctl, 77, 0 /* OFF */);
  for (uint32_t i = 0; i < p->ntimers && i < kMaxTimers; ++i) {
    const timer_op &t = p->timers[i];
    if (!t.value_ns) continue;
    const long its[4] = {t.interval_ns / 1000000000, t.interval_ns % 1000000000, t.value_ns / 1000000000,
                         t.value_ns % 1000000000};
    const long r = sc(__NR_timer_settime, t.id, 0, reinterpret_cast<long>(its), 0);
    if (failed(r)) fail(p, "cannot arm a POSIX timer again", -r, static_cast<uint64_t>(t.id));
  }
}

void futex_wait(int32_t *w, int32_t v) { sc(__NR_futex, reinterpret_cast<long>(w), FUTEX_WAIT, v, 0); }
void futex_wake(int32_t *w) { sc(__NR_futex, reinterpret_cast<long>(w), FUTEX_WAKE, 0x7fffffff); }

// Loads the resume point (rdi holds it throughout: none of the registers
// loaded) and goes there; the call that saved it returns 1.
[[noreturn]] void jump(const uint64_t *rp) {
  asm volatile(
      "movq 0(%%rdi), %%rbx\n\t"
      "movq 8(%%rdi), %%rbp\n\t"
      "movq 16(%%rdi), %%r12\n\t"
      "movq 24(%%rdi), %%r13\n\t"
      "movq 32(%%rdi), %%r14\n\t"
      "movq 40(%%rdi), %%r15\n\t"
      "ldmxcsr 64(%%rdi)\n\t"
      "fldcw 68(%%rdi)\n\t"
      "movq 48(%%rdi), %%rsp\n\t"
      "movl $1, %%eax\n\t"
      "jmpq *56(%%rdi)\n\t" ::"D"(rp)
      : "memory");
  __builtin_unreachable();
}

struct cap_header {
  uint32_t version, pid;
};
struct cap_data {
  uint32_t effective, permitted, inheritable;
};

// The leader's part, once every other thread is ready: the timers, its
// own signals, the files cut back; "ok" to the command; then every thread
// goes.
void lead(plan *p, thread_op *t) {
  while (true) {
    const int32_t r = __atomic_load_n(&p->ready, __ATOMIC_ACQUIRE);
    if (r >= static_cast<int32_t>(p->nthreads) - 1) break;
    futex_wait(&p->ready, r);
  }
  make_timers(p);
  queue_own_signals(p, t->tid);
  // The last change outside the process, once nothing else can fail: the
  // files it writes cut back to their size at the snapshot.
  for (uint32_t i = 0; i < p->ncuts && i < kMaxCuts; ++i) {
    const long r = sc(__NR_ftruncate, p->cuts[i].fd, static_cast<long>(p->cuts[i].size));
    if (failed(r)) fail(p, "cannot cut a file the program writes back to its size at the snapshot", -r,
                        static_cast<uint64_t>(p->cuts[i].fd));
  }
  // Every thread is ready: the command hears "ok" and the restore's own
  // descriptors go; then every thread goes on as the program.
  if (p->say_ok) sc(__NR_write, p->err_fd, reinterpret_cast<long>("ok\n"), 3);
  if (p->marker_dirfd >= 0) sc(__NR_unlinkat, p->marker_dirfd, reinterpret_cast<long>(p->marker_name), 0);
  for (uint32_t i = 0; i < p->nclose; ++i) sc(__NR_close, p->close_fds[i]);
  // Held until continued (a migration's target until its source ended):
  // every thread stops here, none has run the program yet.
  if (p->start_stopped) sc(__NR_kill, sc(__NR_getpid), 19 /* SIGSTOP */);
  __atomic_store_n(&p->go, 1, __ATOMIC_RELEASE);
  futex_wake(&p->go);
}

// The kernel state of the calling thread, as its record says, then the
// wait for every other thread, then the jump.  Runs in every thread.  A
// leader that had exited leads, and exits.
[[noreturn]] void become(plan *p, thread_op *t) {
  const long tid = sc(__NR_gettid);
  if (tid != t->tid) fail(p, "a thread did not get its id", tid, static_cast<uint64_t>(t->tid));
  if (t->gone) {
    __atomic_store_n(&p->gone_tid, static_cast<int32_t>(tid), __ATOMIC_RELEASE);
    sc(__NR_set_tid_address, reinterpret_cast<long>(&p->gone_tid));
    sc(__NR_prctl, PR_SET_NAME, reinterpret_cast<long>(t->name));
    lead(p, t);
    sc(__NR_exit, 0);
    __builtin_unreachable();
  }
  sc(__NR_set_tid_address, static_cast<long>(t->clear_tid));
  if (t->robust_head) sc(__NR_set_robust_list, static_cast<long>(t->robust_head), static_cast<long>(t->robust_len));
  if (t->rseq_area) {
    // No critical section is under way in the new thread.
    *reinterpret_cast<volatile uint64_t *>(t->rseq_area + 8) = 0;
    const long r = sc(__NR_rseq, static_cast<long>(t->rseq_area), t->rseq_len, 0, t->rseq_sig);
    if (failed(r)) fail(p, "cannot register a thread's rseq area", -r, t->rseq_area);
  }
  sc(__NR_prctl, PR_SET_NAME, reinterpret_cast<long>(t->name));
  struct {
    uint64_t sp;
    int32_t flags;
    int32_t pad;
    uint64_t size;
  } ss = {t->altstack_sp, static_cast<int32_t>(t->altstack_flags), 0, t->altstack_size};
  if (!(t->altstack_flags & 2 /* SS_DISABLE */) && t->altstack_size) sc(__NR_sigaltstack, reinterpret_cast<long>(&ss), 0);
  if (p->drop_caps) {
    cap_header h = {0x20080522 /* _LINUX_CAPABILITY_VERSION_3 */, 0};
    cap_data d[2] = {};
    sc(__NR_capset, reinterpret_cast<long>(&h), reinterpret_cast<long>(d));
  }
  if (t->leader) {
    if (failed(sc(__NR_arch_prctl, kArchSetFs, static_cast<long>(t->fs_base))))
      fail(p, "cannot set the thread pointer", 0, t->fs_base);
    lead(p, t);
  } else {
    queue_own_signals(p, t->tid);
    __atomic_add_fetch(&p->ready, 1, __ATOMIC_ACQ_REL);
    futex_wake(&p->ready);
    while (!__atomic_load_n(&p->go, __ATOMIC_ACQUIRE)) futex_wait(&p->go, 0);
    // The kernel clears the word at the thread's exit and wakes one waiter.
    for (int32_t g; (g = __atomic_load_n(&p->gone_tid, __ATOMIC_ACQUIRE)) != 0;) futex_wait(&p->gone_tid, g);
    futex_wake(&p->gone_tid);
  }
  jump(t->resume);
}

struct clone_args_k {
  uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};

}  // namespace

extern "C" long restorer_clone3(clone_args_k *args, unsigned long size, void (*fn)(void *), void *arg);
asm(R"(
  .text
  .type restorer_clone3, @function
restorer_clone3:
  movq %rdx, %r8
  movq %rcx, %r9
  movl $435, %eax
  syscall
  testq %rax, %rax
  jnz 1f
  xorl %ebp, %ebp
  movq %r9, %rdi
  andq $-16, %rsp
  callq *%r8
  ud2
1:
  ret
  .size restorer_clone3, .-restorer_clone3
)");

// clone(2) with a function to run on the new stack: what a container's
// seccomp profile leaves when it answers clone3 with ENOSYS (the ids in
// order need no set_tid).  flags, the stack's top, the child's tid word,
// the thread pointer, fn, arg.
extern "C" long restorer_clone(unsigned long flags, uint64_t stack_top, int32_t *child_tid, uint64_t tls,
                               void (*fn)(void *), void *arg);
asm(R"(
  .text
  .type restorer_clone, @function
restorer_clone:
  subq $16, %rsi
  movq %r8, 0(%rsi)
  movq %r9, 8(%rsi)
  movq %rdx, %r10
  movq %rcx, %r8
  xorl %edx, %edx
  movl $56, %eax
  syscall
  testq %rax, %rax
  jnz 1f
  popq %rax
  popq %rdi
  xorl %ebp, %ebp
  andq $-16, %rsp
  callq *%rax
  ud2
1:
  ret
  .size restorer_clone, .-restorer_clone
)");

namespace {

// The last id the kernel gave in this PID namespace; -1 if unknown.
long last_pid(const plan *p) {
  char buf[24];
  const long n = sc(__NR_pread64, p->last_pid_fd, reinterpret_cast<long>(buf), sizeof buf - 1, 0);
  if (failed(n) || n <= 0) return -1;
  long v = 0;
  for (long i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; ++i) v = v * 10 + (buf[i] - '0');
  return v;
}

[[noreturn]] void burner_exit(void *) {
  sc(__NR_exit, 0);
  __builtin_unreachable();
}

// Without clone3 set_tid: the ids below tid are used up, each by a thread
// that ends at once, until the kernel's next id is tid.  Another process
// starting meanwhile in the namespace takes one: the thread then has
// another id, and the restore fails.
void reach_tid(plan *p, int32_t tid, uint64_t stack_top) {
  for (;;) {
    const long last = last_pid(p);
    if (last < 0) fail(p, "cannot read the namespace's last process id", 0, 0);
    if (last == tid - 1) return;
    if (last >= tid)
      fail(p, "cannot give a thread its id: the kernel's ids are past it (another process started)", 0,
           static_cast<uint64_t>(tid));
    __atomic_store_n(&p->burn_tid, 1, __ATOMIC_RELEASE);
    const long r = restorer_clone(CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM |
                                      CLONE_CHILD_CLEARTID,
                                  stack_top - 128, &p->burn_tid, 0, burner_exit, nullptr);
    if (failed(r)) fail(p, "cannot start a thread", -r, 0);
    // Its stack is the next thread's: it has ended before that starts.
    while (__atomic_load_n(&p->burn_tid, __ATOMIC_ACQUIRE)) futex_wait(&p->burn_tid, 1);
  }
}

struct start_arg {
  plan *p;
  thread_op *t;
};

void thread_start(void *a) {
  auto *s = static_cast<start_arg *>(a);
  become(s->p, s->t);
}

}  // namespace

// The entry, at offset 0 of the flat binary: rdi = the plan, rsp = B's stack.
extern "C" [[noreturn]] __attribute__((section(".text.entry"))) void restorer_entry(plan *p) {
  if (p->magic != kPlanMagic) sc(__NR_exit_group, 2);
  for (uint32_t i = 0; i < p->nunmap; ++i)
    sc(__NR_munmap, static_cast<long>(p->unmap[i][0]), static_cast<long>(p->unmap[i][1] - p->unmap[i][0]));
  move_kernel_mappings(p);
  for (uint32_t i = 0; i < p->nmaps; ++i) map_region(p, p->maps[i]);
  hand_over_faults(p);
  set_mm(p);
  set_process_state(p);
  auto *note = reinterpret_cast<restore_note *>(p->note_addr);
  if (p->note_addr) {
    note->b_lo = p->b_lo;
    note->b_len = p->b_len;
    note->users = static_cast<int32_t>(p->nusers);
    note->host_pid = p->host_pid;
    if (p->note_size >= kNoteWithLazySentinel) note->lazy_sentinel = p->lazy_fd >= 0 ? p->sentinel : 0;
    if (p->note_size >= kNoteWithPmemFds) {
      note->npmem_fds = p->npmem_fds;
      for (uint32_t i = 0; i < p->npmem_fds && i < 8; ++i) note->pmem_fds[i] = p->pmem_fds[i];
    }
    if (p->note_size >= kNoteWithFlags) note->flags = p->note_flags;
    note->magic = kRestoreNoteMagic;
  }
  thread_op *leader = nullptr;
  for (uint32_t i = 0; i < p->nthreads; ++i)
    if (p->threads[i].leader) leader = &p->threads[i];
  if (!leader) fail(p, "no thread has the process's id", 0, 0);
  for (uint32_t k = 0, made = 0; k < p->nthreads; ++k) {
    // In id order when the ids come in order, else as listed.
    thread_op *t = nullptr;
    if (p->last_pid_fd < 0) {
      t = &p->threads[k];
    } else {
      for (uint32_t i = 0; i < p->nthreads; ++i) {
        thread_op *c = &p->threads[i];
        if (c->leader || (made && c->tid <= static_cast<int32_t>(made))) continue;
        if (!t || c->tid < t->tid) t = c;
      }
      if (!t) break;
      made = static_cast<uint32_t>(t->tid);
    }
    if (t->leader) continue;
    // Each thread's start argument sits at the top of its own stack.
    auto *a = reinterpret_cast<start_arg *>(t->stack_top - 64);
    a->p = p;
    a->t = t;
    uint64_t tid = static_cast<uint64_t>(t->tid);
    clone_args_k ca = {};
    ca.flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM | CLONE_SETTLS;
    ca.stack = t->stack_top - kThreadStack;
    ca.stack_size = kThreadStack - 128;
    ca.tls = t->fs_base;
    long r;
    if (p->last_pid_fd < 0) {
      ca.set_tid = reinterpret_cast<uint64_t>(&tid);
      ca.set_tid_size = 1;
      r = restorer_clone3(&ca, sizeof ca, thread_start, a);
    } else {
      // In order: clone(2), which a container's seccomp profile allows
      // where it answers clone3 with ENOSYS.
      reach_tid(p, t->tid, t->stack_top);
      r = restorer_clone(ca.flags, t->stack_top - 128, nullptr, t->fs_base, thread_start, a);
    }
    if (failed(r)) fail(p, "cannot start a thread with its id", -r, static_cast<uint64_t>(t->tid));
    if (r != t->tid) fail(p, "a thread got another id (another process started meanwhile)", 0, static_cast<uint64_t>(r));
  }
  become(p, leader);
}
