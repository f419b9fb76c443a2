// Small /proc files read in the snapshot's pause: raw system calls, a
// caller's buffer, nothing allocated.
#pragma once

#include <cstddef>

namespace mmtier::detail {

// Reads path into buf (at most cap - 1 bytes, every read until the end),
// NUL-terminated, a trailing newline cut; "" when it cannot be read.
void read_small(const char *path, char *buf, size_t cap);

}  // namespace mmtier::detail
