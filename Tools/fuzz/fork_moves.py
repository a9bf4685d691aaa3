"""Seeded fuzzer of the moves that broke cowpy before: freezes, immortal
freezes and forks from finalizers and weakref callbacks, forks from a
second thread in the middle of a collection, resource objects alive at
an immortalizing fork and dropped after, tuples that only C code holds
at a fork, and (opt-in) own-GIL subinterpreters collecting meanwhile.

Each case is a small program made of randomly chosen and parameterized
moves, run in a fresh interpreter under a random collector mode and fork
mode; every move checks its own outcome (the object survived or died as
it should, the resource was released, the result is right), and the case
must exit 0 and print 'ok'.  A crash, a SystemError or a failed check is
a finding, printed with a one-line reproduction.  gc_fuzz.py checks the
collector against a model of an object graph; this one checks the moves
around it.

    python Tools/fuzz/fork_moves.py --seconds 60
    python Tools/fuzz/fork_moves.py --seed 123 --show      # the program
"""

import argparse
import os
import random
import subprocess
import sys
import textwrap
import time

PRELUDE = """\
import gc, os, sys, threading, weakref
FAILURES = []
def check(cond, what):
    if not cond:
        FAILURES.append(what)
def wait_child(pid):
    _, status = os.waitpid(pid, 0)
    check(os.waitstatus_to_exitcode(status) == 0,
          f"child exited with {status}")
def child_exit(code=0):
    sys.stdout.flush()
    os._exit(code)
"""

EPILOGUE = """\
gc.collect()
if FAILURES:
    print("FAILURES:", FAILURES)
    sys.exit(1)
print("ok")
"""


def move_finalizer_freeze(rng, i):
    imm = rng.choice((True, False))
    n = rng.randint(1, 30)
    return f"""
keep{i} = []
class Fin{i}:
    def __del__(self):
        keep{i}.append(self.other)
        gc.freeze(immortalize={imm})
for _ in range({n}):
    a = Fin{i}(); b = Fin{i}(); a.other = b; b.other = a
    del a, b
    gc.collect()
gc.collect()
check(len(keep{i}) == {2 * n}, "finalizer_freeze: lost resurrected objects")
"""


def move_finalizer_fork(rng, i):
    return f"""
class ForkFin{i}:
    def __del__(self):
        pid = os.fork()
        if pid == 0:
            gc.collect()
            child_exit(0)
        wait_child(pid)
a = ForkFin{i}(); a.me = a
del a
gc.collect()
"""


def move_weakref_callback(rng, i):
    act = rng.choice(("freeze", "immortal", "fork"))
    body = {"freeze": "gc.freeze()",
            "immortal": "gc.freeze(immortalize=True)",
            "fork": "pid = os.fork()\n"
                    "        if pid == 0:\n"
                    "            gc.collect(); child_exit(0)\n"
                    "        wait_child(pid)"}[act]
    return f"""
class Target{i}: pass
called{i} = []
def cb{i}(ref):
        called{i}.append(1)
        {body}
t = Target{i}(); t.me = t
r{i} = weakref.ref(t, cb{i})
del t
gc.collect()
check(called{i} == [1], "weakref_callback({act}): callback ran "
      f"{{len(called{i})}} times")
"""


def move_thread_fork(rng, i):
    pairs = rng.randint(1, 4)
    return f"""
in_fin{i} = threading.Event(); release{i} = threading.Event()
class Blocker{i}:
    def __del__(self):
        in_fin{i}.set()
        release{i}.wait(30)
def collector{i}():
    for _ in range({pairs}):
        a = Blocker{i}(); b = Blocker{i}(); a.o = b; b.o = a
    del a, b
    gc.collect()
t{i} = threading.Thread(target=collector{i})
t{i}.start()
in_fin{i}.wait(30)
pid = os.fork()
if pid == 0:
    # The collecting thread may have held either Event's lock at the
    # fork (release.wait() takes it before it sleeps): the child's copies
    # could block for good, so its finalizers get fresh ones, set.
    in_fin{i} = threading.Event(); release{i} = threading.Event()
    release{i}.set()
    stray = [o for o in gc.get_objects() if type(o) is Blocker{i}]
    holders = [[o] for o in stray]
    gc.collect(0); gc.collect()
    del holders, stray
    gc.collect()
    child_exit(0)
release{i}.set()
t{i}.join()
wait_child(pid)
"""


def move_resources(rng, i):
    how = rng.choice(("freeze", "fork"))
    freeze = ("gc.freeze(immortalize=True)" if how == "freeze" else
              "pid = os.fork()\nif pid == 0:\n    child_exit(0)\n"
              "wait_child(pid)")
    return f"""
import mmap, select, multiprocessing
ba{i} = bytearray(64); view = memoryview(ba{i})
mm{i} = mmap.mmap(-1, 4096); mview = memoryview(mm{i})
ep = select.epoll(); epfd = ep.fileno()
lock{i} = multiprocessing.Lock()
{freeze}
del view, mview, ep
gc.collect()
try:
    ba{i}.extend(b"x")
except BufferError as e:
    check(False, f"resources({how}): bytearray export kept: {{e}}")
try:
    mm{i}.close()
except BufferError as e:
    check(False, f"resources({how}): mmap export kept: {{e}}")
try:
    os.fstat(epfd)
    check(False, "resources({how}): epoll fd never closed")
except OSError:
    pass
"""


def move_c_held_tuple(rng, i):
    n = rng.randint(2, 6)
    at = rng.randrange(n)
    return f"""
import itertools
def forking{i}():
    for k in range({n}):
        if k == {at}:
            pid = os.fork()
            if pid == 0:
                child_exit(0)
            wait_child(pid)
        yield k
try:
    check(tuple(forking{i}()) == tuple(range({n})), "c_held: tuple()")
    check(list(itertools.batched(forking{i}(), 2))
          == list(itertools.batched(range({n}), 2)), "c_held: batched()")
    check(list(zip(forking{i}(), range({n})))
          == list(zip(range({n}), range({n}))), "c_held: zip()")
    check(list(enumerate(forking{i}())) == list(enumerate(range({n}))),
          "c_held: enumerate()")
except SystemError as e:
    check(False, f"c_held: SystemError {{e}}")
"""


def move_heap(rng, i):
    n = rng.randint(100, 5000)
    return f"""
heap{i} = [{{"k": [j, str(j)], "t": (j, "x" * (j % 7))}}
           for j in range({n})]
for j in range({n} // 10):
    a = []; b = [a]; a.append(b)    # cyclic garbage
del a, b
"""


def move_subinterpreter(rng, i):
    return f"""
import _interpreters
interp{i} = _interpreters.create("isolated")
code{i} = '''
import gc
for _ in range(200):
    a = []; a.append(a); del a
    gc.collect()
'''
def run_sub{i}():
    _interpreters.run_string(interp{i}, code{i})
ts{i} = threading.Thread(target=run_sub{i}); ts{i}.start()
for _ in range(50):
    x = []; x.append(x); del x
    gc.collect()
gc.freeze(immortalize=True)
ts{i}.join()
_interpreters.destroy(interp{i})
"""


MOVES = {
    "heap": move_heap,
    "finalizer_freeze": move_finalizer_freeze,
    "finalizer_fork": move_finalizer_fork,
    "weakref_callback": move_weakref_callback,
    "thread_fork": move_thread_fork,
    "resources": move_resources,
    "c_held_tuple": move_c_held_tuple,
}
OPT_IN = {"subinterpreter": move_subinterpreter}


def make_case(seed, moves):
    rng = random.Random(seed)
    env = {"PYTHONCOWGC": rng.choice(("default", "arena")),
           "PYTHONCOWFORK": rng.choice(("off", "freeze", "immortal"))}
    parts = [PRELUDE]
    for i in range(rng.randint(2, 6)):
        name = rng.choice(moves)
        parts.append(f"# move {i}: {name}")
        move = MOVES.get(name) or OPT_IN[name]
        parts.append(textwrap.dedent(move(rng, i)))
    parts.append(EPILOGUE)
    return env, "\n".join(parts)


def run_case(python, seed, moves, timeout):
    env, code = make_case(seed, moves)
    full = dict(os.environ, **env)
    try:
        proc = subprocess.run([python, "-c", code], env=full,
                              capture_output=True, text=True,
                              timeout=timeout, errors="backslashreplace")
    except subprocess.TimeoutExpired:
        return env, f"hung (> {timeout} s)"
    if proc.returncode != 0 or not proc.stdout.rstrip().endswith("ok"):
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-6:]
        return env, (f"exit {proc.returncode}: " + " | ".join(tail))
    return env, None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--seed", type=int, help="first seed (default random)")
    ap.add_argument("--cases", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--subinterpreters", action="store_true",
                    help="also the opt-in subinterpreter move")
    ap.add_argument("--show", action="store_true",
                    help="print the program of --seed and exit")
    args = ap.parse_args()
    moves = sorted(MOVES) + (sorted(OPT_IN) if args.subinterpreters else [])
    seed = args.seed if args.seed is not None else random.getrandbits(32)
    if args.show:
        env, code = make_case(seed, moves)
        print("#", " ".join(f"{k}={v}" for k, v in env.items()))
        print(code)
        return 0
    if args.cases is None and args.seconds is None:
        args.cases = 1
    start = time.monotonic()
    cases = findings = 0
    while True:
        if args.cases is not None and cases >= args.cases:
            break
        if (args.seconds is not None
                and time.monotonic() - start >= args.seconds):
            break
        env, what = run_case(args.python, seed + cases, moves, args.timeout)
        if what:
            findings += 1
            opt = " --subinterpreters" if args.subinterpreters else ""
            print(f"FINDING seed={seed + cases} "
                  f"{' '.join(f'{k}={v}' for k, v in env.items())}: {what}")
            print(f"reproduce: {args.python} Tools/fuzz/fork_moves.py "
                  f"--seed {seed + cases}{opt} --show | "
                  f"{' '.join(f'{k}={v}' for k, v in env.items())} "
                  f"{args.python} -")
        cases += 1
    print(f"fork_moves: {cases} cases, {findings} findings in "
          f"{time.monotonic() - start:.1f} s (first seed {seed})")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
