// Logging and formatting into fixed buffers: nothing here allocates, so it is
// safe inside the allocator, before initialisation and in fork handlers.
#pragma once

#include <cstdarg>
#include <cstddef>

namespace mmtier::detail {

enum class log_level : int { error = 0, warn = 1, info = 2, debug = 3 };

void log_set_level(log_level level);
log_level log_get_level();

// printf subset: %s %c %d %i %u %x %p %% with l, ll, z length modifiers and
// an optional field width / '-' flag.  Always NUL-terminates when cap > 0;
// returns the length written (truncated to cap - 1).
size_t format(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
size_t vformat(char *buf, size_t cap, const char *fmt, va_list ap);

// One line "mmtier: <level>: <message>\n" to stderr with a single write(2).
void log_msg(log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Writes the whole line "mmtier: <message>\n" to stderr and exits with status
// 1 (configuration errors, which must stop the program before main()).
[[noreturn]] void fatal_config(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace mmtier::detail

#define MMTIER_LOG(level, ...)                                                       \
  do {                                                                               \
    if (static_cast<int>(level) <= static_cast<int>(::mmtier::detail::log_get_level())) \
      ::mmtier::detail::log_msg(level, __VA_ARGS__);                                 \
  } while (0)
#define MMTIER_ERROR(...) MMTIER_LOG(::mmtier::detail::log_level::error, __VA_ARGS__)
#define MMTIER_WARN(...) MMTIER_LOG(::mmtier::detail::log_level::warn, __VA_ARGS__)
#define MMTIER_INFO(...) MMTIER_LOG(::mmtier::detail::log_level::info, __VA_ARGS__)
#define MMTIER_DEBUG(...) MMTIER_LOG(::mmtier::detail::log_level::debug, __VA_ARGS__)
