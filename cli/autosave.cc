// `mmtier run --autosave DUR`: the command runs as this process's child
// and takes a snapshot at every interval itself (MMTIER_SNAPSHOT_EVERY, in
// the library); this process stays as its supervisor.  When the program
// dies of a crash (a signal of the kinds below, SIGKILL included: the OOM
// killer's), the newest complete snapshot it took is restored
// (`mmtier restore --detach`, whose init this process adopts as a
// subreaper) and supervised in turn, until a restart limit in a window.
// A stop asked of the supervisor (SIGTERM, SIGINT, SIGHUP, SIGQUIT) is
// passed on, and then nothing is restored: with MMTIER_SNAPSHOT_SIGNAL=TERM
// the program takes a last snapshot before it ends.
#include "autosave.h"

#include "capsule_read.h"
#include "cli.h"

#include "snapshot/capsule_dir.h"
#include "snapshot/capsule_format.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>

namespace mmtier::cli {

namespace cap = mmtier::capsule;

namespace {

volatile sig_atomic_t g_target = 0;    // the program's host pid: where signals go
volatile sig_atomic_t g_stopping = 0;  // a stop was asked: nothing is restored

void forward(int sig) {
  if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT) g_stopping = 1;
  if (g_target > 0) kill(static_cast<pid_t>(g_target), sig);
}

bool crash_signal(int sig) {
  switch (sig) {
    case SIGSEGV: case SIGBUS: case SIGILL: case SIGFPE: case SIGABRT: case SIGKILL: case SIGSYS: case SIGTRAP:
      return true;
    default:
      return false;
  }
}

// `mmtier restore CAPSULE --detach --keep-stdio --lazy`, this command's own
// binary: the restored program's output goes where the original's went
// (this process's streams), its memory is filled while it runs, and its
// init is adopted by this process (a subreaper) once the command exits.
// The program's host pid (through a pid file in the capsule directory)
// and that init.
std::string status_file(const std::string &dir) {
  return strf("%s/.autosave-%d.status", dir.c_str(), static_cast<int>(getpid()));
}

bool restore(const std::string &capsule, const std::string &dir, pid_t *host, pid_t *init) {
  const std::string pid_file = strf("%s/.autosave-%d.pid", dir.c_str(), static_cast<int>(getpid()));
  const std::string status = status_file(dir);
  unlink(status.c_str());
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    const char *argv[] = {"mmtier", "restore", capsule.c_str(), "--detach", "--keep-stdio", "--lazy",
                          "--pid-file", pid_file.c_str(), "--status-file", status.c_str(), nullptr};
    execv("/proc/self/exe", const_cast<char *const *>(argv));
    _exit(127);
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  const std::string text = read_text(pid_file.c_str());
  unlink(pid_file.c_str());
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || !parse_pid(text, host)) return false;
  *init = parent_pid(*host);
  return *init > 0;
}

}  // namespace

int supervise(char *const *argv, char *const *envp, const autosave_options &o) {
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
    throw failure(strf("--autosave: cannot become a subreaper: %s", strerror(errno)));
  struct sigaction sa = {};
  sa.sa_handler = forward;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) sigaction(sig, &sa, nullptr);
  fflush(nullptr);
  // Only capsules taken since: a leftover of an earlier process that had
  // the same PID (before a reboot, after the PIDs wrapped) is not its.
  const uint64_t started = realtime_ns();
  const pid_t first = fork();
  if (first < 0) throw failure(strf("cannot start %s: %s", argv[0], strerror(errno)));
  if (first == 0) {
    for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) signal(sig, SIG_DFL);
    execvpe(argv[0], argv, envp);
    fprintf(stderr, "mmtier: %s: %s\n", argv[0], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
  }
  g_target = first;
  pid_t waitee = first;  // whose end tells the program's: the program, then a restore's init
  bool restored = false;
  std::deque<uint64_t> restores;  // when, within the window
  const std::string prefix = strf("auto-%d-", static_cast<int>(first));
  for (;;) {
    int st = 0;
    const pid_t w = waitpid(-1, &st, 0);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return 1;
    if (w != waitee) continue;  // an orphan of the program's, adopted and reaped
    // How it ended: a restore's init says it in the status file (else its
    // own status is the program's, or 128 + the signal that killed it).
    int sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + sig;
    if (restored) {
      const std::string said = read_text(status_file(o.dir).c_str());
      unlink(status_file(o.dir).c_str());
      int n = 0;
      if (sscanf(said.c_str(), "signal %d", &n) == 1) {
        sig = n;
      } else if (sscanf(said.c_str(), "exit %d", &n) == 1) {
        sig = 0;
        code = n;
      } else if (WIFEXITED(st) && code > 128 && code < 128 + 65) {
        sig = code - 128;
      }
    }
    const int status = sig ? 128 + sig : code;
    g_target = 0;
    if (!sig || !crash_signal(sig) || g_stopping) return status;
    const uint64_t now = monotonic_ns();
    while (!restores.empty() && now - restores.front() > o.window_ns) restores.pop_front();
    if (static_cast<int>(restores.size()) >= o.max_restarts) {
      fprintf(stderr, "mmtier run: process %d died of signal %d (%s); giving up: %zu restores within %.0f s\n",
              static_cast<int>(first), sig, strsignal(sig), restores.size(), static_cast<double>(o.window_ns) / 1e9);
      return status;
    }
    uint64_t created = 0;
    std::string capsule = newest_capsule(o.dir, prefix, &created);
    if (created < started) capsule.clear();
    if (capsule.empty()) {
      fprintf(stderr, "mmtier run: process %d died of signal %d (%s); no snapshot of it to restore in %s\n",
              static_cast<int>(first), sig, strsignal(sig), o.dir.c_str());
      return status;
    }
    const double age = (static_cast<double>(realtime_ns()) - static_cast<double>(created)) / 1e9;
    fprintf(stderr, "mmtier run: process %d died of signal %d (%s); restoring %s (taken %.1f s before)\n",
            static_cast<int>(first), sig, strsignal(sig), capsule.c_str(), age);
    pid_t host = 0, init = 0;
    if (!restore(capsule, o.dir, &host, &init)) {
      fprintf(stderr, "mmtier run: the restore of %s failed; giving up\n", capsule.c_str());
      return status;
    }
    restores.push_back(now);
    restored = true;
    waitee = init;
    g_target = host;
    fprintf(stderr, "mmtier run: process %d restored (host pid %d)\n", static_cast<int>(first), static_cast<int>(host));
    if (g_stopping) kill(host, SIGTERM);  // asked to stop while it was restored
  }
}

}  // namespace mmtier::cli
