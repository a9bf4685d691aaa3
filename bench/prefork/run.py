"""A real pre-fork server benchmark: gunicorn + Flask under wrk, stock vs cowpy.

    python3 bench/prefork/run.py STOCK COWPY [--workers 4] [--duration 20]
        [--connections 8] [--users 20000] [--requests N] [--rounds 1]
        [--csv-dir DIR] [--modes stock,stock+hooks,cowpy,cowpy-nofreeze]
        [--baseline NAME] [--keep-logs] [--no-attribution]

For each mode, in one run, a fresh server:

    PYTHON -m gunicorn --preload -w N -b 127.0.0.1:PORT [mode args] app:app

(bench/prefork/app.py: a Flask app that builds a large read-mostly object
graph at import).  The runner waits for /health and for N workers, measures
the process tree once ("boot"), warms up for --warmup seconds with wrk,
runs wrk (-t 2, --connections, --duration, bench/prefork/spread.lua: ids
spread over the whole data set), then at once reads /proc/PID/smaps_rollup
of every process of the tree ("loaded"), SIGTERMs the master and makes sure
the whole process group is gone.

Printed: one table (modes as rows; worker USS = Private_Clean +
Private_Dirty, worker PSS, master RSS, total PSS of the tree, requests/s,
errors, ratios against the baseline mode, stock+hooks by default), and one
table of collector activity in the workers.  CSV: DIR/prefork_modes.csv
(one row per mode and round) and DIR/prefork_procs.csv (one row per process
and phase).  See bench/prefork/README.md.

Attribution (on by default, --no-attribution to skip): the servers run
with Tools/cowstat on PYTHONPATH and COWPY_BENCH_ATTRIBUTION_DIR set, so
app.py installs cowstat's attribution handler (ATTRIBUTION_SIGNAL).  After
the "loaded" measurement, every worker gets the signal and writes which
object types sit on the pages it copied from the master; the runner waits
(--attribution-timeout) and prints, per mode, the top rows averaged over the
workers, the copied pages by region (pymalloc arenas, heap, ...) and the
bytes changed since the fork by type, and writes
DIR/prefork_attribution.csv, prefork_attribution_regions.csv and
prefork_attribution_written.csv.

Dependencies come from Debian only (bench/prefork/debian-packages.txt:
gunicorn, python3-flask, wrk).  Debian's pure-Python packages target its
python3.11; this script copies exactly the ones the server needs from
/usr/lib/python3/dist-packages into a private directory (--site-dir,
default build/prefork-site), discovering extra dependencies by importing
under each 3.13 interpreter, and puts only that directory (plus this one)
on the servers' PYTHONPATH.  Only the stdlib is used here, and nothing
cowpy-specific is needed to run the stock modes.
"""

import argparse
import csv
import dataclasses
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
COWSTAT = os.path.join(ROOT, "Tools", "cowstat")
# The signal that makes a worker write its attribution report.  gunicorn
# 20.1 takes HUP QUIT INT TERM TTIN TTOU USR1 USR2 WINCH in the master
# (USR2: re-exec) and resets ABRT HUP QUIT INT TERM USR1 USR2 WINCH CHLD to
# SIG_DFL in every worker before installing its own handlers (so a USR2
# handler inherited from the master is gone, and USR2 kills the worker).
# SIGPWR is in neither list: the handler app.py installs in the master at
# import is inherited by the workers and stays.
ATTRIBUTION_SIGNAL = getattr(signal, "SIGPWR", None) or signal.SIGRTMIN + 5
DIST = "/usr/lib/python3/dist-packages"
FREEZE_HOOKS = os.path.join(HERE, "freeze_hooks.py")
SPREAD = os.path.join(HERE, "spread.lua")
DEB_LIST = os.path.join(HERE, "debian-packages.txt")
MIB = 1024.0  # smaps values are in kB (KiB)

# What the servers import from Debian's dist-packages.  Their further
# pure-Python dependencies are found by importing (build_site()).
REQUIRED = ["flask", "werkzeug", "jinja2", "markupsafe", "itsdangerous",
            "click", "blinker", "gunicorn"]
# Imports a gunicorn sync-worker server running app.py performs.
IMPORT_PROBE = ("flask", "werkzeug.serving", "jinja2", "markupsafe",
                "itsdangerous", "click", "blinker", "gunicorn.app.wsgiapp",
                "gunicorn.arbiter", "gunicorn.workers.sync",
                "gunicorn.glogging", "gunicorn.http.wsgi")


# ------------------------------------------------------------------ modes
@dataclasses.dataclass
class Mode:
    name: str
    python: str            # "stock" or "cowpy": which interpreter argument
    env: dict              # added to the servers' environment
    gunicorn_args: list    # extra gunicorn arguments (before app:app)
    desc: str


REFORK_ENV = {"PREFORK_FORK_EVERY": "20"}
REFORK_ARGS = ["--max-requests", "1500", "--max-requests-jitter", "100"]

# Add a mode here to run it (--modes NAME selects it).
MODES = [
    Mode("stock", "stock", {}, [],
         "stock, no application change"),
    Mode("stock+hooks", "stock", {}, ["-c", FREEZE_HOOKS],
         "stock + freeze_hooks.py (gc.disable at import, gc.freeze in "
         "pre_fork, gc.enable in post_fork)"),
    Mode("cowpy", "cowpy", {}, [],
         "cowpy defaults (freeze at fork), no application change"),
    Mode("cowpy-nofreeze", "cowpy", {"PYTHONCOWFORK": "off"}, [],
         "cowpy with PYTHONCOWFORK=off (its collector, no freeze at fork)"),
    # Not run by default:
    Mode("cowpy+hooks", "cowpy", {}, ["-c", FREEZE_HOOKS],
         "cowpy + the stock freeze hooks"),
    Mode("cowpy-stockgc", "cowpy", {"PYTHONCOWGC": "stock"}, [],
         "cowpy with PYTHONCOWGC=stock (should behave as stock)"),
    Mode("cowpy-immortal", "cowpy", {"PYTHONCOWFORK": "immortal"}, [],
         "cowpy with PYTHONCOWFORK=immortal (collect, freeze and make the "
         "inherited heap immortal at fork)"),
    Mode("cowpy-immortal-noaside", "cowpy",
         {"PYTHONCOWFORK": "immortal", "PYTHONCOWALLOC": "stock"}, [],
         "cowpy-immortal with PYTHONCOWALLOC=stock: workers refill the "
         "master's pymalloc holes, as before the allocator set-aside"),
    # A worker's whole life (#18): recycled after 1,500 (+-100) requests,
    # and forking a short-lived child every 20th request while it holds
    # request data.  Run with --watch for memory over time.
    Mode("stock+hooks-refork", "stock", dict(REFORK_ENV),
         ["-c", FREEZE_HOOKS] + REFORK_ARGS,
         "stock + freeze_hooks.py, workers recycled and forking per job"),
    Mode("cowpy-refork", "cowpy", dict(REFORK_ENV), list(REFORK_ARGS),
         "cowpy defaults, workers recycled and forking per job"),
    Mode("cowpy-immortal-refork", "cowpy",
         dict(REFORK_ENV, PYTHONCOWFORK="immortal"), list(REFORK_ARGS),
         "cowpy-immortal, workers recycled and forking per job"),
    Mode("cowpy-arena-nofreeze", "cowpy",
         {"PYTHONCOWGC": "arena", "PYTHONCOWFORK": "off"}, [],
         "cowpy, every collection via the side arena (a test mode), no "
         "freeze at fork"),
]
DEFAULT_MODES = "stock,stock+hooks,cowpy,cowpy-nofreeze"
DEFAULT_BASELINE = "stock+hooks"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ deps
def debian_packages():
    with open(DEB_LIST) as f:
        return [ln.strip() for ln in f if ln.strip() and ln[0] != "#"]


def check_deps(install):
    missing = [p for p in REQUIRED if not os.path.exists(os.path.join(DIST, p))]
    if shutil.which("wrk") is None:
        missing.append("wrk")
    if not missing:
        return
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends",
           *debian_packages()]
    if install and os.geteuid() == 0:
        log("installing Debian packages:", " ".join(cmd))
        subprocess.run(["apt-get", "update", "-q"], check=True)
        subprocess.run(cmd, check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        return check_deps(False)
    sys.exit("missing: %s\ninstall them (Debian) with:\n  apt-get update && %s"
             "\n(or run this script with --install-deps as root)"
             % (", ".join(missing), " ".join(cmd)))


# ------------------------------------------------------------------ site
def _tree_stamp(path):
    """Cheap identity of a source tree: file count, bytes, newest mtime."""
    n = size = newest = 0
    if os.path.isfile(path):
        st = os.stat(path)
        return [1, st.st_size, int(st.st_mtime)]
    for d, dirs, files in os.walk(path):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        for f in files:
            st = os.stat(os.path.join(d, f))
            n += 1
            size += st.st_size
            newest = max(newest, int(st.st_mtime))
    return [n, size, newest]


def _dist_entry(name):
    for cand in (name, name + ".py"):
        p = os.path.join(DIST, cand)
        if os.path.exists(p):
            return cand
    return None


PROBE = r'''
import importlib, json, sys
site = sys.argv[1]
out = {"missing": None, "error": None, "files": {}, "ext_in_site": []}
try:
    for name in sys.argv[2:]:
        importlib.import_module(name)
except ModuleNotFoundError as e:
    out["missing"] = (e.name or "").split(".")[0]
    out["error"] = repr(e)
except Exception as e:
    out["error"] = repr(e)
for name, m in list(sys.modules.items()):
    f = getattr(m, "__file__", None) or ""
    if "." not in name:
        out["files"][name] = f
    if f.startswith(site) and not f.endswith(".py"):
        out["ext_in_site"].append(name)
if out["error"] is None:
    import markupsafe
    out["markupsafe_escape"] = markupsafe.escape.__module__
    out["markupsafe_speedups_loaded"] = "markupsafe._speedups" in sys.modules
print(json.dumps(out))
'''


def _probe(python, site, env):
    r = subprocess.run([python, "-s", "-c", PROBE, site, *IMPORT_PROBE],
                       env=env, cwd=site, capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0:
        sys.exit("import probe failed under %s:\n%s" % (python, r.stderr))
    return json.loads(r.stdout.strip().splitlines()[-1])


def build_site(site, pythons, base_env):
    """Copy the needed Debian packages into SITE; verify under each python.

    Copies (not symlinks), so that 3.13 never writes its bytecode next to
    Debian's 3.11 files.  Debian's compiled 3.11 speedups are copied as they
    are: their cpython-311 suffix is not importable by 3.13, and the probe
    checks that no extension module is loaded from SITE at all.
    """
    os.makedirs(site, exist_ok=True)
    manifest_path = os.path.join(site, "MANIFEST.json")
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        manifest = {}
    entries = dict(manifest.get("entries", {}))
    wanted = list(dict.fromkeys(REQUIRED + manifest.get("extra", [])))
    extra = [p for p in wanted if p not in REQUIRED]
    env = dict(base_env, PYTHONPATH=site)
    changed = False
    for _ in range(50):
        for name in wanted:
            entry = _dist_entry(name)
            if entry is None:
                sys.exit("%s not found in %s" % (name, DIST))
            src, dst = os.path.join(DIST, entry), os.path.join(site, entry)
            stamp = _tree_stamp(src)
            if entries.get(entry) == stamp and os.path.exists(dst):
                continue
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            elif os.path.exists(dst):
                os.remove(dst)
            if os.path.isdir(src):
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
                    "__pycache__"))
            else:
                shutil.copy2(src, dst)
            entries[entry] = stamp
            changed = True
        results = {}
        missing = None
        for py in pythons:
            res = _probe(py, site, env)
            results[py] = res
            if res["missing"]:
                missing = res["missing"]
                break
            if res["error"]:
                sys.exit("importing %s under %s failed: %s"
                         % (", ".join(IMPORT_PROBE), py, res["error"]))
        if missing is None:
            break
        if _dist_entry(missing) is None:
            sys.exit("%s needs %r, which is not in %s (a stdlib module "
                     "removed in 3.13?)" % (pythons, missing, DIST))
        log("prefork-site: adding %s (imported by the server)" % missing)
        wanted.append(missing)
        extra.append(missing)
    else:
        sys.exit("prefork-site: dependency discovery did not converge")
    for py, res in results.items():
        outside = [n for n in wanted if not res["files"].get(n, "")
                   .startswith(site)]
        if outside:
            sys.exit("under %s, %s not imported from %s: %s"
                     % (py, outside, site,
                        {n: res["files"].get(n) for n in outside}))
        if res["ext_in_site"] or res["markupsafe_speedups_loaded"] \
                or res["markupsafe_escape"] != "markupsafe._native":
            sys.exit("under %s a compiled extension from %s was loaded: %s"
                     % (py, site, res))
    if changed or manifest.get("extra") != extra:
        # Bytecode once for both interpreters (same cache tag and magic
        # number; checked), so the servers never compile at start-up.
        magics = {subprocess.run(
            [py, "-c", "import importlib.util,sys;"
             "print(importlib.util.MAGIC_NUMBER.hex(),"
             "sys.implementation.cache_tag)"],
            capture_output=True, text=True, check=True).stdout
            for py in pythons}
        for py in pythons if len(magics) > 1 else pythons[:1]:
            subprocess.run([py, "-m", "compileall", "-q", "-j", "0", site],
                           env=base_env, check=False,
                           stdout=subprocess.DEVNULL)
        with open(manifest_path, "w") as f:
            json.dump({"entries": entries, "extra": extra}, f, indent=1)
    for py in pythons:
        subprocess.run([py, "-m", "compileall", "-q",
                        os.path.join(HERE, "app.py"),
                        os.path.join(HERE, "freeze_hooks.py")],
                       env=base_env, check=False, stdout=subprocess.DEVNULL)
    return wanted


# ------------------------------------------------------------------ /proc
def proc_table():
    """{pid: (ppid, pgrp)} of every process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2:].split()
        out[int(d)] = (int(fields[1]), int(fields[2]))
    return out


TICKS = os.sysconf("SC_CLK_TCK")


def proc_stat(pid):
    """CPU seconds (user + system) and minor page faults of PID."""
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()   # fields[0] is stat field 3
    return {"cpu_s": (int(fields[11]) + int(fields[12])) / TICKS,
            "minflt": int(fields[7])}


def children(table, pid):
    return sorted(p for p, (pp, _) in table.items() if pp == pid)


def group_members(pgid):
    return sorted(p for p, (_, pg) in proc_table().items() if pg == pgid)


def smaps_rollup(pid):
    vals = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                vals[parts[0].rstrip(":")] = int(parts[1])
    return vals


def measure_tree(master):
    """Every process of the tree below MASTER: role, pid, smaps (kB)."""
    table = proc_table()
    procs = [("master", master)]
    todo = [master]
    while todo:
        p = todo.pop()
        for c in children(table, p):
            procs.append(("worker" if p == master else "other", c))
            todo.append(c)
    out = []
    for role, pid in procs:
        try:
            sm = smaps_rollup(pid)
            st = proc_stat(pid)
        except OSError:
            continue
        sm["USS"] = sm.get("Private_Clean", 0) + sm.get("Private_Dirty", 0)
        out.append({"role": role, "pid": pid, **sm, **st})
    return out


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


def start_server(python, mode, args, site, base_env, port, workdir):
    cmd = [python, "-m", "gunicorn", "--preload", "-w", str(args.workers),
           "-b", "127.0.0.1:%d" % port, "--worker-class", "sync",
           "--chdir", HERE, "--log-level", "warning",
           "--error-logfile", os.path.join(workdir, "gunicorn.log"),
           "--timeout", "120", "--graceful-timeout", "15",
           *mode.gunicorn_args, "app:app"]
    env = server_env(base_env, site, mode, args.users, workdir,
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
                len(children(proc_table(), proc.pid)) >= workers:
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
    while group_members(pgid) and proc.poll() is not None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = len(group_members(pgid))
    for _ in range(20):
        if not group_members(pgid):
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
    if group_members(pgid):
        raise RuntimeError("processes of group %d survived SIGKILL: %s"
                           % (pgid, group_members(pgid)))
    return killed


# ------------------------------------------------------------------ attribution
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


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


def summarize_attribution(results, mode_name, top):
    """Mean over the workers (of every round) of MODE_NAME's reports."""
    reps = [r for res in results if res["mode"] == mode_name
            for r in res.get("attribution", {}).get("reports", [])
            if "rows" in r]
    missing = sum(len(res.get("attribution", {}).get("missing", []))
                  + sum(1 for r in res.get("attribution", {})
                        .get("reports", []) if "rows" not in r)
                  for res in results if res["mode"] == mode_name)
    if not reps:
        return {"mode": mode_name, "workers": 0, "missing": missing}
    n = len(reps)
    per_type = {}
    for i, r in enumerate(reps):
        for row in r["rows"]:
            d = per_type.setdefault(row["type"], {
                "pages": [0] * n, "touched": [0] * n, "objects": [0] * n})
            d["pages"][i] = row["pages"]
            d["touched"][i] = row["touched"] or 0
            d["objects"][i] = row["objects"] or 0
    totals = [r["header"]["copied_pages"] for r in reps]

    def mib(pages):
        return pages * PAGE_SIZE / 2.0 ** 20

    rows = []
    for name, d in per_type.items():
        rows.append({"type": name,
                     "pages_mean": statistics.fmean(d["pages"]),
                     "pages_min": min(d["pages"]),
                     "pages_max": max(d["pages"]),
                     "touched_mean": statistics.fmean(d["touched"]),
                     "objects_mean": statistics.fmean(d["objects"])})
    rows.sort(key=lambda r: (-r["pages_mean"], r["type"]))
    total = statistics.fmean(totals)
    shown = rows[:top]
    rest = rows[top:]
    if rest:
        other = [sum(x) for x in zip(*(per_type[r["type"]]["pages"]
                                       for r in rest))]
        shown.append({"type": "(%d other types)" % len(rest),
                      "pages_mean": statistics.fmean(other),
                      "pages_min": min(other), "pages_max": max(other),
                      "touched_mean": None, "objects_mean": None})
    shown.append({"type": "TOTAL", "pages_mean": total,
                  "pages_min": min(totals), "pages_max": max(totals),
                  "touched_mean": None, "objects_mean": None})
    for rank, r in enumerate(shown, 1):
        r["rank"] = rank if rank <= top else ""
        r["mib_mean"] = mib(r["pages_mean"])
        r["share"] = r["pages_mean"] / total if total else 0.0
    headers = [r["header"] for r in reps]
    metas = [r.get("meta", {}) for r in reps]
    return {
        "mode": mode_name, "workers": n, "missing": missing, "rows": shown,
        "regions": _mean_regions(reps, total),
        "written": _mean_written(reps, top),
        "diff": sorted({h.get("diff", "off") for h in headers}),
        "pymalloc_by_cause": _mean_nested(
            [h.get("pymalloc_by_cause") for h in headers]),
        "parent_pymalloc": _mean_nested(
            [h.get("parent_pymalloc") for h in headers]),
        "copied_pages_mean": total,
        "methods": sorted({h["method"] for h in headers}),
        "new_pages_mean": statistics.fmean(h["new_pages"] for h in headers),
        "walked_mean": statistics.fmean(h["objects_walked"]
                                        for h in headers),
        "walk_s_mean": statistics.fmean(h["walk_seconds"] for h in headers),
        "snapshot_s_mean": statistics.fmean(h["snapshot_seconds"]
                                            for h in headers),
        "objects_note": headers[0]["objects_note"],
        "frozen_before": max(m.get("frozen_before", 0) for m in metas),
        "unfrozen": any(m.get("unfrozen") for m in metas),
    }


REGION_FIELDS = ("pages", "no_object", "identical", "alloc_only",
                 "immortal_written")


def _mean_regions(reps, total):
    """Mean per worker of each region row (cowstat's "copied pages by
    region" table); [] for reports without it."""
    n = len(reps)
    by = {}
    for i, r in enumerate(reps):
        for row in r.get("regions") or []:
            d = by.setdefault(row["region"], {
                "region": row["region"], "label": row.get("label", ""),
                **{k: [None] * n for k in REGION_FIELDS}})
            for k in REGION_FIELDS:
                d[k][i] = row.get(k)
    out = []
    for d in by.values():
        row = {"region": d["region"], "label": d["label"]}
        for k in REGION_FIELDS:
            vals = [v for v in d[k] if v is not None]
            row[k + "_mean"] = statistics.fmean(vals) if vals else None
        row["pages_min"] = min(v or 0 for v in d["pages"])
        row["pages_max"] = max(v or 0 for v in d["pages"])
        row["mib_mean"] = row["pages_mean"] * PAGE_SIZE / 2.0 ** 20
        row["share"] = row["pages_mean"] / total if total else 0.0
        out.append(row)
    return out


def _mean_nested(dicts):
    """Mean of dicts of numbers (or of such dicts), key by key; None when
    no report has it."""
    dicts = [d for d in dicts if isinstance(d, dict) and "error" not in d]
    if not dicts:
        return None
    out = {}
    for k, v in dicts[0].items():
        if isinstance(v, dict):
            out[k] = _mean_nested([d.get(k) for d in dicts])
        elif isinstance(v, (int, float)):
            out[k] = statistics.fmean(d.get(k) or 0 for d in dicts)
    return out


def _mean_written(reps, top):
    """Mean per worker of cowstat's "bytes changed" rows (pages on which
    the type holds most changed bytes, changed bytes), top TOP by pages
    plus the rest summed."""
    n = len(reps)
    by = {}
    for i, r in enumerate(reps):
        for row in r.get("written") or []:
            d = by.setdefault(row["type"], {"pages": [0] * n,
                                            "bytes": [0] * n,
                                            "immortal_bytes": [0] * n,
                                            "objects": [0] * n})
            for k in d:
                d[k][i] = row.get(k) or 0
    rows = [{"type": name,
             **{k + "_mean": statistics.fmean(v) for k, v in d.items()}}
            for name, d in by.items()]
    rows.sort(key=lambda r: (-r["pages_mean"], -r["bytes_mean"], r["type"]))
    shown, rest = rows[:top], rows[top:]
    if rest:
        shown.append({"type": "(%d other types)" % len(rest),
                      **{k: sum(r[k] for r in rest)
                         for k in ("pages_mean", "bytes_mean",
                                   "immortal_bytes_mean", "objects_mean")}})
    return shown


def fmt_attribution(att, uss_mean):
    if not att["workers"]:
        return "%s: no attribution report (%d missing or failed)" % (
            att["mode"], att["missing"])
    out = ["%s: %d worker(s)%s, copied %.0f pages = %.1f MiB per worker "
           "(worker USS mean %.1f MiB); method %s; %.0f objects walked "
           "in %.1f s%s" % (
               att["mode"], att["workers"],
               " (%d missing or failed)" % att["missing"]
               if att["missing"] else "",
               att["copied_pages_mean"],
               att["copied_pages_mean"] * PAGE_SIZE / 2.0 ** 20,
               uss_mean, "/".join(att["methods"]), att["walked_mean"],
               att["walk_s_mean"],
               "; gc.unfreeze() of %d frozen objects before the report"
               % att["frozen_before"] if att["unfrozen"] else "")]
    width = max(len("type"), *(len(r["type"]) for r in att["rows"]))
    fmt = "  %-*s  %9s  %7s  %6s  %15s"
    out.append(fmt % (width, "type", "pages", "MiB", "share",
                      "pages min..max"))
    for r in att["rows"]:
        out.append(fmt % (width, r["type"], "%.0f" % r["pages_mean"],
                          "%.1f" % r["mib_mean"],
                          "%.1f%%" % (100.0 * r["share"]),
                          "%d..%d" % (r["pages_min"], r["pages_max"])))
    if att.get("regions"):
        def opt(v):
            return "-" if v is None else "%.0f" % v
        out.append("  by region (mean pages; no_object: no object found; "
                   "identical: same bytes as the master's page; "
                   "alloc_only: every changed byte outside the objects "
                   "found; immortal_w: a changed byte in an immortal "
                   "object):")
        fmt = "  %-9s %9s %7s %6s %10s %10s %11s %11s  %s"
        out.append(fmt % ("region", "pages", "MiB", "share", "no_object",
                          "identical", "alloc_only", "immortal_w",
                          "description"))
        for r in att["regions"]:
            out.append(fmt % (r["region"], "%.0f" % r["pages_mean"],
                              "%.1f" % r["mib_mean"],
                              "%.1f%%" % (100.0 * r["share"]),
                              opt(r["no_object_mean"]),
                              opt(r["identical_mean"]),
                              opt(r["alloc_only_mean"]),
                              opt(r["immortal_written_mean"]), r["label"]))
    bc = att.get("pymalloc_by_cause")
    if bc:
        f, n = bc["free_in_parent"], bc["full_in_parent"]
        out.append("  pymalloc pages by the master's pool: %.0f had a free "
                   "or never used block there in the master (identical "
                   "%.0f, immortal written %.0f, other %.0f); %.0f had none "
                   "(identical %.0f, immortal written %.0f, other %.0f)" % (
                       sum(f.values()), f["identical"],
                       f["immortal_written"], f["other"], sum(n.values()),
                       n["identical"], n["immortal_written"], n["other"]))
    pc = att.get("parent_pymalloc")
    if pc:
        out.append("  master's pymalloc pools: %.0f (%.0f KiB): in use "
                   "%.0f KiB, free-listed (holes) %.0f KiB in %.0f pools on "
                   "%.0f pages, never used %.0f KiB (%.0f more pages), %.0f "
                   "empty pools" % (
                       pc["pools"], pc["pool_kib"], pc["used_kib"],
                       pc["free_kib"], pc["pools_with_holes"],
                       pc.get("hole_pages", 0), pc["virgin_kib"],
                       pc.get("virgin_pages", 0), pc["empty_pools"]))
    if att.get("written"):
        width = max(len("changed bytes by type"),
                    *(len(r["type"]) for r in att["written"]))
        fmt = "  %-*s  %9s  %10s  %10s"
        out.append("  bytes changed since the fork (each copied page "
                   "compared with the master's), mean per worker:")
        out.append(fmt % (width, "changed bytes by type", "pages", "bytes",
                          "immortal"))
        for r in att["written"]:
            out.append(fmt % (width, r["type"], "%.0f" % r["pages_mean"],
                              "%.0f" % r["bytes_mean"],
                              "%.0f" % r["immortal_bytes_mean"]))
    return "\n".join(out)


# ------------------------------------------------------------------ wrk
def run_wrk(port, args, duration, budget=0):
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


# ------------------------------------------------------------------ one mode
def run_mode(mode, python, args, site, base_env, rnd):
    workdir = tempfile.mkdtemp(prefix="prefork-%s-" % mode.name.replace(
        "+", "_"))
    port = free_port()
    proc, cmd, env = start_server(python, mode, args, site, base_env, port,
                                  workdir)
    result = {"mode": mode.name, "round": rnd, "python": python,
              "cmd": " ".join(cmd),
              "env": " ".join("%s=%s" % kv for kv in sorted(mode.env.items())),
              "loadavg_start": os.getloadavg()[0]}
    try:
        _run_mode(proc, mode, args, result, port, workdir)
    except BaseException as e:
        # The server's logs stay for a post-mortem.
        if isinstance(e, Exception):
            raise RuntimeError("%s (logs: %s)" % (e, workdir)) from e
        raise
    gcstats = []
    for f in sorted(os.listdir(workdir)):
        if f.startswith("worker-") and f.endswith(".json"):
            with open(os.path.join(workdir, f)) as fh:
                gcstats.append(json.load(fh))
    result["gcstats"] = gcstats
    if args.keep_logs:
        result["workdir"] = workdir
        log("  logs: %s" % workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


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


def plot_watches(results, args):
    """One PNG per mode: shared vs private memory of each process over
    time, drawn by `cowstat plot` (matplotlib from Debian)."""
    done = set()
    for res in results:
        path = res.get("watch_csv")
        if not path or path in done or not os.path.exists(path):
            continue
        done.add(path)
        png = path[:-4] + ".png"
        title = "%s: %s, %d workers" % (res["mode"], os.path.basename(
            res["python"].rsplit("/bin/", 1)[0]), args.workers)
        r = subprocess.run(
            [sys.executable, "-m", "cowstat", "plot", path, "--png", png,
             "--title", title],
            env=dict(os.environ, PYTHONPATH=COWSTAT),
            capture_output=True, text=True)
        if r.returncode == 0:
            print("  %s" % os.path.relpath(png, ROOT))
        else:
            log("warning: cowstat plot %s failed: %s"
                % (path, (r.stderr or r.stdout).strip()))


def _run_mode(proc, mode, args, result, port, workdir):
    try:
        t0 = time.monotonic()
        health = wait_ready(proc, port, args.workers, args.startup_timeout,
                            workdir)
        result["startup_s"] = time.monotonic() - t0
        result["health"] = health
        boot = measure_tree(proc.pid)
        watcher = start_watch(proc.pid, mode, args, result)
        if args.warmup_requests:
            # Equal warm-up work too: a faster mode would otherwise read
            # more of the heap during a fixed-time warm-up.
            run_wrk(port, args, args.duration, args.warmup_requests)
        elif args.warmup > 0:
            run_wrk(port, args, args.warmup)
        before = {}
        for pid in children(proc_table(), proc.pid):
            try:
                before[pid] = proc_stat(pid)
            except OSError:
                pass
        wrk = run_wrk(port, args, args.duration, args.requests)
        loaded = measure_tree(proc.pid)        # at once, before anything else
        stop_watch(watcher)
        if args.requests and not wrk["budget_reached"]:
            log("warning: %s: --duration ended the load before --requests "
                "%d (%d served)" % (mode.name, args.requests,
                                    wrk["requests"]))
        result["wrk"] = wrk
        result["procs"] = [dict(p, phase="boot") for p in boot] + \
            [dict(p, phase="loaded") for p in loaded]
        workers_now = [p["pid"] for p in loaded if p["role"] == "worker"]
        if len(workers_now) != args.workers:
            log("warning: %s: %d workers after the run (expected %d): a "
                "worker died or was restarted" % (mode.name,
                                                  len(workers_now),
                                                  args.workers))
        # Worker CPU time and minor faults (copy-on-write faults among
        # them) spent on the measured load, per request: robust to other
        # load on the machine, unlike req/s.
        cpu = flt = 0.0
        for p in loaded:
            if p["role"] == "worker" and p["pid"] in before:
                cpu += p["cpu_s"] - before[p["pid"]]["cpu_s"]
                flt += p["minflt"] - before[p["pid"]]["minflt"]
        n = max(1, wrk["requests"])
        result["cpu_ms_per_req"] = 1000.0 * cpu / n
        result["minflt_per_req"] = flt / n
        boot_workers = {p["pid"] for p in boot if p["role"] == "worker"}
        if boot_workers != set(workers_now):
            log("warning: %s: the workers after the run are not the ones "
                "measured at boot (restarted?)" % mode.name)
        if args.attribution:
            # After every measurement above: the report walks the heap
            # (CPU, and page copies of its own); the workers keep the
            # collector statistics they had before it (app.py).
            result["attribution"] = collect_attribution(
                workers_now, workdir, args.attribution_timeout, mode.name)
    finally:
        result["killed_at_stop"] = stop_server(proc, args.stop_timeout)


def summarize(res):
    loaded = [p for p in res["procs"] if p["phase"] == "loaded"]
    boot = [p for p in res["procs"] if p["phase"] == "boot"]
    w = [p for p in loaded if p["role"] == "worker"]
    wb = [p for p in boot if p["role"] == "worker"]
    master = [p for p in loaded if p["role"] == "master"][0]
    wrk = res["wrk"]
    gs = res["gcstats"]

    def mean(xs):
        return statistics.fmean(xs) if xs else float("nan")

    s = {
        "mode": res["mode"], "round": res["round"],
        "workers": len(w),
        "uss_mean": mean([p["USS"] for p in w]) / MIB,
        "uss_max": max([p["USS"] for p in w], default=0) / MIB,
        "uss_boot_mean": mean([p["USS"] for p in wb]) / MIB,
        "pss_mean": mean([p["Pss"] for p in w]) / MIB,
        "worker_rss_mean": mean([p["Rss"] for p in w]) / MIB,
        "master_rss": master["Rss"] / MIB,
        "master_uss": master["USS"] / MIB,
        "tree_pss": sum(p["Pss"] for p in loaded) / MIB,
        "tree_pss_boot": sum(p["Pss"] for p in boot) / MIB,
        "rps": wrk["rps"], "requests": wrk["requests"],
        "cpu_ms_per_req": res["cpu_ms_per_req"],
        "minflt_per_req": res["minflt_per_req"],
        "wrk_seconds": wrk["duration_us"] / 1e6,
        "errors": wrk["errors"], "non2xx": wrk["non2xx"],
        "socket_errors": wrk["socket_errors"],
        "lat_p50_ms": wrk["lat_p50_us"] / 1000.0,
        "lat_p99_ms": wrk["lat_p99_us"] / 1000.0,
        "lat_max_ms": wrk["lat_max_us"] / 1000.0,
        "startup_s": res["startup_s"],
        "loadavg_start": res["loadavg_start"],
        "tracked_at_import": res["health"].get("tracked_at_import"),
        "worker_requests": mean([g["requests"] for g in gs]),
        "gc_gen0": mean([g["collections"][0] for g in gs]),
        "gc_gen1": mean([g["collections"][1] for g in gs]),
        "gc_gen2": mean([g["collections"][2] for g in gs]),
        "gc_shared": mean([g.get("shared_since_fork", {})
                           .get("collections", 0) for g in gs]),
        "gc_ms": mean([g["gc_ms"] for g in gs]),
        "gc_max_pause_ms": max([g["gc_max_pause_ms"] for g in gs],
                               default=float("nan")),
        "killed_at_stop": res["killed_at_stop"],
        "env": res["env"], "python": res["python"], "cmd": res["cmd"],
    }
    return s


NUMERIC_MEDIAN = ("uss_mean", "uss_max", "uss_boot_mean", "pss_mean",
                  "worker_rss_mean", "master_rss", "master_uss", "tree_pss",
                  "tree_pss_boot", "rps", "requests", "errors", "non2xx",
                  "socket_errors", "wrk_seconds", "lat_p50_ms", "lat_p99_ms", "lat_max_ms",
                  "startup_s", "worker_requests", "gc_gen0", "gc_gen1",
                  "cpu_ms_per_req", "minflt_per_req",
                  "gc_gen2", "gc_shared", "gc_ms", "gc_max_pause_ms")


def aggregate(rows):
    """Median over rounds of one mode's summaries."""
    agg = dict(rows[0])
    for k in NUMERIC_MEDIAN:
        agg[k] = statistics.median(r[k] for r in rows)
    agg["rps_min"] = min(r["rps"] for r in rows)
    agg["rps_max"] = max(r["rps"] for r in rows)
    agg["errors"] = sum(r["errors"] for r in rows)
    agg["rounds"] = len(rows)
    return agg


# ------------------------------------------------------------------ output
def fmt_table(aggs, baseline):
    base = next((a for a in aggs if a["mode"] == baseline), None)

    def ratio(a, k):
        if base is None or not base[k]:
            return "-"
        return "%.2f" % (a[k] / base[k])

    head = [("mode", "", "<"), ("USS mean", "MiB", ">"),
            ("USS max", "MiB", ">"), ("USS boot", "MiB", ">"),
            ("PSS mean", "MiB", ">"), ("master RSS", "MiB", ">"),
            ("tree PSS", "MiB", ">"), ("req/s", "", ">"),
            ("requests", "", ">"), ("errors", "", ">"),
            ("USS", "ratio", ">"),
            ("tree PSS", "ratio", ">"), ("req/s", "ratio", ">")]
    rows = []
    for a in aggs:
        rows.append([a["mode"], "%.1f" % a["uss_mean"], "%.1f" % a["uss_max"],
                     "%.1f" % a["uss_boot_mean"], "%.1f" % a["pss_mean"],
                     "%.1f" % a["master_rss"], "%.1f" % a["tree_pss"],
                     "%.0f" % a["rps"], "%d" % a["requests"],
                     "%d" % a["errors"],
                     ratio(a, "uss_mean"), ratio(a, "tree_pss"),
                     ratio(a, "rps")])
    widths = [max(len(h[0]), len(h[1]), *(len(r[i]) for r in rows))
              for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(("%-*s" if h[2] == "<" else "%*s") % (w, c)
                         for c, w, h in zip(cells, widths, head)).rstrip()

    out = [line([h[0] for h in head]), line([h[1] for h in head])]
    out += [line(r) for r in rows]
    if base is not None:
        out.append("ratios: worker USS mean, tree PSS and req/s vs %s"
                   % baseline)
    return "\n".join(out)


def fmt_gc_table(aggs):
    head = ["mode", "CPU ms/req", "faults/req", "req/worker", "gen0",
            "gen1", "gen2", "shared", "gc ms", "max pause ms", "p50 ms",
            "p99 ms"]
    rows = [[a["mode"], "%.2f" % a["cpu_ms_per_req"],
             "%.1f" % a["minflt_per_req"], "%.0f" % a["worker_requests"],
             "%.0f" % a["gc_gen0"],
             "%.0f" % a["gc_gen1"], "%.1f" % a["gc_gen2"],
             "%.1f" % a["gc_shared"], "%.1f" % a["gc_ms"],
             "%.1f" % a["gc_max_pause_ms"], "%.1f" % a["lat_p50_ms"],
             "%.1f" % a["lat_p99_ms"]] for a in aggs]
    widths = [max(len(h), *(len(r[i]) for r in rows))
              for i, h in enumerate(head)]
    out = ["  ".join(("%-*s" if i == 0 else "%*s") % (w, c)
                     for i, (c, w) in enumerate(zip(head, widths)))]
    for r in rows:
        out.append("  ".join(("%-*s" if i == 0 else "%*s") % (w, c)
                             for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def write_csv(path, rows, fields):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (round(v, 3) if isinstance(v, float) else v)
                        for k, v in r.items()})


def version_of(python):
    return subprocess.run([python, "-c", "import sys; print(sys.version"
                           ".split()[0])"], capture_output=True, text=True,
                          check=True).stdout.strip()


def gunicorn_version():
    text = read_first(os.path.join(DIST, "gunicorn", "__init__.py"))
    m = re.search(r"version_info\s*=\s*\(([^)]*)\)", text)
    return ".".join(x.strip() for x in m.group(1).split(",")) if m else "?"


def read_first(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stock", help="stock python3 (3.13)")
    ap.add_argument("cowpy", help="cowpy python3")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--duration", type=int, default=20,
                    help="seconds of measured load per mode")
    ap.add_argument("--requests", type=int, default=0,
                    help="stop the measured load after this many requests "
                    "(--duration is then only the upper bound); equal "
                    "work per mode, so worker memory is comparable even "
                    "when throughput differs; 0 = fixed duration only")
    ap.add_argument("--warmup", type=int, default=2,
                    help="seconds of warm-up load (unmeasured)")
    ap.add_argument("--warmup-requests", type=int, default=None,
                    help="warm up with this many requests instead of "
                    "--warmup seconds; default with --requests: a tenth "
                    "of it, else 0 (time-based)")
    ap.add_argument("--wrk-timeout", type=int, default=10,
                    help="wrk's --timeout in seconds (its default, 2 s, "
                    "turns a long collector pause into 'timeout' errors "
                    "instead of latency)")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--users", type=int, default=20000,
                    help="data set size (PREFORK_USERS; ids spread over it)")
    ap.add_argument("--seed", type=int, default=1, help="wrk's random seed")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every mode this many times, interleaved; "
                    "the table shows medians")
    ap.add_argument("--modes", default=DEFAULT_MODES,
                    help="comma-separated, from: %s"
                    % ", ".join(m.name for m in MODES))
    ap.add_argument("--baseline", default=DEFAULT_BASELINE)
    # Not the tracked bench/results/ unless asked (make RECORD=1).
    ap.add_argument("--csv-dir", default=os.environ.get(
        "COWPY_RESULTS", os.path.join(ROOT, "build", "results")))
    ap.add_argument("--site-dir", default=os.path.join(ROOT, "build",
                                                       "prefork-site"))
    ap.add_argument("--startup-timeout", type=float, default=300)
    ap.add_argument("--stop-timeout", type=float, default=30)
    ap.add_argument("--install-deps", action="store_true",
                    help="apt-get install the Debian packages if missing "
                    "(root)")
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep each server's log directory (printed)")
    ap.add_argument("--attribution", action=argparse.BooleanOptionalAction,
                    default=True,
                    help="after the measurements, have every worker write "
                    "cowstat's attribution report (pages copied from the "
                    "master, by object type) and print the top rows per "
                    "mode (default: on)")
    ap.add_argument("--attribution-timeout", type=float, default=120,
                    help="seconds to wait for the workers' reports")
    ap.add_argument("--attribution-top", type=int, default=6,
                    help="attribution rows shown per mode")
    ap.add_argument("--watch", action=argparse.BooleanOptionalAction,
                    default=True,
                    help="sample each server with `cowstat watch` from "
                    "boot to the end of the load and draw "
                    "DIR/prefork_watch_MODE.png with `cowstat plot`")
    ap.add_argument("--watch-interval", type=float, default=1.0)
    args = ap.parse_args()
    if args.warmup_requests is None:
        args.warmup_requests = args.requests // 10
    if args.workers < 1 or args.duration < 1 or args.connections < 1 \
            or args.users < 1 or args.rounds < 1 or args.requests < 0 \
            or args.warmup_requests < 0 or args.attribution_top < 1 \
            or args.attribution_timeout <= 0:
        ap.error("--workers, --duration, --connections, --users, --rounds, "
                 "--attribution-top must be >= 1, --requests and "
                 "--warmup-requests >= 0, --attribution-timeout > 0")
    if args.attribution and not os.path.isfile(
            os.path.join(COWSTAT, "cowstat", "attribution.py")):
        ap.error("--attribution needs %s (or use --no-attribution)"
                 % COWSTAT)
    by_name = {m.name: m for m in MODES}
    modes = []
    for name in [n.strip() for n in args.modes.split(",") if n.strip()]:
        if name not in by_name:
            ap.error("unknown mode %r (known: %s)" % (name, ", ".join(by_name)))
        modes.append(by_name[name])
    pythons = {"stock": os.path.abspath(args.stock),
               "cowpy": os.path.abspath(args.cowpy)}
    for p in pythons.values():
        if not os.access(p, os.X_OK):
            ap.error("not an executable: %s" % p)

    check_deps(args.install_deps)
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith("PYTHON")}
    used = sorted({pythons[m.python] for m in modes})
    pkgs = build_site(args.site_dir, used, base_env)
    os.makedirs(args.csv_dir, exist_ok=True)

    print("prefork benchmark: gunicorn %s (sync) --preload -w %d, Flask "
          "app.py (%d users), wrk -t %d -c %d -d %ds%s --timeout %ds "
          "(+%s warm-up), %d round(s)" % (
              gunicorn_version(),
              args.workers, args.users, min(2, args.connections),
              args.connections, args.duration,
              " or %d requests" % args.requests if args.requests else "",
              args.wrk_timeout,
              "%d requests" % args.warmup_requests if args.warmup_requests
              else "%ds" % args.warmup, args.rounds))
    for name, p in pythons.items():
        print("  %-5s %s (%s)" % (name, p, version_of(p)))
    print("  site: %s (%s; markupsafe pure Python)"
          % (args.site_dir, ", ".join(pkgs)))
    print("  kernel %s, %d CPUs, THP %s, load average %.2f at start"
          % (platform.release(), os.cpu_count() or 0,
             read_first("/sys/kernel/mm/transparent_hugepage/enabled"),
             os.getloadavg()[0]))
    sys.stdout.flush()

    results, failures = [], []
    for rnd in range(1, args.rounds + 1):
        for mode in modes:
            log("[round %d] %s: %s" % (rnd, mode.name, mode.desc))
            try:
                res = run_mode(mode, pythons[mode.python], args,
                               args.site_dir, base_env, rnd)
            except Exception as e:           # keep going with other modes
                log("  FAILED: %s" % e)
                failures.append((mode.name, rnd, str(e)))
                continue
            s = summarize(res)
            res["summary"] = s
            results.append(res)
            log("  %.0f req/s, %d errors, worker USS mean %.1f MiB, tree "
                "PSS %.1f MiB, %d tracked objects at import"
                % (s["rps"], s["errors"], s["uss_mean"], s["tree_pss"],
                   s["tracked_at_import"] or -1))
            if s["errors"]:
                log("  wrk: %s" % res["wrk"]["stdout"].strip()
                    .replace("\n", "\n  wrk: "))

    aggs = []
    for mode in modes:
        rows = [r["summary"] for r in results if r["mode"] == mode.name]
        if rows:
            aggs.append(aggregate(rows))
    if aggs:
        baseline = args.baseline if any(a["mode"] == args.baseline
                                        for a in aggs) else aggs[0]["mode"]
        print()
        if args.rounds > 1:
            print("(medians over %d rounds)" % args.rounds)
        print(fmt_table(aggs, baseline))
        print()
        print("collector in the workers (mean per worker over its life, "
              "warm-up included; wrk latency):")
        print(fmt_gc_table(aggs))
        mode_fields = ["mode", "round", "workers", "uss_mean", "uss_max",
                       "uss_boot_mean", "pss_mean", "worker_rss_mean",
                       "master_rss", "master_uss", "tree_pss",
                       "tree_pss_boot", "rps", "requests", "wrk_seconds",
                       "cpu_ms_per_req", "minflt_per_req",
                       "errors",
                       "non2xx", "socket_errors", "lat_p50_ms", "lat_p99_ms",
                       "lat_max_ms", "startup_s", "loadavg_start",
                       "tracked_at_import", "worker_requests", "gc_gen0",
                       "gc_gen1", "gc_gen2", "gc_shared", "gc_ms",
                       "gc_max_pause_ms", "killed_at_stop", "python", "env",
                       "cmd"]
        write_csv(os.path.join(args.csv_dir, "prefork_modes.csv"),
                  [r["summary"] for r in results], mode_fields)
        proc_fields = ["mode", "round", "phase", "role", "pid", "USS", "Pss",
                       "Rss", "Private_Clean", "Private_Dirty",
                       "Shared_Clean", "Shared_Dirty", "Anonymous",
                       "Pss_Anon", "Pss_File", "Swap", "cpu_s", "minflt"]
        procs = [dict(p, mode=r["mode"], round=r["round"])
                 for r in results for p in r["procs"]]
        write_csv(os.path.join(args.csv_dir, "prefork_procs.csv"), procs,
                  proc_fields)
        csvs = "prefork_procs.csv"
        if args.attribution:
            print()
            print("attribution (cowstat, after the load and the memory "
                  "readings): pages each worker copied from the master, by "
                  "the object type with the most bytes on the page; mean "
                  "over the workers%s, top %d types:"
                  % (" of every round" if args.rounds > 1 else "",
                     args.attribution_top))
            att_rows, region_rows, written_rows = [], [], []
            for a in aggs:
                att = summarize_attribution(results, a["mode"],
                                            args.attribution_top)
                print(fmt_attribution(att, a["uss_mean"]))
                for r in att.get("regions", []):
                    region_rows.append(dict(r, mode=a["mode"],
                                            workers=att["workers"]))
                for r in att.get("written", []):
                    written_rows.append(dict(r, mode=a["mode"],
                                             workers=att["workers"]))
                for r in att.get("rows", []):
                    att_rows.append(dict(
                        r, mode=a["mode"], workers=att["workers"],
                        copied_pages_mean=att["copied_pages_mean"],
                        method="/".join(att["methods"]),
                        unfrozen=att["unfrozen"]))
            write_csv(os.path.join(args.csv_dir, "prefork_attribution.csv"),
                      att_rows, ["mode", "rank", "type", "pages_mean",
                                 "mib_mean", "share", "pages_min",
                                 "pages_max", "touched_mean",
                                 "objects_mean", "workers",
                                 "copied_pages_mean", "method", "unfrozen"])
            csvs += ", prefork_attribution.csv"
            if region_rows:
                write_csv(os.path.join(args.csv_dir,
                                       "prefork_attribution_regions.csv"),
                          region_rows, ["mode", "region", "pages_mean",
                                        "mib_mean", "share", "pages_min",
                                        "pages_max", "no_object_mean",
                                        "identical_mean", "alloc_only_mean",
                                        "immortal_written_mean", "workers",
                                        "label"])
                csvs += ", prefork_attribution_regions.csv"
            if written_rows:
                write_csv(os.path.join(args.csv_dir,
                                       "prefork_attribution_written.csv"),
                          written_rows, ["mode", "type", "pages_mean",
                                         "bytes_mean", "immortal_bytes_mean",
                                         "objects_mean", "workers"])
                csvs += ", prefork_attribution_written.csv"
        print("\nCSV (kB per process, MiB per mode): %s/prefork_modes.csv, "
              "%s" % (args.csv_dir, csvs))
        if args.watch:
            print("memory over time (cowstat watch + plot):")
            plot_watches(results, args)
    for name, rnd, err in failures:
        print("FAILED: %s (round %d): %s" % (name, rnd, err.splitlines()[0]))
    return 1 if failures or not aggs else 0


if __name__ == "__main__":
    sys.exit(main())
