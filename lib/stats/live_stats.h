// Publishing live statistics for readers in other processes (the mmtier
// command, monitoring): one shared page per process, format and protocol in
// stats/live_format.h.  The page is written by the heap's change hook (with
// the placement counters, in the thread that changed them), by the mover
// after each scan, and by the statistics API; nothing here runs a thread of
// its own or allocates.
#pragma once

#include "heap/heap.h"

#include <cstddef>

namespace mmtier::detail {

// Creates this process's page and installs the hooks; called once the
// runtime is ready.  With MMTIER_STATS_DIR=off, or when the directory is
// unusable (one warning), nothing is published and the program runs on.
// A fork child publishes a page of its own, made in the fork handler
// (before the program can sandbox the child or drop its privileges).
void live_stats_init();

// Publishes the resident bytes just measured.
void live_stats_resident(const resident_split &bytes);

// The directory this process's page is published in (NUL-terminated into
// out[cap]); false when nothing is published.
bool live_stats_dir(char *out, size_t cap);
// The address of the published page (0: none), for a snapshot, which
// records it as mmtier's own (a restored process publishes its own).
uintptr_t live_stats_page();

// Removes this process's file (at exit; the page stays mapped, so threads
// still running may go on writing to it).
void live_stats_exit();

}  // namespace mmtier::detail
