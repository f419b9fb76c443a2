// Sharing the node's DRAM (see qos.h).
#include "qos.h"

#include <algorithm>
#include <cstdio>
#include <numeric>

namespace mmtier::agent {
namespace {

std::string mib(uint64_t b) {
  char s[32];
  snprintf(s, sizeof s, "%llu MiB", static_cast<unsigned long long>(b >> 20));
  return s;
}

// Shares `room` among the processes `who` in proportion to weight[i], each
// capped by demand[i] (water filling); adds to out[i].  Returns what is
// left over.
uint64_t fill(uint64_t room, std::vector<size_t> who, const std::vector<double> &weight,
              const std::vector<uint64_t> &demand, std::vector<uint64_t> &out) {
  while (!who.empty() && room > 0) {
    double total = 0;
    for (size_t i : who) total += weight[i];
    // Those who want no more than their share get what they want; the
    // others share what is left in the next round.
    std::vector<size_t> rest;
    uint64_t given = 0;
    for (size_t i : who) {
      const uint64_t share = static_cast<uint64_t>(static_cast<double>(room) * weight[i] / total);
      if (demand[i] <= share) {
        out[i] += demand[i];
        given += demand[i];
      } else {
        rest.push_back(i);
      }
    }
    if (rest.size() == who.size()) {
      // Nobody is satisfied: each takes its share.
      for (size_t i : who) {
        const uint64_t share = static_cast<uint64_t>(static_cast<double>(room) * weight[i] / total);
        out[i] += share;
        given += share;
      }
      return room - std::min(room, given);
    }
    room -= std::min(room, given);
    who.swap(rest);
  }
  return room;
}

}  // namespace

const char *class_name(uint32_t qos) {
  switch (qos) {
    case kGuaranteed: return "guaranteed";
    case kBurstable: return "burstable";
    case kBestEffort: return "best-effort";
  }
  return "unknown";
}

std::vector<grant> allocate(const node_policy &policy, const std::vector<claim> &claims) {
  const size_t n = claims.size();
  std::vector<grant> out(n);
  const uint64_t unit = policy.unit ? policy.unit : 1;
  const uint64_t cap = policy.node_dram / 100 * policy.guaranteed_max_pct +
                       policy.node_dram % 100 * policy.guaranteed_max_pct / 100;
  // Guarantees, oldest process first.
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (claims[a].start_time != claims[b].start_time) return claims[a].start_time < claims[b].start_time;
    return claims[a].pid < claims[b].pid;
  });
  uint64_t guaranteed = 0;
  std::vector<uint64_t> budget(n, 0);
  std::vector<uint32_t> served(n);
  for (size_t i : order) {
    served[i] = claims[i].qos > kBestEffort ? kBurstable : claims[i].qos;
    if (served[i] != kGuaranteed) continue;
    const uint64_t g = (claims[i].guarantee + unit - 1) / unit * unit;
    const auto &uids = policy.guaranteed_uids;
    if (!uids.empty() && std::find(uids.begin(), uids.end(), claims[i].uid) == uids.end()) {
      served[i] = kBurstable;
      out[i].note = "a guarantee is not allowed for uid " + std::to_string(claims[i].uid) + " on this node; served as burstable";
    } else if (g == 0 || guaranteed + g > cap) {
      served[i] = kBurstable;
      out[i].note = "guarantee of " + mib(claims[i].guarantee) + " not granted: the node guarantees " + mib(guaranteed) +
                    " of at most " + mib(cap) + "; served as burstable";
    } else {
      guaranteed += g;
      budget[i] = g;
    }
  }
  uint64_t room = policy.node_dram - std::min(policy.node_dram, guaranteed);
  std::vector<double> weight(n, 1.0);
  std::vector<uint64_t> demand(n);
  std::vector<size_t> burst, best;
  for (size_t i = 0; i < n; ++i) {
    demand[i] = claims[i].demand;
    if (served[i] == kBurstable) {
      weight[i] = std::clamp<uint32_t>(claims[i].weight, 1, 10000);
      burst.push_back(i);
    } else if (served[i] == kBestEffort) {
      best.push_back(i);
    }
  }
  room = fill(room, burst, weight, demand, budget);
  fill(room, best, weight, demand, budget);
  for (size_t i = 0; i < n; ++i) {
    out[i].qos = served[i];
    // Whole units; a guarantee was rounded up to one already.
    out[i].budget = served[i] == kGuaranteed ? budget[i] : budget[i] / unit * unit;
  }
  return out;
}

}  // namespace mmtier::agent
