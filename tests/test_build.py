"""Tests of the build itself: the pinned fetch, the patch series and the
stock/cowpy twins (version marker, unchanged ABI).

Run by Tools/make/run_tests.sh with build/cowpy/bin/python3:
    build/cowpy/bin/python3 -m unittest -v tests/test_build.py
"""

import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import unittest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
STOCK = BUILD / "stock" / "bin" / "python3"
COWPY = BUILD / "cowpy" / "bin" / "python3"
FETCH = ROOT / "upstream" / "fetch.sh"
TREE = BUILD / "src" / "cowpy"          # the patched upstream tree


def read_pin():
    pin = {}
    for line in (ROOT / "upstream" / "pin").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            pin[k] = v
    return pin


PIN = read_pin()
TARBALL = BUILD / PIN["TARBALL"]


def run_py(python, code):
    out = subprocess.run([str(python), "-c", code], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


class FetchTests(unittest.TestCase):
    """upstream/fetch.sh: verify before use, fall back, refill the cache."""

    @classmethod
    def setUpClass(cls):
        if not TARBALL.exists():
            raise unittest.SkipTest("no verified tarball in build/")

    def setUp(self):
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="cowpy-fetch-test"))
        self.addCleanup(shutil.rmtree, self.tmp)
        self.cache = self.tmp / "cache"
        self.cache.mkdir()
        self.good = TARBALL.resolve()

    def fetch(self, url):
        env = dict(os.environ, COWPY_CACHE_DIR=str(self.cache),
                   COWPY_UPSTREAM_URL=url, COWPY_FETCH_NO_DEBIAN="1")
        return subprocess.run([str(FETCH)], env=env, capture_output=True,
                              text=True)

    def plant(self, data):
        (self.cache / PIN["TARBALL"]).write_bytes(data)

    def check_refilled(self, proc):
        self.assertEqual(proc.returncode, 0, proc.stderr)
        cached = self.cache / PIN["TARBALL"]
        self.assertEqual(proc.stdout.strip(), str(cached))
        h = hashlib.sha256(cached.read_bytes()).hexdigest()
        self.assertEqual(h, PIN["SHA256"])

    def test_cached_copy_is_used(self):
        shutil.copy(self.good, self.cache / PIN["TARBALL"])
        proc = self.fetch("file:///nonexistent/never-used.tar.xz")
        self.check_refilled(proc)
        self.assertNotIn("trying", proc.stderr)

    def test_corrupted_cache_is_refused_then_next_source(self):
        data = bytearray(self.good.read_bytes())
        data[len(data) // 2] ^= 0xFF          # same size, one bit flipped
        self.plant(bytes(data))
        proc = self.fetch(self.good.as_uri())
        self.assertIn("refusing cached copy", proc.stderr)
        self.assertIn("expected size %s sha256 %s"
                      % (PIN["SIZE"], PIN["SHA256"]), proc.stderr)
        self.assertIn(hashlib.sha256(data).hexdigest(), proc.stderr)
        self.check_refilled(proc)

    def test_truncated_cache_is_refused(self):
        self.plant(self.good.read_bytes()[:1000])
        proc = self.fetch(self.good.as_uri())
        self.assertIn("refusing cached copy", proc.stderr)
        self.assertIn("got      size 1000", proc.stderr)
        self.check_refilled(proc)

    def test_bad_download_is_not_cached(self):
        bad = self.tmp / "bad.tar.xz"
        bad.write_bytes(b"not a tarball")
        proc = self.fetch(bad.as_uri())
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("refusing " + bad.as_uri(), proc.stderr)
        self.assertIn("could not obtain a verified", proc.stderr)
        self.assertEqual(proc.stdout, "")
        self.assertFalse((self.cache / PIN["TARBALL"]).exists())

    def test_unreachable_url_moves_on(self):
        proc = self.fetch("http://127.0.0.1:9/Python.tar.xz")
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("could not obtain a verified", proc.stderr)


class PatchSeriesTests(unittest.TestCase):
    def test_series_lists_every_patch_with_a_header(self):
        pdir = ROOT / "patches"
        series = [l for l in (pdir / "series").read_text().splitlines()
                  if l and not l.startswith("#")]
        on_disk = sorted(p.name for p in pdir.glob("[0-9]*.patch"))
        self.assertEqual(series, on_disk)
        for name in series:
            text = (pdir / name).read_text()
            head = text.split("\n---\n", 1)[0]
            self.assertTrue("Downstream only" in head
                            or "Could go upstream" in head,
                            f"{name}: header must say 'Downstream only' or "
                            "'Could go upstream'")
            self.assertIn("Why:", head, f"{name}: header must say why")

    def test_no_patch_edits_a_generated_file(self):
        # The build regenerates these (Tools/make/regen.sh); a patch that
        # carried one would conflict at the next rebase.
        generated = re.compile(
            r"(^|/)clinic/[^/]+\.h$|^Include/internal/pycore_("
            r"global_strings|runtime_init_generated|unicodeobject_generated"
            r"|global_objects_fini_generated|opcode_metadata|uop_metadata"
            r"|uop_ids)\.h$|^Include/opcode_ids\.h$"
            r"|^Python/(generated_cases|executor_cases|optimizer_cases)"
            r"\.c\.h$|^Python/opcode_targets\.h$"
            r"|^Lib/_opcode_metadata\.py$")
        for p in sorted((ROOT / "patches").glob("[0-9]*.patch")):
            for m in re.finditer(r"^diff --git a/(\S+) ", p.read_text(),
                                 re.M):
                self.assertIsNone(generated.search(m.group(1)),
                                  f"{p.name} edits generated {m.group(1)}")

    @unittest.skipUnless(STOCK.exists() and (TREE / "Tools" / "clinic"
                                             / "clinic.py").exists(),
                         "no patched tree or stock twin")
    def test_our_clinic_files_are_current(self):
        # Our own files with Argument Clinic input commit the lines Clinic
        # writes into them (checksums), never its output header: Clinic
        # run on a copy must leave each as it is (else: make clinic).
        ours = [p for d in ("Python", "Modules", "Objects")
                for p in sorted((ROOT / d).glob("*.c"))
                if "[clinic input]" in p.read_text()]
        self.assertIn(ROOT / "Python" / "gc_cow_settings.c", ours)
        for src in ours:
            rel = src.relative_to(ROOT)
            self.assertFalse((ROOT / rel.parent / "clinic").exists(),
                             f"{rel.parent}/clinic/ is generated, not ours")
            with tempfile.TemporaryDirectory() as tmp:
                copy = pathlib.Path(tmp) / src.name
                shutil.copy(src, copy)
                subprocess.run([str(STOCK),
                                str(TREE / "Tools" / "clinic" / "clinic.py"),
                                str(copy)], check=True, cwd=TREE,
                               capture_output=True)
                self.assertEqual(copy.read_text(), src.read_text(),
                                 f"{rel}: Clinic's lines are stale "
                                 f"(run make clinic)")
                self.assertTrue((copy.parent / "clinic" /
                                 (src.name + ".h")).exists())


PROBE = textwrap.dedent("""
    import json, platform, sys, sysconfig
    print(json.dumps({
        "version": sys.version, "version_info": list(sys.version_info),
        "impl": sys.implementation.name,
        "cache_tag": sys.implementation.cache_tag,
        "impl_version": list(sys.implementation.version),
        "pyimpl": platform.python_implementation(),
        "soabi": sysconfig.get_config_var("SOABI"),
        "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"),
        "abiflags": sys.abiflags, "api": sys.api_version,
        "hexversion": sys.hexversion,
        "magic": __import__("importlib.util").util.MAGIC_NUMBER.hex(),
    }))
""")


@unittest.skipUnless(STOCK.exists() and COWPY.exists(), "builds missing")
class TwinTests(unittest.TestCase):
    """cowpy identifies itself but is ABI-identical to stock."""

    @classmethod
    def setUpClass(cls):
        cls.stock = run_py(STOCK, PROBE)
        cls.cowpy = run_py(COWPY, PROBE)

    def test_version_marker(self):
        self.assertTrue(self.cowpy["version"].startswith(
            PIN["VERSION"] + "+cowpy "), self.cowpy["version"])
        self.assertTrue(self.stock["version"].startswith(
            PIN["VERSION"] + " "), self.stock["version"])

    def test_identity_and_abi_unchanged(self):
        for key in ("version_info", "impl", "cache_tag", "impl_version",
                    "pyimpl", "soabi", "ext_suffix", "abiflags", "api",
                    "hexversion", "magic"):
            self.assertEqual(self.cowpy[key], self.stock[key], key)
        self.assertEqual(self.cowpy["impl"], "cpython")
        self.assertEqual(self.cowpy["pyimpl"], "CPython")
        self.assertEqual(self.cowpy["soabi"], "cpython-313-x86_64-linux-gnu")

    def test_stock_built_extension_runs_on_cowpy(self):
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="cowpy-abi"))
        self.addCleanup(shutil.rmtree, tmp)
        cfg = run_py(STOCK, "import json, sysconfig; print(json.dumps("
                     "[sysconfig.get_paths()['include'], "
                     "sysconfig.get_config_var('EXT_SUFFIX'), "
                     "sysconfig.get_config_var('CC')]))")
        include, suffix, cc = cfg
        so = tmp / ("cowabi" + suffix)
        subprocess.run(cc.split() + ["-shared", "-fPIC", "-O2",
                                     "-I" + include,
                                     str(ROOT / "tests/abi_ext/cowabi.c"),
                                     "-o", str(so)], check=True)
        code = textwrap.dedent("""
            import gc, json, os, sys
            import cowabi
            gc.collect()
            res = {"layout": cowabi.layout()}
            # The GC pre-header (sizeof(PyGC_Head)) an extension's objects
            # carry, as the interpreter accounts it.
            box = cowabi.Box()
            res["gc_head"] = sys.getsizeof(box) - box.__sizeof__()
            res["list_head"] = sys.getsizeof([]) - [].__sizeof__()
            a, b = cowabi.Box(), cowabi.Box()
            a.item, b.item = b, a
            res["tracked"] = cowabi.is_tracked(a) and gc.is_tracked(b)
            del a, b
            res["collected"] = gc.collect()
            res["freed"] = cowabi.freed()
            # frozen cycles of extension objects, collected in a child
            keep = [cowabi.Box() for _ in range(2)]
            keep[0].item, keep[1].item = keep[1], keep[0]
            gc.freeze()
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                del keep[:]
                gc.collect()
                os.write(w, str(cowabi.freed()).encode())
                os._exit(0)
            os.close(w)
            res["child_freed"] = int(os.read(r, 100))
            os.waitpid(pid, 0)
            gc.unfreeze()
            print(json.dumps(res))
        """)
        env = dict(os.environ, PYTHONPATH=str(tmp))
        for py in (STOCK, COWPY):
            with self.subTest(python=str(py)):
                out = subprocess.run([str(py), "-c", code], env=env,
                                     check=True, capture_output=True,
                                     text=True).stdout
                res = json.loads(out)
                self.assertEqual(res["gc_head"], 16)
                self.assertEqual(res["list_head"], 16)
                self.assertEqual(res["layout"]["PyObject"], 16)
                self.assertTrue(res["tracked"])
                self.assertEqual(res["collected"], 2)
                self.assertEqual(res["freed"], 2)
                # Stock never collects frozen objects; cowpy does (once the
                # collectable permanent generation is in: see test_gc_cow).
                self.assertIn(res["child_freed"], (2, 4))


class ResultsTests(unittest.TestCase):
    """Running a check or a benchmark never edits a tracked file unless
    asked to record (make RECORD=1)."""

    def tracked_state(self):
        out = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "--", "bench/results",
             "docs"],
            capture_output=True, text=True, check=True).stdout
        files = [ROOT / line for line in out.splitlines() if line.strip()]
        return {str(f): f.stat().st_mtime_ns for f in files if f.exists()}

    @unittest.skipUnless(shutil.which("git")
                         and (ROOT / ".git").exists(), "needs a git clone")
    def test_short_fuzz_writes_under_build(self):
        before = self.tracked_state()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("COWPY_", "MAKE"))}
        proc = subprocess.run(
            ["make", "-s", "-C", str(ROOT), "fuzz", "SECONDS=2"],
            env=env, capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertEqual(self.tracked_state(), before)
        self.assertTrue((BUILD / "results" / "reliability"
                         / "fuzz.json").exists())

    def test_record_selects_the_tracked_directory(self):
        for extra, where in (([], BUILD / "results"),
                             (["RECORD=1"], ROOT / "bench" / "results")):
            out = subprocess.run(
                ["make", "-s", "-C", str(ROOT), "print-RESULTS"] + extra,
                capture_output=True, text=True, check=True).stdout
            self.assertEqual(out.strip(), str(where))


if __name__ == "__main__":
    unittest.main()
