// PMU event selection (lib/track/pmu_events): sysfs format lines and CPU
// lists, and the event plans built from fake sysfs trees for Intel (plain
// and hybrid) and AMD IBS, and for machines without a usable PMU.
#include "track/pmu_events.h"

#include "pmu_test_util.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

namespace mmtier::detail {
namespace {

using pmu_test::fake_sysfs;

void intel_pmu(fake_sysfs &fs, const std::string &pmu, int type) {
  fs.pmu(pmu, "type", std::to_string(type) + "\n");
  fs.pmu(pmu, "format/event", "config:0-7\n");
  fs.pmu(pmu, "format/umask", "config:8-15\n");
  fs.pmu(pmu, "format/ldlat", "config1:0-15\n");
}

TEST(PmuSysfs, FormatLinesPlaceValuesBitByBit) {
  uint64_t cfg[3] = {};
  EXPECT_TRUE(pmu_apply_format("config:0-7\n", 0xcd, cfg));
  EXPECT_TRUE(pmu_apply_format("config:8-15", 0x01, cfg));
  EXPECT_EQ(cfg[0], 0x1cdu);
  EXPECT_TRUE(pmu_apply_format("config1:0-15\n", 64, cfg));
  EXPECT_EQ(cfg[1], 64u);
  EXPECT_TRUE(pmu_apply_format("config2:0\n", 1, cfg));
  EXPECT_EQ(cfg[2], 1u);
  uint64_t split[3] = {};
  EXPECT_TRUE(pmu_apply_format("config:0-7,32-35", 0x5cd, split));
  EXPECT_EQ(split[0], 0x5000000cdu);
  uint64_t one[3] = {};
  EXPECT_TRUE(pmu_apply_format("config:19", 1, one));
  EXPECT_EQ(one[0], uint64_t{1} << 19);
  EXPECT_FALSE(pmu_apply_format("config:19", 2, one)) << "does not fit";
  EXPECT_FALSE(pmu_apply_format("config3:0", 1, one));
  EXPECT_FALSE(pmu_apply_format("bogus:0-3", 1, one));
  EXPECT_FALSE(pmu_apply_format("config:9-3", 1, one));
  EXPECT_FALSE(pmu_apply_format("config:0-64", 1, one));
  EXPECT_EQ(one[0], uint64_t{1} << 19) << "failures leave cfg alone";
}

TEST(PmuSysfs, CpuListsParse) {
  pmu_cpu_set s;
  ASSERT_TRUE(pmu_parse_cpu_list("0-3,8,10-11\n", &s));
  EXPECT_EQ(s.count(), 7u);
  EXPECT_TRUE(s.has(3));
  EXPECT_TRUE(s.has(8));
  EXPECT_FALSE(s.has(9));
  EXPECT_TRUE(s.has(11));
  ASSERT_TRUE(pmu_parse_cpu_list("\n", &s));
  EXPECT_EQ(s.count(), 0u);
  ASSERT_TRUE(pmu_parse_cpu_list("250-300", &s));
  EXPECT_EQ(s.count(), 6u) << "CPUs past kPmuMaxCpus are dropped";
  EXPECT_FALSE(pmu_parse_cpu_list("0-x", &s));
  EXPECT_FALSE(pmu_parse_cpu_list("3-1", &s));
}

TEST(PmuSysfs, IntelPlanUsesTheKernelsEncodingsAndOurLatencyThreshold) {
  fake_sysfs fs;
  fs.write("devices/system/cpu/online", "0-3\n");
  intel_pmu(fs, "cpu", 4);
  fs.pmu("cpu", "events/mem-loads", "event=0xcd,umask=0x1,ldlat=3\n");
  fs.pmu("cpu", "events/mem-stores", "event=0xd0,umask=0x82\n");
  pmu_params p;
  p.sysfs_root = fs.root();
  p.load_latency_cycles = 64;
  pmu_plan plan;
  char why[256] = "";
  ASSERT_EQ(pmu_plan_events(p, &plan, why, sizeof why), pmu_status::ok) << why;
  EXPECT_EQ(plan.vendor, pmu_vendor::intel);
  ASSERT_EQ(plan.n, 2u);
  EXPECT_EQ(plan.ev[0].kind, pmu_kind::load);
  EXPECT_EQ(plan.ev[0].type, 4u);
  EXPECT_EQ(plan.ev[0].config[0], 0x1cdu);  // MEM_TRANS_RETIRED.LOAD_LATENCY
  EXPECT_EQ(plan.ev[0].config[1], 64u);     // ldlat
  EXPECT_EQ(plan.ev[0].period, p.load_period);
  EXPECT_FALSE(plan.ev[0].aux_leader);
  EXPECT_EQ(plan.ev[0].max_precise, 3);
  EXPECT_TRUE(plan.ev[0].exclude_ok);
  EXPECT_EQ(plan.ev[0].cpus.count(), 4u);
  EXPECT_EQ(plan.ev[1].kind, pmu_kind::store);
  EXPECT_EQ(plan.ev[1].config[0], 0x82d0u);  // MEM_INST_RETIRED.ALL_STORES
  EXPECT_EQ(plan.ev[1].period, p.store_period);

  // Sapphire Rapids lists mem-loads-aux: a counting group leader.
  fs.pmu("cpu", "events/mem-loads-aux", "event=0x03,umask=0x82\n");
  ASSERT_EQ(pmu_plan_events(p, &plan, why, sizeof why), pmu_status::ok) << why;
  EXPECT_TRUE(plan.ev[0].aux_leader);
  EXPECT_EQ(plan.ev[0].aux_config[0], 0x8203u);

  // A term with no format file: the event is not understood.
  fs.pmu("cpu", "events/mem-loads", "event=0xcd,umask=0x1,frontend=0x7\n");
  EXPECT_EQ(pmu_plan_events(p, &plan, why, sizeof why), pmu_status::unsupported_event);
  EXPECT_NE(std::string(why).find("frontend"), std::string::npos) << why;
}

TEST(PmuSysfs, HybridIntelGetsEventsPerCoreType) {
  fake_sysfs fs;
  fs.write("devices/system/cpu/online", "0-15\n");
  intel_pmu(fs, "cpu_core", 4);
  fs.pmu("cpu_core", "cpus", "0-7\n");
  fs.pmu("cpu_core", "events/mem-loads", "event=0xcd,umask=0x1,ldlat=3\n");
  fs.pmu("cpu_core", "events/mem-stores", "event=0xcd,umask=0x2\n");
  intel_pmu(fs, "cpu_atom", 10);
  fs.pmu("cpu_atom", "cpus", "8-15\n");
  fs.pmu("cpu_atom", "events/mem-loads", "event=0xd0,umask=0x5,ldlat=3\n");
  fs.pmu("cpu_atom", "events/mem-stores", "event=0xd0,umask=0x6\n");
  pmu_params p;
  p.sysfs_root = fs.root();
  pmu_plan plan;
  char why[256] = "";
  ASSERT_EQ(pmu_plan_events(p, &plan, why, sizeof why), pmu_status::ok) << why;
  ASSERT_EQ(plan.n, 4u);
  EXPECT_EQ(plan.ev[0].type, 4u);
  EXPECT_TRUE(plan.ev[0].cpus.has(7));
  EXPECT_FALSE(plan.ev[0].cpus.has(8));
  EXPECT_EQ(plan.ev[1].config[0], 0x2cdu);
  EXPECT_EQ(plan.ev[2].type, 10u);
  EXPECT_EQ(plan.ev[2].config[0], 0x5d0u);
  EXPECT_EQ(plan.ev[2].config[1], p.load_latency_cycles);
  EXPECT_TRUE(plan.ev[2].cpus.has(8));
  EXPECT_FALSE(plan.ev[2].cpus.has(7));
  EXPECT_EQ(plan.ev[3].kind, pmu_kind::store);
}

TEST(PmuSysfs, AmdPlanUsesIbsOp) {
  fake_sysfs fs;
  fs.write("devices/system/cpu/online", "0-1\n");
  fs.pmu("ibs_op", "type", "11\n");
  fs.pmu("ibs_op", "format/cnt_ctl", "config:19\n");
  fs.pmu("ibs_op", "format/l3missonly", "config:16\n");
  pmu_params p;
  p.sysfs_root = fs.root();
  p.ibs_period = 65537;
  pmu_plan plan;
  char why[256] = "";
  ASSERT_EQ(pmu_plan_events(p, &plan, why, sizeof why), pmu_status::ok) << why;
  EXPECT_EQ(plan.vendor, pmu_vendor::amd_ibs);
  ASSERT_EQ(plan.n, 1u);
  EXPECT_EQ(plan.ev[0].kind, pmu_kind::mixed);
  EXPECT_EQ(plan.ev[0].type, 11u);
  EXPECT_EQ(plan.ev[0].config[0], (uint64_t{1} << 19) | (uint64_t{1} << 16));
  EXPECT_EQ(plan.ev[0].period, 65536u) << "IBS periods are multiples of 16";
  EXPECT_FALSE(plan.ev[0].exclude_ok) << "IBS without swfilt refuses exclude_*";
  EXPECT_EQ(plan.ev[0].max_precise, 0);
  EXPECT_EQ(plan.ev[0].cpus.count(), 2u);

  p.ibs_l3_miss_only = false;
  fs.pmu("ibs_op", "format/swfilt", "config2:0\n");
  ASSERT_EQ(pmu_plan_events(p, &plan, why, sizeof why), pmu_status::ok) << why;
  EXPECT_EQ(plan.ev[0].config[0], uint64_t{1} << 19);
  EXPECT_EQ(plan.ev[0].config[2], 1u);
  EXPECT_TRUE(plan.ev[0].exclude_ok);
}

TEST(PmuSysfs, NoPmuAndPmuWithoutMemoryEventsAreTold) {
  fake_sysfs fs;
  fs.write("devices/system/cpu/online", "0\n");
  pmu_params p;
  p.sysfs_root = fs.root();
  pmu_plan plan;
  char why[256] = "";
  EXPECT_EQ(pmu_plan_events(p, &plan, why, sizeof why), pmu_status::no_pmu);
  EXPECT_NE(std::string(why).find("no PEBS or IBS"), std::string::npos) << why;
  intel_pmu(fs, "cpu", 4);  // a core PMU, no mem-loads (e.g. a VM with a partial vPMU)
  EXPECT_EQ(pmu_plan_events(p, &plan, why, sizeof why), pmu_status::unsupported_event);
  EXPECT_NE(std::string(why).find("mem-loads"), std::string::npos) << why;
  fake_sysfs empty;  // not even a CPU list
  p.sysfs_root = empty.root();
  EXPECT_EQ(pmu_plan_events(p, &plan, why, sizeof why), pmu_status::invalid_argument);
}

}  // namespace
}  // namespace mmtier::detail
