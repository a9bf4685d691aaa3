"""Tests of cowstat's attribution (which object wrote each copied page)
and of its pymalloc census.  Split from test_cowstat.py; run from the
repository root with either interpreter:
    build/cowpy/bin/python3 -m unittest -v tests/test_cowstat_attribution.py
    build/stock/bin/python3 -m unittest -v tests/test_cowstat_attribution.py
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

from tests.cowstat_support import HAVE_PROC, PAGE, absent_pid, tool_env
from cowstat import attribution


# --------------------------------------------------------------- attribution

# Run with MALLOC_MMAP_THRESHOLD_=131072 (glibc: a fixed threshold, so
# blocks of 128 KiB or more get their own page-aligned mmap unless a free
# heap chunk fits; such blocks are dropped).  The
# parent builds 6 CowProbeBlock instances of 40 pages each (GC-tracked,
# slots inline) and a 64-page bytearray (not GC-tracked), then forks.  The
# child touches exactly these pages:
#   block 1: head (refcount) + slot pages 5 and 20   -> 3 pages
#   block 3: head, by writing slot 0 (on the head page) -> 1 page
#   block 4: head, by taking a reference               -> 1 page
#   bytearray: 8 buffer pages
# (If the interpreter made inherited objects immortal at fork, references
# write no refcounts: only the 3 pages with slot writes are copied.)
# and reports: the raw pagemap states of those pages (read directly, not
# through cowstat) and the attribution report, as JSON on stdout.
ATTRIB = r"""
import gc, json, os, struct, sys
from cowstat import attribution

PAGE = attribution.PAGE_SIZE
NPAGES = 40
NSLOTS = NPAGES * PAGE // 8


class CowProbeBlock:
    # Zero-padded names: CPython sorts __slots__, so slot k is at offset
    # 16 + 8 * k from the object's address.
    __slots__ = tuple("s%06d" % i for i in range(NSLOTS))


def pages_of(start, end):
    return list(range(start // PAGE * PAGE, end, PAGE))


try:
    import ctypes
except ImportError:
    ctypes = None


def own_mmap(obj, pre):
    # Did malloc give OBJ a page-aligned mmap of its own?  Even with a
    # fixed mmap threshold, malloc reuses a large enough free heap chunk.
    if ctypes is None:
        return id(obj) % PAGE == pre + 16
    size_field = ctypes.c_size_t.from_address(id(obj) - pre - 8).value
    return bool(size_field & 2)             # glibc's IS_MMAPPED bit


candidates = [CowProbeBlock() for _ in range(32)]
PRE = sys.getsizeof(candidates[0]) - candidates[0].__sizeof__()
# Keep 6 blocks in their own mmaps (no other object shares their pages).
blocks = [b for b in candidates if own_mmap(b, PRE)][:6]
del candidates
n_mmapped = len(blocks)
if n_mmapped < 6:
    print(json.dumps({"n_mmapped": n_mmapped}))
    sys.exit(0)
buf = bytearray(64 * PAGE)
buf_addr = None
if ctypes is not None:
    buf_addr = ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
extents = [(id(b) - PRE, id(b) + blocks[0].__sizeof__()) for b in blocks]
all_block_pages = sorted(p for s, e in extents for p in pages_of(s, e))
SLOT_WRITES = {1: [(5 * PAGE) // 8, (20 * PAGE) // 8], 3: [0]}
heads = set(id(blocks[i]) // PAGE * PAGE for i in (1, 3, 4))
expected = set()
for i, slots in SLOT_WRITES.items():
    for k in slots:
        expected.add((id(blocks[i]) + 16 + 8 * k) // PAGE * PAGE)
BUF_PAGES = (3, 9, 17, 33, 40, 50, 60, 62)
buf_expected = ([(buf_addr + p * PAGE + 100) // PAGE * PAGE
                 for p in BUF_PAGES] if buf_addr else [])

r, w = os.pipe()
pid = os.fork()
if pid == 0:
    gc.disable()
    os.close(r)
    for i, slots in SLOT_WRITES.items():
        for k in slots:
            setattr(blocks[i], "s%06d" % k, None)
    keep = blocks[4]
    # Objects made immortal at fork (PEP 683) get no refcount writes:
    # then only the slot writes copy pages.
    immortal = sys.getrefcount(keep) >= 2 ** 30
    if not immortal:
        expected |= heads
    for p in BUF_PAGES:
        buf[p * PAGE + 100] = 7

    def raw(path, addrs):
        out = {}
        with open(path, "rb", buffering=0) as f:
            for a in addrs:
                f.seek(a // PAGE * 8)
                out[a] = struct.unpack("=Q", f.read(8))[0]
        return out

    buf_mapping = None
    if buf_addr:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split()
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                if lo <= buf_addr < hi:
                    buf_mapping = fields[5] if len(fields) > 5 else ""
    mine = raw("/proc/self/pagemap", all_block_pages + buf_expected)
    theirs = raw("/proc/%d/pagemap" % os.getppid(),
                 all_block_pages + buf_expected)
    raw_copied = sorted(
        a for a in all_block_pages
        if mine[a] >> 63 & 1 and mine[a] >> 56 & 1 and theirs[a] >> 63 & 1)
    raw_buf_copied = sorted(
        a for a in buf_expected if mine[a] >> 63 & 1 and mine[a] >> 56 & 1)

    rep = attribution.report(top=None)
    name = "__main__.CowProbeBlock"
    result = {
        "header": rep.header,
        "rows": rep.rows,
        "block_row": [x for x in rep.rows if x["type"] == name],
        "block_pages": rep.pages.get(name, []),
        "no_object_pages": rep.pages.get(rep.no_object_row, []),
        "buf_regions": {reg: sorted(set(buf_expected) & set(pages))
                        for reg, pages in rep.region_pages.items()},
        "buf_changed": [rep.changed.get(a, 0) for a in buf_expected],
        "outside_pages": rep.written_pages.get(attribution.OUTSIDE_ROW, []),
        "buf_mapping": buf_mapping,
        "expected": sorted(expected),
        "immortal": immortal,
        "raw_copied": raw_copied,
        "buf_expected": buf_expected,
        "raw_buf_copied": raw_buf_copied,
        "n_mmapped": n_mmapped,
        "text": rep.text,
    }
    os.write(w, json.dumps(result).encode())
    os._exit(0)
os.close(w)
chunks = []
while True:
    data = os.read(r, 1 << 16)
    if not data:
        break
    chunks.append(data)
_, status = os.waitpid(pid, 0)
sys.stdout.write(b"".join(chunks).decode())
sys.exit(1 if status else 0)
"""

# Untracked objects, regions and changed bytes.  Run with
# MALLOC_MMAP_THRESHOLD_=131072, so that each of the 6 strings (200 KiB,
# not tracked by the GC, referenced from a tracked list: one step) and
# (usually) the 8 MiB bytearray get a page-aligned mmap of their own, while
# a 64 KiB bytearray comes from the brk heap; each buffer must be reported
# in the region of the mapping that holds it.  The child takes a reference to 3 of
# the strings (writes their refcount: their first page), writes 5 pages of
# the 8 MiB buffer and 3 of the 64 KiB one, stores into the item array of
# a small list, and runs a function the parent never ran (its bytecode is
# specialized in place).  It reports the attribution as JSON.
UNTRACKED = r"""
import gc, json, os, sys
from cowstat import attribution

PAGE = attribution.PAGE_SIZE
try:
    import ctypes
except ImportError:
    ctypes = None

big = bytearray(8 << 20)     # larger than any free heap chunk: an mmap
small = bytearray(64 * 1024)
# Keep 6 strings that got an mmap of their own (malloc may reuse a large
# enough free heap chunk): the object starts 16 bytes into its mapping.
candidates = [("%d" % i) * (200 * 1024) for i in range(32)]
strings = [x for x in candidates if id(x) % PAGE == 16][:6]  # tracked list
del candidates
STR_HEAD = 16 if len(strings) == 6 else -1
small_list = [None] * 4


def addr_of(buf):
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


def mapping_of(addr):
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= addr < hi:
                return fields[5] if len(fields) > 5 else ""
    return None


def loop(n):
    t = 0
    for i in range(n):
        t += i * 3 % 7
    return t


def pages_of(start, end):
    return list(range(start // PAGE * PAGE, end, PAGE))


str_pages = {i: pages_of(id(s), id(s) + sys.getsizeof(s))
             for i, s in enumerate(strings)}
if len(strings) < 6:
    strings += [""] * (6 - len(strings))
big_addr = addr_of(big) if ctypes else None
small_addr = addr_of(small) if ctypes else None
BIG_PAGES = (1, 7, 100, 200, 255)
SMALL_PAGES = (2, 5, 9)
TOUCH = (1, 3, 4)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    gc.disable()
    os.close(r)
    keep = [strings[i] for i in TOUCH]        # increfs: writes 3 heads
    immortal = sys.getrefcount(strings[1]) >= 2 ** 30
    for k in BIG_PAGES:
        big[k * PAGE + 64] = 9
    for k in SMALL_PAGES:
        small[k * PAGE + 64] = 9
    small_list[2] = small_list             # an item array write
    for _ in range(200):
        loop(20)
    rep = attribution.report(top=None)
    all_str = set(p for ps in str_pages.values() for p in ps)
    code = loop.__code__
    code_row = [x for x in rep.all_written if x["type"] == "code"]
    result = {
        "header": rep.header, "text": rep.text, "immortal": immortal,
        "str_head_offset": STR_HEAD,
        "str_expected": sorted(str_pages[i][0] for i in TOUCH),
        "str_reported": sorted(all_str & set(rep.pages.get("str", []))),
        "str_copied_elsewhere": sorted(
            all_str & set(a for t, ps in rep.pages.items() if t != "str"
                          for a in ps)),
        "str_written": [x for x in rep.all_written if x["type"] == "str"],
        "big_expected": [(big_addr + k * PAGE) // PAGE * PAGE
                         for k in BIG_PAGES] if big_addr else [],
        "small_expected": [(small_addr + k * PAGE + 64) // PAGE * PAGE
                           for k in SMALL_PAGES] if small_addr else [],
        "big_mapping": mapping_of(big_addr) if big_addr else None,
        "small_mapping": mapping_of(small_addr) if small_addr else None,
        "region_pages": rep.region_pages,
        "regions": rep.regions,
        "changed": {str(a): n for a, n in rep.changed.items()},
        "code_row": code_row,
        "code_page_changed": any(
            rep.changed.get(p, 0) for p in pages_of(
                id(code) + type(code).__basicsize__,
                id(code) + code.__sizeof__())),
        "list_items": [x for x in rep.all_written
                       if x["type"] == attribution.LIST_ITEMS_TYPE],
    }
    os.write(w, json.dumps(result).encode())
    os._exit(0)
os.close(w)
chunks = []
while True:
    data = os.read(r, 1 << 16)
    if not data:
        break
    chunks.append(data)
_, status = os.waitpid(pid, 0)
sys.stdout.write(b"".join(chunks).decode())
sys.exit(1 if status else 0)
"""


def run_attribution_helper(code):
    """Run an attribution scenario (a script that forks, lets the child
    write, has cowstat report on it and prints JSON) and return its
    result.  Large malloc blocks get their own mmap, as the scenarios
    expect, and the allocator is the default one."""
    env = tool_env(MALLOC_MMAP_THRESHOLD_="131072")
    env.pop("PYTHONMALLOC", None)
    p = subprocess.run([sys.executable, "-c", code], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=120)
    if p.returncode:
        raise AssertionError("attribution helper failed (%d):\n%s"
                             % (p.returncode, p.stderr))
    return json.loads(p.stdout)


@unittest.skipUnless(HAVE_PROC, "needs Linux /proc/self/pagemap")
class AttributionUntrackedTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.result = run_attribution_helper(UNTRACKED)

    def compared(self):
        h = self.result["header"]
        if h["diff"] != "parent-mem":
            self.skipTest("page contents not compared: %s" % h["diff_note"])

    def test_untracked_strings_get_exactly_their_written_pages(self):
        res = self.result
        if res["immortal"]:
            self.skipTest("inherited objects are immortal: no refcount "
                          "writes")
        if res["str_head_offset"] != 16:
            self.skipTest("malloc gave fewer than 6 of 32 strings their "
                          "own mmap (not glibc?)")
        self.assertEqual(len(res["str_expected"]), 3)
        self.assertEqual(res["str_reported"], res["str_expected"],
                         res["text"])
        self.assertEqual(res["str_copied_elsewhere"], [], res["text"])
        self.assertGreater(res["header"]["untracked_found"], 0)

    def test_untracked_string_writes_are_their_refcounts(self):
        res = self.result
        if res["immortal"] or res["str_head_offset"] != 16:
            self.skipTest("no refcount writes, or strings not in mmaps")
        self.compared()
        for page in res["str_expected"]:
            # One refcount: 1 changed byte (2 -> 3 in the low byte).
            self.assertEqual(res["changed"].get(str(page)), 1, res["text"])
        row, = res["str_written"]
        self.assertGreaterEqual(row["objects"], 3)
        self.assertIn("+0", row["offsets"])

    def test_malloc_buffers_land_in_their_regions(self):
        res = self.result
        if not res["big_expected"]:
            self.skipTest("ctypes unavailable: cannot locate the buffers")
        for key, pages in (("big", res["big_expected"]),
                           ("small", res["small_expected"])):
            region = {"[heap]": "heap", "": "anon"}.get(
                res[key + "_mapping"])
            if region is None:
                continue
            with self.subTest(buffer=key, region=region):
                got = sorted(set(pages) & set(res["region_pages"][region]))
                self.assertEqual(got, pages, res["text"])
        self.assertIn(res["big_mapping"], ("", "[heap]"))
        self.assertIn(res["small_mapping"], ("", "[heap]"))

    def test_region_table_adds_up(self):
        res = self.result
        regions = res["regions"]
        self.assertEqual([r["region"] for r in regions],
                         list(attribution.REGION_KEYS))
        self.assertEqual(sum(r["pages"] for r in regions),
                         res["header"]["copied_pages"])
        for r in regions:
            self.assertEqual(r["pages"],
                             len(res["region_pages"][r["region"]]))
            self.assertLessEqual(r["no_object"], r["pages"])
        self.assertIn("copied pages by region", res["text"])
        image = res["header"]["python_image"]
        self.assertTrue(image and os.path.exists(image), image)
        self.assertGreater(res["header"]["pymalloc_pools"], 0, res["text"])
        self.assertGreater(res["region_pages"]["pymalloc"], [], res["text"])

    def test_buffer_changed_bytes(self):
        res = self.result
        self.compared()
        for page in res["big_expected"] + res["small_expected"]:
            self.assertEqual(res["changed"].get(str(page)), 1, res["text"])
        items = res["list_items"]
        self.assertEqual(len(items), 1, res["text"])
        self.assertGreater(items[0]["bytes"], 0)

    @unittest.skipIf(sys.version_info < (3, 11),
                     "no adaptive specialization before 3.11")
    def test_specialization_writes_into_the_code_object(self):
        res = self.result
        self.compared()
        self.assertTrue(res["code_page_changed"], res["text"])
        row, = res["code_row"]
        self.assertIn("items", row["offsets"], res["text"])


# The master installs the signal handler and forks; the worker waits for
# SIGUSR2 and the report file.
SIGNAL_SCRIPT = r"""
import os, signal, sys, time
from cowstat import attribution
template = sys.argv[1]
attribution.install_signal_handler(signal.SIGUSR2, template, top=5)
pid = os.fork()
if pid == 0:
    path = template.format(pid=os.getpid())
    deadline = time.time() + 30
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.01)
    os._exit(0 if os.path.exists(path) else 3)
time.sleep(0.3)
os.kill(pid, signal.SIGUSR2)
_, status = os.waitpid(pid, 0)
print(pid)
sys.exit(os.waitstatus_to_exitcode(status)
         if hasattr(os, "waitstatus_to_exitcode") else status >> 8)
"""


@unittest.skipUnless(HAVE_PROC, "needs Linux /proc/self/pagemap")
class AttributionTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.result = run_attribution_helper(ATTRIB)

    def setUp(self):
        if self.result["n_mmapped"] < 6:
            self.skipTest("malloc gave only %d of 32 blocks their own mmap "
                          "(not glibc?)" % self.result["n_mmapped"])

    def test_raw_pagemap_shows_exactly_the_written_pages(self):
        # The test's own premise, checked without cowstat: the child
        # copied exactly the 5 expected pages of the blocks.
        res = self.result
        self.assertEqual(len(res["expected"]), 3 if res["immortal"] else 5)
        self.assertEqual(res["raw_copied"], res["expected"])

    def test_block_type_gets_exactly_the_copied_pages(self):
        res = self.result
        self.assertEqual(res["header"]["method"], "parent", res["text"])
        rows = res["block_row"]
        self.assertEqual(len(rows), 1, res["text"])
        row = rows[0]
        k = 3 if res["immortal"] else 5
        self.assertEqual(row["pages"], k, res["text"])
        self.assertEqual(row["touched"], k, res["text"])
        self.assertEqual(row["kib"], k * PAGE // 1024)
        # Blocks 1, 3 and 4 (block 4 is untouched if immortal).
        self.assertEqual(row["objects"], 2 if res["immortal"] else 3)
        self.assertEqual(res["block_pages"], res["expected"])

    def test_untracked_buffer_lands_in_no_object_row(self):
        res = self.result
        if not res["buf_expected"]:
            self.skipTest("ctypes unavailable: cannot locate the buffer")
        self.assertEqual(res["raw_buf_copied"], res["buf_expected"])
        missing = set(res["buf_expected"]) - set(res["no_object_pages"])
        self.assertFalse(missing, res["text"])

    def test_untracked_buffer_region_and_changed_bytes(self):
        # The buffer's pages lie in the region of the mapping that holds
        # them ([heap] or an anonymous mmap), and each has exactly the one
        # byte the child changed, outside any object.
        res = self.result
        if not res["buf_expected"]:
            self.skipTest("ctypes unavailable: cannot locate the buffer")
        region = {"[heap]": "heap", "": "anon"}.get(res["buf_mapping"])
        if region is None:
            self.skipTest("buffer in mapping %r" % res["buf_mapping"])
        self.assertEqual(res["buf_regions"][region], res["buf_expected"],
                         res["text"])
        if res["header"]["diff"] != "parent-mem":
            self.skipTest("page contents not compared: %s"
                          % res["header"]["diff_note"])
        self.assertEqual(res["buf_changed"], [1] * len(res["buf_expected"]),
                         res["text"])
        self.assertFalse(set(res["buf_expected"]) - set(res["outside_pages"]),
                         res["text"])

    def test_rows_add_up(self):
        res = self.result
        h = res["header"]
        self.assertEqual(sum(r["pages"] for r in res["rows"]),
                         h["copied_pages"])
        self.assertEqual(h["copied_kib"], h["copied_pages"] * PAGE // 1024)
        pages = [r["pages"] for r in res["rows"]]
        self.assertEqual(pages, sorted(pages, reverse=True))
        self.assertIn("cowstat attribution: pid", res["text"])
        self.assertIn("TOTAL", res["text"])


@unittest.skipUnless(HAVE_PROC, "needs Linux /proc/self/pagemap")
class AttributionApiTest(unittest.TestCase):

    def test_bad_arguments(self):
        for kw in ({"parent_pid": -1}, {"parent_pid": "1"},
                   {"parent_pid": 0}, {"top": -2}, {"top": "x"}):
            with self.subTest(kw=kw):
                with self.assertRaises(ValueError):
                    attribution.report(**kw)

    def test_unreadable_parent_falls_back_to_exclusive(self):
        pid = absent_pid()
        rep = attribution.report(parent_pid=pid, top=3)
        self.assertEqual(rep.header["method"], "exclusive")
        self.assertIn("/proc/%d/pagemap" % pid, rep.header["method_note"])
        self.assertIn("EXCLUSIVE ONLY", rep.text)
        self.assertLessEqual(len(rep.rows), 4)
        self.assertEqual(sum(r["pages"] for r in rep.rows),
                         rep.header["copied_pages"])
        json.loads(rep.to_json())

    def test_parse_maps(self):
        maps = textwrap.dedent("""\
            55d0a0000000-55d0a0021000 rw-p 00000000 00:00 0          [heap]
            7f0000000000-7f0000100000 rw-p 00000000 00:00 0
            7f0000100000-7f0000200000 rw-p 00000000 00:00 0          [anon:x]
            7f0000200000-7f0000300000 rw-p 00001000 08:01 1234       /lib/c.so
            7f0000300000-7f0000400000 r--p 00000000 00:00 0
            7f0000400000-7f0000500000 rw-s 00000000 00:01 99  /dev/zero
            7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0          [stack]
            garbage line
            """)
        regions = attribution.parse_maps(maps)
        self.assertEqual([r[2] for r in regions],
                         ["[heap]", "[anon]", "[anon:x]"])
        self.assertEqual(regions[0][:2], (0x55d0a0000000, 0x55d0a0021000))

    def test_classify_maps(self):
        maps = textwrap.dedent("""\
            55d0a0000000-55d0a0010000 r--p 00000000 08:01 77   /usr/bin/py
            55d0a0010000-55d0a0020000 rw-p 00010000 08:01 77   /usr/bin/py
            55d0a0020000-55d0a0030000 rw-p 00000000 00:00 0
            55d0a1000000-55d0a1021000 rw-p 00000000 00:00 0    [heap]
            7f0000000000-7f0000100000 rw-p 00000000 00:00 0
            7f0000100000-7f0000101000 ---p 00000000 00:00 0
            7f0000101000-7f0000901000 rw-p 00000000 00:00 0
            7f0000a00000-7f0000a10000 rw-p 00001000 08:01 99   /lib/libc.so
            7f0000a10000-7f0000a11000 rw-p 00000000 00:00 0
            7f0000b00000-7f0000b01000 rw-s 00000000 00:01 5    /dev/zero
            7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0    [stack]
            7ffc00100000-7ffc00102000 r--p 00000000 00:00 0    [vvar]
            """)
        got = [(hex(s), r) for s, e, n, r in
               attribution.classify_maps(maps, image="/usr/bin/py")]
        self.assertEqual(got, [
            ("0x55d0a0010000", "python"), ("0x55d0a0020000", "python"),
            ("0x55d0a1000000", "heap"), ("0x7f0000000000", "anon"),
            ("0x7f0000101000", "stack"), ("0x7f0000a00000", "files"),
            ("0x7f0000a10000", "files"), ("0x7ffc00000000", "stack")])

    def test_elf_segment_end_of_this_interpreter(self):
        # The .bss of the running interpreter ends where its ELF program
        # headers say: inside or at the end of the anonymous mapping that
        # follows its writable file mapping.
        with open("/proc/self/maps") as f:
            maps = attribution.parse_maps_all(f.read())
        addr = id(int)
        hit = [m for m in maps if m[0] <= addr < m[1]]
        self.assertEqual(len(hit), 1)
        start, end, perms, inode, name, offset = hit[0]
        seg_end = attribution.elf_segment_end(name, start, offset)
        self.assertIsNotNone(seg_end)
        self.assertGreaterEqual(seg_end, end)
        self.assertEqual(seg_end % PAGE, 0)

    def test_signal_handler_writes_report(self):
        with tempfile.TemporaryDirectory() as tmp:
            for ext in ("txt", "json"):
                template = os.path.join(tmp, "attr-{pid}." + ext)
                p = subprocess.run(
                    [sys.executable, "-c", SIGNAL_SCRIPT, template],
                    env=tool_env(), stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, universal_newlines=True,
                    timeout=60)
                self.assertEqual(p.returncode, 0, p.stderr)
                worker = int(p.stdout.split()[-1])
                with open(template.format(pid=worker)) as f:
                    data = f.read()
                if ext == "json":
                    doc = json.loads(data)
                    self.assertEqual(doc["header"]["pid"], worker)
                    self.assertEqual(doc["header"]["method"], "parent")
                else:
                    self.assertIn("cowstat attribution: pid %d" % worker,
                                  data)

    def test_bad_path_template(self):
        with self.assertRaises(ValueError):
            attribution.install_signal_handler(path_template="/tmp/{nope}")


# ------------------------------------------------------------ pymalloc census

# A parent with a partly used pymalloc heap (every third list freed) forks;
# the child takes the pool census at the fork and after freeing a fifth of
# the inherited lists (on cowpy: frees in pools set aside at the fork, which
# take them back as "dropped" pools), each time next to the runtime's own
# count (sys._debugmallocstats(), read from stderr) and, on cowpy,
# sys._cow_alloc_stats().  JSON on stdout, from the parent and the child.
CENSUS = r"""
import gc, json, os, re, sys, tempfile
from cowstat import pymalloc

def malloc_stats():
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode()
    pools = used = 0
    for line in text.splitlines():
        m = re.match(r"\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", line)
        if m:
            _, size, npools, blocks, _ = map(int, m.groups())
            pools += npools
            used += blocks * size
    return {"pools": pools, "used_kib": used / 1024.0}

def take():
    census = pymalloc.pymalloc_census()
    return {"census": census, "runtime": malloc_stats(),
            "cow": getattr(sys, "_cow_alloc_stats", dict)()}

keep = [[i] * (i % 7) for i in range(200000)]
del keep[::3]
gc.collect()
malloc_stats()
out = {"parent": take()}
pid = os.fork()
if pid == 0:
    out = {"at_fork": take()}
    del keep[::5]
    out["after_frees"] = take()
    print(json.dumps(out), flush=True)
    os._exit(0)
print(json.dumps(out), flush=True)
os.waitpid(pid, 0)
"""

HAVE_COW_ALLOC = hasattr(sys, "_cow_alloc_stats")


@unittest.skipUnless(HAVE_PROC and sys.maxsize > 2 ** 32,
                     "needs Linux /proc and a 64-bit build")
class PymallocCensusTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        env = tool_env(PYTHONCOWALLOC="aside", PYTHONCOWFORK="freeze")
        env.pop("PYTHONMALLOC", None)
        p = subprocess.run([sys.executable, "-c", CENSUS], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=120)
        if p.returncode:
            raise AssertionError("census helper failed (%d):\n%s"
                                 % (p.returncode, p.stderr))
        cls.res = {}
        for line in p.stdout.splitlines():
            cls.res.update(json.loads(line))

    def assert_matches_runtime(self, when):
        r = self.res[when]
        c, rt = r["census"], r["runtime"]
        self.assertNotIn("error", c)
        # The census and the runtime's count are taken one after the
        # other, and the census allocates: a few pools of slack.
        self.assertAlmostEqual(c["pools"] - c["empty_pools"], rt["pools"],
                               delta=32, msg="%s: %r" % (when, r))
        self.assertAlmostEqual(c["used_kib"], rt["used_kib"],
                               delta=max(512, rt["used_kib"] * 0.02),
                               msg="%s: %r" % (when, r))

    def test_census_counts_the_runtimes_pools(self):
        for when in ("parent", "at_fork", "after_frees"):
            with self.subTest(when=when):
                self.assert_matches_runtime(when)
        self.assertEqual(self.res["parent"]["census"]["aside_pools"], 0)
        self.assertEqual(self.res["parent"]["census"]["dropped_pools"], 0)
        if not HAVE_COW_ALLOC:
            for when in ("at_fork", "after_frees"):
                c = self.res[when]["census"]
                self.assertEqual((c["aside_pools"], c["dropped_pools"]),
                                 (0, 0), when)

    @unittest.skipUnless(HAVE_COW_ALLOC,
                         "cowpy only: sys._cow_alloc_stats(), set-aside")
    def test_set_aside_pools_are_counted(self):
        at_fork = self.res["at_fork"]
        c, cow = at_fork["census"], at_fork["cow"]
        self.assertEqual(cow["mode"], "aside")
        self.assertGreater(cow["aside"], 100, cow)
        self.assertEqual(c["runtime_check"], "ok", c)
        self.assertEqual((c["aside_pools"], c["aside_free_blocks"]),
                         (cow["aside"], cow["aside_free_blocks"]))
        # After the frees most aside pools were taken back ("dropped":
        # nextoffset POOL_SIZE + 1), and the census still has them all.
        after = self.res["after_frees"]
        c, cow = after["census"], after["cow"]
        self.assertGreater(cow["reclaimed"], 100, cow)
        self.assertEqual(c["runtime_check"], "ok", c)
        self.assertEqual(c["aside_pools"], cow["aside"])
        self.assertGreater(c["dropped_pools"], 0.9 * cow["reclaimed"], c)
        self.assertLessEqual(c["dropped_pools"], cow["reclaimed"], c)
        self.assertGreater(c["dropped_kib"], 0, c)
        self.assert_matches_runtime("after_frees")

    @unittest.skipUnless(HAVE_COW_ALLOC,
                         "cowpy only: sys._cow_alloc_stats()['pool_layout']")
    def test_pool_layout_comes_from_the_runtime(self):
        # The census read the headers with the runtime's layout...
        for when in ("parent", "at_fork", "after_frees"):
            self.assertEqual(self.res[when]["census"]["layout"], "runtime")
        from cowstat import pymalloc
        layout, source = pymalloc.pool_layout()
        self.assertEqual(source, "runtime")
        self.assertEqual(pymalloc._POOL_HDR.size, layout["header_size"])
        self.assertEqual(pymalloc._POOL_SIZES[0], layout["pool_size"])
        # ... and stock 3.13's, which cowstat falls back to when it reads
        # with another interpreter, is still this build's (cowpy keeps
        # pymalloc's ABI): a layout change upstream fails here.
        self.assertEqual(layout, pymalloc._BUILTIN_LAYOUT)


if __name__ == "__main__":
    unittest.main()
