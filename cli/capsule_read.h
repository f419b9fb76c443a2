// Reading a capsule from the command: finding it, its manifest, the
// checks of its memory.  Shared by `mmtier snapshot` and `mmtier restore`.
#pragma once

#include "snapshot/capsule_format.h"

#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

namespace mmtier::cli {

// A descriptor closed with its scope.
struct fd_holder {
  int fd = -1;
  fd_holder() = default;
  explicit fd_holder(int f) : fd(f) {}
  fd_holder(const fd_holder &) = delete;
  fd_holder &operator=(const fd_holder &) = delete;
  ~fd_holder() {
    if (fd >= 0) close(fd);
  }
};

// The capsule directory: the given one, else MMTIER_SNAPSHOT_DIR (checked as
// the library checks it), else the user's default.  Throws failure.
std::string capsule_dir(bool dir_set, const std::string &dir);

// A manifest is tables of fixed records; a larger file is not one worth
// reading into memory.
constexpr uint64_t kManifestMax = 1ull << 30;

struct manifest_file {
  std::vector<uint64_t> words;  // 8-byte aligned, as manifest_parse needs
  uint64_t len = 0;
  const void *data() const { return words.data(); }
};

// The manifest of the capsule dirfd: 0 or -errno (-EFBIG: beyond kManifestMax).
int read_manifest(int dirfd, manifest_file *m);

struct located {
  std::string parent;  // the directory holding it
  std::string entry;   // its name there
  std::string path;
};

// The capsule at l, opened, parsed and durable, and with verify every
// checksum of its data right; throws failure naming what is not.
void check_capsule_at(const located &l, bool verify);

// A path (with a slash) as it is; a name in the capsule directory: NAME,
// NAME.mmtcap, or a temporary capsule's name.
located locate(const std::string &arg, bool dir_set, const std::string &dir);

// One line for an open_checked failure.
std::string open_error(int err, const char *why);

struct verified {
  uint64_t chunks = 0, bytes = 0;
  uint64_t linked_chunks = 0, linked_bytes = 0;  // of them, in the capsule's PMem files (verify_linked)
  uint64_t base_chunks = 0, base_bytes = 0;      // of them, in earlier capsules' mem (verify_mem)
};

// Where the bytes of mem and base runs are, as one range of "data
// offsets": the capsule's mem from 0, then each earlier capsule's mem it
// links (mem-<id>, incremental) from the next 2 MiB boundary on, so that
// every chunk of them is chunk k = data offset / kChunkBytes of one range.
struct data_layout {
  static constexpr uint64_t kNone = ~uint64_t{0};
  std::vector<uint64_t> base;  // per files index: where a linked mem starts, or kNone
  uint64_t end = 0;            // every data offset is below
  // The data offset of a run's first byte (a mem or base run).
  uint64_t of_run(const capsule::run &r) const;
  // The data offset of a chunk of mem or of a linked mem, or kNone (a
  // chunk of a PMem file).
  uint64_t of_chunk(const capsule::chunk &c) const;
};
data_layout layout_of(const capsule::manifest_view &m);

// The files of a data layout, opened: mem and each linked earlier mem
// (open_linked).  fd(file) is mem's for kNoFile.  Throws failure.
struct data_files {
  int mem = -1;
  std::vector<int> base;  // per files index, -1 where not a linked mem
  int fd(uint32_t file) const { return file == capsule::kNoFile ? mem : base[file]; }
  void close_all();
};
data_files open_data(int dirfd, const capsule::manifest_view &m, const data_layout &l);

// Checks the CRC of every chunk of mem and of the earlier capsules' mem it
// links (or, with only, of the chunks k = data offset / kChunkBytes where
// only[k] is set), in the order of their data offsets; throws failure
// naming the first that does not match.
verified verify_mem(int dirfd, const capsule::manifest_view &m, const std::vector<uint8_t> *only = nullptr);

// A file of the capsule's own `file` (a files-table entry with identity
// capsule: a PMem file pmem-<k>.tier or an earlier capsule's mem,
// mem-<id>; a regular file of the capsule's owner), opened read-only;
// throws failure saying what is wrong.
int open_linked(int dirfd, const capsule::manifest_view &m, uint32_t file);

// The path of the newest durable capsule of dir (by the creation time in
// its manifest) whose name starts with prefix, its time to *created; ""
// when there is none.  Capsules that cannot be opened or read are passed
// over.
std::string newest_capsule(const std::string &dir, const std::string &prefix, uint64_t *created);

// Every durable capsule of dir whose name starts with prefix (and, pid not
// 0, taken of a process that saw itself as pid), newest first.
struct durable_capsule {
  std::string path;
  uint64_t created;  // CLOCK_REALTIME ns
  uint32_t cmdline_crc;  // of its process's command line at start (0: not known)
};
std::vector<durable_capsule> durable_capsules(const std::string &dir, const std::string &prefix, int pid);

// Whether files entry `file` is an earlier capsule's mem (mem-<id>).
bool is_base_file(const capsule::manifest_view &m, uint32_t file);

// Checks the CRC of every chunk of the capsule's linked PMem files (ZeroIO;
// the chunks of other files, linked mem files included, are not looked
// at: verify_mem checks those).
verified verify_linked(int dirfd, const capsule::manifest_view &m);

}  // namespace mmtier::cli
