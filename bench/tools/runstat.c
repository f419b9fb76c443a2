/* runstat: runs a program and records its exit status, peak RSS, CPU and
 * wall time, for bench/run_bench.py.
 *
 * usage: runstat OUTFILE [NAME=VALUE...] -- PROG [ARGS...]
 *
 * Forks, sets the NAME=VALUE variables in the child only (so an LD_PRELOAD
 * allocator applies to PROG and not to runstat), execs PROG, waits for it and
 * writes one line to OUTFILE:
 *     status=<raw wait status> maxrss_kib=<n> utime=<s> stime=<s> wall=<s>
 * then exits 0 (or 125 on its own errors).
 *
 * Why not measure from the driver: Linux keeps a process's peak RSS across
 * execve, so a child forked straight from the Python driver would report at
 * least the driver's own RSS (about 20 MiB).  Forked from this small program
 * the floor is runstat's RSS (about 1 MiB).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s OUTFILE [NAME=VALUE...] -- PROG [ARGS...]\n", argv[0]);
    return 125;
  }
  const char *outfile = argv[1];
  int sep = 2;
  while (sep < argc && strcmp(argv[sep], "--") != 0) {
    if (strchr(argv[sep], '=') == NULL) {
      fprintf(stderr, "runstat: expected NAME=VALUE or --, got '%s'\n", argv[sep]);
      return 125;
    }
    ++sep;
  }
  if (sep + 1 >= argc) {
    fprintf(stderr, "runstat: no program after --\n");
    return 125;
  }
  const double start = now();
  pid_t pid = fork();
  if (pid < 0) {
    perror("runstat: fork");
    return 125;
  }
  if (pid == 0) {
    for (int i = 2; i < sep; ++i) {
      if (putenv(argv[i]) != 0) _exit(127);
    }
    execvp(argv[sep + 1], argv + sep + 1);
    fprintf(stderr, "runstat: cannot execute %s: %s\n", argv[sep + 1], strerror(errno));
    _exit(127);
  }
  int status = 0;
  struct rusage ru;
  while (wait4(pid, &status, 0, &ru) < 0) {
    if (errno != EINTR) {
      perror("runstat: wait4");
      return 125;
    }
  }
  const double wall = now() - start;
  FILE *f = fopen(outfile, "w");
  if (f == NULL) {
    perror("runstat: cannot write the result file");
    return 125;
  }
  fprintf(f, "status=%d maxrss_kib=%ld utime=%.6f stime=%.6f wall=%.6f\n", status, ru.ru_maxrss,
          (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6,
          (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6, wall);
  if (fclose(f) != 0) return 125;
  return 0;
}
