// Files the library creates for the PMem tier, on ext4 (/var/tmp) and tmpfs
// (/dev/shm): while a child uses the tier, its file is open in
// MMTIER_PMEM_PATH, has no name there (deleted), mode 0600 and no links, and
// the directory lists no entries; after the child is killed, exits, or
// aborts, the directory is still empty.  A symlinked MMTIER_PMEM_PATH is
// followed for the directory, and symlinks inside it are never followed or
// touched.
#include "preload_api.h"

#include <dirent.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <climits>
#include <string>
#include <vector>

namespace {

using namespace preload_test;

constexpr const char *kHoldMiB = "64";

// A tier_probe child in "hold" mode: it has allocated and touched its memory
// once `ready` is filled in, and stays alive until stdin is closed.
struct held_child {
  pid_t pid = -1;
  int stdin_w = -1;
  int stdout_r = -1;
  std::string ready;

  ~held_child() {
    if (stdin_w >= 0) close(stdin_w);
    if (stdout_r >= 0) close(stdout_r);
    if (pid > 0) {
      kill(pid, SIGKILL);
      wait_status(pid);
    }
  }
  // Waits for the child and returns its wait status.
  int wait() {
    int st = wait_status(pid);
    pid = -1;
    return st;
  }
  // Closes the child's stdin, so that it exits or aborts as it was asked
  // to, and returns its wait status.
  int end_input_and_wait() {
    close(stdin_w);
    stdin_w = -1;
    return wait();
  }
};

// Starts the child and reads its "ready" line.  `how` is exit or abort.
bool start_hold(held_child &c, const std::string &pmem_path, const char *how) {
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) return false;
  c.pid = start_program(MMTIER_TIER_PROBE, argv_for(MMTIER_TIER_PROBE, {"hold", kHoldMiB, how}),
                        clean_preload_environment({"MMTIER_PMEM_PATH=" + pmem_path}), {in[0], out[1], -1});
  close(in[0]);
  close(out[1]);
  c.stdin_w = in[1];
  c.stdout_r = out[0];
  if (c.pid < 0) return false;
  char ch;
  for (;;) {
    ssize_t n = read(c.stdout_r, &ch, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    if (ch == '\n') break;
    c.ready += ch;
  }
  return c.ready.rfind("ready", 0) == 0;
}

std::vector<std::string> list_dir(const std::string &dir) {
  std::vector<std::string> names;
  DIR *d = opendir(dir.c_str());
  if (!d) return {"<cannot open " + dir + ": " + strerror(errno) + ">"};
  while (struct dirent *e = readdir(d)) {
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) names.emplace_back(e->d_name);
  }
  closedir(d);
  return names;
}

std::string join(const std::vector<std::string> &v) {
  std::string s;
  for (auto &x : v) s += (s.empty() ? "" : ", ") + x;
  return "[" + s + "]";
}

struct open_file {
  std::string fd_path;  // /proc/PID/fd/N
  std::string target;   // what the link says
};

// Open files of `pid` whose path is in directory `dir` (a real path).
std::vector<open_file> files_in(pid_t pid, const std::string &dir) {
  std::vector<open_file> found;
  const std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR *d = opendir(fd_dir.c_str());
  if (!d) return found;
  while (struct dirent *e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string p = fd_dir + "/" + e->d_name;
    char buf[PATH_MAX];
    ssize_t n = readlink(p.c_str(), buf, sizeof buf - 1);
    if (n <= 0) continue;
    std::string target(buf, static_cast<size_t>(n));
    if (target.rfind(dir + "/", 0) == 0) found.push_back({p, target});
  }
  closedir(d);
  return found;
}

std::string real_path(const std::string &p) {
  char buf[PATH_MAX];
  return realpath(p.c_str(), buf) ? std::string(buf) : p;
}

// Removes what a test created (plain entries only) and the directory.
struct temp_dir {
  std::string path;
  explicit temp_dir(const std::string &parent) {
    std::string t = parent + "/mmtier-files-XXXXXX";
    if (mkdtemp(t.data())) path = t;
  }
  ~temp_dir() {
    if (path.empty()) return;
    for (auto &n : list_dir(path)) unlink((path + "/" + n).c_str());
    rmdir(path.c_str());
  }
};

// Checks the running child's PMem file(s) in `dir`: nameless, 0600, holds
// data; and the directory has no entries.
void check_live_file(const held_child &c, const std::string &dir) {
  std::vector<open_file> files = files_in(c.pid, dir);
  ASSERT_FALSE(files.empty()) << "the child (" << c.ready << ") has no file open in " << dir;
  size_t allocated = 0;
  for (const open_file &f : files) {
    SCOPED_TRACE(f.fd_path + " -> " + f.target);
    EXPECT_NE(f.target.find("(deleted)"), std::string::npos) << "the PMem file has a name";
    struct stat st;
    ASSERT_EQ(stat(f.fd_path.c_str(), &st), 0) << strerror(errno);
    EXPECT_TRUE(S_ISREG(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0600u) << std::oct << (st.st_mode & 07777);
    EXPECT_EQ(st.st_nlink, 0u);
    EXPECT_EQ(st.st_uid, geteuid());
    allocated += static_cast<size_t>(st.st_blocks) * 512;
  }
  // 64 MiB touched at the default 1:4 ratio puts about 51 MiB on PMem.
  EXPECT_GE(allocated, size_t{32} << 20) << "PMem file(s) hold only " << allocated << " bytes";
  EXPECT_TRUE(list_dir(dir).empty()) << join(list_dir(dir));
}

enum class ending { killed, exited, aborted };

struct files_case {
  const char *parent;
  ending end;
};

void PrintTo(const files_case &c, std::ostream *os) {
  *os << c.parent << ", "
      << (c.end == ending::killed ? "SIGKILL" : c.end == ending::exited ? "exit" : "abort");
}

class PmemFile : public ::testing::TestWithParam<files_case> {};

TEST_P(PmemFile, NamelessPrivateAndGoneAfterExit) {
  const files_case &fc = GetParam();
  struct stat pst;
  if (stat(fc.parent, &pst) != 0) GTEST_SKIP() << fc.parent << " does not exist";
  temp_dir dir(fc.parent);
  ASSERT_FALSE(dir.path.empty()) << strerror(errno);
  const std::string real = real_path(dir.path);

  held_child c;
  ASSERT_TRUE(start_hold(c, dir.path, fc.end == ending::aborted ? "abort" : "exit"))
      << "child did not get ready: '" << c.ready << "'";
  check_live_file(c, real);

  int st;
  switch (fc.end) {
    case ending::killed:
      ASSERT_EQ(kill(c.pid, SIGKILL), 0);
      st = c.wait();
      EXPECT_TRUE(killed_by(st, SIGKILL)) << st;
      break;
    case ending::exited:
      st = c.end_input_and_wait();
      EXPECT_TRUE(exited_with(st, 0)) << st;
      break;
    case ending::aborted:
      st = c.end_input_and_wait();
      EXPECT_TRUE(killed_by(st, SIGABRT)) << st;
      break;
  }
  EXPECT_TRUE(list_dir(dir.path).empty()) << "left behind: " << join(list_dir(dir.path));
}

INSTANTIATE_TEST_SUITE_P(
    Fs, PmemFile,
    ::testing::Values(files_case{"/var/tmp", ending::killed}, files_case{"/var/tmp", ending::exited},
                      files_case{"/var/tmp", ending::aborted}, files_case{"/dev/shm", ending::killed},
                      files_case{"/dev/shm", ending::exited}, files_case{"/dev/shm", ending::aborted}),
    [](const ::testing::TestParamInfo<files_case> &i) {
      std::string fs = strcmp(i.param.parent, "/dev/shm") == 0 ? "tmpfs" : "ext4";
      const char *end = i.param.end == ending::killed   ? "Killed"
                        : i.param.end == ending::exited ? "Exited"
                                                        : "Aborted";
      return fs + "_" + end;
    });

TEST(PmemFile, SymlinkedDirectoryFollowedButSymlinksInsideUntouched) {
  temp_dir dir("/var/tmp");
  ASSERT_FALSE(dir.path.empty()) << strerror(errno);
  temp_dir outside("/var/tmp");
  ASSERT_FALSE(outside.path.empty());
  const std::string link = dir.path + "-link";
  ASSERT_EQ(symlink(dir.path.c_str(), link.c_str()), 0) << strerror(errno);
  struct unlink_link {
    std::string p;
    ~unlink_link() { unlink(p.c_str()); }
  } remove_link{link};

  // Dangling symlinks with names a tier file might get, pointing into the
  // directory itself and outside it.
  struct planted {
    std::string name, target;
  };
  std::vector<planted> links;
  int k = 0;
  for (const char *n : {"#1", ".mmtier-0", "mmtier", "pmem", "mmtier.pmem"}) {
    links.push_back({n, dir.path + "/target" + std::to_string(k++)});
    links.push_back({std::string(n) + "-out", outside.path + "/escaped"});
  }
  for (const planted &p : links)
    ASSERT_EQ(symlink(p.target.c_str(), (dir.path + "/" + p.name).c_str()), 0) << p.name;

  {
    held_child c;
    ASSERT_TRUE(start_hold(c, link, "exit")) << "child did not get ready: '" << c.ready << "'";
    const std::string real = real_path(dir.path);
    std::vector<open_file> files = files_in(c.pid, real);
    ASSERT_FALSE(files.empty()) << "no PMem file open in " << real << " (via " << link << ")";
    for (const open_file &f : files) {
      struct stat st;
      ASSERT_EQ(stat(f.fd_path.c_str(), &st), 0);
      EXPECT_EQ(st.st_nlink, 0u) << f.target;
      EXPECT_EQ(st.st_mode & 07777, 0600u) << f.target;
    }
    int st = c.end_input_and_wait();
    EXPECT_TRUE(exited_with(st, 0)) << st;
  }

  std::vector<std::string> names = list_dir(dir.path);
  EXPECT_EQ(names.size(), links.size()) << join(names);
  for (const planted &p : links) {
    SCOPED_TRACE(p.name);
    const std::string path = dir.path + "/" + p.name;
    struct stat st;
    ASSERT_EQ(lstat(path.c_str(), &st), 0) << "symlink removed";
    EXPECT_TRUE(S_ISLNK(st.st_mode));
    char buf[PATH_MAX];
    ssize_t n = readlink(path.c_str(), buf, sizeof buf - 1);
    ASSERT_GT(n, 0);
    EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), p.target) << "symlink changed";
    EXPECT_NE(lstat(p.target.c_str(), &st), 0) << "created through the symlink: " << p.target;
  }
  EXPECT_TRUE(list_dir(outside.path).empty()) << join(list_dir(outside.path));
}

}  // namespace

// A PMem directory on a disk file system without DAX is said once, when the
// tier makes its file; on tmpfs nothing is said.
TEST(PmemFile, ADiskDirectoryWithoutDaxIsSaidOnce) {
  temp_dir disk("/var/tmp");
  ASSERT_FALSE(disk.path.empty()) << strerror(errno);
  struct statfs sf;
  ASSERT_EQ(statfs(disk.path.c_str(), &sf), 0);
  if (sf.f_type == TMPFS_MAGIC) GTEST_SKIP() << "/var/tmp is on tmpfs here";
  exec_result r = run_tier_probe({"workload", "48"}, {"MMTIER_PMEM_PATH=" + disk.path});
  ASSERT_TRUE(exited_with(r.status, 0)) << describe(r);
  const std::string warning = "mmtier: warn: PMem directory " + disk.path + " is on ";
  EXPECT_EQ(r.err.rfind(warning, 0), 0u) << describe(r);
  EXPECT_NE(r.err.find("without DAX: PMem pages are written back to its disk"), std::string::npos) << describe(r);
  EXPECT_EQ(count_lines(r.err), 1u) << "said once: " << describe(r);
  temp_dir mem("/dev/shm");
  exec_result m = run_tier_probe({"workload", "48"}, {"MMTIER_PMEM_PATH=" + mem.path});
  ASSERT_TRUE(exited_with(m.status, 0)) << describe(m);
  EXPECT_EQ(m.err, "") << describe(m);
}
