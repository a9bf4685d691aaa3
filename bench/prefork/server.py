"""One gunicorn server of the pre-fork benchmark: its environment, start,
readiness, stop (the whole process group), and its load (wrk with
spread.lua).
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time

from common import ATTRIBUTION_SIGNAL, COWSTAT, HERE, ROOT, SPREAD
from cowstat import proc as cowproc


# ------------------------------------------------------------------ server
def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, timeout=2.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def server_env(base_env, site, mode, users, stats_dir, attribution_dir=None):
    env = {k: v for k, v in base_env.items() if not k.startswith("PYTHON")}
    path = [HERE, site]
    if attribution_dir:
        path.append(COWSTAT)
        env.update(COWPY_BENCH_ATTRIBUTION_DIR=attribution_dir,
                   COWPY_BENCH_ATTRIBUTION_SIGNAL=str(int(
                       ATTRIBUTION_SIGNAL)))
    env.update(PYTHONPATH=os.pathsep.join(path),
               PYTHONHASHSEED="0",          # same dict layouts every run
               PYTHONDONTWRITEBYTECODE="1",  # bytecode is precompiled
               PREFORK_USERS=str(users),
               PREFORK_STATS_DIR=stats_dir)
    env.update(mode.env)
    return env


def uwsgi_binary(twin):
    """build/uwsgi/TWIN/uwsgi (TWIN: "stock" or "cowpy", a Mode's python):
    uWSGI embeds the interpreter it was built against (make uwsgi)."""
    return os.path.join(ROOT, "build", "uwsgi", twin, "uwsgi")


def uwsgi_version(twin):
    """The version the uWSGI binary built against TWIN reports."""
    return subprocess.run([uwsgi_binary(twin), "--version"], check=True,
                          capture_output=True, text=True).stdout.strip()


def uwsgi_command(mode, args, port, workdir):
    """uWSGI serving app:app as gunicorn does here: a master that loads
    the app before it forks args.workers workers (no lazy-apps), HTTP on
    PORT.  The embedded interpreter reads the environment (PYTHONPATH,
    PYTHONCOWFORK, ...) as python3 does."""
    binary = uwsgi_binary(mode.python)
    if not os.path.exists(binary):
        raise RuntimeError("no %s: run 'make uwsgi'" % binary)
    lines = ["[uwsgi]", "master = true", "processes = %d" % args.workers,
             "http-socket = 127.0.0.1:%d" % port, "chdir = %s" % HERE,
             "module = %s" % mode.module, "need-app = true",
             "die-on-term = true",
             "harakiri = 120", "disable-logging = true",
             # gunicorn's sync worker closes each connection and says so;
             # without the header wrk counts uWSGI's close as a read error.
             "add-header = Connection: close",
             *mode.uwsgi_ini]
    ini = os.path.join(workdir, "uwsgi.ini")
    with open(ini, "w") as f:
        f.write("\n".join(lines) + "\n")
    return [binary, "--ini", ini]


def start_server(python, mode, args, site, base_env, port, workdir,
                 stats=True):
    """Start the server; STATS: app.py writes each worker's statistics
    into WORKDIR at its exit (gc.get_freeze_count() walks the frozen
    heap there: leave them off where the exit's length is measured)."""
    if mode.server == "uwsgi":
        cmd = uwsgi_command(mode, args, port, workdir)
    else:
        cmd = [python, "-m", "gunicorn", "--preload",
               "-w", str(args.workers),
               "-b", "127.0.0.1:%d" % port, "--worker-class", "sync",
               "--chdir", HERE, "--log-level", "warning",
               "--error-logfile", os.path.join(workdir, "gunicorn.log"),
               "--timeout", "120", "--graceful-timeout", "15",
               *mode.gunicorn_args, "app:app"]
    env = server_env(base_env, site, mode, args.users,
                     workdir if stats else "",
                     workdir if args.attribution else None)
    out = open(os.path.join(workdir, "stdout.log"), "wb")
    proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    out.close()
    return proc, cmd, env


def log_tail(workdir, n=30):
    lines = []
    for name in ("stdout.log", "gunicorn.log"):
        try:
            with open(os.path.join(workdir, name), errors="replace") as f:
                lines += f.read().splitlines()[-n:]
        except OSError:
            pass
    return "\n".join(lines)


def wait_ready(proc, port, workers, timeout, workdir):
    deadline = time.monotonic() + timeout
    health = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited with %s during start-up:\n%s"
                               % (proc.returncode, log_tail(workdir)))
        if health is None:
            try:
                status, body = http_get(port, "/health")
                if status == 200:
                    health = json.loads(body)
            except (OSError, http.client.HTTPException, ValueError):
                pass
        if health is not None and \
                len(cowproc.table_children(cowproc.proc_table(),
                                           proc.pid)) >= workers:
            return health
        time.sleep(0.1)
    raise RuntimeError("server not ready after %ss:\n%s"
                       % (timeout, log_tail(workdir)))


def stop_server(proc, grace):
    """SIGTERM the master, wait; SIGKILL the group on timeout or leftovers.

    Returns the number of processes that had to be killed."""
    pgid = proc.pid                    # start_new_session: pgid == pid
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # The master reaps its workers before it exits; allow 1 s for stragglers.
    deadline = time.monotonic() + 1.0
    while cowproc.group_members(pgid) and proc.poll() is not None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = len(cowproc.group_members(pgid))
    for _ in range(20):
        if not cowproc.group_members(pgid):
            break
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.1)
    if cowproc.group_members(pgid):
        raise RuntimeError("processes of group %d survived SIGKILL: %s"
                           % (pgid, cowproc.group_members(pgid)))
    return killed


# ------------------------------------------------------------------ wrk
def run_wrk(port, args, duration, budget=0, stop=None):
    """wrk on app.py for DURATION s (less if the BUDGET of requests is
    served first, or once the threading.Event STOP is set)."""
    threads = min(2, args.connections)
    per_thread = -(-budget // threads) if budget else 0
    cmd = ["wrk", "-t", str(threads), "-c", str(args.connections),
           "-d", "%ds" % duration, "--timeout", "%ds" % args.wrk_timeout,
           "--latency", "-s", SPREAD,
           "http://127.0.0.1:%d" % port, "--", str(args.users),
           str(args.seed), str(per_thread)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(duration + 60, proc.kill)
    watchdog.start()
    if stop is not None:
        def interrupt():
            if stop.wait(duration + 60) and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        threading.Thread(target=interrupt, daemon=True).start()
    lines, done = [], 0
    try:
        # With a budget, each wrk thread prints PREFORK_THREAD_DONE when it
        # has served its share; wrk itself would sleep out --duration, so
        # SIGINT it then (it stops and reports the time actually spent).
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("PREFORK_THREAD_DONE"):
                done += 1
                if done == threads:
                    proc.send_signal(signal.SIGINT)
        stderr = proc.stderr.read()
        proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout = "".join(lines)
    if proc.returncode != 0:
        raise RuntimeError("wrk failed (%d): %s" % (proc.returncode, stderr))
    res = None
    for line in stdout.splitlines():
        if line.startswith("PREFORK_RESULT "):
            res = json.loads(line[len("PREFORK_RESULT "):])
    if res is None:
        raise RuntimeError("no PREFORK_RESULT in wrk output:\n" + stdout)
    secs = res["duration_us"] / 1e6
    res["rps"] = res["requests"] / secs if secs else 0.0
    for line in stdout.splitlines():          # cross-check wrk's own figure
        if line.startswith("Requests/sec:"):
            res["wrk_rps"] = float(line.split()[1])
    res["socket_errors"] = res["connect"] + res["read"] + res["write"] + \
        res["timeout"]
    res["non2xx"] = res["status"]
    res["errors"] = res["socket_errors"] + res["non2xx"]
    res["stdout"] = stdout
    res["budget_reached"] = bool(budget) and done == threads
    return res
