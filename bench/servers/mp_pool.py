"""multiprocessing.Pool with the fork context over the catalogue (a module
global, as fork-inherited data is): N tasks on 4 processes; prints one JSON
line: tasks/s, the result's checksum and every pool process's memory
(read from here, from /proc, once all tasks are done).

SERVERS_RECIPE=1: the stock freeze recipe (gc.disable() at import,
gc.collect(); gc.freeze() before the pool forks, gc.enable() in each
worker through the pool's initializer)."""

import gc
import json
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))), "Tools", "cowstat"))
from cowstat import proc as cowproc  # noqa: E402
from cowstat.pages import count_pages  # noqa: E402

import catalogue  # noqa: E402


def _ready(_):
    return os.getpid()


def init():
    if catalogue.RECIPE:
        gc.enable()


def main():
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    procs = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    if catalogue.RECIPE:
        gc.collect()
        gc.freeze()
    ctx = multiprocessing.get_context("fork")
    t_start = time.perf_counter()
    with ctx.Pool(procs, initializer=init) as pool:
        # The pool's start (its forks: with PYTHONCOWFORK=immortal the
        # first one collects and walks the heap) is timed apart from the
        # tasks, as the recipe's gc.collect(); gc.freeze() above is.
        pool.map(_ready, range(procs), chunksize=1)
        # CPU time of the pool's processes and this one over the tasks.
        pids = [os.getpid()] + [p.pid for p in pool._pool]
        cpu0 = sum(cowproc.read_cpu_faults(p)["cpu_s"] for p in pids)
        t0 = time.perf_counter()
        # each task reads 2,000 records: a worker touches the whole table
        total = sum(pool.map(catalogue.scan, range(tasks), chunksize=1))
        dt = time.perf_counter() - t0
        cpu = sum(cowproc.read_cpu_faults(p)["cpu_s"] for p in pids) - cpu0
        mem = [cowproc.read_memory(p.pid) for p in pool._pool]
        kib = os.sysconf("SC_PAGE_SIZE") // 1024
        for m, p in zip(mem, pool._pool):
            m["copied"] = sum(count_pages(os.getpid(), p.pid)[0].values()) \
                * kib
    print(json.dumps({"tasks": tasks, "seconds": dt, "cpu_s": cpu,
                      "checksum": total,
                      "startup": t0 - t_start, "workers": mem}))


if __name__ == "__main__":
    main()
