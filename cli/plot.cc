// `mmtier plot`: samples one process's published statistics at a fixed
// interval for a while (or until it exits, or Ctrl-C) and writes an SVG
// chart: DRAM- and PMem-resident bytes over time in the upper panel,
// promotions per second in the lower one.
#include "plot.h"

#include "cli.h"
#include "format.h"
#include "stats_reader.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iostream>

namespace mmtier::cli {

namespace {

volatile sig_atomic_t g_stop = 0;
void on_stop(int) { g_stop = 1; }

std::string xml_escape(std::string_view s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&apos;"; break;
      default: o += c;
    }
  }
  return o;
}

// Element text: only &, < and > need escaping.
std::string xml_text_escape(std::string_view s) {
  std::string o;
  for (char c : s) {
    if (c == '&') o += "&amp;";
    else if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else o += c;
  }
  return o;
}

// A "nice" tick step (1, 2 or 5 times a power of ten) giving about
// `target` ticks over range.
double nice_step(double range, int target) {
  if (!(range > 0)) return 1;
  double raw = range / target;
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double norm = raw / mag;
  double f = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10;
  return f * mag;
}

std::string num(double v) {
  if (std::fabs(v - std::round(v)) < 1e-9) return strf("%.0f", v);
  return strf("%.2f", v);
}

std::string tick_label(double v) {
  std::string s = strf("%.6g", v);
  return s;
}

std::string u64(uint64_t v) { return strf("%llu", static_cast<unsigned long long>(v)); }

struct frame {
  double x0, y0, w, h;  // plot area: left, top, width, height
  double xmax, ymax;
  double x(double t) const { return x0 + (xmax > 0 ? t / xmax : 0) * w; }
  double y(double v) const { return y0 + h - (ymax > 0 ? std::min(v, ymax) / ymax : 0) * h; }
};

// Axes, grid and tick labels of one panel; value ticks scaled by
// 1/divisor for their labels.
std::string axes(const frame &f, double xstep, double ystep, double divisor, const std::string &ylabel,
                 bool xlabels) {
  std::string o;
  o += strf("<rect x=\"%s\" y=\"%s\" width=\"%s\" height=\"%s\" fill=\"#fafafa\" stroke=\"#888\"/>\n",
            num(f.x0).c_str(), num(f.y0).c_str(), num(f.w).c_str(), num(f.h).c_str());
  for (double v = 0; v <= f.ymax * (1 + 1e-9); v += ystep) {
    double y = f.y(v);
    o += strf("<line class=\"grid\" x1=\"%s\" y1=\"%.1f\" x2=\"%s\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
              num(f.x0).c_str(), y, num(f.x0 + f.w).c_str(), y);
    o += strf("<text class=\"tick\" x=\"%s\" y=\"%.1f\" text-anchor=\"end\" dominant-baseline=\"middle\">%s</text>\n",
              num(f.x0 - 6).c_str(), y, tick_label(v / divisor).c_str());
  }
  for (double t = 0; t <= f.xmax * (1 + 1e-9); t += xstep) {
    double x = f.x(t);
    o += strf("<line class=\"grid\" x1=\"%.1f\" y1=\"%s\" x2=\"%.1f\" y2=\"%s\" stroke=\"#eee\"/>\n", x,
              num(f.y0).c_str(), x, num(f.y0 + f.h).c_str());
    if (xlabels)
      o += strf("<text class=\"tick\" x=\"%.1f\" y=\"%s\" text-anchor=\"middle\">%s</text>\n", x,
                num(f.y0 + f.h + 16).c_str(), tick_label(t).c_str());
  }
  o += strf("<text class=\"axis-label\" transform=\"translate(%s,%s) rotate(-90)\" text-anchor=\"middle\">%s</text>\n",
            num(f.x0 - 62).c_str(), num(f.y0 + f.h / 2).c_str(), xml_escape(ylabel).c_str());
  return o;
}

std::string polyline(const char *id, const char *color, const std::vector<std::pair<double, double>> &pts,
                     const frame &f) {
  std::string p;
  for (const auto &[t, v] : pts) {
    if (!p.empty()) p += ' ';
    p += strf("%.1f,%.1f", f.x(t), f.y(v));
  }
  return strf("<polyline id=\"%s\" class=\"series\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\" "
              "stroke-linejoin=\"round\" data-points=\"%zu\" points=\"%s\"/>\n",
              id, color, pts.size(), p.c_str());
}

}  // namespace

std::vector<double> promotion_rates(const std::vector<plot_sample> &s) {
  std::vector<double> r;
  for (size_t i = 1; i < s.size(); ++i) {
    double dt = s[i].t - s[i - 1].t;
    double dp = s[i].promotions >= s[i - 1].promotions ? static_cast<double>(s[i].promotions - s[i - 1].promotions) : 0;
    r.push_back(dt > 0 ? dp / dt : 0);
  }
  return r;
}

std::string render_svg(const plot_data &d) {
  constexpr double kWidth = 960, kHeight = 640;
  const std::vector<plot_sample> &s = d.samples;
  std::vector<double> rates = promotion_rates(s);

  double tmax = s.empty() ? 0 : s.back().t;
  double xmax = std::max(tmax, d.interval_s > 0 ? d.interval_s : 1.0);
  double xstep = nice_step(xmax, 8);
  xmax = std::ceil(xmax / xstep - 1e-9) * xstep;

  uint64_t bmax = 0;
  for (const plot_sample &p : s) bmax = std::max({bmax, p.dram, p.pmem});
  double divisor = 1;
  const char *unit = "bytes";
  if (bmax >= (1ull << 30)) divisor = 1ull << 30, unit = "GiB";
  else if (bmax >= (1ull << 20)) divisor = 1ull << 20, unit = "MiB";
  else if (bmax >= (1ull << 10)) divisor = 1ull << 10, unit = "KiB";
  double ystep = nice_step(bmax > 0 ? static_cast<double>(bmax) / divisor : 1.0, 5) * divisor;
  double ymax = std::max(1.0, std::ceil(static_cast<double>(bmax) / ystep - 1e-9)) * ystep;

  double rmax = 0;
  for (double r : rates) rmax = std::max(rmax, r);
  double rstep = nice_step(rmax > 0 ? rmax : 1.0, 4);
  if (rstep < 1 && rmax <= 4) rstep = 1;
  double rtop = std::max(1.0, std::ceil(rmax / rstep - 1e-9)) * rstep;

  frame mem{90, 70, 830, 300, xmax, ymax};
  frame pro{90, 440, 830, 130, xmax, rtop};

  size_t resident = 0;
  for (const plot_sample &p : s) resident += p.resident ? 1 : 0;
  const char *what = resident == s.size() ? "resident"
                     : resident == 0      ? "placed"
                                          : "resident (placed until measured)";

  std::string o;
  o += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  o += strf("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
            "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\" data-pid=\"%d\">\n",
            kWidth, kHeight, kWidth, kHeight, d.pid);
  std::string title = strf("mmtier: process %d (%s)", d.pid, d.comm.c_str());
  o += "<title>" + xml_escape(title) + "</title>\n";

  // The samples, for whoever wants the numbers.
  std::string json = strf("{\"pid\":%d,\"comm\":%s,\"interval_seconds\":%g,\"samples\":[", d.pid,
                          json_string(d.comm).c_str(), d.interval_s);
  for (size_t i = 0; i < s.size(); ++i) {
    const plot_sample &p = s[i];
    json += strf("%s{\"t\":%.3f,\"dram_bytes\":%s,\"pmem_bytes\":%s,\"resident\":%s,\"dram_placed_bytes\":%s,"
                 "\"pmem_placed_bytes\":%s,\"promotions\":%s,\"demotions\":%s}",
                 i ? "," : "", p.t, u64(p.dram).c_str(), u64(p.pmem).c_str(), p.resident ? "true" : "false",
                 u64(p.dram_placed).c_str(), u64(p.pmem_placed).c_str(), u64(p.promotions).c_str(),
                 u64(p.demotions).c_str());
  }
  json += "]}";
  o += "<metadata id=\"mmtier-samples\">" + xml_text_escape(json) + "</metadata>\n";
  o += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o += strf("<text id=\"chart-title\" x=\"%.0f\" y=\"30\" text-anchor=\"middle\" font-size=\"17\">%s</text>\n",
            kWidth / 2, xml_escape(title).c_str());
  double span = s.empty() ? 0 : s.back().t;
  o += strf("<text x=\"%.0f\" y=\"50\" text-anchor=\"middle\" fill=\"#555\">%zu samples every %g s over %.1f s</text>\n",
            kWidth / 2, s.size(), d.interval_s, span);

  // Upper panel: bytes per tier.
  o += "<g id=\"panel-memory\">\n";
  o += axes(mem, xstep, ystep, divisor, strf("%s (%s)", what, unit), false);
  std::vector<std::pair<double, double>> dram, pmem;
  for (const plot_sample &p : s) {
    dram.emplace_back(p.t, static_cast<double>(p.dram));
    pmem.emplace_back(p.t, static_cast<double>(p.pmem));
  }
  o += polyline("series-dram-resident", "#1f77b4", dram, mem);
  o += polyline("series-pmem-resident", "#ff7f0e", pmem, mem);
  // Legend, in a row between the panels.
  o += "<g id=\"legend\">\n";
  const struct {
    const char *color, *label;
  } kLegend[] = {{"#1f77b4", "DRAM"}, {"#ff7f0e", "PMem"}, {"#2ca02c", "promotions/s"}};
  const char *suffix = resident == s.size() ? " resident" : resident == 0 ? " placed" : " resident*";
  for (int i = 0; i < 3; ++i) {
    double x = mem.x0 + mem.w / 2 - 270 + i * 190, y = mem.y0 + mem.h + 32;
    o += strf("<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" stroke-width=\"3\"/>"
              "<text x=\"%.0f\" y=\"%.0f\" dominant-baseline=\"middle\">%s%s</text>\n",
              x, y, x + 30, y, kLegend[i].color, x + 38, y, kLegend[i].label, i < 2 ? suffix : "");
  }
  o += "</g>\n</g>\n";

  // Lower panel: promotions per second.
  o += "<g id=\"panel-promotions\">\n";
  o += axes(pro, xstep, rstep, 1, "promotions/s", true);
  std::vector<std::pair<double, double>> pr;
  for (size_t i = 0; i < rates.size(); ++i) pr.emplace_back(s[i + 1].t, rates[i]);
  o += polyline("series-promotions", "#2ca02c", pr, pro);
  o += "</g>\n";
  o += strf("<text class=\"axis-label\" x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">time (s)</text>\n",
            pro.x0 + pro.w / 2, pro.y0 + pro.h + 38);
  if (resident != s.size() && resident != 0)
    o += strf("<text x=\"%.0f\" y=\"%.0f\" fill=\"#555\">* placed bytes until the first resident measurement</text>\n",
              mem.x0, pro.y0 + pro.h + 38);
  o += "</svg>\n";
  return o;
}

int plot_main(const args &a) {
  const std::string cmd = "plot";
  double seconds = 30, interval = 0.5;
  std::string output;
  int pid = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    std::string v;
    if (a[i] == "-h" || a[i] == "--help") {
      std::cout << help_text("plot");
      return 0;
    } else if (take_option(cmd, a, &i, "--seconds", &v) || take_option(cmd, a, &i, "-s", &v)) {
      if (!parse_duration_seconds(v, &seconds) || seconds <= 0 || seconds > 86400)
        throw usage_error(cmd, strf("invalid --seconds \"%s\": expected a number of seconds, more than 0", v.c_str()));
    } else if (take_option(cmd, a, &i, "--interval", &v) || take_option(cmd, a, &i, "-i", &v)) {
      if (!parse_duration_seconds(v, &interval) || interval < 0.01 || interval > 3600)
        throw usage_error(cmd, strf("invalid interval \"%s\": expected a duration from 10ms to 1h (e.g. 500ms)", v.c_str()));
    } else if (take_option(cmd, a, &i, "--output", &v) || take_option(cmd, a, &i, "-o", &v)) {
      if (v.empty()) throw usage_error(cmd, "empty output file name");
      output = v;
    } else if (!a[i].empty() && a[i][0] == '-') {
      throw usage_error(cmd, strf("unknown option %s", a[i].c_str()));
    } else if (pid == 0) {
      if (!parse_pid(a[i], &pid)) throw usage_error(cmd, strf("invalid pid \"%s\"", a[i].c_str()));
    } else {
      throw usage_error(cmd, strf("unexpected argument %s", a[i].c_str()));
    }
  }
  if (pid == 0) throw usage_error(cmd, "no pid given");
  if (output.empty()) output = strf("mmtier-%d.svg", pid);

  stats_source src = open_process(pid, true);
  plot_data d;
  d.pid = pid;
  d.interval_s = interval;

  struct sigaction sa{};
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  const uint64_t start = monotonic_ns();
  const uint64_t step = static_cast<uint64_t>(interval * 1e9);
  const uint64_t end = start + static_cast<uint64_t>(seconds * 1e9);
  bool exited = false;
  for (uint64_t k = 0; !g_stop; ++k) {
    uint64_t due = std::min(start + k * step, end);
    timespec ts{static_cast<time_t>(due / 1000000000ull), static_cast<long>(due % 1000000000ull)};
    while (!g_stop && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
    if (g_stop) break;
    if (!src.alive()) {
      exited = true;
      break;
    }
    src.request_refresh();  // resident bytes measured about once a second while we sample
    snapshot snap;
    if (src.read(&snap) == stats_source::read_status::ok) {
      if (d.comm.empty()) d.comm = snap.comm;
      plot_sample p;
      p.t = static_cast<double>(snap.mono_ns - start) / 1e9;
      p.resident = snap.resident_known();
      p.dram = snap.dram_bytes();
      p.pmem = snap.pmem_bytes();
      p.dram_placed = snap.page.tiers[0].placed_bytes;
      p.pmem_placed = snap.page.tiers[1].placed_bytes;
      p.promotions = snap.page.promotions;
      p.demotions = snap.page.demotions;
      d.samples.push_back(p);
    }
    if (d.samples.size() == 1)
      fprintf(stderr, "mmtier: sampling process %d (%s) every %g s for %g s (Ctrl-C stops early)\n", pid,
              d.comm.c_str(), interval, seconds);
    if (due >= end) break;
  }
  if (d.samples.empty())
    throw failure(strf("process %d %s before a sample was taken; no chart written", pid,
                       exited ? "exited" : "was not sampled"));

  std::string svg = render_svg(d);
  if (output == "-") {
    fwrite(svg.data(), 1, svg.size(), stdout);
    if (fflush(stdout) != 0) throw failure(strf("writing the chart: %s", strerror(errno)));
  } else {
    write_file_atomically(output, svg);
  }
  double span = d.samples.back().t;
  std::string why = exited ? strf("; the process exited after %.1f s", static_cast<double>(monotonic_ns() - start) / 1e9)
                    : g_stop ? std::string("; interrupted")
                             : std::string();
  FILE *msg = output == "-" ? stderr : stdout;
  fprintf(msg, "mmtier: wrote %s: %zu samples of process %d (%s) over %.1f s%s\n", output == "-" ? "the chart" : output.c_str(),
          d.samples.size(), pid, d.comm.c_str(), span, why.c_str());
  return 0;
}

}  // namespace mmtier::cli
