// GUPS-style hot-set workload for tiering (issue 4): random 8-byte
// read-modify-write updates over a large malloc'd footprint, a fraction of
// them (--hot-share) going to a small hot set that is NOT at the start of the
// allocation and that moves to another region part-way through the run.
//
// Memory: ONE malloc() of --footprint bytes (the issue says "allocated with
// malloc"; one block keeps --hot-offset an offset into a single allocation),
// written completely once, in address order by the main thread, before timing
// starts, so the allocator places every page before the first update.
//
// Updates: each thread draws one splitmix64 value per update; its low 32 bits
// choose hot or cold (against --hot-share scaled to 2^32), its high bits pick
// the word by multiply-high (no division in the loop).  Cold updates go to the
// footprint minus the hot set.
//
// Skew (--skew): inside the hot set the word is uniform by default.  With
// --skew zipf:S the hot set's 4 KiB pages (counted from its first byte) get
// Zipf weights 1/rank^S, the ranks shuffled over the pages with the seed so
// that the hottest pages lie spread over the hot set's units rather than
// packed into the first one; a hot update draws a second value, picks a page
// from a Walker alias table built at start (one multiply, one table load and
// one compare: no division, no search) and a word in that page.  The table
// lives outside the footprint (its own mmap, not malloc: it is the harness's,
// not the workload's memory).  With T threads a draw is rounded to a word
// the thread owns, up to T-1 words away (at most into the next page).  The
// DRAM shares stay shares of bytes; the MODELLED time weights the hot set's
// pages by their Zipf weights, and SUMMARY adds the share of the hot set's
// updates that went to pages on DRAM.
//
// Thread t only ever touches words w with
// w % threads == t, so no two threads race on a word and the final contents
// depend only on the arguments, the seed and how many updates each thread
// made in each phase.  An update adds delta(w, i) = w ^ ((i + 1) * K) (i: the
// thread's update counter) to the word.
//
// Reporting: a separate reporter thread wakes on CLOCK_MONOTONIC absolute
// deadlines (clock_nanosleep) every --report-interval seconds and prints one
// line: elapsed time, updates/s in the interval, the DRAM share of the hot
// set's bytes and of the whole footprint (mmtier_tier_of, found with
// dlsym(RTLD_DEFAULT), called once per 4 KiB page; n/a when not found), the
// CPU time of mmtier's background threads (every thread whose
// /proc/self/task/TID/comm begins with "mmtier-": the mover "mmtier-bg" and
// its fault service "mmtier-uffd") over the interval in percent of one core,
// read from each thread's CPU-time clock (utime+stime in ns; from
// /proc/self/task/TID/stat in clock ticks if the clock is unavailable; n/a if
// there is no such thread), and the same figure for a control thread of this
// program, "gups-idle", that does nothing but sleep --idle-period seconds at
// a time.  On a virtual machine a thread that sleeps and wakes on one vCPU
// while another thread of its process works on the other can be charged CPU
// time it did not run (docs/BENCHMARKS.md measures it); the control shows how
// much, side by side.  mmtier_get_stats, if present, is only used for one
// line about placement after the fill.
//
// Summary: per phase (before / after the move) the seconds from phase start
// until the hot set's DRAM share was first seen at >= 95% (resolution: the
// report interval), and the mean background-thread and control CPU after
// that point;
// then a MODELLED memory time of the updates (80 ns per access to DRAM,
// 305 ns to PMem; Yang et al., FAST'20), integrated over the intervals, beside
// all-DRAM and all-PMem placement.  Both tiers are DRAM on the machines this
// runs on today, so the modelled time is a model, never a measurement.
//
// Verification (both modes; --no-verify skips it in time mode): after the run
// each thread's update sequence is replayed from its seed and the recorded
// counts; the sum of (final - initial) over all words, plain and weighted by
// a hash of the word's index, must equal the replayed sums of the deltas.  A
// lost or misplaced write (e.g. by a migration that copied a unit while it
// was being written) or a page whose contents changed makes them differ: the
// program prints MISMATCH and exits 1 (no RESULT line).
//
// Modes: time mode (default) runs --seconds; the hot set moves at --move-at
// seconds.  Its RESULT checksum is 0: how many updates each thread makes
// depends on timing, so the final contents are not a function of the
// arguments.  --updates N runs exactly N updates per thread and prints a
// checksum folded from the final contents of the whole footprint, which
// depends only on the arguments and the seed (so equal with and without any
// allocator); in that mode each thread moves its hot set after N/2 of its
// updates when --move-at is not 0.  --phase-moves N (time mode, under
// libmmtier) ends each phase by the mover's work instead of the clock: once
// the hot set has held 95 % of its bytes on DRAM for --settle seconds, or
// once the mover made N moves (promotions and demotions) since the phase
// began, whichever comes first; --seconds is then a cap on the whole run.
// Whether the hot set was found within N moves does not depend on how fast
// the machine is: a check built on it (the 6.1 guest's NUMA-pressure check)
// holds on a busy host where each move takes the kernel a second.
//
// usage: gups [--footprint 2G] [--hot 128M] [--hot-share 0.9]
//             [--hot-offset 3/4 of footprint] [--move-to 1/4 of footprint]
//             [--seconds 30] [--move-at seconds/2, 0 = never] [--threads 1]
//             [--report-interval 1] [--updates N] [--seed 1] [--no-verify]
//             [--skew uniform | zipf:S]
//             [--idle-period 0.05, 0 = no control thread] [--self-test-lost-write]
//             [--phase-moves N [--settle 3]]
// --hot-offset and --move-to take a size or a position: start (offset 0),
// middle (the hot set centred, rounded down to 4 KiB) or end (the hot set's
// last byte the footprint's last).  --move-at 0 runs one phase only.
// prints: per-interval lines, SUMMARY / MODELLED / VERIFY lines and
//         RESULT gups <updates_per_sec> <checksum>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <atomic>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "../../include/mmtier/mmtier.h"  // struct mmtier_stats only; nothing is linked
#include "common.h"

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kBatch = 256;         // updates between looks at the shared flags
constexpr double kDramNs = 80.0;         // modelled load latency, DRAM
constexpr double kPmemNs = 305.0;        // modelled load latency, PMem (Optane)
constexpr double kConverged = 0.95;      // the target share
constexpr uint64_t kDeltaMul = 0x9e3779b97f4a7c15ULL;
constexpr uint64_t kInitMul = 0xd6e8feb86659fd93ULL;
const double kNaN = std::numeric_limits<double>::quiet_NaN();

using tier_of_fn = int (*)(const void *);
using get_stats_fn = int (*)(struct mmtier_stats *);
using get_tiering_fn = int (*)(struct mmtier_tiering_stats *);

// ---------------------------------------------------------------- options

// Where a hot set lies: a byte offset, or a position resolved once the
// footprint and the hot set's size are known.
struct Place {
  enum Kind { kDefault, kOffset, kStart, kMiddle, kEnd } kind = kDefault;
  uint64_t offset = 0;  // kOffset
};
const char *place_name(Place::Kind k) {
  switch (k) {
    case Place::kStart: return "start";
    case Place::kMiddle: return "middle";
    case Place::kEnd: return "end";
    default: return nullptr;
  }
}

struct Options {
  uint64_t footprint = 2ULL << 30;
  uint64_t hot = 128ULL << 20;
  double hot_share = 0.9;
  Place hot_place, move_place;
  uint64_t hot_offset = 0;           // resolved; default: 3/4 of the footprint
  uint64_t move_to = 0;              // resolved; default: 1/4 of the footprint
  double zipf = -1;                  // --skew zipf:S; < 0: uniform
  double seconds = 30;
  double move_at = -1;               // default: seconds / 2 (updates mode: N / 2)
  unsigned threads = 1;
  double report_interval = 1;
  uint64_t updates = 0;              // 0: time mode
  uint64_t seed = 1;
  bool verify = true;
  bool lose_write = false;
  double idle_period = 0.05;         // the control thread's sleep; 0: no control
  int slow_node = -1;                // --slow-node N: tiers by NUMA node (runs without mmtier)
  uint64_t phase_moves = 0;          // --phase-moves N: phases end by the mover's work (0: by the clock)
  double settle = 3;                 // --settle S: seconds at 95 % that end a phase early
  double write_share = 1;            // --write-share: the share of operations that update
};

[[noreturn]] void usage_exit(const char *msg, const char *arg) {
  if (msg != nullptr) fprintf(stderr, "gups: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
  fprintf(stderr,
          "usage: gups [--footprint 2G] [--hot 128M] [--hot-share 0.9] [--hot-offset SIZE|POS]\n"
          "            [--move-to SIZE|POS] [--seconds 30] [--move-at S] [--threads 1]\n"
          "            [--report-interval 1] [--updates N] [--seed 1] [--no-verify]\n"
          "            [--skew uniform|zipf:S] [--idle-period 0.05] [--self-test-lost-write]\n"
          "            [--slow-node N] [--write-share 1] [--phase-moves N [--settle 3]]\n"
          "  POS: start, middle or end of the footprint (default: hot set at 3/4, moved to 1/4)\n"
          "  --move-at: seconds (updates mode: any value > 0 moves after N/2 updates); 0: one phase,\n"
          "             no move (default: half of --seconds)\n"
          "  --skew zipf:S: hot updates pick the hot set's 4 KiB pages with Zipf exponent S\n"
          "             (ranks shuffled over the pages with --seed); default uniform\n"
          "  --slow-node N: a page's tier is the NUMA node the kernel holds it on (N: PMem, any\n"
          "             other: DRAM), for the kernel's own tiering or memkind; else mmtier_tier_of\n"
          "  --write-share F: operation i updates its word when i mod 1000 < 1000 F, else only\n"
          "             reads it (a read-mostly load); default 1, every operation updates\n");
  exit(2);
}

uint64_t parse_size(const char *s) {
  uint64_t v = 0;
  if (const char *why = bench::parse_size(s, &v)) usage_exit(why, s);
  return v;
}

Place parse_place(const char *s) {
  Place p;
  const std::string v = s;
  if (v == "start") p.kind = Place::kStart;
  else if (v == "middle") p.kind = Place::kMiddle;
  else if (v == "end") p.kind = Place::kEnd;
  else {
    p.kind = Place::kOffset;
    p.offset = parse_size(s);
  }
  return p;
}

double parse_double(const char *s) {
  char *end = nullptr;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || *end != '\0' || errno != 0 || !std::isfinite(v) || v < 0) usage_exit("expected a number >= 0", s);
  return v;
}

Options parse_args(int argc, char **argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string val;
    bool has_val = false;
    size_t eq = a.find('=');
    if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
      val = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_val = true;
    }
    auto value = [&]() -> const char * {
      if (has_val) return val.c_str();
      if (i + 1 >= argc) usage_exit("missing value for", argv[i]);
      return argv[++i];
    };
    if (a == "--help" || a == "-h") usage_exit(nullptr, nullptr);
    else if (a == "--footprint") o.footprint = parse_size(value());
    else if (a == "--hot") o.hot = parse_size(value());
    else if (a == "--hot-share") o.hot_share = parse_double(value());
    else if (a == "--hot-offset") o.hot_place = parse_place(value());
    else if (a == "--move-to") o.move_place = parse_place(value());
    else if (a == "--skew") {
      const std::string v = value();
      if (v == "uniform") o.zipf = -1;
      else if (v.rfind("zipf:", 0) == 0 && v.size() > 5) {
        o.zipf = parse_double(v.c_str() + 5);
        if (o.zipf > 16) usage_exit("zipf exponent must be in [0, 16]", v.c_str());
      } else usage_exit("--skew takes uniform or zipf:S", v.c_str());
    }
    else if (a == "--seconds") o.seconds = parse_double(value());
    else if (a == "--move-at") o.move_at = parse_double(value());
    else if (a == "--threads") o.threads = static_cast<unsigned>(parse_size(value()));
    else if (a == "--report-interval") o.report_interval = parse_double(value());
    else if (a == "--updates") o.updates = parse_size(value());
    else if (a == "--seed") o.seed = parse_size(value());
    else if (a == "--idle-period") o.idle_period = parse_double(value());
    else if (a == "--slow-node") {
      const char *v = value();
      char *end = nullptr;
      const long n = strtol(v, &end, 10);
      if (end == v || *end != '\0' || n < 0 || n > 1023) usage_exit("--slow-node takes a node number", v);
      o.slow_node = static_cast<int>(n);
    }
    else if (a == "--write-share") o.write_share = parse_double(value());
    else if (a == "--phase-moves") o.phase_moves = parse_size(value());
    else if (a == "--settle") o.settle = parse_double(value());
    else if (a == "--no-verify" && !has_val) o.verify = false;
    else if (a == "--self-test-lost-write" && !has_val) o.lose_write = true;
    else usage_exit("unknown argument", argv[i]);
  }
  o.footprint &= ~7ULL;
  o.hot &= ~7ULL;
  if (o.threads < 1 || o.threads > 256) usage_exit("--threads must be 1..256", nullptr);
  if (o.hot < kPage) usage_exit("--hot must be at least 4K", nullptr);
  if (o.footprint < o.hot + kPage) usage_exit("--footprint must exceed --hot by at least 4K", nullptr);
  if (o.hot_share > 1) usage_exit("--hot-share must be in [0, 1]", nullptr);
  if (o.write_share > 1) usage_exit("--write-share must be in [0, 1]", nullptr);
  if (o.report_interval < 0.01) usage_exit("--report-interval must be at least 0.01", nullptr);
  if (o.updates == 0 && o.seconds <= 0) usage_exit("--seconds must be > 0", nullptr);
  // The table's draws index words of the hot set with 32 bits.
  if (o.zipf >= 0 && o.hot / 8 >= (1ULL << 32)) usage_exit("--skew zipf needs --hot below 32G", nullptr);
  auto place = [&](const Place &p, uint64_t dflt, const char *name) {
    const uint64_t room = o.footprint - o.hot;
    uint64_t off = 0;
    switch (p.kind) {
      case Place::kDefault: off = std::min(dflt, room); break;
      case Place::kOffset: off = p.offset; break;
      case Place::kStart: off = 0; break;
      case Place::kMiddle: off = room / 2 & ~(kPage - 1); break;
      case Place::kEnd: off = room; break;
    }
    off &= ~7ULL;
    if (off > room) usage_exit("hot set does not fit in the footprint at", name);
    return off;
  };
  o.hot_offset = place(o.hot_place, o.footprint / 4 * 3, "--hot-offset");
  o.move_to = place(o.move_place, o.footprint / 4, "--move-to");
  if (o.move_at < 0) o.move_at = o.updates ? 1 : o.seconds / 2;
  if (o.updates == 0 && o.move_at >= o.seconds) o.move_at = 0;
  if (o.phase_moves && o.updates) usage_exit("--phase-moves is for time mode (no --updates)", nullptr);
  if (o.phase_moves && o.move_at == 0) usage_exit("--phase-moves needs two phases (--move-at not 0)", nullptr);
  return o;
}

std::string human(uint64_t bytes) {
  char b[64];
  if (bytes >= (1ULL << 30) && bytes % (1ULL << 30) == 0) snprintf(b, sizeof b, "%llu GiB", (unsigned long long)(bytes >> 30));
  else if (bytes >= (1ULL << 20) && bytes % (1ULL << 20) == 0) snprintf(b, sizeof b, "%llu MiB", (unsigned long long)(bytes >> 20));
  else if (bytes >= (1ULL << 20)) snprintf(b, sizeof b, "%.2f MiB", bytes / 1048576.0);
  else snprintf(b, sizeof b, "%llu B", (unsigned long long)bytes);
  return b;
}

// ---------------------------------------------------------------- updates

inline uint64_t mulhi(uint64_t a, uint64_t b) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline uint64_t init_value(uint64_t w, uint64_t seed) { return (w + seed) * kInitMul; }
inline uint64_t delta(uint64_t w, uint64_t i) { return w ^ ((i + 1) * kDeltaMul); }
// --write-share: whether operation i updates (else it only reads).
uint64_t g_write_permille = 1000;
std::atomic<uint64_t> g_read_sink{0};  // the reads' sum, so that they are not dropped
inline bool writes(uint64_t i, uint64_t permille) { return permille >= 1000 || i % 1000 < permille; }
inline uint64_t weight(uint64_t w) {  // splitmix64 finalizer, odd
  uint64_t z = w + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return (z ^ (z >> 31)) | 1;
}

// Memory of the harness's own (the Zipf tables): straight from the kernel,
// not through malloc or the interposed mmap, so that mmtier neither places
// nor counts it.
void *raw_alloc(size_t bytes) {
  const long r = syscall(SYS_mmap, nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (r == -1) return nullptr;
  return reinterpret_cast<void *>(r);
}

// --skew zipf:S: a Walker alias table over the hot set's 4 KiB pages (page k
// holds the hot set's words [512 k, 512 k + 512), the last one possibly
// fewer).  Page k's weight is 1 / rank(k)^S, rank a permutation of 1..n
// drawn from the seed.  Entry k: the low 32 bits a threshold, the high 32 the
// alias; a draw x (32 bits) takes column c = x * n >> 32 and keeps it when
// the fraction (x * n mod 2^32) is below the threshold, else its alias.
struct ZipfTable {
  double s = 0;
  uint64_t npages = 0;
  uint64_t last_len = 512;  // words in the last page
  uint64_t *entries = nullptr;
  double *prob = nullptr;   // each page's share of the hot updates

  bool build(double exponent, uint64_t hot_words, uint64_t seed) {
    s = exponent;
    npages = (hot_words + 511) / 512;
    last_len = hot_words - (npages - 1) * 512;
    entries = static_cast<uint64_t *>(raw_alloc(npages * sizeof(uint64_t)));
    prob = static_cast<double *>(raw_alloc(npages * sizeof(double)));
    uint32_t *rank = static_cast<uint32_t *>(raw_alloc(npages * sizeof(uint32_t)));
    uint32_t *work = static_cast<uint32_t *>(raw_alloc(npages * sizeof(uint32_t)));
    if (!entries || !prob || !rank || !work) return false;
    // Ranks: Fisher-Yates over 0..n-1 with its own stream of the seed.
    bench::Rng rng(seed * 0x2545f4914f6cdd1dULL + 0x5a17);
    for (uint64_t k = 0; k < npages; ++k) rank[k] = static_cast<uint32_t>(k);
    for (uint64_t k = npages - 1; k > 0; --k) std::swap(rank[k], rank[rng.below(k + 1)]);
    double sum = 0;
    for (uint64_t k = 0; k < npages; ++k) sum += prob[k] = pow(static_cast<double>(rank[k]) + 1, -s);
    for (uint64_t k = 0; k < npages; ++k) prob[k] /= sum;
    // Vose's alias method, on scaled weights n * p (mean 1): columns below
    // 1 are topped up from one above 1, which becomes their alias.
    double *scaled = reinterpret_cast<double *>(raw_alloc(npages * sizeof(double)));
    if (!scaled) return false;
    uint32_t *small = rank, *large = work;  // rank is done with
    uint64_t ns = 0, nl = 0;
    for (uint64_t k = 0; k < npages; ++k) {
      scaled[k] = prob[k] * static_cast<double>(npages);
      (scaled[k] < 1 ? small[ns++] : large[nl++]) = static_cast<uint32_t>(k);
    }
    auto set = [&](uint64_t k, double p, uint64_t alias) {
      const double th = std::min(p, 1.0) * 4294967296.0;
      const uint64_t t32 = th >= 4294967295.0 ? 0xffffffffULL : static_cast<uint64_t>(th);
      entries[k] = t32 | alias << 32;
    };
    while (ns > 0 && nl > 0) {
      const uint32_t l = small[--ns], g = large[nl - 1];
      set(l, scaled[l], g);
      scaled[g] -= 1 - scaled[l];
      if (scaled[g] < 1) {
        --nl;
        small[ns++] = g;
      }
    }
    while (nl > 0) { const uint32_t g = large[--nl]; set(g, 1, g); }
    while (ns > 0) { const uint32_t l = small[--ns]; set(l, 1, l); }  // rounding leftovers
    munmap_raw(rank, npages * sizeof(uint32_t));
    munmap_raw(work, npages * sizeof(uint32_t));
    munmap_raw(scaled, npages * sizeof(double));
    return true;
  }
  static void munmap_raw(void *p, size_t bytes) { syscall(SYS_munmap, p, bytes); }

  // The hot-set word (0..hot_words) of one draw.
  inline uint64_t word(uint64_t r) const {
    const uint64_t prod = (r >> 32) * npages;
    const uint64_t col = prod >> 32;
    const uint64_t e = entries[col];
    // Branch-free: a mispredicted branch here (taken about at random) would
    // also stall the update's memory access behind it.
    const uint64_t keep = 0 - static_cast<uint64_t>((prod & 0xffffffffULL) < (e & 0xffffffffULL));
    const uint64_t page = (col & keep) | ((e >> 32) & ~keep);
    const uint64_t len = page + 1 == npages ? last_len : 512;
    return page * 512 + (((r & 0xffffffffULL) * len) >> 32);
  }

  // Shares of the hot updates: the hottest page, and the hottest 1% and 10%
  // of pages.
  void describe(double *top1, double *top_1pct, double *top_10pct) const {
    std::vector<double> p(prob, prob + npages);
    std::sort(p.begin(), p.end(), std::greater<double>());
    double acc = 0;
    const uint64_t n1 = std::max<uint64_t>(1, npages / 100), n10 = std::max<uint64_t>(1, npages / 10);
    *top1 = p[0];
    for (uint64_t k = 0; k < npages; ++k) {
      acc += p[k];
      if (k + 1 == n1) *top_1pct = acc;
      if (k + 1 == n10) *top_10pct = acc;
    }
  }
};

// One thread's update stream in one phase.  Thread t owns the words
// j * T + t; [hot_j0, hot_j0 + hot_n) are its hot ones, the other cold_n its
// cold ones.
struct Stream {
  uint64_t threshold;  // hot if (r & 0xffffffff) < threshold (0..2^32)
  uint64_t hot_j0, hot_n, cold_n, T, t;
  const ZipfTable *zipf = nullptr;  // --skew zipf: the hot word from the table
  uint64_t recip_T = 0;             // floor(2^32 / T)

  Stream() = default;
  Stream(uint64_t words, uint64_t hot_word0, uint64_t hot_words, double share, unsigned threads, unsigned self,
         const ZipfTable *z) {
    T = threads;
    t = self;
    zipf = z;
    recip_T = (1ULL << 32) / T;
    auto first_j = [&](uint64_t w) -> uint64_t { return w <= t ? 0 : (w - t + T - 1) / T; };
    const uint64_t n_total = first_j(words);
    hot_j0 = first_j(hot_word0);
    hot_n = first_j(hot_word0 + hot_words) - hot_j0;
    cold_n = n_total - hot_n;
    threshold = static_cast<uint64_t>(llround(share * 4294967296.0));
    if (hot_n == 0) threshold = 0;
    if (cold_n == 0) threshold = 1ULL << 32;
  }
  // One update's word.  Uniform: one draw; zipf: a hot update draws again.
  inline uint64_t pick(bench::Rng &rng) const {
    const uint64_t r = rng.next();
    uint64_t j;
    if ((r & 0xffffffffULL) < threshold) {
      if (zipf == nullptr) {
        j = hot_j0 + mulhi(r, hot_n);
      } else {
        // Hot-set word h -> the thread's j-th word near it: floor(h / T),
        // by multiply-high (low by at most one).
        const uint64_t jr = (zipf->word(rng.next()) * recip_T) >> 32;
        j = hot_j0 + std::min(jr, hot_n - 1);
      }
    } else {
      j = mulhi(r, cold_n);
      if (j >= hot_j0) j += hot_n;
    }
    return j * T + t;
  }
};

struct alignas(64) Worker {
  uint64_t seed = 0;
  Stream stream[2];
  std::atomic<uint64_t> done{0};       // updates made so far (published per batch)
  uint64_t total = 0;
  uint64_t switch_at = UINT64_MAX;     // first update of phase 1
  uint64_t last_w = 0, last_delta = 0;
  int64_t finish_ns = 0;
  uint64_t exp_plain = 0, exp_weighted = 0;
};

struct Shared {
  uint64_t *base = nullptr;
  const Options *opt = nullptr;
  std::atomic<bool> go{false};
  std::atomic<bool> stop{false};      // time mode: the reporter ends the run
  std::atomic<bool> done{false};      // every worker has finished
  std::atomic<int> phase{0};
  std::atomic<int> move_claim{0};
  std::atomic<int64_t> move_ns{0};    // when phase 1 began
  std::atomic<bool> reporter_exited{false};
};

int64_t now_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

void run_worker(Shared &sh, Worker &wk) {
  pthread_setname_np(pthread_self(), "gups-update");
  const Options &o = *sh.opt;
  uint64_t *const base = sh.base;
  bench::Rng rng(wk.seed);
  const bool counted = o.updates != 0;
  const uint64_t limit = counted ? o.updates : UINT64_MAX;
  const uint64_t switch_target = (counted && o.move_at > 0) ? o.updates / 2 : UINT64_MAX;
  int phase = 0;
  uint64_t i = 0, lw = 0, ld = 0, sink = 0;
  const uint64_t permille = g_write_permille;  // a local: the updates could alias a global
  while (!sh.go.load(std::memory_order_acquire)) sched_yield();
  while (i < limit) {
    if (phase == 0) {
      bool sw;
      if (counted) {
        sw = i >= switch_target;
        if (sw && sh.move_claim.exchange(1) == 0) {
          sh.move_ns.store(now_ns());
          sh.phase.store(1, std::memory_order_release);
        }
      } else {
        sw = sh.phase.load(std::memory_order_relaxed) != 0;
      }
      if (sw) {
        phase = 1;
        wk.switch_at = i;
      }
    }
    if (!counted && sh.stop.load(std::memory_order_relaxed)) break;
    const Stream s = wk.stream[phase];
    const uint64_t n = std::min(kBatch, limit - i);
    if (s.zipf == nullptr) {
      for (uint64_t k = 0; k < n; ++k) {
        const uint64_t w = s.pick(rng);
        const uint64_t d = delta(w, i + k);
        if (!writes(i + k, permille)) {
          sink += base[w];
          continue;
        }
        base[w] += d;  // 8-byte read-modify-write
        lw = w;
        ld = d;
      }
    } else {
      // Zipf: the batch's words first, then its updates, so that the
      // table's loads do not queue behind the updates' cache misses (in one
      // loop the update rate halves).  Same words, same order.
      uint64_t ws[kBatch];
      for (uint64_t k = 0; k < n; ++k) ws[k] = s.pick(rng);
      for (uint64_t k = 0; k < n; ++k) {
        const uint64_t w = ws[k];
        const uint64_t d = delta(w, i + k);
        if (!writes(i + k, permille)) {
          sink += base[w];
          continue;
        }
        base[w] += d;
        lw = w;
        ld = d;
      }
    }
    i += n;
    wk.done.store(i, std::memory_order_relaxed);
  }
  g_read_sink.fetch_add(sink, std::memory_order_relaxed);
  wk.total = i;
  wk.last_w = lw;
  wk.last_delta = ld;
  wk.finish_ns = now_ns();
}

void replay(Worker &wk) {
  bench::Rng rng(wk.seed);
  uint64_t plain = 0, weighted = 0;
  for (uint64_t i = 0; i < wk.total; ++i) {
    const Stream &s = wk.stream[i >= wk.switch_at ? 1 : 0];
    const uint64_t w = s.pick(rng);
    if (!writes(i, g_write_permille)) continue;
    const uint64_t d = delta(w, i);
    plain += d;
    weighted += d * weight(w);
  }
  wk.exp_plain = plain;
  wk.exp_weighted = weighted;
}

// ---------------------------------------------------------------- probes

tier_of_fn g_tier_of = nullptr;
std::atomic<uint64_t> g_unmanaged_bytes{0};
int g_slow_node = -1;

// --slow-node: the tier of the page at p by the node the kernel holds it on
// (move_pages without nodes only asks); -1 if the page is not present.
int node_tier_of(const void *p) {
  void *page = reinterpret_cast<void *>(reinterpret_cast<uintptr_t>(p) & ~(kPage - 1));
  int status = -1;
  if (syscall(SYS_move_pages, 0, 1UL, &page, nullptr, &status, 0) != 0 || status < 0) return -1;
  return status == g_slow_node ? MMTIER_TIER_PMEM : MMTIER_TIER_DRAM;
}

// DRAM share of the bytes in [lo, hi), by mmtier_tier_of on every 4 KiB page.
double dram_share(uintptr_t lo, uintptr_t hi) {
  if (g_tier_of == nullptr || hi <= lo) return kNaN;
  uint64_t dram = 0, unmanaged = 0;
  // By node: move_pages asks for many pages at once.
  constexpr size_t kBatch = 4096;
  static void *pages[kBatch];
  static int status[kBatch];
  size_t n = 0;
  uintptr_t batch_lo = 0;
  auto flush = [&] {
    if (n && syscall(SYS_move_pages, 0, n, pages, nullptr, status, 0) != 0)
      for (size_t i = 0; i < n; ++i) status[i] = -1;
    for (size_t i = 0; i < n; ++i) {
      const uintptr_t p = batch_lo + i * kPage;
      const uint64_t len = std::min(p + kPage, hi) - std::max(p, lo);
      if (status[i] < 0) unmanaged += len;
      else if (status[i] != g_slow_node) dram += len;
    }
    n = 0;
  };
  for (uintptr_t p = lo & ~(kPage - 1); p < hi; p += kPage) {
    if (g_slow_node >= 0) {
      if (n == 0) batch_lo = p;
      pages[n++] = reinterpret_cast<void *>(p);
      if (n == kBatch) flush();
      continue;
    }
    const uintptr_t a = std::max(p, lo), b = std::min(p + kPage, hi);
    const int tier = g_tier_of(reinterpret_cast<const void *>(a));
    if (tier == MMTIER_TIER_DRAM) dram += b - a;
    else if (tier < 0) unmanaged += b - a;
  }
  flush();
  uint64_t seen = g_unmanaged_bytes.load(std::memory_order_relaxed);
  if (unmanaged > seen) g_unmanaged_bytes.store(unmanaged, std::memory_order_relaxed);
  return static_cast<double>(dram) / static_cast<double>(hi - lo);
}

// Zipf mode: the share of the hot updates that go to pages on DRAM (each of
// the hot set's pages weighted by its probability, its tier read at its
// first byte).
double dram_access_share(uintptr_t hot_lo, const ZipfTable &z) {
  if (g_tier_of == nullptr) return kNaN;
  double acc = 0;
  for (uint64_t k = 0; k < z.npages; ++k)
    if (g_tier_of(reinterpret_cast<const void *>(hot_lo + k * kPage)) == MMTIER_TIER_DRAM) acc += z.prob[k];
  return acc;
}

bool read_small(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = read(fd, buf, cap - 1);
  close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  return true;
}

// utime+stime of one thread of this process in ns, or -1.
int64_t thread_cpu_ns(pid_t tid) {
  // The kernel's per-thread CPU clock id (MAKE_THREAD_CPUCLOCK(tid, SCHED)).
  const clockid_t clk = static_cast<clockid_t>((~static_cast<unsigned>(tid)) << 3) | 6;
  struct timespec ts;
  if (clock_gettime(clk, &ts) == 0) return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/self/task/%d/stat", static_cast<int>(tid));
  if (!read_small(path, buf, sizeof buf)) return -1;
  const char *p = strrchr(buf, ')');
  if (p == nullptr) return -1;
  unsigned long long utime = 0, stime = 0;
  // After "(comm)": state, then fields 4..13, utime (14), stime (15).
  if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2) return -1;
  return static_cast<int64_t>((utime + stime) * (1000000000.0 / static_cast<double>(sysconf(_SC_CLK_TCK))));
}

// The threads of this process whose name begins with `prefix`: mmtier's
// background threads ("mmtier-bg", the mover, and "mmtier-uffd", its fault
// service).  Looked for again at every interval, since the fault service may
// start after the mover.
struct ThreadSetProbe {
  const char *prefix = "mmtier-";
  struct Seen {
    pid_t tid;
    int64_t last_ns;
    std::string name;
  };
  std::vector<Seen> seen;

  // CPU ns of the matching threads since the previous call (a thread seen
  // for the first time counts from then), or -1 when there is none.
  int64_t delta() {
    DIR *d = opendir("/proc/self/task");
    if (d == nullptr) return -1;
    std::vector<Seen> now;
    int64_t sum = 0;
    while (struct dirent *e = readdir(d)) {
      char *end = nullptr;
      long tid = strtol(e->d_name, &end, 10);
      if (end == e->d_name || *end != '\0' || tid <= 0) continue;
      char path[64], buf[64];
      snprintf(path, sizeof path, "/proc/self/task/%ld/comm", tid);
      if (!read_small(path, buf, sizeof buf)) continue;
      buf[strcspn(buf, "\n")] = '\0';
      if (strncmp(buf, prefix, strlen(prefix)) != 0) continue;
      const int64_t ns = thread_cpu_ns(static_cast<pid_t>(tid));
      if (ns < 0) continue;
      for (const Seen &old : seen)
        if (old.tid == tid && old.name == buf) sum += ns - old.last_ns;
      now.push_back({static_cast<pid_t>(tid), ns, buf});
    }
    closedir(d);
    const bool any = !now.empty() || !seen.empty();
    seen.swap(now);
    return any ? sum : -1;
  }
  std::string names() const {
    std::string out;
    for (const Seen &t : seen) out += (out.empty() ? "" : ", ") + t.name + " (tid " + std::to_string(t.tid) + ")";
    return out;
  }
};

// The control: a thread of this process that does nothing but sleep for
// --idle-period at a time.  What its CPU clock is charged is what this
// machine charges a thread of the process for sleeping and waking while the
// update threads run.  On a virtual machine with shadow page tables that is
// not nothing, and it goes to whichever of the process's threads is first to
// wake on the idle vCPU (bench/workloads/wakecharge.cc measures it;
// docs/BENCHMARKS.md).  At the default 50 ms the control wakes more often
// than the mover (100 ms or more between scans), so it takes most of that
// charge and the mmtier-* figure is closer to what those threads run; with
// --idle-period 0 the background threads take it all.
struct IdleControl {
  std::atomic<bool> stop{false};
  std::atomic<pid_t> tid{0};
  int64_t period_ns = 0;
  int64_t last_ns = -1;
  std::thread thread;

  void start(double period_s) {
    period_ns = static_cast<int64_t>(llround(period_s * 1e9));
    if (period_ns <= 0) return;
    thread = std::thread([this] {
      pthread_setname_np(pthread_self(), "gups-idle");
      tid.store(static_cast<pid_t>(syscall(SYS_gettid)), std::memory_order_release);
      while (!stop.load(std::memory_order_acquire)) {
        struct timespec ts = {static_cast<time_t>(period_ns / 1000000000LL), static_cast<long>(period_ns % 1000000000LL)};
        clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, nullptr);
      }
    });
    while (tid.load(std::memory_order_acquire) == 0) sched_yield();
    last_ns = thread_cpu_ns(tid.load());
  }
  // CPU ns of the control since the previous call, or -1 (none running).
  int64_t delta() {
    if (period_ns <= 0 || last_ns < 0) return -1;
    const int64_t now = thread_cpu_ns(tid.load());
    if (now < 0) return -1;
    const int64_t d = now - last_ns;
    last_ns = now;
    return d;
  }
  void finish() {
    if (!thread.joinable()) return;
    stop.store(true, std::memory_order_release);
    pthread_kill(thread.native_handle(), SIGUSR1);  // ends its sleep (EINTR)
    thread.join();
  }
};

// ---------------------------------------------------------------- reporter

struct Interval {
  double t_end, dt;     // seconds since start, length
  uint64_t updates;
  int phase;
  double hot, all;      // DRAM shares at the end (NaN: n/a)
  double hot_acc;       // share of the hot updates going to DRAM (zipf: weighted; else = hot)
  double access;        // access-weighted DRAM share at the end
  int64_t bg_ns;        // -1: n/a
  int64_t idle_ns;      // the control thread; -1: n/a
};

struct PhaseInfo {
  bool started = false;
  double start = 0;                              // seconds since start
  uint64_t offset = 0;
  std::vector<std::pair<double, double>> samples;  // (seconds since phase start, hot share)
  double converged = -1;                           // seconds since phase start, -1 = not reached
  double last_hot_acc = kNaN;                      // zipf: the hot updates' DRAM share, last sample
  uint64_t moves0 = 0;                             // --phase-moves: the mover's moves as it began
  int64_t converged_moves = -1;                    // its moves since then when 95 % was reached
  bool out_of_moves = false;                       // ended by --phase-moves without settling
};

struct Report {
  Shared *sh = nullptr;
  std::vector<Worker> *workers = nullptr;
  uintptr_t base = 0;
  uint64_t footprint = 0, hot = 0;
  uint64_t offsets[2] = {0, 0};
  double hot_share = 0;
  const ZipfTable *zipf = nullptr;
  int64_t start_ns = 0;
  ThreadSetProbe bg;
  IdleControl *idle = nullptr;
  std::vector<Interval> intervals;
  PhaseInfo phases[2];
  double model_ns = 0;       // modelled memory time of the updates
  uint64_t model_updates = 0;
  double last_access = kNaN;
  uint64_t last_updates = 0;
  int64_t last_ns = 0;
  int cur_phase = 0;
  get_tiering_fn stats = nullptr;  // --phase-moves: mmtier_get_tiering_stats
  uint64_t phase_moves = 0;
  double settle = 3;
  int64_t held_from = -1;        // since when the hot set has held 95 % (-1: not now)
  bool phase_done = false;       // --phase-moves: the current phase is over (sample)

  // The mover's moves so far (promotions and demotions).
  uint64_t moves_now() const {
    struct mmtier_tiering_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    return stats && stats(&st) == 0 ? st.promotions + st.demotions : 0;
  }
  // --phase-moves: whether the current phase is over at now, its hot set's
  // share being share: held at 95 % for settle seconds, or phase_moves moves.
  bool phase_over(int64_t now, double share) {
    PhaseInfo &ph = phases[cur_phase];
    const uint64_t moved = moves_now() - ph.moves0;
    if (ph.converged >= 0 && ph.converged_moves < 0) ph.converged_moves = static_cast<int64_t>(moved);
    if (!std::isnan(share) && share >= kConverged) {
      if (held_from < 0) held_from = now;
    } else {
      held_from = -1;
    }
    if (held_from >= 0 && (now - held_from) * 1e-9 >= settle - 1e-3) return true;
    if (moved >= phase_moves) {
      ph.out_of_moves = true;
      return true;
    }
    return false;
  }

  double hot_dram(int phase) const {
    return dram_share(base + offsets[phase], base + offsets[phase] + hot);
  }
  // The share of the hot updates that go to DRAM: hot_s (the bytes' share)
  // when they are uniform over the hot set.
  double hot_access(int phase, double hot_s) const {
    return zipf ? dram_access_share(base + offsets[phase], *zipf) : hot_s;
  }
  double access_share(double hot_s, double hot_acc, double all_s) const {
    if (std::isnan(hot_s) || std::isnan(hot_acc) || std::isnan(all_s)) return kNaN;
    const double cold = (all_s * footprint - hot_s * hot) / static_cast<double>(footprint - hot);
    return hot_share * hot_acc + (1 - hot_share) * std::min(1.0, std::max(0.0, cold));
  }
  void phase_sample(int p, double t_since_start, double share) {
    PhaseInfo &ph = phases[p];
    const double rel = t_since_start - ph.start;
    ph.samples.push_back({rel, share});
    if (ph.converged < 0 && !std::isnan(share) && share >= kConverged) ph.converged = rel;
  }
  void begin_phase(int p, int64_t at_ns, double share_now) {
    phases[p].started = true;
    phases[p].start = (at_ns - start_ns) * 1e-9;
    phases[p].offset = offsets[p];
    phases[p].moves0 = moves_now();
    held_from = -1;
    phase_sample(p, phases[p].start, share_now);
  }

  static void print_header() {
    printf("#%9s %13s %10s %10s %8s %9s %6s\n", "time_s", "Mupdates/s", "hot_dram%", "all_dram%", "bg_cpu%",
           "idle_cpu%", "phase");
    fflush(stdout);
  }

  // Closes the interval ending now.
  void sample(int64_t now) {
    uint64_t upd = 0;
    for (Worker &w : *workers) upd += w.done.load(std::memory_order_relaxed);
    // Updates mode: a worker may have begun phase 1 since the last sample.
    if (cur_phase == 0 && sh->phase.load(std::memory_order_acquire) == 1) {
      cur_phase = 1;
      begin_phase(1, sh->move_ns.load(), kNaN);
    }
    const double dt = (now - last_ns) * 1e-9;
    const uint64_t dupd = upd - last_updates;
    const double hot_s = hot_dram(cur_phase);
    const double hot_acc = hot_access(cur_phase, hot_s);
    const double all_s = dram_share(base, base + footprint);
    const double acc = access_share(hot_s, hot_acc, all_s);
    const int64_t bg_ns = bg.delta();
    const int64_t idle_ns = idle ? idle->delta() : -1;
    const double t = (now - start_ns) * 1e-9;
    Interval iv{t, dt, dupd, cur_phase, hot_s, all_s, hot_acc, acc, bg_ns, idle_ns};
    intervals.push_back(iv);
    phase_sample(cur_phase, t, hot_s);
    phases[cur_phase].last_hot_acc = hot_acc;
    if (phase_moves) phase_done = phase_over(now, hot_s);
    if (!std::isnan(acc)) {
      const double p = std::isnan(last_access) ? acc : (last_access + acc) / 2;  // trapezoid
      model_ns += static_cast<double>(dupd) * (p * kDramNs + (1 - p) * kPmemNs);
      model_updates += dupd;
    }
    last_access = acc;
    last_updates = upd;
    last_ns = now;
    char hot_buf[16], all_buf[16], bg_buf[16], idle_buf[16];
    auto pct = [](char *b, size_t n, double v) {
      if (std::isnan(v)) snprintf(b, n, "n/a");
      else snprintf(b, n, "%.1f", 100 * v);
    };
    pct(hot_buf, sizeof hot_buf, hot_s);
    pct(all_buf, sizeof all_buf, all_s);
    auto cpu = [dt](char *b, size_t n, int64_t ns) {
      if (ns < 0 || dt <= 0) snprintf(b, n, "n/a");
      else snprintf(b, n, "%.2f", 100.0 * ns * 1e-9 / dt);
    };
    cpu(bg_buf, sizeof bg_buf, bg_ns);
    cpu(idle_buf, sizeof idle_buf, idle_ns);
    printf(" %9.3f %13.3f %10s %10s %8s %9s %6d\n", t, dt > 0 ? dupd / dt * 1e-6 : 0.0, hot_buf, all_buf, bg_buf,
           idle_buf, cur_phase);
    fflush(stdout);
  }

  // Time mode: the reporter moves the hot set.
  void move_now(int64_t now) {
    sh->move_ns.store(now);
    sh->phase.store(1, std::memory_order_release);
    cur_phase = 1;
    const double share = hot_dram(1);
    begin_phase(1, now, share);
    last_access = access_share(share, hot_access(1, share), dram_share(base, base + footprint));
    if (std::isnan(share))
      printf("# t=%.3f s: hot set moved from offset %s to offset %s\n", (now - start_ns) * 1e-9,
             human(offsets[0]).c_str(), human(offsets[1]).c_str());
    else
      printf("# t=%.3f s: hot set moved from offset %s to offset %s; its DRAM share now %.1f%%\n",
             (now - start_ns) * 1e-9, human(offsets[0]).c_str(), human(offsets[1]).c_str(), 100 * share);
    fflush(stdout);
  }

  void run() {
    pthread_setname_np(pthread_self(), "gups-report");
    const Options &o = *sh->opt;
    const bool timed = o.updates == 0;
    const int64_t step = static_cast<int64_t>(llround(o.report_interval * 1e9));
    int64_t end = timed ? start_ns + static_cast<int64_t>(llround(o.seconds * 1e9)) : INT64_MAX;
    int64_t move = (timed && o.move_at > 0 && !o.phase_moves) ? start_ns + static_cast<int64_t>(llround(o.move_at * 1e9)) : INT64_MAX;
    const int64_t slack = 1000000;  // events within 1 ms are one event
    int64_t k = 1;
    for (;;) {
      const int64_t tick = start_ns + k * step;
      const int64_t target = std::min({tick, move, end});
      struct timespec ts = {static_cast<time_t>(target / 1000000000LL), static_cast<long>(target % 1000000000LL)};
      int rc;
      do {
        rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);
      } while (rc == EINTR && !sh->done.load());
      if (sh->done.load()) {
        const int64_t now = now_ns();
        if (now - last_ns > slack) sample(now);
        break;
      }
      const int64_t now = now_ns();
      sample(now);
      if (phase_moves) {
        // By the mover's work: phase 0's end moves the hot set, phase 1's
        // ends the run (--seconds caps it).
        move = INT64_MAX;
        if (phase_done && cur_phase == 0) {
          move_now(now);
          phase_done = false;
        } else if (phase_done) {
          end = now;
        }
      } else if (target + slack >= move && move != INT64_MAX) {
        move_now(now);
        move = INT64_MAX;
      }
      while (start_ns + k * step <= target + slack) ++k;
      if (target + slack >= end || (phase_moves && end == now)) {
        sh->stop.store(true);
        break;
      }
    }
    sh->reporter_exited.store(true);
  }
};

void on_wake(int) {}

}  // namespace

int main(int argc, char **argv) {
  const Options o = parse_args(argc, argv);
  const bool timed = o.updates == 0;

  g_tier_of = reinterpret_cast<tier_of_fn>(dlsym(RTLD_DEFAULT, "mmtier_tier_of"));
  g_write_permille = static_cast<uint64_t>(o.write_share * 1000 + 0.5);
  if (o.slow_node >= 0) {
    g_slow_node = o.slow_node;
    g_tier_of = node_tier_of;
    printf("# tiers: by NUMA node (node %d is PMem, any other DRAM)\n", o.slow_node);
  }
  const get_stats_fn get_stats = reinterpret_cast<get_stats_fn>(dlsym(RTLD_DEFAULT, "mmtier_get_stats"));
  const get_tiering_fn tiering = reinterpret_cast<get_tiering_fn>(dlsym(RTLD_DEFAULT, "mmtier_get_tiering_stats"));
  if (o.phase_moves && (tiering == nullptr || g_tier_of == nullptr)) {
    fprintf(stderr, "gups: --phase-moves needs the mover's counts and where pages lie (run under libmmtier)\n");
    return 2;
  }

  ZipfTable zipf;
  if (o.zipf >= 0 && !zipf.build(o.zipf, o.hot / 8, o.seed)) {
    fprintf(stderr, "gups: no memory for the Zipf table of %llu pages\n", (unsigned long long)(o.hot / kPage));
    return 1;
  }

  uint64_t *base = static_cast<uint64_t *>(malloc(o.footprint));
  if (base == nullptr) {
    fprintf(stderr, "gups: malloc(%llu) failed\n", (unsigned long long)o.footprint);
    return 1;
  }
  const uint64_t words = o.footprint / 8;
  auto where = [](const Place &p) {
    const char *n = place_name(p.kind);
    return n ? std::string(" (") + n + ")" : std::string();
  };
  printf("# gups: footprint %s at %p, hot set %s at offset %s%s", human(o.footprint).c_str(), (void *)base,
         human(o.hot).c_str(), human(o.hot_offset).c_str(), where(o.hot_place).c_str());
  if (o.move_at > 0) {
    if (timed && o.phase_moves) printf(", moving to offset %s%s when phase 0 ends", human(o.move_to).c_str(),
                                       where(o.move_place).c_str());
    else if (timed) printf(", moving to offset %s%s at %.3g s", human(o.move_to).c_str(), where(o.move_place).c_str(),
                           o.move_at);
    else printf(", moving to offset %s%s after %llu updates per thread", human(o.move_to).c_str(),
                where(o.move_place).c_str(), (unsigned long long)(o.updates / 2));
  }
  printf("\n# gups: hot share %.3g, write share %.3g, %u thread(s), ", o.hot_share, o.write_share, o.threads);
  if (timed) printf("%.3g s", o.seconds);
  else printf("%llu updates per thread", (unsigned long long)o.updates);
  printf(", report every %.3g s, seed %llu\n", o.report_interval, (unsigned long long)o.seed);
  if (o.zipf >= 0) {
    double top1 = 0, top_1pct = 0, top_10pct = 0;
    zipf.describe(&top1, &top_1pct, &top_10pct);
    printf("# skew: zipf %.3g over the hot set's %llu pages (ranks shuffled with the seed): hottest page %.2f%%, "
           "hottest 1%% of pages %.1f%%, hottest 10%% %.1f%% of the hot updates\n",
           o.zipf, (unsigned long long)zipf.npages, 100 * top1, 100 * top_1pct, 100 * top_10pct);
  } else {
    printf("# skew: uniform over the hot set\n");
  }

  // Write every word once, in address order, before timing.
  const int64_t fill0 = now_ns();
  for (uint64_t w = 0; w < words; ++w) base[w] = init_value(w, o.seed);
  printf("# fill: %s written in %.2f s\n", human(o.footprint).c_str(), (now_ns() - fill0) * 1e-9);

  if (g_tier_of == nullptr) printf("# mmtier_tier_of: not found (DRAM shares print n/a)\n");
  if (get_stats != nullptr) {
    struct mmtier_stats st;
    memset(&st, 0, sizeof st);
    if (get_stats(&st) == 0) {
      auto lim = [](size_t v) { return v == SIZE_MAX ? std::string("none") : human(v); };
      printf("# mmtier_get_stats: unit %s, units DRAM %zu / PMem %zu, limits DRAM %s / PMem %s\n",
             human(st.unit_size).c_str(), st.units[0], st.units[1], lim(st.limit_bytes[0]).c_str(),
             lim(st.limit_bytes[1]).c_str());
    }
  }

  Shared sh;
  sh.base = base;
  sh.opt = &o;
  std::vector<Worker> workers(o.threads);
  for (unsigned t = 0; t < o.threads; ++t) {
    Worker &w = workers[t];
    w.seed = o.seed * 1000003ULL + t;
    const ZipfTable *z = o.zipf >= 0 ? &zipf : nullptr;
    w.stream[0] = Stream(words, o.hot_offset / 8, o.hot / 8, o.hot_share, o.threads, t, z);
    w.stream[1] = Stream(words, o.move_to / 8, o.hot / 8, o.hot_share, o.threads, t, z);
  }

  Report rep;
  rep.sh = &sh;
  rep.workers = &workers;
  rep.base = reinterpret_cast<uintptr_t>(base);
  rep.footprint = o.footprint;
  rep.hot = o.hot;
  rep.offsets[0] = o.hot_offset;
  rep.offsets[1] = o.move_to;
  rep.hot_share = o.hot_share;
  if (o.zipf >= 0) rep.zipf = &zipf;
  if (o.phase_moves) {
    rep.stats = tiering;
    rep.phase_moves = o.phase_moves;
    rep.settle = o.settle;
    printf("# phases: each ends once the hot set held 95%% on DRAM for %.3g s, or after %llu moves of the mover; "
           "at most %.3g s in all\n", o.settle, (unsigned long long)o.phase_moves, o.seconds);
  }

  rep.bg.delta();  // starts the background threads' CPU count
  if (!rep.bg.seen.empty()) printf("# background threads: %s\n", rep.bg.names().c_str());
  else printf("# background threads \"mmtier-*\": none yet (bg_cpu%% prints n/a until one appears)\n");
  IdleControl idle;
  if (o.idle_period > 0) {
    idle.start(o.idle_period);
    rep.idle = &idle;
    printf("# control: thread \"gups-idle\" only sleeps, %.3g s at a time (idle_cpu%%)\n", o.idle_period);
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_wake;
  sa.sa_flags = SA_RESTART;  // clock_nanosleep still returns EINTR; stdio writes restart
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, nullptr);

  std::vector<std::thread> threads;
  for (Worker &w : workers) threads.emplace_back([&sh, &w] { run_worker(sh, w); });

  Report::print_header();
  const int64_t start = now_ns();
  rep.start_ns = start;
  rep.last_ns = start;
  const double hot0 = rep.hot_dram(0);
  rep.last_access = rep.access_share(hot0, rep.hot_access(0, hot0), dram_share(rep.base, rep.base + o.footprint));
  rep.begin_phase(0, start, hot0);
  sh.go.store(true, std::memory_order_release);
  std::thread reporter([&rep] { rep.run(); });

  for (std::thread &t : threads) t.join();
  int64_t end = 0;
  for (Worker &w : workers) end = std::max(end, w.finish_ns);
  sh.done.store(true);
  while (!sh.reporter_exited.load()) {
    pthread_kill(reporter.native_handle(), SIGUSR1);
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, nullptr);
  }
  reporter.join();
  idle.finish();

  uint64_t total = 0;
  for (Worker &w : workers) total += w.total;
  const double elapsed = (end - start) * 1e-9;
  const double rate = elapsed > 0 ? total / elapsed : 0;
  printf("# %llu updates in %.3f s: %.3f M updates/s\n", (unsigned long long)total, elapsed, rate * 1e-6);
  if (g_unmanaged_bytes.load() != 0)
    printf("# note: up to %s of the footprint was not managed by mmtier (tier -1)\n",
           human(g_unmanaged_bytes.load()).c_str());

  // Per-phase summary.
  const int nphases = rep.phases[1].started ? 2 : 1;
  const double t_end = (end - start) * 1e-9;
  for (int p = 0; p < nphases; ++p) {
    const PhaseInfo &ph = rep.phases[p];
    const double p_end = p + 1 < nphases ? rep.phases[p + 1].start : t_end;
    printf("SUMMARY phase %d (hot set at offset %s, t=%.2f..%.2f s): ", p, human(ph.offset).c_str(), ph.start, p_end);
    if (g_tier_of == nullptr) {
      printf("hot-set DRAM share n/a; mean bg CPU ");
    } else {
      double last = kNaN, best = 0;
      for (const auto &s : ph.samples)
        if (!std::isnan(s.second)) {
          last = s.second;
          best = std::max(best, s.second);
        }
      if (ph.converged >= 0) printf("hot-set DRAM share reached 95%% after %.2f s", ph.converged);
      else printf("hot-set DRAM share 95%% not reached (max %.1f%%)", 100 * best);
      if (rep.phase_moves && ph.converged_moves >= 0)
        printf(" and %lld moves", static_cast<long long>(ph.converged_moves));
      else if (rep.phase_moves && ph.out_of_moves)
        printf(" in %llu moves", static_cast<unsigned long long>(rep.phase_moves));
      if (!std::isnan(last)) printf(", %.1f%% at phase end", 100 * last);
      if (o.zipf >= 0 && !std::isnan(ph.last_hot_acc))
        printf(" (pages taking %.1f%% of the hot updates)", 100 * ph.last_hot_acc);
      printf("; steady-state bg CPU ");
    }
    // Steady state: intervals of this phase that begin at or after
    // convergence (the whole phase when there are no DRAM shares).
    // The control is averaged over the same intervals.
    double cpu = 0, span = 0, idle_cpu = 0;
    int n = 0;
    bool idle_all = true;
    const bool have_from = g_tier_of == nullptr || ph.converged >= 0;
    const double from = g_tier_of == nullptr ? ph.start : ph.start + ph.converged;
    for (const Interval &iv : rep.intervals)
      if (have_from && iv.phase == p && iv.t_end - iv.dt >= from - 1e-3 && iv.bg_ns >= 0) {
        cpu += iv.bg_ns * 1e-9;
        idle_cpu += iv.idle_ns * 1e-9;
        idle_all = idle_all && iv.idle_ns >= 0;
        span += iv.dt;
        ++n;
      }
    if (!have_from) printf("n/a (not converged)\n");
    else if (n > 0 && span > 0) {
      printf("%.2f%% of one core (mmtier-* threads, mean of %d intervals)", 100 * cpu / span, n);
      if (idle_all) printf("; idle control thread %.2f%% in the same intervals", 100 * idle_cpu / span);
      printf("\n");
    } else {
      printf("n/a (no \"mmtier-*\" thread seen)\n");
    }
  }

  // Modelled memory time of the updates.
  if (rep.model_updates == 0 || g_tier_of == nullptr) {
    printf("MODELLED n/a (needs mmtier_tier_of)\n");
  } else {
    const double u = static_cast<double>(rep.model_updates);
    const double placed = rep.model_ns * 1e-9, dram = u * kDramNs * 1e-9, pmem = u * kPmemNs * 1e-9;
    printf("MODELLED (not measured; %.0f ns DRAM / %.0f ns PMem per update, weighted by the sampled hot and cold "
           "DRAM shares) for %llu updates: this placement %.3f s (%.1f ns/update), all-DRAM %.3f s, all-PMem %.3f s; "
           "%.2fx all-DRAM time, %.2fx faster than all-PMem\n",
           kDramNs, kPmemNs, (unsigned long long)rep.model_updates, placed, placed / u * 1e9, dram, pmem,
           placed / dram, pmem / placed);
  }

  if (o.lose_write && total > 0) {
    // Self-test of the verifier: undo one update, as a lost write would.
    for (Worker &w : workers)
      if (w.total > 0) {
        base[w.last_w] -= w.last_delta;
        break;
      }
  }

  uint64_t checksum = 0;
  if (o.verify || !timed) {
    std::vector<std::thread> rp;
    for (Worker &w : workers) rp.emplace_back([&w] { replay(w); });
    uint64_t plain = 0, weighted = 0, fold = 0;
    for (uint64_t w = 0; w < words; ++w) {
      const uint64_t v = base[w];
      const uint64_t d = v - init_value(w, o.seed);
      plain += d;
      weighted += d * weight(w);
      if (!timed) fold = bench::mix(fold, v);
    }
    for (std::thread &t : rp) t.join();
    uint64_t exp_plain = 0, exp_weighted = 0;
    for (Worker &w : workers) {
      exp_plain += w.exp_plain;
      exp_weighted += w.exp_weighted;
    }
    if (plain != exp_plain || weighted != exp_weighted) {
      printf("MISMATCH: the footprint's contents differ from the %llu replayed updates "
             "(sum of changes %016llx, expected %016llx; weighted %016llx, expected %016llx)\n",
             (unsigned long long)total, (unsigned long long)plain, (unsigned long long)exp_plain,
             (unsigned long long)weighted, (unsigned long long)exp_weighted);
      fflush(stdout);
      fprintf(stderr, "gups: MISMATCH: memory contents do not match the updates made (lost or misplaced write)\n");
      return 1;
    }
    printf("VERIFY ok: contents match the %llu replayed updates\n", (unsigned long long)total);
    checksum = timed ? 0 : fold;
  }
  // Time mode: checksum 0, since the number of updates each thread makes
  // depends on timing; --updates N gives a checksum of the final contents.
  if (timed) printf("# RESULT checksum is 0 in time mode; use --updates N for a checksum\n");
  bench::print_result("gups", rate, checksum);
  free(base);
  return 0;
}
