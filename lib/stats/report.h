// Statistics: the public stats struct filled from the heap's counters, and
// the human-readable report of where memory went.
#pragma once

#include <mmtier/mmtier.h>

namespace mmtier::detail {

void stats_fill(mmtier_stats *out, bool with_resident);
// Writes the report to fd; returns 0 or -errno.
int write_report(int fd);

}  // namespace mmtier::detail
