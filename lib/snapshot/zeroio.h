// ZeroIO: a snapshot links the PMem tier's storage into the capsule instead
// of copying its units, when the capsule directory is on the file system
// that holds the storage.
//
//   P0 (program running)  pmem_link_storage: each PMem file the process
//                         holds (of earlier snapshots and of ancestors) is
//                         hard-linked into the capsule being made as
//                         pmem-<k>.tier.
//   the stop              pmem_hand_over: the process's own file is linked
//                         as pmem-0.tier and goes to the capsule
//                         (heap_snapshot_hand_over) at once: every unit
//                         on it is frozen MAP_PRIVATE already, and the
//                         process never writes, punches or reuses any of the
//                         file again; new units go to a new file, a unit
//                         written after the snapshot is copied there (re-
//                         shared) by the mover.  The file's bytes stay what
//                         they were at the stop for as long as the capsule
//                         links it.
//   the writer            saves a unit mapped on a linked file as a pmem
//                         run (file offset, CRC per 2 MiB), and its pages
//                         written since an earlier freeze (private copies)
//                         in mem.
//
// An ancestor's file (a fork child's) is safe to link: its owner never
// writes a file with links (file_tier.cc, storage_unheld).  What cannot be
// linked is copied, and res->pmem_note says why.
#pragma once

#include "snapshot/capture.h"
#include "snapshot/writer.h"

namespace mmtier::detail {

// P0: links what can be linked into capsule_dirfd (wa->links); -1: nothing.
void pmem_link_storage(int capsule_dirfd, writer_args *wa, snap_result *res);

// In the stop, before the writer is forked: hands the own file over if it
// was linked; if that cannot be done, its link is dropped from wa (the
// writer copies those units and removes the unused link).
void pmem_hand_over(writer_args *wa, snap_result *res);

}  // namespace mmtier::detail
