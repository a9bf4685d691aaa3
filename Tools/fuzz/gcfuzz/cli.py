"""gc_fuzz.py's command line (main) and the markdown fragment of a run
for docs/reliability.md (write_md).
"""

import argparse
import functools
import json
import os
import sys

from .nodes import DEFAULT_STEPS
from .runner import case_args, run_campaign, run_one_case


def write_md(path, summary, python):
    """A markdown fragment with the figures of a run, for
    docs/reliability.md (Tools/make/reliability_doc.py copies it there)."""
    found = summary["findings"]
    cases = summary["cases"]
    if cases:
        seeds = f"{summary['first_seed']}..{summary['last_seed']}"
    else:
        seeds = f"none run (first seed {summary['first_seed']})"

    def mix(key):
        counts = sorted(summary["modes"][key].items(),
                        key=lambda kv: (-kv[1], kv[0]))
        return ", ".join(f"{mode} {n}" for mode, n in counts)
    version = summary["python"].split()[0]
    verdict = (f"**{len(found)} finding{'s' if len(found) != 1 else ''}**"
               if found else "**no findings**")
    lines = [
        f"`Tools/fuzz/gc_fuzz.py`, {summary['date']}, {version}: {verdict} "
        f"in {cases} cases ({summary['seconds']:.0f} s).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| interpreter | `{python}`, {version} |",
        f"| time | {summary['seconds']:.1f} s, {summary['jobs']} "
        f"job{'s' if summary['jobs'] != 1 else ''} |",
        f"| cases | {cases} (seeds {seeds}) |",
        f"| steps | {summary['steps']} (up to {summary['steps_per_case']} "
        f"per case, plus those of fork children) |",
        f"| findings | {len(found)} |",
        f"| collector mode chosen by the seed | {mix('cow') or '-'} |",
        f"| fork mode chosen by the seed | {mix('fork') or '-'} |",
    ]
    if found:
        lines += ["", "Findings (one-line reproductions):", ""]
        for f in found:
            what = (f["what"] or "").strip().splitlines()
            what = what[0] if what else "?"
            lines.append(f"- seed {f['seed']}, {what.replace('|', '/')}; "
                         f"reproduce: `{f['reproduce']}`")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Random object-graph fuzzer for the cyclic GC "
                    "(cowpy's frozen/immortal heap included).")
    parser.add_argument("--seed", type=int,
                        help="seed of the (first) case; default: random")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help="steps per case (default %(default)s)")
    parser.add_argument("--seconds", type=float,
                        help="run cases until this many seconds passed")
    parser.add_argument("--cases", type=int,
                        help="number of cases (default 1 without --seconds)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="cases run in parallel (default 1)")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds before a case counts as hung")
    parser.add_argument("--quiet", action="store_true",
                        help="print findings and the summary only")
    parser.add_argument("--json", metavar="FILE",
                        help="write the summary as JSON")
    parser.add_argument("--md", metavar="FILE",
                        help="write the figures as a markdown fragment "
                             "(for docs/reliability.md)")
    parser.add_argument("--one-case", action="store_true",
                        help="run one case in this process (what the "
                             "runner starts per seed)")
    parser.add_argument("--self-test-fail", action="store_true",
                        help="corrupt an expectation at step 3, to test "
                             "how findings are reported")
    parser.add_argument("--self-test-crash", action="store_true",
                        help="die of SIGSEGV at step 3, to test how "
                             "crashes are reported")
    args = parser.parse_args(argv)
    if args.one_case:
        if args.seed is None:
            parser.error("--one-case needs --seed")
        return run_one_case(args)
    seed = args.seed
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "big")
    cases = args.cases
    if cases is None and args.seconds is None:
        cases = 1
    if not args.quiet:
        print(f"gc_fuzz: {sys.executable} ({sys.version.split()[0]}), "
              f"first seed {seed}, {args.steps} steps per case", flush=True)
    summary = run_campaign(seed, args.steps, cases=cases,
                           seconds=args.seconds, jobs=args.jobs,
                           timeout=args.timeout, extra=case_args(args),
                           quiet=args.quiet,
                           out=functools.partial(print, flush=True))
    print(f"gc_fuzz: {summary['cases']} cases, {summary['steps']} steps, "
          f"{len(summary['findings'])} findings in {summary['seconds']} s")
    for path in (args.json, args.md):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)),
                        exist_ok=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
            f.write("\n")
    if args.md:
        write_md(args.md, summary, sys.executable)
    return 1 if summary["findings"] else 0
