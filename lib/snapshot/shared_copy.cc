// Snapshot layer: shared anonymous memory copied in the pause
// (shared_copy.h).
#include "snapshot/shared_copy.h"

#include "platform/proc_maps.h"
#include "platform/sys.h"
#include "snapshot/capsule_format.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>

#include <cerrno>
#include <cstdio>
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

long shared_copy_take(shared_copies *c, const vm_advice &advice, char *why, size_t cap) {
  *c = shared_copies{};
  uint64_t total = 0;
  for (uint32_t k = 0; k < advice.n; ++k) {
    const vm_advice_entry &a = advice.e[k];
    if (!(a.madv & capsule::kMadvWipeOnFork)) continue;
    if (c->n == shared_copies::kMax || total + (a.hi - a.lo) > shared_copies::kMaxBytes) {
      c->n = 0;
      snprintf(why, cap, "more memory marked MADV_WIPEONFORK than a snapshot copies in its pause (%u mappings or %llu "
               "MiB; not supported)", shared_copies::kMax, static_cast<unsigned long long>(shared_copies::kMaxBytes >> 20));
      return -E2BIG;
    }
    c->e[c->n++] = {a.lo, a.hi, total};
    total += a.hi - a.lo;
  }
  const uint32_t wiped = c->n;
  {
    sys::maps_reader maps;
    const bool listed = maps.open() >= 0;  // else no shared memory is copied
    sys::maps_entry e;
    while (listed && maps.next(&e)) {
      if (!shared_anonymous(e)) continue;
      if (c->n == shared_copies::kMax || total + (e.hi - e.lo) > shared_copies::kMaxBytes) {
        ++c->left_out;
        continue;
      }
      c->e[c->n++] = {e.lo, e.hi, total};
      total += e.hi - e.lo;
    }
  }
  if (!c->n) return 0;
  const long mem_fd = sys::openat(AT_FDCWD, "/proc/thread-self/mem", O_RDONLY | O_CLOEXEC, 0);
  const long scratch = sys::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                                 -1, 0);
  if (mem_fd < 0 || sys::failed(scratch)) {
    if (mem_fd >= 0) sys::close(static_cast<int>(mem_fd));
    if (!sys::failed(scratch)) sys::munmap(reinterpret_cast<void *>(scratch), total);
    c->left_out += c->n - wiped;
    c->n = 0;
    if (wiped) snprintf(why, cap, "no memory to copy the memory marked MADV_WIPEONFORK into in the pause");
    return wiped ? -ENOMEM : 0;
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
  return 0;
}

uintptr_t shared_copy_of(const shared_copies &c, uintptr_t lo, uintptr_t hi) {
  for (uint32_t k = 0; k < c.n; ++k)
    if (c.e[k].lo <= lo && hi <= c.e[k].hi) return c.scratch_lo + c.e[k].off + (lo - c.e[k].lo);
  return 0;
}

void shared_copy_release(shared_copies *c) {
  if (c->scratch_lo) sys::munmap(reinterpret_cast<void *>(c->scratch_lo), c->scratch_hi - c->scratch_lo);
  c->scratch_lo = c->scratch_hi = 0;
  c->n = 0;
}

}  // namespace mmtier::detail
