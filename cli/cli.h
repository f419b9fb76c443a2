// The mmtier command: the subcommands' entry points, the errors they throw
// and small helpers they share (number parsing, byte sizes, clocks).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace mmtier::cli {

// A failure to report as one line "mmtier: <what>" and exit status 1.
struct failure : std::runtime_error {
  explicit failure(const std::string &what, int status = 1) : std::runtime_error(what), status(status) {}
  int status;
};

// Bad usage: reported as "mmtier <command>: <what> (see 'mmtier <command> --help')",
// exit status 2.
struct usage_error : std::runtime_error {
  usage_error(std::string command, const std::string &what)
      : std::runtime_error(what), command(std::move(command)) {}
  std::string command;
};

using args = std::vector<std::string>;

// Subcommands; each gets the arguments after its name and returns the exit
// status.
int run_main(const args &a);
int stat_main(const args &a);
int top_main(const args &a);
int plot_main(const args &a);
// `mmtier snapshot PID | list | info | delete` (snapshot.cc; taking one:
// snapshot_take.cc, with the PID's text and the arguments after it).
int snapshot_main(const args &a);
int snapshot_take_main(const std::string &pid, const args &a);
// `mmtier restore CAPSULE` (restore.cc).
int restore_main(const args &a);
// `mmtier rollback PID --to CAPSULE|-N` (rollback.cc).
int rollback_main(const args &a);
// `mmtier capsule pack|unpack` (capsule_pack.cc).
int capsule_main(const args &a);
// `mmtier clone CAPSULE [--count N]` (clone.cc).
int clone_main(const args &a);
// `mmtier migrate PID --to HOST:PORT`, `mmtier receive --listen PORT`
// (migrate.cc).
int migrate_main(const args &a);
int receive_main(const args &a);
// mmtier inject: Kubernetes YAML put under libmmtier (runs cli/inject.py).
int inject_main(const args &a);

// Help texts (help.cc).  topic: "", "run", "stat", "top", "plot",
// "snapshot".  Empty string for an unknown topic.
std::string_view help_text(std::string_view topic);
const char *version_string();

// --- util.cc

// printf into a std::string.
std::string strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Writes text to path through a new temporary file (O_EXCL, random name) in
// the same directory and rename(), so a reader never sees half a file and a
// name planted in a shared directory is never followed.  Throws failure.
void write_file_atomically(const std::string &path, const std::string &text);

// "48.0 MiB", "1.50 GiB", "512 B".
std::string human_bytes(uint64_t bytes);

// A small text file's content, trailing newlines cut ("" when unreadable).
std::string read_text(const char *path);
// "48.0M", "1.5G", "512K", "0": at most 6 characters.
std::string short_bytes(uint64_t bytes);
// "12.3", "1.2k", "3.4M".
std::string short_count(double v);
// A duration given as "500ms", "0.5s", "2s", "1m", "250us" or a bare number
// of seconds ("1.5").  False when malformed or negative.
bool parse_duration_seconds(const std::string &text, double *seconds);
// A non-negative decimal ("30", "2.5").
bool parse_decimal(const std::string &text, double *out);
// A pid: decimal, > 0, fits in pid_t.
bool parse_pid(const std::string &text, int *pid);
// The PID process host (a host PID) sees itself as: the last of NSpid in
// its status; 0 if it is gone.
long own_pid(int host);
// A process's parent (its host PID), 0 if it is gone.
int parent_pid(int pid);
// The directory of this command's executable (from /proc/self/exe), or ""
// when it cannot be read.
std::string self_dir();
// Whether a holds -h or --help: then the manual of topic is printed.
bool asked_for_help(const args &a, const char *topic);
// MMTIER_SNAPSHOT_DIR as process pid started with it, or "".
std::string snapshot_dir_of(int pid);
// The `mmtier run --autosave` among pid's nearest ancestors (its parent,
// or a restore's supervisor's parent), or 0.
int autosave_supervisor(int pid);
// CLOCK_MONOTONIC / CLOCK_REALTIME in nanoseconds.
uint64_t monotonic_ns();
uint64_t realtime_ns();
// Makes s valid UTF-8 (invalid bytes become '?') and drops control
// characters other than tab.
std::string sanitize_text(std::string_view s);

// Option parsing helper: if a[*i] is "--name" takes the next argument, if it
// is "--name=value" takes the rest; returns true and sets *value then.
// Throws usage_error when the value is missing.
bool take_option(const std::string &command, const args &a, size_t *i, std::string_view name,
                 std::string *value);

}  // namespace mmtier::cli
