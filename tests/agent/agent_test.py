#!/usr/bin/env python3
"""The node agent end to end: mmtierd sharing a node's DRAM among real
processes under libmmtier (qos_child), processes keeping to their budgets,
rebalancing when one exits, an agent restart, and bad input on its socket.
Waits are bounded polls of the agent's /status, never fixed sleeps."""
import argparse
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

ARGS = None
MiB = 1 << 20
UNIT = 2 * MiB
# A process's start-up units (its first 8 MiB) and the library's own
# explicit ones are DRAM and never moved: a budget below them leaves them.
STARTUP = 8 * UNIT

# lib/stats/agent_format.h, struct message
MSG = struct.Struct("<IIIIQIIQQQQQQQ16s160sQ108s4x")
MAGIC, VERSION = 0x51544D4D, 1
HELLO, REPORT, BUDGET = 1, 2, 3
NONE = (1 << 64) - 1


def wait_until(pred, timeout, what, step=0.1):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = pred()
        if last:
            return last
        time.sleep(step)
    raise AssertionError("not within %.0f s: %s (last: %r)" % (timeout, what, last))


class Agent:
    def __init__(self, sock, node="256M", extra=(), preexec=None, env=None):
        self.sock = sock
        self.proc = subprocess.Popen([ARGS.mmtierd, "--node-dram", node, "--socket", sock,
                                      "--listen", "127.0.0.1:0", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec,
                                     env=dict(os.environ, **(env or {})))
        line = self.proc.stdout.readline()
        assert line.startswith("listening on port"), line + self.proc.stderr.read()
        self.port = int(line.split()[-1])

    def get(self, path):
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.port, path), timeout=5) as r:
            return r.status, r.read().decode()

    def status(self):
        return json.loads(self.get("/status")[1])

    def by_pid(self):
        return {p["pid"]: p for p in self.status()["processes"]}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # never left behind, whatever state it is in
                self.proc.wait(10)
                raise AssertionError("mmtierd did not end on SIGTERM within 10 s")
        return self.proc.stderr.read()


class Child:
    def __init__(self, sock, mib=384, env=None, args=()):
        e = {k: v for k, v in os.environ.items() if not k.startswith("MMTIER_")}
        e.update({"LD_PRELOAD": ARGS.lib, "MMTIER_AGENT_SOCKET": sock, "MMTIER_DRAM_RATIO": "1:1",
                  "MMTIER_STATS_DIR": "off", "MMTIER_LOG": "info"})
        e.update(env or {})
        self.proc = subprocess.Popen([ARGS.child, str(mib), *args], env=e, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        self.pid = self.proc.pid

    def end(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(30)
        return self.proc.stderr.read()

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)


class Base(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mmtierd-")
        self.sock = os.path.join(self.dir, "agent.sock")
        self.children = []
        self.agent = None

    def tearDown(self):
        for c in self.children:
            if c.proc.poll() is None:
                c.kill()
        if self.agent:
            self.agent.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def child(self, **kw):
        c = Child(self.sock, **kw)
        self.children.append(c)
        return c

    def registered(self, n):
        return wait_until(lambda: len(self.agent.status()["processes"]) == n and self.agent.by_pid(),
                          30, "%d processes registered" % n)

    def assert_kept(self, pids, slack=STARTUP):
        """Each process's DRAM comes down to its budget (the mover demotes
        at its rate limit); its start-up units may stay over a budget
        smaller than them."""
        seen = {}

        def kept():
            st = self.agent.by_pid()
            seen.update({p: (st[p]["class"], st[p]["budget"] // MiB, st[p]["dram"] // MiB) for p in pids})
            return all(st[p]["dram"] <= max(st[p]["budget"], slack) + UNIT for p in pids) and st
        try:
            return wait_until(kept, 30, "DRAM within budgets")
        except AssertionError as e:
            raise AssertionError("%s; class, budget, DRAM (MiB) per pid: %r" % (e, seen)) from None


class QosTest(Base):
    def test_classes_weights_guarantee_and_rebalance(self):
        self.agent = Agent(self.sock, node="256M")
        a = self.child(env={"MMTIER_QOS_CLASS": "guaranteed", "MMTIER_QOS_DRAM": "64M"})
        b = self.child(env={"MMTIER_QOS_WEIGHT": "200"})
        c = self.child(env={"MMTIER_QOS_WEIGHT": "100"})
        d = self.child(env={"MMTIER_QOS_CLASS": "best-effort"})
        st = self.registered(4)
        budgets = wait_until(lambda: (lambda s: all(s[p.pid]["budget"] or p is d for p in (a, b, c)) and s)(self.agent.by_pid()),
                             10, "budgets granted")
        self.assertEqual(budgets[a.pid]["class"], "guaranteed")
        self.assertEqual(budgets[a.pid]["budget"], 64 * MiB)
        # 192 MiB left, shared 2:1 by weight (each wants more than that).
        self.assertAlmostEqual(budgets[b.pid]["budget"] / budgets[c.pid]["budget"], 2.0, delta=0.2)
        self.assertLessEqual(budgets[b.pid]["budget"] + budgets[c.pid]["budget"], 192 * MiB)
        self.assertGreaterEqual(budgets[b.pid]["budget"] + budgets[c.pid]["budget"], 192 * MiB - 2 * UNIT)
        self.assertEqual(budgets[d.pid]["budget"], 0)
        st = self.assert_kept([a.pid, b.pid, c.pid, d.pid])
        # The guarantee holder keeps its DRAM: it placed 64 MiB there and
        # nothing takes it away.
        self.assertGreaterEqual(st[a.pid]["dram"], 64 * MiB - UNIT)
        # B dies: C and D share what it had, at once.
        t0 = time.monotonic()
        b.kill()
        st = wait_until(lambda: (lambda s: b.pid not in s and s[c.pid]["budget"] >= 180 * MiB and s)(self.agent.by_pid()),
                        10, "C given B's share")
        print("rebalanced %.2f s after a process died" % (time.monotonic() - t0), file=sys.stderr)
        self.assertEqual(st[a.pid]["budget"], 64 * MiB)
        self.assertLessEqual(st[c.pid]["budget"] + st[d.pid]["budget"], 192 * MiB)
        # A new burstable process takes its share back from C and D.
        e = self.child(env={"MMTIER_QOS_WEIGHT": "100"})
        st = wait_until(lambda: (lambda s: e.pid in s and s[e.pid]["budget"] > 0 and s)(self.agent.by_pid()), 10,
                        "the new process served")
        self.assertAlmostEqual(st[c.pid]["budget"] / st[e.pid]["budget"], 1.0, delta=0.1)
        self.assertEqual(st[d.pid]["budget"], 0)
        self.assert_kept([a.pid, c.pid, d.pid, e.pid])
        # The processes said so themselves.
        for ch in (a, c, d, e):
            self.assertIn("node agent: registered", ch.end())
        # Metrics of the ledger.
        code, text = self.agent.get("/metrics")
        self.assertEqual(code, 200)
        self.assertIn("mmtier_node_dram_budget_bytes %d" % (256 * MiB), text)
        self.assertIn('mmtier_node_processes{class="guaranteed"}', text)

    def test_no_agent_means_working_alone_and_a_restart_keeps_budgets(self):
        # No agent yet: the process runs on its own policy (1:1, no budget).
        a = self.child(env={"MMTIER_QOS_CLASS": "guaranteed", "MMTIER_QOS_DRAM": "32M"})
        b = self.child(mib=256)
        self.agent = Agent(self.sock, node="128M")
        st = self.registered(2)
        st = wait_until(lambda: (lambda s: s[b.pid]["budget"] > 0 and s)(self.agent.by_pid()), 10, "budgets")
        self.assertEqual(st[a.pid]["budget"], 32 * MiB)
        before = self.assert_kept([a.pid, b.pid])
        err = self.agent.stop()
        self.assertIn("stopped", err)
        self.assertFalse(os.path.exists(self.sock))
        # Away: the processes keep their budgets (30 s) and reconnect.
        self.agent = Agent(self.sock, node="128M")
        t0 = time.monotonic()
        st = wait_until(lambda: (lambda s: len(s) == 2 and s[b.pid]["budget"] > 0 and s)(self.agent.by_pid()), 15,
                        "both registered again")
        print("re-registered %.2f s after the agent restarted" % (time.monotonic() - t0), file=sys.stderr)
        self.assertEqual(st[a.pid]["budget"], 32 * MiB, st)
        self.assertEqual(st[a.pid]["class"], "guaranteed")
        self.assertLessEqual(st[b.pid]["dram"], before[b.pid]["budget"] + UNIT)


class ForkTest(Base):
    def test_a_fork_child_sharing_its_parents_memory_does_not_take_a_share(self):
        """A worker forked from a registered process maps mostly its
        parent's memory: it does not register (a Redis BGSAVE must not
        halve its server's budget), and says so."""
        self.agent = Agent(self.sock, node="256M")
        c = Child(self.sock, env={"MMTIER_LOG": "debug"}, args=["fork"])
        self.children.append(c)
        line = c.proc.stdout.readline().split()
        self.assertEqual(line[0], "forked")
        child_pid = int(line[1])
        st = self.registered(1)
        self.assertIn(c.pid, st)
        err = []

        def said():
            err.append(os.read(c.proc.stderr.fileno(), 65536).decode(errors="replace"))
            return "not registering yet" in "".join(err)
        wait_until(said, 30, "the fork child's word that it does not register")
        self.assertEqual(list(self.agent.by_pid()), [c.pid])
        self.assertNotEqual(child_pid, c.pid)


class ScheduleTest(Base):
    def capsules(self, d, pid):
        try:
            return len([n for n in os.listdir(d) if n.startswith("auto-%d-" % pid) and n.endswith(".mmtcap")])
        except FileNotFoundError:
            return 0

    def test_the_agent_takes_periodic_snapshots_one_at_a_time_and_hands_them_back(self):
        """Processes with MMTIER_SNAPSHOT_EVERY offer their periodic
        snapshots to the agent, which takes them through their control
        sockets one process at a time; their own timers wait meanwhile and
        take over again when the agent goes away."""
        stats = tempfile.mkdtemp(prefix="mmtierd-stats-", dir="/dev/shm")
        self.addCleanup(shutil.rmtree, stats, True)
        self.agent = Agent(self.sock, node="256M")
        kids, dirs = [], []
        for i in range(2):
            d = os.path.join(self.dir, "caps%d" % i)
            dirs.append(d)
            kids.append(self.child(mib=96, env={"MMTIER_SNAPSHOT_EVERY": "2s", "MMTIER_SNAPSHOT_DIR": d,
                                                "MMTIER_STATS_DIR": stats}))
        st = wait_until(lambda: (lambda s: len(s) == 2 and all(p["snapshots"] >= 3 for p in s.values()) and s)(
            self.agent.by_pid()), 60, "three snapshots of each taken by the agent")
        for k, d in zip(kids, dirs):
            self.assertEqual(st[k.pid]["snapshot_every_s"], 2.0)
            self.assertEqual(st[k.pid]["snapshot_failures"], 0, st[k.pid]["snapshot_error"])
            # Only the agent's: the process's own timer waited (one more
            # may be durable and not yet answered).
            n = self.capsules(d, k.pid)
            self.assertGreaterEqual(n, st[k.pid]["snapshots"])
            self.assertLessEqual(n, self.agent.by_pid()[k.pid]["snapshots"] + 1)
        self.assertIn('mmtier_agent_snapshots_total{result="ok"}', self.agent.get("/metrics")[1])
        # The agent goes: each process's own timer takes over.
        before = [self.capsules(d, k.pid) for k, d in zip(kids, dirs)]
        self.agent.stop()
        self.agent = None
        wait_until(lambda: all(self.capsules(d, k.pid) >= b + 2 for k, d, b in zip(kids, dirs, before)), 30,
                   "snapshots by the processes' own timers")
        for k in kids:
            err = k.end()
            self.assertIn("node agent: takes over the periodic snapshots", err)


class EverythingOnTest(Base):
    def test_every_layer_registers_its_fork_handlers(self):
        """With the agent's client, the control thread and the snapshot
        signal's trigger all on, each layer's fork and restore handlers
        find room in the quiesce sequence (three share one rank): no error
        at all, and a fork child runs on."""
        self.agent = Agent(self.sock)
        stats = tempfile.mkdtemp(prefix="mmtierd-stats-", dir="/dev/shm")
        self.addCleanup(shutil.rmtree, stats, True)
        c = Child(self.sock, env={"MMTIER_SNAPSHOT_SIGNAL": "USR2", "MMTIER_SNAPSHOT_EVERY": "1h",
                                  "MMTIER_STATS_DIR": stats, "MMTIER_SNAPSHOT_DIR": self.dir}, args=["fork"])
        self.children.append(c)
        self.assertEqual(c.proc.stdout.readline().split()[0], "forked")
        self.registered(1)
        err = c.end()
        self.assertNotIn("error", err)


class ContainerTest(Base):
    def contained_child(self, env=None):
        """A child under libmmtier in PID and mount namespaces of its own,
        with its own /dev/shm (a container); its host pid."""
        if os.geteuid() != 0:
            self.skipTest("namespaces need root")
        e = {k: v for k, v in os.environ.items() if not k.startswith("MMTIER_")}
        e.update(env or {})
        script = ('mount -t tmpfs tmpfs /dev/shm && exec env LD_PRELOAD="$0" MMTIER_AGENT_SOCKET="$1" '
                  'MMTIER_DRAM_RATIO=1:1 "$2" 96')
        p = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private", "sh", "-c",
                              script, ARGS.lib, self.sock, ARGS.child], env=e, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (p.kill(), p.wait()))
        self.assertEqual(p.stdout.readline().strip(), "ready")
        with open("/proc/%d/task/%d/children" % (p.pid, p.pid)) as f:
            (host,) = [int(x) for x in f.read().split()]
        self.assertNotEqual(host, 1)
        return host

    def test_its_periodic_snapshots_are_taken_by_the_agent(self):
        """Its control socket is in its own /dev/shm and names the pid it
        sees: the agent checks and reaches it through /proc/PID/root, and
        takes its snapshots."""
        self.agent = Agent(self.sock)
        caps = os.path.join(self.dir, "capsules")
        os.mkdir(caps)
        host = self.contained_child({"MMTIER_SNAPSHOT_EVERY": "1s", "MMTIER_SNAPSHOT_DIR": caps})
        st = wait_until(lambda: (lambda p: p and p["snapshots"] >= 2 and p)(self.agent.by_pid().get(host)), 30,
                        "two snapshots taken by the agent")
        self.assertEqual(st["snapshot_every_s"], 1.0)
        self.assertEqual(st["snapshot_failures"], 0, st["snapshot_error"])
        # Named by the pid it sees, in its capsule directory.
        self.assertTrue([n for n in os.listdir(caps) if n.startswith("auto-1-")], os.listdir(caps))

    def test_a_process_in_a_container_is_served_with_its_statistics(self):
        """The agent knows it by its host pid (SO_PEERCRED) and finds its
        statistics page through /proc/PID/root, under the pid it sees
        itself as, for /metrics."""
        self.agent = Agent(self.sock)
        host = self.contained_child()
        st = wait_until(lambda: self.agent.by_pid().get(host), 30, "registered under its host pid")
        self.assertEqual(st["comm"], os.path.basename(ARGS.child)[:15])
        line = 'mmtier_placed_bytes{pid="%d",' % host
        text = wait_until(lambda: (lambda t: line in t and t)(self.agent.get("/metrics")[1]), 10,
                          "its statistics page served")
        placed = sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(line))
        self.assertGreaterEqual(placed, 96 * MiB)
        self.assertNotIn('pid="1"', text)  # never under the pid it sees
        # What a container names is its own affair: a statistics directory
        # of "/" (nothing published) costs the agent nothing.
        odd = self.contained_child({"MMTIER_STATS_DIR": "/"})
        wait_until(lambda: self.agent.by_pid().get(odd), 30, "the second one registered")
        text = self.agent.get("/metrics")[1]
        self.assertIn(line, text)
        self.assertNotIn('mmtier_placed_bytes{pid="%d",' % odd, text)
        self.assertIsNone(self.agent.proc.poll())


class BandwidthTest(Base):
    def test_bandwidth_policy_is_left_alone_but_keeps_to_a_budget(self):
        """MMTIER_POLICY=bandwidth: units interleaved by the ratio, no
        promotion however hot, demotions only down to a budget."""
        self.agent = Agent(self.sock, node="64M")
        b = self.child(env={"MMTIER_POLICY": "bandwidth", "MMTIER_REPORT": "stderr"})
        st = self.registered(1)
        st = wait_until(lambda: (lambda s: s[b.pid]["budget"] > 0 and s)(self.agent.by_pid()), 10, "a budget")
        self.assertEqual(st[b.pid]["budget"], 64 * MiB)
        self.assert_kept([b.pid])
        err = b.end()
        self.assertIn("policy bandwidth", err)
        self.assertIn("no access tracking", err)
        self.assertIn("node agent: 64.0 MiB, class burstable", err)
        mover = [l for l in err.splitlines() if "mover:" in l and "promotions" in l]
        self.assertEqual(len(mover), 1, err)
        self.assertIn(" 0 promotions", mover[0])
        self.assertNotIn(" 0 demotions", mover[0])  # it did come down to the budget


class BadInputTest(Base):
    def raw(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(self.sock)
        s.settimeout(5)
        return s

    def hello(self, **f):
        v = dict(magic=MAGIC, version=VERSION, type=HELLO, qos=1, guarantee=0, weight=100, flags=0, demand=0,
                 dram=0, pmem=0, held=NONE, budget=0, generation=0, start=0, comm=b"fake", note=b"", every=0,
                 control=b"")
        v.update(f)
        return MSG.pack(*v.values())

    def test_garbage_closes_the_connection_and_counts(self):
        self.agent = Agent(self.sock)
        s = self.raw()
        s.send(b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(s.recv(4096), b"")  # closed, nothing granted
        s = self.raw()
        s.send(self.hello(magic=1))
        self.assertEqual(s.recv(4096), b"")
        s = self.raw()
        s.send(self.hello(type=REPORT))  # a report before hello
        self.assertEqual(s.recv(4096), b"")
        self.assertIn("mmtier_agent_rejected_messages_total 3", self.agent.get("/metrics")[1])
        self.assertEqual(self.agent.status()["processes"], [])
        code, _ = 0, None
        try:
            self.agent.get("/nothing")
        except urllib.error.HTTPError as e:
            code = e.code
        self.assertEqual(code, 404)

    def test_claims_get_nothing_they_should_not(self):
        self.agent = Agent(self.sock, node="256M", extra=("--guaranteed-max", "50"))
        # A guarantee beyond what the node may guarantee: burstable, with a
        # note; a demand beyond what it placed: not believed.
        # A control socket that is not its own (another pid's name, or a
        # file that is no socket) gets no snapshots asked of anyone.
        other = os.path.join(self.dir, "1.ctl")
        open(other, "w").close()
        s = self.raw()
        s.send(self.hello(qos=0, guarantee=200 * MiB, demand=100 << 30, dram=16 * MiB, pmem=48 * MiB,
                          every=2 * 10**9, control=other.encode()))
        m = MSG.unpack(s.recv(4096))
        self.assertEqual(m[2], BUDGET)
        self.assertEqual(m[3], 1)  # served as burstable
        self.assertIn(b"not granted", m[15])
        self.assertEqual(m[11], 64 * MiB)  # all it placed, not 100 GiB
        st = self.agent.status()["processes"][0]
        self.assertEqual(st["pid"], os.getpid())  # from SO_PEERCRED
        self.assertEqual(st["demand"], 64 * MiB)
        self.assertEqual(st["snapshot_every_s"], 0)
        self.assertEqual(m[6] & 1, 0)  # flags: the agent does not take its snapshots
        s.close()
        wait_until(lambda: self.agent.status()["processes"] == [], 10, "gone when its connection ends")

    def test_settings_from_the_environment_and_strict_numbers(self):
        # What a container passes from a ConfigMap: bad values (a number
        # with junk, an unexpanded $(VAR), out of range) stop the agent
        # with the setting named, never turn into 0.
        for env, args, said in (({"MMTIERD_GUARANTEED_MAX": "90x"}, (), "MMTIERD_GUARANTEED_MAX"),
                                ({}, ("--guaranteed-max", "$(MMTIERD_GUARANTEED_MAX)"), "--guaranteed-max"),
                                ({"MMTIERD_MAX_PER_USER": "0"}, (), "MMTIERD_MAX_PER_USER"),
                                ({"MMTIERD_GUARANTEED_UIDS": "0,x"}, (), "MMTIERD_GUARANTEED_UIDS"),
                                ({}, ("--max-per-user", "12abc"), "--max-per-user")):
            p = subprocess.run([ARGS.mmtierd, "--node-dram", "256M", "--socket", self.sock, "--listen", "off",
                                *args], env=dict(os.environ, **env), capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 2, (env, args, p.stderr))
            self.assertIn(said, p.stderr)
        # A good one applies; the command line wins over it.
        for env, args, served in (({"MMTIERD_GUARANTEED_MAX": "50"}, (), 1),
                                  ({"MMTIERD_GUARANTEED_MAX": "50"}, ("--guaranteed-max", "100"), 0)):
            self.agent = Agent(self.sock, node="256M", extra=args, env=env)
            s = self.raw()
            s.send(self.hello(qos=0, guarantee=200 * MiB, demand=200 * MiB, dram=100 * MiB, pmem=100 * MiB))
            m = MSG.unpack(s.recv(4096))
            self.assertEqual(m[3], served, (env, args))  # 0 guaranteed, 1 burstable
            s.close()
            self.agent.stop()
            self.agent = None

    def test_one_user_cannot_take_every_registration_or_descriptor(self):
        # --max-per-user: the user's next connection is closed at once.
        self.agent = Agent(self.sock, extra=("--max-per-user", "3"))
        held = [self.raw() for _ in range(3)]
        for s in held:
            s.send(self.hello())
            self.assertEqual(MSG.unpack(s.recv(4096))[2], BUDGET)
        s = self.raw()
        self.assertEqual(s.recv(4096), b"")
        self.assertIn("mmtier_agent_rejected_messages_total 1", self.agent.get("/metrics")[1])
        self.agent.stop()
        # Out of descriptors (a low limit here): each connection it cannot
        # hold is closed, not left pending (which would keep the loop
        # awake), and the agent serves again once registrations end.
        import resource
        self.agent = Agent(self.sock, extra=("--listen", "127.0.0.1:0"),
                           preexec=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (24, 24)))
        conns = [self.raw() for _ in range(30)]
        served = closed = 0
        for s in conns:
            s.settimeout(5)  # a connection left pending would time out here
            try:
                s.send(self.hello())
                r = s.recv(4096)
                served += len(r) == MSG.size
                closed += r == b""
            except (ConnectionResetError, BrokenPipeError):
                closed += 1
        self.assertGreater(served, 0)
        self.assertEqual(served + closed, len(conns))
        self.assertGreater(closed, 0)
        for s in conns:
            s.close()
        def healthy():
            try:
                return self.agent.get("/healthz")[0]
            except OSError:  # shed while the agent still had no descriptor
                return None
        self.assertEqual(wait_until(healthy, 10, "HTTP served again"), 200)

    def test_a_second_agent_on_the_same_socket_refuses(self):
        self.agent = Agent(self.sock)
        p = subprocess.run([ARGS.mmtierd, "--node-dram", "1G", "--socket", self.sock, "--listen", "off"],
                           capture_output=True, text=True, timeout=10)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("another mmtierd serves", p.stderr)
        p = subprocess.run([ARGS.mmtierd, "--socket", self.sock + "2"], capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--node-dram", p.stderr)


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--mmtierd", required=True)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--child", required=True)
    ARGS, rest = ap.parse_known_args()
    unittest.main(argv=[sys.argv[0], "-v", *rest])


if __name__ == "__main__":
    main()
