// The node agent's protocol, shared by the library (stats/agent_client.cc)
// and mmtierd (agent/): an AF_UNIX SOCK_SEQPACKET socket, by default
// /run/mmtier/agent.sock (MMTIER_AGENT_SOCKET).  A process under libmmtier
// whose mover runs connects, says hello (its QoS class, guarantee, weight
// and demand), reports its demand and use about once a second, and takes
// the DRAM budgets the agent sends; the connection's end tells the agent
// the process is gone.  One fixed-size little-endian record per packet,
// both ways.  The agent learns who connected from SO_PEERCRED (pid, uid),
// never from the record.
#pragma once

#include <cstdint>

namespace mmtier::agent_format {

inline constexpr uint32_t kMagic = 0x51544d4d;  // "MMTQ"
inline constexpr uint32_t kVersion = 1;
inline constexpr char kDefaultSocket[] = "/run/mmtier/agent.sock";
inline constexpr uint64_t kNone = UINT64_MAX;  // no budget / not known

// MMTIER_QOS_CLASS.
enum qos_class : uint32_t {
  kGuaranteed = 0,  // a DRAM amount (guarantee_bytes) never taken away
  kBurstable = 1,   // a share of what the guarantees leave, by weight
  kBestEffort = 2,  // DRAM only when nobody else wants it
};

enum msg_type : uint32_t {
  kHello = 1,   // process -> agent, first
  kReport = 2,  // process -> agent, about once a second and on change
  kBudget = 3,  // agent -> process
};

struct message {
  uint32_t magic;
  uint32_t version;
  uint32_t type;      // msg_type
  uint32_t qos;       // hello: the class asked for; budget: the class granted
  uint64_t guarantee_bytes;  // hello: the guarantee asked for (kGuaranteed)
  uint32_t weight;    // hello: burstable weight, 1..10000
  uint32_t flags;     // budget: kSchedulesSnapshots
  // hello, report: the DRAM the process's own policy gives it now
  // (MMTIER_DRAM_RATIO's share, MMTIER_DRAM_LIMIT): what it would use
  // alone.
  uint64_t demand_bytes;
  uint64_t dram_bytes;  // hello, report: units on DRAM now x unit size
  uint64_t pmem_bytes;  // hello, report: units on PMem now x unit size
  // hello: the budget an earlier agent gave it (kNone: none), which a
  // restarted agent honours for a guarantee.
  uint64_t held_budget_bytes;
  uint64_t budget_bytes;  // budget: the DRAM the process may hold (kNone: no limit)
  uint64_t generation;    // budget: the agent's allocation round
  uint64_t start_time;    // hello: /proc/self/stat starttime (clock ticks after boot)
  char comm[16];          // hello
  char note[160];         // budget: why the class or guarantee was not granted, or ""
  // hello, report: the interval of the periodic snapshots the process
  // takes (MMTIER_SNAPSHOT_EVERY; 0: none) and its control socket
  // (api/control_format.h), through which the agent asks for them
  // instead, one process at a time across the node.
  uint64_t snapshot_every_ns;
  char control_path[108];
};

// message::flags of a budget.
enum : uint32_t {
  // The agent takes this process's periodic snapshots (through its control
  // socket, kPeriodic): the process's own timer waits while it does.
  kSchedulesSnapshots = 1u << 0,
};

}  // namespace mmtier::agent_format
