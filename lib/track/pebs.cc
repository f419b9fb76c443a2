// PMU access tracker (see pebs.h): the ring-buffer parser shared by the live
// tracker and the tests, event selection from sysfs, the thread coverage
// set, the perf_event_open plumbing and the per-unit counts.
#include "track/pebs.h"

#include "heap/heap.h"
#include "platform/clock.h"
#include "platform/sys.h"
#include "support/log.h"
#include "support/meta.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <time.h>

#include <cerrno>
#include <climits>
#include <cstdarg>
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
void copy_out(const pebs_ring_view &r, uint64_t pos, void *dst, size_t n) {
  const size_t off = static_cast<size_t>(pos & (r.size - 1));
  const size_t first = n < r.size - off ? n : static_cast<size_t>(r.size - off);
  memcpy(dst, r.data + off, first);
  if (n > first) memcpy(static_cast<unsigned char *>(dst) + first, r.data, n - first);
}

pebs_kind kind_of(const pebs_filter &f, uint64_t id) {
  size_t lo = 0, hi = f.nids;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (f.ids[mid].id < id) lo = mid + 1;
    else hi = mid;
  }
  return lo < f.nids && f.ids[lo].id == id ? f.ids[lo].kind : f.default_kind;
}

void parse_sample(const unsigned char *rec, size_t n, const pebs_filter &f, const pebs_sink &sink,
                  pebs_stats *st, size_t *delivered) {
  const pebs_layout &l = f.layout;
  if (!l.valid || n < l.min_size) {
    st->malformed++;
    return;
  }
  pebs_sample s{};
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
  const pebs_kind kind = l.id >= 0 && f.nids > 0 ? kind_of(f, load64(rec + l.id)) : f.default_kind;
  const uint64_t op = l.data_src >= 0 ? (load64(rec + l.data_src) >> PERF_MEM_OP_SHIFT) & 0x1f : 0;
  if (op & PERF_MEM_OP_STORE) s.is_store = true;
  else if (op & PERF_MEM_OP_LOAD) s.is_store = false;
  else if (kind == pebs_kind::load) s.is_store = false;
  else if (kind == pebs_kind::store) s.is_store = true;
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

const char *errno_name(long e) {
  switch (e) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case ESRCH: return "ESRCH";
    case E2BIG: return "E2BIG";
    case EBADF: return "EBADF";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case ENODEV: return "ENODEV";
    case EINVAL: return "EINVAL";
    case ENFILE: return "ENFILE";
    case EMFILE: return "EMFILE";
    case ENOSPC: return "ENOSPC";
    case ENOSYS: return "ENOSYS";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    default: return "error";
  }
}

pebs_status status_for_errno(long e) {
  switch (e) {
    case EACCES:
    case EPERM: return pebs_status::no_permission;
    case ENOSYS: return pebs_status::no_kernel_support;
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case EBUSY:
    case ENOSPC: return pebs_status::out_of_resources;
    default: return pebs_status::unsupported_event;
  }
}

// Reads a small text file into buf (NUL-terminated, trailing newline kept);
// its length, or -errno.
long read_text(const char *path, char *buf, size_t cap) {
  long fd = sys::openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return fd;
  size_t have = 0;
  while (have + 1 < cap) {
    long n = sys::read(static_cast<int>(fd), buf + have, cap - 1 - have);
    if (n == -EINTR) continue;
    if (n < 0) {
      sys::close(static_cast<int>(fd));
      return n;
    }
    if (n == 0) break;
    have += static_cast<size_t>(n);
  }
  sys::close(static_cast<int>(fd));
  buf[have] = '\0';
  return static_cast<long>(have);
}

// Reads <root>/bus/event_source/devices/<pmu>/<rel> (rel may be "type",
// "events/mem-loads", "format/ldlat", ...).
long read_pmu_file(const char *root, const char *pmu, const char *rel, char *buf, size_t cap) {
  char path[512];
  format(path, sizeof path, "%s/bus/event_source/devices/%s/%s", root, pmu, rel);
  return read_text(path, buf, cap);
}

bool parse_u64(const char *&p, uint64_t *out) {
  uint64_t v = 0;
  bool any = false;
  if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
    p += 2;
    for (;; ++p) {
      int d;
      if (*p >= '0' && *p <= '9') d = *p - '0';
      else if (*p >= 'a' && *p <= 'f') d = *p - 'a' + 10;
      else if (*p >= 'A' && *p <= 'F') d = *p - 'A' + 10;
      else break;
      if (v >> 60) return false;
      v = v * 16 + static_cast<uint64_t>(d);
      any = true;
    }
  } else {
    for (; *p >= '0' && *p <= '9'; ++p) {
      if (v > (UINT64_MAX - 9) / 10) return false;
      v = v * 10 + static_cast<uint64_t>(*p - '0');
      any = true;
    }
  }
  *out = v;
  return any;
}

// "a" or "a-b" (a <= b): *lo and *hi, advancing p.
bool parse_range(const char *&p, uint64_t *lo, uint64_t *hi) {
  if (!parse_u64(p, lo)) return false;
  *hi = *lo;
  if (*p == '-') {
    ++p;
    if (!parse_u64(p, hi)) return false;
  }
  return *lo <= *hi;
}

bool read_pmu_u64(const char *root, const char *pmu, const char *rel, uint64_t *out) {
  char buf[64];
  if (read_pmu_file(root, pmu, rel, buf, sizeof buf) <= 0) return false;
  const char *p = buf;
  return parse_u64(p, out);
}

bool pmu_has(const char *root, const char *pmu, const char *rel) {
  char buf[8];
  return read_pmu_file(root, pmu, rel, buf, sizeof buf) >= 0;
}

// Applies one term through the PMU's format file.
bool apply_term(const char *root, const char *pmu, const char *name, uint64_t value,
                uint64_t cfg[3], char *why, size_t cap) {
  char rel[96], fmt[128];
  format(rel, sizeof rel, "format/%s", name);
  if (read_pmu_file(root, pmu, rel, fmt, sizeof fmt) <= 0) {
    format(why, cap, "PMU %s has no format for term '%s'", pmu, name);
    return false;
  }
  if (!pebs_apply_format(fmt, value, cfg)) {
    format(why, cap, "PMU %s: term %s=%llu does not fit format '%s'", pmu, name,
           static_cast<unsigned long long>(value), fmt);
    return false;
  }
  return true;
}

// Applies a sysfs event string ("event=0xcd,umask=0x1,ldlat=3"); a term
// named override_name takes override_value instead (and is added when the
// string lacks it but the PMU has its format).
bool apply_event(const char *root, const char *pmu, const char *event, const char *override_name,
                 uint64_t override_value, uint64_t cfg[3], char *why, size_t cap) {
  char rel[96], text[256];
  format(rel, sizeof rel, "events/%s", event);
  if (read_pmu_file(root, pmu, rel, text, sizeof text) <= 0) {
    format(why, cap, "PMU %s has no event %s", pmu, event);
    return false;
  }
  bool overridden = false;
  const char *p = text;
  while (*p && *p != '\n') {
    char name[32];
    size_t n = 0;
    while (*p && *p != '=' && *p != ',' && *p != '\n') {
      if (n + 1 >= sizeof name) {
        format(why, cap, "PMU %s event %s: term too long", pmu, event);
        return false;
      }
      name[n++] = *p++;
    }
    name[n] = '\0';
    uint64_t value = 1;
    if (*p == '=') {
      ++p;
      if (!parse_u64(p, &value)) {
        format(why, cap, "PMU %s event %s: bad value for %s", pmu, event, name);
        return false;
      }
    }
    if (override_name && strcmp(name, override_name) == 0) {
      value = override_value;
      overridden = true;
    }
    if (n > 0 && !apply_term(root, pmu, name, value, cfg, why, cap)) return false;
    if (*p == ',') ++p;
    else if (*p && *p != '\n') {
      format(why, cap, "PMU %s event %s: unexpected '%c'", pmu, event, *p);
      return false;
    }
  }
  if (override_name && !overridden) {
    char frel[96];
    format(frel, sizeof frel, "format/%s", override_name);
    if (pmu_has(root, pmu, frel) &&
        !apply_term(root, pmu, override_name, override_value, cfg, why, cap))
      return false;
  }
  return true;
}

// An Intel precise (PEBS) event of one kind on one PMU.
void init_precise_spec(pebs_event_spec &e, pebs_kind kind, uint32_t type, uint64_t period,
                       const pebs_cpu_set &cpus, const char *pmu) {
  e = {};
  e.kind = kind;
  e.type = type;
  e.period = period ? period : 1;
  e.max_precise = 3;
  e.min_precise = 1;
  e.exclude_ok = true;
  e.cpus = cpus;
  format(e.pmu, sizeof e.pmu, "%s", pmu);
}

// Adds the PMU's memory events to the plan; false (with why) if it has no
// mem-loads event or its strings cannot be applied.
bool plan_intel_pmu(const pebs_params &p, const char *root, const char *pmu,
                    const pebs_cpu_set &online, pebs_plan *out, char *why, size_t cap) {
  uint64_t type;
  if (!read_pmu_u64(root, pmu, "type", &type)) return false;
  if (!pmu_has(root, pmu, "events/mem-loads")) {
    format(why, cap, "PMU %s has no events/mem-loads (no PEBS load-latency sampling)", pmu);
    return false;
  }
  pebs_cpu_set cpus{};
  char list[512];
  if (read_pmu_file(root, pmu, "cpus", list, sizeof list) > 0) {
    if (!pebs_parse_cpu_list(list, &cpus)) {
      format(why, cap, "PMU %s: cannot parse its cpus list", pmu);
      return false;
    }
    for (size_t i = 0; i < kPebsMaxCpus / 64; i++) cpus.bits[i] &= online.bits[i];
  } else {
    cpus = online;
  }
  if (out->n + 1 > kPebsMaxSpecs) return false;
  pebs_event_spec &ld = out->ev[out->n];
  init_precise_spec(ld, pebs_kind::load, static_cast<uint32_t>(type), p.load_period, cpus, pmu);
  if (!apply_event(root, pmu, "mem-loads", "ldlat", p.load_latency_cycles, ld.config, why, cap))
    return false;
  if (pmu_has(root, pmu, "events/mem-loads-aux")) {
    ld.aux_leader = true;
    if (!apply_event(root, pmu, "mem-loads-aux", nullptr, 0, ld.aux_config, why, cap)) return false;
  }
  out->n++;
  if (out->n < kPebsMaxSpecs && pmu_has(root, pmu, "events/mem-stores")) {
    pebs_event_spec &stv = out->ev[out->n];
    init_precise_spec(stv, pebs_kind::store, ld.type, p.store_period, cpus, pmu);
    if (apply_event(root, pmu, "mem-stores", nullptr, 0, stv.config, why, cap)) out->n++;
  }
  return true;
}

bool plan_ibs(const pebs_params &p, const char *root, const pebs_cpu_set &online, pebs_plan *out,
              char *why, size_t cap) {
  uint64_t type;
  if (!read_pmu_u64(root, "ibs_op", "type", &type)) return false;
  pebs_event_spec &s = out->ev[0];
  s = {};
  s.kind = pebs_kind::mixed;
  s.type = static_cast<uint32_t>(type);
  s.cpus = online;
  format(s.pmu, sizeof s.pmu, "ibs_op");
  // Count dispatched ops (not cycles): samples spread over ops evenly.
  if (pmu_has(root, "ibs_op", "format/cnt_ctl") &&
      !apply_term(root, "ibs_op", "cnt_ctl", 1, s.config, why, cap))
    return false;
  if (p.ibs_l3_miss_only && pmu_has(root, "ibs_op", "format/l3missonly") &&
      !apply_term(root, "ibs_op", "l3missonly", 1, s.config, why, cap))
    return false;
  // Without software filtering IBS rejects every exclude_* flag.
  if (pmu_has(root, "ibs_op", "format/swfilt")) {
    if (!apply_term(root, "ibs_op", "swfilt", 1, s.config, why, cap)) return false;
    s.exclude_ok = true;
  }
  s.period = p.ibs_period & ~uint64_t{15};
  if (s.period < 16) s.period = 16;
  out->vendor = pebs_vendor::amd_ibs;
  out->n = 1;
  return true;
}

long perf_open(perf_event_attr *a, long pid, int cpu, int group) {
  return sys::raw(SYS_perf_event_open, reinterpret_cast<long>(a), pid, cpu, group,
                  PERF_FLAG_FD_CLOEXEC);
}

long perf_ioctl(int fd, unsigned long req, long arg) {
  return sys::raw(SYS_ioctl, fd, static_cast<long>(req), arg);
}

// A plain cycles counter: tells "no PMU at all" from "a PMU without memory
// sampling".  fd (closed again) or -errno.
long probe_cycles() {
  perf_event_attr a{};
  a.type = PERF_TYPE_HARDWARE;
  a.size = sizeof a;
  a.config = PERF_COUNT_HW_CPU_CYCLES;
  a.disabled = 1;
  a.exclude_kernel = 1;
  a.exclude_hv = 1;
  long fd = perf_open(&a, 0, -1, -1);
  if (fd >= 0) sys::close(static_cast<int>(fd));
  return fd;
}

// Lists this process's threads (ascending or not); how many were written.
size_t list_tids(uint32_t *out, size_t cap) {
  long fd = sys::openat(AT_FDCWD, "/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (fd < 0) return 0;
  alignas(8) char buf[4096];
  size_t n = 0;
  for (;;) {
    long got = sys::raw(SYS_getdents64, fd, reinterpret_cast<long>(buf), sizeof buf);
    if (got == -EINTR) continue;
    if (got <= 0) break;
    for (long off = 0; off < got;) {
      unsigned short reclen;
      memcpy(&reclen, buf + off + 16, sizeof reclen);
      const char *name = buf + off + 19;
      uint64_t tid = 0;
      const char *q = name;
      if (*q >= '0' && *q <= '9' && parse_u64(q, &tid) && *q == '\0' && tid <= UINT32_MAX &&
          n < cap)
        out[n++] = static_cast<uint32_t>(tid);
      if (reclen == 0) break;
      off += reclen;
    }
  }
  sys::close(static_cast<int>(fd));
  return n;
}

constexpr uint8_t kCovered = 1;
constexpr uint8_t kPending = 2;
constexpr uint8_t kUnseen = 0x80;

}  // namespace

const char *pebs_status_name(pebs_status s) {
  switch (s) {
    case pebs_status::ok: return "ok";
    case pebs_status::no_pmu: return "no_pmu";
    case pebs_status::no_permission: return "no_permission";
    case pebs_status::unsupported_event: return "unsupported_event";
    case pebs_status::no_kernel_support: return "no_kernel_support";
    case pebs_status::out_of_resources: return "out_of_resources";
    case pebs_status::invalid_argument: return "invalid_argument";
    case pebs_status::closed: return "closed";
  }
  return "unknown";
}

// --- parser

pebs_layout pebs_layout_for(uint64_t st) {
  pebs_layout l{};
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

bool pebs_ring_from_mapping(void *map, size_t len, pebs_ring_view *out) {
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

size_t pebs_parse_ring(const pebs_ring_view &r, const pebs_filter &f, const pebs_sink &sink,
                       pebs_stats *st) {
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

// --- sysfs

size_t pebs_cpu_set::count() const {
  size_t n = 0;
  for (uint64_t w : bits) n += static_cast<size_t>(__builtin_popcountll(w));
  return n;
}

bool pebs_parse_cpu_list(const char *s, pebs_cpu_set *out) {
  *out = {};
  const char *p = s;
  while (*p == ' ') ++p;
  if (*p == '\n' || *p == '\0') return true;  // empty list
  for (;;) {
    uint64_t a, b;
    if (!parse_range(p, &a, &b)) return false;
    for (uint64_t c = a; c <= b && c < kPebsMaxCpus; c++) out->add(static_cast<int>(c));
    if (*p == ',') {
      ++p;
      continue;
    }
    return *p == '\n' || *p == '\0';
  }
}

bool pebs_apply_format(const char *format, uint64_t value, uint64_t cfg[3]) {
  const char *p = format;
  if (strncmp(p, "config", 6) != 0) return false;
  p += 6;
  int idx = 0;
  if (*p == '1' || *p == '2') idx = *p++ - '0';
  if (*p++ != ':') return false;
  uint8_t lo[8], hi[8];
  size_t nr = 0;
  for (;;) {
    uint64_t a, b;
    if (!parse_range(p, &a, &b) || b > 63 || nr == 8) return false;
    lo[nr] = static_cast<uint8_t>(a);
    hi[nr] = static_cast<uint8_t>(b);
    nr++;
    if (*p == ',') {
      ++p;
      continue;
    }
    if (*p != '\n' && *p != '\0') return false;
    break;
  }
  uint64_t v = value, out = cfg[idx];
  for (size_t i = 0; i < nr; i++) {
    const unsigned width = hi[i] - lo[i] + 1u;
    const uint64_t mask = width == 64 ? ~uint64_t{0} : (uint64_t{1} << width) - 1;
    out = (out & ~(mask << lo[i])) | ((v & mask) << lo[i]);
    v = width == 64 ? 0 : v >> width;
  }
  if (v != 0) return false;
  cfg[idx] = out;
  return true;
}

pebs_status pebs_plan_events(const pebs_params &p, pebs_plan *out, char *why, size_t cap) {
  *out = {};
  const char *root = p.sysfs_root ? p.sysfs_root : "/sys";
  char path[512], list[512];
  format(path, sizeof path, "%s/devices/system/cpu/online", root);
  pebs_cpu_set online{};
  if (read_text(path, list, sizeof list) <= 0 || !pebs_parse_cpu_list(list, &online) ||
      online.count() == 0) {
    format(why, cap, "cannot read the online CPUs from %s", path);
    return pebs_status::invalid_argument;
  }
  static const char *const kIntelPmus[] = {"cpu", "cpu_core", "cpu_atom"};
  char intel_why[200] = "";
  bool core_pmu = false;
  for (const char *pmu : kIntelPmus) {
    if (!pmu_has(root, pmu, "type")) continue;
    core_pmu = true;
    char w[200] = "";
    if (!plan_intel_pmu(p, root, pmu, online, out, w, sizeof w) && !intel_why[0] && w[0])
      format(intel_why, sizeof intel_why, "%s", w);
  }
  if (out->n > 0) {
    out->vendor = pebs_vendor::intel;
    return pebs_status::ok;
  }
  *out = {};
  char ibs_why[200] = "";
  if (plan_ibs(p, root, online, out, ibs_why, sizeof ibs_why)) return pebs_status::ok;
  *out = {};
  if (ibs_why[0]) {
    format(why, cap, "%s", ibs_why);
    return pebs_status::unsupported_event;
  }
  if (core_pmu) {
    format(why, cap, "%s; no ibs_op PMU",
           intel_why[0] ? intel_why : "no usable PEBS memory events");
    return pebs_status::unsupported_event;
  }
  format(why, cap,
         "no PEBS or IBS PMU in %s/bus/event_source/devices (no cpu/events/mem-loads, no ibs_op)",
         root);
  return pebs_status::no_pmu;
}

// --- thread coverage

size_t pebs_threads::find(uint32_t tid) const {
  size_t lo = 0, hi = n_;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (tid_[mid] < tid) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

bool pebs_threads::insert_at(size_t i, uint32_t tid, uint8_t state, uint64_t time) {
  if (n_ == kPebsMaxThreads) return false;
  memmove(tid_ + i + 1, tid_ + i, (n_ - i) * sizeof tid_[0]);
  memmove(time_ + i + 1, time_ + i, (n_ - i) * sizeof time_[0]);
  memmove(state_ + i + 1, state_ + i, (n_ - i) * sizeof state_[0]);
  tid_[i] = tid;
  time_[i] = time;
  state_[i] = state;
  n_++;
  return true;
}

void pebs_threads::erase_at(size_t i) {
  memmove(tid_ + i, tid_ + i + 1, (n_ - i - 1) * sizeof tid_[0]);
  memmove(time_ + i, time_ + i + 1, (n_ - i - 1) * sizeof time_[0]);
  memmove(state_ + i, state_ + i + 1, (n_ - i - 1) * sizeof state_[0]);
  n_--;
}

void pebs_threads::covered(uint32_t tid, uint64_t time) {
  size_t i = find(tid);
  if (i < n_ && tid_[i] == tid) {
    state_[i] = kCovered;
    if (time > time_[i]) time_[i] = time;
    return;
  }
  insert_at(i, tid, kCovered, time);
}

void pebs_threads::exited(uint32_t tid, uint64_t time) {
  size_t i = find(tid);
  if (i < n_ && tid_[i] == tid && time >= time_[i]) erase_at(i);
}

size_t pebs_threads::scan(const uint32_t *tids, size_t n, uint32_t *attach, size_t cap) {
  for (size_t i = 0; i < n_; i++) state_[i] |= kUnseen;
  size_t m = 0;
  for (size_t k = 0; k < n; k++) {
    const uint32_t tid = tids[k];
    size_t i = find(tid);
    if (i < n_ && tid_[i] == tid) {
      state_[i] &= static_cast<uint8_t>(~kUnseen);
      if (state_[i] == kPending && m < cap) attach[m++] = tid;
    } else {
      insert_at(i, tid, kPending, 0);
    }
  }
  size_t w = 0;
  for (size_t i = 0; i < n_; i++) {
    if (state_[i] & kUnseen) continue;
    tid_[w] = tid_[i];
    time_[w] = time_[i];
    state_[w] = state_[i];
    w++;
  }
  n_ = w;
  return m;
}

bool pebs_threads::is_covered(uint32_t tid) const {
  size_t i = find(tid);
  return i < n_ && tid_[i] == tid && state_[i] == kCovered;
}

bool pebs_threads::is_pending(uint32_t tid) const {
  size_t i = find(tid);
  return i < n_ && tid_[i] == tid && state_[i] == kPending;
}

// --- live tracker

pebs_status pebs_tracker::fail(pebs_status s, const char *fmt, ...) {
  release(true);
  va_list ap;
  va_start(ap, fmt);
  vformat(reason_, sizeof reason_, fmt, ap);
  va_end(ap);
  status_ = s;
  MMTIER_DEBUG("pebs: %s: %s", pebs_status_name(s), reason_);
  return s;
}

void pebs_tracker::release(bool unmap) {
  for (size_t i = 0; i < nrings_; i++) {
    if (unmap && rings_[i].map) sys::munmap(rings_[i].map, rings_[i].len);
  }
  for (size_t i = 0; i < nfds_; i++) sys::close(fds_[i].fd);
  nrings_ = nfds_ = nids_ = 0;
  threads_.reset();
  status_ = pebs_status::closed;
}

void pebs_tracker::close() {
  release(true);
  format(reason_, sizeof reason_, "closed");
}

void pebs_tracker::forget_after_fork() {
  release(false);
  format(reason_, sizeof reason_, "closed in a fork child");
}

void pebs_tracker::ignore_tid(uint32_t tid) {
  for (size_t i = 0; i < nignore_; i++)
    if (ignore_[i] == tid) return;
  if (nignore_ < kPebsMaxIgnoredTids) ignore_[nignore_++] = tid;
}

bool pebs_tracker::add_fd(int fd, int cpu, uint32_t tid) {
  if (nfds_ == kPebsMaxEvents) return false;
  fds_[nfds_++] = {fd, cpu, tid};
  return true;
}

void pebs_tracker::add_id(uint64_t id, pebs_kind kind) {
  if (nids_ == kPebsMaxEvents) return;
  size_t i = nids_;
  while (i > 0 && ids_[i - 1].id > id) {
    ids_[i] = ids_[i - 1];
    i--;
  }
  ids_[i] = {id, kind};
  nids_++;
}

pebs_tracker::ring_slot *pebs_tracker::ring_for(int cpu) {
  for (size_t i = 0; i < nrings_; i++)
    if (rings_[i].cpu == cpu) return &rings_[i];
  return nullptr;
}

long pebs_tracker::open_event(const pebs_event_spec &s, size_t spec_index, const attempt &a,
                              uint32_t tid, int cpu, int group, bool aux) {
  perf_event_attr at{};
  at.type = s.type;
  at.size = sizeof at;
  const uint64_t *cfg = aux ? s.aux_config : s.config;
  at.config = cfg[0];
  at.config1 = cfg[1];
  at.config2 = cfg[2];
  if (!aux) {
    at.sample_period = s.period;
    at.sample_type = kPebsSampleType;
    // FORK/EXIT records once per fork: from the first spec's events only.
    at.task = spec_index == 0;
  }
  at.precise_ip = a.precise;
  at.inherit = 1;
  if (a.modern) {
    at.inherit_thread = 1;
    at.remove_on_exec = 1;
    at.use_clockid = 1;
    at.clockid = CLOCK_MONOTONIC;
  }
  if (s.exclude_ok) {
    at.exclude_hv = 1;
    at.exclude_kernel = a.user_only;
  }
  return perf_open(&at, static_cast<long>(tid), cpu, group);
}

// Finds the attempt each spec opens with (on the calling thread and the
// spec's first CPU); specs that open with none are dropped.
pebs_status pebs_tracker::probe(uint32_t tid) {
  char first_why[200] = "";
  pebs_status first_status = pebs_status::unsupported_event;
  size_t kept = 0;
  for (size_t i = 0; i < plan_.n; i++) {
    const pebs_event_spec &s = plan_.ev[i];
    int cpu = -1;
    for (size_t c = 0; c < kPebsMaxCpus && cpu < 0; c++)
      if (s.cpus.has(static_cast<int>(c))) cpu = static_cast<int>(c);
    bool opened = false;
    long perm_err = 0, last_err = 0;
    attempt last{};
    for (int modern = 1; modern >= 0 && !opened; modern--) {
      for (int user = s.exclude_ok && !params_.sample_kernel ? 1 : 0;
           user <= (s.exclude_ok ? 1 : 0) && !opened; user++) {
        for (int pr = s.max_precise; pr >= s.min_precise && !opened; pr--) {
          attempt a{modern != 0, user != 0, static_cast<uint8_t>(pr)};
          if (cpu < 0) break;
          long leader = -1;
          if (s.aux_leader) {
            leader = open_event(s, kept, a, tid, cpu, -1, true);
            if (leader < 0) {
              last_err = -leader;
              last = a;
              if (last_err == EACCES || last_err == EPERM) perm_err = last_err;
              continue;
            }
          }
          long fd = open_event(s, kept, a, tid, cpu, static_cast<int>(leader), false);
          if (leader >= 0) sys::close(static_cast<int>(leader));
          if (fd >= 0) {
            sys::close(static_cast<int>(fd));
            chosen_[kept] = a;
            opened = true;
          } else {
            last_err = -fd;
            last = a;
            if (last_err == EACCES || last_err == EPERM) perm_err = last_err;
          }
        }
      }
    }
    if (opened) {
      if (kept != i) plan_.ev[kept] = s;
      kept++;
      continue;
    }
    if (!first_why[0]) {
      long err = perm_err ? perm_err : last_err;
      first_status = cpu < 0 ? pebs_status::unsupported_event : status_for_errno(err);
      char paranoid[16] = "?";
      if (read_text("/proc/sys/kernel/perf_event_paranoid", paranoid, sizeof paranoid) > 0)
        for (char *q = paranoid; *q; q++)
          if (*q == '\n') *q = '\0';
      if (cpu < 0) format(first_why, sizeof first_why, "PMU %s covers no online CPU", s.pmu);
      else
        format(first_why, sizeof first_why,
               "perf_event_open(%s %s, precise_ip=%u%s) failed: %s (perf_event_paranoid=%s)", s.pmu,
               s.kind == pebs_kind::load    ? "loads"
               : s.kind == pebs_kind::store ? "stores"
                                            : "ops",
               static_cast<unsigned>(last.precise), last.user_only ? ", user only" : "",
               errno_name(err), paranoid);
    }
  }
  plan_.n = static_cast<uint32_t>(kept);
  if (kept == 0) return fail(first_status, "%s", first_why);
  return pebs_status::ok;
}

// Opens every spec's events for thread tid on each of its CPUs, each writing
// to its CPU's ring (created by the first event there).  Returns the
// sampling events opened.
int pebs_tracker::attach(uint32_t tid, bool first) {
  int opened = 0;
  for (size_t i = 0; i < plan_.n; i++) {
    const pebs_event_spec &s = plan_.ev[i];
    for (size_t c = 0; c < kPebsMaxCpus; c++) {
      const int cpu = static_cast<int>(c);
      if (!s.cpus.has(cpu)) continue;
      if (nfds_ + 2 > kPebsMaxEvents) {
        stats_.attach_failures++;
        continue;
      }
      long leader = -1;
      if (s.aux_leader) {
        leader = open_event(s, i, chosen_[i], tid, cpu, -1, true);
        if (leader < 0) {
          stats_.attach_failures++;
          continue;
        }
        add_fd(static_cast<int>(leader), cpu, tid);
      }
      long fd = open_event(s, i, chosen_[i], tid, cpu, static_cast<int>(leader), false);
      if (fd < 0) {
        stats_.attach_failures++;
        continue;
      }
      add_fd(static_cast<int>(fd), cpu, tid);
      ring_slot *r = ring_for(cpu);
      if (!r && nrings_ < kPebsMaxCpus) {
        for (;;) {
          const size_t len = (size_t{ring_pages_} + 1) * kPageSize;
          long m =
              sys::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, static_cast<int>(fd), 0);
          if (!sys::failed(m)) {
            rings_[nrings_++] = {cpu, static_cast<int>(fd), reinterpret_cast<void *>(m), len};
            r = &rings_[nrings_ - 1];
            break;
          }
          // The mlock allowance (perf_event_mlock_kb, RLIMIT_MEMLOCK): try smaller.
          if ((m == -EPERM || m == -ENOMEM) && ring_pages_ > 1) {
            ring_pages_ /= 2;
            continue;
          }
          if (first && nrings_ == 0) {
            format(reason_, sizeof reason_, "mmap of a perf ring buffer failed: %s",
                   errno_name(-m));
            status_ = status_for_errno(-m);
          }
          break;
        }
        if (!r) {
          stats_.attach_failures++;
          continue;
        }
      } else if (!r) {
        stats_.attach_failures++;
        continue;
      } else if (perf_ioctl(static_cast<int>(fd), PERF_EVENT_IOC_SET_OUTPUT, r->fd) < 0) {
        stats_.attach_failures++;
        continue;
      }
      uint64_t id = 0;
      if (perf_ioctl(static_cast<int>(fd), PERF_EVENT_IOC_ID, reinterpret_cast<long>(&id)) == 0)
        add_id(id, s.kind);
      opened++;
    }
  }
  if (opened > 0) stats_.threads_attached++;
  return opened;
}

pebs_status pebs_tracker::open(const pebs_params &p) {
  release(true);
  stats_ = {};
  params_ = p;
  if (!params_.sysfs_root) params_.sysfs_root = "/sys";
  base_ = p.base;
  size_ = p.size;
  if (size_ == 0) {
    base_ = g_heap.base;
    size_ = g_heap.size;
  }
  if (size_ == 0)
    return fail(pebs_status::invalid_argument, "no managed range (the heap is not initialised)");
  ring_pages_ = p.ring_pages;
  if (ring_pages_ == 0 || (ring_pages_ & (ring_pages_ - 1)) != 0 || ring_pages_ > (1u << 16))
    return fail(pebs_status::invalid_argument, "ring_pages %u is not a power of two up to 65536",
                ring_pages_);
  pid_ = static_cast<uint32_t>(sys::getpid());

  char why[220];
  pebs_status st;
  if (p.plan) {
    plan_ = *p.plan;
    st = plan_.n > 0 && plan_.n <= kPebsMaxSpecs ? pebs_status::ok : pebs_status::invalid_argument;
    format(why, sizeof why, "the given plan has %u event kinds", plan_.n);
  } else {
    st = pebs_plan_events(params_, &plan_, why, sizeof why);
  }
  if (st != pebs_status::ok) {
    if (st == pebs_status::no_pmu) {
      long c = probe_cycles();
      if (c >= 0)
        return fail(pebs_status::unsupported_event,
                    "%s; the PMU counts cycles but has no memory sampling", why);
      if (c == -ENOSYS)
        return fail(pebs_status::no_kernel_support, "perf_event_open is not available (ENOSYS)");
      return fail(pebs_status::no_pmu, "%s; perf_event_open(cpu-cycles) failed: %s", why,
                  errno_name(-c));
    }
    return fail(st, "%s", why);
  }

  const uint32_t self = static_cast<uint32_t>(sys::raw(SYS_gettid));
  st = probe(self);
  if (st != pebs_status::ok) return st;

  status_ = pebs_status::unsupported_event;
  format(reason_, sizeof reason_, "no event could be opened on the calling thread");
  if (attach(self, true) == 0 || nrings_ == 0) {
    const pebs_status bad = status_;
    char saved[sizeof reason_];
    format(saved, sizeof saved, "%s", reason_);
    return fail(bad, "%s", saved);
  }
  const uint64_t now = chosen_[0].modern ? sys::mono_ns() : 0;
  threads_.covered(self, now);

  // Every other thread alive now gets its own events; threads they create
  // from here on inherit them.
  uint32_t tids[kPebsMaxThreads];
  const size_t n = list_tids(tids, kPebsMaxThreads);
  for (size_t i = 0; i < n; i++) {
    if (tids[i] == self) continue;
    if (attach(tids[i], false) > 0) threads_.covered(tids[i], now);
  }

  status_ = pebs_status::ok;
  format(reason_, sizeof reason_,
         "%s: %u event kind(s) on %zu CPU ring(s) of %u pages, precise_ip=%u, %s%s",
         plan_.vendor == pebs_vendor::intel     ? "Intel PEBS"
         : plan_.vendor == pebs_vendor::amd_ibs ? "AMD IBS"
                                                : "given events",
         plan_.n, nrings_, ring_pages_, static_cast<unsigned>(chosen_[0].precise),
         chosen_[0].user_only ? "user-only" : "user+kernel",
         chosen_[0].modern ? "" : ", old kernel (no inherit_thread)");
  MMTIER_DEBUG("pebs: %s", reason_);
  return status_;
}

void pebs_tracker::on_task(void *self, bool exit, uint32_t, uint32_t tid, uint64_t time) {
  auto *t = static_cast<pebs_tracker *>(self);
  if (exit) t->threads_.exited(tid, time);
  else t->threads_.covered(tid, time);
}

namespace {

// Samples go to the caller's sink; task records update the tracker's thread
// set first.
struct drain_adapter {
  void *tracker;
  void (*on_task)(void *, bool, uint32_t, uint32_t, uint64_t);
  const pebs_sink *user;
  static void sample(void *c, const pebs_sample &x) {
    auto *a = static_cast<drain_adapter *>(c);
    if (a->user->sample) a->user->sample(a->user->ctx, x);
  }
  static void task(void *c, bool exit, uint32_t pid, uint32_t tid, uint64_t time) {
    auto *a = static_cast<drain_adapter *>(c);
    a->on_task(a->tracker, exit, pid, tid, time);
    if (a->user->task) a->user->task(a->user->ctx, exit, pid, tid, time);
  }
};

}  // namespace

size_t pebs_tracker::drain(const pebs_sink &sink) {
  if (!is_open()) return 0;
  pebs_filter f;
  f.layout = pebs_layout_for(kPebsSampleType);
  f.base = base_;
  f.size = size_;
  f.pid = pid_;
  f.ids = ids_;
  f.nids = nids_;
  f.default_kind = pebs_kind::mixed;  // an unknown id: DATA_SRC decides
  f.ignore_tids = ignore_;
  f.nignore = nignore_;
  drain_adapter ad{this, on_task, &sink};
  pebs_sink as;
  as.sample = drain_adapter::sample;
  as.task = drain_adapter::task;
  as.ctx = &ad;
  size_t total = 0;
  for (size_t i = 0; i < nrings_; i++) {
    pebs_ring_view v;
    if (pebs_ring_from_mapping(rings_[i].map, rings_[i].len, &v))
      total += pebs_parse_ring(v, f, as, &stats_);
  }
  return total;
}

size_t pebs_tracker::refresh() {
  if (!is_open()) return 0;
  uint32_t tids[kPebsMaxThreads];
  const size_t n = list_tids(tids, kPebsMaxThreads);
  uint32_t todo[64];
  const size_t m = threads_.scan(tids, n, todo, 64);
  size_t attached = 0;
  const uint64_t now = chosen_[0].modern ? sys::mono_ns() : 0;
  for (size_t i = 0; i < m; i++) {
    if (attach(todo[i], false) > 0) {
      threads_.covered(todo[i], now);
      attached++;
    }
  }
  return attached;
}

// --- per-unit counts

bool pebs_unit_counts::init(uintptr_t base, size_t max_units, void *storage) {
  if (max_units == 0 || max_units > UINT32_MAX) return false;
  if (!storage) storage = meta_map(storage_bytes(max_units));
  if (!storage) return false;
  base_ = base;
  max_units_ = max_units;
  counts_ = static_cast<pebs_unit_count *>(storage);
  touched_ = reinterpret_cast<uint32_t *>(counts_ + max_units);
  ntouched_ = 0;
  outside_ = 0;
  return true;
}

bool pebs_unit_counts::init_for_heap(void *storage) {
  return init(g_heap.base, g_heap.nunits, storage);
}

void pebs_unit_counts::add(uint64_t addr, bool is_store) {
  const uint64_t u = (addr - base_) >> kUnitShift;
  if (addr < base_ || u >= max_units_) {
    outside_++;
    return;
  }
  pebs_unit_count &c = counts_[u];
  if (c.reads == 0 && c.writes == 0) touched_[ntouched_++] = static_cast<uint32_t>(u);
  uint32_t &v = is_store ? c.writes : c.reads;
  if (v != UINT32_MAX) v++;
}

pebs_sink pebs_unit_counts::sink() {
  pebs_sink s;
  s.sample = [](void *self, const pebs_sample &x) {
    static_cast<pebs_unit_counts *>(self)->add(x.addr, x.is_store);
  };
  s.ctx = this;
  return s;
}

pebs_unit_count pebs_unit_counts::count(uint32_t unit) const {
  return unit < max_units_ ? counts_[unit] : pebs_unit_count{};
}

namespace {

// round(sampled * n * 1e9 / (interval_ns * full)), capped at sampled.
uint16_t scaled(uint64_t n, uint64_t interval_ns, const pebs_scale &sc) {
  const unsigned __int128 full = sc.full_scale_per_sec ? sc.full_scale_per_sec : 1;
  const unsigned __int128 num = static_cast<unsigned __int128>(sc.sampled) * n * 1'000'000'000u;
  const unsigned __int128 den = static_cast<unsigned __int128>(interval_ns) * full;
  const unsigned __int128 v = (num + den / 2) / den;
  return v >= sc.sampled ? sc.sampled : static_cast<uint16_t>(v);
}

}  // namespace

pebs_unit_observation pebs_unit_counts::observe(uint32_t unit, uint64_t interval_ns,
                                                const pebs_scale &sc) const {
  pebs_unit_observation o{unit, 0, 0, 0};
  if (interval_ns == 0 || sc.sampled == 0) return o;
  const pebs_unit_count c = count(unit);
  o.sampled = sc.sampled;
  o.touched = scaled(uint64_t{c.reads} + c.writes, interval_ns, sc);
  o.written = scaled(c.writes, interval_ns, sc);
  if (o.written > o.touched) o.written = o.touched;
  return o;
}

size_t pebs_unit_counts::emit(uint64_t interval_ns, pebs_unit_observation *out, size_t max,
                              const pebs_scale &sc) const {
  size_t n = ntouched_ < max ? ntouched_ : max;
  for (size_t i = 0; i < n; i++) out[i] = observe(touched_[i], interval_ns, sc);
  return n;
}

void pebs_unit_counts::clear() {
  for (size_t i = 0; i < ntouched_; i++) counts_[touched_[i]] = {};
  ntouched_ = 0;
  outside_ = 0;
}

}  // namespace mmtier::detail
