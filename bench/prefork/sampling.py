"""What the pre-fork benchmark reads from a running server: the memory,
CPU time and faults of every process of its tree (cowstat's /proc
reader), `cowstat watch` over time, and the workers' attribution reports.
"""

import json
import os
import subprocess
import sys
import time

from common import ATTRIBUTION_SIGNAL, COWSTAT, log
from cowstat import proc as cowproc


# ------------------------------------------------------------------ /proc
def measure_tree(master):
    """Every process of the tree below MASTER: role, pid, smaps (kB)."""
    table = cowproc.proc_table()
    procs = [("master", master)]
    todo = [master]
    while todo:
        p = todo.pop()
        for c in cowproc.table_children(table, p):
            procs.append(("worker" if p == master else "other", c))
            todo.append(c)
    out = []
    for role, pid in procs:
        try:
            sm = cowproc.read_rollup(pid)        # with USS
            st = cowproc.read_cpu_faults(pid)
        except OSError:
            continue
        out.append({"role": role, "pid": pid, **sm, **st})
    return out


# ------------------------------------------------------------------ watch
def watch_csv(args, mode_name):
    return os.path.join(args.csv_dir, "prefork_watch_%s.csv"
                        % mode_name.replace("+", "_"))


def start_watch(master, mode, args, result):
    """`cowstat watch` on the server's tree from boot to the end of the
    load (the last round's samples are kept), for `cowstat plot`."""
    if not args.watch:
        return None
    path = watch_csv(args, mode.name)
    if os.path.exists(path):
        os.unlink(path)                 # cowstat watch appends
    env = dict(os.environ, PYTHONPATH=COWSTAT)
    result["watch_csv"] = path
    return subprocess.Popen(
        [sys.executable, "-m", "cowstat", "watch", str(master),
         "--interval", str(args.watch_interval), "--csv", path, "--quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_watch(watcher):
    if watcher is None:
        return
    watcher.terminate()             # cowstat finishes the row it writes
    try:
        watcher.wait(10)
    except subprocess.TimeoutExpired:
        watcher.kill()
        watcher.wait()


# ------------------------------------------------------------------ attribution
def collect_attribution(pids, workdir, timeout, mode_name):
    """Send ATTRIBUTION_SIGNAL to every worker at once and wait up to
    TIMEOUT seconds for their reports (app.py writes
    attribution-PID.json, then attribution-PID.meta.json last).

    Returns {"reports": [...], "missing": [pids], "seconds": s}; a report
    is {"pid", "header", "rows", "meta"} or {"pid", "error"}."""
    t0 = time.monotonic()
    pending = set()
    for pid in pids:
        try:
            os.kill(pid, ATTRIBUTION_SIGNAL)
            pending.add(pid)
        except ProcessLookupError:
            log("warning: %s: worker %d exited before the attribution "
                "signal" % (mode_name, pid))
    reports = []
    deadline = t0 + timeout
    while pending and time.monotonic() < deadline:
        time.sleep(0.2)
        for pid in sorted(pending):
            base = os.path.join(workdir, "attribution-%d" % pid)
            if not os.path.exists(base + ".meta.json"):
                continue
            pending.discard(pid)
            rep = {"pid": pid}
            text = None
            try:
                with open(base + ".meta.json") as f:
                    rep["meta"] = json.load(f)
                with open(base + ".json") as f:
                    text = f.read()
                data = json.loads(text)
                rep["header"], rep["rows"] = data["header"], data["rows"]
                rep["regions"] = data.get("regions") or []
                rep["written"] = data.get("written") or []
            except (OSError, ValueError, KeyError) as e:
                # cowstat writes its failure message as text into the file.
                rep["error"] = (text or repr(e)).strip()
                log("warning: %s: worker %d attribution failed: %s"
                    % (mode_name, pid, rep["error"]))
            reports.append(rep)
    seconds = time.monotonic() - t0
    if pending:
        log("warning: %s: no attribution report from worker(s) %s after "
            "%.0f s" % (mode_name, sorted(pending), timeout))
    log("  attribution: %d report(s) in %.1f s" % (
        sum(1 for r in reports if "rows" in r), seconds))
    return {"reports": reports, "missing": sorted(pending),
            "seconds": seconds}
