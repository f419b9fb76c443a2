// The control channel (see control.h).
#include "api/control.h"

#include "api/control_format.h"
#include "platform/fd_guard.h"
#include "platform/sys.h"
#include "snapshot/capture.h"
#include "snapshot/periodic.h"
#include "snapshot/restore_note.h"
#include "config/config.h"
#include "platform/clock.h"
#include "stats/agent_client.h"
#include "stats/live_stats.h"
#include "support/thread.h"
#include "support/log.h"
#include "support/quiesce.h"
#include "support/world.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace mmtier::detail {
namespace {

namespace ctl = control;

pthread_mutex_t g_start_lock = PTHREAD_MUTEX_INITIALIZER;
bool g_started = false;  // under g_start_lock
int g_listen = -1;
char g_path[sizeof(sockaddr_un::sun_path)];
struct stat g_sock_id;  // the socket file we made (removed only if still ours)
// A fork() child, or a thin clone (its snapshots would be named and pruned
// as the original's): no periodic snapshots of its own.
bool g_no_periodic = false;

bool peer_allowed(int fd) {
  ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  return cred.uid == 0 || cred.uid == static_cast<uid_t>(sys::raw(SYS_geteuid));
}

// A held snapshot (kHold) is durable and every other thread stopped: the
// reply goes out, then the client decides.  kCommit: the process ends
// (SIGKILL: it must not run on; nothing of it may run an exit handler
// with its threads stopped), after saying kEnded.  Anything else, the
// client's end, or kHoldLimit without a word: every thread goes on (a
// client stuck on a broken network must not stop the program for good;
// its late commit then finds the connection closed).  Only raw system
// calls here: every mmtier lock is held by this thread.
constexpr time_t kHoldLimitS = 600;

void held_decision(int fd) {
  const timeval limit = {kHoldLimitS, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  char c = 0;
  long n;
  while ((n = recv(fd, &c, 1, 0)) < 0 && errno == EINTR) {
  }
  if (n == 1 && c == ctl::kCommit) {
    const char ended = ctl::kEnded;
    send(fd, &ended, 1, MSG_NOSIGNAL);
    sys::raw(SYS_kill, sys::raw(SYS_getpid), SIGKILL);
  }
  snapshot_hold_end(true);
}

// False when this thread is the one a restored process resumed in (the
// connection was the dead original's).
bool serve(int fd) {
  static ctl::request req;  // one connection at a time, on this thread only
  static ctl::reply rep;
  memset(&rep, 0, sizeof rep);
  rep.magic = ctl::kMagic;
  const long n = recv(fd, &req, sizeof req, 0);
  if (!peer_allowed(fd)) {
    rep.error = EPERM;
    snprintf(rep.line, sizeof rep.line, "not the process's user");
  } else if (n != static_cast<long>(sizeof req) || req.magic != ctl::kMagic ||
             (req.version != ctl::kVersion && req.version != ctl::kVersionHold) ||
             ((req.flags & ctl::kHold) && req.version != ctl::kVersionHold)) {
    rep.error = EPROTO;
    snprintf(rep.line, sizeof rep.line, "a request this library does not understand (version %u)", ctl::kVersion);
  } else if (req.cmd != static_cast<uint32_t>(ctl::command::snapshot)) {
    rep.error = EOPNOTSUPP;
    snprintf(rep.line, sizeof rep.line, "unknown command %u", req.cmd);
  } else {
    req.name[sizeof req.name - 1] = 0;
    req.dir[sizeof req.dir - 1] = 0;
    if (req.flags & ctl::kPeriodic) {
      // Asked for by the node agent: named and pruned as the timer's own.
      const long r = g_no_periodic ? -EPERM : periodic_snapshot();
      if (r == 1) return false;
      rep.error = r < 0 ? static_cast<int32_t>(-r) : 0;
      if (g_no_periodic) snprintf(rep.line, sizeof rep.line, "this process takes no periodic snapshots");
      send(fd, &rep, sizeof rep, MSG_NOSIGNAL);
      return true;
    }
    static snap_result res;
    const bool hold = (req.flags & ctl::kHold) != 0;
    const long r = snapshot_take({req.name[0] ? req.name : nullptr, req.dir[0] ? req.dir : nullptr, fd,
                                  (req.flags & ctl::kFull) != 0, hold, (req.flags & ctl::kCopyPmem) != 0},
                                 &res);
    if (r == 1) return false;
    rep.error = r < 0 ? static_cast<int32_t>(-r) : 0;
    rep.paused_ns = res.paused_ns;
    rep.mem_bytes = res.mem_bytes;
    rep.pmem_linked = res.pmem_linked;
    rep.shared = res.shared;
    memcpy(rep.pmem_note, res.pmem_note, sizeof rep.pmem_note);
    rep.threads = res.threads;
    memcpy(rep.line, res.line, sizeof rep.line);
    memcpy(rep.path, res.path, sizeof rep.path);
    if (r < 0) MMTIER_WARN("snapshot requested through the control socket failed: %s", res.line);
    if (r == 0 && hold) {
      send(fd, &rep, sizeof rep, MSG_NOSIGNAL);
      held_decision(fd);
      return true;
    }
  }
  send(fd, &rep, sizeof rep, MSG_NOSIGNAL);
  return true;
}

// Waits for a connection until the next periodic snapshot is due
// (MMTIER_SNAPSHOT_EVERY), taking it when it is.  False when this thread is
// the one a restored process resumed in.
bool wait_for_connection(uint64_t *next_ns) {
  const uint64_t configured = g_no_periodic ? 0 : config_get().snapshot_every_ns;
  for (;;) {
    // While the node agent takes them (one process at a time across the
    // node), this timer waits, looking again every second.
    const bool agent = configured && agent_client_schedules_snapshots();
    const uint64_t every = agent ? 0 : configured;
    int timeout_ms = agent ? 1000 : -1;
    if (agent) *next_ns = 0;  // from the hand-back on, a whole interval
    if (every) {
      const uint64_t now = sys::mono_ns();
      if (!*next_ns) *next_ns = now + every;
      if (now >= *next_ns) {
        if (periodic_snapshot() == 1) return false;
        *next_ns = sys::mono_ns() + every;
        continue;
      }
      timeout_ms = static_cast<int>((*next_ns - now) / 1000000 + 1);
    }
    pollfd p = {g_listen, POLLIN, 0};
    const int r = poll(&p, 1, timeout_ms);
    if (r > 0 || (r < 0 && errno != EINTR)) return true;  // accept says what it is
  }
}

void *control_main(void *) {
  uint64_t next_ns = 0;
  for (;;) {
    if (!wait_for_connection(&next_ns)) return nullptr;
    const int fd = accept4(g_listen, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) continue;
      if (errno == EBADF || errno == EINVAL) return nullptr;  // the socket is gone
      continue;
    }
    // A client that connects and sends nothing must not hold the channel.
    const timeval limit = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    // Restored: the socket and the connection were the original's; the
    // restore has started this process's own control thread already.
    if (!serve(fd)) return nullptr;
    sys::close(fd);
  }
}

// Binds <stats dir>/<pid>.ctl; false (nothing to serve) when the process
// publishes no statistics or the socket cannot be made.
bool make_socket() {
  char dir[sizeof g_path];
  if (!live_stats_dir(dir, sizeof dir)) return false;
  sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  const int len = snprintf(addr.sun_path, sizeof addr.sun_path, "%s/%ld%s", dir, sys::host_pid(), ctl::kSuffix);
  if (len < 0 || static_cast<size_t>(len) >= sizeof addr.sun_path) {
    MMTIER_WARN("control socket path in %s is too long; mmtier snapshot cannot reach this process", dir);
    return false;
  }
  // Non-blocking: a connection that goes away between the poll and the
  // accept must not hold the thread (and the periodic snapshots) in accept.
  const int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  unlink(addr.sun_path);  // a dead process's of the same pid
  // Only the user may connect: the socket is made 0600 (connecting needs
  // write permission on it) and every peer is checked by SO_PEERCRED.  The
  // process's umask is not touched: other threads may be creating files.
  const bool bound = bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0 &&
                     chmod(addr.sun_path, 0600) == 0 && listen(fd, 4) == 0;
  if (!bound || stat(addr.sun_path, &g_sock_id) != 0) {
    MMTIER_WARN("cannot make the control socket %s (%s); mmtier snapshot cannot reach this process", addr.sun_path,
                strerror(errno));
    unlink(addr.sun_path);  // ours if it is there: any other was removed before the bind
    sys::close(fd);
    return false;
  }
  const int guarded = fd_guard(fd);
  if (guarded < 0) {
    unlink(addr.sun_path);
    sys::close(fd);
    return false;
  }
  g_listen = guarded;
  memcpy(g_path, addr.sun_path, sizeof g_path);
  return true;
}

void start_lock() { pthread_mutex_lock(&g_start_lock); }
void start_unlock() { pthread_mutex_unlock(&g_start_lock); }

// The child has no control thread, and the socket is its parent's: closed
// (not removed); the child makes its own when it grows as large.  It takes
// no periodic snapshots: those are the parent's.
void fork_child() {
  pthread_mutex_init(&g_start_lock, nullptr);
  if (g_listen >= 0) {
    fd_unguard(g_listen);
    sys::close(g_listen);
  }
  g_listen = -1;
  g_path[0] = 0;
  g_started = false;
  g_no_periodic = true;
}

// A restored process: no control thread and no socket of its own yet (the
// descriptor was the original's); it starts them again, and its periodic
// snapshots go on (not a thin clone's).
void restored() {
  pthread_mutex_init(&g_start_lock, nullptr);
  g_listen = -1;  // forgotten, not closed: the number is not the library's any more
  g_path[0] = 0;
  g_started = false;
  if (g_restore_note.magic == kRestoreNoteMagic && (g_restore_note.flags & kNoteThinClone)) g_no_periodic = true;
}

}  // namespace

void control_register() {
  quiesce_register(kRankControlStart, {start_lock, start_unlock, fork_child, nullptr, restored});
}

void control_start() {
  pthread_mutex_lock(&g_start_lock);
  if (!g_started) {
    g_started = true;
    if (make_socket()) {
      if (config_get().snapshot_every_ns && !g_no_periodic) agent_client_offer_snapshots(g_path);
      if (const int e = start_service_thread(control_main, "mmtier-ctl"); e != 0) {
        MMTIER_WARN("cannot start the control thread (error %d); mmtier snapshot cannot reach this process", e);
        control_exit();
      }
    } else if (config_get().snapshot_every_ns && !g_no_periodic) {
      // The periodic snapshots are the control thread's.
      MMTIER_WARN("MMTIER_SNAPSHOT_EVERY: no control socket (MMTIER_STATS_DIR is off or unusable): this process "
                  "takes no periodic snapshots");
    }
  }
  pthread_mutex_unlock(&g_start_lock);
}

void control_exit() {
  if (!g_path[0]) return;
  struct stat now;
  if (stat(g_path, &now) == 0 && now.st_ino == g_sock_id.st_ino && now.st_dev == g_sock_id.st_dev) unlink(g_path);
  g_path[0] = 0;
}

}  // namespace mmtier::detail
