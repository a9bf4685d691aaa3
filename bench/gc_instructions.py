"""Instructions executed inside the collector, stock vs cowpy (callgrind).

    python3 bench/gc_instructions.py STOCK COWPY [--objects N]

Wall-clock times on these machines vary by 20 % from run to run; the
instruction count of the same binary on the same input does not.  Each
workload runs under `valgrind --tool=callgrind` with collection switched
on only inside gc_collect_main() (inclusive), so the count is exactly the
collector's work: young collections, a full collection of a non-frozen
heap, and (cowpy) the shared collection of the same heap frozen, which is
compared with stock's full collection.  Instructions are not time (the
shared collection's cost is mostly cache misses, see gc_speed.py), but
equal counts on the stock path show the hooks cost nothing.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

WORKLOAD = r'''
import gc, sys
what, n = sys.argv[1], int(sys.argv[2])
gc.disable()
class Rec:
    def __init__(self, i, peer):
        self.i = i; self.peer = peer; self.tags = [i]
if what == "young":
    gc.collect()
    for _ in range(300):
        keep = []
        for j in range(200):
            a = [j]; b = [a]; a.append(b)
            keep.append([j, (j,), {"j": j}])
        del a, b
        gc.collect(0)
else:
    recs = []; prev = None
    for i in range(n // 2):
        prev = Rec(i, prev); recs.append(prev)
        if i % 4 == 0:
            prev.tags = {"k": prev.tags}
    gc.collect()
    if what == "shared":
        gc.freeze()
        if hasattr(gc, "get_cow_mode"):
            # A forked worker's shared collections (scratch in the arena).
            import _testinternalcapi
            _testinternalcapi.cow_set_forked(True)
    # "full1" and "shared" run 4 collections after the first, "full" 3.
    for _ in range(3 if what == "full" else 4):
        gc.collect()
'''


def instructions(python, what, nobj):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        script = os.path.join(tmp, "w.py")
        with open(script, "w") as f:
            f.write(WORKLOAD)
        subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
             "--collect-atstart=no", "--toggle-collect=gc_collect_main",
             python, script, what, str(nobj)],
            check=True, capture_output=True)
        with open(out) as f:
            text = f.read()
    m = re.search(r"^summary:\s+(\d+)", text, re.M) or \
        re.search(r"^totals:\s+(\d+)", text, re.M)
    return int(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stock")
    ap.add_argument("cowpy")
    ap.add_argument("--objects", type=int, default=200_000)
    args = ap.parse_args()
    print(f"Instructions inside gc_collect_main (callgrind), "
          f"heap of ~{args.objects:,} objects")
    hdr = f"{'workload':<34} {'stock Ir':>14} {'cowpy Ir':>14} {'ratio':>7}"
    print(hdr)
    print("-" * len(hdr))
    rows = [("young: 300 x collect(0)", "young", "young"),
            ("full, not frozen (3 + 1 collect)", "full", "full"),
            ("shared(cowpy) vs full(stock), 1+4", "full1", "shared")]
    cache = {}
    for label, swhat, cwhat in rows:
        if ("s", swhat) not in cache:
            cache["s", swhat] = instructions(args.stock, swhat, args.objects)
        s = cache["s", swhat]
        c = instructions(args.cowpy, cwhat, args.objects)
        print(f"{label:<34} {s:>14,} {c:>14,} {c / s:>7.3f}", flush=True)


if __name__ == "__main__":
    main()
