// Reading a capsule back in tests: its manifest parsed with the format's
// own reader, and its memory readable by address.
#pragma once

#include "snapshot/capsule_format.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace capsule_test {

namespace cap = mmtier::capsule;

inline std::string read_file(const std::string &path) {
  std::string out;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[1 << 16];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

// A capsule read back: its manifest parsed, and its memory readable by
// address.
struct capsule_reader {
  std::string manifest;  // 8-byte aligned storage below
  std::vector<uint64_t> storage;
  cap::manifest_view m{};
  int mem_fd = -1;
  cap::parse_error err = cap::parse_error::truncated;

  explicit capsule_reader(const std::string &dir) {
    manifest = read_file(dir + "/manifest");
    storage.resize(manifest.size() / 8 + 1);
    memcpy(storage.data(), manifest.data(), manifest.size());
    err = cap::manifest_parse(storage.data(), manifest.size(), &m);
    mem_fd = open((dir + "/mem").c_str(), O_RDONLY | O_CLOEXEC);
  }
  ~capsule_reader() {
    if (mem_fd >= 0) close(mem_fd);
  }
  // The bytes of [addr, addr + len) as the capsule holds them (a hole reads
  // as zero); false if some page is not in it as data or hole.
  bool read(uintptr_t addr, void *out, size_t len) const {
    char *o = static_cast<char *>(out);
    while (len) {
      const cap::region *r = nullptr;
      for (uint64_t i = 0; i < m.nregions; ++i)
        if (addr >= m.regions[i].start && addr < m.regions[i].end) r = &m.regions[i];
      if (!r) return false;
      const uint64_t page = (addr - r->start) / 4096, in = addr % 4096;
      const size_t n = std::min<size_t>(len, 4096 - in);
      bool found = false;
      for (uint64_t k = r->first_run; k < r->first_run + r->nruns; ++k) {
        const cap::run &u = m.runs[k];
        if (page < u.page || page >= u.page + u.npages) continue;
        found = true;
        if (u.source == static_cast<uint32_t>(cap::run_source::mem)) {
          if (pread(mem_fd, o, n, static_cast<off_t>(u.offset + (page - u.page) * 4096 + in)) != static_cast<ssize_t>(n))
            return false;
        } else if (u.source == static_cast<uint32_t>(cap::run_source::hole)) {
          memset(o, 0, n);
        } else {
          return false;
        }
      }
      if (!found) return false;
      addr += n;
      o += n;
      len -= n;
    }
    return true;
  }
};

// The table of kind k, or nullptr.
inline const cap::table_entry *table_of(const capsule_reader &c, cap::table_kind k) {
  for (uint32_t i = 0; i < c.m.ntables; ++i)
    if (c.m.dir[i].kind == static_cast<uint32_t>(k)) return &c.m.dir[i];
  return nullptr;
}

}  // namespace capsule_test
