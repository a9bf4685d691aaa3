"""What settled code costs in speed (issue #17): the pre-fork app's request
path, in one process, with and without settled code.

    python3 bench/code/settle_speed.py STOCK COWPY [--requests 300,3000]
        [--rounds 12] [--users 2000] [--site DIR]

Each run is a fresh interpreter that imports bench/prefork/app.py (its heap
and its code), calls gc.freeze(immortalize=True) where the interpreter has
it (cowpy: the walk settles the code it makes immortal; stock: a plain
gc.freeze()), then serves N /item/<i> requests through Flask's test client
and reports the CPU time (time.process_time()) of those requests only.
Four variants, run in turn in every round (A B C D A B C D ...), so that
drift of the shared machine hits them alike:

    stock            stock CPython, gc.freeze()
    cowpy            cowpy, PYTHONCOWCODE=stock (code counts down and
                     specializes in place)
    cowpy light      cowpy, PYTHONCOWCODE=light, the default (settled
                     code, thawed within its first few calls)
    cowpy settle     cowpy, PYTHONCOWCODE=settle (settled code, thawed
                     once hot)

Printed: the median CPU seconds of each variant, and the median of the
per-round ratios to 'cowpy' and to 'stock'.  Settled code runs
generic until it thaws (256 settled executions of a code object in the
light mode, 2,048 with settle), so its cost is in a process's first
requests: compare a short and a long run.
Uses the pre-fork benchmark's site directory (build/prefork-site, made
from Debian's Flask packages by bench/prefork/deps.py, as run.py does).
"""

import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench", "prefork"))
from deps import build_site  # noqa: E402

CHILD = r"""
import gc, os, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import app
try:
    gc.freeze(immortalize=True)
except TypeError:
    gc.freeze()
client = app.app.test_client()
n = int(sys.argv[3])
t0 = time.process_time()
for i in range(n):
    r = client.get("/item/%d" % (i * 7))
    if r.status_code != 200:
        raise SystemExit("HTTP %d" % r.status_code)
t1 = time.process_time()
stats = getattr(gc, "get_shared_stats", lambda: {})()
print(t1 - t0, stats.get("code_settled", 0), stats.get("code_thawed", 0))
"""


def run_one(python, env, site, requests, users):
    full = dict(os.environ, PREFORK_USERS=str(users), **env)
    out = subprocess.run(
        [python, "-c", CHILD, site, os.path.join(ROOT, "bench", "prefork"),
         str(requests)], env=full, check=True, capture_output=True,
        text=True).stdout.split()
    return float(out[0]), int(out[1]), int(out[2])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stock")
    ap.add_argument("cowpy")
    ap.add_argument("--requests", default="300,3000",
                    help="requests per run, comma-separated")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--users", type=int, default=2000,
                    help="PREFORK_USERS (the heap's size)")
    ap.add_argument("--site", default=os.path.join(ROOT, "build",
                                                   "prefork-site"))
    args = ap.parse_args()
    args.stock, args.cowpy = map(os.path.abspath, (args.stock, args.cowpy))
    build_site(args.site, [args.stock, args.cowpy],
               {k: v for k, v in os.environ.items()
                if not k.startswith("PYTHON")})
    variants = [
        ("stock", args.stock, {}),
        ("cowpy", args.cowpy, {"PYTHONCOWCODE": "stock"}),
        ("cowpy light", args.cowpy, {"PYTHONCOWCODE": "light"}),
        ("cowpy settle", args.cowpy, {"PYTHONCOWCODE": "settle"}),
    ]
    print("Settled code, speed: the pre-fork app's request path through "
          "Flask's test client after an immortalizing freeze, %d users; "
          "CPU seconds of the requests, median of %d interleaved rounds; "
          "load average %.1f at start"
          % (args.users, args.rounds, os.getloadavg()[0]))
    for requests in [int(x) for x in args.requests.split(",") if x]:
        times = {name: [] for name, _, _ in variants}
        codes = {}
        for _ in range(args.rounds):
            for name, python, env in variants:
                t, settled, thawed = run_one(python, env, args.site,
                                             requests, args.users)
                times[name].append(t)
                codes[name] = (settled, thawed)
        print("\n%d requests per run:" % requests)
        print("%-16s %9s %9s %9s %8s %7s"
              % ("variant", "CPU s", "vs cowpy", "vs stock",
                 "settled", "thawed"))
        for name, _, _ in variants:
            ratio = lambda base: statistics.median(
                a / b for a, b in zip(times[name], times[base]))
            print("%-16s %9.3f %9.3f %9.3f %8d %7d"
                  % (name, statistics.median(times[name]),
                     ratio("cowpy"), ratio("stock"),
                     *codes[name]))


if __name__ == "__main__":
    main()
