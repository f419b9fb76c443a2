#!/usr/bin/env python3
"""End-to-end tests of the mmtier command (cli/).

Run by ctest, one test class per ctest entry:
  cli_test.py --mmtier BIN --lib LIBMMTIER --child CHILD --fake FAKE --maker MAKER --version V CLASS

The processes watched are real: cli_stats_child runs under
LD_PRELOAD=libmmtier.so and prints what the public API says (one JSON line),
so `mmtier stat` can be compared with it; cli_fake_publisher publishes a page
with exactly known figures; cli_capsule_maker writes snapshot capsules of
known contents, status and damage.  Every test uses its own MMTIER_STATS_DIR, so
tests never see each other's processes.  Waiting is always for an event
(a line, a file, a screen) with a deadline, never a fixed sleep.
"""
import argparse
import contextlib
import errno
import hashlib
import json
import os
import random
import re
import select
import shlex
import struct
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import xml.etree.ElementTree as ET

ARGS = None
MiB = 1 << 20
SVG_NS = "{http://www.w3.org/2000/svg}"


def base_env(stats_dir):
    """The environment without any MMTIER_* or LD_PRELOAD of the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMTIER_") and k != "LD_PRELOAD"}
    env["MMTIER_STATS_DIR"] = stats_dir
    return env


def mmtier(args, stats_dir, env=None, timeout=60, **kw):
    e = base_env(stats_dir)
    e.update(env or {})
    return subprocess.run([ARGS.mmtier] + args, env=e, capture_output=True, text=True, timeout=timeout, **kw)


def read_line(stream, timeout, what):
    """One line from a pipe, waiting at most timeout seconds."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = stream.fileno()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no line from {what} within {timeout} s (got {buf!r})")
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        b = os.read(fd, 1)
        if not b:
            raise AssertionError(f"{what} closed its output (got {buf!r})")
        if b == b"\n":
            return buf.decode()
        buf += b


def kill_if_alive(pid):
    """SIGKILL for a process a test may have left running (cleanup): one
    that has ended meanwhile is no error."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_until(predicate, timeout, what, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def text_of(path):
    """A file's text ("" when it is not there)."""
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):  # the latter: a /proc file of a process gone while read
        return ""


def free_pid():
    """A pid no process has: one of a child that has been reaped."""
    while True:
        p = subprocess.Popen(["true"])
        p.wait()
        if not os.path.exists(f"/proc/{p.pid}"):
            return p.pid


class Child:
    """cli_stats_child under libmmtier; .api is what the API said."""

    def __init__(self, stats_dir, mib=48, env=None):
        e = base_env(stats_dir)
        e.update(env or {})
        e["LD_PRELOAD"] = ARGS.lib
        self.mib = mib
        self.p = subprocess.Popen([ARGS.child, "--mib", str(mib)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
        self.pid = self.p.pid
        self.api = self.read_json()

    def read_json(self):
        line = read_line(self.p.stdout, 60, "cli_stats_child")
        return json.loads(line)

    def stats(self):
        self.p.stdin.write(b"stats\n")
        self.p.stdin.flush()
        return self.read_json()

    def close(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.write(b"exit\n")
                self.p.stdin.flush()
            except BrokenPipeError:
                pass
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        for s in (self.p.stdin, self.p.stdout, self.p.stderr):
            s.close()


class Fake:
    """cli_fake_publisher: a page with the given figures."""

    def __init__(self, stats_dir, fields, comm="fakeproc"):
        self.p = subprocess.Popen([ARGS.fake, "--dir", stats_dir, "--comm", comm] +
                                  [f"{k}={v}" for k, v in fields.items()],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=base_env(stats_dir))
        self.pid = self.p.pid
        assert read_line(self.p.stdout, 30, "cli_fake_publisher") == "ready"

    def add(self, field, n):
        self.p.stdin.write(f"add {field} {n}\n".encode())
        self.p.stdin.flush()
        assert read_line(self.p.stdout, 30, "cli_fake_publisher") == "ok"

    def close(self):
        if self.p.poll() is None:
            self.p.stdin.write(b"exit\n")
            self.p.stdin.flush()
            self.p.wait(20)
        self.p.stdin.close()
        self.p.stdout.close()


class Base(unittest.TestCase):
    def setUp(self):
        # On tmpfs, as the library requires of a statistics directory.
        self.dir = tempfile.mkdtemp(prefix="mmtier-cli-", dir="/dev/shm")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def child(self, **kw):
        c = Child(self.dir, **kw)
        self.addCleanup(c.close)
        return c

    def fake(self, fields, comm="fakeproc"):
        f = Fake(self.dir, fields, comm)
        self.addCleanup(f.close)
        return f

    def stat_json(self, pid):
        r = mmtier(["stat", str(pid), "--json"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        return json.loads(r.stdout)

    def assert_one_line_error(self, r, status, message):
        self.assertEqual(r.returncode, status, r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertEqual(r.stderr, message + "\n")


# ---------------------------------------------------------------------------
class HelpTest(Base):
    SECTIONS = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "ENVIRONMENT", "EXAMPLES"]

    def help(self, *args):
        r = mmtier(list(args), self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def sections(self, text):
        return [l for l in text.splitlines() if l and not l[0].isspace()]

    def test_main_help_is_a_manual(self):
        text = self.help("--help")
        self.assertEqual(text, self.help("help"))
        self.assertEqual(text, self.help("-h"))
        for s in self.SECTIONS + ["COMMANDS", "FILES"]:
            self.assertIn(s, self.sections(text))
        for cmd in ["run", "stat", "top", "plot", "snapshot"]:
            self.assertRegex(text, rf"\n    mmtier {cmd} ")
        # Without arguments: the manual on stderr and usage status.
        r = mmtier([], self.dir)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr, text)

    def test_each_command_has_a_manual(self):
        for cmd in ["run", "stat", "top", "plot", "snapshot", "restore", "rollback", "capsule", "clone", "migrate", "receive"]:
            text = self.help(cmd, "--help")
            self.assertEqual(text, self.help("help", cmd), cmd)
            self.assertEqual(text, self.help(cmd, "-h"), cmd)
            for s in self.SECTIONS:
                self.assertIn(s, self.sections(text), f"{cmd}: {s}")
            self.assertIn(f"mmtier {cmd} - ", text)
            for line in text.splitlines():
                self.assertLessEqual(len(line), 80, f"{cmd}: {line!r}")

    def test_every_documented_option_is_accepted(self):
        for cmd in ["stat", "top", "plot", "run", "snapshot"]:
            text = self.help(cmd, "--help")
            options = text.split("\nOPTIONS\n")[1].split("\nEXIT STATUS\n")[0]
            names = set(re.findall(r"^    (-[a-z], --[-a-z]+|--[-a-z]+)", options, re.M))
            self.assertTrue(names, cmd)
            for n in names:
                for opt in n.split(", "):
                    # The option, then --help: either the manual, or an
                    # error about the option's value, never "unknown".
                    r = mmtier([cmd, opt, "--help"], self.dir, timeout=30)
                    self.assertNotIn("unknown option", r.stderr, f"{cmd} {opt}")

    def test_version(self):
        r = mmtier(["--version"], self.dir)
        self.assertEqual(r.returncode, 0)
        self.assertEqual(r.stdout, f"mmtier {ARGS.version}\n")

    def test_unknown_command_or_topic(self):
        r = mmtier(["frobnicate"], self.dir)
        self.assert_one_line_error(r, 2, "mmtier: unknown command \"frobnicate\" (see 'mmtier --help')")
        r = mmtier(["help", "frobnicate"], self.dir)
        self.assertEqual(r.returncode, 2)


# ---------------------------------------------------------------------------
class RunTest(Base):
    def test_exit_status_and_signals_are_the_commands(self):
        r = mmtier(["run", "--", "sh", "-c", "exit 7"], self.dir)
        self.assertEqual(r.returncode, 7, r.stderr)
        r = mmtier(["run", "sh", "-c", "exit 0"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = mmtier(["run", "--", "sh", "-c", "kill -TERM $$"], self.dir)
        self.assertEqual(r.returncode, -signal.SIGTERM, r.stderr)

    def test_command_runs_under_libmmtier(self):
        r = mmtier(["run", "--", "cat", "/proc/self/maps"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("libmmtier.so", r.stdout)
        # Existing LD_PRELOAD entries are kept, after the library.
        r = mmtier(["run", "--", "printenv", "LD_PRELOAD"], self.dir, env={"LD_PRELOAD": "libm.so.6"})
        self.assertEqual(r.returncode, 0, r.stderr)
        first, rest = r.stdout.strip().split(":", 1)
        self.assertEqual(os.path.realpath(first), os.path.realpath(ARGS.lib))
        self.assertEqual(rest, "libm.so.6")
        # MMTIER_LIBRARY chooses the library.
        r = mmtier(["run", "--", "printenv", "LD_PRELOAD"], self.dir, env={"MMTIER_LIBRARY": ARGS.lib})
        self.assertEqual(r.stdout.strip(), os.path.abspath(ARGS.lib))
        r = mmtier(["run", "--", "true"], self.dir, env={"MMTIER_LIBRARY": "/nonexistent/libmmtier.so"})
        self.assert_one_line_error(r, 1, 'mmtier: MMTIER_LIBRARY="/nonexistent/libmmtier.so": no such file')

    def test_options_become_the_librarys_variables(self):
        r = mmtier(["run", "--policy", "dram-first", "--no-promote", "--dram-limit=64M", "--pmem-limit", "1G",
                    "--log", "error", "--pmem-path", self.dir, "--", "printenv", "MMTIER_POLICY", "MMTIER_PROMOTE",
                    "MMTIER_DRAM_LIMIT", "MMTIER_PMEM_LIMIT", "MMTIER_LOG", "MMTIER_PMEM_PATH"],
                   self.dir, env={"MMTIER_POLICY": "ratio"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ["dram-first", "0", "64M", "1G", "error", self.dir])
        # And the process really runs with them: its published page says so.
        p = subprocess.Popen([ARGS.mmtier, "run", "--dram-ratio", "1:3", "--no-promote", "--stats-dir", self.dir,
                              "--", ARGS.child, "--mib", "24"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=base_env("/nonexistent"))
        try:
            api = json.loads(read_line(p.stdout, 60, "the child"))
            self.assertEqual(api["pid"], p.pid)  # run execs: the command keeps its pid
            j = self.stat_json(p.pid)
            self.assertEqual((j["policy"], j["ratio_dram"], j["ratio_pmem"], j["promote"]), ("ratio", 1, 3, False))
            self.assertFalse(j["mover_running"])
        finally:
            p.stdin.close()
            p.wait(20)
            p.stdout.close()
        self.assertEqual(p.returncode, 0)
        # Gone at exit.
        self.assertFalse(os.path.exists(os.path.join(self.dir, f"{p.pid}.stats")))

    def library_message(self, env):
        """What libmmtier itself prints for a bad environment."""
        e = base_env(self.dir)
        e.update(env)
        e["LD_PRELOAD"] = ARGS.lib
        r = subprocess.run(["/bin/true"], env=e, capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertTrue(r.stderr.startswith("mmtier: invalid "), r.stderr)
        return r.stderr

    def test_invalid_values_give_the_librarys_message(self):
        cases = [
            (["--dram-ratio", "x"], {"MMTIER_DRAM_RATIO": "x"}, {}),
            (["--dram-limit", "12Q"], {"MMTIER_DRAM_LIMIT": "12Q"}, {}),
            (["--pmem-path", "/nonexistent/dir"], {"MMTIER_PMEM_PATH": "/nonexistent/dir"}, {}),
            (["--policy", "fastest"], {"MMTIER_POLICY": "fastest"}, {}),
            (["--log", "loud"], {"MMTIER_LOG": "loud"}, {}),
            # A bad variable already in the environment is caught too.
            ([], {"MMTIER_SCAN_INTERVAL": "7"}, {"MMTIER_SCAN_INTERVAL": "7"}),
        ]
        for opts, lib_env, env in cases:
            marker = os.path.join(self.dir, "ran")
            r = mmtier(["run"] + opts + ["--", "touch", marker], self.dir, env=env)
            self.assertEqual(r.returncode, 1, opts)
            self.assertEqual(r.stdout, "")
            self.assertEqual(r.stderr, self.library_message(lib_env), opts)
            self.assertFalse(os.path.exists(marker), "the command must not run")

    def test_usage_errors(self):
        r = mmtier(["run", "--dram-ratio", "1:2", "--dram-limit", "1G", "--", "true"], self.dir)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        self.assertIn("--dram-ratio and --dram-limit cannot be used together", r.stderr)
        r = mmtier(["run"], self.dir)
        self.assert_one_line_error(r, 2, "mmtier run: no command given (see 'mmtier run --help')")
        r = mmtier(["run", "--bogus", "--", "true"], self.dir)
        self.assert_one_line_error(r, 2, "mmtier run: unknown option --bogus (see 'mmtier run --help')")
        r = mmtier(["run", "--policy"], self.dir)
        self.assertEqual(r.returncode, 2)

    def test_command_not_found_or_not_executable(self):
        r = mmtier(["run", "--", "no-such-command-mmtier"], self.dir)
        self.assert_one_line_error(r, 127, "mmtier: no-such-command-mmtier: command not found")
        script = os.path.join(self.dir, "script.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(script, 0o644)
        r = mmtier(["run", "--", script], self.dir)
        self.assertEqual(r.returncode, 126, r.stderr)
        self.assertTrue(r.stderr.startswith(f"mmtier: {script}: "), r.stderr)


# ---------------------------------------------------------------------------
class StatTest(Base):
    def check_against_api(self, j, api, exact_mover):
        unit = api["unit_size"]
        self.assertEqual(j["pid"], api["pid"])
        self.assertEqual(j["comm"], os.path.basename(ARGS.child)[:15])
        self.assertEqual(j["unit_size_bytes"], unit)
        # The resident figures are the API's, unless stat found them older
        # than 2 s and had the process measure them again.
        remeasured = j["resident_unix_ns"] > api["api_done_unix_ns"]
        for tier in ("dram", "pmem"):
            t, a = j["tiers"][tier], api[tier]
            self.assertEqual(t["placed_bytes"], a["units"] * unit, tier)
            self.assertEqual(t["peak_placed_bytes"], a["peak_units"] * unit, tier)
            if not remeasured:
                self.assertEqual(t["resident_bytes"], a["resident_bytes"], tier)
            self.assertEqual(t["limit_bytes"], a["limit_bytes"], tier)
        self.assertEqual(j["fallbacks"], api["fallbacks"])
        self.assertEqual(j["mmap_bytes"], api["mapped_mmap_bytes"])
        self.assertEqual(j["forks"], api["forks"])
        self.assertEqual(j["mover_running"], bool(api["running"]))
        pairs = [("scans", "scans"), ("promotions", "promotions"), ("demotions", "demotions"),
                 ("migrations_failed", "migrations_failed"), ("map_count_holds", "map_count_holds"),
                 ("migrated_bytes", "bytes_migrated"),
                 ("samples", "samples"), ("tracking_faults", "tracking_faults")]
        for k, ak in pairs:
            if exact_mover:
                self.assertEqual(j[k], api[ak], k)
            else:
                self.assertGreaterEqual(j[k], api[ak], k)
        if exact_mover:
            self.assertEqual(j["dram_budget_bytes"], api["dram_budget_bytes"])
            self.assertEqual(j["heat_histogram"], api["heat_histogram"])
        # What was allocated and touched is resident on one tier or the other.
        resident = j["tiers"]["dram"]["resident_bytes"] + j["tiers"]["pmem"]["resident_bytes"]
        self.assertGreaterEqual(resident, api["allocated_bytes"])
        self.assertIsNotNone(j["resident_unix_ns"])

    def test_stat_agrees_with_the_api_without_mover(self):
        c = self.child(mib=48, env={"MMTIER_PROMOTE": "0", "MMTIER_DRAM_LIMIT": "20M"})
        j = self.stat_json(c.pid)
        self.check_against_api(j, c.api, exact_mover=True)
        self.assertFalse(j["promote"])
        self.assertEqual(j["tiers"]["dram"]["limit_bytes"], 20 * MiB)
        self.assertIsNone(j["tiers"]["pmem"]["limit_bytes"])
        self.assertEqual(j["uid"], os.geteuid())
        # The readable view shows the same figures.
        r = mmtier(["stat", str(c.pid)], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"{c.pid} (cli_stats_child)", r.stdout)
        self.assertRegex(r.stdout, r"\nlimit +20\.0 MiB +none\n")
        self.assertRegex(r.stdout, r"\npromotion +off")

    def test_stat_agrees_with_the_api_with_mover(self):
        c = self.child(mib=48)
        before = c.api
        j = self.stat_json(c.pid)
        after = c.stats()
        self.check_against_api(j, before, exact_mover=False)
        # The mover's counters only grow: what stat read lies between two
        # calls of the API made before and after it.
        for k, ak in [("scans", "scans"), ("promotions", "promotions"), ("demotions", "demotions"),
                      ("migrated_bytes", "bytes_migrated")]:
            self.assertLessEqual(j[k], after[ak], k)
        self.assertTrue(j["promote"])

    def test_a_process_in_a_container_by_its_host_pid(self):
        # PID and mount namespaces of its own with its own /dev/shm (what a
        # container has): its page is under the pid it sees (1) in a
        # directory the host cannot see.  `mmtier stat HOSTPID` finds it
        # through /proc/PID/root: in the default directory, and in a
        # MMTIER_STATS_DIR of its own.
        if os.geteuid() != 0:
            self.skipTest("namespaces need root")
        for inner_dir in (None, "/dev/shm/own-stats"):
            script = "mount -t tmpfs tmpfs /dev/shm && "
            if inner_dir:
                script += "mkdir -m 0700 %s && export MMTIER_STATS_DIR=%s && " % (inner_dir, inner_dir)
            else:
                script += "unset MMTIER_STATS_DIR && "
            script += 'exec env LD_PRELOAD="$0" MMTIER_PROMOTE=0 "$@"'
            e = base_env(self.dir)
            p = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private",
                                  "sh", "-c", script, ARGS.lib, ARGS.child, "--mib", "48"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
            self.addCleanup(lambda p=p: (p.kill(), p.wait()))
            api = json.loads(read_line(p.stdout, 60, "cli_stats_child in its namespaces"))
            self.assertEqual(api["pid"], 1)  # as it sees itself
            children = text_of("/proc/%d/task/%d/children" % (p.pid, p.pid)).split()
            self.assertEqual(len(children), 1, children)
            host = int(children[0])
            nspid = [l for l in text_of("/proc/%d/status" % host).splitlines() if l.startswith("NSpid:")][0]
            self.assertEqual(nspid.split()[1:], [str(host), "1"])
            # The reader's own MMTIER_STATS_DIR (self.dir) does not matter.
            j = self.stat_json(host)
            self.assertEqual(j["pid"], host)
            unit = api["unit_size"]
            for tier in ("dram", "pmem"):
                self.assertEqual(j["tiers"][tier]["placed_bytes"], api[tier]["units"] * unit, tier)
            self.assertGreater(j["tiers"]["pmem"]["placed_bytes"], 0)
            r = mmtier(["stat", str(host)], self.dir)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("%d (cli_stats_child)" % host, r.stdout)
            p.stdin.write(b"exit\n")
            p.stdin.flush()
            self.assertEqual(p.wait(20), 0)
        # Gone: no such process, not a stale answer.
        r = mmtier(["stat", str(host)], self.dir)
        self.assertEqual(r.returncode, 1)

    def test_all_lists_every_process_once(self):
        a = self.child(mib=24, env={"MMTIER_PROMOTE": "0"})
        b = self.child(mib=40, env={"MMTIER_PROMOTE": "0"})
        r = mmtier(["stat", "--all", "--json"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        procs = json.loads(r.stdout)["processes"]
        self.assertEqual([p["pid"] for p in procs], sorted([a.pid, b.pid]))
        for p in procs:
            self.check_against_api(p, a.api if p["pid"] == a.pid else b.api, exact_mover=True)
        r = mmtier(["stat", "--all"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 3)
        self.assertEqual(lines[0].split()[:3], ["PID", "COMMAND", "DRAM-RES"])
        self.assertEqual(sorted(int(l.split()[0]) for l in lines[1:]), sorted([a.pid, b.pid]))

    def test_prometheus_parses_and_matches_json(self):
        from prometheus_client.parser import text_string_to_metric_families
        a = self.child(mib=24, env={"MMTIER_PROMOTE": "0", "MMTIER_DRAM_LIMIT": "8M"})
        b = self.child(mib=24, env={"MMTIER_PROMOTE": "0"})
        r = mmtier(["stat", "--all", "--prometheus"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        families = {f.name: f for f in text_string_to_metric_families(r.stdout)}
        for name, f in families.items():
            self.assertNotEqual(f.type, "unknown", name)
            self.assertTrue(f.documentation, name)
        self.assertEqual(families["mmtier_promotions"].type, "counter")
        self.assertEqual(families["mmtier_resident_bytes"].type, "gauge")
        jr = mmtier(["stat", "--all", "--json"], self.dir)
        by_pid = {p["pid"]: p for p in json.loads(jr.stdout)["processes"]}

        def value(family, sample_name, **labels):
            found = [s.value for s in families[family].samples
                     if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())]
            self.assertEqual(len(found), 1, f"{sample_name} {labels}")
            return found[0]

        for c in (a, b):
            p = by_pid[c.pid]
            pid = str(c.pid)
            for s in families["mmtier_placed_bytes"].samples:
                self.assertEqual(s.labels.get("comm"), "cli_stats_child")
            for tier in ("dram", "pmem"):
                t = p["tiers"][tier]
                self.assertEqual(value("mmtier_placed_bytes", "mmtier_placed_bytes", pid=pid, tier=tier),
                                 t["placed_bytes"])
                self.assertEqual(value("mmtier_resident_bytes", "mmtier_resident_bytes", pid=pid, tier=tier),
                                 t["resident_bytes"])
            self.assertEqual(value("mmtier_promotions", "mmtier_promotions_total", pid=pid), p["promotions"])
            self.assertEqual(value("mmtier_scans", "mmtier_scans_total", pid=pid), p["scans"])
            heat = [s for s in families["mmtier_unit_heat"].samples if s.labels["pid"] == pid]
            self.assertEqual(sorted(float(s.labels["bucket"]) for s in heat), [i / 8 for i in range(1, 9)])
        # A limit appears only where one is set.
        limits = [(s.labels["pid"], s.labels["tier"]) for s in families["mmtier_limit_bytes"].samples]
        self.assertEqual(limits, [(str(a.pid), "dram")])
        self.assertEqual(value("mmtier_limit_bytes", "mmtier_limit_bytes", pid=str(a.pid), tier="dram"), 8 * MiB)
        # One process alone, and through -o.
        out = os.path.join(self.dir, "mmtier.prom")
        r = mmtier(["stat", str(a.pid), "--prometheus", "-o", out], self.dir)
        self.assertEqual((r.returncode, r.stdout), (0, ""), r.stderr)
        with open(out) as f:
            one = list(text_string_to_metric_families(f.read()))
        pids = {s.labels["pid"] for f in one for s in f.samples}
        self.assertEqual(pids, {str(a.pid)})
        self.assertFalse([n for n in os.listdir(self.dir) if ".tmp." in n])

    def test_nothing_to_show(self):
        from prometheus_client.parser import text_string_to_metric_families
        r = mmtier(["stat", "--all"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(r.stdout.splitlines()), 1)
        self.assertTrue(r.stdout.split()[0] == "PID")
        r = mmtier(["stat", "--all", "--json"], self.dir)
        self.assertEqual(json.loads(r.stdout), {"processes": []})
        r = mmtier(["stat", "--all", "--prometheus"], self.dir)
        self.assertEqual(r.returncode, 0)
        self.assertEqual(list(text_string_to_metric_families(r.stdout)), [])


# ---------------------------------------------------------------------------
class FormatTest(Base):
    """Exactly known figures (cli_fake_publisher) through every format."""

    FIELDS = {"dram_placed": 6 * MiB, "pmem_placed": 24 * MiB, "dram_peak": 8 * MiB, "pmem_peak": 24 * MiB,
              "dram_resident": "none", "pmem_resident": 3 * MiB, "pmem_limit": 1 << 30, "promotions": 11,
              "demotions": 5, "scans": 42, "bytes_migrated": 16 * MiB, "migrate_rate_bps": 123456,
              "mover_running": 1, "dram_budget": 10 * MiB, "policy": 1, "heat0": 9, "heat7": 2,
              "cpu_ns": 1500000000, "fallbacks": 3, "forks": 1, "mmap_bytes": 4 * MiB, "map_count_holds": 7,
              "dram_policy": 2 * MiB, "pmem_policy": 24 * MiB, "migrations_failed": 6,
              "fail0_errno": errno.ENOSPC, "fail0_count": 4, "fail1_errno": errno.EOPNOTSUPP, "fail1_count": 1,
              "failed_other": 1, "frozen_bytes": 20 * MiB, "frozen_copied_bytes": 5 * MiB, "reshares": 9,
              "reshare_bytes": 12 * MiB, "reshare_stops": 4, "reshare_pause_max_ns": 1250000,
              "reshare_pause_total_ns": 3000000, "reshare_stop_refusals": 2, "reshare_failed": 1}

    def test_json(self):
        f = self.fake(self.FIELDS, comm='a"b\\c')
        j = self.stat_json(f.pid)
        self.assertEqual(j["comm"], 'a"b\\c')
        self.assertEqual(j["tiers"], {
            "dram": {"placed_bytes": 6 * MiB, "policy_placed_bytes": 2 * MiB, "peak_placed_bytes": 8 * MiB,
                     "resident_bytes": None, "limit_bytes": None},
            "pmem": {"placed_bytes": 24 * MiB, "policy_placed_bytes": 24 * MiB, "peak_placed_bytes": 24 * MiB,
                     "resident_bytes": 3 * MiB, "limit_bytes": 1 << 30}})
        self.assertEqual(j["migrations_failed"], 6)
        self.assertEqual(j["migrations_failed_by_reason"], {"ENOSPC": 4, "EOPNOTSUPP": 1, "other": 1})
        expect = {"pid": f.pid, "policy": "dram-first", "promotions": 11, "demotions": 5, "scans": 42,
                  "migrated_bytes": 16 * MiB, "migrate_rate_bytes_per_second": 123456, "mover_running": True,
                  "dram_budget_bytes": 10 * MiB, "heat_histogram": [9, 0, 0, 0, 0, 0, 0, 2],
                  "mover_cpu_ns": 1500000000, "fallbacks": 3, "forks": 1, "mmap_bytes": 4 * MiB,
                  "resident_unix_ns": None, "unit_size_bytes": 2 * MiB, "ratio_dram": 1, "ratio_pmem": 4,
                  "map_count_holds": 7, "frozen_bytes": 20 * MiB, "frozen_copied_bytes": 5 * MiB, "reshares": 9,
                  "reshare_bytes": 12 * MiB, "reshare_stops": 4, "reshare_pause_max_ns": 1250000,
                  "reshare_pause_total_ns": 3000000, "reshare_stop_refusals": 2, "reshare_failed": 1}
        for k, v in expect.items():
            self.assertEqual(j[k], v, k)
        for k in j:
            self.assertRegex(k, r"^[a-z][a-z0-9_]*$")

    def test_prometheus(self):
        from prometheus_client.parser import text_string_to_metric_families
        f = self.fake(self.FIELDS, comm='a"b\\c')
        r = mmtier(["stat", str(f.pid), "--prometheus"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        samples = {}
        for fam in text_string_to_metric_families(r.stdout):
            for s in fam.samples:
                self.assertEqual(s.labels["comm"], 'a"b\\c')
                self.assertEqual(s.labels["pid"], str(f.pid))
                key = (s.name,) + tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("pid", "comm")))
                samples[key] = s.value
        self.assertEqual(samples[("mmtier_resident_bytes", ("tier", "pmem"))], 3 * MiB)
        self.assertNotIn(("mmtier_resident_bytes", ("tier", "dram")), samples)  # not measured: absent
        self.assertEqual(samples[("mmtier_limit_bytes", ("tier", "pmem"))], 1 << 30)
        self.assertNotIn(("mmtier_limit_bytes", ("tier", "dram")), samples)
        self.assertEqual(samples[("mmtier_dram_budget_bytes",)], 10 * MiB)
        self.assertEqual(samples[("mmtier_promotions_total",)], 11)
        self.assertEqual(samples[("mmtier_demotions_total",)], 5)
        self.assertEqual(samples[("mmtier_migrated_bytes_total",)], 16 * MiB)
        self.assertEqual(samples[("mmtier_migrate_rate_bytes_per_second",)], 123456)
        self.assertEqual(samples[("mmtier_mover_running",)], 1)
        self.assertEqual(samples[("mmtier_mover_cpu_seconds_total",)], 1.5)
        self.assertEqual(samples[("mmtier_map_count_holds_total",)], 7)
        self.assertEqual(samples[("mmtier_policy_placed_bytes", ("tier", "dram"))], 2 * MiB)
        self.assertEqual(samples[("mmtier_migrations_failed_total",)], 6)
        self.assertEqual(samples[("mmtier_migrations_failed_by_reason_total", ("reason", "ENOSPC"))], 4)
        self.assertEqual(samples[("mmtier_migrations_failed_by_reason_total", ("reason", "EOPNOTSUPP"))], 1)
        self.assertEqual(samples[("mmtier_migrations_failed_by_reason_total", ("reason", "other"))], 1)
        self.assertEqual(samples[("mmtier_unit_heat", ("bucket", "0.125"))], 9)
        self.assertEqual(samples[("mmtier_unit_heat", ("bucket", "1"))], 2)
        self.assertEqual(samples[("mmtier_unit_heat", ("bucket", "0.5"))], 0)
        self.assertEqual(samples[("mmtier_frozen_bytes",)], 20 * MiB)
        self.assertEqual(samples[("mmtier_frozen_copied_bytes",)], 5 * MiB)
        self.assertEqual(samples[("mmtier_reshares_total",)], 9)
        self.assertEqual(samples[("mmtier_reshare_bytes_total",)], 12 * MiB)
        self.assertEqual(samples[("mmtier_reshare_pause_seconds_total",)], 0.003)
        self.assertEqual(samples[("mmtier_reshare_pause_max_seconds",)], 0.00125)

    def test_table_and_detail(self):
        f = self.fake(self.FIELDS, comm="tablecheck")
        r = mmtier(["stat", "--all"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        header, row = r.stdout.splitlines()
        cols = dict(zip(header.split(), row.split()))
        self.assertEqual(cols["PID"], str(f.pid))
        self.assertEqual(cols["COMMAND"], "tablecheck")
        self.assertEqual(cols["DRAM-RES"], "-")
        self.assertEqual(cols["DRAM-PLC"], "6.00M")
        self.assertEqual(cols["DRAM-BGT"], "10.0M")
        self.assertEqual(cols["PMEM-RES"], "3.00M")
        self.assertEqual(cols["PROMOTIONS"], "11")
        self.assertEqual(cols["HEAT(cold..hot)"], "9,0,0,0,0,0,0,2")
        r = mmtier(["stat", str(f.pid)], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"\nresident +- +3\.00 MiB\n")
        self.assertRegex(r.stdout, r"\nlimit +none +1\.00 GiB\n")
        self.assertRegex(r.stdout, r"\nheld \(mappings\) +7 scans near vm\.max_map_count\n")
        self.assertRegex(r.stdout, r"\npolicy +dram-first\n")
        self.assertRegex(r.stdout, r"\npromotions +11\n")
        self.assertRegex(r.stdout, r"\n  by policy +2\.00 MiB +24\.0 MiB\n")
        self.assertRegex(r.stdout, r"\nfailed moves +6\n  ENOSPC +4: no room on the target tier")
        self.assertRegex(r.stdout, r"\n  frozen now +20\.0 MiB of PMem units, 5\.00 MiB of their pages copied to DRAM")
        self.assertRegex(r.stdout, r"\n  re-shared +9 units, 12\.0 MiB copied, in 4 stops \(longest 1\.250 ms, 3\.000 ms in all\)")
        self.assertRegex(r.stdout, r"\n  gave up +2 stops \(a thread would not stop\), 1 failures")
        self.assertRegex(r.stdout, r"\n  EOPNOTSUPP +1: the kernel's userfaultfd lacks")

    def test_top_rate_from_consecutive_refreshes(self):
        f = self.fake(self.FIELDS)
        p = subprocess.Popen([ARGS.mmtier, "top", "--interval", "100ms", "--iterations", "50"],
                             stdout=subprocess.PIPE, env=base_env(self.dir), text=True)
        self.addCleanup(p.stdout.close)
        self.addCleanup(p.wait)
        self.addCleanup(p.kill)
        # After the first frame, promotions go up; a later frame shows a rate > 0.
        first = read_line(p.stdout, 30, "top")
        self.assertTrue(first.startswith("mmtier top "), first)
        for _ in range(20):
            f.add("promotions", 100)
        pattern = re.compile(rf"^ *{f.pid} fakeproc .*\] +([0-9.]+[kMG]?) ")
        # Every later frame has a rate; one of them covers the additions.
        rate = "0.0"
        while rate == "0.0":
            m = pattern.match(read_line(p.stdout, 30, "top"))
            if m:
                rate = m.group(1)
        self.assertRegex(rate, r"^[0-9.]+[kMG]?$")
        self.assertGreater(float(rate.rstrip("kMG")), 0)


# ---------------------------------------------------------------------------
class ErrorsTest(Base):
    def test_no_such_process(self):
        pid = free_pid()
        r = mmtier(["stat", str(pid)], self.dir)
        self.assert_one_line_error(r, 1, f"mmtier: no process with pid {pid}")
        r = mmtier(["plot", str(pid), "-o", os.path.join(self.dir, "x.svg")], self.dir)
        self.assert_one_line_error(r, 1, f"mmtier: no process with pid {pid}")

    def sleeper(self):
        p = subprocess.Popen(["sleep", "300"], env=base_env(self.dir))
        self.addCleanup(p.wait)
        self.addCleanup(p.kill)
        return p

    def test_process_not_under_libmmtier(self):
        p = self.sleeper()
        r = mmtier(["stat", str(p.pid)], self.dir)
        self.assert_one_line_error(r, 1, f"mmtier: process {p.pid} (sleep) is not running under libmmtier")
        r = mmtier(["stat", str(p.pid), "--json"], self.dir)
        self.assertEqual(r.returncode, 1)
        r = mmtier(["stat", str(p.pid)], self.dir, env={"MMTIER_STATS_DIR": "off"})
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.splitlines()), 1)
        self.assertIn("is not running under libmmtier", r.stderr)
        self.assertIn("publishing is off", r.stderr)

    def test_small_process_publishes_nothing(self):
        # Under libmmtier, but with less than 16 MiB placed: no file, and
        # the command says why.
        c = self.child(mib=2, env={"MMTIER_PROMOTE": "0"})
        self.assertFalse(os.path.exists(os.path.join(self.dir, f"{c.pid}.stats")))
        r = mmtier(["stat", str(c.pid)], self.dir)
        self.assert_one_line_error(
            r, 1, f"mmtier: process {c.pid} (cli_stats_child) runs under libmmtier but publishes no statistics: "
                  "it has placed less than 16 MiB of memory so far")

    def stale_file(self, pid):
        subprocess.run([ARGS.fake, "--dir", self.dir, "--pid", str(pid), "--stale"], check=True, timeout=30)
        path = os.path.join(self.dir, f"{pid}.stats")
        self.assertTrue(os.path.exists(path))
        return path

    def test_stale_files_are_ignored_and_removed(self):
        # A dead process's file: --all does not list it, and removes it.
        dead = free_pid()
        path = self.stale_file(dead)
        r = mmtier(["stat", "--all", "--json"], self.dir)
        self.assertEqual(json.loads(r.stdout), {"processes": []})
        self.assertFalse(os.path.exists(path))
        # stat PID on it: no such process, and removed.
        path = self.stale_file(dead)
        r = mmtier(["stat", str(dead)], self.dir)
        self.assert_one_line_error(r, 1, f"mmtier: no process with pid {dead}")
        self.assertFalse(os.path.exists(path))
        # A pid now used by a process not under libmmtier.
        p = self.sleeper()
        path = self.stale_file(p.pid)
        r = mmtier(["stat", str(p.pid)], self.dir)
        self.assert_one_line_error(r, 1, f"mmtier: process {p.pid} (sleep) is not running under libmmtier")
        self.assertFalse(os.path.exists(path))
        # top does not show it either.
        path = self.stale_file(dead)
        r = mmtier(["top", "--iterations", "1"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("0 processes", r.stdout)
        self.assertFalse(os.path.exists(path))

    def test_permission_denied(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to run the reader as another user")
        if not shutil.which("setpriv"):
            self.fail("setpriv (util-linux) is required")
        c = self.child(mib=24, env={"MMTIER_PROMOTE": "0"})
        # The reader as nobody, from a copy of the command anyone can run.
        bindir = tempfile.mkdtemp(prefix="mmtier-cli-bin-")
        self.addCleanup(shutil.rmtree, bindir, True)
        os.chmod(bindir, 0o755)
        exe = os.path.join(bindir, "mmtier")
        shutil.copy(ARGS.mmtier, exe)
        os.chmod(exe, 0o755)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", exe, "stat", str(c.pid)],
                           env=base_env(self.dir), capture_output=True, text=True, timeout=30)
        self.assert_one_line_error(
            r, 1, f"mmtier: permission denied: cannot read the statistics of process {c.pid} (owned by uid 0)")
        # The file is still there, and root can still read it.
        self.assertEqual(self.stat_json(c.pid)["pid"], c.pid)

    def test_usage_errors(self):
        for args, msg in [
            (["stat"], "mmtier stat: no PID given (or --all for every process) (see 'mmtier stat --help')"),
            (["stat", "abc"], "mmtier stat: invalid pid \"abc\" (see 'mmtier stat --help')"),
            (["stat", "1", "--all"], "mmtier stat: give either a PID or --all, not both (see 'mmtier stat --help')"),
            (["stat", "--all", "--json", "--prometheus"],
             "mmtier stat: --json and --prometheus cannot be used together (see 'mmtier stat --help')"),
            (["top", "--interval", "fast"], None),
            (["top", "--frob"], None),
            (["plot"], "mmtier plot: no pid given (see 'mmtier plot --help')"),
            (["plot", "1", "--seconds", "-3"], None),
        ]:
            r = mmtier(args, self.dir)
            self.assertEqual(r.returncode, 2, args)
            self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
            if msg:
                self.assertEqual(r.stderr, msg + "\n")


# ---------------------------------------------------------------------------
class Tmux:
    def __init__(self, test, env):
        self.socket = f"mmtier-cli-test-{os.getpid()}-{id(self)}"
        self.env = env
        conf = os.path.join(test.dir, "tmux.conf")
        with open(conf, "w") as f:
            f.write("set -g remain-on-exit on\nset -g status off\nset -g history-limit 100\n")
        self.conf = conf
        test.addCleanup(self.kill)

    def tmux(self, *args, check=True):
        return subprocess.run(["tmux", "-L", self.socket, "-f", self.conf] + list(args), env=self.env,
                              capture_output=True, text=True, timeout=30, check=check)

    def start(self, command):
        self.tmux("new-session", "-d", "-s", "t", "-x", "120", "-y", "30",
                  "-e", f"MMTIER_STATS_DIR={self.env['MMTIER_STATS_DIR']}", command)

    def screen(self):
        return self.tmux("capture-pane", "-p", "-S", "-", "-t", "t").stdout

    def var(self, name):
        return self.tmux("display-message", "-p", "-t", "t", "#{" + name + "}").stdout.strip()

    def kill(self):
        path = self.tmux("display-message", "-p", "#{socket_path}", check=False).stdout.strip()
        self.tmux("kill-server", check=False)
        if path.endswith(self.socket) and os.path.exists(path):
            os.unlink(path)


class TopTest(Base):
    def two_processes(self):
        # dram-first with different DRAM limits: b has more DRAM than a, both some PMem.
        a = self.child(mib=48, env={"MMTIER_PROMOTE": "0", "MMTIER_POLICY": "dram-first",
                                    "MMTIER_DRAM_LIMIT": "16M"})
        b = self.child(mib=48, env={"MMTIER_PROMOTE": "0", "MMTIER_POLICY": "dram-first",
                                    "MMTIER_DRAM_LIMIT": "40M"})
        self.assertLess(a.api["dram"]["resident_bytes"], b.api["dram"]["resident_bytes"])
        self.assertGreater(a.api["pmem"]["resident_bytes"], 0)
        self.assertGreater(b.api["pmem"]["resident_bytes"], 0)
        return a, b

    def check_frame(self, screen, a, b):
        rows = {}
        for i, line in enumerate(screen.splitlines()):
            m = re.match(r"^ *(\d+) (\S+) +(\S+) +(\S+) +\[([#.-]+)\] ", line)
            if m:
                rows[int(m.group(1))] = (i, m.group(2), m.group(5))
        self.assertIn(a.pid, rows, screen)
        self.assertIn(b.pid, rows, screen)
        self.assertLess(rows[b.pid][0], rows[a.pid][0], "sorted by DRAM, largest first\n" + screen)
        bar_a, bar_b = rows[a.pid][2], rows[b.pid][2]
        self.assertEqual(len(bar_a), len(bar_b))
        self.assertGreater(bar_b.count("#"), bar_a.count("#"), screen)
        for bar in (bar_a, bar_b):
            self.assertRegex(bar, r"^#+-+$")
        self.assertEqual(rows[a.pid][1], "cli_stats_child")

    def test_top_in_tmux(self):
        if not shutil.which("tmux"):
            self.fail("tmux is required (scripts/install-deps.sh)")
        a, b = self.two_processes()
        t = Tmux(self, base_env(self.dir))
        top = f"{shlex.quote(ARGS.mmtier)} top --interval 200ms"
        t.start(f"sh -c {shlex.quote(top + '; echo top-exit=$?; stty -a; echo end-of-test; read x')}")
        screen = wait_until(lambda: (lambda s: s if str(a.pid) in s and str(b.pid) in s else None)(t.screen()),
                            30, "both processes on top's screen")
        self.assertTrue(screen.startswith("mmtier top "), screen)
        self.assertIn("2 processes", screen)
        for line in screen.splitlines():
            self.assertLessEqual(len(line), 120)
        self.check_frame(screen, a, b)
        self.assertEqual(t.var("alternate_on"), "1")
        # Promotion rates appear from the second frame on.
        wait_until(lambda: re.search(rf"^ *{a.pid} .*\] +0\.0 ", t.screen(), re.M), 30, "a promotion rate")
        self.assertEqual(t.var("cursor_flag"), "0")  # hidden while top draws
        t.tmux("send-keys", "-t", "t", "q")
        after = wait_until(lambda: (lambda s: s if "end-of-test" in s else None)(t.screen()), 30, "top to exit")
        self.assertIn("top-exit=0", after)
        self.assertEqual(t.var("alternate_on"), "0")
        self.assertNotIn("mmtier top", after)  # the frames were on the alternate screen
        modes = after.split()
        self.assertIn("icanon", modes)
        self.assertIn("echo", modes)
        self.assertEqual(t.var("cursor_flag"), "1")

    def test_interrupt_restores_the_terminal(self):
        self.child(mib=24, env={"MMTIER_PROMOTE": "0"})
        t = Tmux(self, base_env(self.dir))
        top = f"{shlex.quote(ARGS.mmtier)} top --interval 200ms"
        t.start(f"sh -c {shlex.quote('trap : INT; ' + top + '; echo top-exit=$?; stty -a; echo end-of-test; read x')}")
        wait_until(lambda: "1 process " in t.screen(), 30, "top's first frame")
        self.assertEqual(t.var("alternate_on"), "1")
        t.tmux("send-keys", "-t", "t", "C-c")
        after = wait_until(lambda: (lambda s: s if "end-of-test" in s else None)(t.screen()), 30, "top to exit")
        self.assertIn(f"top-exit={128 + signal.SIGINT}", after)
        self.assertEqual(t.var("alternate_on"), "0")
        modes = after.split()
        self.assertIn("icanon", modes)
        self.assertIn("echo", modes)

    def test_batch_output(self):
        a, b = self.two_processes()
        r = mmtier(["top", "--iterations", "2", "--interval", "100ms"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("\x1b", r.stdout)
        frames = r.stdout.split("\n\n")
        self.assertEqual(len([f for f in frames if f.strip()]), 2, r.stdout)
        for f in frames:
            if f.strip():
                self.check_frame(f, a, b)


# ---------------------------------------------------------------------------
class PlotTest(Base):
    def parse(self, path):
        root = ET.parse(path).getroot()
        self.assertEqual(root.tag, SVG_NS + "svg")
        series = {}
        for pl in root.iter(SVG_NS + "polyline"):
            pts = [tuple(map(float, p.split(","))) for p in pl.get("points").split()]
            series[pl.get("id")] = pts
        meta = root.find(f"{SVG_NS}metadata[@id='mmtier-samples']")
        self.assertIsNotNone(meta)
        return root, series, json.loads(meta.text)

    def test_plot_writes_the_three_series(self):
        c = self.child(mib=48)
        out = os.path.join(self.dir, "chart.svg")
        r = mmtier(["plot", str(c.pid), "--seconds", "2", "--interval", "100ms", "-o", out], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith(f"mmtier: wrote {out}: "), r.stdout)
        root, series, meta = self.parse(out)
        self.assertEqual(set(series), {"series-dram-resident", "series-pmem-resident", "series-promotions"})
        samples = meta["samples"]
        self.assertEqual(meta["pid"], c.pid)
        self.assertEqual(len(samples), 21)  # t = 0, 0.1, ..., 2.0
        self.assertEqual(len(series["series-dram-resident"]), len(samples))
        self.assertEqual(len(series["series-pmem-resident"]), len(samples))
        self.assertEqual(len(series["series-promotions"]), len(samples) - 1)
        self.assertAlmostEqual(samples[-1]["t"], 2.0, delta=1.0)
        for s in samples:
            total = s["dram_bytes"] + s["pmem_bytes"]
            # The 48 MiB allocated and touched, plus a little of the program's own.
            self.assertGreaterEqual(total, 48 * MiB)
            self.assertLessEqual(total, 48 * MiB + 32 * MiB)
            self.assertTrue(s["resident"])
        # Time runs left to right, and everything lies inside the picture.
        w, h = float(root.get("width")), float(root.get("height"))
        for pts in series.values():
            xs = [x for x, _ in pts]
            self.assertEqual(xs, sorted(xs))
            for x, y in pts:
                self.assertTrue(0 <= x <= w and 0 <= y <= h, (x, y))
        # The two memory lines sit in the upper panel, promotions below it.
        mem_bottom = max(y for s in ("series-dram-resident", "series-pmem-resident") for _, y in series[s])
        self.assertLess(mem_bottom, min(y for _, y in series["series-promotions"]))
        title = root.find(SVG_NS + "title").text
        self.assertIn(str(c.pid), title)
        self.assertIn("cli_stats_child", title)
        after = c.stats()
        self.assertLessEqual(samples[-1]["promotions"], after["promotions"])

    def start_plot(self, c, out):
        p = subprocess.Popen([ARGS.mmtier, "plot", str(c.pid), "--seconds", "120", "--interval", "100ms", "-o", out],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=base_env(self.dir), text=True)
        self.addCleanup(lambda: p.poll() is None and (p.kill(), p.wait()))
        line = read_line(p.stderr, 30, "plot")
        self.assertTrue(line.startswith(f"mmtier: sampling process {c.pid} (cli_stats_child)"), line)
        return p

    def test_plot_stops_when_the_process_exits(self):
        c = self.child(mib=24, env={"MMTIER_PROMOTE": "0"})
        out = os.path.join(self.dir, "early.svg")
        p = self.start_plot(c, out)
        c.close()
        stdout, stderr = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, stderr)
        self.assertIn("the process exited", stdout)
        _, series, meta = self.parse(out)
        self.assertGreaterEqual(len(meta["samples"]), 1)
        self.assertEqual(len(series["series-dram-resident"]), len(meta["samples"]))

    def test_plot_interrupted_writes_what_it_has(self):
        c = self.child(mib=24, env={"MMTIER_PROMOTE": "0"})
        out = os.path.join(self.dir, "interrupted.svg")
        p = self.start_plot(c, out)
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, stderr)
        self.assertIn("interrupted", stdout)
        self.parse(out)

    def test_plot_of_a_process_not_under_libmmtier(self):
        p = subprocess.Popen(["sleep", "300"])
        self.addCleanup(p.wait)
        self.addCleanup(p.kill)
        out = os.path.join(self.dir, "none.svg")
        r = mmtier(["plot", str(p.pid), "-o", out], self.dir)
        self.assert_one_line_error(r, 1, f"mmtier: process {p.pid} (sleep) is not running under libmmtier")
        self.assertFalse(os.path.exists(out))


# ---------------------------------------------------------------------------
def short_bytes(n):
    """The command's short_bytes ("4.13M")."""
    if n < 1024:
        return str(n)
    v, unit = float(n), -1
    while v >= 1024 and unit < 5:
        v /= 1024
        unit += 1
    u = "KMGTPE"[unit]
    return f"{v:.0f}{u}" if v >= 99.95 else f"{v:.1f}{u}" if v >= 9.995 else f"{v:.2f}{u}"


def du(path):
    """Bytes on disk of a capsule: the directory and everything in it."""
    total = os.lstat(path).st_blocks * 512
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            total += os.lstat(os.path.join(root, n)).st_blocks * 512
    return total


class SnapshotTest(Base):
    """mmtier snapshot list/info/delete against capsules made by
    cli_capsule_maker (the library's capsule code), each test in its own
    capsule directory."""

    CREATED_NS = 1700000000123456789
    MEM = 4 * MiB + 64 * 1024 + 8192 + 32768  # the unit's 4 MiB, anon, the library's COW pages, the stack

    def setUp(self):
        super().setUp()
        self.caps = tempfile.mkdtemp(prefix="mmtier-capsules-")
        self.addCleanup(shutil.rmtree, self.caps, True)

    def make(self, name, *args, caps=None, user=None):
        cmd = [ARGS.maker, "--dir", caps or self.caps, "--name", name] + [str(a) for a in args]
        r = subprocess.run(self.as_user(cmd, user), capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.strip()

    def snap(self, *args, env=None, user=None, cwd=None):
        e = base_env(self.dir)
        e["MMTIER_SNAPSHOT_DIR"] = self.caps
        e.update(env or {})
        for k in [k for k, v in e.items() if v is None]:
            del e[k]
        return subprocess.run(self.as_user([ARGS.mmtier, "snapshot"] + list(args), user), env=e,
                              capture_output=True, text=True, timeout=60, cwd=cwd)

    def as_user(self, cmd, uid):
        """cmd run as uid (root only), from copies anyone may run."""
        if uid is None:
            return cmd
        if not hasattr(self, "bindir"):
            self.bindir = tempfile.mkdtemp(prefix="mmtier-cli-bin-")
            self.addCleanup(shutil.rmtree, self.bindir, True)
            os.chmod(self.bindir, 0o755)
            for exe in (ARGS.mmtier, ARGS.maker):
                shutil.copy(exe, self.bindir)
        exe = os.path.join(self.bindir, os.path.basename(cmd[0]))
        return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", exe] + cmd[1:]

    def need_root(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to run the command as another user")
        if not shutil.which("setpriv"):
            self.fail("setpriv (util-linux) is required")

    def list_json(self, *args, **kw):
        r = self.snap("list", "--json", *args, **kw)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        return json.loads(r.stdout)

    def assert_error(self, r, capsule, what, status=1):
        self.assert_one_line_error(r, status, f"mmtier snapshot: {capsule}: {what}")

    def created_text(self):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.CREATED_NS // 10**9))

    # --- list

    def some_capsules(self):
        """One capsule of each status, stray temporary ones, and things
        list must ignore."""
        self.make("a-durable", "--comm", "redis-server", "--pid", 777)
        self.make("b-complete", "--status", "complete")
        self.make("c-failed", "--status", "failed", "--line", "no space left for mem", "--error", errno.ENOSPC)
        self.make("d-incomplete", "--status", "incomplete")
        self.make("e-header", "--damage", "header-crc")
        self.make("f-magic", "--damage", "bad-magic")
        self.make("g-short", "--damage", "mem-short")
        self.make("h-table", "--damage", "table-crc")
        gone = self.make("i-gone", "--tmp")  # the maker's pid: gone once it exits
        running = self.make("j-running", "--tmp", "--tmp-pid", os.getpid())
        os.mkdir(os.path.join(self.caps, "notes"))
        open(os.path.join(self.caps, "readme.txt"), "w").close()
        os.mkdir(os.path.join(self.caps, "x.mmtcap.bak"))
        return int(gone.rsplit("-", 2)[1])

    def expected_status(self, gone_pid):
        return {
            "a-durable": "durable",
            "b-complete": "complete",
            "c-failed": "failed: no space left for mem (ENOSPC)",
            "d-incomplete": "incomplete",
            "e-header": "damaged: the header or the table directory is damaged",
            "f-magic": "damaged: not a capsule manifest",
            "g-short": f"damaged: mem is {self.MEM - 4096} bytes, shorter than the {self.MEM} the manifest says",
            "h-table": "damaged: a table's content is damaged",
            "i-gone": f"incomplete (writer {gone_pid} gone)",
            "j-running": f"incomplete (writer {os.getpid()} running)",
        }

    def test_list_table(self):
        gone = self.some_capsules()
        r = self.snap("list")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        lines = r.stdout.splitlines()
        header = lines[0]
        self.assertRegex(header, r"^NAME +CREATED +PID  COMMAND +SIZE  SHARED  STATUS$")
        # Every column starts where its title does (PID, SIZE and SHARED end there).
        starts = {c: header.index(c) for c in ["CREATED", "COMMAND", "STATUS"]}
        ends = {c: header.index(c) + len(c) for c in ["PID", "SIZE", "SHARED"]}
        want = self.expected_status(gone)
        self.assertEqual([l.split()[0] for l in lines[1:]], sorted(want))
        for line in lines[1:]:
            name = line.split()[0]
            self.assertEqual(line[starts["STATUS"]:], want[name], line)
            created = line[starts["CREATED"]:starts["CREATED"] + 19].strip()
            pid = line[:ends["PID"]].split()[-1]
            comm = line[starts["COMMAND"]:].split()[0]
            size = line[:ends["SIZE"]].split()[-1]
            # Nothing of these capsules is linked elsewhere.
            self.assertEqual(line[:ends["SHARED"]].split()[-1], "0", line)
            entry = name + ".mmtcap"
            if name in ("i-gone", "j-running"):
                entry = [e for e in os.listdir(self.caps) if e.startswith(f".{name}.mmtcap.tmp-")][0]
            self.assertEqual(size, short_bytes(du(os.path.join(self.caps, entry))), line)
            if name in ("e-header", "f-magic", "h-table", "i-gone", "j-running"):
                self.assertEqual((created, pid, comm), ("-", "-", "-"), line)
            else:
                self.assertEqual(created, self.created_text(), line)
                self.assertEqual(pid, "777" if name == "a-durable" else "4242", line)
                self.assertEqual(comm, "redis-server" if name == "a-durable" else "testprog", line)

    def test_list_json(self):
        gone = self.some_capsules()
        j = self.list_json()
        self.assertEqual(j["directory"], self.caps)
        caps = j["capsules"]
        want = self.expected_status(gone)
        self.assertEqual([c["name"] for c in caps], sorted(want))
        for c in caps:
            status, _, reason = want[c["name"]].partition(": ")
            if c["name"] == "c-failed":
                reason = "no space left for mem"
            self.assertEqual(c["status"], status.split(" (")[0], c)
            self.assertEqual(c["reason"], reason or None, c)
            self.assertEqual(c["disk_bytes"], du(c["path"]), c)
            self.assertEqual(c["shared_disk_bytes"], 0, c)
            self.assertTrue(os.path.isdir(c["path"]))
            if c["name"] == "i-gone":
                self.assertEqual(c["writer"], {"pid": gone, "running": False})
            elif c["name"] == "j-running":
                self.assertEqual(c["writer"], {"pid": os.getpid(), "running": True})
            else:
                self.assertIsNone(c["writer"])
            if c["comm"] is not None:
                self.assertEqual(c["created_unix_ns"], self.CREATED_NS)
                self.assertEqual(c["pid"], 777 if c["name"] == "a-durable" else 4242)

    def test_list_a_writer_outliving_its_process(self):
        # The process named in the temporary capsule is gone, but the
        # writer it forked still holds the manifest open.
        dead = free_pid()
        p = subprocess.Popen([ARGS.maker, "--dir", self.caps, "--name", "w", "--tmp", "--tmp-pid", str(dead), "--hold"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.addCleanup(p.wait)
        self.addCleanup(p.stdin.close)
        path = read_line(p.stdout, 30, "cli_capsule_maker")
        p.stdout.close()
        self.assertEqual(self.list_json()["capsules"][0]["writer"], {"pid": dead, "running": True})
        r = self.snap("delete", path)
        self.assert_error(r, path, f"being written (writer {dead} running)")
        p.stdin.close()
        p.wait(30)
        self.assertEqual(self.list_json()["capsules"][0]["writer"], {"pid": dead, "running": False})
        r = self.snap("delete", path)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertEqual(os.listdir(self.caps), [])

    def test_list_which_directory(self):
        other = tempfile.mkdtemp(prefix="mmtier-capsules-")
        self.addCleanup(shutil.rmtree, other, True)
        self.make("in-env")
        self.make("in-dir", caps=other)
        names = lambda j: [c["name"] for c in j["capsules"]]
        self.assertEqual(names(self.list_json()), ["in-env"])
        self.assertEqual(names(self.list_json("--dir", other)), ["in-dir"])  # --dir wins
        self.assertEqual(names(self.list_json(f"--dir={other}")), ["in-dir"])
        # A directory that does not exist yet: no capsule; given with --dir: an error.
        missing = os.path.join(other, "none")
        self.assertEqual(self.list_json(env={"MMTIER_SNAPSHOT_DIR": missing}), {"directory": missing, "capsules": []})
        r = self.snap("list", "--dir", missing)
        self.assert_one_line_error(r, 1, f"mmtier: cannot read the capsule directory {missing}: No such file or directory")
        r = self.snap("list", env={"MMTIER_SNAPSHOT_DIR": "capsules"})
        self.assert_one_line_error(
            r, 1, 'mmtier: invalid MMTIER_SNAPSHOT_DIR="capsules": expected an absolute directory path')
        # Without the variable: the XDG state directory, else HOME's; root's is /var/lib/mmtier/capsules.
        state = os.path.join(other, "state")
        if os.geteuid() == 0:
            self.need_root()
            os.chown(other, 65534, 65534)  # nobody's HOME and state directory
            uid = 65534
        else:
            uid = None
        for env, where in [({"XDG_STATE_HOME": state, "HOME": "/nonexistent"}, f"{state}/mmtier/capsules"),
                           ({"XDG_STATE_HOME": "relative", "HOME": other}, f"{other}/.local/state/mmtier/capsules")]:
            self.make("found", caps=where, user=uid)
            j = self.list_json(env=dict(env, MMTIER_SNAPSHOT_DIR=None), user=uid)
            self.assertEqual(j["directory"], where)
            self.assertEqual(names(j), ["found"])
        r = self.snap("list", env={"MMTIER_SNAPSHOT_DIR": None, "HOME": None, "XDG_STATE_HOME": None}, user=uid)
        self.assert_one_line_error(r, 1, "mmtier: no capsule directory: set HOME or MMTIER_SNAPSHOT_DIR, or give --dir")

    def test_list_refused_capsules(self):
        self.make("open", "--mode", "750")
        self.make("target")
        os.symlink(os.path.join(self.caps, "target.mmtcap"), os.path.join(self.caps, "link.mmtcap"))
        got = {c["name"]: (c["status"], c["reason"]) for c in self.list_json()["capsules"]}
        self.assertEqual(got, {
            "open": ("unreadable", "open to group or others (a capsule must be mode 0700)"),
            "link": ("unreadable", "is a symbolic link"),
            "target": ("durable", None)})

    # --- info

    def test_info(self):
        path = self.make("job", "--comm", "worker", "--pid", 31337, "--threads", 5)
        r = self.snap("info", "job")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        manifest = os.path.getsize(os.path.join(path, "manifest"))
        want = [
            ("capsule", path),
            ("status", "durable"),
            ("process", "31337 (worker), 5 threads"),
            ("credentials", "uid 1000, gid 100, euid 1000, egid 100"),
            ("created", self.created_text()),
            ("paused", "1.235 ms"),
            ("kernel", "6.1.0-test-amd64"),
            ("boot id", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
            ("mmtier version", "0.1.0"),
            ("capsule id", "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"),
            ("page size", "4096"),
            ("mem", "4.10 MiB"),
            ("manifest", f"{manifest / 1024:.1f} KiB"),
            ("on disk", None),
            ("regions", "6: 1 reserve, 1 unit, 1 anon, 1 stack, 1 file, 1 vdso"),
            ("memory by source", "mem 4.10 MiB, pmem 0 B, file 24.0 KiB, zero 1.00 MiB, hole 1.00 GiB"),
            ("chunks", "3 of mem, 1 of other files"),
            ("files", "1"),
        ]
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), len(want), r.stdout)
        for line, (key, value) in zip(lines, want):
            self.assertEqual(line[:18], f"{key:<17} ", line)
            if value is not None:
                self.assertEqual(line[18:], value)
        # The same capsule by each way of naming it.
        for name, cwd in [("job.mmtcap", None), (path, None), (path + "/", None), ("./job.mmtcap", self.caps)]:
            r2 = self.snap("info", name, cwd=cwd)
            self.assertEqual((r2.returncode, r2.stderr), (0, ""), name)
            self.assertEqual(r2.stdout.splitlines()[1:], lines[1:], name)
        r2 = self.snap("info", "job", "--dir", self.caps, env={"MMTIER_SNAPSHOT_DIR": None})
        self.assertEqual(r2.stdout, r.stdout)

    def test_info_json(self):
        path = self.make("job", "--status", "failed", "--line", "cannot sync the manifest", "--error", errno.EIO)
        r = self.snap("info", "job", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        j = json.loads(r.stdout)
        self.assertEqual(j, dict(j, path=path, status="failed", reason="cannot sync the manifest", error="EIO",
                                 pid=4242, comm="testprog", threads=3, uid=1000, gid=100, euid=1000, egid=100,
                                 created_unix_ns=self.CREATED_NS, paused_ns=1234567, kernel_release="6.1.0-test-amd64",
                                 boot_id="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", mmtier_version="0.1.0",
                                 capsule_id="a0a1a2a3a4a5a6a7a8a9aaabacadaeaf", page_size=4096, mem_bytes=self.MEM,
                                 manifest_bytes=os.path.getsize(os.path.join(path, "manifest")), disk_bytes=du(path),
                                 shared_disk_bytes=0, shared_bytes=0, base_id=None,
                                 regions=6, runs=9, mem_chunks=3, other_chunks=1, files=1, verified=None))
        self.assertEqual(j["regions_by_kind"], {"reserve": 1, "unit": 1, "anon": 1, "stack": 1, "brk": 0, "file": 1,
                                                "vdso": 1, "vvar": 0, "stats": 0})
        self.assertEqual(j["bytes_by_source"], {"hole": (1 << 30) + 26 * 4096, "mem": self.MEM, "pmem": 0,
                                                "file": 6 * 4096, "zero": MiB, "base": 0})

    def test_info_verify(self):
        self.make("good")
        r = self.snap("info", "good", "--verify")
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertIn("\nverified          3 chunks, 4.10 MiB of mem: every CRC32C matches (other files not checked)\n",
                      r.stdout)
        j = json.loads(self.snap("info", "good", "--verify", "--json").stdout)
        self.assertEqual(j["verified"], {"chunks": 3, "bytes": self.MEM})
        # One byte of mem's second chunk: only --verify reads mem.
        self.make("flipped", "--damage", "mem-byte")
        r = self.snap("info", "flipped")
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        r = self.snap("info", "flipped", "--verify")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, "")
        self.assertRegex(r.stderr, r"^mmtier snapshot: flipped: mem is damaged: the chunk at offset 2097152 \(2.00 MiB\) "
                                   r"has CRC32C [0-9a-f]{8}, the manifest says [0-9a-f]{8}\n$")
        # mem cut short: the manifest alone says so.
        # Two damaged chunks: the first by offset is named, whatever the
        # order of the chunks table.
        self.make("two", "--damage", "mem-bytes", "--reverse-chunks")
        r = self.snap("info", "two", "--verify")
        self.assertRegex(r.stderr, r"^mmtier snapshot: two: mem is damaged: the chunk at offset 2097152 \(2.00 MiB\) ")
        self.make("short", "--damage", "mem-short")
        r = self.snap("info", "short")
        self.assert_error(r, "short", f"damaged: mem is {self.MEM - 4096} bytes, shorter than the {self.MEM} "
                                      "the manifest says")
        self.make("nomem", "--damage", "no-mem")
        self.assert_error(self.snap("info", "nomem", "--verify"), "nomem", "damaged: no mem file")

    def test_info_errors(self):
        for damage, text in [("header-crc", "the header or the table directory is damaged"),
                             ("status-crc", "the status block is damaged"),
                             ("bad-magic", "not a capsule manifest"),
                             ("table-crc", "a table's content is damaged"),
                             ("truncated", "the manifest is shorter than its own tables say")]:
            self.make(damage, "--damage", damage)
            self.assert_error(self.snap("info", damage), damage, f"damaged: {text}")
            self.assert_error(self.snap("info", damage, "--json"), damage, f"damaged: {text}")
        self.assert_error(self.snap("info", "nosuch"), "nosuch", "no such capsule")
        self.assert_error(self.snap("info", "/nonexistent/x.mmtcap"), "/nonexistent/x.mmtcap", "no such capsule")
        self.make("open", "--mode", "755")
        self.assert_error(self.snap("info", "open"), "open", "open to group or others (a capsule must be mode 0700)")
        tmp = self.make("stray", "--tmp")
        pid = int(tmp.rsplit("-", 2)[1])
        self.assert_error(self.snap("info", tmp), tmp, f"incomplete (writer {pid} gone)")

    # --- delete

    def test_delete(self):
        keep = {}
        for name, args in [("durable", []), ("failed", ["--status", "failed"]), ("damaged", ["--damage", "header-crc"]),
                           ("more", []), ("bymagic", ["--damage", "bad-magic"]), ("notes", ["--damage", "extra-file"]),
                           ("open", ["--mode", "700"])]:
            keep[name] = self.make(name, *args)
        os.chmod(keep["open"], 0o750)
        pmem = os.path.join(keep["more"], "pmem-1.tier")
        open(pmem, "w").close()
        os.mkdir(os.path.join(keep["more"], "files"))
        for i in range(3):
            open(os.path.join(keep["more"], "files", str(i)), "w").close()
        stray = self.make("stray", "--tmp")
        running = self.make("busy", "--tmp", "--tmp-pid", os.getpid())
        r = self.snap("delete", "durable", "failed.mmtcap", keep["damaged"], "nosuch", "more", "bymagic", "notes",
                      "open", stray, running)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, "")
        self.assertEqual(r.stderr.splitlines(), [
            "mmtier snapshot: nosuch: no such capsule",
            "mmtier snapshot: bymagic: not a capsule (its manifest is not a capsule manifest)",
            "mmtier snapshot: notes: not a capsule (it holds files a capsule does not have)",
            "mmtier snapshot: open: open to group or others (a capsule must be mode 0700)",
            f"mmtier snapshot: {running}: being written (writer {os.getpid()} running)",
        ])
        self.assertEqual(sorted(os.listdir(self.caps)),
                         sorted(["bymagic.mmtcap", "notes.mmtcap", "open.mmtcap", os.path.basename(running)]))
        # What was refused is untouched.
        self.assertEqual(sorted(os.listdir(keep["notes"])), ["manifest", "mem", "notes.txt"])
        self.assertEqual(sorted(os.listdir(keep["bymagic"])), ["manifest", "mem"])
        r = self.snap("delete", "bymagic")
        self.assertEqual(r.returncode, 1)
        # Not a capsule by its name, though it holds what one does.
        data = os.path.join(self.caps, "data")
        os.mkdir(data, 0o700)
        open(os.path.join(data, "manifest"), "w").close()
        self.assert_error(self.snap("delete", data), data, "not a capsule (its name does not end in .mmtcap)")
        self.assertTrue(os.path.exists(os.path.join(data, "manifest")))
        # A symlink to a capsule is refused, the capsule kept.
        os.symlink(keep["notes"], os.path.join(self.caps, "link.mmtcap"))
        self.assert_error(self.snap("delete", "link"), "link", "is a symbolic link")
        self.assertTrue(os.path.isdir(keep["notes"]))

    def test_delete_foreign_capsules(self):
        self.need_root()
        os.chmod(self.caps, 0o755)  # the other user may look in
        theirs = self.make("theirs", "--owner", 65534)
        mine = self.make("mine")
        # root may delete any capsule; another user only its own.
        r = self.snap("delete", "mine", user=65534)
        self.assert_error(r, "mine", "not owned by you")
        self.assertTrue(os.path.isdir(mine))
        got = {c["name"]: (c["status"], c["reason"]) for c in self.list_json(user=65534)["capsules"]}
        self.assertEqual(got, {"mine": ("unreadable", "not owned by you"), "theirs": ("durable", None)})
        r = self.snap("delete", "theirs")
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertFalse(os.path.exists(theirs))

    def test_usage(self):
        for args, msg in [
            ([], "no subcommand given (PID, list, info or delete)"),
            (["take"], 'unknown subcommand "take" (PID, list, info or delete)'),
            (["12x"], 'unknown subcommand "12x" (PID, list, info or delete)'),
            (["0"], 'invalid pid "0"'),
            (["1234", "--frob"], 'unknown argument "--frob"'),
            (["list", "x"], "unexpected argument x"),
            (["list", "--verify"], "--verify is an option of info"),
            (["info"], "info: no CAPSULE given"),
            (["info", "a", "b"], "info: give one CAPSULE"),
            (["delete"], "delete: no CAPSULE given"),
            (["delete", "a", "--json"], "--json is an option of list and info"),
            (["list", "--frob"], "unknown option --frob"),
            (["list", "--dir"], "option --dir needs a value"),
        ]:
            r = self.snap(*args)
            self.assert_one_line_error(r, 2, f"mmtier snapshot: {msg} (see 'mmtier snapshot --help')")
        r = self.snap("delete", "--", "--json")
        self.assert_error(r, "--json", "no such capsule")


# ---------------------------------------------------------------------------
class SnapshotTakeTest(Base):
    """mmtier snapshot PID: a real process under libmmtier, reached through
    its control socket; the capsule checked with mmtier snapshot info."""

    def setUp(self):
        super().setUp()
        # On a disk file system, as capsules are meant to be.
        self.caps = tempfile.mkdtemp(prefix="mmtier-take-", dir="/var/tmp")
        self.addCleanup(shutil.rmtree, self.caps, True)

    def wait_socket(self, pid):
        path = os.path.join(self.dir, f"{pid}.ctl")
        deadline = time.monotonic() + 30
        while not os.path.exists(path):
            self.assertLess(time.monotonic(), deadline, "no control socket")
            time.sleep(0.02)
        return path

    def test_snapshot_of_a_running_process(self):
        c = self.child(mib=48)
        self.wait_socket(c.pid)
        r = mmtier(["snapshot", str(c.pid), "--dir", self.caps, "--name", "one"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        path = os.path.join(self.caps, "one.mmtcap")
        self.assertEqual(r.stdout, path + "\n")
        # Its PMem tier (/dev/shm by default) is linked into a capsule on
        # the same file system, else copied, and the command says why.
        pmem_elsewhere = os.stat(self.caps).st_dev != os.stat("/dev/shm").st_dev
        self.assertRegex(r.stderr, rf"^mmtier snapshot: process {c.pid}: [0-9]+ threads stopped for [0-9.]+ ms; "
                                   r"[0-9.]+ [KMG]?i?B of memory written" +
                                   ("\n" r"mmtier snapshot: PMem units copied: the PMem tier \(/dev/shm\) is on another "
                                    r"file system than the capsule\n$" if pmem_elsewhere else
                                    r", [0-9.]+ [KMG]?i?B of PMem linked, not copied\n$"))
        # A complete, verified capsule of that process, which runs on.
        r = mmtier(["snapshot", "info", path, "--verify", "--json"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        info = json.loads(r.stdout)
        self.assertEqual(info["pid"], c.pid)
        self.assertEqual(info["status"], "durable")
        self.assertGreaterEqual(info["mem_bytes"], 48 * MiB)
        self.assertEqual(info["verified"]["chunks"], info["mem_chunks"])
        with open(f"/proc/{c.pid}/status") as f:
            umask = int(re.search(r"^Umask:\s+([0-7]+)$", f.read(), re.M).group(1), 8)
        self.assertEqual(info["process_state"], {"signals_handled": info["process_state"]["signals_handled"],
                                                 "signals_ignored": info["process_state"]["signals_ignored"],
                                                 "umask": umask, "cwd": os.readlink(f"/proc/{c.pid}/cwd")})
        self.assertIsNotNone(c.stats(), "the process runs on")
        # The same name again: refused, one line, the first capsule kept.
        r = mmtier(["snapshot", str(c.pid), "--dir", self.caps, "--name", "one"], self.dir)
        self.assert_one_line_error(r, 1, f"mmtier: snapshot of process {c.pid} failed: a capsule named one exists "
                                         f"in {self.caps}")
        # JSON, a relative directory (taken from the command's cwd), a default name.
        os.makedirs(os.path.join(self.caps, "rel"))
        r = mmtier(["snapshot", str(c.pid), "--dir", "rel", "--json"], self.dir, cwd=self.caps)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(out["pid"], c.pid)
        self.assertTrue(out["path"].startswith(os.path.join(self.caps, "rel", "cli_stats_child-")), out["path"])
        self.assertGreater(out["paused_ms"], 0)
        self.assertGreaterEqual(out["threads"], 1)
        self.assertTrue(os.path.isdir(out["path"]))

    def test_unreachable_processes(self):
        pid = free_pid()
        r = mmtier(["snapshot", str(pid), "--dir", self.caps], self.dir)
        self.assert_one_line_error(r, 3, f"mmtier: no process {pid}")
        p = subprocess.Popen(["sleep", "300"], env=base_env(self.dir))
        self.addCleanup(p.wait)
        self.addCleanup(p.kill)
        r = mmtier(["snapshot", str(p.pid), "--dir", self.caps], self.dir)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn(f"process {p.pid} is not running under libmmtier", r.stderr)
        self.assertEqual(len(r.stderr.splitlines()), 1)
        self.assertEqual(os.listdir(self.caps), [])
        # Under libmmtier but small: no control socket yet, and the way to
        # snapshot it said.
        small = subprocess.Popen(["sleep", "300"], env=dict(base_env(self.dir), LD_PRELOAD=ARGS.lib))
        self.addCleanup(small.wait)
        self.addCleanup(small.kill)
        wait_until(lambda: "libmmtier" in open(f"/proc/{small.pid}/maps").read(), 30, "the library loaded")
        r = mmtier(["snapshot", str(small.pid), "--dir", self.caps], self.dir)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertRegex(r.stderr, rf"^mmtier: process {small.pid} runs under libmmtier but has no control socket "
                                   r"\(.*\): it opens one once it has placed 32 MiB .* start a smaller process "
                                   r"with MMTIER_BACKGROUND_AT=0, or with MMTIER_SNAPSHOT_SIGNAL=USR1 .*\n$")
        self.assertEqual(os.listdir(self.caps), [])

    def test_another_users_process(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to run processes as other users")
        # The process as nobody, with its default (private) statistics directory.
        env = base_env(self.dir)
        del env["MMTIER_STATS_DIR"]
        env["LD_PRELOAD"] = ARGS.lib
        bindir = tempfile.mkdtemp(prefix="mmtier-take-bin-")
        self.addCleanup(shutil.rmtree, bindir, True)
        os.chmod(bindir, 0o755)
        for src in (ARGS.child, ARGS.lib, ARGS.mmtier):
            shutil.copy(src, bindir)
            os.chmod(os.path.join(bindir, os.path.basename(src)), 0o755)
        env["LD_PRELOAD"] = os.path.join(bindir, os.path.basename(ARGS.lib))
        p = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              os.path.join(bindir, os.path.basename(ARGS.child))],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.addCleanup(p.wait)
        self.addCleanup(p.kill)
        read_line(p.stdout, 60, "cli_stats_child")
        sock = f"/dev/shm/mmtier-65534/{p.pid}.ctl"
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            self.assertLess(time.monotonic(), deadline, "no control socket")
            time.sleep(0.02)
        caps = tempfile.mkdtemp(prefix="mmtier-take-other-", dir="/var/tmp")
        self.addCleanup(shutil.rmtree, caps, True)
        os.chown(caps, 65534, 65534)
        cli_env = {k: v for k, v in base_env(self.dir).items() if k != "MMTIER_STATS_DIR"}
        # Another user (not root, not nobody): refused.
        r = subprocess.run(["setpriv", "--reuid=65533", "--regid=65533", "--clear-groups",
                            os.path.join(bindir, "mmtier"), "snapshot", str(p.pid), "--dir", caps],
                           env=cli_env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn(f"process {p.pid} belongs to another user", r.stderr)
        self.assertEqual(os.listdir(caps), [])
        # Root may; the capsule belongs to the process's user.
        r = subprocess.run([ARGS.mmtier, "snapshot", str(p.pid), "--dir", caps, "--name", "theirs"],
                           env=cli_env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        st = os.stat(os.path.join(caps, "theirs.mmtcap"))
        self.assertEqual((st.st_uid, st.st_mode & 0o777), (65534, 0o700))


# ---------------------------------------------------------------------------

def _try_connect(port):
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=30)
    except OSError:
        return None
    try:
        if _resp(c, "PING") == "PONG":
            return c
    except OSError:
        pass
    c.close()
    return None


def _resp(conn, *args):
    """One Redis command over RESP: its reply (str, int, None or a list)."""
    out = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    conn.sendall(out.encode())
    f = conn.makefile("rb")
    try:
        return _reply(f)
    finally:
        f.close()


def _reply(f):
    line = f.readline()
    if not line:
        raise OSError("the connection ended")
    kind, rest = line[:1], line[1:-2].decode()
    if kind == b"+":
        return rest
    if kind == b"-":
        raise AssertionError(f"redis: {rest}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode()
    if kind == b"*":
        return [_reply(f) for _ in range(int(rest))]
    raise AssertionError(f"redis: unexpected reply {line!r}")

# python3 holding 64 MiB of random bytes: appends "PID SHA-256" of them to
# argv[1] at the start and at each SIGUSR1, and otherwise sleeps.
HASHING_PROG = (
    "import hashlib, os, random, signal, sys, time\n"
    "random.seed(7)\n"
    "data = bytearray(random.randbytes(64 << 20))\n"
    "def say(*_):\n"
    "    with open(sys.argv[1], 'a') as f:\n"
    "        f.write(f'{os.getpid()} {hashlib.sha256(data).hexdigest()}\\n')\n"
    "signal.signal(signal.SIGUSR1, say)\n"
    "say()\n"
    "while True:\n"
    "    time.sleep(0.05)\n")


# HASHING_PROG that also changes its data: at each SIGUSR2 one byte in
# every 100th page (1 %), then "PID poked" to argv[1].
POKING_PROG = HASHING_PROG.replace(
    "signal.signal(signal.SIGUSR1, say)\n",
    "signal.signal(signal.SIGUSR1, say)\n"
    "def poke(*_):\n"
    "    for i in range(0, len(data), 100 * 4096):\n"
    "        data[i] = (data[i] + 1) & 0xff\n"
    "    with open(sys.argv[1], 'a') as f:\n"
    "        f.write(f'{os.getpid()} poked\\n')\n"
    "signal.signal(signal.SIGUSR2, poke)\n")


# python3 holding 64 MiB of random bytes and serving them on TCP port
# argv[1] (0: any) of 127.0.0.1, one line per request: "sum" (SHA-256 of
# the bytes), "poke" (one byte in every 100th page changed), "drop" (16
# MiB of a private anonymous mapping filled with 0xab given back with
# MADV_DONTNEED: the count of its bytes not zero after), "pid" (the PID it
# sees itself as).  Writes "PID PORT" to argv[2] once it listens.
SERVING_PROG = (
    "import hashlib, mmap, os, random, socket, sys\n"
    "random.seed(7)\n"
    "data = bytearray(random.randbytes(64 << 20))\n"
    "anon = mmap.mmap(-1, 16 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
    "anon.write(b'\\xab' * (16 << 20))\n"
    "s = socket.socket()\n"
    "s.bind(('127.0.0.1', int(sys.argv[1])))\n"
    "s.listen(8)\n"
    "with open(sys.argv[2] + '.new', 'w') as f:\n"
    "    f.write(f'{os.getpid()} {s.getsockname()[1]}\\n')\n"
    "os.rename(sys.argv[2] + '.new', sys.argv[2])\n"
    "while True:\n"
    "    c, _ = s.accept()\n"
    "    with c, c.makefile('rw') as f:\n"
    "        for line in f:\n"
    "            if line.startswith('sum'):\n"
    "                f.write(hashlib.sha256(data).hexdigest() + '\\n')\n"
    "            elif line.startswith('poke'):\n"
    "                for i in range(0, len(data), 100 * 4096):\n"
    "                    data[i] = (data[i] + 1) & 0xff\n"
    "                f.write('poked\\n')\n"
    "            elif line.startswith('drop'):\n"
    "                anon.madvise(mmap.MADV_DONTNEED)\n"
    "                f.write(f'{(16 << 20) - anon[:].count(0)}\\n')\n"
    "            else:\n"
    "                f.write(f'{os.getpid()}\\n')\n"
    "            f.flush()\n")


def ask_line(port, request, netns=None):
    """One request to a SERVING_PROG on port (in network namespace netns,
    a path, when given): its answer."""
    code = ("import socket, sys\n"
            "c = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=30)\n"
            "f = c.makefile('rw'); f.write(sys.argv[2] + '\\n'); f.flush(); print(f.readline().strip())\n")
    if netns:
        r = subprocess.run(["nsenter", f"--net={netns}", sys.executable, "-c", code, str(port), request],
                           capture_output=True, text=True, timeout=60)
        if r.returncode:
            raise OSError(r.stderr)
        return r.stdout.strip()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as c, c.makefile("rw") as f:
        f.write(request + "\n")
        f.flush()
        return f.readline().strip()


def free_ports(n):
    """A base port b with b .. b+n-1 free on 127.0.0.1 now."""
    for _ in range(200):
        b = random.randint(20000, 60000 - n)
        socks = []
        try:
            for k in range(n):
                t = socket.socket()
                socks.append(t)
                t.bind(("127.0.0.1", b + k))
            return b
        except OSError:
            pass
        finally:
            for t in socks:
                t.close()
    raise AssertionError("no free ports")


def pss_rss(pid):
    """(Pss, Rss) of process pid in bytes, from smaps_rollup."""
    text = text_of(f"/proc/{pid}/smaps_rollup")
    return tuple(int(re.search(rf"^{k}:\s+(\d+)", text, re.M).group(1)) * 1024 for k in ("Pss", "Rss"))


# A Java program for the JVM restore test: STEPS lines appended to a file,
# 10 ms apart, with garbage for the collector and a map kept across steps.
JVM_STEPS_N = 300
JVM_STEPS = """
import java.io.*;
import java.util.*;
public class Steps {
  public static void main(String[] a) throws Exception {
    PrintWriter out = new PrintWriter(new FileWriter(a[0], true), true);
    HashMap<Integer, long[]> kept = new HashMap<>();
    long total = 0;
    for (int i = 0; i < %d; ++i) {
      total += (long) i * i;
      for (int k = 0; k < 2000; ++k) kept.put(k, new long[32]);
      kept.get(i %% 2000)[0] = total;
      out.println("step " + i + " " + total);
      Thread.sleep(10);
    }
    out.println("done " + total);
    out.close();
  }
}
""" % JVM_STEPS_N


class RestoreTest(Base):
    """mmtier restore: real processes (cli_restore_child) snapshotted, killed
    and brought back with their PID, TIDs, memory and threads; and every
    refusal, with its one line, before anything runs."""

    def setUp(self):
        super().setUp()
        self.caps = tempfile.mkdtemp(prefix="mmtier-restore-", dir="/var/tmp")
        self.addCleanup(shutil.rmtree, self.caps, True)
        self.report = os.path.join(self.caps, "report")
        os.chmod(self.caps, 0o700)

    def env(self):
        e = base_env(self.dir)
        e.update({"LD_PRELOAD": ARGS.lib, "MMTIER_SNAPSHOT_DIR": self.caps})
        e.update(getattr(self, "extra_env", {}))
        return e

    def lines(self):
        try:
            with open(self.report) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def wait_line(self, pattern, what, timeout=60):
        return wait_until(lambda: next((m for m in (re.search(pattern, l) for l in self.lines()) if m), None),
                          timeout, what)

    def start(self, *args, binary=None, **kw):
        p = subprocess.Popen([binary or ARGS.restore_child, *args, self.report], env=self.env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
        self.addCleanup(lambda: (p.poll() is None and p.kill(), p.wait()))
        return p

    def kill(self, p):
        p.kill()
        p.wait()

    def restore(self, capsule, *extra, env=None, **kw):
        return subprocess.run([ARGS.mmtier, "restore", capsule, *extra], env=env or base_env(self.dir),
                              capture_output=True, text=True, timeout=120, **kw)

    def python(self, prog, *args, env=None):
        """python3 -c PROG ARGS under libmmtier, killed at the test's end."""
        p = subprocess.Popen([sys.executable, "-c", prog, *args], env=env or self.env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (p.poll() is None and p.kill(), p.wait()))
        return p

    def restore_and_ask(self, capsule, *extra):
        """Restores CAPSULE (a serve child's) detached and asks it with
        SIGUSR1 for its state: (its host PID, the state line's match)."""
        r = self.restore(capsule, "--detach", *extra)
        self.assertEqual(r.returncode, 0, r.stderr)
        host = int(r.stdout)
        self.addCleanup(lambda: kill_if_alive(host))
        n = len(self.lines())
        os.kill(host, signal.SIGUSR1)
        m = wait_until(lambda: len(self.lines()) > n and re.search(
            r"^state pid=(\d+) tids=([0-9,]+) generation=(\d+) buffer=(\w+)", self.lines()[-1]), 30, "the answer")
        return host, m

    def poking(self, sums):
        """POKING_PROG under libmmtier, reaped as soon as it ends (as a shell
        would: its PID is free again), once it has said its first sum and
        listens on its control socket."""
        p = self.python(POKING_PROG, sums)
        threading.Thread(target=p.wait, daemon=True).start()
        wait_until(lambda: os.path.exists(sums) and os.path.getsize(sums) > 0, 60, "the first sum")
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{p.pid}.ctl")), 60, "the control socket")
        return p

    def answer(self, sums, target, sig):
        """Sends sig to a POKING_PROG (or HASHING_PROG) process and waits for
        its line in sums: the sum it says (SIGUSR1), or "poked" (SIGUSR2)."""
        n = len(text_of(sums).splitlines())
        os.kill(target, sig)
        wait_until(lambda: len(text_of(sums).splitlines()) > n, 60, "the answer")
        return text_of(sums).splitlines()[-1].split()[1]

    def test_restored_after_kill_with_its_pid_tids_memory_and_threads(self):
        p = self.start("self", "one")
        m = self.wait_line(r"^snapshot taken pid=(\d+)$", "the snapshot")
        self.assertEqual(int(m.group(1)), p.pid)
        # Killed as a crash would: the capsule is all that is left.
        self.kill(p)
        capsule = os.path.join(self.caps, "one.mmtcap")
        r = self.restore(capsule)
        self.assertEqual(r.returncode, 0, r.stderr)
        # As root, with its PID free, it is restored at its own PID in this
        # PID namespace (else in a new one, below).
        host = rf"{p.pid}" if os.geteuid() == 0 else r"[0-9]+"
        self.assertRegex(r.stderr, rf"^mmtier restore: {re.escape(capsule)}: process {p.pid} restored "
                                   rf"\(host pid {host}\), 4 threads\n")
        # Its own checks: the buffer as of the snapshot (the original's later
        # rewrite is not in it), the workers with their TIDs and still
        # running, the mutex a thread held across the snapshot free again.
        self.assertEqual(self.lines()[-1],
                         f"restored pid={p.pid} generation=1 buffer=ok tids=same workers=running")
        # The capsule is untouched: restored again, the same.
        r = self.restore("one", "--dir", self.caps)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.lines()[-1],
                         f"restored pid={p.pid} generation=1 buffer=ok tids=same workers=running")

    def test_a_process_whose_main_thread_exited_is_restored(self):
        # The leader thread gone (pthread_exit from main, as some servers
        # do) and the others running on: the snapshot stops them without
        # waiting for the leader, reads the process through a live thread's
        # /proc entries (the leader's show no memory, descriptors or
        # layout), and the restore brings the process back without it.
        p = self.start("leaderless", "gone")
        m = self.wait_line(r"^snapshot taken pid=(\d+)$", "the snapshot")
        self.assertEqual(int(m.group(1)), p.pid)
        self.kill(p)
        r = self.restore(os.path.join(self.caps, "gone.mmtcap"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.lines()[-1],
                         f"restored pid={p.pid} generation=1 buffer=ok tids=same workers=running")

    def test_kernel_objects_come_back(self):
        # Queued signals pending for the process and for single threads
        # (the holder thread, and the thread that took the snapshot), pipes
        # and socket pairs with their bytes, an eventfd's count, a
        # timer, a signalfd, an epoll set with all of them registered, the
        # listening and UDP sockets at their ports, a dup: each as it was at
        # the snapshot, not as the original left it after; a bound Unix
        # datagram socket's queued messages, each from its sender.
        p = self.start("kernel", "objs")
        self.wait_line(r"^snapshot taken pid=", "the snapshot")
        # The capture asked an epoll set about a number by adding it: the
        # original's set is as it was.
        self.assertIn("original lone=ok", self.lines())
        port = int(self.wait_line(r"^bound port=(\d+)$", "the bound socket's port").group(1))
        self.kill(p)
        # Once as this kernel allows, once as kernels before 6.16 need (the
        # POSIX timers' ids, above 100, reached by using up the ids below).
        capsule = os.path.join(self.caps, "objs.mmtcap")
        for in_order in ("0", "1"):
            env = dict(base_env(self.dir), _MMTIER_RESTORE_TIMERS_IN_ORDER=in_order)
            r = self.restore(capsule, env=env)
            self.assertEqual(r.returncode, 0, r.stderr + "\n".join(self.lines()))
            self.assertEqual(self.lines()[-2], f"restored pid={p.pid} generation=1 buffer=ok tids=same workers=running")
            self.assertEqual(self.lines()[-1], "kernel signals=ok ptimers=ok unnamed=ok pipe=ok eventfd=ok timer=ok "
                                               "signalfd=ok pair=ok listen=ok conn=ended udp=ok dup=ok many=ok "
                                               "lone=ok tdup=ok cloexec=ok pairs=ok dgram=ok bound=ok tsig=ok")
        # A socket the program only bound gets its port or nothing: with
        # the port taken, the restore fails and says which descriptor.
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", port))
            r = self.restore(capsule)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, rf"descriptor \d+: cannot bind its socket to 127\.0\.0\.1:{port} again: Address "
                                   r"already in use\n$")

    def test_lazy_restore_fills_memory_while_the_program_runs(self):
        """restore --lazy: the large regions are filled from the capsule while
        the program runs (paced to 1 MiB/s so that the program's own checks
        run during the fill): memory given back meanwhile stays zero, moved
        memory keeps its bytes, a child forked meanwhile sees the snapshot's
        memory but zeros where the program asked MADV_WIPEONFORK, and
        everything else is as after an eager restore."""
        p = self.start("lazy", "lz")
        self.wait_line(r"^snapshot taken pid=", "the snapshot")
        self.kill(p)
        capsule = os.path.join(self.caps, "lz.mmtcap")
        r = self.restore(capsule, "--lazy", "--fill-rate", "1")
        if "restoring eagerly" in r.stderr:
            self.skipTest(r.stderr.strip())
        self.assertEqual(r.returncode, 0, r.stderr + "\n".join(self.lines()))
        self.assertEqual(self.lines()[-2], f"restored pid={p.pid} generation=1 buffer=ok tids=same workers=running")
        self.assertEqual(self.lines()[-1], "lazy dontneed=ok mremap=ok fork=ok wipe=ok advice=ok")
        m = re.search(r"lazy fill (?:done|ended with the processes) in [0-9.]+ s: .* copied, (\d+) faults served, "
                      r"(\d+) zero pages, (\d+) forked children filled", r.stderr)
        self.assertTrue(m, r.stderr)
        # The program faulted on memory the fill had not reached and forked
        # during the fill.  (Memory it gave back reads as zero either way:
        # through zero pages the fill serves, or through a fresh mapping
        # where libmmtier replaced a unit's pages; the program checks it.)
        self.assertGreater(int(m.group(1)), 0, r.stderr)
        self.assertGreaterEqual(int(m.group(3)), 1, r.stderr)

    def test_advice_and_memory_wiped_at_fork_are_restored(self):
        """The advice a program gave its memory (here MADV_WIPEONFORK and
        MADV_DONTDUMP) is the restored mappings' again, and memory wiped in
        a fork child (which the capsule's writer is) is saved from its copy
        in the pause: the restored process holds its bytes, a child it
        forks reads zero there.  An eager restore; the lazy one is above."""
        p = self.start("lazy", "adv")
        self.wait_line(r"^snapshot taken pid=", "the snapshot")
        self.kill(p)
        r = self.restore(os.path.join(self.caps, "adv.mmtcap"))
        self.assertEqual(r.returncode, 0, r.stderr + "\n".join(self.lines()))
        self.assertEqual(self.lines()[-1], "lazy dontneed=ok mremap=ok fork=ok wipe=ok advice=ok")

    def test_lazy_restore_of_a_damaged_chunk_kills_the_process(self):
        """A chunk left to the lazy fill is checked when it is first needed:
        damaged, the restored process is killed before it sees a byte of it,
        with one line naming the chunk."""
        p = self.start("lazy", "bad")
        self.wait_line(r"^snapshot taken pid=", "the snapshot")
        self.kill(p)
        capsule = os.path.join(self.caps, "bad.mmtcap")
        mem = os.path.join(capsule, "mem")
        with open(mem, "r+b") as f:
            data = f.read()
            # The 8 MiB mapping of 0x5a: the program checks its second half.
            at = data.find(b"\x5a" * 65536)
            self.assertGreaterEqual(at, 0)
            f.seek(at + (6 << 20))
            f.write(b"\x5b")
        r = self.restore(capsule, "--lazy", "--fill-rate", "1")
        if "restoring eagerly" in r.stderr:
            self.skipTest(r.stderr.strip())
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"mem is damaged: the chunk at offset [0-9]+ has CRC32C [0-9a-f]{8}, the manifest "
                                   r"says [0-9a-f]{8}; the restored processes are killed before they see it")
        self.assertFalse(any(l.startswith("lazy ") for l in self.lines()), self.lines())
        # An eager restore refuses it before anything runs.
        r = self.restore(capsule)
        self.assertEqual(r.returncode, 1)
        self.assertIn("refused: mem is damaged", r.stderr)

    def test_redis_under_load_restored_with_the_snapshot_points_data(self):
        """redis-server holding keys, snapshotted from outside while
        redis-benchmark writes to it, changed after, killed with SIGKILL:
        restored, it holds exactly the keys and values of the snapshot point
        and serves new connections (its listening socket, epoll set and
        pipes made again)."""
        server, bench = shutil.which("redis-server"), shutil.which("redis-benchmark")
        if not server or not bench:
            self.skipTest("redis-server and redis-benchmark are not installed")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        keys = 200000
        p = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                              "--enable-debug-command", "yes"], env=self.env(), cwd=self.caps,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (p.poll() is None and p.kill(), p.wait()))

        def client():
            return wait_until(lambda: _try_connect(port), 30, "redis to answer")

        c = client()
        self.assertEqual(_resp(c, "DEBUG", "POPULATE", str(keys), "key", "16"), "OK")

        def checksum(conn):
            h = hashlib.sha256()
            for lo in range(0, keys, 2000):
                vals = _resp(conn, "MGET", *[f"key:{i}" for i in range(lo, min(keys, lo + 2000))])
                for v in vals:
                    h.update(b"\0" if v is None else v.encode() + b"\1")
            return h.hexdigest()

        before = checksum(c)
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{p.pid}.ctl")), 30, "the control socket")
        load = subprocess.Popen([bench, "-p", str(port), "-t", "set", "-r", "100000", "-n", "100000000", "-P", "8",
                                 "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (load.poll() is None and load.kill(), load.wait()))
        wait_until(lambda: int(_resp(c, "DBSIZE")) > keys, 30, "the load to write")
        r = mmtier(["snapshot", str(p.pid), "--dir", self.caps, "--name", "redis"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        # After the snapshot point: none of this may come back.
        self.assertEqual(_resp(c, "SET", "key:0", "changed"), "OK")
        self.assertEqual(_resp(c, "DEL", "key:1"), 1)
        self.assertEqual(_resp(c, "SET", "later", "1"), "OK")
        c.close()
        self.kill(p)
        load.kill()
        load.wait()
        r = self.restore(os.path.join(self.caps, "redis.mmtcap"), "--detach")
        self.assertEqual(r.returncode, 0, r.stderr)
        host = int(r.stdout)
        self.addCleanup(lambda: kill_if_alive(host))
        c = client()
        self.addCleanup(c.close)
        self.assertEqual(checksum(c), before)
        self.assertIsNone(_resp(c, "GET", "later"))
        self.assertEqual(_resp(c, "SET", "new", "v"), "OK")
        self.assertEqual(_resp(c, "GET", "new"), "v")
        self.assertIn(f"process_id:{p.pid}", _resp(c, "INFO", "server"))

    def test_external_snapshot_kill_restore_detached(self):
        p = self.start("serve")
        self.wait_line(r"^serving pid=", "the start")
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{p.pid}.ctl")), 30, "the control socket")
        r = mmtier(["snapshot", str(p.pid), "--dir", self.caps, "--name", "ext"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        p.send_signal(signal.SIGUSR1)
        before = self.wait_line(r"^state pid=(\d+) tids=([0-9,]+) generation=(\d+) buffer=ok", "the state")
        self.kill(p)
        # In a PID namespace of its own (--pid-namespace; also where its PID
        # is taken): the same PID inside, another outside.
        # The restored process runs on as the same process: asked through
        # its host PID, it answers with its own PID and TIDs.
        host, m = self.restore_and_ask(os.path.join(self.caps, "ext.mmtcap"), "--pid-namespace")
        self.assertEqual(m.group(1), before.group(1))
        self.assertEqual(m.group(2), before.group(2))
        self.assertEqual(m.group(4), "ok")
        with open(f"/proc/{host}/status") as f:
            self.assertIn("NSpid:\t" + str(host) + "\t" + before.group(1), f.read())
        # From outside it is known by its host PID: its control socket and
        # statistics are named by it, so it can be snapshotted again ...
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{host}.ctl")), 30, "the restored control socket")
        r = mmtier(["snapshot", str(host), "--dir", self.caps, "--name", "again"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.stat_json(host)["pid"], host)
        # ... and that capsule is not restored while the process runs.
        again = os.path.join(self.caps, "again.mmtcap")
        self.assert_refused(again, rf"process {before.group(1)}, which the snapshot was taken of, is still running "
                                   rf"\(host pid {host}\): stop it first")
        os.kill(host, signal.SIGKILL)

    def test_zeroio_links_pmem_and_each_capsule_keeps_its_instant(self):
        # The PMem tier on the capsules' file system: a snapshot links the
        # PMem file instead of copying its units, and the program's writes
        # after it never reach the capsule.
        pmem = tempfile.mkdtemp(prefix="mmtier-pmem-", dir=os.path.dirname(self.caps))
        self.addCleanup(shutil.rmtree, pmem, True)
        self.extra_env = {"MMTIER_PMEM_PATH": pmem, "MMTIER_DRAM_RATIO": "1:8"}
        p = self.start("serve")
        self.wait_line(r"^serving pid=", "the start")
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{p.pid}.ctl")), 30, "the control socket")

        def snapshot(name):
            r = mmtier(["snapshot", str(p.pid), "--dir", self.caps, "--name", name, "--json"], self.dir)
            self.assertEqual(r.returncode, 0, r.stderr)
            return json.loads(r.stdout)

        def state_of(pid):
            n = len(self.lines())
            os.kill(pid, signal.SIGUSR1)
            return wait_until(lambda: len(self.lines()) > n and re.search(
                r"^state pid=(\d+) tids=([0-9,]+) generation=(\d+) buffer=ok", self.lines()[-1]), 30, "the state")

        def state():
            return state_of(p.pid)

        a = snapshot("a")
        # Most of the 32 MiB buffer is on PMem (1:8): linked, not written.
        self.assertIsNone(a["pmem_note"])
        self.assertGreaterEqual(a["pmem_linked_bytes"], 16 * MiB, a)
        self.assertLess(a["memory_bytes"], a["pmem_linked_bytes"], a)
        a_dir = os.path.join(self.caps, "a.mmtcap")
        self.assertIn("pmem-0.tier", os.listdir(a_dir))
        self.assertEqual(os.stat(os.path.join(a_dir, "pmem-0.tier")).st_mode & 0o777, 0o600)
        # The program goes on rewriting its buffer (each generation a new
        # pattern), then a second snapshot: it links the PMem file the
        # first one handed over wherever units still map it, and the new one.
        gen_a = int(state().group(3))
        wait_until(lambda: int(state().group(3)) >= gen_a + 3, 30, "three more generations")
        b = snapshot("b")
        self.assertGreater(b["pmem_linked_bytes"], 0, b)
        b_dir = os.path.join(self.caps, "b.mmtcap")
        # Deleting a breaks nothing of b (its links are its own).
        r = mmtier(["snapshot", "delete", "a", "--dir", self.caps], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = mmtier(["snapshot", "info", b_dir, "--verify", "--json"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        info = json.loads(r.stdout)
        self.assertEqual(info["verified"]["chunks"], info["mem_chunks"] + info["other_chunks"])
        self.assertEqual(info["bytes_by_source"]["pmem"], b["pmem_linked_bytes"])
        before = state()
        self.kill(p)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, f"{p.pid}.ctl"))  # the killed original's
        host, m = self.restore_and_ask(b_dir)
        self.assertEqual((m.group(1), m.group(2), m.group(4)), (before.group(1), before.group(2), "ok"))
        # The restored process holds b's PMem files: its own snapshot links
        # them again rather than copying the units it has not touched.
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{host}.ctl")), 30, "the restored control socket")
        c_state = state_of(host)  # a generation at or before c's instant
        r = mmtier(["snapshot", str(host), "--dir", self.caps, "--name", "c", "--json"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        c = json.loads(r.stdout)
        self.assertIsNone(c["pmem_note"], c)
        self.assertGreater(c["pmem_linked_bytes"], 0, c)
        os.kill(host, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, f"{host}.ctl"))
        host, m = self.restore_and_ask(os.path.join(self.caps, "c.mmtcap"))
        self.assertEqual((m.group(1), m.group(4)), (before.group(1), "ok"))
        self.assertGreaterEqual(int(m.group(3)), int(c_state.group(3)))
        os.kill(host, signal.SIGKILL)
        # A damaged linked file is refused before anything runs.
        # (A byte changed in every 2 MiB of data of every linked file.)
        for name in (f for f in os.listdir(b_dir) if f.startswith("pmem-")):
            with open(os.path.join(b_dir, name), "r+b") as f:
                at, end = 0, os.fstat(f.fileno()).st_size
                while at < end:
                    try:
                        at = os.lseek(f.fileno(), at, os.SEEK_DATA)
                    except OSError:
                        break
                    f.seek(at)
                    byte = f.read(1)
                    f.seek(at)
                    f.write(bytes([byte[0] ^ 0xff]))
                    at = (at // (2 * MiB) + 1) * 2 * MiB
        r = self.restore(b_dir)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"refused: pmem-[0-9]+\.tier is damaged: the chunk at offset [0-9]+ ")

    def test_zeroio_restored_process_links_the_capsule_file_again(self):
        # A restored process holds the capsule's PMem file its units map:
        # its own snapshot links that file again (the same inode) instead
        # of copying the units it has not touched, and deleting the first
        # capsule breaks nothing.
        pmem = tempfile.mkdtemp(prefix="mmtier-pmem-", dir=os.path.dirname(self.caps))
        self.addCleanup(shutil.rmtree, pmem, True)
        env = dict(self.env(), MMTIER_PMEM_PATH=pmem, MMTIER_DRAM_RATIO="1:8")
        sums = os.path.join(self.caps, "sums")
        p = self.python(HASHING_PROG, sums, env=env)
        wait_until(lambda: os.path.exists(sums) and os.path.getsize(sums) > 0, 60, "the first sum")
        want = open(sums).read().split()[1]
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{p.pid}.ctl")), 60, "the control socket")

        def snapshot(pid, name):
            r = mmtier(["snapshot", str(pid), "--dir", self.caps, "--name", name, "--json"], self.dir)
            self.assertEqual(r.returncode, 0, r.stderr)
            return json.loads(r.stdout)

        def sum_of(pid):
            n = len(open(sums).read().splitlines())
            os.kill(pid, signal.SIGUSR1)
            wait_until(lambda: len(open(sums).read().splitlines()) > n, 60, "the sum")
            return open(sums).read().splitlines()[-1].split()[1]

        a = snapshot(p.pid, "a")
        self.assertGreaterEqual(a["pmem_linked_bytes"], 48 * MiB, a)
        a_file = os.stat(os.path.join(self.caps, "a.mmtcap", "pmem-0.tier"))
        self.kill(p)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, f"{p.pid}.ctl"))
        r = self.restore(os.path.join(self.caps, "a.mmtcap"), "--detach")
        self.assertEqual(r.returncode, 0, r.stderr)
        host = int(r.stdout)
        self.addCleanup(lambda: kill_if_alive(host))
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{host}.ctl")), 60, "the restored control socket")
        b = snapshot(host, "b")
        self.assertIsNone(b["pmem_note"], b)
        b_dir = os.path.join(self.caps, "b.mmtcap")
        inodes = {os.stat(os.path.join(b_dir, f)).st_ino for f in os.listdir(b_dir) if f.startswith("pmem-")}
        self.assertIn(a_file.st_ino, inodes, "b links a's PMem file")
        self.assertGreaterEqual(b["pmem_linked_bytes"], 48 * MiB, b)
        os.kill(host, signal.SIGKILL)
        r = mmtier(["snapshot", "delete", "a", "--dir", self.caps], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, f"{host}.ctl"))
        r = self.restore(b_dir, "--detach")
        self.assertEqual(r.returncode, 0, r.stderr)
        again = int(r.stdout)
        self.addCleanup(lambda: kill_if_alive(again))
        self.assertEqual(sum_of(again), want)

    def test_incremental_snapshots_write_what_changed_and_survive_their_bases(self):
        # Each snapshot after the first writes only the pages changed since
        # the one before and links the earlier capsules' mem for the rest:
        # deleting those capsules breaks nothing, and a restore (eager or
        # lazy) brings back the last one's instant.
        sums = os.path.join(self.caps, "sums")
        p = self.python(POKING_PROG, sums)
        wait_until(lambda: os.path.exists(sums) and os.path.getsize(sums) > 0, 60, "the first sum")
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{p.pid}.ctl")), 60, "the control socket")

        def snapshot(name, *extra):
            r = mmtier(["snapshot", str(p.pid), "--dir", self.caps, "--name", name, "--json", *extra], self.dir)
            self.assertEqual(r.returncode, 0, r.stderr)
            return json.loads(r.stdout)

        def lines():
            with open(sums) as f:
                return f.read().splitlines()

        def signal_and_wait(sig, pid=None):
            n = len(lines())
            os.kill(pid or p.pid, sig)
            wait_until(lambda: len(lines()) > n, 60, "the answer")
            return lines()[-1].split()[1]

        def ended(pid):
            stat = text_of(f"/proc/{pid}/stat")
            return not stat or stat.split(") ")[1][0] == "Z"

        def info(name):
            r = mmtier(["snapshot", "info", name, "--dir", self.caps, "--json"], self.dir)
            self.assertEqual(r.returncode, 0, r.stderr)
            return json.loads(r.stdout)

        a = snapshot("a")
        self.assertEqual(a["shared_bytes"], 0, a)
        self.assertGreaterEqual(a["memory_bytes"], 64 * MiB, a)
        signal_and_wait(signal.SIGUSR2)
        b = snapshot("b")
        # 1 % of the 64 MiB changed (and what the interpreter wrote meanwhile).
        self.assertLess(b["memory_bytes"], 8 * MiB, b)
        self.assertGreaterEqual(b["shared_bytes"], 56 * MiB, b)
        a_id = info("a")["capsule_id"]
        self.assertEqual(info("b")["base_id"], a_id)
        self.assertIn(f"mem-{a_id}", os.listdir(os.path.join(self.caps, "b.mmtcap")))
        signal_and_wait(signal.SIGUSR2)
        c = snapshot("c")
        self.assertLess(c["memory_bytes"], 8 * MiB, c)
        c_dir = os.path.join(self.caps, "c.mmtcap")
        b_id = info("b")["capsule_id"]
        self.assertEqual(sorted(f for f in os.listdir(c_dir) if f.startswith("mem-")),
                         sorted([f"mem-{a_id}", f"mem-{b_id}"]))
        want = signal_and_wait(signal.SIGUSR1)
        # --full writes every page again and refers to none.
        d = snapshot("d", "--full")
        self.assertEqual(d["shared_bytes"], 0, d)
        self.assertGreaterEqual(d["memory_bytes"], 64 * MiB, d)
        self.assertFalse([f for f in os.listdir(os.path.join(self.caps, "d.mmtcap")) if f.startswith("mem-")])
        # The capsules c builds on are deleted: c still holds all it needs.
        for name in ("a", "b"):
            r = mmtier(["snapshot", "delete", name, "--dir", self.caps], self.dir)
            self.assertEqual(r.returncode, 0, r.stderr)
        r = mmtier(["snapshot", "info", "c", "--dir", self.caps, "--verify", "--json"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["verified"]["chunks"], info("c")["mem_chunks"] + info("c")["other_chunks"])
        self.kill(p)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, f"{p.pid}.ctl"))
        for how in ([], ["--lazy"]):
            r = self.restore(c_dir, "--detach", *how)
            self.assertEqual(r.returncode, 0, r.stderr)
            host = int(r.stdout)
            self.addCleanup(lambda h=host: kill_if_alive(h))
            self.assertEqual(signal_and_wait(signal.SIGUSR1, host), want, how)
            os.kill(host, signal.SIGKILL)
            wait_until(lambda h=host: ended(h), 30, "the end")
        # An earlier capsule's mem damaged (a byte in every 2 MiB) is
        # refused before anything runs.
        with open(os.path.join(c_dir, f"mem-{a_id}"), "r+b") as f:
            for at in range(0, os.fstat(f.fileno()).st_size, 2 * MiB):
                f.seek(at)
                byte = f.read(1)
                f.seek(at)
                f.write(bytes([byte[0] ^ 0xff]))
        r = self.restore(c_dir)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, rf"refused: mem-{a_id} is damaged: the chunk at offset [0-9]+ ")

    def autosave(self, sums, *opts):
        """mmtier run --autosave 1s OPTS -- python3 POKING_PROG SUMS (which
        also exits with status 139 at SIGHUP), its stderr to a file: (the
        supervisor, the program's pid, the log's path)."""
        log = os.path.join(self.caps, "supervisor.log")
        env = self.env()
        del env["LD_PRELOAD"]  # mmtier run preloads the library itself
        with open(log, "w") as err:
            sup = subprocess.Popen([ARGS.mmtier, "run", "--autosave", "1s", *opts, "--", sys.executable, "-c",
                                    POKING_PROG.replace("say()\nwhile", "signal.signal(signal.SIGHUP, "
                                                        "lambda *_: os._exit(139))\nsay()\nwhile"),
                                    sums], env=env, stdout=subprocess.DEVNULL, stderr=err)
        self.addCleanup(lambda: (sup.poll() is None and sup.kill(), sup.wait()))
        wait_until(lambda: os.path.exists(sums) and os.path.getsize(sums) > 0, 60, "the first sum")
        with open(sums) as f:
            pid = int(f.read().split()[0])
        self.addCleanup(lambda: kill_if_alive(pid))
        return sup, pid, log

    def auto_capsules(self, pid):
        """The durable periodic capsules of pid (mmtier snapshot list PID)."""
        r = mmtier(["snapshot", "list", str(pid), "--dir", self.caps, "--json"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        caps = json.loads(r.stdout)["capsules"]
        self.assertEqual([c for c in caps if c["pid"] != pid], [])
        return [c for c in caps if c["name"].startswith(f"auto-{pid}-") and c["status"] == "durable"]

    def test_autosave_restores_a_crashed_program_from_its_newest_snapshot(self):
        # The program snapshots itself every second (keeping 2); killed as
        # the OOM killer kills, it is back with the state of its newest
        # snapshot; killed again past --max-restarts, the supervisor gives up.
        sums = os.path.join(self.caps, "sums")
        sup, pid, log = self.autosave(sums, "--keep", "2", "--max-restarts", "1")

        def lines():
            with open(sums) as f:
                return f.read().splitlines()

        def signal_and_wait(target, sig):
            n = len(lines())
            os.kill(target, sig)
            wait_until(lambda: len(lines()) > n, 60, "the answer")
            return lines()[-1].split()[1]

        wait_until(lambda: self.auto_capsules(pid), 60, "a periodic snapshot")
        signal_and_wait(pid, signal.SIGUSR2)  # the data changes
        poked = time.time_ns()
        want = signal_and_wait(pid, signal.SIGUSR1)
        wait_until(lambda: any(c["created_unix_ns"] > poked for c in self.auto_capsules(pid)), 60,
                   "a snapshot after the change")
        # Retention: at most the newest 2 (a third may be in the making).
        wait_until(lambda: len(self.auto_capsules(pid)) == 2, 30, "two periodic snapshots")
        self.assertLessEqual(len(self.auto_capsules(pid)), 2)
        # A rollback would race the supervisor: refused, the program runs on.
        r = subprocess.run([ARGS.mmtier, "rollback", str(pid), "--to", "-1", "--dir", self.caps],
                           env=base_env(self.dir), capture_output=True, text=True, timeout=60)
        self.assertEqual((r.returncode, r.stderr),
                         (1, f"mmtier: process {pid} is supervised by mmtier run --autosave (process {sup.pid}), "
                             "which would restore it again: end the supervision first\n"))
        os.kill(pid, signal.SIGKILL)
        m = wait_until(lambda: re.search(r"^mmtier run: process %d restored \(host pid (\d+)\)$" % pid,
                                         text_of(log), re.M), 60, "the restore")
        host = int(m.group(1))
        self.addCleanup(lambda: kill_if_alive(host))
        self.assertRegex(text_of(log), r"mmtier run: process %d died of signal 9 \(Killed\); restoring "
                                       r"\S+/auto-%d-\d{8}-\d{6}\.mmtcap \(taken [0-9.]+ s before\)" % (pid, pid))
        self.assertEqual(signal_and_wait(host, signal.SIGUSR1), want)
        # The restored process goes on taking its snapshots, under the same names.
        restored_at = time.time_ns()
        wait_until(lambda: any(c["created_unix_ns"] > restored_at for c in self.auto_capsules(pid)), 60,
                   "a snapshot of the restored process")
        os.kill(host, signal.SIGKILL)
        self.assertEqual(sup.wait(timeout=60), 128 + signal.SIGKILL)
        self.assertIn(f"mmtier run: process {pid} died of signal 9 (Killed); giving up: 1 restores within 600 s\n",
                      text_of(log))
        # As after a reboot: the newest of its capsules, by name prefix.
        r = self.restore(f"auto-{pid}-", "--latest", "--dir", self.caps, "--detach")
        self.assertEqual(r.returncode, 0, r.stderr)
        again = int(r.stdout)
        self.addCleanup(lambda: kill_if_alive(again))
        self.assertEqual(signal_and_wait(again, signal.SIGUSR1), want)
        r = self.restore("nothing-", "--latest", "--dir", self.caps)
        self.assertEqual((r.returncode, r.stderr.strip()),
                         (1, f"mmtier: no durable capsule named nothing-... in {self.caps}"))

    def test_autosave_takes_an_exit_status_for_what_it_is(self):
        # Restored once, the program exits with status 139: an exit, not
        # SIGSEGV (128 + 11), so the supervisor ends with it, restoring
        # nothing.
        sums = os.path.join(self.caps, "sums")
        sup, pid, log = self.autosave(sums, "--max-restarts", "3")
        # One taken once its handlers are in place (a slow start may see
        # the first before: restored, it would die of the SIGUSR1 below).
        ready = time.time_ns()
        wait_until(lambda: any(c["created_unix_ns"] > ready for c in self.auto_capsules(pid)), 60,
                   "a periodic snapshot with its handlers")
        os.kill(pid, signal.SIGKILL)
        m = wait_until(lambda: re.search(r"^mmtier run: process %d restored \(host pid (\d+)\)$" % pid,
                                         text_of(log), re.M), 60, "the restore")
        host = int(m.group(1))
        self.addCleanup(lambda: kill_if_alive(host))
        self.answer(sums, host, signal.SIGUSR1)  # running, its handlers in place
        os.kill(host, signal.SIGHUP)
        self.assertEqual(sup.wait(timeout=60), 139)
        self.assertEqual(text_of(log).count("restoring"), 1, text_of(log))
        self.assertNotIn("signal 11", text_of(log))

    def test_autosave_stops_when_asked_with_a_last_snapshot(self):
        # SIGTERM to the supervisor reaches the program, which takes a last
        # snapshot and ends; nothing is restored.
        sums = os.path.join(self.caps, "sums")
        sup, pid, log = self.autosave(sums)
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{pid}.ctl")), 60, "the control socket")
        sup.send_signal(signal.SIGTERM)
        self.assertEqual(sup.wait(timeout=60), 128 + signal.SIGTERM)
        r = mmtier(["snapshot", "list", "--dir", self.caps, "--json"], self.dir)
        names = [c["name"] for c in json.loads(r.stdout)["capsules"] if c["status"] == "durable"]
        self.assertTrue([n for n in names if re.match(r"python3-%d-\d{8}-\d{6}$" % pid, n)], names)
        self.assertNotIn("restor", text_of(log))
        stat = text_of(f"/proc/{pid}/stat")
        self.assertTrue(not stat or stat.split(") ")[1][0] == "Z", stat)

    def test_rollback_takes_the_running_process_back_to_a_snapshot(self):
        # Three states, two snapshots: rollback to the older (--to -2) and
        # then by name; the process keeps its PID (as root, in this PID
        # namespace); a capsule of another process is refused and the
        # process runs on (a process under --autosave: the autosave test).
        sums = os.path.join(self.caps, "sums")
        p = self.poking(sums)

        def ask(target, sig):
            return self.answer(sums, target, sig)

        def snapshot(name):
            r = mmtier(["snapshot", str(p.pid), "--dir", self.caps, "--name", name], self.dir)
            self.assertEqual(r.returncode, 0, r.stderr)

        def rollback(pid, *args):
            r = subprocess.run([ARGS.mmtier, "rollback", str(pid), "--dir", self.caps, *args], env=base_env(self.dir),
                               capture_output=True, text=True, timeout=120)
            return r

        h0 = ask(p.pid, signal.SIGUSR1)
        snapshot("r0")
        ask(p.pid, signal.SIGUSR2)
        h1 = ask(p.pid, signal.SIGUSR1)
        snapshot("r1")
        ask(p.pid, signal.SIGUSR2)
        self.assertEqual(len({h0, h1, ask(p.pid, signal.SIGUSR1)}), 3)
        # Refused: a capsule of another process; the process runs on.
        other = self.python(HASHING_PROG, os.path.join(self.caps, "other"))
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{other.pid}.ctl")), 60, "the other's socket")
        r = mmtier(["snapshot", str(other.pid), "--dir", self.caps, "--name", "x"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = rollback(p.pid, "--to", "x")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stderr, f"mmtier: refused: {self.caps}/x.mmtcap was taken of process {other.pid}, not of "
                                   f"process {p.pid} (which is {p.pid} to itself)\n")
        self.assertTrue(os.path.exists(f"/proc/{p.pid}"))
        r = rollback(p.pid, "--to", "-3")
        self.assertEqual((r.returncode, r.stderr.strip()),
                         (1, f"mmtier: process {p.pid} has 2 durable capsules in {self.caps}, not 3"))
        # Refused by the restore's own checks (a damaged capsule) while the
        # process was stopped: it is let go again and answers.
        snapshot("bad")
        with open(os.path.join(self.caps, "bad.mmtcap", "mem"), "r+b") as f:
            f.seek(4096)
            byte = f.read(1)
            f.seek(4096)
            f.write(bytes([byte[0] ^ 1]))
        r = rollback(p.pid, "--to", "bad")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("mem is damaged", r.stderr)
        self.assertNotEqual(text_of(f"/proc/{p.pid}/stat").split(") ")[1][0], "T")
        self.assertEqual(ask(p.pid, signal.SIGUSR1), ask(p.pid, signal.SIGUSR1))
        r = mmtier(["snapshot", "delete", "bad", "--dir", self.caps], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        # Back to the older one.
        r = rollback(p.pid, "--to", "-2")
        self.assertEqual(r.returncode, 0, r.stderr)
        host = int(r.stdout)
        self.addCleanup(lambda: kill_if_alive(host))
        if os.geteuid() == 0:
            self.assertEqual(host, p.pid)
        self.assertEqual(ask(host, signal.SIGUSR1), h0)
        # And forward again by name: the restored process is rolled back too.
        r = rollback(host, "--to", "r1")
        self.assertEqual(r.returncode, 0, r.stderr)
        again = int(r.stdout)
        self.addCleanup(lambda: kill_if_alive(again))
        self.assertEqual(ask(again, signal.SIGUSR1), h1)

    def test_capsule_pack_and_unpack_move_an_incremental_capsule_whole(self):
        # b builds on a; packed, both deleted, unpacked elsewhere (as on
        # another host): b restores with its instant.  A stream that holds
        # anything but one capsule, or a damaged one, is refused and leaves
        # nothing.
        sums = os.path.join(self.caps, "sums")
        p = self.poking(sums)

        def ask(target, sig):
            return self.answer(sums, target, sig)

        for name in ("a", "b"):
            ask(p.pid, signal.SIGUSR2)
            r = mmtier(["snapshot", str(p.pid), "--dir", self.caps, "--name", name, "--json"], self.dir)
            self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreater(json.loads(r.stdout)["shared_bytes"], 32 * MiB)
        want = ask(p.pid, signal.SIGUSR1)
        tarball = os.path.join(self.caps, "b.tar")
        r = mmtier(["capsule", "pack", "b", "--dir", self.caps, "-o", tarball], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        for name in ("a", "b"):
            r = mmtier(["snapshot", "delete", name, "--dir", self.caps], self.dir)
            self.assertEqual(r.returncode, 0, r.stderr)
        self.kill(p)
        there = tempfile.mkdtemp(prefix="mmtier-there-", dir="/var/tmp")
        self.addCleanup(shutil.rmtree, there, True)
        r = mmtier(["capsule", "unpack", tarball, "--dir", there], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), os.path.join(there, "b.mmtcap"))
        self.assertEqual(os.stat(os.path.join(there, "b.mmtcap")).st_mode & 0o777, 0o700)
        with open(tarball, "rb") as f, subprocess.Popen([ARGS.mmtier, "capsule", "unpack", "--dir", there],
                                                         stdin=f, stderr=subprocess.PIPE, text=True,
                                                         env=base_env(self.dir)) as q:
            self.assertEqual(q.wait(timeout=120), 1)
            self.assertIn("b.mmtcap exists already", q.stderr.read())
        host, _ = None, None
        r = self.restore(os.path.join(there, "b.mmtcap"), "--detach")
        self.assertEqual(r.returncode, 0, r.stderr)
        host = int(r.stdout)
        self.addCleanup(lambda: kill_if_alive(host))
        self.assertEqual(ask(host, signal.SIGUSR1), want)
        # A stream with something else in it, and one with a damaged mem.
        work = tempfile.mkdtemp(prefix="mmtier-tar-", dir="/var/tmp")
        self.addCleanup(shutil.rmtree, work, True)
        subprocess.run(["tar", "-C", work, "-xf", tarball], check=True)
        with open(os.path.join(work, "b.mmtcap", "notes.txt"), "w") as f:
            f.write("x")
        bad = os.path.join(work, "bad.tar")
        subprocess.run(["tar", "-C", work, "-cf", bad, "b.mmtcap"], check=True)
        elsewhere = tempfile.mkdtemp(prefix="mmtier-else-", dir="/var/tmp")
        self.addCleanup(shutil.rmtree, elsewhere, True)
        r = mmtier(["capsule", "unpack", bad, "--dir", elsewhere], self.dir)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"b\.mmtcap: not a capsule \(it holds files a capsule does not have\)\n$")
        os.unlink(os.path.join(work, "b.mmtcap", "notes.txt"))
        with open(os.path.join(work, "b.mmtcap", "mem"), "r+b") as f:
            f.seek(100)
            byte = f.read(1)
            f.seek(100)
            f.write(bytes([byte[0] ^ 1]))
        subprocess.run(["tar", "-C", work, "-cf", bad + "2", "b.mmtcap"], check=True)
        r = mmtier(["capsule", "unpack", bad + "2", "--dir", elsewhere], self.dir)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("mem is damaged: the chunk at offset 0", r.stderr)
        self.assertEqual(os.listdir(elsewhere), [])

    def serving(self):
        """SERVING_PROG under libmmtier on a free port: (process, port)."""
        info = os.path.join(self.caps, "serving")
        p = self.python(SERVING_PROG, "0", info)
        threading.Thread(target=p.wait, daemon=True).start()
        wait_until(lambda: os.path.exists(info), 60, "the server's port")
        pid, port = map(int, text_of(info).split())
        self.assertEqual(pid, p.pid)
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{p.pid}.ctl")), 60, "the control socket")
        return p, port

    def test_thin_clones_share_memory_until_written_and_serve_their_own_writes(self):
        # Three clones of a capsule while its process still runs: each is
        # that process to itself, on a port of its own, with its data;
        # together they use little more memory than one; a write stays
        # the writer's.
        p, port = self.serving()
        want = ask_line(port, "sum")
        r = mmtier(["snapshot", str(p.pid), "--dir", self.caps, "--name", "c"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        base = free_ports(5) + 1
        r = mmtier(["clone", "c", "--dir", self.caps, "--count", "3", "--port-map", f"{port}:{base}", "--json"],
                   self.dir, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        clones = json.loads(r.stdout)
        for c in clones:
            self.addCleanup(lambda pid=c["pid"]: kill_if_alive(pid))
        self.assertEqual([(c["clone"], c["ports"]) for c in clones],
                         [(k + 1, [[port, base + k]]) for k in range(3)])
        self.assertEqual(len({c["pid"] for c in clones} | {p.pid}), 4)
        for c in clones:
            self.assertEqual(ask_line(base + c["clone"] - 1, "pid"), str(p.pid))
            self.assertEqual(ask_line(base + c["clone"] - 1, "sum"), want)
        # Every clone has read all of its data: the pages are the
        # capsule's, shared; copies would make the sum 3x one's RSS.
        pss = [pss_rss(c["pid"]) for c in clones]
        self.assertGreater(pss[0][1], 64 * MiB)
        self.assertLess(sum(x[0] for x in pss), 1.5 * pss[0][1], pss)
        # A write is the writer's own, and costs about what it wrote.
        anon = lambda pid: int(re.search(r"^Pss_Anon:\s+(\d+)", text_of(f"/proc/{pid}/smaps_rollup"),
                                         re.M).group(1)) * 1024
        before = anon(clones[0]["pid"])
        self.assertEqual(ask_line(base, "poke"), "poked")
        poked = ask_line(base, "sum")
        self.assertNotEqual(poked, want)
        self.assertEqual([ask_line(base + k, "sum") for k in (1, 2)], [want, want])
        self.assertEqual(ask_line(port, "sum"), want)
        self.assertLess(anon(clones[0]["pid"]) - before, 16 * MiB)
        # Memory given back reads as zeros, as anonymous memory does, not
        # as the capsule's bytes the clone's pages were mapped from.
        self.assertEqual(ask_line(base + 1, "drop"), "0")
        self.assertEqual(ask_line(port, "drop"), "0")
        # All or nothing: the second clone's port is taken (by clone 1),
        # so the first, started on a free one, is ended too.
        r = mmtier(["clone", "c", "--dir", self.caps, "--count", "2", "--port-map", f"{port}:{base - 1}"],
                   self.dir, timeout=300)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"^mmtier: clone 2 of 2 did not start \(the 1 started were ended\): restore of "
                                   r".*c\.mmtcap failed: descriptor \d+: cannot bind its socket to "
                                   rf"127\.0\.0\.1:{base} again: Address already in use\n$")
        def ended():
            try:
                ask_line(base - 1, "sum")
            except OSError:
                return True
            return False

        wait_until(ended, 30, "the end of the clone started first")
        # Rollback beside the running process: a clone of its snapshot.
        r = mmtier(["rollback", str(p.pid), "--to", "c", "--dir", self.caps, "--as-new", "--port-map",
                    f"{port}:{base + 3}"], self.dir, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        m = re.match(rf"clone 1: pid (\d+), ports {port}->{base + 3}, started in ", r.stdout)
        self.assertTrue(m, r.stdout)
        self.addCleanup(lambda: kill_if_alive(int(m.group(1))))
        self.assertEqual(ask_line(base + 3, "sum"), want)
        self.assertIsNone(p.poll())
        # Usage: a --port-map that is not one, --as-new with --lazy.
        r = mmtier(["clone", "c", "--dir", self.caps, "--port-map", "80"], self.dir)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--port-map takes FROM:TO[,FROM:TO...], not \"80\"", r.stderr)
        r = mmtier(["rollback", str(p.pid), "--to", "c", "--as-new", "--lazy"], self.dir)
        self.assertEqual(r.returncode, 2, r.stderr)

    def test_thin_clones_in_network_namespaces_keep_their_port(self):
        if os.geteuid() != 0:
            self.skipTest("run as root: entering another network namespace needs CAP_SYS_ADMIN over it")
        p, port = self.serving()
        want = ask_line(port, "sum")
        r = mmtier(["snapshot", str(p.pid), "--dir", self.caps, "--name", "n"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        # Two network namespaces, each held by a process with its
        # loopback up (SIOCSIFFLAGS IFF_UP|IFF_RUNNING on lo).
        up = ("import fcntl, socket, struct, sys, time\n"
              "s = socket.socket()\n"
              "fcntl.ioctl(s, 0x8914, struct.pack('16sH14x', b'lo', 0x41))\n"
              "print('up', flush=True)\n"
              "time.sleep(600)\n")
        holders = []
        for _ in range(2):
            h = subprocess.Popen(["unshare", "--net", sys.executable, "-c", up], stdout=subprocess.PIPE, text=True)
            self.addCleanup(lambda h=h: (h.kill(), h.wait(), h.stdout.close()))
            self.assertEqual(read_line(h.stdout, 30, "the namespace's loopback"), "up")
            holders.append(f"/proc/{h.pid}/ns/net")
        r = mmtier(["clone", "n", "--dir", self.caps, "--netns", ",".join(holders), "--json"], self.dir, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        clones = json.loads(r.stdout)
        for c in clones:
            self.addCleanup(lambda pid=c["pid"]: kill_if_alive(pid))
        self.assertEqual([(c["clone"], c["netns"], c["ports"]) for c in clones],
                         [(1, holders[0], []), (2, holders[1], [])])
        # The same port in each namespace, the original's on the host.
        self.assertEqual(ask_line(port, "poke"), "poked")
        self.assertEqual([ask_line(port, "sum", netns=n) for n in holders], [want, want])
        self.assertNotEqual(ask_line(port, "sum"), want)
        r = mmtier(["clone", "n", "--dir", self.caps, "--netns", "/proc/self/ns/nothing"], self.dir)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("cannot open the network namespace /proc/self/ns/nothing", r.stderr)

    def test_stat_counts_the_snapshots_of_a_process(self):
        # Two taken (the second incremental), one failed (its name is
        # taken): mmtier stat, its JSON and Prometheus say so.
        sums = os.path.join(self.caps, "sums")
        p = self.poking(sums)
        for name in ("s1", "s2", "s2"):
            r = mmtier(["snapshot", str(p.pid), "--dir", self.caps, "--name", name, "--json"], self.dir)
            self.assertEqual(r.returncode, 0 if r.stdout else 1, r.stderr)
            if r.stdout:
                last = json.loads(r.stdout)
        r = mmtier(["stat", str(p.pid), "--json"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        s = json.loads(r.stdout)
        self.assertEqual((s["snapshots"], s["snapshots_failed"]), (2, 1))
        self.assertEqual(s["snapshot_last_written_bytes"], last["memory_bytes"])
        self.assertEqual(s["snapshot_last_shared_bytes"], last["shared_bytes"])
        self.assertGreater(s["snapshot_last_shared_bytes"], 0)
        self.assertGreater(s["snapshot_written_bytes"], s["snapshot_last_written_bytes"])
        self.assertGreaterEqual(s["snapshot_pause_total_ns"], s["snapshot_pause_max_ns"])
        self.assertGreater(s["snapshot_pause_max_ns"], 0)
        self.assertLess(abs(s["snapshot_last_unix_ns"] / 1e9 - time.time()), 120)
        r = mmtier(["stat", str(p.pid), "--prometheus"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, rf'(?m)^mmtier_snapshots_total\{{pid="{p.pid}",[^}}]*\}} 2$')
        self.assertRegex(r.stdout, rf'(?m)^mmtier_snapshots_failed_total\{{pid="{p.pid}",[^}}]*\}} 1$')
        r = mmtier(["stat", str(p.pid)], self.dir)
        self.assertRegex(r.stdout, r"(?m)^snapshots +2 taken, 1 failed, ")

    def test_restore_stopped_runs_nothing_until_continued(self):
        # --stopped (a migration's target): the process stops before any
        # thread runs the program; a signal waits; SIGCONT lets it go on.
        sums = os.path.join(self.caps, "sums")
        p = self.poking(sums)
        want = self.answer(sums, p.pid, signal.SIGUSR1)
        r = mmtier(["snapshot", str(p.pid), "--dir", self.caps, "--name", "st"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.kill(p)
        r = self.restore(os.path.join(self.caps, "st.mmtcap"), "--detach", "--stopped")
        self.assertEqual(r.returncode, 0, r.stderr)
        host = int(r.stdout)
        self.addCleanup(lambda: kill_if_alive(host))
        state = lambda: re.search(r"^State:\s+(\S)", text_of(f"/proc/{host}/status"), re.M).group(1)
        wait_until(lambda: state() == "T", 30, "the restored process stopped")
        n = len(text_of(sums).splitlines())
        os.kill(host, signal.SIGUSR1)
        self.assertEqual(state(), "T")
        self.assertEqual(len(text_of(sums).splitlines()), n)
        os.kill(host, signal.SIGCONT)
        wait_until(lambda: len(text_of(sums).splitlines()) > n, 60, "the answer once continued")
        self.assertEqual(text_of(sums).splitlines()[-1].split()[1], want)
        r = self.restore(os.path.join(self.caps, "st.mmtcap"), "--stopped")
        self.assertEqual(r.returncode, 2, r.stderr)

    def test_the_boot_unit_restores_the_newest_capsule_of_its_prefix(self):
        # mmtier-restore@PREFIX.service as systemd would run it after a
        # reboot: its ExecStart, %i the prefix, the directory from the
        # environment file; the newest of the process's capsules comes
        # back, and the unit's PIDFile names it.
        unit = os.path.join(os.path.dirname(os.path.abspath(ARGS.mmtier)), "mmtier-restore@.service")
        text = text_of(unit)
        if shutil.which("systemd-analyze"):
            here = tempfile.mkdtemp(prefix="mmtier-unit-")
            self.addCleanup(shutil.rmtree, here, True)
            exe = re.search(r"(?m)^ExecStart=(\S+)", text).group(1)
            for name in ("mmtier-restore@.service", "mmtier-restore@auto-1-.service"):
                with open(os.path.join(here, name), "w") as f:
                    f.write(text.replace(exe, os.path.abspath(ARGS.mmtier)))
            r = subprocess.run(["systemd-analyze", "verify", os.path.join(here, "mmtier-restore@auto-1-.service")],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual((r.returncode, r.stderr), (0, ""))
        sums = os.path.join(self.caps, "sums")
        p = self.poking(sums)
        prefix = f"auto-{p.pid}-"
        for k in (1, 2):
            self.answer(sums, p.pid, signal.SIGUSR2)
            r = mmtier(["snapshot", str(p.pid), "--dir", self.caps, "--name", f"{prefix}{k}"], self.dir)
            self.assertEqual(r.returncode, 0, r.stderr)
        want = self.answer(sums, p.pid, signal.SIGUSR1)
        self.answer(sums, p.pid, signal.SIGUSR2)  # after the newest snapshot: lost
        self.kill(p)
        run_dir = os.path.join(self.caps, "run")
        os.mkdir(run_dir)
        line = re.search(r"(?m)^ExecStart=(.*)$", text).group(1).replace("%i", prefix)
        pid_file = re.search(r"(?m)^PIDFile=(.*)$", text).group(1).replace("%i", prefix)
        argv = [a.replace("/run/mmtier-restore", run_dir) for a in shlex.split(line)]
        self.assertEqual(os.path.basename(argv[0]), "mmtier")
        env = base_env(self.dir)
        env["MMTIER_SNAPSHOT_DIR"] = self.caps  # what /etc/mmtier/restore.env sets
        r = subprocess.run([ARGS.mmtier] + argv[1:], env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"{prefix}2.mmtcap: process {p.pid} restored", r.stderr)
        host = int(text_of(pid_file.replace("/run/mmtier-restore", run_dir)))
        self.addCleanup(lambda: kill_if_alive(host))
        self.assertEqual(self.answer(sums, host, signal.SIGUSR1), want)

    def two_hosts(self):
        """Two "hosts" on this machine: network namespaces joined by a veth
        pair (A 10.231.N.1, B 10.231.N.2), each with a mount namespace of
        its own where a tmpfs is mounted at the same directory D (PMem
        tier, capsules, statistics).  Returns (run, D, address of B), run(h,
        argv, **kw) running argv on host h ("a" or "b")."""
        tag = f"{os.getpid() % 10000:04d}{random.randint(0, 99):02d}"
        net = random.randint(1, 250)
        d = tempfile.mkdtemp(prefix="mmtier-hosts-", dir="/var/tmp")
        self.addCleanup(shutil.rmtree, d, True)
        holders = {}
        for h in ("a", "b"):
            subprocess.run(["ip", "netns", "add", f"mmt{tag}{h}"], check=True)
            self.addCleanup(subprocess.run, ["ip", "netns", "del", f"mmt{tag}{h}"])
        subprocess.run(["ip", "link", "add", f"mv{tag}a", "type", "veth", "peer", "name", f"mv{tag}b"], check=True)
        for k, h in enumerate(("a", "b")):
            ns, dev, addr = f"mmt{tag}{h}", f"mv{tag}{h}", f"10.231.{net}.{k + 1}/24"
            for cmd in (["link", "set", dev, "netns", ns], ["-n", ns, "addr", "add", addr, "dev", dev],
                        ["-n", ns, "link", "set", dev, "up"], ["-n", ns, "link", "set", "lo", "up"]):
                subprocess.run(["ip"] + cmd, check=True)
            q = subprocess.Popen(["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private", "sh",
                                  "-c", f"mount -t tmpfs none {d} && mkdir -m 700 {d}/pmem {d}/caps {d}/stats && "
                                  "echo ready && exec sleep 600"], stdout=subprocess.PIPE, text=True)
            self.addCleanup(lambda q=q: (q.kill(), q.wait(), q.stdout.close()))
            self.assertEqual(read_line(q.stdout, 30, f"host {h}"), "ready")
            holders[h] = q.pid

        def run(h, argv, popen=False, **kw):
            # The variables set inside: nsenter itself must not start
            # under libmmtier, with paths of the other mount namespace.
            extra = [f"{k}={v}" for k, v in kw.pop("env", {}).items()]
            # -r: the holder's root (setns into a mount namespace otherwise
            # starts at the namespace's own root, not a chroot's).
            full = ["nsenter", "-t", str(holders[h]), "-m", "-n", "-r", "env"] + extra + argv
            env = base_env(f"{d}/stats")
            if popen:
                return subprocess.Popen(full, env=env, **kw)
            return subprocess.run(full, env=env, capture_output=True, text=True, timeout=120, **kw)

        return run, d, f"10.231.{net}.2"

    def test_migrate_moves_a_process_to_another_host_and_a_failure_leaves_it_running(self):
        if os.geteuid() != 0 or not shutil.which("ip"):
            self.skipTest("run as root with iproute2: the two hosts are network and mount namespaces")
        run, d, b_addr = self.two_hosts()
        info = os.path.join(self.caps, "info")
        env = {"LD_PRELOAD": ARGS.lib, "MMTIER_PMEM_PATH": f"{d}/pmem", "MMTIER_SNAPSHOT_DIR": f"{d}/caps"}
        p = run("a", [sys.executable, "-c", SERVING_PROG, "7000", info], popen=True, env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (p.poll() is None and p.kill(), p.wait()))
        wait_until(lambda: os.path.exists(info), 60, "the server")
        self.assertEqual(text_of(info).split(), [str(p.pid), "7000"])
        wait_until(lambda: run("a", ["test", "-S", f"{d}/stats/{p.pid}.ctl"]).returncode == 0, 60, "its control socket")

        def ask(h, request):
            code = ("import socket, sys\n"
                    "c = socket.create_connection(('127.0.0.1', 7000), timeout=30)\n"
                    "f = c.makefile('rw'); f.write(sys.argv[1] + '\\n'); f.flush(); print(f.readline().strip())\n")
            r = run(h, [sys.executable, "-c", code, request])
            self.assertEqual(r.returncode, 0, r.stderr)
            return r.stdout.strip()

        def receive():
            q = run("b", [ARGS.mmtier, "receive", "--listen", f"{b_addr}:0", "--dir", f"{d}/caps"], popen=True,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.addCleanup(lambda: (q.poll() is None and q.kill(), q.wait(), q.stdout.close(), q.stderr.close()))
            m = re.match(rf"mmtier receive: listening on {re.escape(b_addr)}:(\d+); token (\w+); capsules into "
                         rf"{re.escape(d)}/caps$", read_line(q.stderr, 30, "the receiver"))
            self.assertTrue(m)
            return q, f"{b_addr}:{m.group(1)}", m.group(2)

        def migrate(to, token, *extra):
            return run("a", [ARGS.mmtier, "migrate", str(p.pid), "--to", to, "--token", token, *extra])

        self.assertEqual(ask("a", "poke"), "poked")
        want = ask("a", "sum")
        # A wrong token: turned away, the receiver waits on, the process
        # runs on untouched.
        q, to, token = receive()
        r = migrate(to, "0" * 32)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, rf"^mmtier: migration of process {p.pid} failed: hello: the receiver says: not a "
                                   r"migration with this receiver's token; it runs on here\n$")
        self.assertEqual(ask("a", "sum"), want)
        # The restore there fails (its port is taken on B): the process,
        # held meanwhile, goes on here; nothing is left there.
        blocker = run("b", [sys.executable, "-c", "import socket, time\ns = socket.socket()\n"
                            "s.bind(('127.0.0.1', 7000)); s.listen(1); print('bound', flush=True); time.sleep(600)"],
                      popen=True, stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (blocker.poll() is None and blocker.kill(), blocker.wait(), blocker.stdout.close()))
        self.assertEqual(read_line(blocker.stdout, 30, "the blocker"), "bound")
        r = migrate(to, token)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"mmtier migrate: held round \d+: ")
        self.assertRegex(r.stderr, r"(?m)^mmtier: migration of process \d+ failed: restore: the receiver says: the "
                                   r"restore of .* failed .*; it runs on here\n")
        self.assertEqual(q.wait(timeout=60), 1)
        self.assertIn("nothing of it is left here", q.stderr.read())
        self.assertIsNone(p.poll())
        self.assertEqual(ask("a", "sum"), want)
        self.assertEqual(run("b", ["ls", "-A", f"{d}/caps"]).stdout, "")
        self.assertEqual(run("a", ["ls", "-A", f"{d}/caps"]).stdout, "")
        blocker.kill()
        blocker.wait()
        # Now it moves: its state, its PID to itself, its port there; the
        # source has ended and left no file; the last capsule stays on B.
        self.assertEqual(ask("a", "poke"), "poked")
        want = ask("a", "sum")
        q, to, token = receive()
        token_file = os.path.join(self.caps, "token")  # out of the command line others can read
        with open(token_file, "w") as f:
            f.write(token + "\n")
        r = run("a", [ARGS.mmtier, "migrate", str(p.pid), "--to", to, "--token-file", token_file, "--json"])
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(q.wait(timeout=60), 0)
        self.assertEqual(int(q.stdout.read()), out["target_pid"])
        self.assertEqual(p.wait(timeout=30), -signal.SIGKILL)
        self.assertGreaterEqual(len(out["rounds"]), 2)
        self.assertEqual(out["sent_bytes"], sum(x["sent_bytes"] for x in out["rounds"]))
        self.assertGreater(out["rounds"][0]["sent_bytes"], 48 * MiB)  # the 64 MiB of data, once
        self.assertLess(out["rounds"][-1]["sent_bytes"], 8 * MiB)  # the last round: what changed
        self.assertEqual(ask("b", "sum"), want)
        self.assertEqual(ask("b", "pid"), str(p.pid))
        self.assertEqual(run("a", ["ls", "-A", f"{d}/caps"]).stdout, "")
        self.assertRegex(run("b", ["ls", "-A", f"{d}/caps"]).stdout, rf"^mig-{p.pid}-[0-9a-f]{{6}}-\d+\.mmtcap\n$")
        self.addCleanup(lambda: os.path.exists(f"/proc/{out['target_pid']}") and
                        os.kill(out["target_pid"], signal.SIGKILL))

    def test_shared_anonymous_memory_comes_back_with_its_bytes(self):
        # MAP_SHARED | MAP_ANONYMOUS memory: the capsule's writer, a fork,
        # has no page table entries of it; its bytes must still be saved
        # (all of a written 16 MiB, nothing of 64 MiB only read: zeros).
        prog = ("import mmap, os, signal, sys, time\n"
                "a = mmap.mmap(-1, 16 << 20)\n"
                "a.write(b'\\xab' * (16 << 20))\n"
                "a[5] = 0x11\n"
                "untouched = mmap.mmap(-1, 64 << 20)\n"
                "keep = bytearray(os.urandom(40 << 20))\n"
                "def say(*_):\n"
                "    with open(sys.argv[1], 'a') as f:\n"
                "        f.write(f'{os.getpid()} {(16 << 20) - a[:].count(0xab)} {a[5]} {untouched[:].count(0)}\\n')\n"
                "signal.signal(signal.SIGUSR1, say)\n"
                "say()\n"
                "while True:\n"
                "    time.sleep(0.05)\n")
        said = os.path.join(self.caps, "said")
        p = self.python(prog, said)
        threading.Thread(target=p.wait, daemon=True).start()
        wait_until(lambda: os.path.exists(said) and text_of(said), 60, "the first line")
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{p.pid}.ctl")), 60, "the control socket")
        self.assertEqual(text_of(said).split(), [str(p.pid), "1", "17", str(64 << 20)])
        r = mmtier(["snapshot", str(p.pid), "--dir", self.caps, "--name", "shm", "--json"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        # 40 MiB private, 16 MiB shared and the rest: not the 64 MiB of zeros.
        out = json.loads(r.stdout)
        self.assertLess(out["memory_bytes"] + out["pmem_linked_bytes"], 100 * MiB, json.dumps(out))
        self.kill(p)
        r = self.restore(os.path.join(self.caps, "shm.mmtcap"), "--detach")
        self.assertEqual(r.returncode, 0, r.stderr)
        host = int(r.stdout)
        self.addCleanup(lambda: kill_if_alive(host))
        n = len(text_of(said).splitlines())
        os.kill(host, signal.SIGUSR1)
        wait_until(lambda: len(text_of(said).splitlines()) > n, 60, "the restored process's line")
        self.assertEqual(text_of(said).splitlines()[-1].split(), [str(p.pid), "1", "17", str(64 << 20)])

    def test_root_restores_at_the_host_pid_else_in_a_pid_namespace(self):
        if os.geteuid() != 0:
            self.skipTest("run as root: set_tid in the host's PID namespace needs CAP_SYS_ADMIN")
        p = self.start("serve")
        self.wait_line(r"^serving pid=", "the start")
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{p.pid}.ctl")), 30, "the control socket")
        r = mmtier(["snapshot", str(p.pid), "--dir", self.caps, "--name", "h"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.kill(p)
        capsule = os.path.join(self.caps, "h.mmtcap")

        def restored():
            host, m = self.restore_and_ask(capsule)
            self.assertEqual((int(m.group(1)), m.group(4)), (p.pid, "ok"))
            with open(f"/proc/{host}/status") as f:
                return host, re.search(r"^NSpid:\t(.*)$", f.read(), re.M).group(1)

        # Its PID is free: it gets it here, in the host's namespace.
        host, nspid = restored()
        self.assertEqual((host, nspid), (p.pid, str(p.pid)))
        # Restored again while that one runs: the PID is taken, so a PID
        # namespace of its own, where it is p.pid again.
        host2, nspid2 = restored()
        self.assertNotEqual(host2, p.pid)
        self.assertEqual(nspid2, f"{host2}\t{p.pid}")

    def test_twenty_cycles_keep_mappings_and_descriptors(self):
        p = self.start("cycles", "21")
        self.wait_line(r"^cycle 1 taken", "the first snapshot")
        self.kill(p)
        for i in range(1, 21):
            r = self.restore(os.path.join(self.caps, f"c{i}.mmtcap"))
            self.assertEqual(r.returncode, 0, f"cycle {i}: {r.stderr}")
            self.assertRegex(self.lines()[-1], rf"^cycle {i + 1} taken ")
        counts = [tuple(map(int, re.search(r"maps=(\d+) fds=(\d+) rss_kib=(\d+)", l).groups()))
                  for l in self.lines() if l.startswith("cycle ")]
        self.assertEqual(len(counts), 21)
        maps = [c[0] for c in counts]
        fds = [c[1] for c in counts]
        rss = [c[2] for c in counts]
        # Nothing accumulates: the last ten processes have at their most at
        # most two mappings more than the first ten restored ones at theirs
        # (a unit's runs split while the heap frees or re-shares them; a
        # leak of one mapping per restore would show ten, and runs placed
        # again without their unit's advice, or restored without the advice
        # they had at the stop, grew it by 5-14), no process has more
        # descriptors than the original (which had its mover's; a restored
        # one starts it again lazily), and resident memory does not grow
        # from one generation to the next.
        self.assertLessEqual(max(maps[11:]), max(maps[1:11]) + 2, counts)
        self.assertLessEqual(max(fds[1:]), fds[0], counts)
        self.assertLessEqual(min(rss[11:]), max(rss[1:11]) + 4096, counts)

    def test_unprivileged_user_restores_in_a_user_namespace(self):
        if os.geteuid() != 0:
            self.skipTest("run as root to test as another user")
        nobody = 65534
        os.chown(self.caps, nobody, nobody)
        os.chmod(self.dir, 0o777)

        def drop():
            os.setgid(nobody)
            os.setgroups([])
            os.setuid(nobody)
        p = self.start("self", "nb", preexec_fn=drop)
        self.wait_line(r"^snapshot taken", "the snapshot")
        self.kill(p)
        r = self.restore(os.path.join(self.caps, "nb.mmtcap"), preexec_fn=drop)
        if "user namespace is needed" in r.stderr:
            self.skipTest(r.stderr.strip())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.lines()[-1], f"restored pid={p.pid} generation=1 buffer=ok tids=same workers=running")
        # --lazy needs what only a privileged user gets (kernel faults and
        # fork events on a userfaultfd): otherwise one line, and eagerly.
        r = self.restore(os.path.join(self.caps, "nb.mmtcap"), "--lazy", preexec_fn=drop)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stderr, r"restoring eagerly: |lazy fill")
        self.assertEqual(self.lines()[-1], f"restored pid={p.pid} generation=1 buffer=ok tids=same workers=running")
        # Root may restore it; another user may not.
        r = subprocess.run([ARGS.mmtier, "restore", os.path.join(self.caps, "nb.mmtcap")], env=base_env(self.dir),
                           capture_output=True, text=True, timeout=60, preexec_fn=lambda: (os.setgid(1), os.setgroups([]), os.setuid(1)))
        self.assertEqual(r.returncode, 1)
        self.assertIn("refused", r.stderr)

    def snapshot_kill_restore(self, p, out, name):
        """Snapshots process p (which appends lines to OUT) as NAME, lets it
        write 20 lines more, kills it and restores it, which runs it to its
        end: OUT's lines then."""
        r = mmtier(["snapshot", str(p.pid), "--dir", self.caps, "--name", name], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        at_snapshot = len(open(out).read().splitlines())
        wait_until(lambda: len(open(out).read().splitlines()) > at_snapshot + 20, 60, "lines after the snapshot")
        self.kill(p)
        r = self.restore(os.path.join(self.caps, f"{name}.mmtcap"))
        self.assertEqual(r.returncode, 0, r.stderr)
        return open(out).read().splitlines()

    @staticmethod
    def steps_program(n, ballast_mib=0):
        """python3 appending n lines "step I TOTAL" to the file argv[1], 10 ms
        apart, then "done TOTAL [BALLAST]", holding ballast_mib MiB placed."""
        return ("import sys, time\n"
                f"ballast = bytearray(b'p') * ({ballast_mib} << 20)\n"
                "f = open(sys.argv[1], 'w')\n"
                "total = 0\n"
                f"for i in range({n}):\n"
                "    total += i * i\n"
                "    f.write(f'step {i} {total}\\n'); f.flush()\n"
                "    time.sleep(0.01)\n"
                "f.write(f'done {total}' + (f' {len(ballast)}' if ballast else '') + '\\n'); f.close()\n")

    def assert_steps(self, lines, n, ballast_mib=0):
        """lines are steps_program(n)'s whole output, each step once."""
        total = 0
        for i in range(n):
            total += i * i
            self.assertEqual(lines[i], f"step {i} {total}")
        self.assertEqual(lines[n:], [f"done {total}" + (f" {ballast_mib << 20}" if ballast_mib else "")])

    def test_python_continues_from_the_snapshot_with_its_file(self):
        """python3 appending progress lines to an open file: snapshotted from
        outside mid-way, killed later, restored: it goes on from the snapshot
        point, and the file holds each step once, in order."""
        out = os.path.join(self.caps, "progress.txt")
        # 64 MiB placed: enough to open the control socket.
        p = self.python(self.steps_program(400, ballast_mib=64), out)
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{p.pid}.ctl")), 60, "the control socket")
        wait_until(lambda: os.path.exists(out) and os.path.getsize(out) > 200, 60, "some progress")
        self.assert_steps(self.snapshot_kill_restore(p, out, "py"), 400, ballast_mib=64)

    def test_a_small_process_with_its_threads_started_at_once_is_snapshotted(self):
        """MMTIER_BACKGROUND_AT=0: a process that places far less than 32 MiB
        (a python3 script appending steps to a file, idle between them) has
        its control socket from the start, and is snapshotted from outside,
        killed and restored: it goes on from the snapshot point.  Without
        the setting it has no socket."""
        out = os.path.join(self.caps, "small.txt")
        plain = self.python("import time; time.sleep(300)")
        p = self.python(self.steps_program(300), out, env=dict(self.env(), MMTIER_BACKGROUND_AT="0"))
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{p.pid}.ctl")), 60, "the control socket")
        wait_until(lambda: os.path.exists(out) and os.path.getsize(out) > 100, 60, "some progress")
        self.assertFalse(os.path.exists(os.path.join(self.dir, f"{plain.pid}.ctl")),
                         "a small process without the setting has no control socket")
        self.assert_steps(self.snapshot_kill_restore(p, out, "small"), 300)

    def test_another_process_started_in_the_same_tick_is_not_taken_for_the_original(self):
        """A restore is refused while the original runs, found by its start
        time (in clock ticks of 10 ms), command and own PID: two processes
        of one command started within the same tick are told apart, and the
        original's twin does not stop its restore."""
        out = os.path.join(self.caps, "twin.txt")
        prog = self.steps_program(100000)
        env = dict(self.env(), MMTIER_BACKGROUND_AT="0")
        start = lambda pid: int(text_of(f"/proc/{pid}/stat").rsplit(") ", 1)[1].split()[19])
        for _ in range(50):
            twin = self.python("import time; time.sleep(300)", env=env)
            p = self.python(prog, out, env=env)
            if start(twin.pid) == start(p.pid):
                break
            self.kill(twin)
            self.kill(p)
        else:
            self.skipTest("no two processes started within one clock tick in 50 tries")
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{p.pid}.ctl")), 60, "the control socket")
        wait_until(lambda: os.path.exists(out) and os.path.getsize(out) > 20, 60, "some progress")
        r = mmtier(["snapshot", str(p.pid), "--dir", self.caps, "--name", "twin"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.kill(p)
        r = self.restore(os.path.join(self.caps, "twin.mmtcap"), "--detach")
        self.assertEqual(r.returncode, 0, r.stderr)
        host = int(r.stdout)
        self.addCleanup(lambda: kill_if_alive(host))
        self.assertIsNone(twin.poll(), "the twin runs on")

    def test_a_jvm_continues_from_the_snapshot_with_its_file(self):
        """A JVM (its JIT's code, its GC's threads, its performance data
        file mapped shared and written) appending steps to a file:
        snapshotted from outside mid-way, killed later, restored: it goes on
        from the snapshot point, each step once, in order."""
        src = os.path.join(self.caps, "Steps.java")
        with open(src, "w") as f:
            f.write(JVM_STEPS)
        r = subprocess.run(["javac", "-d", self.caps, src], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = os.path.join(self.caps, "steps.txt")
        p = subprocess.Popen(["java", "-Xmx128m", "-cp", self.caps, "Steps", out], env=self.env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (p.poll() is None and p.kill(), p.wait()))
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{p.pid}.ctl")), 60, "the control socket")
        wait_until(lambda: os.path.exists(out) and len(open(out).read().splitlines()) > 20, 60, "some steps")
        maps = open(f"/proc/{p.pid}/maps").read()
        self.assertRegex(maps, r"rw-s .*hsperfdata_", "the JVM's performance data, mapped shared and writable")
        lines = self.snapshot_kill_restore(p, out, "jvm")
        total = 0
        for i in range(JVM_STEPS_N):
            total += i * i
            self.assertEqual(lines[i], f"step {i} {total}")
        self.assertEqual(lines[JVM_STEPS_N:], [f"done {total}"])
        # The restored JVM removed its performance data file as it ended:
        # a restore now has no file to map shared and says so, before
        # anything runs.
        hsperf = re.search(r"rw-s .* (\S*hsperfdata_\S+)", maps).group(1)
        self.assertFalse(os.path.exists(hsperf))
        r = self.restore(os.path.join(self.caps, "jvm.mmtcap"))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"{hsperf}, which the program writes through a shared mapping, cannot be opened for writing: "
                      "No such file or directory", r.stderr)

    def test_snapshot_waits_for_the_lazy_fill_and_then_holds_everything(self):
        """A process restored with --lazy whose memory is still being filled
        refuses a snapshot (its missing pages would be saved as never
        touched); its data is whole when it reads it; once the fill is done a
        snapshot holds all of it, and restores to the same data."""
        report = os.path.join(self.caps, "sums")
        p = self.python(HASHING_PROG, report)
        wait_until(lambda: os.path.exists(report) and os.path.getsize(report) > 0, 60, "the first sum")
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{p.pid}.ctl")), 60, "the control socket")
        want = open(report).read().split()[1]
        r = mmtier(["snapshot", str(p.pid), "--dir", self.caps, "--name", "held"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.kill(p)
        # The killed original's socket stays behind; restored at the same
        # host PID (as root), the process makes its own.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, f"{p.pid}.ctl"))
        # Paced to 1 MiB/s: the idle program's 64 MiB stay missing for a minute.
        lz = subprocess.Popen([ARGS.mmtier, "restore", os.path.join(self.caps, "held.mmtcap"), "--lazy",
                               "--fill-rate", "1"], env=base_env(self.dir), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (lz.poll() is None and lz.kill(), lz.wait()))
        first = lz.stderr.readline()
        if "restoring eagerly" in first:
            self.skipTest(first.strip())
        host = int(re.search(r"host pid (\d+)", first).group(1))
        self.addCleanup(lambda: subprocess.run(["kill", "-9", str(host)], capture_output=True))
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{host}.ctl")), 60, "the restored control socket")
        r = mmtier(["snapshot", str(host), "--dir", self.caps, "--name", "early"], self.dir)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("a lazy restore (mmtier restore --lazy) is still filling this process's memory", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.caps, "early.mmtcap")))
        # Read through: every byte as at the snapshot.
        os.kill(host, signal.SIGUSR1)
        wait_until(lambda: len(open(report).read().splitlines()) >= 2, 60, "the restored sum")
        self.assertEqual(open(report).read().splitlines()[-1].split()[1], want)
        os.kill(host, signal.SIGKILL)
        lz.wait(timeout=60)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, f"{host}.ctl"))
        # Restored again without a pace: the fill ends, then a snapshot
        # holds everything.
        lz = subprocess.Popen([ARGS.mmtier, "restore", os.path.join(self.caps, "held.mmtcap"), "--lazy"],
                              env=base_env(self.dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (lz.poll() is None and lz.kill(), lz.wait()))
        host = int(re.search(r"host pid (\d+)", lz.stderr.readline()).group(1))
        self.addCleanup(lambda: subprocess.run(["kill", "-9", str(host)], capture_output=True))
        self.assertRegex(lz.stderr.readline(), r"lazy fill done in")
        wait_until(lambda: os.path.exists(os.path.join(self.dir, f"{host}.ctl")), 60, "the restored control socket")
        r = mmtier(["snapshot", str(host), "--dir", self.caps, "--name", "late"], self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        os.kill(host, signal.SIGKILL)
        lz.wait(timeout=60)
        r = self.restore(os.path.join(self.caps, "late.mmtcap"), "--detach")
        self.assertEqual(r.returncode, 0, r.stderr)
        again = int(r.stdout.split()[-1])
        self.addCleanup(lambda: subprocess.run(["kill", "-9", str(again)], capture_output=True))
        os.kill(again, signal.SIGUSR1)
        wait_until(lambda: len(open(report).read().splitlines()) >= 3, 60, "the sum after the second restore")
        self.assertEqual(open(report).read().splitlines()[-1].split()[1], want)

    def test_snapshot_signal_takes_a_snapshot_then_does_what_the_program_set(self):
        """MMTIER_SNAPSHOT_SIGNAL: the signal takes a snapshot, then the
        program's own handler runs (USR2), or its default action ends the
        process once the capsule is complete (TERM); restored, the process
        goes on from before the signal."""
        out = os.path.join(self.caps, "sig.txt")
        prog = (
            "import os, signal, sys, time\n"
            "ballast = bytearray(b'x') * (40 << 20)\n"
            "def note(s):\n"
            "    with open(sys.argv[1], 'a') as f: f.write(s + '\\n')\n"
            "signal.signal(signal.SIGUSR2, lambda s, f: note(f'handler {os.getpid()}'))\n"
            "note(f'start {os.getpid()}')\n"
            "i = 0\n"
            "while True:\n"
            "    time.sleep(0.02); i += 1\n"
            "    if i % 10 == 0: note(f'tick {os.getpid()} {i}')\n")
        def lines():
            return open(out).read().splitlines() if os.path.exists(out) else []
        for sig, name in ((signal.SIGUSR2, "USR2"), (signal.SIGTERM, "TERM")):
            env = dict(self.env(), MMTIER_SNAPSHOT_SIGNAL=name)
            p = self.python(prog, out, env=env)
            wait_until(lambda: f"start {p.pid}" in lines(), 60, "the program's start")
            wait_until(lambda: any(l.startswith(f"tick {p.pid}") for l in lines()), 60, "a tick")
            p.send_signal(sig)
            if sig == signal.SIGUSR2:
                wait_until(lambda: f"handler {p.pid}" in lines(), 60, "the program's handler")
                p.kill()
                p.wait()
            else:
                self.assertEqual(p.wait(timeout=120), -signal.SIGTERM, p.stderr.read())
            caps = [c for c in os.listdir(self.caps) if c.startswith(f"python3-{p.pid}-") and c.endswith(".mmtcap")]
            self.assertEqual(len(caps), 1, os.listdir(self.caps))
            r = mmtier(["snapshot", "info", os.path.join(self.caps, caps[0]), "--json"], self.dir)
            self.assertEqual(json.loads(r.stdout)["status"], "durable", r.stdout)
        # The TERM capsule restored: the program goes on (the signal is
        # behind it), ticking under its own PID.
        r = self.restore(os.path.join(self.caps, caps[0]), "--detach")
        self.assertEqual(r.returncode, 0, r.stderr)
        host = int(r.stdout.split()[-1])
        self.addCleanup(lambda: subprocess.run(["kill", "-9", str(host)], capture_output=True))
        before = len(lines())
        wait_until(lambda: len(lines()) > before + 2, 60, "ticks of the restored process")
        self.assertTrue(lines()[-1].startswith(f"tick {p.pid} "), lines()[-3:])
        subprocess.run(["kill", "-9", str(host)], capture_output=True)
        # A signal in the moment after a restore, before mmtier's snapshot
        # thread is back (held back 3 s here by a test setting the original
        # started with): it waits for the thread, which takes a snapshot
        # first; then the default action ends the process.
        env = dict(self.env(), MMTIER_SNAPSHOT_SIGNAL="TERM", _MMTIER_TRIGGER_START_DELAY_MS="3000")
        p = self.python(prog, out, env=env)
        wait_until(lambda: any(l.startswith(f"tick {p.pid}") for l in lines()), 60, "a tick")
        first = mmtier(["snapshot", str(p.pid), "--dir", self.caps, "--name", "early"], self.dir)
        self.assertEqual(first.returncode, 0, first.stderr)
        p.kill()
        p.wait()
        r = self.restore(os.path.join(self.caps, "early.mmtcap"), "--detach")
        self.assertEqual(r.returncode, 0, r.stderr)
        host = int(r.stdout.split()[-1])
        self.addCleanup(lambda: subprocess.run(["kill", "-9", str(host)], capture_output=True))
        os.kill(host, signal.SIGTERM)
        caps = lambda: [c for c in os.listdir(self.caps) if c.startswith(f"python3-{p.pid}-") and c.endswith(".mmtcap")]
        wait_until(lambda: not os.path.exists(f"/proc/{host}") or open(f"/proc/{host}/stat").read().split()[2] == "Z",
                   60, "the end of the restored process")
        self.assertEqual(len(caps()), 1, os.listdir(self.caps))

    def snapshot_of(self, name, binary=None):
        p = self.start("self", name, binary=binary)
        self.wait_line(rf"^snapshot taken pid={p.pid}$", "the snapshot")
        return p, os.path.join(self.caps, name + ".mmtcap")

    def assert_refused(self, capsule, why, *extra):
        r = self.restore(capsule, *extra)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertRegex(r.stderr, rf"^mmtier: restore of {re.escape(capsule)} refused: {why}\n$")

    def test_mapped_files_are_known_by_their_content(self):
        # The program and a data file it maps and keeps open read-only,
        # each replaced by a copy of itself (another inode, as a new
        # container's mount or another host gives them, the same bytes and
        # times): restored, since the content is the same.
        exe = os.path.join(self.caps, "child-copy")
        data = os.path.join(self.caps, "data")
        shutil.copy(ARGS.restore_child, exe)
        with open(data, "wb") as f:
            f.write(os.urandom(300 << 10))
        log = os.path.join(self.caps, "log")
        self.extra_env = {"RESTORE_CHILD_MAP": data, "RESTORE_CHILD_KEEP": "1", "RESTORE_CHILD_LOG": log}
        p, cap = self.snapshot_of("moved", binary=exe)
        self.kill(p)

        def renew(path, change=None, mtime_ns=None):
            """PATH replaced by a copy with change(bytes) applied, its mode and
            times kept (or mtime_ns).  The old file stays (under another
            name): a freed inode number could come back for the copy."""
            st = os.stat(path)
            os.link(path, f"{path}.{st.st_ino}")
            with open(path, "rb") as f:
                b = bytearray(f.read())
            if change:
                change(b)
            tmp = path + ".new"
            with open(tmp, "wb") as f:
                f.write(b)
            os.chmod(tmp, st.st_mode)
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns if mtime_ns is None else mtime_ns))
            os.replace(tmp, path)
            self.assertNotEqual(os.stat(path).st_ino, st.st_ino)

        renew(exe)
        renew(data)
        r = self.restore(cap)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.lines()[-1], f"restored pid={p.pid} generation=1 buffer=ok tids=same workers=running")
        # A file the program writes must be the very file: a copy with its
        # size and times is not.
        renew(log)
        r = self.restore(cap)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, rf"^mmtier: restore of {re.escape(cap)} failed: descriptor \d+: {re.escape(log)} is "
                                   r"another file than at the snapshot\n$")
        # The data file with other bytes at its start, its size and time kept.
        original = open(data, "rb").read()

        def flip_first(b):
            b[0] ^= 1

        renew(data, flip_first)
        self.assert_refused(cap, rf"{re.escape(data)} changed since the snapshot \(its content\)")
        # Its bytes back, its modification time not.
        os.link(data, f"{data}.{os.stat(data).st_ino}")
        with open(data + ".new", "wb") as f:
            f.write(original)
        os.replace(data + ".new", data)
        self.assert_refused(cap, rf"{re.escape(data)} changed since the snapshot \(its modification time\)")
        # The program: another build of the same size (one byte of its build id).
        head = struct.pack("<III", 4, 20, 3) + b"GNU\0"

        def other_build(b):
            at = b.find(head)
            self.assertGreater(at, 0, "no GNU build id note in the test program")
            b[at + len(head)] ^= 1

        renew(exe, other_build)
        self.assert_refused(cap, rf"{re.escape(exe)} is another build than the one mapped at the snapshot "
                                 rf"\(its build id differs\)")

    def test_a_container_process_comes_back_without_choosing_its_ids(self):
        """As in a new container: a fresh PID namespace whose root lacks
        CAP_SYS_ADMIN and CAP_CHECKPOINT_RESTORE, so no clone3 set_tid.  The
        namespace's first process comes back in place (the command becomes
        it), another at its PID; the threads' ids come in order."""
        if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"):
            self.skipTest("needs root, unshare and setpriv")
        fresh = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
        no_caps = ["setpriv", "--bounding-set=-sys_admin,-checkpoint_restore", "--"]
        rc = os.path.abspath(ARGS.restore_child)  # run from other directories too
        child = shlex.join(["env", f"LD_PRELOAD={os.path.abspath(ARGS.lib)}", f"MMTIER_SNAPSHOT_DIR={self.caps}",
                            rc, "self", "NAME", self.report])

        def original(name, before):
            """The child, after `before` (processes that used up PIDs), in a
            fresh namespace; its PID there once it took its snapshot."""
            p = subprocess.Popen([*fresh, "sh", "-c", f"{before}{child.replace('NAME', name)} & wait"],
                                 env=base_env(self.dir), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.addCleanup(lambda: (p.poll() is None and p.kill(), p.wait()))
            m = self.wait_line(rf"^snapshot taken pid=(\d+)$", "the snapshot")
            os.truncate(self.report, 0)
            self.kill(p)
            return int(m.group(1)), os.path.join(self.caps, name + ".mmtcap")

        def restore(cap, before="", *extra):
            cmd = [ARGS.mmtier, "restore", *([cap] if cap else []), *extra]
            argv = [*fresh, *no_caps, *cmd] if not before else [*fresh, "sh", "-c", before + shlex.join(no_caps + cmd)]
            return subprocess.run(argv, env=base_env(self.dir), stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=120)

        def first_process(name, cwd=None, log=None):
            """The first process of its namespace (the shell's `& wait` would
            put it at PID 2: exec'd instead); its capsule."""
            # (Its statistics in the test's directory: under the pid it sees,
            # 1, a page in the host's shared one would outlive it.)
            cmd = child.replace("NAME", name)
            if log:
                cmd = cmd.replace("env ", "env " + shlex.quote("RESTORE_CHILD_LOG=" + log) + " ", 1)
            p = subprocess.Popen([*fresh, "sh", "-c", "exec " + cmd], cwd=cwd,
                                 env=base_env(self.dir), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.addCleanup(lambda: (p.poll() is None and p.kill(), p.wait()))
            self.wait_line(r"^snapshot taken pid=1$", "the snapshot")
            os.truncate(self.report, 0)
            self.kill(p)
            return os.path.join(self.caps, name + ".mmtcap")

        first_log = os.path.join(self.dir, "first.log")
        first = first_process("first", log=first_log)
        self.assertEqual(text_of(first_log), "before\nafter\n")
        r = restore(first)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(text_of(first_log), "before\n")  # cut back to its size at the snapshot
        self.assertRegex(r.stderr, rf"^mmtier restore: {re.escape(first)}: restoring process 1 in place "
                                   r"\(this command becomes it\), 4 threads\n")
        self.assertEqual(self.lines()[-1], "restored pid=1 generation=1 buffer=ok tids=same workers=running")
        # The attempt's marker went once the program was ready.
        marker = os.path.join(first, "restore-attempt")
        self.assertFalse(os.path.exists(marker))
        # As a container's command: the newest capsule of a prefix, else the
        # program afresh (exec'd: the namespace's first process still).
        os.truncate(self.report, 0)
        r = restore(None, "", "--latest", "first", "--dir", self.caps, "--or-run", rc, "self", "first", self.report)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertEqual(self.lines()[-1], "restored pid=1 generation=1 buffer=ok tids=same workers=running")
        # Another command line (a pod whose command changed): afresh; its
        # capsules are not this command's.
        r = restore(None, "", "--latest", "first", "--dir", self.caps, "--or-run", "sh", "-c", "echo afresh $$")
        self.assertEqual((r.returncode, r.stdout), (0, "afresh 1\n"), r.stderr)
        self.assertEqual(r.stderr, f"mmtier restore: no durable capsule named first... in {self.caps} to restore (1 of "
                                   "another command line, 0 whose restore did not complete); starting sh afresh\n")
        empty = tempfile.mkdtemp(dir=self.caps)
        r = restore(None, "", "--latest", "--dir", empty, "--or-run", "sh", "-c", "echo afresh $$")
        self.assertEqual((r.returncode, r.stdout), (0, "afresh 1\n"), r.stderr)
        self.assertEqual(r.stderr, f"mmtier restore: no durable capsule in {empty}; starting sh afresh\n")
        # Past the point of no return in place (the restorer cannot map the
        # memory under a limit of the address space), the restore fails and
        # leaves its marker in the capsule...
        r = restore(None, "exec prlimit --as=%d " % (256 << 20), "--latest", "first", "--dir", self.caps, "--or-run",
                    rc, "self", "first", self.report)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, rf"^mmtier restore: {re.escape(first)}: restoring process 1 in place .*\n"
                                   r"cannot map memory \(errno 12\) at 0x[0-9a-f]+\n$")
        self.assertRegex(text_of(marker), r"^restore in place began at \d+ \(host pid \d+\)\n$")
        # ... and at the next start the capsule is passed over: the program
        # starts afresh rather than failing the same way again.
        r = restore(None, "", "--latest", "first", "--dir", self.caps, "--or-run", rc, "self", "first", self.report)
        self.assertEqual(r.stderr,
                         f"mmtier restore: {first}: its last restore in place did not complete ({marker} says when): "
                         f"passed over\nmmtier restore: no durable capsule named first... in {self.caps} to restore "
                         f"(0 of another command line, 1 whose restore did not complete); starting {rc} afresh\n"
                         "restore_child: not running under libmmtier\n")
        # The marker is part of the capsule: it can still be packed (and
        # deleted, as its pruning does).
        r = subprocess.run([ARGS.mmtier, "capsule", "pack", first], env=base_env(self.dir), capture_output=True,
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        os.unlink(marker)
        # In place, a restore that gives up before the restorer runs (its
        # working directory is gone) runs the program afresh too, with the
        # files it writes as the original left them (not cut back to the
        # snapshot: the program runs afresh, not from it).
        gone = tempfile.mkdtemp(dir=self.caps)
        log = os.path.join(self.dir, "stray.log")
        stray = first_process("stray", cwd=gone, log=log)
        os.rmdir(gone)
        r = restore(None, "", "--latest", "stray", "--dir", self.caps, "--or-run", rc, "self", "stray", self.report)
        self.assertRegex(r.stderr, rf"^mmtier restore: {re.escape(stray)}: restoring process 1 in place .*\n"
                                   rf"mmtier restore: cannot enter the working directory {re.escape(gone)}: No such "
                                   rf"file or directory; starting {re.escape(rc)} afresh\n"
                                   r"restore_child: not running under libmmtier\n$")
        # (Afresh, without LD_PRELOAD here: the program says so and ends.)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(text_of(log), "before\nafter\n")
        self.assertFalse(os.path.exists(os.path.join(stray, "restore-attempt")))
        # Outside a fresh namespace's first process, the init of a namespace is refused.
        self.assert_refused(first, r"the process was the init of its PID namespace: .*")
        # A later process: the supervisor takes the next PID, the ones up to
        # the process's are used up.
        pid, later = original("later", "/bin/true; /bin/true; ")
        self.assertGreaterEqual(pid, 4)
        os.truncate(self.report, 0)
        r = restore(later)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stderr, rf"^mmtier restore: {re.escape(later)}: process {pid} restored \(host pid {pid}\), 4 threads\n")
        self.assertEqual(self.lines()[-1], f"restored pid={pid} generation=1 buffer=ok tids=same workers=running")
        # A process in its own PID and mount namespaces with its own
        # /dev/shm (a container's) is snapshotted from the host by its host
        # PID: its control socket is found through its root.
        e = base_env(self.dir)
        e.pop("MMTIER_STATS_DIR", None)
        script = ('mount -t tmpfs tmpfs /dev/shm && exec env LD_PRELOAD="$0" MMTIER_SNAPSHOT_DIR="$1" "$2" serve "$3"')
        p = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private",
                              "sh", "-c", script, ARGS.lib, self.caps, ARGS.restore_child, self.report],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=e)
        self.addCleanup(lambda: (p.poll() is None and p.kill(), p.wait()))
        self.wait_line(r"^serving pid=1\b", "the contained process")
        host = int(text_of(f"/proc/{p.pid}/task/{p.pid}/children").split()[0])
        r = wait_until(lambda: (lambda r: r if r.returncode == 0 else None)(
            mmtier(["snapshot", str(host), "--name", "contained"], self.dir)), 30, "a snapshot from the host")
        info = json.loads(mmtier(["snapshot", "info", os.path.join(self.caps, "contained.mmtcap"), "--json"],
                                 self.dir).stdout)
        self.assertEqual((info["status"], info["pid"]), ("durable", 1), info)
        self.kill(p)
        # Ids the kernel has given already cannot come in order, and without
        # the capability there is no namespace of its own to make.
        r = restore(later, "/bin/true; " * (pid + 2))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("cannot make a PID namespace for the restored process: Operation not permitted", r.stderr)

    def test_refusals_leave_nothing_running(self):
        # The original still runs.
        p, cap = self.snapshot_of("live")
        self.assert_refused(cap, rf"process {p.pid}, which the snapshot was taken of, is still running: stop it first")
        self.kill(p)
        # A binary that changed since.
        exe = os.path.join(self.caps, "child-copy")
        shutil.copy(ARGS.restore_child, exe)
        p2, cap2 = self.snapshot_of("changed", binary=exe)
        self.kill(p2)
        with open(exe, "ab") as f:
            f.write(b"\0")
        self.assert_refused(cap2, rf"{re.escape(exe)} changed since the snapshot .*")
        # Damaged memory: one byte of mem.
        mem = os.path.join(cap, "mem")
        with open(mem, "r+b") as f:
            f.seek(4096 * 3)
            b = f.read(1)
            f.seek(4096 * 3)
            f.write(bytes([b[0] ^ 1]))
        self.assert_refused(cap, r"mem is damaged: the chunk at offset 0 .*")
        # --verify meta skips the data but not the manifest.
        manifest = os.path.join(cap, "manifest")
        with open(manifest, "r+b") as f:
            f.truncate(os.path.getsize(manifest) - 1)
        self.assert_refused(cap, r"the manifest is unusable: .*")
        # Another format version (the status block's version field).
        p3, cap3 = self.snapshot_of("ver")
        self.kill(p3)
        with open(os.path.join(cap3, "manifest"), "r+b") as f:
            f.seek(8)
            f.write((99).to_bytes(4, "little"))
        self.assert_refused(cap3, r"the manifest is unusable: .*version.*")
        self.assert_refused(os.path.join(self.caps, "none.mmtcap"), r"no such capsule")
        # Nothing was started by any of them.
        self.assertFalse([l for l in self.lines() if l.startswith("restored")])


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--mmtier", required=True)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--child", required=True)
    ap.add_argument("--fake", required=True)
    ap.add_argument("--maker", required=True)
    ap.add_argument("--restore-child", required=True)
    ap.add_argument("--version", required=True)
    ARGS, rest = ap.parse_known_args()
    ARGS.mmtier = os.path.abspath(ARGS.mmtier)
    ARGS.lib = os.path.abspath(ARGS.lib)
    ARGS.maker = os.path.abspath(ARGS.maker)
    prog = unittest.main(argv=[sys.argv[0], "-v"] + rest, exit=False)
    r = prog.result
    if not r.wasSuccessful():
        sys.exit(1)
    # A skipped test is reported to ctest as skipped (SKIP_RETURN_CODE),
    # never as a pass.
    sys.exit(77 if r.skipped else 0)


if __name__ == "__main__":
    main()
