// The software tracker's rules (lib/track/software_tracker): rotation,
// screening and confirmation, neighbours, and the cost rule, driven with
// made-up unit lists and window results (no heap involved).
#include "track/software_tracker.h"

#include "tier/tier.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

namespace mmtier::detail {
namespace {

struct listing {
  std::vector<uint32_t> units;
  std::vector<uint8_t> tiers;
  // PMem units [0, pmem), DRAM units [pmem, pmem + dram).
  listing(uint32_t pmem, uint32_t dram) {
    for (uint32_t u = 0; u < pmem + dram; ++u) {
      units.push_back(u);
      tiers.push_back(u < pmem ? kTierPmem : kTierDram);
    }
  }
  unit_list view() const { return {units.data(), tiers.data(), units.size()}; }
};

struct window {
  std::vector<uint32_t> units = std::vector<uint32_t>(software_tracker::kChosenMax);
  std::vector<uint8_t> pages = std::vector<uint8_t>(software_tracker::kChosenMax);
  size_t n = 0;
  uint8_t pages_of(uint32_t u) const {
    for (size_t i = 0; i < n; ++i)
      if (units[i] == u) return pages[i];
    return 0;
  }
};

window choose(software_tracker &t, const listing &l) {
  window w;
  w.n = t.choose(l.view(), w.units.data(), w.pages.data(), w.units.size());
  return w;
}

TEST(SoftwareTracker, RotationWatchesEveryUnitInTurn) {
  listing l(1000, 200);
  software_tracker t;
  std::set<uint32_t> seen;
  for (int k = 0; k < 16; ++k) {
    const window w = choose(t, l);
    ASSERT_TRUE(std::is_sorted(w.units.begin(), w.units.begin() + w.n));
    ASSERT_EQ(std::adjacent_find(w.units.begin(), w.units.begin() + w.n), w.units.begin() + w.n) << "each once";
    size_t pmem = 0, dram = 0;
    for (size_t i = 0; i < w.n; ++i) {
      (w.units[i] < 1000 ? pmem : dram)++;
      EXPECT_EQ(w.pages[i], 1) << "no suspects: one page each";
      seen.insert(w.units[i]);
    }
    EXPECT_EQ(pmem, t.pmem_per_scan());
    EXPECT_EQ(dram, t.dram_per_scan());
    EXPECT_EQ(t.dram_per_scan(), std::max<size_t>(2, t.pmem_per_scan() / 8));
  }
  // 16 windows of 64 PMem and 8 DRAM units: every PMem unit once (1024 >=
  // 1000), and the DRAM rotation has gone 128 of 200 round.
  for (uint32_t u = 0; u < 1000; ++u) EXPECT_TRUE(seen.count(u)) << u;
  EXPECT_EQ(std::count_if(seen.begin(), seen.end(), [](uint32_t u) { return u >= 1000; }), 128);
}

TEST(SoftwareTracker, EachWindowIsSpreadOverTheWholeHeap) {
  listing l(1000, 0);
  software_tracker t;
  for (int k = 0; k < 40; ++k) {
    const window w = choose(t, l);
    ASSERT_EQ(w.n, t.pmem_per_scan());
    // The largest gap between two picks (cyclic) is well under 64 units: a
    // hot run of 64 neighbouring units is in every window.
    size_t gap = w.units[0] + 1000 - w.units[w.n - 1];
    for (size_t i = 1; i < w.n; ++i) gap = std::max<size_t>(gap, w.units[i] - w.units[i - 1]);
    EXPECT_LT(gap, 64u) << "window " << k;
  }
}

TEST(SoftwareTracker, TheStrideVisitsEveryEntryOnce) {
  for (size_t n : {1u, 2u, 3u, 10u, 64u, 100u, 1000u, 4096u, 65537u}) {
    const size_t s = spread_stride(n);
    std::vector<bool> seen(n);
    for (size_t k = 0; k < n; ++k) seen[k * s % n] = true;
    EXPECT_EQ(std::count(seen.begin(), seen.end(), true), static_cast<long>(n)) << n;
  }
}

TEST(SoftwareTracker, AOnePageHitIsConfirmedWithFourPagesBeforeThePolicyHearsOfIt) {
  listing l(100, 10);
  software_tracker t;
  (void)choose(t, l);
  const sample_result hit[] = {{42, kTierPmem, 1, 1, 0}, {43, kTierPmem, 1, 0, 0}};
  access_observation obs[8];
  size_t touched = 0;
  ASSERT_EQ(t.observe(hit, 2, l.view(), obs, 8, &touched), 1u) << "the hit is held back";
  EXPECT_EQ(obs[0].unit, 43u) << "a cold screening sample is an observation (idle)";
  EXPECT_EQ(obs[0].touched, 0);
  EXPECT_EQ(touched, 1u);
  const window w = choose(t, l);
  EXPECT_EQ(w.pages_of(42), software_tracker::kConfirmPages) << "watched again, with more pages";
  const sample_result confirm[] = {{42, kTierPmem, 4, 3, 1}};
  ASSERT_EQ(t.observe(confirm, 1, l.view(), obs, 8, &touched), 1u);
  EXPECT_EQ(obs[0].unit, 42u);
  EXPECT_EQ(obs[0].sampled, 4);
  EXPECT_EQ(obs[0].touched, 3);
  EXPECT_EQ(obs[0].written, 1);
}

TEST(SoftwareTracker, AConfirmedHotUnitMakesItsPmemNeighboursSuspects) {
  listing l(50, 10);  // 0..49 PMem, 50..59 DRAM; 30 missing below
  l.units.erase(l.units.begin() + 30);
  l.tiers.erase(l.tiers.begin() + 30);
  software_tracker t;
  const sample_result r[] = {{20, kTierPmem, 4, 2, 0},   // hot enough: half touched
                             {1, kTierPmem, 4, 4, 0},    // none below 0
                             {31, kTierPmem, 4, 4, 0},   // 30 is not listed
                             {49, kTierPmem, 4, 4, 0},   // 50 is DRAM
                             {10, kTierPmem, 4, 0, 0}};  // cold
  access_observation obs[8];
  ASSERT_EQ(t.observe(r, 5, l.view(), obs, 8, nullptr), 5u);
  const uint32_t *s;
  const size_t n = t.suspects(&s);
  // kNeighbourReach (4) either side, listed PMem units only.
  EXPECT_EQ(std::vector<uint32_t>(s, s + n),
            (std::vector<uint32_t>{0, 2, 3, 4, 5, 16, 17, 18, 19, 21, 22, 23, 24, 27, 28, 29, 32, 33, 34, 35, 45, 46, 47, 48}));
}

// Neighbours beyond the next window's room for suspects wait in the
// frontier and become suspects in later windows, oldest first, skipping
// those that left PMem meanwhile: the walk along a hot region is not cut
// short by a window that confirmed many of its units.
TEST(SoftwareTracker, NeighboursWithoutRoomWaitForLaterWindows) {
  listing l(400, 0);
  software_tracker t;
  ASSERT_TRUE(t.searching());
  ASSERT_EQ(t.pmem_per_scan(), software_tracker::kPmemStart);
  const size_t cap = software_tracker::kPmemStart / 2;  // 32 suspects a window
  // Ten hot units 20 apart: 80 neighbours (8 each) for 32 places.
  std::vector<sample_result> r;
  for (uint32_t u = 100; u < 300; u += 20) r.push_back({u, kTierPmem, 4, 4, 0});
  access_observation obs[64];
  ASSERT_EQ(t.observe(r.data(), r.size(), l.view(), obs, 64, nullptr), r.size());
  const auto neighbours_of = [](std::initializer_list<uint32_t> hot, uint32_t except) {
    std::vector<uint32_t> v;
    for (uint32_t u : hot)
      for (uint32_t d = 1; d <= software_tracker::kNeighbourReach; ++d)
        for (uint32_t nb : {u - d, u + d})
          if (nb != except) v.push_back(nb);
    std::sort(v.begin(), v.end());
    return v;
  };
  const auto suspects_now = [&t] {
    const uint32_t *s;
    const size_t n = t.suspects(&s);
    return std::vector<uint32_t>(s, s + n);
  };
  EXPECT_EQ(suspects_now(), neighbours_of({100, 120, 140, 160}, 0)) << "the first four units' neighbours";
  EXPECT_EQ(t.frontier(), 80 - cap);
  // Meanwhile a waiting neighbour, the last one queued, moved up to DRAM.
  listing moved = l;
  moved.tiers[284] = kTierDram;
  ASSERT_EQ(t.observe(nullptr, 0, moved.view(), obs, 64, nullptr), 0u);
  EXPECT_EQ(suspects_now(), neighbours_of({180, 200, 220, 240}, 0)) << "oldest first";
  ASSERT_EQ(t.observe(nullptr, 0, moved.view(), obs, 64, nullptr), 0u);
  EXPECT_EQ(suspects_now(), neighbours_of({260, 280}, 284)) << "the rest, without the one that left PMem";
  EXPECT_EQ(t.frontier(), 0u);
}

// Once steady, neighbours without room are dropped, not queued: a hot unit
// that cannot move up would otherwise keep the frontier full of its own
// neighbours for ever.
TEST(SoftwareTracker, SteadyTrackingQueuesNoNeighbours) {
  listing l(400, 0);
  software_tracker t;
  for (uint32_t i = 0; i < software_tracker::kQuietScans; ++i) t.promoted(0);
  ASSERT_FALSE(t.searching());
  std::vector<sample_result> r;
  for (uint32_t u = 100; u < 300; u += 5) r.push_back({u, kTierPmem, 4, 4, 0});
  access_observation obs[64];
  ASSERT_EQ(t.observe(r.data(), r.size(), l.view(), obs, 64, nullptr), r.size());
  const uint32_t *s;
  EXPECT_EQ(t.suspects(&s), software_tracker::kPmemStart / 2);
  EXPECT_EQ(t.frontier(), 0u);
}

// Once steady, a confirmed hot unit makes only its next neighbours
// suspects, and suspects stay within half a window's PMem units.
TEST(SoftwareTracker, SteadyTrackingSuspectsOnlyTheNextNeighbours) {
  listing l(50, 10);
  software_tracker t;
  choose(t, l);  // the whole list in one window: a rotation, nothing promoted
  ASSERT_FALSE(t.searching());
  const sample_result r[] = {{20, kTierPmem, 4, 4, 0}};
  access_observation obs[4];
  ASSERT_EQ(t.observe(r, 1, l.view(), obs, 4, nullptr), 1u);
  const uint32_t *s;
  const size_t n = t.suspects(&s);
  EXPECT_EQ(std::vector<uint32_t>(s, s + n), (std::vector<uint32_t>{19, 21}));
  // Many screening hits: no more suspects than half the window's PMem units.
  std::vector<sample_result> hits;
  for (uint32_t u = 0; u < 50; ++u) hits.push_back({u, kTierPmem, 1, 1, 0});
  std::vector<access_observation> none(64);
  t.observe(hits.data(), hits.size(), l.view(), none.data(), none.size(), nullptr);
  EXPECT_EQ(t.suspects(&s), t.pmem_per_scan() / 2);
}

TEST(SoftwareTracker, DramSamplesAreNotScreened) {
  listing l(10, 10);
  software_tracker t;
  // Unit 16 sampled whole and not touched at any time: the policy hears so.
  const sample_result r[] = {{15, kTierDram, 1, 1, 1}, {16, kTierDram, 1, 0, 0, 1}};
  access_observation obs[2];
  ASSERT_EQ(t.observe(r, 2, l.view(), obs, 2, nullptr), 2u);
  EXPECT_EQ(obs[0].tier, kTierDram);
  EXPECT_FALSE(obs[0].idle);
  EXPECT_TRUE(obs[1].idle) << "a unit untouched all window reached the policy as thin evidence";
  const uint32_t *s;
  EXPECT_EQ(t.suspects(&s), 0u);
}

TEST(SoftwareTracker, TheCostRuleKeepsTrackingBetweenItsBounds) {
  software_tracker t;
  constexpr uint64_t kInterval = 100'000'000;
  ASSERT_TRUE(t.searching()) << "from the start";
  EXPECT_EQ(t.pmem_per_scan(), software_tracker::kPmemStart);
  t.account(kInterval / 100 * 7, kInterval);  // 7 %: too much even while searching
  EXPECT_EQ(t.pmem_per_scan(), software_tracker::kPmemStart * 3 / 4);
  t.account(kInterval / 100 * 4, kInterval);  // 4 %: between the bounds
  EXPECT_EQ(t.pmem_per_scan(), software_tracker::kPmemStart * 3 / 4);
  for (int i = 0; i < 50; ++i) t.account(kInterval, kInterval);
  EXPECT_EQ(t.pmem_per_scan(), software_tracker::kPmemMin);
  for (int i = 0; i < 100; ++i) t.account(0, kInterval);
  EXPECT_EQ(t.pmem_per_scan(), software_tracker::kPmemMax);
  EXPECT_EQ(t.dram_per_scan(), software_tracker::kDramPerScan);

  // One whole rotation with nothing moved: steady, and the bound is lower.
  listing l(100, 20);
  choose(t, l);
  ASSERT_FALSE(t.searching());
  const size_t before = t.pmem_per_scan();
  t.account(kInterval / 100 * 3, kInterval);  // 3 %: too much once steady
  EXPECT_EQ(t.pmem_per_scan(), before * 3 / 4);
  t.account(kInterval / 1000 * 15, kInterval);  // 1.5 %: between the bounds
  EXPECT_EQ(t.pmem_per_scan(), before * 3 / 4);
  t.promoted(software_tracker::kSearchBurst);
  ASSERT_TRUE(t.searching());
  t.account(kInterval / 100 * 3, kInterval);  // 3 %: room to grow while searching
  EXPECT_EQ(t.pmem_per_scan(), before * 3 / 4 * 5 / 4 + 1);
}

// The search lasts one whole rotation of the list after the last burst of
// promotions, however many windows that takes; lone promotions, however
// many over time, start none.
TEST(SoftwareTracker, ABurstOfPromotionsSearchesOneRotation) {
  listing l(1000, 200);
  software_tracker t;
  size_t windows = 0;
  while (t.searching() && windows < 1000) {
    choose(t, l);
    ++windows;
  }
  // 1200 entries, about kPmemStart PMem units (and the DRAM entries
  // stepped over) per window.
  EXPECT_GE(windows, 1200 / (software_tracker::kPmemStart * 6 / 5 + 2));
  EXPECT_LE(windows, 1200 / (software_tracker::kPmemStart * 5 / 6) + 2);
  for (int scan = 0; scan < 200; ++scan) {
    t.promoted(scan % 3 == 0 ? 1 : 0);  // one every three scans
    ASSERT_FALSE(t.searching()) << "scan " << scan;
  }
  for (size_t i = 0; i < software_tracker::kBurstScans; ++i) t.promoted(0);
  t.promoted(software_tracker::kSearchBurst - 1);
  for (size_t i = 0; i + 2 < software_tracker::kBurstScans; ++i) t.promoted(0);
  EXPECT_FALSE(t.searching());
  t.promoted(1);
  EXPECT_TRUE(t.searching()) << "a burst";
  choose(t, l);
  EXPECT_TRUE(t.searching()) << "one window is not a rotation";
  // The hot set is in: scans without a promotion end the search before
  // the rotation does.
  for (uint32_t i = 0; i + 1 < software_tracker::kQuietScans; ++i) t.promoted(0);
  EXPECT_TRUE(t.searching());
  t.promoted(0);
  EXPECT_FALSE(t.searching()) << "kQuietScans scans without a promotion";
  // Once the rotation is over too, a lone promotion after fewer than
  // kQuietScans quiet scans starts no search; the first one after
  // kQuietScans of them does (the workload changed).
  t.promoted(1);
  for (int i = 0; i < 200 && t.searching(); ++i) choose(t, l);
  ASSERT_FALSE(t.searching()) << "the rotation ends it";
  for (uint32_t i = 0; i + 1 < software_tracker::kQuietScans; ++i) t.promoted(0);
  t.promoted(1);
  EXPECT_FALSE(t.searching()) << "after kQuietScans - 1 quiet scans";
  for (uint32_t i = 0; i < software_tracker::kQuietScans; ++i) t.promoted(0);
  ASSERT_FALSE(t.searching());
  t.promoted(1);
  EXPECT_TRUE(t.searching()) << "the first promotion after kQuietScans quiet scans";
}

// One window's screening results: n one-page PMem samples (units from 0),
// the first k of them touched.
std::vector<sample_result> screening(uint32_t n, uint32_t k) {
  std::vector<sample_result> r;
  for (uint32_t u = 0; u < n; ++u) r.push_back({u, kTierPmem, 1, static_cast<uint8_t>(u < k), 0});
  return r;
}

// The share of screening samples touched is the background every
// observation carries as its chance share; suspects' confirmations and DRAM
// samples do not move it, and too few samples say nothing.
TEST(SoftwareTracker, ScreeningHitsSetTheChanceShareOfEveryObservation) {
  listing l(200, 20);
  software_tracker t;
  access_observation obs[256];
  size_t touched = 0;
  const auto few = screening(software_tracker::kBackgroundMinSamples - 1, 3);
  ASSERT_EQ(t.observe(few.data(), few.size(), l.view(), obs, 256, &touched), few.size() - 3);
  EXPECT_EQ(t.background(), 0.0) << "too few samples to know";
  EXPECT_EQ(obs[0].chance, 0.0f);
  auto r = screening(100, 20);
  r.push_back({150, kTierPmem, 4, 4, 0});  // a confirmation: not screening
  r.push_back({210, kTierDram, 1, 1, 0});  // DRAM: not screening
  const size_t n = t.observe(r.data(), r.size(), l.view(), obs, 256, &touched);
  ASSERT_EQ(n, 82u) << "80 untouched screening samples, the confirmation and the DRAM sample";
  EXPECT_DOUBLE_EQ(t.background(), 0.2) << "the first known share is taken as it is";
  for (size_t i = 0; i < n; ++i) EXPECT_FLOAT_EQ(obs[i].chance, 0.2f) << obs[i].unit;
  // Later windows are smoothed in.
  const auto quiet = screening(100, 0);
  (void)t.observe(quiet.data(), quiet.size(), l.view(), obs, 256, &touched);
  EXPECT_NEAR(t.background(), 0.14, 1e-9);
}

// The window shrinks while chance touches are common and grows back while
// they are rare, within its bounds, and holds between the two thresholds.
TEST(SoftwareTracker, TheWindowFollowsTheBackground) {
  listing l(200, 20);
  access_observation obs[256];
  size_t touched = 0;
  const uint64_t base = 8'000'000;
  {
    software_tracker t;
    EXPECT_EQ(t.window_ns(base), base);
    const auto busy = screening(100, 60);
    uint64_t last = t.window_ns(base);
    for (int k = 0; k < 40; ++k) {
      (void)t.observe(busy.data(), busy.size(), l.view(), obs, 256, &touched);
      EXPECT_LE(t.window_ns(base), last);
      last = t.window_ns(base);
    }
    EXPECT_EQ(last, base / 8) << "at its floor";
  }
  {
    software_tracker t;
    const auto busy = screening(100, 60), idle = screening(100, 1);
    for (int k = 0; k < 40; ++k) (void)t.observe(busy.data(), busy.size(), l.view(), obs, 256, &touched);
    for (int k = 0; k < 40; ++k) (void)t.observe(idle.data(), idle.size(), l.view(), obs, 256, &touched);
    EXPECT_EQ(t.window_ns(base), base * software_tracker::kWindowMaxEighths / 8) << "back at its ceiling";
    for (int k = 0; k < 40; ++k) (void)t.observe(idle.data(), idle.size(), l.view(), obs, 256, &touched);
    EXPECT_EQ(t.window_ns(base), base * software_tracker::kWindowMaxEighths / 8) << "and no further";
  }
  {
    software_tracker t;
    const auto middling = screening(100, 12);
    for (int k = 0; k < 40; ++k) (void)t.observe(middling.data(), middling.size(), l.view(), obs, 256, &touched);
    EXPECT_EQ(t.window_ns(base), base) << "12 % is within the band";
  }
}

// Outside the band the next window is the one that would see the aim
// (12 %) at steady touch rates, at most a quarter or twice the last one;
// the background is carried over to what the new window will see, not left
// to lag behind.
TEST(SoftwareTracker, ChangingTheWindowRescalesTheBackground) {
  listing l(200, 20);
  access_observation obs[256];
  size_t touched = 0;
  {
    software_tracker t;
    const auto busy = screening(100, 30);
    (void)t.observe(busy.data(), busy.size(), l.view(), obs, 256, &touched);
    // 30 % in 8/8: ln(0.88) / ln(0.7) = 0.358 of it, 3/8.
    EXPECT_EQ(t.window_ns(8), 3u);
    EXPECT_NEAR(t.background(), 1 - std::pow(0.7, 3.0 / 8), 1e-9);
  }
  {
    software_tracker t;
    const auto busier = screening(100, 64);
    (void)t.observe(busier.data(), busier.size(), l.view(), obs, 256, &touched);
    EXPECT_EQ(t.window_ns(8), 2u) << "a quarter at most in one step";
    EXPECT_NEAR(t.background(), 1 - std::pow(0.36, 0.25), 1e-9);
  }
  {
    software_tracker t;
    const auto busier = screening(100, 64), idle = screening(100, 1);
    (void)t.observe(busier.data(), busier.size(), l.view(), obs, 256, &touched);
    (void)t.observe(busier.data(), busier.size(), l.view(), obs, 256, &touched);
    ASSERT_EQ(t.window_ns(16), 2u) << "a quarter of a quarter";
    for (int k = 0; k < 20 && t.window_ns(16) == 2; ++k)
      (void)t.observe(idle.data(), idle.size(), l.view(), obs, 256, &touched);
    EXPECT_EQ(t.window_ns(16), 4u) << "twice at most in one step";
  }
}

// Where even the base window sees next to nothing, a PMem sample widens to
// a span of neighbouring pages (doubling up to kPmemSpanMax) where the
// background the wider span would see, on the evidence of every window at
// this span with one hit more than seen, stays below half kBackgroundLow;
// it narrows again while the background is above kBackgroundLow; the
// window first goes back to its base.
TEST(SoftwareTracker, ThePmemSpanWidensWhileNothingIsTouched) {
  listing l(200, 20);
  access_observation obs[256];
  size_t touched = 0;
  const auto quiet = screening(200, 0);
  {
    software_tracker t;
    EXPECT_EQ(t.pmem_span(), 1u);
    std::vector<uint32_t> spans;
    for (int k = 0; k < 8; ++k) {
      (void)t.observe(quiet.data(), quiet.size(), l.view(), obs, 256, &touched);
      spans.push_back(t.pmem_span());
    }
    // 1 -> 16 needs 1 / n at one page to make less than 2.5 % at 16 (633
    // samples: four windows of 200); each later doubling, 80.
    EXPECT_EQ(spans, (std::vector<uint32_t>{1, 1, 1, kPmemSpanMin, 32, 64, kPmemSpanMax, kPmemSpanMax}));
    // Ten in a hundred touched at the widest span: narrowed step by step
    // back to one page (the background rescaled at each step), and the
    // window stays at its base (10 % is within its band).
    const auto some = screening(100, 10);
    for (int k = 0; k < 60; ++k) (void)t.observe(some.data(), some.size(), l.view(), obs, 256, &touched);
    EXPECT_EQ(t.pmem_span(), 1u);
    EXPECT_EQ(t.window_ns(8), 8u);
  }
  {
    // One in two hundred touched by chance: 16 pages would see 7.7 %, too
    // many; the span stays at one page.  Three in a thousand, then none:
    // wider only once four (one more than seen) in all the samples make
    // less than 2.5 % at 16 pages, at 2600.
    software_tracker t;
    const auto thin = screening(200, 1);
    for (int k = 0; k < 20; ++k) (void)t.observe(thin.data(), thin.size(), l.view(), obs, 256, &touched);
    EXPECT_EQ(t.pmem_span(), 1u);
    software_tracker u;
    const auto rare = screening(1000, 3);
    (void)u.observe(rare.data(), rare.size(), l.view(), obs, 256, &touched);
    for (int k = 0; k < 7; ++k) (void)u.observe(quiet.data(), quiet.size(), l.view(), obs, 256, &touched);
    EXPECT_EQ(u.pmem_span(), 1u) << "4 in 2400: 16 pages would see 2.6 %";
    (void)u.observe(quiet.data(), quiet.size(), l.view(), obs, 256, &touched);
    EXPECT_EQ(u.pmem_span(), kPmemSpanMin) << "4 in 2600: 2.4 %";
  }
  {
    // Not where PMem samples cannot be spans (a node tier's units).
    software_tracker t;
    t.allow_spans(false);
    for (int k = 0; k < 20; ++k) (void)t.observe(quiet.data(), quiet.size(), l.view(), obs, 256, &touched);
    EXPECT_EQ(t.pmem_span(), 1u);
    t.allow_spans(true);
    for (int k = 0; k < 20; ++k) (void)t.observe(quiet.data(), quiet.size(), l.view(), obs, 256, &touched);
    EXPECT_EQ(t.pmem_span(), kPmemSpanMax);
    t.allow_spans(false);
    EXPECT_EQ(t.pmem_span(), 1u);
  }
  {
    // A window below its base grows back first.
    software_tracker t;
    const auto busy = screening(100, 60);
    for (int k = 0; k < 40; ++k) (void)t.observe(busy.data(), busy.size(), l.view(), obs, 256, &touched);
    ASSERT_EQ(t.window_ns(8), 1u);
    for (int k = 0; k < 40 && t.window_ns(8) < 8; ++k) {
      (void)t.observe(quiet.data(), quiet.size(), l.view(), obs, 256, &touched);
      EXPECT_EQ(t.pmem_span(), 1u) << "window " << t.window_ns(8) << "/8";
    }
    ASSERT_EQ(t.window_ns(8), 8u);
    for (int k = 0; k < 40; ++k) (void)t.observe(quiet.data(), quiet.size(), l.view(), obs, 256, &touched);
    EXPECT_EQ(t.window_ns(8), 8u);
    EXPECT_EQ(t.pmem_span(), kPmemSpanMax);
  }
}

}  // namespace
}  // namespace mmtier::detail
