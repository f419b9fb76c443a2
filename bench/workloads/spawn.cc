// Process start and exit: posix_spawns a command COUNT times in a row, each
// child with this process's environment (so under the LD_PRELOAD allocator
// the driver started this one with), its stdout on a pipe that is read to
// the end, then waited for.  Every child must exit with status 0 and print
// exactly LINES lines, and every child's output must be the same bytes as
// the first child's.
//
// usage: spawn NAME COUNT [--lines LINES] [--unset VAR]... -- PROG [ARGS...]
//   --lines LINES  lines each child must print (default: not checked)
//   --unset VAR    remove VAR from the children's environment (repeatable);
//                  bench/run_bench.py removes MMTIER_REPORT, so that only
//                  this driver writes an exit report, not every child
// prints: RESULT <NAME> <starts per second> <checksum>
//   checksum: COUNT, the children's total output bytes and a hash of the
//   output, so it depends only on the arguments and on PROG's output.
#include <fcntl.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "common.h"

extern char **environ;

namespace {

[[noreturn]] void usage(const char *why) {
  fprintf(stderr, "spawn: %s\nusage: spawn NAME COUNT [--lines LINES] [--unset VAR]... -- PROG [ARGS...]\n",
          why);
  exit(2);
}

// FNV-1a over the bytes of s.
uint64_t fnv(const std::string &s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

// Starts argv[0] with its stdout on a pipe, reads the pipe to the end into
// *out, waits for the child; returns its wait status, or -1 (errno set, a
// message printed) if it could not be started or waited for.
int run_child(char *const *argv, char *const *envp, std::string *out) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    perror("spawn: pipe2");
    return -1;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  // dup2 onto 1 clears FD_CLOEXEC on the copy; both pipe ends close at exec.
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  pid_t pid = -1;
  const int err = posix_spawn(&pid, argv[0], &fa, nullptr, argv, envp);
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  if (err != 0) {
    close(fds[0]);
    fprintf(stderr, "spawn: posix_spawn %s: %s\n", argv[0], strerror(err));
    return -1;
  }
  out->clear();
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fds[0], buf, sizeof buf);
    if (n > 0) {
      out->append(buf, static_cast<size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno != EINTR) {
      perror("spawn: read");
      break;
    }
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      perror("spawn: waitpid");
      return -1;
    }
  }
  return status;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 5) usage("too few arguments");
  const char *name = argv[1];
  const uint64_t count = bench::arg_u64(argc, argv, 2, 0);
  if (count == 0) usage("COUNT must be at least 1");
  long lines = -1;
  std::vector<std::string> unset;
  int i = 3;
  for (; i < argc && strcmp(argv[i], "--") != 0; ++i) {
    if (strcmp(argv[i], "--lines") == 0 && i + 1 < argc) {
      lines = static_cast<long>(bench::arg_u64(argc, argv, ++i, 0));
    } else if (strcmp(argv[i], "--unset") == 0 && i + 1 < argc) {
      unset.push_back(std::string(argv[++i]) + "=");
    } else {
      usage("unknown option");
    }
  }
  if (i + 1 >= argc) usage("no program after --");
  char *const *child_argv = argv + i + 1;

  // The children's environment: this one's, without the --unset variables.
  std::vector<char *> envp;
  for (char **e = environ; *e != nullptr; ++e) {
    bool drop = false;
    for (const std::string &u : unset) drop = drop || strncmp(*e, u.c_str(), u.size()) == 0;
    if (!drop) envp.push_back(*e);
  }
  envp.push_back(nullptr);

  std::string first, out;
  uint64_t total_bytes = 0;
  const double start = bench::now_seconds();
  for (uint64_t k = 0; k < count; ++k) {
    const int status = run_child(child_argv, envp.data(), &out);
    if (status < 0) return 1;
    if (WIFSIGNALED(status)) {
      fprintf(stderr, "spawn: start %llu: %s killed by signal %d\n", static_cast<unsigned long long>(k),
              child_argv[0], WTERMSIG(status));
      return 1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      fprintf(stderr, "spawn: start %llu: %s exited with status %d\n", static_cast<unsigned long long>(k),
              child_argv[0], WIFEXITED(status) ? WEXITSTATUS(status) : -1);
      return 1;
    }
    if (k == 0) {
      first = out;
      long n = 0;
      for (char c : out) n += c == '\n';
      if (lines >= 0 && (n != lines || (!out.empty() && out.back() != '\n'))) {
        fprintf(stderr, "spawn: %s printed %ld line(s) (%zu bytes), expected %ld: '%.200s'\n", child_argv[0], n,
                out.size(), lines, out.c_str());
        return 1;
      }
    } else if (out != first) {
      fprintf(stderr, "spawn: start %llu: output differs from the first start's: '%.200s' vs '%.200s'\n",
              static_cast<unsigned long long>(k), out.c_str(), first.c_str());
      return 1;
    }
    total_bytes += out.size();
  }
  const double elapsed = bench::now_seconds() - start;
  uint64_t sum = bench::mix(0, count);
  sum = bench::mix(sum, total_bytes);
  sum = bench::mix(sum, fnv(first));
  bench::print_result(name, static_cast<double>(count) / elapsed, sum);
  return 0;
}
