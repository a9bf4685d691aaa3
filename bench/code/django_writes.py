"""What a Django worker writes into the code it inherited (issue #17,
item 1, on the servers benchmark's Django site).

    python3 bench/code/django_writes.py STOCK COWPY [--duration 10]
        [--modes stock+recipe,cowpy-immortal,cowpy-immortal-settle]

Per mode, bench/servers/run.py's Django site under gunicorn --preload, 4
workers, wrk on its views (equal duration).  Each worker copies, right
after the fork, the inline bytecode of every code object it can reach
(bench/code/django_hooks.py); after the load it compares its code with
that copy and classifies every changed instruction
(bench/code/bytecode_diff.py): specialization (an opcode or its cache
data rewritten), counter (warm-up, backoff, branch history), deopt (back
to the generic form, or a specialized instruction's miss counter) and
the RESUME rewrite.  Pages are the pages holding changed bytecode, each
given to its first kind in that order.  The worker's copied pages
(pagemap, MiB) for context (its copy of the bytecode adds to them; the
servers benchmark has the memory figures).  Means over the workers; memory only: rates are
printed but these runs are not interleaved."""

import argparse
import glob
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench", "servers"))
import run as servers  # noqa: E402

KINDS = ["specialization", "deopt", "counter", "RESUME", "other"]


def one(mode, python, duration):
    which, extra = servers.MODES[mode]
    env = servers.base_env(extra, 100000)
    work = tempfile.mkdtemp(prefix="cowpy-codes-")
    env["COWPY_CODE_REPORT_DIR"] = work
    env["PYTHONPATH"] += os.pathsep + HERE
    proc, port = servers.start_gunicorn(
        "django", python, env, work, 4,
        config=os.path.join(HERE, "django_hooks.py"))
    try:
        paths = servers.GUNICORN["django"][2]
        servers.run_wrk(port, paths, 2)
        rate, requests, errors, _ = servers.run_wrk(port, paths, duration)
        pids = servers.children(proc.pid)
        mem = servers.mem_of(pids, proc.pid)
        for p in pids:
            os.kill(p, signal.SIGPWR)
        deadline = time.time() + 120
        while len(glob.glob(os.path.join(work, "codes-*.json"))) < \
                len(pids):
            if time.time() > deadline:
                sys.exit("django_writes: a worker wrote no report (%s)"
                         % work)
            time.sleep(0.5)
        reps = [json.load(open(f))
                for f in glob.glob(os.path.join(work, "codes-*.json"))]
    finally:
        servers.stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    return {"mode": mode, "rate": rate, "requests": requests,
            "errors": errors, "mem": mem, "reports": reps}


def mean(xs):
    return statistics.mean(xs) if xs else 0.0


def show(res):
    print("\nper worker (mean of %d workers)" % len(res[0]["reports"]))
    print("  %-24s %8s %8s %8s %8s  %s" % (
        "mode", "copied", "codes", "written", "code pg",
        "code pages by kind: " + ", ".join(KINDS)))
    for r in res:
        reps = r["reports"]
        pages = {k: mean([x["pages"].get(k, 0) for x in reps])
                 for k in KINDS}
        print("  %-24s %8.1f %8.0f %8.0f %8.0f  %s" % (
            r["mode"], mean([m["copied"] for m in r["mem"]]) / 1024,
            mean([x["codes"] for x in reps]),
            mean([x["written"] for x in reps]), sum(pages.values()),
            "  ".join("%.0f" % pages[k] for k in KINDS)))
    for r in res:
        reps = r["reports"]
        print("\n%s: changed instructions by category (mean per worker; "
              "%d requests, %d errors, %.0f req/s)"
              % (r["mode"], r["requests"], r["errors"], r["rate"]))
        cats = {}
        for x in reps:
            for c, (n, b) in x["categories"].items():
                cats.setdefault(c, [0, 0])
                cats[c][0] += n / len(reps)
                cats[c][1] += b / len(reps)
        for c, (n, b) in sorted(cats.items(), key=lambda kv: -kv[1][0]):
            print("  %-44s %8.0f instructions %9.0f bytes" % (c, n, b))
        fams = {}
        for x in reps:
            for fam, kinds in x["families"].items():
                for k, n in kinds.items():
                    fams.setdefault(fam, {}).setdefault(k, 0)
                    fams[fam][k] += n / len(reps)
        print("  by family (instructions):  %s" % "  ".join(
            "%14s" % k for k in KINDS))
        top = sorted(fams.items(), key=lambda kv: -sum(kv[1].values()))
        for fam, kinds in top[:14]:
            print("    %-24s %s" % (fam, "  ".join(
                "%14.0f" % kinds.get(k, 0) for k in KINDS)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stock")
    ap.add_argument("cowpy")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--modes", default="stock+recipe,"
                    "cowpy-immortal-stockcode,cowpy-immortal,"
                    "cowpy-immortal-settle")
    args = ap.parse_args()
    pythons = {"stock": os.path.abspath(args.stock),
               "cowpy": os.path.abspath(args.cowpy)}
    servers.ensure_sites(sorted(set(pythons.values())))
    print("Django site (bench/servers/djapp): 4 gunicorn workers, wrk %d s "
          "per mode; bytecode a worker changed in the code it inherited"
          % args.duration)
    res = []
    for mode in args.modes.split(","):
        servers.log("[django_writes] %s" % mode)
        res.append(one(mode, pythons[servers.MODES[mode][0]],
                       args.duration))
    show(res)


if __name__ == "__main__":
    main()
