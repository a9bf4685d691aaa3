"""Tests for cowpy's pymalloc set-aside after fork (Objects/obmalloc_cow.c).

- PYTHONCOWALLOC / -X cowalloc and sys._cow_alloc_stats();
- a forked child's new small objects do not land in the pools that were
  partly used at the fork (and do with PYTHONCOWALLOC=stock), and leave
  those pools' pages shared;
- no leak: pools reclaimed from the set-aside give their blocks back once
  empty; arena counts and RSS stay flat over many rounds;
- a random alloc/free/realloc mix in a child and a grandchild, with and
  without PYTHONMALLOC=pymalloc_debug;
- the C heap's holes: a parent forking in the immortal mode fills its
  glibc heap's free chunks, once, so that its children allocate
  elsewhere.

Every scenario runs in a fresh interpreter (its heap is then predictable),
which forks itself.
"""

import os
import platform
import sys
import textwrap
import unittest
from test import support
from test.support.script_helper import assert_python_ok, assert_python_failure

if not hasattr(sys, "_cow_alloc_stats"):
    raise unittest.SkipTest("not a cowpy interpreter")
if not hasattr(os, "fork"):
    raise unittest.SkipTest("needs os.fork()")

STATS_KEYS = {"mode", "forks", "aside_at_last_fork", "new_at_last_fork",
              "free_blocks_at_last_fork", "aside", "aside_free_blocks",
              "reclaimed", "failed_forks", "heap_plugged_chunks",
              "heap_plugged_kib", "pool_layout"}

# Helpers for the scripts: run body() in a forked child, print its result
# as JSON in the parent (which waits, writing nothing meanwhile).
PRELUDE = r'''
import gc, json, os, random, sys
PAGE = os.sysconf("SC_PAGE_SIZE")
POOL = 1 << 14

def in_child(body):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            res = {"ok": body()}
        except BaseException as e:
            import traceback
            res = {"error": "".join(traceback.format_exception(e))}
        os.write(w, json.dumps(res).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    res = json.loads(data)
    if "error" in res:
        raise SystemExit(res["error"])
    assert os.waitstatus_to_exitcode(status) == 0, status
    return res["ok"]

def arenas():
    """'# arenas allocated current' from sys._debugmallocstats()."""
    import tempfile
    with tempfile.TemporaryFile() as f:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        for line in f.read().decode().splitlines():
            if line.startswith("# arenas allocated current"):
                return int(line.split("=")[1].replace(",", ""))
    raise AssertionError("no arena count")

def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

def exclusive_pages(pools):
    """Pages of these pools that are present and mapped by this process
    only (/proc/self/pagemap bit 56): copied or new since the fork."""
    n = 0
    with open("/proc/self/pagemap", "rb") as f:
        for pool in pools:
            f.seek(pool * POOL // PAGE * 8)
            data = f.read(POOL // PAGE * 8)
            for i in range(0, len(data), 8):
                e = int.from_bytes(data[i:i + 8], "little")
                if e >> 63 and (e >> 56) & 1:
                    n += 1
    return n

gc.disable()
'''


def run(code, *args, env=None, **kw):
    """Run PRELUDE + code in a fresh interpreter; return its stdout."""
    rc, out, err = assert_python_ok(
        *args, "-c", PRELUDE + textwrap.dedent(code), __isolated=False,
        **(env or {}), **kw)
    return out.decode()


class OptionTests(unittest.TestCase):
    def mode(self, args, env):
        out = run("print(sys._cow_alloc_stats()['mode'])", *args, env=env)
        return out.strip()

    def test_default_environment_and_x_option(self):
        self.assertEqual(self.mode([], {}), "aside")
        self.assertEqual(self.mode([], {"PYTHONCOWALLOC": "stock"}), "stock")
        self.assertEqual(self.mode([], {"PYTHONCOWALLOC": "aside"}), "aside")
        self.assertEqual(self.mode(["-X", "cowalloc=stock"], {}), "stock")
        # -X wins over the environment; -E ignores it.
        self.assertEqual(self.mode(["-X", "cowalloc=aside"],
                                   {"PYTHONCOWALLOC": "stock"}), "aside")
        self.assertEqual(self.mode(["-E"], {"PYTHONCOWALLOC": "stock"}),
                         "aside")

    def test_invalid_values_fail_at_startup(self):
        cases = [
            (["-X", "cowalloc=off"], {}, b"-X cowalloc: invalid value"),
            (["-X", "cowalloc"], {}, b"-X cowalloc: invalid value"),
            ([], {"PYTHONCOWALLOC": "Aside"},
             b"PYTHONCOWALLOC: invalid value"),
            ([], {"PYTHONCOWALLOC": "1"}, b"PYTHONCOWALLOC: invalid value"),
        ]
        for args, env, msg in cases:
            with self.subTest(args=args, env=env):
                rc, out, err = assert_python_failure(
                    *args, "-c", "pass", __isolated=False, **env)
                self.assertIn(msg, err)
                self.assertIn(b"expected aside or stock", err)


class StatsTests(unittest.TestCase):
    def test_no_fork(self):
        stats = sys._cow_alloc_stats()
        self.assertEqual(set(stats), STATS_KEYS)
        self.assertIn(stats["mode"], ("aside", "stock"))
        self.assertIsInstance(stats["aside"], int)
        out = run("print(sys._cow_alloc_stats())")
        stats = eval(out)
        self.assertEqual(stats["forks"], 0)
        self.assertEqual(stats["aside"], 0)
        self.assertEqual(stats["reclaimed"], 0)
        with self.assertRaises(TypeError):
            sys._cow_alloc_stats(1)

    def test_pool_layout(self):
        layout = sys._cow_alloc_stats()["pool_layout"]
        if layout is None:
            self.skipTest("built without pymalloc")
        ps = layout["pool_size"]
        self.assertGreaterEqual(ps, 4096)
        self.assertEqual(ps & (ps - 1), 0)
        self.assertEqual(layout["arena_size"] % ps, 0)
        self.assertEqual(layout["dropped_nextoffset"], ps + 1)
        self.assertEqual(layout["pool_overhead"] % layout["alignment"], 0)
        self.assertGreaterEqual(layout["pool_overhead"],
                                layout["header_size"])
        # The fields lie inside the header, in declaration order, and
        # the block links are pointers.
        names = ["count", "freeblock", "nextpool", "prevpool",
                 "arenaindex", "szidx", "nextoffset", "maxnextoffset"]
        self.assertEqual(sorted(layout["fields"]), sorted(names))
        end = 0
        for name in names:
            off, size = layout["fields"][name]
            self.assertGreaterEqual(off, end, name)
            end = off + size
        self.assertLessEqual(end, layout["header_size"])
        for name in ("freeblock", "nextpool", "prevpool"):
            self.assertEqual(layout["fields"][name][1],
                             layout["pointer_size"])

    def test_after_fork(self):
        out = run("""
            keep = [bytearray(40) for _ in range(20000)]
            del keep[::2]
            def body():
                s = sys._cow_alloc_stats()
                del keep[:100]
                return [s, sys._cow_alloc_stats()]
            print(json.dumps([sys._cow_alloc_stats(), in_child(body),
                              sys._cow_alloc_stats()]))
            """)
        import json
        parent, (child0, child1), parent2 = json.loads(out)
        self.assertEqual(parent, parent2)
        self.assertEqual(parent["aside"], 0)
        self.assertEqual(child0["forks"], 1)
        self.assertGreater(child0["aside"], 0)
        self.assertEqual(child0["aside"], child0["aside_at_last_fork"])
        self.assertEqual(child0["aside"], child0["new_at_last_fork"])
        self.assertEqual(child0["aside_free_blocks"],
                         child0["free_blocks_at_last_fork"])
        self.assertGreaterEqual(child0["free_blocks_at_last_fork"], 10000)
        self.assertEqual(child0["reclaimed"], 0)
        self.assertGreater(child1["reclaimed"], 0)
        self.assertEqual(child1["aside"] + child1["reclaimed"],
                         child1["aside_at_last_fork"])
        self.assertLess(child1["aside_free_blocks"],
                        child0["aside_free_blocks"])

    def test_stock_mode_sets_nothing_aside(self):
        out = run("""
            keep = [bytearray(40) for _ in range(20000)]
            del keep[::2]
            print(json.dumps(in_child(sys._cow_alloc_stats)))
            """, env={"PYTHONCOWALLOC": "stock"})
        import json
        stats = json.loads(out)
        self.assertEqual(stats["mode"], "stock")
        self.assertEqual(stats["forks"], 0)
        self.assertEqual(stats["aside"], 0)


# A parent heap with holes: 100,000 bytearrays (96-byte blocks), every
# other one freed; the pools holding the survivors are recorded.
HOLES = """
    keep = [bytearray(40) for _ in range(100000)]
    del keep[::2]
    pools = sorted({id(o) // POOL for o in keep})
    def body():
        before = exclusive_pages(pools)
        new = [bytearray(40) for _ in range(40000)]
        inside = sum(id(o) // POOL in set(pools) for o in new)
        return {"inside": inside, "new": len(new), "pools": len(pools),
                "copied": exclusive_pages(pools) - before,
                "stats": sys._cow_alloc_stats()}
    print(json.dumps(in_child(body)))
    """


class PlacementTests(unittest.TestCase):
    def check_outside(self, res):
        # None in an inherited pool, except blocks the child itself freed
        # in a pool it thereby reclaimed (a temporary of the interpreter).
        if res["stats"]["reclaimed"] == 0:
            self.assertEqual(res["inside"], 0, res)
        self.assertLessEqual(res["inside"], 0.01 * res["new"], res)

    def placement(self, mode, *args):
        import json
        return json.loads(run(HOLES, *args,
                              env={"PYTHONCOWALLOC": mode}))

    def test_new_objects_avoid_inherited_pools(self):
        res = self.placement("aside")
        self.check_outside(res)
        # Pages of the parent's pools left shared: the child wrote at most
        # a few of them (its own frees of temporaries may reclaim pools).
        self.assertLess(res["copied"], 0.02 * res["pools"] * 4, res)
        self.assertGreater(res["stats"]["aside"], 0.9 * res["pools"], res)

    def test_stock_refills_holes(self):
        res = self.placement("stock")
        self.assertGreater(res["inside"], 0.9 * res["new"], res)
        # 40,000 new objects fill 80% of the 50,000 holes.
        self.assertGreater(res["copied"], 0.5 * res["pools"] * 4, res)

    def test_pymalloc_debug(self):
        import json
        out = run(HOLES, env={"PYTHONCOWALLOC": "aside",
                              "PYTHONMALLOC": "pymalloc_debug"})
        res = json.loads(out)
        self.check_outside(res)


# The C heap's holes: 2,000-byte bytes objects (past pymalloc, so from
# glibc's heap), every other one freed; two children, forked in the fork
# mode given, allocate as many again.
HEAP_HOLES = """
    gc.set_fork_mode(os.environ["HOLES_FORK_MODE"])
    keep = [bytes(2000) for _ in range(4000)]
    holes = {id(b) for b in keep[::2]}
    del keep[::2]
    def body():
        new = [bytes(2000) for _ in range(2000)]
        return {"reused": sum(id(b) in holes for b in new),
                "stats": sys._cow_alloc_stats()}
    print(json.dumps({"first": in_child(body), "second": in_child(body),
                      "parent": sys._cow_alloc_stats()}))
    """


@unittest.skipUnless(sys.platform == "linux"
                     and platform.libc_ver()[0] == "glibc",
                     "fills glibc's heap only")
@unittest.skipIf(support.check_sanitizer(address=True, memory=True,
                                         thread=True),
                 "a sanitizer's allocator replaces glibc's")
class HeapHoleTests(unittest.TestCase):
    def holes(self, fork_mode, alloc_mode="aside"):
        import json
        return json.loads(run(HEAP_HOLES,
                              env={"PYTHONCOWALLOC": alloc_mode,
                                   "HOLES_FORK_MODE": fork_mode}))

    def test_immortal_fork_fills_the_holes_once(self):
        res = self.holes("immortal")
        self.assertEqual(res["first"]["reused"], 0, res)
        # Filled for good: a later fork finds them filled still, and
        # fills nothing more (the walk, and with it the filling, ran at
        # the first fork only).
        self.assertEqual(res["second"]["reused"], 0, res)
        plugged = res["parent"]["heap_plugged_chunks"]
        self.assertGreaterEqual(plugged, 2000, res)
        self.assertGreaterEqual(res["parent"]["heap_plugged_kib"], 3500, res)
        self.assertEqual(res["first"]["stats"]["heap_plugged_chunks"],
                         plugged)
        self.assertEqual(res["second"]["stats"]["heap_plugged_chunks"],
                         plugged)

    def test_freeze_mode_leaves_them(self):
        # Control: glibc refills the parent's holes first.
        res = self.holes("freeze")
        self.assertGreater(res["first"]["reused"], 1000, res)
        self.assertEqual(res["parent"]["heap_plugged_chunks"], 0, res)

    def test_stock_alloc_mode_leaves_them(self):
        res = self.holes("immortal", "stock")
        self.assertGreater(res["first"]["reused"], 1000, res)
        self.assertEqual(res["parent"]["heap_plugged_chunks"], 0, res)
        self.assertEqual(res["parent"]["heap_plugged_kib"], 0, res)


class NoLeakTests(unittest.TestCase):
    def test_reclaimed_pools_give_their_blocks_back(self):
        # The child frees half of the inherited objects (pools reclaimed,
        # still in use), allocates, then frees everything: the reclaimed
        # pools empty and must serve the next allocations in full.
        out = run("""
            keep = [bytearray(40) for _ in range(100000)]
            del keep[::2]
            base = arenas()
            def body():
                del keep[::2]
                more = [bytearray(40) for _ in range(25000)]
                del keep[:], more[:]
                a0 = arenas()
                counts = []
                for _ in range(30):
                    objs = [bytearray(40) for _ in range(50000)]
                    counts.append(arenas())
                    del objs
                return {"base": base, "a0": a0, "counts": counts,
                        "stats": sys._cow_alloc_stats()}
            print(json.dumps(in_child(body)))
            """)
        import json
        res = json.loads(out)
        counts = res["counts"]
        # 50,000 blocks of 96 bytes fit in the arenas the parent had.
        self.assertLessEqual(max(counts), res["base"] + 1, res)
        # No growth after the first round (an arena the collector empties
        # meanwhile may go back: fewer is not a leak).
        self.assertLessEqual(max(counts[1:]), counts[1], res)
        # Pools of other size classes (start-up objects) may stay aside.
        self.assertGreater(res["stats"]["reclaimed"], 500, res)

    def test_last_block_of_an_aside_pool(self):
        # Pools holding one block at the fork: freeing it in the child
        # empties the pool at once (the reclaim links it to itself).
        out = run("""
            n = (1 << 14) // 96
            objs = [bytearray(40) for _ in range(200 * n)]
            one = objs[::n]
            del objs
            def body():
                s0 = sys._cow_alloc_stats()
                a0 = arenas()
                del one[:]
                s1 = sys._cow_alloc_stats()
                rounds = []
                for _ in range(10):
                    x = [bytearray(40) for _ in range(200 * n)]
                    rounds.append(arenas())
                    del x
                return {"s0": s0, "s1": s1, "a0": a0, "rounds": rounds}
            print(json.dumps(in_child(body)))
            """)
        import json
        res = json.loads(out)
        self.assertGreaterEqual(res["s0"]["aside"], 150, res)
        self.assertGreaterEqual(res["s1"]["reclaimed"], 150, res)
        # No growth after the first round; fewer (an arena emptied by
        # something else, as the debug build's hash-seed-dependent
        # layouts do now and then) is not a leak.
        self.assertLessEqual(max(res["rounds"]), res["rounds"][0], res)
        self.assertLessEqual(res["rounds"][0], res["a0"] + 1, res)

    def test_rss_flat_in_a_long_loop(self):
        out = run("""
            keep = [bytearray(random.randrange(1, 400))
                    for _ in range(200000)]
            del keep[::3]
            def body():
                rng = random.Random(1)
                live = []
                marks = []
                for i in range(60):
                    for _ in range(20000):
                        live.append(bytes(rng.randrange(1, 450)))
                        if len(keep) > 1000 and rng.random() < 0.3:
                            keep.pop(rng.randrange(len(keep)))
                    del live[:]
                    if i % 10 == 9:
                        marks.append((rss_kib(), arenas()))
                return {"marks": marks, "stats": sys._cow_alloc_stats()}
            print(json.dumps(in_child(body)))
            """)
        import json
        res = json.loads(out)
        marks = res["marks"]
        # After the first marks, RSS and arenas do not grow.
        self.assertLessEqual(marks[-1][0] - marks[1][0], 2048, res)
        self.assertLessEqual(marks[-1][1], marks[1][1], res)


STRESS = """
    rng = random.Random(SEED)
    def fill(n, c):
        return bytes([c]) * n
    def mix(seconds, live):
        import time
        end = time.monotonic() + seconds
        ops = 0
        while time.monotonic() < end:
            for _ in range(2000):
                op = rng.random()
                if op < 0.45 or not live:
                    n, c = rng.randrange(1, 513), rng.randrange(256)
                    live.append((fill(n, c), n, c))
                elif op < 0.85:
                    live[rng.randrange(len(live))] = live[-1]
                    live.pop()
                else:
                    # realloc: a bytearray resized in place or moved
                    i = rng.randrange(len(live))
                    b, n, c = live[i]
                    ba = bytearray(b)
                    m = rng.randrange(1, 513)
                    ba[m:] = b""
                    ba.extend(bytes([c]) * (m - len(ba)))
                    live[i] = (bytes(ba), m, c)
                ops += 1
        for b, n, c in live:
            assert b == bytes([c]) * n, (n, c)
        return ops
    parent_live = []
    mix(0.5, parent_live)
    del parent_live[::2]
    def child():
        ops = mix(SECONDS, parent_live)
        def grandchild():
            ops = mix(SECONDS, parent_live)
            s = sys._cow_alloc_stats()
            sys._debugmallocstats() if CHECK else None
            return [ops, s]
        g = in_child(grandchild)
        s = sys._cow_alloc_stats()
        sys._debugmallocstats() if CHECK else None
        return [ops, s, g]
    print(json.dumps(in_child(child)))
    """


class StressTests(unittest.TestCase):
    def stress(self, env, seed=1):
        import json
        seconds = 1.5 if support.is_resource_enabled("cpu") else 1.0
        code = (STRESS.replace("SEED", str(seed))
                .replace("SECONDS", str(seconds))
                .replace("CHECK", "True"))
        # An explicit mode: the environment is passed on.  The fork mode
        # too: under PYTHONCOWFORK=immortal (a suite run in that mode)
        # what the child drops would be immortal and never reclaimed.
        env = {"PYTHONCOWALLOC": "aside", "PYTHONCOWFORK": "freeze", **env}
        # _debugmallocstats() writes to stderr: keep stdout JSON only.
        rc, out, err = assert_python_ok(
            "-c", PRELUDE + textwrap.dedent(code), __isolated=False, **env)
        ops, stats, (gops, gstats) = json.loads(out.decode())
        self.assertGreater(ops, 1000)
        self.assertGreater(gops, 1000)
        return stats, gstats

    def test_child_and_grandchild(self):
        stats, gstats = self.stress({})
        self.assertEqual(stats["forks"], 1)
        self.assertGreater(stats["aside_at_last_fork"], 0)
        self.assertGreater(stats["reclaimed"], 0)
        self.assertEqual(gstats["forks"], 2)
        self.assertEqual(gstats["aside"] + gstats["reclaimed"],
                         gstats["aside_at_last_fork"])

    def test_pymalloc_debug(self):
        stats, gstats = self.stress({"PYTHONMALLOC": "pymalloc_debug"}, 2)
        self.assertEqual(gstats["forks"], 2)

    def test_stock_mode(self):
        stats, gstats = self.stress({"PYTHONCOWALLOC": "stock"}, 3)
        self.assertEqual(gstats["aside_at_last_fork"], 0)


if __name__ == "__main__":
    unittest.main()
