// Allocation during process teardown under LD_PRELOAD=libmmtier.so: from a
// static object's destructor, atexit handlers registered before and inside
// main, thread_local destructors (of an exiting thread and of the main
// thread at exit), and an ELF destructor whose priority (100) is lower than
// the library's own (101), so it runs later; plus buffered stdout written
// without a flush must reach the pipe at exit.  Each scenario runs in a
// fresh process (this binary re-executed with --scenario=...).
#include "preload_api.h"

#include <sys/mman.h>

#include <cstdio>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace preload_test;

class Teardown : public Preloaded {};

bool g_scenario = false;  // handlers below only act in the scenario process

// Writes "MARK <name> ok" (or FAIL with the reason) with write(2), so that
// the markers do not depend on stdio still working.
void mark(const char *name, const char *failure) {
  char line[256];
  int n = failure ? snprintf(line, sizeof line, "MARK %s FAIL %s\n", name, failure)
                  : snprintf(line, sizeof line, "MARK %s ok\n", name);
  if (n > 0) (void)!write(1, line, static_cast<size_t>(n));
}

// Allocates, uses and frees memory in every common way.
void exercise(const char *name) {
  if (!g_scenario) return;
  for (size_t size : {size_t{32}, size_t{5000}, size_t{300000}, size_t{3} << 20}) {
    auto *p = static_cast<unsigned char *>(malloc(size));
    if (!p) return mark(name, "malloc returned NULL");
    memset(p, 0x4b, size);
    if (byte_mismatch(p, size, 0x4b) != size) return mark(name, "malloc'd memory lost a write");
    auto *q = static_cast<unsigned char *>(realloc(p, size * 2 + 1));
    if (!q) return mark(name, "realloc returned NULL");
    if (byte_mismatch(q, size, 0x4b) != size) return mark(name, "realloc lost contents");
    free(q);
  }
  void *c = calloc(1000, 10);
  if (!c) return mark(name, "calloc returned NULL");
  if (zero_mismatch(c, 10000) != 10000) return mark(name, "calloc memory not zero");
  free(c);
  void *a = aligned_alloc(4096, 8192);
  if (!a) return mark(name, "aligned_alloc returned NULL");
  memset(a, 1, 8192);
  free(a);
  auto *n = new (std::nothrow) std::vector<int>(1000, 7);
  if (!n) return mark(name, "operator new returned NULL");
  delete n;
  std::string s(5000, 'z');
  s += "tail";
  void *m = mmap(nullptr, kMiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return mark(name, "mmap failed");
  memset(m, 2, kMiB);
  if (munmap(m, kMiB) != 0) return mark(name, "munmap failed");
  mark(name, nullptr);
}

struct static_object {
  ~static_object() { exercise("static-destructor"); }
};
static_object g_static_object;

void early_atexit() { exercise("early-atexit"); }
void late_atexit() { exercise("late-atexit"); }

__attribute__((constructor)) void register_early_atexit() { atexit(early_atexit); }

struct thread_object {
  const char *name;
  explicit thread_object(const char *n) : name(n) {}
  ~thread_object() { exercise(name); }
};

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wprio-ctor-dtor"
// Lower priority than the library's destructor(101): runs after it.
__attribute__((destructor(100))) void late_elf_destructor() { exercise("elf-destructor-100"); }
#pragma GCC diagnostic pop

__attribute__((destructor)) void default_elf_destructor() { exercise("elf-destructor"); }

int teardown_scenario() {
  g_scenario = true;
  atexit(late_atexit);
  std::thread t([] {
    thread_local thread_object obj("thread-local-destructor");
    (void)obj.name;
    exercise("thread-body");
  });
  t.join();
  thread_local thread_object main_obj("main-thread-local-destructor");
  (void)main_obj.name;
  exercise("main");
  return 0;
}

const char *const kMarkers[] = {"thread-body",        "thread-local-destructor", "main",
                                "main-thread-local-destructor", "late-atexit", "static-destructor",
                                "early-atexit",       "elf-destructor",          "elf-destructor-100"};

void check_markers(const exec_result &r) {
  EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0)
      << describe_status(r.status) << "\nstdout:\n" << r.out << "\nstderr:\n" << r.err;
  for (const char *m : kMarkers) {
    const std::string ok = std::string("MARK ") + m + " ok\n";
    EXPECT_NE(r.out.find(ok), std::string::npos)
        << "no \"" << m << " ok\" marker: allocation from that handler failed or it did not run\nstdout:\n"
        << r.out << "\nstderr:\n" << r.err;
  }
  EXPECT_EQ(r.out.find("FAIL"), std::string::npos) << r.out;
}

TEST_F(Teardown, AllocationWorksInEveryExitHandler) {
  check_markers(run_self({"--scenario=teardown"}));
}

TEST_F(Teardown, AllocationWorksInExitHandlersWithReportAtExit) {
  // The library's destructor writes its report; handlers after it still work.
  exec_result r = run_self({"--scenario=teardown"}, {"MMTIER_REPORT=stderr"});
  check_markers(r);
  EXPECT_NE(r.err.find("mmtier"), std::string::npos) << "no exit report on stderr:\n" << r.err;
}

constexpr const char kUnflushed[] = "buffered text without newline or flush: 12345";

int stdout_scenario() {
  printf("%s", kUnflushed);
  return 0;  // returning from main must flush it
}

int stdout_large_scenario() {
  // More than one stdio buffer, the last part unflushed.
  for (int i = 0; i < 5000; ++i) printf("line %05d of buffered output\n", i);
  printf("end-without-newline");
  return 0;
}

TEST_F(Teardown, BufferedStdoutIsNotLostAtExit) {
  exec_result r = run_self({"--scenario=stdout"});
  EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) << describe_status(r.status) << r.err;
  EXPECT_EQ(r.out, kUnflushed) << "stderr:\n" << r.err;
}

TEST_F(Teardown, LargeBufferedStdoutIsNotLostAtExit) {
  exec_result r = run_self({"--scenario=stdout-large"});
  EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) << describe_status(r.status) << r.err;
  std::string want;
  char line[64];
  for (int i = 0; i < 5000; ++i) {
    snprintf(line, sizeof line, "line %05d of buffered output\n", i);
    want += line;
  }
  want += "end-without-newline";
  EXPECT_EQ(r.out.size(), want.size());
  EXPECT_TRUE(r.out == want) << "output differs from what was printed (" << r.out.size() << " of "
                             << want.size() << " bytes)";
}

}  // namespace

int main(int argc, char **argv) {
  if (argc > 1) {
    const std::string a = argv[1];
    if (a == "--scenario=teardown") return teardown_scenario();
    if (a == "--scenario=stdout") return stdout_scenario();
    if (a == "--scenario=stdout-large") return stdout_large_scenario();
  }
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
