"""Instructions per catalogue task, stock vs cowpy (issue #16), counted by
callgrind: unlike CPU time on a shared machine, they do not move with
other tenants' load.

    python3 bench/servers/task_instructions.py STOCK COWPY [--tasks 10]
        [--records 20000] [--fork [--recipe]] [--env NAME=VALUE ...]

Each interpreter runs the servers benchmark's task (catalogue.scan(), the
work of a Celery or multiprocessing task) TASKS times in one process, and
once with no task; the difference is the tasks' instructions, so the
import and the catalogue's construction cancel out.  --env applies to the
cowpy runs (e.g. PYTHONCOWFORK=immortal: without --fork the process does
not fork, so the fork modes change nothing there).  --recipe (with
--fork) gives stock its freeze recipe, as the servers benchmark's
stock+recipe mode: gc.disable() before the catalogue is built,
gc.collect(); gc.freeze() before the fork, gc.enable() in the worker.
Needs valgrind.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = "import sys, catalogue; " \
        "print(sum(catalogue.scan(i) for i in range(int(sys.argv[1]))))"
# --fork: the tasks run in a forked worker (as a pool process runs them:
# after the fork's freeze, the immortal mode's walk, the set-aside pools
# and settled code); only the worker's instructions are counted.
FORK_CHILD = """
import gc, os, sys, catalogue
n = int(sys.argv[1])
if catalogue.RECIPE:
    gc.collect()
    gc.freeze()
pid = os.fork()
if pid == 0:
    if catalogue.RECIPE:
        gc.enable()
    print(sum(catalogue.scan(i) for i in range(n)))
    sys.stdout.flush()
    os._exit(0)
os.waitpid(pid, 0)
"""


def instructions(python, tasks, records, extra, fork=False, keep=None,
                 label=""):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTHON")}
    # A fixed hash seed: dict and set layouts, and so the work, repeat.
    env.update(PYTHONPATH=HERE, SERVERS_RECORDS=str(records),
               PYTHONHASHSEED="0")
    env.update(extra)
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind",
             "--callgrind-out-file=" + os.path.join(
                 keep or tmp, "%s-%d.%%p.out" % (label or "cg", tasks)),
             python, "-c", FORK_CHILD if fork else CHILD, str(tasks)],
            env=env, capture_output=True, text=True, check=True)
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
    ap.add_argument("--recipe", action="store_true",
                    help="with --fork: stock runs with its freeze recipe")
    ap.add_argument("--keep", metavar="DIR",
                    help="keep callgrind's files in DIR (for "
                         "callgrind_annotate); the worker's has the "
                         "higher pid")
    ap.add_argument("--env", action="append", default=[],
                    help="NAME=VALUE for the cowpy runs")
    args = ap.parse_args()
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
        base = instructions(python, 0, args.records, env, args.fork,
                            args.keep, name)
        full = instructions(python, args.tasks, args.records, env,
                            args.fork, args.keep, name)
        rows.append((name, base, full, (full - base) / args.tasks))
    print("Instructions per catalogue task (callgrind), %d tasks over %d "
          "records%s%s%s" % (args.tasks, args.records,
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
