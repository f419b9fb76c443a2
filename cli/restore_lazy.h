// Lazy restore (`mmtier restore --lazy`): the large anonymous regions of a
// capsule are mapped empty and registered with a userfaultfd for missing
// pages; the restore's init fills them from the capsule's mem while the
// program already runs, a faulting page's chunk first, the rest in address
// order (docs/SNAPSHOTS.md §6.3).
#pragma once

#include "snapshot/capsule_format.h"

#include "capsule_read.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mmtier::cli {

// Whether the restorer leaves region g to the lazy fill: private memory of
// the program's own (a tier unit, anonymous memory, brk), readable and
// writable, at least 2 MiB, with bytes in mem.
bool lazy_region(const capsule::manifest_view &m, const capsule::region &g);

// Empty when this process may make the userfaultfd a lazy restore needs
// (faults taken in the kernel too, and fork, mremap, munmap and
// MADV_DONTNEED events); else why not, in a phrase.
std::string lazy_unavailable();

// Per chunk of the data layout (data offset k * kChunkBytes, capsule_read.h):
// 1 where bytes of a region restored eagerly lie (checked before the
// restore), else 0.
std::vector<uint8_t> eager_chunks(const capsule::manifest_view &m);

struct lazy_result {
  uint64_t bytes = 0;         // copied into the processes
  uint64_t faults = 0;        // page faults served
  uint64_t zero_pages = 0;    // faults on pages with nothing saved, or given back by the program
  uint64_t forks = 0;         // children whose memory was filled too
  double seconds = 0;
  bool processes_gone = false;  // every process ended before the fill did
  std::string error;          // non-empty: a damaged chunk or a failed read (the processes must not go on)
};

// Serves uffd (the restorer's, see restorer/blob.cc) from the capsule's mem
// and the earlier capsules' mem it links (files) until every lazy region of every process sharing the capsule's
// memory (the program and the children it forks meanwhile) is filled, then
// closes every userfaultfd, which unregisters them.  Each chunk's CRC is
// checked before any of its bytes reach a process; a damaged one kills
// every other process of the PID namespace (this runs as its init) before
// anything is unregistered.  fill_rate (bytes per
// second, 0: no limit) paces the background fill; faults are served at once.
// sentinel: the page the restorer registered and left missing, copied in
// (in every process) once all is filled: how the library knows.
lazy_result lazy_serve(const capsule::manifest_view &m, const data_files &files, int uffd, uint64_t sentinel,
                       uint64_t fill_rate);

}  // namespace mmtier::cli
