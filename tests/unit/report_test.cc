// Stats layer (lib/stats/report.cc): the stats struct follows the heap's
// counters, and the report names both tiers and their budgets.
#include "api/runtime.h"
#include "heap/heap.h"
#include "stats/report.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

namespace mmtier::detail {
namespace {

std::string report_text() {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  EXPECT_EQ(write_report(fds[1]), 0);
  close(fds[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  return text;
}

TEST(Report, StatsFollowPlacementsAndTheReportShowsThem) {
  ASSERT_EQ(runtime_start(), kReady);
  mmtier_stats before;
  stats_fill(&before, true);
  EXPECT_EQ(before.unit_size, kUnitSize);
  const size_t n = 4 * kUnitSize;
  char *p = static_cast<char *>(heap_engine_reserve(nullptr, n, kUnitSize, kTierPmem));
  ASSERT_NE(p, nullptr);
  ASSERT_EQ(heap_commit(p, n), 0);
  for (size_t i = 0; i < n; i += 4096) p[i] = 1;
  mmtier_stats after;
  stats_fill(&after, true);
  EXPECT_EQ(after.units[kTierPmem], before.units[kTierPmem] + 4);
  EXPECT_GE(after.peak_units[kTierPmem], after.units[kTierPmem]);
  EXPECT_GE(after.resident_bytes[kTierPmem], before.resident_bytes[kTierPmem] + n - kUnitSize);
  EXPECT_EQ(after.limit_bytes[kTierDram], SIZE_MAX);

  const std::string text = report_text();
  EXPECT_NE(text.find("mmtier report (pid "), std::string::npos) << text;
  EXPECT_NE(text.find("\n  DRAM "), std::string::npos) << text;
  EXPECT_NE(text.find("\n  PMem "), std::string::npos) << text;
  EXPECT_NE(text.find("none"), std::string::npos) << "no budget is shown as none\n" << text;
  EXPECT_NE(text.find("DRAM share:"), std::string::npos) << text;
  heap_engine_release(p, n);
}

}  // namespace
}  // namespace mmtier::detail
