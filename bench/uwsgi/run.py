"""uWSGI, built here against each twin (make uwsgi), serving the same app
(bench/uwsgi/app.py) in each mode at equal load, stock and cowpy side by
side in one run: worker USS/PSS, tree PSS, req/s and failed requests.

    python bench/uwsgi/run.py [--seconds 10] [--modes m1,m2] [--items N]

Modes (2 workers, a master, --http-socket; "hooks" is uWSGI's
py-call-uwsgi-fork-hooks, which runs PyOS_BeforeFork()/AfterFork around
each fork; without it the master forks from C, unannounced):
  stock             stock, hooks, nothing done
  stock+recipe      stock, hooks, gc.disable() while loading, gc.freeze()
                    at the end of the module, gc.enable() after fork
  cowpy             cowpy, hooks, no option (freeze at fork)
  cowpy-nohooks     cowpy, no hooks, no option (frozen at the worker's
                    first collection, gc_cow.c's unannounced fork)
  cowpy-immortal    cowpy, hooks, env = PYTHONCOWFORK=immortal
Memory comes from cowstat's reader of /proc/PID/smaps_rollup (USS =
Private_Clean + Private_Dirty), sampled once the load has run.
"""

import argparse
import os
import re
import signal
import subprocess
import statistics
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
# The pre-fork benchmark's server helpers (importing them puts
# Tools/cowstat on sys.path).
sys.path.insert(0, os.path.join(ROOT, "bench", "prefork"))
from server import free_port, uwsgi_binary, uwsgi_version  # noqa: E402
from cowstat import proc as cowproc  # noqa: E402

APP = os.path.join(ROOT, "bench", "uwsgi", "app.py")

MODES = {
    # name: (twin, fork hooks, env lines, recipe)
    "stock": ("stock", True, {}, False),
    "stock+recipe": ("stock", True, {}, True),
    "cowpy": ("cowpy", True, {}, False),
    "cowpy-nohooks": ("cowpy", False, {}, False),
    "cowpy-immortal": ("cowpy", True, {"PYTHONCOWFORK": "immortal"}, False),
}


def write_ini(workdir, port, hooks, env, recipe, items, processes=2):
    lines = ["[uwsgi]", "master = true", "processes = %d" % processes,
             "http-socket = 127.0.0.1:%d" % port, "wsgi-file = %s" % APP,
             "need-app = true", "die-on-term = true",
             "env = COWPY_ITEMS=%d" % items]
    if hooks:
        lines.append("py-call-uwsgi-fork-hooks = true")
    if recipe:
        lines.append("env = COWPY_RECIPE=1")
    for k, v in env.items():
        lines.append("env = %s=%s" % (k, v))
    path = os.path.join(workdir, "uwsgi.ini")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


class Server:
    """One uWSGI master and its workers, started from an ini file."""

    def __init__(self, mode, items, workdir, processes=2):
        twin, hooks, env, recipe = MODES[mode]
        self.mode = mode
        self.port = free_port()
        self.processes = processes
        self.ini = write_ini(workdir, self.port, hooks, env, recipe, items,
                             processes)
        self.log = os.path.join(workdir, "uwsgi-%s.log" % mode)
        # Nothing of the caller's Python settings leaks into the server.
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith("PYTHON")}
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [uwsgi_binary(twin), "--ini", self.ini],
                stdout=out, stderr=subprocess.STDOUT, env=clean)

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("uWSGI exited: " + self.tail())
            try:
                if self.get("/?1")[0] == 200 and \
                        len(self.workers()) == self.processes:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("uWSGI not ready: " + self.tail())

    def get(self, path):
        with urllib.request.urlopen("http://127.0.0.1:%d%s"
                                    % (self.port, path), timeout=5) as r:
            return r.status, r.read()

    def workers(self):
        return [e for e in cowproc.sample_tree(self.proc.pid)
                if e["role"] == "worker"]

    def memory(self):
        tree = cowproc.sample_tree(self.proc.pid)
        workers = [e for e in tree if e["role"] == "worker"]
        uss = [e["uss"] / 1024 for e in workers]   # KiB -> MiB
        pss = [e["pss"] / 1024 for e in workers]
        return {"worker_uss": sum(uss) / len(uss),
                "worker_pss": sum(pss) / len(pss),
                "tree_pss": sum(e["pss"] for e in tree) / 1024}

    def stop(self, timeout=30):
        """SIGTERM (die-on-term); the exit status, or None if killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode

    def tail(self, n=20):
        try:
            with open(self.log) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


def run_wrk(port, seconds):
    out = subprocess.run(["wrk", "-t2", "-c4", "-d%ds" % seconds,
                          "http://127.0.0.1:%d/" % port],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), "
                     r"write (\d+), timeout (\d+)", out)
    # uWSGI's http-socket closes the connection after each response (no
    # keep-alive), which wrk counts as a read error per request: those
    # are not failures.  Non-2xx answers and connect, write and timeout
    # errors are.
    failed = (int(bad.group(1)) if bad else 0)
    if errs:
        connect, read, write, timeout = (int(x) for x in errs.groups())
        failed += connect + write + timeout
    return rps, total, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--items", type=int, default=130000)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--rounds", type=int, default=1,
                    help="interleaved rounds; each figure is the median")
    args = ap.parse_args()
    modes = args.modes.split(",")
    for m in modes:
        if m not in MODES:
            ap.error("unknown mode %r (known: %s)" % (m, ", ".join(MODES)))
        if not os.path.exists(uwsgi_binary(MODES[m][0])):
            sys.exit("no %s: run 'make uwsgi'" % uwsgi_binary(MODES[m][0]))
    runs = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="cowpy-uwsgi-") as workdir:
        # Rounds interleave the modes, so that a change in the machine's
        # load spreads over all of them.
        for _ in range(args.rounds):
            for m in modes:
                server = Server(m, args.items, workdir)
                try:
                    server.wait_ready()
                    rps, total, failed = run_wrk(server.port, args.seconds)
                    mem = server.memory()
                finally:
                    status = server.stop()
                runs[m].append(dict(mem, rps=rps, requests=total,
                                    failed=failed, stop=status))
    rows = {}
    for m, rs in runs.items():
        rows[m] = {k: (statistics.median(r[k] for r in rs)
                       if isinstance(rs[0][k], (int, float)) else rs[-1][k])
                   for k in rs[0]}
        rows[m]["failed"] = sum(r["failed"] for r in rs)
    base = rows.get("stock+recipe")
    print("uWSGI %s, 2 workers, app of %d items, wrk -t2 -c4 for %d s; "
          "MiB; ratios vs stock+recipe; median of %d round(s)"
          % (uwsgi_version("cowpy"), args.items, args.seconds,
             args.rounds))
    print("%-16s %9s %9s %9s %8s %9s %7s %6s %6s %6s"
          % ("mode", "USS", "PSS", "tree PSS", "req/s", "requests",
             "failed", "USS", "tPSS", "req/s"))
    for m, r in rows.items():
        ratio = (lambda k: r[k] / base[k]) if base else (lambda k: 0)
        print("%-16s %9.1f %9.1f %9.1f %8.0f %9d %7d %6.2f %6.2f %6.2f"
              % (m, r["worker_uss"], r["worker_pss"], r["tree_pss"],
                 r["rps"], r["requests"], r["failed"], ratio("worker_uss"),
                 ratio("tree_pss"), ratio("rps")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
