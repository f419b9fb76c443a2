// The screen of `mmtier top`, apart from the terminal handling, so it can be
// tested: rows from snapshots (with promotion rates against the previous
// refresh), the bar, and the frame.
#pragma once

#include "stats_reader.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace mmtier::cli {

struct top_prev {
  uint64_t started_ns, promotions, mono_ns;
};

struct top_row {
  int pid = 0;
  std::string comm;
  uint64_t dram = 0, pmem = 0;  // resident, or placed while resident is unknown
  uint64_t migrate_bps = 0;
  double promo_rate = -1;       // promotions per second; -1: no previous snapshot
};

// Rows sorted by DRAM bytes, largest first (then by pid).
std::vector<top_row> top_rows(std::vector<snapshot> snaps, const std::map<int, top_prev> &prev);
// `width` characters: '#' for DRAM's share, '-' for PMem's, '.' when both are 0.
std::string render_bar(uint64_t dram, uint64_t pmem, int width);
// The frame, every line at most `cols` wide; max_rows 0: no limit.
std::string render_top(const std::vector<top_row> &rows, int cols, int max_rows, double interval_s,
                       uint64_t now_real_ns);

}  // namespace mmtier::cli
