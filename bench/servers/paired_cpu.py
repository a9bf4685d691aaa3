"""CPU per request or task, modes paired in time (issue #16).

bench/servers/run.py runs one server at a time, 10 s or more each, and
compares medians over rounds.  On this shared machine the speed of the
CPU moves by 10-30 % from one minute to the next, so a mode that happens
to run in slow minutes reads slower: runs of 5 and 6 rounds both put the
Django site's default mode at 0.88x per CPU, while callgrind counts
1.0008x its instructions per request (task_instructions.py --django).
Here every mode's server runs at once, and the load goes to them in
short bursts, in turn (A B C, C B A, ...), so neighbouring bursts see
the same machine.  Each burst gives the tree's CPU time (utime + stime
of the master and its workers, /proc/PID/stat; multiprocessing: a whole
run of mp_pool.py, its pool's CPU over the tasks) per request or task;
each set of neighbouring bursts a ratio per mode, the baseline's CPU per
unit over the mode's (above 1: the mode needs less).  Printed: the median
ratio and its interquartile range, each mode's median CPU per unit, and
its rate against the baseline's.

    python3 bench/servers/paired_cpu.py STOCK COWPY
        [--stack django|asgi|celery|mp] [--modes stock+recipe,cowpy,...]
        [--bursts 40] [--seconds 2 | --tasks 100] [--max-requests N]

--max-requests N (gunicorn stacks): workers are recycled after N
requests (+- N/10, gunicorn's jitter), as issue #15's recycling is
measured: the rate is then what recycling leaves of each mode's
throughput, and a recycled worker's CPU still counts once gunicorn has
reaped it.

The first mode is the baseline (default stock+recipe, as in run.py)."""

import argparse
import os
import shutil
import statistics
import sys
import tempfile

import run


def quartiles(xs):
    q = statistics.quantiles(xs, n=4)
    return q[0], statistics.median(xs), q[2]


def start(stack, python, env, work, workers, max_requests=0):
    """STACK's server for one mode; returns its process and, for a
    gunicorn stack, its port (multiprocessing: no server, (None, None))."""
    if stack == "mp":
        return None, None
    if stack == "celery":
        return run.start_celery(python, env, work, workers), None
    more = []
    if max_requests:
        more = ["--max-requests", str(max_requests),
                "--max-requests-jitter", str(max(1, max_requests // 10))]
    return run.start_gunicorn(stack, python, env, work, workers, more=more)


def load(stack, server, args):
    """One unit of load: wrk for --seconds (gunicorn), --tasks tasks
    sent by a client and their results checked (Celery), or a whole run
    of mp_pool.py with --tasks tasks (multiprocessing); returns (units
    served, failures, seconds they took, CPU seconds the pool spent on
    them or None).  A client's or pool's start-up, which builds the
    catalogue, is not counted."""
    if stack == "mp":
        a = argparse.Namespace(tasks=args.tasks, workers=args.workers)
        out = run.run_mp(server["python"], server["env"], a)
        rate, cpu_ms = out[2], out[6]
        return (args.tasks, 0, args.tasks / rate,
                cpu_ms * args.tasks / 1000.0)
    if stack != "celery":
        _, n, errors, _ = run.run_wrk(server["port"],
                                      run.GUNICORN[stack][2], args.seconds)
        return n, errors, args.seconds, None
    d = run.celery_client(
        server["python"],
        dict(server["env"], SERVERS_CELERY_DIR=server["work"]), args.tasks)
    return d["ok"], d["failed"], d["seconds"], None


def burst(stack, server, args):
    """One burst against SERVER; returns (CPU seconds of its tree per
    unit, units, failures, seconds).  The Celery client's own CPU is not
    the tree's."""
    proc = server["proc"]
    cpu0 = run.tree_cpu(proc.pid) if proc else 0.0
    n, errors, wall, cpu = load(stack, server, args)
    if cpu is None:
        cpu = run.tree_cpu(proc.pid) - cpu0
    return cpu / max(n, 1), n, errors, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stock")
    ap.add_argument("cowpy")
    ap.add_argument("--stack", default="django",
                    choices=sorted(run.GUNICORN) + ["celery", "mp"])
    ap.add_argument("--modes", default="stock+recipe,cowpy")
    ap.add_argument("--bursts", type=int, default=40,
                    help="bursts per mode")
    ap.add_argument("--seconds", type=int, default=2,
                    help="wrk seconds per burst (gunicorn)")
    ap.add_argument("--tasks", type=int, default=100,
                    help="Celery or multiprocessing tasks per burst")
    ap.add_argument("--warmup", type=int, default=3,
                    help="wrk seconds (gunicorn) or bursts (Celery) per "
                         "mode before the paired ones")
    ap.add_argument("--max-requests", type=int, default=0,
                    help="gunicorn stacks: recycle workers after this "
                    "many requests (0: never)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--records", type=int, default=100000)
    args = ap.parse_args()
    if args.seconds < 1 or args.tasks < 1:
        ap.error("--seconds and --tasks must be at least 1")
    if args.max_requests < 0 or (args.max_requests
                                 and args.stack in ("celery", "mp")):
        ap.error("--max-requests: a count of at least 0, gunicorn stacks "
                 "only")
    if args.bursts < 2:
        ap.error("--bursts must be at least 2 (quartiles)")
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in run.MODES]
    if unknown or len(modes) < 2:
        ap.error("--modes: two or more of %s" % ", ".join(run.MODES))
    pythons = {"stock": os.path.abspath(args.stock),
               "cowpy": os.path.abspath(args.cowpy)}
    run.ensure_sites(sorted(set(pythons.values())))
    servers = {}
    try:
        for mode in modes:
            which, extra = run.MODES[mode]
            work = tempfile.mkdtemp(prefix="cowpy-paired-")
            env = run.base_env(extra, args.records)
            servers[mode] = {"work": work, "python": pythons[which],
                             "env": env}
            proc, port = start(args.stack, pythons[which], env, work,
                               args.workers, args.max_requests)
            servers[mode].update(proc=proc, port=port)
        for mode in modes:
            if args.stack == "celery":
                for _ in range(args.warmup):
                    load(args.stack, servers[mode], args)
            elif args.stack != "mp":        # each mp burst is a fresh pool
                run.run_wrk(servers[mode]["port"], run.GUNICORN[args.stack][2],
                            args.warmup)
        base = modes[0]
        per = {m: [] for m in modes}       # CPU s per request, by burst
        ratios = {m: [] for m in modes[1:]}
        errors = {m: 0 for m in modes}
        requests = {m: 0 for m in modes}
        spent = {m: 0.0 for m in modes}
        for i in range(args.bursts):
            # A B C, then C B A: each mode's burst has the baseline's as
            # a neighbour in the same order equally often.
            order = modes if i % 2 == 0 else modes[::-1]
            got = {}
            for mode in order:
                c, n, e, wall = burst(args.stack, servers[mode], args)
                spent[mode] += wall
                got[mode] = c
                per[mode].append(c)
                requests[mode] += n
                errors[mode] += e
            for mode in modes[1:]:
                ratios[mode].append(got[base] / got[mode])
            run.log("[%s] burst %d/%d: %s" % (
                args.stack, i + 1, args.bursts, "  ".join(
                    "%s %.3f ms" % (m, 1000 * got[m]) for m in modes)))
    finally:
        for s in servers.values():
            if s.get("proc") is not None:
                run.stop(s["proc"])
            shutil.rmtree(s["work"], ignore_errors=True)
    if args.stack in ("celery", "mp"):
        what = ("%s, %d catalogue records, %d bursts of %d tasks per "
                "mode" % (("celery prefork -c %d, all servers up at once"
                           if args.stack == "celery" else
                           "multiprocessing.Pool(%d) (fork), a pool per "
                           "burst") % args.workers,
                          args.records, args.bursts, args.tasks))
        unit = "task"
    else:
        what = ("%s under gunicorn --preload -w %d%s, all servers up at "
                "once, %d catalogue records, %d bursts of %d s per mode" % (
                    args.stack, args.workers,
                    " --max-requests %d (jitter %d)" % (
                        args.max_requests, max(1, args.max_requests // 10))
                    if args.max_requests else "",
                    args.records, args.bursts, args.seconds))
        unit = "req"
    print("paired CPU per %s: %s" % (unit, what))
    print("  %-16s %12s %10s %7s %7s  %-26s" % (
        "mode", "CPU ms/" + unit, "units", "failed", "rate",
        "per CPU vs %s (q1 median q3)" % base))
    for mode in modes:
        q = ("" if mode == base else
             "%.3fx  %.3fx  %.3fx" % quartiles(ratios[mode]))
        print("  %-16s %12.3f %10d %7d %6.3fx  %s" % (
            mode, 1000 * statistics.median(per[mode]), requests[mode],
            errors[mode], (requests[mode] / spent[mode])
            / (requests[base] / spent[base]), q))
    print("rate: the mode's units per second of its bursts over %s's; "
          "per CPU: %s's CPU time per unit over the mode's "
          "in the neighbouring burst (above 1: the mode needs less)"
          % (base, base))
    if any(errors.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
