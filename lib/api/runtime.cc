// Runtime start-up and the bootstrap area (see runtime.h).
#include "api/trigger.h"
#include "api/runtime.h"

#include "api/control.h"

#include "alloc/engine.h"
#include "alloc/small.h"
#include "config/config.h"
#include "mover/mover.h"
#include "heap/heap.h"
#include "platform/sys.h"
#include "snapshot/capture.h"
#include "stats/live_stats.h"
#include "stats/report.h"
#include "support/log.h"
#include "support/world.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>

#include <cstring>

namespace mmtier::detail {

std::atomic<int> g_runtime_state{kUninit};

namespace {
std::atomic<bool> g_want_background{false};
}

void runtime_want_background() {
  g_want_background.store(true, std::memory_order_release);
  if (!runtime_ready()) return;
  mover_enable(control_start);
  // MMTIER_BACKGROUND_AT=0: the threads start now, from the library's
  // constructor, not at the next slow path of an allocation, which an idle
  // program (a script sleeping between lines) may not reach for a long time.
  if (config_get().background_at == 0) heap_maybe_start();
}

namespace {

thread_local bool t_starting __attribute__((tls_model("initial-exec"))) = false;

constexpr size_t kBootSize = 1 << 20;
alignas(64) unsigned char g_boot[kBootSize];
std::atomic<size_t> g_boot_used{0};

}  // namespace

void *boot_alloc(size_t size, size_t align) {
  if (align < 16) align = 16;
  // Header of 16 bytes before the block records its size.
  for (;;) {
    size_t used = g_boot_used.load(std::memory_order_relaxed);
    size_t start = (used + 16 + align - 1) & ~(align - 1);
    if (start + size > kBootSize || start + size < start) return nullptr;
    if (g_boot_used.compare_exchange_weak(used, start + size, std::memory_order_relaxed)) {
      memcpy(g_boot + start - sizeof(size_t), &size, sizeof size);
      return g_boot + start;
    }
  }
}

bool boot_owns(const void *p) {
  return static_cast<const unsigned char *>(p) >= g_boot &&
         static_cast<const unsigned char *>(p) < g_boot + kBootSize;
}

size_t boot_usable_size(const void *p) {
  size_t size;
  memcpy(&size, static_cast<const unsigned char *>(p) - sizeof(size_t), sizeof size);
  return size;
}

int runtime_start() {
  int s = g_runtime_state.load(std::memory_order_acquire);
  if (s == kReady || s == kUnmanaged) return s;
  if (s == kStarting && t_starting) return kStarting;
  int expected = kUninit;
  if (!g_runtime_state.compare_exchange_strong(expected, kStarting, std::memory_order_acq_rel)) {
    // Another thread is starting it: wait.
    while ((s = g_runtime_state.load(std::memory_order_acquire)) == kStarting) sched_yield();
    return s;
  }
  t_starting = true;
  config_load();  // exits on invalid configuration
  int result = kUnmanaged;
  world_register();
  control_register();
  snapshot_counters_register();
  if (heap_init()) {
    if (engine_init()) {
      result = kReady;
      // Without it small blocks come from the engine too: slower, still correct.
      if (!small_init()) MMTIER_WARN("small-object allocator did not start; using the engine for every size");
    } else {
      MMTIER_ERROR("allocator engine did not start; memory is not tiered");
    }
  } else {
    MMTIER_ERROR("memory is not tiered: no heap");
  }
  t_starting = false;
  g_runtime_state.store(result, std::memory_order_release);
  if (result == kReady) {
    g_snapshot_stats_page = live_stats_page;
    live_stats_init();
    trigger_init();
  }
  if (result == kReady && g_want_background.load(std::memory_order_acquire)) mover_enable(control_start);
  return result;
}

// The runtime starts when the library is loaded, before main() (so that an
// invalid configuration stops the program there) and before the engine's own
// load-time initialisation, which would otherwise allocate before the heap
// exists.  The exit report is written when the program ends; nothing is torn
// down, so destructors and atexit handlers that run after this still work.
namespace {
__attribute__((constructor(102))) void start_at_load() { runtime_start(); }
__attribute__((destructor(101))) void report_at_exit() {
  runtime_exit_report();
  if (runtime_ready()) {
    control_exit();
    live_stats_exit();
  }
}
}  // namespace

void runtime_exit_report() {
  if (!runtime_ready()) return;
  const config &cfg = config_get();
  if (!cfg.report[0]) return;
  int fd = 2;
  bool close_fd = false;
  if (strcmp(cfg.report, "stderr") != 0) {
    char path[kPathMax + 32];
    size_t o = 0;
    for (const char *p = cfg.report; *p && o + 24 < sizeof path; ++p) {
      if (p[0] == '%' && p[1] == 'p') {
        o += format(path + o, sizeof path - o, "%ld", sys::getpid());
        ++p;
      } else {
        path[o++] = *p;
      }
    }
    path[o] = '\0';
    long r = sys::openat(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (r < 0) {
      MMTIER_WARN("cannot write the report to %s (error %ld)", path, -r);
      return;
    }
    fd = static_cast<int>(r);
    close_fd = true;
  }
  write_report(fd);
  if (close_fd) sys::close(fd);
}

}  // namespace mmtier::detail
