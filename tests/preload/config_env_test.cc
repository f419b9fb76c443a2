// Configuration from the environment, seen from outside the process: every
// MMTIER_* variable with a bad value stops the program before main() with
// exit status 1 and exactly one stderr line naming the variable and the
// value; good values let main() run; an unknown MMTIER_* name gets one
// warning naming the closest known variable; a setuid program (secure
// execution) ignores MMTIER_* altogether.
#include "preload_api.h"

#include <pwd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cctype>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace {

using namespace preload_test;

// A bad value: exit 1, no main(), one stderr line with NAME and "value".
void expect_rejected(const std::string &name, const std::string &value) {
  SCOPED_TRACE(name + "=\"" + value + "\"");
  exec_result r = run_tier_probe({"main"}, {name + "=" + value});
  const std::string d = describe(r);
  EXPECT_TRUE(exited_with(r.status, 1)) << d;
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
  exec_result r = run_tier_probe({"main"}, {name + "=" + value});
  const std::string d = describe(r);
  EXPECT_TRUE(exited_with(r.status, 0)) << d;
  EXPECT_EQ(r.out, "main ran\n") << d;
  EXPECT_EQ(r.err.find("invalid"), std::string::npos) << d;
}

// One NAME=value setting; a parameter of the BadValue and GoodValue tests.
struct env_case {
  const char *name;
  const char *value;
};

void PrintTo(const env_case &c, std::ostream *os) { *os << c.name << "=\"" << c.value << "\""; }

// The test name's suffix: the variable's name without MMTIER_, and the index.
std::string case_name(const ::testing::TestParamInfo<env_case> &i) {
  std::string n = std::string(i.param.name + 7) + "_" + std::to_string(i.index);
  for (char &c : n)
    if (!isalnum(static_cast<unsigned char>(c))) c = '_';
  return n;
}

const env_case kBad[] = {
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

class BadValue : public ::testing::TestWithParam<env_case> {};

TEST_P(BadValue, StopsBeforeMainWithOneLine) { expect_rejected(GetParam().name, GetParam().value); }

INSTANTIATE_TEST_SUITE_P(Env, BadValue, ::testing::ValuesIn(kBad), case_name);

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

const env_case kGood[] = {
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

class GoodValue : public ::testing::TestWithParam<env_case> {};

TEST_P(GoodValue, MainRuns) { expect_accepted(GetParam().name, GetParam().value); }

INSTANTIATE_TEST_SUITE_P(Env, GoodValue, ::testing::ValuesIn(kGood), case_name);

TEST(ConfigEnv, NoVariablesRunsQuietly) {
  exec_result r = run_tier_probe({"main"});
  EXPECT_TRUE(exited_with(r.status, 0)) << describe(r);
  EXPECT_EQ(r.out, "main ran\n") << describe(r);
  EXPECT_EQ(r.err, "") << describe(r);
}

TEST(ConfigEnv, UnknownVariableWarnsWithClosestName) {
  exec_result r = run_tier_probe({"main"}, {"MMTIER_DRAM_RATO=1:4"});
  const std::string d = describe(r);
  EXPECT_TRUE(exited_with(r.status, 0)) << d;
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

  // The copy, not preloaded (it links the API), with one MMTIER_* setting.
  auto run_copy = [&bin](const char *setting) {
    return run_program(bin, {bin, "limit"}, plain_environment({setting}));
  };

  // Setuid: AT_SECURE, MMTIER_* ignored, even a garbage value.
  exec_result r = run_copy("MMTIER_DRAM_LIMIT=garbage");
  EXPECT_TRUE(exited_with(r.status, 0)) << describe(r);
  EXPECT_NE(r.out.find("main ran\n"), std::string::npos) << describe(r);
  EXPECT_EQ(field(r.out, "secure"), "1") << "not a secure-execution process\n" << describe(r);
  EXPECT_EQ(r.err.find("MMTIER_DRAM_LIMIT"), std::string::npos) << describe(r);

  r = run_copy("MMTIER_DRAM_LIMIT=64M");
  EXPECT_TRUE(exited_with(r.status, 0)) << describe(r);
  EXPECT_EQ(field(r.out, "limit0"), std::to_string(SIZE_MAX)) << describe(r);

  // The same binary without the setuid bit does read the environment.
  ASSERT_EQ(chmod(bin.c_str(), 0755), 0);
  r = run_copy("MMTIER_DRAM_LIMIT=64M");
  EXPECT_TRUE(exited_with(r.status, 0)) << describe(r);
  EXPECT_EQ(field(r.out, "secure"), "0") << describe(r);
  EXPECT_EQ(field(r.out, "limit0"), "67108864") << describe(r);

  r = run_copy("MMTIER_DRAM_LIMIT=garbage");
  EXPECT_TRUE(exited_with(r.status, 1)) << describe(r);
  EXPECT_EQ(r.out, "") << describe(r);
}

}  // namespace
