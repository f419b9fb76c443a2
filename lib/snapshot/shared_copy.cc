// Snapshot layer: shared anonymous memory copied in the pause
// (shared_copy.h).
#include "snapshot/shared_copy.h"

#include "platform/proc_maps.h"
#include "platform/sys.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>

#include <cstring>

namespace mmtier::detail {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kBatch = 512;  // pages per mincore call

// Copies [lo, lo + len) of this process into to, through mem_fd.
void copy_range(int mem_fd, uintptr_t lo, uint64_t len, char *to) {
  while (len) {
    const long n = sys::pread(mem_fd, to, len, static_cast<off_t>(lo));
    if (n <= 0) return;  // left as zeros: read as holes
    lo += static_cast<uint64_t>(n);
    to += n;
    len -= static_cast<uint64_t>(n);
  }
}

}  // namespace

bool shared_anonymous(const sys::maps_entry &e) {
  auto starts = [&](const char *lit) {
    const size_t n = strlen(lit);
    return e.name_len >= n && memcmp(e.name, lit, n) == 0;
  };
  return e.shared && e.name_len && (starts("/dev/zero") || starts("/SYSV"));
}

void shared_copy_take(shared_copies *c) {
  *c = shared_copies{};
  uint64_t total = 0;
  {
    sys::maps_reader maps;
    if (maps.open() < 0) return;
    sys::maps_entry e;
    while (maps.next(&e)) {
      if (!shared_anonymous(e)) continue;
      if (c->n == shared_copies::kMax || total + (e.hi - e.lo) > shared_copies::kMaxBytes) {
        ++c->left_out;
        continue;
      }
      c->e[c->n++] = {e.lo, e.hi, total};
      total += e.hi - e.lo;
    }
  }
  if (!c->n) return;
  const long mem_fd = sys::openat(AT_FDCWD, "/proc/thread-self/mem", O_RDONLY | O_CLOEXEC, 0);
  const long scratch = sys::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                                 -1, 0);
  if (mem_fd < 0 || sys::failed(scratch)) {
    if (mem_fd >= 0) sys::close(static_cast<int>(mem_fd));
    if (!sys::failed(scratch)) sys::munmap(reinterpret_cast<void *>(scratch), total);
    c->left_out += c->n;
    c->n = 0;
    return;
  }
  c->scratch_lo = static_cast<uintptr_t>(scratch);
  c->scratch_hi = c->scratch_lo + total;
  // Where the host has no swap, a page not in memory is a hole; with swap
  // it may be swapped out, so every page is read.
  struct sysinfo si;
  const bool swap = sys::raw(SYS_sysinfo, reinterpret_cast<long>(&si)) != 0 || si.totalswap != 0;
  unsigned char in[kBatch];
  for (uint32_t k = 0; k < c->n; ++k) {
    const shared_copy_entry &x = c->e[k];
    char *to = reinterpret_cast<char *>(c->scratch_lo + x.off);
    const uint64_t pages = (x.hi - x.lo) / kPage;
    for (uint64_t p = 0; p < pages; p += kBatch) {
      const uint64_t n = pages - p < kBatch ? pages - p : kBatch;
      const uintptr_t at = x.lo + p * kPage;
      if (swap || sys::raw(SYS_mincore, static_cast<long>(at), static_cast<long>(n * kPage),
                           reinterpret_cast<long>(in)) != 0) {
        copy_range(static_cast<int>(mem_fd), at, n * kPage, to + p * kPage);
        continue;
      }
      for (uint64_t i = 0; i < n;) {
        uint64_t j = i + 1;
        while (j < n && (in[j] & 1) == (in[i] & 1)) ++j;
        if (in[i] & 1) copy_range(static_cast<int>(mem_fd), at + i * kPage, (j - i) * kPage, to + (p + i) * kPage);
        i = j;
      }
    }
  }
  sys::close(static_cast<int>(mem_fd));
}

uintptr_t shared_copy_of(const shared_copies &c, uintptr_t lo, uintptr_t hi) {
  for (uint32_t k = 0; k < c.n; ++k)
    if (c.e[k].lo == lo && c.e[k].hi == hi) return c.scratch_lo + c.e[k].off;
  return 0;
}

void shared_copy_release(shared_copies *c) {
  if (c->scratch_lo) sys::munmap(reinterpret_cast<void *>(c->scratch_lo), c->scratch_hi - c->scratch_lo);
  c->scratch_lo = c->scratch_hi = 0;
  c->n = 0;
}

}  // namespace mmtier::detail
