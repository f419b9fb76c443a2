// Incremental snapshots: which capsule the next snapshot of this process
// builds on.  It is the last one the process completed (or, in a restored
// process, the capsule it came back from), when the next snapshot goes to
// the same directory and that capsule is still there: the writer then
// saves only the pages whose hashes differ from that capsule's
// (writer_base.cc).
#pragma once

#include <cstdint>

namespace mmtier::detail {

// Remembers the capsule name (in the directory of device dev and inode
// ino) with id as the last one completed.
void chain_remember(uint64_t dev, uint64_t ino, const char *name, const uint8_t id[16]);

// The last capsule's directory, opened, when it lies in parent_dirfd (of
// device dev and inode ino) and is a capsule directory of this user's
// (mode 0700); else -1.
int chain_open_base(int parent_dirfd, uint64_t dev, uint64_t ino);

// The last capsule's id into id (zero when there is none).
void chain_base_id(uint8_t id[16]);

}  // namespace mmtier::detail
