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
"""

import argparse
import os
import subprocess
import sys

CHILD = r'''
import gc, os, sys, time
items = int(sys.argv[1])
recipe = sys.argv[2] == "1"
if recipe:
    gc.disable()
class Item:
    def __init__(self, i):
        self.name = "item-%d" % i
        self.tags = ["t%d" % (i % 50), "x" * (i % 13)]
        self.meta = {"id": i, "price": i * 0.5}
heap = [Item(i) for i in range(items)]
index = {it.name: it for it in heap}
if recipe:
    gc.collect(); gc.freeze()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    if recipe:
        gc.enable()
    total = sum(it.meta["id"] for it in heap[: items // 20])
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

MODES = [
    ("stock", "stock", "0", {}),
    ("stock+recipe", "stock", "1", {}),
    ("cowpy", "cowpy", "0", {}),
    ("cowpy+recipe", "cowpy", "1", {}),
    ("cowpy-immortal", "cowpy", "0", {"PYTHONCOWFORK": "immortal"}),
]


def run(python, items, recipe, env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    e.update(env)
    out = subprocess.run([python, "-c", CHILD, str(items), recipe],
                         env=e, capture_output=True, text=True, check=True)
    kib, secs = out.stdout.split()
    return int(kib), float(secs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("stock")
    ap.add_argument("cowpy")
    ap.add_argument("--items", default="200000,600000")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    pythons = {"stock": args.stock, "cowpy": args.cowpy}
    print("Exit of a forked worker: KiB copied while it exits (minor faults"
          " x 4) and seconds from\nsys.exit(0) to the parent's wait4(); "
          f"median of {args.rounds}; ratios vs stock+recipe")
    print(f"{'items':>8}  {'mode':<16}{'KiB':>10}{'s':>8}"
          f"{'KiB ratio':>11}{'s ratio':>9}")
    for items in (int(x) for x in args.items.split(",")):
        res = {}
        for name, which, recipe, env in MODES:
            runs = sorted(run(pythons[which], items, recipe, env)
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
