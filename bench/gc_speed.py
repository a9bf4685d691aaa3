"""Collector speed, stock vs cowpy, interleaved in one run.

    python3 bench/gc_speed.py STOCK COWPY [--rounds N] [--objects N]
                              [--csv FILE]

Each round runs one fresh process per interpreter (A B A B ...), so both
see the same machine noise.  A process measures:

  young    total time of 2,000 gc.collect(0), each over ~1,000 new objects
           of which a fifth are garbage cycles (the ordinary, stock path);
  full     gc.collect() of a non-frozen heap of --objects tracked objects
           (median of 5);
  shared   gc.collect() of the same heap after gc.freeze() (median of 5),
           with the side arena, as in a forked worker; then again with
           the scratch in the headers, as cowpy does in a process that
           never forked ("same, never forked").
           Stock skips frozen objects, so its figure here is not a
           collection at all; the comparison that matters is cowpy's
           shared collection against stock's *full* collection of the
           same heap (the work stock would have to do to find garbage
           among those objects): reported as shared/stock-full.

Prints medians, min-max spread and cowpy/stock ratios, and the side-arena
size per examined object (gc.get_shared_stats()).
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys

WORKER = r'''
import gc, json, sys, time
N = int(sys.argv[1])
gc.disable()

class Rec:
    def __init__(self, i, peer):
        self.i = i
        self.peer = peer
        self.tags = [i]

def build(n):
    # About n tracked objects: a Rec instance, its list attribute and one
    # dict every 4th record, with references across the structure.
    recs = []
    prev = None
    for i in range(n // 2):
        prev = Rec(i, prev)
        recs.append(prev)
        if i % 4 == 0:
            prev.tags = {"k": prev.tags}
    return recs

def median_collect(k, gen=2):
    ts = []
    for _ in range(k):
        t = time.perf_counter()
        gc.collect(gen)
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]

res = {}
# young
gc.collect()
total = 0.0
for _ in range(2000):
    keep = []
    for j in range(200):
        a = [j]; b = [a]; a.append(b)      # a 2-object garbage cycle
        keep.append([j, (j,), {"j": j}])  # survivors
    del a, b
    t = time.perf_counter()
    gc.collect(0)
    total += time.perf_counter() - t
res["young"] = total
del keep
gc.collect()

heap = build(N)
gc.collect()
res["tracked"] = len(gc.get_objects())
res["full"] = median_collect(5)
gc.freeze()
# cowpy: as in a forked worker (scratch in the side arena), then as in a
# process that never forked (scratch in the headers, as stock keeps it).
try:
    import _testinternalcapi
    set_forked = getattr(_testinternalcapi, "cow_set_forked", None)
except ImportError:
    set_forked = None
if set_forked:
    set_forked(True)
res["shared"] = median_collect(5)
if hasattr(gc, "get_shared_stats"):
    st = gc.get_shared_stats()
    res["examined"] = st["last_examined"]
    res["arena_bytes"] = st["last_arena_bytes"]
if set_forked:
    set_forked(False)
    res["shared_header"] = median_collect(5)
else:
    res["shared_header"] = res["shared"]
gc.unfreeze()
print(json.dumps(res))
'''


def run(python, nobj):
    out = subprocess.run([python, "-c", WORKER, str(nobj)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stock")
    ap.add_argument("cowpy")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--csv", metavar="FILE")
    args = ap.parse_args()

    runs = {"stock": [], "cowpy": []}
    for r in range(args.rounds):
        for name in ("stock", "cowpy") if r % 2 == 0 else ("cowpy", "stock"):
            runs[name].append(run(getattr(args, name), args.objects))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    def col(name, key):
        return [x[key] for x in runs[name]]

    def fmt(v):
        return f"{v * 1000:8.1f}"

    rows = []
    print(f"GC speed: {args.rounds} rounds, interleaved, "
          f"heap of {runs['cowpy'][0]['tracked']:,} tracked objects")
    hdr = (f"{'measure':<28} {'stock ms':>9} {'(min-max)':>19} "
           f"{'cowpy ms':>9} {'(min-max)':>19} {'ratio':>7}")
    print(hdr)
    print("-" * len(hdr))
    for label, skey, ckey in (
            ("young: 2000 x collect(0)", "young", "young"),
            ("full, not frozen", "full", "full"),
            ("shared(cowpy) / full(stock)", "full", "shared"),
            ("  same, never forked", "full", "shared_header")):
        s, c = col("stock", skey), col("cowpy", ckey)
        ms, mc = statistics.median(s), statistics.median(c)
        ratio = mc / ms
        print(f"{label:<28} {fmt(ms)} ({fmt(min(s))}-{fmt(max(s))}) "
              f"{fmt(mc)} ({fmt(min(c))}-{fmt(max(c))}) {ratio:7.3f}")
        rows.append({"measure": label, "stock_ms": ms * 1000,
                     "stock_min": min(s) * 1000, "stock_max": max(s) * 1000,
                     "cowpy_ms": mc * 1000, "cowpy_min": min(c) * 1000,
                     "cowpy_max": max(c) * 1000, "ratio": ratio})
    s = col("stock", "shared")
    print(f"(stock's collect() of the frozen heap skips it: "
          f"{statistics.median(s) * 1000:.1f} ms)")
    ex = runs["cowpy"][0].get("examined")
    if ex:
        per = runs["cowpy"][0]["arena_bytes"] / ex
        print(f"side arena: {runs['cowpy'][0]['arena_bytes']:,} bytes for "
              f"{ex:,} examined objects = {per:.1f} bytes/object "
              "(released after the collection)")
        rows.append({"measure": "arena bytes/object", "cowpy_ms": per})
    if args.csv:
        os.makedirs(os.path.dirname(args.csv) or ".", exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
