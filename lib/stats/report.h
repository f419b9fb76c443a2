// Statistics: the public stats struct filled from the heap's counters, and
// the human-readable report of where memory went.
#pragma once

#include "heap/heap.h"

#include <mmtier/mmtier.h>

namespace mmtier::detail {

// Fills *out; with_resident measures the resident bytes (a pass over the
// heap), also given whole in *split if asked for.
void stats_fill(mmtier_stats *out, bool with_resident, resident_split *split = nullptr);
// Writes the report to fd; returns 0 or -errno.
int write_report(int fd);

}  // namespace mmtier::detail
