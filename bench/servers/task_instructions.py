"""Instructions per catalogue task or per Django request, stock vs cowpy
(issue #16), counted by callgrind: unlike CPU time on a shared machine,
they do not move with other tenants' load.

    python3 bench/servers/task_instructions.py STOCK COWPY [--tasks 10]
        [--records 20000] [--fork [--recipe]] [--env NAME=VALUE ...]
        [--django [--warmup 20]]

Each interpreter runs the servers benchmark's task (catalogue.scan(), the
work of a Celery or multiprocessing task) TASKS times in one process, and
once with no task; the difference is the tasks' instructions, so the
import and the catalogue's construction cancel out.  --env applies to the
cowpy runs (e.g. PYTHONCOWFORK=immortal: without --fork the process does
not fork, so the fork modes change nothing there).  --recipe (with
--fork) gives stock its freeze recipe, as the servers benchmark's
stock+recipe mode: gc.disable() before the catalogue is built,
gc.collect(); gc.freeze() before the fork, gc.enable() in the worker.

--django: a task is one request to the servers benchmark's Django site
(djapp, its database built before the fork as gunicorn --preload does),
called through its WSGI application in a forked worker (implies --fork),
cycling over the benchmark's wrk paths; both runs first serve WARMUP
requests, so a worker's first, lazy requests cancel out too.  Needs the
servers benchmark's packages (make servers-deps).

Needs valgrind.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SERVERS_SITE = os.path.join(ROOT, "build", "servers", "root", "usr", "lib",
                            "python3", "dist-packages")

CHILD = "import sys, catalogue; " \
        "print(sum(catalogue.scan(i) for i in range(int(sys.argv[1]))))"
# --fork: the tasks run in a forked worker (as a pool process runs them:
# after the fork's freeze, the immortal mode's walk, the set-aside pools
# and settled code); only the worker's instructions are counted.
# The fork and the recipe around it, shared by both workloads: the worker
# runs WORK (after the workload's setup) and prints its result.
FORK_TAIL = """
if catalogue.RECIPE:
    gc.collect()
    gc.freeze()
pid = os.fork()
if pid == 0:
    if catalogue.RECIPE:
        gc.enable()
    print(WORK())
    sys.stdout.flush()
    os._exit(0)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
FORK_CHILD = """
import gc, os, sys, catalogue
n = int(sys.argv[1])

def WORK():
    return sum(catalogue.scan(i) for i in range(n))
""" + FORK_TAIL
# --django: argv[1] requests after argv[2] warm-up ones, each checked.
DJANGO_CHILD = """
import gc, io, os, sys
n, warm = int(sys.argv[1]), int(sys.argv[2])
from djapp import wsgi
import catalogue
PATHS = ["/product/%d", "/page/%d", "/db/%d"]

def request(k):
    path = PATHS[k % len(PATHS)] % ((k * 7919) % 1000003)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path,
               "SCRIPT_NAME": "", "QUERY_STRING": "",
               "SERVER_NAME": "localhost", "SERVER_PORT": "80",
               "HTTP_HOST": "localhost", "SERVER_PROTOCOL": "HTTP/1.1",
               "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr,
               "wsgi.multithread": False, "wsgi.multiprocess": True,
               "wsgi.run_once": False}
    status = []
    result = wsgi.application(
        environ, lambda s, h, exc_info=None: status.append(s))
    try:
        size = sum(len(chunk) for chunk in result)
    finally:
        result.close()
    if not status[0].startswith("200") or size == 0:
        raise SystemExit("%s: %s" % (path, status[0]))
    return size

def WORK():
    for k in range(warm):
        request(k)
    return sum(request(k) for k in range(warm, warm + n))
""" + FORK_TAIL


def instructions(python, tasks, records, extra, fork=False, keep=None,
                 label="", django=None):
    """The first process's instructions (the worker's with fork or
    django); django is the number of warm-up requests."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "SERVERS_"))}
    # A fixed hash seed: dict and set layouts, and so the work, repeat.
    env.update(PYTHONPATH=HERE, SERVERS_RECORDS=str(records),
               PYTHONHASHSEED="0")
    if django is not None:
        code, args = DJANGO_CHILD, [str(tasks), str(django)]
        env.update(PYTHONPATH=os.pathsep.join([HERE, SERVERS_SITE]),
                   DJANGO_SETTINGS_MODULE="djapp.settings",
                   SERVERS_DJANGO_RECORDS=str(records))
    else:
        code, args = FORK_CHILD if fork else CHILD, [str(tasks)]
    env.update(extra)
    if os.sep in python:
        python = os.path.abspath(python)    # the run's cwd is a temp dir
    with tempfile.TemporaryDirectory() as tmp:
        if django is not None:
            env["SERVERS_DJANGO_DB"] = os.path.join(tmp, "db.sqlite3")
        out = subprocess.run(
            ["valgrind", "--tool=callgrind",
             "--callgrind-out-file=" + os.path.join(
                 keep or tmp, "%s-%d.%%p.out" % (label or "cg", tasks)),
             python, "-c", code] + args,
            env=env, cwd=tmp, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s" % (
                python, out.returncode, out.stderr[-3000:]))
    # One "Collected" line per process; the forked worker's ends first.
    counts = [int(x) for x in re.findall(r"Collected : (\d+)", out.stderr)]
    if not counts:
        raise RuntimeError(out.stderr[-2000:])
    return counts[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stock")
    ap.add_argument("cowpy")
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--fork", action="store_true",
                    help="run the tasks in a forked worker; count its "
                         "instructions only")
    ap.add_argument("--django", action="store_true",
                    help="a task is a request to the Django site, in a "
                         "forked worker")
    ap.add_argument("--warmup", type=int, default=20,
                    help="with --django: requests served before counting")
    ap.add_argument("--recipe", action="store_true",
                    help="with --fork: stock runs with its freeze recipe")
    ap.add_argument("--keep", metavar="DIR",
                    help="keep callgrind's files in DIR (for "
                         "callgrind_annotate); the worker's has the "
                         "higher pid")
    ap.add_argument("--env", action="append", default=[],
                    help="NAME=VALUE for the cowpy runs")
    args = ap.parse_args()
    if args.django:
        args.fork = True
    if args.tasks < 1 or args.records < 1 or args.warmup < 0:
        ap.error("--tasks and --records must be positive, --warmup >= 0")
    if args.recipe and not args.fork:
        ap.error("--recipe needs --fork: the recipe acts at the fork")
    extra = {}
    for e in args.env:
        name, sep, value = e.partition("=")
        if not sep or not name:
            ap.error("--env expects NAME=VALUE, got %r" % e)
        extra[name] = value
    stock_env = {"SERVERS_RECIPE": "1"} if args.recipe else {}
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    rows = []
    for name, python, env in (("stock", args.stock, stock_env),
                              ("cowpy", args.cowpy, extra)):
        warm = args.warmup if args.django else None
        base = instructions(python, 0, args.records, env, args.fork,
                            args.keep, name, warm)
        full = instructions(python, args.tasks, args.records, env,
                            args.fork, args.keep, name, warm)
        rows.append((name, base, full, (full - base) / args.tasks))
    print("Instructions per %s (callgrind), %d tasks over %d "
          "records%s%s%s" % ("Django request after %d warm-up ones"
                             % args.warmup if args.django
                             else "catalogue task",
                             args.tasks, args.records,
                           ", in a forked worker" if args.fork else "",
                           ", stock with its recipe" if args.recipe else "",
                         ", cowpy with " + " ".join(args.env)
                         if args.env else ""))
    print("%-6s %15s %15s %15s" % ("", "no task", "with tasks",
                                   "per task"))
    for name, base, full, per in rows:
        print("%-6s %15d %15d %15.0f" % (name, base, full, per))
    print("cowpy/stock per task: %.4f" % (rows[1][3] / rows[0][3]))


if __name__ == "__main__":
    sys.exit(main())
