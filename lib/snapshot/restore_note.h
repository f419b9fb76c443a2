// The note a restore leaves in the restored process: the restorer
// (restorer/blob.cc) writes it at the address the capsule's header gives
// (header::restore_note_addr) before any thread of the program runs again,
// and the threads read it as they land (capture.cc).  restorer/plan.h
// repeats the layout.
#pragma once

#include <cstdint>

namespace mmtier::detail {

constexpr uint64_t kRestoreNoteMagic = 0x65746f4e74736552ull;  // "RestNote"

struct restore_note {
  uint64_t magic;        // kRestoreNoteMagic once a restore wrote it
  uint64_t b_lo, b_len;  // the restorer's own range: unmapped once every thread has left it
  int32_t users;         // threads still on their way out of it (a futex word)
  int32_t host_pid;      // the process's id outside its PID namespace (0: the same)
  // A lazy restore (mmtier restore --lazy): a page the fill leaves missing
  // until every byte of the process is in place, then copies in; 0 when the
  // restore was eager or the library has seen the fill end.
  uint64_t lazy_sentinel;
  // ZeroIO: the capsule's PMem files the restore mapped units from, left
  // open for the library to hold as it holds an earlier snapshot's file
  // (its next snapshot links them again instead of copying the units).
  int32_t pmem_fds[8];
  uint32_t npmem_fds;
  uint32_t reserved;
  uint32_t flags;  // kNoteThinClone
  uint32_t reserved2;
};
static_assert(sizeof(restore_note) == 88);

// restore_note::flags.  A thin clone (`mmtier clone`): the heap's units map
// the capsule's memory privately, shared with every other clone of it until
// written; the process takes no periodic snapshots (their names and pruning
// are the original's).
constexpr uint32_t kNoteThinClone = 1;

// Whether a lazy restore is still filling this process's memory (its
// missing pages would be taken for never-touched ones by a snapshot).
// Once it has ended: false, and the sentinel page is gone.
bool lazy_fill_pending();

extern restore_note g_restore_note;

}  // namespace mmtier::detail
