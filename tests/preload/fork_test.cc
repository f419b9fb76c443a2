// fork() under LD_PRELOAD=libmmtier.so (hazard 1 of DESIGN.md): after fork,
// parent and child each keep a private copy of every byte as of the fork
// instant, in both directions, while both keep writing and allocating at the
// same time; on both tiers, with malloc'd small and large blocks and managed
// mmaps; also nested (grandchild), repeated, and followed by exec
// (fork+exec, posix_spawn, vfork+exec of /bin/true under the preload).
#include "preload_api.h"

#include <spawn.h>
#include <sys/mman.h>

#include <cstdio>
#include <string>
#include <vector>

namespace {

using namespace preload_test;

class Fork : public Preloaded {};

enum kind { kSmall, kLarge, kMmap, kKinds };
const char *const kKindName[kKinds] = {"small malloc", "large malloc", "mmap"};

struct block {
  unsigned char *p;
  size_t size;
  kind k;
};

// Byte value of a block written by the side with tag: differs for every tag
// and every block.
inline unsigned char value(unsigned char tag, size_t idx) {
  return static_cast<unsigned char>(tag + 17 * (idx % 13));
}

struct pool {
  std::vector<block> blocks;
  std::vector<unsigned char> expect;  // tag each block should hold now

  void allocate(size_t small, size_t large, size_t maps) {
    for (size_t i = 0; i < small; ++i)
      blocks.push_back({static_cast<unsigned char *>(malloc(4096)), 4096, kSmall});
    for (size_t i = 0; i < large; ++i)
      blocks.push_back({static_cast<unsigned char *>(malloc(256 * kKiB)), 256 * kKiB, kLarge});
    for (size_t i = 0; i < maps; ++i) {
      void *m = mmap(nullptr, 4 * kMiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      blocks.push_back({m == MAP_FAILED ? nullptr : static_cast<unsigned char *>(m), 4 * kMiB, kMmap});
    }
    expect.assign(blocks.size(), 0);
  }
  bool all_allocated() const {
    for (const block &b : blocks)
      if (!b.p) return false;
    return true;
  }
  void write(size_t i, unsigned char tag) {
    memset(blocks[i].p, value(tag, i), blocks[i].size);
    expect[i] = tag;
  }
  // Whether block i holds exactly its expected tag.
  bool intact(size_t i) const {
    return byte_mismatch(blocks[i].p, blocks[i].size, value(expect[i], i)) == blocks[i].size;
  }
  // How many blocks do not.
  size_t changed() const {
    size_t n = 0;
    for (size_t i = 0; i < blocks.size(); ++i)
      if (!intact(i)) ++n;
    return n;
  }
  void release() {
    for (const block &b : blocks) {
      if (!b.p) continue;
      if (b.k == kMmap) munmap(b.p, b.size);
      else free(b.p);
    }
    blocks.clear();
  }
};

// Blocks each side writes after fork: the parent every block with i % 3 != 0,
// the child every even block.  So each side leaves some blocks alone that the
// other one writes.
bool parent_writes(size_t i) { return i % 3 != 0; }
bool child_writes(size_t i) { return i % 2 == 0; }

// What one side found when it verified its blocks.
struct verdict {
  size_t checked_own[kKinds] = {};        // blocks this side wrote after fork
  size_t checked_untouched[kKinds] = {};  // blocks it did not
  size_t wrong_own[kKinds] = {};       // written by this side, not holding its tag
  size_t wrong_untouched[kKinds] = {}; // not written by this side, no longer the pre-fork tag
  size_t fresh_checked = 0, fresh_wrong = 0;  // allocated after fork
  size_t nested_failures = 0;                 // reported by a grandchild round
  char note[200] = {};

  size_t failures() const {
    size_t n = fresh_wrong + nested_failures;
    for (int k = 0; k < kKinds; ++k) n += wrong_own[k] + wrong_untouched[k];
    return n;
  }
  std::string describe(const char *who) const {
    std::string s;
    for (int k = 0; k < kKinds; ++k) {
      if (wrong_own[k])
        s += std::string("\n  ") + who + ": " + std::to_string(wrong_own[k]) + " of " +
             std::to_string(checked_own[k]) + " " + kKindName[k] +
             " blocks it wrote do not hold its own writes (overwritten by the other process)";
      if (wrong_untouched[k])
        s += std::string("\n  ") + who + ": " + std::to_string(wrong_untouched[k]) + " of " +
             std::to_string(checked_untouched[k]) + " " + kKindName[k] +
             " blocks it never wrote after fork changed (the other process's writes show through)";
    }
    if (fresh_wrong)
      s += std::string("\n  ") + who + ": " + std::to_string(fresh_wrong) + " of " +
           std::to_string(fresh_checked) + " blocks allocated after fork lost their contents";
    if (nested_failures) s += std::string("\n  ") + who + ": nested round: " + note;
    return s;
  }
};

// Moves all n bytes with io (read or write), retrying after EINTR and
// partial transfers.
template <class Io, class Byte>
bool transfer_all(Io io, int fd, Byte *b, size_t n) {
  while (n) {
    ssize_t r = io(fd, b, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    b += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}
bool read_full(int fd, void *buf, size_t n) { return transfer_all(::read, fd, static_cast<char *>(buf), n); }
bool write_full(int fd, const void *buf, size_t n) {
  return transfer_all(::write, fd, static_cast<const char *>(buf), n);
}

// Both processes pass this point before either goes on.
struct barrier {
  int rd, wr;
  bool pass() {
    char c = 'x';
    return write_full(wr, &c, 1) && read_full(rd, &c, 1);
  }
};

// Memory one side allocates after fork and uses while the other side runs.
struct fresh_memory {
  std::vector<std::pair<unsigned char *, size_t>> small;
  unsigned char *map = nullptr;
  void allocate(uint64_t seed, size_t round) {
    for (size_t i = 0; i < 64; ++i) {
      size_t size = 16 + (i * 977 + round * 131) % 20000;
      auto *p = static_cast<unsigned char *>(malloc(size));
      if (!p) continue;
      fill_pattern(p, size, seed + small.size());
      small.push_back({p, size});
    }
    if (!map) {
      void *m = mmap(nullptr, 2 * kMiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (m != MAP_FAILED) {
        map = static_cast<unsigned char *>(m);
        fill_pattern(map, 2 * kMiB, seed ^ 0xfeed);
      }
    }
  }
  void verify(uint64_t seed, verdict &v) {
    for (size_t i = 0; i < small.size(); ++i) {
      ++v.fresh_checked;
      if (pattern_mismatch(small[i].first, small[i].second, seed + i) != small[i].second) ++v.fresh_wrong;
    }
    if (map) {
      ++v.fresh_checked;
      if (pattern_mismatch(map, 2 * kMiB, seed ^ 0xfeed) != 2 * kMiB) ++v.fresh_wrong;
    }
  }
  void release() {
    for (auto &s : small) free(s.first);
    small.clear();
    if (map) munmap(map, 2 * kMiB);
    map = nullptr;
  }
};

constexpr int kRounds = 4;

// One side's work after fork: write its share of the blocks in kRounds
// slices, passing a barrier with the other side after each slice (so both
// are writing in the same interval), allocating and using new memory as it
// goes; then verify.  writes(i) selects its blocks.
verdict run_side(pool &pl, unsigned char tag, bool (*writes)(size_t), barrier &sync, uint64_t seed) {
  verdict v;
  fresh_memory fresh;
  const size_t n = pl.blocks.size();
  for (int r = 0; r < kRounds; ++r) {
    for (size_t i = static_cast<size_t>(r); i < n; i += kRounds)
      if (writes(i)) pl.write(i, tag);
    fresh.allocate(seed, static_cast<size_t>(r));
    if (!sync.pass()) {
      snprintf(v.note, sizeof v.note, "lost the other process at round %d", r);
      v.nested_failures = 1;
      return v;
    }
  }
  // Both are done writing: nothing the other side did may be visible here.
  for (size_t i = 0; i < n; ++i) {
    const kind k = pl.blocks[i].k;
    const bool ok = pl.intact(i);
    if (writes(i)) {
      ++v.checked_own[k];
      if (!ok) ++v.wrong_own[k];
    } else {
      ++v.checked_untouched[k];
      if (!ok) ++v.wrong_untouched[k];
    }
  }
  fresh.verify(seed, v);
  fresh.release();
  return v;
}

// Forks; parent and child run run_side concurrently.  In the child, depth > 1
// forks again (the child becomes the parent of a grandchild).  Returns the
// parent's verdict; *child gets the child's.
void fork_round(pool &pl, unsigned char parent_tag, unsigned char child_tag, int depth, verdict *parent,
                verdict *child, int *child_status) {
  int p2c[2], c2p[2], report[2];
  if (pipe(p2c) || pipe(c2p) || pipe(report)) {
    snprintf(parent->note, sizeof parent->note, "pipe: %s", strerror(errno));
    parent->nested_failures = 1;
    return;
  }
  fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0) {
    snprintf(parent->note, sizeof parent->note, "fork: %s", strerror(errno));
    parent->nested_failures = 1;
    return;
  }
  if (pid == 0) {
    close(p2c[1]);
    close(c2p[0]);
    close(report[0]);
    barrier sync{p2c[0], c2p[1]};
    verdict v = run_side(pl, child_tag, child_writes, sync, 0xc0ffee);
    if (depth > 1) {
      // The child, now holding its own writes, forks a grandchild.
      verdict mine, grandchild;
      int st = 0;
      fork_round(pl, static_cast<unsigned char>(child_tag + 1), static_cast<unsigned char>(child_tag + 2),
                 depth - 1, &mine, &grandchild, &st);
      const size_t nested = mine.failures() + grandchild.failures() + (exited_with(st, 0) ? 0 : 1);
      if (nested) {
        v.nested_failures = nested;
        std::string d = mine.describe("child (as parent)") + grandchild.describe("grandchild") +
                        (exited_with(st, 0) ? "" : "\n  grandchild: " + describe_status(st));
        snprintf(v.note, sizeof v.note, "%s", d.c_str());
      }
    }
    write_full(report[1], &v, sizeof v);
    _exit(0);
  }
  close(p2c[0]);
  close(c2p[1]);
  close(report[1]);
  barrier sync{c2p[0], p2c[1]};
  *parent = run_side(pl, parent_tag, parent_writes, sync, 0xbadcafe);
  if (!read_full(report[0], child, sizeof *child)) {
    snprintf(child->note, sizeof child->note, "no report from the child");
    child->nested_failures = 1;
  }
  *child_status = wait_status(pid);
  close(p2c[1]);
  close(c2p[0]);
  close(report[0]);
}

struct tier_census {
  size_t on[2] = {0, 0}, unmanaged = 0;
};

tier_census census(const pool &pl) {
  tier_census c;
  for (const block &b : pl.blocks) {
    for (size_t off = 0; off < b.size; off += 4096) {
      int t = tier_of(b.p + off);
      if (t == 0 || t == 1) ++c.on[t];
      else ++c.unmanaged;
    }
  }
  return c;
}

void run_fork_scenario(int depth) {
  pool pl;
  pl.allocate(1000, 32, 6);
  ASSERT_TRUE(pl.all_allocated());
  const unsigned char A = 0x10, B = 0x40, C = 0x80;
  for (size_t i = 0; i < pl.blocks.size(); ++i) pl.write(i, A);
  const tier_census before = census(pl);
  ASSERT_GT(before.on[1], 0u) << "no page of the pool is on PMem (tier 1): the fork test would not cover it";
  ASSERT_GT(before.on[0], 0u) << "no page of the pool is on DRAM (tier 0)";
  EXPECT_EQ(before.unmanaged, 0u) << before.unmanaged << " pages of malloc'd/mmapped blocks are not managed";

  verdict parent, child;
  int st = -1;
  fork_round(pl, B, C, depth, &parent, &child, &st);
  EXPECT_TRUE(exited_with(st, 0)) << "child: " << describe_status(st);
  EXPECT_EQ(parent.failures(), 0u) << parent.describe("parent") << parent.note;
  EXPECT_EQ(child.failures(), 0u) << child.describe("child") << child.note;

  // After the child has exited, the parent still sees only its own data.
  const size_t changed = pl.changed();
  EXPECT_EQ(changed, 0u) << changed << " of " << pl.blocks.size()
                         << " blocks of the parent changed after the child exited";
  // And keeps allocating and writing.
  fresh_memory more;
  more.allocate(77, 0);
  verdict after;
  more.verify(77, after);
  EXPECT_EQ(after.fresh_wrong, 0u);
  more.release();
  pl.release();
}

TEST_F(Fork, ParentAndChildKeepPrivateCopiesWhileBothWrite) { run_fork_scenario(1); }

TEST_F(Fork, NestedForkKeepsThreePrivateCopies) { run_fork_scenario(2); }

TEST_F(Fork, RepeatedForksKeepTheParentIntact) {
  pool pl;
  pl.allocate(200, 8, 2);
  ASSERT_TRUE(pl.all_allocated());
  for (size_t i = 0; i < pl.blocks.size(); ++i) pl.write(i, 0x21);
  for (int round = 0; round < 6; ++round) {
    const unsigned char mine = static_cast<unsigned char>(0x30 + round);
    int st = run_in_child([&pl, round] {
      // The child checks it sees the parent's latest data, then scribbles.
      for (size_t i = 0; i < pl.blocks.size(); ++i)
        if (!pl.intact(i)) _exit(3);
      for (size_t i = 0; i < pl.blocks.size(); ++i) pl.write(i, static_cast<unsigned char>(0xe0 + round));
      void *m = malloc(3 * kMiB);
      if (!m) _exit(4);
      memset(m, 1, 3 * kMiB);
      free(m);
    });
    EXPECT_TRUE(exited_with(st, 0)) << "round " << round << ": child " << describe_status(st)
                                    << (exited_with(st, 3) ? " (saw stale or foreign data)" : "");
    const size_t changed = pl.changed();
    ASSERT_EQ(changed, 0u) << "round " << round << ": " << changed << " of " << pl.blocks.size()
                           << " parent blocks hold the child's writes";
    for (size_t i = static_cast<size_t>(round) % 2; i < pl.blocks.size(); i += 2) pl.write(i, mine);
  }
  pl.release();
}

// MADV_WIPEONFORK on managed memory (the kernel takes it on anonymous
// memory only; a unit on the PMem tier's file becomes DRAM first): the
// call succeeds, the parent keeps its bytes, a fork child reads zero in
// the range and the bytes around it.  Also for memory a living fork child
// still shares (frozen units: moved with the threads stopped), whose own
// copy stays as it was.
struct wiped_maps {
  static constexpr size_t kLen = 4 * kMiB, kMaps = 8;
  unsigned char *p[kMaps] = {};
  int pmem = 0;
  wiped_maps() {
    for (size_t i = 0; i < kMaps; ++i) {
      void *m = mmap(nullptr, kLen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (m == MAP_FAILED) continue;
      p[i] = static_cast<unsigned char *>(m);
      memset(p[i], 0x77, kLen);
      pmem += tier_of(p[i] + kLen / 2) == 1;
    }
  }
  ~wiped_maps() {
    for (unsigned char *m : p)
      if (m) munmap(m, kLen);
  }
  // The wiped range: all but the first and last page.
  static bool child_sees(const unsigned char *m) {
    if (m[0] != 0x77 || m[kLen - 1] != 0x77) return false;
    for (size_t off = 4096; off < kLen - 4096; off += 512)
      if (m[off]) return false;
    return true;
  }
  static bool whole(const unsigned char *m) {
    for (size_t off = 0; off < kLen; off += 512)
      if (m[off] != 0x77) return false;
    return true;
  }
};

void wipe_and_check(wiped_maps &w) {
  for (size_t i = 0; i < wiped_maps::kMaps; ++i) {
    ASSERT_NE(w.p[i], nullptr);
    ASSERT_EQ(madvise(w.p[i] + 4096, wiped_maps::kLen - 8192, MADV_WIPEONFORK), 0)
        << "map " << i << ": " << strerror(errno);
    EXPECT_TRUE(wiped_maps::whole(w.p[i])) << "map " << i << " lost bytes to the advice";
  }
  const int st = run_in_child([&w] {
    for (unsigned char *m : w.p)
      if (!wiped_maps::child_sees(m)) _exit(3);
  });
  EXPECT_TRUE(exited_with(st, 0)) << "child " << describe_status(st)
                                  << (exited_with(st, 3) ? " (saw the parent's bytes where it should see zero)" : "");
  for (size_t i = 0; i < wiped_maps::kMaps; ++i)
    EXPECT_TRUE(wiped_maps::whole(w.p[i])) << "map " << i << " changed in the parent";
}

TEST_F(Fork, WipeOnForkMemoryReadsZeroInTheChildOnEitherTier) {
  wiped_maps w;
  ASSERT_GT(w.pmem, 0) << "no map placed on the PMem tier: the test would not test it";
  wipe_and_check(w);
}

TEST_F(Fork, WipeOnForkOfMemoryAForkChildStillSharesKeepsThatChildsCopy) {
  wiped_maps w;
  ASSERT_GT(w.pmem, 0) << "no map placed on the PMem tier: the test would not test it";
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  const pid_t holder = fork();
  ASSERT_GE(holder, 0);
  if (holder == 0) {
    char c;
    close(go[1]);
    if (read(go[0], &c, 1) != 1) _exit(4);
    for (unsigned char *m : w.p)
      if (!wiped_maps::whole(m)) _exit(3);
    _exit(0);
  }
  close(go[0]);
  wipe_and_check(w);
  // The parent writes after the advice: the holder keeps the fork's bytes.
  for (unsigned char *m : w.p) memset(m + wiped_maps::kLen / 2, 0x12, 4096);
  ASSERT_EQ(write(go[1], "g", 1), 1);
  close(go[1]);
  int st = 0;
  ASSERT_EQ(waitpid(holder, &st, 0), holder);
  EXPECT_TRUE(exited_with(st, 0)) << "holder " << describe_status(st)
                                  << (exited_with(st, 3) ? " (its copy changed)" : "");
}

// A guard page the program made inside memory then marked wiped at fork
// stays a guard (the unit is copied with its protections), and the rest
// behaves as above.
TEST_F(Fork, WipeOnForkKeepsAGuardPageInside) {
  wiped_maps w;
  ASSERT_GT(w.pmem, 0) << "no map placed on the PMem tier: the test would not test it";
  const size_t guard = wiped_maps::kLen / 2;
  for (unsigned char *m : w.p) ASSERT_EQ(mprotect(m + guard, 4096, PROT_NONE), 0);
  for (unsigned char *m : w.p) ASSERT_EQ(madvise(m, wiped_maps::kLen, MADV_WIPEONFORK), 0) << strerror(errno);
  for (size_t i = 0; i < wiped_maps::kMaps; ++i) {
    const int st = run_in_child([&w, i, guard] {
      const unsigned char v = *static_cast<volatile unsigned char *>(w.p[i] + guard);
      _exit(v == 0x77 ? 0 : 4);
    });
    EXPECT_TRUE(killed_by(st, SIGSEGV)) << "map " << i << ": the guard page reads (" << describe_status(st) << ")";
  }
  for (unsigned char *m : w.p) ASSERT_EQ(mprotect(m + guard, 4096, PROT_READ | PROT_WRITE), 0);
  size_t kept = 0;
  for (unsigned char *m : w.p) kept += wiped_maps::whole(m);
  EXPECT_EQ(kept, wiped_maps::kMaps) << "bytes lost in the parent";
}

// Puts some memory on both tiers so that fork has file-backed units to
// handle before the exec.
struct busy_heap {
  pool pl;
  busy_heap() {
    pl.allocate(100, 8, 4);
    for (size_t i = 0; i < pl.blocks.size(); ++i)
      if (pl.blocks[i].p) pl.write(i, 0x55);
  }
  ~busy_heap() { pl.release(); }
};

// The program the exec tests start: /bin/true under the preload.
struct true_program {
  std::vector<std::string> env = preload_environment({"MMTIER_LOG=warn"});
  std::vector<char *> cenv = c_strings(env);
  char arg0[10] = "/bin/true";
  char *argv[2] = {arg0, nullptr};
};

TEST_F(Fork, ForkThenExecUnderThePreload) {
  busy_heap heap;
  ASSERT_TRUE(heap.pl.all_allocated());
  true_program prog;
  for (int i = 0; i < 3; ++i) {
    fflush(nullptr);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Allocate in the child before exec, as a shell would.
      void *p = malloc(100000);
      if (p) memset(p, 1, 100000);
      execve("/bin/true", prog.argv, prog.cenv.data());
      _exit(127);
    }
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    EXPECT_TRUE(exited_with(st, 0)) << "fork+exec /bin/true: " << describe_status(st);
  }
  // A preloaded program that prints: exec of /proc/self/exe listing tests.
  exec_result r = run_self({"--gtest_list_tests", "--gtest_filter=Fork.ForkThenExec*"});
  EXPECT_TRUE(exited_with(r.status, 0)) << describe_status(r.status) << r.err;
  EXPECT_NE(r.out.find("ForkThenExecUnderThePreload"), std::string::npos) << r.out;
}

TEST_F(Fork, PosixSpawnUnderThePreload) {
  busy_heap heap;
  ASSERT_TRUE(heap.pl.all_allocated());
  true_program prog;
  for (int i = 0; i < 3; ++i) {
    pid_t pid = -1;
    int rc = posix_spawn(&pid, "/bin/true", nullptr, nullptr, prog.argv, prog.cenv.data());
    ASSERT_EQ(rc, 0) << "posix_spawn: " << strerror(rc);
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    EXPECT_TRUE(exited_with(st, 0)) << "posix_spawn /bin/true: " << describe_status(st);
  }
  // posix_spawnp with file actions (allocates in the parent).
  posix_spawn_file_actions_t fa;
  ASSERT_EQ(posix_spawn_file_actions_init(&fa), 0);
  ASSERT_EQ(posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0), 0);
  pid_t pid = -1;
  char arg_sh[] = "sh", arg_c[] = "-c", arg_cmd[] = "echo hello; exit 0";
  char *sh_argv[] = {arg_sh, arg_c, arg_cmd, nullptr};
  int rc = posix_spawnp(&pid, "sh", &fa, nullptr, sh_argv, prog.cenv.data());
  ASSERT_EQ(rc, 0) << strerror(rc);
  int st = 0;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  EXPECT_TRUE(exited_with(st, 0)) << "posix_spawnp sh: " << describe_status(st);
  posix_spawn_file_actions_destroy(&fa);
}

TEST_F(Fork, VforkThenExecUnderThePreload) {
  busy_heap heap;
  ASSERT_TRUE(heap.pl.all_allocated());
  true_program prog;
  for (int i = 0; i < 3; ++i) {
    pid_t pid = vfork();
    if (pid == 0) {
      execve("/bin/true", prog.argv, prog.cenv.data());
      _exit(127);
    }
    ASSERT_GT(pid, 0);
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    EXPECT_TRUE(exited_with(st, 0)) << "vfork+exec /bin/true: " << describe_status(st);
  }
  // The parent's memory is untouched by the vforked children.
  EXPECT_EQ(heap.pl.changed(), 0u);
}

}  // namespace
