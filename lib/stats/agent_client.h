// Memory QoS across a host's processes: the library's side of the node
// agent (mmtierd; protocol in stats/agent_format.h).  A process whose mover
// runs registers with the agent when its socket (MMTIER_AGENT_SOCKET)
// exists, says its class (MMTIER_QOS_CLASS, MMTIER_QOS_DRAM,
// MMTIER_QOS_WEIGHT) and what its own policy would give it, and keeps to
// the DRAM budget the agent sends (heap_set_node_dram_limit): placement
// puts new units on PMem beyond it and the mover demotes down to it at its
// rate limit.  Without an agent nothing changes.  When the agent goes away
// the process keeps its last budget for kKeepBudgetNs while it tries to
// reconnect (a restarted agent takes it up again), then works alone.
// Everything runs on the mover's thread, after each scan; no thread of
// its own.
#pragma once

#include <cstdint>

namespace mmtier::detail {

// After each scan of the mover (the scan hook).
void agent_client_tick();
// Registers the fork and restore handlers; once, at start-up.
void agent_client_register();

struct agent_client_state {
  bool connected = false;
  bool has_budget = false;
  uint64_t budget_bytes = 0;  // when has_budget
  uint32_t granted_class = 0;
  uint64_t budgets = 0;       // budgets received
};
void agent_client_get(agent_client_state *out);

// The control thread offers the process's periodic snapshots
// (MMTIER_SNAPSHOT_EVERY) to the agent, with the socket the agent asks for
// them through (nullptr: none to offer).  Any thread.
void agent_client_offer_snapshots(const char *control_path);
// Whether the agent takes the process's periodic snapshots now (the
// control thread's own timer waits meanwhile).  Any thread.
bool agent_client_schedules_snapshots();

}  // namespace mmtier::detail
