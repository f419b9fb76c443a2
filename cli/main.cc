// The mmtier command: dispatches to run, stat, top, plot, snapshot and
// help, and turns failures into one line on stderr with the documented exit
// status.
#include "cli.h"

#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>

namespace {

using namespace mmtier::cli;

int dispatch(const args &all) {
  if (all.empty()) {
    std::cerr << help_text("");
    return 2;
  }
  const std::string &first = all[0];
  args rest(all.begin() + 1, all.end());
  if (first == "-h" || first == "--help") {
    std::cout << help_text("");
    return 0;
  }
  if (first == "-V" || first == "--version") {
    std::cout << "mmtier " << version_string() << "\n";
    return 0;
  }
  if (first == "help") {
    if (rest.size() > 1) throw usage_error("help", "give at most one command");
    std::string topic = rest.empty() ? "" : rest[0];
    std::string_view text = help_text(topic);
    if (text.empty()) throw usage_error("help", strf("no such command \"%s\"", topic.c_str()));
    std::cout << text;
    return 0;
  }
  if (first == "run") return run_main(rest);  // the command inherits our signal dispositions
  // Writing to a closed pipe (mmtier stat --all | head) is an error to
  // report, not a reason to die silently.
  signal(SIGPIPE, SIG_IGN);
  if (first == "stat") return stat_main(rest);
  if (first == "top") return top_main(rest);
  if (first == "plot") return plot_main(rest);
  if (first == "snapshot") return snapshot_main(rest);
  if (first == "restore") return restore_main(rest);
  if (first == "rollback") return rollback_main(rest);
  if (first == "capsule") return capsule_main(rest);
  if (first == "clone") return clone_main(rest);
  if (first == "migrate") return migrate_main(rest);
  if (first == "receive") return receive_main(rest);
  if (first == "inject") return inject_main(rest);
  if (!first.empty() && first[0] == '-') throw usage_error("", strf("unknown option %s", first.c_str()));
  throw usage_error("", strf("unknown command \"%s\"", first.c_str()));
}

}  // namespace

int main(int argc, char **argv) {
  args all(argv + 1, argv + argc);
  try {
    return dispatch(all);
  } catch (const usage_error &e) {
    if (e.command.empty())
      fprintf(stderr, "mmtier: %s (see 'mmtier --help')\n", e.what());
    else
      fprintf(stderr, "mmtier %s: %s (see 'mmtier %s --help')\n", e.command.c_str(), e.what(), e.command.c_str());
    return 2;
  } catch (const failure &e) {
    fprintf(stderr, "mmtier: %s\n", e.what());
    return e.status;
  } catch (const std::exception &e) {
    fprintf(stderr, "mmtier: %s\n", e.what());
    return 1;
  }
}
