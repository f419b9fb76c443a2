// Platform layer: sleeping on the monotonic clock (see clock.h).
#include "platform/clock.h"

#include <cerrno>

namespace mmtier::detail::sys {

void sleep_until_mono(uint64_t deadline_ns) {
  const timespec ts = {static_cast<time_t>(deadline_ns / kNsPerSec), static_cast<long>(deadline_ns % kNsPerSec)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

}  // namespace mmtier::detail::sys
