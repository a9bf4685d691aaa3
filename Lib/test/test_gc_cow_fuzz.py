"""Short fixed-seed passes of the collector fuzzer (Tools/fuzz/gc_fuzz.py)
and of the fork-moves fuzzer (Tools/fuzz/fork_moves.py).

`make fuzz SECONDS=...` runs the fuzzer for longer with fresh seeds; this
module runs 20 fixed seeds (each case in its own subprocess) and checks
that the fuzzer reports injected failures and crashes with a reproduction
command.
"""

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import unittest
from test import support

FIRST_SEED = 20240
CASES = 20
STEPS = 100


def find_script():
    """Tools/fuzz/gc_fuzz.py of the checkout this test belongs to.

    The test runs from the source overlay (Lib/test), from the installed
    copy (build/cowpy/lib/python3.13/test) or from build/src/cowpy, so
    look upwards from this file, then in the current directory."""
    candidates = []
    if os.environ.get("COWPY_GC_FUZZ"):
        candidates.append(os.environ["COWPY_GC_FUZZ"])
    d = os.path.dirname(os.path.abspath(__file__))
    for _ in range(8):
        candidates.append(os.path.join(d, "Tools", "fuzz", "gc_fuzz.py"))
        d = os.path.dirname(d)
    candidates.append(os.path.join(os.getcwd(), "Tools", "fuzz",
                                   "gc_fuzz.py"))
    for path in candidates:
        if os.path.isfile(path):
            return path
    return None


SCRIPT = find_script()


def load_fuzzer():
    spec = importlib.util.spec_from_file_location("gc_fuzz", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    with support.swap_attr(sys, "dont_write_bytecode", True):
        spec.loader.exec_module(module)     # no __pycache__ in Tools/
    return module


def run_script(*args, timeout=support.SHORT_TIMEOUT):
    return subprocess.run([sys.executable, SCRIPT, *args],
                          capture_output=True, text=True, timeout=timeout,
                          errors="backslashreplace")


@unittest.skipIf(SCRIPT is None, "Tools/fuzz/gc_fuzz.py not found")
@support.requires_subprocess()
@support.requires_fork()
class GCFuzzTests(unittest.TestCase):

    @support.requires_resource("cpu")
    def test_fixed_seeds(self):
        fuzz = load_fuzzer()
        lines = []
        summary = fuzz.run_campaign(FIRST_SEED, STEPS, cases=CASES,
                                    quiet=True, python=sys.executable,
                                    timeout=support.LONG_TIMEOUT,
                                    out=lines.append)
        self.assertEqual(summary["cases"], CASES)
        self.assertGreaterEqual(summary["steps"], CASES * STEPS)
        self.assertEqual(summary["findings"], [], "\n".join(lines))

    def assert_reported(self, proc, seed, what):
        """proc is a runner that found `what`; return (step, command)."""
        out = proc.stdout
        self.assertEqual(proc.returncode, 1, out + proc.stderr)
        m = re.search(rf"^FAIL seed={seed}: (.*)$", out, re.M)
        self.assertIsNotNone(m, out)
        self.assertIn(what, m.group(1))
        m = re.search(r"^reproduce: (.*)$", out, re.M)
        self.assertIsNotNone(m, out)
        command = m.group(1)
        self.assertIn(f" --one-case --seed {seed} --steps ", command)
        step = int(re.search(r"--steps (\d+)", command).group(1))
        self.assertIn("1 findings", out)
        return step, command

    def test_injected_failure(self):
        seed = 7
        with tempfile.TemporaryDirectory() as tmp:
            report = os.path.join(tmp, "fuzz.json")
            md = os.path.join(tmp, "fuzz.md")
            proc = run_script("--seed", str(seed), "--cases", "1",
                              "--steps", "40", "--quiet", "--json", report,
                              "--md", md, "--self-test-fail")
            step, command = self.assert_reported(proc, seed, "")
            with open(report) as f:
                summary = json.load(f)
            with open(md) as f:
                fragment = f.read()
        self.assertEqual(step, 3)
        self.assertIn("--self-test-fail", command)
        self.assertEqual(summary["cases"], 1)
        self.assertEqual(len(summary["findings"]), 1)
        self.assertEqual(summary["findings"][0]["seed"], seed)
        self.assertEqual(summary["python"], sys.version)
        for key in ("steps", "seconds", "date"):
            self.assertIn(key, summary)
        self.assertEqual(summary["last_seed"], seed)
        for key in ("cow", "fork"):
            self.assertEqual(sum(summary["modes"][key].values()), 1)
        fail_line = re.search(r"^FAIL .*$", proc.stdout, re.M).group(0)

        # The markdown fragment has the figures and the reproduction.
        self.assertIn("**1 finding**", fragment)
        self.assertIn(f"| cases | 1 (seeds {seed}..{seed}) |", fragment)
        self.assertIn(sys.version.split()[0], fragment)
        self.assertIn(f"| steps | {summary['steps']} ", fragment)
        self.assertIn(f"`{command}`", fragment)

        # The reproduction command finds the same thing again.
        argv = shlex.split(command)
        self.assertEqual(argv[0], sys.executable)
        if not os.path.isabs(argv[1]):
            argv[1] = os.path.join(os.getcwd(), argv[1])
        again = subprocess.run(argv, capture_output=True, text=True,
                               timeout=support.SHORT_TIMEOUT,
                               errors="backslashreplace")
        self.assertEqual(again.returncode, 1, again.stdout + again.stderr)
        self.assertIn(fail_line, again.stdout.splitlines())

    def test_crash_is_a_finding(self):
        seed = 11
        proc = run_script("--seed", str(seed), "--cases", "1",
                          "--steps", "20", "--quiet", "--self-test-crash")
        # A sanitizer build turns the SIGSEGV into an abort (SIGABRT).
        signame = ("SIGABRT" if "abort_on_error=1"
                   in os.environ.get("ASAN_OPTIONS", "") else "SIGSEGV")
        step, command = self.assert_reported(
            proc, seed, f"crashed with {signame} at step 3")
        self.assertEqual(step, 3)
        self.assertIn("--self-test-crash", command)

    def test_same_seed_same_run(self):
        # Each operation is traced; a seed replays the same operations.
        runs = [run_script("--one-case", "--seed", str(FIRST_SEED),
                           "--steps", "60") for _ in range(2)]
        for proc in runs:
            self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertEqual(runs[0].stdout, runs[1].stdout)


MOVES = (os.path.join(os.path.dirname(SCRIPT), "fork_moves.py")
         if SCRIPT is not None else None)


@unittest.skipIf(MOVES is None or not os.path.isfile(MOVES or ""),
                 "Tools/fuzz/fork_moves.py not found")
@support.requires_subprocess()
@support.requires_fork()
class ForkMovesTests(unittest.TestCase):
    """Fixed seeds of Tools/fuzz/fork_moves.py: freezes, immortal freezes
    and forks from finalizers, weakref callbacks and a second thread's
    collection; resource objects and C-held tuples across immortalizing
    forks."""

    @support.requires_resource("cpu")
    def test_fixed_seeds(self):
        proc = subprocess.run(
            [sys.executable, MOVES, "--python", sys.executable,
             "--seed", str(FIRST_SEED), "--cases", "40",
             "--timeout", str(support.LONG_TIMEOUT)],
            capture_output=True, text=True, timeout=support.LONG_TIMEOUT * 4)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertIn("40 cases, 0 findings", proc.stdout)


if __name__ == "__main__":
    unittest.main()
