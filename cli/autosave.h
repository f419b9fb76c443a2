// `mmtier run --autosave`: the supervisor that restores a crashed program
// from its newest periodic snapshot (autosave.cc).
#pragma once

#include <cstdint>
#include <string>

namespace mmtier::cli {

struct autosave_options {
  std::string dir;           // where the program's periodic capsules are (its MMTIER_SNAPSHOT_DIR)
  int max_restarts = 5;      // restores allowed within window_ns, then the supervisor gives up
  uint64_t window_ns = 600'000'000'000;
};

// Runs argv (envp: its environment, with MMTIER_SNAPSHOT_EVERY set) as a
// child and supervises it; returns its exit status (128 + the signal that
// ended it), once it ends other than by a crash, or a restore is not
// possible, or the restarts exceed the limit.
int supervise(char *const *argv, char *const *envp, const autosave_options &o);

}  // namespace mmtier::cli
