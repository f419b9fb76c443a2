// NUMA-node tiers: where the slow memory is a NUMA node of its own (a CXL
// memory expander, or persistent memory onlined as system RAM with KMEM
// DAX), both tiers are the process's anonymous private memory, each range
// bound to its nodes with mbind: the fast tier to the nodes with CPUs, the
// slow tier to the slow node.  A unit moves between them where it is: the
// kernel migrates its pages (move_pages) while the program goes on using
// them, with no file, no second mapping and no userfaultfd; fork gives the
// child copy-on-write pages as for any anonymous memory.
//
// The policy is MPOL_PREFERRED (the fast tier: MPOL_PREFERRED_MANY over
// every node with CPUs, Linux 5.15+): a node that is full gives its pages
// to the next one instead of failing the fault, and budgets, not the
// kernel, keep each tier within its share.  A move is different: it must
// land where the mover counts it.  mbind's MPOL_MF_MOVE takes the new
// pages by the policy, so into a node at its watermarks it copies the unit
// onto the other node again (a huge page whose node has no free 2 MiB
// block does so even above the watermarks).  move_pages takes them from
// the node asked for or fails (a huge page is split and tried page by
// page), and says what did not move.  So a move first looks at the room
// its nodes have above their high watermarks (node_room) and is refused
// with ENOSPC when the unit does not fit, or when most of its pages could
// not be moved: the mover then takes the tier as full and makes room by
// demoting first.  The range takes the tier's policy (bind) under the heap
// lock before its pages move, so that pages first touched meanwhile are
// made on the tier, and its old policy back when the move is refused
// (lib/heap/node_moves.cc).
//
// Pages another process maps too (a fork's copy-on-write pages not yet
// written by either) move only with MPOL_MF_MOVE_ALL, which needs
// CAP_SYS_NICE: taken when the process has it, else those pages stay
// where they are until one side writes them (the copy is made on the
// unit's tier).
#include "tier/tier.h"

#include "platform/sys.h"
#include "support/layout.h"
#include "support/log.h"
#include "support/meta.h"

#include "platform/clock.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <new>

namespace mmtier::detail {
namespace {

constexpr int kMpolPreferred = 1;
constexpr int kMpolPreferredMany = 5;  // Linux 5.15
constexpr unsigned kMpolMfMove = 1u << 1;
constexpr unsigned kMpolMfMoveAll = 1u << 2;
constexpr size_t kMaskWords = kMaxNodes / 64;

struct node_mask {
  unsigned long bits[kMaskWords] = {};
  void set(int n) { bits[n / 64] |= 1ul << (n % 64); }
  bool has(int n) const { return (bits[n / 64] >> (n % 64)) & 1; }
  bool empty() const {
    for (unsigned long w : bits)
      if (w) return false;
    return true;
  }
  bool overlaps(const node_mask &o) const {
    for (size_t w = 0; w < kMaskWords; ++w)
      if (bits[w] & o.bits[w]) return true;
    return false;
  }
  int first() const {
    for (int n = 0; n < kMaxNodes; ++n)
      if (has(n)) return n;
    return -1;
  }
};

struct node_tier_state {
  node_mask nodes;   // where this tier's pages go
  int mode = kMpolPreferred;
  // What follows changes as units move, outside the heap lock (the heap's
  // node_moves.cc), where the mover's moves and a program's mmtier_move()
  // may meet: atomics, each figure an estimate that a stale reading only
  // makes a move try or wait once more.
  std::atomic<unsigned> move_flag{kMpolMfMove};  // kMpolMfMoveAll with CAP_SYS_NICE
  // The room of the nodes for moves in: bytes they can give (free, and
  // clean unmapped inactive page cache, which a move's allocation reclaims) above
  // the zones' high watermarks, as read at room_ns and less what moved in
  // or was placed since; free_room the same of free memory alone, for
  // placements (a page fault takes the next node before it reclaims).
  uint64_t keep_bytes = 0;  // what the nodes' zones keep from user pages (zones_keep), read at open
  std::atomic<int64_t> room{0}, free_room{0};
  std::atomic<uint64_t> room_ns{0};
  std::atomic<uint64_t> room_moves{0};  // g_moves as the figures were read
  // Placed, not yet seen in the nodes' free memory (node_claim): a unit is
  // placed when it is mapped, its pages are made when first touched.
  std::atomic<int64_t> claimed{0}, last_free{-1};
  std::atomic<uint64_t> claimed_ns{0};  // the last placement
  // Moved out to the other tier's nodes, not yet seen in these nodes' free
  // memory: the kernel frees a moved huge page onto the moving CPU's
  // per-CPU list, which MemFree does not count until the list is drained
  // (6.1 keeps huge pages there; the 6.1 guest's lists held 9-20 MiB), and
  // the next page that CPU asks of the node comes from that list.  A
  // promotion right after the demotion that made its room is let in on
  // it; what is still unseen a second after the last move out is let go.
  std::atomic<int64_t> released{0};
  std::atomic<uint64_t> released_ns{0};
  std::atomic<int> target{0};  // where moves in go: the node with the most free memory at room_ns
  std::atomic<bool> said_full{false};
};

node_tier_state *state(tier *t) { return static_cast<node_tier_state *>(t->impl); }

// The first bytes of a small file (sysfs, procfs), NUL-terminated (""
// when it cannot be read); false if it cannot be read.
bool read_word(const char *path, char *buf, size_t cap) {
  buf[0] = '\0';
  const long fd = sys::openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return false;
  const long n = sys::read(static_cast<int>(fd), buf, cap - 1);
  sys::close(static_cast<int>(fd));
  buf[n > 0 ? n : 0] = '\0';
  return n >= 0;
}

// A node list of sysfs ("0-1,3") as a mask; false if unreadable.
bool read_list(const char *path, node_mask *out) {
  char buf[512];
  if (!read_word(path, buf, sizeof buf)) return false;
  *out = node_mask();
  for (const char *p = buf; *p >= '0' && *p <= '9';) {
    long lo = 0, hi;
    while (*p >= '0' && *p <= '9') lo = lo * 10 + (*p++ - '0');
    hi = lo;
    if (*p == '-') {
      hi = 0;
      ++p;
      while (*p >= '0' && *p <= '9') hi = hi * 10 + (*p++ - '0');
    }
    for (long k = lo; k <= hi && k < kMaxNodes; ++k) out->set(static_cast<int>(k));
    if (*p == ',') ++p;
  }
  return true;
}

bool starts(const char *s, const char *prefix) {
  while (*prefix)
    if (*s++ != *prefix++) return false;
  return true;
}

}  // namespace

namespace {

// A field of a node's meminfo text ("Node 0 MemFree:        2837364 kB"),
// name with its colon, in bytes; -1 when absent or unreadable.
long long meminfo_field(const char *text, const char *name) {
  const size_t len = __builtin_strlen(name);
  for (const char *p = text; *p; ++p) {
    if (p[0] != name[0] || !starts(p, name) || (p > text && p[-1] != ' ')) continue;
    p += len;
    while (*p == ' ') ++p;
    if (*p < '0' || *p > '9') return -1;
    long long kb = 0;
    while (*p >= '0' && *p <= '9') kb = kb * 10 + (*p++ - '0');
    return kb * 1024;
  }
  return -1;
}

}  // namespace

long long node_meminfo_available(const char *text) {
  const long long free = meminfo_field(text, "MemFree:");
  if (free < 0) return -1;
  // Clean page cache on the inactive list that no process maps: what the
  // kernel reclaims first for a page asked of this node, at no cost to a
  // running program (a host's node is full of such cache after a while;
  // MemFree alone would leave no room there for ever).  Mapped file pages
  // are programs' code and data: reclaiming those for a move made every
  // program of the 6.1 guest fault them back in.
  const long long inactive = meminfo_field(text, "Inactive(file):");
  long long clean = inactive;
  for (const char *name : {"Dirty:", "Writeback:", "Mapped:"}) {
    const long long v = meminfo_field(text, name);
    if (v > 0) clean -= v;
  }
  return free + (clean > 0 ? clean : 0);
}

void zoneinfo_line(const char *line, size_t len, int *node, uint64_t *high_pages, const bool *want) {
  const char *p = line, *end = line + len;
  if (len > 5 && starts(p, "Node ")) {
    // "Node 0, zone   Normal": the zone's node.
    p += 5;
    int n = 0;
    while (p < end && *p >= '0' && *p <= '9' && n < kMaxNodes) n = n * 10 + (*p++ - '0');
    *node = n < kMaxNodes ? n : -1;
    return;
  }
  // "        high     1234" (a zone's watermark; the per-CPU lists'
  // "high:" has a colon) and "        protection: (0, 2889, 2889)" (the
  // pages the zone keeps from allocations that could use a higher zone:
  // the largest counts, a user page being such an allocation).
  while (p < end && *p == ' ') ++p;
  if (*node < 0 || !want[*node]) return;
  if (end - p > 5 && starts(p, "high ")) {
    p += 5;
    while (p < end && *p == ' ') ++p;
    uint64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9') v = v * 10 + static_cast<uint64_t>(*p++ - '0');
    *high_pages += v;
  } else if (end - p > 12 && starts(p, "protection:")) {
    uint64_t most = 0;
    for (p += 11; p < end;) {
      if (*p < '0' || *p > '9') {
        ++p;
        continue;
      }
      uint64_t v = 0;
      while (p < end && *p >= '0' && *p <= '9') v = v * 10 + static_cast<uint64_t>(*p++ - '0');
      if (v > most) most = v;
    }
    *high_pages += most;
  }
}

namespace {

// What the zones of the nodes in m keep from a user page, in bytes (0 if
// /proc/zoneinfo cannot be read): their high watermarks (below them
// kswapd reclaims and allocations start going elsewhere) and their
// protection (a DMA zone's free pages are kept for allocations that need
// them: on a small node they are most of what looks free).  Read line by
// line through a small buffer (the file grows with the number of CPUs).
uint64_t zones_keep(const node_mask &m) {
  const long fd = sys::openat(AT_FDCWD, "/proc/zoneinfo", O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return 0;
  static bool want[kMaxNodes];
  for (int n = 0; n < kMaxNodes; ++n) want[n] = m.has(n);
  char buf[4096];
  size_t have = 0;
  int node = -1;
  uint64_t pages = 0;
  for (;;) {
    const long r = sys::read(static_cast<int>(fd), buf + have, sizeof buf - have);
    if (r <= 0) break;
    have += static_cast<size_t>(r);
    size_t start = 0;
    for (size_t i = 0; i < have; ++i) {
      if (buf[i] != '\n') continue;
      zoneinfo_line(buf + start, i - start, &node, &pages, want);
      start = i + 1;
    }
    if (start == 0 && have == sizeof buf) start = have;  // a line longer than the buffer: dropped
    __builtin_memmove(buf, buf + start, have - start);
    have -= start;
  }
  sys::close(static_cast<int>(fd));
  return pages * 4096;
}

// Bytes the nodes in m can give (node_meminfo_available of their sysfs
// meminfo), or -1; *free: their free bytes alone; *most: the node that can
// give the most.
int64_t nodes_available(const node_mask &m, int *most, int64_t *free) {
  int64_t sum = 0, best = -1;
  *free = 0;
  for (int n = 0; n < kMaxNodes; ++n) {
    if (!m.has(n)) continue;
    char path[80], buf[2048];
    format(path, sizeof path, "/sys/devices/system/node/node%d/meminfo", n);
    if (!read_word(path, buf, sizeof buf)) return -1;
    const long long f = node_meminfo_available(buf);
    if (f < 0) return -1;
    *free += meminfo_field(buf, "MemFree:");
    sum += f;
    if (f > best) {
      best = f;
      *most = n;
    }
  }
  return sum;
}

// The room figures of the tier's nodes, read again when 100 ms old, or
// when the caller finds them short (then at most every 10 ms): between
// readings, what moved in or was placed is taken off them.  False when
// they cannot be read.
std::atomic<long long> g_test_available{-1};  // node_tier_test_available
// Moves between the node tiers so far: one out of a node is room in it,
// so a figure found short is read again at once after one.
std::atomic<uint64_t> g_moves{0};
// The two node tiers' states (fast, slow), for a move out of one to be
// room in the other (node_tier_state::released).
std::atomic<node_tier_state *> g_states[2];

bool refresh_room(node_tier_state *s, bool short_now) {
  const long long given = g_test_available.load(std::memory_order_relaxed);
  if (given >= 0) {
    s->room.store(given - static_cast<int64_t>(s->keep_bytes), std::memory_order_relaxed);
    s->free_room.store(given - static_cast<int64_t>(s->keep_bytes), std::memory_order_relaxed);
    s->room_ns.store(0, std::memory_order_relaxed);  // the kernel's figures read at once without it
    return true;
  }
  const uint64_t now = sys::mono_ns();
  const uint64_t at = s->room_ns.load(std::memory_order_relaxed);
  const uint64_t age = now - at;
  const uint64_t moves = g_moves.load(std::memory_order_relaxed);
  if (at != 0 && age <= 100'000'000 &&
      (!short_now || (age <= 10'000'000 && s->room_moves.load(std::memory_order_relaxed) == moves)))
    return true;
  int most = s->target.load(std::memory_order_relaxed);
  int64_t free = 0;
  const int64_t f = nodes_available(s->nodes, &most, &free);
  if (f < 0) return false;
  s->target.store(most, std::memory_order_relaxed);
  // What free memory fell since the last reading is taken as placed pages
  // made; what is still claimed a second after the last placement is let go
  // (a mapping never touched whole).
  int64_t claimed = s->claimed.load(std::memory_order_relaxed);
  const int64_t before = s->last_free.exchange(free, std::memory_order_relaxed);
  if (before > free) claimed -= before - free;
  if (claimed < 0 || now - s->claimed_ns.load(std::memory_order_relaxed) > 1'000'000'000) claimed = 0;
  s->claimed.store(claimed, std::memory_order_relaxed);
  int64_t released = s->released.load(std::memory_order_relaxed);
  if (before >= 0 && free > before) released -= free - before;
  if (released < 0 || now - s->released_ns.load(std::memory_order_relaxed) > 1'000'000'000) released = 0;
  s->released.store(released, std::memory_order_relaxed);
  s->room.store(f - static_cast<int64_t>(s->keep_bytes) - claimed + released, std::memory_order_relaxed);
  s->free_room.store(free - static_cast<int64_t>(s->keep_bytes) - claimed, std::memory_order_relaxed);
  s->room_ns.store(now, std::memory_order_relaxed);
  s->room_moves.store(moves, std::memory_order_relaxed);
  return true;
}

// The room of the tier's nodes for a move of len bytes, in bytes (-1:
// unknown).
long long node_room_for(tier *t, size_t len) {
  node_tier_state *s = state(t);
  if (!refresh_room(s, s->room.load(std::memory_order_relaxed) < static_cast<int64_t>(len))) return -1;
  const int64_t room = s->room.load(std::memory_order_relaxed);
  return room > 0 ? room : 0;
}

// Takes len bytes moved in or placed off both room figures.
void take_room(node_tier_state *s, size_t len) {
  s->room.fetch_sub(static_cast<int64_t>(len), std::memory_order_relaxed);
  s->free_room.fetch_sub(static_cast<int64_t>(len), std::memory_order_relaxed);
}

long long node_room(tier *t) { return node_room_for(t, 0); }

// A placement: its pages come from free memory (a fault takes the next
// node before it reclaims page cache).
bool node_claim(tier *t, size_t len) {
  node_tier_state *s = state(t);
  if (!refresh_room(s, s->free_room.load(std::memory_order_relaxed) < static_cast<int64_t>(len))) return true;
  if (s->free_room.load(std::memory_order_relaxed) < static_cast<int64_t>(len)) return false;
  take_room(s, len);
  s->claimed.fetch_add(static_cast<int64_t>(len), std::memory_order_relaxed);
  s->claimed_ns.store(sys::mono_ns(), std::memory_order_relaxed);
  return true;
}

// Says once that the tier's nodes are short of room for moves in.
void say_full(tier *t, node_tier_state *s) {
  if (s->said_full.exchange(true, std::memory_order_relaxed)) return;
  MMTIER_INFO("%s tier: NUMA node %d has %lld MiB free above its watermarks and reserves; moves into it wait for room "
              "(the mover demotes first)",
              t->index == kTierDram ? "DRAM" : "PMem", s->nodes.first(),
              static_cast<long long>(s->room.load(std::memory_order_relaxed)) >> 20);
}

long long node_shortfall(tier *t) {
  if (node_room_for(t, 0) < 0) return 0;
  const int64_t room = state(t)->room.load(std::memory_order_relaxed);
  if (room < 0) say_full(t, state(t));
  return room < 0 ? -room : 0;
}

long node_lies_on(tier *t, void *const *pages, size_t n, int *out) {
  const long r = sys::raw(SYS_move_pages, 0, static_cast<long>(n), reinterpret_cast<long>(pages), 0,
                          reinterpret_cast<long>(out), 0);
  if (r < 0) return r;
  const node_tier_state *s = state(t);
  for (size_t i = 0; i < n; ++i)
    out[i] = out[i] < 0 ? -1 : (out[i] < kMaxNodes && s->nodes.has(out[i])) ? 1 : 0;
  return 0;
}

// Whether len bytes fit in the tier's nodes (unknown: the kernel decides).
bool room_for(tier *t, size_t len) {
  node_tier_state *s = state(t);
  const long long room = node_room_for(t, len);
  if (room < 0 || room >= static_cast<long long>(len)) return true;
  say_full(t, s);
  return false;
}

// Whether the process may move pages other processes map too
// (MPOL_MF_MOVE_ALL): CAP_SYS_NICE in its effective set.
bool have_sys_nice() {
  __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct d[2] = {};
  if (sys::raw(SYS_capget, reinterpret_cast<long>(&h), reinterpret_cast<long>(d)) != 0) return false;
  return (d[CAP_SYS_NICE / 32].effective >> (CAP_SYS_NICE % 32)) & 1;
}

// Whether the kernel tiers memory itself: reclaim demoting pages to a
// slower node (demotion_enabled, 5.15) or NUMA balancing promoting them
// (numa_balancing's memory-tiering bit 2, 6.0).  Both move this process's
// pages between its tiers behind the mover.
void say_kernel_tiering() {
  char demotion[16], balancing[16];
  read_word("/sys/kernel/mm/numa/demotion_enabled", demotion, sizeof demotion);
  read_word("/proc/sys/kernel/numa_balancing", balancing, sizeof balancing);
  const bool demotes = demotion[0] == 't' || demotion[0] == '1';
  const bool promotes = (balancing[0] - '0') & 2;
  if (!demotes && !promotes)
    return;
  MMTIER_WARN("the kernel tiers memory itself (%s%s%s): it moves pages between the nodes of both tiers behind "
              "mmtier's mover and budget; turn it off (echo false > /sys/kernel/mm/numa/demotion_enabled, "
              "sysctl kernel.numa_balancing=0 or 1) or leave the slow node to it (MMTIER_SLOW_NODE=off)",
              demotes ? "demotion_enabled" : "", demotes && promotes ? ", " : "",
              promotes ? "numa_balancing=2" : "");
}

// The distance from node `from` to node `to` (sysfs), or -1.
long distance(int from, int to) {
  char path[96], buf[4096];
  format(path, sizeof path, "/sys/devices/system/node/node%d/distance", from);
  if (!read_word(path, buf, sizeof buf) || !buf[0]) return -1;
  // One figure per online node, in node order: the online mask says which.
  node_mask online;
  if (!read_list("/sys/devices/system/node/online", &online)) return -1;
  const char *p = buf;
  for (int k = 0; k < kMaxNodes; ++k) {
    if (!online.has(k)) continue;
    while (*p == ' ') ++p;
    long d = 0;
    if (*p < '0' || *p > '9') return -1;
    while (*p >= '0' && *p <= '9') d = d * 10 + (*p++ - '0');
    if (k == to) return d;
  }
  return -1;
}

bool machine_nodes(node_mask *memory, node_mask *cpus) {
  return read_list("/sys/devices/system/node/has_memory", memory) &&
         read_list("/sys/devices/system/node/has_cpu", cpus);
}

// maxnode: the kernel reads maxnode - 1 bits.
long mbind(void *addr, size_t len, int mode, const node_mask &m, unsigned flags) {
  return sys::raw(SYS_mbind, reinterpret_cast<long>(addr), static_cast<long>(len), mode,
                  reinterpret_cast<long>(m.bits), kMaxNodes + 1, flags);
}

// The nodes this process may allocate on (its cpuset's), or false.
bool allowed_nodes(node_mask *out) {
  constexpr long kMemsAllowed = 4;  // MPOL_F_MEMS_ALLOWED
  *out = node_mask();
  return sys::raw(SYS_get_mempolicy, 0, reinterpret_cast<long>(out->bits), kMaxNodes + 1, 0, kMemsAllowed) == 0;
}

// Whether MPOL_PREFERRED_MANY is known to this kernel (5.15+), tried on a
// page of its own.
bool have_preferred_many(const node_mask &m) {
  long p = sys::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (sys::failed(p)) return false;
  const bool ok = mbind(reinterpret_cast<void *>(p), 4096, kMpolPreferredMany, m, 0) == 0;
  sys::munmap(reinterpret_cast<void *>(p), 4096);
  return ok;
}

long node_open(tier *t, bool slow) {
  t->usable = false;
  t->anonymous = true;
  if (!t->impl) {
    void *mem = meta_map(sizeof(node_tier_state));
    if (!mem) return -ENOMEM;
    t->impl = new (mem) node_tier_state();
  }
  node_tier_state *s = state(t);
  node_mask memory, cpus;
  // Chosen once by the heap before the tiers open (node_tier_choose reads
  // sysfs and may warn).
  const int slow_node = t->node;
  if (slow_node < 0 || !machine_nodes(&memory, &cpus)) return -ENODEV;
  s->nodes = node_mask();
  if (slow) {
    s->nodes.set(slow_node);
    s->mode = kMpolPreferred;
    t->node = slow_node;
  } else {
    for (int n = 0; n < kMaxNodes; ++n)
      if (cpus.has(n) && memory.has(n) && n != slow_node) s->nodes.set(n);
    if (s->nodes.empty()) {
      // The slow node is the only one (asked for by number, as tests do on
      // a machine of one node): both tiers there, nothing is faster.
      s->nodes.set(slow_node);
      MMTIER_WARN("MMTIER_SLOW_NODE=%d: no other node has memory and CPUs; both tiers are on node %d", slow_node,
                  slow_node);
    }
    // Several nodes: all of them (5.15+), else the first.
    s->mode = kMpolPreferredMany;
    if (!have_preferred_many(s->nodes)) {
      const int first = s->nodes.first();
      s->nodes = node_mask();
      s->nodes.set(first);
      s->mode = kMpolPreferred;
      MMTIER_INFO("DRAM tier: NUMA node %d only (MPOL_PREFERRED_MANY needs Linux 5.15)", first);
    }
    t->node = s->nodes.first();
  }
  s->keep_bytes = zones_keep(s->nodes);
  g_states[slow ? 1 : 0].store(s, std::memory_order_relaxed);
  s->room_ns.store(0, std::memory_order_relaxed);
  s->target.store(s->nodes.first(), std::memory_order_relaxed);
  s->move_flag.store(have_sys_nice() ? kMpolMfMoveAll : kMpolMfMove, std::memory_order_relaxed);
  t->usable = true;
  if (slow) {
    MMTIER_INFO("PMem tier: NUMA node %d (memory without CPUs), pages moved by the kernel", slow_node);
    say_kernel_tiering();
  }
  return 0;
}

long fast_open(tier *t, const config &) { return node_open(t, false); }
long slow_open(tier *t, const config &) { return node_open(t, true); }

long node_slot_alloc(tier *) { return 0; }
void node_slot_free(tier *, uint32_t) {}
long node_reserve(tier *, uint32_t, size_t, size_t) { return 0; }

// Binds a range to the tier's nodes: where its pages are made from now on.
long bind(tier *t, void *addr, size_t len) {
  const node_tier_state *s = state(t);
  return mbind(addr, len, s->mode, s->nodes, 0);
}

long node_map(tier *t, void *addr, size_t len, int prot, uint32_t, size_t) {
  long r = sys::mmap(addr, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  if (sys::failed(r)) return r;
  return bind(t, addr, len);
}

long node_discard(tier *, void *addr, size_t len, uint32_t, size_t) {
  return sys::madvise(addr, len, MADV_DONTNEED);
}

// Moves the pages of [addr, addr + len) onto node `to` with move_pages,
// whose new pages come from that node or not at all (a huge page that does
// not fit is split and its pages tried one by one).  Counts the present
// pages and those that still lie off the tier's nodes; 0 or -errno.
long move_pages_to(node_tier_state *s, char *addr, size_t len, int to, size_t *present, size_t *off) {
  constexpr size_t kBatch = kUnitSize >> 12;
  void *pages[kBatch];
  int nodes[kBatch], status[kBatch];
  *present = *off = 0;
  for (size_t done = 0; done < len;) {
    const size_t n = (len - done) >> 12 < kBatch ? (len - done) >> 12 : kBatch;
    for (size_t i = 0; i < n; ++i) {
      pages[i] = addr + done + (i << 12);
      nodes[i] = to;
    }
    long r = sys::raw(SYS_move_pages, 0, static_cast<long>(n), reinterpret_cast<long>(pages),
                      reinterpret_cast<long>(nodes), reinterpret_cast<long>(status), s->move_flag.load());
    if (r == -EPERM && s->move_flag.load() == kMpolMfMoveAll) {
      // CAP_SYS_NICE of a user namespace: the kernel asks for the initial
      // namespace's.  Shared pages stay, as without the capability.
      s->move_flag.store(kMpolMfMove);
      r = sys::raw(SYS_move_pages, 0, static_cast<long>(n), reinterpret_cast<long>(pages),
                   reinterpret_cast<long>(nodes), reinterpret_cast<long>(status), s->move_flag.load());
    }
    // Positive: pages the kernel could not move (it stops at the first
    // batch that failed); -ENOMEM: no page on the node for one of them.
    // Where every page lies now is asked again: the status of a huge
    // page's tail pages does not say.
    if (r < 0 && r != -ENOMEM) return r;
    if (r != 0 && sys::raw(SYS_move_pages, 0, static_cast<long>(n), reinterpret_cast<long>(pages), 0,
                           reinterpret_cast<long>(status), 0) != 0)
      return -EIO;
    for (size_t i = 0; i < n; ++i) {
      if (status[i] == -ENOENT || status[i] == -EFAULT) continue;  // not present
      ++*present;
      // Moved, else where it lies (a page shared with another process
      // the kernel would not move, -EACCES, stays until one side writes
      // it: not for want of room).
      if (r != 0 && status[i] >= 0 && (status[i] >= kMaxNodes || !s->nodes.has(status[i]))) ++*off;
    }
    done += n << 12;
  }
  return 0;
}

long node_move_in(tier *t, void *addr, size_t len) {
  node_tier_state *s = state(t);
  if (!room_for(t, len)) {
    MMTIER_DEBUG("node tier %d: no room for %zu KiB (%lld KiB above what the zones keep)", s->nodes.first(), len >> 10,
                 static_cast<long long>(s->room.load(std::memory_order_relaxed)) / 1024);
    return -ENOSPC;
  }
  size_t present = 0, off = 0;
  long r = move_pages_to(s, static_cast<char *>(addr), len, s->target.load(std::memory_order_relaxed), &present, &off);
  if (r != 0) return r;
  if (2 * off > present) {
    MMTIER_DEBUG("node tier %d: %zu of %zu pages did not fit", s->nodes.first(), off, present);
    // Most of it did not fit: the node is at its watermarks (other
    // processes, or the figure was old).  What moved stays; the unit is
    // counted where it was, and no more moves are tried until the nodes'
    // free memory is read again.
    s->room.store(0, std::memory_order_relaxed);
    return -ENOSPC;
  }
  take_room(s, len);
  // The pages that moved left the other tier's nodes: room there.
  for (std::atomic<node_tier_state *> &o : g_states) {
    node_tier_state *from = o.load(std::memory_order_relaxed);
    if (!from || from == s || from->nodes.overlaps(s->nodes)) continue;
    from->released.fetch_add(static_cast<int64_t>((present - off) << 12), std::memory_order_relaxed);
    from->released_ns.store(sys::mono_ns(), std::memory_order_relaxed);
  }
  g_moves.fetch_add(1, std::memory_order_relaxed);
  return 0;
}

constexpr tier_ops make_ops(const char *kind, long (*open)(tier *, const config &)) {
  tier_ops o = {};
  o.kind = kind;
  o.open = open;
  o.slot_alloc = node_slot_alloc;
  o.slot_free = node_slot_free;
  o.reserve = node_reserve;
  o.map = node_map;
  o.discard = node_discard;
  o.move_in = node_move_in;
  o.bind = bind;
  o.room = node_room;
  o.shortfall = node_shortfall;
  o.claim = node_claim;
  o.lies_on = node_lies_on;
  return o;
}

}  // namespace

void node_tier_test_available(long long bytes) { g_test_available.store(bytes, std::memory_order_relaxed); }

const tier_ops node_fast_tier_ops = make_ops("node", fast_open);
const tier_ops node_slow_tier_ops = make_ops("node", slow_open);

int node_tier_choose(const config &cfg) {
  if (cfg.slow_node == kSlowNodeOff || (cfg.slow_node == kSlowNodeAuto && cfg.pmem_path_set)) return -1;
  node_mask memory, cpus, allowed;
  if (!machine_nodes(&memory, &cpus)) return -1;  // no NUMA in this kernel
  // Only nodes this process's cpuset allows.
  if (allowed_nodes(&allowed))
    for (size_t w = 0; w < kMaskWords; ++w) memory.bits[w] &= allowed.bits[w];
  const int home = cpus.first();
  if (cfg.slow_node >= 0) {
    if (memory.has(cfg.slow_node)) return cfg.slow_node;
    static bool said = false;
    if (!said) {
      said = true;
      MMTIER_WARN("MMTIER_SLOW_NODE=%d: that node has no memory; the PMem tier is the file in %s", cfg.slow_node,
                  cfg.pmem_path);
    }
    return -1;
  }
  int best = -1;
  long best_d = -1;
  for (int n = 0; n < kMaxNodes; ++n) {
    if (!memory.has(n) || cpus.has(n)) continue;
    const long d = home >= 0 ? distance(home, n) : 0;
    if (best < 0 || d > best_d) {
      best = n;
      best_d = d;
    }
  }
  return best;
}

}  // namespace mmtier::detail
