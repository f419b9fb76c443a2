// The content identity of a file a process maps (its executable, its
// libraries, locale and data files), recorded by the snapshot writer and
// checked by `mmtier restore` when the path no longer names the same inode
// (a new container's overlay mount, another host, a package reinstalled
// from the same build): an ELF file by its GNU build id and size, any
// other by its size, modification time and a CRC32C of its first and last
// kIdentityEnds bytes.
//
// Header-only and allocation-free: the writer runs it in its fork child
// with raw system calls, the command with the C library.  `read(buf, n,
// off)` returns the bytes read or a negative value.
#pragma once

#include "snapshot/capsule_format.h"
#include "support/crc32c.h"

#include <cstdint>
#include <cstring>

namespace mmtier::snapshot {

constexpr uint64_t kIdentityEnds = 64u << 10;

// Reads exactly n bytes at off; false on an error or a short file.
template <typename Read>
bool read_exact(Read &read, void *buf, uint64_t n, uint64_t off) {
  auto *p = static_cast<char *>(buf);
  while (n) {
    const long r = read(p, n, off);
    if (r <= 0) return false;
    p += r;
    off += static_cast<uint64_t>(r);
    n -= static_cast<uint64_t>(r);
  }
  return true;
}

// The GNU build id (NT_GNU_BUILD_ID in a PT_NOTE segment) of a 64-bit
// little-endian ELF file of size bytes, into id (at most 20 bytes); false
// when the file is no such ELF file or has none.  scratch: at least 4 KiB.
template <typename Read>
bool elf_build_id(Read &read, uint64_t size, char *scratch, uint64_t scratch_len, uint8_t id[20], uint32_t *id_len) {
  constexpr uint64_t kEhdr = 64, kPhdr = 56;
  if (size < kEhdr || scratch_len < 4096 || !read_exact(read, scratch, kEhdr, 0)) return false;
  const auto *h = reinterpret_cast<const unsigned char *>(scratch);
  if (memcmp(h, "\177ELF", 4) != 0 || h[4] != 2 /* ELFCLASS64 */ || h[5] != 1 /* little-endian */) return false;
  uint64_t phoff;
  uint16_t phentsize, phnum;
  memcpy(&phoff, h + 32, 8);
  memcpy(&phentsize, h + 54, 2);
  memcpy(&phnum, h + 56, 2);
  if (phentsize != kPhdr || phnum == 0 || phnum > scratch_len / kPhdr / 2 || phoff > size ||
      size - phoff < uint64_t{phnum} * kPhdr)
    return false;
  // The program headers in the first half of scratch, a note in the second.
  if (!read_exact(read, scratch, uint64_t{phnum} * kPhdr, phoff)) return false;
  char *note = scratch + scratch_len / 2;
  const uint64_t note_room = scratch_len / 2;
  for (uint16_t i = 0; i < phnum; ++i) {
    const char *ph = scratch + uint64_t{i} * kPhdr;
    uint32_t type;
    uint64_t off, filesz, align;
    memcpy(&type, ph, 4);
    memcpy(&off, ph + 8, 8);
    memcpy(&filesz, ph + 32, 8);
    memcpy(&align, ph + 48, 8);
    if (type != 4 /* PT_NOTE */ || off > size || filesz > size - off) continue;
    const uint64_t len = filesz < note_room ? filesz : note_room;
    if (!read_exact(read, note, len, off)) return false;
    const uint64_t a = align == 8 ? 8 : 4;
    for (uint64_t at = 0; at + 12 <= len;) {
      uint32_t namesz, descsz, ntype;
      memcpy(&namesz, note + at, 4);
      memcpy(&descsz, note + at + 4, 4);
      memcpy(&ntype, note + at + 8, 4);
      const uint64_t name_at = at + 12;
      const uint64_t desc_at = name_at + ((uint64_t{namesz} + a - 1) & ~(a - 1));
      const uint64_t next = desc_at + ((uint64_t{descsz} + a - 1) & ~(a - 1));
      if (desc_at > len || desc_at + descsz > len) break;
      if (ntype == 3 /* NT_GNU_BUILD_ID */ && namesz == 4 && memcmp(note + name_at, "GNU", 4) == 0 && descsz > 0 &&
          descsz <= 20) {
        memcpy(id, note + desc_at, descsz);
        *id_len = descsz;
        return true;
      }
      at = next;
    }
  }
  return false;
}

// CRC32C of the first and the last kIdentityEnds bytes of a file of size
// bytes (the whole file when it is smaller than both); false on a read
// error.  scratch: at least kIdentityEnds.
template <typename Read>
bool ends_crc(Read &read, uint64_t size, char *scratch, uint64_t scratch_len, uint32_t *crc) {
  if (scratch_len < kIdentityEnds) return false;
  uint32_t c = 0;
  const uint64_t head = size < kIdentityEnds ? size : kIdentityEnds;
  if (!read_exact(read, scratch, head, 0)) return false;
  c = detail::crc32c(c, scratch, head);
  const uint64_t tail_at = size > 2 * kIdentityEnds ? size - kIdentityEnds : head;
  if (tail_at < size) {
    if (!read_exact(read, scratch, size - tail_at, tail_at)) return false;
    c = detail::crc32c(c, scratch, size - tail_at);
  }
  *crc = c;
  return true;
}

// Fills f's content identity (identity, build_id, crc) from the file of
// f.size bytes that read reads: build_id when it is an ELF file with one,
// else ends; false when it cannot be read (f then keeps identity inode).
template <typename Read>
bool identify(Read &read, capsule::file &f, char *scratch, uint64_t scratch_len) {
  uint8_t id[20];
  uint32_t id_len = 0;
  if (elf_build_id(read, f.size, scratch, scratch_len, id, &id_len)) {
    f.identity = static_cast<uint32_t>(capsule::file_identity::build_id);
    memcpy(f.build_id, id, id_len);
    f.build_id_len = id_len;
    return true;
  }
  uint32_t crc;
  if (!ends_crc(read, f.size, scratch, scratch_len, &crc)) return false;
  f.identity = static_cast<uint32_t>(capsule::file_identity::ends);
  f.crc = crc;
  return true;
}

}  // namespace mmtier::snapshot
