"""The model of a case: its graph (the holders: the root list, the
resurrected objects, gc.garbage, the pinned nodes) and, outside the graph,
its record of every node (Info), edge and weakref; the edits that keep
both in step (the model first, then the object), including those of
finalizers and weakref callbacks; what an (immortalizing) freeze makes of
the record.  gcfuzz.checks holds the expectations, gcfuzz.ops the steps.
"""

import collections
import functools
import gc
import os
import random
import sys
import traceback
import weakref

from .nodes import (CLASSES, CONTAINERS, GROWN_BASE, HAS_COW, MORTAL,
                    MUT_ACTS, SLOTTED, Finding, Junk, Tag, _registry_cb,
                    checksum, handle_of, is_node, nid_of, slot_key,
                    strong_children)


class Info:
    """What the model knows about one node, kept outside the graph."""
    __slots__ = ("kind", "crc", "wrs", "frozen", "act")

    def __init__(self, kind, crc, act):
        self.kind = kind
        self.crc = crc
        self.wrs = []
        self.frozen = False
        self.act = act


class Model:
    """A case's graph and the model of it (the state of a Case)."""

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

    # ---------------------------------------------------- freezes as modelled

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
