"""Shared by run.py and instructions.py: the workload list and the worker.

Each sample is a fresh process:

    PYTHON -s -c WORKER PATH SCALE WARMUP OPTS_JSON DO_RUN

The worker imports the workload module by path, calls setup(SCALE, **OPTS)
if the module has one (untimed), calls run(SCALE) WARMUP times (untimed),
runs gc.collect() (untimed), then times one run(SCALE) with
time.perf_counter() and prints one line "SPEEDJSON {...}" with the time,
repr of run()'s result (a checksum: it must be the same on both sides),
the number of collections per generation during the timed run, the
module's info() if it has one, ru_maxrss and VmHWM (peak RSS).  DO_RUN=0 does all of this
but the timed run() (the baseline that instructions.py subtracts).
"""

import json
import os
import shutil
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOAD_DIR = os.path.join(HERE, "workloads")

# name -> (module file in workloads/, keyword options for setup())
WORKLOADS = {
    "gc_churn": ("gc_churn", {}),
    "heap_growth": ("heap_growth", {}),
    "calls": ("calls", {}),
    "attrs": ("attrs", {}),
    "containers": ("containers", {}),
    "json_roundtrip": ("json_roundtrip", {}),
    "regex": ("regex", {}),
    "sort_keys": ("sort_keys", {}),
    "generators": ("generators", {}),
    "decimal_float": ("decimal_float", {}),
    "templates": ("templates", {}),
    "after_freeze": ("after_freeze", {}),
    # Only run when at least one interpreter accepts
    # gc.freeze(immortalize=True) (see supports_immortalize()).
    "after_freeze_immortal": ("after_freeze", {"immortalize": True}),
}
OPTIONAL = {"after_freeze_immortal"}

WORKER = r'''
import gc, importlib.util, json, resource, sys, time
path, scale, warmup = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
opts, do_run = json.loads(sys.argv[4]), sys.argv[5] == "1"
sys.path.append(__import__("os").path.dirname(path))  # shared helpers
spec = importlib.util.spec_from_file_location("speed_workload", path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
if hasattr(mod, "setup"):
    mod.setup(scale, **opts)
elif opts:
    raise SystemExit("workload has no setup() for options %r" % (opts,))
out = {"time": None, "result": None}
for _ in range(warmup):
    mod.run(scale)
gc.collect()
if do_run:
    before = [s["collections"] for s in gc.get_stats()]
    t0 = time.perf_counter()
    result = mod.run(scale)
    dt = time.perf_counter() - t0
    after = [s["collections"] for s in gc.get_stats()]
    out = {"time": dt, "result": repr(result)[:200],
           "collections": [a - b for a, b in zip(after, before)]}
if hasattr(mod, "info"):
    out["info"] = mod.info()
if hasattr(gc, "get_cow_mode"):
    out["cow_mode"] = gc.get_cow_mode()
out["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
# ru_maxrss survives exec (a small workload reports its launcher's peak);
# VmHWM is this process's own peak RSS.
try:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                out["peak_rss_kb"] = int(line.split()[1])
            elif line.startswith("RssFile:"):
                # File-backed pages (the binary's and libc's text) are
                # page cache, mapped in by fault-around: which pages land
                # in RSS varies by ~100 KiB between runs and layouts.
                out["rss_file_kb"] = int(line.split()[1])
except OSError:
    pass
print("SPEEDJSON " + json.dumps(out, default=str), flush=True)
sys.stderr.flush()
import os
os._exit(0)      # skip tearing down a large heap: not measured, only slow
'''


def resolve(python):
    """Absolute path of an interpreter given as a path or a command name."""
    if os.sep in python:
        return os.path.abspath(python)
    found = shutil.which(python)
    if not found:
        raise SystemExit("interpreter not found: %s" % python)
    return found


def worker_env():
    env = dict(os.environ)
    for k in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONINSPECT",
              "PYTHONUSERBASE"):
        env.pop(k, None)
    env["PYTHONHASHSEED"] = "0"      # same str hashes, same dict layouts
    # Write no .pyc anywhere: not into the repository, and not through
    # build/speed-site's symlinks into /usr/lib/python3/dist-packages.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def worker_cmd(python, name, scale, warmup, do_run=True):
    module, opts = WORKLOADS[name]
    path = os.path.join(WORKLOAD_DIR, module + ".py")
    return [python, "-s", "-c", WORKER, path, repr(float(scale)),
            str(int(warmup)), json.dumps(opts), "1" if do_run else "0"]


class WorkerError(RuntimeError):
    pass


def parse_output(stdout, stderr, rc):
    for line in stdout.splitlines():
        if line.startswith("SPEEDJSON "):
            if rc != 0:
                break
            return json.loads(line[len("SPEEDJSON "):])
    tail = "\n".join(stderr.strip().splitlines()[-15:])
    raise WorkerError("worker exited %s without a result:\n%s" % (rc, tail))


def run_worker(python, name, scale, warmup, do_run=True, prefix=(),
               timeout=900):
    cmd = list(prefix) + worker_cmd(python, name, scale, warmup, do_run)
    p = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(),
                       timeout=timeout, cwd=HERE)
    return parse_output(p.stdout, p.stderr, p.returncode)


def supports_immortalize(python):
    """True if PYTHON's gc.freeze() accepts immortalize=True."""
    code = ("import gc\n"
            "doc = gc.freeze.__doc__ or ''\n"
            "try:\n"
            "    gc.freeze(immortalize=True); ok = True\n"
            "except TypeError:\n"
            "    ok = 'immortalize' in doc\n"
            "print(int(ok))\n")
    p = subprocess.run([python, "-s", "-c", code], capture_output=True,
                       text=True, env=worker_env(), timeout=60)
    return p.stdout.strip() == "1"


def select(only, stock, cowpy):
    """Workload names to run, in order; OPTIONAL ones only if useful."""
    if only:
        names = [n.strip() for n in only.split(",") if n.strip()]
        unknown = [n for n in names if n not in WORKLOADS]
        if unknown:
            raise SystemExit("unknown workload(s): %s (known: %s)"
                             % (", ".join(unknown), ", ".join(WORKLOADS)))
        return names, []
    names, skipped = [], []
    for n in WORKLOADS:
        if n in OPTIONAL and not (supports_immortalize(stock)
                                  or supports_immortalize(cowpy)):
            skipped.append((n, "neither interpreter accepts "
                               "gc.freeze(immortalize=True)"))
            continue
        names.append(n)
    return names, skipped
