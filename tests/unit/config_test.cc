// Unit tests for lib/config: the value parsers, config_parse over constructed
// environments (defaults, every good and bad value, secure mode, unknown
// names), closest_option, and config_load's exit on a bad value.
#include "config/config.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace mmtier::detail {
namespace {

constexpr size_t K = 1024, M = K * 1024, G = M * 1024, T = G * 1024;

// --- parse_size --------------------------------------------------------------

TEST(ConfigParseSize, AcceptsDecimalWithSuffixes) {
  const std::pair<const char *, size_t> cases[] = {
      {"0", 0},
      {"1", 1},
      {"4096", 4096},
      {"007", 7},
      {"4096B", 4096},
      {"64K", 64 * K},
      {"64k", 64 * K},
      {"64KB", 64 * K},
      {"64KiB", 64 * K},
      {"64kib", 64 * K},
      {"512M", 512 * M},
      {"512MiB", 512 * M},
      {"512MB", 512 * M},
      {"512mb", 512 * M},
      {"2G", 2 * G},
      {"2g", 2 * G},
      {"2GiB", 2 * G},
      {"1T", T},
      {"3t", 3 * T},
      {"0G", 0},
      {"18446744073709551615", SIZE_MAX},
      {"16777215T", 16777215 * T},  // largest whole number of TiB
  };
  for (const auto &[text, want] : cases) {
    size_t got = 12345;
    EXPECT_TRUE(parse_size(text, &got)) << text;
    EXPECT_EQ(got, want) << text;
  }
}

TEST(ConfigParseSize, RejectsJunk) {
  const char *cases[] = {
      "",       "-1",         "+1",          " 1",          "1 ",         "1.5G",
      "1,5G",   "0x10",       "G",           "K1",          "1KK",        "1Q",
      "1GiBB",  "1iB",        "1Bi",         "1Gi",         "abc",        "12abc",
      "1e9",    "99999999999T", "16777216T", "18446744073709551616", "99999999999999999999",
      "18014398509481984K",
  };
  for (const char *text : cases) {
    size_t got = 12345;
    EXPECT_FALSE(parse_size(text, &got)) << '"' << text << '"';
    EXPECT_EQ(got, 12345u) << "output changed on failure for " << text;
  }
}

// --- parse_ratio -------------------------------------------------------------

TEST(ConfigParseRatio, AcceptsGood) {
  const std::tuple<const char *, uint32_t, uint32_t> cases[] = {
      {"1:4", 1, 4},       {"0:1", 0, 1},   {"1:0", 1, 0},          {"3:2", 3, 2},
      {"10:90", 10, 90},   {"01:04", 1, 4}, {"1000000:1000000", 1000000, 1000000},
  };
  for (const auto &[text, d, p] : cases) {
    uint32_t gd = 99, gp = 99;
    EXPECT_TRUE(parse_ratio(text, &gd, &gp)) << text;
    EXPECT_EQ(gd, d) << text;
    EXPECT_EQ(gp, p) << text;
  }
}

TEST(ConfigParseRatio, RejectsBad) {
  const char *cases[] = {
      "",        "1",        "1:",      ":4",         "0:0",      "00:000",  "1:4:5",
      "1/4",     "1 :4",     "1: 4",    " 1:4",       "1:4 ",     "-1:4",    "1:+4",
      "1.5:4",   "a:b",      "1:4x",    "1000001:1",  "1:1000001", "4294967297:1",
      "99999999999999999999:1",
  };
  for (const char *text : cases) {
    uint32_t d = 99, p = 99;
    EXPECT_FALSE(parse_ratio(text, &d, &p)) << '"' << text << '"';
    EXPECT_EQ(d, 99u) << text;
    EXPECT_EQ(p, 99u) << text;
  }
}

// --- closest_option ----------------------------------------------------------

TEST(ConfigClosestOption, SuggestsNearNames) {
  EXPECT_STREQ(closest_option("MMTIER_DRAM_RATO"), "MMTIER_DRAM_RATIO");
  EXPECT_STREQ(closest_option("MMTIER_DRAM_RATIO"), "MMTIER_DRAM_RATIO");
  EXPECT_STREQ(closest_option("MMTIER_DRAM_RATOI"), "MMTIER_DRAM_RATIO");  // transposition
  EXPECT_STREQ(closest_option("MMTIER_DRAM_RATIOS"), "MMTIER_DRAM_RATIO");
  EXPECT_STREQ(closest_option("MMTIER_PMEM_LIMT"), "MMTIER_PMEM_LIMIT");
  EXPECT_STREQ(closest_option("MMTIER_POLCY"), "MMTIER_POLICY");
  EXPECT_STREQ(closest_option("MMTIER_PROMOTION"), "MMTIER_PROMOTE");
  EXPECT_STREQ(closest_option("MMTIER_LGO"), "MMTIER_LOG");
  EXPECT_STREQ(closest_option("MMTIER_REPROT"), "MMTIER_REPORT");
  EXPECT_STREQ(closest_option("MMTIER_MMAP_THRESHOLD_"), "MMTIER_MMAP_THRESHOLD");
  EXPECT_STREQ(closest_option("MMTIER_pmem_path"), "MMTIER_PMEM_PATH");  // case only
}

TEST(ConfigClosestOption, NothingCloseGivesNull) {
  EXPECT_EQ(closest_option("MMTIER_XYZZY_FOO"), nullptr);
  EXPECT_EQ(closest_option("MMTIER_ABCD"), nullptr);
  EXPECT_EQ(closest_option(""), nullptr);
  EXPECT_EQ(closest_option("MMTIER_DRAM_RATIO_AND_MORE_AND_MORE"), nullptr);
  std::string huge(10000, 'M');
  EXPECT_EQ(closest_option(huge.c_str()), nullptr);
}

// --- option table ------------------------------------------------------------

TEST(ConfigOptions, TableIsComplete) {
  size_t n = 0;
  const option_info *opts = config_options(&n);
  ASSERT_NE(opts, nullptr);
  std::set<std::string> names;
  for (size_t i = 0; i < n; i++) {
    ASSERT_NE(opts[i].name, nullptr);
    ASSERT_NE(opts[i].default_text, nullptr);
    ASSERT_NE(opts[i].accepted, nullptr);
    ASSERT_NE(opts[i].doc, nullptr);
    EXPECT_EQ(std::string(opts[i].name).rfind("MMTIER_", 0), 0u) << opts[i].name;
    EXPECT_GT(std::strlen(opts[i].default_text), 0u) << opts[i].name;
    EXPECT_GT(std::strlen(opts[i].accepted), 0u) << opts[i].name;
    std::string doc = opts[i].doc;
    ASSERT_FALSE(doc.empty()) << opts[i].name;
    EXPECT_EQ(doc.back(), '.') << opts[i].name;
    EXPECT_TRUE(names.insert(opts[i].name).second) << "duplicate " << opts[i].name;
  }
  const std::set<std::string> expected = {
      "MMTIER_DRAM_RATIO", "MMTIER_DRAM_LIMIT", "MMTIER_PMEM_LIMIT",
      "MMTIER_PMEM_PATH",  "MMTIER_PMEM_RESERVE", "MMTIER_POLICY",     "MMTIER_PROMOTE",
      "MMTIER_LOG",        "MMTIER_REPORT",     "MMTIER_MMAP_THRESHOLD",
      "MMTIER_MIGRATE_MBPS", "MMTIER_SCAN_INTERVAL", "MMTIER_STATS_DIR", "MMTIER_HIDE_FEATURES",
      "MMTIER_SNAPSHOT_DIR", "MMTIER_SNAPSHOT_SIGNAL", "MMTIER_SNAPSHOT_CHAIN",
      "MMTIER_SNAPSHOT_EVERY", "MMTIER_SNAPSHOT_KEEP", "MMTIER_SLOW_NODE", "MMTIER_AGENT_SOCKET",
      "MMTIER_QOS_CLASS", "MMTIER_QOS_DRAM", "MMTIER_QOS_WEIGHT", "MMTIER_HUGE_PAGES",
      "MMTIER_BACKGROUND_AT", "MMTIER_CHECK_MOVES",
  };
  EXPECT_EQ(names, expected);
}

TEST(ConfigParse, SnapshotSignal) {
  config c;
  config_error e;
  for (const auto &[value, sig] : std::vector<std::pair<const char *, int>>{
           {"TERM", 15}, {"SIGTERM", 15}, {"USR2", 12}, {"HUP", 1}, {"PWR", 30}, {"40", 40}, {"15", 15}, {"none", 0}}) {
    const std::string env = std::string("MMTIER_SNAPSHOT_SIGNAL=") + value;
    const char *set[] = {env.c_str(), nullptr};
    ASSERT_TRUE(config_parse(const_cast<char *const *>(set), false, &c, &e, nullptr)) << value << ": " << e.line;
    EXPECT_EQ(c.snapshot_signal, sig) << value;
  }
  for (const char *value : {"KILL", "9", "64", "SEGV", "11", "0", "TERM2", "", "sigterm"}) {
    const std::string env = std::string("MMTIER_SNAPSHOT_SIGNAL=") + value;
    const char *set[] = {env.c_str(), nullptr};
    EXPECT_FALSE(config_parse(const_cast<char *const *>(set), false, &c, &e, nullptr)) << value;
  }
}

TEST(ConfigParse, SnapshotEveryKeepAndChain) {
  config c;
  config_error e;
  auto parse = [&](const std::string &entry) {
    const char *set[] = {entry.c_str(), nullptr};
    return config_parse(const_cast<char *const *>(set), false, &c, &e, nullptr);
  };
  EXPECT_EQ(c.snapshot_every_ns, 0u);
  EXPECT_EQ(c.snapshot_keep, 10u);
  EXPECT_EQ(c.snapshot_chain, 8u);
  for (const auto &[value, s] : std::vector<std::pair<const char *, uint64_t>>{
           {"1s", 1}, {"30s", 30}, {"10m", 600}, {"24h", 86400}, {"86400s", 86400}, {"off", 0}}) {
    ASSERT_TRUE(parse(std::string("MMTIER_SNAPSHOT_EVERY=") + value)) << value << ": " << e.line;
    EXPECT_EQ(c.snapshot_every_ns, s * 1000000000ull) << value;
  }
  for (const char *value : {"0s", "25h", "86401s", "100ms", "10", "s", "1d", "", "-1s", "99999999999999999999s"})
    EXPECT_FALSE(parse(std::string("MMTIER_SNAPSHOT_EVERY=") + value)) << value;
  EXPECT_STREQ(e.line, "invalid MMTIER_SNAPSHOT_EVERY=\"99999999999999999999s\": expected off, or a duration from 1s "
                       "to 24h with an s, m or h suffix (e.g. 30s, 10m)");
  ASSERT_TRUE(parse("MMTIER_SNAPSHOT_KEEP=1"));
  EXPECT_EQ(c.snapshot_keep, 1u);
  ASSERT_TRUE(parse("MMTIER_SNAPSHOT_KEEP=10000"));
  EXPECT_EQ(c.snapshot_keep, 10000u);
  for (const char *value : {"0", "10001", "", "x", "5 "}) EXPECT_FALSE(parse(std::string("MMTIER_SNAPSHOT_KEEP=") + value));
  ASSERT_TRUE(parse("MMTIER_SNAPSHOT_CHAIN=1"));
  EXPECT_EQ(c.snapshot_chain, 1u);
  ASSERT_TRUE(parse("MMTIER_SNAPSHOT_CHAIN=16"));
  EXPECT_EQ(c.snapshot_chain, 16u);
  for (const char *value : {"0", "17", "", "8x"}) EXPECT_FALSE(parse(std::string("MMTIER_SNAPSHOT_CHAIN=") + value));
}

TEST(ConfigParse, SnapshotDir) {
  config c;
  config_error e;
  const char *set[] = {"HOME=/home/u", "MMTIER_SNAPSHOT_DIR=/srv/capsules", nullptr};
  ASSERT_TRUE(config_parse(const_cast<char *const *>(set), false, &c, &e, nullptr)) << e.line;
  EXPECT_STREQ(c.snapshot_dir, "/srv/capsules");
  const char *bad[] = {"MMTIER_SNAPSHOT_DIR=capsules", nullptr};
  ASSERT_FALSE(config_parse(const_cast<char *const *>(bad), false, &c, &e, nullptr));
  EXPECT_STREQ(e.line, "invalid MMTIER_SNAPSHOT_DIR=\"capsules\": expected an absolute directory path");
  if (geteuid() == 0) {
    const char *home[] = {"HOME=/home/u", nullptr};
    ASSERT_TRUE(config_parse(const_cast<char *const *>(home), false, &c, &e, nullptr));
    EXPECT_STREQ(c.snapshot_dir, "/var/lib/mmtier/capsules");
  }
  // As a user (in a child, as uid 65534 when this runs as root): the user's
  // state directory, XDG first (if absolute), then HOME's; none for a
  // secure-execution process, which reads no environment, or without HOME.
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (geteuid() == 0 && seteuid(65534) != 0) _exit(100);
    int bad = 0;
    const char *xdg[] = {"HOME=/home/u", "XDG_STATE_HOME=/state", nullptr};
    const char *rel[] = {"XDG_STATE_HOME=state", "HOME=/home/u", nullptr};
    const char *none[] = {"PATH=/bin", nullptr};
    if (!config_parse(const_cast<char *const *>(xdg), false, &c, &e, nullptr) ||
        strcmp(c.snapshot_dir, "/state/mmtier/capsules") != 0)
      bad |= 1;
    if (!config_parse(const_cast<char *const *>(rel), false, &c, &e, nullptr) ||
        strcmp(c.snapshot_dir, "/home/u/.local/state/mmtier/capsules") != 0)
      bad |= 2;
    if (!config_parse(const_cast<char *const *>(rel), true, &c, &e, nullptr) || c.snapshot_dir[0]) bad |= 4;
    if (!config_parse(const_cast<char *const *>(none), false, &c, &e, nullptr) || c.snapshot_dir[0]) bad |= 8;
    _exit(bad);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: XDG, 2: HOME, 4: secure, 8: none, 100: seteuid";
}

TEST(ConfigParse, NodeAgentAndQos) {
  config c;
  config_error e;
  auto parse = [&](std::initializer_list<const char *> vars) {
    std::vector<const char *> env(vars);
    env.push_back(nullptr);
    return config_parse(const_cast<char *const *>(env.data()), false, &c, &e, nullptr);
  };
  ASSERT_TRUE(parse({}));
  EXPECT_STREQ(c.agent_socket, "/run/mmtier/agent.sock");
  EXPECT_EQ(c.qos_class, 1u);
  EXPECT_EQ(c.qos_weight, 100u);
  ASSERT_TRUE(parse({"MMTIER_AGENT_SOCKET=off", "MMTIER_QOS_CLASS=best-effort", "MMTIER_QOS_WEIGHT=10000"})) << e.line;
  EXPECT_STREQ(c.agent_socket, "");
  EXPECT_EQ(c.qos_class, 2u);
  EXPECT_EQ(c.qos_weight, 10000u);
  ASSERT_TRUE(parse({"MMTIER_AGENT_SOCKET=/tmp/a.sock", "MMTIER_QOS_CLASS=guaranteed", "MMTIER_QOS_DRAM=4G"})) << e.line;
  EXPECT_STREQ(c.agent_socket, "/tmp/a.sock");
  EXPECT_EQ(c.qos_class, 0u);
  EXPECT_EQ(c.qos_dram, size_t{4} << 30);
  ASSERT_FALSE(parse({"MMTIER_QOS_CLASS=guaranteed"}));
  EXPECT_STREQ(e.line,
               "invalid MMTIER_QOS_CLASS=\"guaranteed\": a guaranteed process needs MMTIER_QOS_DRAM (the DRAM guaranteed)");
  ASSERT_FALSE(parse({"MMTIER_QOS_CLASS=gold"}));
  EXPECT_STREQ(e.line, "invalid MMTIER_QOS_CLASS=\"gold\": expected guaranteed, burstable or best-effort");
  ASSERT_FALSE(parse({"MMTIER_QOS_WEIGHT=0"}));
  EXPECT_STREQ(e.line, "invalid MMTIER_QOS_WEIGHT=\"0\": expected an integer from 1 to 10000");
  ASSERT_FALSE(parse({"MMTIER_AGENT_SOCKET=run/agent.sock"}));
  EXPECT_STREQ(e.line,
               "invalid MMTIER_AGENT_SOCKET=\"run/agent.sock\": expected off, or an absolute socket path shorter than "
               "108 bytes");
  ASSERT_FALSE(parse({"MMTIER_QOS_DRAM=lots"}));
}

TEST(ConfigParse, HideFeatures) {
  config c;
  config_error e;
  const char *ok[] = {"MMTIER_HIDE_FEATURES=wp-unpopulated,move", nullptr};
  ASSERT_TRUE(config_parse(const_cast<char *const *>(ok), false, &c, &e, nullptr)) << e.line;
  EXPECT_EQ(c.hide_features, kHideWpUnpopulated | kHideMove);
  const char *none[] = {"MMTIER_HIDE_FEATURES=none", nullptr};
  ASSERT_TRUE(config_parse(const_cast<char *const *>(none), false, &c, &e, nullptr)) << e.line;
  EXPECT_EQ(c.hide_features, 0u);
  const char *bad[] = {"MMTIER_HIDE_FEATURES=move,teleport", nullptr};
  ASSERT_FALSE(config_parse(const_cast<char *const *>(bad), false, &c, &e, nullptr));
  EXPECT_STREQ(e.line,
               "invalid MMTIER_HIDE_FEATURES=\"move,teleport\": expected none, or a comma-separated list of "
               "wp-unpopulated, move, write-protect");
}

TEST(ConfigParse, SlowNode) {
  config c;
  config_error e;
  EXPECT_EQ(c.slow_node, kSlowNodeAuto);
  const char *two[] = {"MMTIER_SLOW_NODE=2", nullptr};
  ASSERT_TRUE(config_parse(const_cast<char *const *>(two), false, &c, &e, nullptr)) << e.line;
  EXPECT_EQ(c.slow_node, 2);
  const char *off[] = {"MMTIER_SLOW_NODE=off", nullptr};
  ASSERT_TRUE(config_parse(const_cast<char *const *>(off), false, &c, &e, nullptr)) << e.line;
  EXPECT_EQ(c.slow_node, kSlowNodeOff);
  for (const char *bad : {"MMTIER_SLOW_NODE=1024", "MMTIER_SLOW_NODE=-1", "MMTIER_SLOW_NODE=cxl", "MMTIER_SLOW_NODE="}) {
    const char *env[] = {bad, nullptr};
    EXPECT_FALSE(config_parse(const_cast<char *const *>(env), false, &c, &e, nullptr)) << bad;
  }
  EXPECT_NE(std::string(e.line).find("expected auto, off, or a NUMA node number below 1024"), std::string::npos);
}

// --- config_parse ------------------------------------------------------------

std::vector<std::pair<std::string, std::string>> g_unknown;

void record_unknown(const char *name, const char *suggestion) {
  g_unknown.emplace_back(name, suggestion != nullptr ? suggestion : "<none>");
}

struct parsed {
  bool ok = false;
  std::unique_ptr<config> cfg = std::make_unique<config>();
  config_error err{};
};

parsed parse(std::initializer_list<std::string> entries, bool secure = false) {
  std::vector<std::string> storage(entries);
  std::vector<char *> envp;
  for (auto &s : storage) envp.push_back(s.data());
  envp.push_back(nullptr);
  parsed r;
  std::memset(r.err.line, 0, sizeof r.err.line);
  g_unknown.clear();
  r.ok = config_parse(envp.data(), secure, r.cfg.get(), &r.err, record_unknown);
  return r;
}

bool is_writable_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode) && access(path, W_OK | X_OK) == 0;
}

std::string default_pmem_path() { return is_writable_dir("/dev/shm") ? "/dev/shm" : "/tmp"; }

void expect_defaults(const config &c) {
  EXPECT_EQ(c.ratio_dram, 1u);
  EXPECT_EQ(c.ratio_pmem, 4u);
  EXPECT_EQ(c.dram_limit, SIZE_MAX);
  EXPECT_EQ(c.pmem_limit, SIZE_MAX);
  EXPECT_EQ(std::string(c.pmem_path), default_pmem_path());
  EXPECT_FALSE(c.pmem_path_set);
  EXPECT_EQ(c.policy, policy_kind::ratio);
  EXPECT_TRUE(c.promote);
  EXPECT_EQ(c.log, log_level::warn);
  EXPECT_STREQ(c.report, "");
  EXPECT_EQ(c.mmap_threshold, 64 * K);
  EXPECT_EQ(c.background_at, 32 * M);
  EXPECT_FALSE(c.check_moves);
  EXPECT_EQ(c.migrate_mbps, 256u);
  EXPECT_EQ(c.scan_interval_ns, 100'000'000u);
  EXPECT_STREQ(c.stats_dir, "");
  EXPECT_FALSE(c.stats_off);
}

// config_parse of entries succeeds with the defaults and no unknown names.
void expect_parsed_as_defaults(std::initializer_list<std::string> entries, bool secure = false) {
  parsed r = parse(entries, secure);
  ASSERT_TRUE(r.ok) << r.err.line;
  expect_defaults(*r.cfg);
  EXPECT_TRUE(g_unknown.empty());
}

TEST(ConfigParse, EmptyEnvironmentGivesDefaults) { expect_parsed_as_defaults({}); }

TEST(ConfigParse, NullEnvironmentGivesDefaults) {
  auto cfg = std::make_unique<config>();
  config_error err;
  ASSERT_TRUE(config_parse(nullptr, false, cfg.get(), &err, record_unknown));
  expect_defaults(*cfg);
}

TEST(ConfigParse, OtherVariablesIgnored) {
  expect_parsed_as_defaults({"PATH=/usr/bin", "HOME=/root", "MMTIER", "MMTIER_LOG", "mmtier_log=debug",
                             "XMMTIER_LOG=debug", "LD_PRELOAD=libmmtier.so"});
}

TEST(ConfigParse, StartsFromDefaultsWhateverWasInOut) {
  auto cfg = std::make_unique<config>();
  cfg->ratio_dram = 7;
  cfg->pmem_path_set = true;
  cfg->report[0] = 'x';
  cfg->stats_off = true;
  char *envp[] = {nullptr};
  config_error err;
  ASSERT_TRUE(config_parse(envp, false, cfg.get(), &err, nullptr));
  expect_defaults(*cfg);
}

struct good_case {
  const char *entry;
  std::function<void(const config &)> check;
};

TEST(ConfigParse, EachGoodValue) {
  const std::string tmp = default_pmem_path();
  const good_case cases[] = {
      {"MMTIER_DRAM_RATIO=1:4", [](const config &c) { EXPECT_EQ(c.ratio_dram, 1u); EXPECT_EQ(c.ratio_pmem, 4u); }},
      {"MMTIER_DRAM_RATIO=3:1", [](const config &c) { EXPECT_EQ(c.ratio_dram, 3u); EXPECT_EQ(c.ratio_pmem, 1u); }},
      {"MMTIER_DRAM_RATIO=0:1", [](const config &c) { EXPECT_EQ(c.ratio_dram, 0u); EXPECT_EQ(c.ratio_pmem, 1u); }},
      {"MMTIER_DRAM_RATIO=1:0", [](const config &c) { EXPECT_EQ(c.ratio_dram, 1u); EXPECT_EQ(c.ratio_pmem, 0u); }},
      {"MMTIER_DRAM_LIMIT=512M", [](const config &c) { EXPECT_EQ(c.dram_limit, 512 * M); }},
      {"MMTIER_DRAM_LIMIT=512MiB", [](const config &c) { EXPECT_EQ(c.dram_limit, 512 * M); }},
      {"MMTIER_DRAM_LIMIT=2g", [](const config &c) { EXPECT_EQ(c.dram_limit, 2 * G); }},
      {"MMTIER_DRAM_LIMIT=0", [](const config &c) { EXPECT_EQ(c.dram_limit, 0u); }},
      {"MMTIER_DRAM_LIMIT=none", [](const config &c) { EXPECT_EQ(c.dram_limit, SIZE_MAX); }},
      {"MMTIER_PMEM_LIMIT=1T", [](const config &c) { EXPECT_EQ(c.pmem_limit, T); }},
      {"MMTIER_PMEM_LIMIT=4096", [](const config &c) { EXPECT_EQ(c.pmem_limit, 4096u); }},
      {"MMTIER_PMEM_LIMIT=0", [](const config &c) { EXPECT_EQ(c.pmem_limit, 0u); }},
      {"MMTIER_PMEM_LIMIT=none", [](const config &c) { EXPECT_EQ(c.pmem_limit, SIZE_MAX); }},
      {"MMTIER_POLICY=ratio", [](const config &c) { EXPECT_EQ(c.policy, policy_kind::ratio); }},
      {"MMTIER_POLICY=dram-first", [](const config &c) { EXPECT_EQ(c.policy, policy_kind::dram_first); }},
      {"MMTIER_POLICY=bandwidth", [](const config &c) { EXPECT_EQ(c.policy, policy_kind::bandwidth); }},
      {"MMTIER_PMEM_RESERVE=place", [](const config &c) { EXPECT_FALSE(c.pmem_reserve_at_touch); }},
      {"MMTIER_PMEM_RESERVE=touch", [](const config &c) { EXPECT_TRUE(c.pmem_reserve_at_touch); }},
      {"MMTIER_HUGE_PAGES=kernel", [](const config &c) { EXPECT_FALSE(c.huge_units); }},
      {"MMTIER_HUGE_PAGES=units", [](const config &c) { EXPECT_TRUE(c.huge_units); }},
      {"MMTIER_PROMOTE=0", [](const config &c) { EXPECT_FALSE(c.promote); }},
      {"MMTIER_PROMOTE=1", [](const config &c) { EXPECT_TRUE(c.promote); }},
      {"MMTIER_LOG=error", [](const config &c) { EXPECT_EQ(c.log, log_level::error); }},
      {"MMTIER_LOG=warn", [](const config &c) { EXPECT_EQ(c.log, log_level::warn); }},
      {"MMTIER_LOG=info", [](const config &c) { EXPECT_EQ(c.log, log_level::info); }},
      {"MMTIER_LOG=debug", [](const config &c) { EXPECT_EQ(c.log, log_level::debug); }},
      {"MMTIER_REPORT=off", [](const config &c) { EXPECT_STREQ(c.report, ""); }},
      {"MMTIER_REPORT=", [](const config &c) { EXPECT_STREQ(c.report, ""); }},
      {"MMTIER_REPORT=stderr", [](const config &c) { EXPECT_STREQ(c.report, "stderr"); }},
      {"MMTIER_REPORT=/tmp/mmtier.%p.txt", [](const config &c) { EXPECT_STREQ(c.report, "/tmp/mmtier.%p.txt"); }},
      {"MMTIER_REPORT=report.txt", [](const config &c) { EXPECT_STREQ(c.report, "report.txt"); }},
      {"MMTIER_STATS_DIR=off", [](const config &c) { EXPECT_TRUE(c.stats_off); }},
      {"MMTIER_STATS_DIR=/run/mmtier", [](const config &c) {
         EXPECT_FALSE(c.stats_off);
         EXPECT_STREQ(c.stats_dir, "/run/mmtier");
       }},
      {"MMTIER_MMAP_THRESHOLD=4096", [](const config &c) { EXPECT_EQ(c.mmap_threshold, 4096u); }},
      {"MMTIER_MMAP_THRESHOLD=4K", [](const config &c) { EXPECT_EQ(c.mmap_threshold, 4096u); }},
      {"MMTIER_MMAP_THRESHOLD=2M", [](const config &c) { EXPECT_EQ(c.mmap_threshold, 2 * M); }},
      {"MMTIER_MIGRATE_MBPS=0", [](const config &c) { EXPECT_EQ(c.migrate_mbps, 0u); }},
      {"MMTIER_MIGRATE_MBPS=1000000", [](const config &c) { EXPECT_EQ(c.migrate_mbps, 1000000u); }},
      {"MMTIER_MIGRATE_MBPS=64", [](const config &c) { EXPECT_EQ(c.migrate_mbps, 64u); }},
      {"MMTIER_SCAN_INTERVAL=1ms", [](const config &c) { EXPECT_EQ(c.scan_interval_ns, 1'000'000u); }},
      {"MMTIER_SCAN_INTERVAL=2500us", [](const config &c) { EXPECT_EQ(c.scan_interval_ns, 2'500'000u); }},
      {"MMTIER_SCAN_INTERVAL=60s", [](const config &c) { EXPECT_EQ(c.scan_interval_ns, 60'000'000'000u); }},
      {"MMTIER_BACKGROUND_AT=0", [](const config &c) { EXPECT_EQ(c.background_at, 0u); }},
      {"MMTIER_BACKGROUND_AT=1G", [](const config &c) { EXPECT_EQ(c.background_at, 1024 * M); }},
      {"MMTIER_BACKGROUND_AT=3M", [](const config &c) { EXPECT_EQ(c.background_at, 3 * M); }},
      {"MMTIER_CHECK_MOVES=1", [](const config &c) { EXPECT_TRUE(c.check_moves); }},
      {"MMTIER_CHECK_MOVES=0", [](const config &c) { EXPECT_FALSE(c.check_moves); }},
  };
  for (const auto &gc : cases) {
    SCOPED_TRACE(gc.entry);
    parsed r = parse({gc.entry});
    ASSERT_TRUE(r.ok) << r.err.line;
    gc.check(*r.cfg);
    EXPECT_TRUE(g_unknown.empty());
  }
}

TEST(ConfigParse, AllTogether) {
  char dir[] = "/tmp/mmtier_cfg_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  parsed r = parse({"MMTIER_DRAM_RATIO=2:3", "MMTIER_DRAM_LIMIT=1G", "MMTIER_PMEM_LIMIT=8G",
                    std::string("MMTIER_PMEM_PATH=") + dir, "MMTIER_POLICY=dram-first",
                    "MMTIER_PROMOTE=0", "MMTIER_LOG=debug", "MMTIER_REPORT=stderr",
                    "MMTIER_MMAP_THRESHOLD=1M"});
  rmdir(dir);
  ASSERT_TRUE(r.ok) << r.err.line;
  const config &c = *r.cfg;
  EXPECT_EQ(c.ratio_dram, 2u);
  EXPECT_EQ(c.ratio_pmem, 3u);
  EXPECT_EQ(c.dram_limit, G);
  EXPECT_EQ(c.pmem_limit, 8 * G);
  EXPECT_STREQ(c.pmem_path, dir);
  EXPECT_TRUE(c.pmem_path_set);
  EXPECT_EQ(c.policy, policy_kind::dram_first);
  EXPECT_FALSE(c.promote);
  EXPECT_EQ(c.log, log_level::debug);
  EXPECT_STREQ(c.report, "stderr");
  EXPECT_EQ(c.mmap_threshold, M);
}

TEST(ConfigParse, FirstOfDuplicateEntriesWins) {
  // getenv semantics: the first entry is the one programs see.
  parsed r = parse({"MMTIER_LOG=debug", "MMTIER_LOG=error", "MMTIER_LOG=junk"});
  ASSERT_TRUE(r.ok) << r.err.line;
  EXPECT_EQ(r.cfg->log, log_level::debug);
}

TEST(ConfigParse, ValueMayContainEquals) {
  parsed r = parse({"MMTIER_REPORT=/tmp/a=b"});
  ASSERT_TRUE(r.ok) << r.err.line;
  EXPECT_STREQ(r.cfg->report, "/tmp/a=b");
}

struct bad_case {
  const char *name;
  std::string value;
  const char *reason;  // must appear in the error line
};

void expect_bad(const bad_case &bc) {
  std::string entry = std::string(bc.name) + "=" + bc.value;
  SCOPED_TRACE(entry.substr(0, 100));
  parsed r = parse({"PATH=/bin", entry});
  ASSERT_FALSE(r.ok);
  std::string line = r.err.line;
  EXPECT_LT(line.size(), sizeof r.err.line);
  EXPECT_EQ(line.find('\n'), std::string::npos) << line;
  std::string shown = bc.value.size() > 100 ? bc.value.substr(0, 100) : bc.value + "\"";
  std::string head = std::string("invalid ") + bc.name + "=\"" + shown;
  EXPECT_EQ(line.rfind(head, 0), 0u) << line;
  EXPECT_NE(line.find(bc.reason), std::string::npos) << line;
}

TEST(ConfigParse, EachBadValue) {
  const bad_case cases[] = {
      {"MMTIER_DRAM_RATIO", "abc", "expected D:P with integers 0..1000000, not both 0 (e.g. 1:4)"},
      {"MMTIER_DRAM_RATIO", "", "expected D:P"},
      {"MMTIER_DRAM_RATIO", "0:0", "expected D:P"},
      {"MMTIER_DRAM_RATIO", "1:4:1", "expected D:P"},
      {"MMTIER_DRAM_RATIO", "1 : 4", "expected D:P"},
      {"MMTIER_DRAM_RATIO", "-1:4", "expected D:P"},
      {"MMTIER_DRAM_RATIO", "2000000:1", "expected D:P"},
      {"MMTIER_DRAM_LIMIT", "", "expected a size"},
      {"MMTIER_DRAM_LIMIT", "lots", "expected a size"},
      {"MMTIER_DRAM_LIMIT", "1.5G", "expected a size"},
      {"MMTIER_DRAM_LIMIT", "-1", "expected a size"},
      {"MMTIER_DRAM_LIMIT", "99999999999T", "expected a size"},
      {"MMTIER_PMEM_LIMIT", "", "expected a size"},
      {"MMTIER_PMEM_LIMIT", "4X", "expected a size"},
      {"MMTIER_PMEM_LIMIT", "NONE", "expected a size"},
      {"MMTIER_POLICY", "", "expected ratio, dram-first or bandwidth"},
      {"MMTIER_POLICY", "dram_first", "expected ratio, dram-first or bandwidth"},
      {"MMTIER_POLICY", "Ratio", "expected ratio, dram-first or bandwidth"},
      {"MMTIER_PMEM_RESERVE", "lazy", "expected touch or place"},
      {"MMTIER_HUGE_PAGES", "always", "expected units or kernel"},
      {"MMTIER_PROMOTE", "", "expected 0 or 1"},
      {"MMTIER_PROMOTE", "yes", "expected 0 or 1"},
      {"MMTIER_PROMOTE", "2", "expected 0 or 1"},
      {"MMTIER_PROMOTE", "01", "expected 0 or 1"},
      {"MMTIER_LOG", "", "expected error, warn, info or debug"},
      {"MMTIER_LOG", "verbose", "expected error, warn, info or debug"},
      {"MMTIER_LOG", "warning", "expected error, warn, info or debug"},
      {"MMTIER_REPORT", std::string(kPathMax, 'r'), "expected off, stderr, or a file path"},
      {"MMTIER_STATS_DIR", "", "expected off, or an absolute directory path"},
      {"MMTIER_STATS_DIR", "stats", "expected off, or an absolute directory path"},
      {"MMTIER_STATS_DIR", "/" + std::string(kPathMax - 32, 's'), "expected off, or an absolute directory path"},
      {"MMTIER_MMAP_THRESHOLD", "", "expected a size of at least 4096"},
      {"MMTIER_MMAP_THRESHOLD", "4095", "expected a size of at least 4096"},
      {"MMTIER_MMAP_THRESHOLD", "0", "expected a size of at least 4096"},
      {"MMTIER_MMAP_THRESHOLD", "64Q", "expected a size of at least 4096"},
      {"MMTIER_MIGRATE_MBPS", "", "expected an integer from 0 to 1000000"},
      {"MMTIER_MIGRATE_MBPS", "-1", "expected an integer from 0 to 1000000"},
      {"MMTIER_MIGRATE_MBPS", "1000001", "expected an integer from 0 to 1000000"},
      {"MMTIER_MIGRATE_MBPS", "99999999999999999999999", "expected an integer from 0 to 1000000"},
      {"MMTIER_MIGRATE_MBPS", "10M", "expected an integer from 0 to 1000000"},
      {"MMTIER_SCAN_INTERVAL", "", "expected a duration from 1ms to 60s"},
      {"MMTIER_SCAN_INTERVAL", "100", "expected a duration from 1ms to 60s"},
      {"MMTIER_SCAN_INTERVAL", "999us", "expected a duration from 1ms to 60s"},
      {"MMTIER_SCAN_INTERVAL", "61s", "expected a duration from 1ms to 60s"},
      {"MMTIER_SCAN_INTERVAL", "1.5s", "expected a duration from 1ms to 60s"},
      {"MMTIER_SCAN_INTERVAL", "99999999999999999999s", "expected a duration from 1ms to 60s"},
      {"MMTIER_BACKGROUND_AT", "", "expected a size with optional K/M/G/T suffix"},
      {"MMTIER_BACKGROUND_AT", "-1", "expected a size with optional K/M/G/T suffix"},
      {"MMTIER_BACKGROUND_AT", "none", "expected a size with optional K/M/G/T suffix"},
      {"MMTIER_CHECK_MOVES", "yes", "expected 0 or 1"},
      {"MMTIER_CHECK_MOVES", "", "expected 0 or 1"},
      {"MMTIER_PMEM_PATH", "", "expected the path of an existing writable directory"},
      {"MMTIER_PMEM_PATH", std::string(kPathMax, 'p'), "too long"},
  };
  for (const auto &bc : cases) expect_bad(bc);
}

TEST(ConfigParse, ErrorLineMatchesDocumentedFormat) {
  parsed r = parse({"MMTIER_DRAM_RATIO=abc"});
  ASSERT_FALSE(r.ok);
  EXPECT_STREQ(r.err.line,
               "invalid MMTIER_DRAM_RATIO=\"abc\": expected D:P with integers 0..1000000, not "
               "both 0 (e.g. 1:4)");
}

TEST(ConfigParse, HugeValueIsShortenedInError) {
  std::string value(5000, '9');
  parsed r = parse({"MMTIER_DRAM_LIMIT=" + value});
  ASSERT_FALSE(r.ok);
  std::string line = r.err.line;
  EXPECT_LT(line.size(), 400u);
  EXPECT_NE(line.find("9999...\": expected a size"), std::string::npos) << line;
}

// --- MMTIER_PMEM_PATH --------------------------------------------------------

TEST(ConfigPmemPath, ExistingWritableDirectory) {
  char dir[] = "/tmp/mmtier_cfg_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  parsed r = parse({std::string("MMTIER_PMEM_PATH=") + dir});
  rmdir(dir);
  ASSERT_TRUE(r.ok) << r.err.line;
  EXPECT_STREQ(r.cfg->pmem_path, dir);
  EXPECT_TRUE(r.cfg->pmem_path_set);
}

TEST(ConfigPmemPath, RelativeDirectory) {
  if (!is_writable_dir(".")) GTEST_SKIP() << "cwd not writable";
  parsed r = parse({"MMTIER_PMEM_PATH=."});
  ASSERT_TRUE(r.ok) << r.err.line;
  EXPECT_STREQ(r.cfg->pmem_path, ".");
  EXPECT_TRUE(r.cfg->pmem_path_set);
}

TEST(ConfigPmemPath, Nonexistent) {
  expect_bad({"MMTIER_PMEM_PATH", "/nonexistent/mmtier/dir", "does not exist"});
  expect_bad({"MMTIER_PMEM_PATH", "/tmp/mmtier_surely_not_here_42", "does not exist"});
}

TEST(ConfigPmemPath, RegularFile) {
  char file[] = "/tmp/mmtier_cfg_file_XXXXXX";
  int fd = mkstemp(file);
  ASSERT_GE(fd, 0);
  close(fd);
  expect_bad({"MMTIER_PMEM_PATH", file, "is not a directory"});
  // A path through a regular file does not exist.
  expect_bad({"MMTIER_PMEM_PATH", std::string(file) + "/sub", "does not exist"});
  unlink(file);
}

TEST(ConfigPmemPath, NotWritable) {
  // As root, access(W_OK) says yes for a 0500 directory, so fall back to a
  // directory the kernel refuses writes to even for root (/proc/self).
  char dir[] = "/tmp/mmtier_cfg_ro_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  ASSERT_EQ(chmod(dir, 0500), 0);
  std::string path;
  if (access(dir, W_OK | X_OK) != 0) {
    path = dir;
  } else if (access("/proc/self", X_OK) == 0 && access("/proc/self", W_OK) != 0) {
    path = "/proc/self";
  }
  if (path.empty()) {
    rmdir(dir);
    GTEST_SKIP() << "no non-writable directory available (running as root?)";
  }
  expect_bad({"MMTIER_PMEM_PATH", path, "is not writable"});
  rmdir(dir);
}

// --- secure mode -------------------------------------------------------------

TEST(ConfigParse, SecureModeIgnoresEverything) {
  expect_parsed_as_defaults({"MMTIER_DRAM_RATIO=abc", "MMTIER_LOG=debug", "MMTIER_PMEM_PATH=/nonexistent",
                             "MMTIER_DRAM_RATO=1:2"},
                            /*secure=*/true);
}

// --- unknown names -----------------------------------------------------------

TEST(ConfigParse, UnknownNameWarnsWithSuggestion) {
  parsed r = parse({"MMTIER_DRAM_RATO=1:2", "MMTIER_LOG=info"});
  ASSERT_TRUE(r.ok) << r.err.line;
  ASSERT_EQ(g_unknown.size(), 1u);
  EXPECT_EQ(g_unknown[0].first, "MMTIER_DRAM_RATO");
  EXPECT_EQ(g_unknown[0].second, "MMTIER_DRAM_RATIO");
  EXPECT_EQ(r.cfg->ratio_dram, 1u);  // the misspelt variable changed nothing
  EXPECT_EQ(r.cfg->ratio_pmem, 4u);
  EXPECT_EQ(r.cfg->log, log_level::info);
}

TEST(ConfigParse, UnknownNamesEachReportedOnce) {
  parsed r = parse({"MMTIER_XYZZY_FOO=1", "MMTIER_LGO=debug", "MMTIER_=x", "MMTIER_EMPTY="});
  ASSERT_TRUE(r.ok) << r.err.line;
  const std::vector<std::pair<std::string, std::string>> want = {
      {"MMTIER_XYZZY_FOO", "<none>"},
      {"MMTIER_LGO", "MMTIER_LOG"},
      {"MMTIER_", "MMTIER_LOG"},  // within distance 3 of MMTIER_LOG
      {"MMTIER_EMPTY", "<none>"},
  };
  EXPECT_EQ(g_unknown, want);
}

TEST(ConfigParse, VeryLongUnknownNameIsTruncatedCopy) {
  std::string name = "MMTIER_" + std::string(1000, 'Z');
  parsed r = parse({name + "=1"});
  ASSERT_TRUE(r.ok) << r.err.line;
  ASSERT_EQ(g_unknown.size(), 1u);
  EXPECT_EQ(name.rfind(g_unknown[0].first, 0), 0u);
  EXPECT_LT(g_unknown[0].first.size(), name.size());
  EXPECT_EQ(g_unknown[0].second, "<none>");
}

TEST(ConfigParse, NullCallbackIsAllowed) {
  std::string s = "MMTIER_DRAM_RATO=1:2";
  char *envp[] = {s.data(), nullptr};
  auto cfg = std::make_unique<config>();
  config_error err;
  EXPECT_TRUE(config_parse(envp, false, cfg.get(), &err, nullptr));
}

// --- config_load (in fresh processes: it runs once per process) --------------

// config_load() runs once, when the library starts (a constructor, before
// main): these tests start this test binary again with the environment under
// test and look at what the start-up did.
class ConfigLoadDeathTest : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
  // Replaces this process with the test binary running only `filter`.
  [[noreturn]] static void restart(const char *filter) {
    std::string arg = std::string("--gtest_filter=") + filter;
    execl("/proc/self/exe", "/proc/self/exe", arg.c_str(), static_cast<char *>(nullptr));
    _exit(127);
  }
};

TEST_F(ConfigLoadDeathTest, BadValueExitsWithOneLine) {
  EXPECT_EXIT(
      {
        setenv("MMTIER_DRAM_RATIO", "abc", 1);
        restart("-*");
      },
      ::testing::ExitedWithCode(1),
      "^mmtier: invalid MMTIER_DRAM_RATIO=\"abc\": expected D:P with integers 0\\.\\.1000000, "
      "not both 0 \\(e\\.g\\. 1:4\\)\n$");
}

TEST_F(ConfigLoadDeathTest, LoadsEnvironmentAndWarnsAboutUnknown) {
  EXPECT_EXIT(
      {
        setenv("MMTIER_DRAM_RATIO", "3:5", 1);
        setenv("MMTIER_LOG", "info", 1);
        setenv("MMTIER_DRAM_RATO", "1:2", 1);
        setenv("CONFIG_TEST_CHILD", "1", 1);
        restart("ConfigLoadChild.LoadedAtStart");
      },
      ::testing::ExitedWithCode(0),
      "mmtier: warn: unknown variable MMTIER_DRAM_RATO ignored; did you mean "
      "MMTIER_DRAM_RATIO\\?\n");
}

// Runs only inside the restarted binary of the test above.
TEST(ConfigLoadChild, LoadedAtStart) {
  if (!getenv("CONFIG_TEST_CHILD")) GTEST_SKIP() << "only in the restarted test binary";
  config_load();  // idempotent: already loaded at start
  const config &c = config_get();
  const bool ok = c.ratio_dram == 3 && c.ratio_pmem == 5 && c.log == log_level::info &&
                  log_get_level() == log_level::info;
  _exit(ok ? 0 : 2);
}

TEST_F(ConfigLoadDeathTest, UnknownWarningObeysLogLevel) {
  EXPECT_EXIT(
      {
        setenv("MMTIER_LOG", "error", 1);
        setenv("MMTIER_XYZZY_FOO", "1", 1);
        restart("-*");
      },
      ::testing::ExitedWithCode(0), "^$");
}

}  // namespace
}  // namespace mmtier::detail
