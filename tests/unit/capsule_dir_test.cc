// Capsule directories (lib/snapshot/capsule_dir): the default directory of
// each kind of user, capsule names, creating a capsule under a temporary
// name and publishing or abandoning it with nothing left behind, the
// owner, mode and symlink checks of open_checked (a foreign owner by
// chowning, as root, and dropping to another euid in a child), and delete,
// which removes a capsule and nothing that is not one.
#include "snapshot/capsule_dir.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

namespace mmtier::capsule {
namespace {

namespace fs = std::filesystem;

constexpr uid_t kOtherUid = 65534;

// A fresh directory (mode 0700) with a descriptor on it.
struct scratch {
  std::string path;
  int fd = -1;
  scratch() {
    std::string tmpl = (fs::temp_directory_path() / "capsule-dir-test.XXXXXX").string();
    EXPECT_NE(mkdtemp(tmpl.data()), nullptr);
    path = tmpl;
    fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    EXPECT_GE(fd, 0);
  }
  ~scratch() {
    close(fd);
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string at(const std::string &name) const { return path + "/" + name; }
  std::vector<std::string> entries(const std::string &sub = "") const {
    std::vector<std::string> out;
    for (const auto &e : fs::directory_iterator(sub.empty() ? path : at(sub))) out.push_back(e.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }
};

void write_file(const std::string &path, const std::string &text, mode_t mode = 0600) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  close(fd);
}

mode_t mode_of(const std::string &path) {
  struct stat st;
  EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

bool fd_open(int fd) { return fcntl(fd, F_GETFD) != -1; }

// A published capsule "name" in s, with a manifest starting with the magic.
void make_capsule(const scratch &s, const char *name) {
  pending p;
  ASSERT_EQ(begin(s.fd, name, &p), 0);
  ASSERT_EQ(pwrite(p.manifest_fd, kMagic, sizeof kMagic, 0), static_cast<ssize_t>(sizeof kMagic));
  ASSERT_EQ(publish(s.fd, &p, false), 0);
  release(&p);
}

TEST(CapsuleDir, DefaultDir) {
  char out[256];
  EXPECT_EQ(default_dir(0, "/x/state", "/home/u", out, sizeof out), 24);
  EXPECT_STREQ(out, "/var/lib/mmtier/capsules");
  EXPECT_EQ(default_dir(1000, "/x/state", "/home/u", out, sizeof out), static_cast<int>(strlen("/x/state/mmtier/capsules")));
  EXPECT_STREQ(out, "/x/state/mmtier/capsules");
  // XDG_STATE_HOME relative or empty is not used (the XDG rule).
  for (const char *xdg : {"x/state", "", static_cast<const char *>(nullptr)}) {
    EXPECT_GT(default_dir(1000, xdg, "/home/u", out, sizeof out), 0);
    EXPECT_STREQ(out, "/home/u/.local/state/mmtier/capsules") << (xdg ? xdg : "null");
  }
  EXPECT_EQ(default_dir(1000, nullptr, nullptr, out, sizeof out), -ENOENT);
  EXPECT_EQ(default_dir(1000, "rel", "home/u", out, sizeof out), -ENOENT);
  EXPECT_EQ(default_dir(1000, nullptr, "", out, sizeof out), -ENOENT);
  // The path and its NUL must fit.
  const char *want = "/home/u/.local/state/mmtier/capsules";
  EXPECT_EQ(default_dir(1000, nullptr, "/home/u", out, strlen(want) + 1), static_cast<int>(strlen(want)));
  EXPECT_EQ(default_dir(1000, nullptr, "/home/u", out, strlen(want)), -ENAMETOOLONG);
  EXPECT_EQ(default_dir(0, nullptr, nullptr, out, 8), -ENAMETOOLONG);
}

TEST(CapsuleDir, Names) {
  EXPECT_TRUE(valid_name("a"));
  EXPECT_TRUE(valid_name("redis-1.2_X"));
  EXPECT_TRUE(valid_name(std::string(64, 'n').c_str()));
  EXPECT_FALSE(valid_name(std::string(65, 'n').c_str()));
  for (const char *bad : {"", ".hidden", "a/b", "a b", "a\nb", "caf\xc3\xa9", "..", "a*"}) EXPECT_FALSE(valid_name(bad)) << bad;
  EXPECT_FALSE(valid_name(nullptr));

  char name[kNameMax + 1];
  EXPECT_TRUE(capsule_entry("redis-1.mmtcap", name));
  EXPECT_STREQ(name, "redis-1");
  EXPECT_TRUE(capsule_entry("a.mmtcap.mmtcap", name));
  EXPECT_STREQ(name, "a.mmtcap");
  for (const char *bad : {".mmtcap", "x.mmtca", "x", ".x.mmtcap", "a b.mmtcap"}) EXPECT_FALSE(capsule_entry(bad, name)) << bad;
  EXPECT_FALSE(capsule_entry((std::string(65, 'n') + ".mmtcap").c_str(), name));

  long pid = 0;
  EXPECT_TRUE(tmp_entry(".redis-1.mmtcap.tmp-4242-0123456789abcdef", name, &pid));
  EXPECT_STREQ(name, "redis-1");
  EXPECT_EQ(pid, 4242);
  for (const char *bad : {"redis.mmtcap.tmp-1-ab", ".redis.mmtcap.tmp--ab", ".redis.mmtcap.tmp-1-", ".redis.mmtcap.tmp-1-xy",
                          ".redis.mmtcap.tmp1-ab", "..mmtcap.tmp-1-ab", ".redis.mmtcap", ".redis.mmtcap.tmp-1-ab/",
                          ".redis.mmtcap.tmp-12345678901-ab"})
    EXPECT_FALSE(tmp_entry(bad, name, &pid)) << bad;

  // An earlier capsule's mem, linked into an incremental one: mem- and
  // the 32 hex digits of that capsule's id.
  const uint8_t id[16] = {0x00, 0x01, 0x22, 0xab, 0xcd, 0xef, 0x10, 0xff, 9, 8, 7, 6, 5, 4, 3, 0xa0};
  char base[40];
  base_file_name_of(id, base);
  EXPECT_STREQ(base, "mem-000122abcdef10ff09080706050403a0");
  EXPECT_TRUE(base_file_name(base));
  for (const char *bad : {"mem", "mem-", "mem-000122abcdef10ff09080706050403a", "mem-000122abcdef10ff09080706050403a00",
                          "mem-000122ABCDEF10ff09080706050403a0", "mem-000122abcdef10ff09080706050403g0",
                          "Mem-000122abcdef10ff09080706050403a0", "pmem-1.tier"})
    EXPECT_FALSE(base_file_name(bad)) << bad;
}

TEST(CapsuleDir, MakeDirs) {
  scratch s;
  const std::string deep = s.at("a/b//c/");
  ASSERT_EQ(make_dirs(deep.c_str()), 0);
  for (const char *d : {"a", "a/b", "a/b/c"}) EXPECT_EQ(mode_of(s.at(d)) & 077, 0u) << d;
  EXPECT_EQ(mode_of(s.at("a/b/c")), 0700u);
  EXPECT_EQ(make_dirs(deep.c_str()), 0);  // all there
  chmod(s.at("a").c_str(), 0755);
  EXPECT_EQ(make_dirs(s.at("a/d").c_str()), 0);
  EXPECT_EQ(mode_of(s.at("a")), 0755u);  // existing ones are left as they are
  ASSERT_EQ(symlink(s.at("a").c_str(), s.at("link").c_str()), 0);
  EXPECT_EQ(make_dirs(s.at("link/e").c_str()), 0);
  EXPECT_TRUE(fs::is_directory(s.at("a/e")));
  write_file(s.at("file"), "x");
  EXPECT_EQ(make_dirs(s.at("file/f").c_str()), -ENOTDIR);
  EXPECT_EQ(make_dirs(s.at("file").c_str()), -ENOTDIR);
  EXPECT_EQ(make_dirs(""), -ENOENT);
  EXPECT_EQ(make_dirs(("/" + std::string(5000, 'x')).c_str()), -ENAMETOOLONG);
}

TEST(CapsuleDir, BeginThenPublish) {
  scratch s;
  const mode_t old = umask(0277);  // 0700 and 0600 whatever the umask takes away
  pending p;
  const int r = begin(s.fd, "job-1", &p);
  umask(old);
  ASSERT_EQ(r, 0);
  char name[kNameMax + 1];
  long pid = 0;
  ASSERT_TRUE(tmp_entry(p.tmp_name, name, &pid)) << p.tmp_name;
  EXPECT_STREQ(name, "job-1");
  EXPECT_EQ(pid, getpid());
  EXPECT_EQ(s.entries(), std::vector<std::string>{p.tmp_name});
  EXPECT_EQ(s.entries(p.tmp_name), (std::vector<std::string>{"manifest", "mem"}));
  EXPECT_EQ(mode_of(s.at(p.tmp_name)), 0700u);
  EXPECT_EQ(mode_of(s.at(p.tmp_name) + "/manifest"), 0600u);
  EXPECT_EQ(mode_of(s.at(p.tmp_name) + "/mem"), 0600u);
  EXPECT_EQ(fs::file_size(s.at(p.tmp_name) + "/manifest"), 0u);
  ASSERT_EQ(write(p.mem_fd, "data", 4), 4);

  ASSERT_EQ(publish(s.fd, &p, true), 0);
  EXPECT_STREQ(p.tmp_name, "");
  EXPECT_EQ(s.entries(), std::vector<std::string>{"job-1.mmtcap"});
  // The descriptors stay usable: the writer marks the capsule durable after.
  ASSERT_EQ(pwrite(p.manifest_fd, "M", 1, 0), 1);
  EXPECT_EQ(fs::file_size(s.at("job-1.mmtcap/manifest")), 1u);
  EXPECT_EQ(fs::file_size(s.at("job-1.mmtcap/mem")), 4u);
  const int fds[] = {p.dirfd, p.manifest_fd, p.mem_fd};
  // abort after publish touches nothing but the descriptors.
  abort(s.fd, &p);
  for (int fd : fds) EXPECT_FALSE(fd_open(fd));
  EXPECT_EQ(s.entries("job-1.mmtcap"), (std::vector<std::string>{"manifest", "mem"}));
}

TEST(CapsuleDir, BeginRefusesTakenNamesAndBadNames) {
  scratch s;
  make_capsule(s, "taken");
  pending p;
  EXPECT_EQ(begin(s.fd, "taken", &p), -EEXIST);
  EXPECT_EQ(p.dirfd, -1);
  EXPECT_EQ(p.manifest_fd, -1);
  EXPECT_EQ(begin(s.fd, ".hidden", &p), -EINVAL);
  EXPECT_EQ(begin(s.fd, "a/b", &p), -EINVAL);
  EXPECT_EQ(s.entries(), std::vector<std::string>{"taken.mmtcap"});
  // A symlink by that name counts as taken too.
  ASSERT_EQ(symlink("/nonexistent", s.at("link.mmtcap").c_str()), 0);
  EXPECT_EQ(begin(s.fd, "link", &p), -EEXIST);
  EXPECT_EQ(s.entries(), (std::vector<std::string>{"link.mmtcap", "taken.mmtcap"}));
}

TEST(CapsuleDir, PublishNeverReplaces) {
  scratch s;
  pending p;
  ASSERT_EQ(begin(s.fd, "race", &p), 0);
  const std::string tmp = p.tmp_name;
  // Another capsule of that name appears while this one is written.
  ASSERT_EQ(mkdir(s.at("race.mmtcap").c_str(), 0700), 0);
  write_file(s.at("race.mmtcap/manifest"), "theirs");
  EXPECT_EQ(publish(s.fd, &p, false), -EEXIST);
  EXPECT_EQ(tmp, p.tmp_name);
  abort(s.fd, &p);
  EXPECT_EQ(s.entries(), std::vector<std::string>{"race.mmtcap"});
  EXPECT_EQ(s.entries("race.mmtcap"), std::vector<std::string>{"manifest"});
  // An empty directory of that name is taken as well.
  ASSERT_EQ(begin(s.fd, "empty", &p), 0);
  ASSERT_EQ(mkdir(s.at("empty.mmtcap").c_str(), 0700), 0);
  EXPECT_EQ(publish(s.fd, &p, false), -EEXIST);
  abort(s.fd, &p);
  EXPECT_EQ(s.entries(), (std::vector<std::string>{"empty.mmtcap", "race.mmtcap"}));
}

TEST(CapsuleDir, AbortLeavesNothing) {
  scratch s;
  pending p;
  ASSERT_EQ(begin(s.fd, "gone", &p), 0);
  const std::string dir = s.at(p.tmp_name);
  // Everything a writer may have made by then.
  ASSERT_EQ(write(p.mem_fd, "x", 1), 1);
  ASSERT_EQ(mkdir((dir + "/files").c_str(), 0700), 0);
  for (int i = 0; i < 300; ++i) write_file(dir + "/files/" + std::to_string(i), "f");
  write_file(dir + "/pmem-1.tier", "p");
  const int fds[] = {p.dirfd, p.manifest_fd, p.mem_fd};
  abort(s.fd, &p);
  EXPECT_TRUE(s.entries().empty());
  for (int fd : fds) EXPECT_FALSE(fd_open(fd));
  EXPECT_EQ(p.dirfd, -1);
  abort(s.fd, &p);  // twice: nothing left to do
  pending never;
  abort(s.fd, &never);  // on a pending begin did not fill
  EXPECT_TRUE(s.entries().empty());
}

TEST(CapsuleDir, OpenChecked) {
  scratch s;
  make_capsule(s, "ok");
  int fd = -1;
  const char *why = "unset";
  ASSERT_EQ(open_checked(s.fd, "ok.mmtcap", &fd, &why), 0);
  EXPECT_EQ(why, nullptr);
  EXPECT_TRUE(fd_open(fd));
  EXPECT_NE(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
  close(fd);

  make_capsule(s, "shared");
  for (mode_t m : {0750, 0705, 0710, 0701, 0720}) {
    ASSERT_EQ(chmod(s.at("shared.mmtcap").c_str(), m), 0);
    EXPECT_EQ(open_checked(s.fd, "shared.mmtcap", &fd, &why), kErrOpen) << std::oct << m;
    EXPECT_STREQ(why, "open to group or others (a capsule must be mode 0700)");
    EXPECT_EQ(fd, -1);
  }
  ASSERT_EQ(symlink(s.at("ok.mmtcap").c_str(), s.at("link.mmtcap").c_str()), 0);
  EXPECT_EQ(open_checked(s.fd, "link.mmtcap", &fd, &why), kErrSymlink);
  EXPECT_STREQ(why, "is a symbolic link");
  // Through a path: only its last component must not be a link.
  EXPECT_EQ(open_checked(AT_FDCWD, s.at("link.mmtcap").c_str(), &fd, &why), kErrSymlink);
  write_file(s.at("file.mmtcap"), "");
  EXPECT_EQ(open_checked(s.fd, "file.mmtcap", &fd, &why), kErrNotDir);
  EXPECT_STREQ(why, "not a directory");
  EXPECT_EQ(open_checked(s.fd, "missing.mmtcap", &fd, &why), -ENOENT);
  EXPECT_EQ(why, nullptr);
  EXPECT_EQ(open_checked(AT_FDCWD, s.at("ok.mmtcap").c_str(), &fd, nullptr), 0);
  close(fd);
}

// In a child that takes euid uid: what open_checked says of path.
int open_checked_as(uid_t uid, const std::string &path) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (setegid(uid) != 0 || seteuid(uid) != 0) _exit(200);
    int fd;
    _exit(-open_checked(AT_FDCWD, path.c_str(), &fd, nullptr));
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? -WEXITSTATUS(status) : -1000;
}

TEST(CapsuleDir, OpenCheckedRefusesForeignOwners) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to chown a directory to another user";
  scratch s;
  ASSERT_EQ(chmod(s.path.c_str(), 0711), 0);  // the other users may pass through
  make_capsule(s, "theirs");
  ASSERT_EQ(chown(s.at("theirs.mmtcap").c_str(), kOtherUid, kOtherUid), 0);
  // Root may open any capsule.
  int fd;
  ASSERT_EQ(open_checked(s.fd, "theirs.mmtcap", &fd, nullptr), 0);
  close(fd);
  // Its owner may; anyone else is refused, whether the kernel lets the
  // directory be opened (0700 of another user: it does not) or not.
  EXPECT_EQ(open_checked_as(kOtherUid, s.at("theirs.mmtcap")), 0);
  EXPECT_EQ(open_checked_as(kOtherUid - 1, s.at("theirs.mmtcap")), kErrNotOwned);
  make_capsule(s, "root");
  EXPECT_EQ(open_checked_as(kOtherUid, s.at("root.mmtcap")), kErrNotOwned);
  const char *why = nullptr;
  ASSERT_EQ(chmod(s.at("theirs.mmtcap").c_str(), 0755), 0);  // the kernel would let it be read
  EXPECT_EQ(open_checked_as(kOtherUid - 1, s.at("theirs.mmtcap")), kErrNotOwned);
  EXPECT_EQ(open_checked(s.fd, "theirs.mmtcap", &fd, &why), kErrOpen);  // root: the mode still counts
  ASSERT_EQ(seteuid(kOtherUid - 1), 0);
  const int r = open_checked(s.fd, "root.mmtcap", &fd, &why);
  ASSERT_EQ(seteuid(0), 0);
  EXPECT_EQ(r, kErrNotOwned);
  EXPECT_STREQ(why, "not owned by you");
}

TEST(CapsuleDir, RemoveDeletesACapsule) {
  scratch s;
  make_capsule(s, "old");
  const std::string dir = s.at("old.mmtcap");
  write_file(dir + "/mem", std::string(10000, 'm'));
  write_file(dir + "/pmem-3.tier", "p");
  write_file(dir + "/pmem-12.tier", "p");
  write_file(dir + "/mem-000122abcdef10ff09080706050403a0", "b");
  ASSERT_EQ(mkdir((dir + "/files").c_str(), 0700), 0);
  for (int i = 0; i < 40; ++i) write_file(dir + "/files/" + std::to_string(i), "f");
  make_capsule(s, "kept");
  const char *why = "unset";
  EXPECT_EQ(remove(s.fd, "old.mmtcap", &why), 0);
  EXPECT_EQ(why, nullptr);
  EXPECT_EQ(s.entries(), std::vector<std::string>{"kept.mmtcap"});
  EXPECT_EQ(remove(s.fd, "old.mmtcap", &why), -ENOENT);

  // A temporary capsule whose writer is gone, with an empty manifest.
  pending p;
  ASSERT_EQ(begin(s.fd, "stray", &p), 0);
  const std::string tmp = p.tmp_name;
  release(&p);
  EXPECT_EQ(remove(s.fd, tmp.c_str(), &why), 0);
  EXPECT_EQ(s.entries(), std::vector<std::string>{"kept.mmtcap"});
}

TEST(CapsuleDir, RemoveRefusesWhatIsNotACapsule) {
  scratch s;
  const char *why = nullptr;
  auto refused = [&](const char *entry, int want, const char *text, const std::vector<std::string> &kept) {
    SCOPED_TRACE(entry);
    EXPECT_EQ(remove(s.fd, entry, &why), want);
    EXPECT_STREQ(why, text);
    EXPECT_EQ(s.entries(entry), kept);  // nothing deleted
  };
  const char *kOther = "not a capsule (it holds files a capsule does not have)";
  make_capsule(s, "notes");
  write_file(s.at("notes.mmtcap/notes.txt"), "mine");
  refused("notes.mmtcap", kErrNotCapsule, kOther, {"manifest", "mem", "notes.txt"});

  ASSERT_EQ(mkdir(s.at("bare.mmtcap").c_str(), 0700), 0);
  write_file(s.at("bare.mmtcap/mem"), "m");
  refused("bare.mmtcap", kErrNotCapsule, "not a capsule (no manifest)", {"mem"});

  ASSERT_EQ(mkdir(s.at("magic.mmtcap").c_str(), 0700), 0);
  write_file(s.at("magic.mmtcap/manifest"), "#!/bin/sh\necho hi\n");
  refused("magic.mmtcap", kErrNotCapsule, "not a capsule (its manifest is not a capsule manifest)", {"manifest"});

  make_capsule(s, "nested");
  ASSERT_EQ(mkdir(s.at("nested.mmtcap/files").c_str(), 0700), 0);
  ASSERT_EQ(mkdir(s.at("nested.mmtcap/files/sub").c_str(), 0700), 0);
  refused("nested.mmtcap", kErrNotCapsule, kOther, {"files", "manifest", "mem"});
  EXPECT_TRUE(fs::is_directory(s.at("nested.mmtcap/files/sub")));

  make_capsule(s, "named");
  ASSERT_EQ(mkdir(s.at("named.mmtcap/files").c_str(), 0700), 0);
  write_file(s.at("named.mmtcap/files/passwords"), "x");
  refused("named.mmtcap", kErrNotCapsule, kOther, {"files", "manifest", "mem"});

  make_capsule(s, "memdir");
  ASSERT_EQ(unlink(s.at("memdir.mmtcap/mem").c_str()), 0);
  ASSERT_EQ(mkdir(s.at("memdir.mmtcap/mem").c_str(), 0700), 0);
  refused("memdir.mmtcap", kErrNotCapsule, kOther, {"manifest", "mem"});

  make_capsule(s, "linked");
  ASSERT_EQ(symlink("/etc/passwd", s.at("linked.mmtcap/pmem-1.tier").c_str()), 0);
  refused("linked.mmtcap", kErrNotCapsule, kOther, {"manifest", "mem", "pmem-1.tier"});

  // A directory not named as a capsule, even with a capsule's contents.
  ASSERT_EQ(mkdir(s.at("data").c_str(), 0700), 0);
  write_file(s.at("data/manifest"), "");
  refused("data", kErrNotCapsule, "not a capsule (its name does not end in .mmtcap)", {"manifest"});

  make_capsule(s, "open");
  ASSERT_EQ(chmod(s.at("open.mmtcap").c_str(), 0755), 0);
  refused("open.mmtcap", kErrOpen, "open to group or others (a capsule must be mode 0700)", {"manifest", "mem"});

  make_capsule(s, "target");
  ASSERT_EQ(symlink(s.at("target.mmtcap").c_str(), s.at("via.mmtcap").c_str()), 0);
  EXPECT_EQ(remove(s.fd, "via.mmtcap", &why), kErrSymlink);
  EXPECT_EQ(s.entries("target.mmtcap"), (std::vector<std::string>{"manifest", "mem"}));
}

}  // namespace
}  // namespace mmtier::capsule
