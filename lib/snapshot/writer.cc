// The snapshot writer child (see writer.h).  It walks its own maps: the
// layout of the process at the stop.  For each page, pagemap tells whether
// it holds data of the process's own (an anonymous page, a private copy of
// a file page, a shared page) or is a file's unmodified page or was never
// touched; data goes to mem in address order, each stretch of the same
// source one run, with a CRC32C per 2 MiB of mem.
#include "snapshot/writer.h"

#include "snapshot/writer_state.h"
#include "snapshot/file_identity.h"

#include "platform/fd_guard.h"
#include "platform/pagemap.h"
#include "platform/proc_maps.h"
#include "platform/sys.h"
#include "support/crc32c.h"
#include "support/page_hash.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/syscall.h>
#include <ucontext.h>

#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <new>

namespace mmtier::detail {
namespace writer {

bool fail(state &s, int err, const char *what, uintptr_t at) {
  if (s.err) return false;
  s.err = err;
  // "what (error N) at 0x..."
  size_t n = 0;
  for (; what[n] && n + 1 < sizeof s.line; ++n) s.line[n] = what[n];
  char tail[64];
  size_t t = 0;
  const char *e = " (errno ";
  while (*e) tail[t++] = *e++;
  char d[12];
  int nd = 0;
  for (unsigned v = static_cast<unsigned>(err); v || !nd; v /= 10) d[nd++] = static_cast<char>('0' + v % 10);
  while (nd) tail[t++] = d[--nd];
  tail[t++] = ')';
  if (at) {
    const char *x = " at 0x";
    while (*x) tail[t++] = *x++;
    int shift = 60;
    while (shift > 0 && !((at >> shift) & 0xf)) shift -= 4;
    for (; shift >= 0; shift -= 4) tail[t++] = "0123456789abcdef"[(at >> shift) & 0xf];
  }
  for (size_t i = 0; i < t && n + 1 < sizeof s.line; ++i) s.line[n++] = tail[i];
  s.line[n] = 0;
  return false;
}

uint32_t add_string(state &s, const char *p, uint32_t len) {
  if (s.strings.size == 0 && !s.strings.push('\0')) return 0;  // offset 0 is ""
  const uint32_t off = static_cast<uint32_t>(s.strings.size);
  for (uint32_t i = 0; i < len; ++i)
    if (!s.strings.push(p[i])) return 0;
  return s.strings.push('\0') ? off : 0;
}

bool name_is(const sys::maps_entry &e, const char *lit) {
  const size_t n = strlen(lit);
  return e.name_len == n && memcmp(e.name, lit, n) == 0;
}


// Reads of the image: any memory of the process, some of which is not the
// program's to read under a sanitizer (AddressSanitizer's own shadow), so
// uninstrumented and never a library call the sanitizer intercepts.
// Through /proc/self/mem where it can: the kernel reads the pages without
// mapping them into the writer, where each first touch of a page of the
// image would be a fault (measured on this VM: 7.3 GB/s against 0.9 GB/s
// for 4 KiB pages a fork child reads).
__attribute__((no_sanitize("address", "hwaddress"))) void copy_image(const state &s, char *dst, const char *src,
                                                                     uint64_t n) {
  while (n && s.self_mem_fd >= 0) {
    const long r = sys::pread(s.self_mem_fd, dst, n, static_cast<off_t>(reinterpret_cast<uintptr_t>(src)));
    if (r == -EINTR) continue;
    if (r <= 0) break;
    dst += r;
    src += r;
    n -= static_cast<uint64_t>(r);
  }
  if (!n) return;
#if defined(__x86_64__)
  asm volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
#else
  for (uint64_t i = 0; i < n; ++i) reinterpret_cast<volatile char *>(dst)[i] = src[i];
#endif
}

// Writes buf[0, len) (the writer's own memory: image pages copied out, so
// that a shared mapping changing under it cannot make the CRC differ from
// what was written) to mem at mem_off, closing a chunk (with its CRC) at
// every kChunkBytes boundary of mem.
bool put_mem(state &s, const char *buf, uint64_t len, uintptr_t at) {
  while (len) {
    uint64_t n = cap::kChunkBytes - s.mem_off % cap::kChunkBytes;
    if (n > len) n = len;
    for (uint64_t done = 0; done < n;) {
      long w = sys::pwrite(s.a->mem_fd, buf + done, n - done, static_cast<off_t>(s.mem_off + done));
      if (w == -EINTR) continue;
      if (w <= 0) return fail(s, w ? static_cast<int>(-w) : ENOSPC, "cannot write the capsule's memory", at);
      done += static_cast<uint64_t>(w);
    }
    s.chunk_crc = crc32c(s.chunk_crc, buf, n);
    s.mem_off += n;
    buf += n;
    len -= n;
    at += n;
    if (s.mem_off % cap::kChunkBytes == 0) {
      if (!s.chunks.push({cap::kNoFile, s.chunk_crc, s.mem_off - cap::kChunkBytes, cap::kChunkBytes}))
        return fail(s, ENOMEM, "out of memory for the chunk table");
      s.chunk_crc = 0;
    }
  }
  return true;
}

// The pages are read a bounce buffer at a time; within it, each stretch of
// changed pages is one write and one mem run, each stretch of unchanged
// ones base runs.
bool all_zero(const char *p) {
  const uint64_t *w = reinterpret_cast<const uint64_t *>(p);
  uint64_t any = 0;
  for (size_t i = 0; i < kPage / 8; ++i) any |= w[i];
  return !any;
}

bool save_data(state &s, cap::region &r, uint64_t page, uint64_t npages, uintptr_t addr, bool zero_holes,
               uintptr_t src) {
  constexpr uint64_t kBounce = sizeof s.buf->bounce;
  char *buf = s.buf->bounce;
  while (npages) {
    const uint64_t n = npages < kBounce / kPage ? npages : kBounce / kPage;
    copy_image(s, buf, reinterpret_cast<const char *>(src ? src : addr), n * kPage);
    uint64_t changed = 0;  // pages at the end of the block not written yet
    for (uint64_t i = 0; i <= n; ++i) {
      uint32_t file = cap::kNoFile;
      uint64_t off = 0;
      bool same = false, hole = false;
      if (i < n && zero_holes && all_zero(buf + i * kPage)) {
        hole = true;
      } else if (i < n) {
        // No hashes where no snapshot will build on this one
        // (MMTIER_SNAPSHOT_CHAIN=1): the hash is a fifth of the writer's work.
        if (s.a->base_max_files > 1) {
          const page_digest d = page_hash(buf + i * kPage, kPage);
          const cap::page_hash_record rec{d.lo, d.hi};
          if (!s.hashes.push(rec)) return fail(s, ENOMEM, "out of memory for the page hashes");
          same = s.base.ok && base_match(s, addr + i * kPage, rec, &file, &off);
          if (s.err) return false;
        }
        if (!same) {
          ++changed;
          continue;
        }
      }
      if (changed) {
        const uint64_t first = i - changed, mem_at = s.mem_off;
        if (!put_mem(s, buf + first * kPage, changed * kPage, addr + first * kPage) ||
            !add_run(s, r, page + first, changed, page_src::mem, mem_at))
          return false;
        changed = 0;
      }
      if (same) {
        if (!add_run(s, r, page + i, 1, page_src::base, off, file)) return false;
        s.shared += kPage;
      }
      if (hole && !add_run(s, r, page + i, 1, page_src::hole, 0)) return false;
    }
    page += n;
    npages -= n;
    addr += n * kPage;
    if (src) src += n * kPage;
  }
  return true;
}

bool close_last_chunk(state &s) {
  const uint64_t tail = s.mem_off % cap::kChunkBytes;
  if (!tail) return true;
  if (!s.chunks.push({cap::kNoFile, s.chunk_crc, s.mem_off - tail, tail}))
    return fail(s, ENOMEM, "out of memory for the chunk table");
  return true;
}

// The files table's index of the mapped file of e (added on first sight),
// identified by device, inode, size and modification time; its content
// identity comes after the walk (identify_files).
uint32_t file_index(state &s, const sys::maps_entry &e) {
  for (uint64_t i = 0; i < s.files.size; ++i)
    if (s.files.data[i].ino == e.inode && s.files.data[i].dev == ((uint64_t{e.dev_major} << 32) | e.dev_minor))
      return static_cast<uint32_t>(i);
  cap::file f;
  memset(&f, 0, sizeof f);
  f.dev = (uint64_t{e.dev_major} << 32) | e.dev_minor;
  f.ino = e.inode;
  f.path = add_string(s, e.name, e.name_len);
  f.identity = static_cast<uint32_t>(cap::file_identity::inode);
  char path[4096];
  const uint32_t n = e.name_len < sizeof path - 1 ? e.name_len : sizeof path - 1;
  memcpy(path, e.name, n);
  path[n] = 0;
  struct stat st;
  if (sys::raw(SYS_newfstatat, AT_FDCWD, reinterpret_cast<long>(path), reinterpret_cast<long>(&st), 0) == 0 &&
      st.st_ino == e.inode) {
    f.size = static_cast<uint64_t>(st.st_size);
    f.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  }
  if (!s.files.push(f)) {
    fail(s, ENOMEM, "out of memory for the file table");
    return cap::kNoFile;
  }
  return static_cast<uint32_t>(s.files.size - 1);
}

// The content identity of every mapped file still at its path (build id or
// ends CRC, snapshot/file_identity.h), so that a restore elsewhere (another
// mount of the same image, another host) can tell the same content from
// another file.  Read through the page cache: a few KiB for an ELF file,
// 128 KiB for another.
void identify_files(state &s) {
  const uint32_t inode = static_cast<uint32_t>(cap::file_identity::inode);
  for (uint64_t i = 0; i < s.files.size; ++i) {
    cap::file &f = s.files.data[i];
    if (f.identity != inode || !f.size) continue;  // a capsule's own file, or not found at its path
    const long fd = sys::openat(AT_FDCWD, s.strings.data + f.path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) continue;
    struct stat st;
    if (sys::raw(SYS_fstat, fd, reinterpret_cast<long>(&st)) == 0 && st.st_ino == f.ino &&
        static_cast<uint64_t>(st.st_size) == f.size) {
      auto read = [fd](void *buf, uint64_t n, uint64_t off) {
        return sys::pread(static_cast<int>(fd), buf, n, static_cast<off_t>(off));
      };
      snapshot::identify(read, f, s.buf->bounce, sizeof s.buf->bounce);
    }
    sys::close(static_cast<int>(fd));
  }
}

// How the region's pages are told apart.
struct region_class {
  bool file_backed;  // a mapping of a file (not anonymous memory)
  bool shared;
  bool unit_file;    // a tier unit on the PMem tier's file: its data is the file's
};

page_src classify(uint64_t pm, const region_class &c) {
  const bool present = pm & sys::kPagemapPresent, swapped = pm & sys::kPagemapSwapped;
  if (!present && !swapped) return page_src::hole;
  if (swapped) return page_src::mem;  // anonymous data in swap: reading brings it back
  if (!(pm & sys::kPagemapFile)) return page_src::mem;  // anonymous, or a private copy of a file page
  // A page of the page cache (or of shared anonymous memory): a private
  // file mapping's unmodified page is the file's; a shared mapping's
  // content is saved.
  return c.file_backed && !c.shared ? page_src::file : page_src::mem;
}

// A run of npages from page; at: its offset in mem (mem) or in the linked
// file (pmem).
bool add_run(state &s, cap::region &r, uint64_t page, uint64_t npages, page_src src, uint64_t at, uint32_t file) {
  const uint32_t source = src == page_src::mem    ? static_cast<uint32_t>(cap::run_source::mem)
                          : src == page_src::file ? static_cast<uint32_t>(cap::run_source::file)
                          : src == page_src::pmem ? static_cast<uint32_t>(cap::run_source::pmem)
                          : src == page_src::base ? static_cast<uint32_t>(cap::run_source::base)
                                                  : static_cast<uint32_t>(cap::run_source::hole);
  const bool offset = src == page_src::mem || src == page_src::pmem || src == page_src::base;
  if (r.nruns) {
    cap::run &last = s.runs.data[s.runs.size - 1];
    if (last.source == source && last.page + last.npages == page && last.file == file &&
        (!offset || last.offset + last.npages * kPage == at)) {
      last.npages += npages;
      return true;
    }
  }
  if (!s.runs.push({page, npages, source, file, offset ? at : 0}))
    return fail(s, ENOMEM, "out of memory for the run table");
  ++r.nruns;
  return true;
}

// The runs of one region, its data written to mem.
bool save_region(state &s, cap::region &r, const region_class &c) {
  const uint64_t pages = (r.end - r.start) / kPage;
  r.first_run = s.runs.size;
  r.nruns = 0;
  const bool unreadable = !(r.prot & PROT_READ);
  bool made_readable = false;
  // A PMem unit's data is in the file, present in this mapping or not (a
  // unit frozen by the stop maps the file anew): every page is read, a
  // zero one is a hole (the unit is restored as anonymous memory).  An
  // inaccessible unit is made readable in this copy first.
  if (c.unit_file) {
    if (unreadable && sys::failed(sys::mprotect(reinterpret_cast<void *>(r.start), r.end - r.start, PROT_READ)))
      return fail(s, EACCES, "cannot read a protected mapping", r.start);
    const bool ok = save_data(s, r, 0, pages, r.start, true);
    if (unreadable) sys::mprotect(reinterpret_cast<void *>(r.start), r.end - r.start, static_cast<int>(r.prot));
    return ok;
  }
  uint64_t pm[kPagemapBatch];
  for (uint64_t p = 0; p < pages; p += kPagemapBatch) {
    const uint64_t n = pages - p < kPagemapBatch ? pages - p : kPagemapBatch;
    const uintptr_t at = r.start + p * kPage;
    if (!sys::pagemap_entries(s.pagemap_fd, at, n, pm)) return fail(s, EIO, "cannot read pagemap", at);
    for (uint64_t i = 0; i < n;) {
      const page_src src = classify(pm[i], c);
      uint64_t j = i + 1;
      while (j < n && classify(pm[j], c) == src) ++j;
      const uintptr_t lo = at + i * kPage;
      if (src == page_src::mem && unreadable && !made_readable) {
        // Data behind PROT_NONE (a guard the program made over its own
        // data): this copy of the image may read it.
        if (sys::failed(sys::mprotect(reinterpret_cast<void *>(r.start), r.end - r.start, PROT_READ)))
          return fail(s, EACCES, "cannot read a protected mapping", r.start);
        made_readable = true;
      }
      if (src == page_src::mem ? !save_data(s, r, p + i, j - i, lo, false) : !add_run(s, r, p + i, j - i, src, 0))
        return false;
      i = j;
    }
  }
  // Back as it was: a readable neighbour would otherwise merge with it, and
  // the maps walk, which resumes by address, would see the region twice.
  if (made_readable) sys::mprotect(reinterpret_cast<void *>(r.start), r.end - r.start, static_cast<int>(r.prot));
  return true;
}

// Shared anonymous memory (/dev/zero, System V shared memory), which the
// restore makes again with its bytes.  The writer is a fork, and a fork
// gets no page table entries of a shared mapping (they fault in on use),
// so pagemap says nothing here: the pages of the shared object in memory
// are what mincore reports, saved (a zero one is a hole, as is every page
// not in memory).  A page swapped out is not in memory: where the host has
// swap, every page is read.
bool save_shared_anon(state &s, cap::region &r) {
  const uint64_t pages = (r.end - r.start) / kPage;
  r.first_run = s.runs.size;
  r.nruns = 0;
  // As it was in the pause (shared_copy.h): zeros where nothing was in memory.
  if (const uintptr_t copy = shared_copy_of(s.a->shared, r.start, r.end))
    return save_data(s, r, 0, pages, r.start, true, copy);
  // Left out of the pause (too many, too large): as it is now, readable
  // in this fork whatever the program's protection.
  if (!(r.prot & PROT_READ) &&
      sys::failed(sys::mprotect(reinterpret_cast<void *>(r.start), r.end - r.start, PROT_READ)))
    return fail(s, EACCES, "cannot read a protected mapping", r.start);
  struct sysinfo si;
  if (sys::raw(SYS_sysinfo, reinterpret_cast<long>(&si)) != 0 || si.totalswap != 0)
    return save_data(s, r, 0, pages, r.start, true);
  unsigned char in[kPagemapBatch];
  for (uint64_t p = 0; p < pages; p += kPagemapBatch) {
    const uint64_t n = pages - p < kPagemapBatch ? pages - p : kPagemapBatch;
    const uintptr_t at = r.start + p * kPage;
    if (sys::raw(SYS_mincore, static_cast<long>(at), static_cast<long>(n * kPage), reinterpret_cast<long>(in)) != 0)
      return fail(s, EIO, "cannot tell which pages of shared memory are in memory", at);
    for (uint64_t i = 0; i < n;) {
      const bool resident = in[i] & 1;
      uint64_t j = i + 1;
      while (j < n && (in[j] & 1) == resident) ++j;
      if (resident ? !save_data(s, r, p + i, j - i, at + i * kPage, true)
                   : !add_run(s, r, p + i, j - i, page_src::hole, 0, cap::kNoFile))
        return false;
      i = j;
    }
  }
  return true;
}

// ---- ZeroIO: units mapped on a linked PMem file
uint32_t kind_of(const writer_args &a, const sys::maps_entry &e) {
  if (a.stats_page && e.lo == a.stats_page) return static_cast<uint32_t>(cap::region_kind::stats);
  if (name_is(e, "[heap]")) return static_cast<uint32_t>(cap::region_kind::brk);
  if (name_is(e, "[stack]")) return static_cast<uint32_t>(cap::region_kind::stack);
  if (name_is(e, "[vdso]")) return static_cast<uint32_t>(cap::region_kind::vdso);
  if (name_is(e, "[vvar]") || name_is(e, "[vvar_vclock]")) return static_cast<uint32_t>(cap::region_kind::vvar);
  if (e.lo >= a.heap_lo && e.hi <= a.heap_hi)
    return static_cast<uint32_t>(e.prot ? cap::region_kind::unit : cap::region_kind::reserve);
  if (e.inode) return static_cast<uint32_t>(cap::region_kind::file);
  return static_cast<uint32_t>(e.prot ? cap::region_kind::anon : cap::region_kind::reserve);
}

// Whether the mapping starting at lo holds no page at all (smaps: no
// resident and no swapped kilobyte), read for large mappings only, which
// pagemap would take long to list: the heap's reservation, a runtime's
// reserved address space.
bool smaps_empty(state &s, uintptr_t lo) {
  long fd = sys::openat(AT_FDCWD, "/proc/thread-self/smaps", O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return false;
  char want[24];
  int n = 0;
  for (int shift = 60; shift >= 0; shift -= 4) {
    const unsigned d = (lo >> shift) & 0xf;
    if (n || d || shift == 0) want[n++] = "0123456789abcdef"[d];
  }
  want[n++] = '-';
  char *buf = s.buf->smaps;
  constexpr long kBuf = sizeof s.buf->smaps;
  bool in = false, empty = false, done = false;
  long have = 0;
  while (!done) {
    const long r = sys::read(static_cast<int>(fd), buf + have, static_cast<size_t>(kBuf - 1 - have));
    if (r <= 0) break;
    have += r;
    buf[have] = 0;
    char *line = buf;
    for (char *nl; (nl = strchr(line, '\n')); line = nl + 1) {
      *nl = 0;
      const bool header = (line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f');
      if (header && strchr(line, '-') && strchr(line, ' ') > strchr(line, '-')) {
        if (in) {
          done = true;
          break;
        }
        in = strncmp(line, want, static_cast<size_t>(n)) == 0;
        if (in) empty = true;
      } else if (in && (!strncmp(line, "Rss:", 4) || !strncmp(line, "Swap:", 5))) {
        const char *v = line + 5;
        while (*v == ' ') ++v;
        if (*v != '0') empty = false;
      }
    }
    have = static_cast<long>(buf + have - line);
    memmove(buf, line, static_cast<size_t>(have));
  }
  sys::close(static_cast<int>(fd));
  return in || done ? empty : false;
}

constexpr uint64_t kLargeRegion = uint64_t{256} << 20;

// The advice of the mappings as they were at the stop: this fork's own (a
// fork child keeps each mapping's advice), read outside the pause.  The
// table read before the stop misses a mapping made, grown or advised since
// (restored without its advice, in a mapping of its own).  It still gives
// mlock (not inherited) and MADV_WIPEONFORK (what the pause copied), and
// everything when smaps cannot be read.  Into the writer's own memory: a
// write to a static of the library would change the image it saves.
void read_fork_advice(state &s) {
  char why[160];
  s.fork_advice = read_vm_advice(&s.buf->advice, why, sizeof why, s.buf->smaps) == 0 ? &s.buf->advice : nullptr;
}

uint32_t advice_of(const state &s, uintptr_t lo, uintptr_t hi) {
  const uint32_t before = vm_advice_of(*s.a->advice, lo, hi);
  if (!s.fork_advice) return before;
  constexpr uint32_t kEarlier = cap::kMadvLocked | cap::kMadvWipeOnFork;
  return (vm_advice_of(*s.fork_advice, lo, hi) & ~kEarlier) | (before & kEarlier);
}

// One mapping (or the part of one outside the snapshot's own memory): its
// region and runs.
bool save_entry(state &s, const sys::maps_entry &e) {
  cap::region r;
  memset(&r, 0, sizeof r);
  r.start = e.lo;
  r.end = e.hi;
  r.prot = static_cast<uint32_t>(e.prot);
  r.flags = e.shared ? uint32_t{cap::kRegionShared} : 0u;
  r.kind = kind_of(*s.a, e);
  r.file = cap::kNoFile;
  r.file_offset = e.offset;
  if (e.name_len) r.name = add_string(s, e.name, e.name_len);
  r.madv = advice_of(s, e.lo, e.hi);
  // Zero in this fork: saved from its copy in the pause.
  const bool wiped = r.madv & cap::kMadvWipeOnFork;
  const bool kernel = r.kind == static_cast<uint32_t>(cap::region_kind::vdso) ||
                      r.kind == static_cast<uint32_t>(cap::region_kind::vvar);
  const bool file_backed = e.inode != 0 && e.name_len && e.name[0] == '/';
  // A PMem unit's data is its file's, mapped or not (the stop's freeze
  // maps the file anew: nothing resident yet): never skipped as empty.
  const bool unit_file = file_backed && e.lo >= s.a->heap_lo && e.hi <= s.a->heap_hi;
  // On a file the capsule links (ZeroIO): referred to, not copied.
  const int link = unit_file && !e.shared ? link_of(s, e) : -1;
  if (file_backed && link < 0) r.file = file_index(s, e);
  if (s.err) return false;
  // (The fork's smaps show no page of a shared mapping: never empty.)
  const bool shm = shared_anonymous(e);
  const bool nothing =
      kernel || (!unit_file && !shm && !wiped && r.end - r.start > kLargeRegion && smaps_empty(s, r.start));
  if (nothing) {
    // The kernel's own pages (the restore maps those of its kernel), or a
    // large mapping with no page (the heap's free address space).
    r.first_run = s.runs.size;
    r.nruns = 1;
    if (!s.runs.push({0, (r.end - r.start) / kPage, static_cast<uint32_t>(cap::run_source::hole), cap::kNoFile, 0}))
      return fail(s, ENOMEM, "out of memory for the run table");
  } else {
    if (wiped && !shm) {
      const uintptr_t copy = shared_copy_of(s.a->shared, r.start, r.end);
      if (!copy) return fail(s, ESTALE, "memory marked MADV_WIPEONFORK was not copied in the pause", r.start);
      r.first_run = s.runs.size;
      r.nruns = 0;
      if (!save_data(s, r, 0, (r.end - r.start) / kPage, r.start, true, copy)) return false;
    } else if (shm ? !save_shared_anon(s, r)
                   : link >= 0 ? !save_linked_region(s, r, link)
                               : !save_region(s, r, {file_backed, e.shared, unit_file})) {
      return false;
    }
    if (r.kind == static_cast<uint32_t>(cap::region_kind::reserve) &&
        (r.nruns != 1 || s.runs.data[r.first_run].source != static_cast<uint32_t>(cap::run_source::hole))) {
      // Inaccessible, but holding data (the program protected its own
      // pages, PMem ones included).
      r.kind = static_cast<uint32_t>(e.lo >= s.a->heap_lo && e.hi <= s.a->heap_hi ? cap::region_kind::unit
                                                                                 : cap::region_kind::anon);
    }
  }
  if (!s.regions.push(r)) return fail(s, ENOMEM, "out of memory for the region table");
  return true;
}

// The snapshot's own memory in this image, never the program's: the
// writer's arena, the descriptor tables and the copies of shared memory
// made in the pause.
struct own_ranges {
  uintptr_t lo[3], hi[3];
};

own_ranges own_of(const state &s) {
  return {{s.ar->lo, s.a->fds.scratch_lo, s.a->shared.scratch_lo}, {s.ar->hi, s.a->fds.scratch_hi, s.a->shared.scratch_hi}};
}

// Saves the parts of entry e outside the snapshot's own ranges.  The kernel
// merges an anonymous mapping with a neighbour of the same flags, so one of
// those ranges can lie inside a larger entry of the program's (the copies
// of an 80 MiB shared mapping next to an anonymous mapping of its own:
// saved, zeros and all, in about a third of the runs).
bool save_outside_own(state &s, sys::maps_entry e, const own_ranges &own, int from) {
  for (int k = from; k < 3; ++k) {
    const uintptr_t lo = own.lo[k], hi = own.hi[k];
    if (lo >= hi || hi <= e.lo || lo >= e.hi) continue;
    if (e.lo < lo) {
      sys::maps_entry below = e;
      below.hi = lo;
      if (!save_outside_own(s, below, own, k + 1)) return false;
    }
    if (hi >= e.hi) return true;
    e.offset += hi - e.lo;
    e.lo = hi;
  }
  return save_entry(s, e);
}

bool walk_maps(state &s) {
  sys::maps_reader maps;
  if (long r = maps.open(); r < 0) return fail(s, static_cast<int>(-r), "cannot read /proc/self/maps");
  const own_ranges own = own_of(s);
  read_fork_advice(s);
  sys::maps_entry e;
  while (maps.next(&e)) {
    if (name_is(e, "[vsyscall]")) continue;  // the same fixed page in every process
#if defined(__SANITIZE_ADDRESS__) && defined(__x86_64__)
    // AddressSanitizer's shadow (tests only): the sanitizer's own memory,
    // terabytes of address space, not the program's.
    if (e.lo >= 0x7fff8000 && e.hi <= 0x10007fff8000) continue;
#endif
    if (!save_outside_own(s, e, own, 0)) return false;
  }
  if (maps.error()) return fail(s, static_cast<int>(-maps.error()), "cannot read /proc/self/maps");
  identify_files(s);
  return close_last_chunk(s);
}

// The threads table: each thread's registers and mask as it stopped, read
// from the handler's frame on its stack (in this image).
bool thread_table(state &s, raw_vec<cap::thread_record> &out) {
  for (uint32_t i = 0; i < s.a->nthreads; ++i) {
    const snap_thread &t = s.a->threads[i];
    cap::thread_record rec;
    memset(&rec, 0, sizeof rec);
    rec.tid = t.tid;
    rec.flags = t.flags;
    rec.fs_base = t.fs_base;
    rec.uc_addr = reinterpret_cast<uint64_t>(t.uc);
    rec.sigmask = t.sigmask;
    static_assert(sizeof rec.resume == sizeof t.rp);
    memcpy(rec.resume, &t.rp, sizeof rec.resume);
    cap::copy_thread_state(rec, t);
    if (t.uc) {
      const auto *uc = static_cast<const ucontext_t *>(t.uc);
#if defined(__x86_64__)
      static_assert(sizeof rec.gregs == sizeof uc->uc_mcontext.gregs);
      memcpy(rec.gregs, uc->uc_mcontext.gregs, sizeof rec.gregs);
#endif
      memcpy(&rec.sigmask, &uc->uc_sigmask, sizeof rec.sigmask);
    }
    if (!out.push(rec)) return fail(s, ENOMEM, "out of memory for the thread table");
  }
  return true;
}

bool write_all(int fd, const void *p, uint64_t len, uint64_t off) {
  for (uint64_t done = 0; done < len;) {
    long w = sys::pwrite(fd, static_cast<const char *>(p) + done, len - done, static_cast<off_t>(off + done));
    if (w == -EINTR) continue;
    if (w <= 0) return false;
    done += static_cast<uint64_t>(w);
  }
  return true;
}

bool write_manifest(state &s, raw_vec<cap::thread_record> &threads) {
  cap::header h = s.a->hdr;
  h.nthreads = s.a->nthreads;
  h.mem_size = s.mem_off;
  h.pmem_linked = s.pmem_linked;
  h.shared = s.shared;
  if (s.shared) memcpy(h.base_id, s.a->base_id, sizeof h.base_id);
  // The parent sends the pause's length once it has resumed (8 bytes).
  uint64_t paused = 0;
  for (long n; (n = sys::read(s.a->pause_fd, &paused, sizeof paused)) == -EINTR;) {
  }
  h.paused_ns = paused;
  cap::procstate_record proc = *s.a->proc;
  proc.cwd = add_string(s, s.a->cwd, static_cast<uint32_t>(strlen(s.a->cwd)));
  proc.exe = add_string(s, s.a->exe, static_cast<uint32_t>(strlen(s.a->exe)));
  raw_vec<cap::fd_record> fds;
  fds.ar = s.ar;
  for (uint32_t i = 0; i < s.a->fds.nfds; ++i) {
    cap::fd_record r = s.a->fds.fds[i];
    const char *path = s.a->fds.paths + r.path;
    r.path = add_string(s, path, static_cast<uint32_t>(strlen(path)));
    if (!fds.push(r)) return fail(s, ENOMEM, "out of memory for the descriptor table");
  }
  if (s.err) return false;
  const cap::table_input tables[] = {
      {cap::table_kind::regions, sizeof(cap::region), s.regions.size, s.regions.data},
      {cap::table_kind::runs, sizeof(cap::run), s.runs.size, s.runs.data},
      {cap::table_kind::chunks, sizeof(cap::chunk), s.chunks.size, s.chunks.data},
      {cap::table_kind::files, sizeof(cap::file), s.files.size, s.files.data},
      {cap::table_kind::strings, 1, s.strings.size, s.strings.data},
      {cap::table_kind::threads, sizeof(cap::thread_record), threads.size, threads.data},
      {cap::table_kind::procstate, sizeof(cap::procstate_record), 1, &proc},
      {cap::table_kind::fds, sizeof(cap::fd_record), fds.size, fds.size ? static_cast<const void *>(fds.data) : &proc},
      {cap::table_kind::fd_data, 1, s.a->fds.data_len, s.a->fds.data_len ? static_cast<const void *>(s.a->fds.data) : &proc},
      {cap::table_kind::signals, sizeof(cap::signal_record), s.a->nsignals,
       s.a->nsignals ? static_cast<const void *>(s.a->signals) : &proc},
      {cap::table_kind::timers, sizeof(cap::timer_record), s.a->ntimers,
       s.a->ntimers ? static_cast<const void *>(s.a->timers) : &proc},
      {cap::table_kind::thread_signals, sizeof(cap::thread_signal_record), s.a->nthread_signals,
       s.a->nthread_signals ? static_cast<const void *>(s.a->thread_signals) : &proc},
      {cap::table_kind::page_hashes, sizeof(cap::page_hash_record), s.hashes.size,
       s.hashes.size ? static_cast<const void *>(s.hashes.data) : &proc},
  };
  constexpr uint32_t kTables = sizeof tables / sizeof tables[0];
  const uint64_t size = cap::manifest_size(tables, kTables);
  const uint64_t bytes = (size + kPage - 1) & ~(kPage - 1);
  const long buf = sys::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (sys::failed(buf)) return fail(s, ENOMEM, "out of memory for the manifest");
  const uint64_t n = cap::manifest_build(h, tables, kTables, cap::status::complete, 0, "",
                                         reinterpret_cast<void *>(buf), bytes);
  if (!n) return fail(s, EINVAL, "the manifest could not be built");
  if (!write_all(s.a->manifest_fd, reinterpret_cast<void *>(buf), n, 0))
    return fail(s, ENOSPC, "cannot write the manifest");
  return true;
}

bool sync_fd(state &s, int fd, const char *what) {
  long r = sys::raw(SYS_fsync, fd);
  if (r < 0 && r != -EINVAL) return fail(s, static_cast<int>(-r), what);
  return true;
}

// Publishes the capsule under its final name, then makes it durable: data,
// manifest, the directory entries, then the status.
bool publish(state &s) {
  const writer_args &a = *s.a;
  if (!sync_fd(s, a.mem_fd, "cannot sync the capsule's memory") ||
      !sync_fd(s, a.manifest_fd, "cannot sync the manifest"))
    return false;
  // The linked PMem files' data (on a disk file system, their page cache;
  // on DAX, the CPU caches; on tmpfs nothing).
  for (uint32_t i = 0; i < a.nlinks; ++i)
    if (s.link_file[i] != cap::kNoFile && !sync_fd(s, s.link_fd[i], "cannot sync a linked PMem file")) return false;
  if (int r = cap::publish(a.parent_dirfd, a.pend, true); r < 0)
    return fail(s, -r, r == -EEXIST ? "a capsule of that name appeared meanwhile" : "cannot publish the capsule");
  const cap::status_block st = cap::status_make(cap::status::durable, 0, "");
  if (!write_all(a.manifest_fd, &st, sizeof st, 0)) return fail(s, EIO, "cannot mark the capsule durable");
  return sync_fd(s, a.manifest_fd, "cannot sync the manifest");
}

constexpr uint64_t kStack = uint64_t{1} << 20;

// Closes every descriptor the writer does not need: the program's (a
// listening socket held by the writer would keep its port, a pipe's write
// end would delay its reader's end of file for as long as the writer runs)
// but mmtier's own (the PMem file's hold keeps the frozen slots unused
// while the writer reads them) and the capsule's.
void close_others(const writer_args &a) {
  int keep[72];
  int n = fd_guard_list(keep, 64);
  for (int fd : {a.parent_dirfd, a.manifest_fd, a.mem_fd, a.report_fd, a.pause_fd, a.pend->dirfd, a.base_dirfd})
    if (fd >= 0) keep[n++] = fd;
  for (int i = 1; i < n; ++i)  // ascending
    for (int j = i; j > 0 && keep[j - 1] > keep[j]; --j) {
      const int t = keep[j];
      keep[j] = keep[j - 1];
      keep[j - 1] = t;
    }
  int from = 0;
  for (int i = 0; i <= n; ++i) {
    const int to = i < n ? keep[i] - 1 : INT32_MAX;
    if (to >= from) {
      if (sys::raw(SYS_close_range, from, to, 0) == -ENOSYS)
        for (int fd = from; fd <= to && fd < 4096; ++fd) sys::close(fd);
    }
    if (i < n) from = keep[i] + 1;
  }
}

int writer_body(state &s) {
  const writer_args &a = *s.a;
  fd_capture_finish(a.fds);
  close_others(a);
  sys::raw(SYS_prctl, PR_SET_NAME, reinterpret_cast<long>("mmtier-snapwr"));
  sys::raw(SYS_setpriority, PRIO_PROCESS, 0, 10);
  long fd = sys::openat(AT_FDCWD, "/proc/thread-self/pagemap", O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) {
    fail(s, static_cast<int>(-fd), "cannot open /proc/self/pagemap");
  } else {
    s.pagemap_fd = static_cast<int>(fd);
    const long mem = sys::openat(AT_FDCWD, "/proc/thread-self/mem", O_RDONLY | O_CLOEXEC, 0);
    s.self_mem_fd = mem < 0 ? -1 : static_cast<int>(mem);
    raw_vec<cap::thread_record> threads;
    threads.ar = s.ar;
    open_links(s);
    open_base(s);
    if (walk_maps(s) && base_chunks(s)) unlink_unused(s);
    if (!s.err && thread_table(s, threads) && write_manifest(s, threads)) publish(s);
  }
  if (!s.err) return 0;
  sys::write(a.report_fd, s.line, strlen(s.line));
  return s.err;
}

extern "C" int mmtier_writer_entry(state *s) { return writer_body(*s); }

// Runs the writer on a stack of its own and exits with its status: the
// stack of the thread that took the snapshot is part of the image.
[[noreturn]] void run_on_stack(char *top, state *s) {
#if defined(__x86_64__)
  asm volatile(
      "mov %%rsi, %%rsp\n\t"
      "call mmtier_writer_entry\n\t"
      "mov %%eax, %%edi\n\t"
      "mov $231, %%eax\n\t"  // exit_group
      "syscall\n\t"
      "hlt\n\t" ::"S"(top),
      "D"(s)
      : "memory");
  __builtin_unreachable();
#else
  (void)top;
  sys::raw(SYS_exit_group, writer_body(*s));
  __builtin_unreachable();
#endif
}

[[noreturn]] void give_up(const writer_args &a, const char *line) {
  sys::write(a.report_fd, line, strlen(line));
  sys::raw(SYS_exit_group, ENOMEM);
  __builtin_unreachable();
}

}  // namespace writer

void writer_start(const writer_args &a) {
  using namespace writer;
  arena ar;
  if (!ar.reserve()) give_up(a, "no address space for the snapshot writer");
  char *first = ar.slice();
  const uint64_t need = (kStack + sizeof(state) + sizeof(buffers) + 2 * kPage) & ~(kPage - 1);
  if (sys::failed(sys::mprotect(first, need, PROT_READ | PROT_WRITE))) give_up(a, "no memory for the snapshot writer");
  char *top = first + kStack;  // the stack grows down from here
  state *s = new (top) state();
  s->buf = reinterpret_cast<buffers *>(top + ((sizeof(state) + 63) & ~uint64_t{63}));
  s->a = &a;
  s->ar = new (s->buf + 1) arena(ar);
  s->regions.ar = s->ar;
  s->runs.ar = s->ar;
  s->chunks.ar = s->ar;
  s->files.ar = s->ar;
  s->strings.ar = s->ar;
  s->hashes.ar = s->ar;
  run_on_stack(top, s);
}

}  // namespace mmtier::detail
