// `mmtier snapshot list | info | delete`: the capsules of a capsule
// directory (lib/snapshot/capsule_format.h, capsule_dir.h).  list reads
// each capsule's manifest and says what state it is in, info prints one
// manifest in full (and with --verify checks the CRC of every chunk of
// its memory), delete removes capsules with the owner and mode checks a
// restore makes and never deletes what is not a capsule.
#include "capsule_read.h"
#include "cli.h"
#include "format.h"

#include "config/config.h"
#include "snapshot/capsule_dir.h"
#include "snapshot/capsule_format.h"
#include "support/crc32c.h"
#include "support/errors.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iostream>
#include <sstream>

namespace mmtier::cli {
namespace {

namespace cap = mmtier::capsule;

const std::string kCmd = "snapshot";

struct options {
  std::string sub;
  std::vector<std::string> capsules;
  std::string dir;
  bool dir_set = false, json = false, verify = false;
};


std::string u64(uint64_t v) { return strf("%llu", static_cast<unsigned long long>(v)); }

std::string local_time(uint64_t unix_ns) {
  const time_t t = static_cast<time_t>(unix_ns / 1000000000ull);
  tm tmv;
  localtime_r(&t, &tmv);
  char buf[64];
  strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tmv);
  return buf;
}

// A char array of the header as text (NUL-terminated: manifest_parse checked).
template <size_t N>
std::string field_text(const char (&a)[N]) {
  return sanitize_text(std::string_view(a, strnlen(a, N)));
}

// The one line of an error about one capsule.
void report(const std::string &capsule, const std::string &what) {
  fprintf(stderr, "mmtier snapshot: %s: %s\n", capsule.c_str(), what.c_str());
}


// --- reading a capsule



// Bytes on disk of the capsule, like du: the directory, its files and
// files/; of them, in files that have other links too (earlier capsules'
// mem an incremental capsule shares, PMem files) to *shared.
uint64_t disk_bytes(int dirfd, uint64_t *shared, int depth = 0) {
  struct stat st;
  uint64_t sum = fstat(dirfd, &st) == 0 ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
  const int dup_fd = dup(dirfd);
  if (dup_fd < 0) return sum;
  DIR *d = fdopendir(dup_fd);
  if (!d) {
    close(dup_fd);
    return sum;
  }
  rewinddir(d);
  while (dirent *e = readdir(d)) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISDIR(st.st_mode) && depth < 1) {
      fd_holder sub(openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (sub.fd >= 0) sum += disk_bytes(sub.fd, shared, depth + 1);
    } else {
      sum += static_cast<uint64_t>(st.st_blocks) * 512;
      if (S_ISREG(st.st_mode) && st.st_nlink > 1) *shared += static_cast<uint64_t>(st.st_blocks) * 512;
    }
  }
  closedir(d);
  return sum;
}

// When process pid started, in seconds since the epoch; 0 if unknown.
uint64_t process_start(long pid) {
  const std::string stat_text = read_text(strf("/proc/%ld/stat", pid).c_str());
  const size_t paren = stat_text.rfind(')');
  if (paren == std::string::npos || paren + 2 > stat_text.size()) return 0;
  std::istringstream fields(stat_text.substr(paren + 2));
  std::string f;
  for (int i = 3; i <= 22 && fields >> f; ++i) {
  }
  std::istringstream proc_stat(read_text("/proc/stat"));
  std::string key;
  uint64_t btime = 0;
  while (proc_stat >> key)
    if (key == "btime" && proc_stat >> btime) break;
  const long tck = sysconf(_SC_CLK_TCK);
  if (!btime || tck <= 0 || f.empty()) return 0;
  return btime + strtoull(f.c_str(), nullptr, 10) / static_cast<uint64_t>(tck);
}

// Whether a snapshot writer (mmtier-snapwr) holds the file st open: it
// outlives the process it was forked from.
bool writer_holds(const struct stat &file) {
  DIR *proc = opendir("/proc");
  if (!proc) return false;
  bool found = false;
  while (dirent *e = readdir(proc)) {
    if (found || e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    if (read_text(strf("/proc/%s/comm", e->d_name).c_str()) != "mmtier-snapwr") continue;
    const std::string fds = strf("/proc/%s/fd", e->d_name);
    DIR *d = opendir(fds.c_str());
    if (!d) continue;
    while (dirent *f = readdir(d)) {
      struct stat st;
      if (f->d_name[0] != '.' && stat((fds + "/" + f->d_name).c_str(), &st) == 0 && st.st_dev == file.st_dev &&
          st.st_ino == file.st_ino)
        found = true;
    }
    closedir(d);
  }
  closedir(proc);
  return found;
}

// Whether the temporary capsule dirfd is still being written: the process
// named in it runs (and is not a later one with its pid), or a writer it
// forked holds the manifest open.
bool writer_running(long pid, int dirfd) {
  struct stat dir_st, manifest_st;
  if (fstat(dirfd, &dir_st) != 0) return false;
  if (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM) {
    const uint64_t start = process_start(pid);
    if (start && start <= static_cast<uint64_t>(dir_st.st_ctim.tv_sec) + 2) return true;
  }
  return fstatat(dirfd, cap::kManifest, &manifest_st, AT_SYMLINK_NOFOLLOW) == 0 && writer_holds(manifest_st);
}

// What a capsule is, as list and info say it.
struct examined {
  std::string status;  // incomplete, complete, durable, failed, damaged, unreadable
  std::string reason;  // why failed, damaged or unreadable; else empty
  int32_t error = 0;   // the writer's errno, for failed
  manifest_file file;
  bool parsed = false;
  cap::manifest_view view{};  // into file, when parsed
  uint64_t disk = 0;
  uint64_t shared = 0;  // of disk, in files linked elsewhere too
  bool tmp = false;
  long writer_pid = 0;
  bool writer_running = false;
};

const char *state_name(uint32_t s) {
  switch (static_cast<cap::status>(s)) {
    case cap::status::incomplete: return "incomplete";
    case cap::status::complete: return "complete";
    case cap::status::durable: return "durable";
    case cap::status::failed: return "failed";
  }
  return "unknown";
}

// A complete capsule's mem must hold what its manifest says it does.
std::string mem_problem(int dirfd, const cap::header &h) {
  struct stat st;
  if (fstatat(dirfd, cap::kMem, &st, AT_SYMLINK_NOFOLLOW) != 0)
    return errno == ENOENT ? "no mem file" : strf("mem: %s", strerror(errno));
  if (!S_ISREG(st.st_mode)) return "mem is not a regular file";
  if (static_cast<uint64_t>(st.st_size) < h.mem_size)
    return strf("mem is %llu bytes, shorter than the %llu the manifest says", static_cast<unsigned long long>(st.st_size),
                static_cast<unsigned long long>(h.mem_size));
  return "";
}

void examine(int dirfd, examined *e) {
  e->disk = disk_bytes(dirfd, &e->shared);
  if (e->tmp) e->writer_running = writer_running(e->writer_pid, dirfd);
  const int r = read_manifest(dirfd, &e->file);
  if (r < 0) {
    e->status = e->tmp ? "incomplete" : r == -ENOENT ? "damaged" : "unreadable";
    if (!e->tmp) e->reason = r == -ENOENT ? "no manifest" : r == -EFBIG ? "the manifest is too large" : strerror(-r);
    return;
  }
  const cap::status_block *sb = nullptr;
  const cap::parse_error pe = cap::status_parse(e->file.data(), e->file.len, &sb);
  if (pe != cap::parse_error::ok) {
    // A temporary capsule's manifest is written last.
    e->status = e->tmp ? "incomplete" : "damaged";
    if (!e->tmp) e->reason = cap::parse_error_text(pe);
    return;
  }
  const cap::parse_error full = cap::manifest_parse(e->file.data(), e->file.len, &e->view);
  e->parsed = full == cap::parse_error::ok;
  e->status = state_name(sb->state);
  e->error = sb->error;
  const auto state = static_cast<cap::status>(sb->state);
  if (state == cap::status::failed) {
    e->reason = sanitize_text(std::string_view(sb->line, strnlen(sb->line, sizeof sb->line)));
  } else if (state == cap::status::complete || state == cap::status::durable) {
    std::string problem = e->parsed ? mem_problem(dirfd, *e->view.hdr) : cap::parse_error_text(full);
    if (!problem.empty()) {
      e->status = "damaged";
      e->reason = problem;
    }
  }
}

// The status as one phrase: "durable", "failed: no space", "incomplete
// (writer 123 running)".
std::string status_phrase(const examined &e) {
  std::string s = e.status;
  if (e.tmp) s += strf(" (writer %ld %s)", e.writer_pid, e.writer_running ? "running" : "gone");
  if (!e.reason.empty()) s += ": " + e.reason;
  if (e.status == "failed" && e.error) {
    char buf[24];
    s += strf(" (%s)", detail::errno_name(e.error, buf));
  }
  return s;
}

// --- finding a capsule given on the command line



// Opens the capsule's parent directory; -errno.
int open_parent(const located &l) {
  const int fd = open(l.parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  return fd < 0 ? -errno : fd;
}


// --- list

struct row {
  std::string name, entry;
  examined e;
};

std::vector<row> scan(const std::string &dir, bool explicit_dir) {
  std::vector<row> rows;
  DIR *d = opendir(dir.c_str());
  if (!d) {
    // No snapshot was ever taken: the default directory does not exist yet.
    if (errno == ENOENT && !explicit_dir) return rows;
    throw failure(strf("cannot read the capsule directory %s: %s", dir.c_str(), strerror(errno)));
  }
  while (dirent *ent = readdir(d)) {
    char name[cap::kNameMax + 1];
    row r;
    if (cap::capsule_entry(ent->d_name, name)) {
    } else if (cap::tmp_entry(ent->d_name, name, &r.e.writer_pid)) {
      r.e.tmp = true;
    } else {
      continue;
    }
    r.name = name;
    r.entry = ent->d_name;
    int fd;
    const char *why = nullptr;
    const int err = cap::open_checked(dirfd(d), ent->d_name, &fd, &why);
    if (err < 0) {
      r.e.status = "unreadable";
      r.e.reason = open_error(err, why);
    } else {
      examine(fd, &r.e);
      close(fd);
    }
    rows.push_back(std::move(r));
  }
  closedir(d);
  std::sort(rows.begin(), rows.end(),
            [](const row &a, const row &b) { return a.name != b.name ? a.name < b.name : a.e.tmp < b.e.tmp; });
  return rows;
}

std::string list_table(const std::vector<row> &rows) {
  size_t w = 4;
  for (const row &r : rows) w = std::max(w, r.name.size());
  const int nw = static_cast<int>(w);
  std::string o = strf("%-*s  %-19s  %7s  %-15s  %6s  %6s  %s\n", nw, "NAME", "CREATED", "PID", "COMMAND", "SIZE",
                       "SHARED", "STATUS");
  for (const row &r : rows) {
    const cap::header *h = r.e.parsed ? r.e.view.hdr : nullptr;
    o += strf("%-*s  %-19s  %7s  %-15s  %6s  %6s  %s\n", nw, r.name.c_str(),
              h ? local_time(h->created_ns).c_str() : "-", h ? strf("%d", h->pid).c_str() : "-",
              h ? field_text(h->comm).c_str() : "-", short_bytes(r.e.disk).c_str(), short_bytes(r.e.shared).c_str(),
              status_phrase(r.e).c_str());
  }
  return o;
}

std::string json_or_null(const std::string &s) { return s.empty() ? "null" : json_string(s); }

std::string list_json(const std::string &dir, const std::vector<row> &rows) {
  std::string o = "{\"directory\":" + json_string(dir) + ",\"capsules\":[";
  for (size_t i = 0; i < rows.size(); ++i) {
    const row &r = rows[i];
    const cap::header *h = r.e.parsed ? r.e.view.hdr : nullptr;
    o += strf("%s{\"name\":%s,\"path\":%s,\"status\":%s,\"reason\":%s,\"created_unix_ns\":%s,\"pid\":%s,"
              "\"comm\":%s,\"disk_bytes\":%s,\"shared_disk_bytes\":%s,\"writer\":%s}",
              i ? "," : "", json_string(r.name).c_str(), json_string(dir + "/" + r.entry).c_str(),
              json_string(r.e.status).c_str(), json_or_null(r.e.reason).c_str(), h ? u64(h->created_ns).c_str() : "null",
              h ? strf("%d", h->pid).c_str() : "null", h ? json_string(field_text(h->comm)).c_str() : "null",
              u64(r.e.disk).c_str(), u64(r.e.shared).c_str(),
              r.e.tmp ? strf("{\"pid\":%ld,\"running\":%s}", r.e.writer_pid, r.e.writer_running ? "true" : "false").c_str()
                      : "null");
  }
  return o + "]}\n";
}

// pid: only the capsules of that process (as it saw itself; 0: all).
int list_main(const options &o, int pid) {
  const std::string dir = capsule_dir(o.dir_set, o.dir);
  std::vector<row> rows = scan(dir, o.dir_set);
  if (pid)
    rows.erase(std::remove_if(rows.begin(), rows.end(),
                              [pid](const row &r) { return !r.e.parsed || r.e.view.hdr->pid != pid; }),
               rows.end());
  const std::string text = o.json ? list_json(dir, rows) : list_table(rows);
  fwrite(text.data(), 1, text.size(), stdout);
  if (fflush(stdout) != 0) throw failure(strf("writing the output: %s", strerror(errno)));
  return 0;
}

// --- info

constexpr const char *kRegionKinds[] = {"reserve", "unit", "anon", "stack", "brk", "file", "vdso", "vvar", "stats"};
constexpr const char *kSources[] = {"hole", "mem", "pmem", "file", "zero", "base"};
constexpr size_t kNumKinds = sizeof kRegionKinds / sizeof *kRegionKinds;
constexpr size_t kNumSources = sizeof kSources / sizeof *kSources;

struct tally {
  uint64_t regions[kNumKinds] = {};
  uint64_t bytes[kNumSources] = {};
  uint64_t mem_chunks = 0, other_chunks = 0;
};

tally count(const cap::manifest_view &m) {
  tally t;
  for (uint64_t i = 0; i < m.nregions; ++i) ++t.regions[m.regions[i].kind - 1];  // kinds checked by the parser
  for (uint64_t i = 0; i < m.nruns; ++i) t.bytes[m.runs[i].source - 1] += m.runs[i].npages * m.hdr->page_size;
  for (uint64_t i = 0; i < m.nchunks; ++i) ++(m.chunks[i].file == cap::kNoFile ? t.mem_chunks : t.other_chunks);
  return t;
}



std::string hex(const uint8_t *p, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += strf("%02x", p[i]);
  return s;
}

std::string kinds_text(const tally &t) {
  std::string s;
  for (size_t k = 0; k < kNumKinds; ++k)
    if (t.regions[k]) s += strf("%s%llu %s", s.empty() ? "" : ", ", static_cast<unsigned long long>(t.regions[k]), kRegionKinds[k]);
  return s;
}

std::string sources_text(const tally &t) {
  std::string s;
  for (size_t k : {1, 5, 2, 3, 4, 0})  // data first, untouched last; base only in incremental capsules
    if (k != 5 || t.bytes[k]) s += strf("%s%s %s", s.empty() ? "" : ", ", kSources[k], human_bytes(t.bytes[k]).c_str());
  return s;
}

// The procstate table's record, or null (a capsule without one, or with a
// record of another size).
const cap::procstate_record *procstate(const cap::manifest_view &m) {
  for (uint32_t i = 0; i < m.ntables; ++i) {
    const cap::table_entry &e = m.dir[i];
    if (e.kind == static_cast<uint32_t>(cap::table_kind::procstate) && e.count == 1 &&
        e.record_size == sizeof(cap::procstate_record))
      return reinterpret_cast<const cap::procstate_record *>(reinterpret_cast<const char *>(m.status) + e.offset);
  }
  return nullptr;
}

// Signals with a handler of the program's, and ignored ones.
void signal_counts(const cap::procstate_record &p, unsigned *handled, unsigned *ignored) {
  *handled = *ignored = 0;
  for (const cap::sigaction_record &a : p.sigactions) {
    *handled += a.handler > 1;
    *ignored += a.handler == 1;
  }
}

// "3 handled, 1 ignored; umask 0022; cwd /srv"
std::string procstate_text(const cap::manifest_view &m, const cap::procstate_record &p) {
  unsigned handled, ignored;
  signal_counts(p, &handled, &ignored);
  return strf("signals: %u handled, %u ignored; umask %04o; cwd %s", handled, ignored, p.umask,
              sanitize_text(cap::string_at(m, p.cwd)).c_str());
}

struct info_input {
  located where;
  const examined *e;
  uint64_t manifest_bytes;
  const verified *v;  // null without --verify
};

std::string info_text(const info_input &in) {
  const cap::manifest_view &m = in.e->view;
  const cap::header &h = *m.hdr;
  const tally t = count(m);
  std::string o;
  auto line = [&o](const char *key, const std::string &value) { o += strf("%-17s %s\n", key, value.c_str()); };
  line("capsule", in.where.path);
  line("status", status_phrase(*in.e));
  line("process", strf("%d (%s), %u threads", h.pid, field_text(h.comm).c_str(), h.nthreads));
  line("credentials", strf("uid %u, gid %u, euid %u, egid %u", h.uid, h.gid, h.euid, h.egid));
  line("created", local_time(h.created_ns));
  line("paused", strf("%.3f ms", static_cast<double>(h.paused_ns) / 1e6));
  line("kernel", field_text(h.kernel_release));
  line("boot id", field_text(h.boot_id));
  line("mmtier version", field_text(h.mmtier_version));
  line("capsule id", hex(h.capsule_id, sizeof h.capsule_id));
  line("page size", u64(h.page_size));
  line("mem", human_bytes(h.mem_size));
  if (h.shared)
    line("built on", strf("capsule %s: %s unchanged since, in earlier capsules' mem (base)",
                          hex(h.base_id, sizeof h.base_id).c_str(), human_bytes(h.shared).c_str()));
  line("manifest", human_bytes(in.manifest_bytes));
  line("on disk", in.e->shared ? strf("%s, %s of it shared with other capsules or the PMem tier",
                                       human_bytes(in.e->disk).c_str(), human_bytes(in.e->shared).c_str())
                                 : human_bytes(in.e->disk));
  line("regions", strf("%llu%s%s", static_cast<unsigned long long>(m.nregions), m.nregions ? ": " : "",
                       kinds_text(t).c_str()));
  line("memory by source", sources_text(t));
  line("chunks", strf("%llu of mem, %llu of other files", static_cast<unsigned long long>(t.mem_chunks),
                      static_cast<unsigned long long>(t.other_chunks)));
  line("files", u64(m.nfiles));
  if (const cap::procstate_record *p = procstate(m)) line("process state", procstate_text(m, *p));
  if (in.v)
    line("verified",
         strf("%llu chunks, %s of mem%s%s: every CRC32C matches%s", static_cast<unsigned long long>(in.v->chunks),
              human_bytes(in.v->bytes - in.v->linked_bytes - in.v->base_bytes).c_str(),
              in.v->base_chunks ? strf(", %s of earlier capsules' mem", human_bytes(in.v->base_bytes).c_str()).c_str()
                                : "",
              in.v->linked_chunks ? strf(" and %s of linked PMem", human_bytes(in.v->linked_bytes).c_str()).c_str() : "",
              t.other_chunks > in.v->linked_chunks + in.v->base_chunks ? " (other files not checked)" : ""));
  return o;
}

std::string info_json(const info_input &in) {
  const cap::manifest_view &m = in.e->view;
  const cap::header &h = *m.hdr;
  const tally t = count(m);
  std::string o = "{";
  auto field = [&o](const char *key, const std::string &value) {
    o += strf("%s\"%s\":%s", o.size() > 1 ? "," : "", key, value.c_str());
  };
  field("path", json_string(in.where.path));
  field("status", json_string(in.e->status));
  field("reason", json_or_null(in.e->reason));
  field("error", in.e->error ? json_string([&] { char b[24]; return std::string(detail::errno_name(in.e->error, b)); }()) : "null");
  field("pid", strf("%d", h.pid));
  field("comm", json_string(field_text(h.comm)));
  field("threads", strf("%u", h.nthreads));
  field("uid", strf("%u", h.uid));
  field("gid", strf("%u", h.gid));
  field("euid", strf("%u", h.euid));
  field("egid", strf("%u", h.egid));
  field("created_unix_ns", u64(h.created_ns));
  field("paused_ns", u64(h.paused_ns));
  field("kernel_release", json_string(field_text(h.kernel_release)));
  field("boot_id", json_string(field_text(h.boot_id)));
  field("mmtier_version", json_string(field_text(h.mmtier_version)));
  field("capsule_id", json_string(hex(h.capsule_id, sizeof h.capsule_id)));
  field("page_size", u64(h.page_size));
  field("mem_bytes", u64(h.mem_size));
  field("manifest_bytes", u64(in.manifest_bytes));
  field("disk_bytes", u64(in.e->disk));
  field("shared_disk_bytes", u64(in.e->shared));
  field("shared_bytes", u64(h.shared));
  field("base_id", h.shared ? json_string(hex(h.base_id, sizeof h.base_id)) : "null");
  std::string kinds = "{", sources = "{";
  for (size_t k = 0; k < kNumKinds; ++k) kinds += strf("%s\"%s\":%s", k ? "," : "", kRegionKinds[k], u64(t.regions[k]).c_str());
  for (size_t k = 0; k < kNumSources; ++k) sources += strf("%s\"%s\":%s", k ? "," : "", kSources[k], u64(t.bytes[k]).c_str());
  field("regions", u64(m.nregions));
  field("regions_by_kind", kinds + "}");
  field("bytes_by_source", sources + "}");
  field("runs", u64(m.nruns));
  field("mem_chunks", u64(t.mem_chunks));
  field("other_chunks", u64(t.other_chunks));
  field("files", u64(m.nfiles));
  if (const cap::procstate_record *p = procstate(m)) {
    unsigned handled, ignored;
    signal_counts(*p, &handled, &ignored);
    field("process_state", strf("{\"signals_handled\":%u,\"signals_ignored\":%u,\"umask\":%u,\"cwd\":%s}", handled,
                                ignored, p->umask, json_string(cap::string_at(m, p->cwd)).c_str()));
  } else {
    field("process_state", "null");
  }
  field("verified", in.v ? strf("{\"chunks\":%s,\"bytes\":%s}", u64(in.v->chunks).c_str(), u64(in.v->bytes).c_str()) : "null");
  return o + "}\n";
}

int info_main(const options &o) {
  const std::string &arg = o.capsules[0];
  const located l = locate(arg, o.dir_set, o.dir);
  fd_holder parent;
  int dirfd = -1;
  const char *why = nullptr;
  int err = parent.fd = open_parent(l);
  if (err >= 0) err = cap::open_checked(parent.fd, l.entry.c_str(), &dirfd, &why);
  if (err < 0) {
    report(arg, open_error(err, why));
    return 1;
  }
  fd_holder dir(dirfd);
  examined e;
  e.tmp = cap::tmp_entry(l.entry.c_str(), nullptr, &e.writer_pid);
  examine(dir.fd, &e);
  if (!e.parsed || e.status == "damaged" || e.status == "unreadable") {
    report(arg, status_phrase(e));
    return 1;
  }
  verified v;
  if (o.verify) {
    try {
      v = verify_mem(dir.fd, e.view);
      const verified linked = verify_linked(dir.fd, e.view);
      v.chunks += linked.chunks;
      v.bytes += linked.bytes;
      v.linked_chunks = linked.linked_chunks;
      v.linked_bytes = linked.linked_bytes;
    } catch (const failure &f) {
      report(arg, f.what());
      return 1;
    }
  }
  const info_input in{l, &e, e.file.len, o.verify ? &v : nullptr};
  const std::string text = o.json ? info_json(in) : info_text(in);
  fwrite(text.data(), 1, text.size(), stdout);
  if (fflush(stdout) != 0) throw failure(strf("writing the output: %s", strerror(errno)));
  return 0;
}

// --- delete

// Deletes one capsule; false after saying why not.
bool delete_one(const std::string &arg, const options &o) {
  const located l = locate(arg, o.dir_set, o.dir);
  const int parent = open_parent(l);
  if (parent < 0) {
    report(arg, open_error(parent, nullptr));
    return false;
  }
  fd_holder hold(parent);
  long pid = 0;
  if (cap::tmp_entry(l.entry.c_str(), nullptr, &pid)) {
    int fd;
    if (cap::open_checked(parent, l.entry.c_str(), &fd, nullptr) == 0) {
      fd_holder dir(fd);
      if (writer_running(pid, fd)) {
        report(arg, strf("being written (writer %ld running)", pid));
        return false;
      }
    }
  }
  const char *why = nullptr;
  const int r = cap::remove(parent, l.entry.c_str(), &why);
  if (r < 0) report(arg, open_error(r, why));
  return r == 0;
}

int delete_main(const options &o) {
  bool ok = true;
  for (const std::string &c : o.capsules) ok = delete_one(c, o) && ok;
  return ok ? 0 : 1;
}

options parse(const args &a) {
  options o;
  bool operands_only = false;
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string &arg = a[i];
    if (operands_only || arg.empty() || arg[0] != '-' || arg == "-") {
      (o.sub.empty() ? o.sub : o.capsules.emplace_back()) = arg;
    } else if (arg == "--") {
      operands_only = true;
    } else if (arg == "--json") {
      o.json = true;
    } else if (arg == "--verify") {
      o.verify = true;
    } else if (take_option(kCmd, a, &i, "--dir", &o.dir)) {
      if (o.dir.empty()) throw usage_error(kCmd, "empty directory name");
      o.dir_set = true;
    } else {
      throw usage_error(kCmd, strf("unknown option %s", arg.c_str()));
    }
  }
  return o;
}

}  // namespace

int snapshot_main(const args &a) {
  for (const std::string &arg : a) {
    if (arg == "--") break;
    if (arg == "-h" || arg == "--help") {
      std::cout << help_text("snapshot");
      return 0;
    }
  }
  // mmtier snapshot PID [...]: take one.
  if (!a.empty() && !a[0].empty() && a[0].find_first_not_of("0123456789") == std::string::npos)
    return snapshot_take_main(a[0], args(a.begin() + 1, a.end()));
  const options o = parse(a);
  if (o.sub.empty()) throw usage_error(kCmd, "no subcommand given (PID, list, info or delete)");
  if (o.sub != "list" && o.sub != "info" && o.sub != "delete")
    throw usage_error(kCmd, strf("unknown subcommand \"%s\" (PID, list, info or delete)", o.sub.c_str()));
  if (o.verify && o.sub != "info") throw usage_error(kCmd, "--verify is an option of info");
  if (o.json && o.sub == "delete") throw usage_error(kCmd, "--json is an option of list and info");
  if (o.sub == "list") {
    int pid = 0;
    if (o.capsules.size() > 1 || (o.capsules.size() == 1 && !parse_pid(o.capsules[0], &pid)))
      throw usage_error(kCmd, strf("unexpected argument %s", o.capsules.back().c_str()));
    return list_main(o, pid);
  }
  if (o.capsules.empty()) throw usage_error(kCmd, strf("%s: no CAPSULE given", o.sub.c_str()));
  if (o.sub == "info") {
    if (o.capsules.size() > 1) throw usage_error(kCmd, "info: give one CAPSULE");
    return info_main(o);
  }
  return delete_main(o);
}

}  // namespace mmtier::cli
