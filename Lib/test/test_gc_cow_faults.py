"""Faults at awkward moments for cowpy's collector (Python/gc_cow.c).

Forks, signals, gc callbacks and freezes that land in the middle of a
shared collection: never a crash, a lost object or a finalizer run twice,
in every collector and fork mode.  Split from test_gc_cow.py.
"""

import gc
import os
import signal
import textwrap
import unittest
from test.support.script_helper import assert_python_ok

if not hasattr(gc, "get_cow_mode"):
    raise unittest.SkipTest("not a cowpy interpreter")


# Shared by the fault-case scripts below: a frozen heap with cyclic garbage
# among it, a checksum of what must survive, and a checked wait for a child.
FAULT_PRELUDE = textwrap.dedent("""
    import gc, os, sys, threading, warnings, weakref
    # Forking with threads warns (a deadlock risk in general); here the
    # forks are the point.
    warnings.simplefilter("ignore", DeprecationWarning)
    gc.set_cow_mode(sys.argv[1])
    gc.set_fork_mode(sys.argv[2])
    class Node:
        finalized = 0
        def __init__(self, i):
            self.i = i
            self.peer = None
            self.payload = [i, str(i), (i, i + 1)]
    class Mortal(Node):
        def __del__(self):
            Node.finalized += 1
    def make_pair(cls, i):
        a, b = cls(i), cls(i + 1)
        a.peer, b.peer = b, a
        return a
    live = [make_pair(Node, i) for i in range(0, 4000, 2)]
    def checksum():
        return sum(n.i + n.peer.i + len(n.payload[1]) for n in live)
    expected = checksum()
    def check_live():
        assert checksum() == expected, "live objects changed"
    def wait_ok(pid):
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
""")


@unittest.skipUnless(hasattr(os, "fork"), "needs os.fork")
class FaultTests(unittest.TestCase):
    """Forks, signals and freezes at awkward moments: never a crash, a lost
    object or a finalizer run twice, in every collector and fork mode."""

    MODES = [("default", "freeze"), ("default", "immortal"),
             ("arena", "freeze"), ("arena", "off")]

    def run_script(self, body):
        code = FAULT_PRELUDE + textwrap.dedent(body) + "\nprint('ok')\n"
        for cow_mode, fork_mode in self.MODES:
            with self.subTest(cow_mode=cow_mode, fork_mode=fork_mode):
                rc, out, err = assert_python_ok("-c", code, cow_mode,
                                                fork_mode)
                self.assertEqual(out.split()[-1:], [b"ok"], err)

    def test_fork_from_gc_callback(self):
        self.run_script("""
            gc.freeze()
            forked = []
            def callback(phase, info):
                if len(forked) < 4 and info["generation"] == 2:
                    pid = os.fork()
                    if pid == 0:
                        # Mid-collection in the child too: leave at once
                        # after checking the inherited heap.
                        check_live()
                        os._exit(0)
                    forked.append(pid)
            gc.callbacks.append(callback)
            for i in range(2):
                garbage = make_pair(Mortal, 10**6 + 2 * i)
                wr = weakref.ref(garbage)
                del garbage
                gc.collect()
                assert wr() is None
            gc.callbacks.remove(callback)
            for pid in forked:
                wait_ok(pid)
            assert len(forked) == 4 and Node.finalized == 4, Node.finalized
            # After all that, a child collects inherited garbage normally.
            garbage = make_pair(Mortal, -2)
            wr = weakref.ref(garbage)
            del garbage
            pid = os.fork()
            if pid == 0:
                gc.collect()
                os._exit(0 if wr() is None else 1)
            wait_ok(pid)
            check_live()
        """)

    def test_fork_from_finalizer(self):
        self.run_script("""
            children = []
            class Forker(Node):
                def __del__(self):
                    pid = os.fork()
                    if pid == 0:
                        check_live()
                        os._exit(0)
                    children.append(pid)
            garbage = [make_pair(Forker, 10**6 + 2 * i) for i in range(3)]
            gc.freeze()
            wrs = [weakref.ref(g) for g in garbage]
            del garbage
            gc.collect()
            for pid in children:
                wait_ok(pid)
            # One finalizer call per object, each forked once.
            assert len(children) == 6, children
            assert all(w() is None for w in wrs)
            check_live()
        """)

    def test_fork_from_thread_while_allocating(self):
        self.run_script("""
            stop = threading.Event()
            def churn():
                keep = []
                while not stop.is_set():
                    keep.append(make_pair(Mortal, 0))
                    if len(keep) > 500:
                        del keep[:]
            t = threading.Thread(target=churn)
            t.start()
            try:
                for i in range(10):
                    pid = os.fork()
                    if pid == 0:
                        # Only this thread exists in the child.
                        garbage = make_pair(Node, -2)
                        wr = weakref.ref(garbage)
                        del garbage
                        gc.collect()
                        check_live()
                        os._exit(0 if wr() is None else 1)
                    wait_ok(pid)
            finally:
                stop.set()
                t.join()
            gc.collect()
            check_live()
        """)

    # A second thread's collection waits in a finalizer while the main
    # thread forks; the script goes on with the child and the parent.
    FORK_DURING_COLLECTION = textwrap.dedent("""
        in_finalizer = threading.Event()
        release = threading.Event()
        class Blocker(Node):
            def __del__(self):
                in_finalizer.set()
                release.wait()
        def collector():
            garbage = make_pair(Blocker, 0)
            del garbage
            gc.collect()
        t = threading.Thread(target=collector)
        t.start()
        in_finalizer.wait()
        pid = os.fork()
    """)

    def run_fork_during_collection(self, body):
        self.run_script(self.FORK_DURING_COLLECTION + textwrap.dedent(body))

    def test_fork_while_another_thread_collects(self):
        # Stock 3.13 leaves gcstate->collecting set in such a child, which
        # then never collects a cycle (patch 0010).
        self.run_fork_during_collection("""
            if pid == 0:
                garbage = make_pair(Mortal, -2)
                wr = weakref.ref(garbage)
                del garbage
                gc.collect()
                check_live()
                os._exit(0 if wr() is None and Node.finalized == 2 else 1)
            release.set()
            t.join()
            wait_ok(pid)
        """)

    def test_fork_while_another_thread_finalizes(self):
        # The objects the other thread's collection was finalizing sit on
        # lists whose heads were on its stack, flagged as being
        # collected: the child must put them back on a real list with
        # clean flags, or its next collection counts references into
        # their list links and an untrack follows a broken pointer.
        self.run_fork_during_collection("""
            if pid == 0:
                stray = [o for o in gc.get_objects()
                         if type(o) is Blocker]
                holders = [[o] for o in stray] * 3  # young referrers
                gc.collect(0)
                gc.collect(1)
                del holders
                gc.collect()
                for o in stray:
                    gc.get_referrers(o)
                    del o
                found = len(stray)
                del stray
                gc.collect()
                check_live()
                os._exit(0 if found == 2 else 3)
            release.set()
            t.join()
            wait_ok(pid)
        """)

    @unittest.skipUnless(hasattr(signal, "setitimer"), "needs setitimer")
    def test_signal_handler_allocates_during_shared_collection(self):
        self.run_script("""
            import signal
            handled = []
            def handler(signum, frame):
                # Cyclic garbage and survivors, mid-collection.
                handled.append(make_pair(Node, 0))
                make_pair(Mortal, 0)
            signal.signal(signal.SIGALRM, handler)
            signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
            try:
                for round in range(20):
                    # Garbage with finalizers, so Python code (and so the
                    # handler) runs inside the shared collection.
                    garbage = [make_pair(Mortal, i) for i in range(200)]
                    gc.freeze()
                    del garbage
                    gc.collect()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0, 0)
            gc.collect()
            assert handled, "the handler never ran"
            assert all(h.peer.peer is h for h in handled)
            # 20 rounds x 200 pairs, plus the handler's pairs: each once.
            assert Node.finalized == 2 * (20 * 200 + len(handled)), (
                Node.finalized, len(handled))
            check_live()
        """)

    def test_freeze_and_unfreeze_from_finalizer(self):
        self.run_script("""
            calls = []
            class Freezer(Node):
                def __del__(self):
                    action = ("freeze", "unfreeze", "immortalize")[
                        len(calls) % 3]
                    calls.append(action)
                    if action == "immortalize":
                        gc.freeze(immortalize=True)
                    else:
                        getattr(gc, action)()
            for round in range(3):
                garbage = [make_pair(Freezer, i) for i in range(0, 20, 2)]
                young = [make_pair(Mortal, i) for i in range(0, 20, 2)]
                gc.freeze()
                wrs = [weakref.ref(g) for g in garbage + young]
                del garbage, young
                gc.collect()
                gc.collect()
                # Garbage freed, or (when a finalizer's immortalizing
                # freeze reached it through a resurrection) kept intact.
                for w in wrs:
                    o = w()
                    assert o is None or o.peer.peer is o
            assert len(calls) == 3 * 20, len(calls)
            assert Node.finalized <= 3 * 20, Node.finalized
            gc.unfreeze()
            gc.collect()
            check_live()
        """)


if __name__ == "__main__":
    unittest.main()
