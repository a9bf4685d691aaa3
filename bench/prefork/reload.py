"""A pre-fork server's tree during worker turnover, stock vs cowpy side
by side (issue #15): the peak PSS of the whole gunicorn tree while every
worker is replaced at once (SIGHUP to the master during load) and while
workers recycle after --max-requests, against its steady state; req/s
and errors (timeouts included) under the same load.

    python3 bench/prefork/reload.py STOCK COWPY [--modes ...] [--duration 20]
        [--rounds N]

The app and modes are the pre-fork benchmark's (bench/prefork/app.py,
run.py's MODES: stock+hooks is stock with its freeze recipe).  The tree's
PSS is the sum of every process's /proc/PID/smaps_rollup Pss (cowstat's
reader), sampled every --interval seconds from a thread while wrk runs.
  hup      wrk until the tree is steady (its PSS grew by less than
           --settle percent, 0.5, in the last 5 s; at most --max-wait s):
           workers copy inherited pages for tens of seconds before they
           have touched what the requests touch, so a fixed time after
           the start measures the tree still growing.  The steady PSS is
           the median of the last second's samples, then SIGHUP: gunicorn
           starts 4 new workers and stops the old ones gracefully; for
           2 s from the signal, samples follow each other without a
           pause, and each round says how many saw old and new workers
           at once ("overlap samples"); the load stops 3 s after the
           signal.  No statistics files (they lengthen the exits).
           --stop-sample: instead, after the signal, each sample is
           taken with the whole tree stopped (SIGSTOP, master first so
           that it forks no one meanwhile; SIGCONT after), and the tree
           runs --run-slice s between samples, for --stop-samples
           samples; the sampling thread sends the signal itself, so
           the first sample follows it by one slice; the load stops
           after them.  A sample then sees one
           instant of the reload, not processes read 100 ms apart while
           old workers exit and new ones copy pages, and the peak no
           longer depends on where the samples fell (5 rounds of the
           plain sampling read stock with its recipe at 1.17x one day
           and 1.07x the next).
  recycle  gunicorn --max-requests 1000 (+-100 jitter); steady PSS is
           the median of all samples, peak their maximum.
"""

import argparse
import dataclasses
import os
import signal
import statistics
import tempfile
import threading
import time

# common first: it puts Tools/cowstat on sys.path.
from common import MIB, ROOT, log
from cowstat import pages as cowpages
from cowstat import proc as cowproc
from deps import build_site, check_deps
from modes import MODES
from server import free_port, run_wrk, start_server, stop_server, wait_ready

RECYCLE_ARGS = ["--max-requests", "1000", "--max-requests-jitter", "100"]
SETTLE_WINDOW = 5.0


def tree_sample(master):
    """{pid: (PSS KiB, USS KiB)} of MASTER's tree, or None."""
    try:
        return {p["pid"]: (p["pss"], p["uss"])
                for p in cowproc.sample_tree(master)}
    except Exception:
        return None


def tree_unique(pids):
    """KiB of distinct physical pages mapped by PIDS (cowstat's pagemap
    reader; root only, else 0)."""
    seen = set()
    for pid in pids:
        try:
            seen |= cowpages.frames(pid)
        except OSError:
            pass
    return len(seen) * cowpages.PAGE_SIZE // 1024


def wait_stopped(pid, timeout=0.5):
    """Wait until PID is stopped (or gone: an exiting process cannot
    stop, and its memory is being released)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            state = cowproc.read_stat(pid)[1]
        except cowproc.ProcessGone:
            return
        if state in ("T", "t", "Z", "X"):
            return
        time.sleep(0.0005)


def stopped_sample(master):
    """tree_sample() and tree_unique() of MASTER's tree, taken while
    every process of it is stopped."""
    stopped = []
    try:
        os.kill(master, signal.SIGSTOP)
        stopped.append(master)
        wait_stopped(master)
        for p in cowproc.process_tree(master):
            if p["pid"] != master:
                try:
                    os.kill(p["pid"], signal.SIGSTOP)
                    stopped.append(p["pid"])
                except ProcessLookupError:
                    pass
        for pid in stopped[1:]:
            wait_stopped(pid)
        procs = tree_sample(master)
        return procs, tree_unique(procs) if procs is not None else 0
    except (ProcessLookupError, cowproc.ProcessGone,
            cowproc.CowstatError):
        return None, 0
    finally:
        for pid in reversed(stopped):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


class Sampler(threading.Thread):
    def __init__(self, master, interval, stop_samples=0, run_slice=0.02):
        super().__init__(daemon=True)
        self.master, self.interval = master, interval
        self.samples = []           # (t, tree PSS KiB, tree_sample())
        self.stop = threading.Event()
        # Back-to-back samples until then (monotonic time): old workers
        # leave a HUP within a few tenths of a second, and one sample of
        # the distinct pages takes over 100 ms.
        self.dense_until = 0.0
        # --stop-sample: once `stopping` is set, that many samples of
        # the stopped tree, RUN_SLICE s of running between them; then
        # `stopped_done` is set.
        self.stop_samples, self.run_slice = stop_samples, run_slice
        self.stopping = threading.Event()
        self.stopped_done = threading.Event()
        self.t_hup = None

    def run(self):
        while not self.stop.is_set():
            if self.stopping.is_set() and not self.stopped_done.is_set():
                # The signal from this thread, so that the first sample
                # follows it by one slice, not by a sample of the running
                # tree (over 100 ms: fast exits were missed).
                self.t_hup = time.monotonic()
                os.kill(self.master, signal.SIGHUP)
                for _ in range(self.stop_samples):
                    time.sleep(self.run_slice)
                    procs, unique = stopped_sample(self.master)
                    if procs is not None:
                        self.samples.append((
                            time.monotonic(),
                            sum(v[0] for v in procs.values()), procs,
                            unique))
                self.stopped_done.set()
                continue
            procs = tree_sample(self.master)
            if procs is not None:
                self.samples.append((time.monotonic(),
                                     sum(v[0] for v in procs.values()),
                                     procs, tree_unique(procs)))
            if time.monotonic() >= self.dense_until:
                self.stop.wait(self.interval)


def breakdown(procs, master, old):
    """PSS and USS (KiB) and process counts of PROCS by role: the master,
    workers that were there before the HUP (OLD pids) and new ones
    (anything else below the master: new workers and their children)."""
    out = {r: [0, 0.0, 0.0] for r in ("master", "old", "new")}
    for pid, (pss, uss) in procs.items():
        role = "master" if pid == master else \
            "old" if pid in old else "new"
        out[role][0] += 1
        out[role][1] += pss
        out[role][2] += uss
    return out


def fmt_breakdown(b):
    return ", ".join("%s %d: PSS %.1f USS %.1f" % (r, n, pss / MIB,
                                                  uss / MIB)
                     for r, (n, pss, uss) in b.items() if n)


def hup_when_steady(master, sampler, args, result, stop):
    """SIGHUP the master once the tree is in its steady state: its PSS
    grew by less than --settle percent over the last SETTLE_WINDOW s of
    load (workers copy inherited pages for tens of seconds before they
    have touched what the requests touch), or after --max-wait s.  Then
    stop the load 3 s later."""
    t0 = time.monotonic()
    while True:
        time.sleep(0.5)
        now = time.monotonic()
        s = sampler.samples
        # The last sample at least SETTLE_WINDOW s old (the first one
        # before that), against the newest.
        then = [x for x in s if x[0] <= now - SETTLE_WINDOW] or s[:1]
        growth = 100.0 * (s[-1][1] / then[-1][1] - 1) if then else None
        if now - t0 >= args.max_wait or (
                now - t0 >= SETTLE_WINDOW and growth is not None
                and growth < args.settle):
            break
    result["growth"] = growth if growth is not None else float("nan")
    result["after"] = now - t0
    result["t_hup"] = time.monotonic()
    if args.stop_sample:
        sampler.stopping.set()         # the sampler sends the signal
        sampler.stopped_done.wait(600)
        result["t_hup"] = sampler.t_hup
        time.sleep(0.5)
    else:
        sampler.dense_until = result["t_hup"] + 2.0
        os.kill(master, signal.SIGHUP)
        time.sleep(3)
    stop.set()


def one(python, mode, scenario, args, site, base_env):
    workdir = tempfile.mkdtemp(prefix="cowpy-reload-")
    if scenario == "recycle":
        mode = dataclasses.replace(
            mode, gunicorn_args=list(mode.gunicorn_args) + RECYCLE_ARGS)
    port = free_port()
    # No statistics files: writing them at exit walks the frozen heap
    # (app.py), which would lengthen every old worker's exit.
    proc, _, _ = start_server(python, mode, args, site, base_env, port,
                              workdir, stats=False)
    try:
        wait_ready(proc, port, args.workers, 300, workdir)
        run_wrk(port, args, 2)                      # warm-up
        sampler = Sampler(proc.pid, args.interval,
                          args.stop_samples if args.stop_sample else 0,
                          args.run_slice)
        sampler.start()
        result = {}
        duration = args.duration
        stop = None
        if scenario == "hup":
            duration = args.max_wait + 10
            stop = threading.Event()
            t = threading.Thread(target=hup_when_steady, daemon=True,
                                 args=(proc.pid, sampler, args, result,
                                       stop))
            t.start()
        w = run_wrk(port, args, duration, stop=stop)
        sampler.stop.set()
        sampler.join()
        s = sampler.samples
        extra = {}
        if scenario == "hup":
            th = result["t_hup"]
            before = [x for x in s if th - 1.0 <= x[0] < th]
            steady = statistics.median(x[1] for x in before)
            after = [x for x in s if x[0] >= th]
            peak = max(x[1] for x in after)
            # Where the peak is: the sample before the HUP closest to the
            # steady distinct pages against the sample with the most
            # distinct pages after it (the PSS sum's maximum can be an
            # artefact of its reads), by role.
            ust = statistics.median(x[3] for x in before)
            top = max(after, key=lambda x: x[3])
            st = min(before, key=lambda x: abs(x[3] - ust))
            old = set(st[2]) - {proc.pid}
            # Samples that saw old and new workers at once: a peak with
            # none may have fallen between samples.
            overlap = sum(1 for x in after
                          if set(x[2]) & old and set(x[2]) - old - {proc.pid})
            extra = {"overlap": overlap,
                     "hup_after": result["after"],
                     "growth": result["growth"],
                     "at_steady": breakdown(st[2], proc.pid, old),
                     "at_peak": breakdown(top[2], proc.pid, old),
                     "peak_after_hup": top[0] - th,
                     "unique_steady": statistics.median(
                         x[3] for x in before),
                     "unique_peak": max(x[3] for x in after)}
        else:
            steady = statistics.median(x[1] for x in s)
            peak = max(x[1] for x in s)
            extra = {"unique_steady": statistics.median(x[3] for x in s),
                     "unique_peak": max(x[3] for x in s)}
        return dict(extra, steady=steady, peak=peak, rps=w["rps"],
                    errors=w["errors"], timeouts=w["timeout"],
                    samples=len(s))
    finally:
        stop_server(proc, 30)


def median_run(rs):
    """One row from rounds RS: the median of each figure (errors and
    timeouts summed); the role breakdown of the round whose distinct
    pages peak/steady is the median one."""
    out = {}
    for k in ("steady", "peak", "rps", "unique_steady", "unique_peak"):
        out[k] = statistics.median(r[k] for r in rs)
    for k in ("errors", "timeouts"):
        out[k] = sum(r[k] for r in rs)
    mid = sorted(rs, key=lambda r: r["unique_peak"] / r["unique_steady"])[
        len(rs) // 2]
    for k in ("at_steady", "at_peak", "peak_after_hup", "hup_after",
              "growth"):
        if k in mid:
            out[k] = mid[k]
    return out


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
    ap.add_argument("--settle", type=float, default=0.5,
                    help="hup: steady once the tree's PSS grew by less "
                    "than this many percent in %d s" % SETTLE_WINDOW)
    ap.add_argument("--max-wait", type=int, default=90,
                    help="hup: SIGHUP after this many seconds of load at "
                    "the latest")
    ap.add_argument("--stop-sample", action="store_true",
                    help="hup: after the signal, sample the stopped tree "
                    "(see above)")
    ap.add_argument("--stop-samples", type=int, default=40,
                    help="with --stop-sample: how many samples")
    ap.add_argument("--run-slice", type=float, default=0.02,
                    help="with --stop-sample: seconds the tree runs "
                    "between samples")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--wrk-timeout", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--site-dir", default=os.path.join(ROOT, "build",
                                                       "prefork-site"))
    args = ap.parse_args()
    if args.stop_samples < 1 or args.run_slice <= 0:
        ap.error("--stop-samples must be positive, --run-slice above 0")
    args.attribution = False
    pythons = {"stock": os.path.abspath(args.stock),
               "cowpy": os.path.abspath(args.cowpy)}
    check_deps(False)
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith("PYTHON")}
    build_site(args.site_dir, sorted(set(pythons.values())), base_env)
    modes = {m.name: m for m in MODES}
    print("worker turnover: gunicorn --preload -w %d, app.py (%d users), "
          "wrk -c %d (hup: until the tree is steady, at most %d s; "
          "recycle: %d s); tree PSS sampled every %.0f ms"
          % (args.workers, args.users, args.connections, args.max_wait,
             args.duration, args.interval * 1000))
    if args.stop_sample:
        print("hup: after the signal, %d samples of the stopped tree, "
              "%.0f ms of running between them"
              % (args.stop_samples, args.run_slice * 1000))
    for scenario in args.scenarios.split(","):
        print("\n%s: tree PSS and distinct pages (MiB) steady and peak%s"
              % (scenario, ", medians of %d interleaved rounds"
                 % args.rounds if args.rounds > 1 else ""))
        print("  %-16s %8s %8s %7s %8s %8s %7s %9s %7s %9s"
              % ("mode", "PSS st", "peak", "peak/st", "pages st", "peak",
                 "peak/st", "req/s", "errors", "timeouts"))
        runs = {name: [] for name in args.modes.split(",")}
        for rnd in range(args.rounds):
            for name in runs:
                mode = modes[name]
                log("[%s, round %d] %s" % (scenario, rnd + 1, name))
                runs[name].append(one(pythons[mode.python], mode, scenario,
                                      args, args.site_dir, base_env))
        for name, rs in runs.items():
            r = median_run(rs)
            us, up = r["unique_steady"], r["unique_peak"]
            print("  %-16s %8.1f %8.1f %6.2fx %8.1f %8.1f %6.2fx %9.0f %7d "
                  "%9d" % (
                      name, r["steady"] / MIB, r["peak"] / MIB,
                      r["peak"] / r["steady"], us / MIB, up / MIB,
                      up / us if us else 0, r["rps"], r["errors"],
                      r["timeouts"]), flush=True)
            if len(rs) > 1:
                print("      distinct pages peak/steady by round: %s"
                      % ", ".join("%.2fx" % (x["unique_peak"]
                                             / x["unique_steady"])
                                  + (" (%d overlap samples)" % x["overlap"]
                                     if "overlap" in x else "")
                                  for x in rs))
            if "hup_after" in r:
                print("      HUP after %.0f s of load (by round: %s); the "
                      "tree's PSS grew %s %% in the %d s before it"
                      % (r["hup_after"], ", ".join(
                          "%.0f" % x["hup_after"] for x in rs),
                         ", ".join("%.2f" % x["growth"] for x in rs),
                         SETTLE_WINDOW))
            if "at_peak" in r:
                print("      steady: %s\n      distinct-pages peak (%.2f s "
                      "after the HUP): "
                      "%s" % (fmt_breakdown(r["at_steady"]),
                              r["peak_after_hup"],
                              fmt_breakdown(r["at_peak"])), flush=True)


if __name__ == "__main__":
    main()
