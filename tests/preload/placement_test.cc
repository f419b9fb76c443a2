// Placement quality, measured in child processes running a mixed workload
// (small and medium objects, large mallocs and anonymous mmaps, all touched,
// some freed in the middle) under a given configuration: the DRAM share of
// resident managed memory follows MMTIER_DRAM_RATIO, MMTIER_DRAM_LIMIT caps
// DRAM with the rest on PMem, dram-first fills DRAM up to its limit, a full
// PMem tier spills to DRAM with one warning and no data loss, all of the
// workload's memory is managed, and MMTIER_REPORT writes the exit report.
#include "preload_api.h"

#include <sys/mount.h>
#include <unistd.h>

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace preload_test;

constexpr size_t kUnit = 2 * kMiB;

struct workload_result {
  bool ok = false;  // exited 0 and verified its data
  size_t live = 0, dram = 0, pmem = 0;
  size_t placed_dram = 0, placed_pmem = 0;  // units placed on each tier, in bytes
  exec_result child;

  double dram_share() const { return dram + pmem ? double(dram) / double(dram + pmem) : 0.0; }
};

size_t number_after(const std::string &s, const std::string &key) {
  size_t p = s.find(key + "=");
  return p == std::string::npos ? 0 : std::strtoull(s.c_str() + p + key.size() + 1, nullptr, 10);
}

workload_result run_workload(size_t mib, const std::vector<std::string> &env) {
  workload_result w;
  w.child = run_tier_probe({"workload", std::to_string(mib)}, env);
  const exec_result &c = w.child;
  w.ok = exited_with(c.status, 0) && c.out.find("verified\n") != std::string::npos;
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

// One tier is capped at limit: it holds at most the limit (plus a unit),
// the other tier the rest of the live memory, and all of it is managed.
void expect_capped(const workload_result &w, size_t capped, size_t limit, size_t other,
                   const char *shortfall_message) {
  EXPECT_LE(capped, limit + kUnit) << describe(w.child);
  EXPECT_GE(double(other), 0.95 * double(w.live) - double(limit + kUnit))
      << shortfall_message << "\n" << describe(w.child);
  expect_managed(w);
}

TEST(Placement, DramLimitCapsDramRestOnPmem) {
  const size_t limit = 256 * kMiB;
  workload_result w = run_workload(1024, {"MMTIER_DRAM_RATIO=1:1", "MMTIER_DRAM_LIMIT=256M"});
  ASSERT_TRUE(w.ok) << describe(w.child);
  expect_capped(w, w.dram, limit, w.pmem, "PMem does not hold the memory beyond the DRAM limit");
}

TEST(Placement, DramFirstFillsDramToLimit) {
  const size_t limit = 512 * kMiB;
  workload_result w = run_workload(1024, {"MMTIER_POLICY=dram-first", "MMTIER_DRAM_LIMIT=512M"});
  ASSERT_TRUE(w.ok) << describe(w.child);
  expect_capped(w, w.dram, limit, w.pmem, "PMem does not hold the memory beyond the DRAM limit");
  // DRAM's whole budget is placed; what is resident of it depends on how
  // full the engine keeps those units after the workload's frees.
  EXPECT_GE(w.placed_dram, limit - kUnit) << "DRAM not filled to its limit\n" << describe(w.child);
  EXPECT_LE(w.placed_dram, limit + kUnit) << describe(w.child);
  EXPECT_GE(w.dram, limit / 2) << "DRAM units placed but mostly empty\n" << describe(w.child);
}

TEST(Placement, FullPmemSpillsToDramWithOneWarning) {
  const size_t pmem_limit = 64 * kMiB;
  workload_result w = run_workload(512, {"MMTIER_DRAM_RATIO=1:9", "MMTIER_PMEM_LIMIT=64M"});
  ASSERT_TRUE(w.ok) << "program failed or data was not verified\n" << describe(w.child);
  EXPECT_EQ(count_lines(w.child.err), 1u) << describe(w.child);
  EXPECT_NE(w.child.err.find("PMem"), std::string::npos) << describe(w.child);
  expect_capped(w, w.pmem, pmem_limit, w.dram, "DRAM does not hold the excess");
}

// A 48 MiB tmpfs mounted on a fresh directory, gone with the object.
struct small_tmpfs {
  char dir[32] = "/tmp/mmtier-small-XXXXXX";
  bool made = false, is_mounted = false;
  small_tmpfs() {
    made = mkdtemp(dir) != nullptr;
    is_mounted = made && mount("tmpfs", dir, "tmpfs", 0, "size=48m") == 0;
  }
  ~small_tmpfs() { unmount(); }
  bool mounted() const { return is_mounted; }
  void unmount() {
    if (is_mounted) umount(dir);
    if (made) rmdir(dir);
    is_mounted = made = false;
  }
};

// A PMem directory whose filesystem really fills up (a 48 MiB tmpfs): the
// program completes with its data intact, one warning, and DRAM holds the
// rest.  Storage is allocated with fallocate at a unit's first touch (or
// at placement), so a full filesystem sends the unit to DRAM then, never
// SIGBUS.
TEST(Placement, FullPmemFilesystemSpillsToDramWithOneWarning) {
  if (geteuid() != 0) GTEST_SKIP() << "mounting a small tmpfs needs root";
  small_tmpfs fs;
  if (!fs.mounted()) GTEST_SKIP() << "cannot mount tmpfs here";
  workload_result w = run_workload(384, {"MMTIER_DRAM_RATIO=1:9", std::string("MMTIER_PMEM_PATH=") + fs.dir});
  fs.unmount();
  ASSERT_TRUE(w.ok) << "program failed or data was not verified\n" << describe(w.child);
  EXPECT_EQ(count_lines(w.child.err), 1u) << describe(w.child);
  EXPECT_NE(w.child.err.find("PMem"), std::string::npos) << describe(w.child);
  EXPECT_LE(w.pmem, 48 * kMiB) << describe(w.child);
  EXPECT_GE(double(w.dram), 0.9 * double(w.live) - double(48 * kMiB)) << describe(w.child);
}

// Memory allocated and not used takes no PMem storage (as anonymous memory
// takes no RAM): a 1 GiB block of which one page in 64 units is written
// fits a 48 MiB tmpfs, without a warning; with storage at placement
// (MMTIER_PMEM_RESERVE=place) the same block fills it.
TEST(Placement, UntouchedMemoryTakesNoPmemStorage) {
  if (geteuid() != 0) GTEST_SKIP() << "mounting a small tmpfs needs root";
  small_tmpfs fs;
  if (!fs.mounted()) GTEST_SKIP() << "cannot mount tmpfs here";
  const std::string path = std::string("MMTIER_PMEM_PATH=") + fs.dir;
  exec_result touch = run_tier_probe({"sparse", "1024", fs.dir}, {"MMTIER_DRAM_RATIO=1:9", path});
  exec_result place =
      run_tier_probe({"sparse", "1024", fs.dir}, {"MMTIER_DRAM_RATIO=1:9", "MMTIER_PMEM_RESERVE=place", path});
  fs.unmount();
  ASSERT_TRUE(exited_with(touch.status, 0)) << describe(touch);
  EXPECT_NE(touch.out.find("verified\n"), std::string::npos) << describe(touch);
  EXPECT_EQ(touch.err, "") << describe(touch);
  // 8 units touched, at most 7 of them on PMem.
  EXPECT_LE(number_after(touch.out, "used"), 16 * kMiB) << describe(touch);
  ASSERT_TRUE(exited_with(place.status, 0)) << describe(place);
  EXPECT_NE(place.out.find("verified\n"), std::string::npos) << describe(place);
  EXPECT_NE(place.err.find("PMem tier is full"), std::string::npos) << describe(place);
  EXPECT_GE(number_after(place.out, "used"), 40 * kMiB) << describe(place);
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
