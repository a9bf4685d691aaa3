"""Which Python objects sit on the pages a forked worker has copied?

Call :func:`report` inside a forked worker (or install
:func:`install_signal_handler` before forking and send the worker a
signal).  The report is built in two phases:

1. Snapshot, before any Python object is touched: the private writable
   anonymous mappings of ``/proc/self/maps`` (the heap, anonymous ``rw-p``
   regions such as pymalloc arenas and large malloc blocks; not the stack,
   not file-backed mappings) are read from ``/proc/self/pagemap`` in large
   reads.  A page is *copied* when it is present and exclusively mapped in
   this process and, when the parent's pagemap is readable, the parent has
   a page (present or swapped) at the same virtual address: a page the
   worker allocated after the fork is not blamed on inherited objects.
   When the parent's pagemap cannot be read, every present exclusive page
   counts ("exclusive" method), and the header says so.

2. Walk: every object of ``gc.get_objects()`` is mapped to the pages it
   overlaps, ``[id(obj) - pre-header, id(obj) + inline size)``.  Each
   copied page is attributed to the type with the most bytes on it
   ("pages": these add up to the total) and counted under every type that
   has bytes on it ("touched").  Copied pages holding no object found go
   to the row NO_OBJECT_ROW.

Walking increfs objects and so copies pages itself, but after the
snapshot: it does not change this report (it does change the next one).

Linux only; standard library only.
"""

import array
import bisect
import gc
import json
import os
import signal
import sys
import time

from cowstat import CowstatError

try:
    PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):   # pragma: no cover
    PAGE_SIZE = 4096
PAGE_SHIFT = PAGE_SIZE.bit_length() - 1

NO_OBJECT_ROW = "(no tracked object: allocator, strings, other non-GC objects)"
NO_OBJECT_FOUND_ROW = ("(no object found: allocator metadata, free blocks, "
                       "out-of-line buffers)")

# A pagemap entry is a native-endian u64.  The flags we need are all in its
# top byte (bits 56..63).
_TOP_BYTE = 7 if sys.byteorder == "little" else 0
_PRESENT = 0x80         # bit 63: page present in RAM
_SWAPPED = 0x40         # bit 62: page swapped out
_FILE_SHARED = 0x20     # bit 61: file page or shared anonymous page
_EXCLUSIVE = 0x01       # bit 56: page exclusively mapped (since Linux 4.2)

# Byte translation tables: top byte -> 1 (has the property) or 0.
_T_PRESENT = bytes(1 if b & _PRESENT else 0 for b in range(256))
_T_EXCLUSIVE = bytes(
    1 if b & (_PRESENT | _EXCLUSIVE | _FILE_SHARED) == _PRESENT | _EXCLUSIVE
    else 0 for b in range(256))
_T_PARENT_HAS = bytes(1 if b & (_PRESENT | _SWAPPED) else 0
                      for b in range(256))

_CHUNK_PAGES = 1 << 16          # pages per pagemap read (512 KiB of entries)

# Type flags (Include/object.h).
_TPFLAGS_MANAGED_WEAKREF = 1 << 3       # 3.12+
_TPFLAGS_MANAGED_DICT = 1 << 4          # 3.11+
_TPFLAGS_HAVE_GC = 1 << 14
_GC_HEADER = 2 * 8 if sys.maxsize > 2 ** 32 else 2 * 4
_PTR = 8 if sys.maxsize > 2 ** 32 else 4


def _is_cowpy():
    return "cowpy" in sys.version or hasattr(gc, "get_shared_stats")


# ---------------------------------------------------------------- snapshot

def _read_all(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = []
        while True:
            data = os.read(fd, 1 << 16)
            if not data:
                break
            parts.append(data)
    finally:
        os.close(fd)
    return b"".join(parts)


def parse_maps(text):
    """Return [(start, end, name)] of the private writable anonymous
    mappings in /proc/PID/maps TEXT (bytes or str): the heap, unnamed or
    ``[anon:...]`` ``rw-p`` regions; not stacks, not file-backed ones."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    regions = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        perms = parts[1]
        if len(perms) < 4 or perms[1] != "w" or perms[3] != "p":
            continue
        name = parts[5].strip() if len(parts) > 5 else ""
        if parts[4] != "0":
            continue                            # file-backed (inode != 0)
        if name and name != "[heap]" and not name.startswith("[anon:"):
            continue            # [stack], [vvar], [vdso], files, memfd...
        try:
            lo, hi = parts[0].split("-")
            start, end = int(lo, 16), int(hi, 16)
        except ValueError:
            continue
        if end > start:
            regions.append((start, end, name or "[anon]"))
    return regions


def _pread_exact(fd, size, offset):
    """Read SIZE bytes at OFFSET; pad with zeros if the file ends early.

    Returns (data, number of bytes really read)."""
    chunks = []
    want = size
    while size > 0:
        data = os.pread(fd, size, offset)
        if not data:
            break
        chunks.append(data)
        size -= len(data)
        offset += len(data)
    data = b"".join(chunks)
    if size > 0:
        data += bytes(size)
    return data, want - size


def _and_bytes(a, b):
    """Bytewise AND of two equally long 0/1 byte strings."""
    return (int.from_bytes(a, "little")
            & int.from_bytes(b, "little")).to_bytes(len(a), "little")


class _ParentGone(Exception):
    pass


class Snapshot:
    """Page states of this process, taken before any object is walked.

    ``copied`` is a sorted array of page numbers (address >> PAGE_SHIFT).
    """

    def __init__(self, parent_pid=None):
        t0 = time.perf_counter()
        self.pid = os.getpid()
        self.copied = array.array("Q")
        self.regions = []
        self.scanned_pages = 0
        self.present_pages = 0
        self.exclusive_pages = 0
        self.new_pages = 0      # exclusive, but the parent has no page there
        self.method = "parent"
        self.method_note = ""
        self.parent_pid = parent_pid

        for path in ("/proc/self/maps", "/proc/self/pagemap"):
            try:
                if path.endswith("maps"):
                    self.regions = parse_maps(_read_all(path))
                else:
                    fd = os.open(path, os.O_RDONLY)
            except OSError as e:
                raise CowstatError("cannot read %s: %s"
                                   % (path, e.strerror or e))
        pfd = None
        if parent_pid is None:
            parent_pid = os.getppid()
            self.parent_pid = parent_pid
            if parent_pid <= 1:
                self.method = "exclusive"
                self.method_note = ("this process has no parent (PPID %d); "
                                    "pass parent_pid=" % parent_pid)
        if self.method == "parent":
            ppath = "/proc/%d/pagemap" % parent_pid
            try:
                pfd = os.open(ppath, os.O_RDONLY)
            except OSError as e:
                self.method = "exclusive"
                self.method_note = ("cannot read %s: %s"
                                    % (ppath, e.strerror or e))
        try:
            try:
                self._scan(fd, pfd)
            except _ParentGone:
                self.method = "exclusive"
                self.method_note = ("the parent %d exited during the "
                                    "snapshot" % self.parent_pid)
                self.copied = array.array("Q")
                self._scan(fd, None)
        finally:
            os.close(fd)
            if pfd is not None:
                os.close(pfd)
        self.seconds = time.perf_counter() - t0

    def _scan(self, fd, pfd):
        """Fill self.copied and the page counters."""
        self.scanned_pages = self.present_pages = 0
        self.exclusive_pages = self.new_pages = 0
        copied = self.copied
        for start, end, _ in self.regions:
            first = start >> PAGE_SHIFT
            last = (end - 1) >> PAGE_SHIFT
            page = first
            while page <= last:
                n = min(_CHUNK_PAGES, last + 1 - page)
                data, _ = _pread_exact(fd, n * 8, page * 8)
                tops = data[_TOP_BYTE::8]
                self.scanned_pages += n
                self.present_pages += tops.translate(_T_PRESENT).count(1)
                excl = tops.translate(_T_EXCLUSIVE)
                nexcl = excl.count(1)
                if nexcl:
                    self.exclusive_pages += nexcl
                    if pfd is not None:
                        pdata, got = _pread_exact(pfd, n * 8, page * 8)
                        if not got:
                            # The parent exited: its pagemap reads empty.
                            raise _ParentGone()
                        has = pdata[_TOP_BYTE::8].translate(_T_PARENT_HAS)
                        cand = _and_bytes(excl, has)
                        self.new_pages += nexcl - cand.count(1)
                    else:
                        cand = excl
                    i = cand.find(1)
                    while i >= 0:
                        copied.append(page + i)
                        i = cand.find(1, i + 1)
                page += n

    @property
    def copied_pages(self):
        return len(self.copied)


# -------------------------------------------------------------------- walk

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
    """Return (name, pre-header size, basic size, how) for type TP.

    HOW is 0 (the object is tp_basicsize bytes), 1 (call the type's
    __sizeof__: variable-size objects whose items are inline).
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
    # those, except for variable-size types (int, bytes, tuple subclasses)
    # and str, whose data is inline.
    how = 0
    if item or issubclass(tp, str):
        how = 1
    if issubclass(tp, type):
        how = 0
    return _type_name(tp), pre, basic, how


def _walk(snap, follow_referents, exclude_ids):
    """Map objects to copied pages.

    Returns (per-page {type: bytes}, {type: objects on copied pages},
    objects walked).
    """
    copied = snap.copied
    ncopied = len(copied)
    page_types = {}
    type_objects = {}
    infos = {}
    walked = 0
    if not ncopied:
        return page_types, type_objects, walked
    shift = PAGE_SHIFT
    bl = bisect.bisect_left

    def visit(obj):
        tp = type(obj)
        info = infos.get(tp)
        if info is None:
            info = infos[tp] = _type_info(tp)
        name, pre, size, how = info
        addr = id(obj)
        if how:
            try:
                size = tp.__sizeof__(obj)
            except Exception:
                pass
        start = addr - pre
        end = addr + size
        first = start >> shift
        i = bl(copied, first)
        if i == ncopied:
            return
        p = copied[i]
        last = (end - 1) >> shift
        if p > last:
            return
        type_objects[name] = type_objects.get(name, 0) + 1
        while p <= last:
            lo = max(start, p << shift)
            hi = min(end, (p + 1) << shift)
            slot = page_types.get(p)
            if slot is None:
                slot = page_types[p] = {}
            slot[name] = slot.get(name, 0) + hi - lo
            i += 1
            if i == ncopied:
                break
            p = copied[i]

    objects = gc.get_objects()
    exclude_ids = set(exclude_ids)
    exclude_ids.add(id(objects))
    seen = None
    if follow_referents:
        seen = set(map(id, objects))
        seen.update(exclude_ids)
    for obj in objects:
        if id(obj) in exclude_ids:
            continue
        walked += 1
        visit(obj)
    if follow_referents:
        # Breadth-first over referents: finds objects the GC does not
        # track (str, int, bytes...) and, on stock CPython, frozen objects
        # reachable from unfrozen ones.
        queue = objects
        while queue:
            found = []
            for obj in queue:
                try:
                    refs = gc.get_referents(obj)
                except Exception:
                    continue
                for ref in refs:
                    rid = id(ref)
                    if rid in seen:
                        continue
                    seen.add(rid)
                    walked += 1
                    visit(ref)
                    if gc.is_tracked(ref):
                        found.append(ref)
            queue = found
    del objects
    return page_types, type_objects, walked


# ------------------------------------------------------------------ report

class AttributionReport:
    """The result of :func:`report`.

    Attributes:
      header: dict (pid, parent_pid, method, copied_pages, copied_kib, ...)
      rows: list of dicts, one per type, sorted by pages descending, the
        top N plus an "(N other types)" row so pages add up to the total:
        type, pages (primary attribution), kib, touched (pages holding at
        least one byte of the type), objects (objects of the type on
        copied pages)
      all_rows: every row, untruncated
      pages: {type: sorted list of page addresses attributed to it}
      text: the formatted report (also str(report))
    """

    def __init__(self, header, all_rows, pages, top):
        self.header = header
        self.all_rows = all_rows
        self.pages = pages
        rows = all_rows[:top] if top is not None and top >= 0 else all_rows
        rest = all_rows[len(rows):]
        if rest:
            n = sum(r["pages"] for r in rest)
            rows = rows + [{
                "type": "(%d other types)" % len(rest),
                "pages": n, "kib": n * PAGE_SIZE // 1024,
                "touched": None,
                "objects": sum(r["objects"] for r in rest)}]
        self.rows = rows
        self.text = _format(header, rows)

    def __str__(self):
        return self.text

    def to_dict(self):
        return {"header": self.header, "rows": self.rows}

    def to_json(self, **kw):
        return json.dumps(self.to_dict(), **kw)


def _format(h, rows):
    kib = PAGE_SIZE // 1024
    out = ["cowstat attribution: pid %d, parent %s"
           % (h["pid"], h["parent_pid"])]
    if h["method"] == "parent":
        out.append(
            "method: parent pagemap (a page is copied when it is present "
            "and exclusive here and the parent has a page at the same "
            "address)")
    else:
        out.append(
            "method: EXCLUSIVE ONLY (every present exclusive page counts, "
            "including pages allocated after the fork): %s"
            % h["method_note"])
    out.append(
        "copied: %d pages = %d KiB  (scanned %d pages in %d regions; "
        "present %d, exclusive %d, exclusive but new since fork %d)"
        % (h["copied_pages"], h["copied_kib"], h["scanned_pages"],
           h["regions"], h["present_pages"], h["exclusive_pages"],
           h["new_pages"]))
    out.append("objects walked: %d (%s)" % (h["objects_walked"],
                                            h["objects_note"]))
    out.append("time: snapshot %.3f s, walk %.3f s"
               % (h["snapshot_seconds"], h["walk_seconds"]))
    out.append("")
    width = max([len("TYPE")] + [len(r["type"]) for r in rows])
    width = min(width, 70)
    fmt = "%-*s %8s %10s %8s %9s"
    out.append(fmt % (width, "TYPE", "PAGES", "KiB", "TOUCHED", "OBJECTS"))
    for r in rows:
        touched = "" if r["touched"] is None else str(r["touched"])
        out.append(fmt % (width, r["type"], r["pages"], r["kib"], touched,
                          r["objects"]))
    out.append(fmt % (width, "TOTAL", h["copied_pages"],
                      h["copied_pages"] * kib, "", ""))
    return "\n".join(out) + "\n"


def report(parent_pid=None, top=20, follow_referents=False):
    """Attribute the pages this process copied since its fork to types.

    parent_pid: the process this one was forked from (default: getppid();
      its /proc/PID/pagemap must be readable, else the report falls back
      to the "exclusive" method and says so).
    top: rows shown (the others are summed into one row); None: all.
    follow_referents: also walk gc.get_referents() of every object, which
      finds objects the GC does not track (str, int, bytes, float...) and,
      on stock CPython, frozen objects reachable from unfrozen ones.
      Slower (one more pass over the heap).

    Returns an AttributionReport (``.rows``: list of dicts, ``.text``).
    """
    if parent_pid is not None:
        if (isinstance(parent_pid, bool) or not isinstance(parent_pid, int)
                or parent_pid <= 0):
            raise ValueError("parent_pid must be a positive int, not %r"
                             % (parent_pid,))
    if top is not None and (isinstance(top, bool)
                            or not isinstance(top, int) or top < 0):
        raise ValueError("top must be a non-negative int or None, not %r"
                         % (top,))
    if not os.path.exists("/proc/self/pagemap"):
        raise CowstatError("/proc/self/pagemap is missing: attribution "
                           "needs Linux procfs")

    # Phase 1: no Python object is walked before this returns.
    snap = Snapshot(parent_pid)

    # Phase 2.
    t0 = time.perf_counter()
    page_types, type_objects, walked = _walk(
        snap, follow_referents, (id(snap), id(snap.copied)))
    walk_seconds = time.perf_counter() - t0

    primary = {}
    touched = {}
    no_object = NO_OBJECT_FOUND_ROW if follow_referents else NO_OBJECT_ROW
    for p in snap.copied:
        types = page_types.get(p)
        if not types:
            primary.setdefault(no_object, []).append(p << PAGE_SHIFT)
            continue
        # Most bytes wins; ties go to the alphabetically first type, so
        # the result does not depend on walk order.
        best = min(types.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        primary.setdefault(best, []).append(p << PAGE_SHIFT)
        for name in types:
            touched[name] = touched.get(name, 0) + 1
    if no_object in primary:
        touched[no_object] = len(primary[no_object])

    kib = PAGE_SIZE // 1024
    names = set(primary) | set(touched)
    all_rows = [{"type": name,
                 "pages": len(primary.get(name, ())),
                 "kib": len(primary.get(name, ())) * kib,
                 "touched": touched.get(name, 0),
                 "objects": type_objects.get(name, 0)}
                for name in names]
    all_rows.sort(key=lambda r: (-r["pages"], -r["touched"], r["type"]))

    if _is_cowpy():
        objects_note = ("gc.get_objects(); cowpy lists frozen objects too")
    else:
        objects_note = ("gc.get_objects(); frozen objects are invisible on "
                        "stock CPython: %d frozen"
                        % (gc.get_freeze_count()
                           if hasattr(gc, "get_freeze_count") else -1))
    if follow_referents:
        objects_note += ", plus their referents"
    header = {
        "pid": snap.pid,
        "parent_pid": snap.parent_pid,
        "method": snap.method,
        "method_note": snap.method_note,
        "page_size": PAGE_SIZE,
        "copied_pages": snap.copied_pages,
        "copied_kib": snap.copied_pages * kib,
        "regions": len(snap.regions),
        "scanned_pages": snap.scanned_pages,
        "present_pages": snap.present_pages,
        "exclusive_pages": snap.exclusive_pages,
        "new_pages": snap.new_pages,
        "objects_walked": walked,
        "objects_note": objects_note,
        "follow_referents": bool(follow_referents),
        "snapshot_seconds": round(snap.seconds, 6),
        "walk_seconds": round(walk_seconds, 6),
        "python": sys.version.split()[0] + (" (cowpy)" if _is_cowpy()
                                            else ""),
    }
    return AttributionReport(header, all_rows, primary, top)


# ---------------------------------------------------------- signal handler

DEFAULT_PATH_TEMPLATE = "/tmp/cowstat-attribution-{pid}.txt"
# Not SIGUSR1/SIGUSR2: pre-fork servers use them (gunicorn's master
# re-executes on SIGUSR2 and its workers reset it to the default action,
# which kills them).  SIGPWR is caught by gunicorn workers and ignored by
# its master.
DEFAULT_SIGNAL = getattr(signal, "SIGPWR", signal.SIGUSR2)


def install_signal_handler(signum=DEFAULT_SIGNAL,
                           path_template=DEFAULT_PATH_TEMPLATE, top=20,
                           parent_pid=None, follow_referents=False):
    """Write a report to a file whenever this process receives SIGNUM.

    Install it in the master before forking: the workers inherit it.
    PATH_TEMPLATE may use {pid}, {ppid} and {time} (Unix seconds); a path
    ending in ".json" gets the JSON form, any other the text form.  The
    file is replaced atomically.  Errors are written to the file (and
    stderr) instead of raising in the interrupted code.

    Must be called from the main thread.  Returns the previous handler.
    """
    try:
        path_template.format(pid=1, ppid=1, time=1)
    except (AttributeError, KeyError, IndexError, ValueError) as e:
        raise ValueError("bad path_template %r: %s (use {pid}, {ppid}, "
                         "{time})" % (path_template, e))
    busy = []

    def handler(sig, frame):
        if busy:
            return
        busy.append(1)
        path = path_template.format(pid=os.getpid(), ppid=os.getppid(),
                                    time=int(time.time()))
        try:
            try:
                rep = report(parent_pid=parent_pid, top=top,
                             follow_referents=follow_referents)
                if path.endswith(".json"):
                    data = rep.to_json(indent=1) + "\n"
                else:
                    data = rep.text
            except Exception as e:
                data = "cowstat attribution failed: %s: %s\n" % (
                    type(e).__name__, e)
                sys.stderr.write(data)
            tmp = "%s.tmp%d" % (path, os.getpid())
            with open(tmp, "w") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            sys.stderr.write("cowstat: cannot write attribution report %s: "
                             "%s\n" % (path, e))
        finally:
            del busy[:]

    return signal.signal(signum, handler)
