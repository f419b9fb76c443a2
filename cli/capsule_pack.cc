// `mmtier capsule pack CAPSULE` and `mmtier capsule unpack`: a capsule as
// one tar stream, to move it by any means (a file, ssh, object storage) to
// another host with the same binaries and kernel.  A capsule's directory is
// self-contained (the earlier capsules' mem and the PMem files it refers to
// are hard links in it), so the stream is the directory: GNU tar writes it
// (--sparse: mem keeps its holes) and reads it back.  Unpacking extracts
// into a fresh private directory first and publishes the capsule under its
// name only once it is one: nothing but a capsule's files, modes 0700/0600,
// a manifest that parses, every checksum right.
#include "capsule_read.h"
#include "cli.h"

#include "snapshot/capsule_dir.h"
#include "snapshot/capsule_format.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ftw.h>
#include <iostream>
#include <random>

namespace mmtier::cli {

namespace cap = mmtier::capsule;

namespace {

// Runs tar with argv; its exit status, or -1 when it could not run.
int run_tar(const std::vector<std::string> &args, int in_fd, int out_fd) {
  std::vector<char *> argv;
  for (const std::string &a : args) argv.push_back(const_cast<char *>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (in_fd >= 0) dup2(in_fd, 0);
    if (out_fd >= 0) dup2(out_fd, 1);
    execvp("tar", argv.data());
    fprintf(stderr, "mmtier: cannot run tar: %s\n", strerror(errno));
    _exit(127);
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int remove_entry(const char *path, const struct stat *, int, struct FTW *) { return ::remove(path); }

int pack(const std::string &capsule, bool dir_set, const std::string &dir, const std::string &out) {
  const located l = locate(capsule, dir_set, dir);
  check_capsule_at(l, false);
  int out_fd = 1;
  if (!out.empty() && out != "-") {
    out_fd = open(out.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out_fd < 0) throw failure(strf("cannot create %s: %s", out.c_str(), strerror(errno)));
  } else if (isatty(1)) {
    throw failure("will not write a capsule's tar stream to a terminal: redirect it, or give -o FILE");
  }
  const int r = run_tar({"tar", "--sparse", "--numeric-owner", "-C", l.parent, "-cf", "-", l.entry}, -1, out_fd);
  if (out_fd != 1) close(out_fd);
  if (r != 0) {
    if (out_fd != 1) unlink(out.c_str());
    throw failure(strf("tar could not write %s (status %d)", l.path.c_str(), r));
  }
  return 0;
}

int unpack(const std::string &in, bool dir_set, const std::string &dir_opt) {
  const std::string dir = capsule_dir(dir_set, dir_opt);
  if (const int r = cap::make_dirs(dir.c_str()); r < 0)
    throw failure(strf("cannot create %s: %s", dir.c_str(), strerror(-r)));
  int in_fd = 0;
  if (!in.empty() && in != "-") {
    in_fd = open(in.c_str(), O_RDONLY | O_CLOEXEC);
    if (in_fd < 0) throw failure(strf("cannot open %s: %s", in.c_str(), strerror(errno)));
  }
  // A private staging directory in the capsule directory (same file system:
  // the capsule is renamed out of it).
  std::random_device rd;
  const std::string stage = strf("%s/.unpack-%d-%08x", dir.c_str(), static_cast<int>(getpid()), rd());
  if (mkdir(stage.c_str(), 0700) != 0) throw failure(strf("cannot create %s: %s", stage.c_str(), strerror(errno)));
  auto cleanup = [&] { nftw(stage.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS); };
  try {
    const int r = run_tar({"tar", "--sparse", "--no-same-owner", "--no-same-permissions", "--no-overwrite-dir",
                           "-C", stage, "-xf", "-"},
                          in_fd, -1);
    if (in_fd != 0) close(in_fd);
    if (r != 0) throw failure(strf("tar could not read the capsule (status %d)", r));
    // Exactly one entry, a capsule's name.
    std::string entry;
    int entries = 0;
    if (DIR *d = opendir(stage.c_str())) {
      while (dirent *e = readdir(d))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) entry = e->d_name, ++entries;
      closedir(d);
    }
    if (entries != 1 || !cap::capsule_entry(entry.c_str(), nullptr))
      throw failure("the stream does not hold one capsule (NAME.mmtcap) and nothing else");
    // Modes as a capsule has them, whatever the stream said.
    const std::string path = stage + "/" + entry;
    chmod(path.c_str(), 0700);
    if (DIR *d = opendir(path.c_str())) {
      while (dirent *e = readdir(d)) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        struct stat st;
        const std::string f = path + "/" + e->d_name;
        if (lstat(f.c_str(), &st) == 0 && !S_ISLNK(st.st_mode)) chmod(f.c_str(), S_ISDIR(st.st_mode) ? 0700 : 0600);
      }
      closedir(d);
    }
    check_capsule_at({stage, entry, path}, true);
    const std::string target = dir + "/" + entry;
    if (renameat2(AT_FDCWD, path.c_str(), AT_FDCWD, target.c_str(), RENAME_NOREPLACE) != 0)
      throw failure(errno == EEXIST ? strf("%s exists already", target.c_str())
                                    : strf("cannot move the capsule to %s: %s", target.c_str(), strerror(errno)));
    cleanup();
    std::cout << target << "\n";
    return 0;
  } catch (...) {
    cleanup();
    throw;
  }
}

}  // namespace

void check_capsule_at(const located &l, bool verify) {
  int fd = -1;
  const char *why = nullptr;
  if (const int r = cap::open_checked(AT_FDCWD, l.path.c_str(), &fd, &why); r != 0)
    throw failure(strf("%s: %s", l.path.c_str(), open_error(r, why).c_str()));
  fd_holder holder(fd);
  if (const int r = cap::check_capsule(fd, &why); r != 0)
    throw failure(strf("%s: %s", l.path.c_str(), open_error(r, why).c_str()));
  manifest_file m;
  cap::manifest_view v;
  if (read_manifest(fd, &m) != 0) throw failure(strf("%s: cannot read its manifest", l.path.c_str()));
  if (const cap::parse_error e = cap::manifest_parse(m.data(), m.len, &v); e != cap::parse_error::ok)
    throw failure(strf("%s: damaged: %s", l.path.c_str(), cap::parse_error_text(e)));
  if (v.status->state != static_cast<uint32_t>(cap::status::durable))
    throw failure(strf("%s: not durable (a capsule is moved once it is complete and synced)", l.path.c_str()));
  if (verify) {
    verify_mem(fd, v);
    verify_linked(fd, v);
  }
}

int capsule_main(const args &a) {
  const std::string cmd = "capsule";
  std::string sub, operand, dir, out;
  bool dir_set = false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] == "-h" || a[i] == "--help") {
      std::cout << help_text(cmd);
      return 0;
    } else if (take_option(cmd, a, &i, "--dir", &dir)) {
      dir_set = true;
    } else if (take_option(cmd, a, &i, "-o", &out)) {
    } else if (a[i] != "-" && !a[i].empty() && a[i][0] == '-') {
      throw usage_error(cmd, strf("unknown option %s", a[i].c_str()));
    } else if (sub.empty()) {
      sub = a[i];
    } else if (operand.empty()) {
      operand = a[i];
    } else {
      throw usage_error(cmd, strf("unexpected argument %s", a[i].c_str()));
    }
  }
  if (sub == "pack") {
    if (operand.empty()) throw usage_error(cmd, "pack: give the CAPSULE");
    return pack(operand, dir_set, dir, out);
  }
  if (sub == "unpack") {
    if (!out.empty()) throw usage_error(cmd, "-o is an option of pack");
    return unpack(operand, dir_set, dir);
  }
  throw usage_error(cmd, sub.empty() ? "give pack or unpack" : strf("unknown subcommand \"%s\"", sub.c_str()));
}

}  // namespace mmtier::cli
