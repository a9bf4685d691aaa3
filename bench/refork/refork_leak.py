"""Memory of a process that forks again and again while it holds
short-lived data, stock vs cowpy modes, side by side (issue #18).

Each round builds 20,000 small request-scoped dicts, forks a child that
exits at once (os._exit(0)), waits for it, drops the dicts and runs
gc.collect().  The figure is the forking process's RSS growth (from
/proc/self/smaps_rollup) after 10, 20 and 30 rounds, and its ratio to
stock's.  Variants:
  local   the dicts are a local of the function that forks (a request
          handler calling subprocess with preexec_fn, a job runner);
  global  they are a module global, replaced every round;
  worker  the loop runs in a worker forked from a master whose
          preloaded heap (200,000 objects) is in a module: the worker's
          growth, and whether the master's heap is immortal in it.

    python bench/refork/refork_leak.py STOCK COWPY [--rounds 30]
"""

import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
COWSTAT = os.path.join(ROOT, "Tools", "cowstat")

# argv: variant, rounds, the directory of cowstat (whose /proc reader it
# uses).
CHILD = r'''
import gc, os, sys
variant, rounds = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, sys.argv[3])
from cowstat.proc import read_rollup

def rss():
    return read_rollup("self")["Rss"]

def fork_and_wait():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

def request_local():
    data = [{"id": i, "name": "r%d" % i} for i in range(20000)]
    fork_and_wait()
    return len(data)

def request_global():
    global data
    data = [{"id": i, "name": "r%d" % i} for i in range(20000)]
    fork_and_wait()
    data = None

def loop(request):
    out = []
    gc.collect()
    base = rss()
    for n in range(1, rounds + 1):
        request()
        gc.collect()
        if n % 10 == 0:
            out.append(rss() - base)
    return out

if variant == "worker":
    PRELOADED = [{"k": i, "v": [i, str(i)]} for i in range(200000)]
    pid = os.fork()
    if pid == 0:
        growth = loop(request_local)
        imm = getattr(gc, "is_immortal", lambda o: False)
        frac = sum(map(imm, PRELOADED[::1000])) / len(PRELOADED[::1000])
        print(*growth, "%.2f" % frac)
        sys.stdout.flush()
        os._exit(0)
    os.waitpid(pid, 0)
else:
    print(*loop(request_local if variant == "local" else request_global))
'''

MODES = [
    ("stock", "stock", {}),
    ("cowpy", "cowpy", {}),
    ("cowpy-immortal", "cowpy", {"PYTHONCOWFORK": "immortal"}),
]


def run(python, variant, rounds, env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    e.update(env)
    out = subprocess.run([python, "-c", CHILD, variant, str(rounds),
                          COWSTAT],
                         env=e, check=True, capture_output=True,
                         text=True).stdout.split()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stock")
    ap.add_argument("cowpy")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--variants", default="local,global,worker")
    args = ap.parse_args()
    pythons = {"stock": args.stock, "cowpy": args.cowpy}
    cols = [str(n) for n in range(10, args.rounds + 1, 10)]
    for variant in args.variants.split(","):
        print(f"variant {variant}: RSS growth (KiB) after N forks; "
              f"ratio to stock at {cols[-1]}"
              + ("; share of the master's heap immortal in the worker"
                 if variant == "worker" else ""))
        print("  %-16s" % "mode" + "".join("%10s" % c for c in cols)
              + "%8s" % "ratio"
              + ("%10s" % "immortal" if variant == "worker" else ""))
        base = None
        for name, which, env in MODES:
            out = run(pythons[which], variant, args.rounds, env)
            growth = [int(x) for x in out[:len(cols)]]
            if base is None:
                base = growth[-1]
            ratio = growth[-1] / base if base else float("nan")
            line = "  %-16s" % name + "".join("%10s" % f"{g:,}"
                                             for g in growth)
            line += "%8s" % f"{ratio:.2f}x"
            if variant == "worker":
                line += "%10s" % out[-1]
            print(line, flush=True)


if __name__ == "__main__":
    main()
