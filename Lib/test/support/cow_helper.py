"""Helpers shared by cowpy's collector tests (test_gc_cow,
test_gc_cow_immortal): the collector mode as a context manager, a forked
child that reports back, and a TestCase that restores every gc setting.
"""

import gc
import json
import os
import unittest
from test import support
from test.support import import_helper

# cowpy's collector test hooks (cow_set_forked(), cow_fail_arena(), ...).
testcow = import_helper.import_module("_testinternalcapi")


class mode:
    """Context manager: run with the given collector mode."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.old = gc.get_cow_mode()
        gc.set_cow_mode(self.name)

    def __exit__(self, *exc):
        gc.set_cow_mode(self.old)


def run_in_child(func):
    """Run func() in a forked child; return what it returns (JSON-able).

    The parent stays blocked in read() meanwhile, so it writes nothing."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            res = {"ok": func()}
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
    support.wait_process(pid, exitcode=0)
    res = json.loads(data)
    if "error" in res:
        raise AssertionError("in the forked child:\n" + res["error"])
    return res["ok"]


class Cycle:
    """A two-object cycle member with a finalizer."""
    finalized = []

    def __init__(self, name):
        self.name = name
        self.peer = None

    def __del__(self):
        Cycle.finalized.append(self.name)


def make_cycle(name):
    a, b = Cycle(name + "a"), Cycle(name + "b")
    a.peer, b.peer = b, a
    return a


class CowTestCase(unittest.TestCase):
    # Where shared collections keep their scratch: None leaves it to the
    # process (headers until it first forks, then the side arena); False
    # or True pins the headers or the arena for the test.
    FORKED = None

    def setUp(self):
        if self.FORKED is not None:
            old = testcow.cow_set_forked(self.FORKED)
            self.addCleanup(testcow.cow_set_forked, old)
        gc.collect()
        self.addCleanup(gc.unfreeze)
        self.addCleanup(gc.set_freeze_at_fork, gc.get_freeze_at_fork())
        self.addCleanup(gc.set_shared_threshold, gc.get_shared_threshold())
        self.addCleanup(gc.set_cow_mode, gc.get_cow_mode())
        Cycle.finalized = []
