"""Tests for cowpy's settled code (Python/gc_cow_code.c, #17).

Unless PYTHONCOWCODE=stock, the immortalizing walk settles the code it
makes immortal: a forked worker runs it without writing its bytecode
(adaptive counters, RESUME) until the code is hot in that worker, then
thaws it and specializes as usual.  Hot means its first few calls in the
default light mode, some tens of calls with PYTHONCOWCODE=settle.
"""

import gc
import json
import os
import textwrap
import unittest
from test.support import import_helper
from test.support.script_helper import assert_python_ok, assert_python_failure

if not hasattr(gc, "get_shared_stats"):
    raise unittest.SkipTest("needs cowpy")

# A function with adaptive instructions (LOAD_GLOBAL, BINARY_OP, CALL,
# FOR_ITER, LOAD_ATTR, COMPARE_OP), and the bytes of its bytecode.
PRELUDE = """
    import dis, gc, json, os, sys
    G = 3
    class Box:
        def __init__(self, v):
            self.v = v
    def work(n):
        t = 0
        for i in range(n):
            b = Box(i)
            t += b.v * G
        if t > 10:
            t -= 1
        return t
    def code_bytes(f):
        return f.__code__._co_code_adaptive
    def specialized(f):
        # RESUME_CHECK is what the walk writes itself.
        return sorted({i.opname for i in dis.get_instructions(f, adaptive=True)
                       if i.opname not in (i.baseopname, "RESUME_CHECK")})
"""


def run(body, **env):
    env.setdefault("PYTHONCOWCODE", "settle")
    code = textwrap.dedent(PRELUDE) + textwrap.dedent(body)
    rc, out, err = assert_python_ok("-c", code, __isolated=False, **env)
    return json.loads(out.splitlines()[-1])


class SettleTests(unittest.TestCase):

    def test_walk_settles_and_code_runs_unwritten(self):
        res = run("""
            expected = sum(i * G for i in range(5)) - 1
            gc.freeze(immortalize=True)
            stats = gc.get_shared_stats()
            before = code_bytes(work)
            results = [work(5) for _ in range(20)]
            print(json.dumps([stats["code_settled"] > 0,
                              code_bytes(work) == before,
                              results == [expected] * 20,
                              specialized(work),
                              gc.get_shared_stats()["code_thawed"]]))
        """)
        settled, unchanged, correct, spec, thawed = res
        self.assertTrue(settled)
        self.assertTrue(unchanged, "settled code was written")
        self.assertTrue(correct)
        self.assertEqual(spec, [])
        self.assertEqual(thawed, 0)

    def test_hot_code_thaws_and_specializes(self):
        res = run("""
            gc.freeze(immortalize=True)
            before = code_bytes(work)
            for _ in range(3000):
                work(5)
            print(json.dumps([code_bytes(work) != before,
                              gc.get_shared_stats()["code_thawed"] >= 1,
                              specialized(work)]))
        """)
        changed, thawed, spec = res
        self.assertTrue(changed)
        self.assertTrue(thawed)
        self.assertIn("LOAD_ATTR_INSTANCE_VALUE", spec)

    def test_master_specializations_are_kept(self):
        # Code the parent ran keeps its specialized instructions.
        res = run("""
            for _ in range(50):
                work(5)
            spec = specialized(work)
            gc.freeze(immortalize=True)
            before = code_bytes(work)
            for _ in range(50):
                work(5)
            print(json.dumps([spec, specialized(work),
                              code_bytes(work) == before]))
        """)
        spec_before, spec_after, unchanged = res
        self.assertIn("LOAD_ATTR_INSTANCE_VALUE", spec_before)
        self.assertEqual(spec_before, spec_after)
        self.assertTrue(unchanged)

    def test_stock_mode_does_not_settle(self):
        res = run("""
            gc.freeze(immortalize=True)
            before = code_bytes(work)
            work(5); work(5)
            print(json.dumps([gc.get_shared_stats()["code_settled"],
                              code_bytes(work) != before]))
        """, PYTHONCOWCODE="stock")
        self.assertEqual(res, [0, True])

    def test_light_mode_thaws_after_a_few_calls(self):
        # The default: settled like settle, but thawed within the first
        # few calls (work(5) runs about 40 adaptive instructions a call:
        # 256 settled executions thaw it at its 7th call or so, where
        # settle's 2,048 need about 50).
        body = """
            gc.freeze(immortalize=True)
            before = code_bytes(work)
            work(5); work(5)
            after_two = code_bytes(work) == before
            for _ in range(28):
                work(5)
            print(json.dumps([gc.get_shared_stats()["code_settled"] > 0,
                              after_two,
                              gc.get_shared_stats()["code_thawed"] >= 1,
                              specialized(work) != []]))
        """
        self.assertEqual(run(body, PYTHONCOWCODE=""),
                         [True, True, True, True])
        self.assertEqual(run(body, PYTHONCOWCODE="light"),
                         [True, True, True, True])
        self.assertEqual(run(body, PYTHONCOWCODE="settle"),
                         [True, True, False, False])

    @unittest.skipUnless(hasattr(os, "fork"), "needs os.fork")
    def test_worker_does_not_write_inherited_code(self):
        # The immortal fork mode: the child runs the master's code 20 times
        # without changing a byte of it; the parent's copy is the same.
        res = run("""
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                before = code_bytes(work)
                for _ in range(20):
                    work(5)
                os.write(w, json.dumps([code_bytes(work) == before,
                    gc.get_shared_stats()["code_settled"] > 0]).encode())
                os._exit(0)
            os.close(w)
            child = json.loads(os.read(r, 1000))
            os.waitpid(pid, 0)
            print(json.dumps(child))
        """, PYTHONCOWFORK="immortal")
        self.assertEqual(res, [True, True])

    def test_tracing_settled_code(self):
        # sys.settrace and sys.monitoring rewrite settled code as any other.
        res = run("""
            gc.freeze(immortalize=True)
            lines = []
            def tracer(frame, event, arg):
                if frame.f_code is work.__code__ and event == "line":
                    lines.append(frame.f_lineno)
                return tracer
            sys.settrace(tracer)
            r = work(3)
            sys.settrace(None)
            print(json.dumps([r, len(lines) > 0, work(3)]))
        """)
        self.assertEqual(res[0], res[2])
        self.assertTrue(res[1])


    def test_monitoring_sees_what_it_sees_without_settling(self):
        # LINE events at a generator's yield (its RESUME is not rewritten)
        # and the implicit STOP_ITERATION of a for loop over a generator
        # (code under sys.monitoring thaws).
        code = """
            E = sys.monitoring.events
            TOOL = 2
            def outer():
                def f():
                    def a():
                        yield
                    def b():
                        yield from a()
                    next(b())
                return f
            def gen():
                yield 1
                return 2
            def loop():
                for _ in gen():
                    pass
            f = outer()
            gc.freeze(immortalize=True)
            sys.monitoring.use_tool_id(TOOL, "t")
            lines, stops = [], []
            sys.monitoring.register_callback(
                TOOL, E.LINE, lambda c, n: lines.append((c.co_name, n)))
            sys.monitoring.set_events(TOOL, E.LINE)
            f()
            sys.monitoring.set_events(TOOL, 0)
            sys.monitoring.register_callback(
                TOOL, E.STOP_ITERATION, lambda *a: stops.append(1))
            sys.monitoring.set_events(TOOL, E.STOP_ITERATION)
            loop()
            sys.monitoring.set_events(TOOL, 0)
            print(json.dumps([[n for n, _ in lines], len(stops)]))
        """
        self.assertEqual(run(code), run(code, PYTHONCOWCODE="stock"))


class SharedKeysTests(unittest.TestCase):
    """The walk names a never-instantiated class's shared keys after the
    attributes its __init__ assigns to self, as a first instance would,
    so that a worker's first instance does not write them (patch 0017)."""

    def test_first_instance_after_the_walk(self):
        import_helper.import_module("_testinternalcapi")
        res = run("""
            import _testinternalcapi as t
            class P:
                def __init__(self, a, b):
                    self.a = a
                    self.b, self.c = b, a
                    other = self
                    other.d = 4
                @property
                def p(self):
                    return 5
            class Q(P):
                pass
            gc.freeze(immortalize=True)
            o = P(1, 2)
            q = Q(3, 4)
            inline = t.has_inline_values(q)
            q.extra = 6         # past the settled keys: a __dict__
            print(json.dumps([t.has_inline_values(o), list(vars(o)),
                              [o.a, o.b, o.c, o.d, o.p],
                              inline, list(vars(q)), q.extra]))
        """, PYTHONCOWCODE="")
        # Without the names, settled keys (one usable slot) made the
        # second attribute materialize a __dict__.  Q inherits __init__.
        self.assertEqual(res, [True, ["a", "b", "c", "d"], [1, 2, 1, 4, 5],
                               True, ["a", "b", "c", "d", "extra"], 6])


    def test_names_set_after_init(self):
        # Request objects set attributes lazily, in other methods and
        # properties: with only __init__'s names, the settled keys' one
        # free slot took the first of them and the next gave the instance
        # a __dict__ (slower to use).  The walk names them too, along the
        # MRO.
        import_helper.import_module("_testinternalcapi")
        res = run("""
            import _testinternalcapi as t
            class Base:
                def load(self):
                    self.loaded = True
            class R(Base):
                def __init__(self, scope):
                    self.scope = scope
                @property
                def headers(self):
                    if not hasattr(self, "_headers"):
                        self._headers = {"h": 1}
                    return self._headers
                @headers.setter
                def headers(self, value):
                    self._set = value
                def body(self):
                    self._body = b"x"
                    self.body = "shadows the method"
                    return self._body
            gc.freeze(immortalize=True)
            r = R(1)
            r.load(); r.headers; r.headers = 2
            first = R.body(r)
            r.late = 3          # named nowhere: the one free slot
            inline = t.has_inline_values(r)
            r.later = 4         # past it: a __dict__
            print(json.dumps([inline, t.has_inline_values(r),
                              list(vars(r)), first.decode(), r.body,
                              r.headers, r._set, r.loaded]))
        """, PYTHONCOWCODE="")
        self.assertEqual(res, [
            True, False,
            ["scope", "loaded", "_headers", "_set", "_body", "body", "late",
             "later"],
            "x", "shadows the method", {"h": 1}, 2, True])


class OptionTests(unittest.TestCase):

    def mode(self, args, env):
        rc, out, err = assert_python_ok(
            *args, "-c",
            "import gc; gc.freeze(immortalize=True); "
            "print(gc.get_shared_stats()['code_settled'] > 0)",
            __isolated=False, **env)
        return out.decode().strip()

    def test_values(self):
        self.assertEqual(self.mode([], {}), "True")    # light
        self.assertEqual(self.mode([], {"PYTHONCOWCODE": "light"}), "True")
        self.assertEqual(self.mode([], {"PYTHONCOWCODE": "settle"}), "True")
        self.assertEqual(self.mode([], {"PYTHONCOWCODE": "stock"}), "False")
        self.assertEqual(self.mode(["-X", "cowcode=settle"], {}), "True")
        self.assertEqual(self.mode(["-X", "cowcode=stock"],
                                   {"PYTHONCOWCODE": "settle"}), "False")
        self.assertEqual(self.mode(["-E"], {"PYTHONCOWCODE": "stock"}),
                         "True")

    def test_invalid_values_fail_at_startup(self):
        for args, env, msg in [
                (["-X", "cowcode=on"], {}, b"-X cowcode: invalid value"),
                ([], {"PYTHONCOWCODE": "1"}, b"PYTHONCOWCODE: invalid value")]:
            with self.subTest(args=args, env=env):
                rc, out, err = assert_python_failure(
                    *args, "-c", "pass", __isolated=False, **env)
                self.assertIn(msg, err)
                self.assertIn(b"expected light, settle or stock", err)

    def test_help(self):
        rc, out, err = assert_python_ok("--help-env")
        self.assertIn(b"PYTHONCOWCODE", out)
        rc, out, err = assert_python_ok("--help-xoptions")
        self.assertIn(b"-X cowcode=[light|settle|stock]", out)


if __name__ == "__main__":
    unittest.main()
