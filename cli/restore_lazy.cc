// The lazy fill (restore_lazy.h).  One process (the restore's init) serves
// every userfaultfd: the restored program's, and one per child it forks
// while the fill runs (UFFD_EVENT_FORK).  Per process ("space") it keeps
// which pages of mem are done: copied in, or given back by the program
// (MADV_DONTNEED, munmap), after which a fault there gets a zero page, as
// the kernel would have given; a fork child's memory the program asked to
// be wiped at fork is done from the start.  Addresses are kept as the capsule had
// them; an mremap of lazy memory is followed by a relocation.  The kernel
// fails a copy with EAGAIN while a fork, mremap, munmap or madvise event
// is not read yet, so the done bits always describe the process's memory.
#include "restore_lazy.h"

#include "cli.h"
#include "support/crc32c.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

namespace mmtier::cli {

namespace cap = mmtier::capsule;

namespace {

// The processes below this one: read from /proc/PID/task/TID/children,
// depth first.
void descendants(pid_t pid, std::vector<pid_t> *out) {
  const std::string tasks = strf("/proc/%d/task", pid);
  DIR *d = opendir(tasks.c_str());
  if (!d) return;
  std::vector<pid_t> kids;
  while (dirent *e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const std::string list = read_text((tasks + "/" + e->d_name + "/children").c_str());
    for (const char *p = list.c_str(); *p;) {
      char *end;
      const long k = strtol(p, &end, 10);
      if (end == p) break;
      kids.push_back(static_cast<pid_t>(k));
      p = end;
    }
  }
  closedir(d);
  for (pid_t k : kids) {
    out->push_back(k);
    descendants(k, out);
  }
}

// Ends every process of the restore at once.  As the PID namespace's init,
// kill(-1) reaches every other process in it; as the supervisor in the
// host's namespace (a subreaper: orphans come back to it), its
// descendants, again until none is left (one may fork meanwhile).
void kill_restored() {
  if (getpid() == 1) {
    kill(-1, SIGKILL);
    return;
  }
  for (int round = 0; round < 100; ++round) {
    std::vector<pid_t> all;
    descendants(getpid(), &all);
    if (all.empty()) return;
    for (pid_t p : all) kill(p, SIGKILL);
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
  }
}

constexpr uint64_t kLazyMinBytes = uint64_t{2} << 20;
constexpr uint64_t kPg = 4096;
constexpr uint64_t kEvents =
    UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP;

double now_s() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Bytes of mem at mem_off, at addr as the capsule had it.
struct piece {
  uint64_t addr, len, mem_off;
};

// [cur_lo, cur_hi) of a process holds what the capsule had at orig_lo.
struct reloc {
  uint64_t cur_lo, cur_hi, orig_lo;
};

struct space {
  int uffd = -1;
  std::vector<uint64_t> done;    // a bit per page of mem
  std::vector<uint8_t> filled;   // per chunk of mem
  std::vector<reloc> relocs;
  size_t next = 0;               // into the server's work list
  bool gone = false;             // its memory is gone (the process ended or exec'd)
};

enum class step { ok, retry, gone };

class server {
 public:
  server(const cap::manifest_view &m, const data_files &files, uint64_t sentinel, uint64_t fill_rate)
      : m_(m), files_(files), layout_(layout_of(m)), sentinel_(sentinel), fill_rate_(fill_rate) {}

  lazy_result run(int uffd);

 private:
  bool is_done(const space &s, uint64_t pg) const { return (s.done[pg >> 6] >> (pg & 63)) & 1; }
  void set_done(space &s, uint64_t pg) { s.done[pg >> 6] |= uint64_t{1} << (pg & 63); }
  void set_done_range(space &s, uint64_t first_pg, uint64_t npg) {
    for (uint64_t p = first_pg; p < first_pg + npg; ++p) set_done(s, p);
  }
  const piece *piece_at(uint64_t orig) const;
  bool to_orig(const space &s, uint64_t cur, uint64_t *orig) const;
  void mark_given_back(space &s, uint64_t lo, uint64_t hi, bool unmapped);
  void mark_orig_done(space &s, uint64_t olo, uint64_t ohi);
  std::vector<reloc> cut(space &s, uint64_t lo, uint64_t hi);
  bool load(uint64_t k);
  step copy_orig(space &s, uint64_t orig, const char *src, uint64_t len);
  step fill(space &s, uint64_t k);
  step fault(space &s, uint64_t addr);
  step zero_page(space &s, uint64_t page);
  void drain(size_t si);
  void wake(const space &s, uint64_t page);

  const cap::manifest_view &m_;
  const data_files &files_;
  data_layout layout_;  // piece::mem_off and the chunk numbers are its data offsets
  uint64_t sentinel_;
  uint64_t fill_rate_;                           // bytes per second of the background fill, 0: no limit
  uint64_t filled_bytes_ = 0;                    // by the background fill
  std::vector<piece> pieces_;                    // by addr
  std::vector<std::pair<uint64_t, uint64_t>> wiped_;  // lazy regions wiped in a fork child
  std::vector<std::vector<uint32_t>> chunk_pieces_;  // per chunk of mem: the pieces in it
  std::vector<const cap::chunk *> chunk_of_;
  std::vector<uint8_t> verified_;
  std::vector<uint64_t> work_;                   // chunks with lazy bytes, in mem order
  std::vector<char> buf_;
  uint64_t loaded_ = ~uint64_t{0};
  std::deque<std::unique_ptr<space>> spaces_;
  std::deque<std::pair<size_t, uint64_t>> faults_;  // (space, address) not served yet
  lazy_result res_;
};

const piece *server::piece_at(uint64_t orig) const {
  auto it = std::upper_bound(pieces_.begin(), pieces_.end(), orig,
                             [](uint64_t a, const piece &p) { return a < p.addr; });
  if (it == pieces_.begin()) return nullptr;
  --it;
  return orig < it->addr + it->len ? &*it : nullptr;
}

bool server::to_orig(const space &s, uint64_t cur, uint64_t *orig) const {
  for (const reloc &r : s.relocs)
    if (cur >= r.cur_lo && cur < r.cur_hi) {
      *orig = r.orig_lo + (cur - r.cur_lo);
      return true;
    }
  return false;
}

// Removes [lo, hi) from the relocations and returns what it covered.
std::vector<reloc> server::cut(space &s, uint64_t lo, uint64_t hi) {
  std::vector<reloc> kept, taken;
  for (const reloc &r : s.relocs) {
    if (r.cur_hi <= lo || r.cur_lo >= hi) {
      kept.push_back(r);
      continue;
    }
    if (r.cur_lo < lo) kept.push_back({r.cur_lo, lo, r.orig_lo});
    if (r.cur_hi > hi) kept.push_back({hi, r.cur_hi, r.orig_lo + (hi - r.cur_lo)});
    const uint64_t a = std::max(lo, r.cur_lo), b = std::min(hi, r.cur_hi);
    taken.push_back({a, b, r.orig_lo + (a - r.cur_lo)});
  }
  s.relocs = std::move(kept);
  return taken;
}

// The program gave [lo, hi) back (MADV_DONTNEED, MADV_REMOVE) or unmapped
// it: nothing of the capsule's may appear there any more.
void server::mark_given_back(space &s, uint64_t lo, uint64_t hi, bool unmapped) {
  lo &= ~(kPg - 1);
  hi = (hi + kPg - 1) & ~(kPg - 1);
  std::vector<reloc> parts;
  if (unmapped) {
    parts = cut(s, lo, hi);
  } else {
    for (const reloc &r : s.relocs) {
      const uint64_t a = std::max(lo, r.cur_lo), b = std::min(hi, r.cur_hi);
      if (a < b) parts.push_back({a, b, r.orig_lo + (a - r.cur_lo)});
    }
  }
  for (const reloc &part : parts) mark_orig_done(s, part.orig_lo, part.orig_lo + (part.cur_hi - part.cur_lo));
}

// Nothing of the capsule's [olo, ohi) (its addresses) is to be copied
// into s any more.
void server::mark_orig_done(space &s, uint64_t olo, uint64_t ohi) {
  auto it = std::upper_bound(pieces_.begin(), pieces_.end(), olo,
                             [](uint64_t a, const piece &p) { return a < p.addr; });
  if (it != pieces_.begin()) --it;
  for (; it != pieces_.end() && it->addr < ohi; ++it) {
    const uint64_t a = std::max(olo, it->addr), b = std::min(ohi, it->addr + it->len);
    if (a < b) set_done_range(s, (it->mem_off + (a - it->addr)) / kPg, (b - a) / kPg);
  }
}

bool server::load(uint64_t k) {
  if (loaded_ == k) return true;
  const cap::chunk *c = chunk_of_[k];
  if (!c) {
    res_.error = strf("mem has no checksum for its bytes at offset %llu",
                      static_cast<unsigned long long>(k * cap::kChunkBytes));
    return false;
  }
  const std::string what = c->file == cap::kNoFile ? "mem" : cap::string_at(m_, m_.files[c->file].path);
  for (uint64_t got = 0; got < c->length;) {
    const ssize_t n =
        pread(files_.fd(c->file), buf_.data() + got, c->length - got, static_cast<off_t>(c->offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      res_.error = n < 0 ? strf("cannot read %s: %s", what.c_str(), strerror(errno))
                         : strf("%s is damaged: it ends inside the chunk at offset %llu", what.c_str(),
                                static_cast<unsigned long long>(c->offset));
      return false;
    }
    got += static_cast<uint64_t>(n);
  }
  if (!verified_[k]) {
    const uint32_t crc = detail::crc32c(0, buf_.data(), c->length);
    if (crc != c->crc) {
      res_.error = strf("%s is damaged: the chunk at offset %llu has CRC32C %08x, the manifest says %08x",
                        what.c_str(), static_cast<unsigned long long>(c->offset), crc, c->crc);
      return false;
    }
    verified_[k] = 1;
  }
  loaded_ = k;
  return true;
}

// Copies len bytes at src to where the capsule's orig is now in s, page by
// page skipping what is done, marking what it copies done.
step server::copy_orig(space &s, uint64_t orig, const char *src, uint64_t len) {
  const piece *p = piece_at(orig);
  if (!p) return step::ok;
  const uint64_t first_pg = (p->mem_off + (orig - p->addr)) / kPg;
  // Where orig's pages are now: parts not in any relocation were unmapped.
  std::vector<reloc> parts;
  for (const reloc &r : s.relocs) {
    const uint64_t rhi = r.orig_lo + (r.cur_hi - r.cur_lo);
    const uint64_t a = std::max(orig, r.orig_lo), b = std::min(orig + len, rhi);
    if (a < b) parts.push_back({r.cur_lo + (a - r.orig_lo), r.cur_lo + (b - r.orig_lo), a});
  }
  for (const reloc &part : parts) {
    uint64_t off = part.orig_lo - orig;
    const uint64_t end = off + (part.cur_hi - part.cur_lo);
    while (off < end) {
      // The next stretch of pages not done.
      while (off < end && is_done(s, first_pg + off / kPg)) off += kPg;
      uint64_t stop = off;
      while (stop < end && !is_done(s, first_pg + stop / kPg)) stop += kPg;
      uint64_t most = ~uint64_t{0};  // one page at a time once a range spanned a VMA boundary
      while (off < stop) {
        uffdio_copy c = {};
        c.dst = part.cur_lo + (off - (part.orig_lo - orig));
        c.src = reinterpret_cast<uint64_t>(src + off);
        c.len = std::min(stop - off, most);
        const int r = ioctl(s.uffd, UFFDIO_COPY, &c);
        if (r == 0) {
          set_done_range(s, first_pg + off / kPg, (stop - off) / kPg);
          res_.bytes += stop - off;
          off = stop;
          break;
        }
        const int e = errno;
        if (c.copy > 0) {
          set_done_range(s, first_pg + off / kPg, static_cast<uint64_t>(c.copy) / kPg);
          res_.bytes += static_cast<uint64_t>(c.copy);
          off += static_cast<uint64_t>(c.copy);
          continue;
        }
        if (e == EINTR) continue;
        if (e == EAGAIN) return step::retry;  // an event is to be read first
        if (e == ESRCH) {
          s.gone = true;
          return step::gone;
        }
        if (e == EEXIST) {  // there already (a fault raced the copy): done
          set_done(s, first_pg + off / kPg);
          off += kPg;
          continue;
        }
        // ENOENT, EFAULT: a range must lie in one VMA (mprotect, madvise
        // or mlock may have split the region): page by page; a single
        // page so refused is no longer registered memory of this process.
        if (c.len > kPg) {
          most = kPg;
          continue;
        }
        set_done(s, first_pg + off / kPg);
        off += kPg;
      }
    }
  }
  return step::ok;
}

step server::fill(space &s, uint64_t k) {
  if (s.filled[k]) return step::ok;
  if (!load(k)) return step::gone;
  const uint64_t base = k * cap::kChunkBytes;
  for (uint32_t pi : chunk_pieces_[k]) {
    const piece &p = pieces_[pi];
    const uint64_t lo = std::max(p.mem_off, base), hi = std::min(p.mem_off + p.len, base + cap::kChunkBytes);
    const step r = copy_orig(s, p.addr + (lo - p.mem_off), buf_.data() + (lo - base), hi - lo);
    if (r != step::ok) return r;
  }
  s.filled[k] = 1;
  return step::ok;
}

void server::wake(const space &s, uint64_t page) {
  uffdio_range w = {page, kPg};
  ioctl(s.uffd, UFFDIO_WAKE, &w);
}

step server::zero_page(space &s, uint64_t page) {
  for (;;) {
    uffdio_zeropage z = {};
    z.range.start = page;
    z.range.len = kPg;
    if (ioctl(s.uffd, UFFDIO_ZEROPAGE, &z) == 0) {
      ++res_.zero_pages;
      return step::ok;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return step::retry;
    if (errno == ESRCH) {
      s.gone = true;
      return step::gone;
    }
    wake(s, page);  // EEXIST: already there; ENOENT: not ours any more (the fault is retried)
    return step::ok;
  }
}

step server::fault(space &s, uint64_t addr) {
  const uint64_t page = addr & ~(kPg - 1);
  // The sentinel is copied in last, which wakes whoever touched it: a zero
  // page now would tell the library the fill has ended.
  if (sentinel_ && page == sentinel_) return step::ok;
  uint64_t orig = 0;
  const piece *p = to_orig(s, page, &orig) ? piece_at(orig) : nullptr;
  if (!p || is_done(s, (p->mem_off + (orig - p->addr)) / kPg)) return zero_page(s, page);
  ++res_.faults;
  const step r = fill(s, (p->mem_off + (orig - p->addr)) / cap::kChunkBytes);
  if (r == step::ok) wake(s, page);
  return r;
}

// Reads what the kernel has for space si: events are applied at once,
// faults queued.
void server::drain(size_t si) {
  uffd_msg msgs[32];
  for (;;) {
    space &s = *spaces_[si];
    const ssize_t n = read(s.uffd, msgs, sizeof msgs);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    for (size_t i = 0; i < static_cast<size_t>(n) / sizeof *msgs; ++i) {
      const uffd_msg &msg = msgs[i];
      space &cur = *spaces_[si];
      switch (msg.event) {
        case UFFD_EVENT_PAGEFAULT:
          faults_.emplace_back(si, msg.arg.pagefault.address);
          break;
        case UFFD_EVENT_FORK: {
          // The child has what the parent had at the fork: the same done
          // pages, the same relocations; but memory the program asked to
          // be wiped in a fork child (MADV_WIPEONFORK, as the capsule
          // recorded it) is the kernel's zero pages there.
          auto child = std::make_unique<space>(cur);
          child->uffd = static_cast<int>(msg.arg.fork.ufd);
          for (const auto &[lo, hi] : wiped_) mark_orig_done(*child, lo, hi);
          spaces_.push_back(std::move(child));
          ++res_.forks;
          break;
        }
        case UFFD_EVENT_REMAP: {
          const uint64_t from = msg.arg.remap.from, to = msg.arg.remap.to, len = msg.arg.remap.len;
          for (const reloc &part : cut(cur, from, from + len))
            cur.relocs.push_back({part.cur_lo - from + to, part.cur_hi - from + to, part.orig_lo});
          break;
        }
        case UFFD_EVENT_REMOVE:
          mark_given_back(cur, msg.arg.remove.start, msg.arg.remove.end, false);
          break;
        case UFFD_EVENT_UNMAP:
          mark_given_back(cur, msg.arg.remove.start, msg.arg.remove.end, true);
          break;
        default:
          break;
      }
    }
  }
}

lazy_result server::run(int uffd) {
  const double t0 = now_s();
  const uint64_t page_size = m_.hdr->page_size;
  auto first = std::make_unique<space>();
  first->uffd = uffd;
  uint64_t mem_end = 0;
  for (uint64_t i = 0; i < m_.nregions; ++i) {
    const cap::region &g = m_.regions[i];
    if (!lazy_region(m_, g)) continue;
    first->relocs.push_back({g.start, g.end, g.start});
    if (g.madv & cap::kMadvWipeOnFork) wiped_.emplace_back(g.start, g.end);
    for (uint64_t k = 0; k < g.nruns; ++k) {
      const cap::run &r = m_.runs[g.first_run + k];
      if (r.source != static_cast<uint32_t>(cap::run_source::mem) &&
          r.source != static_cast<uint32_t>(cap::run_source::base))
        continue;
      const uint64_t at = layout_.of_run(r);
      if (at == data_layout::kNone) {
        res_.error = "the manifest refers to data in a file that is not an earlier capsule's mem";
        return res_;
      }
      const uint64_t addr = g.start + r.page * page_size, len = r.npages * page_size;
      if (!pieces_.empty() && pieces_.back().addr + pieces_.back().len == addr &&
          pieces_.back().mem_off + pieces_.back().len == at)
        pieces_.back().len += len;
      else
        pieces_.push_back({addr, len, at});
      mem_end = std::max(mem_end, at + len);
    }
  }
  mem_end = std::max(mem_end, layout_.end);
  const uint64_t nchunks = (mem_end + cap::kChunkBytes - 1) / cap::kChunkBytes;
  chunk_of_.assign(nchunks, nullptr);
  verified_.assign(nchunks, 0);
  chunk_pieces_.resize(nchunks);
  for (uint64_t i = 0; i < m_.nchunks; ++i) {
    const cap::chunk &c = m_.chunks[i];
    const uint64_t at = layout_.of_chunk(c);
    if (at != data_layout::kNone && at % cap::kChunkBytes == 0 && c.length <= cap::kChunkBytes &&
        at / cap::kChunkBytes < nchunks)
      chunk_of_[at / cap::kChunkBytes] = &c;
  }
  for (uint32_t i = 0; i < pieces_.size(); ++i)
    for (uint64_t k = pieces_[i].mem_off / cap::kChunkBytes;
         k <= (pieces_[i].mem_off + pieces_[i].len - 1) / cap::kChunkBytes; ++k)
      chunk_pieces_[k].push_back(i);
  for (uint64_t k = 0; k < nchunks; ++k)
    if (!chunk_pieces_[k].empty()) work_.push_back(k);
  first->done.assign((mem_end / kPg + 64) / 64, 0);
  first->filled.assign(nchunks, 0);
  buf_.resize(cap::kChunkBytes);
  spaces_.push_back(std::move(first));

  size_t turn = 0;
  for (;;) {
    // Every event and fault the kernel has, then the faults, then one
    // chunk of the fill.
    std::vector<pollfd> pfd;
    std::vector<size_t> which;
    for (size_t i = 0; i < spaces_.size(); ++i)
      if (!spaces_[i]->gone) {
        pfd.push_back({spaces_[i]->uffd, POLLIN, 0});
        which.push_back(i);
      }
    if (pfd.empty()) {
      res_.processes_gone = true;
      break;
    }
    bool work_left = false;
    for (size_t i : which) {
      space &s = *spaces_[i];
      while (s.next < work_.size() && s.filled[work_[s.next]]) ++s.next;
      work_left |= s.next < work_.size();
    }
    if (!work_left && faults_.empty()) break;
    // Ahead of the fill rate: wait for faults only, until the fill may go on.
    int wait_ms = 0;
    if (fill_rate_ && faults_.empty()) {
      const double ahead = static_cast<double>(filled_bytes_) / static_cast<double>(fill_rate_) - (now_s() - t0);
      if (ahead > 0) wait_ms = std::max(1, std::min(100, static_cast<int>(ahead * 1000)));
    }
    if (poll(pfd.data(), pfd.size(), wait_ms) > 0)
      for (size_t j = 0; j < pfd.size(); ++j)
        if (pfd[j].revents & POLLIN) drain(which[j]);
    bool stuck = false;
    for (size_t budget = faults_.size(); budget && !faults_.empty(); --budget) {
      const auto [si, addr] = faults_.front();
      faults_.pop_front();
      space &s = *spaces_[si];
      if (s.gone) continue;
      const step r = fault(s, addr);
      if (!res_.error.empty()) break;
      if (r == step::retry) {  // an event first: read it, then this fault again
        faults_.emplace_back(si, addr);
        drain(si);
        stuck = true;
      }
    }
    if (!res_.error.empty()) break;
    if (stuck || wait_ms) continue;
    // The fill: the spaces take turns, a chunk each.
    for (size_t tries = 0; tries < spaces_.size(); ++tries) {
      const size_t si = turn++ % spaces_.size();
      space &s = *spaces_[si];
      if (s.gone || s.next >= work_.size()) continue;
      const uint64_t before = res_.bytes;
      if (fill(s, work_[s.next]) == step::retry) drain(si);
      filled_bytes_ += res_.bytes - before;
      break;
    }
    if (!res_.error.empty()) break;
  }
  // Done (or nobody left).  In every process: the sentinel in, so that
  // the library knows (restore_note.h), then everything unregistered; a
  // fork before that gave a new space, which gets the same; after it, a
  // fork makes no userfaultfd.  Then the descriptors go.
  std::vector<uint8_t> finished;
  if (!res_.error.empty()) {
    // Nothing may run on with a page the fill did not give it (closing
    // the userfaultfds would make those zero).
    kill_restored();
    finished.assign(spaces_.size(), 1);
  }
  for (bool more = res_.error.empty(); more;) {
    more = false;
    for (size_t i = 0; i < spaces_.size(); ++i) drain(i);
    finished.resize(spaces_.size(), 0);
    for (size_t i = 0; i < spaces_.size(); ++i) {
      space &sp = *spaces_[i];
      if (finished[i] || sp.gone) continue;
      finished[i] = 1;
      more = true;
      if (sentinel_ && res_.error.empty()) {
        static const char page[kPg] = {'d'};
        for (;;) {
          uffdio_copy c = {};
          c.dst = sentinel_;
          c.src = reinterpret_cast<uint64_t>(page);
          c.len = kPg;
          if (ioctl(sp.uffd, UFFDIO_COPY, &c) == 0 || (errno != EAGAIN && errno != EINTR)) break;
          drain(i);
        }
      }
      for (const reloc &r : sp.relocs) {
        uffdio_range u = {r.cur_lo, r.cur_hi - r.cur_lo};
        ioctl(sp.uffd, UFFDIO_UNREGISTER, &u);
      }
      if (sentinel_) {
        uffdio_range u = {sentinel_, kPg};
        ioctl(sp.uffd, UFFDIO_UNREGISTER, &u);
      }
    }
  }
  for (auto &sp : spaces_) close(sp->uffd);
  res_.seconds = now_s() - t0;
  return res_;
}

}  // namespace

bool lazy_region(const cap::manifest_view &m, const cap::region &g) {
  const cap::run *runs = m.runs;
  const auto kind = static_cast<cap::region_kind>(g.kind);
  if (kind != cap::region_kind::unit && kind != cap::region_kind::anon && kind != cap::region_kind::brk &&
      kind != cap::region_kind::reserve)
    return false;
  if ((g.prot & (PROT_READ | PROT_WRITE)) != (PROT_READ | PROT_WRITE) || g.end - g.start < kLazyMinBytes)
    return false;
  // Locked memory is populated (with zero pages) as the restorer maps it,
  // before any fill could reach it: restored eagerly.
  if (g.madv & cap::kMadvLocked) return false;
  // A unit mapped on a linked PMem file (ZeroIO) is the file's already:
  // its few copies are restored eagerly.
  if (g.file < m.nfiles && m.files[g.file].identity == static_cast<uint32_t>(cap::file_identity::capsule)) return false;
  for (uint64_t k = 0; k < g.nruns; ++k)
    if (runs[g.first_run + k].source == static_cast<uint32_t>(cap::run_source::mem) ||
        runs[g.first_run + k].source == static_cast<uint32_t>(cap::run_source::base))
      return true;
  return false;
}

std::string lazy_unavailable() {
  const int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd < 0)
    return strf("the kernel gives this user no userfaultfd that takes faults in system calls (%s; "
                "vm.unprivileged_userfaultfd is %s)",
                strerror(errno), read_text("/proc/sys/vm/unprivileged_userfaultfd").c_str());
  uffdio_api api = {};
  api.api = UFFD_API;
  api.features = kEvents;
  const int r = ioctl(fd, UFFDIO_API, &api);
  const int e = errno;
  close(fd);
  if (r != 0)
    return strf("the kernel gives this user no fork, mremap and munmap events on a userfaultfd (%s: they need "
                "CAP_SYS_PTRACE)",
                strerror(e));
  return "";
}

std::vector<uint8_t> eager_chunks(const cap::manifest_view &m) {
  const data_layout l = layout_of(m);
  std::vector<uint8_t> out;
  for (uint64_t i = 0; i < m.nregions; ++i) {
    const cap::region &g = m.regions[i];
    if (lazy_region(m, g)) continue;
    for (uint64_t k = 0; k < g.nruns; ++k) {
      const cap::run &r = m.runs[g.first_run + k];
      if (r.source != static_cast<uint32_t>(cap::run_source::mem) &&
          r.source != static_cast<uint32_t>(cap::run_source::base))
        continue;
      const uint64_t at = l.of_run(r);
      if (at == data_layout::kNone) continue;  // refused by the restore's checks
      const uint64_t len = r.npages * m.hdr->page_size;
      const uint64_t last = (at + len - 1) / cap::kChunkBytes;
      if (out.size() <= last) out.resize(last + 1, 0);
      for (uint64_t c = at / cap::kChunkBytes; c <= last; ++c) out[c] = 1;
    }
  }
  return out;
}

lazy_result lazy_serve(const cap::manifest_view &m, const data_files &files, int uffd, uint64_t sentinel,
                       uint64_t fill_rate) {
  server s(m, files, sentinel, fill_rate);
  return s.run(uffd);
}

}  // namespace mmtier::cli
