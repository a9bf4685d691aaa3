"""heap_growth: a long-lived heap growing to ~1M tracked objects.

Builds, with the collector enabled, an index of records the way a server
loads its configuration, routing tables or caches at start-up: each
record is a class instance, two lists, a dict and a tuple (5 GC-tracked
objects), 200,000 records at scale 1.0, all alive until the end of run().
As generation 2 grows, stock CPython's "long-lived pending > 25 % of
long-lived total" rule triggers a series of full collections over an
ever larger heap: this is the full-collection pressure a start-up phase
sees.  The heap is released (by reference counting) at the end of run().
"""

import gc
import random

from _gcscale import scaled_threshold

RECORDS = 200_000




class Record:
    def __init__(self, key, parent):
        self.key = key
        self.parent = parent
        self.links = []
        self.attrs = {}


def run(scale=1.0):
    was_enabled = gc.isenabled()
    old_threshold = scaled_threshold(scale)
    gc.enable()
    try:
        rng = random.Random(42)
        n = max(1, int(RECORDS * scale))
        index = {}
        order = []
        prev = None
        for i in range(n):
            key = "rec%07d" % i
            r = Record(key, prev)
            r.attrs["weight"] = i % 97
            r.attrs["pair"] = (key, [i])      # a tracked tuple holding a list
            if order:
                r.links.append(order[rng.randrange(len(order))])
            index[key] = r
            order.append(r)
            prev = r if i % 8 else None
        total = 0
        for r in order[:: max(1, n // 1000)]:
            total += r.attrs["weight"] + len(r.links)
        del index, order, prev, r
        return total
    finally:
        gc.set_threshold(*old_threshold)
        if not was_enabled:
            gc.disable()
