// `mmtier stat PID` and `mmtier stat --all`: one snapshot of the published
// statistics as a readable view or table, JSON, or the Prometheus text
// format, to stdout or atomically to a file (for a textfile collector).
#include "cli.h"
#include "format.h"
#include "stats_reader.h"

#include <algorithm>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <thread>

namespace mmtier::cli {

namespace {

// A snapshot of each live source; one whose writer stays mid-update for a
// moment (a stopped process) is left out.
std::vector<snapshot> snapshots_of(const std::vector<stats_source> &sources) {
  std::vector<snapshot> out;
  for (const stats_source &src : sources) {
    snapshot s;
    for (int attempt = 0; attempt < 20; ++attempt) {
      stats_source::read_status r = src.read(&s);
      if (r == stats_source::read_status::ok) {
        out.push_back(std::move(s));
        break;
      }
      if (r == stats_source::read_status::foreign) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  return out;
}

// Resident figures older than this are measured again before they are
// shown, where the process can: its mover answers a reader's request at its
// next scan (live_format.h, "Freshness").  A process without a mover keeps
// what it last measured; the age is shown with it.
constexpr uint64_t kStaleResidentNs = 2'000'000'000ull;

void refresh_stale(const std::vector<stats_source> &sources, std::vector<snapshot> *snaps) {
  std::vector<size_t> asked;
  uint64_t wait_ns = 0;
  for (size_t i = 0; i < snaps->size(); ++i) {
    const pub::stats_page &p = (*snaps)[i].page;
    const uint64_t now = (*snaps)[i].real_ns;
    if (!p.mover_running || (p.resident_ns && now - p.resident_ns < kStaleResidentNs)) continue;
    for (const stats_source &src : sources)
      if (src.pid() == p.pid && src.request_refresh()) {
        asked.push_back(i);
        // A scan is at most four intervals apart (the quiet back-off).
        wait_ns = std::max<uint64_t>(wait_ns, 4 * p.scan_interval_ns + 200'000'000ull);
      }
  }
  if (asked.empty()) return;
  wait_ns = std::min<uint64_t>(wait_ns, 2'500'000'000ull);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(wait_ns);
  while (!asked.empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    for (size_t k = 0; k < asked.size();) {
      snapshot &old = (*snaps)[asked[k]];
      snapshot fresh;
      bool done = false;
      for (const stats_source &src : sources)
        if (src.pid() == old.page.pid && src.read(&fresh) == stats_source::read_status::ok &&
            fresh.page.resident_ns != old.page.resident_ns) {
          old = std::move(fresh);
          done = true;
        }
      if (done) asked.erase(asked.begin() + static_cast<long>(k));
      else ++k;
    }
  }
}

}  // namespace

int stat_main(const args &a) {
  const std::string cmd = "stat";
  enum { table, json, prometheus } format = table;
  bool all = false, format_set = false;
  int pid = 0;
  std::string output;
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string &arg = a[i];
    std::string v;
    auto set_format = [&](decltype(format) f) {
      if (format_set && format != f) throw usage_error(cmd, "--json and --prometheus cannot be used together");
      format = f;
      format_set = true;
    };
    if (arg == "-h" || arg == "--help") {
      std::cout << help_text("stat");
      return 0;
    } else if (arg == "--all" || arg == "-a") {
      all = true;
    } else if (arg == "--json") {
      set_format(json);
    } else if (arg == "--prometheus") {
      set_format(prometheus);
    } else if (take_option(cmd, a, &i, "--output", &v) || take_option(cmd, a, &i, "-o", &v)) {
      if (v.empty()) throw usage_error(cmd, "empty output file name");
      output = v;
    } else if (!arg.empty() && arg[0] == '-') {
      throw usage_error(cmd, strf("unknown option %s", arg.c_str()));
    } else if (pid == 0) {
      if (!parse_pid(arg, &pid)) throw usage_error(cmd, strf("invalid pid \"%s\"", arg.c_str()));
    } else {
      throw usage_error(cmd, strf("unexpected argument %s", arg.c_str()));
    }
  }
  if (all && pid != 0) throw usage_error(cmd, "give either a PID or --all, not both");
  if (!all && pid == 0) throw usage_error(cmd, "no PID given (or --all for every process)");

  std::vector<snapshot> snaps;
  if (all) {
    stats_location loc = stats_location_from_env();
    if (loc.off) fprintf(stderr, "mmtier: MMTIER_STATS_DIR=off: no process publishes statistics\n");
    std::vector<stats_source> sources = open_all(stats_dirs_for_all(loc), true);
    snaps = snapshots_of(sources);
    refresh_stale(sources, &snaps);
  } else {
    std::vector<stats_source> sources;
    sources.push_back(open_process(pid, true));
    snaps.push_back(read_or_fail(sources[0]));
    refresh_stale(sources, &snaps);
  }

  std::string text;
  switch (format) {
    case table:
      text = all ? format_table(snaps) : format_detail(snaps[0]);
      break;
    case json:
      text = (all ? format_json_all(snaps) : format_json(snaps[0])) + "\n";
      break;
    case prometheus:
      text = format_prometheus(snaps);
      break;
  }
  if (!output.empty()) {
    write_file_atomically(output, text);
  } else {
    fwrite(text.data(), 1, text.size(), stdout);
    if (fflush(stdout) != 0) throw failure(strf("writing the output: %s", strerror(errno)));
  }
  return 0;
}

}  // namespace mmtier::cli
