#!/usr/bin/env python3
"""Model-based random fuzzer for cowpy's cyclic garbage collector.

    python3 Tools/fuzz/gc_fuzz.py [--seed N] [--steps N] [--seconds S]
                                  [--cases N] [--jobs N] [--timeout S]
                                  [--quiet] [--json FILE] [--md FILE]
    python3 Tools/fuzz/gc_fuzz.py --one-case --seed N [--steps K]

Without --one-case the script is a runner: it runs cases (one seed each,
seeds N, N+1, ...; N random by default) for --seconds or --cases, every
case in a fresh subprocess running this script with --one-case, so that a
crash ends one case only and every case starts from a clean interpreter.
It prints a summary (cases, steps, findings), writes it to --json if
asked (and a markdown fragment for docs/reliability.md to --md), and exits
with status 1 if anything was found.  A finding reads

    FAIL seed=1234: step K: <what>
    reproduce: PYTHON Tools/fuzz/gc_fuzz.py --one-case --seed 1234 --steps K

A case killed by a signal or hanging past --timeout is a finding too.
--self-test-fail and --self-test-crash make every case fail at step 3
(a corrupted expectation, a SIGSEGV), to test the reporting.

The parts are in the package gcfuzz/ next to this script, one concern per
module (the package's docstring describes the model):

    gcfuzz/nodes.py    what the interpreter has, the limits, Finding, MODEL
                       (the case being run), the node kinds and their
                       finalizers and weakref callbacks, node accessors
    gcfuzz/model.py    Model: a case's graph, its record of it and the
                       edits that keep both in step (finalizers' too)
    gcfuzz/checks.py   Checks: the expectations, checked against the graph
    gcfuzz/ops.py      Operations: the random steps and their weights
    gcfuzz/case.py     Case (Model + Checks + Operations): configure, step,
                       final
    gcfuzz/runner.py   running cases: --one-case in this process, the
                       runner's subprocesses, the campaign
    gcfuzz/cli.py      the command line and the markdown fragment
"""

import os
import sys

# Lib/test/test_gc_cow_fuzz.py loads this file by its path, so this
# directory goes on sys.path for importing gcfuzz only; and no __pycache__
# is written under Tools/ (none was when this file was the whole fuzzer).
_HERE = os.path.dirname(os.path.abspath(__file__))
_WRITE_BYTECODE = sys.dont_write_bytecode
sys.path.insert(0, _HERE)
sys.dont_write_bytecode = True
try:
    from gcfuzz.case import Case
    from gcfuzz.cli import main, write_md
    from gcfuzz.nodes import DEFAULT_STEPS, RESULT_TAG, Finding
    from gcfuzz.runner import (repro_command, run_campaign,
                               run_case_process, run_one_case)
finally:
    sys.dont_write_bytecode = _WRITE_BYTECODE
    sys.path.remove(_HERE)

# What other code uses (Lib/test/test_gc_cow_fuzz.py: run_campaign).  The
# case being run is gcfuzz.nodes.MODEL: set and read there only.
__all__ = ["Case", "DEFAULT_STEPS", "Finding", "RESULT_TAG", "main",
           "repro_command", "run_campaign", "run_case_process",
           "run_one_case", "write_md"]

if __name__ == "__main__":
    sys.exit(main())
