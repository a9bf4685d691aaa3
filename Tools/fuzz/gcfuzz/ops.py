"""The operations: one op_NAME method per kind of random step, and OPS,
their weights and what each needs of the interpreter.  A mixin of Case,
on top of gcfuzz.model.Model's state and gcfuzz.checks.Checks.
"""

import contextlib
import functools
import gc
import json
import os
import random
import sys
import traceback
import weakref

from .nodes import (CONTAINERS, HAS_COW, KIND_WEIGHTS, KINDS, MAX_NODES,
                    SLOTTED, Finding, Junk, _graph_cb, _testcow, handle_of,
                    nid_of, signal_name, slot_key)


class Operations:
    """Case's operations."""

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
