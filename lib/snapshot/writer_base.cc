// The snapshot writer's incremental part: a page of the process that the
// capsule it builds on (the base) holds unchanged is not written again but
// referred to where the base's data is: the base's own mem, or an earlier
// capsule's mem the base itself refers to.  Those files are hard-linked
// into the new capsule as mem-<id of the capsule that wrote it>, so
// deleting any capsule never takes data another one needs.
//
// A page counts as unchanged when its 128-bit hash equals the one the base
// recorded for the same address.  The walk of the process's memory goes up
// in address order, and so does the lookup's cursor through the base's
// regions and runs: the whole comparison costs one pass over each.
#include "platform/sys.h"
#include "snapshot/capsule_dir.h"
#include "snapshot/writer_state.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

namespace mmtier::detail::writer {
namespace {

bool hashed_source(uint32_t source) {
  return source == static_cast<uint32_t>(cap::run_source::mem) ||
         source == static_cast<uint32_t>(cap::run_source::base);
}

// A data file of the base: its own mem (bf kNoFile), or one it links.
bool data_file(const cap::manifest_view &v, uint32_t bf) {
  return bf == cap::kNoFile || (bf < v.nfiles && v.files[bf].identity == static_cast<uint32_t>(cap::file_identity::capsule) &&
                                cap::base_file_name(cap::string_at(v, v.files[bf].path)));
}

// The base's data files this capsule would refer to (its mem and each it
// links), and whether every chunk of theirs is a whole 2 MiB of the file
// (the used maps count chunks so).
bool base_usable(const writer_args &a, const cap::manifest_view &v) {
  if (v.status->state != static_cast<uint32_t>(cap::status::durable) || v.hdr->page_size != kPage ||
      memcmp(v.hdr->capsule_id, a.base_id, sizeof a.base_id) != 0 || !v.npage_hashes)
    return false;
  uint32_t files = 1;
  for (uint64_t i = 0; i < v.nfiles; ++i) files += data_file(v, static_cast<uint32_t>(i)) ? 1 : 0;
  // This capsule would refer to all of them: at most base_max_files.
  if (files >= a.base_max_files || files >= kMaxBaseFiles) return false;
  for (uint64_t i = 0; i < v.nchunks; ++i) {
    const cap::chunk &c = v.chunks[i];
    if (data_file(v, c.file) && (c.offset % cap::kChunkBytes || c.length > cap::kChunkBytes)) return false;
  }
  return true;
}

// This capsule's entry for data file bf of the base: linked into the
// capsule under its mem-<id> name on first use.  Null on failure (s.err
// set, or the file is not what it must be: then the page is written).
base_file *link_base(state &s, uint32_t bf) {
  base_state &b = s.base;
  for (uint32_t i = 0; i < b.nfiles; ++i)
    if (b.files[i].bf == bf) return b.files[i].file == cap::kNoFile ? nullptr : &b.files[i];
  if (b.nfiles == kMaxBaseFiles) return nullptr;
  // Until it is linked, a failure is remembered: its pages are written,
  // and the link is not tried again for each of them.
  b.files[b.nfiles] = {bf, cap::kNoFile, nullptr, 0};
  ++b.nfiles;
  char name[40];
  const char *from = cap::kMem;
  if (bf == cap::kNoFile) {
    cap::base_file_name_of(b.v.hdr->capsule_id, name);
  } else {
    const char *n = cap::string_at(b.v, b.v.files[bf].path);
    memcpy(name, n, strlen(n) + 1);
    from = name;
  }
  // A regular file of this user's: never a symbolic link (linkat would
  // link the link), never another user's file.
  struct stat st;
  if (sys::raw(SYS_newfstatat, s.a->base_dirfd, reinterpret_cast<long>(from), reinterpret_cast<long>(&st),
               AT_SYMLINK_NOFOLLOW) != 0 ||
      !S_ISREG(st.st_mode) || st.st_uid != static_cast<uid_t>(sys::raw(SYS_geteuid)))
    return nullptr;
  const long r = sys::raw(SYS_linkat, s.a->base_dirfd, reinterpret_cast<long>(from), s.a->pend->dirfd,
                          reinterpret_cast<long>(name), 0);
  if (r < 0) return nullptr;  // another file system (EXDEV), a full directory: written instead
  cap::file f;
  memset(&f, 0, sizeof f);
  f.dev = st.st_dev;
  f.ino = st.st_ino;
  f.size = static_cast<uint64_t>(st.st_size);
  f.path = add_string(s, name, static_cast<uint32_t>(strlen(name)));
  f.identity = static_cast<uint32_t>(cap::file_identity::capsule);
  if (s.err || !s.files.push(f)) {
    fail(s, ENOMEM, "out of memory for the file table");
    return nullptr;
  }
  base_file &e = b.files[b.nfiles - 1];
  e.nchunks = (f.size + cap::kChunkBytes - 1) / cap::kChunkBytes;
  // Its used map, a byte per chunk, in the arena's slice for them.
  const uint64_t need = (b.bitmap_bytes + e.nchunks + kPage - 1) & ~(kPage - 1);
  if (need > b.bitmap_cap) {
    if (need > kSlice ||
        sys::failed(sys::mprotect(b.bitmaps + b.bitmap_cap, need - b.bitmap_cap, PROT_READ | PROT_WRITE))) {
      fail(s, ENOMEM, "out of memory for the base's chunk maps");
      return nullptr;
    }
    b.bitmap_cap = need;
  }
  e.used = reinterpret_cast<uint8_t *>(b.bitmaps + b.bitmap_bytes);
  b.bitmap_bytes += e.nchunks;
  e.file = static_cast<uint32_t>(s.files.size - 1);
  return &e;
}

}  // namespace

void open_base(state &s) {
  const writer_args &a = *s.a;
  if (a.base_dirfd < 0) return;
  const long fd = sys::openat(a.base_dirfd, cap::kManifest, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0);
  if (fd < 0) return;
  struct stat st;
  char *slice = nullptr;
  if (sys::raw(SYS_fstat, fd, reinterpret_cast<long>(&st)) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
      static_cast<uint64_t>(st.st_size) <= kSlice && (slice = s.ar->slice()) != nullptr) {
    const long p = sys::mmap(slice, static_cast<uint64_t>(st.st_size), PROT_READ, MAP_PRIVATE | MAP_FIXED,
                             static_cast<int>(fd), 0);
    if (!sys::failed(p) &&
        cap::manifest_parse(slice, static_cast<uint64_t>(st.st_size), &s.base.v) == cap::parse_error::ok &&
        base_usable(a, s.base.v))
      s.base.ok = (s.base.bitmaps = s.ar->slice()) != nullptr;
  }
  sys::close(static_cast<int>(fd));
}

bool base_match(state &s, uintptr_t addr, const cap::page_hash_record &d, uint32_t *file, uint64_t *off) {
  base_state &b = s.base;
  const cap::manifest_view &v = b.v;
  if (addr < b.last) return false;  // the cursor only goes up
  b.last = addr;
  while (b.region < v.nregions && v.regions[b.region].end <= addr) ++b.region;
  if (b.region == v.nregions || v.regions[b.region].start > addr) return false;
  const cap::region &g = v.regions[b.region];
  const uint64_t page = (addr - g.start) / kPage;
  for (; b.run < g.first_run + g.nruns; ++b.run) {
    const cap::run &u = v.runs[b.run];
    if (b.run >= g.first_run && u.page + u.npages > page) break;
    if (hashed_source(u.source)) b.hashed += u.npages;
  }
  if (b.run == g.first_run + g.nruns) return false;
  const cap::run &u = v.runs[b.run];
  if (!hashed_source(u.source)) return false;
  const uint64_t k = b.hashed + (page - u.page);
  if (k >= v.npage_hashes || v.page_hashes[k].lo != d.lo || v.page_hashes[k].hi != d.hi) return false;
  const uint32_t bf = u.source == static_cast<uint32_t>(cap::run_source::mem) ? cap::kNoFile : u.file;
  if (!data_file(v, bf)) return false;
  const uint64_t at = u.offset + (page - u.page) * kPage;
  base_file *e = link_base(s, bf);
  if (!e) return false;
  const uint64_t chunk = at / cap::kChunkBytes;
  if (chunk >= e->nchunks) return false;  // past the file's end: written instead
  *file = e->file;
  *off = at;
  e->used[chunk] = 1;
  return true;
}

bool base_chunks(state &s) {
  base_state &b = s.base;
  if (!b.ok) return true;
  for (uint64_t i = 0; i < b.v.nchunks; ++i) {
    const cap::chunk &c = b.v.chunks[i];
    for (uint32_t k = 0; k < b.nfiles; ++k) {
      const base_file &e = b.files[k];
      if (e.file == cap::kNoFile || e.bf != c.file || c.offset / cap::kChunkBytes >= e.nchunks ||
          !e.used[c.offset / cap::kChunkBytes])
        continue;
      if (!s.chunks.push({e.file, c.crc, c.offset, c.length}))
        return fail(s, ENOMEM, "out of memory for the chunk table");
    }
  }
  return true;
}

}  // namespace mmtier::detail::writer
