"""The soak's run (bench/prefork/soak.py): one server under wrk load in
chunks, SIGHUPs to its master, the worker table from /proc and the log,
memory samples of the tree; soak() returns the raw observations.
"""

import argparse
import json
import math
import os
import re
import signal
import subprocess
import threading
import time

# The pre-fork benchmark's modules, next to this one (sys.path[0] when
# soak.py runs as a script); importing common puts Tools/cowstat on sys.path.
from common import MIB, Mode, log     # MIB: smaps values are kB
from cowstat import proc as cowproc
from sampling import measure_tree
from server import (free_port, run_wrk, server_env, start_server,
                    stop_server, wait_ready)
from soak_log import (LOG_LINE, RE_AUTORESTART, RE_BOOT, RE_EXITING,
                      LogFollower, new_worker)


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
