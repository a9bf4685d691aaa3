"""Case: one seeded run, the model (gcfuzz.model), its checks
(gcfuzz.checks) and the operations (gcfuzz.ops) put together; its
configuration from the seed, a step, the final release and check.
"""

import gc
import os
import signal
import sys
import time

from .checks import Checks
from .model import Model
from .nodes import (HAS_COW, HAS_FAIL_ARENA, HAS_FORK, HAS_IMMORTAL,
                    MAX_DEPTH)
from .ops import Operations


class Case(Operations, Checks, Model):
    """One seeded run: a graph, its model, and the operations on them."""

    def configure(self):
        """Per-case settings and operation weights, from the seed."""
        rng = self.rng
        cfg = self.config
        if HAS_COW:
            cfg["cow"] = rng.choice(("default", "arena"))
            cfg["fork"] = rng.choice(("freeze", "immortal", "off"))
            cfg["shared_threshold"] = rng.choice((0, 1, 1, 2))
            gc.set_cow_mode(cfg["cow"])
            gc.set_fork_mode(cfg["fork"])
            gc.set_shared_threshold(cfg["shared_threshold"])
        cfg["threshold"] = rng.choice(((2000, 10, 10), (100, 5, 5),
                                       (10, 2, 2)))
        gc.set_threshold(*cfg["threshold"])
        have = {"cow": HAS_COW, "immortal": HAS_IMMORTAL, "fork": HAS_FORK,
                "fail_arena": HAS_FAIL_ARENA}
        for name, (weight, needs) in self.OPS.items():
            if needs is None or have[needs]:
                self.weights[name] = weight * rng.choice((0.3, 1, 1, 2))
        self.gc_on = True
        gc.disable()

    def step(self):
        self.path[-1] += 1
        self.total_steps += 1
        names = list(self.weights)
        if len(self.path) > MAX_DEPTH and "fork" in names:
            names.remove("fork")
        op = self.rng.choices(names, [self.weights[n] for n in names])[0]
        self.trace(op)
        if (self.self_test == "crash" and len(self.path) == 1
                and self.path[0] >= 3):
            crash()
        res = getattr(self, "op_" + op)()
        if res and not self.quiet:
            os.write(1, f"#   {res}\n".encode())
        if op != "collect_full":
            self.check()

    def final(self):
        """Release everything and check that only pinned nodes and what
        they reach survive."""
        self.path.append("final")
        self.trace("final")
        if HAS_COW and gc.get_cow_mode() == "stock":
            gc.set_cow_mode("default")
        self.full_collect()
        self.root_nids.clear()
        self.roots.clear()
        self.res_nids.clear()
        self.resurrected.clear()
        self.full_collect()     # frozen garbage: a shared collection
        self.op_unfreeze()
        for _ in range(3):
            self.op_clear_garbage()
            self.full_collect()
        self.path.pop()


def crash():
    """--self-test-crash: die of SIGSEGV, as a collector bug would."""
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)
