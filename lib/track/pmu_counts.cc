// Per-unit access counts (see pmu_counts.h): samples added up per unit and
// scaled into policy observations.
#include "track/pmu_counts.h"

#include "heap/heap.h"
#include "support/meta.h"

#include <climits>

namespace mmtier::detail {

bool pmu_unit_counts::init(uintptr_t base, size_t max_units, void *storage) {
  if (max_units == 0 || max_units > UINT32_MAX) return false;
  if (!storage) storage = meta_map(storage_bytes(max_units));
  if (!storage) return false;
  base_ = base;
  max_units_ = max_units;
  counts_ = static_cast<pmu_unit_count *>(storage);
  touched_ = reinterpret_cast<uint32_t *>(counts_ + max_units);
  ntouched_ = 0;
  outside_ = 0;
  return true;
}

bool pmu_unit_counts::init_for_heap(void *storage) {
  return init(g_heap.base, g_heap.nunits, storage);
}

void pmu_unit_counts::add(uint64_t addr, bool is_store) {
  const uint64_t u = (addr - base_) >> kUnitShift;
  if (addr < base_ || u >= max_units_) {
    outside_++;
    return;
  }
  pmu_unit_count &c = counts_[u];
  if (c.reads == 0 && c.writes == 0) touched_[ntouched_++] = static_cast<uint32_t>(u);
  uint32_t &v = is_store ? c.writes : c.reads;
  if (v != UINT32_MAX) v++;
}

pmu_sink pmu_unit_counts::sink() {
  pmu_sink s;
  s.sample = [](void *self, const pmu_sample &x) {
    static_cast<pmu_unit_counts *>(self)->add(x.addr, x.is_store);
  };
  s.ctx = this;
  return s;
}

pmu_unit_count pmu_unit_counts::count(uint32_t unit) const {
  return unit < max_units_ ? counts_[unit] : pmu_unit_count{};
}

namespace {

// round(sampled * n * 1e9 / (interval_ns * full)), capped at sampled.
uint16_t scaled(uint64_t n, uint64_t interval_ns, const pmu_scale &sc) {
  const unsigned __int128 full = sc.full_scale_per_sec ? sc.full_scale_per_sec : 1;
  const unsigned __int128 num = static_cast<unsigned __int128>(sc.sampled) * n * 1'000'000'000u;
  const unsigned __int128 den = static_cast<unsigned __int128>(interval_ns) * full;
  const unsigned __int128 v = (num + den / 2) / den;
  return v >= sc.sampled ? sc.sampled : static_cast<uint16_t>(v);
}

}  // namespace

pmu_unit_observation pmu_unit_counts::observe(uint32_t unit, uint64_t interval_ns,
                                              const pmu_scale &sc) const {
  pmu_unit_observation o{unit, 0, 0, 0};
  if (interval_ns == 0 || sc.sampled == 0) return o;
  const pmu_unit_count c = count(unit);
  o.sampled = sc.sampled;
  o.touched = scaled(uint64_t{c.reads} + c.writes, interval_ns, sc);
  o.written = scaled(c.writes, interval_ns, sc);
  if (o.written > o.touched) o.written = o.touched;
  return o;
}

size_t pmu_unit_counts::emit(uint64_t interval_ns, pmu_unit_observation *out, size_t max,
                             const pmu_scale &sc) const {
  size_t n = ntouched_ < max ? ntouched_ : max;
  for (size_t i = 0; i < n; i++) out[i] = observe(touched_[i], interval_ns, sc);
  return n;
}

void pmu_unit_counts::clear() {
  for (size_t i = 0; i < ntouched_; i++) counts_[touched_[i]] = {};
  ntouched_ = 0;
  outside_ = 0;
}

size_t pmu_unit_counts::observe_listed(const unit_list &listed, uint64_t interval_ns, access_observation *out,
                                       size_t cap, size_t *touched, const pmu_scale &sc) {
  size_t n = 0, hits = 0;
  for (size_t i = 0; i < listed.n && n < cap; ++i) {
    const pmu_unit_observation o = observe(listed.units[i], interval_ns, sc);
    out[n++] = {listed.units[i], listed.tiers[i], true, o.sampled, o.touched, o.written};
    hits += o.touched != 0;
  }
  clear();
  if (touched) *touched = hits;
  return n;
}

}  // namespace mmtier::detail
