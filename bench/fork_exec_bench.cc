// fork+exec cost from a process with a large heap: allocates HEAP_MIB of
// malloc'd memory (every page written), then times ITERATIONS rounds of
// fork() + execve("/bin/true") + waitpid().  Run it with and without
// LD_PRELOAD=libmmtier.so side by side (bench/fork_exec.sh does) to see that
// the heap is not copied at fork.
//
// usage: fork_exec_bench [HEAP_MIB=1024] [ITERATIONS=50]
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

int main(int argc, char **argv) {
  const size_t heap_mib = argc > 1 ? strtoul(argv[1], nullptr, 10) : 1024;
  const int iterations = argc > 2 ? atoi(argv[2]) : 50;
  std::vector<char *> blocks;
  const size_t block = 1 << 20;
  for (size_t i = 0; i < heap_mib; ++i) {
    char *p = static_cast<char *>(malloc(block));
    if (!p) return 1;
    memset(p, static_cast<int>(i), block);
    blocks.push_back(p);
  }
  const char *argv_true[] = {"/bin/true", nullptr};
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) {
    pid_t pid = fork();
    if (pid < 0) return 2;
    if (pid == 0) {
      execve("/bin/true", const_cast<char **>(argv_true), environ);
      _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 3;
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  // Touch the heap again after the children are gone (copy-on-write cost).
  auto t2 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < blocks.size(); ++i) blocks[i][i % block] ^= 1;
  const double touch_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t2).count();
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("heap_mib=%zu iterations=%d ms_per_fork_exec=%.3f retouch_ms=%.3f maxrss_mib=%ld\n", heap_mib,
         iterations, ms / iterations, touch_ms, ru.ru_maxrss / 1024);
  for (char *p : blocks) free(p);
  return 0;
}
