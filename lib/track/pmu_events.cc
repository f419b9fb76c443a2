// PMU event selection (see pmu_events.h): the sysfs readers, CPU lists and
// format fields, and the plan of events for Intel PEBS or AMD IBS.
#include "track/pmu_events.h"

#include "platform/sys.h"
#include "support/log.h"

#include <fcntl.h>

#include <cerrno>
#include <climits>
#include <cstring>

namespace mmtier::detail {

long pmu_read_text(const char *path, char *buf, size_t cap) {
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

bool pmu_parse_u64(const char *&p, uint64_t *out) {
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

namespace {

// Reads <root>/bus/event_source/devices/<pmu>/<rel> (rel may be "type",
// "events/mem-loads", "format/ldlat", ...).
long read_pmu_file(const char *root, const char *pmu, const char *rel, char *buf, size_t cap) {
  char path[512];
  format(path, sizeof path, "%s/bus/event_source/devices/%s/%s", root, pmu, rel);
  return pmu_read_text(path, buf, cap);
}

// "a" or "a-b" (a <= b): *lo and *hi, advancing p.
bool parse_range(const char *&p, uint64_t *lo, uint64_t *hi) {
  if (!pmu_parse_u64(p, lo)) return false;
  *hi = *lo;
  if (*p == '-') {
    ++p;
    if (!pmu_parse_u64(p, hi)) return false;
  }
  return *lo <= *hi;
}

bool read_pmu_u64(const char *root, const char *pmu, const char *rel, uint64_t *out) {
  char buf[64];
  if (read_pmu_file(root, pmu, rel, buf, sizeof buf) <= 0) return false;
  const char *p = buf;
  return pmu_parse_u64(p, out);
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
  if (!pmu_apply_format(fmt, value, cfg)) {
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
      if (!pmu_parse_u64(p, &value)) {
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
void init_precise_spec(pmu_event_spec &e, pmu_kind kind, uint32_t type, uint64_t period,
                       const pmu_cpu_set &cpus, const char *pmu) {
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
bool plan_intel_pmu(const pmu_params &p, const char *root, const char *pmu,
                    const pmu_cpu_set &online, pmu_plan *out, char *why, size_t cap) {
  uint64_t type;
  if (!read_pmu_u64(root, pmu, "type", &type)) return false;
  if (!pmu_has(root, pmu, "events/mem-loads")) {
    format(why, cap, "PMU %s has no events/mem-loads (no PEBS load-latency sampling)", pmu);
    return false;
  }
  pmu_cpu_set cpus{};
  char list[512];
  if (read_pmu_file(root, pmu, "cpus", list, sizeof list) > 0) {
    if (!pmu_parse_cpu_list(list, &cpus)) {
      format(why, cap, "PMU %s: cannot parse its cpus list", pmu);
      return false;
    }
    for (size_t i = 0; i < kPmuMaxCpus / 64; i++) cpus.bits[i] &= online.bits[i];
  } else {
    cpus = online;
  }
  if (out->n + 1 > kPmuMaxSpecs) return false;
  pmu_event_spec &ld = out->ev[out->n];
  init_precise_spec(ld, pmu_kind::load, static_cast<uint32_t>(type), p.load_period, cpus, pmu);
  if (!apply_event(root, pmu, "mem-loads", "ldlat", p.load_latency_cycles, ld.config, why, cap))
    return false;
  if (pmu_has(root, pmu, "events/mem-loads-aux")) {
    ld.aux_leader = true;
    if (!apply_event(root, pmu, "mem-loads-aux", nullptr, 0, ld.aux_config, why, cap)) return false;
  }
  out->n++;
  if (out->n < kPmuMaxSpecs && pmu_has(root, pmu, "events/mem-stores")) {
    pmu_event_spec &stv = out->ev[out->n];
    init_precise_spec(stv, pmu_kind::store, ld.type, p.store_period, cpus, pmu);
    if (apply_event(root, pmu, "mem-stores", nullptr, 0, stv.config, why, cap)) out->n++;
  }
  return true;
}

bool plan_ibs(const pmu_params &p, const char *root, const pmu_cpu_set &online, pmu_plan *out,
              char *why, size_t cap) {
  uint64_t type;
  if (!read_pmu_u64(root, "ibs_op", "type", &type)) return false;
  pmu_event_spec &s = out->ev[0];
  s = {};
  s.kind = pmu_kind::mixed;
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
  out->vendor = pmu_vendor::amd_ibs;
  out->n = 1;
  return true;
}

}  // namespace

const char *pmu_status_name(pmu_status s) {
  switch (s) {
    case pmu_status::ok: return "ok";
    case pmu_status::no_pmu: return "no_pmu";
    case pmu_status::no_permission: return "no_permission";
    case pmu_status::unsupported_event: return "unsupported_event";
    case pmu_status::no_kernel_support: return "no_kernel_support";
    case pmu_status::out_of_resources: return "out_of_resources";
    case pmu_status::invalid_argument: return "invalid_argument";
    case pmu_status::closed: return "closed";
  }
  return "unknown";
}

size_t pmu_cpu_set::count() const {
  size_t n = 0;
  for (uint64_t w : bits) n += static_cast<size_t>(__builtin_popcountll(w));
  return n;
}

bool pmu_parse_cpu_list(const char *s, pmu_cpu_set *out) {
  *out = {};
  const char *p = s;
  while (*p == ' ') ++p;
  if (*p == '\n' || *p == '\0') return true;  // empty list
  for (;;) {
    uint64_t a, b;
    if (!parse_range(p, &a, &b)) return false;
    for (uint64_t c = a; c <= b && c < kPmuMaxCpus; c++) out->add(static_cast<int>(c));
    if (*p == ',') {
      ++p;
      continue;
    }
    return *p == '\n' || *p == '\0';
  }
}

bool pmu_apply_format(const char *format, uint64_t value, uint64_t cfg[3]) {
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

pmu_status pmu_plan_events(const pmu_params &p, pmu_plan *out, char *why, size_t cap) {
  *out = {};
  const char *root = p.sysfs_root ? p.sysfs_root : "/sys";
  char path[512], list[512];
  format(path, sizeof path, "%s/devices/system/cpu/online", root);
  pmu_cpu_set online{};
  if (pmu_read_text(path, list, sizeof list) <= 0 || !pmu_parse_cpu_list(list, &online) ||
      online.count() == 0) {
    format(why, cap, "cannot read the online CPUs from %s", path);
    return pmu_status::invalid_argument;
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
    out->vendor = pmu_vendor::intel;
    return pmu_status::ok;
  }
  *out = {};
  char ibs_why[200] = "";
  if (plan_ibs(p, root, online, out, ibs_why, sizeof ibs_why)) return pmu_status::ok;
  *out = {};
  if (ibs_why[0]) {
    format(why, cap, "%s", ibs_why);
    return pmu_status::unsupported_event;
  }
  if (core_pmu) {
    format(why, cap, "%s; no ibs_op PMU",
           intel_why[0] ? intel_why : "no usable PEBS memory events");
    return pmu_status::unsupported_event;
  }
  format(why, cap,
         "no PEBS or IBS PMU in %s/bus/event_source/devices (no cpu/events/mem-loads, no ibs_op)",
         root);
  return pmu_status::no_pmu;
}

}  // namespace mmtier::detail
