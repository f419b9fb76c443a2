// JIT code on the PMem tier when the PMem directory is mounted noexec (as
// /dev/shm is in many containers): mprotect(PROT_EXEC) must still succeed,
// the code must run, and the data must be intact; the unit moves to DRAM.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace {

using tier_of_fn = int (*)(const void *);

// Child mode: map, write code, flip to executable, run it.  Exit codes say
// what went wrong.
int run_child() {
  auto tier_of = reinterpret_cast<tier_of_fn>(dlsym(RTLD_DEFAULT, "mmtier_tier_of"));
  if (!tier_of) return 10;
  int moved = 0;
  unsigned char *maps[16];
  for (int k = 0; k < 16; ++k) {
    auto *p = static_cast<unsigned char *>(
        mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (p == MAP_FAILED) return 11;
    memset(p, 0xcc, 1 << 20);
    const unsigned char code[] = {0xB8, 0x2A, 0x00, 0x00, 0x00, 0xC3};  // mov eax, 42; ret
    memcpy(p + 8192, code, sizeof code);
    const int before = tier_of(p);
    if (mprotect(p, 1 << 20, PROT_READ | PROT_EXEC) != 0) return 12;
    if (reinterpret_cast<int (*)()>(p + 8192)() != 42) return 13;
    for (size_t i = 0; i < (1 << 20); ++i)
      if (i < 8192 || i >= 8192 + sizeof code)
        if (p[i] != 0xcc) return 14;
    if (before == 1 && tier_of(p) == 0) ++moved;
    maps[k] = p;  // kept, so that each mapping gets fresh addresses
  }
  for (unsigned char *p : maps)
    if (munmap(p, 1 << 20) != 0) return 15;
  return moved > 0 ? 0 : 16;  // with ratio 1:4 some mappings start on PMem
}

TEST(JitNoexec, ExecutableCodeOnANoexecPmemDirectory) {
#if !defined(__x86_64__)
  GTEST_SKIP() << "x86-64 code bytes";
#endif
  if (geteuid() != 0) GTEST_SKIP() << "mounting a noexec tmpfs needs root";
  char dir[] = "/tmp/mmtier-noexec-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  if (mount("tmpfs", dir, "tmpfs", MS_NOEXEC, "size=256m") != 0) {
    rmdir(dir);
    GTEST_SKIP() << "cannot mount tmpfs here";
  }
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::string pmem = std::string("MMTIER_PMEM_PATH=") + dir;
    std::string preload = std::string("LD_PRELOAD=") + MMTIER_PRELOAD_LIB;
    char *envp[] = {const_cast<char *>(pmem.c_str()), const_cast<char *>(preload.c_str()),
                    const_cast<char *>("JIT_NOEXEC_CHILD=1"), nullptr};
    char self[] = "/proc/self/exe";
    char *argv[] = {self, nullptr};
    execve(self, argv, envp);
    _exit(127);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  umount(dir);
  rmdir(dir);
  ASSERT_TRUE(WIFEXITED(status)) << "child died with signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "12 mprotect failed, 13 wrong result, 14 data changed, 16 nothing started on PMem";
}

}  // namespace

int main(int argc, char **argv) {
  if (getenv("JIT_NOEXEC_CHILD")) return run_child();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
