"""What a forked worker copies of the code it inherited (issue #17, item 1).

    python3 bench/code/code_writes.py STOCK COWPY [--functions 5000]
        [--calls 20] [--modules 50] [--shapes per-call,import]
        [--sweep 500,1000,2000,5000] [--calls-sweep 1,2]
        [--no-attribution] [--json FILE] [--keep]

CPython 3.13's specializing interpreter keeps its counters and inline
caches inside each code object's bytecode (co_code_adaptive).  A worker
that runs code it inherited from a pre-fork master writes into that code
(and, when it specializes, into the classes the code uses), and each write
copies a page.  This benchmark measures it on a generated code base:

- N functions (--functions) in --modules modules, generated into a
  temporary directory and compiled once (both interpreters read the same
  .pyc files).  Function i is a small class K{i} (an __init__ storing an
  attribute and a dict; a method with a loop, a dict lookup and a global)
  and a function f{i} (a dict, a loop calling the method, a test of a
  module global): three code objects per function.  Two shapes
  (--shapes): "per-call", f makes a new K instance at each call (hot:
  f, K.__init__, K.total); "import", the instance is made at import (hot:
  f, K.total; K.__init__ ran in the master only).
- One run per mode and shape: a fresh master process imports every
  module, prepares as the mode says, forks ONE worker and blocks on a pipe.
  The worker reads its USS (Private_Clean + Private_Dirty of
  /proc/self/smaps_rollup, through cowstat.proc.read_rollup), calls each
  of the first H functions ("hot") --calls times (round-robin), reads its
  USS again and reports the growth through the pipe.  It also counts, for
  context, its copied pages (cowstat.pages.count_pages).
- Modes (in one run, side by side): stock; stock with the gc.freeze()
  recipe (gc.disable() first thing, gc.collect(); gc.freeze() before the
  fork, gc.enable() in the worker); cowpy default (freeze at fork); cowpy
  with gc.freeze(immortalize=True) before the fork; cowpy
  PYTHONCOWFORK=immortal; and "warm master" variants of the stock recipe
  and of cowpy immortal, whose master first calls every function --calls
  times itself.
- A sweep of H (--sweep) for the stock recipe and cowpy immortal, with a
  least-squares line (bytes per hot function), and a sweep of --calls
  (--calls-sweep) for cowpy immortal.
- Attribution, best-effort (cowpy immortal, cold and warm master): in the
  master, before the fork, the extents of the generated modules' code
  objects (inline bytecode included), functions, classes and their shared
  keys (ht_cached_keys, located through the PyHeapTypeObject layout); in
  the worker, right after the second USS reading, /proc/self/pagemap and
  /proc/PPID/pagemap for their pages (copied: present here and in the
  master, in another frame when frame numbers are visible, else
  exclusively mapped here, bit 56) and a snapshot of the copied pages
  (/proc/self/mem, into a buffer mapped before the fork).  Then each
  copied page is compared byte by byte with the master's (/proc/PPID/mem;
  the master is idle), each changed byte is given to the object and field
  holding it, and each changed instruction of co_code_adaptive (at
  code.__basicsize__ == offsetof(PyCodeObject, co_code_adaptive), checked
  against code._co_code_adaptive) is classified by comparing the master's
  and the worker's opcode, oparg and inline cache entries (families and
  cache sizes from dis and opcode): the final state against the master's,
  so an instruction counted down and then specialized shows as
  "specialize".  A copied page identical to the master's was written with
  the same bytes; if it holds the inline cache of an executed POP_JUMP_IF
  (which stores its branch history at every execution), it is shown as
  such.

Memory figures only: this prints no timings (other benchmarks may share
the machine; memory is not affected by that).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from code_attribution import GROUP_TITLES, PRECEDENCE, Extents

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
COWSTAT = os.path.join(ROOT, "Tools", "cowstat")
PAGE = os.sysconf("SC_PAGE_SIZE")

# name, interpreter, environment, master's preparation
MODES = [
    ("stock", "stock", {}, {}),
    ("stock + recipe", "stock", {}, {"recipe": True}),
    ("cowpy default", "cowpy", {}, {}),
    ("cowpy + freeze(immortalize=True)", "cowpy", {},
     {"immortalize": True}),
    # Inherited code written in place, as stock does.
    ("cowpy immortal, PYTHONCOWCODE=stock", "cowpy",
     {"PYTHONCOWFORK": "immortal", "PYTHONCOWCODE": "stock"}, {}),
    # The default code mode, light: settled until its first few calls in
    # a worker (Python/gc_cow_code.c).
    ("cowpy PYTHONCOWFORK=immortal", "cowpy",
     {"PYTHONCOWFORK": "immortal"}, {}),
    # Settled code (#17, opt-in): workers leave inherited code unwritten
    # until it is hot in them.
    ("cowpy immortal, PYTHONCOWCODE=settle", "cowpy",
     {"PYTHONCOWFORK": "immortal", "PYTHONCOWCODE": "settle"}, {}),
    ("stock + recipe, warm master", "stock", {},
     {"recipe": True, "warm": True}),
    ("cowpy immortal, warm master", "cowpy",
     {"PYTHONCOWFORK": "immortal"}, {"warm": True}),
]
BASELINE = "stock + recipe"
SWEEP_MODES = ["stock + recipe", "cowpy immortal, PYTHONCOWCODE=stock",
               "cowpy PYTHONCOWFORK=immortal",
               "cowpy immortal, PYTHONCOWCODE=settle"]
# Growth against calls per function (--calls-sweep): settled code thaws
# once it is hot in the worker (Python/gc_cow_code.c).
CSWEEP_MODES = ["cowpy immortal, PYTHONCOWCODE=stock",
                "cowpy PYTHONCOWFORK=immortal",
                "cowpy immortal, PYTHONCOWCODE=settle"]
ATTRIBUTION_MODES = ["cowpy PYTHONCOWFORK=immortal",
                     "cowpy immortal, PYTHONCOWCODE=settle",
                     "cowpy immortal, warm master"]


# ------------------------------------------------------- the code base

CLASS = '''
G{i} = {i}


class K{i}:
    def __init__(self, n):
        self.n = n
        self.d = {{"a": n, "b": n + {i}}}

    def total(self, k):
        s = 0
        for j in range(k):
            s += self.d["a"] + j
        return s + G{i}
'''

FUNCTION = {
    # A new instance per call: f, K.__init__ and K.total are hot.
    "per-call": '''

def f{i}(n):
    o = K{i}(n)
    d = {{"x": n, "y": {i}}}
    t = 0
    for j in range(3):
        t += o.total(j) + d["x"]
    if t > G{i}:
        t -= 1
    return t + G{i}
''',
    # One instance made at import: f and K.total are hot, K.__init__ ran
    # in the master only.
    "import": '''

O{i} = K{i}({i})


def f{i}(n):
    o = O{i}
    d = {{"x": n, "y": {i}}}
    t = 0
    for j in range(3):
        t += o.total(j) + d["x"]
    if t > G{i}:
        t -= 1
    return t + G{i}
''',
}
SHAPES = {
    "per-call": "a new instance per call (hot: f, K.__init__, K.total)",
    "import": "one instance made at import (hot: f, K.total)",
}


def per_module(functions, modules):
    return -(-functions // modules)


def generate(directory, functions, modules, shape):
    """Write modules gen_00 .. into DIRECTORY: function i is in module
    i // per_module."""
    per = per_module(functions, modules)
    for m in range(modules):
        lo, hi = m * per, min(functions, (m + 1) * per)
        with open(os.path.join(directory, "gen_%02d.py" % m), "w") as f:
            f.write('"""Generated by bench/code/code_writes.py."""\n')
            for i in range(lo, hi):
                f.write(CLASS.format(i=i))
                f.write(FUNCTION[shape].format(i=i))


# ------------------------------------------------------------ the master
# Runs in the measured interpreter: code_writes.py --run JSON.  Prints one
# JSON line.

def work(funcs, calls):
    t = 0
    for r in range(calls):
        for f in funcs:
            t += f(r)
    return t


def run_master(cfg):
    if cfg.get("recipe"):
        import gc
        gc.disable()
    import gc
    sys.path.insert(0, COWSTAT)
    sys.path.insert(0, cfg["dir"])
    from cowstat.proc import read_rollup
    from cowstat.pages import count_pages
    import importlib

    n, per = cfg["functions"], per_module(cfg["functions"], cfg["modules"])
    mods = [importlib.import_module("gen_%02d" % m)
            for m in range(cfg["modules"])]
    funcs = [getattr(mods[i // per], "f%d" % i) for i in range(n)]
    hot = funcs[:cfg["hot"]]
    read_rollup()
    read_rollup()
    if cfg.get("warm"):
        work(funcs, cfg["calls"])
    attr = None
    if cfg.get("attribution"):
        attr = Extents(mods, n, per)
    if cfg.get("recipe"):
        gc.collect()
        gc.freeze()
    if cfg.get("immortalize"):
        gc.freeze(immortalize=True)
    master_uss = read_rollup()["USS"]

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            if cfg.get("recipe"):
                gc.enable()
            before = read_rollup()["USS"]
            work(hot, cfg["calls"])
            after = read_rollup()["USS"]
            res = {"uss_before": before, "uss_after": after,
                   "growth_kib": after - before}
            if attr is not None:
                attr.snapshot()
            copied, new = count_pages(os.getppid(), os.getpid())
            res["copied_pages"] = copied
            res["new_pages"] = new
            if attr is not None:
                res["attribution"] = attr.analyse(hot)
            data = json.dumps(res).encode()
        except BaseException:
            import traceback
            data = json.dumps({"error": traceback.format_exc()}).encode()
        try:
            while data:
                data = data[os.write(w, data):]
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 1 << 16)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    res = json.loads(b"".join(chunks) or b'{"error": "no result"}')
    res["master_uss"] = master_uss
    res["worker_status"] = status
    res["version"] = sys.version.split()[0]
    print(json.dumps(res))


# ------------------------------------------------------------ the driver

def clean_env(extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTHONCOW") and k not in (
               "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP",
               "PYTHONDONTWRITEBYTECODE")}
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return {k: v for k, v in env.items() if v != ""}


def run_one(interp, env, cfg):
    p = subprocess.run([interp, os.path.abspath(__file__), "--run",
                        json.dumps(cfg)], env=clean_env(env),
                       capture_output=True, text=True)
    lines = p.stdout.strip().splitlines()
    if p.returncode or not lines:
        return {"error": "exit %d: %s" % (p.returncode, p.stderr[-2000:])}
    res = json.loads(lines[-1])
    if p.stderr.strip():
        res["stderr"] = p.stderr[-2000:]
    return res


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def per_fn(growth_kib, hot):
    return growth_kib * 1024 / hot if hot else 0.0


def linfit(xs, ys):
    mx, my = statistics.mean(xs), statistics.mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return b, my - b * mx


def fmt_table(header, rows, align):
    widths = [max(len(str(r[c])) for r in [header] + rows)
              for c in range(len(header))]
    out = []
    for n, r in enumerate([header] + rows):
        cells = []
        for c, v in enumerate(r):
            v = str(v)
            cells.append(v.rjust(widths[c]) if align[c] == "r"
                         else v.ljust(widths[c]))
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def kib(pages):
    return "{:,}".format(pages * PAGE // 1024)


def attribution_text(title, a, hot):
    lines = ["", "Attribution: %s (best-effort; the worker after its calls "
             "vs its idle master)" % title]
    if not a.get("layout_ok"):
        lines.append("WARNING: id(co) + code.__basicsize__ is not "
                     "co_code_adaptive here: the instruction classes are "
                     "unreliable, only the page counts are.")
    if not a.get("type_layout_ok"):
        lines.append("(PyHeapTypeObject layout not recognised: shared keys "
                     "not located, type fields by offset)")
    lines.append(
        "%s objects of the generated modules (code objects, functions, "
        "classes, their shared keys) lie on %s pages; %s of those pages "
        "are copied (%s KiB, %.0f B per hot function)."
        % ("{:,}".format(a["objects"]), "{:,}".format(a["object_pages"]),
           "{:,}".format(a["copied_object_pages"]),
           kib(a["copied_object_pages"]),
           a["copied_object_pages"] * PAGE / hot))
    ow = a["objects_written"]
    lines.append(
        "Objects written: %s code objects (bytecode %s), %s type objects, "
        "%s shared keys, %s functions; the written code objects hold %s "
        "bytes of bytecode (%.0f B per hot function)."
        % (tuple("{:,}".format(x) for x in (
            ow.get("bytecode", 0) + ow.get("code header", 0),
            ow.get("bytecode", 0), ow.get("type", 0), ow.get("keys", 0),
            ow.get("function", 0), a["written_bytecode_bytes"]))
           + (a["written_bytecode_bytes"] / hot,)))
    lines.append("")
    lines.append("Copied pages by cause (a page goes to the first of: "
                 "bytecode, code header, type, shared keys, function, "
                 "no recorded object, no byte changed):")
    rows = [[GROUP_TITLES[g], "{:,}".format(a["pages_by_cause"][g]),
             kib(a["pages_by_cause"][g]),
             "%.0f" % (a["pages_by_cause"][g] * PAGE / hot)]
            for g in PRECEDENCE if g in a["pages_by_cause"]]
    lines.append(fmt_table(["cause", "pages", "KiB", "B per hot function"],
                           rows, "lrrr"))
    lines.append("")
    lines.append("Writes (pages touched: copied pages holding at least one "
                 "changed byte of the kind):")
    rows = sorted(a["writes"], key=lambda r: (PRECEDENCE.index(r[0]), -r[2]))
    lines.append(fmt_table(
        ["object", "field / instruction class", "pages touched",
         "bytes changed"],
        [[GROUP_TITLES[g], lab, "{:,}".format(p), "{:,}".format(b)]
         for g, lab, p, b in rows], "llrr"))
    lines.append("")
    lines.append("Copied pages that would stay shared without these "
                 "writes (pages whose every changed byte is of that kind):")
    lines.append(fmt_table(
        ["without", "pages", "KiB", "B per hot function"],
        [[k, "{:,}".format(v), kib(v), "%.0f" % (v * PAGE / hot)]
         for k, v in a["pages_saved_if"]], "lrrr"))
    if a["categories"]:
        lines.append("")
        lines.append("Changed instructions of inherited bytecode by class "
                     "(final state vs the master's; counter = the first "
                     "inline cache entry):")
        cats = sorted(a["categories"].items(), key=lambda kv: -kv[1][0])
        lines.append(fmt_table(
            ["class", "instructions", "bytes", "per hot function"],
            [[k, "{:,}".format(v[0]), "{:,}".format(v[1]),
              "%.1f" % (v[0] / hot)] for k, v in cats], "lrrr"))
        lines.append("")
        lines.append("Instruction families that write (by changed "
                     "instructions):")
        fams = []
        for fam, d in a["families"].items():
            n = sum(v[0] for v in d.values())
            b = sum(v[1] for v in d.values())
            detail = ", ".join("%s %s" % (k, "{:,}".format(v[0])) for k, v
                               in sorted(d.items(), key=lambda kv: -kv[1][0]))
            fams.append((n, b, fam, detail))
        fams.sort(key=lambda t: (-t[0], -t[1], t[2]))
        lines.append(fmt_table(
            ["family", "instructions", "bytes", "classes"],
            [[f, "{:,}".format(n), "{:,}".format(b), d]
             for n, b, f, d in fams[:15]], "lrrl"))
    else:
        lines.append("(no instruction of inherited bytecode changed)")
    if a.get("inconsistent"):
        lines.append("(%d instructions changed family: decoding "
                     "suspect)" % a["inconsistent"])
    return "\n".join(lines)


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--run":
        run_master(json.loads(sys.argv[2]))
        return 0
    ap = argparse.ArgumentParser(
        description="Worker memory growth from writes into inherited code "
                    "(issue #17).")
    ap.add_argument("stock")
    ap.add_argument("cowpy")
    ap.add_argument("--functions", type=int, default=5000)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--modules", type=int, default=50)
    ap.add_argument("--shapes", default="per-call,import",
                    help="code shapes, the first is the main one: "
                         "per-call (a new instance per call), import (one "
                         "instance made at import)")
    ap.add_argument("--sweep", default="500,1000,2000,5000",
                    help="hot function counts (capped at --functions)")
    ap.add_argument("--calls-sweep", default="1,2",
                    help="calls per function for cowpy immortal, besides "
                         "--calls ('' for none)")
    ap.add_argument("--no-attribution", action="store_true")
    ap.add_argument("--json", help="write every run's result here")
    ap.add_argument("--keep", action="store_true",
                    help="keep the generated code bases (paths on stderr)")
    args = ap.parse_args()
    interps = {"stock": args.stock, "cowpy": args.cowpy}
    n = args.functions
    modes = {m[0]: m for m in MODES}
    shapes = [s for s in args.shapes.split(",") if s]
    for s in shapes:
        if s not in SHAPES:
            ap.error("unknown shape %r (known: %s)" % (s, ", ".join(SHAPES)))
    sweep = sorted({min(int(x), n) for x in args.sweep.split(",") if x})
    csweep = [int(x) for x in args.calls_sweep.split(",") if x]

    results = {}
    ok = True
    tmp = tempfile.mkdtemp(prefix="code_writes-")
    try:
        dirs = {}
        for s in shapes:
            d = dirs[s] = os.path.join(tmp, s)
            os.mkdir(d)
            generate(d, n, args.modules, s)
        for key in ("stock", "cowpy"):
            subprocess.run([interps[key], "-m", "compileall", "-q", tmp],
                           check=True, env=clean_env(
                               {"PYTHONDONTWRITEBYTECODE": ""}))
        log("code bases: %d functions in %d modules, shapes %s (%s)"
            % (n, args.modules, ", ".join(shapes), tmp))

        def measure(shape, name, hot, calls, attribution=False):
            nonlocal ok
            key = (shape, name, hot, calls, attribution)
            if key in results:
                return
            _, interp, env, prep = modes[name]
            cfg = dict(prep, dir=dirs[shape], functions=n,
                       modules=args.modules, hot=hot, calls=calls,
                       attribution=attribution)
            log("run: [%s] %s, %d hot functions x %d calls%s"
                % (shape, name, hot, calls,
                   ", attribution" if attribution else ""))
            res = run_one(interps[interp], env, cfg)
            if "error" in res:
                ok = False
                log("  FAILED: %s" % res["error"])
            else:
                log("  growth %d KiB" % res["growth_kib"])
            results[key] = res

        for s in shapes:
            for m in MODES:
                measure(s, m[0], n, args.calls)
        for s in shapes:
            for h in sweep:
                for name in SWEEP_MODES:
                    measure(s, name, h, args.calls)
        for s in shapes:
            for c in csweep:
                for name in CSWEEP_MODES:
                    measure(s, name, n, c)
        if not args.no_attribution:
            for s in shapes:
                for name in ATTRIBUTION_MODES:
                    measure(s, name, n, args.calls, attribution=True)
    finally:
        if args.keep:
            log("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    def growth(shape, name, hot, calls, attribution=False):
        return results.get((shape, name, hot, calls, attribution),
                           {}).get("growth_kib")

    def fmt_growth(g, hot):
        if g is None:
            return ["FAILED", "-"]
        return ["{:,}".format(g), "{:,.0f}".format(per_fn(g, hot))]

    out = []
    vers = sorted({r["version"] for r in results.values() if "version" in r})
    out.append("Worker private memory growth from running inherited code "
               "(bench/code/code_writes.py; issue #17)")
    out.append("Code base: %d functions in %d modules, each a class K (with "
               "__init__ and a method with a loop, a dict lookup and a "
               "global) and a function f (a dict, a loop over the method, a "
               "test of a global); interpreters %s."
               % (n, args.modules, ", ".join(vers)))
    out.append("Shapes: " + "; ".join("%s = %s" % (s, SHAPES[s])
                                      for s in shapes) + ".")
    out.append("One worker per mode calls every function %d times; growth "
               "= its USS after minus right after the fork "
               "(/proc/self/smaps_rollup), the master idle meanwhile. "
               "B/fn = growth / hot functions."
               % args.calls)
    out.append("")
    hdr = ["mode"]
    for s in shapes:
        hdr += ["%s KiB" % s, "B/fn", "vs recipe", "copied pg"]
    rows = []
    for name, _, _, _ in MODES:
        row = [name]
        for s in shapes:
            r = results.get((s, name, n, args.calls, False), {})
            g = r.get("growth_kib")
            base = growth(s, BASELINE, n, args.calls)
            row += fmt_growth(g, n)
            row.append("%.3f" % (g / base) if g is not None and base
                       else "-")
            row.append("{:,}".format(sum(r["copied_pages"].values()))
                       if "copied_pages" in r else "-")
        rows.append(row)
    out.append(fmt_table(hdr, rows, "l" + "r" * (len(hdr) - 1)))
    out.append("(vs recipe: growth / the '%s' row's; copied pg: pages the "
               "worker copied since the fork, cowstat.pages.count_pages, "
               "counted after the second USS reading: they include what "
               "the fork and the worker's start copied before the first "
               "reading)" % BASELINE)

    for s in shapes:
        out.append("")
        out.append("[%s] growth vs number of hot functions (%d calls each; "
                   "the code base stays %d functions):" % (s, args.calls, n))
        rows = []
        for h in sweep:
            row = ["{:,}".format(h)]
            for name in SWEEP_MODES:
                row += fmt_growth(growth(s, name, h, args.calls), h)
            rows.append(row)
        hdr = ["hot functions"]
        for name in SWEEP_MODES:
            hdr += [name + " KiB", "B/fn"]
        out.append(fmt_table(hdr, rows, "r" * len(hdr)))
        for name in SWEEP_MODES:
            pts = [(h, growth(s, name, h, args.calls)) for h in sweep]
            pts = [(h, g) for h, g in pts if g is not None]
            if len(pts) >= 2:
                slope, icpt = linfit([h for h, _ in pts],
                                     [g * 1024 for _, g in pts])
                out.append("  least squares, %s: %.0f B per hot function "
                           "%+.0f KiB" % (name, slope, icpt / 1024))

    for name in CSWEEP_MODES if csweep else ():
        out.append("")
        out.append("%s, growth vs calls per function (%d hot functions):"
                   % (name, n))
        hdr = ["calls"]
        for s in shapes:
            hdr += ["%s KiB" % s, "B/fn"]
        rows = []
        for c in sorted(set(csweep + [args.calls])):
            row = [str(c)]
            for s in shapes:
                row += fmt_growth(growth(s, name, n, c), n)
            rows.append(row)
        out.append(fmt_table(hdr, rows, "r" * len(hdr)))

    if not args.no_attribution:
        for s in shapes:
            for name in ATTRIBUTION_MODES:
                r = results.get((s, name, n, args.calls, True), {})
                title = "[%s] %s" % (s, name)
                if "attribution" not in r:
                    out.append("\nAttribution: %s: FAILED" % title)
                    continue
                out.append(attribution_text(title, r["attribution"], n))
                out.append("(this run's own growth: %s KiB; the attribution "
                           "maps its scratch before the fork and reads "
                           "after the measurement)"
                           % "{:,}".format(r["growth_kib"]))
    print("\n".join(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"shape": k[0], "mode": k[1], "hot": k[2],
                        "calls": k[3], "attribution": k[4], **v}
                       for k, v in results.items()], f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
