// Checks that README.md's configuration table names exactly the options in
// lib/config's table, so the documentation cannot drift from the code.
#include "config/config.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <string>

#ifndef MMTIER_SOURCE_DIR
#error "MMTIER_SOURCE_DIR must be defined by the build (the source tree's root)"
#endif

namespace mmtier::detail {
namespace {

TEST(ReadmeOptions, TableMatchesConfigOptions) {
  const std::string path = MMTIER_SOURCE_DIR "/README.md";
  std::ifstream in(path);
  // A missing README is a failure, not a skip: the table must exist.
  ASSERT_TRUE(in.is_open()) << "cannot open " << path;

  // Rows of the configuration table look like "| `MMTIER_NAME` | ... |".
  const std::string row_start = "| `MMTIER_";
  std::set<std::string> documented;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(row_start, 0) != 0) continue;
    size_t begin = 3;  // after "| `"
    size_t end = line.find('`', begin);
    ASSERT_NE(end, std::string::npos) << "unterminated name in README row: " << line;
    std::string name = line.substr(begin, end - begin);
    EXPECT_TRUE(documented.insert(name).second) << name << " documented twice in " << path;
  }
  ASSERT_FALSE(documented.empty()) << "no configuration table rows (\"" << row_start << "...\") in "
                                   << path;

  size_t n = 0;
  const option_info *opts = config_options(&n);
  std::set<std::string> known;
  for (size_t i = 0; i < n; i++) known.insert(opts[i].name);

  for (const auto &name : known)
    EXPECT_TRUE(documented.count(name)) << name << " is an option but missing from " << path;
  for (const auto &name : documented)
    EXPECT_TRUE(known.count(name)) << name << " is in " << path << " but is not an option";
}

}  // namespace
}  // namespace mmtier::detail
