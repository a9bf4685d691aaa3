"""Tests for cowpy's copy-on-write-safe collector (Python/gc_cow.c).

- the gc module API and the start-up options;
- shared collections reclaim garbage among frozen objects with the full
  stock semantics (finalizers, weakref callbacks, resurrection, legacy
  finalizers, DEBUG_SAVEALL, gc.callbacks);
- freeze at fork, and a page-level check that a shared collection in a
  forked child leaves the inherited pages shared;
- the upstream test.test_gc and test.test_finalization classes re-run with
  every collection routed through the side arena (subclasses below).
Faults at awkward moments (forks, signals, callbacks during a shared
collection) are in test_gc_cow_faults.py.
"""

import gc
import json
import os
import struct
import subprocess
import sys
import textwrap
import unittest
import weakref
from test import support
from test.support import import_helper
from test.support.script_helper import assert_python_ok, assert_python_failure
from test.support.cow_helper import (CowTestCase, Cycle, make_cycle, mode,
                                     run_in_child, testcow)

if not hasattr(gc, "get_cow_mode"):
    raise unittest.SkipTest("not a cowpy interpreter")

PAGE = os.sysconf("SC_PAGE_SIZE")
PM_PRESENT = 1 << 63
PM_EXCLUSIVE = 1 << 56


_before_fork_seen = None


def allocator():
    """The memory allocator in use ('pymalloc', 'malloc', ...)."""
    try:
        import _testinternalcapi
        return _testinternalcapi.pymem_getallocatorsname()
    except (ImportError, RuntimeError):
        return "unknown"


def private_kib(field=("Private_Clean:", "Private_Dirty:")):
    total = 0
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith(field):
                total += int(line.split()[1])
    return total


def page_flags(addresses):
    """pagemap entries for the pages holding these addresses."""
    out = {}
    with open("/proc/self/pagemap", "rb") as f:
        for addr in addresses:
            page = addr // PAGE
            f.seek(page * 8)
            (entry,) = struct.unpack("<Q", f.read(8))
            out[page] = entry
    return out


class APITests(CowTestCase):
    def test_defaults(self):
        code = ("import gc; print(gc.get_cow_mode(), gc.get_freeze_at_fork(),"
                " gc.get_shared_threshold())")
        rc, out, err = assert_python_ok("-E", "-c", code)
        self.assertEqual(out.split(), [b"default", b"True", b"1"])

    def test_mode_roundtrip_and_errors(self):
        for m in ("stock", "arena", "default"):
            gc.set_cow_mode(m)
            self.assertEqual(gc.get_cow_mode(), m)
        with self.assertRaisesRegex(ValueError, "'default', 'arena' or"):
            gc.set_cow_mode("fast")
        with self.assertRaisesRegex(TypeError, "must be str, not int"):
            gc.set_cow_mode(1)
        self.assertEqual(gc.get_cow_mode(), "default")

    def test_shared_threshold_errors(self):
        gc.set_shared_threshold(0)
        self.assertEqual(gc.get_shared_threshold(), 0)
        gc.set_shared_threshold(7)
        self.assertEqual(gc.get_shared_threshold(), 7)
        with self.assertRaisesRegex(ValueError, "must not be negative"):
            gc.set_shared_threshold(-1)
        with self.assertRaisesRegex(TypeError, "must be int, not float"):
            gc.set_shared_threshold(1.5)
        with self.assertRaisesRegex(TypeError, "must be int, not str"):
            gc.set_shared_threshold("1")
        with self.assertRaises(OverflowError):
            gc.set_shared_threshold(2**100)
        self.assertEqual(gc.get_shared_threshold(), 7)

    def test_freeze_at_fork_errors(self):
        gc.set_freeze_at_fork(False)
        self.assertIs(gc.get_freeze_at_fork(), False)
        gc.set_freeze_at_fork(True)
        self.assertIs(gc.get_freeze_at_fork(), True)
        with self.assertRaisesRegex(TypeError, "must be bool, not str"):
            gc.set_freeze_at_fork("yes")
        with self.assertRaisesRegex(TypeError, "must be bool, not NoneType"):
            gc.set_freeze_at_fork(None)

    def test_options_in_help(self):
        # --help-xoptions and --help-env list cowpy's options (patch 0014).
        import subprocess
        xopt = subprocess.run([sys.executable, "--help-xoptions"],
                              capture_output=True, text=True).stdout
        env = subprocess.run([sys.executable, "--help-env"],
                             capture_output=True, text=True).stdout
        for name in ("cowalloc", "cowfork", "cowgc"):
            self.assertIn("-X %s=" % name, xopt)
            self.assertIn("PYTHON%s " % name.upper(), env)

    def test_stats(self):
        stats = gc.get_shared_stats()
        self.assertEqual(set(stats), {
            "collections", "collected", "uncollectable",
            "arena_collections", "fallbacks", "last_examined",
            "last_arena_bytes", "max_arena_bytes", "immortalized",
            "oracle_checks", "header_collections", "unannounced_forks",
            "fork_walks_skipped", "code_settled", "code_thawed",
            "forked"})
        self.assertIsInstance(stats.pop("forked"), bool)
        for v in stats.values():
            self.assertIsInstance(v, int)
            self.assertGreaterEqual(v, 0)

    def test_set_forked_hook(self):
        old = testcow.cow_set_forked(True)
        self.addCleanup(testcow.cow_set_forked, old)
        self.assertIs(testcow.cow_set_forked(False), True)
        self.assertIs(gc.get_shared_stats()["forked"], False)
        with self.assertRaisesRegex(TypeError, "must be bool, not int"):
            testcow.cow_set_forked(1)
        with self.assertRaisesRegex(TypeError, "must be bool"):
            testcow.cow_set_forked(None)
        with self.assertRaisesRegex(ValueError, "must not be negative"):
            testcow.cow_fail_arena(-1)

    def test_test_hooks_not_in_gc(self):
        # Hooks that make collections fail or leak are for tests only.
        self.assertEqual([n for n in dir(gc) if "cow_" in n and
                          n.startswith("_")], [])
        for name in ("cow_fail_arena", "cow_break_arena", "cow_oracle",
                     "cow_set_forked"):
            self.assertTrue(callable(getattr(testcow, name)))

    def test_upstream_signatures_unchanged(self):
        self.assertIsNone(gc.freeze())
        self.assertGreater(gc.get_freeze_count(), 0)
        self.assertIsNone(gc.unfreeze())
        self.assertEqual(gc.get_freeze_count(), 0)
        with self.assertRaises(TypeError):
            gc.freeze(1)
        self.assertEqual(len(gc.get_stats()), 3)
        self.assertEqual(set(gc.get_stats()[0]),
                         {"collections", "collected", "uncollectable"})


class StartupOptionTests(unittest.TestCase):
    def check(self, args, env, expected):
        code = ("import gc; print(gc.get_cow_mode(), gc.get_freeze_at_fork())")
        rc, out, err = assert_python_ok(*args, "-c", code, __isolated=False,
                                        **env)
        self.assertEqual(out.decode().split(), expected)

    def test_x_options(self):
        self.check(["-X", "cowgc=arena"], {}, ["arena", "True"])
        self.check(["-X", "cowgc=stock"], {}, ["stock", "False"])
        self.check(["-X", "cowgc=stock", "-X", "cowfork=freeze"], {},
                   ["stock", "True"])
        self.check(["-X", "cowfork=off"], {}, ["default", "False"])

    def test_environment(self):
        self.check([], {"PYTHONCOWGC": "arena", "PYTHONCOWFORK": "off"},
                   ["arena", "False"])
        # -X wins over the environment; -E ignores it.
        self.check(["-X", "cowgc=default"], {"PYTHONCOWGC": "stock"},
                   ["default", "True"])
        self.check(["-E"], {"PYTHONCOWGC": "stock"}, ["default", "True"])

    def test_invalid_values_fail_at_startup(self):
        cases = [
            (["-X", "cowgc=fast"], {}, b"-X cowgc: invalid value"),
            (["-X", "cowgc"], {}, b"-X cowgc: invalid value"),
            (["-X", "cowfork=maybe"], {}, b"-X cowfork: invalid value"),
            ([], {"PYTHONCOWGC": "Arena"}, b"PYTHONCOWGC: invalid value"),
            ([], {"PYTHONCOWFORK": "1"}, b"PYTHONCOWFORK: invalid value"),
        ]
        for args, env, msg in cases:
            with self.subTest(args=args, env=env):
                rc, out, err = assert_python_failure(
                    *args, "-c", "pass", __isolated=False, **env)
                self.assertIn(msg, err)
                self.assertIn(b"expected", err)


class ReinitTests(unittest.TestCase):
    """An embedder that finalizes and initializes again gets a fresh
    collector: default settings, and none of the previous runtime's
    immortal objects listed (their memory may have been reused)."""

    def test_repeated_init(self):
        import sysconfig
        builddir = sysconfig.get_config_var("abs_builddir") or ""
        embed = os.path.join(builddir, "Programs", "_testembed")
        if not os.path.exists(embed):
            self.skipTest("Programs/_testembed not found (not a build tree)")
        first = ("import gc; gc.set_cow_mode('arena'); "
                 "keep = [{'cowpy_reinit': [1]} for i in range(1000)]; "
                 "gc.freeze(immortalize=True)")
        second = ("import gc; gc.collect(); "
                  "n = sum(1 for o in gc.get_objects() if type(o) is dict "
                  "and 'cowpy_reinit' in o); "
                  "print(gc.get_cow_mode(), n, "
                  "gc.get_shared_stats()['immortalized'])")
        # Nothing of the caller's settings (the arena test mode...).
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PYTHON")}
        if not sysconfig.is_python_build():
            # An installed interpreter: its _testembed, in the build tree,
            # finds the installed standard library through PYTHONHOME.
            env["PYTHONHOME"] = sys.base_prefix
        proc = subprocess.run([embed, "test_repeated_init_exec", first,
                               second], capture_output=True, text=True,
                              env=env, cwd=builddir,   # as test_embed
                              timeout=support.SHORT_TIMEOUT)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout.split(), ["default", "0", "0"])


class SharedCollectionTests(CowTestCase):
    """gc.collect() reclaims garbage among frozen objects (scratch in the
    headers, as in a process that never forked; the subclass below runs
    the same tests with the side arena)."""

    FORKED = False

    def test_frozen_cycle_with_finalizer(self):
        holder = [make_cycle("x")]
        gc.freeze()
        del holder[:]
        before = gc.get_shared_stats()["collections"]
        self.assertEqual(gc.collect(), 2)
        self.assertEqual(sorted(Cycle.finalized), ["xa", "xb"])
        self.assertEqual(gc.get_shared_stats()["collections"], before + 1)
        # finalizers run exactly once
        gc.collect()
        self.assertEqual(len(Cycle.finalized), 2)

    def test_frozen_garbage_in_forked_child(self):
        holder = [make_cycle("c") for _ in range(50)]
        wr = weakref.ref(holder[0])
        gc.freeze()

        def child():
            del holder[:]
            n = gc.collect()
            return [n, len(Cycle.finalized), wr() is None]

        self.assertEqual(run_in_child(child), [100, 100, True])
        # The parent still has them.
        self.assertIsNotNone(wr())

    def test_stock_mode_keeps_frozen_garbage(self):
        with mode("stock"):
            holder = [make_cycle("s")]
            wr = weakref.ref(holder[0])
            gc.freeze()
            del holder[:]
            gc.collect()
            self.assertIsNotNone(wr())
            self.assertNotIn(wr(), gc.get_objects())
        gc.collect()
        self.assertIsNone(wr())

    def test_weakref_callbacks(self):
        called = []
        holder = [make_cycle("w")]
        keep = weakref.ref(holder[0], lambda r: called.append("outer"))
        # a weakref that is itself part of the garbage: no callback
        holder[0].selfref = weakref.ref(holder[0].peer,
                                        lambda r: called.append("inner"))
        gc.freeze()
        del holder[:]
        gc.collect()
        self.assertEqual(called, ["outer"])
        self.assertIsNone(keep())

    def test_resurrection(self):
        saved = []

        class Phoenix:
            def __init__(self):
                self.me = self

            def __del__(self):
                saved.append(self)

        holder = [Phoenix()]
        gc.freeze()
        del holder[:]
        self.assertEqual(gc.collect(), 0)
        self.assertEqual(len(saved), 1)
        # resurrected: alive, not finalized twice
        wr = weakref.ref(saved[0])
        del saved[:]
        gc.collect()
        self.assertIsNone(wr())
        self.assertEqual(saved, [])

    def test_legacy_finalizer_goes_to_gc_garbage(self):
        _testcapi = import_helper.import_module("_testcapi")
        with_tp_del = _testcapi.with_tp_del

        @with_tp_del
        class Legacy:
            def __tp_del__(self):
                pass

        holder = [Legacy()]
        holder[0].me = holder[0]
        wr = weakref.ref(holder[0])
        gc.freeze()
        del holder[:]
        try:
            self.assertEqual(gc.collect(), 1)
            self.assertEqual(len(gc.garbage), 1)
            self.assertIs(gc.garbage[0], wr())
        finally:
            gc.garbage[0].me = None
            del gc.garbage[:]

    def test_debug_saveall(self):
        holder = [make_cycle("d")]
        gc.freeze()
        del holder[:]
        old = gc.get_debug()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            names = sorted(o.name for o in gc.garbage
                           if isinstance(o, Cycle))
        finally:
            gc.set_debug(old)
            for o in gc.garbage:
                if isinstance(o, Cycle):
                    o.peer = None
            del gc.garbage[:]
        self.assertEqual(names, ["da", "db"])

    def test_callbacks_see_shared_collection(self):
        events = []

        def cb(phase, info):
            events.append((phase, info["generation"], info["collected"]))

        holder = [make_cycle("cb")]
        gc.freeze()
        del holder[:]
        gc.callbacks.append(cb)
        try:
            gc.collect()
        finally:
            gc.callbacks.remove(cb)
        self.assertEqual(events, [("start", 2, 0), ("stop", 2, 2)])

    def test_young_collections_leave_frozen_alone(self):
        holder = [make_cycle("y")]
        gc.freeze()
        del holder[:]
        gc.collect(0)
        gc.collect(1)
        self.assertEqual(Cycle.finalized, [])
        gc.collect(2)
        self.assertEqual(sorted(Cycle.finalized), ["ya", "yb"])

    def test_survivors_stay_frozen_and_visible(self):
        keep = [[] for _ in range(10)]
        gc.freeze()
        n = gc.get_freeze_count()
        gc.collect()
        self.assertEqual(gc.get_freeze_count(), n)
        ids = {id(o) for o in gc.get_objects()}
        self.assertTrue(all(id(o) in ids for o in keep))
        self.assertIn(keep, gc.get_referrers(keep[0]))

    def test_arena_size_per_object(self):
        self.pin_arena()
        gc.freeze()
        # The first shared collection may size its table from what an
        # earlier, larger one examined; the second is sized from the first.
        gc.collect()
        gc.collect()
        stats = gc.get_shared_stats()
        self.assertGreater(stats["last_examined"], 1000)
        self.assertLessEqual(stats["last_arena_bytes"],
                             24 * stats["last_examined"])
        # Sized from an exact hint: 16 bytes/object plus the slack.
        self.assertLessEqual(stats["last_arena_bytes"],
                             23 * stats["last_examined"] + 4096)

    def test_arena_failure_falls_back_safely(self):
        self.pin_arena()
        holder = [make_cycle("f")]
        gc.freeze()
        young = make_cycle("g")
        del holder[:]
        young_wr = weakref.ref(young)
        young = None
        before = gc.get_shared_stats()["fallbacks"]
        testcow.cow_fail_arena(1)
        gc.collect()
        # The arena could not be had: young garbage collected in-header,
        # the frozen garbage left for the next shared collection.
        self.assertEqual(gc.get_shared_stats()["fallbacks"], before + 1)
        self.assertIsNone(young_wr())
        self.assertEqual(sorted(Cycle.finalized), ["ga", "gb"])
        gc.collect()
        self.assertEqual(sorted(Cycle.finalized), ["fa", "fb", "ga", "gb"])

    def test_arena_failure_in_arena_mode(self):
        with mode("arena"):
            c = make_cycle("h")
            wr = weakref.ref(c)
            del c
            testcow.cow_fail_arena(1)
            gc.collect(0)
            self.assertIsNone(wr())

    def test_deep_graph(self):
        # A long chain: the mark phase must not recurse.
        head = None
        for _ in range(200_000):
            head = [head]
        tail = head
        gc.freeze()
        with mode("arena"):
            gc.collect()
        self.assertIs(head, tail)
        node = [None]
        node[0] = node
        del head, tail, node
        gc.collect()

    def test_automatic_shared_collections(self):
        def child(threshold):
            gc.set_shared_threshold(threshold)
            holder = [make_cycle("a%d" % i) for i in range(10)]
            gc.freeze()
            del holder[:]
            gc.enable()
            gc.set_threshold(100, 2, 2)
            before = gc.get_shared_stats()["collections"]
            keep = [[i] for i in range(200_000)]    # promoted survivors
            return [gc.get_shared_stats()["collections"] - before,
                    len(Cycle.finalized), len(keep)]

        n, fin, _ = run_in_child(lambda: child(1))
        self.assertGreater(n, 0)
        self.assertEqual(fin, 20)
        n, fin, _ = run_in_child(lambda: child(0))
        self.assertEqual([n, fin], [0, 0])


    def pin_arena(self):
        old = testcow.cow_set_forked(True)
        self.addCleanup(testcow.cow_set_forked, old)

    def test_scratch_placement(self):
        holder = [make_cycle("s")]
        gc.freeze()
        del holder[:]
        before = gc.get_shared_stats()
        self.assertEqual(gc.collect(), 2)
        after = gc.get_shared_stats()
        header = after["header_collections"] - before["header_collections"]
        arena = after["arena_collections"] - before["arena_collections"]
        in_arena = self.FORKED or gc.get_cow_mode() == "arena"
        self.assertEqual((header, arena), (0, 1) if in_arena else (1, 0))


class SharedCollectionArenaTests(SharedCollectionTests):
    """The same, with the scratch in the side arena (a forked process)."""

    FORKED = True


@unittest.skipUnless(hasattr(os, "fork"), "needs os.fork")
class ScratchPlacementTests(unittest.TestCase):
    """Shared collections keep their scratch in the headers until the
    process first forks, however it forks, and in the side arena from
    then on, in the parent and in the child."""

    CODE = textwrap.dedent("""
        import gc, os, sys
        class Node:
            pass
        def garbage(n):
            keep = []
            for _ in range(n):
                a, b = Node(), Node()
                a.peer, b.peer = b, a
                keep.append(a)
            return keep
        def shared(label):
            keep = garbage(1000)
            gc.freeze()
            n = gc.get_freeze_count()
            del keep[:]
            s0 = gc.get_shared_stats()
            found = gc.collect()
            s1 = gc.get_shared_stats()
            print(label, s1["forked"], found >= 2000,
                  s1["header_collections"] - s0["header_collections"],
                  s1["arena_collections"] - s0["arena_collections"],
                  gc.get_freeze_count() == n - 2000, flush=True)
        shared("fresh")
        how = sys.argv[1]
        if how == "os":
            pid = os.fork()
        else:
            import ctypes
            pid = ctypes.CDLL(None).fork()   # no PyOS_BeforeFork()
        if pid == 0:
            if how == "os":
                shared("child")
            os._exit(0)
        os.waitpid(pid, 0)
        shared("parent")
    """)

    def run_code(self, how):
        rc, out, err = assert_python_ok("-c", self.CODE, how,
                                        __isolated=False, PYTHONCOWGC="",
                                        PYTHONCOWFORK="freeze")
        return [line.split() for line in out.decode().splitlines()]

    def test_os_fork(self):
        self.assertEqual(self.run_code("os"), [
            ["fresh", "False", "True", "1", "0", "True"],
            ["child", "True", "True", "0", "1", "True"],
            ["parent", "True", "True", "0", "1", "True"]])

    @unittest.skipUnless(sys.platform == "linux", "needs libc fork()")
    def test_fork_from_c(self):
        self.assertEqual(self.run_code("c"), [
            ["fresh", "False", "True", "1", "0", "True"],
            ["parent", "True", "True", "0", "1", "True"]])


@unittest.skipUnless(hasattr(os, "fork"), "needs os.fork")
class UnannouncedForkTests(unittest.TestCase):
    """A child forked from C without PyOS_BeforeFork() (uWSGI without its
    fork hooks, an extension calling fork()) freezes the heap it
    inherited at its first collection, and sets the allocator's pools
    aside; an announced fork is not counted."""

    CODE = textwrap.dedent("""
        import ctypes, gc, json, os, sys
        data = [[i] for i in range(20000)]
        r, w = os.pipe()
        if sys.argv[1] == "c":
            pid = ctypes.CDLL(None).fork()  # no PyOS_BeforeFork()
        else:
            pid = os.fork()
        if pid == 0:
            before = gc.get_freeze_count()
            gc.collect(0)
            res = [before, gc.get_freeze_count() >= 20000,
                   gc.get_shared_stats()["unannounced_forks"],
                   sys._cow_alloc_stats()["forks"]]
            os.write(w, json.dumps(res).encode())
            os._exit(0)
        os.close(w)
        os.waitpid(pid, 0)
        child = json.loads(os.read(r, 1000))
        print(json.dumps(child + [gc.get_shared_stats()["unannounced_forks"],
                                  gc.get_freeze_count() > 0]))
    """)

    def run_code(self, how, fork_mode):
        import_helper.import_module("ctypes")
        rc, out, err = assert_python_ok("-c", self.CODE, how,
                                        __isolated=False,
                                        PYTHONCOWFORK=fork_mode)
        return json.loads(out)

    @staticmethod
    def set_asides():
        # pymalloc's pools are set aside at a fork; with PYTHONMALLOC=malloc
        # (the ASan check) there are none to set aside.
        _testinternalcapi = import_helper.import_module("_testinternalcapi")
        name = _testinternalcapi.pymem_getallocatorsname()
        return 1 if name.startswith("pymalloc") else 0

    def test_c_fork(self):
        # child: nothing frozen before its first collection, everything
        # after, one unannounced fork, one set-aside; the parent: none.
        self.assertEqual(self.run_code("c", "freeze"),
                         [0, True, 1, self.set_asides(), 0, False])

    def test_c_fork_off_mode(self):
        # Fork mode off: counted and set aside, nothing frozen.
        self.assertEqual(self.run_code("c", "off"),
                         [0, False, 1, self.set_asides(), 0, False])

    def test_announced_fork_not_counted(self):
        res = self.run_code("os", "freeze")
        self.assertEqual(res[2], 0)
        self.assertEqual(res[4], 0)


@unittest.skipUnless(hasattr(os, "fork"), "needs os.fork")
class ForkTests(CowTestCase):
    def test_freeze_at_fork(self):
        gc.set_freeze_at_fork(True)
        obj = []
        self.assertEqual(gc.get_freeze_count(), 0)
        res = run_in_child(lambda: [gc.get_freeze_count(),
                                    gc.is_tracked(obj),
                                    id(obj) in map(id, gc.get_objects(2))])
        self.assertGreater(res[0], 0)
        self.assertEqual(res[1:], [True, False])
        # the parent froze too
        self.assertGreater(gc.get_freeze_count(), 0)

    def test_no_freeze_at_fork(self):
        gc.set_freeze_at_fork(False)
        self.assertEqual(run_in_child(gc.get_freeze_count), 0)
        self.assertEqual(gc.get_freeze_count(), 0)

    def test_register_at_fork_runs_before_freeze(self):
        gc.set_freeze_at_fork(True)
        # register_at_fork() has no unregister: register one recording hook
        # per process (a new one per run would look like a leak to -R).
        global _before_fork_seen
        if _before_fork_seen is None:
            _before_fork_seen = []
            os.register_at_fork(before=lambda: _before_fork_seen.append(
                gc.get_freeze_count()))
        run_in_child(lambda: None)
        self.assertEqual(_before_fork_seen[-1], 0)
        _before_fork_seen.clear()

    def check_pages(self, collect_mode, freeze_at_fork):
        """Parent: 20,000 lists interleaved with strings of their size
        class; child: one gc.collect(); returns (shared, total) for the
        sampled survivors' GC-header pages and the Private_Dirty growth."""
        gc.set_freeze_at_fork(freeze_at_fork)
        heap = []
        for i in range(20_000):
            heap.append([])
            heap.extend("%07d-%07d" % (i, j) for j in range(40))
        lists = heap[::41]
        # Sample from the middle: those pools are full, so the child's
        # own allocations cannot land on them.
        sample = [id(o) - 16 for o in lists[2000:18000:50]]
        gc.collect()

        def child():
            gc.set_cow_mode(collect_mode)
            gc.disable()
            before = private_kib(("Private_Dirty:",))
            gc.collect()
            growth = private_kib(("Private_Dirty:",)) - before
            flags = page_flags(sample)
            present = [e for e in flags.values() if e & PM_PRESENT]
            shared = [e for e in present if not e & PM_EXCLUSIVE]
            return [len(shared), len(present), len(flags), growth]

        try:
            return run_in_child(child)
        finally:
            del heap, lists

    @unittest.skipIf(testcow.cow_oracle(), "the differential oracle runs the "
                     "in-header algorithm too, which writes every header")
    @unittest.skipUnless(allocator() in ("pymalloc", "pymalloc_debug"),
                         "the sample relies on pymalloc's full pools "
                         "(PYTHONMALLOC=malloc mixes the child's "
                         "allocations into the sampled pages)")
    def test_shared_collection_keeps_pages_shared(self):
        shared, present, total, growth = self.check_pages("default", True)
        self.assertEqual(present, total)
        self.assertEqual(shared, total,
                         f"{total - shared} of {total} sampled survivor "
                         "pages were copied by gc.collect()")
        self.assertLess(growth, 1024, "Private_Dirty grew by %d KiB" % growth)

    def test_stock_mode_copies_pages(self):
        # Control: the same check sees stock's writes.
        shared, present, total, growth = self.check_pages("stock", False)
        self.assertLess(shared, total // 10)
        self.assertGreater(growth, 10_000)


class OracleTests(unittest.TestCase):
    """The differential oracle of debug builds (PYTHONCOWORACLE=1)."""

    CODE = textwrap.dedent("""
        import gc, sys
        import _testinternalcapi as testcow
        class Node:
            pass
        keep = []
        for i in range(3000):
            a, b = Node(), Node()
            a.peer, b.peer = b, a
            if i % 3 == 0:
                keep.append(a)
        gc.freeze()
        del keep[::2]
        testcow.cow_break_arena(int(sys.argv[1]))
        print(gc.collect() > 0, gc.get_shared_stats()["oracle_checks"] > 0)
    """)

    @unittest.skipUnless(support.Py_DEBUG, "the oracle needs a debug build")
    def test_oracle_checks_collections(self):
        for mode in ("default", "arena"):
            with self.subTest(mode=mode):
                rc, out, err = assert_python_ok(
                    "-c", self.CODE, "0", __isolated=False,
                    PYTHONCOWORACLE="1", PYTHONCOWGC=mode)
                self.assertEqual(out.split(), [b"True", b"True"])

    @unittest.skipUnless(support.Py_DEBUG, "the oracle needs a debug build")
    def test_oracle_reports_a_wrong_arena(self):
        # The arena is made to keep one garbage object: the oracle must
        # abort and name it.
        rc, out, err = assert_python_failure(
            "-X", "coworacle", "-c", self.CODE, "1", __isolated=False)
        self.assertIn(b"garbage sets differ", err)
        self.assertRegex(err, rb"0x[0-9a-f]+ +Node +refcnt=\d+ +stock: "
                              rb"unreachable, side arena: reachable")

    def test_option_values(self):
        rc, out, err = assert_python_failure(
            "-c", "pass", __isolated=False, PYTHONCOWORACLE="yes")
        self.assertIn(b"PYTHONCOWORACLE: invalid value; expected 0 or 1", err)
        rc, out, err = assert_python_ok(
            "-c", "import _testinternalcapi as t; print(t.cow_oracle())",
            __isolated=False,
            PYTHONCOWORACLE="0")
        self.assertEqual(out.strip(), b"False")
        if not support.Py_DEBUG:
            rc, out, err = assert_python_failure(
                "-X", "coworacle", "-c", "pass")
            self.assertIn(b"needs a debug build", err)


# -------------------------------------------------- upstream, in arena mode

def _arena_variants(module, prefix):
    """Subclass every TestCase of `module` so that each of its tests runs
    with every collection routed through the side arena."""
    made = {}
    for name in dir(module):
        cls = getattr(module, name)
        if (isinstance(cls, type) and issubclass(cls, unittest.TestCase)
                and cls.__module__ == module.__name__):

            def setUp(self, _base=cls):
                self.addCleanup(gc.set_cow_mode, gc.get_cow_mode())
                gc.set_cow_mode("arena")
                _base.setUp(self)

            sub = type(prefix + name, (cls,), {"setUp": setUp,
                                               "__module__": __name__})
            made[sub.__name__] = sub
    return made


from test import test_gc as _upstream_gc  # noqa: E402
from test import test_finalization as _upstream_fin  # noqa: E402

globals().update(_arena_variants(_upstream_gc, "Arena_"))
globals().update(_arena_variants(_upstream_fin, "Arena_"))


def setUpModule():
    # test_gc's own module setup (disables automatic collection noise).
    if hasattr(_upstream_gc, "setUpModule"):
        _upstream_gc.setUpModule()


def tearDownModule():
    if hasattr(_upstream_gc, "tearDownModule"):
        _upstream_gc.tearDownModule()


class SubinterpreterTests(unittest.TestCase):
    """Own-GIL subinterpreters (PEP 684) collect as stock does and may
    read cowpy's process-wide settings but not change them (#19)."""

    def setUp(self):
        try:
            from test.support import interpreters
        except ImportError:
            self.skipTest("no subinterpreters")
        self.interp = interpreters.create()     # isolated, own GIL
        self.addCleanup(self.interp.close)

    def run_there(self, code):
        self.interp.exec(textwrap.dedent(code))

    def test_settings_are_read_only_there(self):
        self.run_there("""
            import gc
            assert gc.get_cow_mode() in ("default", "arena", "stock")
            for call in (lambda: gc.set_cow_mode("arena"),
                         lambda: gc.set_fork_mode("immortal"),
                         lambda: gc.set_freeze_at_fork(False),
                         lambda: gc.set_shared_threshold(5),
                         lambda: gc.freeze(immortalize=True)):
                try:
                    call()
                except RuntimeError as e:
                    assert "main interpreter" in str(e), e
                else:
                    raise AssertionError("no RuntimeError")
        """)
        self.assertEqual(gc.get_cow_mode(), gc.get_cow_mode())

    def test_collections_there_and_here_at_once(self):
        # Cycles with finalizers collected in both interpreters at the same
        # time, each under its own GIL, with a frozen heap here.
        import threading
        keep = [[i] for i in range(20000)]
        gc.freeze()
        self.addCleanup(gc.unfreeze)
        stop = threading.Event()

        def here():
            while not stop.is_set():
                a, b = [], []
                a.append(b); b.append(a)
                del a, b
                gc.collect()

        t = threading.Thread(target=here)
        t.start()
        try:
            self.run_there("""
                import gc
                class C:
                    freed = 0
                    def __del__(self):
                        C.freed += 1
                gc.freeze()
                for _ in range(200):
                    a, b = C(), C()
                    a.b, b.a = b, a
                    del a, b
                    gc.collect()
                assert C.freed == 400, C.freed
                assert gc.get_shared_stats()["collections"] >= 0
                # Frozen objects outlive an interpreter's finalization, as
                # in stock: give them back (the refleak check counts them).
                gc.unfreeze()
            """)
        finally:
            stop.set()
            t.join()
        self.assertEqual(len(keep), 20000)


if __name__ == "__main__":
    unittest.main()
