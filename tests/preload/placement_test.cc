// Placement quality, measured in child processes running a mixed workload
// (small and medium objects, large mallocs and anonymous mmaps, all touched,
// some freed in the middle) under a given configuration: the DRAM share of
// resident managed memory follows MMTIER_DRAM_RATIO, MMTIER_DRAM_LIMIT caps
// DRAM with the rest on PMem, dram-first fills DRAM up to its limit, a full
// PMem tier spills to DRAM with one warning and no data loss, all of the
// workload's memory is managed, and MMTIER_REPORT writes the exit report.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

extern char **environ;

namespace {

constexpr size_t kMiB = size_t{1} << 20;
constexpr size_t kUnit = 2 * kMiB;

struct child_result {
  pid_t pid = -1;
  int status = -1;
  std::string out, err;
};

// Runs tier_probe with args under LD_PRELOAD=libmmtier.so, with the test's
// environment minus MMTIER_* plus `extra`.
child_result run_probe(const std::vector<std::string> &args, const std::vector<std::string> &extra) {
  std::vector<std::string> env;
  for (char **e = environ; *e; ++e) {
    if (strncmp(*e, "MMTIER_", 7) == 0 || strncmp(*e, "LD_PRELOAD=", 11) == 0) continue;
    env.emplace_back(*e);
  }
  env.push_back(std::string("LD_PRELOAD=") + MMTIER_PRELOAD_LIB);
  env.insert(env.end(), extra.begin(), extra.end());
  std::vector<std::string> argv = {MMTIER_TIER_PROBE};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char *> av, ev;
  for (auto &a : argv) av.push_back(a.data());
  av.push_back(nullptr);
  for (auto &e : env) ev.push_back(e.data());
  ev.push_back(nullptr);

  child_result r;
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe: " << strerror(errno);
    return r;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  int rc = posix_spawn(&r.pid, av[0], &fa, nullptr, av.data(), ev.data());
  posix_spawn_file_actions_destroy(&fa);
  close(out[1]);
  close(err[1]);
  if (rc != 0) {
    ADD_FAILURE() << "posix_spawn: " << strerror(rc);
    close(out[0]);
    close(err[0]);
    return r;
  }
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string *sinks[2] = {&r.out, &r.err};
  int open_fds = 2;
  while (open_fds > 0) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  while (waitpid(r.pid, &r.status, 0) < 0 && errno == EINTR) {
  }
  return r;
}

std::string describe(const child_result &r) {
  std::string s = "status=";
  if (WIFEXITED(r.status))
    s += "exit " + std::to_string(WEXITSTATUS(r.status));
  else if (WIFSIGNALED(r.status))
    s += "signal " + std::to_string(WTERMSIG(r.status));
  else
    s += std::to_string(r.status);
  return s + "\n--- stdout ---\n" + r.out + "--- stderr ---\n" + r.err + "---";
}

size_t count_lines(const std::string &s) {
  size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

struct workload_result {
  bool ok = false;  // exited 0 and verified its data
  size_t live = 0, dram = 0, pmem = 0;
  size_t placed_dram = 0, placed_pmem = 0;  // units placed on each tier, in bytes
  child_result child;

  double dram_share() const { return dram + pmem ? double(dram) / double(dram + pmem) : 0.0; }
};

size_t number_after(const std::string &s, const std::string &key) {
  size_t p = s.find(key + "=");
  return p == std::string::npos ? 0 : std::strtoull(s.c_str() + p + key.size() + 1, nullptr, 10);
}

workload_result run_workload(size_t mib, const std::vector<std::string> &env) {
  workload_result w;
  w.child = run_probe({"workload", std::to_string(mib)}, env);
  const child_result &c = w.child;
  w.ok = WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0 && c.out.find("verified\n") != std::string::npos;
  w.live = number_after(c.out, "live");
  w.dram = number_after(c.out, "dram");
  w.pmem = number_after(c.out, "pmem");
  w.placed_dram = number_after(c.out, "placed_dram");
  w.placed_pmem = number_after(c.out, "placed_pmem");
  std::string cfg;
  for (auto &e : env) cfg += (cfg.empty() ? "" : " ") + e;
  std::printf("[ placement] %s, workload %zu MiB: live %.1f MiB; resident DRAM %.1f MiB, PMem %.1f MiB, "
              "DRAM share %.1f%%, managed/live %.1f%%; placed DRAM %.1f MiB, PMem %.1f MiB\n",
              cfg.c_str(), mib, double(w.live) / kMiB, double(w.dram) / kMiB, double(w.pmem) / kMiB,
              100.0 * w.dram_share(), w.live ? 100.0 * double(w.dram + w.pmem) / double(w.live) : 0.0,
              double(w.placed_dram) / kMiB, double(w.placed_pmem) / kMiB);
  std::fflush(stdout);
  return w;
}

// Every byte of the workload is malloc or anonymous mmap memory, so nearly
// all of it must be resident on one of the tiers.
void expect_managed(const workload_result &w) {
  EXPECT_GE(double(w.dram + w.pmem), 0.95 * double(w.live))
      << "only " << (w.dram + w.pmem) / kMiB << " MiB of the workload's " << w.live / kMiB
      << " MiB live bytes are resident on a tier: the rest escaped tiering\n"
      << describe(w.child);
}

void check_ratio(const char *ratio, double want_share) {
  workload_result w = run_workload(1536, {std::string("MMTIER_DRAM_RATIO=") + ratio});
  ASSERT_TRUE(w.ok) << describe(w.child);
  ASSERT_GT(w.live, 1000 * kMiB) << describe(w.child);
  std::cout << "DRAM share with " << ratio << ": " << 100.0 * w.dram_share() << "% (target "
            << 100.0 * want_share << "%)" << std::endl;
  EXPECT_NEAR(w.dram_share(), want_share, 0.05) << describe(w.child);
  expect_managed(w);
}

TEST(Placement, Ratio1to4) { check_ratio("1:4", 0.20); }
TEST(Placement, Ratio1to9) { check_ratio("1:9", 0.10); }
TEST(Placement, Ratio1to1) { check_ratio("1:1", 0.50); }

TEST(Placement, DramLimitCapsDramRestOnPmem) {
  const size_t limit = 256 * kMiB;
  workload_result w = run_workload(1024, {"MMTIER_DRAM_RATIO=1:1", "MMTIER_DRAM_LIMIT=256M"});
  ASSERT_TRUE(w.ok) << describe(w.child);
  std::cout << "DRAM limit 256 MiB: DRAM " << w.dram / kMiB << " MiB, PMem " << w.pmem / kMiB
            << " MiB" << std::endl;
  EXPECT_LE(w.dram, limit + kUnit) << describe(w.child);
  EXPECT_GE(double(w.pmem), 0.95 * double(w.live) - double(limit + kUnit))
      << "PMem does not hold the memory beyond the DRAM limit\n" << describe(w.child);
  expect_managed(w);
}

TEST(Placement, DramFirstFillsDramToLimit) {
  const size_t limit = 512 * kMiB;
  workload_result w = run_workload(1024, {"MMTIER_POLICY=dram-first", "MMTIER_DRAM_LIMIT=512M"});
  ASSERT_TRUE(w.ok) << describe(w.child);
  std::cout << "dram-first, limit 512 MiB: DRAM " << w.dram / kMiB << " MiB, PMem " << w.pmem / kMiB
            << " MiB" << std::endl;
  EXPECT_LE(w.dram, limit + kUnit) << describe(w.child);
  // DRAM's whole budget is placed; what is resident of it depends on how
  // full the engine keeps those units after the workload's frees.
  EXPECT_GE(w.placed_dram, limit - kUnit) << "DRAM not filled to its limit\n" << describe(w.child);
  EXPECT_LE(w.placed_dram, limit + kUnit) << describe(w.child);
  EXPECT_GE(w.dram, limit / 2) << "DRAM units placed but mostly empty\n" << describe(w.child);
  EXPECT_GE(double(w.pmem), 0.95 * double(w.live) - double(limit + kUnit))
      << "PMem does not hold the memory beyond the DRAM limit\n" << describe(w.child);
  expect_managed(w);
}

TEST(Placement, FullPmemSpillsToDramWithOneWarning) {
  const size_t pmem_limit = 64 * kMiB;
  workload_result w = run_workload(512, {"MMTIER_DRAM_RATIO=1:9", "MMTIER_PMEM_LIMIT=64M"});
  ASSERT_TRUE(w.ok) << "program failed or data was not verified\n" << describe(w.child);
  std::cout << "PMem limit 64 MiB: DRAM " << w.dram / kMiB << " MiB, PMem " << w.pmem / kMiB
            << " MiB" << std::endl;
  EXPECT_EQ(count_lines(w.child.err), 1u) << describe(w.child);
  EXPECT_NE(w.child.err.find("PMem"), std::string::npos) << describe(w.child);
  EXPECT_LE(w.pmem, pmem_limit + kUnit) << describe(w.child);
  EXPECT_GE(double(w.dram), 0.95 * double(w.live) - double(pmem_limit + kUnit))
      << "DRAM does not hold the excess\n" << describe(w.child);
  expect_managed(w);
}

bool has_line_starting(const std::string &text, const std::string &prefix) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(prefix, 0) == 0) return true;
  return false;
}

TEST(Placement, ReportToFile) {
  char dir[] = "/var/tmp/mmtier-report-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr) << strerror(errno);
  const std::string pattern = std::string(dir) + "/report-%p.txt";
  workload_result w = run_workload(64, {"MMTIER_REPORT=" + pattern});
  const std::string path = std::string(dir) + "/report-" + std::to_string(w.child.pid) + ".txt";
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  struct stat st;
  bool exists = stat(path.c_str(), &st) == 0;
  unlink(path.c_str());
  rmdir(dir);
  ASSERT_TRUE(w.ok) << describe(w.child);
  ASSERT_TRUE(exists) << "no report at " << path << "\n" << describe(w.child);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << std::oct << (st.st_mode & 0777);
  EXPECT_TRUE(has_line_starting(text.str(), "  DRAM")) << text.str();
  EXPECT_TRUE(has_line_starting(text.str(), "  PMem")) << text.str();
  EXPECT_EQ(w.child.err, "") << describe(w.child);
}

TEST(Placement, ReportToStderr) {
  workload_result w = run_workload(64, {"MMTIER_REPORT=stderr"});
  ASSERT_TRUE(w.ok) << describe(w.child);
  EXPECT_TRUE(has_line_starting(w.child.err, "  DRAM")) << describe(w.child);
  EXPECT_TRUE(has_line_starting(w.child.err, "  PMem")) << describe(w.child);
  EXPECT_FALSE(has_line_starting(w.child.out, "  DRAM")) << describe(w.child);
}

}  // namespace
