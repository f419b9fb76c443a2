// Small /proc files read in the snapshot's pause: raw system calls, a
// caller's buffer, nothing allocated.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

// Reads path into buf (at most cap - 1 bytes, every read until the end),
// NUL-terminated, a trailing newline cut; "" when it cannot be read.
void read_small(const char *path, char *buf, size_t cap);

// The advice the kernel keeps per mapping (smaps VmFlags), read before a
// snapshot's stop (and again in the pause when a change of what a fork
// wipes may have come between): what a restore applies again (capsule
// region_madv: hg nh dd wf mg lo), and the mappings a fork child would
// not see as the program does: MADV_DONTFORK ("dc": not in the child at
// all, so a capsule would silently lack it) and MADV_WIPEONFORK ("wf":
// zero in the child, copied in the pause instead).  Mappings with advice
// are kept in address order, kMax of them; those beyond keep no advice
// (left_out), and one of them marked wiped refuses the snapshot.
struct vm_advice_entry {
  uintptr_t lo, hi;
  uint32_t madv;  // capsule::region_madv
};
struct vm_advice {
  static constexpr uint32_t kMax = 8192;
  vm_advice_entry e[kMax];
  uint32_t n = 0;
  uint32_t left_out = 0;
  uintptr_t dontfork_lo = 0, dontfork_hi = 0;  // the first MADV_DONTFORK mapping, or 0
  uint32_t epoch = 0;                          // fork_advice_epoch() before the read
};
// 0; -EIO when smaps cannot be read, -EOPNOTSUPP when a mapping is
// MADV_DONTFORK (a snapshot cannot hold it), -E2BIG when a mapping marked
// wiped is beyond kMax; with one line into why.
// Reads smaps through window (kSmapsWindow bytes), or a static buffer of
// its own when null: one caller at a time then.
constexpr size_t kSmapsWindow = size_t{1} << 16;
long read_vm_advice(vm_advice *out, char *why, size_t cap, char *window = nullptr);
// The advice of the entry holding all of [lo, hi), or 0.
uint32_t vm_advice_of(const vm_advice &a, uintptr_t lo, uintptr_t hi);

// Brackets the program's requests that change which memory a fork child
// sees wiped (MADV_WIPEONFORK, MADV_KEEPONFORK, mmap with MAP_DROPPABLE):
// a snapshot whose advice read is older than one of them, or that stopped
// a thread inside one, reads the advice again.
void fork_advice_begin();
void fork_advice_end();
uint32_t fork_advice_epoch();
// In the pause: nothing changed what a fork wipes since epoch was read.
bool fork_advice_settled(uint32_t epoch);

// The capsule's name when none is given: <comm>-<pid>-<UTC time>, comm's
// characters outside [A-Za-z0-9_-] as '_'.
void default_capsule_name(char *out, size_t cap);

// CRC32C of the command line the process was started with (argv, each
// word followed by its NUL), read once as the library loads: a program may
// rewrite its argv later (Redis writes its process title over it).  0 when
// unknown.  What `mmtier restore --or-run` compares with the command it
// was asked to run.
uint32_t launch_cmdline_crc();

}  // namespace mmtier::detail
