// Helpers shared by the subcommands: formatting of sizes and counts,
// parsing of durations, decimals and pids, clocks, text sanitising and
// option parsing.
#include "cli.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace mmtier::cli {

std::string strf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char small[256];
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) {
    va_end(ap2);
    return {};
  }
  if (static_cast<size_t>(n) < sizeof small) {
    va_end(ap2);
    return std::string(small, static_cast<size_t>(n));
  }
  std::string out(static_cast<size_t>(n) + 1, '\0');
  vsnprintf(out.data(), out.size(), fmt, ap2);
  va_end(ap2);
  out.resize(static_cast<size_t>(n));
  return out;
}

namespace {

// bytes (at least 1024) as v x 1024^(u+1), 1 <= v < 1024 (u: 0 for Ki).
int scale_bytes(uint64_t bytes, double *v) {
  *v = static_cast<double>(bytes);
  int u = -1;
  while (*v >= 1024.0 && u < 5) {
    *v /= 1024.0;
    ++u;
  }
  return u;
}

}  // namespace

std::string human_bytes(uint64_t bytes) {
  static const char *const kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return strf("%llu B", static_cast<unsigned long long>(bytes));
  double v;
  const char *unit = kUnits[scale_bytes(bytes, &v)];
  if (v >= 100.0) return strf("%.0f %s", v, unit);
  if (v >= 10.0) return strf("%.1f %s", v, unit);
  return strf("%.2f %s", v, unit);
}

std::string short_bytes(uint64_t bytes) {
  static const char kUnits[] = {'K', 'M', 'G', 'T', 'P', 'E'};
  if (bytes < 1024) return strf("%llu", static_cast<unsigned long long>(bytes));
  double v;
  const char unit = kUnits[scale_bytes(bytes, &v)];
  if (v >= 99.95) return strf("%.0f%c", v, unit);
  if (v >= 9.995) return strf("%.1f%c", v, unit);
  return strf("%.2f%c", v, unit);
}

std::string short_count(double v) {
  if (v < 0) v = 0;
  if (v < 1000.0) return v >= 100.0 ? strf("%.0f", v) : strf("%.1f", v);
  if (v < 1e6) return strf("%.1fk", v / 1e3);
  if (v < 1e9) return strf("%.1fM", v / 1e6);
  return strf("%.1fG", v / 1e9);
}

bool parse_decimal(const std::string &text, double *out) {
  if (text.empty()) return false;
  for (char c : text)
    if (!((c >= '0' && c <= '9') || c == '.')) return false;
  if (text.find('.') != text.rfind('.') || text == ".") return false;
  errno = 0;
  char *end = nullptr;
  double v = strtod(text.c_str(), &end);
  if (errno != 0 || end == nullptr || *end != '\0' || !std::isfinite(v) || v < 0) return false;
  *out = v;
  return true;
}

bool parse_duration_seconds(const std::string &text, double *seconds) {
  size_t i = 0;
  while (i < text.size() && ((text[i] >= '0' && text[i] <= '9') || text[i] == '.')) ++i;
  double v;
  if (!parse_decimal(text.substr(0, i), &v)) return false;
  std::string unit = text.substr(i);
  double scale;
  if (unit.empty() || unit == "s") scale = 1.0;
  else if (unit == "ms") scale = 1e-3;
  else if (unit == "us") scale = 1e-6;
  else if (unit == "m" || unit == "min") scale = 60.0;
  else return false;
  *seconds = v * scale;
  return true;
}

bool parse_pid(const std::string &text, int *pid) {
  if (text.empty() || text.size() > 10) return false;
  long long v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  if (v <= 0 || v > INT_MAX) return false;
  *pid = static_cast<int>(v);
  return true;
}

namespace {
uint64_t clock_ns(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}
}  // namespace

uint64_t monotonic_ns() { return clock_ns(CLOCK_MONOTONIC); }
uint64_t realtime_ns() { return clock_ns(CLOCK_REALTIME); }

std::string sanitize_text(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out += (c < 0x20 && c != '\t') || c == 0x7f ? '?' : static_cast<char>(c);
      ++i;
      continue;
    }
    // Length and minimum code point of a UTF-8 sequence starting with c.
    size_t len = 0;
    uint32_t cp = 0, min = 0;
    if ((c & 0xe0) == 0xc0) len = 2, cp = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0) len = 3, cp = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0) len = 4, cp = c & 0x07, min = 0x10000;
    bool ok = len != 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) ok = false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (ok && (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))) ok = false;
    if (!ok) {
      out += '?';
      ++i;
      continue;
    }
    out.append(s.substr(i, len));
    i += len;
  }
  return out;
}

bool take_option(const std::string &command, const args &a, size_t *i, std::string_view name,
                 std::string *value) {
  const std::string &arg = a[*i];
  if (arg == name) {
    if (*i + 1 >= a.size()) throw usage_error(command, strf("option %s needs a value", arg.c_str()));
    *value = a[++*i];
    return true;
  }
  if (arg.size() > name.size() && arg.compare(0, name.size(), name) == 0 && arg[name.size()] == '=') {
    *value = arg.substr(name.size() + 1);
    return true;
  }
  return false;
}

void write_file_atomically(const std::string &path, const std::string &text) {
  std::string tmp = path + ".XXXXXX";
  int fd = mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0) throw failure(strf("cannot write %s: %s", path.c_str(), strerror(errno)));
  int e = fchmod(fd, 0644) == 0 ? 0 : errno;
  for (size_t off = 0; e == 0 && off < text.size();) {
    ssize_t n = write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) e = errno;
    else off += static_cast<size_t>(n);
  }
  if (close(fd) != 0 && e == 0) e = errno;
  if (e == 0 && rename(tmp.c_str(), path.c_str()) != 0) e = errno;
  if (e != 0) {
    unlink(tmp.c_str());
    throw failure(strf("cannot write %s: %s", path.c_str(), strerror(e)));
  }
}

std::string read_text(const char *path) {
  // read(2), not a stream: a /proc file of a process that ends while it is
  // read fails with ESRCH, which a file stream throws as an exception.
  std::string s;
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return s;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    s.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

long own_pid(int host) {
  const std::string status = read_text(strf("/proc/%d/status", host).c_str());
  const size_t at = status.find("\nNSpid:");
  if (at == std::string::npos) return 0;
  const size_t end = status.find('\n', at + 7);
  const std::string line = status.substr(at + 7, end == std::string::npos ? std::string::npos : end - at - 7);
  const size_t last = line.find_last_not_of(" \t");
  if (last == std::string::npos) return 0;
  const size_t start = line.find_last_of(" \t", last);
  return strtol(line.c_str() + (start == std::string::npos ? 0 : start + 1), nullptr, 10);
}

std::string self_dir() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  buf[n] = '\0';
  const char *slash = strrchr(buf, '/');
  if (slash == nullptr) return ".";
  return slash == buf ? std::string("/") : std::string(buf, static_cast<size_t>(slash - buf));
}

int parent_pid(int pid) {
  const std::string stat = read_text(strf("/proc/%d/stat", pid).c_str());
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  int ppid = 0;
  char state = 0;
  return sscanf(stat.c_str() + paren + 1, " %c %d", &state, &ppid) == 2 ? ppid : 0;
}

bool asked_for_help(const args &a, const char *topic) {
  for (const std::string &s : a)
    if (s == "-h" || s == "--help") {
      fputs(std::string(help_text(topic)).c_str(), stdout);
      return true;
    }
  return false;
}

// MMTIER_SNAPSHOT_DIR as process pid started with it, or "".
std::string snapshot_dir_of(int pid) {
  FILE *f = fopen(strf("/proc/%d/environ", pid).c_str(), "re");
  if (!f) return "";
  std::string env;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, f)) > 0;) env.append(buf, n);
  fclose(f);
  const std::string key = "MMTIER_SNAPSHOT_DIR=";
  for (size_t at = 0; at < env.size(); at = env.find('\0', at) + 1) {
    if (env.compare(at, key.size(), key) == 0) return env.substr(at + key.size(), env.find('\0', at) - at - key.size());
    if (env.find('\0', at) == std::string::npos) break;
  }
  return "";
}

// The `mmtier run --autosave` among pid's nearest ancestors (its parent,
// or a restore's supervisor's parent), or 0.
int autosave_supervisor(int pid) {
  for (int up = parent_pid(pid), depth = 0; up > 1 && depth < 4; up = parent_pid(up), ++depth) {
    std::string cmdline = read_text(strf("/proc/%d/cmdline", up).c_str());
    for (char &c : cmdline)
      if (c == '\0') c = ' ';
    if (read_text(strf("/proc/%d/comm", up).c_str()) == "mmtier" && cmdline.find(" run ") != std::string::npos &&
        cmdline.find(" --autosave") != std::string::npos)
      return up;
  }
  return 0;
}


}  // namespace mmtier::cli
