"""The attribution half of code_writes.py (issue #17): which inherited
object and field each byte a worker changed belongs to.  The master
records the extents of the generated modules' objects before the fork
(Extents); the worker compares its copied pages with the master's and
classifies each changed instruction with bytecode_diff.  See
code_writes.py's docstring for the method.
"""

import os
import sys

import bytecode_diff
from bytecode_diff import COUNTER_CATS, RESUME_CAT

PAGE = os.sysconf("SC_PAGE_SIZE")


KIND_CODE, KIND_FUNCTION, KIND_CLASS, KIND_KEYS = 0, 1, 2, 3
PRESENT = 1 << 63
SWAPPED = 1 << 62
EXCLUSIVE = 1 << 56
PFN_MASK = (1 << 55) - 1

OTHER_BYTES = ("other", "bytes of no recorded object")
NO_CHANGE = ("none", "copied, no byte changed")
# POP_JUMP_IF_* store their branch history into their inline cache at
# every execution (3.13, read only by the tier-2 optimizer); once the
# history is all ones or all zeros the store rewrites the same value: the
# page is copied, yet identical to the master's.
SAME_VALUE = ("none", "no byte changed; holds an executed POP_JUMP_IF "
              "cache (same-value branch-history store)")
# Page causes, first match wins (the "pages" column).
PRECEDENCE = ["bytecode", "code header", "type", "keys", "function",
              "other", "none"]
GROUP_TITLES = {
    "bytecode": "code object: co_code_adaptive",
    "code header": "code object: header fields",
    "type": "class: type object",
    "keys": "class: shared keys (ht_cached_keys)",
    "function": "function object",
    "other": "no recorded object",
    "none": "no byte changed",
}


def _in(group, labels=None):
    return lambda w: w[0] == group and (labels is None or w[1] in labels)


SCENARIOS = [
    ("the RESUME -> RESUME_CHECK writes", [_in("bytecode", {RESUME_CAT})]),
    ("the POP_JUMP_IF branch-history stores (same-value ones included)",
     [_in("bytecode", {"branch history"}), _in("none", {SAME_VALUE[1]})]),
    ("bytecode counters, branch history and RESUME (specializations "
     "kept)",
     [_in("bytecode", set(COUNTER_CATS) | {RESUME_CAT}),
      _in("none", {SAME_VALUE[1]})]),
    ("all writes into inherited bytecode",
     [_in("bytecode"), _in("none", {SAME_VALUE[1]})]),
    ("class writes (type _spec_cache, shared keys)",
     [_in("type"), _in("keys")]),
    ("bytecode and class writes",
     [_in("bytecode"), _in("none", {SAME_VALUE[1]}), _in("type"),
      _in("keys")]),
]


def _keys_extent(memfd, addr):
    """(start, end) of a PyDictKeysObject at ADDR (3.11+ layout: a 32-byte
    header, the index table, unicode entries of 16 bytes), or None."""
    import struct
    hdr = os.pread(memfd, 32, addr)
    if len(hdr) != 32:
        return None
    _, log2_size, log2_index_bytes, kind, _, _, _ = struct.unpack(
        "=qBBBxIqq", hdr)
    if log2_size > 20 or kind > 2 or \
            not log2_size <= log2_index_bytes <= log2_size + 3:
        return None
    size = (32 + (1 << log2_index_bytes) +
            ((2 << log2_size) // 3) * (24 if kind == 0 else 16))
    return addr, addr + size


# PyDictKeysObject header (3.13, default build): dk_refcnt, dk_log2_size,
# dk_log2_index_bytes, dk_kind, (pad), dk_version, dk_usable, dk_nentries.
KEYS_FIELDS = [(0, 8, "dk_refcnt"), (8, 12, "dk_log2_size, dk_kind"),
               (12, 16, "dk_version"), (16, 24, "dk_usable"),
               (24, 32, "dk_nentries")]


class Extents:
    """Built in the master before the fork: the extent of each object of
    the generated modules (code objects, functions, classes and their
    shared keys), the pages they span, and scratch memory mapped before
    the fork (MAP_SHARED anonymous, so that the worker's snapshot neither
    copies an inherited page nor allocates on one)."""

    def __init__(self, mods, n, per):
        import array
        import mmap
        import struct
        code_type = type(self.__init__.__code__)
        self.basic = code_type.__basicsize__
        starts, ends, kinds, owner = [], [], [], []
        seen = set()
        memfd = os.open("/proc/self/mem", os.O_RDONLY)
        # Offsets in PyHeapTypeObject, found from ht_name/ht_qualname:
        # ht_qualname, ht_cached_keys, ht_module, _ht_tpname, then
        # _spec_cache {getitem, getitem_version, init}; checked against
        # the type's size.
        k0 = getattr(mods[0], "K0")
        tsize = type(k0).__basicsize__
        raw = os.pread(memfd, tsize, id(k0))
        words = struct.unpack("=%dQ" % (tsize // 8), raw)
        self.keys_off = None
        for w in range(2, len(words)):
            if words[w] == id(k0.__qualname__) and \
                    words[w - 2] == id(k0.__name__) and \
                    (w + 7) * 8 == tsize:
                self.keys_off = (w + 1) * 8
        self.type_fields = []
        if self.keys_off is not None:
            o = self.keys_off
            self.type_fields = [(o, o + 8, "ht_cached_keys"),
                                (o + 24, o + 36, "_spec_cache.getitem"),
                                (o + 40, o + 48, "_spec_cache.init")]

        def add(lo, hi, kind, fn):
            if lo in seen:
                return
            seen.add(lo)
            starts.append(lo)
            ends.append(hi)
            kinds.append(kind)
            owner.append(fn)

        def add_obj(obj, kind, fn):
            if kind == KIND_CODE:
                lo = id(obj)
                hi = lo + self.basic + len(obj._co_code_adaptive)
            else:
                lo = id(obj) - (sys.getsizeof(obj) -
                                type(obj).__sizeof__(obj))
                hi = id(obj) + type(obj).__basicsize__
            add(lo, hi, kind, fn)

        for i in range(n):
            m = mods[i // per]
            f = getattr(m, "f%d" % i)
            c = getattr(m, "K%d" % i)
            add_obj(f.__code__, KIND_CODE, i)
            add_obj(f, KIND_FUNCTION, i)
            add_obj(c, KIND_CLASS, i)
            for meth in (c.__init__, c.total):
                add_obj(meth.__code__, KIND_CODE, i)
                add_obj(meth, KIND_FUNCTION, i)
            if self.keys_off is not None:
                ptr = struct.unpack("=Q", os.pread(
                    memfd, 8, id(c) + self.keys_off))[0]
                ext = _keys_extent(memfd, ptr) if ptr else None
                if ext:
                    add(ext[0], ext[1], KIND_KEYS, i)
        os.close(memfd)
        order = sorted(range(len(starts)), key=starts.__getitem__)
        self.starts = array.array("Q", [starts[k] for k in order])
        self.ends = array.array("Q", [ends[k] for k in order])
        self.kinds = array.array("B", [kinds[k] for k in order])
        self.owner = array.array("l", [owner[k] for k in order])
        pages = set()
        for lo, hi in zip(starts, ends):
            pages.update(range(lo // PAGE, (hi - 1) // PAGE + 1))
        self.pages = array.array("Q", sorted(pages))
        npg = len(self.pages)
        # pagemap entries (here, master), copied flags, page snapshots
        self.scratch = mmap.mmap(-1, 16 * npg + npg + npg * PAGE)
        self.npg = npg

    def snapshot(self):
        """In the worker, first thing after the measurement: pagemap
        entries of the objects' pages (here and in the master), then a
        copy of each copied page, allocating no more than a few small
        objects."""
        mv = memoryview(self.scratch)
        npg = self.npg
        me = mv[:8 * npg].cast("Q")
        par = mv[8 * npg:16 * npg].cast("Q")
        flags = mv[16 * npg:17 * npg]
        snap = mv[17 * npg:]
        pages = self.pages
        for path, dest in (("/proc/self/pagemap", me),
                           ("/proc/%d/pagemap" % os.getppid(), par)):
            fd = os.open(path, os.O_RDONLY)
            try:
                k = 0
                while k < npg:
                    j = k
                    while j + 1 < npg and pages[j + 1] == pages[j] + 1:
                        j += 1
                    os.preadv(fd, [dest[k:j + 1].cast("B")], pages[k] * 8)
                    k = j + 1
            finally:
                os.close(fd)
        fd = os.open("/proc/self/mem", os.O_RDONLY)
        try:
            for k in range(npg):
                e, p = me[k], par[k]
                if e & PFN_MASK and p & PFN_MASK:
                    # frame numbers visible (root): another frame
                    copied = e & PRESENT and p & PRESENT and \
                        e & PFN_MASK != p & PFN_MASK
                else:
                    copied = e & PRESENT and e & EXCLUSIVE and \
                        p & (PRESENT | SWAPPED)
                flags[k] = 1 if copied else 0
                if copied:
                    os.preadv(fd, [snap[k * PAGE:(k + 1) * PAGE]],
                              pages[k] * PAGE)
        finally:
            os.close(fd)
        del me, par, flags, snap, mv

    def field(self, kind, off):
        """The write kind (group, label) of a changed byte at offset OFF
        of an object of KIND (bytecode bytes are labelled later)."""
        if kind == KIND_CODE:
            if off >= self.basic:
                return ("bytecode", None)
            return ("code header", "offset %d" % (off // 8 * 8))
        if kind == KIND_CLASS:
            off -= 16                        # the GC pre-header
            for lo, hi, name in self.type_fields:
                if lo <= off < hi:
                    return ("type", name)
            return ("type", "offset %d" % (off // 8 * 8))
        if kind == KIND_KEYS:
            for lo, hi, name in KEYS_FIELDS:
                if lo <= off < hi:
                    return ("keys", name)
            return ("keys", "indices and entries")
        return ("function", "offset %d" % (off // 8 * 8 - 16))

    def analyse(self, hot):
        import bisect
        npg = self.npg
        mv = memoryview(self.scratch)
        flags = bytes(mv[16 * npg:17 * npg])
        snap = mv[17 * npg:]
        pages = self.pages
        page_index = {p: k for k, p in enumerate(pages)}
        pfd = os.open("/proc/%d/mem" % os.getppid(), os.O_RDONLY)
        starts, ends, kinds = self.starts, self.ends, self.kinds

        def parent_bytes(lo, hi):
            return os.pread(pfd, hi - lo, lo)

        def child_bytes(lo, hi, parent):
            out = bytearray(parent)
            for pg in range(lo // PAGE, (hi - 1) // PAGE + 1):
                k = page_index.get(pg)
                if k is None or not flags[k]:
                    continue
                a, b = max(lo, pg * PAGE), min(hi, (pg + 1) * PAGE)
                out[a - lo:b - lo] = snap[k * PAGE + a - pg * PAGE:
                                          k * PAGE + b - pg * PAGE]
            return bytes(out)

        # The layout: the inline bytecode read at id(co) +
        # code.__basicsize__ is code._co_code_adaptive.
        co = hot[0].__code__
        own = os.open("/proc/self/mem", os.O_RDONLY)
        try:
            raw = os.pread(own, len(co._co_code_adaptive),
                           id(co) + self.basic)
        finally:
            os.close(own)
        layout_ok = raw == co._co_code_adaptive

        # 1. Changed bytes of the copied pages, given to the objects
        # holding them.
        page_changes = {}    # page index -> list of (object or -1, offset)
        copied_total = 0
        for k in range(npg):
            if not flags[k]:
                continue
            copied_total += 1
            addr = pages[k] * PAGE
            old = parent_bytes(addr, addr + PAGE)
            new = snap[k * PAGE:(k + 1) * PAGE]
            changes = page_changes[k] = []
            if old == new:
                continue
            ow, nw = memoryview(old).cast("Q"), new.cast("Q")
            for w in range(PAGE // 8):
                if ow[w] == nw[w]:
                    continue
                for b in range(w * 8, w * 8 + 8):
                    if old[b] != new[b]:
                        a = addr + b
                        j = bisect.bisect_right(starts, a) - 1
                        if j >= 0 and a < ends[j]:
                            changes.append((j, a - starts[j]))
                        else:
                            changes.append((-1, 0))

        # 2. Code objects with changed bytecode: each changed
        # instruction classified (master's vs worker's opcode, oparg and
        # inline cache entries).
        units_of = {}
        for changes in page_changes.values():
            for j, off in changes:
                if j >= 0 and kinds[j] == KIND_CODE and off >= self.basic:
                    units_of.setdefault(j, set()).add(
                        (off - self.basic) // 2)
        families = {}
        cats_total = {}
        unit_cat = {}        # (object, unit) -> class
        written_bytecode = 0
        inconsistent = 0
        for j, units in units_of.items():
            lo, hi = starts[j] + self.basic, ends[j]
            written_bytecode += hi - lo
            pb = parent_bytes(lo, hi)
            cb = child_bytes(lo, hi, pb)
            for _, name, cat, nbytes, hit in bytecode_diff.classify(
                    pb, cb, units):
                if cat == "other (family changed?)":
                    inconsistent += 1
                fam = families.setdefault(name, {})
                c = fam.setdefault(cat, [0, 0])
                c[0] += 1
                c[1] += nbytes
                t = cats_total.setdefault(cat, [0, 0])
                t[0] += 1
                t[1] += nbytes
                for u in hit:
                    unit_cat[(j, u)] = cat

        # Copied pages with no changed byte: do they hold the inline cache
        # of a POP_JUMP_IF of a hot code object?
        hot_ids = {id(f.__code__) for f in hot}
        for f in hot:
            for v in vars(f.__globals__["K%s" % f.__name__[1:]]).values():
                if hasattr(v, "__code__"):
                    hot_ids.add(id(v.__code__))
        branch_pages = set()
        for k, changes in page_changes.items():
            if changes:
                continue
            addr = pages[k] * PAGE
            j = bisect.bisect_left(starts, addr + PAGE) - 1
            while j >= 0 and ends[j] > addr:
                if kinds[j] == KIND_CODE and starts[j] in hot_ids:
                    lo = starts[j] + self.basic
                    pb = parent_bytes(lo, ends[j])
                    if bytecode_diff.executes_pop_jump(pb, lo, addr, PAGE):
                        branch_pages.add(k)
                j -= 1

        # 3. Each copied page: the set of write kinds on it.
        writes = {}          # (group, label) -> [pages touched, bytes]
        primary = {}
        saved = [0] * len(SCENARIOS)
        objects = {}
        for k, changes in page_changes.items():
            kinds_here = set()
            for j, off in changes:
                if j < 0:
                    w = OTHER_BYTES
                else:
                    w = self.field(kinds[j], off)
                    if w[0] == "bytecode":
                        w = ("bytecode", unit_cat.get(
                            (j, (off - self.basic) // 2), "other"))
                    objects.setdefault(w[0], set()).add(j)
                kinds_here.add(w)
                writes.setdefault(w, [0, 0])[1] += 1
            if not kinds_here:
                kinds_here.add(SAME_VALUE if k in branch_pages
                               else NO_CHANGE)
            for w in kinds_here:
                writes.setdefault(w, [0, 0])[0] += 1
            groups = {w[0] for w in kinds_here}
            p = next(g for g in PRECEDENCE if g in groups)
            primary[p] = primary.get(p, 0) + 1
            for s, (_, preds) in enumerate(SCENARIOS):
                if all(any(pr(w) for pr in preds) for w in kinds_here):
                    saved[s] += 1

        os.close(pfd)
        return {
            "layout_ok": layout_ok,
            "type_layout_ok": self.keys_off is not None,
            "code_basicsize": self.basic,
            "objects": len(starts),
            "object_pages": npg,
            "copied_object_pages": copied_total,
            "pages_by_cause": primary,
            "writes": [[g, l, v[0], v[1]] for (g, l), v in writes.items()],
            "objects_written": {g: len(v) for g, v in objects.items()},
            "pages_saved_if": [[SCENARIOS[s][0], saved[s]]
                               for s in range(len(SCENARIOS))],
            "written_bytecode_bytes": written_bytecode,
            "categories": cats_total,
            "families": families,
            "inconsistent": inconsistent,
        }
