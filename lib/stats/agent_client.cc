// The node agent's client (see agent_client.h).
#include "stats/agent_client.h"

#include "config/config.h"
#include "heap/heap.h"
#include "mover/mover.h"
#include "platform/clock.h"
#include "platform/fd_guard.h"
#include "platform/sys.h"
#include "policy/budget.h"
#include "stats/agent_format.h"
#include "support/log.h"
#include "support/quiesce.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>
#include <cstdio>
#include <cstring>

namespace mmtier::detail {
namespace {

namespace af = agent_format;

constexpr uint64_t kRetryNs = 2'000'000'000;       // a connection tried at most this often
constexpr uint64_t kReportNs = 1'000'000'000;      // a report at least this often
constexpr uint64_t kKeepBudgetNs = 30'000'000'000; // a lost agent's budget kept this long

struct client {
  int fd = -1;
  uint64_t next_try_ns = 0;
  uint64_t last_report_ns = 0;
  uint64_t last_demand = 0;
  uint64_t lost_ns = 0;  // when the connection ended while a budget was held (0: not)
  char last_note[sizeof(af::message::note)] = {};
  bool said_inherited = false;
};
client g_client;  // the mover's thread only (a fork child's handler resets it)

// The snapshots offered (under g_state_lock) and whether the agent takes
// them.
char g_offer_path[sizeof(af::message::control_path)] = {};
bool g_offer_sent = false;  // the agent has the offer as it is now (atomic accesses)
std::atomic<bool> g_schedules{false};

pthread_mutex_t g_state_lock = PTHREAD_MUTEX_INITIALIZER;
agent_client_state g_state;  // under g_state_lock: for readers (the report)

void set_state(bool connected, bool has_budget, uint64_t budget, uint32_t granted, bool counted) {
  pthread_mutex_lock(&g_state_lock);
  g_state.connected = connected;
  g_state.has_budget = has_budget;
  g_state.budget_bytes = budget;
  g_state.granted_class = granted;
  g_state.budgets += counted;
  pthread_mutex_unlock(&g_state_lock);
}

// What the process's own policy gives it on DRAM now, and what it holds.
void figures(uint64_t *demand, uint64_t *dram, uint64_t *pmem) {
  heap_counters c;
  heap_counters_get(&c);
  const config &cfg = config_get();
  // The budget without the node's: MMTIER_DRAM_LIMIT alone.
  c.limit_units[kTierDram] = cfg.dram_limit == SIZE_MAX ? SIZE_MAX : cfg.dram_limit >> kUnitShift;
  const dram_budget b = dram_budget_of(c, cfg);
  const size_t all = c.units[kTierDram] + c.units[kTierPmem];
  *demand = static_cast<uint64_t>(b.budget == SIZE_MAX ? all : b.budget) << kUnitShift;
  *dram = static_cast<uint64_t>(c.units[kTierDram]) << kUnitShift;
  *pmem = static_cast<uint64_t>(c.units[kTierPmem]) << kUnitShift;
}

af::message blank(uint32_t type) {
  af::message m;
  memset(&m, 0, sizeof m);
  m.magic = af::kMagic;
  m.version = af::kVersion;
  m.type = type;
  // Every hello and report carries the snapshot offer as it is now.
  pthread_mutex_lock(&g_state_lock);
  if (g_offer_path[0]) {
    m.snapshot_every_ns = config_get().snapshot_every_ns;
    memcpy(m.control_path, g_offer_path, sizeof m.control_path);
  }
  pthread_mutex_unlock(&g_state_lock);
  __atomic_store_n(&g_offer_sent, true, __ATOMIC_RELEASE);
  return m;
}

bool send_msg(const af::message &m) {
  return sys::raw(SYS_sendto, g_client.fd, reinterpret_cast<long>(&m), sizeof m, MSG_DONTWAIT | MSG_NOSIGNAL, 0, 0) ==
         static_cast<long>(sizeof m);
}

// Field 22 of /proc/self/stat: the process's start, in clock ticks after
// boot (a restarted agent admits guarantees oldest first).
uint64_t start_time() {
  char buf[1024];
  const int fd = static_cast<int>(sys::raw(SYS_openat, AT_FDCWD, reinterpret_cast<long>("/proc/self/stat"),
                                           O_RDONLY | O_CLOEXEC));
  if (fd < 0) return 0;
  const long n = sys::read(fd, buf, sizeof buf - 1);
  sys::close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  const char *p = strrchr(buf, ')');  // comm may hold spaces and parentheses
  if (!p) return 0;
  int field = 2;
  for (; *p && field < 22; ++p)
    if (*p == ' ') ++field;
  uint64_t v = 0;
  for (; *p >= '0' && *p <= '9'; ++p) v = v * 10 + static_cast<uint64_t>(*p - '0');
  return v;
}

void disconnect(uint64_t now, bool had_budget) {
  fd_unguard(g_client.fd);
  sys::close(g_client.fd);
  g_client.fd = -1;
  g_client.next_try_ns = now + kRetryNs;
  if (had_budget) g_client.lost_ns = now;
  // The process's own timer takes its snapshots again.
  g_schedules.store(false, std::memory_order_release);
  agent_client_state s;
  agent_client_get(&s);
  set_state(false, s.has_budget, s.budget_bytes, s.granted_class, false);
  MMTIER_INFO("node agent: connection ended; %s", had_budget ? "the budget is kept while it is away" : "working alone");
}

// A fork child mapping mostly its parent's memory (a Redis BGSAVE, a
// worker given one task) is part of its parent: registered, it would take
// a share of the node from the parent while it runs.  It registers once it
// has placed 32 MiB of its own (what a fresh process has placed when its
// mover starts, by default).
constexpr size_t kOwnUnitsToRegister = 16;  // 32 MiB

bool mostly_inherited() {
  heap_counters c;
  heap_counters_get(&c);
  const size_t all = c.units[kTierDram] + c.units[kTierPmem];
  const size_t own = all > c.units_at_fork ? all - c.units_at_fork : 0;
  if (!c.units_at_fork || own >= kOwnUnitsToRegister) return false;
  if (!g_client.said_inherited) {
    g_client.said_inherited = true;
    MMTIER_DEBUG("node agent: not registering yet: %zu of %zu units came with the fork", all - own, all);
  }
  return true;
}

bool connect_agent(uint64_t now) {
  const config &cfg = config_get();
  g_client.next_try_ns = now + kRetryNs;
  if (mostly_inherited()) return false;
  // Cheap when there is no agent: one failed stat every few seconds.
  struct stat st;
  if (sys::raw(SYS_newfstatat, AT_FDCWD, reinterpret_cast<long>(cfg.agent_socket), reinterpret_cast<long>(&st), 0) != 0)
    return false;
  const long s = sys::raw(SYS_socket, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s < 0) return false;
  sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, cfg.agent_socket, strlen(cfg.agent_socket));
  if (sys::raw(SYS_connect, s, reinterpret_cast<long>(&addr), sizeof addr) != 0) {
    sys::close(static_cast<int>(s));
    return false;
  }
  const int fd = fd_guard(static_cast<int>(s));
  if (fd < 0) {
    sys::close(static_cast<int>(s));
    return false;
  }
  g_client.fd = fd;
  af::message m = blank(af::kHello);
  m.qos = cfg.qos_class;
  m.guarantee_bytes = cfg.qos_class == af::kGuaranteed ? cfg.qos_dram : 0;
  m.weight = cfg.qos_weight;
  figures(&m.demand_bytes, &m.dram_bytes, &m.pmem_bytes);
  agent_client_state st_now;
  agent_client_get(&st_now);
  m.held_budget_bytes = st_now.has_budget ? st_now.budget_bytes : af::kNone;
  m.start_time = start_time();
  sys::raw(SYS_prctl, PR_GET_NAME, reinterpret_cast<long>(m.comm), 0, 0, 0);
  if (!send_msg(m)) {
    disconnect(now, st_now.has_budget);
    return false;
  }
  g_client.last_report_ns = now;
  g_client.last_demand = m.demand_bytes;
  set_state(true, st_now.has_budget, st_now.budget_bytes, st_now.granted_class, false);
  MMTIER_INFO("node agent: registered at %s", cfg.agent_socket);
  return true;
}

void apply_budget(const af::message &m) {
  const bool none = m.budget_bytes == af::kNone;
  heap_set_node_dram_limit(none ? SIZE_MAX : static_cast<size_t>(m.budget_bytes >> kUnitShift));
  set_state(true, !none, none ? 0 : m.budget_bytes, m.qos, true);
  g_client.lost_ns = 0;
  const bool schedules = (m.flags & af::kSchedulesSnapshots) != 0;
  if (schedules != g_schedules.exchange(schedules, std::memory_order_acq_rel))
    MMTIER_INFO("node agent: %s the periodic snapshots", schedules ? "takes over" : "hands back");
  char note[sizeof m.note];
  memcpy(note, m.note, sizeof note);
  note[sizeof note - 1] = 0;
  // Said once per distinct note (a class or guarantee refused).
  if (strcmp(note, g_client.last_note) != 0) {
    memcpy(g_client.last_note, note, sizeof note);
    if (note[0]) MMTIER_WARN("node agent: %s", note);
  }
  MMTIER_DEBUG("node agent: budget %s%llu MiB", none ? "none " : "",
               none ? 0ULL : static_cast<unsigned long long>(m.budget_bytes >> 20));
}

void drop_budget() {
  heap_set_node_dram_limit(SIZE_MAX);
  set_state(false, false, 0, 0, false);
  g_client.lost_ns = 0;
  MMTIER_INFO("node agent: away for %llu s; working alone", static_cast<unsigned long long>(kKeepBudgetNs / 1000000000));
}

// In a fork child: the connection is the parent's (closed here, not shut
// down: the parent keeps it); the child registers itself once its own
// mover runs.  Its budget was reset by the heap.
// Nothing registered, nothing offered (a fork child's periodic snapshots
// are its parent's; a restored process's control thread makes its socket
// anew and offers them again).
void reset_state() {
  g_client = client{};
  pthread_mutex_init(&g_state_lock, nullptr);
  g_state = agent_client_state{};
  g_offer_path[0] = 0;
  g_offer_sent = false;
  g_schedules.store(false, std::memory_order_relaxed);
}

void fork_child() {
  if (g_client.fd >= 0) {
    fd_unguard(g_client.fd);
    sys::close(g_client.fd);
  }
  reset_state();
}

// A restored process: the descriptor was the dead original's (forgotten,
// not closed).
void restored() { reset_state(); }

}  // namespace

void agent_client_register() {
  if (!config_get().agent_socket[0]) return;
  quiesce_register(kRankControlStart, {nullptr, nullptr, fork_child, nullptr, restored});
}

void agent_client_offer_snapshots(const char *control_path) {
  pthread_mutex_lock(&g_state_lock);
  const size_t n = control_path ? strlen(control_path) : 0;
  if (n < sizeof g_offer_path) {
    memcpy(g_offer_path, control_path ? control_path : "", n);
    g_offer_path[n] = 0;
  }
  pthread_mutex_unlock(&g_state_lock);
  __atomic_store_n(&g_offer_sent, false, __ATOMIC_RELEASE);  // the next tick tells the agent
  if (!control_path) g_schedules.store(false, std::memory_order_release);
}

bool agent_client_schedules_snapshots() { return g_schedules.load(std::memory_order_acquire); }

void agent_client_get(agent_client_state *out) {
  pthread_mutex_lock(&g_state_lock);
  *out = g_state;
  pthread_mutex_unlock(&g_state_lock);
}

void agent_client_tick() {
  const config &cfg = config_get();
  if (!cfg.agent_socket[0]) return;
  const uint64_t now = sys::mono_ns();
  if (g_client.fd < 0) {
    if (g_client.lost_ns && now - g_client.lost_ns >= kKeepBudgetNs) drop_budget();
    if (now < g_client.next_try_ns || !connect_agent(now)) return;
  }
  // Budgets from the agent.
  for (;;) {
    af::message m;
    const long n = sys::raw(SYS_recvfrom, g_client.fd, reinterpret_cast<long>(&m), sizeof m, MSG_DONTWAIT, 0, 0);
    if (n == -EAGAIN || n == -EINTR) break;
    if (n <= 0) {
      agent_client_state s;
      agent_client_get(&s);
      disconnect(now, s.has_budget);
      return;
    }
    if (n == static_cast<long>(sizeof m) && m.magic == af::kMagic && m.version == af::kVersion && m.type == af::kBudget)
      apply_budget(m);
  }
  uint64_t demand, dram, pmem;
  figures(&demand, &dram, &pmem);
  const uint64_t step = uint64_t{1} << kUnitShift;
  const bool changed = demand > g_client.last_demand + step || demand + step < g_client.last_demand ||
                       !__atomic_load_n(&g_offer_sent, __ATOMIC_ACQUIRE);
  if (!changed && now - g_client.last_report_ns < kReportNs) return;
  af::message r = blank(af::kReport);
  r.demand_bytes = demand;
  r.dram_bytes = dram;
  r.pmem_bytes = pmem;
  if (!send_msg(r)) {
    agent_client_state s;
    agent_client_get(&s);
    disconnect(now, s.has_budget);
    return;
  }
  g_client.last_report_ns = now;
  g_client.last_demand = demand;
}

}  // namespace mmtier::detail
