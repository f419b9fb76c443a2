// Building and checking capsule manifests (see capsule_format.h).  The
// reader trusts nothing: every offset and count is checked before it is
// used, with arithmetic that cannot wrap, so a damaged or hostile manifest
// is refused and never makes it read outside its buffer.
#include "snapshot/capsule_format.h"

#include "support/crc32c.h"

#include <cstring>

namespace mmtier::capsule {
namespace {

using detail::crc32c;

constexpr uint64_t kDirOffset = kHeaderOffset + sizeof(header);
constexpr uint32_t kRegionKinds = 9;   // region_kind::stats
constexpr uint32_t kRunSources = 6;    // run_source::base
constexpr uint32_t kIdentities = 5;    // file_identity::inode
constexpr uint32_t kRegionFlags = kRegionShared | kRegionGrowsDown;
constexpr uint32_t kRegionMadv =
    kMadvHuge | kMadvNoHuge | kMadvDontDump | kMadvWipeOnFork | kMadvMergeable | kMadvLocked;
constexpr uint32_t kProtBits = 7;  // PROT_READ | PROT_WRITE | PROT_EXEC

// The record size of a kind; 0 for the kinds of later stages (any size but 0).
uint32_t kind_record_size(uint32_t kind) {
  switch (static_cast<table_kind>(kind)) {
    case table_kind::regions: return sizeof(region);
    case table_kind::runs: return sizeof(run);
    case table_kind::chunks: return sizeof(chunk);
    case table_kind::files: return sizeof(file);
    case table_kind::strings: return 1;
    case table_kind::fd_data: return 1;
    case table_kind::page_hashes: return sizeof(page_hash_record);
    default: return 0;
  }
}

bool known_kind(uint32_t kind) { return kind >= 1 && kind <= kTableKinds; }

bool record_size_ok(uint32_t kind, uint32_t size) {
  const uint32_t want = kind_record_size(kind);
  return want ? size == want : size != 0;
}

bool known_state(uint32_t s) {
  return s >= static_cast<uint32_t>(status::incomplete) && s <= static_cast<uint32_t>(status::failed);
}

bool align_up(uint64_t v, uint64_t *out) {
  if (v > UINT64_MAX - (kAlign - 1)) return false;
  *out = (v + kAlign - 1) & ~(kAlign - 1);
  return true;
}

// The C library's strnlen/memcmp are not there for the restorer.
bool terminated(const char *s, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!s[i]) return true;
  return false;
}

bool all_zero(const unsigned char *p, uint64_t n) {
  unsigned char any = 0;
  for (uint64_t i = 0; i < n; ++i) any |= p[i];
  return !any;
}

// The CRC of a struct whose crc field (4 bytes at off) counts as zero.
uint32_t crc_without_field(const void *p, size_t n, size_t off) {
  const auto *c = static_cast<const unsigned char *>(p);
  const uint32_t zero = 0;
  uint32_t crc = crc32c(0, c, off);
  crc = crc32c(crc, &zero, sizeof zero);
  return crc32c(crc, c + off + sizeof zero, n - off - sizeof zero);
}

// Where manifest_build puts each table, and where the manifest ends; false
// for malformed tables or a size beyond 64 bits.
bool layout(const table_input *t, uint32_t n, uint64_t offsets[kTableKinds], uint64_t *end) {
  if (n > kTableKinds || (n && !t)) return false;
  uint32_t seen = 0;
  uint64_t pos = kDirOffset + uint64_t{n} * sizeof(table_entry);
  for (uint32_t i = 0; i < n; ++i) {
    const auto kind = static_cast<uint32_t>(t[i].kind);
    if (!known_kind(kind) || !record_size_ok(kind, t[i].record_size) || (seen & (1u << kind))) return false;
    seen |= 1u << kind;
    if (t[i].count && !t[i].data) return false;
    uint64_t bytes;
    if (__builtin_mul_overflow(t[i].count, uint64_t{t[i].record_size}, &bytes) || !align_up(pos, &pos)) return false;
    offsets[i] = pos;
    if (__builtin_add_overflow(pos, bytes, &pos)) return false;
  }
  *end = pos;
  return true;
}

parse_error check_header(const unsigned char *b, uint64_t len, const header **out) {
  if (len < kDirOffset) return parse_error::truncated;
  const auto *h = reinterpret_cast<const header *>(b + kHeaderOffset);
  if (h->header_size != sizeof(header) || h->ntables > kTableKinds) return parse_error::bad_header;
  const uint64_t dir_end = kDirOffset + uint64_t{h->ntables} * sizeof(table_entry);
  if (len < dir_end) return parse_error::truncated;
  uint32_t crc = crc_without_field(h, sizeof *h, offsetof(header, crc));
  crc = crc32c(crc, b + kDirOffset, dir_end - kDirOffset);
  if (crc != h->crc) return parse_error::header_crc;
  const uint32_t page = h->page_size;
  if (page < kAlign || (page & (page - 1)) || h->lib_build_id_len > sizeof h->lib_build_id)
    return parse_error::bad_header;
  if (!terminated(h->mmtier_version, sizeof h->mmtier_version) || !terminated(h->boot_id, sizeof h->boot_id) ||
      !terminated(h->comm, sizeof h->comm) || !terminated(h->kernel_release, sizeof h->kernel_release) ||
      !terminated(h->glibc_version, sizeof h->glibc_version))
    return parse_error::bad_header;
  *out = h;
  return parse_error::ok;
}

void attach(manifest_view *v, const table_entry &e, const unsigned char *p) {
  switch (static_cast<table_kind>(e.kind)) {
    case table_kind::regions:
      v->regions = reinterpret_cast<const region *>(p);
      v->nregions = e.count;
      break;
    case table_kind::runs:
      v->runs = reinterpret_cast<const run *>(p);
      v->nruns = e.count;
      break;
    case table_kind::chunks:
      v->chunks = reinterpret_cast<const chunk *>(p);
      v->nchunks = e.count;
      break;
    case table_kind::files:
      v->files = reinterpret_cast<const file *>(p);
      v->nfiles = e.count;
      break;
    case table_kind::strings:
      v->strings = reinterpret_cast<const char *>(p);
      v->strings_len = e.count;
      break;
    case table_kind::page_hashes:
      v->page_hashes = reinterpret_cast<const page_hash_record *>(p);
      v->npage_hashes = e.count;
      break;
    default: break;  // later stages' tables: through dir
  }
}

// The directory's tables: each where it may be, the bytes before it zero,
// its CRC right; nothing after the last one.
parse_error check_tables(const unsigned char *b, uint64_t len, const header &h, manifest_view *v) {
  const auto *dir = reinterpret_cast<const table_entry *>(b + kDirOffset);
  uint64_t pos = kDirOffset + uint64_t{h.ntables} * sizeof(table_entry);
  uint32_t seen = 0;
  for (uint32_t i = 0; i < h.ntables; ++i) {
    const table_entry &e = dir[i];
    if (!known_kind(e.kind)) return parse_error::unknown_table;
    if (!record_size_ok(e.kind, e.record_size) || (seen & (1u << e.kind)) || e.offset % kAlign || e.offset < pos)
      return parse_error::bad_table;
    seen |= 1u << e.kind;
    uint64_t bytes, end;
    if (__builtin_mul_overflow(e.count, uint64_t{e.record_size}, &bytes) ||
        __builtin_add_overflow(e.offset, bytes, &end))
      return parse_error::bad_table;
    if (end > len) return parse_error::truncated;
    if (!all_zero(b + pos, e.offset - pos)) return parse_error::bad_table;
    if (crc32c(0, b + e.offset, bytes) != e.crc) return parse_error::table_crc;
    attach(v, e, b + e.offset);
    pos = end;
  }
  return len == pos ? parse_error::ok : parse_error::bad_table;
}

// The runs of r, runs[first, first + n): contiguous from page 0 to the
// region's last page, each of a known source, its data where it may be.
bool runs_cover(const manifest_view &m, const region &r, uint64_t page, uint64_t *hashed) {
  const uint64_t pages = (r.end - r.start) / page;
  uint64_t next = 0;
  for (uint64_t i = r.first_run; i < r.first_run + r.nruns; ++i) {
    const run &u = m.runs[i];
    uint64_t bytes, end;
    if (u.page != next || u.npages == 0 || u.npages > pages - next) return false;
    next += u.npages;
    if (u.source < 1 || u.source > kRunSources) return false;
    const auto src = static_cast<run_source>(u.source);
    if (src != run_source::mem && src != run_source::pmem && src != run_source::base) continue;
    if (src != run_source::pmem) *hashed += u.npages;
    // pages <= 2^64 / page, so this product cannot overflow; the sum can.
    bytes = u.npages * page;
    if (u.offset % kAlign || __builtin_add_overflow(u.offset, bytes, &end)) return false;
    if (src == run_source::mem && end > m.hdr->mem_size) return false;
    if (src == run_source::pmem && u.file >= m.nfiles) return false;
    if (src == run_source::base &&
        (u.file >= m.nfiles || m.files[u.file].identity != static_cast<uint32_t>(file_identity::capsule)))
      return false;
  }
  return next == pages;
}

bool string_ok(const manifest_view &m, uint32_t off) { return off < m.strings_len; }

// Regions ascending, disjoint and page-aligned, their runs one after the
// other in the runs table, covering them exactly; every run some region's.
parse_error check_regions(const manifest_view &m) {
  const uint64_t page = m.hdr->page_size;
  uint64_t prev_end = 0, next_run = 0, hashed = 0;
  for (uint64_t i = 0; i < m.nregions; ++i) {
    const region &r = m.regions[i];
    if (r.start >= r.end || ((r.start | r.end) & (page - 1)) || r.start < prev_end) return parse_error::bad_record;
    if (r.kind < 1 || r.kind > kRegionKinds || (r.flags & ~kRegionFlags) || (r.madv & ~kRegionMadv) ||
        (r.prot & ~kProtBits))
      return parse_error::bad_record;
    if ((r.file != kNoFile && r.file >= m.nfiles) || (r.name != 0 && !string_ok(m, r.name)))
      return parse_error::bad_record;
    // next_run <= nruns holds here, so the subtraction cannot wrap.
    if (r.first_run != next_run || r.nruns > m.nruns - next_run || !runs_cover(m, r, page, &hashed))
      return parse_error::bad_record;
    next_run += r.nruns;
    prev_end = r.end;
  }
  if (next_run != m.nruns) return parse_error::bad_record;
  // A page hash for every page of the mem and base runs, when there are
  // any (a capsule of an older writer has none: nothing builds on it).
  return m.npage_hashes == 0 || m.npage_hashes == hashed ? parse_error::ok : parse_error::bad_record;
}

parse_error check_others(const manifest_view &m) {
  for (uint64_t i = 0; i < m.nchunks; ++i) {
    const chunk &c = m.chunks[i];
    uint64_t end;
    if (c.offset % kAlign || __builtin_add_overflow(c.offset, c.length, &end)) return parse_error::bad_record;
    if (c.file == kNoFile ? end > m.hdr->mem_size : c.file >= m.nfiles) return parse_error::bad_record;
  }
  for (uint64_t i = 0; i < m.nfiles; ++i) {
    const file &f = m.files[i];
    if (!string_ok(m, f.path) || f.identity < 1 || f.identity > kIdentities ||
        f.build_id_len > sizeof f.build_id)
      return parse_error::bad_record;
  }
  if (m.strings_len && m.strings[m.strings_len - 1] != '\0') return parse_error::bad_record;
  return parse_error::ok;
}

}  // namespace

status_block status_make(status state, int32_t error, const char *line) {
  status_block b;
  memset(&b, 0, sizeof b);
  memcpy(b.magic, kMagic, sizeof b.magic);
  b.version = kVersion;
  b.state = static_cast<uint32_t>(state);
  b.error = error;
  for (size_t i = 0; line && line[i] && i + 1 < sizeof b.line; ++i) b.line[i] = line[i];
  b.crc = crc32c(0, &b, sizeof b);  // its crc field is still 0
  return b;
}

uint64_t manifest_size(const table_input *tables, uint32_t ntables) {
  uint64_t offsets[kTableKinds], end;
  return layout(tables, ntables, offsets, &end) ? end : 0;
}

uint64_t manifest_build(const header &h, const table_input *tables, uint32_t ntables, status state, int32_t error,
                        const char *line, void *out, uint64_t cap) {
  uint64_t offsets[kTableKinds], end;
  if (!known_state(static_cast<uint32_t>(state)) || !layout(tables, ntables, offsets, &end) || !out || cap < end)
    return 0;
  auto *o = static_cast<unsigned char *>(out);
  memset(o, 0, end);  // the bytes between the tables
  const status_block st = status_make(state, error, line);
  memcpy(o, &st, sizeof st);
  header hd = h;
  hd.header_size = sizeof(header);
  hd.ntables = ntables;
  hd.crc = 0;
  uint32_t crc = crc32c(0, &hd, sizeof hd);
  for (uint32_t i = 0; i < ntables; ++i) {
    const table_input &t = tables[i];
    const uint64_t bytes = t.count * t.record_size;  // layout() checked it fits
    table_entry e;
    memset(&e, 0, sizeof e);
    e.kind = static_cast<uint32_t>(t.kind);
    e.record_size = t.record_size;
    e.count = t.count;
    e.offset = offsets[i];
    e.crc = crc32c(0, t.data, bytes);
    if (bytes) memcpy(o + e.offset, t.data, bytes);
    memcpy(o + kDirOffset + i * sizeof e, &e, sizeof e);
    crc = crc32c(crc, &e, sizeof e);
  }
  hd.crc = crc;
  memcpy(o + kHeaderOffset, &hd, sizeof hd);
  return end;
}

parse_error status_parse(const void *buf, uint64_t len, const status_block **out) {
  if (len < sizeof(status_block)) return parse_error::truncated;
  if (!buf || (reinterpret_cast<uintptr_t>(buf) & 7)) return parse_error::bad_header;
  const auto *b = static_cast<const status_block *>(buf);
  for (size_t i = 0; i < sizeof kMagic; ++i)
    if (b->magic[i] != kMagic[i]) return parse_error::bad_magic;
  if (b->version != kVersion) return parse_error::bad_version;
  if (crc_without_field(b, sizeof *b, offsetof(status_block, crc)) != b->crc) return parse_error::status_crc;
  if (!known_state(b->state) || !terminated(b->line, sizeof b->line)) return parse_error::bad_header;
  *out = b;
  return parse_error::ok;
}

parse_error manifest_parse(const void *buf, uint64_t len, manifest_view *out) {
  manifest_view v{};
  const auto *b = static_cast<const unsigned char *>(buf);
  parse_error e = status_parse(buf, len, &v.status);
  if (e == parse_error::ok) e = check_header(b, len, &v.hdr);
  if (e == parse_error::ok) e = check_tables(b, len, *v.hdr, &v);
  if (e != parse_error::ok) return e;
  v.dir = reinterpret_cast<const table_entry *>(b + kDirOffset);
  v.ntables = v.hdr->ntables;
  if ((e = check_regions(v)) != parse_error::ok || (e = check_others(v)) != parse_error::ok) return e;
  *out = v;
  return parse_error::ok;
}

const char *parse_error_text(parse_error e) {
  switch (e) {
    case parse_error::ok: return "no error";
    case parse_error::truncated: return "the manifest is shorter than its own tables say";
    case parse_error::bad_magic: return "not a capsule manifest";
    case parse_error::bad_version: return "a capsule of another format version";
    case parse_error::status_crc: return "the status block is damaged";
    case parse_error::header_crc: return "the header or the table directory is damaged";
    case parse_error::bad_header: return "the header holds sizes or counts that cannot be";
    case parse_error::unknown_table: return "a table of a kind this version does not know";
    case parse_error::bad_table:
      return "a table is out of place (out of bounds, misaligned, overlapping, given twice) or of the wrong record "
             "size, or bytes outside the tables are not zero";
    case parse_error::table_crc: return "a table's content is damaged";
    case parse_error::bad_record: return "a region, run, chunk or file that cannot be";
  }
  return "an unknown error";
}

const char *string_at(const manifest_view &m, uint32_t off) {
  if (!m.strings || off >= m.strings_len || m.strings[m.strings_len - 1] != '\0') return "";
  return m.strings + off;
}

}  // namespace mmtier::capsule
