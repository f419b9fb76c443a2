// The control channel's protocol, shared by the library (api/control.cc)
// and the mmtier command: an AF_UNIX SOCK_SEQPACKET socket
// <stats dir>/<pid>.ctl next to the process's statistics page, one request
// and one reply per connection, fixed-size little-endian records.  The
// kernel's SO_PEERCRED tells the library who connected: the process's own
// user or root, nobody else.
#pragma once

#include <cstdint>

namespace mmtier::control {

constexpr uint32_t kMagic = 0x4354544d;  // "MTTC"
constexpr uint32_t kVersion = 3;  // 2: the reply says what ZeroIO linked; 3: --full, and what is shared
// 4: kHold.  A request of version 3 is still served (a command sends 4 only
// when it holds, so that a library older than the hold refuses it).
constexpr uint32_t kVersionHold = 4;
constexpr char kSuffix[] = ".ctl";

enum class command : uint32_t {
  snapshot = 1,
};

enum request_flags : uint32_t {
  kFull = 1u << 0,  // a full capsule: every page written, none referred to in an earlier one
  // Hold the program stopped once the capsule is durable (a migration's
  // last round).  After the reply, the client sends one byte: kCommit ends
  // the process (the library answers kEnded first), anything else, or the
  // connection's end, lets it go on.
  kHold = 1u << 1,
  // Copy the PMem units into the capsule (hashed, incremental) instead of
  // linking the PMem files (snap_request::copy_pmem).
  kCopyPmem = 1u << 2,
  // One of the process's periodic snapshots (MMTIER_SNAPSHOT_EVERY), asked
  // for by the node agent, which schedules them across the node: named and
  // pruned as the process's own timer would (snapshot/periodic.h); name
  // and dir are ignored.
  kPeriodic = 1u << 3,
};

constexpr char kCommit = 'c', kEnded = 'k';

struct request {
  uint32_t magic;
  uint32_t version;
  uint32_t cmd;    // command
  uint32_t flags;  // request_flags
  char name[80];   // capsule name, "" for the default
  char dir[4096];  // capsule directory, "" for the process's own
};

struct reply {
  uint32_t magic;
  int32_t error;       // 0, or an errno value
  uint64_t paused_ns;  // every thread stopped
  uint64_t mem_bytes;  // memory written to the capsule
  uint32_t threads;
  uint32_t reserved;
  char line[256];      // on failure: why
  char path[4096];     // the capsule
  uint64_t pmem_linked;  // PMem bytes linked, not copied (ZeroIO)
  char pmem_note[160];   // why PMem units were copied, or ""
  uint64_t shared;       // memory unchanged since earlier capsules, referred to, not written (incremental)
};

}  // namespace mmtier::control
