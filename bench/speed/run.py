"""General speed suite: stock vs cowpy, interleaved, one process per sample.

    python3 bench/speed/run.py STOCK COWPY [--processes N] [--warmup W]
        [--only NAMES] [--quick] [--scale S] [--csv-dir DIR] [--png FILE]

For every workload in bench/speed/workloads/ (see README.md), N samples
per side are taken in fresh processes, interleaved A B B A A B ... (the
side that goes first alternates), so both interpreters see the same
machine noise.  A sample: import the workload, setup() (untimed), W
warm-up run() calls (untimed), gc.collect(), then one run() timed with
time.perf_counter().

Reported per workload: the median time of each side with its min-max
spread, the ratio cowpy/stock of the medians (> 1: cowpy slower), a
bootstrap 95 % interval of that ratio, and a verdict; then the geometric
mean of the ratios with its own bootstrap interval.  Writes DIR/speed.csv
(summary), DIR/speed_samples.csv (every sample) and a PNG bar chart
(drawn by plot.py under /usr/bin/python3, which has Debian's matplotlib).

--quick runs every workload at scale 0.1 (a smoke test, not a
measurement); --scale sets any other size.
"""

import argparse
import csv
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True      # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

HERE = _common.HERE
ROOT = os.path.dirname(os.path.dirname(HERE))
# Not the tracked bench/results/ unless asked (make RECORD=1).
DEFAULT_CSV_DIR = os.environ.get("COWPY_RESULTS",
                                 os.path.join(ROOT, "build", "results"))
BOOTSTRAP = 2000
NO_DIFF = "no measurable difference"


def bootstrap_ratios(stock, cowpy, rng, n=BOOTSTRAP):
    """n bootstrap replicates of median(cowpy) / median(stock)."""
    out = []
    med = statistics.median
    for _ in range(n):
        s = [stock[rng.randrange(len(stock))] for _ in stock]
        c = [cowpy[rng.randrange(len(cowpy))] for _ in cowpy]
        out.append(med(c) / med(s))
    return out


def percentile(sorted_vals, q):
    """Linear-interpolated percentile, q in [0, 1]."""
    if not sorted_vals:
        return float("nan")
    k = (len(sorted_vals) - 1) * q
    lo = math.floor(k)
    hi = math.ceil(k)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def verdict(s, c, lo, hi):
    if min(len(s), len(c)) < 3:
        return "too few samples (need >= 3 per side)"
    ms, mc = statistics.median(s), statistics.median(c)
    diff = abs(mc - ms)
    spread = max(max(s) - min(s), max(c) - min(c))
    if lo <= 1.0 <= hi or spread > diff:
        return NO_DIFF
    pct = (mc / ms - 1) * 100
    return "cowpy %.1f%% %s" % (abs(pct), "slower" if pct > 0 else "faster")


def describe(python):
    code = ("import sys, gc; print(sys.version.split()[0], "
            "getattr(gc, 'get_cow_mode', lambda: '-')())")
    try:
        p = subprocess.run([python, "-s", "-c", code], capture_output=True,
                           text=True, env=_common.worker_env(), timeout=60)
        return p.stdout.strip() or p.stderr.strip()[-200:]
    except OSError as e:
        return "cannot run: %s" % e


def fmt_info(info):
    if not info:
        return ""
    return ", ".join("%s=%s" % (k, v) for k, v in info.items())


def print_peak_rss(names, failed, extra):
    """Peak RSS (VmHWM) per workload: a process that never forks must use
    the same memory as stock (issue #6: within 1 %).  Also without the
    file-backed pages (VmHWM - RssFile at the end): the interpreter's and
    libc's text are page cache mapped in by fault-around, which moves
    RSS by ~100 KiB between runs, 1 % of the smallest workloads."""
    print("\nPeak RSS (MiB; median per side; the process never forks)")
    hdr = "%-22s %9s %9s %7s   %9s %9s %7s" % (
        "workload", "stock", "cowpy", "ratio", "stock", "cowpy", "ratio")
    print("%-22s %27s   %27s" % ("", "VmHWM", "VmHWM - RssFile"))
    print(hdr)
    print("-" * len(hdr))
    worst = {"all": None, "anon": None}
    for name in names:
        if name in failed:
            continue
        med = {}
        for lab in ("stock", "cowpy"):
            ex = [e for e in extra[name][lab] if e.get("peak_rss_kb")]
            med[lab] = (statistics.median(e["peak_rss_kb"] for e in ex)
                        if ex else None,
                        statistics.median(e["peak_rss_kb"]
                                          - e.get("rss_file_kb", 0)
                                          for e in ex) if ex else None)
        if not med["stock"][0] or not med["cowpy"][0]:
            print("%-22s %9s" % (name, "-"))
            continue
        cols = []
        for k, key in ((0, "all"), (1, "anon")):
            ratio = med["cowpy"][k] / med["stock"][k]
            worst[key] = ratio if worst[key] is None else max(worst[key],
                                                               ratio)
            cols += [med["stock"][k] / 1024, med["cowpy"][k] / 1024, ratio]
        print("%-22s %9.1f %9.1f %7.3f   %9.1f %9.1f %7.3f"
              % ((name,) + tuple(cols)))
    if worst["all"] is not None:
        print("-" * len(hdr))
        for key, label in (("all", "VmHWM"),
                           ("anon", "VmHWM - RssFile")):
            print("largest ratio, %s: %.3f (%s 1 %% of stock)" % (
                label, worst[key],
                "within" if worst[key] <= 1.01 else "NOT within"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stock")
    ap.add_argument("cowpy")
    ap.add_argument("--processes", type=int, default=5,
                    help="samples (fresh processes) per side and workload")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed run() calls before the timed one")
    ap.add_argument("--only", default="",
                    help="comma-separated workload names")
    ap.add_argument("--quick", action="store_true",
                    help="scale 0.1: a smoke test of the suite")
    ap.add_argument("--scale", type=float, default=None,
                    help="work per run() (default 1.0, 0.1 with --quick)")
    ap.add_argument("--csv-dir", default=DEFAULT_CSV_DIR)
    ap.add_argument("--png", default=None,
                    help="chart file (default CSV_DIR/speed.png; '' for none)")
    ap.add_argument("--plot-python", default="/usr/bin/python3")
    ap.add_argument("--seed", type=int, default=20240601,
                    help="seed of the bootstrap resampling")
    args = ap.parse_args()
    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    if args.processes < 1:
        ap.error("--processes must be >= 1")
    png = args.png if args.png is not None else os.path.join(args.csv_dir,
                                                             "speed.png")
    args.stock = _common.resolve(args.stock)
    args.cowpy = _common.resolve(args.cowpy)
    names, skipped = _common.select(args.only, args.stock, args.cowpy)
    sides = (("stock", args.stock), ("cowpy", args.cowpy))

    print("Speed suite: cowpy vs stock, %d process(es) per side, warm-up %d, "
          "scale %g%s" % (args.processes, args.warmup, scale,
                          "  [--quick: smoke test, not a measurement]"
                          if args.quick else ""))
    for label, py in sides:
        print("  %-5s %s  (%s)" % (label, py, describe(py)))
    print("  host %s, %d CPUs, load average at start %.2f"
          % (platform.node(), os.cpu_count() or 0, os.getloadavg()[0]))
    for n, why in skipped:
        print("  skipped %s: %s" % (n, why))
    print(flush=True)

    samples = {n: {"stock": [], "cowpy": []} for n in names}
    extra = {n: {"stock": [], "cowpy": []} for n in names}
    failed = {}
    raw_rows = []
    pair = 0
    t_start = time.time()
    for name in names:
        for i in range(args.processes):
            order = sides if pair % 2 == 0 else sides[::-1]
            pair += 1
            for label, py in order:
                if name in failed:
                    break
                try:
                    r = _common.run_worker(py, name, scale, args.warmup)
                except (_common.WorkerError, subprocess.TimeoutExpired) as e:
                    failed[name] = "%s: %s" % (label, e)
                    print("  %s: %s FAILED\n%s" % (name, label, e), flush=True)
                    break
                samples[name][label].append(r["time"])
                extra[name][label].append(r)
                raw_rows.append({
                    "workload": name, "side": label, "sample": i,
                    "first": label == order[0][0], "time_s": "%.6f" % r["time"],
                    "result": r.get("result"),
                    "collections": " ".join(map(str, r.get("collections", []))),
                    "maxrss_kb": r.get("maxrss_kb"),
                    "peak_rss_kb": r.get("peak_rss_kb"),
                    "rss_file_kb": r.get("rss_file_kb"),
                    "info": fmt_info(r.get("info"))})
        if name not in failed:
            s, c = samples[name]["stock"], samples[name]["cowpy"]
            print("  %-22s stock %s  cowpy %s" % (
                name, " ".join("%.3f" % v for v in s),
                " ".join("%.3f" % v for v in c)), flush=True)

    # ------------------------------------------------------------ report
    rng = random.Random(args.seed)
    rows = []
    boots = {}
    for name in names:
        if name in failed:
            continue
        s, c = samples[name]["stock"], samples[name]["cowpy"]
        ratio = statistics.median(c) / statistics.median(s)
        b = bootstrap_ratios(s, c, rng)
        boots[name] = b
        bs = sorted(b)
        lo, hi = percentile(bs, 0.025), percentile(bs, 0.975)
        notes = []
        res = {e.get("result") for lab in ("stock", "cowpy")
               for e in extra[name][lab]}
        if len(res) > 1:
            notes.append("RESULTS DIFFER between runs: %s" % sorted(res)[:3])
        for lab in ("stock", "cowpy"):
            infos = {fmt_info(e.get("info")) for e in extra[name][lab]}
            infos.discard("")
            if infos:
                notes.append("%s: %s" % (lab, " | ".join(sorted(infos))))
        colls = {lab: " ".join(sorted({"/".join(map(str, e.get("collections", ())))
                                       for e in extra[name][lab]}))
                 for lab in ("stock", "cowpy")}
        if colls["stock"] == colls["cowpy"]:
            notes.append("collections per generation in run(): %s (both)"
                         % colls["stock"])
        else:
            notes.append("collections per generation in run(): stock %s, "
                         "cowpy %s" % (colls["stock"], colls["cowpy"]))
        rows.append({
            "workload": name, "n_stock": len(s), "n_cowpy": len(c),
            "stock_median_s": statistics.median(s), "stock_min_s": min(s),
            "stock_max_s": max(s),
            "cowpy_median_s": statistics.median(c), "cowpy_min_s": min(c),
            "cowpy_max_s": max(c),
            "ratio": ratio, "ci_low": lo, "ci_high": hi,
            "verdict": verdict(s, c, lo, hi), "notes": "; ".join(notes)})

    geo = None
    if rows:
        logs = [math.log(r["ratio"]) for r in rows]
        g = math.exp(sum(logs) / len(logs))
        gb = sorted(math.exp(sum(math.log(boots[r["workload"]][k]) for r in rows)
                             / len(rows)) for k in range(BOOTSTRAP))
        glo, ghi = percentile(gb, 0.025), percentile(gb, 0.975)
        geo = {"workload": "GEOMEAN", "n_stock": "", "n_cowpy": "",
               "stock_median_s": "", "stock_min_s": "", "stock_max_s": "",
               "cowpy_median_s": "", "cowpy_min_s": "", "cowpy_max_s": "",
               "ratio": g, "ci_low": glo, "ci_high": ghi,
               "verdict": ("too few samples (need >= 3 per side)"
                           if min(min(r["n_stock"], r["n_cowpy"])
                                  for r in rows) < 3 else
                           NO_DIFF if glo <= 1.0 <= ghi else
                           "cowpy %.1f%% %s" % (abs(g - 1) * 100,
                                                "slower" if g > 1 else "faster")),
               "notes": "geometric mean of %d ratios" % len(rows)}

    print()
    hdr = ("%-22s %19s %19s %7s %15s  %s" % (
        "workload", "stock s [min-max]", "cowpy s [min-max]", "ratio",
        "95% CI", "verdict"))
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print("%-22s %6.3f [%5.3f-%5.3f] %6.3f [%5.3f-%5.3f] %7.3f %7.3f-%-7.3f  %s" % (
            r["workload"], r["stock_median_s"], r["stock_min_s"], r["stock_max_s"],
            r["cowpy_median_s"], r["cowpy_min_s"], r["cowpy_max_s"],
            r["ratio"], r["ci_low"], r["ci_high"], r["verdict"]))
    if geo:
        print("-" * len(hdr))
        print("%-22s %19s %19s %7.3f %7.3f-%-7.3f  %s" % (
            "geometric mean", "", "", geo["ratio"], geo["ci_low"],
            geo["ci_high"], geo["verdict"]))
    for name, why in failed.items():
        print("%-22s FAILED (%s)" % (name, why.splitlines()[0]))
    print("\nratio = median(cowpy) / median(stock); > 1 means cowpy is slower.")
    print_peak_rss(names, failed, extra)
    print("Notes:")
    for r in rows:
        print("  %s: %s" % (r["workload"], r["notes"]))
    print("  load average at end %.2f; wall time %.0f s"
          % (os.getloadavg()[0], time.time() - t_start))

    # ------------------------------------------------------------ files
    os.makedirs(args.csv_dir, exist_ok=True)
    csv_path = os.path.join(args.csv_dir, "speed.csv")
    fields = ["workload", "n_stock", "n_cowpy", "stock_median_s", "stock_min_s",
              "stock_max_s", "cowpy_median_s", "cowpy_min_s", "cowpy_max_s",
              "ratio", "ci_low", "ci_high", "verdict", "notes"]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows + ([geo] if geo else []):
            w.writerow({k: ("%.6f" % v if isinstance(v, float) else v)
                        for k, v in r.items()})
    raw_path = os.path.join(args.csv_dir, "speed_samples.csv")
    with open(raw_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(raw_rows[0]) if raw_rows
                           else ["workload"])
        w.writeheader()
        w.writerows(raw_rows)
    print("\nwrote %s, %s" % (csv_path, raw_path))
    if png and rows:
        title = "cowpy / stock time, median of %d process(es) per side%s" % (
            args.processes, " (--quick smoke test)" if args.quick else "")
        cmd = [args.plot_python, os.path.join(HERE, "plot.py"), csv_path, png,
               "--title", title]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode == 0:
            print("wrote %s" % png)
        else:
            print("WARNING: no chart (%s exited %d): %s" % (
                args.plot_python, p.returncode,
                p.stderr.strip().splitlines()[-1:] or ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
