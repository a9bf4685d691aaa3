"""Which Python objects sit on the pages a forked worker has copied?

Call :func:`report` inside a forked worker (or install
:func:`install_signal_handler` before forking and send the worker a
signal).  The report is built in two phases:

1. Snapshot, before any Python object is touched: the private writable
   mappings of ``/proc/self/maps`` (the heap, anonymous ``rw-p`` regions
   such as pymalloc arenas and large malloc blocks, stacks, and the
   ``.data``/``.bss`` of the executable and of shared libraries) are read
   from ``/proc/self/pagemap``.  A page is *copied* when it
   is present, anonymous and exclusively mapped in this process and, when
   the parent's pagemap is readable, the parent has a page (present or
   swapped) at the same virtual address: a page the worker allocated after
   the fork is not blamed on inherited objects.  When the parent's pagemap
   cannot be read, every present exclusive page counts ("exclusive"
   method), and the header says so.  Still before the walk, each copied
   page is classified by the mapping it lies in (a page in an anonymous
   mapping whose 16 KiB (or 4 KiB) pool has a valid pymalloc pool header,
   read through ``/proc/self/mem``, is a pymalloc arena page), and, when
   ``/proc/PPID/mem`` is readable, compared byte for byte with the
   parent's page at the same address: the runs of changed bytes are what
   the worker (or, rarely, the parent) wrote since the fork.

2. Walk: every object of ``gc.get_objects()``, plus (by default) the
   objects the collector does not track that are referents of those
   (``gc.get_referents()``: str, int, float, bytes, code objects and the
   code objects nested in their constants, static types, untracked tuples
   and dicts), plus the item arrays of lists and the key tables of dicts
   (located through ``/proc/self/mem``), is mapped to the pages it
   overlaps, ``[id(obj) - pre-header, id(obj) + inline size)``.  Each
   copied page is attributed to the type with the most bytes on it
   ("pages": these add up to the total) and counted under every type that
   has bytes on it ("touched").  Copied pages holding no object found go
   to the remainder row.  Each changed byte is attributed to the object
   that holds it (or to a pymalloc pool header, or to no object).

Walking increfs objects and so copies pages itself, but after the
snapshot: it does not change this report (it does change the next one).

Linux only; standard library only.

Modules: cowstat.maps (the memory map and its regions), cowstat.snapshot
(phase 1), cowstat.pymalloc (pool headers, pymalloc_census()),
cowstat.walk (phase 2), cowstat.formatting (AttributionReport and its
text); this module assembles the report and installs the signal handler.
Their public names are importable from here too.
"""

import gc
import os
import signal
import sys
import time

from cowstat import CowstatError
from cowstat.formatting import (  # noqa: F401  (re-exported)
    IDENTICAL_ROW, NO_OBJECT_FOUND_ROW, NO_OBJECT_ROW, OUTSIDE_ROW,
    POOL_HEADER_ROW, AttributionReport, _format)
from cowstat.maps import (  # noqa: F401  (re-exported)
    PAGE_SHIFT, PAGE_SIZE, REGION_KEYS, REGIONS, _RX, classify_maps,
    elf_segment_end, parse_maps, parse_maps_all)
from cowstat.pymalloc import (  # noqa: F401  (re-exported)
    _POOL_OVERHEAD, _parent_free_pages, _parse_pool, pymalloc_census)
from cowstat.snapshot import Snapshot
from cowstat.walk import (  # noqa: F401  (re-exported)
    DICT_KEYS_TYPE, LIST_ITEMS_TYPE, _walk)


def _is_cowpy():
    return "cowpy" in sys.version or hasattr(gc, "get_shared_stats")


def _best(d):
    """The key with the largest value; ties to the first alphabetically."""
    return min(d.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def report(parent_pid=None, top=20, follow_referents=False, untracked=True,
           diff=True):
    """Attribute the pages this process copied since its fork to types.

    parent_pid: the process this one was forked from (default: getppid();
      its /proc/PID/pagemap must be readable, else the report falls back
      to the "exclusive" method and says so).
    top: rows shown (the others are summed into one row); None: all.
    follow_referents: also walk gc.get_referents() of every object,
      transitively, which finds every object reachable from a tracked one
      and, on stock CPython, frozen objects reachable from unfrozen ones.
      Slower (one more pass over the heap).
    untracked: (default) walk the objects the GC does not track that are
      referents of tracked ones (str, int, float, bytes, code objects and
      the code objects in their constants, static types, untracked tuples
      and dicts): one step, not transitively; and the item arrays of lists
      and key tables of dicts.  False: tracked objects only, as before
      (the remainder row is then NO_OBJECT_ROW).
    diff: compare each copied page with the parent's (/proc/PPID/mem) and
      attribute the changed bytes (the "written" table).

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
    snap = Snapshot(parent_pid, diff=diff)

    # Phase 2.
    t0 = time.perf_counter()
    w, walked, nref, nuntracked = _walk(
        snap, follow_referents,
        (id(snap), id(snap.copied), id(snap.__dict__), id(snap.pools),
         id(snap.page_region), id(snap.run_starts), id(snap.run_ends),
         id(snap.identical)),
        untracked)
    walk_seconds = time.perf_counter() - t0

    page_types = w.page_types
    primary = {}
    touched = {}
    if follow_referents or untracked:
        no_object = NO_OBJECT_FOUND_ROW
    else:
        no_object = NO_OBJECT_ROW
    kib = PAGE_SIZE // 1024
    nreg = len(REGION_KEYS)
    reg_pages = [[] for _ in range(nreg)]
    reg_noobj = [0] * nreg
    for p, rx in zip(snap.copied, snap.page_region):
        reg_pages[rx].append(p << PAGE_SHIFT)
        types = page_types.get(p)
        if not types:
            primary.setdefault(no_object, []).append(p << PAGE_SHIFT)
            reg_noobj[rx] += 1
            continue
        # Most bytes wins; ties go to the alphabetically first type, so
        # the result does not depend on walk order.
        primary.setdefault(_best(types), []).append(p << PAGE_SHIFT)
        for name in types:
            touched[name] = touched.get(name, 0) + 1
    if no_object in primary:
        touched[no_object] = len(primary[no_object])

    names = set(primary) | set(touched)
    all_rows = [{"type": name,
                 "pages": len(primary.get(name, ())),
                 "kib": len(primary.get(name, ())) * kib,
                 "touched": touched.get(name, 0),
                 "objects": w.type_objects.get(name, 0),
                 "immortal": w.type_immortal.get(name, 0)}
                for name in names]
    all_rows.sort(key=lambda r: (-r["pages"], -r["touched"], r["type"]))

    # Changed bytes: what no object found holds goes to the pool header
    # (when it lies there) or to OUTSIDE_ROW.
    compared = snap.diff_method == "parent-mem"
    written_rows, written_pages, changed = [], {}, {}
    reg_ident = [0] * nreg
    reg_alloc = [0] * nreg
    reg_immw = [0] * nreg
    changed_bytes = 0
    identical = set()
    page_immw = set()
    page_alloc_only = {}
    page_hdr = set()
    if compared:
        page_written = w.page_written
        w_bytes = dict(w.w_bytes)
        pools = snap.pools
        starts, ends, covered = snap.run_starts, snap.run_ends, w.covered
        for j in range(len(starts)):
            s, e = starts[j], ends[j]
            p = s >> PAGE_SHIFT
            n = e - s
            changed[p << PAGE_SHIFT] = changed.get(p << PAGE_SHIFT, 0) + n
            changed_bytes += n
            cov = min(covered[j], n)
            if w.run_imm[j]:
                page_immw.add(p)
            page_alloc_only[p] = page_alloc_only.get(p, True) and cov == 0
            rest = n - cov
            if rest <= 0:
                continue
            slot = page_written.get(p)
            if slot is None:
                slot = page_written[p] = {}
            pool = pools.get(p)
            if pool is not None and cov == 0:
                hdr = max(0, min(e, pool[0] + _POOL_OVERHEAD)
                          - max(s, pool[0]))
                if hdr:
                    page_hdr.add(p)
                    slot[POOL_HEADER_ROW] = slot.get(POOL_HEADER_ROW, 0) + hdr
                    w_bytes[POOL_HEADER_ROW] = w_bytes.get(
                        POOL_HEADER_ROW, 0) + hdr
                    rest -= hdr
            if rest > 0:
                slot[OUTSIDE_ROW] = slot.get(OUTSIDE_ROW, 0) + rest
                w_bytes[OUTSIDE_ROW] = w_bytes.get(OUTSIDE_ROW, 0) + rest
        identical = set(snap.identical)
        wprimary = {}
        for p, rx in zip(snap.copied, snap.page_region):
            if p in identical:
                wprimary.setdefault(IDENTICAL_ROW, []).append(
                    p << PAGE_SHIFT)
                reg_ident[rx] += 1
                continue
            slot = page_written.get(p)
            if not slot:            # unreadable page
                continue
            wprimary.setdefault(_best(slot), []).append(p << PAGE_SHIFT)
            if page_alloc_only.get(p):
                reg_alloc[rx] += 1
            if p in page_immw:
                reg_immw[rx] += 1
        for name in set(wprimary) | set(w_bytes):
            offs = dict(w.w_offsets.get(name, {}))
            imm_offs = w.w_offsets_imm.get(name, {})
            for k, v in imm_offs.items():
                offs[k] = offs.get(k, 0) + v
            top_offs = sorted(offs.items(), key=lambda kv: (-kv[1], kv[0]))
            top_imm = sorted(imm_offs.items(),
                             key=lambda kv: (-kv[1], kv[0]))
            written_rows.append({
                "type": name,
                "pages": len(wprimary.get(name, ())),
                "kib": len(wprimary.get(name, ())) * kib,
                "bytes": w_bytes.get(name, 0),
                "immortal_bytes": w.w_imm.get(name, 0),
                "objects": w.w_objects.get(name, 0),
                "offsets": dict(top_offs[:8]),
                "immortal_offsets": dict(top_imm[:8])})
        written_rows.sort(key=lambda r: (-r["pages"], -r["bytes"],
                                         r["type"]))
        written_pages = wprimary

    # Copied pymalloc pages against the state of the parent's pools:
    # holes (free-listed blocks) and never used blocks are where the
    # worker's allocations land on inherited pages.
    pym = _RX["pymalloc"]
    by_cause = parent_census = free_pages = None
    free_in_parent = 0
    if compared and snap.pools:
        free_pages = _parent_free_pages(snap)
        if free_pages is not None:
            by_cause = {k: {"identical": 0, "immortal_written": 0,
                            "other": 0}
                        for k in ("free_in_parent", "full_in_parent")}
            for p, rx in zip(snap.copied, snap.page_region):
                if rx != pym:
                    continue
                k1 = "free_in_parent" if p in free_pages \
                    else "full_in_parent"
                k2 = "identical" if p in identical else \
                    "immortal_written" if p in page_immw else "other"
                by_cause[k1][k2] += 1
            free_in_parent = sum(by_cause["free_in_parent"].values())
        parent_census = pymalloc_census(snap.parent_pid)

    flags = {}
    if compared:
        for p in identical:
            flags[p << PAGE_SHIFT] = "S"
        for p in page_immw:
            flags[p << PAGE_SHIFT] = flags.get(p << PAGE_SHIFT, "") + "I"
        for p, only in page_alloc_only.items():
            if only:
                flags[p << PAGE_SHIFT] = flags.get(p << PAGE_SHIFT, "") + "A"
        for p in page_hdr:
            flags[p << PAGE_SHIFT] = flags.get(p << PAGE_SHIFT, "") + "H"
    if free_pages:
        for p, rx in zip(snap.copied, snap.page_region):
            if rx == pym and p in free_pages:
                flags[p << PAGE_SHIFT] = (flags.get(p << PAGE_SHIFT, "")
                                          + free_pages[p])

    total = snap.copied_pages
    regions = []
    for rx, (key, label) in enumerate(REGIONS):
        n = len(reg_pages[rx])
        regions.append({
            "region": key, "label": label, "pages": n, "kib": n * kib,
            "share": round(n / total, 4) if total else 0.0,
            "no_object": reg_noobj[rx],
            "identical": reg_ident[rx] if compared else None,
            "alloc_only": reg_alloc[rx] if compared else None,
            "immortal_written": reg_immw[rx] if compared else None,
            "free_in_parent": (free_in_parent if by_cause is not None
                               and key == "pymalloc" else None)})
    region_pages = {REGION_KEYS[rx]: reg_pages[rx] for rx in range(nreg)}

    if _is_cowpy():
        objects_note = ("gc.get_objects(); cowpy lists frozen objects too")
    else:
        objects_note = ("gc.get_objects(); frozen objects are invisible on "
                        "stock CPython: %d frozen"
                        % (gc.get_freeze_count()
                           if hasattr(gc, "get_freeze_count") else -1))
    if follow_referents:
        objects_note += ", plus their referents"
    elif untracked:
        objects_note += (", plus %d visits of untracked referents (%d "
                         "distinct objects on copied pages)"
                         % (nref, nuntracked))
    if w.buffers or w.memfd is not None:
        objects_note += ", plus %d list/dict buffers on copied pages" % (
            w.buffers)
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
        "untracked": bool(untracked) and not follow_referents,
        "untracked_referents": nref,
        "untracked_found": nuntracked,
        "buffers_found": w.buffers,
        "buffer_errors": w.buffer_errors,
        "no_object_row": no_object,
        "python_image": snap.image,
        "python_image_base": snap.image_base,
        "pymalloc_pages": len(snap.pools),
        "pymalloc_pools": len({v[0] for v in snap.pools.values()}),
        "pool_note": snap.pool_note,
        "pymalloc_by_cause": by_cause,
        "parent_pymalloc": parent_census,
        "diff": snap.diff_method,
        "diff_note": snap.diff_note,
        "changed_pages": len(changed) if compared else None,
        "identical_pages": len(snap.identical) if compared else None,
        "changed_bytes": changed_bytes if compared else None,
        "snapshot_seconds": round(snap.seconds, 6),
        "compare_seconds": round(snap.diff_seconds, 6),
        "walk_seconds": round(walk_seconds, 6),
        "python": sys.version.split()[0] + (" (cowpy)" if _is_cowpy()
                                            else ""),
    }
    return AttributionReport(header, all_rows, primary, top, regions,
                             region_pages, written_rows, written_pages,
                             changed, no_object,
                             (snap.run_starts, snap.run_ends), flags)


# ---------------------------------------------------------- signal handler

DEFAULT_PATH_TEMPLATE = "/tmp/cowstat-attribution-{pid}.txt"
# Not SIGUSR1/SIGUSR2: pre-fork servers use them (gunicorn's master
# re-executes on SIGUSR2 and its workers reset it to the default action,
# which kills them).  SIGPWR is caught by gunicorn workers and ignored by
# its master.
DEFAULT_SIGNAL = getattr(signal, "SIGPWR", signal.SIGUSR2)


def install_signal_handler(signum=DEFAULT_SIGNAL,
                           path_template=DEFAULT_PATH_TEMPLATE, top=20,
                           parent_pid=None, follow_referents=False,
                           untracked=True, diff=True, detail=False):
    """Write a report to a file whenever this process receives SIGNUM.

    Install it in the master before forking: the workers inherit it.
    PATH_TEMPLATE may use {pid}, {ppid} and {time} (Unix seconds); a path
    ending in ".json" gets the JSON form (with "page_detail" if DETAIL),
    any other the text form.  The
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
                             follow_referents=follow_referents,
                             untracked=untracked, diff=diff)
                if path.endswith(".json"):
                    data = rep.to_json(detail, indent=1) + "\n"
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
