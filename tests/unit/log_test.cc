// Unit tests for lib/support/log: the fixed-buffer formatter, the one-line
// stderr messages and fatal_config's exit.
#include "support/log.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>

namespace mmtier::detail {
namespace {

// Formats into a 256-byte buffer; a macro so the compiler still checks the
// format string against the arguments.
#define FMT(...)                                  \
  ([&] {                                          \
    char buf_[256];                               \
    size_t n_ = format(buf_, sizeof buf_, __VA_ARGS__); \
    EXPECT_EQ(n_, std::strlen(buf_));             \
    return std::string(buf_, n_);                 \
  }())

// Runs fn with fd 2 redirected to a pipe and returns what it wrote.
std::string capture_stderr(const std::function<void()> &fn) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  int saved = dup(STDERR_FILENO);
  EXPECT_GE(saved, 0);
  EXPECT_EQ(dup2(fds[1], STDERR_FILENO), STDERR_FILENO);
  close(fds[1]);
  fn();
  dup2(saved, STDERR_FILENO);
  close(saved);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  return out;
}

TEST(LogFormat, Strings) {
  EXPECT_EQ(FMT("plain text"), "plain text");
  EXPECT_EQ(FMT("%s", "abc"), "abc");
  const char *volatile null_str = nullptr;  // hidden from -Wformat-overflow
  EXPECT_EQ(FMT("[%s]", null_str), "[(null)]");
  EXPECT_EQ(FMT("%s=%s", "a", ""), "a=");
  EXPECT_EQ(FMT("%c%c%c", 'x', 'y', 'z'), "xyz");
  EXPECT_EQ(FMT("100%%"), "100%");
}

TEST(LogFormat, SignedIntegers) {
  EXPECT_EQ(FMT("%d", 0), "0");
  EXPECT_EQ(FMT("%d", 42), "42");
  EXPECT_EQ(FMT("%i", -42), "-42");
  EXPECT_EQ(FMT("%d", INT_MIN), "-2147483648");
  EXPECT_EQ(FMT("%d", INT_MAX), "2147483647");
  EXPECT_EQ(FMT("%ld", LONG_MIN), "-9223372036854775808");
  EXPECT_EQ(FMT("%lld", LLONG_MIN), "-9223372036854775808");
  EXPECT_EQ(FMT("%lli", LLONG_MAX), "9223372036854775807");
  EXPECT_EQ(FMT("%zd", static_cast<ssize_t>(-7)), "-7");
}

TEST(LogFormat, UnsignedAndHex) {
  EXPECT_EQ(FMT("%u", 0u), "0");
  EXPECT_EQ(FMT("%u", UINT_MAX), "4294967295");
  EXPECT_EQ(FMT("%lu", ULONG_MAX), "18446744073709551615");
  EXPECT_EQ(FMT("%llu", ULLONG_MAX), "18446744073709551615");
  EXPECT_EQ(FMT("%zu", SIZE_MAX), "18446744073709551615");
  EXPECT_EQ(FMT("%x", 0u), "0");
  EXPECT_EQ(FMT("%x", 0xdeadbeefu), "deadbeef");
  EXPECT_EQ(FMT("%lx", 0x123456789abcdefUL), "123456789abcdef");
  EXPECT_EQ(FMT("%llx", ULLONG_MAX), "ffffffffffffffff");
  EXPECT_EQ(FMT("%zx", static_cast<size_t>(4096)), "1000");
}

TEST(LogFormat, Pointers) {
  EXPECT_EQ(FMT("%p", reinterpret_cast<void *>(0x7f00dead1000)), "0x7f00dead1000");
  EXPECT_EQ(FMT("%p", static_cast<void *>(nullptr)), "0x0");
}

TEST(LogFormat, WidthAndFlags) {
  EXPECT_EQ(FMT("[%5d]", 42), "[   42]");
  EXPECT_EQ(FMT("[%-5d]", 42), "[42   ]");
  EXPECT_EQ(FMT("[%5d]", -42), "[  -42]");
  EXPECT_EQ(FMT("[%05d]", -42), "[-0042]");
  EXPECT_EQ(FMT("[%08x]", 0xbeefu), "[0000beef]");
  EXPECT_EQ(FMT("[%6s]", "ab"), "[    ab]");
  EXPECT_EQ(FMT("[%-6s]", "ab"), "[ab    ]");
  EXPECT_EQ(FMT("[%2s]", "abcdef"), "[abcdef]");  // width never truncates
  EXPECT_EQ(FMT("[%3c]", 'x'), "[  x]");
  EXPECT_EQ(FMT("[%-3c]", 'x'), "[x  ]");
  EXPECT_EQ(FMT("[%10zu]", static_cast<size_t>(123)), "[       123]");
  EXPECT_EQ(FMT("[%-8p]", reinterpret_cast<void *>(0x10)), "[0x10    ]");
  EXPECT_EQ(FMT("[%18p]", reinterpret_cast<void *>(0x10)), "[              0x10]");
}

TEST(LogFormat, MixedArguments) {
  EXPECT_EQ(FMT("%s:%d:%zu:%c:%x", "f", -1, static_cast<size_t>(2), 'q', 255u), "f:-1:2:q:ff");
}

TEST(LogFormat, TruncatesAtCapacityAndTerminates) {
  char buf[8];
  std::memset(buf, 'X', sizeof buf);
  EXPECT_EQ(format(buf, 5, "hello world"), 4u);
  EXPECT_STREQ(buf, "hell");
  EXPECT_EQ(buf[5], 'X');  // nothing written past cap

  std::memset(buf, 'X', sizeof buf);
  EXPECT_EQ(format(buf, sizeof buf, "%d", 123456789), 7u);
  EXPECT_STREQ(buf, "1234567");

  std::memset(buf, 'X', sizeof buf);
  EXPECT_EQ(format(buf, sizeof buf, "[%20s]", "x"), 7u);
  EXPECT_STREQ(buf, "[      ");

  std::memset(buf, 'X', sizeof buf);
  EXPECT_EQ(format(buf, 1, "abc"), 0u);
  EXPECT_EQ(buf[0], '\0');
  EXPECT_EQ(buf[1], 'X');

  std::memset(buf, 'X', sizeof buf);
  EXPECT_EQ(format(buf, 0, "abc"), 0u);
  EXPECT_EQ(buf[0], 'X');  // cap 0: buffer untouched
}

TEST(LogFormat, ExactFitIsNotTruncated) {
  char buf[4];
  EXPECT_EQ(format(buf, sizeof buf, "abc"), 3u);
  EXPECT_STREQ(buf, "abc");
  EXPECT_EQ(format(buf, sizeof buf, "%s", ""), 0u);
  EXPECT_STREQ(buf, "");
}

size_t call_vformat(char *buf, size_t cap, const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  size_t n = vformat(buf, cap, f, ap);
  va_end(ap);
  return n;
}

TEST(LogFormat, Vformat) {
  char buf[64];
  EXPECT_EQ(call_vformat(buf, sizeof buf, "%s-%d-%zu", "v", -3, static_cast<size_t>(9)), 6u);
  EXPECT_STREQ(buf, "v--3-9");
}

TEST(LogLevel, SetAndGet) {
  log_level old = log_get_level();
  for (log_level l : {log_level::error, log_level::warn, log_level::info, log_level::debug}) {
    log_set_level(l);
    EXPECT_EQ(log_get_level(), l);
  }
  log_set_level(old);
}

TEST(LogMsg, WritesOneLineWithPrefix) {
  std::string out = capture_stderr([] { log_msg(log_level::warn, "hello %s %d", "world", 7); });
  EXPECT_EQ(out, "mmtier: warn: hello world 7\n");
}

TEST(LogMsg, LevelWords) {
  EXPECT_EQ(capture_stderr([] { log_msg(log_level::error, "e"); }), "mmtier: error: e\n");
  EXPECT_EQ(capture_stderr([] { log_msg(log_level::warn, "w"); }), "mmtier: warn: w\n");
  EXPECT_EQ(capture_stderr([] { log_msg(log_level::info, "i"); }), "mmtier: info: i\n");
  EXPECT_EQ(capture_stderr([] { log_msg(log_level::debug, "d"); }), "mmtier: debug: d\n");
}

TEST(LogMsg, LongMessageTruncatedToOneLine) {
  std::string long_text(5000, 'a');
  std::string out =
      capture_stderr([&] { log_msg(log_level::error, "start %s end", long_text.c_str()); });
  ASSERT_EQ(out.size(), 1024u);
  EXPECT_EQ(out.rfind("mmtier: error: start aaa", 0), 0u);
  EXPECT_EQ(out.substr(out.size() - 4), "...\n");
  EXPECT_EQ(out.find('\n'), out.size() - 1);
}

TEST(LogMsg, MessageThatJustFitsIsNotTruncated) {
  // "mmtier: info: " is 14 bytes; 1024 - 14 - 1 ('\n') = 1009 bytes of message.
  std::string text(1009, 'b');
  std::string out = capture_stderr([&] { log_msg(log_level::info, "%s", text.c_str()); });
  EXPECT_EQ(out, "mmtier: info: " + text + "\n");
}

TEST(LogMsg, PreservesErrno) {
  errno = ENOSPC;
  capture_stderr([] { log_msg(log_level::warn, "x"); });
  EXPECT_EQ(errno, ENOSPC);
}

TEST(LogMsg, MacrosFilterByLevel) {
  log_level old = log_get_level();
  log_set_level(log_level::warn);
  std::string out = capture_stderr([] {
    MMTIER_ERROR("shown %d", 1);
    MMTIER_WARN("shown %d", 2);
    MMTIER_INFO("hidden %d", 3);
    MMTIER_DEBUG("hidden %d", 4);
  });
  EXPECT_EQ(out, "mmtier: error: shown 1\nmmtier: warn: shown 2\n");
  log_set_level(old);
}

TEST(LogDeathTest, DefaultLevelIsWarn) {
  // A fresh process, so no other test has changed the level yet.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(_exit(log_get_level() == log_level::warn ? 0 : 2), ::testing::ExitedWithCode(0), "");
}

TEST(LogDeathTest, FatalConfigPrintsLineAndExits1) {
  EXPECT_EXIT(fatal_config("invalid %s=\"%s\": expected %d", "MMTIER_X", "bad", 1),
              ::testing::ExitedWithCode(1), "^mmtier: invalid MMTIER_X=\"bad\": expected 1\n$");
}

}  // namespace
}  // namespace mmtier::detail
