// Unit tests of the mmtier command's parts that need no process under
// libmmtier: the statistics reader against pages this test publishes itself
// (live vs stale files, the sequence lock, validation, refresh requests),
// the escaping of the output formats, top's rows and bars, the SVG writer,
// and the parsing helpers.
#include "cli.h"
#include "format.h"
#include "plot.h"
#include "stats_reader.h"
#include "top.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace {

using namespace mmtier::cli;

// A temporary directory, removed with its files.
class temp_dir {
 public:
  temp_dir() {
    char tmpl[] = "/tmp/mmtier-cli-test-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~temp_dir() {
    std::string cmd = "rm -rf '" + path_ + "'";
    [[maybe_unused]] int r = system(cmd.c_str());
  }
  const std::string &path() const { return path_; }
  std::string file(int pid) const { return path_ + "/" + std::to_string(pid) + ".stats"; }

 private:
  std::string path_;
};

// Publishes a page as a process under libmmtier does: a process (a child
// forked here, whose pid names the file) maps <dir>/<pid>.stats for as long
// as this object lives, and keeps no descriptor.  This test writes the page
// through a mapping of its own.  page_pid: the pid the page says (the
// writer's by default); live = false: the writer process exits at once,
// leaving the file behind as a killed process would.
class fake_writer {
 public:
  explicit fake_writer(const std::string &dir, bool live = true, int page_pid = 0) {
    int go[2];
    EXPECT_EQ(pipe(go), 0);
    const std::string tmp = dir + "/.fake.tmp";
    const int fd = open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(ftruncate(fd, 4096), 0);
    int ready[2];
    EXPECT_EQ(pipe(ready), 0);
    pid_ = fork();
    if (pid_ == 0) {
      void *m = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      close(fd);
      if (m == MAP_FAILED) _exit(1);
      if (!live) munmap(m, 4096);
      char c = 'r';
      if (::write(ready[1], &c, 1) != 1) _exit(2);
      if (!live) _exit(0);
      close(go[1]);
      while (read(go[0], &c, 1) > 0) {
      }
      _exit(0);
    }
    close(go[0]);
    go_ = go[1];
    close(ready[1]);
    char c = 0;
    EXPECT_EQ(read(ready[0], &c, 1), 1);
    close(ready[0]);
    if (!live) waitid(P_PID, static_cast<id_t>(pid_), nullptr, WEXITED | WNOWAIT);  // gone, pid not reused
    path_ = dir + "/" + std::to_string(pid_) + ".stats";
    page_ = static_cast<pub::stats_page *>(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    close(fd);
    EXPECT_NE(page_, MAP_FAILED);
    memset(page_, 0, sizeof *page_);
    page_->magic = pub::kMagic;
    page_->version = pub::kVersion;
    page_->size = sizeof *page_;
    page_->pid = page_pid ? page_pid : pid_;
    page_->unit_size = 2 << 20;
    strcpy(page_->comm, "writer");
    strcpy(page_->pmem_path, "/dev/shm");
    for (auto &t : page_->tiers) t.resident_bytes = t.limit_bytes = pub::kNone;
    page_->dram_budget_bytes = pub::kNone;
    EXPECT_EQ(rename(tmp.c_str(), path_.c_str()), 0);
  }
  ~fake_writer() { stop(); }
  // The writer process exits (as at the end of a program, without removing
  // its file).
  void stop() {
    if (page_) munmap(page_, 4096);
    page_ = nullptr;
    if (go_ >= 0) close(go_);
    go_ = -1;
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
    pid_ = -pid_;
  }
  int pid() const { return pid_ > 0 ? pid_ : -pid_; }
  const std::string &path() const { return path_; }
  pub::stats_page *page() { return page_; }
  // One write under the sequence lock.
  template <typename F>
  void write(F f) {
    __atomic_store_n(&page_->seq, page_->seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    f(page_);
    __atomic_store_n(&page_->seq, page_->seq + 1, __ATOMIC_RELEASE);
  }

 private:
  std::string path_;
  pid_t pid_ = 0;
  int go_ = -1;
  pub::stats_page *page_ = nullptr;
};

bool exists(const std::string &path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

TEST(StatsReader, ReadsALivePage) {
  temp_dir dir;
  fake_writer w(dir.path());
  const int pid = w.pid();
  w.write([](pub::stats_page *p) {
    p->tiers[0].placed_bytes = 6 << 20;
    p->tiers[1].resident_bytes = 12345;
    p->promotions = 7;
    p->heat_histogram[3] = 9;
  });
  open_result r = open_stats_file(dir.path(), pid);
  ASSERT_EQ(r.status, open_status::ok) << open_status_name(r.status);
  EXPECT_TRUE(r.source.alive());
  snapshot s;
  ASSERT_EQ(r.source.read(&s), stats_source::read_status::ok);
  EXPECT_EQ(s.page.pid, pid);
  EXPECT_EQ(s.comm, "writer");
  EXPECT_EQ(s.page.tiers[0].placed_bytes, 6u << 20);
  EXPECT_EQ(s.page.tiers[0].resident_bytes, pub::kNone);
  EXPECT_EQ(s.page.tiers[1].resident_bytes, 12345u);
  EXPECT_EQ(s.page.promotions, 7u);
  EXPECT_EQ(s.page.heat_histogram[3], 9u);
  // Unknown resident bytes fall back to placed ones for display.
  EXPECT_EQ(s.dram_bytes(), 6u << 20);
  EXPECT_EQ(s.pmem_bytes(), 12345u);
  EXPECT_FALSE(s.resident_known());
  // A later write is seen through the same mapping.
  w.write([](pub::stats_page *p) { p->promotions = 8; });
  ASSERT_EQ(r.source.read(&s), stats_source::read_status::ok);
  EXPECT_EQ(s.page.promotions, 8u);
}

TEST(StatsReader, StaleFileIsIgnoredAndRemoved) {
  temp_dir dir;
  fake_writer w(dir.path(), /*live=*/false);
  const int pid = w.pid();
  ASSERT_TRUE(exists(dir.file(pid)));
  open_result r = open_stats_file(dir.path(), pid);
  EXPECT_EQ(r.status, open_status::stale);
  EXPECT_FALSE(exists(dir.file(pid)));
  EXPECT_EQ(open_stats_file(dir.path(), pid).status, open_status::missing);
}

TEST(StatsReader, AliveTurnsFalseWhenTheWriterGoes) {
  temp_dir dir;
  fake_writer w(dir.path());
  open_result r = open_stats_file(dir.path(), w.pid());
  ASSERT_EQ(r.status, open_status::ok);
  EXPECT_TRUE(r.source.alive());
  w.stop();  // the process exits (its mapping goes with it)
  EXPECT_FALSE(r.source.alive());
}

TEST(StatsReader, RejectsAPageOfAnotherPidAFormatOrASymlink) {
  temp_dir dir;
  {
    fake_writer w(dir.path(), true, /*page_pid=*/1);  // the page says another pid
    EXPECT_EQ(open_stats_file(dir.path(), w.pid()).status, open_status::invalid);
  }
  {
    fake_writer w(dir.path());
    w.write([](pub::stats_page *p) { p->version = pub::kVersion + 1; });
    EXPECT_EQ(open_stats_file(dir.path(), w.pid()).status, open_status::invalid);
  }
  {
    fake_writer w(dir.path());
    w.write([](pub::stats_page *p) { p->magic = 0; });  // mapped but not written yet
    EXPECT_EQ(open_stats_file(dir.path(), w.pid()).status, open_status::not_ready);
  }
  {
    fake_writer w(dir.path());
    const int other = w.pid() + 100000;
    ASSERT_EQ(symlink(w.path().c_str(), dir.file(other).c_str()), 0);
    EXPECT_EQ(open_stats_file(dir.path(), other).status, open_status::invalid);
    EXPECT_TRUE(exists(w.path()));
  }
}

TEST(StatsReader, SnapshotsNeverMixTwoWrites) {
  temp_dir dir;
  fake_writer w(dir.path());
  open_result r = open_stats_file(dir.path(), w.pid());
  ASSERT_EQ(r.status, open_status::ok);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (uint64_t i = 1; !stop.load(std::memory_order_relaxed); ++i) {
      w.write([i](pub::stats_page *p) {
        // Every field of one write carries the same number.
        p->scans = i;
        for (auto &t : p->tiers) t.placed_bytes = t.peak_bytes = i;
        for (auto &h : p->heat_histogram) h = i;
        p->promotions = i;
      });
    }
  });
  uint64_t last = 0, ok = 0;
  const uint64_t deadline = monotonic_ns() + 3000000000ull;
  while (ok < 20000 && monotonic_ns() < deadline) {
    snapshot s;
    if (r.source.read(&s) != stats_source::read_status::ok) continue;  // writer busy every try
    const uint64_t i = s.page.scans;
    ASSERT_EQ(s.page.promotions, i);
    for (auto &t : s.page.tiers) {
      ASSERT_EQ(t.placed_bytes, i);
      ASSERT_EQ(t.peak_bytes, i);
    }
    for (auto h : s.page.heat_histogram) ASSERT_EQ(h, i);
    ASSERT_GE(i, last);
    last = i;
    ++ok;
  }
  stop = true;
  writer.join();
  EXPECT_GT(ok, 0u);
}

TEST(StatsReader, OpenAllListsLivePagesByPidAndCleansStaleOnes) {
  temp_dir dir;
  fake_writer a(dir.path()), b(dir.path());
  fake_writer dead(dir.path(), /*live=*/false);
  // Names that are not "<pid>.stats" are none of the reader's business.
  ASSERT_EQ(rename(dead.path().c_str(), (dir.path() + "/.400.new").c_str()), 0);
  fake_writer dead2(dir.path(), /*live=*/false);
  { std::ofstream(dir.path() + "/x1.stats") << "x"; }
  std::vector<stats_source> all = open_all({dir.path(), dir.path() + "/missing"});
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].pid(), std::min(a.pid(), b.pid()));
  EXPECT_EQ(all[1].pid(), std::max(a.pid(), b.pid()));
  EXPECT_FALSE(exists(dead2.path()));
  EXPECT_TRUE(exists(dir.path() + "/.400.new"));
  EXPECT_TRUE(exists(dir.path() + "/x1.stats"));
}

TEST(StatsReader, RefreshRequestsNeedAWritableOpen) {
  temp_dir dir;
  fake_writer w(dir.path());
  const int pid = w.pid();
  open_result ro = open_stats_file(dir.path(), pid);
  ASSERT_EQ(ro.status, open_status::ok);
  EXPECT_FALSE(ro.source.request_refresh());
  EXPECT_EQ(w.page()->refresh_requests, 0u);
  open_result rw = open_stats_file(dir.path(), pid, /*writable=*/true);
  ASSERT_EQ(rw.status, open_status::ok);
  EXPECT_TRUE(rw.source.request_refresh());
  EXPECT_TRUE(rw.source.request_refresh());
  EXPECT_EQ(__atomic_load_n(&w.page()->refresh_requests, __ATOMIC_RELAXED), 2u);
}

TEST(StatsReader, StatsDirectoryFollowsTheEnvironment) {
  unsetenv("MMTIER_STATS_DIR");
  stats_location loc = stats_location_from_env();
  EXPECT_FALSE(loc.off);
  EXPECT_FALSE(loc.overridden);
  if (geteuid() != 0) {
    EXPECT_EQ(stats_dirs_for_all(loc), std::vector<std::string>{default_stats_dir(geteuid())});
  } else {
    for (const std::string &d : stats_dirs_for_all(loc)) EXPECT_EQ(d.rfind("/dev/shm/mmtier-", 0), 0u) << d;
  }
  setenv("MMTIER_STATS_DIR", "off", 1);
  loc = stats_location_from_env();
  EXPECT_TRUE(loc.off);
  EXPECT_TRUE(stats_dirs_for_all(loc).empty());
  setenv("MMTIER_STATS_DIR", "/some/where", 1);
  loc = stats_location_from_env();
  EXPECT_TRUE(loc.overridden);
  EXPECT_EQ(stats_dirs_for_all(loc), std::vector<std::string>{"/some/where"});
  unsetenv("MMTIER_STATS_DIR");
  EXPECT_EQ(default_stats_dir(1000), "/dev/shm/mmtier-1000");
}

TEST(Format, EscapesJsonAndPrometheusText) {
  EXPECT_EQ(json_string("a\"b\\c\nd\x01"), "\"a\\\"b\\\\c\\nd\\u0001\"");
  EXPECT_EQ(prometheus_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  EXPECT_EQ(sanitize_text("ok\xff\xc3\xa9\n"), "ok?\xc3\xa9?");
  EXPECT_EQ(heat_bucket_label(0), "0.125");
  EXPECT_EQ(heat_bucket_label(7), "1");
}

snapshot sample_snapshot() {
  snapshot s{};
  memset(&s.page, 0, sizeof s.page);
  s.page.pid = 55;
  s.comm = "say \"hi\"";
  for (auto &t : s.page.tiers) t.resident_bytes = t.limit_bytes = pub::kNone;
  s.page.tiers[0].placed_bytes = 4 << 20;
  s.page.tiers[1].limit_bytes = 1 << 30;
  s.page.dram_budget_bytes = pub::kNone;
  s.page.promotions = 3;
  return s;
}

TEST(Format, UnknownAndUnlimitedFiguresAreNullOrAbsent) {
  snapshot s = sample_snapshot();
  std::string json = format_json(s);
  EXPECT_NE(json.find("\"dram\":{\"placed_bytes\":4194304,\"policy_placed_bytes\":0,\"peak_placed_bytes\":0,"
                      "\"resident_bytes\":null,\"limit_bytes\":null}"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"limit_bytes\":1073741824"), std::string::npos);
  EXPECT_NE(json.find("\"dram_budget_bytes\":null"), std::string::npos);
  EXPECT_NE(json.find("\"comm\":\"say \\\"hi\\\"\""), std::string::npos);
  std::string prom = format_prometheus({s});
  EXPECT_EQ(prom.find("mmtier_resident_bytes{"), std::string::npos);
  EXPECT_EQ(prom.find("mmtier_dram_budget_bytes"), std::string::npos);
  EXPECT_NE(prom.find("mmtier_limit_bytes{pid=\"55\",comm=\"say \\\"hi\\\"\",tier=\"pmem\"} 1073741824\n"),
            std::string::npos)
      << prom;
  EXPECT_EQ(prom.find("tier=\"dram\"} 18446744073709551615"), std::string::npos);
  EXPECT_EQ(format_prometheus({}), "");
  EXPECT_EQ(format_json_all({}), "{\"processes\":[]}");
  std::string table = format_table({s});
  EXPECT_NE(table.find("PID"), std::string::npos);
  EXPECT_NE(table.find("     55  "), std::string::npos);
}

TEST(Top, BarShowsTheDramShare) {
  EXPECT_EQ(render_bar(0, 0, 10), "..........");
  EXPECT_EQ(render_bar(1, 0, 10), "##########");
  EXPECT_EQ(render_bar(0, 1, 10), "----------");
  EXPECT_EQ(render_bar(1, 3, 8), "##------");
  // A tiny share still shows.
  EXPECT_EQ(render_bar(1, 1000000, 10), "#---------");
  EXPECT_EQ(render_bar(1000000, 1, 10), "#########-");
}

TEST(Top, RowsAreSortedByDramAndRatesComeFromTheLastRefresh) {
  std::vector<snapshot> snaps(3);
  int pids[3] = {10, 11, 12};
  uint64_t dram[3] = {5 << 20, 50 << 20, 20 << 20};
  for (int i = 0; i < 3; ++i) {
    memset(&snaps[i].page, 0, sizeof snaps[i].page);
    snaps[i].page.pid = pids[i];
    snaps[i].page.started_ns = 1000;
    snaps[i].page.tiers[0].resident_bytes = dram[i];
    snaps[i].page.tiers[1].resident_bytes = 1 << 20;
    snaps[i].page.promotions = 100;
    snaps[i].mono_ns = 3000000000ull;
  }
  snaps[0].page.tiers[0].resident_bytes = pub::kNone;  // placed bytes stand in
  snaps[0].page.tiers[0].placed_bytes = 30 << 20;
  std::map<int, top_prev> prev;
  prev[11] = top_prev{1000, 40, 1000000000ull};  // 60 promotions in 2 s
  prev[12] = top_prev{999, 0, 1000000000ull};    // another process with that pid
  std::vector<top_row> rows = top_rows(snaps, prev);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].pid, 11);
  EXPECT_EQ(rows[1].pid, 10);
  EXPECT_EQ(rows[2].pid, 12);
  EXPECT_DOUBLE_EQ(rows[0].promo_rate, 30.0);
  EXPECT_LT(rows[1].promo_rate, 0);
  EXPECT_LT(rows[2].promo_rate, 0);
  for (int cols : {40, 80, 132}) {
    std::string frame = render_top(rows, cols, 0, 1.0, 0);
    size_t start = 0, lines = 0;
    while (start < frame.size()) {
      size_t nl = frame.find('\n', start);
      EXPECT_LE(nl - start, static_cast<size_t>(cols));
      start = nl + 1;
      ++lines;
    }
    EXPECT_EQ(lines, 3u + rows.size());
  }
  // Too many rows for the screen: the rest is summarised.
  std::string frame = render_top(rows, 80, 5, 1.0, 0);
  EXPECT_NE(frame.find("... and 2 more"), std::string::npos) << frame;
}

TEST(Plot, SvgHasTheThreeSeries) {
  plot_data d;
  d.pid = 9;
  d.comm = "a<b&c";
  d.interval_s = 0.5;
  for (int i = 0; i < 5; ++i) {
    plot_sample p;
    p.t = i * 0.5;
    p.dram = static_cast<uint64_t>(i) << 20;
    p.pmem = 10u << 20;
    p.resident = true;
    p.promotions = static_cast<uint64_t>(i * i);
    d.samples.push_back(p);
  }
  std::vector<double> rates = promotion_rates(d.samples);
  ASSERT_EQ(rates.size(), 4u);
  EXPECT_DOUBLE_EQ(rates[0], 2.0);  // 1 promotion in 0.5 s
  EXPECT_DOUBLE_EQ(rates[3], 14.0);
  std::string svg = render_svg(d);
  EXPECT_NE(svg.find("id=\"series-dram-resident\""), std::string::npos);
  EXPECT_NE(svg.find("id=\"series-pmem-resident\""), std::string::npos);
  EXPECT_NE(svg.find("id=\"series-promotions\""), std::string::npos);
  EXPECT_NE(svg.find("data-points=\"5\""), std::string::npos);
  EXPECT_NE(svg.find("data-points=\"4\""), std::string::npos);
  EXPECT_NE(svg.find("a&lt;b&amp;c"), std::string::npos);
  EXPECT_EQ(svg.find("a<b"), std::string::npos);
}

TEST(Util, ParsesDurationsPidsAndFormatsSizes) {
  double s = 0;
  EXPECT_TRUE(parse_duration_seconds("500ms", &s));
  EXPECT_DOUBLE_EQ(s, 0.5);
  EXPECT_TRUE(parse_duration_seconds("1.5", &s));
  EXPECT_DOUBLE_EQ(s, 1.5);
  EXPECT_TRUE(parse_duration_seconds("2s", &s));
  EXPECT_DOUBLE_EQ(s, 2.0);
  EXPECT_TRUE(parse_duration_seconds("250us", &s));
  EXPECT_DOUBLE_EQ(s, 0.00025);
  for (const char *bad : {"", "ms", "-1s", "1.2.3", "5h", "1 s", "."}) EXPECT_FALSE(parse_duration_seconds(bad, &s)) << bad;
  int pid = 0;
  EXPECT_TRUE(parse_pid("4242", &pid));
  EXPECT_EQ(pid, 4242);
  for (const char *bad : {"0", "-1", "12a", "", "99999999999"}) EXPECT_FALSE(parse_pid(bad, &pid)) << bad;
  EXPECT_EQ(human_bytes(512), "512 B");
  EXPECT_EQ(human_bytes(48u << 20), "48.0 MiB");
  EXPECT_EQ(human_bytes(3ull << 30), "3.00 GiB");
  EXPECT_EQ(short_bytes(0), "0");
  EXPECT_EQ(short_bytes(256u << 10), "256K");
  EXPECT_EQ(short_bytes(48u << 20), "48.0M");
}

}  // namespace
