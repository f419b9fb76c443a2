// See capsule_read.h.
#include "capsule_read.h"

#include "cli.h"
#include "format.h"

#include "config/config.h"
#include "snapshot/capsule_dir.h"
#include "support/crc32c.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace mmtier::cli {

namespace cap = mmtier::capsule;

namespace {
constexpr size_t kVerifyBuffer = 1 << 20;
}  // namespace

std::string capsule_dir(bool dir_set, const std::string &dir) {
  if (dir_set) return dir;
  if (const char *env = getenv("MMTIER_SNAPSHOT_DIR")) {
    std::string entry = std::string("MMTIER_SNAPSHOT_DIR=") + env;
    char *envp[] = {entry.data(), nullptr};
    detail::config c;
    detail::config_error err;
    if (!detail::config_parse(envp, false, &c, &err, nullptr)) throw failure(err.line);
    return c.snapshot_dir;
  }
  char buf[detail::kPathMax];
  const int r = cap::default_dir(geteuid(), getenv("XDG_STATE_HOME"), getenv("HOME"), buf, sizeof buf);
  if (r == -ENOENT) throw failure("no capsule directory: set HOME or MMTIER_SNAPSHOT_DIR, or give --dir");
  if (r < 0) throw failure("the default capsule directory's path is too long: set MMTIER_SNAPSHOT_DIR");
  return buf;
}

int read_manifest(int dirfd, manifest_file *m) {
  fd_holder fd(openat(dirfd, cap::kManifest, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
  if (fd.fd < 0) return -errno;
  struct stat st;
  if (fstat(fd.fd, &st) != 0) return -errno;
  if (!S_ISREG(st.st_mode)) return -EINVAL;
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size > kManifestMax) return -EFBIG;
  m->words.assign((size + 7) / 8 + 1, 0);
  auto *p = reinterpret_cast<char *>(m->words.data());
  m->len = 0;
  while (m->len < size) {
    const ssize_t n = pread(fd.fd, p + m->len, size - m->len, static_cast<off_t>(m->len));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) break;  // cut short meanwhile: the parser says so
    m->len += static_cast<uint64_t>(n);
  }
  return 0;
}

located locate(const std::string &arg, bool dir_set, const std::string &dir) {
  std::string a = arg;
  while (a.size() > 1 && a.back() == '/') a.pop_back();
  located l;
  const size_t slash = a.rfind('/');
  if (slash != std::string::npos) {
    l.parent = slash == 0 ? "/" : a.substr(0, slash);
    l.entry = a.substr(slash + 1);
    l.path = a;
    return l;
  }
  l.parent = capsule_dir(dir_set, dir);
  l.entry = a;
  if (cap::valid_name(a.c_str()) && !cap::capsule_entry(a.c_str(), nullptr)) l.entry += cap::kSuffix;
  l.path = l.parent + "/" + l.entry;
  return l;
}

std::string open_error(int err, const char *why) {
  if (why) return why;
  if (err == -ENOENT) return "no such capsule";
  return strerror(-err);
}

namespace {

// CRC32C of [off, off + len) of fd; throws failure when it ends early.
uint32_t crc_of(int fd, uint64_t off, uint64_t len, std::vector<char> &buf, const std::string &what) {
  uint32_t crc = 0;
  for (uint64_t done = 0; done < len;) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(len - done, buf.size()));
    const ssize_t n = pread(fd, buf.data(), want, static_cast<off_t>(off + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw failure(strf("cannot read %s: %s", what.c_str(), strerror(errno)));
    if (n == 0)
      throw failure(strf("%s is damaged: it ends at byte %llu, inside the chunk at offset %llu", what.c_str(),
                         static_cast<unsigned long long>(off + done), static_cast<unsigned long long>(off)));
    crc = detail::crc32c(crc, buf.data(), static_cast<size_t>(n));
    done += static_cast<uint64_t>(n);
  }
  return crc;
}

void check_crc(const cap::chunk &c, uint32_t crc, const std::string &what) {
  if (crc != c.crc)
    throw failure(strf("%s is damaged: the chunk at offset %llu (%s) has CRC32C %08x, the manifest says %08x",
                       what.c_str(), static_cast<unsigned long long>(c.offset), human_bytes(c.length).c_str(), crc,
                       c.crc));
}

}  // namespace

bool is_base_file(const cap::manifest_view &m, uint32_t file) {
  return file < m.nfiles && m.files[file].identity == static_cast<uint32_t>(cap::file_identity::capsule) &&
         cap::base_file_name(cap::string_at(m, m.files[file].path));
}

uint64_t data_layout::of_run(const cap::run &r) const {
  if (r.source == static_cast<uint32_t>(cap::run_source::mem)) return r.offset;
  return r.file < base.size() && base[r.file] != kNone ? base[r.file] + r.offset : kNone;
}

uint64_t data_layout::of_chunk(const cap::chunk &c) const {
  if (c.file == cap::kNoFile) return c.offset;
  return c.file < base.size() && base[c.file] != kNone ? base[c.file] + c.offset : kNone;
}

data_layout layout_of(const cap::manifest_view &m) {
  data_layout l;
  l.base.assign(m.nfiles, data_layout::kNone);
  // How far each file's data goes: runs and chunks both say.
  std::vector<uint64_t> len(m.nfiles, 0);
  uint64_t mem_len = m.hdr->mem_size;
  for (uint64_t i = 0; i < m.nruns; ++i) {
    const cap::run &r = m.runs[i];
    if (r.source == static_cast<uint32_t>(cap::run_source::base) && r.file < m.nfiles)
      len[r.file] = std::max(len[r.file], r.offset + r.npages * m.hdr->page_size);
  }
  for (uint64_t i = 0; i < m.nchunks; ++i) {
    const cap::chunk &c = m.chunks[i];
    if (c.file == cap::kNoFile)
      mem_len = std::max(mem_len, c.offset + c.length);
    else if (c.file < m.nfiles)
      len[c.file] = std::max(len[c.file], c.offset + c.length);
  }
  auto up = [](uint64_t v) { return (v + cap::kChunkBytes - 1) / cap::kChunkBytes * cap::kChunkBytes; };
  uint64_t at = up(mem_len);
  for (uint64_t f = 0; f < m.nfiles; ++f) {
    if (!is_base_file(m, static_cast<uint32_t>(f)) || !len[f]) continue;
    if (at > (uint64_t{1} << 62) || len[f] > (uint64_t{1} << 62))
      throw failure("the manifest's runs lie beyond any file's size");
    l.base[f] = at;
    at = up(at + len[f]);
  }
  l.end = at;
  return l;
}

void data_files::close_all() {
  if (mem >= 0) close(mem);
  mem = -1;
  for (int &fd : base)
    if (fd >= 0) close(fd), fd = -1;
}

data_files open_data(int dirfd, const cap::manifest_view &m, const data_layout &l) {
  data_files d;
  d.base.assign(m.nfiles, -1);
  d.mem = openat(dirfd, cap::kMem, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (d.mem < 0) throw failure(strf("cannot read mem: %s", strerror(errno)));
  try {
    for (uint64_t f = 0; f < m.nfiles; ++f)
      if (l.base[f] != data_layout::kNone) d.base[f] = open_linked(dirfd, m, static_cast<uint32_t>(f));
  } catch (...) {
    d.close_all();
    throw;
  }
  return d;
}

verified verify_mem(int dirfd, const cap::manifest_view &m, const std::vector<uint8_t> *only) {
  const data_layout l = layout_of(m);
  std::vector<std::pair<uint64_t, const cap::chunk *>> order;
  for (uint64_t i = 0; i < m.nchunks; ++i) {
    const uint64_t at = l.of_chunk(m.chunks[i]);
    if (at == data_layout::kNone) continue;
    const uint64_t k = at / cap::kChunkBytes;
    if (!only || (k < only->size() && (*only)[k])) order.push_back({at, &m.chunks[i]});
  }
  std::stable_sort(order.begin(), order.end(), [](auto &a, auto &b) { return a.first < b.first; });
  data_files d = open_data(dirfd, m, l);
  posix_fadvise(d.mem, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::vector<char> buf(kVerifyBuffer);
  verified v;
  try {
    for (const auto &[at, c] : order) {
      const std::string what = c->file == cap::kNoFile ? "mem" : cap::string_at(m, m.files[c->file].path);
      check_crc(*c, crc_of(d.fd(c->file), c->offset, c->length, buf, what), what);
      ++v.chunks;
      v.bytes += c->length;
      if (c->file != cap::kNoFile) ++v.base_chunks, v.base_bytes += c->length;
    }
  } catch (...) {
    d.close_all();
    throw;
  }
  d.close_all();
  return v;
}

int open_linked(int dirfd, const cap::manifest_view &m, uint32_t file) {
  if (file >= m.nfiles || m.files[file].identity != static_cast<uint32_t>(cap::file_identity::capsule))
    throw failure(strf("the manifest refers to file %u as one of the capsule's, which it is not", file));
  const char *name = cap::string_at(m, m.files[file].path);
  if (!cap::pmem_file_name(name) && !cap::base_file_name(name))
    throw failure(strf("the manifest names \"%s\" as a file of the capsule", name));
  const int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw failure(strf("cannot open the capsule's %s: %s", name, strerror(errno)));
  struct stat st, dir;
  if (fstat(fd, &st) != 0 || fstat(dirfd, &dir) != 0 || !S_ISREG(st.st_mode) || st.st_uid != dir.st_uid) {
    close(fd);
    throw failure(strf("the capsule's %s is not a regular file of the capsule's owner", name));
  }
  // A shared lock on the whole file, as the library holds the files it
  // maps frozen ranges of: the process that made the file (a fork
  // ancestor) never writes or reuses it while anything maps it through
  // this description, even once no capsule links it any more.
  struct flock fl = {};
  fl.l_type = F_RDLCK;
  fl.l_whence = SEEK_SET;
  fcntl(fd, F_OFD_SETLK, &fl);
  return fd;
}

verified verify_linked(int dirfd, const cap::manifest_view &m) {
  std::vector<int> fds(m.nfiles, -1);
  std::vector<char> buf(kVerifyBuffer);
  verified v;
  try {
    for (uint64_t i = 0; i < m.nchunks; ++i) {
      const cap::chunk &c = m.chunks[i];
      if (c.file == cap::kNoFile || c.file >= m.nfiles ||
          m.files[c.file].identity != static_cast<uint32_t>(cap::file_identity::capsule) || is_base_file(m, c.file))
        continue;
      if (fds[c.file] < 0) fds[c.file] = open_linked(dirfd, m, c.file);
      const std::string what = cap::string_at(m, m.files[c.file].path);
      check_crc(c, crc_of(fds[c.file], c.offset, c.length, buf, what), what);
      ++v.linked_chunks;
      v.linked_bytes += c.length;
    }
  } catch (...) {
    for (int fd : fds)
      if (fd >= 0) close(fd);
    throw;
  }
  for (int fd : fds)
    if (fd >= 0) close(fd);
  v.chunks = v.linked_chunks;
  v.bytes = v.linked_bytes;
  return v;
}

std::vector<durable_capsule> durable_capsules(const std::string &dir, const std::string &prefix, int pid) {
  std::vector<durable_capsule> out;
  DIR *d = opendir(dir.c_str());
  if (!d) return out;
  while (dirent *e = readdir(d)) {
    const std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0 || !cap::capsule_entry(name.c_str(), nullptr)) continue;
    int fd = -1;
    if (cap::open_checked(dirfd(d), name.c_str(), &fd) != 0) continue;
    fd_holder holder(fd);
    manifest_file m;
    cap::manifest_view v;
    if (read_manifest(fd, &m) != 0 || cap::manifest_parse(m.data(), m.len, &v) != cap::parse_error::ok ||
        v.status->state != static_cast<uint32_t>(cap::status::durable) || (pid && v.hdr->pid != pid))
      continue;
    out.push_back({dir + "/" + name, v.hdr->created_ns, v.hdr->cmdline_crc});
  }
  closedir(d);
  std::stable_sort(out.begin(), out.end(), [](const durable_capsule &x, const durable_capsule &y) {
    return x.created != y.created ? x.created > y.created : x.path > y.path;
  });
  return out;
}

std::string newest_capsule(const std::string &dir, const std::string &prefix, uint64_t *created) {
  const std::vector<durable_capsule> all = durable_capsules(dir, prefix, 0);
  *created = all.empty() ? 0 : all[0].created;
  return all.empty() ? "" : all[0].path;
}

}  // namespace mmtier::cli
