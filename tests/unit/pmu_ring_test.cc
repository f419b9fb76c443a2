// PMU sample records and rings (lib/track/pmu_ring): the perf ring-buffer
// parser on a recorded fixture and on generated ring images (wrap-around,
// tail write-back, LOST/THROTTLE accounting, foreign addresses, corrupt
// records), the sample layout for a sample_type and the ring of a mapping.
#include "track/pmu_ring.h"

#include "pmu_test_util.h"
#include "track/pmu_counts.h"

#include <gtest/gtest.h>
#include <linux/perf_event.h>
#include <sys/mman.h>

#include <cstring>
#include <map>
#include <random>
#include <utility>
#include <vector>

namespace mmtier::detail {
namespace {

using pmu_test::capture;
using pmu_test::kBase;
using pmu_test::kRange;
using pmu_test::kUnits;

constexpr uint32_t kPid = 4242;
constexpr uint64_t kLoadId = 0x51, kStoreId = 0x52;

// data_src values as the kernel writes them (uapi perf_mem_data_src).
constexpr uint64_t kSrcLoadDram =
    PERF_MEM_OP_LOAD | (uint64_t{PERF_MEM_LVL_HIT | PERF_MEM_LVL_LOC_RAM} << PERF_MEM_LVL_SHIFT) |
    (uint64_t{PERF_MEM_SNOOP_NONE} << PERF_MEM_SNOOP_SHIFT);
constexpr uint64_t kSrcStoreL1 =
    PERF_MEM_OP_STORE | (uint64_t{PERF_MEM_LVL_HIT | PERF_MEM_LVL_L1} << PERF_MEM_LVL_SHIFT) |
    (uint64_t{PERF_MEM_TLB_HIT | PERF_MEM_TLB_L1} << PERF_MEM_TLB_SHIFT);
constexpr uint64_t kSrcNA = PERF_MEM_OP_NA;

const pmu_event_id kIds[] = {{kLoadId, pmu_kind::load}, {kStoreId, pmu_kind::store}};

pmu_filter test_filter() {
  pmu_filter f;
  f.layout = pmu_layout_for(kPmuSampleType);
  f.base = kBase;
  f.size = kRange;
  f.pid = kPid;
  f.ids = kIds;
  f.nids = 2;
  f.default_kind = pmu_kind::mixed;
  return f;
}

// One PERF_RECORD_SAMPLE of kPmuSampleType.
struct gen_sample {
  uint64_t id = kLoadId;
  uint32_t pid = kPid, tid = kPid + 1;
  uint64_t time = 0;
  uint64_t addr = kBase;
  uint64_t weight = 0;
  uint64_t data_src = kSrcLoadDram;
};

// The generator: a perf mmap image in the layout the kernel maps, the
// control page (struct perf_event_mmap_page with data_offset/data_size) and
// a power-of-two data area that ends right at a PROT_NONE guard page, so
// that any read past the area faults.  Records are appended at the head in
// the uapi layout, wrapping at the end of the area; publish() stores
// data_head.  Positions are free-running like the kernel's; tail and head
// both start at `start`.
class ring_image {
 public:
  explicit ring_image(size_t data_size, uint64_t start = 0) : size_(data_size), head_(start) {
    const size_t area = (data_size + 4095) & ~size_t{4095};
    map_len_ = 4096 + area + 4096;
    void *m = mmap(nullptr, map_len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT_NE(m, MAP_FAILED);
    map_ = static_cast<unsigned char *>(m);
    EXPECT_EQ(mprotect(map_ + 4096 + area, 4096, PROT_NONE), 0);
    off_ = 4096 + area - data_size;
    meta()->data_offset = off_;
    meta()->data_size = data_size;
    meta()->data_head = meta()->data_tail = start;
  }
  ~ring_image() { munmap(map_, map_len_); }
  ring_image(const ring_image &) = delete;
  ring_image &operator=(const ring_image &) = delete;

  perf_event_mmap_page *meta() { return reinterpret_cast<perf_event_mmap_page *>(map_); }
  unsigned char *data() { return map_ + off_; }
  uint64_t head() const { return head_; }
  size_t size() const { return size_; }

  pmu_ring_view view() {
    pmu_ring_view v;
    EXPECT_TRUE(pmu_ring_from_mapping(map_, off_ + size_, &v));
    return v;
  }

  void put(const void *p, size_t n) {
    const auto *b = static_cast<const unsigned char *>(p);
    for (size_t i = 0; i < n; i++) data()[(head_ + i) & (size_ - 1)] = b[i];
    head_ += n;
  }
  void u64(uint64_t v) { put(&v, 8); }
  void u32(uint32_t v) { put(&v, 4); }
  void header(uint32_t type, uint16_t misc, uint16_t size) {
    perf_event_header h{type, misc, size};
    put(&h, sizeof h);
  }
  void sample(const gen_sample &s) {
    header(PERF_RECORD_SAMPLE, PERF_RECORD_MISC_USER, 56);
    u64(s.id);
    u32(s.pid);
    u32(s.tid);
    u64(s.time);
    u64(s.addr);
    u64(s.weight);
    u64(s.data_src);
  }
  void lost(uint64_t id, uint64_t n) {
    header(PERF_RECORD_LOST, 0, 24);
    u64(id);
    u64(n);
  }
  void lost_samples(uint64_t n) {
    header(PERF_RECORD_LOST_SAMPLES, 0, 16);
    u64(n);
  }
  void throttle(bool on, uint64_t time, uint64_t id) {
    header(on ? PERF_RECORD_THROTTLE : PERF_RECORD_UNTHROTTLE, 0, 32);
    u64(time);
    u64(id);
    u64(id);
  }
  void task(bool exit, uint32_t pid, uint32_t tid, uint64_t time) {
    header(exit ? PERF_RECORD_EXIT : PERF_RECORD_FORK, 0, 32);
    u32(pid);
    u32(pid);
    u32(tid);
    u32(pid);
    u64(time);
  }
  void publish() { meta()->data_head = head_; }
  void publish_at(uint64_t head) { meta()->data_head = head; }

 private:
  unsigned char *map_ = nullptr;
  size_t map_len_ = 0, off_ = 0;
  size_t size_;
  uint64_t head_;
};

// A recorded ring: the data area of a perf buffer holding nine records of
// kPmuSampleType (IDENTIFIER | TID | TIME | ADDR | WEIGHT | DATA_SRC),
// little-endian, laid out per the uapi linux/perf_event.h comments:
//   struct perf_event_header { u32 type; u16 misc; u16 size; }
//   SAMPLE:       header, u64 id, u32 pid, u32 tid, u64 time, u64 addr,
//                 u64 weight, u64 data_src                     (56 bytes)
//   THROTTLE/UNTHROTTLE: header, u64 time, u64 id, u64 stream_id (32)
//   LOST:         header, u64 id, u64 lost                     (24)
//   LOST_SAMPLES: header, u64 lost                             (16)
// Managed range 0x7f5a00000000 + 32 MiB, pid 4242, event ids 0x51 (loads),
// 0x52 (stores).  data_src 0x101042 = OP_LOAD | LVL(HIT|LOC_RAM) |
// SNOOP_NONE; 0x28000144 = OP_STORE | LVL(HIT|L1) | TLB(HIT|L1).
const unsigned char kRecorded[] = {
    // 1. SAMPLE: a load of unit 1 taking 300 cycles, from DRAM
    0x09, 0x00, 0x00, 0x00, 0x02, 0x00, 0x38, 0x00,  // type 9, misc USER, size 56
    0x51, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // id 0x51
    0x92, 0x10, 0x00, 0x00, 0x93, 0x10, 0x00, 0x00,  // pid 4242, tid 4243
    0x00, 0xca, 0x9a, 0x3b, 0x00, 0x00, 0x00, 0x00,  // time 1000000000
    0x40, 0x00, 0x20, 0x00, 0x5a, 0x7f, 0x00, 0x00,  // addr 0x7f5a00200040
    0x2c, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // weight 300
    0x42, 0x10, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00,  // data_src 0x101042
    // 2. SAMPLE: a store to unit 3 (L1 hit)
    0x09, 0x00, 0x00, 0x00, 0x02, 0x00, 0x38, 0x00,  //
    0x52, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // id 0x52
    0x92, 0x10, 0x00, 0x00, 0x94, 0x10, 0x00, 0x00,  // pid 4242, tid 4244
    0xe8, 0xcd, 0x9a, 0x3b, 0x00, 0x00, 0x00, 0x00,  // time 1000001000
    0x08, 0x00, 0x60, 0x00, 0x5a, 0x7f, 0x00, 0x00,  // addr 0x7f5a00600008
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // weight 0
    0x44, 0x01, 0x00, 0x28, 0x00, 0x00, 0x00, 0x00,  // data_src 0x28000144
    // 3. THROTTLE
    0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00,  // type 5, size 32
    0xd0, 0xd1, 0x9a, 0x3b, 0x00, 0x00, 0x00, 0x00,  // time 1000002000
    0x51, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // id
    0x51, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // stream_id
    // 4. UNTHROTTLE
    0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00,  // type 6, size 32
    0xb8, 0xd5, 0x9a, 0x3b, 0x00, 0x00, 0x00, 0x00,  // time 1000003000
    0x51, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  //
    0x51, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  //
    // 5. LOST: 7 samples
    0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x18, 0x00,  // type 2, size 24
    0x51, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // id
    0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // lost 7
    // 6. SAMPLE: a load outside the managed range
    0x09, 0x00, 0x00, 0x00, 0x02, 0x00, 0x38, 0x00,  //
    0x51, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  //
    0x92, 0x10, 0x00, 0x00, 0x93, 0x10, 0x00, 0x00,  //
    0xa0, 0xd9, 0x9a, 0x3b, 0x00, 0x00, 0x00, 0x00,  //
    0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,  // addr 0x400000
    0x78, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  //
    0x42, 0x10, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00,  //
    // 7. SAMPLE: a load by another process (pid 999) inside the range
    0x09, 0x00, 0x00, 0x00, 0x02, 0x00, 0x38, 0x00,  //
    0x51, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  //
    0xe7, 0x03, 0x00, 0x00, 0xe7, 0x03, 0x00, 0x00,  // pid 999, tid 999
    0x88, 0xdd, 0x9a, 0x3b, 0x00, 0x00, 0x00, 0x00,  //
    0x10, 0x00, 0x00, 0x00, 0x5a, 0x7f, 0x00, 0x00,  // addr 0x7f5a00000010
    0x5a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  //
    0x42, 0x10, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00,  //
    // 8. LOST_SAMPLES: 3
    0x0d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00,  // type 13, size 16
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // lost 3
    // 9. SAMPLE of the loads event with data_src N/A: a load of unit 1
    0x09, 0x00, 0x00, 0x00, 0x02, 0x00, 0x38, 0x00,  //
    0x51, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  //
    0x92, 0x10, 0x00, 0x00, 0x93, 0x10, 0x00, 0x00,  //
    0x70, 0xe1, 0x9a, 0x3b, 0x00, 0x00, 0x00, 0x00,  // time 1000006000
    0x00, 0x01, 0x20, 0x00, 0x5a, 0x7f, 0x00, 0x00,  // addr 0x7f5a00200100
    0x4b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // weight 75
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // data_src OP_NA
};
static_assert(sizeof kRecorded == 384);

void check_recorded(const capture &c, const pmu_stats &st) {
  ASSERT_EQ(c.samples.size(), 3u);
  EXPECT_EQ(c.samples[0].addr, kBase + 0x200040);
  EXPECT_FALSE(c.samples[0].is_store);
  EXPECT_EQ(c.samples[0].weight, 300u);
  EXPECT_EQ(c.samples[0].pid, kPid);
  EXPECT_EQ(c.samples[0].tid, kPid + 1);
  EXPECT_EQ(c.samples[0].time, 1000000000u);
  EXPECT_EQ(c.samples[1].addr, kBase + 0x600008);
  EXPECT_TRUE(c.samples[1].is_store);
  EXPECT_EQ(c.samples[1].tid, kPid + 2);
  EXPECT_EQ(c.samples[2].addr, kBase + 0x200100);
  EXPECT_FALSE(c.samples[2].is_store);
  EXPECT_EQ(c.samples[2].weight, 75u);
  EXPECT_EQ(st.records, 9u);
  EXPECT_EQ(st.bytes, sizeof kRecorded);
  EXPECT_EQ(st.samples, 3u);
  EXPECT_EQ(st.foreign, 1u);
  EXPECT_EQ(st.other_process, 1u);
  EXPECT_EQ(st.throttled, 1u);
  EXPECT_EQ(st.unthrottled, 1u);
  EXPECT_EQ(st.lost, 7u);
  EXPECT_EQ(st.lost_records, 1u);
  EXPECT_EQ(st.lost_samples, 3u);
  EXPECT_EQ(st.corrupt, 0u);
  EXPECT_EQ(st.malformed, 0u);
}

TEST(PmuLayout, ProductionSampleTypeOffsetsFollowTheUapiOrder) {
  pmu_layout l = pmu_layout_for(kPmuSampleType);
  ASSERT_TRUE(l.valid);
  EXPECT_EQ(l.id, 8);
  EXPECT_EQ(l.pid_tid, 16);
  EXPECT_EQ(l.time, 24);
  EXPECT_EQ(l.addr, 32);
  EXPECT_EQ(l.weight, 40);
  EXPECT_EQ(l.data_src, 48);
  EXPECT_EQ(l.min_size, 56);
  EXPECT_FALSE(l.weight_struct);

  // IP, CPU and PERIOD shift the fields after them.
  pmu_layout m =
      pmu_layout_for(kPmuSampleType | PERF_SAMPLE_IP | PERF_SAMPLE_CPU | PERF_SAMPLE_PERIOD);
  ASSERT_TRUE(m.valid);
  EXPECT_EQ(m.id, 8);
  EXPECT_EQ(m.pid_tid, 24);
  EXPECT_EQ(m.addr, 40);
  EXPECT_EQ(m.weight, 64);
  EXPECT_EQ(m.data_src, 72);

  pmu_layout w =
      pmu_layout_for((kPmuSampleType & ~uint64_t{PERF_SAMPLE_WEIGHT}) | PERF_SAMPLE_WEIGHT_STRUCT);
  EXPECT_TRUE(w.valid);
  EXPECT_TRUE(w.weight_struct);
  EXPECT_EQ(w.weight, 40);

  EXPECT_FALSE(pmu_layout_for(kPmuSampleType | PERF_SAMPLE_CALLCHAIN).valid)
      << "a variable-size field before WEIGHT/DATA_SRC";
  EXPECT_TRUE(pmu_layout_for(PERF_SAMPLE_TID | PERF_SAMPLE_ADDR | PERF_SAMPLE_CALLCHAIN).valid)
      << "nothing needed after the callchain";
  EXPECT_FALSE(pmu_layout_for(kPmuSampleType & ~uint64_t{PERF_SAMPLE_ADDR}).valid);
  EXPECT_FALSE(pmu_layout_for(kPmuSampleType | PERF_SAMPLE_WEIGHT_STRUCT).valid);
}

TEST(PmuRing, MappingGivesTheDataArea) {
  alignas(4096) static unsigned char map[3 * 4096];
  memset(map, 0, sizeof map);
  auto *meta = reinterpret_cast<perf_event_mmap_page *>(map);
  pmu_ring_view v;
  // Kernels before 4.1 leave data_offset/data_size 0: data follows the page.
  ASSERT_TRUE(pmu_ring_from_mapping(map, sizeof map, &v));
  EXPECT_EQ(v.data, map + 4096);
  EXPECT_EQ(v.size, 2u * 4096);
  meta->data_offset = 4096;
  meta->data_size = 4096;
  ASSERT_TRUE(pmu_ring_from_mapping(map, sizeof map, &v));
  EXPECT_EQ(v.size, 4096u);
  meta->data_size = 3000;  // not a power of two
  EXPECT_FALSE(pmu_ring_from_mapping(map, sizeof map, &v));
  meta->data_size = 4 * 4096;  // beyond the mapping
  EXPECT_FALSE(pmu_ring_from_mapping(map, sizeof map, &v));
  meta->data_offset = 64;  // inside the control page
  meta->data_size = 1024;
  EXPECT_FALSE(pmu_ring_from_mapping(map, sizeof map, &v));
}

TEST(PmuParse, RecordedRingGivesExactSamplesAndCounters) {
  ring_image ring(512);
  ring.put(kRecorded, sizeof kRecorded);
  ring.publish();
  capture c;
  pmu_stats st{};
  EXPECT_EQ(pmu_parse_ring(ring.view(), test_filter(), c.sink(), &st), 3u);
  check_recorded(c, st);
  EXPECT_EQ(ring.meta()->data_tail, sizeof kRecorded);
}

TEST(PmuParse, RecordedRingAtEveryRotationWrapsCorrectly) {
  // The same records starting at every 8-byte offset of a 512-byte area (and
  // at free-running positions past 2^40), so every record is split across
  // the end of the area at every possible point, once.
  for (uint64_t r = 0; r < 512; r += 8) {
    SCOPED_TRACE(r);
    const uint64_t start = (uint64_t{1} << 40) + r;
    ring_image ring(512, start);
    ring.put(kRecorded, sizeof kRecorded);
    ring.publish();
    capture c;
    pmu_stats st{};
    pmu_parse_ring(ring.view(), test_filter(), c.sink(), &st);
    check_recorded(c, st);
    EXPECT_EQ(ring.meta()->data_tail, start + sizeof kRecorded);
  }
}

TEST(PmuParse, RecordSplitAcrossTheEndIsReassembled) {
  // Starts that split a sample inside its header, between header and id,
  // inside pid/tid, inside addr and just before data_src.
  for (uint64_t back : {4, 8, 12, 20, 28, 36, 52}) {
    SCOPED_TRACE(back);
    const size_t size = 256;
    ring_image ring(size, 3 * size - back);
    gen_sample a;
    a.addr = kBase + 0x1234567;
    a.tid = 0x01020304;
    a.time = 0x1122334455667788;
    a.weight = 0x0badcafe;
    gen_sample b = a;
    b.id = kStoreId;
    b.addr = kBase + kRange - 1;
    b.data_src = kSrcStoreL1;
    ring.sample(a);
    ring.sample(b);
    ring.publish();
    capture c;
    pmu_stats st{};
    EXPECT_EQ(pmu_parse_ring(ring.view(), test_filter(), c.sink(), &st), 2u);
    ASSERT_EQ(c.samples.size(), 2u);
    EXPECT_EQ(c.samples[0].addr, a.addr);
    EXPECT_EQ(c.samples[0].tid, a.tid);
    EXPECT_EQ(c.samples[0].time, a.time);
    EXPECT_EQ(c.samples[0].weight, a.weight);
    EXPECT_FALSE(c.samples[0].is_store);
    EXPECT_EQ(c.samples[1].addr, b.addr);
    EXPECT_TRUE(c.samples[1].is_store);
    EXPECT_EQ(st.corrupt, 0u);
    EXPECT_EQ(ring.meta()->data_tail, ring.head());
  }
}

TEST(PmuParse, GeneratedBatchesCountPerUnitExactly) {
  // Forty batches of random records through a 4 KiB ring starting 24 bytes
  // before its end and at a free-running position past 2^40: the ring wraps
  // many times.  Expected counts are kept by the generator.
  std::mt19937_64 rng(20240607);
  ring_image ring(4096, (uint64_t{1} << 40) + 4096 - 24);
  std::vector<uint64_t> storage((pmu_unit_counts::storage_bytes(kUnits) + 7) / 8);
  pmu_unit_counts counts;
  ASSERT_TRUE(counts.init(kBase, kUnits, storage.data()));
  std::map<uint32_t, std::pair<uint32_t, uint32_t>> expect;  // unit -> reads, writes
  uint64_t foreign = 0, other = 0, lost = 0, samples = 0;
  pmu_stats st{};
  const pmu_filter f = test_filter();
  for (int batch = 0; batch < 40; batch++) {
    const int n = 1 + static_cast<int>(rng() % 60);  // 60 * 56 + 24 < 4096
    bool lost_done = false;
    for (int i = 0; i < n; i++) {
      const unsigned pick = static_cast<unsigned>(rng() % 100);
      gen_sample s;
      s.time = static_cast<uint64_t>(batch) * 1000 + static_cast<uint64_t>(i);
      if (pick < 5 && !lost_done) {
        const uint64_t k = 1 + rng() % 100;
        ring.lost(kLoadId, k);
        lost += k;
        lost_done = true;
        continue;
      }
      if (pick < 15) {  // outside: below, at the end, far away
        const uint64_t choices[] = {kBase - 1, kBase + kRange, 0, rng()};
        s.addr = choices[rng() % 4];
        if (s.addr - kBase < kRange) s.addr = 0;
        foreign++;
      } else if (pick < 20) {
        s.pid = kPid + 7;
        s.addr = kBase + rng() % kRange;
        other++;
      } else {
        const uint32_t unit = static_cast<uint32_t>(rng() % kUnits);
        s.addr = kBase + (uint64_t{unit} << kUnitShift) + rng() % kUnitSize;
        const bool store = pick >= 70;
        if (store) {
          // Either the store event's id or the data source says "store".
          if (rng() % 2) {
            s.id = kStoreId;
            s.data_src = kSrcNA;
          } else {
            s.data_src = kSrcStoreL1;
          }
          expect[unit].second++;
        } else {
          expect[unit].first++;
        }
        samples++;
      }
      ring.sample(s);
    }
    ring.publish();
    pmu_parse_ring(ring.view(), f, counts.sink(), &st);
    ASSERT_EQ(ring.meta()->data_tail, ring.head()) << "batch " << batch;
  }
  EXPECT_EQ(st.samples, samples);
  EXPECT_EQ(st.foreign, foreign);
  EXPECT_EQ(st.other_process, other);
  EXPECT_EQ(st.lost, lost);
  EXPECT_EQ(st.corrupt, 0u);
  EXPECT_EQ(counts.touched(), expect.size());
  for (uint32_t u = 0; u < kUnits; u++) {
    SCOPED_TRACE(u);
    EXPECT_EQ(counts.count(u).reads, expect[u].first);
    EXPECT_EQ(counts.count(u).writes, expect[u].second);
  }
  EXPECT_EQ(counts.outside(), 0u);
}

TEST(PmuParse, DataSourceDecidesLoadOrStoreAndKindIsTheFallback) {
  ring_image ring(1024);
  gen_sample s;
  s.addr = kBase;
  s.id = kLoadId;
  s.data_src = kSrcStoreL1;  // data_src wins over the event's kind
  ring.sample(s);
  s.id = kStoreId;
  s.data_src = kSrcNA;  // kind: store
  ring.sample(s);
  s.id = 0x99;  // unknown id, N/A: neither (IBS non-memory op)
  ring.sample(s);
  s.data_src = kSrcLoadDram;  // unknown id, load
  ring.sample(s);
  s.data_src = 0;  // nothing at all
  ring.sample(s);
  ring.publish();
  capture c;
  pmu_stats st{};
  pmu_parse_ring(ring.view(), test_filter(), c.sink(), &st);
  ASSERT_EQ(c.samples.size(), 3u);
  EXPECT_TRUE(c.samples[0].is_store);
  EXPECT_TRUE(c.samples[1].is_store);
  EXPECT_FALSE(c.samples[2].is_store);
  EXPECT_EQ(st.non_memory, 2u);
}

TEST(PmuParse, ForeignProcessesIgnoredThreadsAndOutOfRangeAreDropped) {
  ring_image ring(1024);
  pmu_filter f = test_filter();
  const uint32_t ignored[] = {kPid + 9};
  f.ignore_tids = ignored;
  f.nignore = 1;
  gen_sample s;
  s.addr = kBase - 8;  // just below
  ring.sample(s);
  s.addr = kBase + kRange;  // just past
  ring.sample(s);
  s.addr = 0;  // PEBS gives 0 when the address is unknown
  ring.sample(s);
  s.addr = kBase + kRange - 8;  // last unit: kept
  ring.sample(s);
  s.tid = kPid + 9;  // the migration thread, say
  ring.sample(s);
  s.tid = kPid + 1;
  s.pid = kPid + 100;
  ring.sample(s);
  ring.publish();
  capture c;
  pmu_stats st{};
  EXPECT_EQ(pmu_parse_ring(ring.view(), f, c.sink(), &st), 1u);
  EXPECT_EQ(st.foreign, 3u);
  EXPECT_EQ(st.ignored_tid, 1u);
  EXPECT_EQ(st.other_process, 1u);
  ASSERT_EQ(c.samples.size(), 1u);
  EXPECT_EQ(c.samples[0].addr, kBase + kRange - 8);

  // pid 0 in the filter: any process.
  ring_image any(256);
  s.pid = 1;
  s.tid = 1;
  any.sample(s);
  any.publish();
  f.pid = 0;
  capture c2;
  pmu_stats st2{};
  EXPECT_EQ(pmu_parse_ring(any.view(), f, c2.sink(), &st2), 1u);
}

TEST(PmuParse, TaskRecordsOfTheProcessReachTheSink) {
  ring_image ring(512);
  ring.task(false, kPid, 5001, 10);
  ring.task(false, 999, 6001, 11);  // another process: not reported
  ring.task(true, kPid, 5001, 12);
  ring.publish();
  capture c;
  pmu_stats st{};
  pmu_parse_ring(ring.view(), test_filter(), c.sink(), &st);
  ASSERT_EQ(c.tasks.size(), 2u);
  EXPECT_FALSE(c.tasks[0].exit);
  EXPECT_EQ(c.tasks[0].tid, 5001u);
  EXPECT_EQ(c.tasks[0].time, 10u);
  EXPECT_TRUE(c.tasks[1].exit);
  EXPECT_EQ(c.tasks[1].time, 12u);
  EXPECT_EQ(st.forks, 1u);
  EXPECT_EQ(st.exits, 1u);
  EXPECT_EQ(st.records, 3u);
}

TEST(PmuParse, TailIsWrittenBackAndOnlyNewRecordsAreRead) {
  ring_image ring(512, 40);
  gen_sample a, b, cc, d;
  a.addr = kBase + 1;
  b.addr = kBase + 2;
  cc.addr = kBase + 3;
  d.addr = kBase + 4;
  const pmu_filter f = test_filter();
  pmu_stats st{};
  capture c;
  ring.sample(a);
  ring.publish();
  EXPECT_EQ(pmu_parse_ring(ring.view(), f, c.sink(), &st), 1u);
  EXPECT_EQ(ring.meta()->data_tail, 40u + 56);
  EXPECT_EQ(pmu_parse_ring(ring.view(), f, c.sink(), &st), 0u)
      << "consumed records are not read again";
  EXPECT_EQ(st.records, 1u);
  ring.sample(b);
  ring.sample(cc);
  ring.publish();
  EXPECT_EQ(pmu_parse_ring(ring.view(), f, c.sink(), &st), 2u);
  ring.sample(d);  // written, head not yet published
  EXPECT_EQ(pmu_parse_ring(ring.view(), f, c.sink(), &st), 0u);
  EXPECT_EQ(ring.meta()->data_tail, 40u + 3 * 56);
  ring.publish();
  EXPECT_EQ(pmu_parse_ring(ring.view(), f, c.sink(), &st), 1u);
  ASSERT_EQ(c.samples.size(), 4u);
  for (size_t i = 0; i < 4; i++) EXPECT_EQ(c.samples[i].addr, kBase + 1 + i);
  EXPECT_EQ(ring.meta()->data_tail, ring.head());
}

TEST(PmuParse, EmptyRingReadsNothing) {
  ring_image ring(256, 1000);
  capture c;
  pmu_stats st{};
  EXPECT_EQ(pmu_parse_ring(ring.view(), test_filter(), c.sink(), &st), 0u);
  EXPECT_EQ(st.records, 0u);
  EXPECT_EQ(st.corrupt, 0u);
  EXPECT_EQ(ring.meta()->data_tail, 1000u);
}

// A corrupt record after a good one: the good one is delivered, parsing
// stops, the rest is discarded (tail = head) and counted.
void expect_stops_at_corrupt(uint16_t bad_size, size_t ring_size, uint64_t start) {
  SCOPED_TRACE(bad_size);
  ring_image ring(ring_size, start);
  gen_sample a;
  a.addr = kBase + 77;
  ring.sample(a);
  ring.header(PERF_RECORD_SAMPLE, 0, bad_size);
  ring.u64(0);
  gen_sample b;
  b.addr = kBase + 99;
  ring.sample(b);
  ring.publish();
  capture c;
  pmu_stats st{};
  EXPECT_EQ(pmu_parse_ring(ring.view(), test_filter(), c.sink(), &st), 1u);
  ASSERT_EQ(c.samples.size(), 1u);
  EXPECT_EQ(c.samples[0].addr, kBase + 77);
  EXPECT_EQ(st.corrupt, 1u);
  EXPECT_EQ(ring.meta()->data_tail, ring.head());
  // And the next parse of the same ring is quiet.
  EXPECT_EQ(pmu_parse_ring(ring.view(), test_filter(), c.sink(), &st), 0u);
  EXPECT_EQ(st.corrupt, 1u);
}

TEST(PmuParse, ZeroOrTinyRecordSizeStopsParsingSafely) {
  expect_stops_at_corrupt(0, 256, 0);
  expect_stops_at_corrupt(4, 256, 0);
  expect_stops_at_corrupt(0, 256, 256 - 56);  // the bad header right at the wrap
}

TEST(PmuParse, RecordLargerThanWhatIsLeftStopsParsingSafely) {
  expect_stops_at_corrupt(0xfff8, 256, 0);  // larger than the whole area
  expect_stops_at_corrupt(0xfff8, 256, 200);
  expect_stops_at_corrupt(200, 256, 0);  // fits the area, not what was published
}

TEST(PmuParse, TruncatedRecordAtTheHeadIsCorrupt) {
  ring_image ring(256);
  gen_sample a;
  ring.sample(a);
  ring.sample(a);
  ring.publish_at(56 + 24);  // head inside the second record
  capture c;
  pmu_stats st{};
  EXPECT_EQ(pmu_parse_ring(ring.view(), test_filter(), c.sink(), &st), 1u);
  EXPECT_EQ(st.corrupt, 1u);
  EXPECT_EQ(ring.meta()->data_tail, 56u + 24);
}

TEST(PmuParse, HeadMoreThanTheAreaAheadDiscardsEverything) {
  ring_image ring(256, 64);
  gen_sample a;
  for (int i = 0; i < 4; i++) ring.sample(a);  // 224 bytes
  ring.publish_at(64 + 256 + 8);
  capture c;
  pmu_stats st{};
  EXPECT_EQ(pmu_parse_ring(ring.view(), test_filter(), c.sink(), &st), 0u);
  EXPECT_EQ(st.corrupt, 1u);
  EXPECT_EQ(st.records, 0u);
  EXPECT_EQ(ring.meta()->data_tail, 64u + 256 + 8);
  // A tail ahead of the head is the same thing.
  ring_image back(256, 512);
  back.publish_at(500);
  pmu_stats st2{};
  EXPECT_EQ(pmu_parse_ring(back.view(), test_filter(), c.sink(), &st2), 0u);
  EXPECT_EQ(st2.corrupt, 1u);
}

TEST(PmuParse, ShortRecordsAreSkippedBySize) {
  ring_image ring(512);
  ring.header(PERF_RECORD_SAMPLE, 0, 16);  // a sample too short for the layout
  ring.u64(kLoadId);
  ring.header(PERF_RECORD_LOST, 0, 16);  // a LOST without its count
  ring.u64(kLoadId);
  ring.header(PERF_RECORD_MMAP, 0, 40);  // a record type not asked for
  for (int i = 0; i < 4; i++) ring.u64(0);
  gen_sample a;
  a.addr = kBase + 5;
  ring.sample(a);
  ring.publish();
  capture c;
  pmu_stats st{};
  EXPECT_EQ(pmu_parse_ring(ring.view(), test_filter(), c.sink(), &st), 1u);
  EXPECT_EQ(st.malformed, 2u);
  EXPECT_EQ(st.unknown, 1u);
  EXPECT_EQ(st.lost, 0u);
  EXPECT_EQ(st.corrupt, 0u);
  EXPECT_EQ(st.records, 4u);
}

}  // namespace
}  // namespace mmtier::detail
