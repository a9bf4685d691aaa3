"""uWSGI smoke tests: a real uWSGI 2.0.28 (make uwsgi) built against each
twin serves bench/uwsgi/app.py in each mode; every answer is checked,
the mode does what it says, worker memory stays within a bound, and the
server stops cleanly.  FlaskAppTests does the same with the pre-fork
benchmark's Flask app, started as make bench-prefork-uwsgi starts it.
(Throughput is a benchmark figure: make bench-uwsgi and
bench-prefork-uwsgi.)

Run by Tools/make/run_tests.sh with build/cowpy/bin/python3.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench", "uwsgi"))
import run as uwsgi_run  # noqa: E402
sys.path.insert(0, os.path.join(ROOT, "bench", "prefork"))
import deps as prefork_deps  # noqa: E402
import server as prefork_server  # noqa: E402
import sampling as prefork_sampling  # noqa: E402
import modes as prefork_modes  # noqa: E402
SITE = os.path.join(ROOT, "build", "prefork-site")

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



@unittest.skipUnless(os.path.exists(uwsgi_run.uwsgi_binary("stock")) and
                     os.path.exists(uwsgi_run.uwsgi_binary("cowpy")),
                     "uWSGI not built (make uwsgi)")
@unittest.skipUnless(all(os.path.isdir(os.path.join(prefork_deps.DIST, p))
                         for p in prefork_deps.REQUIRED),
                     "Debian's python3-flask and gunicorn are not installed "
                     "(bench/prefork/debian-packages.txt)")
class FlaskAppTests(unittest.TestCase):
    """The pre-fork benchmark's Flask app (bench/prefork/app.py) under
    uWSGI, started by bench/prefork/server.py as the benchmark does."""

    USERS = 2000
    WORKERS = 2

    @classmethod
    def setUpClass(cls):
        cls.results = {}
        # build/prefork-site, as make bench-prefork builds it (kept up to
        # date by a stamp; a no-op when it is).
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PYTHON")}
        prefork_deps.build_site(
            SITE, [os.path.join(ROOT, "build", t, "bin", "python3")
                   for t in ("stock", "cowpy")], env)

    def serve(self, name):
        if name in self.results:
            return self.results[name]
        mode = {m.name: m for m in prefork_modes.MODES}[name]
        python = os.path.join(ROOT, "build", mode.python, "bin", "python3")
        args = argparse.Namespace(workers=self.WORKERS, users=self.USERS,
                                  attribution=False)
        workdir = tempfile.mkdtemp(prefix="cowpy-uwsgi-flask-")
        self.addCleanup(shutil.rmtree, workdir, True)
        port = prefork_server.free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PYTHON")}
        proc, _, _ = prefork_server.start_server(python, mode, args, SITE,
                                                 env, port, workdir)
        try:
            health = prefork_server.wait_ready(proc, port, self.WORKERS, 120,
                                               workdir)
            self.assertEqual(health["users"], self.USERS)
            for i in range(REQUESTS):
                status, body = prefork_server.http_get(port, "/item/%d" % i,
                                                       timeout=30)
                self.assertEqual(status, 200, body[:200])
                user = json.loads(body)
                self.assertEqual(user["id"], i % self.USERS)
                self.assertTrue(user["orders"], user)
            workers = [p for p in prefork_sampling.measure_tree(proc.pid)
                       if p["role"] == "worker"]
            self.assertEqual(len(workers), self.WORKERS, workers)
        finally:
            killed = prefork_server.stop_server(proc, 30)
        self.assertEqual(killed, 0, prefork_server.log_tail(workdir))
        log = prefork_server.log_tail(workdir, 400)
        self.assertNotIn("Fatal Python error", log)
        self.assertNotIn("Traceback", log)
        uss = max(p["USS"] for p in workers) / 1024.0     # MiB
        self.results[name] = (health, uss)
        return self.results[name]

    def test_recipe_and_immortal(self):
        health, recipe = self.serve("uwsgi-stock+recipe")
        self.assertNotIn("cowpy", health["python"])
        health, immortal = self.serve("uwsgi-cowpy-immortal")
        self.assertIn("cowpy", health["python"])
        self.assertLess(immortal, 0.5 * recipe, (immortal, recipe))

    def test_without_fork_hooks(self):
        _, uss = self.serve("uwsgi-cowpy-nohooks")
        self.assertGreater(uss, 0)


if __name__ == "__main__":
    unittest.main()
