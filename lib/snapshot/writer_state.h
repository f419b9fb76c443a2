// The snapshot writer's own state and the helpers its parts share
// (writer.cc: the maps walk, the manifest, publishing; writer_linked.cc:
// units saved as references into linked PMem files, ZeroIO).  Everything
// here runs in the writer child: raw system calls, memory it maps itself.
#pragma once

#include "platform/proc_maps.h"
#include "platform/sys.h"
#include "snapshot/capsule_format.h"
#include "snapshot/writer.h"

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>

namespace mmtier::detail::writer {

namespace cap = capsule;
constexpr uint64_t kPage = 4096;
constexpr size_t kPagemapBatch = 4096;  // entries read at once

// Everything the writer changes lives in one range of its own, mapped
// after the fork and left out of the capsule: a write to the image (a
// static variable of the library, a buffer from the heap) would change
// what is being saved.  The range is reserved inaccessible and made
// writable a slice at a time, so strict overcommit charges only what is
// used.  Only the stack is shared with the image: the frames the writer
// pushes lie below the capturing thread's, in memory it no longer uses.
constexpr uint64_t kSlice = uint64_t{16} << 30;  // address space per growable table
constexpr int kSlices = 16;
constexpr uint64_t kGrow = uint64_t{1} << 20;

struct arena {
  uintptr_t lo = 0, hi = 0;
  int next = 0;  // slices handed out
  bool reserve() {
    const long p = sys::mmap(nullptr, kSlice * kSlices, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (sys::failed(p)) return false;
    lo = static_cast<uintptr_t>(p);
    hi = lo + kSlice * kSlices;
    // A flag no mapping of the image has: the kernel never merges the
    // range with a neighbour, so the maps walk sees it apart and skips it.
    sys::madvise(reinterpret_cast<void *>(lo), hi - lo, MADV_DONTDUMP);
    return true;
  }
  char *slice() { return next < kSlices ? reinterpret_cast<char *>(lo + kSlice * next++) : nullptr; }
};
// A growable array in a slice of the arena.
template <class T>
struct raw_vec {
  arena *ar = nullptr;
  T *data = nullptr;
  uint64_t size = 0, bytes = 0;  // bytes made writable
  bool push(const T &v) {
    if ((size + 1) * sizeof(T) > bytes) {
      if (!data && !(data = reinterpret_cast<T *>(ar->slice()))) return false;
      if (bytes + kGrow > kSlice ||
          sys::failed(sys::mprotect(reinterpret_cast<char *>(data) + bytes, kGrow, PROT_READ | PROT_WRITE)))
        return false;
      bytes += kGrow;
    }
    data[size++] = v;
    return true;
  }
};

// Taken from the arena: fixed buffers.
struct buffers {
  char bounce[1 << 20];   // image pages on their way to mem
  char smaps[kSmapsWindow];  // a window of /proc/self/smaps
  vm_advice advice;       // this fork's (writer.cc, advice_of)
};

// Incremental: the capsule this one builds on (writer_args::base_dirfd),
// its manifest mapped read-only, and the files of its data this capsule
// links (its mem, and the earlier capsules' it refers to itself).
constexpr uint32_t kMaxBaseFiles = 16;
struct base_file {
  uint32_t bf;        // the file's index in the base's files table; cap::kNoFile: the base's own mem
  uint32_t file;      // its index in this capsule's files table
  uint8_t *used;      // a byte per 2 MiB chunk of the file: a run of this capsule lies in it
  uint64_t nchunks;
};
struct base_state {
  bool ok = false;
  cap::manifest_view v{};
  // The lookup's cursor (addresses only grow): region, run, and the page
  // hashes before that run.
  uint64_t region = 0, run = 0, hashed = 0;
  uintptr_t last = 0;
  base_file files[kMaxBaseFiles];
  uint32_t nfiles = 0;
  char *bitmaps = nullptr;  // a slice of the arena: the used maps
  uint64_t bitmap_bytes = 0, bitmap_cap = 0;
};

struct state {
  const writer_args *a;
  arena *ar;
  buffers *buf;
  raw_vec<cap::region> regions;
  raw_vec<cap::run> runs;
  raw_vec<cap::chunk> chunks;
  raw_vec<cap::file> files;
  raw_vec<char> strings;
  raw_vec<cap::page_hash_record> hashes;  // one per page of the mem and base runs
  base_state base;
  uint64_t shared = 0;      // bytes of base runs
  int pagemap_fd = -1;
  int self_mem_fd = -1;  // /proc/self/mem: the image read without faulting it in (copy_image)
  const vm_advice *fork_advice = nullptr;  // this fork's own (writer.cc, advice_of); null: the earlier table
  // ZeroIO: the linked PMem files (writer_args::links), opened; their
  // entries in the files table (kNoFile until a region maps one).
  int link_fd[kMaxPmemLinks];
  uint32_t link_file[kMaxPmemLinks];
  uint64_t pmem_linked = 0;  // bytes of pmem runs
  uint64_t mem_off = 0;     // bytes of mem written
  uint32_t chunk_crc = 0;   // of the chunk being filled
  char line[256];
  int err = 0;
};

enum class page_src : uint8_t { hole, mem, file, pmem, base };


// Records the first failure (errno err, what, at an address when given) as
// the writer's one line; false.
bool fail(state &s, int err, const char *what, uintptr_t at = 0);
// Adds a string to the strings table; its offset (0 on failure).
uint32_t add_string(state &s, const char *p, uint32_t len);
// Copies n bytes of the image (any memory of the process).
void copy_image(const state &s, char *dst, const char *src, uint64_t n);
// Saves npages of the image from addr, pages page.. of region r, whose
// data is the process's own: each page hashed, and either found unchanged
// in the base (a base run) or written to mem; with zero_holes, a page of
// zeros is a hole run instead.  Read from src when not 0 (a copy of those
// pages made in the pause: shared memory).
bool save_data(state &s, capsule::region &r, uint64_t page, uint64_t npages, uintptr_t addr, bool zero_holes,
               uintptr_t src = 0);
// A run of npages from page of region r; at: its offset in mem (mem) or in
// the linked file (pmem, base: file is its files index).
bool add_run(state &s, capsule::region &r, uint64_t page, uint64_t npages, page_src src, uint64_t at,
             uint32_t file = capsule::kNoFile);

// ---- Incremental (writer_base.cc)
// Maps the base's manifest and checks it will do (else the capsule is a
// full one: base.ok stays false).
void open_base(state &s);
// Whether the page at addr, of hash d, is the base's page there unchanged:
// then *file (this capsule's files index, the file linked on first use) and
// *off say where its bytes are.
bool base_match(state &s, uintptr_t addr, const cap::page_hash_record &d, uint32_t *file, uint64_t *off);
// The base's CRCs of the chunks this capsule's base runs lie in.
bool base_chunks(state &s);

// ---- ZeroIO (writer_linked.cc)
// Opens the links (-1 for one that cannot be read: its units are copied).
void open_links(state &s);
// Removes the links no region refers to (and any the stop dropped).
void unlink_unused(state &s);
// The link of the file e maps, or -1.
int link_of(const state &s, const sys::maps_entry &e);
// Saves a unit mapped on link i: pmem runs, holes, and its private copies in mem.
bool save_linked_region(state &s, capsule::region &r, int i);

}  // namespace mmtier::detail::writer
