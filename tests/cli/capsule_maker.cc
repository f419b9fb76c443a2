// Helper for the tests of `mmtier snapshot`: writes a capsule with known
// contents through the library's own code (capsule_dir's begin/publish,
// capsule_format's manifest_build), optionally damaged in one chosen way,
// and prints its path.
//
// The capsule is a small process: a 1 GiB reservation (a hole), a tier
// unit of MEM_MIB MiB in mem followed by 1 MiB of zero pages, 64 KiB of
// anonymous memory, a library mapping (6 pages of the file's own content,
// 2 copied to mem), a stack (24 untouched pages, 8 in mem) and the vDSO.
// mem holds those in that order, with a CRC32C per 2 MiB, plus one chunk of
// the library (an "other" chunk, which --verify does not read).
//
// usage: cli_capsule_maker --dir DIR --name NAME [--status S] [--line TEXT]
//          [--error ERRNO] [--pid N] [--comm C] [--threads N] [--created-ns N]
//          [--mem-mib N] [--damage WHAT] [--reverse-chunks] [--tmp]
//          [--tmp-pid N] [--hold] [--mode OCTAL] [--owner UID]
//   --status   incomplete, complete, durable (default) or failed
//   --damage   status-crc, header-crc, bad-magic, table-crc, truncated:
//              the manifest; mem-byte (one byte of mem's second chunk, at
//              2 MiB + 5), mem-bytes (that one and one of the third chunk),
//              mem-short (mem one page short), no-mem, extra-file (a
//              notes.txt besides the capsule's files)
//   --reverse-chunks  the chunks table in descending offsets
//   --tmp      leave it as begin() made it, under its temporary name
//              (empty manifest and mem); --tmp-pid N names pid N in it
//   --hold     with --tmp: call itself mmtier-snapwr and keep the manifest
//              open until stdin closes, as a writer whose process is gone
#include "snapshot/capsule_dir.h"
#include "snapshot/capsule_format.h"
#include "support/crc32c.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace cap = mmtier::capsule;

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMiB = 1 << 20;

struct options {
  std::string dir, name, line, comm = "testprog", damage;
  cap::status state = cap::status::durable;
  int32_t error = 0, pid = 4242;
  uint32_t threads = 3;
  uint64_t created_ns = 1700000000123456789ull, mem_mib = 4;
  bool tmp = false, hold = false, reverse_chunks = false;
  long tmp_pid = 0, owner = -1;
  unsigned mode = 0;
};

[[noreturn]] void die(const char *what, int err = 0) {
  fprintf(stderr, "cli_capsule_maker: %s%s%s\n", what, err ? ": " : "", err ? strerror(err) : "");
  exit(1);
}

cap::status parse_status(const std::string &s) {
  if (s == "incomplete") return cap::status::incomplete;
  if (s == "complete") return cap::status::complete;
  if (s == "durable") return cap::status::durable;
  if (s == "failed") return cap::status::failed;
  die("unknown status");
}

options parse(int argc, char **argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die("an option needs a value");
      return argv[++i];
    };
    if (a == "--dir") o.dir = value();
    else if (a == "--name") o.name = value();
    else if (a == "--status") o.state = parse_status(value());
    else if (a == "--line") o.line = value();
    else if (a == "--error") o.error = std::stoi(value());
    else if (a == "--pid") o.pid = std::stoi(value());
    else if (a == "--comm") o.comm = value();
    else if (a == "--threads") o.threads = static_cast<uint32_t>(std::stoul(value()));
    else if (a == "--created-ns") o.created_ns = std::stoull(value());
    else if (a == "--mem-mib") o.mem_mib = std::stoull(value());
    else if (a == "--damage") o.damage = value();
    else if (a == "--reverse-chunks") o.reverse_chunks = true;
    else if (a == "--tmp") o.tmp = true;
    else if (a == "--tmp-pid") o.tmp_pid = std::stol(value());
    else if (a == "--hold") o.hold = true;
    else if (a == "--mode") o.mode = static_cast<unsigned>(std::stoul(value(), nullptr, 8));
    else if (a == "--owner") o.owner = std::stol(value());
    else die(("unknown argument " + a).c_str());
  }
  if (o.dir.empty() || o.name.empty()) die("--dir and --name are required");
  return o;
}

struct tables {
  cap::header h{};
  std::vector<cap::region> regions;
  std::vector<cap::run> runs;
  std::vector<cap::chunk> chunks;
  std::vector<cap::file> files;
  std::vector<char> strings;
  std::vector<unsigned char> mem;

  uint32_t add_string(const char *s) {
    const auto off = static_cast<uint32_t>(strings.size());
    strings.insert(strings.end(), s, s + strlen(s) + 1);
    return off;
  }
  // A region from start, its runs given as {npages, source}; mem runs take
  // their bytes from the end of mem.
  void add_region(uint64_t start, cap::region_kind kind, uint32_t prot, uint32_t flags, uint32_t file, uint32_t name,
                  std::initializer_list<std::pair<uint64_t, cap::run_source>> parts) {
    cap::region r{};
    r.start = start;
    r.prot = prot;
    r.flags = flags;
    r.kind = static_cast<uint32_t>(kind);
    r.file = file;
    r.name = name;
    r.first_run = runs.size();
    uint64_t page = 0;
    for (const auto &[n, src] : parts) {
      cap::run u{page, n, static_cast<uint32_t>(src), cap::kNoFile, 0};
      if (src == cap::run_source::mem) {
        u.offset = mem.size();
        for (uint64_t i = 0; i < n * kPage; ++i) mem.push_back(static_cast<unsigned char>((mem.size() * 7 + 3) >> 3));
      }
      runs.push_back(u);
      page += n;
    }
    r.nruns = runs.size() - r.first_run;
    r.end = start + page * kPage;
    regions.push_back(r);
  }
};

void fill(tables &t, const options &o) {
  cap::header &h = t.h;
  h.created_ns = o.created_ns;
  for (int i = 0; i < 16; ++i) h.capsule_id[i] = static_cast<uint8_t>(0xa0 + i);
  snprintf(h.mmtier_version, sizeof h.mmtier_version, "0.1.0");
  h.pid = o.pid;
  h.nthreads = o.threads;
  h.starttime = 123456;
  snprintf(h.boot_id, sizeof h.boot_id, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
  h.uid = h.euid = 1000;
  h.gid = h.egid = 100;
  snprintf(h.comm, sizeof h.comm, "%s", o.comm.c_str());
  snprintf(h.kernel_release, sizeof h.kernel_release, "6.1.0-test-amd64");
  h.page_size = kPage;
  h.paused_ns = 1234567;
  t.add_string("");
  const uint32_t lib = t.add_string("/usr/lib/libexample.so.1");
  const uint32_t stack = t.add_string("[stack]");
  const uint32_t vdso = t.add_string("[vdso]");
  cap::file f{};
  f.path = lib;
  f.identity = static_cast<uint32_t>(cap::file_identity::build_id);
  f.build_id_len = 20;
  t.files.push_back(f);
  using src = cap::run_source;
  using kind = cap::region_kind;
  t.add_region(0x100000000, kind::reserve, 0, 0, cap::kNoFile, 0, {{(1ull << 30) / kPage, src::hole}});
  t.add_region(0x200000000, kind::unit, 3, 0, cap::kNoFile, 0,
               {{o.mem_mib * kMiB / kPage, src::mem}, {kMiB / kPage, src::zero}});
  t.add_region(0x300000000, kind::anon, 3, 0, cap::kNoFile, 0, {{16, src::mem}});
  t.add_region(0x400000000, kind::file, 5, 0, 0, lib, {{6, src::file}, {2, src::mem}});
  t.add_region(0x7ff000000000, kind::stack, 3, cap::kRegionGrowsDown, cap::kNoFile, stack, {{24, src::hole}, {8, src::mem}});
  t.add_region(0x7ff100000000, kind::vdso, 5, 0, cap::kNoFile, vdso, {{2, src::hole}});
  h.mem_size = t.mem.size();
  for (uint64_t off = 0; off < t.mem.size(); off += cap::kChunkBytes) {
    const uint64_t len = std::min<uint64_t>(cap::kChunkBytes, t.mem.size() - off);
    t.chunks.push_back({cap::kNoFile, mmtier::detail::crc32c(0, t.mem.data() + off, len), off, len});
  }
  t.chunks.push_back({0, 0x12345678, 0, kPage});  // of the library
  if (o.reverse_chunks) std::reverse(t.chunks.begin(), t.chunks.end());
}

std::vector<uint64_t> build(const tables &t, const options &o, uint64_t *len) {
  const cap::table_input in[] = {
      {cap::table_kind::regions, sizeof(cap::region), t.regions.size(), t.regions.data()},
      {cap::table_kind::runs, sizeof(cap::run), t.runs.size(), t.runs.data()},
      {cap::table_kind::chunks, sizeof(cap::chunk), t.chunks.size(), t.chunks.data()},
      {cap::table_kind::files, sizeof(cap::file), t.files.size(), t.files.data()},
      {cap::table_kind::strings, 1, t.strings.size(), t.strings.data()},
  };
  const uint64_t size = cap::manifest_size(in, 5);
  std::vector<uint64_t> buf(size / 8 + 1);
  *len = cap::manifest_build(t.h, in, 5, o.state, o.error, o.line.c_str(), buf.data(), size);
  if (!*len) die("manifest_build refused the tables");
  auto *b = reinterpret_cast<unsigned char *>(buf.data());
  const auto *dir = reinterpret_cast<const cap::table_entry *>(b + cap::kHeaderOffset + sizeof(cap::header));
  if (o.damage == "status-crc") b[offsetof(cap::status_block, line) + 100] ^= 1;
  else if (o.damage == "header-crc") b[cap::kHeaderOffset + offsetof(cap::header, comm)] ^= 1;
  else if (o.damage == "bad-magic") b[0] = 'X';
  else if (o.damage == "table-crc") b[dir[0].offset + 3] ^= 0x40;
  else if (o.damage == "truncated") *len -= 100;
  return buf;
}

void write_all(int fd, const void *p, uint64_t n) {
  if (pwrite(fd, p, n, 0) != static_cast<ssize_t>(n)) die("write", errno);
}

// Writes mem and the manifest, damaged as asked.
void write_capsule(const cap::pending &p, const options &o) {
  tables t;
  fill(t, o);
  uint64_t len;
  std::vector<uint64_t> manifest = build(t, o, &len);
  if (o.damage == "mem-byte" || o.damage == "mem-bytes") t.mem.at(2 * kMiB + 5) ^= 0x10;
  if (o.damage == "mem-bytes") t.mem.at(4 * kMiB + 5) ^= 0x10;
  write_all(p.mem_fd, t.mem.data(), t.mem.size());
  if (o.damage == "mem-short" && ftruncate(p.mem_fd, static_cast<off_t>(t.mem.size() - kPage)) != 0) die("ftruncate", errno);
  if (o.damage == "no-mem" && unlinkat(p.dirfd, cap::kMem, 0) != 0) die("unlink mem", errno);
  write_all(p.manifest_fd, manifest.data(), len);
  if (o.damage == "extra-file") {
    const int fd = openat(p.dirfd, "notes.txt", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, "mine\n", 5) != 5) die("notes.txt", errno);
    close(fd);
  }
}

}  // namespace

int main(int argc, char **argv) {
  const options o = parse(argc, argv);
  if (int r = cap::make_dirs(o.dir.c_str()); r < 0) die("make_dirs", -r);
  const int parent = open(o.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (parent < 0) die("open the directory", errno);
  cap::pending p;
  if (int r = cap::begin(parent, o.name.c_str(), &p); r < 0) die("begin", -r);
  std::string entry;
  if (o.tmp) {
    entry = p.tmp_name;
    if (o.tmp_pid) {
      char name[cap::kTmpNameMax];
      snprintf(name, sizeof name, ".%s%s%s%ld-0123456789abcdef", o.name.c_str(), cap::kSuffix, cap::kTmpInfix, o.tmp_pid);
      if (renameat(parent, p.tmp_name, parent, name) != 0) die("rename", errno);
      entry = name;
    }
  } else {
    write_capsule(p, o);
    if (int r = cap::publish(parent, &p, false); r < 0) die("publish", -r);
    entry = o.name + cap::kSuffix;
  }
  const std::string path = o.dir + "/" + entry;
  if (o.mode && chmod(path.c_str(), o.mode) != 0) die("chmod", errno);
  if (o.owner >= 0) {
    const auto uid = static_cast<uid_t>(o.owner);
    for (const char *f : {cap::kManifest, cap::kMem})
      if (fchownat(p.dirfd, f, uid, uid, AT_SYMLINK_NOFOLLOW) != 0 && errno != ENOENT) die("chown", errno);
    if (chown(path.c_str(), uid, uid) != 0) die("chown", errno);
  }
  if (o.hold) prctl(PR_SET_NAME, "mmtier-snapwr");
  printf("%s\n", path.c_str());
  fflush(stdout);
  if (o.hold) {
    char c;
    while (read(0, &c, 1) > 0) {
    }
  }
  cap::release(&p);
  return 0;
}
