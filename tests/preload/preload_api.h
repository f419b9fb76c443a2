// Shared helpers for the preload tests: the public mmtier API looked up at
// run time with dlsym(RTLD_DEFAULT, ...) (these binaries are not linked
// against mmtier), a check that libmmtier.so really is preloaded and owns
// malloc, byte patterns, running code in a forked or re-executed child, and
// running a program with a chosen environment and collecting its output.
#pragma once

#include <mmtier/mmtier.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

extern char **environ;

namespace preload_test {

struct api_table {
  int (*tier_of)(const void *) = nullptr;
  size_t (*resident_bytes)(int) = nullptr;
  size_t (*tier_limit)(int) = nullptr;
  int (*get_stats)(struct mmtier_stats *) = nullptr;
  int (*report)(int) = nullptr;
  int (*owns)(const void *) = nullptr;
};

template <class Fn>
inline void lookup(Fn *&fn, const char *name) {
  fn = reinterpret_cast<Fn *>(dlsym(RTLD_DEFAULT, name));
}

inline const api_table &api() {
  static const api_table table = [] {
    api_table t;
    lookup(t.tier_of, "mmtier_tier_of");
    lookup(t.resident_bytes, "mmtier_resident_bytes");
    lookup(t.tier_limit, "mmtier_tier_limit");
    lookup(t.get_stats, "mmtier_get_stats");
    lookup(t.report, "mmtier_report");
    lookup(t.owns, "mmtier_owns");
    return t;
  }();
  return table;
}

// Empty string when libmmtier.so is preloaded: the API is found and the
// malloc, free, operator new and mmap this program calls are the library's.
inline std::string preload_problem() {
  const api_table &a = api();
  if (!a.tier_of || !a.resident_bytes || !a.tier_limit || !a.get_stats)
    return "mmtier API not found with dlsym(RTLD_DEFAULT): libmmtier.so is not preloaded "
           "(run under LD_PRELOAD=" MMTIER_PRELOAD_LIB ")";
  Dl_info api_info{}, sym_info{};
  if (!dladdr(reinterpret_cast<void *>(a.tier_of), &api_info) || !api_info.dli_fname)
    return "dladdr(mmtier_tier_of) failed";
  for (const char *name : {"malloc", "free", "calloc", "realloc", "posix_memalign", "_Znwm",
                           "_ZdlPv", "mmap", "munmap", "mremap"}) {
    void *sym = dlsym(RTLD_DEFAULT, name);
    if (!sym || !dladdr(sym, &sym_info) || !sym_info.dli_fname ||
        strcmp(sym_info.dli_fname, api_info.dli_fname) != 0)
      return std::string(name) + " resolves to " +
             (sym && sym_info.dli_fname ? sym_info.dli_fname : "(nothing)") + ", not to " +
             api_info.dli_fname;
  }
  return "";
}

#define ASSERT_MMTIER_PRELOADED()                                   \
  do {                                                              \
    const std::string mmtier_problem_ = preload_test::preload_problem(); \
    ASSERT_EQ(mmtier_problem_, "");                                 \
  } while (0)

// Every test in these binaries derives from this fixture: it first asserts
// that the library is preloaded.
class Preloaded : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_MMTIER_PRELOADED(); }
};

inline int tier_of(const void *p) { return api().tier_of ? api().tier_of(p) : -2; }

// Keeps the compiler from reasoning about (and removing) allocations.
inline void escape(const void *p) { asm volatile("" : : "g"(p) : "memory"); }
template <class T>
inline T opaque(T v) {
  asm volatile("" : "+r"(v));
  return v;
}

constexpr size_t kKiB = 1024, kMiB = 1024 * 1024;

// Collects failed checks of a long loop so that one assertion reports how
// many failed and the first few.
struct problems {
  size_t count = 0, checked = 0;
  std::string first;
  bool check(bool ok, const std::string &what) {
    ++checked;
    if (ok) return true;
    if (count++ < 8) first += "\n  " + what;
    return false;
  }
  std::string summary() const {
    return std::to_string(count) + " of " + std::to_string(checked) + " checks failed:" + first +
           (count > 8 ? "\n  ..." : "");
  }
};
#define EXPECT_NO_PROBLEMS(p) EXPECT_EQ((p).count, 0u) << (p).summary()

// ---- byte patterns: byte i of a pattern depends on the seed and on i -------

inline uint64_t pattern_word(uint64_t seed, uint64_t k) {
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + k + 0x632be59bd9b4e019ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

inline uint8_t pattern_byte(uint64_t seed, size_t i) {
  return static_cast<uint8_t>(pattern_word(seed, i / 8) >> (8 * (i % 8)));
}

inline void fill_pattern(void *p, size_t n, uint64_t seed) {
  auto *b = static_cast<unsigned char *>(p);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w = pattern_word(seed, i / 8);
    memcpy(b + i, &w, 8);
  }
  for (; i < n; ++i) b[i] = pattern_byte(seed, i);
}

// Offset of the first byte that differs from the pattern, or n.
inline size_t pattern_mismatch(const void *p, size_t n, uint64_t seed) {
  const auto *b = static_cast<const unsigned char *>(p);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w = pattern_word(seed, i / 8), v;
    memcpy(&v, b + i, 8);
    if (v != w) break;
  }
  for (; i < n; ++i)
    if (b[i] != pattern_byte(seed, i)) return i;
  return n;
}

// Offset of the first byte that is not v, or n.
inline size_t byte_mismatch(const void *p, size_t n, unsigned char v) {
  const auto *b = static_cast<const unsigned char *>(p);
  uint64_t w;
  memset(&w, v, 8);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x;
    memcpy(&x, b + i, 8);
    if (x != w) break;
  }
  for (; i < n; ++i)
    if (b[i] != v) return i;
  return n;
}

inline size_t zero_mismatch(const void *p, size_t n) { return byte_mismatch(p, n, 0); }

// ---- child processes ---------------------------------------------------------

inline std::string describe_status(int st) {
  if (WIFEXITED(st)) return "exit status " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st))
    return "killed by signal " + std::to_string(WTERMSIG(st)) + " (" + strsignal(WTERMSIG(st)) + ")";
  return "wait status " + std::to_string(st);
}

inline bool exited_with(int st, int code) { return WIFEXITED(st) && WEXITSTATUS(st) == code; }
inline bool killed_by(int st, int sig) { return WIFSIGNALED(st) && WTERMSIG(st) == sig; }

// Waits for pid, retrying after EINTR; its wait status, or -1.
inline int wait_status(pid_t pid) {
  int st = -1;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return st;
}

// Runs fn in a forked child, which exits 0 when fn returns; returns the wait
// status.  No core files are written for children expected to crash.
inline int run_in_child(const std::function<void()> &fn) {
  fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    fn();
    _exit(0);
  }
  return wait_status(pid);
}

// A child reading (or writing) the byte at p: the wait status.
inline int child_reads(const volatile unsigned char *p) {
  return run_in_child([p] {
    unsigned char v = *p;
    escape(&v);
  });
}
inline int child_writes(volatile unsigned char *p) {
  return run_in_child([p] { *p = 0x5a; });
}

// ---- programs started with a chosen environment ------------------------------

// The current environment with LD_PRELOAD set to the library under test,
// plus extra NAME=VALUE entries (replacing the same names).
inline std::vector<std::string> preload_environment(const std::vector<std::string> &extra = {}) {
  std::vector<std::string> env;
  auto overridden = [&](const char *entry) {
    const char *eq = strchr(entry, '=');
    size_t len = eq ? static_cast<size_t>(eq - entry) : strlen(entry);
    if (len == 10 && strncmp(entry, "LD_PRELOAD", 10) == 0) return true;
    for (const std::string &e : extra)
      if (e.compare(0, len + 1, std::string(entry, len) + "=") == 0) return true;
    return false;
  };
  for (char **e = environ; e && *e; ++e)
    if (!overridden(*e)) env.emplace_back(*e);
  env.emplace_back(std::string("LD_PRELOAD=") + MMTIER_PRELOAD_LIB);
  for (const std::string &e : extra) env.push_back(e);
  return env;
}

// The current environment without any MMTIER_* or LD_PRELOAD entry, plus
// extra: a program that is not preloaded and sees only the given settings.
inline std::vector<std::string> plain_environment(const std::vector<std::string> &extra = {}) {
  std::vector<std::string> env;
  for (char **e = environ; e && *e; ++e)
    if (strncmp(*e, "MMTIER_", 7) != 0 && strncmp(*e, "LD_PRELOAD=", 11) != 0) env.emplace_back(*e);
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

// plain_environment with LD_PRELOAD set to the library under test: a
// preloaded program that sees only the MMTIER_* settings in extra.
inline std::vector<std::string> clean_preload_environment(const std::vector<std::string> &extra = {}) {
  std::vector<std::string> env = plain_environment({std::string("LD_PRELOAD=") + MMTIER_PRELOAD_LIB});
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

inline std::vector<char *> c_strings(std::vector<std::string> &v) {
  std::vector<char *> out;
  for (std::string &s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// {path, args...}: an argv for path.
inline std::vector<std::string> argv_for(const std::string &path, const std::vector<std::string> &args) {
  std::vector<std::string> argv{path};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

// Descriptors a started program gets as stdin, stdout and stderr; -1 means
// /dev/null for stdin and the test's own stdout or stderr.
struct child_stdio {
  int in = -1, out = -1, err = -1;
};

// Starts path with argv (argv[0] included) and env by posix_spawn, which
// runs no fork handlers in this process.  Returns the child's pid, or -1
// after adding a test failure that says why.
inline pid_t start_program(const std::string &path, std::vector<std::string> argv,
                           std::vector<std::string> env, child_stdio io = {}) {
  std::vector<char *> cargv = c_strings(argv), cenv = c_strings(env);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (io.in >= 0)
    posix_spawn_file_actions_adddup2(&fa, io.in, 0);
  else
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (io.out >= 0) posix_spawn_file_actions_adddup2(&fa, io.out, 1);
  if (io.err >= 0) posix_spawn_file_actions_adddup2(&fa, io.err, 2);
  fflush(nullptr);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, path.c_str(), &fa, nullptr, cargv.data(), cenv.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    ADD_FAILURE() << "posix_spawn " << path << ": " << strerror(rc);
    return -1;
  }
  return pid;
}

struct exec_result {
  pid_t pid = -1;
  int status = -1;
  std::string out, err;
};

// The wait status, stdout and stderr of a finished program, for messages.
inline std::string describe(const exec_result &r) {
  return describe_status(r.status) + "\n--- stdout ---\n" + r.out + "--- stderr ---\n" + r.err + "---";
}

inline size_t count_lines(const std::string &s) {
  size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

// Runs path with argv (argv[0] included) and env, stdin /dev/null; collects
// the program's stdout and stderr and waits for it.
inline exec_result run_program(const std::string &path, std::vector<std::string> argv,
                               std::vector<std::string> env) {
  exec_result res;
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe: " << strerror(errno);
    return res;
  }
  if (pipe2(err, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe: " << strerror(errno);
    close(out[0]);
    close(out[1]);
    return res;
  }
  res.pid = start_program(path, std::move(argv), std::move(env), {-1, out[1], err[1]});
  close(out[1]);
  close(err[1]);
  if (res.pid < 0) {
    close(out[0]);
    close(err[0]);
    return res;
  }
  struct pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string *dst[2] = {&res.out, &res.err};
  int open_fds = 2;
  while (open_fds > 0) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !fds[i].revents) continue;
      char buf[4096];
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        dst[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (const struct pollfd &p : fds)
    if (p.fd >= 0) close(p.fd);
  res.status = wait_status(res.pid);
  return res;
}

// Re-executes this test binary with args under the preload library.
inline exec_result run_self(const std::vector<std::string> &args,
                            const std::vector<std::string> &extra_env = {}) {
  return run_program("/proc/self/exe", argv_for("/proc/self/exe", args), preload_environment(extra_env));
}

#ifdef MMTIER_TIER_PROBE
// Runs helpers/tier_probe with args, preloaded, seeing only the MMTIER_*
// settings in extra.
inline exec_result run_tier_probe(const std::vector<std::string> &args,
                                  const std::vector<std::string> &extra = {}) {
  return run_program(MMTIER_TIER_PROBE, argv_for(MMTIER_TIER_PROBE, args), clean_preload_environment(extra));
}
#endif

}  // namespace preload_test
