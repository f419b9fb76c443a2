// The capsule manifest (lib/snapshot/capsule_format): a manifest built from
// tables reads back as the same tables; any damage to any byte, any
// truncation and every kind of impossible header, table or record is
// refused with its own error, and parsing never reads outside the buffer
// (each bad manifest is parsed from a buffer of exactly its length, which
// AddressSanitizer guards).  Bad records are built with manifest_build,
// which checks only the tables' shape; bad tables and headers are patched
// into a good manifest and their CRCs made right again, so that the check
// under test is the one that refuses them.
#include "snapshot/capsule_format.h"

#include "support/crc32c.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace mmtier::capsule {
namespace {

using detail::crc32c;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kThreadRecord = 48;  // a later stage's record: any size

// A manifest's bytes, 8-byte aligned.
struct image {
  std::vector<uint64_t> words;
  uint64_t size = 0;
  unsigned char *bytes() { return reinterpret_cast<unsigned char *>(words.data()); }
  header *hdr() { return reinterpret_cast<header *>(bytes() + kHeaderOffset); }
  status_block *status() { return reinterpret_cast<status_block *>(bytes()); }
  table_entry *dir() { return reinterpret_cast<table_entry *>(bytes() + kHeaderOffset + sizeof(header)); }
  table_entry *entry(table_kind k) {
    for (uint32_t i = 0; i < hdr()->ntables; ++i)
      if (dir()[i].kind == static_cast<uint32_t>(k)) return &dir()[i];
    ADD_FAILURE() << "no table of kind " << static_cast<uint32_t>(k);
    return dir();
  }
};

// The tables of a small process: a heap, a library and a tier unit half on
// PMem (ZeroIO) and half in mem, the CRCs of mem and of the PMem file, and
// two records of a later stage's table.
struct sample {
  header h{};
  std::vector<region> regions;
  std::vector<run> runs;
  std::vector<chunk> chunks;
  std::vector<file> files;
  std::vector<char> strings;
  std::vector<unsigned char> threads;
  std::vector<page_hash_record> hashes;  // a page_hashes table when not empty
  status state = status::complete;
  bool runs_last = false;  // the runs table last in the manifest, nothing after it

  uint32_t add_string(const char *s) {
    const auto off = static_cast<uint32_t>(strings.size());
    strings.insert(strings.end(), s, s + strlen(s) + 1);
    return off;
  }

  static region make_region(uint64_t start, uint64_t end, region_kind kind, uint32_t prot, uint32_t file,
                            uint32_t name, uint64_t first_run, uint64_t nruns) {
    region r{};
    r.start = start, r.end = end, r.prot = prot, r.kind = static_cast<uint32_t>(kind);
    r.file = file, r.name = name, r.first_run = first_run, r.nruns = nruns;
    return r;
  }

  sample() {
    h.page_size = kPage;
    h.pid = 4242;
    h.nthreads = 2;
    h.lib_build_id_len = 20;
    for (int i = 0; i < 20; ++i) h.lib_build_id[i] = static_cast<uint8_t>(i * 7);
    strcpy(h.mmtier_version, "0.1.0");
    strcpy(h.comm, "prog");
    strcpy(h.boot_id, "0d3c1b2a-0000-4000-8000-123456789abc");
    strcpy(h.kernel_release, "6.1.0-18-amd64");
    strcpy(h.glibc_version, "2.36");
    h.mem_size = 6 * kPage;
    add_string("");
    const uint32_t heap = add_string("[heap]");
    const uint32_t libc = add_string("/usr/lib/x86_64-linux-gnu/libc.so.6");
    const uint32_t pmem = add_string("/dev/shm/pmem-1.tier");

    file f{};
    f.path = libc, f.identity = static_cast<uint32_t>(file_identity::build_id), f.build_id_len = 20;
    f.size = 1 << 21, f.ino = 77, f.dev = 8;
    files.push_back(f);
    f = file{};
    f.path = pmem, f.identity = static_cast<uint32_t>(file_identity::capsule), f.size = 4 * kPage;
    files.push_back(f);

    const uint32_t rw = 3, rx = 5;
    regions.push_back(make_region(0x10000, 0x14000, region_kind::brk, rw, kNoFile, heap, 0, 2));
    regions.push_back(make_region(0x20000, 0x23000, region_kind::file, rx, 0, libc, 2, 2));
    regions.push_back(make_region(0x400000, 0x408000, region_kind::unit, rw, kNoFile, 0, 4, 2));
    regions[1].file_offset = 0x1000;
    regions[2].madv = kMadvHuge;
    auto src = [](run_source s) { return static_cast<uint32_t>(s); };
    runs.push_back({0, 2, src(run_source::mem), kNoFile, 0});
    runs.push_back({2, 2, src(run_source::zero), kNoFile, 0});
    runs.push_back({0, 1, src(run_source::file), kNoFile, 0});
    runs.push_back({1, 2, src(run_source::hole), kNoFile, 0});
    runs.push_back({0, 4, src(run_source::pmem), 1, 0});
    runs.push_back({4, 4, src(run_source::mem), kNoFile, 2 * kPage});  // ends at mem_size
    chunks.push_back({kNoFile, 0x1234, 0, 6 * kPage});
    chunks.push_back({1, 0x5678, 0, 4 * kPage});
    for (uint64_t i = 0; i < 2 * kThreadRecord; ++i) threads.push_back(static_cast<unsigned char>(i ^ 0x5a));
  }

  // Replaces the runs of region ri, renumbering the regions' first_run.
  void set_runs(size_t ri, const std::vector<run> &rs) {
    region &r = regions[ri];
    runs.erase(runs.begin() + static_cast<long>(r.first_run), runs.begin() + static_cast<long>(r.first_run + r.nruns));
    runs.insert(runs.begin() + static_cast<long>(r.first_run), rs.begin(), rs.end());
    r.nruns = rs.size();
    for (size_t i = 1; i < regions.size(); ++i) regions[i].first_run = regions[i - 1].first_run + regions[i - 1].nruns;
  }

  std::vector<table_input> tables() const {
    std::vector<table_input> t = {
        {table_kind::regions, sizeof(region), regions.size(), regions.data()},
        {table_kind::runs, sizeof(run), runs.size(), runs.data()},
        {table_kind::chunks, sizeof(chunk), chunks.size(), chunks.data()},
        {table_kind::files, sizeof(file), files.size(), files.data()},
        {table_kind::strings, 1, strings.size(), strings.data()},
        {table_kind::threads, static_cast<uint32_t>(kThreadRecord), threads.size() / kThreadRecord, threads.data()},
    };
    if (!hashes.empty())
      t.push_back({table_kind::page_hashes, sizeof(page_hash_record), hashes.size(), hashes.data()});
    if (runs_last) std::rotate(t.begin() + 1, t.begin() + 2, t.end());
    return t;
  }

  image build() const {
    const auto t = tables();
    image m;
    const uint64_t n = manifest_size(t.data(), static_cast<uint32_t>(t.size()));
    EXPECT_GT(n, 0u);
    m.words.assign((n + 7) / 8, 0xa5a5a5a5a5a5a5a5ull);  // the builder must clear what it does not write
    m.size = manifest_build(h, t.data(), static_cast<uint32_t>(t.size()), state, 0, "", m.bytes(), n);
    EXPECT_EQ(m.size, n);
    return m;
  }
};

// Parses a copy of exactly len bytes of p, so that a read past them is
// AddressSanitizer's to see (operator new's memory is 16-byte aligned).
parse_error parse(const unsigned char *p, uint64_t len) {
  std::unique_ptr<unsigned char[]> copy(new unsigned char[len ? len : 1]);
  if (len) memcpy(copy.get(), p, len);
  manifest_view v{};
  return manifest_parse(copy.get(), len, &v);
}
parse_error parse(image &m) { return parse(m.bytes(), m.size); }

void reseal_status(image &m) {
  m.status()->crc = 0;
  m.status()->crc = crc32c(0, m.status(), sizeof(status_block));
}
void reseal_header(image &m, uint32_t ntables) {
  header *h = m.hdr();
  h->crc = 0;
  const uint32_t crc = crc32c(0, h, sizeof *h);
  h->crc = crc32c(crc, m.dir(), ntables * sizeof(table_entry));
}
void reseal_header(image &m) { reseal_header(m, m.hdr()->ntables); }
void reseal_table(image &m, table_kind k) {
  table_entry *e = m.entry(k);
  e->crc = crc32c(0, m.bytes() + e->offset, e->count * e->record_size);
  reseal_header(m);
}

std::string text(parse_error e) { return parse_error_text(e); }

TEST(CapsuleFormat, RoundTrip) {
  const sample s;
  image m = s.build();
  // Tables at the first 4 KiB boundary after the directory, one after the other.
  EXPECT_EQ(m.size, 6 * kAlign + 2 * kThreadRecord);
  manifest_view v{};
  ASSERT_EQ(manifest_parse(m.bytes(), m.size, &v), parse_error::ok) << text(parse(m));
  EXPECT_EQ(v.status, m.status());
  EXPECT_EQ(v.status->state, static_cast<uint32_t>(status::complete));
  EXPECT_EQ(memcmp(v.status->magic, kMagic, sizeof kMagic), 0);
  EXPECT_EQ(v.hdr, m.hdr());
  EXPECT_EQ(v.hdr->header_size, sizeof(header));
  EXPECT_EQ(v.hdr->ntables, 6u);
  EXPECT_EQ(v.hdr->pid, 4242);
  EXPECT_STREQ(v.hdr->comm, "prog");
  EXPECT_EQ(memcmp(v.hdr->lib_build_id, s.h.lib_build_id, 20), 0);
  ASSERT_EQ(v.nregions, s.regions.size());
  EXPECT_EQ(memcmp(v.regions, s.regions.data(), sizeof(region) * v.nregions), 0);
  ASSERT_EQ(v.nruns, s.runs.size());
  EXPECT_EQ(memcmp(v.runs, s.runs.data(), sizeof(run) * v.nruns), 0);
  ASSERT_EQ(v.nchunks, s.chunks.size());
  EXPECT_EQ(memcmp(v.chunks, s.chunks.data(), sizeof(chunk) * v.nchunks), 0);
  ASSERT_EQ(v.nfiles, s.files.size());
  EXPECT_EQ(memcmp(v.files, s.files.data(), sizeof(file) * v.nfiles), 0);
  ASSERT_EQ(v.strings_len, s.strings.size());
  EXPECT_STREQ(string_at(v, v.regions[0].name), "[heap]");
  EXPECT_STREQ(string_at(v, v.files[0].path), "/usr/lib/x86_64-linux-gnu/libc.so.6");
  EXPECT_STREQ(string_at(v, v.files[1].path), "/dev/shm/pmem-1.tier");
  EXPECT_STREQ(string_at(v, 0), "");
  EXPECT_STREQ(string_at(v, static_cast<uint32_t>(v.strings_len)), "");
  EXPECT_STREQ(string_at(v, 0xffffffffu), "");
  ASSERT_EQ(v.ntables, 6u);
  for (uint32_t i = 0; i < v.ntables; ++i) {
    EXPECT_EQ(v.dir[i].offset % kAlign, 0u);
    EXPECT_EQ(v.dir[i].kind, i + 1);
  }
  EXPECT_EQ(v.dir[5].record_size, kThreadRecord);
  EXPECT_EQ(v.dir[5].count, 2u);
  EXPECT_EQ(memcmp(m.bytes() + v.dir[5].offset, s.threads.data(), s.threads.size()), 0);
}

TEST(CapsuleFormat, NoTables) {
  header h{};
  h.page_size = kPage;
  unsigned char buf[2048];
  ASSERT_EQ(manifest_size(nullptr, 0), kHeaderOffset + sizeof(header));
  const uint64_t n = manifest_build(h, nullptr, 0, status::failed, 28, "no room", buf, sizeof buf);
  ASSERT_EQ(n, kHeaderOffset + sizeof(header));
  manifest_view v{};
  ASSERT_EQ(parse(buf, n), parse_error::ok);
  alignas(8) unsigned char copy[2048];
  memcpy(copy, buf, n);
  ASSERT_EQ(manifest_parse(copy, n, &v), parse_error::ok);
  EXPECT_EQ(v.nregions + v.nruns + v.nchunks + v.nfiles + v.strings_len, 0u);
  EXPECT_EQ(v.regions, nullptr);
  EXPECT_STREQ(string_at(v, 0), "");
  EXPECT_EQ(v.status->error, 28);
  EXPECT_STREQ(v.status->line, "no room");
  EXPECT_EQ(v.status->state, static_cast<uint32_t>(status::failed));
}

// Every byte is under a CRC or must be zero (the padding between tables) or
// must not be there (after the last table): one flipped bit anywhere is
// refused.
TEST(CapsuleFormat, EveryBitFlipIsRejected) {
  image m = sample().build();
  ASSERT_EQ(parse(m), parse_error::ok);
  std::unique_ptr<unsigned char[]> buf(new unsigned char[m.size]);
  manifest_view v{};
  for (uint64_t off = 0; off < m.size; ++off) {
    memcpy(buf.get(), m.bytes(), m.size);
    buf[off] ^= static_cast<unsigned char>(1u << (off % 8));
    ASSERT_NE(manifest_parse(buf.get(), m.size, &v), parse_error::ok) << "bit " << off % 8 << " of byte " << off;
  }
}

TEST(CapsuleFormat, EveryTruncationIsRejected) {
  image m = sample().build();
  for (uint64_t len = 0; len < m.size; ++len) {
    const parse_error e = parse(m.bytes(), len);
    ASSERT_NE(e, parse_error::ok) << "length " << len;
    if (len < kHeaderOffset + sizeof(header)) EXPECT_EQ(e, parse_error::truncated) << len;
  }
  // Cut at the end of a table: the next one is missing.
  EXPECT_EQ(parse(m.bytes(), m.entry(table_kind::strings)->offset + m.entry(table_kind::strings)->count),
            parse_error::truncated);
}

TEST(CapsuleFormat, BytesAfterTheLastTableAreRejected) {
  image m = sample().build();
  m.words.resize(m.words.size() + kAlign / 8, 0);
  for (uint64_t extra : {uint64_t{1}, uint64_t{8}, kAlign}) {
    EXPECT_EQ(parse(m.bytes(), m.size + extra), parse_error::bad_table) << extra;
  }
}

TEST(CapsuleFormat, PaddingMustBeZero) {
  image m = sample().build();
  const uint64_t dir_end = kHeaderOffset + sizeof(header) + 6 * sizeof(table_entry);
  const uint64_t between = m.entry(table_kind::regions)->offset + 3 * sizeof(region);  // before runs
  for (uint64_t off : {dir_end, kAlign - 1, between, m.entry(table_kind::runs)->offset - 1}) {
    image bad = m;
    bad.bytes()[off] = 1;
    EXPECT_EQ(parse(bad), parse_error::bad_table) << off;
  }
}

TEST(CapsuleStatus, MakeAndParse) {
  for (status st : {status::incomplete, status::complete, status::durable, status::failed}) {
    const status_block b = status_make(st, 5, "disk full");
    const status_block *out = nullptr;
    ASSERT_EQ(status_parse(&b, sizeof b, &out), parse_error::ok);
    EXPECT_EQ(out, &b);
    EXPECT_EQ(b.state, static_cast<uint32_t>(st));
    EXPECT_EQ(b.error, 5);
    EXPECT_STREQ(b.line, "disk full");
    EXPECT_EQ(b.version, kVersion);
    EXPECT_EQ(status_parse(&b, sizeof b - 1, &out), parse_error::truncated);
  }
  const std::string long_line(1000, 'x');
  const status_block b = status_make(status::failed, 0, long_line.c_str());
  EXPECT_EQ(strlen(b.line), sizeof b.line - 1);
  const status_block *out = nullptr;
  EXPECT_EQ(status_parse(&b, sizeof b, &out), parse_error::ok);
  const status_block n = status_make(status::durable, 0, nullptr);
  EXPECT_STREQ(n.line, "");
  EXPECT_EQ(status_parse(&n, sizeof n, &out), parse_error::ok);
}

TEST(CapsuleStatus, RewrittenInPlace) {
  image m = sample().build();
  const status_block d = status_make(status::durable, 0, "");
  memcpy(m.bytes(), &d, sizeof d);
  manifest_view v{};
  ASSERT_EQ(manifest_parse(m.bytes(), m.size, &v), parse_error::ok);
  EXPECT_EQ(v.status->state, static_cast<uint32_t>(status::durable));
}

TEST(CapsuleStatus, Rejected) {
  const image good = sample().build();
  auto check = [&](const char *what, parse_error want, const std::function<void(image &)> &patch, bool reseal) {
    image m = good;
    patch(m);
    if (reseal) reseal_status(m);
    EXPECT_EQ(parse(m), want) << what << ": " << text(parse(m));
    const status_block *out = nullptr;
    EXPECT_EQ(status_parse(m.bytes(), sizeof(status_block), &out), want) << what;
  };
  check("magic", parse_error::bad_magic, [](image &m) { m.status()->magic[7] = '2'; }, true);
  check("magic, first byte", parse_error::bad_magic, [](image &m) { m.status()->magic[0] = 'm'; }, false);
  check("the next version", parse_error::bad_version, [](image &m) { m.status()->version = kVersion + 1; }, true);
  check("version 1 (no resume points)", parse_error::bad_version, [](image &m) { m.status()->version = 1; }, true);
  check("version 0", parse_error::bad_version, [](image &m) { m.status()->version = 0; }, false);
  check("damaged error", parse_error::status_crc, [](image &m) { m.status()->error = 1; }, false);
  check("damaged line", parse_error::status_crc, [](image &m) { m.status()->line[400] = 'x'; }, false);
  check("damaged crc", parse_error::status_crc, [](image &m) { m.status()->crc ^= 1u << 31; }, false);
  check("state 0", parse_error::bad_header, [](image &m) { m.status()->state = 0; }, true);
  check("state 5", parse_error::bad_header, [](image &m) { m.status()->state = 5; }, true);
  check("unterminated line", parse_error::bad_header,
        [](image &m) { memset(m.status()->line, 'a', sizeof m.status()->line); }, true);
  // The buffer must be aligned for the records it is read as.
  image m = good;
  std::unique_ptr<uint64_t[]> buf(new uint64_t[m.size / 8 + 2]);
  auto *odd = reinterpret_cast<unsigned char *>(buf.get()) + 4;
  memcpy(odd, m.bytes(), m.size);
  manifest_view v{};
  EXPECT_EQ(manifest_parse(odd, m.size, &v), parse_error::bad_header);
}

TEST(CapsuleHeader, Rejected) {
  const image good = sample().build();
  auto check = [&](const char *what, parse_error want, const std::function<void(image &)> &patch, bool reseal) {
    image m = good;
    patch(m);
    if (reseal) reseal_header(m);
    EXPECT_EQ(parse(m), want) << what << ": " << text(parse(m));
  };
  check("header_size", parse_error::bad_header, [](image &m) { m.hdr()->header_size += 8; }, false);
  check("header_size 0", parse_error::bad_header, [](image &m) { m.hdr()->header_size = 0; }, false);
  check("ntables 9", parse_error::bad_header, [](image &m) { m.hdr()->ntables = kTableKinds + 1; }, false);
  check("ntables huge", parse_error::bad_header, [](image &m) { m.hdr()->ntables = 0xffffffffu; }, false);
  check("damaged pid", parse_error::header_crc, [](image &m) { m.hdr()->pid = 1; }, false);
  check("damaged crc", parse_error::header_crc, [](image &m) { m.hdr()->crc ^= 0x100; }, false);
  check("damaged directory", parse_error::header_crc, [](image &m) { m.dir()[3].crc ^= 1; }, false);
  check("fewer tables", parse_error::header_crc, [](image &m) { m.hdr()->ntables = 5; }, false);
  check("page_size 0", parse_error::bad_header, [](image &m) { m.hdr()->page_size = 0; }, true);
  check("page_size 2048", parse_error::bad_header, [](image &m) { m.hdr()->page_size = 2048; }, true);
  check("page_size 6144", parse_error::bad_header, [](image &m) { m.hdr()->page_size = 6144; }, true);
  check("lib_build_id_len", parse_error::bad_header, [](image &m) { m.hdr()->lib_build_id_len = 21; }, true);
  auto fill = [](char *p, size_t n) { memset(p, 'a', n); };
  check("comm", parse_error::bad_header, [&](image &m) { fill(m.hdr()->comm, sizeof m.hdr()->comm); }, true);
  check("boot_id", parse_error::bad_header, [&](image &m) { fill(m.hdr()->boot_id, sizeof m.hdr()->boot_id); },
        true);
  check("mmtier_version", parse_error::bad_header,
        [&](image &m) { fill(m.hdr()->mmtier_version, sizeof m.hdr()->mmtier_version); }, true);
  check("kernel_release", parse_error::bad_header,
        [&](image &m) { fill(m.hdr()->kernel_release, sizeof m.hdr()->kernel_release); }, true);
  check("glibc_version", parse_error::bad_header,
        [&](image &m) { fill(m.hdr()->glibc_version, sizeof m.hdr()->glibc_version); }, true);
  // Larger pages: the sample's regions are not aligned to them.
  check("page_size 16384", parse_error::bad_record, [](image &m) { m.hdr()->page_size = 16384; }, true);
}

TEST(CapsuleTables, Rejected) {
  const image good = sample().build();
  auto check = [&](const char *what, parse_error want, const std::function<void(image &)> &patch) {
    image m = good;
    patch(m);
    reseal_header(m);
    EXPECT_EQ(parse(m), want) << what << ": " << text(parse(m));
  };
  auto kind = [](table_kind k) { return static_cast<uint32_t>(k); };
  check("kind 0", parse_error::unknown_table, [](image &m) { m.dir()[5].kind = 0; });
  check("kind 9", parse_error::unknown_table, [](image &m) { m.dir()[5].kind = kTableKinds + 1; });
  // Each patch leaves the table well-formed but for the rule it breaks.
  check("regions twice", parse_error::bad_table, [&](image &m) {
    table_entry &e = m.dir()[1];  // the runs: the same bytes as regions
    e.count = e.count * e.record_size / sizeof(region);
    e.kind = kind(table_kind::regions);
    e.record_size = sizeof(region);
  });
  check("later kind twice", parse_error::bad_table, [&](image &m) {
    m.hdr()->ntables = 7;  // the directory grows into the padding before the first table
    m.dir()[6] = m.dir()[5];
    m.dir()[6].offset = m.dir()[5].offset + kAlign;
    m.dir()[6].count = 0;
    m.dir()[6].crc = 0;
  });
  const std::pair<table_kind, uint32_t> sizes[] = {{table_kind::regions, sizeof(region) + 8},
                                                   {table_kind::runs, sizeof(run) - 8},
                                                   {table_kind::chunks, sizeof(chunk) * 2},
                                                   {table_kind::files, 1},
                                                   {table_kind::strings, 2},
                                                   {table_kind::threads, 0}};
  for (const auto &ks : sizes) {
    const table_kind k = ks.first;
    const uint32_t size = ks.second;
    check("record size", parse_error::bad_table, [&](image &m) {
      table_entry *e = m.entry(k);
      // The same bytes, counted in records of the wrong size where they can be.
      const uint64_t bytes = e->count * e->record_size;
      e->record_size = size;
      e->count = size ? bytes / size : 0;
    });
  }
  check("misaligned", parse_error::bad_table, [](image &m) {
    table_entry &e = m.dir()[2];  // the chunks, moved 8 bytes on: their CRC still holds
    memmove(m.bytes() + e.offset + 8, m.bytes() + e.offset, e.count * e.record_size);
    memset(m.bytes() + e.offset, 0, 8);
    e.offset += 8;
  });
  check("overlapping", parse_error::bad_table, [](image &m) { m.dir()[2].offset = m.dir()[1].offset; });
  check("out of order", parse_error::bad_table, [](image &m) { std::swap(m.dir()[1], m.dir()[2]); });
  check("inside the directory", parse_error::bad_table, [](image &m) { m.dir()[0].offset = 0; });
  check("beyond the end", parse_error::truncated, [&](image &m) { m.dir()[5].offset += kAlign; });
  check("count beyond the end", parse_error::truncated, [](image &m) { m.dir()[5].count += 1; });
  check("end wraps", parse_error::bad_table, [](image &m) {
    m.dir()[5].offset = ~(kAlign - 1);
    m.dir()[5].count = 1000;
  });
  check("size wraps", parse_error::bad_table, [](image &m) { m.dir()[0].count = (uint64_t{1} << 58) + 1; });
  check("strings end wraps", parse_error::bad_table, [](image &m) { m.dir()[4].count = ~uint64_t{0}; });
  check("regions damaged", parse_error::table_crc, [](image &m) { m.dir()[0].crc ^= 4; });
  check("threads damaged", parse_error::table_crc, [](image &m) { m.bytes()[m.dir()[5].offset + 3] ^= 1; });
  check("strings damaged", parse_error::table_crc, [](image &m) { m.bytes()[m.dir()[4].offset] ^= 1; });
}

TEST(CapsuleBuild, RefusesMalformedTables) {
  const sample s;
  const auto good = s.tables();
  std::vector<unsigned char> out(1 << 16);
  auto build = [&](std::vector<table_input> t, uint64_t cap) {
    return manifest_build(s.h, t.data(), static_cast<uint32_t>(t.size()), status::complete, 0, "", out.data(), cap);
  };
  const uint64_t n = manifest_size(good.data(), static_cast<uint32_t>(good.size()));
  EXPECT_EQ(build(good, n), n);
  EXPECT_EQ(build(good, n - 1), 0u);
  EXPECT_EQ(manifest_build(s.h, good.data(), 6, status::complete, 0, "", nullptr, n), 0u);
  EXPECT_EQ(manifest_build(s.h, good.data(), 6, static_cast<status>(0), 0, "", out.data(), n), 0u);
  EXPECT_EQ(manifest_build(s.h, good.data(), 6, static_cast<status>(5), 0, "", out.data(), n), 0u);
  EXPECT_EQ(manifest_size(nullptr, 1), 0u);
  const std::vector<std::pair<const char *, std::function<void(std::vector<table_input> &)>>> bad = {
      {"kind 0", [](auto &t) { t[0].kind = static_cast<table_kind>(0); }},
      {"kind 9", [](auto &t) { t[5].kind = static_cast<table_kind>(kTableKinds + 1); }},
      {"kind twice",
       [](auto &t) {
         t[1].kind = table_kind::regions;  // the runs' bytes, as regions
         t[1].count = t[1].count * t[1].record_size / sizeof(region);
         t[1].record_size = sizeof(region);
       }},
      {"regions record size", [](auto &t) { t[0].record_size = sizeof(region) - 1; }},
      {"runs record size", [](auto &t) { t[1].record_size = sizeof(run) + 1; }},
      {"chunks record size", [](auto &t) { t[2].record_size = 0; }},
      {"files record size", [](auto &t) { t[3].record_size = sizeof(file) * 2; }},
      {"strings record size", [](auto &t) { t[4].record_size = 4; }},
      {"threads record size 0", [](auto &t) { t[5].record_size = 0; }},
      {"no data", [](auto &t) { t[2].data = nullptr; }},
      {"size wraps", [](auto &t) { t[0].count = (uint64_t{1} << 58); }},
      {"end wraps", [](auto &t) { t[4].count = ~uint64_t{0} - 100; }},
      {"nine tables", [](auto &t) { t.resize(kTableKinds + 1, t[0]); }},
  };
  for (const auto &[what, patch] : bad) {
    auto t = good;
    patch(t);
    EXPECT_EQ(manifest_size(t.data(), static_cast<uint32_t>(t.size())), 0u) << what;
    EXPECT_EQ(build(t, out.size()), 0u) << what;
  }
}

// One record made impossible, the manifest built by manifest_build (which
// does not look at records): refused as bad_record, while the sample with
// the change undone parses (RoundTrip) and the allowed variants below parse.
TEST(CapsuleRecords, Rejected) {
  using patch = std::function<void(sample &)>;
  const std::vector<std::pair<const char *, patch>> bad = {
      // Each change leaves the rest consistent, so that only the rule named refuses it.
      {"start not page-aligned", [](sample &s) { s.regions[0].start += 0x800, s.regions[0].end += 0x800; }},
      {"end not page-aligned", [](sample &s) { s.regions[0].end += 0x800; }},
      {"start == end", [](sample &s) { s.regions[0].end = s.regions[0].start, s.set_runs(0, {}); }},
      {"start > end",
       [](sample &s) {
         // Its page count wraps: one hole run of that many pages would cover it.
         std::swap(s.regions[0].start, s.regions[0].end);
         s.set_runs(0, {{0, (s.regions[0].end - s.regions[0].start) / kPage, 1, kNoFile, 0}});
       }},
      {"overlapping", [](sample &s) { s.regions[1].start = 0x13000, s.regions[1].end = 0x16000; }},
      {"descending", [](sample &s) { s.regions[1].start = 0x0, s.regions[1].end = 0x3000; }},
      {"kind 0", [](sample &s) { s.regions[0].kind = 0; }},
      {"kind 10", [](sample &s) { s.regions[0].kind = 10; }},
      {"flags", [](sample &s) { s.regions[0].flags = 1u << 2; }},
      {"madv", [](sample &s) { s.regions[0].madv = 1u << 6; }},
      {"prot", [](sample &s) { s.regions[0].prot = 8; }},
      {"region file", [](sample &s) { s.regions[1].file = 2; }},
      {"region name", [](sample &s) { s.regions[0].name = static_cast<uint32_t>(s.strings.size()); }},
      {"first_run skips", [](sample &s) { s.regions[1].first_run = 3, s.regions[1].nruns = 1; }},
      {"runs of two regions",
       [](sample &s) {
         // The library (4 pages now) takes the heap's runs: as many runs
         // taken as there are, each region covered, none out of range, but
         // the library's own runs belong to no region.
         s.regions[1].end = 0x24000, s.regions[1].first_run = 0;
       }},
      {"first_run beyond", [](sample &s) { s.regions[2].first_run = 100; }},
      {"first_run wraps", [](sample &s) { s.regions[2].first_run = ~uint64_t{0}; }},
      {"nruns beyond", [](sample &s) { s.regions[2].nruns = 3; }},
      {"nruns wraps", [](sample &s) { s.regions[2].nruns = ~uint64_t{0}; }},
      {"nruns beyond the last table",
       [](sample &s) {
         // The runs table last in the buffer: the run after it would be
         // outside (AddressSanitizer).
         s.runs_last = true;
         s.regions[2].nruns = 3;
       }},
      {"nruns 0", [](sample &s) { s.regions[2].nruns = 0; }},
      {"a run of no region", [](sample &s) { s.runs.push_back({8, 1, 1, kNoFile, 0}); }},
      {"run page gap", [](sample &s) { s.runs[1].page = 3, s.runs[1].npages = 1; }},
      {"run page overlap", [](sample &s) { s.runs[1].page = 1, s.runs[1].npages = 3; }},
      {"run too long", [](sample &s) { s.runs[1].npages = 3; }},
      {"run too short", [](sample &s) { s.runs[1].npages = 1; }},
      {"run npages 0",
       [](sample &s) {
         s.runs.insert(s.runs.begin() + 1, {2, 0, 5, kNoFile, 0});
         s.regions[0].nruns = 3, s.regions[1].first_run = 3, s.regions[2].first_run = 5;
       }},
      {"run npages wraps", [](sample &s) { s.runs[1].npages = ~uint64_t{0}; }},
      {"run pages wrap to the end",
       [](sample &s) {
         // 2 + (2^64 - 1) wraps to page 1; a last run of 3 pages would end at 4.
         s.set_runs(0, {{0, 2, 2, kNoFile, 0}, {2, ~uint64_t{0}, 1, kNoFile, 0}, {1, 3, 5, kNoFile, 0}});
       }},
      {"runs swapped", [](sample &s) { std::swap(s.runs[0], s.runs[1]); }},
      {"source 0", [](sample &s) { s.runs[1].source = 0; }},
      {"source 7", [](sample &s) { s.runs[1].source = 7; }},
      {"base kNoFile", [](sample &s) { s.runs[1].source = 6, s.runs[1].file = kNoFile; }},
      {"base file beyond", [](sample &s) { s.runs[1].source = 6, s.runs[1].file = 2; }},
      {"base file not the capsule's", [](sample &s) { s.runs[1].source = 6, s.runs[1].file = 0; }},
      {"base offset unaligned", [](sample &s) { s.runs[1].source = 6, s.runs[1].file = 1, s.runs[1].offset = 8; }},
      {"page hashes too few", [](sample &s) { s.hashes.resize(5); }},
      {"page hashes too many", [](sample &s) { s.hashes.resize(7); }},
      {"page hashes for pmem too", [](sample &s) { s.hashes.resize(10); }},
      {"mem offset unaligned", [](sample &s) { s.runs[5].offset += 512; }},
      {"mem beyond mem_size", [](sample &s) { s.runs[5].offset += kPage; }},
      {"mem_size short", [](sample &s) { s.h.mem_size -= 1; }},
      {"mem offset wraps", [](sample &s) { s.runs[0].offset = ~(kAlign - 1); }},
      {"pmem offset unaligned", [](sample &s) { s.runs[4].offset = 8; }},
      {"pmem file", [](sample &s) { s.runs[4].file = 2; }},
      {"pmem kNoFile", [](sample &s) { s.runs[4].file = kNoFile; }},
      {"pmem end wraps", [](sample &s) { s.runs[4].offset = ~(kAlign - 1); }},
      {"chunk offset unaligned", [](sample &s) { s.chunks[0].offset = 100, s.chunks[0].length = 10; }},
      {"pmem chunk offset unaligned", [](sample &s) { s.chunks[1].offset = 100; }},
      {"chunk beyond mem_size", [](sample &s) { s.chunks[0].length += 1; }},
      {"chunk end wraps", [](sample &s) { s.chunks[0].offset = kAlign, s.chunks[0].length = ~uint64_t{0}; }},
      {"chunk file", [](sample &s) { s.chunks[1].file = 2; }},
      {"file path", [](sample &s) { s.files[0].path = static_cast<uint32_t>(s.strings.size()); }},
      {"file identity 0", [](sample &s) { s.files[0].identity = 0; }},
      {"file identity 6", [](sample &s) { s.files[0].identity = 6; }},
      {"file build_id_len", [](sample &s) { s.files[0].build_id_len = 21; }},
      {"strings unterminated", [](sample &s) { s.strings.push_back('x'); }},
      {"file path 0 without strings",
       [](sample &s) {
         s.strings.clear(), s.regions[0].name = 0, s.regions[1].name = 0;
         s.files[0].path = 0, s.files[1].path = 0;
       }},
  };
  for (const auto &[what, change] : bad) {
    sample s;
    change(s);
    image m = s.build();
    EXPECT_EQ(parse(m), parse_error::bad_record) << what << ": " << text(parse(m));
  }
  const std::vector<std::pair<const char *, patch>> fine = {
      {"adjacent regions", [](sample &s) { s.regions[1].start = 0x14000, s.regions[1].end = 0x17000; }},
      {"last string", [](sample &s) { s.regions[0].name = static_cast<uint32_t>(s.strings.size() - 1); }},
      {"chunk to the end of mem", [](sample &s) { s.chunks[0].offset = 5 * kPage, s.chunks[0].length = kPage; }},
      {"any file offset for holes", [](sample &s) { s.runs[3].offset = 12345, s.runs[3].file = 7; }},
      {"base run in a capsule file", [](sample &s) { s.runs[1].source = 6, s.runs[1].file = 1, s.runs[1].offset = 0; }},
      // Mem pages: 2 + 4.
      {"a page hash per mem page", [](sample &s) { s.hashes.resize(6); }},
      {"and per base page", [](sample &s) { s.runs[1].source = 6, s.runs[1].file = 1, s.hashes.resize(8); }},
      {"no runs for no regions", [](sample &s) { s.regions.clear(), s.runs.clear(); }},
      {"name 0 without strings",
       [](sample &s) {
         s.strings.clear(), s.files.clear(), s.regions[1].file = kNoFile, s.regions[0].name = 0;
         s.regions[1].name = 0, s.runs[4].source = 2, s.runs[4].offset = 0, s.chunks.resize(1);
       }},
  };
  for (const auto &[what, change] : fine) {
    sample s;
    change(s);
    image m = s.build();
    EXPECT_EQ(parse(m), parse_error::ok) << what << ": " << text(parse(m));
  }
}

TEST(CapsuleFormat, ErrorTexts) {
  std::vector<std::string> seen;
  for (uint32_t e = 0; e <= static_cast<uint32_t>(parse_error::bad_record); ++e) {
    const std::string t = parse_error_text(static_cast<parse_error>(e));
    EXPECT_FALSE(t.empty());
    for (const auto &s : seen) EXPECT_NE(t, s);
    seen.push_back(t);
  }
  EXPECT_EQ(text(parse_error::header_crc), "the header or the table directory is damaged");
}

}  // namespace
}  // namespace mmtier::capsule
