"""after_freeze: mixed work after gc.freeze() of a large heap.

A pre-fork server's parent loads a large, long-lived heap and (stock:
by hand, cowpy: automatically at fork) freezes it; the workers then do
ordinary request work on top of it.  setup() builds ~1M tracked objects
(200,000 records of ~5 tracked objects each at scale 1.0, like
heap_growth), runs gc.collect() and freezes the heap; it is not timed.
run() then does mixed dict/list/method-call work that reads the frozen
heap and allocates, keeping a rolling cache of survivors so that the
older generations fill up and automatic full collections happen: on
stock they never look at the frozen heap, on cowpy they may (shared
collections, gc.set_shared_threshold()).

Variants (chosen by setup(immortalize=...), reported as `freeze`):
  plain      gc.freeze(), on every interpreter;
  immortal   gc.freeze(immortalize=True) where the interpreter accepts it
             ('immortalize' in gc.freeze.__doc__, or the call does not
             raise TypeError); otherwise plain gc.freeze(), reported as
             "plain (immortalize unsupported)".
"""

import gc
import random

from _gcscale import scaled_threshold

RECORDS = 200_000            # frozen heap: ~5 tracked objects per record
ROUNDS = 160_000             # request-like rounds per run() at scale 1.0
CACHE = 20_000               # rolling cache of surviving entries

_heap = None
_freeze = None
_gc_before = None
_gc_after = None




class Record:
    def __init__(self, key, parent):
        self.key = key
        self.parent = parent
        self.links = []
        self.attrs = {}

    def weight(self):
        return self.attrs["weight"]


class Request:
    def __init__(self, handler, key, page):
        self.handler = handler
        self.ctx = {"request": self, "key": key, "page": page}
        self.headers = [("x-key", key)]

    def size(self):
        return len(self.ctx) + len(self.headers)


class Handler:
    def __init__(self, heap):
        self.heap = heap
        self.hits = 0

    def lookup(self, key):
        r = self.heap.get(key)
        if r is not None:
            self.hits += 1
        return r

    def render(self, r, i):
        return {"key": r.key, "w": r.weight(), "n": len(r.links), "i": i,
                "tags": [r.key[-2:], i & 7]}


def _build(n):
    rng = random.Random(42)
    index = {}
    order = []
    prev = None
    for i in range(n):
        key = "rec%07d" % i
        r = Record(key, prev)
        r.attrs["weight"] = i % 97
        r.attrs["pair"] = (key, [i])
        if order:
            r.links.append(order[rng.randrange(len(order))])
        index[key] = r
        order.append(r)
        prev = r if i % 8 else None
    return index, order


def setup(scale=1.0, immortalize=False):
    global _heap, _freeze
    if _heap is not None:
        return
    _heap = _build(max(1, int(RECORDS * scale)))
    gc.collect()
    if immortalize:
        try:
            gc.freeze(immortalize=True)
            _freeze = "immortal"
        except TypeError:
            gc.freeze()
            _freeze = "plain (immortalize unsupported)"
    else:
        gc.freeze()
        _freeze = "plain"


def _shared_stats():
    f = getattr(gc, "get_shared_stats", None)
    if f is None:
        return None
    try:
        return f()
    except Exception:
        return None


def run(scale=1.0):
    global _gc_before, _gc_after
    setup(scale)
    was_enabled = gc.isenabled()
    old_threshold = scaled_threshold(scale)
    gc.enable()
    _gc_before = ([s["collections"] for s in gc.get_stats()], _shared_stats())
    try:
        index, order = _heap
        nrec = len(order)
        h = Handler(index)
        cache = {}
        ring = []
        total = 0
        n = max(1, int(ROUNDS * scale))
        for i in range(n):
            key = "rec%07d" % ((i * 7919) % nrec)
            r = h.lookup(key)
            page = h.render(r, i)
            total += page["w"] + page["n"]
            # a request object in a reference cycle (as frameworks make
            # them): garbage that only the collector reclaims
            req = Request(h, key, page)
            total += req.size()
            # survivors: a rolling cache, so objects reach generation 2
            ck = i % (CACHE * 2)
            cache[ck] = (page, [key, i])
            ring.append(ck)
            if len(ring) > CACHE:
                cache.pop(ring.pop(0), None)
            if i % 1000 == 0:
                total += sum(v[0]["w"] for v in list(cache.values())[:50])
        total += h.hits
        return total
    finally:
        _gc_after = ([s["collections"] for s in gc.get_stats()], _shared_stats())
        gc.set_threshold(*old_threshold)
        if not was_enabled:
            gc.disable()


def info():
    """Freeze variant, frozen objects, and (cowpy) shared collections and
    objects they freed during the timed run()."""
    d = {"freeze": _freeze, "frozen": gc.get_freeze_count()}
    sb, sa = (_gc_before or (None, None))[1], (_gc_after or (None, None))[1]
    if isinstance(sa, dict) and isinstance(sb, dict):
        d["shared_collections_in_run"] = sa["collections"] - sb["collections"]
        d["shared_collected_in_run"] = sa["collected"] - sb["collected"]
    return d
