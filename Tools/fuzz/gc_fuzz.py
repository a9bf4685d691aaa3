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

The model
---------
A case keeps a graph of *nodes* and, outside the graph, a model of it.
Node kinds: "plain" (instance with a __dict__), "slots" (__slots__),
"list", "dict", "del" and "slotsdel" (with __del__, which counts its runs),
"res" (__del__ resurrects the object once into a global list), "mut"
(__del__ mutates the graph: drops edges of, adds a new node to, replaces
the payload of, or hangs junk cycles on the nodes it points to) and
"legacy" (a legacy tp_del finalizer; Python classes cannot have one, so
this kind exists only when _testcapi.with_tp_del is importable).  Lists and
dicts cannot be weakly referenced, so each holds a Tag object that nothing
else refers to and that dies with it.  Every node carries a random payload
(ints, strings, interned strings, bytes, tuples, frozensets) whose checksum
is kept in the model.

The model records, per node id: kind, payload checksum, its strong edges
(slot -> node id) and in-graph weakrefs, a chain of registry weakrefs with
callbacks (one per "incarnation": a resurrection registers a new one),
whether it is frozen, and whether it was made immortal ("pinned").  Edges
are changed in the model first and in the object second, so that
finalizers triggered by the change (which edit both) leave them in step.
Automatic collection is switched off except inside the operations that are
about collection (churn, fork, freeze, collect), so that finalizers never
run between a model edit and the matching object edit.  Finalizers do
only order-independent edits and draw nothing from the random generator:
a side-arena collection finalizes in hash order, which varies from run to
run with the addresses.

Holders: the root list, the list of resurrected objects, gc.garbage (where
legacy finalizers end up) and pinned nodes.  By a walk over the model's
own edges (never through gc):

    LIVE  reachable from a holder: must be alive, of the right type, with
          its payload and edges as modelled, tracked, listed by
          gc.get_objects(), and immortal exactly if pinned;
    MAY   reachable from a frozen live node while the collector may not
          examine frozen objects (stock mode, a stock interpreter): no
          expectation;
    DIE   everything else: after a full collection (repeated until no
          finalizer runs and no side-arena fallback happens) its registry
          weakref must be dead.

Always: a finalizer runs at most once per node, and has run for every dead
node with one; a registry weakref is dead exactly when its callback ran,
and that callback ran at most once; an in-graph weakref callback runs at
most once and only for a dead referent, and a weakref held by a live node
is cleared exactly when its referent died; resurrected objects are not
finalized again when they die for good.

An immortalizing freeze (gc.freeze(immortalize=True), or the "immortal"
fork mode at a process's first os.fork(), or its first after
gc.set_fork_mode("immortal"); later forks only freeze) starts at the frozen objects referenced from
outside the frozen set and never goes through an object that stays
mortal (one whose type has a finalizer: here the kinds with __del__ or
tp_del).  So the model pins every node reachable from a holder by a path
that does not pass through a node with a finalizer; a pinned node (and
what it refers to) is a holder from then on, since immortal objects are
never freed.  Nodes with finalizers stay mortal, and so does what the
holders reach only through them: it dies with them (DIE above).  The
__dict__ of a node that stays mortal must stay mortal too: an immortal
one would keep whatever it holds when the node dies (a bug the fuzzer
found, now fixed).  Immortal objects leave the permanent generation, so
gc.get_freeze_count() does not count them; the model does not use that
count, and expects gc.get_objects() and gc.get_referrers() to list pinned
nodes as any other.

Operations, chosen at random with per-case weights: create nodes, add
edges and cycles, remove edges, drop roots, revive a dropped node through
its weakref, add in-graph weakrefs, replace payloads, gc.collect(0/1/2),
gc.collect(), gc.freeze(), gc.freeze(immortalize=True), gc.unfreeze(),
os.fork() (the child runs steps and checks of its own and reports through
a pipe, exiting with os._exit()), gc.disable()/enable(), collector and
fork mode switches, thresholds, allocation churn (automatic collections),
heap ballast (tens of thousands of lists, flat, nested or in cycles),
injected side-arena failures, release of resurrected objects, clearing
gc.garbage, gc.get_objects()/get_referrers().  Per case the seed also
picks the collector mode (default/arena), the fork mode (freeze, immortal
or off) and thresholds.  On an interpreter without cowpy's gc additions
(stock CPython) the cowpy-only operations are skipped and frozen objects
are treated as never collected, so the script runs there too.

CPython behaviour the model follows: weakrefs to garbage are cleared, and
their callbacks run, before finalizers, so a resurrection leaves cleared
weakrefs on live objects (the resurrector registers new ones for what it
brings back); a weakref that is garbage itself is cleared without its
callback even if its referent lives on (bpo-38006), which shows when its
holder is resurrected; legacy finalizers in garbage go to gc.garbage with
what they reach, and run only when freed by reference counting.
"""

import argparse
import collections
import concurrent.futures
import contextlib
import functools
import gc
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import traceback
import weakref
import zlib

try:
    from _testcapi import with_tp_del
except ImportError:
    with_tp_del = None

HAS_COW = hasattr(gc, "get_cow_mode")
HAS_IMMORTAL = HAS_COW and hasattr(gc, "is_immortal")
try:
    import _testinternalcapi as _testcow
except ImportError:
    _testcow = None
HAS_FAIL_ARENA = hasattr(_testcow, "cow_fail_arena")
HAS_FORK = hasattr(os, "fork")

DEFAULT_STEPS = 150
MAX_DEPTH = 2              # fork children may fork once more
MAX_NODES = 300            # accessible nodes before creation is skipped
GROWN_BASE = 10 ** 12      # ids of nodes created by finalizers
RESULT_TAG = "GCFUZZ-RESULT "

# The case being run; finalizers and callbacks report to it.
MODEL = None


class Finding(Exception):
    """An expectation of the model does not hold."""


# ------------------------------------------------------------ node classes

class Tag:
    """Identity of a list or dict node; only its container refers to it."""
    __slots__ = ("nid", "__weakref__")


class Junk:
    """Garbage outside the model."""


class Plain:
    """Node with an instance __dict__."""


SLOT_NAMES = ("nid", "payload", "e0", "e1", "e2", "g", "w0", "junk",
              "__weakref__")


class Slotted:
    """Node with __slots__."""
    __slots__ = SLOT_NAMES


class WithDel:
    """Node whose __del__ counts its runs."""

    def __del__(self):
        model = MODEL
        if model is not None:
            model.finalized(self)


class SlottedWithDel:
    """Node with __slots__ and a counting __del__."""
    __slots__ = SLOT_NAMES

    def __del__(self):
        model = MODEL
        if model is not None:
            model.finalized(self)


class Resurrector:
    """Node whose __del__ stores it into a global list, once."""

    def __del__(self):
        model = MODEL
        if model is not None:
            model.finalized(self)
            model.resurrect(self)


class Mutator:
    """Node whose __del__ edits the nodes it points to."""

    def __del__(self):
        model = MODEL
        if model is not None:
            model.finalized(self)
            model.mutate_from(self)


if with_tp_del is not None:
    class Legacy:
        """Node with a legacy (tp_del) finalizer."""

        def __tp_del__(self):
            model = MODEL
            if model is not None:
                model.finalized(self)

    Legacy = with_tp_del(Legacy)
else:
    Legacy = None

CLASSES = {
    "plain": Plain, "slots": Slotted, "list": list, "dict": dict,
    "del": WithDel, "slotsdel": SlottedWithDel, "res": Resurrector,
    "mut": Mutator,
}
if Legacy is not None:
    CLASSES["legacy"] = Legacy
KINDS = tuple(CLASSES)
CLASS_SET = frozenset(CLASSES.values())
MORTAL = frozenset({"del", "slotsdel", "res", "mut", "legacy"})
SLOTTED = frozenset({"slots", "slotsdel"})
CONTAINERS = frozenset({"list", "dict"})
KIND_WEIGHTS = {"plain": 4, "slots": 3, "list": 4, "dict": 3, "del": 2,
                "slotsdel": 1, "res": 1, "mut": 2, "legacy": 1}
MUT_ACTS = ("clear", "drop1", "junk", "grow", "payload")
# Attribute names a node may have besides edges ("e*", "g*") and
# weakrefs ("w*").
FIXED_ATTRS = frozenset({"nid", "payload", "junk", "tag"})


def _registry_cb(nid, gen, wr):
    model = MODEL
    if model is not None:
        model.cb[(nid, gen)] += 1


def _graph_cb(wid, wr):
    model = MODEL
    if model is not None:
        model.wcb[wid] += 1
        junk = Junk()          # allocate, and leave a cycle behind
        junk.self = junk


def nid_of(obj):
    """The node id of a node object; Finding if obj is not a node."""
    try:
        tp = type(obj)
        if tp is list:
            tag = obj[0]
        elif tp is dict:
            tag = obj["tag"]
        else:
            return obj.nid
        if type(tag) is not Tag:
            raise TypeError("no tag")
        return tag.nid
    except Exception as exc:
        raise Finding(f"malformed node object of type "
                      f"{type(obj).__name__}: {exc!r}") from None


def is_node(obj):
    return type(obj) in CLASS_SET


def handle_of(obj, kind):
    """What the registry weakref points to: the node, or its tag."""
    if kind == "list":
        return obj[0]
    if kind == "dict":
        return obj["tag"]
    return obj


def get_payload(obj, kind):
    if kind == "list":
        return obj[1]
    if kind == "dict":
        return obj["payload"]
    return obj.payload


def attr_items(obj, kind):
    """(name, value) of a non-list node's attributes or keys."""
    if kind == "dict":
        return list(obj.items())
    if kind in SLOTTED:
        out = []
        for name in SLOT_NAMES[:-1]:
            try:
                out.append((name, getattr(obj, name)))
            except AttributeError:
                pass
        return out
    return list(vars(obj).items())


def strong_children(obj, kind):
    """[(slot, child)] of a node's strong edges, as found in the object."""
    if kind == "list":
        return list(enumerate(obj[2:]))
    return [(k, v) for k, v in attr_items(obj, kind)
            if k[:1] in ("e", "g")]


def checksum(payload):
    text = f"{type(payload).__name__}:{payload!r}"
    return zlib.crc32(text.encode("utf-8", "backslashreplace"))


def slot_key(slot):
    """Sort key of slot names: 'e12' < 'e100', 'e*' < 'g*'."""
    if isinstance(slot, int):
        return ("", slot)
    return (slot[:1], int(slot[1:]) if slot[1:].isdigit() else -1)


class Info:
    """What the model knows about one node, kept outside the graph."""
    __slots__ = ("kind", "crc", "wrs", "frozen", "act")

    def __init__(self, kind, crc, act):
        self.kind = kind
        self.crc = crc
        self.wrs = []
        self.frozen = False
        self.act = act


def signal_name(num):
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


# ------------------------------------------------------------------ a case

class Case:
    """One seeded run: a graph, its model, and the operations on them."""

    def __init__(self, seed, steps, quiet=False, self_test=None):
        self.seed = seed
        self.steps = steps
        self.quiet = quiet
        self.self_test = self_test
        self.rng = random.Random(seed)
        self.path = [0]                 # step numbers, one per fork depth
        self.total_steps = 0
        self.roots = []                 # the root list (objects)
        self.root_nids = []             # its model
        self.info = {}                  # nid -> Info
        self.edges = {}                 # nid -> {slot: nid}
        self.weak = {}                  # nid -> {slot: wid}
        self.winfo = {}                 # wid -> (holder, target, gen)
        self.fin = collections.Counter()    # nid -> finalizer runs
        self.cb = collections.Counter()     # (nid, gen) -> callback runs
        self.wcb = collections.Counter()    # wid -> callback runs
        self.resurrected = []           # objects resurrected by __del__
        self.res_nids = []
        self.res_done = set()
        self.ghosts = set()             # survived a collection as garbage
        # (nid, gen) of weakrefs registered by a finalizer during the
        # collection that is running: if their referent is garbage after
        # all, the collection clears them without their callback
        # (gh-91636, CPython 3.13.12+), else they are ordinary weakrefs
        # once it ends.
        self.fin_born = set()
        self.pinned = set()             # made immortal
        self.pinned_objs = []           # pinned nodes we can reach
        # The "immortal" fork mode walks at a process's first fork only
        # (and again after gc.set_fork_mode("immortal")); later forks
        # only freeze (#18).
        self.fork_walked = False
        self.pinned_acc = set()
        self.pinned_inacc = set()       # pinned lists/dicts we cannot
        self.events = 0                 # finalizer runs, all kinds
        self.next_nid = 0
        self.next_slot = 0
        self.next_wid = 0
        self.errors = []                # exceptions in finalizers
        self.gc_on = True               # gc.enable()d as far as ops go
        self.corrupted = False
        self.config = {}
        self.weights = {}
        self.ballast = None             # heap mass outside the model
        self.live_at_start = None       # during a collection

    # ------------------------------------------------------- bookkeeping

    def label(self):
        return "/".join(map(str, self.path))

    def trace(self, text):
        if not self.quiet:
            os.write(1, f"#step {self.label()} {text}\n".encode())

    def stockish(self):
        """True if a full collection may leave frozen objects alone."""
        return not HAS_COW or gc.get_cow_mode() == "stock"

    def reach(self, starts):
        seen = set()
        stack = list(starts)
        while stack:
            nid = stack.pop()
            if nid in seen:
                continue
            seen.add(nid)
            stack.extend(self.edges[nid].values())
        return seen

    def register(self, nid, obj, kind):
        info = self.info[nid]
        cb = functools.partial(_registry_cb, nid, len(info.wrs))
        info.wrs.append(weakref.ref(handle_of(obj, kind), cb))

    def make_payload(self, depth=0):
        rng = self.rng
        r = rng.random()
        if r < 0.12:
            return rng.randrange(-300, 300)
        if r < 0.2:
            return rng.getrandbits(90)
        if r < 0.35:
            n = rng.randint(0, 24)
            return "".join(rng.choice("abcxyz\u00e9\u4e2d") for _ in range(n))
        if r < 0.45:
            return sys.intern("gcfuzz_" + str(rng.randrange(40)))
        if r < 0.52:
            return rng.randbytes(rng.randint(0, 20))
        if r < 0.57:
            return rng.random()
        if r < 0.63:
            return frozenset(rng.sample(range(64), rng.randint(0, 5)))
        if r < 0.68:
            return [rng.randrange(9) for _ in range(rng.randint(0, 4))]
        if r < 0.72 or depth >= 2:
            return None
        return tuple(self.make_payload(depth + 1)
                     for _ in range(rng.randint(0, 4)))

    def make_node(self, kind, nid=None, payload=None):
        """Create a node (not yet referenced by anything modelled)."""
        if nid is None:
            nid = self.next_nid
            self.next_nid += 1
            payload = self.make_payload()
        act = self.rng.choice(MUT_ACTS) if kind == "mut" and \
            nid < GROWN_BASE else None
        self.info[nid] = Info(kind, checksum(payload), act)
        self.edges[nid] = {}
        self.weak[nid] = {}
        if kind in CONTAINERS:
            tag = Tag()
            tag.nid = nid
            obj = [tag, payload] if kind == "list" else \
                {"tag": tag, "payload": payload}
        else:
            obj = CLASSES[kind]()
            obj.nid = nid
            obj.payload = payload
        self.register(nid, obj, kind)
        return obj

    def new_slot(self):
        self.next_slot += 1
        return self.next_slot

    # ------------------------------------------------ edits (model first)

    def add_edge(self, src, snid, tgt, tnid, slot=None):
        kind = self.info[snid].kind
        medges = self.edges[snid]
        if kind == "list":
            medges[self.new_slot()] = tnid
            src.append(tgt)
        elif kind in SLOTTED:
            medges[slot] = tnid
            setattr(src, slot, tgt)
        else:
            slot = f"e{self.new_slot()}"
            medges[slot] = tnid
            if kind == "dict":
                src[slot] = tgt
            else:
                setattr(src, slot, tgt)

    def remove_edge(self, obj, nid, slot):
        kind = self.info[nid].kind
        medges = self.edges[nid]
        if kind == "list":
            idx = list(medges).index(slot)
            del medges[slot]
            del obj[2 + idx]
        else:
            del medges[slot]
            self.del_attr(obj, kind, slot)

    @staticmethod
    def del_attr(obj, kind, name):
        if kind == "dict":
            obj.pop(name, None)
        else:
            try:
                delattr(obj, name)      # vars() would make a __dict__
            except AttributeError:
                pass

    @staticmethod
    def set_attr(obj, kind, name, value):
        if kind == "dict":
            obj[name] = value
        else:
            setattr(obj, name, value)

    def clear_edges(self, obj, nid, grown_too=False):
        """Drop a node's strong edges (those made by finalizers too if
        grown_too): model, then object."""
        kind = self.info[nid].kind
        medges = self.edges[nid]
        if kind == "list":
            medges.clear()
            del obj[2:]
            return
        names = [s for s in medges if grown_too or s[:1] == "e"]
        for s in names:
            del medges[s]
        for s in names:
            self.del_attr(obj, kind, s)

    def set_payload(self, obj, nid, payload):
        kind = self.info[nid].kind
        self.info[nid].crc = checksum(payload)
        if kind == "list":
            obj[1] = payload
        else:
            self.set_attr(obj, kind, "payload", payload)

    # --------------------------------------- called from finalizers etc.

    def finalized(self, obj):
        nid = obj.nid
        self.fin[nid] += 1
        self.events += 1

    def resurrect(self, obj):
        nid = obj.nid
        if nid in self.res_done:
            return
        self.res_done.add(nid)
        self.resurrected.append(obj)
        self.res_nids.append(nid)
        # What it reaches survives too, possibly with cleared weakrefs:
        # register a new incarnation for those.
        seen = set()
        stack = [obj]
        while stack:
            o = stack.pop()
            n = nid_of(o)
            if n in seen:
                continue
            seen.add(n)
            self.ghosts.add(n)
            info = self.info[n]
            if info.wrs[-1]() is None:
                self.register(n, o, info.kind)
                self.fin_born.add((n, len(info.wrs) - 1))
            stack.extend(c for _, c in self.edge_objs(o, n))

    def edge_objs(self, obj, nid):
        """[(slot, child)] of a node's modelled edges, read from the object
        without vars(): a finalizer that gives a collected object a new
        __dict__ brings back what that dict refers to (CPython sees the
        dict as a new, outside reference)."""
        kind = self.info[nid].kind
        slots = list(self.edges[nid])
        if kind == "list":
            return [(s, obj[2 + i]) for i, s in enumerate(slots)]
        if kind == "dict":
            return [(s, obj[s]) for s in slots]
        return [(s, getattr(obj, s)) for s in slots]

    def gc_phase(self, phase, info):
        """gc.callbacks: note what is live when a collection starts."""
        if phase == "start":
            garbage = [nid_of(o) for o in gc.garbage if is_node(o)]
            self.live_at_start = self.reach(
                self.root_nids + self.res_nids + garbage
                + sorted(self.pinned))
        else:
            self.live_at_start = None
            self.fin_born = {(n, g) for n, g in self.fin_born
                             if self.info[n].wrs[g]() is None}

    def mutate_from(self, obj):
        """A Mutator's __del__: edit each node it points to.  Every edit
        gives the same result in any order (finalizer order varies)."""
        mnid = obj.nid
        act = self.info[mnid].act
        children = sorted(self.edge_objs(obj, mnid),
                          key=lambda sc: slot_key(sc[0]))
        live = self.live_at_start
        for _, child in children:
            tnid = nid_of(child)
            kind = self.info[tnid].kind
            if act in ("junk", "grow") and live is not None \
                    and tnid not in live:
                # Inside a collection, a new attribute can give a garbage
                # object a new __dict__, which brings its referents back.
                # Order-independent: what was live when it started.
                continue
            if act == "clear":
                self.clear_edges(child, tnid)
            elif act == "drop1":
                own = sorted((s for s in self.edges[tnid]
                              if kind == "list" or s[:1] == "e"),
                             key=slot_key)
                if own:
                    self.remove_edge(child, tnid, own[0])
            elif act == "junk":
                if kind != "list":
                    junk = Junk()
                    junk.cycle = [junk, (tnid,)]
                    self.set_attr(child, kind, "junk", junk)
            elif act == "payload":
                self.set_payload(child, tnid, ("mutated", mnid))
            elif act == "grow" and kind != "list":
                gnid = GROWN_BASE + mnid * 10 ** 6 + tnid
                if gnid in self.info:
                    continue
                node = self.make_node("plain", gnid, ("grown", mnid, tnid))
                slot = "g" if kind in SLOTTED else f"g{gnid}"
                cur = self.edges[tnid].get(slot)
                if cur is None or cur < gnid:
                    self.edges[tnid][slot] = gnid
                    self.set_attr(child, kind, slot, node)

    def unraisable(self, unraisable):
        tb = "".join(traceback.format_tb(unraisable.exc_traceback))
        self.errors.append(
            f"{unraisable.exc_type.__name__}: {unraisable.exc_value} "
            f"({unraisable.err_msg}; object of type "
            f"{type(unraisable.object).__name__})\n{tb[-1500:]}")

    # ---------------------------------------------------- the graph as is

    def actual_map(self):
        """nid -> object for every node reachable in the real graph from
        the holders we can reach: roots, resurrected, gc.garbage and the
        pinned nodes we hold."""
        amap = {}
        stack = list(self.roots)
        stack.extend(self.resurrected)
        stack.extend(self.pinned_objs)
        for obj in gc.garbage:
            if not is_node(obj):
                raise Finding(f"gc.garbage holds a {type(obj).__name__}"
                              f" that is not a node")
            stack.append(obj)
        while stack:
            obj = stack.pop()
            nid = nid_of(obj)
            old = amap.get(nid)
            if old is not None:
                if old is not obj:
                    raise Finding(f"two objects carry node id {nid}")
                continue
            info = self.info.get(nid)
            if info is None:
                raise Finding(f"object with unknown node id {nid}")
            amap[nid] = obj
            stack.extend(c for _, c in strong_children(obj, info.kind))
        return amap

    def garbage_nids(self):
        return sorted(nid_of(o) for o in gc.garbage)

    # ------------------------------------------------------------ checks

    def check(self, full=False):
        """Check every expectation; with full=True (right after full
        collections) also that unreachable nodes are gone."""
        if self.errors:
            raise Finding("exception in a finalizer or weakref callback: "
                          + self.errors[0])
        amap = self.actual_map()
        self._self_test(amap)
        if [nid_of(o) for o in self.roots] != self.root_nids:
            raise Finding("the root list differs from the model: "
                          f"{[nid_of(o) for o in self.roots][:20]} != "
                          f"{self.root_nids[:20]}")
        if [nid_of(o) for o in self.resurrected] != self.res_nids:
            raise Finding("the resurrected list differs from the model")
        garbage = self.garbage_nids()
        for nid in garbage:
            if self.info[nid].kind != "legacy":
                raise Finding(f"node {self.describe(nid)} is in gc.garbage "
                              f"but has no legacy finalizer")
        for nid in sorted(amap):
            self.check_node(nid, amap[nid])
        starts = self.root_nids + self.res_nids + garbage
        accessible = self.reach(starts + sorted(self.pinned_acc))
        if set(amap) != accessible:
            extra = sorted(set(amap) - accessible)[:5]
            missing = sorted(accessible - set(amap))[:5]
            raise Finding(f"reachable nodes differ from the model: extra "
                          f"{extra}, missing "
                          f"{[self.describe(n) for n in missing]}")
        live = self.reach(starts + sorted(self.pinned))
        for nid in sorted(live - accessible):
            info = self.info[nid]
            obj = info.wrs[-1]()
            if obj is None:
                raise Finding(f"node {self.describe(nid)}, reachable from "
                              f"an immortal node, is dead")
            if info.kind not in CONTAINERS:
                self.check_node(nid, obj)
            del obj
        self.check_counters()
        self.check_weakrefs(amap)
        if full:
            self.check_dead(live)

    def _self_test(self, amap):
        if (self.self_test != "fail" or self.corrupted
                or len(self.path) > 1 or self.path[0] < 3):
            return
        self.corrupted = True
        if amap:
            self.info[min(amap)].crc ^= 1       # a wrong expectation
        else:
            self.root_nids.append(-1)

    def check_node(self, nid, obj):
        info = self.info[nid]
        kind = info.kind
        what = self.describe(nid)
        if type(obj) is not CLASSES[kind]:
            raise Finding(f"node {what} has become a "
                          f"{type(obj).__name__}")
        if nid_of(obj) != nid:
            raise Finding(f"node {what} carries id {nid_of(obj)}")
        payload = get_payload(obj, kind)
        if checksum(payload) != info.crc:
            raise Finding(f"node {what}: payload changed, now "
                          f"{payload!r:.200}")
        actual = strong_children(obj, kind)
        if kind == "list":
            got = [nid_of(c) for _, c in actual]
            want = list(self.edges[nid].values())
        else:
            got = {s: nid_of(c) for s, c in actual}
            want = self.edges[nid]
        if got != want:
            raise Finding(f"node {what}: edges {got} != modelled {want}")
        for _, child in actual:
            cnid = nid_of(child)
            if type(child) is not CLASSES[self.info[cnid].kind]:
                raise Finding(f"edge of {what} points to a "
                              f"{type(child).__name__} with id {cnid}")
        if kind != "list":
            weak = sorted(k for k, _ in attr_items(obj, kind)
                          if k[:1] == "w")
            if weak != sorted(self.weak[nid]):
                raise Finding(f"node {what}: weakref slots {weak} != "
                              f"modelled {sorted(self.weak[nid])}")
            odd = [k for k, _ in attr_items(obj, kind)
                   if k[:1] not in ("e", "g", "w") and k not in FIXED_ATTRS]
            if odd:
                raise Finding(f"node {what}: unexpected attributes {odd}")
        handle = handle_of(obj, kind)
        if info.wrs[-1]() is not handle:
            raise Finding(f"node {what} is alive but its weakref is "
                          f"{'dead' if info.wrs[-1]() is None else 'wrong'}")
        if not gc.is_tracked(obj) or not gc.is_tracked(handle):
            raise Finding(f"node {what} is not tracked by the collector")
        if HAS_IMMORTAL:
            want_imm = nid in self.pinned
            for o in (obj, handle):
                if gc.is_immortal(o) != want_imm:
                    raise Finding(
                        f"node {what}{' tag' if o is not obj else ''}: "
                        f"gc.is_immortal() is {not want_imm}, expected "
                        f"{want_imm}")

    def check_counters(self):
        for nid, info in self.info.items():
            what = None
            last = len(info.wrs) - 1
            for gen, wr in enumerate(info.wrs):
                alive = wr() is not None
                runs = self.cb[(nid, gen)]
                if runs > 1:
                    what = f"weakref callback ran {runs} times"
                elif alive and runs:
                    what = "weakref callback ran but the node is alive"
                elif (not alive and not runs
                      and (nid, gen) not in self.fin_born):
                    what = "weakref cleared without its callback"
                elif alive and gen < last:
                    what = "an old weakref is alive again"
                if what:
                    raise Finding(f"node {self.describe(nid)} (weakref "
                                  f"{gen}): {what}")
            runs = self.fin[nid]
            alive = info.wrs[-1]() is not None
            if runs > 1:
                what = f"finalizer ran {runs} times"
            elif info.kind not in MORTAL and runs:
                what = "finalizer count for a node without a finalizer"
            elif info.kind in MORTAL and not alive and not runs:
                what = "dead, but its finalizer never ran"
            elif alive and runs and nid not in self.ghosts:
                what = "finalizer ran but the node is still alive"
            if what:
                raise Finding(f"node {self.describe(nid)}: {what}")

    def check_weakrefs(self, amap):
        for wid, (hnid, tnid, gen) in self.winfo.items():
            runs = self.wcb[wid]
            if runs > 1:
                raise Finding(f"weakref {wid} to {self.describe(tnid)}: "
                              f"callback ran {runs} times")
            if runs and self.info[tnid].wrs[gen]() is not None:
                raise Finding(f"weakref {wid} to {self.describe(tnid)}: "
                              f"callback ran but the referent is alive")
        for hnid in sorted(amap):
            obj = amap[hnid]
            kind = self.info[hnid].kind
            for slot, wid in self.weak[hnid].items():
                wr = (obj.get(slot) if kind == "dict"
                      else getattr(obj, slot, None))
                _, tnid, gen = self.winfo[wid]
                what = f"weakref {wid} held by {self.describe(hnid)}"
                if type(wr) is not weakref.ref:
                    raise Finding(f"{what} is a {type(wr).__name__}")
                ref = wr()
                reg_alive = self.info[tnid].wrs[gen]() is not None
                if ref is None and reg_alive and hnid in self.ghosts:
                    # A weakref that was garbage itself is cleared by the
                    # collection, whatever its referent (bpo-38006); its
                    # holder was resurrected.
                    pass
                elif (ref is not None) != reg_alive:
                    raise Finding(f"{what}: referent {self.describe(tnid)}"
                                  f" {'alive' if ref is not None else 'dead'}"
                                  f" by it, but the registry says otherwise")
                if ref is not None and nid_of(ref) != tnid:
                    raise Finding(f"{what} points to node {nid_of(ref)}")
                if (ref is None and not self.wcb[wid]
                        and hnid not in self.ghosts):
                    raise Finding(f"{what}: cleared without its callback")
                del ref

    def check_dead(self, live):
        held = []
        if self.stockish():
            held = sorted(n for n, i in self.info.items()
                          if i.frozen and i.wrs[-1]() is not None)
        may = self.reach(held)
        for nid, info in self.info.items():
            if nid in live or nid in may:
                continue
            handle = info.wrs[-1]()
            if handle is not None:
                cyc = nid in self.reach(self.edges[nid].values())
                imm = HAS_IMMORTAL and gc.is_immortal(handle)
                mode = gc.get_cow_mode() if HAS_COW else "stock"
                referrers = sorted({type(r).__name__
                                    for r in gc.get_referrers(handle)})
                del handle
                raise Finding(
                    f"node {self.describe(nid)} is unreachable "
                    f"({'in' if cyc else 'not in'} a cycle) but survived a "
                    f"full collection in {mode} mode (immortal={imm}, "
                    f"referrers: {referrers})")

    def describe(self, nid):
        info = self.info[nid]
        flags = [info.kind]
        if info.act:
            flags.append(info.act)
        if info.frozen:
            flags.append("frozen")
        if nid in self.pinned:
            flags.append("pinned")
        if nid in self.ghosts:
            flags.append("resurrected")
        return f"{nid}({','.join(flags)})"

    # -------------------------------------------------------- operations

    @contextlib.contextmanager
    def live_gc(self):
        """Automatic collection as the case has it (normally off)."""
        if self.gc_on:
            gc.enable()
        try:
            yield
        finally:
            gc.disable()

    def pick(self, amap, kinds=None):
        nids = sorted(n for n in amap
                      if kinds is None or self.info[n].kind in kinds)
        return self.rng.choice(nids) if nids else None

    def op_new(self):
        amap = self.actual_map()
        if len(amap) > MAX_NODES:
            return "skipped"
        kinds = [k for k in KINDS]
        weights = [KIND_WEIGHTS[k] for k in kinds]
        made = []
        for _ in range(self.rng.randint(1, 4)):
            kind = self.rng.choices(kinds, weights)[0]
            obj = self.make_node(kind)
            nid = nid_of(obj)
            parent = self.pick(amap) if self.rng.random() < 0.4 else None
            if parent is None:
                self.root_nids.append(nid)
                self.roots.append(obj)
            else:
                self.add_edge(amap[parent], parent, obj, nid,
                              self.rng.choice(("e0", "e1", "e2")))
            made.append(kind)
            del obj
        return ",".join(made)

    def op_cluster(self):
        """A few new nodes with cycles among them, hung from one root or
        node: dropping that one edge makes them cyclic garbage."""
        amap = self.actual_map()
        if len(amap) > MAX_NODES:
            return "skipped"
        kinds = list(KINDS)
        weights = [KIND_WEIGHTS[k] for k in kinds]
        n = self.rng.randint(2, 8)
        objs = [self.make_node(self.rng.choices(kinds, weights)[0])
                for _ in range(n)]
        nids = [nid_of(o) for o in objs]
        slots = ("e0", "e1", "e2")
        for i in range(n):                      # a ring ...
            j = (i + 1) % n
            self.add_edge(objs[i], nids[i], objs[j], nids[j], slots[0])
        for _ in range(self.rng.randint(0, n)):  # ... and chords
            i, j = self.rng.randrange(n), self.rng.randrange(n)
            self.add_edge(objs[i], nids[i], objs[j], nids[j],
                          self.rng.choice(slots[1:]))
        parent = self.pick(amap) if self.rng.random() < 0.5 else None
        if parent is None:
            self.root_nids.append(nids[0])
            self.roots.append(objs[0])
        else:
            self.add_edge(amap[parent], parent, objs[0], nids[0],
                          self.rng.choice(slots))
        return f"{nids[0]}..{nids[-1]} under {parent}"

    def revivable(self):
        """Instance nodes outside the graph whose weakref still works."""
        skip = set(self.actual_map())
        return sorted(n for n, i in self.info.items()
                      if n not in skip and i.kind not in CONTAINERS
                      and i.wrs[-1]() is not None)

    def op_edge(self):
        amap = self.actual_map()
        src = self.pick(amap)
        if src is None:
            return "none"
        tgt_obj = None
        if self.rng.random() < 0.15:
            cands = self.revivable()
            if cands:
                tgt = self.rng.choice(cands)
                tgt_obj = self.info[tgt].wrs[-1]()
        if tgt_obj is None:
            tgt = self.pick(amap)
            tgt_obj = amap[tgt]
        obj = amap[src]
        del amap
        self.add_edge(obj, src, tgt_obj, tgt,
                      self.rng.choice(("e0", "e1", "e2")))
        return f"{src}->{tgt}"

    def op_cycle(self):
        amap = self.actual_map()
        nids = sorted(amap)
        if not nids:
            return "none"
        ring = self.rng.sample(nids, min(len(nids), self.rng.randint(1, 4)))
        objs = [amap[n] for n in ring]
        del amap
        for i, src in enumerate(ring):
            j = (i + 1) % len(ring)
            self.add_edge(objs[i], src, objs[j], ring[j],
                          self.rng.choice(("e0", "e1", "e2")))
        return "->".join(map(str, ring))

    def op_unedge(self):
        amap = self.actual_map()
        src = self.pick(amap)
        if src is None or not self.edges[src]:
            return "none"
        slot = self.rng.choice(sorted(self.edges[src], key=slot_key))
        obj = amap[src]
        del amap
        self.remove_edge(obj, src, slot)
        return f"{src}.{slot}"

    def op_drop(self):
        if not self.roots:
            return "none"
        n = min(len(self.roots), self.rng.randint(1, 3))
        idxs = sorted(self.rng.sample(range(len(self.roots)), n),
                      reverse=True)
        dropped = []
        for i in idxs:
            dropped.append(self.root_nids[i])
            del self.root_nids[i]
            del self.roots[i]
        return ",".join(map(str, dropped))

    def op_revive(self):
        cands = self.revivable()
        if not cands:
            return "none"
        nid = self.rng.choice(cands)
        obj = self.info[nid].wrs[-1]()
        self.root_nids.append(nid)
        self.roots.append(obj)
        return str(nid)

    def op_weak(self):
        amap = self.actual_map()
        holder = self.pick(amap, [k for k in KINDS if k != "list"])
        tgt = self.pick(amap)
        if holder is None:
            return "none"
        kind = self.info[holder].kind
        hobj = amap[holder]
        handle = handle_of(amap[tgt], self.info[tgt].kind)
        del amap
        self.next_wid += 1
        wid = self.next_wid
        slot = "w0" if kind in SLOTTED else f"w{wid}"
        gen = len(self.info[tgt].wrs) - 1
        self.winfo[wid] = (holder, tgt, gen)
        self.weak[holder][slot] = wid
        wr = weakref.ref(handle, functools.partial(_graph_cb, wid))
        self.set_attr(hobj, kind, slot, wr)
        return f"{holder}~>{tgt}"

    def op_payload(self):
        amap = self.actual_map()
        nid = self.pick(amap)
        if nid is None:
            return "none"
        obj = amap[nid]
        del amap
        self.set_payload(obj, nid, self.make_payload())
        return str(nid)

    def op_collect_young(self):
        gen = self.rng.choice((0, 1))
        gc.collect(gen)
        return str(gen)

    def op_collect_full(self):
        gen = self.rng.choice((None, 2))
        self.full_collect(gen)
        return "collect()" if gen is None else "collect(2)"

    def full_collect(self, gen=None):
        """Full collections until nothing more happens, then check."""
        for _ in range(100):
            events = self.events
            fallbacks = self.fallbacks()
            if gen is None:
                gc.collect()
            else:
                gc.collect(gen)
            if self.events == events and self.fallbacks() == fallbacks:
                break
        else:
            raise Finding("full collections keep running finalizers")
        self.check(full=True)

    @staticmethod
    def fallbacks():
        if HAS_COW:
            return gc.get_shared_stats()["fallbacks"]
        return 0

    def op_freeze(self):
        with self.live_gc():
            gc.freeze()
        self.note_freeze(immortal=False)

    def op_freeze_imm(self):
        with self.live_gc():
            gc.freeze(immortalize=True)
        self.note_freeze(immortal=True)

    def reach_immortal(self, starts):
        """What an immortalizing freeze makes immortal: the walk starts at
        the holders and does not go through nodes with a finalizer, which
        stay mortal, and so does what only they reach."""
        seen = set()
        stack = list(starts)
        while stack:
            nid = stack.pop()
            if nid in seen or self.info[nid].kind in MORTAL:
                continue
            seen.add(nid)
            stack.extend(self.edges[nid].values())
        return seen

    def note_freeze(self, immortal):
        new = []
        if immortal:
            pinnable = self.reach_immortal(
                self.root_nids + self.res_nids + self.garbage_nids()
                + sorted(self.pinned))
        for nid, info in self.info.items():
            obj = info.wrs[-1]()
            if obj is None:
                continue
            info.frozen = True
            if not immortal:
                continue
            if nid in pinnable:
                if nid not in self.pinned:
                    new.append(nid)
            elif (info.kind in MORTAL and info.kind not in SLOTTED
                  and gc.is_immortal(obj.__dict__)):
                # Was a bug (fixed): the __dict__ of an object that stays
                # mortal was made immortal, and what it held when the
                # object died was never freed.
                raise Finding(
                    f"immortalizing freeze made the __dict__ of mortal "
                    f"node {self.describe(nid)} immortal: what it holds "
                    f"when the node dies is never freed")
        obj = None
        if not new:
            return
        self.pinned.update(new)
        amap = self.actual_map()
        for nid in new:
            obj = amap.get(nid)
            if obj is None and self.info[nid].kind not in CONTAINERS:
                obj = self.info[nid].wrs[-1]()
            if obj is None:
                self.pinned_inacc.add(nid)
            else:
                self.pinned_objs.append(obj)
                self.pinned_acc.add(nid)

    def op_unfreeze(self):
        gc.unfreeze()
        for info in self.info.values():
            info.frozen = False

    def op_fork(self):
        child_seed = self.rng.getrandbits(62)
        child_steps = self.rng.randint(2, 12)
        mode = gc.get_fork_mode() if HAS_COW else "off"
        sys.stdout.flush()
        sys.stderr.flush()
        walks = mode == "immortal" and not self.fork_walked
        if walks:
            self.fork_walked = True
        rfd, wfd = os.pipe()
        with self.live_gc():
            pid = os.fork()
        if pid == 0:
            os.close(rfd)
            self.run_child(wfd, mode, walks, child_seed, child_steps)
        os.close(wfd)
        if mode != "off":
            self.note_freeze(immortal=walks)
        chunks = []
        while chunk := os.read(rfd, 65536):
            chunks.append(chunk)
        os.close(rfd)
        _, status = os.waitpid(pid, 0)
        try:
            report = json.loads(b"".join(chunks) or b"null")
        except ValueError:
            report = None
        if report:
            self.total_steps += report["steps"]
        if os.WIFSIGNALED(status):
            raise Finding(f"fork child {self.label()} killed by "
                          f"{signal_name(os.WTERMSIG(status))}")
        if report and report["finding"]:
            raise Finding(f"in fork child {report['finding']}")
        code = os.WEXITSTATUS(status)
        if report is None or code != 0:
            raise Finding(f"fork child {self.label()} exited with status "
                          f"{code} and {'a' if report else 'no'} report")
        return f"{mode}, {report['steps']} child steps"

    def run_child(self, wfd, mode, walks, seed, steps):
        code = 0
        report = {"steps": 0, "finding": None}
        start = self.total_steps
        self.fork_walked = False        # a new process walks once
        try:
            if mode != "off":
                self.note_freeze(immortal=walks)
            self.rng = random.Random(seed)
            self.path.append(0)
            self.check()
            for _ in range(steps):
                self.step()
            self.final()
        except Finding as exc:
            report["finding"] = f"{self.label()}: {exc}"
            code = 1
        except BaseException:
            report["finding"] = (f"{self.label()}: the fuzzer raised\n"
                                 + traceback.format_exc())
            code = 2
        report["steps"] = self.total_steps - start
        try:
            data = json.dumps(report).encode()
            while data:
                data = data[os.write(wfd, data):]
        finally:
            os._exit(code)

    def op_gc_toggle(self):
        self.gc_on = not self.gc_on
        return "enabled" if self.gc_on else "disabled"

    def op_cow_mode(self):
        mode = self.rng.choice(("default", "default", "arena", "arena",
                                "stock"))
        gc.set_cow_mode(mode)
        return mode

    def op_fork_mode(self):
        mode = self.rng.choice(("off", "freeze", "immortal"))
        gc.set_fork_mode(mode)
        if mode == "immortal":
            self.fork_walked = False    # armed again
        return mode

    def op_threshold(self):
        if HAS_COW and self.rng.random() < 0.4:
            n = self.rng.choice((0, 1, 1, 2, 5))
            gc.set_shared_threshold(n)
            return f"shared {n}"
        t = (self.rng.choice((1, 10, 100, 700, 2000)),
             self.rng.choice((1, 2, 10)), self.rng.choice((1, 2, 10)))
        gc.set_threshold(*t)
        return str(t)

    def op_churn(self):
        n = self.rng.choice((200, 1000, 5000))
        with self.live_gc():
            keep = []
            for i in range(n):
                a = Junk()
                a.b = [a, i]
                if i % 5 == 0:
                    keep.append(a)
            del a, keep
        return str(n)

    def op_ballast(self):
        """Grow or shrink the heap a lot (outside the model), so that
        collections see sets of very different sizes from one to the
        next (side-arena tables sized from a stale hint)."""
        if self.ballast is not None:
            self.ballast = None
            return "released"
        n = self.rng.choice((1000, 20000, 80000))
        shape = self.rng.choice(("flat", "deep", "cycles"))
        if shape == "flat":
            self.ballast = [[i] for i in range(n)]
        elif shape == "deep":
            chain = None
            for _ in range(n):
                chain = [chain]
            self.ballast = chain
        else:
            pairs = []
            for i in range(n // 2):
                a = [i]
                a.append([a])
                pairs.append(a)
            self.ballast = pairs
        return f"{shape} {n}"

    def op_fail_arena(self):
        n = self.rng.randint(1, 2)
        _testcow.cow_fail_arena(n)
        return str(n)

    def op_release(self):
        if not self.res_nids:
            return "none"
        order = sorted(range(len(self.res_nids)),
                       key=lambda i: self.res_nids[i])
        chosen = sorted(self.rng.sample(order, self.rng.randint(
            1, len(order))), reverse=True)
        released = []
        for i in chosen:
            released.append(self.res_nids[i])
            del self.res_nids[i]
            del self.resurrected[i]
        return ",".join(map(str, sorted(released)))

    def op_clear_garbage(self):
        items = list(gc.garbage)
        if not items:
            return "none"
        items.sort(key=nid_of)
        for obj in items:
            self.clear_edges(obj, nid_of(obj), grown_too=True)
        gc.garbage.clear()
        n = len(items)
        del items, obj
        return str(n)

    def op_introspect(self):
        if HAS_COW and gc.get_cow_mode() == "stock":
            return "skipped"
        amap = self.actual_map()
        objs = gc.get_objects()
        ids = set(map(id, objs))
        del objs
        for nid in sorted(amap):
            if not HAS_COW and self.info[nid].frozen:
                continue
            if id(amap[nid]) not in ids:
                raise Finding(f"gc.get_objects() misses live node "
                              f"{self.describe(nid)}")
        nid = self.pick(amap)
        if nid is None:
            return "none"
        refs = set(map(id, gc.get_referrers(amap[nid])))
        for parent in sorted(amap):
            pobj = amap[parent]
            pkind = self.info[parent].kind
            # An instance refers through its __dict__ once that is a
            # dict of its own.
            owner = (id(vars(pobj)) if pkind not in SLOTTED | CONTAINERS
                     else None)
            if nid in self.edges[parent].values() and \
                    (HAS_COW or not self.info[parent].frozen) and \
                    id(pobj) not in refs and owner not in refs:
                raise Finding(f"gc.get_referrers({self.describe(nid)}) "
                              f"misses {self.describe(parent)}")
        return str(nid)

    OPS = {
        # name: (weight, needs)
        "new": (5, None), "cluster": (8, None), "edge": (6, None),
        "cycle": (4, None), "unedge": (6, None), "drop": (8, None),
        "revive": (2, None),
        "weak": (3, None), "payload": (1.5, None),
        "collect_young": (4, None), "collect_full": (5, None),
        "freeze": (3, None), "freeze_imm": (1.5, "immortal"),
        "unfreeze": (2, None), "fork": (2, "fork"),
        "gc_toggle": (2, None), "cow_mode": (1.5, "cow"),
        "fork_mode": (1, "cow"), "threshold": (1, None),
        "churn": (3, None), "ballast": (1, None),
        "fail_arena": (0.5, "fail_arena"),
        "release": (2, None), "clear_garbage": (1, None),
        "introspect": (1, None),
    }

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


# ----------------------------------------------------- command lines

def script_path():
    path = os.path.abspath(__file__)
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
    global MODEL
    self_test = ("fail" if args.self_test_fail
                 else "crash" if args.self_test_crash else None)
    case = Case(args.seed, args.steps, quiet=args.quiet, self_test=self_test)
    MODEL = case
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
    MODEL = None
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
    cmd = [python, os.path.abspath(__file__), "--one-case", "--seed",
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


if __name__ == "__main__":
    sys.exit(main())
