"""pymalloc's pools, read from their pool headers through /proc/PID/mem:
the pool a page lies in (for the attribution's region table), the free
space of the parent's pools behind copied pages, and a census of a
process's pools (pymalloc_census()).

64-bit only; standard library only.
"""

import os
import struct

from cowstat.maps import (PAGE_SHIFT, PAGE_SIZE, _64BIT, _PTR_FMT,
                          _preadv_into, _read_all, parse_maps_all)

# pymalloc (Objects/obmalloc.c, Include/internal/pycore_obmalloc.h, 64-bit):
# 1 MiB arenas (256 KiB without USE_LARGE_ARENAS) carved into pools of
# 16 KiB (3.10+ with the radix tree) or 4 KiB, each starting with a
# struct pool_header; blocks of (szidx + 1) * 16 bytes, at most 512.
_POOL_SIZES = (16384, 4096)
_POOL_HDR = struct.Struct("=I4xQQQIIII")   # 48 bytes on 64-bit
_POOL_OVERHEAD = 48
_ALIGNMENT = 16
_SMALL_LIMIT = 512


def _parse_pool(data, base, pool_size):
    """(block size, count, freeblock, nextoffset) of the pymalloc
    pool_header DATA (at address BASE, pools of POOL_SIZE bytes), or None
    when it is not plausible."""
    if len(data) < _POOL_HDR.size:
        return None
    (count, freeblock, nextpool, prevpool, arenaindex, szidx, nextoffset,
     maxnext) = _POOL_HDR.unpack_from(data)
    if szidx >= _SMALL_LIMIT // _ALIGNMENT:
        return None
    size = (szidx + 1) * _ALIGNMENT
    if maxnext != pool_size - size:
        return None
    if not (_POOL_OVERHEAD + 2 * size <= nextoffset <= maxnext + size):
        return None
    if (nextoffset - _POOL_OVERHEAD) % size:
        return None
    if count > (pool_size - _POOL_OVERHEAD) // size:
        return None
    if freeblock and not (base + _POOL_OVERHEAD <= freeblock
                          < base + pool_size):
        return None
    return size, count, freeblock, nextoffset


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
    from _parse_pool) that hold a free block, as two sets: pages with a
    block on the pool's free list (a hole: freed, or the one block carved
    ahead), and pages with blocks never handed out (past nextoffset)."""
    size, count, freeblock, nextoffset = info
    holes = set()
    fb = freeblock
    for _ in range((pool_size - _POOL_OVERHEAD) // size + 1):
        off = fb - base
        if not fb or off < _POOL_OVERHEAD or off + size > pool_size \
                or (off - _POOL_OVERHEAD) % size:
            break
        holes.add(fb >> PAGE_SHIFT)
        holes.add((fb + size - 1) >> PAGE_SHIFT)
        fb = struct.unpack_from(_PTR_FMT, buf, off)[0]
    virgin = set()
    if nextoffset + size <= pool_size:
        virgin.update(range((base + nextoffset) >> PAGE_SHIFT,
                            (base + pool_size - 1 >> PAGE_SHIFT) + 1))
    return holes, virgin


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
    one), empty_pool_pages; or {"error": message}.  64-bit only."""
    where = "self" if pid is None else str(int(pid))
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
    out = dict(pools=0, pool_kib=0, empty_pools=0, used_kib=0, free_kib=0,
               virgin_kib=0, pools_with_holes=0, hole_pages=0,
               virgin_pages=0, empty_pool_pages=0)
    buf = bytearray(_POOL_HDR.size)
    view = memoryview(buf)
    pools = {ps: bytearray(ps) for ps in _POOL_SIZES}
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
                        size, count, freeblock, nextoffset = info
                        carved = (nextoffset - _POOL_OVERHEAD) // size
                        out["pools"] += 1
                        out["pool_kib"] += psize / 1024.0
                        if count == 0:
                            out["empty_pools"] += 1
                            out["empty_pool_pages"] += psize // PAGE_SIZE
                        else:
                            out["used_kib"] += count * size / 1024.0
                            holes, virgin = set(), set()
                            if carved > count:
                                try:
                                    got = _preadv_into(
                                        fd, memoryview(pool), base)
                                except OSError:
                                    got = 0
                                if got == psize:
                                    holes, virgin = _pool_free_pages(
                                        pool, base, psize, info)
                                    nfree = carved - count
                                    out["free_kib"] += nfree * size / 1024.0
                                    out["pools_with_holes"] += 1
                            elif nextoffset + size <= psize:
                                virgin = set(range(
                                    (base + nextoffset) >> PAGE_SHIFT,
                                    (base + psize - 1 >> PAGE_SHIFT) + 1))
                            out["hole_pages"] += len(holes)
                            out["virgin_pages"] += len(virgin - holes)
                            cap = (psize - _POOL_OVERHEAD) // size
                            out["virgin_kib"] += max(0, cap - carved) * \
                                size / 1024.0
                    base += psize
            if out["pools"]:
                break
    finally:
        view.release()
        os.close(fd)
    for k in ("pool_kib", "used_kib", "free_kib", "virgin_kib"):
        out[k] = round(out[k], 1)
    return out


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
                    holes, virgin = _pool_free_pages(buf, base, psize, info)
                    for p in virgin:
                        pages[p] = "V"
                    for p in holes:
                        pages[p] = "F"
                break
    finally:
        os.close(fd)
    return pages
