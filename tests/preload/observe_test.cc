// What a program can observe of mmtier (docs/ARCHITECTURE.md, "What a
// program sees of mmtier"): a preloaded process that places no PMem memory
// holds exactly the descriptors its parent passed it, runs no thread of
// mmtier's, maps no file of mmtier's and publishes no statistics; one that
// grows past the thresholds gets mmtier's descriptors only at 64 and above,
// all close-on-exec.  Each case runs in a re-executed child (this binary
// with OBSERVE_MIB=<MiB to allocate>).
#include "preload_api.h"

#include <dirent.h>
#include <sys/stat.h>

#include <set>
#include <sstream>
#include <string>

using namespace preload_test;

namespace {

constexpr int kPassed = 20;  // a descriptor the parent passes on

// The descriptors of this process, but the one reading the list.
std::set<int> my_fds() {
  std::set<int> fds;
  DIR *d = opendir("/proc/self/fd");
  if (!d) return fds;
  const int self = dirfd(d);
  while (dirent *e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const int fd = atoi(e->d_name);
    if (fd != self) fds.insert(fd);
  }
  closedir(d);
  return fds;
}

int count_threads() {
  int n = 0;
  DIR *d = opendir("/proc/self/task");
  while (dirent *e = d ? readdir(d) : nullptr) n += e->d_name[0] != '.';
  if (d) closedir(d);
  return n;
}

// Mappings of files mmtier makes: its PMem file (unnamed: "(deleted)" or
// "/memfd"), its statistics page.
int mmtier_file_mappings() {
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) return -1;
  int n = 0;
  char line[4096];
  while (fgets(line, sizeof line, f))
    if (strstr(line, ".stats") || strstr(line, "(deleted)")) ++n;
  fclose(f);
  return n;
}

// Runs the case before gtest sees the arguments; prints what it sees.
__attribute__((constructor(65535))) void maybe_child() {
  const char *mib = getenv("OBSERVE_MIB");
  if (!mib) return;
  const size_t bytes = strtoull(mib, nullptr, 10) << 20;
  char *p = static_cast<char *>(malloc(bytes ? bytes : 1));
  escape(p);
  if (bytes) memset(p, 1, bytes);
  std::ostringstream out;
  out << "fds:";
  for (int fd : my_fds()) {
    const int flags = fcntl(fd, F_GETFD);
    out << " " << fd << ((flags & FD_CLOEXEC) ? "c" : "");
  }
  out << "\nthreads: " << count_threads() << "\nfile-mappings: " << mmtier_file_mappings()
      << "\nstats-file: " << (access(("/dev/shm/mmtier-" + std::to_string(geteuid()) + "/" +
                                      std::to_string(getpid()) + ".stats").c_str(),
                                     F_OK) == 0)
      << "\n";
  fputs(out.str().c_str(), stdout);
  fflush(stdout);
  _exit(0);
}

// The child's report as key -> value.
std::string field(const std::string &out, const std::string &key) {
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key + ":", 0) == 0) return line.substr(key.size() + 1);
  return "?";
}

// The descriptors a child started now inherits: 0-2 and this process's
// own that are not close-on-exec (the test runner's, and kPassed).
std::string passed_fds() {
  std::string s = " 0 1 2";
  for (int fd : my_fds())
    if (fd > 2 && !(fcntl(fd, F_GETFD) & FD_CLOEXEC)) s += " " + std::to_string(fd);
  return s;
}

exec_result run_child(size_t mib, std::string *passed) {
  // Passed on: not close-on-exec.
  const int fd = open("/dev/null", O_RDONLY);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(dup2(fd, kPassed), kPassed);
  close(fd);
  *passed = passed_fds();
  exec_result r = run_self({}, {"OBSERVE_MIB=" + std::to_string(mib)});
  close(kPassed);
  return r;
}

}  // namespace

class Observe : public Preloaded {};

TEST_F(Observe, ASmallProcessHoldsExactlyTheDescriptorsItWasPassed) {
  std::string passed;
  exec_result r = run_child(1, &passed);
  ASSERT_TRUE(exited_with(r.status, 0)) << describe(r);
  EXPECT_NE(passed.find(" 20"), std::string::npos);
  EXPECT_EQ(field(r.out, "fds"), passed) << describe(r);
  EXPECT_EQ(field(r.out, "threads"), " 1") << "no thread of mmtier's: " << describe(r);
  EXPECT_EQ(field(r.out, "file-mappings"), " 0") << "no PMem file, no statistics page: " << describe(r);
  EXPECT_EQ(field(r.out, "stats-file"), " 0") << describe(r);
  EXPECT_EQ(r.err, "") << describe(r);
}

TEST_F(Observe, ALargerProcessGetsMmtiersDescriptorsOutOfTheWay) {
  std::string passed;
  exec_result r = run_child(96, &passed);
  ASSERT_TRUE(exited_with(r.status, 0)) << describe(r);
  // The passed ones, then mmtier's own: at 64 and above, close-on-exec (the
  // PMem file, the userfaultfd, pagemap; the statistics page keeps none).
  std::istringstream fds(field(r.out, "fds")), want(passed);
  std::set<std::string> seen, inherited;
  for (std::string f; fds >> f;) seen.insert(f);
  for (std::string f; want >> f;) inherited.insert(f);
  for (const std::string &f : inherited) EXPECT_TRUE(seen.count(f)) << f << ": " << describe(r);
  for (const std::string &f : seen) {
    if (inherited.count(f)) continue;
    const int fd = atoi(f.c_str());
    EXPECT_GE(fd, 64) << describe(r);
    EXPECT_EQ(f.back(), 'c') << "close-on-exec: " << describe(r);
  }
  EXPECT_EQ(field(r.out, "stats-file"), " 1") << "it publishes: " << describe(r);
}
