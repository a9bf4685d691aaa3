"""What forked children copy of a parent heap with holes, by allocator mode.

    python3 bench/alloc/holes.py STOCK COWPY [--children K] [--requests N]
        [--rounds R] [--json FILE]

A parent builds a heap like a web application's at import: modules, a
data set of ~300,000 objects (records, dicts, lists, strings, datetimes),
and temporaries freed again (a parsed JSON document, half a cache), which
leave free blocks (holes) scattered over its pymalloc pools.  It then
forks K children, which each serve N "requests": read records, build
response dicts and strings, serialise them, keep some in a bounded
cache.  When all children have served their requests (the parent has
written nothing since the fork), this script measures each one from
outside:

- USS (Private_Clean + Private_Dirty) and PSS from
  /proc/PID/smaps_rollup;
- pages copied: pages of the child's writable private mappings that the
  parent has at the same address in another physical page
  (/proc/PID/pagemap frame numbers, as root; else the "exclusively
  mapped" bit), by region (anon: pymalloc arenas and other mmaps; heap:
  glibc's brk heap); and new pages (the parent has none there);

then each child reports pymalloc's arena count and bytes in available
blocks (sys._debugmallocstats()), as the parent did before the fork, and
cowpy's sys._cow_alloc_stats().

Configurations, each run R times, interleaved: stock; cowpy (freeze at
fork) with PYTHONCOWALLOC=stock and =aside; cowpy with
PYTHONCOWFORK=immortal with PYTHONCOWALLOC=stock and =aside; and, for
the holes made before the fork, the stock advice (HOLES_RECIPE=
stock-advice: gc.disable() before the heap is built, gc.freeze() instead
of gc.collect() before the fork, gc.enable() in the child) on stock and
on cowpy-immortal with the set-aside.  Every
configuration does the same work, so memory is comparable.  The table
shows medians over children and rounds, and the ratio aside/stock-alloc
for each cowpy fork mode.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
COWSTAT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "Tools",
                       "cowstat")

CONFIGS = [
    # name, interpreter, environment
    ("stock", "stock", {}),
    ("cowpy alloc=stock", "cowpy", {"PYTHONCOWALLOC": "stock"}),
    ("cowpy alloc=aside", "cowpy", {"PYTHONCOWALLOC": "aside"}),
    ("immortal alloc=stock", "cowpy",
     {"PYTHONCOWFORK": "immortal", "PYTHONCOWALLOC": "stock"}),
    ("immortal alloc=aside", "cowpy",
     {"PYTHONCOWFORK": "immortal", "PYTHONCOWALLOC": "aside"}),
    # Issue #6, candidate 2: the stock advice against holes made before
    # the fork (gc.disable() early in the parent, gc.freeze() before the
    # fork, gc.enable() in the child; no gc.collect()), on stock and on
    # cowpy's best mode, against the default parent above (gc.collect()
    # before forking, and cowpy-immortal collects at the fork anyway).
    ("stock + stock advice", "stock", {"HOLES_RECIPE": "stock-advice"}),
    ("immortal aside + advice", "cowpy",
     {"PYTHONCOWFORK": "immortal", "PYTHONCOWALLOC": "aside",
      "HOLES_RECIPE": "stock-advice"}),
]


# ------------------------------------------------------------ the worker
# Runs in the measured interpreter (stock or cowpy): python holes.py
# --worker K N.  Prints one JSON line.

def debug_malloc_stats():
    """Arena count and bytes in available blocks (sys._debugmallocstats)."""
    import tempfile
    out = {}
    with tempfile.TemporaryFile() as f:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        for line in f.read().decode().splitlines():
            for key, name in (("# arenas allocated current", "arenas"),
                              ("# bytes in available blocks", "avail"),
                              ("# bytes in allocated blocks", "alloc")):
                if line.startswith(key):
                    out[name] = int(line.split("=")[1].replace(",", ""))
    return out


def build_heap(rng):
    """The parent's heap: modules, a data set, freed temporaries."""
    import datetime
    import decimal
    import email.message
    import http.client
    import json as _json
    import urllib.parse
    import argparse as _ap
    import collections
    import string
    users = []
    for i in range(20000):
        users.append({
            "id": i,
            "name": "user%06d" % i,
            "email": "user%d@example.org" % i,
            "joined": datetime.datetime(2020, 1, 1)
            + datetime.timedelta(seconds=rng.randrange(10**8)),
            "tags": [rng.choice(string.ascii_lowercase) * rng.randrange(1, 9)
                     for _ in range(rng.randrange(1, 6))],
            "score": decimal.Decimal(rng.randrange(10**6)) / 100,
            "address": (str(rng.randrange(1, 999)), "Street %d" % i,
                        "City%d" % (i % 97)),
        })
    index = {u["name"]: u for u in users}
    by_city = collections.defaultdict(list)
    for u in users:
        by_city[u["address"][2]].append(u["id"])
    # Temporaries of start-up: a parsed document, half a cache, garbage.
    doc = _json.loads(_json.dumps(users[:6000], default=str))
    cache = {("k", i): [i, str(i), (i, i + 1)] for i in range(40000)}
    for k in list(cache)[::2]:
        del cache[k]
    del doc
    junk = [str(i) * (i % 7 + 1) for i in range(60000)]
    del junk[::3]
    return {"users": users, "index": index, "by_city": by_city,
            "cache": cache, "junk": junk,
            "mods": (email.message, http.client, urllib.parse, _ap)}


def serve(heap, n, rng):
    """n requests: read records, build responses, keep some in a cache
    (returned)."""
    import json as _json
    users = heap["users"]
    recent = {}
    size = 0
    for r in range(n):
        u = users[rng.randrange(len(users))]
        friends = [users[rng.randrange(len(users))] for _ in range(5)]
        resp = {
            "id": u["id"], "name": u["name"].title(),
            "joined": u["joined"].isoformat(), "tags": list(u["tags"]),
            "score": str(u["score"]),
            "friends": [{"id": f["id"], "name": f["name"]} for f in friends],
            "path": "/user/%d?page=%d" % (u["id"], r % 10),
        }
        body = _json.dumps(resp)
        headers = [("Content-Type", "application/json"),
                   ("Content-Length", str(len(body))),
                   ("X-Request", "%08x" % r)]
        size += len(body) + len(headers)
        if r % 4 == 0:
            recent[r % 2000] = (resp, body)     # bounded cache
    return recent, size


def worker(k, n, seed):
    """Build the heap, fork k children; each serves n requests, prints
    its pid and waits for EOF on stdin (the driver measures it then),
    then prints its allocator statistics.  The parent writes nothing
    after the fork until its children have exited."""
    import gc
    import random
    advice = os.environ.get("HOLES_RECIPE") == "stock-advice"
    if advice:
        gc.disable()
    rng = random.Random(seed)
    heap = build_heap(rng)
    if advice:
        gc.freeze()
    else:
        gc.collect()
    before = json.dumps({"parent": os.getpid(),
                         "before": debug_malloc_stats()})
    sys.stdout.flush()
    pids = [0] * k
    for c in range(k):
        pid = os.fork()
        if pid == 0:
            try:
                if advice:
                    gc.enable()
                crng = random.Random(seed * 100 + c)
                # The worker's own state (its cache) stays alive while
                # it is measured, as in a server between requests.
                state = serve(heap, n, crng)
                gc.collect()
                os.write(1, b"pid %d\n" % os.getpid())
                while os.read(0, 1):    # the driver measures us now
                    pass
                out = {"pid": os.getpid(), "after": debug_malloc_stats(),
                       "cow": (sys._cow_alloc_stats()
                               if hasattr(sys, "_cow_alloc_stats")
                               else None)}
                os.write(1, ("child " + json.dumps(out) + "\n").encode())
                os._exit(0)
            except BaseException:
                import traceback
                traceback.print_exc()
                os._exit(1)
        pids[c] = pid
    failed = 0
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        failed += status != 0
    print("parent " + before)
    sys.exit(failed)


# ------------------------------------------------------------ the driver

def read_rollup(pid):
    """/proc/PID/smaps_rollup's fields (KiB) by cowstat's reader, imported
    at the first call: the driver's only, not the --worker process's (it
    runs this file too, and its heap is what is measured)."""
    if COWSTAT not in sys.path:
        sys.path.insert(0, COWSTAT)
    from cowstat.proc import read_rollup as reader
    return reader(pid)


def count_pages(parent, child, page):
    """cowstat's pagemap comparison (cowstat/pages.py), imported as
    read_rollup() is, in the driver only."""
    if COWSTAT not in sys.path:
        sys.path.insert(0, COWSTAT)
    from cowstat.pages import count_pages as counter
    return counter(parent, child, page)


def run_config(python, env, k, n, seed):
    e = {key: v for key, v in os.environ.items()
         if not key.startswith("PYTHON")}
    e.update(env)
    page = os.sysconf("SC_PAGE_SIZE")
    p = subprocess.Popen([python, os.path.abspath(__file__), "--worker",
                          str(k), str(n), str(seed)],
                         env=e, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    measured = {}
    parent = None
    for _ in range(k):
        line = p.stdout.readline()
        if not line.startswith("pid "):
            p.kill()
            raise SystemExit("%s: unexpected %r" % (python, line))
        measured[int(line.split()[1])] = None
    # Every child has done its requests and waits; the parent waits too.
    parent = int(open("/proc/%d/status" % next(iter(measured)))
                 .read().split("PPid:")[1].split()[0])
    for pid in measured:
        roll = read_rollup(pid)
        copied, new = count_pages(parent, pid, page)
        measured[pid] = {"uss": roll["Private_Clean"]
                         + roll["Private_Dirty"], "pss": roll["Pss"],
                         "copied": copied, "new": new}
    parent_roll = read_rollup(parent)
    p.stdin.close()
    out = p.stdout.read()
    p.wait()
    if p.returncode != 0:
        raise SystemExit("%s failed (exit %s)" % (python, p.returncode))
    children = []
    res = None
    for line in out.splitlines():
        if line.startswith("child "):
            c = json.loads(line[6:])
            c.update(measured[c["pid"]])
            children.append(c)
        elif line.startswith("parent "):
            res = json.loads(line[7:])
    assert res is not None and len(children) == k
    res["children"] = children
    res["parent_pss"] = parent_roll["Pss"]
    res["parent_rss"] = parent_roll["Rss"]
    return res


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stock", nargs="?")
    ap.add_argument("cowpy", nargs="?")
    ap.add_argument("--children", type=int, default=4)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json")
    ap.add_argument("--worker", nargs=3, type=int, metavar=("K", "N", "SEED"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    if not (args.stock and args.cowpy):
        ap.error("STOCK and COWPY interpreters are required")
    pythons = {"stock": args.stock, "cowpy": args.cowpy}
    results = {name: [] for name, _, _ in CONFIGS}
    for r in range(args.rounds):
        for name, which, env in CONFIGS:
            print("[round %d] %s" % (r + 1, name), file=sys.stderr,
                  flush=True)
            results[name].append(run_config(pythons[which], env,
                                             args.children, args.requests,
                                             args.seed))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)

    print("Forked children of a parent heap with holes: %d children x %d "
          "requests, %d round(s); medians over children and rounds"
          % (args.children, args.requests, args.rounds))
    hdr = ("%-22s %8s %8s %8s %8s %8s %8s %7s %7s %9s %9s %8s %8s"
           % ("config", "USS", "PSS", "copied", "copied", "copied", "new",
              "arenas", "arenas", "avail KiB", "avail KiB", "aside",
              "reclaim"))
    hdr2 = ("%-22s %8s %8s %8s %8s %8s %8s %7s %7s %9s %9s %8s %8s"
            % ("", "KiB", "KiB", "pages", "anon", "heap", "pages",
               "parent", "child", "parent", "child", "at fork", "-ed"))
    print(hdr)
    print(hdr2)
    print("-" * len(hdr))
    summary = {}
    for name, _, _ in CONFIGS:
        runs = results[name]
        ch = [c for run in runs for c in run["children"]]
        row = {
            "uss": med([c["uss"] for c in ch]),
            "pss": med([c["pss"] for c in ch]),
            "copied": med([sum(c["copied"].values()) for c in ch]),
            "copied_anon": med([c["copied"]["anon"] for c in ch]),
            "copied_heap": med([c["copied"]["heap"] for c in ch]),
            "new": med([sum(c["new"].values()) for c in ch]),
            "arenas_parent": med([run["before"]["arenas"] for run in runs]),
            "arenas_child": med([c["after"]["arenas"] for c in ch]),
            "avail_parent": med([run["before"]["avail"] for run in runs])
            / 1024,
            "avail_child": med([c["after"]["avail"] for c in ch]) / 1024,
            "aside": med([c["cow"]["aside_at_last_fork"] if c["cow"] else 0
                          for c in ch]),
            "reclaimed": med([c["cow"]["reclaimed"] if c["cow"] else 0
                              for c in ch]),
        }
        summary[name] = row
        print("%-22s %8.0f %8.0f %8.0f %8.0f %8.0f %8.0f %7.0f %7.0f "
              "%9.0f %9.0f %8.0f %8.0f"
              % (name, row["uss"], row["pss"], row["copied"],
                 row["copied_anon"], row["copied_heap"], row["new"],
                 row["arenas_parent"], row["arenas_child"],
                 row["avail_parent"], row["avail_child"], row["aside"],
                 row["reclaimed"]))
    print()
    for base, new in (("cowpy alloc=stock", "cowpy alloc=aside"),
                      ("immortal alloc=stock", "immortal alloc=aside"),
                      ("stock", "stock + stock advice"),
                      ("immortal alloc=aside", "immortal aside + advice")):
        b, a = summary[base], summary[new]
        print("%-22s vs %-22s USS %.3f  copied pages %.3f  "
              "(copied anon %.0f -> %.0f, new %.0f -> %.0f)"
              % (new, base, a["uss"] / b["uss"], a["copied"] / b["copied"],
                 b["copied_anon"], a["copied_anon"], b["new"], a["new"]))
    print("copied: pages present in the parent at the fork, now this "
          "child's only (anon: pymalloc arenas and other mmaps; heap: "
          "glibc's brk heap); new: pages the child has that the parent "
          "did not; avail: free bytes in pymalloc's used pools")


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    main()
