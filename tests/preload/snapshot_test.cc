// Snapshots of a program under LD_PRELOAD=libmmtier.so (mmtier_snapshot_to):
// the capsule holds the memory of the snapshot instant, not what the
// program wrote after it, with every thread stopped at one instant; bad
// requests fail with the documented errno and leave nothing behind.  The
// capsule is read back with the format's own parser.
#include "capsule_reader.h"
#include "preload_api.h"
#include "snapshot/capsule_format.h"
#include "support/crc32c.h"

#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <set>
#include <thread>

namespace {

namespace cap = mmtier::capsule;
using capsule_test::capsule_reader;
using capsule_test::read_file;
using snapshot_fn = int (*)(const char *, const char *, char *, size_t);

snapshot_fn snapshot() {
  return reinterpret_cast<snapshot_fn>(dlsym(RTLD_DEFAULT, "mmtier_snapshot_to"));
}

struct capsule_dir {
  std::string path;
  capsule_dir() {
    char tmpl[] = "/var/tmp/mmtier-snaptest-XXXXXX";
    path = mkdtemp(tmpl) ? tmpl : "";
  }
  ~capsule_dir() {
    if (!path.empty()) (void)system(("rm -rf '" + path + "'").c_str());
  }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    if (DIR *d = opendir(path.c_str())) {
      while (dirent *e = readdir(d))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) out.push_back(e->d_name);
      closedir(d);
    }
    return out;
  }
};

uint64_t pattern(uint64_t i, uint64_t gen) { return (i * 0x9e3779b97f4a7c15ull) ^ (gen << 56); }

// Each worker counts up, writing count k to slot k % kSlots and then k to
// done: at any instant, the slot of done holds done, and no slot holds more
// than done + 1 (the write under way).
constexpr size_t kSlots = 4096;
struct worker {
  std::atomic<uint64_t> done{0};
  std::atomic<int> tid{0};
  uint64_t *slots = nullptr;
};

TEST(Snapshot, TheCapsuleHoldsMemoryAsOfTheSnapshotAndEveryThreadAtOneInstant) {
  ASSERT_TRUE(snapshot()) << "mmtier_snapshot_to is not exported";
  capsule_dir dir;
  ASSERT_FALSE(dir.path.empty());
  // 48 MiB over many units: with the default ratio most are on the PMem tier.
  const size_t words = (48u << 20) / 8;
  uint64_t *big = static_cast<uint64_t *>(malloc(words * 8));
  ASSERT_NE(big, nullptr);
  for (size_t i = 0; i < words; ++i) big[i] = pattern(i, 1);
  worker w[3];
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (auto &x : w) {
    x.slots = static_cast<uint64_t *>(calloc(kSlots, 8));
    threads.emplace_back([&x, &stop] {
      x.tid = static_cast<int>(syscall(SYS_gettid));
      for (uint64_t k = 1; !stop.load(std::memory_order_relaxed); ++k) {
        reinterpret_cast<volatile uint64_t *>(x.slots)[k % kSlots] = k;
        x.done.store(k, std::memory_order_release);
      }
    });
  }
  for (auto &x : w)
    while (x.done.load() < 100000) std::this_thread::yield();
  char path[4096] = "";
  ASSERT_EQ(snapshot()(dir.path.c_str(), "first", path, sizeof path), 0) << strerror(errno);
  // Written after the snapshot: must not be in the capsule.
  for (size_t i = 0; i < words; ++i) big[i] = pattern(i, 2);
  uint64_t after[3];
  for (int i = 0; i < 3; ++i) after[i] = w[i].done.load();
  stop = true;
  for (auto &t : threads) t.join();
  EXPECT_EQ(std::string(path), dir.path + "/first.mmtcap");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"first.mmtcap"}) << "nothing else left";
  struct stat st;
  ASSERT_EQ(stat(path, &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(stat((std::string(path) + "/mem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  capsule_reader c(path);
  ASSERT_EQ(c.err, cap::parse_error::ok) << cap::parse_error_text(c.err);
  EXPECT_EQ(c.m.status->state, static_cast<uint32_t>(cap::status::durable));
  EXPECT_EQ(c.m.hdr->pid, getpid());
  EXPECT_GT(c.m.hdr->paused_ns, 0u);
  // Every chunk of mem matches its CRC.
  for (uint64_t i = 0; i < c.m.nchunks; ++i) {
    const cap::chunk &k = c.m.chunks[i];
    std::string buf(k.length, '\0');
    ASSERT_EQ(pread(c.mem_fd, buf.data(), k.length, static_cast<off_t>(k.offset)), static_cast<ssize_t>(k.length));
    EXPECT_EQ(mmtier::detail::crc32c(0, buf.data(), k.length), k.crc) << "chunk " << i;
  }
  // The big buffer as of the snapshot, page by page.
  std::vector<uint64_t> got(words);
  ASSERT_TRUE(c.read(reinterpret_cast<uintptr_t>(big), got.data(), words * 8));
  size_t wrong = 0;
  for (size_t i = 0; i < words; ++i) wrong += got[i] != pattern(i, 1);
  EXPECT_EQ(wrong, 0u) << "words differing from the snapshot instant";
  // Each worker stopped at one instant: its slot of done holds done, no slot
  // holds more than done + 1, and it went on after the snapshot.
  for (int i = 0; i < 3; ++i) {
    uint64_t done = 0;
    ASSERT_TRUE(c.read(reinterpret_cast<uintptr_t>(&w[i].done), &done, 8));
    std::vector<uint64_t> slots(kSlots);
    ASSERT_TRUE(c.read(reinterpret_cast<uintptr_t>(w[i].slots), slots.data(), kSlots * 8));
    EXPECT_GE(done, 100000u);
    EXPECT_LT(done, after[i]) << "the worker ran on after the snapshot";
    EXPECT_EQ(slots[done % kSlots], done);
    uint64_t most = 0;
    for (uint64_t v : slots) most = std::max(most, v);
    EXPECT_LE(most, done + 1) << "a write from after the snapshot instant";
  }
  // The threads table: every worker, and the caller marked as the capturer.
  std::set<int> tids;
  int capturers = 0;
  const cap::table_entry *threads_table = capsule_test::table_of(c, cap::table_kind::threads);
  ASSERT_NE(threads_table, nullptr);
  ASSERT_EQ(threads_table->record_size, sizeof(cap::thread_record));
  const auto *recs = reinterpret_cast<const cap::thread_record *>(reinterpret_cast<const char *>(c.storage.data()) +
                                                                  threads_table->offset);
  for (uint64_t i = 0; i < threads_table->count; ++i) {
    tids.insert(recs[i].tid);
    // Every thread can be resumed: a return address and a stack.
    EXPECT_NE(recs[i].resume[6], 0u) << "thread " << recs[i].tid;
    EXPECT_NE(recs[i].resume[7], 0u) << "thread " << recs[i].tid;
    EXPECT_NE(recs[i].fs_base, 0u);
    if (recs[i].flags & cap::kThreadCapturer) {
      ++capturers;
      EXPECT_EQ(recs[i].tid, static_cast<int>(syscall(SYS_gettid)));
    } else if (recs[i].flags & cap::kThreadService) {
      // mmtier's own, which ran on: named, not stopped.
      EXPECT_EQ(recs[i].uc_addr, 0u);
    } else {
      EXPECT_NE(recs[i].gregs[REG_RSP], 0u);
      // Stopped in the stop handler: below where it was interrupted, or on
      // its alternate signal stack (a sanitizer's).
      const uint64_t rp = recs[i].resume[6];
      const bool on_alt = !(recs[i].altstack_flags & SS_DISABLE) && rp >= recs[i].altstack_sp &&
                          rp < recs[i].altstack_sp + recs[i].altstack_size;
      EXPECT_TRUE(rp < recs[i].gregs[REG_RSP] || on_alt);
    }
  }
  EXPECT_EQ(capturers, 1);
  for (auto &x : w) EXPECT_TRUE(tids.count(x.tid.load())) << "worker " << x.tid.load();
  EXPECT_EQ(c.m.hdr->nthreads, threads_table->count);
  for (auto &x : w) free(x.slots);
  free(big);
}

TEST(Snapshot, BadRequestsFailWithTheirErrnoAndLeaveNothingBehind) {
  ASSERT_TRUE(snapshot());
  capsule_dir dir;
  errno = 0;
  EXPECT_EQ(snapshot()(dir.path.c_str(), "../escape", nullptr, 0), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(snapshot()(dir.path.c_str(), ".hidden", nullptr, 0), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_TRUE(dir.entries().empty());
  ASSERT_EQ(snapshot()(dir.path.c_str(), "once", nullptr, 0), 0) << strerror(errno);
  EXPECT_EQ(snapshot()(dir.path.c_str(), "once", nullptr, 0), -1);
  EXPECT_EQ(errno, EEXIST);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"once.mmtcap"});
  // A directory the process cannot write (as root, a read-only mount is
  // the only refusal: skipped then).
  if (geteuid() != 0) {
    ASSERT_EQ(chmod(dir.path.c_str(), 0500), 0);
    EXPECT_EQ(snapshot()(dir.path.c_str(), "ro", nullptr, 0), -1);
    EXPECT_EQ(errno, EACCES);
    chmod(dir.path.c_str(), 0700);
    EXPECT_EQ(dir.entries(), std::vector<std::string>{"once.mmtcap"});
  }
  // A missing directory is made (0700), with its parents.
  const std::string deep = dir.path + "/a/b";
  ASSERT_EQ(snapshot()(deep.c_str(), nullptr, nullptr, 0), 0) << strerror(errno);
  struct stat st;
  ASSERT_EQ(stat(deep.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

// A mapping no fork child sees (MADV_DONTFORK) would be missing from the
// capsule: the snapshot is refused, naming it, and nothing is left.
TEST(Snapshot, AMappingHiddenFromForkIsRefused) {
  ASSERT_TRUE(snapshot());
  capsule_dir dir;
  const size_t len = 1 << 20;
  void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  memset(p, 1, len);
  ASSERT_EQ(madvise(p, len, MADV_DONTFORK), 0);
  errno = 0;
  EXPECT_EQ(snapshot()(dir.path.c_str(), "hidden", nullptr, 0), -1);
  EXPECT_EQ(errno, EOPNOTSUPP);
  EXPECT_TRUE(dir.entries().empty());
  ASSERT_EQ(madvise(p, len, MADV_DOFORK), 0);
  EXPECT_EQ(snapshot()(dir.path.c_str(), "shown", nullptr, 0), 0) << strerror(errno);
  munmap(p, len);
}

// What no restore can bring back is refused before anything stops, with
// one line naming it, and the program goes on: a child process, an
// io_uring instance.
TEST(Snapshot, WhatNoRestoreCanMakeIsRefused) {
  ASSERT_TRUE(snapshot());
  capsule_dir dir;
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(go[1]);
    char c;
    while (read(go[0], &c, 1) < 0) {
    }
    _exit(0);
  }
  errno = 0;
  EXPECT_EQ(snapshot()(dir.path.c_str(), "parent", nullptr, 0), -1);
  EXPECT_EQ(errno, EOPNOTSUPP);
  EXPECT_TRUE(dir.entries().empty());
  close(go[1]);
  int st = 0;
  ASSERT_EQ(waitpid(child, &st, 0), child);
  close(go[0]);
  // An io_uring instance (where the kernel allows one).
  struct {
    uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd, resv[3];
    uint64_t sq_off[5], cq_off[5];
  } params = {};
  const long ring = syscall(SYS_io_uring_setup, 4, &params);
  if (ring >= 0) {
    errno = 0;
    EXPECT_EQ(snapshot()(dir.path.c_str(), "ring", nullptr, 0), -1);
    EXPECT_EQ(errno, EOPNOTSUPP);
    EXPECT_TRUE(dir.entries().empty());
    close(static_cast<int>(ring));
  }
  // A memfd larger than a capsule keeps (unnamed files' bytes are copied
  // in the pause) and a netlink socket (no family a restore makes).
  const int mfd = static_cast<int>(syscall(SYS_memfd_create, "refused", 0));
  ASSERT_GE(mfd, 0);
  ASSERT_EQ(ftruncate(mfd, (64 << 20) + 4096), 0);
  errno = 0;
  EXPECT_EQ(snapshot()(dir.path.c_str(), "memfd", nullptr, 0), -1);
  EXPECT_EQ(errno, EOPNOTSUPP);
  EXPECT_TRUE(dir.entries().empty());
  close(mfd);
  const int nl = socket(AF_NETLINK, SOCK_RAW, 0);
  if (nl >= 0) {
    errno = 0;
    EXPECT_EQ(snapshot()(dir.path.c_str(), "netlink", nullptr, 0), -1);
    EXPECT_EQ(errno, EOPNOTSUPP);
    EXPECT_TRUE(dir.entries().empty());
    close(nl);
  }
  // More signals pending for single threads than a capsule holds (33
  // queued to this thread, blocked here): refused, and every one still
  // pending, in order.
  {
    const int rt = SIGRTMIN + 4;
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, rt);
    ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &set, &old), 0);
    for (int i = 0; i < 33; ++i) ASSERT_EQ(pthread_sigqueue(pthread_self(), rt, sigval{i}), 0);
    errno = 0;
    EXPECT_EQ(snapshot()(dir.path.c_str(), "thread-signals", nullptr, 0), -1);
    EXPECT_EQ(errno, EOPNOTSUPP);
    EXPECT_TRUE(dir.entries().empty());
    siginfo_t si;
    const timespec zero = {0, 0};
    for (int i = 0; i < 33; ++i) {
      ASSERT_EQ(sigtimedwait(&set, &si, &zero), rt) << i;
      EXPECT_EQ(si.si_value.sival_int, i);
    }
    EXPECT_EQ(sigtimedwait(&set, &si, &zero), -1);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }
  // Without them, a snapshot is taken.
  EXPECT_EQ(snapshot()(dir.path.c_str(), "alone", nullptr, 0), 0) << strerror(errno);
}

// A signal pending for the whole process (kill() by another process,
// blocked in every thread) across a snapshot taken by a thread other than
// the leader: still pending afterwards as its sender sent it (SI_USER, the
// sender's pid), not as a kill() by the process itself.  Only the leader
// may queue such a siginfo again; it does, in its stop handler.
TEST(Snapshot, AProcessSignalFromAnotherProcessKeepsItsSender) {
  ASSERT_TRUE(snapshot());
  capsule_dir dir;
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR2);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &set, &old), 0);  // the capturing thread inherits it
  const pid_t sender = fork();
  ASSERT_GE(sender, 0);
  if (sender == 0) _exit(kill(getppid(), SIGUSR2) == 0 ? 0 : 1);
  int status = 0;
  ASSERT_EQ(waitpid(sender, &status, 0), sender);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  int rc = -1, err = 0;
  std::thread capturer([&] {
    rc = snapshot()(dir.path.c_str(), "sender", nullptr, 0);
    err = errno;
  });
  capturer.join();
  EXPECT_EQ(rc, 0) << strerror(err);
  siginfo_t si = {};
  const timespec zero = {0, 0};
  ASSERT_EQ(sigtimedwait(&set, &si, &zero), SIGUSR2) << "the signal is no longer pending";
  EXPECT_EQ(si.si_code, SI_USER);
  EXPECT_EQ(si.si_pid, sender) << "the signal came back as sent by " << si.si_pid;
  EXPECT_EQ(sigtimedwait(&set, &si, &zero), -1) << "pending twice";
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

// The same where the leader thread is gone (pthread_exit from main, as some
// servers do; here the exit system call): no thread may queue a kill()'s siginfo again, so a signal
// that came from another process is not taken at all: it stays pending,
// from its sender, in the running program (the capsule records it as sent
// by the process itself).  A signal queued with sigqueue() (si_code < 0)
// is taken and queued again as it was.  Run in a child: this process's
// leader is the test's.
struct leaderless_result {
  int rc, err;
  int kill_code, kill_pid, queue_code, queue_value, twice;
};

void *leaderless_capture(void *arg) {
  auto *r = static_cast<leaderless_result *>(arg);
  r->rc = r->err = r->kill_code = r->kill_pid = r->queue_code = r->queue_value = r->twice = -1;
  const pid_t sender = fork();
  if (sender == 0) {
    const pid_t parent = getppid();
    const int ok = kill(parent, SIGUSR2) == 0 && sigqueue(parent, SIGRTMIN + 3, sigval{77}) == 0;
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  if (sender < 0 || waitpid(sender, &status, 0) != sender || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return nullptr;
  r->rc = snapshot()(static_cast<const char *>(getenv("LEADERLESS_DIR")), "leaderless", nullptr, 0);
  r->err = errno;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR2);
  sigaddset(&set, SIGRTMIN + 3);
  siginfo_t si = {};
  const timespec zero = {0, 0};
  for (int k = 0; k < 2; ++k) {
    const int sig = sigtimedwait(&set, &si, &zero);
    if (sig == SIGUSR2) {
      r->kill_code = si.si_code;
      r->kill_pid = si.si_pid == sender ? 1 : 0;
    } else if (sig == SIGRTMIN + 3) {
      r->queue_code = si.si_code;
      r->queue_value = si.si_value.sival_int;
    }
  }
  r->twice = sigtimedwait(&set, &si, &zero) == -1 ? 0 : 1;
  return nullptr;
}

TEST(Snapshot, AProcessSignalKeepsItsSenderWhenTheLeaderThreadIsGone) {
  ASSERT_TRUE(snapshot());
  capsule_dir dir;
  auto *r = static_cast<leaderless_result *>(
      mmap(nullptr, sizeof(leaderless_result), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(r, MAP_FAILED);
  memset(r, 0xff, sizeof *r);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    setenv("LEADERLESS_DIR", dir.path.c_str(), 1);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGRTMIN + 3);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);  // in every thread
    pthread_t t;
    if (pthread_create(&t, nullptr, leaderless_capture, r) != 0) _exit(2);
    // The leader thread exits (pthread_exit would unwind through the test
    // framework's frames); the process lives on in t, and exits with it.
    syscall(SYS_exit, 0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(r->rc, 0) << strerror(r->err);
  EXPECT_EQ(r->kill_code, SI_USER);
  EXPECT_EQ(r->kill_pid, 1) << "the kill() came back as sent by another process than its sender";
  EXPECT_EQ(r->queue_code, SI_QUEUE);
  EXPECT_EQ(r->queue_value, 77);
  EXPECT_EQ(r->twice, 0) << "a signal pending twice";
  munmap(r, sizeof *r);
}

// An anonymous mapping whose byte i is i * mul + add.
char *patterned_map(size_t len, int mul, int add) {
  auto *m = static_cast<char *>(mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (m == MAP_FAILED) return nullptr;
  for (size_t i = 0; i < len; ++i) m[i] = static_cast<char>(i * mul + add);
  return m;
}

// Bytes of [p, p + len) the capsule does not hold as patterned_map wrote
// them (len when it cannot read them).
size_t saved_wrong(const capsule_reader &c, const char *p, size_t len, int mul, int add) {
  std::string got(len, '\0');
  if (!c.read(reinterpret_cast<uintptr_t>(p), got.data(), len)) return len;
  size_t wrong = 0;
  for (size_t i = 0; i < len; ++i) wrong += got[i] != static_cast<char>(i * mul + add);
  return wrong;
}

// Data the program put behind PROT_NONE (a guard over its own pages) is in
// the capsule, and the mapping's protection is recorded as it was: in a
// heap unit (a mapping above MMTIER_MMAP_THRESHOLD) and outside the heap.
TEST(Snapshot, DataBehindProtNoneIsSaved) {
  ASSERT_TRUE(snapshot());
  capsule_dir dir;
  const size_t lens[] = {256 << 10, 32 << 10};
  char *maps[2];
  for (int k = 0; k < 2; ++k) {
    maps[k] = patterned_map(lens[k], 7, 3 + k);
    ASSERT_NE(maps[k], nullptr);
    ASSERT_EQ(mprotect(maps[k], lens[k], PROT_NONE), 0);
  }
  char path[4096];
  ASSERT_EQ(snapshot()(dir.path.c_str(), "guarded", path, sizeof path), 0) << strerror(errno);
  capsule_reader c(path);
  ASSERT_EQ(c.err, cap::parse_error::ok) << cap::parse_error_text(c.err);
  for (int k = 0; k < 2; ++k) {
    EXPECT_EQ(saved_wrong(c, maps[k], lens[k], 7, 3 + k), 0u) << (k ? "outside the heap" : "in a heap unit");
    const uintptr_t a = reinterpret_cast<uintptr_t>(maps[k]);
    for (uint64_t i = 0; i < c.m.nregions; ++i)
      if (c.m.regions[i].start <= a && a < c.m.regions[i].end) EXPECT_EQ(c.m.regions[i].prot, 0u) << k;
    munmap(maps[k], lens[k]);
  }
}

// Memory the program marked MADV_WIPEONFORK reads zero in a fork child,
// which the capsule's writer is: its bytes are saved from a copy made in
// the pause, and the region records the advice (with the others a
// mapping keeps), in a heap unit and outside the heap.  More such memory
// than the pause copies is refused, naming it, and nothing is left.
TEST(Snapshot, MemoryWipedAtForkIsSavedWithItsAdvice) {
  ASSERT_TRUE(snapshot());
  capsule_dir dir;
  const size_t lens[] = {4 << 20, 64 << 10};
  char *maps[2];
  for (int k = 0; k < 2; ++k) {
    maps[k] = patterned_map(lens[k], 5, 1 + k);
    ASSERT_NE(maps[k], nullptr);
    ASSERT_EQ(madvise(maps[k], lens[k], MADV_WIPEONFORK), 0) << strerror(errno);
    ASSERT_EQ(madvise(maps[k], lens[k], MADV_DONTDUMP), 0) << strerror(errno);
  }
  char path[4096];
  ASSERT_EQ(snapshot()(dir.path.c_str(), "wiped", path, sizeof path), 0) << strerror(errno);
  capsule_reader c(path);
  ASSERT_EQ(c.err, cap::parse_error::ok) << cap::parse_error_text(c.err);
  for (int k = 0; k < 2; ++k) {
    EXPECT_EQ(saved_wrong(c, maps[k], lens[k], 5, 1 + k), 0u) << (k ? "outside the heap" : "in heap units");
    const uintptr_t a = reinterpret_cast<uintptr_t>(maps[k]);
    for (uint64_t i = 0; i < c.m.nregions; ++i)
      if (c.m.regions[i].start < a + lens[k] && a < c.m.regions[i].end)
        EXPECT_EQ(c.m.regions[i].madv & (cap::kMadvWipeOnFork | cap::kMadvDontDump),
                  cap::kMadvWipeOnFork | cap::kMadvDontDump)
            << k;
    munmap(maps[k], lens[k]);
  }
  const size_t big = 300u << 20;
  char *b = static_cast<char *>(mmap(nullptr, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(b, MAP_FAILED);
  ASSERT_EQ(madvise(b, big, MADV_WIPEONFORK), 0);
  capsule_dir dir2;
  errno = 0;
  EXPECT_EQ(snapshot()(dir2.path.c_str(), "too-much", nullptr, 0), -1);
  EXPECT_EQ(errno, E2BIG);
  EXPECT_TRUE(dir2.entries().empty());
  munmap(b, big);
}

// A thread marking and unmarking memory wiped at fork while snapshots are
// taken: each capsule holds the memory's bytes whichever it was at the
// stop (a mark the advice read missed would leave zeros).
TEST(Snapshot, MemoryMarkedWipedDuringTheSnapshotIsStillSaved) {
  ASSERT_TRUE(snapshot());
  const size_t len = 64 << 10;
  char *m = patterned_map(len, 3, 9);
  ASSERT_NE(m, nullptr);
  std::atomic<bool> stop{false};
  std::atomic<unsigned> toggles{0};
  std::thread toggler([&] {
    while (!stop.load()) {
      madvise(m, len, MADV_WIPEONFORK);
      madvise(m, len, MADV_KEEPONFORK);
      toggles.fetch_add(1);
    }
  });
  size_t bad = 0;
  for (int i = 0; i < 20; ++i) {
    capsule_dir dir;  // each a full capsule, not one built on the last
    char name[16], path[4096];
    snprintf(name, sizeof name, "t%d", i);
    ASSERT_EQ(snapshot()(dir.path.c_str(), name, path, sizeof path), 0) << strerror(errno);
    capsule_reader c(path);
    ASSERT_EQ(c.err, cap::parse_error::ok) << cap::parse_error_text(c.err);
    const size_t wrong = saved_wrong(c, m, len, 3, 9);
    bad += wrong != 0;
    if (wrong) {
      const uintptr_t a = reinterpret_cast<uintptr_t>(m);
      for (uint64_t k = 0; k < c.m.nregions; ++k)
        if (c.m.regions[k].start < a + len && a < c.m.regions[k].end)
          ADD_FAILURE() << "capsule " << i << ": " << wrong << " bytes wrong; region " << std::hex
                        << c.m.regions[k].start << "-" << c.m.regions[k].end << " madv " << c.m.regions[k].madv;
    }
  }
  stop = true;
  toggler.join();
  {
    size_t live_wrong = 0;
    for (size_t i = 0; i < len; ++i) live_wrong += m[i] != static_cast<char>(i * 3 + 9);
    EXPECT_EQ(live_wrong, 0u) << "the live memory changed";
  }
  EXPECT_GT(toggles.load(), 20u);
  EXPECT_EQ(bad, 0u) << "capsules without the memory's bytes";
  munmap(m, len);
}

// A thread mapping the second page of an advised pair afresh and advising
// it again while snapshots are taken: each capsule holds the advice each
// mapping had at the stop, not at an earlier read of the mappings (a page
// mapped and advised in between would be restored without its advice, in
// a mapping of its own; a fresh page marked with its old neighbour's).
TEST(Snapshot, TheAdviceOfMappingsChangedBeforeTheStopIsTheStops) {
  ASSERT_TRUE(snapshot());
  const size_t page = 4096;
  char *m = patterned_map(2 * page, 5, 1);
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(madvise(m, 2 * page, MADV_DONTDUMP), 0) << strerror(errno);
  char *second = m + page;
  std::atomic<bool> stop{false};
  std::atomic<unsigned> turns{0};
  std::thread remapper([&] {
    while (!stop.load()) {
      if (mmap(second, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != second) break;
      madvise(second, page, MADV_DONTDUMP);
      turns.fetch_add(1);
    }
  });
  for (int i = 0; i < 20; ++i) {
    capsule_dir dir;
    char name[16], path[4096];
    snprintf(name, sizeof name, "a%d", i);
    ASSERT_EQ(snapshot()(dir.path.c_str(), name, path, sizeof path), 0) << strerror(errno);
    capsule_reader c(path);
    ASSERT_EQ(c.err, cap::parse_error::ok) << cap::parse_error_text(c.err);
    const uintptr_t at = reinterpret_cast<uintptr_t>(second);
    bool found = false;
    for (uint64_t k = 0; k < c.m.nregions; ++k) {
      const cap::region &r = c.m.regions[k];
      if (r.start > at || at >= r.end) continue;
      found = true;
      // Merged with the first page (advised): one mapping, advised.  A
      // mapping of its own begins at the page: mapped afresh, not yet
      // advised.
      const bool with_first = r.start < at;
      EXPECT_EQ((r.madv & cap::kMadvDontDump) != 0, with_first)
          << "capsule " << i << ": region " << std::hex << r.start << "-" << r.end << " madv " << r.madv;
    }
    EXPECT_TRUE(found) << "capsule " << i << " lacks the page";
  }
  stop = true;
  remapper.join();
  EXPECT_GT(turns.load(), 20u);
  munmap(m, 2 * page);
}

// Repeated snapshots leave no descriptor, mapping or thread behind.
TEST(Snapshot, RepeatedSnapshotsLeakNothing) {
  ASSERT_TRUE(snapshot());
  capsule_dir dir;
  auto count = [](const char *path) {
    size_t n = 0;
    if (DIR *d = opendir(path)) {
      while (readdir(d)) ++n;
      closedir(d);
    }
    return n;
  };
  auto maps = [] {
    const std::string m = read_file("/proc/self/maps");
    return std::count(m.begin(), m.end(), '\n');
  };
  ASSERT_EQ(snapshot()(dir.path.c_str(), "warm", nullptr, 0), 0);
  const size_t fds = count("/proc/self/fd"), tasks = count("/proc/self/task");
  const long vmas = maps();
  for (int i = 0; i < 10; ++i) {
    const std::string name = "r" + std::to_string(i);
    ASSERT_EQ(snapshot()(dir.path.c_str(), name.c_str(), nullptr, 0), 0) << i;
  }
  EXPECT_EQ(count("/proc/self/fd"), fds);
  EXPECT_EQ(count("/proc/self/task"), tasks);
  EXPECT_LE(maps(), vmas + 2) << "mappings grew";
  // No writer child is left (not even a zombie).
  const std::string children = read_file("/proc/self/task/" + std::to_string(getpid()) + "/children");
  EXPECT_EQ(children, "");
}

}  // namespace
