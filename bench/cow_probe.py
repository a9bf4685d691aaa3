"""Copy-on-write probe: how much does one gc.collect() in a forked child copy?

The parent builds a heap of many small GC-tracked containers (empty lists)
interleaved with non-tracked objects (short strings of the same 64-byte
pymalloc size class, so every page holds both), plants a few garbage cycles
reachable only from one global list, then forks.  The child drops that list,
runs gc.collect() and reports how much its private memory (Private_Clean +
Private_Dirty from /proc/self/smaps_rollup) grew during the collection and
how many objects the collection found.

    python3 bench/cow_probe.py [--lists N] [--freeze] [--cycles N]
        one measurement with this interpreter, printed as JSON
    python3 bench/cow_probe.py --compare STOCK COWPY [--lists N,N]
        stock and cowpy side by side (each case run in a fresh process)

The parent stays alive until the child has measured, so every inherited
page is shared at the start of the collection.
"""

import argparse
import gc
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "Tools", "cowstat"))
from cowstat.proc import read_rollup  # noqa: E402

STRINGS_PER_LIST = 40


def private_kib():
    """Private_Clean + Private_Dirty of this process (KiB)."""
    return read_rollup("self")["USS"]


class Node:
    """A cycle member with a finalizer, so collection is observable."""
    freed = 0

    def __init__(self):
        self.other = None

    def __del__(self):
        Node.freed += 1


def build_heap(nlists, ncycles):
    heap = []
    for i in range(nlists):
        heap.append([])
        for j in range(STRINGS_PER_LIST):
            # 15 ASCII chars: a 56-byte str, the same size class as a list.
            heap.append("%07d-%07d" % (i, j))
    garbage = []
    for _ in range(ncycles):
        a, b = Node(), Node()
        a.other, b.other = b, a
        garbage.append(a)
    return heap, garbage


def measure(nlists, freeze, ncycles):
    gc.disable()
    heap, garbage = build_heap(nlists, ncycles)
    gc.collect()
    if freeze:
        gc.freeze()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            del garbage[:]           # the planted cycles become garbage
            Node.freed = 0
            before = private_kib()
            found = gc.collect()
            after = private_kib()
            result = {"growth_kib": after - before, "found": found,
                      "finalized": Node.freed}
        except BaseException as e:
            result = {"error": repr(e)}
        os.write(w, json.dumps(result).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.waitpid(pid, 0)
    result = json.loads(data)
    result.update(lists=nlists, frozen=freeze, cycles=ncycles,
                  version=sys.version.split()[0])
    del heap
    return result


def compare(pythons, sizes, ncycles):
    rows = []
    for nlists in sizes:
        for freeze in (False, True):
            row = [nlists, "yes" if freeze else "no"]
            res = []
            for py in pythons:
                cmd = [py, __file__, "--lists", str(nlists),
                       "--cycles", str(ncycles)]
                if freeze:
                    cmd.append("--freeze")
                out = subprocess.run(cmd, check=True, capture_output=True,
                                     text=True).stdout
                res.append(json.loads(out))
            rows.append((row, res))
    print("COW probe: child private memory growth during gc.collect()")
    print(f"(parent: N empty lists interleaved with {STRINGS_PER_LIST}*N "
          f"short strings, {ncycles} garbage cycles of 2 objects with "
          "__del__)")
    hdr = (f"{'lists':>7} {'frozen':>6} | {'stock KiB':>10} {'found':>6} |"
           f" {'cowpy KiB':>10} {'found':>6} | {'cowpy/stock':>11}")
    print(hdr)
    print("-" * len(hdr))
    for (nlists, frz), (s, c) in rows:
        for r in (s, c):
            if "error" in r:
                sys.exit(f"probe failed: {r['error']}")
        ratio = (c["growth_kib"] / s["growth_kib"]
                 if s["growth_kib"] > 0 else float("nan"))
        print(f"{nlists:>7} {frz:>6} | {s['growth_kib']:>10} "
              f"{s['found']:>6} | {c['growth_kib']:>10} {c['found']:>6} |"
              f" {ratio:>11.3f}")
    print(f"stock: {rows[0][1][0]['version']}   "
          f"cowpy: {rows[0][1][1]['version']}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lists", default=None,
                    help="number of lists (with --compare: comma list)")
    ap.add_argument("--freeze", action="store_true",
                    help="gc.freeze() in the parent before the fork")
    ap.add_argument("--cycles", type=int, default=100,
                    help="garbage cycles planted in the parent")
    ap.add_argument("--compare", nargs=2, metavar=("STOCK", "COWPY"))
    ap.add_argument("--json", metavar="FILE",
                    help="with --compare: also write the rows as JSON")
    args = ap.parse_args()
    if args.compare:
        sizes = [int(x) for x in (args.lists or "16000,64000").split(",")]
        rows = compare(args.compare, sizes, args.cycles)
        if args.json:
            with open(args.json, "w") as f:
                json.dump([{"stock": s, "cowpy": c} for _, (s, c) in rows],
                          f, indent=1)
    else:
        print(json.dumps(measure(int(args.lists or 16000), args.freeze,
                                 args.cycles)))


if __name__ == "__main__":
    main()
