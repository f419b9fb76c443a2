// A process for the node agent's tests, run under LD_PRELOAD=libmmtier.so:
// allocates N MiB, writes every page, then keeps writing pages of it at
// random (so its units are hot and it wants DRAM) until its standard input
// closes.  Prints "ready" once the memory is written.  With "fork" after
// N, it then forks a child that keeps writing the first sixteenth of the
// memory (a worker sharing most of its parent's), printing "forked PID".
#include <poll.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

int main(int argc, char **argv) {
  const size_t mib = argc > 1 ? strtoul(argv[1], nullptr, 10) : 256;
  const size_t len = mib << 20;
  char *p = static_cast<char *>(malloc(len));
  if (!p) return 1;
  memset(p, 1, len);
  printf("ready\n");
  fflush(stdout);
  size_t span = len;
  if (argc > 2 && strcmp(argv[2], "fork") == 0) {
    const pid_t child = fork();
    if (child < 0) return 1;
    if (child == 0) {
      span = len / 16;
    } else {
      printf("forked %d\n", static_cast<int>(child));
      fflush(stdout);
    }
  }
  unsigned long x = 88172645463325252ul;
  for (;;) {
    for (int i = 0; i < 200000; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      p[(x % (span >> 12)) << 12] += 1;
    }
    // A call into the allocator now and then, as any program makes (kept
    // from the compiler, which would drop a malloc freed unused).
    char *volatile q = static_cast<char *>(malloc(4 << 20));
    free(q);
    pollfd f = {0, POLLIN, 0};
    if (poll(&f, 1, 0) > 0) {
      char c;
      if (read(0, &c, 1) <= 0) break;
    }
  }
  free(p);
  return 0;
}
