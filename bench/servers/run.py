"""The other pre-fork users, stock vs cowpy side by side (issue #16):
multiprocessing.Pool (fork), Celery prefork, Django and Starlette under
gunicorn.  Equal work per mode; per stack and mode: worker USS and PSS
(mean over the workers, /proc/PID/smaps_rollup through cowstat's reader),
the tree's PSS where there is a server, throughput and failures, the
CPU time the tree spent per task or request (utime + stime from
/proc/PID/stat, over the measured run), and ratios against stock with
that stack's freeze recipe.  The machine is shared: its rate moves by
10-30 % from round to round with other tenants' load, the CPU time per
request much less, so "per CPU" (the recipe's CPU time per unit over
this mode's, above 1 when this mode needs less) is the throughput figure
to compare, the rate the one users see.

    python3 bench/servers/run.py STOCK COWPY [--stacks mp,celery,...]
        [--modes stock,stock+recipe,cowpy,cowpy-immortal] [--csv FILE]

Packages: build/servers/root (make servers-deps: Debian trixie's .debs,
verified) and build/prefork-site (gunicorn, from bench/prefork)."""

import argparse
import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "Tools", "cowstat"))
from cowstat import proc as cowproc  # noqa: E402
from cowstat.pages import count_pages  # noqa: E402

SERVERS_SITE = os.path.join(ROOT, "build", "servers", "root", "usr", "lib",
                            "python3", "dist-packages")
PREFORK_SITE = os.path.join(ROOT, "build", "prefork-site")
MIB = 1024.0

# name: (interpreter, environment)
MODES = {
    "stock": ("stock", {}),
    "stock+recipe": ("stock", {"SERVERS_RECIPE": "1"}),
    "cowpy": ("cowpy", {}),
    "cowpy-immortal": ("cowpy", {"PYTHONCOWFORK": "immortal"}),
    # Not run by default: inherited code written in place (the default
    # code mode is light: settled until its first few calls in a worker),
    # and settled until hot (#17, opt-in).
    "cowpy-immortal-stockcode": ("cowpy", {"PYTHONCOWFORK": "immortal",
                                           "PYTHONCOWCODE": "stock"}),
    "cowpy-immortal-settle": ("cowpy", {"PYTHONCOWFORK": "immortal",
                                        "PYTHONCOWCODE": "settle"}),
}
BASELINE = "stock+recipe"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def base_env(extra, records):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "SERVERS_"))}
    env["PYTHONPATH"] = os.pathsep.join([HERE, SERVERS_SITE, PREFORK_SITE])
    env["SERVERS_RECORDS"] = str(records)
    env.update(extra)
    return env


def children(pid):
    return cowproc.child_pids(pid)


def stop(proc):
    """SIGTERM the server's process group and wait; SIGKILL it if that
    fails or takes over 30 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except ProcessLookupError:
        pass
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait(proc, ready, log, timeout, what):
    """Poll ready() until it is true; raise with the log's tail if the
    server exits first or TIMEOUT seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log) as f:
                raise RuntimeError(f.read()[-3000:])
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("%s did not start" % what)


def start_celery(python, env, work, workers, timeout=180):
    """A Celery prefork worker (-c WORKERS) for celery_app.py whose broker
    and results live in WORK; returns once every pool process has run
    worker_process_init.  The caller stops it (stop())."""
    proc = subprocess.Popen(
        [python, "-m", "celery", "-A", "celery_app", "worker", "-P",
         "prefork", "-c", str(workers), "--without-gossip",
         "--without-mingle", "--without-heartbeat", "-l", "warning"],
        env=dict(env, SERVERS_CELERY_DIR=work), cwd=HERE,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(work, "worker.log"), "w"),
        start_new_session=True)
    init_log = os.path.join(work, "process_init.log")

    def ready():
        with open(init_log) as f:
            return len(f.read().split()) >= workers
    try:
        _wait(proc, ready, os.path.join(work, "worker.log"), timeout,
              "celery")
    except BaseException:
        stop(proc)
        raise
    return proc


def start_gunicorn(stack, python, env, work, workers, timeout=300,
                   config=None, more=()):
    """gunicorn --preload -w WORKERS serving STACK's app (its database and
    log in WORK; the stock freeze hooks when SERVERS_RECIPE is set, or
    CONFIG, a gunicorn config file that applies them itself; MORE:
    further gunicorn options);
    returns (process, port) once /health answers and every worker runs.
    The caller stops it (stop())."""
    app, extra, _ = GUNICORN[stack]
    env = dict(env, SERVERS_DJANGO_DB=os.path.join(work, "db.sqlite3"),
               SERVERS_DJANGO_LOG=os.path.join(work, "app.log"))
    port = free_port()
    if config is None and env.get("SERVERS_RECIPE"):
        config = FREEZE_HOOKS
    hooks = ["-c", config] if config else []
    proc = subprocess.Popen(
        [python, "-m", "gunicorn", "--preload", "-w", str(workers),
         "-b", "127.0.0.1:%d" % port] + hooks + extra + list(more)
        + [app],
        env=env, cwd=HERE, stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(work, "server.log"), "w"),
        start_new_session=True)

    def ready():
        return (http_json(port, "/health")[0] == 200
                and len(children(proc.pid)) >= workers)
    try:
        _wait(proc, ready, os.path.join(work, "server.log"), timeout, stack)
    except BaseException:
        stop(proc)
        raise
    return proc, port


def mem_of(pids, parent=None):
    """Memory of each of PIDS (KiB); with PARENT, also "copied": the
    pages a worker copied from its parent (pagemap), as opposed to what it
    allocated itself (USS counts both)."""
    out = []
    for p in pids:
        try:
            m = cowproc.read_memory(p)
            if parent is not None:
                copied, _ = count_pages(parent, p)
                m["copied"] = sum(copied.values()) * \
                    (os.sysconf("SC_PAGE_SIZE") // 1024)
            out.append(m)
        except Exception:
            pass
    return out


def tree_cpu(master):
    """CPU seconds (user + system) the tree of MASTER has used so far:
    the master's own, its reaped children's (cutime, cstime) and its
    live children's, so that a worker that leaves (recycled) still
    counts once the master has reaped it."""
    try:
        f = cowproc.stat_fields(master)
    except (OSError, ValueError):
        return 0.0
    own = sum(int(x) for x in f[11:15]) / cowproc.CLOCK_TICKS
    return own + cpu_of(children(master))


def cpu_of(pids):
    """CPU seconds (user + system) the processes PIDS have used so far;
    a process that has gone counts 0."""
    total = 0.0
    for p in pids:
        try:
            total += cowproc.read_cpu_faults(p)["cpu_s"]
        except (OSError, ValueError):
            pass
    return total


def row(stack, mode, workers, tree_pss, rate, unit, failures, extra="",
        cpu_ms=None):
    return {"stack": stack, "mode": mode,
            "workers": len(workers),
            "uss_mib": statistics.mean(w["uss"] for w in workers) / MIB,
            "pss_mib": statistics.mean(w["pss"] for w in workers) / MIB,
            "copied_mib": (statistics.mean(w["copied"] for w in workers)
                           / MIB if "copied" in workers[0] else None),
            "tree_pss_mib": tree_pss / MIB if tree_pss else None,
            "rate": rate, "unit": unit, "failures": failures,
            "cpu_ms": cpu_ms, "note": extra}


# ------------------------------------------------------------ stacks
def run_mp(python, env, args):
    out = subprocess.run([python, os.path.join(HERE, "mp_pool.py"),
                          str(args.tasks), str(args.workers)],
                         env=env, capture_output=True, text=True,
                         timeout=600)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    d = json.loads(out.stdout.splitlines()[-1])
    return d["workers"], None, d["tasks"] / d["seconds"], "tasks/s", 0, \
        "checksum %s, pool start %.2f s" % (d["checksum"], d["startup"]), \
        1000.0 * d["cpu_s"] / d["tasks"]


def run_celery(python, env, args):
    work = tempfile.mkdtemp(prefix="cowpy-celery-")
    env = dict(env, SERVERS_CELERY_DIR=work)
    try:
        proc = start_celery(python, env, work, args.workers)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    try:
        tree_pids = [proc.pid] + children(proc.pid)
        cpu0 = cpu_of(tree_pids)
        d = celery_client(python, env, args.tasks)
        cpu = cpu_of(tree_pids) - cpu0
        pids = children(proc.pid)
        workers = mem_of(pids, proc.pid)
        tree = mem_of([proc.pid]) + workers
        return (workers, sum(m["pss"] for m in tree),
                d["ok"] / d["seconds"], "tasks/s", d["failed"],
                "checksum %s, %d workers answered, immortal there: %s"
                % (d["checksum"], d["pids"], d["immortal"]),
                1000.0 * cpu / max(d["ok"], 1))
    finally:
        stop(proc)
        shutil.rmtree(work, ignore_errors=True)


def celery_client(python, env, tasks):
    """Send TASKS tasks to the Celery worker of ENV's SERVERS_CELERY_DIR
    and wait for their results; returns CELERY_CLIENT's report (ok,
    failed, seconds, checksum, ...)."""
    client = subprocess.run(
        [python, "-c", CELERY_CLIENT, str(tasks)], env=env, cwd=HERE,
        capture_output=True, text=True, timeout=600)
    if client.returncode:
        raise RuntimeError(client.stderr[-2000:])
    return json.loads(client.stdout.splitlines()[-1])


CELERY_CLIENT = r'''
import json, sys, time
import celery_app
n = int(sys.argv[1])
t0 = time.perf_counter()
rs = [celery_app.scan.delay(i) for i in range(n)]
ok = failed = 0
pids = set(); imm = set(); total = 0.0
for r in rs:
    try:
        v = r.get(timeout=300)
        ok += 1; pids.add(v["pid"]); imm.add(v["immortal"])
        total += v["sum"]
    except Exception:
        failed += 1
dt = time.perf_counter() - t0
print(json.dumps({"ok": ok, "failed": failed, "seconds": dt,
                  "pids": len(pids), "immortal": sorted(imm),
                  "checksum": round(total, 2)}))
'''

# gunicorn stacks: app, extra gunicorn arguments, wrk paths
GUNICORN = {
    "django": ("djapp.wsgi:application", [],
               ["/product/%d", "/page/%d", "/db/%d"]),
    "asgi": ("asgi_app:app", ["-k", "uvicorn.workers.UvicornWorker"],
             ["/product/%d", "/search/%d"]),
}
FREEZE_HOOKS = os.path.join(ROOT, "bench", "prefork", "freeze_hooks.py")


def http_json(port, path):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        c.close()


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_wrk(port, paths, seconds, connections=8):
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", "%ds" % seconds,
         "--timeout", "10s", "-s", os.path.join(HERE, "paths.lua"),
         "http://127.0.0.1:%d" % port, "--"] + paths,
        capture_output=True, text=True, timeout=seconds + 60)
    text = out.stdout
    rate = requests = errors = 0
    for line in text.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            rate = float(parts[1])
        elif "requests in" in line:
            requests = int(parts[0])
        elif line.strip().startswith("Non-2xx"):
            errors += int(parts[-1])
        elif line.strip().startswith("Socket errors:"):
            errors += sum(int(x.rstrip(",")) for x in parts[3::2])
    return rate, requests, errors, text


def run_gunicorn(stack, python, env, args):
    paths = GUNICORN[stack][2]
    work = tempfile.mkdtemp(prefix="cowpy-%s-" % stack)
    try:
        proc, port = start_gunicorn(stack, python, env, work, args.workers)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    try:
        run_wrk(port, paths, args.warmup)
        tree_pids = [proc.pid] + children(proc.pid)
        cpu0 = cpu_of(tree_pids)
        rate, requests, errors, text = run_wrk(port, paths, args.duration)
        cpu = cpu_of(tree_pids) - cpu0
        workers = mem_of(children(proc.pid), proc.pid)
        tree = mem_of([proc.pid]) + workers
        imm = set()
        for _ in range(4 * args.workers):
            imm.add(http_json(port, "/health")[1]["immortal"])
        return (workers, sum(m["pss"] for m in tree), rate, "req/s",
                errors, "%d requests, immortal in worker: %s"
                % (requests, sorted(imm)), 1000.0 * cpu / max(requests, 1))
    finally:
        stop(proc)
        shutil.rmtree(work, ignore_errors=True)


STACKS = {"mp": run_mp, "celery": run_celery,
          "django": lambda *a: run_gunicorn("django", *a),
          "asgi": lambda *a: run_gunicorn("asgi", *a)}


def ensure_sites(pythons):
    """build/servers (make servers-deps) must exist; gunicorn comes from
    the pre-fork benchmark's private copy of Debian's (built if needed)."""
    if not os.path.isdir(SERVERS_SITE):
        sys.exit("run make servers-deps first (%s missing)" % SERVERS_SITE)
    sys.path.insert(0, os.path.join(ROOT, "bench", "prefork"))
    import deps
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    deps.build_site(PREFORK_SITE, pythons, env)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stock")
    ap.add_argument("cowpy")
    ap.add_argument("--stacks", default="mp,celery,django,asgi")
    ap.add_argument("--duration", type=int, default=15,
                    help="wrk seconds per gunicorn stack and mode")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--modes", default=",".join(
        m for m in MODES if m not in ("cowpy-immortal-stockcode",
                                      "cowpy-immortal-settle")))
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=400)
    ap.add_argument("--records", type=int, default=100000,
                    help="catalogue records (about 7 objects each)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="interleaved rounds; medians are shown")
    ap.add_argument("--csv")
    args = ap.parse_args()
    pythons = {"stock": os.path.abspath(args.stock),
               "cowpy": os.path.abspath(args.cowpy)}
    ensure_sites(sorted(set(pythons.values())))
    rows = []
    print("servers benchmark: %d workers, %d tasks, %d catalogue records"
          % (args.workers, args.tasks, args.records))
    modes = args.modes.split(",")
    for stack in args.stacks.split(","):
        # Rounds interleave the modes; the table shows each figure's
        # median over the rounds (failures: the sum).
        runs = {m: [] for m in modes}
        for rnd in range(args.rounds):
            for mode in modes:
                which, extra = MODES[mode]
                env = base_env(extra, args.records)
                log("[%s] round %d: %s" % (stack, rnd + 1, mode))
                workers, tree, rate, unit, failures, note, cpu_ms = \
                    STACKS[stack](pythons[which], env, args)
                r = row(stack, mode, workers, tree, rate, unit, failures,
                        note, cpu_ms)
                r["round"] = rnd + 1
                rows.append(r)
                runs[mode].append(r)
        print("\n%s (%s; median of %d round(s))"
              % (stack, runs[modes[0]][0]["unit"], args.rounds))
        print("  %-21s %9s %9s %9s %9s %10s %8s %9s %8s %8s %8s  %s"
              % ("mode", "USS MiB", "copied", "PSS MiB", "tree PSS",
                 "rate", "CPU ms", "failures", "USS", "rate", "per CPU",
                 "note"))
        med = {}
        for mode in modes:
            rs = runs[mode]
            m = {k: (statistics.median(r[k] for r in rs)
                     if rs[0][k] is not None else None)
                 for k in ("uss_mib", "copied_mib", "pss_mib",
                           "tree_pss_mib", "rate", "cpu_ms")}
            m["failures"] = sum(r["failures"] for r in rs)
            med[mode] = m
            base = med.get(BASELINE)
            # per CPU: the median over the rounds of the recipe's CPU time
            # per unit over this mode's in the same round (the rounds
            # interleave the modes, so a slow stretch hits both).
            per_cpu = statistics.median(
                b["cpu_ms"] / r["cpu_ms"]
                for b, r in zip(runs[BASELINE], rs)) if base else None
            ratio = ("%7.3fx %7.2fx %7.2fx" % (
                m["uss_mib"] / base["uss_mib"], m["rate"] / base["rate"],
                per_cpu) if base else "%8s %8s %8s" % ("", "", ""))
            print("  %-21s %9.1f %9s %9.1f %9s %10.1f %8.2f %9d %s  %s" % (
                mode, m["uss_mib"],
                "-" if m["copied_mib"] is None else "%.1f" % m["copied_mib"],
                m["pss_mib"],
                "-" if m["tree_pss_mib"] is None
                else "%.1f" % m["tree_pss_mib"],
                m["rate"], m["cpu_ms"], m["failures"], ratio,
                rs[-1]["note"]), flush=True)
    print("\nratios: worker USS, rate and per CPU vs %s (per CPU: its CPU "
          "time per unit over the mode's, median of the rounds' ratios)"
          % BASELINE)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
