// PMU sample records and perf rings (see pmu_ring.h): the sample layout for
// a sample_type, the ring of a perf mapping, and the parser that consumes a
// ring's records and keeps the samples its filter lets through.
#include "track/pmu_ring.h"

#include "support/layout.h"

#include <climits>
#include <cstring>

namespace mmtier::detail {

namespace {

// Bytes of a record decoded at most (a sample of any sample_type the layout
// accepts fits; longer records are skipped by their size).
constexpr size_t kDecodeMax = 128;

uint64_t load64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

uint32_t load32(const unsigned char *p) {
  uint32_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

// Copies n bytes at free-running position pos out of the ring, in two
// pieces when they wrap past the end of the data area.  n <= ring.size.
void copy_out(const pmu_ring_view &r, uint64_t pos, void *dst, size_t n) {
  const size_t off = static_cast<size_t>(pos & (r.size - 1));
  const size_t first = n < r.size - off ? n : static_cast<size_t>(r.size - off);
  memcpy(dst, r.data + off, first);
  if (n > first) memcpy(static_cast<unsigned char *>(dst) + first, r.data, n - first);
}

pmu_kind kind_of(const pmu_filter &f, uint64_t id) {
  size_t lo = 0, hi = f.nids;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (f.ids[mid].id < id) lo = mid + 1;
    else hi = mid;
  }
  return lo < f.nids && f.ids[lo].id == id ? f.ids[lo].kind : f.default_kind;
}

void parse_sample(const unsigned char *rec, size_t n, const pmu_filter &f, const pmu_sink &sink,
                  pmu_stats *st, size_t *delivered) {
  const pmu_layout &l = f.layout;
  if (!l.valid || n < l.min_size) {
    st->malformed++;
    return;
  }
  pmu_sample s{};
  s.addr = load64(rec + l.addr);
  if (l.pid_tid >= 0) {
    s.pid = load32(rec + l.pid_tid);
    s.tid = load32(rec + l.pid_tid + 4);
    if (f.pid != 0 && s.pid != f.pid) {
      st->other_process++;
      return;
    }
    for (size_t i = 0; i < f.nignore; i++) {
      if (f.ignore_tids[i] == s.tid) {
        st->ignored_tid++;
        return;
      }
    }
  }
  const pmu_kind kind = l.id >= 0 && f.nids > 0 ? kind_of(f, load64(rec + l.id)) : f.default_kind;
  const uint64_t op = l.data_src >= 0 ? (load64(rec + l.data_src) >> PERF_MEM_OP_SHIFT) & 0x1f : 0;
  if (op & PERF_MEM_OP_STORE) s.is_store = true;
  else if (op & PERF_MEM_OP_LOAD) s.is_store = false;
  else if (kind == pmu_kind::load) s.is_store = false;
  else if (kind == pmu_kind::store) s.is_store = true;
  else {
    st->non_memory++;
    return;
  }
  if (s.addr - f.base >= f.size) {
    st->foreign++;
    return;
  }
  if (l.time >= 0) s.time = load64(rec + l.time);
  if (l.weight >= 0) {
    uint64_t w = load64(rec + l.weight);
    if (l.weight_struct) w &= 0xffffffffu;
    s.weight = w > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(w);
  }
  st->samples++;
  ++*delivered;
  if (sink.sample) sink.sample(sink.ctx, s);
}

}  // namespace

pmu_layout pmu_layout_for(uint64_t st) {
  pmu_layout l{};
  l.id = l.pid_tid = l.time = l.addr = l.weight = l.data_src = -1;
  int off = sizeof(perf_event_header);
  auto field = [&](uint64_t bit, int16_t *where) {
    if (!(st & bit)) return;
    if (where) *where = static_cast<int16_t>(off);
    off += 8;
  };
  field(PERF_SAMPLE_IDENTIFIER, &l.id);
  field(PERF_SAMPLE_IP, nullptr);
  field(PERF_SAMPLE_TID, &l.pid_tid);
  field(PERF_SAMPLE_TIME, &l.time);
  field(PERF_SAMPLE_ADDR, &l.addr);
  field(PERF_SAMPLE_ID, nullptr);
  field(PERF_SAMPLE_STREAM_ID, nullptr);
  field(PERF_SAMPLE_CPU, nullptr);
  field(PERF_SAMPLE_PERIOD, nullptr);
  const uint64_t variable = PERF_SAMPLE_READ | PERF_SAMPLE_CALLCHAIN | PERF_SAMPLE_RAW |
                            PERF_SAMPLE_BRANCH_STACK | PERF_SAMPLE_REGS_USER |
                            PERF_SAMPLE_STACK_USER;
  const bool after_variable = (st & variable) != 0;
  bool ok = l.addr >= 0;
  if ((st & PERF_SAMPLE_WEIGHT) && (st & PERF_SAMPLE_WEIGHT_STRUCT)) ok = false;
  if (st & (PERF_SAMPLE_WEIGHT | PERF_SAMPLE_WEIGHT_STRUCT)) {
    if (after_variable) ok = false;
    l.weight_struct = (st & PERF_SAMPLE_WEIGHT_STRUCT) != 0;
    field(PERF_SAMPLE_WEIGHT | PERF_SAMPLE_WEIGHT_STRUCT, &l.weight);
  }
  if (st & PERF_SAMPLE_DATA_SRC) {
    if (after_variable) ok = false;
    field(PERF_SAMPLE_DATA_SRC, &l.data_src);
  }
  l.min_size = static_cast<uint16_t>(off);
  l.valid = ok && off <= static_cast<int>(kDecodeMax);
  return l;
}

bool pmu_ring_from_mapping(void *map, size_t len, pmu_ring_view *out) {
  *out = {};
  if (!map || len <= kPageSize) return false;
  auto *meta = static_cast<perf_event_mmap_page *>(map);
  uint64_t off = meta->data_offset, size = meta->data_size;
  if (off == 0 && size == 0) {
    off = kPageSize;
    size = len - kPageSize;
  }
  if (size < 8 || (size & (size - 1)) != 0 || off < sizeof(perf_event_mmap_page) || off > len ||
      size > len - off)
    return false;
  out->meta = meta;
  out->data = static_cast<const unsigned char *>(map) + off;
  out->size = size;
  return true;
}

size_t pmu_parse_ring(const pmu_ring_view &r, const pmu_filter &f, const pmu_sink &sink,
                      pmu_stats *st) {
  if (!r.meta || !r.data || r.size < sizeof(perf_event_header) || (r.size & (r.size - 1)) != 0)
    return 0;
  // Acquire: the record bytes below data_head are read after it.
  const uint64_t head = __atomic_load_n(&r.meta->data_head, __ATOMIC_ACQUIRE);
  uint64_t pos = __atomic_load_n(&r.meta->data_tail, __ATOMIC_RELAXED);
  if (head == pos) return 0;
  size_t delivered = 0;
  if (head - pos > r.size) {
    // More than the ring holds (or a tail ahead of the head): nothing in it
    // can be trusted.
    st->corrupt++;
    pos = head;
  }
  while (pos != head) {
    const uint64_t left = head - pos;
    perf_event_header h;
    if (left < sizeof h) {
      st->corrupt++;
      pos = head;
      break;
    }
    copy_out(r, pos, &h, sizeof h);
    if (h.size < sizeof h || h.size > left) {
      st->corrupt++;
      pos = head;
      break;
    }
    alignas(8) unsigned char rec[kDecodeMax];
    const size_t n = h.size < sizeof rec ? h.size : sizeof rec;
    copy_out(r, pos, rec, n);
    st->records++;
    st->bytes += h.size;
    switch (h.type) {
      case PERF_RECORD_SAMPLE: parse_sample(rec, n, f, sink, st, &delivered); break;
      case PERF_RECORD_LOST:  // header, id, lost
        if (n >= 24) {
          st->lost += load64(rec + 16);
          st->lost_records++;
        } else {
          st->malformed++;
        }
        break;
      case PERF_RECORD_LOST_SAMPLES:  // header, lost
        if (n >= 16) st->lost_samples += load64(rec + 8);
        else st->malformed++;
        break;
      case PERF_RECORD_THROTTLE: st->throttled++; break;
      case PERF_RECORD_UNTHROTTLE: st->unthrottled++; break;
      case PERF_RECORD_FORK:
      case PERF_RECORD_EXIT: {  // header, pid, ppid, tid, ptid, time
        if (n < 32) {
          st->malformed++;
          break;
        }
        const uint32_t pid = load32(rec + 8), tid = load32(rec + 16);
        if (f.pid != 0 && pid != f.pid) break;
        const bool exit = h.type == PERF_RECORD_EXIT;
        if (exit) st->exits++;
        else st->forks++;
        if (sink.task) sink.task(sink.ctx, exit, pid, tid, load64(rec + 24));
        break;
      }
      default: st->unknown++; break;
    }
    pos += h.size;
  }
  // Release: every read of the records above happens before the kernel may
  // reuse their bytes.
  __atomic_store_n(&r.meta->data_tail, pos, __ATOMIC_RELEASE);
  return delivered;
}

}  // namespace mmtier::detail
