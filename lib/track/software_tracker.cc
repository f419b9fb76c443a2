// The software tracker's rules (see software_tracker.h).
#include "track/software_tracker.h"

#include "support/log.h"
#include "tier/tier.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace mmtier::detail {

size_t spread_stride(size_t n) {
  if (n < 3) return 1;
  // About n / phi: consecutive steps land far apart, and a window of
  // consecutive steps spreads evenly over the whole list.
  size_t s = static_cast<size_t>(static_cast<double>(n) * 0.6180339887);
  while (std::gcd(s, n) != 1) ++s;
  return s;
}

size_t software_tracker::dram_per_scan() const {
  return std::clamp<size_t>(pmem_per_scan_ / 8, 2, kDramPerScan);
}

bool software_tracker::suspected(uint32_t unit) const {
  return std::find(suspects_, suspects_ + nsuspects_, unit) != suspects_ + nsuspects_;
}

size_t software_tracker::suspect_cap() const {
  // Suspects cost four pages each: at most half a window's PMem units of
  // them, so that the cost rule governs them too.
  return std::clamp<size_t>(pmem_per_scan_ / 2, 4, kMaxSuspects);
}

bool software_tracker::suspect(uint32_t unit) {
  if (suspected(unit)) return true;
  if (nsuspects_ >= suspect_cap()) return false;
  suspects_[nsuspects_++] = unit;
  return true;
}

void software_tracker::take_frontier(const unit_list &listed) {
  const uint32_t *end = listed.units + listed.n;
  size_t kept = 0, i = 0;
  for (; i < nfrontier_ && nsuspects_ < suspect_cap(); ++i) {
    // Still listed and still on PMem (it may have moved up meanwhile).
    const uint32_t *at = std::lower_bound(listed.units, end, frontier_[i]);
    if (at != end && *at == frontier_[i] && listed.tiers[at - listed.units] == kTierPmem) suspect(frontier_[i]);
  }
  for (; i < nfrontier_; ++i) frontier_[kept++] = frontier_[i];
  nfrontier_ = kept;
}

size_t software_tracker::choose(const unit_list &listed, uint32_t *units, uint8_t *pages, size_t cap) {
  size_t m = 0;
  for (size_t i = 0; i < nsuspects_ && m < cap; ++i) units[m++] = suspects_[i];
  // Each tier from its own cursor: a count of steps through the list,
  // step k visiting entry (k * stride) mod n.
  const size_t stride = spread_stride(listed.n);
  const auto rotate = [&](uint8_t tier, size_t want, size_t &cursor) {
    size_t got = 0, k = 0;
    for (; k < listed.n && got < want && m < cap; ++k) {
      const size_t i = static_cast<size_t>((uint64_t{cursor + k} % listed.n) * stride % listed.n);
      if (listed.tiers[i] != tier || suspected(listed.units[i])) continue;
      units[m++] = listed.units[i];
      ++got;
    }
    cursor = (cursor + k) % listed.n;
    return k;
  };
  listed_ = std::max<size_t>(listed.n, 1);
  if (listed.n) {
    steps_since_burst_ = std::min(steps_since_burst_ + rotate(kTierPmem, pmem_per_scan_, cursor_pmem_), listed_);
    rotate(kTierDram, dram_per_scan(), cursor_dram_);
  }
  // Ascending, each unit once, with its page count (suspects get more).
  std::sort(units, units + m);
  m = static_cast<size_t>(std::unique(units, units + m) - units);
  for (size_t i = 0; i < m; ++i) pages[i] = suspected(units[i]) ? kConfirmPages : 1;
  return m;
}

void software_tracker::suspect_neighbours(uint32_t unit, const unit_list &listed) {
  const uint32_t *end = listed.units + listed.n;
  const uint32_t reach = searching() ? kNeighbourReach : 1;
  for (uint32_t d = 1; d <= reach; ++d)
    for (const uint64_t nb : {uint64_t{unit} - d, uint64_t{unit} + d}) {
      if (nb > UINT32_MAX) continue;  // below 0 (wrapped) or past the last index
      const uint32_t *at = std::lower_bound(listed.units, end, nb);
      if (at == end || *at != nb || listed.tiers[at - listed.units] != kTierPmem || suspect(nb)) continue;
      // No room in the next window: later, while searching, unless already
      // waiting or the frontier is full (then the rotation finds it).  Once
      // steady, a hot unit that cannot move up would keep the frontier
      // full of its own neighbours.
      if (searching() && nfrontier_ < kFrontierMax &&
          std::find(frontier_, frontier_ + nfrontier_, nb) == frontier_ + nfrontier_)
        frontier_[nfrontier_++] = static_cast<uint32_t>(nb);
    }
}

size_t software_tracker::observe(const sample_result *results, size_t n, const unit_list &listed,
                                 access_observation *out, size_t cap, size_t *touched) {
  nsuspects_ = 0;
  // The background first: this window's observations carry it.
  size_t screened = 0, screen_hits = 0;
  for (size_t i = 0; i < n; ++i)
    if (results[i].tier == kTierPmem && results[i].sampled == 1) {
      ++screened;
      screen_hits += results[i].touched != 0;
    }
  const double chance = smoothed_background(screened, screen_hits);
  // The last window's undecided confirmations: merged with this window's
  // if their units are in it, forgotten otherwise.
  held_confirmation undecided[kMaxHeld];
  const size_t nundecided = nheld_;
  std::copy(held_, held_ + nheld_, undecided);
  nheld_ = 0;
  size_t nobs = 0, hits = 0;
  for (size_t i = 0; i < n; ++i) {
    const sample_result &r = results[i];
    hits += r.touched;
    if (r.tier == kTierPmem && r.sampled == 1 && r.touched) {
      suspect(r.unit);  // a screening hit: confirmed (or not) in the next window
      continue;
    }
    uint16_t sampled = r.sampled, hit = r.touched, written = r.written;
    bool again = false;
    if (r.tier == kTierPmem && sampled > 1)
      for (size_t k = 0; k < nundecided; ++k)
        if (undecided[k].unit == r.unit) {
          sampled = static_cast<uint16_t>(sampled + undecided[k].sampled);
          hit = static_cast<uint16_t>(hit + undecided[k].touched);
          written = static_cast<uint16_t>(written + undecided[k].written);
          again = true;
        }
    // Neither clearly hot nor cold (some pages touched, fewer than half):
    // watched once more before the policy hears of it.
    if (r.tier == kTierPmem && sampled > 1 && !again && hit && hit * 2 < sampled && nheld_ < kMaxHeld &&
        suspect(r.unit)) {
      held_[nheld_++] = {r.unit, sampled, hit, written};
      continue;
    }
    if (nobs < cap)
      out[nobs++] = {r.unit, r.tier, true, sampled, hit, written, static_cast<float>(chance), r.idle != 0};
    if (r.tier == kTierPmem && sampled > 1 && hit * 2 >= sampled) suspect_neighbours(r.unit, listed);
  }
  take_frontier(listed);
  std::sort(suspects_, suspects_ + nsuspects_);
  if (touched) *touched = hits;
  adapt_window(screened, screen_hits);
  return nobs;
}

double software_tracker::smoothed_background(size_t screened, size_t hits) {
  if (screened < kBackgroundMinSamples) return background_;
  const double share = static_cast<double>(hits) / static_cast<double>(screened);
  background_ = background_known_ ? background_ * 0.7 + share * 0.3 : share;
  background_known_ = true;
  return background_;
}

bool software_tracker::adapt_span(size_t screened, size_t hits) {
  // The background a span of n pages would see, from a share p at this one.
  const auto at = [&](double p, uint32_t n) { return 1 - std::pow(1 - p, static_cast<double>(n) / span_); };
  if (!spans_) return false;
  uint32_t next = span_;
  if (background_ > kBackgroundLow && span_ > 1) {
    next = span_ > kPmemSpanMin ? span_ / 2 : 1;
  } else if (window_eighths_ < kWindowMaxEighths) {
    span_screened_ = span_hits_ = 0;  // evidence only from windows at the base
  } else if (span_ < kPmemSpanMax) {
    // Wider only on the evidence of every screening sample at this span and
    // window, one hit more than seen (a few hits in a few hundred must not
    // pass for none), and with room to spare below kBackgroundLow: a span
    // that turns out too wide makes cold units look warm until it narrows.
    span_screened_ += screened;
    span_hits_ += hits;
    const uint32_t wider = span_ > 1 ? span_ * 2 : kPmemSpanMin;
    const double p = static_cast<double>(span_hits_ + 1) / static_cast<double>(span_screened_);
    if (at(p, wider) < kBackgroundLow / 2) next = wider;
  }
  if (next == span_) return false;
  const auto bp = static_cast<unsigned>(background_ * 10000);  // basis points
  MMTIER_DEBUG("tracker: %u.%02u%% of screened samples touched by chance: %u page(s) a PMem sample, was %u",
               bp / 100, bp % 100, next, span_);
  background_ = at(background_, next);
  span_ = next;
  span_screened_ = span_hits_ = 0;
  return true;
}

void software_tracker::adapt_window(size_t screened, size_t hits) {
  if (screened < kBackgroundMinSamples || !background_known_) return;
  if (adapt_span(screened, hits)) return;
  if (background_ >= kBackgroundLow && background_ <= kBackgroundHigh) return;
  // A page touched at a steady rate r is missed by a window of length W
  // with probability e^(-r W): the window that would see kBackgroundAim,
  // at most a quarter or twice this one per step (the rate is an estimate).
  const double b = std::clamp(background_, 0.001, 0.999);
  const double want = std::clamp(std::log1p(-kBackgroundAim) / std::log1p(-b), 0.25, 2.0);
  const uint32_t next = std::clamp<uint32_t>(static_cast<uint32_t>(std::lround(window_eighths_ * want)), 1,
                                             kWindowMaxEighths);
  if (next == window_eighths_) return;
  MMTIER_DEBUG("tracker: %d%% of screened pages touched by chance: window %u/8 of the base, was %u/8",
               static_cast<int>(background_ * 100), next, window_eighths_);
  // The background as the new window will see it, so that the smoothing
  // does not lag behind the change.
  const double f = static_cast<double>(next) / window_eighths_;
  background_ = 1 - std::pow(1 - b, f);
  window_eighths_ = next;
}

void software_tracker::promoted(size_t n) {
  // The first promotion after a quiet spell: the workload has changed (it
  // has started after its set-up, or turned to other data).
  const bool after_quiet = n && scans_since_promotion_ >= kQuietScans;
  scans_since_promotion_ = n ? 0 : std::min(scans_since_promotion_ + 1, kQuietScans);
  recent_[recent_at_] = static_cast<uint32_t>(std::min<size_t>(n, kSearchBurst));
  recent_at_ = (recent_at_ + 1) % kBurstScans;
  if (!after_quiet && std::accumulate(recent_, recent_ + kBurstScans, uint32_t{0}) < kSearchBurst) return;
  steps_since_burst_ = 0;
  std::fill(recent_, recent_ + kBurstScans, 0u);  // one burst, one search
}

void software_tracker::account(uint64_t spent_ns, uint64_t interval_ns) {
  const double share = static_cast<double>(spent_ns) / static_cast<double>(interval_ns ? interval_ns : 1);
  const double high = searching() ? kCpuSearch : kCpuSteady;
  if (share > high) pmem_per_scan_ = std::max(kPmemMin, pmem_per_scan_ * 3 / 4);
  else if (share < high * 0.6) pmem_per_scan_ = std::min(kPmemMax, pmem_per_scan_ * 5 / 4 + 1);
}

}  // namespace mmtier::detail
