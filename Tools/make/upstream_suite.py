"""Run CPython's full test suite with one interpreter and judge the outcome
against the known-failures list.

    python3 Tools/make/upstream_suite.py PYTHON --known FILE --log FILE
            [--label NAME] [--env K=V ...] [regrtest args...]

The suite runs as `PYTHON -m test -j2 --rerun --timeout 900` with default
resources; failed tests are re-run once in verbose mode (regrtest's own
flake handling) and only tests that fail again count.  A failing test file
is *expected* when the known-failures file lists the file itself, or lists
every test id that failed in it (prefix match).  The known-failures file
holds only failures that stock, built from the same tarball, shows here
too; each line is `ID  # reason`.

Prints one line per unexpected failure and a closing line
`upstream[LABEL]: N passed, N failed` (test files); exit status 1 when any
failure is unexpected or the suite did not complete.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import time


def load_known(path):
    known = {}
    with open(path) as f:
        for line in f:
            entry, _, reason = line.partition("#")
            entry = entry.strip()
            if entry:
                known[entry] = reason.strip()
    return known


def parse_list(lines, i):
    """Names printed by regrtest's printlist() below a title line."""
    names = []
    i += 1
    while i < len(lines) and lines[i].startswith("    "):
        names.extend(lines[i].split())
        i += 1
    return names


# Titles of the lists regrtest's display_result() prints, and the key each
# list is stored under ("N tests failed:", "1 re-run test:", ...).
SECTIONS = [
    (re.compile(r"^\d+ tests? failed( again)?:$"), "failed"),
    (re.compile(r"^\d+ re-run tests?:$"), "re-run"),
    (re.compile(r"^\d+ tests? skipped:$"), "skipped"),
    (re.compile(r"^\d+ tests? altered the execution environment"),
     "env_changed"),
    (re.compile(r"^\d+ tests? omitted:$"), "omitted"),
    (re.compile(r"^\d+ tests? run no tests:$"), "run_no_tests"),
]


def parse(log):
    lines = log.splitlines()
    summary = {}
    rerun_start = None
    for i, line in enumerate(lines):
        if (rerun_start is None and line.startswith("Re-running ")
                and "in verbose mode" in line):
            rerun_start = i
        for pattern, key in SECTIONS:
            if pattern.match(line):
                summary[key] = parse_list(lines, i)
        m3 = re.match(r"^Total test files: run=(\d+)", line)
        if m3:
            summary["total"] = int(m3.group(1))
        m4 = re.match(r"^Result: (.*)$", line)
        if m4:
            summary["result"] = m4.group(1)
    # Test ids that failed during the verbose re-run (the ones that count).
    failed_ids = []
    if rerun_start is not None:
        for line in lines[rerun_start:]:
            m = re.match(r"^(FAIL|ERROR): (\S+) \(([\w.]+)\)", line)
            if m:
                failed_ids.append(m.group(3))
    return summary, failed_ids


def module_of(test_id):
    parts = test_id.split(".")
    if parts[0] == "test" and len(parts) > 1:
        return parts[1]
    return parts[0]


def judge(summary, failed_ids, known):
    unexpected = []
    for mod in summary.get("failed", []):
        if mod in known:
            continue
        ids = [t for t in failed_ids
               if module_of(t) == mod or t.startswith(mod + ".")]
        if ids and all(any(t == k or t.startswith(k + ".")
                           for k in known) for t in ids):
            continue
        unexpected.append((mod, ids))
    return unexpected


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("python")
    ap.add_argument("--known", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--label", default="default")
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--parse-only", action="store_true",
                    help="judge an existing log instead of running")
    args, extra = ap.parse_known_args()

    if not args.parse_only:
        # The suite's outcome must not depend on the caller's PYTHON*
        # variables (PYTHONUNBUFFERED alone fails test_cmd_line).
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PYTHON")}
        for kv in args.env:
            k, _, v = kv.partition("=")
            env[k] = v
        # Nor on how the caller was started: a background job of a
        # non-interactive shell inherits SIGINT ignored, which fails
        # test_pdb, test_signal, test_regrtest, test_generators and the
        # multiprocessing tests on stock as on cowpy.  A handler (not
        # SIG_IGN) here becomes SIG_DFL in the exec'ed suite.
        if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        cmd = [args.python, "-m", "test", "-j2", "--rerun", "--timeout",
               "900", "--slowest"] + extra
        print(f"upstream[{args.label}]: {' '.join(cmd)}  (log: {args.log})",
              flush=True)
        t0 = time.monotonic()
        with open(args.log, "w") as logf:
            proc = subprocess.run(cmd, env=env, stdout=logf,
                                  stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        print(f"upstream[{args.label}]: exit {proc.returncode} after "
              f"{time.monotonic() - t0:.0f} s", flush=True)
    with open(args.log, errors="replace") as f:
        log = f.read()
    summary, failed_ids = parse(log)
    known = load_known(args.known)
    if "total" not in summary:
        print(f"upstream[{args.label}]: the suite did not complete; "
              f"see {args.log}")
        print(log[-3000:])
        print(f"upstream[{args.label}]: 0 passed, 1 failed")
        return 1
    failed = summary.get("failed", [])
    unexpected = judge(summary, failed_ids, known)
    for mod, ids in unexpected:
        print(f"upstream[{args.label}]: UNEXPECTED FAILURE {mod}: "
              f"{', '.join(ids) or '(see log)'}")
    for mod in failed:
        if mod not in [u[0] for u in unexpected]:
            why = known.get(mod) or "; ".join(
                sorted({known[k] for k in known
                        if any(t.startswith(k) for t in failed_ids
                               if module_of(t) == mod)}))
            print(f"upstream[{args.label}]: known failure {mod} ({why})")
    if summary.get("re-run"):
        print(f"upstream[{args.label}]: re-run: "
              f"{' '.join(summary['re-run'])}")
    # regrtest's run= counts a re-run test file twice.
    total = summary["total"] - len(summary.get("re-run", []))
    nbad = len(unexpected)
    print(f"upstream[{args.label}]: result {summary.get('result', '?')}; "
          f"{total} test files, {len(failed)} failed "
          f"({len(failed) - nbad} known)")
    print(f"upstream[{args.label}]: {total - nbad} passed, {nbad} failed")
    return 1 if nbad else 0


if __name__ == "__main__":
    sys.exit(main())
