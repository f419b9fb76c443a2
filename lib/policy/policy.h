// Promotion/demotion policy: decides which units move between DRAM and PMem.
// Pure and deterministic: it is fed the time and access observations, and
// answers with a list of migrations; it never touches the heap, never makes
// a syscall (except meta_map when it is asked to find its own storage) and
// never allocates.  Tracking (lib/track) produces the observations and
// migration carries out the decisions; the background thread's loop is
//
//   observe(now, samples) -> decide(now, budget, dram_now, out) ->
//   migrate out[0..n) in order -> report(now, out[i], result) for each
//
// Hotness.  Each observation gives a score: the fraction of the unit's
// sampled pages found touched in the scan, a written page counting extra
// (write_weight_pct).  Heat is the time-weighted average of the score with
// exponential decay: between scans it decays by 2^(-dt/half_life), and a scan
// covering an interval I adds score * (1 - 2^(-I/half_life)).  So a unit
// scoring s in every scan tends to heat s whatever the scan intervals are,
// and a unit scoring s since time 0 has exactly s * (1 - 2^(-t/half_life)).
// A unit that is not observed in a scan only decays (scored as 0).  Under
// sparse sampling (units watched in rotation) a DRAM unit decays 16 times
// slower and one observation moves its heat at most halfway to its score
// (policy.cc, kDramUnseenSlowdown): not being looked at is no evidence of
// cold, and one window's page little.
// Heat 1.0 means "every sampled page read in every scan".  An observation
// may say what share of its pages a cold unit shows touched by chance
// (access_observation::chance): the score then counts only the share above
// it, rescaled to 0..1 (a unit touched no more than chance scores 0).
//
// Decisions (decide()), with D the caller's count of DRAM units and B the
// budget:
//   1. D > B (budget lowered, or placed over it): demote the coldest movable
//      DRAM units until D == B; recently moved units go last.  No promotion.
//   2. D < B: promote the hottest PMem units whose heat is at least
//      promote_min_heat, while D < B (warm units may fill free budget; idle
//      ones never move up).
//   3. D == B: exchange pairs, hottest PMem candidate against coldest DRAM
//      victim, while the candidate is hotter than the victim by swap_margin
//      and by swap_ratio_pct; each pair is emitted demotion first.  When
//      DRAM's memory is short (S units below what it keeps: a NUMA node the
//      kernel filled to its low watermarks, or other processes did), the
//      first pairs are preceded by S more demotions, each victim colder
//      than the candidate by the same margins, since a promotion before
//      them would find no room; cold victims (below promote_min_heat) pay
//      freely, warmer ones only if they and the pair's victim are together
//      clearly colder than the candidate, and otherwise nothing more moves
//      (no pair whose promotion would find no room); demotions of rule 1
//      count towards S.  S
//      lowers D and B alike (the budget is what fits); what the margins or
//      the rate leave unpaid waits for the next decide.
// Applied in order, and every migration succeeding, D never exceeds B.  If a
// demotion fails, the promotion after it would take D to B + 1; a caller
// that wants D <= B strictly skips a promotion while D >= B (and reports it
// as skipped, which refunds its tokens).  A unit that moved less
// than min_residency_ns ago, or whose last migration failed less than its
// back-off ago, or that has a decision outstanding, is not chosen.  Units
// observed as not movable (a forced tier) are never chosen.
//
// Rate.  A token bucket in bytes refilled at migrate_bytes_per_sec (0:
// unlimited), holding at most one second's worth and at least one unit;
// every decided migration costs kUnitSize, a skipped one is refunded.
//
// Threading: one thread drives a policy object (observe, decide, report,
// forget, heat, tier); counters() may be called from any thread.  Every
// migration returned by decide() must be reported exactly once, before the
// next decide(): dram_units_now is read as the state after all of them.
#pragma once

#include "support/layout.h"
#include "tier/tier.h"
#include "track/observation.h"

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

struct policy_params {
  // Time for the heat of an unobserved (or idle) unit to halve.  Short: the
  // policy reacts fast to a moving hot set; long: it remembers bursts.
  uint64_t half_life_ns = 1'000'000'000;
  // Extra weight of a written page over a read one, in percent of a read
  // (100: a written page counts twice).  Writes cost more on PMem.
  uint32_t write_weight_pct = 100;
  // Least heat for any promotion: units below it stay on PMem even when
  // DRAM has room (1/8: an eighth of the sampled pages touched per scan).
  double promote_min_heat = 0.125;
  // An exchange needs candidate >= victim + swap_margin and
  // candidate >= victim * (100 + swap_ratio_pct) / 100: hysteresis, so
  // sets of similar heat do not trade places on sampling noise.
  double swap_margin = 0.0625;
  uint32_t swap_ratio_pct = 25;
  // Thrashing guard: a unit promoted again within pingpong_window_ns of
  // its demotion adds pingpong_boost to the exchange margin (up to
  // pingpong_boost_max); the extra margin halves every boost_half_life_ns.
  // Where sampling cannot tell the units at the edge of the hot set apart,
  // they stop trading places; 0 turns the guard off.
  double pingpong_boost = 0.1;
  double pingpong_boost_max = 1.0;
  uint64_t pingpong_window_ns = 10'000'000'000;
  uint64_t boost_half_life_ns = 10'000'000'000;
  // A unit that has just moved (either way) is not moved again before this.
  uint64_t min_residency_ns = 2'000'000'000;
  // After a failed migration the unit is left alone this long, doubling with
  // each consecutive failure up to fail_backoff_max_ns.
  uint64_t fail_backoff_ns = 2'000'000'000;
  uint64_t fail_backoff_max_ns = 64'000'000'000;
  // Migration bandwidth in bytes per second, 0: unlimited.  Bursts of up to
  // one second's worth (at least one unit) are allowed.
  uint64_t migrate_bytes_per_sec = uint64_t{256} << 20;
  // How a scan that does not observe a unit counts.  false: as a score of 0
  // (every unit is watched in every scan).  true: as no information (units
  // are watched in rotation): an observation then stands for the whole time
  // since the unit's previous one, and a unit's first observation for the
  // time since the policy started.
  bool sparse_sampling = false;
};


// One decision: move unit to tier to_tier.
struct policy_migration {
  uint32_t unit;
  uint8_t to_tier;
};

enum class migration_result : uint8_t {
  done,     // the unit is now on to_tier
  failed,   // it stayed where it was; back off before trying it again
  skipped,  // not attempted (e.g. it would have overrun the budget); no back-off
};

struct policy_counters {
  uint64_t promotions_decided;
  uint64_t demotions_decided;
  uint64_t migrations_done;
  uint64_t migrations_failed;
  uint64_t migrations_skipped;
  uint64_t units_tracked;     // units observed and not forgotten
  uint64_t scans;             // distinct scan times observed
  uint64_t decides;
  uint64_t throttled;         // decides that spent every token they had
  uint64_t ignored;           // observations or reports that made no sense
  uint64_t pingpongs;         // units promoted again soon after their demotion
};

// Per-unit state, 16 bytes, in a dense array indexed by unit (zero: unknown).
// Times are milliseconds on the policy's own clock (rebased before they
// could overflow).
struct policy_unit_state {
  float heat;         // heat as of heat_ms
  uint32_t heat_ms;
  uint32_t hold_ms;   // not moved before this (residency or back-off)
  uint8_t tier1;      // tier + 1; 0: not tracked
  uint8_t flags;
  uint8_t fails;      // consecutive failed migrations
  uint8_t pending1;   // tier + 1 of the outstanding decision; 0: none
};
static_assert(sizeof(policy_unit_state) == 16);

// Decisions per decide() call at most (the selection scratch is this big).
inline constexpr size_t kPolicyMaxBatch = 512;

class migration_policy {
 public:
  constexpr migration_policy() = default;
  migration_policy(const migration_policy &) = delete;
  migration_policy &operator=(const migration_policy &) = delete;

  // Bytes of zeroed storage init() needs for max_units units.
  static constexpr size_t storage_bytes(size_t max_units) {
    return max_units * sizeof(policy_unit_state);
  }

  // Starts the policy at now_ns (the clock's epoch) for unit indices below
  // max_units.  storage: storage_bytes(max_units) zeroed bytes, 4-aligned,
  // or nullptr to take them from meta_map (lazily committed).  False if
  // max_units is 0 or above 2^32, or no storage could be had.
  [[nodiscard]] bool init(const policy_params &p, size_t max_units, uint64_t now_ns,
                          void *storage = nullptr);
  // Gives back the memory init took from meta_map; the policy is then
  // uninitialised (a fork child or a restored process starts anew, and
  // would otherwise leave the old storage mapped for good).
  void release();

  // Replaces the parameters (e.g. a new rate); unit state is kept.
  void set_params(const policy_params &p, uint64_t now_ns);
  const policy_params &params() const { return params_; }

  // Feeds one scan's observations.  A scan may be fed in several calls with
  // the same now_ns; a unit must appear at most once per scan.  The first
  // observation of a unit starts tracking it (heat 0); tier and movable are
  // taken from every observation.
  void observe(uint64_t now_ns, const access_observation *obs, size_t n);

  // Writes up to max (capped at kPolicyMaxBatch) migrations to out, in the
  // order they must be applied, and returns how many.  dram_budget_units:
  // the DRAM budget now (SIZE_MAX: none); dram_units_now: units on DRAM now,
  // forced ones included; dram_short_units: DRAM units its memory is short
  // of (S above).  An exchange needs room for two entries.
  [[nodiscard]] size_t decide(uint64_t now_ns, size_t dram_budget_units, size_t dram_units_now,
                              policy_migration *out, size_t max, size_t dram_short_units = 0);

  // The outcome of one migration returned by decide().
  void report(uint64_t now_ns, policy_migration m, migration_result r);

  // The unit left the heap (unmapped, freed): its state is dropped.
  void forget(uint32_t unit);

  // Heat of a unit at now_ns (0 when not tracked).
  [[nodiscard]] double heat(uint32_t unit, uint64_t now_ns) const;
  // Tier the policy believes the unit is on, -1 when not tracked.
  [[nodiscard]] int tier(uint32_t unit) const;

  [[nodiscard]] policy_counters counters() const;

  // Selection scratch entry (public for the .cc's helpers).
  struct pick {
    float heat;
    uint32_t unit;
    bool held;  // within its residency time
    uint32_t seen_ms = 0;  // victims: when last looked at
  };

 private:
  uint32_t clock_ms(uint64_t now_ns);
  void rebase(uint64_t shift_ms);
  void refill(uint64_t now_ns);
  uint64_t capacity() const;
  void emit(policy_migration *out, size_t &n, uint32_t unit, int to);

  // Visits every unit of a bitmap (ascending), skipping empty ranges by 64
  // at a time.
  template <class Fn>
  void for_bits(const uint64_t *bits, Fn &&fn) const;
  void set_dram(uint32_t unit, bool on);
  // A unit that may now be promoted (on PMem, movable, heat at least
  // promote_min_heat) joins the candidates.
  void note_candidate(uint32_t unit, double heat);
  void pick_candidates(uint32_t now, size_t allowed, size_t &np);
  void pick_victims(uint32_t now, size_t allowed, size_t &nv);
  double boost_at(uint64_t now_ns) const;

 public:
  // Promotion candidates kept at most (more: the hottest of the others wait
  // for their next observation).
  static constexpr size_t kMaxCandidates = 4096;

 private:

  policy_params params_{};
  policy_unit_state *units_ = nullptr;
  uint64_t *tracked_bits_ = nullptr;  // one bit per unit: tier1 != 0
  uint64_t *dram_bits_ = nullptr;     // one bit per unit: tracked, on DRAM
  bool owns_units_ = false;           // units_ came from meta_map
  // The promotion candidates: the PMem units whose heat was at least
  // promote_min_heat when last observed or moved.  Heat only rises when a
  // unit is observed, so no other unit can be one: decide() looks at these
  // and, only when something may be demoted, at the DRAM units, never at
  // every unit (its cost follows the hot set and the DRAM budget, not the
  // heap).
  uint32_t cand_[kMaxCandidates]{};
  size_t ncand_ = 0;
  size_t max_units_ = 0;
  uint32_t limit_ = 0;           // highest unit index ever observed + 1
  uint64_t epoch_ns_ = 0;        // ms 0 of the per-unit clock
  uint64_t last_ns_ = 0;         // latest time seen (the clock never goes back)
  uint64_t scan_now_ns_ = 0;     // time of the current scan
  uint64_t scan_prev_ns_ = 0;    // time of the scan before it
  uint64_t tokens_ = 0;          // bytes
  uint64_t token_frac_ = 0;      // bytes * 1e9 not yet credited
  double boost_ = 0;             // extra exchange margin as of boost_ns_
  uint64_t boost_ns_ = 0;
  uint64_t refill_ns_ = 0;
  pick promote_[kPolicyMaxBatch]{};
  pick demote_[kPolicyMaxBatch]{};

  std::atomic<uint64_t> promotions_{0}, demotions_{0}, done_{0}, failed_{0}, skipped_{0},
      tracked_{0}, scans_{0}, decides_{0}, throttled_{0}, ignored_{0}, pingpongs_{0};
};

}  // namespace mmtier::detail
