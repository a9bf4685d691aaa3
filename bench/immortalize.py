"""Immortalizing freeze, stock vs cowpy in one run.

    python3 bench/immortalize.py STOCK COWPY [--objects N]

Each interpreter builds a heap of ~N tracked objects (instances with a
list attribute and strings), then freezes it: stock with gc.freeze(),
cowpy with gc.freeze(immortalize=True).  Printed per side: the freeze
time, the objects made immortal (cowpy), the time of a gc.collect()
afterwards, and the private memory growth of a forked child that reads
every inherited object (refcount writes copy pages on stock; immortal
objects are not written).
"""

import argparse
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COWSTAT = os.path.join(ROOT, "Tools", "cowstat")

# argv: N, the directory of cowstat (whose /proc reader it uses).
WORKER = r'''
import gc, json, os, sys, time
n = int(sys.argv[1])
gc.disable()
class M:
    def __init__(self, i):
        self.i = i
        self.name = "m%d" % i
        self.tags = [i]
data = [M(i) for i in range(n // 2)]
gc.collect()
immortal = hasattr(gc, "is_immortal")
t, cpu = time.perf_counter(), time.process_time()
gc.freeze(immortalize=True) if immortal else gc.freeze()
res = {"freeze_s": time.perf_counter() - t,
       "freeze_cpu_s": time.process_time() - cpu,
       "tracked": len(gc.get_objects()) if immortal else gc.get_freeze_count(),
       "immortalized": (gc.get_shared_stats()["immortalized"]
                        if immortal else 0)}
t = time.perf_counter()
gc.collect()
res["collect_ms"] = (time.perf_counter() - t) * 1000

# Imported here, after the figures above and before the fork.
sys.path.insert(0, sys.argv[2])
from cowstat.proc import read_rollup

def private_kib():
    return read_rollup("self")["USS"]

r, w = os.pipe()
pid = os.fork()
if pid == 0:
    before = private_kib()
    total = 0
    for m in data:
        total += len(m.tags) + len(m.name)
    os.write(w, str(private_kib() - before).encode())
    os._exit(0)
os.waitpid(pid, 0)
res["child_read_kib"] = int(os.read(r, 100))
print(json.dumps(res))
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stock")
    ap.add_argument("cowpy")
    ap.add_argument("--objects", type=int, default=1_000_000)
    args = ap.parse_args()
    rows = {}
    for name in ("stock", "cowpy"):
        out = subprocess.run([getattr(args, name), "-c", WORKER,
                              str(args.objects), COWSTAT], check=True,
                             capture_output=True, text=True).stdout
        rows[name] = json.loads(out)
    s, c = rows["stock"], rows["cowpy"]
    print(f"Freeze of a heap of ~{args.objects:,} tracked objects "
          "(stock: gc.freeze(); cowpy: gc.freeze(immortalize=True))")
    hdr = f"{'measure':<44} {'stock':>12} {'cowpy':>12}"
    print(hdr)
    print("-" * len(hdr))
    print(f"{'frozen tracked objects':<44} {s['tracked']:>12,} "
          f"{c['tracked']:>12,}")
    print(f"{'objects made immortal':<44} {s['immortalized']:>12,} "
          f"{c['immortalized']:>12,}")
    print(f"{'freeze time (s)':<44} {s['freeze_s']:>12.3f} "
          f"{c['freeze_s']:>12.3f}")
    # CPU time: on a busy machine the wall time above includes waiting.
    print(f"{'freeze CPU time (s)':<44} {s['freeze_cpu_s']:>12.3f} "
          f"{c['freeze_cpu_s']:>12.3f}")
    print(f"{'gc.collect() afterwards (ms)':<44} {s['collect_ms']:>12.1f} "
          f"{c['collect_ms']:>12.1f}")
    print(f"{'forked child reading every object (KiB)':<44} "
          f"{s['child_read_kib']:>12,} {c['child_read_kib']:>12,}")


if __name__ == "__main__":
    main()
