"""Long soak of the pre-fork benchmark server: memory stays flat, nothing crashes.

    python3 bench/prefork/soak.py PYTHON [--minutes 10] [--workers 4]
        [--max-requests 5000] [--max-requests-jitter 2000] [--hup-every 60]
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
"""

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

# The pre-fork benchmark's modules, next to this script (sys.path[0] when
# it runs as a script); importing common puts Tools/cowstat on sys.path.
from common import MIB, ROOT, Mode, log     # MIB: smaps values are kB
from cowstat import proc as cowproc
from deps import build_site, check_deps
from report import gunicorn_version, version_of
from sampling import measure_tree
from server import (free_port, run_wrk, server_env, start_server,
                    stop_server, wait_ready)

DEFAULT_ENV = {"PYTHONCOWFORK": "immortal"}
EXIT_MARGIN = 1.0          # seconds; see analyse()


# ------------------------------------------------------------------ stats
# Two-sided 95% Student t quantiles (df -> t); the largest df <= the actual
# one is used (conservative).
T975 = [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571),
        (6, 2.447), (7, 2.365), (8, 2.306), (9, 2.262), (10, 2.228),
        (12, 2.179), (15, 2.131), (20, 2.086), (25, 2.060), (30, 2.042),
        (40, 2.021), (60, 2.000), (120, 1.980)]


def t975(df):
    t = float("inf")
    for d, v in T975:
        if df >= d:
            t = v
    return t


def ols(xs, ys):
    """Least squares y = a + b x: {"slope", "intercept", "se", "ci95", "n"}
    (se and ci95 need n >= 3)."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    b = sxy / sxx
    a = my - b * mx
    out = {"slope": b, "intercept": a, "n": n, "se": None, "ci95": None}
    if n >= 3:
        rss = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
        se = math.sqrt(rss / (n - 2) / sxx)
        h = t975(n - 2) * se
        out.update(se=se, ci95=[b - h, b + h])
    return out


def within_slope(groups):
    """Pooled within-group least-squares slope (fixed effects): GROUPS is
    {key: [(x, y), ...]}; each group is centred on its own means, so the
    slope compares like with like (e.g. workers of the same age)."""
    sxx = sxy = 0.0
    n = 0
    for pts in groups.values():
        if len(pts) < 2:
            continue
        mx = statistics.fmean(p[0] for p in pts)
        my = statistics.fmean(p[1] for p in pts)
        sxx += sum((p[0] - mx) ** 2 for p in pts)
        sxy += sum((p[0] - mx) * (p[1] - my) for p in pts)
        n += len(pts)
    return {"slope": sxy / sxx, "n": n} if sxx else None


# ------------------------------------------------------------------ log
LOG_LINE = re.compile(r"^\[(?P<ts>[^\]]+)\] \[(?P<pid>\d+)\] "
                      r"\[(?P<level>[A-Z]+)\] (?P<msg>.*)$")
RE_BOOT = re.compile(r"Booting worker with pid: (\d+)")
RE_EXITING = re.compile(r"Worker exiting \(pid: (\d+)\)")
RE_AUTORESTART = re.compile(r"Autorestarting worker after current request")
# Worker deaths as gunicorn reports them (20.1 and later wordings).
RE_SIGNALED = re.compile(
    r"Worker with pid (\d+) was terminated due to signal (\d+)")
RE_CRASH = [
    RE_SIGNALED,
    re.compile(r"Worker \(pid:(\d+)\) was sent (SIG\w+|code \d+)"),
    re.compile(r"Worker \(pid:(\d+)\) exited with code (-?\d+)"),
    re.compile(r"WORKER TIMEOUT \(pid:(\d+)\)"),
]
RE_HUP = re.compile(r"Hang up: ")


class LogFollower:
    """Reads gunicorn's error log as it grows; each line is stamped with the
    soak time at which it was read (the log's own stamps have 1 s
    resolution)."""

    def __init__(self, path):
        self.path = path
        self.f = None             # kept open: still readable if unlinked
        self.buf = ""
        self.lines = []           # (t, text)

    def poll(self, t):
        if self.f is None:
            try:
                self.f = open(self.path, errors="replace")
            except OSError:
                return []
        self.buf += self.f.read()
        *complete, self.buf = self.buf.split("\n")
        new = [(t, ln) for ln in complete]
        self.lines += new
        return new


# ------------------------------------------------------------------ load
def parse_wrk_text(stdout):
    """wrk's own error lines (besides spread.lua's PREFORK_RESULT)."""
    out = {"non2xx": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0}
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", stdout)
    if m:
        out["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                  r"timeout (\d+)", stdout)
    if m:
        out.update(connect=int(m.group(1)), read=int(m.group(2)),
                   write=int(m.group(3)), timeout=int(m.group(4)))
    return out


class Load(threading.Thread):
    """wrk in consecutive chunks until END (soak time); one record each."""

    def __init__(self, port, args, clock, end):
        super().__init__(daemon=True)
        self.port, self.args, self.clock, self.end = port, args, clock, end
        self.chunks = []
        self.stop = threading.Event()

    def run(self):
        i = 0
        while not self.stop.is_set():
            left = self.end - self.clock()
            if left < 1:
                break
            secs = int(min(self.args.chunk, left))
            t = self.clock()
            wargs = argparse.Namespace(**vars(self.args))
            wargs.seed = self.args.seed + i        # new ids every chunk
            rec = {"chunk": i, "t_start": t, "seconds": secs}
            try:
                res = run_wrk(self.port, wargs, secs)
                text = parse_wrk_text(res["stdout"])
                # spread.lua's counters and wrk's printed lines: the larger
                # of the two if they ever disagree.
                non2xx = max(res["non2xx"], text["non2xx"])
                sock = {k: max(res[k], text[k])
                        for k in ("connect", "read", "write", "timeout")}
                rec.update(requests=res["requests"],
                           wrk_seconds=res["duration_us"] / 1e6,
                           non2xx=non2xx, **sock,
                           socket_errors=sum(sock.values()),
                           errors=non2xx + sum(sock.values()),
                           lat_p50_ms=res["lat_p50_us"] / 1000.0,
                           lat_p99_ms=res["lat_p99_us"] / 1000.0,
                           lat_max_ms=res["lat_max_us"] / 1000.0)
                if rec["errors"]:
                    rec["wrk_stdout"] = res["stdout"]
            except Exception as e:                 # wrk itself failed
                rec.update(requests=0, wrk_seconds=self.clock() - t,
                           non2xx=0, connect=0, read=0, write=0, timeout=0,
                           socket_errors=0, errors=1, failed=str(e))
                time.sleep(1)
            rec["t_end"] = self.clock()
            self.chunks.append(rec)
            if rec["errors"]:
                log("  [%6.1fs] wrk chunk %d: %d error(s)%s"
                    % (rec["t_end"], i, rec["errors"],
                       ": " + rec["failed"] if "failed" in rec else ""))
            i += 1


# ------------------------------------------------------------------ soak
def new_worker(pid, spawn_t=None):
    return {"pid": pid, "spawn_t": spawn_t, "first_seen": None,
            "last_seen": None}


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


def fork_mode(python, env):
    """What the interpreter's fork mode is under the server's environment."""
    r = subprocess.run(
        [python, "-c", "import gc; f = getattr(gc, 'get_fork_mode', None);"
         "print(f() if f else 'stock (no cowpy fork mode)')"],
        env=env, capture_output=True, text=True)
    return r.stdout.strip() or ("error: " + r.stderr.strip()[-200:])


def soak(args, python, env_over, workdir):
    """Run the server and the load; return the raw observations."""
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith("PYTHON")}
    gargs = ["--max-requests", str(args.max_requests),
             "--max-requests-jitter", str(args.max_requests_jitter),
             # after start_server's "--log-level warning": the last one
             # wins; info logs every boot, autorestart and exit with the
             # worker's pid.
             "--log-level", "info"]
    # K= in --env: not set (only the variables server.py's server_env sets
    # itself, PYTHONPATH, PYTHONHASHSEED, PYTHONDONTWRITEBYTECODE, are set
    # besides these).
    mode = Mode("soak", "cowpy", {k: v for k, v in env_over.items() if v},
                gargs, "soak")
    srv_env = server_env(base_env, args.site_dir, mode, args.users, workdir)
    obs = {"env": dict(sorted(mode.env.items())),
           "fork_mode": fork_mode(python, srv_env)}
    port = free_port()
    proc, cmd, _ = start_server(python, mode, args, args.site_dir,
                                base_env, port, workdir)
    obs["cmd"] = " ".join(cmd)
    logf = LogFollower(os.path.join(workdir, "gunicorn.log"))
    outf = LogFollower(os.path.join(workdir, "stdout.log"))
    outf.poll(0)
    t_boot = time.monotonic()
    try:
        health = wait_ready(proc, port, args.workers, args.startup_timeout,
                            workdir)
    except Exception:
        stop_server(proc, args.stop_timeout)
        raise
    obs["startup_s"] = time.monotonic() - t_boot
    obs["health"] = health
    t0 = time.monotonic()

    def clock():
        return time.monotonic() - t0

    duration = args.minutes * 60.0
    load = Load(port, args, clock, duration)
    samples, workers, hups = [], {}, []
    exiting = set()           # pids that logged their exit (as read)
    timeline = []             # (t, workers alive, of which not exiting)
    master_exit = None
    load.start()
    next_sample = 0.0
    next_hup = args.hup_every if args.hup_every else math.inf
    last_status = -1e9
    stopped_at = None
    try:
        while True:
            t = clock()
            for _, line in logf.poll(t):
                m = RE_BOOT.search(line)
                if m:       # a worker too short-lived for the scan below
                    workers.setdefault(int(m.group(1)), new_worker(
                        int(m.group(1)), t))
                m = LOG_LINE.match(line)
                if m and RE_AUTORESTART.search(m["msg"]):
                    exiting.add(int(m["pid"]))
                m = RE_EXITING.search(line)
                if m:
                    exiting.add(int(m.group(1)))
            if proc.poll() is not None:
                master_exit = {"t": t, "returncode": proc.returncode}
                log("  [%6.1fs] the master exited (%s)!" % (t, proc.returncode))
                break
            if t >= duration:
                break
            # Worker pids: every child of the master, now; the spawn time
            # from /proc (a worker first known from its log line gets it
            # here too).
            up = cowproc.uptime()
            kids = cowproc.child_pids(proc.pid)
            timeline.append((t, len(kids),
                             sum(1 for p in kids if p not in exiting)))
            for pid in kids:
                w = workers.get(pid)
                if w is None or "start_ticks" not in w:
                    try:
                        st = cowproc.start_ticks(pid)
                    except OSError:
                        continue
                    w = workers.setdefault(pid, new_worker(pid))
                    w.update(start_ticks=st, first_seen=t,
                             spawn_t=t - (up - st / cowproc.CLOCK_TICKS))
                w["last_seen"] = t
            if args.hup_every and t >= next_hup:
                os.kill(proc.pid, signal.SIGHUP)
                hups.append(t)
                next_hup += args.hup_every
            if t >= next_sample:
                up = cowproc.uptime()
                for p in measure_tree(proc.pid):
                    w = workers.get(p["pid"])
                    if p["role"] == "worker" and w is None:
                        continue             # seen next tick
                    age = (t - w["spawn_t"]) if w else None
                    samples.append({
                        "t": t, "pid": p["pid"], "role": p["role"],
                        "age": age, "uss": p["USS"] / MIB,
                        "pss": p.get("Pss", 0) / MIB,
                        "rss": p.get("Rss", 0) / MIB,
                        "swap": p.get("Swap", 0) / MIB})
                next_sample += args.sample_every
                while next_sample <= clock():
                    next_sample += args.sample_every
            if t - last_status >= 60:
                last_status = t
                done = sum(c["requests"] for c in load.chunks)
                errs = sum(c["errors"] for c in load.chunks)
                ws = [s for s in samples if s["role"] == "worker"
                      and s["t"] >= t - args.sample_every - 1]
                log("  [%6.1fs] %d requests, %d errors, %d worker pids "
                    "seen, %d HUP(s); worker USS now %s MiB"
                    % (t, done, errs, len(workers), len(hups),
                       ", ".join("%.1f" % s["uss"] for s in ws) or "-"))
            time.sleep(min(0.25, max(0.0, min(next_sample, next_hup)
                                    - clock())))
    finally:
        load.stop.set()
        load.join(timeout=args.chunk + 90)
        t_stop = clock()
        # Exits before this point are the soak's; later ones the shutdown's.
        logf.poll(t_stop)
        for pid in cowproc.child_pids(proc.pid):
            if pid in workers:
                workers[pid]["last_seen"] = t_stop
        stopped_at = t_stop
        killed = stop_server(proc, args.stop_timeout)
        logf.poll(clock())
        outf.poll(clock())
    obs.update(duration_s=min(stopped_at, duration) if master_exit is None
               else master_exit["t"],
               t_stop=stopped_at, killed_at_stop=killed,
               master_pid=proc.pid, master_exit=master_exit,
               samples=samples, workers=workers, hups=hups,
               chunks=load.chunks, log_lines=logf.lines,
               timeline=timeline,
               port=port)
    # Stats files (app.py, PREFORK_STATS_DIR): requests per worker at exit.
    try:
        names = os.listdir(workdir)
    except OSError as e:
        names = []
        obs["workdir_error"] = str(e)
    for f in names:
        m = re.match(r"worker-(\d+)\.json$", f)
        if m:
            try:
                with open(os.path.join(workdir, f)) as fh:
                    st = json.load(fh)
            except (OSError, ValueError):
                continue
            obs.setdefault("stats", {})[int(m.group(1))] = st
    obs["stdout"] = "\n".join(ln for _, ln in outf.lines) + outf.buf
    return obs


# ------------------------------------------------------------------ analysis
def classify(obs):
    """Merge the log into the worker table and classify every exit."""
    workers = obs["workers"]
    master = obs["master_pid"]
    t_stop = obs["t_stop"]
    log_errors = []
    in_trace = False
    handled = []              # when the master's "Hang up" lines were read
    reload_boots = []         # per "Hang up": the next booted pids, in order

    def get(pid, t=None):
        return workers.setdefault(pid, new_worker(pid, t))

    for t, line in obs["log_lines"]:
        m = LOG_LINE.match(line)
        if not m:
            # Continuation lines (tracebacks) belong to the previous entry.
            if in_trace or line.startswith("Traceback"):
                log_errors.append(line)
                in_trace = True
            continue
        in_trace = False
        pid, level, msg = int(m["pid"]), m["level"], m["msg"]
        if level in ("ERROR", "CRITICAL"):
            log_errors.append(line)
            in_trace = True
        mb = RE_BOOT.search(msg)
        if mb:
            get(int(mb.group(1)), t)["booted_logged"] = True
            if reload_boots:
                reload_boots[-1].append(int(mb.group(1)))
            continue
        if pid != master and RE_AUTORESTART.search(msg):
            get(pid)["autorestart"] = True
            get(pid).setdefault("exit_begin_t", t)
        me = RE_EXITING.search(msg)
        if me:
            w = get(int(me.group(1)))
            w["exiting_logged"] = True
            w["exit_log_t"] = t
            w.setdefault("exit_begin_t", t)
        if pid == master and RE_HUP.search(msg):
            handled.append(t)
            reload_boots.append([])
        for rx in RE_CRASH:
            mc = rx.search(msg)
            if mc:
                w = get(int(mc.group(1)))
                if rx is RE_SIGNALED and mc.group(2) == str(
                        int(signal.SIGTERM)):
                    w["sigterm_line"] = line
                    w["sigterm_t"] = t
                else:
                    w.setdefault("crash_lines", []).append(line)
    # stdout/stderr of the server: tracebacks printed outside the log.
    # (a traceback in full: its indented lines and the exception line)
    tb = False
    for ln in obs["stdout"].splitlines():
        if "Traceback" in ln or "Fatal Python error" in ln \
                or "Segmentation fault" in ln:
            log_errors.append("stdout.log: " + ln)
            tb = "Traceback" in ln
        elif tb:
            log_errors.append("stdout.log: " + ln)
            tb = ln.startswith(" ")
    # A SIGHUP counts from when the master handled it, not from when it was
    # sent: a worker the master forks between the two (it may be busy
    # forking a replacement for a recycled worker: with
    # PYTHONCOWFORK=immortal a fork takes about a second) is an old worker
    # to it, stopped by that reload.  The "Hang up" line is stamped when it
    # was read, an upper bound, which errs towards "old".
    hups = handled or obs["hups"]
    stats = obs.get("stats", {})
    for pid, w in workers.items():
        st = stats.get(pid)
        w["requests"] = st["requests"] if st else None
        # Log lines read after the final SIGTERM are stamped > t_stop.
        exit_t = w.get("exit_log_t")
        if exit_t is None and w.get("last_seen") is not None \
                and w["last_seen"] < t_stop:
            exit_t = w["last_seen"]            # gone without its log line
        w["exit_t"] = exit_t
        spawn = w.get("spawn_t")
        reload_exit = spawn is not None and exit_t is not None and any(
            spawn < h <= exit_t for h in hups)
        if w.get("sigterm_line"):
            # gunicorn 20.1 sends SIGTERM to an old worker at every turn of
            # its loop until it is reaped (reload, shutdown); one that
            # arrives after the worker's interpreter has restored the
            # default handlers at exit ends the process "due to signal 15"
            # (a false positive, fixed in gunicorn by PR #2908).  Benign
            # only if the worker had finished its exit path (its "Worker
            # exiting" line and its atexit stats file) and had been told to
            # stop (a SIGHUP or the final SIGTERM before the line).
            told = w["sigterm_t"] > t_stop or (spawn is not None and any(
                spawn < h <= w["sigterm_t"] for h in hups))
            if w.get("exiting_logged") and w["requests"] is not None \
                    and told:
                w["late_sigterm"] = True
            else:
                w.setdefault("crash_lines", []).append(w["sigterm_line"])
        if w.get("crash_lines"):
            kind = "crash"
        elif not w.get("exiting_logged"):
            kind = "crash"                     # no "Worker exiting" line
        elif exit_t > t_stop:
            kind = "crash" if obs["master_exit"] else "shutdown"
        elif w.get("autorestart"):
            kind = "recycle"
        elif reload_exit:
            kind = "reload"
        else:
            kind = "crash"                     # exited for no known reason
        w["exit"] = kind
    return {"log_errors": log_errors, "hups_handled": len(handled),
            "hups_handled_t": handled, "reload_boots": reload_boots}


def window_series(samples, args, duration):
    """Per-window statistics of steady worker samples (state "serving":
    age >= skip, not exiting)."""
    wins = []
    n = max(1, int(math.ceil(duration / args.window - 1e-9)))
    for i in range(n):
        lo, hi = i * args.window, min((i + 1) * args.window, duration)
        ws = [s for s in samples if s["role"] == "worker"
              and lo <= s["t"] < hi]
        steady = [s for s in ws if s["state"] == "serving"]
        ms = [s for s in samples if s["role"] == "master"
              and lo <= s["t"] < hi]
        row = {"window": i, "t_start": lo, "t_end": hi,
               "samples": len(ws), "steady_samples": len(steady),
               "steady_workers": len({s["pid"] for s in steady}),
               "use": "warm-up" if lo < args.warmup else
               "few samples" if len(steady) < args.min_window_samples
               else "yes"}
        if steady:
            u = [s["uss"] for s in steady]
            row.update(uss_median=statistics.median(u),
                       uss_mean=statistics.fmean(u),
                       uss_min=min(u), uss_max=max(u),
                       pss_median=statistics.median(s["pss"]
                                                    for s in steady),
                       t_mean=statistics.fmean(s["t"] for s in steady))
        if ws:
            row["uss_all_median"] = statistics.median(s["uss"] for s in ws)
        if ms:
            row["master_rss"] = statistics.median(s["rss"] for s in ms)
            row["master_uss"] = statistics.median(s["uss"] for s in ms)
        wins.append(row)
    return wins


def analyse(obs, args):
    cls = classify(obs)
    duration = obs["duration_s"]
    chunks = obs["chunks"]
    samples = obs["samples"]
    workers = obs["workers"]
    w_all = list(workers.values())
    kinds = {}
    for w in w_all:
        kinds[w["exit"]] = kinds.get(w["exit"], 0) + 1
    # (classify() set "exit" for every worker; "late_sigterm" for some)
    crashes = [w for w in w_all if w["exit"] == "crash"]
    requests = sum(c["requests"] for c in chunks)
    wrk_s = sum(c.get("wrk_seconds", 0) for c in chunks)
    err = {k: sum(c[k] for c in chunks) for k in
           ("non2xx", "connect", "read", "write", "timeout",
            "socket_errors", "errors")}
    err["wrk_failures"] = sum(1 for c in chunks if "failed" in c)
    booted = [w for w in w_all if w.get("booted_logged")]
    initial = [w for w in booted if (w.get("spawn_t") or 0) <= 0]

    # Reload latency: from each SIGHUP sent to the fork of the last of the
    # --workers new workers (gunicorn forks them one after the other, then
    # stops the old ones): the first --workers "Booting worker" lines after
    # the master's "Hang up" line, with their fork times from /proc.
    reload_s = []
    for hh, pids in zip(cls["hups_handled_t"], cls["reload_boots"]):
        sent = [h for h in obs["hups"] if h <= hh]
        times = [workers[p].get("spawn_t") for p in pids[:args.workers]]
        if sent and len(times) == args.workers and None not in times:
            reload_s.append(max(times) - sent[-1])

    # Sample states.  A worker's USS rises while it exits (the interpreter's
    # teardown writes to inherited pages: seen here, +3 to +10 MiB in its
    # last second): samples from EXIT_MARGIN seconds before its first exit
    # line ("Autorestarting ...", "Worker exiting"; stamped when read, up to
    # a tick late) on are "exiting", not steady state.
    for smp in samples:
        if smp["role"] != "worker":
            smp["state"] = smp["role"]
            continue
        w = workers.get(smp["pid"], {})
        eb = w.get("exit_begin_t")
        if eb is None and w.get("exit_t") is not None:
            eb = w["exit_t"]
        if eb is not None and smp["t"] >= eb - EXIT_MARGIN:
            smp["state"] = "exiting"
        elif smp["age"] is None or smp["age"] < args.skip:
            smp["state"] = "young"
        else:
            smp["state"] = "serving"
    # Serving capacity: how long the server had no worker that had not
    # logged its exit, and how long fewer than --workers (from the 0.25 s
    # scans of the master's children).
    no_worker, short, run_start = 0.0, 0.0, None
    longest = 0.0
    tl = obs.get("timeline", [])
    for (t, _, serving), nxt in zip(tl, tl[1:]):
        dt = nxt[0] - t
        if serving < args.workers:
            short += dt
        if serving == 0:
            no_worker += dt
            run_start = t if run_start is None else run_start
            longest = max(longest, nxt[0] - run_start)
        else:
            run_start = None
    capacity = {"no_worker_s": no_worker, "no_worker_longest_s": longest,
                "below_workers_s": short}

    wins = window_series(samples, args, duration)
    good = [w for w in wins if w["use"] == "yes"]
    trend = {"windows_used": len(good)}
    if good:
        first, last = good[0], good[-1]
        trend.update(first_window=first["window"],
                     first_median=first["uss_median"],
                     last_window=last["window"],
                     last_median=last["uss_median"],
                     last_vs_first=last["uss_median"] / first["uss_median"]
                     if first["uss_median"] else None)
    fit = ols([w["t_mean"] / 3600.0 for w in good],
              [w["uss_median"] for w in good]) if len(good) >= 2 else None
    trend["slope_mib_per_h"] = fit["slope"] if fit else None
    trend["slope_ci95"] = fit["ci95"] if fit else None
    steady = [s for s in samples if s["state"] == "serving"]
    exiting = [s for s in samples if s["state"] == "exiting"]
    raw = ols([s["t"] / 3600.0 for s in steady],
              [s["uss"] for s in steady]) if len(steady) >= 3 else None
    trend["raw_slope_mib_per_h"] = raw["slope"] if raw else None
    # Like with like: samples of the same age (args.sample_every wide age
    # bins), pooled within-bin slope.
    bins = {}
    for s in steady:
        bins.setdefault(int(s["age"] // args.sample_every), []).append(
            (s["t"] / 3600.0, s["uss"]))
    ws = within_slope(bins)
    trend["age_matched_slope_mib_per_h"] = ws["slope"] if ws else None
    # Like with like: each recycled worker's last sample (after about
    # --max-requests requests), against its exit time.
    last_sample = {}
    for s in steady:
        last_sample[s["pid"]] = s
    eol = sorted((last_sample[w["pid"]] for w in w_all
                  if w["exit"] == "recycle" and w["pid"] in last_sample),
                 key=lambda s: s["t"])
    efit = ols([s["t"] / 3600.0 for s in eol], [s["uss"] for s in eol]) \
        if len(eol) >= 3 else None
    trend["recycled_last_sample"] = {
        "workers": len(eol),
        "median": statistics.median(s["uss"] for s in eol) if eol else None,
        "slope_mib_per_h": efit["slope"] if efit else None}
    ms = [s for s in samples if s["role"] == "master"]
    mfit = ols([s["t"] / 3600.0 for s in ms], [s["rss"] for s in ms]) \
        if len(ms) >= 3 else None
    master = {"rss_first": ms[0]["rss"] if ms else None,
              "rss_last": ms[-1]["rss"] if ms else None,
              "rss_max": max((s["rss"] for s in ms), default=None),
              "rss_slope_mib_per_h": mfit["slope"] if mfit else None}
    all_w = [s for s in samples if s["role"] == "worker"]

    # The verdict.
    reasons = []
    if obs["master_exit"]:
        reasons.append("the master exited during the soak (status %s)"
                       % obs["master_exit"]["returncode"])
    if crashes:
        reasons.append("%d worker crash(es)" % len(crashes))
    if err["errors"]:
        reasons.append("%d request error(s)" % err["errors"])
    if cls["log_errors"]:
        reasons.append("%d error line(s) in the server's logs"
                       % len(cls["log_errors"]))
    if obs.get("workdir_error"):
        reasons.append("the server's log directory went away: %s"
                       % obs["workdir_error"])
    if obs["killed_at_stop"]:
        reasons.append("%d process(es) needed SIGKILL at shutdown"
                       % obs["killed_at_stop"])
    flat = None
    flat_why = []
    if len(good) < 2:
        flat_why.append("fewer than 2 windows after the warm-up with >= %d "
                        "steady samples (run longer or use a smaller "
                        "--window)" % args.min_window_samples)
        flat = False
    else:
        s, ci = trend["slope_mib_per_h"], trend["slope_ci95"]
        # The slope is "too steep" only when even the low end of its 95%
        # interval exceeds --max-slope (a short run cannot resolve
        # 1 MiB/h; a long one must).  Two windows give no interval: only
        # the growth test applies then.
        lo = ci[0] if ci else None
        slope_ok = lo is None or lo <= args.max_slope
        growth_ok = trend["last_vs_first"] is not None \
            and trend["last_vs_first"] <= 1.0 + args.max_growth
        flat = slope_ok and growth_ok
        if not slope_ok:
            flat_why.append("USS slope %.2f MiB/h (95%% CI low end %.2f) > "
                            "%.2f MiB/h" % (s, lo, args.max_slope))
        if not growth_ok:
            flat_why.append("last window median %.2f MiB is %+.1f%% of the "
                            "first (%.2f MiB), limit +%.0f%%" % (
                                trend["last_median"],
                                100 * ((trend["last_vs_first"] or 0) - 1),
                                trend["first_median"],
                                100 * args.max_growth))
    if not flat:
        reasons.append("worker USS not flat: " + "; ".join(flat_why))
    warnings = []
    if len(good) == 2:
        warnings.append("only 2 windows: no slope test, only last vs first "
                        "(run longer or use a smaller --window)")
    if not kinds.get("recycle"):
        warnings.append("no worker was recycled (lower --max-requests)")
    if args.hup_every and not kinds.get("reload"):
        warnings.append("no worker was replaced by a reload")
    if args.hup_every and cls["hups_handled"] != len(obs["hups"]):
        warnings.append("%d SIGHUP sent, %d logged as handled by the master"
                        % (len(obs["hups"]), cls["hups_handled"]))
    if any(s["swap"] > 0 for s in samples):
        warnings.append("some pages were swapped out (USS excludes swap)")
    nostats = [w["pid"] for w in w_all
               if w["exit"] in ("recycle", "reload") and w["requests"] is None]
    if nostats:
        warnings.append("%d exited worker(s) left no stats file"
                        % len(nostats))
    return {
        "verdict": "PASS" if not reasons else "FAIL",
        "reasons": reasons, "warnings": warnings, "flat": flat,
        "duration_s": duration, "requests": requests,
        "rps": requests / wrk_s if wrk_s else 0.0,
        "wrk_chunks": len(chunks),
        "errors": err,
        "lat_p99_ms_max": max((c["lat_p99_ms"] for c in chunks
                               if "lat_p99_ms" in c), default=None),
        "lat_p99_ms_median": statistics.median(
            c["lat_p99_ms"] for c in chunks if "lat_p99_ms" in c)
        if any("lat_p99_ms" in c for c in chunks) else None,
        "worker_spawns": len(booted), "initial_workers": len(initial),
        "workers_seen": len(w_all),
        "recycles": kinds.get("recycle", 0),
        "reload_exits": kinds.get("reload", 0),
        "shutdown_exits": kinds.get("shutdown", 0),
        "crashes": len(crashes),
        "late_sigterm_exits": sum(1 for w in w_all if w.get("late_sigterm")),
        "reload_spawn_s_median": statistics.median(reload_s)
        if reload_s else None,
        "reload_spawn_s_max": max(reload_s, default=None),
        "capacity": capacity,
        "reloads": len(obs["hups"]), "reloads_handled": cls["hups_handled"],
        "crash_details": [{"pid": w["pid"], "spawn_t": w.get("spawn_t"),
                           "exit_t": w.get("exit_t"),
                           "lines": w.get("crash_lines", []),
                           "exiting_logged": bool(w.get("exiting_logged"))}
                          for w in crashes],
        "log_errors": cls["log_errors"][:200],
        "killed_at_stop": obs["killed_at_stop"],
        "master_exit": obs["master_exit"],
        "samples": len(samples), "worker_samples": len(all_w),
        "steady_samples": len(steady),
        "exiting_samples": len(exiting),
        "exiting_uss_max": max((s["uss"] for s in exiting), default=None),
        "worker_uss_median": statistics.median(s["uss"] for s in steady)
        if steady else None,
        "worker_uss_max": max((s["uss"] for s in all_w), default=None),
        "worker_pss_median": statistics.median(s["pss"] for s in steady)
        if steady else None,
        "worker_requests_median": statistics.median(
            w["requests"] for w in w_all if w["requests"] is not None)
        if any(w["requests"] is not None for w in w_all) else None,
        "trend": trend, "master": master, "windows": wins,
        "flat_definition": flat_definition(args),
    }


def flat_definition(args):
    return ("worker samples with age >= %gs and not exiting (from 1 s "
            "before the worker's exit is logged), median USS per %gs window "
            "(windows after the first %gs of warm-up, with >= %d such "
            "samples); flat iff the low end of the 95%% confidence interval "
            "of the least-squares slope of the window medians over time is "
            "<= %g MiB/hour (needs 3 windows) and the last window's median "
            "is <= %g%% above the first's"
            % (args.skip, args.window, args.warmup, args.min_window_samples,
               args.max_slope, 100 * args.max_growth))


# ------------------------------------------------------------------ output
def f1(x, fmt="%.1f"):
    return "-" if x is None else fmt % x


def report_rows(r, meta):
    t = r["trend"]
    e = r["errors"]
    return [
        ("verdict", r["verdict"]),
        ("interpreter", meta["python_version"]),
        ("server environment", meta["env_str"]),
        ("fork mode (gc.get_fork_mode())", meta["fork_mode"]),
        ("workers; max-requests (+jitter); SIGHUP every",
         "%d; %d (+0..%d); %gs" % (meta["workers"], meta["max_requests"],
                                   meta["max_requests_jitter"],
                                   meta["hup_every"])),
        ("load", "wrk -c %d, %ds chunks, spread.lua over %d users"
         % (meta["connections"], meta["chunk"], meta["users"])),
        ("duration", "%.1f min" % (r["duration_s"] / 60.0)),
        ("requests served", "%d (%.0f req/s)" % (r["requests"], r["rps"])),
        ("request errors", "%d (non-2xx/3xx %d; socket: connect %d, read "
         "%d, write %d, timeout %d; wrk failures %d)"
         % (e["errors"], e["non2xx"], e["connect"], e["read"], e["write"],
            e["timeout"], e["wrk_failures"])),
        ("wrk p99 latency per chunk: median / worst", "%s / %s ms" % (
            f1(r["lat_p99_ms_median"], "%.0f"),
            f1(r["lat_p99_ms_max"], "%.0f"))),
        ("worker spawns", "%d (%d at start)" % (r["worker_spawns"],
                                                r["initial_workers"])),
        ("recycles (max-requests)", "%d" % r["recycles"]),
        ("reloads (SIGHUP sent / handled)", "%d / %d; %d workers replaced"
         % (r["reloads"], r["reloads_handled"], r["reload_exits"])),
        ("reload: SIGHUP to the last new worker's fork, median / max",
         "%s / %s s" % (f1(r["reload_spawn_s_median"], "%.2f"),
                        f1(r["reload_spawn_s_max"], "%.2f"))),
        ("time with no serving worker: total / longest; fewer than %d"
         % meta["workers"], "%.1f / %.1f s; %.1f s" % (
             r["capacity"]["no_worker_s"],
             r["capacity"]["no_worker_longest_s"],
             r["capacity"]["below_workers_s"])),
        ("worker crashes", "%d" % r["crashes"]),
        ("late-SIGTERM exits (gunicorn 20.1 false positive, not crashes)",
         "%d" % r["late_sigterm_exits"]),
        ("error lines in the server's log", "%d" % len(r["log_errors"])),
        ("worker USS median / max (steady / any)", "%s / %s MiB"
         % (f1(r["worker_uss_median"], "%.2f"), f1(r["worker_uss_max"],
                                                    "%.2f"))),
        ("worker USS max while exiting (teardown, not steady state)",
         "%s MiB" % f1(r["exiting_uss_max"], "%.2f")),
        ("worker PSS median (steady)", "%s MiB"
         % f1(r["worker_pss_median"], "%.2f")),
        ("USS slope of window medians", "%s MiB/h (95%% CI %s)" % (
            f1(t["slope_mib_per_h"], "%+.2f"),
            "%+.2f..%+.2f" % tuple(t["slope_ci95"]) if t["slope_ci95"]
            else "-")),
        ("first / last window median", "%s / %s MiB (%s)" % (
            f1(t.get("first_median"), "%.2f"),
            f1(t.get("last_median"), "%.2f"),
            "%+.1f%%" % (100 * (t["last_vs_first"] - 1))
            if t.get("last_vs_first") is not None else "-")),
        ("USS slope, age-matched / all steady samples", "%s / %s MiB/h" % (
            f1(t["age_matched_slope_mib_per_h"], "%+.2f"),
            f1(t["raw_slope_mib_per_h"], "%+.2f"))),
        ("recycled workers' last sample: median, slope", "%s MiB, %s MiB/h "
         "(%d workers)" % (f1(t["recycled_last_sample"]["median"], "%.2f"),
                           f1(t["recycled_last_sample"]["slope_mib_per_h"],
                              "%+.2f"),
                           t["recycled_last_sample"]["workers"])),
        ("master RSS first / last / max; slope", "%s / %s / %s MiB; %s MiB/h"
         % (f1(r["master"]["rss_first"]), f1(r["master"]["rss_last"]),
            f1(r["master"]["rss_max"]),
            f1(r["master"]["rss_slope_mib_per_h"], "%+.2f"))),
    ]


def window_table_rows(r):
    rows = []
    for w in r["windows"]:
        rows.append(["%d" % (w["window"] + 1),
                     "%d-%d" % (w["t_start"], w["t_end"]),
                     "%d" % w["steady_samples"], "%d" % w["steady_workers"],
                     f1(w.get("uss_median"), "%.2f"),
                     f1(w.get("uss_mean"), "%.2f"),
                     f1(w.get("uss_max"), "%.2f"),
                     f1(w.get("pss_median"), "%.2f"),
                     f1(w.get("master_rss"), "%.1f"), w["use"]])
    return rows


WINDOW_HEAD = ["window", "seconds", "samples", "workers", "USS median",
               "USS mean", "USS max", "PSS median", "master RSS", "used"]


def print_report(r, meta):
    print()
    width = max(len(k) for k, _ in report_rows(r, meta))
    for k, v in report_rows(r, meta):
        print("  %-*s  %s" % (width, k, v))
    print()
    print("worker USS per %gs window (steady samples: workers at least %gs "
          "old, not exiting; MiB):" % (meta["window"], meta["skip"]))
    rows = window_table_rows(r)
    widths = [max(len(h), *(len(x[i]) for x in rows))
              for i, h in enumerate(WINDOW_HEAD)]
    print("  " + "  ".join("%*s" % (w, h) for w, h in zip(widths, WINDOW_HEAD)))
    for x in rows:
        print("  " + "  ".join("%*s" % (w, c) for w, c in zip(widths, x)))
    print()
    print("flat: " + r["flat_definition"])
    for d in r["crash_details"]:
        print("crash: worker %d (spawned %s s, gone %s s)%s" % (
            d["pid"], f1(d["spawn_t"]), f1(d["exit_t"]),
            "" if d["exiting_logged"] else ", no 'Worker exiting' line"))
        for ln in d["lines"]:
            print("    " + ln)
    if r["log_errors"]:
        print("error lines in the server's log (first 20):")
        for ln in r["log_errors"][:20]:
            print("    " + ln)
    for w in r["warnings"]:
        print("warning: " + w)
    print("%s%s" % (r["verdict"], "" if not r["reasons"]
                    else ": " + "; ".join(r["reasons"])))


def write_md(path, r, meta):
    out = ["**Soak: %s** (%s)" % (r["verdict"], "; ".join(r["reasons"])
                                  or "no crash, no request error, worker "
                                  "USS flat"), "",
           "| figure | value |", "| --- | --- |"]
    for k, v in report_rows(r, meta)[1:]:
        out.append("| %s | %s |" % (k, v.replace("|", "\\|")))
    out += ["", "Worker USS per %g s window (steady samples: workers at "
            "least %g s old, not exiting; MiB):" % (meta["window"],
                                                    meta["skip"]), "",
            "| " + " | ".join(WINDOW_HEAD) + " |",
            "|" + " --- |" * len(WINDOW_HEAD)]
    for x in window_table_rows(r):
        out.append("| " + " | ".join(x) + " |")
    out += ["", "Flat: " + r["flat_definition"] + "."]
    for w in r["warnings"]:
        out.append("Warning: %s." % w)
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def write_csv(path, samples):
    fields = ["t_s", "pid", "role", "state", "age_s", "uss_mib", "pss_mib",
              "rss_mib", "swap_mib"]
    with open(path, "w") as f:
        f.write(",".join(fields) + "\n")
        for s in samples:
            f.write("%.2f,%d,%s,%s,%s,%.3f,%.3f,%.3f,%.3f\n" % (
                s["t"], s["pid"], s["role"], s.get("state", ""),
                "" if s["age"] is None else "%.2f" % s["age"],
                s["uss"], s["pss"], s["rss"], s["swap"]))


# ------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("python", help="interpreter to run the server (cowpy "
                    "or stock 3.13)")
    ap.add_argument("--minutes", type=float, default=10,
                    help="duration of the load")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--max-requests", type=int, default=5000,
                    help="gunicorn --max-requests: a worker is recycled "
                    "after this many requests (0: never)")
    ap.add_argument("--max-requests-jitter", type=int, default=2000,
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
