// Platform layer: the clocks mmtier reads, in nanoseconds.  clock_gettime
// goes through the vDSO (no system call, no allocation, no errno).
#pragma once

#include <time.h>

#include <cstdint>

namespace mmtier::detail::sys {

inline constexpr uint64_t kNsPerSec = 1'000'000'000;

inline uint64_t clock_ns(clockid_t c) {
  timespec ts;
  if (clock_gettime(c, &ts) != 0) return 0;
  return static_cast<uint64_t>(ts.tv_sec) * kNsPerSec + static_cast<uint64_t>(ts.tv_nsec);
}

// Monotonic time: intervals, deadlines, rate limits.
inline uint64_t mono_ns() { return clock_ns(CLOCK_MONOTONIC); }
// Wall-clock time: timestamps other processes read.
inline uint64_t real_ns() { return clock_ns(CLOCK_REALTIME); }
// CPU time of the calling thread.
inline uint64_t thread_cpu_ns() { return clock_ns(CLOCK_THREAD_CPUTIME_ID); }

// Sleeps until the monotonic clock reads deadline_ns (signals do not cut
// the sleep short).
void sleep_until_mono(uint64_t deadline_ns);

}  // namespace mmtier::detail::sys
