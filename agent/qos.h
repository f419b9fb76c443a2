// Memory QoS on one host: how mmtierd shares the node's DRAM budget among
// the processes registered with it.  A pure function of the claims, so
// that the agent can recompute it after every change and tests can check
// it without processes.
//
//   guaranteed  gets its guarantee, admitted oldest process first while the
//               guarantees stay within guaranteed_max of the node (and, if
//               the agent restricts them, for the users allowed); one not
//               admitted is served as burstable, with a note saying why.
//   burstable   shares what the guarantees leave in proportion to its
//               weight; a process that asks for less than its share gets
//               what it asks for and the rest goes to the others (water
//               filling).
//   best-effort shares, equally and up to its demand, what the burstable
//               processes do not want.
//
// A process's demand is what its own policy would give it on DRAM alone;
// it can claim more than it uses, but a claim only ever earns its weight's
// share: no claim takes anything from a guarantee or from another
// process's weighted share.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mmtier::agent {

enum : uint32_t { kGuaranteed = 0, kBurstable = 1, kBestEffort = 2 };

struct claim {
  uint32_t qos = kBurstable;  // the class asked for
  uint64_t guarantee = 0;     // bytes (kGuaranteed)
  uint32_t weight = 100;      // kBurstable, 1..10000
  uint64_t demand = 0;        // bytes
  uint64_t start_time = 0;    // admission order of guarantees (older first)
  int pid = 0;                // ties
  uint32_t uid = 0;
};

struct grant {
  uint32_t qos = kBurstable;  // the class served
  uint64_t budget = 0;        // bytes, a multiple of unit
  std::string note;           // why the class or guarantee was not granted
};

struct node_policy {
  uint64_t node_dram = 0;        // bytes shared by the registered processes
  uint64_t unit = 2u << 20;      // budgets are whole units
  uint32_t guaranteed_max_pct = 90;  // of node_dram, at most, guaranteed
  // Users whose processes may hold a guarantee; empty: every user.
  std::vector<uint32_t> guaranteed_uids;
};

std::vector<grant> allocate(const node_policy &policy, const std::vector<claim> &claims);

const char *class_name(uint32_t qos);

}  // namespace mmtier::agent
