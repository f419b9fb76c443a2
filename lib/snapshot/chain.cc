#include "snapshot/chain.h"

#include "platform/sys.h"
#include "snapshot/capsule_format.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>

namespace mmtier::detail {
namespace {

struct last_capsule {
  bool valid;
  uint64_t dev, ino;  // of the directory it is in
  char name[80];
  uint8_t id[16];
};
// Only the thread taking a snapshot (one at a time) reads or writes it.
last_capsule g_last;

}  // namespace

void chain_remember(uint64_t dev, uint64_t ino, const char *name, const uint8_t id[16]) {
  g_last.valid = ino != 0 && strlen(name) < sizeof g_last.name;
  g_last.dev = dev;
  g_last.ino = ino;
  snprintf(g_last.name, sizeof g_last.name, "%s", name);
  memcpy(g_last.id, id, sizeof g_last.id);
}

int chain_open_base(int parent_dirfd, uint64_t dev, uint64_t ino) {
  if (!g_last.valid || g_last.dev != dev || g_last.ino != ino) return -1;
  char entry[sizeof g_last.name + sizeof capsule::kSuffix];
  snprintf(entry, sizeof entry, "%s%s", g_last.name, capsule::kSuffix);
  const long fd = sys::openat(parent_dirfd, entry, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct stat st;
  if (sys::raw(SYS_fstat, fd, reinterpret_cast<long>(&st)) != 0 ||
      st.st_uid != static_cast<uid_t>(sys::raw(SYS_geteuid)) || (st.st_mode & 077)) {
    sys::close(static_cast<int>(fd));
    return -1;
  }
  return static_cast<int>(fd);
}

void chain_base_id(uint8_t id[16]) {
  if (g_last.valid)
    memcpy(id, g_last.id, 16);
  else
    memset(id, 0, 16);
}

}  // namespace mmtier::detail
