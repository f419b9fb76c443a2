// What `mmtier restore` hands the restorer (blob.cc): everything it needs
// to turn the process it runs in into the one of a capsule, laid out in the
// restorer's own range B, which no mapping of the capsule overlaps.  The
// restorer runs without the C library, on B's stack, after the command's
// own mappings are gone; every pointer here points into B.
#pragma once

#include <stdint.h>

namespace mmtier::restorer {

constexpr uint64_t kPlanMagic = 0x6e616c5074736552ull;  // "RestPlan"
constexpr uint64_t kThreadStack = 64 * 1024;           // per thread, in B

enum class map_kind : uint32_t {
  reserve = 1,      // inaccessible address space, nothing in it
  anon = 2,         // private anonymous memory (copies from mem)
  anon_shared = 3,  // shared anonymous memory (copies from mem)
  file = 4,         // a private mapping of a file (copies: its changed pages)
  stack = 5,        // the main stack: anonymous, growing down
  file_shared = 6,  // a shared mapping of a file (its content is the file's: no copies)
};

struct map_op {
  uint64_t start, end;
  uint32_t prot;        // PROT_* at the end
  uint32_t kind;        // map_kind
  uint32_t madv;        // capsule::region_madv
  int32_t fd;           // kind file: the mapped file, opened read-only
  uint64_t file_offset;
  uint64_t first_copy, ncopies;
  uint32_t lazy;        // 1: registered with the userfaultfd, its copies left to the command (lazy restore)
  uint32_t no_huge;     // 1: no huge pages asked for (see restore.cc)
};

// Pages read from the capsule's mem file (or an earlier capsule's mem it
// links: an incremental capsule) into place.
struct copy_op {
  uint64_t addr, len, mem_off;
  int32_t fd;  // the file read
  uint32_t map;  // 1: the file mapped privately over addr (a thin clone shares its pages until written), not read
};

// A kernel mapping ([vvar], [vdso]) moved to where the capsule had it.
struct move_op {
  uint64_t lo, hi, to;
};

struct thread_op {
  int32_t tid;
  uint32_t leader;      // the thread whose tid is the process's id (the restorer's own)
  uint64_t fs_base;
  uint64_t resume[9];   // platform/resume_point.h
  uint64_t clear_tid, robust_head, robust_len;
  uint64_t rseq_area;
  uint32_t rseq_len, rseq_sig;
  uint64_t altstack_sp, altstack_size;
  uint32_t altstack_flags;
  uint32_t gone;        // the leader, which had exited (the exit system call): it does the
                        // leader's part of the restore, then exits again
  char name[16];
  uint64_t stack_top;   // in B
};

// A POSIX timer made again (capsule::timer_record), in increasing id order.
struct timer_op {
  int32_t id, clock, notify, signo, tid;
  uint32_t reserved;
  uint64_t value;
  int64_t interval_ns, value_ns;
};
constexpr uint32_t kMaxTimers = 32;

struct kernel_sigaction {
  uint64_t handler, flags, restorer, mask;
};

// The note the restored library reads (lib/snapshot/restore_note.h).
struct restore_note {
  uint64_t magic;
  uint64_t b_lo, b_len;
  int32_t users;
  int32_t host_pid;
  uint64_t lazy_sentinel;  // written only when note_size says the library has it
  int32_t pmem_fds[8];     // likewise
  uint32_t npmem_fds;
  uint32_t reserved;
  uint32_t flags;          // likewise
  uint32_t reserved2;
};
constexpr uint32_t kNoteWithLazySentinel = 40;  // note_size from which the library has lazy_sentinel
constexpr uint32_t kNoteWithPmemFds = 80;       // and pmem_fds
constexpr uint32_t kNoteWithFlags = 88;         // and flags (a thin clone)
constexpr uint32_t kNoteThinClone = 1;          // restore_note::flags
constexpr uint64_t kRestoreNoteMagic = 0x65746f4e74736552ull;

constexpr uint32_t kMaxClose = 256;  // plan::close_fds
constexpr uint32_t kMaxCuts = 64;    // plan::cuts
// In a capsule: left by a restore in place (a container's command, which
// has no supervisor to fall back to once the restorer runs) until the
// restored program is ready; found at the next start, the capsule's
// restore did not complete and it is passed over.
constexpr char kAttemptMarker[] = "restore-attempt";  // = capsule::kAttemptMarker (freestanding: no include)
constexpr uint32_t kMmFields = 11;
constexpr uint32_t kAuxvWords = 64;

struct plan {
  uint64_t magic;
  uint64_t b_lo, b_len;
  int32_t mem_fd;        // the capsule's mem
  int32_t err_fd;        // one line to the restoring command: "ok", or why not
  int32_t pid;
  int32_t host_pid;
  uint32_t drop_caps;    // drop every capability before the program runs
  int32_t last_pid_fd;   // /proc/sys/kernel/ns_last_pid when thread ids come in order (no clone3 set_tid: no
                         // CAP_CHECKPOINT_RESTORE), else -1
  uint32_t say_ok;       // write "ok" to err_fd once every thread is ready (0: the command is the process)
  int32_t burn_tid;      // a burner thread's id word (CLONE_CHILD_CLEARTID)
  uint32_t nthreads, nmaps, ncopies, nunmap, nmoves, nclose;
  uint32_t nusers;       // threads that leave B and say so (the note's users)
  thread_op *threads;
  map_op *maps;
  copy_op *copies;
  uint64_t (*unmap)[2];  // the command's mappings: removed first
  move_op moves[4];
  int32_t close_fds[256]; // the restore's own descriptors, closed before the program runs
  kernel_sigaction sigactions[64];
  uint64_t rlimits[16][2];
  int64_t itimers[3][2]; // interval, value (microseconds)
  uint64_t mm[kMmFields];
  uint64_t auxv[kAuxvWords];
  uint32_t auxv_words;
  int32_t exe_fd;        // -1: leave /proc/self/exe as it is
  int32_t lazy_fd;       // a socket to the command's init: the userfaultfd of the lazy maps goes there (-1: eager)
  uint32_t note_size;    // the capsule's library's sizeof(restore_note)
  uint64_t sentinel;     // lazy: a page left missing until the fill is done (restore_note::lazy_sentinel)
  uint64_t note_addr;
  uint32_t nsignals;     // pending for the process, queued again before the jump
  uint32_t start_stopped;  // 1: the process stops (SIGSTOP) before any thread runs the program
  unsigned char signals[32][128];  // siginfo
  uint32_t ntimers;
  uint32_t nthread_signals;  // pending for single threads, queued to each once all exist
  int32_t pmem_fds[8];       // the capsule's PMem files, kept open for the library (restore_note)
  uint32_t npmem_fds;
  uint32_t note_flags;       // restore_note::flags
  // Files the program writes that grew since the snapshot, cut back to
  // their size then by the leader once every thread is ready (nothing of
  // the restore can fail after that but this): its number, the size.
  uint32_t ncuts;
  struct {
    int32_t fd;
    uint32_t reserved;
    uint64_t size;
  } cuts[kMaxCuts];
  uint32_t timers_in_order;  // POSIX timers by using up the ids below each, as before Linux 6.16, even where the
                             // kernel could make them at their ids (a test of that path)
  int32_t marker_dirfd;      // the capsule, whose marker_name is removed once every thread is ready (-1: none)
  char marker_name[32];      // an in-place restore's attempt marker (kAttemptMarker)
  timer_op timers[kMaxTimers];
  struct {
    int32_t tid;
    uint32_t reserved;
    unsigned char info[128];  // siginfo
  } thread_signals[32];
  // Shared between the restorer's threads.
  int32_t ready;         // threads set up (futex word)
  int32_t go;            // 1: every thread jumps (futex word)
  // A leader that had exited (thread_op::gone): its id until it has exited
  // again (its clear-tid word), so that no thread leaves the restorer's
  // range, which the last one out removes, while it still runs there.
  int32_t gone_tid;
};

}  // namespace mmtier::restorer
