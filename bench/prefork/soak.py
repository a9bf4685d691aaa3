"""Long soak of the pre-fork benchmark server: memory stays flat, nothing crashes.

    python3 bench/prefork/soak.py PYTHON [--minutes 10] [--workers 4]
        [--max-requests 20000] [--max-requests-jitter 8000] [--hup-every 60]
        [--sample-every 5] [--env K=V ...] [--csv FILE] [--json FILE]
        [--md FILE]                         # --help for the rest

One gunicorn server (bench/prefork/app.py, the server of run.py, started
with run.py's helpers in deps.py and server.py: same site directory,
environment and command line)
with worker recycling (--max-requests, --max-requests-jitter) under
continuous wrk load (spread.lua, in --chunk second runs so that errors are
counted per chunk), SIGHUP to the master every --hup-every seconds (gunicorn
then forks a new set of workers and stops the old ones gracefully), and
every --sample-every seconds the USS/PSS/RSS of every process of the tree
(/proc/PID/smaps_rollup).  On cowpy the server runs with
PYTHONCOWFORK=immortal by default, the mode cowpy ships for pre-fork servers
(on stock with nothing extra); --env K=V sets a server variable, K= drops a
default.

Every worker exit is classified from gunicorn's log (read at --log-level
info) and /proc: "recycle" (the worker logged "Autorestarting worker after
current request." and "Worker exiting"), "reload" (spawned before a SIGHUP,
exited after it, logged "Worker exiting"), "shutdown" (after the final
SIGTERM), else "crash" (also: "terminated due to signal", "was sent SIG",
"exited with code", "WORKER TIMEOUT", or no "Worker exiting" line).  The
one exception, gunicorn 20.1's "terminated due to signal 15" after a
completed exit (a repeated SIGTERM; see classify()), is counted apart.

Worker USS trend ("flat", see README.md): worker samples in steady state
(age >= --skip seconds, default 10: a fresh worker's USS grows as it serves
its first requests; and not exiting: teardown copies pages) are grouped in
--window second windows (default 60); the verdict uses the median USS per
window, after the first --warmup seconds (default one window).  FAIL if any crash, request error (non-2xx/3xx or socket error),
error line or traceback in the server's log, unclean shutdown or non-flat
trend; exit status 1 then.

The soak's parts, next to this script: soak_run.py (the server, the load,
the sampling and the reloads: the raw observations), soak_log.py
(gunicorn's log: reading it, classifying every worker exit),
soak_analysis.py (sample states, windows, trend, the verdict) and
soak_report.py (the printed report, --md and --csv).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

# The pre-fork benchmark's modules, next to this one (sys.path[0] when
# soak.py runs as a script); importing common puts Tools/cowstat on sys.path.
from common import ROOT, log
from deps import build_site, check_deps
from report import gunicorn_version, version_of
from soak_analysis import analyse
from soak_report import print_report, write_csv, write_md
from soak_run import soak

DEFAULT_ENV = {"PYTHONCOWFORK": "immortal"}


def wait_for_python(python, timeout=300):
    """The interpreter may be briefly missing while it is being
    reinstalled: wait until it runs."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return version_of(python)
        except (OSError, subprocess.CalledProcessError):
            if time.monotonic() > deadline:
                raise
            log("waiting for %s (missing or not runnable)" % python)
            time.sleep(5)


# ------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("python", help="interpreter to run the server (cowpy "
                    "or stock 3.13)")
    ap.add_argument("--minutes", type=float, default=10,
                    help="duration of the load")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--max-requests", type=int, default=20000,
                    help="gunicorn --max-requests: a worker is recycled "
                    "after this many requests (0: never)")
    ap.add_argument("--max-requests-jitter", type=int, default=8000,
                    help="gunicorn --max-requests-jitter")
    ap.add_argument("--hup-every", type=float, default=60,
                    help="seconds between SIGHUPs to the master (0: none)")
    ap.add_argument("--sample-every", type=float, default=5,
                    help="seconds between memory samples of the tree")
    ap.add_argument("--env", action="append", default=[], metavar="K=V",
                    help="server environment variable (repeatable; K= "
                    "drops a default); default on cowpy: "
                    "PYTHONCOWFORK=immortal, on stock: none")
    ap.add_argument("--connections", type=int, default=4,
                    help="wrk connections (2 threads)")
    ap.add_argument("--chunk", type=int, default=30,
                    help="seconds per wrk run (errors are counted per run)")
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1,
                    help="wrk's seed for the first chunk (+1 per chunk)")
    ap.add_argument("--wrk-timeout", type=int, default=10,
                    help="wrk --timeout, seconds")
    ap.add_argument("--skip", type=float, default=10,
                    help="steady state: ignore each worker's first SKIP "
                    "seconds")
    ap.add_argument("--window", type=float, default=None,
                    help="seconds per USS window (default 60, or a sixth "
                    "of the run if it is shorter than 6 minutes)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds at the start left out of the trend "
                    "(default: one window)")
    ap.add_argument("--min-window-samples", type=int, default=3,
                    help="windows with fewer steady samples are not used")
    ap.add_argument("--max-slope", type=float, default=1.0,
                    help="flat: MiB/hour (see the flat definition)")
    ap.add_argument("--max-growth", type=float, default=0.10,
                    help="flat: last window median at most this fraction "
                    "above the first")
    ap.add_argument("--csv", help="write the samples here")
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument("--md", help="write a markdown fragment here")
    ap.add_argument("--site-dir", default=os.path.join(ROOT, "build",
                                                       "prefork-site"))
    ap.add_argument("--startup-timeout", type=float, default=300)
    ap.add_argument("--stop-timeout", type=float, default=30)
    ap.add_argument("--install-deps", action="store_true")
    ap.add_argument("--log-dir", default=os.path.join(ROOT, "build",
                                                      "prefork-soak"),
                    help="parent of the server's log directory")
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep the server's log directory (always kept on "
                    "FAIL)")
    args = ap.parse_args()
    if args.minutes <= 0 or args.workers < 1 or args.sample_every <= 0 \
            or args.connections < 1 or args.chunk < 1 \
            or (args.window is not None and args.window <= 0) \
            or args.max_requests < 0 or args.max_requests_jitter < 0 \
            or args.hup_every < 0 or args.skip < 0 \
            or (args.warmup is not None and args.warmup < 0):
        ap.error("bad value: --minutes, --sample-every, --window > 0; "
                 "--workers, --connections, --chunk >= 1; the rest >= 0")
    python = os.path.abspath(args.python)
    version = wait_for_python(python)
    is_cowpy = subprocess.run(
        [python, "-c", "import gc, sys; sys.exit(not hasattr(gc, "
         "'get_fork_mode'))"]).returncode == 0
    # The default (PYTHONCOWFORK=immortal) is cowpy's; stock gets none.
    env_over = dict(DEFAULT_ENV) if is_cowpy else {}
    if args.window is None:
        args.window = min(60.0, args.minutes * 10.0)
    if args.warmup is None:
        args.warmup = args.window
    for kv in args.env:
        if "=" not in kv:
            ap.error("--env wants K=V, not %r" % kv)
        k, v = kv.split("=", 1)
        env_over[k] = v
    args.attribution = False          # server.start_server's switch: off here

    check_deps(args.install_deps)
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith("PYTHON")}
    build_site(args.site_dir, [python], base_env)
    # The server's log directory: under build/ by default, not /tmp (a
    # /tmp cleaner that removes it makes gunicorn's master exit at the next
    # SIGHUP, when it reopens its log file).
    os.makedirs(args.log_dir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="soak-", dir=args.log_dir)
    env_str = " ".join("%s=%s" % kv for kv in sorted(env_over.items())
                       if kv[1]) or "(none)"
    print("soak: gunicorn %s (sync) --preload -w %d --max-requests %d "
          "--max-requests-jitter %d, SIGHUP every %gs, %g min under wrk -c "
          "%d (%ds chunks), samples every %gs" % (
              gunicorn_version(), args.workers, args.max_requests,
              args.max_requests_jitter, args.hup_every, args.minutes,
              args.connections, args.chunk, args.sample_every))
    print("  %s (%s), %s" % (python, version, env_str))
    print("  kernel %s, %d CPUs, load average %.2f at start; logs %s"
          % (os.uname().release, os.cpu_count() or 0, os.getloadavg()[0],
             workdir))
    sys.stdout.flush()
    obs = soak(args, python, env_over, workdir)
    r = analyse(obs, args)
    meta = {"python": python, "python_version": version,
            "env": obs["env"], "env_str": env_str,
            "fork_mode": obs["fork_mode"], "cmd": obs["cmd"],
            "workers": args.workers, "max_requests": args.max_requests,
            "max_requests_jitter": args.max_requests_jitter,
            "hup_every": args.hup_every, "sample_every": args.sample_every,
            "connections": args.connections, "chunk": args.chunk,
            "users": args.users, "skip": args.skip, "window": args.window,
            "warmup": args.warmup,
            "max_slope": args.max_slope, "max_growth": args.max_growth,
            "minutes": args.minutes, "startup_s": obs["startup_s"],
            "gunicorn": gunicorn_version(),
            "kernel": os.uname().release, "cpus": os.cpu_count(),
            "loadavg_end": os.getloadavg()[0]}
    print_report(r, meta)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)),
                    exist_ok=True)
        per_worker = sorted(
            ({k: w.get(k) for k in ("pid", "spawn_t", "exit_t", "exit",
                                    "requests")}
             for w in obs["workers"].values()),
            key=lambda w: (w["spawn_t"] is None, w["spawn_t"] or 0))
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "summary": r,
                       "wrk_chunks": [{k: v for k, v in c.items()
                                       if k != "wrk_stdout"}
                                      for c in obs["chunks"]],
                       "hup_times_s": obs["hups"],
                       "workers": per_worker}, f, indent=1)
    if args.md:
        os.makedirs(os.path.dirname(os.path.abspath(args.md)), exist_ok=True)
        write_md(args.md, r, meta)
    if args.csv:
        os.makedirs(os.path.dirname(os.path.abspath(args.csv)),
                    exist_ok=True)
        write_csv(args.csv, obs["samples"])
    for c in obs["chunks"]:
        if c.get("wrk_stdout"):
            log("wrk output of chunk %d:\n%s" % (c["chunk"], c["wrk_stdout"]))
    if r["verdict"] == "PASS" and not args.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
    elif os.path.isdir(workdir):
        print("server logs kept: %s" % workdir)
    return 0 if r["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
