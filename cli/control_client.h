// The mmtier command's side of the control channel
// (lib/api/control_format.h).
#pragma once

#include "api/control_format.h"

#include <cstdint>
#include <string>

namespace mmtier::cli {

// Asks process pid (a host PID) for a snapshot named name (or the default)
// in dir (or its own directory) with control::request_flags; its reply in
// *rep.  Returns the connection, still open: a held snapshot (kHold)
// awaits its decision on it; the caller closes it.  Throws failure (exit
// status 3 when the process cannot be reached) with the library's line.
int ask_snapshot(int pid, const std::string &name, const std::string &dir, uint32_t flags, control::reply *rep);

}  // namespace mmtier::cli
