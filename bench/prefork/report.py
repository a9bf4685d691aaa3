"""The pre-fork benchmark's results: per-mode summaries and their median
over rounds, the printed tables, CSV files, the attribution summaries,
the `cowstat plot` PNGs and the versions printed in the header.
"""

import csv
import os
import re
import statistics
import subprocess
import sys

from common import COWSTAT, DIST, MIB, ROOT, log

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------ summaries
def summarize(res):
    loaded = [p for p in res["procs"] if p["phase"] == "loaded"]
    boot = [p for p in res["procs"] if p["phase"] == "boot"]
    w = [p for p in loaded if p["role"] == "worker"]
    wb = [p for p in boot if p["role"] == "worker"]
    master = [p for p in loaded if p["role"] == "master"][0]
    wrk = res["wrk"]
    gs = res["gcstats"]

    def mean(xs):
        return statistics.fmean(xs) if xs else float("nan")

    s = {
        "mode": res["mode"], "round": res["round"],
        "workers": len(w),
        "uss_mean": mean([p["USS"] for p in w]) / MIB,
        "uss_max": max([p["USS"] for p in w], default=0) / MIB,
        "uss_boot_mean": mean([p["USS"] for p in wb]) / MIB,
        "pss_mean": mean([p["Pss"] for p in w]) / MIB,
        "worker_rss_mean": mean([p["Rss"] for p in w]) / MIB,
        "master_rss": master["Rss"] / MIB,
        "master_uss": master["USS"] / MIB,
        "tree_pss": sum(p["Pss"] for p in loaded) / MIB,
        "tree_pss_boot": sum(p["Pss"] for p in boot) / MIB,
        "rps": wrk["rps"], "requests": wrk["requests"],
        "cpu_ms_per_req": res["cpu_ms_per_req"],
        "minflt_per_req": res["minflt_per_req"],
        "wrk_seconds": wrk["duration_us"] / 1e6,
        "errors": wrk["errors"], "non2xx": wrk["non2xx"],
        "socket_errors": wrk["socket_errors"],
        "lat_p50_ms": wrk["lat_p50_us"] / 1000.0,
        "lat_p99_ms": wrk["lat_p99_us"] / 1000.0,
        "lat_max_ms": wrk["lat_max_us"] / 1000.0,
        "startup_s": res["startup_s"],
        "loadavg_start": res["loadavg_start"],
        "tracked_at_import": res["health"].get("tracked_at_import"),
        "worker_requests": mean([g["requests"] for g in gs]),
        "gc_gen0": mean([g["collections"][0] for g in gs]),
        "gc_gen1": mean([g["collections"][1] for g in gs]),
        "gc_gen2": mean([g["collections"][2] for g in gs]),
        "gc_shared": mean([g.get("shared_since_fork", {})
                           .get("collections", 0) for g in gs]),
        "gc_ms": mean([g["gc_ms"] for g in gs]),
        "gc_max_pause_ms": max([g["gc_max_pause_ms"] for g in gs],
                               default=float("nan")),
        "killed_at_stop": res["killed_at_stop"],
        "env": res["env"], "python": res["python"], "cmd": res["cmd"],
    }
    return s


NUMERIC_MEDIAN = ("uss_mean", "uss_max", "uss_boot_mean", "pss_mean",
                  "worker_rss_mean", "master_rss", "master_uss", "tree_pss",
                  "tree_pss_boot", "rps", "requests", "errors", "non2xx",
                  "socket_errors", "wrk_seconds", "lat_p50_ms", "lat_p99_ms", "lat_max_ms",
                  "startup_s", "worker_requests", "gc_gen0", "gc_gen1",
                  "cpu_ms_per_req", "minflt_per_req",
                  "gc_gen2", "gc_shared", "gc_ms", "gc_max_pause_ms")


def aggregate(rows):
    """Median over rounds of one mode's summaries."""
    agg = dict(rows[0])
    for k in NUMERIC_MEDIAN:
        agg[k] = statistics.median(r[k] for r in rows)
    agg["rps_min"] = min(r["rps"] for r in rows)
    agg["rps_max"] = max(r["rps"] for r in rows)
    agg["errors"] = sum(r["errors"] for r in rows)
    agg["rounds"] = len(rows)
    return agg


# ------------------------------------------------------------------ output
def fmt_table(aggs, baseline):
    base = next((a for a in aggs if a["mode"] == baseline), None)

    def ratio(a, k):
        if base is None or not base[k]:
            return "-"
        return "%.2f" % (a[k] / base[k])

    head = [("mode", "", "<"), ("USS mean", "MiB", ">"),
            ("USS max", "MiB", ">"), ("USS boot", "MiB", ">"),
            ("PSS mean", "MiB", ">"), ("master RSS", "MiB", ">"),
            ("tree PSS", "MiB", ">"), ("req/s", "", ">"),
            ("requests", "", ">"), ("errors", "", ">"),
            ("USS", "ratio", ">"),
            ("tree PSS", "ratio", ">"), ("req/s", "ratio", ">")]
    rows = []
    for a in aggs:
        rows.append([a["mode"], "%.1f" % a["uss_mean"], "%.1f" % a["uss_max"],
                     "%.1f" % a["uss_boot_mean"], "%.1f" % a["pss_mean"],
                     "%.1f" % a["master_rss"], "%.1f" % a["tree_pss"],
                     "%.0f" % a["rps"], "%d" % a["requests"],
                     "%d" % a["errors"],
                     ratio(a, "uss_mean"), ratio(a, "tree_pss"),
                     ratio(a, "rps")])
    widths = [max(len(h[0]), len(h[1]), *(len(r[i]) for r in rows))
              for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(("%-*s" if h[2] == "<" else "%*s") % (w, c)
                         for c, w, h in zip(cells, widths, head)).rstrip()

    out = [line([h[0] for h in head]), line([h[1] for h in head])]
    out += [line(r) for r in rows]
    if base is not None:
        out.append("ratios: worker USS mean, tree PSS and req/s vs %s"
                   % baseline)
    return "\n".join(out)


def fmt_gc_table(aggs):
    head = ["mode", "CPU ms/req", "faults/req", "req/worker", "gen0",
            "gen1", "gen2", "shared", "gc ms", "max pause ms", "p50 ms",
            "p99 ms"]
    rows = [[a["mode"], "%.2f" % a["cpu_ms_per_req"],
             "%.1f" % a["minflt_per_req"], "%.0f" % a["worker_requests"],
             "%.0f" % a["gc_gen0"],
             "%.0f" % a["gc_gen1"], "%.1f" % a["gc_gen2"],
             "%.1f" % a["gc_shared"], "%.1f" % a["gc_ms"],
             "%.1f" % a["gc_max_pause_ms"], "%.1f" % a["lat_p50_ms"],
             "%.1f" % a["lat_p99_ms"]] for a in aggs]
    widths = [max(len(h), *(len(r[i]) for r in rows))
              for i, h in enumerate(head)]
    out = ["  ".join(("%-*s" if i == 0 else "%*s") % (w, c)
                     for i, (c, w) in enumerate(zip(head, widths)))]
    for r in rows:
        out.append("  ".join(("%-*s" if i == 0 else "%*s") % (w, c)
                             for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)




def write_csv(path, rows, fields):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (round(v, 3) if isinstance(v, float) else v)
                        for k, v in r.items()})


# ------------------------------------------------------------------ versions
def version_of(python):
    return subprocess.run([python, "-c", "import sys; print(sys.version"
                           ".split()[0])"], capture_output=True, text=True,
                          check=True).stdout.strip()


def gunicorn_version():
    text = read_first(os.path.join(DIST, "gunicorn", "__init__.py"))
    m = re.search(r"version_info\s*=\s*\(([^)]*)\)", text)
    return ".".join(x.strip() for x in m.group(1).split(",")) if m else "?"


def read_first(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "?"


def plot_watches(results, args):
    """One PNG per mode: shared vs private memory of each process over
    time, drawn by `cowstat plot` (matplotlib from Debian)."""
    done = set()
    for res in results:
        path = res.get("watch_csv")
        if not path or path in done or not os.path.exists(path):
            continue
        done.add(path)
        png = path[:-4] + ".png"
        title = "%s: %s, %d workers" % (res["mode"], os.path.basename(
            res["python"].rsplit("/bin/", 1)[0]), args.workers)
        r = subprocess.run(
            [sys.executable, "-m", "cowstat", "plot", path, "--png", png,
             "--title", title],
            env=dict(os.environ, PYTHONPATH=COWSTAT),
            capture_output=True, text=True)
        if r.returncode == 0:
            print("  %s" % os.path.relpath(png, ROOT))
        else:
            log("warning: cowstat plot %s failed: %s"
                % (path, (r.stderr or r.stdout).strip()))


# ------------------------------------------------------------------ attribution
def summarize_attribution(results, mode_name, top):
    """Mean over the workers (of every round) of MODE_NAME's reports."""
    reps = [r for res in results if res["mode"] == mode_name
            for r in res.get("attribution", {}).get("reports", [])
            if "rows" in r]
    missing = sum(len(res.get("attribution", {}).get("missing", []))
                  + sum(1 for r in res.get("attribution", {})
                        .get("reports", []) if "rows" not in r)
                  for res in results if res["mode"] == mode_name)
    if not reps:
        return {"mode": mode_name, "workers": 0, "missing": missing}
    n = len(reps)
    per_type = {}
    for i, r in enumerate(reps):
        for row in r["rows"]:
            d = per_type.setdefault(row["type"], {
                "pages": [0] * n, "touched": [0] * n, "objects": [0] * n})
            d["pages"][i] = row["pages"]
            d["touched"][i] = row["touched"] or 0
            d["objects"][i] = row["objects"] or 0
    totals = [r["header"]["copied_pages"] for r in reps]

    def mib(pages):
        return pages * PAGE_SIZE / 2.0 ** 20

    rows = []
    for name, d in per_type.items():
        rows.append({"type": name,
                     "pages_mean": statistics.fmean(d["pages"]),
                     "pages_min": min(d["pages"]),
                     "pages_max": max(d["pages"]),
                     "touched_mean": statistics.fmean(d["touched"]),
                     "objects_mean": statistics.fmean(d["objects"])})
    rows.sort(key=lambda r: (-r["pages_mean"], r["type"]))
    total = statistics.fmean(totals)
    shown = rows[:top]
    rest = rows[top:]
    if rest:
        other = [sum(x) for x in zip(*(per_type[r["type"]]["pages"]
                                       for r in rest))]
        shown.append({"type": "(%d other types)" % len(rest),
                      "pages_mean": statistics.fmean(other),
                      "pages_min": min(other), "pages_max": max(other),
                      "touched_mean": None, "objects_mean": None})
    shown.append({"type": "TOTAL", "pages_mean": total,
                  "pages_min": min(totals), "pages_max": max(totals),
                  "touched_mean": None, "objects_mean": None})
    for rank, r in enumerate(shown, 1):
        r["rank"] = rank if rank <= top else ""
        r["mib_mean"] = mib(r["pages_mean"])
        r["share"] = r["pages_mean"] / total if total else 0.0
    headers = [r["header"] for r in reps]
    metas = [r.get("meta", {}) for r in reps]
    return {
        "mode": mode_name, "workers": n, "missing": missing, "rows": shown,
        "regions": _mean_regions(reps, total),
        "written": _mean_written(reps, top),
        "diff": sorted({h.get("diff", "off") for h in headers}),
        "pymalloc_by_cause": _mean_nested(
            [h.get("pymalloc_by_cause") for h in headers]),
        "parent_pymalloc": _mean_nested(
            [h.get("parent_pymalloc") for h in headers]),
        "copied_pages_mean": total,
        "methods": sorted({h["method"] for h in headers}),
        "new_pages_mean": statistics.fmean(h["new_pages"] for h in headers),
        "walked_mean": statistics.fmean(h["objects_walked"]
                                        for h in headers),
        "walk_s_mean": statistics.fmean(h["walk_seconds"] for h in headers),
        "snapshot_s_mean": statistics.fmean(h["snapshot_seconds"]
                                            for h in headers),
        "objects_note": headers[0]["objects_note"],
        "frozen_before": max(m.get("frozen_before", 0) for m in metas),
        "unfrozen": any(m.get("unfrozen") for m in metas),
    }


REGION_FIELDS = ("pages", "no_object", "identical", "alloc_only",
                 "immortal_written")


def _mean_regions(reps, total):
    """Mean per worker of each region row (cowstat's "copied pages by
    region" table); [] for reports without it."""
    n = len(reps)
    by = {}
    for i, r in enumerate(reps):
        for row in r.get("regions") or []:
            d = by.setdefault(row["region"], {
                "region": row["region"], "label": row.get("label", ""),
                **{k: [None] * n for k in REGION_FIELDS}})
            for k in REGION_FIELDS:
                d[k][i] = row.get(k)
    out = []
    for d in by.values():
        row = {"region": d["region"], "label": d["label"]}
        for k in REGION_FIELDS:
            vals = [v for v in d[k] if v is not None]
            row[k + "_mean"] = statistics.fmean(vals) if vals else None
        row["pages_min"] = min(v or 0 for v in d["pages"])
        row["pages_max"] = max(v or 0 for v in d["pages"])
        row["mib_mean"] = row["pages_mean"] * PAGE_SIZE / 2.0 ** 20
        row["share"] = row["pages_mean"] / total if total else 0.0
        out.append(row)
    return out


def _mean_nested(dicts):
    """Mean of dicts of numbers (or of such dicts), key by key; None when
    no report has it."""
    dicts = [d for d in dicts if isinstance(d, dict) and "error" not in d]
    if not dicts:
        return None
    out = {}
    for k, v in dicts[0].items():
        if isinstance(v, dict):
            out[k] = _mean_nested([d.get(k) for d in dicts])
        elif isinstance(v, (int, float)):
            out[k] = statistics.fmean(d.get(k) or 0 for d in dicts)
    return out


def _mean_written(reps, top):
    """Mean per worker of cowstat's "bytes changed" rows (pages on which
    the type holds most changed bytes, changed bytes), top TOP by pages
    plus the rest summed."""
    n = len(reps)
    by = {}
    for i, r in enumerate(reps):
        for row in r.get("written") or []:
            d = by.setdefault(row["type"], {"pages": [0] * n,
                                            "bytes": [0] * n,
                                            "immortal_bytes": [0] * n,
                                            "objects": [0] * n})
            for k in d:
                d[k][i] = row.get(k) or 0
    rows = [{"type": name,
             **{k + "_mean": statistics.fmean(v) for k, v in d.items()}}
            for name, d in by.items()]
    rows.sort(key=lambda r: (-r["pages_mean"], -r["bytes_mean"], r["type"]))
    shown, rest = rows[:top], rows[top:]
    if rest:
        shown.append({"type": "(%d other types)" % len(rest),
                      **{k: sum(r[k] for r in rest)
                         for k in ("pages_mean", "bytes_mean",
                                   "immortal_bytes_mean", "objects_mean")}})
    return shown


def fmt_attribution(att, uss_mean):
    if not att["workers"]:
        return "%s: no attribution report (%d missing or failed)" % (
            att["mode"], att["missing"])
    out = ["%s: %d worker(s)%s, copied %.0f pages = %.1f MiB per worker "
           "(worker USS mean %.1f MiB); method %s; %.0f objects walked "
           "in %.1f s%s" % (
               att["mode"], att["workers"],
               " (%d missing or failed)" % att["missing"]
               if att["missing"] else "",
               att["copied_pages_mean"],
               att["copied_pages_mean"] * PAGE_SIZE / 2.0 ** 20,
               uss_mean, "/".join(att["methods"]), att["walked_mean"],
               att["walk_s_mean"],
               "; gc.unfreeze() of %d frozen objects before the report"
               % att["frozen_before"] if att["unfrozen"] else "")]
    width = max(len("type"), *(len(r["type"]) for r in att["rows"]))
    fmt = "  %-*s  %9s  %7s  %6s  %15s"
    out.append(fmt % (width, "type", "pages", "MiB", "share",
                      "pages min..max"))
    for r in att["rows"]:
        out.append(fmt % (width, r["type"], "%.0f" % r["pages_mean"],
                          "%.1f" % r["mib_mean"],
                          "%.1f%%" % (100.0 * r["share"]),
                          "%d..%d" % (r["pages_min"], r["pages_max"])))
    if att.get("regions"):
        def opt(v):
            return "-" if v is None else "%.0f" % v
        out.append("  by region (mean pages; no_object: no object found; "
                   "identical: same bytes as the master's page; "
                   "alloc_only: every changed byte outside the objects "
                   "found; immortal_w: a changed byte in an immortal "
                   "object):")
        fmt = "  %-9s %9s %7s %6s %10s %10s %11s %11s  %s"
        out.append(fmt % ("region", "pages", "MiB", "share", "no_object",
                          "identical", "alloc_only", "immortal_w",
                          "description"))
        for r in att["regions"]:
            out.append(fmt % (r["region"], "%.0f" % r["pages_mean"],
                              "%.1f" % r["mib_mean"],
                              "%.1f%%" % (100.0 * r["share"]),
                              opt(r["no_object_mean"]),
                              opt(r["identical_mean"]),
                              opt(r["alloc_only_mean"]),
                              opt(r["immortal_written_mean"]), r["label"]))
    bc = att.get("pymalloc_by_cause")
    if bc:
        f, n = bc["free_in_parent"], bc["full_in_parent"]
        out.append("  pymalloc pages by the master's pool: %.0f had a free "
                   "or never used block there in the master (identical "
                   "%.0f, immortal written %.0f, other %.0f); %.0f had none "
                   "(identical %.0f, immortal written %.0f, other %.0f)" % (
                       sum(f.values()), f["identical"],
                       f["immortal_written"], f["other"], sum(n.values()),
                       n["identical"], n["immortal_written"], n["other"]))
    pc = att.get("parent_pymalloc")
    if pc:
        out.append("  master's pymalloc pools: %.0f (%.0f KiB): in use "
                   "%.0f KiB, free-listed (holes) %.0f KiB in %.0f pools on "
                   "%.0f pages, never used %.0f KiB (%.0f more pages), %.0f "
                   "empty pools" % (
                       pc["pools"], pc["pool_kib"], pc["used_kib"],
                       pc["free_kib"], pc["pools_with_holes"],
                       pc.get("hole_pages", 0), pc["virgin_kib"],
                       pc.get("virgin_pages", 0), pc["empty_pools"]))
    if att.get("written"):
        width = max(len("changed bytes by type"),
                    *(len(r["type"]) for r in att["written"]))
        fmt = "  %-*s  %9s  %10s  %10s"
        out.append("  bytes changed since the fork (each copied page "
                   "compared with the master's), mean per worker:")
        out.append(fmt % (width, "changed bytes by type", "pages", "bytes",
                          "immortal"))
        for r in att["written"]:
            out.append(fmt % (width, r["type"], "%.0f" % r["pages_mean"],
                              "%.0f" % r["bytes_mean"],
                              "%.0f" % r["immortal_bytes_mean"]))
    return "\n".join(out)
