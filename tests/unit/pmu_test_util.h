// Shared helpers for the PMU tracker tests (pmu_*_test.cc): the managed
// range the tests sample, a sink that keeps every sample and task record it
// is given, and a fake sysfs tree in a temporary directory.
#pragma once

#include "support/layout.h"
#include "track/pmu_ring.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace mmtier::detail::pmu_test {

inline constexpr uintptr_t kBase = 0x7f5a00000000;  // managed range of the tests
inline constexpr size_t kUnits = 16;
inline constexpr size_t kRange = kUnits << kUnitShift;

struct task_event {
  bool exit;
  uint32_t pid, tid;
  uint64_t time;
};

// A sink that keeps everything it is given.
struct capture {
  std::vector<pmu_sample> samples;
  std::vector<task_event> tasks;
  pmu_sink sink() {
    pmu_sink s;
    s.sample = [](void *c, const pmu_sample &x) {
      static_cast<capture *>(c)->samples.push_back(x);
    };
    s.task = [](void *c, bool exit, uint32_t pid, uint32_t tid, uint64_t time) {
      static_cast<capture *>(c)->tasks.push_back({exit, pid, tid, time});
    };
    s.ctx = this;
    return s;
  }
};

class fake_sysfs {
 public:
  fake_sysfs() {
    char tmpl[] = "/tmp/mmtier-pmu-sysfs-XXXXXX";
    EXPECT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  ~fake_sysfs() { std::filesystem::remove_all(root_); }
  void write(const std::string &rel, const std::string &text) {
    std::filesystem::path p = std::filesystem::path(root_) / rel;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  void pmu(const std::string &pmu, const std::string &rel, const std::string &text) {
    write("bus/event_source/devices/" + pmu + "/" + rel, text);
  }
  const char *root() const { return root_.c_str(); }

 private:
  std::string root_;
};

}  // namespace mmtier::detail::pmu_test
