"""The attribution's first phase: which pages has this process copied
since its fork?  Read from /proc/self/pagemap (and the parent's), before
any Python object is walked, into mmap memory; each copied page is then
classified by region (pymalloc pools by their pool headers) and compared
byte by byte with the parent's page (/proc/PPID/mem).

Linux only; standard library only.
"""

import array
import mmap
import os
import struct
import sys
import time

from cowstat import CowstatError
from cowstat.maps import (PAGE_SHIFT, PAGE_SIZE, _64BIT, _RX, _image_path,
                          _preadv_into, _read_all, classify_maps,
                          parse_maps_all)
from cowstat.pymalloc import _POOL_SIZES, _read_pool

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
