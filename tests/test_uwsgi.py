"""uWSGI smoke tests: a real uWSGI 2.0.28 (make uwsgi) built against each
twin serves bench/uwsgi/app.py in each mode; every answer is checked,
the mode does what it says, worker memory stays within a bound, and the
server stops cleanly.  (Throughput is a benchmark figure: make
bench-uwsgi.)

Run by Tools/make/run_tests.sh with build/cowpy/bin/python3.
"""

import json
import os
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench", "uwsgi"))
import run as uwsgi_run  # noqa: E402

ITEMS = 20000
REQUESTS = 300


@unittest.skipUnless(os.path.exists(uwsgi_run.uwsgi_binary("stock")) and
                     os.path.exists(uwsgi_run.uwsgi_binary("cowpy")),
                     "uWSGI not built (make uwsgi)")
class UwsgiTests(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cowpy-uwsgi-test-")
        cls.results = {}

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def serve(self, mode):
        """Start MODE, make REQUESTS requests (each answer checked), read
        the app's stats and the workers' memory, stop; return both."""
        if mode in self.results:
            return self.results[mode]
        server = uwsgi_run.Server(mode, ITEMS, self.tmp.name)
        try:
            server.wait_ready()
            for i in range(REQUESTS):
                status, body = server.get("/")
                self.assertEqual(status, 200, server.tail())
                self.assertTrue(body.startswith(b"item-"), body)
            stats = [json.loads(server.get("/?stats")[1])
                     for _ in range(4)]
            mem = server.memory()
        finally:
            status = server.stop()
        self.assertEqual(status, 0, server.tail())
        self.assertNotIn("Fatal Python error", server.tail(200))
        self.results[mode] = (stats, mem)
        return self.results[mode]

    def test_immortal_with_fork_hooks(self):
        # The default WSGI env allocator refills one args tuple per core
        # with PyTuple_SetItem(): it used to fail every request here.
        stats, mem = self.serve("cowpy-immortal")
        self.assertTrue(all(s["immortal"] and s["fork_mode"] == "immortal"
                            for s in stats), stats)
        _, recipe = self.serve("stock+recipe")
        self.assertLess(mem["worker_uss"], 0.5 * recipe["worker_uss"],
                        (mem, recipe))

    def test_freeze_with_fork_hooks(self):
        stats, mem = self.serve("cowpy")
        self.assertTrue(all(s["frozen"] >= 2 * ITEMS and
                            s["unannounced_forks"] == 0 for s in stats),
                        stats)

    def test_freeze_without_fork_hooks(self):
        # The master forks from C: each worker freezes at its first
        # collection instead.
        stats, mem = self.serve("cowpy-nohooks")
        self.assertTrue(all(s["frozen"] >= 2 * ITEMS and
                            s["unannounced_forks"] == 1 for s in stats),
                        stats)
        _, hooks = self.serve("cowpy")
        self.assertLess(mem["worker_uss"], 1.5 * hooks["worker_uss"] + 2,
                        (mem, hooks))

    def test_stock_recipe(self):
        stats, mem = self.serve("stock+recipe")
        self.assertTrue(all(s["frozen"] >= 2 * ITEMS for s in stats), stats)


if __name__ == "__main__":
    unittest.main()
