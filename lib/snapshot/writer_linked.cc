// The snapshot writer's ZeroIO part (snapshot/zeroio.h): a PMem unit
// mapped on a file the capsule links is saved as references into it.
#include "platform/pagemap.h"
#include "platform/sys.h"
#include "snapshot/writer_state.h"
#include "support/crc32c.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

namespace mmtier::detail::writer {
namespace {

// "pmem-<k>.tier" into name[24]; its length.
size_t link_name(uint32_t k, char *name) {
  memcpy(name, "pmem-", 5);
  size_t n = 5;
  char d[12];
  int nd = 0;
  for (uint32_t v = k; v || !nd; v /= 10) d[nd++] = static_cast<char>('0' + v % 10);
  while (nd) name[n++] = d[--nd];
  memcpy(name + n, ".tier", 6);
  return n + 5;
}

// The files table's entry of link i (added on first use).
uint32_t link_file_index(state &s, int i) {
  if (s.link_file[i] != cap::kNoFile) return s.link_file[i];
  char name[24];
  const size_t n = link_name(s.a->links[i].k, name);
  cap::file f;
  memset(&f, 0, sizeof f);
  f.dev = s.a->links[i].dev;
  f.ino = s.a->links[i].ino;
  f.path = add_string(s, name, static_cast<uint32_t>(n));
  f.identity = static_cast<uint32_t>(cap::file_identity::capsule);
  struct stat st;
  if (sys::raw(SYS_fstat, s.link_fd[i], reinterpret_cast<long>(&st)) == 0) f.size = static_cast<uint64_t>(st.st_size);
  if (!s.files.push(f)) {
    fail(s, ENOMEM, "out of memory for the file table");
    return cap::kNoFile;
  }
  s.link_file[i] = static_cast<uint32_t>(s.files.size - 1);
  return s.link_file[i];
}

// Where the file has data (SEEK_DATA/SEEK_HOLE), looked up a stretch at a
// time: whether off is in data, and the stretch [lo, hi) it lies in.
struct data_map {
  int fd;
  uint64_t lo = 1, hi = 0;  // empty
  bool data = false;
  bool at(uint64_t off) {
    if (off >= lo && off < hi) return data;
    const long d = sys::raw(SYS_lseek, fd, static_cast<long>(off), SEEK_DATA);
    if (d < 0 || static_cast<uint64_t>(d) > off) {
      // A hole up to d (or to the end).
      lo = off;
      hi = d < 0 ? ~uint64_t{0} : static_cast<uint64_t>(d);
      return data = false;
    }
    const long h = sys::raw(SYS_lseek, fd, static_cast<long>(off), SEEK_HOLE);
    lo = off;
    hi = h < 0 ? off + kPage : static_cast<uint64_t>(h);
    return data = true;
  }
};

// Whether the page at p (a present page that is not the page cache's: a
// private copy, or on DAX the file's own page mapped directly) holds what
// the file holds at off.
bool same_as_file(state &s, int fd, uint64_t off, const char *p) {
  char *buf = s.buf->bounce;
  if (sys::pread(fd, buf, kPage, static_cast<off_t>(off)) != static_cast<long>(kPage)) return false;
  copy_image(s, buf + kPage, p, kPage);
  return memcmp(buf, buf + kPage, kPage) == 0;
}

// CRCs of [off, off + len) of link i, a chunk per 2 MiB of the file.
bool pmem_chunks(state &s, int i, uint32_t file, uint64_t off, uint64_t len) {
  char *buf = s.buf->bounce;
  constexpr uint64_t kBounce = sizeof s.buf->bounce;
  while (len) {
    uint64_t n = cap::kChunkBytes - off % cap::kChunkBytes;
    if (n > len) n = len;
    uint32_t crc = 0;
    for (uint64_t done = 0; done < n;) {
      const uint64_t want = n - done < kBounce ? n - done : kBounce;
      const long r = sys::pread(s.link_fd[i], buf, want, static_cast<off_t>(off + done));
      if (r <= 0) return fail(s, r ? static_cast<int>(-r) : EIO, "cannot read the linked PMem file");
      crc = crc32c(crc, buf, static_cast<size_t>(r));
      done += static_cast<uint64_t>(r);
    }
    if (!s.chunks.push({file, crc, off, n})) return fail(s, ENOMEM, "out of memory for the chunk table");
    off += n;
    len -= n;
  }
  return true;
}

}  // namespace

// The link of the file e maps, or -1.
int link_of(const state &s, const sys::maps_entry &e) {
  const uint64_t dev = (uint64_t{e.dev_major} << 32) | e.dev_minor;
  for (uint32_t i = 0; i < s.a->nlinks; ++i)
    if (s.link_fd[i] >= 0 && s.a->links[i].dev == dev && s.a->links[i].ino == e.inode) return static_cast<int>(i);
  return -1;
}

// Opens the links (-1 for one that cannot be read: its units are copied).
void open_links(state &s) {
  for (uint32_t i = 0; i < kMaxPmemLinks; ++i) {
    s.link_fd[i] = -1;
    s.link_file[i] = cap::kNoFile;
  }
  for (uint32_t i = 0; i < s.a->nlinks; ++i) {
    char name[24];
    link_name(s.a->links[i].k, name);
    const long fd = sys::openat(s.a->pend->dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0);
    s.link_fd[i] = fd < 0 ? -1 : static_cast<int>(fd);
  }
}

// Removes the links no region refers to (and any the stop dropped).
void unlink_unused(state &s) {
  for (uint32_t k = 0; k < kMaxPmemLinks; ++k) {
    bool used = false;
    for (uint32_t i = 0; i < s.a->nlinks && !used; ++i) used = s.a->links[i].k == k && s.link_file[i] != cap::kNoFile;
    if (used) continue;
    char name[24];
    link_name(k, name);
    sys::unlinkat(s.a->pend->dirfd, name, 0);
  }
}

// A unit mapped on link i: each page the file's (a pmem run at its file
// offset, or a hole where the file has none) or a private copy made since
// an earlier freeze (mem).
bool save_linked_region(state &s, cap::region &r, int i) {
  r.file = link_file_index(s, i);
  if (s.err) return false;
  const uint64_t pages = (r.end - r.start) / kPage;
  r.first_run = s.runs.size;
  r.nruns = 0;
  const bool unreadable = !(r.prot & PROT_READ);
  if (unreadable && sys::failed(sys::mprotect(reinterpret_cast<void *>(r.start), r.end - r.start, PROT_READ)))
    return fail(s, EACCES, "cannot read a protected mapping", r.start);
  data_map dm{s.link_fd[i]};
  uint64_t pm[kPagemapBatch];
  bool ok = true;
  for (uint64_t p = 0; ok && p < pages; p += kPagemapBatch) {
    const uint64_t n = pages - p < kPagemapBatch ? pages - p : kPagemapBatch;
    const uintptr_t at = r.start + p * kPage;
    if (!sys::pagemap_entries(s.pagemap_fd, at, n, pm)) {
      ok = fail(s, EIO, "cannot read pagemap", at);
      break;
    }
    for (uint64_t j = 0; ok && j < n; ++j) {
      const uint64_t off = r.file_offset + (p + j) * kPage;
      const char *page = reinterpret_cast<const char *>(at + j * kPage);
      const bool copy = (pm[j] & sys::kPagemapSwapped) ||
                        ((pm[j] & sys::kPagemapPresent) && !(pm[j] & sys::kPagemapFile) &&
                         !same_as_file(s, s.link_fd[i], off, page));
      page_src src = copy ? page_src::mem : dm.at(off) ? page_src::pmem : page_src::hole;
      if (src == page_src::mem)
        ok = save_data(s, r, p + j, 1, at + j * kPage, false);
      else
        ok = add_run(s, r, p + j, 1, src, src == page_src::pmem ? off : 0);
      if (ok && src == page_src::pmem) s.pmem_linked += kPage;
    }
  }
  if (unreadable) sys::mprotect(reinterpret_cast<void *>(r.start), r.end - r.start, static_cast<int>(r.prot));
  if (!ok) return false;
  // The CRCs of its pmem runs.
  for (uint64_t k = r.first_run; k < s.runs.size; ++k) {
    cap::run &run = s.runs.data[k];
    if (run.source != static_cast<uint32_t>(cap::run_source::pmem)) continue;
    run.file = r.file;
    if (!pmem_chunks(s, i, r.file, run.offset, run.npages * kPage)) return false;
  }
  return true;
}

}  // namespace mmtier::detail::writer
