// `mmtier top`: a live full-screen view of every process under libmmtier,
// sorted by DRAM use, with a bar per process (DRAM against PMem) and the
// promotion rate computed from consecutive snapshots.  The terminal is put
// in the alternate screen and raw mode and restored on exit, on q, and on
// SIGINT/SIGTERM/SIGHUP; Ctrl-Z restores it before stopping.
#include "cli.h"
#include "stats_reader.h"
#include "top.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <iostream>
#include <map>

namespace mmtier::cli {

namespace {

int g_signal_pipe[2] = {-1, -1};

void on_signal(int sig) {
  int saved = errno;
  unsigned char b = static_cast<unsigned char>(sig);
  [[maybe_unused]] ssize_t n = write(g_signal_pipe[1], &b, 1);
  errno = saved;
}

void write_all(int fd, const std::string &s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = write(fd, s.data() + off, s.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    off += static_cast<size_t>(n);
  }
}

// The terminal: the alternate screen (when stdout is one) and raw input
// (when stdin is one), both undone by leave().
class terminal {
 public:
  terminal(bool screen, bool keys) : screen_(screen), keys_(keys) {}
  ~terminal() { leave(); }

  void enter() {
    if (active_) return;
    if (keys_ && tcgetattr(STDIN_FILENO, &saved_) == 0) {
      termios raw = saved_;
      raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
      raw.c_cc[VMIN] = 1;
      raw.c_cc[VTIME] = 0;
      raw_ = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    if (screen_) write_all(STDOUT_FILENO, "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J");
    active_ = true;
  }

  void leave() {
    if (!active_) return;
    if (screen_) write_all(STDOUT_FILENO, "\x1b[?25h\x1b[?1049l");
    if (raw_) tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
    raw_ = false;
    active_ = false;
  }

 private:
  bool screen_, keys_;
  bool active_ = false, raw_ = false;
  termios saved_{};
};

struct window_size {
  int cols = 80, rows = 24;
};

window_size terminal_size() {
  window_size w;
  winsize ws;
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
    w.cols = ws.ws_col;
    w.rows = ws.ws_row > 0 ? ws.ws_row : 24;
  }
  return w;
}

std::string fit(std::string s, size_t width) {
  if (s.size() > width) s.resize(width);
  return s;
}

}  // namespace

std::string render_bar(uint64_t dram, uint64_t pmem, int width) {
  if (width <= 0) return {};
  std::string bar(static_cast<size_t>(width), '.');
  uint64_t total = dram + pmem;
  if (total == 0) return bar;
  int hashes = static_cast<int>(std::lround(static_cast<double>(dram) / static_cast<double>(total) * width));
  if (dram > 0 && hashes == 0) hashes = 1;
  if (pmem > 0 && hashes == width) hashes = width - 1;
  if (hashes < 0) hashes = 0;
  for (int i = 0; i < width; ++i) bar[static_cast<size_t>(i)] = i < hashes ? '#' : '-';
  return bar;
}

std::vector<top_row> top_rows(std::vector<snapshot> snaps, const std::map<int, top_prev> &prev) {
  std::vector<top_row> rows;
  for (snapshot &s : snaps) {
    top_row r;
    r.pid = s.pid();
    r.comm = s.comm;
    r.dram = s.dram_bytes();
    r.pmem = s.pmem_bytes();
    r.migrate_bps = s.page.migrate_rate_bps;
    auto it = prev.find(r.pid);
    if (it != prev.end() && it->second.started_ns == s.page.started_ns && s.mono_ns > it->second.mono_ns &&
        s.page.promotions >= it->second.promotions) {
      r.promo_rate = static_cast<double>(s.page.promotions - it->second.promotions) /
                     (static_cast<double>(s.mono_ns - it->second.mono_ns) / 1e9);
    }
    rows.push_back(std::move(r));
  }
  std::sort(rows.begin(), rows.end(), [](const top_row &a, const top_row &b) {
    return a.dram != b.dram ? a.dram > b.dram : a.pid < b.pid;
  });
  return rows;
}

std::string render_top(const std::vector<top_row> &rows, int cols, int max_rows, double interval_s,
                       uint64_t now_real_ns) {
  const size_t width = static_cast<size_t>(cols > 20 ? cols : 20);
  // Columns around the bar: pid 7, comm 15, DRAM 7, PMem 7, promotions/s 9,
  // migration rate 9, with their separators and the bar's brackets.
  constexpr int kFixed = 7 + 1 + 15 + 1 + 7 + 1 + 7 + 2 + 2 + 1 + 9 + 1 + 9;
  int bar = std::clamp(cols - kFixed, 10, 50);
  uint64_t dram = 0, pmem = 0;
  double promo = 0;
  bool have_rate = false;
  for (const top_row &r : rows) {
    dram += r.dram;
    pmem += r.pmem;
    if (r.promo_rate >= 0) promo += r.promo_rate, have_rate = true;
  }
  time_t t = static_cast<time_t>(now_real_ns / 1000000000ull);
  tm tmv;
  localtime_r(&t, &tmv);
  char clock[16];
  strftime(clock, sizeof clock, "%H:%M:%S", &tmv);
  std::string out;
  auto line = [&](const std::string &s) { out += fit(s, width) + "\n"; };
  line(strf("mmtier top %s  %zu process%s  DRAM %s  PMem %s  promotions %s/s", clock, rows.size(),
            rows.size() == 1 ? "" : "es", short_bytes(dram).c_str(), short_bytes(pmem).c_str(),
            have_rate ? short_count(promo).c_str() : "-"));
  line(strf("every %gs; bar: # DRAM, - PMem (resident; placed until measured); q quits", interval_s));
  line(strf("%7s %-15s %7s %7s  %-*s %9s %9s", "PID", "COMMAND", "DRAM", "PMEM", bar + 2, "DRAM:PMEM", "PROMO/S",
            "MIGRATE/S"));
  int shown = 0;
  int room = max_rows > 0 ? max_rows - 3 : static_cast<int>(rows.size());
  for (const top_row &r : rows) {
    if (shown >= room) break;
    if (shown == room - 1 && static_cast<int>(rows.size()) > room) {
      line(strf("... and %zu more", rows.size() - static_cast<size_t>(shown)));
      ++shown;
      break;
    }
    line(strf("%7d %-15.15s %7s %7s  [%s] %9s %9s", r.pid, r.comm.c_str(), short_bytes(r.dram).c_str(),
              short_bytes(r.pmem).c_str(), render_bar(r.dram, r.pmem, bar).c_str(),
              r.promo_rate >= 0 ? short_count(r.promo_rate).c_str() : "-", short_bytes(r.migrate_bps).c_str()));
    ++shown;
  }
  if (rows.empty()) line("(no process is running under libmmtier)");
  return out;
}

int top_main(const args &a) {
  const std::string cmd = "top";
  double interval = 1.0;
  long iterations = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    std::string v;
    if (a[i] == "-h" || a[i] == "--help") {
      std::cout << help_text("top");
      return 0;
    } else if (take_option(cmd, a, &i, "--interval", &v) || take_option(cmd, a, &i, "-d", &v)) {
      if (!parse_duration_seconds(v, &interval) || interval < 0.05 || interval > 3600)
        throw usage_error(cmd, strf("invalid interval \"%s\": expected a duration from 50ms to 1h (e.g. 500ms, 2s)",
                                    v.c_str()));
    } else if (take_option(cmd, a, &i, "--iterations", &v) || take_option(cmd, a, &i, "-n", &v)) {
      int n;
      if (!parse_pid(v, &n)) throw usage_error(cmd, strf("invalid iteration count \"%s\": expected a positive integer", v.c_str()));
      iterations = n;
    } else {
      throw usage_error(cmd, strf("unexpected argument %s", a[i].c_str()));
    }
  }

  stats_location loc = stats_location_from_env();
  if (loc.off) fprintf(stderr, "mmtier: MMTIER_STATS_DIR=off: no process publishes statistics\n");
  const bool screen = isatty(STDOUT_FILENO);
  const bool keys = isatty(STDIN_FILENO);

  if (pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) throw failure(strf("pipe: %s", strerror(errno)));
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGWINCH, SIGTSTP, SIGCONT}) sigaction(sig, &sa, nullptr);

  terminal term(screen, keys);
  term.enter();
  std::map<int, top_prev> prev;
  std::vector<top_row> rows;
  int status = 0;
  bool quit = false;
  uint64_t next = monotonic_ns();
  bool listen = keys;
  for (long iter = 0; !quit; ++iter) {
    // Sample.
    std::vector<snapshot> snaps;
    for (stats_source &src : open_all(stats_dirs_for_all(loc), true)) {
      src.request_refresh();  // resident bytes measured about once a second while we watch
      snapshot s;
      if (src.read(&s) == stats_source::read_status::ok) snaps.push_back(std::move(s));
    }
    rows = top_rows(snaps, prev);
    prev.clear();
    for (const snapshot &s : snaps) prev[s.pid()] = top_prev{s.page.started_ns, s.page.promotions, s.mono_ns};
    // Draw.
    auto draw = [&] {
      window_size ws = terminal_size();
      std::string frame = render_top(rows, ws.cols, screen ? ws.rows : 0, interval, realtime_ns());
      if (screen) {
        // Home, then each line cleared to its end, then the rest cleared.
        std::string painted = "\x1b[H";
        size_t start = 0;
        while (start < frame.size()) {
          size_t nl = frame.find('\n', start);
          painted += frame.substr(start, nl - start) + "\x1b[K\r\n";
          start = nl + 1;
        }
        if (painted.size() >= 2) painted.resize(painted.size() - 2);  // no scroll past the last line
        painted += "\x1b[J";
        write_all(STDOUT_FILENO, painted);
      } else {
        write_all(STDOUT_FILENO, frame + (iterations == 1 ? "" : "\n"));
      }
    };
    draw();
    if (iterations > 0 && iter + 1 >= iterations) break;
    // Wait for the next refresh, a key or a signal.
    next += static_cast<uint64_t>(interval * 1e9);
    for (;;) {
      uint64_t now = monotonic_ns();
      if (now >= next) {
        if (now > next + static_cast<uint64_t>(interval * 1e9)) next = now;  // do not catch up after a stop
        break;
      }
      pollfd fds[2] = {{g_signal_pipe[0], POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
      int timeout_ms = static_cast<int>((next - now + 999999) / 1000000);
      int n = poll(fds, listen ? 2 : 1, timeout_ms);
      if (n < 0 && errno != EINTR) break;
      if (n <= 0) continue;
      if (fds[0].revents & POLLIN) {
        unsigned char sig;
        while (read(g_signal_pipe[0], &sig, 1) == 1) {
          if (sig == SIGWINCH) {
            draw();
          } else if (sig == SIGTSTP) {
            term.leave();
            signal(SIGTSTP, SIG_DFL);
            raise(SIGTSTP);  // stops here until SIGCONT
            sigaction(SIGTSTP, &sa, nullptr);
            term.enter();
            draw();
          } else if (sig == SIGCONT) {
            draw();
          } else {
            quit = true;
            status = 128 + sig;
          }
        }
      }
      if (listen && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
        char c;
        ssize_t r = read(STDIN_FILENO, &c, 1);
        if (r == 1 && (c == 'q' || c == 'Q')) quit = true;
        if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) listen = false;  // no more keys
      }
      if (quit) break;
    }
  }
  term.leave();
  if (status == 128 + SIGINT || status == 128 + SIGTERM || status == 128 + SIGHUP) {
    // Die of the signal, as a shell expects, now that the terminal is back.
    int sig = status - 128;
    signal(sig, SIG_DFL);
    raise(sig);
  }
  return status;
}

}  // namespace mmtier::cli
