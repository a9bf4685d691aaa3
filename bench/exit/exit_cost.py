"""What a forked worker's normal exit costs: pages copied (minor faults
taken while it exits) and wall time, stock vs cowpy, side by side.

A parent builds an app-like heap (instances with a dict, a list and
strings, and an index dict), forks one child; the child reads a slice of
the heap (a "request"), reports its fault count, then returns normally
(sys.exit(0): interpreter finalization), as a gunicorn worker does.  The
parent takes the child's faults from os.wait4() and subtracts those the
child had before it began to exit: each fault left is a page the exit
copied (or first touched) only to be thrown away.

    python bench/exit/exit_cost.py STOCK COWPY [--items 200000,600000]
        [--flask USERS[,USERS...] [--requests 2000]]

--flask: the heap is the pre-fork benchmark's Flask app
(bench/prefork/app.py with PREFORK_USERS=USERS, its libraries from
build/prefork-site) and the child serves REQUESTS requests through
Flask's test client (every route without a parameter, in turn) before
it exits: what a gunicorn worker's exit costs, module teardown of a
real application included.
"""

import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PREFORK = os.path.join(ROOT, "bench", "prefork")
PREFORK_SITE = os.path.join(ROOT, "build", "prefork-site")

# The protocol: SETUP builds the heap, the forked child runs REQUEST, reports
# its fault count and the time, then returns normally; the parent prints
# the faults the exit took (x 4 KiB) and the exit's wall time.
PROTOCOL = r'''
import gc, os, sys, time
recipe = sys.argv[2] == "1"
if recipe:
    gc.disable()
SETUP
if recipe:
    gc.collect(); gc.freeze()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    if recipe:
        gc.enable()
REQUEST
    os.write(w, ("%d %f\n" % (
        __import__("resource").getrusage(0).ru_minflt,
        time.monotonic())).encode())
    sys.exit(0)
os.close(w)
line = os.read(r, 100).split()
before, t0 = int(line[0]), float(line[1])
_, status, ru = os.wait4(pid, 0)
t1 = time.monotonic()
assert os.waitstatus_to_exitcode(status) == 0
print((ru.ru_minflt - before) * 4, "%.3f" % (t1 - t0))
'''

CHILD = PROTOCOL.replace("SETUP", '''items = int(sys.argv[1])
class Item:
    def __init__(self, i):
        self.name = "item-%d" % i
        self.tags = ["t%d" % (i % 50), "x" * (i % 13)]
        self.meta = {"id": i, "price": i * 0.5}
heap = [Item(i) for i in range(items)]
index = {it.name: it for it in heap}''').replace("REQUEST", '''    total = sum(it.meta["id"] for it in heap[: items // 20])''')

# --flask: the app as the heap, requests through Flask's test client.
FLASK_CHILD = PROTOCOL.replace("SETUP", '''requests = int(sys.argv[1])
import app''').replace("REQUEST", '''    client = app.app.test_client()
    paths = sorted(rule.rule for rule in app.app.url_map.iter_rules()
                   if "<" not in rule.rule and "static" not in rule.rule)
    for i in range(requests):
        resp = client.get(paths[i % len(paths)])
        if resp.status_code != 200:
            os._exit(3)''')

MODES = [
    ("stock", "stock", "0", {}),
    ("stock+recipe", "stock", "1", {}),
    ("cowpy", "cowpy", "0", {}),
    ("cowpy+recipe", "cowpy", "1", {}),
    ("cowpy-immortal", "cowpy", "0", {"PYTHONCOWFORK": "immortal"}),
]


def run(python, items, recipe, env, flask_requests=None):
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("PYTHON", "PREFORK_"))}
    e.update(env)
    if flask_requests is None:
        argv = [python, "-c", CHILD, str(items), recipe]
    else:
        e.update(PREFORK_USERS=str(items),
                 PYTHONPATH=os.pathsep.join([PREFORK, PREFORK_SITE]))
        argv = [python, "-c", FLASK_CHILD, str(flask_requests), recipe]
    out = subprocess.run(argv, env=e, capture_output=True, text=True,
                         check=True)
    kib, secs = out.stdout.split()
    return int(kib), float(secs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("stock")
    ap.add_argument("cowpy")
    ap.add_argument("--items", default="200000,600000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--flask", metavar="USERS",
                    help="the Flask app of bench/prefork as the heap, at "
                         "these PREFORK_USERS sizes (instead of --items)")
    ap.add_argument("--requests", type=int, default=2000,
                    help="with --flask: requests the child serves")
    args = ap.parse_args()
    if args.rounds < 1 or args.requests < 0:
        ap.error("--rounds must be positive and --requests >= 0")
    sizes = args.flask or args.items
    try:
        sizes = [int(x) for x in sizes.split(",")]
    except ValueError:
        ap.error("sizes must be integers separated by commas: %r" % sizes)
    pythons = {"stock": args.stock, "cowpy": args.cowpy}
    if args.flask:
        # The pre-fork benchmark's packages (Debian's), as its run.py
        # builds and checks them.
        sys.path.insert(0, PREFORK)
        from deps import build_site, check_deps
        check_deps(False)
        build_site(PREFORK_SITE, sorted({os.path.abspath(p)
                                         for p in pythons.values()}),
                   {k: v for k, v in os.environ.items()
                    if not k.startswith("PYTHON")})
    print("Exit of a forked worker: KiB copied while it exits (minor faults"
          " x 4) and seconds from\nsys.exit(0) to the parent's wait4(); "
          f"median of {args.rounds}; ratios vs stock+recipe")
    if args.flask:
        print(f"heap: bench/prefork's Flask app; the worker served "
              f"{args.requests} requests")
    print(f"{'users' if args.flask else 'items':>8}  {'mode':<16}{'KiB':>10}"
          f"{'s':>8}{'KiB ratio':>11}{'s ratio':>9}")
    flask_requests = args.requests if args.flask else None
    for items in sizes:
        res = {}
        for name, which, recipe, env in MODES:
            runs = sorted(run(pythons[which], items, recipe, env,
                              flask_requests)
                          for _ in range(args.rounds))
            kib = sorted(r[0] for r in runs)[len(runs) // 2]
            secs = sorted(r[1] for r in runs)[len(runs) // 2]
            res[name] = (kib, secs)
        base = res["stock+recipe"]
        for name, (kib, secs) in res.items():
            print(f"{items:>8}  {name:<16}{kib:>10}{secs:>8.3f}"
                  f"{kib / max(base[0], 1):>11.2f}"
                  f"{secs / max(base[1], 1e-3):>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
