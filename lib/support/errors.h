// Errors as mmtier reports them: an errno's symbolic name without libc
// (strerror may allocate and its text depends on the locale), what a
// failed migration's errno means, and a small tally of failures by errno
// for statistics.  Nothing here allocates; the mmtier command links it
// too.
#pragma once

#include <cstdint>

namespace mmtier::detail {

// "ENOSPC", ...; "errno N" for one not in the table (written to buf, which
// must hold 24 bytes).
const char *errno_name(long err, char buf[24]);

// What a failed move between tiers means, by its errno, in a few words
// (the exit report, the mover's warning and the mmtier command say it).
const char *migration_failure_meaning(int err);

// What the running kernel lacks that mmtier would use (bits; the stats
// page's kernel_lacks carries them).  Each has a fallback or a cost, said
// by kernel_lack_meaning(bit).
enum : uint32_t {
  kLackUserfaultfd = 1u << 0,    // no usable userfaultfd: nothing moves between tiers
  kLackWriteProtect = 1u << 1,   // no write-protect of anonymous pages (5.7): no demotion
  kLackWpUnpopulated = 1u << 2,  // no write-protect of unpopulated pages (6.4)
  kLackMove = 1u << 3,           // no UFFDIO_MOVE (6.8)
};
inline constexpr uint32_t kLackBits = 4;
const char *kernel_lack_meaning(uint32_t bit);

// Failures counted by errno: the first kMax distinct values each with its
// count, the rest together.
struct failure_tally {
  static constexpr int kMax = 4;
  int32_t err[kMax] = {};  // 0: unused
  uint64_t count[kMax] = {};
  uint64_t other = 0;
  // Counts one failure; returns true the first time err is seen (kept or
  // not), so a caller can say it once.
  bool add(int32_t e);
  uint64_t total() const;
  void merge(const failure_tally &o);

 private:
  // errno values seen, for add()'s answer (a few distinct ones only).
  int32_t seen_[16] = {};
};

}  // namespace mmtier::detail
