"""The expectations: Checks.check() compares the graph as it is with the
model (LIVE, MAY, DIE and the counters; see the package's docstring).
A mixin of Case, on top of gcfuzz.model.Model's state.
"""

import gc
import weakref

from .nodes import (CLASSES, CONTAINERS, FIXED_ATTRS, HAS_COW,
                    HAS_IMMORTAL, MORTAL, Finding, attr_items, checksum,
                    get_payload, handle_of, nid_of, strong_children)


class Checks:
    """Case's checks: every expectation of the model."""

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
