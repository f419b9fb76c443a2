// Small /proc files read in the snapshot's pause: raw system calls, a
// caller's buffer, nothing allocated.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

// Reads path into buf (at most cap - 1 bytes, every read until the end),
// NUL-terminated, a trailing newline cut; "" when it cannot be read.
void read_small(const char *path, char *buf, size_t cap);

// A mapping the snapshot writer would not see: MADV_DONTFORK (smaps
// VmFlags "dc") keeps it out of every fork child, so a capsule would
// silently lack it.  Its start (its end to *end), or 0 if there is none.
// Uses a static buffer: one caller at a time.
uintptr_t dontfork_mapping(uintptr_t *end);

// CRC32C of the command line the process was started with (argv, each
// word followed by its NUL), read once as the library loads: a program may
// rewrite its argv later (Redis writes its process title over it).  0 when
// unknown.  What `mmtier restore --or-run` compares with the command it
// was asked to run.
uint32_t launch_cmdline_crc();

}  // namespace mmtier::detail
