"""Tests of Tools/cowstat (the cowstat user tool): show, errors, the raw
/proc readers the benchmarks use, watch and plot.  The attribution and
the pymalloc census are tested in test_cowstat_attribution.py.

Run from the repository root with either interpreter:
    build/cowpy/bin/python3 -m unittest -v tests/test_cowstat.py
    build/stock/bin/python3 -m unittest -v tests/test_cowstat.py

Linux only (cowstat reads /proc).  The plot test is skipped when neither
this Python nor /usr/bin/python3 can import matplotlib.
"""

import contextlib
import csv
import io
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

from tests.cowstat_support import (HAVE_PROC, PAGE, ROOT,
                                   absent_pid, run_cowstat, tool_env)
from cowstat import cli, proc
from cowstat.formatting import OUTSIDE_ROW as OUTSIDE


# A parent that forks N children; every process waits until the parent's
# stdin closes (children poll for their parent's death).
FAMILY = r"""
import os, sys, time
n = int(sys.argv[1])
parent = os.getpid()
kids = []
for i in range(n):
    pid = os.fork()
    if pid == 0:
        junk = bytearray(256 * 1024 * (i + 1))    # some private memory
        for off in range(0, len(junk), 4096):
            junk[off] = 1
        while os.getppid() == parent:
            time.sleep(0.05)
        os._exit(0)
    kids.append(pid)
print(" ".join(map(str, kids)), flush=True)
sys.stdin.read()
import signal
for k in kids:
    os.kill(k, signal.SIGTERM)
for k in kids:
    os.waitpid(k, 0)
"""


class Family:
    """Context manager: a FAMILY process with N children."""

    def __init__(self, n=2):
        self.n = n

    def __enter__(self):
        self.p = subprocess.Popen([sys.executable, "-c", FAMILY, str(self.n)],
                                  stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE,
                                  universal_newlines=True)
        line = self.p.stdout.readline()
        self.kids = [int(x) for x in line.split()]
        self.pid = self.p.pid
        # Let the children finish touching their memory.
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        self.p.stdin.close()
        self.p.wait(timeout=30)
        self.p.stdout.close()


# ---------------------------------------------------------- show and errors

@unittest.skipUnless(HAVE_PROC, "needs Linux /proc")
class ShowTest(unittest.TestCase):

    def test_parent_with_two_children(self):
        with Family(2) as fam:
            p = run_cowstat(fam.pid, "--json")
            self.assertEqual(p.returncode, 0, p.stderr)
            doc = json.loads(p.stdout)
            procs = doc["processes"]
            self.assertEqual(len(procs), 3, procs)
            self.assertEqual(procs[0]["pid"], fam.pid)
            self.assertEqual(procs[0]["role"], "master")
            self.assertEqual(sorted(x["pid"] for x in procs[1:]),
                             sorted(fam.kids))
            for x in procs:
                self.assertEqual(x["ppid"] == fam.pid, x["pid"] != fam.pid)
                for k in ("uss", "pss", "rss"):
                    self.assertIsInstance(x[k], int)
                    self.assertGreater(x[k], 0, (k, x))
            for k in proc.MEMORY_FIELDS:
                self.assertEqual(doc["total"][k],
                                 sum(x[k] for x in procs))

            p = run_cowstat(fam.pid)
            self.assertEqual(p.returncode, 0, p.stderr)
            lines = p.stdout.splitlines()
            self.assertEqual(lines[0].split()[:3], ["PID", "PPID",
                                                    "COMMAND"])
            body = [ln for ln in lines[1:] if ln.split()[0].isdigit()]
            self.assertEqual(len(body), 3, p.stdout)
            total = [ln for ln in lines if ln.startswith("TOTAL")]
            self.assertEqual(len(total), 1, p.stdout)
            self.assertIn("3 processes", total[0])

    def test_nonexistent_pid(self):
        pid = absent_pid()
        p = run_cowstat(pid)
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stderr.strip(),
                         "cowstat: no process with PID %d" % pid)
        self.assertEqual(p.stdout, "")

    def test_invalid_pids(self):
        for bad in ("-5", "abc", "0", "12x", ""):
            with self.subTest(pid=bad):
                p = run_cowstat(bad)
                self.assertEqual(p.returncode, 2)
                self.assertIn("invalid PID", p.stderr)
                self.assertNotIn("Traceback", p.stderr)

    def test_thread_id_is_rejected(self):
        tid = []
        done = threading.Event()

        def body():
            tid.append(threading.get_native_id())
            done.wait(30)
        t = threading.Thread(target=body)
        t.start()
        try:
            while not tid:
                time.sleep(0.01)
            p = run_cowstat(tid[0])
        finally:
            done.set()
            t.join()
        self.assertEqual(p.returncode, 2)
        self.assertIn("is a thread of process %d" % os.getpid(), p.stderr)

    def test_permission_denied_names_the_file(self):
        real = proc._read_text

        def deny(path):
            if path.endswith("/smaps_rollup"):
                raise PermissionError(13, "Permission denied", path)
            return real(path)
        err = io.StringIO()
        with mock.patch.object(proc, "_read_text", deny), \
                contextlib.redirect_stderr(err), \
                contextlib.redirect_stdout(io.StringIO()):
            rc = cli.main([str(os.getpid())])
        self.assertEqual(rc, 2)
        self.assertIn("/proc/%d/smaps_rollup" % os.getpid(), err.getvalue())
        self.assertIn("Permission denied", err.getvalue())

    def test_process_exiting_while_read_is_skipped(self):
        with Family(2) as fam:
            gone = fam.kids[0]
            real = proc.read_memory

            def flaky(pid):
                if pid == gone:
                    raise proc.ProcessGone(pid)
                return real(pid)
            with mock.patch.object(proc, "read_memory", flaky):
                entries = proc.sample_tree(fam.pid)
        self.assertEqual([e["pid"] for e in entries],
                         [fam.pid, fam.kids[1]])

    def test_parse_smaps(self):
        text = ("7f-8f ---p 0 00:00 0 [rollup]\nRss: 10 kB\nPss: 6 kB\n"
                "Shared_Clean: 2 kB\nShared_Dirty: 1 kB\n"
                "Private_Clean: 3 kB\nPrivate_Dirty: 4 kB\nbogus\nSwap: x\n")
        self.assertEqual(proc.parse_smaps(text),
                         {"rss": 10, "pss": 6, "uss": 7, "shared_clean": 2,
                          "shared_dirty": 1})
        self.assertIsNone(proc.parse_smaps(""))


# ------------------------------------------------- raw readers (benchmarks)

def raw_rollup(pid="self"):
    """/proc/PID/smaps_rollup's "Name: N kB" lines, parsed here (not by
    cowstat)."""
    out = {}
    with open("/proc/%s/smaps_rollup" % pid) as f:
        for line in f:
            name, sep, rest = line.partition(":")
            if sep and rest.split()[1:] == ["kB"]:
                out[name] = int(rest.split()[0])
    return out


@unittest.skipUnless(HAVE_PROC, "needs Linux /proc")
class RawReaderTest(unittest.TestCase):

    def test_read_rollup_parses_every_kb_field(self):
        text = ("55c4-7ffe ---p 00000000 00:00 0   [rollup]\n"
                "Rss:  100 kB\nPss:  40 kB\nPss_Anon:  30 kB\n"
                "Private_Clean:  3 kB\nPrivate_Dirty:  27 kB\n"
                "Swap:  0 kB\nbogus\nVmFlags: rd wr\n")
        with mock.patch.object(proc, "_read_text", return_value=text) as m:
            got = proc.read_rollup(1234)
        m.assert_called_once_with("/proc/1234/smaps_rollup")
        self.assertEqual(got, {"Rss": 100, "Pss": 40, "Pss_Anon": 30,
                               "Private_Clean": 3, "Private_Dirty": 27,
                               "Swap": 0, "USS": 30})
        with mock.patch.object(proc, "_read_text", return_value=""):
            self.assertEqual(proc.read_rollup(1234), {"USS": 0})

    def test_read_rollup_of_self_agrees_with_a_raw_parse(self):
        before = raw_rollup()
        got = proc.read_rollup("self")
        after = raw_rollup()
        self.assertEqual(set(got), set(before) | {"USS"})
        self.assertIn("Rss", got)
        self.assertEqual(got["USS"],
                         got["Private_Clean"] + got["Private_Dirty"])
        for name, value in got.items():
            if name == "USS":
                continue
            # This process allocates between the reads: within 1 MiB.
            lo = min(before[name], after[name]) - 1024
            hi = max(before[name], after[name]) + 1024
            self.assertTrue(lo <= value <= hi, (name, before[name], value,
                                                after[name]))
        self.assertEqual(set(proc.read_rollup(os.getpid())), set(got))

    def test_stat_fields_after_a_command_with_parentheses(self):
        text = "4321 (a (b) c) S 1 4320 4320 0 -1 0 7 0 0 0 5 6 0 0\n"
        with mock.patch.object(proc, "_read_text", return_value=text):
            fields = proc.stat_fields(4321)
            self.assertEqual(fields[:3], ["S", "1", "4320"])
            self.assertEqual(proc.read_cpu_faults(4321),
                             {"cpu_s": 11 / proc.CLOCK_TICKS, "minflt": 7})
        with mock.patch.object(proc, "_read_text", return_value="4321 x"):
            self.assertRaises(ValueError, proc.stat_fields, 4321)

    def test_read_cpu_faults_of_self(self):
        t1, r1 = os.times(), resource.getrusage(resource.RUSAGE_SELF)
        got = proc.read_cpu_faults(os.getpid())
        t2, r2 = os.times(), resource.getrusage(resource.RUSAGE_SELF)
        self.assertEqual(set(got), {"cpu_s", "minflt"})
        tick = 1.0 / proc.CLOCK_TICKS
        self.assertGreaterEqual(got["cpu_s"],
                                t1.user + t1.system - 2 * tick)
        self.assertLessEqual(got["cpu_s"], t2.user + t2.system + 2 * tick)
        self.assertGreater(got["minflt"], 0)
        self.assertGreaterEqual(got["minflt"], r1.ru_minflt - 100)
        self.assertLessEqual(got["minflt"], r2.ru_minflt + 100)

    def test_proc_table_children_and_group(self):
        table = proc.proc_table()
        self.assertEqual(table[os.getpid()], (os.getppid(), os.getpgrp()))
        self.assertIn(os.getpid(), proc.group_members(os.getpgrp()))
        with Family(2) as fam:
            self.assertEqual(proc.child_pids(fam.pid), sorted(fam.kids))
            self.assertEqual(
                proc.table_children(proc.proc_table(), fam.pid),
                sorted(fam.kids))
            self.assertIn(fam.pid, proc.table_children(proc.proc_table(),
                                                       os.getpid()))
            # Without the kernel's children list: the same, from /proc.
            real = proc._read_text

            def no_children_file(path):
                if path.endswith("/children"):
                    raise FileNotFoundError(2, "No such file", path)
                return real(path)
            with mock.patch.object(proc, "_read_text", no_children_file):
                self.assertEqual(proc.child_pids(fam.pid), sorted(fam.kids))
            # Started after this process, before now.
            start = proc.start_ticks(fam.kids[0]) / proc.CLOCK_TICKS
            self.assertGreaterEqual(
                start, proc.start_ticks(os.getpid()) / proc.CLOCK_TICKS)
            self.assertLessEqual(start, proc.uptime() + 0.05)

    def test_gone_process_raises_oserror(self):
        pid = absent_pid()
        for func in (proc.read_rollup, proc.read_cpu_faults,
                     proc.start_ticks, proc.stat_fields):
            with self.subTest(func=func.__name__):
                self.assertRaises(OSError, func, pid)
        self.assertEqual(proc.group_members(pid), [])


# ------------------------------------------------------------ watch, plot

def matplotlib_python():
    """An interpreter that can import matplotlib, or None."""
    for py in (sys.executable, "/usr/bin/python3"):
        if not os.access(py, os.X_OK):
            continue
        r = subprocess.run([py, "-c", "import matplotlib"],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        if r.returncode == 0:
            return py
    return None


@unittest.skipUnless(HAVE_PROC, "needs Linux /proc")
class WatchPlotTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.csv = os.path.join(self.tmp.name, "w.csv")

    def read_rows(self):
        with open(self.csv, newline="") as f:
            return list(csv.DictReader(f))

    def test_watch_samples_and_plot(self):
        with Family(2) as fam:
            p = run_cowstat("watch", fam.pid, "--interval", "0.2",
                            "--samples", "3", "--csv", self.csv)
        self.assertEqual(p.returncode, 0, p.stderr)
        rows = self.read_rows()
        self.assertEqual(len(rows), 9)
        self.assertGreaterEqual(len({r["timestamp"] for r in rows}), 2)
        self.assertEqual({r["role"] for r in rows}, {"master", "worker"})
        self.assertEqual(sorted({int(r["pid"]) for r in rows}),
                         sorted([fam.pid] + fam.kids))
        for r in rows:
            for k in ("rss", "pss", "uss", "shared"):
                self.assertGreaterEqual(int(r[k]), 0)

        # A second run appends without a second header.
        with Family(1) as fam:
            p = run_cowstat("watch", fam.pid, "--interval", "0.1",
                            "--samples", "2", "--csv", self.csv, "-q")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(self.read_rows()), 9 + 4)

        if matplotlib_python() is None:
            self.skipTest("matplotlib is not installed (apt-get install "
                          "python3-matplotlib): plot not tested")
        png = os.path.join(self.tmp.name, "w.png")
        p = run_cowstat("plot", self.csv, "--png", png, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(png, "rb") as f:
            data = f.read()
        self.assertTrue(data.startswith(b"\x89PNG\r\n\x1a\n"))
        self.assertGreater(len(data), 1000)

    def test_watch_stops_when_root_exits(self):
        sleeper = subprocess.Popen([sys.executable, "-c",
                                    "import time; time.sleep(0.6)"])
        try:
            t0 = time.monotonic()
            p = run_cowstat("watch", sleeper.pid, "--interval", "0.1",
                            "--duration", "30", "--csv", self.csv, "-q")
            # The root is our child: a zombie once it exits, which counts
            # as exited.
            self.assertLess(time.monotonic() - t0, 20)
        finally:
            sleeper.wait()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("exited", p.stderr)
        self.assertGreaterEqual(len(self.read_rows()), 2)

    def test_watch_sigint_stops_cleanly(self):
        with Family(1) as fam:
            w = subprocess.Popen(
                [sys.executable, "-m", "cowstat", "watch", str(fam.pid),
                 "--interval", "0.05", "--csv", self.csv, "-q"],
                env=tool_env(), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, universal_newlines=True)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and (
                    not os.path.exists(self.csv)
                    or len(self.read_rows()) < 4):
                time.sleep(0.05)
            w.send_signal(signal.SIGINT)
            out, err = w.communicate(timeout=30)
        self.assertEqual(w.returncode, 0, err)
        self.assertIn("interrupted", err)
        self.assertNotIn("Traceback", err)
        rows = self.read_rows()
        self.assertGreaterEqual(len(rows), 4)
        self.assertTrue(all(r["shared"] is not None and r["shared"].isdigit()
                            for r in rows))

    def test_watch_errors(self):
        p = run_cowstat("watch", absent_pid(), "--csv", self.csv)
        self.assertEqual(p.returncode, 2)
        self.assertIn("no process with PID", p.stderr)
        p = run_cowstat("watch", os.getpid(), "--interval", "-1",
                        "--csv", self.csv)
        self.assertEqual(p.returncode, 2)
        self.assertIn("invalid interval", p.stderr)
        p = run_cowstat("watch", os.getpid(), "--samples", "2",
                        "--duration", "1", "--csv", self.csv)
        self.assertEqual(p.returncode, 2)
        self.assertIn("not allowed with", p.stderr)
        with open(self.csv, "w") as f:
            f.write("a,b,c\n1,2,3\n")
        p = run_cowstat("watch", os.getpid(), "--samples", "1",
                        "--csv", self.csv)
        self.assertEqual(p.returncode, 2)
        self.assertIn("not a cowstat watch CSV", p.stderr)

    def test_plot_errors(self):
        png = os.path.join(self.tmp.name, "x.png")
        p = run_cowstat("plot", os.path.join(self.tmp.name, "missing.csv"),
                        "--png", png)
        self.assertEqual(p.returncode, 2)
        self.assertIn("cannot read", p.stderr)
        self.assertIn("missing.csv", p.stderr)
        with open(self.csv, "w") as f:
            f.write("a,b,c\n1,2,3\n")
        p = run_cowstat("plot", self.csv, "--png", png)
        self.assertEqual(p.returncode, 2)
        self.assertIn("not a cowstat watch CSV", p.stderr)
        self.assertFalse(os.path.exists(png))


class LastWritersTest(unittest.TestCase):
    """bench/prefork/last_writers.py's six ordered rules on synthetic
    page_detail rows (cowstat's to_dict(detail=True) format)."""

    def test_rules_in_order(self):
        sys.path.insert(0, str(ROOT / "bench" / "prefork"))
        try:
            import last_writers as lw
        finally:
            sys.path.remove(str(ROOT / "bench" / "prefork"))
        out, hdr = lw.OUTSIDE_ROW, lw.POOL_HEADER_ROW
        cases = [
            # (region, writer, changed bytes, flags) -> row
            (("pymalloc", "code", 0, "SF"), "same"),        # 1 before 3, 5
            (("python", "code", 8, "A"), "4.python"),       # 2 before 3
            (("stack", out, 8, "A"), "4.stack"),
            (("files", out, 8, "A"), "4.files"),
            (("pymalloc", "code", 40, "IF"), "3.code"),     # 3 before 4, 5
            (("heap", "dict (keys table)", 4, "I"), "4.dk"),
            (("heap", "dict (keys table)", 5, "I"), "1.lru"),
            (("pymalloc", "type", 8, "I"), "3.type"),
            (("pymalloc", "dict", 8, "IF"), "4.obj"),       # 4 before 5
            (("pymalloc", out, 900, "I"), "mixed"),
            (("pymalloc", hdr, 20, "IH"), "mixed"),
            (("pymalloc", "str", 64, "F"), "2.F"),
            (("pymalloc", hdr, 8, "HE"), "2.E"),
            (("pymalloc", "str", 64, "V"), "2.V"),
            (("pymalloc", hdr, 8, "AH"), "1.hdr"),
            (("pymalloc", "str", 64, ""), "1.new"),
            (("heap", out, 4000, "A"), "1.heap"),
            (("anon", out, 8, "A"), "anon"),
        ]
        for (region, writer, nbytes, flags), want in cases:
            page = [0x1000, region, "str", writer, nbytes, [], flags]
            with self.subTest(page=page):
                self.assertEqual(lw.classify(page), want)
        self.assertEqual({k for k, _, _ in lw.ROWS},
                         {want for _, want in cases})

    def test_table_adds_up(self):
        detail = [[0x1000 * i, "heap", "str", OUTSIDE, 8, [], "A"]
                  for i in range(3)] + [[0x9000, "pymalloc", "code", "code",
                                         8, [], "I"]]
        with tempfile.TemporaryDirectory() as d:
            for pid in (11, 12):
                with open(os.path.join(d, "attribution-%d.json" % pid),
                          "w") as f:
                    json.dump({"header": {"pid": pid, "page_size": PAGE,
                                          "copied_pages": 4,
                                          "new_pages": 1},
                               "written": [], "page_detail": detail}, f)
            out = subprocess.run(
                [sys.executable, str(ROOT / "bench" / "prefork"
                                     / "last_writers.py"), d],
                stdout=subprocess.PIPE, universal_newlines=True, check=True,
                env=tool_env()).stdout
        self.assertIn("2 workers", out)
        self.assertIn("| · glibc heap: free chunks reused, no inherited "
                      "object written | 6 | 3 | 12 | 75% |", out)
        self.assertIn("| **total copied** | 8 | 4 | 16 | 100% |", out)


if __name__ == "__main__":
    unittest.main()
