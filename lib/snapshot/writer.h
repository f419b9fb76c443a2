// The snapshot writer: the child forked from the stopped process, which
// writes the capsule from its copy-on-write image of the process (see
// capture.h).  It runs only raw system calls and memory it maps itself: the
// heap's and the allocator's locks in its image are held by the thread that
// stopped the world, so nothing here may allocate or take a lock.
#pragma once

#include "snapshot/shared_copy.h"

#include "platform/resume_point.h"
#include "snapshot/capsule_dir.h"
#include "snapshot/capsule_format.h"
#include "snapshot/fd_capture.h"

#include <cstdint>

namespace mmtier::detail {

// A thread as it was stopped.  uc is the stop handler's ucontext_t on the
// thread's own stack (inside the image), nullptr for the thread that took
// the snapshot (it was running the capture, not stopped by a signal).
struct snap_thread {
  int32_t tid;
  uint32_t flags;  // capsule::kThreadCapturer
  uint64_t fs_base;
  const void *uc;
  uint64_t sigmask;  // the capturer's (a stopped thread's is in uc)
  resume_point rp;   // where a restore resumes it
  uint64_t clear_tid, robust_head, robust_len;
  uint64_t rseq_area;
  uint32_t rseq_len, rseq_sig;
  uint64_t altstack_sp, altstack_size;
  uint32_t altstack_flags;
  char name[16];
};

// PMem storage linked into the capsule (ZeroIO) as pmem-<k>.tier: the
// file of device dev (major << 32 | minor, as the files table has it) and
// inode ino.  The writer saves the units mapped on it as references into
// it, not as copies.
struct pmem_link {
  uint64_t dev, ino;
  uint32_t k;
};
constexpr uint32_t kMaxPmemLinks = 16;

struct writer_args {
  int parent_dirfd;          // the capsule directory
  capsule::pending *pend;    // the capsule being written, in parent_dirfd
  int manifest_fd, mem_fd;
  int report_fd;             // the writer's one line on failure
  int pause_fd;              // read end: the parent sends the pause's length once it resumed
  int report_read_fd, pause_write_fd;  // the parent's ends (not the program's descriptors)
  int own_fd;                // snap_request::own_fd
  capsule::header hdr;       // filled by the parent before the stop, but for the counts
  const snap_thread *threads;
  uint32_t nthreads;
  const capsule::procstate_record *proc;  // as captured in the pause, cwd offset unset
  const char *cwd;
  const char *exe;             // /proc/self/exe
  const capsule::signal_record *signals;  // pending for the process
  uint32_t nsignals;
  const capsule::timer_record *timers;    // POSIX timers, by id
  uint32_t ntimers;
  const capsule::thread_signal_record *thread_signals;  // pending for single threads
  uint32_t nthread_signals;
  uintptr_t heap_lo, heap_hi;  // mmtier's reservation: its mappings are tier units
  uintptr_t stats_page;        // mmtier's statistics page (0: none)
  fd_table fds;                   // the program's descriptors (its scratch range is not the image's)
  pmem_link links[kMaxPmemLinks];  // in the capsule's directory (pend->dirfd)
  uint32_t nlinks;
  // Incremental: the capsule this one builds on (-1: a full capsule), its
  // id, and how many data files a capsule may refer to before a full one
  // is written instead.
  int base_dirfd;
  uint8_t base_id[16];
  uint32_t base_max_files;
  // Shared anonymous memory and memory wiped at fork as it was in the
  // pause (its scratch range is not the image's).
  shared_copies shared;
  // The advice of the mappings, read before the stop.
  const vm_advice *advice;
};

// Runs in the child and exits it: writes mem and the manifest (status
// complete), publishes the capsule under its final name, syncs it and
// marks it durable.  The child goes on if the program dies meanwhile: a
// capsule whose writer started is finished.  Exit status 0, or an errno
// value after one line to report_fd (the temporary directory is then the
// parent's to remove).  Everything the writer changes is memory it maps
// itself, stack included, left out of the capsule: the image stays as it
// was at the fork.
[[noreturn]] void writer_start(const writer_args &a);

}  // namespace mmtier::detail
