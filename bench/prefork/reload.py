"""A pre-fork server's tree during worker turnover, stock vs cowpy side
by side (issue #15): the peak PSS of the whole gunicorn tree while every
worker is replaced at once (SIGHUP to the master during load) and while
workers recycle after --max-requests, against its steady state; req/s
and errors (timeouts included) under the same load.

    python3 bench/prefork/reload.py STOCK COWPY [--modes ...] [--duration 20]

The app and modes are the pre-fork benchmark's (bench/prefork/app.py,
run.py's MODES: stock+hooks is stock with its freeze recipe).  The tree's
PSS is the sum of every process's /proc/PID/smaps_rollup Pss (cowstat's
reader), sampled every --interval seconds from a thread while wrk runs.
  hup      wrk for --duration s; at a third of it the steady PSS is the
           median of the last second's samples, then SIGHUP: gunicorn
           starts 4 new workers and stops the old ones gracefully.
  recycle  gunicorn --max-requests 1000 (+-100 jitter); steady PSS is
           the median of all samples, peak their maximum.
"""

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time

import common  # noqa: F401  (puts Tools/cowstat on sys.path)
from common import MIB, ROOT, log
from cowstat import proc as cowproc
from deps import build_site, check_deps
from server import free_port, run_wrk, start_server, stop_server, wait_ready
from run import MODES

RECYCLE_ARGS = ["--max-requests", "1000", "--max-requests-jitter", "100"]


def tree_pss(master):
    try:
        return sum(p["pss"] for p in cowproc.sample_tree(master))
    except Exception:
        return None


class Sampler(threading.Thread):
    def __init__(self, master, interval):
        super().__init__(daemon=True)
        self.master, self.interval = master, interval
        self.samples = []           # (t, KiB)
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            v = tree_pss(self.master)
            if v is not None:
                self.samples.append((time.monotonic(), v))
            self.stop.wait(self.interval)


def one(python, mode, scenario, args, site, base_env):
    workdir = tempfile.mkdtemp(prefix="cowpy-reload-")
    if scenario == "recycle":
        mode = type(mode)(mode.name, mode.python, dict(mode.env),
                          list(mode.gunicorn_args) + RECYCLE_ARGS, mode.desc)
    port = free_port()
    proc, _, _ = start_server(python, mode, args, site, base_env, port,
                              workdir)
    try:
        wait_ready(proc, port, args.workers, 300, workdir)
        run_wrk(port, args, 2)                      # warm-up
        sampler = Sampler(proc.pid, args.interval)
        sampler.start()
        result = {}
        if scenario == "hup":
            def hup():
                time.sleep(args.duration / 3)
                result["t_hup"] = time.monotonic()
                os.kill(proc.pid, signal.SIGHUP)
            t = threading.Thread(target=hup, daemon=True)
            t.start()
        w = run_wrk(port, args, args.duration)
        sampler.stop.set()
        sampler.join()
        s = sampler.samples
        if scenario == "hup":
            th = result["t_hup"]
            before = [v for (ts, v) in s if th - 1.0 <= ts < th]
            steady = statistics.median(before)
            peak = max(v for (ts, v) in s if ts >= th)
        else:
            steady = statistics.median(v for _, v in s)
            peak = max(v for _, v in s)
        return {"steady": steady, "peak": peak, "rps": w["rps"],
                "errors": w["errors"], "timeouts": w["timeout"],
                "samples": len(s)}
    finally:
        stop_server(proc, 30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stock")
    ap.add_argument("cowpy")
    ap.add_argument("--modes", default="stock,stock+hooks,cowpy,"
                    "cowpy-immortal")
    ap.add_argument("--scenarios", default="hup,recycle")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--wrk-timeout", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--site-dir", default=os.path.join(ROOT, "build",
                                                       "prefork-site"))
    args = ap.parse_args()
    args.attribution = False
    pythons = {"stock": os.path.abspath(args.stock),
               "cowpy": os.path.abspath(args.cowpy)}
    check_deps(False)
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith("PYTHON")}
    build_site(args.site_dir, sorted(set(pythons.values())), base_env)
    modes = {m.name: m for m in MODES}
    print("worker turnover: gunicorn --preload -w %d, app.py (%d users), "
          "wrk -c %d for %d s; tree PSS sampled every %.0f ms"
          % (args.workers, args.users, args.connections, args.duration,
             args.interval * 1000))
    for scenario in args.scenarios.split(","):
        print("\n%s: tree PSS (MiB) steady and peak" % scenario)
        print("  %-16s %8s %8s %7s %9s %7s %9s"
              % ("mode", "steady", "peak", "peak/st", "req/s", "errors",
                 "timeouts"))
        for name in args.modes.split(","):
            mode = modes[name]
            log("[%s] %s" % (scenario, name))
            r = one(pythons[mode.python], mode, scenario, args,
                    args.site_dir, base_env)
            print("  %-16s %8.1f %8.1f %6.2fx %9.0f %7d %9d" % (
                name, r["steady"] / MIB, r["peak"] / MIB,
                r["peak"] / r["steady"], r["rps"], r["errors"],
                r["timeouts"]), flush=True)


if __name__ == "__main__":
    main()
