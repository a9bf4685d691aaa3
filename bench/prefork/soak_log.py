"""The soak's reading of gunicorn's error log (bench/prefork/soak.py):
its line formats, a follower that reads it as it grows, the worker table's
records, and classify(), which merges the log into the worker table and
classifies every worker exit (recycle, reload, shutdown, crash).
"""

import re
import signal


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


def new_worker(pid, spawn_t=None):
    return {"pid": pid, "spawn_t": spawn_t, "first_seen": None,
            "last_seen": None}


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
