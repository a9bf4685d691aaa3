"""pymalloc's pools, read from their pool headers through /proc/PID/mem:
the pool a page lies in (for the attribution's region table), the free
space of the parent's pools behind copied pages, and a census of a
process's pools (pymalloc_census()).

The pool_header layout is CPython's (Include/internal/pycore_obmalloc.h),
plus cowpy's set-aside after fork (Objects/obmalloc_cow.c): in a forked
cowpy child, pools partly used at the fork are "set aside" (headers
untouched, in no usedpools[] list) and pools taken back from the
set-aside are "dropped" (nextoffset = POOL_SIZE + 1).  Both are pools and
counted as such.  The running interpreter says how pools are laid out
(sys._cow_alloc_stats()["pool_layout"] on cowpy: pool_layout()) and how
many pools it set aside; pymalloc_census() of this process cross-checks
its figures against the latter.  Which pools those are, and the pool
facts of another process, only the headers tell.

64-bit only; standard library only.
"""

import collections
import os
import struct
import sys

from cowstat.maps import (PAGE_SHIFT, PAGE_SIZE, _64BIT, _PTR_FMT,
                          _preadv_into, _read_all, parse_maps_all)

# pymalloc (Objects/obmalloc.c, Include/internal/pycore_obmalloc.h, 64-bit):
# 1 MiB arenas (256 KiB without USE_LARGE_ARENAS) carved into pools of
# 16 KiB (3.10+ with the radix tree) or 4 KiB, each starting with a
# struct pool_header; blocks of (szidx + 1) * ALIGNMENT bytes, at most
# SMALL_REQUEST_THRESHOLD.  On cowpy the running interpreter says all of
# that itself (sys._cow_alloc_stats()["pool_layout"], read from the
# compiler): pool_layout() takes it from there, and falls back to stock
# 3.13's 64-bit values (_BUILTIN_LAYOUT) on other interpreters.  A target
# process is assumed to be the same build as the reader, or stock 3.13.
_BUILTIN_LAYOUT = {
    "pool_size": 16384, "arena_size": 1 << 20, "alignment": 16,
    "small_request_threshold": 512,
    "pool_overhead": 48, "header_size": 48, "pointer_size": 8,
    # cowpy's dropped pool (Include/internal/pycore_obmalloc_cow.h):
    # nextoffset = POOL_SIZE + 1, a value stock never uses.
    "dropped_nextoffset": 16385,
    # struct pool_header: ref.count (padded to a pointer), freeblock,
    # nextpool, prevpool, arenaindex, szidx, nextoffset, maxnextoffset.
    "fields": {"count": (0, 4), "freeblock": (8, 8), "nextpool": (16, 8),
               "prevpool": (24, 8), "arenaindex": (32, 4),
               "szidx": (36, 4), "nextoffset": (40, 4),
               "maxnextoffset": (44, 4)},
}
_FIELD_ORDER = ("count", "freeblock", "nextpool", "prevpool", "arenaindex",
                "szidx", "nextoffset", "maxnextoffset")


def pool_layout():
    """(layout, source): the pool facts of this interpreter's build, from
    sys._cow_alloc_stats()["pool_layout"] ("runtime"), else stock 3.13's
    ("built-in")."""
    stats = getattr(sys, "_cow_alloc_stats", None)
    try:
        layout = stats()["pool_layout"] if stats is not None else None
    except Exception:
        layout = None
    if isinstance(layout, dict):
        return layout, "runtime"
    return _BUILTIN_LAYOUT, "built-in"


def _header_struct(layout, names):
    """A struct.Struct reading the pool_header fields NAMES (in that
    order, by ascending offset) from a buffer that starts at the header,
    with pad bytes between them."""
    fmt, pos = "=", 0
    for name in names:
        off, size = layout["fields"][name]
        if off < pos:
            raise ValueError("pool_header fields out of order: %s" % name)
        fmt += "%dx" % (off - pos) if off > pos else ""
        fmt += {4: "I", 8: "Q"}[size]
        pos = off + size
    return struct.Struct(fmt)


POOL_LAYOUT, POOL_LAYOUT_SOURCE = pool_layout()
# The reader's own pool size first, then stock's other ones.
_POOL_SIZES = (POOL_LAYOUT["pool_size"],) + tuple(
    ps for ps in (16384, 4096) if ps != POOL_LAYOUT["pool_size"])
_POOL_HDR = _header_struct(POOL_LAYOUT, _FIELD_ORDER)
_POOL_OVERHEAD = POOL_LAYOUT["pool_overhead"]
_ALIGNMENT = POOL_LAYOUT["alignment"]
_SMALL_LIMIT = POOL_LAYOUT["small_request_threshold"]
# Added to a pool's size, the nextoffset that marks a dropped pool.
_DROPPED_EXTRA = POOL_LAYOUT["dropped_nextoffset"] - POOL_LAYOUT["pool_size"]
# nextpool and prevpool of a pool_header, and of the head of a usedpools[]
# list: a fake pool_header in the allocator's state (PTA() in
# pycore_obmalloc_init.h) whose nextpool and prevpool are the list's first
# and last pools.
_HEAD_LINKS = _header_struct(POOL_LAYOUT, ("nextpool", "prevpool"))

# A parsed pool_header (_parse_pool()).  DROPPED: cowpy's "dropped" pool
# (Include/internal/pycore_obmalloc_cow.h): a forked child took the pool
# back from its set-aside at the first free of one of its blocks and
# abandoned its inherited free list and never-used tail; it marks that
# with nextoffset = POOL_SIZE + 1, a value stock never uses.  Every block
# of a dropped pool is in use, on the free list (freed since), or
# abandoned until the pool is empty again.
_Pool = collections.namedtuple(
    "_Pool", "size count freeblock nextoffset nextpool prevpool dropped")


def _parse_pool(data, base, pool_size):
    """The pymalloc pool_header DATA (at address BASE, pools of POOL_SIZE
    bytes) as a _Pool (size, count, freeblock, nextoffset, nextpool,
    prevpool, dropped), or None when it is not plausible."""
    if len(data) < _POOL_HDR.size:
        return None
    (count, freeblock, nextpool, prevpool, arenaindex, szidx, nextoffset,
     maxnext) = _POOL_HDR.unpack_from(data)
    if szidx >= _SMALL_LIMIT // _ALIGNMENT:
        return None
    size = (szidx + 1) * _ALIGNMENT
    if maxnext != pool_size - size:
        return None
    dropped = nextoffset == pool_size + _DROPPED_EXTRA
    if not dropped:
        if not (_POOL_OVERHEAD + 2 * size <= nextoffset <= maxnext + size):
            return None
        if (nextoffset - _POOL_OVERHEAD) % size:
            return None
    if count > (pool_size - _POOL_OVERHEAD) // size:
        return None
    if freeblock and not (base + _POOL_OVERHEAD <= freeblock
                          < base + pool_size):
        return None
    return _Pool(size, count, freeblock, nextoffset, nextpool, prevpool,
                 dropped)


def _carved(info, pool_size):
    """Blocks of the pool (header INFO) ever handed out or carved ahead:
    all of them in a dropped pool (it has no never-used tail)."""
    if info.dropped:
        return (pool_size - _POOL_OVERHEAD) // info.size
    return (info.nextoffset - _POOL_OVERHEAD) // info.size


def _read_pool(memfd, base, pool_size):
    """Return the block size of the pymalloc pool at BASE, or 0 when the
    pool_header there is not plausible."""
    try:
        data = os.pread(memfd, _POOL_HDR.size, base)
    except OSError:
        return 0
    info = _parse_pool(data, base, pool_size)
    return info[0] if info else 0


def _pool_free_pages(buf, base, pool_size, info):
    """Page numbers of the pool at BASE (its bytes in BUF, header INFO
    from _parse_pool) that hold a free block, as two sets, and the number
    of blocks on the free list: pages with a block on the pool's free list
    (a hole: freed, or the one block carved ahead), and pages with blocks
    never handed out (past nextoffset; none in a dropped pool)."""
    size, nextoffset = info.size, info.nextoffset
    holes = set()
    nfree = 0
    fb = info.freeblock
    for _ in range((pool_size - _POOL_OVERHEAD) // size + 1):
        off = fb - base
        if not fb or off < _POOL_OVERHEAD or off + size > pool_size \
                or (off - _POOL_OVERHEAD) % size:
            break
        nfree += 1
        holes.add(fb >> PAGE_SHIFT)
        holes.add((fb + size - 1) >> PAGE_SHIFT)
        fb = struct.unpack_from(_PTR_FMT, buf, off)[0]
    virgin = set()
    if nextoffset + size <= pool_size:
        virgin.update(range((base + nextoffset) >> PAGE_SHIFT,
                            (base + pool_size - 1 >> PAGE_SHIFT) + 1))
    return holes, virgin, nfree


def _aside_pools(fd, partly, bases):
    """The pools of PARTLY ({base: (nextpool, prevpool, count, freeblock,
    ...)} from the headers: the pools in use with a free block) that are
    in no usedpools[] list, i.e. that pymalloc does not allocate from.

    A partly used pool outside every list is one that cowpy set aside at
    a fork (Include/internal/pycore_obmalloc_cow.h): the child emptied the
    lists without writing the pools' headers, so their links are stale;
    they still lead to a list head, but no head leads to them.  (On stock
    CPython every partly used pool is in a list.)  A list's head is a
    fake pool_header in the allocator's state: an address that is no pool
    (not in BASES).  Each list is followed from its head through FD,
    reading the links as they are now: in this process the census's own
    allocations move the pools of a few size classes in and out of their
    lists meanwhile, so a pool counts as aside only if its header has not
    changed since it was read (an aside pool's header is never written:
    a free in it takes it back first)."""
    heads = set()
    for links in partly.values():
        for addr in links[:2]:
            if addr not in bases:
                heads.add(addr)
    buf = bytearray(_HEAD_LINKS.size)
    view = memoryview(buf)

    def read_next(addr):
        try:
            if _preadv_into(fd, view, addr) != len(buf):
                return None
        except (OSError, OverflowError, ValueError):
            return None
        return _HEAD_LINKS.unpack_from(buf)[0]

    def snapshot_next(addr):
        links = partly.get(addr)
        return links[0] if links is not None else read_next(addr)

    # Three walks, whose union counts: a pool that becomes empty while the
    # census walks past it gets a new nextpool (its arena's free pools),
    # which ends that walk early.  No walk reaches an aside pool: no pool
    # in a list links to one.
    linked = set()
    try:
        for next_of in (read_next, snapshot_next, read_next):
            for head in heads:
                seen = set()
                pool = next_of(head)
                while pool != head and pool in bases and pool not in seen:
                    seen.add(pool)
                    pool = next_of(pool)
                linked |= seen
    finally:
        view.release()
    aside = []
    for base, links in partly.items():
        if base in linked:
            continue
        try:
            data = os.pread(fd, _POOL_HDR.size, base)
        except OSError:
            continue
        now = _POOL_HDR.unpack(data) if len(data) == _POOL_HDR.size \
            else None
        if now is not None and (now[2], now[3], now[0], now[1]) == links[:4]:
            aside.append(base)
    return aside


def runtime_alloc_stats():
    """What the running interpreter says about its pools: on cowpy,
    sys._cow_alloc_stats() (the set-aside after fork: "aside" pools and
    their "aside_free_blocks", "reclaimed", "mode", ...); {} on other
    interpreters."""
    stats = getattr(sys, "_cow_alloc_stats", None)
    if stats is None:
        return {}
    try:
        d = stats()
    except Exception:
        return {}
    return dict(d) if isinstance(d, dict) else {}


def pymalloc_census(pid=None, maps_text=None):
    """Count the pymalloc pools of process PID (default: this one) from
    /proc/PID/maps and /proc/PID/mem: every 16 KiB (or 4 KiB) boundary of
    its private anonymous mappings holding a plausible pool_header.

    Returns a dict: pools, pool_kib, empty_pools (no block in use),
    used_kib (blocks in use), free_kib (blocks on the free lists of pools
    in use: holes, and the one block each pool may have carved ahead),
    virgin_kib (never handed out, at the end of pools in use),
    pools_with_holes, and pages: hole_pages (pages with a free-listed
    block), virgin_pages (pages with never used blocks and no free-listed
    one), empty_pool_pages; or {"error": message}.  64-bit only.

    cowpy's set-aside after fork (PYTHONCOWALLOC=aside), in a forked
    process: aside_pools (pools in use that pymalloc does not allocate
    from: partly used at a fork and set aside, found as the partly used
    pools in no usedpools[] list), aside_free_blocks and aside_free_kib
    (their blocks not in use, as sys._cow_alloc_stats() counts them; also
    in free_kib, virgin_kib or dropped_kib); dropped_pools (pools in use taken back from the
    set-aside, which abandoned their inherited free blocks) and
    dropped_kib (those abandoned blocks: neither in use nor free until
    the pool is empty).  All 0 on stock CPython.

    For this process, on cowpy, also "runtime": sys._cow_alloc_stats(),
    and "runtime_check": "ok" when its aside and aside_free_blocks equal
    the census's, else what differs."""
    where = "self" if pid is None else str(int(pid))
    own = pid is None or int(pid) == os.getpid()
    try:
        if maps_text is None:
            maps_text = _read_all("/proc/%s/maps" % where)
        fd = os.open("/proc/%s/mem" % where, os.O_RDONLY)
    except OSError as e:
        return {"error": "cannot read /proc/%s: %s" % (where,
                                                       e.strerror or e)}
    if not _64BIT:
        os.close(fd)
        return {"error": "pool headers read on 64-bit only"}
    runtime = runtime_alloc_stats() if own else {}
    runtime.pop("pool_layout", None)
    out = dict(pools=0, pool_kib=0, empty_pools=0, used_kib=0, free_kib=0,
               virgin_kib=0, pools_with_holes=0, hole_pages=0,
               virgin_pages=0, empty_pool_pages=0, aside_pools=0,
               aside_free_blocks=0, aside_free_kib=0, dropped_pools=0,
               dropped_kib=0)
    buf = bytearray(_POOL_HDR.size)
    view = memoryview(buf)
    pools = {ps: bytearray(ps) for ps in _POOL_SIZES}
    bases = set()
    partly = {}     # base -> (nextpool, prevpool, count, freeblock,
                    #          block size, pool size)
    try:
        for psize in _POOL_SIZES:
            if psize < PAGE_SIZE:
                continue
            pool = pools[psize]
            for start, end, perms, inode, name, _ in parse_maps_all(
                    maps_text):
                if perms[:2] != "rw" or perms[3] != "p" or inode != "0" \
                        or (name and not name.startswith("[anon")):
                    continue
                base = (start + psize - 1) & ~(psize - 1)
                while base + psize <= end:
                    try:
                        got = _preadv_into(fd, view, base)
                    except OSError:
                        got = 0
                    info = _parse_pool(buf, base, psize) \
                        if got == len(buf) else None
                    if info is not None:
                        _count_pool(out, fd, pool, base, psize, info)
                        bases.add(base)
                        if info.count and info.freeblock:
                            partly[base] = (info.nextpool, info.prevpool,
                                            info.count, info.freeblock,
                                            info.size, psize)
                    base += psize
            if out["pools"]:
                break
        aside = _aside_pools(fd, partly, bases)
    finally:
        view.release()
        os.close(fd)
    for base in aside:
        _, _, count, _, size, psize = partly[base]
        nfree = (psize - _POOL_OVERHEAD) // size - count
        out["aside_pools"] += 1
        out["aside_free_blocks"] += nfree
        out["aside_free_kib"] += nfree * size / 1024.0
    for k in ("pool_kib", "used_kib", "free_kib", "virgin_kib",
              "aside_free_kib", "dropped_kib"):
        out[k] = round(out[k], 1)
    out["layout"] = POOL_LAYOUT_SOURCE
    if runtime:
        after = runtime_alloc_stats()
        after.pop("pool_layout", None)
        out["runtime"] = after
        if after != runtime:
            out["runtime_check"] = ("the set-aside changed during the "
                                    "census (aside %s -> %s)"
                                    % (runtime.get("aside"),
                                       after.get("aside")))
        elif (after.get("aside"), after.get("aside_free_blocks")) == (
                out["aside_pools"], out["aside_free_blocks"]):
            out["runtime_check"] = "ok"
        else:
            out["runtime_check"] = (
                "mismatch: sys._cow_alloc_stats() has %s pools aside with "
                "%s free blocks, the pool headers %d with %d"
                % (after.get("aside"), after.get("aside_free_blocks"),
                   out["aside_pools"], out["aside_free_blocks"]))
    return out


def _count_pool(out, fd, buf, base, psize, info):
    """Add the pool at BASE (header INFO) to the census OUT, reading the
    whole pool into BUF (through FD) when its free list is needed."""
    size, count = info.size, info.count
    out["pools"] += 1
    out["pool_kib"] += psize / 1024.0
    if count == 0:
        out["empty_pools"] += 1
        out["empty_pool_pages"] += psize // PAGE_SIZE
        return
    out["used_kib"] += count * size / 1024.0
    if info.dropped:
        out["dropped_pools"] += 1
    cap = (psize - _POOL_OVERHEAD) // size
    carved = _carved(info, psize)
    holes, virgin = set(), set()
    if carved > count:
        try:
            got = _preadv_into(fd, memoryview(buf), base)
        except OSError:
            got = 0
        if got == psize:
            holes, virgin, walked = _pool_free_pages(buf, base, psize, info)
            # A dropped pool's free list holds the blocks freed since it
            # was taken back; the rest of its free blocks are abandoned.
            nfree = walked if info.dropped else carved - count
            out["free_kib"] += nfree * size / 1024.0
            if nfree:
                out["pools_with_holes"] += 1
            if info.dropped:
                out["dropped_kib"] += (cap - count - nfree) * size / 1024.0
    elif info.nextoffset + size <= psize:
        virgin = set(range((base + info.nextoffset) >> PAGE_SHIFT,
                           (base + psize - 1 >> PAGE_SHIFT) + 1))
    out["hole_pages"] += len(holes)
    out["virgin_pages"] += len(virgin - holes)
    out["virgin_kib"] += max(0, cap - carved) * size / 1024.0


def _parent_free_pages(snap):
    """{page number: kind} for the pages of the copied pymalloc pages'
    pools on which the parent's pool (read from /proc/PPID/mem) has free
    space: "F" a block on the free list (a hole), "V" only blocks never
    handed out, "E" the whole pool is empty in the parent (any size class
    may reuse it); None if the parent's memory cannot be read."""
    try:
        fd = os.open("/proc/%d/mem" % snap.parent_pid, os.O_RDONLY)
    except OSError:
        return None
    pages = {}
    bufs = {ps: bytearray(ps) for ps in _POOL_SIZES if ps >= PAGE_SIZE}
    try:
        for base, size in sorted(set(snap.pools.values())):
            for psize, buf in bufs.items():
                if base % psize:
                    continue
                try:
                    got = _preadv_into(fd, memoryview(buf), base)
                except OSError:
                    got = 0
                if got != psize:
                    continue
                info = _parse_pool(buf, base, psize)
                if info is None:
                    continue
                if info[1] == 0:
                    for p in range(base >> PAGE_SHIFT,
                                   (base + psize) >> PAGE_SHIFT):
                        pages[p] = "E"
                elif info[0] == size:
                    holes, virgin, _ = _pool_free_pages(buf, base, psize,
                                                        info)
                    for p in virgin:
                        pages[p] = "V"
                    for p in holes:
                        pages[p] = "F"
                break
    finally:
        os.close(fd)
    return pages
