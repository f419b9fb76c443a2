// Snapshot layer: what this process's snapshots did so far (capture.h,
// snapshot_counters), for the statistics page a layer above publishes.
#include "snapshot/capture.h"

#include "platform/clock.h"
#include "support/quiesce.h"

#include <pthread.h>

#include <algorithm>
#include <cerrno>

namespace mmtier::detail {

void (*g_snapshot_done_hook)() = nullptr;

namespace {

// A leaf (taken inside the statistics page's lock), in the quiesce
// sequence: a fork or a world stop takes it, so a fork child or a
// restored process never finds it held by a thread it does not have.
pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
snapshot_counters g_counters;

void lock() { pthread_mutex_lock(&g_lock); }
void unlock() { pthread_mutex_unlock(&g_lock); }
void made_anew() { pthread_mutex_init(&g_lock, nullptr); }

}  // namespace

void snapshot_counters_register() { quiesce_register(kRankMoverStats, {lock, unlock, made_anew, nullptr, made_anew}); }

void snapshot_count(long r, const snap_result &res) {
  if (r == -EBUSY) return;  // another one was under way: nothing was attempted
  pthread_mutex_lock(&g_lock);
  if (r < 0) {
    ++g_counters.failed;
  } else {
    ++g_counters.taken;
    g_counters.last_ns = sys::real_ns();
    g_counters.last_pause_ns = res.paused_ns;
    g_counters.last_written = res.mem_bytes;
    g_counters.last_shared = res.shared;
    g_counters.last_linked = res.pmem_linked;
    g_counters.pause_max_ns = std::max(g_counters.pause_max_ns, res.paused_ns);
    g_counters.pause_total_ns += res.paused_ns;
    g_counters.written += res.mem_bytes;
  }
  pthread_mutex_unlock(&g_lock);
  if (void (*hook)() = __atomic_load_n(&g_snapshot_done_hook, __ATOMIC_ACQUIRE)) hook();
}

void snapshot_counters_get(snapshot_counters *out) {
  pthread_mutex_lock(&g_lock);
  *out = g_counters;
  pthread_mutex_unlock(&g_lock);
}

}  // namespace mmtier::detail
