"""Instructions executed by speed-suite workloads, stock vs cowpy (callgrind).

    python3 bench/speed/instructions.py STOCK COWPY [--only NAMES]
        [--scale S] [--quick] [--warmup W]

Wall-clock times on a shared 2-core machine vary by tens of percent; the
instruction count of the same binary on the same input hardly varies.
Each (interpreter, workload) runs twice under
`valgrind --tool=callgrind`: once in full (setup, W warm-up runs,
gc.collect(), one run(S)) and once without that last run(S); the
difference is the instructions of one run(S) alone (interpreter start-up,
imports and the untimed setup cancel out).  Default: every workload of
the suite, at scale 0.05 (each callgrind run well under 2 minutes here;
about 10 minutes in all); --quick uses scale 0.01; --only NAMES for a
subset (e.g. gc_churn,heap_growth,after_freeze,calls: the collector-heavy
ones and a control with no collections).

Instructions are not time: they ignore cache misses, which are most of a
collection's cost over a large heap (see bench/gc_speed.py), but an equal
count on paths cowpy does not change shows the hooks cost nothing.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True      # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

DEFAULT = ""             # every workload (_common.select())


def callgrind(python, name, scale, warmup, do_run, tmp):
    out = os.path.join(tmp, "cg.%s.%d.%d.out" % (name, do_run, os.getpid()))
    prefix = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out]
    r = _common.run_worker(python, name, scale, warmup, do_run=do_run,
                           prefix=prefix, timeout=1800)
    with open(out) as f:
        text = f.read()
    os.unlink(out)
    m = (re.search(r"^summary:\s+(\d+)", text, re.M)
         or re.search(r"^totals:\s+(\d+)", text, re.M))
    if not m:
        raise RuntimeError("no summary/totals line in callgrind output")
    return int(m.group(1)), r


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stock")
    ap.add_argument("cowpy")
    ap.add_argument("--only", default=DEFAULT,
                    help="comma-separated workloads (default: all)")
    ap.add_argument("--scale", type=float, default=None,
                    help="work per run() (default 0.05, 0.01 with --quick)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--warmup", type=int, default=0)
    args = ap.parse_args()
    scale = args.scale if args.scale is not None else (0.01 if args.quick else 0.05)
    stock, cowpy = _common.resolve(args.stock), _common.resolve(args.cowpy)
    names, _ = _common.select(args.only, stock, cowpy)

    print("Instructions of one run() (callgrind, full minus baseline), "
          "scale %g, warm-up %d" % (scale, args.warmup))
    hdr = "%-22s %16s %16s %7s  %s" % ("workload", "stock Ir", "cowpy Ir",
                                       "ratio", "collections/gen (stock; cowpy)")
    print(hdr)
    print("-" * len(hdr), flush=True)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="speed-cg-") as tmp:
        for name in names:
            counts, colls, secs = {}, {}, {}
            try:
                for label, py in (("stock", stock), ("cowpy", cowpy)):
                    t = time.time()
                    full, r = callgrind(py, name, scale, args.warmup, True, tmp)
                    base, _ = callgrind(py, name, scale, args.warmup, False, tmp)
                    secs[label] = time.time() - t
                    counts[label] = full - base
                    colls[label] = "/".join(map(str, r.get("collections", [])))
                    extra = r.get("info") or {}
                    if "shared_collections_in_run" in extra:
                        colls[label] += " shared %s" % extra["shared_collections_in_run"]
            except (_common.WorkerError, RuntimeError,
                    subprocess.TimeoutExpired) as e:
                failed += 1
                print("%-22s FAILED: %s" % (name, e), flush=True)
                continue
            s, c = counts["stock"], counts["cowpy"]
            print("%-22s %16s %16s %7.3f  %s; %s   (%.0f s + %.0f s)" % (
                name, format(s, ","), format(c, ","), c / s,
                colls["stock"], colls["cowpy"], secs["stock"], secs["cowpy"]),
                flush=True)
    print("ratio = cowpy Ir / stock Ir; > 1 means cowpy executes more "
          "instructions.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
