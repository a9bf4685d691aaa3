"""The last writers (docs/last-writers.md): each page a worker copied from
the master, counted once under the candidate cause of #6 it belongs to.

    python3 bench/prefork/last_writers.py [--procs DIR/prefork_procs.csv]...
        [--top N] LOGDIR_OR_JSON...

Input: the workers' attribution-PID.json files that bench/prefork/run.py
leaves in each server's log directory (--keep-logs, printed as "logs:
DIR"), written with COWPY_BENCH_ATTRIBUTION_DETAIL=1 so that they hold
cowstat's "page_detail" (cowstat.formatting.AttributionReport.to_dict:
address, region, type, writer = the type with the most changed bytes,
changed bytes, runs, flags S I A H F V E).  A directory stands for every
attribution-*.json in it; give the directories of one mode.

Each copied page goes to the first rule that applies:

1. identical to the master's page (flag S);
2. static data: region python (the image's .data/.bss), files, stack;
3. the writer is `code` (specialization);
4. a changed byte in an immortal (inherited) object (flag I): if the
   writer is not an object (most changed bytes outside any object found,
   or in a pool header) the page is "mixed"; a `dict (keys table)` writer
   with at most 4 changed bytes on the page is `dk_version`; another key
   table is a growing lru_cache table; a `type` writer is `_spec_cache`;
   any other writer is an inherited object (application state);
5. a pymalloc page on which the master's pool has free space (flag F:
   a free-listed block, E: the pool is empty, V: only never-used blocks)
   goes to candidate 2; another pymalloc page to candidate 1 (pool header:
   the header holds the most changed bytes; else new blocks);
6. a heap (glibc brk heap) page goes to candidate 1.
Left over: other anonymous mmaps.

Printed: pages per row over all workers, mean per worker, KiB per worker,
share; the mean copied and new-since-fork pages (and USS, read from
--procs for the same pids); copied pages by fork order (pid order within
a directory); the static pages of the python image by symbol (`nm`; the
fields of _PyRuntime named in RUNTIME_FIELDS through `gdb`, if the image
has debug information), by the symbol holding most changed bytes; and the
bytes changed inside inherited objects by type.  --top N also prints
run.py's attribution summary of these reports (report.py: types, regions,
the master's pools, changed bytes), N rows each.
"""

import argparse
import csv
import functools
import glob
import json
import os
import statistics
import subprocess
import sys

import common  # noqa: F401  (puts Tools/cowstat on sys.path)
import report
from cowstat.formatting import OUTSIDE_ROW, POOL_HEADER_ROW

ROWS = [  # (key, candidate, label); the table's order
    ("1.hdr", "1",
     "pymalloc: pool header (no free space in the master's pool)"),
    ("1.new", "1",
     "pymalloc: new blocks (no free space in the master's pool)"),
    ("1.heap", "1",
     "glibc heap: free chunks reused, no inherited object written"),
    ("1.lru", "1", "key tables of inherited dicts growing (lru_cache)"),
    ("2.F", "2", "page held a free-listed block (a hole) in the master"),
    ("2.E", "2", "the whole pool was empty in the master"),
    ("2.V", "2", "page held only never-used blocks"),
    ("3.code", "3", "`co_code_adaptive` of inherited code objects"),
    ("3.type", "3", "`_spec_cache` of inherited types"),
    ("4.dk", "4", "`dk_version` of inherited key tables (<= 4 bytes)"),
    ("4.obj", "4", "state in other inherited objects"),
    ("4.python", "4", "static data: python image .data/.bss"),
    ("4.files", "4", "static data: libraries' .data/.bss"),
    ("4.stack", "4", "static data: stack"),
    ("same", "-", "identical to the master's page"),
    ("mixed", "-", "mixed: inherited object written, most bytes outside"),
    ("anon", "-", "other anonymous mmaps"),
]
CANDIDATES = {"1": "allocator writes after the fork",
              "2": "holes made before the fork",
              "3": "specialization",
              "4": "other first-use writes"}


def _output(cmd):
    """CMD's stdout, or "" when it cannot run (no nm, no gdb)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout
    except OSError:
        return ""


RUNTIME_FIELDS = ("_main_interpreter.types.type_cache",
                  "_main_interpreter.func_state",
                  "_main_interpreter.object_state")


@functools.lru_cache
def image_symbols(image):
    """[(start, end, name)] of the data symbols of IMAGE, the fields of
    RUNTIME_FIELDS first (as _PyRuntime.FIELD)."""
    out = []
    for ln in _output(["nm", "-S", "--defined-only", image]).splitlines():
        f = ln.split()
        if len(f) == 4 and f[2] in "dDbB":
            out.append((int(f[0], 16), int(f[0], 16) + int(f[1], 16), f[3]))
    rt = [s for s in out if s[2] == "_PyRuntime"]
    cmds = []
    for fld in RUNTIME_FIELDS:
        e = "((struct pyruntimestate *)0)->" + fld
        cmds += ["-ex", "p (long)&%s" % e, "-ex", "p sizeof(%s)" % e]
    vals = [ln.split("=")[1].strip() for ln in
            _output(["gdb", "-batch", "-nx"] + cmds + [image]).splitlines()
            if ln.startswith("$")]
    vals = [int(v) for v in vals if v.isdigit()]
    if rt and len(vals) == 2 * len(RUNTIME_FIELDS):
        for fld, off, size in zip(RUNTIME_FIELDS, vals[::2], vals[1::2]):
            out.insert(0, (rt[0][0] + off, rt[0][0] + off + size,
                           "_PyRuntime." + fld.split(".")[-1]))
    return out


def symbol_of(page, base, syms):
    """The symbol holding most changed bytes of a python-image page."""
    by = {}
    for off, length in page[5] or [[0, 1]]:
        a = page[0] + off - base
        name = next((n for s, e, n in syms if s <= a < e), "(no symbol)")
        by[name] = by.get(name, 0) + length
    return max(by, key=by.get)


def classify(page):
    """The row key (ROWS) of one page_detail entry."""
    _addr, region, _type, writer, nbytes, _runs, flags = page
    if "S" in flags:
        return "same"
    if region in ("python", "files", "stack"):
        return "4." + region
    if writer == "code":
        return "3.code"
    if "I" in flags:
        if writer in (OUTSIDE_ROW, POOL_HEADER_ROW) or writer is None:
            return "mixed"
        if writer == "dict (keys table)":
            return "4.dk" if nbytes <= 4 else "1.lru"
        return "3.type" if writer == "type" else "4.obj"
    if region == "pymalloc":
        for f in "FEV":
            if f in flags:
                return "2." + f
        return "1.hdr" if writer == POOL_HEADER_ROW else "1.new"
    if region == "heap":
        return "1.heap"
    return "anon"


def load(paths):
    """[(directory, pid, report dict)] of every attribution JSON."""
    out = []
    for p in paths:
        files = sorted(glob.glob(os.path.join(p, "attribution-*[0-9].json"))) \
            if os.path.isdir(p) else [p]
        for f in files:
            with open(f) as fh:
                d = json.load(fh)
            if "page_detail" not in d:
                sys.exit("%s: no page_detail (run with "
                         "COWPY_BENCH_ATTRIBUTION_DETAIL=1)" % f)
            out.append((os.path.dirname(f), d["header"]["pid"], d))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", help="log directories or JSON files")
    ap.add_argument("--procs", action="append", default=[],
                    help="run.py's prefork_procs.csv (USS), repeatable")
    ap.add_argument("--top", type=int, default=0,
                    help="also print run.py's attribution summary, N rows")
    args = ap.parse_args()
    reps = load(args.paths)
    n = len(reps)
    if not n:
        sys.exit("no attribution-*.json found")
    counts = {k: 0 for k, _, _ in ROWS}
    for _, _, d in reps:
        for page in d["page_detail"]:
            counts[classify(page)] += 1
    total = sum(counts.values())
    kib = reps[0][2]["header"]["page_size"] // 1024

    def line(label, pages, cand=""):
        print("| %s | %s | %d | %.0f | %.0f | %.0f%% |" % (
            cand, label, pages, pages / n, pages * kib / n,
            100.0 * pages / total))
    print("%d workers; each page once, under the first rule that applies"
          % n)
    print("| # | row | pages | pages per worker | KiB per worker | share |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for cand, name in CANDIDATES.items():
        line("**%s**" % name, sum(counts[k] for k, c, _ in ROWS
                                  if c == cand), cand)
        for k, c, label in ROWS:
            if c == cand:
                line("· " + label, counts[k])
    for k, c, label in ROWS:
        if c == "-":
            line(label, counts[k], "-")
    line("**total copied**", total)

    hdr = [d["header"] for _, _, d in reps]
    copied = statistics.fmean(h["copied_pages"] for h in hdr)
    new = statistics.fmean(h["new_pages"] for h in hdr)
    msg = ("mean per worker: copied %.0f pages (%.0f KiB), changed bytes "
           "%.0f, new since fork %.0f pages" % (
               copied, copied * kib, statistics.fmean(
                   h.get("changed_bytes", 0) for h in hdr), new))
    u = float("nan")
    if args.procs:
        pids = {pid for _, pid, _ in reps}
        uss = []
        for path in args.procs:
            with open(path) as f:
                uss += [float(r["USS"]) for r in csv.DictReader(f)
                        if r["phase"] == "loaded" and int(r["pid"]) in pids]
        if len(uss) == n:
            u = statistics.fmean(uss)
            msg += ", USS %.0f KiB; copied + new - USS = %.0f pages" % (
                u, copied + new - u / kib)
    print(msg + "; objects walked %.0f, untracked referent visits %.0f" % (
        statistics.fmean(h.get("objects_walked", 0) for h in hdr),
        statistics.fmean(h.get("untracked_referents", 0) for h in hdr)))

    ranks = {}
    for dirname in sorted({r[0] for r in reps}):
        mine = sorted((pid, d["header"]["copied_pages"])
                      for dd, pid, d in reps if dd == dirname)
        for i, (_, c) in enumerate(mine):
            ranks.setdefault(i + 1, []).append(c)
    print("copied pages by fork order (pid order in a run; workers): "
          + ", ".join("%d: %.0f (%d)" % (i, statistics.fmean(v), len(v))
                      for i, v in sorted(ranks.items())))

    syms = {}
    for _, _, d in reps:
        h = d["header"]
        if not h.get("python_image_base"):
            continue
        table = image_symbols(h["python_image"])
        for page in d["page_detail"]:
            if classify(page) == "4.python":
                k = symbol_of(page, h["python_image_base"], table)
                syms[k] = syms.get(k, 0) + 1
    print("python image .data/.bss pages (not identical) by symbol, mean "
          "per worker: " + ", ".join("%s %.1f" % (k, v / n) for k, v in
                                     sorted(syms.items(),
                                            key=lambda kv: -kv[1])[:12]))

    imm = {}
    for _, _, d in reps:
        for w in d.get("written") or []:
            if w.get("immortal_bytes"):
                e = imm.setdefault(w["type"], [0, 0, {}])
                e[0] += w["immortal_bytes"]
                e[1] += w.get("objects") or 0
                for off, b in (w.get("immortal_offsets") or {}).items():
                    e[2][off] = e[2].get(off, 0) + b
    print("bytes changed inside inherited (immortal) objects, mean per "
          "worker, by type: bytes, objects of the type with a changed "
          "byte, changed bytes by offset (cowstat keeps 8 per type):")
    for t, (b, objs, offs) in sorted(imm.items(), key=lambda kv: -kv[1][0]):
        top = sorted(offs.items(), key=lambda kv: -kv[1])[:8]
        print("  %-32s %7.0f %6.0f  %s" % (t, b / n, objs / n, " ".join(
            "%s:%.0f" % (o, v / n) for o, v in top)))

    if args.top:
        att = report.summarize_attribution(
            [{"mode": "these reports", "attribution": {"reports": [
                {"header": d["header"], "rows": d["rows"],
                 "regions": d.get("regions"), "written": d.get("written")}
                for _, _, d in reps]}}], "these reports", args.top)
        print(report.fmt_attribution(att, u / 1024))


if __name__ == "__main__":
    main()
