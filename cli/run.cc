// `mmtier run`: starts a command under libmmtier.  The options become
// MMTIER_* variables, checked with the library's own parser so a bad value
// gives the library's message; libmmtier.so is found next to the command
// (build tree) or where it was installed and prepended to LD_PRELOAD; then
// the command replaces this process (execvp), so its exit status and
// signals are the command's own.  With --autosave this process stays, as
// the command's supervisor (autosave.cc).
#include "autosave.h"
#include "capsule_read.h"
#include "cli.h"

#include "config/config.h"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <utility>

extern char **environ;

namespace mmtier::cli {

namespace {

bool is_file(const std::string &path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string dir_of(const std::string &path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// path with its directory made canonical (the file name is kept, so a
// symlink libmmtier.so stays libmmtier.so).
std::string absolute(const std::string &path) {
  std::string dir = dir_of(path);
  char buf[PATH_MAX];
  if (realpath(dir.c_str(), buf) == nullptr) return path;
  size_t slash = path.rfind('/');
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  return std::string(buf) + (strcmp(buf, "/") == 0 ? "" : "/") + base;
}

// The options that set their variable to their value: the variable's name
// when a[*i] is one (its value taken), else null.
const char *plain_option(const std::string &cmd, const args &a, size_t *i, std::string *v) {
  static constexpr struct {
    const char *option, *variable;
  } kPlain[] = {
      {"--pmem-limit", "MMTIER_PMEM_LIMIT"},     {"--pmem-path", "MMTIER_PMEM_PATH"},
      {"--policy", "MMTIER_POLICY"},             {"--log", "MMTIER_LOG"},
      {"--report", "MMTIER_REPORT"},             {"--stats-dir", "MMTIER_STATS_DIR"},
      {"--snapshot-dir", "MMTIER_SNAPSHOT_DIR"}, {"--snapshot-every", "MMTIER_SNAPSHOT_EVERY"},
  };
  for (const auto &p : kPlain)
    if (take_option(cmd, a, i, p.option, v)) return p.variable;
  return nullptr;
}

}  // namespace

// The library `run` preloads (see `mmtier run --help`, FILES).
std::string find_library() {
  if (const char *v = getenv("MMTIER_LIBRARY"); v != nullptr && v[0] != '\0') {
    if (!is_file(v)) throw failure(strf("MMTIER_LIBRARY=\"%s\": no such file", v));
    return absolute(v);
  }
  std::vector<std::string> candidates;
  std::string exe = self_dir();
  if (!exe.empty()) {
    candidates.push_back(exe + "/libmmtier.so");
    std::string arch = MMTIER_LIBRARY_ARCHITECTURE;
    if (!arch.empty()) candidates.push_back(exe + "/../lib/" + arch + "/libmmtier.so");
    std::string libdir = MMTIER_INSTALL_LIBDIR;
    if (!libdir.empty() && libdir[0] != '/' && libdir != "lib") candidates.push_back(exe + "/../" + libdir + "/libmmtier.so");
    candidates.push_back(exe + "/../lib/libmmtier.so");
  }
  candidates.push_back(std::string(MMTIER_INSTALL_FULL_LIBDIR) + "/libmmtier.so");
  // Without the development symlink, the runtime name.
  size_t n = candidates.size();
  for (size_t i = 0; i < n; ++i) candidates.push_back(candidates[i] + ".0");
  for (const std::string &c : candidates)
    if (is_file(c)) return absolute(c);
  std::string looked;
  for (size_t i = 0; i < n; ++i) looked += (i ? ", " : "") + absolute(candidates[i]);
  throw failure(strf("cannot find libmmtier.so (looked for %s); set MMTIER_LIBRARY to its path", looked.c_str()));
}

int run_main(const args &a) {
  const std::string cmd = "run";
  std::vector<std::pair<std::string, std::string>> vars;  // in option order, later ones win
  bool ratio = false, limit = false, autosave = false, keep = false;
  autosave_options as;
  auto set = [&vars](const char *name, const std::string &value) {
    for (auto &v : vars)
      if (v.first == name) {
        v.second = value;
        return;
      }
    vars.emplace_back(name, value);
  };
  size_t i = 0;
  for (; i < a.size(); ++i) {
    const std::string &arg = a[i];
    std::string v;
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg == "-h" || arg == "--help") {
      std::cout << help_text("run");
      return 0;
    }
    if (take_option(cmd, a, &i, "--dram-ratio", &v)) {
      set("MMTIER_DRAM_RATIO", v);
      ratio = true;
    } else if (take_option(cmd, a, &i, "--dram-limit", &v)) {
      set("MMTIER_DRAM_LIMIT", v);
      limit = true;
    } else if (const char *var = plain_option(cmd, a, &i, &v)) {
      set(var, v);
    } else if (arg == "--no-promote") {
      set("MMTIER_PROMOTE", "0");
    } else if (take_option(cmd, a, &i, "--keep", &v)) {
      set("MMTIER_SNAPSHOT_KEEP", v);
      keep = true;
    } else if (take_option(cmd, a, &i, "--autosave", &v)) {
      set("MMTIER_SNAPSHOT_EVERY", v);
      autosave = true;
    } else if (take_option(cmd, a, &i, "--max-restarts", &v)) {
      if (!parse_pid(v, &as.max_restarts) || as.max_restarts > 1000)
        throw usage_error(cmd, strf("--max-restarts: expected an integer from 1 to 1000, not \"%s\"", v.c_str()));
    } else if (take_option(cmd, a, &i, "--restart-window", &v)) {
      double sec = 0;
      if (!parse_duration_seconds(v, &sec) || sec < 1 || sec > 86400)
        throw usage_error(cmd, strf("--restart-window: expected a duration from 1s to 86400s, not \"%s\"", v.c_str()));
      as.window_ns = static_cast<uint64_t>(sec * 1e9);
    } else if (arg.size() > 1 && arg[0] == '-') {
      throw usage_error(cmd, strf("unknown option %s", arg.c_str()));
    } else {
      break;  // the command
    }
  }
  if (ratio && limit)
    throw usage_error(cmd, "--dram-ratio and --dram-limit cannot be used together (ratio placement or a DRAM limit)");
  if (i >= a.size()) throw usage_error(cmd, "no command given");
  if (autosave) {
    // A few recent snapshots are what a restore needs; the stop signal
    // takes a last one before the program ends.
    if (!keep) set("MMTIER_SNAPSHOT_KEEP", "3");
    if (!getenv("MMTIER_SNAPSHOT_SIGNAL")) set("MMTIER_SNAPSHOT_SIGNAL", "TERM");
  }

  // The environment the command gets: ours, with the options' variables
  // replaced, and the library first in LD_PRELOAD.
  std::vector<std::string> env;
  auto named = [](const std::string &entry, const std::string &name) {
    return entry.size() > name.size() && entry.compare(0, name.size(), name) == 0 && entry[name.size()] == '=';
  };
  for (char **e = environ; *e != nullptr; ++e) {
    std::string entry = *e;
    bool replaced = named(entry, "LD_PRELOAD");
    for (const auto &v : vars) replaced = replaced || named(entry, v.first);
    if (!replaced) env.push_back(std::move(entry));
  }
  for (const auto &v : vars) env.push_back(v.first + "=" + v.second);

  std::vector<char *> envp;
  for (std::string &e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  // The library's own check, on exactly what it will see.
  detail::config parsed;
  detail::config_error err;
  if (!detail::config_parse(envp.data(), false, &parsed, &err, nullptr)) {
    fprintf(stderr, "mmtier: %s\n", err.line);
    return 1;
  }

  std::string lib = find_library();
  if (lib.find_first_of(": ") != std::string::npos)
    throw failure(strf("cannot preload %s: LD_PRELOAD cannot hold a path with ':' or ' '", lib.c_str()));
  std::string preload = lib;
  if (const char *old = getenv("LD_PRELOAD"); old != nullptr && old[0] != '\0') {
    std::string rest = old;
    // Do not list the library twice.
    if (!(rest == lib || rest.compare(0, lib.size() + 1, lib + ":") == 0 || rest.compare(0, lib.size() + 1, lib + " ") == 0))
      preload += ":" + rest;
    else
      preload = rest;
  }
  env.push_back("LD_PRELOAD=" + preload);
  envp.clear();
  for (std::string &e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  std::vector<char *> argv;
  for (size_t k = i; k < a.size(); ++k) argv.push_back(const_cast<char *>(a[k].c_str()));
  argv.push_back(nullptr);
  if (autosave) {
    // Where the program writes its capsules: what it will read.
    as.dir = parsed.snapshot_dir;
    if (as.dir.empty()) throw failure("--autosave: no capsule directory: set HOME or give --snapshot-dir");
    return supervise(argv.data(), envp.data(), as);
  }
  fflush(nullptr);
  execvpe(argv[0], argv.data(), envp.data());
  int e = errno;
  const std::string &prog = a[i];
  if (e == ENOENT && prog.find('/') == std::string::npos) {
    fprintf(stderr, "mmtier: %s: command not found\n", prog.c_str());
    return 127;
  }
  fprintf(stderr, "mmtier: %s: %s\n", prog.c_str(), strerror(e));
  return e == ENOENT ? 127 : 126;
}

}  // namespace mmtier::cli
