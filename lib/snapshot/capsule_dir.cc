// Capsule directories (see capsule_dir.h): raw system calls and the stack
// only, for the snapshot writer's fork child.
#include "snapshot/capsule_dir.h"

#include "platform/dirent.h"
#include "platform/sys.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include <cstring>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

namespace mmtier::capsule {
namespace {

namespace sys = detail::sys;

constexpr size_t kPathBytes = 4096;
constexpr int kMaxDepth = 2;  // the capsule, files/ in it
constexpr char kFilesDir[] = "files";
constexpr char kPmemPrefix[] = "pmem-";
constexpr char kPmemSuffix[] = ".tier";

size_t str_len(const char *s) {
  size_t n = 0;
  while (s[n]) ++n;
  return n;
}

bool str_eq(const char *a, const char *b) {
  while (*a && *a == *b) ++a, ++b;
  return *a == *b;
}

bool ends_with(const char *s, size_t n, const char *tail, size_t tn) {
  return n >= tn && memcmp(s + n - tn, tail, tn) == 0;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f'); }

bool all_digits(const char *s, size_t n) {
  if (!n) return false;
  for (size_t i = 0; i < n; ++i)
    if (!is_digit(s[i])) return false;
  return true;
}

// Appends src to out[*len], keeping a NUL; false when it does not fit.
bool append(char *out, size_t cap, size_t *len, const char *src, size_t n) {
  if (*len + n >= cap) return false;
  memcpy(out + *len, src, n);
  *len += n;
  out[*len] = 0;
  return true;
}

bool append(char *out, size_t cap, size_t *len, const char *src) { return append(out, cap, len, src, str_len(src)); }

// n as decimal into out (at least 21 bytes); returns the length.
size_t decimal(unsigned long n, char *out) {
  char tmp[24];
  size_t k = 0;
  do {
    tmp[k++] = static_cast<char>('0' + n % 10);
    n /= 10;
  } while (n);
  for (size_t i = 0; i < k; ++i) out[i] = tmp[k - 1 - i];
  out[k] = 0;
  return k;
}

long stat_at(int at, const char *path, struct stat *st, int flags) {
  return sys::raw(SYS_newfstatat, at, reinterpret_cast<long>(path), reinterpret_cast<long>(st), flags);
}

long stat_fd(int fd, struct stat *st) { return stat_at(fd, "", st, AT_EMPTY_PATH); }

long open_dir(int at, const char *name) {
  return sys::openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
}

void close_fd(int *fd) {
  if (*fd >= 0) sys::close(*fd);
  *fd = -1;
}

// Calls f(name, d_type) for each entry of dirfd but "." and "..", from the
// start of the directory; stops at the first non-zero f returns and
// returns it, or a getdents64 error, or 0.
template <class F>
long each_entry(int dirfd, F &&f) {
  const long r = sys::raw(SYS_lseek, dirfd, 0, SEEK_SET);
  return r < 0 ? r : sys::for_each_dirent(dirfd, f);
}

// d_type, asked of the file system when the directory does not say.
unsigned char entry_type(int dirfd, const char *name, unsigned char type) {
  if (type != DT_UNKNOWN) return type;
  struct stat st;
  if (stat_at(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) return DT_UNKNOWN;
  return static_cast<unsigned char>(IFTODT(st.st_mode));
}

long clear_dir(int dirfd, int depth, const char *skip);

// Removes the subdirectory name of dirfd and what it holds.
long remove_subdir(int dirfd, const char *name, int depth) {
  if (depth >= kMaxDepth) return -ENOTEMPTY;
  int fd = static_cast<int>(open_dir(dirfd, name));
  if (fd < 0) return fd;
  long r = clear_dir(fd, depth + 1, nullptr);
  close_fd(&fd);
  return r < 0 ? r : sys::unlinkat(dirfd, name, AT_REMOVEDIR);
}

// Removes everything in dirfd but the entry skip.  Entries removed while
// getdents64 walks the directory may make it skip others, so the walk is
// repeated until a pass finds nothing to remove.
long clear_dir(int dirfd, int depth, const char *skip) {
  for (int pass = 0; pass < 64; ++pass) {
    bool removed = false;
    long err = 0;
    long r = each_entry(dirfd, [&](const char *name, unsigned char type) -> long {
      if (skip && str_eq(name, skip)) return 0;
      long u = sys::unlinkat(dirfd, name, 0);
      if (u == -EISDIR || (u == -EPERM && entry_type(dirfd, name, type) == DT_DIR))
        u = remove_subdir(dirfd, name, depth);
      if (u == 0) removed = true;
      else if (u != -ENOENT) err = u;
      return 0;
    });
    if (r < 0) return r;
    if (!removed) return err;
  }
  return -ENOTEMPTY;
}

// 16 random hex digits (the clock when getrandom cannot answer at once).
void random_hex(char out[17]) {
  unsigned char b[8];
  if (sys::raw(SYS_getrandom, reinterpret_cast<long>(b), sizeof b, GRND_NONBLOCK) != sizeof b) {
    struct timespec ts = {};
    sys::raw(SYS_clock_gettime, CLOCK_MONOTONIC, reinterpret_cast<long>(&ts));
    const uint64_t v = static_cast<uint64_t>(ts.tv_nsec) * 0x9e3779b97f4a7c15ull ^ static_cast<uint64_t>(ts.tv_sec);
    memcpy(b, &v, sizeof b);
  }
  static const char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 8; ++i) {
    out[2 * i] = kHex[b[i] >> 4];
    out[2 * i + 1] = kHex[b[i] & 15];
  }
  out[16] = 0;
}

// Why st cannot be a capsule this process may use, or 0.
int refusal(const struct stat &st, const char **why) {
  const char *w = nullptr;
  int r = 0;
  const unsigned long euid = static_cast<unsigned long>(sys::raw(SYS_geteuid));
  if (S_ISLNK(st.st_mode)) {
    r = kErrSymlink, w = "is a symbolic link";
  } else if (!S_ISDIR(st.st_mode)) {
    r = kErrNotDir, w = "not a directory";
  } else if (euid != 0 && st.st_uid != euid) {
    r = kErrNotOwned, w = "not owned by you";
  } else if (st.st_mode & 077) {
    r = kErrOpen, w = "open to group or others (a capsule must be mode 0700)";
  }
  if (why) *why = w;
  return r;
}

bool pmem_name(const char *name) { return pmem_file_name(name) || base_file_name(name); }

// Whether files/ of a capsule holds only regular files named by numbers.
bool files_dir_ok(int dirfd) {
  int fd = static_cast<int>(open_dir(dirfd, kFilesDir));
  if (fd < 0) return false;
  long r = each_entry(fd, [&](const char *name, unsigned char type) -> long {
    return all_digits(name, str_len(name)) && entry_type(fd, name, type) == DT_REG ? 0 : 1;
  });
  close_fd(&fd);
  return r == 0;
}

// Whether dirfd holds a capsule and nothing else (see remove).
int check_contents(int dirfd, const char **why) {
  bool manifest = false;
  long r = each_entry(dirfd, [&](const char *name, unsigned char type) -> long {
    type = entry_type(dirfd, name, type);
    if (str_eq(name, kManifest)) {
      manifest = type == DT_REG;
      return manifest ? 0 : 1;
    }
    if (str_eq(name, kMem) || pmem_name(name) || str_eq(name, kAttemptMarker)) return type == DT_REG ? 0 : 1;
    if (str_eq(name, kFilesDir)) return type == DT_DIR && files_dir_ok(dirfd) ? 0 : 1;
    return 1;
  });
  if (r < 0) return static_cast<int>(r);
  if (r > 0) {
    if (why) *why = "not a capsule (it holds files a capsule does not have)";
    return kErrNotCapsule;
  }
  if (!manifest) {
    if (why) *why = "not a capsule (no manifest)";
    return kErrNotCapsule;
  }
  long fd = sys::openat(dirfd, kManifest, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0);
  if (fd < 0) return static_cast<int>(fd);
  char magic[sizeof kMagic];
  const long n = sys::pread(static_cast<int>(fd), magic, sizeof magic, 0);
  sys::close(static_cast<int>(fd));
  if (n == static_cast<long>(sizeof magic) && memcmp(magic, kMagic, sizeof magic) != 0) {
    if (why) *why = "not a capsule (its manifest is not a capsule manifest)";
    return kErrNotCapsule;
  }
  return 0;
}

// Opens a file of the capsule being made: new, ours alone.
long create_file(int dirfd, const char *name) {
  long fd = sys::openat(dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd >= 0) sys::raw(SYS_fchmod, fd, 0600);  // whatever the umask left
  return fd;
}

// Makes the temporary directory of p->name under a fresh random name.
long make_tmp_dir(int parent_dirfd, pending *p) {
  char pid[24];
  decimal(static_cast<unsigned long>(sys::getpid()), pid);
  for (int attempt = 0; attempt < 8; ++attempt) {
    char hex[17];
    random_hex(hex);
    size_t len = 0;
    char *t = p->tmp_name;
    if (!append(t, kTmpNameMax, &len, ".") || !append(t, kTmpNameMax, &len, p->name) ||
        !append(t, kTmpNameMax, &len, kSuffix) || !append(t, kTmpNameMax, &len, kTmpInfix) ||
        !append(t, kTmpNameMax, &len, pid) || !append(t, kTmpNameMax, &len, "-") ||
        !append(t, kTmpNameMax, &len, hex))
      return -ENAMETOOLONG;
    const long r = sys::raw(SYS_mkdirat, parent_dirfd, reinterpret_cast<long>(t), 0700);
    if (r != -EEXIST) {
      if (r < 0) t[0] = 0;
      return r;
    }
  }
  p->tmp_name[0] = 0;
  return -EEXIST;
}

}  // namespace

int default_dir(unsigned euid, const char *xdg_state_home, const char *home, char *out, size_t cap) {
  const char *base, *tail;
  if (euid == 0) {
    base = "/var/lib", tail = "/mmtier/capsules";
  } else if (xdg_state_home && xdg_state_home[0] == '/') {
    base = xdg_state_home, tail = "/mmtier/capsules";
  } else if (home && home[0] == '/') {
    base = home, tail = "/.local/state/mmtier/capsules";
  } else {
    return -ENOENT;
  }
  size_t len = 0;
  if (!cap) return -ENAMETOOLONG;
  out[0] = 0;
  if (!append(out, cap, &len, base) || !append(out, cap, &len, tail)) {
    out[0] = 0;
    return -ENAMETOOLONG;
  }
  return static_cast<int>(len);
}

int make_dirs(const char *path) {
  const size_t n = str_len(path);
  if (!n) return -ENOENT;
  if (n >= kPathBytes) return -ENAMETOOLONG;
  char buf[kPathBytes];
  memcpy(buf, path, n + 1);
  for (size_t i = 1; i <= n; ++i) {
    if ((buf[i] != '/' && buf[i] != 0) || buf[i - 1] == '/') continue;
    const char c = buf[i];
    buf[i] = 0;
    long r = sys::raw(SYS_mkdirat, AT_FDCWD, reinterpret_cast<long>(buf), 0700);
    if (r == -EEXIST) {
      struct stat st;
      r = stat_at(AT_FDCWD, buf, &st, 0);
      if (r == 0 && !S_ISDIR(st.st_mode)) r = -ENOTDIR;
    }
    buf[i] = c;
    if (r < 0) return static_cast<int>(r);
  }
  return 0;
}

bool pmem_file_name(const char *name) {
  const size_t n = str_len(name), p = sizeof kPmemPrefix - 1, s = sizeof kPmemSuffix - 1;
  return n > p + s && n - p - s <= 10 && memcmp(name, kPmemPrefix, p) == 0 && ends_with(name, n, kPmemSuffix, s) &&
         all_digits(name + p, n - p - s);
}

bool base_file_name(const char *name) {
  const size_t n = str_len(name), p = sizeof kBasePrefix - 1;
  if (n != p + 32 || memcmp(name, kBasePrefix, p) != 0) return false;
  for (size_t i = p; i < n; ++i)
    if (!is_hex(name[i])) return false;
  return true;
}

void base_file_name_of(const uint8_t id[16], char out[40]) {
  memcpy(out, kBasePrefix, sizeof kBasePrefix - 1);
  char *o = out + sizeof kBasePrefix - 1;
  for (int i = 0; i < 16; ++i) {
    *o++ = "0123456789abcdef"[id[i] >> 4];
    *o++ = "0123456789abcdef"[id[i] & 15];
  }
  *o = 0;
}

bool valid_name(const char *name) {
  if (!name || !name[0] || name[0] == '.') return false;
  size_t n = 0;
  for (; name[n]; ++n) {
    const char c = name[n];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '.' || c == '_' || c == '-';
    if (!ok || n >= kNameMax) return false;
  }
  return true;
}

bool capsule_entry(const char *entry, char *name_out) {
  const size_t n = str_len(entry), s = sizeof kSuffix - 1;
  if (!ends_with(entry, n, kSuffix, s) || n - s > kNameMax) return false;
  char name[kNameMax + 1];
  memcpy(name, entry, n - s);
  name[n - s] = 0;
  if (!valid_name(name)) return false;
  if (name_out) memcpy(name_out, name, n - s + 1);
  return true;
}

bool tmp_entry(const char *entry, char *name_out, long *pid_out) {
  const size_t n = str_len(entry);
  if (n < 2 || entry[0] != '.') return false;
  // From the end: the hex, the pid, then ".mmtcap.tmp-".
  size_t i = n;
  while (i > 0 && is_hex(entry[i - 1])) --i;
  if (i == n || n - i > 16 || i == 0 || entry[i - 1] != '-') return false;
  const size_t pid_end = --i;
  while (i > 0 && is_digit(entry[i - 1])) --i;
  if (i == pid_end || pid_end - i > 10) return false;
  const size_t pid_start = i;
  char marker[sizeof kSuffix + sizeof kTmpInfix];
  size_t mlen = 0;
  append(marker, sizeof marker, &mlen, kSuffix);
  append(marker, sizeof marker, &mlen, kTmpInfix);
  if (pid_start < 1 + mlen || memcmp(entry + pid_start - mlen, marker, mlen) != 0) return false;
  const size_t name_len = pid_start - mlen - 1;
  if (name_len > kNameMax) return false;
  char name[kNameMax + 1];
  memcpy(name, entry + 1, name_len);
  name[name_len] = 0;
  if (!valid_name(name)) return false;
  if (name_out) memcpy(name_out, name, name_len + 1);
  if (pid_out) {
    long pid = 0;
    for (size_t k = pid_start; k < pid_end; ++k) pid = pid * 10 + (entry[k] - '0');
    *pid_out = pid;
  }
  return true;
}

int begin(int parent_dirfd, const char *name, pending *out) {
  *out = pending{};
  if (!valid_name(name)) return -EINVAL;
  memcpy(out->name, name, str_len(name) + 1);
  char final_name[kNameMax + sizeof kSuffix];
  size_t len = 0;
  append(final_name, sizeof final_name, &len, name);
  append(final_name, sizeof final_name, &len, kSuffix);
  struct stat st;
  long r = stat_at(parent_dirfd, final_name, &st, AT_SYMLINK_NOFOLLOW);
  if (r == 0) return -EEXIST;
  if (r != -ENOENT) return static_cast<int>(r);
  if ((r = make_tmp_dir(parent_dirfd, out)) < 0) return static_cast<int>(r);
  r = open_dir(parent_dirfd, out->tmp_name);
  if (r >= 0) {
    out->dirfd = static_cast<int>(r);
    sys::raw(SYS_fchmod, r, 0700);  // whatever the umask left
    r = create_file(out->dirfd, kManifest);
  }
  if (r >= 0) {
    out->manifest_fd = static_cast<int>(r);
    r = create_file(out->dirfd, kMem);
  }
  if (r < 0) {
    abort(parent_dirfd, out);
    return static_cast<int>(r);
  }
  out->mem_fd = static_cast<int>(r);
  return 0;
}

int publish(int parent_dirfd, pending *p, bool sync) {
  if (!p->tmp_name[0]) return -ENOENT;
  char final_name[kNameMax + sizeof kSuffix];
  size_t len = 0;
  append(final_name, sizeof final_name, &len, p->name);
  append(final_name, sizeof final_name, &len, kSuffix);
  long r = sys::raw(SYS_renameat2, parent_dirfd, reinterpret_cast<long>(p->tmp_name), parent_dirfd,
                    reinterpret_cast<long>(final_name), RENAME_NOREPLACE);
  if (r == -EINVAL) {
    // A file system without RENAME_NOREPLACE: a plain rename fails on a
    // capsule, which is never an empty directory, and the check before it
    // catches anything else already there.
    struct stat st;
    r = stat_at(parent_dirfd, final_name, &st, AT_SYMLINK_NOFOLLOW);
    if (r == 0) return -EEXIST;
    r = sys::raw(SYS_renameat, parent_dirfd, reinterpret_cast<long>(p->tmp_name), parent_dirfd,
                 reinterpret_cast<long>(final_name));
    if (r == -ENOTEMPTY) r = -EEXIST;
  }
  if (r < 0) return static_cast<int>(r);
  p->tmp_name[0] = 0;
  if (!sync) return 0;
  const int fds[] = {p->dirfd, parent_dirfd};
  for (int fd : fds) {
    r = fd >= 0 ? sys::raw(SYS_fsync, fd) : 0;
    if (r < 0 && r != -EINVAL) return static_cast<int>(r);  // EINVAL: a file system that cannot sync
  }
  return 0;
}

void abort(int parent_dirfd, pending *p) {
  if (p->tmp_name[0] && parent_dirfd >= 0) {
    int fd = static_cast<int>(open_dir(parent_dirfd, p->tmp_name));
    struct stat now, made;
    // Only the directory begin made: not whatever has its name now.
    const bool same = fd >= 0 && (p->dirfd < 0 || (stat_fd(fd, &now) == 0 && stat_fd(p->dirfd, &made) == 0 &&
                                                    now.st_dev == made.st_dev && now.st_ino == made.st_ino));
    if (same && clear_dir(fd, 0, nullptr) == 0) sys::unlinkat(parent_dirfd, p->tmp_name, AT_REMOVEDIR);
    if (fd < 0 && p->dirfd < 0) sys::unlinkat(parent_dirfd, p->tmp_name, AT_REMOVEDIR);  // made, never opened
    close_fd(&fd);
    p->tmp_name[0] = 0;
  }
  release(p);
}

void release(pending *p) {
  close_fd(&p->dirfd);
  close_fd(&p->manifest_fd);
  close_fd(&p->mem_fd);
}

int open_checked(int at, const char *path, int *dirfd_out, const char **why) {
  *dirfd_out = -1;
  if (why) *why = nullptr;
  struct stat st;
  const long fd = open_dir(at, path);
  if (fd < 0) {
    // Say what the name is, when that is why the open failed.
    if (stat_at(at, path, &st, AT_SYMLINK_NOFOLLOW) == 0)
      if (int r = refusal(st, why)) return r;
    return static_cast<int>(fd);
  }
  long r = stat_fd(static_cast<int>(fd), &st);
  if (r == 0) r = refusal(st, why);
  if (r < 0) {
    sys::close(static_cast<int>(fd));
    return static_cast<int>(r);
  }
  *dirfd_out = static_cast<int>(fd);
  return 0;
}

int check_capsule(int dirfd, const char **why) {
  if (why) *why = nullptr;
  return check_contents(dirfd, why);
}

int remove(int parent_dirfd, const char *entry, const char **why) {
  if (why) *why = nullptr;
  if (!capsule_entry(entry, nullptr) && !tmp_entry(entry, nullptr, nullptr)) {
    if (why) *why = "not a capsule (its name does not end in .mmtcap)";
    return kErrNotCapsule;
  }
  int fd;
  long r = open_checked(parent_dirfd, entry, &fd, why);
  if (r < 0) return static_cast<int>(r);
  r = check_contents(fd, why);
  if (r == 0) r = clear_dir(fd, 0, kManifest);
  if (r == 0 && (r = sys::unlinkat(fd, kManifest, 0)) == -ENOENT) r = 0;
  close_fd(&fd);
  if (r == 0) r = sys::unlinkat(parent_dirfd, entry, AT_REMOVEDIR);
  return static_cast<int>(r);
}

}  // namespace mmtier::capsule
