"""A real pre-fork server benchmark: gunicorn + Flask under wrk, stock vs cowpy.

    python3 bench/prefork/run.py STOCK COWPY [--workers 4] [--duration 20]
        [--connections 8] [--users 20000] [--requests N] [--rounds 1]
        [--csv-dir DIR] [--modes stock,stock+hooks,cowpy,cowpy-nofreeze]
        [--baseline NAME] [--keep-logs] [--no-attribution]

For each mode, in one run, a fresh server:

    PYTHON -m gunicorn --preload -w N -b 127.0.0.1:PORT [mode args] app:app

(bench/prefork/app.py: a Flask app that builds a large read-mostly object
graph at import).  The runner waits for /health and for N workers, measures
the process tree once ("boot"), warms up for --warmup seconds with wrk,
runs wrk (-t 2, --connections, --duration, bench/prefork/spread.lua: ids
spread over the whole data set), then at once reads /proc/PID/smaps_rollup
of every process of the tree ("loaded"), SIGTERMs the master and makes sure
the whole process group is gone.

Printed: one table (modes as rows; worker USS = Private_Clean +
Private_Dirty, worker PSS, master RSS, total PSS of the tree, requests/s,
errors, ratios against the baseline mode, stock+hooks by default), and one
table of collector activity in the workers.  CSV: DIR/prefork_modes.csv
(one row per mode and round) and DIR/prefork_procs.csv (one row per process
and phase).  See bench/prefork/README.md.

Attribution (on by default, --no-attribution to skip): the servers run
with Tools/cowstat on PYTHONPATH and COWPY_BENCH_ATTRIBUTION_DIR set, so
app.py installs cowstat's attribution handler (ATTRIBUTION_SIGNAL).  After
the "loaded" measurement, every worker gets the signal and writes which
object types sit on the pages it copied from the master; the runner waits
(--attribution-timeout) and prints, per mode, the top rows averaged over the
workers, the copied pages by region (pymalloc arenas, heap, ...) and the
bytes changed since the fork by type, and writes
DIR/prefork_attribution.csv, prefork_attribution_regions.csv and
prefork_attribution_written.csv.

Dependencies come from Debian only (bench/prefork/debian-packages.txt:
gunicorn, python3-flask, wrk).  Debian's pure-Python packages target its
python3.11; this script copies exactly the ones the server needs from
/usr/lib/python3/dist-packages into a private directory (--site-dir,
default build/prefork-site), discovering extra dependencies by importing
under each 3.13 interpreter, and puts only that directory (plus this one)
on the servers' PYTHONPATH.  Only the stdlib is used here, and nothing
cowpy-specific is needed to run the stock modes.

This file holds the modes, one mode's run and main(); the rest is in
common.py (paths, constants, Mode, log), deps.py (Debian packages, the
site directory), server.py (a server's start, readiness, stop, wrk),
sampling.py (the tree's memory through cowstat's /proc reader, cowstat
watch, attribution reports) and report.py (summaries, tables, CSV,
plots).
"""

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

from common import COWSTAT, ROOT, log
from cowstat import proc as cowproc
from deps import build_site, check_deps
from modes import DEFAULT_BASELINE, DEFAULT_MODES, MODES
from report import (aggregate, fmt_attribution, fmt_gc_table, fmt_table,
                    gunicorn_version, plot_watches, read_first, summarize,
                    summarize_attribution, version_of, write_csv)
from sampling import (collect_attribution, measure_tree, start_watch,
                      stop_watch)
from server import (free_port, run_wrk, start_server, stop_server,
                    uwsgi_version, wait_ready)




# ------------------------------------------------------------------ one mode
def run_mode(mode, python, args, site, base_env, rnd):
    workdir = tempfile.mkdtemp(prefix="prefork-%s-" % mode.name.replace(
        "+", "_"))
    port = free_port()
    proc, cmd, env = start_server(python, mode, args, site, base_env, port,
                                  workdir)
    result = {"mode": mode.name, "round": rnd, "python": python,
              "cmd": " ".join(cmd),
              "env": " ".join("%s=%s" % kv for kv in sorted(mode.env.items())),
              "loadavg_start": os.getloadavg()[0]}
    try:
        _run_mode(proc, mode, args, result, port, workdir)
    except BaseException as e:
        # The server's logs stay for a post-mortem.
        if isinstance(e, Exception):
            raise RuntimeError("%s (logs: %s)" % (e, workdir)) from e
        raise
    gcstats = []
    for f in sorted(os.listdir(workdir)):
        if f.startswith("worker-") and f.endswith(".json"):
            with open(os.path.join(workdir, f)) as fh:
                gcstats.append(json.load(fh))
    result["gcstats"] = gcstats
    if args.keep_logs or result.get("restarted"):
        # A worker that died or was replaced: its master's log says why.
        result["workdir"] = workdir
        log("  logs: %s" % workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _run_mode(proc, mode, args, result, port, workdir):
    try:
        t0 = time.monotonic()
        health = wait_ready(proc, port, args.workers, args.startup_timeout,
                            workdir)
        result["startup_s"] = time.monotonic() - t0
        result["health"] = health
        boot = measure_tree(proc.pid)
        watcher = start_watch(proc.pid, mode, args, result)
        if args.warmup_requests:
            # Equal warm-up work too: a faster mode would otherwise read
            # more of the heap during a fixed-time warm-up.
            run_wrk(port, args, args.duration, args.warmup_requests)
        elif args.warmup > 0:
            run_wrk(port, args, args.warmup)
        before = {}
        for pid in cowproc.table_children(cowproc.proc_table(), proc.pid):
            try:
                before[pid] = cowproc.read_cpu_faults(pid)
            except OSError:
                pass
        wrk = run_wrk(port, args, args.duration, args.requests)
        loaded = measure_tree(proc.pid)        # at once, before anything else
        stop_watch(watcher)
        if args.requests and not wrk["budget_reached"]:
            log("warning: %s: --duration ended the load before --requests "
                "%d (%d served)" % (mode.name, args.requests,
                                    wrk["requests"]))
        result["wrk"] = wrk
        result["procs"] = [dict(p, phase="boot") for p in boot] + \
            [dict(p, phase="loaded") for p in loaded]
        workers_now = [p["pid"] for p in loaded if p["role"] == "worker"]
        if len(workers_now) != args.workers:
            log("warning: %s: %d workers after the run (expected %d): a "
                "worker died or was restarted" % (mode.name,
                                                  len(workers_now),
                                                  args.workers))
        # Worker CPU time and minor faults (copy-on-write faults among
        # them) spent on the measured load, per request: robust to other
        # load on the machine, unlike req/s.
        cpu = flt = 0.0
        for p in loaded:
            if p["role"] == "worker" and p["pid"] in before:
                cpu += p["cpu_s"] - before[p["pid"]]["cpu_s"]
                flt += p["minflt"] - before[p["pid"]]["minflt"]
        n = max(1, wrk["requests"])
        result["cpu_ms_per_req"] = 1000.0 * cpu / n
        result["minflt_per_req"] = flt / n
        boot_workers = {p["pid"] for p in boot if p["role"] == "worker"}
        if boot_workers != set(workers_now):
            result["restarted"] = True
            log("warning: %s: the workers after the run are not the ones "
                "measured at boot (restarted?)" % mode.name)
        if args.attribution:
            # After every measurement above: the report walks the heap
            # (CPU, and page copies of its own); the workers keep the
            # collector statistics they had before it (app.py).
            result["attribution"] = collect_attribution(
                workers_now, workdir, args.attribution_timeout, mode.name)
    finally:
        result["killed_at_stop"] = stop_server(proc, args.stop_timeout)



def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stock", help="stock python3 (3.13)")
    ap.add_argument("cowpy", help="cowpy python3")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--duration", type=int, default=20,
                    help="seconds of measured load per mode")
    ap.add_argument("--requests", type=int, default=0,
                    help="stop the measured load after this many requests "
                    "(--duration is then only the upper bound); equal "
                    "work per mode, so worker memory is comparable even "
                    "when throughput differs; 0 = fixed duration only")
    ap.add_argument("--warmup", type=int, default=2,
                    help="seconds of warm-up load (unmeasured)")
    ap.add_argument("--warmup-requests", type=int, default=None,
                    help="warm up with this many requests instead of "
                    "--warmup seconds; default with --requests: a tenth "
                    "of it, else 0 (time-based)")
    ap.add_argument("--wrk-timeout", type=int, default=10,
                    help="wrk's --timeout in seconds (its default, 2 s, "
                    "turns a long collector pause into 'timeout' errors "
                    "instead of latency)")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--users", type=int, default=20000,
                    help="data set size (PREFORK_USERS; ids spread over it)")
    ap.add_argument("--seed", type=int, default=1, help="wrk's random seed")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every mode this many times, interleaved; "
                    "the table shows medians")
    ap.add_argument("--modes", default=DEFAULT_MODES,
                    help="comma-separated, from: %s"
                    % ", ".join(m.name for m in MODES))
    ap.add_argument("--baseline", default=DEFAULT_BASELINE)
    # Not the tracked bench/results/ unless asked (make RECORD=1).
    ap.add_argument("--csv-dir", default=os.environ.get(
        "COWPY_RESULTS", os.path.join(ROOT, "build", "results")))
    ap.add_argument("--site-dir", default=os.path.join(ROOT, "build",
                                                       "prefork-site"))
    ap.add_argument("--startup-timeout", type=float, default=300)
    ap.add_argument("--stop-timeout", type=float, default=30)
    ap.add_argument("--install-deps", action="store_true",
                    help="apt-get install the Debian packages if missing "
                    "(root)")
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep each server's log directory (printed)")
    ap.add_argument("--attribution", action=argparse.BooleanOptionalAction,
                    default=True,
                    help="after the measurements, have every worker write "
                    "cowstat's attribution report (pages copied from the "
                    "master, by object type) and print the top rows per "
                    "mode (default: on)")
    ap.add_argument("--attribution-timeout", type=float, default=120,
                    help="seconds to wait for the workers' reports")
    ap.add_argument("--attribution-top", type=int, default=6,
                    help="attribution rows shown per mode")
    ap.add_argument("--watch", action=argparse.BooleanOptionalAction,
                    default=True,
                    help="sample each server with `cowstat watch` from "
                    "boot to the end of the load and draw "
                    "DIR/prefork_watch_MODE.png with `cowstat plot`")
    ap.add_argument("--watch-interval", type=float, default=1.0)
    args = ap.parse_args()
    if args.warmup_requests is None:
        args.warmup_requests = args.requests // 10
    if args.workers < 1 or args.duration < 1 or args.connections < 1 \
            or args.users < 1 or args.rounds < 1 or args.requests < 0 \
            or args.warmup_requests < 0 or args.attribution_top < 1 \
            or args.attribution_timeout <= 0:
        ap.error("--workers, --duration, --connections, --users, --rounds, "
                 "--attribution-top must be >= 1, --requests and "
                 "--warmup-requests >= 0, --attribution-timeout > 0")
    if args.attribution and not os.path.isfile(
            os.path.join(COWSTAT, "cowstat", "attribution.py")):
        ap.error("--attribution needs %s (or use --no-attribution)"
                 % COWSTAT)
    by_name = {m.name: m for m in MODES}
    modes = []
    for name in [n.strip() for n in args.modes.split(",") if n.strip()]:
        if name not in by_name:
            ap.error("unknown mode %r (known: %s)" % (name, ", ".join(by_name)))
        modes.append(by_name[name])
    pythons = {"stock": os.path.abspath(args.stock),
               "cowpy": os.path.abspath(args.cowpy)}
    for p in pythons.values():
        if not os.access(p, os.X_OK):
            ap.error("not an executable: %s" % p)

    check_deps(args.install_deps)
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith("PYTHON")}
    used = sorted({pythons[m.python] for m in modes})
    pkgs = build_site(args.site_dir, used, base_env)
    os.makedirs(args.csv_dir, exist_ok=True)

    print("prefork benchmark: gunicorn %s (sync) --preload -w %d, Flask "
          "app.py (%d users), wrk -t %d -c %d -d %ds%s --timeout %ds "
          "(+%s warm-up), %d round(s)" % (
              gunicorn_version(),
              args.workers, args.users, min(2, args.connections),
              args.connections, args.duration,
              " or %d requests" % args.requests if args.requests else "",
              args.wrk_timeout,
              "%d requests" % args.warmup_requests if args.warmup_requests
              else "%ds" % args.warmup, args.rounds))
    for name, p in pythons.items():
        print("  %-5s %s (%s)" % (name, p, version_of(p)))
    print("  site: %s (%s; markupsafe pure Python)"
          % (args.site_dir, ", ".join(pkgs)))
    if any(m.server == "uwsgi" for m in modes):
        print("  uwsgi-* modes: uWSGI %s built against the twin (make "
              "uwsgi), master + %d processes, http-socket, the same app:app "
              "loaded before the fork" % (uwsgi_version("cowpy"), args.workers))
    print("  kernel %s, %d CPUs, THP %s, load average %.2f at start"
          % (platform.release(), os.cpu_count() or 0,
             read_first("/sys/kernel/mm/transparent_hugepage/enabled"),
             os.getloadavg()[0]))
    sys.stdout.flush()

    results, failures = [], []
    for rnd in range(1, args.rounds + 1):
        for mode in modes:
            log("[round %d] %s: %s" % (rnd, mode.name, mode.desc))
            try:
                res = run_mode(mode, pythons[mode.python], args,
                               args.site_dir, base_env, rnd)
            except Exception as e:           # keep going with other modes
                log("  FAILED: %s" % e)
                failures.append((mode.name, rnd, str(e)))
                continue
            s = summarize(res)
            res["summary"] = s
            results.append(res)
            log("  %.0f req/s, %d errors, worker USS mean %.1f MiB, tree "
                "PSS %.1f MiB, %d tracked objects at import"
                % (s["rps"], s["errors"], s["uss_mean"], s["tree_pss"],
                   s["tracked_at_import"] or -1))
            if s["errors"]:
                log("  wrk: %s" % res["wrk"]["stdout"].strip()
                    .replace("\n", "\n  wrk: "))

    aggs = []
    for mode in modes:
        rows = [r["summary"] for r in results if r["mode"] == mode.name]
        if rows:
            aggs.append(aggregate(rows))
    if aggs:
        baseline = args.baseline if any(a["mode"] == args.baseline
                                        for a in aggs) else aggs[0]["mode"]
        print()
        if args.rounds > 1:
            print("(medians over %d rounds)" % args.rounds)
        print(fmt_table(aggs, baseline))
        print()
        print("collector in the workers (mean per worker over its life, "
              "warm-up included; wrk latency):")
        print(fmt_gc_table(aggs))
        mode_fields = ["mode", "round", "workers", "uss_mean", "uss_max",
                       "uss_boot_mean", "pss_mean", "worker_rss_mean",
                       "master_rss", "master_uss", "tree_pss",
                       "tree_pss_boot", "rps", "requests", "wrk_seconds",
                       "cpu_ms_per_req", "minflt_per_req",
                       "errors",
                       "non2xx", "socket_errors", "lat_p50_ms", "lat_p99_ms",
                       "lat_max_ms", "startup_s", "loadavg_start",
                       "tracked_at_import", "worker_requests", "gc_gen0",
                       "gc_gen1", "gc_gen2", "gc_shared", "gc_ms",
                       "gc_max_pause_ms", "killed_at_stop", "python", "env",
                       "cmd"]
        write_csv(os.path.join(args.csv_dir, "prefork_modes.csv"),
                  [r["summary"] for r in results], mode_fields)
        proc_fields = ["mode", "round", "phase", "role", "pid", "USS", "Pss",
                       "Rss", "Private_Clean", "Private_Dirty",
                       "Shared_Clean", "Shared_Dirty", "Anonymous",
                       "Pss_Anon", "Pss_File", "Swap", "cpu_s", "minflt"]
        procs = [dict(p, mode=r["mode"], round=r["round"])
                 for r in results for p in r["procs"]]
        write_csv(os.path.join(args.csv_dir, "prefork_procs.csv"), procs,
                  proc_fields)
        csvs = "prefork_procs.csv"
        if args.attribution:
            print()
            print("attribution (cowstat, after the load and the memory "
                  "readings): pages each worker copied from the master, by "
                  "the object type with the most bytes on the page; mean "
                  "over the workers%s, top %d types:"
                  % (" of every round" if args.rounds > 1 else "",
                     args.attribution_top))
            att_rows, region_rows, written_rows = [], [], []
            for a in aggs:
                att = summarize_attribution(results, a["mode"],
                                            args.attribution_top)
                print(fmt_attribution(att, a["uss_mean"]))
                for r in att.get("regions", []):
                    region_rows.append(dict(r, mode=a["mode"],
                                            workers=att["workers"]))
                for r in att.get("written", []):
                    written_rows.append(dict(r, mode=a["mode"],
                                             workers=att["workers"]))
                for r in att.get("rows", []):
                    att_rows.append(dict(
                        r, mode=a["mode"], workers=att["workers"],
                        copied_pages_mean=att["copied_pages_mean"],
                        method="/".join(att["methods"]),
                        unfrozen=att["unfrozen"]))
            write_csv(os.path.join(args.csv_dir, "prefork_attribution.csv"),
                      att_rows, ["mode", "rank", "type", "pages_mean",
                                 "mib_mean", "share", "pages_min",
                                 "pages_max", "touched_mean",
                                 "objects_mean", "workers",
                                 "copied_pages_mean", "method", "unfrozen"])
            csvs += ", prefork_attribution.csv"
            if region_rows:
                write_csv(os.path.join(args.csv_dir,
                                       "prefork_attribution_regions.csv"),
                          region_rows, ["mode", "region", "pages_mean",
                                        "mib_mean", "share", "pages_min",
                                        "pages_max", "no_object_mean",
                                        "identical_mean", "alloc_only_mean",
                                        "immortal_written_mean", "workers",
                                        "label"])
                csvs += ", prefork_attribution_regions.csv"
            if written_rows:
                write_csv(os.path.join(args.csv_dir,
                                       "prefork_attribution_written.csv"),
                          written_rows, ["mode", "type", "pages_mean",
                                         "bytes_mean", "immortal_bytes_mean",
                                         "objects_mean", "workers"])
                csvs += ", prefork_attribution_written.csv"
        print("\nCSV (kB per process, MiB per mode): %s/prefork_modes.csv, "
              "%s" % (args.csv_dir, csvs))
        if args.watch:
            print("memory over time (cowstat watch + plot):")
            plot_watches(results, args)
    for name, rnd, err in failures:
        print("FAILED: %s (round %d): %s" % (name, rnd, err.splitlines()[0]))
    return 1 if failures or not aggs else 0


if __name__ == "__main__":
    sys.exit(main())
