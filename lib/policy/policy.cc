// Promotion/demotion policy (see policy.h): heat bookkeeping with
// time-weighted decay, the token bucket, and the three-phase decision.
#include "policy/policy.h"

#include "platform/sys.h"
#include "support/meta.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace mmtier::detail {
namespace {

constexpr uint8_t kMovable = 1;
constexpr uint8_t kBackoff = 2;  // hold_ms is a failure back-off, not residency
constexpr uint8_t kCandidate = 4;  // in cand_
constexpr uint8_t kSentDown = 8;   // last moved down: hold_ms - residency is when
constexpr uint8_t kQuiet = 16;     // DRAM, sparse: the last look scored below promote_min_heat

constexpr uint64_t kNsPerMs = 1'000'000;
constexpr uint64_t kNsPerSec = 1'000'000'000;
// A chance share above this says the window cannot tell anything apart;
// capped so that a page touched above it still counts.
constexpr double kMaxChance = 0.9;
// The per-unit clock is rebased to kRebaseTo once it reaches kRebaseAt, so
// that uint32 milliseconds never wrap (about every 12 days).
constexpr uint64_t kRebaseAt = uint64_t{1} << 31;
constexpr uint64_t kRebaseTo = uint64_t{1} << 30;

uint32_t ms_of(uint64_t ns) {
  uint64_t ms = (ns + kNsPerMs - 1) / kNsPerMs;  // round up: never shorter than asked
  return ms > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(ms);
}

uint32_t add_sat(uint32_t a, uint32_t b) { return a > UINT32_MAX - b ? UINT32_MAX : a + b; }

// 2^(-dt/half_life), remembering the last answer: most units share dt.
struct decayer {
  double half_life_ms;
  uint64_t last_dt = 0;
  double last = 1.0;

  explicit decayer(uint64_t half_life_ns)
      : half_life_ms(static_cast<double>(half_life_ns) / static_cast<double>(kNsPerMs)) {}

  double factor(uint64_t dt_ms) {
    if (dt_ms == 0) return 1.0;
    if (dt_ms == last_dt) return last;
    last_dt = dt_ms;
    last = half_life_ms > 0 ? std::exp2(-static_cast<double>(dt_ms) / half_life_ms) : 0.0;
    return last;
  }
};

// Heat decays at the half-life, but for a DRAM unit watched in rotation
// (sparse sampling): kDramUnseenSlowdown times slower.  Such a unit is seen
// again only when the rotation comes back to it, seconds later when scans
// are slow (moves into a full node, a busy machine); decayed at the
// half-life meanwhile, a hot unit would look cold merely for not having
// been looked at, and be demoted ahead of cold units seen since.  Not
// frozen either: a unit no window can sample still cools, in a minute.
constexpr uint64_t kDramUnseenSlowdown = 16;
// A DRAM unit's observation moves its heat at most this share of the way:
// one window's page (or a whole unit's first touch) is thin evidence that a
// hot unit went cold (a workload touching its pages a few dozen times a
// second, a fault service late to see the access), and a demotion on it
// costs two moves.  A second quiet look in a row (both scoring below
// promote_min_heat) is evidence, if the window it came in shows the
// program running: that look counts as for any unit, decayed at the
// half-life since the first and weighed by its interval, so a hot set that
// moved away pays a full node's shortfall after two looks rather than
// cooling over many.  The program ran if a DRAM sample of the window was
// touched; without one, the window may be one it did not run in when it
// mattered (a busy host: a hot unit sampled whole must be touched within a
// 512th of the window), and a quiet look from it is thin evidence, unless
// the unit was sampled whole and nothing touched it at any time in the
// window (access_observation::idle) while a PMem unit of the same window
// scored hot: the program ran through the window and left this unit
// alone.  That is the look a hot set that moved away wholly gives (no DRAM
// unit is touched any more); counted as thin, the old hot units cooled at
// this guarded rate and the new ones waited seconds for room.
constexpr double kDramObservationWeight = 0.5;

struct heat_clock {
  decayer pmem, dram;
  heat_clock(uint64_t half_life_ns, bool sparse)
      : pmem(half_life_ns), dram(sparse ? half_life_ns * kDramUnseenSlowdown : half_life_ns) {}
  decayer &of(const policy_unit_state &s) { return s.tier1 == kTierDram + 1 ? dram : pmem; }
};

double heat_at(const policy_unit_state &s, uint64_t now_ms, heat_clock &c) {
  uint64_t dt = now_ms > s.heat_ms ? now_ms - s.heat_ms : 0;
  return static_cast<double>(s.heat) * c.of(s).factor(dt);
}

// An observation's score: the share of sampled pages touched above chance,
// written pages adding write_weight more; 0 when nothing was sampled.
double score_of(const access_observation &o, double write_weight) {
  if (!o.sampled) return 0;
  const double sampled = o.sampled;
  double touched = std::min(o.touched, o.sampled) / sampled;
  double written = std::min(o.written, std::min(o.touched, o.sampled)) / sampled;
  // Only touches above chance are evidence: rescaled so that every sampled
  // page touched still scores 1 and the chance share 0.
  const double chance = std::clamp<double>(o.chance, 0, kMaxChance);
  if (chance > 0 && touched > 0) {
    const double above = std::max(0.0, touched - chance) / (1 - chance);
    written *= above / touched;
    touched = above;
  }
  return touched + written * write_weight;
}

// Keeps the best k entries of a stream in a heap whose top is the worst kept.
template <class Better>
void keep_best(migration_policy::pick *a, size_t &n, size_t k, const migration_policy::pick &e,
               Better better) {
  if (n < k) {
    a[n++] = e;
    std::push_heap(a, a + n, better);
  } else if (k && better(e, a[0])) {
    std::pop_heap(a, a + n, better);
    a[n - 1] = e;
    std::push_heap(a, a + n, better);
  }
}

bool hotter_first(const migration_policy::pick &a, const migration_policy::pick &b) {
  return a.heat != b.heat ? a.heat > b.heat : a.unit < b.unit;
}

// Free victims before held ones, then coldest first; of equally cold ones
// (never seen touched: heat 0), the one looked at last first.  A unit
// looked at only long ago, while the program did something else (wrote
// its heap, say), may be hot now; one seen untouched a moment ago is cold
// now.  By unit alone, units seen idle during a program's start went first
// from the heap's low end, where a hot set at the start of the heap is:
// the first exchanges demoted it (2 GiB heap, 5 % hot at its start: 14-19 s
// to 95 % in DRAM, against 3-5 s at its end).
bool colder_first(const migration_policy::pick &a, const migration_policy::pick &b) {
  if (a.held != b.held) return !a.held;
  if (a.heat != b.heat) return a.heat < b.heat;
  return a.seen_ms != b.seen_ms ? a.seen_ms > b.seen_ms : a.unit < b.unit;
}

}  // namespace

void migration_policy::release() {
  const size_t bits = (max_units_ + 63) / 64 * sizeof(uint64_t);
  const auto pages = [](size_t n) { return (n + 4095) & ~size_t{4095}; };
  if (units_ && owns_units_) sys::munmap(units_, pages(storage_bytes(max_units_)));
  if (tracked_bits_) sys::munmap(tracked_bits_, pages(bits));
  if (dram_bits_) sys::munmap(dram_bits_, pages(bits));
  units_ = nullptr;
  tracked_bits_ = dram_bits_ = nullptr;
  owns_units_ = false;
  max_units_ = 0;
}

bool migration_policy::init(const policy_params &p, size_t max_units, uint64_t now_ns,
                            void *storage) {
  if (max_units == 0 || max_units > (size_t{1} << 32)) return false;
  release();
  owns_units_ = !storage;
  if (!storage) storage = meta_map(storage_bytes(max_units));
  if (!storage) return false;
  units_ = static_cast<policy_unit_state *>(storage);
  tracked_bits_ = static_cast<uint64_t *>(meta_map((max_units + 63) / 64 * sizeof(uint64_t)));
  dram_bits_ = static_cast<uint64_t *>(meta_map((max_units + 63) / 64 * sizeof(uint64_t)));
  if (!tracked_bits_ || !dram_bits_) return false;
  ncand_ = 0;
  max_units_ = max_units;
  limit_ = 0;
  params_ = p;
  epoch_ns_ = last_ns_ = scan_now_ns_ = scan_prev_ns_ = refill_ns_ = now_ns;
  tokens_ = capacity();
  token_frac_ = 0;
  boost_ = 0;
  boost_ns_ = now_ns;
  for (auto *c : {&promotions_, &demotions_, &done_, &failed_, &skipped_, &tracked_, &scans_,
                  &decides_, &throttled_, &ignored_, &pingpongs_})
    c->store(0, std::memory_order_relaxed);
  return true;
}

void migration_policy::set_params(const policy_params &p, uint64_t now_ns) {
  refill(now_ns);
  bool was_unlimited = params_.migrate_bytes_per_sec == 0;
  params_ = p;
  if (was_unlimited) tokens_ = capacity();
  tokens_ = std::min(tokens_, capacity());
}

uint64_t migration_policy::capacity() const {
  return std::max<uint64_t>(params_.migrate_bytes_per_sec, kUnitSize);
}

void migration_policy::refill(uint64_t now_ns) {
  if (now_ns <= refill_ns_) return;
  uint64_t dt = now_ns - refill_ns_;
  refill_ns_ = now_ns;
  uint64_t rate = params_.migrate_bytes_per_sec;
  if (!rate) return;
  unsigned __int128 num = static_cast<unsigned __int128>(dt) * rate + token_frac_;
  unsigned __int128 add = num / kNsPerSec;
  token_frac_ = static_cast<uint64_t>(num % kNsPerSec);
  uint64_t cap = capacity();
  if (add >= cap - tokens_) {
    tokens_ = cap;
    token_frac_ = 0;
  } else {
    tokens_ += static_cast<uint64_t>(add);
  }
}

uint32_t migration_policy::clock_ms(uint64_t now_ns) {
  if (now_ns < last_ns_) now_ns = last_ns_;
  last_ns_ = now_ns;
  uint64_t ms = (now_ns - epoch_ns_) / kNsPerMs;
  if (ms >= kRebaseAt) {
    uint64_t shift = ms - kRebaseTo;
    rebase(shift);
    epoch_ns_ += shift * kNsPerMs;
    ms -= shift;
  }
  return static_cast<uint32_t>(ms);
}

// Moves the per-unit clock's origin forward by shift_ms; heat older than the
// new origin is decayed to it, holds that ended before it are cleared.
template <class Fn>
void migration_policy::for_bits(const uint64_t *map, Fn &&fn) const {
  for (uint32_t w = 0; w < (limit_ + 63) / 64; ++w) {
    uint64_t bits = map[w];
    while (bits) {
      fn(static_cast<uint32_t>(w * 64 + static_cast<uint32_t>(__builtin_ctzll(bits))));
      bits &= bits - 1;
    }
  }
}

void migration_policy::set_dram(uint32_t unit, bool on) {
  const uint64_t bit = uint64_t{1} << (unit % 64);
  dram_bits_[unit / 64] = on ? dram_bits_[unit / 64] | bit : dram_bits_[unit / 64] & ~bit;
}

void migration_policy::note_candidate(uint32_t unit, double heat) {
  policy_unit_state &s = units_[unit];
  if ((s.flags & kCandidate) || !(s.flags & kMovable) || s.tier1 - 1 != kTierPmem ||
      heat < params_.promote_min_heat || ncand_ == kMaxCandidates)
    return;
  s.flags |= kCandidate;
  cand_[ncand_++] = unit;
}

void migration_policy::rebase(uint64_t shift_ms) {
  heat_clock d(params_.half_life_ns, params_.sparse_sampling);
  for_bits(tracked_bits_, [&](uint32_t u) {
    policy_unit_state &s = units_[u];
    if (s.heat_ms < shift_ms) {
      s.heat = static_cast<float>(heat_at(s, shift_ms, d));
      s.heat_ms = 0;
    } else {
      s.heat_ms = static_cast<uint32_t>(s.heat_ms - shift_ms);
    }
    s.hold_ms = s.hold_ms > shift_ms ? static_cast<uint32_t>(s.hold_ms - shift_ms) : 0;
  });
}

void migration_policy::observe(uint64_t now_ns, const access_observation *obs, size_t n) {
  uint32_t now = clock_ms(now_ns);
  if (last_ns_ != scan_now_ns_) {
    scan_prev_ns_ = scan_now_ns_;
    scan_now_ns_ = last_ns_;
    scans_.fetch_add(1, std::memory_order_relaxed);
  }
  // The weight of a score covering interval ns: the share of the decay
  // window it covers.
  auto weight_of = [&](double interval) {
    if (params_.half_life_ns)
      return -std::expm1(-interval * std::numbers::ln2 / static_cast<double>(params_.half_life_ns));
    return interval == 0 ? 0.0 : 1.0;
  };
  double weight = weight_of(static_cast<double>(scan_now_ns_ - scan_prev_ns_));
  double write_weight = params_.write_weight_pct / 100.0;
  heat_clock d(params_.half_life_ns, params_.sparse_sampling);
  // The program seen running in this window (kDramObservationWeight): a
  // DRAM sample touched, or a PMem unit scoring hot.
  bool dram_live = false, pmem_hot = false;
  for (size_t i = 0; i < n; ++i) {
    dram_live = dram_live || (obs[i].tier == kTierDram && obs[i].touched);
    pmem_hot = pmem_hot || (obs[i].tier == kTierPmem && score_of(obs[i], write_weight) >= params_.promote_min_heat);
  }
  for (size_t i = 0; i < n; ++i) {
    const access_observation &o = obs[i];
    if (o.unit >= max_units_ || (o.tier != kTierDram && o.tier != kTierPmem)) {
      ignored_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    policy_unit_state &s = units_[o.unit];
    double h = 0;
    double w = weight;
    if (!s.tier1) {
      if (params_.sparse_sampling) w = weight_of(static_cast<double>(now) * kNsPerMs);
      s = policy_unit_state{};
      tracked_.fetch_add(1, std::memory_order_relaxed);
      tracked_bits_[o.unit / 64] |= uint64_t{1} << (o.unit % 64);
      if (o.unit >= limit_) limit_ = o.unit + 1;
    } else {
      if (params_.sparse_sampling) w = weight_of(static_cast<double>(now - s.heat_ms) * kNsPerMs);
      h = heat_at(s, now, d);
    }
    const double score = score_of(o, write_weight);
    const bool quiet = o.sampled && score < params_.promote_min_heat;
    const bool sure = dram_live || (o.idle && pmem_hot);  // a quiet look that is evidence
    // A DRAM unit seen again in the rotation: its heat as it stands moves
    // towards the score by w, at most kDramObservationWeight, unless this
    // is its second quiet look in a row (kDramObservationWeight).
    const bool dram_seen = params_.sparse_sampling && o.tier == kTierDram && s.tier1 == kTierDram + 1;
    if (dram_seen && quiet && sure && (s.flags & kQuiet)) {
      h = s.heat * d.pmem.factor(now > s.heat_ms ? now - s.heat_ms : 0);
      h *= 1 - w;
    } else if (dram_seen) {
      w = std::min(w, kDramObservationWeight);
      if (o.sampled) h *= 1 - w;
    }
    h += w * score;
    s.heat = static_cast<float>(h);
    s.heat_ms = now;
    s.tier1 = static_cast<uint8_t>(o.tier + 1);
    uint8_t f = static_cast<uint8_t>(o.movable ? s.flags | kMovable : s.flags & ~kMovable);
    if (o.tier != kTierDram || (o.sampled && !quiet)) f &= static_cast<uint8_t>(~kQuiet);
    if (o.tier == kTierDram && quiet && sure) f |= kQuiet;
    s.flags = f;
    set_dram(o.unit, o.tier == kTierDram);
    note_candidate(o.unit, h);
  }
}

void migration_policy::emit(policy_migration *out, size_t &n, uint32_t unit, int to) {
  out[n++] = policy_migration{unit, static_cast<uint8_t>(to)};
  units_[unit].pending1 = static_cast<uint8_t>(to + 1);
  if (params_.migrate_bytes_per_sec) tokens_ -= kUnitSize;
  (to == kTierDram ? promotions_ : demotions_).fetch_add(1, std::memory_order_relaxed);
}

size_t migration_policy::decide(uint64_t now_ns, size_t dram_budget_units, size_t dram_units_now,
                                policy_migration *out, size_t max, size_t dram_short_units) {
  uint32_t now = clock_ms(now_ns);
  refill(last_ns_);
  decides_.fetch_add(1, std::memory_order_relaxed);
  size_t cap = std::min(max, kPolicyMaxBatch);
  size_t allowed = cap;
  if (params_.migrate_bytes_per_sec) allowed = std::min<uint64_t>(allowed, tokens_ / kUnitSize);
  if (!allowed || !units_) return 0;

  // Select the hottest promotion candidates and, when anything may go
  // down, the coldest demotion victims.
  size_t np = 0, nv = 0;
  pick_candidates(now, allowed, np);
  if (dram_units_now > dram_budget_units || (np && dram_units_now >= dram_budget_units))
    pick_victims(now, allowed, nv);
  std::sort_heap(promote_, promote_ + np, hotter_first);
  std::sort_heap(demote_, demote_ + nv, colder_first);

  size_t n = 0, pi = 0, vi = 0;
  size_t dram = dram_units_now, budget = dram_budget_units;
  size_t short_units = std::min(dram_short_units, dram_units_now);
  // 1. Over budget: demote coldest first until within it.
  while (dram > budget && vi < nv && n < allowed) {
    emit(out, n, demote_[vi++].unit, kTierPmem);
    --dram;
    if (short_units) --short_units;
  }
  // 2. Free budget: promote warm units, hottest first.
  while (dram < budget && pi < np && n < allowed) {
    emit(out, n, promote_[pi++].unit, kTierDram);
    ++dram;
  }
  // 3. At budget: exchange while the candidate is clearly hotter; DRAM's
  // shortfall first paid by more demotions (lowering the budget with D).
  const double ratio = (100.0 + params_.swap_ratio_pct) / 100.0;
  const double margin = params_.swap_margin + boost_at(last_ns_);
  bool paying_warm = false;  // the shortfall's warm victims were weighed together
  while (dram == budget && pi < np && vi < nv && n + 2 <= allowed) {
    const pick &c = promote_[pi];
    const pick &v = demote_[vi];
    if (v.held) break;
    double ch = c.heat, vh = v.heat;
    if (ch < vh + margin || ch < vh * ratio) break;
    // Cold units pay the shortfall freely.  Past them (victims come coldest
    // first) the rest of it and the pair's victim must together be clearly
    // colder than the candidate and fit in the batch, else nothing more
    // moves: a large shortfall would demote the hot set itself (its heat
    // dips between samples), and a pair whose promotion finds no room only
    // shrinks DRAM.
    if (short_units && !paying_warm && vh >= params_.promote_min_heat) {
      double total = 0;
      size_t k = 0;
      for (; k <= short_units && vi + k < nv && !demote_[vi + k].held; ++k) total += demote_[vi + k].heat;
      if (k <= short_units || n + short_units + 2 > allowed || ch < total + margin || ch < total * ratio) break;
      paying_warm = true;
    }
    emit(out, n, v.unit, kTierPmem);
    ++vi;
    if (short_units) {
      --short_units;
      --dram;
      --budget;
      continue;
    }
    emit(out, n, c.unit, kTierDram);
    ++pi;
  }
  if (n == allowed && allowed < cap) throttled_.fetch_add(1, std::memory_order_relaxed);
  return n;
}

// The candidates still warm enough into promote_ (the set compacted: a
// unit gone, moved up, cooled below promote_min_heat or no longer movable
// leaves it).
void migration_policy::pick_candidates(uint32_t now, size_t allowed, size_t &np) {
  heat_clock d(params_.half_life_ns, params_.sparse_sampling);
  size_t kept = 0;
  for (size_t i = 0; i < ncand_; ++i) {
    const uint32_t u = cand_[i];
    policy_unit_state &s = units_[u];
    // Not flagged: forgotten since, or a second entry of a unit forgotten
    // and noted again (the first one took the flag off).
    if (!(s.flags & kCandidate)) continue;
    s.flags &= static_cast<uint8_t>(~kCandidate);
    const float h = static_cast<float>(heat_at(s, now, d));
    if (!(s.flags & kMovable) || s.tier1 - 1 != kTierPmem || h < params_.promote_min_heat) continue;
    cand_[kept++] = u;
    if (s.pending1 || now < s.hold_ms) continue;
    keep_best(promote_, np, allowed, pick{h, u, false}, hotter_first);
  }
  ncand_ = kept;
  for (size_t i = 0; i < ncand_; ++i) units_[cand_[i]].flags |= kCandidate;
}

// The coldest DRAM units into demote_ (free ones before those within their
// residency time).
void migration_policy::pick_victims(uint32_t now, size_t allowed, size_t &nv) {
  heat_clock d(params_.half_life_ns, params_.sparse_sampling);
  for_bits(dram_bits_, [&](uint32_t u) {
    const policy_unit_state &s = units_[u];
    if (!(s.flags & kMovable) || s.pending1) return;
    const bool held = now < s.hold_ms;
    if (held && (s.flags & kBackoff)) return;
    keep_best(demote_, nv, allowed, pick{static_cast<float>(heat_at(s, now, d)), u, held, s.heat_ms}, colder_first);
  });
}

void migration_policy::report(uint64_t now_ns, policy_migration m, migration_result r) {
  uint32_t now = clock_ms(now_ns);
  if (m.unit >= limit_ || !units_[m.unit].tier1 || units_[m.unit].pending1 != m.to_tier + 1) {
    ignored_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  policy_unit_state &s = units_[m.unit];
  s.pending1 = 0;
  switch (r) {
    case migration_result::done: {
      if (m.to_tier == kTierDram && (s.flags & kSentDown) && params_.pingpong_boost > 0) {
        const uint32_t down_ms = s.hold_ms - std::min(s.hold_ms, ms_of(params_.min_residency_ns));
        if (now - std::min(now, down_ms) < ms_of(params_.pingpong_window_ns)) {
          boost_ = std::min(boost_at(now_ns) + params_.pingpong_boost, params_.pingpong_boost_max);
          boost_ns_ = std::max(now_ns, boost_ns_);
          pingpongs_.fetch_add(1, std::memory_order_relaxed);
        }
      }
      s.flags = static_cast<uint8_t>(m.to_tier == kTierPmem ? s.flags | kSentDown : s.flags & ~kSentDown);
      s.tier1 = static_cast<uint8_t>(m.to_tier + 1);
      s.fails = 0;
      s.flags &= static_cast<uint8_t>(~kBackoff);
      s.hold_ms = add_sat(now, ms_of(params_.min_residency_ns));
      set_dram(m.unit, m.to_tier == kTierDram);
      heat_clock d(params_.half_life_ns, params_.sparse_sampling);
      note_candidate(m.unit, heat_at(s, now, d));  // a warm unit sent down may come back
      done_.fetch_add(1, std::memory_order_relaxed);
      break;
    }
    case migration_result::failed: {
      if (s.fails < UINT8_MAX) ++s.fails;
      uint64_t backoff = params_.fail_backoff_ns;
      for (unsigned i = 1; i < s.fails && backoff < params_.fail_backoff_max_ns; ++i) backoff *= 2;
      backoff = std::min(backoff, params_.fail_backoff_max_ns);
      s.flags |= kBackoff;
      s.hold_ms = add_sat(now, ms_of(backoff));
      failed_.fetch_add(1, std::memory_order_relaxed);
      break;
    }
    case migration_result::skipped:
      if (params_.migrate_bytes_per_sec) tokens_ = std::min(tokens_ + kUnitSize, capacity());
      skipped_.fetch_add(1, std::memory_order_relaxed);
      break;
  }
}

// The thrashing guard's extra exchange margin at now_ns.
double migration_policy::boost_at(uint64_t now_ns) const {
  if (boost_ == 0 || now_ns <= boost_ns_ || params_.boost_half_life_ns == 0) return boost_;
  return boost_ * std::exp2(-static_cast<double>(now_ns - boost_ns_) / static_cast<double>(params_.boost_half_life_ns));
}

void migration_policy::forget(uint32_t unit) {
  if (unit >= limit_ || !units_[unit].tier1) return;
  units_[unit] = policy_unit_state{};  // out of cand_ too (its entry is dropped at the next decide)
  tracked_bits_[unit / 64] &= ~(uint64_t{1} << (unit % 64));
  set_dram(unit, false);
  tracked_.fetch_sub(1, std::memory_order_relaxed);
}

double migration_policy::heat(uint32_t unit, uint64_t now_ns) const {
  if (unit >= limit_ || !units_[unit].tier1) return 0.0;
  if (now_ns < last_ns_) now_ns = last_ns_;
  heat_clock d(params_.half_life_ns, params_.sparse_sampling);
  return heat_at(units_[unit], (now_ns - epoch_ns_) / kNsPerMs, d);
}

int migration_policy::tier(uint32_t unit) const {
  if (unit >= limit_) return -1;
  return static_cast<int>(units_[unit].tier1) - 1;
}

policy_counters migration_policy::counters() const {
  auto get = [](const std::atomic<uint64_t> &c) { return c.load(std::memory_order_relaxed); };
  return policy_counters{get(promotions_), get(demotions_), get(done_),     get(failed_),
                         get(skipped_),    get(tracked_),   get(scans_),    get(decides_),
                         get(throttled_),  get(ignored_),   get(pingpongs_)};
}

}  // namespace mmtier::detail
