// Platform layer: /proc/self/maps (see proc_maps.h).
#include "platform/proc_maps.h"

#include "platform/sys.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace mmtier::detail::sys {
namespace {

uint64_t parse_hex(const char *&p, const char *end) {
  uint64_t v = 0;
  for (; p < end; ++p) {
    int d;
    if (*p >= '0' && *p <= '9') d = *p - '0';
    else if (*p >= 'a' && *p <= 'f') d = *p - 'a' + 10;
    else break;
    v = v * 16 + static_cast<uint64_t>(d);
  }
  return v;
}

uint64_t parse_dec(const char *&p, const char *end) {
  uint64_t v = 0;
  for (; p < end && *p >= '0' && *p <= '9'; ++p) v = v * 10 + static_cast<uint64_t>(*p - '0');
  return v;
}

void skip(const char *&p, const char *end) {
  if (p < end) ++p;
}

// "lo-hi perm offset maj:min inode [path]"
bool parse_line(const char *p, const char *end, maps_entry *e) {
  e->lo = parse_hex(p, end);
  skip(p, end);
  e->hi = parse_hex(p, end);
  skip(p, end);
  if (end - p < 5) return false;
  e->prot = (p[0] == 'r' ? PROT_READ : 0) | (p[1] == 'w' ? PROT_WRITE : 0) | (p[2] == 'x' ? PROT_EXEC : 0);
  e->shared = p[3] == 's';
  p += 5;
  e->offset = parse_hex(p, end);
  skip(p, end);
  e->dev_major = static_cast<uint32_t>(parse_hex(p, end));
  skip(p, end);
  e->dev_minor = static_cast<uint32_t>(parse_hex(p, end));
  skip(p, end);
  e->inode = parse_dec(p, end);
  while (p < end && *p == ' ') ++p;
  e->name = p;
  e->name_len = static_cast<uint32_t>(end - p);
  return e->hi > e->lo;
}

}  // namespace

long maps_reader::open() {
  close();
  err_ = 0;
  have_ = pos_ = 0;
  long fd = openat(AT_FDCWD, "/proc/thread-self/maps", O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return err_ = fd;
  fd_ = static_cast<int>(fd);
  return 0;
}

void maps_reader::close() {
  if (fd_ >= 0) sys::close(fd_);
  fd_ = -1;
}

bool maps_reader::fill() {
  if (pos_ > 0) {
    memmove(buf_, buf_ + pos_, have_ - pos_);
    have_ -= pos_;
    pos_ = 0;
  }
  for (;;) {
    long n = read(fd_, buf_ + have_, sizeof buf_ - have_);
    if (n == -EINTR) continue;
    if (n < 0) err_ = n;
    if (n <= 0) return false;
    have_ += static_cast<size_t>(n);
    return true;
  }
}

bool maps_reader::next(maps_entry *out) {
  if (fd_ < 0) return false;
  for (;;) {
    char *line = buf_ + pos_;
    char *nl = static_cast<char *>(memchr(line, '\n', have_ - pos_));
    if (nl) {
      pos_ = static_cast<size_t>(nl + 1 - buf_);
      if (parse_line(line, nl, out)) return true;
      continue;
    }
    if (pos_ == 0 && have_ == sizeof buf_) {
      // A line longer than the buffer: its fixed fields are at its start;
      // the rest (the path) is skipped up to the end of the line.
      bool ok = parse_line(buf_, buf_ + have_, out);
      if (ok) out->name_len = 0;  // cut: the buffer is refilled below
      for (;;) {
        have_ = pos_ = 0;
        if (!fill()) return ok;
        nl = static_cast<char *>(memchr(buf_, '\n', have_));
        if (nl) {
          pos_ = static_cast<size_t>(nl + 1 - buf_);
          break;
        }
      }
      if (ok) return true;
      continue;
    }
    if (!fill()) return false;
  }
}

int query_prot(const void *addr) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  maps_reader r;
  if (r.open() < 0) return -1;
  maps_entry e;
  while (r.next(&e)) {
    if (a < e.lo) break;  // ascending: passed it
    if (a < e.hi) return e.prot;
  }
  return -1;
}

long count_mappings() {
  long fd = openat(AT_FDCWD, "/proc/thread-self/maps", O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return fd;
  char buf[16384];
  long lines = 0, n;
  while ((n = read(static_cast<int>(fd), buf, sizeof buf)) > 0 || n == -EINTR)
    if (n > 0) lines += std::count(buf, buf + n, '\n');
  close(static_cast<int>(fd));
  return n < 0 ? n : lines;
}

}  // namespace mmtier::detail::sys
