// Logging for code that runs inside malloc: a small printf-subset formatter
// writing into caller-provided fixed buffers, and one-line messages to fd 2
// with a single write(2).  Nothing here allocates, takes a lock or calls the
// libc printf family, so it is safe before initialisation, inside the
// allocator and in fork handlers.
#include "support/log.h"

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>

#include <unistd.h>

namespace mmtier::detail {
namespace {

constinit std::atomic<int> g_level{static_cast<int>(log_level::warn)};

// One line on stderr, including prefix and newline.
constexpr size_t kLineMax = 1024;

// Appends into a fixed buffer, remembering whether anything was cut off.
// Keeps one byte free for the terminating NUL.
struct sink {
  char *buf;
  size_t cap;
  size_t len = 0;
  bool truncated = false;

  void put(char c) {
    if (len + 1 < cap)
      buf[len++] = c;
    else
      truncated = true;
  }
  void put_n(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) put(s[i]);
  }
  void pad(size_t n, char c) {
    for (size_t i = 0; i < n; i++) put(c);
  }
  // Emits s (n bytes) in a field of `width`, left-justified when `left`.
  // Zero padding goes after a sign or "0x" prefix of length `prefix`.
  void field(const char *s, size_t n, size_t width, bool left, bool zero, size_t prefix) {
    size_t fill = width > n ? width - n : 0;
    if (left) {
      put_n(s, n);
      pad(fill, ' ');
    } else if (zero) {
      put_n(s, prefix);
      pad(fill, '0');
      put_n(s + prefix, n - prefix);
    } else {
      pad(fill, ' ');
      put_n(s, n);
    }
  }
  void terminate() {
    if (cap > 0) buf[len] = '\0';
  }
};

// Digits of v in `base` (10 or 16), written right to left ending at `end`;
// returns the first digit.
char *utoa(char *end, unsigned long long v, unsigned base) {
  static constexpr char kDigits[] = "0123456789abcdef";
  char *p = end;
  do {
    *--p = kDigits[v % base];
    v /= base;
  } while (v != 0);
  return p;
}

size_t cstrlen(const char *s) {
  size_t n = 0;
  while (s[n] != '\0') n++;
  return n;
}

enum class length_mod { none, l, ll, z };

// Flags, width and length modifier of a conversion; f points after the
// '%' and is left on the conversion character.
struct conversion {
  bool left = false, zero = false;
  size_t width = 0;
  length_mod mod = length_mod::none;
};

conversion parse_conversion(const char *&f) {
  conversion c;
  for (;; f++) {
    if (*f == '-')
      c.left = true;
    else if (*f == '0')
      c.zero = true;
    else
      break;
  }
  while (*f >= '0' && *f <= '9') {
    if (c.width < kLineMax * 4) c.width = c.width * 10 + static_cast<size_t>(*f - '0');
    f++;
  }
  if (*f == 'l') {
    f++;
    c.mod = length_mod::l;
    if (*f == 'l') {
      f++;
      c.mod = length_mod::ll;
    }
  } else if (*f == 'z') {
    f++;
    c.mod = length_mod::z;
  }
  return c;
}

void format_into(sink &out, const char *fmt, va_list ap) {
  for (const char *f = fmt; *f != '\0'; f++) {
    if (*f != '%') {
      out.put(*f);
      continue;
    }
    const char *spec = f;  // to echo an unknown conversion verbatim
    f++;
    const conversion cv = parse_conversion(f);
    const bool left = cv.left, zero = cv.zero;
    const size_t width = cv.width;
    const length_mod mod = cv.mod;

    char num[2 + 3 * sizeof(unsigned long long) + 1];
    char *const end = num + sizeof num;
    switch (*f) {
      case 's': {
        const char *s = va_arg(ap, const char *);
        if (s == nullptr) s = "(null)";
        out.field(s, cstrlen(s), width, left, false, 0);
        break;
      }
      case 'c': {
        char c = static_cast<char>(va_arg(ap, int));
        out.field(&c, 1, width, left, false, 0);
        break;
      }
      case 'd':
      case 'i': {
        long long v;
        switch (mod) {
          case length_mod::l: v = va_arg(ap, long); break;
          case length_mod::ll: v = va_arg(ap, long long); break;
          case length_mod::z: v = va_arg(ap, ssize_t); break;
          default: v = va_arg(ap, int); break;
        }
        // Negate in unsigned arithmetic so LLONG_MIN works.
        unsigned long long mag = v < 0 ? 0ULL - static_cast<unsigned long long>(v)
                                       : static_cast<unsigned long long>(v);
        char *p = utoa(end, mag, 10);
        if (v < 0) *--p = '-';
        out.field(p, static_cast<size_t>(end - p), width, left, zero, v < 0 ? 1 : 0);
        break;
      }
      case 'u':
      case 'x': {
        unsigned long long v;
        switch (mod) {
          case length_mod::l: v = va_arg(ap, unsigned long); break;
          case length_mod::ll: v = va_arg(ap, unsigned long long); break;
          case length_mod::z: v = va_arg(ap, size_t); break;
          default: v = va_arg(ap, unsigned); break;
        }
        char *p = utoa(end, v, *f == 'x' ? 16 : 10);
        out.field(p, static_cast<size_t>(end - p), width, left, zero, 0);
        break;
      }
      case 'p': {
        auto v = reinterpret_cast<uintptr_t>(va_arg(ap, void *));
        char *p = utoa(end, v, 16);
        *--p = 'x';
        *--p = '0';
        out.field(p, static_cast<size_t>(end - p), width, left, zero, 2);
        break;
      }
      case '%':
        out.put('%');
        break;
      case '\0':
        // Lone '%' at the end: print what we saw and stop.
        out.put_n(spec, static_cast<size_t>(f - spec));
        f--;
        break;
      default:
        // Unsupported conversion: show it rather than guess at its argument.
        out.put_n(spec, static_cast<size_t>(f - spec + 1));
        break;
    }
  }
}

// Writes the whole buffer to fd 2, retrying on EINTR (and on the rare short
// write, which pipes never do for lines this small).
void write_stderr(const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = ::write(STDERR_FILENO, buf, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // nowhere left to report to
    }
    buf += n;
    len -= static_cast<size_t>(n);
  }
}

// Builds "<prefix><message>\n" in one buffer (ending in "..." when the
// message was cut) and writes it with one write(2).  errno is preserved so
// logging never disturbs the caller's error reporting.
void emit_line(const char *prefix, const char *fmt, va_list ap) {
  int saved_errno = errno;
  char line[kLineMax];
  sink out{line, sizeof line};
  out.put_n(prefix, cstrlen(prefix));
  // The message may use every byte but the last, which becomes '\n' (the
  // sink reserves it for the NUL).
  format_into(out, fmt, ap);
  if (out.truncated) {
    for (size_t i = 1; i <= 3; i++) line[out.len - i] = '.';
  }
  line[out.len++] = '\n';
  write_stderr(line, out.len);
  errno = saved_errno;
}

const char *level_word(log_level level) {
  switch (level) {
    case log_level::error: return "error";
    case log_level::warn: return "warn";
    case log_level::info: return "info";
    case log_level::debug: return "debug";
  }
  return "log";
}

}  // namespace

void log_set_level(log_level level) { g_level.store(static_cast<int>(level), std::memory_order_relaxed); }

log_level log_get_level() { return static_cast<log_level>(g_level.load(std::memory_order_relaxed)); }

size_t vformat(char *buf, size_t cap, const char *fmt, va_list ap) {
  sink out{buf, cap};
  va_list copy;
  va_copy(copy, ap);
  format_into(out, fmt, copy);
  va_end(copy);
  out.terminate();
  return out.len;
}

size_t format(char *buf, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  size_t n = vformat(buf, cap, fmt, ap);
  va_end(ap);
  return n;
}

void log_msg(log_level level, const char *fmt, ...) {
  char prefix[24];
  format(prefix, sizeof prefix, "mmtier: %s: ", level_word(level));
  va_list ap;
  va_start(ap, fmt);
  emit_line(prefix, fmt, ap);
  va_end(ap);
}

void fatal_config(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  emit_line("mmtier: ", fmt, ap);
  va_end(ap);
  _exit(1);
}

}  // namespace mmtier::detail
