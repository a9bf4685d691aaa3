"""The attribution's second phase: map Python objects (gc.get_objects(),
their untracked referents, and the out-of-line buffers of lists and dicts)
to the pages the snapshot found copied, and the changed bytes to the
objects that hold them.

Standard library only.
"""

import array
import bisect
import gc
import os
import struct
import sys

from cowstat.maps import PAGE_SHIFT, _64BIT, _PTR, _PTR_FMT
from cowstat.pymalloc import _POOL_SIZES, _SMALL_LIMIT

# Out-of-line buffers found through their owner (3.11+ for dict keys).
LIST_ITEMS_TYPE = "list (item array)"
DICT_KEYS_TYPE = "dict (keys table)"

# Type flags (Include/object.h).
_TPFLAGS_INLINE_VALUES = 1 << 2         # 3.13+
_TPFLAGS_MANAGED_WEAKREF = 1 << 3       # 3.12+
_TPFLAGS_MANAGED_DICT = 1 << 4          # 3.11+
_TPFLAGS_HEAPTYPE = 1 << 9
_TPFLAGS_HAVE_GC = 1 << 14
_GC_HEADER = 2 * 8 if sys.maxsize > 2 ** 32 else 2 * 4

# PEP 683 immortal objects (3.12+): the refcount is at least this.
_IMMORTAL_MIN = (1 << 30) - 1 if sys.version_info >= (3, 12) else None

# PyDictKeysObject header, 3.11+: dk_refcnt, dk_log2_size,
# dk_log2_index_bytes, dk_kind, dk_version, dk_usable, dk_nentries.
_DK_HDR = struct.Struct("=qBBBxIqq")       # 32 bytes
_DK_LAYOUT = _64BIT and sys.version_info >= (3, 11)


def _type_name(tp):
    try:
        qual = tp.__qualname__
    except Exception:
        qual = getattr(tp, "__name__", "?")
    try:
        mod = tp.__module__
    except Exception:
        mod = None
    if not isinstance(qual, str):
        qual = "?"
    if isinstance(mod, str) and mod != "builtins":
        return mod + "." + qual
    return qual


def _type_info(tp):
    """Return (name, pre-header size, basic size, how, buffer kind) for
    type TP.

    HOW is 0 (the object is tp_basicsize bytes), 1 (call the type's
    __sizeof__: variable-size objects whose items are inline), 2 (the
    type's instances may hold their attribute values inline after
    tp_basicsize, 3.13: use the pymalloc block size when known).
    BUFFER is 1 for lists (an item array), 2 for dicts (a keys table),
    else 0.
    """
    flags = getattr(tp, "__flags__", 0)
    pre = 0
    if flags & _TPFLAGS_HAVE_GC:
        pre += _GC_HEADER
    if sys.version_info >= (3, 12):
        if flags & (_TPFLAGS_MANAGED_DICT | _TPFLAGS_MANAGED_WEAKREF):
            pre += 2 * _PTR
    elif sys.version_info >= (3, 11):
        if flags & _TPFLAGS_MANAGED_DICT:
            pre += 2 * _PTR
    basic = getattr(tp, "__basicsize__", 0)
    item = getattr(tp, "__itemsize__", 0)
    # The default __sizeof__ is the inline size (basicsize plus the inline
    # items); custom ones (list, dict, set, bytearray, deque...) add
    # out-of-line buffers that live elsewhere, so use the basic size for
    # those, except for variable-size types (int, bytes, tuple subclasses,
    # code) and str, whose data is inline.
    how = 0
    if item or issubclass(tp, str):
        how = 1
    if issubclass(tp, type):
        how = 0
    if sys.version_info >= (3, 13) and flags & _TPFLAGS_INLINE_VALUES:
        how = 2
    buf = 0
    if issubclass(tp, list):
        buf = 1
    elif issubclass(tp, dict) and _DK_LAYOUT:
        buf = 2
    return _type_name(tp), pre, basic, how, buf


class _Walker:
    """Maps objects (and buffers) to the snapshot's copied pages."""

    def __init__(self, snap, memfd):
        self.snap = snap
        self.copied = snap.copied
        self.ncopied = len(snap.copied)
        self.copied_set = set(snap.copied)
        self.memfd = memfd
        self.page_types = {}        # page -> {type: bytes}
        self.type_objects = {}      # type -> objects on copied pages
        self.type_immortal = {}     # type -> immortal objects among them
        self.infos = {}
        self.starts = snap.run_starts
        self.ends = snap.run_ends
        self.nruns = len(snap.run_starts)
        self.run_pages = set(x >> PAGE_SHIFT for x in snap.run_starts)
        self.covered = array.array("Q", bytes(8 * self.nruns))
        self.run_imm = array.array("B", bytes(self.nruns))
        self.page_written = {}      # page -> {type: changed bytes}
        self.w_bytes = {}           # type -> changed bytes
        self.w_imm = {}             # type -> changed bytes in immortals
        self.w_objects = {}         # type -> objects with changed bytes
        self.w_offsets = {}         # type -> {offset: changed bytes}
        self.w_offsets_imm = {}     # the same, immortal objects only
        self.keys_seen = set()
        self.buffers = 0
        self.buffer_errors = 0
        self.untracked_hits = 0

    def immortal(self, obj):
        if _IMMORTAL_MIN is None:
            return False
        try:
            return sys.getrefcount(obj) >= _IMMORTAL_MIN
        except Exception:
            return False

    def visit(self, obj, tracked=True, seen=None):
        """Attribute OBJ; SEEN (a set of ids) dedups untracked objects
        that lie on copied pages.  Returns the buffer kind (1 list, 2
        dict, else 0).

        The extent is [id - pre-header, id + inline size); most objects
        are on no copied page and are rejected after a first, cheap
        estimate (a superset of the exact extent)."""
        tp = type(obj)
        info = self.infos.get(tp)
        if info is None:
            info = self.infos[tp] = _type_info(tp)
        name, pre, fixed, how, buf = info
        addr = id(obj)
        size = fixed
        if how == 1:
            try:
                size = tp.__sizeof__(obj)
            except Exception:
                pass
        elif how == 2:
            size = fixed + _SMALL_LIMIT
        start = addr - pre
        first = start >> PAGE_SHIFT
        last = (addr + size - 1) >> PAGE_SHIFT
        cs = self.copied_set
        if first == last:
            if first not in cs:
                return buf
        elif last == first + 1:
            if first not in cs and last not in cs:
                return buf
        elif not self.hits(start, addr + size):
            return buf
        if seen is not None:
            if addr in seen:
                return buf
            seen.add(addr)
        if how == 2:
            # 3.13 inline values follow tp_basicsize inside the same
            # block: take the block when the pool is known.
            size = fixed
            blocks = self.snap.pool_blocks
            for psize in _POOL_SIZES:
                block = blocks.get(start & ~(psize - 1))
                if block is not None:
                    if block > pre + size:
                        size = block - pre
                    break
        elif not tracked and isinstance(obj, type) and \
                not obj.__flags__ & _TPFLAGS_HEAPTYPE:
            # A static type: no GC header, sizeof(PyTypeObject).
            start = addr
            try:
                size = fixed = type.__sizeof__(obj)
            except Exception:
                pass
        if self.attribute(name, start, addr + size, addr, fixed, obj) \
                and not tracked:
            self.untracked_hits += 1
        return buf

    def hits(self, start, end):
        copied = self.copied
        i = bisect.bisect_left(copied, start >> PAGE_SHIFT)
        return i < self.ncopied and copied[i] <= (end - 1) >> PAGE_SHIFT

    def attribute(self, name, start, end, base, basic, owner):
        """Count [start, end) of type NAME on the copied pages; changed
        bytes in it get offsets relative to BASE (inline fields below
        BASE + BASIC, "items" beyond).  Returns whether it lies on a
        copied page."""
        first = start >> PAGE_SHIFT
        last = (end - 1) >> PAGE_SHIFT
        if first == last:
            if first not in self.copied_set:
                return False
            pages = (first,)
        else:
            copied = self.copied
            i = bisect.bisect_left(copied, first)
            pages = []
            while i < self.ncopied and copied[i] <= last:
                pages.append(copied[i])
                i += 1
            if not pages:
                return False
        imm = self.immortal(owner)
        self.type_objects[name] = self.type_objects.get(name, 0) + 1
        if imm:
            self.type_immortal[name] = self.type_immortal.get(name, 0) + 1
        page_types = self.page_types
        run_pages = self.run_pages
        runs = False
        for p in pages:
            lo = max(start, p << PAGE_SHIFT)
            hi = min(end, (p + 1) << PAGE_SHIFT)
            slot = page_types.get(p)
            if slot is None:
                slot = page_types[p] = {}
            slot[name] = slot.get(name, 0) + hi - lo
            if p in run_pages:
                runs = True
        if runs:
            self.written(name, start, end, base, basic, imm)
        return True

    def written(self, name, start, end, base, basic, imm):
        starts, ends = self.starts, self.ends
        j = bisect.bisect_right(ends, start)
        total = 0
        offsets = None
        while j < self.nruns and starts[j] < end:
            lo = max(start, starts[j])
            hi = min(end, ends[j])
            nbytes = hi - lo
            self.covered[j] += nbytes
            if imm:
                self.run_imm[j] = 1
            total += nbytes
            p = lo >> PAGE_SHIFT
            slot = self.page_written.get(p)
            if slot is None:
                slot = self.page_written[p] = {}
            slot[name] = slot.get(name, 0) + nbytes
            if offsets is None:
                table = self.w_offsets_imm if imm else self.w_offsets
                offsets = table.get(name)
                if offsets is None:
                    offsets = table[name] = {}
            # Inline fields by 8-byte word (relative to the object's
            # address: negative offsets are the GC pre-header), the rest
            # as "items".
            a, b = lo - base, hi - base
            head_end = min(b, basic)
            w = a - a % 8
            while w < head_end:
                cnt = min(w + 8, head_end) - max(w, a)
                key = "%+d" % w
                offsets[key] = offsets.get(key, 0) + cnt
                w += 8
            if b > basic:
                cnt = b - max(a, basic)
                offsets["items"] = offsets.get("items", 0) + cnt
            j += 1
        if total:
            self.w_bytes[name] = self.w_bytes.get(name, 0) + total
            self.w_objects[name] = self.w_objects.get(name, 0) + 1
            if imm:
                self.w_imm[name] = self.w_imm.get(name, 0) + total

    def buffer(self, obj, kind):
        """Attribute the item array of list OBJ (KIND 1) or the keys
        table of dict OBJ (KIND 2), located through /proc/self/mem."""
        memfd = self.memfd
        addr = id(obj)
        try:
            if kind == 1:
                data = os.pread(memfd, 2 * _PTR, addr + 3 * _PTR)
                if len(data) != 2 * _PTR:
                    return
                items, allocated = struct.unpack(_PTR_FMT + _PTR_FMT[1], data)
                if not items or allocated <= 0:
                    return
                end = items + allocated * _PTR
                if self.hits(items, end):
                    self.buffers += 1
                    self.attribute(LIST_ITEMS_TYPE, items, end, items, 0,
                                   obj)
                return
            data = os.pread(memfd, _PTR, addr + 4 * _PTR)
            if len(data) != _PTR:
                return
            keys = struct.unpack(_PTR_FMT, data)[0]
            if not keys or keys in self.keys_seen:
                return
            self.keys_seen.add(keys)
            hdr = os.pread(memfd, _DK_HDR.size, keys)
            if len(hdr) != _DK_HDR.size:
                return
            (refcnt, log2_size, log2_index_bytes, kind_, version, usable,
             nentries) = _DK_HDR.unpack(hdr)
            if log2_size > 40 or kind_ > 2 or \
                    not log2_size <= log2_index_bytes <= log2_size + 3:
                self.buffer_errors += 1
                return
            size = (_DK_HDR.size + (1 << log2_index_bytes)
                    + ((2 << log2_size) // 3) * (24 if kind_ == 0 else 16))
            end = keys + size
            if self.hits(keys, end):
                self.buffers += 1
                self.attribute(DICT_KEYS_TYPE, keys, end, keys,
                               _DK_HDR.size, obj)
        except (OSError, struct.error, OverflowError):
            self.buffer_errors += 1


def _walk(snap, follow_referents, exclude_ids, untracked=True):
    """Map objects to copied pages.  Returns (walker, objects walked,
    untracked referents visited, distinct untracked on copied pages)."""
    memfd = None
    if untracked or follow_referents:
        # Out-of-line buffers (list item arrays, dict key tables) are
        # found through /proc/self/mem; without it they are not looked at.
        try:
            memfd = os.open("/proc/self/mem", os.O_RDONLY)
        except OSError:
            pass
    w = _Walker(snap, memfd)
    walked = nref = 0
    if not w.ncopied:
        if memfd is not None:
            os.close(memfd)
        return w, walked, nref, 0
    objects = gc.get_objects()
    exclude_ids = set(exclude_ids)
    exclude_ids.add(id(objects))
    exclude_ids.add(id(w))
    exclude_ids.add(id(w.__dict__))
    seen_untracked = set()      # untracked objects on copied pages
    visit = w.visit
    is_tracked = gc.is_tracked
    get_referents = gc.get_referents
    code_type = type(_walk.__code__)
    try:
        for obj in objects:
            if id(obj) in exclude_ids:
                continue
            walked += 1
            buf = visit(obj)
            if buf and memfd is not None:
                w.buffer(obj, buf)
        if follow_referents:
            # Breadth-first over referents: finds objects the GC does not
            # track (str, int, bytes...) and, on stock CPython, frozen
            # objects reachable from unfrozen ones.
            seen = set(map(id, objects))
            seen.update(exclude_ids)
            queue = objects
            while queue:
                found = []
                for obj in queue:
                    try:
                        refs = get_referents(obj)
                    except Exception:
                        continue
                    for ref in refs:
                        rid = id(ref)
                        if rid in seen:
                            continue
                        seen.add(rid)
                        walked += 1
                        tracked = is_tracked(ref)
                        buf = visit(ref, tracked)
                        if buf and memfd is not None:
                            w.buffer(ref, buf)
                        if tracked:
                            found.append(ref)
                        elif type(ref) is code_type:
                            _visit_nested_code(w, ref, seen)
                queue = found
        elif untracked:
            # One step: the untracked referents of tracked objects, and the
            # code objects nested in the constants of code objects found.
            seen_code = set()
            seen_dicts = set()
            for obj in objects:
                if id(obj) in exclude_ids:
                    continue
                try:
                    refs = get_referents(obj)
                except Exception:
                    continue
                for ref in refs:
                    if is_tracked(ref):
                        continue
                    nref += 1
                    tp = type(ref)
                    if tp is code_type:
                        rid = id(ref)
                        if rid not in seen_code:
                            seen_code.add(rid)
                            visit(ref, False)
                            _visit_nested_code(w, ref, seen_code)
                        continue
                    buf = visit(ref, False, seen_untracked)
                    if buf and memfd is not None:
                        rid = id(ref)
                        if rid not in seen_dicts:
                            seen_dicts.add(rid)
                            w.buffer(ref, buf)
    finally:
        del objects
        if memfd is not None:
            os.close(memfd)
    return w, walked, nref, w.untracked_hits


def _visit_nested_code(w, code, seen):
    """Visit the code objects in CODE's constants, recursively (SEEN: ids
    of code objects already visited)."""
    code_type = type(code)
    stack = [code]
    while stack:
        co = stack.pop()
        try:
            consts = co.co_consts
        except Exception:
            continue
        for c in consts:
            if type(c) is code_type and id(c) not in seen:
                seen.add(id(c))
                w.visit(c, False)
                stack.append(c)
