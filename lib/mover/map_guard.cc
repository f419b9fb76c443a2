// Mapping-count guard of the background mover (see map_guard.h).
#include "mover/map_guard.h"

#include "platform/proc_maps.h"
#include "platform/sys.h"
#include "support/log.h"

#include <errno.h>
#include <fcntl.h>

#include <algorithm>

namespace mmtier::detail {
namespace {

long count_maps(void *) { return sys::count_mappings(); }

long read_max_map_count(void *) {
  long fd = sys::openat(AT_FDCWD, "/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return fd;
  char buf[32];
  long r = sys::read(static_cast<int>(fd), buf, sizeof buf - 1);
  sys::close(static_cast<int>(fd));
  if (r <= 0) return r < 0 ? r : -EINVAL;
  long v = 0;
  for (long i = 0; i < r && buf[i] >= '0' && buf[i] <= '9'; ++i) v = v * 10 + (buf[i] - '0');
  return v > 0 ? v : -EINVAL;
}

}  // namespace

void map_guard::init(count_fn mappings, count_fn limit, void *ctx) {
  *this = map_guard();
  mappings_ = mappings;
  limit_fn_ = limit;
  ctx_ = ctx;
}

void map_guard::init_default() { init(count_maps, read_max_map_count, nullptr); }

bool map_guard::recount(uint64_t now_ns) {
  const long limit = limit_fn_ ? limit_fn_(ctx_) : -ENOSYS;
  const long count = mappings_ ? mappings_(ctx_) : -ENOSYS;
  counted_at_ = now_ns;
  if (limit <= 0 || count < 0) return false;  // unknown: keep the last figures
  ++counts_;
  counted_ = true;
  limit_ = limit;
  count_ = count;
  since_ = 0;
  reserve_ = std::min(std::max(limit / 8, 1024L), limit / 2);
  return true;
}

bool map_guard::allow(size_t n, uint64_t now_ns) {
  if (!counted_ && !recount(now_ns)) return true;  // no figures at all: nothing to guard with
  const long want = kPerMigration * static_cast<long>(n);
  if (!paused_ && count_ + kPerMigration * static_cast<long>(since_) + want <= limit_ - reserve_) return true;
  // Possibly near the limit: count again (not more often than kRecountNs;
  // a first count just made is fresh).
  if (now_ns - counted_at_ >= kRecountNs) recount(now_ns);
  const long high = limit_ - reserve_, low = limit_ - reserve_ - reserve_ / 2;
  const long bound = count_ + kPerMigration * static_cast<long>(since_) + want;
  if (paused_ && bound <= low) {
    paused_ = false;
    MMTIER_INFO("mover: %ld of vm.max_map_count=%ld mappings in use; moving memory again", count_, limit_);
    return true;
  }
  if (!paused_ && bound <= high) return true;
  if (!paused_) {
    paused_ = true;
    MMTIER_WARN("mover: %ld of vm.max_map_count=%ld mappings in use; memory is not moved between tiers "
                "until fewer than %ld are (raise vm.max_map_count for this heap)",
                count_, limit_, low);
  }
  ++refusals_;
  return false;
}

}  // namespace mmtier::detail
