// Keeps the background mover from using up the process's mappings.
//
// Every migration can leave one more kernel mapping behind: a promoted unit
// is an anonymous mapping that never merges with its neighbours, and a
// demoted one merges only when it can take the file slot that follows a
// neighbour's (docs/ARCHITECTURE.md, hazard 5).  Past vm.max_map_count the
// application's own mmap, and with it malloc, fails with ENOMEM.  So before
// each batch of migrations the mover asks this guard, which holds them back
// while the process has fewer than `reserve` mappings left under the limit,
// and lets them go again once there is room (units freed, the limit raised):
// paused at limit - reserve, resumed below limit - 3/2 reserve, where
// reserve is an eighth of the limit (at least 1024, at most half of it).
//
// Counting mappings means reading /proc/self/maps, which costs time in
// proportion to their number, so it is counted only when an upper bound
// (the last count plus kPerMigration for every migration since) could reach
// the threshold: a process far below the limit is never counted again.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

class map_guard {
 public:
  // Kernel mappings one migration adds at most when the unit's live pages
  // are one run (the usual case): the unit's own, and a neighbouring
  // mapping split in two.  Units with holes can add more; the recount,
  // due once the bound nears the threshold, catches up with them.
  static constexpr long kPerMigration = 2;

  // Sources of the two figures, each returning a count or -errno.  The
  // defaults read /proc/self/maps and /proc/sys/vm/max_map_count.
  using count_fn = long (*)(void *ctx);
  void init(count_fn mappings, count_fn limit, void *ctx);
  void init_default();

  // Whether n migrations may run now (now_ns: a monotonic clock).  May
  // count the mappings, at most once per kRecountNs.
  static constexpr uint64_t kRecountNs = 1'000'000'000;
  bool allow(size_t n, uint64_t now_ns);
  // n migrations were attempted (each may have added mappings).
  void moved(size_t n) { since_ += n; }

  bool paused() const { return paused_; }
  uint64_t refusals() const { return refusals_; }  // calls of allow() that said no
  uint64_t counts() const { return counts_; }      // times the mappings were counted
  long last_count() const { return count_; }
  long limit() const { return limit_; }
  long reserve() const { return reserve_; }

 private:
  bool recount(uint64_t now_ns);

  count_fn mappings_ = nullptr;
  count_fn limit_fn_ = nullptr;
  void *ctx_ = nullptr;
  bool counted_ = false;
  long count_ = 0;
  long limit_ = 0;
  long reserve_ = 0;
  uint64_t since_ = 0;  // migrations since the last count
  uint64_t counted_at_ = 0;
  bool paused_ = false;
  uint64_t refusals_ = 0;
  uint64_t counts_ = 0;
};

}  // namespace mmtier::detail
