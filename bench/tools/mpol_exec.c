// mpol_exec: runs a program under a NUMA memory policy set before exec
// (set_mempolicy is inherited across execve), for the policies Debian 12's
// numactl does not know: the kernel's own placement as a contender beside
// mmtier's node tier (scripts/vm/guest.sh, suite kerneltier).
//
// usage: mpol_exec weighted-interleave|interleave NODES PROGRAM [ARG...]
//   NODES  a comma list of node numbers, e.g. 0,1
// Weighted interleave (Linux 6.9) places each node's share of the pages by
// its weight in /sys/kernel/mm/mempolicy/weighted_interleave/nodeN.
// Exits 2 on bad usage, 1 when the kernel refuses the policy (one line).
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { kMpolInterleave = 3, kMpolWeightedInterleave = 6 };

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: mpol_exec weighted-interleave|interleave NODES PROGRAM [ARG...]\n");
    return 2;
  }
  int mode;
  if (!strcmp(argv[1], "weighted-interleave")) {
    mode = kMpolWeightedInterleave;
  } else if (!strcmp(argv[1], "interleave")) {
    mode = kMpolInterleave;
  } else {
    fprintf(stderr, "mpol_exec: unknown policy %s\n", argv[1]);
    return 2;
  }
  unsigned long mask = 0;
  for (char *s = argv[2], *end; *s; s = *end ? end + 1 : end) {
    errno = 0;
    const long n = strtol(s, &end, 10);
    if (end == s || errno || n < 0 || n >= (long)(8 * sizeof mask) || (*end && *end != ',')) {
      fprintf(stderr, "mpol_exec: NODES is a comma list of node numbers, not %s\n", argv[2]);
      return 2;
    }
    mask |= 1ul << n;
  }
  if (syscall(SYS_set_mempolicy, mode, &mask, 8 * sizeof mask + 1) != 0) {
    fprintf(stderr, "mpol_exec: the kernel refuses %s over nodes %s: %s\n", argv[1], argv[2], strerror(errno));
    return 1;
  }
  execvp(argv[3], argv + 3);
  fprintf(stderr, "mpol_exec: cannot run %s: %s\n", argv[3], strerror(errno));
  return 127;
}
