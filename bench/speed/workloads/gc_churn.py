"""gc_churn: object-heavy allocation with short-lived reference cycles.

Every iteration builds a small tree of instances whose children point
back at their parent (a cycle), a dict that refers to the root (another
cycle) and a few lists/tuples, uses it briefly and drops it.  Nothing of
it is freed by reference counting, so the cyclic GC's young collections
(threshold 2,000 allocations) do all the reclaiming; a small rolling
window of survivors keeps some objects alive long enough to reach the
older generations too.  The collector is enabled for the whole run.
"""

import gc
import random

from _gcscale import scaled_threshold

ITERATIONS = 90_000          # trees per run() at scale 1.0
TREE = 16                    # nodes per tree
WINDOW = 256                 # survivors kept alive at a time




class Node:
    def __init__(self, parent, val):
        self.parent = parent
        self.children = []
        self.val = val

    def depth(self):
        d = 0
        p = self.parent
        while p is not None:
            d += 1
            p = p.parent
        return d


def run(scale=1.0):
    was_enabled = gc.isenabled()
    old_threshold = scaled_threshold(scale)
    gc.enable()
    try:
        rng = random.Random(1234)
        # Tree shapes are drawn once per run: where node j hangs.
        shapes = [[rng.randrange(j) for j in range(1, TREE)]
                  for _ in range(64)]
        n = max(1, int(ITERATIONS * scale))
        keep = []
        total = 0
        for i in range(n):
            root = Node(None, i)
            nodes = [root]
            for j, at in enumerate(shapes[i & 63]):
                p = nodes[at]
                c = Node(p, j)
                p.children.append(c)
                nodes.append(c)
            root.meta = {"root": root, "size": len(nodes), "tag": (i, "t")}
            total += nodes[-1].depth() + len(root.children)
            if i % 40 == 0:
                keep.append(root)
                if len(keep) > WINDOW:
                    keep.pop(0)
        return total
    finally:
        gc.set_threshold(*old_threshold)
        if not was_enabled:
            gc.disable()
