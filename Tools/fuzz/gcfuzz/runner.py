"""Running cases: --one-case in this process (run_one_case, which sets
nodes.MODEL), one case in a subprocess (run_case_process), and a campaign
of cases in parallel subprocesses (run_campaign).
"""

import concurrent.futures
import contextlib
import gc
import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback

from . import nodes
from .case import Case
from .nodes import RESULT_TAG, Finding, signal_name

# The entry point: what every case runs with --one-case, and what the
# reproduction lines name.
SCRIPT = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "gc_fuzz.py")


def script_path():
    path = SCRIPT
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def repro_command(python, seed, step, extra=()):
    return " ".join([python, script_path(), "--one-case", "--seed",
                     str(seed), "--steps", str(step), *extra])


def case_args(args):
    """Options passed on to every case (and into reproduction lines)."""
    out = []
    if args.self_test_fail:
        out.append("--self-test-fail")
    if args.self_test_crash:
        out.append("--self-test-crash")
    return out


def run_one_case(args):
    """--one-case: run a case in this process; 1 on a finding."""
    self_test = ("fail" if args.self_test_fail
                 else "crash" if args.self_test_crash else None)
    case = Case(args.seed, args.steps, quiet=args.quiet, self_test=self_test)
    nodes.MODEL = case
    sys.unraisablehook = case.unraisable
    gc.callbacks.append(case.gc_phase)
    finding = None
    fail_step = None
    try:
        case.configure()
        if not args.quiet:
            print(f"# gc_fuzz seed={args.seed} steps={args.steps} "
                  f"{json.dumps(case.config)}", flush=True)
        for _ in range(args.steps):
            case.step()
        case.final()
    except Finding as exc:
        finding = str(exc)
    except Exception:
        finding = "the fuzzer raised\n" + traceback.format_exc()
    if finding is not None:
        fail_step = max(1, case.path[0])
        finding = f"step {case.label()}: {finding}"
    result = {"seed": args.seed, "steps": case.total_steps,
              "finding": finding, "fail_step": fail_step,
              "config": case.config}
    print(RESULT_TAG + json.dumps(result), flush=True)
    if finding is not None:
        print(f"FAIL seed={args.seed}: {finding}")
        print("reproduce: " + repro_command(
            sys.executable, args.seed, fail_step, case_args(args)))
    sys.stdout.flush()
    nodes.MODEL = None
    gc.enable()
    return 1 if finding is not None else 0


def interpreter_stamp(python, wait=300):
    """Identity of the interpreter file, waiting up to `wait` seconds for
    it to (re)appear: a build may be reinstalling it."""
    deadline = time.monotonic() + wait
    while True:
        try:
            st = os.stat(python)
            if os.access(python, os.X_OK):
                return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            pass
        if time.monotonic() > deadline:
            return None
        time.sleep(2)


def run_case_process(python, seed, steps, timeout, extra=()):
    """Run one case in a subprocess; return a result dict.  A case during
    which the interpreter was replaced is run again."""
    for _ in range(5):
        stamp = interpreter_stamp(python)
        try:
            res = run_case_once(python, seed, steps, timeout, extra)
        except OSError:
            res = None
        if res is not None and stamp is not None and \
                interpreter_stamp(python, wait=0) == stamp:
            return res
    if res is None:
        res = {"seed": seed, "seconds": 0.0, "steps": 0, "config": {},
               "finding": f"cannot run {python}", "step": steps,
               "reproduce": repro_command(python, seed, steps, extra),
               "stderr": ""}
    return res


def run_case_once(python, seed, steps, timeout, extra):
    cmd = [python, SCRIPT, "--one-case", "--seed",
           str(seed), "--steps", str(steps), *extra]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True,
                            errors="backslashreplace")
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    result = None
    last_step = None
    for line in out.splitlines():
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
        elif line.startswith("#step "):
            m = re.match(r"#step (\d+)", line)
            if m:
                last_step = int(m.group(1))
    rc = proc.returncode
    res = {"seed": seed, "seconds": time.monotonic() - start,
           "steps": result["steps"] if result else 0,
           "config": result["config"] if result else {},
           "finding": None, "step": None}
    if result and result["finding"]:
        res["finding"] = result["finding"]
        res["step"] = result["fail_step"]
    if timed_out:
        res["finding"] = f"timed out after {timeout} s"
    elif rc < 0:
        when = "at exit" if result else f"at step {last_step}"
        res["finding"] = (res["finding"] or "") + \
            f"crashed with {signal_name(-rc)} {when}"
    elif rc not in (0, 1) or (rc == 1 and not res["finding"]) or \
            (result is None):
        res["finding"] = f"exited with status {rc} without a finding"
    elif rc == 0 and res["finding"]:
        res["finding"] += " (but exited with status 0)"
    if res["finding"] is not None:
        if res["step"] is None:
            res["step"] = last_step or steps
        res["reproduce"] = repro_command(python, seed, res["step"], extra)
        tail = (err or "").strip().splitlines()[-15:]
        res["stderr"] = "\n".join(tail)
    return res


def run_campaign(first_seed, steps, cases=None, seconds=None, jobs=1,
                 timeout=600, extra=(), quiet=False, python=None,
                 out=print):
    """Run cases first_seed, first_seed + 1, ... in subprocesses until
    `cases` cases ran or `seconds` passed; return the summary dict."""
    python = python or sys.executable
    start = time.monotonic()
    summary = {"cases": 0, "steps": 0, "findings": [], "seconds": 0.0,
               "python": sys.version, "first_seed": first_seed,
               "last_seed": None, "date": time.strftime("%Y-%m-%d %H:%M"),
               "steps_per_case": steps, "jobs": max(1, jobs),
               "modes": {"cow": {}, "fork": {}}}
    next_seed = first_seed

    def more():
        if cases is not None and next_seed - first_seed >= cases:
            return False
        if seconds is not None and time.monotonic() - start >= seconds:
            return False
        return True

    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        pending = {}
        while True:
            while len(pending) < max(1, jobs) and more():
                fut = pool.submit(run_case_process, python, next_seed,
                                  steps, timeout, extra)
                pending[fut] = next_seed
                next_seed += 1
            if not pending:
                break
            done, _ = concurrent.futures.wait(
                pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in sorted(done, key=pending.get):
                seed = pending.pop(fut)
                try:
                    res = fut.result()
                except Exception:
                    res = {"seed": seed, "seconds": 0.0, "steps": 0,
                           "config": {}, "step": steps,
                           "finding": "the runner failed: "
                                      + traceback.format_exc(),
                           "reproduce": repro_command(python, seed, steps,
                                                      extra),
                           "stderr": ""}
                summary["cases"] += 1
                summary["steps"] += res["steps"]
                if summary["last_seed"] is None or \
                        seed > summary["last_seed"]:
                    summary["last_seed"] = seed
                for key, mix in summary["modes"].items():
                    # The mode the seed chose (ops may switch it later);
                    # none on a stock interpreter or a case that died
                    # before reporting.
                    mode = res["config"].get(key, "n/a")
                    mix[mode] = mix.get(mode, 0) + 1
                cfg = " ".join(f"{k}={v}" for k, v in res["config"].items()
                               if k in ("cow", "fork"))
                if res["finding"] is None:
                    if not quiet:
                        out(f"seed {res['seed']}: ok, {res['steps']} steps"
                            f" {cfg} ({res['seconds']:.1f} s)")
                    continue
                summary["findings"].append({
                    "seed": res["seed"], "step": res["step"],
                    "what": res["finding"], "reproduce": res["reproduce"],
                    "config": res["config"], "stderr": res["stderr"]})
                out(f"FAIL seed={res['seed']}: {res['finding']}")
                out(f"reproduce: {res['reproduce']}")
                if res["stderr"] and not quiet:
                    out("  stderr: " + res["stderr"].replace("\n", "\n    "))
    summary["seconds"] = round(time.monotonic() - start, 1)
    return summary
