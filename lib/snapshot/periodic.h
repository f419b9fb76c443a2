// Periodic snapshots (MMTIER_SNAPSHOT_EVERY, MMTIER_SNAPSHOT_KEEP): the
// control thread takes one at each interval, named auto-<pid>-<UTC time>
// in the capsule directory, and deletes this process's older ones beyond
// the newest MMTIER_SNAPSHOT_KEEP.  Incremental capsules make each cost
// what changed since the last; deleting one never breaks another.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

// "auto-<pid>-": the prefix of the process's periodic capsules (pid as the
// process sees itself: unchanged across restores) into out[cap].
void periodic_prefix(char *out, size_t cap);

// Takes a periodic snapshot and prunes the older ones.  snapshot_take's
// result: 0, 1 in a process restored from the capsule (the caller's frame
// is the dead original's), or -errno (said once in the log per change of
// reason).
long periodic_snapshot();

// Deletes the capsules of dirfd whose names start with prefix and end in
// .mmtcap, all but the keep newest (by the creation time in their
// manifests; a capsule whose manifest cannot be read counts as oldest).
// Returns how many were deleted, or -errno when the directory cannot be
// read.  At most 1024 such capsules are considered.
long prune_capsules(int dirfd, const char *prefix, uint32_t keep);

}  // namespace mmtier::detail
