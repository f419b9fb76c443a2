// Capsule directories (docs/SNAPSHOTS.md §5): where capsules go by default,
// making one under a temporary name and publishing it under its own in one
// rename, opening one with the owner and mode checks that restore and
// delete rely on, and deleting one.
//
//   <dir>/<name>.mmtcap/                          a capsule
//   <dir>/.<name>.mmtcap.tmp-<pid>-<16 hex>/      one being written by process pid
//
// Nothing here allocates or uses the C library beyond memcpy-level code:
// begin, publish and abort run in the snapshot writer, a fork child in
// which the malloc and metadata locks are held by a thread that does not
// exist there.  So: raw system calls (platform/sys.h), fixed-size buffers
// on the stack, getdents64 instead of opendir.  Every function returns 0
// (or a count) on success and a negative errno value on failure.
#pragma once

#include "snapshot/capsule_format.h"

#include <cerrno>
#include <cstddef>

namespace mmtier::capsule {

constexpr size_t kNameMax = 64;  // characters of a capsule name
// ".<name>.mmtcap.tmp-<pid>-<16 hex>" and its NUL, with a pid of 10 digits.
constexpr size_t kTmpNameMax = 1 + kNameMax + (sizeof kSuffix - 1) + 5 + 10 + 1 + 16 + 1;
constexpr char kTmpInfix[] = ".tmp-";

// The refusals of open_checked and remove, each its own code.  A refusal
// also sets *why (when given) to one line saying it, e.g. "not owned by
// you"; a failure of the system itself leaves *why null (strerror says it).
constexpr int kErrSymlink = -ELOOP;        // the capsule is a symbolic link
constexpr int kErrNotDir = -ENOTDIR;       // not a directory
constexpr int kErrNotOwned = -EPERM;       // owned by another user (and the caller is not root)
constexpr int kErrOpen = -EACCES;          // some group or other permission bit is set
constexpr int kErrNotCapsule = -EMEDIUMTYPE;  // holds what a capsule does not, or no manifest

// The capsule directory when MMTIER_SNAPSHOT_DIR is not set, as the
// library's configuration resolves it: /var/lib/mmtier/capsules for root
// (euid 0); else $XDG_STATE_HOME/mmtier/capsules when that is an absolute
// path; else $HOME/.local/state/mmtier/capsules when HOME is absolute.
// Null or empty variables count as unset.  Writes the path into out[cap]
// and returns its length, -ENOENT when there is no default, -ENAMETOOLONG
// when it does not fit.
int default_dir(unsigned euid, const char *xdg_state_home, const char *home, char *out, size_t cap);

// mkdir -p: creates every missing directory of path with mode 0700 (less
// the umask).  Existing ones are left as they are; a symbolic link to a
// directory counts as one.  0, -ENOTDIR when a component is something
// else, -ENAMETOOLONG from 4096 bytes on, -ENOENT for "".
int make_dirs(const char *path);

// A capsule name: 1 to kNameMax of A-Z a-z 0-9 . _ -, not starting with a
// dot (a dot starts the temporary names).
bool valid_name(const char *name);

// Whether name is a linked PMem file's name in a capsule: "pmem-<k>.tier",
// k of 1 to 10 digits.
bool pmem_file_name(const char *name);

// Whether name is an earlier capsule's mem linked into a capsule
// (incremental): "mem-" and the 32 lowercase hex digits of that capsule's
// id.  base_file_name_of writes the name of capsule id into out.
bool base_file_name(const char *name);
void base_file_name_of(const uint8_t id[16], char out[40]);

// Whether entry is a capsule's directory name, "<name>.mmtcap" with a
// valid name; the name goes to name_out[kNameMax + 1] when given.
bool capsule_entry(const char *entry, char *name_out);

// Whether entry is a temporary capsule's name,
// ".<name>.mmtcap.tmp-<pid>-<hex>"; the name to name_out[kNameMax + 1] and
// the pid to *pid_out when given.
bool tmp_entry(const char *entry, char *name_out, long *pid_out);

// A capsule being written: made by begin, then published or aborted.
struct pending {
  int dirfd = -1;        // the temporary capsule directory
  int manifest_fd = -1;  // its manifest, read-write, empty
  int mem_fd = -1;       // its mem, read-write, empty
  char name[kNameMax + 1] = {};
  char tmp_name[kTmpNameMax] = {};  // in the parent; "" once published
};

// Makes the temporary capsule of name in parent_dirfd: the directory
// (mode 0700, a fresh random name that did not exist) with an empty
// manifest and mem (0600, created O_EXCL|O_NOFOLLOW), all opened
// close-on-exec into *out.  -EINVAL for an invalid name, -EEXIST when
// <name>.mmtcap exists already; on any failure nothing is left behind and
// *out holds no descriptor.
int begin(int parent_dirfd, const char *name, pending *out);

// Renames the temporary capsule to <name>.mmtcap, never over an existing
// one (-EEXIST: a capsule of that name appeared meanwhile; the temporary
// one stays, for abort).  With sync, the capsule directory and then the
// parent are fsync'd, so the names survive a crash (their data is the
// writer's to sync first).  The descriptors stay open: the writer goes on
// to mark the capsule durable through manifest_fd; release closes them.
int publish(int parent_dirfd, pending *p, bool sync);

// Removes the temporary capsule with everything in it (files/ too) and
// closes its descriptors.  Nothing happens to a published capsule: the
// directory is found by its temporary name, and only when it is still the
// one begin made.  Safe on a pending that begin failed to fill.
void abort(int parent_dirfd, pending *p);

// Closes the descriptors of p, removing nothing.
void release(pending *p);

// Opens the capsule directory path (relative to at) for reading, without
// following a symbolic link in its last component, into *dirfd_out
// (close-on-exec).  Refuses a symbolic link (kErrSymlink), anything but a
// directory (kErrNotDir), a directory of another user unless the caller's
// euid is 0 (kErrNotOwned), one with any group or other permission bit
// (kErrOpen).  The checks are made on the opened directory, so a rename
// in between cannot slip another one in; when the kernel refuses the open
// (another user's 0700 directory), the same checks on what the name is
// give the reason.
int open_checked(int at, const char *path, int *dirfd_out, const char **why = nullptr);

// Deletes the capsule entry of parent_dirfd (its directory name,
// "<name>.mmtcap", or a temporary one).  First the checks of open_checked,
// then the contents: a capsule has a manifest (a regular file, starting
// with kMagic if it has 8 bytes), and besides it only a regular mem,
// regular pmem-<id>.tier and mem-<capsule id> files and a directory files/
// of regular files named by numbers.  Anything else, or a name that is not a capsule's,
// refuses the delete (kErrNotCapsule) before anything is removed: unknown
// data is never deleted.  Then mem, the PMem files, files/ and last the
// manifest (a delete cut short can be run again), and the directory.
int remove(int parent_dirfd, const char *entry, const char **why = nullptr);

// The contents check of remove alone, on an opened capsule directory: 0,
// or kErrNotCapsule with why set (anything a capsule does not hold, a
// symbolic link or a directory where a file must be, no manifest).
int check_capsule(int dirfd, const char **why = nullptr);

}  // namespace mmtier::capsule
