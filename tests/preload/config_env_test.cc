// Configuration from the environment, seen from outside the process: every
// MMTIER_* variable with a bad value stops the program before main() with
// exit status 1 and exactly one stderr line naming the variable and the
// value; good values let main() run; an unknown MMTIER_* name gets one
// warning naming the closest known variable; a setuid program (secure
// execution) ignores MMTIER_* altogether.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

extern char **environ;

namespace {

struct child_result {
  int status = -1;
  std::string out, err;
};

// The test's environment without any MMTIER_* or LD_PRELOAD entry.
std::vector<std::string> clean_env() {
  std::vector<std::string> env;
  for (char **e = environ; *e; ++e) {
    if (strncmp(*e, "MMTIER_", 7) == 0 || strncmp(*e, "LD_PRELOAD=", 11) == 0) continue;
    env.emplace_back(*e);
  }
  return env;
}

// Runs argv with the clean environment plus `extra`, LD_PRELOAD=libmmtier.so
// when `preload`; collects stdout, stderr and the wait status.
child_result run(const std::vector<std::string> &argv, const std::vector<std::string> &extra,
                 bool preload = true) {
  std::vector<std::string> env = clean_env();
  if (preload) env.push_back(std::string("LD_PRELOAD=") + MMTIER_PRELOAD_LIB);
  env.insert(env.end(), extra.begin(), extra.end());
  std::vector<char *> av, ev;
  for (auto &a : argv) av.push_back(const_cast<char *>(a.c_str()));
  av.push_back(nullptr);
  for (auto &e : env) ev.push_back(const_cast<char *>(e.c_str()));
  ev.push_back(nullptr);

  int out[2], err[2];
  child_result r;
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe: " << strerror(errno);
    return r;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  pid_t pid;
  int rc = posix_spawn(&pid, av[0], &fa, nullptr, av.data(), ev.data());
  posix_spawn_file_actions_destroy(&fa);
  close(out[1]);
  close(err[1]);
  if (rc != 0) {
    ADD_FAILURE() << "posix_spawn " << argv[0] << ": " << strerror(rc);
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
  while (waitpid(pid, &r.status, 0) < 0 && errno == EINTR) {
  }
  return r;
}

size_t count_lines(const std::string &s) {
  size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
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

// A bad value: exit 1, no main(), one stderr line with NAME and "value".
void expect_rejected(const std::string &name, const std::string &value) {
  SCOPED_TRACE(name + "=\"" + value + "\"");
  child_result r = run({MMTIER_TIER_PROBE, "main"}, {name + "=" + value});
  const std::string d = describe(r);
  EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 1) << d;
  EXPECT_EQ(r.out, "") << "main() ran despite the invalid value\n" << d;
  EXPECT_EQ(count_lines(r.err), 1u) << d;
  EXPECT_TRUE(!r.err.empty() && r.err.back() == '\n') << d;
  EXPECT_NE(r.err.find(name), std::string::npos) << "stderr does not name the variable\n" << d;
  EXPECT_NE(r.err.find("\"" + value + "\""), std::string::npos)
      << "stderr does not show the value\n" << d;
}

// A good value: main() runs and the program exits 0.
void expect_accepted(const std::string &name, const std::string &value) {
  SCOPED_TRACE(name + "=\"" + value + "\"");
  child_result r = run({MMTIER_TIER_PROBE, "main"}, {name + "=" + value});
  const std::string d = describe(r);
  EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) << d;
  EXPECT_EQ(r.out, "main ran\n") << d;
  EXPECT_EQ(r.err.find("invalid"), std::string::npos) << d;
}

struct bad_case {
  const char *name;
  const char *value;
};

const bad_case kBad[] = {
    {"MMTIER_DRAM_RATIO", "abc"},
    {"MMTIER_DRAM_RATIO", "1:"},
    {"MMTIER_DRAM_RATIO", ":4"},
    {"MMTIER_DRAM_RATIO", "0:0"},
    {"MMTIER_DRAM_RATIO", "-1:4"},
    {"MMTIER_DRAM_RATIO", "1:4:5"},
    {"MMTIER_DRAM_RATIO", "1.5:4"},
    {"MMTIER_DRAM_RATIO", ""},
    {"MMTIER_DRAM_LIMIT", "12X"},
    {"MMTIER_DRAM_LIMIT", "-5"},
    {"MMTIER_DRAM_LIMIT", "1.5G"},
    {"MMTIER_DRAM_LIMIT", "99999999999999T"},
    {"MMTIER_DRAM_LIMIT", ""},
    {"MMTIER_PMEM_LIMIT", "12X"},
    {"MMTIER_PMEM_LIMIT", "-5"},
    {"MMTIER_PMEM_LIMIT", "1.5G"},
    {"MMTIER_PMEM_LIMIT", "99999999999999T"},
    {"MMTIER_PMEM_LIMIT", ""},
    {"MMTIER_PMEM_PATH", "/proc/self"},
    {"MMTIER_PMEM_PATH", ""},
    {"MMTIER_POLICY", "fastest"},
    {"MMTIER_POLICY", ""},
    {"MMTIER_PROMOTE", "2"},
    {"MMTIER_PROMOTE", "yes"},
    {"MMTIER_LOG", "verbose"},
    {"MMTIER_MMAP_THRESHOLD", "100"},
    {"MMTIER_MMAP_THRESHOLD", "x"},
};

void PrintTo(const bad_case &c, std::ostream *os) { *os << c.name << "=\"" << c.value << "\""; }

class BadValue : public ::testing::TestWithParam<bad_case> {};

TEST_P(BadValue, StopsBeforeMainWithOneLine) { expect_rejected(GetParam().name, GetParam().value); }

INSTANTIATE_TEST_SUITE_P(Env, BadValue, ::testing::ValuesIn(kBad),
                         [](const ::testing::TestParamInfo<bad_case> &i) {
                           std::string n = std::string(i.param.name + 7) + "_" + std::to_string(i.index);
                           for (char &c : n)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

TEST(ConfigEnv, PmemPathThatIsNotAWritableDirectory) {
  char dir[] = "/var/tmp/mmtier-cfg-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr) << strerror(errno);
  const std::string missing = std::string(dir) + "/does-not-exist";
  const std::string file = std::string(dir) + "/regular-file";
  { std::ofstream(file) << "x"; }
  expect_rejected("MMTIER_PMEM_PATH", missing);
  expect_rejected("MMTIER_PMEM_PATH", file);
  expect_rejected("MMTIER_PMEM_PATH", "/proc/self");
  // The library must not have created anything there.
  struct stat st;
  EXPECT_NE(stat(missing.c_str(), &st), 0);
  unlink(file.c_str());
  rmdir(dir);
}

struct good_case {
  const char *name;
  const char *value;
};

const good_case kGood[] = {
    {"MMTIER_DRAM_RATIO", "1:4"},      {"MMTIER_DRAM_RATIO", "0:1"},
    {"MMTIER_DRAM_RATIO", "1:0"},      {"MMTIER_DRAM_RATIO", "1000000:1"},
    {"MMTIER_DRAM_LIMIT", "512M"},     {"MMTIER_DRAM_LIMIT", "0"},
    {"MMTIER_DRAM_LIMIT", "none"},     {"MMTIER_DRAM_LIMIT", "2GiB"},
    {"MMTIER_PMEM_LIMIT", "64M"},      {"MMTIER_PMEM_LIMIT", "none"},
    {"MMTIER_PMEM_LIMIT", "0"},        {"MMTIER_PMEM_PATH", "/dev/shm"},
    {"MMTIER_PMEM_PATH", "/var/tmp"},  {"MMTIER_POLICY", "ratio"},
    {"MMTIER_POLICY", "dram-first"},   {"MMTIER_PROMOTE", "0"},
    {"MMTIER_PROMOTE", "1"},           {"MMTIER_LOG", "error"},
    {"MMTIER_LOG", "warn"},            {"MMTIER_LOG", "info"},
    {"MMTIER_LOG", "debug"},           {"MMTIER_REPORT", "off"},
    {"MMTIER_MMAP_THRESHOLD", "4096"}, {"MMTIER_MMAP_THRESHOLD", "64K"},
    {"MMTIER_MMAP_THRESHOLD", "1M"},
};

void PrintTo(const good_case &c, std::ostream *os) { *os << c.name << "=\"" << c.value << "\""; }

class GoodValue : public ::testing::TestWithParam<good_case> {};

TEST_P(GoodValue, MainRuns) { expect_accepted(GetParam().name, GetParam().value); }

INSTANTIATE_TEST_SUITE_P(Env, GoodValue, ::testing::ValuesIn(kGood),
                         [](const ::testing::TestParamInfo<good_case> &i) {
                           std::string n = std::string(i.param.name + 7) + "_" + std::to_string(i.index);
                           for (char &c : n)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

TEST(ConfigEnv, NoVariablesRunsQuietly) {
  child_result r = run({MMTIER_TIER_PROBE, "main"}, {});
  EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) << describe(r);
  EXPECT_EQ(r.out, "main ran\n") << describe(r);
  EXPECT_EQ(r.err, "") << describe(r);
}

TEST(ConfigEnv, UnknownVariableWarnsWithClosestName) {
  child_result r = run({MMTIER_TIER_PROBE, "main"}, {"MMTIER_DRAM_RATO=1:4"});
  const std::string d = describe(r);
  EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) << d;
  EXPECT_EQ(r.out, "main ran\n") << d;
  EXPECT_EQ(count_lines(r.err), 1u) << d;
  EXPECT_NE(r.err.find("MMTIER_DRAM_RATIO"), std::string::npos) << d;
}

// ---- secure execution ------------------------------------------------------

std::string field(const std::string &out, const std::string &key) {
  size_t p = out.find(key + "=");
  if (p == std::string::npos) return "";
  p += key.size() + 1;
  return out.substr(p, out.find('\n', p) - p);
}

bool copy_file(const std::string &from, const std::string &to) {
  std::ifstream in(from, std::ios::binary);
  std::ofstream out(to, std::ios::binary);
  out << in.rdbuf();
  return in.good() || in.eof() ? static_cast<bool>(out.flush()) : false;
}

TEST(ConfigEnv, SetuidProgramIgnoresEnvironment) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to make a setuid-nobody binary";
  struct passwd *nobody = getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  ASSERT_NE(nobody->pw_uid, 0u);

  // A directory on a filesystem mounted without nosuid.
  std::string parent;
  std::string probe_dir = MMTIER_LINKED_PROBE;
  probe_dir = probe_dir.substr(0, probe_dir.rfind('/'));
  for (const std::string &cand : {std::string("/var/tmp"), probe_dir}) {
    struct statvfs sv;
    if (statvfs(cand.c_str(), &sv) == 0 && !(sv.f_flag & ST_NOSUID)) {
      parent = cand;
      break;
    }
  }
  ASSERT_FALSE(parent.empty()) << "no directory without nosuid for the setuid copy";

  std::string tmpl = parent + "/mmtier-suid-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << strerror(errno);
  const std::string bin = tmpl + "/linked_probe";
  struct cleanup {
    std::string dir, file;
    ~cleanup() {
      unlink(file.c_str());
      rmdir(dir.c_str());
    }
  } remove_copy{tmpl, bin};
  ASSERT_EQ(chmod(tmpl.c_str(), 0755), 0);
  ASSERT_TRUE(copy_file(MMTIER_LINKED_PROBE, bin));
  ASSERT_EQ(chown(bin.c_str(), nobody->pw_uid, nobody->pw_gid), 0) << strerror(errno);
  ASSERT_EQ(chmod(bin.c_str(), 04755), 0) << strerror(errno);

  // Setuid: AT_SECURE, MMTIER_* ignored, even a garbage value.
  child_result r = run({bin, "limit"}, {"MMTIER_DRAM_LIMIT=garbage"}, false);
  EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) << describe(r);
  EXPECT_NE(r.out.find("main ran\n"), std::string::npos) << describe(r);
  EXPECT_EQ(field(r.out, "secure"), "1") << "not a secure-execution process\n" << describe(r);
  EXPECT_EQ(r.err.find("MMTIER_DRAM_LIMIT"), std::string::npos) << describe(r);

  r = run({bin, "limit"}, {"MMTIER_DRAM_LIMIT=64M"}, false);
  EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) << describe(r);
  EXPECT_EQ(field(r.out, "limit0"), std::to_string(SIZE_MAX)) << describe(r);

  // The same binary without the setuid bit does read the environment.
  ASSERT_EQ(chmod(bin.c_str(), 0755), 0);
  r = run({bin, "limit"}, {"MMTIER_DRAM_LIMIT=64M"}, false);
  EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) << describe(r);
  EXPECT_EQ(field(r.out, "secure"), "0") << describe(r);
  EXPECT_EQ(field(r.out, "limit0"), "67108864") << describe(r);

  r = run({bin, "limit"}, {"MMTIER_DRAM_LIMIT=garbage"}, false);
  EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 1) << describe(r);
  EXPECT_EQ(r.out, "") << describe(r);
}

}  // namespace
