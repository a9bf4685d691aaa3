"""Tests for cowpy's immortalizing walk (Python/gc_cow_immortal.c):
gc.freeze(immortalize=True), the 'immortal' fork mode, and the interned strings
of a child whose inherited heap is immortal (Objects/unicode_cow.c).
"""

import gc
import json
import os
import textwrap
import unittest
import weakref
from test import support
from test.support import import_helper
from test.support.script_helper import assert_python_ok

if not hasattr(gc, "get_cow_mode"):
    raise unittest.SkipTest("not a cowpy interpreter")

from test.support.cow_helper import CowTestCase, mode  # noqa: E402


class ImmortalizeTests(CowTestCase):
    """gc.freeze(immortalize=True) and the 'immortal' fork mode (roots
    found with gc_refs in the headers, as in a process that never forked;
    the subclass below finds them with the side arena)."""

    FORKED = False

    def setUp(self):
        super().setUp()
        self.addCleanup(gc.set_fork_mode, gc.get_fork_mode())

    def test_api_errors(self):
        with self.assertRaises(TypeError):
            gc.freeze(True)                     # keyword-only
        with self.assertRaises(TypeError):
            gc.freeze(immortalise=True)         # unknown keyword
        with self.assertRaisesRegex(ValueError, "'off', 'freeze' or"):
            gc.set_fork_mode("always")
        with self.assertRaisesRegex(TypeError, "must be str, not int"):
            gc.set_fork_mode(2)
        for m in ("off", "immortal", "freeze"):
            gc.set_fork_mode(m)
            self.assertEqual(gc.get_fork_mode(), m)
            self.assertIs(gc.get_freeze_at_fork(), m != "off")
        self.assertFalse(gc.is_immortal([]))
        self.assertTrue(gc.is_immortal(None))
        with self.assertRaises(TypeError):
            gc.is_immortal()

    def test_startup_option(self):
        code = "import gc; print(gc.get_fork_mode())"
        rc, out, err = assert_python_ok("-X", "cowfork=immortal", "-c", code)
        self.assertEqual(out.strip(), b"immortal")
        rc, out, err = assert_python_ok("-c", code, __isolated=False,
                                        PYTHONCOWFORK="immortal")
        self.assertEqual(out.strip(), b"immortal")

    def check_in_subprocess(self, body):
        # Immortal objects are never freed: keep them out of this process.
        rc, out, err = assert_python_ok("-c", textwrap.dedent(body))
        return json.loads(out)

    def test_module_dict_keys_get_their_version(self):
        # The walk assigns dk_version to module dicts' keys in the parent,
        # so that a worker specializing LOAD_GLOBAL on them only reads it.
        # Read through ctypes with 3.13's layouts: PyDictObject.ma_keys at
        # offset 32, PyDictKeysObject.dk_version (uint32) at offset 12.
        code = textwrap.dedent("""
            import ctypes, gc, sys, types
            def keys_version(d):
                keys = ctypes.c_void_p.from_address(id(d) + 32).value
                return ctypes.c_uint32.from_address(keys + 12).value
            m = types.ModuleType("cowtest_kv")
            m.x = 1
            sys.modules["cowtest_kv"] = m
            before = keys_version(m.__dict__)
            gc.freeze(immortalize=sys.argv[1] == "1")
            print(before, keys_version(m.__dict__) != 0)
        """)
        import_helper.import_module("ctypes")
        for immortalize, expect in (("0", b"0 False"), ("1", b"0 True")):
            rc, out, err = assert_python_ok("-c", code, immortalize,
                                            __isolated=False)
            self.assertEqual(out.strip(), expect)

    def test_reachable_objects_become_immortal(self):
        res = self.check_in_subprocess("""
            import gc, json, sys
            class Model:
                def f(self):
                    return ("const", 12345678901234)
            class Finalized:
                def __del__(self):
                    pass
            m = Model()
            m.attrs = {"name": "x" * 100, "blob": b"y" * 50,
                       "num": 2**70, "fl": 1.5, "tup": (1, 2, (3, 4))}
            fin = Finalized()
            fin.payload = ["payload"]
            f = open(__import__("os").devnull, "w")
            garbage = []; garbage.append(garbage)
            import weakref
            class W: pass
            g = W(); g.self = g; gw = weakref.ref(g); del g
            del garbage
            gc.freeze(immortalize=True)
            code = Model.f.__code__
            out = {
              "objs": [gc.is_immortal(o) for o in (
                  m, m.attrs, m.attrs["name"], m.attrs["blob"],
                  m.attrs["num"], m.attrs["fl"], m.attrs["tup"],
                  m.attrs["tup"][2], Model, Model.f, code,
                  code.co_consts, code.co_consts[-1])],
              # Finalizer objects stay mortal, and so does what only they
              # reach: it must be freed with them.
              "mortal": [gc.is_immortal(fin), gc.is_immortal(f),
                         gc.is_immortal(fin.payload),
                         gc.is_immortal(vars(fin))],
              "garbage_collected_first": gw() is None,
              "refcount": sys.getrefcount(m) == sys.getrefcount(None),
              "visible": m in gc.get_objects()
                         and m in gc.get_referrers(m.attrs),
              "stats": gc.get_shared_stats()["immortalized"] > 1000,
            }
            m.attrs["new"] = [1]        # immortal containers stay mutable
            del m                       # names can still be deleted
            out["mutable"] = True
            print(json.dumps(out))
        """)
        self.assertEqual(res["objs"], [True] * 13)
        self.assertEqual(res["mortal"], [False] * 4)
        self.assertTrue(res["garbage_collected_first"])
        self.assertTrue(res["refcount"])
        self.assertTrue(res["visible"])
        self.assertTrue(res["stats"])
        self.assertTrue(res["mutable"])

    def test_finalizer_attributes_freed_with_their_owner(self):
        # Found by the fuzzer: a finalizer object's __dict__ (tracked on
        # its own once materialized) was made immortal and kept every
        # attribute alive after its owner died.
        res = self.check_in_subprocess("""
            import gc, json, weakref
            class WithDel:
                def __del__(self):
                    pass
            class Payload:
                pass
            d = WithDel()
            d.a = Payload()
            vars(d)
            gc.freeze(immortalize=True)
            immortal = [gc.is_immortal(d), gc.is_immortal(vars(d)),
                        gc.is_immortal(d.a)]
            p = Payload(); d.b = p
            refs = [weakref.ref(p), weakref.ref(d.a)]
            del p, d
            gc.collect()
            print(json.dumps({"immortal": immortal,
                              "freed": [r() is None for r in refs]}))
        """)
        self.assertEqual(res["immortal"], [False, False, False])
        self.assertEqual(res["freed"], [True, True])

    def test_immortal_objects_leave_shared_collections(self):
        # Immortal objects are set aside: a shared collection examines only
        # what is still mortal, and what they refer to survives.
        res = self.check_in_subprocess("""
            import gc, json, weakref
            class Node:
                pass
            heap = [[i, str(i)] for i in range(100_000)]
            gc.freeze(immortalize=True)
            frozen_after = gc.get_freeze_count()
            # A mortal object referenced only from the immortal heap.
            late = Node()
            heap[0].append(late)
            wr = weakref.ref(late)
            del late
            garbage = Node(); garbage.self = garbage
            gw = weakref.ref(garbage); del garbage
            gc.freeze()
            gc.collect()
            print(json.dumps({
                "examined": gc.get_shared_stats()["last_examined"],
                "frozen_after": frozen_after,
                "kept": wr() is not None, "collected": gw() is None,
                "listed": heap in gc.get_objects()
                          and heap in gc.get_referrers(heap[5]),
                "unfreeze": (gc.unfreeze(), gc.get_freeze_count())[1],
            }))
        """)
        self.assertLess(res["examined"], 20_000)
        self.assertLess(res["frozen_after"], 1000)
        self.assertTrue(res["kept"])
        self.assertTrue(res["collected"])
        self.assertTrue(res["listed"])
        self.assertEqual(res["unfreeze"], 0)

    def test_cycles_among_immortal_and_later_cycles(self):
        res = self.check_in_subprocess("""
            import gc, json, weakref
            class Node: pass
            keep = [Node()]
            keep[0].me = keep[0]
            gc.freeze(immortalize=True)
            wr = weakref.ref(keep[0])
            del keep[:]
            gc.collect()
            immortal_cycle_alive = wr() is not None
            # a cycle created later that merely references immortal objects
            n = Node(); n.me = n; n.ref = wr(); nw = weakref.ref(n); del n
            gc.collect()
            print(json.dumps([immortal_cycle_alive, nw() is None]))
        """)
        self.assertEqual(res, [True, True])

    def test_garbage_collected_first_even_when_disabled(self):
        res = self.check_in_subprocess("""
            import gc, json, os, weakref
            class Node: pass
            gc.disable()                # as the stock pre-fork recipe does
            g = Node(); g.me = g; gw = weakref.ref(g); del g
            gc.freeze(immortalize=True)
            first = gw() is None
            gc.set_fork_mode("immortal")
            h = Node(); h.me = h; hw = weakref.ref(h); del h
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
            print(json.dumps([first, hw() is None, gc.isenabled()]))
        """)
        self.assertEqual(res, [True, True, False])

    def test_deep_graph_no_recursion(self):
        res = self.check_in_subprocess("""
            import gc, json
            head = None
            for i in range(300_000):
                head = [head, i]
            gc.freeze(immortalize=True)
            tail = head
            while tail[0] is not None:
                tail = tail[0]
            print(json.dumps([gc.is_immortal(tail), gc.is_immortal(head)]))
        """)
        self.assertEqual(res, [True, True])

    def test_shutdown_with_immortal_heap(self):
        # Exits cleanly (status 0, stdout flushed by the mortal sys.stdout).
        rc, out, err = assert_python_ok("-c", textwrap.dedent("""
            import gc, sys
            data = [{"k": [i, str(i)]} for i in range(100_000)]
            f = open(sys.argv[0] if False else __import__("os").devnull, "w")
            gc.freeze(immortalize=True)
            print("done", len(data))
        """))
        self.assertEqual(out.strip(), b"done 100000")

    @unittest.skipUnless(hasattr(os, "fork"), "needs os.fork")
    def test_fork_mode_immortal(self):
        res = self.check_in_subprocess("""
            import gc, json, os, weakref
            class Node: pass
            gc.set_fork_mode("immortal")
            data = [Node() for _ in range(1000)]
            g = Node(); g.me = g; gw = weakref.ref(g); del g
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.write(w, json.dumps([gc.is_immortal(data[10]),
                                        gc.is_immortal(data),
                                        gw() is None]).encode())
                os._exit(0)
            os.waitpid(pid, 0)
            child = json.loads(os.read(r, 1000))
            print(json.dumps(child + [gc.is_immortal(data[10])]))
        """)
        # garbage collected before the freeze; parent and child immortal
        self.assertEqual(res, [True, True, True, True])

    # ------------------------------------------- what must stay mortal

    def check_placed(self, body):
        """check_in_subprocess(), with the roots found where this class
        finds them (headers or side arena)."""
        return self.check_in_subprocess(
            f"import gc, _testinternalcapi\n"
            f"_testinternalcapi.cow_set_forked({self.FORKED})\n"
            + textwrap.dedent(body))

    def test_freeze_from_a_finalizer_during_a_collection(self):
        # A finalizer that resurrects a cycle member and freezes with
        # immortalize=True runs while the collection still has objects on
        # its unreachable lists: the walk must not count their references
        # into their headers (it crashed in the header placement).
        res = self.check_placed("""
            import json
            keep = []
            class A:
                def __del__(self):
                    keep.append(self.other)
                    gc.freeze(immortalize=True)
            for i in range(20):
                a = A(); b = A(); a.other = b; b.other = a
                del a, b
                gc.collect()
            gc.collect()
            print(json.dumps([len(keep), gc.is_immortal(keep)]))
        """)
        self.assertEqual(res, [40, True])   # both finalizers ran

    def test_dealloc_resources_stay_mortal(self):
        # Objects whose tp_dealloc releases something (a buffer export,
        # a mapping, a file descriptor, a semaphore) stay mortal, so that
        # dropping them still releases it; plain data becomes immortal.
        res = self.check_placed("""
            import collections, datetime, json, mmap, os, re, select
            import multiprocessing
            ba = bytearray(100)
            view = memoryview(ba)
            mm = mmap.mmap(-1, 4096)
            mview = memoryview(mm)
            ep = select.epoll()
            lock = multiprocessing.Lock()
            plain = [{"a": 1}, [2], collections.defaultdict(list),
                     collections.deque([3]), re.compile("x+"),
                     datetime.date(2026, 12, 2), type("C", (), {})()]
            gc.freeze(immortalize=True)
            mortal = [gc.is_immortal(o) for o in
                      (view, mm, mview, ep, lock._semlock)]
            immortal = [gc.is_immortal(o) for o in plain + [ba]]
            fd = ep.fileno()
            del view, mview, ep
            gc.collect()
            ba.extend(b"y")             # no export left
            mm.close()                  # no export left
            try:
                os.fstat(fd)
                fd_open = True
            except OSError:
                fd_open = False
            print(json.dumps([mortal, immortal, len(ba), fd_open]))
        """)
        self.assertEqual(res, [[False] * 5, [True] * 8, 101, False])

    def test_tuple_held_only_from_c_stays_mortal(self):
        # A tuple that only C code refers to (here: one reference taken
        # through ctypes) stays mortal, as C code may refill it in place
        # with PyTuple_SetItem(); what it refers to becomes immortal.
        import_helper.import_module("ctypes")
        res = self.check_placed("""
            import ctypes, json
            item = [1, 2, 3]
            t = (item, object())
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(t))
            tid = id(t)
            del t
            held = [(item,)]            # referenced from the heap
            gc.freeze(immortalize=True)
            t = ctypes.cast(tid, ctypes.py_object).value
            print(json.dumps([gc.is_immortal(t), gc.is_immortal(t[0]),
                              gc.is_immortal(held[0])]))
        """)
        self.assertEqual(res, [False, True, True])

    @unittest.skipUnless(hasattr(os, "fork"), "needs os.fork")
    def test_refcount_one_idioms_across_an_immortal_fork(self):
        # tuple() and itertools.batched() fill a result tuple that only a
        # C local holds; an immortal-mode fork in the middle must leave
        # it resizable (it raised SystemError from _PyTuple_Resize()).
        res = self.check_placed("""
            import itertools, json, os
            gc.set_fork_mode("immortal")
            def forking():
                yield 1
                pid = os.fork()
                if pid == 0:
                    os._exit(0)
                os.waitpid(pid, 0)
                yield 2
                yield 3
            print(json.dumps([tuple(forking()),
                              list(itertools.batched(forking(), 2))]))
        """)
        self.assertEqual(res, [[1, 2, 3], [[1, 2], [3]]])

    def test_interning_an_immortal_string_later(self):
        # A string made immortal before it was ever interned can still be
        # interned (a debug build asserted); it stays the same object.
        res = self.check_placed("""
            import json, sys
            holder = ["".join(["cowpy_", "interned_late"])]
            gc.freeze(immortalize=True)
            s = sys.intern(holder[0])
            class O: pass
            o = O()
            setattr(o, holder[0], 1)
            print(json.dumps([gc.is_immortal(s), s is holder[0],
                              getattr(o, s)]))
        """)
        self.assertEqual(res, [True, True, 1])

    def test_attributes_stored_later_into_an_immortal_instance(self):
        # An instance made immortal keeps its attributes inline; once its
        # __dict__ is materialized, a later walk must still go through
        # that dict (its owner is never walked again), so that what was
        # stored into it becomes immortal too (found by the fuzzer).
        res = self.check_placed("""
            import json
            class C: pass
            c = C()
            holder = [c]
            gc.freeze(immortalize=True)
            vars(c)                     # materialize the dict
            c.late = [1, 2]
            gc.freeze(immortalize=True)
            print(json.dumps([gc.is_immortal(c), gc.is_immortal(c.late),
                              gc.is_immortal(vars(c))]))
        """)
        self.assertEqual(res, [True, True, True])


@unittest.skipUnless(hasattr(os, "fork"), "needs os.fork")
class ImmortalForkRuleTests(unittest.TestCase):
    """The 'immortal' fork mode immortalizes at a process's first fork
    what the program holds, not what the running code's local variables
    hold, and later forks only freeze (#18): a process that forks again
    and again keeps flat memory."""

    def run_immortal(self, body):
        code = textwrap.dedent(self.PRELUDE) + textwrap.dedent(body)
        env = {}
        if support.check_sanitizer(address=True):
            # ASan's quarantine keeps freed blocks resident for a while:
            # RSS would grow with no leak.  Freed memory is what the
            # tests measure, so return it at once.
            opts = os.environ.get("ASAN_OPTIONS", "")
            env["ASAN_OPTIONS"] = ":".join(filter(None, (
                opts, "quarantine_size_mb=0")))
        rc, out, err = assert_python_ok("-c", code, __isolated=False,
                                        PYTHONCOWFORK="immortal", **env)
        return json.loads(out.splitlines()[-1])

    PRELUDE = """
        import gc, json, os, sys, weakref
        def rss():
            with open("/proc/self/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        return int(line.split()[1])
        def fork_and_wait():
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        class Req: pass
    """

    def test_local_data_at_the_first_fork_stays_mortal(self):
        res = self.run_immortal("""
            PROGRAM = [Req() for _ in range(100)]
            def request():
                data = [Req() for _ in range(100)]
                shared = PROGRAM[0]
                fork_and_wait()
                return (gc.is_immortal(data), gc.is_immortal(data[0]),
                        gc.is_immortal(shared), weakref.ref(data[0]))
            d, d0, shared, ref = request()
            gc.collect()
            print(json.dumps([d, d0, shared, gc.is_immortal(PROGRAM),
                              ref() is None]))
        """)
        # the request's data is freed once the request is over
        self.assertEqual(res, [False, False, True, True, True])

    def test_later_forks_only_freeze(self):
        res = self.run_immortal("""
            FIRST = [Req() for _ in range(100)]
            fork_and_wait()
            LATER = [Req() for _ in range(100)]   # module-level, after
            ref = weakref.ref(LATER[5])
            fork_and_wait()
            out = [gc.is_immortal(FIRST[5]), gc.is_immortal(LATER[5]),
                   gc.get_shared_stats()["fork_walks_skipped"]]
            del LATER
            gc.collect()
            out.append(ref() is None)
            gc.set_fork_mode("immortal")    # asked again: the next walks
            AGAIN = [Req() for _ in range(100)]
            fork_and_wait()
            out.append(gc.is_immortal(AGAIN[5]))
            print(json.dumps(out))
        """)
        self.assertEqual(res, [True, False, 1, True, True])

    def test_repeated_forks_keep_flat_memory(self):
        # 12 forks, each while holding 20,000 request dicts (6 MB): made
        # immortal at every fork, they leaked about that much per fork.
        res = self.run_immortal("""
            def request():
                data = [{"id": i, "name": "r%d" % i} for i in range(20000)]
                fork_and_wait()
            def module_level():
                global data
                data = [{"id": i, "name": "r%d" % i} for i in range(20000)]
                fork_and_wait()
                data = None
            out = []
            for req in (request, module_level):
                req(); gc.collect()
                base = rss()
                for _ in range(12):
                    req(); gc.collect()
                out.append(rss() - base)
            print(json.dumps(out))
        """)
        for growth in res:
            self.assertLess(growth, 4096, res)

    def test_worker_that_forks_does_not_leak(self):
        # A worker forked from a master (PRELOADED immortal in it) that
        # forks per request: os.fork(), subprocess with preexec_fn and a
        # multiprocessing pool with the fork context.
        res = self.run_immortal("""
            import multiprocessing, subprocess
            PRELOADED = [{"k": i} for i in range(2000)]
            def square(x):
                return x * x
            def request(kind):
                data = [{"id": i, "name": "r%d" % i} for i in range(20000)]
                data.append(Req())
                if kind == "fork":
                    fork_and_wait()
                elif kind == "preexec":
                    subprocess.run(["true"], preexec_fn=lambda: None,
                                   check=True)
                else:
                    ctx = multiprocessing.get_context("fork")
                    with ctx.Pool(2) as p:
                        assert p.map(square, range(4)) == [0, 1, 4, 9]
                return weakref.ref(data[-1])
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                out = {"preloaded": gc.is_immortal(PRELOADED[3])}
                for kind in ("fork", "preexec", "pool"):
                    request(kind); gc.collect()
                    base = rss()
                    refs = [request(kind) for _ in range(6)]
                    gc.collect()
                    out[kind] = [rss() - base,
                                 all(ref() is None for ref in refs)]
                os.write(w, json.dumps(out).encode())
                os._exit(0)
            os.close(w)
            out = json.loads(os.read(r, 10000))
            os.waitpid(pid, 0)
            print(json.dumps(out))
        """)
        self.assertTrue(res.pop("preloaded"))
        for kind, (growth, freed) in res.items():
            self.assertTrue(freed, kind)
            self.assertLess(growth, 4096, (kind, growth))

    def test_preloaded_heap_immortal_in_replacement_workers(self):
        # A master recycling its workers, allocating between forks: the
        # 20th worker still finds the preloaded heap immortal, and what
        # the master allocated later is mortal (and freed when dropped).
        res = self.run_immortal("""
            PRELOADED = [Req() for _ in range(1000)]
            refs = []
            answers = []
            for n in range(20):
                BETWEEN = [Req() for _ in range(1000)]
                refs.append(weakref.ref(BETWEEN[0]))
                r, w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.write(w, json.dumps(
                        [gc.is_immortal(PRELOADED[500]),
                         gc.is_immortal(BETWEEN[500])]).encode())
                    os._exit(0)
                os.close(w)
                answers.append(json.loads(os.read(r, 100)))
                os.waitpid(pid, 0)
            del BETWEEN
            gc.collect()
            print(json.dumps([answers[0], answers[-1],
                              sum(ref() is None for ref in refs)]))
        """)
        first, last, freed = res
        # the first fork walks: what the module holds then is immortal
        self.assertEqual(first, [True, True])
        self.assertEqual(last, [True, False])
        self.assertEqual(freed, 19)

    def test_warm_code_stays_shared_in_a_worker(self):
        # Code the master ran (specialized, counters settled) must not be
        # written when a worker runs it again: 3.13 stored each
        # conditional jump's branch history at every execution, for the
        # tier 2 optimizer only, and so copied every page of such code
        # (patch 0015).  The pages wholly inside one big warm code object
        # must stay shared.
        res = self.run_immortal("""
            import struct
            src = "def f(x):\\n" + "".join(
                "    if x > %d: x += 1\\n    else: x -= 1\\n" % i
                for i in range(1500)) + "    return x\\n"
            ns = {}
            exec(src, ns)
            f = ns["f"]
            for _ in range(100):
                f(10000)
            PAGE = 4096
            code = f.__code__
            start, end = id(code), id(code) + code.__sizeof__()
            pages = list(range(start // PAGE + 1, end // PAGE))
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                for _ in range(20):
                    f(10000)
                copied = 0
                with open("/proc/self/pagemap", "rb") as pm:
                    for page in pages:
                        pm.seek(page * 8)
                        (e,) = struct.unpack("<Q", pm.read(8))
                        copied += bool(e >> 56 & 1)
                os.write(w, json.dumps([len(pages), copied]).encode())
                os._exit(0)
            os.close(w)
            out = json.loads(os.read(r, 100))
            os.waitpid(pid, 0)
            print(json.dumps(out))
        """)
        pages, copied = res
        self.assertGreaterEqual(pages, 4)
        self.assertEqual(copied, 0)

    def test_instances_of_settled_classes(self):
        # The walk settles the shared keys of classes with inline values
        # (their dk_usable), so that creating instances in a worker does
        # not write them; instances must still take any attribute.
        res = self.run_immortal("""
            class K:
                def __init__(self, i):
                    self.a, self.b = i, -i
            seed = [K(i) for i in range(3)]
            def exercise():
                out = []
                for i in range(50):
                    k = K(i)
                    for n in range(i % 40):
                        setattr(k, "x%d" % n, n * i)
                    out.append(k.a + k.b + sum(getattr(k, "x%d" % n)
                                              for n in range(i % 40)))
                return sum(out)
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.write(w, json.dumps(exercise()).encode())
                os._exit(0)
            os.close(w)
            child = json.loads(os.read(r, 100))
            os.waitpid(pid, 0)
            print(json.dumps([child, exercise(), gc.is_immortal(K)]))
        """)
        expected = sum(sum(n * i for n in range(i % 40)) for i in range(50))
        self.assertEqual(res, [expected, expected, True])

    def test_explicit_freeze_still_immortalizes_locals(self):
        res = self.run_immortal("""
            def f():
                data = [Req()]
                gc.freeze(immortalize=True)
                return gc.is_immortal(data[0])
            print(json.dumps([f()]))
        """)
        self.assertEqual(res, [True])


# A parent with 200,000 interned strings forks (in the fork mode given);
# the child interns 500 new ones and reports what that copied, and what
# interning means there.
INTERN = """
import gc, json, os, sys
gc.set_fork_mode(sys.argv[1])
names = [sys.intern("inherited_name_%d" % i) for i in range(200000)]
def private_kib():
    with open("/proc/self/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f
                   if line.startswith(("Private_Clean", "Private_Dirty")))
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    n0 = sys.getunicodeinternedsize()
    p0 = private_kib()
    new = [sys.intern("child_name_%d" % i) for i in range(500)]
    copied = private_kib() - p0
    res = {
        "copied_kib": copied,
        "added": sys.getunicodeinternedsize() - n0,
        "same_new": sys.intern("".join(["child_name_", "7"])) is new[7],
        "same_old": sys.intern("".join(["inherited_name_", "5"]))
                    is names[5],
        "attr": getattr(type("C", (), {"".join(["child_", "attr"]): 1}),
                        "child_attr"),
    }
    del new
    res["left"] = sys.getunicodeinternedsize() - n0
    os.write(w, json.dumps(res).encode())
    sys.exit(0)                 # the teardown clears the interned strings
os.close(w)
data = os.read(r, 65536)
_, status = os.waitpid(pid, 0)
print(json.dumps([json.loads(data), os.waitstatus_to_exitcode(status)]))
"""


@unittest.skipUnless(os.path.exists("/proc/self/smaps_rollup"),
                     "needs /proc/self/smaps_rollup")
class InternedStringTests(unittest.TestCase):
    """A child of an immortalizing fork interns new strings in a dict of
    its own (Objects/unicode_cow.c), not in the inherited one."""

    def intern_in_child(self, fork_mode, alloc_mode="aside"):
        rc, out, err = assert_python_ok("-c", INTERN, fork_mode,
                                        __isolated=False,
                                        PYTHONCOWALLOC=alloc_mode)
        res, status = json.loads(out)
        self.assertEqual(status, 0)
        self.assertEqual(err, b"")
        # Interning means what it means in stock: one object per value,
        # old or new, and dropped strings leave (one is still held).
        self.assertTrue(res["same_new"], res)
        self.assertTrue(res["same_old"], res)
        self.assertEqual(res["attr"], 1)
        # (Counts of the whole interpreter: a temporary string of its own
        # may come or go meanwhile.)
        self.assertAlmostEqual(res["added"], 500, delta=5, msg=res)
        self.assertLessEqual(abs(res["left"]), 5, res)
        return res

    def test_new_strings_leave_the_inherited_dict_unwritten(self):
        res = self.intern_in_child("immortal")
        # The new strings, their own dict and the pages of the interpreter
        # that interning touches; not the inherited dict's 1 MiB index,
        # of which 500 new keys would write about 220 pages.
        self.assertLess(res["copied_kib"], 400, res)

    def test_freeze_mode_writes_it(self):
        # Control: a mortal heap's child interns as stock does.
        res = self.intern_in_child("freeze")
        self.assertGreater(res["copied_kib"], 800, res)

    def test_stock_alloc_mode_writes_it(self):
        # PYTHONCOWALLOC=stock: stock's placement, here too.
        res = self.intern_in_child("immortal", "stock")
        self.assertGreater(res["copied_kib"], 800, res)


class ImmortalizeArenaTests(ImmortalizeTests):
    """The same, with the roots found in a side arena (a forked process)."""

    FORKED = True


if __name__ == "__main__":
    unittest.main()
