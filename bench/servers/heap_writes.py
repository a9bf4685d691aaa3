"""What a gunicorn worker changed in the glibc heap it shares with its
master (issue #16): each copied [heap] page, byte for byte against the
master's, by the state of the glibc chunk the changed bytes are in.

    python3 bench/servers/heap_writes.py STOCK COWPY [--stack django]
        [--mode cowpy-immortal] [--workers 2] [--duration 5] [--snapshot]
        [--env NAME=VALUE ...]

Starts the servers benchmark's STACK (bench/servers/run.py) under
gunicorn --preload in MODE, runs wrk for DURATION seconds, then compares
the first worker's copied heap pages (pagemap frames differ from the
master's) with the master's memory, 8 bytes at a time.  The chunks are
walked from the heap's start through their size fields; a changed word is
put in its chunk's header, in a chunk free in the master (glibc refilled
a hole), in a used chunk holding a Python object (by the type its
ob_type names) or in another used chunk (a buffer: key tables, list
items, C libraries' allocations).  Each page counts under the kind that
changed most of its words.  Large dict key tables written are detailed
(index slots, entries before the master's end, appended entries): the
interned-string dict is the largest.

The master keeps running after the fork, so by default "the master's
memory" is its memory now.  --snapshot has each worker save its own heap
right after the fork (a gunicorn post_fork hook, through an mmap'd
buffer, so that the copy itself allocates nothing on the heap) and
compares with that instead.  Root is needed (pagemap frame numbers)."""

import argparse
import bisect
import collections
import os
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "Tools", "cowstat"))
import run as servers  # noqa: E402
from cowstat import pages  # noqa: E402

PAGE = pages.PAGE_SIZE
SNAPSHOT_HOOK = '''
import mmap, os
def post_fork(server, worker):
    with open("/proc/self/maps") as f:
        heap = [l for l in f if l.rstrip().endswith("[heap]")][0]
    lo, hi = (int(x, 16) for x in heap.split()[0].split("-"))
    buf = mmap.mmap(-1, 1 << 20)
    src = os.open("/proc/self/mem", os.O_RDONLY)
    dst = os.open(os.path.join(os.environ["HEAP_WRITES_DIR"],
                               "heap-%d.bin" % os.getpid()),
                  os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(dst, lo.to_bytes(8, "little"))
    off = lo
    while off < hi:
        n = os.preadv(src, [memoryview(buf)[:min(1 << 20, hi - off)]], off)
        os.write(dst, memoryview(buf)[:n])
        off += n
    os.close(src)
    os.close(dst)
    buf.close()
'''


def heap_range(pid):
    for lo, hi, name in pages.writable_private_ranges(pid):
        if name == "[heap]":
            return lo, hi
    raise SystemExit("process %d has no [heap]" % pid)


_mem_fds = {}


def read_mem(pid, addr, size):
    """SIZE bytes at ADDR in process PID (one descriptor per process,
    opened at the first read)."""
    if pid not in _mem_fds:
        _mem_fds[pid] = os.open("/proc/%d/mem" % pid, os.O_RDONLY)
    return os.pread(_mem_fds[pid], size, addr)


class Heap:
    """The glibc chunks of a heap image MEM that starts at BASE."""

    def __init__(self, mem, base):
        self.mem, self.base = mem, base
        self.starts, self.sizes = [], []
        off = 0
        while off + 16 <= len(mem):
            size = struct.unpack_from("<Q", mem, off + 8)[0] & ~7
            if size < 32 or off + size >= len(mem):
                break           # the top chunk reaches the heap's end
            self.starts.append(base + off)
            self.sizes.append(size)
            off += size
        self.top = base + off

    def find(self, addr):
        i = bisect.bisect_right(self.starts, addr) - 1
        return i

    def used(self, i):
        nxt = self.starts[i] + self.sizes[i] - self.base
        if nxt + 16 > len(self.mem):
            return True
        return bool(struct.unpack_from("<Q", self.mem, nxt + 8)[0] & 1)

    def word(self, addr):
        return struct.unpack_from("<Q", self.mem, addr - self.base)[0]

    def free_bytes(self):
        return sum(s for i, s in enumerate(self.sizes) if not self.used(i))


class Names:
    """Type names read through ob_type -> tp_name in process PID."""

    def __init__(self, pid):
        self.pid, self.cache = pid, {}

    def __call__(self, tp):
        if tp not in self.cache:
            name = None
            if 4096 < tp < 1 << 47:
                try:
                    p = struct.unpack("<Q", read_mem(self.pid, tp + 24,
                                                     8))[0]
                    s = read_mem(self.pid, p, 80).split(b"\0")[0]
                    if s and all(32 < c < 127 for c in s):
                        name = s.decode()
                except (OSError, ValueError, OverflowError):
                    pass
            self.cache[tp] = name
        return self.cache[tp]


def keys_detail(heap, worker, start, size, copied):
    """A dict key table in chunk START: its header, and which of its
    words the worker changed (index, old entries, appended ones)."""
    hdr = struct.unpack_from("<QBBBxIqq", heap.mem, start + 16 - heap.base)
    refcnt, log2size, log2idx, kind, version, usable, nentries = hdr
    want = log2size + (0 if log2size < 8 else 1 if log2size < 16 else 2)
    if not 0 < refcnt < 1 << 20 or not 3 <= log2size < 31 \
            or log2idx != want:
        return None
    esz = 16 if kind else 24
    index = start + 16 + 32
    entries = index + (1 << log2idx)
    now = struct.unpack("<QBBBxIqq", read_mem(worker, start + 16, 32))
    counts = collections.Counter()
    for pg in copied:
        if pg + PAGE <= start or pg >= start + size:
            continue
        old = heap.mem[pg - heap.base:pg - heap.base + PAGE]
        new = read_mem(worker, pg, PAGE)
        for off in range(0, PAGE, 8):
            a = pg + off
            if start + 16 <= a < start + size and \
                    old[off:off + 8] != new[off:off + 8]:
                counts["index" if a < entries else
                       "old entries" if (a - entries) // esz < nentries
                       else "appended"] += 1
    return ("key table of %d slots (%s keys), %d entries in the master, "
            "%d now; words changed: %s"
            % (1 << log2size, "str" if kind else "any", nentries, now[6],
               dict(counts)))


def analyse(master, worker, snapshot):
    lo, hi = heap_range(master)
    wlo, whi = heap_range(worker)
    hi = min(hi, whi)
    if snapshot:
        with open(snapshot, "rb") as f:
            raw = f.read()
        assert int.from_bytes(raw[:8], "little") == lo
        mem = raw[8:8 + hi - lo]
        hi = lo + len(mem) // PAGE * PAGE
        print("reference: the worker's heap right after the fork")
    else:
        mem = read_mem(master, lo, hi - lo)
        print("reference: the master's heap now")
    heap = Heap(mem, lo)
    names = Names(master)
    pm_m = pages.read_pagemap(master, lo, hi, PAGE)
    pm_w = pages.read_pagemap(worker, lo, hi, PAGE)
    copied = [lo + i * PAGE for i, (m, w) in enumerate(zip(pm_m, pm_w))
              if m & w & pages.PRESENT
              and (m & pages.PFN_MASK) != (w & pages.PFN_MASK)]
    print("heap %d KiB, %d chunks; free in chunks %d KiB, top %d KiB; "
          "worker's copied heap pages: %d"
          % ((hi - lo) >> 10, len(heap.starts), heap.free_bytes() >> 10,
             (hi - heap.top) >> 10, len(copied)))
    by_page = collections.Counter()
    by_word = collections.Counter()
    chunk_pages = collections.Counter()
    for pg in copied:
        old = mem[pg - lo:pg - lo + PAGE]
        new = read_mem(worker, pg, PAGE)
        kinds = collections.Counter()
        chunks = set()
        for off in range(0, PAGE, 8):
            if old[off:off + 8] == new[off:off + 8]:
                continue
            a = pg + off
            i = heap.find(a)
            if a >= heap.top or i < 0:
                k = "top chunk (the master's, touched)"
            elif a - heap.starts[i] < 16:
                k = "chunk header"
            elif not heap.used(i):
                k = "chunk free in the master (a hole refilled)"
            else:
                tp = names(heap.word(heap.starts[i] + 24))
                k = ("object: %s" % tp if tp else
                     "used chunk, no object (buffer)")
            if a < heap.top and i >= 0:
                chunks.add(i)
            kinds[k] += 1
            by_word[k] += 1
        by_page[kinds.most_common(1)[0][0] if kinds else "identical"] += 1
        for i in chunks:
            chunk_pages[i] += 1
    print("\ncopied heap pages by the kind that changed most of their "
          "words (words changed, all pages)")
    for k, n in by_page.most_common(12):
        print("  %5d  %-50s %7d" % (n, k, by_word.get(k, 0)))
    print("\nchunks on the most copied pages")
    for i, n in chunk_pages.most_common(8):
        start, size = heap.starts[i], heap.sizes[i]
        what = (keys_detail(heap, worker, start, size, copied)
                if heap.used(i) else None)
        print("  %4d pages  chunk at %#x, %d bytes%s"
              % (n, start, size, ": " + what if what else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stock")
    ap.add_argument("cowpy")
    ap.add_argument("--stack", default="django",
                    choices=sorted(servers.GUNICORN))
    ap.add_argument("--mode", default="cowpy-immortal",
                    choices=sorted(servers.MODES))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--records", type=int, default=100000)
    ap.add_argument("--snapshot", action="store_true")
    ap.add_argument("--env", action="append", default=[],
                    metavar="NAME=VALUE",
                    help="more environment for the server (e.g. "
                    "PYTHONCOWALLOC=stock: the master's holes left open)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: pagemap frame numbers")
    which, extra = servers.MODES[args.mode]
    python = os.path.abspath({"stock": args.stock,
                              "cowpy": args.cowpy}[which])
    env = servers.base_env(extra, args.records)
    env.update(kv.split("=", 1) for kv in args.env)
    work = tempfile.mkdtemp(prefix="cowpy-heap-writes-")
    config = None
    if args.snapshot:
        config = os.path.join(work, "snapshot_hook.py")
        with open(config, "w") as f:
            f.write(SNAPSHOT_HOOK)
        env["HEAP_WRITES_DIR"] = work
    proc, port = servers.start_gunicorn(args.stack, python, env, work,
                                        args.workers, config=config)
    try:
        paths = servers.GUNICORN[args.stack][2]
        rate, requests, errors, _ = servers.run_wrk(port, paths,
                                                    args.duration)
        time.sleep(1)
        workers = servers.children(proc.pid)
        mem = servers.mem_of(workers, proc.pid)
        print("%s, %s: %d requests, %d errors; worker USS %s KiB"
              % (args.stack, args.mode, requests, errors,
                 [m["uss"] for m in mem]))
        snap = os.path.join(work, "heap-%d.bin" % workers[0])
        analyse(proc.pid, workers[0], snap if args.snapshot else None)
    finally:
        servers.stop(proc)


if __name__ == "__main__":
    main()
