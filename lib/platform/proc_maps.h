// Platform layer: the one reader of /proc/self/maps.  Lines are parsed from
// a fixed buffer (nothing allocates, so it works inside the allocator and in
// fork handlers); a line longer than the buffer (a very long path) still
// yields its fixed fields.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mmtier::detail::sys {

struct maps_entry {
  uintptr_t lo, hi;  // [lo, hi)
  int prot;          // PROT_* bits
  bool shared;       // MAP_SHARED ('s'); else private
  uint64_t offset;   // file offset of lo
  uint32_t dev_major, dev_minor;
  uint64_t inode;    // 0: not a file
  // The path or pseudo-name ("[heap]", "[stack]", "[vdso]"), not
  // terminated, valid until the next call of next(); empty for anonymous
  // memory, and for a line longer than the reader's buffer.
  const char *name;
  uint32_t name_len;
};

class maps_reader {
 public:
  maps_reader() = default;
  maps_reader(const maps_reader &) = delete;
  maps_reader &operator=(const maps_reader &) = delete;
  ~maps_reader() { close(); }

  // 0 or -errno.
  long open();
  // The next mapping, ascending; false at the end or on a read error
  // (error() tells which).
  bool next(maps_entry *out);
  long error() const { return err_; }
  void close();

 private:
  bool fill();
  int fd_ = -1;
  long err_ = 0;
  size_t have_ = 0, pos_ = 0;
  char buf_[8192];
};

// Protection (PROT_* bits) of the mapping containing addr; -1 if addr is not
// mapped.  One pass over the maps file: for rare paths only.
int query_prot(const void *addr);

// Mappings of this process (lines of /proc/self/maps), or -errno.
long count_mappings();

}  // namespace mmtier::detail::sys
