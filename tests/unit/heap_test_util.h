// Helpers shared by the heap layer's tests (migration, sampling,
// re-sharing after fork).
#pragma once

#include "heap/heap.h"
#include "platform/pagemap.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mmtier::detail::test {

// A process's first units placed by policy are start-up memory, which
// never moves: the units a test moves come after them.
inline void use_up_startup_units() {
  static void *startup = nullptr;
  if (!startup)
    ASSERT_EQ(heap_mmap(nullptr, kStartupUnits * kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        &startup),
              0);
}

// A pagemap reader of a test's own, closed when it goes out of scope (the
// library's lives as long as the process).
struct pagemap_reader : sys::pagemap_file {
  pagemap_reader() = default;
  pagemap_reader(const pagemap_reader &) = delete;
  pagemap_reader &operator=(const pagemap_reader &) = delete;
  ~pagemap_reader() { close(); }
};

inline size_t unit_index_of(const void *p) { return (reinterpret_cast<uintptr_t>(p) - g_heap.base) >> kUnitShift; }

// Kernel mappings that cover [lo, hi).
inline size_t mappings_in(uintptr_t lo, uintptr_t hi) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) return 0;
  size_t n = 0;
  unsigned long a, b;
  char line[512];
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "%lx-%lx", &a, &b) == 2 && a < hi && b > lo) ++n;
  fclose(f);
  return n;
}

// Whether thread tid of this process is blocked (state S or D in
// /proc/self/task/TID/stat).
inline bool thread_blocked(long tid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%ld/stat", tid);
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[512] = {};
  const ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  const char *close_paren = n > 0 ? strrchr(buf, ')') : nullptr;
  return close_paren && (close_paren[2] == 'S' || close_paren[2] == 'D');
}

// A record of 8 words written as one: v * 8 + i in word i.  A record
// whose words disagree was torn; one older than its writer's own count
// lost a write.
struct alignas(64) record {
  uint64_t w[8];
};

inline void put(record &r, uint64_t v) {  // v >= 1
  for (int i = 0; i < 8; ++i) __atomic_store_n(&r.w[i], v * 8 + static_cast<uint64_t>(i), __ATOMIC_RELAXED);
}

inline bool check(const record &r, uint64_t *v) {
  const uint64_t first = __atomic_load_n(&r.w[0], __ATOMIC_RELAXED);
  *v = first / 8;
  if (first == 0) {  // never written: all zero
    for (int i = 1; i < 8; ++i)
      if (__atomic_load_n(&r.w[i], __ATOMIC_RELAXED) != 0) return false;
    return true;
  }
  for (int i = 1; i < 8; ++i)
    if (__atomic_load_n(&r.w[i], __ATOMIC_RELAXED) != first + static_cast<uint64_t>(i)) return false;
  return first % 8 == 0;
}

// A load for tests that move or remap units under running threads: writer
// threads each own one record of every page below the last 64 and update
// them at random (writer t: record t), checking each before it writes; a
// thread writes patterns into buffers in the last 64 pages and moves them
// through a pipe with write() and read() into other buffers there.  At
// stop(), each writer checks every one of its records.  A torn record, a
// record older than its writer's count, a failed system call or a buffer
// that came back different is counted.
class record_load {
 public:
  // min_ops: updates each writer makes at least, min_rounds: pipe round
  // trips at least, however soon stop() comes.
  record_load(char *base, size_t pages, int writers, uint64_t min_ops = 0, uint64_t min_rounds = 0)
      : base_(base), io_first_(pages - 64) {
    for (int t = 0; t < writers; ++t) threads_.emplace_back([this, t, min_ops] { write_records(t, min_ops); });
    threads_.emplace_back([this, min_rounds] { round_trips(min_rounds); });
  }
  ~record_load() { stop(); }
  void stop() {
    stop_ = true;
    for (auto &th : threads_)
      if (th.joinable()) th.join();
  }
  std::atomic<uint64_t> torn{0}, lost{0}, syscall_errors{0}, io_mismatch{0};
  std::atomic<uint64_t> updates{0};  // records written, by all writers
  // What the test is doing (its own numbering: a move's round and unit),
  // kept with each of the first losses seen.
  std::atomic<uint64_t> phase{0};
  // The first losses, one per line: writer, page, the record's value and
  // the writer's own count, the phase of the record's last write and the
  // phase when the loss was seen (the write was lost in between).  Empty
  // without loss.
  std::string losses() {
    std::lock_guard<std::mutex> g(loss_lock_);
    return loss_text_;
  }
  // Returns once the writers have written n more records than when called.
  void wait_updates(uint64_t n) const {
    const uint64_t from = updates.load(std::memory_order_relaxed);
    while (updates.load(std::memory_order_relaxed) < from + n) std::this_thread::yield();
  }

 private:
  record &rec(size_t page, size_t slot) { return reinterpret_cast<record *>(base_ + page * 4096)[slot]; }

  void write_records(int t, uint64_t min_ops) {
    std::vector<uint64_t> mine(io_first_, 0);
    std::vector<uint64_t> when(io_first_, 0);  // the phase of each record's last write
    uint64_t x = 88172645463325252ull + static_cast<uint64_t>(t);
    const size_t slot = static_cast<size_t>(t);
    for (uint64_t op = 0;; ++op) {
      if (op >= min_ops && op % 1024 == 0 && stop_.load(std::memory_order_relaxed)) break;
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      const size_t page = x % io_first_;
      uint64_t seen;
      if (!check(rec(page, slot), &seen)) torn.fetch_add(1);
      else if (seen != mine[page]) note_loss(t, page, seen, mine[page], when[page], false);
      when[page] = phase.load(std::memory_order_relaxed);
      put(rec(page, slot), ++mine[page]);
      updates.fetch_add(1, std::memory_order_relaxed);
    }
    for (size_t page = 0; page < io_first_; ++page) {
      uint64_t seen;
      if (!check(rec(page, slot), &seen) || seen != mine[page]) note_loss(t, page, seen, mine[page], when[page], true);
    }
  }

  void note_loss(int t, size_t page, uint64_t seen, uint64_t want, uint64_t written, bool at_end) {
    if (lost.fetch_add(1) >= 16) return;
    char line[192];
    snprintf(line, sizeof line, "writer %d page %zu (unit %zu): %llu, want %llu; written in phase %llu, seen in %s%llu\n",
             t, page, page / kPagesPerUnit, static_cast<unsigned long long>(seen),
             static_cast<unsigned long long>(want), static_cast<unsigned long long>(written),
             at_end ? "the final check, " : "", static_cast<unsigned long long>(phase.load()));
    std::lock_guard<std::mutex> g(loss_lock_);
    loss_text_ += line;
  }

  void round_trips(uint64_t min_rounds) {
    int fds[2];
    if (pipe(fds) != 0) {
      syscall_errors.fetch_add(1);
      return;
    }
    char *src = base_ + io_first_ * 4096;
    char *dst = src + 32 * 4096;
    for (uint64_t round = 1; round < min_rounds || !stop_.load(std::memory_order_relaxed); ++round) {
      const size_t len = 16 * 1024;
      const size_t off = (round * 4096 + round * 24) % (32 * 4096 - len);
      for (size_t i = 0; i < len; i += 8) {
        const uint64_t v = round * 0x100000001b3ull + i;
        memcpy(src + off + i, &v, 8);
      }
      size_t moved = 0;
      while (moved < len) {
        const ssize_t n = write(fds[1], src + off + moved, len - moved > 4096 ? 4096 : len - moved);
        if (n <= 0) {
          syscall_errors.fetch_add(1);
          break;
        }
        size_t got = 0;
        while (got < static_cast<size_t>(n)) {
          const ssize_t m = read(fds[0], dst + off + moved + got, static_cast<size_t>(n) - got);
          if (m <= 0) {
            syscall_errors.fetch_add(1);
            break;
          }
          got += static_cast<size_t>(m);
        }
        moved += static_cast<size_t>(n);
      }
      if (memcmp(src + off, dst + off, len) != 0) io_mismatch.fetch_add(1);
    }
    close(fds[0]);
    close(fds[1]);
  }

  char *base_;
  size_t io_first_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  std::mutex loss_lock_;
  std::string loss_text_;
};

}  // namespace mmtier::detail::test
