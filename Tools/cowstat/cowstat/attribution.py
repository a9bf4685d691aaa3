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
"""

import array
import bisect
import gc
import json
import mmap
import os
import signal
import struct
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

# Rows of the "bytes changed" table that are not object types.
IDENTICAL_ROW = "(identical to the parent's page: transient writes)"
POOL_HEADER_ROW = "(pymalloc pool headers)"
OUTSIDE_ROW = ("(outside any object found: free blocks, malloc metadata, "
               "other buffers)")

# Out-of-line buffers found through their owner (3.11+ for dict keys).
LIST_ITEMS_TYPE = "list (item array)"
DICT_KEYS_TYPE = "dict (keys table)"

# Region keys (the order of the region table) and their descriptions.
REGIONS = (
    ("pymalloc", "pymalloc arenas: objects <= 512 bytes"),
    ("heap", "[heap], brk: glibc malloc (larger objects, buffers)"),
    ("anon", "other anonymous mmaps: large malloc blocks, arena slack"),
    ("stack", "stacks: [stack] and thread stacks"),
    ("python", "python image .data/.bss: static types, runtime state"),
    ("files", "other files' .data/.bss: libraries, extension modules"),
)
REGION_KEYS = tuple(k for k, _ in REGIONS)
_RX = {k: i for i, k in enumerate(REGION_KEYS)}

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

# Pages per pagemap read (4 KiB of entries): small reads into buffers
# allocated once, so that the snapshot allocates no large temporary
# objects (glibc would serve them from the inherited heap, copying pages
# and changing what the comparison with the parent sees).
_CHUNK_PAGES = 512

# Type flags (Include/object.h).
_TPFLAGS_INLINE_VALUES = 1 << 2         # 3.13+
_TPFLAGS_MANAGED_WEAKREF = 1 << 3       # 3.12+
_TPFLAGS_MANAGED_DICT = 1 << 4          # 3.11+
_TPFLAGS_HEAPTYPE = 1 << 9
_TPFLAGS_HAVE_GC = 1 << 14
_GC_HEADER = 2 * 8 if sys.maxsize > 2 ** 32 else 2 * 4
_PTR = 8 if sys.maxsize > 2 ** 32 else 4
_64BIT = sys.maxsize > 2 ** 32
_PTR_FMT = "=Q" if _64BIT else "=I"

# PEP 683 immortal objects (3.12+): the refcount is at least this.
_IMMORTAL_MIN = (1 << 30) - 1 if sys.version_info >= (3, 12) else None

# pymalloc (Objects/obmalloc.c, Include/internal/pycore_obmalloc.h, 64-bit):
# 1 MiB arenas (256 KiB without USE_LARGE_ARENAS) carved into pools of
# 16 KiB (3.10+ with the radix tree) or 4 KiB, each starting with a
# struct pool_header; blocks of (szidx + 1) * 16 bytes, at most 512.
_POOL_SIZES = (16384, 4096)
_POOL_HDR = struct.Struct("=I4xQQQIIII")   # 48 bytes on 64-bit
_POOL_OVERHEAD = 48
_ALIGNMENT = 16
_SMALL_LIMIT = 512

# PyDictKeysObject header, 3.11+: dk_refcnt, dk_log2_size,
# dk_log2_index_bytes, dk_kind, dk_version, dk_usable, dk_nentries.
_DK_HDR = struct.Struct("=qBBBxIqq")       # 32 bytes
_DK_LAYOUT = _64BIT and sys.version_info >= (3, 11)


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


def parse_maps_all(text):
    """Return every mapping of /proc/PID/maps TEXT (bytes or str) as
    (start, end, perms, inode, name, offset) tuples; name is "" when
    unnamed, offset the file offset."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        try:
            lo, hi = parts[0].split("-")
            start, end = int(lo, 16), int(hi, 16)
            offset = int(parts[2], 16)
        except ValueError:
            continue
        if end <= start or len(parts[1]) < 4:
            continue
        name = parts[5].strip() if len(parts) > 5 else ""
        out.append((start, end, parts[1], parts[4], name, offset))
    return out


_ELF_HDR = struct.Struct("<16sHHIQQQIHHHHHH")
_ELF_PHDR = struct.Struct("<IIQQQQQQ")


def elf_segment_end(path, map_start, map_offset):
    """End address of the writable PT_LOAD segment (its .data plus .bss)
    of the 64-bit little-endian ELF file PATH mapped at MAP_START from
    file offset MAP_OFFSET; None if it cannot be told."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        hdr = os.pread(fd, _ELF_HDR.size, 0)
        if len(hdr) != _ELF_HDR.size or hdr[:4] != b"\x7fELF" \
                or hdr[4] != 2 or hdr[5] != 1:
            return None
        fields = _ELF_HDR.unpack(hdr)
        phoff, phentsize, phnum = fields[5], fields[9], fields[10]
        if phentsize < _ELF_PHDR.size or not 0 < phnum < 4096:
            return None
        table = os.pread(fd, phentsize * phnum, phoff)
    except (OSError, ValueError, OverflowError):
        return None
    finally:
        os.close(fd)
    for k in range(phnum):
        chunk = table[k * phentsize:k * phentsize + _ELF_PHDR.size]
        if len(chunk) != _ELF_PHDR.size:
            break
        (p_type, p_flags, p_offset, p_vaddr, _, p_filesz, p_memsz,
         _) = _ELF_PHDR.unpack(chunk)
        if p_type != 1 or not p_flags & 2:             # PT_LOAD, PF_W
            continue
        if not (p_offset & ~(PAGE_SIZE - 1)) <= map_offset \
                <= p_offset + p_filesz:
            continue
        bias = map_start - map_offset + p_offset - p_vaddr
        end = bias + p_vaddr + p_memsz
        return (end + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    return None


def classify_maps(text, image=None, elf=False):
    """Return [(start, end, name, region)] of the private writable
    mappings of /proc/PID/maps TEXT, region being one of REGION_KEYS
    (never "pymalloc": arenas are told from other anonymous memory page
    by page, by their pool headers).

    IMAGE: the path of the file holding the interpreter's static objects
    (its mappings are "python", other files' "files").  An anonymous
    mapping that starts where a writable file mapping ends is that file's
    .bss, up to the end of the file's writable segment when ELF is true
    and the file's program headers say where it ends (the kernel merges
    later anonymous mmaps into the .bss mapping), else all of it.  An
    anonymous mapping right above an anonymous ``---p`` guard of at most
    64 KiB is a thread stack.
    """
    out = []
    prev = None
    for start, end, perms, inode, name, offset in parse_maps_all(text):
        p = prev
        prev = (start, end, perms, inode, name, offset)
        if perms[1] != "w" or perms[3] != "p":
            continue
        if inode != "0":
            region = "python" if image and name == image else "files"
        elif name == "[heap]":
            region = "heap"
        elif name.startswith("[stack"):
            region = "stack"
        elif name and not name.startswith("[anon:"):
            continue            # [vvar], [vdso], memfd, other specials
        else:
            region = "anon"
            if p is not None and p[1] == start:
                if p[3] != "0" and p[2][1] == "w":
                    region = "python" if image and p[4] == image \
                        else "files"                            # .bss
                    seg_end = elf_segment_end(p[4], p[0], p[5]) \
                        if elf else None
                    if seg_end is not None and start <= seg_end < end:
                        if seg_end > start:
                            out.append((start, seg_end, name or "[anon]",
                                        region))
                        start, region = seg_end, "anon"
                elif p[3] == "0" and p[2].startswith("---") \
                        and not p[4] and p[1] - p[0] <= 65536:
                    region = "stack"                    # guard page below
        out.append((start, end, name or "[anon]", region))
    return out


def _image_path(maps):
    """The file mapping holding the static type objects (the python
    executable, or libpython for a shared build)."""
    addr = id(int)
    for start, end, perms, inode, name, _ in maps:
        if start <= addr < end:
            return name if inode != "0" else None
    return None


def _preadv_into(fd, view, offset):
    """Read into the writable buffer VIEW at OFFSET; returns the bytes
    read (fewer at the end of the file)."""
    total = 0
    size = len(view)
    while total < size:
        if hasattr(os, "preadv"):
            n = os.preadv(fd, [view[total:]], offset + total)
        else:                                           # pragma: no cover
            data = os.pread(fd, size - total, offset + total)
            n = len(data)
            view[total:total + n] = data
        if not n:
            break
        total += n
    return total


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


class _ParentGone(Exception):
    pass


class _Buf:
    """A growable array of unsigned integers (struct format FMT) kept in
    anonymous shared mmap memory: fresh pages, so filling it writes no
    page this process shares with its parent (an array.array grows by
    realloc, into the inherited heap, copying pages and changing what the
    comparison with the parent sees).  ``view()``: a memoryview of the
    items (bisect, iteration, len, set() work on it)."""

    def __init__(self, fmt="Q", capacity=1024):
        self.fmt = fmt
        self.item = struct.calcsize(fmt)
        self.n = 0
        self.mm = self.mv = None
        self.cap = 0
        self._alloc(max(int(capacity), 16))

    def _alloc(self, cap):
        mm = mmap.mmap(-1, cap * self.item)
        mv = memoryview(mm).cast(self.fmt)
        if self.mv is not None:
            mv[:self.n] = self.mv[:self.n]
            self.mv.release()
            self.mm.close()
        self.mm, self.mv, self.cap = mm, mv, cap

    def append(self, value):
        if self.n == self.cap:
            self._alloc(self.cap * 2)
        self.mv[self.n] = value
        self.n += 1

    def __len__(self):
        return self.n

    def view(self):
        return self.mv[:self.n]


class Snapshot:
    """Page states of this process, taken before any object is walked.

    ``copied`` is a sorted sequence (a memoryview of unsigned 64-bit
    integers) of page numbers (address >> PAGE_SHIFT); ``page_region``
    the index in REGION_KEYS of each; ``pools`` maps the page number of a
    copied pymalloc page to (pool address, block size) and
    ``pool_blocks`` a pool address to its block size;
    ``run_starts``/``run_ends`` (addresses, sorted) the runs of bytes that
    differ from the parent's pages and ``identical`` the page numbers of
    copied pages that do not, when ``diff_method == "parent-mem"``.

    Nothing here allocates a large Python object before the page contents
    are read: buffers are allocated once, results go to mmap memory.
    """

    def __init__(self, parent_pid=None, diff=True):
        t0 = time.perf_counter()
        self.pid = os.getpid()
        self.copied = ()
        self.page_region = ()
        self.regions = []
        self.region_of_mapping = []
        self.image = None
        self.image_base = None
        self.scanned_pages = 0
        self.present_pages = 0
        self.exclusive_pages = 0
        self.new_pages = 0      # exclusive, but the parent has no page there
        self.method = "parent"
        self.method_note = ""
        self.parent_pid = parent_pid
        self.pools = {}
        self.pool_blocks = {}
        self.pool_note = ""
        self.run_starts = ()
        self.run_ends = ()
        self.identical = ()
        self.diff_method = "off"
        self.diff_note = "not requested"
        self.diff_seconds = 0.0

        for path in ("/proc/self/maps", "/proc/self/pagemap"):
            try:
                if path.endswith("maps"):
                    text = _read_all(path)
                    maps = parse_maps_all(text)
                    self.image = _image_path(maps)
                    self.image_base = min(
                        [m[0] - m[5] for m in maps if self.image and
                         m[4] == self.image] or [None])
                    classified = classify_maps(text, self.image, elf=True)
                    self.regions = [(s, e, n) for s, e, n, _ in classified]
                    self.region_of_mapping = [_RX[c] for _, _, _, c
                                              in classified]
                    del text, maps, classified
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
                self._scan(fd, None)
        finally:
            os.close(fd)
            if pfd is not None:
                os.close(pfd)
        self.seconds = time.perf_counter() - t0

        # Still before the walk: read-only looks at memory.
        t1 = time.perf_counter()
        memfd = None
        pool_base = pool_size = None
        try:
            memfd = os.open("/proc/self/mem", os.O_RDONLY)
        except OSError as e:
            self.pool_note = ("cannot read /proc/self/mem: %s"
                              % (e.strerror or e))
        try:
            if memfd is not None:
                if _64BIT:
                    pool_base, pool_size = self._find_pools(memfd)
                else:
                    self.pool_note = "pool headers read on 64-bit only"
            if diff:
                self._diff(memfd)
        finally:
            if memfd is not None:
                os.close(memfd)
        # Now Python objects may be allocated.
        if pool_base is not None:
            for p, base, size in zip(self.copied, pool_base, pool_size):
                if size:
                    self.pools[p] = (base, size)
                    self.pool_blocks[base] = size
        self.diff_seconds = time.perf_counter() - t1

    def _scan(self, fd, pfd):
        """Fill self.copied, self.page_region and the page counters."""
        self.scanned_pages = self.present_pages = 0
        self.exclusive_pages = self.new_pages = 0
        bound = sum(((e - 1) >> PAGE_SHIFT) - (s >> PAGE_SHIFT) + 1
                    for s, e, _ in self.regions)
        copied = _Buf("Q", bound)
        page_region = _Buf("B", bound)
        buf = bytearray(_CHUNK_PAGES * 8)
        pbuf = bytearray(_CHUNK_PAGES * 8)
        view = memoryview(buf)
        pview = memoryview(pbuf)
        parent_has = _PRESENT | _SWAPPED
        for (start, end, _), rx in zip(self.regions,
                                       self.region_of_mapping):
            first = start >> PAGE_SHIFT
            last = (end - 1) >> PAGE_SHIFT
            page = first
            while page <= last:
                n = min(_CHUNK_PAGES, last + 1 - page)
                got = _preadv_into(fd, view[:n * 8], page * 8)
                if got < n * 8:
                    buf[got:n * 8] = bytes(n * 8 - got)
                tops = buf[_TOP_BYTE:n * 8:8]
                self.scanned_pages += n
                self.present_pages += tops.translate(_T_PRESENT).count(1)
                excl = tops.translate(_T_EXCLUSIVE)
                i = excl.find(1)
                if i >= 0:
                    self.exclusive_pages += excl.count(1)
                    if pfd is not None:
                        pgot = _preadv_into(pfd, pview[:n * 8], page * 8)
                        if not pgot:
                            # The parent exited: its pagemap reads empty.
                            raise _ParentGone()
                        if pgot < n * 8:
                            pbuf[pgot:n * 8] = bytes(n * 8 - pgot)
                    while i >= 0:
                        if pfd is None or \
                                pbuf[i * 8 + _TOP_BYTE] & parent_has:
                            copied.append(page + i)
                            page_region.append(rx)
                        else:
                            self.new_pages += 1
                        i = excl.find(1, i + 1)
                page += n
        view.release()
        pview.release()
        self.copied = copied.view()
        self.page_region = page_region.view()
        self._bufs = [copied, page_region]
        # Mappings come sorted from /proc, but be sure.
        c = self.copied
        if any(c[k] >= c[k + 1] for k in range(len(c) - 1)):
            order = sorted(range(len(c)), key=c.__getitem__)
            self.copied = array.array("Q", (c[k] for k in order))
            self.page_region = array.array("B", (self.page_region[k]
                                                 for k in order))

    def _find_pools(self, memfd):
        """Find the copied pages that lie in a pymalloc pool (a plausible
        pool_header at the 16 KiB, else 4 KiB, boundary below them) and
        reclassify them as "pymalloc".  Every region but the heap and the
        stacks is looked at: the kernel merges adjacent anonymous mmaps,
        so an arena can share a mapping with a library's .bss.

        Returns (pool address, block size) views parallel to copied (0
        where not in a pool)."""
        skip = (_RX["heap"], _RX["stack"])
        pym = _RX["pymalloc"]
        n = len(self.copied)
        bases = _Buf("Q", n)
        sizes = _Buf("H", n)
        region = self.page_region
        last = {}                   # pool size -> (base, block size)
        for k in range(n):
            base = size = 0
            if region[k] not in skip:
                addr = self.copied[k] << PAGE_SHIFT
                for psize in _POOL_SIZES:
                    if psize < PAGE_SIZE:
                        continue
                    b = addr & ~(psize - 1)
                    prev = last.get(psize)
                    if prev is not None and prev[0] == b:
                        bsize = prev[1]
                    else:
                        bsize = _read_pool(memfd, b, psize)
                        last[psize] = (b, bsize)
                    if bsize:
                        base, size = b, bsize
                        region[k] = pym
                        break
            bases.append(base)
            sizes.append(size)
        self._bufs += [bases, sizes]
        return bases.view(), sizes.view()

    def _diff(self, memfd):
        """Compare each copied page with the parent's (/proc/PPID/mem),
        8-byte word by word: a run of changed bytes goes from the first
        to the last changed byte of a word, and runs of adjacent words
        merge."""
        if self.method != "parent":
            self.diff_method = "unavailable"
            self.diff_note = "needs the parent (%s)" % self.method_note
            return
        if memfd is None:
            self.diff_method = "unavailable"
            self.diff_note = self.pool_note
            return
        path = "/proc/%d/mem" % self.parent_pid
        try:
            pfd = os.open(path, os.O_RDONLY)
        except OSError as e:
            self.diff_method = "unavailable"
            self.diff_note = "cannot read %s: %s" % (path, e.strerror or e)
            return
        n = len(self.copied)
        starts = _Buf("Q", max(4096, 16 * n))
        ends = _Buf("Q", max(4096, 16 * n))
        identical = _Buf("Q", max(16, n))
        own = bytearray(PAGE_SIZE)
        par = bytearray(PAGE_SIZE)
        ob, pb = memoryview(own), memoryview(par)
        ow, pw = ob.cast("Q"), pb.cast("Q")
        little = sys.byteorder == "little"
        block = 64
        unreadable = 0
        gone = False
        try:
            for p in self.copied:
                addr = p << PAGE_SHIFT
                try:
                    n1 = _preadv_into(memfd, ob, addr)
                    n2 = _preadv_into(pfd, pb, addr)
                except OSError:
                    unreadable += 1
                    continue
                if n1 != PAGE_SIZE or n2 != PAGE_SIZE:
                    if n2 == 0 and not os.path.exists(path):
                        gone = True
                        break
                    unreadable += 1
                    continue
                if own == par:
                    identical.append(p)
                    continue
                rs = re_ = -1
                for off in range(0, PAGE_SIZE, block):
                    if ob[off:off + block] == pb[off:off + block]:
                        continue
                    for k in range(off >> 3, (off + block) >> 3):
                        a = ow[k]
                        b = pw[k]
                        if a == b:
                            continue
                        x = a ^ b
                        low = ((x & -x).bit_length() - 1) >> 3
                        high = (x.bit_length() - 1) >> 3
                        if little:
                            lo, hi = low, high + 1
                        else:                           # pragma: no cover
                            lo, hi = 7 - high, 8 - low
                        s = addr + (k << 3) + lo
                        e = addr + (k << 3) + hi
                        if s == re_:
                            re_ = e
                        else:
                            if rs >= 0:
                                starts.append(rs)
                                ends.append(re_)
                            rs, re_ = s, e
                if rs >= 0:
                    starts.append(rs)
                    ends.append(re_)
        finally:
            os.close(pfd)
            del ow, pw
            ob.release()
            pb.release()
        if gone:
            self.diff_method = "unavailable"
            self.diff_note = ("the parent %d exited during the snapshot"
                              % self.parent_pid)
            return
        self.run_starts = starts.view()
        self.run_ends = ends.view()
        self.identical = identical.view()
        self._bufs += [starts, ends, identical]
        self.diff_method = "parent-mem"
        self.diff_note = ("each copied page compared with the parent's "
                          "page at the same address (%s)" % path)
        if unreadable:
            self.diff_note += "; %d page(s) unreadable" % unreadable

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


# ------------------------------------------------------------------ report

class AttributionReport:
    """The result of :func:`report`.

    Attributes:
      header: dict (pid, parent_pid, method, copied_pages, copied_kib, ...)
      rows: list of dicts, one per type, sorted by pages descending, the
        top N plus an "(N other types)" row so pages add up to the total:
        type, pages (primary attribution), kib, touched (pages holding at
        least one byte of the type), objects (objects of the type on
        copied pages), immortal (those of them that are immortal)
      all_rows: every row, untruncated
      pages: {type: sorted list of page addresses attributed to it}
      no_object_row: the name of the row of pages without any object
      regions: list of dicts, one per region of REGION_KEYS (the order of
        the table): region, label, pages, kib, share, no_object (pages
        with no object found), and when the page contents were compared
        with the parent's: identical (no byte differs), alloc_only (no
        changed byte inside an object found), immortal_written (a changed
        byte inside an immortal object); else those three are None
      region_pages: {region: sorted list of page addresses}
      written: list of dicts, the bytes that differ from the parent's
        pages, by the type of the object holding them (plus the rows
        IDENTICAL_ROW, POOL_HEADER_ROW, OUTSIDE_ROW): type, pages (pages
        on which the type holds most changed bytes; they add up to the
        total), bytes, immortal_bytes, objects (objects with a changed
        byte), offsets ({"+8": bytes, "items": bytes}, the 8 largest:
        offsets from the object's address, by 8-byte word for its fixed
        part, "items" beyond it), immortal_offsets (the same, for the
        bytes in immortal objects only); empty when not compared
      all_written: every written row, untruncated
      written_pages: {row: sorted list of page addresses}
      changed: {page address: changed bytes} for pages that differ
      text: the formatted report (also str(report))
      to_dict(detail=True) / to_json(detail=True): also one entry per
        copied page (page_detail())
    """

    def __init__(self, header, all_rows, pages, top, regions=None,
                 region_pages=None, written=None, written_pages=None,
                 changed=None, no_object_row=NO_OBJECT_ROW, runs=((), ()),
                 flags=None):
        self.header = header
        self._runs = runs
        self._flags = flags or {}
        self.all_rows = all_rows
        self.pages = pages
        self.no_object_row = no_object_row
        self.rows = self._truncate(all_rows, top, ("touched",),
                                   ("objects", "immortal"))
        self.regions = regions or []
        self.region_pages = region_pages or {}
        self.all_written = written or []
        self.written = self._truncate(self.all_written, top,
                                      ("offsets", "immortal_offsets"),
                                      ("bytes", "immortal_bytes",
                                       "objects"))
        self.written_pages = written_pages or {}
        self.changed = changed or {}
        self.text = _format(header, self.rows, self.regions, self.written)

    @staticmethod
    def _truncate(all_rows, top, none_keys, sum_keys):
        rows = all_rows[:top] if top is not None and top >= 0 else all_rows
        rest = all_rows[len(rows):]
        if rest:
            n = sum(r["pages"] for r in rest)
            extra = {"type": "(%d other types)" % len(rest),
                     "pages": n, "kib": n * PAGE_SIZE // 1024}
            for k in none_keys:
                extra[k] = None
            for k in sum_keys:
                extra[k] = sum(r.get(k) or 0 for r in rest)
            rows = rows + [extra]
        return rows

    def __str__(self):
        return self.text

    def to_dict(self, detail=False):
        """The header and the tables; DETAIL adds "page_detail", one entry
        per copied page: [address, region, type (most bytes), type (most
        changed bytes, or None), changed bytes, [[offset in the page,
        length] of the first 32 runs of changed bytes], flags], flags
        holding "S" (same bytes as the parent's page), "I" (a changed
        byte in an immortal object), "A" (every changed byte outside the
        objects found), "H" (changed bytes in a pymalloc pool header),
        and for pymalloc pages with free space in the parent's pool: "F"
        (a block on the pool's free list: a hole), "V" (only blocks never
        handed out), "E" (the pool is empty in the parent)."""
        d = {"header": self.header, "rows": self.rows,
             "regions": self.regions, "written": self.written}
        if detail:
            d["page_detail"] = self.page_detail()
        return d

    def page_detail(self):
        primary = {a: t for t, addrs in self.pages.items() for a in addrs}
        writer = {a: t for t, addrs in self.written_pages.items()
                  for a in addrs}
        runs = {}
        starts, ends = self._runs
        for s, e in zip(starts, ends):
            page = s >> PAGE_SHIFT << PAGE_SHIFT
            lst = runs.setdefault(page, [])
            if len(lst) < 32:
                lst.append([s - page, e - s])
        out = []
        for region, addrs in self.region_pages.items():
            for a in addrs:
                out.append([a, region, primary.get(a), writer.get(a),
                            self.changed.get(a, 0), runs.get(a, []),
                            self._flags.get(a, "")])
        out.sort()
        return out

    def to_json(self, detail=False, **kw):
        return json.dumps(self.to_dict(detail), **kw)


def _format(h, rows, regions=(), written=()):
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
    if regions:
        out.append("")
        out.append("copied pages by region (the mapping of /proc/self/maps "
                   "each page lies in%s):"
                   % ("; pymalloc pages found by their pool header"
                      if not h.get("pool_note") else
                      "; pymalloc arenas not told apart: %s"
                      % h["pool_note"]))
        diff = h.get("diff") == "parent-mem"
        fmt = "%-8s %8s %8s %6s %9s %9s %10s %10s  %s"
        out.append(fmt % ("REGION", "PAGES", "KiB", "SHARE", "NO_OBJECT",
                          "IDENTICAL", "ALLOC_ONLY", "IMMORTAL_W",
                          "DESCRIPTION"))
        total = h["copied_pages"]

        def opt(v):
            return "-" if v is None else str(v)
        for r in regions:
            out.append(fmt % (r["region"], r["pages"], r["kib"],
                              "%.1f%%" % (100.0 * r["share"]),
                              r["no_object"], opt(r["identical"]),
                              opt(r["alloc_only"]),
                              opt(r["immortal_written"]), r["label"]))
        out.append(fmt % (
            "TOTAL", total, total * kib, "100.0%" if total else "0.0%",
            sum(r["no_object"] for r in regions),
            opt(sum(r["identical"] for r in regions) if diff else None),
            opt(sum(r["alloc_only"] for r in regions) if diff else None),
            opt(sum(r["immortal_written"] for r in regions)
                if diff else None), ""))
        out.append("(NO_OBJECT: no object found on the page; IDENTICAL: "
                   "same bytes as the parent's page; ALLOC_ONLY: every "
                   "changed byte outside the objects found; IMMORTAL_W: a "
                   "changed byte inside an immortal object)")
        bc = h.get("pymalloc_by_cause")
        if bc:
            out.append(
                "pymalloc pages by the parent's pool: %d had a free or "
                "never used block there in the parent (identical %d, "
                "immortal written %d, other %d); %d had none (identical "
                "%d, immortal written %d, other %d)" % (
                    sum(bc["free_in_parent"].values()),
                    bc["free_in_parent"]["identical"],
                    bc["free_in_parent"]["immortal_written"],
                    bc["free_in_parent"]["other"],
                    sum(bc["full_in_parent"].values()),
                    bc["full_in_parent"]["identical"],
                    bc["full_in_parent"]["immortal_written"],
                    bc["full_in_parent"]["other"]))
        pc = h.get("parent_pymalloc")
        if pc and "error" not in pc:
            out.append(
                "parent's pymalloc pools now: %d (%.0f KiB): blocks in use "
                "%.0f KiB, free-listed (holes) %.0f KiB in %d pools on %d "
                "pages, never used %.0f KiB (%d more pages), %d empty pools"
                % (pc["pools"], pc["pool_kib"], pc["used_kib"],
                   pc["free_kib"], pc["pools_with_holes"],
                   pc["hole_pages"], pc["virgin_kib"], pc["virgin_pages"],
                   pc["empty_pools"]))
    out.append("")
    if h.get("diff") == "parent-mem":
        out.append("bytes changed since the fork: %d pages differ from the "
                   "parent's (%d bytes changed), %d identical; %s"
                   % (h["changed_pages"], h["changed_bytes"],
                      h["identical_pages"], h["diff_note"]))
        width = max([len("TYPE")] + [len(r["type"]) for r in written])
        width = min(width, 70)
        fmt = "%-*s %8s %10s %10s %9s  %s"
        out.append(fmt % (width, "TYPE", "PAGES", "BYTES", "IMMORTAL",
                          "OBJECTS", "OFFSETS (changed bytes)"))
        for r in written:
            offs = r.get("offsets") or {}
            out.append(fmt % (
                width, r["type"], r["pages"],
                "" if r.get("bytes") is None else r["bytes"],
                "" if r.get("immortal_bytes") is None
                else r["immortal_bytes"],
                "" if r.get("objects") is None else r["objects"],
                " ".join("%s:%d" % kv for kv in list(offs.items())[:6])))
        out.append(fmt % (width, "TOTAL", h["copied_pages"],
                          h["changed_bytes"], "", "", ""))
    elif "diff" in h:
        out.append("bytes changed since the fork: not compared (%s)"
                   % h.get("diff_note", ""))
    return "\n".join(out) + "\n"


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
