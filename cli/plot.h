// The chart of `mmtier plot`: samples of one process and the SVG drawn from
// them (self-contained, no external libraries).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mmtier::cli {

struct plot_sample {
  double t = 0;                   // seconds since the first sample
  uint64_t dram = 0, pmem = 0;    // resident bytes, placed bytes while resident is unknown
  bool resident = false;          // dram/pmem are resident figures
  uint64_t dram_placed = 0, pmem_placed = 0;
  uint64_t promotions = 0, demotions = 0;  // totals
};

struct plot_data {
  int pid = 0;
  std::string comm;
  double interval_s = 0;
  std::vector<plot_sample> samples;
};

// Promotions per second between consecutive samples (samples.size() - 1
// values, at the later sample's time).
std::vector<double> promotion_rates(const std::vector<plot_sample> &s);

// The SVG document.  Series elements: <polyline id="series-dram-resident">,
// id="series-pmem-resident" and id="series-promotions"; the samples as JSON
// in <metadata id="mmtier-samples">.
std::string render_svg(const plot_data &d);

}  // namespace mmtier::cli
