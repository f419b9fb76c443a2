// A process for the node agent's tests, run under LD_PRELOAD=libmmtier.so:
// allocates N MiB, writes every page, then keeps writing pages of it at
// random (so its units are hot and it wants DRAM) until its standard input
// closes.  Prints "ready" once the memory is written.
#include <poll.h>
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
  unsigned long x = 88172645463325252ul;
  for (;;) {
    for (int i = 0; i < 200000; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      p[(x % (len >> 12)) << 12] += 1;
    }
    pollfd f = {0, POLLIN, 0};
    if (poll(&f, 1, 0) > 0) {
      char c;
      if (read(0, &c, 1) <= 0) break;
    }
  }
  free(p);
  return 0;
}
